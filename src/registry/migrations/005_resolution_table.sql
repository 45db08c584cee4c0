-- 005: the read model moves off the person rows into one derived table.
--
-- Migration 003 kept copies of the best card, balances, payer and member
-- list on every person row, refreshed by seven triggers, and defined them
-- with a view (`json_group_array(... ORDER BY ...)`) that SQLite before
-- 3.44 cannot parse: the sqlite3 shell of Debian 12 and Ubuntu 22.04 then
-- refused the whole file. This migration replaces all of it:
--
-- * `resolution_source` (a view) is the one definition of every derived
--   fact, per person; with the person's own name, sex and insurance the
--   row is all `resolve` needs:
--     name, sex, insurance_type,           copied from persons
--     insurance_status
--     card_no, card_status, card_expires   the best card (active first,
--                                          newest generation, newest issue)
--     cards                                how many cards they hold
--     balance_fen                          their own account balance
--     payer_ssn, payer_name,               the holder whose account pays
--     payer_relation, payer_balance_fen    for them (active link)
--     members                              JSON [[ssn, name, relation,
--                                          since], ...] of the members they
--                                          cover, in link order; '[]' if none
--   It uses only SQL that SQLite 3.37 understands (the ordered member list
--   comes from an ordered subquery, which SQLite does not flatten into an
--   aggregate).
-- * `resolution` (a table, one row per person) is what `resolve` reads.
--   cardlink writes it from the view, in Rust, in the same transaction as
--   the change that moves it (bind, unbind, import, gen-demo); set-based
--   after a bulk load. `cardlinkctl db check` compares it with the view and
--   `cardlinkctl db repair` rebuilds it, for example after an
--   administrator's plain-SQL edit. No triggers: a bulk load pays nothing
--   per row.

DROP TRIGGER cards_copy_insert;
DROP TRIGGER cards_copy_update;
DROP TRIGGER cards_copy_delete;
DROP TRIGGER accounts_copy_insert;
DROP TRIGGER accounts_copy_update;
DROP TRIGGER accounts_copy_delete;
DROP TRIGGER links_copy_insert;
DROP TRIGGER links_copy_update;
DROP TRIGGER links_copy_delete;
DROP TRIGGER persons_copy_name;
DROP VIEW copy_card;
DROP VIEW copy_payer;
DROP VIEW copy_members;

ALTER TABLE persons DROP COLUMN card_no;
ALTER TABLE persons DROP COLUMN card_status;
ALTER TABLE persons DROP COLUMN card_expires;
ALTER TABLE persons DROP COLUMN balance_fen;
ALTER TABLE persons DROP COLUMN payer_ssn;
ALTER TABLE persons DROP COLUMN payer_name;
ALTER TABLE persons DROP COLUMN payer_relation;
ALTER TABLE persons DROP COLUMN payer_balance_fen;
ALTER TABLE persons DROP COLUMN members;

-- The payer of a member: the unique partial index links_one_active_payer
-- (member_ssn) WHERE status = 'active' serves it; the member list:
-- links_by_holder.

CREATE VIEW resolution_source AS
SELECT p.ssn AS ssn,
       p.name AS name, p.sex AS sex,
       p.insurance_type AS insurance_type, p.insurance_status AS insurance_status,
       c.card_no AS card_no, c.status AS card_status, c.expires AS card_expires,
       (SELECT count(*) FROM cards WHERE ssn = p.ssn) AS cards,
       a.balance_fen AS balance_fen,
       l.holder_ssn AS payer_ssn, h.name AS payer_name, l.relation AS payer_relation,
       ha.balance_fen AS payer_balance_fen,
       (SELECT json_group_array(json_array(member_ssn, name, relation, created_at))
          FROM (SELECT ml.member_ssn AS member_ssn, m.name AS name,
                       ml.relation AS relation, ml.created_at AS created_at
                  FROM family_links ml JOIN persons m ON m.ssn = ml.member_ssn
                 WHERE ml.holder_ssn = p.ssn AND ml.status = 'active'
                 ORDER BY ml.id)) AS members
  FROM persons p
  LEFT JOIN cards c ON c.card_no =
       (SELECT card_no FROM cards WHERE ssn = p.ssn
         ORDER BY status = 'active' DESC, generation DESC, issued DESC, card_no DESC LIMIT 1)
  LEFT JOIN accounts a ON a.holder_ssn = p.ssn
  LEFT JOIN family_links l ON l.member_ssn = p.ssn AND l.status = 'active'
  LEFT JOIN persons h ON h.ssn = l.holder_ssn
  LEFT JOIN accounts ha ON ha.holder_ssn = l.holder_ssn;

CREATE TABLE resolution (
    ssn               TEXT PRIMARY KEY NOT NULL,
    name              TEXT NOT NULL,
    sex               TEXT NOT NULL,
    insurance_type    TEXT NOT NULL,
    insurance_status  TEXT NOT NULL,
    card_no           TEXT,
    card_status       TEXT,
    card_expires      TEXT,
    cards             INTEGER NOT NULL,
    balance_fen       INTEGER,
    payer_ssn         TEXT,
    payer_name        TEXT,
    payer_relation    TEXT,
    payer_balance_fen INTEGER,
    members           TEXT NOT NULL
) WITHOUT ROWID;

INSERT INTO resolution SELECT * FROM resolution_source ORDER BY ssn;
