//! The fleet view (issue 24): boxes write heartbeats into the registry they
//! share and `cardlinkctl fleet` lists them, marking one offline after
//! three missed heartbeats. Real `cardlinkd` processes, the real
//! `cardlinkctl`, a short heartbeat interval, condition waits.

mod common;

use std::time::Duration;

use cardlink::registry::Database;
use common::*;
use serde_json::Value;

/// `cardlinkctl fleet --database DB --json`, parsed.
fn fleet_json(db: &Database) -> Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cardlinkctl"))
        .args(["fleet", "--json", "--database"])
        .arg(String::from(db.clone()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cardlinkctl fleet: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `cardlinkctl fleet --database DB` (the table).
fn fleet_text(db: &Database) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cardlinkctl"))
        .args(["fleet", "--database"])
        .arg(String::from(db.clone()))
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The box named `name` in a `fleet --json` document.
fn find<'a>(doc: &'a Value, name: &str) -> Option<&'a Value> {
    doc["boxes"].as_array()?.iter().find(|b| b["name"] == name)
}

/// A daemon process named `name` on `db` with one frame reader, beating
/// every second.
fn boxed(db: &Database, name: &str, role: &str) -> (Process, Vec<cardlink::sim::PtyMaster>) {
    let dir = tempfile::tempdir().unwrap();
    let unused = dir.path().join("no-sqlite-here");
    Process::start_on(
        dir,
        db.clone(),
        unused,
        &[("r1", "frame", "utf-8")],
        &format!("name = \"{name}\"\nrole = \"{role}\"\n[fleet]\nheartbeat_s = 1\n"),
        &[],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_boxes_on_one_postgresql_registry_are_listed_and_a_stopped_one_goes_offline() {
    let test = "two_boxes_on_one_postgresql_registry_are_listed_and_a_stopped_one_goes_offline";
    let Some(pgdb) = tokio::task::spawn_blocking(move || pg::database(test))
        .await
        .unwrap()
    else {
        return;
    };
    let db = Database::Postgres(pgdb.url.clone());
    let (window, _w_ptys) = boxed(&db, "window-1", "window");
    let (kiosk, _k_ptys) = boxed(&db, "kiosk-7", "kiosk");

    let both = |d: &Value| {
        let (w, k) = (find(d, "window-1")?, find(d, "kiosk-7")?);
        (w["online"] == true && k["online"] == true && w["readers_up"] == 1 && k["readers_up"] == 1)
            .then(|| d.clone())
    };
    let doc = eventually(
        "both boxes listed online with their reader up",
        Duration::from_secs(30),
        async || both(&fleet_json(&db)),
    )
    .await;
    let w = find(&doc, "window-1").unwrap();
    assert_eq!(w["role"], "window");
    assert_eq!(find(&doc, "kiosk-7").unwrap()["role"], "kiosk");
    assert_eq!(w["heartbeat_s"], 1);
    assert_eq!(w["readers_total"], 1);
    assert_eq!(w["readers"][0]["name"], "r1");
    assert_eq!(w["readers"][0]["state"], "connected");
    assert_eq!(w["version"], env!("CARGO_PKG_VERSION"));
    assert!(w["printer"].is_null(), "a box without a printer: {w}");
    assert!(w["last_seen"].as_str().is_some_and(|t| t.ends_with('Z')));

    // The kiosk stops without a goodbye (killed): three missed
    // heartbeats later it is offline; the window stays online.
    let mut kiosk = kiosk;
    kiosk.child.kill().unwrap();
    kiosk.child.wait().unwrap();
    let doc = eventually(
        "the stopped box listed offline",
        Duration::from_secs(30),
        async || {
            let d = fleet_json(&db);
            (find(&d, "kiosk-7")?["online"] == false).then_some(d)
        },
    )
    .await;
    let k = find(&doc, "kiosk-7").unwrap();
    assert!(
        k["seen_s_ago"].as_i64().unwrap() > 3,
        "offline only after three missed heartbeats of 1 s: {k}"
    );
    // The window keeps beating: online in this same listing and after.
    assert_eq!(find(&doc, "window-1").unwrap()["online"], true, "{doc}");
    let text = fleet_text(&db);
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} not listed:\n{text}"))
            .to_string()
    };
    assert!(line("kiosk-7").contains("OFFLINE"), "{text}");
    assert!(line("window-1").contains("online"), "{text}");
    assert!(line("window-1").contains("1/1"), "{text}");
    assert!(text.contains("2 box(es), 1 online, 1 offline"), "{text}");
    drop(window);
    drop(kiosk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_the_fleet_is_the_one_box() {
    let (d, _ptys) = Process::start(
        &[("r1", "frame", "utf-8")],
        "name = \"window-solo\"\n[fleet]\nheartbeat_s = 1\n",
    );
    let db = Database::Sqlite(d.db.clone());
    // A box retired 40 days ago: the next heartbeat prunes it.
    rusqlite::Connection::open(&d.db)
        .unwrap()
        .execute(
            "INSERT INTO fleet_box VALUES ('retired', 'kiosk', '0.0.9', 15, '[]', 0, 0, NULL, NULL, 1, \
             strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-40 days'))",
            [],
        )
        .unwrap();
    let doc = eventually(
        "the one box listed online, the retired one pruned",
        Duration::from_secs(30),
        async || {
            let d = fleet_json(&db);
            (find(&d, "window-solo")?["readers_up"] == 1 && find(&d, "retired").is_none())
                .then_some(d)
        },
    )
    .await;
    let boxes = doc["boxes"].as_array().unwrap();
    assert_eq!(boxes.len(), 1, "{doc}");
    assert_eq!(boxes[0]["online"], true);
    assert_eq!(boxes[0]["role"], "window");
    assert!(fleet_text(&db).contains("window-solo"));
}

/// Issue 24: a box's printer state is in its heartbeat, listed by
/// `cardlinkctl fleet` (JSON and table), and follows the printer (the
/// simulated one runs out of paper).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_boxs_printer_state_is_listed() {
    use cardlink::printer::{Encoding, PrinterState};
    use std::sync::{Arc, Mutex};
    let pty = cardlink::sim::PtyMaster::open(None).unwrap();
    let extra = format!(
        "name = \"kiosk-print\"\nrole = \"kiosk\"\n[fleet]\nheartbeat_s = 1\n[printer]\npath = {:?}\nstatus_interval_s = 1\n",
        pty.slave_path()
    );
    let state = Arc::new(Mutex::new(PrinterState::Ok));
    let sim = tokio::spawn(cardlink::sim::play_printer(
        pty,
        state.clone(),
        Encoding::Gbk,
        |_| {},
    ));
    let (d, _ptys) = Process::start(&[("r1", "frame", "utf-8")], &extra);
    let db = Database::Sqlite(d.db.clone());
    eventually(
        "the printer ok in the fleet",
        Duration::from_secs(30),
        async || (find(&fleet_json(&db), "kiosk-print")?["printer"] == "ok").then_some(()),
    )
    .await;
    *state.lock().unwrap() = PrinterState::PaperEnd;
    eventually(
        "paper end in the fleet",
        Duration::from_secs(30),
        async || (find(&fleet_json(&db), "kiosk-print")?["printer"] == "paper_end").then_some(()),
    )
    .await;
    let text = fleet_text(&db);
    assert!(
        text.lines().next().unwrap_or_default().contains("PRINTER"),
        "{text}"
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("kiosk-print"))
        .unwrap_or_else(|| panic!("not listed:\n{text}"));
    assert!(line.contains("paper_end"), "{text}");
    sim.abort();
}

/// A heartbeat that cannot be written (its table gone) is logged once and
/// counted as failed, and the box goes on reading cards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_heartbeat_is_counted_and_reading_goes_on() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (d, mut ptys) = Process::start(
        &[("r1", "frame", "utf-8")],
        "[metrics]\nlisten = \"127.0.0.1:0\"\n[fleet]\nheartbeat_s = 1\n",
    );
    let mut c = d.client().await;
    while c.expect("READER").await["state"] != "connected" {}
    rusqlite::Connection::open(&d.db)
        .unwrap()
        .execute_batch("DROP TABLE fleet_box")
        .unwrap();
    assert!(
        d.log
            .wait_for("fleet heartbeat not written", Duration::from_secs(20)),
        "{}",
        d.log.text()
    );
    let text = d.log.text();
    let at = text.find("serving metrics on http://").unwrap() + 26;
    let addr = text[at..].split("/metrics").next().unwrap().to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut scrape = String::new();
    s.read_to_string(&mut scrape).await.unwrap();
    let failed: f64 = scrape
        .lines()
        .find_map(|l| l.strip_prefix("cardlink_heartbeats_total{result=\"failed\"} "))
        .unwrap_or_else(|| panic!("no failed heartbeats counted:\n{scrape}"))
        .parse()
        .unwrap();
    assert!(failed >= 1.0);
    // Logged when it started failing, not at every beat.
    assert_eq!(
        d.log
            .text()
            .matches("fleet heartbeat not written; retrying")
            .count(),
        1
    );
    ptys[0]
        .write_all(&card_frame(1, HOLDER, "张伟"))
        .await
        .unwrap();
    assert_eq!(c.expect("CARD").await["outcome"], "ok");
}
