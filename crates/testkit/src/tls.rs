//! TLS for tests of the production path: certificates made in the test ([`Pki`]) and a TLS
//! terminator ([`Terminator`]) in front of the embedded broker, which does not speak TLS
//! itself, so Kafka clients talk TLS (and mutual TLS) to a real endpoint.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    server::WebPkiClientVerifier,
};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_rustls::TlsAcceptor;

/// A CA, a server certificate for `localhost` and a client certificate it signed, as PEM
/// files in a directory of their own (removed on drop).
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
    /// The CA certificate (what clients trust: `ssl.ca.location`, `sslrootcert`).
    pub ca: PathBuf,
    /// The server certificate, for `localhost`.
    pub server_cert: PathBuf,
    /// The server's private key (PKCS #8).
    pub server_key: PathBuf,
    /// A client certificate (for mutual TLS: `ssl.certificate.location`).
    pub client_cert: PathBuf,
    /// The client's private key (`ssl.key.location`).
    pub client_key: PathBuf,
    server: (Vec<u8>, Vec<u8>),
    ca_der: Vec<u8>,
}

impl Pki {
    /// Makes a fresh CA and the certificates it signs.
    pub fn new() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("taskmesh-pki-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "taskmesh test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf = |name: &str, purpose: ExtendedKeyUsagePurpose| -> anyhow::Result<_> {
            let mut params = CertificateParams::new(vec![name.to_owned()])?;
            params.distinguished_name.push(DnType::CommonName, name);
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![purpose];
            params.use_authority_key_identifier_extension = true;
            let key = KeyPair::generate()?;
            let cert = params.signed_by(&key, &issuer)?;
            Ok((cert, key))
        };
        let (server_cert, server_key) = leaf("localhost", ExtendedKeyUsagePurpose::ServerAuth)?;
        let (client_cert, client_key) =
            leaf("taskmesh-client", ExtendedKeyUsagePurpose::ClientAuth)?;

        let write = |name: &str, pem: String| -> anyhow::Result<PathBuf> {
            let path = dir.join(name);
            std::fs::write(&path, pem)?;
            Ok(path)
        };
        Ok(Self {
            ca: write("ca.crt", ca_cert.pem())?,
            server_cert: write("server.crt", server_cert.pem())?,
            server_key: write("server.key", server_key.serialize_pem())?,
            client_cert: write("client.crt", client_cert.pem())?,
            client_key: write("client.key", client_key.serialize_pem())?,
            server: (server_cert.der().to_vec(), server_key.serialize_der()),
            ca_der: ca_cert.der().to_vec(),
            dir,
        })
    }

    /// A rustls server configuration with the server certificate; with `client_auth`, it
    /// requires a client certificate signed by the CA.
    fn server_config(&self, client_auth: bool) -> anyhow::Result<ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = if client_auth {
            let mut roots = RootCertStore::empty();
            roots.add(CertificateDer::from(self.ca_der.clone()))?;
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        Ok(builder.with_single_cert(
            vec![CertificateDer::from(self.server.0.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server.1.clone())),
        )?)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Accepts TLS on a loopback port and forwards each connection, decrypted, to an upstream
/// plain-TCP address; stops when dropped.
#[derive(Debug)]
pub struct Terminator {
    task: JoinHandle<()>,
}

impl Terminator {
    /// Binds a free loopback port (bind first, so the broker behind can advertise it).
    pub async fn bind() -> anyhow::Result<(TcpListener, SocketAddr)> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        Ok((listener, addr))
    }

    /// Serves TLS with `pki`'s server certificate on `listener` (requiring a client
    /// certificate when `client_auth`), forwarding to `upstream`.
    pub fn start(
        listener: TcpListener,
        upstream: SocketAddr,
        pki: &Pki,
        client_auth: bool,
    ) -> anyhow::Result<Self> {
        let acceptor = TlsAcceptor::from(Arc::new(pki.server_config(client_auth)?));
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A failed handshake (a client that does not trust us, or that we do
                    // not trust) just closes the connection, as a TLS server does.
                    let Ok(mut tls) = acceptor.accept(socket).await else {
                        return;
                    };
                    let Ok(mut plain) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        Ok(Self { task })
    }
}

impl Drop for Terminator {
    fn drop(&mut self) {
        self.task.abort();
    }
}
