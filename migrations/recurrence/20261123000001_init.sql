-- RecurrenceService schema `recurrence` (the pool's search_path): the bookkeeping of each
-- recurring series and its occurrences. Tasks themselves live in TaskService; this schema
-- only knows what `task-events` and its own RPCs told it. Request ids, processed events and
-- the outbox of the commands it sends are the platform's (migrations/platform).

-- One row per series (`Recurrence.series` on every task of it). end_reason follows
-- `taskmesh.events.v1.SeriesEnded.Reason`: 1 COUNT reached, 2 UNTIL passed, 3 stopped,
-- 4 deleted.
CREATE TABLE series (
    id                uuid PRIMARY KEY,
    user_id           text        NOT NULL,
    -- The newest task of the series (the open occurrence while it goes on).
    current_task      uuid        NOT NULL,
    -- Tasks the series has produced, the first one included.
    occurrence_count  bigint      NOT NULL,
    end_time          timestamptz,
    end_reason        smallint,
    create_time       timestamptz NOT NULL,
    update_time       timestamptz NOT NULL,
    CHECK ((end_time IS NULL) = (end_reason IS NULL))
);
CREATE INDEX series_user ON series (user_id);

-- One row per task of a series, in series order.
CREATE TABLE occurrences (
    task_id           uuid PRIMARY KEY,
    series_id         uuid        NOT NULL REFERENCES series (id),
    user_id           text        NOT NULL,
    -- 1 for the first task of the series, +1 for each next one.
    position          bigint      NOT NULL,
    -- Rule occurrences used up to and including this one (what COUNT bounds; see
    -- taskmesh_domain::recurrence::SeriesPosition::used). Back to 1 when the rule changes.
    used              bigint      NOT NULL,
    -- The wall-clock time of day of the series' occurrences when it differs from this
    -- task's due (a due that a DST gap moved); NULL: the due's own.
    wall_time         time,
    -- Occurrences skipped by SkipOccurrence whose EXDATE may not have reached the task yet.
    skipped           timestamptz[] NOT NULL DEFAULT '{}',
    -- Set once this task's successor was asked for (or the series ended after it): a task
    -- leads to at most one next occurrence, whatever is redelivered or re-completed.
    successor_due     timestamptz,
    successor_used    bigint,
    successor_wall_time time,
    successor_request text,
    deleted           boolean     NOT NULL DEFAULT false,
    create_time       timestamptz NOT NULL
);
CREATE INDEX occurrences_series ON occurrences (series_id, position);
