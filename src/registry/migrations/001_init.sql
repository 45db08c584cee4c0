-- cardlink registry schema v1.
-- All SSNs are validated 18-character numbers (upper-case X).
-- Money is integer fen (1/100 yuan). Dates are ISO 8601 text (YYYY-MM-DD),
-- months YYYY-MM, timestamps RFC 3339 UTC.
-- Enumerations are checked as `x = 'a' OR x = 'b' ...`: SQLite evaluates a
-- CHECK `x IN (...)` of more than two values through a temporary B-tree
-- built for every inserted row, a quarter of the cost of a bulk import.

CREATE TABLE persons (
    ssn              TEXT PRIMARY KEY NOT NULL,
    name             TEXT NOT NULL,
    sex              TEXT NOT NULL CHECK (sex IN ('M', 'F')),
    birth_date       TEXT NOT NULL,
    insurance_type   TEXT NOT NULL CHECK (insurance_type = 'employee' OR insurance_type = 'resident' OR insurance_type = 'none'),
    insurance_status TEXT NOT NULL CHECK (insurance_status = 'active' OR insurance_status = 'suspended' OR insurance_status = 'ended')
) WITHOUT ROWID;

CREATE TABLE cards (
    card_no    TEXT PRIMARY KEY NOT NULL,
    pan        TEXT UNIQUE,
    ssn        TEXT NOT NULL REFERENCES persons (ssn),
    generation INTEGER NOT NULL DEFAULT 3,
    issued     TEXT NOT NULL,
    expires    TEXT NOT NULL,
    status     TEXT NOT NULL CHECK (status = 'active' OR status = 'lost' OR status = 'frozen' OR status = 'cancelled')
) WITHOUT ROWID;
CREATE INDEX cards_by_ssn ON cards (ssn);

CREATE TABLE family_links (
    id         INTEGER PRIMARY KEY,
    holder_ssn TEXT NOT NULL REFERENCES persons (ssn),
    member_ssn TEXT NOT NULL REFERENCES persons (ssn),
    relation   TEXT NOT NULL,
    status     TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    channel    TEXT NOT NULL CHECK (channel = 'window' OR channel = 'hospital' OR channel = 'kiosk' OR channel = 'import'),
    operator   TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT,
    CHECK (holder_ssn <> member_ssn)
);
-- A member has at most one active payer; the database enforces it even
-- against concurrent writers.
CREATE UNIQUE INDEX links_one_active_payer ON family_links (member_ssn) WHERE status = 'active';
CREATE INDEX links_by_holder ON family_links (holder_ssn) WHERE status = 'active';

CREATE TABLE accounts (
    holder_ssn  TEXT PRIMARY KEY NOT NULL REFERENCES persons (ssn),
    balance_fen INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE contributions (
    ssn          TEXT NOT NULL REFERENCES persons (ssn),
    month        TEXT NOT NULL,
    employer     TEXT NOT NULL,
    base_fen     INTEGER NOT NULL,
    employee_fen INTEGER NOT NULL,
    employer_fen INTEGER NOT NULL,
    account_fen  INTEGER NOT NULL,
    PRIMARY KEY (ssn, month, employer)
) WITHOUT ROWID;

-- Append-only, hash-chained audit log.
CREATE TABLE audit (
    id        INTEGER PRIMARY KEY,
    at        TEXT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    ssn       TEXT,
    outcome   TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
