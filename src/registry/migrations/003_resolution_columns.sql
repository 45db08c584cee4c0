-- Resolution in fewer lookups: each person row carries who pays for them,
-- how many members they cover and their own account balance, and each link
-- row carries the member's name. Triggers keep these copies exact inside
-- the same transaction as the change that moves them, so they can never
-- disagree with family_links, accounts or persons.

ALTER TABLE persons ADD COLUMN payer_ssn TEXT;
ALTER TABLE persons ADD COLUMN payer_relation TEXT;
ALTER TABLE persons ADD COLUMN member_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE persons ADD COLUMN balance_fen INTEGER;
ALTER TABLE family_links ADD COLUMN member_name TEXT NOT NULL DEFAULT '';

-- Backfill databases created before this migration.
UPDATE persons SET balance_fen = (SELECT a.balance_fen FROM accounts a WHERE a.holder_ssn = persons.ssn)
 WHERE EXISTS (SELECT 1 FROM accounts a WHERE a.holder_ssn = persons.ssn);
UPDATE persons SET (payer_ssn, payer_relation) =
       (SELECT l.holder_ssn, l.relation FROM family_links l WHERE l.member_ssn = persons.ssn AND l.status = 'active')
 WHERE EXISTS (SELECT 1 FROM family_links l WHERE l.member_ssn = persons.ssn AND l.status = 'active');
UPDATE persons SET member_count =
       (SELECT count(*) FROM family_links l WHERE l.holder_ssn = persons.ssn AND l.status = 'active')
 WHERE EXISTS (SELECT 1 FROM family_links l WHERE l.holder_ssn = persons.ssn AND l.status = 'active');
UPDATE family_links SET member_name = (SELECT p.name FROM persons p WHERE p.ssn = family_links.member_ssn);

-- Links: apply a new row, undo-then-apply a changed one, undo a deleted one.
CREATE TRIGGER links_copy_insert AFTER INSERT ON family_links
BEGIN
    UPDATE family_links SET member_name = (SELECT name FROM persons WHERE ssn = NEW.member_ssn) WHERE id = NEW.id;
    UPDATE persons SET payer_ssn = NEW.holder_ssn, payer_relation = NEW.relation
     WHERE ssn = NEW.member_ssn AND NEW.status = 'active';
    UPDATE persons SET member_count = member_count + 1
     WHERE ssn = NEW.holder_ssn AND NEW.status = 'active';
END;

CREATE TRIGGER links_copy_update AFTER UPDATE OF status, holder_ssn, member_ssn, relation ON family_links
BEGIN
    UPDATE persons SET payer_ssn = NULL, payer_relation = NULL
     WHERE ssn = OLD.member_ssn AND OLD.status = 'active';
    UPDATE persons SET member_count = member_count - 1
     WHERE ssn = OLD.holder_ssn AND OLD.status = 'active';
    UPDATE persons SET payer_ssn = NEW.holder_ssn, payer_relation = NEW.relation
     WHERE ssn = NEW.member_ssn AND NEW.status = 'active';
    UPDATE persons SET member_count = member_count + 1
     WHERE ssn = NEW.holder_ssn AND NEW.status = 'active';
    UPDATE family_links SET member_name = (SELECT name FROM persons WHERE ssn = NEW.member_ssn)
     WHERE id = NEW.id AND NEW.member_ssn <> OLD.member_ssn;
END;

CREATE TRIGGER links_copy_delete AFTER DELETE ON family_links WHEN OLD.status = 'active'
BEGIN
    UPDATE persons SET payer_ssn = NULL, payer_relation = NULL WHERE ssn = OLD.member_ssn;
    UPDATE persons SET member_count = member_count - 1 WHERE ssn = OLD.holder_ssn;
END;

-- Names: follow a person's name into the links that name them.
CREATE INDEX links_by_member ON family_links (member_ssn);
CREATE TRIGGER persons_copy_name AFTER UPDATE OF name ON persons
BEGIN
    UPDATE family_links SET member_name = NEW.name WHERE member_ssn = NEW.ssn;
END;

-- Accounts: the balance rides on the holder's person row.
CREATE TRIGGER accounts_copy_insert AFTER INSERT ON accounts
BEGIN
    UPDATE persons SET balance_fen = NEW.balance_fen WHERE ssn = NEW.holder_ssn;
END;
CREATE TRIGGER accounts_copy_update AFTER UPDATE ON accounts
BEGIN
    UPDATE persons SET balance_fen = NULL WHERE ssn = OLD.holder_ssn;
    UPDATE persons SET balance_fen = NEW.balance_fen WHERE ssn = NEW.holder_ssn;
END;
CREATE TRIGGER accounts_copy_delete AFTER DELETE ON accounts
BEGIN
    UPDATE persons SET balance_fen = NULL WHERE ssn = OLD.holder_ssn;
END;

-- The member list of a holder, names included, from one index range.
DROP INDEX links_by_holder;
CREATE INDEX links_by_holder ON family_links (holder_ssn, id, member_ssn, member_name, relation, created_at)
 WHERE status = 'active';
-- Payer lookups now read persons.payer_ssn; bind uses the unique index.
DROP INDEX links_payer_of;
