//! The registry's operations on PostgreSQL: the same statements as
//! SQLite's where the SQL is the same; the shared rules, resolution, chain
//! and write path ([`crate::registry::write`]) over a pooled connection.
//!
//! The operations the daemon calls (resolve, bind, unbind, an audit row,
//! contributions, members) are async and run on the caller's runtime
//! (the `call!` macro); the tools reach them through the synchronous
//! [`crate::registry::Registry`] facade. Every value is read with the
//! fallible accessors (a value of the wrong type is an error, never a
//! panic).

use deadpool_postgres::{GenericClient, Transaction};
use firmware_protocol::{Date, Ssn};
use futures::StreamExt;
use tokio_postgres::types::ToSql;

use super::{Postgres, WRITE_LOCK};
use crate::registry::audit::{self, AuditRef, Entry, Row as AuditRow};
use crate::registry::bind::{self, BindError, BindRequest, Facts, Since};
use crate::registry::derived::{Drift, Repair, COLUMNS};
use crate::registry::error::RegistryError;
use crate::registry::hash::HashAlg;
use crate::registry::policy::BindPolicy;
use crate::registry::resolve::{
    self, bad_column, CardRow, Columns, Contribution, Fut, Lookup, Member, Query, Resolution, Row,
    Source,
};
use crate::registry::seal;
use crate::registry::write::{self, Conn, WriteTx};
use crate::registry::{demo, sqlite::Stats};

impl Columns for tokio_postgres::Row {
    fn text(&self, i: usize) -> Result<Option<String>, RegistryError> {
        self.try_get(i).map_err(|e| bad_column(i, e))
    }
    fn int(&self, i: usize) -> Result<Option<i64>, RegistryError> {
        self.try_get(i).map_err(|e| bad_column(i, e))
    }
}

/// Answers for [`resolve::resolve_with`] and [`bind::check_rules`] from
/// one client or transaction.
pub(crate) struct Pg<'a, C> {
    c: &'a C,
    pg: &'a Postgres,
}

impl<C: GenericClient + Sync> Pg<'_, C> {
    async fn opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<tokio_postgres::Row>, RegistryError> {
        let st = self
            .c
            .prepare_cached(sql)
            .await
            .map_err(|e| self.pg.err(&e))?;
        self.c
            .query_opt(&st, params)
            .await
            .map_err(|e| self.pg.err(&e))
    }

    async fn text(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<String>, RegistryError> {
        Ok(self
            .opt(sql, params)
            .await?
            .map(|r| r.text(0))
            .transpose()?
            .flatten())
    }
}

impl<C: GenericClient + Sync> Source for Pg<'_, C> {
    fn row<'a>(&'a self, q: Query, key: &'a str) -> Fut<'a, Option<Row>> {
        Box::pin(async move {
            self.opt(q.sql(), &[&key])
                .await?
                .map(|r| Row::read(&r))
                .transpose()
        })
    }

    fn best_card<'a>(&'a self, ssn: &'a str, today: Date) -> Fut<'a, Option<CardRow>> {
        Box::pin(async move {
            let today = today.to_string();
            self.opt(resolve::BEST_CARD, &[&ssn, &today])
                .await?
                .map(|r| CardRow::read(&r))
                .transpose()
        })
    }
}

impl<C: GenericClient + Sync> Facts for Pg<'_, C> {
    fn insurance<'a>(&'a mut self, ssn: &'a str) -> Fut<'a, Option<(String, String)>> {
        Box::pin(async move {
            self.opt(bind::INSURANCE_SQL, &[&ssn])
                .await?
                .map(|r| Ok((r.req_text(0)?, r.req_text(1)?)))
                .transpose()
        })
    }
    fn best_card<'a>(&'a mut self, ssn: &'a str, today: Date) -> Fut<'a, Option<CardRow>> {
        Source::best_card(&*self, ssn, today)
    }
    fn payer_of<'a>(&'a mut self, member: &'a str) -> Fut<'a, Option<String>> {
        Box::pin(async move { self.text(bind::PAYER_OF_SQL, &[&member]).await })
    }
    fn region<'a>(&'a mut self, ssn: &'a str) -> Fut<'a, Option<String>> {
        Box::pin(async move { self.text(bind::REGION_SQL, &[&ssn]).await })
    }
    fn active_members<'a>(&'a mut self, holder: &'a str) -> Fut<'a, u32> {
        Box::pin(async move {
            let n = match self.opt(bind::ACTIVE_MEMBERS_SQL, &[&holder]).await? {
                Some(r) => r.int(0)?.unwrap_or(0),
                None => 0,
            };
            Ok(u32::try_from(n).unwrap_or(u32::MAX))
        })
    }
    fn revoked_since<'a>(&'a mut self, m: &'a str, h: &'a str, cutoff: &'a str) -> Since<'a> {
        Box::pin(async move { self.text(bind::REVOKED_SINCE_SQL, &[&m, &h, &cutoff]).await })
    }
}

/// A pooled connection: PostgreSQL's [`Conn`].
pub(crate) struct PgConn<'a> {
    c: &'a mut deadpool_postgres::Object,
    pg: &'a Postgres,
}

impl<'a> PgConn<'a> {
    pub(crate) fn new(c: &'a mut deadpool_postgres::Object, pg: &'a Postgres) -> Self {
        PgConn { c, pg }
    }
}

/// PostgreSQL's write transaction (it holds the advisory write lock).
pub(crate) struct PgTx<'a> {
    /// `None` once committed.
    tx: Option<Transaction<'a>>,
    pg: &'a Postgres,
    /// The last seal index written in this transaction.
    sealed: Option<i64>,
}

impl<'a> PgTx<'a> {
    /// The open transaction's answers.
    fn q(&self) -> Result<Pg<'_, Transaction<'a>>, RegistryError> {
        match &self.tx {
            Some(tx) => Ok(Pg { c: tx, pg: self.pg }),
            None => Err(RegistryError::Pg(
                "the write transaction is already committed".into(),
            )),
        }
    }
}

impl Conn for PgConn<'_> {
    fn begin(&mut self) -> Fut<'_, Box<dyn WriteTx + '_>> {
        Box::pin(async move {
            let tx = self.pg.write_tx(self.c).await?;
            Ok(Box::new(PgTx {
                tx: Some(tx),
                pg: self.pg,
                sealed: None,
            }) as Box<dyn WriteTx>)
        })
    }

    /// An unsealed SHA-256 chain: one round trip, migration 002's function
    /// takes the lock itself. Otherwise a write transaction of its own.
    fn record<'a>(&'a mut self, e: &'a Entry<'_>) -> Fut<'a, ()> {
        Box::pin(async move {
            if self.pg.audit_fast_path() {
                return self.pg.append(&*self.c, e).await.map(drop);
            }
            let mut tx = self.begin().await?;
            tx.append(e).await?;
            tx.commit().await
        })
    }
}

/// The rules' questions inside the transaction.
impl Facts for PgTx<'_> {
    fn insurance<'a>(&'a mut self, ssn: &'a str) -> Fut<'a, Option<(String, String)>> {
        Box::pin(async move { self.q()?.insurance(ssn).await })
    }
    fn best_card<'a>(&'a mut self, ssn: &'a str, today: Date) -> Fut<'a, Option<CardRow>> {
        Box::pin(async move { Source::best_card(&self.q()?, ssn, today).await })
    }
    fn payer_of<'a>(&'a mut self, member: &'a str) -> Fut<'a, Option<String>> {
        Box::pin(async move { self.q()?.payer_of(member).await })
    }
    fn region<'a>(&'a mut self, ssn: &'a str) -> Fut<'a, Option<String>> {
        Box::pin(async move { self.q()?.region(ssn).await })
    }
    fn active_members<'a>(&'a mut self, holder: &'a str) -> Fut<'a, u32> {
        Box::pin(async move { self.q()?.active_members(holder).await })
    }
    fn revoked_since<'a>(&'a mut self, m: &'a str, h: &'a str, cutoff: &'a str) -> Since<'a> {
        Box::pin(async move { self.q()?.revoked_since(m, h, cutoff).await })
    }
}

impl WriteTx for PgTx<'_> {
    fn insert_link<'a>(&'a mut self, req: &'a BindRequest<'_>) -> Fut<'a, bool> {
        Box::pin(async move {
            let inserted = self
                .q()?
                .c
                .execute(
                    write::INSERT_LINK_SQL,
                    &[
                        &req.holder.expose(),
                        &req.member.expose(),
                        &req.relation.as_str(),
                        &req.channel.as_str(),
                        &req.operator,
                        &crate::registry::sqlite::now_rfc3339(),
                    ],
                )
                .await;
            match inserted {
                Ok(_) => Ok(true),
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                    Ok(false)
                }
                Err(e) => Err(self.pg.err(&e)),
            }
        })
    }

    fn revoke<'a>(&'a mut self, holder: &'a str, member: &'a str) -> Fut<'a, u64> {
        Box::pin(async move {
            self.q()?
                .c
                .execute(
                    write::REVOKE_SQL,
                    &[&crate::registry::sqlite::now_rfc3339(), &holder, &member],
                )
                .await
                .map_err(|e| self.pg.err(&e))
        })
    }

    fn refresh<'a>(&'a mut self, ssns: &'a [&'a str]) -> Fut<'a, ()> {
        Box::pin(async move { self.pg.refresh(self.q()?.c, ssns).await })
    }

    fn rebuild(&mut self) -> Fut<'_, u64> {
        Box::pin(async move { self.pg.rebuild(self.q()?.c).await })
    }

    fn differing<'a>(&'a mut self, each: &'a mut (dyn FnMut(&str) + Send)) -> Fut<'a, Drift> {
        Box::pin(async move { self.pg.differing(self.q()?.c, each).await })
    }

    fn append<'a>(&'a mut self, e: &'a Entry<'_>) -> Fut<'a, ()> {
        Box::pin(async move {
            let sealed = self.pg.append(self.q()?.c, e).await?;
            self.sealed = sealed.or(self.sealed);
            Ok(())
        })
    }

    fn audit_head(&mut self) -> Fut<'_, Option<(i64, String)>> {
        Box::pin(async move {
            match self
                .q()?
                .c
                .query_opt(audit::HEAD_SQL, &[])
                .await
                .map_err(|e| self.pg.err(&e))?
            {
                Some(r) => Ok(Some((r.req_int(0)?, r.req_text(1)?))),
                None => Ok(None),
            }
        })
    }

    fn insert_audit<'a>(&'a mut self, r: &'a AuditRow) -> Fut<'a, ()> {
        Box::pin(async move {
            insert_audit(self.q()?.c, r)
                .await
                .map_err(|e| self.pg.err(&e))
        })
    }

    fn chain_alg(&mut self) -> Fut<'_, Option<HashAlg>> {
        Box::pin(async move {
            let name = match self
                .q()?
                .c
                .query_opt(seal::META_HASH_SQL, &[])
                .await
                .map_err(|e| self.pg.err(&e))?
            {
                Some(r) => r.text(0)?,
                None => None,
            };
            seal::recorded_alg(name).map_err(RegistryError::Corrupt)
        })
    }

    fn record_alg(&mut self, alg: HashAlg) -> Fut<'_, ()> {
        Box::pin(async move {
            self.q()?
                .c
                .execute(seal::SET_META_HASH_SQL, &[&alg.as_str()])
                .await
                .map_err(|e| self.pg.err(&e))?;
            self.pg.audit.set_alg(alg);
            Ok(())
        })
    }

    fn commit(&mut self) -> Fut<'_, ()> {
        Box::pin(async move {
            match self.tx.take() {
                Some(tx) => tx.commit().await.map_err(|e| self.pg.err(&e))?,
                None => return Ok(()),
            }
            // Committed: the key moves past the rows just sealed.
            Ok(self.pg.audit.committed(self.sealed.take())?)
        })
    }
}

impl Postgres {
    /// Opens a write transaction: the registry's advisory write lock,
    /// waited for at most `busy_timeout` (then `registry_unavailable`).
    pub(crate) async fn write_tx<'c>(
        &self,
        c: &'c mut deadpool_postgres::Object,
    ) -> Result<Transaction<'c>, RegistryError> {
        let e = |e: tokio_postgres::Error| self.err(&e);
        let tx = c.transaction().await.map_err(e)?;
        tx.batch_execute(&format!(
            "SET LOCAL lock_timeout = {}",
            self.busy_timeout.as_millis().max(1)
        ))
        .await
        .map_err(e)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])
            .await
            .map_err(e)?;
        Ok(tx)
    }

    /// Whether audit rows go through migration 002's function: an
    /// unsealed SHA-256 chain.
    pub(crate) fn audit_fast_path(&self) -> bool {
        matches!(self.audit.sealer(), Ok(None)) && self.audit.alg() == HashAlg::Sha256
    }

    /// Appends an audit row inside a write transaction (which holds the
    /// lock; on the fast path the function takes it too), sealed when this
    /// box seals; returns the seal index to move the key past once the
    /// transaction commits.
    pub(crate) async fn append(
        &self,
        c: &impl GenericClient,
        e: &Entry<'_>,
    ) -> Result<Option<i64>, RegistryError> {
        if !self.audit_fast_path() {
            // Sealed or SM3: the row is made in Rust (the key stays on the
            // box; PostgreSQL has no SM3), under the caller's write lock.
            let sealer = self.audit.sealer()?;
            let err = |e: tokio_postgres::Error| self.err(&e);
            let head = match c.query_opt(audit::HEAD_SQL, &[]).await.map_err(err)? {
                Some(r) => Some((r.req_int(0)?, r.req_text(1)?)),
                None => None,
            };
            let mut row = AuditRow::next(head, e, self.audit.alg());
            if let Some(s) = sealer {
                let last = c
                    .query_one(seal::LAST_SEAL_SQL, &[&s.box_id()])
                    .await
                    .map_err(err)?
                    .int(0)?;
                row.seal = Some(s.seal(last, &row.hash)?);
            }
            insert_audit(c, &row).await.map_err(err)?;
            return Ok(row.seal.map(|s| s.index));
        }
        // One round trip: migration 002's function takes the lock, reads
        // the head and appends (in the caller's transaction, or in its own
        // when called alone).
        let st = c
            .prepare_cached("SELECT cardlink_audit_append($1, $2, $3, $4, $5, $6, $7)")
            .await
            .map_err(|e| self.err(&e))?;
        let timeout_ms = i32::try_from(self.busy_timeout.as_millis().max(1)).unwrap_or(i32::MAX);
        c.query_one(
            &st,
            &[
                &WRITE_LOCK,
                &timeout_ms,
                &crate::registry::sqlite::now_rfc3339(),
                &e.actor,
                &e.action,
                &e.ssn.map(|s| s.expose()),
                &e.outcome,
            ],
        )
        .await
        .map(|_| None)
        .map_err(|e| self.err(&e))
    }

    /// Rewrites the derived rows of `ssns` from the view.
    pub(crate) async fn refresh(
        &self,
        tx: &Transaction<'_>,
        ssns: &[&str],
    ) -> Result<(), RegistryError> {
        let err = |e: tokio_postgres::Error| self.err(&e);
        tx.execute("DELETE FROM resolution WHERE ssn = ANY($1)", &[&ssns])
            .await
            .map_err(err)?;
        tx.execute(
            &format!(
                "INSERT INTO resolution ({COLUMNS}) SELECT {COLUMNS} FROM resolution_source WHERE ssn = ANY($1)"
            ),
            &[&ssns],
        )
        .await
        .map_err(err)?;
        Ok(())
    }

    /// Rebuilds the whole read model from the view.
    pub(crate) async fn rebuild(&self, tx: &Transaction<'_>) -> Result<u64, RegistryError> {
        let err = |e: tokio_postgres::Error| self.err(&e);
        tx.batch_execute("DELETE FROM resolution")
            .await
            .map_err(err)?;
        tx.execute(
            &format!(
                "INSERT INTO resolution ({COLUMNS}) SELECT {COLUMNS} FROM resolution_source ORDER BY ssn"
            ),
            &[],
        )
        .await
        .map_err(err)
    }

    /// Row counts.
    pub fn stats(&self) -> Result<Stats, RegistryError> {
        self.run_bulk(async |c| {
            let r = c
                .query_one(
                    "SELECT (SELECT count(*) FROM persons), (SELECT count(*) FROM cards), \
                     (SELECT count(*) FROM family_links WHERE status = 'active'), \
                     (SELECT count(*) FROM accounts), (SELECT count(*) FROM contributions), \
                     (SELECT count(*) FROM audit)",
                    &[],
                )
                .await
                .map_err(|e| self.err(&e))?;
            let n = |i| r.req_int(i).map(|n| n as u64);
            Ok(Stats {
                persons: n(0)?,
                cards: n(1)?,
                active_links: n(2)?,
                accounts: n(3)?,
                contributions: n(4)?,
                audit: n(5)?,
            })
        })
    }

    /// PostgreSQL enforces keys, references and checks on every write, so
    /// there is nothing to scan; this checks that every constraint is
    /// validated (none was added `NOT VALID` by hand) and that the audit
    /// triggers are in place.
    pub fn integrity(&self) -> Result<Vec<String>, RegistryError> {
        self.run_bulk(async |c| {
            let rows = c
                .query(
                    "SELECT 'constraint ' || conname || ' on ' || conrelid::regclass || ' is not validated' \
                       FROM pg_constraint WHERE NOT convalidated AND connamespace = current_schema()::regnamespace \
                     UNION ALL \
                     SELECT 'audit trigger ' || t || ' is missing or disabled' \
                       FROM unnest(ARRAY['audit_no_update', 'audit_no_truncate']) t \
                      WHERE NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = t AND tgenabled <> 'D')",
                    &[],
                )
                .await
                .map_err(|e| self.err(&e))?;
            rows.iter().map(|r| r.req_text(0)).collect()
        })
    }

    /// Resolves a card read or a typed identifier, judging expiry against
    /// `today`.
    pub async fn resolve_on(
        &self,
        lookup: &Lookup,
        today: Date,
    ) -> Result<Resolution, RegistryError> {
        call!(self, |c| {
            resolve::resolve_with(&Pg { c: &*c, pg: self }, lookup, today).await
        })
    }

    /// Resolves, then writes the audit row (see [`write::audited`]), on
    /// one pooled connection.
    pub async fn resolve_audited(
        &self,
        actor: &str,
        lookup: &Lookup,
        today: Date,
    ) -> Result<Resolution, RegistryError> {
        call!(self, |c| {
            let r = resolve::resolve_with(&Pg { c: &*c, pg: self }, lookup, today).await?;
            write::audited(&mut PgConn::new(c, self), actor, lookup, r).await
        })
    }

    /// Members currently covered by `holder`'s account.
    pub async fn members(&self, holder: &Ssn) -> Result<Vec<Member>, RegistryError> {
        let json: Option<String> = call!(self, |c| {
            Pg { c: &*c, pg: self }
                .text(resolve::MEMBERS_SQL, &[&holder.expose()])
                .await
        })?;
        json.map_or(Ok(Vec::new()), |j: String| resolve::parse_members(&j))
    }

    /// The person's payment records of the last `months` months that have
    /// records, newest first.
    pub async fn contributions(
        &self,
        ssn: &Ssn,
        months: u32,
    ) -> Result<Vec<Contribution>, RegistryError> {
        call!(self, |c| {
            let rows = c
                .query(
                    resolve::CONTRIBUTIONS_SQL,
                    &[&ssn.expose(), &i64::from(months)],
                )
                .await
                .map_err(|e| self.err(&e))?;
            rows.iter().map(Contribution::read).collect()
        })
    }

    /// See [`write::bind`].
    pub async fn bind_on(
        &self,
        req: &BindRequest<'_>,
        policy: &BindPolicy,
        today: Date,
    ) -> Result<AuditRef, BindError> {
        call!(self, |c| write::bind(
            &mut PgConn::new(c, self),
            req,
            policy,
            today
        )
        .await)
    }

    /// See [`write::unbind`].
    pub async fn unbind(
        &self,
        holder: &Ssn,
        member: &Ssn,
        operator: &str,
        actor: &str,
    ) -> Result<AuditRef, BindError> {
        call!(self, |c| {
            write::unbind(&mut PgConn::new(c, self), holder, member, operator, actor).await
        })
    }

    /// See [`write::record_ref`].
    pub async fn record_ref(&self, e: &Entry<'_>) -> Result<AuditRef, RegistryError> {
        call!(self, |c| write::record_ref(&mut PgConn::new(c, self), e)
            .await)
    }

    /// Appends one audit row in its own transaction.
    pub async fn record(&self, e: &Entry<'_>) -> Result<(), RegistryError> {
        call!(self, |c| PgConn::new(c, self).record(e).await)
    }

    /// Every audit row in id order, streamed.
    pub fn audit_rows(
        &self,
        each: &mut dyn FnMut(AuditRow) -> Result<(), RegistryError>,
    ) -> Result<u64, RegistryError> {
        self.run_bulk(async |c| {
            let err = |e: tokio_postgres::Error| self.err(&e);
            let tx = c.transaction().await.map_err(err)?;
            let rows = tx
                .query_raw(audit::ROWS_SQL, std::iter::empty::<i32>())
                .await
                .map_err(err)?;
            futures::pin_mut!(rows);
            let mut n = 0;
            while let Some(r) = rows.next().await {
                let r = r.map_err(err)?;
                n += 1;
                each(AuditRow::read(&r)?)?;
            }
            Ok(n)
        })
    }

    /// See [`write::load_audit`].
    pub fn load_audit(&mut self, rows: &[AuditRow], alg: HashAlg) -> Result<(), RegistryError> {
        self.run_bulk(async |c| write::load_audit(&mut PgConn::new(c, self), rows, alg).await)
    }

    /// The SSNs whose derived row differs from the view, with the kind of
    /// difference; set-based (a full join of the table and the view).
    async fn differing(
        &self,
        c: &impl GenericClient,
        each: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Drift, RegistryError> {
        let rows = c
            .query_raw(
                "SELECT coalesce(s.ssn, r.ssn), r.ssn IS NULL, s.ssn IS NULL \
                   FROM resolution_source s FULL JOIN resolution r ON r.ssn = s.ssn \
                  WHERE s.ssn IS NULL OR r.ssn IS NULL OR ROW(s.*) IS DISTINCT FROM ROW(r.*) \
                  ORDER BY 1",
                std::iter::empty::<i32>(),
            )
            .await
            .map_err(|e| self.err(&e))?;
        futures::pin_mut!(rows);
        let mut drift = Drift::default();
        while let Some(r) = rows.next().await {
            let r = r.map_err(|e| self.err(&e))?;
            let flag = |i| r.try_get::<_, bool>(i).map_err(|e| bad_column(i, e));
            let (ssn, missing, orphaned) = (r.req_text(0)?, flag(1)?, flag(2)?);
            match (missing, orphaned) {
                (true, _) => drift.missing += 1,
                (_, true) => drift.orphaned += 1,
                _ => drift.stale += 1,
            }
            if drift.examples.len() < Drift::EXAMPLES {
                drift.examples.push(ssn.clone());
            }
            each(&ssn);
        }
        Ok(drift)
    }

    /// How the read model differs from its definition.
    pub fn drift(&self) -> Result<Drift, RegistryError> {
        self.run_bulk(async |c| self.differing(&*c, &mut |_| ()).await)
    }

    /// See [`write::repair`].
    pub fn repair(&mut self, actor: &str) -> Result<Repair, RegistryError> {
        self.run_bulk(async |c| write::repair(&mut PgConn::new(c, self), actor).await)
    }

    /// See [`crate::registry::Registry::sample_cards`].
    pub fn sample_cards(&self, today: Date) -> Result<Vec<Vec<demo::SampleCard>>, RegistryError> {
        let today = today.to_string();
        self.run(async |c| {
            let mut groups = Vec::new();
            for q in &demo::sample_queries() {
                let rows = c.query(q, &[&today]).await.map_err(|e| self.err(&e))?;
                groups.push(
                    rows.iter()
                        .map(demo::SampleCard::read)
                        .collect::<Result<_, _>>()?,
                );
            }
            Ok(groups)
        })
    }
}

async fn insert_audit(tx: &impl GenericClient, r: &AuditRow) -> Result<(), tokio_postgres::Error> {
    let st = tx.prepare_cached(audit::INSERT_SQL).await?;
    let seal = r.seal.as_ref();
    tx.execute(
        &st,
        &[
            &r.id,
            &r.at,
            &r.actor,
            &r.action,
            &r.ssn,
            &r.outcome,
            &r.prev_hash,
            &r.hash,
            &seal.map(|s| &s.box_id),
            &seal.map(|s| s.index),
            &seal.map(|s| &s.mac),
        ],
    )
    .await
    .map(drop)
}
