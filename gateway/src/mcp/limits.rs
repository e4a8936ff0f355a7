//! How many MCP requests a gateway works on at once: at most [`MAX_IN_FLIGHT`] in all and
//! [`MAX_IN_FLIGHT_PER_USER`] per user. One more is refused at once (HTTP 503 with
//! `Retry-After`, or 429 for the user over their share) instead of queued, so one user's
//! burst of slow tool calls (a `complete_task` waits up to seconds for the next occurrence)
//! cannot hold the endpoint for the others.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// MCP requests one gateway works on at once.
pub(crate) const MAX_IN_FLIGHT: usize = 512;

/// MCP requests one user has in progress on one gateway at once.
pub(crate) const MAX_IN_FLIGHT_PER_USER: usize = 16;

/// The in-flight counts; clones share them.
#[derive(Clone, Debug)]
pub(crate) struct InFlight {
    total: Arc<Semaphore>,
    /// Requests in progress per user; a user without one has no entry, so the map holds at
    /// most [`MAX_IN_FLIGHT`] entries whatever the number of users.
    per_user: Arc<Mutex<HashMap<String, usize>>>,
    max_per_user: usize,
}

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The gateway is at [`MAX_IN_FLIGHT`].
    Saturated,
    /// The user is at their share.
    UserBusy,
}

/// One admitted request; dropping it frees its places.
#[derive(Debug)]
pub(crate) struct Admitted {
    _total: OwnedSemaphorePermit,
    user: String,
    per_user: Arc<Mutex<HashMap<String, usize>>>,
}

impl InFlight {
    /// At most `max` requests at once, `max_per_user` of them one user's.
    pub(crate) fn new(max: usize, max_per_user: usize) -> Self {
        Self {
            total: Arc::new(Semaphore::new(max)),
            per_user: Arc::default(),
            max_per_user,
        }
    }

    /// A place for one of `user`'s requests, or why there is none.
    pub(crate) fn admit(&self, user: &str) -> Result<Admitted, Refused> {
        let total = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Saturated)?;
        // The lock is held for a map update only, never across an await.
        let mut per_user = self.per_user.lock().unwrap_or_else(|p| p.into_inner());
        let count = per_user.entry(user.to_owned()).or_default();
        if *count >= self.max_per_user {
            return Err(Refused::UserBusy);
        }
        *count += 1;
        Ok(Admitted {
            _total: total,
            user: user.to_owned(),
            per_user: self.per_user.clone(),
        })
    }
}

impl Default for InFlight {
    fn default() -> Self {
        Self::new(MAX_IN_FLIGHT, MAX_IN_FLIGHT_PER_USER)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut per_user = self.per_user.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = per_user.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                per_user.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_over_their_share_is_refused_and_others_still_get_in() {
        let limits = InFlight::new(3, 2);
        let a1 = limits.admit("alice").unwrap();
        let _a2 = limits.admit("alice").unwrap();
        assert_eq!(limits.admit("alice").unwrap_err(), Refused::UserBusy);
        let _b1 = limits.admit("bob").unwrap();
        assert_eq!(limits.admit("carol").unwrap_err(), Refused::Saturated);
        drop(a1);
        let _a3 = limits.admit("alice").unwrap();
    }

    #[test]
    fn users_without_requests_in_progress_leave_no_entry() {
        let limits = InFlight::new(10, 2);
        drop(limits.admit("alice").unwrap());
        assert!(limits.per_user.lock().unwrap().is_empty());
    }
}
