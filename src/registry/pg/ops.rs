//! The registry's operations on PostgreSQL: the same statements as
//! SQLite's where the SQL is the same, the shared rules and chain.

use deadpool_postgres::{GenericClient, Transaction};
use firmware_protocol::{Date, Ssn};
use futures::StreamExt;
use tokio_postgres::types::ToSql;

use super::{Postgres, WRITE_LOCK};
use crate::registry::audit::{self, Entry, Row as AuditRow};
use crate::registry::bind::{self, BindError, BindRequest, Facts};
use crate::registry::derived::{repair_outcome, Drift, Repair, COLUMNS, REBUILD_ABOVE};
use crate::registry::policy::BindPolicy;
use crate::registry::resolve::{
    self, CardRow, Contribution, Derived, Lookup, Member, Query, Resolution, Row, Source,
};
use crate::registry::{demo, RegistryError, Stats};

fn read_row(r: &tokio_postgres::Row) -> Result<Row, tokio_postgres::Error> {
    let card_no: Option<String> = r.try_get(0)?;
    let card = match card_no {
        Some(card_no) => Some(CardRow {
            card_no,
            status: r.try_get(1)?,
            expires: r.try_get(2)?,
        }),
        None => None,
    };
    let ssn: Option<String> = r.try_get(4)?;
    let derived = match ssn {
        Some(ssn) => {
            let holder: Option<String> = r.try_get(10)?;
            let payer = match holder {
                Some(h) => Some((h, r.try_get(11)?, r.try_get(12)?, r.try_get(13)?)),
                None => None,
            };
            Some(Derived {
                ssn,
                name: r.try_get(5)?,
                sex: r.try_get(6)?,
                insurance_type: r.try_get(7)?,
                insurance_status: r.try_get(8)?,
                own_balance: r.try_get(9)?,
                payer,
                members: r.try_get(14)?,
                cards: r.try_get(15)?,
            })
        }
        None => None,
    };
    Ok(Row {
        card,
        owner: r.try_get::<_, Option<String>>(3)?.unwrap_or_default(),
        derived,
    })
}

/// Answers for [`resolve::resolve_with`] and [`bind::check_rules`] from
/// one client or transaction.
struct Pg<'a, C> {
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
        match self.opt(sql, params).await? {
            Some(r) => r.try_get(0).map_err(|e| self.pg.err(&e)),
            None => Ok(None),
        }
    }
}

impl<C: GenericClient + Sync> Source for Pg<'_, C> {
    async fn row(&self, q: Query, key: &str) -> Result<Option<Row>, RegistryError> {
        match self.opt(q.sql(), &[&key]).await? {
            Some(r) => read_row(&r).map(Some).map_err(|e| self.pg.err(&e)),
            None => Ok(None),
        }
    }

    async fn best_card(&self, ssn: &str, today: Date) -> Result<Option<CardRow>, RegistryError> {
        let today = today.to_string();
        match self.opt(resolve::BEST_CARD, &[&ssn, &today]).await? {
            Some(r) => Ok(Some(CardRow {
                card_no: r.get(0),
                status: r.get(1),
                expires: r.get(2),
            })),
            None => Ok(None),
        }
    }
}

impl<C: GenericClient + Sync> Facts for Pg<'_, C> {
    async fn insurance(&mut self, ssn: &str) -> Result<Option<(String, String)>, RegistryError> {
        Ok(self
            .opt(bind::INSURANCE_SQL, &[&ssn])
            .await?
            .map(|r| (r.get(0), r.get(1))))
    }
    async fn best_card(
        &mut self,
        ssn: &str,
        today: Date,
    ) -> Result<Option<CardRow>, RegistryError> {
        Source::best_card(self, ssn, today).await
    }
    async fn payer_of(&mut self, member: &str) -> Result<Option<String>, RegistryError> {
        self.text(bind::PAYER_OF_SQL, &[&member]).await
    }
    async fn region(&mut self, ssn: &str) -> Result<Option<String>, RegistryError> {
        self.text(bind::REGION_SQL, &[&ssn]).await
    }
    async fn active_members(&mut self, holder: &str) -> Result<u32, RegistryError> {
        let n: i64 = self
            .opt(bind::ACTIVE_MEMBERS_SQL, &[&holder])
            .await?
            .map_or(0, |r| r.get(0));
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }
    async fn revoked_since(
        &mut self,
        member: &str,
        holder: &str,
        cutoff: &str,
    ) -> Result<Option<String>, RegistryError> {
        self.text(bind::REVOKED_SINCE_SQL, &[&member, &holder, &cutoff])
            .await
    }
}

impl Postgres {
    /// Opens a write transaction: the registry's advisory write lock,
    /// waited for at most `busy_timeout` (then `database_busy`).
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

    /// Appends an audit row inside a write transaction (which holds the lock).
    pub(crate) async fn append(
        &self,
        c: &impl GenericClient,
        e: &Entry<'_>,
    ) -> Result<(), RegistryError> {
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
                &crate::registry::now_rfc3339(),
                &e.actor,
                &e.action,
                &e.ssn.map(|s| s.expose()),
                &e.outcome,
            ],
        )
        .await
        .map(drop)
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
            let n = |i| r.get::<_, i64>(i) as u64;
            Ok(Stats {
                persons: n(0),
                cards: n(1),
                active_links: n(2),
                accounts: n(3),
                contributions: n(4),
                audit: n(5),
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
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    /// Resolves a card read or a typed identifier, judging expiry against `today`.
    pub fn resolve_on(&self, lookup: &Lookup, today: Date) -> Result<Resolution, RegistryError> {
        self.run(async |c| resolve::resolve_with(&Pg { c: &*c, pg: self }, lookup, today).await)
    }

    /// Members currently covered by `holder`'s account.
    pub fn members(&self, holder: &Ssn) -> Result<Vec<Member>, RegistryError> {
        let json = self.run(async |c| {
            Pg { c: &*c, pg: self }
                .text(resolve::MEMBERS_SQL, &[&holder.expose()])
                .await
        })?;
        json.map_or(Ok(Vec::new()), |j: String| resolve::parse_members(&j))
    }

    /// The person's payment records of the last `months` months that have
    /// records, newest first.
    pub fn contributions(
        &self,
        ssn: &Ssn,
        months: u32,
    ) -> Result<Vec<Contribution>, RegistryError> {
        self.run(async |c| {
            let rows = c
                .query(
                    resolve::CONTRIBUTIONS_SQL,
                    &[&ssn.expose(), &i64::from(months)],
                )
                .await
                .map_err(|e| self.err(&e))?;
            Ok(rows
                .iter()
                .map(|r| Contribution {
                    month: r.get(0),
                    employer: r.get(1),
                    base_fen: r.get(2),
                    employee_fen: r.get(3),
                    employer_fen: r.get(4),
                    account_fen: r.get(5),
                })
                .collect())
        })
    }

    /// Binds with every rule, the link and its audit row in one write
    /// transaction (refusals are audited by the caller,
    /// [`crate::registry::Registry::bind_on`]).
    pub(crate) fn try_bind(
        &mut self,
        req: &BindRequest<'_>,
        policy: &BindPolicy,
        today: Date,
    ) -> Result<(), BindError> {
        self.run(async |c| {
            let tx = self.write_tx(c).await?;
            bind::check_rules(&mut Pg { c: &tx, pg: self }, req, policy, today).await?;
            let inserted = tx
                .execute(
                    "INSERT INTO family_links (holder_ssn, member_ssn, relation, status, channel, operator, created_at) \
                     VALUES ($1, $2, $3, 'active', $4, $5, $6)",
                    &[
                        &req.holder.expose(),
                        &req.member.expose(),
                        &req.relation.as_str(),
                        &req.channel.as_str(),
                        &req.operator,
                        &crate::registry::now_rfc3339(),
                    ],
                )
                .await;
            if let Err(e) = inserted {
                // The partial unique index is the last line of defence.
                if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
                    return Err(BindError::MemberHasPayer);
                }
                return Err(self.err(&e).into());
            }
            self.refresh(&tx, &[req.holder.expose(), req.member.expose()])
                .await?;
            self.append(
                &tx,
                &Entry {
                    actor: req.actor,
                    action: "bind",
                    ssn: Some(&req.member),
                    outcome: &bind::bind_outcome(req),
                },
            )
            .await?;
            tx.commit().await.map_err(|e| self.err(&e))?;
            Ok(())
        })
    }

    /// Revokes the active link between `holder` and `member`.
    pub fn unbind(
        &mut self,
        holder: &Ssn,
        member: &Ssn,
        operator: &str,
        actor: &str,
    ) -> Result<(), BindError> {
        let n = self.run(async |c| {
            let tx = self.write_tx(c).await?;
            let n = tx
                .execute(
                    "UPDATE family_links SET status = 'revoked', revoked_at = $3 \
                     WHERE holder_ssn = $1 AND member_ssn = $2 AND status = 'active'",
                    &[
                        &holder.expose(),
                        &member.expose(),
                        &crate::registry::now_rfc3339(),
                    ],
                )
                .await
                .map_err(|e| self.err(&e))?;
            if n > 0 {
                self.refresh(&tx, &[holder.expose(), member.expose()])
                    .await?;
            }
            let outcome = bind::unbind_outcome(n, holder, operator);
            self.append(
                &tx,
                &Entry {
                    actor,
                    action: "unbind",
                    ssn: Some(member),
                    outcome: &outcome,
                },
            )
            .await?;
            tx.commit().await.map_err(|e| self.err(&e))?;
            Ok::<_, RegistryError>(n)
        })?;
        if n == 0 {
            Err(BindError::NotLinked)
        } else {
            Ok(())
        }
    }

    /// Appends one audit row in its own transaction.
    pub fn record(&mut self, e: &Entry<'_>) -> Result<(), RegistryError> {
        self.run(async |c| self.append(&*c, e).await)
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
                .query_raw(
                    "SELECT id, at, actor, action, ssn, outcome, prev_hash, hash FROM audit ORDER BY id",
                    std::iter::empty::<i32>(),
                )
                .await
                .map_err(err)?;
            futures::pin_mut!(rows);
            let mut n = 0;
            while let Some(r) = rows.next().await {
                let r = r.map_err(err)?;
                n += 1;
                each(AuditRow {
                    id: r.get(0),
                    at: r.get(1),
                    actor: r.get(2),
                    action: r.get(3),
                    ssn: r.get(4),
                    outcome: r.get(5),
                    prev_hash: r.get(6),
                    hash: r.get(7),
                })?;
            }
            Ok(n)
        })
    }

    /// Writes `rows` as they are, if they continue the chain.
    pub fn load_audit(&mut self, rows: &[AuditRow]) -> Result<(), RegistryError> {
        self.run_bulk(async |c| {
            let tx = self.write_tx(c).await?;
            let head = tx
                .query_opt("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1", &[])
                .await
                .map_err(|e| self.err(&e))?
                .map(|r| (r.get::<_, i64>(0), r.get::<_, String>(1)));
            audit::check_continues(head, rows)?;
            for r in rows {
                insert_audit(&tx, r).await.map_err(|e| self.err(&e))?;
            }
            tx.commit().await.map_err(|e| self.err(&e))
        })
    }

    /// The SSNs whose derived row differs from the view, with the kind of
    /// difference; set-based (a full join of the table and the view).
    async fn differing(
        &self,
        c: &impl GenericClient,
        mut each: impl FnMut(String),
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
            let (ssn, missing, orphaned): (String, bool, bool) = (r.get(0), r.get(1), r.get(2));
            match (missing, orphaned) {
                (true, _) => drift.missing += 1,
                (_, true) => drift.orphaned += 1,
                _ => drift.stale += 1,
            }
            if drift.examples.len() < Drift::EXAMPLES {
                drift.examples.push(ssn.clone());
            }
            each(ssn);
        }
        Ok(drift)
    }

    /// How the read model differs from its definition.
    pub fn drift(&self) -> Result<Drift, RegistryError> {
        self.run_bulk(async |c| self.differing(&*c, |_| ()).await)
    }

    /// Rebuilds what differs in the read model, audited.
    pub fn repair(&mut self, actor: &str) -> Result<Repair, RegistryError> {
        self.run_bulk(async |c| {
            let tx = self.write_tx(c).await?;
            let mut ssns = Vec::new();
            let drift = self
                .differing(&tx, |s| {
                    if ssns.len() as u64 <= REBUILD_ABOVE {
                        ssns.push(s)
                    }
                })
                .await?;
            let rebuilt = drift.total() > REBUILD_ABOVE;
            if rebuilt {
                self.rebuild(&tx).await?;
            } else {
                let keys: Vec<&str> = ssns.iter().map(String::as_str).collect();
                self.refresh(&tx, &keys).await?;
            }
            self.append(
                &tx,
                &Entry {
                    actor,
                    action: "repair",
                    ssn: None,
                    outcome: &repair_outcome(&drift, rebuilt),
                },
            )
            .await?;
            tx.commit().await.map_err(|e| self.err(&e))?;
            Ok(Repair { drift, rebuilt })
        })
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
                        .map(|r| demo::SampleCard {
                            ssn: r.get(0),
                            card_no: r.get(1),
                            pan: r.get(2),
                            name: r.get(3),
                            issued: r.get(4),
                            expires: r.get(5),
                        })
                        .collect(),
                );
            }
            Ok(groups)
        })
    }
}

async fn insert_audit(tx: &Transaction<'_>, r: &AuditRow) -> Result<(), tokio_postgres::Error> {
    let st = tx
        .prepare_cached(
            "INSERT INTO audit (id, at, actor, action, ssn, outcome, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .await?;
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
        ],
    )
    .await
    .map(drop)
}
