//! CPU-heavy request work (expanding recurrence rules) off the async workers, on a bounded
//! pool: at most one job per core at once, the rest wait their turn without holding a worker.
//! Before it, 200 concurrent costly rules from one user made another user's GetTask take
//! 4.4 s instead of 5 ms; now they queue behind each other and other calls go on. Run such
//! work outside any transaction, so a queued job holds no lock and no connection.
//!
//! Each user has a share of the queue ([`PER_USER_PER_CORE`] jobs per core), so one user's
//! flood of costly rules gets `RESOURCE_EXHAUSTED` for its own extra calls instead of
//! filling the queue (which would refuse everyone's rule checks); another user's check
//! waits behind at most that many of the flooder's jobs (and those of other users), each
//! bounded by the expansion's deterministic budget (see `taskmesh_domain::recurrence`).

use std::{
    collections::HashMap,
    sync::{
        Mutex, OnceLock, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::sync::Semaphore;
use tonic::Status;

/// Jobs admitted (running or waiting) per core; one more is refused (`UNAVAILABLE`) rather
/// than queued for longer than its caller would wait.
const QUEUE_PER_CORE: usize = 32;

/// Jobs one user may have admitted (running or waiting) per core; one more is refused with
/// `RESOURCE_EXHAUSTED` and a `RetryInfo` of [`USER_RETRY`].
pub const PER_USER_PER_CORE: usize = 2;

/// When a user over their share is told to retry.
const USER_RETRY: Duration = Duration::from_millis(200);

fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(2, std::num::NonZero::get))
}

/// One permit per core (`std::thread::available_parallelism`).
fn permits() -> &'static Semaphore {
    static PERMITS: OnceLock<Semaphore> = OnceLock::new();
    PERMITS.get_or_init(|| Semaphore::new(cores()))
}

/// Jobs admitted (waiting or running).
static ADMITTED: AtomicUsize = AtomicUsize::new(0);

/// Jobs admitted per user (only users with a job admitted have an entry).
fn by_user() -> &'static Mutex<HashMap<String, usize>> {
    static BY_USER: OnceLock<Mutex<HashMap<String, usize>>> = OnceLock::new();
    BY_USER.get_or_init(Mutex::default)
}

/// One admitted job of a user, until dropped.
struct Admitted {
    user: String,
}

impl Admitted {
    /// Admits a job of `user`, or says why not.
    fn admit(user: &str) -> Result<Self, Status> {
        let share = PER_USER_PER_CORE * cores();
        let mut users = by_user().lock().unwrap_or_else(PoisonError::into_inner);
        let mine = users.get(user).copied().unwrap_or(0);
        if mine >= share {
            return Err(crate::quota::exhausted(
                "RULE_WORK_PER_USER",
                "rule checks per user",
                &format!("at most {share} rule checks or previews of one user at once"),
                Some(USER_RETRY),
            ));
        }
        if ADMITTED.fetch_add(1, Ordering::AcqRel) >= QUEUE_PER_CORE * cores() {
            ADMITTED.fetch_sub(1, Ordering::AcqRel);
            return Err(crate::grpc::error(
                tonic::Code::Unavailable,
                "RULE_WORK_SATURATED",
                "too much rule work queued; retry with backoff",
            ));
        }
        users.insert(user.to_owned(), mine + 1);
        Ok(Self {
            user: user.to_owned(),
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut users = by_user().lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(mine) = users.get_mut(&self.user) {
            *mine -= 1;
            if *mine == 0 {
                users.remove(&self.user);
            }
        }
        ADMITTED.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Runs `work` of `user` (the caller's user id) on the blocking pool once a core's permit
/// is free, and returns its result. The permit and the user's place go with the job: a
/// caller that gives up (its deadline passed) frees them only when the job it started has
/// finished.
///
/// # Errors
/// `RESOURCE_EXHAUSTED` (with `RetryInfo` and `QuotaFailure`) when `user` already has
/// [`PER_USER_PER_CORE`] jobs per core admitted; `UNAVAILABLE` when more jobs wait than
/// [`QUEUE_PER_CORE`] per core; `INTERNAL` (logged) when `work` panicked.
pub fn run<T: Send + 'static>(
    user: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> impl Future<Output = Result<T, Status>> + Send + 'static {
    // Admitted (or refused) at the call, so the future borrows nothing.
    let admitted = Admitted::admit(user);
    async move {
        let admitted = admitted?;
        // The semaphore is never closed: acquiring cannot fail.
        let permit = permits()
            .acquire()
            .await
            .map_err(|_| crate::grpc::internal())?;
        permit.forget();
        // Back to the pool (and out of the queue) when the job ends, however its caller
        // fared, or when it never runs (a runtime shutting down drops it).
        let returned = Returned;
        let job = tokio::task::spawn_blocking(move || {
            let _admitted = admitted;
            let _returned = returned;
            work()
        });
        job.await.map_err(|error| {
            tracing::error!(%error, "compute job failed");
            crate::grpc::internal()
        })
    }
}

/// Gives a forgotten permit back to [`permits`] when dropped.
struct Returned;

impl Drop for Returned {
    fn drop(&mut self) {
        permits().add_permits(1);
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::Arc,
        sync::atomic::{AtomicUsize, Ordering},
        time::Duration,
    };

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_one_job_per_core_runs_at_once() {
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let jobs = (0..32).map(|i| {
            let (running, most) = (running.clone(), most.clone());
            tokio::spawn(super::run(&format!("tester-{i}"), move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
                running.fetch_sub(1, Ordering::SeqCst);
            }))
        });
        for job in futures::future::join_all(jobs).await {
            job.unwrap().unwrap();
        }
        assert!(most.load(Ordering::SeqCst) <= super::cores());
        assert!(most.load(Ordering::SeqCst) >= 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_that_give_up_do_not_free_a_core_before_their_job_ends() {
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut impatient = Vec::new();
        for i in 0..8 {
            let (running, most) = (running.clone(), most.clone());
            // Each caller waits 1 ms for a 30 ms job, then gives up.
            impatient.push(tokio::spawn(tokio::time::timeout(
                Duration::from_millis(1),
                super::run(&format!("impatient-{i}"), move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(30));
                    running.fetch_sub(1, Ordering::SeqCst);
                }),
            )));
        }
        for caller in impatient {
            let _ = caller.await;
        }
        // Jobs already started run on; new ones wait for them.
        let (r, m) = (running.clone(), most.clone());
        super::run("patient", move || {
            let now = r.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(now, Ordering::SeqCst);
            r.fetch_sub(1, Ordering::SeqCst);
        })
        .await
        .unwrap();
        assert!(most.load(Ordering::SeqCst) <= super::cores());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_user_over_their_share_is_told_to_retry_and_others_still_run() {
        use tonic_types::StatusExt;
        let share = super::PER_USER_PER_CORE * super::cores();
        let (release, gate) = tokio::sync::watch::channel(false);
        // The flooder fills their share with jobs that wait for the gate.
        let mut held = Vec::new();
        for _ in 0..share {
            let mut gate = gate.clone();
            held.push(tokio::spawn(super::run("flooder", move || {
                tokio::runtime::Handle::current()
                    .block_on(gate.wait_for(|open| *open))
                    .map(|_| ())
                    .ok();
            })));
        }
        // Admitted at the call: one more is refused at once.
        let refused = super::Admitted::admit("flooder").err().expect("refused");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        let details = refused.get_error_details();
        assert_eq!(
            details.retry_info().and_then(|r| r.retry_delay),
            Some(super::USER_RETRY)
        );
        assert_eq!(
            details
                .quota_failure()
                .map(|q| q.violations[0].subject.clone()),
            Some("rule checks per user".to_owned())
        );
        release.send(true).unwrap();
        // Another user's job is admitted (it runs once a core is free).
        super::run("other", || ()).await.unwrap();
        for job in held {
            job.await.unwrap().unwrap();
        }
        // The flooder's share is back once their jobs are done.
        super::run("flooder", || ()).await.unwrap();
    }
}
