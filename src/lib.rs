//! # cardlink
//!
//! The host side of cardlink: decoding identities from card readers
//! (serial readers in our frame protocol, magnetic stripes, the MOHRSS
//! standard interface library through a helper process, identity-card SAM
//! modules) and manual entry, resolving family links (family mutual aid on
//! the employee medical insurance personal account) in a registry (SQLite
//! on one box, or PostgreSQL shared by many), and serving the result to
//! display clients on a Unix socket.
//!
//! Data flow (see ARCHITECTURE.md): bytes → frame or line → card read
//! ([`reader`]) → [`Ssn`] → [`registry`] resolution → JSON line
//! ([`protocol`]), wired together by [`daemon`]; [`client`] is the other
//! end of the socket.

pub mod backoff;
pub mod capture;
pub mod client;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod display;
pub mod fds;
pub mod logging;
pub mod mask;
pub mod metrics;
pub mod notify;
pub mod printer;
pub mod protocol;
pub mod reader;
pub mod registry;
#[cfg(feature = "sim")]
pub mod sim;
#[cfg(feature = "sim")]
pub mod tools;

pub use firmware_protocol::{Date, Ssn, SsnError};

/// The version the binaries print (`--version`, the daemon's start line).
/// A build with the `sim` feature says so: it carries the reader simulator
/// and tokio's test clock, for the demo and the tests, never for a window.
/// `.ci/check-deb` checks that the package's binaries do not say it.
#[cfg(not(feature = "sim"))]
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// See the other definition.
#[cfg(feature = "sim")]
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (demo and test build: with the reader simulator and tokio's test clock)"
);
