//! Recording a reader's raw traffic, both directions, for support
//! ("the kiosk reads some cards wrong"): the format is in PROTOCOL.md §6.
//!
//! Every reader port is wrapped in a [`CapturePort`]; it writes only while
//! the reader's [`Capture`] switch is on — from the configuration
//! (`capture = true` on the reader) or for N minutes through the socket's
//! privileged `capture` request. Files are `<capture_dir>/<reader>.cap`,
//! mode 0600; past `capture_max_mib` the file is renamed `<reader>.cap.1`
//! (replacing an older one) and a new one begun, so at most twice the cap
//! is kept per reader. A capture holds personal data until it is redacted.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::serial::{Port, PortIo};
use crate::config::ReaderConfig;

pub use crate::capture::{Direction, MAGIC};

struct Open {
    file: File,
    path: PathBuf,
    written: u64,
    started: Instant,
}

/// The capture switch and file of one reader.
pub struct Capture {
    reader: ReaderConfig,
    dir: PathBuf,
    max_bytes: u64,
    /// Always on (from the configuration).
    always: bool,
    /// On until then (socket request).
    until: Mutex<Option<Instant>>,
    open: Mutex<Option<Open>>,
}

impl Capture {
    /// The switch for `reader`, writing under `dir`.
    pub fn new(reader: &ReaderConfig, dir: &Path, max_mib: u32) -> Arc<Capture> {
        Arc::new(Capture {
            reader: reader.clone(),
            dir: dir.to_path_buf(),
            max_bytes: u64::from(max_mib.max(1)) * 1024 * 1024,
            always: reader.capture,
            until: Mutex::new(None),
            open: Mutex::new(None),
        })
    }

    /// Records until `until` (at least; a configured capture goes on).
    pub fn record_until(&self, until: Instant) {
        *self.until.lock().unwrap_or_else(|p| p.into_inner()) = Some(until);
    }

    /// The file being written, if any.
    pub fn path(&self) -> PathBuf {
        self.dir.join(format!("{}.cap", self.reader.name))
    }

    fn on(&self, now: Instant) -> bool {
        self.always
            || self
                .until
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some_and(|u| now < u)
    }

    fn header(&self) -> String {
        let r = &self.reader;
        let parity = match r.parity {
            crate::config::Parity::None => "none",
            crate::config::Parity::Even => "even",
            crate::config::Parity::Odd => "odd",
        };
        format!(
            "{MAGIC}\n# reader={} mode={} baud={} parity={parity} encoding={} version={} started={}\n",
            r.name,
            r.mode,
            r.baud,
            r.encoding,
            env!("CARGO_PKG_VERSION"),
            humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        )
    }

    fn start(&self, now: Instant) -> std::io::Result<Open> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::create_dir_all(&self.dir)?;
        let path = self.path();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)?;
        let header = self.header();
        file.write_all(header.as_bytes())?;
        let written = file.metadata()?.len();
        tracing::info!(reader = %self.reader.name, path = %path.display(), "capturing reader traffic");
        Ok(Open {
            file,
            path,
            written,
            started: now,
        })
    }

    /// Appends one chunk of traffic when the switch is on.
    pub fn record(&self, dir: Direction, bytes: &[u8]) {
        self.append(|t| crate::capture::chunk_line(t, dir, bytes));
    }

    /// Notes that the port closed (`# SECONDS unplugged: WHY`), so a replay
    /// unplugs there too.
    pub fn unplugged(&self, why: &str) {
        self.append(|t| crate::capture::unplug_line(t, why));
    }

    fn append(&self, line: impl FnOnce(std::time::Duration) -> String) {
        let now = Instant::now();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if !self.on(now) {
            *open = None;
            return;
        }
        if open.is_none() {
            match self.start(now) {
                Ok(o) => *open = Some(o),
                Err(e) => {
                    tracing::warn!(reader = %self.reader.name, error = %e, "cannot write the capture");
                    return;
                }
            }
        }
        let Some(o) = open.as_mut() else { return };
        let line = line(now.saturating_duration_since(o.started));
        if let Err(e) = o.file.write_all(line.as_bytes()) {
            tracing::warn!(reader = %self.reader.name, error = %e, "cannot write the capture");
            *open = None;
            return;
        }
        o.written += line.len() as u64;
        if o.written > self.max_bytes {
            let old = o.path.with_extension("cap.1");
            if let Err(e) = std::fs::rename(&o.path, &old) {
                tracing::warn!(reader = %self.reader.name, error = %e, "cannot rotate the capture");
            }
            // Begun again at the next chunk, with a new header.
            *open = None;
        }
    }
}

/// A reader port that records what passes through it.
pub struct CapturePort {
    inner: Port,
    capture: Arc<Capture>,
}

impl CapturePort {
    /// Wraps `inner`.
    pub fn wrap(inner: Port, capture: Arc<Capture>) -> Port {
        Box::new(CapturePort { inner, capture })
    }
}

impl AsyncRead for CapturePort {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let room = buf.remaining() > 0;
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        match &r {
            Poll::Ready(Ok(())) => {
                let got = &buf.filled()[before..];
                if !got.is_empty() {
                    self.capture.record(Direction::FromReader, got);
                } else if room {
                    self.capture.unplugged("end of file");
                }
            }
            Poll::Ready(Err(e)) => self.capture.unplugged(&e.to_string()),
            Poll::Pending => {}
        }
        r
    }
}

impl AsyncWrite for CapturePort {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.capture.record(Direction::ToReader, &buf[..n]);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// A capture port is itself a port.
const _: fn() = || {
    fn is_port<T: PortIo>() {}
    is_port::<CapturePort>();
};
