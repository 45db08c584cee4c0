//! cardlinkd: the cardlink daemon. See README.md.

use std::path::PathBuf;

use anyhow::Context;
use cardlink::config::{Config, DEFAULT_PATH};
use cardlink::{daemon, logging, notify};
use clap::Parser;
use tokio_util::sync::CancellationToken;

/// Social-security card kiosk daemon: serial card readers to family-link results on a Unix socket.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Configuration file.
    #[arg(long, short, default_value = DEFAULT_PATH)]
    config: PathBuf,
    /// Validate the configuration, print the effective configuration and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cfg = Config::load(&args.config)?;
    if args.check_config {
        print!("{}", cfg.to_toml());
        eprintln!("{}: configuration OK", args.config.display());
        return Ok(());
    }
    logging::init(&cfg.log_level);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        let s = shutdown.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            tracing::info!("signal received, shutting down");
            notify::notify("STOPPING=1");
            s.cancel();
        });
        daemon::run(cfg, Some(args.config), shutdown, || {
            notify::notify("READY=1\nSTATUS=serving")
        })
        .await
    })
}
