//! The SSN validator against an independent ISO 7064 MOD 11-2 implementation.
//!
//! The oracle follows ISO 7064 literally (pure system, recursive form:
//! p = ((p + digit) * 2) mod 11, check = (12 - p) mod 11, 10 written `X`),
//! sharing no code or tables with the crate.

use firmware_protocol::{Date, Ssn, SsnError};

fn oracle_check(first17: &[u8]) -> u8 {
    let mut p: u32 = 0;
    for &b in first17 {
        p = ((p + (b - b'0') as u32) * 2) % 11;
    }
    match (12 - p % 11) % 11 {
        10 => b'X',
        d => b'0' + d as u8,
    }
}

/// Small deterministic generator (SplitMix64), so the test needs no RNG crate.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn agrees_with_oracle_on_100k_numbers() {
    let today = Date::new(2026, 11, 25).unwrap();
    let provinces = [11, 12, 13, 31, 33, 44, 51, 65, 81, 82];
    let mut rng = Rng(0x5eed);
    let (mut valid, mut invalid) = (0, 0);
    for _ in 0..100_000 {
        let born = Date::from_days_since_epoch(rng.below(36_000) as i64 - 20_000).unwrap();
        let mut s = format!(
            "{:02}{:04}{:04}{:02}{:02}{:03}",
            provinces[rng.below(provinces.len() as u64) as usize],
            rng.below(10_000),
            born.year(),
            born.month(),
            born.day(),
            rng.below(1000)
        )
        .into_bytes();
        let right = oracle_check(&s);
        // Half the time append a random check character instead.
        let chosen = if rng.below(2) == 0 {
            right
        } else {
            b"0123456789X"[rng.below(11) as usize]
        };
        s.push(chosen);
        let got = Ssn::parse_on(&s, today);
        if chosen == right {
            valid += 1;
            assert_eq!(
                got.map(|x| x.expose().to_string()),
                Ok(String::from_utf8(s).unwrap())
            );
        } else {
            invalid += 1;
            assert_eq!(
                got,
                Err(SsnError::CheckDigit {
                    expected: right as char,
                    found: chosen as char
                })
            );
        }
    }
    assert!(valid > 50_000 && invalid > 40_000);
}

#[test]
fn published_invalid_examples() {
    let today = Date::new(2026, 11, 25).unwrap();
    // Well-known example numbers with a wrong final character.
    for s in [
        "110105194912310021",
        "440524188001010013",
        "11010519491231002Y",
    ] {
        assert!(Ssn::parse_on(s.as_bytes(), today).is_err(), "{s}");
    }
}
