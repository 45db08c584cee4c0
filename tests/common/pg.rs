//! PostgreSQL for the tests.
//!
//! * The suite's server: `CARDLINK_TEST_PG`, an administrator's URL (the
//!   one `.ci/run` starts and exports), or else a private server this test
//!   binary starts once from the machine's PostgreSQL binaries (`initdb`,
//!   `postgres`) in a temporary directory, stopped when the binary exits.
//!   Each test gets a new database on it ([`database`]).
//! * [`Server`]: a private server a test starts, stops and starts again
//!   (the outage test) or runs with TLS (the TLS test).
//!
//! Without either, a test says it was skipped, except under `CI=true`,
//! where it fails: CI must run the PostgreSQL half of the suite.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// `None` (after saying so) when the test cannot run here; panics under
/// `CI=true`.
pub fn skip(test: &str, why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: PostgreSQL is required under CI=true: {why}");
    }
    eprintln!("{test}: skipped: {why}");
}

/// The directory of PostgreSQL's server binaries.
pub fn bindir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("CARDLINK_PG_BINDIR") {
        let d = PathBuf::from(d);
        return (d.join("postgres").exists() && d.join("initdb").exists()).then_some(d);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("postgres").exists() && b.join("initdb").exists())
        .collect();
    found.sort();
    found.pop()
}

/// The uid/gid to run the server as: root may not, so `postgres`.
fn server_user() -> Option<(u32, u32)> {
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = std::ffi::CString::new("postgres").unwrap();
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !pw.is_null(),
        "running as root and there is no 'postgres' user to run the server as"
    );
    Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

fn as_server_user(cmd: &mut Command, die_with_parent: bool) {
    let user = server_user();
    unsafe {
        cmd.pre_exec(move || {
            if let Some((uid, gid)) = user {
                if libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if die_with_parent {
                // After setuid, which clears it.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT);
            }
            Ok(())
        });
    }
}

fn chown(path: &Path) {
    if let Some((uid, gid)) = server_user() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    }
}

/// A port for a new server. PostgreSQL cannot be given port 0 and say
/// which it took (`port` must be 1 to 65535), so a free port is probed and
/// the start is tried again on another when a process took it meanwhile
/// (see [`Server::init_with`]).
fn probe_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private PostgreSQL server in a temporary directory.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
    extra: Vec<String>,
    /// The server stops when the thread that started it ends (the suite's
    /// server, started from a thread that lives as long as the process);
    /// a test's own server stops when it is dropped.
    die_with_starter: bool,
    child: Mutex<Option<Child>>,
}

impl Server {
    /// `initdb` a new cluster (trust authentication, C locale). `None`
    /// when there are no PostgreSQL binaries. `hba` replaces the
    /// authentication rules when given.
    pub fn init(hba: Option<&str>, extra: &[&str]) -> Option<Server> {
        Self::init_in(tempfile::tempdir().unwrap(), hba, extra)
    }

    fn init_in(dir: tempfile::TempDir, hba: Option<&str>, extra: &[&str]) -> Option<Server> {
        Self::init_with(dir, hba, extra, false)
    }

    fn init_with(
        dir: tempfile::TempDir,
        hba: Option<&str>,
        extra: &[&str],
        die_with_starter: bool,
    ) -> Option<Server> {
        let bin = bindir()?;
        chown(dir.path());
        let data = dir.path().join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        as_server_user(&mut initdb, false);
        let out = initdb.output().unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(hba) = hba {
            std::fs::write(data.join("pg_hba.conf"), hba).unwrap();
        }
        let mut s = Server {
            port: probe_port(),
            dir,
            bin,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            die_with_starter,
            child: Mutex::new(None),
        };
        // The probed port may be taken between the probe and the server's
        // bind: then another.
        for _ in 0..5 {
            match s.try_start() {
                Ok(()) => return Some(s),
                Err(log) if log.contains("Address already in use") => s.port = probe_port(),
                Err(log) => panic!("postgres exited during start:\n{log}"),
            }
        }
        panic!("postgres found no free port in 5 attempts")
    }

    /// The data directory.
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&self) {
        if let Err(log) = self.try_start() {
            panic!("postgres exited during start:\n{log}");
        }
    }

    /// Starts the server and waits until it accepts connections; its log
    /// when it exits first.
    fn try_start(&self) -> Result<(), String> {
        let mut cmd = Command::new(self.bin.join("postgres"));
        cmd.arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ))
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=60"])
            .args(["-c", "lc_messages=C"])
            .args(self.extra.iter().flat_map(|e| ["-c", e.as_str()]))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        as_server_user(&mut cmd, self.die_with_starter);
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        *self.child.lock().unwrap() = Some(child);
        // The server says when it accepts connections; its log is read (and
        // then drained, so the pipe never fills) by a thread of its own.
        let (ready, started) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut log = String::new();
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                // "... ready to accept connections", or "... ready to
                // accept read-only connections" (a hot standby).
                if line.contains("database system is ready to accept") {
                    let _ = ready.send(Ok(()));
                } else if log.len() < 64 * 1024 {
                    log.push_str(&line);
                    log.push('\n');
                }
            }
            let _ = ready.send(Err(log));
        });
        match started.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(log)) => {
                if let Some(mut c) = self.child.lock().unwrap().take() {
                    let _ = c.wait();
                }
                Err(log)
            }
            Err(e) => panic!("postgres did not start in 60 s: {e}"),
        }
    }

    /// A hot standby of `primary`: `pg_basebackup -R` (streaming the WAL,
    /// replication connection as `postgres` over TCP, which the primary's
    /// `pg_hba.conf` must trust) into a new directory, started on a port of
    /// its own with `extra` settings. It follows the primary at once.
    pub fn standby_of(primary: &Server, extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        chown(dir.path());
        let data = dir.path().join("data");
        let mut backup = Command::new(primary.bin.join("pg_basebackup"));
        backup
            .arg("-D")
            .arg(&data)
            .args(["-h", "127.0.0.1", "-p", &primary.port.to_string()])
            .args(["-U", "postgres", "-X", "stream", "-R", "--no-sync"])
            // An immediate checkpoint, not one spread over minutes.
            .args(["-c", "fast"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        as_server_user(&mut backup, false);
        let out = backup.output().unwrap();
        assert!(
            out.status.success(),
            "pg_basebackup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut s = Server {
            port: probe_port(),
            dir,
            bin: primary.bin.clone(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            die_with_starter: false,
            child: Mutex::new(None),
        };
        for _ in 0..5 {
            match s.try_start() {
                Ok(()) => return s,
                Err(log) if log.contains("Address already in use") => s.port = probe_port(),
                Err(log) => panic!("standby exited during start:\n{log}"),
            }
        }
        panic!("standby found no free port in 5 attempts")
    }

    /// Stops the server as `pg_ctl stop -m immediate` does (SIGQUIT: no
    /// checkpoint, every connection cut): a primary lost.
    pub fn stop_immediately(&self) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGQUIT) };
            let _ = c.wait();
        }
    }

    /// `pg_ctl promote -w`: a standby becomes a primary; returns once it
    /// accepts writes.
    pub fn promote(&self) {
        let mut cmd = Command::new(self.bin.join("pg_ctl"));
        cmd.arg("promote")
            .arg("-w")
            .arg("-D")
            .arg(self.data())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        as_server_user(&mut cmd, false);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "pg_ctl promote failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the server (fast shutdown) and waits until it has exited.
    pub fn stop(&self) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
            let _ = c.wait();
        }
    }

    /// The superuser's URL for database `db` over TCP.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The suite's server: `CARDLINK_TEST_PG` or a private one (see the
/// module docs). `Err(why)` when neither is possible.
fn suite_server() -> Result<String, String> {
    static URL: OnceLock<Result<String, String>> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("CARDLINK_TEST_PG") {
            return Ok(url);
        }
        if bindir().is_none() {
            return Err("no PostgreSQL: set CARDLINK_TEST_PG to an administrator's URL, or install postgresql".into());
        }
        // Started from a thread that lives as long as the process, so the
        // server (which dies with the thread that started it) outlives
        // every test and stops when the test binary exits.
        let (tx, rx) = std::sync::mpsc::channel();
        // Its directory is named after this process; those of finished
        // runs are removed here.
        let base = std::env::temp_dir();
        if let Ok(entries) = std::fs::read_dir(&base) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if let Some(pid) = name.strip_prefix("cardlink-test-pg-").and_then(|p| p.split('.').next()) {
                    if !Path::new(&format!("/proc/{pid}")).exists() {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
        }
        std::thread::spawn(move || {
            let dir = tempfile::Builder::new()
                .prefix(&format!("cardlink-test-pg-{}.", std::process::id()))
                .tempdir()
                .unwrap();
            // Never dropped: the directory stays until a later run removes it.
            let server = Server::init_with(dir, None, &[], true).expect("PostgreSQL binaries");
            tx.send(server.url("postgres")).unwrap();
            loop {
                std::thread::park();
            }
        });
        rx.recv().map_err(|e| format!("private PostgreSQL did not start: {e}"))
    })
    .clone()
}

/// Runs `job` with a new client of `url`, on a thread and runtime of its
/// own (so callable from any test, async or not).
fn with_client<T: Send + 'static>(
    url: &str,
    job: impl AsyncFnOnce(&tokio_postgres::Client) -> T + Send + 'static,
) -> T {
    let url = url.to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
            tokio::spawn(conn);
            job(&client).await
        })
    })
    .join()
    .unwrap()
}

/// Runs SQL as the administrator on `url`.
pub fn admin(url: &str, sql: &str) {
    let sql = sql.to_string();
    with_client(url, async move |c| {
        c.batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
    })
}

/// A database of its own for one test, dropped afterwards.
pub struct TestDb {
    admin: String,
    pub name: String,
    /// The database's URL.
    pub url: String,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (url, name) = (self.admin.clone(), self.name.clone());
        let _ = std::panic::catch_unwind(move || {
            admin(
                &url,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            )
        });
    }
}

/// A new database on the suite's server, or `None` (skipped).
pub fn database(test: &str) -> Option<TestDb> {
    let admin_url = match suite_server() {
        Ok(u) => u,
        Err(why) => {
            skip(test, &why);
            return None;
        }
    };
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = format!(
        "cardlink_t{}_{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    admin(&admin_url, &format!("CREATE DATABASE {name}"));
    let url = match admin_url.rsplit_once('/') {
        Some((base, rest)) => {
            let query = rest
                .split_once('?')
                .map(|(_, q)| format!("?{q}"))
                .unwrap_or_default();
            format!("{base}/{name}{query}")
        }
        None => panic!("CARDLINK_TEST_PG is not a URL with a database: {admin_url}"),
    };
    Some(TestDb {
        admin: admin_url,
        name,
        url,
    })
}

/// A private server for a test, or `None` (skipped).
pub fn server(test: &str, hba: Option<&str>, extra: &[&str]) -> Option<Server> {
    let s = Server::init(hba, extra);
    if s.is_none() {
        skip(test, "no PostgreSQL server binaries (install postgresql)");
    }
    s
}

/// Runs `sql` with text parameters on `url`; returns the rows' first
/// column as i64 when `count`, else the rows affected.
pub fn run(url: &str, sql: &str, params: &[String], count: bool) -> i64 {
    let (sql, params) = (sql.to_string(), params.to_vec());
    with_client(url, async move |client| {
        let p: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
            .iter()
            .map(|s| s as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        if count {
            client.query_one(&sql, &p).await.map(|r| r.get::<_, i64>(0))
        } else {
            client.execute(&sql, &p).await.map(|n| n as i64)
        }
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
    })
}
