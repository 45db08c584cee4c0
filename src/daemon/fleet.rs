//! The fleet heartbeat: every `[fleet] heartbeat_s` this box writes its
//! row into the registry it uses ([`crate::registry::fleet`]), so that
//! `cardlinkctl fleet` lists it and marks it offline after three missed
//! beats.
//!
//! It runs as a task of its own and is bounded in time twice (the store's
//! call limit, and [`limit`] around the whole write), so a slow or absent
//! registry delays only the next heartbeat, never a reader or the socket.
//! A failure is logged when the heartbeat starts or stops failing (not at
//! every beat) and counted in `cardlink_heartbeats_total{result="failed"}`.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::ctx::Ctx;
use crate::registry::fleet::{Heartbeat, ReaderBeat};

/// What the heartbeat needs from the configuration (read at start; a
/// reload does not change the name or the interval).
#[derive(Debug, Clone)]
pub struct Beat {
    /// The box's name.
    pub name: String,
    /// Seconds between heartbeats.
    pub interval_s: u32,
}

/// How long one heartbeat may take in all: the interval, at least 1 s and
/// at most 15 s (beyond the store's own limit, a last bound).
pub fn limit(interval_s: u32) -> Duration {
    Duration::from_secs(u64::from(interval_s).clamp(1, 15))
}

/// This box's heartbeat now.
pub fn heartbeat(ctx: &Ctx, beat: &Beat) -> Heartbeat {
    Heartbeat {
        name: beat.name.clone(),
        role: ctx.live().station.as_str().into(),
        version: env!("CARGO_PKG_VERSION").into(),
        interval_s: beat.interval_s,
        readers: ctx
            .reader_states()
            .into_iter()
            .map(|(name, state)| ReaderBeat {
                name,
                state: state.as_str().into(),
            })
            .collect(),
        // The printer's state (`paper_end`, …; none without a printer).
        printer: ctx.printer_state_name().map(Into::into),
        last_read: ctx.last_read(),
        uptime_s: ctx.uptime().as_secs(),
    }
}

/// Writes a heartbeat at once and then every interval until `shutdown`.
pub async fn run(ctx: Arc<Ctx>, beat: Beat, shutdown: CancellationToken) {
    let every = Duration::from_secs(u64::from(beat.interval_s.max(1)));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let hb = heartbeat(&ctx, &beat);
        let written = tokio::select! {
            _ = shutdown.cancelled() => return,
            w = tokio::time::timeout(limit(beat.interval_s), ctx.store.heartbeat(hb)) => w,
        };
        let error = match written {
            Ok(Ok(Ok(()))) => None,
            Ok(Ok(Err(e))) => Some(e.to_string()),
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!(
                "no answer within {} ms",
                limit(beat.interval_s).as_millis()
            )),
        };
        ctx.metrics.heartbeat(error.is_none());
        match (error, failing) {
            (Some(e), false) => {
                tracing::warn!(name = %beat.name, error = %e, "fleet heartbeat not written; retrying at the next interval");
                failing = true;
            }
            (Some(e), true) => {
                tracing::debug!(name = %beat.name, error = %e, "fleet heartbeat not written")
            }
            (None, true) => {
                tracing::info!(name = %beat.name, "fleet heartbeat written again");
                failing = false;
            }
            (None, false) => tracing::trace!(name = %beat.name, "fleet heartbeat written"),
        }
    }
}
