//! The registry's errors, on either backend.

use std::time::Duration;

use rusqlite::ErrorCode;

use super::seal::SealError;

/// Errors of the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Another process held the database lock for longer than `busy_timeout`.
    #[error("database is locked by another writer (waited {0:?}); try again")]
    Busy(Duration),
    /// Opening the database file failed.
    #[error("cannot open database {path}: {source}")]
    Open {
        /// The path.
        path: String,
        /// The cause.
        source: rusqlite::Error,
    },
    /// Creating or upgrading the schema failed.
    #[error("schema migration failed: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    /// A value in the database is not what the schema promises.
    #[error("corrupt registry data: {0}")]
    Corrupt(String),
    /// Any other SQLite error.
    #[error("database error: {0}")]
    Sql(rusqlite::Error),
    /// The shared registry cannot be reached (server down, network, TLS,
    /// login); the daemon keeps serving and retries with backoff.
    #[error("registry unavailable: {0}")]
    Unavailable(String),
    /// Any other PostgreSQL error (the server's message).
    #[error("database error: {0}")]
    Pg(String),
    /// The `database` setting is not usable.
    #[error("bad database setting: {0}")]
    Config(String),
    /// The box's sealing key cannot be read, used or moved forward (an
    /// audit row is not written unsealed in a sealed registry).
    #[error(transparent)]
    Seal(#[from] SealError),
}

impl RegistryError {
    /// Maps SQLite errors, turning `SQLITE_BUSY`/`SQLITE_LOCKED` into [`RegistryError::Busy`].
    pub(crate) fn from_sql(e: rusqlite::Error, timeout: Duration) -> Self {
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                RegistryError::Busy(timeout)
            }
            _ => RegistryError::Sql(e),
        }
    }
}
