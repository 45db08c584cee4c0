-- Forward-secure sealing of the audit chain (registry/seal.rs) and the
-- chain's recorded hash algorithm (registry/hash.rs); the same as SQLite's
-- migration 008. Self-contained: it only adds columns, an index and a
-- table. Sealed and SM3 rows are computed in Rust (the key never leaves
-- the box; PostgreSQL has no SM3), so cardlink_audit_append stays the
-- fast path of unsealed SHA-256 chains only.
ALTER TABLE audit
    ADD COLUMN seal_box text COLLATE "C",
    ADD COLUMN seal_index bigint,
    ADD COLUMN seal text;
CREATE INDEX audit_seal ON audit (seal_box, seal_index) WHERE seal_box IS NOT NULL;
CREATE TABLE audit_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);
