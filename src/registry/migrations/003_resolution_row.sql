-- Resolution from one row: each person row carries copies of everything
-- `resolve` reports that lives in other tables, so resolving by SSN reads one
-- row and resolving by card number reads the card and one row.
--
--   card_no, card_status, card_expires   the person's best card (active
--                                        first, newest generation, newest)
--   balance_fen                          their own account balance
--   payer_ssn, payer_name,               the holder whose account pays for
--   payer_relation, payer_balance_fen    them (active link), and its balance
--   members                              JSON [[ssn, name, relation, since],
--                                        ...] of the members they cover, in
--                                        link order; '[]' for none
--
-- Each copy is defined once, by the views copy_card, copy_payer and
-- copy_members below (and accounts for balance_fen). Triggers on cards,
-- accounts, family_links and persons refresh the copies from the views in
-- the same transaction as the change that moves them, so they can never
-- disagree with the tables; `cardlinkctl db check` compares every row with
-- the views.

ALTER TABLE persons ADD COLUMN card_no TEXT;
ALTER TABLE persons ADD COLUMN card_status TEXT;
ALTER TABLE persons ADD COLUMN card_expires TEXT;
ALTER TABLE persons ADD COLUMN balance_fen INTEGER;
ALTER TABLE persons ADD COLUMN payer_ssn TEXT;
ALTER TABLE persons ADD COLUMN payer_name TEXT;
ALTER TABLE persons ADD COLUMN payer_relation TEXT;
ALTER TABLE persons ADD COLUMN payer_balance_fen INTEGER;
ALTER TABLE persons ADD COLUMN members TEXT NOT NULL DEFAULT '[]';

CREATE VIEW copy_card AS
SELECT p.ssn AS ssn, c.card_no AS card_no, c.status AS card_status, c.expires AS card_expires
  FROM persons p
  LEFT JOIN cards c ON c.card_no =
       (SELECT card_no FROM cards WHERE ssn = p.ssn
         ORDER BY status = 'active' DESC, generation DESC, issued DESC, card_no DESC LIMIT 1);

CREATE VIEW copy_payer AS
SELECT p.ssn AS ssn, l.holder_ssn AS payer_ssn, h.name AS payer_name,
       l.relation AS payer_relation, a.balance_fen AS payer_balance_fen
  FROM persons p
  LEFT JOIN family_links l ON l.member_ssn = p.ssn AND l.status = 'active'
  LEFT JOIN persons h ON h.ssn = l.holder_ssn
  LEFT JOIN accounts a ON a.holder_ssn = l.holder_ssn;

CREATE VIEW copy_members AS
SELECT p.ssn AS ssn,
       (SELECT json_group_array(json_array(l.member_ssn, m.name, l.relation, l.created_at) ORDER BY l.id)
          FROM family_links l JOIN persons m ON m.ssn = l.member_ssn
         WHERE l.holder_ssn = p.ssn AND l.status = 'active') AS members
  FROM persons p;

-- Backfill databases created before this migration.
UPDATE persons SET
    (card_no, card_status, card_expires) =
        (SELECT card_no, card_status, card_expires FROM copy_card v WHERE v.ssn = persons.ssn),
    balance_fen = (SELECT balance_fen FROM accounts WHERE holder_ssn = persons.ssn),
    (payer_ssn, payer_name, payer_relation, payer_balance_fen) =
        (SELECT payer_ssn, payer_name, payer_relation, payer_balance_fen FROM copy_payer v WHERE v.ssn = persons.ssn),
    members = (SELECT members FROM copy_members v WHERE v.ssn = persons.ssn);

-- Cards: the best card of the card's person.
CREATE TRIGGER cards_copy_insert AFTER INSERT ON cards
BEGIN
    UPDATE persons SET (card_no, card_status, card_expires) =
           (SELECT card_no, card_status, card_expires FROM copy_card v WHERE v.ssn = persons.ssn)
     WHERE ssn = NEW.ssn;
END;
CREATE TRIGGER cards_copy_update AFTER UPDATE ON cards
BEGIN
    UPDATE persons SET (card_no, card_status, card_expires) =
           (SELECT card_no, card_status, card_expires FROM copy_card v WHERE v.ssn = persons.ssn)
     WHERE ssn IN (OLD.ssn, NEW.ssn);
END;
CREATE TRIGGER cards_copy_delete AFTER DELETE ON cards
BEGIN
    UPDATE persons SET (card_no, card_status, card_expires) =
           (SELECT card_no, card_status, card_expires FROM copy_card v WHERE v.ssn = persons.ssn)
     WHERE ssn = OLD.ssn;
END;

-- Accounts: the holder's own balance and the payer balance of their members.
CREATE TRIGGER accounts_copy_insert AFTER INSERT ON accounts
BEGIN
    UPDATE persons SET balance_fen = NEW.balance_fen WHERE ssn = NEW.holder_ssn;
    UPDATE persons SET payer_balance_fen = NEW.balance_fen
     WHERE ssn IN (SELECT member_ssn FROM family_links WHERE holder_ssn = NEW.holder_ssn AND status = 'active');
END;
CREATE TRIGGER accounts_copy_update AFTER UPDATE ON accounts
BEGIN
    UPDATE persons SET balance_fen = (SELECT balance_fen FROM accounts WHERE holder_ssn = persons.ssn)
     WHERE ssn IN (OLD.holder_ssn, NEW.holder_ssn);
    UPDATE persons SET payer_balance_fen = (SELECT payer_balance_fen FROM copy_payer v WHERE v.ssn = persons.ssn)
     WHERE ssn IN (SELECT member_ssn FROM family_links
                    WHERE holder_ssn IN (OLD.holder_ssn, NEW.holder_ssn) AND status = 'active');
END;
CREATE TRIGGER accounts_copy_delete AFTER DELETE ON accounts
BEGIN
    UPDATE persons SET balance_fen = NULL WHERE ssn = OLD.holder_ssn;
    UPDATE persons SET payer_balance_fen = NULL
     WHERE ssn IN (SELECT member_ssn FROM family_links WHERE holder_ssn = OLD.holder_ssn AND status = 'active');
END;

-- Links: the member's payer and the holder's member list.
CREATE TRIGGER links_copy_insert AFTER INSERT ON family_links WHEN NEW.status = 'active'
BEGIN
    UPDATE persons SET (payer_ssn, payer_name, payer_relation, payer_balance_fen) =
           (SELECT payer_ssn, payer_name, payer_relation, payer_balance_fen FROM copy_payer v WHERE v.ssn = persons.ssn)
     WHERE ssn = NEW.member_ssn;
    UPDATE persons SET members = (SELECT members FROM copy_members v WHERE v.ssn = persons.ssn)
     WHERE ssn = NEW.holder_ssn;
END;
CREATE TRIGGER links_copy_update AFTER UPDATE OF status, holder_ssn, member_ssn, relation, created_at ON family_links
BEGIN
    UPDATE persons SET (payer_ssn, payer_name, payer_relation, payer_balance_fen) =
           (SELECT payer_ssn, payer_name, payer_relation, payer_balance_fen FROM copy_payer v WHERE v.ssn = persons.ssn)
     WHERE ssn IN (OLD.member_ssn, NEW.member_ssn);
    UPDATE persons SET members = (SELECT members FROM copy_members v WHERE v.ssn = persons.ssn)
     WHERE ssn IN (OLD.holder_ssn, NEW.holder_ssn);
END;
CREATE TRIGGER links_copy_delete AFTER DELETE ON family_links WHEN OLD.status = 'active'
BEGIN
    UPDATE persons SET (payer_ssn, payer_name, payer_relation, payer_balance_fen) = (NULL, NULL, NULL, NULL)
     WHERE ssn = OLD.member_ssn;
    UPDATE persons SET members = (SELECT members FROM copy_members v WHERE v.ssn = persons.ssn)
     WHERE ssn = OLD.holder_ssn;
END;

-- Names: a person's name appears in their holder's member list and as the
-- payer name of the members they cover.
CREATE TRIGGER persons_copy_name AFTER UPDATE OF name ON persons
BEGIN
    UPDATE persons SET members = (SELECT members FROM copy_members v WHERE v.ssn = persons.ssn)
     WHERE ssn = NEW.payer_ssn;
    UPDATE persons SET payer_name = NEW.name
     WHERE ssn IN (SELECT member_ssn FROM family_links WHERE holder_ssn = NEW.ssn AND status = 'active');
END;

-- Payer lookups now read persons.payer_ssn; bind uses the unique index
-- links_one_active_payer, the member lists links_by_holder.
DROP INDEX links_payer_of;
