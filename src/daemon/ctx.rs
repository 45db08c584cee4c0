//! [`Ctx`]: the shared state the daemon's tasks meet in — the event bus,
//! reader states, counters, the registry and the recent-swipe table used
//! for kiosk binding.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::capture;
use super::event::{CardEvent, Event, PrintJob, PrinterLive, ReaderState};
use super::metrics::DaemonMetrics;
use super::render;
use super::store::Store;
use crate::config::{Config, Station};
use crate::protocol::{self, ErrorCode};
use crate::reader::card::{CardRead, CardSource};
use crate::registry::{BindPolicy, Lookup, Outcome};
use crate::Ssn;

/// Per-client queue length of the event bus: a client further behind is dropped.
pub const CLIENT_QUEUE: usize = 512;
/// How long a swipe can be referred to by id in `bind`.
pub const SWIPE_TTL: Duration = Duration::from_secs(300);
/// Most recent swipes remembered for `bind` by swipe id.
const SWIPES_KEPT: usize = 256;

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

/// Shared daemon state.
pub struct Ctx {
    /// The registry.
    pub store: Store,
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
    /// What Prometheus scrapes (`[metrics]`); kept whether served or not.
    pub metrics: Arc<DaemonMetrics>,
    /// When the last card read was resolved (for the fleet heartbeat).
    last_read: Mutex<Option<std::time::SystemTime>>,
    /// The receipt printer's state (`None`: no printer configured).
    pub printer: Mutex<Option<PrinterLive>>,
    /// The printer task's queue, once it runs.
    pub print_queue: std::sync::OnceLock<tokio::sync::mpsc::Sender<PrintJob>>,
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
    /// New shared state, with metrics of its own.
    pub fn new(store: Store, cfg: &Config) -> Arc<Ctx> {
        Self::with_metrics(store, cfg, Arc::new(DaemonMetrics::new()))
    }

    /// New shared state measuring into `metrics` (the store's too).
    pub fn with_metrics(store: Store, cfg: &Config, metrics: Arc<DaemonMetrics>) -> Arc<Ctx> {
        let (events, _) = broadcast::channel(CLIENT_QUEUE);
        Arc::new(Ctx {
            store,
            metrics,
            last_read: Mutex::new(None),
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
            printer: Mutex::new(None),
            print_queue: std::sync::OnceLock::new(),
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
        self.metrics.read_error(reader, &code.to_string());
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
        let source = read.source.as_str();
        let res = self.store.resolve_audited(actor, lookup).await;
        let resolution = match res {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                let failure = ReadFailure {
                    code: (&e).into(),
                    message: format!("{actor}: card read not shown: {e}"),
                };
                self.metrics.read(actor, source, failure.code.as_str());
                tracing::warn!(reader = actor, error = %e, "card read not resolved and audited; not shown");
                self.publish_error(failure.code, failure.message.clone());
                return Err(failure);
            }
            Err(e) => {
                let failure = ReadFailure {
                    code: ErrorCode::Internal,
                    message: format!("{actor}: {e}"),
                };
                self.metrics.read(actor, source, failure.code.as_str());
                self.publish_error(failure.code, failure.message.clone());
                return Err(failure);
            }
        };
        self.resolutions.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .read(actor, source, resolution.outcome.as_str());
        *self.last_read.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(std::time::SystemTime::now());
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

    /// When the last card read was resolved, if any since the start.
    pub fn last_read(&self) -> Option<std::time::SystemTime> {
        *self.last_read.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long the daemon has run.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Each reader's name and state, by name.
    pub fn reader_states(&self) -> Vec<(String, protocol::ReaderState)> {
        self.readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(name, r)| (name.clone(), r.state))
            .collect()
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
        self.metrics.read_error(reader, &format!("sw3:{code:02X}"));
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
            printer: self
                .printer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map(|p| Box::new(render::printer_status(p))),
            policy: Box::new((&self.live().policy).into()),
        }
    }

    /// The printer's state and counts for a metrics scrape (`None`
    /// without a printer).
    pub fn printer_scrape(&self) -> Option<super::metrics::PrinterScrape> {
        self.printer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|p| super::metrics::PrinterScrape {
                state: p.state,
                printed: p.printed,
                failed: p.failed,
            })
    }

    /// The printer's state in the fleet heartbeat (`None` without a
    /// printer): the wire name of its state.
    pub fn printer_state_name(&self) -> Option<&'static str> {
        self.printer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|p| p.state.as_str())
    }

    /// Changes the printer's live state with `f`; publishes `PRINTER`
    /// when its state or cause changed (under the lock, so events come in
    /// the order of the changes).
    pub fn update_printer(&self, f: impl FnOnce(&mut PrinterLive)) {
        let mut g = self.printer.lock().unwrap_or_else(|p| p.into_inner());
        let p = g.get_or_insert_with(PrinterLive::default);
        let before = (p.state, p.last_error.clone());
        f(p);
        if (p.state, p.last_error.clone()) != before {
            self.publish(Event::Printer(p.clone()));
        }
    }

    /// The printer's last known state (the default without one).
    pub fn printer_state(&self) -> crate::printer::PrinterState {
        self.printer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|p| p.state)
            .unwrap_or_default()
    }

    /// Queues the receipt of a bind or unbind; what the reply says of it
    /// (`None` without a printer). Never waits: a full queue or a printer
    /// that cannot print is reported, the link stands.
    pub fn queue_receipt(&self, job: PrintJob) -> Option<protocol::ReceiptQueued> {
        let queue = self.print_queue.get()?;
        let state = self.printer_state();
        let audit_seq = job.audit.seq;
        let kind = job.kind;
        let queued = match queue.try_send(job) {
            Ok(()) => true,
            Err(_) => {
                let error = "receipt queue full".to_string();
                self.update_printer(|p| {
                    p.failed += 1;
                    p.last_error = Some(error.clone());
                });
                tracing::warn!(audit_seq, "receipt not printed: queue full");
                self.publish(Event::Receipt {
                    kind,
                    audit_seq,
                    printed: false,
                    state,
                    error: Some(error),
                });
                false
            }
        };
        Some(protocol::ReceiptQueued {
            audit_seq,
            queued: queued && state.can_print(),
            printer: state.into(),
        })
    }
}
