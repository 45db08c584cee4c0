//! One PostgreSQL registry for many boxes: two `cardlinkd` processes on
//! one database, a server outage and its recovery, TLS with verify-full.
//! The registry's own behaviour on PostgreSQL is `tests/registry.rs`
//! (every test there runs on both backends).

mod common;

use std::time::Duration;

use cardlink::registry::{Database, Lookup, Outcome, Registry};
use common::*;
use serde_json::json;
use tokio::io::AsyncWriteExt;

/// Runs `f` on a thread of its own: the registry's methods block, which a
/// test's async runtime does not allow.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().unwrap())
}

/// A fixture registry in database `cardlink` on `server`.
fn fixture_on(server: &pg::Server) -> Database {
    pg::admin(&server.url("postgres"), "CREATE DATABASE cardlink");
    let db = Database::Postgres(server.url("cardlink"));
    let dir = tempfile::tempdir().unwrap();
    Registry::open_database(&db, &Default::default())
        .unwrap()
        .import(&fixture_csv(dir.path()), "test")
        .unwrap();
    db
}

/// A daemon process on `db` with one frame reader `r1`.
fn daemon(db: &Database, extra: &str, env: &[(&str, String)]) -> (Process, PtyMaster) {
    let dir = tempfile::tempdir().unwrap();
    let unused = dir.path().join("no-sqlite-here");
    let (p, mut ptys) = Process::start_on(
        dir,
        db.clone(),
        unused,
        &[("r1", "frame", "utf-8")],
        extra,
        env,
    );
    (p, ptys.remove(0))
}

use cardlink::sim::PtyMaster;

/// A client of `d`, once its reader is connected (input that arrives
/// before the daemon opens the port is discarded as stale).
async fn connected_client(d: &Process) -> Client {
    let mut c = d.client().await;
    loop {
        let v = c.next().await;
        if v["class"] == "READER" && v["state"] == "connected" {
            return c;
        }
    }
}

/// Swipes fixture person `i` (frame `seq`) and returns the daemon's answer:
/// the `CARD` event or the `ERROR` event.
async fn swipe(reader: &mut PtyMaster, c: &mut Client, seq: u8, i: u64) -> serde_json::Value {
    reader
        .write_all(&card_frame(seq, i, "持卡人"))
        .await
        .unwrap();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(20), c.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no answer to swipe {seq} within 20 s"))
            .unwrap()
            .expect("connection closed");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["class"] == "CARD" || v["class"] == "ERROR" {
            return v;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bind_at_one_box_is_seen_at_the_next_swipe_at_another_and_concurrent_binds_never_both_win(
) {
    let test = "two_daemons";
    let Some(server) = pg::server(test, None, &[]) else {
        return;
    };
    let db = off_runtime(|| fixture_on(&server));
    let (a, _ra) = daemon(&db, "role = \"window\"", &[]);
    let (b, mut rb) = daemon(&db, "role = \"window\"", &[]);
    let mut ca = connected_client(&a).await;
    let mut cb = connected_client(&b).await;

    // Window 1 binds CHILD to HOLDER; kiosk 7's next swipe of CHILD shows it.
    let reply = ca
        .request(json!({"cmd": "bind", "holder": demo_ssn_full(HOLDER), "member": demo_ssn_full(CHILD), "relation": "child", "operator": "clerk1"}))
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    let card = swipe(&mut rb, &mut cb, 1, CHILD).await;
    assert_eq!(card["class"], "CARD", "{card}");
    assert_eq!(card["role"], "member", "{card}");
    assert_eq!(card["payer"]["relation"], "child", "{card}");

    // Both boxes bind one member to different holders at the same moment:
    // exactly one wins, the other is refused; never two payers.
    let members = [PARENT, SPOUSE, CHILD];
    for (round, member) in members.into_iter().enumerate() {
        // Free the member first (SPOUSE and CHILD are bound to HOLDER).
        let _ = ca
            .request(json!({"cmd": "unbind", "holder": demo_ssn_full(HOLDER), "member": demo_ssn_full(member), "operator": "clerk1"}))
            .await;
        let bind = |holder: u64| json!({"cmd": "bind", "holder": demo_ssn_full(holder), "member": demo_ssn_full(member), "relation": "parent", "operator": "clerk1"});
        let (x, y) = tokio::join!(ca.request(bind(HOLDER)), cb.request(bind(HOLDER2)));
        let oks = [&x, &y].iter().filter(|r| r["ok"] == true).count();
        assert_eq!(oks, 1, "round {round}: {x} {y}");
        let loser = if x["ok"] == true { &y } else { &x };
        let code = loser["code"].as_str().unwrap_or_default();
        assert!(
            code == "member_has_payer" || code == "already_linked",
            "round {round}: {loser}"
        );
        let r = off_runtime(|| {
            let reg = Registry::open_database(&db, &Default::default()).unwrap();
            reg.resolve(&Lookup::ssn(ssn(member))).unwrap()
        });
        assert_eq!(r.outcome, Outcome::Ok);
        let winner = if x["ok"] == true { HOLDER } else { HOLDER2 };
        assert_eq!(r.payer.unwrap().ssn, ssn(winner), "round {round}");
    }
    // Every write of both boxes is in one chain.
    let (v, stats, actions) = off_runtime(|| {
        let reg = Registry::open_database(&db, &Default::default()).unwrap();
        let mut actions = Vec::new();
        reg.audit_rows(&mut |r| {
            actions.push(r.action);
            Ok(())
        })
        .unwrap();
        (reg.verify_audit().unwrap(), reg.stats().unwrap(), actions)
    });
    assert!(v.broken.is_none(), "{v:?}");
    assert_eq!(stats.audit, v.rows);
    // import, 1 bind + 1 swipe, then per round an unbind and two binds.
    assert_eq!(actions.len(), 3 + 3 * members.len(), "{actions:?}");
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_server_is_down_swipes_get_registry_unavailable_and_resolve_again_after() {
    let test = "outage";
    let Some(server) = pg::server(test, None, &[]) else {
        return;
    };
    let db = off_runtime(|| fixture_on(&server));
    let env = [("WATCHDOG_USEC", "400000".to_string())];
    let (d, mut r) = daemon(&db, "", &env);
    let pid = d.child.id();
    let mut c = connected_client(&d).await;
    let card = match tokio::time::timeout(Duration::from_secs(30), swipe(&mut r, &mut c, 1, HOLDER))
        .await
    {
        Ok(v) => v,
        Err(_) => panic!("{}", d.log.text()),
    };
    assert_eq!(card["outcome"], "ok", "{card}");

    off_runtime(|| server.stop());
    let err = match tokio::time::timeout(Duration::from_secs(30), swipe(&mut r, &mut c, 2, SPOUSE))
        .await
    {
        Ok(v) => v,
        Err(_) => panic!("{}", d.log.text()),
    };
    assert_eq!(err["class"], "ERROR", "{err}");
    assert_eq!(err["code"], "registry_unavailable", "{err}");
    // The reader keeps reading: the next swipe is answered too (at once,
    // while the daemon backs off).
    let err = swipe(&mut r, &mut c, 3, CHILD).await;
    assert_eq!(err["code"], "registry_unavailable", "{err}");
    // The systemd watchdog keeps being fed: the outage is not a hang.
    let sock = &d.notify;
    sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 256];
    while sock.recv(&mut buf).is_ok() {}
    sock.set_nonblocking(false).unwrap();
    let pings = recv_until(sock, "WATCHDOG=1", Duration::from_secs(5));
    assert!(pings.iter().any(|m| m == "WATCHDOG=1"), "{pings:?}");
    let status = c.request(json!({"cmd": "status"})).await;
    assert_eq!(
        status["result"]["readers"][0]["state"], "connected",
        "{status}"
    );

    off_runtime(|| server.start());
    // The daemon finds the server again by itself (at most 10 s after its
    // last attempt), and the next swipe resolves.
    wait_reachable(&d);
    let card = swipe(&mut r, &mut c, 4, SPOUSE).await;
    assert_eq!(card["outcome"], "ok", "{card}");
    assert_eq!(d.child.id(), pid);
    let (status, log) = d.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("registry unreachable"), "{log}");
    assert!(log.contains("registry reachable again"), "{log}");
}

/// Waits until the daemon has found the registry reachable again (it
/// tries in the background at its backoff's pace), at most 30 s.
fn wait_reachable(d: &Process) {
    let log = d.log.clone();
    assert!(
        off_runtime(move || log.wait_for("registry reachable again", Duration::from_secs(30))),
        "no recovery:\n{}",
        d.log.text()
    );
}

/// A CA and a server certificate for `localhost` made here with openssl.
fn make_certs(dir: &std::path::Path) -> Option<()> {
    let run = |args: &[&str]| {
        std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .map(|o| {
                assert!(
                    o.status.success(),
                    "openssl {args:?}: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            })
    };
    // A self-signed CA: (subject, key file, certificate file).
    let ca = |subject: &str, key: &str, pem: &str| {
        run(&[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", subject,
            "-keyout", key, "-out", pem,
        ])
    };
    ca("/CN=cardlink test CA", "ca.key", "ca.pem").ok()?;
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ])
    .ok()?;
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=DNS:localhost\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.crt",
    ])
    .ok()?;
    // Another CA, which did not sign the server's certificate.
    ca("/CN=someone else", "other.key", "other.pem").ok()?;
    Some(())
}

#[test]
fn tls_verify_full_trusts_only_the_configured_ca_and_the_servers_name() {
    let test = "tls";
    let certs = tempfile::tempdir().unwrap();
    if make_certs(certs.path()).is_none() {
        pg::skip(test, "no openssl command to make certificates");
        return;
    }
    // The server's key must be the server user's and private.
    let key = certs.path().join("server.key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let user = unsafe { libc::getpwnam(c"postgres".as_ptr()) };
    if unsafe { libc::geteuid() } == 0 && !user.is_null() {
        let (uid, gid) = unsafe { ((*user).pw_uid, (*user).pw_gid) };
        std::os::unix::fs::chown(&key, Some(uid), Some(gid)).unwrap();
        std::os::unix::fs::chown(certs.path(), Some(uid), Some(gid)).unwrap();
    }
    let crt = format!(
        "ssl_cert_file={}",
        certs.path().join("server.crt").display()
    );
    let keyf = format!("ssl_key_file={}", key.display());
    // TLS only over TCP.
    let hba =
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n";
    let Some(server) = pg::server(test, Some(hba), &["ssl=on", &crt, &keyf]) else {
        return;
    };
    let url = |host: &str, ca: &str| {
        format!(
            "postgres://postgres@{host}:{}/postgres?sslmode=verify-full&sslrootcert={}",
            server.port,
            certs.path().join(ca).display()
        )
    };
    let open = |u: String| Registry::open_database(&Database::Postgres(u), &Default::default());
    // The right CA and the certificate's name: connected and migrated.
    let reg = open(url("localhost", "ca.pem")).unwrap();
    assert!(reg.schema_version().unwrap() >= 2, "migrated");
    drop(reg);
    // Another CA: refused, and said so.
    let e = open(url("localhost", "other.pem")).unwrap_err().to_string();
    assert!(
        e.contains("registry unavailable") && e.to_lowercase().contains("certificate"),
        "{e}"
    );
    // The right CA but another name than the certificate's: refused.
    let e = open(url("127.0.0.1", "ca.pem")).unwrap_err().to_string();
    assert!(
        e.contains("registry unavailable") && e.to_lowercase().contains("certificate"),
        "{e}"
    );
    // Without TLS the server refuses (hostssl only).
    let e = open(format!(
        "postgres://postgres@localhost:{}/postgres",
        server.port
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("registry unavailable"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_that_boots_while_the_server_is_away_serves_and_connects_later() {
    let Some(server) = pg::server("boot_during_outage", None, &[]) else {
        return;
    };
    let db = off_runtime(|| fixture_on(&server));
    off_runtime(|| server.stop());
    // Starts (READY=1) although the registry cannot be reached.
    let (d, mut r) = daemon(&db, "", &[]);
    let mut c = connected_client(&d).await;
    let err = swipe(&mut r, &mut c, 1, HOLDER).await;
    assert_eq!(err["code"], "registry_unavailable", "{err}");
    off_runtime(|| server.start());
    wait_reachable(&d);
    let v = swipe(&mut r, &mut c, 2, HOLDER).await;
    assert_eq!(v["outcome"], "ok", "{v}");
    let (_, log) = d.stop();
    assert!(log.contains("registry unreachable at start"), "{log}");
}

/// `--check-config` with a registry URL: it tries the server, and neither
/// its error nor the printed configuration shows the password.
#[test]
fn check_config_never_shows_the_registry_password() {
    // Nothing listens on port 1.
    let (ok, out, err) =
        check_config("database = \"postgres://cardlink:s3cr3t@127.0.0.1:1/registry\"\n");
    assert!(!ok, "{out}{err}");
    assert!(err.contains("registry unavailable"), "{err}");
    assert!(err.contains("cardlink:***@127.0.0.1:1"), "{err}");
    assert!(
        !err.contains("s3cr3t") && !out.contains("s3cr3t"),
        "{out}{err}"
    );
    let cfg = cardlink::config::Config::parse(
        "database = \"postgres://cardlink:s3cr3t@db.example/registry?sslmode=verify-full&sslrootcert=/etc/cardlink/ca.pem\"\n",
        "t",
    )
    .unwrap();
    let shown = cfg.to_toml();
    assert!(
        shown.contains("postgres://cardlink:***@db.example/registry"),
        "{shown}"
    );
    assert!(!shown.contains("s3cr3t"), "{shown}");
}

/// The daemon drives PostgreSQL on its own runtime and concurrent requests
/// take several of the pool's connections: a read is answered while a
/// write waits for the registry's write lock (held here by another
/// session). One connection serving the requests in turn (the registry
/// worker of old) would keep the read waiting behind the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_is_served_on_another_connection_while_a_write_waits_for_the_lock() {
    let test = "pool_concurrency";
    let Some(server) = pg::server(test, None, &[]) else {
        return;
    };
    let db = off_runtime(|| fixture_on(&server));
    let opts = cardlink::registry::OpenOptions {
        busy_timeout: Duration::from_secs(120),
        ..Default::default()
    };
    let reg = off_runtime(|| Registry::open_database(&db, &opts).unwrap());
    let store = cardlink::daemon::Store::start(reg);

    // Another session takes the write lock and keeps it.
    let (mut other, connection) =
        tokio_postgres::connect(&server.url("cardlink"), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    let lock = other.transaction().await.unwrap();
    lock.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&cardlink::registry::pg::WRITE_LOCK],
    )
    .await
    .unwrap();

    // A write of the daemon waits for it...
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .unbind(ssn(HOLDER), ssn(CHILD), "clerk1".into(), "test".into())
                .await
        })
    };
    loop {
        let waiting: i64 = lock
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        tokio::task::yield_now().await;
    }

    // ...while a read is answered on another of the pool's connections.
    let read = tokio::time::timeout(
        Duration::from_secs(60),
        store.resolve(Lookup::ssn(ssn(HOLDER))),
    )
    .await
    .expect("the read is not answered while a write waits for the lock")
    .expect("the store answers")
    .expect("the registry resolves");
    assert_eq!(read.outcome, Outcome::Ok);
    assert!(!writer.is_finished(), "the write waits for the lock");

    // Once the lock is free the write goes through.
    lock.commit().await.unwrap();
    let unbound = writer.await.unwrap().expect("the store answers");
    assert!(
        matches!(
            unbound,
            Ok(_) | Err(cardlink::registry::BindError::NotLinked)
        ),
        "{unbound:?}"
    );
}
