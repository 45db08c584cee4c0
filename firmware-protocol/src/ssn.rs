//! The national social security number: the 18-character citizen identity
//! number of GB 11643-1999.
//!
//! Layout: 6-digit administrative region code, 8-digit birth date
//! `YYYYMMDD`, 3-digit sequence number (odd for men, even for women) and one
//! check character computed with ISO 7064 MOD 11-2 (`0`-`9` or `X`).
//!
//! [`Ssn`] can only hold a valid number. It is personal data, so both
//! `Display` and `Debug` print it masked (`330102********123X`); the full
//! number needs the explicit [`Ssn::expose`].

use core::fmt;

use crate::date::{digits, Date};

/// ISO 7064 MOD 11-2 weights for the first 17 characters (2^(18-i) mod 11).
const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
/// Check character for each value of the weighted sum mod 11.
const CHECK: [u8; 11] = *b"10X98765432";

/// Earliest birth year accepted. GB 11643 itself uses an 1880 example.
pub const MIN_BIRTH_YEAR: u16 = 1800;

/// Province-level codes (first two digits of the region code) of GB/T 2260,
/// plus 71 (Taiwan), 81/82 (Hong Kong, Macao) and 83 (residence permits of
/// Taiwan residents).
pub const PROVINCES: &[u8] = &[
    11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 50, 51, 52,
    53, 54, 61, 62, 63, 64, 65, 71, 81, 82, 83,
];

/// Whether a valid number is a 2023 foreign permanent-residence card's
/// (first digit 9) rather than a citizen's.
pub fn is_foreign_permanent(ssn: &Ssn) -> bool {
    ssn.expose().starts_with('9')
}

/// Why a string is not a valid social security number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SsnError {
    /// Not 18 characters (or 15 for the legacy form).
    Length {
        /// The number of bytes found.
        found: usize,
    },
    /// A character that is not allowed at this position (a digit everywhere,
    /// `X`/`x` also in the last position). `position` is 1-based.
    Character {
        /// 1-based position of the offending byte.
        position: usize,
        /// The offending byte.
        byte: u8,
    },
    /// The first two digits are not a province code.
    Province {
        /// The two-digit code found.
        code: u8,
    },
    /// The birth date does not exist (e.g. 19990230) or is before 1800.
    BirthDate,
    /// The birth date is after today.
    FutureBirthDate,
    /// The check character does not match the first 17 characters.
    CheckDigit {
        /// The check character the first 17 characters require.
        expected: char,
        /// The check character found.
        found: char,
    },
}

impl fmt::Display for SsnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SsnError::Length { found } => {
                write!(f, "wrong length: {found} characters, expected 18")
            }
            SsnError::Character { position, byte } => {
                if byte.is_ascii_graphic() {
                    write!(
                        f,
                        "invalid character '{}' at position {position}",
                        byte as char
                    )
                } else {
                    write!(f, "invalid byte 0x{byte:02X} at position {position}")
                }
            }
            SsnError::Province { code } => write!(f, "unknown province code {code:02}"),
            SsnError::BirthDate => write!(f, "birth date does not exist"),
            SsnError::FutureBirthDate => write!(f, "birth date is in the future"),
            SsnError::CheckDigit { expected, found } => {
                write!(f, "check character is '{found}', expected '{expected}'")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for SsnError {}

/// A validated 18-character social security number (upper-case `X`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ssn([u8; 18]);

/// Computes the MOD 11-2 check character for 17 leading digits.
/// Returns `None` if any of them is not an ASCII digit.
pub fn check_char(first17: &[u8]) -> Option<u8> {
    if first17.len() != 17 {
        return None;
    }
    let mut sum = 0u32;
    for (b, w) in first17.iter().zip(WEIGHTS) {
        if !b.is_ascii_digit() {
            return None;
        }
        sum += (b - b'0') as u32 * w;
    }
    Some(CHECK[(sum % 11) as usize])
}

impl Ssn {
    /// Parses and validates an 18-character number; `today` bounds the birth date.
    pub fn parse_on(s: &[u8], today: Date) -> Result<Ssn, SsnError> {
        if s.len() != 18 {
            return Err(SsnError::Length { found: s.len() });
        }
        let mut out = [0u8; 18];
        for (i, &b) in s.iter().enumerate() {
            out[i] = match b {
                b'0'..=b'9' => b,
                b'X' | b'x' if i == 17 => b'X',
                _ => {
                    return Err(SsnError::Character {
                        position: i + 1,
                        byte: b,
                    })
                }
            };
        }
        validate_body(&out[..17], today)?;
        let expected = CHECK[weighted(&out[..17])];
        if expected != out[17] {
            return Err(SsnError::CheckDigit {
                expected: expected as char,
                found: out[17] as char,
            });
        }
        Ok(Ssn(out))
    }

    /// Parses with today's date in China Standard Time.
    #[cfg(feature = "std")]
    pub fn parse(s: &str) -> Result<Ssn, SsnError> {
        Ssn::parse_on(s.trim().as_bytes(), Date::today_cst())
    }

    /// Converts a legacy 15-digit number (`RRRRRR YYMMDD SSS`, 20th century)
    /// to its 18-character form by inserting `19` and appending the check character.
    pub fn from_legacy15_on(s: &[u8], today: Date) -> Result<Ssn, SsnError> {
        if s.len() != 15 {
            return Err(SsnError::Length { found: s.len() });
        }
        if let Some(i) = s.iter().position(|b| !b.is_ascii_digit()) {
            return Err(SsnError::Character {
                position: i + 1,
                byte: s[i],
            });
        }
        let mut out = [0u8; 18];
        out[..6].copy_from_slice(&s[..6]);
        out[6] = b'1';
        out[7] = b'9';
        out[8..17].copy_from_slice(&s[6..15]);
        validate_body(&out[..17], today)?;
        out[17] = CHECK[weighted(&out[..17])];
        Ok(Ssn(out))
    }

    /// [`Ssn::from_legacy15_on`] with today's date in China Standard Time.
    #[cfg(feature = "std")]
    pub fn from_legacy15(s: &str) -> Result<Ssn, SsnError> {
        Ssn::from_legacy15_on(s.trim().as_bytes(), Date::today_cst())
    }

    /// The full, unmasked number. Only for storage and for authorised clients.
    pub fn expose(&self) -> &str {
        // Every byte is an ASCII digit or 'X' by construction.
        core::str::from_utf8(&self.0).unwrap_or("")
    }

    /// The six-digit region code.
    pub fn region(&self) -> &str {
        &self.expose()[..6]
    }

    /// The birth date encoded in the number.
    pub fn birth_date(&self) -> Date {
        // Validated at construction, so the fallback is never taken.
        birth(&self.0[..17]).unwrap_or(Date::EPOCH)
    }

    /// Sex from the sequence number parity: `true` for male (odd).
    pub fn is_male(&self) -> bool {
        (self.0[16] - b'0') % 2 == 1
    }

    /// The masked form `330102********123X` (first 6 and last 4 characters).
    pub fn masked(&self) -> Masked {
        Masked(*self)
    }
}

fn weighted(first17: &[u8]) -> usize {
    let sum: u32 = first17
        .iter()
        .zip(WEIGHTS)
        .map(|(b, w)| (b - b'0') as u32 * w)
        .sum();
    (sum % 11) as usize
}

fn birth(first17: &[u8]) -> Option<Date> {
    Date::parse_yyyymmdd(&first17[6..14])
}

fn validate_body(first17: &[u8], today: Date) -> Result<(), SsnError> {
    let province = digits(&first17[..2]).unwrap_or(0) as u8;
    // A first digit 9 is the 2023 外国人永久居留身份证's number: 9, the
    // province where it was applied for and a 3-digit nationality code
    // instead of a region, then birth date, sequence and the same MOD 11-2
    // check (国家移民管理局, 新版外国人永久居留身份证机读信息规则 2023,
    // PROTOCOL.md §4).
    if first17[0] != b'9' && !PROVINCES.contains(&province) {
        return Err(SsnError::Province { code: province });
    }
    let born = birth(first17).ok_or(SsnError::BirthDate)?;
    if born.year() < MIN_BIRTH_YEAR {
        return Err(SsnError::BirthDate);
    }
    if born > today {
        return Err(SsnError::FutureBirthDate);
    }
    Ok(())
}

/// Display adapter printing an [`Ssn`] masked.
#[derive(Clone, Copy)]
pub struct Masked(Ssn);

impl fmt::Display for Masked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.expose();
        write!(f, "{}********{}", &s[..6], &s[14..])
    }
}

impl fmt::Display for Ssn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.masked(), f)
    }
}

impl fmt::Debug for Ssn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ssn({})", self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::format;

    fn today() -> Date {
        Date::new(2026, 11, 25).unwrap()
    }

    #[test]
    fn published_valid_examples() {
        // Both examples printed in GB 11643-1999.
        for s in ["11010519491231002X", "440524188001010014"] {
            let ssn = Ssn::parse_on(s.as_bytes(), today()).unwrap();
            assert_eq!(ssn.expose(), s);
        }
        let lower = Ssn::parse_on(b"11010519491231002x", today()).unwrap();
        assert_eq!(lower.expose(), "11010519491231002X");
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let t = today();
        assert_eq!(
            Ssn::parse_on(b"1101051949123100", t),
            Err(SsnError::Length { found: 16 })
        );
        assert_eq!(
            Ssn::parse_on(b"11010519491231002Y", t),
            Err(SsnError::Character {
                position: 18,
                byte: b'Y'
            })
        );
        assert_eq!(
            Ssn::parse_on(b"1101051949123X0021", t),
            Err(SsnError::Character {
                position: 14,
                byte: b'X'
            })
        );
        assert_eq!(
            Ssn::parse_on(b"110105194912310021", t),
            Err(SsnError::CheckDigit {
                expected: 'X',
                found: '1'
            })
        );
        assert_eq!(
            Ssn::parse_on(b"100105194912310021", t),
            Err(SsnError::Province { code: 10 })
        );
        assert_eq!(
            Ssn::parse_on(b"110105194902300021", t),
            Err(SsnError::BirthDate)
        );
        assert_eq!(
            Ssn::parse_on(b"110105203001010021", t),
            Err(SsnError::FutureBirthDate)
        );
        let msg = format!("{}", Ssn::parse_on(b"110105194912310021", t).unwrap_err());
        assert_eq!(msg, "check character is '1', expected 'X'");
    }

    #[test]
    fn masked_everywhere() {
        let ssn = Ssn::parse_on(b"11010519491231002X", today()).unwrap();
        assert_eq!(format!("{ssn}"), "110105********002X");
        assert_eq!(format!("{ssn:?}"), "Ssn(110105********002X)");
        assert!(!format!("{ssn:?}").contains("19491231"));
    }

    #[test]
    fn legacy_15_digit() {
        // 15-digit form of 11010519491231002X is 110105491231002.
        let ssn = Ssn::from_legacy15_on(b"110105491231002", today()).unwrap();
        assert_eq!(ssn.expose(), "11010519491231002X");
        assert_eq!(
            Ssn::from_legacy15_on(b"11010549123100", today()),
            Err(SsnError::Length { found: 14 })
        );
    }

    #[test]
    fn foreign_permanent_2023_numbers_are_valid() {
        // 9, province 11, nationality 156-style code 840, born 1980-01-01,
        // sequence 001, MOD 11-2 check.
        let body = b"91184019800101001";
        let c = check_char(body).unwrap();
        let mut n = [0u8; 18];
        n[..17].copy_from_slice(body);
        n[17] = c;
        let ssn = Ssn::parse_on(&n, today()).unwrap();
        assert!(is_foreign_permanent(&ssn));
        assert_eq!(ssn.birth_date(), Date::new(1980, 1, 1).unwrap());
        // The check character still counts, and so does the birth date.
        n[17] = if c == b'0' { b'1' } else { b'0' };
        assert!(matches!(
            Ssn::parse_on(&n, today()),
            Err(SsnError::CheckDigit { .. })
        ));
        assert_eq!(
            Ssn::parse_on(b"911840198002300010", today()),
            Err(SsnError::BirthDate)
        );
    }

    #[test]
    fn fields() {
        let ssn = Ssn::parse_on(b"11010519491231002X", today()).unwrap();
        assert_eq!(ssn.region(), "110105");
        assert_eq!(ssn.birth_date(), Date::new(1949, 12, 31).unwrap());
        assert!(!ssn.is_male());
    }
}
