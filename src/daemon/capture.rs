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
//!
//! An identity-card reader's capture never holds the photo: in the copy
//! written to the file, the photo bytes of every read reply are zeros (the
//! checksum adjusted, so a good reply stays good and a bad one bad), see
//! [`PhotoMask`].

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::port::{Port, PortIo};
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
    /// For an idcard reader: the photo mask of the recorded copy.
    photo: Option<PhotoMask>,
}

impl CapturePort {
    /// Wraps `inner`.
    pub fn wrap(inner: Port, capture: Arc<Capture>) -> Port {
        let photo =
            (capture.reader.mode == crate::reader::codec::Mode::Idcard).then(PhotoMask::default);
        Box::new(CapturePort {
            inner,
            capture,
            photo,
        })
    }
}

/// Zeroes the photo of identity-card read replies in a recorded copy of a
/// module's byte stream, whatever the reads' sizes.
///
/// A read reply starts `AA AA AA 96 69 05 08 00 00 90`; its photo is the
/// 1024 bytes after the lengths and the text block (offsets 270..1294 from
/// the preamble), the checksum follows. The checksum is changed by the XOR
/// of the zeroed bytes. A pause of more than [`PhotoMask::GAP`] inside a
/// reply means it was cut short: what comes next is another reply.
#[derive(Debug, Default)]
pub struct PhotoMask {
    window: [u8; 10],
    /// Offset in the current read reply, counted from its preamble.
    at: Option<usize>,
    /// XOR of the photo bytes zeroed so far in it.
    acc: u8,
    last: Option<Instant>,
}

impl PhotoMask {
    /// A reply at 9600 baud and more comes in well under this.
    pub const GAP: std::time::Duration = std::time::Duration::from_millis(300);
    const HEADER: [u8; 10] = [0xAA, 0xAA, 0xAA, 0x96, 0x69, 0x05, 0x08, 0x00, 0x00, 0x90];
    const PHOTO: std::ops::Range<usize> = 270..1294;
    const CHK: usize = 1294;

    /// The bytes to record for `bytes` read at `now`.
    pub fn mask(&mut self, bytes: &[u8], now: Instant) -> Vec<u8> {
        if self
            .last
            .is_some_and(|l| now.saturating_duration_since(l) > Self::GAP)
        {
            self.at = None;
        }
        self.last = Some(now);
        let mut out = bytes.to_vec();
        for (o, &b) in out.iter_mut().zip(bytes) {
            if let Some(k) = self.at {
                if Self::PHOTO.contains(&k) {
                    self.acc ^= b;
                    *o = 0;
                } else if k == Self::CHK {
                    *o = b ^ self.acc;
                }
                self.at = (k < Self::CHK).then_some(k + 1);
            }
            self.window.rotate_left(1);
            self.window[9] = b;
            if self.window == Self::HEADER {
                self.at = Some(10);
                self.acc = 0;
            }
        }
        out
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
                    let this = &mut *self;
                    match this.photo.as_mut() {
                        Some(mask) => {
                            let copy = mask.mask(got, Instant::now());
                            this.capture.record(Direction::FromReader, &copy);
                        }
                        None => this.capture.record(Direction::FromReader, got),
                    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use firmware_protocol::idcard::{encode_reply_vec, scan, Scan};

    fn read_reply(photo: u8) -> Vec<u8> {
        let mut d = vec![0x01, 0x00, 0x04, 0x00];
        d.extend(std::iter::repeat_n(0x20, 256));
        d.extend(std::iter::repeat_n(photo, 1024));
        encode_reply_vec([0, 0, 0x90], &d).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn the_photo_never_reaches_the_file_and_replies_stay_valid() {
        let good = read_reply(0x5A);
        let mut bad = read_reply(0x33);
        let last = bad.len() - 1;
        bad[last] ^= 0x0F;
        let mut stream = b"noise".to_vec();
        stream.extend(&good);
        stream.extend(&bad);
        for chunk in [1, 7, 300, 4000] {
            let mut m = PhotoMask::default();
            let mut copy = Vec::new();
            for piece in stream.chunks(chunk) {
                copy.extend(m.mask(piece, Instant::now()));
            }
            assert_eq!(copy.len(), stream.len());
            let mut buf = &copy[5..];
            // The good reply is still good, with no photo.
            match scan(buf) {
                Scan::Reply {
                    reply, consumed, ..
                } => {
                    assert!(reply.data[260..].iter().all(|&b| b == 0), "chunk {chunk}");
                    buf = &buf[consumed..];
                }
                other => panic!("chunk {chunk}: {other:?}"),
            }
            // The bad one is still bad.
            assert!(matches!(scan(buf), Scan::Corrupt { .. }), "chunk {chunk}");
            assert!(!copy.contains(&0x5A) && !copy.contains(&0x33));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_cut_reply_does_not_spoil_the_next() {
        let cut = &read_reply(0x5A)[..700];
        let whole = read_reply(0x5A);
        let mut m = PhotoMask::default();
        let mut copy = m.mask(cut, Instant::now());
        // The module is asked again after a timeout.
        tokio::time::advance(std::time::Duration::from_secs(2)).await;
        copy.extend(m.mask(&whole, Instant::now()));
        assert!(!copy.contains(&0x5A));
        let at = copy.len() - whole.len();
        assert!(matches!(scan(&copy[at..]), Scan::Reply { .. }));
    }
}
