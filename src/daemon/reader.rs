//! One task per serial reader.
//!
//! The task opens the port (tokio-serial), discards stale input, decodes
//! with [`ReaderCodec`], ACKs every valid frame, suppresses resends,
//! resolves card reads through [`Ctx::handle_read`], sends FEEDBACK, and on
//! unplug, EOF or EIO reconnects with capped exponential backoff,
//! publishing `READER` state changes. Nothing in it blocks: registry calls
//! go to the worker thread.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio::task::JoinHandle;
use tokio_serial::{ClearBuffer, SerialPort, SerialPortBuilderExt};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use firmware_protocol::frame::{Cmd, Feedback};
use firmware_protocol::Date;

use super::{Ctx, Event};
use crate::card::{self, ReaderEvent};
use crate::codec::{HostFrame, Mode, ReaderCodec, ReaderItem};
use crate::config::{Parity, ReaderConfig};
use crate::dedup::Deduper;
use crate::registry::Outcome;

/// First reconnect delay.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Least time between two NAKs.
const NAK_INTERVAL: Duration = Duration::from_millis(300);

/// The running reader tasks, by name.
#[derive(Default)]
pub struct Readers {
    running: HashMap<String, (ReaderConfig, CancellationToken, JoinHandle<()>)>,
}

impl Readers {
    /// Starts, keeps or restarts tasks so that exactly `wanted` run.
    pub fn apply(&mut self, wanted: &[ReaderConfig], ctx: &Arc<Ctx>, shutdown: &CancellationToken) {
        let keep: Vec<&str> = wanted.iter().map(|r| r.name.as_str()).collect();
        let gone: Vec<String> = self
            .running
            .iter()
            .filter(|(name, (cfg, _, _))| !keep.contains(&name.as_str()) || !wanted.contains(cfg))
            .map(|(n, _)| n.clone())
            .collect();
        for name in gone {
            if let Some((cfg, token, _)) = self.running.remove(&name) {
                token.cancel();
                // The task stops without touching the state table (it checks
                // its token first), so this is the reader's last word.
                set_state(ctx, &cfg, "disconnected");
                ctx.readers
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
            ctx.with_reader(&cfg.name, |s| {
                s.path = cfg.path.display().to_string();
                s.mode = cfg.mode.to_string();
                s.state = "disconnected";
            });
            let task = tokio::spawn(run(cfg.clone(), ctx.clone(), token.clone()));
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

fn set_state(ctx: &Ctx, cfg: &ReaderConfig, state: &'static str) {
    let changed = ctx.with_reader(&cfg.name, |s| {
        let changed = s.state != state;
        s.state = state;
        changed
    });
    if changed {
        tracing::info!(reader = %cfg.name, path = %cfg.path.display(), state, "reader state");
        crate::notify::notify(&format!("STATUS={}", ctx.readers_summary()));
        ctx.publish(Event::Reader {
            name: cfg.name.clone(),
            state,
            path: cfg.path.display().to_string(),
        });
    }
}

fn open(cfg: &ReaderConfig) -> Result<tokio_serial::SerialStream, tokio_serial::Error> {
    let parity = match cfg.parity {
        Parity::None => tokio_serial::Parity::None,
        Parity::Even => tokio_serial::Parity::Even,
        Parity::Odd => tokio_serial::Parity::Odd,
    };
    let port = tokio_serial::new(cfg.path.to_string_lossy(), cfg.baud)
        .parity(parity)
        .data_bits(tokio_serial::DataBits::Eight)
        .stop_bits(tokio_serial::StopBits::One)
        .flow_control(tokio_serial::FlowControl::None)
        .open_native_async()?;
    // Whatever the reader sent while nobody listened is stale.
    port.clear(ClearBuffer::Input)?;
    Ok(port)
}

/// The reader task: connect, serve, reconnect, until cancelled.
pub async fn run(cfg: ReaderConfig, ctx: Arc<Ctx>, stop: CancellationToken) {
    let mut backoff = BACKOFF_MIN;
    let mut logged_open_error = false;
    loop {
        if stop.is_cancelled() {
            return;
        }
        match open(&cfg) {
            Ok(port) => {
                backoff = BACKOFF_MIN;
                logged_open_error = false;
                set_state(&ctx, &cfg, "connected");
                let reason = serve(&cfg, &ctx, &stop, port).await;
                if stop.is_cancelled() {
                    return;
                }
                set_state(&ctx, &cfg, "disconnected");
                tracing::warn!(reader = %cfg.name, reason = %reason, "reader lost, reconnecting");
            }
            Err(_) if stop.is_cancelled() => return,
            Err(e) => {
                if !logged_open_error {
                    tracing::warn!(reader = %cfg.name, path = %cfg.path.display(), error = %e, "cannot open reader, retrying with backoff");
                    logged_open_error = true;
                }
                set_state(&ctx, &cfg, "disconnected");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn serve(
    cfg: &ReaderConfig,
    ctx: &Ctx,
    stop: &CancellationToken,
    port: tokio_serial::SerialStream,
) -> String {
    let mut framed = Framed::new(port, ReaderCodec::new(cfg.mode));
    let mut dedup = Deduper::default();
    let mut host_seq: u8 = 0;
    let mut noise_seen = 0u64;
    let mut last_nak = Instant::now() - NAK_INTERVAL;
    let mut tick = tokio::time::interval(NAK_INTERVAL);
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
            _ = tick.tick(), if cfg.mode == Mode::Frame => {
                let noise = framed.codec().noise_bytes();
                ctx.with_reader(&cfg.name, |s| s.noise_bytes = noise);
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
        ctx.with_reader(&cfg.name, |s| {
            s.items += 1;
            s.noise_bytes = noise;
        });
        if let ReaderItem::Frame { seq, cmd, payload } = &item {
            // ACK every valid frame, duplicates included.
            if let Err(e) = framed.send(HostFrame::ack(*seq)).await {
                return format!("write failed: {e}");
            }
            if !dedup.first_time(Instant::now(), *seq, payload) {
                ctx.with_reader(&cfg.name, |s| s.duplicates += 1);
                tracing::debug!(reader = %cfg.name, seq, cmd, "duplicate frame suppressed");
                continue;
            }
        }
        let feedback = match card::decode(&item, cfg.encoding, Date::today_cst()) {
            Ok(ReaderEvent::Card(read)) => match ctx.handle_read(&cfg.name, read).await {
                Ok(event) => {
                    ctx.with_reader(&cfg.name, |s| s.cards += 1);
                    Some(if event.resolution.outcome == Outcome::Ok {
                        Feedback::Accepted
                    } else {
                        Feedback::Rejected
                    })
                }
                Err(_) => Some(Feedback::Attention),
            },
            Ok(ReaderEvent::Removed) => None,
            Ok(ReaderEvent::Status(text)) => {
                tracing::info!(reader = %cfg.name, firmware = %text, "reader status");
                ctx.with_reader(&cfg.name, |s| s.firmware = Some(text));
                None
            }
            Ok(ReaderEvent::ReadError { code, text }) => {
                ctx.publish_error(
                    "reader_read_error",
                    format!("{}: reader error {code}: {text}", cfg.name),
                );
                None
            }
            Err(e) => {
                ctx.with_reader(&cfg.name, |s| s.rejected += 1);
                tracing::warn!(reader = %cfg.name, error = %e, "card read rejected");
                ctx.publish_error("bad_card", format!("{}: {e}", cfg.name));
                Some(Feedback::Rejected)
            }
        };
        if let (Some(fb), Mode::Frame) = (feedback, cfg.mode) {
            host_seq = host_seq.wrapping_add(1);
            if let Err(e) = framed.send(HostFrame::feedback(host_seq, fb)).await {
                return format!("write failed: {e}");
            }
        }
    }
}
