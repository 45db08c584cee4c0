//! ISO 7811/7813 magnetic-stripe track data as sent by serial swipe readers.
//!
//! A swipe is one line (ending CR LF on the wire, stripped before parsing)
//! holding track 1 and/or track 2, each with its sentinels:
//!
//! ```text
//! track 1: %B<PAN>^<NAME>^<YYMM><service code, 3 digits><discretionary data>?
//! track 2: ;<PAN>=<YYMM><service code, 3 digits><discretionary data>?
//! ```
//!
//! A third `;…?` group (track 3) is ignored. The PAN must pass the Luhn
//! check, and when both tracks are present their PAN and expiry must agree,
//! so a misread stripe is rejected rather than guessed. The SSN, when
//! present, is the first 18 characters of track 1's discretionary data; it
//! is taken only when those characters form a valid [`Ssn`], otherwise the
//! read carries the PAN alone and is resolved through the card registry.

use core::fmt;

use crate::date::Date;
use crate::ssn::Ssn;

/// Longest line accepted (track 1 is at most 79 characters, track 2 40, track 3 107).
pub const MAX_LINE: usize = 256;

/// A parsed swipe borrowing from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MagRecord<'a> {
    /// Primary account number (the bank number on the card).
    pub pan: &'a str,
    /// Track 1 name field (`SURNAME/GIVEN`, trailing spaces removed), if track 1 was read.
    pub name: Option<&'a str>,
    /// Expiry year (two digits) and month.
    pub expiry_yymm: (u8, u8),
    /// Three-digit service code.
    pub service_code: &'a str,
    /// The SSN from track 1's discretionary data, when present and valid.
    pub ssn: Option<Ssn>,
    /// Whether track 1 was present.
    pub track1: bool,
    /// Whether track 2 was present.
    pub track2: bool,
}

/// Why a swipe line was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MagError {
    /// Longer than [`MAX_LINE`].
    TooLong(usize),
    /// Neither a track 1 nor a track 2 group was found.
    NoTrack,
    /// A track is malformed.
    Track {
        /// 1 or 2.
        track: u8,
        /// What is wrong.
        reason: &'static str,
    },
    /// The PAN fails the Luhn check.
    Luhn,
    /// Track 1 and track 2 disagree.
    Mismatch,
}

impl fmt::Display for MagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MagError::TooLong(n) => write!(f, "swipe line of {n} bytes exceeds {MAX_LINE}"),
            MagError::NoTrack => write!(f, "no track 1 or track 2 data"),
            MagError::Track { track, reason } => write!(f, "track {track}: {reason}"),
            MagError::Luhn => write!(f, "PAN fails the Luhn check"),
            MagError::Mismatch => write!(f, "track 1 and track 2 disagree"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for MagError {}

/// Luhn (mod 10) check of a digit string.
pub fn luhn_ok(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, &b) in digits.iter().rev().enumerate() {
        if !b.is_ascii_digit() {
            return false;
        }
        let mut d = (b - b'0') as u32;
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

struct Track<'a> {
    pan: &'a str,
    yymm: (u8, u8),
    service: &'a str,
    discretionary: &'a [u8],
}

fn err(track: u8, reason: &'static str) -> MagError {
    MagError::Track { track, reason }
}

fn pan_and_rest(track: u8, s: &[u8], sep: u8) -> Result<(&str, &[u8]), MagError> {
    let at = s
        .iter()
        .position(|&b| b == sep)
        .ok_or(err(track, "missing field separator"))?;
    let pan = &s[..at];
    if !(12..=19).contains(&pan.len()) || !pan.iter().all(u8::is_ascii_digit) {
        return Err(err(track, "PAN is not 12 to 19 digits"));
    }
    if !luhn_ok(pan) {
        return Err(MagError::Luhn);
    }
    let pan = core::str::from_utf8(pan).map_err(|_| err(track, "PAN is not ASCII"))?;
    Ok((pan, &s[at + 1..]))
}

/// Expiry (YY, MM), service code and the discretionary data after them.
type ExpiryService<'a> = ((u8, u8), &'a str, &'a [u8]);

fn expiry_and_service(track: u8, s: &[u8]) -> Result<ExpiryService<'_>, MagError> {
    if s.len() < 7 || !s[..7].iter().all(u8::is_ascii_digit) {
        return Err(err(track, "expiry and service code must be 7 digits"));
    }
    let yy = (s[0] - b'0') * 10 + (s[1] - b'0');
    let mm = (s[2] - b'0') * 10 + (s[3] - b'0');
    if !(1..=12).contains(&mm) {
        return Err(err(track, "expiry month out of range"));
    }
    let service = core::str::from_utf8(&s[4..7]).map_err(|_| err(track, "bad service code"))?;
    Ok(((yy, mm), service, &s[7..]))
}

fn track1(s: &[u8]) -> Result<(Track<'_>, &str), MagError> {
    // s is the content between '%' and '?'.
    if s.first() != Some(&b'B') {
        return Err(err(1, "format code is not 'B'"));
    }
    if !s.iter().all(|&c| (0x20..=0x5F).contains(&c)) {
        return Err(err(1, "character outside the track 1 set"));
    }
    let (pan, rest) = pan_and_rest(1, &s[1..], b'^')?;
    let at = rest
        .iter()
        .position(|&b| b == b'^')
        .ok_or(err(1, "missing second field separator"))?;
    let name = core::str::from_utf8(&rest[..at])
        .map_err(|_| err(1, "bad name"))?
        .trim_end();
    if name.len() < 2 || name.len() > 26 {
        return Err(err(1, "name must be 2 to 26 characters"));
    }
    let (yymm, service, discretionary) = expiry_and_service(1, &rest[at + 1..])?;
    Ok((
        Track {
            pan,
            yymm,
            service,
            discretionary,
        },
        name,
    ))
}

fn track2(s: &[u8]) -> Result<Track<'_>, MagError> {
    if !s.iter().all(|&c| c.is_ascii_digit() || c == b'=') {
        return Err(err(2, "character outside the track 2 set"));
    }
    let (pan, rest) = pan_and_rest(2, s, b'=')?;
    let (yymm, service, discretionary) = expiry_and_service(2, rest)?;
    Ok(Track {
        pan,
        yymm,
        service,
        discretionary,
    })
}

/// Returns the content of the first group opened by `start` and closed by `?`.
fn group(line: &[u8], start: u8) -> Option<Result<&[u8], ()>> {
    let open = line.iter().position(|&b| b == start)?;
    let body = &line[open + 1..];
    Some(match body.iter().position(|&b| b == b'?') {
        Some(close) => Ok(&body[..close]),
        None => Err(()),
    })
}

/// Parses one swipe line. `today` bounds a discretionary-data SSN's birth date.
pub fn parse(line: &[u8], today: Date) -> Result<MagRecord<'_>, MagError> {
    if line.len() > MAX_LINE {
        return Err(MagError::TooLong(line.len()));
    }
    let t1 = match group(line, b'%') {
        Some(Ok(s)) => Some(track1(s)?),
        Some(Err(())) => return Err(err(1, "missing end sentinel")),
        None => None,
    };
    // Track 2 starts after track 1's end sentinel, if any.
    let after1 = match line.iter().position(|&b| b == b'%') {
        Some(open) => {
            let close = line[open..]
                .iter()
                .position(|&b| b == b'?')
                .map_or(line.len(), |c| open + c + 1);
            &line[close..]
        }
        None => line,
    };
    let t2 = match group(after1, b';') {
        Some(Ok(s)) => Some(track2(s)?),
        Some(Err(())) => return Err(err(2, "missing end sentinel")),
        None => None,
    };
    let (base, name, ssn) = match (&t1, &t2) {
        (Some((a, name)), Some(b)) => {
            if a.pan != b.pan || a.yymm != b.yymm {
                return Err(MagError::Mismatch);
            }
            (a, Some(*name), discretionary_ssn(a.discretionary, today))
        }
        (Some((a, name)), None) => (a, Some(*name), discretionary_ssn(a.discretionary, today)),
        (None, Some(b)) => (b, None, None),
        (None, None) => return Err(MagError::NoTrack),
    };
    Ok(MagRecord {
        pan: base.pan,
        name,
        expiry_yymm: base.yymm,
        service_code: base.service,
        ssn,
        track1: t1.is_some(),
        track2: t2.is_some(),
    })
}

fn discretionary_ssn(d: &[u8], today: Date) -> Option<Ssn> {
    d.get(..18).and_then(|s| Ssn::parse_on(s, today).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TODAY: Date = match Date::new(2026, 11, 25) {
        Some(d) => d,
        None => Date::EPOCH,
    };

    #[test]
    fn both_tracks_with_ssn() {
        // PROTOCOL.md vector 6.
        let line = b"%B6222021234567890128^ZHANG/SAN^301212011010519491231002X000?;6222021234567890128=30121201000?";
        let r = parse(line, TODAY).unwrap();
        assert_eq!(r.pan, "6222021234567890128");
        assert_eq!(r.name, Some("ZHANG/SAN"));
        assert_eq!(r.expiry_yymm, (30, 12));
        assert_eq!(r.service_code, "120");
        assert_eq!(r.ssn.unwrap().expose(), "11010519491231002X");
        assert!(r.track1 && r.track2);
    }

    #[test]
    fn track2_only_has_pan() {
        let r = parse(b";6222021234567890128=30121201000?", TODAY).unwrap();
        assert_eq!(r.pan, "6222021234567890128");
        assert_eq!(r.ssn, None);
        assert_eq!(r.name, None);
    }

    #[test]
    fn rejects() {
        assert_eq!(
            parse(b";6222021234567890127=30121201000?", TODAY),
            Err(MagError::Luhn)
        );
        assert_eq!(parse(b"hello", TODAY), Err(MagError::NoTrack));
        assert_eq!(
            parse(b";6222021234567890128=3012120", TODAY),
            Err(err(2, "missing end sentinel"))
        );
        assert_eq!(
            parse(
                b"%B6222021234567890128^ZHANG/SAN^3012120?;6222021234567890128=31121201000?",
                TODAY
            ),
            Err(MagError::Mismatch)
        );
    }
}
