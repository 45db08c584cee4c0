-- The fleet view (issue 24): one row per box, rewritten by the box's own
-- heartbeat (an upsert), read by `cardlinkctl fleet`. Not an audit row and
-- no personal data: the box's name, role and release, its readers' names
-- and states, when it last read a card, its uptime. `last_seen` is the
-- server's clock (now()), so boxes with wrong clocks are judged alike. A
-- box not seen for 30 days is deleted by the next heartbeat of any box
-- (src/registry/fleet.rs). Self-contained: it depends on no other table.
CREATE TABLE IF NOT EXISTS fleet_box (
    name          text        NOT NULL PRIMARY KEY COLLATE "C",
    role          text        NOT NULL,
    version       text        NOT NULL,
    interval_s    integer     NOT NULL CHECK (interval_s > 0),
    readers       text        NOT NULL,
    readers_up    integer     NOT NULL,
    readers_total integer     NOT NULL,
    printer       text,
    last_read     timestamptz,
    uptime_s      bigint      NOT NULL,
    last_seen     timestamptz NOT NULL
);
