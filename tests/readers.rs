//! What real cards and readers send (the MOHRSS reader interface,
//! `iReadCardBas`), through a reader port to the socket: return codes with
//! their meaning in both modes, an unauthenticated third-generation card,
//! and a card identification code from another region.

mod common;

use common::*;
use firmware_protocol::frame::{encode_vec, scan, Cmd, Scan};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The empty 3.0 record of a card read without the PSAM key.
const UNAUTH: &str =
    "411600|||411600D15600000512345678ABCDEF01||3B6D000000815448|3.00|20211203|20311202|||";

fn vectors() -> Vec<(i32, String, String)> {
    include_str!("../firmware-protocol/vectors/retcodes.txt")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].parse().unwrap(), f[1].to_string(), f[2].to_string())
        })
        .collect()
}

fn assert_reader_error(e: &serde_json::Value, code: i32, zh: &str, en: &str) {
    assert_eq!(e["class"], "ERROR", "{e}");
    assert_eq!(e["code"], "reader_read_error", "{e}");
    assert_eq!(e["reader_code"], code, "{e}");
    assert_eq!(
        (e["zh"].as_str(), e["en"].as_str()),
        (Some(zh), Some(en)),
        "{e}"
    );
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains(&code.to_string()) && msg.contains(zh) && msg.contains(en),
        "{msg}"
    );
}

#[tokio::test(start_paused = true)]
async fn ssse_text_return_codes_reach_the_display_with_their_meaning() {
    let (d, mut ports) = Daemon::start(&[("t1", "ssse-text", "gbk")], "").await;
    let mut c = d.client().await;
    c.expect("VERSION").await; // subscribed to events from here on
    for (code, zh, en) in vectors() {
        ports[0]
            .write_all(format!("{code}\r\n").as_bytes())
            .await
            .unwrap();
        let e = c.expect("ERROR").await;
        assert_reader_error(&e, code, &zh, &en);
    }
    // A code no table knows still arrives, with a generic meaning.
    ports[0].write_all(b"-77\r\n").await.unwrap();
    assert_reader_error(
        &c.expect("ERROR").await,
        -77,
        "读卡器返回未知错误",
        "unknown reader error",
    );
    // And the reader goes on reading cards.
    let mut line = encoding_rs::GBK
        .encode(&sim_card(SPOUSE, "李娜").record())
        .0
        .into_owned();
    line.extend_from_slice(b"\r\n");
    ports[0].write_all(&line).await.unwrap();
    assert_eq!(c.expect("CARD").await["outcome"], "ok");
}

#[tokio::test(start_paused = true)]
async fn frame_mode_read_error_carries_a_signed_code_and_keeps_the_v1_form() {
    let (d, mut ports) = Daemon::start(&[("r1", "frame", "gbk")], "").await;
    let mut c = d.client().await;
    c.expect("VERSION").await; // subscribed to events from here on
    let port = &mut ports[0];
    let mut seq = 0u8;
    for (code, zh, en) in vectors() {
        seq += 1;
        let mut payload = [0u8; 5];
        firmware_protocol::retcode::encode_read_error(code, &mut payload);
        port.write_all(&encode_vec(seq, Cmd::ReadError as u8, &payload).unwrap())
            .await
            .unwrap();
        assert_reader_error(&c.expect("ERROR").await, code, &zh, &en);
    }
    // The v1 form: one code byte, then text.
    port.write_all(&encode_vec(200, Cmd::ReadError as u8, b"\x05card mute").unwrap())
        .await
        .unwrap();
    let e = c.expect("ERROR").await;
    assert_eq!(
        (e["code"].as_str(), e["reader_code"].as_i64()),
        (Some("reader_read_error"), Some(5))
    );
    assert!(e["message"].as_str().unwrap().contains("card mute"), "{e}");
}

/// Reads host frames until a FEEDBACK arrives; returns its payload.
async fn feedback(port: &mut cardlink::sim::VirtualPort) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 256];
    loop {
        while let Scan::Frame {
            frame, consumed, ..
        } = scan(&buf)
        {
            let (cmd, payload) = (frame.cmd, frame.payload.to_vec());
            buf.drain(..consumed);
            if cmd == Cmd::Feedback as u8 {
                return payload;
            }
        }
        let n = port.read(&mut chunk).await.unwrap();
        assert!(n > 0, "port closed");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(start_paused = true)]
async fn an_unauthenticated_third_generation_card_is_its_own_error() {
    let (d, mut ports) =
        Daemon::start(&[("r1", "frame", "gbk"), ("t1", "ssse-text", "gbk")], "").await;
    let mut c = d.client().await;
    c.expect("VERSION").await; // subscribed to events from here on
    ports[0]
        .write_all(&encode_vec(1, Cmd::CardIc as u8, UNAUTH.as_bytes()).unwrap())
        .await
        .unwrap();
    let e = c.expect("ERROR").await;
    assert_eq!(e["code"], "card_not_authenticated", "{e}");
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains("PSAM") && msg.contains("HSM") && msg.contains("读卡器"),
        "{msg}"
    );
    assert_eq!(
        feedback(&mut ports[0]).await,
        vec![2],
        "FEEDBACK attention, not rejected"
    );
    ports[1]
        .write_all(format!("{UNAUTH}\r\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(c.expect("ERROR").await["code"], "card_not_authenticated");
    let st = c.request(serde_json::json!({"cmd": "status"})).await;
    assert_eq!(
        st["result"]["readers"][0]["rejected"], 0,
        "not counted as a bad card"
    );
}

#[tokio::test(start_paused = true)]
async fn a_card_identification_code_from_another_region_is_a_bad_card() {
    let (d, mut ports) = Daemon::start(&[("r1", "frame", "utf-8")], "").await;
    let mut c = d.client().await;
    c.expect("VERSION").await; // subscribed to events from here on
    let good = sim_card(HOLDER, "张伟").record();
    let region = &good[..6];
    let other = if region == "110105" {
        "110106"
    } else {
        "110105"
    };
    // Field 4 is the card identification code; make it start elsewhere.
    let fields: Vec<&str> = good.split('|').collect();
    let bad = good.replacen(fields[3], &format!("{other}{}", &fields[3][6..]), 1);
    ports[0]
        .write_all(&encode_vec(1, Cmd::CardIc as u8, bad.as_bytes()).unwrap())
        .await
        .unwrap();
    let e = c.expect("ERROR").await;
    assert_eq!(e["code"], "bad_card", "{e}");
    assert!(e["message"].as_str().unwrap().contains("card_id"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn card_removal_reaches_the_display() {
    let (d, mut ports) = Daemon::start(&[("k1", "frame", "utf-8")], "role = \"kiosk\"").await;
    let mut c = d.client().await;
    c.expect("VERSION").await;
    ports[0]
        .write_all(&card_frame(1, HOLDER, "张伟"))
        .await
        .unwrap();
    assert_eq!(c.expect("CARD").await["outcome"], "ok");
    ports[0]
        .write_all(&encode_vec(2, Cmd::CardRemoved as u8, b"").unwrap())
        .await
        .unwrap();
    let r = c.expect("REMOVED").await;
    assert_eq!(r, serde_json::json!({"class": "REMOVED", "reader": "k1"}));
}
