//! Forward-secure sealing of the audit chain and SM3, through the CLI as an
//! operator and an auditor meet them: `cardlinkctl db seal init`, rows
//! written by `db repair` (each one audited, so sealed), tampering done with
//! the stock `sqlite3` shell (or, for a chain recomputed from scratch, a
//! small forger below that knows the hash recipe but not the key), and
//! `db verify-audit --verify-key` naming what was done, each with its own
//! message and exit status.
//!
//! The shell is a system package (`sqlite3`, which `.ci/run` installs) and
//! PostgreSQL the suite's server: without them these tests say they are
//! skipped, except under `CI=true`, where they fail.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::Digest;

/// Whether the stock shell is there (panics under `CI=true` when not).
fn shell() -> bool {
    common::sqlite3::shell().is_some()
}

/// Runs the stock shell on `db` with `sql` on stdin; it must succeed.
fn sqlite3(db: &Path, sql: &str) {
    let (ok, _, err) = common::sqlite3::run(db, &[], sql);
    assert!(ok, "sqlite3: {err}");
}

/// `cardlinkctl db --database DB ARGS…`: (exit status, stdout + stderr).
fn ctl(db: &str, args: &[&str]) -> (i32, String) {
    ctl_cmd(db, args, |_| {})
}

fn ctl_cmd(db: &str, args: &[&str], adjust: impl FnOnce(&mut Command)) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cardlinkctl"));
    cmd.arg("db").arg("--database").arg(db).args(args);
    adjust(&mut cmd);
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn ok(db: &str, args: &[&str]) -> String {
    let (code, out) = ctl(db, args);
    assert_eq!(code, 0, "cardlinkctl db {args:?}: {out}");
    out
}

/// A SQLite registry sealed by box `window-1`: `seal init`, then `rows`
/// audited `db repair`s. Returns (dir, registry, verification key).
fn sealed_sqlite(rows: usize, hash: &str) -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("registry.db").display().to_string();
    let verify = dir.path().join("window-1.verify").display().to_string();
    ok(&db, &["--audit-hash", hash, "init"]);
    ok(&db, &["repair"]); // a row before sealing began
    let out = ok(
        &db,
        &["seal", "init", "--out", &verify, "--box", "window-1"],
    );
    assert!(out.contains("box window-1 seals"), "{out}");
    for _ in 0..rows {
        ok(&db, &["repair"]);
    }
    (dir, db, verify)
}

fn verify(db: &str, verify_key: &str) -> (i32, String) {
    ctl(db, &["verify-audit", "--verify-key", verify_key])
}

#[test]
fn a_sealed_registry_verifies_and_its_keys_are_private() {
    let (dir, db, vk) = sealed_sqlite(5, "sha256");
    let (code, out) = verify(&db, &vk);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("audit chain intact and sealed: 7 rows (sha256)"),
        "{out}"
    );
    assert!(
        out.contains("box window-1: 6 sealed rows, last seal index 5, key at 6"),
        "{out}"
    );
    for f in ["registry.db.seal", "window-1.verify"] {
        let mode = std::fs::metadata(dir.path().join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    // Written once.
    let (code, out) = ctl(&db, &["seal", "init", "--out", &vk, "--box", "window-2"]);
    assert_ne!(code, 0);
    assert!(out.contains("exists already"), "{out}");
    // Without keys: today's check of the chain alone.
    let (code, out) = ctl(&db, &["verify-audit"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("audit chain intact: 7 rows (sha256)"), "{out}");
}

#[test]
fn an_edited_row_is_named() {
    if !shell() {
        return;
    }
    let (_dir, db, vk) = sealed_sqlite(5, "sha256");
    sqlite3(
        Path::new(&db),
        "DROP TRIGGER audit_no_update;\nUPDATE audit SET outcome = 'ok missing=9 stale=0 orphaned=0' WHERE id = 4;\n",
    );
    let (code, out) = verify(&db, &vk);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("EDITED ROW: row 4 was edited: its content does not match its hash"),
        "{out}"
    );
}

#[test]
fn a_deleted_row_is_named() {
    if !shell() {
        return;
    }
    let (_dir, db, vk) = sealed_sqlite(5, "sha256");
    sqlite3(
        Path::new(&db),
        "DROP TRIGGER audit_no_delete;\nDELETE FROM audit WHERE id = 4;\n",
    );
    let (code, out) = verify(&db, &vk);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains("DELETED ROWS: row 4 was deleted: row 3 is followed by row 5"),
        "{out}"
    );
}

#[test]
fn rows_cut_from_the_end_are_named() {
    if !shell() {
        return;
    }
    let (_dir, db, vk) = sealed_sqlite(5, "sha256");
    sqlite3(
        Path::new(&db),
        "DROP TRIGGER audit_no_delete;\nDELETE FROM audit WHERE id > 4;\n",
    );
    // The chain alone cannot tell.
    let (code, out) = ctl(&db, &["verify-audit"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = verify(&db, &vk);
    assert_eq!(code, 5, "{out}");
    assert!(
        out.contains("ROWS CUT FROM THE END: box window-1's key is at seal index 6, but its last sealed row in the registry has index 2: 3 sealed row(s) were cut from the end"),
        "{out}"
    );
}

/// A forger who knows the recipe of `audit.rs` (and not the key) deletes
/// a row, edits another and recomputes every id and hash from scratch.
#[test]
fn a_chain_recomputed_from_scratch_is_named() {
    let (_dir, db, vk) = sealed_sqlite(5, "sha256");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;
         DELETE FROM audit WHERE id = 4;
         UPDATE audit SET outcome = 'ok missing=9 stale=0 orphaned=0' WHERE id = 5;",
    )
    .unwrap();
    let rows: Vec<(i64, Vec<String>)> = conn
        .prepare("SELECT id, at, actor, action, coalesce(ssn, ''), outcome FROM audit ORDER BY id")
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                (1..6)
                    .map(|i| r.get::<_, String>(i))
                    .collect::<Result<_, _>>()?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut prev = "0".repeat(64);
    for (n, (id, f)) in rows.iter().enumerate() {
        let new_id = n as i64 + 1;
        let text = [
            &prev,
            &new_id.to_string(),
            &f[0],
            &f[1],
            &f[2],
            &f[3],
            &f[4],
        ]
        .map(|s| s.as_str())
        .join("\u{1F}");
        let hash = hex::encode(sha2::Sha256::digest(text.as_bytes()));
        conn.execute(
            "UPDATE audit SET id = ?1, prev_hash = ?2, hash = ?3 WHERE id = ?4",
            rusqlite::params![new_id, prev, hash, id],
        )
        .unwrap();
        prev = hash;
    }
    drop(conn);
    // The chain alone is fooled.
    let (code, out) = ctl(&db, &["verify-audit"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = verify(&db, &vk);
    assert_eq!(code, 6, "{out}");
    assert!(out.contains("CHAIN RECOMPUTED: row 4's seal does not match (box window-1, index 3): the row or the chain before it was rewritten by someone without the key"), "{out}");
}

#[test]
fn a_missing_sealing_key_is_named_and_stops_sealed_writes() {
    let (dir, db, vk) = sealed_sqlite(2, "sha256");
    std::fs::remove_file(dir.path().join("registry.db.seal")).unwrap();
    let (code, out) = verify(&db, &vk);
    assert_eq!(code, 7, "{out}");
    assert!(
        out.contains("SEALING KEY MISSING: ")
            && out.contains("the sealing key file is gone (box window-1)"),
        "{out}"
    );
    // No unsealed row is written in its place.
    let (code, out) = ctl(&db, &["repair"]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("sealing key missing"), "{out}");
}

/// A key file set back to an earlier index (to hide rows cut from the
/// end) does not hold the box's key there.
#[test]
fn a_key_file_set_back_is_named() {
    if !shell() {
        return;
    }
    let (dir, db, vk) = sealed_sqlite(4, "sha256");
    sqlite3(
        Path::new(&db),
        "DROP TRIGGER audit_no_delete;\nDELETE FROM audit WHERE id > 4;\n",
    );
    let key = dir.path().join("registry.db.seal");
    let text = std::fs::read_to_string(&key).unwrap();
    let set_back: String = text
        .lines()
        .map(|l| {
            if l.starts_with("index=") {
                "index=3".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&key, set_back).unwrap();
    let (code, out) = verify(&db, &vk);
    assert_eq!(code, 8, "{out}");
    assert!(
        out.contains("FORGED: ") && out.contains("it was replaced or set back"),
        "{out}"
    );
}

#[test]
fn an_sm3_chain_is_sealed_with_hmac_sm3_and_keeps_its_algorithm() {
    let (dir, db, vk) = sealed_sqlite(3, "sm3");
    let text = std::fs::read_to_string(&vk).unwrap();
    assert!(text.contains("alg=sm3"), "{text}");
    let (code, out) = verify(&db, &vk);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("intact and sealed: 5 rows (sm3)"), "{out}");
    // Its rows are SM3: recomputing one with SHA-256 does not give its hash.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (prev, at, hash): (String, String, String) = conn
        .query_row(
            "SELECT prev_hash, at, hash FROM audit WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    let text = format!("{prev}\u{1F}1\u{1F}{at}\u{1F}cardlinkctl\u{1F}repair\u{1F}\u{1F}ok missing=0 stale=0 orphaned=0");
    assert_ne!(hex::encode(sha2::Sha256::digest(text.as_bytes())), hash);
    assert_eq!(hex::encode(sm3::Sm3::digest(text.as_bytes())), hash);
    drop(conn);
    // A chain with rows keeps its algorithm: asking for the other is an error.
    let (code, out) = ctl(&db, &["--audit-hash", "sha256", "repair"]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("audit chain is sm3 and has rows; audit_hash = \"sha256\" cannot change it"),
        "{out}"
    );
    // A verification key of the other algorithm is refused.
    let (_d2, _db2, vk_sha) = sealed_sqlite(0, "sha256");
    let (code, out) = verify(&db, &vk_sha);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("is for a sha256 chain; this registry's is sm3"),
        "{out}"
    );
    let _ = dir;
}

/// `db migrate` SQLite → PostgreSQL → SQLite keeps the chain's algorithm
/// and its seals; the box's own rows on the copies are sealed with its key.
#[test]
fn migrate_keeps_the_algorithm_and_the_seals_both_ways() {
    let Some(pg) = common::pg::database("migrate_keeps_the_algorithm_and_the_seals_both_ways")
    else {
        return;
    };
    let (dir, db, vk) = sealed_sqlite(2, "sm3");
    let key = dir.path().join("registry.db.seal").display().to_string();
    let out = ok(
        &db,
        &[
            "--seal-key",
            &key,
            "migrate",
            "--from",
            &db,
            "--to",
            &pg.url,
        ],
    );
    assert!(out.contains("(chain verified)"), "{out}");
    let (code, out) = ctl(
        &pg.url,
        &["verify-audit", "--verify-key", &vk, "--key-state", &key],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("intact and sealed: 6 rows (sm3)"), "{out}");
    let back = dir.path().join("back.db").display().to_string();
    ok(
        &db,
        &[
            "--seal-key",
            &key,
            "migrate",
            "--from",
            &pg.url,
            "--to",
            &back,
        ],
    );
    let (code, out) = ctl(
        &back,
        &["verify-audit", "--verify-key", &vk, "--key-state", &key],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("intact and sealed: 8 rows (sm3)"), "{out}");
}

/// Two boxes write one PostgreSQL registry, each sealing with its own key;
/// the auditor holds one verification key per box.
#[test]
fn two_boxes_seal_one_shared_registry_each_with_its_own_key() {
    let Some(pg) = common::pg::database("two_boxes_seal_one_shared_registry_each_with_its_own_key")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f).display().to_string();
    ok(&pg.url, &["init"]);
    for b in ["box-a", "box-b"] {
        ok(
            &pg.url,
            &[
                "--seal-key",
                &p(&format!("{b}.seal")),
                "seal",
                "init",
                "--out",
                &p(&format!("{b}.verify")),
                "--box",
                b,
            ],
        );
    }
    for i in 0..6 {
        let b = if i % 2 == 0 { "box-a" } else { "box-b" };
        ok(&pg.url, &["--seal-key", &p(&format!("{b}.seal")), "repair"]);
    }
    let all = [
        "verify-audit",
        "--verify-key",
        &p("box-a.verify"),
        "--verify-key",
        &p("box-b.verify"),
        "--key-state",
        &p("box-a.seal"),
        "--key-state",
        &p("box-b.seal"),
    ];
    let (code, out) = ctl(&pg.url, &all);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("box box-a: 4 sealed rows"), "{out}");
    assert!(out.contains("box box-b: 4 sealed rows"), "{out}");
    // One box's key alone: the other box's rows are not vouched for.
    let (code, out) = ctl(
        &pg.url,
        &["verify-audit", "--verify-key", &p("box-a.verify")],
    );
    assert_eq!(code, 8, "{out}");
    assert!(
        out.contains("sealed by box \"box-b\", for which no verification key was given"),
        "{out}"
    );
    // Tamper with a row of box-b.
    let id = common::pg::run(
        &pg.url,
        "SELECT max(id) FROM audit WHERE seal_box = 'box-b'",
        &[],
        true,
    );
    common::pg::run(
        &pg.url,
        "ALTER TABLE audit DISABLE TRIGGER audit_no_update",
        &[],
        false,
    );
    common::pg::run(
        &pg.url,
        &format!("UPDATE audit SET outcome = 'ok missing=9 stale=0 orphaned=0' WHERE id = {id}"),
        &[],
        false,
    );
    let (code, out) = ctl(&pg.url, &all);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains(&format!("EDITED ROW: row {id} was edited")),
        "{out}"
    );
}

/// The sealing key is the daemon user's alone: 0600, owned by the uid that
/// made it (here 4242, standing for `cardlink`); another local user
/// (65534) can neither read it nor seal with it.
#[test]
fn another_user_cannot_read_or_use_the_sealing_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(dir.path(), Some(4242), Some(4242)).unwrap();
    let db = dir.path().join("registry.db").display().to_string();
    let verify = dir.path().join("v.key").display().to_string();
    let as_uid = |uid: u32| {
        move |cmd: &mut Command| unsafe {
            cmd.pre_exec(move || {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(uid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    };
    let (code, out) = ctl_cmd(&db, &["init"], as_uid(4242));
    assert_eq!(code, 0, "{out}");
    let (code, out) = ctl_cmd(&db, &["seal", "init", "--out", &verify], as_uid(4242));
    assert_eq!(code, 0, "{out}");
    let (code, out) = ctl_cmd(&db, &["repair"], as_uid(4242));
    assert_eq!(code, 0, "{out}");
    let key: PathBuf = dir.path().join("registry.db.seal");
    let meta = std::fs::metadata(&key).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (4242, 0o600));
    // The other user.
    let mut cat = Command::new("cat");
    cat.arg(&key);
    common::as_nobody(&mut cat);
    let out = cat.output().unwrap();
    assert!(!out.status.success(), "uid 65534 read the sealing key");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, out) = ctl_cmd(
        &db,
        &["--seal-key", &key.display().to_string(), "repair"],
        as_uid(65534),
    );
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("Permission denied"), "{out}");
}

/// Lookups through the daemon's socket are sealed as they are audited;
/// once the box's key is gone, a lookup is refused (`registry`) rather than
/// shown without its sealed row.
#[tokio::test]
async fn reads_through_the_daemon_are_sealed_and_refused_without_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::fixture_db(dir.path());
    let dbs = db.display().to_string();
    let vk = dir.path().join("v.key").display().to_string();
    let key = dir.path().join("registry.db.seal");
    assert_eq!(key.parent(), db.parent());
    ok(&dbs, &["seal", "init", "--out", &vk, "--box", "window-1"]);
    let d = common::Daemon::start_on(
        dir,
        db.clone(),
        &[],
        "role = \"window\"",
        cardlink::sim::VirtualPorts::new(),
    )
    .await;
    let mut c = d.client().await;
    let lookup = serde_json::json!({"cmd": "lookup", "number": common::card(common::SPOUSE)});
    for _ in 0..3 {
        let r = c.request(lookup.clone()).await;
        assert_eq!(r["ok"], true, "{r}");
    }
    let (code, out) = verify(&dbs, &vk);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("box window-1: 4 sealed rows, last seal index 3, key at 4"),
        "{out}"
    );
    std::fs::remove_file(&key).unwrap();
    let r = c.request(lookup).await;
    assert_eq!(
        (r["ok"].as_bool(), r["code"].as_str()),
        (Some(false), Some("registry")),
        "{r}"
    );
    d.stop().await;
}
