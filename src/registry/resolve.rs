//! `resolve`: from a card identifier to the family-link picture.

use firmware_protocol::{Date, Ssn};
use rusqlite::params;

use super::error::RegistryError;
use super::sqlite::{parse_iso, Sqlite};

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
    timeout: std::time::Duration,
) -> Result<Option<CardRow>, RegistryError> {
    sqlite_opt(
        c,
        BEST_CARD,
        rusqlite::params![ssn, today.to_string()],
        timeout,
        |r| CardRow::read(r),
    )
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
pub const BY_CARD_NO: &str = concat!(
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
pub const BY_SSN: &str = concat!(
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
///
/// The futures are boxed and `Send` (the shape of `async-trait`), so that
/// the shared code runs in the daemon's tasks on PostgreSQL (with `async
/// fn` in traits, rustc cannot yet prove such generic futures `Send`);
/// SQLite answers at once with a ready future.
pub(crate) trait Source {
    /// One row of `q` for `key`.
    fn row<'a>(&'a self, q: Query, key: &'a str) -> Fut<'a, Option<Row>>;
    /// The person's best card (see [`best_card`]).
    fn best_card<'a>(&'a self, ssn: &'a str, today: Date) -> Fut<'a, Option<CardRow>>;
}

/// SQLite's answer, ready at once.
pub(crate) fn now<'a, T: Send + 'a>(r: Result<T, RegistryError>) -> Fut<'a, T> {
    Box::pin(std::future::ready(r))
}

/// The future of a registry question: boxed, `Send`.
pub(crate) type Fut<'a, T> = futures::future::BoxFuture<'a, Result<T, RegistryError>>;

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

pub(crate) struct SqliteSource<'a>(pub(crate) &'a Sqlite);

impl Source for SqliteSource<'_> {
    fn row<'a>(&'a self, q: Query, key: &'a str) -> Fut<'a, Option<Row>> {
        now(sqlite_opt(
            &self.0.conn,
            q.sql(),
            [key],
            self.0.busy_timeout,
            |r| Row::read(r),
        ))
    }
    fn best_card<'a>(&'a self, ssn: &'a str, today: Date) -> Fut<'a, Option<CardRow>> {
        now(best_card(&self.0.conn, ssn, today, self.0.busy_timeout))
    }
}

/// A row's columns by position, read fallibly: what each backend's row
/// type offers the one decoder of each record ([`Row::read`],
/// [`CardRow::read`], ...). A value of the wrong type is
/// [`RegistryError::Corrupt`], never a panic.
pub(crate) trait Columns {
    /// A text column that may be NULL.
    fn text(&self, i: usize) -> Result<Option<String>, RegistryError>;
    /// An integer column that may be NULL.
    fn int(&self, i: usize) -> Result<Option<i64>, RegistryError>;

    /// A text column that must not be NULL.
    fn req_text(&self, i: usize) -> Result<String, RegistryError> {
        self.text(i)?.ok_or_else(|| null_column(i))
    }
    /// An integer column that must not be NULL.
    fn req_int(&self, i: usize) -> Result<i64, RegistryError> {
        self.int(i)?.ok_or_else(|| null_column(i))
    }
}

fn null_column(i: usize) -> RegistryError {
    RegistryError::Corrupt(format!("column {i} is NULL where a value is required"))
}

/// The column error of either driver.
pub(crate) fn bad_column(i: usize, e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Corrupt(format!("column {i}: {e}"))
}

impl Columns for rusqlite::Row<'_> {
    fn text(&self, i: usize) -> Result<Option<String>, RegistryError> {
        self.get(i).map_err(|e| bad_column(i, e))
    }
    fn int(&self, i: usize) -> Result<Option<i64>, RegistryError> {
        self.get(i).map_err(|e| bad_column(i, e))
    }
}

impl Row {
    /// The one decoder of a resolve statement's row (both backends).
    pub(crate) fn read(r: &impl Columns) -> Result<Row, RegistryError> {
        let card = match r.text(0)? {
            Some(card_no) => Some(CardRow {
                card_no,
                status: r.req_text(1)?,
                expires: r.req_text(2)?,
            }),
            None => None,
        };
        let derived = match r.text(4)? {
            Some(ssn) => {
                let payer = match r.text(10)? {
                    Some(h) => Some((h, r.req_text(11)?, r.req_text(12)?, r.int(13)?)),
                    None => None,
                };
                Some(Derived {
                    ssn,
                    name: r.req_text(5)?,
                    sex: r.req_text(6)?,
                    insurance_type: r.req_text(7)?,
                    insurance_status: r.req_text(8)?,
                    own_balance: r.int(9)?,
                    payer,
                    members: r.req_text(14)?,
                    cards: r.req_int(15)?,
                })
            }
            None => None,
        };
        Ok(Row {
            card,
            owner: r.text(3)?.unwrap_or_default(),
            derived,
        })
    }
}

impl CardRow {
    /// The one decoder of a [`BEST_CARD`] row.
    pub(crate) fn read(r: &impl Columns) -> Result<CardRow, RegistryError> {
        Ok(CardRow {
            card_no: r.req_text(0)?,
            status: r.req_text(1)?,
            expires: r.req_text(2)?,
        })
    }
}

impl Contribution {
    /// The one decoder of a [`CONTRIBUTIONS_SQL`] row.
    pub(crate) fn read(r: &impl Columns) -> Result<Contribution, RegistryError> {
        Ok(Contribution {
            month: r.req_text(0)?,
            employer: r.req_text(1)?,
            base_fen: r.req_int(2)?,
            employee_fen: r.req_int(3)?,
            employer_fen: r.req_int(4)?,
            account_fen: r.req_int(5)?,
        })
    }
}

/// The first row of `sql` decoded by `read` (SQLite).
pub(crate) fn sqlite_opt<T>(
    c: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
    timeout: std::time::Duration,
    read: impl FnOnce(&rusqlite::Row<'_>) -> Result<T, RegistryError>,
) -> Result<Option<T>, RegistryError> {
    let sqlerr = |e| RegistryError::from_sql(e, timeout);
    let mut st = c.prepare_cached(sql).map_err(sqlerr)?;
    let mut rows = st.query(params).map_err(sqlerr)?;
    match rows.next().map_err(sqlerr)? {
        Some(r) => read(r).map(Some),
        None => Ok(None),
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
        let mut rows = st
            .query(params![ssn.expose(), months])
            .map_err(|e| self.sql(e))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(|e| self.sql(e))? {
            out.push(Contribution::read(r)?);
        }
        Ok(out)
    }
}
