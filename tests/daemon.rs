//! End-to-end tests of the daemon, run in-process (`cardlink::daemon::run`)
//! with tokio's paused clock: readers on in-memory ports, a real Unix
//! socket, the fixture registry. What needs the real binary (signals,
//! systemd, real ptys) is in `tests/process.rs` and `tests/service.rs`.

mod common;

use std::time::Duration;

use cardlink::reader::card::TextEncoding;
use cardlink::reader::codec::Mode;
use cardlink::sim::{self, SimOptions};
use common::*;
use firmware_protocol::frame::{encode_vec, scan, Cmd, Scan};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Reads host frames from the pty until `n` frames arrived or 3 s passed,
/// leaving out the STATUS_REQUEST the daemon sends on connecting.
async fn host_frames(pty: &mut (impl AsyncRead + Unpin), n: usize) -> Vec<(u8, u8, Vec<u8>)> {
    all_host_frames(pty, n, false).await
}

async fn all_host_frames(
    pty: &mut (impl AsyncRead + Unpin),
    n: usize,
    keep_status_requests: bool,
) -> Vec<(u8, u8, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut chunk = [0u8; 256];
    while out.len() < n {
        match tokio::time::timeout_at(deadline, pty.read(&mut chunk)).await {
            Ok(Ok(k)) if k > 0 => buf.extend_from_slice(&chunk[..k]),
            _ => break,
        }
        while let Scan::Frame {
            frame, consumed, ..
        } = scan(&buf)
        {
            if keep_status_requests || frame.cmd != Cmd::StatusRequest as u8 {
                out.push((frame.seq, frame.cmd, frame.payload.to_vec()));
            }
            buf.drain(..consumed);
        }
    }
    out
}

fn record(i: u64, name: &str) -> Vec<u8> {
    sim_card(i, name).record().into_bytes()
}

#[tokio::test(start_paused = true)]
async fn frame_mode_holder_swipe_lists_members_with_ack_and_feedback() {
    let (d, mut ptys) = Daemon::start(&[("r1", "frame", "utf-8")], "").await;
    let mut c = d.client().await;
    let v = c.next().await;
    assert_eq!(
        v,
        json!({"class": "VERSION", "release": env!("CARGO_PKG_VERSION"), "proto": 1})
    );
    let r = c.expect("READER").await;
    assert_eq!(r["reader"], "r1");

    let pty = &mut ptys[0];
    // On connecting the daemon asks for the firmware information.
    let first = all_host_frames(pty, 1, true).await;
    assert_eq!(first[0].1, Cmd::StatusRequest as u8);
    pty.write_all(&encode_vec(41, Cmd::Status as u8, b"CL-R100 fw 1.4.2").unwrap())
        .await
        .unwrap();
    assert_eq!(host_frames(pty, 1).await[0], (41, Cmd::Ack as u8, vec![]));
    // Noise before the frame must not matter.
    pty.write_all(b"\x00\x02\x01zz").await.unwrap();
    pty.write_all(&encode_vec(42, Cmd::CardIc as u8, &record(HOLDER, "张伟")).unwrap())
        .await
        .unwrap();
    let card = c.expect("CARD").await;
    assert_eq!(card["reader"], "r1");
    assert_eq!(card["source"], "ic");
    assert_eq!(card["outcome"], "ok");
    assert_eq!(card["role"], "holder");
    assert_eq!(card["ssn"], ssn(HOLDER).masked().to_string());
    assert_eq!(card["name"], "张*");
    assert_eq!(
        card["card_no"],
        cardlink::mask::card_no(&common::card(HOLDER))
    );
    assert_eq!(card["balance_fen"], 123456);
    let members = card["members"].as_array().unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0]["ssn"], ssn(SPOUSE).masked().to_string());
    assert_eq!(members[0]["relation"], "spouse");
    // Nothing unmasked on the default client.
    assert!(!card.to_string().contains(ssn(HOLDER).expose()));

    let frames = host_frames(pty, 2).await;
    assert_eq!(frames[0], (42, Cmd::Ack as u8, vec![]));
    assert_eq!(frames[1].1, Cmd::Feedback as u8);
    assert_eq!(frames[1].2, vec![0], "FEEDBACK accepted");
    let st = c.request(json!({"cmd": "status"})).await;
    assert_eq!(st["result"]["readers"][0]["firmware"], "CL-R100 fw 1.4.2");
    assert_eq!(st["result"]["readers"][0]["noise_bytes"], 5);
    let log = d.stop().await;
    assert!(
        log.contains("card resolved"),
        "the log was captured:\n{log}"
    );
    assert!(!log.contains(ssn(HOLDER).expose()), "full SSN in the log");
}

#[tokio::test(start_paused = true)]
async fn ssse_text_mode_gbk_member_swipe_names_the_payer() {
    let (d, mut ptys) = Daemon::start(&[("t1", "ssse-text", "gbk")], "").await;
    let mut c = d.client().await;
    let mut line = encoding_rs::GBK
        .encode(&sim_card(SPOUSE, "李娜").record())
        .0
        .into_owned();
    line.extend_from_slice(b"\r\n");
    ptys[0].write_all(&line).await.unwrap();
    let card = c.expect("CARD").await;
    assert_eq!(card["outcome"], "ok");
    assert_eq!(card["role"], "member");
    assert_eq!(card["payer"]["ssn"], ssn(HOLDER).masked().to_string());
    assert_eq!(card["payer"]["name"], "张*");
    assert_eq!(card["relation"], "spouse");
    assert_eq!(card["balance_fen"], 123456);
}

#[tokio::test(start_paused = true)]
async fn magstripe_mode_with_ssn_and_pan_only() {
    let (d, mut ptys) = Daemon::start(&[("m1", "magstripe", "gbk")], "").await;
    let mut c = d.client().await;
    let tracks = sim_card(HOLDER2, "WU/YANG").tracks().unwrap();
    ptys[0]
        .write_all(format!("{tracks}\r\n").as_bytes())
        .await
        .unwrap();
    let card = c.expect("CARD").await;
    assert_eq!(
        (
            card["source"].as_str(),
            card["outcome"].as_str(),
            card["role"].as_str()
        ),
        (Some("magstripe"), Some("ok"), Some("holder"))
    );
    assert_eq!(card["ssn"], ssn(HOLDER2).masked().to_string());
    // Track 2 only: resolved through the PAN.
    ptys[0]
        .write_all(format!(";{}={}1201000?\r\n", pan(MEMBER2), track2_expiry()).as_bytes())
        .await
        .unwrap();
    let card = c.expect("CARD").await;
    assert_eq!(
        (card["outcome"].as_str(), card["role"].as_str()),
        (Some("ok"), Some("member"))
    );
    assert_eq!(card["ssn"], ssn(MEMBER2).masked().to_string());
    // A stripe whose SSN is not the card owner's: mismatch, never the wrong person.
    let mut forged = sim_card(HOLDER2, "X");
    forged.ssn = demo_ssn_str(SPOUSE);
    ptys[0]
        .write_all(format!("{}\r\n", forged.tracks().unwrap()).as_bytes())
        .await
        .unwrap();
    let card = c.expect("CARD").await;
    assert_eq!(card["outcome"], "mismatch");
    assert_eq!(card["role"], "none");
    assert!(card["members"].as_array().unwrap().is_empty());
}

/// YYMM of a fixture card's expiry (eight years from today).
fn track2_expiry() -> String {
    let e = sim_card(MEMBER2, "x").expires;
    format!("{}{}", &e[2..4], &e[4..6])
}

fn demo_ssn_str(i: u64) -> String {
    cardlink::registry::demo::demo_ssn(i)
}

#[tokio::test(start_paused = true)]
async fn unknown_lost_expired_and_invalid_cards() {
    let (d, mut ptys) = Daemon::start(&[("r1", "frame", "utf-8")], "").await;
    let mut c = d.client().await;
    let pty = &mut ptys[0];
    let mut unknown = sim_card(HOLDER, "张伟");
    unknown.card_no = "Z99999999".into();
    let cases = [
        (unknown.record().into_bytes(), "unknown"),
        (record(LOST, "刘强"), "lost"),
        (record(EXPIRED, "陈静"), "expired"),
        (record(FROZEN, "杨磊"), "frozen"),
    ];
    for (seq, (payload, outcome)) in cases.iter().enumerate() {
        pty.write_all(&encode_vec(seq as u8 + 1, Cmd::CardIc as u8, payload).unwrap())
            .await
            .unwrap();
        let card = c.expect("CARD").await;
        assert_eq!(card["outcome"], *outcome);
        assert!(card["payer"].is_null() && card["members"].as_array().unwrap().is_empty());
        let frames = host_frames(pty, 2).await;
        assert_eq!(frames[1].2, vec![1], "FEEDBACK rejected for {outcome}");
    }
    // A record with a wrong check digit: ERROR, FEEDBACK rejected, never a CARD.
    let good = sim_card(CHILD, "张小明").record();
    let s = demo_ssn_str(CHILD);
    let wrong = format!("{}{}", &s[..17], if s.ends_with('1') { '2' } else { '1' });
    let bad = good.replace(&s, &wrong);
    pty.write_all(&encode_vec(9, Cmd::CardIc as u8, bad.as_bytes()).unwrap())
        .await
        .unwrap();
    let err = c.expect("ERROR").await;
    assert_eq!(err["code"], "bad_card");
    assert!(
        err["message"].as_str().unwrap().contains("check character"),
        "{err}"
    );
    let frames = host_frames(pty, 2).await;
    assert_eq!(
        (frames[0].1, frames[1].2.clone()),
        (Cmd::Ack as u8, vec![1])
    );
    // The daemon keeps serving.
    pty.write_all(&encode_vec(10, Cmd::CardIc as u8, &record(CHILD, "张小明")).unwrap())
        .await
        .unwrap();
    assert_eq!(c.expect("CARD").await["outcome"], "ok");
}

#[tokio::test(start_paused = true)]
async fn manual_lookup_bind_rules_and_unbind_in_window_mode() {
    let (d, _ptys) = Daemon::start(&[], "role = \"window\"").await;
    let mut c = d.client().await;
    let r = c
        .request(json!({"cmd": "lookup", "number": card(SPOUSE)}))
        .await;
    assert_eq!(r["ok"], true);
    assert_eq!(r["result"]["source"], "manual");
    assert_eq!(r["result"]["role"], "member");
    let r = c
        .request(json!({"cmd": "lookup", "number": demo_ssn_str(HOLDER)}))
        .await;
    assert_eq!(r["result"]["role"], "holder");
    let r = c
        .request(json!({"cmd": "lookup", "number": "110105194912310021"}))
        .await;
    assert_eq!(
        (r["ok"].as_bool(), r["code"].as_str()),
        (Some(false), Some("bad_number"))
    );
    assert!(r["message"].as_str().unwrap().contains("expected 'X'"));

    let bind = |h: String, m: String, rel: &str| json!({"cmd": "bind", "holder": h, "member": m, "relation": rel, "operator": "clerk7"});
    let cases = [
        (bind(card(HOLDER), card(HOLDER), "spouse"), "same_person"),
        (
            bind(card(HOLDER), card(CHILD), "cousin"),
            "relation_not_allowed",
        ),
        (
            bind(demo_ssn_str(9999), card(CHILD), "child"),
            "holder_unknown",
        ),
        (
            bind(card(SPOUSE), card(CHILD), "child"),
            "holder_not_employee",
        ),
        (
            bind(card(HOLDER_SUSPENDED), card(CHILD), "child"),
            "holder_not_employee",
        ),
        (
            bind(demo_ssn_str(HOLDER_EXPIRED), card(CHILD), "child"),
            "holder_no_active_card",
        ),
        (
            bind(card(HOLDER), demo_ssn_str(9999), "parent"),
            "member_unknown",
        ),
        (
            bind(card(HOLDER), card(UNINSURED), "parent"),
            "member_not_insured",
        ),
        (
            bind(card(HOLDER), demo_ssn_str(LOST), "parent"),
            "member_no_active_card",
        ),
        (bind(card(HOLDER), card(SPOUSE), "spouse"), "already_linked"),
        (
            bind(card(HOLDER2), card(SPOUSE), "spouse"),
            "member_has_payer",
        ),
        (bind(card(HOLDER), card(LOST), "parent"), "card_not_usable"),
    ];
    for (req, code) in cases {
        let r = c.request(req.clone()).await;
        assert_eq!(
            (r["ok"].as_bool(), r["code"].as_str()),
            (Some(false), Some(code)),
            "{req} -> {r}"
        );
        assert!(
            !r.to_string().contains(&demo_ssn_str(HOLDER)),
            "full SSN leaked: {r}"
        );
    }
    let r = c.request(bind(card(HOLDER), card(CHILD), "child")).await;
    assert_eq!(r["ok"], true, "{r}");
    let r = c
        .request(json!({"cmd": "lookup", "number": card(CHILD)}))
        .await;
    assert_eq!(
        (
            r["result"]["role"].as_str(),
            r["result"]["relation"].as_str()
        ),
        (Some("member"), Some("child"))
    );
    let r = c
        .request(json!({"cmd": "unbind", "holder": card(HOLDER), "member": card(CHILD)}))
        .await;
    assert_eq!(r["ok"], true);
    let r = c
        .request(json!({"cmd": "unbind", "holder": card(HOLDER), "member": card(CHILD)}))
        .await;
    assert_eq!(r["code"], "not_linked");

    let r = c
        .request(json!({"cmd": "contributions", "number": card(HOLDER), "months": 2}))
        .await;
    assert_eq!(r["result"]["records"].as_array().unwrap().len(), 2);
    assert_eq!(r["result"]["records"][0]["month"], "2026-06");
    let r = c.request(json!({"cmd": "status"})).await;
    assert_eq!(r["result"]["role"], "window");
    assert!(r["result"]["uptime_s"].is_u64());
}

#[tokio::test(start_paused = true)]
async fn kiosk_mode_binds_only_swiped_cards() {
    let (d, mut ptys) = Daemon::start(&[("k1", "frame", "utf-8")], "role = \"kiosk\"").await;
    let mut c = d.client().await;
    let r = c
        .request(json!({"cmd": "lookup", "number": card(HOLDER)}))
        .await;
    assert_eq!(r["code"], "manual_entry_not_allowed");
    let r = c.request(json!({"cmd": "bind", "holder": card(HOLDER), "member": card(CHILD), "relation": "child", "consent": cardlink::registry::consent::CURRENT.version})).await;
    assert_eq!(r["code"], "kiosk_requires_swipe");
    let pty = &mut ptys[0];
    pty.write_all(&encode_vec(1, Cmd::CardIc as u8, &record(HOLDER, "张伟")).unwrap())
        .await
        .unwrap();
    let h = c.expect("CARD").await["swipe"].as_u64().unwrap();
    pty.write_all(&encode_vec(2, Cmd::CardIc as u8, &record(CHILD, "张小明")).unwrap())
        .await
        .unwrap();
    let m = c.expect("CARD").await["swipe"].as_u64().unwrap();
    let r = c
        .request(json!({"cmd": "bind", "holder_swipe": h, "member_swipe": m, "relation": "child", "consent": cardlink::registry::consent::CURRENT.version}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let r = c
        .request(
            json!({"cmd": "bind", "holder_swipe": h, "member_swipe": 999, "relation": "child", "consent": cardlink::registry::consent::CURRENT.version}),
        )
        .await;
    assert_eq!(r["code"], "unknown_swipe");
    // The link was recorded with the kiosk channel.
    let reg = cardlink::registry::Registry::open(&d.db, &Default::default()).unwrap();
    let channel: String = reg
        .connection()
        .query_row(
            "SELECT channel FROM family_links WHERE member_ssn = ?1 AND status = 'active'",
            [demo_ssn_str(CHILD)],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(channel, "kiosk");
}

/// The outcome text of the last audit row of `action` about `member`.
fn last_outcome(d: &Daemon, action: &str, member: u64) -> String {
    let reg = cardlink::registry::Registry::open(&d.db, &Default::default()).unwrap();
    reg.connection()
        .query_row(
            "SELECT outcome FROM audit WHERE action = ?1 AND ssn = ?2 ORDER BY id DESC LIMIT 1",
            [action.to_string(), demo_ssn_str(member)],
            |r| r.get(0),
        )
        .unwrap()
}

/// Issue 23: a self-service (kiosk) bind needs the version of a consent
/// statement the holder confirmed; it is stored in the bind's audit row.
#[tokio::test(start_paused = true)]
async fn a_kiosk_bind_needs_a_known_consent_version_and_records_it() {
    let (d, mut ptys) = Daemon::start(&[("k1", "frame", "utf-8")], "role = \"kiosk\"").await;
    let mut c = d.client().await;
    let pty = &mut ptys[0];
    pty.write_all(&encode_vec(1, Cmd::CardIc as u8, &record(HOLDER, "张伟")).unwrap())
        .await
        .unwrap();
    let h = c.expect("CARD").await["swipe"].as_u64().unwrap();
    pty.write_all(&encode_vec(2, Cmd::CardIc as u8, &record(CHILD, "张小明")).unwrap())
        .await
        .unwrap();
    let m = c.expect("CARD").await["swipe"].as_u64().unwrap();
    let bind = json!({"cmd": "bind", "holder_swipe": h, "member_swipe": m, "relation": "child"});
    let r = c.request(bind.clone()).await;
    assert_eq!(r["code"], "consent_required", "{r}");
    // An operator id from a kiosk client does not stand in for consent.
    let mut with_op = bind.clone();
    with_op["operator"] = json!("clerk7");
    assert_eq!(c.request(with_op).await["code"], "consent_required");
    let mut unknown = bind.clone();
    unknown["consent"] = json!("1999-01-01");
    let r = c.request(unknown).await;
    assert_eq!(r["code"], "consent_required", "{r}");
    assert!(r["message"].as_str().unwrap().contains("1999-01-01"), "{r}");
    let mut ok = bind.clone();
    ok["consent"] = json!(cardlink::registry::consent::CURRENT.version);
    let r = c.request(ok).await;
    assert_eq!(r["ok"], true, "{r}");
    let outcome = last_outcome(&d, "bind", CHILD);
    assert!(
        outcome.contains(&format!(
            "consent={} ",
            cardlink::registry::consent::CURRENT.version
        )),
        "{outcome}"
    );
}

/// A window bind with an operator records the version given, or the
/// current statement's when none is given.
#[tokio::test(start_paused = true)]
async fn a_window_bind_records_the_current_consent_version_by_default() {
    let (d, _ptys) = Daemon::start(&[("r1", "frame", "utf-8")], "").await;
    let mut c = d.client().await;
    let r = c
        .request(json!({"cmd": "bind", "holder": card(HOLDER), "member": card(CHILD), "relation": "child", "operator": "clerk7"}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let v = cardlink::registry::consent::CURRENT.version;
    assert!(last_outcome(&d, "bind", CHILD).contains(&format!("consent={v} operator=clerk7")));
    // Without an operator, the window's client must say what it showed.
    let r = c
        .request(json!({"cmd": "bind", "holder": card(HOLDER), "member": card(PARENT), "relation": "parent"}))
        .await;
    assert_eq!(r["code"], "consent_required", "{r}");
    let r = c
        .request(json!({"cmd": "bind", "holder": card(HOLDER), "member": card(PARENT), "relation": "parent", "operator": "clerk7", "consent": "2031-01-01"}))
        .await;
    assert_eq!(r["code"], "consent_required", "{r}");
}

#[tokio::test(start_paused = true)]
async fn privileged_uid_gets_full_ssns() {
    let (mut d, mut ptys) = Daemon::start(&[("r1", "frame", "utf-8")], "").await;
    // Reconfigure: privileged list is in [socket]; reload with it.
    drop(ptys.pop());
    let text = privileged_config(&d.config);
    d.reload(text).await;
    let mut c = d.client().await;
    let r = c
        .request(json!({"cmd": "lookup", "number": card(HOLDER)}))
        .await;
    assert_eq!(r["result"]["ssn"], demo_ssn_str(HOLDER));
    assert_eq!(r["result"]["name"], "张伟");
    assert_eq!(r["result"]["members"][0]["ssn"], demo_ssn_str(SPOUSE));
}

#[tokio::test(start_paused = true)]
async fn unplug_and_replug_without_restart() {
    let ports = cardlink::sim::VirtualPorts::new();
    let dir = tempfile::tempdir().unwrap();
    let db = fixture_db(dir.path());
    let mut ptys = vec![ports.plug("r1")];
    let d = Daemon::start_on(dir, db, &[("r1", "frame", "utf-8")], "", ports.clone()).await;
    let mut c = d.client().await;
    let r = c.expect("READER").await;
    assert_eq!(r["state"], "connected");
    drop(ptys.pop()); // unplug: the pty goes away
    let r = c.expect("READER").await;
    assert_eq!(
        (r["reader"].as_str(), r["state"].as_str()),
        (Some("r1"), Some("disconnected"))
    );
    let mut pty = ports.plug("r1"); // replug: a new port under the same name
    let r = c.expect("READER").await;
    assert_eq!(r["state"], "connected");
    assert_eq!(r["path"], d.path("r1").display().to_string());
    pty.write_all(&encode_vec(1, Cmd::CardIc as u8, &record(HOLDER, "张伟")).unwrap())
        .await
        .unwrap();
    assert_eq!(c.expect("CARD").await["outcome"], "ok");
    let r = c.request(json!({"cmd": "status"})).await;
    assert_eq!(r["result"]["readers"][0]["state"], "connected");
}

#[tokio::test(start_paused = true)]
async fn noisy_line_with_resends_delivers_every_swipe_exactly_once() {
    let (mut d, mut ptys) = Daemon::start(&[("r1", "frame", "gbk")], "").await;
    let text = privileged_config(&d.config);
    d.reload(text).await;
    let mut c = d.client().await;
    let people = [
        (HOLDER, "张伟"),
        (SPOUSE, "李娜"),
        (CHILD, "张小明"),
        (PARENT, "张建华"),
        (HOLDER2, "吴洋"),
        (MEMBER2, "周勇"),
    ];
    let cards: Vec<_> = people.iter().map(|(i, n)| sim_card(*i, n)).collect();
    let swipes = 60u64;
    let opts = SimOptions {
        mode: Mode::Frame,
        encoding: TextEncoding::Gbk,
        noise: 0.3,
        drop_acks: 0.3,
        interval: Duration::from_millis(20),
        count: Some(swipes),
        seed: 42,
        sam_fault: None,
    };
    let pty = ptys.pop().unwrap();
    let sim = tokio::spawn(async move { sim::run(pty, &cards, &opts, |_, _| {}).await.unwrap() });
    let mut got = Vec::new();
    while got.len() < swipes as usize {
        let v = c.next().await;
        if v["class"] == "CARD" {
            got.push(v["ssn"].as_str().unwrap().to_string());
        }
    }
    let report = sim.await.unwrap();
    // (A swipe may count as unacked when all its ACKs were dropped on
    // purpose; what matters is that the host got it exactly once.)
    assert_eq!(report.swipes, swipes, "{report:?}");
    assert!(
        report.frames_sent > swipes,
        "the test must exercise resends: {report:?}"
    );
    // Exactly once, in order, always the right person.
    let want: Vec<String> = (0..swipes as usize)
        .map(|k| demo_ssn_str(people[k % people.len()].0))
        .collect();
    assert_eq!(got, want);
    // And nothing more arrives.
    let extra = tokio::time::timeout(Duration::from_millis(700), c.expect("CARD")).await;
    assert!(extra.is_err(), "a duplicate was delivered: {extra:?}");
}

#[tokio::test(start_paused = true)]
async fn garbage_and_stuck_clients_do_not_disturb_others() {
    let (d, mut ptys) = Daemon::start(&[("r1", "frame", "utf-8")], "").await;
    let mut good = d.client().await;
    let mut garbage = d.client().await;
    // A stuck client: connects, never reads.
    let stuck = tokio::net::UnixStream::connect(&d.socket).await.unwrap();

    garbage.send_raw(b"this is not json\n").await;
    let e = garbage.expect("ERROR").await;
    assert_eq!(e["code"], "bad_json");
    garbage.send_raw(b"{\"id\":5,\"cmd\":\"fly\"}\n").await;
    let r = garbage.expect("REPLY").await;
    assert_eq!(
        (r["id"].as_u64(), r["code"].as_str()),
        (Some(5), Some("unknown_command"))
    );
    garbage.send_raw(b"\xff\xfe\x00\n").await;
    assert_eq!(garbage.expect("ERROR").await["code"], "bad_json");
    // Still usable.
    let r = garbage.request(json!({"cmd": "status"})).await;
    assert_eq!(r["ok"], true);
    // An oversized line closes that connection only. (The daemon may close
    // it while the line is still being written, so write errors are fine.)
    let _ = garbage.w.write_all(&vec![b'x'; 70 * 1024]).await;
    let _ = garbage.w.write_all(b"\n").await;
    assert_eq!(garbage.expect("ERROR").await["code"], "line_too_long");
    let closed = tokio::time::timeout(Duration::from_secs(5), garbage.lines.next_line())
        .await
        .unwrap();
    assert!(matches!(closed, Ok(None) | Err(_)), "{closed:?}");

    // Many swipes: the stuck client falls behind, the good one gets them all.
    let cards = vec![sim_card(HOLDER, "张伟"), sim_card(SPOUSE, "李娜")];
    let n = 1500u64;
    let opts = SimOptions {
        mode: Mode::Frame,
        encoding: TextEncoding::Utf8,
        noise: 0.0,
        drop_acks: 0.0,
        // 40 ms (virtual) apart: SEQ wraps every 256 swipes, and a (SEQ,
        // payload) pair seen again within 10 s is a resend by definition.
        interval: Duration::from_millis(40),
        count: Some(n),
        seed: 1,
        sam_fault: None,
    };
    let pty = ptys.pop().unwrap();
    let sim = tokio::spawn(async move { sim::run(pty, &cards, &opts, |_, _| {}).await.unwrap() });
    let mut swipes = Vec::new();
    while swipes.len() < n as usize {
        let v = good.next().await;
        if v["class"] == "CARD" {
            swipes.push(v["swipe"].as_u64().unwrap());
        }
    }
    assert_eq!(sim.await.unwrap().acked, n);
    let first = swipes[0];
    assert_eq!(swipes, (first..first + n).collect::<Vec<_>>());
    // The stuck client was dropped (its queue lagged or its writes stalled
    // for 2 s): its stream ends, and only the good client is left.
    let mut stuck = stuck;
    let mut got = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(60), stuck.read_to_end(&mut got)).await;
    assert!(
        matches!(ended, Ok(Ok(_))),
        "the daemon never dropped the stuck client: {ended:?}"
    );
    assert!(got.len() > 1000, "it was sent events before being dropped");
    // The daemon is fine.
    let r = good.request(json!({"cmd": "status"})).await;
    assert_eq!(r["ok"], true);
    assert_eq!(r["result"]["clients"], 1, "{r}");
}

#[test]
fn check_config_prints_the_effective_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    let db = format!("database = {:?}\n", dir.path().join("reg.db"));
    std::fs::write(
        &cfg,
        format!("{db}[[reader]]\nname = \"w1\"\npath = \"/dev/ttyUSB0\"\n"),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cardlinkd"))
        .args(["--check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("baud = 115200")
            && text.contains("mode = \"frame\"")
            && text.contains("relations"),
        "{text}"
    );
    std::fs::write(
        &cfg,
        format!("{db}[[reader]]\nname = \"w1\"\npath = \"/dev/ttyUSB0\"\nmode = \"morse\"\n"),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cardlinkd"))
        .args(["--check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("morse"));
}

/// Issue 22.9: a configuration error printed its TOML error twice
/// (after `Error:` and again under `Caused by:`), and cardlinkctl its
/// socket error twice.
#[test]
fn errors_are_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "database = \"/tmp/x.db\"\n[[reader]\nname = 1\n").unwrap();
    for args in [&["--check-config"][..], &[]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cardlinkd"))
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.matches("TOML parse error").count(), 1, "{err}");
        assert!(err.starts_with("cardlinkd: "), "{err}");
        assert!(!err.contains("Caused by"), "{err}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cardlinkctl"))
        .args(["status", "--socket"])
        .arg(dir.path().join("none.sock"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is cardlinkd running?"), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

/// The typed library client (what cardlinkctl and the displays use):
/// a kiosk bind by two swipes, refusals as typed codes, events as a
/// stream, and a clean error once the daemon is gone.
#[tokio::test(start_paused = true)]
async fn typed_client_kiosk_flow() {
    use cardlink::client::ClientError;
    use cardlink::protocol::{ErrorCode, FamilyRole, Message, Parties, WireOutcome};
    let (d, mut ptys) = Daemon::start(&[("k1", "frame", "utf-8")], "role = \"kiosk\"").await;
    let mut c = d.typed().await;
    assert_eq!(c.version().proto, 1);
    let err = c.lookup(&card(HOLDER)).await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Refused {
                code: ErrorCode::ManualEntryNotAllowed,
                ..
            }
        ),
        "{err}"
    );
    for (seq, i, name) in [(1, HOLDER, "张伟"), (2, CHILD, "张小明")] {
        let f = encode_vec(seq, Cmd::CardIc as u8, &record(i, name)).unwrap();
        ptys[0].write_all(&f).await.unwrap();
    }
    let mut cards = Vec::new();
    while cards.len() < 2 {
        match c.next_event().await.unwrap() {
            Message::Card(card) => cards.push(*card),
            _ => continue,
        }
    }
    assert_eq!(cards[0].role, FamilyRole::Holder);
    assert_eq!(cards[1].outcome, WireOutcome::Ok);
    let parties = Parties {
        holder_swipe: Some(cards[0].swipe),
        member_swipe: Some(cards[1].swipe),
        ..Parties::default()
    };
    let bound = c
        .bind(
            parties.clone(),
            "child",
            None,
            Some(cardlink::registry::consent::CURRENT.version),
        )
        .await
        .unwrap();
    assert_eq!(bound.relation, "child");
    let again = c
        .bind(
            parties,
            "child",
            None,
            Some(cardlink::registry::consent::CURRENT.version),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            again,
            ClientError::Refused {
                code: ErrorCode::AlreadyLinked,
                ..
            }
        ),
        "{again}"
    );
    let records = c
        .contributions(None, Some(cards[0].swipe), Some(2))
        .await
        .unwrap();
    assert_eq!(records.records.len(), 2);
    let status = c.status().await.unwrap();
    assert_eq!(
        (status.role.as_str(), status.readers[0].cards),
        ("kiosk", 2)
    );
    d.stop().await;
    assert!(
        c.next_event().await.is_none(),
        "the stream ends with the daemon"
    );
    assert!(matches!(
        c.status().await,
        Err(ClientError::Closed | ClientError::Io(_))
    ));
}
