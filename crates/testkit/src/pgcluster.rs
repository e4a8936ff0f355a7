//! A PostgreSQL cluster of a test's own (Debian's `pg_createcluster`, on a free port), for
//! tests that must stop and start the server or give it a certificate of their own: the
//! shared server on 5432 is never restarted. Dropped with the value.

use std::{path::PathBuf, process::Command};

use crate::tls::Pki;

/// See the module docs.
#[derive(Debug)]
pub struct PgCluster {
    version: String,
    name: String,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command.output()?;
    anyhow::ensure!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

impl PgCluster {
    /// Creates and starts a cluster with trust authentication on a free port, serving TLS
    /// with `pki`'s server certificate (for `localhost`) when given, else with Debian's
    /// default snakeoil certificate.
    pub fn create(pki: Option<&Pki>) -> anyhow::Result<Self> {
        let version = std::fs::read_dir("/etc/postgresql")?
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .max()
            .ok_or_else(|| anyhow::anyhow!("no PostgreSQL under /etc/postgresql"))?;
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))?
            .local_addr()?
            .port();
        let name = format!("tm{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        run(Command::new("pg_createcluster")
            .args(["--port", &port.to_string(), &version, &name, "--"])
            .args(["--auth-host=trust", "--auth-local=trust"]))?;
        let cluster = Self {
            version,
            name,
            port,
        };
        let mut conf = String::from("listen_addresses = '127.0.0.1'\n");
        if let Some(pki) = pki {
            let data = cluster.data_dir();
            for (from, to) in [
                (&pki.server_cert, "test-server.crt"),
                (&pki.server_key, "test-server.key"),
            ] {
                let target = data.join(to);
                std::fs::copy(from, &target)?;
                run(Command::new("chown")
                    .args(["postgres:postgres"])
                    .arg(&target))?;
                run(Command::new("chmod").arg("600").arg(&target))?;
            }
            conf.push_str("ssl_cert_file = 'test-server.crt'\nssl_key_file = 'test-server.key'\n");
        }
        std::fs::write(
            cluster.conf_dir().join("conf.d").join("taskmesh-test.conf"),
            conf,
        )?;
        cluster.start()?;
        Ok(cluster)
    }

    fn data_dir(&self) -> PathBuf {
        PathBuf::from(format!(
            "/var/lib/postgresql/{}/{}",
            self.version, self.name
        ))
    }

    fn conf_dir(&self) -> PathBuf {
        PathBuf::from(format!("/etc/postgresql/{}/{}", self.version, self.name))
    }

    /// The URL of database `database` as user `postgres` over TCP.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Starts the server (waits until it accepts connections).
    pub fn start(&self) -> anyhow::Result<()> {
        run(Command::new("pg_ctlcluster").args([
            "--skip-systemctl-redirect",
            &self.version,
            &self.name,
            "start",
        ]))
    }

    /// Stops the server (fast shutdown: open sessions are ended).
    pub fn stop(&self) -> anyhow::Result<()> {
        run(Command::new("pg_ctlcluster").args([
            "--skip-systemctl-redirect",
            &self.version,
            &self.name,
            "stop",
            "--",
            "-m",
            "fast",
        ]))
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = Command::new("pg_dropcluster")
            .args(["--stop", &self.version, &self.name])
            .output();
    }
}
