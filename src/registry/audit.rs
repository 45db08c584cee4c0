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
//! Triggers refuse UPDATE and DELETE; [`Registry::verify_audit`] recomputes
//! the chain so that edits made around the triggers (or to the file) are
//! detected. Removing rows from the *end* of the log cannot be detected by
//! a chain alone; compare the row count with an off-box copy for that.

use firmware_protocol::Ssn;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use sha2::{Digest, Sha256};

use super::{now_rfc3339, Registry, RegistryError};

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

fn row_hash(
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

/// Appends a row inside the caller's (write) transaction.
pub(crate) fn append(conn: &Connection, e: &Entry<'_>) -> rusqlite::Result<()> {
    let last: Option<(i64, String)> = conn
        .prepare_cached("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (id, prev) = match last {
        Some((id, hash)) => (id + 1, hash),
        None => (1, GENESIS.to_string()),
    };
    let at = now_rfc3339();
    let ssn = e.ssn.map(|s| s.expose()).unwrap_or("");
    let hash = row_hash(&prev, id, &at, e.actor, e.action, ssn, e.outcome);
    conn.prepare_cached(
        "INSERT INTO audit (id, at, actor, action, ssn, outcome, prev_hash, hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        id,
        at,
        e.actor,
        e.action,
        e.ssn.map(|s| s.expose()),
        e.outcome,
        prev,
        hash
    ])?;
    Ok(())
}

/// Result of [`Registry::verify_audit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Rows checked.
    pub rows: u64,
    /// The first row that breaks the chain, with the reason.
    pub broken: Option<(i64, String)>,
}

impl Registry {
    /// Appends one audit row in its own transaction.
    pub fn record(&mut self, e: &Entry<'_>) -> Result<(), RegistryError> {
        let t = self.busy_timeout;
        let sql = |e| RegistryError::from_sql(e, t);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
        append(&tx, e).map_err(sql)?;
        tx.commit().map_err(sql)
    }

    /// Recomputes the whole chain.
    pub fn verify_audit(&self) -> Result<Verification, RegistryError> {
        let mut st = self
            .conn
            .prepare("SELECT id, at, actor, action, ifnull(ssn, ''), outcome, prev_hash, hash FROM audit ORDER BY id")
            .map_err(|e| self.sql(e))?;
        let mut rows = st.query([]).map_err(|e| self.sql(e))?;
        let mut prev = GENESIS.to_string();
        let mut expect_id = 1i64;
        let mut n = 0u64;
        while let Some(r) = rows.next().map_err(|e| self.sql(e))? {
            let get = |i| r.get::<_, String>(i);
            let id: i64 = r.get(0).map_err(|e| self.sql(e))?;
            let (at, actor, action, ssn, outcome, prev_hash, hash) = (|| {
                Ok::<_, rusqlite::Error>((
                    get(1)?,
                    get(2)?,
                    get(3)?,
                    get(4)?,
                    get(5)?,
                    get(6)?,
                    get(7)?,
                ))
            })()
            .map_err(|e| self.sql(e))?;
            n += 1;
            let broken = if id != expect_id {
                Some(format!(
                    "row id {id} where {expect_id} was expected (rows removed or inserted)"
                ))
            } else if prev_hash != prev {
                Some("prev_hash does not match the previous row".to_string())
            } else if row_hash(&prev, id, &at, &actor, &action, &ssn, &outcome) != hash {
                Some("row content does not match its hash".to_string())
            } else {
                None
            };
            if let Some(reason) = broken {
                return Ok(Verification {
                    rows: n,
                    broken: Some((id, reason)),
                });
            }
            prev = hash;
            expect_id += 1;
        }
        Ok(Verification {
            rows: n,
            broken: None,
        })
    }
}
