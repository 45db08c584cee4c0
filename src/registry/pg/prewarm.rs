//! Loading what a resolution reads into the server's cache ("prewarm").
//!
//! A resolution by SSN reads the primary key of `resolution` and one of
//! its pages; by card number the primary key of `cards`, one of its pages,
//! and then the same. On a server whose cache is cold (after a restart, a
//! failover to a standby, the OS's page cache emptied) each of those is a
//! random read from disk: about 1 ms on a virtual disk, so that the p99 of
//! the first lookups after a restart is several milliseconds where a
//! warm server answers in a quarter of one (`docs/benchmarks.md`). The
//! daemon therefore reads those four relations whole, each in physical
//! order, at start and whenever a new connection reaches a server not
//! warmed since it started (`daemon::prewarm`); swipes are served
//! meanwhile.
//!
//! * With the `pg_prewarm` extension (PostgreSQL's contrib: in Debian's
//!   `postgresql-15`; `CREATE EXTENSION pg_prewarm` once, as a superuser)
//!   a relation goes into shared buffers (mode `buffer`) while the four
//!   together fit in half of them, the rest into the OS's page cache
//!   (mode `read`), so that the prewarm never pushes out more than half
//!   of what the server keeps.
//! * Without it, plain reads that any role allowed to resolve may make
//!   fill the OS's page cache: a count over the table (a sequential scan)
//!   and, for an index, a count through an index-only scan in key order.
//!
//! Nothing here writes; a read-only registry prewarms as well.

use std::time::{Duration, Instant};

use super::Postgres;
use crate::registry::error::RegistryError;

/// The relations a resolution reads, with the table each belongs to and,
/// for an index, its key column: by SSN first.
const RELATIONS: &[Relation] = &[
    Relation {
        name: "resolution_pkey",
        table: "resolution",
        index_key: Some("ssn"),
    },
    Relation {
        name: "resolution",
        table: "resolution",
        index_key: None,
    },
    Relation {
        name: "cards_pkey",
        table: "cards",
        index_key: Some("card_no"),
    },
    Relation {
        name: "cards",
        table: "cards",
        index_key: None,
    },
];

struct Relation {
    name: &'static str,
    table: &'static str,
    index_key: Option<&'static str>,
}

/// How one relation was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrewarmMethod {
    /// `pg_prewarm(…, 'buffer')`: into shared buffers.
    Buffer,
    /// `pg_prewarm(…, 'read')`: into the OS's page cache.
    Read,
    /// A plain scan (no extension): into the OS's page cache.
    Scan,
}

impl PrewarmMethod {
    /// As logged.
    pub fn as_str(self) -> &'static str {
        match self {
            PrewarmMethod::Buffer => "pg_prewarm buffer",
            PrewarmMethod::Read => "pg_prewarm read",
            PrewarmMethod::Scan => "scan",
        }
    }
}

/// One relation read by [`Postgres::prewarm`].
#[derive(Debug, Clone)]
pub struct Prewarmed {
    /// The relation (table or index).
    pub relation: &'static str,
    /// Its size in pages when it was read.
    pub pages: i64,
    /// How.
    pub method: PrewarmMethod,
    /// How long it took.
    pub elapsed: Duration,
}

/// The relations' sizes in pages, in the order given (0 for one that
/// does not exist).
const SIZES_SQL: &str = "SELECT \
     coalesce(pg_relation_size(to_regclass(r.name)), 0) / current_setting('block_size')::bigint \
     FROM unnest($1::text[]) WITH ORDINALITY AS r(name, i) ORDER BY r.i";
/// Which server answers, since when: a prewarm is not repeated for the
/// same one.
const SERVER_SQL: &str = "SELECT pg_postmaster_start_time()::text || ' ' || \
     coalesce(host(inet_server_addr()), 'socket') || ':' || coalesce(inet_server_port(), 0)::text";
/// Shared buffers in pages, and the schema of `pg_prewarm` (NULL when it
/// is not installed), in one round trip.
const SETTINGS_SQL: &str = "SELECT \
     (SELECT setting::bigint FROM pg_settings WHERE name = 'shared_buffers'), \
     (SELECT n.nspname::text FROM pg_extension e \
      JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_prewarm')";

/// The `pg_prewarm` call, its schema quoted as an identifier.
fn prewarm_sql(schema: &str) -> String {
    format!(
        "SELECT {}.pg_prewarm($1::text::regclass, $2)",
        quote_ident(schema)
    )
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The plain read of one relation: every page of a table by a sequential
/// scan, of an index by an index-only scan in key order (a plan forced by
/// turning the others off in this transaction only).
fn scan_sql(rel: &Relation) -> String {
    match rel.index_key {
        None => format!("SELECT count(*) FROM {}", rel.table),
        Some(key) => format!(
            "SELECT count(*) FROM (SELECT {key} FROM {} ORDER BY {key}) k",
            rel.table
        ),
    }
}
const FORCE_INDEX_SQL: &str = "SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; \
     SET LOCAL enable_sort = off";

/// Which relations go into shared buffers: in order, while their total
/// stays within half of `shared_buffers` (pages).
fn methods(pages: &[i64], shared_buffers: i64, extension: bool) -> Vec<PrewarmMethod> {
    let mut budget = shared_buffers / 2;
    pages
        .iter()
        .map(|&p| {
            if !extension {
                PrewarmMethod::Scan
            } else if p <= budget {
                budget -= p;
                PrewarmMethod::Buffer
            } else {
                budget = 0;
                PrewarmMethod::Read
            }
        })
        .collect()
}

impl Postgres {
    /// Reads what a resolution reads into the server's cache (see the
    /// module docs), without a time limit (its size decides; a dead server
    /// still ends it). Returns each relation as read, or `None` when the
    /// server answering is the one (same address, same start) that the
    /// last prewarm read into.
    pub async fn prewarm(&self) -> Result<Option<Vec<Prewarmed>>, RegistryError> {
        self.prepare_schema().await?;
        pooled!(self, None, |c| {
            let err = |e: tokio_postgres::Error| self.err(&e);
            let server: String = c
                .query_one(SERVER_SQL, &[])
                .await
                .map_err(err)?
                .try_get(0)
                .map_err(err)?;
            if self
                .warmed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_deref()
                == Some(&*server)
            {
                return Ok(None);
            }
            let names: Vec<&str> = RELATIONS.iter().map(|r| r.name).collect();
            let mut pages = Vec::with_capacity(RELATIONS.len());
            for row in c.query(SIZES_SQL, &[&names]).await.map_err(err)? {
                pages.push(row.try_get::<_, i64>(0).map_err(err)?);
            }
            let settings = c.query_one(SETTINGS_SQL, &[]).await.map_err(err)?;
            let shared_buffers: i64 = settings.try_get(0).map_err(err)?;
            let schema: Option<String> = settings.try_get(1).map_err(err)?;
            let plan = methods(&pages, shared_buffers, schema.is_some());
            let mut done = Vec::with_capacity(RELATIONS.len());
            for ((rel, pages), method) in RELATIONS.iter().zip(pages).zip(plan) {
                let t = Instant::now();
                match (method, &schema) {
                    (PrewarmMethod::Buffer | PrewarmMethod::Read, Some(schema)) => {
                        let mode = if method == PrewarmMethod::Buffer {
                            "buffer"
                        } else {
                            "read"
                        };
                        c.query_one(&prewarm_sql(schema), &[&rel.name, &mode])
                            .await
                            .map_err(err)?;
                    }
                    _ => {
                        let tx = c.transaction().await.map_err(err)?;
                        if rel.index_key.is_some() {
                            tx.batch_execute(FORCE_INDEX_SQL).await.map_err(err)?;
                        }
                        tx.query_one(&scan_sql(rel), &[]).await.map_err(err)?;
                        tx.commit().await.map_err(err)?;
                    }
                }
                done.push(Prewarmed {
                    relation: rel.name,
                    pages,
                    method,
                    elapsed: t.elapsed(),
                });
            }
            *self.warmed.lock().unwrap_or_else(|p| p.into_inner()) = Some(server);
            Ok::<_, RegistryError>(Some(done))
        })
    }

    /// Waits until the pool makes a new connection: the server it reaches
    /// may have restarted, or be a standby just promoted after a failover,
    /// with a cold cache ([`Postgres::prewarm`] then tells by the server's
    /// start time and address). One made while nobody waited is
    /// remembered.
    pub async fn connected(&self) {
        self.connected.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relations_go_into_shared_buffers_while_they_fit_in_half_and_into_the_os_cache_after() {
        use PrewarmMethod::*;
        assert_eq!(
            methods(&[10, 40, 10, 60], 200, true),
            [Buffer, Buffer, Buffer, Read]
        );
        // Once one does not fit, the rest are read: the order is the
        // lookups' (by SSN first), not a packing.
        assert_eq!(
            methods(&[10, 200, 5, 5], 200, true),
            [Buffer, Read, Read, Read]
        );
        assert_eq!(
            methods(&[1, 1, 1, 1], 16384, false),
            [Scan, Scan, Scan, Scan]
        );
    }

    #[test]
    fn the_extension_schema_is_quoted() {
        assert_eq!(
            prewarm_sql("we\"ird"),
            "SELECT \"we\"\"ird\".pg_prewarm($1::text::regclass, $2)"
        );
    }
}
