//! Versioned schema migrations (rusqlite_migration, `user_version`).
//!
//! Each migration is an SQL file in `migrations/`, embedded at build time.
//! Append new files; never edit one that has shipped. (Before the first
//! release, 001's enumeration CHECKs were rewritten into an equivalent form
//! that SQLite evaluates without a temporary B-tree per row.)

use rusqlite::Connection;
use rusqlite_migration::{Migrations, M};

use super::error::RegistryError;

const MIGRATIONS: &[M<'static>] = &[
    M::up(include_str!("migrations/001_init.sql")),
    M::up(include_str!("migrations/002_covering_indexes.sql")),
    M::up(include_str!("migrations/003_resolution_row.sql")),
    M::up(include_str!("migrations/004_relations_and_region.sql")),
    M::up(include_str!("migrations/005_resolution_table.sql")),
    M::up(include_str!("migrations/006_fleet.sql")),
    M::up(include_str!("migrations/007_seal.sql")),
];

/// Brings the database to the newest schema version.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), RegistryError> {
    Migrations::from_slice(MIGRATIONS).to_latest(conn)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::demo::{demo_card_no, demo_ssn};
    use crate::registry::{Lookup, Registry, Role, Sqlite};

    #[test]
    fn migrations_are_valid() {
        Migrations::from_slice(MIGRATIONS).validate().unwrap();
    }

    /// A registry filled at schema version 3 (the 2021 relations) keeps its
    /// links; afterwards only the eight relations of 2024 are accepted and
    /// persons have an (empty) insured region.
    #[test]
    fn upgrade_from_version_3_keeps_links_and_closes_the_relations() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "foreign_keys", true).unwrap();
        Migrations::from_slice(MIGRATIONS)
            .to_version(&mut conn, 3)
            .unwrap();
        let (holder, member, other) = (demo_ssn(1), demo_ssn(2), demo_ssn(3));
        conn.execute_batch(&format!(
            "INSERT INTO persons (ssn, name, sex, birth_date, insurance_type, insurance_status) VALUES ('{holder}', '张伟', 'M', '1980-01-01', 'employee', 'active');
             INSERT INTO persons (ssn, name, sex, birth_date, insurance_type, insurance_status) VALUES ('{member}', '李娜', 'F', '1982-02-02', 'resident', 'active');
             INSERT INTO persons (ssn, name, sex, birth_date, insurance_type, insurance_status) VALUES ('{other}', '张强', 'M', '1984-03-03', 'resident', 'active');
             INSERT INTO family_links (holder_ssn, member_ssn, relation, status, channel, operator, created_at)
                  VALUES ('{holder}', '{member}', 'spouse', 'active', 'window', 'c', '2025-01-01T00:00:00Z');"
        ))
        .unwrap();
        migrate(&mut conn).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        let (relation, region): (String, Option<String>) = conn
            .query_row(
                "SELECT l.relation, p.region FROM family_links l JOIN persons p ON p.ssn = l.member_ssn",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((relation.as_str(), region), ("spouse", None));
        let insert = |rel: &str| {
            conn.execute(
                "INSERT INTO family_links (holder_ssn, member_ssn, relation, status, channel, operator, created_at) \
                 VALUES (?1, ?2, ?3, 'revoked', 'window', 'c', '2025-01-01T00:00:00Z')",
                rusqlite::params![holder, other, rel],
            )
        };
        let err = insert("cousin").unwrap_err();
        assert!(err.to_string().contains("eight close relatives"), "{err}");
        insert("maternal_grandchild").unwrap();
        let err = conn
            .execute(
                "UPDATE persons SET region = '33010' WHERE ssn = ?1",
                [&holder],
            )
            .unwrap_err();
        assert!(err.to_string().contains("CHECK"), "{err}");
    }

    /// A registry filled at schema version 2 gets its resolution copies
    /// backfilled by migration 003.
    #[test]
    fn upgrade_from_version_2_backfills_the_copies() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "foreign_keys", true).unwrap();
        Migrations::from_slice(MIGRATIONS)
            .to_version(&mut conn, 2)
            .unwrap();
        let (holder, member) = (demo_ssn(1), demo_ssn(2));
        let (holder_card, member_card) = (demo_card_no(1), demo_card_no(2));
        conn.execute_batch(&format!(
            "INSERT INTO persons VALUES ('{holder}', '张伟', 'M', '1980-01-01', 'employee', 'active');
             INSERT INTO persons VALUES ('{member}', '李娜', 'F', '1982-02-02', 'resident', 'active');
             INSERT INTO cards VALUES ('{holder_card}', NULL, '{holder}', 3, '2020-01-01', '2099-01-01', 'active');
             INSERT INTO cards VALUES ('{member_card}', NULL, '{member}', 3, '2020-01-01', '2099-01-01', 'active');
             INSERT INTO accounts VALUES ('{holder}', 5000);
             INSERT INTO family_links (holder_ssn, member_ssn, relation, status, channel, operator, created_at)
                  VALUES ('{holder}', '{member}', 'spouse', 'active', 'window', 'c', '2026-01-01T00:00:00Z');"
        ))
        .unwrap();
        migrate(&mut conn).unwrap();
        let reg = Registry::from_sqlite(Sqlite {
            conn,
            busy_timeout: std::time::Duration::from_secs(1),
            audit: Default::default(),
            key: None,
        });
        assert_eq!(reg.drift().unwrap().total(), 0);
        let r = reg.resolve(&Lookup::card_no(member_card)).unwrap();
        assert_eq!(r.role, Role::Member);
        let payer = r.payer.unwrap();
        assert_eq!(
            (payer.name.as_str(), payer.balance_fen),
            ("张伟", Some(5000))
        );
        let r = reg.resolve(&Lookup::card_no(holder_card)).unwrap();
        assert_eq!(r.role, Role::Holder);
        assert_eq!(r.members.len(), 1);
        assert_eq!(r.members[0].name, "李娜");
    }
}
