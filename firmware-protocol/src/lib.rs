//! # firmware-protocol
//!
//! The cardlink reader wire protocol v1 and the card data it carries, written
//! as `#![no_std]` code so the very same decoder can run in reader firmware
//! and in the host daemon.
//!
//! * [`frame`]: the binary frame format (`STX | LEN | SEQ | CMD | PAYLOAD | CRC | ETX`),
//!   an encoder and a resynchronising, allocation-free scanner.
//! * [`ssn`]: the 18-character citizen identity number (GB 11643) used as the
//!   national social security number, with MOD 11-2 check character.
//! * [`record`]: the `|`-separated basic-info record returned by standard
//!   social-security card reader modules (also the payload of `CARD_IC`).
//! * [`magstripe`]: ISO 7811/7813 track 1 and track 2 lines.
//! * [`idcard`]: the SAM module protocol of identity-card readers (GA/T 467)
//!   and the text block of the cards they read.
//! * [`retcode`]: the reader interface's return codes and their meanings.
//! * [`date`]: the small calendar type the above need.
//!
//! Nothing in this crate allocates unless the `alloc` feature is on, and no
//! function panics on any input: every parser returns a `Result`.
//! The byte-exact specification is in `PROTOCOL.md` next to this crate.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod date;
pub mod frame;
pub mod idcard;
pub mod magstripe;
pub mod record;
pub mod retcode;
pub mod ssn;

pub use date::Date;
pub use frame::{Cmd, Feedback, Frame, Scan};
pub use ssn::{Ssn, SsnError};
