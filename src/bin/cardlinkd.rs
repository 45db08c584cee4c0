//! cardlinkd: the cardlink daemon. See README.md.
//!
//! This file owns what belongs to the process: the command line, the
//! configuration file, logging, the socket file and the process locks,
//! signals (SIGTERM/SIGINT stop, SIGHUP reloads) and systemd's READY=1.
//! The daemon itself is [`cardlink::daemon::run`].

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use cardlink::config::{Config, DEFAULT_PATH};
use cardlink::daemon::{self, Daemon, SerialPorts, Update};
use cardlink::registry::{Database, DbKey, OpenOptions, Registry};
use cardlink::{logging, notify};
use clap::Parser;
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

/// Social-security card kiosk daemon: serial card readers to family-link results on a Unix socket.
#[derive(Parser, Debug)]
#[command(version = cardlink::VERSION, about)]
struct Args {
    /// Configuration file.
    #[arg(long, short, default_value = DEFAULT_PATH)]
    config: PathBuf,
    /// Validate the configuration (and that the registry can be opened),
    /// print the effective configuration and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cardlinkd: {}", logging::error_chain(e.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let cfg = Config::load(&args.config)?;
    if args.check_config {
        // Where the key comes from, never the key.
        match cfg.key_source() {
            Some(source) => eprintln!("registry key: {source}"),
            None if cfg.database.path().is_some() => {
                eprintln!("registry key: none (a plain, unencrypted file)")
            }
            None => {}
        }
        let key = cfg.database_key()?;
        check_registry(&cfg.database, key)?;
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
    let result = rt.block_on(serve(cfg, args.config));
    if let Err(e) = &result {
        tracing::error!("{}", logging::error_chain(e.as_ref()));
    }
    result
}

/// That the registry opens, without creating or changing anything.
fn check_registry(db: &Database, key: Option<DbKey>) -> anyhow::Result<()> {
    let path = match db {
        Database::Sqlite(p) => p,
        Database::Postgres(_) => {
            let opts = OpenOptions {
                read_only: true,
                ..OpenOptions::default()
            };
            let reg =
                Registry::open_database(db, &opts).with_context(|| format!("registry {db}"))?;
            reg.schema_version()
                .with_context(|| format!("registry {db} is not a cardlink registry"))?;
            return Ok(());
        }
    };
    // (A directory or a device is refused by the configuration's checks.)
    if path.exists() {
        let opts = OpenOptions {
            read_only: true,
            key,
            ..OpenOptions::default()
        };
        let reg = Registry::open(path, &opts)?;
        reg.schema_version()
            .with_context(|| format!("database {} is not a registry", path.display()))?;
        if let Some(c) = reg.cipher() {
            eprintln!("registry encryption: {}", c.describe());
        }
        return Ok(());
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        bail!(
            "database {}: directory {} does not exist",
            path.display(),
            dir.display()
        );
    }
    Ok(())
}

/// An exclusive lock the kernel drops when the process dies (flock), so a
/// crash leaves nothing behind that stops the next start.
fn lock(path: &Path, what: &str) -> anyhow::Result<File> {
    let f = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("cannot open {} to lock it", path.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "{what} is in use by another running cardlinkd (lock {} is held)",
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// One daemon per SQLite registry: an exclusive flock on the registry
/// file itself (created empty when missing: SQLite takes an empty file for
/// a new database). The lock belongs to the file, not to a name, so every
/// way to reach it (another spelling of the path, a symlink, a hard link)
/// meets it; a lock file named after the path let a hard link through.
///
/// The descriptor is never closed (leaked on purpose; the kernel closes it,
/// and drops the flock, when the process ends). SQLite locks this file
/// with POSIX record locks (fcntl), and POSIX drops all of a process's
/// record locks on a file when *any* of its descriptors for that file is
/// closed: closing this one while the registry is open would silently
/// release SQLite's locks. flock and record locks do not interact on Linux's
/// local file systems, so this lock does not get in the way of SQLite's, nor
/// of `cardlinkctl` or the `sqlite3` shell on the same file. (The other
/// way, a lock file keyed by the registry's (st_dev, st_ino), needs a
/// directory shared by every name of the file and breaks when the inode
/// number is reused after a delete.)
fn lock_registry(path: &Path) -> anyhow::Result<()> {
    let f = lock(path, &format!("registry {}", path.display()))?;
    std::mem::forget(f);
    Ok(())
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Binds the socket after taking its lock: a socket file left by a crash
/// is replaced, one held by a running daemon is not.
fn bind(cfg: &Config) -> anyhow::Result<(UnixListener, File)> {
    use std::os::unix::fs::PermissionsExt;
    let path = &cfg.socket.path;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let guard = lock(
        &with_suffix(path, ".lock"),
        &format!("socket {}", path.display()),
    )?;
    if path.exists() {
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(cfg.socket_mode()?))?;
    Ok((listener, guard))
}

async fn serve(cfg: Config, config_path: PathBuf) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // The registry first: a second daemon on the same SQLite registry stops
    // here, before it touches the socket of the first. (Many daemons share
    // a PostgreSQL registry: that is what it is for.)
    if let Database::Sqlite(path) = &cfg.database {
        lock_registry(path)?;
    }
    // The key is read once, at start (a reload does not change the
    // registry); only its source is logged.
    let key = cfg.database_key()?;
    if let Some(k) = &key {
        tracing::info!(key = %k.source(), "the registry is encrypted");
    }
    // Opening blocks (a PostgreSQL registry connects and migrates on a
    // runtime of its own), so off this runtime's threads.
    let (database, opts) = (
        cfg.database.clone(),
        OpenOptions {
            busy_timeout: std::time::Duration::from_millis(cfg.busy_timeout_ms),
            cache_kib: i64::from(cfg.cache_mib.max(1)) * 1024,
            // A shared registry that is down at boot does not keep the
            // box from reading cards (they get registry_unavailable).
            lazy: true,
            audit_hash: cfg.audit_hash,
            seal_key: cfg.seal_key_file.clone(),
            key,
            ..OpenOptions::default()
        },
    );
    let registry = tokio::task::spawn_blocking(move || Registry::open_database(&database, &opts))
        .await
        .context("opening the registry")?
        .with_context(|| format!("registry {}", cfg.database))?;
    // A sealed registry without its key: every read would fail to be
    // audited, so the daemon does not start.
    if let Some(why) = registry.seal_missing() {
        bail!("registry {}: sealing key missing: {why}", cfg.database);
    }
    let (listener, socket_lock) = bind(&cfg)?;
    let socket = cfg.socket.path.clone();
    let shutdown = CancellationToken::new();
    let (updates, rx) = tokio::sync::mpsc::channel(4);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let stop = shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => match Config::load(&config_path) {
                    Ok(config) => {
                        let _ = updates.send(Update { config, applied: None }).await;
                    }
                    Err(e) => tracing::error!(error = %e, "reload failed, keeping the running configuration"),
                },
            }
        }
        tracing::info!("signal received, shutting down");
        notify::notify("STOPPING=1");
        stop.cancel();
    });
    tracing::info!(version = cardlink::VERSION, socket = %socket.display(), database = %cfg.database, "starting");
    notify::notify("READY=1\nSTATUS=serving");
    let result = daemon::run(
        Daemon {
            listener,
            registry,
            config: cfg,
            ports: Arc::new(SerialPorts),
            updates: rx,
        },
        shutdown,
    )
    .await;
    let _ = std::fs::remove_file(&socket);
    drop(socket_lock);
    Ok(result?)
}
