//! Supervision of a component's background tasks (ARCHITECTURE.md invariant 9): a task that
//! ends or panics before shutdown fails the component: its health turns NOT_SERVING, the
//! cause is logged once, every other task and the server are cancelled, and
//! [`Supervisor::run`] returns the failure (the process then exits non-zero, so Kubernetes
//! restarts it). Transient failures never end a task: it retries them itself with
//! [`TaskContext::retry_after`], which reports it degraded meanwhile.

use std::{collections::HashMap, fmt, future::Future, time::Duration};

use tokio::task::{Id, JoinSet};
use tokio_util::sync::CancellationToken;

use super::{
    backoff::Backoff,
    health::{Health, Phase},
};

/// How long a failed or stopping component waits for its tasks and server to finish.
const GRACE: Duration = Duration::from_secs(20);

/// The failure of a component, already logged by its supervisor (callers need not log it
/// again).
#[derive(Debug, thiserror::Error)]
#[error("{component}: {task} failed: {cause:#}")]
pub struct Failure {
    /// The component, e.g. `reminder`.
    pub component: &'static str,
    /// The task that failed, e.g. `task-events consumer`.
    pub task: String,
    /// Why.
    #[source]
    pub cause: anyhow::Error,
}

/// What a supervised task gets: the shutdown token and its health.
#[derive(Clone, Debug)]
pub struct TaskContext {
    /// Cancelled on shutdown and when the component fails; the task then finishes its unit
    /// of work in hand and returns `Ok(())`.
    pub shutdown: CancellationToken,
    /// This task's health.
    pub health: TaskHealth,
}

/// One task's part of its component's health.
#[derive(Clone)]
pub struct TaskHealth {
    component: &'static str,
    task: String,
    health: Health,
}

impl fmt::Debug for TaskHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHealth")
            .field("component", &self.component)
            .field("task", &self.task)
            .finish_non_exhaustive()
    }
}

impl TaskHealth {
    /// A task health outside any supervisor (tests and tools that drive a loop by hand).
    pub fn detached(task: &str) -> Self {
        Self {
            component: "detached",
            task: task.to_owned(),
            health: Health::default(),
        }
    }

    /// Reports the task degraded: it is retrying a transient failure, `reason`. Counted
    /// every time (`taskmesh_background_task_retries_total`), logged as a warning when the task
    /// turns degraded (and at debug level while it stays so); the component's overall health
    /// is NOT_SERVING until [`TaskHealth::recovered`].
    pub fn degraded(&self, reason: &dyn fmt::Display) {
        metrics::counter!("taskmesh_background_task_retries_total", "component" => self.component, "task" => self.task.clone())
            .increment(1);
        if self.health.set_degraded(&self.task, true) {
            metrics::gauge!("taskmesh_background_task_degraded", "component" => self.component, "task" => self.task.clone())
                .set(1.0);
            tracing::warn!(component = self.component, task = %self.task, %reason, "background task degraded; retrying");
        } else {
            tracing::debug!(component = self.component, task = %self.task, %reason, "retrying");
        }
    }

    /// Reports the task working again (cheap when it was not degraded).
    pub fn recovered(&self) {
        if self.health.set_degraded(&self.task, false) {
            metrics::gauge!("taskmesh_background_task_degraded", "component" => self.component, "task" => self.task.clone())
                .set(0.0);
            tracing::info!(component = self.component, task = %self.task, "background task recovered");
        }
    }

    /// The task's name.
    pub fn task(&self) -> &str {
        &self.task
    }
}

impl TaskContext {
    /// A context outside any supervisor (tests and tools that drive a loop by hand).
    pub fn detached(task: &str, shutdown: CancellationToken) -> Self {
        Self {
            shutdown,
            health: TaskHealth::detached(task),
        }
    }

    /// After a transient failure (`reason`): reports the task degraded and waits the next
    /// `backoff` delay. Returns `false` when shutdown came first.
    pub async fn retry_after(
        &self,
        backoff: &mut Backoff,
        reason: &(dyn fmt::Display + Sync),
    ) -> bool {
        self.health.degraded(reason);
        tokio::select! {
            () = self.shutdown.cancelled() => false,
            () = tokio::time::sleep(backoff.next_delay()) => true,
        }
    }
}

/// Runs a component's background tasks and its server; see the module docs.
#[derive(Debug)]
pub struct Supervisor {
    component: &'static str,
    shutdown: CancellationToken,
    health: Health,
    tasks: JoinSet<anyhow::Result<()>>,
    names: HashMap<Id, String>,
}

impl Supervisor {
    /// A supervisor of `component` (its name in logs and metrics, e.g. `task`) stopping on
    /// `shutdown`, which it also cancels when a task fails (in `taskmesh dev` every component
    /// shares one token, so one failing stops them all).
    pub fn new(component: &'static str, shutdown: CancellationToken) -> Self {
        Self {
            component,
            shutdown,
            health: Health::default(),
            tasks: JoinSet::new(),
            names: HashMap::new(),
        }
    }

    /// The component's name.
    pub fn component(&self) -> &'static str {
        self.component
    }

    /// The component's health.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The token that stops the component.
    pub fn shutdown(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The context a task named `task` would get (for a task run outside [`Self::spawn`]).
    pub fn context(&self, task: &str) -> TaskContext {
        TaskContext {
            shutdown: self.shutdown.clone(),
            health: TaskHealth {
                component: self.component,
                task: task.to_owned(),
                health: self.health.clone(),
            },
        }
    }

    /// Runs `make(context)` as the background task `task` (its name in logs, metrics and
    /// health; a fixed, bounded set per component). It must run until shutdown; ending or
    /// panicking earlier fails the component.
    pub fn spawn<F, Fut>(&mut self, task: &str, make: F)
    where
        F: FnOnce(TaskContext) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let future = make(self.context(task));
        let handle = self.tasks.spawn(future);
        self.names.insert(handle.id(), task.to_owned());
    }

    /// Serves with `server` (a future that runs the component's listener until the shutdown
    /// token is cancelled) and supervises the tasks, publishing the component's health to
    /// `reporter` meanwhile. Returns when the component has stopped: `Ok` after a requested
    /// shutdown, the [`Failure`] (already logged) when a task or the server failed.
    ///
    /// # Errors
    /// [`Failure`].
    pub async fn run<E>(
        mut self,
        reporter: tonic_health::server::HealthReporter,
        server: impl Future<Output = Result<(), E>> + Send,
    ) -> Result<(), Failure>
    where
        E: Into<anyhow::Error>,
    {
        self.health.set_phase(Phase::Running);
        let health = self.health.clone();
        let publish = health.publish(reporter);
        tokio::pin!(server, publish);
        let mut server_done = false;
        let failure = tokio::select! {
            biased;
            () = self.shutdown.cancelled() => None,
            failure = first_failure(&mut self.tasks, &mut self.names, &self.shutdown) => Some(failure),
            result = &mut server => {
                server_done = true;
                Some(match result {
                    Ok(()) => ("server".to_owned(), anyhow::anyhow!("stopped serving unexpectedly")),
                    Err(error) => ("server".to_owned(), error.into()),
                })
            }
            () = &mut publish => None,
        };
        let failure = failure.map(|(task, cause)| {
            self.health.set_phase(Phase::Failed);
            let failure = Failure {
                component: self.component,
                task,
                cause,
            };
            tracing::error!(component = self.component, task = %failure.task, error = %format!("{:#}", failure.cause), "component failed; stopping");
            failure
        });
        self.health.set_phase(Phase::Draining);
        self.shutdown.cancel();
        // Drain: the server finishes in-flight calls, tasks their unit of work in hand. The
        // health keeps being published meanwhile (NOT_SERVING for readiness).
        let drained = async {
            if !server_done && let Err(error) = server.await {
                let error: anyhow::Error = error.into();
                tracing::warn!(component = self.component, error = %format!("{error:#}"), "server stopped with an error while draining");
            }
            while let Some(ended) = self.tasks.join_next_with_id().await {
                match &ended {
                    Err(error) if error.is_panic() => {
                        let task = self.names.get(&error.id()).cloned().unwrap_or_default();
                        tracing::error!(component = self.component, %task, "background task panicked while stopping");
                    }
                    Ok((id, Err(error))) => {
                        let task = self.names.get(id).cloned().unwrap_or_default();
                        tracing::warn!(component = self.component, %task, error = %format!("{error:#}"), "background task failed while stopping");
                    }
                    _ => {}
                }
            }
        };
        tokio::select! {
            () = drained => {}
            () = &mut publish => {}
            () = tokio::time::sleep(GRACE) => {
                tracing::warn!(component = self.component, "tasks still running after the grace period; leaving them");
            }
        }
        match failure {
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    }
}

/// The first task that ends before shutdown, with why; pending while none has (and forever
/// when there are none).
async fn first_failure(
    tasks: &mut JoinSet<anyhow::Result<()>>,
    names: &mut HashMap<Id, String>,
    shutdown: &CancellationToken,
) -> (String, anyhow::Error) {
    loop {
        let Some(ended) = tasks.join_next_with_id().await else {
            return std::future::pending().await;
        };
        let (id, cause) = match ended {
            Ok((id, Ok(()))) if shutdown.is_cancelled() => {
                names.remove(&id);
                continue;
            }
            Ok((id, Ok(()))) => (id, anyhow::anyhow!("stopped unexpectedly")),
            Ok((id, Err(error))) => (id, error),
            Err(error) if error.is_panic() => {
                let id = error.id();
                let message = super::panic_message(error.into_panic().as_ref());
                (id, anyhow::anyhow!("panicked: {message}"))
            }
            Err(error) => (error.id(), anyhow::anyhow!("was cancelled: {error}")),
        };
        let task = names.remove(&id).unwrap_or_default();
        return (task, cause);
    }
}
