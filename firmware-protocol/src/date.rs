//! A minimal proleptic Gregorian calendar date, enough to validate birth,
//! issue and expiry dates without pulling a date crate into firmware.

use core::fmt;

/// A calendar date (year, month 1..=12, day 1..=31), always valid once built.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    year: u16,
    month: u8,
    day: u8,
}

/// Number of days in `month` of `year`, or 0 for an invalid month.
pub const fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        _ => 0,
    }
}

impl Date {
    /// 1970-01-01.
    pub const EPOCH: Date = Date {
        year: 1970,
        month: 1,
        day: 1,
    };

    /// Builds a date, or `None` when it does not exist (e.g. 2023-02-29).
    pub const fn new(year: u16, month: u8, day: u8) -> Option<Date> {
        if year == 0 || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        Some(Date { year, month, day })
    }

    /// Parses 8 ASCII digits `YYYYMMDD`.
    pub fn parse_yyyymmdd(s: &[u8]) -> Option<Date> {
        if s.len() != 8 {
            return None;
        }
        let year = digits(&s[0..4])? as u16;
        let month = digits(&s[4..6])? as u8;
        let day = digits(&s[6..8])? as u8;
        Date::new(year, month, day)
    }

    /// The year.
    pub const fn year(&self) -> u16 {
        self.year
    }
    /// The month, 1..=12.
    pub const fn month(&self) -> u8 {
        self.month
    }
    /// The day of the month, 1..=31.
    pub const fn day(&self) -> u8 {
        self.day
    }

    /// Days since 1970-01-01 (negative before), by Howard Hinnant's algorithm.
    pub const fn days_since_epoch(&self) -> i64 {
        let y = self.year as i64 - if self.month <= 2 { 1 } else { 0 };
        let era = if y >= 0 { y } else { y - 399 } / 400;
        let yoe = y - era * 400;
        let m = self.month as i64;
        let mp = if m > 2 { m - 3 } else { m + 9 };
        let doy = (153 * mp + 2) / 5 + self.day as i64 - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// The date `days` days after 1970-01-01; `None` outside years 1..=9999.
    pub const fn from_days_since_epoch(days: i64) -> Option<Date> {
        let z = days + 719_468;
        let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
        if year < 1 || year > 9999 {
            return None;
        }
        Date::new(year as u16, month as u8, day as u8)
    }

    /// Today's date in China Standard Time (UTC+8), from the system clock.
    #[cfg(feature = "std")]
    pub fn today_cst() -> Date {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let days = (secs + 8 * 3600).div_euclid(86_400);
        // The clock is between 1970 and 9999, so this always yields a date;
        // fall back to the epoch rather than panic if it does not.
        Date::from_days_since_epoch(days).unwrap_or(Date::EPOCH)
    }
}

/// Parses a run of ASCII digits into a number; `None` on any other byte.
pub(crate) fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 9 {
        return None;
    }
    let mut n: u32 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + (b - b'0') as u32;
    }
    Some(n)
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl fmt::Debug for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leap_years() {
        assert!(Date::new(2000, 2, 29).is_some());
        assert!(Date::new(1900, 2, 29).is_none());
        assert!(Date::new(2024, 2, 29).is_some());
        assert!(Date::new(2023, 2, 29).is_none());
        assert!(Date::new(2023, 4, 31).is_none());
        assert!(Date::new(2023, 13, 1).is_none());
    }

    #[test]
    fn epoch_round_trip() {
        for days in -200_000..200_000i64 {
            let d = Date::from_days_since_epoch(days).unwrap();
            assert_eq!(d.days_since_epoch(), days);
        }
        assert_eq!(Date::new(1970, 1, 1).unwrap().days_since_epoch(), 0);
        assert_eq!(Date::new(2000, 3, 1).unwrap().days_since_epoch(), 11_017);
    }

    #[test]
    fn parse() {
        assert_eq!(Date::parse_yyyymmdd(b"19491231"), Date::new(1949, 12, 31));
        assert_eq!(Date::parse_yyyymmdd(b"1949123"), None);
        assert_eq!(Date::parse_yyyymmdd(b"1949-231"), None);
        assert_eq!(Date::parse_yyyymmdd(b"19490230"), None);
    }
}
