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
    /// The broker's address cannot be bound (or, for port 0, no free port found).
    #[error("cannot bind the broker's address")]
    Io(#[from] std::io::Error),
    /// The broker stopped serving.
    #[error("the embedded broker stopped: {0}")]
    Stopped(String),
    /// Something else listens on the broker's address (another broker, or another
    /// `taskmesh dev`): joining it would mix two installations' consumer groups.
    #[error(
        "{addr} is in use by another process: stop it, or give the embedded broker another \
         address (--kafka-listen / TASKMESH_KAFKA_LISTEN), or use it with KAFKA_BROKERS"
    )]
    AddressInUse {
        /// The address.
        addr: SocketAddr,
    },
}

/// How an embedded broker differs from the plain development one.
#[derive(Clone, Debug, Default)]
pub struct BrokerOptions {
    /// The `host:port` the broker tells clients to connect to, when not its own listener
    /// (e.g. a TLS terminator in front of it).
    pub advertised: Option<String>,
    /// Require SASL authentication (SCRAM-SHA-256/512; users from
    /// [`add_scram_user`], which needs durable `sqlite://` storage).
    pub sasl: bool,
}

/// A SCRAM mechanism (RFC 5802, RFC 7677).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scram {
    /// SCRAM-SHA-256.
    Sha256,
    /// SCRAM-SHA-512.
    Sha512,
}

/// Stores `user`'s SCRAM credential for `password` in `storage` (a `sqlite://` URL; the
/// memory storage keeps no credentials) of a running broker (its cluster must be registered
/// there first): salted password by PBKDF2 with 4,096 iterations, stored key and server key
/// per RFC 5802 §3.
///
/// # Errors
/// [`BrokerError::Tansu`] when the storage cannot be opened or written.
pub async fn add_scram_user(
    storage: &str,
    user: &str,
    password: &str,
    mechanism: Scram,
) -> Result<(), BrokerError> {
    use hmac::{Hmac, Mac as _};
    use sha2::{Sha256, Sha512};
    use tansu_storage::Storage as _;

    const ITERATIONS: u32 = 4096;
    let salt: [u8; 16] = rand::random();
    // RFC 5802 §3: SaltedPassword := Hi(password, salt, i); ClientKey := HMAC(SaltedPassword,
    // "Client Key"); StoredKey := H(ClientKey); ServerKey := HMAC(SaltedPassword, "Server Key").
    macro_rules! keys {
        ($digest:ty) => {{
            let mut salted = vec![0_u8; <$digest as sha2::Digest>::output_size()];
            pbkdf2::pbkdf2::<Hmac<$digest>>(password.as_bytes(), &salt, ITERATIONS, &mut salted)
                .map_err(|e| BrokerError::Tansu(e.to_string()))?;
            let mac = |text: &[u8]| -> Result<Vec<u8>, BrokerError> {
                let mut mac = <Hmac<$digest> as hmac::digest::KeyInit>::new_from_slice(&salted)
                    .map_err(|e| BrokerError::Tansu(e.to_string()))?;
                mac.update(text);
                Ok(mac.finalize().into_bytes().to_vec())
            };
            let client_key = mac(b"Client Key")?;
            (
                <$digest as sha2::Digest>::digest(&client_key).to_vec(),
                mac(b"Server Key")?,
            )
        }};
    }
    let (stored_key, server_key, tansu_mechanism) = match mechanism {
        Scram::Sha256 => {
            let (stored, server) = keys!(Sha256);
            (stored, server, tansu_sans_io::ScramMechanism::Scram256)
        }
        Scram::Sha512 => {
            let (stored, server) = keys!(Sha512);
            (stored, server, tansu_sans_io::ScramMechanism::Scram512)
        }
    };
    let tansu = |e: &dyn std::fmt::Display| BrokerError::Tansu(e.to_string());
    // Whatever the storage engine runs in the background stops with this token.
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let container = StorageContainer::builder()
        .cluster_id("taskmesh".to_owned())
        .node_id(tansu_broker::NODE_ID)
        .advertised_listener(Url::parse("tcp://127.0.0.1:9092")?)
        .storage(Url::parse(storage)?)
        .cancellation(stop)
        .build()
        .await
        .map_err(|e| tansu(&e))?;
    container
        .upsert_user_scram_credential(
            user,
            tansu_mechanism,
            tansu_storage::ScramCredential {
                salt: bytes::Bytes::copy_from_slice(&salt),
                iterations: i32::try_from(ITERATIONS).unwrap_or(4096),
                stored_key: stored_key.into(),
                server_key: server_key.into(),
            },
        )
        .await
        .map_err(|e| tansu(&e))
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
        Self::start_with(addr, storage, &BrokerOptions::default()).await
    }

    /// [`EmbeddedBroker::start`] with `options` (tests of TLS and SASL).
    ///
    /// # Errors
    /// [`BrokerError`].
    pub async fn start_with(
        addr: SocketAddr,
        storage: &str,
        options: &BrokerOptions,
    ) -> Result<Self, BrokerError> {
        // tansu binds by URL; bind here first, so a port in use is an error rather than a
        // silent connection to whatever holds it, and port 0 becomes a free port (the probe
        // is closed before tansu binds: a tiny race, fine for dev and tests).
        let probe = std::net::TcpListener::bind(addr).map_err(|error| match error.kind() {
            std::io::ErrorKind::AddrInUse => BrokerError::AddressInUse { addr },
            _ => BrokerError::Io(error),
        })?;
        let addr = probe.local_addr()?;
        drop(probe);
        let url = Url::parse(&format!("tcp://{addr}"))?;
        let advertised = match &options.advertised {
            Some(advertised) => Url::parse(&format!("tcp://{advertised}"))?,
            None => url.clone(),
        };
        let mut broker = Broker::<Controller<StorageContainer>, StorageContainer>::builder()
            .node_id(tansu_broker::NODE_ID)
            .cluster_id("taskmesh")
            .incarnation_id(uuid::Uuid::now_v7())
            .advertised_listener(advertised)
            .storage(Url::parse(storage)?)
            .authentication(options.sasl)
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
        // The probe above finds an address already in use; a process that takes it in the
        // instant between the probe and tansu's own bind is not detected.
        for _ in 0..200 {
            // A broker that stopped while starting says why, rather than "not listening".
            if task.is_finished() {
                let reason = match task.await {
                    Ok(Ok(())) => "it ended while starting".to_owned(),
                    Ok(Err(error)) => error,
                    Err(error) => error.to_string(),
                };
                return Err(BrokerError::Stopped(reason));
            }
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
