//! Return codes of the standard social-security card reader interface
//! (人社部 社会保障卡读卡器通用接口规范, the `iReadCardBas` family of
//! functions): 0 is success, a failure is a negative integer.
//!
//! * `-1` … `-2203`: the interface's own codes (table in [`meaning`]).
//! * below `-10000`: the card answered an APDU with a status word other
//!   than `9000`; the code is minus the status word SW1SW2 read as a
//!   decimal number: `-27010` is `0x6982` (security status not satisfied),
//!   `-27266` is `0x6A82` (file not found).
//!
//! A reader in `ssse-text` mode sends such a code as a line holding only
//! the number; in frame mode `READ_ERROR` carries it in its extended form
//! (PROTOCOL.md §1).

/// What a return code means, in Chinese and in English.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meaning {
    /// The code.
    pub code: i32,
    /// The status word, for codes below -10000.
    pub status_word: Option<u16>,
    /// Chinese.
    pub zh: &'static str,
    /// English.
    pub en: &'static str,
    /// Whether the code is one the interface (or ISO 7816-4) defines; an
    /// unknown code still gets a generic meaning.
    pub known: bool,
}

/// The interface's own codes.
const CODES: &[(i32, &str, &str)] = &[
    (-1, "卡类型不对", "wrong card type"),
    (-2, "无卡", "no card in the reader"),
    (-3, "有卡未上电", "card not powered"),
    (-4, "卡无应答", "card does not respond"),
    (-11, "读卡器连接错", "reader connection error"),
    (-12, "未建立连接", "reader not connected"),
    (-13, "不支持该命令", "unsupported command"),
    (-14, "命令参数错", "bad command parameter"),
    (-15, "信息校验和出错", "checksum error"),
    (
        -20,
        "卡识别码格式错",
        "card identification code has a wrong format",
    ),
    (-21, "内部认证失败", "internal authentication failed"),
    (-22, "传入数据与卡内不符", "data does not match the card"),
    (-24, "PSAM 卡密钥级别不够", "PSAM key level too low"),
    (-51, "个人密码错误", "PIN wrong"),
    (-52, "个人密码锁定", "PIN locked"),
    (-2201, "未插 PSAM 卡", "no PSAM card in the reader"),
    (-2202, "PSAM 卡不支持该算法", "the PSAM lacks the algorithm"),
    (
        -2203,
        "PSAM 卡内无 RKSSSE 密钥",
        "the PSAM lacks the RKSSSE key",
    ),
];

/// ISO 7816-4 status words a social-security card answers with.
const STATUS_WORDS: &[(u16, &str, &str)] = &[
    (0x6281, "返回数据可能有错", "returned data may be corrupted"),
    (0x6700, "长度错误", "wrong length"),
    (
        0x6981,
        "命令与文件结构不相容",
        "command incompatible with the file structure",
    ),
    (0x6982, "安全状态不满足", "security status not satisfied"),
    (0x6983, "认证方法锁定", "authentication method blocked"),
    (0x6984, "引用数据无效", "referenced data invalidated"),
    (0x6985, "使用条件不满足", "conditions of use not satisfied"),
    (
        0x6986,
        "不满足命令执行条件",
        "command not allowed (no current EF)",
    ),
    (0x6A81, "功能不支持", "function not supported"),
    (0x6A82, "文件未找到", "file not found"),
    (0x6A83, "记录未找到", "record not found"),
    (0x6A86, "参数 P1 P2 不正确", "incorrect parameters P1 P2"),
    (0x6A88, "引用数据未找到", "referenced data not found"),
    (0x6D00, "指令不支持", "instruction not supported"),
    (0x6E00, "类不支持", "class not supported"),
    (0x6F00, "卡片内部错误", "card internal error"),
];

/// The meaning of reader return code `code`.
pub fn meaning(code: i32) -> Meaning {
    if let Some(&(_, zh, en)) = CODES.iter().find(|(c, _, _)| *c == code) {
        return Meaning {
            code,
            status_word: None,
            zh,
            en,
            known: true,
        };
    }
    if code < -10_000 {
        if let Ok(sw) = u16::try_from(code.unsigned_abs()) {
            let (zh, en, known) = match STATUS_WORDS.iter().find(|(s, _, _)| *s == sw) {
                Some(&(_, zh, en)) => (zh, en, true),
                None if sw & 0xFFF0 == 0x63C0 => {
                    ("个人密码错误，可重试", "PIN wrong, retries left", true)
                }
                None => (
                    "卡片返回错误状态字",
                    "the card answered with an error status word",
                    false,
                ),
            };
            return Meaning {
                code,
                status_word: Some(sw),
                zh,
                en,
                known,
            };
        }
    }
    Meaning {
        code,
        status_word: None,
        zh: "读卡器返回未知错误",
        en: "unknown reader error",
        known: false,
    }
}

/// Parses a line that holds only a return code (a negative integer, ASCII,
/// surrounding spaces allowed), as a reader in `ssse-text` mode sends it.
pub fn parse_line(line: &[u8]) -> Option<i32> {
    let s = core::str::from_utf8(line).ok()?.trim();
    let digits = s.strip_prefix('-')?;
    if digits.is_empty() || digits.len() > 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<i32>().ok().filter(|c| *c < 0)
}

/// Marker byte of `READ_ERROR`'s extended form: `0xFF`, then the return
/// code as a signed 32-bit little-endian integer, then optional UTF-8 text.
/// (The v1 form is one unsigned code byte, then text; 0xFF is reserved.)
pub const EXTENDED: u8 = 0xFF;

/// A `READ_ERROR` payload: `(code, text)`. The v1 form's code byte is
/// returned as a positive code; `None` when the payload is empty or the
/// extended form is cut short.
pub fn parse_read_error(payload: &[u8]) -> Option<(i32, &[u8])> {
    match payload.split_first()? {
        (&EXTENDED, rest) => {
            let code = rest.get(..4)?;
            let code = i32::from_le_bytes([code[0], code[1], code[2], code[3]]);
            Some((code, &rest[4..]))
        }
        (&code, text) => Some((i32::from(code), text)),
    }
}

/// Writes the extended `READ_ERROR` payload for `code` (without text) into
/// `out`; returns the number of bytes (5).
pub fn encode_read_error(code: i32, out: &mut [u8; 5]) -> usize {
    out[0] = EXTENDED;
    out[1..].copy_from_slice(&code.to_le_bytes());
    5
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_interface_code_has_a_meaning() {
        for &(code, zh, en) in CODES {
            let m = meaning(code);
            assert!(m.known && m.zh == zh && m.en == en);
        }
        assert_eq!(meaning(-2).en, "no card in the reader");
        assert!(!meaning(-99).known);
    }

    #[test]
    fn status_words_below_minus_10000() {
        let m = meaning(-27010);
        assert_eq!((m.status_word, m.zh), (Some(0x6982), "安全状态不满足"));
        let m = meaning(-27266);
        assert_eq!((m.status_word, m.en), (Some(0x6A82), "file not found"));
        let m = meaning(-25539); // 0x63C3
        assert_eq!(m.status_word, Some(0x63C3));
        assert!(m.known);
        assert!(!meaning(-28673).known); // 0x7001: not a status word we know
                                         // Below -65535 there is no status word.
        assert_eq!(meaning(-70000).status_word, None);
    }

    #[test]
    fn lines_and_payloads() {
        assert_eq!(parse_line(b"-2201"), Some(-2201));
        assert_eq!(parse_line(b" -2 "), Some(-2));
        assert_eq!(parse_line(b"-"), None);
        assert_eq!(parse_line(b"2"), None);
        assert_eq!(parse_line(b"-2x"), None);
        assert_eq!(parse_line(b"-99999999999"), None);
        let mut buf = [0u8; 5];
        encode_read_error(-27010, &mut buf);
        assert_eq!(parse_read_error(&buf), Some((-27010, &b""[..])));
        assert_eq!(
            parse_read_error(b"\x05card mute"),
            Some((5, &b"card mute"[..]))
        );
        assert_eq!(parse_read_error(b"\xff\x01\x02"), None);
        assert_eq!(parse_read_error(b""), None);
    }
}
