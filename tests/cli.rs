//! `cardlinkctl` as the operator runs it: check-ssn, db, simulate and the
//! socket clients, and the README's demo command.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn ctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cardlinkctl"))
}

#[test]
fn check_ssn_prints_one_line_per_number() {
    let out = ctl()
        .args([
            "check-ssn",
            "11010519491231002X",
            "110105194912310021",
            "1101051949",
            "11010519491231002x",
            "110105491231002",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert_eq!(lines[0], "110105********002X: valid");
    assert_eq!(
        lines[1],
        "110105********0021: invalid: check character is '1', expected 'X'"
    );
    assert_eq!(
        lines[2],
        "1*******49: invalid: wrong length: 10 characters, expected 18"
    );
    assert_eq!(lines[3], "110105********002X: valid");
    assert!(
        lines[4].contains("valid (18-digit form 110105********002X)"),
        "{}",
        lines[4]
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "an invalid number makes the exit status 1"
    );
    let out = ctl()
        .args(["check-ssn", "--full", "11010519491231002x"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "11010519491231002X: valid\n"
    );
    assert!(out.status.success());
}

on_both_backends!(db_commands_round_trip);

/// `cardlinkctl db` on a file and on a postgres:// URL alike.
fn db_commands_round_trip(b: Backend) {
    let test = "db_commands_round_trip";
    let Some(fx) = Fx::empty(b, test) else {
        return;
    };
    let dir = &fx.dir;
    let db = fx.setting();
    let run = |args: &[&str]| {
        let out = ctl()
            .arg("db")
            .arg("--database")
            .arg(&db)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, text) = run(&["init"]);
    assert_eq!(code, Some(0), "{text}");
    // The version is the number of migrations shipped.
    let migrations = |dir: &str| {
        std::fs::read_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql"))
            })
            .count()
    };
    let version = match b {
        Backend::Sqlite => format!(
            "sqlite schema version {}",
            migrations("src/registry/migrations")
        ),
        Backend::Postgres => format!(
            "postgresql schema version {}",
            migrations("src/registry/pg/migrations")
        ),
    };
    assert!(text.contains(&version), "{text}");
    let sample = dir.path().join("cards.jsonl");
    let (code, text) = run(&[
        "gen-demo",
        "--persons",
        "800",
        "--months",
        "3",
        "--sample-cards",
        sample.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("\"persons\":800"), "{text}");
    let cards = cardlink::sim::load_cards(&sample).unwrap();
    assert!(cards.len() >= 8, "{}", cards.len());
    let (code, text) = run(&["verify-audit"]);
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = run(&["check"]);
    assert_eq!(
        (code, text.trim_end().ends_with(": OK")),
        (Some(0), true),
        "{text}"
    );
    // Export, then import into a new database: same counts.
    let out_dir = dir.path().join("export");
    let (code, text) = run(&["export", out_dir.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{text}");
    let fx2 = Fx::empty(b, test).unwrap();
    let db2 = fx2.setting();
    let files: Vec<_> = ["persons", "cards", "links", "accounts", "contributions"]
        .iter()
        .map(|n| out_dir.join(format!("{n}.csv")))
        .collect();
    let out = ctl()
        .arg("db")
        .arg("--database")
        .arg(&db2)
        .arg("import")
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats = |p: &str| {
        let out = ctl()
            .arg("db")
            .arg("--database")
            .arg(p)
            .arg("stats")
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (
            v["persons"].clone(),
            v["cards"].clone(),
            v["active_links"].clone(),
            v["accounts"].clone(),
            v["contributions"].clone(),
        )
    };
    assert_eq!(stats(&db), stats(&db2));
    // A bad file: exit 1, file:line on stderr, nothing imported.
    let bad = dir.path().join("persons.csv");
    std::fs::write(&bad, "ssn,name,sex,birth_date,insurance_type,insurance_status\n110105194912310021,X,M,1949-12-31,employee,active\n").unwrap();
    let fx3 = Fx::empty(b, test).unwrap();
    let db3 = fx3.setting();
    let out = ctl()
        .arg("db")
        .arg("--database")
        .arg(&db3)
        .arg("import")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:2: ssn: check character is '1', expected 'X'",
            bad.display()
        )),
        "{err}"
    );
    // Nothing was imported.
    let out = ctl()
        .args(["db", "--database", &db3, "stats"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["persons"], 0);
    // Tampering shows in verify-audit.
    fx.exec(
        match b {
            Backend::Sqlite => "DROP TRIGGER audit_no_update",
            Backend::Postgres => "ALTER TABLE audit DISABLE TRIGGER audit_no_update",
        },
        &[],
    );
    fx.exec("UPDATE audit SET outcome = 'x' WHERE id = 1", &[]);
    let (code, text) = run(&["verify-audit"]);
    assert_eq!(code, Some(1));
    assert!(text.contains("BROKEN at row 1"), "{text}");
    let (code, text) = run(&["check"]);
    assert_eq!(code, Some(1));
    assert!(text.contains("audit chain broken at row 1"), "{text}");
    // So does a derived row changed behind cardlink's back, until a repair.
    let stale = fx.exec(
        "UPDATE resolution SET payer_name = 'x' WHERE payer_ssn IS NOT NULL",
        &[],
    );
    assert!(stale > 0);
    let (code, text) = run(&["check"]);
    assert_eq!(code, Some(1));
    assert!(
        text.contains(&format!("{stale} stale row(s)")) && text.contains("cardlinkctl db repair"),
        "{text}"
    );
    let (code, text) = run(&["repair"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!("{stale} stale row(s) rewritten")),
        "{text}"
    );
    let (_, text) = run(&["repair"]);
    assert!(text.contains("nothing to repair"), "{text}");
}

on_both_backends!(a_binds_consent_version_shows_in_db_audit_and_export);

/// Issue 23: the consent version stored with a bind is shown by `db audit`
/// (SSNs masked unless `--full`) and in `db export`'s audit.csv, and is
/// covered by the hash chain: editing it breaks `verify-audit`.
fn a_binds_consent_version_shows_in_db_audit_and_export(b: Backend) {
    let test = "consent_in_db_audit";
    let Some(fx) = Fx::fixture(b, test) else {
        return;
    };
    let db = fx.setting();
    let current = cardlink::registry::consent::CURRENT.version;
    fx.open()
        .bind(
            &cardlink::registry::BindRequest {
                holder: ssn(HOLDER),
                member: ssn(PARENT),
                relation: cardlink::registry::Relation::parse("parent").unwrap(),
                channel: cardlink::registry::Channel::Kiosk,
                operator: "kiosk-3",
                consent: current,
                actor: "test",
            },
            &Default::default(),
        )
        .unwrap();
    let run = |args: &[&str]| {
        let out = ctl()
            .args(["db", "--database", &db])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let full_holder = demo_ssn_full(HOLDER);
    let (code, text) = run(&["audit", "--action", "bind"]);
    assert_eq!(code, Some(0), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains(" ok holder="))
        .unwrap_or_else(|| panic!("no bind row in:\n{text}"));
    assert!(
        line.contains(&format!("consent={current} operator=kiosk-3")),
        "{line}"
    );
    assert!(!text.contains(&full_holder), "a full SSN in:\n{text}");
    assert!(
        line.contains(&cardlink::mask::mask_middle(&full_holder, 6, 4)),
        "{line}"
    );
    let (code, text) = run(&["audit", "--action", "bind", "--full"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains(&format!("holder={full_holder} ")), "{text}");
    let out_dir = fx.dir.path().join("export");
    let (code, text) = run(&["export", out_dir.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{text}");
    let audit = std::fs::read_to_string(out_dir.join("audit.csv")).unwrap();
    assert!(audit.starts_with("id,at,actor,action,ssn,outcome,prev_hash,hash\n"));
    assert!(
        audit
            .lines()
            .any(|l| l.contains(",bind,") && l.contains(&format!("consent={current} "))),
        "{audit}"
    );
    // The version is inside what the chain covers.
    let (code, text) = run(&["verify-audit"]);
    assert_eq!(code, Some(0), "{text}");
    fx.exec(
        match b {
            Backend::Sqlite => "DROP TRIGGER audit_no_update",
            Backend::Postgres => "ALTER TABLE audit DISABLE TRIGGER audit_no_update",
        },
        &[],
    );
    let edited = fx.exec(
        &format!(
            "UPDATE audit SET outcome = replace(outcome, 'consent={current}', 'consent=1999-01-01') \
             WHERE action = 'bind'"
        ),
        &[],
    );
    assert_eq!(edited, 1);
    let (code, text) = run(&["verify-audit"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("BROKEN at row"), "{text}");
}

/// `cardlinkctl replay` plays a capture into a new pty the daemon reads
/// like a reader, at 10x speed, unplugging and plugging in again where the
/// capture says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_plays_a_capture_into_a_pty_and_replugs() {
    use cardlink::capture::{chunk_line, unplug_line, Direction, MAGIC};
    let (d, ptys) = Process::start(&[("r1", "frame", "gbk")], "");
    drop(ptys); // the replay makes its own pty at the same path
    let mut c = d.client().await;
    let at = Duration::from_secs_f64;
    let cap = d.path("field.cap");
    let text = format!(
        "{MAGIC}\n# reader=window1 mode=frame baud=115200 parity=none encoding=gbk version=0.1.0 started=2026-11-27T08:00:00Z\n{}{}{}{}",
        chunk_line(at(0.0), Direction::ToReader, &[0x02, 0, 0, 0, 0x31, 0xa2, 0xb2, 0x03]),
        chunk_line(at(1.0), Direction::FromReader, &card_frame(1, HOLDER, "张伟")),
        unplug_line(at(1.5), "end of file"),
        chunk_line(at(3.0), Direction::FromReader, &card_frame(2, SPOUSE, "李娜")),
    );
    std::fs::write(&cap, text).unwrap();
    let replay = ctl()
        .args(["replay", "--speed", "10", "--pty"])
        .arg(d.path("r1"))
        .arg(&cap)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let card = c.expect("CARD").await;
    assert_eq!(card["role"], "holder");
    // The unplug, and the reader back.
    loop {
        let r = c.expect("READER").await;
        if r["state"] == "connected" {
            break;
        }
    }
    let card = match tokio::time::timeout(Duration::from_secs(8), c.expect("CARD")).await {
        Ok(card) => card,
        Err(_) => {
            let mut replay = replay;
            let _ = replay.kill();
            let out = replay.wait_with_output().unwrap();
            panic!(
                "no second CARD; replay said:\n{}\ndaemon log:\n{}",
                String::from_utf8_lossy(&out.stderr),
                d.log.text()
            );
        }
    };
    assert_eq!(card["role"], "member");
    let out = replay.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("2 chunks") && err.contains("1 unplug(s)"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_and_socket_clients() {
    let (d, ptys) = Process::start(&[("r1", "frame", "gbk")], "");
    drop(ptys); // the simulator makes its own pty at the same path
    let mut c = d.client().await;
    let cards = d.path("cards.jsonl");
    let lines: Vec<String> = [(HOLDER, "张伟"), (SPOUSE, "李娜"), (CHILD, "张小明")]
        .iter()
        .map(|(i, n)| serde_json::to_string(&sim_card(*i, n)).unwrap())
        .collect();
    std::fs::write(&cards, lines.join("\n")).unwrap();
    let sim = ctl()
        .args([
            "simulate",
            "--mode",
            "frame",
            "--count",
            "3",
            "--interval-ms",
            "100",
            "--noise",
            "0.1",
            "--drop-acks",
            "0.2",
        ])
        .arg("--pty")
        .arg(d.path("r1"))
        .arg("--cards")
        .arg(&cards)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut roles = Vec::new();
    while roles.len() < 3 {
        let v = c.expect("CARD").await;
        roles.push(v["role"].as_str().unwrap().to_string());
    }
    assert_eq!(roles, ["holder", "member", "none"]);
    let out = sim.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("swipes: 3"));

    let sock = d.socket.to_str().unwrap().to_string();
    let out = ctl()
        .args(["status", "--json", "--socket", &sock])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["result"]["readers"][0]["cards"], 3);
    assert_eq!(
        v["result"]["readers"][0]["firmware"],
        cardlink::sim::FIRMWARE
    );
    // Without --json: a summary for a person.
    let out = ctl().args(["status", "--socket", &sock]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for want in [
        "role window",
        "up ",
        "reader r1 (",
        // The simulator has finished, so the reader is gone, with its cause.
        "frame): disconnected",
        "last error: ",
        "3 cards",
        &format!("firmware: {}", cardlink::sim::FIRMWARE),
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
    assert!(!text.contains('{'), "not JSON:\n{text}");
    let out = ctl()
        .args(["lookup", &card(SPOUSE), "--socket", &sock])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["ok"].as_bool(), v["result"]["role"].as_str()),
        (Some(true), Some("member"))
    );
    let out = ctl()
        .args([
            "bind",
            "--holder",
            &card(HOLDER),
            "--member",
            &card(CHILD),
            "--relation",
            "child",
            "--socket",
            &sock,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = ctl()
        .args([
            "bind",
            "--holder",
            &card(HOLDER),
            "--member",
            &card(CHILD),
            "--relation",
            "child",
            "--socket",
            &sock,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("already_linked"));
    // `--consent` defaults to the current statement, which the audit row names.
    let reg = cardlink::registry::Registry::open(&d.db, &Default::default()).unwrap();
    let outcome: String = reg
        .connection()
        .query_row(
            "SELECT outcome FROM audit WHERE action = 'bind' AND outcome LIKE 'ok %'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    drop(reg);
    let current = cardlink::registry::consent::CURRENT.version;
    assert!(
        outcome.contains(&format!("consent={current} ")),
        "{outcome}"
    );
    // A version never shipped is refused.
    let out = ctl()
        .args([
            "bind",
            "--holder",
            &card(HOLDER),
            "--member",
            &card(PARENT),
            "--relation",
            "parent",
            "--consent",
            "1999-01-01",
            "--socket",
            &sock,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("consent_required"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = ctl()
        .args([
            "unbind",
            "--holder",
            &card(HOLDER),
            "--member",
            &card(CHILD),
            "--socket",
            &sock,
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = ctl()
        .args([
            "contributions",
            &card(HOLDER),
            "--months",
            "2",
            "--socket",
            &sock,
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["result"]["records"].as_array().unwrap().len(), 2);
    let out = ctl()
        .args(["status", "--socket", "/nonexistent/sock"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is cardlinkd running?"));
}

#[test]
fn demo_command_shows_swipes_resolving_into_families() {
    let dir = tempfile::tempdir().unwrap();
    let mut demo = ctl()
        .args([
            "demo",
            "--persons",
            "600",
            "--every",
            "1",
            "--display-listen",
            "127.0.0.1:0",
            "--dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = demo.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(l);
            let cards = seen.iter().filter(|l| l.starts_with("card ")).count();
            let families = seen.iter().any(|l| l.contains("covers:"))
                && seen.iter().any(|l| l.contains("paid by"));
            if cards >= 3 && families {
                break;
            }
        }
    }
    // The screen is served, where the demo says, while it runs.
    let listen = seen
        .iter()
        .find_map(|l| l.split("logs in to http://").nth(1))
        .and_then(|rest| rest.split('/').next())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no address printed:\n{}", seen.join("\n")));
    assert!(!listen.ends_with(":0"), "{listen}");
    let page = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&listen).unwrap();
        write!(
            s,
            "GET /healthz HTTP/1.1\r\nHost: {listen}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    assert!(page.contains("\"daemon\":\"connected\""), "{page}");
    unsafe { libc::kill(demo.id() as i32, libc::SIGINT) };
    let _ = demo.wait();
    let text = seen.join("\n");
    assert!(text.contains("connected to cardlinkd"), "{text}");
    assert!(
        text.contains(&format!("http://{listen}/")),
        "the URL is printed:\n{text}"
    );
    assert!(
        text.contains("reader demo") && text.contains("connected"),
        "{text}"
    );
    assert!(
        text.contains("covers:"),
        "a holder's members were shown:\n{text}"
    );
    assert!(
        text.contains("paid by"),
        "a member's payer was shown:\n{text}"
    );
    assert!(text.contains("********"), "masked SSNs:\n{text}");
}

// ---------------------------------------------------------------------------
// `capture redact` and `replay --check` on captures as they are met in the
// field (issue 19): personal data outside valid card frames, and absurd
// timestamps.

/// A capture file's text: the header for `mode` and `encoding`, then one
/// line per (seconds, direction, bytes).
fn capture_text(mode: &str, encoding: &str, chunks: &[(&str, char, Vec<u8>)]) -> String {
    let mut text = format!(
        "{}\n# reader=w1 mode={mode} baud=115200 parity=none encoding={encoding} version=0.1.0 started=2026-12-01T08:00:00Z\n",
        cardlink::capture::MAGIC
    );
    for (at, dir, bytes) in chunks {
        text.push_str(&format!("{at} {dir} {}\n", hex::encode(bytes)));
    }
    text
}

fn frame(seq: u8, cmd: firmware_protocol::frame::Cmd, payload: &[u8]) -> Vec<u8> {
    firmware_protocol::frame::encode_vec(seq, cmd as u8, payload).unwrap()
}

/// Runs `cardlinkctl capture redact` on `text`: (exit code, output, the
/// redacted file's text if one was written).
fn redact(text: &str) -> (Option<i32>, String, Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.cap"), dir.path().join("out.cap"));
    std::fs::write(&input, text).unwrap();
    let o = ctl()
        .args(["capture", "redact"])
        .arg(&input)
        .arg(&output)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(!said.contains("panicked"), "{said}");
    (o.status.code(), said, std::fs::read_to_string(&output).ok())
}

/// (d) Absurd timestamps: a clear error naming the line, never a panic,
/// from `capture redact` and from `replay --check`.
#[test]
fn absurd_capture_timestamps_are_refused_with_the_line() {
    use firmware_protocol::frame::Cmd;
    let removed = frame(1, Cmd::CardRemoved, b"");
    for at in [
        "1e20",
        "1e19",
        "18446744073709551615.999999",
        "1e308",
        "1e400",
        "inf",
        "NaN",
        "-1.0",
    ] {
        let text = capture_text(
            "frame",
            "gbk",
            &[
                ("0.000000", '<', removed.clone()),
                (at, '<', removed.clone()),
            ],
        );
        let (code, said, out) = redact(&text);
        assert_eq!(code, Some(2), "{at}: {said}");
        assert!(out.is_none(), "{at}: {said}");
        assert!(said.contains("in.cap:4:"), "{at}: {said}");
        let dir = tempfile::tempdir().unwrap();
        let cap = dir.path().join("t.cap");
        std::fs::write(&cap, &text).unwrap();
        let o = ctl()
            .args(["replay", "--check"])
            .arg(&cap)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(!said.contains("panicked"), "{at}: {said}");
        assert_eq!(o.status.code(), Some(2), "{at}: {said}");
        assert!(said.contains("t.cap:4:"), "{at}: {said}");
        // The same in an `unplugged` note.
        let text = capture_text("frame", "gbk", &[("0.000000", '<', removed.clone())])
            + &format!("# {at} unplugged: end of file\n");
        let (code, said, _) = redact(&text);
        assert_eq!(code, Some(2), "{at} (unplugged): {said}");
        assert!(said.contains("in.cap:4:"), "{at} (unplugged): {said}");
    }
}

/// Personal values of a person who is in no card frame, so that the
/// redactor can learn them from nowhere but the bytes themselves.
const LEAK_SSN: &str = "11010519491231002X";
const LEAK_SSN2: &str = "440524188001010014";
const LEAK_CARD: &str = "K87654321";
const LEAK_CARD_ID: &str = "110105D156000005F1E2D3C4B5A69788";
const LEAK_NAME: &str = "欧阳明华";

/// A basic-info record (PROTOCOL.md §2) of that person, name in `enc`.
fn leak_record(enc: &'static encoding_rs::Encoding) -> Vec<u8> {
    let mut r = format!("110105|{LEAK_SSN}|{LEAK_CARD}|{LEAK_CARD_ID}|").into_bytes();
    r.extend_from_slice(&enc.encode(LEAK_NAME).0);
    r.extend_from_slice(b"|3B6D000000815448|3.00|20200115|20300115|T0001|D01|");
    r
}

/// The bytes of every chunk of a capture's text, both directions, in order.
fn all_bytes(text: &str) -> Vec<u8> {
    let file = cardlink::capture::CaptureFile::parse(text, "out.cap").unwrap();
    file.chunks().flat_map(|c| c.bytes.clone()).collect()
}

/// Asserts that no personal value of the leak person is in `bytes`, in
/// any of the encodings a reader uses.
fn assert_none_left(bytes: &[u8], what: &str) {
    let mut values: Vec<(String, Vec<u8>)> = [LEAK_SSN, LEAK_SSN2, LEAK_CARD, LEAK_CARD_ID]
        .iter()
        .map(|v| (v.to_string(), v.as_bytes().to_vec()))
        .collect();
    values.push((
        "the GBK name".into(),
        encoding_rs::GBK.encode(LEAK_NAME).0.to_vec(),
    ));
    values.push(("the UTF-8 name".into(), LEAK_NAME.as_bytes().to_vec()));
    for (name, v) in values {
        assert!(
            !bytes.windows(v.len()).any(|w| w == v.as_slice()),
            "{what}: {name} survived redaction"
        );
    }
}

/// Every complete frame of the reader's side, (cmd, payload length), the
/// bytes that were noise and those left pending: a redaction keeps them.
fn frames_of(text: &str) -> (Vec<(u8, usize)>, usize, usize) {
    let file = cardlink::capture::CaptureFile::parse(text, "x").unwrap();
    let (frames, noise, rest) = scan_frames(&reader_stream(&file));
    let frames = frames.iter().map(|(c, p)| (*c, p.len())).collect();
    (frames, noise, rest)
}

/// (a) A frame-mode reader whose stream holds an `iReadCardBas` record as
/// noise (the reader module answered in its own format between frames):
/// its SSN, card number, identification code and GBK name are redacted
/// too, and the frames around it stay valid.
#[test]
fn capture_redact_redacts_a_record_in_the_noise_of_a_frame_port() {
    use firmware_protocol::frame::Cmd;
    let good = frame(1, Cmd::CardIc, sim_card(HOLDER, "张伟").record().as_bytes());
    let mut noise = vec![0x02, 0xff, 0x13];
    noise.extend(leak_record(encoding_rs::GBK));
    let text = capture_text(
        "frame",
        "gbk",
        &[
            ("0.000000", '<', good.clone()),
            ("0.000400", '>', frame(1, Cmd::Ack, b"")),
            ("1.000000", '<', noise.clone()),
            // The record again, split over two reads and glued to a frame.
            ("2.000000", '<', noise[..40].to_vec()),
            ("2.001000", '<', [&noise[40..], &good[..]].concat()),
        ],
    );
    let (code, said, out) = redact(&text);
    assert_eq!(code, Some(0), "{said}");
    let out = out.expect("a redacted file");
    assert_none_left(&all_bytes(&out), "a record in frame-mode noise");
    assert_eq!(frames_of(&out), frames_of(&text), "frames and noise kept");
}

/// (b) A reader left in text mode on a frame-mode port: whole
/// `iReadCardBas` lines, one with a UTF-8 name, one cut off, and no frame.
#[test]
fn capture_redact_redacts_text_mode_records_on_a_frame_port() {
    let mut line = leak_record(encoding_rs::GBK);
    line.extend_from_slice(b"\r\n");
    let mut utf8 = leak_record(encoding_rs::UTF_8);
    utf8.extend_from_slice(b"\r\n");
    let cut = leak_record(encoding_rs::GBK)[..60].to_vec();
    let text = capture_text(
        "frame",
        "gbk",
        &[
            ("0.000000", '<', line),
            ("3.000000", '<', utf8),
            ("6.000000", '<', cut),
        ],
    );
    let (code, said, out) = redact(&text);
    assert_eq!(code, Some(0), "{said}");
    assert_none_left(
        &all_bytes(&out.expect("a redacted file")),
        "text-mode records",
    );
}

/// (c) READ_ERROR (both forms) and STATUS frames whose text holds an SSN
/// and a name: redacted, and the frames stay valid frames of the same
/// command and length.
#[test]
fn capture_redact_redacts_the_text_of_read_error_and_status_frames() {
    use firmware_protocol::frame::Cmd;
    let mut v1 = vec![0x05];
    v1.extend(format!("card of {LEAK_NAME} {LEAK_SSN} mute").into_bytes());
    let mut ext = vec![0xff, 0x67, 0xf7, 0xff, 0xff];
    ext.extend(format!("PSAM: {LEAK_SSN2}").into_bytes());
    let status = format!("fw 2.1 last card {LEAK_CARD} {LEAK_CARD_ID} {LEAK_NAME}");
    let text = capture_text(
        "frame",
        "gbk",
        &[
            ("0.000000", '<', frame(1, Cmd::Status, status.as_bytes())),
            ("0.500000", '<', frame(2, Cmd::ReadError, &v1)),
            ("1.000000", '<', frame(3, Cmd::ReadError, &ext)),
        ],
    );
    let (code, said, out) = redact(&text);
    assert_eq!(code, Some(0), "{said}");
    let out = out.expect("a redacted file");
    assert_none_left(&all_bytes(&out), "READ_ERROR and STATUS text");
    assert_eq!(frames_of(&out), frames_of(&text), "the same valid frames");
    assert_eq!(frames_of(&out).0.len(), 3);
}

/// The final check does not depend on what the redactor understood: a
/// value it does not rewrite (here in the host's direction, which is kept
/// as it was) makes it refuse, name the line, and write nothing.
#[test]
fn capture_redact_refuses_when_anything_shaped_like_personal_data_is_left() {
    use firmware_protocol::frame::Cmd;
    let text = capture_text(
        "frame",
        "gbk",
        &[
            ("0.000000", '<', frame(1, Cmd::CardRemoved, b"")),
            ("0.100000", '>', format!("echo {LEAK_SSN}").into_bytes()),
        ],
    );
    let (code, said, out) = redact(&text);
    assert_eq!(code, Some(2), "{said}");
    assert!(out.is_none(), "nothing written: {said}");
    assert!(said.contains("line 4"), "{said}");
    assert!(
        !said.contains(LEAK_SSN),
        "the value itself is not shown: {said}"
    );
}

/// Issue 22.9: `bind --help` listed three relations of the eight; the
/// list now comes from the registry's own.
#[test]
fn bind_help_lists_every_relation() {
    let out = ctl().args(["bind", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for r in cardlink::registry::Relation::ALL {
        assert!(help.contains(r.as_str()), "{} missing:\n{help}", r.as_str());
    }
}
