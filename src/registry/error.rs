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
    /// The registry file is encrypted and no key was given.
    // (The credential's name is `key::CREDENTIAL`, which imports this
    // file; a unit test there keeps the two alike.)
    #[error("the registry {path} is encrypted (not a plain SQLite file); no key given (database_key_file / --key-file / credential cardlink-db-key)")]
    KeyRequired {
        /// The registry file.
        path: String,
    },
    /// The key given does not open the encrypted registry.
    #[error("the registry {path} is encrypted and the {key} does not open it")]
    WrongKey {
        /// The registry file.
        path: String,
        /// Where the key came from ([`super::key::KeySource`]'s text).
        key: String,
    },
    /// A key was given for a registry file that is not encrypted.
    #[error("the registry {path} is not encrypted, but a key was given ({key}); encrypt it with `cardlinkctl db encrypt` or remove the key setting")]
    NotEncrypted {
        /// The registry file.
        path: String,
        /// Where the key came from.
        key: String,
    },
    /// `db encrypt`, `decrypt` or `rekey` refused or failed (nothing was
    /// changed).
    #[error("{0}")]
    Crypt(String),
    /// The key cannot be used (missing, unreadable, readable by others,
    /// not 64 hex digits).
    #[error("database {key} {why}")]
    Key {
        /// Where the key came from.
        key: String,
        /// What is wrong with it.
        why: String,
    },
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
