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

pub fn ssn(i: u64) -> Ssn {
    Ssn::parse(&demo_ssn(i)).unwrap()
}
pub fn card(i: u64) -> String {
    demo_card_no(i)
}
pub fn pan(i: u64) -> String {
    demo_pan(i)
}

/// Writes the fixture CSV files into `dir` and returns their paths.
pub fn fixture_csv(dir: &Path) -> Vec<PathBuf> {
    let mut persons = String::from("ssn,name,sex,birth_date,insurance_type,insurance_status\n");
    let mut cards = String::from("card_no,pan,ssn,generation,issued,expires,status\n");
    let people: [(u64, &str, &str, &str, &str, &str); 15] = [
        (HOLDER, "张伟", "employee", "active", "active", "2034-01-01"),
        (SPOUSE, "李娜", "resident", "active", "active", "2034-01-01"),
        (
            CHILD,
            "张小明",
            "resident",
            "active",
            "active",
            "2034-01-01",
        ),
        (
            PARENT,
            "张建华",
            "employee",
            "active",
            "active",
            "2034-01-01",
        ),
        (UNINSURED, "王芳", "none", "ended", "active", "2034-01-01"),
        (LOST, "刘强", "resident", "active", "lost", "2034-01-01"),
        (
            EXPIRED,
            "陈静",
            "resident",
            "active",
            "active",
            "2020-01-01",
        ),
        (FROZEN, "杨磊", "resident", "active", "frozen", "2034-01-01"),
        (
            CANCELLED,
            "黄丽",
            "resident",
            "active",
            "cancelled",
            "2034-01-01",
        ),
        (
            SUSPENDED,
            "赵军",
            "resident",
            "suspended",
            "active",
            "2034-01-01",
        ),
        (
            HOLDER2,
            "吴洋",
            "employee",
            "active",
            "active",
            "2034-01-01",
        ),
        (
            MEMBER2,
            "周勇",
            "resident",
            "active",
            "active",
            "2034-01-01",
        ),
        (NO_CARD, "徐艳", "resident", "active", "", ""),
        (
            HOLDER_SUSPENDED,
            "孙杰",
            "employee",
            "suspended",
            "active",
            "2034-01-01",
        ),
        (
            HOLDER_EXPIRED,
            "马娟",
            "employee",
            "active",
            "active",
            "2019-06-01",
        ),
    ];
    for (i, name, ty, st, card_status, expires) in people {
        let s = demo_ssn(i);
        let sex = if (s.as_bytes()[16] - b'0') % 2 == 1 {
            "M"
        } else {
            "F"
        };
        let born = format!("{}-{}-{}", &s[6..10], &s[10..12], &s[12..14]);
        persons.push_str(&format!("{s},{name},{sex},{born},{ty},{st}\n"));
        if !card_status.is_empty() {
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
// Daemon harness: the real cardlinkd binary, pty readers, socket clients.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cardlink::sim::{PtyMaster, SimCard};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

pub struct Daemon {
    pub child: Child,
    /// Everything the daemon wrote to stderr so far (drained by a thread so
    /// the pipe never fills).
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub db: PathBuf,
    pub config: PathBuf,
}

/// A reader line in the config: (name, mode, encoding).
pub fn reader_toml(dir: &Path, name: &str, mode: &str, encoding: &str) -> String {
    format!(
        "[[reader]]\nname = \"{name}\"\npath = {:?}\nmode = \"{mode}\"\nencoding = \"{encoding}\"\n",
        dir.join(name)
    )
}

impl Daemon {
    /// Starts cardlinkd on the fixture registry with pty readers
    /// `(name, mode, encoding)` plugged in first. `extra` is appended to the
    /// config's top level (e.g. `role = "kiosk"`).
    pub fn start(readers: &[(&str, &str, &str)], extra: &str) -> (Daemon, Vec<PtyMaster>) {
        Self::start_env(readers, extra, &[])
    }

    /// [`Daemon::start`] with extra environment variables for the daemon.
    pub fn start_env(
        readers: &[(&str, &str, &str)],
        extra: &str,
        env: &[(&str, String)],
    ) -> (Daemon, Vec<PtyMaster>) {
        let dir = tempfile::tempdir().unwrap();
        let db = fixture_db(dir.path());
        let socket = dir.path().join("display.sock");
        let config = dir.path().join("cardlinkd.toml");
        let mut text = format!(
            "database = {:?}\n{extra}\n[socket]\npath = {:?}\nmode = \"0600\"\n",
            db, socket
        );
        let mut ptys = Vec::new();
        for (name, mode, enc) in readers {
            text.push_str(&reader_toml(dir.path(), name, mode, enc));
            ptys.push(PtyMaster::open(Some(&dir.path().join(name))).unwrap());
        }
        std::fs::write(&config, text).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_cardlinkd"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "debug")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        for _ in 0..400 {
            if socket.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let mut child = child;
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        if !socket.exists() {
            std::thread::sleep(Duration::from_millis(200));
            panic!("daemon did not create its socket:\n{}", log.lock().unwrap());
        }
        (
            Daemon {
                child,
                log,
                dir,
                socket,
                db,
                config,
            },
            ptys,
        )
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub async fn client(&self) -> Client {
        let s = UnixStream::connect(&self.socket).await.unwrap();
        let (r, w) = s.into_split();
        Client {
            lines: BufReader::new(r).lines(),
            w,
        }
    }

    /// SIGTERM and wait; returns the exit status and the daemon's stderr.
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let log = self.log.lock().unwrap().clone();
        (status, log)
    }
}

impl Drop for Daemon {
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

/// The simulator's view of fixture person `i`.
pub fn sim_card(i: u64, name: &str) -> SimCard {
    SimCard {
        ssn: demo_ssn(i),
        card_no: demo_card_no(i),
        pan: Some(demo_pan(i)),
        name: name.into(),
        issued: "20100101".into(),
        expires: "20340101".into(),
    }
}

/// Opens a pty reader at the daemon's configured path for `name`.
pub fn plug(d: &Daemon, name: &str) -> PtyMaster {
    PtyMaster::open(Some(&d.path(name))).unwrap()
}

/// The full SSN text of fixture person `i`.
pub fn demo_ssn_full(i: u64) -> String {
    demo_ssn(i)
}
