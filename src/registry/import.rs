//! Bulk CSV import (all-or-nothing) and the row types shared with `gen-demo`.
//!
//! Files are recognised by name: `persons.csv`, `cards.csv`, `links.csv`,
//! `accounts.csv`, `contributions.csv`, each with a header row naming the
//! columns of the matching record type below. They are loaded in dependency
//! order in one transaction; every row is validated (SSNs included) and
//! every bad row is reported as `file:line: reason`. If any row is bad,
//! nothing is imported.

use std::path::{Path, PathBuf};

use firmware_protocol::{Date, Ssn};
use rusqlite::{params, Connection, TransactionBehavior};
use serde::{Deserialize, Serialize};

use super::audit::{append, Entry};
use super::derived::Touched;
use super::{parse_iso, RegistryError, Sqlite};

/// A row of `persons.csv`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PersonRec {
    /// SSN.
    pub ssn: String,
    /// Name.
    pub name: String,
    /// `M` or `F`.
    pub sex: String,
    /// `YYYY-MM-DD`.
    pub birth_date: String,
    /// `employee`, `resident` or `none`.
    pub insurance_type: String,
    /// `active`, `suspended` or `ended`.
    pub insurance_status: String,
    /// Insured region (统筹区 code, 6 digits), for the scope of family
    /// mutual aid; optional column (empty: unknown).
    #[serde(default, deserialize_with = "empty_is_none")]
    pub region: Option<String>,
}

fn empty_is_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    Ok(s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()))
}

/// A row of `cards.csv`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CardRec {
    /// Card number (9 characters).
    pub card_no: String,
    /// Bank PAN, may be empty.
    pub pan: Option<String>,
    /// Owner SSN.
    pub ssn: String,
    /// Card generation (1, 2, 3).
    pub generation: u8,
    /// `YYYY-MM-DD`.
    pub issued: String,
    /// `YYYY-MM-DD`.
    pub expires: String,
    /// `active`, `lost`, `frozen` or `cancelled`.
    pub status: String,
}

/// A row of `links.csv`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkRec {
    /// Account holder SSN.
    pub holder_ssn: String,
    /// Member SSN.
    pub member_ssn: String,
    /// Relation.
    pub relation: String,
    /// `active` or `revoked`.
    pub status: String,
    /// `window`, `hospital`, `kiosk` or `import`.
    pub channel: String,
    /// Operator.
    pub operator: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, may be empty.
    pub revoked_at: Option<String>,
}

/// A row of `accounts.csv`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountRec {
    /// Holder SSN.
    pub holder_ssn: String,
    /// Balance, fen.
    pub balance_fen: i64,
}

/// A row of `contributions.csv`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContributionRec {
    /// SSN.
    pub ssn: String,
    /// `YYYY-MM`.
    pub month: String,
    /// Employer.
    pub employer: String,
    /// Base, fen.
    pub base_fen: i64,
    /// Employee part, fen.
    pub employee_fen: i64,
    /// Employer part, fen.
    pub employer_fen: i64,
    /// Credited to the personal account, fen.
    pub account_fen: i64,
}

fn ssn_ok(field: &str, s: &str, today: Date) -> Result<Ssn, String> {
    Ssn::parse_on(s.as_bytes(), today).map_err(|e| format!("{field}: {e}"))
}

fn one_of(field: &str, v: &str, allowed: &[&str]) -> Result<(), String> {
    if allowed.contains(&v) {
        Ok(())
    } else {
        Err(format!(
            "{field}: '{v}' is not one of {}",
            allowed.join(", ")
        ))
    }
}

fn date_ok(field: &str, v: &str) -> Result<Date, String> {
    parse_iso(v).ok_or_else(|| format!("{field}: '{v}' is not a YYYY-MM-DD date"))
}

fn text_ok(field: &str, v: &str, max: usize) -> Result<(), String> {
    if v.trim().is_empty() || v.chars().count() > max || v.chars().any(char::is_control) {
        Err(format!(
            "{field}: empty, longer than {max} or has control characters"
        ))
    } else {
        Ok(())
    }
}

fn fen_ok(field: &str, v: i64) -> Result<(), String> {
    if v < 0 {
        Err(format!("{field}: negative amount"))
    } else {
        Ok(())
    }
}

impl PersonRec {
    /// Checks every field.
    pub fn validate(&self, today: Date) -> Result<(), String> {
        let ssn = ssn_ok("ssn", &self.ssn, today)?;
        text_ok("name", &self.name, 64)?;
        one_of("sex", &self.sex, &["M", "F"])?;
        // GB 11643: the 17th character's parity is the sex (odd: male).
        let in_ssn = if ssn.is_male() { "M" } else { "F" };
        if self.sex != in_ssn {
            return Err(format!(
                "sex: {} does not match the sex in the SSN ({in_ssn})",
                self.sex
            ));
        }
        let born = date_ok("birth_date", &self.birth_date)?;
        // GB 11643: characters 7 to 14 of the number are the birth date.
        let in_ssn = self
            .ssn
            .get(6..14)
            .and_then(|d| Date::parse_yyyymmdd(d.as_bytes()));
        if in_ssn != Some(born) {
            return Err(format!(
                "birth_date: {} does not match the birth date in the SSN ({})",
                self.birth_date,
                in_ssn.map_or("unreadable".into(), |d| d.to_string())
            ));
        }
        one_of(
            "insurance_type",
            &self.insurance_type,
            &["employee", "resident", "none"],
        )?;
        one_of(
            "insurance_status",
            &self.insurance_status,
            &["active", "suspended", "ended"],
        )?;
        if let Some(r) = &self.region {
            if r.len() != 6 || !r.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!(
                    "region: '{r}' is not a 6-digit insured-region code"
                ));
            }
            let province = r.get(..2).and_then(|p| p.parse::<u8>().ok());
            if !province.is_some_and(|p| firmware_protocol::ssn::PROVINCES.contains(&p)) {
                return Err(format!(
                    "region: '{r}': {} is not a province code (GB/T 2260)",
                    &r[..2]
                ));
            }
        }
        Ok(())
    }
}

impl CardRec {
    /// Checks every field.
    pub fn validate(&self, today: Date) -> Result<(), String> {
        let c = self.card_no.as_bytes();
        if c.len() != 9
            || !c
                .iter()
                .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
        {
            return Err(format!(
                "card_no: '{}' is not 9 upper-case letters or digits",
                self.card_no
            ));
        }
        if let Some(pan) = self.pan.as_deref().filter(|p| !p.is_empty()) {
            if !(12..=19).contains(&pan.len())
                || !firmware_protocol::magstripe::luhn_ok(pan.as_bytes())
            {
                return Err("pan: not a 12 to 19 digit number passing the Luhn check".into());
            }
        }
        ssn_ok("ssn", &self.ssn, today)?;
        if !(1..=9).contains(&self.generation) {
            return Err("generation: must be 1 to 9".into());
        }
        let issued = date_ok("issued", &self.issued)?;
        let expires = date_ok("expires", &self.expires)?;
        if expires < issued {
            return Err("expires: before issued".into());
        }
        one_of(
            "status",
            &self.status,
            &["active", "lost", "frozen", "cancelled"],
        )
    }
}

impl LinkRec {
    /// Checks every field.
    pub fn validate(&self, today: Date) -> Result<(), String> {
        ssn_ok("holder_ssn", &self.holder_ssn, today)?;
        ssn_ok("member_ssn", &self.member_ssn, today)?;
        if self.holder_ssn.eq_ignore_ascii_case(&self.member_ssn) {
            return Err("holder and member are the same person".into());
        }
        if super::Relation::parse(&self.relation).is_none() {
            return Err(format!(
                "relation: '{}' is not one of {}",
                self.relation,
                super::Relation::ALL.map(|r| r.as_str()).join(", ")
            ));
        }
        one_of("status", &self.status, &["active", "revoked"])?;
        one_of(
            "channel",
            &self.channel,
            &["window", "hospital", "kiosk", "import"],
        )?;
        text_ok("operator", &self.operator, 64)?;
        text_ok("created_at", &self.created_at, 40)
    }
}

impl AccountRec {
    /// Checks every field.
    pub fn validate(&self, today: Date) -> Result<(), String> {
        ssn_ok("holder_ssn", &self.holder_ssn, today)?;
        fen_ok("balance_fen", self.balance_fen)
    }
}

impl ContributionRec {
    /// Checks every field.
    pub fn validate(&self, today: Date) -> Result<(), String> {
        ssn_ok("ssn", &self.ssn, today)?;
        let m = self.month.as_bytes();
        let month_ok =
            m.len() == 7 && m[4] == b'-' && parse_iso(&format!("{}-01", self.month)).is_some();
        if !month_ok {
            return Err(format!("month: '{}' is not YYYY-MM", self.month));
        }
        text_ok("employer", &self.employer, 128)?;
        fen_ok("base_fen", self.base_fen)?;
        fen_ok("employee_fen", self.employee_fen)?;
        fen_ok("employer_fen", self.employer_fen)?;
        fen_ok("account_fen", self.account_fen)
    }
}

pub(crate) fn upper(s: &str) -> String {
    s.to_ascii_uppercase()
}

/// Writes validated records with prepared statements on one connection,
/// inside a transaction the caller owns. Used by import and `gen-demo`.
pub(crate) struct Inserter<'c> {
    conn: &'c Connection,
}

impl<'c> Inserter<'c> {
    pub(crate) fn new(conn: &'c Connection) -> Self {
        Inserter { conn }
    }
    pub(crate) fn person(&self, r: &PersonRec) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO persons (ssn, name, sex, birth_date, insurance_type, insurance_status, region) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                upper(&r.ssn),
                r.name,
                r.sex,
                r.birth_date,
                r.insurance_type,
                r.insurance_status,
                r.region
            ])
            .map(drop)
    }
    pub(crate) fn card(&self, r: &CardRec) -> rusqlite::Result<()> {
        let pan = r.pan.as_deref().filter(|p| !p.is_empty());
        self.conn
            .prepare_cached("INSERT INTO cards VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?
            .execute(params![
                r.card_no,
                pan,
                upper(&r.ssn),
                r.generation,
                r.issued,
                r.expires,
                r.status
            ])
            .map(drop)
    }
    pub(crate) fn link(&self, r: &LinkRec) -> rusqlite::Result<()> {
        let revoked = r.revoked_at.as_deref().filter(|p| !p.is_empty());
        self.conn
            .prepare_cached(
                "INSERT INTO family_links (holder_ssn, member_ssn, relation, status, channel, operator, created_at, revoked_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                upper(&r.holder_ssn),
                upper(&r.member_ssn),
                r.relation,
                r.status,
                r.channel,
                r.operator,
                r.created_at,
                revoked
            ])
            .map(drop)
    }
    pub(crate) fn account(&self, r: &AccountRec) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached("INSERT INTO accounts VALUES (?1, ?2)")?
            .execute(params![upper(&r.holder_ssn), r.balance_fen])
            .map(drop)
    }
    pub(crate) fn contribution(&self, r: &ContributionRec) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached("INSERT INTO contributions VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?
            .execute(params![
                upper(&r.ssn),
                r.month,
                r.employer,
                r.base_fen,
                r.employee_fen,
                r.employer_fen,
                r.account_fen
            ])
            .map(drop)
    }
}

/// One rejected row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRow {
    /// File path as given.
    pub file: String,
    /// 1-based line number (the header is line 1).
    pub line: u64,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for BadRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.reason)
    }
}

/// Why an import did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Some rows are invalid; nothing was imported. Lists the first 1000
    /// bad rows (in file and line order) and counts them all.
    #[error("{total} bad row(s), nothing imported")]
    BadRows {
        /// The first bad rows.
        rows: Vec<BadRow>,
        /// All bad rows.
        total: u64,
    },
    /// A file name is not one of the known tables.
    #[error("{0}: unknown file; expected persons.csv, cards.csv, links.csv, accounts.csv or contributions.csv")]
    UnknownFile(String),
    /// A file could not be read.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: String,
        /// The cause.
        source: csv::Error,
    },
    /// The registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// Rows imported per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ImportCounts {
    /// Persons.
    pub persons: u64,
    /// Cards.
    pub cards: u64,
    /// Links.
    pub links: u64,
    /// Accounts.
    pub accounts: u64,
    /// Contributions.
    pub contributions: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Table {
    Persons,
    Cards,
    Accounts,
    Links,
    Contributions,
}

/// The files in dependency order (persons first), each with its table.
pub(crate) fn in_order(files: &[PathBuf]) -> Result<Vec<(Table, &PathBuf)>, ImportError> {
    let mut sorted = Vec::new();
    for f in files {
        let t = table_of(f).ok_or_else(|| ImportError::UnknownFile(f.display().to_string()))?;
        sorted.push((t, f));
    }
    sorted.sort_by_key(|(t, _)| *t);
    Ok(sorted)
}

pub(crate) fn table_of(path: &Path) -> Option<Table> {
    match path.file_stem()?.to_str()? {
        "persons" => Some(Table::Persons),
        "cards" => Some(Table::Cards),
        "links" => Some(Table::Links),
        "accounts" => Some(Table::Accounts),
        "contributions" => Some(Table::Contributions),
        _ => None,
    }
}

/// The columns of each file (the header row must name them).
pub(crate) const PERSON_COLUMNS: &[&str] = &[
    "ssn",
    "name",
    "sex",
    "birth_date",
    "insurance_type",
    "insurance_status",
];
pub(crate) const CARD_COLUMNS: &[&str] = &[
    "card_no",
    "pan",
    "ssn",
    "generation",
    "issued",
    "expires",
    "status",
];
pub(crate) const LINK_COLUMNS: &[&str] = &[
    "holder_ssn",
    "member_ssn",
    "relation",
    "status",
    "channel",
    "operator",
    "created_at",
    "revoked_at",
];
pub(crate) const ACCOUNT_COLUMNS: &[&str] = &["holder_ssn", "balance_fen"];
pub(crate) const CONTRIBUTION_COLUMNS: &[&str] = &[
    "ssn",
    "month",
    "employer",
    "base_fen",
    "employee_fen",
    "employer_fen",
    "account_fen",
];

/// Most bad rows listed; beyond that only the count grows.
const MAX_REPORTED: usize = 1000;

/// Rows validated, sorted by key and inserted together. Inserting in key
/// order keeps consecutive inserts on neighbouring B-tree pages, which is
/// several times faster than file order once the tables outgrow the page
/// cache; the batch bounds the memory this costs.
const BATCH: usize = 256 * 1024;

/// Bad rows found so far.
#[derive(Default)]
pub(crate) struct Bad {
    pub(crate) rows: Vec<BadRow>,
    pub(crate) total: u64,
}

impl Bad {
    /// The import's error when any row was bad (sorted by file and line).
    pub(crate) fn into_error(self) -> Option<ImportError> {
        if self.total == 0 {
            return None;
        }
        let mut rows = self.rows;
        rows.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        Some(ImportError::BadRows {
            rows,
            total: self.total,
        })
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn load<T, V, K, I>(
    path: &Path,
    columns: &[&str],
    today: Date,
    bad: &mut Bad,
    validate: V,
    key: K,
    insert: I,
) -> Result<u64, ImportError>
where
    T: for<'de> Deserialize<'de>,
    V: Fn(&T, Date) -> Result<(), String>,
    K: Fn(&T) -> &str,
    I: Fn(u64, &T) -> Result<(), Refused>,
{
    let file = path.display().to_string();
    let io = |source| ImportError::Io {
        file: file.clone(),
        source,
    };
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .map_err(io)?;
    let headers = rdr.headers().map_err(io)?.clone();
    // A header row is required: without it the first data row would be
    // taken for one and every row would then fail on a "missing field".
    if headers.is_empty() {
        push(
            bad,
            &file,
            1,
            format!("empty file; expected a header row: {}", columns.join(",")),
        );
        return Ok(0);
    }
    let missing: Vec<&str> = columns
        .iter()
        .copied()
        .filter(|c| !headers.iter().any(|h| h.trim() == *c))
        .collect();
    if !missing.is_empty() {
        push(
            bad,
            &file,
            1,
            format!(
                "no header row with the columns {} (missing {}); the first line must name the columns",
                columns.join(","),
                missing.join(",")
            ),
        );
        return Ok(0);
    }
    let mut n = 0;
    let mut raw = csv::StringRecord::new();
    let mut batch: Vec<(u64, T)> = Vec::new();
    let mut flush = |batch: &mut Vec<(u64, T)>, bad: &mut Bad| {
        // Unstable on (key, line) orders like a stable sort by key, with
        // fewer moves of the records.
        batch.sort_unstable_by(|a, b| key(&a.1).cmp(key(&b.1)).then(a.0.cmp(&b.0)));
        for (line, rec) in batch.drain(..) {
            match insert(line, &rec) {
                Ok(()) => n += 1,
                Err(Refused::Db(why)) => push(bad, &file, line, why),
                Err(Refused::Rule(why)) => push(bad, &file, line, why.into()),
            }
        }
    };
    let mut line = 1u64;
    loop {
        line += 1;
        match rdr.read_record(&mut raw) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                // A UTF-8 or structural error: report it, go on with the next row.
                push(bad, &file, line, format!("unreadable row: {e}"));
                continue;
            }
        }
        if let Some(pos) = raw.position() {
            line = pos.line();
        }
        let rec: T = match raw.deserialize(Some(&headers)) {
            Ok(r) => r,
            Err(e) => {
                push(bad, &file, line, format!("{e}"));
                continue;
            }
        };
        if let Err(reason) = validate(&rec, today) {
            push(bad, &file, line, reason);
            continue;
        }
        batch.push((line, rec));
        if batch.len() >= BATCH {
            flush(&mut batch, bad);
        }
    }
    flush(&mut batch, bad);
    Ok(n)
}

/// Why a validated row could not be inserted.
pub(crate) enum Refused {
    /// The database refused it (keys, constraints): the reason.
    Db(String),
    /// A rule across rows refused it.
    Rule(&'static str),
}

impl From<rusqlite::Error> for Refused {
    fn from(e: rusqlite::Error) -> Self {
        Refused::Db(db_reason(&e))
    }
}

pub(crate) fn push(bad: &mut Bad, file: &str, line: u64, reason: String) {
    bad.total += 1;
    if bad.rows.len() < MAX_REPORTED {
        bad.rows.push(BadRow {
            file: file.to_string(),
            line,
            reason,
        });
    }
}

fn db_reason(e: &rusqlite::Error) -> String {
    let msg = e.to_string();
    if msg.contains("FOREIGN KEY") {
        "refers to a person that is not in the registry or in persons.csv".into()
    } else if msg.contains("UNIQUE") && msg.contains("member_ssn") {
        "member already has another active payer".into()
    } else if msg.contains("UNIQUE") || msg.contains("PRIMARY KEY") {
        format!("duplicate key ({msg})")
    } else {
        msg
    }
}

impl Sqlite {
    /// Imports CSV files all-or-nothing; see the module docs.
    pub fn import(&mut self, files: &[PathBuf], actor: &str) -> Result<ImportCounts, ImportError> {
        let sorted = in_order(files)?;
        let today = Date::today_cst();
        let timeout = self.busy_timeout;
        let sql = |e| ImportError::Registry(RegistryError::from_sql(e, timeout));
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
        let ins = Inserter::new(&tx);
        // The read model: the persons the rows touch are noted as they go
        // in and refreshed with their neighbours at the end; into an empty
        // registry, or past 200,000 noted rows, it is rebuilt set-based
        // instead (one pass in key order costs less per row than refreshing
        // that many persons one by one).
        let empty: bool = tx
            .query_row("SELECT NOT EXISTS (SELECT 1 FROM persons)", [], |r| {
                r.get(0)
            })
            .map_err(sql)?;
        let touched = if empty {
            None
        } else {
            Some(Touched::new(&tx, 200_000).map_err(sql)?)
        };
        let touch = |ssn: &str| -> Result<(), Refused> {
            if let Some(t) = &touched {
                t.add(&upper(ssn))?;
            }
            Ok(())
        };
        let mut counts = ImportCounts::default();
        let mut bad = Bad::default();
        for (t, f) in sorted {
            match t {
                Table::Persons => {
                    counts.persons += load(
                        f,
                        PERSON_COLUMNS,
                        today,
                        &mut bad,
                        PersonRec::validate,
                        |r: &PersonRec| r.ssn.as_str(),
                        |_, r| {
                            ins.person(r)?;
                            touch(&r.ssn)
                        },
                    )?
                }
                Table::Cards => {
                    counts.cards += load(
                        f,
                        CARD_COLUMNS,
                        today,
                        &mut bad,
                        CardRec::validate,
                        |r: &CardRec| r.card_no.as_str(),
                        |_, r| {
                            ins.card(r)?;
                            touch(&r.ssn)
                        },
                    )?
                }
                Table::Accounts => {
                    counts.accounts += load(
                        f,
                        ACCOUNT_COLUMNS,
                        today,
                        &mut bad,
                        AccountRec::validate,
                        |r: &AccountRec| r.holder_ssn.as_str(),
                        |_, r| {
                            ins.account(r)?;
                            touch(&r.holder_ssn)
                        },
                    )?
                }
                Table::Links => {
                    counts.links += load(
                        f,
                        LINK_COLUMNS,
                        today,
                        &mut bad,
                        LinkRec::validate,
                        // File order: link ids (and so each holder's
                        // member list) keep the order of the file, which
                        // export writes in id order.
                        |_: &LinkRec| "",
                        |_, r| {
                            ins.link(r)?;
                            touch(&r.holder_ssn)?;
                            touch(&r.member_ssn)?;
                            let (h, m) = (upper(&r.holder_ssn), upper(&r.member_ssn));
                            let mut facts = super::bind::SqliteFacts { conn: &tx, timeout };
                            let mutual = r.status == "active"
                                && futures::executor::block_on(super::bind::covered_by(
                                    &mut facts, &h, &m,
                                ))
                                .map_err(|e| Refused::Db(e.to_string()))?;
                            if mutual {
                                return Err(Refused::Rule(
                                    "mutual link: the holder is covered by this member (directly or through other links)",
                                ));
                            }
                            Ok(())
                        },
                    )?
                }
                Table::Contributions => {
                    counts.contributions += load(
                        f,
                        CONTRIBUTION_COLUMNS,
                        today,
                        &mut bad,
                        ContributionRec::validate,
                        |r: &ContributionRec| r.ssn.as_str(),
                        |_, r| Ok(ins.contribution(r)?),
                    )?
                }
            }
        }
        if let Some(e) = bad.into_error() {
            tx.rollback().map_err(sql)?;
            return Err(e);
        }
        match touched {
            Some(t) => t.finish().map_err(sql)?,
            None => super::derived::rebuild(&tx).map_err(sql)?,
        };
        append(
            &tx,
            &Entry {
                actor,
                action: "import",
                ssn: None,
                outcome: &format!(
                    "ok persons={} cards={} links={} accounts={} contributions={}",
                    counts.persons,
                    counts.cards,
                    counts.links,
                    counts.accounts,
                    counts.contributions
                ),
            },
        )
        .map_err(sql)?;
        tx.commit().map_err(sql)?;
        Ok(counts)
    }
}

impl Sqlite {
    /// Writes every table as CSV files (the import format) into `dir`.
    pub fn export(&self, dir: &Path) -> Result<ImportCounts, ImportError> {
        let io = |file: &str| {
            let file = dir.join(file).display().to_string();
            move |source: csv::Error| ImportError::Io {
                file: file.clone(),
                source,
            }
        };
        std::fs::create_dir_all(dir).map_err(|e| io("")(e.into()))?;
        let mut counts = ImportCounts::default();
        macro_rules! dump {
            ($file:literal, $sql:literal, $count:ident, |$r:ident| $rec:expr) => {{
                let mut w = csv::Writer::from_path(dir.join($file)).map_err(io($file))?;
                let mut st = self
                    .conn
                    .prepare($sql)
                    .map_err(|e| ImportError::Registry(self.sql(e)))?;
                let mut rows = st
                    .query([])
                    .map_err(|e| ImportError::Registry(self.sql(e)))?;
                while let Some($r) = rows
                    .next()
                    .map_err(|e| ImportError::Registry(self.sql(e)))?
                {
                    let rec = (|| -> rusqlite::Result<_> { Ok($rec) })()
                        .map_err(|e| ImportError::Registry(self.sql(e)))?;
                    w.serialize(rec).map_err(io($file))?;
                    counts.$count += 1;
                }
                w.flush().map_err(|e| io($file)(e.into()))?;
            }};
        }
        dump!("persons.csv", "SELECT ssn, name, sex, birth_date, insurance_type, insurance_status, region FROM persons ORDER BY ssn", persons, |r| PersonRec {
            ssn: r.get(0)?, name: r.get(1)?, sex: r.get(2)?, birth_date: r.get(3)?, insurance_type: r.get(4)?, insurance_status: r.get(5)?, region: r.get(6)?,
        });
        dump!("cards.csv", "SELECT card_no, pan, ssn, generation, issued, expires, status FROM cards ORDER BY card_no", cards, |r| CardRec {
            card_no: r.get(0)?, pan: r.get(1)?, ssn: r.get(2)?, generation: r.get(3)?, issued: r.get(4)?, expires: r.get(5)?, status: r.get(6)?,
        });
        dump!(
            "accounts.csv",
            "SELECT holder_ssn, balance_fen FROM accounts ORDER BY holder_ssn",
            accounts,
            |r| AccountRec {
                holder_ssn: r.get(0)?,
                balance_fen: r.get(1)?,
            }
        );
        dump!("links.csv", "SELECT holder_ssn, member_ssn, relation, status, channel, operator, created_at, revoked_at FROM family_links ORDER BY id", links, |r| LinkRec {
            holder_ssn: r.get(0)?, member_ssn: r.get(1)?, relation: r.get(2)?, status: r.get(3)?, channel: r.get(4)?, operator: r.get(5)?, created_at: r.get(6)?, revoked_at: r.get(7)?,
        });
        dump!("contributions.csv", "SELECT ssn, month, employer, base_fen, employee_fen, employer_fen, account_fen FROM contributions ORDER BY ssn, month", contributions, |r| ContributionRec {
            ssn: r.get(0)?, month: r.get(1)?, employer: r.get(2)?, base_fen: r.get(3)?, employee_fen: r.get(4)?, employer_fen: r.get(5)?, account_fen: r.get(6)?,
        });
        Ok(counts)
    }
}
