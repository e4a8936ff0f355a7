//! CPU-heavy request work (expanding recurrence rules) off the async workers, on a bounded
//! pool: at most one job per core at once, the rest wait their turn without holding a worker.
//! Before it, 200 concurrent costly rules from one user made another user's GetTask take
//! 4.4 s instead of 5 ms; now they queue behind each other and other calls go on. Run such
//! work outside any transaction, so a queued job holds no lock and no connection.

use std::sync::OnceLock;

use tokio::sync::Semaphore;
use tonic::Status;

/// One permit per core (`std::thread::available_parallelism`).
fn permits() -> &'static Semaphore {
    static PERMITS: OnceLock<Semaphore> = OnceLock::new();
    PERMITS.get_or_init(|| {
        Semaphore::new(std::thread::available_parallelism().map_or(2, std::num::NonZero::get))
    })
}

/// Runs `work` on the blocking pool once a core's permit is free, and returns its result.
///
/// # Errors
/// `INTERNAL` (logged) when `work` panicked.
pub async fn run<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Status> {
    // The semaphore is never closed: acquiring cannot fail.
    let _permit = permits()
        .acquire()
        .await
        .map_err(|_| Status::internal("internal error"))?;
    tokio::task::spawn_blocking(work).await.map_err(|error| {
        tracing::error!(%error, "compute job failed");
        Status::internal("internal error")
    })
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
        let jobs = (0..32).map(|_| {
            let (running, most) = (running.clone(), most.clone());
            tokio::spawn(super::run(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
                running.fetch_sub(1, Ordering::SeqCst);
            }))
        });
        for job in futures::future::join_all(jobs).await {
            job.unwrap().unwrap();
        }
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        assert!(most.load(Ordering::SeqCst) <= cores);
        assert!(most.load(Ordering::SeqCst) >= 1);
    }
}
