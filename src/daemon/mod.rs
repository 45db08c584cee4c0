//! `cardlinkd`'s core, as a library a test can run in-process.
//!
//! [`run`] takes everything from outside — an already-bound listener, an
//! open registry, the configuration, a way to open reader ports, a stream
//! of configuration updates and a cancellation token — so the binary owns
//! signals, socket binding and process locks, and a test owns them too
//! (mini-redis's `server::run(listener, shutdown)` is the model).
//!
//! * [`serial`]: one task per reader (open, decode, ACK/NAK, dedup,
//!   feedback, reconnect with backoff) and one resolver task beside it, so a
//!   busy registry never stalls a reader.
//! * [`worker`]: the registry off the async runtime.
//! * [`server`]: the display socket (many clients, bounded queues).
//! * [`render`]: the daemon's events as wire messages, for one client.
//! * [`port`]: reader ports and how they are opened; [`reading`]: what
//!   every reader task shares (state, backoff, the resolver);
//!   [`library`]: readers behind a vendor library's helper process;
//!   [`capture`]: recording a reader's traffic.
//!
//! [`Ctx`] is the shared state they meet in: the event bus, reader states,
//! counters and the recent-swipe table used for kiosk binding.

pub mod capture;
pub mod library;
pub mod port;
pub mod reading;
pub mod render;
pub mod serial;
pub mod server;
pub mod worker;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::net::UnixListener;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Station};
use crate::protocol::{self, ErrorCode};
use crate::reader::card::{CardRead, CardSource};
use crate::registry::audit::Entry;
use crate::registry::{BindPolicy, Lookup, Outcome, Registry, RegistryError, Resolution};
use crate::Ssn;
pub use port::{OpenPort, Port, PortIo, SerialPorts};
pub use worker::Worker;

/// A resolved card read, ready to be rendered for each client
/// ([`render::card`]).
#[derive(Debug, Clone)]
pub struct CardEvent {
    /// Reader name (or `manual` for typed lookups).
    pub reader: String,
    /// Swipe id, usable in kiosk-mode `bind` requests.
    pub swipe: u64,
    /// How the number was read.
    pub source: CardSource,
    /// The identity document of an `id_card` read.
    pub document: Option<firmware_protocol::idcard::Document>,
    /// SSN from the card.
    pub ssn: Option<Ssn>,
    /// Card number from the card.
    pub card_no: Option<String>,
    /// PAN from the card.
    pub pan: Option<String>,
    /// Name from the card.
    pub name: Option<String>,
    /// Resolution.
    pub resolution: Resolution,
}

/// Events published to every display client.
#[derive(Debug, Clone)]
pub enum Event {
    /// A reader's connection state changed.
    Reader {
        /// Reader name.
        name: String,
        /// Its new state.
        state: protocol::ReaderState,
        /// Device path.
        path: String,
        /// Why it is disconnected.
        error: Option<String>,
    },
    /// A card read (or manual lookup) was resolved and audited.
    Card(Arc<CardEvent>),
    /// The card was taken out of a reader (frame mode `CARD_REMOVED`).
    Removed {
        /// Reader name.
        reader: String,
    },
    /// Something went wrong that a display should show.
    Error {
        /// Machine-readable code.
        code: ErrorCode,
        /// Human-readable message (no personal data).
        message: String,
        /// The reader interface's return code, for `reader_read_error`.
        reader_code: Option<i32>,
    },
    /// A reload changed the role: displays switch screens and masking at
    /// once (a kiosk page must not see one more full SSN).
    Role(Station),
}

/// Per-client queue length of the event bus: a client further behind is dropped.
pub const CLIENT_QUEUE: usize = 512;
/// How long a swipe can be referred to by id in `bind`.
pub const SWIPE_TTL: Duration = Duration::from_secs(300);
/// Most recent swipes remembered for `bind` by swipe id.
const SWIPES_KEPT: usize = 256;

/// Live state of one reader, for `status` and for new clients.
#[derive(Debug, Clone, Default)]
pub struct ReaderState {
    /// Device path.
    pub path: String,
    /// Mode.
    pub mode: String,
    /// `connected` / `disconnected` / `error` (idcard: the module cannot
    /// read; library: the helper ended).
    pub state: protocol::ReaderState,
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
    /// The last open or read error.
    pub last_error: Option<String>,
    /// A library reader: times its helper process was started again.
    pub restarts: Option<u64>,
    /// A library reader: the last return code of `iReadCardBas`.
    pub last_code: Option<i64>,
}

/// Settings that a configuration update may change.
#[derive(Debug, Clone)]
pub struct Live {
    /// Window or kiosk.
    pub station: Station,
    /// Allowed relations.
    pub policy: BindPolicy,
    /// What an identity-card read may do.
    pub id_card: crate::registry::policy::IdCardUse,
}

/// A configuration update for a running daemon (SIGHUP in `cardlinkd`).
#[derive(Debug)]
pub struct Update {
    /// The new configuration (already validated).
    pub config: Config,
    /// Answered once the update is applied.
    pub applied: Option<oneshot::Sender<()>>,
}

/// Errors that stop the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The registry could not be opened.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// An I/O failure while starting.
    #[error("{0}")]
    Io(#[from] std::io::Error),
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
    /// Recent resolved swipes: id, SSN, when, and whether an identity card.
    swipes: Mutex<VecDeque<(u64, Ssn, Instant, bool)>>,
    /// Connected clients.
    pub clients: AtomicU64,
    /// Resolutions done.
    pub resolutions: AtomicU64,
    /// Errors reported.
    pub errors: AtomicU64,
    /// Each reader's capture switch.
    pub captures: Mutex<std::collections::HashMap<String, Arc<capture::Capture>>>,
}

/// Why a read could not be shown.
#[derive(Debug, Clone)]
pub struct ReadFailure {
    /// The code on the wire.
    pub code: ErrorCode,
    /// What happened.
    pub message: String,
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
                station: cfg.role,
                policy: cfg.bind_policy(),
                id_card: cfg.policy.id_card,
            }),
            privileged: RwLock::new(cfg.socket.privileged_uids.clone()),
            started: Instant::now(),
            swipe_seq: AtomicU64::new(0),
            swipes: Mutex::new(VecDeque::new()),
            clients: AtomicU64::new(0),
            resolutions: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            captures: Mutex::default(),
        })
    }

    /// Publishes an event (no receivers is fine).
    pub fn publish(&self, e: Event) {
        let _ = self.events.send(e);
    }

    /// Publishes an `ERROR` event and counts it.
    pub fn publish_error(&self, code: ErrorCode, message: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.publish(Event::Error {
            code,
            message,
            reader_code: None,
        });
    }

    /// Publishes a reader's failure to read a card, with the interface's
    /// return code (its meaning is added on the wire). The reader's own
    /// text is free text: identifiers in it are masked.
    pub fn publish_reader_error(&self, reader: &str, code: i32, text: &str) {
        let m = firmware_protocol::retcode::meaning(code);
        let mut message = format!("{reader}: reader error {code}: {} / {}", m.zh, m.en);
        if !text.is_empty() {
            message += &format!(" ({})", crate::mask::free_text(text));
        }
        tracing::warn!(
            reader,
            code,
            meaning = m.en,
            "reader could not read the card"
        );
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.publish(Event::Error {
            code: ErrorCode::ReaderReadError,
            message,
            reader_code: Some(code),
        });
    }

    /// Applies a reloaded configuration's live settings.
    pub fn reload(&self, cfg: &Config) {
        let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
        let changed = live.station != cfg.role;
        live.station = cfg.role;
        live.policy = cfg.bind_policy();
        live.id_card = cfg.policy.id_card;
        if changed {
            // Published while the new role is being written: a request
            // that sees the new role comes after this event on the bus.
            self.publish(Event::Role(cfg.role));
        }
        drop(live);
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

    /// Updates the state entry of a running reader task. `stop` is the
    /// task's token, checked under the lock: once the task is cancelled
    /// (removed or restarted by a reload), it can no longer touch the
    /// table, neither its old entry nor a new one under the same name.
    pub fn update_reader<T>(
        &self,
        name: &str,
        stop: &CancellationToken,
        f: impl FnOnce(&mut ReaderState) -> T,
    ) -> Option<T> {
        let mut map = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if stop.is_cancelled() {
            return None;
        }
        map.get_mut(name).map(f)
    }

    /// Adds (or resets) a reader's entry, `disconnected` until its task
    /// opens the port.
    pub fn add_reader(&self, name: &str, path: String, mode: String) {
        let mut map = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(
            name.to_string(),
            ReaderState {
                path,
                mode,
                state: protocol::ReaderState::Disconnected,
                ..ReaderState::default()
            },
        );
    }

    /// Removes a reader: its last `READER disconnected` event and the
    /// removal happen under one lock, so a client that has seen the event
    /// never finds the reader in `status` afterwards.
    pub fn remove_reader(&self, name: &str) {
        let mut map = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = map.remove(name) {
            if s.state != protocol::ReaderState::Disconnected {
                self.publish(Event::Reader {
                    name: name.to_string(),
                    state: protocol::ReaderState::Disconnected,
                    path: s.path,
                    error: None,
                });
            }
        }
    }

    /// Resolves a card read through the registry, writes its audit row,
    /// and only then publishes the `CARD` event, which it also returns. A
    /// read whose audit row cannot be written (a busy or broken registry)
    /// is not shown: it becomes an `ERROR` event and `Err`.
    pub async fn handle_read(
        &self,
        actor: &str,
        read: CardRead,
    ) -> Result<Arc<CardEvent>, ReadFailure> {
        let lookup = Lookup {
            ssn: read.ssn,
            card_no: read.card_no.clone(),
            pan: read.pan.clone(),
        };
        let who = actor.to_string();
        let res = self
            .worker
            .call(move |reg| resolve_and_audit(reg, &who, &lookup))
            .await;
        let resolution = match res {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                let failure = ReadFailure {
                    code: (&e).into(),
                    message: format!("{actor}: card read not shown: {e}"),
                };
                tracing::warn!(reader = actor, error = %e, "card read not resolved and audited; not shown");
                self.publish_error(failure.code, failure.message.clone());
                return Err(failure);
            }
            Err(e) => {
                let failure = ReadFailure {
                    code: ErrorCode::Internal,
                    message: format!("{actor}: {e}"),
                };
                self.publish_error(failure.code, failure.message.clone());
                return Err(failure);
            }
        };
        self.resolutions.fetch_add(1, Ordering::Relaxed);
        let swipe = self.swipe_seq.fetch_add(1, Ordering::Relaxed) + 1;
        if resolution.outcome == Outcome::Ok {
            if let Some(p) = &resolution.person {
                let mut s = self.swipes.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                while s
                    .front()
                    .is_some_and(|(_, _, t, _)| now.duration_since(*t) > SWIPE_TTL)
                    || s.len() >= SWIPES_KEPT
                {
                    s.pop_front();
                }
                s.push_back((swipe, p.ssn, now, read.source == CardSource::IdCard));
            }
        }
        let event = Arc::new(CardEvent {
            reader: actor.to_string(),
            swipe,
            source: read.source,
            document: read.document,
            ssn: read.ssn,
            card_no: read.card_no,
            pan: read.pan,
            name: read.name,
            resolution,
        });
        tracing::info!(
            reader = actor,
            swipe,
            source = event.source.as_str(),
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
            .find(|(i, _, t, _)| *i == id && t.elapsed() <= SWIPE_TTL)
            .map(|(_, ssn, _, _)| *ssn)
    }

    /// The SSN of a recent swipe given as a party: of a bind or unbind
    /// (`link`) or an inquiry. A party identified by an identity card may
    /// link only where `[policy] id_card` allows it at this station.
    pub fn swiped_party(
        &self,
        id: u64,
        station: Station,
        link: bool,
        which: &str,
    ) -> Result<Ssn, (ErrorCode, String)> {
        let found = {
            let s = self.swipes.lock().unwrap_or_else(|p| p.into_inner());
            s.iter()
                .find(|(i, _, t, _)| *i == id && t.elapsed() <= SWIPE_TTL)
                .map(|(_, ssn, _, id_card)| (*ssn, *id_card))
        };
        match found {
            None => Err((
                ErrorCode::UnknownSwipe,
                format!("{which}: swipe {id} is unknown, failed or older than 5 minutes"),
            )),
            Some((_, true)) if link && !self.live().id_card.may_link(station == Station::Kiosk) => {
                Err((
                    ErrorCode::IdCardNotAllowed,
                    match station {
                        Station::Kiosk => format!(
                            "{which}: 自助机绑定需刷社会保障卡 / at a kiosk a bind needs the social-security card, not an identity card"
                        ),
                        Station::Window => format!(
                            "{which}: 身份证只用于识别 / an identity card identifies but does not bind here (policy.id_card = identify)"
                        ),
                    },
                ))
            }
            Some((ssn, _)) => Ok(ssn),
        }
    }

    /// An identity-card module could not read a card: `ERROR
    /// id_card_error` with the SW3 code and its meaning.
    pub fn publish_id_card_error(&self, reader: &str, sw: firmware_protocol::idcard::Sw3) {
        let code = sw.code();
        tracing::warn!(
            reader,
            sw3 = code,
            meaning = sw.en(),
            "identity card not read"
        );
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.publish(Event::Error {
            code: ErrorCode::IdCardError,
            message: format!(
                "{reader}: identity card not read, SW3 {code:02X}: {} / {}",
                sw.zh(),
                sw.en()
            ),
            reader_code: Some(code as i32),
        });
    }

    /// A new client's event stream and the `READER` messages of every
    /// reader, taken together under the readers lock (state changes are
    /// published under it), so no change is missed or seen twice.
    pub fn subscribe(&self) -> (broadcast::Receiver<Event>, Vec<protocol::ReaderMsg>) {
        let map = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        let events = self.events.subscribe();
        let readers = map
            .iter()
            .map(|(name, r)| render::reader(name, r))
            .collect();
        (events, readers)
    }

    /// `status` reply body.
    pub fn status(&self) -> protocol::Status {
        let readers = self
            .readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(name, r)| render::reader_status(name, r))
            .collect();
        protocol::Status {
            release: env!("CARGO_PKG_VERSION").into(),
            role: self.live().station.into(),
            uptime_s: self.started.elapsed().as_secs(),
            readers,
            clients: self.clients.load(Ordering::Relaxed),
            resolutions: self.resolutions.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

/// Resolve, then write the audit row; a resolution without its audit row
/// is an error (nothing is shown that is not audited).
fn resolve_and_audit(
    reg: &mut Registry,
    actor: &str,
    lookup: &Lookup,
) -> Result<Resolution, RegistryError> {
    let r = reg.resolve(lookup)?;
    let ssn = r.person.as_ref().map(|p| p.ssn).or(lookup.ssn);
    reg.record(&Entry {
        actor,
        action: "resolve",
        ssn: ssn.as_ref(),
        outcome: r.outcome.as_str(),
    })?;
    Ok(r)
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

/// What [`run`] needs from outside.
pub struct Daemon {
    /// The display socket, already bound.
    pub listener: UnixListener,
    /// The registry, already open.
    pub registry: Registry,
    /// The configuration.
    pub config: Config,
    /// How reader ports are opened ([`SerialPorts`] in production).
    pub ports: Arc<dyn OpenPort>,
    /// Configuration updates (SIGHUP); the daemon runs on when the sender is dropped.
    pub updates: mpsc::Receiver<Update>,
}

/// A shared registry that went away is tried again in the background, at
/// its backoff's pace, so the first swipe after the server is back
/// resolves (swipes meanwhile are answered `registry_unavailable` at once).
/// The job costs nothing while the registry is reachable.
async fn reconnect(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        if ctx.worker.call(|reg| reg.reconnect()).await.is_err() {
            return;
        }
    }
}

/// Runs the daemon until `shutdown` is cancelled.
pub async fn run(d: Daemon, shutdown: CancellationToken) -> Result<(), DaemonError> {
    let Daemon {
        listener,
        registry,
        config: cfg,
        ports,
        mut updates,
    } = d;
    let shared = registry.is_shared();
    let worker = Worker::start(registry);
    let ctx = Ctx::new(worker, &cfg);
    let mut readers = serial::Readers::new(ports, &cfg);
    readers.apply(&cfg.readers, &ctx, &shutdown);
    tracing::info!(
        readers = cfg.readers.len(),
        role = cfg.role.as_str(),
        "cardlinkd ready"
    );
    crate::notify::notify(&format!("STATUS={}", ctx.readers_summary()));
    // Descriptors kept free of socket clients: the registry (SQLite's
    // files or a PostgreSQL pool), each reader's port and capture file,
    // logging and the process itself.
    let reserved = 64 + 8 * cfg.readers.len() as u64;
    let max_clients = crate::fds::client_budget(cfg.socket.max_clients, reserved);
    if max_clients < cfg.socket.max_clients {
        tracing::warn!(
            configured = cfg.socket.max_clients,
            max_clients,
            "RLIMIT_NOFILE is too low for socket.max_clients; serving fewer (raise LimitNOFILE=)"
        );
    }
    let server = tokio::spawn(server::serve(
        listener,
        ctx.clone(),
        max_clients,
        shutdown.clone(),
    ));
    if let Some(every) = crate::notify::watchdog_interval() {
        tokio::spawn(watchdog(ctx.clone(), every, shutdown.clone()));
    }
    if shared {
        tokio::spawn(reconnect(ctx.clone(), shutdown.clone()));
    }
    let mut updates_open = true;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            u = updates.recv(), if updates_open => match u {
                Some(Update { config, applied }) => {
                    ctx.reload(&config);
                    readers.set_capture(&config);
                    readers.apply(&config.readers, &ctx, &shutdown);
                    tracing::info!(readers = config.readers.len(), "configuration reloaded");
                    if let Some(done) = applied {
                        let _ = done.send(());
                    }
                }
                None => updates_open = false,
            },
        }
    }
    readers.stop().await;
    let _ = tokio::time::timeout(Duration::from_secs(3), server).await;
    tracing::info!("cardlinkd stopped");
    Ok(())
}
