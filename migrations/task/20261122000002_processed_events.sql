-- Idempotent consumption of `task-commands` (ARCHITECTURE.md invariant 2): the events each
-- consumer applied, recorded in the transaction of their effect.
CREATE TABLE processed_events (
    consumer      text        NOT NULL,
    event_id      uuid        NOT NULL,
    process_time  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX processed_events_time ON processed_events (process_time);
