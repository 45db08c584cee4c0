//! Readers driven through the MOHRSS standard interface library
//! (`long iReadCardBas(int iType, char *pOutInfo)`): what the daemon needs
//! to know about them, without any I/O.
//!
//! - [`CardType`]: the `card_type` setting and the `iType` it passes.
//! - The helper's line protocol ([`Answer`], [`POLL`]): the library is
//!   called in a separate process (`cardlink-libhelper`, supervised by
//!   `daemon::library`), which answers each poll with the return code and
//!   the raw record bytes in hex.
//! - [`poll_line`]: one answer as the `ssse-text` line a text-mode reader
//!   would have sent (the record, or the return code), so the record is
//!   decoded by the same code ([`crate::reader::card::decode`]) and a
//!   capture of a library reader is a capture of lines.
//! - [`Insertions`]: one read per card insertion. The library answers the
//!   same record on every poll while the card stays; only a change counts,
//!   and the same card counts again only after a "no card" (-2) between.

use serde::{Deserialize, Serialize};

/// The `iType` of `iReadCardBas`: which card interface it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CardType {
    /// 1: the contact interface.
    Contact,
    /// 2: the contactless interface.
    Contactless,
    /// 3: automatic, contact first.
    #[default]
    AutoContactFirst,
    /// 4: automatic, contactless first.
    AutoContactlessFirst,
}

impl CardType {
    /// The `iType` argument: 1 to 4.
    pub fn itype(self) -> i32 {
        match self {
            CardType::Contact => 1,
            CardType::Contactless => 2,
            CardType::AutoContactFirst => 3,
            CardType::AutoContactlessFirst => 4,
        }
    }
}

/// `iReadCardBas`'s "no card in the reader": idle, not an error.
pub const NO_CARD: i64 = -2;

/// What the daemon writes to the helper for one call (a line).
pub const POLL: &str = "POLL";

/// Longest answer line of the helper: the hex of a record of at most
/// [`MAX_RECORD`] bytes, a return code and a little text.
pub const MAX_ANSWER: usize = 2 * MAX_RECORD + 64;

/// The most record bytes the helper passes on (the record parser refuses
/// anything over 512 anyway).
pub const MAX_RECORD: usize = 1024;

/// Smallest and largest `poll_ms`.
pub const POLL_MS: std::ops::RangeInclusive<u64> = 10..=60_000;
/// Smallest and largest `call_timeout_ms`.
pub const CALL_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 100..=60_000;

/// One line from the helper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `READY`: the library is loaded and `iReadCardBas` found.
    Ready,
    /// `FAIL text`: the helper cannot go on (the library does not load,
    /// the symbol is missing); it exits after this line.
    Failed(String),
    /// `RC HEX`: one call's return code and the bytes it wrote into
    /// `pOutInfo` (up to the first NUL; `-` for none).
    Result {
        /// The return code.
        rc: i64,
        /// The output buffer's bytes.
        out: Vec<u8>,
    },
}

impl Answer {
    /// The line for this answer (without its `\n`).
    pub fn to_line(&self) -> String {
        match self {
            Answer::Ready => "READY".into(),
            Answer::Failed(text) => format!("FAIL {}", text.replace(['\r', '\n'], " ")),
            Answer::Result { rc, out } if out.is_empty() => format!("{rc} -"),
            Answer::Result { rc, out } => format!("{rc} {}", hex::encode(out)),
        }
    }

    /// Parses one line; `None` for anything else (the helper is then
    /// broken and is restarted).
    pub fn parse(line: &str) -> Option<Answer> {
        let line = line.trim_end_matches(['\r', '\n']);
        if line == "READY" {
            return Some(Answer::Ready);
        }
        if let Some(text) = line.strip_prefix("FAIL ") {
            return Some(Answer::Failed(text.to_string()));
        }
        let (rc, out) = line.split_once(' ')?;
        let rc = rc.parse::<i64>().ok()?;
        let out = match out {
            "-" => Vec::new(),
            hex_text if hex_text.len() <= 2 * MAX_RECORD => hex::decode(hex_text).ok()?,
            _ => return None,
        };
        Some(Answer::Result { rc, out })
    }
}

/// One call's result as the `ssse-text` line a text-mode reader would
/// send: the record when `rc` is 0 (trailing blanks and line ends taken
/// off; a record cut at a line end, which no record contains), otherwise
/// the return code in decimal.
pub fn poll_line(rc: i64, out: &[u8]) -> Vec<u8> {
    if rc != 0 {
        return rc.to_string().into_bytes();
    }
    let end = out
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(out.len());
    let mut line = out[..end].to_vec();
    while line.last().is_some_and(|b| b.is_ascii_whitespace()) {
        line.pop();
    }
    line
}

/// What one poll means once repeats are taken out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The same answer as the last poll: nothing new.
    Same,
    /// "No card" after something else; `removed` when a card was read
    /// before (it was taken out).
    Idle {
        /// A card (a record) was in the reader.
        removed: bool,
    },
    /// A new answer: a record or an error code, as an `ssse-text` line.
    New(Vec<u8>),
}

/// One read per insertion: remembers the last answer.
#[derive(Debug, Default)]
pub struct Insertions {
    last: Option<(i64, Vec<u8>)>,
}

impl Insertions {
    /// Nothing seen yet (a card already in the reader counts once).
    pub fn new() -> Insertions {
        Insertions::default()
    }

    /// Forgets the last answer (the helper was restarted: a card still in
    /// the reader is read again once).
    pub fn reset(&mut self) {
        self.last = None;
    }

    /// Classifies the answer of one poll.
    pub fn next(&mut self, rc: i64, out: &[u8]) -> Change {
        let line = poll_line(rc, out);
        if self
            .last
            .as_ref()
            .is_some_and(|(r, l)| *r == rc && *l == line)
        {
            return Change::Same;
        }
        let before = self.last.replace((rc, line.clone()));
        if rc == NO_CARD {
            let removed = before.is_some_and(|(r, _)| r == 0);
            return Change::Idle { removed };
        }
        Change::New(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_round_trip_and_junk_is_refused() {
        for a in [
            Answer::Ready,
            Answer::Failed("cannot open".into()),
            Answer::Result {
                rc: -2201,
                out: Vec::new(),
            },
            Answer::Result {
                rc: 0,
                out: b"330100|\xd5\xc5|".to_vec(),
            },
        ] {
            assert_eq!(Answer::parse(&a.to_line()), Some(a));
        }
        for junk in ["", "0", "x -", "0 zz", "0 abc", "READY?"] {
            assert_eq!(Answer::parse(junk), None, "{junk}");
        }
    }

    #[test]
    fn one_read_per_insertion() {
        let mut i = Insertions::new();
        let rec = b"330100|rec|";
        assert_eq!(i.next(-2, b""), Change::Idle { removed: false });
        assert_eq!(i.next(-2, b""), Change::Same);
        assert_eq!(i.next(0, rec), Change::New(rec.to_vec()));
        assert_eq!(i.next(0, rec), Change::Same);
        assert_eq!(i.next(-2, b""), Change::Idle { removed: true });
        assert_eq!(i.next(0, rec), Change::New(rec.to_vec()));
        assert_eq!(i.next(-2201, b""), Change::New(b"-2201".to_vec()));
        assert_eq!(i.next(-2201, b""), Change::Same);
        assert_eq!(i.next(-2, b""), Change::Idle { removed: false });
        i.reset();
        assert_eq!(i.next(0, b"rec\r\n\0"), Change::New(b"rec".to_vec()));
    }

    #[test]
    fn configuration_of_a_library_reader() {
        use crate::config::Config;
        let c = Config::parse(
            "[[reader]]\nname = \"w2\"\nmode = \"library\"\nlibrary = \"/opt/v/lib.so\"\n\
             card_type = \"contactless\"\nenv = { A = \"1\" }\n",
            "t",
        )
        .unwrap();
        let r = &c.readers[0];
        assert_eq!(r.card_type.itype(), 2);
        assert_eq!((r.poll_ms, r.call_timeout_ms), (300, 5000));
        assert_eq!(r.shown_path(), "/opt/v/lib.so");
        assert_eq!(CardType::default().itype(), 3);
        // The effective configuration reads back the same.
        assert_eq!(Config::parse(&c.to_toml(), "t").unwrap(), c);
        let bad = |text: &str, want: &str| {
            let e = Config::parse(text, "t").unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        };
        let lib = "[[reader]]\nname = \"w2\"\nmode = \"library\"\n";
        bad(lib, "needs library");
        bad(&format!("{lib}library = \"rel.so\"\n"), "absolute");
        bad(
            &format!("{lib}library = \"/l.so\"\npoll_ms = 0\n"),
            "poll_ms",
        );
        bad(
            &format!("{lib}library = \"/l.so\"\ncall_timeout_ms = 10\n"),
            "call_timeout_ms",
        );
        bad(
            &format!("{lib}library = \"/l.so\"\ncard_type = \"magnetic\"\n"),
            "magnetic",
        );
        bad(
            "[[reader]]\nname = \"w1\"\npath = \"/dev/x\"\nlibrary = \"/l.so\"\n",
            "library is for mode",
        );
        bad("[[reader]]\nname = \"w1\"\n", "path is empty");
    }
}
