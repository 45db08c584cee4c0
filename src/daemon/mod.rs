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
//! * [`store`]: the registry off the async runtime.
//! * [`server`]: the display socket (many clients, bounded queues).
//! * [`render`]: the daemon's events as wire messages, for one client.
//! * [`port`]: reader ports and how they are opened; [`reading`]: what
//!   every reader task shares (state, backoff, the resolver);
//!   [`library`]: readers behind a vendor library's helper process;
//!   [`capture`]: recording a reader's traffic.
//!
//! [`Ctx`] ([`ctx`]) is the shared state they meet in: the event bus,
//! reader states, counters and the recent-swipe table used for kiosk
//! binding; [`event`] holds what is published on the bus. Children import
//! from each other's files, never from this one (ARCHITECTURE.md, Layers).

pub mod capture;
pub mod ctx;
pub mod event;
pub mod fleet;
pub mod library;
pub mod metrics;
pub mod port;
pub mod printer;
pub mod reading;
pub mod render;
pub mod serial;
pub mod server;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::registry::{Registry, RegistryError};
pub use ctx::{Ctx, Live, ReadFailure, CLIENT_QUEUE, SWIPE_TTL};
pub use event::{CardEvent, Event, ReaderState};
pub use port::{OpenPort, Port, PortIo, SerialPorts};
pub use store::Store;

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
    /// The metrics address could not be bound.
    #[error("cannot serve metrics on {0}: {1}")]
    Metrics(std::net::SocketAddr, std::io::Error),
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
        match tokio::time::timeout(every, ctx.store.ping()).await {
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
        if ctx.store.reconnect().await.is_err() {
            return;
        }
    }
}

/// Keeps a shared registry's lookups off the server's disk: reads what a
/// resolution reads into its cache at start, and again each time a new
/// connection reaches a server that was not warmed since it started (a
/// restarted server, or a standby just promoted, starts with a cold
/// cache). Swipes are served meanwhile; a prewarm that fails is tried
/// again at the next new connection.
async fn prewarm(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    loop {
        let start = std::time::Instant::now();
        let ran = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = ctx.store.prewarm() => r,
        };
        match ran {
            None => return,
            Some(Ok(None)) => {
                tracing::debug!("prewarm skipped: this server was warmed since it started")
            }
            Some(Ok(Some(done))) => {
                for p in &done {
                    tracing::debug!(
                        relation = p.relation,
                        pages = p.pages,
                        method = p.method.as_str(),
                        ms = p.elapsed.as_millis() as u64,
                        "registry relation prewarmed"
                    );
                }
                tracing::info!(
                    relations = done.len(),
                    pages = done.iter().map(|p| p.pages).sum::<i64>(),
                    methods = %done.iter().map(|p| format!("{}={}", p.relation, p.method.as_str())).collect::<Vec<_>>().join(","),
                    ms = start.elapsed().as_millis() as u64,
                    "registry prewarmed"
                );
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "registry prewarm failed; trying again at the next new connection")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ctx.store.connected() => {}
        }
    }
}

/// Binds the metrics endpoint and says where (port 0 takes a free port):
/// in the log and in systemd's status.
async fn bind_metrics(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, DaemonError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| DaemonError::Metrics(addr, e))?;
    let bound = listener.local_addr()?;
    tracing::info!(addr = %bound, "serving metrics on http://{bound}/metrics");
    crate::notify::notify(&format!("STATUS=metrics on http://{bound}/metrics"));
    Ok(listener)
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
    let measured = Arc::new(metrics::DaemonMetrics::new());
    let store = Store::start(registry).measured(measured.clone());
    let ctx = Ctx::with_metrics(store, &cfg, measured);
    // Bound before the readers start, so that a taken address stops the
    // start with its cause.
    let metrics_listener = match cfg.metrics.listen {
        Some(addr) => Some(bind_metrics(addr).await?),
        None => None,
    };
    if let Some(p) = &cfg.printer {
        printer::start(&ctx, p, &shutdown);
    }
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
        if cfg.prewarm {
            tokio::spawn(prewarm(ctx.clone(), shutdown.clone()));
        }
    }
    if let Some(listener) = metrics_listener {
        let scraped = ctx.clone();
        let render: crate::metrics::Render = Arc::new(move || {
            let states = scraped.reader_states();
            scraped.metrics.render(
                states.iter().map(|(n, s)| (n.as_str(), s.as_str())),
                scraped.clients.load(std::sync::atomic::Ordering::Relaxed),
                scraped.printer_scrape(),
            )
        });
        tokio::spawn(crate::metrics::serve(listener, render, shutdown.clone()));
    }
    tokio::spawn(fleet::run(
        ctx.clone(),
        fleet::Beat {
            name: cfg.name.clone(),
            interval_s: cfg.fleet.heartbeat_s,
        },
        shutdown.clone(),
    ));
    let mut updates_open = true;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            u = updates.recv(), if updates_open => match u {
                Some(Update { config, applied }) => {
                    if config.printer != cfg.printer {
                        tracing::warn!("[printer] changes take effect when cardlinkd restarts");
                    }
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
