//! The fleet view: each box's heartbeat in the registry it uses, and the
//! list `cardlinkctl fleet` shows (issue 24).
//!
//! A heartbeat is one row per box in `fleet_box` (migrations: SQLite 007,
//! PostgreSQL 004), rewritten by an upsert every `[fleet] heartbeat_s`.
//! It is operational state, not a record of the registry: not in the audit
//! chain, no rules, no derived rows, and so not on the write path of
//! [`super::write`] (which exists for records that must be audited). It
//! holds no personal data: the box's name, role and release, its readers'
//! configured names and states, when it last read a card (no card), its
//! uptime, the printer's state (`ok`, `paper_end`, …; absent without one),
//! and when it was last seen — by the database's clock (`now()` on
//! PostgreSQL), so boxes with wrong clocks are judged alike.
//!
//! Pruning: every heartbeat deletes the boxes not seen for
//! [`PRUNE_AFTER_DAYS`] days (a box taken out of service disappears from
//! the list a month later). One row per box, so the table stays as small
//! as the fleet.
//!
//! A box is listed offline once three of its own heartbeats are missing:
//! not seen for more than [`MISSED_BEATS`] × the interval it recorded.

use std::time::SystemTime;

use super::error::RegistryError;
use super::resolve::Columns;

/// Heartbeats missed before a box is listed offline.
pub const MISSED_BEATS: i64 = 3;
/// Boxes not seen for this many days are deleted by the next heartbeat.
pub const PRUNE_AFTER_DAYS: i64 = 30;

/// One reader as a heartbeat reports it: its configured name and state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderBeat {
    /// The reader's configured name (never a card).
    pub name: String,
    /// `connected`, `disconnected` or `error`.
    pub state: String,
}

/// What a box writes at each heartbeat.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    /// The box's name (`name` in its configuration; the host name by default).
    pub name: String,
    /// `window` or `kiosk`.
    pub role: String,
    /// Its release.
    pub version: String,
    /// Seconds between its heartbeats.
    pub interval_s: u32,
    /// Its readers.
    pub readers: Vec<ReaderBeat>,
    /// The printer's state (`ok`, `paper_end`, …); `None` without a printer.
    pub printer: Option<String>,
    /// When it last resolved a card read.
    pub last_read: Option<SystemTime>,
    /// Seconds since the daemon started.
    pub uptime_s: u64,
}

impl Heartbeat {
    fn readers_json(&self) -> String {
        serde_json::Value::Array(
            self.readers
                .iter()
                .map(|r| serde_json::json!({"name": r.name, "state": r.state}))
                .collect(),
        )
        .to_string()
    }

    fn readers_up(&self) -> i64 {
        self.readers
            .iter()
            .filter(|r| r.state == "connected")
            .count() as i64
    }
}

/// One box as `cardlinkctl fleet` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetBox {
    /// Its name.
    pub name: String,
    /// `window` or `kiosk`.
    pub role: String,
    /// Its release.
    pub version: String,
    /// The heartbeat interval it recorded, seconds.
    pub interval_s: i64,
    /// Its readers at the last heartbeat.
    pub readers: Vec<ReaderBeat>,
    /// Readers connected.
    pub readers_up: i64,
    /// Readers configured.
    pub readers_total: i64,
    /// The printer's state (`None`: the box has no printer).
    pub printer: Option<String>,
    /// When it last read a card (UTC, RFC 3339).
    pub last_read: Option<String>,
    /// Its uptime at the last heartbeat, seconds.
    pub uptime_s: i64,
    /// Its last heartbeat (UTC, RFC 3339, the database's clock).
    pub last_seen: String,
    /// Seconds since then, by the database's clock.
    pub age_s: i64,
}

impl FleetBox {
    /// Whether its last heartbeat is recent enough: fewer than
    /// [`MISSED_BEATS`] of its own intervals have passed.
    pub fn online(&self) -> bool {
        self.age_s <= MISSED_BEATS * self.interval_s.max(1)
    }

    /// The one decoder of a `fleet_box` row (both backends' `LIST`).
    fn read(r: &impl Columns) -> Result<FleetBox, RegistryError> {
        let readers_text = r.req_text(4)?;
        let readers = match serde_json::from_str::<serde_json::Value>(&readers_text) {
            Ok(serde_json::Value::Array(items)) => items
                .iter()
                .map(|v| ReaderBeat {
                    name: v["name"].as_str().unwrap_or_default().to_string(),
                    state: v["state"].as_str().unwrap_or_default().to_string(),
                })
                .collect(),
            _ => {
                return Err(RegistryError::Corrupt(
                    "fleet_box.readers is not a JSON array".into(),
                ))
            }
        };
        Ok(FleetBox {
            name: r.req_text(0)?,
            role: r.req_text(1)?,
            version: r.req_text(2)?,
            interval_s: r.req_int(3)?,
            readers,
            readers_up: r.req_int(5)?,
            readers_total: r.req_int(6)?,
            printer: r.text(7)?,
            last_read: r.text(8)?,
            uptime_s: r.req_int(9)?,
            last_seen: r.req_text(10)?,
            age_s: r.req_int(11)?,
        })
    }
}

const SQLITE_NOW: &str = "strftime('%Y-%m-%dT%H:%M:%SZ', 'now')";

/// Writes `hb` into the SQLite registry at `path` on a connection of its
/// own that waits at most `busy` for the file's write lock, so a
/// heartbeat never queues behind (or ahead of) the daemon's swipes.
pub fn beat_sqlite(
    path: &std::path::Path,
    hb: &Heartbeat,
    busy: std::time::Duration,
) -> Result<(), RegistryError> {
    beat_sqlite_keyed(path, None, hb, busy)
}

/// [`beat_sqlite`] into a registry encrypted with `key` (SQLCipher): the
/// heartbeat's connection is given the key like the registry's own.
pub fn beat_sqlite_keyed(
    path: &std::path::Path,
    key: Option<&super::key::DbKey>,
    hb: &Heartbeat,
    busy: std::time::Duration,
) -> Result<(), RegistryError> {
    use rusqlite::OpenFlags;
    let sql = |e| RegistryError::from_sql(e, busy);
    super::sqlite::initialize();
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| RegistryError::Open {
        path: path.display().to_string(),
        source,
    })?;
    super::sqlite::unlock(&conn, path, key, busy)?;
    conn.busy_timeout(busy).map_err(sql)?;
    let last_read = hb
        .last_read
        .map(|t| humantime::format_rfc3339_seconds(t).to_string());
    conn.execute(
        &format!(
            "INSERT INTO fleet_box (name, role, version, interval_s, readers, readers_up, readers_total, printer, last_read, uptime_s, last_seen)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, {SQLITE_NOW})
             ON CONFLICT (name) DO UPDATE SET role = excluded.role, version = excluded.version,
                 interval_s = excluded.interval_s, readers = excluded.readers,
                 readers_up = excluded.readers_up, readers_total = excluded.readers_total,
                 printer = excluded.printer, last_read = coalesce(excluded.last_read, fleet_box.last_read),
                 uptime_s = excluded.uptime_s, last_seen = excluded.last_seen"
        ),
        rusqlite::params![
            hb.name,
            hb.role,
            hb.version,
            i64::from(hb.interval_s),
            hb.readers_json(),
            hb.readers_up(),
            hb.readers.len() as i64,
            hb.printer,
            last_read,
            i64::try_from(hb.uptime_s).unwrap_or(i64::MAX),
        ],
    )
    .map_err(sql)?;
    conn.execute(
        &format!(
            "DELETE FROM fleet_box WHERE last_seen < strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-{PRUNE_AFTER_DAYS} days')"
        ),
        [],
    )
    .map_err(sql)?;
    Ok(())
}

/// Every box of a SQLite registry, by name.
pub(crate) fn list_sqlite(conn: &rusqlite::Connection) -> Result<Vec<FleetBox>, RegistryError> {
    let sql = RegistryError::Sql;
    let mut st = conn
        .prepare(
            "SELECT name, role, version, interval_s, readers, readers_up, readers_total, printer,
                last_read, uptime_s, last_seen,
                CAST(round((julianday('now') - julianday(last_seen)) * 86400) AS INTEGER)
           FROM fleet_box ORDER BY name",
        )
        .map_err(sql)?;
    let mut rows = st.query([]).map_err(sql)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(sql)? {
        out.push(FleetBox::read(r)?);
    }
    Ok(out)
}

/// PostgreSQL's upsert of a heartbeat (`last_seen` is the server's `now()`).
pub(crate) const PG_BEAT: &str = "INSERT INTO fleet_box (name, role, version, interval_s, readers, readers_up, readers_total, printer, last_read, uptime_s, last_seen)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now())
     ON CONFLICT (name) DO UPDATE SET role = excluded.role, version = excluded.version,
         interval_s = excluded.interval_s, readers = excluded.readers,
         readers_up = excluded.readers_up, readers_total = excluded.readers_total,
         printer = excluded.printer, last_read = coalesce(excluded.last_read, fleet_box.last_read),
         uptime_s = excluded.uptime_s, last_seen = excluded.last_seen";

/// PostgreSQL's pruning of boxes gone quiet.
pub(crate) const PG_PRUNE: &str =
    "DELETE FROM fleet_box WHERE last_seen < now() - make_interval(days => $1::int)";

/// PostgreSQL's list, in the columns [`FleetBox::read`] decodes.
pub(crate) const PG_LIST: &str = "SELECT name, role, version, interval_s::bigint, readers,
        readers_up::bigint, readers_total::bigint, printer,
        to_char(last_read AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
        uptime_s, to_char(last_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
        round(extract(epoch FROM now() - last_seen))::bigint
   FROM fleet_box ORDER BY name";

/// The parameters of [`PG_BEAT`], owned.
pub(crate) struct PgBeat {
    pub(crate) name: String,
    pub(crate) role: String,
    pub(crate) version: String,
    pub(crate) interval_s: i32,
    pub(crate) readers: String,
    pub(crate) readers_up: i32,
    pub(crate) readers_total: i32,
    pub(crate) printer: Option<String>,
    pub(crate) last_read: Option<SystemTime>,
    pub(crate) uptime_s: i64,
}

impl From<&Heartbeat> for PgBeat {
    fn from(hb: &Heartbeat) -> PgBeat {
        PgBeat {
            name: hb.name.clone(),
            role: hb.role.clone(),
            version: hb.version.clone(),
            interval_s: i32::try_from(hb.interval_s).unwrap_or(i32::MAX),
            readers: hb.readers_json(),
            readers_up: i32::try_from(hb.readers_up()).unwrap_or(i32::MAX),
            readers_total: i32::try_from(hb.readers.len()).unwrap_or(i32::MAX),
            printer: hb.printer.clone(),
            last_read: hb.last_read,
            uptime_s: i64::try_from(hb.uptime_s).unwrap_or(i64::MAX),
        }
    }
}

/// Decodes PostgreSQL's list rows.
pub(crate) fn read_rows(rows: &[tokio_postgres::Row]) -> Result<Vec<FleetBox>, RegistryError> {
    rows.iter().map(FleetBox::read).collect()
}
