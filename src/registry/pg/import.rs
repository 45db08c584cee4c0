//! Import (COPY), export (COPY TO) and `gen-demo` on PostgreSQL.
//!
//! An import parses and validates the CSV files with the same code as
//! SQLite's ([`crate::registry::import::load`]) on a blocking thread and
//! streams the valid rows, each with its line number, into temporary
//! staging tables with `COPY ... FROM STDIN`. Set-based statements then
//! find what the database would refuse (duplicate keys, references to
//! unknown persons, a second active payer, mutual links), each reported as
//! `file:line: reason` like SQLite's, and move the rows into the tables.
//! All in one write transaction: all or nothing.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use firmware_protocol::Date;
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use super::Postgres;
use crate::registry::audit::Entry;
use crate::registry::demo::{self, CsvSink, DemoOptions};
use crate::registry::import::{
    in_order, load, push, upper, AccountRec, Bad, CardRec, ContributionRec, ImportCounts,
    ImportError, LinkRec, PersonRec, Refused, Table, ACCOUNT_COLUMNS, CARD_COLUMNS,
    CONTRIBUTION_COLUMNS, LINK_COLUMNS, PERSON_COLUMNS,
};
use crate::registry::RegistryError;

const STAGE: &str = r#"
CREATE TEMP TABLE stage_persons (line bigint, ssn text COLLATE "C", name text, sex text,
    birth_date text, insurance_type text, insurance_status text, region text) ON COMMIT DROP;
CREATE TEMP TABLE stage_cards (line bigint, card_no text COLLATE "C", pan text COLLATE "C",
    ssn text COLLATE "C", generation integer, issued text, expires text, status text) ON COMMIT DROP;
CREATE TEMP TABLE stage_accounts (line bigint, holder_ssn text COLLATE "C", balance_fen bigint) ON COMMIT DROP;
CREATE TEMP TABLE stage_links (line bigint, holder_ssn text COLLATE "C", member_ssn text COLLATE "C",
    relation text, status text, channel text, operator text, created_at text, revoked_at text) ON COMMIT DROP;
CREATE TEMP TABLE stage_contributions (line bigint, ssn text COLLATE "C", month text COLLATE "C",
    employer text COLLATE "C", base_fen bigint, employee_fen bigint, employer_fen bigint,
    account_fen bigint) ON COMMIT DROP;
"#;

/// Per table: the staging table, and the statements that report bad rows
/// (`line, reason`) and then move the good rows in, in that order.
fn steps(t: Table) -> (&'static str, &'static [&'static str], &'static str) {
    match t {
        Table::Persons => (
            "stage_persons",
            &["SELECT line, 'duplicate key (persons.ssn)' FROM (SELECT line, row_number() OVER (PARTITION BY ssn ORDER BY line) AS n FROM stage_persons) d WHERE n > 1 \
               UNION ALL SELECT s.line, 'duplicate key (persons.ssn is already in the registry)' FROM stage_persons s JOIN persons p ON p.ssn = s.ssn"],
            "INSERT INTO persons (ssn, name, sex, birth_date, insurance_type, insurance_status, region) \
             SELECT ssn, name, sex, birth_date, insurance_type, insurance_status, region FROM stage_persons ORDER BY ssn, line \
             ON CONFLICT DO NOTHING",
        ),
        Table::Cards => (
            "stage_cards",
            &["SELECT line, 'duplicate key (cards.card_no)' FROM (SELECT line, row_number() OVER (PARTITION BY card_no ORDER BY line) AS n FROM stage_cards) d WHERE n > 1 \
               UNION ALL SELECT s.line, 'duplicate key (cards.card_no is already in the registry)' FROM stage_cards s JOIN cards c ON c.card_no = s.card_no \
               UNION ALL SELECT line, 'duplicate key (cards.pan)' FROM (SELECT line, row_number() OVER (PARTITION BY pan ORDER BY line) AS n FROM stage_cards WHERE pan IS NOT NULL) d WHERE n > 1 \
               UNION ALL SELECT s.line, 'duplicate key (cards.pan is already in the registry)' FROM stage_cards s JOIN cards c ON c.pan = s.pan AND c.card_no <> s.card_no",
              "SELECT s.line, 'refers to a person that is not in the registry or in persons.csv' FROM stage_cards s WHERE NOT EXISTS (SELECT 1 FROM persons p WHERE p.ssn = s.ssn)"],
            "INSERT INTO cards (card_no, pan, ssn, generation, issued, expires, status) \
             SELECT card_no, pan, ssn, generation, issued, expires, status FROM stage_cards s \
             WHERE EXISTS (SELECT 1 FROM persons p WHERE p.ssn = s.ssn) ORDER BY card_no, line ON CONFLICT DO NOTHING",
        ),
        Table::Accounts => (
            "stage_accounts",
            &["SELECT line, 'duplicate key (accounts.holder_ssn)' FROM (SELECT line, row_number() OVER (PARTITION BY holder_ssn ORDER BY line) AS n FROM stage_accounts) d WHERE n > 1 \
               UNION ALL SELECT s.line, 'duplicate key (accounts.holder_ssn is already in the registry)' FROM stage_accounts s JOIN accounts a ON a.holder_ssn = s.holder_ssn",
              "SELECT s.line, 'refers to a person that is not in the registry or in persons.csv' FROM stage_accounts s WHERE NOT EXISTS (SELECT 1 FROM persons p WHERE p.ssn = s.holder_ssn)"],
            "INSERT INTO accounts (holder_ssn, balance_fen) SELECT holder_ssn, balance_fen FROM stage_accounts s \
             WHERE EXISTS (SELECT 1 FROM persons p WHERE p.ssn = s.holder_ssn) ORDER BY holder_ssn, line ON CONFLICT DO NOTHING",
        ),
        Table::Links => (
            "stage_links",
            &["SELECT s.line, 'refers to a person that is not in the registry or in persons.csv' FROM stage_links s \
               WHERE NOT EXISTS (SELECT 1 FROM persons p WHERE p.ssn = s.holder_ssn) OR NOT EXISTS (SELECT 1 FROM persons p WHERE p.ssn = s.member_ssn)",
              "SELECT line, 'member already has another active payer' FROM (SELECT line, row_number() OVER (PARTITION BY member_ssn ORDER BY line) AS n FROM stage_links WHERE status = 'active') d WHERE n > 1 \
               UNION ALL SELECT s.line, 'member already has another active payer' FROM stage_links s JOIN family_links l ON l.member_ssn = s.member_ssn AND l.status = 'active' WHERE s.status = 'active'"],
            "INSERT INTO family_links (holder_ssn, member_ssn, relation, status, channel, operator, created_at, revoked_at) \
             SELECT holder_ssn, member_ssn, relation, status, channel, operator, created_at, revoked_at FROM stage_links s \
             WHERE EXISTS (SELECT 1 FROM persons p WHERE p.ssn = s.holder_ssn) AND EXISTS (SELECT 1 FROM persons p WHERE p.ssn = s.member_ssn) \
             ORDER BY line ON CONFLICT DO NOTHING",
        ),
        Table::Contributions => (
            "stage_contributions",
            &["SELECT line, 'duplicate key (contributions.ssn, month, employer)' FROM (SELECT line, row_number() OVER (PARTITION BY ssn, month, employer ORDER BY line) AS n FROM stage_contributions) d WHERE n > 1 \
               UNION ALL SELECT s.line, 'duplicate key (contributions.ssn, month, employer is already in the registry)' FROM stage_contributions s \
               JOIN contributions c ON c.ssn = s.ssn AND c.month = s.month AND c.employer = s.employer",
              "SELECT s.line, 'refers to a person that is not in the registry or in persons.csv' FROM stage_contributions s WHERE NOT EXISTS (SELECT 1 FROM persons p WHERE p.ssn = s.ssn)"],
            "INSERT INTO contributions (ssn, month, employer, base_fen, employee_fen, employer_fen, account_fen) \
             SELECT ssn, month, employer, base_fen, employee_fen, employer_fen, account_fen FROM stage_contributions s \
             WHERE EXISTS (SELECT 1 FROM persons p WHERE p.ssn = s.ssn) ORDER BY ssn, month, employer ON CONFLICT DO NOTHING",
        ),
    }
}

/// Active staged links whose holder is covered by their member through
/// the links now in the table (the walk of `bind::covered_by`, bounded).
const MUTUAL: &str = "WITH RECURSIVE up (line, member, who, depth) AS ( \
       SELECT line, member_ssn, holder_ssn, 0 FROM stage_links WHERE status = 'active' \
       UNION ALL \
       SELECT u.line, u.member, l.holder_ssn, u.depth + 1 FROM up u \
         JOIN family_links l ON l.member_ssn = u.who AND l.status = 'active' \
        WHERE u.depth < 64 AND u.who <> u.member) \
     SELECT DISTINCT line, 'mutual link: the holder is covered by this member (directly or through other links)' \
       FROM up WHERE depth > 0 AND who = member";

/// Persons whose derived rows an import into a populated registry moves:
/// those its rows name, and (added below) their payers and members.
const TOUCHED: &str = "CREATE TEMP TABLE touched ON COMMIT DROP AS \
     SELECT ssn FROM stage_persons UNION SELECT ssn FROM stage_cards \
     UNION SELECT holder_ssn FROM stage_accounts UNION SELECT holder_ssn FROM stage_links \
     UNION SELECT member_ssn FROM stage_links";

/// What the parsing thread sends to the COPY.
enum Msg {
    Start(Table),
    Data(Bytes),
    End,
}

/// Bytes buffered before a chunk goes to the server.
const CHUNK: usize = 1 << 20;

/// Writes validated rows as CSV with their line first and sends them in chunks.
struct Stager<'a> {
    w: std::cell::RefCell<csv::Writer<Vec<u8>>>,
    send: &'a mpsc::Sender<Msg>,
}

impl Stager<'_> {
    fn row<const N: usize>(&self, line: u64, fields: [&str; N]) -> Result<(), Refused> {
        let mut w = self.w.borrow_mut();
        let line = line.to_string();
        w.write_field(&line)
            .and_then(|()| w.write_record(fields))
            .map_err(|e| Refused::Db(format!("staging: {e}")))?;
        if w.get_ref().len() >= CHUNK {
            self.flush(&mut w);
        }
        Ok(())
    }

    fn flush(&self, w: &mut csv::Writer<Vec<u8>>) {
        if w.flush().is_err() || w.get_ref().is_empty() {
            return;
        }
        if let Ok(chunk) = std::mem::replace(w, writer()).into_inner() {
            // A closed channel means the COPY failed; its error is reported.
            let _ = self.send.blocking_send(Msg::Data(Bytes::from(chunk)));
        }
    }
}

fn writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::with_capacity(CHUNK + 4096))
}

fn opt(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("")
}

/// Parses every file on this (blocking) thread, streaming valid rows.
fn parse(
    files: &[(Table, PathBuf)],
    today: Date,
    send: &mpsc::Sender<Msg>,
) -> Result<(Bad, ImportCounts), ImportError> {
    let mut bad = Bad::default();
    let mut counts = ImportCounts::default();
    for (t, f) in files {
        if send.blocking_send(Msg::Start(*t)).is_err() {
            break;
        }
        let st = Stager {
            w: std::cell::RefCell::new(writer()),
            send,
        };
        match t {
            Table::Persons => {
                counts.persons += load(
                    f,
                    PERSON_COLUMNS,
                    today,
                    &mut bad,
                    PersonRec::validate,
                    |r: &PersonRec| r.ssn.as_str(),
                    |line, r| {
                        st.row(
                            line,
                            [
                                &upper(&r.ssn),
                                &r.name,
                                &r.sex,
                                &r.birth_date,
                                &r.insurance_type,
                                &r.insurance_status,
                                opt(&r.region),
                            ],
                        )
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
                    |line, r| {
                        st.row(
                            line,
                            [
                                &r.card_no,
                                opt(&r.pan),
                                &upper(&r.ssn),
                                &r.generation.to_string(),
                                &r.issued,
                                &r.expires,
                                &r.status,
                            ],
                        )
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
                    |line, r| st.row(line, [&upper(&r.holder_ssn), &r.balance_fen.to_string()]),
                )?
            }
            Table::Links => {
                counts.links += load(
                    f,
                    LINK_COLUMNS,
                    today,
                    &mut bad,
                    LinkRec::validate,
                    |_: &LinkRec| "",
                    |line, r| {
                        st.row(
                            line,
                            [
                                &upper(&r.holder_ssn),
                                &upper(&r.member_ssn),
                                &r.relation,
                                &r.status,
                                &r.channel,
                                &r.operator,
                                &r.created_at,
                                opt(&r.revoked_at),
                            ],
                        )
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
                    |line, r| {
                        st.row(
                            line,
                            [
                                &upper(&r.ssn),
                                &r.month,
                                &r.employer,
                                &r.base_fen.to_string(),
                                &r.employee_fen.to_string(),
                                &r.employer_fen.to_string(),
                                &r.account_fen.to_string(),
                            ],
                        )
                    },
                )?
            }
        }
        st.flush(&mut st.w.borrow_mut());
        if send.blocking_send(Msg::End).is_err() {
            break;
        }
    }
    Ok((bad, counts))
}

impl Postgres {
    /// Imports CSV files all-or-nothing (see the module docs).
    pub fn import(&mut self, files: &[PathBuf], actor: &str) -> Result<ImportCounts, ImportError> {
        self.import_as(files, &|c: &ImportCounts| {
            (
                actor.to_string(),
                "import",
                format!(
                    "ok persons={} cards={} links={} accounts={} contributions={}",
                    c.persons, c.cards, c.links, c.accounts, c.contributions
                ),
            )
        })
    }

    /// An import whose audit row is `audit(counts)`: (actor, action, outcome).
    fn import_as(
        &mut self,
        files: &[PathBuf],
        audit: &dyn Fn(&ImportCounts) -> (String, &'static str, String),
    ) -> Result<ImportCounts, ImportError> {
        let ordered: Vec<(Table, PathBuf)> = in_order(files)?
            .into_iter()
            .map(|(t, f)| (t, f.clone()))
            .collect();
        let names: Vec<(Table, String)> = ordered
            .iter()
            .map(|(t, f)| (*t, f.display().to_string()))
            .collect();
        let today = Date::today_cst();
        self.run_bulk(async |c| {
            let err = |e: tokio_postgres::Error| ImportError::Registry(self.err(&e));
            let tx = self.write_tx(c).await?;
            let empty: bool = tx
                .query_one("SELECT NOT EXISTS (SELECT 1 FROM persons)", &[])
                .await
                .map_err(err)?
                .get(0);
            tx.batch_execute(STAGE).await.map_err(err)?;
            let (send, mut recv) = mpsc::channel::<Msg>(4);
            let files = ordered.clone();
            let parser = tokio::task::spawn_blocking(move || parse(&files, today, &send));
            let mut sink = None;
            let mut copy_failed = None;
            while let Some(msg) = recv.recv().await {
                if copy_failed.is_some() {
                    continue;
                }
                let step = async {
                    match msg {
                        Msg::Start(t) => {
                            let (stage, _, _) = steps(t);
                            let s = tx
                                .copy_in::<_, Bytes>(&format!("COPY {stage} FROM STDIN (FORMAT csv)"))
                                .await?;
                            sink = Some(Box::pin(s));
                        }
                        Msg::Data(b) => {
                            if let Some(s) = sink.as_mut() {
                                s.send(b).await?;
                            }
                        }
                        Msg::End => {
                            if let Some(mut s) = sink.take() {
                                s.as_mut().finish().await?;
                            }
                        }
                    }
                    Ok::<_, tokio_postgres::Error>(())
                };
                if let Err(e) = step.await {
                    copy_failed = Some(e);
                    recv.close();
                }
            }
            if let Some(e) = copy_failed {
                return Err(err(e));
            }
            let (mut bad, counts) = parser.await.map_err(|e| {
                ImportError::Registry(RegistryError::Corrupt(format!("import parser stopped: {e}")))
            })??;
            for (t, file) in &names {
                let (_, checks, insert) = steps(*t);
                for check in checks {
                    for r in tx.query(*check, &[]).await.map_err(err)? {
                        push(&mut bad, file, r.get::<_, i64>(0) as u64, r.get(1));
                    }
                }
                tx.execute(insert, &[]).await.map_err(err)?;
                if *t == Table::Links {
                    for r in tx.query(MUTUAL, &[]).await.map_err(err)? {
                        push(&mut bad, file, r.get::<_, i64>(0) as u64, r.get(1));
                    }
                }
            }
            if let Some(e) = bad.into_error() {
                // Dropping the transaction rolls it back.
                return Err(e);
            }
            if empty {
                self.rebuild(&tx).await?;
            } else {
                tx.batch_execute(TOUCHED).await.map_err(err)?;
                let n: i64 = tx
                    .query_one("SELECT count(*) FROM touched", &[])
                    .await
                    .map_err(err)?
                    .get(0);
                if n > 200_000 {
                    self.rebuild(&tx).await?;
                } else {
                    tx.batch_execute(&format!(
                        "INSERT INTO touched \
                           SELECT member_ssn FROM family_links WHERE status = 'active' AND holder_ssn IN (SELECT ssn FROM touched) \
                           UNION SELECT holder_ssn FROM family_links WHERE status = 'active' AND member_ssn IN (SELECT ssn FROM touched); \
                         DELETE FROM resolution WHERE ssn IN (SELECT ssn FROM touched); \
                         INSERT INTO resolution ({cols}) SELECT {cols} FROM resolution_source \
                          WHERE ssn IN (SELECT DISTINCT ssn FROM touched) ORDER BY ssn;",
                        cols = crate::registry::derived::COLUMNS
                    ))
                    .await
                    .map_err(err)?;
                }
            }
            let (actor, action, outcome) = audit(&counts);
            self.append(
                &tx,
                &Entry {
                    actor: &actor,
                    action,
                    ssn: None,
                    outcome: &outcome,
                },
            )
            .await?;
            tx.commit().await.map_err(err)?;
            Ok(counts)
        })
    }

    /// Writes every table as CSV files (the import format) into `dir`,
    /// from one snapshot.
    pub fn export(&self, dir: &Path) -> Result<ImportCounts, ImportError> {
        let io = |file: &Path, e: std::io::Error| ImportError::Io {
            file: file.display().to_string(),
            source: e.into(),
        };
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        const TABLES: [(&str, &str); 5] = [
            ("persons.csv", "SELECT ssn, name, sex, birth_date, insurance_type, insurance_status, region FROM persons ORDER BY ssn"),
            ("cards.csv", "SELECT card_no, pan, ssn, generation, issued, expires, status FROM cards ORDER BY card_no"),
            ("accounts.csv", "SELECT holder_ssn, balance_fen FROM accounts ORDER BY holder_ssn"),
            ("links.csv", "SELECT holder_ssn, member_ssn, relation, status, channel, operator, created_at, revoked_at FROM family_links ORDER BY id"),
            ("contributions.csv", "SELECT ssn, month, employer, base_fen, employee_fen, employer_fen, account_fen FROM contributions ORDER BY ssn, month, employer"),
        ];
        self.run_bulk(async |c| {
            let err = |e: tokio_postgres::Error| ImportError::Registry(self.err(&e));
            let tx = c
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(err)?;
            let mut n = [0u64; 5];
            for (i, (file, select)) in TABLES.iter().enumerate() {
                let path = dir.join(file);
                let mut out = std::io::BufWriter::new(
                    std::fs::File::create(&path).map_err(|e| io(&path, e))?,
                );
                let stream = tx
                    .copy_out(&format!("COPY ({select}) TO STDOUT (FORMAT csv, HEADER)"))
                    .await
                    .map_err(err)?;
                futures::pin_mut!(stream);
                let mut newlines = 0u64;
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(err)?;
                    newlines += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
                    std::io::Write::write_all(&mut out, &chunk).map_err(|e| io(&path, e))?;
                }
                std::io::Write::flush(&mut out).map_err(|e| io(&path, e))?;
                // One line per row after the header (no field holds a
                // newline: import refuses control characters).
                n[i] = newlines.saturating_sub(1);
            }
            Ok(ImportCounts {
                persons: n[0],
                cards: n[1],
                accounts: n[2],
                links: n[3],
                contributions: n[4],
            })
        })
    }

    /// Fills the registry with demo data: generated as CSV into a
    /// temporary directory and imported, audited as `gen-demo`.
    pub fn gen_demo(&mut self, opts: &DemoOptions) -> Result<(), RegistryError> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cardlink-gen-demo-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let csv_err =
            |e: csv::Error| RegistryError::Corrupt(format!("demo CSV in {}: {e}", dir.display()));
        let result = (|| {
            let mut sink = CsvSink::create(&dir).map_err(csv_err)?;
            demo::generate(opts, &mut sink).map_err(csv_err)?;
            sink.finish().map_err(csv_err)?;
            let files: Vec<PathBuf> = ["persons", "cards", "accounts", "links", "contributions"]
                .iter()
                .map(|t| dir.join(format!("{t}.csv")))
                .collect();
            let outcome = format!(
                "ok persons={} months={} seed={}",
                opts.persons, opts.months, opts.seed
            );
            self.import_as(&files, &|_| {
                ("gen-demo".into(), "gen-demo", outcome.clone())
            })
            .map(drop)
            .map_err(|e| match e {
                ImportError::Registry(e) => e,
                other => RegistryError::Corrupt(format!("demo data refused: {other}")),
            })
        })();
        let _ = std::fs::remove_dir_all(&dir);
        result
    }
}
