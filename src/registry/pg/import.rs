//! Import (COPY) and export (COPY TO) on PostgreSQL.
//!
//! An import reads and validates the CSV files with the same loop as
//! SQLite's ([`crate::registry::import::load_files`]) on a blocking thread;
//! its [`Dest`] here streams the valid rows, each with its line number,
//! into temporary staging tables with `COPY ... FROM STDIN`. Set-based
//! statements then find what the database would refuse (duplicate keys,
//! references to unknown persons, a second active payer, mutual links),
//! each reported as `file:line: reason` like SQLite's, and move the rows
//! into the tables. All in one write transaction: all or nothing.

use std::path::Path;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use super::Postgres;
use crate::registry::error::RegistryError;
use crate::registry::import::{
    load_files, push, Dest, ImportCounts, ImportError, Load, Record, Refused, Table, MUTUAL_LINK,
};

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
     SELECT DISTINCT line FROM up WHERE depth > 0 AND who = member";

/// Persons whose derived rows an import into a populated registry moves:
/// those its rows name, and (added below) their payers and members.
const TOUCHED: &str = "CREATE TEMP TABLE touched ON COMMIT DROP AS \
     SELECT ssn FROM stage_persons UNION SELECT ssn FROM stage_cards \
     UNION SELECT holder_ssn FROM stage_accounts UNION SELECT holder_ssn FROM stage_links \
     UNION SELECT member_ssn FROM stage_links";

/// Drops the foreign keys and the non-unique indexes of the tables in
/// `names` that are empty now, and returns the statements that make them
/// again (the whole definition as the catalogue has it, so that a later
/// migration's constraints and indexes are kept without naming them here).
async fn defer_constraints(
    tx: &deadpool_postgres::Transaction<'_>,
    names: &[(Table, String)],
) -> Result<Vec<String>, tokio_postgres::Error> {
    let mut empty = Vec::new();
    for (t, _) in names {
        let table = t.sql_name();
        let row = tx
            .query_one(&format!("SELECT NOT EXISTS (SELECT 1 FROM {table})"), &[])
            .await?;
        if row.try_get::<_, bool>(0)? {
            empty.push(table.to_string());
        }
    }
    if empty.is_empty() {
        return Ok(Vec::new());
    }
    let rows = tx
        .query(
            "SELECT format('ALTER TABLE %s ADD CONSTRAINT %I %s', c.conrelid::regclass, c.conname, pg_get_constraintdef(c.oid)), \
                    format('ALTER TABLE %s DROP CONSTRAINT %I', c.conrelid::regclass, c.conname) \
               FROM pg_constraint c \
              WHERE c.contype = 'f' AND c.conrelid::regclass::text = ANY($1) \
             UNION ALL \
             SELECT pg_get_indexdef(i.indexrelid), format('DROP INDEX %s', i.indexrelid::regclass) \
               FROM pg_index i \
              WHERE NOT i.indisunique AND NOT i.indisprimary AND i.indrelid::regclass::text = ANY($1)",
            &[&empty],
        )
        .await?;
    let mut again = Vec::new();
    for r in rows {
        let (make, drop): (String, String) = (r.try_get(0)?, r.try_get(1)?);
        tx.batch_execute(&drop).await?;
        again.push(make);
    }
    Ok(again)
}

/// What the parsing thread sends to the COPY.
enum Msg {
    Start(Table),
    Data(Bytes),
    End,
}

/// Bytes buffered before a chunk goes to the server.
const CHUNK: usize = 1 << 20;

/// PostgreSQL's [`Dest`]: each file a `COPY` into its staging table, the
/// rows as CSV with their line first, sent in chunks.
struct Stager<'a> {
    w: csv::Writer<Vec<u8>>,
    send: &'a mpsc::Sender<Msg>,
}

impl Stager<'_> {
    fn flush(&mut self) {
        if self.w.flush().is_err() || self.w.get_ref().is_empty() {
            return;
        }
        if let Ok(chunk) = std::mem::replace(&mut self.w, writer()).into_inner() {
            // A closed channel means the COPY failed; its error is reported.
            let _ = self.send.blocking_send(Msg::Data(Bytes::from(chunk)));
        }
    }
}

impl Dest for Stager<'_> {
    fn begin(&mut self, t: Table) -> bool {
        self.send.blocking_send(Msg::Start(t)).is_ok()
    }

    fn row<R: Record>(&mut self, line: u64, r: &R) -> Result<(), Refused> {
        let staged = self.w.write_field(line.to_string()).and_then(|()| {
            for f in r.fields() {
                f.write_csv(&mut self.w)?;
            }
            self.w.write_record(None::<&[u8]>)
        });
        staged.map_err(|e| Refused::Db(format!("staging: {e}")))?;
        if self.w.get_ref().len() >= CHUNK {
            self.flush();
        }
        Ok(())
    }

    fn end(&mut self, _t: Table) -> bool {
        self.flush();
        self.send.blocking_send(Msg::End).is_ok()
    }
}

fn writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::with_capacity(CHUNK + 4096))
}

impl Postgres {
    /// Runs a bulk load in one write transaction: all or nothing (see the
    /// module docs).
    pub(crate) fn bulk_load(&mut self, load: &Load<'_>) -> Result<ImportCounts, ImportError> {
        let names: Vec<(Table, String)> = load
            .files
            .iter()
            .map(|(t, f)| (*t, f.display().to_string()))
            .collect();
        self.run_bulk(async |c| {
            let err = |e: tokio_postgres::Error| ImportError::Registry(self.err(&e));
            let tx = self.write_tx(c).await?;
            let empty: bool = tx
                .query_one("SELECT NOT EXISTS (SELECT 1 FROM persons)", &[])
                .await
                .map_err(err)?
                .try_get(0)
                .map_err(err)?;
            tx.batch_execute(STAGE).await.map_err(err)?;
            let (send, mut recv) = mpsc::channel::<Msg>(4);
            let (files, today) = (load.files.clone(), load.today);
            let parser = tokio::task::spawn_blocking(move || {
                let mut stager = Stager {
                    w: writer(),
                    send: &send,
                };
                load_files(&files, today, &mut stager)
            });
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
            // Tables loaded from empty: their foreign keys and non-unique
            // indexes are dropped for the load and made again after it, one
            // set-based validation and one sorted index build instead of a
            // check and an index entry per row (the refusals above and
            // below are the import's own checks, not the constraints').
            let deferred = defer_constraints(&tx, &names).await.map_err(err)?;
            for (t, file) in &names {
                let (_, checks, insert) = steps(*t);
                for check in checks {
                    for r in tx.query(*check, &[]).await.map_err(err)? {
                        let line: i64 = r.try_get(0).map_err(err)?;
                        push(&mut bad, file, line as u64, r.try_get(1).map_err(err)?);
                    }
                }
                tx.execute(insert, &[]).await.map_err(err)?;
                if *t == Table::Links {
                    for r in tx.query(MUTUAL, &[]).await.map_err(err)? {
                        let line: i64 = r.try_get(0).map_err(err)?;
                        push(&mut bad, file, line as u64, MUTUAL_LINK.into());
                    }
                }
            }
            if let Some(e) = bad.into_error() {
                // Dropping the transaction rolls it back.
                return Err(e);
            }
            for sql in &deferred {
                tx.batch_execute(sql).await.map_err(err)?;
            }
            if empty {
                self.rebuild(&tx).await?;
            } else {
                tx.batch_execute(TOUCHED).await.map_err(err)?;
                let n: i64 = tx
                    .query_one("SELECT count(*) FROM touched", &[])
                    .await
                    .map_err(err)?
                    .try_get(0)
                    .map_err(err)?;
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
            let sealed = self.append(&tx, &(load.audit)(&counts).entry()).await?;
            tx.commit().await.map_err(err)?;
            self.audit
                .committed(sealed)
                .map_err(|e| ImportError::Registry(e.into()))?;
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
        self.run_bulk(async |c| {
            let err = |e: tokio_postgres::Error| ImportError::Registry(self.err(&e));
            let tx = c
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(err)?;
            let mut counts = ImportCounts::default();
            for t in Table::ALL {
                let path = dir.join(t.file());
                let mut out = std::io::BufWriter::new(
                    crate::registry::files::private_file(&path).map_err(|e| io(&path, e))?,
                );
                let stream = tx
                    .copy_out(&format!(
                        "COPY ({}) TO STDOUT (FORMAT csv, HEADER)",
                        t.export_select()
                    ))
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
                counts.add(t, newlines.saturating_sub(1));
            }
            Ok(counts)
        })
    }
}
