//! Masking of personal data for logs and default display output.
//!
//! SSNs mask through [`firmware_protocol::Ssn`]'s own `Display`; this module
//! covers the other identifiers: card numbers, PANs and names, and
//! identifiers inside free text that a reader sends ([`free_text`]).

/// Keeps `head` leading and `tail` trailing characters, stars in between.
pub fn mask_middle(s: &str, head: usize, tail: usize) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= head + tail {
        return "*".repeat(chars.len());
    }
    let mut out: String = chars[..head].iter().collect();
    out.extend(std::iter::repeat_n('*', chars.len() - head - tail));
    out.extend(&chars[chars.len() - tail..]);
    out
}

/// `A12345678` → `A******78`.
pub fn card_no(s: &str) -> String {
    mask_middle(s, 1, 2)
}

/// `6222021234567890128` → `622202*********0128`.
pub fn pan(s: &str) -> String {
    mask_middle(s, 6, 4)
}

/// `张三` → `张*`, `ZHANG/SAN` → `Z********`: only the first character shows.
pub fn name(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => std::iter::once(first).chain(chars.map(|_| '*')).collect(),
        None => String::new(),
    }
}

/// Masks an SSN-or-card-number string typed by a user, without validating it.
pub fn identifier(s: &str) -> String {
    match s.chars().count() {
        18 => mask_middle(s, 6, 4),
        n if n > 12 => pan(s),
        _ => card_no(s),
    }
}

/// Free text from outside (a reader's error text, its firmware
/// string) with every identifier-shaped run masked, without validating
/// anything: a run of 12 or more digits (an SSN with a trailing `X`, a
/// legacy 15-digit number, a PAN, or any longer number) keeps its first 6
/// and last 4 characters; a card-number-shaped word (9 characters of
/// digits and capitals, at least 7 of them digits) keeps its first and
/// last two. Runs are found inside words too (`SSN11010519491231002X`).
/// Shorter numbers (a version, a date, a return code) are left alone.
pub fn free_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find(|c: char| c.is_ascii_alphanumeric()) {
        out.push_str(&rest[..start]);
        let word = &rest[start..];
        let len = word
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(word.len());
        out.push_str(&mask_word(&word[..len]));
        rest = &word[len..];
    }
    out.push_str(rest);
    out
}

/// One ASCII-alphanumeric word of [`free_text`].
fn mask_word(word: &str) -> String {
    let b = word.as_bytes();
    let card_shaped = b.len() == 9
        && b.iter()
            .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
        && b.iter().filter(|c| c.is_ascii_digit()).count() >= 7;
    if card_shaped {
        return card_no(word);
    }
    let mut out = String::with_capacity(word.len());
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            out.push(char::from(b[i]));
            i += 1;
            continue;
        }
        let mut end = i + b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        // An SSN's check character.
        if end - i == 17 && matches!(b.get(end), Some(b'X' | b'x')) {
            end += 1;
        }
        let run = &word[i..end];
        if run.len() >= 12 {
            out.push_str(&mask_middle(run, 6, 4));
        } else {
            out.push_str(run);
        }
        i = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        assert_eq!(card_no("A12345678"), "A******78");
        assert_eq!(pan("6222021234567890128"), "622202*********0128");
        assert_eq!(name("张三"), "张*");
        assert_eq!(name("欧阳娜娜"), "欧***");
        assert_eq!(name(""), "");
        assert_eq!(identifier("11010519491231002X"), "110105********002X");
        assert_eq!(mask_middle("ab", 1, 2), "**");
    }

    #[test]
    fn identifiers_in_free_text() {
        assert_eq!(
            free_text("card 11010519491231002X: 读卡失败"),
            "card 110105********002X: 读卡失败"
        );
        assert_eq!(
            free_text("SSN11010519491231002x;A12345678,6222021234567890128"),
            "SSN110105********002x;A******78,622202*********0128"
        );
        assert_eq!(free_text("110105491231002"), "110105*****1002");
        assert_eq!(
            free_text("FW v2.1.7 build 20240101 SN 0042 ret=-11"),
            "FW v2.1.7 build 20240101 SN 0042 ret=-11"
        );
        assert_eq!(free_text("FIRMWARE1 ABC"), "FIRMWARE1 ABC");
        assert_eq!(free_text(""), "");
    }
}
