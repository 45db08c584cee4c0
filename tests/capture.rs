//! Recording a reader's raw traffic (PROTOCOL.md §5): switched on per
//! reader in the configuration or for N minutes by a privileged client;
//! 0600 files with a header, both directions, timestamps; rotation.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use cardlink::sim::VirtualPorts;
use common::*;
use firmware_protocol::frame::{encode_vec, Cmd};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn frame(seq: u8, i: u64) -> Vec<u8> {
    encode_vec(
        seq,
        Cmd::CardIc as u8,
        sim_card(i, "张伟").record().as_bytes(),
    )
    .unwrap()
}

/// A daemon with one reader `c1` whose `[[reader]]` table ends with `more`.
async fn daemon_with(
    more: &str,
    top: &str,
) -> (Daemon, cardlink::sim::VirtualPort, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = fixture_db(dir.path());
    let captures = dir.path().join("captures");
    let ports = VirtualPorts::new();
    let port = ports.plug("c1");
    let extra = format!(
        "capture_dir = {captures:?}\n{top}\n[[reader]]\nname = \"c1\"\npath = {:?}\nmode = \"frame\"\nencoding = \"utf-8\"\n{more}\n",
        dir.path().join("c1")
    );
    let d = Daemon::start_on(dir, db, &[], &extra, ports).await;
    (d, port, captures.join("c1.cap"))
}

/// Lines of a capture after its header: (direction, bytes).
fn traffic(path: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            assert_eq!(f.len(), 3, "{l}");
            f[0].parse::<f64>().expect("a timestamp");
            (f[1].to_string(), hex::decode(f[2]).unwrap())
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_configured_capture_records_both_directions_in_a_private_file() {
    let (d, mut port, path) = daemon_with("capture = true", "").await;
    let mut c = d.client().await;
    port.write_all(&frame(7, HOLDER)).await.unwrap();
    assert_eq!(c.expect("CARD").await["outcome"], "ok");
    // The ACK reached the reader, so it was recorded.
    let mut ack = vec![0u8; 64];
    let _ = port.read(&mut ack).await.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("# cardlink capture 1"));
    let header = lines.next().unwrap();
    for want in [
        "reader=c1",
        "mode=frame",
        "baud=115200",
        "parity=none",
        "encoding=utf-8",
        "version=",
        "started=",
    ] {
        assert!(header.contains(want), "{want} not in {header}");
    }
    let t = traffic(&path);
    let from_reader: Vec<u8> = t
        .iter()
        .filter(|(d, _)| d == "<")
        .flat_map(|(_, b)| b.clone())
        .collect();
    assert_eq!(from_reader, frame(7, HOLDER), "every byte the reader sent");
    let to_reader: Vec<u8> = t
        .iter()
        .filter(|(d, _)| d == ">")
        .flat_map(|(_, b)| b.clone())
        .collect();
    let ack = encode_vec(7, Cmd::Ack as u8, b"").unwrap();
    assert!(
        to_reader.windows(ack.len()).any(|w| w == ack.as_slice()),
        "the ACK to the reader is recorded"
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[tokio::test(start_paused = true)]
async fn a_full_capture_file_is_rotated() {
    let (d, mut port, path) = daemon_with("capture = true", "capture_max_mib = 1").await;
    let mut c = d.client().await;
    // 1.5 MB of line noise (no STX), recorded as hex: past the 1 MiB cap.
    let chunk = vec![0x55u8; 32 * 1024];
    let n = 48;
    let mut drain = [0u8; 4096];
    for _ in 0..n {
        port.write_all(&chunk).await.unwrap();
        // (Let the NAKs the daemon sends for noise flow off.)
        while let Ok(Ok(k)) =
            tokio::time::timeout(Duration::from_millis(1), port.read(&mut drain)).await
        {
            if k == 0 {
                break;
            }
        }
    }
    // A swipe after the noise: when its CARD arrives, all before it was read.
    port.write_all(&frame(9, HOLDER)).await.unwrap();
    c.expect("CARD").await;
    let old = path.with_extension("cap.1");
    let old_len = std::fs::metadata(&old).expect("a rotated file").len();
    assert!(
        old_len > 1024 * 1024 && old_len < 1024 * 1024 + 200 * 1024,
        "{old_len}"
    );
    let current = std::fs::read_to_string(&path).unwrap();
    assert!(
        current.starts_with("# cardlink capture 1\n"),
        "a new file with its header"
    );
    assert!((current.len() as u64) < 1024 * 1024);
}

#[tokio::test(start_paused = true)]
async fn only_a_privileged_client_starts_a_capture_and_it_ends_by_itself() {
    let (mut d, mut port, path) = daemon_with("", "").await;
    let mut c = d.client().await;
    let r = c
        .request(json!({"cmd": "capture", "reader": "c1", "minutes": 10}))
        .await;
    assert_eq!(r["code"], "not_privileged", "{r}");
    port.write_all(&frame(1, HOLDER)).await.unwrap();
    c.expect("CARD").await;
    assert!(!path.exists(), "nothing recorded without a capture");
    let text = privileged_config(&d.config);
    d.reload(text).await;
    let mut admin = d.client().await;
    let r = admin
        .request(json!({"cmd": "capture", "reader": "nope", "minutes": 10}))
        .await;
    assert_eq!(r["code"], "bad_request", "{r}");
    let r = admin
        .request(json!({"cmd": "capture", "reader": "c1", "minutes": 10}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["result"]["path"], path.display().to_string());
    port.write_all(&frame(2, SPOUSE)).await.unwrap();
    admin.expect("CARD").await;
    let during = std::fs::metadata(&path).unwrap().len();
    assert!(!traffic(&path).is_empty());
    // Ten minutes later the capture has ended by itself.
    tokio::time::advance(Duration::from_secs(10 * 60 + 1)).await;
    port.write_all(&frame(3, CHILD)).await.unwrap();
    admin.expect("CARD").await;
    assert_eq!(std::fs::metadata(&path).unwrap().len(), during);
}
