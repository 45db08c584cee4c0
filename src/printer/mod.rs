//! Receipts on an ESC/POS thermal printer: the bytes of a receipt and the
//! meaning of the printer's real-time status replies. No I/O here (the
//! daemon's printer task, `daemon::printer`, owns the device), nothing of
//! the daemon or the registry.
//!
//! The command set followed is Epson's *ESC/POS Application Programming
//! Guide* and *ESC/POS Command Reference* (TM series): `ESC @`, `ESC a`,
//! `ESC E`, `GS !`, `ESC d`, `GS V`, `GS ( k` (QR code, cn = 49) and
//! `DLE EOT`; for Chinese text the Chinese models' `FS &` (select
//! Chinese/Kanji character mode, GB 2312/GBK double-byte codes) and
//! `FS .` (cancel it), and Epson's `FS ( C` function 48 (character encode
//! system: UTF-8) for `encoding = "utf-8"`. Where the sources disagree
//! see `firmware-protocol/PROTOCOL.md`, *Sources*, "printer".
//!
//! * [`escpos`]: the encoder ([`escpos::Doc`]) and a decoder
//!   ([`escpos::decode`]) that turns a byte stream back into lines, QR
//!   payloads and cuts (the tests and the simulator read receipts with it).
//! * [`status`]: `DLE EOT n` replies to a [`status::PrinterState`].
//! * [`receipt`]: what a bind or unbind receipt says, masked.

pub mod escpos;
pub mod receipt;
pub mod status;

pub use escpos::{Doc, Encoding};
pub use receipt::{Receipt, ReceiptKind, RecordLine, RecordsReceipt};
pub use status::{PrinterState, StatusBytes};
