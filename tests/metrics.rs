//! The Prometheus endpoints (issue 24): cardlinkd's `[metrics] listen`
//! scraped while a card is swiped through a real pseudo-terminal and a
//! bind goes through the socket, parsed, and searched for personal data;
//! the display's page count and daemon link; and the shipped alert rules,
//! whose every metric must be in a real scrape.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One sample of the exposition: its name and labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Series {
    name: String,
    labels: BTreeMap<String, String>,
}

/// A small parser of the text exposition format's sample lines,
/// `name{label="value",…} value`; comment lines (`# HELP`, `# TYPE`) are
/// skipped. A line it cannot read fails the test.
fn parse(text: &str) -> Vec<(Series, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line}"));
                let mut labels = BTreeMap::new();
                let mut rest = body;
                while !rest.is_empty() {
                    let (key, after) = rest
                        .split_once("=\"")
                        .unwrap_or_else(|| panic!("bad label: {line}"));
                    // Values here hold no quotes or backslashes (names, codes).
                    let (val, after) = after
                        .split_once('"')
                        .unwrap_or_else(|| panic!("unclosed value: {line}"));
                    labels.insert(key.to_string(), val.to_string());
                    rest = after.strip_prefix(',').unwrap_or(after);
                }
                (name.to_string(), labels)
            }
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line}"
        );
        out.push((Series { name, labels }, value));
    }
    out
}

/// The sum of the samples named `name` whose labels include `with`.
fn value(samples: &[(Series, f64)], name: &str, with: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(s, _)| {
            s.name == name
                && with
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| v)
        .sum()
}

/// `GET /metrics` over a plain TCP connection: (status line, content type, body).
async fn scrape(addr: SocketAddr) -> (String, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut raw))
        .await
        .expect("a scrape answers")
        .unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.lines().next().unwrap_or_default().to_string();
    let ctype = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_string)
        })
        .unwrap_or_default();
    (status, ctype, body.to_string())
}

/// Where the daemon says it serves metrics (port 0 took a free one).
fn metrics_addr(log: &Log) -> SocketAddr {
    assert!(
        log.wait_for("/metrics", Duration::from_secs(20)),
        "the daemon did not say where it serves metrics:\n{}",
        log.text()
    );
    let text = log.text();
    let at = text.find("serving metrics on http://").expect("the line") + 26;
    text[at..]
        .split("/metrics")
        .next()
        .unwrap()
        .parse()
        .expect("an address")
}

/// Label values that look like personal data: hanzi (names), runs of
/// 9 or more digits (SSNs, card numbers, PANs), or the given values.
fn personal_data(samples: &[(Series, f64)], text: &str, known: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for (s, _) in samples {
        for v in s.labels.values() {
            let mut run = 0;
            let long_digits = v.chars().any(|c| {
                run = if c.is_ascii_digit() { run + 1 } else { 0 };
                run >= 9
            });
            if long_digits || v.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)) {
                found.push(format!("{}: {v}", s.name));
            }
        }
    }
    for k in known {
        if text.contains(k.as_str()) {
            found.push(format!("the scrape holds {k}"));
        }
    }
    found
}

/// The metric names an alert rules file uses in its `expr:` lines.
fn rule_metrics(rules: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in rules.lines() {
        let Some(expr) = line.trim().strip_prefix("expr:") else {
            continue;
        };
        let mut word = String::new();
        for c in expr.chars().chain(std::iter::once(' ')) {
            if c.is_ascii_alphanumeric() || c == '_' {
                word.push(c);
            } else {
                if word.starts_with("cardlink_") && !names.contains(&word) {
                    names.push(word.clone());
                }
                word.clear();
            }
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swipe_and_a_bind_move_the_counters_and_no_label_holds_personal_data() {
    let (d, mut ptys) = Process::start(
        &[("r1", "frame", "utf-8")],
        "name = \"window-3f-01\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
    );
    let addr = metrics_addr(&d.log);
    // systemd's status names the address too (port 0 took a free one).
    let said = recv_until(&d.notify, "STATUS=metrics on", Duration::from_secs(10));
    assert!(
        said.iter()
            .any(|m| m.contains(&format!("STATUS=metrics on http://{addr}/metrics"))),
        "{said:?}"
    );
    let mut c = d.client().await;
    while c.expect("READER").await["state"] != "connected" {}

    let (status, ctype, body) = scrape(addr).await;
    assert!(status.contains("200"), "{status}");
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    let before = parse(&body);
    assert_eq!(
        value(&before, "cardlink_reader_up", &[("reader", "r1")]),
        1.0,
        "{body}"
    );
    assert_eq!(
        value(
            &before,
            "cardlink_reader_state",
            &[("reader", "r1"), ("state", "connected")]
        ),
        1.0
    );
    assert_eq!(
        value(&before, "cardlink_build_info", &[("sim", "true")]),
        1.0,
        "the tests run a simulator build: {body}"
    );
    assert_eq!(value(&before, "cardlink_reads_total", &[]), 0.0);
    assert_eq!(value(&before, "cardlink_display_clients", &[]), 1.0);
    let calls = |s: &[(Series, f64)], op: &str| {
        value(
            s,
            "cardlink_registry_call_duration_seconds_count",
            &[("operation", op), ("backend", "sqlite")],
        )
    };
    let resolved_before = calls(&before, "resolve_audited");

    // A swipe through the pty: the read counter and the registry
    // histogram move by one.
    ptys[0]
        .write_all(&card_frame(1, HOLDER, "张伟"))
        .await
        .unwrap();
    assert_eq!(c.expect("CARD").await["outcome"], "ok");
    let (_, _, body) = scrape(addr).await;
    let after = parse(&body);
    assert_eq!(
        value(
            &after,
            "cardlink_reads_total",
            &[("reader", "r1"), ("outcome", "ok")]
        ),
        1.0,
        "{body}"
    );
    assert_eq!(calls(&after, "resolve_audited"), resolved_before + 1.0);
    assert_eq!(
        value(
            &after,
            "cardlink_registry_calls_total",
            &[("operation", "resolve_audited"), ("result", "ok")]
        ),
        resolved_before + 1.0
    );
    assert_eq!(
        value(&after, "cardlink_resolver_queue_depth", &[("reader", "r1")]),
        0.0
    );

    // A bind and a refused one through the socket: by result.
    let bind = json!({"cmd": "bind", "holder": card(HOLDER), "member": card(CHILD), "relation": "child", "operator": "clerk7"});
    assert_eq!(c.request(bind.clone()).await["ok"], true);
    assert_eq!(c.request(bind).await["code"], "already_linked");
    let r = c
        .request(json!({"cmd": "unbind", "holder": card(HOLDER), "member": card(CHILD)}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let (_, _, body) = scrape(addr).await;
    let after = parse(&body);
    assert_eq!(
        value(&after, "cardlink_binds_total", &[("result", "ok")]),
        1.0,
        "{body}"
    );
    assert_eq!(
        value(
            &after,
            "cardlink_binds_total",
            &[("result", "already_linked")]
        ),
        1.0
    );
    assert_eq!(
        value(&after, "cardlink_unbinds_total", &[("result", "ok")]),
        1.0
    );
    assert_eq!(calls(&after, "bind"), 2.0);

    // No personal data anywhere in it.
    let known = [
        demo_ssn_full(HOLDER),
        demo_ssn_full(CHILD),
        card(HOLDER),
        card(CHILD),
        pan(HOLDER),
        "张伟".to_string(),
    ];
    let found = personal_data(&after, &body, &known);
    assert!(found.is_empty(), "{found:?}\n{body}");

    // Every metric the shipped alert rules use is in this real scrape.
    let rules = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/cardlink-alerts.yml"
    ))
    .unwrap();
    let used = rule_metrics(&rules);
    assert!(
        used.len() >= 2,
        "the rules use the reader and registry metrics: {used:?}"
    );
    for name in &used {
        assert!(
            after.iter().any(|(s, _)| &s.name == name),
            "alert rule metric {name} is not in the scrape:\n{body}"
        );
    }
    let (status, _, _) = scrape_path(addr, "/").await;
    assert!(status.contains("404"), "{status}");
}

/// A raw GET of `path`: (status line, headers, body).
async fn scrape_path(addr: SocketAddr, path: &str) -> (String, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    (
        head.lines().next().unwrap_or_default().to_string(),
        head.to_string(),
        body.to_string(),
    )
}

/// A reader that goes away shows `cardlink_reader_up 0` (what the
/// "reader down" alert watches).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_unplugged_shows_down_in_the_scrape() {
    let (d, mut ptys) = Process::start(
        &[("r1", "frame", "utf-8")],
        "[metrics]\nlisten = \"127.0.0.1:0\"\n",
    );
    let addr = metrics_addr(&d.log);
    let mut c = d.client().await;
    while c.expect("READER").await["state"] != "connected" {}
    drop(ptys.pop());
    while c.expect("READER").await["state"] != "disconnected" {}
    let (_, _, body) = scrape(addr).await;
    let s = parse(&body);
    assert_eq!(
        value(&s, "cardlink_reader_up", &[("reader", "r1")]),
        0.0,
        "{body}"
    );
    assert_eq!(
        value(
            &s,
            "cardlink_reader_state",
            &[("reader", "r1"), ("state", "disconnected")]
        ),
        1.0
    );
}

/// Issue 24: the receipt printer in the scrape, one-hot by state, with
/// its receipts printed and not; the state follows the simulated printer
/// when it reports paper end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_printer_state_and_its_receipts_show_in_the_scrape() {
    use cardlink::printer::{Encoding, PrinterState};
    use std::sync::{Arc, Mutex};
    let pty = cardlink::sim::PtyMaster::open(None).unwrap();
    let extra = format!(
        "role = \"window\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n[printer]\npath = {:?}\nstatus_interval_s = 1\n",
        pty.slave_path()
    );
    let state = Arc::new(Mutex::new(PrinterState::Ok));
    let sim = tokio::spawn(cardlink::sim::play_printer(
        pty,
        state.clone(),
        Encoding::Gbk,
        |_| {},
    ));
    let (d, _ptys) = Process::start(&[("r1", "frame", "utf-8")], &extra);
    let addr = metrics_addr(&d.log);
    let one_hot = |s: &[(Series, f64)], want: &str| {
        PrinterState::ALL.iter().all(|st| {
            let v = value(s, "cardlink_printer_state", &[("state", st.as_str())]);
            v == if st.as_str() == want { 1.0 } else { 0.0 }
        })
    };
    eventually(
        "printer ok in the scrape",
        Duration::from_secs(10),
        async || {
            let (_, _, body) = scrape(addr).await;
            one_hot(&parse(&body), "ok").then_some(())
        },
    )
    .await;
    let mut c = d.client().await;
    let r = c
        .request(json!({"cmd": "bind", "holder": card(HOLDER), "member": card(CHILD), "relation": "child", "operator": "clerk7"}))
        .await;
    assert_eq!(r["result"]["receipt"]["queued"], true, "{r}");
    eventually("a receipt counted", Duration::from_secs(10), async || {
        let (_, _, body) = scrape(addr).await;
        (value(&parse(&body), "cardlink_receipts_printed_total", &[]) == 1.0).then_some(())
    })
    .await;
    *state.lock().unwrap() = PrinterState::PaperEnd;
    let body = eventually(
        "paper end in the scrape",
        Duration::from_secs(10),
        async || {
            let (_, _, body) = scrape(addr).await;
            one_hot(&parse(&body), "paper_end").then_some(body)
        },
    )
    .await;
    let s = parse(&body);
    assert_eq!(value(&s, "cardlink_receipts_failed_total", &[]), 0.0);
    // Only the fixed vocabulary of states in its labels.
    for (series, _) in s.iter().filter(|(x, _)| x.name == "cardlink_printer_state") {
        assert_eq!(series.labels.keys().collect::<Vec<_>>(), ["state"]);
    }
    sim.abort();
}

/// A metrics address that is not IP:port is refused by the
/// configuration check with the key it is about.
#[test]
fn a_bad_metrics_address_is_a_configuration_error() {
    let (ok, _, err) = check_config("[metrics]\nlisten = \"localhost:9780\"\n");
    assert!(!ok);
    assert!(err.contains("metrics") && err.contains("listen"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("registry.db");
    let (ok, out, err) = check_config(&format!(
        "database = {db:?}\n[metrics]\nlisten = \"127.0.0.1:9780\"\n"
    ));
    assert!(ok, "{err}");
    assert!(out.contains("listen = \"127.0.0.1:9780\""), "{out}");
}

/// The display's metrics: a page connected makes `cardlink_display_pages`
/// 1, and the daemon link is up; the page gone, 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_display_counts_its_pages_and_its_daemon_link() {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let (daemon, _) = Daemon::start(&[], "").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let maddr = metrics.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let key = cardlink::display::ScreenKey::random();
    tokio::spawn(cardlink::display::serve_with_metrics(
        listener,
        Some(metrics),
        cardlink::display::Settings {
            socket: daemon.socket.clone(),
            key: key.clone(),
            operator: None,
            idle: Duration::from_secs(30),
            max_connections: 16,
            elder: false,
            speech: cardlink::protocol::Speech::Elder,
        },
        stop.clone(),
    ));
    let pages = async |want: f64| {
        eventually(
            &format!("cardlink_display_pages {want}"),
            Duration::from_secs(10),
            async || {
                let (_, _, body) = scrape(maddr).await;
                let s = parse(&body);
                (value(&s, "cardlink_display_pages", &[]) == want).then_some(s)
            },
        )
        .await
    };
    let s = pages(0.0).await;
    assert_eq!(value(&s, "cardlink_build_info", &[]), 1.0);

    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("origin", format!("http://{addr}").parse().unwrap());
    req.headers_mut().insert(
        "cookie",
        format!("cardlink_screen={}", key.expose()).parse().unwrap(),
    );
    let (mut page, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    // The page hears that the daemon is connected: so is the metric.
    loop {
        let m = page.next().await.expect("page open").unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
            let v: serde_json::Value = serde_json::from_str(&t).unwrap();
            if v["class"] == "DISPLAY" && v["daemon"] == "connected" {
                break;
            }
        }
    }
    let s = pages(1.0).await;
    assert_eq!(value(&s, "cardlink_display_daemon_up", &[]), 1.0);
    drop(page);
    pages(0.0).await;
    stop.cancel();
    drop(daemon);
}
