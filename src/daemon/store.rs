//! The registry store: the daemon's one handle on the registry, which
//! never blocks the async runtime and which a failing request cannot stop.
//!
//! * **SQLite** (one connection, one writer): calls block on the file, so
//!   they never run on a runtime thread. Requests are queued; one task takes
//!   them in order and runs each on the blocking pool (`spawn_blocking`),
//!   handing the connection along. A slow or locked database therefore
//!   delays only the requests that need it, never the socket server or a
//!   reader's I/O. Running each job as a blocking task (rather than on a
//!   thread of our own) also tells tokio's paused test clock that work is in
//!   progress, so in-process tests with paused time do not jump ahead while
//!   the registry answers.
//! * **PostgreSQL**: the registry's async operations run directly on the
//!   daemon's runtime ([`crate::registry::pg::Postgres::into_async`]);
//!   concurrent requests (readers, clients) each take a connection of the
//!   pool, and the server serialises the writers (its advisory lock).
//!
//! Every call is measured here, once for all callers: its duration by
//! operation and backend, and its result (`ok` or the error code), in
//! [`DaemonMetrics`] when the store has them ([`Store::measured`]).
//!
//! A request that panics (a bug; data never panics the registry) fails
//! alone: the panic is caught around that one job, the request answers
//! [`JobFailed`] (`internal` on the wire) and the next request is served.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};

use super::metrics::DaemonMetrics;
use crate::protocol::ErrorCode;
use crate::registry::fleet::Heartbeat;
use crate::registry::pg::Postgres;
use crate::registry::{
    AuditRef, BindError, BindPolicy, BindRequest, Contribution, Entry, Lookup, Registry,
    RegistryError, Resolution,
};
use crate::Ssn;

type Job = Box<dyn FnOnce(&mut Registry) + Send>;

/// Jobs queued before callers wait for a place.
const QUEUE: usize = 1024;

/// Handle to the registry. Cloneable.
#[derive(Clone, Debug)]
pub struct Store {
    backend: Backend,
    metrics: Option<Arc<DaemonMetrics>>,
    /// A SQLite registry's file (none in memory), for the heartbeat.
    sqlite_path: Option<std::path::PathBuf>,
    /// Its SQLCipher key, for the heartbeat's own connection.
    sqlite_key: Option<crate::registry::DbKey>,
}

/// How long a SQLite heartbeat waits for the file's write lock.
pub const HEARTBEAT_BUSY: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Clone, Debug)]
enum Backend {
    /// The queue of the SQLite worker.
    Sqlite(mpsc::Sender<Job>),
    /// The PostgreSQL registry, driven on the daemon's runtime.
    Postgres(Arc<Postgres>),
}

/// A registry request failed without an answer of the registry's own.
#[derive(Debug, thiserror::Error)]
pub enum JobFailed {
    /// The request's job panicked; later requests are served.
    #[error("registry request failed (internal error)")]
    Panicked,
    /// The worker has stopped (the runtime is shutting down).
    #[error("registry worker stopped")]
    Gone,
}

/// What a request answers: the registry's result, or [`JobFailed`].
pub type Answer<T, E> = Result<Result<T, E>, JobFailed>;

impl Store {
    /// Starts the store with `reg`. Must be called inside a tokio runtime.
    pub fn start(reg: Registry) -> Store {
        let sqlite_path = reg
            .sqlite_connection()
            .and_then(|c| c.path())
            .filter(|p| !p.is_empty())
            .map(std::path::PathBuf::from);
        let sqlite_key = reg.sqlite_key().cloned();
        let backend = match reg.into_async_postgres() {
            Ok(pg) => Backend::Postgres(Arc::new(pg)),
            Err(reg) => Backend::Sqlite(start_worker(*reg)),
        };
        Store {
            backend,
            metrics: None,
            sqlite_path,
            sqlite_key,
        }
    }

    /// This store, measuring every call into `metrics`.
    pub fn measured(self, metrics: Arc<DaemonMetrics>) -> Store {
        Store {
            metrics: Some(metrics),
            ..self
        }
    }

    /// `sqlite` or `postgresql`.
    pub fn backend_name(&self) -> &'static str {
        match &self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgresql",
        }
    }

    /// Awaits one call of `operation`, measuring it.
    async fn timed<T, E>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Answer<T, E>>,
    ) -> Answer<T, E>
    where
        for<'a> &'a E: Into<ErrorCode>,
    {
        let start = Instant::now();
        let answer = call.await;
        if let Some(m) = &self.metrics {
            let result = match &answer {
                Ok(Ok(_)) => "ok",
                Ok(Err(e)) => e.into().as_str(),
                Err(_) => ErrorCode::Internal.as_str(),
            };
            m.registry_call(operation, self.backend_name(), start.elapsed(), result);
        }
        answer
    }

    /// Writes this box's fleet heartbeat. On PostgreSQL through the pool
    /// (bounded by the call limit); on SQLite on a connection of its own
    /// on the blocking pool ([`crate::registry::fleet::beat_sqlite`],
    /// waiting at most [`HEARTBEAT_BUSY`] for the file), never in the
    /// swipes' queue; an in-memory registry has nowhere to keep it.
    pub async fn heartbeat(&self, hb: Heartbeat) -> Answer<(), RegistryError> {
        self.timed("heartbeat", async {
            match (&self.backend, &self.sqlite_path) {
                (Backend::Postgres(p), _) => guarded(p.heartbeat(&hb)).await,
                (Backend::Sqlite(_), None) => Ok(Ok(())),
                (Backend::Sqlite(_), Some(path)) => {
                    let (path, key) = (path.clone(), self.sqlite_key.clone());
                    tokio::task::spawn_blocking(move || {
                        crate::registry::fleet::beat_sqlite_keyed(
                            &path,
                            key.as_ref(),
                            &hb,
                            HEARTBEAT_BUSY,
                        )
                    })
                    .await
                    .map_err(|_| panicked())
                }
            }
        })
        .await
    }

    /// Resolves `lookup`, then writes its audit row.
    pub async fn resolve_audited(
        &self,
        actor: &str,
        lookup: Lookup,
    ) -> Answer<Resolution, RegistryError> {
        let today = firmware_protocol::Date::today_cst();
        self.timed("resolve_audited", async {
            match &self.backend {
                Backend::Sqlite(q) => {
                    let actor = actor.to_string();
                    job(q, move |reg| reg.resolve_audited(&actor, &lookup)).await
                }
                Backend::Postgres(p) => guarded(p.resolve_audited(actor, &lookup, today)).await,
            }
        })
        .await
    }

    /// Resolves `lookup` (without an audit row).
    pub async fn resolve(&self, lookup: Lookup) -> Answer<Resolution, RegistryError> {
        let today = firmware_protocol::Date::today_cst();
        self.timed("resolve", async {
            match &self.backend {
                Backend::Sqlite(q) => job(q, move |reg| reg.resolve_on(&lookup, today)).await,
                Backend::Postgres(p) => guarded(p.resolve_on(&lookup, today)).await,
            }
        })
        .await
    }

    /// Binds (see [`Registry::bind_on`]).
    pub async fn bind(
        &self,
        req: &BindRequest<'_>,
        policy: &BindPolicy,
    ) -> Answer<AuditRef, BindError> {
        let today = firmware_protocol::Date::today_cst();
        self.timed("bind", async {
            match &self.backend {
                Backend::Sqlite(q) => {
                    let (operator, consent, actor, policy) = (
                        req.operator.to_string(),
                        req.consent.to_string(),
                        req.actor.to_string(),
                        policy.clone(),
                    );
                    let (holder, member, relation, channel) =
                        (req.holder, req.member, req.relation, req.channel);
                    job(q, move |reg| {
                        let req = BindRequest {
                            holder,
                            member,
                            relation,
                            channel,
                            operator: &operator,
                            consent: &consent,
                            actor: &actor,
                        };
                        reg.bind_on(&req, &policy, today)
                    })
                    .await
                }
                Backend::Postgres(p) => guarded(p.bind_on(req, policy, today)).await,
            }
        })
        .await
    }

    /// Revokes the active link between `holder` and `member`.
    pub async fn unbind(
        &self,
        holder: Ssn,
        member: Ssn,
        operator: String,
        actor: String,
    ) -> Answer<AuditRef, BindError> {
        self.timed("unbind", async {
            match &self.backend {
                Backend::Sqlite(q) => {
                    job(q, move |reg| {
                        reg.unbind(&holder, &member, &operator, &actor)
                    })
                    .await
                }
                Backend::Postgres(p) => {
                    guarded(p.unbind(&holder, &member, &operator, &actor)).await
                }
            }
        })
        .await
    }

    /// Appends one audit row (`action` about `ssn`) and returns it.
    pub async fn record_ref(
        &self,
        actor: String,
        action: &'static str,
        ssn: Ssn,
        outcome: String,
    ) -> Answer<AuditRef, RegistryError> {
        self.timed("record", async {
            match &self.backend {
                Backend::Sqlite(q) => {
                    job(q, move |reg| {
                        reg.record_ref(&Entry {
                            actor: &actor,
                            action,
                            ssn: Some(&ssn),
                            outcome: &outcome,
                        })
                    })
                    .await
                }
                Backend::Postgres(p) => {
                    guarded(p.record_ref(&Entry {
                        actor: &actor,
                        action,
                        ssn: Some(&ssn),
                        outcome: &outcome,
                    }))
                    .await
                }
            }
        })
        .await
    }

    /// The person's payment records of the last `months` months.
    pub async fn contributions(
        &self,
        ssn: Ssn,
        months: u32,
    ) -> Answer<Vec<Contribution>, RegistryError> {
        self.timed("contributions", async {
            match &self.backend {
                Backend::Sqlite(q) => job(q, move |reg| reg.contributions(&ssn, months)).await,
                Backend::Postgres(p) => guarded(p.contributions(&ssn, months)).await,
            }
        })
        .await
    }

    /// Tries an unreachable shared registry again once its backoff has
    /// passed (see [`Registry::reconnect`]).
    pub async fn reconnect(&self) -> Result<bool, JobFailed> {
        match &self.backend {
            Backend::Sqlite(q) => job(q, |reg| reg.reconnect()).await,
            Backend::Postgres(p) => guarded(p.reconnect()).await,
        }
    }

    /// Reads what a resolution reads into a shared registry's cache
    /// ([`Postgres::prewarm`]; `Ok(None)`: the server was prewarmed since
    /// it started); `None` on SQLite.
    pub async fn prewarm(
        &self,
    ) -> Option<Result<Option<Vec<crate::registry::pg::prewarm::Prewarmed>>, RegistryError>> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(p) => Some(p.prewarm().await),
        }
    }

    /// Waits until a shared registry may have a cold cache (a new
    /// connection, perhaps to a restarted or another server:
    /// [`Postgres::connected`]); never on SQLite.
    pub async fn connected(&self) {
        match &self.backend {
            Backend::Sqlite(_) => std::future::pending().await,
            Backend::Postgres(p) => p.connected().await,
        }
    }

    /// Answers once the store takes requests (SQLite: the worker has run a
    /// no-op job; PostgreSQL: at once, there is no worker to wedge).
    pub async fn ping(&self) -> Result<(), JobFailed> {
        match &self.backend {
            Backend::Sqlite(q) => job(q, |_| ()).await,
            Backend::Postgres(_) => Ok(()),
        }
    }

    /// Runs `f` on the SQLite worker (tests inject faults with it);
    /// `None` on PostgreSQL.
    #[cfg(test)]
    async fn on_sqlite<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Registry) -> T + Send + 'static,
    ) -> Option<Result<T, JobFailed>> {
        match &self.backend {
            Backend::Sqlite(q) => Some(job(q, f).await),
            Backend::Postgres(_) => None,
        }
    }
}

/// The SQLite worker: one task takes the jobs in order and runs each on
/// the blocking pool with the registry.
fn start_worker(reg: Registry) -> mpsc::Sender<Job> {
    let (tx, mut rx) = mpsc::channel::<Job>(QUEUE);
    // Jobs log with the caller's subscriber, blocking pool or not.
    let dispatch = tracing::dispatcher::get_default(|d| d.clone());
    tokio::spawn(async move {
        let mut reg = reg;
        while let Some(job) = rx.recv().await {
            let d = dispatch.clone();
            let ran = tokio::task::spawn_blocking(move || {
                tracing::dispatcher::with_default(&d, || job(&mut reg));
                reg
            })
            .await;
            match ran {
                Ok(r) => reg = r,
                // Jobs catch their own panics; this is the runtime
                // shutting down under the blocking task.
                Err(e) => {
                    tracing::error!(error = %e, "registry worker stopped");
                    return;
                }
            }
        }
    });
    tx
}

/// Queues `f` on the SQLite worker and waits for its answer; a panic in
/// `f` fails this job only (the registry's open transaction, if any, is
/// rolled back as it unwinds).
async fn job<T, F>(q: &mpsc::Sender<Job>, f: F) -> Result<T, JobFailed>
where
    T: Send + 'static,
    F: FnOnce(&mut Registry) -> T + Send + 'static,
{
    let (done, answer) = oneshot::channel();
    let job: Job = Box::new(move |reg| {
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| f(reg)));
        let _ = done.send(r.map_err(|_| panicked()));
    });
    q.send(job).await.map_err(|_| JobFailed::Gone)?;
    answer.await.map_err(|_| JobFailed::Gone)?
}

/// Awaits a PostgreSQL request; a panic in it fails this request only.
async fn guarded<T>(fut: impl Future<Output = T>) -> Result<T, JobFailed> {
    AssertUnwindSafe(fut)
        .catch_unwind()
        .await
        .map_err(|_| panicked())
}

fn panicked() -> JobFailed {
    // The panic's message is not logged: it may hold personal data.
    tracing::error!("a registry request panicked; it fails alone and the next one is served");
    JobFailed::Panicked
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Outcome;

    /// A panic injected into one registry job fails that request only: the
    /// worker keeps its registry and the next read is served.
    #[tokio::test]
    async fn a_panicking_job_fails_alone_and_the_next_read_is_served() {
        let mut reg = Registry::open_in_memory().unwrap();
        reg.gen_demo(&crate::registry::demo::DemoOptions {
            persons: 20,
            ..Default::default()
        })
        .unwrap();
        let ssn = crate::Ssn::parse(&crate::registry::demo::demo_ssn(0)).unwrap();
        let store = Store::start(reg);
        let failed = store
            .on_sqlite(|_| -> () { panic!("injected fault") })
            .await
            .expect("a SQLite store");
        assert!(matches!(failed, Err(JobFailed::Panicked)), "{failed:?}");
        let r = store
            .resolve_audited("test", Lookup::ssn(ssn))
            .await
            .expect("the worker still serves")
            .expect("the registry answers");
        assert_ne!(r.outcome, Outcome::Unknown);
        assert_eq!(r.person.map(|p| p.ssn), Some(ssn));
        // The panic also left no transaction open: a write goes through.
        let audited = store
            .on_sqlite(|reg| reg.stats().map(|s| s.audit))
            .await
            .expect("a SQLite store")
            .expect("served")
            .expect("counted");
        assert!(
            audited >= 2,
            "gen-demo's and the resolution's rows: {audited}"
        );
    }

    /// A panic inside an async request (PostgreSQL's path) fails it alone.
    #[tokio::test]
    async fn a_panicking_async_request_is_caught() {
        let r = guarded(async { panic!("injected fault") }).await;
        assert!(matches!(r, Err::<(), _>(JobFailed::Panicked)));
        assert_eq!(guarded(async { 7 }).await.ok(), Some(7));
    }
}
