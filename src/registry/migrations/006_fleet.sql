-- The fleet view (issue 24): one row per box, rewritten by the box's own
-- heartbeat (an upsert), read by `cardlinkctl fleet`. Not an audit row and
-- no personal data: the box's name, role and release, its readers' names
-- and states, when it last read a card, its uptime. Times are the
-- database's clock (UTC, RFC 3339). A box not seen for 30 days is deleted
-- by the next heartbeat of any box (src/registry/fleet.rs). Self-contained:
-- it depends on no other table.
CREATE TABLE IF NOT EXISTS fleet_box (
    name          TEXT    NOT NULL PRIMARY KEY,
    role          TEXT    NOT NULL,
    version       TEXT    NOT NULL,
    interval_s    INTEGER NOT NULL CHECK (interval_s > 0),
    readers       TEXT    NOT NULL,            -- JSON: [{"name": …, "state": …}]
    readers_up    INTEGER NOT NULL,
    readers_total INTEGER NOT NULL,
    printer       TEXT,                        -- none yet (issue 23)
    last_read     TEXT,
    uptime_s      INTEGER NOT NULL,
    last_seen     TEXT    NOT NULL
) WITHOUT ROWID;
