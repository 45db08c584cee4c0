//! What a holder agrees to before a family member is bound to their
//! account (家庭共济), in the words the kiosk shows and speaks, and the
//! version of those words that is stored with the bind in the audit log.
//!
//! A bind decides who pays whose medical costs, so the holder confirms it
//! knowingly: the kiosk shows [`CURRENT`] after the two swipes and the
//! relation and binds only once the holder has confirmed it; a window
//! records the version of the statement the clerk showed the citizen.
//! A statement is never edited once shipped: new wording is a new entry
//! in [`ALL`] with a new version, so that an audit row always names the
//! exact words that were shown.
//!
//! Sources for the content: 国办发〔2024〕38号 (the personal account of an
//! employee-insured person may pay for close relatives, who use their own
//! cards); the cooldown is the province's rule (`[policy]
//! rebind_cooldown_days`, see `policy.rs`).

/// One version of the consent statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statement {
    /// Stored in the audit row of the bind (`consent`).
    pub version: &'static str,
    /// The sentences, in Chinese and in English, shown in this order.
    pub sentences: &'static [(&'static str, &'static str)],
    /// The sentence about the cooldown, shown only when the province has
    /// one; `{days}` stands for its length.
    pub cooldown: (&'static str, &'static str),
}

/// The statement the screens show today.
pub const CURRENT: Statement = ALL[0];

/// Every statement ever shipped, newest first.
pub const ALL: [Statement; 1] = [Statement {
    version: "2026-12-01",
    sentences: &[
        (
            "绑定后，您的职工医保个人账户将支付这位家庭成员的医疗费用。",
            "Once bound, your employee medical-insurance personal account pays this family member's medical costs.",
        ),
        (
            "家庭成员就医时使用他（她）本人的社保卡，您的卡不交给他人。",
            "The family member uses their own card; yours stays with you.",
        ),
        (
            "您可以随时在窗口或自助机解除绑定。",
            "You can undo the bind at any time, at a window or at a kiosk.",
        ),
    ],
    cooldown: (
        "解除绑定后，{days}天内这位家庭成员不能绑定到其他人的账户。",
        "After an unbind, the member cannot be bound to another account for {days} days.",
    ),
}];

/// The statement of this version, if one was ever shipped.
pub fn find(version: &str) -> Option<&'static Statement> {
    ALL.iter().find(|s| s.version == version)
}

impl Statement {
    /// The sentences to show when the province's cooldown is `days` long
    /// (none when it is 0).
    pub fn text(&self, days: u32) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .sentences
            .iter()
            .map(|(zh, en)| (zh.to_string(), en.to_string()))
            .collect();
        if days > 0 {
            let d = days.to_string();
            out.push((
                self.cooldown.0.replace("{days}", &d),
                self.cooldown.1.replace("{days}", &d),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_unique_and_current_is_known() {
        for (i, a) in ALL.iter().enumerate() {
            assert!(ALL[i + 1..].iter().all(|b| b.version != a.version));
        }
        assert_eq!(find(CURRENT.version), Some(&ALL[0]));
        assert_eq!(find("1999-01-01"), None);
    }

    #[test]
    fn the_cooldown_sentence_appears_only_with_a_cooldown() {
        assert_eq!(CURRENT.text(0).len(), CURRENT.sentences.len());
        let t = CURRENT.text(180);
        assert_eq!(t.len(), CURRENT.sentences.len() + 1);
        assert!(t
            .last()
            .is_some_and(|(zh, en)| zh.contains("180天") && en.contains("180 days")));
    }
}
