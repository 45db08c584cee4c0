-- Forward-secure sealing of the audit chain (registry/seal.rs) and the
-- chain's recorded hash algorithm (registry/hash.rs). Self-contained: it
-- only adds columns, an index and a table.
--
-- A sealed row carries the box that sealed it, its index in that box's
-- sequence (from 0) and the MAC (hex); rows written before sealing began,
-- or by a box that does not seal, leave the three NULL.
ALTER TABLE audit ADD COLUMN seal_box TEXT;
ALTER TABLE audit ADD COLUMN seal_index INTEGER;
ALTER TABLE audit ADD COLUMN seal TEXT;
-- A writer reads its box's last index under the write lock before each
-- sealed row: one index probe.
CREATE INDEX audit_seal ON audit (seal_box, seal_index) WHERE seal_box IS NOT NULL;
-- The chain's algorithm ('hash' = 'sha256' | 'sm3'), recorded when the
-- chain is created; a chain without the row is SHA-256.
CREATE TABLE audit_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
