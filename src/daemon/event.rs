//! What the daemon publishes to its clients, before it is rendered for
//! each ([`super::render`]): card events, reader changes, errors, role
//! changes; and a reader's live state.

use std::sync::Arc;

use crate::config::Station;
use crate::printer::{PrinterState, ReceiptKind};
use crate::protocol::{self, ErrorCode};
use crate::reader::card::CardSource;
use crate::registry::{AuditRef, Resolution};
use crate::Ssn;

/// A resolved card read, ready to be rendered for each client
/// ([`super::render::card`]).
#[derive(Debug, Clone)]
pub struct CardEvent {
    /// Reader name (or `manual` for typed lookups).
    pub reader: String,
    /// Swipe id, usable in kiosk-mode `bind` requests.
    pub swipe: u64,
    /// How the number was read.
    pub source: CardSource,
    /// The identity document of an `id_card` read.
    pub document: Option<firmware_protocol::idcard::Document>,
    /// SSN from the card.
    pub ssn: Option<Ssn>,
    /// Card number from the card.
    pub card_no: Option<String>,
    /// PAN from the card.
    pub pan: Option<String>,
    /// Name from the card.
    pub name: Option<String>,
    /// Resolution.
    pub resolution: Resolution,
}

/// Events published to every display client.
#[derive(Debug, Clone)]
pub enum Event {
    /// A reader's connection state changed.
    Reader {
        /// Reader name.
        name: String,
        /// Its new state.
        state: protocol::ReaderState,
        /// Device path.
        path: String,
        /// Why it is disconnected.
        error: Option<String>,
    },
    /// A card read (or manual lookup) was resolved and audited.
    Card(Arc<CardEvent>),
    /// The card was taken out of a reader (frame mode `CARD_REMOVED`).
    Removed {
        /// Reader name.
        reader: String,
    },
    /// Something went wrong that a display should show.
    Error {
        /// Machine-readable code.
        code: ErrorCode,
        /// Human-readable message (no personal data).
        message: String,
        /// The reader interface's return code, for `reader_read_error`.
        reader_code: Option<i32>,
    },
    /// A reload changed the role: displays switch screens and masking at
    /// once (a kiosk page must not see one more full SSN).
    Role(Station),
    /// The receipt printer's state changed.
    Printer(PrinterLive),
    /// A receipt was printed, or could not be.
    Receipt {
        /// Bind, unbind or records.
        kind: ReceiptKind,
        /// The audit row of the bind, unbind or printing.
        audit_seq: i64,
        /// Whether it went to the printer.
        printed: bool,
        /// The printer's state then.
        state: PrinterState,
        /// Why not.
        error: Option<String>,
    },
}

/// The receipt printer's live state, for `status`, `PRINTER` and new clients.
#[derive(Debug, Clone, Default)]
pub struct PrinterLive {
    /// Device path.
    pub path: String,
    /// Its state.
    pub state: PrinterState,
    /// Receipts printed.
    pub printed: u64,
    /// Receipts not printed.
    pub failed: u64,
    /// The last error (open, write, status, a receipt refused).
    pub last_error: Option<String>,
}

/// A receipt to print: what the daemon knows after a bind or unbind, or
/// a person's payment records (the printer task adds the names from the
/// registry and the box's name).
#[derive(Debug, Clone)]
pub struct PrintJob {
    /// Bind, unbind or records.
    pub kind: ReceiptKind,
    /// The account holder (records: the person).
    pub holder: Ssn,
    /// The member (records: the person again).
    pub member: Ssn,
    /// The relation in Chinese, where known.
    pub relation: Option<String>,
    /// The station the request came from.
    pub channel: Station,
    /// The operator, at a window.
    pub operator: Option<String>,
    /// The audit row written.
    pub audit: AuditRef,
    /// When (China Standard Time).
    pub at: String,
    /// `print_records`: the months asked for and the records read.
    pub records: Option<RecordsJob>,
}

/// The payment records of a records receipt, as read for the request.
#[derive(Debug, Clone)]
pub struct RecordsJob {
    /// Months asked for.
    pub months: u32,
    /// One line per record, newest first.
    pub lines: Vec<crate::printer::RecordLine>,
}

/// Live state of one reader, for `status` and for new clients.
#[derive(Debug, Clone, Default)]
pub struct ReaderState {
    /// Device path.
    pub path: String,
    /// Mode.
    pub mode: String,
    /// `connected` / `disconnected` / `error` (idcard: the module cannot
    /// read; library: the helper ended).
    pub state: protocol::ReaderState,
    /// Valid frames or lines received.
    pub items: u64,
    /// Card reads reported.
    pub cards: u64,
    /// Duplicate frames suppressed.
    pub duplicates: u64,
    /// Rejected reads.
    pub rejected: u64,
    /// Bytes dropped as line noise (frame mode).
    pub noise_bytes: u64,
    /// Firmware information from the reader's last `STATUS` frame.
    pub firmware: Option<String>,
    /// The last open or read error.
    pub last_error: Option<String>,
    /// A library reader: times its helper process was started again.
    pub restarts: Option<u64>,
    /// A library reader: the last return code of `iReadCardBas`.
    pub last_code: Option<i64>,
}
