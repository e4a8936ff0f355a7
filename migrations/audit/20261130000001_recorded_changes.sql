-- The changes already in the history, by what identifies a change apart from its `ce_id`:
-- `<type> <resource>@<version>` for versioned resources (tasks), `<type> <request_id>` for
-- commands. A replay of an old change under a new `ce_id` finds its key here and is not a
-- second entry. Kept as long as the entries (the audit retention).
CREATE TABLE recorded_changes (
    user_id     text        NOT NULL,
    change_key  text        NOT NULL,
    event_id    uuid        NOT NULL,
    record_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, change_key)
);
CREATE INDEX recorded_changes_record_time ON recorded_changes (record_time);
