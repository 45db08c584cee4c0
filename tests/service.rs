//! Running as a service: the systemd unit, readiness and watchdog
//! notifications, reload on SIGHUP, and logs free of full SSNs.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use firmware_protocol::frame::{encode_vec, Cmd};
use serde_json::json;
use tokio::io::AsyncWriteExt;

fn systemd_analyze() -> Option<&'static str> {
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some("systemd-analyze");
    }
    assert!(
        std::env::var_os("CARDLINK_REQUIRE_SYSTEMD_ANALYZE").is_none(),
        "systemd-analyze is required (CARDLINK_REQUIRE_SYSTEMD_ANALYZE is set) but not installed"
    );
    eprintln!("systemd-analyze not installed: skipping the unit checks");
    None
}

/// The shipped unit `name` with ExecStart pointing at the binary under test.
fn unit_under_test(dir: &Path, name: &str, exe: &str) -> std::path::PathBuf {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("systemd")
            .join(format!("{name}.service")),
    )
    .unwrap();
    let unit = unit.replace(&format!("/usr/bin/{name}"), exe);
    let path = dir.join(format!("{name}.service"));
    std::fs::write(&path, unit).unwrap();
    path
}

/// `systemd-analyze verify` is clean and `security` rates the unit at most 2.0.
fn verified_exposure(sa: &str, unit: &Path, name: &str) -> f64 {
    let out = Command::new(sa).arg("verify").arg(unit).output().unwrap();
    let msgs = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{msgs}"
    );
    assert!(
        !msgs.contains(&format!("{name}.service:")),
        "warnings about the unit:\n{msgs}"
    );
    let out = Command::new(sa)
        .args(["security", "--offline=yes"])
        .arg(unit)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let level: f64 = text
        .lines()
        .find_map(|l| {
            l.split(&format!("Overall exposure level for {name}.service:"))
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(level <= 2.0, "{name}: exposure {level} > 2.0:\n{text}");
    level
}

#[test]
fn display_unit_verifies_and_is_hardened() {
    let Some(sa) = systemd_analyze() else { return };
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_under_test(
        dir.path(),
        "cardlink-display",
        env!("CARGO_BIN_EXE_cardlink-display"),
    );
    verified_exposure(sa, &unit, "cardlink-display");
    let text = std::fs::read_to_string(&unit).unwrap();
    for key in [
        "IPAddressAllow=localhost",
        "IPAddressDeny=any",
        "DynamicUser=yes",
        "SupplementaryGroups=cardlink",
        "--listen 127.0.0.1:",
        // The screen key: readable by the kiosk user's group only.
        "Group=cardlink-screen",
        "RuntimeDirectory=cardlink-display",
        "--key-dir /run/cardlink-display",
        "EnvironmentFile=-/etc/cardlink/display.env",
        "LimitNOFILE=",
    ] {
        assert!(text.contains(key), "unit lacks {key}");
    }
}

#[test]
fn unit_verifies_and_is_hardened() {
    let Some(sa) = systemd_analyze() else { return };
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_under_test(dir.path(), "cardlinkd", env!("CARGO_BIN_EXE_cardlinkd"));
    verified_exposure(sa, &unit, "cardlinkd");
    let unit_text = std::fs::read_to_string(&unit).unwrap();
    for key in [
        "Type=notify",
        "Restart=on-failure",
        "RuntimeDirectory=cardlink",
        "StateDirectory=cardlink",
        "LimitNOFILE=",
        "DevicePolicy=closed",
        "RestrictAddressFamilies=AF_UNIX",
        "CapabilityBoundingSet=\n",
        "NoNewPrivileges=yes",
        "SupplementaryGroups=dialout",
        "WatchdogSec=",
    ] {
        assert!(unit_text.contains(key), "unit lacks {key}");
    }
}

/// A drop-in shipped in `systemd/`: its text and its setting lines.
fn shipped_drop_in(name: &str) -> (String, Vec<String>) {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("systemd")
            .join(name),
    )
    .unwrap();
    let settings = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    (text, settings)
}

/// The unit under test with the drop-in `name` holding `text`, and what
/// `systemd-analyze security` says of the two together.
fn with_drop_in(sa: &str, dir: &Path, name: &str, text: &str) -> (std::path::PathBuf, String) {
    let unit = unit_under_test(dir, "cardlinkd", env!("CARGO_BIN_EXE_cardlinkd"));
    let dropins = dir.join("cardlinkd.service.d");
    std::fs::create_dir_all(&dropins).unwrap();
    std::fs::write(dropins.join(name), text).unwrap();
    let out = Command::new(sa)
        .args(["security", "--offline=yes"])
        .arg(&unit)
        .output()
        .unwrap();
    (unit, String::from_utf8_lossy(&out.stdout).to_string())
}

/// The PostgreSQL drop-in, applied with a registry address as README says:
/// the unit still verifies and rates at most 2.0, and the drop-in opens
/// TCP to that address only (the main unit's IPAddressDeny=any stays).
#[test]
fn postgresql_drop_in_opens_only_the_registry_and_stays_hardened() {
    let Some(sa) = systemd_analyze() else { return };
    let (shipped, settings) = shipped_drop_in("cardlinkd-postgresql.conf");
    assert_eq!(
        settings,
        [
            "[Service]",
            "PrivateNetwork=no",
            "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
            "IPAddressAllow=REGISTRY_ADDRESS"
        ]
    );
    let dir = tempfile::tempdir().unwrap();
    let (unit, text) = with_drop_in(
        sa,
        dir.path(),
        "postgresql.conf",
        &shipped.replace("REGISTRY_ADDRESS", "10.20.0.5"),
    );
    // The drop-in is in effect...
    assert!(
        text.lines()
            .any(|l| l.contains("PrivateNetwork=") && l.contains("access to the host's network")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("IPAddressDeny=") && l.contains("allow list with non-localhost")),
        "{text}"
    );
    // ...and the unit is still verified and hardened.
    verified_exposure(sa, &unit, "cardlinkd");
    let unit_text = std::fs::read_to_string(&unit).unwrap();
    assert!(unit_text.contains("IPAddressDeny=any"));
}

/// The drop-in for readers through a vendor's library: USB and hidraw
/// devices and netlink sockets (libusb's hot-plug events) on top of the
/// unit, nothing else; the unit still verifies and rates at most 2.0.
#[test]
fn library_drop_in_adds_only_usb_devices_and_netlink() {
    let (shipped, settings) = shipped_drop_in("cardlinkd-library.conf");
    assert_eq!(
        settings,
        [
            "[Service]",
            "DeviceAllow=char-usb_device rw",
            "DeviceAllow=char-hidraw rw",
            "RestrictAddressFamilies=AF_UNIX AF_NETLINK"
        ]
    );
    let Some(sa) = systemd_analyze() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (unit, text) = with_drop_in(sa, dir.path(), "library.conf", &shipped);
    assert!(
        text.lines()
            .any(|l| l.contains("RestrictAddressFamilies=~AF_NETLINK") && l.contains('✗')),
        "the drop-in is not in effect:\n{text}"
    );
    verified_exposure(sa, &unit, "cardlinkd");
}

/// The metrics drop-in, applied as README says: the daemon may bind the
/// metrics port and no other, only the scraper's address may reach it
/// (the unit's IPAddressDeny=any stays), and the unit still verifies and
/// rates at most 2.0.
#[test]
fn metrics_drop_in_allows_only_the_metrics_port_and_the_scraper() {
    let (shipped, settings) = shipped_drop_in("cardlinkd-metrics.conf");
    assert_eq!(
        settings,
        [
            "[Service]",
            "PrivateNetwork=no",
            "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
            "SocketBindAllow=tcp:METRICS_PORT",
            "SocketBindDeny=any",
            "IPAddressAllow=SCRAPER_ADDRESS"
        ]
    );
    let Some(sa) = systemd_analyze() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (unit, text) = with_drop_in(
        sa,
        dir.path(),
        "metrics.conf",
        &shipped
            .replace("METRICS_PORT", "9780")
            .replace("SCRAPER_ADDRESS", "10.20.0.9"),
    );
    assert!(
        text.lines()
            .any(|l| l.contains("IPAddressDeny=") && l.contains("allow list with non-localhost")),
        "the drop-in is not in effect:\n{text}"
    );
    verified_exposure(sa, &unit, "cardlinkd");
    let unit_text = std::fs::read_to_string(&unit).unwrap();
    assert!(unit_text.contains("IPAddressDeny=any"));
}

/// The display binds its screen's port only; its metrics drop-in adds the
/// metrics port and the scraper, and the unit stays verified and hardened.
#[test]
fn display_binds_only_its_ports_with_or_without_metrics() {
    let unit_text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/cardlink-display.service"
    ))
    .unwrap();
    assert!(unit_text.contains("--listen 127.0.0.1:8780"));
    assert!(unit_text.contains("SocketBindAllow=tcp:8780\nSocketBindDeny=any\n"));
    let (shipped, settings) = shipped_drop_in("cardlink-display-metrics.conf");
    assert!(settings.contains(&"SocketBindAllow=tcp:METRICS_PORT".to_string()));
    assert!(settings
        .iter()
        .any(|l| l.ends_with("--metrics-listen METRICS_ADDRESS:METRICS_PORT")));
    let Some(sa) = systemd_analyze() else { return };
    let dir = tempfile::tempdir().unwrap();
    let exe = env!("CARGO_BIN_EXE_cardlink-display");
    let unit = unit_under_test(dir.path(), "cardlink-display", exe);
    let dropins = dir.path().join("cardlink-display.service.d");
    std::fs::create_dir_all(&dropins).unwrap();
    std::fs::write(
        dropins.join("metrics.conf"),
        shipped
            .replace("/usr/bin/cardlink-display", exe)
            .replace("METRICS_PORT", "9781")
            .replace("METRICS_ADDRESS", "127.0.0.1")
            .replace("SCRAPER_ADDRESS", "localhost"),
    )
    .unwrap();
    verified_exposure(sa, &unit, "cardlink-display");
}

#[test]
fn udev_rules_and_tmpfiles_are_well_formed() {
    let rules = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/99-cardlink-reader.rules"
    ))
    .unwrap();
    for line in rules
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        assert!(line.contains("SUBSYSTEM==\"tty\""), "{line}");
        assert!(line.contains("SYMLINK+=\"cardlink/"), "{line}");
        assert!(line.contains("GROUP=\"dialout\""), "{line}");
    }
    if let Some(sa) = systemd_analyze() {
        // systemd-analyze cat-config is not a validator; use the tmpfiles parser itself when present.
        let _ = sa;
        if let Ok(out) = Command::new("systemd-tmpfiles")
            .arg("--dry-run")
            .arg("--create")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/systemd/cardlink.conf"
            ))
            .output()
        {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!err.contains("Failed to parse"), "{err}");
        }
    }
    let cfg = cardlink::config::Config::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/cardlinkd.toml"
    )))
    .unwrap();
    assert_eq!(cfg.socket.path, Path::new("/run/cardlink/display.sock"));
    assert_eq!(
        cfg.database,
        Path::new("/var/lib/cardlink/registry.db").into()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifies_ready_status_and_watchdog_which_stops_when_the_registry_is_stuck() {
    let env = [("WATCHDOG_USEC", "300000".to_string())];
    let (d, mut ptys) =
        Process::start_env(&[("r1", "frame", "utf-8")], "busy_timeout_ms = 3000", &env);
    let sock = &d.notify;
    // Process::start returned on READY=1, and the socket listens by then.
    assert!(std::os::unix::net::UnixStream::connect(&d.socket).is_ok());
    let got = recv_until(sock, "r1 connected", Duration::from_secs(5));
    assert!(
        got.iter()
            .any(|m| m.contains("STATUS=") && m.contains("r1 connected")),
        "{got:?}"
    );
    let got = recv_until(sock, "WATCHDOG=1", Duration::from_secs(3));
    assert!(got.iter().any(|m| m == "WATCHDOG=1"), "{got:?}");

    // Wedge the registry thread: another process holds the write lock while
    // a swipe needs to write its audit row (it waits up to busy_timeout).
    let blocker = rusqlite::Connection::open(&d.db).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut c = d.client().await;
    ptys[0]
        .write_all(&card_frame(1, HOLDER, "张伟"))
        .await
        .unwrap();
    // The daemon says when a ping is withheld; pings sent before the stall
    // took hold are drained, then nothing more may come.
    assert!(
        d.log
            .wait_for("withholding the watchdog ping", Duration::from_secs(10)),
        "{}",
        d.log.text()
    );
    sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 256];
    while sock.recv(&mut buf).is_ok() {}
    sock.set_nonblocking(false).unwrap();
    let during = recv_until(sock, "never", Duration::from_millis(1500));
    assert!(
        !during.iter().any(|m| m == "WATCHDOG=1"),
        "pings continued while the registry was stuck: {during:?}"
    );
    blocker.execute_batch("COMMIT").unwrap();
    drop(blocker);
    // The swipe completes (with an audit error event or a late audit row) and pings resume.
    let card = c.expect("CARD").await;
    assert_eq!(card["outcome"], "ok");
    let after = recv_until(sock, "WATCHDOG=1", Duration::from_secs(5));
    assert!(after.iter().any(|m| m == "WATCHDOG=1"), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_readers_and_relations_without_dropping_clients() {
    let (d, ptys) = Process::start(&[("r1", "frame", "utf-8")], "");
    let mut c = d.client().await;
    // READY=1 comes before the reader task has opened its pty: wait for it.
    while c.expect("READER").await["state"] != "connected" {}
    // New config: r1 removed, r2 added, only "child" allowed.
    let mut r2 = cardlink::sim::PtyMaster::open(Some(&d.path("r2"))).unwrap();
    let text = std::fs::read_to_string(&d.config).unwrap();
    let text = text.replace("name = \"r1\"", "name = \"r2\"").replace(
        &format!("{:?}", d.path("r1")),
        &format!("{:?}", d.path("r2")),
    );
    let text = format!("relations = [\"child\"]\n{text}");
    d.reload(&text);
    // The two changes the reload makes, and nothing else.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let r = tokio::time::timeout(Duration::from_secs(5), c.expect("READER"))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no READER events after SIGHUP; daemon log:\n{}",
                    d.log.text()
                )
            });
        seen.push((
            r["reader"].as_str().unwrap().to_string(),
            r["state"].as_str().unwrap().to_string(),
        ));
    }
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("r1".into(), "disconnected".into()),
            ("r2".into(), "connected".into())
        ]
    );
    // Same client connection still works and sees the new reader's swipes.
    r2.write_all(&card_frame(1, HOLDER, "张伟")).await.unwrap();
    let card = c.expect("CARD").await;
    assert_eq!(card["reader"], "r2");
    let r = c.request(json!({"cmd": "bind", "holder": card_no(HOLDER), "member": card_no(PARENT), "relation": "parent", "consent": cardlink::registry::consent::CURRENT.version})).await;
    assert_eq!(r["code"], "relation_not_allowed");
    let r = c.request(json!({"cmd": "status"})).await;
    let readers: Vec<&str> = r["result"]["readers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(readers, vec!["r2"]);
    drop(ptys);
}

fn card_no(i: u64) -> String {
    common::card(i)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_full_ssn_in_any_log_line() {
    let (d, mut ptys) = Process::start(
        &[
            ("f", "frame", "utf-8"),
            ("t", "ssse-text", "utf-8"),
            ("m", "magstripe", "gbk"),
        ],
        "",
    );
    let mut c = d.client().await;
    let everyone = [
        HOLDER,
        SPOUSE,
        CHILD,
        PARENT,
        UNINSURED,
        LOST,
        EXPIRED,
        FROZEN,
        CANCELLED,
        SUSPENDED,
        HOLDER2,
        MEMBER2,
        NO_CARD,
        HOLDER_SUSPENDED,
        HOLDER_EXPIRED,
    ];
    for (k, &i) in everyone.iter().enumerate() {
        let card = sim_card(i, "测试");
        ptys[0]
            .write_all(&encode_vec(k as u8, Cmd::CardIc as u8, card.record().as_bytes()).unwrap())
            .await
            .unwrap();
        ptys[1]
            .write_all(format!("{}\r\n", card.record()).as_bytes())
            .await
            .unwrap();
        ptys[2]
            .write_all(format!("{}\r\n", card.tracks().unwrap()).as_bytes())
            .await
            .unwrap();
        c.request(json!({"cmd": "lookup", "number": common::demo_ssn_full(i)}))
            .await;
        c.request(json!({"cmd": "bind", "holder": common::demo_ssn_full(HOLDER), "member": common::demo_ssn_full(i), "relation": "child", "consent": cardlink::registry::consent::CURRENT.version})).await;
        c.request(json!({"cmd": "unbind", "holder": common::demo_ssn_full(HOLDER), "member": common::demo_ssn_full(i)})).await;
        c.request(json!({"cmd": "contributions", "number": common::demo_ssn_full(i)}))
            .await;
    }
    // Invalid numbers and records too.
    let bad = format!("{}0", &common::demo_ssn_full(CHILD)[..17]);
    c.request(json!({"cmd": "lookup", "number": bad})).await;
    ptys[1]
        .write_all(
            sim_card(CHILD, "x")
                .record()
                .replace(&common::demo_ssn_full(CHILD), &bad)
                .as_bytes(),
        )
        .await
        .unwrap();
    ptys[1].write_all(b"\r\n").await.unwrap();
    // Wait for the daemon to have handled that last line.
    loop {
        let e = c.expect("ERROR").await;
        if e["code"] == "bad_card" && e["message"].as_str().unwrap().starts_with("t:") {
            break;
        }
    }
    let (status, log) = d.stop();
    assert!(status.success());
    assert!(
        log.lines().count() > 50,
        "expected a debug log, got:\n{log}"
    );
    for &i in &everyone {
        let full = common::demo_ssn_full(i);
        assert!(
            !log.contains(&full),
            "full SSN of person {i} in the log:\n{log}"
        );
    }
    assert!(!log.contains(&bad), "an invalid number was logged in full");
}
