//! cardlink-display: the kiosk and clerk screens for a local browser.
//! See `cardlink::display` and README ("Kiosk screen").

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

/// Serves the kiosk or clerk screen of a cardlinkd on a loopback HTTP address.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// cardlinkd's display socket.
    #[arg(long, default_value = "/run/cardlink/display.sock")]
    socket: PathBuf,
    /// Address to serve the screen on (loopback unless you name another).
    #[arg(long, default_value = "127.0.0.1:8780")]
    listen: SocketAddr,
    /// Log level (tracing filter); RUST_LOG overrides.
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    cardlink::logging::parse_level(&args.log_level)
        .map_err(|e| anyhow::anyhow!("--log-level '{}': {e}", args.log_level))?;
    cardlink::logging::init(&args.log_level);
    if !args.listen.ip().is_loopback() {
        tracing::warn!(listen = %args.listen, "serving on a non-loopback address");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
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
        cardlink::notify::notify("READY=1");
        cardlink::display::serve(listener, args.socket, shutdown).await?;
        anyhow::Ok(())
    })
}
