//! The rules of family mutual aid (家庭共济) that binding enforces.
//!
//! National rules:
//! * 国办发〔2021〕14号 (关于建立健全职工基本医疗保险门诊共济保障机制的指导意见)
//!   let the employee medical-insurance personal account pay for the
//!   spouse, parents and children.
//! * 国办发〔2024〕38号 (关于健全基本医疗保险参保长效机制的指导意见), adopted
//!   by every province by December 2024, widened this to all close
//!   relatives (近亲属): also brothers and sisters, paternal and maternal
//!   grandparents, and grandchildren through sons and daughters.
//! * Only an employee-insured person has a personal account, so only they
//!   can pay; the member must be enrolled in basic medical insurance
//!   (employee or resident); "the money is shared, the card is not": the
//!   member always uses their own card.
//!
//! Province rules differ and are configuration ([`BindPolicy`]): how many
//! members one account may cover, a cooldown before a member may be bound
//! to another payer after an unbind, and the scope (省内共济 is in force
//! everywhere; cross-province mutual aid is not yet).

use serde::{Deserialize, Serialize};

/// The member's relation to the account holder: the eight close relatives
/// of 国办发〔2024〕38号.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    /// 配偶.
    Spouse,
    /// 父母.
    Parent,
    /// 子女.
    Child,
    /// 兄弟姐妹.
    Sibling,
    /// 祖父母 (paternal grandparents).
    Grandparent,
    /// 外祖父母 (maternal grandparents).
    MaternalGrandparent,
    /// 孙子女 (children of a son).
    Grandchild,
    /// 外孙子女 (children of a daughter).
    MaternalGrandchild,
}

impl Relation {
    /// Every relation, in the order of the documents.
    pub const ALL: [Relation; 8] = [
        Relation::Spouse,
        Relation::Parent,
        Relation::Child,
        Relation::Sibling,
        Relation::Grandparent,
        Relation::MaternalGrandparent,
        Relation::Grandchild,
        Relation::MaternalGrandchild,
    ];

    /// The name as stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Relation::Spouse => "spouse",
            Relation::Parent => "parent",
            Relation::Child => "child",
            Relation::Sibling => "sibling",
            Relation::Grandparent => "grandparent",
            Relation::MaternalGrandparent => "maternal_grandparent",
            Relation::Grandchild => "grandchild",
            Relation::MaternalGrandchild => "maternal_grandchild",
        }
    }

    /// The Chinese label.
    pub fn label_zh(self) -> &'static str {
        match self {
            Relation::Spouse => "配偶",
            Relation::Parent => "父母",
            Relation::Child => "子女",
            Relation::Sibling => "兄弟姐妹",
            Relation::Grandparent => "祖父母",
            Relation::MaternalGrandparent => "外祖父母",
            Relation::Grandchild => "孙子女",
            Relation::MaternalGrandchild => "外孙子女",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Relation> {
        Relation::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Relation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where holder and member must be insured for a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Same province (first two digits of the insured region): 省内共济,
    /// in force everywhere.
    #[default]
    Province,
    /// Same city (first four digits).
    City,
    /// Anywhere (cross-province mutual aid, where a province allows it).
    Any,
}

impl Scope {
    /// How many leading digits of the 6-digit insured region must agree.
    pub fn digits(self) -> usize {
        match self {
            Scope::Province => 2,
            Scope::City => 4,
            Scope::Any => 0,
        }
    }
}

/// What a person identified by an identity document (居民身份证, 居住证,
/// 永居证, read by an identity-card module) may do (`[policy] id_card`).
///
/// The default, `window`, follows the national rules' principle that the
/// card is not shared ("钱共用、卡不共用", 国办发〔2021〕14号 and
/// 国办发〔2024〕38号): binding a family member is the insured person's own
/// act, shown with their own social-security card (or 医保电子凭证). At a
/// window a clerk checks the identity document in person and may bind a
/// party identified by it (the 经办 channel, where an ID card is the usual
/// credential); an unattended kiosk cannot check who holds an identity card,
/// so a kiosk bind still needs both parties' social-security cards. Every
/// identity-card read resolves and shows the person (and their payment
/// records) like a social-security card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdCardUse {
    /// Identify only: a bind never takes an identity-card read.
    Identify,
    /// A window may bind a party identified by an identity card; a kiosk
    /// may not (the default).
    #[default]
    Window,
    /// A kiosk too (where a province's kiosks check the holder otherwise,
    /// e.g. by face comparison).
    Anywhere,
}

impl IdCardUse {
    /// As in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            IdCardUse::Identify => "identify",
            IdCardUse::Window => "window",
            IdCardUse::Anywhere => "anywhere",
        }
    }

    /// Whether a bind or unbind at `kiosk` (true) or a window may take a
    /// party identified by an identity card.
    pub fn may_link(self, kiosk: bool) -> bool {
        match self {
            IdCardUse::Identify => false,
            IdCardUse::Window => !kiosk,
            IdCardUse::Anywhere => true,
        }
    }
}

/// Configurable parts of the binding rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindPolicy {
    /// Relations a member may have to the holder (default: all eight).
    pub relations: Vec<Relation>,
    /// Members one account may cover; 0: no limit.
    pub max_members: u32,
    /// After an unbind, days before the member may be bound to another payer.
    pub rebind_cooldown_days: u32,
    /// Where holder and member must be insured.
    pub scope: Scope,
}

impl Default for BindPolicy {
    fn default() -> Self {
        BindPolicy {
            relations: Relation::ALL.to_vec(),
            max_members: 0,
            rebind_cooldown_days: 0,
            scope: Scope::Province,
        }
    }
}
