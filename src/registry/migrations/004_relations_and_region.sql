-- 004: the 2024 family-mutual-aid rules.
--
-- * family_links.relation is one of the eight close relatives (近亲属) of
--   国办发〔2024〕38号: spouse, parent, child, sibling, grandparent,
--   maternal_grandparent, grandchild, maternal_grandchild. The table keeps
--   its TEXT column (rows made under 国办发〔2021〕14号 — spouse, parent,
--   child — stay valid); triggers refuse any other value from now on.
-- * persons.region is the insured region (统筹区 code, 6 digits) where the
--   person is insured, for the province/city scope of a link. It is not
--   the birthplace in the SSN; NULL until imported.

ALTER TABLE persons ADD COLUMN region TEXT
    CHECK (region IS NULL OR (length(region) = 6 AND region NOT GLOB '*[^0-9]*'));

CREATE TRIGGER family_links_relation_insert BEFORE INSERT ON family_links
WHEN NEW.relation NOT IN ('spouse', 'parent', 'child', 'sibling', 'grandparent',
                          'maternal_grandparent', 'grandchild', 'maternal_grandchild')
BEGIN
    SELECT RAISE(ABORT, 'relation is not one of the eight close relatives');
END;

CREATE TRIGGER family_links_relation_update BEFORE UPDATE OF relation ON family_links
WHEN NEW.relation NOT IN ('spouse', 'parent', 'child', 'sibling', 'grandparent',
                          'maternal_grandparent', 'grandchild', 'maternal_grandchild')
BEGIN
    SELECT RAISE(ABORT, 'relation is not one of the eight close relatives');
END;

-- Cooldown after an unbind: the member's revoked links by time.
CREATE INDEX family_links_member_revoked ON family_links (member_ssn, revoked_at)
    WHERE status = 'revoked';
