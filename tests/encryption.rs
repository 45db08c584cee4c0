//! Encryption at rest (issue 25): a SQLite registry encrypted with
//! SQLCipher, as an operator meets it through `cardlinkctl db encrypt`,
//! `decrypt`, `rekey`, and `cardlinkd` with a key file or a systemd
//! credential. The stock `sqlite3` shell is a system package (`.ci/run`
//! installs it): without it the tests that need it say they are skipped,
//! except under `CI=true`, where they fail.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cardlink::registry::{DbKey, KeySource, OpenOptions, Registry};
use common::*;

const KEY_A: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
const KEY_B: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";

/// Writes a key file with `mode`.
fn key_file(dir: &Path, name: &str, hex: &str, mode: u32) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("{hex}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

/// `cardlinkctl db --database DB [--key-file K] ARGS`: (success, stdout, stderr).
fn ctl(db: &Path, key: Option<&Path>, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cardlinkctl"));
    cmd.args(["db", "--database"]).arg(db);
    if let Some(k) = key {
        cmd.arg("--key-file").arg(k);
    }
    run(cmd.args(args))
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.env_remove("CREDENTIALS_DIRECTORY").output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Opens an encrypted registry in-process with `hex`.
fn open_with(db: &Path, hex: &str) -> Registry {
    let key = DbKey::from_hex(KeySource::File("test".into()), hex).unwrap();
    Registry::open(
        db,
        &OpenOptions {
            key: Some(key),
            ..OpenOptions::default()
        },
    )
    .unwrap()
}

/// The actions of the registry's audit rows, in order.
fn actions(reg: &Registry) -> Vec<String> {
    let mut st = reg
        .connection()
        .prepare("SELECT action FROM audit ORDER BY id")
        .unwrap();
    st.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The files in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Whether the stock shell is there (panics under `CI=true` when not).
fn sqlite3_shell() -> bool {
    common::sqlite3::shell().is_some()
}

fn sqlite3(db: &Path, sql: &str) -> (bool, String, String) {
    common::sqlite3::run(db, &[], sql)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A demo registry made by `cardlinkctl db gen-demo`, and one person of it
/// (SSN, name) read before encryption.
fn demo(dir: &Path) -> (PathBuf, String, String) {
    let db = dir.join("registry.db");
    let (ok, _, err) = ctl(&db, None, &["gen-demo", "--persons", "300"]);
    assert!(ok, "{err}");
    let c = rusqlite::Connection::open(&db).unwrap();
    let (ssn, name): (String, String) = c
        .query_row(
            "SELECT ssn, name FROM persons WHERE length(name) >= 3 ORDER BY ssn LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    drop(c);
    (db, ssn, name)
}

// (a), (b), (g), (h): `db encrypt` leaves one file that holds no SSN and
// no name in clear, which stock sqlite3 cannot read, audited, and nothing
// else behind.
#[test]
fn an_encrypted_registry_holds_no_plaintext_and_sqlite3_cannot_read_it() {
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (db, ssn, name) = demo(dir.path());
    let before = std::fs::read(&db).unwrap();
    assert!(
        contains(&before, ssn.as_bytes()) && contains(&before, name.as_bytes()),
        "the plain file holds them (the scan works)"
    );
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o640)).unwrap();
    let key = key_file(keys.path(), "db.key", KEY_A, 0o600);
    let (ok, out, err) = ctl(&db, Some(&key), &["encrypt"]);
    assert!(ok, "{out}{err}");
    assert!(!out.contains(KEY_A) && !err.contains(KEY_A));
    // One file: no temporary copy, no journal, no write-ahead log left.
    assert_eq!(names_in(dir.path()), ["registry.db"]);
    // The file keeps its mode (the daemon's group still opens it).
    let mode = std::fs::metadata(&db).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    let bytes = std::fs::read(&db).unwrap();
    assert!(!contains(&bytes, ssn.as_bytes()), "an SSN in clear");
    assert!(
        !contains(&bytes, name.as_bytes()),
        "a name in clear (UTF-8)"
    );
    assert!(!contains(&bytes, b"SQLite format 3"));
    // cardlinkctl reads it with the key; the row is there.
    let (ok, out, err) = ctl(&db, Some(&key), &["stats"]);
    assert!(ok && out.contains("\"persons\": 300"), "{out}{err}");
    let (ok, out, err) = ctl(&db, Some(&key), &["check"]);
    assert!(ok, "{out}{err}");
    let reg = open_with(&db, KEY_A);
    assert_eq!(actions(&reg).last().unwrap(), "db_encrypt");
    drop(reg);
    if sqlite3_shell() {
        let (ok, out, err) = sqlite3(&db, "SELECT count(*) FROM persons;");
        assert!(!ok, "stock sqlite3 read an encrypted registry: {out}");
        assert!(err.contains("not a database"), "{err}");
    }
    // Encrypting twice is refused, by name.
    let (ok, _, err) = ctl(&db, Some(&key), &["encrypt"]);
    assert!(!ok && err.contains("already encrypted"), "{err}");
}

// (c) A missing or wrong key is an error that names the key, from the
// tool and from the daemon at start-up; never "file is not a database".
#[test]
fn a_missing_or_wrong_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (db, _, _) = demo(dir.path());
    let key = key_file(keys.path(), "db.key", KEY_A, 0o600);
    let wrong = key_file(keys.path(), "wrong.key", KEY_B, 0o600);
    assert!(ctl(&db, Some(&key), &["encrypt"]).0);

    let (ok, _, err) = ctl(&db, None, &["stats"]);
    assert!(!ok);
    assert!(
        err.contains(&format!("the registry {} is encrypted", db.display()))
            && err.contains("no key given")
            && err.contains("--key-file")
            && err.contains("cardlink-db-key"),
        "{err}"
    );
    assert!(!err.contains("file is not a database"), "{err}");
    let (ok, _, err) = ctl(&db, Some(&wrong), &["stats"]);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "the registry {} is encrypted and the key file {} does not open it",
            db.display(),
            wrong.display()
        )),
        "{err}"
    );
    assert!(!err.contains("file is not a database"), "{err}");

    // cardlinkd: --check-config and a real start.
    let cfg_dir = tempfile::tempdir().unwrap();
    let config = |name: &str, extra: &str| {
        let text = config_text(
            cfg_dir.path(),
            db.clone(),
            &cfg_dir.path().join("s.sock"),
            &[],
            extra,
        );
        let p = cfg_dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let daemon = |cfg: &Path, check: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cardlinkd"));
        if check {
            cmd.arg("--check-config");
        }
        run(cmd.arg("--config").arg(cfg))
    };
    let none = config("none.toml", "");
    let bad = config("bad.toml", &format!("database_key_file = {wrong:?}"));
    for check in [true, false] {
        let (ok, _, err) = daemon(&none, check);
        assert!(
            !ok && err.contains("is encrypted")
                && err.contains("no key given")
                && err.contains("database_key_file"),
            "{err}"
        );
        assert!(!err.contains("file is not a database"), "{err}");
        // SQLCipher's own log lines ("hmac check failed…") are silenced.
        assert!(!err.contains("ERROR CORE"), "{err}");
    }
    for check in [true, false] {
        let (ok, _, err) = daemon(&bad, check);
        assert!(
            !ok && err.contains(&format!(
                "the key file {} does not open it",
                wrong.display()
            )),
            "{err}"
        );
    }
    // The right key: the source is shown, never the key.
    let good = config("good.toml", &format!("database_key_file = {key:?}"));
    let (ok, out, err) = daemon(&good, true);
    assert!(ok, "{out}{err}");
    assert!(
        err.contains(&format!("registry key: key file {}", key.display())),
        "{err}"
    );
    assert!(!out.contains(KEY_A) && !err.contains(KEY_A));
}

// (d) The daemon resolves a swipe on an encrypted registry, the key from
// a file and from systemd's $CREDENTIALS_DIRECTORY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_resolves_swipes_on_an_encrypted_registry() {
    use tokio::io::AsyncWriteExt;
    for how in ["file", "credential"] {
        let dir = tempfile::tempdir().unwrap();
        let db = fixture_db(dir.path());
        let creds = dir.path().join("creds");
        std::fs::create_dir(&creds).unwrap();
        let key = key_file(&creds, "cardlink-db-key", KEY_A, 0o400);
        let (ok, _, err) = ctl(&db, Some(&key), &["encrypt"]);
        assert!(ok, "{err}");
        let (extra, env) = match how {
            "file" => (format!("database_key_file = {key:?}"), vec![]),
            _ => (
                String::new(),
                vec![("CREDENTIALS_DIRECTORY", creds.display().to_string())],
            ),
        };
        let (d, mut ptys) = Process::start_on(
            dir,
            db.clone().into(),
            db.clone(),
            &[("r1", "frame", "utf-8")],
            &extra,
            &env,
        );
        let mut c = d.client().await;
        while c.expect("READER").await["state"] != "connected" {}
        ptys[0]
            .write_all(&card_frame(1, HOLDER, "张伟"))
            .await
            .unwrap();
        let card = c.expect("CARD").await;
        assert_eq!(card["outcome"], "ok", "{how}: {card}");
        // Written while the daemon runs: the file and its write-ahead log.
        for f in [db.clone(), d.path("registry.db-wal")] {
            if let Ok(bytes) = std::fs::read(&f) {
                assert!(!contains(&bytes, "张伟".as_bytes()), "{}", f.display());
                assert!(
                    !contains(&bytes, ssn(HOLDER).expose().as_bytes()),
                    "{}",
                    f.display()
                );
            }
        }
        let (status, log) = d.stop();
        assert!(status.success(), "{how}: {log}");
        assert!(log.contains("the registry is encrypted"), "{how}: {log}");
        assert!(!log.contains(KEY_A), "{how}: the key in the log");
        if how == "credential" {
            assert!(log.contains("credential cardlink-db-key"), "{log}");
        }
    }
}

// Issue 24 leftover: `cardlinkctl fleet --key-file` opens an encrypted
// registry (a box beating into it is listed); without the key it says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_lists_the_boxes_of_an_encrypted_registry_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = fixture_db(dir.path());
    let keys = tempfile::tempdir().unwrap();
    let key = key_file(keys.path(), "db.key", KEY_A, 0o600);
    let (ok, _, err) = ctl(&db, Some(&key), &["encrypt"]);
    assert!(ok, "{err}");
    let (d, _ptys) = Process::start_on(
        dir,
        db.clone().into(),
        db.clone(),
        &[("r1", "frame", "utf-8")],
        &format!("database_key_file = {key:?}\nname = \"kiosk-enc\"\n[fleet]\nheartbeat_s = 1\n"),
        &[],
    );
    let fleet = |key: Option<&Path>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cardlinkctl"));
        cmd.args(["fleet", "--json", "--database"]).arg(&db);
        if let Some(k) = key {
            cmd.arg("--key-file").arg(k);
        }
        run(&mut cmd)
    };
    let doc = eventually("the box listed", Duration::from_secs(30), async || {
        let (ok, out, _) = fleet(Some(&key));
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        (ok && v["boxes"][0]["name"] == "kiosk-enc").then_some(v)
    })
    .await;
    assert_eq!(doc["boxes"].as_array().unwrap().len(), 1, "{doc}");
    let (ok, out, err) = fleet(None);
    assert!(!ok, "listed without the key: {out}");
    assert!(err.contains("key"), "{err}");
    drop(d);
}

// (e), (f), (g): rekey (old key fails, new works), decrypt to a private
// copy and in place (stock sqlite3 reads them), each audited.
#[test]
fn rekey_and_decrypt_are_audited_and_sqlite3_reads_a_decrypted_copy() {
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (db, ssn, _) = demo(dir.path());
    let a = key_file(keys.path(), "a.key", KEY_A, 0o600);
    let b = key_file(keys.path(), "b.key", KEY_B, 0o600);
    assert!(ctl(&db, Some(&a), &["encrypt"]).0);
    let (ok, out, err) = ctl(
        &db,
        Some(&a),
        &["rekey", "--new-key-file", b.to_str().unwrap()],
    );
    assert!(ok, "{out}{err}");
    assert_eq!(names_in(dir.path()), ["registry.db"]);
    let (ok, _, err) = ctl(&db, Some(&a), &["stats"]);
    assert!(
        !ok && err.contains(&format!("key file {} does not open it", a.display())),
        "{err}"
    );
    let (ok, out, err) = ctl(&db, Some(&b), &["verify-audit"]);
    assert!(ok, "{out}{err}");

    // A plain copy only into a private directory, and never over a file.
    let open = tempfile::tempdir().unwrap();
    std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = open.path().join("copy.db");
    let (ok, _, err) = ctl(&db, Some(&b), &["decrypt", "--out", copy.to_str().unwrap()]);
    assert!(!ok && err.contains("open to others"), "{err}");
    assert!(!copy.exists());
    let private = tempfile::tempdir().unwrap();
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let copy = private.path().join("copy.db");
    let (ok, out, err) = ctl(&db, Some(&b), &["decrypt", "--out", copy.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    assert_eq!(names_in(private.path()), ["copy.db"]);
    assert_eq!(
        std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (ok, _, err) = ctl(&db, Some(&b), &["decrypt", "--out", copy.to_str().unwrap()]);
    assert!(!ok && err.contains("exists"), "{err}");
    let reg = open_with(&db, KEY_B);
    assert_eq!(
        actions(&reg)[actions(&reg).len() - 3..],
        ["db_encrypt", "db_rekey", "db_decrypt"]
    );
    drop(reg);
    if sqlite3_shell() {
        let (ok, out, err) = sqlite3(
            &copy,
            &format!("SELECT count(*) FROM persons WHERE ssn = '{ssn}';"),
        );
        assert!(ok && out.trim() == "1", "{out}{err}");
    }
    // In place: the registry becomes a plain file again.
    let (ok, out, err) = ctl(&db, Some(&b), &["decrypt"]);
    assert!(ok, "{out}{err}");
    assert_eq!(names_in(dir.path()), ["registry.db"]);
    let (ok, out, err) = ctl(&db, None, &["verify-audit"]);
    assert!(ok, "{out}{err}");
    let (ok, _, err) = ctl(&db, Some(&b), &["stats"]);
    assert!(!ok && err.contains("is not encrypted"), "{err}");
    let reg = Registry::open(&db, &OpenOptions::default()).unwrap();
    assert_eq!(actions(&reg).last().unwrap(), "db_decrypt");
    drop(reg);
    if sqlite3_shell() {
        let (ok, out, err) = sqlite3(&db, "SELECT action FROM audit ORDER BY id DESC LIMIT 1;");
        assert!(ok && out.trim() == "db_decrypt", "{out}{err}");
    }
}

// (4) A registry in use by a running cardlinkd is not converted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_in_use_by_the_daemon_is_not_encrypted() {
    let keys = tempfile::tempdir().unwrap();
    let key = key_file(keys.path(), "db.key", KEY_A, 0o600);
    let (d, _ptys) = Process::start(&[], "");
    let (ok, _, err) = ctl(&d.db, Some(&key), &["encrypt"]);
    assert!(
        !ok && err.contains("in use by a running cardlinkd"),
        "{err}"
    );
    let before = names_in(d.dir.path());
    assert!(
        !before.iter().any(|n| n.contains(".cardlink-")),
        "{before:?}"
    );
    let mut c = d.client().await;
    c.expect("VERSION").await;
    let (status, log) = d.stop();
    assert!(status.success(), "{log}");
}

// Privilege boundary: a key file others may read is refused (tool and
// daemon); a uid that cannot read the key file gets the named error.
#[test]
fn a_key_file_open_to_others_or_unreadable_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (db, _, _) = demo(dir.path());
    let loose = key_file(keys.path(), "loose.key", KEY_A, 0o644);
    let (ok, _, err) = ctl(&db, Some(&loose), &["encrypt"]);
    assert!(
        !ok && err.contains(&format!(
            "key file {} is accessible by others (mode 0644)",
            loose.display()
        )),
        "{err}"
    );
    assert_eq!(names_in(dir.path()), ["registry.db"], "nothing was changed");
    let (ok, _, err) = check_config(&format!(
        "database = {db:?}\ndatabase_key_file = {loose:?}\n"
    ));
    assert!(!ok && err.contains("is accessible by others"), "{err}");

    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: the other-uid half needs root");
        return;
    }
    // Directories everyone may enter; the key 0600 root's: uid 65534 gets
    // as far as the key and no further.
    let key = key_file(keys.path(), "db.key", KEY_A, 0o600);
    assert!(ctl(&db, Some(&key), &["encrypt"]).0);
    for d in [dir.path(), keys.path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let bin = tempfile::tempdir().unwrap();
    std::fs::set_permissions(bin.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = bin.path().join("cardlinkctl");
    std::fs::copy(env!("CARGO_BIN_EXE_cardlinkctl"), &exe).unwrap();
    let mut cmd = Command::new(&exe);
    cmd.args(["db", "--database"])
        .arg(&db)
        .arg("--key-file")
        .arg(&key)
        .arg("stats");
    as_nobody(&mut cmd);
    let (ok, out, err) = run(&mut cmd);
    assert!(!ok, "uid 65534 read the registry: {out}");
    assert!(
        err.contains(&format!(
            "key file {} cannot be read by this user",
            key.display()
        )),
        "{err}"
    );
}

// (5), (h): the CSV files of an export, of gen-demo and of a migration are
// created 0600 whatever the umask, and the temporary ones are removed.
#[test]
fn csv_copies_are_private_and_temporary_ones_are_removed() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let (db, _, _) = demo(dir.path());
    let tmp = tempfile::tempdir().unwrap();
    let umask0 = |cmd: &mut Command| {
        unsafe {
            cmd.pre_exec(|| {
                libc::umask(0);
                Ok(())
            });
        }
        cmd.env("TMPDIR", tmp.path());
    };
    let private = |d: &Path| {
        for n in names_in(d) {
            let m = std::fs::metadata(d.join(&n)).unwrap().permissions().mode() & 0o777;
            assert_eq!(m, 0o600, "{n} has mode {m:o}");
        }
    };
    let out = dir.path().join("export");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cardlinkctl"));
    cmd.args(["db", "--database"])
        .arg(&db)
        .arg("export")
        .arg(&out);
    umask0(&mut cmd);
    let (ok, o, err) = run(&mut cmd);
    assert!(ok, "{o}{err}");
    assert_eq!(names_in(&out).len(), 6, "five tables and audit.csv");
    private(&out);
    let csv = dir.path().join("csv");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cardlinkctl"));
    cmd.args(["db", "--database"])
        .arg(&db)
        .args(["gen-demo", "--persons", "10", "--csv"])
        .arg(&csv);
    umask0(&mut cmd);
    assert!(run(&mut cmd).0);
    private(&csv);
    // gen-demo into a new registry and a migration (SQLite to SQLite,
    // encrypted at both ends) pass through temporary CSV files: none is left.
    let keys = tempfile::tempdir().unwrap();
    let key = key_file(keys.path(), "db.key", KEY_A, 0o600);
    let enc = dir.path().join("enc.db");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cardlinkctl"));
    cmd.args(["db", "--database"])
        .arg(&enc)
        .arg("--key-file")
        .arg(&key)
        .args(["gen-demo", "--persons", "50"]);
    umask0(&mut cmd);
    let (ok, o, err) = run(&mut cmd);
    assert!(ok, "{o}{err}");
    let copy = dir.path().join("copy.db");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cardlinkctl"));
    cmd.args(["db", "--key-file"])
        .arg(&key)
        .arg("migrate")
        .arg("--from")
        .arg(&enc)
        .arg("--to")
        .arg(&copy);
    umask0(&mut cmd);
    let (ok, o, err) = run(&mut cmd);
    assert!(ok, "{o}{err}");
    assert_eq!(
        names_in(tmp.path()),
        Vec::<String>::new(),
        "temporary files left"
    );
    for f in [&enc, &copy] {
        let bytes = std::fs::read(f).unwrap();
        assert!(
            !contains(&bytes, b"SQLite format 3"),
            "{} is plain",
            f.display()
        );
    }
}
