//! The PostgreSQL backend: one registry shared by many boxes.
//!
//! Driver: tokio-postgres with a deadpool-postgres pool.
//!
//! **In the daemon** ([`Postgres::into_async`], `daemon::store`) the
//! operations it calls are async fns awaited on the daemon's runtime:
//! the connections' tasks run there, and concurrent requests (readers,
//! clients) each take a connection of the pool.
//!
//! **In the tools** [`crate::registry::Registry`]'s methods are
//! synchronous, like SQLite's: a PostgreSQL method blocks its caller on a
//! current-thread runtime of the backend's own, which drives the query and
//! the connection on that one thread.
//!
//! The rules, the resolution and the audit chain are the shared code of
//! [`super::bind`], [`super::resolve`] and [`super::audit`]; this module
//! answers their questions with PostgreSQL's SQL.
//!
//! **Many writers.** Every write transaction (bind, unbind, an audit row,
//! import, repair) first takes one transaction-scoped advisory lock,
//! [`WRITE_LOCK`], waiting at most `busy_timeout` (`lock_timeout`, then
//! `registry_unavailable`: `database_busy` means SQLite's file lock, which a
//! server has not; a lock held on the server beyond that is a server that
//! does not answer the write in time). Writers of all boxes are therefore serialised: the
//! rules of a bind are judged on what every earlier bind committed (two
//! boxes binding one member: the second sees the first's link and is
//! refused `member_has_payer` or `already_linked`), and the audit chain's
//! head is read and extended by one writer at a time, so the chain stays
//! one line whatever the number of boxes. The partial unique index on the
//! member's active link stays the last line of defence. Each write holds
//! the lock for a few round trips (about a millisecond on a LAN).
//!
//! **Outage.** Failures to reach the server (refused, timed out, closed,
//! TLS, login) are [`RegistryError::Unavailable`], `registry_unavailable`
//! on the wire. After one, the backend answers at once with that error
//! until a backoff (0.25 s doubling to 10 s) has passed, then tries again;
//! the first success clears it. Each call is bounded by `busy_timeout`
//! plus the connect timeout, so the daemon's worker keeps answering (and
//! the systemd watchdog keeps being fed) while the server is away. A call
//! that runs out of time (a lock held by another session, a COMMIT waiting
//! for a synchronous standby that is gone) is `Unavailable` too; its
//! statement is cancelled on the server (a cancel request, as `psql`'s
//! Ctrl-C) and its connection dropped, never reused in an unknown state,
//! so no backend is left holding the write lock for a caller that gave up.
//!
//! **Failover.** A multi-host URL (`postgres://u@h1:5432,h2:5432/db?
//! target_session_attrs=read-write`) is handed to tokio-postgres, which
//! tries the hosts in order and keeps the first that accepts writes: after
//! the primary is lost, calls answer `Unavailable` until a standby is
//! promoted, then new connections find it (README, "PostgreSQL failover").
//!
//! **TLS.** `sslmode=verify-full` with `sslrootcert=/path/ca.pem` in the
//! URL: rustls checks the server's chain against that CA and its name
//! against the URL's host. `sslmode=disable` (or none) is plain TCP or a
//! Unix socket; other modes are refused because they do not verify the
//! server.

/// Runs `$body` (an expression of type `Result<T, E>`, `E: Failure`,
/// that uses `$c: &mut deadpool_postgres::Object`) with a pooled
/// connection of `$pg`, bounded by `$limit` (`Option<Duration>`), keeping
/// [`Health`]. A macro rather than a function taking an async closure: the
/// future stays `Send` (higher-ranked closure lifetimes defeat that), so the
/// daemon's tasks await it on their own runtime.
macro_rules! pooled {
    ($pg:expr, $limit:expr, |$c:ident| $body:expr) => {{
        let pg: &$crate::registry::pg::Postgres = $pg;
        let limit: Option<std::time::Duration> = $limit;
        match pg.refusal() {
            // Answered without trying: the backoff is not extended (a
            // client asking again and again must not keep the server from
            // being tried once the backoff has passed).
            Some(e) => Err(e.into()),
            None => match pg.lease().await {
                Err(e) => pg.settle(None, Ok(Err(e.into())), limit),
                Ok(mut client) => {
                    let r = {
                        let $c = &mut client;
                        tokio::time::timeout(limit.unwrap_or(std::time::Duration::MAX), async {
                            $body
                        })
                        .await
                    };
                    if r.is_err() {
                        pg.cancel(&client);
                    }
                    pg.settle(Some(client), r, limit)
                }
            },
        }
    }};
}

/// [`pooled!`] once the schema is ready, bounded by the call limit: the
/// daemon's calls (in an async fn returning `Result<T, E>`).
macro_rules! call {
    ($pg:expr, |$c:ident| $body:expr) => {{
        let pg: &$crate::registry::pg::Postgres = $pg;
        pg.prepare_schema().await?;
        pooled!(pg, Some(pg.limit()), |$c| $body)
    }};
}

mod fleet;
mod import;
mod ops;
pub mod prewarm;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;

use super::error::RegistryError;
use super::sqlite::OpenOptions;

/// The advisory lock every write transaction takes ("cardlink" in ASCII).
pub const WRITE_LOCK: i64 = 0x6361_7264_6c69_6e6b;
/// The advisory lock of schema migrations.
const MIGRATE_LOCK: i64 = WRITE_LOCK + 1;

/// The migrations, in order; the version is their count (table
/// `cardlink_schema`). Append new files; never edit one that has shipped.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/001_init.sql"),
    include_str!("migrations/002_audit_append.sql"),
    include_str!("migrations/003_fleet.sql"),
    include_str!("migrations/004_seal.sql"),
];

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// First and longest wait before trying an unreachable server again.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// A `database` URL taken apart: the driver's configuration and the TLS
/// settings the driver does not parse itself.
#[derive(Debug, Clone)]
pub struct Target {
    /// The driver's configuration.
    pub config: tokio_postgres::Config,
    /// The CA file when `sslmode=verify-full`.
    pub ca_file: Option<PathBuf>,
}

impl Target {
    /// Parses a `postgres://` URL or a `key=value` connection string
    /// (libpq syntax, both). `sslmode` may be `disable` or `verify-full`
    /// (with `sslrootcert`).
    pub fn parse(url: &str) -> Result<Target, RegistryError> {
        let bad = |why: String| RegistryError::Config(format!("{}: {why}", redact_url(url)));
        // The TLS settings are taken out; the driver parses the rest.
        let (mut mode, mut ca) = (None, None);
        let rebuilt = if is_conninfo(url) {
            let params = conninfo_params(url).ok_or_else(|| {
                bad("not a key=value connection string (a quote left open?)".into())
            })?;
            let mut keep = Vec::new();
            for p in params {
                match p.key {
                    "sslmode" => mode = Some(p.value),
                    "sslrootcert" => ca = Some(PathBuf::from(p.value)),
                    key => keep.push(format!(
                        "{key}='{}'",
                        p.value.replace('\\', "\\\\").replace('\'', "\\'")
                    )),
                }
            }
            keep.join(" ")
        } else {
            let (base, params) = url_params(url);
            let mut keep = Vec::new();
            for (key, value) in params {
                match key.as_str() {
                    "sslmode" => mode = Some(value),
                    "sslrootcert" => ca = Some(PathBuf::from(value)),
                    _ => keep.push((key, value)),
                }
            }
            with_params(base, &keep)
        };
        let mut config =
            tokio_postgres::Config::from_str(&rebuilt).map_err(|e| bad(e.to_string()))?;
        let ca_file = match mode.as_deref() {
            None | Some("disable") => {
                config.ssl_mode(tokio_postgres::config::SslMode::Disable);
                None
            }
            Some("verify-full") => {
                let ca = ca.ok_or_else(|| {
                    bad("sslmode=verify-full needs sslrootcert=/path/to/ca.pem".into())
                })?;
                config.ssl_mode(tokio_postgres::config::SslMode::Require);
                Some(ca)
            }
            Some(other) => {
                return Err(bad(format!(
                "sslmode={other} is not supported: use verify-full (with sslrootcert) or disable"
            )))
            }
        };
        if config.get_application_name().is_none() {
            config.application_name("cardlink");
        }
        config
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .tcp_user_timeout(Duration::from_secs(10));
        Ok(Target { config, ca_file })
    }
}

/// A URL's base and its query parameters, decoded as libpq decodes them:
/// `%XX` escapes only (a `+` stays a plus sign, unlike in an HTML form).
fn url_params(url: &str) -> (&str, Vec<(String, String)>) {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let query = query.replace('+', "%2B");
    let params = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    (base, params)
}

/// What a query value must escape to be read back as itself by
/// [`url_params`] (and by tokio-postgres): controls, blanks and the query's
/// own delimiters.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'&')
    .add(b'+')
    .add(b'<')
    .add(b'=')
    .add(b'>')
    .add(b'?')
    .add(b'`');

/// `base` with the query `params` (none: no `?`).
fn with_params(base: &str, params: &[(String, String)]) -> String {
    let encode = |s: &str| percent_encoding::utf8_percent_encode(s, QUERY_VALUE).to_string();
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    if query.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", query.join("&"))
    }
}

/// Whether a `database` setting is a libpq `key=value` connection string
/// (`host=db dbname=registry user=cardlink`): it starts with a keyword
/// (letters and `_`) and `=`. A SQLite path never does unless it is a bare
/// relative name with `=` in it; that one is read as a connection string and
/// refused (unknown option) rather than opened as a file.
pub fn is_conninfo(s: &str) -> bool {
    let t = s.trim_start();
    let key = t
        .find(|c: char| !(c.is_ascii_alphabetic() || c == '_'))
        .unwrap_or(t.len());
    key > 0 && t[key..].trim_start().starts_with('=')
}

/// One `key=value` of a connection string, and where its value is written.
struct Param<'a> {
    key: &'a str,
    value: String,
    span: std::ops::Range<usize>,
}

/// The parameters of a `key=value` connection string, read like libpq (and
/// tokio-postgres) reads them: blanks around `=` allowed; a value is a word
/// or `'quoted'`, with `\` escaping the next character. `None` when the
/// string is malformed.
fn conninfo_params(s: &str) -> Option<Vec<Param<'_>>> {
    let b = s.as_bytes();
    let blank = |i: usize| b.get(i).is_some_and(|c| c.is_ascii_whitespace());
    let skip = |mut i: usize| {
        while blank(i) {
            i += 1;
        }
        i
    };
    let mut out = Vec::new();
    let mut i = skip(0);
    while i < b.len() {
        let start = i;
        while i < b.len() && !blank(i) && b[i] != b'=' {
            i += 1;
        }
        let key = &s[start..i];
        i = skip(i);
        if key.is_empty() || b.get(i) != Some(&b'=') {
            return None;
        }
        i = skip(i + 1);
        let from = i;
        let quoted = b.get(i) == Some(&b'\'');
        if quoted {
            i += 1;
        }
        let mut value = Vec::new();
        loop {
            match b.get(i) {
                None if quoted => return None,
                None => break,
                Some(b'\'') if quoted => {
                    i += 1;
                    break;
                }
                Some(_) if !quoted && blank(i) => break,
                Some(b'\\') => {
                    value.extend(b.get(i + 1));
                    i += 2;
                }
                Some(c) => {
                    value.push(*c);
                    i += 1;
                }
            }
        }
        if i == from {
            return None;
        }
        out.push(Param {
            key,
            value: String::from_utf8_lossy(&value).into_owned(),
            span: from..i.min(b.len()),
        });
        i = skip(i);
    }
    Some(out)
}

/// The URL (or `key=value` connection string) without its password (for
/// logs and messages).
pub fn redact_url(url: &str) -> String {
    if is_conninfo(url) {
        let mut out = url.to_string();
        match conninfo_params(url) {
            Some(params) => {
                for p in params.iter().rev().filter(|p| p.key == "password") {
                    out.replace_range(p.span.clone(), "***");
                }
            }
            // Malformed: nothing after the first mention of a password is shown.
            None => {
                if let Some(at) = out.find("password") {
                    out.replace_range(at + "password".len().., "=***");
                }
            }
        }
        return out;
    }
    let (base, params) = url_params(url);
    let mut out = base.to_string();
    if let Some(rest) = base.split_once("://").map(|(_, r)| r) {
        let auth_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..auth_end].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                let start = base.len() - rest.len();
                out.replace_range(start + colon + 1..start + at, "***");
            }
        }
    }
    // A password given as a parameter.
    let params: Vec<(String, String)> = params
        .into_iter()
        .map(|(k, v)| match k.as_str() {
            "password" => (k, "***".into()),
            _ => (k, v),
        })
        .collect();
    with_params(&out, &params)
}

/// Reachability of the server.
#[derive(Debug, Default)]
struct Health {
    down: Option<Down>,
}

#[derive(Debug)]
struct Down {
    since: Instant,
    retry_at: Instant,
    backoff: crate::backoff::Backoff,
    reason: String,
}

impl Health {
    /// Down, and the backoff has passed: time to try again.
    fn due(&self) -> bool {
        self.down
            .as_ref()
            .is_some_and(|d| Instant::now() >= d.retry_at)
    }

    /// The error to answer without trying, while backing off.
    fn refuse(&self) -> Option<RegistryError> {
        let d = self.down.as_ref()?;
        let now = Instant::now();
        (now < d.retry_at).then(|| {
            RegistryError::Unavailable(format!(
                "{} (unreachable for {}s; next attempt in {} ms)",
                d.reason,
                now.duration_since(d.since).as_secs(),
                d.retry_at.duration_since(now).as_millis()
            ))
        })
    }

    fn failed(&mut self, reason: &str, url: &str) {
        let now = Instant::now();
        match &mut self.down {
            Some(d) => {
                d.retry_at = now + d.backoff.fail();
                d.reason = reason.to_string();
            }
            None => {
                tracing::warn!(registry = url, error = reason, "registry unreachable; answering registry_unavailable and retrying with backoff");
                let mut backoff = crate::backoff::Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
                self.down = Some(Down {
                    since: now,
                    retry_at: now + backoff.fail(),
                    backoff,
                    reason: reason.to_string(),
                });
            }
        }
    }

    fn succeeded(&mut self, url: &str) {
        if let Some(d) = self.down.take() {
            tracing::info!(
                registry = url,
                after_ms = d.since.elapsed().as_millis() as u64,
                "registry reachable again"
            );
        }
    }
}

/// Errors that may say the server was not reached.
pub(crate) trait Failure: From<RegistryError> {
    fn unavailable(&self) -> Option<&str>;
}

impl Failure for RegistryError {
    fn unavailable(&self) -> Option<&str> {
        match self {
            RegistryError::Unavailable(why) => Some(why),
            _ => None,
        }
    }
}

impl Failure for super::bind::BindError {
    fn unavailable(&self) -> Option<&str> {
        match self {
            super::bind::BindError::Registry(e) => e.unavailable(),
            _ => None,
        }
    }
}

impl Failure for super::import::ImportError {
    fn unavailable(&self) -> Option<&str> {
        match self {
            super::import::ImportError::Registry(e) => e.unavailable(),
            _ => None,
        }
    }
}

/// A PostgreSQL registry.
#[derive(Debug)]
pub struct Postgres {
    rt: Option<tokio::runtime::Runtime>,
    pool: Pool,
    busy_timeout: Duration,
    url: String,
    health: Mutex<Health>,
    /// The schema has been created or checked (see `OpenOptions::lazy`).
    ready: std::sync::atomic::AtomicBool,
    read_only: bool,
    /// The audit chain's algorithm and this box's sealing.
    pub(crate) audit: crate::registry::seal::AuditSetup,
    /// The TLS of the connections, for cancel requests.
    tls: Tls,
    /// Told each time the pool makes a connection (the server it reaches
    /// may have restarted, or be a standby just promoted):
    /// [`Postgres::connected`].
    connected: std::sync::Arc<tokio::sync::Notify>,
    /// The server (its start time and address) the last prewarm read
    /// into ([`Postgres::prewarm`]).
    warmed: Mutex<Option<String>>,
}

/// The TLS of a registry's connections (`None`: plain).
#[derive(Clone)]
struct Tls(Option<tokio_postgres_rustls::MakeRustlsConnect>);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "rustls" } else { "plain" })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which is refused inside another
        // runtime's task (the daemon drops its registry there).
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Maps a driver error: not reaching the server is `Unavailable`, and so
/// is a write the server does not finish in time (a lock not granted within
/// `busy_timeout`, a cancelled statement, a serialisation failure or
/// deadlock): [`RegistryError::Busy`] (`database_busy`) is SQLite's file
/// lock only. The rest keeps the server's message.
pub(crate) fn classify(e: &tokio_postgres::Error, busy: Duration) -> RegistryError {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        if *code == SqlState::LOCK_NOT_AVAILABLE
            || *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED
            || *code == SqlState::QUERY_CANCELED
        {
            return RegistryError::Unavailable(format!(
                "the server did not finish the write within {} ms: {} ({})",
                busy.as_millis(),
                db.message(),
                code.code()
            ));
        }
        let class = &code.code()[..2];
        // 08 connection, 28 authorisation, 3D no such database, 53 resources,
        // 57 operator intervention (shutdown).
        if matches!(class, "08" | "28" | "3D" | "53" | "57") {
            return RegistryError::Unavailable(db.message().to_string());
        }
        return RegistryError::Pg(format!("{} ({})", db.message(), code.code()));
    }
    // No answer from a server: I/O, closed connection, TLS, timeout.
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    RegistryError::Unavailable(msg)
}

impl Postgres {
    /// Connects to `url`, creating or upgrading the schema unless
    /// `opts.read_only`. Fails (`Unavailable`) when the server cannot be
    /// reached now.
    pub fn connect(url: &str, opts: &OpenOptions) -> Result<Postgres, RegistryError> {
        let target = Target::parse(url)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                RegistryError::Config(format!("cannot start the PostgreSQL runtime: {e}"))
            })?;
        let mcfg = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let tls = target.ca_file.as_deref().map(tls).transpose()?;
        let manager = match &tls {
            None => Manager::from_config(target.config.clone(), tokio_postgres::NoTls, mcfg),
            Some(tls) => Manager::from_config(target.config.clone(), tls.clone(), mcfg),
        };
        let wait = opts.busy_timeout + CONNECT_TIMEOUT;
        let connected = std::sync::Arc::new(tokio::sync::Notify::new());
        let made = connected.clone();
        let pool = {
            let _entered = rt.enter();
            Pool::builder(manager)
                .max_size(4)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(wait))
                .create_timeout(Some(CONNECT_TIMEOUT))
                .recycle_timeout(Some(CONNECT_TIMEOUT))
                .post_create(deadpool_postgres::Hook::sync_fn(move |_, _| {
                    made.notify_one();
                    Ok(())
                }))
                .build()
                .map_err(|e| RegistryError::Config(format!("connection pool: {e}")))?
        };
        let pg = Postgres {
            rt: Some(rt),
            pool,
            busy_timeout: opts.busy_timeout,
            url: redact_url(url),
            health: Mutex::new(Health::default()),
            ready: std::sync::atomic::AtomicBool::new(false),
            read_only: opts.read_only,
            audit: crate::registry::seal::AuditSetup::new(
                opts.audit_hash,
                match &opts.seal_key {
                    // A read-only registry writes no row: it needs no key.
                    Some(k) if !opts.read_only => crate::registry::seal::SealSetup::On(
                        crate::registry::seal::Sealer::open(k)?,
                    ),
                    _ => crate::registry::seal::SealSetup::Off,
                },
            ),
            tls: Tls(tls),
            connected,
            warmed: Mutex::new(None),
        };
        match pg.block(pg.prepare_schema()) {
            Err(RegistryError::Unavailable(why)) if opts.lazy => {
                tracing::warn!(registry = %pg.url, error = %why, "registry unreachable at start; serving, and connecting when it is back");
            }
            other => other?,
        }
        Ok(pg)
    }

    /// Tries an unreachable server again once its backoff has passed (see
    /// [`crate::registry::Registry::reconnect`]); returns whether it answered.
    pub async fn reconnect(&self) -> bool {
        if !self.health.lock().unwrap_or_else(|p| p.into_inner()).due() {
            return false;
        }
        let answered: Result<(), RegistryError> = pooled!(self, Some(self.limit()), |c| {
            c.simple_query("SELECT 1")
                .await
                .map(drop)
                .map_err(|e| self.err(&e))
        });
        answered.is_ok()
    }

    /// This registry, to be driven by the caller's tokio runtime (the
    /// daemon's) from now on: the backend's own runtime is shut down and the
    /// connections made on it are dropped, so that every new connection's
    /// task runs on the caller's runtime, and concurrent callers each take a
    /// connection of the pool. Its synchronous methods then answer
    /// `Unavailable`; call the async ones.
    pub fn into_async(mut self) -> Postgres {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
        self.pool.retain(|_, _| false);
        self
    }

    /// Creates or upgrades the schema (checks its version when read-only),
    /// once.
    async fn prepare_schema(&self) -> Result<(), RegistryError> {
        use std::sync::atomic::Ordering;
        if self.ready.load(Ordering::Acquire) {
            return Ok(());
        }
        if self.read_only {
            let checked: Result<i64, RegistryError> =
                pooled!(self, Some(self.limit()), |c| self.version_on(c).await);
            checked?;
        } else {
            self.migrate().await?;
        }
        let settled: Result<(), RegistryError> =
            pooled!(self, Some(self.limit()), |c| self.settle_audit(c).await);
        settled?;
        self.ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Reads (and for a new chain records) the chain's algorithm, and
    /// checks this box's sealing against the registry's (see
    /// [`crate::registry::seal::AuditSetup::settle`]).
    async fn settle_audit(&self, c: &deadpool_postgres::Object) -> Result<(), RegistryError> {
        use crate::registry::seal;
        let err = |e: tokio_postgres::Error| self.err(&e);
        let has_meta: bool = c
            .query_one("SELECT to_regclass('audit_meta') IS NOT NULL", &[])
            .await
            .map_err(err)?
            .try_get(0)
            .map_err(err)?;
        if !has_meta {
            // A read-only look at a registry older than sealing.
            return Ok(());
        }
        let text = |r: Option<tokio_postgres::Row>| -> Result<Option<String>, RegistryError> {
            r.map(|r| r.try_get::<_, String>(0).map_err(err))
                .transpose()
        };
        let recorded = text(c.query_opt(seal::META_HASH_SQL, &[]).await.map_err(err)?)?;
        let has_rows: bool = c
            .query_one(seal::HAS_ROWS_SQL, &[])
            .await
            .map_err(err)?
            .try_get(0)
            .map_err(err)?;
        let sealed_by = text(c.query_opt(seal::ANY_SEAL_SQL, &[]).await.map_err(err)?)?;
        let record = self
            .audit
            .settle(recorded, has_rows, sealed_by, self.read_only)
            .map_err(RegistryError::Config)?;
        if record {
            c.execute(seal::SET_META_HASH_SQL, &[&self.audit.alg().as_str()])
                .await
                .map_err(err)?;
        }
        if let (Some(b), false) = (self.audit.box_id(), self.read_only) {
            let last: Option<i64> = c
                .query_one(seal::LAST_SEAL_SQL, &[&b])
                .await
                .map_err(err)?
                .try_get(0)
                .map_err(err)?;
            self.audit.catch_up(last)?;
        }
        Ok(())
    }

    pub(crate) fn err(&self, e: &tokio_postgres::Error) -> RegistryError {
        classify(e, self.busy_timeout)
    }

    /// Drives `fut` on the backend's own runtime: the synchronous facade of
    /// the tools. A registry made [`Postgres::into_async`] has none.
    pub(crate) fn block<T, E: Failure>(
        &self,
        fut: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        match &self.rt {
            Some(rt) => rt.block_on(fut),
            None => Err(RegistryError::Unavailable(
                "this registry is driven by the daemon's runtime; call its async methods".into(),
            )
            .into()),
        }
    }

    /// How long one call may take (bulk work excepted).
    pub(crate) fn limit(&self) -> Duration {
        self.busy_timeout + CONNECT_TIMEOUT
    }

    /// Runs `op` with a pooled connection on the backend's runtime,
    /// bounded in time, keeping [`Health`] (see the module docs), once the
    /// schema is ready.
    pub(crate) fn run<T, E, F>(&self, op: F) -> Result<T, E>
    where
        E: Failure,
        F: AsyncFnOnce(&mut deadpool_postgres::Object) -> Result<T, E>,
    {
        self.block(async {
            self.prepare_schema().await?;
            pooled!(self, Some(self.limit()), |c| op(c).await)
        })
    }

    /// [`Postgres::run`] without a time limit: bulk work (import, export,
    /// checks over every row) that takes as long as the data needs. A dead
    /// server still ends it (TCP keepalive and user timeout).
    pub(crate) fn run_bulk<T, E, F>(&self, op: F) -> Result<T, E>
    where
        E: Failure,
        F: AsyncFnOnce(&mut deadpool_postgres::Object) -> Result<T, E>,
    {
        self.block(async {
            self.prepare_schema().await?;
            pooled!(self, None, |c| op(c).await)
        })
    }

    /// The error to answer at once, without trying, while the server is
    /// known to be down and its backoff has not passed.
    pub(crate) fn refusal(&self) -> Option<RegistryError> {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .refuse()
    }

    /// A pooled connection for one call (see [`Postgres::refusal`] first).
    pub(crate) async fn lease(&self) -> Result<deadpool_postgres::Object, RegistryError> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        if self.rt.is_some() {
            // On the backend's own runtime the connections' tasks run
            // only while a call runs (its callers drive it): let them see
            // what the server did meanwhile (a restart closes them), and
            // take a new connection instead of one found closed. On the
            // daemon's runtime they run all along.
            tokio::task::yield_now().await;
        }
        if client.is_closed() {
            drop(deadpool_postgres::Object::take(client));
            client = self.pool.get().await.map_err(pool_error)?;
        }
        Ok(client)
    }

    /// Asks the server to cancel what `client` is running (a call that ran
    /// out of time), in the background: the caller does not wait for the
    /// answer, and the connection itself is dropped by [`Postgres::settle`].
    /// Without it a backend waiting for a lock or for a synchronous standby
    /// would go on waiting, holding the write lock, after the caller gave up.
    pub(crate) fn cancel(&self, client: &deadpool_postgres::Object) {
        let token = client.cancel_token();
        let tls = self.tls.0.clone();
        let url = self.url.clone();
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            let sent = tokio::time::timeout(CONNECT_TIMEOUT, async {
                match tls {
                    None => token.cancel_query(tokio_postgres::NoTls).await,
                    Some(tls) => token.cancel_query(tls).await,
                }
            })
            .await;
            match sent {
                Ok(Ok(())) => {
                    tracing::debug!(registry = %url, "timed-out statement cancelled on the server")
                }
                Ok(Err(e)) => tracing::debug!(registry = %url, error = %e, "cancel request failed"),
                Err(_) => tracing::debug!(registry = %url, "cancel request timed out"),
            }
        });
    }

    /// The end of a call: a connection in an unknown state (timed out) or
    /// closed is dropped, never reused; [`Health`] learns the outcome.
    pub(crate) fn settle<T, E: Failure>(
        &self,
        client: Option<deadpool_postgres::Object>,
        ran: Result<Result<T, E>, tokio::time::error::Elapsed>,
        limit: Option<Duration>,
    ) -> Result<T, E> {
        let timed_out = ran.is_err();
        let result = match ran {
            Ok(r) => r,
            Err(_) => Err(RegistryError::Unavailable(format!(
                "no answer from the registry within {} ms",
                limit.unwrap_or(Duration::MAX).as_millis()
            ))
            .into()),
        };
        if let Some(client) = client {
            if timed_out || client.is_closed() {
                drop(deadpool_postgres::Object::take(client));
            }
        }
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Err(e) if e.unavailable().is_some() => {
                health.failed(e.unavailable().unwrap_or_default(), &self.url)
            }
            _ => health.succeeded(&self.url),
        }
        result
    }

    /// Creates or upgrades the schema, one migration per transaction, under
    /// an advisory lock so that boxes starting together take turns.
    async fn migrate(&self) -> Result<(), RegistryError> {
        pooled!(self, None, |c| {
            let e = |e: tokio_postgres::Error| self.err(&e);
            c.execute("SELECT pg_advisory_lock($1)", &[&MIGRATE_LOCK])
                .await
                .map_err(e)?;
            let result = async {
                c.batch_execute(
                    "CREATE TABLE IF NOT EXISTS cardlink_schema (version integer NOT NULL)",
                )
                .await
                .map_err(e)?;
                let have: i32 = c
                    .query_one("SELECT coalesce(max(version), 0) FROM cardlink_schema", &[])
                    .await
                    .map_err(e)?
                    .try_get(0)
                    .map_err(e)?;
                let known = MIGRATIONS.len() as i32;
                if have > known {
                    return Err(RegistryError::Corrupt(format!(
                        "the registry's schema version {have} is newer than this cardlink knows ({known}); upgrade cardlink"
                    )));
                }
                for (i, sql) in MIGRATIONS.iter().enumerate().skip(have as usize) {
                    let tx = c.transaction().await.map_err(e)?;
                    tx.batch_execute(sql).await.map_err(e)?;
                    tx.execute("INSERT INTO cardlink_schema VALUES ($1)", &[&(i as i32 + 1)])
                        .await
                        .map_err(e)?;
                    tx.commit().await.map_err(e)?;
                    tracing::info!(registry = %self.url, version = i + 1, "registry schema migrated");
                }
                Ok(())
            }
            .await;
            c.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATE_LOCK])
                .await
                .map_err(e)?;
            result
        })
    }

    /// The schema version (migrations applied).
    pub fn schema_version(&self) -> Result<i64, RegistryError> {
        self.run(async |c| self.version_on(c).await)
    }

    async fn version_on(&self, c: &deadpool_postgres::Object) -> Result<i64, RegistryError> {
        let row = c
            .query_one(
                "SELECT coalesce(max(version), 0)::bigint FROM cardlink_schema",
                &[],
            )
            .await
            .map_err(|e| match self.err(&e) {
                RegistryError::Pg(m) => RegistryError::Corrupt(format!(
                    "not a cardlink registry (no cardlink_schema table): {m}"
                )),
                other => other,
            })?;
        super::resolve::Columns::req_int(&row, 0)
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> RegistryError {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Backend(e) => classify(&e, Duration::ZERO),
        PoolError::Timeout(kind) => RegistryError::Unavailable(format!(
            "no connection to the registry ({kind:?} timed out)"
        )),
        other => RegistryError::Unavailable(other.to_string()),
    }
}

/// rustls with exactly the CA of `ca` as trust anchor; the server's name
/// is checked against the URL's host (verify-full).
fn tls(ca: &std::path::Path) -> Result<tokio_postgres_rustls::MakeRustlsConnect, RegistryError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let bad = |why: String| RegistryError::Config(format!("sslrootcert {}: {why}", ca.display()));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| bad(e.to_string()))? {
        roots
            .add(cert.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in the file".into()));
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_passwords() {
        assert_eq!(
            redact_url("postgres://cardlink:s3cret@db.example:5432/registry?sslmode=verify-full"),
            "postgres://cardlink:***@db.example:5432/registry?sslmode=verify-full"
        );
        assert_eq!(
            redact_url("postgres://db/registry?user=a&password=x&sslmode=disable"),
            "postgres://db/registry?user=a&password=***&sslmode=disable"
        );
        assert_eq!(redact_url("postgres://a@db/r"), "postgres://a@db/r");
        assert_eq!(
            redact_url("host=db password=s3cret dbname=registry"),
            "host=db password=*** dbname=registry"
        );
        assert_eq!(
            redact_url("host=db password = 'a b\\' c' user=x"),
            "host=db password = *** user=x"
        );
        assert_eq!(
            redact_url("host=db password='open dbname=r"),
            "host=db password=***"
        );
    }

    #[test]
    fn key_value_connection_strings_are_postgresql() {
        assert!(is_conninfo("host=db dbname=registry"));
        assert!(is_conninfo("  dbname = registry"));
        assert!(!is_conninfo("/var/lib/cardlink/registry.db"));
        assert!(!is_conninfo("./a=b.db"));
        assert!(!is_conninfo(""));
        let t = Target::parse(
            "host=db.example port=5433 user=cardlink password='p w\\'d' dbname=registry sslmode=verify-full sslrootcert=/etc/ca.pem",
        )
        .unwrap();
        assert_eq!(t.config.get_dbname(), Some("registry"));
        assert_eq!(t.config.get_ports(), &[5433]);
        assert_eq!(t.config.get_password(), Some(&b"p w'd"[..]));
        assert_eq!(
            t.ca_file.as_deref(),
            Some(std::path::Path::new("/etc/ca.pem"))
        );
        let e = Target::parse("host=db password=s3cret bogus=1").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        assert!(!e.to_string().contains("s3cret"), "{e}");
        assert!(Target::parse("host=db sslmode=require").is_err());
    }

    #[test]
    fn multi_host_urls_keep_every_host_and_target_session_attrs() {
        let url = "postgres://cardlink:s3cret@10.0.0.5:5432,10.0.0.6:5433/registry?target_session_attrs=read-write";
        let t = Target::parse(url).unwrap();
        assert_eq!(t.config.get_hosts().len(), 2);
        assert_eq!(t.config.get_ports(), &[5432, 5433]);
        assert_eq!(
            t.config.get_target_session_attrs(),
            tokio_postgres::config::TargetSessionAttrs::ReadWrite
        );
        assert_eq!(
            redact_url(url),
            "postgres://cardlink:***@10.0.0.5:5432,10.0.0.6:5433/registry?target_session_attrs=read-write"
        );
    }

    #[test]
    fn tls_settings_are_taken_from_the_url() {
        let t = Target::parse(
            "postgres://cardlink@db.example/registry?sslmode=verify-full&sslrootcert=%2Fetc%2Fcardlink%2Fca.pem",
        )
        .unwrap();
        assert_eq!(
            t.ca_file.as_deref(),
            Some(std::path::Path::new("/etc/cardlink/ca.pem"))
        );
        assert!(Target::parse("postgres://db/r?sslmode=verify-full").is_err());
        let e = Target::parse("postgres://db/r?sslmode=require").unwrap_err();
        assert!(e.to_string().contains("verify-full"), "{e}");
        assert!(Target::parse("postgres://db/r").unwrap().ca_file.is_none());
    }

    #[test]
    fn url_parameters_are_decoded_like_libpq() {
        // `%XX` is decoded, `+` is a plus sign (libpq's reading, not a form's).
        let t = Target::parse(
            "postgres://db/r?password=a+b%20c%26d%3D&application_name=box%201&sslrootcert=%2Fca+1.pem&sslmode=verify-full",
        )
        .unwrap();
        assert_eq!(t.config.get_password(), Some(&b"a+b c&d="[..]));
        assert_eq!(t.config.get_application_name(), Some("box 1"));
        assert_eq!(
            t.ca_file.as_deref(),
            Some(std::path::Path::new("/ca+1.pem"))
        );
        assert_eq!(
            redact_url("postgres://db/r?password=a+b%26c&user=x%20y"),
            "postgres://db/r?password=***&user=x%20y"
        );
        let e = Target::parse("postgres://u:s3cret@db/r?password=s3cret&bogus=1").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }
}
