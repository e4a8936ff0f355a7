-- TaskService schema `task` (the pool's search_path): tasks and tags. The change log, request
-- ids, processed events and the outbox are the platform's (migrations/platform).

CREATE TABLE tags (
    id            uuid PRIMARY KEY,
    user_id       text        NOT NULL,
    display_name  text        NOT NULL,
    color         text        NOT NULL DEFAULT '',
    version       bigint      NOT NULL DEFAULT 1,
    create_time   timestamptz NOT NULL,
    update_time   timestamptz NOT NULL
);
CREATE UNIQUE INDEX tags_user_name ON tags (user_id, lower(display_name));

CREATE TABLE tasks (
    id             uuid PRIMARY KEY,
    user_id        text        NOT NULL,
    title          text        NOT NULL,
    description    text        NOT NULL DEFAULT '',
    priority       smallint    NOT NULL DEFAULT 1,
    tag_ids        uuid[]      NOT NULL DEFAULT '{}',
    -- The instant filters and order use: the due time, or for a date-only due the first
    -- instant of the next day in due_time_zone.
    due_at         timestamptz,
    due_time       timestamptz,
    due_date       date,
    due_time_zone  text,
    -- [{"id": "...", "absolute_time": "RFC 3339"} | {"id": "...", "relative_seconds": -900}]
    reminders      jsonb       NOT NULL DEFAULT '[]',
    rrule          text,
    recurrence_anchor smallint,
    exdates        timestamptz[] NOT NULL DEFAULT '{}',
    series_id      uuid,
    previous_task_id uuid,
    state          smallint    NOT NULL DEFAULT 1,
    version        bigint      NOT NULL DEFAULT 1,
    create_time    timestamptz NOT NULL,
    update_time    timestamptz NOT NULL,
    complete_time  timestamptz,
    search         tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('simple', title), 'A') ||
        setweight(to_tsvector('simple', description), 'B')
    ) STORED
);
CREATE INDEX tasks_user_create ON tasks (user_id, create_time, id);
CREATE INDEX tasks_user_due ON tasks (user_id, (COALESCE(due_at, 'infinity'::timestamptz)), priority DESC, create_time, id);
CREATE INDEX tasks_search ON tasks USING gin (search);
CREATE INDEX tasks_tags ON tasks USING gin (tag_ids);
