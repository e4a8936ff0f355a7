//! The CPU an idle mesh costs: the whole mesh in this process (every service, consumer,
//! relay, scheduler and the gateway) with the in-memory broker, nobody calling, beside a bare
//! tonic server measured the same way over the same time.

use std::time::Duration;

use taskmesh_testkit::MeshOptions;

use crate::{Scale, load::CpuClock, rpc, table::Table};

/// Starts the mesh, lets it settle, and reads the CPU (this process and PostgreSQL) over
/// `scale.idle`; then the same for a bare tonic server alone.
pub(crate) async fn run(scale: &Scale, table: &mut Table) -> anyhow::Result<()> {
    let mesh = crate::mesh::start(MeshOptions::default()).await?;
    // Start-up work (migrations, first lease rounds, connections) is not idling.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let clock = CpuClock::start();
    tokio::time::sleep(scale.idle).await;
    let ours = clock.stop();
    drop(mesh);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let (_addr, stop) = rpc::echo_server().await?;
    let clock = CpuClock::start();
    tokio::time::sleep(scale.idle).await;
    let limit = clock.stop();
    stop.cancel();

    table.ratio_row(
        "idle",
        &format!("mesh CPU over {} s, cores", scale.idle.as_secs()),
        ours.bench + ours.postgres,
        "bare tonic server",
        limit.bench + limit.postgres,
        ours,
    );
    Ok(())
}
