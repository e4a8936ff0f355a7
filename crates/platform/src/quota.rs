//! Per-user request quotas: a token bucket per user (GCRA, the `governor` crate) refilled at
//! [`RateLimit::requests_per_second`] up to a burst. A call over quota gets
//! `RESOURCE_EXHAUSTED` with `google.rpc.RetryInfo` (when to try again) and
//! `google.rpc.QuotaFailure` (which quota), as AIP-193 asks, and changes nothing.
//!
//! The buckets are per process: one component under `serve`, the whole mesh under `dev`.
//! Only authenticated callers get a bucket (a caller is checked after its token), and idle
//! users' buckets are dropped every [`SWEEP_EVERY`] checks, so memory follows active users.

use std::{
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use governor::{DefaultKeyedRateLimiter, Quota, clock::Clock};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// How many checks pass between sweeps of idle users' buckets.
const SWEEP_EVERY: u64 = 10_000;

/// Requests per second per user, with a burst. Cheap to clone (clones share the buckets).
#[derive(Clone)]
pub struct RateLimit {
    limiter: Arc<DefaultKeyedRateLimiter<String>>,
    checks: Arc<AtomicU64>,
    requests_per_second: NonZeroU32,
    burst: NonZeroU32,
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RateLimit({}/s, burst {})",
            self.requests_per_second, self.burst
        )
    }
}

impl RateLimit {
    /// `requests_per_second` per user, up to `burst` at once.
    pub fn new(requests_per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        let quota = Quota::per_second(requests_per_second).allow_burst(burst);
        Self {
            limiter: Arc::new(DefaultKeyedRateLimiter::keyed(quota)),
            checks: Arc::new(AtomicU64::new(0)),
            requests_per_second,
            burst,
        }
    }

    /// The sustained rate per user.
    pub fn requests_per_second(&self) -> NonZeroU32 {
        self.requests_per_second
    }

    /// Takes one request from `user`'s bucket.
    ///
    /// # Errors
    /// `RESOURCE_EXHAUSTED` with `RetryInfo` and `QuotaFailure` when it is empty.
    pub fn check(&self, user: &str) -> Result<(), Status> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        let Err(not_until) = self.limiter.check_key(&user.to_owned()) else {
            return Ok(());
        };
        let wait = not_until.wait_time_from(self.limiter.clock().now());
        Err(exhausted(
            "RATE_LIMITED",
            "requests per user",
            &format!(
                "at most {} requests per second (bursts of {})",
                self.requests_per_second, self.burst
            ),
            Some(wait),
        ))
    }
}

/// `RESOURCE_EXHAUSTED` for the quota `subject` (e.g. `"tasks per user"`) described by
/// `description`, with an `ErrorInfo` of `reason`, a `google.rpc.QuotaFailure` naming the
/// quota and, when waiting helps, a `google.rpc.RetryInfo` of `retry` (AIP-193). The message
/// says the quota and, with `retry`, when to try again (in milliseconds).
pub fn exhausted(
    reason: &'static str,
    subject: &str,
    description: &str,
    retry: Option<Duration>,
) -> Status {
    let mut details = ErrorDetails::with_error_info(reason, crate::grpc::ERROR_DOMAIN, []);
    if let Some(wait) = retry {
        details.set_retry_info(Some(wait));
    }
    details.add_quota_failure_violation(subject, description);
    let message = match retry {
        Some(wait) => format!(
            "quota exceeded ({subject}: {description}): retry in {} ms",
            wait.as_millis().max(1)
        ),
        None => format!("quota exceeded ({subject}: {description})"),
    };
    Status::with_error_details(Code::ResourceExhausted, message, details)
}

#[cfg(test)]
mod tests {
    use tonic_types::StatusExt;

    use super::*;

    #[test]
    fn a_user_over_quota_is_told_when_to_retry_and_others_are_not_affected() {
        let limit = RateLimit::new(NonZeroU32::new(1).unwrap(), NonZeroU32::new(3).unwrap());
        for _ in 0..3 {
            limit.check("alice").unwrap();
        }
        let refused = limit.check("alice").unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted);
        let details = refused.get_error_details();
        let retry = details.retry_info().and_then(|r| r.retry_delay).unwrap();
        assert!(retry > std::time::Duration::ZERO && retry <= std::time::Duration::from_secs(1));
        assert_eq!(details.quota_failure().unwrap().violations.len(), 1);
        limit.check("bob").unwrap();
    }
}
