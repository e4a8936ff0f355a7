//! A component's health as `grpc.health.v1` reports it (tonic-health), derived from its
//! phase and the state of its background tasks:
//!
//! | service name | SERVING while | who asks |
//! |---|---|---|
//! | [`LIVENESS`] (`liveness`) | the process runs and no supervised task has failed | Kubernetes' liveness probe: restart a wedged or failed process |
//! | [`READINESS`] (`readiness`) and each gRPC service's name | the component serves and is not draining or failed | Kubernetes' readiness probe, the gateway's health mirror |
//! | `""` (the whole server) | ready, and no background task is degraded (retrying a transient failure) | `grpcurl … grpc.health.v1.Health/Check`, dashboards |
//!
//! A degraded task (say, a consumer whose broker is away) leaves the component ready: its
//! RPCs still work, and taking it out of load balancing would not heal the broker.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
};

use tokio::sync::watch;
use tonic_health::{ServingStatus, server::HealthReporter};

/// The health service name of liveness.
pub const LIVENESS: &str = "liveness";

/// The health service name of readiness.
pub const READINESS: &str = "readiness";

/// Where a component is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Bound, starting its tasks: not ready yet.
    Starting,
    /// Serving.
    Running,
    /// Shutting down on request: finishing in-flight work, taking no new traffic.
    Draining,
    /// A supervised task failed: stopping, the process exits non-zero.
    Failed,
}

/// What the health statuses derive from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct State {
    pub(crate) phase: Phase,
    /// Background tasks retrying a transient failure, by name.
    pub(crate) degraded: BTreeSet<String>,
}

impl State {
    fn liveness(&self) -> ServingStatus {
        serving(self.phase != Phase::Failed)
    }

    fn readiness(&self) -> ServingStatus {
        serving(self.phase == Phase::Running)
    }

    fn overall(&self) -> ServingStatus {
        serving(self.phase == Phase::Running && self.degraded.is_empty())
    }
}

fn serving(yes: bool) -> ServingStatus {
    if yes {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

/// A component's health: cheap to clone, changed without waiting (also from synchronous
/// code); [`Health::publish`] applies changes to the `grpc.health.v1` service.
#[derive(Clone, Debug)]
pub struct Health {
    state: Arc<watch::Sender<State>>,
    /// The gRPC service names that follow readiness.
    services: Arc<Mutex<Vec<String>>>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            state: Arc::new(
                watch::channel(State {
                    phase: Phase::Starting,
                    degraded: BTreeSet::new(),
                })
                .0,
            ),
            services: Arc::default(),
        }
    }
}

impl Health {
    /// Makes `service` (a gRPC service's full name) follow readiness.
    pub fn add_service(&self, service: &str) {
        let mut services = self
            .services
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        services.push(service.to_owned());
        // Re-publish, so the new name gets its status.
        self.state.send_modify(|_| {});
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.state.borrow().phase
    }

    /// Moves to `phase`. A failed component stays failed.
    pub fn set_phase(&self, phase: Phase) {
        self.state.send_if_modified(|state| {
            let changed = state.phase != phase && state.phase != Phase::Failed;
            if changed {
                state.phase = phase;
            }
            changed
        });
    }

    /// Marks `task` degraded (`true`) or healthy again (`false`); returns whether that
    /// changed anything.
    pub(crate) fn set_degraded(&self, task: &str, degraded: bool) -> bool {
        self.state.send_if_modified(|state| {
            if degraded {
                state.degraded.insert(task.to_owned())
            } else {
                state.degraded.remove(task)
            }
        })
    }

    /// The background tasks degraded now.
    pub fn degraded(&self) -> Vec<String> {
        self.state.borrow().degraded.iter().cloned().collect()
    }

    /// Sets every status from the current state, then again after each change, until the
    /// last handle on this health is dropped. Runs inside the component's supervisor.
    pub(crate) async fn publish(&self, reporter: HealthReporter) {
        let mut changes = self.state.subscribe();
        loop {
            let state = changes.borrow_and_update().clone();
            let services = self
                .services
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            reporter.set_service_status("", state.overall()).await;
            reporter
                .set_service_status(LIVENESS, state.liveness())
                .await;
            reporter
                .set_service_status(READINESS, state.readiness())
                .await;
            for service in services {
                reporter
                    .set_service_status(&service, state.readiness())
                    .await;
            }
            if changes.changed().await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Health, Phase};
    use tonic_health::ServingStatus::{NotServing, Serving};

    #[test]
    fn statuses_follow_phase_and_degraded_tasks() {
        let health = Health::default();
        let status = |h: &Health| {
            let state = h.state.borrow().clone();
            (state.liveness(), state.readiness(), state.overall())
        };
        assert_eq!(status(&health), (Serving, NotServing, NotServing));
        health.set_phase(Phase::Running);
        assert_eq!(status(&health), (Serving, Serving, Serving));
        assert!(health.set_degraded("relay", true));
        assert!(!health.set_degraded("relay", true), "already degraded");
        assert_eq!(status(&health), (Serving, Serving, NotServing));
        assert!(health.set_degraded("relay", false));
        assert_eq!(status(&health), (Serving, Serving, Serving));
        health.set_phase(Phase::Failed);
        health.set_phase(Phase::Draining);
        assert_eq!(health.phase(), Phase::Failed, "a failure is final");
        assert_eq!(status(&health), (NotServing, NotServing, NotServing));
    }
}
