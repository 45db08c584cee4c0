//! What personal data looks like in a reader's bytes, whatever the reader
//! meant by them: the shapes [`super::redact`] sweeps a capture for after
//! rewriting the fields it understood, and checks the output for before it
//! writes it. Nothing here knows frames, records or stripes; it looks at
//! bytes as text.
//!
//! - **SSN**: a run of 17 digits and a digit or `X` that is a whole word
//!   (between characters that are not letters or digits), valid or not;
//!   inside a longer run of letters and digits, an 18-character window
//!   that is a valid SSN (check character, region, birth date).
//! - **Card number**: a whole word of 9 upper-case letters or digits with
//!   at least one digit.
//! - **Card identification code**: a whole word of 32 letters or digits
//!   whose first 6 are digits (the region code).
//! - **PAN**: a run of 12 to 19 digits after `%B` or `;` (a stripe's
//!   track), or of 16, 17 or 19 digits anywhere that passes the Luhn check.
//! - **Name**: a field between two `|` (up to 64 bytes, no control bytes)
//!   holding a CJK ideograph in GBK or in UTF-8, and anywhere a run of two
//!   or more CJK ideographs in UTF-8. (A GBK run outside `|` fields is not
//!   looked for: two bytes of line noise are a GBK hanzi one time in
//!   three.)
//!
//! ASCII shapes are looked for in the raw bytes, which show every ASCII
//! character a GBK or UTF-8 decoding would (neither hides a digit); names
//! in the GBK and UTF-8 decodings.

use firmware_protocol::{Date, Ssn};

use crate::reader::card::TextEncoding;

/// A kind of personal value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Social security number.
    Ssn,
    /// Card number.
    CardNo,
    /// Card identification code.
    CardId,
    /// Bank card number (magnetic stripe).
    Pan,
    /// A name, in this encoding.
    Name(TextEncoding),
}

impl Shape {
    /// What it is, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Shape::Ssn => "an SSN-shaped run",
            Shape::CardNo => "a card-number-shaped run",
            Shape::CardId => "a card-identification-code-shaped run",
            Shape::Pan => "a PAN-shaped run",
            Shape::Name(TextEncoding::Gbk) => "a name field (GBK)",
            Shape::Name(TextEncoding::Utf8) => "a name (UTF-8)",
        }
    }
}

/// One value shaped like personal data: its kind and its bytes'
/// `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// What it looks like.
    pub shape: Shape,
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

/// Longest name field (PROTOCOL.md §2).
const MAX_NAME: usize = 64;

/// Every value in `bytes` shaped like personal data, in order of their
/// start (SSNs are judged valid as of `today`). Bytes that are not text at
/// all (a frame's header and CRC) should be given as 0x00.
pub fn find(bytes: &[u8], today: Date) -> Vec<Hit> {
    let mut hits = Vec::new();
    words(bytes, today, &mut hits);
    bar_fields(bytes, &mut hits);
    utf8_names(bytes, &mut hits);
    hits.sort_by_key(|h| (h.start, usize::MAX - h.end));
    hits
}

fn ssn_shaped(w: &[u8]) -> bool {
    w.len() == 18
        && w[..17].iter().all(u8::is_ascii_digit)
        && (w[17].is_ascii_digit() || w[17] == b'X' || w[17] == b'x')
}

/// SSNs, card numbers, identification codes and PANs: runs of ASCII
/// letters and digits.
fn words(bytes: &[u8], today: Date, hits: &mut Vec<Hit>) {
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_alphanumeric() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphanumeric() {
            i += 1;
        }
        let word = &bytes[start..i];
        let mut hit = |shape, s: usize, e: usize| {
            hits.push(Hit {
                shape,
                start: s,
                end: e,
            })
        };
        if ssn_shaped(word) {
            hit(Shape::Ssn, start, i);
        } else if word.len() > 18 {
            let mut k = 0;
            while k + 18 <= word.len() {
                let w = &word[k..k + 18];
                if ssn_shaped(w) && Ssn::parse_on(w, today).is_ok() {
                    hit(Shape::Ssn, start + k, start + k + 18);
                    k += 18;
                } else {
                    k += 1;
                }
            }
        }
        if word.len() == 9
            && word
                .iter()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
            && word.iter().any(u8::is_ascii_digit)
        {
            hit(Shape::CardNo, start, i);
        }
        if word.len() == 32 && word[..6].iter().all(u8::is_ascii_digit) {
            hit(Shape::CardId, start, i);
        }
        // PANs: the runs of digits in the word.
        let mut d = start;
        while d < i {
            if !bytes[d].is_ascii_digit() {
                d += 1;
                continue;
            }
            let ds = d;
            while d < i && bytes[d].is_ascii_digit() {
                d += 1;
            }
            let run = &bytes[ds..d];
            let track = bytes[..ds].ends_with(b"%B") || bytes[..ds].ends_with(b";");
            let pan = if track {
                (12..=19).contains(&run.len())
            } else {
                matches!(run.len(), 16 | 17 | 19) && firmware_protocol::magstripe::luhn_ok(run)
            };
            if pan {
                hit(Shape::Pan, ds, d);
            }
        }
    }
}

/// Whether `c` is a CJK ideograph (the characters of names).
pub fn is_hanzi(c: char) -> bool {
    ('\u{3400}'..='\u{9FFF}').contains(&c) || ('\u{F900}'..='\u{FAFF}').contains(&c)
}

/// Where the `|` of `bytes` are.
pub fn bars(bytes: &[u8]) -> Vec<usize> {
    bytes
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'|')
        .map(|(i, _)| i)
        .collect()
}

/// The length of the UTF-8 sequence a byte starts (1 for ASCII and for a
/// byte that starts none).
pub fn utf8_width(b: u8) -> usize {
    match b {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    }
}

/// Name fields: between two `|`, holding a hanzi in UTF-8 or GBK.
fn bar_fields(bytes: &[u8], hits: &mut Vec<Hit>) {
    for w in bars(bytes).windows(2) {
        let (s, e) = (w[0] + 1, w[1]);
        let field = &bytes[s..e];
        if field.is_empty() || field.len() > MAX_NAME || field.iter().any(|&b| b < 0x20) {
            continue;
        }
        let utf8 = std::str::from_utf8(field).is_ok_and(|t| t.chars().any(is_hanzi));
        let gbk = || {
            let (text, _) = encoding_rs::GBK.decode_without_bom_handling(field);
            text.chars().any(is_hanzi)
        };
        let shape = if utf8 {
            Shape::Name(TextEncoding::Utf8)
        } else if gbk() {
            Shape::Name(TextEncoding::Gbk)
        } else {
            continue;
        };
        hits.push(Hit {
            shape,
            start: s,
            end: e,
        });
    }
}

/// Runs of two or more hanzi in UTF-8 (a middle dot may join them, as in
/// minority names).
fn utf8_names(bytes: &[u8], hits: &mut Vec<Hit>) {
    let char_at = |i: usize| -> Option<(char, usize)> {
        let width = utf8_width(*bytes.get(i)?);
        let c = std::str::from_utf8(bytes.get(i..i + width)?)
            .ok()?
            .chars()
            .next()?;
        Some((c, width))
    };
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        let mut n = 0;
        while let Some((c, w)) = char_at(i).filter(|(c, _)| is_hanzi(*c) || *c == '·') {
            n += usize::from(c != '·');
            i += w;
        }
        if n >= 2 {
            hits.push(Hit {
                shape: Shape::Name(TextEncoding::Utf8),
                start,
                end: i,
            });
        }
        if i == start {
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shapes(text: &[u8]) -> Vec<(Shape, String)> {
        find(text, Date::new(2026, 12, 1).unwrap())
            .into_iter()
            .map(|h| {
                (
                    h.shape,
                    String::from_utf8_lossy(&text[h.start..h.end]).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn finds_every_kind_where_it_stands() {
        let mut rec =
            b"330100|11010519491231002X|A12345678|330100D15600000500A1B2C3D4E5F6A7|".to_vec();
        rec.extend_from_slice(&encoding_rs::GBK.encode("张三").0);
        rec.extend_from_slice(b"|3B6D000000815448|3.00|20200115|20300115|T0001|D01|");
        let found: Vec<Shape> = find(&rec, Date::new(2026, 12, 1).unwrap())
            .iter()
            .map(|h| h.shape)
            .collect();
        assert_eq!(
            found,
            [
                Shape::Ssn,
                Shape::CardNo,
                Shape::CardId,
                Shape::Name(TextEncoding::Gbk)
            ]
        );
        assert_eq!(
            shapes("error 110105194912310021: 欧阳·明华 x".as_bytes()),
            [
                (Shape::Ssn, "110105194912310021".into()),
                (Shape::Name(TextEncoding::Utf8), "欧阳·明华".into())
            ]
        );
        // Inside a longer run only a valid number counts.
        assert_eq!(
            shapes(b"%B6222021234567890128^ZHANG/SAN^301212011010519491231002X000?"),
            [
                (Shape::Pan, "6222021234567890128".into()),
                (Shape::Ssn, "11010519491231002X".into())
            ]
        );
        assert!(
            shapes(b"3012120110105194912310021000 ABCDEFGHI 20200115 T0001 \xd5\xc5\xc8\xfd")
                .is_empty()
        );
    }
}
