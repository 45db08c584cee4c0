//! One task per serial reader, and a resolver task beside it.
//!
//! The reader task opens the port (through [`OpenPort`]: tokio-serial in
//! production, in-memory pipes in tests), discards stale input, decodes
//! with [`ReaderCodec`], ACKs every valid frame, suppresses resends, and
//! hands card reads to its resolver task through a bounded queue. The
//! resolver resolves and audits each read ([`Ctx::handle_read`]) in order
//! and sends the FEEDBACK back. So the reader keeps reading, acknowledging
//! and deduplicating while the registry is busy (another writer holding the
//! lock for `busy_timeout_ms`); only the resolver waits. On unplug, EOF or
//! EIO the reader reconnects with capped exponential backoff, publishing
//! `READER` state changes with the cause; each change of cause is logged
//! once, not each retry.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use firmware_protocol::frame::{Cmd, Feedback};
use firmware_protocol::Date;

use super::ctx::Ctx;
use super::event::Event;
use super::port::{OpenPort, Port};
use super::reading::{deliver, hand_over, reader_backoff, resolve_reads, set_state, PENDING_READS};
use crate::config::ReaderConfig;
use crate::protocol::{ErrorCode, ReaderState};
use crate::reader::card::{self, CardRead};
use crate::reader::codec::{HostFrame, Mode, ReaderCodec, ReaderItem};
use crate::reader::dedup::Deduper;

/// Least time between two NAKs.
const NAK_INTERVAL: Duration = Duration::from_millis(300);
/// The running reader tasks, by name.
pub struct Readers {
    ports: Arc<dyn OpenPort>,
    capture_dir: std::path::PathBuf,
    capture_max_mib: u32,
    running: HashMap<String, (ReaderConfig, CancellationToken, JoinHandle<()>)>,
}

impl Readers {
    /// No readers yet.
    pub fn new(ports: Arc<dyn OpenPort>, cfg: &crate::config::Config) -> Readers {
        Readers {
            ports,
            capture_dir: cfg.capture_dir.clone(),
            capture_max_mib: cfg.capture_max_mib,
            running: HashMap::new(),
        }
    }

    /// Capture settings for readers started from now on.
    pub fn set_capture(&mut self, cfg: &crate::config::Config) {
        self.capture_dir = cfg.capture_dir.clone();
        self.capture_max_mib = cfg.capture_max_mib;
    }

    /// Starts, keeps or restarts tasks so that exactly `wanted` run.
    pub fn apply(&mut self, wanted: &[ReaderConfig], ctx: &Arc<Ctx>, shutdown: &CancellationToken) {
        let gone: Vec<String> = self
            .running
            .iter()
            .filter(|(name, (cfg, _, _))| !wanted.iter().any(|w| &w.name == *name && w == cfg))
            .map(|(n, _)| n.clone())
            .collect();
        for name in gone {
            if let Some((_, token, _)) = self.running.remove(&name) {
                // Cancelled first: from here on the old task cannot touch
                // the state table (see `Ctx::update_reader`).
                token.cancel();
                ctx.remove_reader(&name);
                ctx.captures
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&name);
                tracing::info!(reader = %name, "reader removed");
            }
        }
        for cfg in wanted {
            if self.running.contains_key(&cfg.name) {
                continue;
            }
            let token = shutdown.child_token();
            ctx.add_reader(&cfg.name, cfg.shown_path(), cfg.mode.to_string());
            let capture =
                super::capture::Capture::new(cfg, &self.capture_dir, self.capture_max_mib);
            ctx.captures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(cfg.name.clone(), capture.clone());
            let task = tokio::spawn(run(
                cfg.clone(),
                ctx.clone(),
                self.ports.clone(),
                capture,
                token.clone(),
            ));
            self.running
                .insert(cfg.name.clone(), (cfg.clone(), token, task));
        }
    }

    /// Stops every task and waits for them.
    pub async fn stop(&mut self) {
        for (_, (_, token, task)) in self.running.drain() {
            token.cancel();
            let _ = task.await;
        }
    }
}

/// The reader task: connect, serve, reconnect, until cancelled.
pub async fn run(
    cfg: ReaderConfig,
    ctx: Arc<Ctx>,
    ports: Arc<dyn OpenPort>,
    capture: Arc<super::capture::Capture>,
    stop: CancellationToken,
) {
    if cfg.mode == Mode::Library {
        // The vendor's library, in a helper process: daemon::library.
        return super::library::run(cfg, ctx, ports, capture, stop).await;
    }
    let (reads, pending) = mpsc::channel(PENDING_READS);
    let (feedback_tx, mut feedback) = mpsc::channel(PENDING_READS);
    let resolver = tokio::spawn(resolve_reads(
        cfg.name.clone(),
        ctx.clone(),
        stop.clone(),
        pending,
        feedback_tx,
    ));
    let mut backoff = reader_backoff();
    loop {
        if stop.is_cancelled() {
            break;
        }
        match ports.open(&cfg) {
            Ok(port) => {
                let port = super::capture::CapturePort::wrap(port, capture.clone());
                backoff.reset();
                set_state(&ctx, &cfg, &stop, ReaderState::Connected, None);
                let reason = if cfg.mode == Mode::Idcard {
                    serve_idcard(&cfg, &ctx, &stop, port, &reads, &mut feedback).await
                } else {
                    serve(&cfg, &ctx, &stop, port, &reads, &mut feedback).await
                };
                if stop.is_cancelled() {
                    break;
                }
                set_state(&ctx, &cfg, &stop, ReaderState::Disconnected, Some(reason));
            }
            Err(_) if stop.is_cancelled() => break,
            Err(e) => set_state(
                &ctx,
                &cfg,
                &stop,
                ReaderState::Disconnected,
                Some(format!("cannot open: {e}")),
            ),
        }
        if !backoff.wait(&stop).await {
            break;
        }
    }
    // Reads already acknowledged are still resolved and shown.
    drop(reads);
    let _ = resolver.await;
}

async fn serve(
    cfg: &ReaderConfig,
    ctx: &Ctx,
    stop: &CancellationToken,
    port: Port,
    reads: &mpsc::Sender<CardRead>,
    feedback: &mut mpsc::Receiver<Feedback>,
) -> String {
    // Framed keeps partial frames in its buffer across loop iterations, so
    // racing `next()` in select! loses nothing.
    let mut framed = Framed::new(port, ReaderCodec::new(cfg.mode));
    let mut dedup = Deduper::default();
    let mut host_seq: u8 = 0;
    let mut noise_seen = 0u64;
    let mut last_nak = Instant::now() - NAK_INTERVAL;
    let mut tick = tokio::time::interval(NAK_INTERVAL);
    // Feedback meant for an earlier connection is stale.
    while feedback.try_recv().is_ok() {}
    if cfg.mode == Mode::Frame {
        // Ask for the firmware information; the answer lands in `status`.
        let req = HostFrame {
            seq: host_seq,
            cmd: Cmd::StatusRequest,
            payload: Vec::new(),
        };
        if let Err(e) = framed.send(req).await {
            return format!("write failed: {e}");
        }
    }
    loop {
        let item = tokio::select! {
            _ = stop.cancelled() => return "stopped".into(),
            Some(fb) = feedback.recv() => {
                if cfg.mode == Mode::Frame {
                    host_seq = host_seq.wrapping_add(1);
                    if let Err(e) = framed.send(HostFrame::feedback(host_seq, fb)).await {
                        return format!("write failed: {e}");
                    }
                }
                continue;
            }
            _ = tick.tick(), if cfg.mode == Mode::Frame => {
                let noise = framed.codec().noise_bytes();
                ctx.update_reader(&cfg.name, stop, |s| s.noise_bytes = noise);
                if noise > noise_seen && last_nak.elapsed() >= NAK_INTERVAL {
                    noise_seen = noise;
                    last_nak = Instant::now();
                    tracing::debug!(reader = %cfg.name, noise, "line noise, sending NAK");
                    let nak = HostFrame { seq: host_seq, cmd: Cmd::Nak, payload: Vec::new() };
                    if let Err(e) = framed.send(nak).await {
                        return format!("write failed: {e}");
                    }
                }
                continue;
            }
            item = framed.next() => item,
        };
        let item = match item {
            None => return "end of file".into(),
            Some(Err(e)) => return format!("read failed: {e}"),
            Some(Ok(item)) => item,
        };
        let noise = framed.codec().noise_bytes();
        ctx.update_reader(&cfg.name, stop, |s| {
            s.items += 1;
            s.noise_bytes = noise;
        });
        if let ReaderItem::Frame { seq, cmd, payload } = &item {
            // ACK every valid frame, duplicates included.
            if let Err(e) = framed.send(HostFrame::ack(*seq)).await {
                return format!("write failed: {e}");
            }
            // tokio's clock (the std clock outside tests), so that tests
            // with paused time see the 10 s window in virtual time.
            if !dedup.first_time(tokio::time::Instant::now().into_std(), *seq, payload) {
                ctx.update_reader(&cfg.name, stop, |s| s.duplicates += 1);
                tracing::debug!(reader = %cfg.name, seq, cmd, "duplicate frame suppressed");
                continue;
            }
        }
        let now_feedback = match deliver(
            cfg,
            ctx,
            stop,
            reads,
            card::decode(&item, cfg.encoding, Date::today_cst()),
        )
        .await
        {
            Ok(fb) => fb,
            Err(why) => return why,
        };
        if let (Some(fb), Mode::Frame) = (now_feedback, cfg.mode) {
            host_seq = host_seq.wrapping_add(1);
            if let Err(e) = framed.send(HostFrame::feedback(host_seq, fb)).await {
                return format!("write failed: {e}");
            }
        }
    }
}

/// idcard mode: how long a reply to find, select or the SAM commands may take.
pub const ID_REPLY_TIMEOUT: Duration = Duration::from_millis(1000);
/// idcard mode: how long the reply to a read may take (the module reads
/// the card first: about a second, 1295 bytes at 115200 baud another 0.1 s).
pub const ID_READ_TIMEOUT: Duration = Duration::from_millis(2000);
/// idcard mode: sendings of one command (the first and two more) before it
/// is given up, when its reply is corrupt, cut or missing.
pub const ID_ATTEMPTS: u32 = 3;
/// idcard mode: the longest pause between polls while the module is faulty
/// or silent.
pub const ID_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Where a card on an identity-card module is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// No card.
    Empty,
    /// A card was found; selecting and reading it.
    Reading,
    /// The card was read (or given up on) and is still there: the module
    /// answers find with "no card" and select with success until it is
    /// taken away.
    Done,
}

/// The reply of an identity-card module, classified.
#[derive(Debug)]
enum IdAnswer {
    Found,
    NotFound,
    SelectFailed,
    Selected,
    SamOk,
    SamId(bytes::Bytes),
    Read(bytes::Bytes),
    /// A `90` that answers nothing we know to have asked.
    Other,
}

/// An idcard reader: cardlinkd is the master. It checks the SAM (`11 FF`,
/// `12 FF`), then every `poll_ms` sends find (`20 01`); a card found is
/// selected (`20 02`) and read (`30 01`) once. While it stays, find answers
/// "no card" and select succeeds; when select fails it is gone (REMOVED).
/// Corrupt, cut or missing replies are asked again, [`ID_ATTEMPTS`] times
/// at most, and never shown. A SAM fault puts the reader in state `error`
/// with its meaning; polling goes on, the pause doubling up to
/// [`ID_BACKOFF_MAX`], until the module answers well again.
async fn serve_idcard(
    cfg: &ReaderConfig,
    ctx: &Ctx,
    stop: &CancellationToken,
    port: Port,
    reads: &mpsc::Sender<CardRead>,
    feedback: &mut mpsc::Receiver<Feedback>,
) -> String {
    use firmware_protocol::idcard::{Command, Sw3};
    use tokio::time::Instant as TInstant;

    // Framed keeps a partial reply in its buffer across iterations, so
    // racing `next()` in select! loses nothing.
    let mut framed = Framed::new(port, ReaderCodec::new(Mode::Idcard));
    let poll = Duration::from_millis(cfg.poll_ms);
    let mut pause = crate::backoff::Backoff::new(poll, ID_BACKOFF_MAX);
    let mut placement = Placement::Empty;
    // The command awaiting its reply, and how often it was sent.
    let mut pending: Option<(Command, u32)> = Some((Command::SamStatus, 1));
    let mut deadline = TInstant::now() + ID_REPLY_TIMEOUT;
    let mut next_poll = TInstant::now();
    let mut faulty = false;
    // The SAM's id is asked for after its status, and again at a poll
    // while it is not known (a module that was faulty at first).
    let mut sam_known = false;
    let timeout_of = |c: Command| {
        if c == Command::Read {
            ID_READ_TIMEOUT
        } else {
            ID_REPLY_TIMEOUT
        }
    };
    if let Err(e) = framed.send(Command::SamStatus).await {
        return format!("write failed: {e}");
    }
    loop {
        let wake = if pending.is_some() {
            deadline
        } else {
            next_poll
        };
        let item = tokio::select! {
            _ = stop.cancelled() => return "stopped".into(),
            // FEEDBACK is a frame-mode signal; a SAM module has no beeper
            // of ours.
            Some(_) = feedback.recv() => continue,
            _ = tokio::time::sleep_until(wake) => None,
            item = framed.next() => match item {
                None => return "end of file".into(),
                Some(Err(e)) => return format!("read failed: {e}"),
                Some(Ok(item)) => Some(item),
            },
        };
        // What to send next, if anything.
        let mut send: Option<(Command, u32)> = None;
        match item {
            None => match pending.take() {
                // No (complete) reply in time: whatever part of one came is
                // stale.
                Some((cmd, n)) => {
                    framed.read_buffer_mut().clear();
                    if n < ID_ATTEMPTS {
                        tracing::debug!(reader = %cfg.name, ?cmd, attempt = n, "no reply, asking again");
                        send = Some((cmd, n + 1));
                    } else {
                        tracing::debug!(reader = %cfg.name, ?cmd, "no reply, given up");
                        if cmd == Command::Read {
                            given_up_read(ctx, cfg);
                            placement = Placement::Done;
                        } else {
                            faulty = true;
                            pause.fail();
                            set_state(
                                ctx,
                                cfg,
                                stop,
                                ReaderState::Error,
                                Some("模块无应答 / the module does not answer".into()),
                            );
                        }
                        next_poll = TInstant::now() + pause.current();
                    }
                }
                None if !sam_known && !faulty => {
                    // Asked once: a module that answers it oddly still gets polled.
                    sam_known = true;
                    send = Some((Command::SamId, 1));
                }
                None => send = Some((Command::Find, 1)),
            },
            Some(ReaderItem::IdCorrupt(why)) => {
                let noise = framed.codec().noise_bytes();
                ctx.update_reader(&cfg.name, stop, |s| s.noise_bytes = noise);
                match pending.take() {
                    Some((cmd, n)) if n < ID_ATTEMPTS => {
                        tracing::debug!(reader = %cfg.name, ?cmd, ?why, "corrupt reply, asking again");
                        send = Some((cmd, n + 1));
                    }
                    Some((cmd, _)) => {
                        tracing::warn!(reader = %cfg.name, ?cmd, ?why, "corrupt replies, given up");
                        if cmd == Command::Read {
                            given_up_read(ctx, cfg);
                            placement = Placement::Done;
                        }
                        next_poll = TInstant::now() + pause.current();
                    }
                    None => {}
                }
            }
            Some(item) => {
                let asked = pending.take();
                let noise = framed.codec().noise_bytes();
                ctx.update_reader(&cfg.name, stop, |s| {
                    s.items += 1;
                    s.noise_bytes = noise;
                });
                let (sw3, data) = match item {
                    ReaderItem::IdRead(text) => (0x90, Some(text)),
                    ReaderItem::IdReply { sw3, data } => (sw3, Some(data)),
                    _ => (0, None),
                };
                match Sw3::from_code(sw3) {
                    None => {
                        // An unknown status: nothing is guessed from it.
                        tracing::warn!(reader = %cfg.name, sw3, "unknown SW3 from the module");
                        match asked {
                            Some((cmd, n)) if n < ID_ATTEMPTS => send = Some((cmd, n + 1)),
                            _ => next_poll = TInstant::now() + pause.current(),
                        }
                    }
                    Some(sw) => {
                        if sw.is_module_fault() {
                            let why = format!("SAM {sw3:02X}: {} / {}", sw.zh(), sw.en());
                            tracing::warn!(reader = %cfg.name, sw3, meaning = sw.en(), "identity-card module fault");
                            faulty = true;
                            pause.fail();
                            set_state(ctx, cfg, stop, ReaderState::Error, Some(why));
                            next_poll = TInstant::now() + pause.current();
                            if placement == Placement::Reading {
                                placement = Placement::Empty;
                            }
                        } else if sw.is_line_error() {
                            match asked {
                                Some((cmd, n)) if n < ID_ATTEMPTS => send = Some((cmd, n + 1)),
                                _ => next_poll = TInstant::now() + pause.current(),
                            }
                        } else {
                            if faulty {
                                faulty = false;
                                pause.reset();
                                set_state(ctx, cfg, stop, ReaderState::Connected, None);
                            }
                            let asked_cmd = asked.map(|(c, _)| c);
                            let answer = classify(sw, asked_cmd, data);
                            match (answer, placement) {
                                (IdAnswer::Found, p) => {
                                    if p == Placement::Done {
                                        // Taken away and placed again between two polls.
                                        ctx.publish(Event::Removed {
                                            reader: cfg.name.clone(),
                                        });
                                    }
                                    placement = Placement::Reading;
                                    send = Some((Command::Select, 1));
                                }
                                (IdAnswer::NotFound, Placement::Done) => {
                                    // Still there? Select answers while it is.
                                    if asked_cmd == Some(Command::Find) {
                                        send = Some((Command::Select, 1));
                                    } else {
                                        next_poll = TInstant::now() + pause.current();
                                    }
                                }
                                (IdAnswer::NotFound, _) => {
                                    placement = Placement::Empty;
                                    next_poll = TInstant::now() + pause.current();
                                }
                                (IdAnswer::SelectFailed, p) => {
                                    if p == Placement::Done {
                                        ctx.publish(Event::Removed {
                                            reader: cfg.name.clone(),
                                        });
                                    }
                                    placement = Placement::Empty;
                                    next_poll = TInstant::now() + pause.current();
                                }
                                (IdAnswer::Selected, Placement::Done) => {
                                    next_poll = TInstant::now() + pause.current();
                                }
                                (IdAnswer::Selected, _) => {
                                    placement = Placement::Reading;
                                    send = Some((Command::Read, 1));
                                }
                                (IdAnswer::Read(text), Placement::Done) => {
                                    // A read nobody asked for while the card was
                                    // already shown: not a new placement.
                                    drop(text);
                                    next_poll = TInstant::now() + pause.current();
                                }
                                (IdAnswer::Read(text), _) => {
                                    placement = Placement::Done;
                                    next_poll = TInstant::now() + pause.current();
                                    match card::from_id_text(&text, Date::today_cst()) {
                                        Ok(read) => {
                                            drop(text);
                                            // Back-pressure as in frame mode: no
                                            // polls while the resolver is behind.
                                            if let Err(why) =
                                                hand_over(cfg, ctx, stop, reads, read).await
                                            {
                                                return why;
                                            }
                                        }
                                        Err(e) => {
                                            ctx.update_reader(&cfg.name, stop, |s| s.rejected += 1);
                                            tracing::warn!(reader = %cfg.name, error = %e, "identity card refused");
                                            ctx.publish_error(
                                                ErrorCode::BadCard,
                                                format!("{}: {e}", cfg.name),
                                            );
                                        }
                                    }
                                }
                                (IdAnswer::SamOk, _) => {
                                    sam_known = true;
                                    send = Some((Command::SamId, 1));
                                }
                                (IdAnswer::SamId(id), _) => {
                                    let text = format!("SAM {}", sam_id_text(&id));
                                    tracing::info!(reader = %cfg.name, firmware = %text, "identity-card module");
                                    ctx.update_reader(&cfg.name, stop, |s| s.firmware = Some(text));
                                    next_poll = TInstant::now() + pause.current();
                                }
                                (IdAnswer::Other, _) => {
                                    if sw != Sw3::Success {
                                        // A card that could not be read: its meaning, once.
                                        ctx.publish_id_card_error(&cfg.name, sw);
                                        if placement == Placement::Reading {
                                            placement = Placement::Done;
                                        }
                                    }
                                    next_poll = TInstant::now() + pause.current();
                                }
                            }
                        }
                    }
                }
            }
        }
        if let Some((cmd, n)) = send {
            if let Err(e) = send_id(&mut framed, cmd).await {
                return e;
            }
            deadline = TInstant::now() + timeout_of(cmd);
            pending = Some((cmd, n));
        }
    }
}

fn classify(
    sw: firmware_protocol::idcard::Sw3,
    asked: Option<firmware_protocol::idcard::Command>,
    data: Option<bytes::Bytes>,
) -> IdAnswer {
    use firmware_protocol::idcard::{Command, Sw3, TEXT_LEN};
    let data = data.unwrap_or_default();
    match sw {
        Sw3::Found => IdAnswer::Found,
        Sw3::NotFound => IdAnswer::NotFound,
        Sw3::SelectFailed => IdAnswer::SelectFailed,
        Sw3::Success if data.len() == TEXT_LEN && asked != Some(Command::SamId) => {
            IdAnswer::Read(data)
        }
        // By shape first (a replayed capture's replies need not follow our
        // commands), then by what was asked.
        Sw3::Success if data.len() == 8 => IdAnswer::Selected,
        Sw3::Success if data.len() == 16 && asked != Some(Command::Select) => IdAnswer::SamId(data),
        Sw3::Success => match asked {
            Some(Command::Select) => IdAnswer::Selected,
            Some(Command::SamStatus) => IdAnswer::SamOk,
            Some(Command::SamId) => IdAnswer::SamId(data),
            _ => IdAnswer::Other,
        },
        _ => IdAnswer::Other,
    }
}

/// The SAM's management information: its 16 bytes in hex, grouped
/// 2-2-4-4-4 as the vendors' tools group them. (They print the groups in
/// decimal, with byte orders that differ between them: cardlink does not
/// guess which, PROTOCOL.md §7.2.)
fn sam_id_text(id: &[u8]) -> String {
    if id.len() != 16 {
        return format!("({} bytes)", id.len());
    }
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    format!(
        "{}-{}-{}-{}-{}",
        hex(&id[0..2]),
        hex(&id[2..4]),
        hex(&id[4..8]),
        hex(&id[8..12]),
        hex(&id[12..16])
    )
}

fn given_up_read(ctx: &Ctx, cfg: &ReaderConfig) {
    tracing::warn!(reader = %cfg.name, "identity card read failed: no good reply");
    ctx.publish_id_card_error(&cfg.name, firmware_protocol::idcard::Sw3::ReadFailed);
}

async fn send_id(
    framed: &mut Framed<Port, ReaderCodec>,
    cmd: firmware_protocol::idcard::Command,
) -> Result<(), String> {
    framed
        .send(cmd)
        .await
        .map_err(|e| format!("write failed: {e}"))
}
