//! # cardlink
//!
//! The host side of cardlink: decoding card reads from serial readers,
//! resolving family links (family mutual aid on the employee medical
//! insurance personal account) in a registry (SQLite or PostgreSQL), and serving the result
//! to display clients on a Unix socket.
//!
//! Data flow (see ARCHITECTURE.md): bytes → frame or line → card read
//! ([`reader`]) → [`Ssn`] → [`registry`] resolution → JSON line
//! ([`protocol`]), wired together by [`daemon`]; [`client`] is the other
//! end of the socket.

pub mod capture;
pub mod client;
pub mod config;
#[cfg(feature = "sim")]
pub mod ctl;
pub mod daemon;
pub mod display;
pub mod fds;
pub mod logging;
pub mod mask;
pub mod notify;
pub mod protocol;
pub mod reader;
pub mod registry;
#[cfg(feature = "sim")]
pub mod sim;
#[cfg(feature = "sim")]
pub mod tools;

pub use firmware_protocol::{Date, Ssn, SsnError};
