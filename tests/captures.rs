//! The field-capture regression suite (`tests/captures/`, like gpsd's
//! captured device logs): every capture is replayed through an in-process
//! daemon on the demo registry and its masked socket events must equal its
//! `.chk` file; redaction leaves no original value in any of them; the CLI
//! commands work as the operator types them.
//!
//! `CARDLINK_UPDATE_CAPTURES=1 cargo test --test captures` rewrites every
//! `.chk` (review the diff). The captures themselves were written by
//! `cargo test --test captures -- --ignored write_the_suite` (hand-made
//! scenarios, and one recorded from the simulator through the real
//! daemon); `tests/captures/README.md` lists them.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cardlink::capture::redact::Redactor;
use cardlink::capture::{chunk_line, unplug_line, CaptureFile, Direction, MAGIC};
use cardlink::ctl::{replay_check, CheckOutcome, REPLAY_REGISTRY};
use cardlink::reader::card::TextEncoding;
use cardlink::registry::{OpenOptions, Registry};
use cardlink::sim::SimCard;
use cardlink::Date;
use common::{reader_stream, scan_frames};
use firmware_protocol::frame::{encode_vec, Cmd};

fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/captures")
}

fn captures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(suite_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cap"))
        .collect();
    v.sort();
    v
}

/// The demo registry the captures refer to, made once per test.
fn replay_registry(dir: &Path) -> PathBuf {
    let db = dir.join("replay.db");
    let mut reg = Registry::open(&db, &OpenOptions::default()).unwrap();
    reg.gen_demo(&REPLAY_REGISTRY).unwrap();
    reg.connection()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    db
}

#[tokio::test(start_paused = true)]
async fn every_capture_replays_to_its_chk() {
    let all = captures();
    assert!(all.len() >= 12, "the suite holds {} captures", all.len());
    let dir = tempfile::tempdir().unwrap();
    let db = replay_registry(dir.path());
    let regen = std::env::var_os("CARDLINK_UPDATE_CAPTURES").is_some();
    let mut failures = Vec::new();
    for cap in &all {
        match replay_check(cap, regen, Some(&db)).await.unwrap() {
            CheckOutcome::Match(n) => assert!(n > 0, "{}: no events at all", cap.display()),
            CheckOutcome::Written(n) => eprintln!("{}.chk: {n} events", cap.display()),
            CheckOutcome::Differ(d) => failures.push(format!("{}: {d}", cap.display())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A `.chk` line that no longer matches is reported, with the event.
#[tokio::test(start_paused = true)]
async fn a_changed_chk_is_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let db = replay_registry(dir.path());
    let cap = dir.path().join("x.cap");
    std::fs::copy(suite_dir().join("frame-basic-gbk.cap"), &cap).unwrap();
    let chk = std::fs::read_to_string(suite_dir().join("frame-basic-gbk.cap.chk")).unwrap();
    std::fs::write(
        dir.path().join("x.cap.chk"),
        chk.replacen("\"outcome\":\"ok\"", "\"outcome\":\"lost\"", 1),
    )
    .unwrap();
    match replay_check(&cap, false, Some(&db)).await.unwrap() {
        CheckOutcome::Differ(d) => assert!(d.contains("\"outcome\":\"lost\""), "{d}"),
        other => panic!("{other:?}"),
    }
}

/// Values a capture holds, found independently of the redactor: the
/// fields of every record and stripe that the protocol crate parses, and
/// every SSN-shaped run of characters.
fn personal_values(file: &CaptureFile) -> BTreeSet<Vec<u8>> {
    let stream = reader_stream(file);
    let mut out = BTreeSet::new();
    // Every maximal run of 17 digits followed by a digit or X.
    for w in stream.windows(18) {
        if w[..17].iter().all(u8::is_ascii_digit) && (w[17].is_ascii_digit() || w[17] == b'X') {
            out.insert(w.to_vec());
        }
    }
    // An identity card's text block: every field of at least two
    // characters, as it is on the wire (UTF-16LE), spaces trimmed; the
    // photo bytes.
    if file.header.mode == cardlink::reader::codec::Mode::Idcard {
        let pre = firmware_protocol::idcard::PREAMBLE;
        for (i, _) in stream.windows(5).enumerate().filter(|(_, w)| *w == pre) {
            let Some(text) = stream.get(i + 14..i + 14 + 256) else {
                continue;
            };
            if stream[i + 5..i + 10] != [0x05, 0x08, 0, 0, 0x90] {
                continue;
            }
            for r in [0..30, 52..122, 122..158, 158..188] {
                let mut f = &text[r];
                while f.ends_with(&[0x20, 0]) {
                    f = &f[..f.len() - 2];
                }
                if f.len() >= 4 {
                    out.insert(f.to_vec());
                }
            }
            // (cardlinkd records zeros there; a capture from elsewhere may not.)
            if let Some(photo) = stream.get(i + 14 + 256..i + 14 + 256 + 64) {
                if photo.iter().any(|&b| b != 0) {
                    out.insert(photo.to_vec());
                }
            }
        }
    }
    // The payloads: valid frames in frame mode, lines otherwise.
    let mut payloads: Vec<Vec<u8>> = Vec::new();
    if file.header.mode == cardlink::reader::codec::Mode::Frame {
        let mut buf = &stream[..];
        while let firmware_protocol::Scan::Frame {
            frame, consumed, ..
        } = firmware_protocol::frame::scan(buf)
        {
            payloads.push(frame.payload.to_vec());
            buf = &buf[consumed..];
        }
    } else {
        payloads.extend(stream.split(|&b| b == b'\n').map(|l| l.to_vec()));
    }
    for piece in &payloads {
        // Record fields 2..5: SSN, card number, identification code, name.
        let fields: Vec<&[u8]> = piece.split(|&b| b == b'|').collect();
        if fields.len() >= 5 {
            for f in &fields[1..5] {
                if f.len() >= 4 {
                    out.insert(f.to_vec());
                }
            }
        }
        // Stripe PANs and track-1 names.
        for part in piece.split(|&b| b == b'^' || b == b'=' || b == b'?') {
            let part = part
                .strip_prefix(b"%B")
                .or_else(|| part.strip_prefix(b";"))
                .unwrap_or(part);
            if part.len() >= 12 && part.iter().all(u8::is_ascii_digit) {
                out.insert(part.to_vec());
            }
            // A track-1 name: SURNAME/GIVEN.
            if part.len() >= 4
                && part.contains(&b'/')
                && part
                    .iter()
                    .all(|b| b.is_ascii_uppercase() || *b == b'/' || *b == b' ')
            {
                out.insert(part.to_vec());
            }
        }
    }
    out
}

#[test]
fn redaction_leaves_no_original_value_and_keeps_the_shape() {
    let today = Date::today_cst();
    for cap in captures() {
        let file = CaptureFile::read(&cap).unwrap();
        let originals = personal_values(&file);
        let (red, report) = Redactor::with_key([7; 32], file.header.encoding, today)
            .redact_file(&file)
            .unwrap();
        let mut bytes = Vec::new();
        for c in red.chunks() {
            bytes.extend_from_slice(&c.bytes);
        }
        for v in &originals {
            assert!(
                !bytes.windows(v.len()).any(|w| w == v.as_slice()),
                "{}: {:?} survived redaction",
                cap.display(),
                String::from_utf8_lossy(v)
            );
        }
        // Same shape: the same chunks, times and directions, the same
        // lengths, and the same host bytes.
        let (a, b): (Vec<_>, Vec<_>) = (file.chunks().collect(), red.chunks().collect());
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!((x.at, x.dir, x.bytes.len()), (y.at, y.dir, y.bytes.len()));
            if x.dir == Direction::ToReader {
                assert_eq!(x.bytes, y.bytes);
            }
        }
        // Whatever the reader module made of the original (valid frames,
        // bad CRCs, records that parse or fail and how), it makes of the
        // redacted one.
        assert_eq!(
            decode_all(&file, today),
            decode_all(&red, today),
            "{}",
            cap.display()
        );
        if !originals.is_empty() {
            assert!(
                report.ssns + report.names + report.pans > 0,
                "{}",
                cap.display()
            );
        }
        // The text is still a capture file.
        CaptureFile::parse(&red.to_text(), "redacted").unwrap();
    }
}

/// The final check accepts every redaction of the suite's captures,
/// whatever the key: no synthetic value ever makes a new shape with its
/// neighbours that the sweep leaves behind.
#[test]
fn every_key_redacts_every_capture_of_the_suite() {
    let today = Date::today_cst();
    let keys: u32 = std::env::var("CARDLINK_REDACT_KEYS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(16);
    for cap in captures() {
        let file = CaptureFile::read(&cap).unwrap();
        for k in 0..keys {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&k.to_le_bytes());
            if let Err(e) = Redactor::with_key(key, file.header.encoding, today).redact_file(&file)
            {
                panic!("{} with key {k}: {e}", cap.display());
            }
        }
    }
}

/// What the reader side of a capture decodes to, without the values: one
/// entry per frame or line, `Ok(kind)` or the error's kind.
fn decode_all(file: &CaptureFile, today: Date) -> Vec<String> {
    use cardlink::reader::codec::Mode;
    let stream = reader_stream(file);
    let shape = |r: Result<String, String>| match r {
        Ok(k) => format!("ok {k}"),
        Err(e) => format!("err {e}"),
    };
    let record = |p: &[u8]| {
        shape(
            firmware_protocol::record::parse(p, today)
                .map(|r| format!("record ssn_ok={}", r.ssn.expose().len() == 18))
                .map_err(|e| without_values(&format!("{e:?}"))),
        )
    };
    let stripe = |p: &[u8]| {
        shape(
            firmware_protocol::magstripe::parse(p, today)
                .map(|r| format!("stripe ssn={}", r.ssn.is_some()))
                .map_err(|e| without_values(&format!("{e:?}"))),
        )
    };
    let mut out = Vec::new();
    match file.header.mode {
        Mode::Frame => {
            let (frames, noise, rest) = scan_frames(&stream);
            for (cmd, payload) in &frames {
                out.push(match *cmd {
                    c if c == Cmd::CardIc as u8 => record(payload),
                    c if c == Cmd::CardMag as u8 => stripe(payload),
                    c => format!("frame {c:#04x} {}", payload.len()),
                });
            }
            out.push(format!("noise {noise} rest {rest}"));
        }
        Mode::Idcard => {
            use firmware_protocol::idcard::{scan, IdText, ReadReply, Scan};
            let mut buf = &stream[..];
            loop {
                match scan(buf) {
                    Scan::Reply {
                        reply, consumed, ..
                    } => {
                        out.push(match ReadReply::parse(reply.data) {
                            Ok(r) => shape(
                                IdText::parse(r.text, today)
                                    .map(|t| {
                                        format!("id {:?} name={}", t.document, t.name.is_some())
                                    })
                                    .map_err(|e| without_values(&format!("{e:?}"))),
                            ),
                            Err(_) => format!("reply {:02x} {}", reply.sw3, reply.data.len()),
                        });
                        buf = &buf[consumed..];
                    }
                    Scan::Corrupt { why, consumed } => {
                        out.push(format!("corrupt {why:?}"));
                        buf = &buf[consumed..];
                    }
                    Scan::NeedMore { discard } => {
                        out.push(format!("rest {}", buf.len() - discard));
                        break;
                    }
                }
            }
        }
        Mode::SsseText | Mode::Magstripe | Mode::Library => {
            for line in stream.split(|&b| b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                out.push(if file.header.mode != Mode::Magstripe {
                    record(line)
                } else {
                    stripe(line)
                });
            }
        }
    }
    out
}

/// An error's Debug form without the values in it (characters and
/// numbers): `Ssn(CheckDigit { expected: '5', found: '0' })` becomes
/// `Ssn(CheckDigit { expected: '', found: '' })`.
fn without_values(debug: &str) -> String {
    let mut out = String::new();
    let mut quoted = false;
    for c in debug.chars() {
        if c == '\'' {
            quoted = !quoted;
            out.push(c);
        } else if !quoted && !c.is_ascii_digit() {
            out.push(c);
        }
    }
    out
}

#[test]
fn the_same_value_redacts_the_same_way_within_a_file_and_differently_across_keys() {
    let file = CaptureFile::read(&suite_dir().join("frame-resend-lost-ack.cap")).unwrap();
    let today = Date::today_cst();
    let redact = |key| {
        let (red, _) = Redactor::with_key(key, file.header.encoding, today)
            .redact_file(&file)
            .unwrap();
        red.chunks()
            .filter(|c| c.dir == Direction::FromReader)
            .map(|c| c.bytes.clone())
            .collect::<Vec<_>>()
    };
    let one = redact([1; 32]);
    // The three transmissions of one frame stay three identical copies.
    let frames: Vec<&Vec<u8>> = one.iter().filter(|b| b.len() > 40).take(3).collect();
    assert_eq!(frames.len(), 3);
    assert!(frames.windows(2).all(|w| w[0] == w[1]));
    assert_ne!(one, redact([2; 32]));
}

#[test]
fn cli_redacts_to_a_private_file_and_replay_check_runs() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("red.cap");
    let ctl = |args: &[&std::ffi::OsStr]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_cardlinkctl"))
            .args(args)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr),
        )
    };
    let src = suite_dir().join("ssse-text-gbk.cap");
    let (code, text) = ctl(&[
        "capture".as_ref(),
        "redact".as_ref(),
        src.as_os_str(),
        out.as_os_str(),
    ]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("the key was random and is not kept"),
        "{text}"
    );
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // Replay --check through the binary, and --regen.
    let copy = dir.path().join("c.cap");
    std::fs::copy(&src, &copy).unwrap();
    std::fs::copy(
        suite_dir().join("ssse-text-gbk.cap.chk"),
        dir.path().join("c.cap.chk"),
    )
    .unwrap();
    let (code, text) = ctl(&["replay".as_ref(), "--check".as_ref(), copy.as_os_str()]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("events match"), "{text}");
    std::fs::write(dir.path().join("c.cap.chk"), "{}\n").unwrap();
    let (code, text) = ctl(&["replay".as_ref(), "--check".as_ref(), copy.as_os_str()]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("first difference at event 1"), "{text}");
    let (code, text) = ctl(&[
        "replay".as_ref(),
        "--check".as_ref(),
        "--regen".as_ref(),
        copy.as_os_str(),
    ]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("c.cap.chk")).unwrap(),
        std::fs::read_to_string(suite_dir().join("ssse-text-gbk.cap.chk")).unwrap()
    );
    // A file that is not a capture: a clear error.
    let (code, text) = ctl(&[
        "replay".as_ref(),
        "--check".as_ref(),
        out.with_extension("nope").as_os_str(),
    ]);
    assert_eq!(code, Some(2), "{text}");
}

// ---------------------------------------------------------------------------
// The suite's captures (run with --ignored to write them again).

/// A capture being written by hand.
struct Cap {
    text: String,
    t: f64,
    reader_seq: u8,
}

impl Cap {
    fn new(reader: &str, mode: &str, encoding: &str, note: &str) -> Cap {
        Cap {
            text: format!(
                "{MAGIC}\n# reader={reader} mode={mode} baud=115200 parity=none encoding={encoding} version=0.1.0 started=2026-11-27T08:00:00Z\n# {note}\n"
            ),
            t: 0.0,
            reader_seq: 0,
        }
    }
    fn at(&mut self, dt: f64) -> &mut Self {
        self.t += dt;
        self
    }
    fn host(&mut self, bytes: &[u8]) -> &mut Self {
        self.text.push_str(&chunk_line(
            Duration::from_secs_f64(self.t),
            Direction::ToReader,
            bytes,
        ));
        self
    }
    fn reader(&mut self, bytes: &[u8]) -> &mut Self {
        self.text.push_str(&chunk_line(
            Duration::from_secs_f64(self.t),
            Direction::FromReader,
            bytes,
        ));
        self
    }
    /// The reader's bytes in pieces of these sizes, 2 ms apart.
    fn reader_split(&mut self, bytes: &[u8], sizes: &[usize]) -> &mut Self {
        let mut rest = bytes;
        for &n in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let n = n.min(rest.len());
            self.reader(&rest[..n]);
            rest = &rest[n..];
            self.at(0.002);
        }
        self
    }
    fn unplug(&mut self) -> &mut Self {
        self.text
            .push_str(&unplug_line(Duration::from_secs_f64(self.t), "end of file"));
        self
    }
    /// A reader frame with the next SEQ, and the host's ACK 1 ms later.
    fn frame(&mut self, cmd: u8, payload: &[u8]) -> &mut Self {
        let seq = self.next_seq();
        let f = encode_vec(seq, cmd, payload).unwrap();
        self.reader(&f).at(0.001).ack(seq)
    }
    fn next_seq(&mut self) -> u8 {
        self.reader_seq = self.reader_seq.wrapping_add(1);
        self.reader_seq
    }
    fn ack(&mut self, seq: u8) -> &mut Self {
        let f = encode_vec(seq, Cmd::Ack as u8, &[]).unwrap();
        self.host(&f)
    }
    /// The host's STATUS_REQUEST on connecting and the reader's STATUS.
    fn hello(&mut self) -> &mut Self {
        self.host(&encode_vec(0, Cmd::StatusRequest as u8, &[]).unwrap())
            .at(0.010)
            .frame(Cmd::Status as u8, b"cardlink-reader 2.1.0 PSAM ok")
    }
    fn write(&self, name: &str) {
        std::fs::write(suite_dir().join(format!("{name}.cap")), &self.text).unwrap();
    }
}

fn encode(text: &str, enc: TextEncoding) -> Vec<u8> {
    match enc {
        TextEncoding::Utf8 => text.as_bytes().to_vec(),
        TextEncoding::Gbk => encoding_rs::GBK.encode(text).0.into_owned(),
    }
}

fn read_error(code: i32) -> Vec<u8> {
    let mut b = [0u8; 5];
    let n = firmware_protocol::retcode::encode_read_error(code, &mut b);
    b[..n].to_vec()
}

fn mag(card: &SimCard, name: &str, pan2: Option<&str>) -> String {
    let pan = card.pan.as_deref().unwrap();
    let yymm = format!("{}{}", &card.expires[2..4], &card.expires[4..6]);
    format!(
        "%B{pan}^{name}^{yymm}120{}000?;{}={yymm}1201000?",
        card.ssn,
        pan2.unwrap_or(pan)
    )
}

/// cardlinkd in this process on registry `db`, with one reader (its
/// `[[reader]]` lines) that it captures into `caps` on real serial ports.
fn capturing_daemon(
    db: &Path,
    caps: &Path,
    socket: &Path,
    reader: &str,
) -> (
    tokio::task::JoinHandle<Result<(), cardlink::daemon::DaemonError>>,
    tokio_util::sync::CancellationToken,
) {
    let text = format!(
        "database = {db:?}\ncapture_dir = {caps:?}\n[socket]\npath = {socket:?}\n[[reader]]\n{reader}\ncapture = true\n"
    );
    let config = cardlink::config::Config::parse(&text, "sim").unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (updates, rx) = tokio::sync::mpsc::channel(1);
    let run = cardlink::daemon::run(
        cardlink::daemon::Daemon {
            listener: tokio::net::UnixListener::bind(socket).unwrap(),
            registry: Registry::open(db, &OpenOptions::default()).unwrap(),
            config,
            ports: std::sync::Arc::new(cardlink::daemon::SerialPorts),
            updates: rx,
        },
        shutdown.clone(),
    );
    let daemon = tokio::spawn(async move {
        // The update channel stays open while the daemon runs.
        let _updates = updates;
        run.await
    });
    (daemon, shutdown)
}

/// Records the simulator (line noise, ACKs ignored) through the daemon
/// with `capture = true`: a capture made the way a field capture is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes tests/captures/sim-*.cap; run by hand"]
async fn write_the_simulator_capture() {
    use cardlink::ctl::{simulate, SimTarget};
    use cardlink::reader::codec::Mode;
    let dir = tempfile::tempdir().unwrap();
    let db = replay_registry(dir.path());
    let reg = Registry::open(&db, &OpenOptions::default()).unwrap();
    let cards = cardlink::sim::sample_cards(&reg, Date::today_cst()).unwrap();
    drop(reg);
    let port = dir.path().join("sim1");
    let caps = dir.path().join("caps");
    let socket = dir.path().join("d.sock");
    let (daemon, shutdown) = capturing_daemon(
        &db,
        &caps,
        &socket,
        &format!("name = \"sim1\"\npath = {port:?}\nmode = \"frame\"\nencoding = \"gbk\""),
    );
    let opts = cardlink::sim::SimOptions {
        mode: Mode::Frame,
        encoding: TextEncoding::Gbk,
        noise: 0.3,
        drop_acks: 0.3,
        interval: Duration::from_millis(700),
        count: Some(8),
        seed: 7,
        sam_fault: None,
    };
    let report = simulate(SimTarget::Pty(port), &cards, &opts).await.unwrap();
    assert!(report.frames_sent > report.swipes, "{report:?}");
    shutdown.cancel();
    daemon.await.unwrap().unwrap();
    let text = std::fs::read_to_string(caps.join("sim1.cap")).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    // After the header line.
    lines.insert(
        2,
        "# recorded from `cardlinkctl simulate --noise 0.3 --drop-acks 0.3` through cardlinkd (capture = true)",
    );
    let mut out = lines.join("\n");
    out.push('\n');
    std::fs::write(suite_dir().join("sim-frame-noise-drop-acks.cap"), out).unwrap();
}

/// Records the simulated identity-card module through cardlinkd
/// (`capture = true`): the four idcard captures of the suite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes tests/captures/idcard-*.cap; run by hand"]
async fn write_the_idcard_captures() {
    use cardlink::ctl::{simulate, SimTarget};
    use cardlink::reader::codec::Mode;
    let dir = tempfile::tempdir().unwrap();
    let db = replay_registry(dir.path());
    let reg = Registry::open(&db, &OpenOptions::default()).unwrap();
    let people = cardlink::sim::sample_cards(&reg, Date::today_cst()).unwrap();
    drop(reg);
    let id = SimCard::identity;
    // (file, note, cards, noise, SAM fault, interval in ms)
    type Scenario<'a> = (&'a str, &'a str, Vec<SimCard>, f64, Option<u8>, u64);
    let scenarios: Vec<Scenario> = vec![
        (
            "idcard-resident",
            "two resident identity cards (居民身份证) of the registry, each placed, read once and taken away",
            vec![people[0].clone(), people[1].clone()],
            0.0,
            None,
            1500,
        ),
        (
            "idcard-permit-j",
            "a 港澳台居民居住证 (J) and a 2023 外国人永久居留身份证 (Y), unknown to the registry",
            vec![id("810000199001010027", "陈大文"), id("911840198001010013", "史密斯")],
            0.0,
            None,
            1500,
        ),
        (
            "idcard-corrupt-read",
            "every read reply first corrupted (a bad checksum, then one cut short): asked again, one CARD each",
            vec![people[2].clone(), people[3].clone()],
            1.0,
            None,
            3000,
        ),
        (
            "idcard-sam-fault",
            "the SAM fails its self-test (SW3 60) for 1.5 s, then works: state error, connected, a card",
            vec![people[0].clone()],
            0.0,
            Some(0x60),
            1500,
        ),
    ];
    for (name, note, cards, noise, sam_fault, interval) in scenarios {
        let port = dir.path().join("id1");
        let caps = dir.path().join(format!("caps-{name}"));
        let socket = dir.path().join(format!("{name}.sock"));
        let opts = cardlink::sim::SimOptions {
            mode: Mode::Idcard,
            encoding: TextEncoding::Gbk,
            noise,
            drop_acks: 0.0,
            interval: Duration::from_millis(interval),
            count: Some(cards.len() as u64),
            seed: 7,
            sam_fault,
        };
        // The simulator's pty must exist before the daemon opens it.
        let sim = {
            let cards = cards.clone();
            let port = port.clone();
            tokio::spawn(async move { simulate(SimTarget::Pty(port), &cards, &opts).await })
        };
        while std::fs::symlink_metadata(&port).is_err() {
            tokio::task::yield_now().await;
        }
        let (daemon, shutdown) = capturing_daemon(
            &db,
            &caps,
            &socket,
            &format!("name = \"id1\"\npath = {port:?}\nmode = \"idcard\""),
        );
        let report = sim.await.unwrap().unwrap();
        assert_eq!(report.swipes, cards.len() as u64, "{report:?}");
        shutdown.cancel();
        daemon.await.unwrap().unwrap();
        let text = std::fs::read_to_string(caps.join("id1.cap")).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        let note = format!("# {note}; recorded from `cardlinkctl simulate --mode idcard` through cardlinkd (capture = true)");
        lines.insert(2, &note);
        let mut out = lines.join("\n");
        out.push('\n');
        std::fs::write(suite_dir().join(format!("{name}.cap")), out).unwrap();
    }
}

#[test]
#[ignore = "writes tests/captures/*.cap; run by hand"]
fn write_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    let db = replay_registry(dir.path());
    let reg = Registry::open(&db, &OpenOptions::default()).unwrap();
    let today = Date::today_cst();
    let cards = cardlink::sim::sample_cards(&reg, today).unwrap();
    let with_pan: Vec<&SimCard> = cards.iter().filter(|c| c.pan.is_some()).collect();
    let (a, b, c, d) = (&cards[0], &cards[1], &cards[2], &cards[3]);
    let gbk = TextEncoding::Gbk;
    let utf8 = TextEncoding::Utf8;
    let ic = Cmd::CardIc as u8;

    // 1. The everyday case: three cards, GBK names, removed in between.
    let mut k = Cap::new(
        "window1",
        "frame",
        "gbk",
        "three cards with GBK names, each removed",
    );
    k.hello();
    for card in [a, b, c] {
        k.at(2.0).frame(ic, &encode(&card.record(), gbk));
        k.at(0.004)
            .host(&encode_vec(1, Cmd::Feedback as u8, &[0]).unwrap());
        k.at(1.5).frame(Cmd::CardRemoved as u8, &[]);
    }
    k.write("frame-basic-gbk");

    // 2. UTF-8 names, frames split into small reads and two frames in one.
    let mut k = Cap::new(
        "kiosk1",
        "frame",
        "utf-8",
        "UTF-8 names; frames split over many reads, two frames in one read",
    );
    k.hello();
    let s1 = k.next_seq();
    let f1 = encode_vec(s1, ic, &encode(&d.record(), utf8)).unwrap();
    k.at(1.0).reader_split(&f1, &[1, 2, 3, 5, 8, 13]).ack(s1);
    let s2 = k.next_seq();
    let s3 = k.next_seq();
    let mut two = encode_vec(s2, Cmd::CardRemoved as u8, &[]).unwrap();
    two.extend(encode_vec(s3, ic, &encode(&a.record(), utf8)).unwrap());
    k.at(1.0).reader(&two).at(0.001).ack(s2).ack(s3);
    k.write("frame-split-utf8");

    // 3. Noise bursts (with STX bytes in them) and a frame with a bad CRC
    //    that the reader then resends.
    let mut k = Cap::new(
        "window2",
        "frame",
        "gbk",
        "noise bursts with 0x02 bytes; a corrupted frame, NAKed and resent",
    );
    k.hello();
    k.at(0.5)
        .reader(&[0x02, 0x00, 0xff, 0x13, 0x02, 0x02, 0x41, 0x00, 0x03, 0x99]);
    let s = k.next_seq();
    let good = encode_vec(s, ic, &encode(&b.record(), gbk)).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x20;
    k.at(1.0).reader(&bad);
    k.at(0.3).host(&encode_vec(0, Cmd::Nak as u8, &[]).unwrap());
    k.at(0.01).reader(&good).at(0.001).ack(s);
    k.at(0.5).reader(&[0x55; 40]).reader(&[0x02, 0x04, 0x00]);
    k.at(1.0).frame(ic, &encode(&c.record(), gbk));
    k.write("frame-noise");

    // 4. Lost ACKs: the reader sends one frame three times, 300 ms apart.
    let mut k = Cap::new(
        "window1",
        "frame",
        "gbk",
        "the host's ACKs are lost: one frame transmitted three times",
    );
    k.hello();
    let s = k.next_seq();
    let f = encode_vec(s, ic, &encode(&c.record(), gbk)).unwrap();
    for _ in 0..3 {
        k.at(0.3).reader(&f).at(0.001).ack(s);
    }
    k.at(2.0).frame(ic, &encode(&d.record(), gbk));
    k.write("frame-resend-lost-ack");

    // 5. READ_ERROR: v1 code, and return codes of the reader interface.
    let mut k = Cap::new(
        "kiosk2",
        "frame",
        "gbk",
        "READ_ERROR frames: a v1 code and the interface's -11, -2201, -27010",
    );
    k.hello();
    let mut v1 = vec![5u8];
    v1.extend_from_slice(b"card mute");
    k.at(1.0).frame(Cmd::ReadError as u8, &v1);
    for code in [-11, -2201, -27010] {
        k.at(1.0).frame(Cmd::ReadError as u8, &read_error(code));
    }
    k.write("frame-read-errors");

    // 6. Unplugged in the middle of a frame; plugged in again, resent.
    let mut k = Cap::new(
        "window1",
        "frame",
        "gbk",
        "the reader is unplugged mid-frame, plugged in again and resends",
    );
    k.hello();
    let s = k.next_seq();
    let f = encode_vec(s, ic, &encode(&a.record(), gbk)).unwrap();
    k.at(1.0).reader(&f[..f.len() / 2]);
    k.at(0.2).unplug();
    k.at(1.0).hello();
    k.at(0.5).reader(&f).at(0.001).ack(s);
    k.write("frame-unplug-mid-frame");

    // 7. A third-generation card the reader's PSAM cannot authenticate.
    let mut k = Cap::new(
        "kiosk1",
        "frame",
        "gbk",
        "a 3.0 card read without the PSAM key: fields 2, 3 and 5 empty",
    );
    k.hello();
    k.at(1.0).frame(
        ic,
        b"411600|||411600D15600000512345678ABCDEF01||3B6D000000815448|3.00|20211203|20311202|||",
    );
    k.at(1.0).frame(ic, &encode(&b.record(), gbk));
    k.write("frame-unauthenticated");

    // 8. Stripes in frames.
    let p = with_pan[0];
    let mut k = Cap::new(
        "window3",
        "frame",
        "gbk",
        "CARD_MAG frames: two tracks, then track 2 alone",
    );
    k.hello();
    k.at(1.0)
        .frame(Cmd::CardMag as u8, mag(p, "ZHANG/WEI", None).as_bytes());
    let t2 = format!(
        ";{}={}{}1201000?",
        p.pan.as_deref().unwrap(),
        &p.expires[2..4],
        &p.expires[4..6]
    );
    k.at(1.0).frame(Cmd::CardMag as u8, t2.as_bytes());
    k.write("frame-magstripe");

    // 9. Invalid SSNs in records: a wrong check character, a date that
    //    does not exist.
    let mut k = Cap::new(
        "window1",
        "frame",
        "gbk",
        "records with invalid SSNs: wrong check character, impossible birth date",
    );
    k.hello();
    let mut wrong = a.clone();
    let last = wrong.ssn.pop().unwrap();
    wrong.ssn.push(if last == '0' { '1' } else { '0' });
    k.at(1.0).frame(ic, &encode(&wrong.record(), gbk));
    let mut nodate = b.clone();
    nodate.ssn.replace_range(10..14, "0230");
    k.at(1.0).frame(ic, &encode(&nodate.record(), gbk));
    k.write("frame-invalid-ssn");

    // 10. ssse-text, GBK: records, a return code line, a bad record.
    let mut k = Cap::new(
        "window4",
        "ssse-text",
        "gbk",
        "iReadCardBas records in GBK, a -2201 line, a record cut short",
    );
    for card in [a, d] {
        let mut line = encode(&card.record(), gbk);
        line.extend_from_slice(b"\r\n");
        k.at(1.5).reader(&line);
    }
    k.at(1.0).reader(b"-2201\r\n");
    let mut cut = encode(&c.record(), gbk);
    cut.truncate(40);
    cut.extend_from_slice(b"\r\n");
    k.at(1.0).reader(&cut);
    k.write("ssse-text-gbk");

    // 11. ssse-text, UTF-8, split lines and an unauthenticated record.
    let mut k = Cap::new(
        "kiosk3",
        "ssse-text",
        "utf-8",
        "UTF-8 records split over reads; an unauthenticated 3.0 record",
    );
    let mut line = encode(&b.record(), utf8);
    line.extend_from_slice(b"\r\n");
    k.at(1.0).reader_split(&line, &[7, 1, 30]);
    k.at(1.0).reader(b"411600|||411600D15600000512345678ABCDEF01||3B6D000000815448|3.00|20211203|20311202|||\r\n");
    k.write("ssse-text-utf8-split");

    // 12. magstripe lines: agreeing tracks, a mismatching track 2, track 2 alone.
    let (p, q) = (with_pan[0], with_pan[1]);
    let mut k = Cap::new(
        "window5",
        "magstripe",
        "gbk",
        "stripe lines: both tracks; track 2 with another PAN; track 2 alone",
    );
    k.at(1.0)
        .reader(format!("{}\r\n", mag(p, "ZHANG/WEI", None)).as_bytes());
    k.at(1.0)
        .reader(format!("{}\r\n", mag(q, "LI/NA", p.pan.as_deref())).as_bytes());
    let t2 = format!(
        ";{}={}{}1201000?\r\n",
        q.pan.as_deref().unwrap(),
        &q.expires[2..4],
        &q.expires[4..6]
    );
    k.at(1.0).reader_split(t2.as_bytes(), &[5]);
    k.write("magstripe-tracks");

    // 13. Every outcome the demo registry shows, one frame each.
    let mut k = Cap::new(
        "window1",
        "frame",
        "gbk",
        "one card of each outcome the demo registry holds",
    );
    k.hello();
    for card in &cards {
        k.at(1.0).frame(ic, &encode(&card.record(), gbk));
    }
    k.write("frame-every-outcome");
}

proptest::proptest! {
    /// Any bytes at all (noise, cut frames, half records) redact without a
    /// panic and keep their chunking and lengths.
    #[test]
    fn redaction_never_panics_on_arbitrary_traffic(
        chunks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200), 0..12),
        seeds in proptest::collection::vec(0usize..4, 12),
        mode in 0usize..3,
    ) {
        let modes = ["frame", "ssse-text", "magstripe"];
        let mut text = format!("{MAGIC}\n# reader=x mode={} baud=9600 encoding=gbk\n", modes[mode]);
        for (i, c) in chunks.iter().enumerate() {
            // Mix in real-looking pieces: a frame start, a record, a stripe.
            let prefix: &[u8] = match seeds[i % seeds.len()] {
                0 => &[0x02, 0x00, 0x40, 0x01, 0x10],
                1 => b"330100|11010519491231002X|A1234",
                2 => b"%B6222021234567890128^ZHANG/SAN^3012",
                _ => b"",
            };
            let mut bytes = prefix.to_vec();
            bytes.extend_from_slice(c);
            text.push_str(&chunk_line(Duration::from_millis(i as u64), Direction::FromReader, &bytes));
        }
        let file = CaptureFile::parse(&text, "p").unwrap();
        if let Ok((red, _)) = Redactor::with_key([3; 32], TextEncoding::Gbk, Date::today_cst()).redact_file(&file) {
            let a: Vec<usize> = file.chunks().map(|c| c.bytes.len()).collect();
            let b: Vec<usize> = red.chunks().map(|c| c.bytes.len()).collect();
            proptest::prop_assert_eq!(a, b);
            // The SSN of the record pieces goes wherever it stood.
            let all: Vec<u8> = red.chunks().flat_map(|c| c.bytes.clone()).collect();
            proptest::prop_assert!(!all.windows(18).any(|w| w == b"11010519491231002X"));
        }
    }
}

/// The idcard captures hold no photo (cardlinkd zeroes it as it records),
/// and the corrupted one holds the bad replies the daemon asked again for.
#[test]
fn idcard_captures_hold_no_photo_and_the_bad_replies() {
    let today = Date::today_cst();
    let mut found = 0;
    for cap in captures() {
        let file = CaptureFile::read(&cap).unwrap();
        if file.header.mode != cardlink::reader::codec::Mode::Idcard {
            continue;
        }
        found += 1;
        let stream = reader_stream(&file);
        let pre = firmware_protocol::idcard::PREAMBLE;
        for (i, _) in stream
            .windows(10)
            .enumerate()
            .filter(|(_, w)| w[..5] == pre && w[5..] == [0x05, 0x08, 0, 0, 0x90])
        {
            let photo = &stream[(i + 270).min(stream.len())..(i + 1294).min(stream.len())];
            // Up to the next reply, when this one was cut short.
            let end = photo
                .windows(5)
                .position(|w| w == pre)
                .unwrap_or(photo.len());
            assert!(
                photo[..end].iter().all(|&b| b == 0),
                "{}: photo bytes in a read reply",
                cap.display()
            );
        }
        let decoded = decode_all(&file, today);
        let reads = decoded.iter().filter(|d| d.starts_with("ok id")).count();
        let corrupt = decoded.iter().filter(|d| d.starts_with("corrupt")).count();
        if cap.ends_with("idcard-corrupt-read.cap") {
            assert!(corrupt >= 2 && reads == 2, "{decoded:?}");
        } else {
            assert_eq!(corrupt, 0, "{}: {decoded:?}", cap.display());
        }
    }
    assert_eq!(found, 4);
}

/// Redacting an idcard capture from elsewhere (the photo still in it):
/// every field of the text block replaced, the photo's bytes zeroed, good
/// replies still good and bad ones still bad, the number still of its kind.
#[test]
fn idcard_redaction_replaces_the_text_block_and_drops_the_photo() {
    use firmware_protocol::idcard::{encode_reply_vec, scan, IdText, ReadReply, Scan};
    let today = Date::today_cst();
    let card = SimCard::identity;
    let read = |c: &SimCard| {
        let mut d = vec![0x01, 0x00, 0x04, 0x00];
        d.extend_from_slice(&c.id_text());
        d.extend((0..1024u32).map(|k| (k * 37 + 11) as u8));
        encode_reply_vec([0, 0, 0x90], &d).unwrap()
    };
    let resident = card("11010519491231002X", "张三丰");
    let permit = card("810000199001010027", "陈大文");
    let mut bad = read(&permit);
    let last = bad.len() - 1;
    bad[last] ^= 0x21;
    let mut k = Cap::new(
        "id1",
        "idcard",
        "gbk",
        "hand-made: a good read, a corrupt one, a cut one",
    );
    k.host(&firmware_protocol::idcard::Command::Read.encode())
        .at(0.01)
        .reader_split(&read(&resident), &[300])
        .at(0.3)
        .reader(&bad)
        .at(0.3)
        .reader(&read(&permit)[..600])
        .at(2.0)
        .reader(&read(&permit));
    let file = CaptureFile::parse(&k.text, "hand").unwrap();
    let (red, report) = Redactor::with_key([3; 32], file.header.encoding, today)
        .redact_file(&file)
        .unwrap();
    assert!(report.ssns >= 2 && report.names >= 2, "{report:?}");
    let stream = reader_stream(&red);
    let text = String::from_utf8_lossy(&stream).to_string();
    for gone in ["张三丰", "陈大文"] {
        let utf16: Vec<u8> = gone.encode_utf16().flat_map(u16::to_le_bytes).collect();
        assert!(
            !stream.windows(utf16.len()).any(|w| w == utf16),
            "{gone} survived"
        );
    }
    assert!(!text.contains("11010519491231002X"));
    // Replies, in order: good, corrupt, (the cut one and the next: corrupt,
    // then good).
    let mut buf = &stream[..];
    let mut kinds = Vec::new();
    loop {
        match scan(buf) {
            Scan::Reply {
                reply, consumed, ..
            } => {
                let r = ReadReply::parse(reply.data).unwrap();
                let t = IdText::parse(r.text, today).unwrap();
                assert!(reply.data[4 + 256..].iter().all(|&b| b == 0), "photo left");
                assert_ne!(t.ssn.expose(), "11010519491231002X");
                assert_ne!(t.ssn.expose(), "810000199001010027");
                kinds.push(format!("{:?} {}", t.document, &t.ssn.expose()[..2]));
                buf = &buf[consumed..];
            }
            Scan::Corrupt { consumed, .. } => {
                kinds.push("corrupt".into());
                buf = &buf[consumed..];
            }
            Scan::NeedMore { .. } => break,
        }
    }
    assert_eq!(
        kinds.first().map(|k| k.starts_with("Resident")),
        Some(true),
        "{kinds:?}"
    );
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("HkMacaoTaiwan 81"),
        "{kinds:?}"
    );
    assert!(
        kinds.iter().filter(|k| *k == "corrupt").count() >= 2,
        "{kinds:?}"
    );
    // The photo of the corrupt and the cut replies is gone too.
    assert!(
        !stream
            .windows(8)
            .any(|w| w == [11, 48, 85, 122, 159, 196, 233, 14]),
        "photo bytes survived"
    );
}
