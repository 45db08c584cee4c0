//! `resolve`: from a card identifier to the family-link picture.

use firmware_protocol::{Date, Ssn};
use rusqlite::{params, OptionalExtension};

use super::{parse_iso, RegistryError, Sqlite};

/// What to look up. At least one field must be set. When a card identifier
/// (card number or PAN) and an SSN are both given, the card is looked up and
/// its owner must be that SSN, otherwise the outcome is [`Outcome::Mismatch`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lookup {
    /// The SSN, if known.
    pub ssn: Option<Ssn>,
    /// Social security card number.
    pub card_no: Option<String>,
    /// Bank PAN of the card.
    pub pan: Option<String>,
}

impl Lookup {
    /// Lookup by SSN only.
    pub fn ssn(ssn: Ssn) -> Self {
        Lookup {
            ssn: Some(ssn),
            ..Lookup::default()
        }
    }
    /// Lookup by card number only.
    pub fn card_no(card_no: impl Into<String>) -> Self {
        Lookup {
            card_no: Some(card_no.into()),
            ..Lookup::default()
        }
    }
    /// Lookup by PAN only.
    pub fn pan(pan: impl Into<String>) -> Self {
        Lookup {
            pan: Some(pan.into()),
            ..Lookup::default()
        }
    }
}

/// The result class of a resolution. Everything but `Ok` is a refusal the
/// display explains; none of them is an error of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Known person with a usable card.
    Ok,
    /// No such card or person in the registry.
    Unknown,
    /// The card is reported lost.
    Lost,
    /// The card is frozen.
    Frozen,
    /// The card is cancelled.
    Cancelled,
    /// The card's expiry date has passed.
    Expired,
    /// The SSN read from the card differs from the registry's owner of that card.
    Mismatch,
    /// The person is known but has no card.
    NoCard,
}

impl Outcome {
    /// snake_case name, as in JSON and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Unknown => "unknown",
            Outcome::Lost => "lost",
            Outcome::Frozen => "frozen",
            Outcome::Cancelled => "cancelled",
            Outcome::Expired => "expired",
            Outcome::Mismatch => "mismatch",
            Outcome::NoCard => "no_card",
        }
    }
}

/// The person's role in family mutual aid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Their personal account covers at least one family member.
    Holder,
    /// Someone else's account pays for them.
    Member,
    /// Both: someone else's account pays for them and their own account
    /// covers members (the payer is the other holder, `members` their own).
    Both,
    /// Neither.
    None,
}

/// Who the person is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonInfo {
    /// SSN.
    pub ssn: Ssn,
    /// Name.
    pub name: String,
    /// `M` or `F`.
    pub sex: String,
    /// `employee`, `resident` or `none`.
    pub insurance_type: String,
    /// `active`, `suspended` or `ended`.
    pub insurance_status: String,
}

/// Whose account pays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payer {
    /// The account holder's SSN.
    pub ssn: Ssn,
    /// The account holder's name.
    pub name: String,
    /// Relation of the member to the holder; `None` when the person pays for themself.
    pub relation: Option<String>,
    /// Personal-account balance in fen, when the holder has an account.
    pub balance_fen: Option<i64>,
}

/// A family member covered by a holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Member SSN.
    pub ssn: Ssn,
    /// Member name.
    pub name: String,
    /// Relation to the holder.
    pub relation: String,
    /// When the link was made (RFC 3339).
    pub since: String,
}

/// The answer to [`Registry::resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// Result class.
    pub outcome: Outcome,
    /// The person, when known.
    pub person: Option<PersonInfo>,
    /// The card number involved, when known.
    pub card_no: Option<String>,
    /// The card's status in the registry, when a card was found.
    pub card_status: Option<String>,
    /// Role (only meaningful when `outcome` is `Ok`).
    pub role: Role,
    /// Who pays: the holder for a member, the person themself otherwise (only for `Ok`).
    pub payer: Option<Payer>,
    /// Members covered, for a holder (only for `Ok`).
    pub members: Vec<Member>,
}

impl Resolution {
    fn refused(outcome: Outcome, person: Option<PersonInfo>, card: Option<CardRow>) -> Self {
        Resolution {
            outcome,
            person,
            card_no: card.as_ref().map(|c| c.card_no.clone()),
            card_status: card.map(|c| c.status),
            role: Role::None,
            payer: None,
            members: Vec::new(),
        }
    }
}

/// One month's payment record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contribution {
    /// `YYYY-MM`.
    pub month: String,
    /// Employer name.
    pub employer: String,
    /// Contribution base, fen.
    pub base_fen: i64,
    /// Employee's part, fen.
    pub employee_fen: i64,
    /// Employer's part, fen.
    pub employer_fen: i64,
    /// Amount credited to the personal account, fen.
    pub account_fen: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct CardRow {
    pub(crate) card_no: String,
    pub(crate) status: String,
    pub(crate) expires: String,
}

impl CardRow {
    /// The one definition of a usable card, for resolve and bind: status
    /// active and not expired today (China time).
    pub(crate) fn usable(&self, today: Date) -> bool {
        self.status == "active" && parse_iso(&self.expires).is_some_and(|e| e >= today)
    }
}

/// The statement of [`best_card`] (both backends; `$n` parameters).
pub(crate) const BEST_CARD: &str = "SELECT card_no, status, expires FROM cards WHERE ssn = $1 \
     ORDER BY (status = 'active' AND expires >= $2) DESC, generation DESC, issued DESC, card_no DESC LIMIT 1";

/// A person's best card: a usable one first (newest generation, then
/// newest issue), otherwise the newest card, so a person holding an expired
/// new card and a valid old one resolves with the valid one, as bind sees it.
pub(crate) fn best_card(
    c: &rusqlite::Connection,
    ssn: &str,
    today: Date,
) -> rusqlite::Result<Option<CardRow>> {
    c.prepare_cached(BEST_CARD)?
        .query_row(rusqlite::params![ssn, today.to_string()], |r| {
            Ok(CardRow {
                card_no: r.get(0)?,
                status: r.get(1)?,
                expires: r.get(2)?,
            })
        })
        .optional()
}

/// Far-future bound used when re-validating SSNs already in the database.
const STORED: Date = match Date::new(9999, 12, 31) {
    Some(d) => d,
    None => Date::EPOCH,
};

pub(crate) fn stored_ssn(s: &str) -> Result<Ssn, RegistryError> {
    Ssn::parse_on(s.as_bytes(), STORED)
        .map_err(|e| RegistryError::Corrupt(format!("invalid SSN in database: {e}")))
}

/// Reads a derived `members` list: a JSON array of
/// `[ssn, name, relation, since]` in link order (see migration 005).
pub(crate) fn parse_members(json: &str) -> Result<Vec<Member>, RegistryError> {
    if json == "[]" {
        return Ok(Vec::new());
    }
    let rows: Vec<(String, String, String, String)> = serde_json::from_str(json)
        .map_err(|e| RegistryError::Corrupt(format!("member list is not valid: {e}")))?;
    rows.into_iter()
        .map(|(ssn, name, relation, since)| {
            Ok(Member {
                ssn: stored_ssn(&ssn)?,
                name,
                relation,
                since,
            })
        })
        .collect()
}

/// The derived row's columns after the card columns (see
/// [`super::derived`]): everything `resolve` reports about a person.
macro_rules! derived_columns {
    () => {
        "r.ssn, r.name, r.sex, r.insurance_type, r.insurance_status, \
         r.balance_fen, r.payer_ssn, r.payer_name, r.payer_relation, r.payer_balance_fen, r.members, r.cards"
    };
}

/// By card number or PAN: the card's own row and its owner's derived row
/// (two row reads).
pub(crate) const BY_CARD_NO: &str = concat!(
    "SELECT c.card_no, c.status, c.expires, c.ssn, ",
    derived_columns!(),
    " FROM cards c LEFT JOIN resolution r ON r.ssn = c.ssn WHERE c.card_no = $1"
);
pub(crate) const BY_PAN: &str = concat!(
    "SELECT c.card_no, c.status, c.expires, c.ssn, ",
    derived_columns!(),
    " FROM cards c LEFT JOIN resolution r ON r.ssn = c.ssn WHERE c.pan = $1"
);
/// By SSN: the derived row alone, with its best card (one row read).
pub(crate) const BY_SSN: &str = concat!(
    "SELECT r.card_no, r.card_status, r.card_expires, r.ssn, ",
    derived_columns!(),
    " FROM resolution r WHERE r.ssn = $1"
);
/// A person's derived row computed from its definition, for a person who
/// has no row (added outside cardlink and not yet repaired).
pub(crate) const FROM_VIEW: &str = concat!(
    "SELECT r.card_no, r.card_status, r.card_expires, r.ssn, ",
    derived_columns!(),
    " FROM resolution_source r WHERE r.ssn = $1"
);

/// The statements of a resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Query {
    /// [`BY_CARD_NO`].
    ByCardNo,
    /// [`BY_PAN`].
    ByPan,
    /// [`BY_SSN`].
    BySsn,
    /// [`FROM_VIEW`].
    FromView,
}

/// A person's member list: the derived row's, or the view's for a person
/// without one.
pub(crate) const MEMBERS_SQL: &str =
    "SELECT coalesce((SELECT members FROM resolution WHERE ssn = $1), \
                     (SELECT members FROM resolution_source WHERE ssn = $1))";

/// Payment records of the last `$2` months that have records, newest first.
pub(crate) const CONTRIBUTIONS_SQL: &str =
    "SELECT month, employer, base_fen, employee_fen, employer_fen, account_fen \
     FROM contributions WHERE ssn = $1 AND month IN \
     (SELECT DISTINCT month FROM contributions WHERE ssn = $1 ORDER BY month DESC LIMIT $2) \
     ORDER BY month DESC, employer";

impl Query {
    /// The statement (both backends read the same SQL; `$1` the key).
    pub(crate) fn sql(self) -> &'static str {
        match self {
            Query::ByCardNo => BY_CARD_NO,
            Query::ByPan => BY_PAN,
            Query::BySsn => BY_SSN,
            Query::FromView => FROM_VIEW,
        }
    }
}

/// What a backend answers for [`resolve_with`]. Async so that PostgreSQL
/// awaits its round trips; SQLite's answers are ready at once.
pub(crate) trait Source {
    /// One row of `q` for `key`.
    async fn row(&self, q: Query, key: &str) -> Result<Option<Row>, RegistryError>;
    /// The person's best card (see [`best_card`]).
    async fn best_card(&self, ssn: &str, today: Date) -> Result<Option<CardRow>, RegistryError>;
}

/// One row of the resolve statements.
pub(crate) struct Row {
    pub(crate) card: Option<CardRow>,
    /// The card's owner (by card) or the SSN looked up.
    pub(crate) owner: String,
    /// The derived row, when there is one.
    pub(crate) derived: Option<Derived>,
}

/// A `resolution` row.
pub(crate) struct Derived {
    pub(crate) ssn: String,
    pub(crate) name: String,
    pub(crate) sex: String,
    pub(crate) insurance_type: String,
    pub(crate) insurance_status: String,
    pub(crate) own_balance: Option<i64>,
    pub(crate) payer: Option<(String, String, String, Option<i64>)>,
    pub(crate) members: String,
    /// How many cards the person holds.
    pub(crate) cards: i64,
}

struct SqliteSource<'a>(&'a Sqlite);

impl Source for SqliteSource<'_> {
    async fn row(&self, q: Query, key: &str) -> Result<Option<Row>, RegistryError> {
        self.0
            .conn
            .prepare_cached(q.sql())
            .and_then(|mut st| st.query_row([key], Row::read).optional())
            .map_err(|e| self.0.sql(e))
    }
    async fn best_card(&self, ssn: &str, today: Date) -> Result<Option<CardRow>, RegistryError> {
        best_card(&self.0.conn, ssn, today).map_err(|e| self.0.sql(e))
    }
}

impl Row {
    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
        let card_no: Option<String> = r.get(0)?;
        let card = match card_no {
            Some(card_no) => Some(CardRow {
                card_no,
                status: r.get(1)?,
                expires: r.get(2)?,
            }),
            None => None,
        };
        let ssn: Option<String> = r.get(4)?;
        let derived = match ssn {
            Some(ssn) => {
                let holder: Option<String> = r.get(10)?;
                let payer = match holder {
                    Some(h) => Some((h, r.get(11)?, r.get(12)?, r.get(13)?)),
                    None => None,
                };
                Some(Derived {
                    ssn,
                    name: r.get(5)?,
                    sex: r.get(6)?,
                    insurance_type: r.get(7)?,
                    insurance_status: r.get(8)?,
                    own_balance: r.get(9)?,
                    payer,
                    members: r.get(14)?,
                    cards: r.get(15)?,
                })
            }
            None => None,
        };
        Ok(Row {
            card,
            owner: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
            derived,
        })
    }
}

/// Resolves `lookup` with `src`'s answers: the one definition of a
/// resolution for both backends.
pub(crate) async fn resolve_with(
    src: &impl Source,
    lookup: &Lookup,
    today: Date,
) -> Result<Resolution, RegistryError> {
    let (q, key) = if let Some(card_no) = &lookup.card_no {
        (Query::ByCardNo, card_no.as_str())
    } else if let Some(pan) = &lookup.pan {
        (Query::ByPan, pan.as_str())
    } else if let Some(ssn) = &lookup.ssn {
        (Query::BySsn, ssn.expose())
    } else {
        return Ok(Resolution::refused(Outcome::Unknown, None, None));
    };
    let by_card = lookup.card_no.is_some() || lookup.pan.is_some();
    let mut row = src.row(q, key).await?;
    if row.as_ref().is_none_or(|r| r.derived.is_none()) {
        // No derived row: a person added outside cardlink (and not yet
        // repaired), or nobody. Compute it from its definition.
        let owner = match &row {
            Some(r) => r.owner.clone(),
            None if by_card => String::new(),
            None => key.to_string(),
        };
        if !owner.is_empty() {
            let computed = src.row(Query::FromView, &owner).await?;
            row = match (row, computed) {
                (Some(card), Some(view)) if by_card => Some(Row {
                    derived: view.derived,
                    ..card
                }),
                (_, view) => view,
            };
        }
    }
    let Some(mut row) = row else {
        return Ok(Resolution::refused(Outcome::Unknown, None, None));
    };
    let Some(d) = row.derived else {
        return Ok(Resolution::refused(Outcome::Unknown, None, None));
    };
    if !by_card && d.cards > 1 && !row.card.as_ref().is_none_or(|c| c.usable(today)) {
        // By SSN the derived row holds the first card in (active,
        // generation, issue) order; when that one is usable today it is
        // the best card. Otherwise another, older card may be usable.
        row.card = src.best_card(&d.ssn, today).await?;
    }
    let person = PersonInfo {
        ssn: stored_ssn(&d.ssn)?,
        name: d.name,
        sex: d.sex,
        insurance_type: d.insurance_type,
        insurance_status: d.insurance_status,
    };
    if let Some(read) = &lookup.ssn {
        if *read != person.ssn {
            return Ok(Resolution::refused(Outcome::Mismatch, None, row.card));
        }
    }
    let Some(card_row) = row.card else {
        return Ok(Resolution::refused(Outcome::NoCard, Some(person), None));
    };
    let outcome = match card_row.status.as_str() {
        "active" => match parse_iso(&card_row.expires) {
            Some(exp) if exp < today => Outcome::Expired,
            Some(_) => Outcome::Ok,
            None => {
                return Err(RegistryError::Corrupt(format!(
                    "card expiry '{}' is not a date",
                    card_row.expires
                )))
            }
        },
        "lost" => Outcome::Lost,
        "frozen" => Outcome::Frozen,
        "cancelled" => Outcome::Cancelled,
        other => return Err(RegistryError::Corrupt(format!("card status '{other}'"))),
    };
    if outcome != Outcome::Ok {
        return Ok(Resolution::refused(outcome, Some(person), Some(card_row)));
    }
    let members = parse_members(&d.members)?;
    let self_payer = || Payer {
        ssn: person.ssn,
        name: person.name.clone(),
        relation: None,
        balance_fen: d.own_balance,
    };
    let payer = match d.payer {
        Some((ssn, name, relation, balance_fen)) => Some(Payer {
            ssn: stored_ssn(&ssn)?,
            name,
            relation: Some(relation),
            balance_fen,
        }),
        None => None,
    };
    // A person covered by someone and covering others shows both sides.
    let (role, payer) = match (members.is_empty(), payer) {
        (false, Some(p)) => (Role::Both, p),
        (false, None) => (Role::Holder, self_payer()),
        (true, Some(p)) => (Role::Member, p),
        (true, None) => (Role::None, self_payer()),
    };
    Ok(Resolution {
        outcome,
        person: Some(person),
        card_no: Some(card_row.card_no),
        card_status: Some(card_row.status),
        role,
        payer: Some(payer),
        members,
    })
}

impl Sqlite {
    /// Resolves a card read or a typed identifier, judging expiry against `today`.
    pub fn resolve_on(&self, lookup: &Lookup, today: Date) -> Result<Resolution, RegistryError> {
        futures::executor::block_on(resolve_with(&SqliteSource(self), lookup, today))
    }

    /// Members currently covered by `holder`'s account.
    pub fn members(&self, holder: &Ssn) -> Result<Vec<Member>, RegistryError> {
        let json: Option<String> = self
            .conn
            .prepare_cached(MEMBERS_SQL)
            .map_err(|e| self.sql(e))?
            .query_row([holder.expose()], |r| r.get(0))
            .map_err(|e| self.sql(e))?;
        json.map_or(Ok(Vec::new()), |j| parse_members(&j))
    }

    /// The person's payment records of the last `months` months that have
    /// records, newest first.
    pub fn contributions(
        &self,
        ssn: &Ssn,
        months: u32,
    ) -> Result<Vec<Contribution>, RegistryError> {
        let mut st = self
            .conn
            .prepare_cached(CONTRIBUTIONS_SQL)
            .map_err(|e| self.sql(e))?;
        let rows = st
            .query_map(params![ssn.expose(), months], |r| {
                Ok(Contribution {
                    month: r.get(0)?,
                    employer: r.get(1)?,
                    base_fen: r.get(2)?,
                    employee_fen: r.get(3)?,
                    employer_fen: r.get(4)?,
                    account_fen: r.get(5)?,
                })
            })
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.sql(e))
    }
}
