-- AuditService schema `audit` (the pool's search_path): the append-only audit log of every
-- event in the mesh and each user's hash chain. Processed events are the platform's
-- (migrations/platform).

-- One row per event (`ce_id` unique across the mesh). Append-only: see the trigger below.
CREATE TABLE entries (
    -- `auditEntries/{id}`, a UUIDv7 taken when the entry is recorded.
    id             uuid PRIMARY KEY,
    event_id       uuid        NOT NULL UNIQUE,
    event_type     text        NOT NULL,
    source         text        NOT NULL,
    topic          text        NOT NULL,
    actor          text        NOT NULL,
    user_id        text        NOT NULL,
    resource       text        NOT NULL,
    event_time     timestamptz NOT NULL,
    trace_id       text        NOT NULL,
    request_id     text        NOT NULL,
    -- For updates: [{"field", "before", "after"}] with proto3 JSON values.
    changes        jsonb       NOT NULL,
    -- The user's hash chain: position from 1, SHA-256 over the previous hash and the
    -- entry's canonical form (taskmesh_audit::chain).
    chain_position bigint      NOT NULL,
    previous_hash  bytea       NOT NULL,
    chain_hash     bytea       NOT NULL,
    record_time    timestamptz NOT NULL,
    UNIQUE (user_id, chain_position)
);
CREATE INDEX entries_resource ON entries (user_id, resource, chain_position);
CREATE INDEX entries_time ON entries (event_time, id);
CREATE INDEX entries_record_time ON entries (record_time);

-- Each user's chain: its head (locked by every append, so positions are gapless) and where
-- the verifiable part starts once retention removed older entries.
CREATE TABLE chains (
    user_id        text PRIMARY KEY,
    last_position  bigint NOT NULL,
    last_hash      bytea  NOT NULL,
    start_position bigint NOT NULL,
    start_hash     bytea  NOT NULL
);

-- Immutable by construction: UPDATE, DELETE and TRUNCATE of entries fail, except the
-- DELETEs of purge_entries (retention). The flag purge_entries sets is a transaction-local
-- setting that any session of the owning role could set too, and an owner can drop
-- triggers: in production run the service as a role that owns nothing here and has only
-- SELECT and INSERT on entries, SELECT, INSERT and UPDATE on chains, and EXECUTE on
-- purge_entries (made SECURITY DEFINER by the owner).
CREATE FUNCTION entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('taskmesh.audit_retention', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit entries are append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON entries
    FOR EACH ROW EXECUTE FUNCTION entries_append_only();
CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON entries
    FOR EACH STATEMENT EXECUTE FUNCTION entries_append_only();

-- Chain heads move only forward, one entry at a time (an append), and are never deleted;
-- their verifiable start moves only inside purge_entries.
CREATE FUNCTION chains_forward_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF current_setting('taskmesh.audit_retention', true) = 'on'
           AND NEW.last_position = OLD.last_position AND NEW.last_hash = OLD.last_hash
           AND NEW.start_position >= OLD.start_position THEN
            RETURN NEW;
        END IF;
        IF NEW.last_position = OLD.last_position + 1
           AND NEW.start_position = OLD.start_position AND NEW.start_hash = OLD.start_hash THEN
            RETURN NEW;
        END IF;
    END IF;
    RAISE EXCEPTION 'audit chain heads only move forward: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER chains_forward_only BEFORE UPDATE OR DELETE ON chains
    FOR EACH ROW EXECUTE FUNCTION chains_forward_only();
CREATE TRIGGER chains_no_truncate BEFORE TRUNCATE ON chains
    FOR EACH STATEMENT EXECUTE FUNCTION chains_forward_only();

-- Retention: for each user, deletes the prefix of the chain up to the last entry recorded
-- before `cutoff` (by position, so a prefix whatever the clock did) and moves the chain's
-- verifiable start past it; returns how many entries went. One purge at a time (an advisory
-- lock); a replica that finds it taken purges nothing this round.
CREATE FUNCTION purge_entries(cutoff timestamptz) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    removed bigint;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('taskmesh.audit.purge_entries')) THEN
        RETURN 0;
    END IF;
    PERFORM set_config('taskmesh.audit_retention', 'on', true);
    WITH bounds AS (
        SELECT user_id, max(chain_position) AS bound
        FROM entries WHERE record_time < cutoff GROUP BY user_id
    ), doomed AS (
        DELETE FROM entries e USING bounds b
        WHERE e.user_id = b.user_id AND e.chain_position <= b.bound
        RETURNING e.user_id, e.chain_position, e.chain_hash
    ), last AS (
        SELECT DISTINCT ON (user_id) user_id, chain_position, chain_hash
        FROM doomed ORDER BY user_id, chain_position DESC
    ), moved AS (
        UPDATE chains c SET start_position = last.chain_position + 1, start_hash = last.chain_hash
        FROM last WHERE c.user_id = last.user_id
        RETURNING 1
    )
    SELECT count(*) INTO removed FROM doomed;
    PERFORM set_config('taskmesh.audit_retention', 'off', true);
    RETURN removed;
END
$$;
