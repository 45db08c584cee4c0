//! A PostgreSQL primary with a synchronous standby, and a `cardlinkd`
//! process on the multi-host URL of both: when the primary is lost and the
//! standby promoted, binds go on without restarting the daemon and no
//! acknowledged bind is lost; a write that hangs on the server (a lock held
//! by another session, a COMMIT waiting for a stopped synchronous standby)
//! ends as `registry_unavailable` within the per-call limit, never as
//! `database_busy` (SQLite's lock).
//!
//! A server restarted under a running `cardlinkd` (a cold cache) gets
//! what lookups read back into its cache (`prewarm`) without the daemon
//! being restarted; without the `pg_prewarm` extension plain scans do it.
//!
//! Both clusters are made here from the machine's PostgreSQL binaries
//! (`CARDLINK_PG_BINDIR`): `initdb`, `pg_basebackup -R`, `pg_ctl promote`.
//! Under `CI=true` a missing binary fails the test; elsewhere it is skipped.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cardlink::registry::{Database, Registry};
use common::*;
use serde_json::{json, Value};

/// Trust for local and loopback connections, replication included.
const HBA: &str = "local all all trust\nhost all all 127.0.0.1/32 trust\n\
                   local replication all trust\nhost replication all 127.0.0.1/32 trust\n";

/// A primary whose commits wait for a synchronous standby
/// (`synchronous_standby_names = '*'`, `synchronous_commit = on`), the standby
/// streaming from it, and the fixture registry in database `cardlink`;
/// returns once the primary reports the standby as `sync`. `None` when
/// skipped.
fn primary_and_standby(test: &str) -> Option<(pg::Server, pg::Server)> {
    let primary = pg::server(
        test,
        Some(HBA),
        &[
            "wal_level=replica",
            "max_wal_senders=4",
            "hot_standby=on",
            "full_page_writes=on",
            "synchronous_commit=on",
        ],
    )?;
    pg::admin(&primary.url("postgres"), "CREATE DATABASE cardlink");
    let dir = tempfile::tempdir().unwrap();
    Registry::open_database(
        &Database::Postgres(primary.url("cardlink")),
        &Default::default(),
    )
    .unwrap()
    .import(&fixture_csv(dir.path()), "test")
    .unwrap();
    // The standby has no synchronous standby of its own: once promoted it
    // commits alone.
    let standby = pg::Server::standby_of(
        &primary,
        &[
            "hot_standby=on",
            "full_page_writes=on",
            "synchronous_commit=on",
        ],
    );
    // Only now that there is a standby to wait for: from here every commit
    // on the primary waits until the standby has it.
    let admin = primary.url("postgres");
    pg::admin(&admin, "ALTER SYSTEM SET synchronous_standby_names = '*'");
    pg::admin(&admin, "SELECT pg_reload_conf()");
    wait_sync(&primary);
    Some((primary, standby))
}

/// Waits until `primary` streams to a standby in `sync` state (a state
/// no event announces).
fn wait_sync(primary: &pg::Server) {
    let url = primary.url("postgres");
    eventually_sync("the standby in sync", Duration::from_secs(30), || {
        let n = pg::run(
                &url,
                "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync' AND state = 'streaming'",
                &[],
                true,
            );
        (n == 1).then_some(())
    });
}

/// The multi-host URL of both servers (a password in it, which trust
/// authentication ignores, to check that it is never shown).
fn multi_host(primary: &pg::Server, standby: &pg::Server) -> String {
    format!(
        "postgres://postgres:s3cret@127.0.0.1:{},127.0.0.1:{}/cardlink?target_session_attrs=read-write",
        primary.port, standby.port
    )
}

/// A daemon process on `url` with no readers.
fn daemon(url: &str, extra: &str) -> Process {
    let dir = tempfile::tempdir().unwrap();
    let unused = dir.path().join("no-sqlite-here");
    let (p, _) = Process::start_on(
        dir,
        Database::Postgres(url.to_string()),
        unused,
        &[],
        extra,
        &[],
    );
    p
}

fn bind(holder: u64, member: u64, relation: &str, operator: &str) -> Value {
    json!({"cmd": "bind", "holder": demo_ssn_full(holder), "member": demo_ssn_full(member),
           "relation": relation, "operator": operator})
}

fn unbind(holder: u64, member: u64) -> Value {
    json!({"cmd": "unbind", "holder": demo_ssn_full(holder), "member": demo_ssn_full(member),
           "operator": "clerk"})
}

fn code(reply: &Value) -> &str {
    reply["code"].as_str().unwrap_or_default()
}

/// Sends `req` until the daemon answers something else than
/// `registry_unavailable` (a client retrying through a failover), and
/// returns that answer and the number of `registry_unavailable` answers.
/// `database_busy` fails the test: it means SQLite's lock. The daemon's
/// log is shown when no such answer comes within `limit`.
async fn until_answered(c: &mut Client, req: &Value, limit: Duration, log: &Log) -> (Value, u32) {
    let mut unavailable = 0;
    let mut last = Value::Null;
    let answered = tokio::time::timeout(
        limit,
        eventually("an answer", limit * 2, async || {
            let r = c.request(req.clone()).await;
            assert_ne!(code(&r), "database_busy", "{r}");
            if code(&r) == "registry_unavailable" {
                unavailable += 1;
                last = r;
                return None;
            }
            Some(r)
        }),
    )
    .await;
    match answered {
        Ok(reply) => (reply, unavailable),
        Err(_) => panic!(
            "{req}: only registry_unavailable within {limit:?} ({last})\n{}",
            log.text()
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binds_go_on_after_the_standby_is_promoted_and_no_acknowledged_bind_is_lost() {
    let test = "failover";
    let Some((primary, standby)) = tokio::task::block_in_place(|| primary_and_standby(test)) else {
        return;
    };
    let url = multi_host(&primary, &standby);
    let d = tokio::task::block_in_place(|| daemon(&url, ""));
    let pid = d.child.id();

    // The configuration check shows both hosts and no password.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cardlinkd"))
        .arg("--check-config")
        .arg("--config")
        .arg(&d.config)
        .output()
        .unwrap();
    let shown =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{shown}");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(
        shown.contains(&format!(
            "127.0.0.1:{},127.0.0.1:{}",
            primary.port, standby.port
        )),
        "{shown}"
    );

    // A window binds and unbinds CHILD to HOLDER over and over, each bind
    // with an operator of its own, and records every acknowledged one.
    let acked: Mutex<Vec<String>> = Mutex::default();
    let stop = AtomicBool::new(false);
    let mut c = d.client().await;
    let binder = async {
        let mut unavailable = 0;
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            let op = format!("op{i}");
            let (r, n) = until_answered(
                &mut c,
                &bind(HOLDER, CHILD, "child", &op),
                Duration::from_secs(40),
                &d.log,
            )
            .await;
            unavailable += n;
            if r["ok"] == true {
                acked.lock().unwrap().push(op);
            } else {
                // An attempt answered registry_unavailable committed after
                // all: the link is there, unacknowledged.
                assert!(
                    code(&r) == "already_linked" || code(&r) == "member_has_payer",
                    "{r}"
                );
            }
            let (r, n) = until_answered(
                &mut c,
                &unbind(HOLDER, CHILD),
                Duration::from_secs(40),
                &d.log,
            )
            .await;
            unavailable += n;
            assert!(r["ok"] == true || code(&r) == "not_linked", "{r}");
        }
        unavailable
    };
    let count = || acked.lock().unwrap().len();
    let operator = async {
        eventually(
            "5 binds acknowledged",
            Duration::from_secs(20),
            async || (count() >= 5).then_some(()),
        )
        .await;
        // The primary is lost in the middle of the binds, and the standby
        // is promoted (what an operator or Patroni does).
        tokio::task::block_in_place(|| primary.stop_immediately());
        let before = count();
        tokio::task::block_in_place(|| standby.promote());
        eventually(
            "5 more binds acknowledged after the promotion",
            Duration::from_secs(40),
            async || (count() >= before + 5).then_some(()),
        )
        .await;
        stop.store(true, Ordering::Relaxed);
    };
    let (unavailable, ()) = tokio::join!(binder, operator);
    let acked = acked.lock().unwrap().clone();
    eprintln!(
        "{} binds acknowledged, {unavailable} answers registry_unavailable during the failover",
        acked.len()
    );

    // Every acknowledged bind is on the promoted server.
    let present = tokio::task::block_in_place(|| {
        pg::run(
            &standby.url("cardlink"),
            "SELECT count(DISTINCT operator) FROM family_links \
             WHERE holder_ssn = $2 AND member_ssn = $3 AND operator = ANY(string_to_array($1, ','))",
            &[acked.join(","), demo_ssn_full(HOLDER), demo_ssn_full(CHILD)],
            true,
        )
    });
    assert_eq!(present as usize, acked.len(), "acknowledged binds lost");
    // And the audit chain is one unbroken line across the failover.
    let verified = tokio::task::block_in_place(|| {
        Registry::open_database(
            &Database::Postgres(standby.url("cardlink")),
            &Default::default(),
        )
        .unwrap()
        .verify_audit()
        .unwrap()
    });
    assert!(verified.broken.is_none(), "{verified:?}");

    // The same daemon all along.
    assert_eq!(d.child.id(), pid);
    let (status, log) = d.stop();
    assert!(status.success(), "{log}");
    assert!(!log.contains("s3cret"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_hangs_on_the_server_ends_as_registry_unavailable_within_the_call_limit() {
    let test = "hung_write";
    let Some((primary, standby)) = tokio::task::block_in_place(|| primary_and_standby(test)) else {
        return;
    };
    let url = multi_host(&primary, &standby);
    // The per-call limit is busy_timeout plus the 3 s connect timeout.
    let d = tokio::task::block_in_place(|| daemon(&url, "busy_timeout_ms = 300"));
    let limit = Duration::from_millis(300 + 3000);
    // Loose: the pass/fail is the code; this only catches a call that waits
    // for ever.
    let bound = limit + Duration::from_secs(5);
    let mut c = d.client().await;
    let r = c.request(bind(HOLDER, CHILD, "child", "clerk")).await;
    assert_eq!(r["ok"], true, "{r}");

    // Another session holds a lock the bind's insert needs.
    let (locker, conn) = tokio_postgres::connect(&primary.url("cardlink"), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    locker
        .batch_execute("BEGIN; LOCK TABLE family_links IN EXCLUSIVE MODE")
        .await
        .unwrap();
    let t = Instant::now();
    let r = c.request(bind(HOLDER, PARENT, "parent", "clerk")).await;
    assert_eq!(code(&r), "registry_unavailable", "{r}");
    assert!(t.elapsed() < bound, "{:?}", t.elapsed());
    locker.batch_execute("ROLLBACK").await.unwrap();
    let (r, _) = until_answered(
        &mut c,
        &bind(HOLDER, PARENT, "parent", "clerk"),
        Duration::from_secs(20),
        &d.log,
    )
    .await;
    assert_eq!(r["ok"], true, "{r}");

    // The synchronous standby stops: every COMMIT waits for it for ever.
    tokio::task::block_in_place(|| standby.stop());
    // Two writes (the links just made, undone): each ends at the limit.
    for member in [CHILD, PARENT] {
        let t = Instant::now();
        let r = c.request(unbind(HOLDER, member)).await;
        assert_eq!(code(&r), "registry_unavailable", "{r}");
        assert!(t.elapsed() < bound, "{:?}", t.elapsed());
    }
    // The call given up is not left running on the server: no backend is
    // left waiting for the standby, holding the registry's write lock.
    eventually(
        "no backend waiting for synchronous replication",
        Duration::from_secs(10),
        async || {
            let n = tokio::task::block_in_place(|| {
                pg::run(
                    &primary.url("postgres"),
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'",
                    &[],
                    true,
                )
            });
            (n == 0).then_some(())
        },
    )
    .await;

    // The standby is back: the next write goes through on the same daemon.
    tokio::task::block_in_place(|| {
        standby.start();
        wait_sync(&primary);
    });
    // (The unbind of CHILD may have committed on the primary after it was
    // given up, unacknowledged: either answer is right.)
    let (r, _) = until_answered(
        &mut c,
        &bind(HOLDER, CHILD, "child", "clerk"),
        Duration::from_secs(20),
        &d.log,
    )
    .await;
    assert!(r["ok"] == true || code(&r) == "already_linked", "{r}");
    let (status, log) = d.stop();
    assert!(status.success(), "{log}");
}

/// What a resolution reads, which the daemon prewarms.
const PREWARMED: [&str; 4] = ["resolution_pkey", "resolution", "cards_pkey", "cards"];

/// Pages of `relation` in the server's shared buffers (`pg_buffercache`),
/// and its size in pages.
fn resident(url: &str, relation: &str) -> (i64, i64) {
    let rel = [relation.to_string()];
    let cached = pg::run(
        url,
        "SELECT count(*) FROM pg_buffercache b \
         WHERE b.relfilenode = pg_relation_filenode($1::text::regclass) \
           AND b.reldatabase = (SELECT oid FROM pg_database WHERE datname = current_database())",
        &rel,
        true,
    );
    let size = pg::run(
        url,
        "SELECT pg_relation_size($1::text::regclass) / current_setting('block_size')::bigint",
        &rel,
        true,
    );
    (cached, size)
}

/// Every page of every prewarmed relation in shared buffers.
fn all_resident(url: &str) -> Option<()> {
    PREWARMED
        .iter()
        .all(|r| {
            let (cached, size) = resident(url, r);
            size > 0 && cached == size
        })
        .then_some(())
}

/// Asserts that no page of the prewarmed relations is in shared buffers.
fn none_resident(url: &str) {
    for r in PREWARMED {
        assert_eq!(resident(url, r).0, 0, "{r} in shared buffers");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_gets_what_lookups_read_back_into_its_cache_without_a_daemon_restart() {
    let test = "prewarm_restart";
    let Some(server) = tokio::task::block_in_place(|| pg::server(test, None, &[])) else {
        return;
    };
    let url = server.url("cardlink");
    let d = tokio::task::block_in_place(|| {
        pg::admin(&server.url("postgres"), "CREATE DATABASE cardlink");
        let dir = tempfile::tempdir().unwrap();
        Registry::open_database(&Database::Postgres(url.clone()), &Default::default())
            .unwrap()
            .import(&fixture_csv(dir.path()), "test")
            .unwrap();
        pg::admin(
            &url,
            "CREATE EXTENSION pg_prewarm; CREATE EXTENSION pg_buffercache",
        );
        // A cold server: restarted, nothing of the registry in its buffers.
        server.stop();
        server.start();
        none_resident(&url);
        // The heartbeat is the only call the idle daemon makes.
        let d = daemon(&url, "[fleet]\nheartbeat_s = 1\n");
        eventually_sync(
            "the registry prewarmed at start",
            Duration::from_secs(30),
            || all_resident(&url),
        );
        d
    });
    assert!(
        d.log
            .wait_for("registry prewarmed", Duration::from_secs(10)),
        "{}",
        d.log.text()
    );
    assert!(
        d.log.text().contains("resolution=pg_prewarm buffer"),
        "{}",
        d.log.text()
    );
    // The server restarts under the running daemon, which makes no lookup.
    tokio::task::block_in_place(|| {
        server.stop();
        server.start();
        none_resident(&url);
        let warmed = std::panic::catch_unwind(|| {
            eventually_sync(
                "the registry prewarmed after the server's restart",
                Duration::from_secs(30),
                || all_resident(&url),
            )
        });
        assert!(warmed.is_ok(), "{}", d.log.text());
    });
    let log = d.log.text();
    assert_eq!(log.matches("registry prewarmed").count(), 2, "{log}");
    // And lookups are answered.
    let mut c = d.client().await;
    let r = c
        .request(json!({"cmd": "lookup", "number": demo_ssn_full(HOLDER)}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_extension_plain_scans_read_what_lookups_read() {
    let test = "prewarm_scan";
    let Some(db) = pg::database(test) else {
        return;
    };
    let url = db.url.clone();
    let scans = |url: &str| -> (i64, i64, i64, i64) {
        let n = |sql: &str, rel: &str| pg::run(url, sql, &[rel.to_string()], true);
        let t = "SELECT coalesce(seq_scan, 0) FROM pg_stat_user_tables WHERE relname = $1";
        let i = "SELECT coalesce(idx_scan, 0) FROM pg_stat_user_indexes WHERE indexrelname = $1";
        (
            n(i, "resolution_pkey"),
            n(t, "resolution"),
            n(i, "cards_pkey"),
            n(t, "cards"),
        )
    };
    let (before, d) = tokio::task::block_in_place(|| {
        let dir = tempfile::tempdir().unwrap();
        Registry::open_database(&Database::Postgres(url.clone()), &Default::default())
            .unwrap()
            .import(&fixture_csv(dir.path()), "test")
            .unwrap();
        let no_ext = pg::run(
            &url,
            "SELECT count(*) FROM pg_extension WHERE extname = 'pg_prewarm'",
            &[],
            true,
        );
        assert_eq!(no_ext, 0);
        let before = scans(&url);
        (before, daemon(&url, ""))
    });
    assert!(
        d.log
            .wait_for("registry prewarmed", Duration::from_secs(30)),
        "{}",
        d.log.text()
    );
    let log = d.log.text();
    for r in PREWARMED {
        assert!(log.contains(&format!("{r}=scan")), "{r}: {log}");
    }
    // Each relation read once more: the server's statistics say so (they
    // reach the view once the daemon's session has flushed them).
    tokio::task::block_in_place(|| {
        eventually_sync("the scans counted", Duration::from_secs(30), || {
            let after = scans(&url);
            (after.0 > before.0 && after.1 > before.1 && after.2 > before.2 && after.3 > before.3)
                .then_some(after)
        })
    });
}
