-- The platform's tables (taskmesh_platform::db::PLATFORM_MIGRATOR) are one migration set applied
-- to every service's schema beside the service's own. A schema migrated before they were one
-- set made them in its own first migration: `IF NOT EXISTS` makes these no-ops there.

-- Idempotent consumption (ARCHITECTURE.md invariant 2): the events each consumer applied,
-- recorded in the transaction of their effect (taskmesh_platform::consumer).
CREATE TABLE IF NOT EXISTS processed_events (
    consumer      text        NOT NULL,
    event_id      uuid        NOT NULL,
    process_time  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX IF NOT EXISTS processed_events_time ON processed_events (process_time);
