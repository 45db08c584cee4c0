//! `gen-demo`: a deterministic synthetic registry for demos and benchmarks.
//!
//! Persons get valid, unique SSNs (a bijection from the row index onto
//! region × birth date × sequence number), names from common Chinese
//! surnames and given names, and insurance; they are grouped into
//! households whose first person is an employee account holder covering
//! some of the others (relation chosen from the birth dates). About 94 % of
//! cards are active, the rest lost, frozen, cancelled or expired. Employees
//! get an account balance and `months` months of payment records.
//! The same seed always gives the same registry.

use std::path::{Path, PathBuf};

use firmware_protocol::ssn::check_char;
use firmware_protocol::Date;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::error::RegistryError;
use super::files::private_file;
use super::import::{AccountRec, CardRec, ContributionRec, LinkRec, PersonRec, Record, Table};
use super::sqlite::Sqlite;

/// Options of the generator.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Number of persons.
    pub persons: u64,
    /// Months of payment records per employee.
    pub months: u32,
    /// RNG seed.
    pub seed: u64,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            persons: 5000,
            months: 12,
            seed: 20261125,
        }
    }
}

/// Receives generated rows.
pub trait Sink {
    /// Error type.
    type Error;
    /// A row of any table.
    fn row<R: Record>(&mut self, r: &R) -> Result<(), Self::Error>;
}

const REGIONS: [&str; 16] = [
    "110105", "110108", "310104", "310115", "330102", "330106", "440305", "440106", "510107",
    "420111", "320106", "370102", "610113", "500103", "350203", "120101",
];
const FIRST_DAY: i64 = -10_957; // 1940-01-01
const DAYS: u64 = 29_585; // through 2020-12-31
const CAPACITY: u64 = REGIONS.len() as u64 * DAYS * 1000;
/// Knuth's multiplicative prime; coprime to CAPACITY, so i ↦ i·P mod CAPACITY is a bijection.
const SCRAMBLE: u64 = 2_654_435_761;

const SURNAMES: [&str; 24] = [
    "王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙", "马", "朱", "胡", "郭",
    "何", "高", "林", "罗", "郑", "梁", "谢", "欧阳",
];
const GIVEN: [&str; 24] = [
    "伟", "芳", "娜", "秀英", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟",
    "涛", "明", "超", "秀兰", "霞", "平", "刚", "桂英", "建华",
];
const EMPLOYERS: [&str; 6] = [
    "杭州西湖科技有限公司",
    "上海浦江物流有限公司",
    "北京海淀软件股份有限公司",
    "广州天河贸易有限公司",
    "成都锦江医疗器械有限公司",
    "深圳南山电子有限公司",
];

/// The SSN of demo person `i` (i < about 473 million).
pub fn demo_ssn(i: u64) -> String {
    let k = (i % CAPACITY) * (SCRAMBLE % CAPACITY) % CAPACITY;
    let seq = k % 1000;
    let day = (k / 1000) % DAYS;
    let region = REGIONS[(k / 1000 / DAYS) as usize];
    let born = Date::from_days_since_epoch(FIRST_DAY + day as i64).unwrap_or(Date::EPOCH);
    let mut s = format!(
        "{region}{:04}{:02}{:02}{seq:03}",
        born.year(),
        born.month(),
        born.day()
    );
    let c = check_char(s.as_bytes()).unwrap_or(b'0');
    s.push(c as char);
    s
}

/// The card number of demo person `i`: a letter and 8 scrambled digits.
pub fn demo_card_no(i: u64) -> String {
    let letter = (b'A' + ((i / 100_000_000) % 26) as u8) as char;
    format!("{letter}{:08}", (i % 100_000_000) * 7_919_111 % 100_000_000)
}

/// The bank PAN of demo person `i`: `622202`, 12 digits, Luhn check digit.
pub fn demo_pan(i: u64) -> String {
    let body = format!("622202{:012}", i);
    for d in b'0'..=b'9' {
        let mut cand = body.clone().into_bytes();
        cand.push(d);
        if firmware_protocol::magstripe::luhn_ok(&cand) {
            return String::from_utf8(cand).unwrap_or_default();
        }
    }
    body
}

struct Person {
    ssn: String,
    born: Date,
    employee: bool,
    insured: bool,
    card_ok: bool,
}

/// Insured regions (统筹区) of the demo households: a household is insured
/// in one region, mostly in Zhejiang, some in Beijing and Shanghai.
const DEMO_REGIONS: [&str; 8] = [
    "330100", "330100", "330200", "330300", "330100", "330600", "110100", "310100",
];

/// Runs the generator into `sink`.
pub fn generate<S: Sink>(opts: &DemoOptions, sink: &mut S) -> Result<(), S::Error> {
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let today = Date::today_cst();
    let mut i = 0u64;
    while i < opts.persons.min(CAPACITY) {
        let size = rng.random_range(1..=4u64).min(opts.persons - i);
        let mut household: Vec<Person> = Vec::with_capacity(size as usize);
        for j in 0..size {
            let idx = i + j;
            let ssn = demo_ssn(idx);
            let born = Date::parse_yyyymmdd(&ssn.as_bytes()[6..14]).unwrap_or(Date::EPOCH);
            let male = (ssn.as_bytes()[16] - b'0') % 2 == 1;
            let (ins_type, ins_status) = if j == 0 {
                ("employee", "active")
            } else {
                match rng.random_range(0..100) {
                    0..=29 => ("employee", "active"),
                    30..=89 => ("resident", "active"),
                    90..=94 => ("resident", "suspended"),
                    _ => ("none", "ended"),
                }
            };
            let name = format!(
                "{}{}",
                SURNAMES[rng.random_range(0..SURNAMES.len())],
                GIVEN[rng.random_range(0..GIVEN.len())]
            );
            sink.row(&PersonRec {
                ssn: ssn.clone(),
                name,
                sex: if male { "M" } else { "F" }.into(),
                birth_date: born.to_string(),
                insurance_type: ins_type.into(),
                insurance_status: ins_status.into(),
                region: Some(DEMO_REGIONS[((i / 4) % DEMO_REGIONS.len() as u64) as usize].into()),
            })?;
            // Dates relative to today, so that what resolves `ok` today
            // still does next year (a card valid now expires 1.8 to 10
            // years from now; an expired one 10 to 400 days ago).
            let issued_back = rng.random_range(30..=3000i64);
            let roll = rng.random_range(0..1000);
            let (status, expired) = match roll {
                0..=19 if j > 0 || roll < 5 => ("lost", false),
                20..=29 => ("frozen", false),
                30..=39 => ("cancelled", false),
                40..=59 => ("active", true),
                _ => ("active", false),
            };
            let day = |back: i64| {
                Date::from_days_since_epoch(today.days_since_epoch() - back).unwrap_or(Date::EPOCH)
            };
            let (issued, expires) = if expired {
                let back = rng.random_range(10..400);
                (day(back + 3652), day(back))
            } else {
                (day(issued_back), day(issued_back - 3652))
            };
            let pan = idx.is_multiple_of(2).then(|| demo_pan(idx));
            sink.row(&CardRec {
                card_no: demo_card_no(idx),
                pan,
                ssn: ssn.clone(),
                generation: 3,
                issued: issued.to_string(),
                expires: expires.to_string(),
                status: status.into(),
            })?;
            let employee = ins_type == "employee" && ins_status == "active";
            if ins_type == "employee" {
                sink.row(&AccountRec {
                    holder_ssn: ssn.clone(),
                    balance_fen: rng.random_range(0..800_000),
                })?;
                let employer = EMPLOYERS[rng.random_range(0..EMPLOYERS.len())];
                let base = rng.random_range(4_000..30_000i64) * 100;
                for m in 0..opts.months {
                    let months_back = m as i64 + 1;
                    let total = today.year() as i64 * 12 + today.month() as i64 - 1 - months_back;
                    sink.row(&ContributionRec {
                        ssn: ssn.clone(),
                        month: format!("{:04}-{:02}", total / 12, total % 12 + 1),
                        employer: employer.into(),
                        base_fen: base,
                        employee_fen: base * 2 / 100,
                        employer_fen: base * 8 / 100,
                        account_fen: base * 2 / 100 + base * 8 / 100 * 3 / 10,
                    })?;
                }
            }
            household.push(Person {
                ssn,
                born,
                employee,
                insured: ins_type != "none" && ins_status == "active",
                card_ok: status == "active" && !expired,
            });
        }
        // Links: the first person pays for the others that qualify.
        if let Some((holder, rest)) = household.split_first() {
            if holder.employee && holder.card_ok {
                let mut spouse = false;
                for m in rest {
                    if !(m.insured && m.card_ok) || rng.random_range(0..100) >= 85 {
                        continue;
                    }
                    let gap = holder.born.year() as i32 - m.born.year() as i32;
                    let relation = if gap <= -18 {
                        "parent"
                    } else if gap >= 18 {
                        "child"
                    } else if !spouse {
                        spouse = true;
                        "spouse"
                    } else {
                        continue;
                    };
                    sink.row(&LinkRec {
                        holder_ssn: holder.ssn.clone(),
                        member_ssn: m.ssn.clone(),
                        relation: relation.into(),
                        status: "active".into(),
                        channel: "import".into(),
                        operator: "gen-demo".into(),
                        created_at: "2025-01-01T00:00:00Z".into(),
                        revoked_at: None,
                    })?;
                }
            }
        }
        i += size;
    }
    Ok(())
}

/// Writes CSV files in the import format.
pub struct CsvSink {
    /// One writer per table, in the order of [`Table::ALL`].
    files: Vec<csv::Writer<std::fs::File>>,
}

impl CsvSink {
    /// Creates the five files in `dir` (0600: they hold personal data).
    pub fn create(dir: &Path) -> csv::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let files = Table::ALL
            .iter()
            .map(|t| Ok(csv::Writer::from_writer(private_file(&dir.join(t.file()))?)))
            .collect::<csv::Result<_>>()?;
        Ok(CsvSink { files })
    }
    /// Flushes all files.
    pub fn finish(mut self) -> csv::Result<()> {
        for w in &mut self.files {
            w.flush()?;
        }
        Ok(())
    }
}

impl Sink for CsvSink {
    type Error = csv::Error;
    fn row<R: Record>(&mut self, r: &R) -> csv::Result<()> {
        match self.files.get_mut(R::TABLE as usize) {
            Some(w) => w.serialize(r),
            None => Ok(()),
        }
    }
}

/// The demo data of `opts` as the five CSV files of the import format, in
/// a temporary directory (removed when the returned guard is dropped).
pub(crate) fn demo_files(
    opts: &DemoOptions,
) -> Result<(tempfile::TempDir, Vec<PathBuf>), RegistryError> {
    let dir = tempfile::Builder::new()
        .prefix("cardlink-gen-demo-")
        .tempdir()
        .map_err(|e| RegistryError::Corrupt(format!("demo CSV: temporary directory: {e}")))?;
    let csv_err = |e: csv::Error| {
        RegistryError::Corrupt(format!("demo CSV in {}: {e}", dir.path().display()))
    };
    let mut sink = CsvSink::create(dir.path()).map_err(csv_err)?;
    generate(opts, &mut sink).map_err(csv_err)?;
    sink.finish().map_err(csv_err)?;
    let files = Table::ALL
        .iter()
        .map(|t| dir.path().join(t.file()))
        .collect();
    Ok((dir, files))
}

/// A card for the simulator: its owner, numbers, name and dates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleCard {
    /// Owner's SSN.
    pub ssn: String,
    /// Card number.
    pub card_no: String,
    /// Bank PAN.
    pub pan: Option<String>,
    /// Owner's name.
    pub name: String,
    /// `YYYY-MM-DD`.
    pub issued: String,
    /// `YYYY-MM-DD`.
    pub expires: String,
}

impl SampleCard {
    /// The one decoder of a [`sample_queries`] row.
    pub(crate) fn read(r: &impl super::resolve::Columns) -> Result<SampleCard, RegistryError> {
        Ok(SampleCard {
            ssn: r.req_text(0)?,
            card_no: r.req_text(1)?,
            pan: r.text(2)?,
            name: r.req_text(3)?,
            issued: r.req_text(4)?,
            expires: r.req_text(5)?,
        })
    }
}

/// The groups of [`crate::registry::Registry::sample_cards`], each a query
/// on `cards c JOIN persons p` with `$1` today; the same SQL on both
/// backends (SQLite reads `$1` as the first parameter).
pub(crate) fn sample_queries() -> [String; 5] {
    const CARD: &str = "SELECT c.ssn, c.card_no, c.pan, p.name, c.issued, c.expires \
                        FROM cards c JOIN persons p ON p.ssn = c.ssn WHERE ";
    let usable = "c.status = 'active' AND c.expires >= $1";
    [
        format!("{CARD}{usable} AND c.ssn IN (SELECT holder_ssn FROM family_links WHERE status = 'active') ORDER BY c.card_no LIMIT 4"),
        format!("{CARD}{usable} AND c.ssn IN (SELECT member_ssn FROM family_links WHERE status = 'active') ORDER BY c.card_no LIMIT 4"),
        format!("{CARD}{usable} AND c.ssn NOT IN (SELECT holder_ssn FROM family_links) AND c.ssn NOT IN (SELECT member_ssn FROM family_links) ORDER BY c.card_no LIMIT 2"),
        format!("{CARD}(c.status = 'lost' OR c.status = 'frozen') AND $1 = $1 ORDER BY c.card_no LIMIT 2"),
        format!("{CARD}c.status = 'active' AND c.expires < $1 ORDER BY c.card_no LIMIT 1"),
    ]
}

impl Sqlite {
    /// See [`crate::registry::Registry::sample_cards`].
    pub fn sample_cards(
        &self,
        today: firmware_protocol::Date,
    ) -> Result<Vec<Vec<SampleCard>>, RegistryError> {
        let today = today.to_string();
        let mut groups = Vec::new();
        for q in &sample_queries() {
            let mut st = self.conn.prepare(q).map_err(|e| self.sql(e))?;
            let mut rows = st.query([&today]).map_err(|e| self.sql(e))?;
            let mut group = Vec::new();
            while let Some(r) = rows.next().map_err(|e| self.sql(e))? {
                group.push(SampleCard::read(r)?);
            }
            groups.push(group);
        }
        Ok(groups)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_ids_are_valid_and_unique() {
        let today = Date::today_cst();
        let mut seen = std::collections::HashSet::new();
        for i in 0..50_000 {
            let s = demo_ssn(i);
            firmware_protocol::Ssn::parse_on(s.as_bytes(), today).unwrap();
            assert!(seen.insert(s));
            assert!(firmware_protocol::magstripe::luhn_ok(
                demo_pan(i).as_bytes()
            ));
        }
        let cards: std::collections::HashSet<_> = (0..50_000).map(demo_card_no).collect();
        assert_eq!(cards.len(), 50_000);
    }
}
