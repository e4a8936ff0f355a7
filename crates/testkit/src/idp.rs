//! A real OpenID Connect provider on loopback for tests: `tools/oidc/provider.mjs`, which runs
//! the OpenID-certified npm package `oidc-provider` with a public client `taskmesh-web` and two
//! users, `alice` (role `admin`) and `bob`. Its access tokens are RS256 JWTs for audience
//! `taskmesh`. Test-only endpoints under `/test/` get a user's tokens through the real
//! authorization code flow with PKCE, rotate and retire its signing keys, count the requests
//! its JWKS served, and take it down and up.
//!
//! It needs Node.js and `npm install` in `tools/` (done here when `oidc-provider` is missing).
//! Without Node.js, [`IdentityProvider::start`] answers `None` after saying so past the test
//! harness's capture, unless `TASKMESH_REQUIRE_IDP=1` (set by `.ci/run`), which makes it a
//! failure.

use std::{path::PathBuf, process::Stdio, sync::Mutex};

use anyhow::Context as _;
use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    process::{Child, Command},
};

/// A running `tools/oidc/provider.mjs`, killed when dropped.
#[derive(Debug)]
pub struct IdentityProvider {
    child: Child,
    /// Its stderr, shown when it fails to start.
    log: PathBuf,
    /// Its issuer identifier, `http://127.0.0.1:<port>` (no trailing slash).
    pub issuer: String,
    http: reqwest::Client,
}

/// Serializes `npm install` in `tools/` between the tests of one binary.
static NPM_INSTALL: Mutex<()> = Mutex::new(());

fn tools_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools")
}

impl IdentityProvider {
    /// Starts the provider with extra command-line `args` (e.g. `--access-token-ttl`,
    /// `--redirect-uri`); `None` when Node.js is missing and not required (see the module
    /// docs), naming `test` in the message.
    ///
    /// # Errors
    /// `npm install` fails, or the provider does not start within 30 s.
    pub async fn start(test: &str, args: &[&str]) -> anyhow::Result<Option<Self>> {
        let required = std::env::var("TASKMESH_REQUIRE_IDP").is_ok_and(|value| value == "1");
        let node = std::process::Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|output| output.status.success());
        if !node {
            anyhow::ensure!(!required, "TASKMESH_REQUIRE_IDP=1 but Node.js is missing");
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: the identity provider tests need Node.js with npm; \
                 TASKMESH_REQUIRE_IDP=1 makes this a failure"
            );
            return Ok(None);
        }
        let tools = tools_dir();
        if !tools.join("node_modules/oidc-provider").exists() {
            let tools = tools.clone();
            tokio::task::spawn_blocking(move || {
                let _guard = NPM_INSTALL.lock().unwrap_or_else(|e| e.into_inner());
                if tools.join("node_modules/oidc-provider").exists() {
                    return Ok(());
                }
                let status = std::process::Command::new("npm")
                    .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
                    .current_dir(&tools)
                    .status()
                    .context("run npm install in tools/")?;
                anyhow::ensure!(status.success(), "npm install in tools/ failed: {status}");
                Ok(())
            })
            .await??;
        }
        static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let log = std::env::temp_dir().join(format!(
            "taskmesh-idp-{}-{}.log",
            std::process::id(),
            STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        // stdin stays open while we live: the provider exits when it closes (our process
        // died, even by SIGKILL); kill_on_drop covers the rest.
        let mut child = Command::new("node")
            .arg(tools.join("oidc/provider.mjs"))
            .arg("--exit-with-stdin")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true)
            .spawn()
            .context("start tools/oidc/provider.mjs")?;
        let stdout = child.stdout.take().context("provider stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
            .await
            .ok()
            .and_then(Result::ok)
            .flatten();
        let Some(line) = first else {
            let stderr = std::fs::read_to_string(&log).unwrap_or_default();
            anyhow::bail!(
                "the identity provider did not start within 30 s; its stderr:\n{}",
                stderr
                    .chars()
                    .rev()
                    .take(4000)
                    .collect::<String>()
                    .chars()
                    .rev()
                    .collect::<String>()
            );
        };
        let issuer = line
            .strip_prefix("listening ")
            .with_context(|| format!("unexpected first line {line:?}"))?
            .trim()
            .to_owned();
        Ok(Some(Self {
            child,
            log,
            issuer,
            http: reqwest::Client::new(),
        }))
    }

    async fn call(&self, method: reqwest::Method, path: &str) -> anyhow::Result<serde_json::Value> {
        let response = self
            .http
            .request(method, format!("{}{path}", self.issuer))
            .send()
            .await
            .with_context(|| path.to_owned())?;
        let status = response.status();
        let body = response.bytes().await?;
        anyhow::ensure!(
            status.is_success(),
            "{path}: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        );
        Ok(serde_json::from_slice(&body)?)
    }

    /// The token endpoint's answer (`access_token`, `refresh_token`, `id_token`,
    /// `expires_in`, …) for `user`, after a real authorization code flow with PKCE.
    ///
    /// # Errors
    /// An unknown user, or the provider is down.
    pub async fn tokens(&self, user: &str) -> anyhow::Result<serde_json::Value> {
        self.call(reqwest::Method::GET, &format!("/test/token?user={user}"))
            .await
    }

    /// An access token of `user` (see [`IdentityProvider::tokens`]).
    ///
    /// # Errors
    /// As [`IdentityProvider::tokens`].
    pub async fn access_token(&self, user: &str) -> anyhow::Result<String> {
        let tokens = self.tokens(user).await?;
        tokens["access_token"]
            .as_str()
            .map(str::to_owned)
            .context("no access_token")
    }

    /// Adds a new signing key in front of the JWKS (it signs from now on); its `kid`.
    ///
    /// # Errors
    /// The provider does not answer.
    pub async fn rotate(&self) -> anyhow::Result<String> {
        let answer = self.call(reqwest::Method::POST, "/test/rotate").await?;
        answer["kid"].as_str().map(str::to_owned).context("no kid")
    }

    /// Drops every key but the signing one from the JWKS.
    ///
    /// # Errors
    /// The provider does not answer.
    pub async fn retire(&self) -> anyhow::Result<()> {
        self.call(reqwest::Method::POST, "/test/retire").await?;
        Ok(())
    }

    /// How many requests the JWKS has served so far.
    ///
    /// # Errors
    /// The provider does not answer.
    pub async fn jwks_count(&self) -> anyhow::Result<u64> {
        let answer = self.call(reqwest::Method::GET, "/test/jwks-count").await?;
        answer["count"].as_u64().context("no count")
    }

    /// Makes every OpenID endpoint answer 503 (`true`) or work again (`false`).
    ///
    /// # Errors
    /// The provider does not answer.
    pub async fn set_down(&self, down: bool) -> anyhow::Result<()> {
        let path = if down { "/test/down" } else { "/test/up" };
        self.call(reqwest::Method::POST, path).await?;
        Ok(())
    }

    /// Stops the provider process.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
        let _ = std::fs::remove_file(&self.log);
    }
}
