//! `cardlinkd`: serial readers to family-link results on a local socket.
//!
//! * [`reader`]: one task per serial reader (open, decode, ACK/NAK,
//!   feedback, reconnect with backoff).
//! * [`worker`]: the registry thread.
//! * [`server`]: the display socket (many clients, bounded queues).
//! * [`proto`]: the JSON messages.
//!
//! [`Ctx`] is the shared state they meet in: the event bus, reader states,
//! counters and the recent-swipe table used for kiosk binding.

pub mod proto;
pub mod reader;
pub mod server;
pub mod worker;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::card::{CardRead, CardSource};
use crate::config::{Config, Role};
use crate::registry::audit::Entry;
use crate::registry::{BindPolicy, Lookup, OpenOptions, Outcome, Registry, Resolution};
use crate::Ssn;
use proto::CardEvent;
pub use worker::Worker;

/// Events published to every display client.
#[derive(Debug, Clone)]
pub enum Event {
    /// A reader's connection state changed.
    Reader {
        /// Reader name.
        name: String,
        /// `connected` or `disconnected`.
        state: &'static str,
        /// Device path.
        path: String,
    },
    /// A card read (or manual lookup) was resolved.
    Card(Arc<CardEvent>),
    /// Something went wrong that a display should show.
    Error {
        /// Machine-readable code.
        code: String,
        /// Human-readable message (no personal data).
        message: String,
    },
}

/// Per-client queue length of the event bus: a client further behind is dropped.
pub const CLIENT_QUEUE: usize = 512;
/// How long a swipe can be referred to by id in `bind`.
pub const SWIPE_TTL: Duration = Duration::from_secs(300);

/// Live state of one reader, for `status` and for new clients.
#[derive(Debug, Clone, Default)]
pub struct ReaderState {
    /// Device path.
    pub path: String,
    /// Mode.
    pub mode: String,
    /// `connected` / `disconnected`.
    pub state: &'static str,
    /// Valid frames or lines received.
    pub items: u64,
    /// Card reads reported.
    pub cards: u64,
    /// Duplicate frames suppressed.
    pub duplicates: u64,
    /// Rejected reads.
    pub rejected: u64,
    /// Bytes dropped as line noise (frame mode).
    pub noise_bytes: u64,
    /// Firmware information from the reader's last `STATUS` frame.
    pub firmware: Option<String>,
}

/// Settings that SIGHUP may change.
#[derive(Debug, Clone)]
pub struct Live {
    /// Window or kiosk.
    pub role: Role,
    /// Allowed relations.
    pub policy: BindPolicy,
}

/// Shared daemon state.
pub struct Ctx {
    /// Registry worker.
    pub worker: Worker,
    /// Event bus.
    pub events: broadcast::Sender<Event>,
    /// Reader states by name.
    pub readers: Mutex<BTreeMap<String, ReaderState>>,
    /// Reloadable settings.
    pub live: RwLock<Live>,
    /// Privileged peer uids.
    pub privileged: RwLock<Vec<u32>>,
    started: Instant,
    swipe_seq: AtomicU64,
    swipes: Mutex<VecDeque<(u64, Ssn, Instant)>>,
    /// Connected clients.
    pub clients: AtomicU64,
    /// Resolutions done.
    pub resolutions: AtomicU64,
    /// Errors reported.
    pub errors: AtomicU64,
}

impl Ctx {
    /// New shared state.
    pub fn new(worker: Worker, cfg: &Config) -> Arc<Ctx> {
        let (events, _) = broadcast::channel(CLIENT_QUEUE);
        Arc::new(Ctx {
            worker,
            events,
            readers: Mutex::new(BTreeMap::new()),
            live: RwLock::new(Live {
                role: cfg.role,
                policy: BindPolicy {
                    relations: cfg.relations.clone(),
                },
            }),
            privileged: RwLock::new(cfg.socket.privileged_uids.clone()),
            started: Instant::now(),
            swipe_seq: AtomicU64::new(0),
            swipes: Mutex::new(VecDeque::new()),
            clients: AtomicU64::new(0),
            resolutions: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        })
    }

    /// Publishes an event (no receivers is fine).
    pub fn publish(&self, e: Event) {
        let _ = self.events.send(e);
    }

    /// Publishes an `ERROR` event and counts it.
    pub fn publish_error(&self, code: &str, message: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.publish(Event::Error {
            code: code.to_string(),
            message,
        });
    }

    /// Applies a reloaded configuration's live settings.
    pub fn reload(&self, cfg: &Config) {
        if let Ok(mut live) = self.live.write() {
            live.role = cfg.role;
            live.policy.relations = cfg.relations.clone();
        }
        if let Ok(mut p) = self.privileged.write() {
            *p = cfg.socket.privileged_uids.clone();
        }
    }

    /// Current role and policy.
    pub fn live(&self) -> Live {
        self.live
            .read()
            .map(|l| l.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Updates a reader's state entry.
    pub fn with_reader<T>(&self, name: &str, f: impl FnOnce(&mut ReaderState) -> T) -> T {
        let mut map = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry(name.to_string()).or_default())
    }

    /// Resolves a card read through the registry, audits it and publishes
    /// the `CARD` event, which it also returns.
    pub async fn handle_read(&self, actor: &str, read: CardRead) -> Result<Arc<CardEvent>, String> {
        let lookup = Lookup {
            ssn: read.ssn,
            card_no: read.card_no.clone(),
            pan: read.pan.clone(),
        };
        let who = actor.to_string();
        let res = self
            .worker
            .call(move |reg| resolve_and_audit(reg, &who, &lookup))
            .await
            .map_err(|e| e.to_string())?;
        let (resolution, audit_err) = match res {
            Ok(r) => r,
            Err(e) => {
                self.publish_error("registry", format!("{actor}: cannot resolve card: {e}"));
                return Err(e.to_string());
            }
        };
        if let Some(e) = audit_err {
            self.publish_error("audit", format!("{actor}: audit row not written: {e}"));
        }
        self.resolutions.fetch_add(1, Ordering::Relaxed);
        let swipe = self.swipe_seq.fetch_add(1, Ordering::Relaxed) + 1;
        if resolution.outcome == Outcome::Ok {
            if let Some(p) = &resolution.person {
                let mut s = self.swipes.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                while s
                    .front()
                    .is_some_and(|(_, _, t)| now.duration_since(*t) > SWIPE_TTL)
                    || s.len() >= 256
                {
                    s.pop_front();
                }
                s.push_back((swipe, p.ssn, now));
            }
        }
        let event = Arc::new(CardEvent {
            reader: actor.to_string(),
            swipe,
            source: read.source.as_str(),
            ssn: read.ssn,
            card_no: read.card_no,
            pan: read.pan,
            name: read.name,
            resolution,
        });
        tracing::info!(
            reader = actor,
            swipe,
            source = event.source,
            ssn = %event.ssn.or(event.resolution.person.as_ref().map(|p| p.ssn)).map(|s| s.masked().to_string()).unwrap_or_default(),
            outcome = event.resolution.outcome.as_str(),
            "card resolved"
        );
        self.publish(Event::Card(event.clone()));
        Ok(event)
    }

    /// `window1 connected, kiosk1 disconnected`, for systemd's STATUS=.
    pub fn readers_summary(&self) -> String {
        let map = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if map.is_empty() {
            return "serving, no readers configured".into();
        }
        map.iter()
            .map(|(name, r)| format!("{name} {}", r.state))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The SSN of a recent, successfully resolved swipe.
    pub fn swiped(&self, id: u64) -> Option<Ssn> {
        let s = self.swipes.lock().unwrap_or_else(|p| p.into_inner());
        s.iter()
            .find(|(i, _, t)| *i == id && t.elapsed() <= SWIPE_TTL)
            .map(|(_, ssn, _)| *ssn)
    }

    /// `status` reply body.
    pub fn status(&self) -> Value {
        let readers: Vec<Value> = self
            .readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(name, r)| {
                json!({
                    "name": name, "path": r.path, "mode": r.mode, "state": r.state,
                    "items": r.items, "cards": r.cards, "duplicates": r.duplicates, "rejected": r.rejected,
                    "noise_bytes": r.noise_bytes, "firmware": r.firmware,
                })
            })
            .collect();
        json!({
            "release": env!("CARGO_PKG_VERSION"),
            "role": match self.live().role { Role::Window => "window", Role::Kiosk => "kiosk" },
            "uptime_s": self.started.elapsed().as_secs(),
            "readers": readers,
            "clients": self.clients.load(Ordering::Relaxed),
            "resolutions": self.resolutions.load(Ordering::Relaxed),
            "errors": self.errors.load(Ordering::Relaxed),
        })
    }
}

/// Resolve, then write the audit row. The audit failure is returned beside
/// the resolution so the display still shows the result.
fn resolve_and_audit(
    reg: &mut Registry,
    actor: &str,
    lookup: &Lookup,
) -> Result<(Resolution, Option<String>), crate::registry::RegistryError> {
    let r = reg.resolve(lookup)?;
    let ssn = r.person.as_ref().map(|p| p.ssn).or(lookup.ssn);
    let audit = reg
        .record(&Entry {
            actor,
            action: "resolve",
            ssn: ssn.as_ref(),
            outcome: r.outcome.as_str(),
        })
        .err()
        .map(|e| e.to_string());
    Ok((r, audit))
}

/// A manual entry turned into a card read.
pub fn manual_read(number: &str) -> Result<CardRead, String> {
    let n = number.trim();
    let mut read = CardRead {
        source: CardSource::Manual,
        ssn: None,
        card_no: None,
        pan: None,
        name: None,
        region: None,
        issued: None,
        expires: None,
        seq: None,
    };
    let digits = n.bytes().all(|b| b.is_ascii_digit());
    match n.len() {
        18 => read.ssn = Some(Ssn::parse(n).map_err(|e| format!("invalid social security number: {e}"))?),
        15 if digits => {
            read.ssn = Some(Ssn::from_legacy15(n).map_err(|e| format!("invalid 15-digit number: {e}"))?)
        }
        9 if n.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()) => read.card_no = Some(n.to_string()),
        12..=19 if digits => {
            if !firmware_protocol::magstripe::luhn_ok(n.as_bytes()) {
                return Err("bank card number fails the Luhn check".into());
            }
            read.pan = Some(n.to_string())
        }
        _ => {
            return Err(
                "not a social security number (18), legacy number (15), card number (9) or bank card number"
                    .into(),
            )
        }
    }
    Ok(read)
}

/// Pings systemd's watchdog while the daemon is healthy: the ping runs on
/// the async runtime (a stuck event loop cannot send it) and only after the
/// registry worker has answered a no-op job (a wedged database thread stops
/// the pings too). systemd then restarts the service.
async fn watchdog(ctx: Arc<Ctx>, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(50)));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match tokio::time::timeout(every, ctx.worker.call(|_| ())).await {
            Ok(Ok(())) => crate::notify::notify("WATCHDOG=1"),
            _ => tracing::error!("registry worker did not answer; withholding the watchdog ping"),
        }
    }
}

/// Opens the registry and runs the daemon until `shutdown` is cancelled.
pub async fn run(
    cfg: Config,
    config_path: Option<std::path::PathBuf>,
    shutdown: CancellationToken,
    ready: impl FnOnce(),
) -> anyhow::Result<()> {
    let reg = Registry::open(
        &cfg.database,
        &OpenOptions {
            busy_timeout: Duration::from_millis(cfg.busy_timeout_ms),
            cache_kib: i64::from(cfg.cache_mib.max(1)) * 1024,
            ..OpenOptions::default()
        },
    )?;
    let worker = Worker::start(reg)?;
    let ctx = Ctx::new(worker, &cfg);
    let listener = server::bind(&cfg)?;
    let mut readers = reader::Readers::default();
    readers.apply(&cfg.readers, &ctx, &shutdown);
    tracing::info!(socket = %cfg.socket.path.display(), readers = cfg.readers.len(), "cardlinkd ready");
    ready();
    crate::notify::notify(&format!("STATUS={}", ctx.readers_summary()));
    let server = tokio::spawn(server::serve(listener, ctx.clone(), shutdown.clone()));
    if let Some(every) = crate::notify::watchdog_interval() {
        tokio::spawn(watchdog(ctx.clone(), every, shutdown.clone()));
    }
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = signal(SignalKind::hangup())?;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = hup.recv() => {
                    let Some(path) = &config_path else { continue };
                    match Config::load(path) {
                        Ok(new) => {
                            ctx.reload(&new);
                            readers.apply(&new.readers, &ctx, &shutdown);
                            tracing::info!(readers = new.readers.len(), "configuration reloaded");
                        }
                        Err(e) => tracing::error!(error = %e, "reload failed, keeping the running configuration"),
                    }
                }
            }
        }
    }
    readers.stop().await;
    let _ = tokio::time::timeout(Duration::from_secs(3), server).await;
    let _ = std::fs::remove_file(&cfg.socket.path);
    tracing::info!("cardlinkd stopped");
    Ok(())
}
