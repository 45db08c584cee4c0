//! Bulk CSV import (all-or-nothing) and export, and the row types shared
//! with `gen-demo`.
//!
//! Files are recognised by name: `persons.csv`, `cards.csv`, `links.csv`,
//! `accounts.csv`, `contributions.csv`, each with a header row naming the
//! columns of the matching record type below. They are loaded in dependency
//! order in one transaction; every row is validated (SSNs included) and
//! every bad row is reported as `file:line: reason`. If any row is bad,
//! nothing is imported.
//!
//! Written once for both backends: each table is a [`Record`] (its header,
//! checks, write order and column values) and `load_files` is the loop;
//! a backend only says where rows go (`Dest`: SQLite inserts them here,
//! PostgreSQL `COPY`s them in `pg/import.rs`).

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use firmware_protocol::{Date, Ssn};
use rusqlite::types::{ToSql, ToSqlOutput, ValueRef};
use rusqlite::Connection;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::audit::Entry;
use super::derived::Touched;
use super::error::RegistryError;
use super::sqlite::{parse_iso, Sqlite};
use super::write::WriteTx;

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

pub(crate) fn upper(s: &str) -> String {
    s.to_ascii_uppercase()
}

/// A value of a row as the backends write it: SQLite binds it, PostgreSQL
/// `COPY`s it as a CSV field, export writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field<'a> {
    /// Text.
    Text(Cow<'a, str>),
    /// A whole number.
    Int(i64),
    /// No value (SQL `NULL`; an empty CSV field).
    Null,
}

impl Field<'_> {
    /// Writes the value as the next field of a CSV record (`NULL` empty).
    pub(crate) fn write_csv<W: std::io::Write>(&self, w: &mut csv::Writer<W>) -> csv::Result<()> {
        match self {
            Field::Text(s) => w.write_field(s.as_bytes()),
            Field::Int(i) => w.write_field(i.to_string()),
            Field::Null => w.write_field(""),
        }
    }
}

impl ToSql for Field<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Field::Text(s) => ValueRef::Text(s.as_bytes()),
            Field::Int(i) => ValueRef::Integer(*i),
            Field::Null => ValueRef::Null,
        }))
    }
}

impl<'a> From<ValueRef<'a>> for Field<'a> {
    fn from(v: ValueRef<'a>) -> Self {
        match v {
            ValueRef::Null => Field::Null,
            ValueRef::Integer(i) => Field::Int(i),
            ValueRef::Real(f) => Field::Text(f.to_string().into()),
            ValueRef::Text(b) | ValueRef::Blob(b) => Field::Text(String::from_utf8_lossy(b)),
        }
    }
}

fn text(s: &str) -> Field<'_> {
    Field::Text(Cow::Borrowed(s))
}

/// An SSN as stored: upper case (a trailing `x` is `X`).
fn ssn(s: &str) -> Field<'static> {
    Field::Text(Cow::Owned(upper(s)))
}

/// An optional column: absent or empty is `NULL`.
fn optional(s: &Option<String>) -> Field<'_> {
    s.as_deref()
        .filter(|s| !s.is_empty())
        .map_or(Field::Null, text)
}

/// One table of the import format, written once for every backend and
/// every use (import, `gen-demo`): its record type, the checks of one row,
/// the order rows are written in and the values of its columns. Where the
/// rows go is the backend's `Dest`.
pub trait Record: DeserializeOwned + Serialize {
    /// The table.
    const TABLE: Table;
    /// The columns the file's header row must name.
    const HEADER: &'static [&'static str] = Self::TABLE.columns();
    /// Checks every field.
    fn validate(&self, today: Date) -> Result<(), String>;
    /// Rows are written sorted by this key (with equal keys in file order);
    /// an empty key keeps the order of the file.
    fn key(&self) -> &str;
    /// The values of [`Table::columns`], in that order: SSNs upper case,
    /// empty optional values `NULL`.
    fn fields(&self) -> Vec<Field<'_>>;
    /// An active link's holder and member (checked for mutual links).
    fn active_link(&self) -> Option<(&str, &str)> {
        None
    }
}

impl Record for PersonRec {
    const TABLE: Table = Table::Persons;
    // `region` is optional in the file.
    const HEADER: &'static [&'static str] = &[
        "ssn",
        "name",
        "sex",
        "birth_date",
        "insurance_type",
        "insurance_status",
    ];
    fn validate(&self, today: Date) -> Result<(), String> {
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
    fn key(&self) -> &str {
        &self.ssn
    }
    fn fields(&self) -> Vec<Field<'_>> {
        vec![
            ssn(&self.ssn),
            text(&self.name),
            text(&self.sex),
            text(&self.birth_date),
            text(&self.insurance_type),
            text(&self.insurance_status),
            optional(&self.region),
        ]
    }
}

impl Record for CardRec {
    const TABLE: Table = Table::Cards;
    fn validate(&self, today: Date) -> Result<(), String> {
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
    fn key(&self) -> &str {
        &self.card_no
    }
    fn fields(&self) -> Vec<Field<'_>> {
        vec![
            text(&self.card_no),
            optional(&self.pan),
            ssn(&self.ssn),
            Field::Int(self.generation.into()),
            text(&self.issued),
            text(&self.expires),
            text(&self.status),
        ]
    }
}

impl Record for AccountRec {
    const TABLE: Table = Table::Accounts;
    fn validate(&self, today: Date) -> Result<(), String> {
        ssn_ok("holder_ssn", &self.holder_ssn, today)?;
        fen_ok("balance_fen", self.balance_fen)
    }
    fn key(&self) -> &str {
        &self.holder_ssn
    }
    fn fields(&self) -> Vec<Field<'_>> {
        vec![ssn(&self.holder_ssn), Field::Int(self.balance_fen)]
    }
}

impl Record for LinkRec {
    const TABLE: Table = Table::Links;
    fn validate(&self, today: Date) -> Result<(), String> {
        ssn_ok("holder_ssn", &self.holder_ssn, today)?;
        ssn_ok("member_ssn", &self.member_ssn, today)?;
        if self.holder_ssn.eq_ignore_ascii_case(&self.member_ssn) {
            return Err("holder and member are the same person".into());
        }
        if super::policy::Relation::parse(&self.relation).is_none() {
            return Err(format!(
                "relation: '{}' is not one of {}",
                self.relation,
                super::policy::Relation::ALL.map(|r| r.as_str()).join(", ")
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
    /// File order: link ids (and so each holder's member list) keep the
    /// order of the file, which export writes in id order.
    fn key(&self) -> &str {
        ""
    }
    fn fields(&self) -> Vec<Field<'_>> {
        vec![
            ssn(&self.holder_ssn),
            ssn(&self.member_ssn),
            text(&self.relation),
            text(&self.status),
            text(&self.channel),
            text(&self.operator),
            text(&self.created_at),
            optional(&self.revoked_at),
        ]
    }
    fn active_link(&self) -> Option<(&str, &str)> {
        (self.status == "active").then_some((&self.holder_ssn, &self.member_ssn))
    }
}

impl Record for ContributionRec {
    const TABLE: Table = Table::Contributions;
    fn validate(&self, today: Date) -> Result<(), String> {
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
    fn key(&self) -> &str {
        &self.ssn
    }
    fn fields(&self) -> Vec<Field<'_>> {
        vec![
            ssn(&self.ssn),
            text(&self.month),
            text(&self.employer),
            Field::Int(self.base_fen),
            Field::Int(self.employee_fen),
            Field::Int(self.employer_fen),
            Field::Int(self.account_fen),
        ]
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

impl ImportCounts {
    pub(crate) fn add(&mut self, t: Table, n: u64) {
        *match t {
            Table::Persons => &mut self.persons,
            Table::Cards => &mut self.cards,
            Table::Accounts => &mut self.accounts,
            Table::Links => &mut self.links,
            Table::Contributions => &mut self.contributions,
        } += n;
    }
}

/// The tables of the import format, in dependency order (persons first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Table {
    /// `persons.csv`.
    Persons,
    /// `cards.csv`.
    Cards,
    /// `accounts.csv`.
    Accounts,
    /// `links.csv` (table `family_links`).
    Links,
    /// `contributions.csv`.
    Contributions,
}

impl Table {
    /// Every table, in dependency order.
    pub const ALL: [Table; 5] = [
        Table::Persons,
        Table::Cards,
        Table::Accounts,
        Table::Links,
        Table::Contributions,
    ];

    /// The file's name.
    pub const fn file(self) -> &'static str {
        match self {
            Table::Persons => "persons.csv",
            Table::Cards => "cards.csv",
            Table::Accounts => "accounts.csv",
            Table::Links => "links.csv",
            Table::Contributions => "contributions.csv",
        }
    }

    /// The SQL table.
    pub const fn sql_name(self) -> &'static str {
        match self {
            Table::Links => "family_links",
            t => t.stem(),
        }
    }

    const fn stem(self) -> &'static str {
        match self {
            Table::Persons => "persons",
            Table::Cards => "cards",
            Table::Accounts => "accounts",
            Table::Links => "links",
            Table::Contributions => "contributions",
        }
    }

    /// The columns a row writes (and export reads), in order.
    pub const fn columns(self) -> &'static [&'static str] {
        match self {
            Table::Persons => &[
                "ssn",
                "name",
                "sex",
                "birth_date",
                "insurance_type",
                "insurance_status",
                "region",
            ],
            Table::Cards => &[
                "card_no",
                "pan",
                "ssn",
                "generation",
                "issued",
                "expires",
                "status",
            ],
            Table::Accounts => &["holder_ssn", "balance_fen"],
            Table::Links => &[
                "holder_ssn",
                "member_ssn",
                "relation",
                "status",
                "channel",
                "operator",
                "created_at",
                "revoked_at",
            ],
            Table::Contributions => &[
                "ssn",
                "month",
                "employer",
                "base_fen",
                "employee_fen",
                "employer_fen",
                "account_fen",
            ],
        }
    }

    /// The columns (of [`Table::columns`]) that name a person whose derived
    /// row a row of the table changes.
    pub(crate) const fn touched_columns(self) -> &'static [usize] {
        match self {
            Table::Persons | Table::Accounts => &[0],
            Table::Cards => &[2],
            Table::Links => &[0, 1],
            Table::Contributions => &[],
        }
    }

    /// The statement export reads the table with (the same on both
    /// backends), in key order (links in id order).
    pub(crate) fn export_select(self) -> String {
        let order = match self {
            Table::Persons => "ssn",
            Table::Cards => "card_no",
            Table::Accounts => "holder_ssn",
            Table::Links => "id",
            Table::Contributions => "ssn, month, employer",
        };
        format!(
            "SELECT {} FROM {} ORDER BY {order}",
            self.columns().join(", "),
            self.sql_name()
        )
    }
}

/// The files in dependency order (persons first), each with its table.
pub(crate) fn in_order(files: &[PathBuf]) -> Result<Vec<(Table, PathBuf)>, ImportError> {
    let mut sorted = Vec::new();
    for f in files {
        let t = table_of(f).ok_or_else(|| ImportError::UnknownFile(f.display().to_string()))?;
        sorted.push((t, f.clone()));
    }
    sorted.sort_by_key(|(t, _)| *t);
    Ok(sorted)
}

pub(crate) fn table_of(path: &Path) -> Option<Table> {
    let stem = path.file_stem()?.to_str()?;
    Table::ALL.into_iter().find(|t| t.stem() == stem)
}

/// Most bad rows listed; beyond that only the count grows.
const MAX_REPORTED: usize = 1000;

/// Rows validated, sorted by key and written together. Inserting in key
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

/// Where validated rows go: the one thing an import does differently on
/// each backend (SQLite inserts each row; PostgreSQL streams them to a
/// `COPY`).
pub(crate) trait Dest {
    /// A file of table `t` starts. `false`: the destination has failed
    /// (and reports why itself); stop.
    fn begin(&mut self, _t: Table) -> bool {
        true
    }
    /// Writes one row, read at `line`.
    fn row<R: Record>(&mut self, line: u64, r: &R) -> Result<(), Refused>;
    /// The file has ended. `false` as for [`Dest::begin`].
    fn end(&mut self, _t: Table) -> bool {
        true
    }
}

/// Reads, validates and writes to `dest` every file (in dependency order,
/// see [`in_order`]); returns the bad rows and the rows written.
pub(crate) fn load_files<D: Dest>(
    files: &[(Table, PathBuf)],
    today: Date,
    dest: &mut D,
) -> Result<(Bad, ImportCounts), ImportError> {
    let mut bad = Bad::default();
    let mut counts = ImportCounts::default();
    for (t, f) in files {
        if !dest.begin(*t) {
            break;
        }
        let n = match t {
            Table::Persons => load::<PersonRec, D>(f, today, &mut bad, dest)?,
            Table::Cards => load::<CardRec, D>(f, today, &mut bad, dest)?,
            Table::Accounts => load::<AccountRec, D>(f, today, &mut bad, dest)?,
            Table::Links => load::<LinkRec, D>(f, today, &mut bad, dest)?,
            Table::Contributions => load::<ContributionRec, D>(f, today, &mut bad, dest)?,
        };
        counts.add(*t, n);
        if !dest.end(*t) {
            break;
        }
    }
    Ok((bad, counts))
}

fn load<R: Record, D: Dest>(
    path: &Path,
    today: Date,
    bad: &mut Bad,
    dest: &mut D,
) -> Result<u64, ImportError> {
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
    let columns = R::HEADER;
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
    let mut batch: Vec<(u64, R)> = Vec::new();
    let mut flush = |batch: &mut Vec<(u64, R)>, bad: &mut Bad| {
        // Unstable on (key, line) orders like a stable sort by key, with
        // fewer moves of the records.
        batch.sort_unstable_by(|a, b| a.1.key().cmp(b.1.key()).then(a.0.cmp(&b.0)));
        for (line, rec) in batch.drain(..) {
            match dest.row(line, &rec) {
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
        let rec: R = match raw.deserialize(Some(&headers)) {
            Ok(r) => r,
            Err(e) => {
                push(bad, &file, line, format!("{e}"));
                continue;
            }
        };
        if let Err(reason) = rec.validate(today) {
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

/// Why a validated row could not be written.
pub(crate) enum Refused {
    /// The database refused it (keys, constraints): the reason.
    Db(String),
    /// A rule across rows refused it.
    Rule(&'static str),
}

/// The reason given for an active link whose holder its member covers.
pub(crate) const MUTUAL_LINK: &str =
    "mutual link: the holder is covered by this member (directly or through other links)";

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

/// The audit row of a bulk load.
pub(crate) struct LoadAudit {
    pub(crate) actor: String,
    pub(crate) action: &'static str,
    pub(crate) outcome: String,
}

impl LoadAudit {
    pub(crate) fn entry(&self) -> Entry<'_> {
        Entry {
            actor: &self.actor,
            action: self.action,
            ssn: None,
            outcome: &self.outcome,
        }
    }
}

/// The audit row of a bulk load, from what it loaded.
pub(crate) type AuditRow<'a> = &'a dyn Fn(&ImportCounts) -> LoadAudit;

/// A bulk load as a backend receives it: the files in dependency order,
/// the day rows are checked on and the audit row to write.
pub(crate) struct Load<'a> {
    pub(crate) files: Vec<(Table, PathBuf)>,
    pub(crate) today: Date,
    pub(crate) audit: AuditRow<'a>,
}

impl<'a> Load<'a> {
    /// Refuses a file that is not one of the five tables.
    pub(crate) fn new(files: &[PathBuf], audit: AuditRow<'a>) -> Result<Self, ImportError> {
        Ok(Load {
            files: in_order(files)?,
            today: Date::today_cst(),
            audit,
        })
    }
}

/// The audit row of `import` by `actor`.
pub(crate) fn import_audit(actor: &str) -> impl Fn(&ImportCounts) -> LoadAudit + '_ {
    move |c| LoadAudit {
        actor: actor.to_string(),
        action: "import",
        outcome: format!(
            "ok persons={} cards={} links={} accounts={} contributions={}",
            c.persons, c.cards, c.links, c.accounts, c.contributions
        ),
    }
}

/// SQLite's [`Dest`]: each row inserted at once, in the import's
/// transaction; the persons it touches noted for the read model; an active
/// link checked for a cycle through the links already in.
struct SqliteRows<'c> {
    conn: &'c Connection,
    timeout: Duration,
    touched: Option<Touched<'c>>,
    insert: String,
}

impl Dest for SqliteRows<'_> {
    fn begin(&mut self, t: Table) -> bool {
        let cols = t.columns();
        let marks: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
        self.insert = format!(
            "INSERT INTO {} ({}) VALUES ({})",
            t.sql_name(),
            cols.join(", "),
            marks.join(", ")
        );
        true
    }

    fn row<R: Record>(&mut self, _line: u64, r: &R) -> Result<(), Refused> {
        let fields = r.fields();
        self.conn
            .prepare_cached(&self.insert)?
            .execute(rusqlite::params_from_iter(&fields))?;
        if let Some(t) = &self.touched {
            for &i in R::TABLE.touched_columns() {
                if let Some(Field::Text(ssn)) = fields.get(i) {
                    t.add(ssn)?;
                }
            }
        }
        if let Some((h, m)) = r.active_link() {
            let (h, m) = (upper(h), upper(m));
            let mut facts = super::bind::SqliteFacts {
                conn: self.conn,
                timeout: self.timeout,
            };
            let mutual = futures::executor::block_on(super::bind::covered_by(&mut facts, &h, &m))
                .map_err(|e| Refused::Db(e.to_string()))?;
            if mutual {
                return Err(Refused::Rule(MUTUAL_LINK));
            }
        }
        Ok(())
    }
}

/// The page cache (KiB) a SQLite import has at least, for its duration:
/// a 200,000-person registry with a year of payment records (230 MB)
/// loses fewer pages to the cache's turnover while its indexes are built.
/// For an encrypted registry each page that leaves the cache is encrypted
/// and authenticated on the way out and checked and decrypted when read
/// back (SQLCipher design, <https://www.zetetic.net/sqlcipher/design/>),
/// so this matters most there (docs/benchmarks.md, 2026-12-01). SQLite
/// takes the memory only as pages are used, and gives it back when the
/// setting is restored after the import.
pub const IMPORT_CACHE_KIB: i64 = 256 * 1024;

impl Sqlite {
    /// Runs a bulk load in one write transaction (`BEGIN IMMEDIATE`, the
    /// write seam's): all or nothing (see the module docs), with a page
    /// cache of at least [`IMPORT_CACHE_KIB`], the connection's own
    /// setting restored afterwards.
    pub(crate) fn bulk_load(&mut self, load: &Load<'_>) -> Result<ImportCounts, ImportError> {
        let sql = |e| ImportError::Registry(RegistryError::from_sql(e, self.busy_timeout));
        let before: i64 = self
            .conn
            .query_row("PRAGMA cache_size", [], |r| r.get(0))
            .map_err(sql)?;
        // Negative: KiB, as `OpenOptions::cache_kib` sets it; positive: a
        // number of pages someone chose, left as it is (SQLite, "PRAGMA
        // cache_size").
        if before >= 0 || -before >= IMPORT_CACHE_KIB {
            return self.bulk_load_tx(load);
        }
        self.conn
            .pragma_update(None, "cache_size", -IMPORT_CACHE_KIB)
            .map_err(sql)?;
        let done = self.bulk_load_tx(load);
        let restored = self.conn.pragma_update(None, "cache_size", before);
        let counts = done?;
        restored.map_err(|e| ImportError::Registry(self.sql(e)))?;
        Ok(counts)
    }

    fn bulk_load_tx(&mut self, load: &Load<'_>) -> Result<ImportCounts, ImportError> {
        let timeout = self.busy_timeout;
        let sql = |e| ImportError::Registry(RegistryError::from_sql(e, timeout));
        // Rolled back when dropped uncommitted (bad rows, any error).
        let mut tx = self.write_tx()?;
        let conn = tx.conn();
        // The read model: the persons the rows touch are noted as they go
        // in and refreshed with their neighbours at the end; into an empty
        // registry, or past 200,000 noted rows, it is rebuilt set-based
        // instead (one pass in key order costs less per row than refreshing
        // that many persons one by one).
        let empty: bool = conn
            .query_row("SELECT NOT EXISTS (SELECT 1 FROM persons)", [], |r| {
                r.get(0)
            })
            .map_err(sql)?;
        let touched = if empty {
            None
        } else {
            Some(Touched::new(conn, 200_000).map_err(sql)?)
        };
        let mut rows = SqliteRows {
            conn,
            timeout,
            touched,
            insert: String::new(),
        };
        let (bad, counts) = load_files(&load.files, load.today, &mut rows)?;
        if let Some(e) = bad.into_error() {
            return Err(e);
        }
        match rows.touched {
            Some(t) => t.finish().map_err(sql)?,
            None => super::derived::rebuild(conn).map_err(sql)?,
        };
        let entry = (load.audit)(&counts);
        futures::executor::block_on(async {
            tx.append(&entry.entry()).await?;
            tx.commit().await
        })?;
        Ok(counts)
    }

    /// Writes every table as CSV files (the import format) into `dir`.
    pub fn export(&self, dir: &Path) -> Result<ImportCounts, ImportError> {
        let io = |path: &Path, source: csv::Error| ImportError::Io {
            file: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e.into()))?;
        let db = |e| ImportError::Registry(self.sql(e));
        let mut counts = ImportCounts::default();
        for t in Table::ALL {
            let path = dir.join(t.file());
            let mut w = csv::Writer::from_writer(
                super::files::private_file(&path).map_err(|e| io(&path, e.into()))?,
            );
            w.write_record(t.columns()).map_err(|e| io(&path, e))?;
            let mut st = self.conn.prepare(&t.export_select()).map_err(db)?;
            let mut rows = st.query([]).map_err(db)?;
            let mut n = 0;
            while let Some(r) = rows.next().map_err(db)? {
                for i in 0..t.columns().len() {
                    Field::from(r.get_ref(i).map_err(db)?)
                        .write_csv(&mut w)
                        .map_err(|e| io(&path, e))?;
                }
                w.write_record(None::<&[u8]>).map_err(|e| io(&path, e))?;
                n += 1;
            }
            w.flush().map_err(|e| io(&path, e.into()))?;
            counts.add(t, n);
        }
        Ok(counts)
    }
}
