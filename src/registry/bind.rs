//! `bind` and `unbind`: making and revoking family links, with the rules.

use firmware_protocol::{Date, Ssn};
use rusqlite::{params, OptionalExtension};

use super::policy::{BindPolicy, Relation};
use super::resolve::{now, CardRow, Fut};

/// The answer of [`Facts::revoked_since`].
pub(crate) type Since<'a> = Fut<'a, Option<String>>;
use super::error::RegistryError;

/// Where a link was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Social-security service window.
    Window,
    /// Designated hospital's medical-insurance office.
    Hospital,
    /// Self-service kiosk.
    Kiosk,
    /// Bulk import.
    Import,
}

impl Channel {
    /// Lower-case name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Window => "window",
            Channel::Hospital => "hospital",
            Channel::Kiosk => "kiosk",
            Channel::Import => "import",
        }
    }
}

/// Why a bind or unbind was refused. Each refusal has its own [`code`](BindError::code).
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The holder's SSN is not in the registry.
    #[error("account holder {0} is not in the registry")]
    HolderUnknown(Ssn),
    /// The member's SSN is not in the registry.
    #[error("family member {0} is not in the registry")]
    MemberUnknown(Ssn),
    /// Holder and member are the same person.
    #[error("holder and member are the same person")]
    SamePerson,
    /// The holder has no active employee basic medical insurance.
    #[error("account holder has no active employee medical insurance")]
    HolderNotEmployee,
    /// The holder has no active, unexpired card.
    #[error("account holder has no active card")]
    HolderNoActiveCard,
    /// The member has no active basic medical insurance.
    #[error("family member has no active basic medical insurance")]
    MemberNotInsured,
    /// The member has no active, unexpired card.
    #[error("family member has no active card")]
    MemberNoActiveCard,
    /// The relation is not in the allowed list.
    #[error("relation '{0}' is not allowed")]
    RelationNotAllowed(String),
    /// The holder's account already covers the configured maximum.
    #[error("the account already covers {0} member(s), the most this province allows")]
    TooManyMembers(u32),
    /// The member was unbound from another payer too recently.
    #[error("the member was unbound from another account on {since}; a new payer is possible from {until}")]
    Cooldown {
        /// When the earlier link was revoked (RFC 3339).
        since: String,
        /// When the cooldown ends (RFC 3339).
        until: String,
    },
    /// Holder and member are not insured in the same province (or city).
    #[error("{0}")]
    OutOfScope(String),
    /// This exact link is already active.
    #[error("this family link already exists")]
    AlreadyLinked,
    /// The member already has another active payer.
    #[error("family member is already covered by another account")]
    MemberHasPayer,
    /// The holder is covered by the member (directly or through other
    /// links): the link would make them pay for each other.
    #[error("the account holder is covered by this family member; a link cannot go both ways")]
    MutualLink,
    /// Unbind: no active link between these two.
    #[error("no active family link between these persons")]
    NotLinked,
    /// The registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl BindError {
    /// Stable machine-readable code for the audit log and, the same
    /// string, for clients (`protocol::ErrorCode` converts by it).
    pub fn code(&self) -> &'static str {
        match self {
            BindError::HolderUnknown(_) => "holder_unknown",
            BindError::MemberUnknown(_) => "member_unknown",
            BindError::SamePerson => "same_person",
            BindError::HolderNotEmployee => "holder_not_employee",
            BindError::HolderNoActiveCard => "holder_no_active_card",
            BindError::MemberNotInsured => "member_not_insured",
            BindError::MemberNoActiveCard => "member_no_active_card",
            BindError::RelationNotAllowed(_) => "relation_not_allowed",
            BindError::TooManyMembers(_) => "too_many_members",
            BindError::Cooldown { .. } => "cooldown",
            BindError::OutOfScope(_) => "out_of_scope",
            BindError::AlreadyLinked => "already_linked",
            BindError::MemberHasPayer => "member_has_payer",
            BindError::MutualLink => "mutual_link",
            BindError::NotLinked => "not_linked",
            BindError::Registry(RegistryError::Busy(_)) => "database_busy",
            BindError::Registry(RegistryError::Unavailable(_)) => "registry_unavailable",
            BindError::Registry(_) => "registry",
        }
    }
}

/// The parties and circumstances of a bind.
#[derive(Debug, Clone)]
pub struct BindRequest<'a> {
    /// Account holder.
    pub holder: Ssn,
    /// Family member.
    pub member: Ssn,
    /// Relation of the member to the holder.
    pub relation: Relation,
    /// Channel.
    pub channel: Channel,
    /// Operator (clerk id, kiosk id).
    pub operator: &'a str,
    /// The version of the consent statement ([`super::consent`]) the
    /// holder confirmed or was shown; stored in the audit row.
    pub consent: &'a str,
    /// Who asked (reader name or socket client), for the audit log.
    pub actor: &'a str,
}

/// RFC 3339 UTC time `days` before now, as stored in `revoked_at`.
fn days_ago(days: u32) -> (String, std::time::SystemTime) {
    let now = std::time::SystemTime::now();
    let then = now
        .checked_sub(std::time::Duration::from_secs(u64::from(days) * 86_400))
        .unwrap_or(std::time::UNIX_EPOCH);
    (humantime::format_rfc3339_seconds(then).to_string(), now)
}
/// The facts the binding rules look at, as a backend answers them inside
/// its write transaction. Async so that PostgreSQL awaits its round trips;
/// SQLite's answers are ready at once.
/// The futures are boxed and `Send`, like [`super::resolve::Source`]'s.
pub(crate) trait Facts {
    /// `(insurance_type, insurance_status)` of a person, `None` if unknown.
    fn insurance<'a>(&'a mut self, ssn: &'a str) -> Fut<'a, Option<(String, String)>>;
    /// The person's best card (`resolve::best_card`).
    fn best_card<'a>(&'a mut self, ssn: &'a str, today: Date) -> Fut<'a, Option<CardRow>>;
    /// The holder whose account actively covers `member`.
    fn payer_of<'a>(&'a mut self, member: &'a str) -> Fut<'a, Option<String>>;
    /// The person's insured region.
    fn region<'a>(&'a mut self, ssn: &'a str) -> Fut<'a, Option<String>>;
    /// Members the holder's account actively covers.
    fn active_members<'a>(&'a mut self, holder: &'a str) -> Fut<'a, u32>;
    /// The latest `revoked_at` after `cutoff` of a link of member `m` to a
    /// holder other than `h`.
    fn revoked_since<'a>(&'a mut self, m: &'a str, h: &'a str, cutoff: &'a str) -> Since<'a>;
}

/// Whether `holder` is covered by `member`, directly or up a chain of
/// payers (each person has at most one active payer, so the walk is a
/// line; it is bounded in case the data already holds a cycle).
pub(crate) async fn covered_by(
    f: &mut (impl Facts + ?Sized),
    holder: &str,
    member: &str,
) -> Result<bool, RegistryError> {
    let mut who = holder.to_string();
    for _ in 0..64 {
        match f.payer_of(&who).await? {
            Some(payer) if payer == member => return Ok(true),
            Some(payer) if payer == holder => return Ok(false),
            Some(payer) => who = payer,
            None => return Ok(false),
        }
    }
    Ok(false)
}

/// The binding rules, in the order their refusals are reported: the one
/// definition for both backends. Sources: 国办发〔2024〕38号 (who may be
/// covered: the close relatives; only employee insurance has a personal
/// account; the member must be insured) and the province rules of the
/// `[policy]` table (scope, members, cooldown); see `policy.rs`.
pub(crate) async fn check_rules(
    f: &mut (impl Facts + ?Sized),
    req: &BindRequest<'_>,
    policy: &BindPolicy,
    today: Date,
) -> Result<(), BindError> {
    if req.holder == req.member {
        return Err(BindError::SamePerson);
    }
    if !policy.relations.contains(&req.relation) {
        return Err(BindError::RelationNotAllowed(req.relation.to_string()));
    }
    let (holder, member) = (req.holder.expose(), req.member.expose());
    match f.insurance(holder).await? {
        None => return Err(BindError::HolderUnknown(req.holder)),
        Some((ty, st)) if ty != "employee" || st != "active" => {
            return Err(BindError::HolderNotEmployee)
        }
        Some(_) => {}
    }
    match f.insurance(member).await? {
        None => return Err(BindError::MemberUnknown(req.member)),
        Some((ty, st)) if ty == "none" || st != "active" => {
            return Err(BindError::MemberNotInsured)
        }
        Some(_) => {}
    }
    // One definition of a usable card for resolve and bind: active and
    // not expired today (China time), see `resolve::best_card`.
    if !f
        .best_card(holder, today)
        .await?
        .is_some_and(|c| c.usable(today))
    {
        return Err(BindError::HolderNoActiveCard);
    }
    if !f
        .best_card(member, today)
        .await?
        .is_some_and(|c| c.usable(today))
    {
        return Err(BindError::MemberNoActiveCard);
    }
    match f.payer_of(member).await? {
        Some(h) if h == holder => return Err(BindError::AlreadyLinked),
        Some(_) => return Err(BindError::MemberHasPayer),
        None => {}
    }
    if covered_by(f, holder, member).await? {
        return Err(BindError::MutualLink);
    }
    // Province rules (the [policy] table of the configuration).
    let digits = policy.scope.digits();
    if digits > 0 {
        let h = f.region(holder).await?;
        let m = f.region(member).await?;
        match (h, m) {
            (Some(h), Some(m)) if h.get(..digits) == m.get(..digits) => {}
            (Some(h), Some(m)) => {
                return Err(BindError::OutOfScope(format!(
                "holder insured in region {h}, member in {m}: mutual aid is limited to the same {}",
                if digits == 2 { "province" } else { "city" }
            )))
            }
            (h, _) => {
                let who = if h.is_none() { "holder" } else { "member" };
                return Err(BindError::OutOfScope(format!(
                    "the {who}'s insured region is not in the registry, so the {} rule cannot be checked",
                    if digits == 2 { "same-province" } else { "same-city" }
                )));
            }
        }
    }
    if policy.max_members > 0 {
        let n = f.active_members(holder).await?;
        if n >= policy.max_members {
            return Err(BindError::TooManyMembers(n));
        }
    }
    if policy.rebind_cooldown_days > 0 {
        let (cutoff, _) = days_ago(policy.rebind_cooldown_days);
        if let Some(since) = f.revoked_since(member, holder, &cutoff).await? {
            let until = humantime::parse_rfc3339_weak(&since)
                .ok()
                .map(|t| {
                    t + std::time::Duration::from_secs(
                        u64::from(policy.rebind_cooldown_days) * 86_400,
                    )
                })
                .map_or_else(
                    || "later".to_string(),
                    |t| humantime::format_rfc3339_seconds(t).to_string(),
                );
            return Err(BindError::Cooldown { since, until });
        }
    }
    Ok(())
}

/// The audit outcome of a bind that went through.
///
/// The consent version stands before the operator, which is free text and
/// therefore last: `consent=` cannot be spoofed by an operator id.
pub(crate) fn bind_outcome(req: &BindRequest<'_>) -> String {
    format!(
        "ok holder={} relation={} channel={} consent={} operator={}",
        req.holder.expose(),
        req.relation,
        req.channel.as_str(),
        req.consent,
        req.operator
    )
}

/// The questions of [`Facts`] in SQL that both backends read alike (`$n`
/// parameters: SQLite takes them in order of first use).
pub(crate) const INSURANCE_SQL: &str =
    "SELECT insurance_type, insurance_status FROM persons WHERE ssn = $1";
pub(crate) const PAYER_OF_SQL: &str =
    "SELECT holder_ssn FROM family_links WHERE member_ssn = $1 AND status = 'active'";
pub(crate) const REGION_SQL: &str = "SELECT region FROM persons WHERE ssn = $1";
pub(crate) const ACTIVE_MEMBERS_SQL: &str =
    "SELECT count(*) FROM family_links WHERE holder_ssn = $1 AND status = 'active'";
pub(crate) const REVOKED_SINCE_SQL: &str = "SELECT max(revoked_at) FROM family_links \
     WHERE member_ssn = $1 AND status = 'revoked' AND holder_ssn <> $2 AND revoked_at > $3";

/// The audit outcome of an unbind that revoked `revoked` links (0: refused).
pub(crate) fn unbind_outcome(revoked: u64, holder: &Ssn, operator: &str) -> String {
    if revoked == 0 {
        "refused:not_linked".to_string()
    } else {
        format!("ok holder={} operator={operator}", holder.expose())
    }
}

/// SQLite's answers to [`Facts`], inside the bind's transaction.
pub(crate) struct SqliteFacts<'c> {
    pub(crate) conn: &'c rusqlite::Connection,
    pub(crate) timeout: std::time::Duration,
}

impl SqliteFacts<'_> {
    fn one<T: rusqlite::types::FromSql>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Option<T>, RegistryError> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut st| st.query_row(params, |r| r.get(0)).optional())
            .map_err(|e| RegistryError::from_sql(e, self.timeout))
    }
}

impl SqliteFacts<'_> {
    pub(crate) fn insurance_now(
        &self,
        ssn: &str,
    ) -> Result<Option<(String, String)>, RegistryError> {
        self.conn
            .prepare_cached(INSURANCE_SQL)
            .and_then(|mut st| {
                st.query_row([ssn], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(|e| RegistryError::from_sql(e, self.timeout))
    }
    pub(crate) fn best_card_now(
        &self,
        ssn: &str,
        today: Date,
    ) -> Result<Option<CardRow>, RegistryError> {
        super::resolve::best_card(self.conn, ssn, today, self.timeout)
    }
    pub(crate) fn payer_of_now(&self, member: &str) -> Result<Option<String>, RegistryError> {
        self.one(PAYER_OF_SQL, [member])
    }
    pub(crate) fn region_now(&self, ssn: &str) -> Result<Option<String>, RegistryError> {
        self.one::<Option<String>>(REGION_SQL, [ssn])
            .map(Option::flatten)
    }
    pub(crate) fn active_members_now(&self, holder: &str) -> Result<u32, RegistryError> {
        self.one(ACTIVE_MEMBERS_SQL, [holder])
            .map(|n| n.unwrap_or(0))
    }
    pub(crate) fn revoked_since_now(
        &self,
        member: &str,
        holder: &str,
        cutoff: &str,
    ) -> Result<Option<String>, RegistryError> {
        self.one::<Option<String>>(REVOKED_SINCE_SQL, params![member, holder, cutoff])
            .map(Option::flatten)
    }
}

/// SQLite's answers are ready at once.
impl Facts for SqliteFacts<'_> {
    fn insurance<'a>(&'a mut self, ssn: &'a str) -> Fut<'a, Option<(String, String)>> {
        now(self.insurance_now(ssn))
    }
    fn best_card<'a>(&'a mut self, ssn: &'a str, today: Date) -> Fut<'a, Option<CardRow>> {
        now(self.best_card_now(ssn, today))
    }
    fn payer_of<'a>(&'a mut self, member: &'a str) -> Fut<'a, Option<String>> {
        now(self.payer_of_now(member))
    }
    fn region<'a>(&'a mut self, ssn: &'a str) -> Fut<'a, Option<String>> {
        now(self.region_now(ssn))
    }
    fn active_members<'a>(&'a mut self, holder: &'a str) -> Fut<'a, u32> {
        now(self.active_members_now(holder))
    }
    fn revoked_since<'a>(&'a mut self, m: &'a str, h: &'a str, cutoff: &'a str) -> Since<'a> {
        now(self.revoked_since_now(m, h, cutoff))
    }
}
