//! `cardlink-display`: the kiosk and clerk screens, served to a local
//! browser.
//!
//! It is a client of cardlinkd's display socket ([`crate::client`]) and an
//! HTTP server on a loopback address: `GET /` is the screen (one page, its
//! script and style embedded in the binary; nothing is fetched from the
//! network), `POST /login` takes the screen key, `GET /healthz` says
//! whether the daemon is reachable, and `/ws` is a WebSocket that relays
//! the daemon's events to the page and the page's requests to the daemon.
//!
//! Who may do what, whatever the browser or the uid the display runs as:
//! * every request must name this display in `Host` (no DNS rebinding);
//! * the WebSocket answers only its own origin (`Origin`), and only a
//!   browser holding the screen key ([`key`]) as a cookie: a local process
//!   that cannot read the key file cannot drive binds, whatever headers it
//!   forges;
//! * at a window, binds and unbinds carry the operator of the display's
//!   configuration (`--operator`), never one a page names; at a kiosk
//!   they carry none (nobody operates a kiosk);
//! * at a kiosk every SSN, name, card number and PAN is masked again here
//!   before it reaches the page, the page may only do what a kiosk allows
//!   (bind and inquire by swipe, status), and only within its session
//!   ([`session`]);
//! * each page's requests are held to the daemon's limits here, so one
//!   page cannot break the display's link to the daemon for all others;
//! * connections are bounded, and a connection that has not sent its
//!   request headers within [`HEADER_TIMEOUT`] is closed.
//!
//! To the page it adds one message class, `DISPLAY`
//! ([`crate::protocol::DisplayMsg`]), sent on connect and whenever the
//! daemon link or the role changes, and three requests, `bind_start`,
//! `end` and `keep` ([`crate::protocol::PageRequest`]).

pub mod key;
pub mod session;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Request as HttpRequest, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{broadcast, watch, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::client::Requester;
use crate::protocol::{
    BindStarted, BindStep, Card, CardResult, DaemonLink, DisplayMsg, Ended, ErrorCode, Kept,
    Message, PageRequest, Parties, Reply, ReplyResult, Request, Role, Sentence, SessionEnd,
    SessionMsg, Speech, WireOutcome, MAX_REQUEST,
};
pub use key::ScreenKey;
use session::Session;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
/// `/codes.js`, made once from the code table.
static CODES_JS: std::sync::LazyLock<String> = std::sync::LazyLock::new(codes_js);

/// Messages queued per page; a page further behind misses events (it shows
/// the next swipe anyway).
const PAGE_QUEUE: usize = 256;
/// A connection that has not sent its request headers by then is closed
/// (a local browser sends them at once).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Descriptors kept for the daemon link and the process itself when the
/// connection limit is derived from `RLIMIT_NOFILE`.
pub const RESERVED_FDS: u64 = 32;

/// Errors that stop the display.
#[derive(Debug, thiserror::Error)]
pub enum DisplayError {
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Serve(#[from] std::io::Error),
    /// The screen key could not be read or made.
    #[error(transparent)]
    Key(#[from] key::KeyError),
}

/// How a display serves its screens.
#[derive(Debug, Clone)]
pub struct Settings {
    /// cardlinkd's display socket.
    pub socket: PathBuf,
    /// The key a page must present to open `/ws`.
    pub key: ScreenKey,
    /// The operator of a window screen (binds and unbinds are refused
    /// without one).
    pub operator: Option<String>,
    /// A kiosk session ends after this long without a swipe or a request.
    pub idle: Duration,
    /// Connections served at once (more wait to be accepted).
    pub max_connections: usize,
    /// Kiosk pages start in 长辈模式 (`--elder`).
    pub elder: bool,
    /// When kiosk pages speak (`--speech`).
    pub speech: Speech,
}

/// The daemon connection as the pages see it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Health {
    daemon: DaemonLink,
    role: Option<Role>,
}

/// What the daemon sent, as a page task needs to know it.
#[derive(Debug)]
enum Seen {
    /// A card read with its swipe id; `usable` when it resolved `ok`.
    Card { swipe: u64, usable: bool },
    /// A card was taken out.
    Removed,
    /// A reader's state (kept for pages that connect later).
    Reader(String),
    /// Anything else.
    Other,
}

/// One message for every page (already masked for the role).
#[derive(Debug)]
struct Relayed {
    line: String,
    seen: Seen,
}

struct Shared {
    settings: Settings,
    health: watch::Sender<Health>,
    requester: RwLock<Option<Requester>>,
    lines: broadcast::Sender<Arc<Relayed>>,
    /// The last `READER` line of each reader, for pages that connect later.
    readers: RwLock<std::collections::BTreeMap<String, String>>,
    /// Host names the server answers to (`host:port`).
    hosts: Vec<String>,
    /// Pages connected (WebSockets open), for `cardlink_display_pages`.
    pages: std::sync::atomic::AtomicU64,
}

/// Counts a page while its WebSocket is served, whichever way it ends.
struct PageCounted<'a>(&'a std::sync::atomic::AtomicU64);

impl<'a> PageCounted<'a> {
    fn new(n: &'a std::sync::atomic::AtomicU64) -> Self {
        n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        PageCounted(n)
    }
}

impl Drop for PageCounted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Shared {
    /// Whether the pages get the kiosk's treatment (masking, swipes only,
    /// sessions): everywhere but at a window the daemon said it is, so a
    /// daemon that does not say its role is treated as a kiosk.
    fn kiosk(&self) -> bool {
        self.health.borrow().role != Some(Role::Window)
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

/// How many connections to serve at once: `wanted`, but never so many
/// that the process runs out of descriptors (`RLIMIT_NOFILE`, raised to
/// its hard limit first) for its daemon link.
pub fn connection_limit(wanted: usize) -> usize {
    crate::fds::client_budget(wanted, RESERVED_FDS)
}

/// Serves the screens on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    settings: Settings,
    shutdown: CancellationToken,
) -> Result<(), DisplayError> {
    serve_with_metrics(listener, None, settings, shutdown).await
}

/// What the display measures for Prometheus (`--metrics-listen`):
/// `cardlink_display_pages` (WebSockets open), `cardlink_display_daemon_up`
/// (1 while linked to cardlinkd) and `cardlink_build_info`. No personal
/// data: two numbers and the release.
fn metrics_render(s: Arc<Shared>) -> crate::metrics::Render {
    use prometheus_client::metrics::gauge::Gauge;
    let mut registry = prometheus_client::registry::Registry::default();
    let (pages, daemon_up) = (Gauge::<i64>::default(), Gauge::<i64>::default());
    registry.register(
        "cardlink_display_pages",
        "Pages (browser WebSockets) connected to the display",
        pages.clone(),
    );
    registry.register(
        "cardlink_display_daemon_up",
        "1 while the display is connected to cardlinkd's socket, else 0",
        daemon_up.clone(),
    );
    crate::metrics::register_build_info(&mut registry);
    Arc::new(move || {
        let n = s.pages.load(std::sync::atomic::Ordering::Relaxed);
        pages.set(i64::try_from(n).unwrap_or(i64::MAX));
        daemon_up.set(i64::from(s.health.borrow().daemon == DaemonLink::Connected));
        crate::metrics::encode(&registry)
    })
}

/// [`serve`], and the display's metrics on `metrics` when given.
pub async fn serve_with_metrics(
    listener: tokio::net::TcpListener,
    metrics: Option<tokio::net::TcpListener>,
    settings: Settings,
    shutdown: CancellationToken,
) -> Result<(), DisplayError> {
    let addr = listener.local_addr()?;
    let (health, _) = watch::channel(Health {
        daemon: DaemonLink::Offline,
        role: None,
    });
    let (lines, _) = broadcast::channel(PAGE_QUEUE);
    let max_connections = settings.max_connections.max(1);
    let shared = Arc::new(Shared {
        settings,
        health,
        requester: RwLock::new(None),
        lines,
        readers: RwLock::default(),
        hosts: allowed_hosts(addr),
        pages: std::sync::atomic::AtomicU64::new(0),
    });
    tokio::spawn(daemon_link(shared.clone(), shutdown.clone()));
    if let Some(m) = metrics {
        tokio::spawn(crate::metrics::serve(
            m,
            metrics_render(shared.clone()),
            shutdown.clone(),
        ));
    }
    let app = Router::new()
        .route("/", get(index))
        .route(
            "/app.js",
            get(|| asset(APP_JS, "text/javascript; charset=utf-8")),
        )
        .route(
            "/codes.js",
            get(|| asset(CODES_JS.as_str(), "text/javascript; charset=utf-8")),
        )
        .route(
            "/app.css",
            get(|| asset(APP_CSS, "text/css; charset=utf-8")),
        )
        .route("/login", post(login))
        .route("/healthz", get(healthz))
        .route("/ws", get(ws))
        .layer(axum::middleware::from_fn_with_state(shared.clone(), guard))
        .with_state(shared.clone());
    tracing::info!(%addr, max_connections, "cardlink-display listening");
    accept(listener, app, max_connections, shared, shutdown).await;
    Ok(())
}

/// Accepts connections, at most `max` at once, each served by hyper with
/// a deadline for its request headers.
async fn accept(
    listener: tokio::net::TcpListener,
    app: Router,
    max: usize,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let slots = Arc::new(Semaphore::new(max));
    let mut full_logged = false;
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(s) => s,
            Err(_) => {
                if !full_logged {
                    tracing::warn!(max, "connection limit reached; new connections wait");
                    full_logged = true;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    s = slots.clone().acquire_owned() => match s {
                        Ok(s) => s,
                        Err(_) => break,
                    },
                }
            }
        };
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        full_logged = false;
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
                }
            }
            drop(slot);
        });
    }
    drop(shared);
}

/// Every response: only for this display's own host names, and with
/// headers that keep browsers from sniffing types or leaking the URL.
async fn guard(State(s): State<Arc<Shared>>, req: HttpRequest, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    let mut response = if host.is_some_and(|h| s.hosts.iter().any(|a| a == h)) {
        next.run(req).await
    } else {
        tracing::warn!(host = ?host, "request for another host refused");
        (StatusCode::MISDIRECTED_REQUEST, "unknown host\n").into_response()
    };
    let h = response.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The page's tables of sentences and labels, as a script it loads before
/// its own: every [`ErrorCode`]'s sentence ([`ErrorCode::sentence`]) and
/// every relation's label ([`crate::protocol::relation_label`]), in
/// Chinese and English, and the consent statement a holder confirms
/// before a kiosk bind ([`crate::registry::consent::CURRENT`]). The one table is Rust's; the page keeps no copy.
pub fn codes_js() -> String {
    let entry =
        |key: &str, s: Sentence| format!("  {}: [{}, {}],\n", line(&key), line(&s.zh), line(&s.en));
    let mut out = String::from(
        "// Made by cardlink-display from its code table (protocol::ErrorCode,\n\
         // registry::Relation); the page keeps no copy of its own.\n\
         \"use strict\";\n\nconst SENTENCES = {\n",
    );
    for c in ErrorCode::ALL {
        if let Some(s) = c.sentence() {
            out += &entry(c.as_str(), s);
        }
    }
    out += "};\n\n// In the order of the bind screen's buttons.\nconst RELATIONS = {\n";
    for r in crate::registry::Relation::ALL {
        out += &entry(r.as_str(), crate::protocol::relation_label(r));
    }
    out += "};\n";
    // The statement a holder confirms before a kiosk bind; `{days}` in
    // `cooldown` is the province's cooldown (status `policy`).
    let c = crate::registry::consent::CURRENT;
    out += &format!(
        "\n// registry::consent::CURRENT: shown before a kiosk bind; its version goes with the bind.\nconst CONSENT = {{\n  version: {},\n  sentences: [\n",
        line(&c.version)
    );
    for (zh, en) in c.sentences {
        out += &format!("    [{}, {}],\n", line(zh), line(en));
    }
    out += &format!(
        "  ],\n  cooldown: [{}, {}],\n}};\n",
        line(&c.cooldown.0),
        line(&c.cooldown.1)
    );
    out
}

async fn index() -> Response {
    asset(INDEX_HTML, "text/html; charset=utf-8").await
}

async fn asset(body: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
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

/// `/healthz`: whether the daemon is reachable; nothing about the box.
async fn healthz(State(s): State<Arc<Shared>>) -> Response {
    #[derive(Serialize)]
    struct Healthz {
        daemon: DaemonLink,
    }
    axum::Json(Healthz {
        daemon: s.health.borrow().daemon,
    })
    .into_response()
}

#[derive(serde::Deserialize)]
struct Login {
    key: String,
}

/// `POST /login` (from `screen.html`): the key becomes the browser's
/// cookie for this display.
async fn login(State(s): State<Arc<Shared>>, form: axum::Form<Login>) -> Response {
    if !s.settings.key.matches(&form.key) {
        tracing::warn!("login with a wrong screen key refused");
        return (StatusCode::FORBIDDEN, "wrong screen key\n").into_response();
    }
    let cookie = format!(
        "{}={}; Path=/; HttpOnly; SameSite=Strict",
        key::COOKIE,
        s.settings.key.expose()
    );
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/".to_string()),
            (header::SET_COOKIE, cookie),
        ],
    )
        .into_response()
}

/// Whether the handshake comes from a page of this display.
fn same_origin(s: &Shared, headers: &HeaderMap) -> bool {
    let get = |h| headers.get(h).and_then(|v| v.to_str().ok());
    let (Some(host), Some(origin)) = (get(header::HOST), get(header::ORIGIN)) else {
        return false;
    };
    s.hosts.iter().any(|h| h == host) && origin.strip_prefix("http://") == Some(host)
}

/// Whether the handshake carries the screen key.
fn has_key(s: &Shared, headers: &HeaderMap) -> bool {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|c| s.settings.key.in_cookie_header(c))
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
    if !has_key(&s, &headers) {
        tracing::warn!("WebSocket without the screen key refused");
        return (
            StatusCode::UNAUTHORIZED,
            "this screen answers only a browser logged in with its screen key\n",
        )
            .into_response();
    }
    // A longer message closes this page's connection only; a request the
    // daemon would refuse as too long is refused here (`Requester`).
    // Bounded, but above the daemon's own limit, so that a page that sends
    // a little too much gets `line_too_long` rather than a closed socket.
    up.max_message_size(4 * MAX_REQUEST)
        .max_frame_size(4 * MAX_REQUEST)
        .on_upgrade(move |socket| page(socket, s))
}

fn line(v: &impl Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn display_line(s: &Shared, h: &Health) -> String {
    line(&Message::Display(DisplayMsg {
        daemon: h.daemon,
        role: h.role,
        operator: s.settings.operator.clone(),
        idle_s: s.settings.idle.as_secs(),
        elder: s.settings.elder,
        speech: s.settings.speech,
    }))
}

/// One page: relays lines to it and its requests to the daemon, and keeps
/// its kiosk session.
async fn page(mut socket: WebSocket, s: Arc<Shared>) {
    let _counted = PageCounted::new(&s.pages);
    // Subscribed before the snapshot: a change in between may come twice
    // (harmless, a state), never not at all.
    let mut lines = s.lines.subscribe();
    let mut health = s.health.subscribe();
    let mut session = Session::new(s.settings.idle, s.settings.elder);
    let mut first = vec![display_line(&s, &health.borrow_and_update())];
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
        let deadline = session.deadline();
        let out = tokio::select! {
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => {
                if !session.expire_now() {
                    continue;
                }
                line(&Message::Session(SessionMsg {
                    ended: SessionEnd::Idle,
                }))
            }
            l = lines.recv() => match l {
                Ok(r) => {
                    match r.seen {
                        Seen::Card { swipe, usable } => session.card(swipe, usable),
                        Seen::Removed => session.removed(),
                        Seen::Reader(_) | Seen::Other => {}
                    }
                    r.line.clone()
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            changed = health.changed() => {
                if changed.is_err() {
                    return;
                }
                // A new role (or a daemon that came back) starts afresh.
                session.end();
                display_line(&s, &health.borrow_and_update())
            }
            m = socket.recv() => match m {
                Some(Ok(WsMessage::Text(t))) => {
                    line(&answer(&s, &mut session, t.as_str()).await)
                }
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => continue,
            },
        };
        if socket.send(WsMessage::Text(out.into())).await.is_err() {
            return;
        }
    }
}

/// What a page may ask at a kiosk: bind, inquire and print records by
/// swipe, status.
fn kiosk_allows(req: &Request) -> Result<(), (ErrorCode, &'static str)> {
    let by_number = |p: &Parties| p.holder.is_some() || p.member.is_some();
    match req {
        Request::Status { .. } => Ok(()),
        Request::Bind { parties, .. } if !by_number(parties) => Ok(()),
        Request::Contributions { number: None, .. } => Ok(()),
        Request::PrintRecords { number: None, .. } => Ok(()),
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

/// A kiosk request checked against the page's session.
fn in_session(session: &mut Session, req: &Request) -> Result<(), session::Refused> {
    match req {
        Request::Contributions {
            swipe: Some(swipe), ..
        }
        | Request::PrintRecords {
            swipe: Some(swipe), ..
        } => session.records(*swipe),
        Request::Bind { parties, .. } => match (parties.holder_swipe, parties.member_swipe) {
            (Some(h), Some(m)) => session.bind(h, m),
            _ => Err(session::Refused::NotThisBind),
        },
        _ => Ok(()),
    }
}

fn refuse(id: &Value, code: ErrorCode, message: impl Into<String>) -> Message {
    Message::Reply(Reply::err(id.clone(), code, message.into()))
}

/// A page's request line, answered by the daemon or refused here.
async fn answer(s: &Shared, session: &mut Session, text: &str) -> Message {
    let req = match crate::protocol::parse_page_request(text.as_bytes()) {
        Ok(r) => r,
        Err(bad) => return refuse(&bad.id.unwrap_or(Value::Null), bad.code, bad.message),
    };
    let id = req.id().clone();
    let kiosk = s.kiosk();
    let mut req = match req {
        PageRequest::Daemon(r) => r,
        PageRequest::BindStart { .. } if kiosk => {
            return match session.bind_start() {
                Ok(()) => Message::Reply(Reply::ok(
                    id,
                    ReplyResult::BindStarted(BindStarted {
                        bind: BindStep::Started,
                    }),
                )),
                Err(why) => refuse(&id, ErrorCode::NotInSession, why.message()),
            };
        }
        PageRequest::End { .. } if kiosk => {
            session.end();
            return Message::Reply(Reply::ok(id, ReplyResult::Ended(Ended { ended: true })));
        }
        PageRequest::Keep { elder, .. } if kiosk => {
            let kept = session.keep(elder);
            return Message::Reply(Reply::ok(
                id,
                ReplyResult::Kept(Kept {
                    kept,
                    idle_s: session.span().as_secs(),
                }),
            ));
        }
        PageRequest::BindStart { .. } | PageRequest::End { .. } | PageRequest::Keep { .. } => {
            return refuse(&id, ErrorCode::BadRequest, "kiosk sessions only");
        }
    };
    // Raw captures hold personal data: never started from a web page, in
    // either role, whatever uid the display runs as.
    if matches!(req, Request::Capture { .. }) {
        return refuse(
            &id,
            ErrorCode::NotPrivileged,
            "captures are started with cardlinkctl, not from a screen",
        );
    }
    if kiosk {
        if let Err((code, why)) = kiosk_allows(&req) {
            return refuse(&id, code, why);
        }
        if let Err(why) = in_session(session, &req) {
            return refuse(&id, ErrorCode::NotInSession, why.message());
        }
        // Nobody operates a kiosk: a page's `operator` would be recorded
        // as who did the bind. cardlinkd records the display instead.
        if let Request::Bind { operator, .. } = &mut req {
            *operator = None;
        }
    } else if let Request::Bind { operator, .. } | Request::Unbind { operator, .. } = &mut req {
        // Who did it is the display's configuration, never the page's word.
        match &s.settings.operator {
            Some(op) => *operator = Some(op.clone()),
            None => {
                return refuse(
                    &id,
                    ErrorCode::OperatorRequired,
                    "this screen has no operator configured (cardlink-display --operator)",
                )
            }
        }
    }
    let requester = s
        .requester
        .read()
        .map(|r| r.clone())
        .unwrap_or_else(|p| p.into_inner().clone());
    let Some(requester) = requester else {
        return refuse(&id, ErrorCode::DaemonOffline, "cardlinkd cannot be reached");
    };
    match requester.request(req).await {
        Ok(mut reply) => {
            reply.id = id;
            if s.kiosk() {
                mask_reply(&mut reply);
            }
            Message::Reply(reply)
        }
        Err(crate::client::ClientError::Refused { code, message }) => refuse(&id, code, message),
        Err(e) => refuse(&id, ErrorCode::DaemonOffline, e.to_string()),
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
    if let Some(ReplyResult::Card(CardResult::Card(c))) = r.result.as_mut() {
        mask_card(c);
    }
}

/// A daemon message as it goes to every page: masked at a kiosk, with what
/// the pages' sessions need to know of it.
fn relay(s: &Shared, mut m: Message) -> Relayed {
    let seen = match &mut m {
        Message::Card(card) => {
            if s.kiosk() {
                mask_card(card);
            }
            Seen::Card {
                swipe: card.swipe,
                usable: card.outcome == WireOutcome::Ok,
            }
        }
        Message::Removed(_) => Seen::Removed,
        Message::Reader(r) => Seen::Reader(r.reader.clone()),
        _ => Seen::Other,
    };
    Relayed {
        line: line(&m),
        seen,
    }
}

/// Keeps a connection to cardlinkd: relays its events (masked at a kiosk)
/// and reconnects with backoff; the health state says which.
async fn daemon_link(s: Arc<Shared>, shutdown: CancellationToken) {
    let socket = s.settings.socket.clone();
    let mut link = crate::client::Reconnect::new(&socket);
    while let Ok(Some(mut c)) = link.next(&shutdown, |_, _| false).await {
        let role = c.status().await.ok().map(|st| st.role);
        if let Ok(mut r) = s.requester.write() {
            *r = Some(c.requester());
        }
        tracing::info!(socket = %socket.display(), role = ?role, "connected to cardlinkd");
        s.health.send_modify(|h| {
            h.daemon = DaemonLink::Connected;
            h.role = role;
        });
        loop {
            let m = tokio::select! {
                _ = shutdown.cancelled() => return,
                m = c.next_event() => m,
            };
            let Some(m) = m else { break };
            if let Message::Role(r) = &m {
                // Before any later event is relayed: from here on the
                // pages are of the new role (masking, what they may do).
                tracing::info!(role = %r.role, "the daemon's role changed");
                let role = r.role;
                s.health.send_modify(|h| h.role = Some(role));
                continue;
            }
            let r = relay(&s, m);
            if let Seen::Reader(name) = &r.seen {
                if let Ok(mut readers) = s.readers.write() {
                    readers.insert(name.clone(), r.line.clone());
                }
            }
            let _ = s.lines.send(Arc::new(r));
        }
        tracing::warn!("cardlinkd closed the connection; reconnecting");
        if let Ok(mut r) = s.requester.write() {
            *r = None;
        }
        // The role stays as it was: a kiosk screen stays a kiosk screen
        // (and keeps masking) while the daemon is away.
        s.health.send_modify(|h| h.daemon = DaemonLink::Offline);
    }
}
