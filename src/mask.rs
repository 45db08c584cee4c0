//! Masking of personal data for logs and default display output.
//!
//! SSNs mask through [`firmware_protocol::Ssn`]'s own `Display`; this module
//! covers the other identifiers: card numbers, PANs and names.

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
}
