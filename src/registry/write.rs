//! The write side, written once for both backends: bind, unbind, repair,
//! an audit row alone, loading a copied audit chain, and a resolution with
//! its audit row.
//!
//! Each backend offers a [`Conn`] (SQLite: the registry's one connection;
//! PostgreSQL: a pooled connection) that opens a [`WriteTx`]: a write
//! transaction holding the backend's write
//! lock (SQLite: `BEGIN IMMEDIATE`, opened only by [`Sqlite::write_tx`];
//! PostgreSQL: the advisory write lock). The transaction answers the bind
//! rules' questions ([`Facts`]) and makes the changes: insert a link,
//! revoke one, refresh derived rows, append to the audit chain, commit.
//! Dropping it uncommitted rolls back.
//!
//! The functions here are async so that PostgreSQL awaits its round trips
//! on the caller's runtime; SQLite's answers are ready at once, so its
//! synchronous methods drive them with `block_on` without ever suspending.

use firmware_protocol::{Date, Ssn};
use rusqlite::ErrorCode;

use super::audit::{self, AuditRef, Entry};
use super::bind::{self, BindError, BindRequest, Facts, Since, SqliteFacts};
use super::derived::{self, repair_outcome, Drift, Repair, REBUILD_ABOVE};
use super::hash::HashAlg;
use super::policy::BindPolicy;
use futures::executor::block_on;

use super::error::RegistryError;
use super::resolve::{now, CardRow, Fut, Lookup, Resolution};
use super::sqlite::{now_rfc3339, Sqlite};

type Answer<T> = Result<T, RegistryError>;

/// One write transaction of a backend, holding its write lock; it
/// answers the bind rules' questions ([`Facts`]) inside itself.
///
/// The shared functions take `dyn` objects whose futures are boxed and
/// `Send` (the shape of `async-trait`): generic `async` code over traits
/// with associated types or `impl Future` returns cannot yet be proven
/// `Send` by rustc, and PostgreSQL's calls run in the daemon's tasks.
pub(crate) trait WriteTx: Facts + Send {
    /// Inserts the active link of `req`; `false` when the partial unique
    /// index (one active payer per member) refuses it.
    fn insert_link<'a>(&'a mut self, req: &'a BindRequest<'_>) -> Fut<'a, bool>;
    /// Revokes the active link between `holder` and `member`; returns how
    /// many links were revoked.
    fn revoke<'a>(&'a mut self, holder: &'a str, member: &'a str) -> Fut<'a, u64>;
    /// Rewrites the derived rows of `ssns` from the view.
    fn refresh<'a>(&'a mut self, ssns: &'a [&'a str]) -> Fut<'a, ()>;
    /// Rewrites the whole read model from the view; returns the rows written.
    fn rebuild(&mut self) -> Fut<'_, u64>;
    /// How the read model differs from the view, calling `each` with every
    /// differing SSN in key order.
    fn differing<'a>(&'a mut self, each: &'a mut (dyn FnMut(&str) + Send)) -> Fut<'a, Drift>;
    /// Appends one row to the audit chain.
    fn append<'a>(&'a mut self, e: &'a Entry<'_>) -> Fut<'a, ()>;
    /// `(id, hash)` of the chain's last row.
    fn audit_head(&mut self) -> Fut<'_, Option<(i64, String)>>;
    /// Writes a copied audit row as it is.
    fn insert_audit<'a>(&'a mut self, r: &'a audit::Row) -> Fut<'a, ()>;
    /// The chain's algorithm as recorded (`None`: not recorded, SHA-256).
    fn chain_alg(&mut self) -> Fut<'_, Option<HashAlg>>;
    /// Records the chain's algorithm (an empty chain taking a copied one).
    fn record_alg(&mut self, alg: HashAlg) -> Fut<'_, ()>;
    /// Commits; the transaction takes nothing more afterwards.
    fn commit(&mut self) -> Fut<'_, ()>;
}

/// A connection of a backend that opens write transactions. Public within
/// the crate so that import uses the same seam.
pub(crate) trait Conn: Send {
    /// Opens a write transaction (waiting for the write lock at most the
    /// registry's `busy_timeout`, then [`RegistryError::Busy`] on SQLite,
    /// [`RegistryError::Unavailable`] on PostgreSQL).
    fn begin(&mut self) -> Fut<'_, Box<dyn WriteTx + '_>>;
    /// Appends one audit row in a transaction of its own.
    fn record<'a>(&'a mut self, e: &'a Entry<'_>) -> Fut<'a, ()>;
}

/// Binds `req.member` to `req.holder`'s account with every rule, the link,
/// the derived rows and the audit row in one transaction. A refusal is
/// audited in a transaction of its own; a registry failure is logged.
pub(crate) async fn bind(
    c: &mut dyn Conn,
    req: &BindRequest<'_>,
    policy: &BindPolicy,
    today: Date,
) -> Result<AuditRef, BindError> {
    let result = try_bind(c, req, policy, today).await;
    match &result {
        Ok(_) => {}
        Err(e @ BindError::Registry(_)) => {
            tracing::warn!(holder = %req.holder, member = %req.member, error = %e, "bind failed");
        }
        Err(e) => {
            c.record(&Entry {
                actor: req.actor,
                action: "bind",
                ssn: Some(&req.member),
                outcome: &format!("refused:{}", e.code()),
            })
            .await?;
        }
    }
    result
}

async fn try_bind(
    c: &mut dyn Conn,
    req: &BindRequest<'_>,
    policy: &BindPolicy,
    today: Date,
) -> Result<AuditRef, BindError> {
    let mut tx = c.begin().await?;
    bind::check_rules(&mut *tx, req, policy, today).await?;
    // The partial unique index is the last line of defence.
    if !tx.insert_link(req).await? {
        return Err(BindError::MemberHasPayer);
    }
    tx.refresh(&[req.holder.expose(), req.member.expose()])
        .await?;
    tx.append(&Entry {
        actor: req.actor,
        action: "bind",
        ssn: Some(&req.member),
        outcome: &bind::bind_outcome(req),
    })
    .await?;
    let written = written(&mut *tx).await?;
    tx.commit().await?;
    Ok(written)
}

/// The audit row just appended in `tx` (the chain's head under the write
/// lock): what a receipt prints.
async fn written(tx: &mut dyn WriteTx) -> Result<AuditRef, RegistryError> {
    match tx.audit_head().await? {
        Some((seq, hash)) => Ok(AuditRef { seq, hash }),
        None => Err(RegistryError::Corrupt(
            "the audit row just written is not the chain's head".into(),
        )),
    }
}

/// Appends one audit row in a write transaction of its own and returns
/// it: a showing that prints a receipt (`print_records`) names its row.
pub(crate) async fn record_ref(c: &mut dyn Conn, e: &Entry<'_>) -> Answer<AuditRef> {
    let mut tx = c.begin().await?;
    tx.append(e).await?;
    let w = written(&mut *tx).await?;
    tx.commit().await?;
    Ok(w)
}

/// Revokes the active link between `holder` and `member`, audited (a
/// refusal too, in the same transaction).
pub(crate) async fn unbind(
    c: &mut dyn Conn,
    holder: &Ssn,
    member: &Ssn,
    operator: &str,
    actor: &str,
) -> Result<AuditRef, BindError> {
    let mut tx = c.begin().await?;
    let n = tx.revoke(holder.expose(), member.expose()).await?;
    if n > 0 {
        tx.refresh(&[holder.expose(), member.expose()]).await?;
    }
    tx.append(&Entry {
        actor,
        action: "unbind",
        ssn: Some(member),
        outcome: &bind::unbind_outcome(n, holder, operator),
    })
    .await?;
    let written = written(&mut *tx).await?;
    tx.commit().await?;
    if n == 0 {
        Err(BindError::NotLinked)
    } else {
        Ok(written)
    }
}

/// Rewrites what differs in the read model (everything above
/// [`REBUILD_ABOVE`] rows), in one transaction with an audit row.
pub(crate) async fn repair(c: &mut dyn Conn, actor: &str) -> Result<Repair, RegistryError> {
    let mut tx = c.begin().await?;
    let mut ssns = Vec::new();
    let drift = tx
        .differing(&mut |s: &str| {
            if ssns.len() as u64 <= REBUILD_ABOVE {
                ssns.push(s.to_string());
            }
        })
        .await?;
    let rebuilt = drift.total() > REBUILD_ABOVE;
    if rebuilt {
        tx.rebuild().await?;
    } else {
        let keys: Vec<&str> = ssns.iter().map(String::as_str).collect();
        tx.refresh(&keys).await?;
    }
    tx.append(&Entry {
        actor,
        action: "repair",
        ssn: None,
        outcome: &repair_outcome(&drift, rebuilt),
    })
    .await?;
    tx.commit().await?;
    Ok(Repair { drift, rebuilt })
}

/// Writes `rows` of a chain of `alg` as they are (seals included), if
/// they continue the chain; an empty chain takes `alg`.
pub(crate) async fn load_audit(
    c: &mut dyn Conn,
    rows: &[audit::Row],
    alg: HashAlg,
) -> Result<(), RegistryError> {
    let mut tx = c.begin().await?;
    let head = tx.audit_head().await?;
    if head.is_none() {
        tx.record_alg(alg).await?;
    } else {
        let have = tx.chain_alg().await?.unwrap_or_default();
        if have != alg {
            return Err(RegistryError::Config(format!(
                "cannot append rows of a {alg} chain to this registry's {have} chain"
            )));
        }
    }
    audit::check_continues(head, rows, alg)?;
    for r in rows {
        tx.insert_audit(r).await?;
    }
    tx.commit().await
}

/// Writes the audit row of resolution `r` of `lookup` and returns it: a
/// resolution without its row is an error (nothing is shown that is not
/// audited).
pub(crate) async fn audited(
    c: &mut dyn Conn,
    actor: &str,
    lookup: &Lookup,
    r: Resolution,
) -> Result<Resolution, RegistryError> {
    let ssn = r.person.as_ref().map(|p| p.ssn).or(lookup.ssn);
    c.record(&Entry {
        actor,
        action: "resolve",
        ssn: ssn.as_ref(),
        outcome: r.outcome.as_str(),
    })
    .await?;
    Ok(r)
}

/// SQLite's write transaction: `BEGIN IMMEDIATE` on the registry's
/// connection, rolled back when dropped uncommitted.
pub(crate) struct SqliteTx<'c> {
    s: &'c mut Sqlite,
    open: bool,
    /// The last seal index written in this transaction.
    sealed: Option<i64>,
}

impl SqliteTx<'_> {
    /// The transaction's connection, for SQLite-only work inside it.
    pub(crate) fn conn(&self) -> &rusqlite::Connection {
        &self.s.conn
    }

    fn sql(&self, e: rusqlite::Error) -> RegistryError {
        self.s.sql(e)
    }

    /// The rules' questions, answered on this transaction's connection.
    fn facts(&self) -> SqliteFacts<'_> {
        SqliteFacts {
            conn: &self.s.conn,
            timeout: self.s.busy_timeout,
        }
    }

    fn commit_now(&mut self) -> Answer<()> {
        self.s
            .conn
            .execute_batch("COMMIT")
            .map_err(|e| self.s.sql(e))?;
        self.open = false;
        // Committed: the key moves past the rows just sealed.
        Ok(self.s.audit.committed(self.sealed.take())?)
    }

    /// Appends one audit row (sealed when this writer seals).
    fn append_now(&mut self, e: &Entry<'_>) -> Answer<()> {
        let t = self.s.busy_timeout;
        let sealed = audit::append(&self.s.conn, e, &self.s.audit, |e| {
            RegistryError::from_sql(e, t)
        })?;
        self.sealed = sealed.or(self.sealed);
        Ok(())
    }
}

impl Drop for SqliteTx<'_> {
    fn drop(&mut self) {
        if self.open && !self.s.conn.is_autocommit() {
            if let Err(e) = self.s.conn.execute_batch("ROLLBACK") {
                tracing::warn!(error = %e, "rolling back a registry transaction failed");
            }
        }
    }
}

impl Sqlite {
    /// Opens a write transaction: `BEGIN IMMEDIATE`, so that two writers
    /// never deadlock (the only place outside import that opens one).
    pub(crate) fn write_tx(&mut self) -> Answer<SqliteTx<'_>> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| self.sql(e))?;
        Ok(SqliteTx {
            s: self,
            open: true,
            sealed: None,
        })
    }

    /// Runs one of this module's functions; SQLite never suspends them.
    fn now<T>(&mut self, f: impl AsyncFnOnce(&mut Sqlite) -> T) -> T {
        block_on(f(self))
    }

    /// See [`bind`].
    pub(crate) fn bind_on(
        &mut self,
        req: &BindRequest<'_>,
        policy: &BindPolicy,
        today: Date,
    ) -> Result<AuditRef, BindError> {
        self.now(async |s| bind(s, req, policy, today).await)
    }

    /// See [`unbind`].
    pub fn unbind(
        &mut self,
        holder: &Ssn,
        member: &Ssn,
        operator: &str,
        actor: &str,
    ) -> Result<AuditRef, BindError> {
        self.now(async |s| unbind(s, holder, member, operator, actor).await)
    }

    /// See [`repair`].
    pub fn repair(&mut self, actor: &str) -> Answer<Repair> {
        self.now(async |s| repair(s, actor).await)
    }

    /// See [`record_ref`].
    pub fn record_ref(&mut self, e: &Entry<'_>) -> Answer<AuditRef> {
        self.now(async |s| record_ref(s, e).await)
    }

    /// Appends one audit row in its own transaction.
    pub fn record(&mut self, e: &Entry<'_>) -> Answer<()> {
        let mut tx = self.write_tx()?;
        tx.append_now(e)?;
        tx.commit_now()
    }

    /// See [`load_audit`].
    pub fn load_audit(&mut self, rows: &[audit::Row], alg: HashAlg) -> Answer<()> {
        self.now(async |s| load_audit(s, rows, alg).await)
    }

    /// Resolves, then writes the audit row (see [`audited`]).
    pub fn resolve_audited(
        &mut self,
        actor: &str,
        lookup: &Lookup,
        today: Date,
    ) -> Answer<Resolution> {
        let r = self.resolve_on(lookup, today)?;
        self.now(async |s| audited(s, actor, lookup, r).await)
    }
}

impl Conn for Sqlite {
    fn begin(&mut self) -> Fut<'_, Box<dyn WriteTx + '_>> {
        now(self.write_tx().map(|tx| Box::new(tx) as Box<dyn WriteTx>))
    }

    fn record<'a>(&'a mut self, e: &'a Entry<'_>) -> Fut<'a, ()> {
        now(Sqlite::record(self, e))
    }
}

/// The rules' questions inside SQLite's transaction: [`SqliteFacts`]'s
/// answers, which are ready at once.
impl Facts for SqliteTx<'_> {
    fn insurance<'a>(&'a mut self, ssn: &'a str) -> Fut<'a, Option<(String, String)>> {
        now(self.facts().insurance_now(ssn))
    }
    fn best_card<'a>(&'a mut self, ssn: &'a str, today: Date) -> Fut<'a, Option<CardRow>> {
        now(self.facts().best_card_now(ssn, today))
    }
    fn payer_of<'a>(&'a mut self, member: &'a str) -> Fut<'a, Option<String>> {
        now(self.facts().payer_of_now(member))
    }
    fn region<'a>(&'a mut self, ssn: &'a str) -> Fut<'a, Option<String>> {
        now(self.facts().region_now(ssn))
    }
    fn active_members<'a>(&'a mut self, holder: &'a str) -> Fut<'a, u32> {
        now(self.facts().active_members_now(holder))
    }
    fn revoked_since<'a>(&'a mut self, m: &'a str, h: &'a str, cutoff: &'a str) -> Since<'a> {
        now(self.facts().revoked_since_now(m, h, cutoff))
    }
}

impl WriteTx for SqliteTx<'_> {
    fn insert_link<'a>(&'a mut self, req: &'a BindRequest<'_>) -> Fut<'a, bool> {
        let inserted = self.conn().execute(
            INSERT_LINK_SQL,
            rusqlite::params![
                req.holder.expose(),
                req.member.expose(),
                req.relation.as_str(),
                req.channel.as_str(),
                req.operator,
                now_rfc3339()
            ],
        );
        now(match inserted {
            Ok(_) => Ok(true),
            Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => Ok(false),
            Err(e) => Err(self.sql(e)),
        })
    }

    fn revoke<'a>(&'a mut self, holder: &'a str, member: &'a str) -> Fut<'a, u64> {
        now(self
            .conn()
            .execute(REVOKE_SQL, rusqlite::params![now_rfc3339(), holder, member])
            .map(|n| n as u64)
            .map_err(|e| self.sql(e)))
    }

    fn refresh<'a>(&'a mut self, ssns: &'a [&'a str]) -> Fut<'a, ()> {
        now(derived::refresh(self.conn(), ssns).map_err(|e| self.sql(e)))
    }

    fn rebuild(&mut self) -> Fut<'_, u64> {
        now(derived::rebuild(self.conn()).map_err(|e| self.sql(e)))
    }

    fn differing<'a>(&'a mut self, each: &'a mut (dyn FnMut(&str) + Send)) -> Fut<'a, Drift> {
        let drift = derived::compare(self.conn(), |ssn, _| {
            each(ssn);
            Ok(())
        });
        now(drift.map_err(|e| self.sql(e)))
    }

    fn append<'a>(&'a mut self, e: &'a Entry<'_>) -> Fut<'a, ()> {
        now(self.append_now(e))
    }

    fn audit_head(&mut self) -> Fut<'_, Option<(i64, String)>> {
        now(audit::head(self.conn()).map_err(|e| self.sql(e)))
    }

    fn insert_audit<'a>(&'a mut self, r: &'a audit::Row) -> Fut<'a, ()> {
        now(audit::insert(self.conn(), r).map_err(|e| self.sql(e)))
    }

    fn chain_alg(&mut self) -> Fut<'_, Option<HashAlg>> {
        use rusqlite::OptionalExtension;
        let name = self
            .conn()
            .query_row(super::seal::META_HASH_SQL, [], |r| r.get::<_, String>(0))
            .optional()
            .map_err(|e| self.sql(e));
        now(name.and_then(|n| super::seal::recorded_alg(n).map_err(RegistryError::Corrupt)))
    }

    fn record_alg(&mut self, alg: HashAlg) -> Fut<'_, ()> {
        let done = self
            .conn()
            .execute(super::seal::SET_META_HASH_SQL, [alg.as_str()])
            .map(drop)
            .map_err(|e| self.sql(e));
        if done.is_ok() {
            self.s.audit.set_alg(alg);
        }
        now(done)
    }

    fn commit(&mut self) -> Fut<'_, ()> {
        now(self.commit_now())
    }
}

/// The statements of [`WriteTx`] that both backends read alike (`$n`
/// parameters, first used in order: SQLite numbers them by first use).
pub(crate) const INSERT_LINK_SQL: &str = "INSERT INTO family_links \
     (holder_ssn, member_ssn, relation, status, channel, operator, created_at) \
     VALUES ($1, $2, $3, 'active', $4, $5, $6)";
pub(crate) const REVOKE_SQL: &str = "UPDATE family_links SET status = 'revoked', revoked_at = $1 \
     WHERE holder_ssn = $2 AND member_ssn = $3 AND status = 'active'";
