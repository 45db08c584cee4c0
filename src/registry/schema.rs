//! Versioned schema migrations (rusqlite_migration, `user_version`).
//!
//! Each migration is an SQL file in `migrations/`, embedded at build time.
//! Append new files; never edit one that has shipped.

use rusqlite::Connection;
use rusqlite_migration::{Migrations, M};

use super::RegistryError;

const MIGRATIONS: &[M<'static>] = &[
    M::up(include_str!("migrations/001_init.sql")),
    M::up(include_str!("migrations/002_covering_indexes.sql")),
    M::up(include_str!("migrations/003_resolution_row.sql")),
];

/// Brings the database to the newest schema version.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), RegistryError> {
    Migrations::from_slice(MIGRATIONS).to_latest(conn)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_valid() {
        rusqlite_migration::Migrations::from_slice(super::MIGRATIONS)
            .validate()
            .unwrap();
    }
}
