//! The basic-info record of standard social-security card reader modules.
//!
//! One record is eleven fields, each followed by `|`:
//!
//! ```text
//! region(6) | ssn(18) | card_no(9) | card_id(32) | name | atr(hex) | spec_version |
//! issue_date(YYYYMMDD) | expiry_date(YYYYMMDD) | terminal_no | terminal_device_no |
//! ```
//!
//! In `ssse-text` mode each record is a line ending CR LF; in frame mode it is
//! the payload of `CARD_IC` (without line ending). The name is left as raw
//! bytes because text-mode readers often send it in GBK, whose trailing bytes
//! may even be `0x7C` (`|`). That is why the record is split from both ends:
//! four fixed fields from the left, six from the right, and the name is
//! whatever lies between.

use core::fmt;

use crate::date::Date;
use crate::ssn::{Ssn, SsnError, PROVINCES};

/// Number of fields in a record.
pub const FIELDS: usize = 11;
/// Longest record accepted (bytes, without line ending).
pub const MAX_RECORD: usize = 512;
/// Longest name accepted (bytes, in the reader's encoding).
pub const MAX_NAME: usize = 64;

/// A parsed basic-info record borrowing from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SsseRecord<'a> {
    /// Issuing region code, 6 digits.
    pub region: &'a str,
    /// The validated social security number.
    pub ssn: Ssn,
    /// Card number, 9 characters (upper case letters and digits).
    pub card_no: &'a str,
    /// Card identification code, 32 characters.
    pub card_id: &'a str,
    /// Holder name, raw bytes in the reader's text encoding.
    pub name: &'a [u8],
    /// Card reset information (ATR), hex.
    pub atr: &'a str,
    /// Card specification version, e.g. `3.00`.
    pub spec_version: &'a str,
    /// Issue date.
    pub issued: Date,
    /// Expiry date.
    pub expires: Date,
    /// Terminal number (may be empty).
    pub terminal_no: &'a str,
    /// Terminal device number (may be empty).
    pub terminal_device_no: &'a str,
}

/// Why a record was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordError {
    /// Longer than [`MAX_RECORD`].
    TooLong(usize),
    /// Not eleven `|`-terminated fields.
    FieldCount(usize),
    /// A field is malformed.
    Field {
        /// Field name as in the table above.
        field: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// The SSN field is not a valid number.
    Ssn(SsnError),
    /// A third-generation card read by a reader whose PSAM lacks the key:
    /// the record has region, card identification code, version and dates,
    /// but the SSN, card number and name are empty. Not a bad card.
    NotAuthenticated,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::TooLong(n) => write!(f, "record of {n} bytes exceeds {MAX_RECORD}"),
            RecordError::FieldCount(n) => {
                write!(f, "record has {n} fields, expected {FIELDS}")
            }
            RecordError::Field { field, reason } => write!(f, "field {field}: {reason}"),
            RecordError::Ssn(e) => write!(f, "field ssn: {e}"),
            RecordError::NotAuthenticated => write!(
                f,
                "the card could not be authenticated: SSN, card number and name are empty"
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for RecordError {}

fn field_err(field: &'static str, reason: &'static str) -> RecordError {
    RecordError::Field { field, reason }
}

fn ascii<'a>(
    field: &'static str,
    b: &'a [u8],
    ok: impl Fn(u8) -> bool,
    len: core::ops::RangeInclusive<usize>,
) -> Result<&'a str, RecordError> {
    if !len.contains(&b.len()) {
        return Err(field_err(field, "wrong length"));
    }
    if !b.iter().all(|&c| ok(c)) {
        return Err(field_err(field, "invalid character"));
    }
    core::str::from_utf8(b).map_err(|_| field_err(field, "invalid character"))
}

fn printable(c: u8) -> bool {
    c.is_ascii_graphic() || c == b' '
}

/// Parses one record (no line ending). `today` bounds the SSN birth date.
pub fn parse(line: &[u8], today: Date) -> Result<SsseRecord<'_>, RecordError> {
    if line.len() > MAX_RECORD {
        return Err(RecordError::TooLong(line.len()));
    }
    // The last field is terminated by '|'; tolerate a missing final bar.
    let body = line.strip_suffix(b"|").unwrap_or(line);
    let count = || RecordError::FieldCount(body.split(|&b| b == b'|').count());
    let mut left = body.splitn(5, |&b| b == b'|');
    let mut head: [&[u8]; 4] = [&[]; 4];
    for slot in head.iter_mut() {
        *slot = left.next().ok_or_else(count)?;
    }
    let rest = left.next().ok_or_else(count)?;
    let mut right = rest.rsplitn(7, |&b| b == b'|');
    let mut tail: [&[u8]; 6] = [&[]; 6];
    for slot in tail.iter_mut().rev() {
        *slot = right.next().ok_or_else(count)?;
    }
    let name = right.next().ok_or_else(count)?;

    let region = ascii("region", head[0], |c| c.is_ascii_digit(), 6..=6)?;
    let province = (head[0][0] - b'0') * 10 + (head[0][1] - b'0');
    if !PROVINCES.contains(&province) {
        return Err(field_err("region", "unknown province code"));
    }
    let card_id = ascii("card_id", head[3], |c| c.is_ascii_alphanumeric(), 32..=32)?;
    // The card identification code begins with the issuing region's code.
    if card_id.as_bytes()[..6] != *region.as_bytes() {
        return Err(field_err("card_id", "does not begin with the region code"));
    }
    // A third-generation card whose protected fields the reader's PSAM
    // could not read (iReadCardBas returns them empty).
    if head[1].is_empty() && head[2].is_empty() && name.is_empty() {
        return Err(RecordError::NotAuthenticated);
    }
    let ssn = Ssn::parse_on(head[1], today).map_err(RecordError::Ssn)?;
    let card_no = ascii(
        "card_no",
        head[2],
        |c| c.is_ascii_digit() || c.is_ascii_uppercase(),
        9..=9,
    )?;
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(field_err("name", "empty or too long"));
    }
    if name.iter().any(|&c| c < 0x20 || c == 0x7F) {
        return Err(field_err("name", "control character"));
    }
    let atr = ascii("atr", tail[0], |c| c.is_ascii_hexdigit(), 2..=66)?;
    if atr.len() % 2 != 0 {
        return Err(field_err("atr", "odd number of hex digits"));
    }
    let spec_version = ascii("spec_version", tail[1], printable, 1..=16)?;
    let issued = Date::parse_yyyymmdd(tail[2]).ok_or(field_err("issue_date", "not a date"))?;
    let expires = Date::parse_yyyymmdd(tail[3]).ok_or(field_err("expiry_date", "not a date"))?;
    if expires < issued {
        return Err(field_err("expiry_date", "before the issue date"));
    }
    let terminal_no = ascii("terminal_no", tail[4], printable, 0..=32)?;
    let terminal_device_no = ascii("terminal_device_no", tail[5], printable, 0..=32)?;
    Ok(SsseRecord {
        region,
        ssn,
        card_no,
        card_id,
        name,
        atr,
        spec_version,
        issued,
        expires,
        terminal_no,
        terminal_device_no,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TODAY: Date = match Date::new(2026, 11, 25) {
        Some(d) => d,
        None => Date::EPOCH,
    };

    // PROTOCOL.md vector 4 (name in UTF-8: 张三).
    const REC: &[u8] = "330100|11010519491231002X|A12345678|330100D15600000500A1B2C3D4E5F6A7|张三|3B6D000000815448|3.00|20200115|20300115|T0001|D01|".as_bytes();

    #[test]
    fn parses_the_vector() {
        let r = parse(REC, TODAY).unwrap();
        assert_eq!(r.region, "330100");
        assert_eq!(r.ssn.expose(), "11010519491231002X");
        assert_eq!(r.card_no, "A12345678");
        assert_eq!(r.name, "张三".as_bytes());
        assert_eq!(r.issued, Date::new(2020, 1, 15).unwrap());
        assert_eq!(r.expires, Date::new(2030, 1, 15).unwrap());
        assert_eq!(r.terminal_device_no, "D01");
    }

    #[test]
    fn gbk_name_with_bar_trail_byte() {
        // GBK 0xD6 0x7C is a valid double-byte character whose second byte is '|'.
        let mut v = [0u8; 200];
        let parts: [&[u8]; 3] = [
            b"330100|11010519491231002X|A12345678|330100D15600000500A1B2C3D4E5F6A7|",
            &[0xD5, 0xC5, 0xD6, 0x7C],
            b"|3B6D000000815448|3.00|20200115|20300115|T0001|D01|",
        ];
        let mut n = 0;
        for p in parts {
            v[n..n + p.len()].copy_from_slice(p);
            n += p.len();
        }
        let r = parse(&v[..n], TODAY).unwrap();
        assert_eq!(r.name, &[0xD5, 0xC5, 0xD6, 0x7C]);
    }

    #[test]
    fn rejects() {
        assert_eq!(parse(b"330100|x|", TODAY), Err(RecordError::FieldCount(2)));
        let bad_ssn = "330100|110105194912310021|A12345678|330100D15600000500A1B2C3D4E5F6A7|张三|3B6D|3.00|20200115|20300115|T0001|D01|";
        assert!(matches!(
            parse(bad_ssn.as_bytes(), TODAY),
            Err(RecordError::Ssn(SsnError::CheckDigit { .. }))
        ));
        let bad_date = "330100|11010519491231002X|A12345678|330100D15600000500A1B2C3D4E5F6A7|张三|3B6D|3.00|20200231|20300115|T0001|D01|";
        assert_eq!(
            parse(bad_date.as_bytes(), TODAY),
            Err(field_err("issue_date", "not a date"))
        );
    }
}
