//! The mesh a scenario measures: in this process with the embedded broker beside it (the
//! default), or with the broker in a process of its own (`--broker-process`), so that the
//! table tells the mesh's CPU from the development broker's (shown as `+ broker`).

use std::{
    net::SocketAddr,
    ops::{Deref, DerefMut},
    sync::atomic::{AtomicBool, Ordering},
};

use taskmesh_platform::{broker::EmbeddedBroker, kafka::KafkaConfig};
use taskmesh_testkit::{Mesh, MeshOptions};
use tokio_util::sync::CancellationToken;

use crate::{load, streams::ChildServer};

/// Whether meshes get a broker process of their own (set once, from the command line).
static BROKER_PROCESS: AtomicBool = AtomicBool::new(false);

/// Makes every mesh started after this call use a broker in a process of its own.
pub(crate) fn use_broker_process() {
    BROKER_PROCESS.store(true, Ordering::Relaxed);
}

/// A mesh on a fresh database (see [`Mesh`]), with its broker in this process or, after
/// [`use_broker_process`], in a child process whose CPU every [`load::CpuClock`] counts.
/// Dropping it stops the mesh first, then the broker.
pub(crate) struct BenchMesh {
    mesh: Mesh,
    broker: Option<ChildServer>,
}

impl Deref for BenchMesh {
    type Target = Mesh;

    fn deref(&self) -> &Mesh {
        &self.mesh
    }
}

impl DerefMut for BenchMesh {
    fn deref_mut(&mut self) -> &mut Mesh {
        &mut self.mesh
    }
}

impl Drop for BenchMesh {
    fn drop(&mut self) {
        if let Some(broker) = &self.broker {
            load::forget_broker(broker.pid);
        }
    }
}

/// Starts a mesh with `options`; see [`BenchMesh`].
///
/// # Errors
/// When the broker process or the mesh does not start.
pub(crate) async fn start(options: MeshOptions) -> anyhow::Result<BenchMesh> {
    if !BROKER_PROCESS.load(Ordering::Relaxed) {
        return Ok(BenchMesh {
            mesh: Mesh::start(options).await?,
            broker: None,
        });
    }
    taskmesh_testkit::init_tracing();
    let broker = ChildServer::spawn(&["broker-process"]).await?;
    let kafka = KafkaConfig::local(broker.addr.to_string());
    let mesh = Mesh::start_with(options, kafka, None, |_| {}).await?;
    load::count_broker(broker.pid);
    Ok(BenchMesh {
        mesh,
        broker: Some(broker),
    })
}

/// The embedded broker (memory storage, as in the tests) alone in this process: prints
/// `listening <addr>`, serves until stdin closes (the benchmark is done or gone).
pub(crate) async fn broker_process() -> anyhow::Result<()> {
    let mut broker =
        EmbeddedBroker::start(SocketAddr::from(([127, 0, 0, 1], 0)), "memory://tansu/").await?;
    let addr: SocketAddr = broker.bootstrap_servers().parse()?;
    crate::streams::announce(addr).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(crate::streams::read_stdin(shutdown.clone(), |_| async {}));
    tokio::select! {
        () = shutdown.cancelled() => Ok(()),
        error = broker.stopped() => Err(error.into()),
    }
}
