//! An in-process Kafka-compatible broker (the `tansu` crates, Apache-2.0) for `taskmesh dev`
//! and tests. Storage is a URL: `memory://tansu/` (lost on exit) or `sqlite://FILE` (durable;
//! tansu takes FILE relative to the working directory).

use std::{net::SocketAddr, time::Duration};

use tansu_broker::{broker::Broker, coordinator::group::administrator::Controller};
use tansu_storage::StorageContainer;
use tokio::task::JoinHandle;
use url::Url;

/// Errors starting the embedded broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// A listener or storage URL is malformed.
    #[error("invalid broker url")]
    Url(#[from] url::ParseError),
    /// tansu refused to build.
    #[error("cannot start embedded broker: {0}")]
    Tansu(String),
    /// The broker did not accept connections in time.
    #[error("embedded broker did not start listening on {0}")]
    NotListening(SocketAddr),
    /// No free port could be found.
    #[error("cannot find a free port")]
    Io(#[from] std::io::Error),
    /// The broker stopped serving.
    #[error("the embedded broker stopped: {0}")]
    Stopped(String),
}

/// A running embedded broker; aborted when dropped.
#[derive(Debug)]
pub struct EmbeddedBroker {
    addr: SocketAddr,
    task: JoinHandle<Result<(), String>>,
}

impl EmbeddedBroker {
    /// Starts a broker listening on `addr` (port 0 picks a free port) with `storage`, and
    /// waits until it accepts connections.
    ///
    /// # Errors
    /// [`BrokerError`].
    pub async fn start(addr: SocketAddr, storage: &str) -> Result<Self, BrokerError> {
        let addr = if addr.port() == 0 {
            // tansu binds by URL; find a free port first (a tiny race, fine for dev/tests).
            let probe = std::net::TcpListener::bind(addr)?;
            probe.local_addr()?
        } else {
            addr
        };
        let url = Url::parse(&format!("tcp://{addr}"))?;
        let mut broker = Broker::<Controller<StorageContainer>, StorageContainer>::builder()
            .node_id(tansu_broker::NODE_ID)
            .cluster_id("taskmesh")
            .incarnation_id(uuid::Uuid::now_v7())
            .advertised_listener(url.clone())
            .storage(Url::parse(storage)?)
            .listener(url)
            .silent(true)
            .build()
            .await
            .map_err(|e| BrokerError::Tansu(e.to_string()))?;
        let task = tokio::spawn(async move {
            broker
                .serve(tokio::time::Instant::now())
                .await
                .map_err(|error| error.to_string())
        });
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(Self { addr, task });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        task.abort();
        Err(BrokerError::NotListening(addr))
    }

    /// Completes when the broker stops serving (it should not, before it is dropped), with
    /// why: an error, a panic, or an unexpected end.
    pub async fn stopped(&mut self) -> BrokerError {
        let reason = match (&mut self.task).await {
            Ok(Ok(())) => "it ended unexpectedly".to_owned(),
            Ok(Err(error)) => error,
            Err(error) if error.is_panic() => format!(
                "it panicked: {}",
                crate::runtime::panic_message(error.into_panic().as_ref())
            ),
            Err(error) => error.to_string(),
        };
        BrokerError::Stopped(reason)
    }

    /// The `host:port` clients connect to.
    pub fn bootstrap_servers(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        self.task.abort();
    }
}
