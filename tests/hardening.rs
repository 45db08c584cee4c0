//! Regression tests for a security probe of the release binaries (issue
//! 19, items 6 and 8), each reproduced the way the probe met it: the
//! `cardlinkd --check-config` and `cardlinkctl db import` command lines, a
//! real daemon process with a reader on a pseudo-terminal.

mod common;

use common::*;
use firmware_protocol::frame::{encode_vec, Cmd};
use serde_json::json;
use tokio::io::AsyncWriteExt;

// 8. Text the reader sends (READ_ERROR's text, STATUS's firmware text) is
// free text: identifiers in it are masked in events, `status` and the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identifiers_in_a_readers_own_text_are_masked() {
    let (d, mut ptys) = Process::start(&[("r1", "frame", "utf-8")], "");
    let mut c = d.client().await;
    while c.expect("READER").await["state"] != "connected" {}
    let (ssn, card_no) = (demo_ssn_full(HOLDER), card(HOLDER));
    let status = format!("FW 2.1 owner {ssn} card {card_no}");
    ptys[0]
        .write_all(&encode_vec(1, Cmd::Status as u8, status.as_bytes()).unwrap())
        .await
        .unwrap();
    let mut payload = vec![0xFF];
    payload.extend_from_slice(&(-11i32).to_le_bytes());
    payload.extend_from_slice(format!("bad card:{ssn}/{card_no}").as_bytes());
    ptys[0]
        .write_all(&encode_vec(2, Cmd::ReadError as u8, &payload).unwrap())
        .await
        .unwrap();
    // Frames are handled in order: the STATUS is in by the time the error shows.
    let e = c.expect("ERROR").await;
    let message = e["message"].as_str().unwrap();
    let masked_ssn = format!("{}********{}", &ssn[..6], &ssn[14..]);
    let masked_card = format!("{}******{}", &card_no[..1], &card_no[7..]);
    assert!(
        message.contains(&format!("bad card:{masked_ssn}/{masked_card}")),
        "{e}"
    );
    let st = c.request(json!({"cmd": "status"})).await;
    let firmware = st["result"]["readers"][0]["firmware"].as_str().unwrap();
    assert_eq!(
        firmware,
        format!("FW 2.1 owner {masked_ssn} card {masked_card}"),
        "{st}"
    );
    let (_, log) = d.stop();
    assert!(log.contains(&masked_ssn), "{log}");
    assert!(!log.contains(&ssn) && !log.contains(&card_no), "{log}");
}
