//! What every reader task shares, whatever drives the reader (a serial
//! port in `serial`, a vendor library's helper in `library`): its state
//! and cause as `READER`, the reconnect backoff, and the resolver beside
//! it with the bounded queue of reads between them.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use firmware_protocol::frame::Feedback;

use super::ctx::Ctx;
use super::event::Event;
use crate::config::ReaderConfig;
use crate::protocol::{ErrorCode, ReaderState};
use crate::reader::card::{self, CardRead, ReaderEvent};
use crate::registry::Outcome;

/// First reconnect delay.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Card reads of one reader acknowledged and waiting for the registry;
/// when this many wait, the reader task stops reading until one is done.
pub const PENDING_READS: usize = 64;

/// Sets a reader's state and cause; publishes `READER` and logs when
/// either changed.
pub fn set_state(
    ctx: &Ctx,
    cfg: &ReaderConfig,
    stop: &CancellationToken,
    state: ReaderState,
    error: Option<String>,
) {
    // Published under the readers lock, under which a new client subscribes
    // and takes its snapshot: it sees each change once, either in its
    // hello lines or as an event, never both.
    let changed = ctx
        .update_reader(&cfg.name, stop, |s| {
            let changed = s.state != state || (error.is_some() && s.last_error != error);
            s.state = state;
            if error.is_some() {
                s.last_error = error.clone();
            }
            if changed {
                ctx.publish(Event::Reader {
                    name: cfg.name.clone(),
                    state,
                    path: cfg.shown_path(),
                    error: error.clone(),
                });
            }
            changed
        })
        .unwrap_or(false);
    if changed {
        match &error {
            Some(e) => {
                tracing::warn!(reader = %cfg.name, path = %cfg.shown_path(), state = state.as_str(), error = %e, "reader state")
            }
            None => {
                tracing::info!(reader = %cfg.name, path = %cfg.shown_path(), state = state.as_str(), "reader state")
            }
        }
        crate::notify::notify(&format!("STATUS={}", ctx.readers_summary()));
    }
}

/// The waits between a reader's attempts: [`BACKOFF_MIN`] doubling up to
/// [`BACKOFF_MAX`].
pub fn reader_backoff() -> crate::backoff::Backoff {
    crate::backoff::Backoff::new(BACKOFF_MIN, BACKOFF_MAX)
}

/// The resolver beside a reader: resolves and audits reads in order and
/// answers each with the FEEDBACK the reader should show.
pub async fn resolve_reads(
    name: String,
    ctx: Arc<Ctx>,
    stop: CancellationToken,
    mut reads: mpsc::Receiver<CardRead>,
    feedback: mpsc::Sender<Feedback>,
) {
    while let Some(read) = reads.recv().await {
        ctx.metrics.queue(&name, -1);
        let fb = match ctx.handle_read(&name, read).await {
            Ok(event) => {
                ctx.update_reader(&name, &stop, |s| s.cards += 1);
                if event.resolution.outcome == Outcome::Ok {
                    Feedback::Accepted
                } else {
                    Feedback::Rejected
                }
            }
            Err(_) => Feedback::Attention,
        };
        // Never wait here: the reader task may itself be waiting for room
        // in the read queue. FEEDBACK is a beep or a light; with a whole
        // queue of it unsent, older ones are stale anyway.
        let _ = feedback.try_send(fb);
    }
}

/// Queues a card read for the resolver, waiting while the queue is full;
/// `Err` with the reason when the reader must stop.
pub async fn hand_over(
    cfg: &ReaderConfig,
    ctx: &Ctx,
    stop: &CancellationToken,
    reads: &mpsc::Sender<CardRead>,
    read: CardRead,
) -> Result<(), String> {
    if reads.capacity() == 0 {
        tracing::warn!(reader = %cfg.name, pending = PENDING_READS, "registry behind; pausing this reader");
    }
    // Counted before it is sent: the resolver may take it (and count it
    // out) before `send` returns.
    ctx.metrics.queue(&cfg.name, 1);
    let sent = tokio::select! {
        _ = stop.cancelled() => Err("stopped".into()),
        sent = reads.send(read) => sent.map_err(|_| "resolver stopped".into()),
    };
    if sent.is_err() {
        ctx.metrics.queue(&cfg.name, -1);
    }
    sent
}

/// Hands one decoded reader item on: a card read to the resolver (waiting
/// for room in its queue: back-pressure), a removal, firmware text or a
/// read error to the displays. Returns the FEEDBACK to show at once, or
/// why the reader must stop (cancelled, resolver gone).
pub async fn deliver(
    cfg: &ReaderConfig,
    ctx: &Ctx,
    stop: &CancellationToken,
    reads: &mpsc::Sender<CardRead>,
    decoded: Result<ReaderEvent, card::CardError>,
) -> Result<Option<Feedback>, String> {
    let fb = match decoded {
        Ok(ReaderEvent::Card(read)) => {
            // A full queue is back-pressure: stop reading (so stop
            // ACKing) until the resolver catches up. The reader resends
            // what is not ACKed and the deduper drops the copies.
            hand_over(cfg, ctx, stop, reads, read).await?;
            None
        }
        Ok(ReaderEvent::Removed) => {
            ctx.publish(Event::Removed {
                reader: cfg.name.clone(),
            });
            None
        }
        Ok(ReaderEvent::Status(text)) => {
            // Free text from the reader: shown masked, like all else.
            let text = crate::mask::free_text(&text);
            tracing::info!(reader = %cfg.name, firmware = %text, "reader status");
            ctx.update_reader(&cfg.name, stop, |s| s.firmware = Some(text));
            None
        }
        Ok(ReaderEvent::ReadError { code, text }) => {
            ctx.publish_reader_error(&cfg.name, code, &text);
            None
        }
        Err(e @ card::CardError::NotAuthenticated) => {
            // Not a bad card: the reader is missing its PSAM key.
            tracing::warn!(reader = %cfg.name, "card not authenticated: the reader's PSAM lacks the key");
            ctx.publish_error(
                ErrorCode::CardNotAuthenticated,
                format!("{}: {e}", cfg.name),
            );
            Some(Feedback::Attention)
        }
        Err(e) => {
            ctx.update_reader(&cfg.name, stop, |s| s.rejected += 1);
            tracing::warn!(reader = %cfg.name, error = %e, "card read rejected");
            ctx.publish_error(ErrorCode::BadCard, format!("{}: {e}", cfg.name));
            Some(Feedback::Rejected)
        }
    };
    Ok(fb)
}
