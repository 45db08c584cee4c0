//! Regression tests for a security probe of the release binaries (issue
//! 19, items 6 and 8), each reproduced the way the probe met it: the
//! `cardlinkd --check-config` and `cardlinkctl db import` command lines, a
//! real daemon process with a reader on a pseudo-terminal.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use common::*;
use firmware_protocol::frame::{encode_vec, Cmd};
use serde_json::json;
use tokio::io::AsyncWriteExt;

/// The files in `dir`, by name.
fn names_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// `cardlinkd --check-config` on `text`, run in the directory `cwd`:
/// (success, stdout, stderr).
fn check_config_in(cwd: &Path, text: &str) -> (bool, String, String) {
    let cfg = cwd.join("c.toml");
    std::fs::write(&cfg, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cardlinkd"))
        .args(["--check-config", "--config"])
        .arg(&cfg)
        .current_dir(cwd)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A libpq `key=value` string for the server of `url`, with `password`.
fn key_value(url: &str, password: &str) -> String {
    let c = tokio_postgres::Config::from_str(url).unwrap();
    let host = match &c.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
    };
    format!(
        "host={host} port={} user={} password='{password}' dbname={}",
        c.get_ports().first().copied().unwrap_or(5432),
        c.get_user().unwrap_or("postgres"),
        c.get_dbname().unwrap_or("postgres"),
    )
}

// 6. A libpq key=value connection string is a PostgreSQL registry: never
// a SQLite file of that name, and its password is never shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_value_connection_string_is_postgresql_and_its_password_is_never_shown() {
    // Nothing listens on port 1.
    let pw = "s3cr3t-pw";
    let setting = format!("host=127.0.0.1 port=1 user=cardlink password={pw} dbname=registry");
    let cwd = tempfile::tempdir().unwrap();
    let (ok, out, err) = check_config_in(cwd.path(), &format!("database = {setting:?}\n"));
    assert!(!ok, "an unreachable server passed:\n{out}{err}");
    assert!(err.contains("registry unavailable"), "{err}");
    assert!(err.contains("password=***"), "{err}");
    assert!(!out.contains(pw) && !err.contains(pw), "{out}{err}");
    assert_eq!(names_in(cwd.path()), ["c.toml"], "a file was created");

    // The daemon: on a server that is away it starts (and retries), on
    // one that is there it resolves cards; its log never has the password.
    let dir = tempfile::tempdir().unwrap();
    let (d, _ptys) = Process::start_on(
        dir,
        cardlink::registry::Database::Postgres(setting.clone()),
        PathBuf::from("unused"),
        &[],
        "",
        &[],
    );
    let files = names_in(d.dir.path());
    let (_, log) = d.stop();
    assert!(
        files.iter().all(|f| !f.contains("host=")),
        "a file named like the setting: {files:?}"
    );
    assert!(log.contains("registry unreachable at start"), "{log}");
    assert!(log.contains("password=***"), "{log}");
    assert!(!log.contains(pw), "{log}");
    let Some(db) = pg::database("key_value_connection_string") else {
        return;
    };
    let pw = tokio_postgres::Config::from_str(&db.url)
        .unwrap()
        .get_password()
        .map_or("unused-by-trust".into(), |p| {
            String::from_utf8_lossy(p).into_owned()
        });
    let csv = tempfile::tempdir().unwrap();
    let (code, err) = ctl_import(Path::new(&db.url), &fixture_csv(csv.path()));
    assert_eq!(code, Some(0), "{err}");
    let setting = key_value(&db.url, &pw);
    let dir = tempfile::tempdir().unwrap();
    let (d, mut ptys) = Process::start_on(
        dir,
        cardlink::registry::Database::Postgres(setting),
        PathBuf::from("unused"),
        &[("r1", "frame", "utf-8")],
        "",
        &[],
    );
    let mut c = d.client().await;
    while c.expect("READER").await["state"] != "connected" {}
    ptys[0]
        .write_all(&card_frame(1, HOLDER, "张伟"))
        .await
        .unwrap();
    let card = c.expect("CARD").await;
    assert_eq!(card["outcome"], "ok", "{card}");
    let files = names_in(d.dir.path());
    let (_, log) = d.stop();
    assert!(!log.contains(&pw), "{log}");
    assert!(
        files.iter().all(|f| !f.contains("host=")),
        "a file named like the setting: {files:?}"
    );
}

// 8. Text the reader sends (READ_ERROR's text, STATUS's firmware text) is
// free text: identifiers in it are masked in events, `status` and the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identifiers_in_a_readers_own_text_are_masked() {
    let (d, mut ptys) = Process::start(&[("r1", "frame", "utf-8")], "");
    let mut c = d.client().await;
    while c.expect("READER").await["state"] != "connected" {}
    let (ssn, card_no) = (demo_ssn_full(HOLDER), card(HOLDER));
    let status = format!("FW 2.1 owner {ssn} card {card_no}");
    ptys[0]
        .write_all(&encode_vec(1, Cmd::Status as u8, status.as_bytes()).unwrap())
        .await
        .unwrap();
    let mut payload = vec![0xFF];
    payload.extend_from_slice(&(-11i32).to_le_bytes());
    payload.extend_from_slice(format!("bad card:{ssn}/{card_no}").as_bytes());
    ptys[0]
        .write_all(&encode_vec(2, Cmd::ReadError as u8, &payload).unwrap())
        .await
        .unwrap();
    // Frames are handled in order: the STATUS is in by the time the error shows.
    let e = c.expect("ERROR").await;
    let message = e["message"].as_str().unwrap();
    let masked_ssn = format!("{}********{}", &ssn[..6], &ssn[14..]);
    let masked_card = format!("{}******{}", &card_no[..1], &card_no[7..]);
    assert!(
        message.contains(&format!("bad card:{masked_ssn}/{masked_card}")),
        "{e}"
    );
    let st = c.request(json!({"cmd": "status"})).await;
    let firmware = st["result"]["readers"][0]["firmware"].as_str().unwrap();
    assert_eq!(
        firmware,
        format!("FW 2.1 owner {masked_ssn} card {masked_card}"),
        "{st}"
    );
    let (_, log) = d.stop();
    assert!(log.contains(&masked_ssn), "{log}");
    assert!(!log.contains(&ssn) && !log.contains(&card_no), "{log}");
}

// 8. `--check-config` refuses settings that cannot work or that open the
// daemon up; the limits themselves pass.
#[test]
fn check_config_refuses_unusable_and_unsafe_settings() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("reg.db");
    let a_file = dir.path().join("a-file");
    std::fs::write(&a_file, "x").unwrap();
    let reader =
        |name: &str, path: &str| format!("[[reader]]\nname = \"{name}\"\npath = \"{path}\"\n");
    let socket = |mode: &str| format!("[socket]\npath = \"/tmp/x.sock\"\nmode = \"{mode}\"\n");
    let base = format!("database = {db:?}\n");
    let long = "r".repeat(5000);
    let cases: Vec<(String, &str)> = vec![
        ("database = \"\"\n".into(), "database is empty"),
        ("database = \"/dev/null\"\n".into(), "not a regular file"),
        (
            format!("{base}capture_dir = {a_file:?}\n"),
            "is not a directory",
        ),
        (
            format!("{base}busy_timeout_ms = 999999999999\n"),
            "busy_timeout_ms 999999999999: at most 60000",
        ),
        (
            format!("{base}cache_mib = 4000000\n"),
            "cache_mib 4000000: at most 1024",
        ),
        (
            format!("{base}{}", reader("manual", "/dev/ttyUSB0")),
            "reserved",
        ),
        (
            format!("{base}{}", reader(&long, "/dev/ttyUSB0")),
            "must be 1 to 32",
        ),
        (format!("{base}{}", reader("w1", "")), "path is empty"),
        (format!("{base}{}", socket("0000")), "owner read and write"),
        (format!("{base}{}", socket("0777")), "others nothing"),
    ];
    for (text, want) in &cases {
        let (ok, out, err) = check_config(text);
        assert!(!ok, "accepted:\n{text}\n{out}");
        assert!(err.contains(want), "{text}\nwanted '{want}' in: {err}");
        assert!(
            !err.contains(&long),
            "the message repeats the long name whole"
        );
    }
    let limits = format!(
        "{base}busy_timeout_ms = 60000\ncache_mib = 1024\ncapture_dir = {:?}\n{}{}",
        dir.path(),
        socket("0600"),
        reader(&"r".repeat(32), "/dev/ttyUSB0")
    );
    let (ok, _, err) = check_config(&limits);
    assert!(ok, "{limits}\n{err}");
}

/// A change to a person row's fields.
type Edit = fn(&mut [String]);

/// Writes the fixture CSV files with the first person row changed by `edit`.
fn with_first_person(dir: &Path, edit: Edit) -> Vec<PathBuf> {
    let files = fixture_csv(dir);
    let persons = dir.join("persons.csv");
    let text = std::fs::read_to_string(&persons).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let mut fields: Vec<String> = lines[1].split(',').map(String::from).collect();
    edit(&mut fields);
    lines[1] = fields.join(",");
    std::fs::write(&persons, lines.join("\n") + "\n").unwrap();
    files
}

// 8. `db import` refuses a sex that is not the SSN's and a region in no
// province, on both backends, as `file:line: reason`.
#[test]
fn import_refuses_a_sex_or_region_that_contradicts_the_ssn() {
    let pg = pg::database("import_refuses_a_sex_or_region");
    let dir = tempfile::tempdir().unwrap();
    let sqlite = dir.path().join("reg.db");
    let mut targets = vec![sqlite.clone()];
    targets.extend(pg.as_ref().map(|t| PathBuf::from(&t.url)));
    let cases: [(Edit, &str); 2] = [
        (
            |f| f[2] = if f[2] == "M" { "F" } else { "M" }.into(),
            "persons.csv:2: sex: ",
        ),
        (
            |f| f[6] = "990100".into(),
            "persons.csv:2: region: '990100'",
        ),
    ];
    for db in &targets {
        for (change, want) in &cases {
            let csv = tempfile::tempdir().unwrap();
            let (code, err) = ctl_import(db, &with_first_person(csv.path(), *change));
            assert_eq!(code, Some(1), "{}: {err}", db.display());
            assert!(
                err.contains(want),
                "{}: wanted '{want}' in: {err}",
                db.display()
            );
        }
    }
    let c = rusqlite::Connection::open(&sqlite).unwrap();
    let n: i64 = c
        .query_row("SELECT count(*) FROM persons", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 0, "nothing imported");
}
