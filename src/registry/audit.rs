//! The append-only, hash-chained audit log.
//!
//! Every resolution and every bind/unbind writes a row: time, actor (reader
//! or client), action, SSN, outcome. Each row stores the hash of the
//! previous row and its own hash:
//!
//! ```text
//! hash = SHA-256(prev_hash ␟ id ␟ at ␟ actor ␟ action ␟ ssn ␟ outcome)   (hex)
//! ```
//!
//! with `␟` the byte 0x1F and `prev_hash` of the first row 64 zeros.
//! Triggers refuse UPDATE and DELETE; [`crate::registry::Registry::verify_audit`] recomputes
//! the chain so that edits made around the triggers (or to the file) are
//! detected. Removing rows from the *end* of the log cannot be detected by
//! a chain alone; compare the row count with an off-box copy for that.

use firmware_protocol::Ssn;
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

use super::error::RegistryError;
use super::resolve::Columns;
use super::sqlite::{now_rfc3339, Sqlite};

/// `prev_hash` of the first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit event.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// Reader name or client description.
    pub actor: &'a str,
    /// `resolve`, `bind`, `unbind`, `lookup`, ...
    pub action: &'a str,
    /// The person concerned, if any.
    pub ssn: Option<&'a Ssn>,
    /// Outcome text.
    pub outcome: &'a str,
}

pub(crate) fn row_hash(
    prev: &str,
    id: i64,
    at: &str,
    actor: &str,
    action: &str,
    ssn: &str,
    outcome: &str,
) -> String {
    let mut h = Sha256::new();
    for (i, part) in [prev, &id.to_string(), at, actor, action, ssn, outcome]
        .iter()
        .enumerate()
    {
        if i > 0 {
            h.update([0x1F]);
        }
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// One stored audit row, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Position in the chain, from 1.
    pub id: i64,
    /// RFC 3339 UTC.
    pub at: String,
    /// Reader or client.
    pub actor: String,
    /// What was done.
    pub action: String,
    /// The person concerned, if any.
    pub ssn: Option<String>,
    /// Outcome text.
    pub outcome: String,
    /// The previous row's hash ([`GENESIS`] for the first).
    pub prev_hash: String,
    /// This row's hash.
    pub hash: String,
}

impl Row {
    /// The row that follows `last` (`(id, hash)` of the chain's head, if
    /// any) for event `e`, written now.
    pub(crate) fn next(last: Option<(i64, String)>, e: &Entry<'_>) -> Row {
        let (id, prev_hash) = match last {
            Some((id, hash)) => (id + 1, hash),
            None => (1, GENESIS.to_string()),
        };
        let at = now_rfc3339();
        let ssn = e.ssn.map(|s| s.expose().to_string());
        let hash = row_hash(
            &prev_hash,
            id,
            &at,
            e.actor,
            e.action,
            ssn.as_deref().unwrap_or(""),
            e.outcome,
        );
        Row {
            id,
            at,
            actor: e.actor.to_string(),
            action: e.action.to_string(),
            ssn,
            outcome: e.outcome.to_string(),
            prev_hash,
            hash,
        }
    }
}

/// Checks rows one by one, in id order, against the chain: the one
/// definition of a valid chain for both backends.
#[derive(Debug)]
pub(crate) struct Chain {
    prev: String,
    expect_id: i64,
    rows: u64,
}

impl Chain {
    pub(crate) fn new() -> Chain {
        Chain {
            prev: GENESIS.to_string(),
            expect_id: 1,
            rows: 0,
        }
    }

    /// `Some(reason)` when `r` breaks the chain.
    pub(crate) fn check(&mut self, r: &Row) -> Option<String> {
        self.rows += 1;
        let broken = if r.id != self.expect_id {
            Some(format!(
                "row id {} where {} was expected (rows removed or inserted)",
                r.id, self.expect_id
            ))
        } else if r.prev_hash != self.prev {
            Some("prev_hash does not match the previous row".to_string())
        } else if row_hash(
            &self.prev,
            r.id,
            &r.at,
            &r.actor,
            &r.action,
            r.ssn.as_deref().unwrap_or(""),
            &r.outcome,
        ) != r.hash
        {
            Some("row content does not match its hash".to_string())
        } else {
            None
        };
        self.prev.clone_from(&r.hash);
        self.expect_id += 1;
        broken
    }

    /// The result after the last row.
    pub(crate) fn verification(self, broken: Option<(i64, String)>) -> Verification {
        Verification {
            rows: self.rows,
            broken,
        }
    }
}

/// The audit row a successful bind or unbind wrote: what a receipt
/// prints so that the paper can be matched to the chain (`cardlinkctl
/// audit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRef {
    /// The row's id (its sequence number in the chain).
    pub seq: i64,
    /// The row's hash (hex).
    pub hash: String,
}

impl AuditRef {
    /// The first 12 hex digits of the hash, as printed.
    pub fn short_hash(&self) -> &str {
        self.hash.get(..12).unwrap_or(&self.hash)
    }
}

/// Appends a row inside the caller's (write) transaction.
pub(crate) fn append(conn: &Connection, e: &Entry<'_>) -> rusqlite::Result<()> {
    insert(conn, &Row::next(head(conn)?, e))
}

pub(crate) fn insert(conn: &Connection, r: &Row) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO audit (id, at, actor, action, ssn, outcome, prev_hash, hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        r.id,
        r.at,
        r.actor,
        r.action,
        r.ssn,
        r.outcome,
        r.prev_hash,
        r.hash
    ])?;
    Ok(())
}

/// Checks that `rows` continue the chain whose head is `head` (`(id,
/// hash)` of its last row; `None` for an empty log): what
/// [`crate::registry::Registry::load_audit`] accepts.
pub(crate) fn check_continues(
    head: Option<(i64, String)>,
    rows: &[Row],
) -> Result<(), RegistryError> {
    let mut chain = Chain::new();
    if let Some((id, hash)) = head {
        chain.prev = hash;
        chain.expect_id = id + 1;
    }
    for r in rows {
        if let Some(why) = chain.check(r) {
            return Err(RegistryError::Corrupt(format!(
                "audit row {} of the source breaks the chain: {why}",
                r.id
            )));
        }
    }
    Ok(())
}

/// Result of [`crate::registry::Registry::verify_audit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Rows checked.
    pub rows: u64,
    /// The first row that breaks the chain, with the reason.
    pub broken: Option<(i64, String)>,
}

impl Row {
    /// The one decoder of an audit row (`id, at, actor, action, ssn,
    /// outcome, prev_hash, hash`), both backends.
    pub(crate) fn read(r: &impl Columns) -> Result<Row, RegistryError> {
        Ok(Row {
            id: r.req_int(0)?,
            at: r.req_text(1)?,
            actor: r.req_text(2)?,
            action: r.req_text(3)?,
            ssn: r.text(4)?,
            outcome: r.req_text(5)?,
            prev_hash: r.req_text(6)?,
            hash: r.req_text(7)?,
        })
    }
}

/// The statement of every audit row in chain order (both backends).
pub(crate) const ROWS_SQL: &str =
    "SELECT id, at, actor, action, ssn, outcome, prev_hash, hash FROM audit ORDER BY id";
/// The chain's head: `(id, hash)` of its last row (both backends).
pub(crate) const HEAD_SQL: &str = "SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1";

/// Reads the chain's head (SQLite).
pub(crate) fn head(conn: &Connection) -> rusqlite::Result<Option<(i64, String)>> {
    conn.prepare_cached(HEAD_SQL)?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
}

impl Sqlite {
    /// Every row in id order.
    pub fn audit_rows(
        &self,
        each: &mut dyn FnMut(Row) -> Result<(), RegistryError>,
    ) -> Result<u64, RegistryError> {
        let mut st = self.conn.prepare(ROWS_SQL).map_err(|e| self.sql(e))?;
        let mut rows = st.query([]).map_err(|e| self.sql(e))?;
        let mut n = 0;
        while let Some(r) = rows.next().map_err(|e| self.sql(e))? {
            n += 1;
            each(Row::read(r)?)?;
        }
        Ok(n)
    }
}
