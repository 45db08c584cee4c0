//! cardlink-display: the kiosk and clerk screens for a local browser.
//! See `cardlink::display` and README ("Kiosk screen").

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

/// Serves the kiosk or clerk screen of a cardlinkd on a loopback HTTP address.
#[derive(Parser, Debug)]
#[command(version = cardlink::VERSION, about)]
struct Args {
    /// cardlinkd's display socket.
    #[arg(long, default_value = "/run/cardlink/display.sock")]
    socket: PathBuf,
    /// Address to serve the screen on (loopback unless you name another).
    #[arg(long, default_value = "127.0.0.1:8780")]
    listen: SocketAddr,
    /// Where the screen key (`screen.key`) and the browser's login page
    /// (`screen.html`) are kept, both readable by the display's group only.
    #[arg(long, default_value = "/run/cardlink-display")]
    key_dir: PathBuf,
    /// The operator a window screen binds and unbinds as (recorded in the
    /// audit log); without one, a window screen cannot bind or unbind.
    #[arg(long, env = "CARDLINK_DISPLAY_OPERATOR")]
    operator: Option<String>,
    /// Seconds without a swipe or a touch after which a kiosk session ends.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(5..=3600))]
    idle_s: u64,
    /// Kiosk pages start in 长辈模式 (elder mode: larger text and
    /// controls, at least 60 s before returning to the start); the person
    /// can switch it off and on with the 长辈模式 control on every screen.
    #[arg(long, env = "CARDLINK_DISPLAY_ELDER")]
    elder: bool,
    /// When kiosk pages speak their key sentences in Mandarin (through the
    /// browser's speechSynthesis, where the box has a zh-CN voice):
    /// `elder` (in 长辈模式 only), `always` or `never`.
    #[arg(long, env = "CARDLINK_DISPLAY_SPEECH", default_value = "elder")]
    speech: cardlink::protocol::Speech,
    /// Connections served at once (fewer if RLIMIT_NOFILE is lower).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=65536))]
    max_connections: u64,
    /// Serve Prometheus metrics (pages connected, daemon link) at
    /// http://ADDR/metrics; off by default. Port 0 takes a free port
    /// (systemd's STATUS= names it). No personal data: no authentication.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Log level (tracing filter); RUST_LOG overrides.
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "cardlink-display: {}",
                cardlink::logging::error_chain(e.as_ref())
            );
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    cardlink::logging::parse_level(&args.log_level)
        .map_err(|e| anyhow::anyhow!("--log-level '{}': {e}", args.log_level))?;
    cardlink::logging::init(&args.log_level);
    if !args.listen.ip().is_loopback() {
        tracing::warn!(listen = %args.listen, "serving on a non-loopback address");
    }
    if let Some(op) = &args.operator {
        anyhow::ensure!(
            !op.trim().is_empty() && op.chars().count() <= 64 && !op.chars().any(char::is_control),
            "--operator must be 1 to 64 printable characters"
        );
    }
    // Bound first, so that the login page names the address really bound
    // (`--listen 127.0.0.1:0` takes a free port, without a race).
    let listener = std::net::TcpListener::bind(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let metrics = match args.metrics_listen {
        Some(m) => {
            let l = std::net::TcpListener::bind(m)
                .with_context(|| format!("cannot serve metrics on {m}"))?;
            l.set_nonblocking(true)?;
            Some(l)
        }
        None => None,
    };
    let metrics_addr = metrics.as_ref().map(|l| l.local_addr()).transpose()?;
    let key = cardlink::display::ScreenKey::load_or_create(&args.key_dir, addr)
        .context("cannot set up the screen key (--key-dir)")?;
    let settings = cardlink::display::Settings {
        socket: args.socket,
        key,
        operator: args.operator,
        idle: Duration::from_secs(args.idle_s),
        elder: args.elder,
        speech: args.speech,
        max_connections: cardlink::display::connection_limit(
            usize::try_from(args.max_connections).unwrap_or(usize::MAX),
        ),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let metrics = metrics.map(tokio::net::TcpListener::from_std).transpose()?;
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            if let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            }
            stop.cancel();
        });
        let status = match metrics_addr {
            Some(m) => format!("serving http://{addr}/, metrics on http://{m}/metrics"),
            None => format!("serving http://{addr}/"),
        };
        if let Some(m) = metrics_addr {
            tracing::info!(addr = %m, "serving metrics on http://{m}/metrics");
        }
        cardlink::notify::notify(&format!("READY=1\nSTATUS={status}"));
        cardlink::display::serve_with_metrics(listener, metrics, settings, shutdown).await?;
        anyhow::Ok(())
    })
}
