//! The family-link registry: a local SQLite database (rusqlite, bundled).
//!
//! It answers "who is this card, whose account pays for them, whom does
//! their account cover" ([`Registry::resolve`]), enforces the binding rules
//! ([`Registry::bind`]), keeps the payment records a person may inquire
//! ([`Registry::contributions`]) and an append-only, hash-chained audit log
//! ([`audit`]). It knows nothing of sockets or readers.
//!
//! Each [`Registry`] owns one connection; the daemon keeps one for its
//! blocking worker, `cardlinkctl` opens its own. Concurrency between them is
//! SQLite's: WAL mode, `busy_timeout`, and write transactions started with
//! `BEGIN IMMEDIATE` so two writers never deadlock.

pub mod audit;
mod bind;
pub mod demo;
pub mod derived;
pub mod import;
pub mod policy;
mod resolve;
mod schema;

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};

pub use bind::{BindError, BindRequest, Channel};
pub use derived::{Drift, Repair};
pub use policy::{BindPolicy, Relation, Scope};
pub use resolve::{Contribution, Lookup, Member, Outcome, Payer, PersonInfo, Resolution, Role};

/// Default time a statement waits for another writer's lock.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors of the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Another process held the database lock for longer than `busy_timeout`.
    #[error("database is locked by another writer (waited {0:?}); try again")]
    Busy(Duration),
    /// Opening the database file failed.
    #[error("cannot open database {path}: {source}")]
    Open {
        /// The path.
        path: String,
        /// The cause.
        source: rusqlite::Error,
    },
    /// Creating or upgrading the schema failed.
    #[error("schema migration failed: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    /// A value in the database is not what the schema promises.
    #[error("corrupt registry data: {0}")]
    Corrupt(String),
    /// Any other SQLite error.
    #[error("database error: {0}")]
    Sql(rusqlite::Error),
}

impl RegistryError {
    /// Maps SQLite errors, turning `SQLITE_BUSY`/`SQLITE_LOCKED` into [`RegistryError::Busy`].
    pub(crate) fn from_sql(e: rusqlite::Error, timeout: Duration) -> Self {
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                RegistryError::Busy(timeout)
            }
            _ => RegistryError::Sql(e),
        }
    }
}

/// Options for [`Registry::open`].
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// How long a statement waits for a lock held by another connection.
    pub busy_timeout: Duration,
    /// Open read-only (no migrations).
    pub read_only: bool,
    /// Page cache size in KiB.
    pub cache_kib: i64,
    /// Bytes of the file SQLite may memory-map (0: plain reads). Mapped pages
    /// count towards the process's resident memory, so the daemon keeps it off.
    pub mmap_bytes: i64,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            read_only: false,
            cache_kib: 8 * 1024,
            mmap_bytes: 0,
        }
    }
}

/// A connection to the registry.
#[derive(Debug)]
pub struct Registry {
    pub(crate) conn: Connection,
    pub(crate) busy_timeout: Duration,
}

/// Counts of the main tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Persons.
    pub persons: u64,
    /// Cards.
    pub cards: u64,
    /// Active family links.
    pub active_links: u64,
    /// Accounts.
    pub accounts: u64,
    /// Contribution records.
    pub contributions: u64,
    /// Audit rows.
    pub audit: u64,
}

impl Registry {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: impl AsRef<Path>, opts: &OpenOptions) -> Result<Registry, RegistryError> {
        let path = path.as_ref();
        let flags = if opts.read_only {
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
        };
        let conn =
            Connection::open_with_flags(path, flags).map_err(|source| RegistryError::Open {
                path: path.display().to_string(),
                source,
            })?;
        Self::setup(conn, opts)
    }

    /// An in-memory registry (tests, simulations).
    pub fn open_in_memory() -> Result<Registry, RegistryError> {
        let conn = Connection::open_in_memory().map_err(|source| RegistryError::Open {
            path: ":memory:".into(),
            source,
        })?;
        Self::setup(conn, &OpenOptions::default())
    }

    fn setup(mut conn: Connection, opts: &OpenOptions) -> Result<Registry, RegistryError> {
        let t = opts.busy_timeout;
        let sql = |e| RegistryError::from_sql(e, t);
        conn.busy_timeout(t).map_err(sql)?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(sql)?;
        conn.pragma_update(None, "cache_size", -opts.cache_kib)
            .map_err(sql)?;
        conn.pragma_update(None, "mmap_size", opts.mmap_bytes)
            .map_err(sql)?;
        // Statement journals (every insert or update that fires a trigger
        // has one) and sorts stay in memory: no temporary files written per
        // row, and none needed in the service's read-only file system.
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(sql)?;
        if !opts.read_only {
            // WAL: readers never block the writer; NORMAL sync is durable
            // across application crashes and fast enough for one audit row per swipe.
            let mode: String = conn
                .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
                .map_err(sql)?;
            if mode != "wal" && mode != "memory" {
                return Err(RegistryError::Corrupt(format!(
                    "cannot switch to WAL mode (got {mode})"
                )));
            }
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(sql)?;
            schema::migrate(&mut conn)?;
        }
        conn.set_prepared_statement_cache_capacity(64);
        Ok(Registry {
            conn,
            busy_timeout: t,
        })
    }

    pub(crate) fn sql(&self, e: rusqlite::Error) -> RegistryError {
        RegistryError::from_sql(e, self.busy_timeout)
    }

    /// The schema version (`PRAGMA user_version`).
    pub fn schema_version(&self) -> Result<i64, RegistryError> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.sql(e))
    }

    /// Row counts.
    pub fn stats(&self) -> Result<Stats, RegistryError> {
        let count = |sql: &str| -> Result<u64, RegistryError> {
            self.conn
                .query_row(sql, [], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
                .map_err(|e| self.sql(e))
        };
        Ok(Stats {
            persons: count("SELECT count(*) FROM persons")?,
            cards: count("SELECT count(*) FROM cards")?,
            active_links: count("SELECT count(*) FROM family_links WHERE status = 'active'")?,
            accounts: count("SELECT count(*) FROM accounts")?,
            contributions: count("SELECT count(*) FROM contributions")?,
            audit: count("SELECT count(*) FROM audit")?,
        })
    }

    /// SQLite's own checks: `integrity_check` and `foreign_key_check`.
    /// Returns the problems found (empty when the file is sound).
    pub fn integrity(&self) -> Result<Vec<String>, RegistryError> {
        let lines = |sql: &str, line: fn(&rusqlite::Row<'_>) -> rusqlite::Result<String>| {
            let mut st = self.conn.prepare(sql)?;
            let rows = st.query_map([], line)?;
            rows.collect::<rusqlite::Result<Vec<String>>>()
        };
        let mut problems =
            lines("PRAGMA integrity_check", |r| r.get(0)).map_err(|e| self.sql(e))?;
        problems.retain(|l| l != "ok");
        problems.extend(
            lines("PRAGMA foreign_key_check", |r| {
                Ok(format!(
                    "foreign key violation in {} row {:?}",
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<i64>>(1)?
                ))
            })
            .map_err(|e| self.sql(e))?,
        );
        Ok(problems)
    }

    /// The underlying connection, for benchmarks and tools that compare raw SQL.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

/// Current time as RFC 3339 UTC with seconds precision.
pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Parses an ISO `YYYY-MM-DD` date as stored.
pub(crate) fn parse_iso(s: &str) -> Option<firmware_protocol::Date> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let mut d = [0u8; 8];
    d[..4].copy_from_slice(&b[..4]);
    d[4..6].copy_from_slice(&b[5..7]);
    d[6..].copy_from_slice(&b[8..]);
    firmware_protocol::Date::parse_yyyymmdd(&d)
}
