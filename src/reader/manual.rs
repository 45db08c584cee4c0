//! Manual entry: a number typed at a window (or by `cardlinkctl lookup`)
//! turned into a [`CardRead`], with the same validation as a swipe: an SSN
//! must pass GB 11643's MOD 11-2 check, a bank card number the Luhn check.

use firmware_protocol::Ssn;

use super::card::{CardRead, CardSource};

/// Why a typed number is not a usable card identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManualError {
    /// An 18-character number that is not a valid SSN.
    #[error("invalid social security number: {0}")]
    Ssn(firmware_protocol::SsnError),
    /// A 15-digit legacy number that is not valid.
    #[error("invalid 15-digit number: {0}")]
    Legacy(firmware_protocol::SsnError),
    /// The 15-character number of a 2017 foreign permanent-residence card
    /// (three letters, twelve digits): not a social-security number. Social
    /// insurance gives such holders a number of its own (人社部令第16号,
    /// art. 10, 外国人社会保障号码编制规则), printed on their card.
    #[error("2017 版外国人永久居留身份证号码不是社会保障号码，请输入社会保障卡上的号码 / the number of a 2017 foreign permanent-residence card is not a social-security number; enter the number on the holder's social-security card")]
    ForeignPermanent2017,
    /// A bank card number failing the Luhn check.
    #[error("bank card number fails the Luhn check")]
    Luhn,
    /// Not any of the recognised shapes.
    #[error("not a social security number (18), legacy number (15), card number (9) or bank card number")]
    Shape,
}

/// A manual entry turned into a card read.
pub fn manual_read(number: &str) -> Result<CardRead, ManualError> {
    let n = number.trim();
    let mut read = CardRead {
        source: CardSource::Manual,
        ssn: None,
        card_no: None,
        pan: None,
        name: None,
        region: None,
        issued: None,
        expires: None,
        seq: None,
        document: None,
    };
    let digits = n.bytes().all(|b| b.is_ascii_digit());
    match n.len() {
        18 => read.ssn = Some(Ssn::parse(n).map_err(ManualError::Ssn)?),
        15 if n.bytes().take(3).all(|b| b.is_ascii_alphabetic())
            && n.bytes().skip(3).all(|b| b.is_ascii_digit()) =>
        {
            return Err(ManualError::ForeignPermanent2017)
        }
        15 if digits => read.ssn = Some(Ssn::from_legacy15(n).map_err(ManualError::Legacy)?),
        9 if n
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()) =>
        {
            read.card_no = Some(n.to_string())
        }
        12..=19 if digits => {
            if !firmware_protocol::magstripe::luhn_ok(n.as_bytes()) {
                return Err(ManualError::Luhn);
            }
            read.pan = Some(n.to_string())
        }
        _ => return Err(ManualError::Shape),
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert!(manual_read(" 11010519491231002X ").unwrap().ssn.is_some());
        assert_eq!(
            manual_read("A12345678").unwrap().card_no.as_deref(),
            Some("A12345678")
        );
        assert!(matches!(
            manual_read("110105194912310021"),
            Err(ManualError::Ssn(_))
        ));
        assert_eq!(manual_read("12"), Err(ManualError::Shape));
        assert_eq!(
            manual_read("USA110080101001"),
            Err(ManualError::ForeignPermanent2017)
        );
        // The 2023 card's number is an identity number like a citizen's.
        assert!(manual_read("911840198001010013").unwrap().ssn.is_some());
        assert_eq!(manual_read("4111111111111112"), Err(ManualError::Luhn));
        assert!(manual_read("4111111111111111").unwrap().pan.is_some());
    }
}
