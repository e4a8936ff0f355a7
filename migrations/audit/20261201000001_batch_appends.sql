-- A batch of appends moves a chain head forward by several entries in one UPDATE. The head
-- may move forward by any number of positions, but only over entries already written: one at
-- every position between, the first linked to the old head's hash and the last carrying the
-- new head's hash. Entries are unique per (user_id, chain_position), so positions stay
-- gapless as before.
CREATE OR REPLACE FUNCTION chains_forward_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF current_setting('taskmesh.audit_retention', true) = 'on'
           AND NEW.last_position = OLD.last_position AND NEW.last_hash = OLD.last_hash
           AND NEW.start_position >= OLD.start_position THEN
            RETURN NEW;
        END IF;
        IF NEW.last_position > OLD.last_position
           AND NEW.start_position = OLD.start_position AND NEW.start_hash = OLD.start_hash
           AND NEW.user_id = OLD.user_id
           AND EXISTS (SELECT 1 FROM entries
                       WHERE user_id = NEW.user_id AND chain_position = NEW.last_position
                         AND chain_hash = NEW.last_hash)
           AND EXISTS (SELECT 1 FROM entries
                       WHERE user_id = NEW.user_id AND chain_position = OLD.last_position + 1
                         AND previous_hash = OLD.last_hash)
           AND (SELECT count(*) FROM entries
                WHERE user_id = NEW.user_id
                  AND chain_position > OLD.last_position
                  AND chain_position <= NEW.last_position)
               = NEW.last_position - OLD.last_position THEN
            RETURN NEW;
        END IF;
    END IF;
    RAISE EXCEPTION 'audit chain heads only move forward: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
