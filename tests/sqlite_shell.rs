//! The registry file as an administrator meets it with Debian's `sqlite3`
//! shell: it opens, every table and view reads, and an edit made with plain
//! SQL is found by `cardlinkctl db check` and taken over by `db repair`.
//!
//! The shell is a system package (`sqlite3`, which `.ci/run` installs):
//! without it these tests say they are skipped, except under `CI=true`,
//! where they fail.

mod common;

use std::path::Path;
use std::process::Command;

use cardlink::registry::{Lookup, OpenOptions, Outcome, Registry, Role};
use common::sqlite3::{run as sqlite3, shell};
use common::*;

fn ctl(db: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cardlinkctl"))
        .arg("db")
        .arg("--database")
        .arg(db)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn the_stock_shell_opens_a_gen_demo_registry_and_reads_every_table_and_view() {
    if shell().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("registry.db");
    let (code, text) = ctl(&db, &["gen-demo", "--persons", "500", "--months", "2"]);
    assert_eq!(code, Some(0), "{text}");
    // A box's heartbeat, as cardlinkd writes it (the fleet view's table).
    cardlink::registry::fleet::beat_sqlite(
        &db,
        &cardlink::registry::fleet::Heartbeat {
            name: "window-1".into(),
            role: "window".into(),
            version: "0.1.0".into(),
            interval_s: 15,
            readers: vec![cardlink::registry::fleet::ReaderBeat {
                name: "r1".into(),
                state: "connected".into(),
            }],
            printer: None,
            last_read: Some(std::time::SystemTime::now()),
            uptime_s: 60,
        },
        std::time::Duration::from_secs(1),
    )
    .unwrap();

    let (ok, schema, err) = sqlite3(&db, &[], ".schema\n");
    assert!(ok && err.is_empty(), "{err}");
    assert!(
        schema.contains("CREATE TABLE resolution")
            && schema.contains("CREATE VIEW resolution_source"),
        "{schema}"
    );
    let (ok, out, err) = sqlite3(
        &db,
        &[],
        "PRAGMA integrity_check;\nPRAGMA foreign_key_check;\n",
    );
    assert!(ok && err.is_empty(), "{err}");
    assert_eq!(out.trim(), "ok");

    let (ok, names, err) = sqlite3(
        &db,
        &[],
        "SELECT type, name FROM sqlite_schema WHERE type IN ('table', 'view') ORDER BY name;\n",
    );
    assert!(ok && err.is_empty(), "{err}");
    let names: Vec<(String, String)> = names
        .lines()
        .filter_map(|l| l.split_once('|'))
        .map(|(t, n)| (t.to_string(), n.to_string()))
        .collect();
    let views: Vec<&str> = names
        .iter()
        .filter(|(t, _)| t == "view")
        .map(|(_, n)| n.as_str())
        .collect();
    assert_eq!(views, vec!["resolution_source"]);
    for table in [
        "accounts",
        "audit",
        "cards",
        "contributions",
        "family_links",
        "persons",
        "resolution",
    ] {
        assert!(names.iter().any(|(_, n)| n == table), "{table}: {names:?}");
    }
    for (_, name) in &names {
        let (ok, out, err) = sqlite3(
            &db,
            &[],
            &format!("SELECT * FROM \"{name}\" LIMIT 3;\nSELECT count(*) FROM \"{name}\";\n"),
        );
        assert!(ok && err.is_empty(), "{name}: {err}");
        let count: u64 = out.lines().last().unwrap_or("").parse().unwrap_or(0);
        if name != "sqlite_sequence" {
            assert!(count > 0, "{name} is empty: {out}");
        }
    }
    // The view the shell computes is the table cardlink wrote.
    let (ok, out, err) = sqlite3(
        &db,
        &[],
        "SELECT count(*) FROM (SELECT * FROM resolution_source EXCEPT SELECT * FROM resolution);\n\
         SELECT count(*) FROM resolution WHERE members <> '[]';\n",
    );
    assert!(ok && err.is_empty(), "{err}");
    let counts: Vec<u64> = out.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(counts[0], 0, "{out}");
    assert!(counts[1] > 0, "{out}");
}

#[test]
fn a_plain_sql_edit_in_the_shell_then_db_repair_leaves_a_consistent_registry() {
    if shell().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = fixture_db(dir.path());
    let (code, text) = ctl(&db, &["check"]);
    assert_eq!(code, Some(0), "{text}");

    // An administrator's fixes, typed into the shell: a renamed holder, a
    // card reported lost, a balance corrected, a link revoked by hand, a
    // new person with a card.
    let newcomer = demo_ssn_full(900);
    let edit = format!(
        "BEGIN;
         UPDATE persons SET name = '张卫' WHERE ssn = '{holder}';
         UPDATE cards SET status = 'lost' WHERE ssn = '{member2}';
         UPDATE accounts SET balance_fen = 4242 WHERE holder_ssn = '{holder2}';
         UPDATE family_links SET status = 'revoked', revoked_at = '2026-01-01T00:00:00Z'
          WHERE member_ssn = '{spouse}' AND status = 'active';
         INSERT INTO persons (ssn, name, sex, birth_date, insurance_type, insurance_status, region)
              VALUES ('{newcomer}', '王新', 'F', '1990-01-01', 'resident', 'active', '330100');
         INSERT INTO cards VALUES ('Z00000001', NULL, '{newcomer}', 3, '2026-01-01', '2036-01-01', 'active');
         COMMIT;\n",
        holder = demo_ssn_full(HOLDER),
        member2 = demo_ssn_full(MEMBER2),
        holder2 = demo_ssn_full(HOLDER2),
        spouse = demo_ssn_full(SPOUSE),
    );
    let (ok, _, err) = sqlite3(&db, &[], &edit);
    assert!(ok && err.is_empty(), "{err}");

    let (code, text) = ctl(&db, &["check"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("read model out of date: 1 person(s) without a resolution row")
            && text.contains("run `cardlinkctl db repair`"),
        "{text}"
    );
    // No full SSN in the report.
    assert!(!text.contains(&newcomer), "{text}");

    let (code, text) = ctl(&db, &["repair"]);
    assert_eq!(code, Some(0), "{text}");
    // HOLDER (member list), SPOUSE (payer), HOLDER2 (balance), MEMBER2
    // (card, payer balance): four stale rows; the newcomer added.
    assert!(
        text.contains("1 row(s) added, 4 stale row(s) rewritten, 0 row(s)"),
        "{text}"
    );
    let (code, text) = ctl(&db, &["check"]);
    assert_eq!(code, Some(0), "{text}");

    // The registry now answers with the edits.
    let reg = Registry::open(&db, &OpenOptions::default()).unwrap();
    let r = reg.resolve(&Lookup::card_no(card(HOLDER))).unwrap();
    assert_eq!((r.outcome, r.role), (Outcome::Ok, Role::None));
    assert_eq!(r.person.unwrap().name, "张卫");
    let r = reg.resolve(&Lookup::card_no(card(SPOUSE))).unwrap();
    assert_eq!(r.role, Role::None);
    let r = reg.resolve(&Lookup::card_no(card(HOLDER2))).unwrap();
    assert_eq!(r.payer.unwrap().balance_fen, Some(4242));
    let r = reg.resolve(&Lookup::ssn(ssn(MEMBER2))).unwrap();
    assert_eq!(r.outcome, Outcome::Lost);
    let r = reg.resolve(&Lookup::card_no("Z00000001")).unwrap();
    assert_eq!(r.outcome, Outcome::Ok);
    // The repair is in the audit chain.
    let (code, text) = ctl(&db, &["verify-audit"]);
    assert_eq!(code, Some(0), "{text}");
    let (_, out, _) = sqlite3(
        &db,
        &[],
        "SELECT outcome FROM audit WHERE action = 'repair';\n",
    );
    assert_eq!(out.trim(), "ok missing=1 stale=4 orphaned=0");
}
