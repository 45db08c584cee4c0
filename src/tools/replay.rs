//! Replay of a capture: the reader's side of the traffic played back at its
//! original timing (or faster), like gpsd's gpsfake.
//!
//! - [`play`] writes the reader's chunks into a port at their times, reads
//!   (and counts) whatever the host writes so the host never blocks, and at
//!   an `unplugged` line drops the port and plugs in a new one. The reader's
//!   bytes are those of the capture, resends included, so the host meets
//!   the same ACK timing the capture shows.
//! - [`check`] runs that against an in-process daemon (the library's
//!   [`crate::daemon::run`] on a throwaway registry, an in-memory port) and
//!   returns the socket events as a masked client sees them, one normalised
//!   JSON line each, for comparison with a `.chk` file. Run it on a tokio
//!   runtime with paused time (`cardlinkctl replay --check` does): the
//!   capture's timing then passes in virtual time, instantly and
//!   deterministically, and the replay ends when the daemon is idle.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::capture::{CaptureFile, Direction, Line};
use crate::config::Config;
use crate::registry::Registry;
use crate::sim::VirtualPorts;

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Writing to or reading from the port or the socket failed.
    #[error("replay: {0}")]
    Io(#[from] std::io::Error),
    /// The daemon's configuration for the capture's reader is not valid.
    #[error("replay: configuration: {0}")]
    Config(String),
    /// The daemon stopped with an error.
    #[error("replay: daemon: {0}")]
    Daemon(String),
    /// A time of the capture at this speed is beyond any clock.
    #[error("replay: {at:.6} s at speed {speed} is beyond the clock")]
    Time {
        /// The timestamp, in seconds.
        at: f64,
        /// The speed.
        speed: f64,
    },
}

/// What a [`play`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlayReport {
    /// Reader chunks written.
    pub chunks: u64,
    /// Reader bytes written.
    pub bytes: u64,
    /// Bytes the host wrote.
    pub host_bytes: u64,
    /// Unplugs played.
    pub unplugs: u64,
}

/// Plays the reader side of `file` into `port`, at the original timing
/// divided by `speed`. At an `unplugged` line the port is dropped and
/// `replug` gives the next one. Returns with the last port, still open.
pub async fn play<P, F, Fut>(
    file: &CaptureFile,
    mut port: P,
    speed: f64,
    mut replug: F,
) -> Result<(P, PlayReport), ReplayError>
where
    P: AsyncRead + AsyncWrite + Unpin,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<P>>,
{
    let speed = if speed.is_finite() && speed > 0.0 {
        speed
    } else {
        1.0
    };
    let first = file
        .lines
        .iter()
        .find_map(|l| match l {
            Line::Chunk(c) => Some(c.at),
            Line::Unplug { at, .. } => Some(*at),
            Line::Comment(_) => None,
        })
        .unwrap_or_default();
    let start = Instant::now();
    let mut report = PlayReport::default();
    // Host bytes are read into this buffer between writes; a read raced in
    // select! and lost takes nothing with it (AsyncReadExt::read is
    // cancellation-safe).
    let mut host = vec![0u8; 4096];
    for line in &file.lines {
        let (at, chunk) = match line {
            Line::Chunk(c) if c.dir == Direction::FromReader => (c.at, Some(c)),
            Line::Unplug { at, .. } => (*at, None),
            _ => continue,
        };
        let due = Duration::try_from_secs_f64(at.saturating_sub(first).as_secs_f64() / speed)
            .ok()
            .and_then(|d| start.checked_add(d))
            .ok_or(ReplayError::Time {
                at: at.as_secs_f64(),
                speed,
            })?;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(due) => break,
                n = port.read(&mut host) => match n {
                    Ok(0) | Err(_) => {
                        // The host closed the port: wait for the time to
                        // write, the write then reports it.
                        tokio::time::sleep_until(due).await;
                        break;
                    }
                    Ok(n) => report.host_bytes += n as u64,
                },
            }
        }
        match chunk {
            Some(c) => {
                port.write_all(&c.bytes).await?;
                port.flush().await?;
                report.chunks += 1;
                report.bytes += c.bytes.len() as u64;
            }
            None => {
                drop(port);
                report.unplugs += 1;
                port = replug().await?;
            }
        }
    }
    Ok((port, report))
}

/// How long the daemon must stay quiet (in the runtime's time) before a
/// check ends. Under paused time this passes only once every task is idle
/// and no registry job runs, and then at once.
const QUIET: Duration = Duration::from_secs(30);

/// Replays `file` against an in-process daemon whose registry is
/// `registry` (a throwaway copy: the replay writes audit rows), working in
/// `dir`, and returns the events a masked display client saw after the
/// reader connected, normalised by [`normalise`].
pub async fn check(
    file: &CaptureFile,
    registry: Registry,
    dir: &Path,
) -> Result<Vec<String>, ReplayError> {
    let h = &file.header;
    let socket = dir.join("replay.sock");
    let mut text = format!(
        "database = {:?}\nrole = \"window\"\n[socket]\npath = {:?}\n[[reader]]\nname = {:?}\npath = {:?}\nmode = \"{}\"\nencoding = \"{}\"\n",
        dir.join("unused.db"),
        socket,
        h.reader,
        dir.join("port"),
        h.mode,
        h.encoding
    );
    if h.mode == crate::reader::codec::Mode::Library {
        // Never loaded: the in-memory port stands for the library.
        text += &format!("library = {:?}\n", dir.join("replayed-library.so"));
    }
    let config = Config::parse(&text, "replay").map_err(|e| ReplayError::Config(e.to_string()))?;
    let _ = std::fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket)?;
    let ports = VirtualPorts::new();
    let port = ports.plug(&h.reader);
    let (_updates, rx) = tokio::sync::mpsc::channel(1);
    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn(crate::daemon::run(
        crate::daemon::Daemon {
            listener,
            registry,
            config,
            ports: ports.clone(),
            updates: rx,
        },
        shutdown.clone(),
    ));
    let stream = tokio::net::UnixStream::connect(&socket).await?;
    let mut lines = tokio::io::BufReader::new(stream).lines();
    // Everything up to the reader's `connected` (hello lines included)
    // depends on when the client connected, not on the capture.
    loop {
        let Some(line) = lines.next_line().await? else {
            return Err(ReplayError::Daemon("closed the socket".into()));
        };
        let v: Value = serde_json::from_str(&line).unwrap_or_default();
        if v["class"] == "READER" && v["reader"] == h.reader.as_str() && v["state"] == "connected" {
            break;
        }
    }
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let reading = tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let name = h.reader.clone();
    let (port, _) = play(file, port, 1.0, || {
        let port = ports.plug(&name);
        async move { Ok(port) }
    })
    .await?;
    let mut seen = Vec::new();
    // An idcard reader is polled by the daemon: once the capture has
    // played out, nobody answers, and after three missed replies the
    // daemon would say so. The capture's own events come within a reply's
    // time of its last bytes.
    let quiet = if h.mode == crate::reader::codec::Mode::Idcard {
        crate::daemon::serial::ID_REPLY_TIMEOUT
    } else {
        QUIET
    };
    while let Ok(Some(line)) = tokio::time::timeout(quiet, events.recv()).await {
        seen.push(line);
    }
    drop(port);
    shutdown.cancel();
    reading.abort();
    match daemon.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(ReplayError::Daemon(e.to_string())),
        Err(e) => return Err(ReplayError::Daemon(e.to_string())),
    }
    Ok(seen.iter().filter_map(|l| normalise(l)).collect())
}

/// One event as a `.chk` line: keys sorted, and what depends on the run
/// rather than on the capture left out (paths, times, counters, versions);
/// `None` for lines that are not events of the capture (`VERSION`).
pub fn normalise(line: &str) -> Option<String> {
    let mut v: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(_) => return Some(format!("(not JSON) {line}")),
    };
    if v["class"] == "VERSION" {
        return None;
    }
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for k in ["path", "at", "time", "uptime_s", "version"] {
                    m.remove(k);
                }
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    Some(v.to_string())
}

/// Compares a replay's lines with a `.chk` file's; `None` when they agree,
/// otherwise a short report of the first difference.
pub fn diff(expected: &str, got: &[String]) -> Option<String> {
    let want: Vec<&str> = expected.lines().filter(|l| !l.trim().is_empty()).collect();
    let n = want.len().max(got.len());
    for i in 0..n {
        let (w, g) = (want.get(i).copied(), got.get(i).map(String::as_str));
        if w != g {
            return Some(format!(
                "first difference at event {}:\n- expected: {}\n+ got:      {}\n({} events expected, {} got)",
                i + 1,
                w.unwrap_or("(nothing)"),
                g.unwrap_or("(nothing)"),
                want.len(),
                got.len()
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_time_beyond_the_clock_is_an_error_not_a_panic() {
        let file = CaptureFile::parse(
            "# cardlink capture 1\n# reader=a mode=frame baud=1\n0 < 02\n1000000000 < 03\n",
            "t",
        )
        .unwrap();
        let (port, _reader) = tokio::io::duplex(64);
        let r = play(&file, port, 1e-300, || async {
            Err(std::io::Error::other("no second port"))
        })
        .await;
        assert!(
            matches!(r, Err(ReplayError::Time { speed, .. }) if speed == 1e-300),
            "{:?}",
            r.map(|(_, report)| report)
        );
    }
}
