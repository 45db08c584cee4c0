//! Redaction of a capture: every SSN, name, card number, card
//! identification code and PAN the reader sent is replaced by a synthetic
//! one, so that a capture can leave the hospital.
//!
//! - **Consistent.** The synthetic value is drawn from a keyed hash of the
//!   real one (SHA-256 over a random key, the kind of value and the value),
//!   so the same real value becomes the same synthetic one everywhere in
//!   the file (a resend stays a resend, two tracks that agree still agree,
//!   two that differ still differ). The key lives in memory only: a
//!   redacted file cannot be mapped back, not even by whoever redacted it.
//! - **Same shape.** Same length and encoding (a GBK hanzi becomes another
//!   GBK hanzi, two bytes; a letter a letter, a digit a digit), valid check
//!   characters where the original's were valid (SSN MOD 11-2, PAN Luhn),
//!   and an invalid SSN or PAN stays invalid in the same way (the same
//!   [`SsnError`] kind, a failing Luhn digit). Region codes, dates, ATR,
//!   versions and terminal numbers are not personal and stay.
//! - **Everything else as it was.** Values are rewritten in place, byte for
//!   byte, in the reader's stream; frame CRCs are recomputed (a frame with a
//!   bad CRC keeps the same error: the stored CRC is off from the new one by
//!   what it was off before), lengths do not change, and noise, timing,
//!   chunking, host bytes and undecodable bytes are kept.
//! - **Wherever it stands.** The fields of records and stripes are found
//!   not only in card frames but in line noise, in the text of any frame
//!   (`READ_ERROR`, `STATUS`) and in text lines on a frame port (a reader
//!   left in text mode). Then every value still *shaped* like personal data
//!   ([`super::shapes`]: SSN-, card-number-, identification-code- and
//!   PAN-shaped runs, name fields in GBK or UTF-8) that the redaction did
//!   not write is replaced too, in the reader's bytes and in comment lines.
//!   (A harmless value of such a shape, a serial number or Chinese text of
//!   the firmware, comes out changed: it cannot be told from a person's.)
//! - **Never an original.** A first run learns every original value of the
//!   file; the second, which is written, draws again any synthetic value
//!   that is one of them or holds one.
//!
//! Before writing, a check that does not depend on any of the above looks
//! at the output's bytes (both directions, and the comment lines) for
//! values shaped like personal data that are not wholly in bytes the
//! redaction wrote, and for every original value it replaced; if one is
//! left, the file is not written and the error says where (line and byte,
//! never the value).

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use firmware_protocol::frame::{
    scan, Cmd, Scan, CRC16, ETX, MAX_FRAME, MAX_PAYLOAD, OVERHEAD, STX,
};
use firmware_protocol::ssn::{check_char, SsnError};
use firmware_protocol::{Date, Ssn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

use super::shapes::{self, Shape};
use super::{CaptureFile, Direction, Line, MAGIC};
use crate::reader::card::TextEncoding;
use crate::reader::codec::Mode;

/// Why a capture could not be redacted.
#[derive(Debug, thiserror::Error)]
pub enum RedactError {
    /// The final check found values shaped like personal data, or original
    /// values, in the output.
    #[error("redaction incomplete: {} value(s) shaped like personal data left in the output ({}); the file was not written", .0.len(), places(.0))]
    Leftover(Vec<Place>),
}

/// Where the final check found something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The line of the capture file (1-based).
    pub line: usize,
    /// The byte in that line's chunk (0-based), or in a comment line.
    pub byte: usize,
    /// What was found (never the value).
    pub what: &'static str,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {} byte {}: {}", self.line, self.byte, self.what)
    }
}

fn places(p: &[Place]) -> String {
    const SHOWN: usize = 10;
    let mut text: Vec<String> = p.iter().take(SHOWN).map(Place::to_string).collect();
    if p.len() > SHOWN {
        text.push(format!("and {} more", p.len() - SHOWN));
    }
    text.join("; ")
}

/// What a redaction replaced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Distinct SSNs replaced.
    pub ssns: usize,
    /// Distinct names replaced.
    pub names: usize,
    /// Distinct card numbers and card identification codes replaced.
    pub cards: usize,
    /// Distinct PANs replaced.
    pub pans: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Ssn,
    Name,
    CardNo,
    CardId,
    Pan,
    Digits,
    /// A name in UTF-8 (the text of frames) where the reader's is GBK.
    Utf8Name,
    /// A name in GBK where the reader's is UTF-8.
    GbkName,
}

/// Rounds of the shape sweep: one rewrites every value left, a second is
/// needed only where a rewrite made a new shape with its neighbours.
const SWEEP_ROUNDS: usize = 8;

/// A complete frame in the reader's bytes, whose CRC is recomputed after
/// its payload was rewritten.
#[derive(Debug, Clone, Copy)]
struct Envelope {
    /// Offset of its STX.
    at: usize,
    /// Payload length.
    len: usize,
    /// The stored CRC XOR the right one (0 for a good frame), kept.
    off: u16,
}

impl Envelope {
    fn payload(&self) -> Range<usize> {
        self.at + 5..self.at + 5 + self.len
    }
}

/// Common hanzi of names (GB 2312 level 1, so two bytes in GBK and three
/// in UTF-8), the pool synthetic names are drawn from.
const HANZI: &str = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红建文辉力";

/// Regions (6-digit codes with a valid province) for synthetic SSNs.
const REGIONS: [&str; 8] = [
    "110105", "310115", "330106", "440305", "420111", "510107", "320106", "370102",
];

/// The redactor of one file: its key, and what it replaced.
pub struct Redactor {
    key: [u8; 32],
    today: Date,
    encoding: TextEncoding,
    map: HashMap<(Kind, Vec<u8>), Vec<u8>>,
    originals: HashSet<(Kind, Vec<u8>)>,
    /// Values no synthetic value may be or hold (from 4 bytes on, what the
    /// final check looks for): every original of the file.
    avoid: HashSet<Vec<u8>>,
    avoid_lengths: std::collections::BTreeSet<usize>,
    /// Drawn into the hash when a synthetic value is drawn again.
    salt: u32,
    /// Which bytes of the buffer being redacted hold synthetic values.
    written: Vec<bool>,
}

/// Which bytes a redaction wrote: of the reader's stream, and of each
/// comment line (by index in [`CaptureFile::lines`]).
#[derive(Default)]
struct Written {
    reader: Vec<bool>,
    comments: HashMap<usize, Vec<bool>>,
}

impl Redactor {
    /// A redactor with a fresh random key.
    pub fn new(encoding: TextEncoding, today: Date) -> Redactor {
        Redactor::with_key(rand::rng().random(), encoding, today)
    }

    /// A redactor with a given key (tests).
    pub fn with_key(key: [u8; 32], encoding: TextEncoding, today: Date) -> Redactor {
        Redactor {
            key,
            today,
            encoding,
            map: HashMap::new(),
            originals: HashSet::new(),
            avoid: HashSet::new(),
            avoid_lengths: Default::default(),
            salt: 0,
            written: Vec::new(),
        }
    }

    /// Redacts a whole capture file.
    pub fn redact_file(mut self, file: &CaptureFile) -> Result<(CaptureFile, Report), RedactError> {
        // A first run learns every original value, so that no synthetic
        // value of the second is one of them (a common name drawn for one
        // person must not be another's real one).
        let mut first = Redactor::with_key(self.key, self.encoding, self.today);
        first.run(file);
        for (_, v) in first.originals {
            self.avoid_value(v);
        }
        let (out, written) = self.run(file);
        let left = self.check(&out, &written);
        if !left.is_empty() {
            return Err(RedactError::Leftover(left));
        }
        let count = |kinds: &[Kind]| {
            self.originals
                .iter()
                .filter(|(k, _)| kinds.contains(k))
                .count()
        };
        let report = Report {
            ssns: count(&[Kind::Ssn]),
            names: count(&[Kind::Name, Kind::Utf8Name, Kind::GbkName]),
            cards: count(&[Kind::CardNo, Kind::CardId]),
            pans: count(&[Kind::Pan]),
        };
        Ok((out, report))
    }

    /// idcard mode: every read reply (`90`, `LEN` 0x0508), complete, cut
    /// short or with a bad checksum: its whole text block (name, number,
    /// address, authority, and whatever else it holds) replaced by
    /// synthetic text of the same shape; sex, dates and the type flag kept.
    /// The photo's bytes are dropped (overwritten with zeros). A complete
    /// reply's checksum is recomputed, wrong by the same bits where it was.
    fn idcard(&mut self, stream: &mut [u8]) {
        use firmware_protocol::idcard::{xor, MAX_LEN, PHOTO_LEN, PREAMBLE, TEXT_LEN};
        let find = |s: &[u8]| s.windows(PREAMBLE.len()).position(|w| w == PREAMBLE);
        let mut pos = 0;
        while let Some(off) = find(&stream[pos..]) {
            let i = pos + off;
            pos = i + 1;
            if stream.len() < i + 10 {
                break;
            }
            let len = u16::from_be_bytes([stream[i + 5], stream[i + 6]]) as usize;
            if len != MAX_LEN || stream[i + 9] != 0x90 {
                continue;
            }
            // A reply cut short ends where the next one begins.
            let next = find(&stream[i + 5..]).map_or(stream.len(), |o| i + 5 + o);
            let end = (i + 7 + len).min(next).min(stream.len());
            let complete = end == i + 7 + len;
            let delta = if complete {
                xor(&stream[i + 5..end - 1]) ^ stream[end - 1]
            } else {
                0
            };
            let text = i + 14;
            let avail = end.saturating_sub(text).min(TEXT_LEN);
            let mut block = [0x20u8, 0x00].repeat(TEXT_LEN / 2);
            block[..avail].copy_from_slice(&stream[text..text + avail]);
            let out = self.id_block(&block, avail == TEXT_LEN);
            stream[text..text + avail].copy_from_slice(&out[..avail]);
            let photo = text + TEXT_LEN;
            let photo_end = (photo + PHOTO_LEN).min(if complete { end - 1 } else { end });
            if photo < photo_end {
                stream[photo..photo_end].fill(0);
            }
            if complete {
                stream[end - 1] = xor(&stream[i + 5..end - 1]) ^ delta;
            }
            pos = end.max(i + 1);
        }
    }

    /// A synthetic text block for `block` (of which only the first bytes
    /// may be real when `whole` is false).
    fn id_block(&mut self, block: &[u8], whole: bool) -> Vec<u8> {
        use firmware_protocol::idcard::layout;
        let unit = |r: std::ops::Range<usize>| -> Vec<u16> {
            block[r]
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect()
        };
        let flag = if whole { unit(layout::TYPE)[0] } else { 0xFFFF };
        // Kept as they are: not identifying, and what makes the block
        // still parse the way it did.
        let keep: Vec<std::ops::Range<usize>> = match flag {
            0x0000 | 0x0020 | 0x004A => vec![
                layout::SEX,
                layout::BIRTH,
                layout::VALID_FROM,
                layout::VALID_TO,
                layout::TYPE,
            ],
            0x0049 => vec![120..122, 188..204, 204..220, 220..236, layout::TYPE],
            _ if whole => vec![layout::TYPE],
            _ => vec![],
        };
        let number = match flag {
            0x0049 => Some(layout::I_NUMBER),
            _ if whole => Some(layout::NUMBER),
            _ => None,
        };
        let mut out = block.to_vec();
        // Fields, by where they are: each replaced as a whole, so the same
        // value becomes the same synthetic one.
        let mut cuts: Vec<usize> = vec![
            0, 30, 32, 36, 52, 122, 158, 188, 204, 220, 238, 242, 248, 250, 256,
        ];
        if flag == 0x0049 {
            cuts = vec![
                0, 120, 122, 152, 158, 188, 204, 220, 236, 240, 248, 250, 256,
            ];
        }
        for w in cuts.windows(2) {
            let r = w[0]..w[1];
            if keep.contains(&r) {
                continue;
            }
            if number.as_ref() == Some(&r) {
                let chars: Vec<u8> = unit(r.clone())
                    .iter()
                    .map(|&u| if u < 0x80 { u as u8 } else { b'?' })
                    .collect();
                let trimmed = chars.trim_ascii_end();
                let synth = self.id_number(trimmed);
                for (k, b) in synth.iter().enumerate() {
                    out[r.start + 2 * k] = *b;
                    out[r.start + 2 * k + 1] = 0;
                }
                continue;
            }
            let field = &block[r.clone()];
            if field.chunks_exact(2).all(|c| c == [0x20, 0] || c == [0, 0]) {
                continue;
            }
            let mut rng = self.rng(Kind::Name, field, 0);
            let pool: Vec<char> = HANZI.chars().collect();
            for (k, c) in field.chunks_exact(2).enumerate() {
                let u = u16::from_le_bytes([c[0], c[1]]);
                let n: u16 = match u {
                    0x0030..=0x0039 => 0x30 + rng.random_range(0..10u16),
                    0x0041..=0x005A => 0x41 + rng.random_range(0..26u16),
                    0x0061..=0x007A => 0x61 + rng.random_range(0..26u16),
                    0x0000..=0x007F => u,
                    _ => pool[rng.random_range(0..pool.len())] as u16,
                };
                out[r.start + 2 * k..r.start + 2 * k + 2].copy_from_slice(&n.to_le_bytes());
            }
            // A run of digits (a date, a nation code, an issue count) is
            // no value to look for: it occurs in any other card's dates.
            let digits = field
                .chunks_exact(2)
                .all(|c| c[1] == 0 && (c[0].is_ascii_digit() || c[0] == b' '));
            if field.len() >= 4 && !digits {
                self.originals.insert((Kind::Name, field.to_vec()));
            }
        }
        out
    }

    /// A synthetic identity number of the same kind: a citizen's through
    /// the SSN rules; a permit's (81/82/83) or a 2023 permanent resident's
    /// (9) keeps that prefix and its birth date; a 2017 permanent
    /// resident's 15 characters keep their classes. Valid stays valid, a
    /// wrong check character stays wrong.
    fn id_number(&mut self, n: &[u8]) -> Vec<u8> {
        if let Some(s) = self.map.get(&(Kind::Ssn, n.to_vec())) {
            return s.clone();
        }
        let s = if n.len() == 18 && !matches!(n[0], b'8' | b'9') {
            return self.synthetic(Kind::Ssn, n);
        } else if n.len() == 18 {
            let keep = if n[0] == b'9' { 1 } else { 2 };
            let mut s = n[..keep].to_vec();
            s.extend(self.shape(Kind::Ssn, &n[keep..6], 0));
            s.extend_from_slice(&n[6..14]);
            s.extend(self.shape(Kind::Ssn, &n[14..17], 0));
            let good =
                firmware_protocol::ssn::check_char(&n[..17]) == Some(n[17].to_ascii_uppercase());
            let c = firmware_protocol::ssn::check_char(&s).unwrap_or(b'0');
            s.push(if good {
                c
            } else if c == b'0' {
                b'1'
            } else {
                b'0'
            });
            s
        } else {
            self.shape(Kind::Ssn, n, 0)
        };
        if s != n {
            self.originals.insert((Kind::Ssn, n.to_vec()));
        }
        self.map.insert((Kind::Ssn, n.to_vec()), s.clone());
        s
    }

    /// Every pass over `file`: the redacted file, and which bytes hold
    /// synthetic values.
    fn run(&mut self, file: &CaptureFile) -> (CaptureFile, Written) {
        self.encoding = file.header.encoding;
        // The reader's bytes as one stream, rewritten in place, then cut
        // back into the original chunks.
        let mut stream = Vec::new();
        for c in file.chunks() {
            if c.dir == Direction::FromReader {
                stream.extend_from_slice(&c.bytes);
            }
        }
        self.written = vec![false; stream.len()];
        let envelopes = match file.header.mode {
            Mode::Frame => {
                let envelopes = self.frames(&mut stream);
                // Records and stripes in the noise between frames (a reader
                // module answering in its own format, a reader left in text
                // mode) and in the text of other frames.
                let mut from = 0;
                for e in &envelopes {
                    self.lines(&mut stream, from..e.at.max(from), None);
                    let card = stream
                        .get(e.at + 4)
                        .is_some_and(|&c| c == Cmd::CardIc as u8 || c == Cmd::CardMag as u8);
                    if !card {
                        self.lines(&mut stream, e.payload(), None);
                    }
                    from = from.max(e.at + e.len + OVERHEAD);
                }
                let end = stream.len();
                self.lines(&mut stream, from.min(end)..end, None);
                envelopes
            }
            mode @ (Mode::SsseText | Mode::Magstripe | Mode::Library) => {
                let end = stream.len();
                // A library reader's answers are captured as ssse-text lines.
                let mode = if mode == Mode::Library {
                    Mode::SsseText
                } else {
                    mode
                };
                self.lines(&mut stream, 0..end, Some(mode));
                Vec::new()
            }
            Mode::Idcard => {
                self.idcard(&mut stream);
                Vec::new()
            }
        };
        self.sweep(&mut stream, &envelopes, false);
        for e in &envelopes {
            let crc = CRC16.checksum(&stream[e.at + 1..e.at + 5 + e.len]) ^ e.off;
            stream[e.at + 5 + e.len..e.at + 7 + e.len].copy_from_slice(&crc.to_be_bytes());
        }
        let mut written = Written {
            reader: std::mem::take(&mut self.written),
            comments: HashMap::new(),
        };
        let mut out = file.clone();
        let mut at = 0;
        for (i, line) in out.lines.iter_mut().enumerate() {
            match line {
                Line::Chunk(c) if c.dir == Direction::FromReader => {
                    let n = c.bytes.len();
                    c.bytes.copy_from_slice(&stream[at..at + n]);
                    at += n;
                }
                Line::Chunk(_) => {}
                Line::Comment(text) | Line::Unplug { text, .. } => {
                    if text != MAGIC && !text.starts_with("# reader=") {
                        let mut bytes = text.clone().into_bytes();
                        self.written = vec![false; bytes.len()];
                        self.sweep(&mut bytes, &[], true);
                        if let Ok(t) = String::from_utf8(bytes) {
                            *text = t;
                            written
                                .comments
                                .insert(i, std::mem::take(&mut self.written));
                        }
                    }
                }
            }
        }
        (out, written)
    }

    /// The final check, which trusts nothing the redaction understood:
    /// every value in `out` shaped like personal data ([`shapes::find`], in
    /// the reader's bytes, the host's and the comment lines) that is not
    /// wholly in bytes the redaction wrote, and every original value (of 4
    /// bytes or more) it replaced, wherever it is.
    fn check(&self, out: &CaptureFile, written: &Written) -> Vec<Place> {
        let mut left = Vec::new();
        for dir in [Direction::FromReader, Direction::ToReader] {
            // The direction's bytes as one stream, and where each chunk
            // begins in it.
            let mut stream = Vec::new();
            let mut starts = Vec::new();
            for (i, line) in out.lines.iter().enumerate() {
                if let Line::Chunk(c) = line {
                    if c.dir == dir {
                        starts.push((stream.len(), i + 1));
                        stream.extend_from_slice(&c.bytes);
                    }
                }
            }
            let place = |pos: usize, what| {
                let k = starts.partition_point(|&(s, _)| s <= pos).saturating_sub(1);
                let (s, line) = starts.get(k).copied().unwrap_or((0, 0));
                Place {
                    line,
                    byte: pos - s,
                    what,
                }
            };
            // A good frame's header and CRC are not text.
            let mut frames = Vec::new();
            let mut pos = 0;
            while let Scan::Frame {
                frame,
                skipped,
                consumed,
            } = scan(&stream[pos..])
            {
                frames.push((pos + skipped, frame.payload.len()));
                pos += consumed;
            }
            let view = text_view(&stream, frames);
            let mask = match dir {
                Direction::FromReader => &written.reader[..],
                Direction::ToReader => &[],
            };
            for h in unexplained(&view, mask, self.today, true) {
                left.push(place(h.start, h.shape.describe()));
            }
            for (_, v) in self
                .originals
                .iter()
                .filter(|(k, v)| *k != Kind::Digits && v.len() >= 4)
            {
                if let Some(p) = stream.windows(v.len()).position(|w| w == v.as_slice()) {
                    left.push(place(p, "an original value the redaction replaced"));
                }
            }
        }
        for (i, line) in out.lines.iter().enumerate() {
            if let Line::Comment(text) | Line::Unplug { text, .. } = line {
                let mask = written.comments.get(&i).map_or(&[][..], |m| &m[..]);
                // A reader named in Chinese is not a person.
                let names = !text.starts_with("# reader=");
                for h in unexplained(text.as_bytes(), mask, self.today, names) {
                    left.push(Place {
                        line: i + 1,
                        byte: h.start,
                        what: h.shape.describe(),
                    });
                }
            }
        }
        left.sort_by_key(|p| (p.line, p.byte));
        left
    }

    /// Replaces every value in `buf` shaped like personal data that is not
    /// synthetic already (the envelopes' headers and CRCs are not text;
    /// `text`: only with values that keep UTF-8 valid).
    fn sweep(&mut self, buf: &mut [u8], envelopes: &[Envelope], text: bool) {
        for _ in 0..SWEEP_ROUNDS {
            let view = text_view(buf, envelopes.iter().map(|e| (e.at, e.len)));
            let hits: Vec<_> = unexplained(&view, &self.written, self.today, true)
                .into_iter()
                .filter(|h| !text || h.shape != Shape::Name(TextEncoding::Gbk))
                .collect();
            if hits.is_empty() {
                return;
            }
            for h in hits {
                let kind = match h.shape {
                    Shape::Ssn => Kind::Ssn,
                    Shape::CardNo => Kind::CardNo,
                    Shape::CardId => Kind::CardId,
                    Shape::Pan => Kind::Pan,
                    Shape::Name(e) if e == self.encoding => Kind::Name,
                    Shape::Name(TextEncoding::Utf8) => Kind::Utf8Name,
                    Shape::Name(TextEncoding::Gbk) => Kind::GbkName,
                };
                self.replace(kind, buf, h.start..h.end);
            }
        }
    }

    fn rng(&self, kind: Kind, value: &[u8], attempt: u32) -> ChaCha8Rng {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update([kind as u8]);
        h.update(attempt.to_le_bytes());
        h.update(self.salt.to_le_bytes());
        h.update(value);
        ChaCha8Rng::from_seed(h.finalize().into())
    }

    /// The synthetic value for `value`, remembered for the file.
    fn synthetic(&mut self, kind: Kind, value: &[u8]) -> Vec<u8> {
        if let Some(s) = self.map.get(&(kind, value.to_vec())) {
            return s.clone();
        }
        // Drawn again (another salt) while it is an original value of the
        // file.
        let mut s = Vec::new();
        for salt in 0..64 {
            self.salt = salt;
            s = self.draw(kind, value);
            if s == value || !self.collides(&s) {
                break;
            }
        }
        self.salt = 0;
        debug_assert_eq!(s.len(), value.len());
        // What stays on purpose (a card identification code cut off
        // within its region prefix) is not an original to look for.
        if s != value {
            self.originals.insert((kind, value.to_vec()));
            self.avoid_value(value.to_vec());
        }
        self.map.insert((kind, value.to_vec()), s.clone());
        s
    }

    fn avoid_value(&mut self, v: Vec<u8>) {
        self.avoid_lengths.insert(v.len());
        self.avoid.insert(v);
    }

    /// Whether `s` is an original value, or holds one of 4 bytes or more.
    fn collides(&self, s: &[u8]) -> bool {
        self.avoid.contains(s)
            || self
                .avoid_lengths
                .range(4..=s.len().max(4))
                .any(|&n| s.windows(n).any(|w| self.avoid.contains(w)))
    }

    fn draw(&self, kind: Kind, value: &[u8]) -> Vec<u8> {
        match kind {
            Kind::Ssn => self.make_ssn(value),
            Kind::Name => self.make_name(value, self.encoding),
            Kind::Utf8Name => self.make_name(value, TextEncoding::Utf8),
            Kind::GbkName => self.make_name(value, TextEncoding::Gbk),
            Kind::CardNo | Kind::Digits => self.shape(kind, value, 0),
            Kind::CardId => {
                // The region prefix stays (it must match the record's region).
                let keep = value.len().min(6);
                let mut s = value[..keep].to_vec();
                s.extend(self.shape(kind, &value[keep..], 0));
                s
            }
            Kind::Pan => self.make_pan(value),
        }
    }

    /// Same classes of characters: digits to digits, upper-case letters to
    /// upper-case letters, lower to lower; anything else stays.
    fn shape(&self, kind: Kind, value: &[u8], attempt: u32) -> Vec<u8> {
        let mut rng = self.rng(kind, value, attempt);
        value
            .iter()
            .map(|&b| match b {
                b'0'..=b'9' => b'0' + rng.random_range(0..10u8),
                b'A'..=b'Z' => b'A' + rng.random_range(0..26u8),
                b'a'..=b'z' => b'a' + rng.random_range(0..26u8),
                other => other,
            })
            .collect()
    }

    fn make_ssn(&self, value: &[u8]) -> Vec<u8> {
        let class = |s: &[u8]| Ssn::parse_on(s, self.today).map(|_| ()).map_err(kind_of);
        let valid = |attempt: u32| -> Vec<u8> {
            let mut rng = self.rng(Kind::Ssn, value, attempt);
            let mut s = REGIONS[rng.random_range(0..REGIONS.len())]
                .as_bytes()
                .to_vec();
            let born = Date::from_days_since_epoch(rng.random_range(-10_957..16_000))
                .unwrap_or(Date::EPOCH);
            s.extend(format!("{:04}{:02}{:02}", born.year(), born.month(), born.day()).bytes());
            // The sequence number's parity is the sex: keep it.
            let odd = value
                .get(16)
                .is_some_and(|b| b.is_ascii_digit() && (b - b'0') % 2 == 1);
            let seq = rng.random_range(0..500u16) * 2 + u16::from(odd);
            s.extend(format!("{seq:03}").bytes());
            let check = check_char(&s).unwrap_or(b'0');
            s.push(check);
            s
        };
        match class(value) {
            Ok(()) => valid(0),
            Err(SsnKind::CheckDigit) => {
                let mut s = valid(0);
                let right = s[17];
                s[17] = if right == b'0' { b'1' } else { b'0' };
                s
            }
            Err(kind) => {
                // Digits drawn again until the number fails the same way
                // (other characters, and so their positions, stay).
                for attempt in 0..10_000 {
                    let s = self.shape(Kind::Ssn, value, attempt);
                    if class(&s) == Err(kind) {
                        return s;
                    }
                }
                self.shape(Kind::Ssn, value, 0)
            }
        }
    }

    fn make_pan(&self, value: &[u8]) -> Vec<u8> {
        // The first six digits name the bank (BIN), not the person: keep them.
        let keep = value.len().min(6);
        let mut s = value[..keep].to_vec();
        s.extend(self.shape(Kind::Pan, &value[keep..], 0));
        if s.len() >= 2 && s.iter().all(u8::is_ascii_digit) {
            let n = s.len();
            let was_ok = firmware_protocol::magstripe::luhn_ok(value);
            for d in b'0'..=b'9' {
                s[n - 1] = d;
                if firmware_protocol::magstripe::luhn_ok(&s) == was_ok {
                    break;
                }
            }
        }
        s
    }

    fn make_name(&self, value: &[u8], encoding: TextEncoding) -> Vec<u8> {
        let mut rng = self.rng(Kind::Name, value, 0);
        let pool: Vec<char> = HANZI.chars().collect();
        let mut hanzi = || pool[rng.random_range(0..pool.len())];
        let mut out = Vec::with_capacity(value.len());
        let mut i = 0;
        while i < value.len() {
            let b = value[i];
            if b < 0x80 {
                out.push(match b {
                    b'A'..=b'Z' | b'a'..=b'z' => {
                        let base = if b.is_ascii_uppercase() { b'A' } else { b'a' };
                        base + (hanzi() as u32 % 26) as u8
                    }
                    other => other,
                });
                i += 1;
                continue;
            }
            let width = match encoding {
                TextEncoding::Gbk => 2,
                TextEncoding::Utf8 => shapes::utf8_width(b),
            };
            let ch = value.get(i..i + width).filter(|c| c.len() == width);
            let replace = match (encoding, ch) {
                // GBK hanzi: leads 0x81–0xA0 and 0xB0–0xFE (0xA1–0xA9 are
                // symbols such as the middle dot, kept).
                (TextEncoding::Gbk, Some(c)) => (0x81..=0xA0).contains(&c[0]) || c[0] >= 0xB0,
                (TextEncoding::Utf8, Some(c)) => std::str::from_utf8(c)
                    .ok()
                    .and_then(|s| s.chars().next())
                    .is_some_and(shapes::is_hanzi),
                _ => false,
            };
            match (replace, ch) {
                (true, Some(_)) => {
                    let h = hanzi();
                    match encoding {
                        TextEncoding::Gbk => {
                            let mut buf = [0; 4];
                            let (enc, _, _) = encoding_rs::GBK.encode(h.encode_utf8(&mut buf));
                            out.extend_from_slice(&enc);
                        }
                        TextEncoding::Utf8 => {
                            out.extend_from_slice(h.encode_utf8(&mut [0; 4]).as_bytes())
                        }
                    }
                    i += width;
                }
                (false, Some(c)) => {
                    out.extend_from_slice(c);
                    i += width;
                }
                (_, None) => {
                    // A character cut off (or an undecodable byte): kept.
                    out.push(b);
                    i += 1;
                }
            }
        }
        out
    }

    /// Replaces `buf[r]` with its synthetic value, unless the redaction
    /// wrote all of it already (a field seen twice, in a frame and by a
    /// later pass, is replaced once).
    fn replace(&mut self, kind: Kind, buf: &mut [u8], r: Range<usize>) {
        let Some(field) = buf.get(r.clone()).filter(|f| !f.is_empty()) else {
            return;
        };
        if self
            .written
            .get(r.clone())
            .is_some_and(|w| w.iter().all(|&w| w))
        {
            return;
        }
        let s = self.synthetic(kind, field);
        buf[r.clone()].copy_from_slice(&s);
        if let Some(w) = self.written.get_mut(r) {
            w.fill(true);
        }
    }

    /// Replaces each `(kind, range)` of `todo`, ranges relative to `base`.
    fn replace_all(&mut self, buf: &mut [u8], base: usize, todo: Vec<(Kind, Range<usize>)>) {
        for (kind, r) in todo {
            self.replace(kind, buf, base + r.start..base + r.end);
        }
    }

    /// A basic-info record (§2) in `buf[span]`, complete or cut off: SSN,
    /// card number, card identification code and name.
    fn record(&mut self, buf: &mut [u8], span: Range<usize>) {
        let base = span.start;
        let rec = &buf[span];
        let bars = shapes::bars(rec);
        let len = rec.len();
        let field = |i: usize| -> Option<Range<usize>> {
            let start = if i == 0 { 0 } else { bars.get(i - 1)? + 1 };
            let end = bars.get(i).copied().unwrap_or(len);
            Some(start..end)
        };
        let mut todo: Vec<(Kind, Range<usize>)> =
            [(1, Kind::Ssn), (2, Kind::CardNo), (3, Kind::CardId)]
                .into_iter()
                .filter_map(|(i, kind)| Some((kind, field(i)?)))
                .collect();
        // The name lies between the fourth bar and the sixth from the right
        // (a GBK name may itself hold 0x7C); in a cut-off record, up to the
        // next bar or the end.
        if let Some(&start) = bars.get(3) {
            let start = start + 1;
            let trailing = rec.last() == Some(&b'|');
            let from_right = if trailing { 7 } else { 6 };
            let end = if bars.len() >= 4 + from_right {
                bars[bars.len() - from_right]
            } else {
                bars.get(4).copied().unwrap_or(len)
            };
            if start < end {
                todo.push((Kind::Name, start..end));
            }
        }
        self.replace_all(buf, base, todo);
    }

    /// A magnetic-stripe line (§3) in `buf[span]`: PANs, the track-1 name
    /// and an SSN at the start of track 1's discretionary data.
    fn magstripe(&mut self, buf: &mut [u8], span: Range<usize>) {
        let base = span.start;
        let line = &buf[span];
        // (Replacing keeps every separator, so the fields are found first.)
        let mut todo = Vec::new();
        let mut i = 0;
        while i < line.len() {
            match line[i] {
                b'%' if line.get(i + 1) == Some(&b'B') => {
                    let pan_start = i + 2;
                    let pan_end = find(line, pan_start, b'^');
                    todo.push((Kind::Pan, pan_start..pan_end));
                    if pan_end >= line.len() {
                        break;
                    }
                    let name_start = pan_end + 1;
                    let name_end = find(line, name_start, b'^');
                    todo.push((Kind::Name, name_start..name_end));
                    // ^YYMM SSS then discretionary data up to '?'.
                    let disc = (name_end + 8).min(line.len());
                    let end = find(line, disc, b'?');
                    let ssn_end = (disc + 18).min(end);
                    if ssn_end - disc == 18 {
                        todo.push((Kind::Ssn, disc..ssn_end));
                    }
                    todo.push((Kind::Digits, ssn_end..end));
                    i = end;
                }
                b';' => {
                    let pan_start = i + 1;
                    let pan_end = find_any(line, pan_start, b"=?");
                    todo.push((Kind::Pan, pan_start..pan_end));
                    i = pan_end;
                }
                _ => i += 1,
            }
        }
        self.replace_all(buf, base, todo);
    }

    /// Each CR LF line (and a last line cut off) of `buf[span]` on its
    /// own: the records in it, from where each begins, and stripes.
    /// `text`: the reader's text mode, in which every line with a `|` is a
    /// record (even when its start is garbled), or with a `%` or `;` a
    /// stripe.
    fn lines(&mut self, buf: &mut [u8], span: Range<usize>, text: Option<Mode>) {
        let mut start = span.start;
        while start < span.end {
            let end = find_any(&buf[..span.end], start, b"\r\n");
            let line = &buf[start..end];
            // A return-code line (`-2201`) holds nothing personal.
            let starts: Vec<usize> = (0..line.len())
                .filter(|&p| record_start(line, p))
                .map(|p| start + p)
                .collect();
            let garbled = starts.is_empty() && text == Some(Mode::SsseText) && line.contains(&b'|');
            let stripe = line
                .windows(3)
                .any(|w| w.starts_with(b"%B") && w[2].is_ascii_digit())
                || line
                    .windows(13)
                    .any(|w| w[0] == b';' && w[1..].iter().all(u8::is_ascii_digit))
                || (text == Some(Mode::Magstripe)
                    && (line.contains(&b'%') || line.contains(&b';')));
            if garbled {
                self.record(buf, start..end);
            }
            for (k, &s) in starts.iter().enumerate() {
                let e = starts.get(k + 1).copied().unwrap_or(end);
                self.record(buf, s..e);
            }
            if stripe {
                self.magstripe(buf, start..end);
            }
            start = end + 1;
        }
    }

    /// Frame mode: every `CARD_IC` and `CARD_MAG` frame, complete (CRC
    /// recomputed, an error kept) or cut off. Returns every complete frame
    /// (of any command), whose CRC is to be recomputed if its payload is
    /// rewritten later.
    fn frames(&mut self, stream: &mut [u8]) -> Vec<Envelope> {
        let mut spans = Vec::new();
        let mut i = 0;
        while let Some(off) = stream[i..].iter().position(|&b| b == STX) {
            let at = i + off;
            i = at + 1;
            if stream.len() < at + 5 {
                break;
            }
            let len = u16::from_be_bytes([stream[at + 1], stream[at + 2]]) as usize;
            let cmd = stream[at + 4];
            if len > MAX_PAYLOAD {
                continue;
            }
            if cmd != Cmd::CardIc as u8 && cmd != Cmd::CardMag as u8 {
                // Other valid frames (STATUS, READ_ERROR, …) stay as they
                // are: the decoder's own scan says whether one starts here.
                let window = &stream[at..(at + MAX_FRAME).min(stream.len())];
                if let Scan::Frame {
                    skipped: 0,
                    consumed,
                    ..
                } = scan(window)
                {
                    spans.push(Envelope { at, len, off: 0 });
                    i = at + consumed;
                }
                continue;
            }
            let start = at + 5;
            let complete = at + len + OVERHEAD <= stream.len() && stream[at + len + 7] == ETX;
            // A frame cut off (an unplug) ends where the next one begins:
            // text payloads never hold 0x02.
            let end = if complete {
                start + len
            } else {
                find(stream, start, STX).min(start + len)
            };
            // Text payloads only: a record starts with its region digits,
            // a stripe with % or ; (so 0x02 in noise is left alone).
            let plausible = match cmd {
                c if c == Cmd::CardIc as u8 => {
                    stream[start..end].iter().take(6).all(u8::is_ascii_digit)
                }
                _ => matches!(stream.get(start), Some(b'%') | Some(b';')),
            };
            if !plausible || start == end {
                continue;
            }
            let crc_off = complete.then(|| {
                let stored = u16::from_be_bytes([stream[start + len], stream[start + len + 1]]);
                stored ^ CRC16.checksum(&stream[at + 1..start + len])
            });
            if cmd == Cmd::CardIc as u8 {
                self.record(stream, start..end);
            } else {
                self.magstripe(stream, start..end);
            }
            if let Some(off) = crc_off {
                let crc = CRC16.checksum(&stream[at + 1..start + len]) ^ off;
                stream[start + len..start + len + 2].copy_from_slice(&crc.to_be_bytes());
                i = at + len + OVERHEAD;
                spans.push(Envelope { at, len, off });
            }
        }
        spans
    }
}

/// [`SsnError`] without its details: the way a number is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SsnKind {
    Length,
    Character,
    Province,
    BirthDate,
    FutureBirthDate,
    CheckDigit,
}

fn kind_of(e: SsnError) -> SsnKind {
    match e {
        SsnError::Length { .. } => SsnKind::Length,
        SsnError::Character { .. } => SsnKind::Character,
        SsnError::Province { .. } => SsnKind::Province,
        SsnError::BirthDate => SsnKind::BirthDate,
        SsnError::FutureBirthDate => SsnKind::FutureBirthDate,
        SsnError::CheckDigit { .. } => SsnKind::CheckDigit,
    }
}

fn find(s: &[u8], from: usize, b: u8) -> usize {
    s.get(from..)
        .and_then(|t| t.iter().position(|&c| c == b))
        .map_or(s.len(), |p| from + p)
}

fn find_any(s: &[u8], from: usize, set: &[u8]) -> usize {
    s.get(from..)
        .and_then(|t| t.iter().position(|c| set.contains(c)))
        .map_or(s.len(), |p| from + p)
}

/// Whether a basic-info record begins at `p` of `line`: a region code (6
/// digits, a whole word), `|`, then an SSN field (up to 18 digits or `X`,
/// possibly empty) ending at a `|` or the end.
fn record_start(line: &[u8], p: usize) -> bool {
    let Some(region) = line.get(p..p + 7) else {
        return false;
    };
    if !(region[..6].iter().all(u8::is_ascii_digit) && region[6] == b'|')
        || p.checked_sub(1)
            .and_then(|q| line.get(q))
            .is_some_and(u8::is_ascii_alphanumeric)
    {
        return false;
    }
    let ssn = &line[p + 7..find(line, p + 7, b'|')];
    ssn.len() <= 18
        && ssn
            .iter()
            .all(|b| b.is_ascii_digit() || *b == b'X' || *b == b'x')
}

/// The values in `bytes` shaped like personal data (names only if
/// `names`) that are not wholly in bytes the redaction wrote (`written`).
fn unexplained(bytes: &[u8], written: &[bool], today: Date, names: bool) -> Vec<shapes::Hit> {
    shapes::find(bytes, today)
        .into_iter()
        .filter(|h| names || !matches!(h.shape, Shape::Name(_)))
        .filter(|h| {
            !written
                .get(h.start..h.end)
                .is_some_and(|w| w.iter().all(|&w| w))
        })
        .collect()
}

/// `bytes` as text for [`shapes::find`]: the header and CRC of each frame
/// `(at, payload length)` blanked out (they are not text, and a CRC byte
/// that happens to be a digit must not lengthen a run of the payload).
fn text_view(bytes: &[u8], frames: impl IntoIterator<Item = (usize, usize)>) -> Vec<u8> {
    let mut view = bytes.to_vec();
    for (at, len) in frames {
        for r in [at..at + 5, at + 5 + len..at + 5 + len + 3] {
            if let Some(b) = view.get_mut(r) {
                b.fill(0);
            }
        }
    }
    view
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> Date {
        Date::new(2026, 12, 1).unwrap_or(Date::EPOCH)
    }

    /// A frame-mode capture with a note and a record in line noise.
    fn noisy_capture() -> CaptureFile {
        let mut rec =
            b"\x02\xff noise 330100|11010519491231002X|A12345678|330100D15600000500A1B2C3D4E5F6A7|"
                .to_vec();
        rec.extend_from_slice(&encoding_rs::GBK.encode("张三").0);
        rec.extend_from_slice(b"|3B6D000000815448|3.00|");
        let text = format!(
            "{MAGIC}\n# reader=a mode=frame baud=1 encoding=gbk\n# seen with 440524188001010014\n0.5 < {}\n",
            hex::encode(&rec)
        );
        CaptureFile::parse(&text, "t").unwrap()
    }

    #[test]
    fn the_final_check_finds_what_no_pass_understood_and_says_where() {
        let file = noisy_capture();
        let left = Redactor::with_key([1; 32], TextEncoding::Gbk, today())
            .check(&file, &Written::default());
        let found: Vec<String> = left.iter().map(Place::to_string).collect();
        assert_eq!(
            found,
            [
                "line 3 byte 12: an SSN-shaped run",
                "line 4 byte 16: an SSN-shaped run",
                "line 4 byte 35: a card-number-shaped run",
                "line 4 byte 45: a card-identification-code-shaped run",
                "line 4 byte 78: a name field (GBK)",
            ]
        );
        let e = RedactError::Leftover(left).to_string();
        assert!(
            e.contains("5 value(s)") && e.contains("line 4 byte 78"),
            "{e}"
        );
        assert!(
            !e.contains("11010519491231002X") && !e.contains("A12345678"),
            "{e}"
        );
    }

    #[test]
    fn a_record_in_noise_and_a_number_in_a_note_are_redacted() {
        let file = noisy_capture();
        let (out, report) = Redactor::with_key([1; 32], TextEncoding::Gbk, today())
            .redact_file(&file)
            .unwrap();
        let text = out.to_text();
        assert!(!text.contains("440524188001010014"), "{text}");
        let bytes: Vec<u8> = out.chunks().flat_map(|c| c.bytes.clone()).collect();
        let gbk = encoding_rs::GBK.encode("张三").0;
        for v in [
            &b"11010519491231002X"[..],
            b"A12345678",
            b"330100D15600000500A1B2C3D4E5F6A7",
            &gbk,
        ] {
            assert!(!bytes.windows(v.len()).any(|w| w == v), "{v:?}");
        }
        assert_eq!(
            (report.ssns, report.names, report.cards),
            (2, 1, 2),
            "{report:?}"
        );
        assert_eq!(
            bytes.len(),
            file.chunks().map(|c| c.bytes.len()).sum::<usize>()
        );
    }
}
