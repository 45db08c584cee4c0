//! Shared fixtures for the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use cardlink::registry::demo::{demo_card_no, demo_pan, demo_ssn};
use cardlink::registry::{OpenOptions, Registry};
use cardlink::Ssn;

/// Index of each fixture person (also the argument of `demo_ssn`).
pub const HOLDER: u64 = 0;
pub const SPOUSE: u64 = 1;
pub const CHILD: u64 = 2;
pub const PARENT: u64 = 3;
pub const UNINSURED: u64 = 4;
pub const LOST: u64 = 5;
pub const EXPIRED: u64 = 6;
pub const FROZEN: u64 = 7;
pub const CANCELLED: u64 = 8;
pub const SUSPENDED: u64 = 9;
pub const HOLDER2: u64 = 10;
pub const MEMBER2: u64 = 11;
pub const NO_CARD: u64 = 12;
pub const HOLDER_SUSPENDED: u64 = 13;
pub const HOLDER_EXPIRED: u64 = 14;
/// Insured in another province (Beijing).
pub const REMOTE: u64 = 15;
/// Insured in another city of the same province (Ningbo).
pub const OTHER_CITY: u64 = 16;
/// Insured region not in the registry.
pub const NO_REGION: u64 = 17;

/// The insured region (统筹区) of fixture person `i`: Hangzhou unless said.
pub fn region(i: u64) -> &'static str {
    match i {
        REMOTE => "110100",
        OTHER_CITY => "330200",
        NO_REGION => "",
        _ => "330100",
    }
}

pub fn ssn(i: u64) -> Ssn {
    Ssn::parse(&demo_ssn(i)).unwrap()
}
pub fn card(i: u64) -> String {
    demo_card_no(i)
}
pub fn pan(i: u64) -> String {
    demo_pan(i)
}

/// Card expiry of a fixture person, relative to today (China time) so
/// that the fixture never ages: the daemon judges expiry against today.
#[derive(Clone, Copy)]
pub enum Exp {
    /// Eight years from today.
    Valid,
    /// Two years ago.
    Past2,
    /// Three years ago.
    Past3,
}
pub use Exp::{Past2 as EXPIRED_2Y, Past3 as EXPIRED_3Y, Valid as VALID};

impl Exp {
    pub fn days(self) -> i64 {
        match self {
            Exp::Valid => 8 * 365,
            Exp::Past2 => -2 * 365,
            Exp::Past3 => -3 * 365,
        }
    }
    /// `YYYY-MM-DD`.
    pub fn date(self) -> String {
        days_from_today(self.days()).to_string()
    }
}

/// Today (China time) plus `days`.
pub fn days_from_today(days: i64) -> cardlink::Date {
    let today = cardlink::Date::today_cst();
    cardlink::Date::from_days_since_epoch(today.days_since_epoch() + days).unwrap()
}

/// Writes the fixture CSV files into `dir` and returns their paths.
pub fn fixture_csv(dir: &Path) -> Vec<PathBuf> {
    let mut persons =
        String::from("ssn,name,sex,birth_date,insurance_type,insurance_status,region\n");
    let mut cards = String::from("card_no,pan,ssn,generation,issued,expires,status\n");
    let people: [(u64, &str, &str, &str, &str, Exp); 18] = [
        (HOLDER, "张伟", "employee", "active", "active", VALID),
        (SPOUSE, "李娜", "resident", "active", "active", VALID),
        (CHILD, "张小明", "resident", "active", "active", VALID),
        (PARENT, "张建华", "employee", "active", "active", VALID),
        (UNINSURED, "王芳", "none", "ended", "active", VALID),
        (LOST, "刘强", "resident", "active", "lost", VALID),
        (EXPIRED, "陈静", "resident", "active", "active", EXPIRED_2Y),
        (FROZEN, "杨磊", "resident", "active", "frozen", VALID),
        (CANCELLED, "黄丽", "resident", "active", "cancelled", VALID),
        (SUSPENDED, "赵军", "resident", "suspended", "active", VALID),
        (HOLDER2, "吴洋", "employee", "active", "active", VALID),
        (MEMBER2, "周勇", "resident", "active", "active", VALID),
        (NO_CARD, "徐艳", "resident", "active", "", VALID),
        (
            HOLDER_SUSPENDED,
            "孙杰",
            "employee",
            "suspended",
            "active",
            VALID,
        ),
        (
            HOLDER_EXPIRED,
            "马娟",
            "employee",
            "active",
            "active",
            EXPIRED_3Y,
        ),
        (REMOTE, "钱坤", "resident", "active", "active", VALID),
        (OTHER_CITY, "郑华", "resident", "active", "active", VALID),
        (NO_REGION, "冯丽", "resident", "active", "active", VALID),
    ];
    for (i, name, ty, st, card_status, expires) in people {
        let s = demo_ssn(i);
        let sex = if (s.as_bytes()[16] - b'0') % 2 == 1 {
            "M"
        } else {
            "F"
        };
        let born = format!("{}-{}-{}", &s[6..10], &s[10..12], &s[12..14]);
        persons.push_str(&format!(
            "{s},{name},{sex},{born},{ty},{st},{}\n",
            region(i)
        ));
        if !card_status.is_empty() {
            let expires = expires.date();
            cards.push_str(&format!(
                "{},{},{s},3,2010-01-01,{expires},{card_status}\n",
                demo_card_no(i),
                demo_pan(i)
            ));
        }
    }
    let links = format!(
        "holder_ssn,member_ssn,relation,status,channel,operator,created_at,revoked_at\n\
         {},{},spouse,active,window,clerk7,2025-03-01T09:00:00Z,\n\
         {},{},child,active,hospital,clerk9,2025-04-01T09:00:00Z,\n",
        demo_ssn(HOLDER),
        demo_ssn(SPOUSE),
        demo_ssn(HOLDER2),
        demo_ssn(MEMBER2)
    );
    let accounts = format!(
        "holder_ssn,balance_fen\n{},123456\n{},5000\n{},777\n",
        demo_ssn(HOLDER),
        demo_ssn(HOLDER2),
        demo_ssn(PARENT)
    );
    let mut contributions =
        String::from("ssn,month,employer,base_fen,employee_fen,employer_fen,account_fen\n");
    for m in 1..=6 {
        contributions.push_str(&format!(
            "{},2026-{m:02},杭州西湖科技有限公司,800000,16000,64000,35200\n",
            demo_ssn(HOLDER)
        ));
    }
    let files = [
        ("persons.csv", persons),
        ("cards.csv", cards),
        ("links.csv", links),
        ("accounts.csv", accounts),
        ("contributions.csv", contributions),
    ];
    files
        .iter()
        .map(|(n, body)| {
            let p = dir.join(n);
            std::fs::write(&p, body).unwrap();
            p
        })
        .collect()
}

pub mod chromedriver;

/// Waits for a state that no event announces (a counter in `status`, a
/// file another process writes, a process gone): asks `check` every 20 ms
/// until it gives a value, and fails the test with `what` when it has not
/// within `limit`.
pub async fn eventually<T>(
    what: &str,
    limit: std::time::Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// [`eventually`] for code outside a runtime (or inside `block_in_place`):
/// asks `check` every 20 ms until it gives a value, and fails the test
/// with `what` when it has not within `limit`.
pub fn eventually_sync<T>(
    what: &str,
    limit: std::time::Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A child process killed (and reaped) when the test lets go of it, also
/// when the test fails first.
pub struct Kill(pub std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
pub mod pg;
pub mod sqlite3;

/// The registry backends the behavioural suite runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A registry for one test on either backend: a SQLite file in a
/// temporary directory, or a new database on the suite's PostgreSQL.
pub struct Fx {
    pub db: cardlink::registry::Database,
    pub backend: Backend,
    pub dir: tempfile::TempDir,
    _pg: Option<pg::TestDb>,
}

impl Fx {
    /// An empty registry; `None` when the backend is not available here
    /// (the test then says it was skipped).
    pub fn empty(backend: Backend, test: &str) -> Option<Fx> {
        let dir = tempfile::tempdir().unwrap();
        let (db, pg) = match backend {
            Backend::Sqlite => (dir.path().join("registry.db").into(), None),
            Backend::Postgres => {
                let t = pg::database(test)?;
                (
                    cardlink::registry::Database::Postgres(t.url.clone()),
                    Some(t),
                )
            }
        };
        let fx = Fx {
            db,
            backend,
            dir,
            _pg: pg,
        };
        drop(fx.open());
        Some(fx)
    }

    /// A registry with the fixture imported.
    pub fn fixture(backend: Backend, test: &str) -> Option<Fx> {
        let fx = Self::empty(backend, test)?;
        let csv_dir = fx.dir.path().join("csv");
        std::fs::create_dir_all(&csv_dir).unwrap();
        fx.open().import(&fixture_csv(&csv_dir), "test").unwrap();
        Some(fx)
    }

    pub fn open(&self) -> Registry {
        self.open_with(&OpenOptions::default())
    }

    pub fn open_with(&self, opts: &OpenOptions) -> Registry {
        Registry::open_database(&self.db, opts).unwrap()
    }

    /// The `database` setting's text.
    pub fn setting(&self) -> String {
        String::from(self.db.clone())
    }

    /// Plain SQL (an administrator's edit) with `$1`.. text parameters, on
    /// a connection of its own; returns the rows changed.
    pub fn exec(&self, sql: &str, params: &[&str]) -> i64 {
        self.run(sql, params, false)
    }

    /// The first column (an integer) of a query's one row.
    pub fn count(&self, sql: &str, params: &[&str]) -> i64 {
        self.run(sql, params, true)
    }

    fn run(&self, sql: &str, params: &[&str], count: bool) -> i64 {
        match &self.db {
            cardlink::registry::Database::Sqlite(path) => {
                let c = rusqlite::Connection::open(path).unwrap();
                c.pragma_update(None, "foreign_keys", true).unwrap();
                let p = rusqlite::params_from_iter(params.iter());
                if count {
                    c.query_row(sql, p, |r| r.get(0)).unwrap()
                } else {
                    c.execute(sql, p).unwrap() as i64
                }
            }
            cardlink::registry::Database::Postgres(url) => {
                let params: Vec<String> = params.iter().map(|s| s.to_string()).collect();
                pg::run(url, sql, &params, count)
            }
        }
    }
}

/// [`on_both_backends`] for `async fn name(Backend)` with tokio's paused
/// clock (the in-process daemon's tests) on SQLite. On PostgreSQL the
/// daemon awaits the server on its own runtime, where a paused clock would
/// jump ahead at every network wait (and fire the calls' time bounds): the
/// clock runs there.
#[macro_export]
macro_rules! on_both_backends_paused {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(start_paused = true)]
                async fn sqlite() {
                    super::$name($crate::common::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::common::Backend::Postgres).await
                }
            }
        )*
    };
}

/// Runs a behavioural test `fn name(Backend)` on both backends: the tests
/// `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn sqlite() {
                    super::$name($crate::common::Backend::Sqlite)
                }
                #[test]
                fn postgres() {
                    super::$name($crate::common::Backend::Postgres)
                }
            }
        )*
    };
}

/// A registry file with the fixture imported.
pub fn fixture_db(dir: &Path) -> PathBuf {
    let db = dir.join("registry.db");
    let mut reg = Registry::open(&db, &OpenOptions::default()).unwrap();
    let csv_dir = dir.join("csv");
    std::fs::create_dir_all(&csv_dir).unwrap();
    reg.import(&fixture_csv(&csv_dir), "test").unwrap();
    db
}

// ---------------------------------------------------------------------------
// In-process daemon: `cardlink::daemon::run` on the test's runtime, readers
// on in-memory ports, logs captured. Run these tests with
// `#[tokio::test(start_paused = true)]`: nothing waits on the wall clock.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use cardlink::config::Config;
use cardlink::daemon::{self, Update};
use cardlink::sim::{SimCard, VirtualPort, VirtualPorts};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

/// A log that tests can read and wait on.
#[derive(Clone, Default)]
pub struct Log(Arc<(Mutex<String>, Condvar)>);

impl Log {
    pub fn push(&self, text: &str) {
        let (m, c) = &*self.0;
        m.lock().unwrap().push_str(text);
        c.notify_all();
    }
    pub fn text(&self) -> String {
        self.0 .0.lock().unwrap().clone()
    }
    /// Blocks until the log contains `needle` (at most `limit`, a bound
    /// against hanging, not a timing).
    pub fn wait_for(&self, needle: &str, limit: Duration) -> bool {
        let (m, c) = &*self.0;
        let guard = m.lock().unwrap();
        let (g, _) = c
            .wait_timeout_while(guard, limit, |t| !t.contains(needle))
            .unwrap();
        g.contains(needle)
    }
}

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.push(&String::from_utf8_lossy(buf));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `cardlinkd --check-config` on `text`: (success, stdout, stderr).
pub fn check_config(text: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cardlinkd"))
        .args(["--check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Runs `cardlinkctl db --database DB import FILES...`: (exit code, stderr).
pub fn ctl_import(db: &Path, files: &[PathBuf]) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cardlinkctl"))
        .args(["db", "--database"])
        .arg(db)
        .arg("import")
        .args(files)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// The configuration text of a test daemon.
pub fn config_text(
    dir: &Path,
    db: impl Into<cardlink::registry::Database>,
    socket: &Path,
    readers: &[(&str, &str, &str)],
    extra: &str,
) -> String {
    let mut text = format!(
        "database = {:?}\n{extra}\n[socket]\npath = {:?}\nmode = \"0600\"\n",
        String::from(db.into()),
        socket
    );
    for (name, mode, enc) in readers {
        text.push_str(&reader_toml(dir, name, mode, enc));
    }
    text
}

/// A reader line in the config: (name, mode, encoding).
pub fn reader_toml(dir: &Path, name: &str, mode: &str, encoding: &str) -> String {
    format!(
        "[[reader]]\nname = \"{name}\"\npath = {:?}\nmode = \"{mode}\"\nencoding = \"{encoding}\"\n",
        dir.join(name)
    )
}

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub db: PathBuf,
    /// The configuration text it runs with.
    pub config: String,
    pub log: Log,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), daemon::DaemonError>>>,
    updates: tokio::sync::mpsc::Sender<Update>,
    /// The registry when it is not the file `db` (PostgreSQL).
    pub fx: Option<Fx>,
    _log_guard: tracing::subscriber::DefaultGuard,
}

impl Daemon {
    /// Starts the daemon in-process on the fixture registry with readers
    /// `(name, mode, encoding)` plugged in. `extra` is appended to the
    /// config's top level (e.g. `role = "kiosk"`).
    pub async fn start(readers: &[(&str, &str, &str)], extra: &str) -> (Daemon, Vec<VirtualPort>) {
        let dir = tempfile::tempdir().unwrap();
        let db = fixture_db(dir.path());
        let ports = VirtualPorts::new();
        let plugged = readers.iter().map(|(n, _, _)| ports.plug(n)).collect();
        (
            Self::start_on(dir, db, readers, extra, ports.clone()).await,
            plugged,
        )
    }

    /// [`Daemon::start`] with real serial ports (tokio-serial) at
    /// `dir/NAME`, which do not exist until the test makes them.
    pub async fn start_with_serial_ports(
        readers: &[(&str, &str, &str)],
        extra: &str,
    ) -> (Daemon, ()) {
        let dir = tempfile::tempdir().unwrap();
        let db = fixture_db(dir.path());
        let d = Self::start_on(dir, db, readers, extra, Arc::new(daemon::SerialPorts)).await;
        (d, ())
    }

    /// [`Daemon::start`] on an existing registry file.
    pub async fn start_on(
        dir: tempfile::TempDir,
        db: PathBuf,
        readers: &[(&str, &str, &str)],
        extra: &str,
        ports: Arc<dyn daemon::OpenPort>,
    ) -> Daemon {
        Self::start_with(dir, db.clone().into(), db, None, readers, extra, ports).await
    }

    /// [`Daemon::start`] on the fixture registry of backend `b`; `None`
    /// when that backend is not available (the test says it is skipped).
    pub async fn start_backend(
        b: Backend,
        test: &'static str,
        readers: &[(&str, &str, &str)],
        extra: &str,
    ) -> Option<(Daemon, Vec<VirtualPort>)> {
        if b == Backend::Sqlite {
            return Some(Self::start(readers, extra).await);
        }
        // Opening a PostgreSQL registry blocks: off the test's runtime.
        let fx = tokio::task::spawn_blocking(move || Fx::fixture(b, test))
            .await
            .unwrap()?;
        let ports = VirtualPorts::new();
        let plugged = readers.iter().map(|(n, _, _)| ports.plug(n)).collect();
        let dir = tempfile::tempdir().unwrap();
        let unused = dir.path().join("not-sqlite");
        let database = fx.db.clone();
        let d = Self::start_with(dir, database, unused, Some(fx), readers, extra, ports).await;
        Some((d, plugged))
    }

    /// Starts `daemon::run` on `database` (`db`: its file when SQLite's;
    /// `fx`: the registry kept alive with the daemon).
    async fn start_with(
        dir: tempfile::TempDir,
        database: cardlink::registry::Database,
        db: PathBuf,
        fx: Option<Fx>,
        readers: &[(&str, &str, &str)],
        extra: &str,
        ports: Arc<dyn daemon::OpenPort>,
    ) -> Daemon {
        let log = Log::default();
        let sink = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("debug")
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        let socket = dir.path().join("display.sock");
        let text = config_text(dir.path(), database.clone(), &socket, readers, extra);
        let config = Config::parse(&text, "test").unwrap();
        // A socket file left by a daemon stopped in-process (the binary
        // removes its own on exit).
        let _ = std::fs::remove_file(&socket);
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let opts = cardlink::registry::OpenOptions {
            busy_timeout: Duration::from_millis(config.busy_timeout_ms),
            ..Default::default()
        };
        // Opening blocks (PostgreSQL on a runtime of its own): off the
        // test's runtime.
        let registry = tokio::task::spawn_blocking(move || {
            cardlink::registry::Registry::open_database(&database, &opts)
        })
        .await
        .unwrap()
        .unwrap();
        let (updates, rx) = tokio::sync::mpsc::channel(4);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(daemon::run(
            daemon::Daemon {
                listener,
                registry,
                config,
                ports,
                updates: rx,
            },
            shutdown.clone(),
        ));
        Daemon {
            dir,
            socket,
            db,
            config: text,
            log,
            shutdown,
            task: Some(task),
            updates,
            fx,
            _log_guard: guard,
        }
    }

    /// Plain SQL on the daemon's registry (see [`Fx::exec`]).
    pub fn exec(&self, sql: &str, params: &[&str]) -> i64 {
        match &self.fx {
            Some(fx) => fx.exec(sql, params),
            None => {
                let c = rusqlite::Connection::open(&self.db).unwrap();
                c.execute(sql, rusqlite::params_from_iter(params.iter()))
                    .unwrap() as i64
            }
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Applies a new configuration text, as SIGHUP does, and waits until
    /// the daemon has applied it.
    pub async fn reload(&mut self, text: String) {
        let config = Config::parse(&text, "test").unwrap();
        let (done, applied) = tokio::sync::oneshot::channel();
        self.updates
            .send(Update {
                config,
                applied: Some(done),
            })
            .await
            .unwrap();
        applied.await.unwrap();
        self.config = text;
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.socket).await
    }

    /// The typed library client.
    pub async fn typed(&self) -> cardlink::client::Client {
        cardlink::client::Client::connect(&self.socket)
            .await
            .unwrap()
    }

    /// Stops the daemon and hands back its directory and registry, for a
    /// restart on the same socket path.
    pub async fn stop_keep(mut self) -> (tempfile::TempDir, PathBuf) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (dir, self.db.clone())
    }

    /// Stops the daemon and returns its log.
    pub async fn stop(mut self) -> String {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
        self.log.text()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

// ---------------------------------------------------------------------------
// The real `cardlinkd` binary, for what only a process has: signals, the
// systemd notify protocol, its stderr log, real pseudo-terminals.

use std::process::{Child, Command, Stdio};

use cardlink::sim::PtyMaster;

pub struct Process {
    pub child: Child,
    /// Everything the daemon wrote to stderr (drained by a thread so the
    /// pipe never fills).
    pub log: Log,
    log_reader: Option<std::thread::JoinHandle<()>>,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub db: PathBuf,
    pub config: PathBuf,
    /// The notify socket the daemon reports to (READY=1, STATUS=, WATCHDOG=1).
    pub notify: std::os::unix::net::UnixDatagram,
}

/// Reads datagrams from the notify socket until one contains `want`;
/// returns every message read. `limit` bounds the wait.
pub fn recv_until(
    sock: &std::os::unix::net::UnixDatagram,
    want: &str,
    limit: Duration,
) -> Vec<String> {
    let end = std::time::Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while std::time::Instant::now() < end {
        sock.set_read_timeout(Some(
            end.saturating_duration_since(std::time::Instant::now())
                .max(Duration::from_millis(1)),
        ))
        .unwrap();
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).to_string();
                let done = msg.contains(want);
                got.push(msg);
                if done {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    got
}

impl Process {
    /// Starts cardlinkd on the fixture registry with pty readers plugged in
    /// first, and returns once it has sent READY=1.
    pub fn start(readers: &[(&str, &str, &str)], extra: &str) -> (Process, Vec<PtyMaster>) {
        Self::start_env(readers, extra, &[])
    }

    /// [`Process::start`] with extra environment variables.
    pub fn start_env(
        readers: &[(&str, &str, &str)],
        extra: &str,
        env: &[(&str, String)],
    ) -> (Process, Vec<PtyMaster>) {
        let dir = tempfile::tempdir().unwrap();
        let db = fixture_db(dir.path());
        Self::start_on(dir, db.clone().into(), db, readers, extra, env)
    }

    /// [`Process::start`] with the soft `RLIMIT_NOFILE` that systemd gives
    /// a unit without `LimitNOFILE=` (or another), the hard one unchanged.
    pub fn start_with_nofile(
        readers: &[(&str, &str, &str)],
        extra: &str,
        soft: u64,
    ) -> (Process, Vec<PtyMaster>) {
        let dir = tempfile::tempdir().unwrap();
        let db = fixture_db(dir.path());
        Self::start_full(dir, db.clone().into(), db, readers, extra, &[], Some(soft))
    }

    /// [`Process::start_env`] on the registry `database` (`db` is its
    /// file when it is SQLite's).
    pub fn start_on(
        dir: tempfile::TempDir,
        database: cardlink::registry::Database,
        db: PathBuf,
        readers: &[(&str, &str, &str)],
        extra: &str,
        env: &[(&str, String)],
    ) -> (Process, Vec<PtyMaster>) {
        Self::start_full(dir, database, db, readers, extra, env, None)
    }

    fn start_full(
        dir: tempfile::TempDir,
        database: cardlink::registry::Database,
        db: PathBuf,
        readers: &[(&str, &str, &str)],
        extra: &str,
        env: &[(&str, String)],
        nofile: Option<u64>,
    ) -> (Process, Vec<PtyMaster>) {
        let socket = dir.path().join("display.sock");
        let config = dir.path().join("cardlinkd.toml");
        let ptys = readers
            .iter()
            .map(|(name, _, _)| PtyMaster::open(Some(&dir.path().join(name))).unwrap())
            .collect();
        std::fs::write(
            &config,
            config_text(dir.path(), database, &socket, readers, extra),
        )
        .unwrap();
        let notify_path = dir.path().join("notify.sock");
        let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cardlinkd"));
        cmd.arg("--config")
            .arg(&config)
            // Whatever it creates by a relative name stays in the test's directory.
            .current_dir(dir.path())
            .env("RUST_LOG", "debug")
            .env("NOTIFY_SOCKET", &notify_path)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(soft) = nofile {
            soft_nofile(&mut cmd, soft);
        }
        let mut child = cmd.spawn().unwrap();
        let log = Log::default();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        let log_reader = std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                sink.push(&format!("{line}\n"));
            }
        });
        let got = recv_until(&notify, "READY=1", Duration::from_secs(20));
        assert!(
            got.iter().any(|m| m.contains("READY=1")),
            "daemon did not get ready: {got:?}\n{}",
            log.text()
        );
        (
            Process {
                child,
                log,
                log_reader: Some(log_reader),
                dir,
                socket,
                db,
                config,
                notify,
            },
            ptys,
        )
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.socket).await
    }

    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Rewrites the config, sends SIGHUP and waits until the daemon logged
    /// that it reloaded.
    pub fn reload(&self, text: &str) {
        let before = self.log.text().matches("configuration reloaded").count();
        std::fs::write(&self.config, text).unwrap();
        self.signal(libc::SIGHUP);
        let (m, c) = &*self.log.0;
        let g = m.lock().unwrap();
        let (g, _) = c
            .wait_timeout_while(g, Duration::from_secs(20), |t| {
                t.matches("configuration reloaded").count() == before
            })
            .unwrap();
        assert!(
            g.matches("configuration reloaded").count() > before,
            "no reload:\n{g}"
        );
    }

    /// SIGTERM and wait; returns the exit status and the daemon's whole
    /// stderr (the reader thread is joined, so nothing is cut off).
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        self.signal(libc::SIGTERM);
        let status = self.child.wait().unwrap();
        if let Some(t) = self.log_reader.take() {
            t.join().unwrap();
        }
        (status, self.log.text())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Client {
    pub lines: Lines<BufReader<OwnedReadHalf>>,
    pub w: OwnedWriteHalf,
}

impl Client {
    pub async fn connect(path: &Path) -> Client {
        let s = UnixStream::connect(path).await.unwrap();
        let (r, w) = s.into_split();
        Client {
            lines: BufReader::new(r).lines(),
            w,
        }
    }

    pub async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(10), self.lines.next_line())
            .await
            .expect("timed out waiting for a line")
            .unwrap()
            .expect("connection closed");
        serde_json::from_str(&line).unwrap()
    }

    /// Reads until a message of `class` arrives, returning it.
    pub async fn expect(&mut self, class: &str) -> Value {
        loop {
            let v = self.next().await;
            if v["class"] == class {
                return v;
            }
        }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).await.unwrap();
    }

    pub async fn request(&mut self, mut req: Value) -> Value {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1000);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        req["id"] = id.into();
        let mut line = serde_json::to_vec(&req).unwrap();
        line.push(b'\n');
        self.send_raw(&line).await;
        loop {
            let v = self.next().await;
            if v["class"] == "REPLY" && v["id"] == id {
                return v;
            }
        }
    }
}

/// Starts `cmd` with a soft `RLIMIT_NOFILE` of `soft` (the hard limit
/// unchanged), as systemd starts a unit without `LimitNOFILE=` (1024).
pub fn soft_nofile(cmd: &mut Command, soft: u64) {
    use std::os::unix::process::CommandExt;
    unsafe {
        cmd.pre_exec(move || {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            lim.rlim_cur = soft.min(lim.rlim_max);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Runs `cmd` as uid and gid 65534 (nobody) with no supplementary
/// groups: a local user on the wrong side of a privilege boundary. The
/// caller must be root.
pub fn as_nobody(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    unsafe {
        cmd.pre_exec(|| {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(65534) != 0
                || libc::setuid(65534) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// A test daemon's configuration `text` with this test's own uid made
/// privileged (full SSNs and names on the socket).
pub fn privileged_config(text: &str) -> String {
    let uid = unsafe { libc::getuid() };
    text.replace(
        "mode = \"0600\"\n",
        &format!("mode = \"0600\"\nprivileged_uids = [{uid}]\n"),
    )
}

/// The simulator's view of fixture person `i`.
pub fn sim_card(i: u64, name: &str) -> SimCard {
    let compact = |d: cardlink::Date| d.to_string().replace('-', "");
    SimCard {
        ssn: demo_ssn(i),
        card_no: demo_card_no(i),
        pan: Some(demo_pan(i)),
        name: name.into(),
        issued: "20100101".into(),
        expires: compact(days_from_today(Exp::Valid.days())),
        document: None,
    }
}

/// A `CARD_IC` frame with fixture person `i`'s card, named `name`.
pub fn card_frame(seq: u8, i: u64, name: &str) -> Vec<u8> {
    firmware_protocol::frame::encode_vec(
        seq,
        firmware_protocol::frame::Cmd::CardIc as u8,
        sim_card(i, name).record().as_bytes(),
    )
    .unwrap()
}

/// The full SSN text of fixture person `i`.
pub fn demo_ssn_full(i: u64) -> String {
    demo_ssn(i)
}

/// The reader's bytes of a capture, in order.
pub fn reader_stream(file: &cardlink::capture::CaptureFile) -> Vec<u8> {
    file.chunks()
        .filter(|c| c.dir == cardlink::capture::Direction::FromReader)
        .flat_map(|c| c.bytes.iter().copied())
        .collect()
}

/// What the frame decoder makes of `stream`: every valid frame in order
/// as (cmd, payload), the bytes it dropped as noise, and the bytes left
/// pending at the end.
pub fn scan_frames(stream: &[u8]) -> (Vec<(u8, Vec<u8>)>, usize, usize) {
    let (mut frames, mut noise, mut buf) = (Vec::new(), 0, stream);
    loop {
        match firmware_protocol::frame::scan(buf) {
            firmware_protocol::Scan::Frame {
                frame,
                skipped,
                consumed,
            } => {
                noise += skipped;
                frames.push((frame.cmd, frame.payload.to_vec()));
                buf = &buf[consumed..];
            }
            firmware_protocol::Scan::NeedMore { discard } => {
                return (frames, noise + discard, buf.len() - discard);
            }
        }
    }
}
