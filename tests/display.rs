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
    key: cardlink::display::ScreenKey,
    stop: CancellationToken,
}

impl Drop for Display {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The operator the window screens of these tests are configured with.
const OPERATOR: &str = "clerk07";

async fn display(socket: &std::path::Path) -> Display {
    display_with(socket, Some(OPERATOR)).await
}

async fn display_with(socket: &std::path::Path, operator: Option<&str>) -> Display {
    display_idle(socket, operator, IDLE).await
}

async fn display_idle(
    socket: &std::path::Path,
    operator: Option<&str>,
    idle: std::time::Duration,
) -> Display {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let key = cardlink::display::ScreenKey::random();
    tokio::spawn(cardlink::display::serve(
        listener,
        cardlink::display::Settings {
            socket: socket.to_path_buf(),
            key: key.clone(),
            operator: operator.map(Into::into),
            idle,
            max_connections: 64,
            elder: false,
            speech: cardlink::protocol::Speech::Elder,
        },
        stop.clone(),
    ));
    Display { addr, key, stop }
}

/// The kiosk session's idle limit in these tests.
const IDLE: std::time::Duration = std::time::Duration::from_secs(30);

/// A page's WebSocket with the given Host, Origin and Cookie headers.
async fn connect_with(
    addr: SocketAddr,
    host: &str,
    origin: &str,
    cookie: Option<&str>,
) -> Result<Page, String> {
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut().insert("host", host.parse().unwrap());
    req.headers_mut().insert("origin", origin.parse().unwrap());
    if let Some(c) = cookie {
        req.headers_mut().insert("cookie", c.parse().unwrap());
    }
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
        .map_err(|e| e.to_string())
}

/// A logged-in page's WebSocket with the given Host and Origin headers.
async fn connect(d: &Display, host: &str, origin: &str) -> Result<Page, String> {
    let cookie = format!("cardlink_screen={}", d.key.expose());
    connect_with(d.addr, host, origin, Some(&cookie)).await
}

async fn page(d: &Display) -> Page {
    let a = d.addr;
    connect(d, &a.to_string(), &format!("http://{a}"))
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
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// One raw HTTP exchange.
async fn http(addr: SocketAddr, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(start_paused = true)]
async fn only_its_own_origin_may_open_the_websocket() {
    let (d, _p) = Daemon::start(&[], "").await;
    let disp = display(&d.socket).await;
    let a = disp.addr;
    assert!(connect(&disp, &a.to_string(), &format!("http://{a}"))
        .await
        .is_ok());
    let port = a.port();
    assert!(connect(
        &disp,
        &format!("localhost:{port}"),
        &format!("http://localhost:{port}")
    )
    .await
    .is_ok());
    // Another site's page.
    let e = connect(&disp, &a.to_string(), "http://evil.example")
        .await
        .unwrap_err();
    assert!(e.contains("403"), "{e}");
    // DNS rebinding: a foreign name resolving to 127.0.0.1.
    let e = connect(
        &disp,
        &format!("evil.example:{port}"),
        &format!("http://evil.example:{port}"),
    )
    .await
    .unwrap_err();
    assert!(e.contains("403") || e.contains("421"), "{e}");
}

// Kiosk sessions end on the clock: these tests run on the real one (a
// paused clock jumps ahead whenever the runtime waits on the registry's
// blocking thread).
/// The printer's events reach a kiosk page (issue 23): the page learns
/// that a bind's receipt was not printed (`RECEIPT`, no personal data),
/// here from a printer that cannot be opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kiosk_page_gets_the_receipt_events() {
    let (d, mut ports) = Daemon::start(
        &[("k1", "frame", "utf-8")],
        "role = \"kiosk\"\n[printer]\npath = \"/nonexistent/cardlink-printer\"\n",
    )
    .await;
    let disp = display(&d.socket).await;
    let mut p = page(&disp).await;
    daemon_state(&mut p, "connected").await;
    ports[0]
        .write_all(&card_frame(1, HOLDER, "张伟"))
        .await
        .unwrap();
    let holder = expect(&mut p, "CARD").await;
    let r = ask(&mut p, 1, json!({"cmd": "bind_start"})).await;
    assert_eq!(r["ok"], true, "{r}");
    ports[0]
        .write_all(&card_frame(2, CHILD, "张小明"))
        .await
        .unwrap();
    let member = expect(&mut p, "CARD").await;
    let r = ask(&mut p, 2, json!({"cmd": "bind", "holder_swipe": holder["swipe"], "member_swipe": member["swipe"], "relation": "child", "consent": cardlink::registry::consent::CURRENT.version})).await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["result"]["receipt"]["queued"], false, "{r}");
    let seq = r["result"]["receipt"]["audit_seq"].clone();
    let ev = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        expect(&mut p, "RECEIPT"),
    )
    .await
    .expect("the RECEIPT event reaches the kiosk page");
    assert_eq!(
        (&ev["kind"], &ev["audit_seq"], &ev["printed"]),
        (&json!("bind"), &seq, &json!(false)),
        "{ev}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_full_ssn_reaches_a_kiosk_page_even_for_a_privileged_display() {
    let (mut d, mut ports) = Daemon::start(&[("k1", "frame", "utf-8")], "role = \"kiosk\"").await;
    let text = privileged_config(&d.config);
    d.reload(text).await;
    let disp = display(&d.socket).await;
    let mut p = page(&disp).await;
    assert_eq!(daemon_state(&mut p, "connected").await["role"], "kiosk");
    // The daemon itself sends full numbers to this (privileged) uid...
    let mut raw = d.client().await;
    raw.expect("VERSION").await;
    ports[0]
        .write_all(&card_frame(1, HOLDER, "张伟"))
        .await
        .unwrap();
    let full = raw.expect("CARD").await;
    assert_eq!(
        full["ssn"],
        demo_ssn_full(HOLDER),
        "the daemon sent the full number"
    );
    // ...the kiosk page gets them masked.
    let holder = expect(&mut p, "CARD").await;
    // The holder starts a bind; the member's card follows.
    let r = ask(&mut p, 10, json!({"cmd": "bind_start"})).await;
    assert_eq!(r["ok"], true, "{r}");
    ports[0]
        .write_all(&card_frame(2, CHILD, "张小明"))
        .await
        .unwrap();
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
    let r = ask(&mut p, 1, json!({"cmd": "bind", "holder_swipe": holder["swipe"], "member_swipe": member["swipe"], "relation": "child", "consent": cardlink::registry::consent::CURRENT.version})).await;
    assert_eq!(r["ok"], true, "{r}");
    // Records for the person whose card is in the reader now.
    ports[0]
        .write_all(&card_frame(3, HOLDER, "张伟"))
        .await
        .unwrap();
    let holder = expect(&mut p, "CARD").await;
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
    let r = ask(&mut p, 4, json!({"cmd": "bind", "holder": card(HOLDER), "member": card(PARENT), "relation": "parent", "consent": cardlink::registry::consent::CURRENT.version})).await;
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
    let mut p = page(&disp).await;
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
    let r = ask(&mut p, 2, json!({"cmd": "bind", "holder": card(HOLDER), "member": card(REMOTE), "relation": "sibling", "consent": cardlink::registry::consent::CURRENT.version})).await;
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
    let mut p = page(&disp).await;
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
        health,
        json!({"daemon": "connected"}),
        "nothing about the box (role, socket) to whoever asks"
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

/// The entries of `const NAME = {…};` in a script made by `codes_js`.
fn js_table(js: &str, name: &str) -> Vec<(String, [String; 2])> {
    let body = js
        .split(&format!("const {name} = {{\n"))
        .nth(1)
        .and_then(|rest| rest.split("\n};").next())
        .unwrap_or_else(|| panic!("no table {name} in {js}"));
    body.lines()
        .map(|l| {
            let l = l.trim().trim_end_matches(',');
            let (key, value) = l.split_once(": ").unwrap();
            (
                serde_json::from_str(key).unwrap(),
                serde_json::from_str(value).unwrap(),
            )
        })
        .collect()
}

/// One code table end to end: the page gets its sentences and relation
/// labels from the display, made from Rust's tables, and keeps none of
/// its own. Every code a screen shows has a sentence in Chinese and in
/// English; every relation has both labels, in the order of `Relation::ALL`.
#[tokio::test(start_paused = true)]
async fn every_code_has_a_sentence_and_every_relation_a_label() {
    use cardlink::protocol::ErrorCode;
    use cardlink::registry::Relation;
    let (d, _p) = Daemon::start(&[], "").await;
    let disp = display(&d.socket).await;
    let r = http_get(disp.addr, "/codes.js").await;
    let js = r.split("\r\n\r\n").nth(1).unwrap();
    let chinese = |s: &str| s.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c));
    let english = |s: &str| s.chars().any(|c| c.is_ascii_alphabetic()) && !chinese(s);
    let sentences: std::collections::BTreeMap<String, [String; 2]> =
        js_table(js, "SENTENCES").into_iter().collect();
    for code in ErrorCode::ALL {
        // Its event brings its own zh and en (the reader's return code).
        if *code == ErrorCode::ReaderReadError {
            continue;
        }
        let s = sentences
            .get(code.as_str())
            .unwrap_or_else(|| panic!("no sentence for {code}"));
        assert!(chinese(&s[0]) && english(&s[1]), "{code}: {s:?}");
    }
    let relations = js_table(js, "RELATIONS");
    let names: Vec<&str> = relations.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, Relation::ALL.map(|r| r.as_str()));
    for ((_, [zh, en]), r) in relations.iter().zip(Relation::ALL) {
        assert_eq!(zh, r.label_zh());
        assert!(english(en), "{r}: {en}");
    }
    // The page has no table of its own to drift, and loads this one first.
    let app = http_get(disp.addr, "/app.js").await;
    assert!(!app.contains("const SENTENCES") && !app.contains("const RELATIONS"));
    assert!(!app.contains("配偶") && !app.contains("系统繁忙"));
    let html = http_get(disp.addr, "/").await;
    let (codes, page) = (
        html.find("/codes.js").unwrap(),
        html.find("/app.js").unwrap(),
    );
    assert!(codes < page);
}

#[tokio::test(start_paused = true)]
async fn the_page_and_its_assets_are_served_from_the_binary() {
    let (d, _p) = Daemon::start(&[], "").await;
    let disp = display(&d.socket).await;
    for (path, kind) in [
        ("/", "text/html"),
        ("/app.js", "text/javascript"),
        ("/codes.js", "text/javascript"),
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

/// Waits (on the paused clock, so without real waiting) for the page to
/// hear that the role is `role`; fails if it never does.
async fn role_becomes(p: &mut Page, role: &str) {
    tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while expect(p, "DISPLAY").await["role"] != role {}
    })
    .await
    .unwrap_or_else(|_| panic!("the page never heard that the role is {role}"));
}

fn audit_outcomes(db: &std::path::Path, action: &str) -> Vec<String> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut q = c
        .prepare("SELECT outcome FROM audit WHERE action = ?1 ORDER BY id")
        .unwrap();
    q.query_map([action], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Issue 19.2: a local process forged `Origin` and drove binds. The
/// WebSocket needs the screen key, which only the login page hands over.
#[tokio::test(start_paused = true)]
async fn the_websocket_needs_the_screen_key_whatever_headers_are_forged() {
    let (d, _p) = Daemon::start(&[], "").await;
    let disp = display(&d.socket).await;
    let a = disp.addr;
    let (host, origin) = (a.to_string(), format!("http://{a}"));
    // The probe: the right Host, a forged Origin, no key.
    let e = connect_with(a, &host, &origin, None).await.unwrap_err();
    assert!(e.contains("401"), "{e}");
    let wrong = format!(
        "cardlink_screen={}",
        cardlink::display::ScreenKey::random().expose()
    );
    let e = connect_with(a, &host, &origin, Some(&wrong))
        .await
        .unwrap_err();
    assert!(e.contains("401"), "{e}");
    // The login page's POST: a wrong key, then the right one.
    let post = |k: &str| {
        format!(
            "POST /login HTTP/1.1\r\nHost: {a}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\nkey={k}",
            4 + k.len()
        )
    };
    let r = http(a, &post("00")).await;
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    assert!(!r.to_ascii_lowercase().contains("set-cookie"), "{r}");
    let r = http(a, &post(disp.key.expose())).await;
    assert!(r.starts_with("HTTP/1.1 303"), "{r}");
    let set_cookie = r
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie: {r}"));
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    let cookie = set_cookie
        .split_once(':')
        .unwrap()
        .1
        .trim()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let mut p = connect_with(a, &host, &origin, Some(&cookie))
        .await
        .unwrap();
    daemon_state(&mut p, "connected").await;
}

/// Environment variable that turns the test below into the attacker's
/// side when the test binary is run again as another uid.
const AS_OTHER_UID: &str = "CARDLINK_TEST_AS_OTHER_UID";

/// The other side of `a_local_user_outside_the_screen_group_cannot_drive_the_display`:
/// run by it, as uid and gid 65534 with no supplementary groups.
#[tokio::test]
#[ignore = "run as another uid by a_local_user_outside_the_screen_group_cannot_drive_the_display"]
async fn as_another_local_user() {
    let Ok(spec) = std::env::var(AS_OTHER_UID) else {
        return;
    };
    let spec: Value = serde_json::from_str(&spec).unwrap();
    let addr: SocketAddr = spec["addr"].as_str().unwrap().parse().unwrap();
    let key = std::fs::read_to_string(spec["key"].as_str().unwrap());
    println!(
        "key: {}",
        match key {
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => "denied".to_string(),
            other => format!("{other:?}"),
        }
    );
    let sock = std::os::unix::net::UnixStream::connect(spec["socket"].as_str().unwrap());
    println!(
        "socket: {}",
        match sock {
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => "denied".to_string(),
            other => format!("{other:?}"),
        }
    );
    let ws = connect_with(addr, &addr.to_string(), &format!("http://{addr}"), None).await;
    println!(
        "ws: {}",
        match ws {
            Err(e) if e.contains("401") => "401".to_string(),
            Err(e) => e,
            Ok(_) => "OPEN".into(),
        }
    );
}

/// Issue 19.2 as a privilege boundary: a local uid outside the display's
/// group can read neither the screen key nor reach the daemon's socket,
/// and the display does not lend it its rights.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_user_outside_the_screen_group_cannot_drive_the_display() {
    use std::os::unix::fs::PermissionsExt;
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "CI=true runs as root: this test must run"
        );
        eprintln!("skipped: needs root to run a process as another uid");
        return;
    }
    let open = |p: &std::path::Path| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap()
    };
    let (d, _p) = Daemon::start(&[], "role = \"window\"").await;
    // The directories are open to everyone: only the files' own modes
    // (socket 0600, key 0640 root:root) keep the other uid out.
    open(d.dir.path());
    let keys = tempfile::tempdir().unwrap();
    open(keys.path());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let key = cardlink::display::ScreenKey::load_or_create(keys.path(), addr).unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(cardlink::display::serve(
        listener,
        cardlink::display::Settings {
            socket: d.socket.clone(),
            key: key.clone(),
            operator: Some(OPERATOR.into()),
            idle: IDLE,
            max_connections: 64,
            elder: false,
            speech: cardlink::protocol::Speech::Elder,
        },
        stop.clone(),
    ));
    let disp = Display { addr, key, stop };
    // The test binary, run again as uid 65534 from a place it may execute.
    let bin = tempfile::tempdir().unwrap();
    open(bin.path());
    let exe = bin.path().join("attacker");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    open(&exe);
    let spec = json!({
        "addr": addr.to_string(),
        "key": keys.path().join("screen.key"),
        "socket": d.socket,
    });
    let mut cmd = std::process::Command::new(&exe);
    cmd.args([
        "--ignored",
        "--exact",
        "as_another_local_user",
        "--nocapture",
    ])
    .env(AS_OTHER_UID, spec.to_string());
    as_nobody(&mut cmd);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    for line in ["key: denied", "socket: denied", "ws: 401"] {
        assert!(text.contains(line), "expected '{line}':\n{text}");
    }
    // The screen's own browser, with the key, binds (as the configured
    // operator); nothing else was bound.
    let mut p = page(&disp).await;
    daemon_state(&mut p, "connected").await;
    let r = ask(
        &mut p,
        1,
        json!({"cmd": "bind", "holder": card(HOLDER), "member": card(CHILD), "relation": "child", "consent": cardlink::registry::consent::CURRENT.version}),
    )
    .await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(audit_outcomes(&d.db, "bind").len(), 1);
}

/// Issue 19.2: at a window the operator comes from the display's
/// configuration, never from the page.
#[tokio::test(start_paused = true)]
async fn a_window_binds_as_its_configured_operator_never_the_pages() {
    let (d, _p) = Daemon::start(&[], "role = \"window\"").await;
    let disp = display(&d.socket).await;
    let mut p = page(&disp).await;
    daemon_state(&mut p, "connected").await;
    let r = ask(&mut p, 1, json!({"cmd": "bind", "holder": card(HOLDER), "member": card(CHILD), "relation": "child", "operator": "mallory"})).await;
    assert_eq!(r["ok"], true, "{r}");
    let r = ask(&mut p, 2, json!({"cmd": "unbind", "holder": card(HOLDER), "member": card(CHILD), "operator": "mallory"})).await;
    assert_eq!(r["ok"], true, "{r}");
    for action in ["bind", "unbind"] {
        let rows = audit_outcomes(&d.db, action);
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert!(
            rows[0].contains(&format!("operator={OPERATOR}")) && !rows[0].contains("mallory"),
            "{rows:?}"
        );
    }
    // A window screen without an operator cannot bind at all.
    let bare = display_with(&d.socket, None).await;
    let mut p = page(&bare).await;
    assert!(daemon_state(&mut p, "connected").await["operator"].is_null());
    let r = ask(&mut p, 3, json!({"cmd": "bind", "holder": card(HOLDER), "member": card(CHILD), "relation": "child", "operator": "mallory"})).await;
    assert_eq!(r["code"], "operator_required", "{r}");
    assert_eq!(audit_outcomes(&d.db, "bind").len(), 1);
}

/// Issue 19.3: a holder swiped and left; 20 s later someone else swiped;
/// the first person's records and a bind of the two were open to any page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kiosk_swipe_does_not_outlive_the_person() {
    let (d, mut ports) = Daemon::start(&[("k1", "frame", "utf-8")], "role = \"kiosk\"").await;
    let disp = display(&d.socket).await;
    let mut p = page(&disp).await;
    daemon_state(&mut p, "connected").await;
    let removed = |seq| encode_vec(seq, Cmd::CardRemoved as u8, b"").unwrap();
    ports[0]
        .write_all(&card_frame(1, HOLDER, "张伟"))
        .await
        .unwrap();
    let first = expect(&mut p, "CARD").await["swipe"].clone();
    ports[0].write_all(&removed(2)).await.unwrap();
    expect(&mut p, "REMOVED").await;
    // (The probe's 20 s pause changes nothing: the card is out.)
    ports[0]
        .write_all(&card_frame(3, CHILD, "张小明"))
        .await
        .unwrap();
    let second = expect(&mut p, "CARD").await["swipe"].clone();
    let r = ask(
        &mut p,
        1,
        json!({"cmd": "contributions", "swipe": first, "months": 12}),
    )
    .await;
    assert_eq!(r["code"], "not_in_session", "{r}");
    let r = ask(
        &mut p,
        2,
        json!({"cmd": "bind", "holder_swipe": first, "member_swipe": second, "relation": "child", "consent": cardlink::registry::consent::CURRENT.version}),
    )
    .await;
    assert_eq!(r["code"], "not_in_session", "{r}");
    // Another page, opened after the swipe, has no session at all.
    let mut other = page(&disp).await;
    daemon_state(&mut other, "connected").await;
    let r = ask(
        &mut other,
        3,
        json!({"cmd": "contributions", "swipe": second}),
    )
    .await;
    assert_eq!(r["code"], "not_in_session", "{r}");
    // The person at the screen is served.
    let r = ask(&mut p, 4, json!({"cmd": "contributions", "swipe": second})).await;
    assert_eq!(r["ok"], true, "{r}");
    // Printing the records shown (issue 23): by the session's swipe it
    // reaches cardlinkd (which has no printer here); another swipe, or a
    // number, is refused by the display.
    let r = ask(
        &mut p,
        41,
        json!({"cmd": "print_records", "swipe": second, "months": 12}),
    )
    .await;
    assert_eq!(r["code"], "printer_unavailable", "{r}");
    let r = ask(&mut p, 42, json!({"cmd": "print_records", "swipe": first})).await;
    assert_eq!(r["code"], "not_in_session", "{r}");
    let r = ask(
        &mut p,
        43,
        json!({"cmd": "print_records", "number": card(CHILD)}),
    )
    .await;
    assert_eq!(r["code"], "kiosk_requires_swipe", "{r}");
    // A bind inside one flow: the holder's card, bind_start, card out,
    // the member's card, bind.
    ports[0]
        .write_all(&card_frame(4, HOLDER, "张伟"))
        .await
        .unwrap();
    let h = expect(&mut p, "CARD").await["swipe"].clone();
    let r = ask(&mut p, 7, json!({"cmd": "bind_start"})).await;
    assert_eq!(r["ok"], true, "{r}");
    ports[0].write_all(&removed(5)).await.unwrap();
    expect(&mut p, "REMOVED").await;
    ports[0]
        .write_all(&card_frame(6, CHILD, "张小明"))
        .await
        .unwrap();
    let m = expect(&mut p, "CARD").await["swipe"].clone();
    // The page names an operator of its own: at a kiosk nobody operates,
    // and the audit row must not say someone did.
    let r = ask(
        &mut p,
        8,
        json!({"cmd": "bind", "holder_swipe": h, "member_swipe": m, "relation": "child", "operator": "mallory", "consent": cardlink::registry::consent::CURRENT.version}),
    )
    .await;
    assert_eq!(r["ok"], true, "{r}");
    assert!(
        !audit_outcomes(&d.db, "bind")[0].contains("mallory"),
        "a kiosk page named the operator of its bind: {:?}",
        audit_outcomes(&d.db, "bind")
    );
    // The flow is over: the same bind cannot be replayed.
    let r = ask(
        &mut p,
        9,
        json!({"cmd": "bind", "holder_swipe": h, "member_swipe": m, "relation": "child", "consent": cardlink::registry::consent::CURRENT.version}),
    )
    .await;
    assert_eq!(r["code"], "not_in_session", "{r}");
    assert_eq!(audit_outcomes(&d.db, "bind").len(), 1);
    assert!(
        audit_outcomes(&d.db, "bind")[0].contains(&format!(
            "consent={} ",
            cardlink::registry::consent::CURRENT.version
        )),
        "{:?}",
        audit_outcomes(&d.db, "bind")
    );
    // Issue 23: a kiosk bind the holder has not confirmed (no `consent`)
    // is refused by cardlinkd through the display, and nothing is bound.
    ports[0]
        .write_all(&card_frame(40, HOLDER, "张伟"))
        .await
        .unwrap();
    let h = expect(&mut p, "CARD").await["swipe"].clone();
    let r = ask(&mut p, 10, json!({"cmd": "bind_start"})).await;
    assert_eq!(r["ok"], true, "{r}");
    ports[0].write_all(&removed(41)).await.unwrap();
    expect(&mut p, "REMOVED").await;
    ports[0]
        .write_all(&card_frame(42, PARENT, "张父"))
        .await
        .unwrap();
    let m = expect(&mut p, "CARD").await["swipe"].clone();
    let r = ask(
        &mut p,
        11,
        json!({"cmd": "bind", "holder_swipe": h, "member_swipe": m, "relation": "parent"}),
    )
    .await;
    assert_eq!(r["code"], "consent_required", "{r}");
    assert_eq!(audit_outcomes(&d.db, "bind").len(), 1);
    // A screen whose sessions end after 1 s without a swipe or a request:
    // the display tells the page, and the swipe is of no use afterwards.
    let short = display_idle(&d.socket, None, std::time::Duration::from_secs(1)).await;
    let mut q = page(&short).await;
    daemon_state(&mut q, "connected").await;
    ports[0]
        .write_all(&card_frame(7, SPOUSE, "李娜"))
        .await
        .unwrap();
    let s = expect(&mut q, "CARD").await["swipe"].clone();
    assert_eq!(expect(&mut q, "SESSION").await["ended"], "idle");
    let r = ask(&mut q, 10, json!({"cmd": "contributions", "swipe": s})).await;
    assert_eq!(r["code"], "not_in_session", "{r}");
    let r = ask(&mut q, 11, json!({"cmd": "bind_start"})).await;
    assert_eq!(r["code"], "not_in_session", "{r}");
}

/// Collects a page's messages up to the reply to `id`.
async fn until_reply(p: &mut Page, id: u64) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let v = next(p).await;
        let done = v["class"] == "REPLY" && v["id"] == id;
        seen.push(v);
        if done {
            return seen;
        }
    }
}

/// Issue 19.4: a bind with a 70 KB relation passed the display and the
/// daemon closed the display's only link: every page went offline.
#[tokio::test(start_paused = true)]
async fn one_pages_oversized_request_leaves_every_page_online() {
    let (d, mut ports) = Daemon::start(&[("w1", "frame", "utf-8")], "role = \"window\"").await;
    let disp = display(&d.socket).await;
    let mut a = page(&disp).await;
    let mut b = page(&disp).await;
    daemon_state(&mut a, "connected").await;
    daemon_state(&mut b, "connected").await;
    ports[0]
        .write_all(&card_frame(1, HOLDER, "张伟"))
        .await
        .unwrap();
    let swipe = expect(&mut a, "CARD").await["swipe"].clone();
    expect(&mut b, "CARD").await;
    let big = "x".repeat(70 * 1024);
    let r = ask(
        &mut a,
        1,
        json!({"cmd": "bind", "holder_swipe": swipe, "member_swipe": swipe, "relation": big, "consent": cardlink::registry::consent::CURRENT.version}),
    )
    .await;
    assert_eq!(r["code"], "line_too_long", "{r}");
    // Both pages still have the daemon: nothing went offline.
    for (p, id) in [(&mut a, 2), (&mut b, 3)] {
        p.send(Ws::Text(
            json!({"cmd": "status", "id": id}).to_string().into(),
        ))
        .await
        .unwrap();
        let seen = until_reply(p, id).await;
        assert!(
            !seen
                .iter()
                .any(|v| v["class"] == "DISPLAY" && v["daemon"] == "offline"),
            "{seen:?}"
        );
        assert_eq!(seen.last().unwrap()["ok"], true, "{seen:?}");
    }
    // A message far over the limit closes that page's connection only.
    let huge = format!(
        "{{\"cmd\":\"status\",\"pad\":\"{}\"}}",
        "y".repeat(400 * 1024)
    );
    let _ = a.send(Ws::Text(huge.into())).await;
    loop {
        match a.next().await {
            None | Some(Err(_)) | Some(Ok(Ws::Close(_))) => break,
            Some(Ok(_)) => continue,
        }
    }
    let r = ask(&mut b, 4, json!({"cmd": "status"})).await;
    assert_eq!(r["ok"], true, "{r}");
}

/// Issue 19.5: after a SIGHUP that changed the role the display kept the
/// old one (a kiosk page got full SSNs; a window could not type numbers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_the_role_reaches_the_pages_at_once() {
    let (mut d, mut ports) = Daemon::start(&[("r1", "frame", "utf-8")], "role = \"window\"").await;
    let privileged = privileged_config(&d.config);
    d.reload(privileged).await;
    let disp = display(&d.socket).await;
    let mut p = page(&disp).await;
    assert_eq!(daemon_state(&mut p, "connected").await["role"], "window");
    ports[0]
        .write_all(&card_frame(1, HOLDER, "张伟"))
        .await
        .unwrap();
    assert_eq!(expect(&mut p, "CARD").await["ssn"], demo_ssn_full(HOLDER));
    let kiosk = d.config.replace("role = \"window\"", "role = \"kiosk\"");
    d.reload(kiosk).await;
    role_becomes(&mut p, "kiosk").await;
    ports[0]
        .write_all(&card_frame(2, SPOUSE, "李娜"))
        .await
        .unwrap();
    let c = expect(&mut p, "CARD").await;
    assert_eq!(c["ssn"], ssn(SPOUSE).masked().to_string(), "{c}");
    assert!(
        !c.to_string().contains("李娜") && !c.to_string().contains("张伟"),
        "{c}"
    );
    let r = ask(&mut p, 1, json!({"cmd": "lookup", "number": card(SPOUSE)})).await;
    assert_eq!(r["code"], "manual_entry_not_allowed", "{r}");
    let window = d.config.replace("role = \"kiosk\"", "role = \"window\"");
    d.reload(window).await;
    role_becomes(&mut p, "window").await;
    let r = ask(&mut p, 2, json!({"cmd": "lookup", "number": card(SPOUSE)})).await;
    assert_eq!(r["ok"], true, "{r}");
}

/// Issue 19.8: `/healthz` answered any Host with the role and the socket
/// path; responses lacked `nosniff` and a referrer policy.
#[tokio::test(start_paused = true)]
async fn every_response_is_for_this_host_only_and_says_nosniff() {
    let (d, _p) = Daemon::start(&[], "").await;
    let disp = display(&d.socket).await;
    let a = disp.addr;
    let r = http(
        a,
        "GET /healthz HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 421"), "{r}");
    assert!(!r.contains("daemon") && !r.contains(".sock"), "{r}");
    for path in ["/", "/app.js", "/healthz"] {
        let r = http_get(a, path).await.to_ascii_lowercase();
        assert!(r.contains("x-content-type-options: nosniff"), "{path}: {r}");
        assert!(r.contains("referrer-policy: no-referrer"), "{path}: {r}");
        assert!(!r.contains(".sock"), "{path}: {r}");
    }
}

/// Issue 19.7: 1,100 connections that never finished their request
/// headers blocked every new request of a display started without
/// `LimitNOFILE=` for 55 s. Slow headers are cut after a deadline,
/// connections are bounded and the soft limit is raised.
#[test]
fn slow_headers_do_not_block_the_display() {
    use std::io::{BufRead, Read, Write};
    cardlink::fds::raise_nofile();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cardlink-display"));
    cmd.arg("--socket")
        .arg(dir.path().join("no-daemon.sock"))
        .args(["--listen", "127.0.0.1:0", "--key-dir"])
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped());
    soft_nofile(&mut cmd, 1024);
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let _child = Kill(child);
    let mut lines = std::io::BufReader::new(stderr).lines();
    let addr: SocketAddr = loop {
        let l = lines.next().expect("the display exited").unwrap();
        if let Some(rest) = l.split("addr=").nth(1).filter(|_| l.contains("listening")) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let slow: Vec<std::net::TcpStream> = (0..1100)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: x").unwrap();
            s
        })
        .collect();
    // A page's request is answered...
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(
        s,
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    // ...and the slow ones are closed by the display.
    for mut s in slow.into_iter().take(3) {
        s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        let mut buf = Vec::new();
        match s.read_to_end(&mut buf) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("a slow connection was not closed: {e}"),
        }
        assert!(
            !String::from_utf8_lossy(&buf).contains("200 OK"),
            "a request without its end was served"
        );
    }
}

/// A daemon that does not say its role (its `status` fails): the display
/// treats its pages as a kiosk's, masking what the daemon sends in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_that_does_not_say_its_role_gets_a_kiosk_display() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("fake.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let full = demo_ssn_full(HOLDER);
    let swiped = json!({"class":"CARD","reader":"r1","swipe":1,"source":"ic","ssn":full,
        "card_no":card(HOLDER),"pan":null,"name":"张伟","outcome":"ok","role":"none",
        "card_status":"active","payer":null,"relation":null,"balance_fen":null,"members":[]});
    let fake = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let (r, mut w) = s.into_split();
        let mut lines = BufReader::new(r).lines();
        w.write_all(b"{\"class\":\"VERSION\",\"release\":\"0.1.0\",\"proto\":1}\n")
            .await
            .unwrap();
        // The display asks for the status: refused.
        let req: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
        let reply =
            json!({"class":"REPLY","id":req["id"],"ok":false,"code":"internal","message":"no"});
        w.write_all(format!("{reply}\n").as_bytes()).await.unwrap();
        // Then, for each request, a card with the full number and a reply.
        while let Ok(Some(l)) = lines.next_line().await {
            let id = serde_json::from_str::<Value>(&l).unwrap()["id"].clone();
            let reply = json!({"class":"REPLY","id":id,"ok":true,"result":{}});
            w.write_all(format!("{swiped}\n{reply}\n").as_bytes())
                .await
                .unwrap();
        }
    });
    let disp = display(&socket).await;
    let mut p = page(&disp).await;
    daemon_state(&mut p, "connected").await;
    // Each request makes the fake daemon send the card again.
    p.send(Ws::Text(
        json!({"cmd": "status", "id": 1}).to_string().into(),
    ))
    .await
    .unwrap();
    let c = expect(&mut p, "CARD").await;
    assert_eq!(c["ssn"], ssn(HOLDER).masked().to_string(), "{c}");
    assert!(!c.to_string().contains("张伟"), "{c}");
    let r = ask(&mut p, 2, json!({"cmd": "lookup", "number": card(HOLDER)})).await;
    assert_eq!(r["code"], "manual_entry_not_allowed", "{r}");
    drop(p);
    drop(disp);
    fake.abort();
}
