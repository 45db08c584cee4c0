//! ESC/POS bytes: an encoder for receipts and a decoder that reads them
//! back (tests, the simulator's printer).
//!
//! Commands (Epson, *ESC/POS Command Reference*; hex):
//!
//! | command | bytes | use |
//! |---|---|---|
//! | `ESC @` | `1B 40` | initialise the printer |
//! | `FS &` | `1C 26` | Chinese models: select Chinese (double-byte GB) character mode |
//! | `FS .` | `1C 2E` | cancel Chinese character mode |
//! | `FS ( C` fn 48 | `1C 28 43 02 00 30 02` | Epson: character encode system UTF-8 |
//! | `ESC a n` | `1B 61 n` | justification: 0 left, 1 centre |
//! | `ESC E n` | `1B 45 n` | emphasised (bold) on/off |
//! | `GS ! n` | `1D 21 n` | character size; `0x11` double width and height |
//! | `FS ! n` | `1C 21 n` | Chinese character print mode; `0x0C` double width and height |
//! | `LF` | `0A` | print and feed one line |
//! | `ESC d n` | `1B 64 n` | print and feed `n` lines |
//! | `GS ( k` cn 49 fn 65 | `1D 28 6B 04 00 31 41 32 00` | QR: model 2 (function 165) |
//! | `GS ( k` cn 49 fn 67 | `1D 28 6B 03 00 31 43 n` | QR: module size `n` dots (function 167) |
//! | `GS ( k` cn 49 fn 69 | `1D 28 6B 03 00 31 45 n` | QR: error correction, `0x31` = M (function 169) |
//! | `GS ( k` cn 49 fn 80 | `1D 28 6B pL pH 31 50 30 d…` | QR: store `pL + 256 pH − 3` bytes (function 180) |
//! | `GS ( k` cn 49 fn 81 | `1D 28 6B 03 00 31 51 30` | QR: print the stored symbol (function 181) |
//! | `GS V m n` | `1D 56 42 n` | feed `n` and cut (partial cut, function B) |
//! | `DLE EOT n` | `10 04 n` | real-time status (see [`super::status`]) |
//!
//! The QR payload is stored as UTF-8 whatever the text encoding: scanners
//! read QR byte mode as UTF-8.

use serde::{Deserialize, Serialize};

const ESC: u8 = 0x1B;
const GS: u8 = 0x1D;
const FS: u8 = 0x1C;
const DLE: u8 = 0x10;
const LF: u8 = 0x0A;

/// The printer's text encoding (`[printer] encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Encoding {
    /// GBK (GB 2312 and its extension): what Chinese thermal printers
    /// print in their Chinese character mode (`FS &`). The default.
    #[default]
    #[serde(rename = "gbk")]
    Gbk,
    /// GB 18030: GBK plus four-byte codes (printers with the GB 18030
    /// font; others print the two-byte part alike).
    #[serde(rename = "gb18030")]
    Gb18030,
    /// UTF-8, selected with `FS ( C` function 48 (Epson TM models with
    /// the Chinese font).
    #[serde(rename = "utf-8")]
    Utf8,
}

impl Encoding {
    /// The configuration's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Gbk => "gbk",
            Encoding::Gb18030 => "gb18030",
            Encoding::Utf8 => "utf-8",
        }
    }

    fn codec(self) -> &'static encoding_rs::Encoding {
        match self {
            Encoding::Gbk => encoding_rs::GBK,
            Encoding::Gb18030 => encoding_rs::GB18030,
            Encoding::Utf8 => encoding_rs::UTF_8,
        }
    }

    /// `text` in this encoding; characters it cannot hold become `?`
    /// (never an HTML entity, which `encoding_rs` would write).
    pub fn encode(self, text: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len() * 2);
        let mut buf = [0u8; 4];
        for c in text.chars() {
            let s: &str = c.encode_utf8(&mut buf);
            let (bytes, _, unmappable) = self.codec().encode(s);
            if unmappable {
                out.push(b'?');
            } else {
                out.extend_from_slice(&bytes);
            }
        }
        out
    }

    /// `bytes` decoded (malformed sequences become U+FFFD).
    pub fn decode(self, bytes: &[u8]) -> String {
        self.codec()
            .decode_without_bom_handling(bytes)
            .0
            .into_owned()
    }
}

/// A receipt being written as ESC/POS bytes.
#[derive(Debug, Clone)]
pub struct Doc {
    bytes: Vec<u8>,
    encoding: Encoding,
}

impl Doc {
    /// `ESC @`, then the character mode `encoding` needs.
    pub fn new(encoding: Encoding) -> Doc {
        let mut bytes = vec![ESC, b'@'];
        match encoding {
            Encoding::Gbk | Encoding::Gb18030 => bytes.extend_from_slice(&[FS, b'&']),
            Encoding::Utf8 => {
                bytes.extend_from_slice(&[FS, b'.', FS, b'(', b'C', 0x02, 0x00, 0x30, 0x02])
            }
        }
        Doc { bytes, encoding }
    }

    /// Centred (`true`) or left-aligned text from here on.
    pub fn center(&mut self, on: bool) -> &mut Doc {
        self.bytes.extend_from_slice(&[ESC, b'a', u8::from(on)]);
        self
    }

    /// A title line: bold, double width and height, then back to normal.
    pub fn title(&mut self, text: &str) -> &mut Doc {
        self.bytes
            .extend_from_slice(&[ESC, b'E', 1, GS, b'!', 0x11, FS, b'!', 0x0C]);
        self.line(text);
        self.bytes
            .extend_from_slice(&[ESC, b'E', 0, GS, b'!', 0, FS, b'!', 0]);
        self
    }

    /// One line of text. Control characters in `text` are dropped (no
    /// text can smuggle a command in).
    pub fn line(&mut self, text: &str) -> &mut Doc {
        let clean: String = text.chars().filter(|c| !c.is_control()).collect();
        let encoded = self.encoding.encode(&clean);
        self.bytes.extend_from_slice(&encoded);
        self.bytes.push(LF);
        self
    }

    /// A QR code (model 2, module size 6, error correction M) of `data`,
    /// stored as UTF-8. Data longer than a QR symbol holds is cut at a
    /// character boundary (7089 bytes is far above any receipt's).
    pub fn qr(&mut self, data: &str) -> &mut Doc {
        let mut end = data.len().min(2000);
        while !data.is_char_boundary(end) {
            end -= 1;
        }
        let data = &data.as_bytes()[..end];
        let b = &mut self.bytes;
        b.extend_from_slice(&[GS, b'(', b'k', 4, 0, 0x31, 0x41, 0x32, 0]); // 165
        b.extend_from_slice(&[GS, b'(', b'k', 3, 0, 0x31, 0x43, 6]); // 167
        b.extend_from_slice(&[GS, b'(', b'k', 3, 0, 0x31, 0x45, 0x31]); // 169
        let n = data.len() + 3;
        b.extend_from_slice(&[
            GS,
            b'(',
            b'k',
            (n % 256) as u8,
            (n / 256) as u8,
            0x31,
            0x50,
            0x30,
        ]); // 180
        b.extend_from_slice(data);
        b.extend_from_slice(&[GS, b'(', b'k', 3, 0, 0x31, 0x51, 0x30]); // 181
        b.push(LF);
        self
    }

    /// Feeds `lines` lines.
    pub fn feed(&mut self, lines: u8) -> &mut Doc {
        self.bytes.extend_from_slice(&[ESC, b'd', lines]);
        self
    }

    /// Feeds to the cutter and cuts (partial cut).
    pub fn cut(&mut self) -> &mut Doc {
        self.bytes.extend_from_slice(&[GS, b'V', 66, 3]);
        self
    }

    /// The bytes so far.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// A byte stream read back: what a printer would have printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Printed {
    /// Every printed line, in order (titles too).
    pub lines: Vec<String>,
    /// Lines printed bold and double size.
    pub titles: Vec<String>,
    /// The payload of each printed QR code (UTF-8).
    pub qr: Vec<String>,
    /// Cuts.
    pub cuts: usize,
    /// `DLE EOT n` queries met in the stream (`n`).
    pub queries: Vec<u8>,
}

impl Printed {
    /// The receipts in the stream: each cut ends one. Lines and QR codes
    /// after the last cut are left out.
    pub fn receipts(bytes: &[u8], encoding: Encoding) -> Vec<Printed> {
        let mut out = Vec::new();
        let mut start = 0;
        let mut i = 0;
        while i + 1 < bytes.len() {
            if bytes[i] == GS && bytes[i + 1] == b'V' {
                let len = if bytes.get(i + 2).is_some_and(|m| *m >= 65) {
                    4
                } else {
                    3
                };
                let end = (i + len).min(bytes.len());
                out.push(decode(&bytes[start..end], encoding));
                start = end;
                i = end;
            } else {
                i += skip(bytes, i).max(1);
            }
        }
        out
    }
}

/// Length of the command or text byte at `i` (at least 1).
fn skip(b: &[u8], i: usize) -> usize {
    let at = |k: usize| b.get(i + k).copied().unwrap_or(0);
    match at(0) {
        ESC => match at(1) {
            b'@' => 2,
            b'a' | b'E' | b'd' | b'!' | b'-' | b'M' | b'J' | b't' | b'R' => 3,
            _ => 2,
        },
        GS => match at(1) {
            b'!' | b'B' => 3,
            b'V' if at(2) >= 65 => 4,
            b'V' => 3,
            b'(' => 5 + usize::from(at(3)) + 256 * usize::from(at(4)),
            _ => 2,
        },
        FS => match at(1) {
            b'&' | b'.' => 2,
            b'!' | b'-' | b'W' => 3,
            b'(' => 5 + usize::from(at(3)) + 256 * usize::from(at(4)),
            _ => 2,
        },
        DLE if at(1) == 0x04 => 3,
        _ => 1,
    }
}

/// Decodes an ESC/POS byte stream: text in `encoding` split at `LF` (and
/// at `ESC d`), commands skipped, QR payloads (`GS ( k` function 180)
/// collected, cuts counted. A command cut off at the end is dropped.
pub fn decode(b: &[u8], encoding: Encoding) -> Printed {
    let mut p = Printed::default();
    let mut text = Vec::new();
    let mut big = false;
    let mut i = 0;
    let flush = |text: &mut Vec<u8>, p: &mut Printed, big: bool| {
        let line = encoding.decode(text);
        text.clear();
        if big {
            p.titles.push(line.clone());
        }
        p.lines.push(line);
    };
    while i < b.len() {
        let c = b[i];
        match c {
            LF => {
                flush(&mut text, &mut p, big);
                i += 1;
                continue;
            }
            ESC | GS | FS => {}
            DLE if b.get(i + 1) == Some(&0x04) => {}
            _ => {
                text.push(c);
                i += 1;
                continue;
            }
        }
        let n = skip(b, i);
        let Some(cmd) = b.get(i..i + n) else {
            break;
        };
        match cmd {
            [ESC, b'd', _] if !text.is_empty() => flush(&mut text, &mut p, big),
            [GS, b'!', size] => big = *size != 0,
            [GS, b'V', ..] => p.cuts += 1,
            [DLE, 0x04, q] => p.queries.push(*q),
            [GS, b'(', b'k', _, _, 0x31, 0x50, 0x30, data @ ..] => {
                p.qr.push(String::from_utf8_lossy(data).into_owned())
            }
            _ => {}
        }
        i += n;
    }
    if !text.is_empty() {
        flush(&mut text, &mut p, big);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receipt_in_gbk_has_init_chinese_mode_qr_and_cut() {
        let mut d = Doc::new(Encoding::Gbk);
        d.center(true).title("家庭共济绑定凭条").center(false);
        d.line("参保人: 张*").qr("seq=7").feed(3).cut();
        let b = d.into_bytes();
        assert_eq!(&b[..4], &[0x1B, 0x40, 0x1C, 0x26], "ESC @ then FS &");
        // 张 in GBK is D5 C5.
        assert!(b.windows(2).any(|w| w == [0xD5, 0xC5]));
        // QR: model, size, level, store (5 + 3 = pL 8), print.
        let store = [0x1D, 0x28, 0x6B, 8, 0, 0x31, 0x50, 0x30, b's'];
        assert!(b.windows(store.len()).any(|w| w == store));
        let print = [0x1D, 0x28, 0x6B, 3, 0, 0x31, 0x51, 0x30];
        assert!(b.windows(print.len()).any(|w| w == print));
        assert_eq!(&b[b.len() - 4..], &[0x1D, 0x56, 66, 3]);
        let p = decode(&b, Encoding::Gbk);
        assert_eq!(p.titles, vec!["家庭共济绑定凭条"]);
        assert_eq!(p.lines[1], "参保人: 张*");
        assert_eq!(p.qr, vec!["seq=7"]);
        assert_eq!(p.cuts, 1);
    }

    #[test]
    fn utf8_selects_the_encode_system_and_round_trips() {
        let mut d = Doc::new(Encoding::Utf8);
        d.line("关系: 配偶").cut();
        let b = d.into_bytes();
        assert_eq!(&b[2..11], &[0x1C, 0x2E, 0x1C, 0x28, 0x43, 2, 0, 0x30, 2]);
        assert_eq!(decode(&b, Encoding::Utf8).lines, vec!["关系: 配偶"]);
    }

    #[test]
    fn text_cannot_carry_commands_and_unmappable_becomes_question_mark() {
        let mut d = Doc::new(Encoding::Gbk);
        d.line("a\x1dVb😀");
        let p = decode(d.bytes(), Encoding::Gbk);
        assert_eq!(p.lines, vec!["aVb?"]);
        assert_eq!(p.cuts, 0);
    }

    #[test]
    fn long_qr_payload_lengths_and_split_receipts() {
        let long = "码".repeat(200); // 600 bytes: pH = 2
        let mut d = Doc::new(Encoding::Gb18030);
        d.qr(&long).cut();
        d.line("second").cut();
        d.line("unfinished");
        let rs = Printed::receipts(d.bytes(), Encoding::Gb18030);
        assert_eq!(rs.len(), 2);
        assert_eq!(rs[0].qr, vec![long]);
        assert_eq!(rs[1].lines, vec!["second"]);
        // A stream cut in the middle of a command does not panic.
        for n in 0..d.bytes().len() {
            let _ = decode(&d.bytes()[..n], Encoding::Gbk);
        }
    }
}
