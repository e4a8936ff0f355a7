//! `tracing` set-up: human-readable or JSON logs to stderr, filtered by `RUST_LOG`
//! (default `info`, with chatty dependencies such as the embedded broker at `warn`).

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per event (for log collectors).
    Json,
}

/// Installs the global subscriber. Calling it twice keeps the first one (tests may call it
/// from several places).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tansu=warn,sqlx=warn,libsql=warn,h2=warn"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Text => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Json => registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .try_init(),
    };
    // Already initialised: keep the first subscriber.
    drop(result);
}
