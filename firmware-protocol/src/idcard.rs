//! The serial protocol of identity-card reader SAM modules (身份证阅读机具,
//! GA/T 467 业务终端接口) and the text block of the cards they read.
//!
//! ```text
//! host → module: AA AA AA 96 69 | LEN u16 BE | CMD | PARA | DATA | CHK
//! module → host: AA AA AA 96 69 | LEN u16 BE | SW1 | SW2 | SW3 | DATA | CHK
//! ```
//!
//! `LEN` counts everything after itself, the checksum included; `CHK` is the
//! XOR of every byte from `LEN` to the last data byte. The host is the
//! master: it sends one command and reads one reply. The scanner
//! ([`scan`]) finds replies in a byte stream without allocating and reports
//! a candidate that fails its checks ([`Scan::Corrupt`]) so that the host
//! can ask again at once instead of waiting for a timeout.
//!
//! The read reply ([`ReadReply`]) carries a 256-byte text block (GB/T 490
//! field widths, UTF-16LE) and a 1024-byte photo. The photo is encrypted WLT
//! data: this module only checks its length and never exposes its bytes.
//! [`IdText::parse`] validates the text block of the four documents the
//! modules read (居民身份证, `J` 港澳台居民居住证, `I` 2017 and `Y` 2023
//! 外国人永久居留身份证); see PROTOCOL.md §7 for the layouts and sources.

use core::fmt;

use crate::date::Date;
use crate::ssn::{Ssn, SsnError};

/// The five bytes that start every frame in both directions.
pub const PREAMBLE: [u8; 5] = [0xAA, 0xAA, 0xAA, 0x96, 0x69];
/// Bytes of text in a read reply.
pub const TEXT_LEN: usize = 256;
/// Bytes of photo (WLT) in a read reply.
pub const PHOTO_LEN: usize = 1024;
/// Data of a successful read reply: two lengths, text, photo.
pub const READ_DATA_LEN: usize = 4 + TEXT_LEN + PHOTO_LEN;
/// Largest `LEN` accepted in a reply: SW1..SW3, the read data, CHK (the
/// reply to `30 01`; cardlink never asks for fingerprints, `30 10`).
pub const MAX_LEN: usize = 3 + READ_DATA_LEN + 1;
/// Smallest `LEN` of a reply: SW1..SW3 and CHK.
pub const MIN_LEN: usize = 4;
/// Largest reply on the wire (1295 bytes).
pub const MAX_REPLY: usize = PREAMBLE.len() + 2 + MAX_LEN;
/// Bytes of a command without data on the wire.
pub const COMMAND_LEN: usize = PREAMBLE.len() + 2 + 3;

/// The commands cardlink sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// `11 FF`: SAM status (自检).
    SamStatus,
    /// `12 FF`: the SAM's management information (its id, 16 bytes).
    SamId,
    /// `20 01`: find a card (寻找证/卡).
    Find,
    /// `20 02`: select the card found (选取证/卡).
    Select,
    /// `30 01`: read the text and the photo (读固定信息).
    Read,
}

impl Command {
    /// `(CMD, PARA)`.
    pub const fn code(self) -> (u8, u8) {
        match self {
            Command::SamStatus => (0x11, 0xFF),
            Command::SamId => (0x12, 0xFF),
            Command::Find => (0x20, 0x01),
            Command::Select => (0x20, 0x02),
            Command::Read => (0x30, 0x01),
        }
    }

    /// The command from its two bytes.
    pub const fn from_code(cmd: u8, para: u8) -> Option<Command> {
        Some(match (cmd, para) {
            (0x11, 0xFF) => Command::SamStatus,
            (0x12, 0xFF) => Command::SamId,
            (0x20, 0x01) => Command::Find,
            (0x20, 0x02) => Command::Select,
            (0x30, 0x01) => Command::Read,
            _ => return None,
        })
    }

    /// The command's 10 bytes on the wire.
    pub fn encode(self) -> [u8; COMMAND_LEN] {
        let (cmd, para) = self.code();
        let mut out = [0u8; COMMAND_LEN];
        out[..5].copy_from_slice(&PREAMBLE);
        out[5..7].copy_from_slice(&3u16.to_be_bytes());
        out[7] = cmd;
        out[8] = para;
        out[9] = xor(&out[5..9]);
        out
    }
}

/// XOR of `bytes` (the frame checksum).
pub fn xor(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0, |a, b| a ^ b)
}

/// Error from [`encode_reply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// More data than a reply may carry.
    DataTooLong(usize),
    /// The output buffer is too small.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::DataTooLong(n) => write!(f, "{n} data bytes exceed a reply"),
            EncodeError::BufferTooSmall { needed } => {
                write!(f, "output buffer too small, {needed} bytes needed")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for EncodeError {}

/// Writes a module reply (what a module or a simulator sends) into `out`.
pub fn encode_reply(sw: [u8; 3], data: &[u8], out: &mut [u8]) -> Result<usize, EncodeError> {
    let len = 3 + data.len() + 1;
    if len > MAX_LEN {
        return Err(EncodeError::DataTooLong(data.len()));
    }
    let total = PREAMBLE.len() + 2 + len;
    if out.len() < total {
        return Err(EncodeError::BufferTooSmall { needed: total });
    }
    out[..5].copy_from_slice(&PREAMBLE);
    out[5..7].copy_from_slice(&(len as u16).to_be_bytes());
    out[7..10].copy_from_slice(&sw);
    out[10..10 + data.len()].copy_from_slice(data);
    out[total - 1] = xor(&out[5..total - 1]);
    Ok(total)
}

/// [`encode_reply`] into a new vector.
#[cfg(feature = "alloc")]
pub fn encode_reply_vec(sw: [u8; 3], data: &[u8]) -> Result<alloc::vec::Vec<u8>, EncodeError> {
    let mut v = alloc::vec![0u8; PREAMBLE.len() + 2 + 3 + data.len() + 1];
    let n = encode_reply(sw, data, &mut v)?;
    v.truncate(n);
    Ok(v)
}

/// A reply borrowing its data from the input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply<'a> {
    /// SW1 (0x00 from every module seen).
    pub sw1: u8,
    /// SW2 (0x00 from every module seen).
    pub sw2: u8,
    /// SW3: the result ([`Sw3`]).
    pub sw3: u8,
    /// The data after SW3.
    pub data: &'a [u8],
}

/// Why a candidate frame was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    /// `LEN` below 4 or above [`MAX_LEN`].
    Length,
    /// The XOR checksum does not match.
    Checksum,
}

/// Result of [`scan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan<'a> {
    /// A valid reply; drop `consumed` bytes (noise before it included).
    Reply {
        /// The reply.
        reply: Reply<'a>,
        /// Noise bytes before it.
        skipped: usize,
        /// Bytes to drop from the buffer.
        consumed: usize,
    },
    /// A preamble whose frame failed a check; drop `consumed` bytes (up to
    /// and including its first byte) and scan again.
    Corrupt {
        /// What failed.
        why: Corruption,
        /// Bytes to drop.
        consumed: usize,
    },
    /// No complete frame yet: drop `discard` leading bytes, keep the rest.
    NeedMore {
        /// Leading bytes that can never start a frame.
        discard: usize,
    },
}

/// Looks for the first reply in `buf`. Never panics, never allocates.
///
/// A candidate starts at the preamble. Its `LEN` must be in
/// `MIN_LEN..=MAX_LEN` and its checksum must match; otherwise it is
/// reported as [`Scan::Corrupt`] and the scan resumes one byte after its
/// start. A candidate whose bytes have not all arrived is kept.
pub fn scan(buf: &[u8]) -> Scan<'_> {
    if let Some(i) = memchr::memmem::find(buf, &PREAMBLE[..]) {
        if buf.len() < i + 7 {
            return Scan::NeedMore { discard: i };
        }
        let len = u16::from_be_bytes([buf[i + 5], buf[i + 6]]) as usize;
        if !(MIN_LEN..=MAX_LEN).contains(&len) {
            return Scan::Corrupt {
                why: Corruption::Length,
                consumed: i + 1,
            };
        }
        let end = i + 7 + len;
        if end > buf.len() {
            return Scan::NeedMore { discard: i };
        }
        if xor(&buf[i + 5..end - 1]) != buf[end - 1] {
            return Scan::Corrupt {
                why: Corruption::Checksum,
                consumed: i + 1,
            };
        }
        return Scan::Reply {
            reply: Reply {
                sw1: buf[i + 7],
                sw2: buf[i + 8],
                sw3: buf[i + 9],
                data: &buf[i + 10..end - 1],
            },
            skipped: i,
            consumed: end,
        };
    }
    // Keep a tail that may be the start of a preamble.
    let keep = (1..PREAMBLE.len())
        .rev()
        .find(|&k| buf.len() >= k && buf[buf.len() - k..] == PREAMBLE[..k])
        .unwrap_or(0);
    Scan::NeedMore {
        discard: buf.len() - keep,
    }
}

/// The SW3 result codes, with the meanings of the module documentation
/// (PROTOCOL.md §7.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sw3 {
    /// `90` 操作成功.
    Success,
    /// `9F` 寻找证/卡成功.
    Found,
    /// `80` 寻找证/卡未成功.
    NotFound,
    /// `81` 选取证/卡未成功.
    SelectFailed,
    /// `10` 接收业务终端数据的校验和错.
    Checksum,
    /// `11` 接收业务终端数据的长度错.
    Length,
    /// `21` 接收业务终端的命令错误.
    Command,
    /// `23` 越权操作.
    NotAuthorised,
    /// `24` 无法识别的错误.
    Unrecognised,
    /// `31` 证/卡认证 SAM 失败.
    CardAuthSam,
    /// `32` SAM 认证证/卡失败.
    SamAuthCard,
    /// `33` 信息验证错误.
    DataCheck,
    /// `40` 无法识别的证/卡类型.
    CardType,
    /// `41` 读证/卡操作失败.
    ReadFailed,
    /// `47` 取随机数失败.
    Random,
    /// `60` SAM 自检失败，不能接收命令.
    SamSelfTest,
    /// `66` SAM 没经过授权，无法使用.
    SamNotAuthorised,
    /// `91` 证/卡中此项无内容.
    NoContent,
}

impl Sw3 {
    /// Every code, for tables and tests.
    pub const ALL: [Sw3; 18] = [
        Sw3::Success,
        Sw3::Found,
        Sw3::NotFound,
        Sw3::SelectFailed,
        Sw3::Checksum,
        Sw3::Length,
        Sw3::Command,
        Sw3::NotAuthorised,
        Sw3::Unrecognised,
        Sw3::CardAuthSam,
        Sw3::SamAuthCard,
        Sw3::DataCheck,
        Sw3::CardType,
        Sw3::ReadFailed,
        Sw3::Random,
        Sw3::SamSelfTest,
        Sw3::SamNotAuthorised,
        Sw3::NoContent,
    ];

    /// The byte.
    pub const fn code(self) -> u8 {
        match self {
            Sw3::Success => 0x90,
            Sw3::Found => 0x9F,
            Sw3::NotFound => 0x80,
            Sw3::SelectFailed => 0x81,
            Sw3::Checksum => 0x10,
            Sw3::Length => 0x11,
            Sw3::Command => 0x21,
            Sw3::NotAuthorised => 0x23,
            Sw3::Unrecognised => 0x24,
            Sw3::CardAuthSam => 0x31,
            Sw3::SamAuthCard => 0x32,
            Sw3::DataCheck => 0x33,
            Sw3::CardType => 0x40,
            Sw3::ReadFailed => 0x41,
            Sw3::Random => 0x47,
            Sw3::SamSelfTest => 0x60,
            Sw3::SamNotAuthorised => 0x66,
            Sw3::NoContent => 0x91,
        }
    }

    /// The code of a byte, when it is one.
    pub fn from_code(b: u8) -> Option<Sw3> {
        Sw3::ALL.iter().copied().find(|s| s.code() == b)
    }

    /// Chinese meaning.
    pub const fn zh(self) -> &'static str {
        match self {
            Sw3::Success => "操作成功",
            Sw3::Found => "寻找证/卡成功",
            Sw3::NotFound => "寻找证/卡未成功",
            Sw3::SelectFailed => "选取证/卡未成功",
            Sw3::Checksum => "接收业务终端数据的校验和错",
            Sw3::Length => "接收业务终端数据的长度错",
            Sw3::Command => "接收业务终端的命令错误",
            Sw3::NotAuthorised => "越权操作",
            Sw3::Unrecognised => "无法识别的错误",
            Sw3::CardAuthSam => "证/卡认证 SAM 失败",
            Sw3::SamAuthCard => "SAM 认证证/卡失败",
            Sw3::DataCheck => "信息验证错误",
            Sw3::CardType => "无法识别的证/卡类型",
            Sw3::ReadFailed => "读证/卡操作失败",
            Sw3::Random => "取随机数失败",
            Sw3::SamSelfTest => "SAM 自检失败，不能接收命令",
            Sw3::SamNotAuthorised => "SAM 没经过授权，无法使用",
            Sw3::NoContent => "证/卡中此项无内容",
        }
    }

    /// English meaning.
    pub const fn en(self) -> &'static str {
        match self {
            Sw3::Success => "success",
            Sw3::Found => "card found",
            Sw3::NotFound => "no card found",
            Sw3::SelectFailed => "selecting the card failed",
            Sw3::Checksum => "the module received a bad checksum",
            Sw3::Length => "the module received a bad length",
            Sw3::Command => "the module received an unknown command",
            Sw3::NotAuthorised => "operation not authorised",
            Sw3::Unrecognised => "unrecognised error",
            Sw3::CardAuthSam => "the card failed to authenticate the SAM",
            Sw3::SamAuthCard => "the SAM failed to authenticate the card",
            Sw3::DataCheck => "the card's data failed verification",
            Sw3::CardType => "unrecognised card type",
            Sw3::ReadFailed => "reading the card failed",
            Sw3::Random => "getting a random number failed",
            Sw3::SamSelfTest => "the SAM failed its self-test and takes no commands",
            Sw3::SamNotAuthorised => "the SAM is not authorised and cannot be used",
            Sw3::NoContent => "the card holds nothing for this item",
        }
    }

    /// A fault of the module itself (its SAM): the reader cannot read any
    /// card until it is fixed, so cardlink puts it in state `error`.
    pub const fn is_module_fault(self) -> bool {
        matches!(
            self,
            Sw3::SamSelfTest
                | Sw3::SamNotAuthorised
                | Sw3::NotAuthorised
                | Sw3::Command
                | Sw3::Unrecognised
        )
    }

    /// The module says it received our command damaged: send it again.
    pub const fn is_line_error(self) -> bool {
        matches!(self, Sw3::Checksum | Sw3::Length)
    }
}

/// The data of a successful read reply.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ReadReply<'a> {
    /// The 256-byte text block.
    pub text: &'a [u8; TEXT_LEN],
    photo_len: usize,
}

impl fmt::Debug for ReadReply<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Neither the text (personal data) nor the photo.
        write!(f, "ReadReply {{ photo: {} bytes }}", self.photo_len)
    }
}

impl<'a> ReadReply<'a> {
    /// Splits the data of a `90` reply to `30 01`: text length and photo
    /// length (u16 BE each, exactly 256 and 1024), text, photo. Anything
    /// else is a [`Corruption::Length`]: the host asks again.
    pub fn parse(data: &'a [u8]) -> Result<ReadReply<'a>, Corruption> {
        if data.len() != READ_DATA_LEN {
            return Err(Corruption::Length);
        }
        let text_len = u16::from_be_bytes([data[0], data[1]]) as usize;
        let photo_len = u16::from_be_bytes([data[2], data[3]]) as usize;
        if text_len != TEXT_LEN || photo_len != PHOTO_LEN {
            return Err(Corruption::Length);
        }
        let text: &[u8; TEXT_LEN] = data[4..4 + TEXT_LEN]
            .try_into()
            .map_err(|_| Corruption::Length)?;
        Ok(ReadReply { text, photo_len })
    }

    /// The photo's length. Its bytes are not offered: cardlink never
    /// decodes, logs, stores or forwards the photo.
    pub fn photo_len(&self) -> usize {
        self.photo_len
    }
}

/// Which document a text block belongs to (the flag at byte 248).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Document {
    /// 居民身份证 (no flag: space or zero).
    Resident,
    /// `J`: 港澳台居民居住证.
    HkMacaoTaiwan,
    /// `I`: 2017 外国人永久居留身份证 (15-character number).
    ForeignPermanent2017,
    /// `Y`: 2023 外国人永久居留身份证 (18 characters, first digit 9).
    ForeignPermanent2023,
}

impl Document {
    /// Short Chinese label as the screens show it.
    pub const fn label_zh(self) -> &'static str {
        match self {
            Document::Resident => "身份证",
            Document::HkMacaoTaiwan => "居住证",
            Document::ForeignPermanent2017 | Document::ForeignPermanent2023 => "永居证",
        }
    }

    /// Wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Document::Resident => "resident_id",
            Document::HkMacaoTaiwan => "hmt_residence_permit",
            Document::ForeignPermanent2017 => "foreign_permanent_2017",
            Document::ForeignPermanent2023 => "foreign_permanent",
        }
    }
}

/// Field byte ranges of the resident card (and of `J`, the same layout).
pub mod layout {
    use core::ops::Range;
    /// 姓名.
    pub const NAME: Range<usize> = 0..30;
    /// 性别 (GB/T 2261.1 code: 1 male, 2 female).
    pub const SEX: Range<usize> = 30..32;
    /// 民族 (GB 3304 code; reserved on `J`).
    pub const NATION: Range<usize> = 32..36;
    /// 出生日期 `YYYYMMDD`.
    pub const BIRTH: Range<usize> = 36..52;
    /// 住址.
    pub const ADDRESS: Range<usize> = 52..122;
    /// 公民身份号码.
    pub const NUMBER: Range<usize> = 122..158;
    /// 签发机关.
    pub const AUTHORITY: Range<usize> = 158..188;
    /// 有效期起始日期.
    pub const VALID_FROM: Range<usize> = 188..204;
    /// 有效期截止日期 (or 长期).
    pub const VALID_TO: Range<usize> = 204..220;
    /// `J`: 通行证号码.
    pub const PASS_NUMBER: Range<usize> = 220..238;
    /// `J`: 签发次数.
    pub const ISSUES: Range<usize> = 238..242;
    /// The document type flag.
    pub const TYPE: Range<usize> = 248..250;
    /// `I` (2017): 英文姓名.
    pub const I_ENGLISH_NAME: Range<usize> = 0..120;
    /// `I` (2017): 永久居留证号码, 15 characters.
    pub const I_NUMBER: Range<usize> = 122..152;
    /// `I` (2017): 中文姓名.
    pub const I_CHINESE_NAME: Range<usize> = 158..188;
}

/// Why a text block is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdError {
    /// The type flag is none of resident, `J`, `I`, `Y`.
    UnknownType(u16),
    /// A field is not valid UTF-16 or holds control characters.
    Text(&'static str),
    /// The number is not a valid identity number.
    Number(SsnError),
    /// A `J` permit whose number does not start with 81, 82 or 83, or a
    /// resident card with an 8x or 9 number, or a `Y` card whose number
    /// does not start with 9: the layouts disagree with the number.
    NumberKind(Document),
    /// A 2017 permanent-residence card: its 15-character number is not a
    /// social-security number (PROTOCOL.md §7.5).
    ForeignPermanent2017,
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdError::UnknownType(t) => write!(f, "unknown document type flag 0x{t:04X}"),
            IdError::Text(field) => write!(f, "field {field} is not valid text"),
            IdError::Number(e) => write!(f, "identity number: {e}"),
            IdError::NumberKind(d) => {
                write!(f, "the number does not fit a {} ({})", d.label_zh(), d.as_str())
            }
            IdError::ForeignPermanent2017 => f.write_str(
                "2017 版外国人永久居留身份证：15 位证件号码不是社会保障号码，请使用持证人的社会保障卡（人社部令第16号第十条） / a 2017 foreign permanent-residence card: its 15-character number is not a social-security number; use the holder's social-security card",
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for IdError {}

/// A UTF-16LE field of a text block, trailing spaces and zeros removed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Field<'a>(&'a [u8]);

impl fmt::Debug for Field<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Field({} bytes)", self.0.len())
    }
}

impl<'a> Field<'a> {
    fn new(block: &'a [u8; TEXT_LEN], r: core::ops::Range<usize>) -> Field<'a> {
        let mut s = &block[r];
        while s.len() >= 2 && matches!([s[s.len() - 2], s[s.len() - 1]], [0x20, 0] | [0, 0]) {
            s = &s[..s.len() - 2];
        }
        Field(s)
    }

    /// The characters; `None` where a unit is not valid UTF-16.
    pub fn chars(&self) -> impl Iterator<Item = Option<char>> + 'a {
        let units = self
            .0
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]));
        char::decode_utf16(units).map(|r| r.ok())
    }

    /// No characters.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn check(&self, name: &'static str) -> Result<(), IdError> {
        for c in self.chars() {
            match c {
                Some(c) if !c.is_control() => {}
                _ => return Err(IdError::Text(name)),
            }
        }
        Ok(())
    }

    /// Copies an ASCII field into `out`, returning its length.
    fn ascii<'o>(&self, out: &'o mut [u8]) -> Option<&'o [u8]> {
        let mut n = 0;
        for c in self.chars() {
            let c = c?;
            if !c.is_ascii() || n >= out.len() {
                return None;
            }
            out[n] = c as u8;
            n += 1;
        }
        Some(&out[..n])
    }
}

/// A validated text block. Holds personal data: its `Debug` shows the
/// document and the masked number only.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct IdText<'a> {
    /// The document.
    pub document: Document,
    /// The identity number.
    pub ssn: Ssn,
    /// The name in Chinese characters (姓名); `None` on a `Y` card, whose
    /// name fields the sources do not agree on (PROTOCOL.md §7.4).
    pub name: Option<Field<'a>>,
    block: &'a [u8; TEXT_LEN],
}

impl fmt::Debug for IdText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdText({:?}, {})", self.document, self.ssn)
    }
}

impl<'a> IdText<'a> {
    /// Validates a text block read on `today` (China time).
    pub fn parse(block: &'a [u8; TEXT_LEN], today: Date) -> Result<IdText<'a>, IdError> {
        let flag = u16::from_le_bytes([block[layout::TYPE.start], block[layout::TYPE.start + 1]]);
        let document = match flag {
            0x0000 | 0x0020 => Document::Resident,
            0x004A => Document::HkMacaoTaiwan,
            0x0049 => Document::ForeignPermanent2017,
            0x0059 => Document::ForeignPermanent2023,
            other => return Err(IdError::UnknownType(other)),
        };
        if document == Document::ForeignPermanent2017 {
            // Whatever its number holds: it is not a social-security number.
            return Err(IdError::ForeignPermanent2017);
        }
        let mut buf = [0u8; 18];
        let number = Field::new(block, layout::NUMBER)
            .ascii(&mut buf)
            .ok_or(IdError::Text("number"))?;
        let ssn = Ssn::parse_on(number, today).map_err(IdError::Number)?;
        let first = ssn.expose().as_bytes()[0];
        let fits = match document {
            // Citizens' numbers begin with a province code 11..65 (71 is
            // reserved for Taiwan in GB/T 2260 but not on resident cards);
            // 81..83 are the permits', 9 the permanent residents'.
            Document::Resident => (b'1'..=b'7').contains(&first),
            Document::HkMacaoTaiwan => matches!(&ssn.expose()[..2], "81" | "82" | "83"),
            Document::ForeignPermanent2023 => first == b'9',
            Document::ForeignPermanent2017 => false,
        };
        if !fits {
            return Err(IdError::NumberKind(document));
        }
        let name = match document {
            Document::ForeignPermanent2023 => None,
            _ => {
                let f = Field::new(block, layout::NAME);
                f.check("name")?;
                if f.is_empty() {
                    return Err(IdError::Text("name"));
                }
                Some(f)
            }
        };
        Ok(IdText {
            document,
            ssn,
            name,
            block,
        })
    }

    /// The text block (for redaction; personal data).
    pub fn block(&self) -> &'a [u8; TEXT_LEN] {
        self.block
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_match_the_published_bytes() {
        // The find, select and read commands as printed in the sources.
        assert_eq!(
            Command::Find.encode(),
            [0xAA, 0xAA, 0xAA, 0x96, 0x69, 0x00, 0x03, 0x20, 0x01, 0x22]
        );
        assert_eq!(Command::Select.encode()[9], 0x21);
        assert_eq!(Command::Read.encode()[9], 0x32);
    }

    #[test]
    fn published_find_reply_decodes() {
        let wire = [
            0xAA, 0xAA, 0xAA, 0x96, 0x69, 0x00, 0x08, 0x00, 0x00, 0x9F, 0, 0, 0, 0, 0x97,
        ];
        match scan(&wire) {
            Scan::Reply {
                reply, consumed, ..
            } => {
                assert_eq!(reply.sw3, 0x9F);
                assert_eq!(reply.data, &[0, 0, 0, 0]);
                assert_eq!(consumed, wire.len());
            }
            other => panic!("{other:?}"),
        }
        let mut bad = wire;
        bad[14] ^= 1;
        assert!(matches!(
            scan(&bad),
            Scan::Corrupt {
                why: Corruption::Checksum,
                consumed: 1
            }
        ));
    }

    #[test]
    fn partial_preamble_is_kept() {
        assert_eq!(scan(&[1, 2, 0xAA, 0xAA]), Scan::NeedMore { discard: 2 });
        assert_eq!(
            scan(&[0xAA, 0xAA, 0xAA, 0x96, 0x69, 0x00]),
            Scan::NeedMore { discard: 0 }
        );
        assert_eq!(scan(b"xyz"), Scan::NeedMore { discard: 3 });
    }

    #[test]
    fn sw3_codes_are_distinct() {
        for (i, a) in Sw3::ALL.iter().enumerate() {
            assert_eq!(Sw3::from_code(a.code()), Some(*a));
            for b in &Sw3::ALL[i + 1..] {
                assert_ne!(a.code(), b.code());
            }
        }
    }
}
