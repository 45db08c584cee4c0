//! The read model: the `resolution` table, one row per person with all
//! that `resolve` reports: the person's own name, sex and insurance, and
//! the facts that live in other tables (best card, balances, payer, member
//! list).
//!
//! Each of those facts is defined once, by the view `resolution_source`
//! (migration 005). This module is the only writer of `resolution`, and it
//! only ever copies rows of that view:
//! - [`refresh`]: the rows of the given persons, in the transaction of the
//!   change that moves them (bind, unbind);
//! - [`Touched`]: after an import into a populated registry, the persons
//!   the imported rows touch and their neighbours (payer, members);
//! - [`rebuild`]: everything, set-based in key order, after a bulk load
//!   (an import into an empty registry, or one touching many persons);
//! - [`Registry::repair`] / [`Registry::drift`]: compare the table with the
//!   view row by row in key order (constant memory on any size) and fix
//!   what differs.
//!
//! Nothing else (no trigger) maintains the table, so a plain-SQL edit by an
//! administrator leaves it stale until `cardlinkctl db repair`; `db check`
//! reports the drift. `resolve` falls back to the view for a person who has
//! no row at all (for example one inserted with the sqlite3 shell).

use std::cmp::Ordering;

use rusqlite::types::Value;
use rusqlite::Connection;

use super::error::RegistryError;
use super::sqlite::Sqlite;

/// The columns of `resolution` and `resolution_source`, in order.
pub(crate) const COLUMNS: &str = "ssn, name, sex, insurance_type, insurance_status, \
     card_no, card_status, card_expires, cards, balance_fen, \
     payer_ssn, payer_name, payer_relation, payer_balance_fen, members";
const WIDTH: usize = 15;

/// Rewrites the derived rows of `ssns` from the view (and removes the row
/// of a person who no longer exists).
pub(crate) fn refresh(c: &Connection, ssns: &[&str]) -> rusqlite::Result<()> {
    let mut delete = c.prepare_cached("DELETE FROM resolution WHERE ssn = ?1")?;
    let mut insert = c.prepare_cached(&format!(
        "INSERT INTO resolution ({COLUMNS}) SELECT {COLUMNS} FROM resolution_source WHERE ssn = ?1"
    ))?;
    for ssn in ssns {
        delete.execute([ssn])?;
        insert.execute([ssn])?;
    }
    Ok(())
}

/// Rebuilds the whole table from the view, in key order. Returns the rows
/// written.
pub(crate) fn rebuild(c: &Connection) -> rusqlite::Result<u64> {
    c.execute("DELETE FROM resolution", [])?;
    let n = c.execute(
        &format!(
            "INSERT INTO resolution ({COLUMNS}) SELECT {COLUMNS} FROM resolution_source ORDER BY ssn"
        ),
        [],
    )?;
    Ok(n as u64)
}

/// Persons touched by an import into a populated registry, collected in a
/// temporary table while the rows go in and refreshed (with their
/// neighbours) at the end; past `limit` of them the whole table is rebuilt
/// instead, which is cheaper per row (one pass in key order).
pub(crate) struct Touched<'c> {
    conn: &'c Connection,
    noted: std::cell::Cell<u64>,
    limit: u64,
}

impl<'c> Touched<'c> {
    /// `limit`: above this many noted rows, [`Touched::finish`] rebuilds.
    pub(crate) fn new(conn: &'c Connection, limit: u64) -> rusqlite::Result<Self> {
        conn.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS touched (ssn TEXT PRIMARY KEY NOT NULL) WITHOUT ROWID;
             DELETE FROM temp.touched;",
        )?;
        Ok(Touched {
            conn,
            noted: std::cell::Cell::new(0),
            limit,
        })
    }

    pub(crate) fn add(&self, ssn: &str) -> rusqlite::Result<()> {
        let n = self.noted.get();
        if n > self.limit {
            return Ok(());
        }
        self.noted.set(n + 1);
        self.conn
            .prepare_cached("INSERT OR IGNORE INTO temp.touched VALUES (?1)")?
            .execute([ssn])?;
        Ok(())
    }

    /// Refreshes the touched persons, the members they cover (whose payer
    /// name or balance may have moved) and their payers (whose member list
    /// shows their name), or everything past the limit. Returns the rows
    /// written.
    pub(crate) fn finish(self) -> rusqlite::Result<u64> {
        if self.noted.get() > self.limit {
            self.conn.execute("DELETE FROM temp.touched", [])?;
            return rebuild(self.conn);
        }
        self.conn.execute_batch(
            "INSERT OR IGNORE INTO temp.touched
                 SELECT member_ssn FROM family_links
                  WHERE status = 'active' AND holder_ssn IN (SELECT ssn FROM temp.touched)
                 UNION
                 SELECT holder_ssn FROM family_links
                  WHERE status = 'active' AND member_ssn IN (SELECT ssn FROM temp.touched);
             DELETE FROM resolution WHERE ssn IN (SELECT ssn FROM temp.touched);",
        )?;
        let n = self.conn.execute(
            &format!(
                "INSERT INTO resolution ({COLUMNS}) SELECT {COLUMNS} FROM resolution_source \
                 WHERE ssn IN (SELECT ssn FROM temp.touched) ORDER BY ssn"
            ),
            [],
        )?;
        self.conn.execute("DELETE FROM temp.touched", [])?;
        Ok(n as u64)
    }
}

/// How the table differs from its definition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drift {
    /// Persons without a row.
    pub missing: u64,
    /// Rows that disagree with the view.
    pub stale: u64,
    /// Rows of persons that no longer exist.
    pub orphaned: u64,
    /// The SSNs of the first differing rows (at most [`Drift::EXAMPLES`]).
    pub examples: Vec<String>,
}

impl Drift {
    /// How many SSNs [`Drift::examples`] keeps.
    pub const EXAMPLES: usize = 10;

    /// Rows that differ in any way.
    pub fn total(&self) -> u64 {
        self.missing + self.stale + self.orphaned
    }
}

/// What [`Registry::repair`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Repair {
    /// What was found (and is now fixed).
    pub drift: Drift,
    /// True when the whole table was rebuilt rather than row by row.
    pub rebuilt: bool,
}

/// Above this many differing rows a repair rebuilds the whole table.
pub(crate) const REBUILD_ABOVE: u64 = 100_000;

/// The audit outcome of a repair.
pub(crate) fn repair_outcome(drift: &Drift, rebuilt: bool) -> String {
    format!(
        "ok missing={} stale={} orphaned={}{}",
        drift.missing,
        drift.stale,
        drift.orphaned,
        if rebuilt { " rebuilt" } else { "" }
    )
}

/// Walks the view and the table together in key order and calls `each`
/// for every SSN whose rows differ. Constant memory.
pub(crate) fn compare(
    c: &Connection,
    mut each: impl FnMut(&str, Ordering) -> rusqlite::Result<()>,
) -> rusqlite::Result<Drift> {
    let mut want = c.prepare(&format!(
        "SELECT {COLUMNS} FROM resolution_source ORDER BY ssn"
    ))?;
    let mut have = c.prepare(&format!("SELECT {COLUMNS} FROM resolution ORDER BY ssn"))?;
    let mut want = want.query([])?;
    let mut have = have.query([])?;
    let row = |r: Option<&rusqlite::Row<'_>>| -> rusqlite::Result<Option<Vec<Value>>> {
        r.map(|r| (0..WIDTH).map(|i| r.get::<_, Value>(i)).collect())
            .transpose()
    };
    let mut w = row(want.next()?)?;
    let mut h = row(have.next()?)?;
    let mut drift = Drift::default();
    // The SSN column (TEXT PRIMARY KEY NOT NULL in both).
    fn key(r: &[Value]) -> &str {
        match &r[0] {
            Value::Text(s) => s,
            _ => "",
        }
    }
    loop {
        let order = match (&w, &h) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(a), Some(b)) => key(a).cmp(key(b)),
        };
        let differs = match order {
            Ordering::Less => {
                drift.missing += 1;
                true
            }
            Ordering::Greater => {
                drift.orphaned += 1;
                true
            }
            Ordering::Equal => {
                let same = w == h;
                if !same {
                    drift.stale += 1;
                }
                !same
            }
        };
        if differs {
            let ssn = match order {
                Ordering::Less => w.as_deref().map(key),
                _ => h.as_deref().map(key),
            }
            .unwrap_or_default();
            if drift.examples.len() < Drift::EXAMPLES {
                drift.examples.push(ssn.to_string());
            }
            each(ssn, order)?;
        }
        if order != Ordering::Greater {
            w = row(want.next()?)?;
        }
        if order != Ordering::Less {
            h = row(have.next()?)?;
        }
    }
    Ok(drift)
}

impl Sqlite {
    /// How the read model differs from its definition (the view
    /// `resolution_source`). Zero unless the tables were changed behind
    /// cardlink's back.
    pub fn drift(&self) -> Result<Drift, RegistryError> {
        compare(&self.conn, |_, _| Ok(())).map_err(|e| self.sql(e))
    }
}
