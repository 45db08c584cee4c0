//! From a decoded reader item to a [`CardRead`].
//!
//! This is the step "frame → card → SSN" of the data flow: it interprets a
//! frame's command, parses the basic-info record or the magnetic-stripe
//! line with [`firmware_protocol`], decodes the name from the reader's text
//! encoding and yields one owned, validated card read. Anything that does
//! not validate is a [`CardError`]; nothing is guessed.

use encoding_rs::{GBK, UTF_8};
use firmware_protocol::frame::Cmd;
use firmware_protocol::idcard::{Document, IdError, IdText, TEXT_LEN};
use firmware_protocol::magstripe::{self, MagError};
use firmware_protocol::record::{self, RecordError};
use firmware_protocol::{Date, Ssn};
use serde::{Deserialize, Serialize};

use crate::reader::codec::ReaderItem;

/// Text encoding of names sent by a reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TextEncoding {
    /// GBK (what most Chinese text-mode reader modules send).
    #[default]
    Gbk,
    /// UTF-8.
    #[serde(rename = "utf-8", alias = "utf8")]
    Utf8,
}

impl std::fmt::Display for TextEncoding {
    /// As in the configuration and capture headers: `gbk`, `utf-8`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TextEncoding::Gbk => "gbk",
            TextEncoding::Utf8 => "utf-8",
        })
    }
}

impl std::str::FromStr for TextEncoding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "gbk" => Ok(TextEncoding::Gbk),
            "utf-8" | "utf8" => Ok(TextEncoding::Utf8),
            other => Err(format!(
                "unknown encoding '{other}' (expected gbk or utf-8)"
            )),
        }
    }
}

/// How the card identifier reached us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CardSource {
    /// IC chip read (frame `CARD_IC` or an `ssse-text` record).
    Ic,
    /// Magnetic stripe.
    Magstripe,
    /// Typed in by a clerk or patient.
    Manual,
    /// An identity document read by an identity-card SAM module
    /// (居民身份证, 居住证, 永居证).
    #[serde(rename = "id_card")]
    IdCard,
}

impl CardSource {
    /// Lower-case name, as used in JSON and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            CardSource::Ic => "ic",
            CardSource::Magstripe => "magstripe",
            CardSource::Manual => "manual",
            CardSource::IdCard => "id_card",
        }
    }
}

/// One validated card read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardRead {
    /// Where it came from.
    pub source: CardSource,
    /// The SSN, when the card carries it.
    pub ssn: Option<Ssn>,
    /// Social security card number (9 characters), IC reads.
    pub card_no: Option<String>,
    /// Bank PAN, magnetic-stripe reads.
    pub pan: Option<String>,
    /// Holder name as printed on the card.
    pub name: Option<String>,
    /// Issuing region code.
    pub region: Option<String>,
    /// Issue date.
    pub issued: Option<Date>,
    /// Expiry date (for a stripe: the last day of the YYMM month).
    pub expires: Option<Date>,
    /// Frame sequence number, frame mode only.
    pub seq: Option<u8>,
    /// The identity document, for [`CardSource::IdCard`] reads.
    pub document: Option<Document>,
}

/// Everything a reader can tell the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReaderEvent {
    /// A card was read.
    Card(CardRead),
    /// The card was removed.
    Removed,
    /// The reader failed to read a card.
    ReadError {
        /// The return code: negative for the reader interface's codes
        /// (`firmware_protocol::retcode`), positive for a v1 `READ_ERROR`
        /// code byte.
        code: i32,
        /// The reader's own message (may be empty).
        text: String,
    },
    /// Firmware information.
    Status(String),
}

/// Why a reader item did not yield an event.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CardError {
    /// A third-generation card the reader could not authenticate: its PSAM
    /// lacks the key. Not a bad card.
    #[error("社保卡未能认证：读卡器的 PSAM 卡缺少密钥，请联系信息科配置 PSAM 密钥或加密机认证 / the card could not be authenticated: the reader's PSAM lacks the key; the reader needs the PSAM key or the HSM (加密机) flow")]
    NotAuthenticated,
    /// The basic-info record is invalid.
    #[error("invalid card record: {0}")]
    Record(RecordError),
    /// The magnetic-stripe line is invalid.
    #[error("invalid magnetic stripe: {0}")]
    Magstripe(#[from] MagError),
    /// The name is not valid in the configured encoding.
    #[error("name is not valid {0:?} text")]
    Encoding(TextEncoding),
    /// A frame with a command the host does not accept from a reader.
    #[error("unexpected command 0x{0:02X} from reader")]
    UnexpectedCommand(u8),
    /// A frame payload that does not fit its command.
    #[error("malformed {0} payload")]
    Payload(&'static str),
    /// A text line was longer than the limit and dropped.
    #[error("line of {0} bytes exceeds the limit, dropped")]
    Oversized(usize),
    /// An identity card's text block is refused.
    #[error("identity card: {0}")]
    IdCard(IdError),
    /// An identity-card module's reply where a card reader's item belongs.
    #[error("identity-card module reply outside the idcard mode")]
    IdReply,
}

impl From<RecordError> for CardError {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::NotAuthenticated => CardError::NotAuthenticated,
            e => CardError::Record(e),
        }
    }
}

fn decode_text(bytes: &[u8], enc: TextEncoding) -> Result<String, CardError> {
    let encoding = match enc {
        TextEncoding::Gbk => GBK,
        TextEncoding::Utf8 => UTF_8,
    };
    encoding
        .decode_without_bom_handling_and_without_replacement(bytes)
        .map(|s| s.trim().to_string())
        .ok_or(CardError::Encoding(enc))
}

/// Builds a [`CardRead`] from a basic-info record.
pub fn from_record(
    line: &[u8],
    enc: TextEncoding,
    today: Date,
    seq: Option<u8>,
) -> Result<CardRead, CardError> {
    let r = record::parse(line, today)?;
    Ok(CardRead {
        source: CardSource::Ic,
        ssn: Some(r.ssn),
        card_no: Some(r.card_no.to_string()),
        pan: None,
        name: Some(decode_text(r.name, enc)?),
        region: Some(r.region.to_string()),
        issued: Some(r.issued),
        expires: Some(r.expires),
        seq,
        document: None,
    })
}

/// Builds a [`CardRead`] from an identity card's 256-byte text block.
pub fn from_id_text(text: &[u8], today: Date) -> Result<CardRead, CardError> {
    let block: &[u8; TEXT_LEN] = text
        .try_into()
        .map_err(|_| CardError::Payload("identity card text"))?;
    let t = IdText::parse(block, today).map_err(CardError::IdCard)?;
    let name = t.name.map(|f| {
        f.chars()
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect::<String>()
            .trim()
            .to_string()
    });
    Ok(CardRead {
        source: CardSource::IdCard,
        ssn: Some(t.ssn),
        card_no: None,
        pan: None,
        name,
        region: None,
        issued: None,
        expires: None,
        seq: None,
        document: Some(t.document),
    })
}

/// Builds a [`CardRead`] from a magnetic-stripe line.
pub fn from_swipe(line: &[u8], today: Date, seq: Option<u8>) -> Result<CardRead, CardError> {
    let m = magstripe::parse(line, today)?;
    let (yy, mm) = m.expiry_yymm;
    let year = 2000 + yy as u16;
    let expires = Date::new(year, mm, firmware_protocol::date::days_in_month(year, mm));
    Ok(CardRead {
        source: CardSource::Magstripe,
        ssn: m.ssn,
        card_no: None,
        pan: Some(m.pan.to_string()),
        name: m.name.map(str::to_string),
        region: m.ssn.map(|s| s.region().to_string()),
        issued: None,
        expires,
        seq,
        document: None,
    })
}

/// Interprets one reader item.
pub fn decode(item: &ReaderItem, enc: TextEncoding, today: Date) -> Result<ReaderEvent, CardError> {
    match item {
        ReaderItem::Record(line) => match firmware_protocol::retcode::parse_line(line) {
            // iReadCardBas failed: the line is its negative return code.
            Some(code) => Ok(ReaderEvent::ReadError {
                code,
                text: String::new(),
            }),
            None => from_record(line, enc, today, None).map(ReaderEvent::Card),
        },
        ReaderItem::Swipe(line) => from_swipe(line, today, None).map(ReaderEvent::Card),
        ReaderItem::Oversized(n) => Err(CardError::Oversized(*n)),
        ReaderItem::IdRead(text) => from_id_text(text, today).map(ReaderEvent::Card),
        ReaderItem::IdReply { .. } | ReaderItem::IdCorrupt(_) => Err(CardError::IdReply),
        ReaderItem::Frame { seq, cmd, payload } => match Cmd::from_u8(*cmd) {
            Some(Cmd::CardIc) => {
                from_record(payload, enc, today, Some(*seq)).map(ReaderEvent::Card)
            }
            Some(Cmd::CardMag) => {
                // The payload may carry a trailing CR LF like a text line.
                let line = payload.strip_suffix(b"\r\n").unwrap_or(payload);
                from_swipe(line, today, Some(*seq)).map(ReaderEvent::Card)
            }
            Some(Cmd::CardRemoved) => Ok(ReaderEvent::Removed),
            Some(Cmd::ReadError) => {
                let (code, text) = firmware_protocol::retcode::parse_read_error(payload)
                    .ok_or(CardError::Payload("READ_ERROR"))?;
                Ok(ReaderEvent::ReadError {
                    code,
                    text: String::from_utf8_lossy(text).into_owned(),
                })
            }
            Some(Cmd::Status) => Ok(ReaderEvent::Status(
                String::from_utf8_lossy(payload).into_owned(),
            )),
            _ => Err(CardError::UnexpectedCommand(*cmd)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    const REC: &str = "330100|11010519491231002X|A12345678|330100D15600000500A1B2C3D4E5F6A7|张三|3B6D000000815448|3.00|20200115|20300115|T0001|D01|";

    fn today() -> Date {
        Date::new(2026, 11, 25).unwrap()
    }

    #[test]
    fn gbk_and_utf8_names() {
        let (gbk, _, _) = GBK.encode(REC);
        let r = from_record(&gbk, TextEncoding::Gbk, today(), None).unwrap();
        assert_eq!(r.name.as_deref(), Some("张三"));
        let r = from_record(REC.as_bytes(), TextEncoding::Utf8, today(), None).unwrap();
        assert_eq!(r.name.as_deref(), Some("张三"));
        assert_eq!(r.card_no.as_deref(), Some("A12345678"));
        // GBK bytes are not valid UTF-8: rejected, not mangled.
        assert_eq!(
            from_record(&gbk, TextEncoding::Utf8, today(), None),
            Err(CardError::Encoding(TextEncoding::Utf8))
        );
    }

    #[test]
    fn frame_commands() {
        let f = |cmd: u8, p: &'static [u8]| ReaderItem::Frame {
            seq: 1,
            cmd,
            payload: Bytes::from_static(p),
        };
        assert_eq!(
            decode(&f(0x12, b""), TextEncoding::Gbk, today()),
            Ok(ReaderEvent::Removed)
        );
        assert_eq!(
            decode(&f(0x13, b"\x05card mute"), TextEncoding::Gbk, today()),
            Ok(ReaderEvent::ReadError {
                code: 5,
                text: "card mute".into()
            })
        );
        assert_eq!(
            decode(&f(0x13, b""), TextEncoding::Gbk, today()),
            Err(CardError::Payload("READ_ERROR"))
        );
        assert_eq!(
            decode(&f(0x77, b""), TextEncoding::Gbk, today()),
            Err(CardError::UnexpectedCommand(0x77))
        );
        let ev = decode(
            &f(0x11, b";6222021234567890128=30121201000?\r\n"),
            TextEncoding::Gbk,
            today(),
        )
        .unwrap();
        match ev {
            ReaderEvent::Card(c) => {
                assert_eq!(c.pan.as_deref(), Some("6222021234567890128"));
                assert_eq!(c.expires, Date::new(2030, 12, 31));
                assert_eq!(c.seq, Some(1));
            }
            other => panic!("{other:?}"),
        }
    }
}
