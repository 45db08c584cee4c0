//! The real `cardlinkd` binary where only a process will do: signals, real
//! pseudo-terminals through tokio-serial, process locks. (Readiness,
//! watchdog and SIGHUP are in `tests/service.rs`; everything else runs
//! in-process in `tests/daemon.rs`.)

mod common;

use cardlink::sim::PtyMaster;
use common::*;
use serde_json::json;
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_cleanly_and_removes_the_socket() {
    let (d, _ptys) = Process::start(&[], "");
    let socket = d.socket.clone();
    let mut c = d.client().await;
    c.expect("VERSION").await;
    let (status, log) = d.stop();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(!socket.exists());
    assert!(log.contains("cardlinkd stopped"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_pty_unplug_and_replug_without_restart() {
    let (d, mut ptys) = Process::start(&[("r1", "frame", "utf-8")], "");
    let pid = d.child.id();
    let mut c = d.client().await;
    // The reader task opens the pty right after READY=1: wait for it.
    while c.expect("READER").await["state"] != "connected" {}
    drop(ptys.pop()); // unplug: the pty goes away
    let r = c.expect("READER").await;
    assert_eq!(
        (r["reader"].as_str(), r["state"].as_str()),
        (Some("r1"), Some("disconnected"))
    );
    assert!(r["error"].is_string(), "the cause is shown: {r}");
    let mut pty = PtyMaster::open(Some(&d.path("r1"))).unwrap(); // replug: new pty, same path
    let r = c.expect("READER").await;
    assert_eq!(r["state"], "connected");
    assert_eq!(r["path"], d.path("r1").display().to_string());
    pty.write_all(&card_frame(1, HOLDER, "张伟")).await.unwrap();
    assert_eq!(c.expect("CARD").await["outcome"], "ok");
    assert_eq!(d.child.id(), pid);
    let r = c.request(json!({"cmd": "status"})).await;
    assert_eq!(r["result"]["readers"][0]["state"], "connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_written_to_a_file_or_pipe_is_plain_text() {
    let (d, _ptys) = Process::start(&[], "");
    let (_, log) = d.stop();
    assert!(log.contains("cardlinkd stopped"), "{log}");
    assert!(!log.contains('\u{1b}'), "escape codes in the log:\n{log:?}");
}

/// Issue 19.7: 1,100 idle socket clients took every descriptor of a daemon
/// started without `LimitNOFILE=` (soft limit 1024); a replugged reader
/// then failed with "Too many open files" and lost its swipes. Clients are
/// capped now (`socket.max_clients`, 256), the rest told why, and the soft
/// limit is raised to the hard one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_cannot_starve_a_replugged_reader() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    // This test itself holds the 1,100 clients.
    cardlink::fds::raise_nofile();
    let (d, mut ptys) = Process::start_with_nofile(&[("r1", "frame", "utf-8")], "", 1024);
    let mut watcher = d.client().await;
    while watcher.expect("READER").await["state"] != "connected" {}
    let mut idle = Vec::new();
    let mut refused = 0;
    for _ in 0..1100 {
        let s = tokio::net::UnixStream::connect(&d.socket).await.unwrap();
        let mut lines = BufReader::new(s).lines();
        let first = tokio::time::timeout(std::time::Duration::from_secs(20), lines.next_line())
            .await
            .expect("the daemon neither served nor refused a client")
            .unwrap()
            .expect("closed without a word");
        let first: serde_json::Value = serde_json::from_str(&first).unwrap();
        if first["class"] == "ERROR" {
            assert_eq!(first["code"], "too_many_clients", "{first}");
            refused += 1;
        } else {
            assert_eq!(first["class"], "VERSION", "{first}");
        }
        idle.push(lines);
    }
    // 256 served: the watcher and 255 of the idle ones.
    assert_eq!(refused, 1100 - 255);
    drop(ptys.pop());
    while watcher.expect("READER").await["state"] != "disconnected" {}
    let mut pty = PtyMaster::open(Some(&d.path("r1"))).unwrap();
    while watcher.expect("READER").await["state"] != "connected" {}
    pty.write_all(&card_frame(1, HOLDER, "张伟")).await.unwrap();
    assert_eq!(watcher.expect("CARD").await["outcome"], "ok");
    drop(idle);
    let (_, log) = d.stop();
    assert!(!log.contains("Too many open files"), "{log}");
    assert!(log.contains("too many socket clients"), "{log}");
}
