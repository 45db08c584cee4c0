//! Identity cards on serial SAM modules (GA/T 467, `mode = "idcard"`):
//! the real cardlinkd against the simulated module through a pty, one CARD
//! per placement of each document, none from a corrupted read, a SAM fault
//! shown; the `[policy] id_card` rule at a kiosk and at a window.

mod common;

use std::time::Duration;

use cardlink::reader::card::TextEncoding;
use cardlink::reader::codec::Mode;
use cardlink::sim::{SimCard, SimOptions};
use common::*;
use serde_json::{json, Value};

/// A 港澳台居民居住证 number (810000…, GB 11643 check) and a 2023
/// 外国人永久居留身份证 number (first digit 9), both valid; the 15
/// characters of a 2017 permanent-residence card.
const PERMIT_J: &str = "810000199001010027";
const PERMANENT_2023: &str = "911840198001010013";
const PERMANENT_2017: &str = "USA110080101001";

fn id_card(ssn: &str, name: &str) -> SimCard {
    SimCard::identity(ssn, name)
}

fn opts(interval_ms: u64, count: u64, noise: f64, sam_fault: Option<u8>) -> SimOptions {
    SimOptions {
        mode: Mode::Idcard,
        encoding: TextEncoding::Gbk,
        noise,
        drop_acks: 0.0,
        interval: Duration::from_millis(interval_ms),
        count: Some(count),
        seed: 20,
        sam_fault,
    }
}

/// Events until the `n`th REMOVED, in order.
async fn until_removed(c: &mut Client, n: usize) -> Vec<Value> {
    let mut got = Vec::new();
    let mut removed = 0;
    while removed < n {
        let v = c.next().await;
        if v["class"] == "REMOVED" {
            removed += 1;
        }
        got.push(v);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cardlinkd_reads_each_document_once_per_placement_through_a_pty() {
    let (p, mut ptys) = Process::start(&[("id1", "idcard", "gbk")], "");
    let mut c = p.client().await;
    c.expect("VERSION").await;
    let mut pty = ptys.remove(0);
    let cards = vec![
        sim_card(HOLDER, "张伟"),
        id_card(PERMIT_J, "陈大文"),
        id_card(PERMANENT_2023, "史密斯"),
        id_card(PERMANENT_2017, "史密斯"),
    ];
    // Every read reply is first sent corrupted (a bad checksum, then one
    // cut short, in turn); the SAM fails its self-test for the first 3.5 s
    // (the daemon's polls slow down meanwhile: 0.6, 1.2, 2.4 s apart).
    let o = opts(3500, cards.len() as u64, 1.0, Some(0x60));
    let sim = tokio::spawn(async move {
        let r = cardlink::sim::run(&mut pty, &cards, &o, |_, _| {}).await;
        (r, pty)
    });
    let events = until_removed(&mut c, 4).await;
    let (report, _pty) = sim.await.unwrap();
    let report = report.unwrap();
    assert_eq!(report.swipes, 4, "{report:?}");

    // The SAM fault: state `error` with its meaning, then connected again.
    let states: Vec<(&str, Option<&str>)> = events
        .iter()
        .filter(|v| v["class"] == "READER")
        .map(|v| (v["state"].as_str().unwrap(), v["error"].as_str()))
        .collect();
    let fault = states
        .iter()
        .position(|(s, e)| {
            *s == "error"
                && e.is_some_and(|e| {
                    e.contains("SAM 60") && e.contains("SAM 自检失败") && e.contains("self-test")
                })
        })
        .unwrap_or_else(|| panic!("no SAM fault shown: {states:?}"));
    assert!(
        states[fault..].iter().any(|(s, _)| *s == "connected"),
        "{states:?}"
    );

    // Exactly one CARD per placement, in order, each before its REMOVED;
    // the 2017 card gets its own error instead; corrupted replies never
    // show (no CARD twice, no read error).
    let seq: Vec<String> = events
        .iter()
        .filter_map(|v| match v["class"].as_str()? {
            "CARD" => Some(format!("CARD {}", v["document"].as_str().unwrap_or("-"))),
            "REMOVED" => Some("REMOVED".into()),
            "ERROR" => Some(format!("ERROR {}", v["code"].as_str().unwrap_or("-"))),
            _ => None,
        })
        .collect();
    assert_eq!(
        seq,
        [
            "CARD resident_id",
            "REMOVED",
            "CARD hmt_residence_permit",
            "REMOVED",
            "CARD foreign_permanent",
            "REMOVED",
            "ERROR bad_card",
            "REMOVED"
        ],
        "{events:#?}"
    );
    let cards: Vec<&Value> = events.iter().filter(|v| v["class"] == "CARD").collect();
    for card in &cards {
        assert_eq!(card["source"], "id_card", "{card}");
        assert_eq!(card["reader"], "id1");
    }
    // The resident card resolves by its number: the registry's person, the
    // social-security card's status, masked like any read.
    let holder = demo_ssn_full(HOLDER);
    assert_eq!(cards[0]["outcome"], "ok", "{}", cards[0]);
    assert_eq!(cards[0]["card_status"], "active");
    assert_eq!(
        cards[0]["ssn"],
        format!("{}********{}", &holder[..6], &holder[14..])
    );
    assert_ne!(cards[0]["name"], "张伟");
    assert_eq!(cards[1]["ssn"], "810000********0027");
    assert_eq!(cards[2]["ssn"], "911840********0013");
    assert_eq!(cards[1]["outcome"], "unknown");
    let err = events.iter().find(|v| v["class"] == "ERROR").unwrap();
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.contains("2017") && msg.contains("人社部令第16号"),
        "{msg}"
    );
    assert!(!msg.contains(PERMANENT_2017), "{msg}");

    // status: the mode, the SAM's id as firmware, the three cards.
    let r = c.request(json!({"cmd": "status"})).await;
    let reader = &r["result"]["readers"][0];
    assert_eq!(reader["mode"], "idcard", "{r}");
    assert_eq!(reader["state"], "connected", "{r}");
    assert_eq!(reader["cards"], 3, "{r}");
    assert!(
        reader["firmware"]
            .as_str()
            .unwrap()
            .starts_with("SAM 0005-0001-"),
        "{r}"
    );
    let (_, log) = p.stop();
    // Neither the photo nor a full number reaches the log.
    assert!(!log.contains(&holder), "full SSN in the log");
    assert!(!log.contains(PERMIT_J), "full number in the log");
}

/// Starts an in-process daemon with a frame reader (social-security cards)
/// and an idcard reader, swipes the holder's social-security card, places
/// the child's identity card, and asks to bind them by swipe ids.
async fn bind_child_by_id_card(extra: &str) -> Value {
    use firmware_protocol::frame::encode_vec;
    use tokio::io::AsyncWriteExt;
    let (d, mut ports) =
        Daemon::start(&[("k1", "frame", "utf-8"), ("id1", "idcard", "gbk")], extra).await;
    let mut c = d.client().await;
    c.expect("VERSION").await;
    let mut module = ports.pop().unwrap();
    let mut frame_port = ports.pop().unwrap();
    let cards = vec![sim_card(CHILD, "张小明")];
    let o = opts(1000, 1, 0.0, None);
    let sim =
        tokio::spawn(async move { cardlink::sim::run(&mut module, &cards, &o, |_, _| {}).await });
    let member = loop {
        let v = c.expect("CARD").await;
        if v["reader"] == "id1" {
            assert_eq!(v["source"], "id_card");
            assert_eq!(v["outcome"], "ok", "{v}");
            break v["swipe"].as_u64().unwrap();
        }
    };
    frame_port
        .write_all(&encode_vec(1, 0x10, sim_card(HOLDER, "张伟").record().as_bytes()).unwrap())
        .await
        .unwrap();
    let holder = c.expect("CARD").await["swipe"].as_u64().unwrap();
    let r = c
        .request(json!({"cmd": "bind", "holder_swipe": holder, "member_swipe": member, "relation": "child", "operator": "clerk07", "consent": cardlink::registry::consent::CURRENT.version}))
        .await;
    // A holder identified by identity card is judged alike.
    let swapped = c
        .request(json!({"cmd": "contributions", "swipe": member, "months": 1}))
        .await;
    assert_eq!(
        swapped["ok"], true,
        "an identity card may always show payment records: {swapped}"
    );
    sim.abort();
    d.stop().await;
    r
}

#[tokio::test(start_paused = true)]
async fn policy_id_card_decides_where_an_identity_card_may_bind() {
    // Default (`window`): a kiosk bind needs the social-security cards.
    let r = bind_child_by_id_card("role = \"kiosk\"").await;
    assert_eq!(r["code"], "id_card_not_allowed", "{r}");
    assert!(r["message"].as_str().unwrap().contains("kiosk"), "{r}");
    // … a window may bind a member identified by identity card.
    let r = bind_child_by_id_card("role = \"window\"").await;
    assert_eq!(r["ok"], true, "{r}");
    // `identify`: nowhere.
    let r = bind_child_by_id_card("role = \"window\"\n[policy]\nid_card = \"identify\"").await;
    assert_eq!(r["code"], "id_card_not_allowed", "{r}");
    // `anywhere`: a kiosk too.
    let r = bind_child_by_id_card("role = \"kiosk\"\n[policy]\nid_card = \"anywhere\"").await;
    assert_eq!(r["ok"], true, "{r}");
}

/// The 2023 permanent-residence number is an identity number everywhere
/// cardlink takes one; the 2017 card's 15 characters get their own error.
#[test]
fn permanent_residence_numbers_in_check_ssn_and_import() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cardlinkctl"))
        .args([
            "check-ssn",
            PERMANENT_2023,
            PERMANENT_2017,
            "911840198001010014",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "911840********0013: valid (2023 外国人永久居留身份证 / foreign permanent resident)"
    );
    assert!(
        lines[1].contains("invalid")
            && lines[1].contains("2017")
            && !lines[1].contains(PERMANENT_2017),
        "{text}"
    );
    assert!(lines[2].contains("check character"), "{text}");

    // Import: a person with the new number is a person like any other.
    let dir = tempfile::tempdir().unwrap();
    let db = fixture_db(dir.path());
    let persons = dir.path().join("persons.csv");
    std::fs::write(
        &persons,
        format!(
            "ssn,name,sex,birth_date,insurance_type,insurance_status,region\n{PERMANENT_2023},SMITH JOHN,M,1980-01-01,employee,active,330100\n"
        ),
    )
    .unwrap();
    let (code, err) = ctl_import(&db, &[persons]);
    assert_eq!(code, Some(0), "{err}");
}

/// A module that does not answer is state `error` ("does not answer"), not
/// a stalled daemon; unplugged and plugged in again, it is read as before.
#[tokio::test(start_paused = true)]
async fn a_silent_module_then_a_replug() {
    let dir = tempfile::tempdir().unwrap();
    let db = fixture_db(dir.path());
    let ports = cardlink::sim::VirtualPorts::new();
    let silent = ports.plug("id1");
    let d = Daemon::start_on(dir, db, &[("id1", "idcard", "gbk")], "", ports.clone()).await;
    let mut c = d.client().await;
    c.expect("VERSION").await;
    let state = |v: &Value| {
        (
            v["state"].as_str().unwrap_or("").to_string(),
            v["error"].as_str().unwrap_or("").to_string(),
        )
    };
    loop {
        let v = c.expect("READER").await;
        let (s, e) = state(&v);
        if s == "error" {
            assert!(
                e.contains("does not answer") && e.contains("模块无应答"),
                "{v}"
            );
            break;
        }
    }
    // The daemon still answers its clients meanwhile.
    let r = c.request(json!({"cmd": "status"})).await;
    assert_eq!(r["result"]["readers"][0]["state"], "error", "{r}");
    drop(silent);
    loop {
        let (s, e) = state(&c.expect("READER").await);
        if s == "disconnected" {
            assert_eq!(e, "end of file");
            break;
        }
    }
    let mut module = ports.plug("id1");
    loop {
        if state(&c.expect("READER").await).0 == "connected" {
            break;
        }
    }
    let cards = vec![sim_card(SPOUSE, "李娜")];
    let o = opts(1000, 1, 0.0, None);
    let sim =
        tokio::spawn(async move { cardlink::sim::run(&mut module, &cards, &o, |_, _| {}).await });
    let card = c.expect("CARD").await;
    assert_eq!(
        (card["source"].as_str(), card["outcome"].as_str()),
        (Some("id_card"), Some("ok")),
        "{card}"
    );
    c.expect("REMOVED").await;
    sim.await.unwrap().unwrap();
    d.stop().await;
}

/// A scripted module on `port`: answers each command with what `answer`
/// gives for it (the raw bytes; empty: no answer).
async fn scripted_module(
    mut port: cardlink::sim::VirtualPort,
    mut answer: impl FnMut(firmware_protocol::idcard::Command) -> Vec<u8> + Send + 'static,
) {
    use firmware_protocol::idcard::Command;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut inbox = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        let Ok(n) = port.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            return;
        }
        inbox.extend_from_slice(&buf[..n]);
        while inbox.len() >= 10 {
            let cmd = Command::from_code(inbox[7], inbox[8]).expect("a known command");
            inbox.drain(..10);
            let reply = answer(cmd);
            if !reply.is_empty() && port.write_all(&reply).await.is_err() {
                return;
            }
        }
    }
}

/// What a module says about a card it cannot read reaches the display with
/// its meaning; an unknown status is asked again, never guessed from; a
/// read whose replies stay corrupt is given up with an error, no CARD.
#[tokio::test(start_paused = true)]
async fn card_errors_unknown_statuses_and_reads_given_up() {
    use firmware_protocol::idcard::{encode_reply_vec, Command};
    let (d, mut ports) = Daemon::start(&[("id1", "idcard", "gbk")], "").await;
    let mut c = d.client().await;
    c.expect("VERSION").await;
    let reply = |sw3: u8, data: &[u8]| encode_reply_vec([0, 0, sw3], data).unwrap();
    let mut finds = 0;
    let mut reads = 0;
    let mut text = [0u8; 256];
    text.copy_from_slice(&sim_card(SPOUSE, "李娜").id_text());
    let module = tokio::spawn(scripted_module(
        ports.pop().unwrap(),
        move |cmd| match cmd {
            Command::SamStatus => reply(0x90, &[]),
            Command::SamId => reply(0x90, &[0; 16]),
            Command::Find => {
                finds += 1;
                match finds {
                    // An unknown status first, then a card (twice), then none.
                    1 => reply(0x55, &[]),
                    2 | 4 => reply(0x9F, &[0; 4]),
                    _ => reply(0x80, &[]),
                }
            }
            Command::Select => reply(0x90, &[0; 8]),
            Command::Read => {
                reads += 1;
                let mut data = vec![0x01, 0x00, 0x04, 0x00];
                data.extend_from_slice(&text);
                data.extend(std::iter::repeat_n(0x77, 1024));
                match reads {
                    // The first card: the module cannot read it.
                    1 => reply(0x41, &[]),
                    // The second: three corrupt replies.
                    _ => {
                        let mut r = reply(0x90, &data);
                        let last = r.len() - 1;
                        r[last] ^= 1;
                        r
                    }
                }
            }
        },
    ));
    let e = c.expect("ERROR").await;
    assert_eq!(e["code"], "id_card_error", "{e}");
    assert_eq!(e["reader_code"], 0x41);
    assert_eq!(e["zh"], "读证/卡操作失败");
    assert_eq!(e["en"], "reading the card failed");
    // The second placement: given up after three sendings, no CARD.
    let mut seen = Vec::new();
    loop {
        let v = c.next().await;
        assert_ne!(v["class"], "CARD", "{v}");
        if v["class"] == "ERROR" {
            assert_eq!(v["code"], "id_card_error", "{v}");
            assert!(v["message"].as_str().unwrap().contains("41"), "{v}");
            break;
        }
        seen.push(v);
    }
    let r = c.request(json!({"cmd": "status"})).await;
    assert_eq!(r["result"]["readers"][0]["cards"], 0, "{r}");
    assert_eq!(r["result"]["readers"][0]["state"], "connected", "{r}");
    module.abort();
    d.stop().await;
}
