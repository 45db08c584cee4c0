//! Logging setup: journald with structured fields under systemd, human
//! readable on stderr otherwise. `RUST_LOG` overrides the configured level.
//! SSNs are logged only through their masking `Display`.

use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

/// Where logs went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// systemd journal.
    Journald,
    /// Standard error.
    Stderr,
}

fn under_systemd() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some() || std::env::var_os("INVOCATION_ID").is_some()
}

/// Installs the global subscriber. Safe to call once per process.
pub fn init(level: &str) -> Sink {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    if under_systemd() {
        if let Ok(journald) = tracing_journald::layer() {
            let _ = tracing_subscriber::registry()
                .with(filter)
                .with(journald.with_syslog_identifier("cardlinkd".into()))
                .try_init();
            return Sink::Journald;
        }
    }
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false),
        )
        .try_init();
    Sink::Stderr
}
