//! Regression tests for the faults a probe of the running daemon found
//! (issue 10), each reproduced the way the probe met it: through the
//! socket, a reader port or the command line.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use firmware_protocol::frame::{encode_vec, scan, Cmd, Scan};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

fn frame(seq: u8, payload: &[u8]) -> Vec<u8> {
    encode_vec(seq, Cmd::CardIc as u8, payload).unwrap()
}

/// Reads host frames from a reader port until `n` ACKs arrived, or
/// `limit` of wall-clock time passed (then returns what it has).
async fn acks(port: &mut (impl AsyncRead + Unpin), n: usize, limit: Duration) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    let mut chunk = [0u8; 512];
    while got.len() < n {
        match tokio::time::timeout_at(deadline, port.read(&mut chunk)).await {
            Ok(Ok(k)) if k > 0 => buf.extend_from_slice(&chunk[..k]),
            _ => break,
        }
        while let Scan::Frame {
            frame, consumed, ..
        } = scan(&buf)
        {
            if frame.cmd == Cmd::Ack as u8 {
                got.push(frame.seq);
            }
            buf.drain(..consumed);
        }
    }
    got
}

// 1. A request written in pieces is not lost while events flow.
#[tokio::test(start_paused = true)]
async fn request_written_in_pieces_survives_events_racing_it() {
    let (d, _ports) = Daemon::start(&[], "").await;
    let mut swiper = d.client().await;
    let mut display = d.client().await;
    display.expect("VERSION").await;
    for n in 0..10u64 {
        let line = format!("{{\"id\":{n},\"cmd\":\"status\"}}\n");
        display.send_raw(&line.as_bytes()[..8]).await;
        // Another client's lookup publishes a CARD event: it reaches the
        // display while the display's request is half written.
        let r = swiper
            .request(json!({"cmd": "lookup", "number": card(HOLDER)}))
            .await;
        assert_eq!(r["ok"], true);
        let ev = display.next().await;
        assert_eq!(ev["class"], "CARD", "{ev}");
        display.send_raw(&line.as_bytes()[8..]).await;
        let reply = display.next().await;
        assert_eq!(
            (
                reply["class"].as_str(),
                reply["id"].as_u64(),
                reply["ok"].as_bool()
            ),
            (Some("REPLY"), Some(n), Some(true)),
            "{reply}"
        );
    }
}

fn audit_rows(db: &Path) -> i64 {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row("SELECT count(*) FROM audit", [], |r| r.get(0))
        .unwrap()
}

// 2. Another writer on the database: readers keep reading, ACKing and
// deduplicating; nothing is shown without its audit row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_registry_does_not_stall_readers_or_show_unaudited_reads() {
    let (d, mut ports) = Daemon::start(&[("r1", "frame", "utf-8")], "busy_timeout_ms = 2000").await;
    let mut c = d.client().await;
    let port = &mut ports[0];
    // A bulk import (or any writer) holds the write lock.
    let blocker = rusqlite::Connection::open(&d.db).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let before = audit_rows(&d.db);
    // Four swipes and one resend: all five are ACKed at once, although
    // each resolution waits for the lock (the old reader task waited 2 s
    // per swipe before reading the next frame).
    let people = [
        (HOLDER, "张伟"),
        (SPOUSE, "李娜"),
        (CHILD, "张小明"),
        (PARENT, "张建华"),
    ];
    for (k, (i, name)) in people.iter().enumerate() {
        port.write_all(&frame(k as u8 + 1, sim_card(*i, name).record().as_bytes()))
            .await
            .unwrap();
    }
    port.write_all(&frame(4, sim_card(PARENT, "张建华").record().as_bytes()))
        .await
        .unwrap();
    let got = acks(port, 5, Duration::from_millis(1500)).await;
    assert_eq!(
        got,
        vec![1, 2, 3, 4, 4],
        "ACKs while the registry is locked"
    );
    // The first read times out on the lock: an ERROR, never a CARD.
    let e = c.expect("ERROR").await;
    assert_eq!(e["code"], "database_busy", "{e}");
    // Released: the reads still queued are resolved, audited and shown, in order.
    blocker.execute_batch("COMMIT").unwrap();
    drop(blocker);
    let mut shown = Vec::new();
    while shown.len() < 3 {
        let v = c.next().await;
        match v["class"].as_str() {
            Some("CARD") => shown.push(v["ssn"].as_str().unwrap().to_string()),
            Some("ERROR") => assert_eq!(v["code"], "database_busy", "{v}"),
            _ => {}
        }
    }
    let want: Vec<String> = people[1..]
        .iter()
        .map(|(i, _)| ssn(*i).masked().to_string())
        .collect();
    assert_eq!(
        shown, want,
        "the timed-out first swipe is not shown, the rest are, once"
    );
    // Every CARD shown has its audit row; the refused read has none.
    assert_eq!(audit_rows(&d.db) - before, 3);
    let st = c.request(json!({"cmd": "status"})).await;
    assert_eq!(st["result"]["readers"][0]["duplicates"], 1);
}

// 3. An invalid log_level is a configuration error.
#[test]
fn invalid_log_level_is_refused_by_check_config_and_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    let db = dir.path().join("reg.db");
    for (level, ok) in [
        ("verbose!!", false),
        ("", false),
        ("cardlink=loud", false),
        ("info", true),
        ("warn,cardlink=debug", true),
    ] {
        std::fs::write(&cfg, format!("database = {db:?}\nlog_level = {level:?}\n")).unwrap();
        // A bad level must also stop a real start (a good one would run on).
        let runs: &[&[&str]] = if ok {
            &[&["--check-config"]]
        } else {
            &[&["--check-config"], &[]]
        };
        for args in runs {
            let out = Command::new(env!("CARGO_BIN_EXE_cardlinkd"))
                .args(*args)
                .arg("--config")
                .arg(&cfg)
                .env_remove("RUST_LOG")
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            if ok {
                if !args.is_empty() {
                    assert!(out.status.success(), "{level}: {err}");
                }
            } else {
                assert!(!out.status.success(), "{level} {args:?} accepted");
                assert!(err.contains("log_level"), "{level}: {err}");
            }
        }
    }
}

// 4. Mutual links are refused; a person both covered and covering shows both.
#[tokio::test(start_paused = true)]
async fn mutual_links_are_refused_and_both_sides_are_shown() {
    let (d, _ports) = Daemon::start(&[], "").await;
    let mut c = d.client().await;
    let bind = |h: u64, m: u64, rel: &str| json!({"cmd": "bind", "holder": card(h), "member": card(m), "relation": rel, "consent": cardlink::registry::consent::CURRENT.version});
    // PARENT (employee) pays for HOLDER, who pays for SPOUSE.
    let r = c.request(bind(PARENT, HOLDER, "child")).await;
    assert_eq!(r["ok"], true, "{r}");
    let r = c.request(bind(HOLDER, PARENT, "parent")).await;
    assert_eq!(r["code"], "mutual_link", "{r}");
    // Around a longer loop: HOLDER pays for HOLDER2, who then may not pay
    // for PARENT (PARENT pays for HOLDER).
    let r = c.request(bind(HOLDER, HOLDER2, "child")).await;
    assert_eq!(r["ok"], true, "{r}");
    let r = c.request(bind(HOLDER2, PARENT, "parent")).await;
    assert_eq!(r["code"], "mutual_link", "{r}");
    // HOLDER: covered by PARENT and covering SPOUSE.
    let r = c
        .request(json!({"cmd": "lookup", "number": card(HOLDER)}))
        .await;
    let card = &r["result"];
    assert_eq!(card["role"], "both", "{card}");
    assert_eq!(card["payer"]["ssn"], ssn(PARENT).masked().to_string());
    assert_eq!(card["relation"], "child");
    assert_eq!(card["balance_fen"], 777, "the paying account is PARENT's");
    assert_eq!(card["members"][0]["ssn"], ssn(SPOUSE).masked().to_string());
}

#[test]
fn mutual_links_in_links_csv_are_refused_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let files = fixture_csv(dir.path());
    let links = dir.path().join("links.csv");
    let mut text = std::fs::read_to_string(&links).unwrap();
    text.push_str(&format!(
        "{},{},child,active,window,clerk7,2025-05-01T09:00:00Z,\n{},{},parent,active,window,clerk7,2025-05-02T09:00:00Z,\n",
        demo_ssn_full(PARENT),
        demo_ssn_full(HOLDER2),
        demo_ssn_full(HOLDER2),
        demo_ssn_full(PARENT),
    ));
    // HOLDER2 pays for MEMBER2 in the fixture; drop that so only the
    // mutual pair is wrong.
    let text: String = text
        .lines()
        .filter(|l| !l.contains(&demo_ssn_full(MEMBER2)))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&links, text).unwrap();
    let (code, err) = ctl_import(&dir.path().join("reg.db"), &files);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("links.csv:"), "{err}");
    assert!(err.contains("mutual link"), "{err}");
    assert!(err.contains("nothing imported"), "{err}");
}

// 5. Every change of a reader's open error is logged and shown.
#[tokio::test(start_paused = true)]
async fn each_change_of_reader_open_error_is_logged_and_shown() {
    let (d, _ports) = Daemon::start_with_serial_ports(&[("r1", "frame", "utf-8")], "").await;
    let path = d.path("r1");
    let mut c = d.client().await;
    let mut causes = Vec::new();
    let mut step = 0;
    while causes.len() < 3 {
        let r = c.expect("READER").await;
        let Some(e) = r["error"].as_str() else {
            continue;
        };
        if causes.last().is_some_and(|l: &String| l == e) {
            continue;
        }
        causes.push(e.to_string());
        let st = c.request(json!({"cmd": "status"})).await;
        assert_eq!(st["result"]["readers"][0]["last_error"], e, "{st}");
        assert_eq!(st["result"]["readers"][0]["state"], "disconnected");
        // Change the cause: a regular file, then a directory.
        step += 1;
        match step {
            1 => std::fs::write(&path, b"not a tty").unwrap(),
            2 => {
                std::fs::remove_file(&path).unwrap();
                std::fs::create_dir(&path).unwrap();
            }
            _ => {}
        }
    }
    assert!(causes[0].contains("No such file"), "{causes:?}");
    assert_ne!(causes[1], causes[0]);
    assert_ne!(causes[2], causes[1]);
    let log = d.stop().await;
    for cause in &causes {
        let lines = log.lines().filter(|l| l.contains(cause.as_str())).count();
        assert_eq!(lines, 1, "{cause} logged {lines} times:\n{log}");
    }
}

// 6. --check-config opens the database and refuses a shared device; a
// second daemon on the same registry does not start.
#[test]
fn check_config_checks_database_and_devices() {
    let dir = tempfile::tempdir().unwrap();
    let check = |text: String| {
        let (ok, _, err) = check_config(&text);
        (ok, err)
    };
    let (ok, err) = check("database = \"/nonexistent/dir/reg.db\"\n".into());
    assert!(!ok && err.contains("does not exist"), "{err}");
    let (ok, err) = check("database = \"/tmp\"\n".into());
    assert!(!ok && err.contains("directory"), "{err}");
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![7u8; 8192]).unwrap();
    let (ok, err) = check(format!("database = {garbage:?}\n"));
    assert!(!ok, "a file that is not a database: {err}");
    let db = dir.path().join("reg.db");
    let (ok, err) = check(format!(
        "database = {db:?}\n[[reader]]\nname = \"a\"\npath = \"/dev/ttyUSB0\"\n[[reader]]\nname = \"b\"\npath = \"/dev/ttyUSB0\"\n"
    ));
    assert!(!ok && err.contains("same device"), "{err}");
    let (ok, err) = check(format!("database = {db:?}\n"));
    assert!(ok, "{err}");
}

/// Runs `cmd` and returns its output if it exits within `limit`; kills it
/// and returns `None` otherwise.
fn exits_within(cmd: &mut Command, limit: Duration) -> Option<std::process::Output> {
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => Some(out.unwrap()),
        Err(_) => {
            unsafe { libc::kill(pid, libc::SIGKILL) };
            None
        }
    }
}

#[test]
fn a_second_daemon_on_the_same_registry_does_not_start() {
    let (d, _ptys) = Process::start(&[], "");
    // Even with the socket file gone, the registry lock holds.
    std::fs::remove_file(&d.socket).unwrap();
    let out = exits_within(
        Command::new(env!("CARGO_BIN_EXE_cardlinkd"))
            .arg("--config")
            .arg(&d.config),
        Duration::from_secs(20),
    )
    .expect("a second daemon on the same config kept running");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("in use by another running cardlinkd"), "{err}");
    assert!(
        !d.socket.exists(),
        "the second daemon did not bind the socket"
    );
    // Another socket, the same registry by its own name and by others (a
    // hard link, a symlink): refused as well (the lock is the file's).
    let hard = d.path("hard-link.db");
    std::fs::hard_link(&d.db, &hard).unwrap();
    let sym = d.path("symlink.db");
    std::os::unix::fs::symlink(&d.db, &sym).unwrap();
    let other = d.path("other.toml");
    let text = std::fs::read_to_string(&d.config)
        .unwrap()
        .replace("display.sock", "other.sock");
    for name in [d.db.clone(), hard, sym] {
        let db = (d.db.display().to_string(), name.display().to_string());
        std::fs::write(&other, text.replace(&db.0, &db.1)).unwrap();
        let out = exits_within(
            Command::new(env!("CARGO_BIN_EXE_cardlinkd"))
                .arg("--config")
                .arg(&other),
            Duration::from_secs(20),
        )
        .unwrap_or_else(|| panic!("a second daemon on registry {} kept running", db.1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains("registry") && err.contains("in use"), "{err}");
    }
    // The lock goes with the process: after a kill -9 the next one starts.
    let mut d = d;
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    let mut again = Command::new(env!("CARGO_BIN_EXE_cardlinkd"))
        .arg("--config")
        .arg(&d.config)
        .env("NOTIFY_SOCKET", d.path("notify.sock"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let got = recv_until(&d.notify, "READY=1", Duration::from_secs(20));
    assert!(got.iter().any(|m| m.contains("READY=1")), "{got:?}");
    again.kill().unwrap();
    again.wait().unwrap();
}

// 7. Duplicate suppression keeps its 10 s promise for many frames.
#[tokio::test(start_paused = true)]
async fn a_thousand_distinct_frames_sent_twice_are_reported_once() {
    let (d, mut ports) = Daemon::start(&[("r1", "frame", "utf-8")], "").await;
    let mut c = d.client().await;
    let port = ports.pop().unwrap();
    let n = 1000usize;
    let frames: Vec<Vec<u8>> = (0..n)
        .map(|k| {
            let mut card = sim_card(HOLDER, "张伟");
            card.card_no = format!("Z{k:08}");
            frame(k as u8, card.record().as_bytes())
        })
        .collect();
    let (mut rx, mut tx) = tokio::io::split(port);
    let writer = tokio::spawn(async move {
        for f in frames.iter().chain(frames.iter()) {
            tx.write_all(f).await.unwrap();
        }
        tx
    });
    // Drain what the daemon sends the reader (ACKs, FEEDBACK).
    let drain = tokio::spawn(async move {
        let mut sink = [0u8; 4096];
        while matches!(rx.read(&mut sink).await, Ok(k) if k > 0) {}
    });
    let mut cards = 0;
    while cards < n {
        if c.next().await["class"] == "CARD" {
            cards += 1;
        }
    }
    let _tx = writer.await.unwrap();
    // Wait until the reader has taken in all 2,000 frames.
    loop {
        let st = c.request(json!({"cmd": "status"})).await;
        if st["result"]["readers"][0]["items"] == 2 * n {
            assert_eq!(st["result"]["readers"][0]["duplicates"], n);
            assert_eq!(st["result"]["resolutions"], n);
            break;
        }
    }
    drain.abort();
}

// 8. CSV import: empty files, missing headers, birth dates that contradict the SSN.
#[test]
fn import_refuses_empty_headerless_and_contradicting_files() {
    let run = |dir: &Path, files: &[std::path::PathBuf]| ctl_import(&dir.join("reg.db"), files);
    let dir = tempfile::tempdir().unwrap();
    let files = fixture_csv(dir.path());
    let persons = dir.path().join("persons.csv");
    let good = std::fs::read_to_string(&persons).unwrap();
    // A 0-byte file.
    std::fs::write(&persons, "").unwrap();
    let (code, err) = run(dir.path(), &files[..1]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("persons.csv:1: empty file"), "{err}");
    // No header row: one clear error, not one per line.
    let body: String = good.lines().skip(1).map(|l| format!("{l}\n")).collect();
    std::fs::write(&persons, &body).unwrap();
    let (code, err) = run(dir.path(), &files[..1]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("persons.csv:1: no header row"), "{err}");
    assert!(!err.contains("missing field"), "{err}");
    // A birth date that is not the SSN's.
    let first = good.lines().nth(1).unwrap();
    let fields: Vec<&str> = first.split(',').collect();
    let wrong = first.replace(fields[3], "1999-09-09");
    std::fs::write(&persons, good.replacen(first, &wrong, 1)).unwrap();
    let (code, err) = run(dir.path(), &files[..1]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(
            "persons.csv:2: birth_date: 1999-09-09 does not match the birth date in the SSN"
        ),
        "{err}"
    );
    // Nothing was imported by any of these.
    let c = rusqlite::Connection::open(dir.path().join("reg.db")).unwrap();
    let n: i64 = c
        .query_row("SELECT count(*) FROM persons", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 0);
}

// 9. Ambiguous parties, the link channel, and the kiosk's inquiry sentence.
#[tokio::test(start_paused = true)]
async fn ambiguous_parties_client_channels_and_kiosk_inquiries() {
    let (d, mut ports) = Daemon::start(&[("r1", "frame", "utf-8")], "").await;
    let mut c = d.client().await;
    ports[0]
        .write_all(&frame(1, sim_card(HOLDER, "张伟").record().as_bytes()))
        .await
        .unwrap();
    let swipe = c.expect("CARD").await["swipe"].as_u64().unwrap();
    // Both a number and a swipe for the holder: refused, not silently the swipe.
    let r = c
        .request(json!({"cmd": "bind", "holder": card(HOLDER2), "holder_swipe": swipe, "member": card(CHILD), "relation": "child", "consent": cardlink::registry::consent::CURRENT.version}))
        .await;
    assert_eq!(r["code"], "bad_request", "{r}");
    assert!(r["message"].as_str().unwrap().contains("not both"), "{r}");
    // A window client cannot record a kiosk link.
    let r = c
        .request(json!({"cmd": "bind", "holder": card(HOLDER), "member": card(CHILD), "relation": "child", "channel": "kiosk"}))
        .await;
    assert_eq!(r["code"], "bad_request", "{r}");
    let r = c
        .request(json!({"cmd": "bind", "holder": card(HOLDER), "member": card(CHILD), "relation": "child", "consent": cardlink::registry::consent::CURRENT.version}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let reg = cardlink::registry::Registry::open(&d.db, &Default::default()).unwrap();
    let channel: String = reg
        .connection()
        .query_row(
            "SELECT channel FROM family_links WHERE member_ssn = ?1 AND status = 'active'",
            [demo_ssn_full(CHILD)],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(channel, "window");
    drop(d);

    let (d, mut ports) = Daemon::start(&[("k1", "frame", "utf-8")], "role = \"kiosk\"").await;
    let mut c = d.client().await;
    let r = c
        .request(json!({"cmd": "contributions", "number": card(HOLDER)}))
        .await;
    assert_eq!(r["code"], "kiosk_requires_swipe");
    let msg = r["message"].as_str().unwrap();
    assert!(
        msg.contains("payment records") && !msg.contains("both cards"),
        "{msg}"
    );
    ports[0]
        .write_all(&frame(1, sim_card(HOLDER, "张伟").record().as_bytes()))
        .await
        .unwrap();
    let swipe = c.expect("CARD").await["swipe"].as_u64().unwrap();
    let r = c
        .request(json!({"cmd": "contributions", "swipe": swipe, "months": 3}))
        .await;
    assert_eq!(r["result"]["records"].as_array().unwrap().len(), 3, "{r}");
}
