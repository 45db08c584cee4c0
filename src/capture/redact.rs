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
//!
//! After rewriting, the redactor looks for every original value it saw in
//! the output bytes and refuses to write the file if one is left.

use std::collections::{HashMap, HashSet};

use firmware_protocol::frame::{
    scan, Cmd, Scan, CRC16, ETX, MAX_FRAME, MAX_PAYLOAD, OVERHEAD, STX,
};
use firmware_protocol::ssn::{check_char, SsnError};
use firmware_protocol::{Date, Ssn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

use super::{CaptureFile, Direction, Line};
use crate::reader::card::TextEncoding;
use crate::reader::codec::Mode;

/// Why a capture could not be redacted.
#[derive(Debug, thiserror::Error)]
pub enum RedactError {
    /// The safety check found an original value in the output.
    #[error("redaction incomplete: {0} original value(s) still present; the file was not written")]
    Leftover(usize),
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
        }
    }

    /// Redacts a whole capture file.
    pub fn redact_file(mut self, file: &CaptureFile) -> Result<(CaptureFile, Report), RedactError> {
        self.encoding = file.header.encoding;
        // The reader's bytes as one stream, rewritten in place, then cut
        // back into the original chunks.
        let mut stream = Vec::new();
        for c in file.chunks() {
            if c.dir == Direction::FromReader {
                stream.extend_from_slice(&c.bytes);
            }
        }
        let frames = match file.header.mode {
            Mode::Frame => self.frames(&mut stream),
            Mode::SsseText => {
                self.lines(&mut stream, |r, line| r.record(line));
                Vec::new()
            }
            Mode::Magstripe => {
                self.lines(&mut stream, |r, line| r.magstripe(line));
                Vec::new()
            }
            Mode::Idcard => {
                self.idcard(&mut stream);
                Vec::new()
            }
        };
        self.sweep_ssns(&mut stream, &frames);
        let mut out = file.clone();
        let mut at = 0;
        for line in &mut out.lines {
            if let Line::Chunk(c) = line {
                if c.dir == Direction::FromReader {
                    let n = c.bytes.len();
                    c.bytes.copy_from_slice(&stream[at..at + n]);
                    at += n;
                }
            }
        }
        let left = self.leftovers(&out);
        if left > 0 {
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
            names: count(&[Kind::Name]),
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

    /// Originals (of at least 4 bytes) still found anywhere in the output.
    fn leftovers(&self, out: &CaptureFile) -> usize {
        let mut bytes = Vec::new();
        for c in out.chunks() {
            bytes.extend_from_slice(&c.bytes);
        }
        self.originals
            .iter()
            .filter(|(k, v)| *k != Kind::Digits && v.len() >= 4)
            .filter(|(_, v)| bytes.windows(v.len()).any(|w| w == v.as_slice()))
            .count()
    }

    fn rng(&self, kind: Kind, value: &[u8], attempt: u32) -> ChaCha8Rng {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update([kind as u8]);
        h.update(attempt.to_le_bytes());
        h.update(value);
        ChaCha8Rng::from_seed(h.finalize().into())
    }

    /// The synthetic value for `value`, remembered for the file.
    fn synthetic(&mut self, kind: Kind, value: &[u8]) -> Vec<u8> {
        if let Some(s) = self.map.get(&(kind, value.to_vec())) {
            return s.clone();
        }
        let s = match kind {
            Kind::Ssn => self.make_ssn(value),
            Kind::Name => self.make_name(value),
            Kind::CardNo | Kind::Digits => self.shape(kind, value, 0),
            Kind::CardId => {
                // The region prefix stays (it must match the record's region).
                let keep = value.len().min(6);
                let mut s = value[..keep].to_vec();
                s.extend(self.shape(kind, &value[keep..], 0));
                s
            }
            Kind::Pan => self.make_pan(value),
        };
        debug_assert_eq!(s.len(), value.len());
        // What stays on purpose (a card identification code cut off
        // within its region prefix) is not an original to look for.
        if s != value {
            self.originals.insert((kind, value.to_vec()));
        }
        self.map.insert((kind, value.to_vec()), s.clone());
        s
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

    fn make_name(&self, value: &[u8]) -> Vec<u8> {
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
            let width = match self.encoding {
                TextEncoding::Gbk => 2,
                TextEncoding::Utf8 => utf8_width(b),
            };
            let ch = value.get(i..i + width).filter(|c| c.len() == width);
            let replace = match (self.encoding, ch) {
                // GBK hanzi: leads 0x81–0xA0 and 0xB0–0xFE (0xA1–0xA9 are
                // symbols such as the middle dot, kept).
                (TextEncoding::Gbk, Some(c)) => (0x81..=0xA0).contains(&c[0]) || c[0] >= 0xB0,
                (TextEncoding::Utf8, Some(c)) => std::str::from_utf8(c)
                    .ok()
                    .and_then(|s| s.chars().next())
                    .is_some_and(|ch| ('\u{3400}'..='\u{9FFF}').contains(&ch)),
                _ => false,
            };
            match (replace, ch) {
                (true, Some(_)) => {
                    let h = hanzi();
                    match self.encoding {
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

    /// Replaces `field` in place with its synthetic value.
    fn replace(&mut self, kind: Kind, field: &mut [u8]) {
        if field.is_empty() {
            return;
        }
        let s = self.synthetic(kind, field);
        field.copy_from_slice(&s);
    }

    /// A basic-info record (§2), complete or cut off: SSN, card number,
    /// card identification code and name.
    fn record(&mut self, rec: &mut [u8]) {
        let bars: Vec<usize> = rec
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'|')
            .map(|(i, _)| i)
            .collect();
        let len = rec.len();
        let field = |i: usize| -> Option<(usize, usize)> {
            let start = if i == 0 { 0 } else { bars.get(i - 1)? + 1 };
            let end = bars.get(i).copied().unwrap_or(len);
            Some((start, end))
        };
        for (i, kind) in [(1, Kind::Ssn), (2, Kind::CardNo), (3, Kind::CardId)] {
            if let Some((s, e)) = field(i) {
                self.replace(kind, &mut rec[s..e]);
            }
        }
        // The name lies between the fourth bar and the sixth from the right
        // (a GBK name may itself hold 0x7C); in a cut-off record, up to the
        // next bar or the end.
        let Some(&start) = bars.get(3) else { return };
        let start = start + 1;
        let trailing = rec.last() == Some(&b'|');
        let from_right = if trailing { 7 } else { 6 };
        let end = if bars.len() >= 4 + from_right {
            bars[bars.len() - from_right]
        } else {
            bars.get(4).copied().unwrap_or(rec.len())
        };
        if start < end {
            self.replace(Kind::Name, &mut rec[start..end]);
        }
    }

    /// A magnetic-stripe line (§3): PANs, the track-1 name and an SSN at
    /// the start of track 1's discretionary data.
    fn magstripe(&mut self, line: &mut [u8]) {
        let mut i = 0;
        while i < line.len() {
            match line[i] {
                b'%' if line.get(i + 1) == Some(&b'B') => {
                    let pan_start = i + 2;
                    let pan_end = find(line, pan_start, b'^');
                    self.replace(Kind::Pan, &mut line[pan_start..pan_end]);
                    if pan_end >= line.len() {
                        return;
                    }
                    let name_start = pan_end + 1;
                    let name_end = find(line, name_start, b'^');
                    self.replace(Kind::Name, &mut line[name_start..name_end]);
                    // ^YYMM SSS then discretionary data up to '?'.
                    let disc = (name_end + 8).min(line.len());
                    let end = find(line, disc, b'?');
                    let ssn_end = (disc + 18).min(end);
                    if ssn_end - disc == 18 {
                        self.replace(Kind::Ssn, &mut line[disc..ssn_end]);
                    }
                    self.replace(Kind::Digits, &mut line[ssn_end..end]);
                    i = end;
                }
                b';' => {
                    let pan_start = i + 1;
                    let pan_end = find_any(line, pan_start, b"=?");
                    self.replace(Kind::Pan, &mut line[pan_start..pan_end]);
                    i = pan_end;
                }
                _ => i += 1,
            }
        }
    }

    /// Line modes: each CR LF line (and a last line cut off) on its own.
    fn lines(&mut self, stream: &mut [u8], mut each: impl FnMut(&mut Self, &mut [u8])) {
        let mut start = 0;
        while start < stream.len() {
            let end = find_any(stream, start, b"\r\n");
            let line = &mut stream[start..end];
            // A return-code line (`-2201`) holds nothing personal.
            if line.contains(&b'|') || line.contains(&b'%') || line.contains(&b';') {
                each(self, line);
            }
            start = end + 1;
        }
    }

    /// Whatever still looks like an SSN (a run of 17 digits and a digit or
    /// X, not part of a longer number) outside complete frames, where no
    /// field told us (a record in noise, a stray line), is replaced too;
    /// synthetic values are left alone.
    fn sweep_ssns(&mut self, stream: &mut [u8], frames: &[(usize, usize)]) {
        let synthetic: HashSet<Vec<u8>> = self
            .map
            .iter()
            .filter(|((k, _), _)| *k == Kind::Ssn)
            .map(|(_, v)| v.clone())
            .collect();
        let mut i = 0;
        while i + 18 <= stream.len() {
            if let Some(&(_, end)) = frames.iter().find(|(s, e)| (*s..*e).contains(&i)) {
                i = end;
                continue;
            }
            let w = &stream[i..i + 18];
            // A whole run: not part of a longer number (a PAN, a date run).
            let alone = (i == 0 || !stream[i - 1].is_ascii_digit())
                && stream
                    .get(i + 18)
                    .is_none_or(|b| !b.is_ascii_alphanumeric());
            let shaped = alone
                && w[..17].iter().all(u8::is_ascii_digit)
                && (w[17].is_ascii_digit() || w[17] == b'X');
            let inside_frame = frames.iter().any(|(s, e)| i < *e && i + 18 > *s);
            if shaped && !inside_frame && !synthetic.contains(w) {
                let s = self.synthetic(Kind::Ssn, w);
                stream[i..i + 18].copy_from_slice(&s);
                i += 18;
            } else {
                i += 1;
            }
        }
    }

    /// Frame mode: every `CARD_IC` and `CARD_MAG` frame, complete (CRC
    /// recomputed, an error kept) or cut off. Returns the spans of the
    /// complete frames.
    fn frames(&mut self, stream: &mut [u8]) -> Vec<(usize, usize)> {
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
                    spans.push((at, at + consumed));
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
            let payload = &mut stream[start..end];
            if cmd == Cmd::CardIc as u8 {
                self.record(payload);
            } else {
                self.magstripe(payload);
            }
            if let Some(off) = crc_off {
                let crc = CRC16.checksum(&stream[at + 1..start + len]) ^ off;
                stream[start + len..start + len + 2].copy_from_slice(&crc.to_be_bytes());
                i = at + len + OVERHEAD;
                spans.push((at, i));
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

fn utf8_width(b: u8) -> usize {
    match b {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
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
