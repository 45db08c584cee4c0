//! The family-link registry: a local SQLite database (rusqlite, bundled)
//! on one box, or a PostgreSQL database that many boxes share
//! ([`Database`] says which; [`pg`] is that backend).
//!
//! It answers "who is this card, whose account pays for them, whom does
//! their account cover" ([`Registry::resolve`]), enforces the binding rules
//! ([`Registry::bind`]), keeps the payment records a person may inquire
//! ([`Registry::contributions`]) and an append-only, hash-chained audit log
//! ([`audit`]). It knows nothing of sockets or readers.
//!
//! [`Registry`] is the seam: the daemon, the CLI and the display call its
//! methods and never learn which backend answers. Both backends enforce
//! the same rules with the same code: the binding rules
//! ([`bind::check_rules`]), the resolution ([`resolve::resolve_with`]) and
//! the audit chain ([`audit::Chain`]) are written once against small
//! traits that each backend implements with its own SQL, and so is the
//! write side ([`write`]: bind, unbind, repair, audit rows).
//!
//! A SQLite [`Registry`] owns one connection; the daemon keeps one for its
//! blocking worker (`daemon::store`), `cardlinkctl` opens its own. Concurrency between them is
//! SQLite's: WAL mode, `busy_timeout`, and write transactions started with
//! `BEGIN IMMEDIATE` so two writers never deadlock. A PostgreSQL registry
//! holds a small connection pool; writers of every box serialise on one
//! advisory lock (see [`pg`]).

pub mod audit;
pub(crate) mod bind;
pub mod consent;
pub mod crypt;
pub mod demo;
pub mod derived;
pub mod error;
pub mod files;
pub mod fleet;
pub mod hash;
pub mod import;
pub mod key;
pub mod pg;
pub mod policy;
pub(crate) mod resolve;
mod schema;
pub mod seal;
pub mod sqlite;
pub mod verify;
pub(crate) mod write;

use std::path::{Path, PathBuf};

use rusqlite::Connection;

pub use audit::{AuditRef, Entry};
pub use bind::{BindError, BindRequest, Channel};
pub use derived::{Drift, Repair};
pub use error::RegistryError;
pub use hash::HashAlg;
pub use key::{DbKey, KeySource};
pub use policy::{BindPolicy, Relation, Scope};
pub use resolve::{Contribution, Lookup, Member, Outcome, Payer, PersonInfo, Resolution, Role};
/// The statements a resolution sends by SSN and by card number (the
/// PostgreSQL benchmark sends them plainly, to tell the registry's own
/// cost from the server's).
pub use resolve::{BY_CARD_NO, BY_SSN};
pub use sqlite::{OpenOptions, Sqlite, Stats, DEFAULT_BUSY_TIMEOUT};

/// Where the registry lives: the `database` setting (config and
/// `cardlinkctl --database`). A `postgres://` or `postgresql://` URL, or a
/// libpq `key=value` connection string (`host=db dbname=registry …`,
/// [`pg::is_conninfo`]), is a shared PostgreSQL registry; anything else is
/// the path of a SQLite file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Database {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL or `key=value` string (libpq syntax;
    /// see [`pg::Target`]).
    Postgres(String),
}

impl Database {
    /// Reads a `database` setting.
    pub fn parse(s: &str) -> Database {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") || pg::is_conninfo(s) {
            Database::Postgres(s.to_string())
        } else {
            Database::Sqlite(PathBuf::from(s))
        }
    }

    /// The SQLite path, if this is one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Database::Sqlite(p) => Some(p),
            Database::Postgres(_) => None,
        }
    }
}

impl From<String> for Database {
    fn from(s: String) -> Self {
        Database::parse(&s)
    }
}

impl From<Database> for String {
    fn from(d: Database) -> String {
        match d {
            Database::Sqlite(p) => p.display().to_string(),
            Database::Postgres(u) => u,
        }
    }
}

impl From<&Path> for Database {
    fn from(p: &Path) -> Self {
        Database::Sqlite(p.to_path_buf())
    }
}

impl From<PathBuf> for Database {
    fn from(p: PathBuf) -> Self {
        Database::Sqlite(p)
    }
}

/// For logs and messages: the path, or the URL without its password.
impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(p) => write!(f, "{}", p.display()),
            Database::Postgres(u) => f.write_str(&pg::redact_url(u)),
        }
    }
}

/// The registry, on either backend.
#[derive(Debug)]
pub struct Registry {
    backend: Backend,
}

#[derive(Debug)]
enum Backend {
    Sqlite(Sqlite),
    Postgres(pg::Postgres),
}

/// Calls the same method on whichever backend this is.
macro_rules! dispatch {
    ($self:ident . $($call:tt)*) => {
        match &$self.backend {
            Backend::Sqlite(b) => b.$($call)*,
            Backend::Postgres(b) => b.$($call)*,
        }
    };
}
macro_rules! dispatch_mut {
    ($self:ident . $($call:tt)*) => {
        match &mut $self.backend {
            Backend::Sqlite(b) => b.$($call)*,
            Backend::Postgres(b) => b.$($call)*,
        }
    };
}

impl Registry {
    /// Opens (creating if needed) and migrates the registry at `db`: a
    /// SQLite file, or a PostgreSQL database (whose schema is created or
    /// upgraded unless `read_only`).
    pub fn open_database(db: &Database, opts: &OpenOptions) -> Result<Registry, RegistryError> {
        let backend = match db {
            Database::Sqlite(p) => Backend::Sqlite(Sqlite::open(p, opts)?),
            Database::Postgres(_) if opts.key.is_some() => {
                return Err(RegistryError::Config(
                    "a database key is for a SQLite registry; a PostgreSQL registry is encrypted at rest by its server (see README)".into(),
                ))
            }
            Database::Postgres(url) => Backend::Postgres(pg::Postgres::connect(url, opts)?),
        };
        Ok(Registry { backend })
    }

    /// Opens (creating if needed) and migrates the SQLite database at `path`.
    pub fn open(path: impl AsRef<Path>, opts: &OpenOptions) -> Result<Registry, RegistryError> {
        Ok(Registry {
            backend: Backend::Sqlite(Sqlite::open(path, opts)?),
        })
    }

    /// A registry on an open SQLite connection.
    pub fn from_sqlite(s: Sqlite) -> Registry {
        Registry {
            backend: Backend::Sqlite(s),
        }
    }

    /// An in-memory SQLite registry (tests, simulations).
    pub fn open_in_memory() -> Result<Registry, RegistryError> {
        Ok(Registry {
            backend: Backend::Sqlite(Sqlite::open_in_memory()?),
        })
    }

    /// `sqlite` or `postgresql`.
    pub fn backend_name(&self) -> &'static str {
        match &self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgresql",
        }
    }

    /// Whether this is a registry shared over the network (PostgreSQL),
    /// which can become unreachable.
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// A shared registry found unreachable is tried again once its backoff
    /// has passed (a no-op otherwise, and on SQLite). Returns whether it
    /// was tried and answered.
    pub fn reconnect(&self) -> bool {
        match &self.backend {
            Backend::Sqlite(_) => false,
            Backend::Postgres(p) => p
                .block(async { Ok::<_, RegistryError>(p.reconnect().await) })
                .unwrap_or(false),
        }
    }

    /// A PostgreSQL registry, to be driven on the caller's runtime from now
    /// on ([`pg::Postgres::into_async`]); a SQLite registry is given back.
    pub fn into_async_postgres(self) -> Result<pg::Postgres, Box<Registry>> {
        match self.backend {
            Backend::Postgres(p) => Ok(p.into_async()),
            backend => Err(Box::new(Registry { backend })),
        }
    }

    /// The SQLCipher key a SQLite registry was opened with (`None`: a
    /// plain file, or PostgreSQL).
    pub fn sqlite_key(&self) -> Option<&DbKey> {
        match &self.backend {
            Backend::Sqlite(s) => s.key.as_ref(),
            Backend::Postgres(_) => None,
        }
    }

    /// The SQLite connection, for tests, benchmarks and tools that compare
    /// raw SQL; `None` on PostgreSQL.
    pub fn sqlite_connection(&self) -> Option<&Connection> {
        match &self.backend {
            Backend::Sqlite(s) => Some(&s.conn),
            Backend::Postgres(_) => None,
        }
    }

    /// The SQLite connection.
    ///
    /// # Panics
    /// On a PostgreSQL registry; tests and benchmarks only.
    #[doc(hidden)]
    pub fn connection(&self) -> &Connection {
        match &self.backend {
            Backend::Sqlite(s) => &s.conn,
            Backend::Postgres(_) => panic!("connection() is SQLite's; this registry is PostgreSQL"),
        }
    }

    /// The schema version.
    pub fn schema_version(&self) -> Result<i64, RegistryError> {
        dispatch!(self.schema_version())
    }

    /// Every box that sent a heartbeat into this registry, by name
    /// ([`fleet`]).
    pub fn fleet(&self) -> Result<Vec<fleet::FleetBox>, RegistryError> {
        match &self.backend {
            Backend::Sqlite(s) => fleet::list_sqlite(&s.conn),
            Backend::Postgres(p) => p.block(p.fleet()),
        }
    }

    /// Row counts.
    pub fn stats(&self) -> Result<Stats, RegistryError> {
        dispatch!(self.stats())
    }

    /// The database's own checks (SQLite: `integrity_check` and
    /// `foreign_key_check`; PostgreSQL: the references). Returns the
    /// problems found (empty when sound).
    pub fn integrity(&self) -> Result<Vec<String>, RegistryError> {
        dispatch!(self.integrity())
    }

    /// Resolves a card read or a typed identifier, judging expiry against `today`.
    pub fn resolve_on(
        &self,
        lookup: &Lookup,
        today: firmware_protocol::Date,
    ) -> Result<Resolution, RegistryError> {
        match &self.backend {
            Backend::Sqlite(s) => s.resolve_on(lookup, today),
            Backend::Postgres(p) => p.block(p.resolve_on(lookup, today)),
        }
    }

    /// Resolves, then writes the resolution's audit row (a resolution whose
    /// row cannot be written is an error: nothing is shown that is not
    /// audited).
    pub fn resolve_audited(
        &mut self,
        actor: &str,
        lookup: &Lookup,
    ) -> Result<Resolution, RegistryError> {
        let today = firmware_protocol::Date::today_cst();
        match &mut self.backend {
            Backend::Sqlite(s) => s.resolve_audited(actor, lookup, today),
            Backend::Postgres(p) => p.block(p.resolve_audited(actor, lookup, today)),
        }
    }

    /// [`Registry::resolve_on`] with today's date (China Standard Time).
    pub fn resolve(&self, lookup: &Lookup) -> Result<Resolution, RegistryError> {
        self.resolve_on(lookup, firmware_protocol::Date::today_cst())
    }

    /// Members currently covered by `holder`'s account.
    pub fn members(&self, holder: &firmware_protocol::Ssn) -> Result<Vec<Member>, RegistryError> {
        match &self.backend {
            Backend::Sqlite(s) => s.members(holder),
            Backend::Postgres(p) => p.block(p.members(holder)),
        }
    }

    /// The person's payment records of the last `months` months that have
    /// records, newest first.
    pub fn contributions(
        &self,
        ssn: &firmware_protocol::Ssn,
        months: u32,
    ) -> Result<Vec<Contribution>, RegistryError> {
        match &self.backend {
            Backend::Sqlite(s) => s.contributions(ssn, months),
            Backend::Postgres(p) => p.block(p.contributions(ssn, months)),
        }
    }

    /// Binds `member` to `holder`'s account, enforcing every rule, judging
    /// card expiry against `today`. The link and its audit row are one
    /// transaction; refusals are audited too (see [`write::bind`]).
    pub fn bind_on(
        &mut self,
        req: &BindRequest<'_>,
        policy: &BindPolicy,
        today: firmware_protocol::Date,
    ) -> Result<AuditRef, BindError> {
        match &mut self.backend {
            Backend::Sqlite(s) => s.bind_on(req, policy, today),
            Backend::Postgres(p) => p.block(p.bind_on(req, policy, today)),
        }
    }

    /// [`Registry::bind_on`] with today's date.
    pub fn bind(
        &mut self,
        req: &BindRequest<'_>,
        policy: &BindPolicy,
    ) -> Result<AuditRef, BindError> {
        self.bind_on(req, policy, firmware_protocol::Date::today_cst())
    }

    /// Revokes the active link between `holder` and `member`.
    pub fn unbind(
        &mut self,
        holder: &firmware_protocol::Ssn,
        member: &firmware_protocol::Ssn,
        operator: &str,
        actor: &str,
    ) -> Result<AuditRef, BindError> {
        match &mut self.backend {
            Backend::Sqlite(s) => s.unbind(holder, member, operator, actor),
            Backend::Postgres(p) => p.block(p.unbind(holder, member, operator, actor)),
        }
    }

    /// Appends one audit row in its own transaction and returns it (what
    /// a receipt of a showing prints).
    pub fn record_ref(&mut self, e: &audit::Entry<'_>) -> Result<AuditRef, RegistryError> {
        match &mut self.backend {
            Backend::Sqlite(s) => s.record_ref(e),
            Backend::Postgres(p) => p.block(p.record_ref(e)),
        }
    }

    /// Appends one audit row in its own transaction.
    pub fn record(&mut self, e: &audit::Entry<'_>) -> Result<(), RegistryError> {
        match &mut self.backend {
            Backend::Sqlite(s) => s.record(e),
            Backend::Postgres(p) => p.block(p.record(e)),
        }
    }

    fn audit_setup(&self) -> &seal::AuditSetup {
        match &self.backend {
            Backend::Sqlite(b) => &b.audit,
            Backend::Postgres(b) => &b.audit,
        }
    }

    /// The audit chain's algorithm.
    pub fn audit_hash(&self) -> HashAlg {
        self.audit_setup().alg()
    }

    /// The box id this writer seals as, if it seals.
    pub fn sealing_box(&self) -> Option<String> {
        match &self.audit_setup().seal {
            seal::SealSetup::On(s) => Some(s.box_id().to_string()),
            seal::SealSetup::Off => None,
        }
    }

    /// Why this writer cannot write audit rows, if the registry is sealed
    /// and its sealing key is missing (the daemon refuses to start then).
    pub fn seal_missing(&self) -> Option<String> {
        self.audit_setup().missing().map(str::to_string)
    }

    /// Recomputes the whole audit chain.
    pub fn verify_audit(&self) -> Result<audit::Verification, RegistryError> {
        let mut chain = audit::Chain::new(self.audit_hash());
        let mut broken = None;
        self.audit_rows(&mut |r| {
            if broken.is_none() {
                broken = chain.check(&r).map(|why| (r.id, why));
            }
            Ok(())
        })?;
        Ok(chain.verification(broken))
    }

    /// How the read model differs from its definition (the view
    /// `resolution_source`). Zero unless the tables were changed behind
    /// cardlink's back.
    pub fn drift(&self) -> Result<Drift, RegistryError> {
        dispatch!(self.drift())
    }

    /// Rebuilds what differs in the read model, in one transaction with an
    /// audit row, and reports what it changed.
    pub fn repair(&mut self, actor: &str) -> Result<Repair, RegistryError> {
        dispatch_mut!(self.repair(actor))
    }

    /// Imports CSV files all-or-nothing; see [`import`].
    pub fn import(
        &mut self,
        files: &[PathBuf],
        actor: &str,
    ) -> Result<import::ImportCounts, import::ImportError> {
        let audit = import::import_audit(actor);
        let load = import::Load::new(files, &audit)?;
        dispatch_mut!(self.bulk_load(&load))
    }

    /// Writes every table as CSV files (the import format) into `dir`.
    pub fn export(&self, dir: &Path) -> Result<import::ImportCounts, import::ImportError> {
        dispatch!(self.export(dir))
    }

    /// Fills the registry with demo data in one transaction: generated as
    /// CSV into a temporary directory and imported, audited as `gen-demo`.
    pub fn gen_demo(&mut self, opts: &demo::DemoOptions) -> Result<(), RegistryError> {
        let (_dir, files) = demo::demo_files(opts)?;
        let outcome = format!(
            "ok persons={} months={} seed={}",
            opts.persons, opts.months, opts.seed
        );
        let audit = |_: &import::ImportCounts| import::LoadAudit {
            actor: "gen-demo".into(),
            action: "gen-demo",
            outcome: outcome.clone(),
        };
        let refused = |e| match e {
            import::ImportError::Registry(e) => e,
            other => RegistryError::Corrupt(format!("demo data refused: {other}")),
        };
        let load = import::Load::new(&files, &audit).map_err(refused)?;
        dispatch_mut!(self.bulk_load(&load))
            .map(drop)
            .map_err(refused)
    }

    /// Cards that show every outcome (see `sim::sample_cards`), by group.
    pub fn sample_cards(
        &self,
        today: firmware_protocol::Date,
    ) -> Result<Vec<Vec<demo::SampleCard>>, RegistryError> {
        dispatch!(self.sample_cards(today))
    }

    /// Every audit row in chain order, for copying a registry.
    pub fn audit_rows(
        &self,
        each: &mut dyn FnMut(audit::Row) -> Result<(), RegistryError>,
    ) -> Result<u64, RegistryError> {
        dispatch!(self.audit_rows(each))
    }

    /// Appends audit rows of a chain of `alg` exactly as given (ids,
    /// times, hashes, seals) to an empty audit log (which takes `alg`),
    /// checking that they form one valid chain: the first step of copying
    /// a registry with its history.
    pub fn load_audit(&mut self, rows: &[audit::Row], alg: HashAlg) -> Result<(), RegistryError> {
        dispatch_mut!(self.load_audit(rows, alg))
    }

    /// Checks the chain and every box's seals with the auditor's `keys`,
    /// and each box's key file as read (`states`: how far each box got);
    /// see [`verify`].
    pub fn verify_sealed(
        &self,
        keys: Vec<seal::VerifyKey>,
        states: Vec<(PathBuf, Result<seal::KeyState, seal::SealError>)>,
    ) -> Result<verify::SealReport, RegistryError> {
        let mut v =
            verify::Verifier::new(self.audit_hash(), keys).map_err(RegistryError::Config)?;
        self.audit_rows(&mut |r| {
            v.row(&r);
            Ok(())
        })?;
        Ok(v.finish(states))
    }

    /// Starts sealing as box `box_id`: writes the sealing key at `key`
    /// and the auditor's verification key at `verify_out` (new files,
    /// 0600), then seals its first row (`seal-init`, by `actor`) with it.
    pub fn seal_init(
        &mut self,
        key: &Path,
        verify_out: &Path,
        box_id: &str,
        actor: &str,
    ) -> Result<(), RegistryError> {
        let mut sealed_by_box = false;
        let mut head = 0;
        self.audit_rows(&mut |r| {
            head = r.id;
            sealed_by_box |= r.seal.as_ref().is_some_and(|s| s.box_id == box_id);
            Ok(())
        })?;
        if sealed_by_box {
            return Err(RegistryError::Config(format!(
                "box {box_id} already seals this registry; give each box its own id (--box)"
            )));
        }
        let alg = self.audit_hash();
        seal::create_keys(key, verify_out, box_id, alg, head + 1)?;
        let sealer = seal::Sealer::open(key)?;
        match &mut self.backend {
            Backend::Sqlite(b) => b.audit.seal = seal::SealSetup::On(sealer),
            Backend::Postgres(b) => b.audit.seal = seal::SealSetup::On(sealer),
        }
        self.record(&Entry {
            actor,
            action: "seal-init",
            ssn: None,
            outcome: &format!("ok box={box_id} alg={alg}"),
        })
    }
}
