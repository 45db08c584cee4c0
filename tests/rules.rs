//! Family mutual aid as the rules stand (国办发〔2024〕38号 and the
//! province rules of `[policy]`), through the socket as a window clerk
//! meets them; and one definition of a usable card for resolve and bind.

mod common;

use common::*;
use serde_json::{json, Value};

on_both_backends_paused!(
    all_eight_close_relatives_by_default_and_a_narrower_list_by_config,
    max_members_limits_one_account,
    rebind_cooldown_applies_to_another_payer_only,
    scope_compares_insured_regions,
    newer_expired_card_and_older_valid_card_resolve_and_bind_alike,
);

/// The in-process daemon on backend `b` with `extra` config.
async fn daemon(b: Backend, test: &'static str, extra: &str) -> Option<Daemon> {
    Daemon::start_backend(b, test, &[], extra)
        .await
        .map(|(d, _)| d)
}

fn bind(h: u64, m: u64, rel: &str) -> Value {
    json!({"cmd": "bind", "holder": card(h), "member": card(m), "relation": rel, "operator": "clerk7"})
}

fn unbind(h: u64, m: u64) -> Value {
    json!({"cmd": "unbind", "holder": card(h), "member": card(m), "operator": "clerk7"})
}

#[test]
fn every_relation_has_its_chinese_label() {
    use cardlink::registry::Relation;
    let labels: Vec<(&str, &str)> = Relation::ALL
        .iter()
        .map(|r| (r.as_str(), r.label_zh()))
        .collect();
    assert_eq!(
        labels,
        [
            ("spouse", "配偶"),
            ("parent", "父母"),
            ("child", "子女"),
            ("sibling", "兄弟姐妹"),
            ("grandparent", "祖父母"),
            ("maternal_grandparent", "外祖父母"),
            ("grandchild", "孙子女"),
            ("maternal_grandchild", "外孙子女"),
        ]
    );
    for r in Relation::ALL {
        assert_eq!(Relation::parse(r.as_str()), Some(r));
    }
}

async fn all_eight_close_relatives_by_default_and_a_narrower_list_by_config(b: Backend) {
    let t = "all_eight_close_relatives_by_default_and_a_narrower_list_by_config";
    let Some(d) = daemon(b, t, "").await else {
        return;
    };
    let mut c = d.client().await;
    for rel in [
        "spouse",
        "parent",
        "child",
        "sibling",
        "grandparent",
        "maternal_grandparent",
        "grandchild",
        "maternal_grandchild",
    ] {
        let r = c.request(bind(HOLDER, CHILD, rel)).await;
        assert_eq!(r["ok"], true, "{rel}: {r}");
        let r = c
            .request(json!({"cmd": "lookup", "number": card(CHILD)}))
            .await;
        assert_eq!(r["result"]["relation"], rel);
        assert_eq!(c.request(unbind(HOLDER, CHILD)).await["ok"], true);
    }
    let r = c.request(bind(HOLDER, CHILD, "cousin")).await;
    assert_eq!(r["code"], "relation_not_allowed", "{r}");
    drop(d);

    // A province that keeps the 2021 list.
    let Some(d) = daemon(b, t, "relations = [\"spouse\", \"parent\", \"child\"]").await else {
        return;
    };
    let mut c = d.client().await;
    let r = c.request(bind(HOLDER, CHILD, "sibling")).await;
    assert_eq!(r["code"], "relation_not_allowed", "{r}");
    assert_eq!(c.request(bind(HOLDER, CHILD, "child")).await["ok"], true);
}

async fn max_members_limits_one_account(b: Backend) {
    let t = "max_members_limits_one_account";
    let Some(d) = daemon(b, t, "[policy]\nmax_members = 2").await else {
        return;
    };
    let mut c = d.client().await;
    // HOLDER covers SPOUSE already.
    assert_eq!(c.request(bind(HOLDER, CHILD, "child")).await["ok"], true);
    let r = c.request(bind(HOLDER, OTHER_CITY, "sibling")).await;
    assert_eq!(r["code"], "too_many_members", "{r}");
    // An unbind makes room.
    assert_eq!(c.request(unbind(HOLDER, CHILD)).await["ok"], true);
    assert_eq!(
        c.request(bind(HOLDER, OTHER_CITY, "sibling")).await["ok"],
        true
    );
}

async fn rebind_cooldown_applies_to_another_payer_only(b: Backend) {
    let t = "rebind_cooldown_applies_to_another_payer_only";
    let Some(d) = daemon(b, t, "[policy]\nrebind_cooldown_days = 30").await else {
        return;
    };
    let mut c = d.client().await;
    // `status` tells the screens the rules in force, for the consent
    // statement's cooldown sentence (issue 23).
    let s = c.request(json!({"cmd": "status"})).await;
    assert_eq!(
        s["result"]["policy"],
        json!({"rebind_cooldown_days": 30, "max_members": null, "scope": "province"}),
        "{s}"
    );
    assert_eq!(c.request(unbind(HOLDER2, MEMBER2)).await["ok"], true);
    let r = c.request(bind(HOLDER, MEMBER2, "child")).await;
    assert_eq!(r["code"], "cooldown", "{r}");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("new payer is possible from"),
        "{r}"
    );
    // Back to the same payer: allowed.
    assert_eq!(c.request(bind(HOLDER2, MEMBER2, "child")).await["ok"], true);
    drop(d);
    // Without a cooldown (the default) a new payer may bind at once.
    let Some(d) = daemon(b, t, "").await else {
        return;
    };
    let mut c = d.client().await;
    assert_eq!(c.request(unbind(HOLDER2, MEMBER2)).await["ok"], true);
    assert_eq!(c.request(bind(HOLDER, MEMBER2, "child")).await["ok"], true);
}

async fn scope_compares_insured_regions(b: Backend) {
    let t = "scope_compares_insured_regions";
    // Default: the same province (省内共济).
    let Some(d) = daemon(b, t, "").await else {
        return;
    };
    let mut c = d.client().await;
    let r = c.request(bind(HOLDER, REMOTE, "sibling")).await;
    assert_eq!(r["code"], "out_of_scope", "{r}");
    assert!(r["message"].as_str().unwrap().contains("province"), "{r}");
    let r = c.request(bind(HOLDER, NO_REGION, "sibling")).await;
    assert_eq!(r["code"], "out_of_scope", "{r}");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("not in the registry"),
        "{r}"
    );
    assert_eq!(
        c.request(bind(HOLDER, OTHER_CITY, "sibling")).await["ok"],
        true
    );
    drop(d);
    // City: another city of the same province is out of scope.
    let Some(d) = daemon(b, t, "[policy]\nscope = \"city\"").await else {
        return;
    };
    let mut c = d.client().await;
    let r = c.request(bind(HOLDER, OTHER_CITY, "sibling")).await;
    assert_eq!(r["code"], "out_of_scope", "{r}");
    assert_eq!(c.request(bind(HOLDER, CHILD, "child")).await["ok"], true);
    drop(d);
    // Any: across provinces, where a province allows it.
    let Some(d) = daemon(b, t, "[policy]\nscope = \"any\"").await else {
        return;
    };
    let mut c = d.client().await;
    assert_eq!(c.request(bind(HOLDER, REMOTE, "sibling")).await["ok"], true);
}

#[test]
fn check_config_shows_the_effective_policy_and_refuses_unknown_relations() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("reg.db");
    let run = |text: String| check_config(&text);
    let (ok, text, err) = run(format!("database = {db:?}\n"));
    assert!(ok, "{err}");
    for want in [
        "[policy]",
        "max_members = 0",
        "rebind_cooldown_days = 0",
        "scope = \"province\"",
        "\"maternal_grandchild\"",
    ] {
        assert!(text.contains(want), "{want} not in:\n{text}");
    }
    let (ok, text, err) = run(format!(
        "database = {db:?}\n[policy]\nmax_members = 3\nscope = \"city\"\n"
    ));
    assert!(ok, "{err}");
    assert!(
        text.contains("max_members = 3") && text.contains("scope = \"city\""),
        "{text}"
    );
    let (ok, _, err) = run(format!("database = {db:?}\nrelations = [\"cousin\"]\n"));
    assert!(!ok && err.contains("cousin"), "{err}");
    let (ok, _, err) = run(format!("database = {db:?}\n[policy]\nscope = \"planet\"\n"));
    assert!(!ok && err.contains("planet"), "{err}");
}

#[test]
fn import_refuses_unknown_relations_and_bad_regions_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let files = fixture_csv(dir.path());
    let links = dir.path().join("links.csv");
    let text = std::fs::read_to_string(&links)
        .unwrap()
        .replacen(",spouse,", ",cousin,", 1);
    std::fs::write(&links, text).unwrap();
    let persons = dir.path().join("persons.csv");
    let text = std::fs::read_to_string(&persons).unwrap();
    let text = text.replacen(",330100\n", ",33010\n", 1);
    std::fs::write(&persons, text).unwrap();
    let (code, err) = ctl_import(&dir.path().join("reg.db"), &files);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("links.csv:2: relation: 'cousin' is not one of spouse, parent"),
        "{err}"
    );
    assert!(err.contains("persons.csv:2: region: '33010'"), "{err}");
}

/// One definition of a usable card: a person holding a newer expired card
/// and an older valid one resolves with the valid one and can be bound;
/// the expired card itself, swiped, is expired.
async fn newer_expired_card_and_older_valid_card_resolve_and_bind_alike(b: Backend) {
    let t = "newer_expired_card_and_older_valid_card_resolve_and_bind_alike";
    let Some(d) = daemon(b, t, "").await else {
        return;
    };
    d.exec(
        "INSERT INTO cards VALUES ('Z00000009', NULL, $1, 4, '2021-01-01', $2, 'active')",
        &[&demo_ssn_full(CHILD), &days_from_today(-30).to_string()],
    );
    let mut c = d.client().await;
    let r = c
        .request(json!({"cmd": "lookup", "number": demo_ssn_full(CHILD)}))
        .await;
    assert_eq!(r["result"]["outcome"], "ok", "{r}");
    assert_eq!(
        r["result"]["card_no"],
        cardlink::mask::card_no(&card(CHILD)),
        "resolved with the valid card"
    );
    let r = c
        .request(json!({"cmd": "lookup", "number": "Z00000009"}))
        .await;
    assert_eq!(r["result"]["outcome"], "expired", "the expired card itself");
    let r = c
        .request(json!({"cmd": "bind", "holder": card(HOLDER), "member": demo_ssn_full(CHILD), "relation": "child", "consent": cardlink::registry::consent::CURRENT.version}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    // And the other way round: only an expired card, neither resolves nor binds.
    let r = c
        .request(json!({"cmd": "lookup", "number": demo_ssn_full(EXPIRED)}))
        .await;
    assert_eq!(r["result"]["outcome"], "expired");
    let r = c
        .request(json!({"cmd": "bind", "holder": card(HOLDER), "member": demo_ssn_full(EXPIRED), "relation": "child", "consent": cardlink::registry::consent::CURRENT.version}))
        .await;
    assert_eq!(r["code"], "member_no_active_card");
}
