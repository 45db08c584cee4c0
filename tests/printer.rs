//! Receipts on an ESC/POS printer, as a box meets them: cardlinkd (the
//! real binary) prints to a pty whose other end this test plays as the
//! printer — answering `DLE EOT` and keeping every other byte — while
//! binds and unbinds go through the socket.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cardlink::printer::escpos::Printed;
use cardlink::printer::{Encoding, PrinterState, StatusBytes};
use cardlink::registry::Relation;
use cardlink::sim::PtyMaster;
use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The printer's side of the pty: answers `DLE EOT n` with the state
/// set in `state`, keeps every byte it receives in `bytes`.
struct Printer {
    state: Arc<Mutex<PrinterState>>,
    bytes: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Printer {
    fn start(pty: PtyMaster, state: PrinterState) -> Printer {
        let st = Arc::new(Mutex::new(state));
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let (s2, b2) = (st.clone(), bytes.clone());
        let task = tokio::spawn(async move {
            let mut pty = pty;
            let mut buf = [0u8; 4096];
            loop {
                let n = match pty.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let mut answers = Vec::new();
                {
                    let mut all = b2.lock().unwrap();
                    let from = all.len();
                    all.extend_from_slice(&buf[..n]);
                    // A query may come split over two reads: look back two bytes.
                    let start = from.saturating_sub(2);
                    for i in start..all.len().saturating_sub(2) {
                        if all[i] == 0x10 && all[i + 1] == 0x04 && i + 2 >= from {
                            let s = StatusBytes::for_state(*s2.lock().unwrap());
                            if let Some(r) = s.reply(all[i + 2]) {
                                answers.push(r);
                            }
                        }
                    }
                }
                if !answers.is_empty() && pty.write_all(&answers).await.is_err() {
                    return;
                }
            }
        });
        Printer {
            state: st,
            bytes,
            task,
        }
    }

    fn receipts(&self) -> Vec<Printed> {
        Printed::receipts(&self.bytes.lock().unwrap(), Encoding::Gbk)
    }
}

fn printer_toml(pty: &PtyMaster) -> String {
    format!(
        "[printer]\npath = {:?}\nstation = \"窗口3\"\nstatus_interval_s = 1\n",
        pty.slave_path()
    )
}

async fn status(c: &mut Client) -> Value {
    c.request(json!({"cmd": "status"})).await["result"].clone()
}

/// The audit row's hash, from the registry file.
fn audit_hash(db: &std::path::Path, seq: i64) -> String {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row("SELECT hash FROM audit WHERE id = ?1", [seq], |r| r.get(0))
        .unwrap()
}

async fn masked_name(c: &mut Client, i: u64) -> String {
    let r = c.request(json!({"cmd": "lookup", "number": card(i)})).await;
    r["result"]["name"].as_str().unwrap().to_string()
}

fn field<'a>(p: &'a Printed, label: &str) -> &'a str {
    let prefix = format!("{label}: ");
    p.lines
        .iter()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {label} in {:?}", p.lines))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_and_unbind_print_masked_receipts_through_a_pty() {
    let pty = PtyMaster::open(None).unwrap();
    let extra = format!("role = \"window\"\n{}", printer_toml(&pty));
    let printer = Printer::start(pty, PrinterState::Ok);
    let (d, _ptys) = Process::start(&[("r1", "frame", "gbk")], &extra);
    let mut c = d.client().await;
    eventually(
        "printer ok in status",
        Duration::from_secs(10),
        async || (status(&mut c).await["printer"]["state"] == "ok").then_some(()),
    )
    .await;
    let holder_name = masked_name(&mut c, HOLDER).await;
    let child_name = masked_name(&mut c, CHILD).await;

    let r = c
        .request(json!({"cmd": "bind", "holder": card(HOLDER), "member": card(CHILD), "relation": "child", "operator": "clerk7"}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let receipt = &r["result"]["receipt"];
    assert_eq!(receipt["queued"], true, "{r}");
    let seq = receipt["audit_seq"].as_i64().unwrap();
    let printed = c.expect("RECEIPT").await;
    assert_eq!(
        (&printed["printed"], &printed["audit_seq"], &printed["kind"]),
        (&json!(true), &json!(seq), &json!("bind")),
        "{printed}"
    );
    let rs = eventually("one receipt cut", Duration::from_secs(10), async || {
        let rs = printer.receipts();
        (rs.len() == 1).then_some(rs)
    })
    .await;
    let p = &rs[0];
    assert_eq!(p.titles, vec!["家庭共济绑定凭条"]);
    assert_eq!(field(p, "缴费人"), holder_name);
    assert_eq!(field(p, "缴费人证号"), ssn(HOLDER).masked().to_string());
    assert_eq!(field(p, "共济人"), child_name);
    assert_eq!(field(p, "共济人证号"), ssn(CHILD).masked().to_string());
    assert_eq!(field(p, "关系"), Relation::Child.label_zh());
    assert_eq!(field(p, "渠道"), "窗口");
    assert_eq!(field(p, "终端"), "窗口3");
    assert_eq!(field(p, "经办人"), "clerk7");
    assert_eq!(field(p, "流水号"), seq.to_string());
    let hash = audit_hash(&d.db, seq);
    assert_eq!(field(p, "校验码"), &hash[..12]);
    assert!(field(p, "时间").starts_with(&cardlink::Date::today_cst().to_string()));
    assert_eq!(p.qr.len(), 1);
    for want in [
        format!("流水号:{seq}"),
        format!("校验码:{}", &hash[..12]),
        format!("缴费人证号:{}", ssn(HOLDER).masked()),
        format!("共济人:{child_name}"),
        "关系:子女".to_string(),
    ] {
        assert!(p.qr[0].contains(&want), "{want} not in {}", p.qr[0]);
    }

    let r = c
        .request(json!({"cmd": "unbind", "holder": card(HOLDER), "member": card(CHILD), "operator": "clerk7"}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let useq = r["result"]["receipt"]["audit_seq"].as_i64().unwrap();
    assert!(useq > seq);
    let rs = eventually("two receipts cut", Duration::from_secs(10), async || {
        let rs = printer.receipts();
        (rs.len() == 2).then_some(rs)
    })
    .await;
    assert_eq!(rs[1].titles, vec!["家庭共济解除绑定凭条"]);
    assert_eq!(field(&rs[1], "流水号"), useq.to_string());
    assert_eq!(field(&rs[1], "关系"), Relation::Child.label_zh());

    // Never a full number on paper, in any form.
    let all = printer.bytes.lock().unwrap().clone();
    for i in [HOLDER, CHILD] {
        let full = demo_ssn_full(i);
        assert!(
            !all.windows(full.len()).any(|w| w == full.as_bytes()),
            "full SSN of {i} on paper"
        );
    }
    printer.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paper_end_shows_in_status_and_the_bind_stands() {
    let pty = PtyMaster::open(None).unwrap();
    let extra = format!("role = \"window\"\n{}", printer_toml(&pty));
    let printer = Printer::start(pty, PrinterState::Ok);
    let (d, _ptys) = Process::start(&[("r1", "frame", "gbk")], &extra);
    let mut c = d.client().await;
    eventually("printer ok", Duration::from_secs(10), async || {
        (status(&mut c).await["printer"]["state"] == "ok").then_some(())
    })
    .await;
    // The roll runs out: the next poll (every second here) sees it.
    *printer.state.lock().unwrap() = PrinterState::PaperEnd;
    while c.expect("PRINTER").await["state"] != "paper_end" {}
    assert_eq!(status(&mut c).await["printer"]["state"], "paper_end");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cardlinkctl"))
        .arg("status")
        .arg("--socket")
        .arg(&d.socket)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}{err}");
    assert!(text.contains("paper_end"), "{text}");

    let r = c
        .request(json!({"cmd": "bind", "holder": card(HOLDER), "member": card(CHILD), "relation": "child", "operator": "clerk7"}))
        .await;
    assert_eq!(r["ok"], true, "the bind stands: {r}");
    assert_eq!(r["result"]["receipt"]["queued"], false, "{r}");
    assert_eq!(r["result"]["receipt"]["printer"], "paper_end", "{r}");
    let ev = c.expect("RECEIPT").await;
    assert_eq!(
        (&ev["printed"], &ev["state"]),
        (&json!(false), &json!("paper_end")),
        "{ev}"
    );
    let s = status(&mut c).await;
    assert_eq!(s["printer"]["failed"], 1, "{s}");
    assert!(
        printer.receipts().is_empty(),
        "nothing printed without paper"
    );
    // The link is there: an unbind finds it.
    let r = c
        .request(json!({"cmd": "unbind", "holder": card(HOLDER), "member": card(CHILD), "operator": "clerk7"}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    printer.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_printer_does_not_stall_card_reads() {
    let pty = PtyMaster::open(None).unwrap();
    let extra = printer_toml(&pty);
    let printer = Printer::start(pty, PrinterState::Ok);
    let (d, mut ptys) = Process::start(&[("r1", "frame", "gbk")], &extra);
    let mut c = d.client().await;
    eventually("printer ok", Duration::from_secs(10), async || {
        (status(&mut c).await["printer"]["state"] == "ok").then_some(())
    })
    .await;
    // The printer goes away: its pty is closed.
    printer.task.abort();
    let _ = printer.task.await;
    eventually(
        "printer disconnected",
        Duration::from_secs(10),
        async || (status(&mut c).await["printer"]["state"] == "disconnected").then_some(()),
    )
    .await;
    ptys[0]
        .write_all(&card_frame(1, HOLDER, "张伟"))
        .await
        .unwrap();
    let read = c.expect("CARD").await;
    assert_eq!(read["role"], "holder", "{read}");
    // A bind meanwhile is made and reported as not printed.
    let r = c
        .request(json!({"cmd": "bind", "holder": card(HOLDER), "member": card(CHILD), "relation": "child", "operator": "clerk7"}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["result"]["receipt"]["queued"], false, "{r}");
    let ev = c.expect("RECEIPT").await;
    assert_eq!(ev["printed"], false, "{ev}");
}

/// The simulator's printer (what `cardlinkctl demo` runs) answers the
/// daemon's status queries and hands over each receipt at its cut, and
/// follows a state set while it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulated_printer_collects_receipts_and_follows_its_state() {
    let pty = PtyMaster::open(None).unwrap();
    let extra = format!("role = \"window\"\n{}", printer_toml(&pty));
    let state = Arc::new(Mutex::new(PrinterState::Ok));
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    let sim = tokio::spawn(cardlink::sim::play_printer(
        pty,
        state.clone(),
        Encoding::Gbk,
        move |r| sink.lock().unwrap().push(r),
    ));
    let (d, _ptys) = Process::start(&[("r1", "frame", "gbk")], &extra);
    let mut c = d.client().await;
    eventually("printer ok", Duration::from_secs(10), async || {
        (status(&mut c).await["printer"]["state"] == "ok").then_some(())
    })
    .await;
    let r = c
        .request(json!({"cmd": "bind", "holder": card(HOLDER), "member": card(CHILD), "relation": "child", "operator": "clerk7"}))
        .await;
    assert_eq!(r["result"]["receipt"]["queued"], true, "{r}");
    let first = eventually("a receipt", Duration::from_secs(10), async || {
        got.lock().unwrap().first().cloned()
    })
    .await;
    assert_eq!(first.titles, vec!["家庭共济绑定凭条"]);
    assert_eq!(field(&first, "共济人证号"), ssn(CHILD).masked().to_string());
    *state.lock().unwrap() = PrinterState::CoverOpen;
    eventually("cover open", Duration::from_secs(10), async || {
        (status(&mut c).await["printer"]["state"] == "cover_open").then_some(())
    })
    .await;
    sim.abort();
}

/// Issue 23: a kiosk's 打印 on the records screen. `print_records` by the
/// swipe reads the records `contributions` shows, audits the printing and
/// prints them masked: title, name and SSN masked, one line per month,
/// the total; never a full number. With paper out it is refused
/// (`printer_unavailable`) and the reader keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn print_records_prints_the_months_shown_masked_through_a_pty() {
    let pty = PtyMaster::open(None).unwrap();
    let extra = format!("role = \"kiosk\"\n{}", printer_toml(&pty));
    let printer = Printer::start(pty, PrinterState::Ok);
    let (d, mut ptys) = Process::start(&[("r1", "frame", "utf-8")], &extra);
    let mut c = d.client().await;
    eventually("printer ok", Duration::from_secs(10), async || {
        (status(&mut c).await["printer"]["state"] == "ok").then_some(())
    })
    .await;
    ptys[0]
        .write_all(&card_frame(1, HOLDER, "张伟"))
        .await
        .unwrap();
    let read = c.expect("CARD").await;
    let swipe = read["swipe"].as_u64().unwrap();
    let name = read["name"].as_str().unwrap().to_string();
    let shown = c
        .request(json!({"cmd": "contributions", "swipe": swipe, "months": 3}))
        .await;
    let shown = shown["result"]["records"].as_array().unwrap().clone();
    assert_eq!(shown.len(), 3, "{shown:?}");
    // By number at a kiosk: refused, as for `contributions`.
    let r = c
        .request(json!({"cmd": "print_records", "number": card(HOLDER), "months": 3}))
        .await;
    assert_eq!(r["code"], "kiosk_requires_swipe", "{r}");
    let r = c
        .request(json!({"cmd": "print_records", "swipe": swipe, "months": 3}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["result"]["receipt"]["queued"], true, "{r}");
    let seq = r["result"]["receipt"]["audit_seq"].as_i64().unwrap();
    let ev = c.expect("RECEIPT").await;
    assert_eq!(
        (&ev["kind"], &ev["audit_seq"], &ev["printed"]),
        (&json!("records"), &json!(seq), &json!(true)),
        "{ev}"
    );
    // The printing is an audit row of its own, about the person.
    let (action, who): (String, String) = rusqlite::Connection::open(&d.db)
        .unwrap()
        .query_row("SELECT action, ssn FROM audit WHERE id = ?1", [seq], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(
        (action.as_str(), who),
        ("print_records", demo_ssn_full(HOLDER))
    );
    let rs = eventually("a records receipt", Duration::from_secs(10), async || {
        let rs = printer.receipts();
        (rs.len() == 1).then_some(rs)
    })
    .await;
    let p = &rs[0];
    assert_eq!(p.titles, vec!["医保缴费记录凭条"]);
    assert_eq!(field(p, "姓名"), name);
    assert_eq!(field(p, "证号"), ssn(HOLDER).masked().to_string());
    let mut total = 0;
    for m in &shown {
        let fen = m["account_fen"].as_i64().unwrap();
        total += fen;
        let want = format!(
            "{} {} {}.{:02}",
            m["month"].as_str().unwrap(),
            m["employer"].as_str().unwrap(),
            fen / 100,
            fen % 100
        );
        assert!(p.lines.contains(&want), "{want} not in {:?}", p.lines);
    }
    assert_eq!(
        field(p, "合计"),
        format!("{}.{:02}", total / 100, total % 100)
    );
    assert_eq!(field(p, "流水号"), seq.to_string());
    assert_eq!(field(p, "校验码"), &audit_hash(&d.db, seq)[..12]);
    let all = printer.bytes.lock().unwrap().clone();
    let full = demo_ssn_full(HOLDER);
    assert!(
        !all.windows(full.len()).any(|w| w == full.as_bytes()),
        "a full SSN on paper"
    );

    // Paper out: refused before anything is printed or audited.
    *printer.state.lock().unwrap() = PrinterState::PaperEnd;
    while c.expect("PRINTER").await["state"] != "paper_end" {}
    let r = c
        .request(json!({"cmd": "print_records", "swipe": swipe}))
        .await;
    assert_eq!(r["code"], "printer_unavailable", "{r}");
    // The reader keeps serving.
    ptys[0]
        .write_all(&card_frame(2, CHILD, "张小明"))
        .await
        .unwrap();
    assert_eq!(c.expect("CARD").await["swipe"], swipe + 1);
    assert_eq!(printer.receipts().len(), 1);
    printer.task.abort();
}

/// Without a printer configured, `print_records` is `printer_unavailable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn print_records_without_a_printer_is_printer_unavailable() {
    let (d, _ptys) = Process::start(&[("r1", "frame", "gbk")], "");
    let mut c = d.client().await;
    let r = c
        .request(json!({"cmd": "print_records", "number": card(HOLDER)}))
        .await;
    assert_eq!(r["code"], "printer_unavailable", "{r}");
}
