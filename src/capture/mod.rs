//! Capture files: a reader's raw traffic, both directions, with monotonic
//! timestamps (format: PROTOCOL.md §6). cardlinkd writes them
//! (`daemon::capture`); this module reads and writes them for the tools:
//! [`redact`] makes one safe to share; `tools::replay` (feature `sim`)
//! plays one back into a pseudo-terminal or through an in-process daemon
//! against a `.chk` file.

pub mod redact;
pub mod shapes;

use std::time::Duration;

use crate::reader::card::TextEncoding;
use crate::reader::codec::Mode;

/// First line of every capture file.
pub const MAGIC: &str = "# cardlink capture 1";

/// The largest timestamp a capture may hold, in seconds (about 31 years
/// of a monotonic clock): a larger one, a negative one or one that is not
/// a finite number is refused as a format error of its line, so that no
/// tool meets a time it cannot add to a clock.
pub const MAX_SECONDS: f64 = 1e9;

/// Which way bytes went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the reader to the host (`<`).
    FromReader,
    /// From the host to the reader (`>`).
    ToReader,
}

/// Why a capture file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Not a capture file, or a line that is not one.
    #[error("{file}:{line}: {reason}")]
    Format {
        /// The file.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// Reading or writing failed.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: String,
        /// The error.
        source: std::io::Error,
    },
}

/// The header line's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The reader's name.
    pub reader: String,
    /// Its mode.
    pub mode: Mode,
    /// Baud rate.
    pub baud: u32,
    /// Text encoding of names.
    pub encoding: TextEncoding,
    /// The header line as written (`# reader=… mode=…`), kept verbatim.
    pub line: String,
}

/// One chunk of traffic, as one read or write passed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Since the capture began (monotonic clock).
    pub at: Duration,
    /// The timestamp as written, kept verbatim.
    pub at_text: String,
    /// Which way.
    pub dir: Direction,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// A whole capture file. Rotated files hold one capture each; a file that
/// was appended to holds several, each starting with its own header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureFile {
    /// The first header.
    pub header: Header,
    /// Every line in order: headers and comments verbatim, chunks parsed.
    pub lines: Vec<Line>,
}

/// A line of a capture file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A comment or header line, verbatim (without the newline).
    Comment(String),
    /// Traffic.
    Chunk(Chunk),
    /// `# SECONDS unplugged: WHY`: the port closed here (verbatim line).
    Unplug {
        /// Since the capture began.
        at: Duration,
        /// The line as written.
        text: String,
    },
}

impl CaptureFile {
    /// Reads `path`.
    pub fn read(path: &std::path::Path) -> Result<CaptureFile, CaptureError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| CaptureError::Io {
            file: file.clone(),
            source,
        })?;
        CaptureFile::parse(&text, &file)
    }

    /// Parses the text of a capture file; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<CaptureFile, CaptureError> {
        let err = |line: usize, reason: String| CaptureError::Format {
            file: file.to_string(),
            line,
            reason,
        };
        let mut lines = Vec::new();
        let mut header = None;
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            if n == 1 && line != MAGIC {
                return Err(err(
                    1,
                    format!("not a capture file: the first line must be '{MAGIC}'"),
                ));
            }
            if let Some(at) = parse_unplug(line) {
                let at = at.map_err(|r| err(n, r))?;
                lines.push(Line::Unplug {
                    at,
                    text: line.to_string(),
                });
                continue;
            }
            if line.starts_with('#') {
                if header.is_none() && line.starts_with("# reader=") {
                    header = Some(parse_header(line).map_err(|r| err(n, r))?);
                }
                lines.push(Line::Comment(line.to_string()));
                continue;
            }
            if line.trim().is_empty() {
                continue;
            }
            lines.push(Line::Chunk(parse_chunk(line).map_err(|r| err(n, r))?));
        }
        let header = header.ok_or_else(|| err(2, "no '# reader=… mode=…' header line".into()))?;
        Ok(CaptureFile { header, lines })
    }

    /// The chunks in order.
    pub fn chunks(&self) -> impl Iterator<Item = &Chunk> {
        self.lines.iter().filter_map(|l| match l {
            Line::Chunk(c) => Some(c),
            _ => None,
        })
    }

    /// The file's text.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for line in &self.lines {
            match line {
                Line::Comment(c) | Line::Unplug { text: c, .. } => out.push_str(c),
                Line::Chunk(c) => {
                    out.push_str(&c.at_text);
                    out.push_str(match c.dir {
                        Direction::FromReader => " < ",
                        Direction::ToReader => " > ",
                    });
                    out.push_str(&hex(&c.bytes));
                }
            }
            out.push('\n');
        }
        out
    }
}

/// One chunk line: `SECONDS DIRECTION HEX`.
pub fn chunk_line(at: Duration, dir: Direction, bytes: &[u8]) -> String {
    format!(
        "{:.6} {} {}\n",
        at.as_secs_f64(),
        match dir {
            Direction::FromReader => '<',
            Direction::ToReader => '>',
        },
        hex(bytes)
    )
}

/// The line noting that the port closed.
pub fn unplug_line(at: Duration, why: &str) -> String {
    let why: String = why.chars().filter(|c| !c.is_control()).collect();
    format!("# {:.6} unplugged: {why}\n", at.as_secs_f64())
}

/// `# SECONDS unplugged: WHY`: `None` for any other line (a comment), the
/// time or why it is not one for an unplug line.
fn parse_unplug(line: &str) -> Option<Result<Duration, String>> {
    let rest = line.strip_prefix("# ")?;
    let (secs, what) = rest.split_once(' ')?;
    if !what.starts_with("unplugged") || secs.parse::<f64>().is_err() {
        return None;
    }
    Some(parse_seconds(secs))
}

/// A timestamp: a number of seconds from 0 to [`MAX_SECONDS`].
fn parse_seconds(text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .filter(|s| (0.0..=MAX_SECONDS).contains(s))
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| format!("'{text}' is not a number of seconds from 0 to {MAX_SECONDS:.0}"))
}

fn parse_header(line: &str) -> Result<Header, String> {
    let mut reader = None;
    let mut mode = None;
    let mut baud = 0;
    let mut encoding = TextEncoding::Gbk;
    for kv in line.trim_start_matches('#').split_whitespace() {
        let Some((k, v)) = kv.split_once('=') else {
            continue;
        };
        match k {
            "reader" => reader = Some(v.to_string()),
            "mode" => mode = Some(v.parse::<Mode>()?),
            "baud" => {
                baud = v
                    .parse()
                    .map_err(|_| format!("baud '{v}' is not a number"))?
            }
            "encoding" => encoding = v.parse::<TextEncoding>()?,
            _ => {}
        }
    }
    Ok(Header {
        reader: reader.ok_or("the header names no reader")?,
        mode: mode.ok_or("the header names no mode")?,
        baud,
        encoding,
        line: line.to_string(),
    })
}

fn parse_chunk(line: &str) -> Result<Chunk, String> {
    let mut parts = line.split_whitespace();
    let (Some(at_text), Some(dir), hex_text, None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!(
            "expected 'SECONDS < HEX' or 'SECONDS > HEX', got '{line}'"
        ));
    };
    let at = parse_seconds(at_text)?;
    let dir = match dir {
        "<" => Direction::FromReader,
        ">" => Direction::ToReader,
        other => return Err(format!("direction '{other}' is neither '<' nor '>'")),
    };
    let bytes = hex::decode(hex_text.unwrap_or("")).map_err(|_| "the bytes are not hex")?;
    Ok(Chunk {
        at,
        at_text: at_text.to_string(),
        dir,
        bytes,
    })
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_writes_back_verbatim() {
        let text = "# cardlink capture 1\n# reader=k1 mode=frame baud=115200 parity=none encoding=gbk version=0.1.0 started=2026-11-26T15:04:05Z\n0.000000 > 02000000317de103\n0.012000 < 0200\n0.012400 < 00000612c60903\n";
        let f = CaptureFile::parse(text, "t").unwrap();
        assert_eq!(f.header.mode, Mode::Frame);
        assert_eq!(f.header.encoding, TextEncoding::Gbk);
        assert_eq!(f.chunks().count(), 3);
        assert_eq!(f.to_text(), text);
        let c: Vec<_> = f.chunks().collect();
        assert_eq!(c[1].at, Duration::from_millis(12));
        assert_eq!(c[1].bytes, vec![2, 0]);
        let text = format!(
            "{text}{}",
            unplug_line(Duration::from_millis(1500), "end of file")
        );
        let f = CaptureFile::parse(&text, "t").unwrap();
        assert!(
            matches!(f.lines.last(), Some(Line::Unplug { at, .. }) if *at == Duration::from_millis(1500))
        );
        assert_eq!(f.to_text(), text);
    }

    #[test]
    fn bad_lines_are_reported_with_their_number() {
        let e = CaptureFile::parse("hello\n", "x.cap").unwrap_err();
        assert!(
            e.to_string().starts_with("x.cap:1: not a capture file"),
            "{e}"
        );
        let e = CaptureFile::parse(
            "# cardlink capture 1\n# reader=a mode=frame baud=1 encoding=gbk\n0.1 < 0g\n",
            "x.cap",
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "x.cap:3: the bytes are not hex");
        let e = CaptureFile::parse(
            "# cardlink capture 1\n# reader=a mode=tape baud=1\n",
            "x.cap",
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown reader mode 'tape'"), "{e}");
    }

    #[test]
    fn absurd_timestamps_are_format_errors_of_their_line() {
        let head = "# cardlink capture 1\n# reader=a mode=frame baud=1 encoding=gbk\n";
        for at in [
            "1e20",
            "1e19",
            "1000000000.5",
            "inf",
            "-inf",
            "NaN",
            "-1",
            "1e400",
        ] {
            for line in [
                format!("{at} < 02"),
                format!("# {at} unplugged: end of file"),
            ] {
                let e = CaptureFile::parse(&format!("{head}{line}\n"), "x.cap").unwrap_err();
                assert!(
                    e.to_string()
                        .starts_with(&format!("x.cap:3: '{at}' is not a number of seconds")),
                    "{e}"
                );
            }
        }
        let f = CaptureFile::parse(&format!("{head}1000000000 < 02\n"), "x.cap").unwrap();
        assert_eq!(
            f.chunks().next().unwrap().at,
            Duration::from_secs(1_000_000_000)
        );
        // A comment that only looks like an unplug note stays a comment.
        let f = CaptureFile::parse(&format!("{head}# soon unplugged\n"), "x.cap").unwrap();
        assert!(matches!(f.lines.last(), Some(Line::Comment(_))));
    }
}
