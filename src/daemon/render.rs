//! The daemon's own types as wire messages, for one client: every mapping
//! from a daemon type ([`Event`], [`CardEvent`], [`ReaderState`]) to a
//! [`protocol`] message is here, so `protocol` knows nothing of the daemon
//! and the rest of the daemon builds no wire message by hand.

use super::event::{CardEvent, Event, PrinterLive, ReaderState};
use crate::protocol::{
    self, Card, ErrorCode, ErrorMsg, Insurance, MemberMsg, Message, PayerMsg, Privacy,
};

/// An `ERROR` message.
pub fn error(code: ErrorCode, message: String) -> Message {
    Message::Error(ErrorMsg::new(code, message))
}

/// An event as `privacy` sees it.
pub fn event(e: &Event, privacy: Privacy) -> Message {
    match e {
        Event::Reader {
            name,
            state,
            path,
            error,
        } => Message::Reader(protocol::ReaderMsg {
            reader: name.clone(),
            state: *state,
            path: path.clone(),
            error: error.clone(),
        }),
        Event::Card(c) => Message::Card(Box::new(card(c, privacy))),
        Event::Removed { reader } => Message::Removed(protocol::RemovedMsg {
            reader: reader.clone(),
        }),
        Event::Error {
            code,
            message,
            reader_code,
        } => Message::Error(ErrorMsg::new(*code, message.clone()).with_reader_code(*reader_code)),
        Event::Role(station) => Message::Role(protocol::RoleMsg {
            role: (*station).into(),
        }),
        Event::Printer(p) => Message::Printer(printer(p)),
        Event::Receipt {
            kind,
            audit_seq,
            printed,
            state,
            error,
        } => Message::Receipt(protocol::ReceiptMsg {
            kind: kind.as_str().to_string(),
            audit_seq: *audit_seq,
            printed: *printed,
            state: (*state).into(),
            error: error.clone(),
        }),
    }
}

/// The printer's `PRINTER` message: its cause only while it cannot print.
pub fn printer(p: &PrinterLive) -> protocol::PrinterMsg {
    protocol::PrinterMsg {
        state: p.state.into(),
        path: p.path.clone(),
        error: p.last_error.clone().filter(|_| !p.state.can_print()),
    }
}

/// The printer in `status`.
pub fn printer_status(p: &PrinterLive) -> protocol::PrinterStatus {
    protocol::PrinterStatus {
        path: p.path.clone(),
        state: p.state.into(),
        printed: p.printed,
        failed: p.failed,
        last_error: p.last_error.clone(),
    }
}

/// The `CARD` message of a resolved read, for one client: the registry's
/// person, else what the card said.
pub fn card(e: &CardEvent, v: Privacy) -> Card {
    let r = &e.resolution;
    let ssn = r.person.as_ref().map(|p| p.ssn).or(e.ssn);
    let name = r.person.as_ref().map(|p| p.name.clone()).or(e.name.clone());
    Card {
        reader: e.reader.clone(),
        swipe: e.swipe,
        source: e.source,
        document: e.document.map(|d| d.as_str().to_string()),
        ssn: ssn.map(|s| v.ssn(&s)),
        card_no: e
            .card_no
            .clone()
            .or(r.card_no.clone())
            .map(|c| v.card_no(&c)),
        pan: e.pan.as_deref().map(|p| v.pan(p)),
        name: name.map(|n| v.name(&n)),
        outcome: r.outcome.into(),
        role: r.role.into(),
        card_status: r.card_status.clone(),
        insurance: r.person.as_ref().map(Insurance::from),
        payer: r.payer.as_ref().map(|p| PayerMsg::new(p, v)),
        relation: r.payer.as_ref().and_then(|p| p.relation.clone()),
        balance_fen: r.payer.as_ref().and_then(|p| p.balance_fen),
        members: r.members.iter().map(|m| MemberMsg::new(m, v)).collect(),
    }
}

/// A reader's `READER` message (a new client's first lines): its cause
/// only while it is not connected.
pub fn reader(name: &str, r: &ReaderState) -> protocol::ReaderMsg {
    protocol::ReaderMsg {
        reader: name.to_string(),
        state: r.state,
        path: r.path.clone(),
        error: r
            .last_error
            .clone()
            .filter(|_| r.state != protocol::ReaderState::Connected),
    }
}

/// A reader in `status`.
pub fn reader_status(name: &str, r: &ReaderState) -> protocol::ReaderStatus {
    protocol::ReaderStatus {
        name: name.to_string(),
        path: r.path.clone(),
        mode: r.mode.clone(),
        state: r.state,
        items: r.items,
        cards: r.cards,
        duplicates: r.duplicates,
        rejected: r.rejected,
        noise_bytes: r.noise_bytes,
        firmware: r.firmware.clone(),
        last_error: r.last_error.clone(),
        restarts: r.restarts,
        last_code: r.last_code,
    }
}
