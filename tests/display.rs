//! `cardlink-display`'s server side, without a browser: the WebSocket
//! relay and its origin checks, kiosk masking and limits, the daemon going
//! away and coming back, and pages that need no network.

mod common;

use std::net::SocketAddr;

use common::*;
use firmware_protocol::frame::{encode_vec, Cmd};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_util::sync::CancellationToken;

type Page =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Display {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl Drop for Display {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn display(socket: &std::path::Path) -> Display {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(cardlink::display::serve(
        listener,
        socket.to_path_buf(),
        stop.clone(),
    ));
    Display { addr, stop }
}

/// A page's WebSocket with the given Host and Origin headers.
async fn connect(addr: SocketAddr, host: &str, origin: &str) -> Result<Page, String> {
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut().insert("host", host.parse().unwrap());
    req.headers_mut().insert("origin", origin.parse().unwrap());
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
        .map_err(|e| e.to_string())
}

async fn page(addr: SocketAddr) -> Page {
    connect(addr, &addr.to_string(), &format!("http://{addr}"))
        .await
        .unwrap()
}

async fn next(p: &mut Page) -> Value {
    loop {
        match p.next().await.expect("page closed").unwrap() {
            Ws::Text(t) => return serde_json::from_str(&t).unwrap(),
            _ => continue,
        }
    }
}

async fn expect(p: &mut Page, class: &str) -> Value {
    loop {
        let v = next(p).await;
        if v["class"] == class {
            return v;
        }
    }
}

/// Waits for the page to hear that the daemon is `state`.
async fn daemon_state(p: &mut Page, state: &str) -> Value {
    loop {
        let v = expect(p, "DISPLAY").await;
        if v["daemon"] == state {
            return v;
        }
    }
}

async fn ask(p: &mut Page, id: u64, req: Value) -> Value {
    let mut req = req;
    req["id"] = id.into();
    p.send(Ws::Text(req.to_string().into())).await.unwrap();
    loop {
        let v = expect(p, "REPLY").await;
        if v["id"] == id {
            return v;
        }
    }
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(start_paused = true)]
async fn only_its_own_origin_may_open_the_websocket() {
    let (d, _p) = Daemon::start(&[], "").await;
    let disp = display(&d.socket).await;
    let a = disp.addr;
    assert!(connect(a, &a.to_string(), &format!("http://{a}"))
        .await
        .is_ok());
    let port = a.port();
    assert!(connect(
        a,
        &format!("localhost:{port}"),
        &format!("http://localhost:{port}")
    )
    .await
    .is_ok());
    // Another site's page.
    let e = connect(a, &a.to_string(), "http://evil.example")
        .await
        .unwrap_err();
    assert!(e.contains("403"), "{e}");
    // DNS rebinding: a foreign name resolving to 127.0.0.1.
    let e = connect(
        a,
        &format!("evil.example:{port}"),
        &format!("http://evil.example:{port}"),
    )
    .await
    .unwrap_err();
    assert!(e.contains("403"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn no_full_ssn_reaches_a_kiosk_page_even_for_a_privileged_display() {
    let uid = unsafe { libc::getuid() };
    let (mut d, mut ports) = Daemon::start(&[("k1", "frame", "utf-8")], "role = \"kiosk\"").await;
    let text = d.config.replace(
        "mode = \"0600\"\n",
        &format!("mode = \"0600\"\nprivileged_uids = [{uid}]\n"),
    );
    d.reload(text).await;
    let disp = display(&d.socket).await;
    let mut p = page(disp.addr).await;
    assert_eq!(daemon_state(&mut p, "connected").await["role"], "kiosk");
    // The daemon itself sends full numbers to this (privileged) uid...
    let mut raw = d.client().await;
    raw.expect("VERSION").await;
    for (seq, i, name) in [(1, HOLDER, "张伟"), (2, CHILD, "张小明")] {
        ports[0]
            .write_all(
                &encode_vec(
                    seq,
                    Cmd::CardIc as u8,
                    sim_card(i, name).record().as_bytes(),
                )
                .unwrap(),
            )
            .await
            .unwrap();
    }
    let full = raw.expect("CARD").await;
    assert_eq!(
        full["ssn"],
        demo_ssn_full(HOLDER),
        "the daemon sent the full number"
    );
    // ...the kiosk page gets them masked.
    let holder = expect(&mut p, "CARD").await;
    let member = expect(&mut p, "CARD").await;
    for c in [&holder, &member] {
        let text = c.to_string();
        for i in [HOLDER, SPOUSE, CHILD] {
            assert!(
                !text.contains(&demo_ssn_full(i)),
                "full SSN on a kiosk page: {text}"
            );
        }
        assert!(
            !text.contains("张伟") && !text.contains("李娜"),
            "full name on a kiosk page: {text}"
        );
    }
    assert_eq!(holder["ssn"], ssn(HOLDER).masked().to_string());
    assert_eq!(holder["members"][0]["name"], "李*");
    // Bind by the two swipes, then records for the holder's swipe.
    let r = ask(&mut p, 1, json!({"cmd": "bind", "holder_swipe": holder["swipe"], "member_swipe": member["swipe"], "relation": "child"})).await;
    assert_eq!(r["ok"], true, "{r}");
    let r = ask(
        &mut p,
        2,
        json!({"cmd": "contributions", "swipe": holder["swipe"], "months": 12}),
    )
    .await;
    assert_eq!(r["result"]["records"].as_array().unwrap().len(), 6, "{r}");
    // What a kiosk page may not do, refused by the display itself.
    let r = ask(&mut p, 3, json!({"cmd": "lookup", "number": card(HOLDER)})).await;
    assert_eq!(r["code"], "manual_entry_not_allowed", "{r}");
    let r = ask(&mut p, 4, json!({"cmd": "bind", "holder": card(HOLDER), "member": card(PARENT), "relation": "parent"})).await;
    assert_eq!(r["code"], "kiosk_requires_swipe", "{r}");
    let r = ask(
        &mut p,
        5,
        json!({"cmd": "unbind", "holder_swipe": holder["swipe"], "member_swipe": member["swipe"]}),
    )
    .await;
    assert_eq!(r["code"], "kiosk_requires_swipe", "{r}");
    let r = ask(
        &mut p,
        6,
        json!({"cmd": "contributions", "number": card(HOLDER)}),
    )
    .await;
    assert_eq!(r["code"], "kiosk_requires_swipe", "{r}");
}

#[tokio::test(start_paused = true)]
async fn a_window_page_looks_up_and_sees_readers_and_removals() {
    let (d, mut ports) = Daemon::start(&[("w1", "frame", "utf-8")], "").await;
    let disp = display(&d.socket).await;
    let mut p = page(disp.addr).await;
    assert_eq!(daemon_state(&mut p, "connected").await["role"], "window");
    let r = ask(&mut p, 1, json!({"cmd": "lookup", "number": card(SPOUSE)})).await;
    assert_eq!(
        (r["ok"].as_bool(), r["result"]["role"].as_str()),
        (Some(true), Some("member")),
        "{r}"
    );
    ports[0]
        .write_all(&encode_vec(1, Cmd::CardRemoved as u8, b"").unwrap())
        .await
        .unwrap();
    assert_eq!(expect(&mut p, "REMOVED").await["reader"], "w1");
    let r = ask(&mut p, 2, json!({"cmd": "bind", "holder": card(HOLDER), "member": card(REMOTE), "relation": "sibling"})).await;
    assert_eq!(r["code"], "out_of_scope", "refusals pass through: {r}");
    let r = ask(&mut p, 3, json!({"cmd": "fly"})).await;
    assert_eq!(r["code"], "unknown_command");
    // A web page never starts a capture of raw traffic.
    let r = ask(&mut p, 4, json!({"cmd": "capture", "reader": "w1"})).await;
    assert_eq!(r["code"], "not_privileged", "{r}");
}

#[tokio::test(start_paused = true)]
async fn the_daemon_going_away_shows_offline_and_its_return_recovers() {
    let (d, _p) = Daemon::start(&[], "role = \"kiosk\"").await;
    let socket = d.socket.clone();
    let disp = display(&socket).await;
    let mut p = page(disp.addr).await;
    daemon_state(&mut p, "connected").await;
    let health: Value = serde_json::from_str(
        http_get(disp.addr, "/healthz")
            .await
            .split("\r\n\r\n")
            .nth(1)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (health["daemon"].as_str(), health["role"].as_str()),
        (Some("connected"), Some("kiosk"))
    );
    let (dir, db) = d.stop_keep().await;
    let off = daemon_state(&mut p, "offline").await;
    assert_eq!(
        off["role"], "kiosk",
        "a kiosk stays a kiosk while the daemon is away"
    );
    let r = ask(&mut p, 1, json!({"cmd": "status"})).await;
    assert_eq!(r["code"], "daemon_offline", "{r}");
    let response = http_get(disp.addr, "/healthz").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"daemon\":\"offline\""), "{response}");
    // The same page, without reloading, recovers when the daemon is back.
    let d = Daemon::start_on(
        dir,
        db,
        &[],
        "role = \"kiosk\"",
        cardlink::sim::VirtualPorts::new(),
    )
    .await;
    daemon_state(&mut p, "connected").await;
    let r = ask(&mut p, 2, json!({"cmd": "status"})).await;
    assert_eq!(r["ok"], true, "{r}");
    drop(d);
}

#[tokio::test(start_paused = true)]
async fn the_page_and_its_assets_are_served_from_the_binary() {
    let (d, _p) = Daemon::start(&[], "").await;
    let disp = display(&d.socket).await;
    for (path, kind) in [
        ("/", "text/html"),
        ("/app.js", "text/javascript"),
        ("/app.css", "text/css"),
    ] {
        let r = http_get(disp.addr, path).await;
        assert!(r.starts_with("HTTP/1.1 200"), "{path}: {r}");
        let lower = r.to_ascii_lowercase();
        assert!(lower.contains(&format!("content-type: {kind}")), "{path}");
        assert!(
            lower.contains("content-security-policy: default-src 'self'"),
            "{path}"
        );
        let body = r.split("\r\n\r\n").nth(1).unwrap();
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{path} loads from the network"
        );
    }
    let html = http_get(disp.addr, "/").await;
    assert!(html.contains("data-screen=\"offline\"") && html.contains("家庭共济"));
    let js = http_get(disp.addr, "/app.js").await;
    for screen in [
        "\"idle\"",
        "\"result\"",
        "\"bind\"",
        "\"records\"",
        "\"offline\"",
        "\"window\"",
    ] {
        assert!(js.contains(screen), "screen {screen} missing");
    }
}
