-- Appending an audit row in one round trip (a swipe's audit row is on the
-- path of every card shown). The function takes the registry's write lock
-- (the advisory lock every writer takes, its key passed by cardlink), reads
-- the chain's head with a snapshot taken after the lock is held (a
-- VOLATILE function takes a fresh snapshot per statement), and appends the
-- next row with the hash that audit.rs defines:
--   hash = SHA-256(prev_hash ␟ id ␟ at ␟ actor ␟ action ␟ ssn ␟ outcome), hex,
-- ␟ the byte 0x1F, ssn '' when there is none. `verify-audit` recomputes
-- every row in Rust, so a row this function wrote differently would show.
CREATE FUNCTION cardlink_audit_append(
    p_lock bigint, p_lock_timeout_ms integer,
    p_at text, p_actor text, p_action text, p_ssn text, p_outcome text)
RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    head_id   bigint;
    head_hash text;
    new_id    bigint;
BEGIN
    PERFORM set_config('lock_timeout', p_lock_timeout_ms || 'ms', true);
    PERFORM pg_advisory_xact_lock(p_lock);
    SELECT id, hash INTO head_id, head_hash FROM audit ORDER BY id DESC LIMIT 1;
    IF head_id IS NULL THEN
        head_id := 0;
        head_hash := repeat('0', 64);
    END IF;
    new_id := head_id + 1;
    INSERT INTO audit (id, at, actor, action, ssn, outcome, prev_hash, hash)
    VALUES (new_id, p_at, p_actor, p_action, p_ssn, p_outcome, head_hash,
            encode(sha256(convert_to(
                head_hash || chr(31) || new_id::text || chr(31) || p_at || chr(31) ||
                p_actor || chr(31) || p_action || chr(31) || coalesce(p_ssn, '') ||
                chr(31) || p_outcome, 'UTF8')), 'hex'));
    RETURN new_id;
END
$$;
