//! The append-only, hash-chained audit log.
//!
//! Every resolution and every bind/unbind writes a row: time, actor (reader
//! or client), action, SSN, outcome. Each row stores the hash of the
//! previous row and its own hash:
//!
//! ```text
//! hash = H(prev_hash ␟ id ␟ at ␟ actor ␟ action ␟ ssn ␟ outcome)   (hex)
//! ```
//!
//! with H the chain's algorithm ([`HashAlg`]: SHA-256 unless the registry
//! was created with `audit_hash = "sm3"`), `␟` the byte 0x1F and
//! `prev_hash` of the first row 64 zeros.
//! Triggers refuse UPDATE and DELETE; [`crate::registry::Registry::verify_audit`] recomputes
//! the chain so that edits made around the triggers (or to the file) are
//! detected. A chain alone cannot tell rows cut from its end, nor a chain
//! recomputed from scratch: a sealed registry's rows also carry a
//! forward-secure seal ([`super::seal`]) that `verify-audit
//! --verify-key` checks ([`super::verify`]).

use firmware_protocol::Ssn;
use rusqlite::{params, Connection, OptionalExtension};

use super::error::RegistryError;
use super::hash::HashAlg;
use super::resolve::Columns;
use super::seal::{AuditSetup, RowSeal, LAST_SEAL_SQL};
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

/// A row's hash (see the module docs).
#[allow(clippy::too_many_arguments)]
pub fn row_hash(
    alg: HashAlg,
    prev: &str,
    id: i64,
    at: &str,
    actor: &str,
    action: &str,
    ssn: &str,
    outcome: &str,
) -> String {
    let id = id.to_string();
    let parts = [prev, &id, at, actor, action, ssn, outcome].map(str::as_bytes);
    hex::encode(alg.digest(&parts, Some(0x1F)))
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
    /// Its seal, when a sealing box wrote it.
    pub seal: Option<RowSeal>,
}

impl Row {
    /// The row that follows `last` (`(id, hash)` of the chain's head, if
    /// any) for event `e`, written now.
    pub(crate) fn next(last: Option<(i64, String)>, e: &Entry<'_>, alg: HashAlg) -> Row {
        let (id, prev_hash) = match last {
            Some((id, hash)) => (id + 1, hash),
            None => (1, GENESIS.to_string()),
        };
        let at = now_rfc3339();
        let ssn = e.ssn.map(|s| s.expose().to_string());
        let hash = row_hash(
            alg,
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
            seal: None,
        }
    }
}

/// How a row breaks the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Break {
    /// Its id is not the next one: rows before it were removed (or
    /// inserted).
    Gap {
        /// The id expected.
        expected: i64,
        /// The id found.
        found: i64,
    },
    /// Its `prev_hash` is not the previous row's hash: the previous row
    /// was edited and its hash recomputed.
    Prev,
    /// Its content does not match its hash: it was edited.
    Content,
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Break::Gap { expected, found } => write!(
                f,
                "row id {found} where {expected} was expected (rows removed or inserted)"
            ),
            Break::Prev => f.write_str("prev_hash does not match the previous row"),
            Break::Content => f.write_str("row content does not match its hash"),
        }
    }
}

/// Checks rows one by one, in id order, against the chain: the one
/// definition of a valid chain for both backends.
#[derive(Debug)]
pub(crate) struct Chain {
    alg: HashAlg,
    prev: String,
    expect_id: i64,
    rows: u64,
}

impl Chain {
    pub(crate) fn new(alg: HashAlg) -> Chain {
        Chain {
            alg,
            prev: GENESIS.to_string(),
            expect_id: 1,
            rows: 0,
        }
    }

    /// `Some(reason)` when `r` breaks the chain.
    pub(crate) fn check(&mut self, r: &Row) -> Option<String> {
        self.check_row(r).map(|b| b.to_string())
    }

    /// How `r` breaks the chain, if it does; the walk goes on from `r`
    /// (its id and hash), so that each break is named once.
    pub(crate) fn check_row(&mut self, r: &Row) -> Option<Break> {
        self.rows += 1;
        let broken = if r.id != self.expect_id {
            Some(Break::Gap {
                expected: self.expect_id,
                found: r.id,
            })
        } else if r.prev_hash != self.prev {
            Some(Break::Prev)
        } else if row_hash(
            self.alg,
            &self.prev,
            r.id,
            &r.at,
            &r.actor,
            &r.action,
            r.ssn.as_deref().unwrap_or(""),
            &r.outcome,
        ) != r.hash
        {
            Some(Break::Content)
        } else {
            None
        };
        self.prev.clone_from(&r.hash);
        self.expect_id = r.id.saturating_add(1);
        broken
    }

    /// Rows checked so far.
    pub(crate) fn rows(&self) -> u64 {
        self.rows
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

/// Appends a row inside the caller's (write) transaction (SQLite), sealed
/// when the writer seals; returns the seal index to move the key past once
/// the transaction commits ([`AuditSetup::committed`]).
pub(crate) fn append(
    conn: &Connection,
    e: &Entry<'_>,
    setup: &AuditSetup,
    sql: impl Fn(rusqlite::Error) -> RegistryError,
) -> Result<Option<i64>, RegistryError> {
    let sealer = setup.sealer()?;
    let mut row = Row::next(head(conn).map_err(&sql)?, e, setup.alg());
    if let Some(s) = sealer {
        let last = conn
            .prepare_cached(LAST_SEAL_SQL)
            .and_then(|mut st| st.query_row([s.box_id()], |r| r.get::<_, Option<i64>>(0)))
            .map_err(&sql)?;
        row.seal = Some(s.seal(last, &row.hash)?);
    }
    insert(conn, &row).map_err(&sql)?;
    Ok(row.seal.map(|s| s.index))
}

/// The statement that writes a row as it is (both backends).
pub(crate) const INSERT_SQL: &str =
    "INSERT INTO audit (id, at, actor, action, ssn, outcome, prev_hash, hash, seal_box, seal_index, seal) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

pub(crate) fn insert(conn: &Connection, r: &Row) -> rusqlite::Result<()> {
    let seal = r.seal.as_ref();
    conn.prepare_cached(INSERT_SQL)?.execute(params![
        r.id,
        r.at,
        r.actor,
        r.action,
        r.ssn,
        r.outcome,
        r.prev_hash,
        r.hash,
        seal.map(|s| &s.box_id),
        seal.map(|s| s.index),
        seal.map(|s| &s.mac),
    ])?;
    Ok(())
}

/// Checks that `rows` continue the chain whose head is `head` (`(id,
/// hash)` of its last row; `None` for an empty log): what
/// [`crate::registry::Registry::load_audit`] accepts.
pub(crate) fn check_continues(
    head: Option<(i64, String)>,
    rows: &[Row],
    alg: HashAlg,
) -> Result<(), RegistryError> {
    let mut chain = Chain::new(alg);
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
    /// outcome, prev_hash, hash, seal_box, seal_index, seal`), both backends.
    pub(crate) fn read(r: &impl Columns) -> Result<Row, RegistryError> {
        let seal = match (r.text(8)?, r.int(9)?, r.text(10)?) {
            (None, None, None) => None,
            (Some(box_id), Some(index), Some(mac)) => Some(RowSeal { box_id, index, mac }),
            _ => Some(RowSeal {
                // A partial seal is no seal: verification names it.
                box_id: r.text(8)?.unwrap_or_default(),
                index: r.int(9)?.unwrap_or(-1),
                mac: r.text(10)?.unwrap_or_default(),
            }),
        };
        Ok(Row {
            seal,
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
pub(crate) const ROWS_SQL: &str = "SELECT id, at, actor, action, ssn, outcome, prev_hash, hash, \
     seal_box, seal_index, seal FROM audit ORDER BY id";
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
