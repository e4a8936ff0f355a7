-- The per-user change log (taskmesh_platform::changelog): a gapless counter per user,
-- allocated in the writing transaction (the row lock serialises one user's writes), and the
-- changes themselves. (`IF NOT EXISTS`: see 20261122000002_processed_events.sql.)
CREATE TABLE IF NOT EXISTS change_counters (
    user_id        text PRIMARY KEY,
    last_sequence  bigint NOT NULL
);

CREATE TABLE IF NOT EXISTS changes (
    user_id      text        NOT NULL,
    sequence     bigint      NOT NULL,
    event_id     uuid        NOT NULL,
    event_type   text        NOT NULL,
    subject      text        NOT NULL,
    create_time  timestamptz NOT NULL,
    payload      bytea       NOT NULL,
    PRIMARY KEY (user_id, sequence)
);
CREATE INDEX IF NOT EXISTS changes_create_time ON changes (create_time);
