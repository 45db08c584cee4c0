//! Registry behaviour: every resolution outcome, every binding rule,
//! concurrency, locking, import and audit tampering.

mod common;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use cardlink::registry::audit::Entry;
use cardlink::registry::import::ImportError;
use cardlink::registry::Relation;
use cardlink::registry::{
    BindError, BindPolicy, Channel, Drift, Lookup, OpenOptions, Outcome, Registry, RegistryError,
    Role,
};
use common::*;

on_both_backends!(
    holder_swipe_lists_members_and_balance,
    member_swipe_names_the_payer,
    explicit_outcomes,
    every_bind_rule_has_its_own_refusal,
    bind_then_unbind,
    concurrent_binds_for_one_member_exactly_one_wins,
    import_with_bad_rows_imports_nothing_and_names_every_row,
    audit_tampering_is_detected,
    contributions_newest_first,
    gen_demo_is_deterministic_and_consistent,
    read_model_follows_binds_and_is_repaired_after_plain_sql_edits,
    an_import_into_a_populated_registry_keeps_the_read_model_exact,
    export_then_import_gives_the_same_registry,
    an_import_refuses_what_the_tables_refuse_with_the_same_reasons,
    an_empty_registry_exports_files_that_import,
    copy_to_the_other_backend_keeps_the_audit_chain,
    concurrent_writers_keep_one_audit_chain,
);

fn bind_req<'a>(h: u64, m: u64, rel: &'a str) -> cardlink::registry::BindRequest<'a> {
    cardlink::registry::BindRequest {
        holder: ssn(h),
        member: ssn(m),
        relation: cardlink::registry::Relation::parse(rel).expect("a relation"),
        channel: Channel::Window,
        operator: "clerk1",
        consent: cardlink::registry::consent::CURRENT.version,
        actor: "test",
    }
}

fn holder_swipe_lists_members_and_balance(b: Backend) {
    let Some(fx) = Fx::fixture(b, "holder_swipe_lists_members_and_balance") else {
        return;
    };
    let reg = fx.open();
    for lookup in [
        Lookup::card_no(card(HOLDER)),
        Lookup::ssn(ssn(HOLDER)),
        Lookup::pan(pan(HOLDER)),
    ] {
        let r = reg.resolve(&lookup).unwrap();
        assert_eq!(r.outcome, Outcome::Ok);
        assert_eq!(r.role, Role::Holder);
        assert_eq!(r.person.as_ref().unwrap().name, "张伟");
        let payer = r.payer.unwrap();
        assert_eq!(payer.ssn, ssn(HOLDER));
        assert_eq!(payer.relation, None);
        assert_eq!(payer.balance_fen, Some(123_456));
        assert_eq!(r.members.len(), 1);
        assert_eq!(r.members[0].ssn, ssn(SPOUSE));
        assert_eq!(r.members[0].relation, "spouse");
    }
}

fn member_swipe_names_the_payer(b: Backend) {
    let Some(fx) = Fx::fixture(b, "member_swipe_names_the_payer") else {
        return;
    };
    let reg = fx.open();
    let r = reg.resolve(&Lookup::card_no(card(SPOUSE))).unwrap();
    assert_eq!(r.outcome, Outcome::Ok);
    assert_eq!(r.role, Role::Member);
    let payer = r.payer.unwrap();
    assert_eq!(payer.ssn, ssn(HOLDER));
    assert_eq!(payer.name, "张伟");
    assert_eq!(payer.relation.as_deref(), Some("spouse"));
    assert_eq!(payer.balance_fen, Some(123_456));
    assert!(r.members.is_empty());
}

fn explicit_outcomes(b: Backend) {
    let Some(fx) = Fx::fixture(b, "explicit_outcomes") else {
        return;
    };
    let reg = fx.open();
    let outcome = |l: Lookup| reg.resolve(&l).unwrap();
    assert_eq!(
        outcome(Lookup::card_no("Z99999999")).outcome,
        Outcome::Unknown
    );
    assert_eq!(
        outcome(Lookup::pan("6222029999999999990")).outcome,
        Outcome::Unknown
    );
    assert_eq!(outcome(Lookup::ssn(ssn(9999))).outcome, Outcome::Unknown);
    let lost = outcome(Lookup::card_no(card(LOST)));
    assert_eq!(lost.outcome, Outcome::Lost);
    assert!(lost.payer.is_none() && lost.members.is_empty());
    assert_eq!(
        outcome(Lookup::card_no(card(FROZEN))).outcome,
        Outcome::Frozen
    );
    assert_eq!(
        outcome(Lookup::card_no(card(CANCELLED))).outcome,
        Outcome::Cancelled
    );
    assert_eq!(
        outcome(Lookup::card_no(card(EXPIRED))).outcome,
        Outcome::Expired
    );
    assert_eq!(outcome(Lookup::ssn(ssn(NO_CARD))).outcome, Outcome::NoCard);
    // A stripe whose SSN does not belong to the card's owner.
    let mismatch = Lookup {
        ssn: Some(ssn(SPOUSE)),
        pan: Some(pan(HOLDER)),
        card_no: None,
    };
    let r = outcome(mismatch);
    assert_eq!(r.outcome, Outcome::Mismatch);
    assert!(r.person.is_none());
    let none = outcome(Lookup::card_no(card(CHILD)));
    assert_eq!((none.outcome, none.role), (Outcome::Ok, Role::None));
}

fn every_bind_rule_has_its_own_refusal(b: Backend) {
    let Some(fx) = Fx::fixture(b, "every_bind_rule_has_its_own_refusal") else {
        return;
    };
    let mut reg = fx.open();
    // A province that kept the 2021 list (spouse, parent, child).
    let policy = BindPolicy {
        relations: vec![Relation::Spouse, Relation::Parent, Relation::Child],
        ..BindPolicy::default()
    };
    let cases: Vec<(u64, u64, &str, &str)> = vec![
        (HOLDER, HOLDER, "spouse", "same_person"),
        (HOLDER, CHILD, "sibling", "relation_not_allowed"),
        (9999, CHILD, "child", "holder_unknown"),
        (HOLDER, 9999, "child", "member_unknown"),
        (SPOUSE, CHILD, "child", "holder_not_employee"),
        (HOLDER_SUSPENDED, CHILD, "child", "holder_not_employee"),
        (HOLDER_EXPIRED, CHILD, "child", "holder_no_active_card"),
        (HOLDER, UNINSURED, "parent", "member_not_insured"),
        (HOLDER, SUSPENDED, "parent", "member_not_insured"),
        (HOLDER, LOST, "parent", "member_no_active_card"),
        (HOLDER, EXPIRED, "parent", "member_no_active_card"),
        (HOLDER, NO_CARD, "parent", "member_no_active_card"),
        (HOLDER, SPOUSE, "spouse", "already_linked"),
        (HOLDER2, SPOUSE, "spouse", "member_has_payer"),
    ];
    for (h, m, rel, code) in cases {
        let err = reg.bind(&bind_req(h, m, rel), &policy).unwrap_err();
        assert_eq!(err.code(), code, "bind {h} -> {m} as {rel}: {err}");
    }
    // The refusals are audited.
    let refusals = fx.count(
        "SELECT count(*) FROM audit WHERE outcome LIKE 'refused:%'",
        &[],
    );
    assert_eq!(refusals, 14);
    // Messages never carry a full SSN.
    let msg = BindError::HolderUnknown(ssn(HOLDER)).to_string();
    assert!(!msg.contains(ssn(HOLDER).expose()));
    // A configurable relation list.
    let wide = BindPolicy {
        relations: vec![cardlink::registry::Relation::Grandparent],
        ..BindPolicy::default()
    };
    assert_eq!(
        reg.bind(&bind_req(HOLDER, CHILD, "child"), &wide)
            .unwrap_err()
            .code(),
        "relation_not_allowed"
    );
}

fn bind_then_unbind(b: Backend) {
    let Some(fx) = Fx::fixture(b, "bind_then_unbind") else {
        return;
    };
    let mut reg = fx.open();
    let policy = BindPolicy::default();
    let bound = reg
        .bind(&bind_req(HOLDER, CHILD, "child"), &policy)
        .unwrap();
    // The bind answers its own audit row (what a receipt prints).
    let last = |fx: &Fx| fx.count("SELECT max(id) FROM audit", &[]);
    assert_eq!(bound.seq, last(&fx));
    let mut rows = Vec::new();
    reg.audit_rows(&mut |r| {
        rows.push(r);
        Ok(())
    })
    .unwrap();
    let row = rows.iter().find(|r| r.id == bound.seq).unwrap();
    assert_eq!((row.action.as_str(), &row.hash), ("bind", &bound.hash));
    assert_eq!(bound.short_hash(), &row.hash[..12]);
    // A holder may also cover an employee parent.
    reg.bind(&bind_req(HOLDER, PARENT, "parent"), &policy)
        .unwrap();
    let members: Vec<_> = reg
        .members(&ssn(HOLDER))
        .unwrap()
        .into_iter()
        .map(|m| m.ssn)
        .collect();
    assert_eq!(members, vec![ssn(SPOUSE), ssn(CHILD), ssn(PARENT)]);
    let r = reg.resolve(&Lookup::card_no(card(CHILD))).unwrap();
    assert_eq!(r.role, Role::Member);
    assert_eq!(r.payer.unwrap().relation.as_deref(), Some("child"));

    let unbound = reg
        .unbind(&ssn(HOLDER), &ssn(CHILD), "clerk1", "test")
        .unwrap();
    assert_eq!(unbound.seq, last(&fx));
    assert!(unbound.seq > bound.seq && unbound.hash != bound.hash);
    assert_eq!(
        reg.unbind(&ssn(HOLDER), &ssn(CHILD), "clerk1", "test")
            .unwrap_err()
            .code(),
        "not_linked"
    );
    assert_eq!(
        reg.resolve(&Lookup::card_no(card(CHILD))).unwrap().role,
        Role::None
    );
    // Revoked links stay in the table with their revocation time.
    let revoked = fx.count(
        "SELECT count(*) FROM family_links WHERE status='revoked' AND revoked_at IS NOT NULL",
        &[],
    );
    assert_eq!(revoked, 1);
    // Now another holder may take the child.
    reg.bind(&bind_req(HOLDER2, CHILD, "child"), &policy)
        .unwrap();
    assert!(reg.verify_audit().unwrap().broken.is_none());
}

fn concurrent_binds_for_one_member_exactly_one_wins(b: Backend) {
    let Some(fx) = Fx::fixture(b, "concurrent_binds_for_one_member_exactly_one_wins") else {
        return;
    };
    let fx = Arc::new(fx);
    for round in 0..10 {
        let barrier = Arc::new(Barrier::new(2));
        let handles: Vec<_> = [HOLDER, HOLDER2]
            .into_iter()
            .map(|holder| {
                let fx = fx.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let mut reg = fx.open();
                    barrier.wait();
                    reg.bind(&bind_req(holder, CHILD, "child"), &BindPolicy::default())
                        .map_err(|e| e.code())
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let wins = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "round {round}: {results:?}");
        let loser = results
            .iter()
            .find_map(|r| r.as_ref().err().copied())
            .unwrap();
        assert_eq!(loser, "member_has_payer");
        let mut reg = fx.open();
        let active = fx.count(
            "SELECT count(*) FROM family_links WHERE member_ssn = $1 AND status='active'",
            &[ssn(CHILD).expose()],
        );
        assert_eq!(active, 1);
        // Reset for the next round.
        let payer = reg
            .resolve(&Lookup::ssn(ssn(CHILD)))
            .unwrap()
            .payer
            .unwrap()
            .ssn;
        reg.unbind(&payer, &ssn(CHILD), "t", "t").unwrap();
    }
}

#[test]
fn locked_database_waits_then_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let db = fixture_db(dir.path());
    let opts = OpenOptions {
        busy_timeout: Duration::from_millis(200),
        ..OpenOptions::default()
    };
    let blocker = rusqlite::Connection::open(&db).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut reg = Registry::open(&db, &opts).unwrap();
    // Reads still work under WAL while another connection writes.
    assert_eq!(
        reg.resolve(&Lookup::card_no(card(HOLDER))).unwrap().outcome,
        Outcome::Ok
    );
    let err = reg
        .bind(&bind_req(HOLDER, CHILD, "child"), &BindPolicy::default())
        .unwrap_err();
    assert_eq!(err.code(), "database_busy");
    assert!(
        err.to_string().contains("locked by another writer"),
        "{err}"
    );
    let err = reg
        .record(&Entry {
            actor: "t",
            action: "resolve",
            ssn: None,
            outcome: "ok",
        })
        .unwrap_err();
    assert!(matches!(err, RegistryError::Busy(_)));

    // A writer that releases the lock while the bind waits is waited for:
    // the lock is released only once the bind is seen waiting on it.
    let patient = Registry::open(&db, &OpenOptions::default()).unwrap();
    patient
        .connection()
        .busy_handler(Some(signal_and_retry))
        .unwrap();
    let mut patient = patient;
    let release = std::thread::spawn(move || {
        let (m, c) = &LOCK;
        let g = c
            .wait_timeout_while(m.lock().unwrap(), Duration::from_secs(20), |s| !s.0)
            .unwrap()
            .0;
        assert!(g.0, "the bind never waited for the lock");
        drop(g);
        blocker.execute_batch("COMMIT").unwrap();
        m.lock().unwrap().1 = true;
        c.notify_all();
    });
    patient
        .bind(&bind_req(HOLDER, CHILD, "child"), &BindPolicy::default())
        .unwrap();
    release.join().unwrap();
    assert!(LOCK.0.lock().unwrap().0);
}

/// (the bind is waiting, the blocker has committed)
static LOCK: (std::sync::Mutex<(bool, bool)>, std::sync::Condvar) = (
    std::sync::Mutex::new((false, false)),
    std::sync::Condvar::new(),
);

/// SQLite's busy handler: tells the test the bind is waiting, then waits
/// until the test has released the lock, and retries once more.
fn signal_and_retry(attempt: i32) -> bool {
    let (m, c) = &LOCK;
    m.lock().unwrap().0 = true;
    c.notify_all();
    let g = c
        .wait_timeout_while(m.lock().unwrap(), Duration::from_secs(20), |s| !s.1)
        .unwrap()
        .0;
    g.1 && attempt < 100
}

fn import_with_bad_rows_imports_nothing_and_names_every_row(b: Backend) {
    let Some(fx) = Fx::empty(
        b,
        "import_with_bad_rows_imports_nothing_and_names_every_row",
    ) else {
        return;
    };
    let mut reg = fx.open();
    let files = fixture_csv(fx.dir.path());
    // Corrupt persons.csv: a bad check digit (line 3), a bad sex (line 5),
    // and cards.csv: a card for an unknown person (appended line 17).
    let persons = std::fs::read_to_string(&files[0]).unwrap();
    let mut lines: Vec<String> = persons.lines().map(String::from).collect();
    let bad_ssn = {
        let s = demo_ssn_str(SPOUSE);
        let last = if s.ends_with('0') { '1' } else { '0' };
        format!("{}{}", &s[..17], last)
    };
    lines[2] = lines[2].replacen(&demo_ssn_str(SPOUSE), &bad_ssn, 1);
    lines[4] = lines[4].replacen(",M,", ",Q,", 1).replacen(",F,", ",Q,", 1);
    std::fs::write(&files[0], lines.join("\n") + "\n").unwrap();
    let mut cards = std::fs::read_to_string(&files[1]).unwrap();
    let appended_line = cards.lines().count() + 1;
    cards.push_str(&format!(
        "Z00000001,,{},3,2020-01-01,2030-01-01,active\n",
        demo_ssn_str(5000)
    ));
    std::fs::write(&files[1], cards).unwrap();

    let err = reg.import(&files, "test").unwrap_err();
    let ImportError::BadRows { rows, total } = err else {
        panic!("{err}")
    };
    assert_eq!(total as usize, rows.len());
    let names: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
    let persons_file = files[0].display().to_string();
    let cards_file = files[1].display().to_string();
    assert!(
        names
            .iter()
            .any(|n| n.starts_with(&format!("{persons_file}:3: ssn: check character"))),
        "{names:#?}"
    );
    assert!(
        names
            .iter()
            .any(|n| n.starts_with(&format!("{persons_file}:5: sex:"))),
        "{names:#?}"
    );
    assert!(
        names
            .iter()
            .any(|n| n.starts_with(&format!("{cards_file}:{appended_line}:"))
                && n.contains("not in the registry")),
        "{names:#?}"
    );
    // Rows that referred to the rejected person fail too and are named.
    assert!(
        names.iter().any(|n| n.contains("links.csv:2:")),
        "{names:#?}"
    );
    let stats = reg.stats().unwrap();
    assert_eq!(
        (
            stats.persons,
            stats.cards,
            stats.active_links,
            stats.accounts
        ),
        (0, 0, 0, 0)
    );
}

fn demo_ssn_str(i: u64) -> String {
    cardlink::registry::demo::demo_ssn(i)
}

fn audit_tampering_is_detected(b: Backend) {
    let Some(fx) = Fx::fixture(b, "audit_tampering_is_detected") else {
        return;
    };
    let mut reg = fx.open();
    for i in 0..5 {
        reg.record(&Entry {
            actor: "reader0",
            action: "resolve",
            ssn: Some(&ssn(i)),
            outcome: "ok",
        })
        .unwrap();
    }
    let v = reg.verify_audit().unwrap();
    assert_eq!((v.rows, v.broken.clone()), (6, None));
    // The triggers refuse edits...
    let refused = |sql: &str| {
        let fx = &fx;
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fx.exec(sql, &[]))).is_err()
    };
    assert!(refused("UPDATE audit SET outcome = 'lost' WHERE id = 3"));
    assert!(refused("DELETE FROM audit WHERE id = 3"));
    // ...and an edit made around them is caught by the chain.
    let (no_update, no_delete) = match b {
        Backend::Sqlite => (
            "DROP TRIGGER audit_no_update",
            "DROP TRIGGER audit_no_delete",
        ),
        Backend::Postgres => (
            "ALTER TABLE audit DISABLE TRIGGER audit_no_update",
            "ALTER TABLE audit DISABLE TRIGGER audit_no_update",
        ),
    };
    fx.exec(no_update, &[]);
    fx.exec("UPDATE audit SET outcome = 'unknown' WHERE id = 3", &[]);
    let v = reg.verify_audit().unwrap();
    assert_eq!(v.broken.as_ref().map(|b| b.0), Some(3));
    // Deleting a middle row is caught as well.
    let fx2 = Fx::fixture(b, "audit_tampering_is_detected").unwrap();
    let mut reg2 = fx2.open();
    for i in 0..3 {
        reg2.record(&Entry {
            actor: "r",
            action: "resolve",
            ssn: Some(&ssn(i)),
            outcome: "ok",
        })
        .unwrap();
    }
    fx2.exec(no_delete, &[]);
    fx2.exec("DELETE FROM audit WHERE id = 2", &[]);
    assert_eq!(reg2.verify_audit().unwrap().broken.map(|b| b.0), Some(3));
}

fn contributions_newest_first(b: Backend) {
    let Some(fx) = Fx::fixture(b, "contributions_newest_first") else {
        return;
    };
    let reg = fx.open();
    let c = reg.contributions(&ssn(HOLDER), 3).unwrap();
    let months: Vec<_> = c.iter().map(|c| c.month.as_str()).collect();
    assert_eq!(months, vec!["2026-06", "2026-05", "2026-04"]);
    assert_eq!(c[0].account_fen, 35_200);
    assert!(reg.contributions(&ssn(CHILD), 12).unwrap().is_empty());
}

fn gen_demo_is_deterministic_and_consistent(b: Backend) {
    let opts = cardlink::registry::demo::DemoOptions {
        persons: 3000,
        months: 2,
        seed: 7,
    };
    let mut counts = Vec::new();
    let mut fxs = Vec::new();
    for _ in 0..2 {
        let Some(fx) = Fx::empty(b, "gen_demo_is_deterministic_and_consistent") else {
            return;
        };
        let mut reg = fx.open();
        reg.gen_demo(&opts).unwrap();
        counts.push(reg.stats().unwrap());
        // Every active link satisfies the binding rules' data invariants.
        let holders_ok = fx.count(
            "SELECT count(*) FROM family_links l JOIN persons p ON p.ssn = l.holder_ssn \
             WHERE l.status='active' AND NOT (p.insurance_type='employee' AND p.insurance_status='active')",
            &[]);
        assert_eq!(holders_ok, 0);
        fxs.push(fx);
    }
    assert_eq!(counts[0], counts[1]);
    assert_eq!(counts[0].persons, 3000);
    let reg = fxs[0].open();
    assert_eq!(reg.drift().unwrap(), Drift::default());
    assert!(counts[0].active_links > 500, "{:?}", counts[0]);
}

fn read_model_follows_binds_and_is_repaired_after_plain_sql_edits(b: Backend) {
    let Some(fx) = Fx::fixture(
        b,
        "read_model_follows_binds_and_is_repaired_after_plain_sql_edits",
    ) else {
        return;
    };
    let mut reg = fx.open();
    assert_eq!(reg.drift().unwrap(), Drift::default());
    let policy = BindPolicy::default();
    reg.bind(&bind_req(HOLDER, CHILD, "child"), &policy)
        .unwrap();
    reg.bind(&bind_req(HOLDER2, PARENT, "parent"), &policy)
        .unwrap();
    reg.unbind(&ssn(HOLDER), &ssn(SPOUSE), "t", "t").unwrap();
    reg.bind(&bind_req(HOLDER2, SPOUSE, "spouse"), &policy)
        .unwrap();
    // Binds and unbinds keep the read model exact.
    assert_eq!(reg.drift().unwrap(), Drift::default());
    let r = reg.resolve(&Lookup::card_no(card(SPOUSE))).unwrap();
    assert_eq!(r.payer.unwrap().ssn, ssn(HOLDER2));
    // Changes made with plain SQL (an administrator's fix) are found by
    // the check and taken over by a repair.
    fx.exec(
        "UPDATE accounts SET balance_fen = 42 WHERE holder_ssn = $1",
        &[ssn(HOLDER2).expose()],
    );
    fx.exec(
        "DELETE FROM accounts WHERE holder_ssn = $1",
        &[ssn(PARENT).expose()],
    );
    fx.exec(
        "UPDATE persons SET name = '李娜娜' WHERE ssn = $1",
        &[ssn(SPOUSE).expose()],
    );
    fx.exec(
        "UPDATE family_links SET relation = 'parent' WHERE member_ssn = $1 AND status = 'active'",
        &[ssn(CHILD).expose()],
    );
    fx.exec(
        "DELETE FROM family_links WHERE member_ssn = $1 AND status = 'active'",
        &[ssn(MEMBER2).expose()],
    );
    fx.exec(
        "UPDATE persons SET name = '张卫' WHERE ssn = $1",
        &[ssn(HOLDER).expose()],
    );
    fx.exec(
        "UPDATE cards SET status = 'lost' WHERE ssn = $1",
        &[ssn(CHILD).expose()],
    );
    let drift = reg.drift().unwrap();
    // HOLDER2 (balance, member names, lost member), PARENT (own balance;
    // payer balance unchanged), SPOUSE (payer balance), CHILD (relation,
    // payer name, card), HOLDER (member list, name of nobody; relation of
    // CHILD), MEMBER2 (payer gone).
    assert_eq!((drift.missing, drift.orphaned), (0, 0), "{drift:?}");
    assert!(drift.stale >= 5, "{drift:?}");
    let repair = reg.repair("test").unwrap();
    assert_eq!(repair.drift, drift);
    assert!(!repair.rebuilt);
    assert_eq!(reg.drift().unwrap(), Drift::default());
    assert!(reg.integrity().unwrap().is_empty());
    let r = reg.resolve(&Lookup::card_no(card(HOLDER2))).unwrap();
    assert_eq!(r.payer.unwrap().balance_fen, Some(42));
    let names: Vec<_> = r
        .members
        .iter()
        .map(|m| (m.name.as_str(), m.relation.as_str()))
        .collect();
    assert_eq!(names, vec![("张建华", "parent"), ("李娜娜", "spouse")]);
    let r = reg.resolve(&Lookup::card_no(card(MEMBER2))).unwrap();
    assert_eq!(r.role, Role::None);
    let r = reg.resolve(&Lookup::card_no(card(CHILD))).unwrap();
    assert_eq!(r.outcome, Outcome::Lost);
    let r = reg.resolve(&Lookup::card_no(card(HOLDER))).unwrap();
    assert_eq!(r.members[0].relation, "parent");
    // A person inserted with plain SQL resolves before any repair (from
    // the view), and the repair then adds their row; a deleted person's
    // row goes.
    let new = demo_ssn_str(900);
    fx.exec(
        "INSERT INTO persons (ssn, name, sex, birth_date, insurance_type, insurance_status) \
         VALUES ($1, '王新', 'F', '1990-01-01', 'resident', 'active')",
        &[new.as_str()],
    );
    fx.exec(
        "INSERT INTO cards VALUES ('Z00000001', NULL, $1, 3, '2026-01-01', '2036-01-01', 'active')",
        &[new.as_str()],
    );
    let r = reg.resolve(&Lookup::card_no("Z00000001")).unwrap();
    assert_eq!((r.outcome, r.role), (Outcome::Ok, Role::None));
    fx.exec(
        "DELETE FROM family_links WHERE member_ssn = $1 OR holder_ssn = $1",
        &[ssn(NO_CARD).expose()],
    );
    fx.exec(
        "DELETE FROM persons WHERE ssn = $1",
        &[ssn(NO_CARD).expose()],
    );
    let drift = reg.drift().unwrap();
    assert_eq!(
        (drift.missing, drift.stale, drift.orphaned),
        (1, 0, 1),
        "{drift:?}"
    );
    reg.repair("test").unwrap();
    assert_eq!(reg.drift().unwrap(), Drift::default());
    // Edits to the derived table itself are drift too.
    fx.exec(
        "UPDATE resolution SET members = '[]' WHERE ssn = $1",
        &[ssn(HOLDER2).expose()],
    );
    assert_eq!(reg.drift().unwrap().stale, 1);
}

/// An import into a populated registry refreshes the derived rows of the
/// persons it touches and of their neighbours (a holder whose member list
/// now names a new member; a renamed payer's members), and only those.
fn an_import_into_a_populated_registry_keeps_the_read_model_exact(b: Backend) {
    let Some(fx) = Fx::fixture(
        b,
        "an_import_into_a_populated_registry_keeps_the_read_model_exact",
    ) else {
        return;
    };
    let mut reg = fx.open();
    let csv = fx.dir.path().join("more");
    std::fs::create_dir_all(&csv).unwrap();
    let newcomer = demo_ssn_str(900);
    let birth = format!(
        "{}-{}-{}",
        &newcomer[6..10],
        &newcomer[10..12],
        &newcomer[12..14]
    );
    std::fs::write(
        csv.join("persons.csv"),
        format!(
            "ssn,name,sex,birth_date,insurance_type,insurance_status,region\n{newcomer},王新,{},{birth},resident,active,330100\n",
            if newcomer.as_bytes()[16] % 2 == 1 { "M" } else { "F" }
        ),
    )
    .unwrap();
    std::fs::write(
        csv.join("cards.csv"),
        format!("card_no,pan,ssn,generation,issued,expires,status\nZ00000009,,{newcomer},3,2026-01-01,2036-01-01,active\n"),
    )
    .unwrap();
    std::fs::write(
        csv.join("links.csv"),
        format!(
            "holder_ssn,member_ssn,relation,status,channel,operator,created_at,revoked_at\n{},{newcomer},child,active,window,c1,2026-02-01T00:00:00Z,\n",
            demo_ssn_str(HOLDER)
        ),
    )
    .unwrap();
    std::fs::write(
        csv.join("accounts.csv"),
        format!("holder_ssn,balance_fen\n{},99\n", demo_ssn_str(HOLDER)),
    )
    .unwrap();
    let files: Vec<_> = ["persons", "cards", "links", "accounts"]
        .iter()
        .map(|n| csv.join(format!("{n}.csv")))
        .collect();
    // accounts.csv would clash with HOLDER's existing account: the import
    // is refused as a whole, and the read model is untouched.
    assert!(reg.import(&files, "test").is_err());
    assert_eq!(reg.drift().unwrap(), Drift::default());
    reg.import(&files[..3], "test").unwrap();
    assert_eq!(reg.drift().unwrap(), Drift::default());
    let r = reg.resolve(&Lookup::card_no("Z00000009")).unwrap();
    assert_eq!((r.outcome, r.role), (Outcome::Ok, Role::Member));
    assert_eq!(r.payer.unwrap().ssn, ssn(HOLDER));
    let r = reg.resolve(&Lookup::card_no(card(HOLDER))).unwrap();
    assert!(
        r.members.iter().any(|m| m.name == "王新"),
        "{:?}",
        r.members
    );
}

/// Export writes the import format: a registry exported and imported into
/// an empty one has the same rows and resolves the same.
fn export_then_import_gives_the_same_registry(b: Backend) {
    let Some(fx) = Fx::fixture(b, "export_then_import_gives_the_same_registry") else {
        return;
    };
    let mut reg = fx.open();
    reg.unbind(&ssn(HOLDER2), &ssn(MEMBER2), "t", "t").unwrap();
    let out = fx.dir.path().join("export");
    let counts = reg.export(&out).unwrap();
    assert_eq!(
        (
            counts.persons,
            counts.cards,
            counts.links,
            counts.accounts,
            counts.contributions
        ),
        (18, 17, 2, 3, 6)
    );
    let copy = Fx::empty(b, "export_then_import_gives_the_same_registry").unwrap();
    let mut other = copy.open();
    let files: Vec<_> = ["persons", "cards", "links", "accounts", "contributions"]
        .iter()
        .map(|t| out.join(format!("{t}.csv")))
        .collect();
    assert_eq!(other.import(&files, "test").unwrap(), counts);
    let (a, z) = (reg.stats().unwrap(), other.stats().unwrap());
    assert_eq!(
        (
            a.persons,
            a.cards,
            a.active_links,
            a.accounts,
            a.contributions
        ),
        (
            z.persons,
            z.cards,
            z.active_links,
            z.accounts,
            z.contributions
        )
    );
    for i in [HOLDER, SPOUSE, MEMBER2, LOST, NO_CARD] {
        assert_eq!(
            reg.resolve(&Lookup::ssn(ssn(i))).unwrap(),
            other.resolve(&Lookup::ssn(ssn(i))).unwrap()
        );
    }
    assert_eq!(other.drift().unwrap(), Drift::default());
}

/// `db migrate`: a registry copied to the other backend (SQLite to
/// PostgreSQL and back) keeps every row, resolves the same and continues
/// the same audit chain.
fn copy_to_the_other_backend_keeps_the_audit_chain(b: Backend) {
    let test = "copy_to_the_other_backend_keeps_the_audit_chain";
    let Some(source) = Fx::fixture(b, test) else {
        return;
    };
    let other = match b {
        Backend::Sqlite => Backend::Postgres,
        Backend::Postgres => Backend::Sqlite,
    };
    let Some(target) = Fx::empty(other, test) else {
        return;
    };
    let mut reg = source.open();
    reg.bind(&bind_req(HOLDER, CHILD, "child"), &BindPolicy::default())
        .unwrap();
    reg.unbind(&ssn(HOLDER2), &ssn(MEMBER2), "t", "t").unwrap();
    reg.record(&Entry {
        actor: "reader0",
        action: "resolve",
        ssn: Some(&ssn(SPOUSE)),
        outcome: "ok",
    })
    .unwrap();
    let mut chain = Vec::new();
    reg.audit_rows(&mut |r| {
        chain.push(r);
        Ok(())
    })
    .unwrap();
    let m = cardlink::ctl::migrate(&source.db, &target.db, "test").unwrap();
    assert_eq!(m.audit_rows, chain.len() as u64);
    let copy = target.open();
    let mut copied = Vec::new();
    copy.audit_rows(&mut |r| {
        copied.push(r);
        Ok(())
    })
    .unwrap();
    // The source's chain, row for row, then the import and the migration.
    assert_eq!(&copied[..chain.len()], &chain[..]);
    let tail: Vec<_> = copied[chain.len()..]
        .iter()
        .map(|r| r.action.as_str())
        .collect();
    assert_eq!(tail, ["import", "migrate"]);
    assert!(copy.verify_audit().unwrap().broken.is_none());
    for i in [HOLDER, SPOUSE, CHILD, MEMBER2, LOST, NO_CARD, EXPIRED] {
        assert_eq!(
            reg.resolve(&Lookup::ssn(ssn(i))).unwrap(),
            copy.resolve(&Lookup::ssn(ssn(i))).unwrap()
        );
    }
    assert_eq!(
        copy.contributions(&ssn(HOLDER), 12).unwrap(),
        reg.contributions(&ssn(HOLDER), 12).unwrap()
    );
    // A second copy into the same (now populated) registry is refused.
    let e = cardlink::ctl::migrate(&source.db, &target.db, "test").unwrap_err();
    assert!(e.to_string().contains("not empty"), "{e}");
}

/// Writers on separate connections (on PostgreSQL: as from separate boxes)
/// append to one audit chain at the same time: every row is written, the
/// chain stays one valid line.
fn concurrent_writers_keep_one_audit_chain(b: Backend) {
    let Some(fx) = Fx::fixture(b, "concurrent_writers_keep_one_audit_chain") else {
        return;
    };
    let fx = Arc::new(fx);
    let barrier = Arc::new(Barrier::new(4));
    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let (fx, barrier) = (fx.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut reg = fx.open();
                barrier.wait();
                for i in 0..40 {
                    reg.record(&Entry {
                        actor: &format!("box{w}"),
                        action: "resolve",
                        ssn: Some(&ssn(i % 18)),
                        outcome: "ok",
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let v = fx.open().verify_audit().unwrap();
    assert_eq!((v.rows, v.broken), (1 + 4 * 40, None));
}

/// What only the tables can judge (keys, the one active payer, mutual
/// links with the links already in) is refused by an import on both
/// backends with the same `file:line: reason`, and nothing is imported.
fn an_import_refuses_what_the_tables_refuse_with_the_same_reasons(b: Backend) {
    let test = "an_import_refuses_what_the_tables_refuse_with_the_same_reasons";
    let Some(fx) = Fx::fixture(b, test) else {
        return;
    };
    let mut reg = fx.open();
    let before = reg.stats().unwrap();
    let dir = fx.dir.path().join("more");
    std::fs::create_dir_all(&dir).unwrap();
    let persons = dir.join("persons.csv");
    let all = std::fs::read_to_string(&fixture_csv(fx.dir.path())[0]).unwrap();
    let mut lines = all.lines();
    let header = lines.next().unwrap();
    let holder = lines
        .find(|l| l.starts_with(&demo_ssn_str(HOLDER)))
        .unwrap();
    std::fs::write(&persons, format!("{header}\n{holder}\n")).unwrap();
    let links = dir.join("links.csv");
    let row = |h: u64, m: u64, rel: &str| {
        format!(
            "{},{},{rel},active,window,clerk1,2026-01-01T09:00:00Z,\n",
            demo_ssn_str(h),
            demo_ssn_str(m)
        )
    };
    std::fs::write(
        &links,
        format!(
            "holder_ssn,member_ssn,relation,status,channel,operator,created_at,revoked_at\n{}{}{}",
            // MEMBER2 is covered by HOLDER2: a mutual link.
            row(MEMBER2, HOLDER2, "parent"),
            // SPOUSE already has HOLDER as payer.
            row(HOLDER2, SPOUSE, "spouse"),
            // Fine on its own.
            row(HOLDER, CHILD, "child"),
        ),
    )
    .unwrap();
    let err = reg
        .import(&[persons.clone(), links.clone()], "test")
        .unwrap_err();
    let ImportError::BadRows { rows, total } = err else {
        panic!("{err}")
    };
    let got: Vec<(String, u64, String)> = rows
        .iter()
        .map(|r| (r.file.clone(), r.line, r.reason.clone()))
        .collect();
    assert_eq!(total, 3, "{got:#?}");
    // In file and line order.
    let links = links.display().to_string();
    assert_eq!(
        got[..2],
        [
            (
                links.clone(),
                2,
                "mutual link: the holder is covered by this member (directly or through other links)"
                    .to_string()
            ),
            (
                links.clone(),
                3,
                "member already has another active payer".to_string()
            ),
        ]
    );
    assert_eq!(
        (&got[2].0, got[2].1),
        (&persons.display().to_string(), 2),
        "{got:#?}"
    );
    assert!(got[2].2.starts_with("duplicate key ("), "{got:#?}");
    let after = reg.stats().unwrap();
    assert_eq!(
        (after.persons, after.active_links),
        (before.persons, before.active_links)
    );
    assert_eq!(reg.drift().unwrap(), Drift::default());
}

/// An empty registry exports five files with their header rows, and they
/// import (as nothing) into another registry.
fn an_empty_registry_exports_files_that_import(b: Backend) {
    let test = "an_empty_registry_exports_files_that_import";
    let Some(fx) = Fx::empty(b, test) else {
        return;
    };
    let out = fx.dir.path().join("export");
    let counts = fx.open().export(&out).unwrap();
    assert_eq!(counts, Default::default());
    let persons = std::fs::read_to_string(out.join("persons.csv")).unwrap();
    assert_eq!(
        persons,
        "ssn,name,sex,birth_date,insurance_type,insurance_status,region\n"
    );
    let files: Vec<_> = ["persons", "cards", "links", "accounts", "contributions"]
        .iter()
        .map(|t| out.join(format!("{t}.csv")))
        .collect();
    let copy = Fx::empty(b, test).unwrap();
    assert_eq!(copy.open().import(&files, "test").unwrap(), counts);
}

/// An import into empty PostgreSQL tables drops their foreign keys and
/// non-unique indexes for the load and makes them again: afterwards the
/// catalogue holds the same constraints and indexes as a new registry's,
/// and the tables refuse what they refused before.
#[test]
fn a_bulk_load_into_empty_postgresql_tables_leaves_every_constraint_and_index() {
    let test = "bulk_load_constraints";
    let (Some(fresh), Some(loaded)) = (pg::database(test), pg::database(test)) else {
        return;
    };
    let catalogue = |url: &str| {
        let q = |sql: &str| pg::run(url, sql, &[], true);
        (
            q("SELECT count(*) FROM pg_constraint WHERE contype = 'f'"),
            q("SELECT count(*) FROM pg_indexes WHERE schemaname = 'public'"),
        )
    };
    drop(
        Registry::open_database(
            &cardlink::registry::Database::Postgres(fresh.url.clone()),
            &Default::default(),
        )
        .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    Registry::open_database(
        &cardlink::registry::Database::Postgres(loaded.url.clone()),
        &Default::default(),
    )
    .unwrap()
    .import(&fixture_csv(dir.path()), "test")
    .unwrap();
    let want = catalogue(&fresh.url);
    assert!(want.0 >= 5, "{want:?}");
    assert_eq!(catalogue(&loaded.url), want);
    // The foreign key is back and checked.
    let refused = std::panic::catch_unwind(|| {
        pg::run(
            &loaded.url,
            "INSERT INTO cards (card_no, ssn, generation, issued, expires, status) VALUES ('X1', '110105194001020005x', 3, '2010-01-01', '2030-01-01', 'active')",
            &[],
            false,
        )
    });
    assert!(refused.is_err(), "a card of an unknown person was accepted");
}
