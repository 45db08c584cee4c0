//! `cardlink-display`: the kiosk and clerk screens, served to a local
//! browser.
//!
//! It is a client of cardlinkd's display socket ([`crate::client`]) and an
//! HTTP server on a loopback address: `GET /` is the screen (one page, its
//! script and style embedded in the binary; nothing is fetched from the
//! network), `GET /healthz` the daemon connection state as JSON, and `/ws`
//! a WebSocket that relays the daemon's events to the page and the page's
//! requests to the daemon.
//!
//! Safety rules, whatever the browser or the uid the display runs as:
//! * the WebSocket answers only to its own origin: `Host` must name the
//!   listening address (or `localhost`/`127.0.0.1`/`[::1]` with its port)
//!   and `Origin` must be `http://` + such a host, so a page of another
//!   origin, or a DNS-rebinding name, cannot drive binds;
//! * at a kiosk every SSN, name, card number and PAN is masked again here
//!   before it reaches the page, and the page may only do what a kiosk
//!   allows (bind and inquire by swipe, status).
//!
//! To the page it adds one message class, `DISPLAY`:
//! `{"class":"DISPLAY","daemon":"connected"|"offline","role":"kiosk"|"window"|null}`,
//! sent on connect and whenever the daemon connection changes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::client::{Client, Requester};
use crate::protocol::{Card, ErrorCode, Message, Parties, Reply, Request};

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// Messages queued per page; a page further behind misses events (it shows
/// the next swipe anyway).
const PAGE_QUEUE: usize = 256;
/// First and longest delay between attempts to reach cardlinkd.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(5));

/// Errors that stop the display.
#[derive(Debug, thiserror::Error)]
pub enum DisplayError {
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Serve(#[from] std::io::Error),
}

/// The daemon connection as the page and `/healthz` see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// `connected` or `offline`.
    pub daemon: &'static str,
    /// `kiosk` or `window` (from the daemon's status), when connected.
    pub role: Option<String>,
    /// The socket the display talks to.
    pub socket: String,
}

struct Shared {
    health: watch::Sender<Health>,
    requester: RwLock<Option<Requester>>,
    /// Lines for every page (already masked for the role).
    lines: broadcast::Sender<String>,
    /// The last `READER` line of each reader, for pages that connect later.
    readers: RwLock<std::collections::BTreeMap<String, String>>,
    /// Host names the WebSocket accepts (`host:port`).
    hosts: Vec<String>,
}

impl Shared {
    fn kiosk(&self) -> bool {
        self.health.borrow().role.as_deref() == Some("kiosk")
    }
}

/// The hosts a browser may use to reach `addr`.
fn allowed_hosts(addr: SocketAddr) -> Vec<String> {
    let port = addr.port();
    let mut hosts = vec![addr.to_string()];
    if addr.ip().is_loopback() || addr.ip().is_unspecified() {
        hosts.push(format!("localhost:{port}"));
        hosts.push(format!("127.0.0.1:{port}"));
        hosts.push(format!("[::1]:{port}"));
    }
    hosts
}

/// Serves the screens on `listener` for the daemon at `socket`, until
/// `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    socket: PathBuf,
    shutdown: CancellationToken,
) -> Result<(), DisplayError> {
    let addr = listener.local_addr()?;
    let (health, _) = watch::channel(Health {
        daemon: "offline",
        role: None,
        socket: socket.display().to_string(),
    });
    let (lines, _) = broadcast::channel(PAGE_QUEUE);
    let shared = Arc::new(Shared {
        health,
        requester: RwLock::new(None),
        lines,
        readers: RwLock::default(),
        hosts: allowed_hosts(addr),
    });
    tokio::spawn(daemon_link(socket, shared.clone(), shutdown.clone()));
    let app = Router::new()
        .route("/", get(index))
        .route(
            "/app.js",
            get(|| asset(APP_JS, "text/javascript; charset=utf-8")),
        )
        .route(
            "/app.css",
            get(|| asset(APP_CSS, "text/css; charset=utf-8")),
        )
        .route("/healthz", get(healthz))
        .route("/ws", get(ws))
        .with_state(shared);
    tracing::info!(%addr, "cardlink-display listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
}

async fn index() -> Response {
    asset(INDEX_HTML, "text/html; charset=utf-8").await
}

async fn asset(body: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-store"),
            // Nothing from elsewhere: no CDN, no fonts, no frames.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; connect-src 'self'; frame-ancestors 'none'",
            ),
        ],
        body,
    )
        .into_response()
}

async fn healthz(State(s): State<Arc<Shared>>) -> Response {
    axum::Json(s.health.borrow().clone()).into_response()
}

/// Whether the handshake comes from a page of this display.
fn same_origin(s: &Shared, headers: &HeaderMap) -> bool {
    let get = |h| headers.get(h).and_then(|v| v.to_str().ok());
    let Some(host) = get(header::HOST) else {
        return false;
    };
    let Some(origin) = get(header::ORIGIN) else {
        return false;
    };
    s.hosts.iter().any(|h| h == host) && origin.strip_prefix("http://") == Some(host)
}

async fn ws(State(s): State<Arc<Shared>>, headers: HeaderMap, up: WebSocketUpgrade) -> Response {
    if !same_origin(&s, &headers) {
        tracing::warn!(
            origin = ?headers.get(header::ORIGIN),
            host = ?headers.get(header::HOST),
            "WebSocket from another origin refused"
        );
        return (
            StatusCode::FORBIDDEN,
            "this screen answers only its own page\n",
        )
            .into_response();
    }
    up.on_upgrade(move |socket| page(socket, s))
}

fn line(v: &impl Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn display_line(h: &Health) -> String {
    line(&serde_json::json!({"class": "DISPLAY", "daemon": h.daemon, "role": h.role}))
}

/// One page: relays lines to it and its requests to the daemon.
async fn page(mut socket: WebSocket, s: Arc<Shared>) {
    // Subscribed before the snapshot: a change in between may come twice
    // (harmless, a state), never not at all.
    let mut lines = s.lines.subscribe();
    let mut health = s.health.subscribe();
    let mut first = vec![display_line(&health.borrow_and_update())];
    first.extend(
        s.readers
            .read()
            .map(|r| r.values().cloned().collect::<Vec<_>>())
            .unwrap_or_default(),
    );
    for l in first {
        if socket.send(WsMessage::Text(l.into())).await.is_err() {
            return;
        }
    }
    loop {
        let out = tokio::select! {
            l = lines.recv() => match l {
                Ok(l) => l,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            changed = health.changed() => {
                if changed.is_err() {
                    return;
                }
                display_line(&health.borrow_and_update())
            }
            m = socket.recv() => match m {
                Some(Ok(WsMessage::Text(t))) => line(&answer(&s, t.as_str()).await),
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => continue,
            },
        };
        if socket.send(WsMessage::Text(out.into())).await.is_err() {
            return;
        }
    }
}

/// What a page may ask at a kiosk: bind and inquire by swipe, status.
fn kiosk_allows(req: &Request) -> Result<(), (ErrorCode, &'static str)> {
    let by_number = |p: &Parties| p.holder.is_some() || p.member.is_some();
    match req {
        Request::Status { .. } => Ok(()),
        Request::Bind { parties, .. } if !by_number(parties) => Ok(()),
        Request::Contributions { number: None, .. } => Ok(()),
        Request::Lookup { .. } => Err((
            ErrorCode::ManualEntryNotAllowed,
            "manual entry is not allowed at a kiosk; swipe the card",
        )),
        _ => Err((
            ErrorCode::KioskRequiresSwipe,
            "at a kiosk this is done with swiped cards only",
        )),
    }
}

/// A page's request line, answered by the daemon or refused here.
async fn answer(s: &Shared, text: &str) -> Message {
    let req = match crate::protocol::parse_request(text.as_bytes()) {
        Ok(r) => r,
        Err(bad) => {
            return Message::Reply(Reply::err(
                bad.id.unwrap_or(Value::Null),
                bad.code,
                bad.message,
            ))
        }
    };
    let id = req.id().clone();
    // Raw captures hold personal data: never started from a web page, in
    // either role, whatever uid the display runs as.
    if matches!(req, Request::Capture { .. }) {
        return Message::Reply(Reply::err(
            id,
            ErrorCode::NotPrivileged,
            "captures are started with cardlinkctl, not from a screen".into(),
        ));
    }
    if s.kiosk() {
        if let Err((code, why)) = kiosk_allows(&req) {
            return Message::Reply(Reply::err(id, code, why.into()));
        }
    }
    let requester = s
        .requester
        .read()
        .map(|r| r.clone())
        .unwrap_or_else(|p| p.into_inner().clone());
    let Some(requester) = requester else {
        return Message::Reply(Reply::err(
            id,
            ErrorCode::DaemonOffline,
            "cardlinkd cannot be reached".into(),
        ));
    };
    match requester.request(req).await {
        Ok(mut reply) => {
            reply.id = id;
            if s.kiosk() {
                mask_reply(&mut reply);
            }
            Message::Reply(reply)
        }
        Err(e) => Message::Reply(Reply::err(id, ErrorCode::DaemonOffline, e.to_string())),
    }
}

fn mask_ssn(s: &mut String) {
    *s = crate::mask::mask_middle(s, 6, 4);
}

/// Masks a card for a kiosk page, whatever the daemon sent.
fn mask_card(c: &mut Card) {
    if let Some(s) = c.ssn.as_mut() {
        mask_ssn(s);
    }
    if let Some(n) = c.name.as_mut() {
        *n = crate::mask::name(n);
    }
    if let Some(n) = c.card_no.as_mut() {
        *n = crate::mask::card_no(n);
    }
    if let Some(n) = c.pan.as_mut() {
        *n = crate::mask::pan(n);
    }
    if let Some(p) = c.payer.as_mut() {
        mask_ssn(&mut p.ssn);
        p.name = crate::mask::name(&p.name);
    }
    for m in &mut c.members {
        mask_ssn(&mut m.ssn);
        m.name = crate::mask::name(&m.name);
    }
}

fn mask_reply(r: &mut Reply) {
    let Some(result) = r.result.take() else {
        return;
    };
    r.result = Some(match serde_json::from_value::<Message>(result.clone()) {
        Ok(Message::Card(mut c)) => {
            mask_card(&mut c);
            serde_json::to_value(Message::Card(c)).unwrap_or(Value::Null)
        }
        _ => result,
    });
}

/// Keeps a connection to cardlinkd: relays its events (masked at a kiosk)
/// and reconnects with backoff; the health state says which.
async fn daemon_link(socket: PathBuf, s: Arc<Shared>, shutdown: CancellationToken) {
    let mut delay = BACKOFF.0;
    loop {
        if let Ok(mut c) = Client::connect(&socket).await {
            let role = c.status().await.ok().map(|st| st.role);
            delay = BACKOFF.0;
            if let Ok(mut r) = s.requester.write() {
                *r = Some(c.requester());
            }
            tracing::info!(socket = %socket.display(), role = ?role, "connected to cardlinkd");
            s.health.send_modify(|h| {
                h.daemon = "connected";
                h.role = role;
            });
            loop {
                let m = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    m = c.next_event() => m,
                };
                let Some(mut m) = m else { break };
                if s.kiosk() {
                    if let Message::Card(card) = &mut m {
                        mask_card(card);
                    }
                }
                let l = line(&m);
                if let Message::Reader(r) = &m {
                    if let Ok(mut readers) = s.readers.write() {
                        readers.insert(r.reader.clone(), l.clone());
                    }
                }
                let _ = s.lines.send(l);
            }
            tracing::warn!("cardlinkd closed the connection; reconnecting");
            if let Ok(mut r) = s.requester.write() {
                *r = None;
            }
            // The role stays as it was: a kiosk screen stays a kiosk screen
            // (and keeps masking) while the daemon is away.
            s.health.send_modify(|h| h.daemon = "offline");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(BACKOFF.1);
    }
}
