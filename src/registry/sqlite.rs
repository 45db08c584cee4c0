//! The SQLite backend's connection: opening a registry file (WAL,
//! `busy_timeout`, the schema's migrations), its counts and integrity
//! check. What it answers (resolve, bind, import…) is written once for both
//! backends in the sibling files; the [`super::Registry`] facade dispatches.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::error::RegistryError;
use super::hash::HashAlg;
use super::key::DbKey;
use super::schema;
use super::seal::{self, AuditSetup, SealSetup, Sealer};

/// Initialises SQLite and SQLCipher's log once per process, before any
/// connection is opened.
/// - SQLCipher writes its own error lines to stderr by default (a wrong
///   key: "hmac check failed…"); [`unlock`]'s error says it once, with the
///   file and the key's source. Its log setting is process-wide and
///   setting it `fclose`s a shared `FILE`: set on every open, two threads
///   opening registries at once closed it twice, and the process died of
///   SIGSEGV (tests/readers.rs, 8 runs in 30). So it is set here, once.
/// - SQLCipher also finishes its set-up (`sqlcipher_extra_init`) after
///   SQLite counts as initialised; `Once` makes other threads wait for it.
pub(crate) fn initialize() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: sqlite3_initialize takes no arguments and may be called
        // at any time; an open that follows reports any failure itself.
        unsafe {
            rusqlite::ffi::sqlite3_initialize();
        }
        if let Ok(c) = Connection::open_in_memory() {
            let _ = c.execute_batch("PRAGMA cipher_log = off; PRAGMA cipher_log_level = NONE;");
        }
    });
}

/// Default time a statement waits for another writer's lock.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// PostgreSQL: when the server cannot be reached at opening, open
    /// anyway and create or check the schema at the first call that
    /// reaches it (the daemon: it starts and keeps reading cards, answering
    /// `registry_unavailable`, while the server is away). Otherwise opening
    /// fails. SQLite ignores it.
    pub lazy: bool,
    /// The audit chain's algorithm asked for (`audit_hash`); `None`: the
    /// registry's own (SHA-256 for a new one).
    pub audit_hash: Option<HashAlg>,
    /// The box's sealing key file (`seal_key_file`, `--seal-key`); a
    /// SQLite registry's default is `<registry>.seal` when that exists.
    pub seal_key: Option<PathBuf>,
    /// SQLite: the key of an encrypted registry (SQLCipher), or `None`
    /// for a plain file. A new file opened with a key is created
    /// encrypted. PostgreSQL refuses one (encryption at rest is the
    /// server's).
    pub key: Option<DbKey>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            read_only: false,
            cache_kib: 8 * 1024,
            mmap_bytes: 0,
            lazy: false,
            audit_hash: None,
            seal_key: None,
            key: None,
        }
    }
}

/// A SQLite registry: one connection.
#[derive(Debug)]
pub struct Sqlite {
    pub(crate) conn: Connection,
    pub(crate) busy_timeout: Duration,
    /// The audit chain's algorithm and this writer's sealing.
    pub(crate) audit: AuditSetup,
    /// The SQLCipher key it was opened with, for connections of its own
    /// (the fleet heartbeat's).
    pub(crate) key: Option<DbKey>,
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

impl Sqlite {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: impl AsRef<Path>, opts: &OpenOptions) -> Result<Sqlite, RegistryError> {
        let path = path.as_ref();
        let flags = if opts.read_only {
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
        };
        // The key first: a writer that cannot read it is told so.
        let key = opts
            .seal_key
            .clone()
            .or_else(|| Some(seal::default_key_path(path)).filter(|p| p.exists()));
        let seal = match key {
            // A read-only registry writes no row: it needs no key.
            Some(k) if !opts.read_only => SealSetup::On(Sealer::open(&k)?),
            _ => SealSetup::Off,
        };
        initialize();
        let conn =
            Connection::open_with_flags(path, flags).map_err(|source| RegistryError::Open {
                path: path.display().to_string(),
                source,
            })?;
        unlock(&conn, path, opts.key.as_ref(), opts.busy_timeout)?;
        Self::setup(conn, opts, seal)
    }

    /// An in-memory registry (tests, simulations).
    pub fn open_in_memory() -> Result<Sqlite, RegistryError> {
        initialize();
        let conn = Connection::open_in_memory().map_err(|source| RegistryError::Open {
            path: ":memory:".into(),
            source,
        })?;
        Self::setup(conn, &OpenOptions::default(), SealSetup::Off)
    }

    fn setup(
        mut conn: Connection,
        opts: &OpenOptions,
        seal: SealSetup,
    ) -> Result<Sqlite, RegistryError> {
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
        let mut s = Sqlite {
            conn,
            busy_timeout: t,
            audit: AuditSetup::new(opts.audit_hash, seal),
            key: opts.key.clone(),
        };
        s.settle_audit(opts.read_only)?;
        Ok(s)
    }

    /// Reads (and for a new chain records) the chain's algorithm, and
    /// checks this writer's sealing against the registry's.
    fn settle_audit(&mut self, read_only: bool) -> Result<(), RegistryError> {
        let t = self.busy_timeout;
        let sql = |e| RegistryError::from_sql(e, t);
        let conn = &self.conn;
        let has_meta: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'audit_meta')",
                [],
                |r| r.get(0),
            )
            .map_err(sql)?;
        if !has_meta {
            // A read-only look at a registry older than sealing.
            self.audit.set_alg(HashAlg::Sha256);
            return Ok(());
        }
        let recorded = conn
            .query_row(seal::META_HASH_SQL, [], |r| r.get::<_, String>(0))
            .optional()
            .map_err(sql)?;
        let has_rows: bool = conn
            .query_row(seal::HAS_ROWS_SQL, [], |r| r.get(0))
            .map_err(sql)?;
        let sealed_by = conn
            .query_row(seal::ANY_SEAL_SQL, [], |r| r.get::<_, String>(0))
            .optional()
            .map_err(sql)?;
        let record = self
            .audit
            .settle(recorded, has_rows, sealed_by, read_only)
            .map_err(RegistryError::Config)?;
        if record {
            conn.execute(seal::SET_META_HASH_SQL, [self.audit.alg().as_str()])
                .map_err(sql)?;
        }
        if let (Some(b), false) = (self.audit.box_id(), read_only) {
            let last = conn
                .query_row(seal::LAST_SEAL_SQL, [b], |r| r.get::<_, Option<i64>>(0))
                .map_err(sql)?;
            self.audit.catch_up(last)?;
        }
        Ok(())
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
}

/// The first bytes of every plain SQLite file (file format, "The
/// Database Header": <https://www.sqlite.org/fileformat.html>). An
/// encrypted SQLCipher file begins with its random salt instead.
pub(crate) const PLAIN_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Whether the file at `path` is a plain SQLite database (`Some(true)`),
/// something else, e.g. encrypted (`Some(false)`), or empty or missing
/// (`None`: a new database).
pub(crate) fn is_plain(path: &Path) -> std::io::Result<Option<bool>> {
    use std::io::Read;
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut head = [0u8; 16];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(match n {
        0 => None,
        _ => Some(n == head.len() && &head == PLAIN_HEADER),
    })
}

/// Gives SQLCipher the key (if any) and reads the schema once, so that a
/// wrong or missing key is found here and named, never reported as
/// SQLite's "file is not a database".
pub(crate) fn unlock(
    conn: &Connection,
    path: &Path,
    key: Option<&DbKey>,
    busy: Duration,
) -> Result<(), RegistryError> {
    let file = || path.display().to_string();
    // SQLCipher's own log is off (see `initialize`, which every open calls
    // first).
    initialize();
    if let Some(k) = key {
        conn.execute_batch(&format!("PRAGMA key = {};", k.sql_literal()))
            .map_err(|e| RegistryError::from_sql(e, busy))?;
    }
    let probe = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    });
    match probe {
        Ok(_) => Ok(()),
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase) => {
            let plain = is_plain(path).ok().flatten();
            Err(match (key, plain) {
                (None, Some(false)) => RegistryError::KeyRequired { path: file() },
                (Some(k), Some(true)) => RegistryError::NotEncrypted {
                    path: file(),
                    key: k.source().to_string(),
                },
                (Some(k), _) => RegistryError::WrongKey {
                    path: file(),
                    key: k.source().to_string(),
                },
                (None, _) => RegistryError::Open {
                    path: file(),
                    source: e,
                },
            })
        }
        Err(e) => Err(RegistryError::from_sql(e, busy)),
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
