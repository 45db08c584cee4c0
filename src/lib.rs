//! # cardlink
//!
//! The host side of cardlink: decoding card reads from serial readers,
//! resolving family links (family mutual aid on the employee medical
//! insurance personal account) in a SQLite registry, and serving the result
//! to display clients on a Unix socket.
//!
//! Data flow (see ARCHITECTURE.md): bytes ([`codec`]) → frame or line
//! ([`firmware_protocol`]) → [`card::CardRead`] → [`Ssn`] → [`registry`]
//! resolution → JSON ([`daemon::proto`]).

pub mod card;
pub mod codec;
pub mod config;
pub mod daemon;
pub mod dedup;
pub mod logging;
pub mod mask;
pub mod notify;
pub mod registry;
pub mod sim;

pub use firmware_protocol::{Date, Ssn, SsnError};
