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

const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Why a log level is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LevelError(String);

/// Parses a log-level filter the way the daemon will use it: tracing's
/// `EnvFilter` syntax, where every comma-separated directive must name a
/// level (`info`, or `target=debug`). A bare word that is not a level is
/// refused: `EnvFilter` would read it as a target name and log nothing else.
pub fn parse_level(level: &str) -> Result<EnvFilter, LevelError> {
    if level.trim().is_empty() {
        return Err(LevelError(
            "empty; use one of trace, debug, info, warn, error, off".into(),
        ));
    }
    for d in level.split(',').map(str::trim) {
        let lvl = d.rsplit_once('=').map_or(d, |(_, l)| l).trim();
        if !LEVELS.contains(&lvl.to_ascii_lowercase().as_str()) {
            return Err(LevelError(format!(
                "'{d}' names no level; use one of trace, debug, info, warn, error, off, or target=level"
            )));
        }
    }
    EnvFilter::builder()
        .parse(level)
        .map_err(|e| LevelError(e.to_string()))
}

/// Installs the global subscriber. Safe to call once per process. A
/// `RUST_LOG` that does not parse is ignored with a warning.
pub fn init(level: &str) -> Sink {
    let from_env = std::env::var("RUST_LOG").ok().map(|v| (parse_level(&v), v));
    let mut env_error = None;
    let filter = match from_env {
        Some((Ok(f), _)) => f,
        Some((Err(e), v)) => {
            env_error = Some(format!("RUST_LOG '{v}' ignored: {e}"));
            parse_level(level).unwrap_or_else(|_| EnvFilter::new("info"))
        }
        None => parse_level(level).unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let sink = install(filter);
    if let Some(e) = env_error {
        tracing::warn!("{e}");
    }
    sink
}

fn install(filter: EnvFilter) -> Sink {
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
                // Colours only on a terminal: a log file stays plain text.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_target(false),
        )
        .try_init();
    Sink::Stderr
}

/// An error and its causes in one line (`a: b: c`), for a binary's last
/// words. A cause whose text its error already shows is not repeated:
/// many of our errors name their cause in their own message (the TOML
/// error of a configuration, the I/O error of a socket), which a plain
/// walk of the causes (`Caused by:`, `{:#}`) would print a second time.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut shown = out.clone();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !shown.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        shown = text;
        cause = c.source();
    }
    out
}
