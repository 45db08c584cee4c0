//! The input side: everything between a reader's bytes (or a typed number)
//! and a validated [`card::CardRead`].
//!
//! * [`codec`]: tokio-util codecs for the three reader modes.
//! * [`dedup`]: resend suppression (the 10 s promise of PROTOCOL.md).
//! * [`card`]: frames and lines to card reads (records, stripes, read errors).
//! * [`manual`]: a number typed at a window to a card read.
//!
//! Nothing here knows of the registry, the socket or the async runtime's
//! tasks; `daemon::serial` drives it.

pub mod card;
pub mod codec;
pub mod dedup;
pub mod library;
pub mod manual;

pub use manual::manual_read;
