-- Covering indexes for resolve: each lookup reads the index alone, never
-- the table row behind it. (The unique partial index on member_ssn stays:
-- it enforces one active payer per member.)
CREATE INDEX links_payer_of ON family_links (member_ssn, holder_ssn, relation) WHERE status = 'active';
DROP INDEX links_by_holder;
CREATE INDEX links_by_holder ON family_links (holder_ssn, id, member_ssn, relation, created_at) WHERE status = 'active';
DROP INDEX cards_by_ssn;
CREATE INDEX cards_by_ssn ON cards (ssn, status, generation, issued, card_no, expires);
