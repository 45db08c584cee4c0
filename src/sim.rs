//! The reader simulator: the reader side of protocol v1 (and the two text
//! modes) over a pseudo-terminal or a serial device, for tests, demos and
//! field checks.
//!
//! In frame mode it numbers frames, waits for the host's ACK and resends an
//! unacknowledged frame every 300 ms, up to 5 times, exactly as a reader
//! must. `noise` corrupts bytes and inserts garbage on the line;
//! `drop_acks` ignores received ACKs, forcing resends.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use firmware_protocol::frame::{encode_vec, scan, Cmd, Scan};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::reader::card::TextEncoding;
use crate::reader::codec::Mode;

/// One card the simulator can present.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SimCard {
    /// SSN (18 characters).
    pub ssn: String,
    /// Card number.
    pub card_no: String,
    /// Bank PAN, if the card has a stripe.
    #[serde(default)]
    pub pan: Option<String>,
    /// idcard: the document (`resident_id`, `hmt_residence_permit`,
    /// `foreign_permanent`, `foreign_permanent_2017`); by default what the
    /// number says (81/82/83: permit, 9: permanent resident, 15 characters:
    /// the 2017 card).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<String>,
    /// Name.
    pub name: String,
    /// `YYYYMMDD`.
    #[serde(default = "default_issued")]
    pub issued: String,
    /// `YYYYMMDD`.
    #[serde(default = "default_expires")]
    pub expires: String,
}

fn default_issued() -> String {
    "20200101".into()
}
fn default_expires() -> String {
    "20300101".into()
}

impl SimCard {
    /// The basic-info record (without line ending).
    pub fn record(&self) -> String {
        format!(
            "{}|{}|{}|{}00000000000000000000|{}|3B6D000000815448|3.00|{}|{}|SIM01|D01|",
            &self.ssn[..6],
            self.ssn,
            self.card_no,
            &self.ssn[..6].repeat(2),
            self.name,
            self.issued,
            self.expires
        )
    }

    /// Track 1 and track 2 (needs a PAN), SSN in track 1's discretionary data.
    pub fn tracks(&self) -> Option<String> {
        let pan = self.pan.as_ref()?;
        let yymm = format!("{}{}", &self.expires[2..4], &self.expires[4..6]);
        Some(format!(
            "%B{pan}^CARDHOLDER/SIM^{yymm}120{}000?;{pan}={yymm}1201000?",
            self.ssn
        ))
    }

    /// The bytes the reader sends in `mode` for this card, the record's
    /// name in `encoding`, and the frame command that carries them.
    pub fn payload(&self, mode: Mode, encoding: TextEncoding) -> (u8, Vec<u8>) {
        match (mode, self.tracks()) {
            (Mode::Magstripe, Some(t)) => (Cmd::CardMag as u8, t.into_bytes()),
            _ => {
                let record = self.record();
                let bytes = match encoding {
                    TextEncoding::Utf8 => record.into_bytes(),
                    TextEncoding::Gbk => encoding_rs::GBK.encode(&record).0.into_owned(),
                };
                (Cmd::CardIc as u8, bytes)
            }
        }
    }
}

/// Reads a cards file: JSON lines of [`SimCard`].
pub fn load_cards(path: &Path) -> io::Result<Vec<SimCard>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}:{}: {e}", path.display(), i + 1),
                )
            })
        })
        .collect()
}

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Protocol to speak.
    pub mode: Mode,
    /// Encoding of names in IC records.
    pub encoding: TextEncoding,
    /// Line noise: the probability of a garbage burst before a frame or line;
    /// each byte is also flipped with probability `noise / 200` (at 0.3,
    /// about one 150-byte card frame in five arrives corrupted).
    pub noise: f64,
    /// Probability of ignoring a received ACK.
    pub drop_acks: f64,
    /// Pause between swipes.
    pub interval: Duration,
    /// Swipes to make (None: forever, cycling through the cards).
    pub count: Option<u64>,
    /// RNG seed.
    pub seed: u64,
    /// idcard: the SW3 every command gets during the first `interval`
    /// (a SAM fault such as `0x60` self-test failed), or none.
    pub sam_fault: Option<u8>,
}

/// What a simulation run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SimReport {
    /// Swipes made.
    pub swipes: u64,
    /// Frames written, resends included.
    pub frames_sent: u64,
    /// Swipes acknowledged by the host.
    pub acked: u64,
    /// Swipes given up after 5 resends.
    pub unacked: u64,
}

/// What the simulator answers to `STATUS_REQUEST`.
pub const FIRMWARE: &str = concat!("cardlink-sim ", env!("CARGO_PKG_VERSION"));

/// Resend interval of protocol v1.
pub const RESEND: Duration = Duration::from_millis(300);
/// Resends of protocol v1.
pub const RESENDS: u32 = 5;

/// Runs the simulator on `io` until `count` swipes are made.
pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    cards: &[SimCard],
    opts: &SimOptions,
    mut on_swipe: impl FnMut(u64, &SimCard),
) -> io::Result<SimReport> {
    if opts.mode == Mode::Idcard {
        return run_idcard(io, cards, opts, on_swipe).await;
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed);
    let mut report = SimReport::default();
    let mut seq: u8 = 0;
    let mut inbox: Vec<u8> = Vec::new();
    if cards.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no cards to swipe",
        ));
    }
    loop {
        if opts.count.is_some_and(|c| report.swipes >= c) {
            return Ok(report);
        }
        let card = &cards[(report.swipes % cards.len() as u64) as usize];
        report.swipes += 1;
        on_swipe(report.swipes, card);
        let (cmd, payload) = card.payload(opts.mode, opts.encoding);
        if opts.mode != Mode::Frame {
            let mut line = payload;
            line.extend_from_slice(b"\r\n");
            let wire = noisy(&line, opts.noise, &mut rng);
            io.write_all(&wire).await?;
            io.flush().await?;
        } else {
            seq = seq.wrapping_add(1);
            let card_seq = seq;
            let frame = encode_vec(card_seq, cmd, &payload)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let mut acked = false;
            for _ in 0..=RESENDS {
                let wire = noisy(&frame, opts.noise, &mut rng);
                io.write_all(&wire).await?;
                io.flush().await?;
                report.frames_sent += 1;
                let (got_ack, status_requested) =
                    wait_ack(&mut io, &mut inbox, card_seq, opts.drop_acks, &mut rng).await?;
                if status_requested {
                    // Answer like firmware does, with a frame of its own.
                    seq = seq.wrapping_add(1);
                    let status = encode_vec(seq, Cmd::Status as u8, FIRMWARE.as_bytes())
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                    io.write_all(&status).await?;
                    report.frames_sent += 1;
                }
                if got_ack {
                    acked = true;
                    break;
                }
            }
            if acked {
                report.acked += 1;
            } else {
                report.unacked += 1;
            }
        }
        tokio::time::sleep(opts.interval).await;
    }
}

impl SimCard {
    /// An identity document (no social-security card number, no PAN) with
    /// the number `number`, valid 2020–2040; the document is what the
    /// number says (see [`SimCard::id_document`]).
    pub fn identity(number: &str, name: &str) -> SimCard {
        SimCard {
            ssn: number.into(),
            card_no: String::new(),
            pan: None,
            name: name.into(),
            issued: "20200101".into(),
            expires: "20400101".into(),
            document: None,
        }
    }

    /// The identity document this card stands for in idcard mode.
    pub fn id_document(&self) -> &str {
        if let Some(d) = &self.document {
            return d;
        }
        match (self.ssn.len(), self.ssn.as_bytes().first()) {
            (15, _) => "foreign_permanent_2017",
            (_, Some(b'9')) => "foreign_permanent",
            _ if ["81", "82", "83"].iter().any(|p| self.ssn.starts_with(p)) => {
                "hmt_residence_permit"
            }
            _ => "resident_id",
        }
    }

    /// The 256-byte GB/T 490 text block an identity card of this person
    /// holds (UTF-16LE, space padded; PROTOCOL.md §7.4).
    pub fn id_text(&self) -> [u8; 256] {
        let mut b = [0u8; 256];
        for c in b.chunks_exact_mut(2) {
            c.copy_from_slice(&[0x20, 0]);
        }
        let mut put = |at: usize, width: usize, text: &str| {
            let mut i = at;
            for u in text.encode_utf16() {
                if i + 2 > at + width {
                    break;
                }
                b[i..i + 2].copy_from_slice(&u.to_le_bytes());
                i += 2;
            }
        };
        let birth = self.ssn.get(6..14).unwrap_or("19800101");
        let sex = match self.ssn.as_bytes().get(16) {
            Some(d) if d % 2 == 1 => "1",
            _ => "2",
        };
        match self.id_document() {
            "foreign_permanent_2017" => {
                put(0, 120, "SIMULATED, HOLDER");
                put(120, 2, sex);
                put(122, 30, &self.ssn);
                put(152, 6, "USA");
                put(158, 30, &self.name);
                put(188, 16, &self.issued);
                put(204, 16, &self.expires);
                put(220, 16, "19800101");
                put(236, 4, "20");
                put(240, 8, "1100");
                put(248, 2, "I");
            }
            "foreign_permanent" => {
                put(0, 30, &self.name);
                put(30, 2, sex);
                put(36, 16, birth);
                put(122, 36, &self.ssn);
                put(188, 16, &self.issued);
                put(204, 16, &self.expires);
                put(248, 2, "Y");
            }
            doc => {
                put(0, 30, &self.name);
                put(30, 2, sex);
                if doc == "resident_id" {
                    put(32, 4, "01");
                }
                put(36, 16, birth);
                put(52, 70, "模拟省模拟市模拟路1号");
                put(122, 36, &self.ssn);
                put(158, 30, "模拟市公安局");
                put(188, 16, &self.issued);
                put(204, 16, &self.expires);
                if doc == "hmt_residence_permit" {
                    put(220, 18, "H00000000");
                    put(238, 4, "01");
                    put(248, 2, "J");
                }
            }
        }
        b
    }
}

/// The SAM id the simulated module reports (`12 FF`).
pub const SIM_SAM_ID: [u8; 16] = [
    0x00, 0x05, 0x00, 0x01, 0x01, 0x32, 0xB7, 0x22, 0x00, 0x00, 0x30, 0x39, 0x00, 0x00, 0x00, 0x2A,
];

/// idcard mode: a SAM module. Commands are answered as they come; each card
/// is placed for `interval` and then taken away for `interval`. After a
/// read the card stays placed but find answers "no card" (select still
/// succeeds) until it is taken away, as real modules do. With `noise`,
/// that share of read replies is first sent corrupted (a flipped checksum,
/// or cut short); the host's next read gets it whole. With `sam_fault`,
/// every command gets that SW3 during the first `interval`.
async fn run_idcard<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    cards: &[SimCard],
    opts: &SimOptions,
    mut on_swipe: impl FnMut(u64, &SimCard),
) -> io::Result<SimReport> {
    use firmware_protocol::idcard::{encode_reply_vec, xor, Command, PREAMBLE};
    use tokio::time::Instant;
    if cards.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no cards to place",
        ));
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed);
    let mut report = SimReport::default();
    let start = Instant::now();
    let fault_until = opts.sam_fault.map(|_| start + opts.interval);
    // The card on the module, whether it was read, and whether the first
    // sending of its read reply was spoilt already.
    let mut placed: Option<usize> = None;
    let mut read_done = false;
    let mut spoilt = false;
    let mut next_change = start + opts.interval;
    let mut inbox: Vec<u8> = Vec::new();
    let mut buf = [0u8; 256];
    let mut cut = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next_change) => {
                next_change += opts.interval;
                match placed {
                    Some(_) => placed = None,
                    // One more interval with no card (still answering), then done.
                    None if opts.count.is_some_and(|c| report.swipes >= c) => return Ok(report),
                    None => {
                        let i = (report.swipes % cards.len() as u64) as usize;
                        report.swipes += 1;
                        on_swipe(report.swipes, &cards[i]);
                        placed = Some(i);
                        read_done = false;
                        spoilt = false;
                    }
                }
            }
            n = io.read(&mut buf) => {
                let n = n?;
                if n == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "host closed the line"));
                }
                inbox.extend_from_slice(&buf[..n]);
            }
        }
        // Answer every whole command received.
        while let Some(i) = inbox.windows(5).position(|w| w == PREAMBLE) {
            if inbox.len() < i + 10 {
                inbox.drain(..i);
                break;
            }
            let cmd = &inbox[i..i + 10];
            let sum_ok = xor(&cmd[5..9]) == cmd[9] && cmd[5..7] == [0, 3];
            let command = Command::from_code(cmd[7], cmd[8]);
            inbox.drain(..i + 10);
            let fault = fault_until
                .filter(|t| Instant::now() < *t)
                .and(opts.sam_fault);
            let (sw3, data): (u8, Vec<u8>) = match (sum_ok, command, fault) {
                (false, _, _) => (0x10, Vec::new()),
                (_, _, Some(code)) => (code, Vec::new()),
                (_, None, _) => (0x21, Vec::new()),
                (_, Some(Command::SamStatus), _) => (0x90, Vec::new()),
                (_, Some(Command::SamId), _) => (0x90, SIM_SAM_ID.to_vec()),
                (_, Some(Command::Find), _) => match placed {
                    Some(_) if !read_done => (0x9F, vec![0; 4]),
                    _ => (0x80, Vec::new()),
                },
                (_, Some(Command::Select), _) => match placed {
                    Some(_) => (0x90, vec![0; 8]),
                    None => (0x81, Vec::new()),
                },
                (_, Some(Command::Read), _) => match placed {
                    Some(i) => {
                        read_done = true;
                        let mut d = vec![0x01, 0x00, 0x04, 0x00];
                        d.extend_from_slice(&cards[i].id_text());
                        // The photo: opaque bytes, as a real module's WLT.
                        d.extend((0..1024u32).map(|k| (k * 131 + 7) as u8));
                        (0x90, d)
                    }
                    None => (0x41, Vec::new()),
                },
            };
            let mut wire = encode_reply_vec([0, 0, sw3], &data)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            if command == Some(Command::Read)
                && sw3 == 0x90
                && !spoilt
                && opts.noise > 0.0
                && rng.random_bool(opts.noise.min(1.0))
            {
                spoilt = true;
                if cut {
                    wire.truncate(wire.len() / 2);
                } else {
                    let last = wire.len() - 1;
                    wire[last] ^= 0x5A;
                }
                cut = !cut;
            } else if command == Some(Command::Read) && sw3 == 0x90 {
                report.acked += 1;
            }
            io.write_all(&wire).await?;
            io.flush().await?;
            report.frames_sent += 1;
        }
        if inbox.len() > 4096 {
            inbox.clear();
        }
    }
}

fn noisy(bytes: &[u8], rate: f64, rng: &mut impl Rng) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 16);
    if rate > 0.0 && rng.random_bool(rate.min(1.0)) {
        let n = rng.random_range(1..24);
        out.extend((0..n).map(|_| {
            if rng.random_bool(0.2) {
                0x02
            } else {
                rng.random::<u8>()
            }
        }));
    }
    for &b in bytes {
        if rate > 0.0 && rng.random_bool((rate / 200.0).min(1.0)) {
            out.push(b ^ (1 << rng.random_range(0..8)));
        } else {
            out.push(b);
        }
    }
    out
}

/// Waits up to [`RESEND`] for the ACK of `seq`. Returns whether it came and
/// whether the host asked for a STATUS frame meanwhile.
async fn wait_ack<S: AsyncRead + Unpin>(
    io: &mut S,
    inbox: &mut Vec<u8>,
    seq: u8,
    drop_acks: f64,
    rng: &mut impl Rng,
) -> io::Result<(bool, bool)> {
    let deadline = tokio::time::Instant::now() + RESEND;
    let mut buf = [0u8; 256];
    let mut status_requested = false;
    loop {
        // Consume host frames already received.
        loop {
            match scan(inbox) {
                Scan::Frame {
                    frame, consumed, ..
                } => {
                    let is_ack = frame.cmd == Cmd::Ack as u8 && frame.seq == seq;
                    status_requested |= frame.cmd == Cmd::StatusRequest as u8;
                    inbox.drain(..consumed);
                    if is_ack && !(drop_acks > 0.0 && rng.random_bool(drop_acks.min(1.0))) {
                        return Ok((true, status_requested));
                    }
                }
                Scan::NeedMore { discard } => {
                    inbox.drain(..discard);
                    break;
                }
            }
        }
        match tokio::time::timeout_at(deadline, io.read(&mut buf)).await {
            Err(_) => return Ok((false, status_requested)),
            Ok(Ok(0)) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "host closed the line",
                ))
            }
            Ok(Ok(n)) => inbox.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => return Err(e),
        }
    }
}

/// A simulated ESC/POS receipt printer on the master side of a pty (or
/// any stream): answers `DLE EOT 1`–`4` as a printer in `state` would
/// (the state can change while it runs: paper end, cover open…), and hands
/// each receipt, decoded at its cut, to `on_receipt`. Returns when the
/// line closes.
pub async fn play_printer<S: AsyncRead + AsyncWrite + Unpin>(
    mut line: S,
    state: std::sync::Arc<std::sync::Mutex<crate::printer::PrinterState>>,
    encoding: crate::printer::Encoding,
    mut on_receipt: impl FnMut(crate::printer::escpos::Printed),
) -> io::Result<()> {
    use crate::printer::escpos::Printed;
    use crate::printer::StatusBytes;
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = line.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let from = pending.len();
        pending.extend_from_slice(&buf[..n]);
        let mut answers = Vec::new();
        // A query may have come split over two reads.
        for i in from.saturating_sub(2)..pending.len().saturating_sub(2) {
            if pending[i] == 0x10 && pending[i + 1] == 0x04 && i + 2 >= from {
                let st = *state.lock().unwrap_or_else(|p| p.into_inner());
                answers.extend(StatusBytes::for_state(st).reply(pending[i + 2]));
            }
        }
        if !answers.is_empty() {
            line.write_all(&answers).await?;
        }
        // Everything up to the last cut is whole receipts.
        let last_cut = pending.windows(2).rposition(|w| w == [0x1D, b'V']);
        if let Some(at) = last_cut.filter(|at| at + 4 <= pending.len()) {
            let done: Vec<u8> = pending.drain(..at + 4).collect();
            for r in Printed::receipts(&done, encoding) {
                on_receipt(r);
            }
        }
    }
}

/// The master side of a pseudo-terminal pair, as async I/O.
pub struct PtyMaster {
    fd: AsyncFd<OwnedFd>,
    // Kept open so the master never sees EIO while the daemon reconnects.
    _slave: OwnedFd,
    slave_path: PathBuf,
    link: Option<PathBuf>,
}

impl PtyMaster {
    /// Opens a raw-mode pty pair. If `link` is given, a symlink there points
    /// at the slave (replacing an older link), like a udev-named device.
    pub fn open(link: Option<&Path>) -> io::Result<PtyMaster> {
        use nix::sys::termios;
        let pty = nix::pty::openpty(None, None).map_err(io::Error::from)?;
        // openpty(3) does not set close-on-exec; a child process (the daemon
        // under test, say) must not inherit the master, or it never closes.
        for fd in [&pty.master, &pty.slave] {
            nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )
            .map_err(io::Error::from)?;
        }
        let mut t = termios::tcgetattr(&pty.slave).map_err(io::Error::from)?;
        termios::cfmakeraw(&mut t);
        termios::tcsetattr(&pty.slave, termios::SetArg::TCSANOW, &t).map_err(io::Error::from)?;
        let slave_path = std::fs::read_link(format!("/proc/self/fd/{}", pty.slave.as_raw_fd()))?;
        let flags = nix::fcntl::fcntl(&pty.master, nix::fcntl::FcntlArg::F_GETFL)
            .map_err(io::Error::from)?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&pty.master, nix::fcntl::FcntlArg::F_SETFL(flags))
            .map_err(io::Error::from)?;
        if let Some(link) = link {
            let tmp = link.with_extension("new-link");
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink(&slave_path, &tmp)?;
            std::fs::rename(&tmp, link)?;
        }
        Ok(PtyMaster {
            // The master fd is owned by the AsyncFd from here on, so I/O safety holds.
            #[allow(deprecated)]
            fd: AsyncFd::new(pty.master)?,
            _slave: pty.slave,
            slave_path,
            link: link.map(Path::to_path_buf),
        })
    }

    /// Bytes written to the master that the slave side has not read yet
    /// (`FIONREAD` on the slave): 0 once the host has taken everything.
    pub fn unread(&self) -> io::Result<usize> {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one c_int through the pointer, which
        // points at `n`, alive for the call; the fd is our open slave.
        let r = unsafe { libc::ioctl(self._slave.as_raw_fd(), libc::FIONREAD, &mut n) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Path of the slave device (`/dev/pts/N`).
    pub fn slave_path(&self) -> &Path {
        &self.slave_path
    }

    /// The symlink, if any.
    pub fn link(&self) -> Option<&Path> {
        self.link.as_deref()
    }
}

impl AsyncRead for PtyMaster {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard
                .try_io(|fd| nix::unistd::read(fd.get_ref(), unfilled).map_err(io::Error::from))
            {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // EIO: no slave open; report EOF.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Poll::Ready(Ok(())),
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for PtyMaster {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(io::Error::from))
            {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Reader ports in memory, for running the daemon in-process: the daemon
/// opens a reader by name and gets the daemon end of a pipe the test has
/// [`plugged`](VirtualPorts::plug) in; dropping the test's end is an unplug
/// (the daemon reads end of file and reconnects with backoff). Everything
/// stays inside one tokio runtime, so tests can run with paused time.
#[derive(Debug, Default)]
pub struct VirtualPorts {
    waiting: std::sync::Mutex<std::collections::HashMap<String, tokio::io::DuplexStream>>,
}

/// The test's end of a virtual reader port.
pub type VirtualPort = tokio::io::DuplexStream;

/// Bytes buffered in each direction of a virtual port (like a UART FIFO
/// plus the kernel's tty buffer).
pub const VIRTUAL_BUFFER: usize = 64 * 1024;

impl VirtualPorts {
    /// No ports plugged in.
    pub fn new() -> std::sync::Arc<VirtualPorts> {
        std::sync::Arc::default()
    }

    /// Plugs in reader `name` and returns the reader's end; the daemon gets
    /// the other end at its next attempt to open `name`.
    pub fn plug(&self, name: &str) -> VirtualPort {
        let (reader, daemon) = tokio::io::duplex(VIRTUAL_BUFFER);
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), daemon);
        reader
    }
}

impl crate::daemon::OpenPort for VirtualPorts {
    /// A library reader in memory: its lines are the library's answers.
    fn library_port(
        &self,
        cfg: &crate::config::ReaderConfig,
    ) -> Option<io::Result<crate::daemon::Port>> {
        Some(self.open(cfg))
    }

    fn open(&self, cfg: &crate::config::ReaderConfig) -> io::Result<crate::daemon::Port> {
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&cfg.name)
            .map(|p| Box::new(p) as crate::daemon::Port)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no virtual reader plugged in as {}", cfg.name),
                )
            })
    }
}

/// Cards from a registry that show every outcome, for the simulator and the
/// demo: holders, members, unlinked persons, lost or frozen cards, an
/// expired card (expiry judged against `today`, China time, like the
/// daemon), and one card unknown to the registry; interleaved so a demo
/// shows every outcome early.
pub fn sample_cards(
    reg: &crate::registry::Registry,
    today: crate::Date,
) -> Result<Vec<SimCard>, crate::registry::RegistryError> {
    let mut groups: Vec<Vec<SimCard>> = reg
        .sample_cards(today)?
        .into_iter()
        .map(|g| {
            g.into_iter()
                .map(|c| SimCard {
                    ssn: c.ssn,
                    card_no: c.card_no,
                    pan: c.pan,
                    name: c.name,
                    issued: c.issued.replace('-', ""),
                    expires: c.expires.replace('-', ""),
                    document: None,
                })
                .collect()
        })
        .collect();
    groups.push(vec![SimCard {
        ssn: "11010519491231002X".into(),
        card_no: "Z99999999".into(),
        pan: None,
        name: "未登记".into(),
        issued: "20200101".into(),
        expires: "20300101".into(),
        document: None,
    }]);
    let longest = groups.iter().map(Vec::len).max().unwrap_or(0);
    Ok((0..longest)
        .flat_map(|k| groups.iter().filter_map(move |g| g.get(k).cloned()))
        .collect())
}
