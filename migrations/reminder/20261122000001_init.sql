-- ReminderService schema `reminder` (the pool's search_path): what it knows of tasks, the
-- reminders it schedules and notifications. The notification change log, request ids,
-- processed events and the outbox are the platform's (migrations/platform).

-- Each task as the latest `task-events` event showed it. `version` orders events (an event
-- with a version not above the stored one is old news); a deleted task stays as a tombstone
-- so a late event cannot bring it back.
CREATE TABLE tasks (
    id            uuid PRIMARY KEY,
    user_id       text        NOT NULL,
    title         text        NOT NULL,
    version       bigint      NOT NULL,
    is_open       boolean     NOT NULL,
    deleted       boolean     NOT NULL DEFAULT false,
    -- The instant the task counts as due (a date-only due: the end of its day), and how to
    -- show the due to a person.
    due_at        timestamptz,
    due_label     text        NOT NULL DEFAULT '',
    -- When the overdue notice for `due_at` is to be produced; NULL once produced, or when
    -- no notice is owed (no due, not open, or already past when the due was set).
    overdue_at    timestamptz,
    -- The due instant the last overdue notice was produced for (a notice is produced once
    -- per due time, also when a late event re-sends the same due).
    overdue_notice_for timestamptz,
    update_time   timestamptz NOT NULL
);
CREATE INDEX tasks_overdue ON tasks (overdue_at) WHERE overdue_at IS NOT NULL;

-- One row per reminder of a task (RFC 5545 VALARM): its trigger, as set on the task, and
-- its schedule. state: 1 scheduled, 2 fired, 3 snoozed, 4 dismissed, 5 cancelled
-- (`taskmesh.reminder.v1.ScheduledReminder.State`).
CREATE TABLE reminders (
    task_id          uuid        NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    reminder_id      text        NOT NULL,
    user_id          text        NOT NULL,
    absolute_time    timestamptz,
    relative_seconds bigint,
    -- The trigger resolved against the task's due (RFC 5545 section 3.8.6.3).
    trigger_time     timestamptz NOT NULL,
    -- When it (next) fires: the trigger time, or after a snooze the snoozed time.
    fire_at          timestamptz NOT NULL,
    state            smallint    NOT NULL,
    fired_time       timestamptz,
    lateness_us      bigint,
    PRIMARY KEY (task_id, reminder_id),
    CHECK ((absolute_time IS NULL) <> (relative_seconds IS NULL))
);
-- The scheduler's queue: what waits to fire, soonest first.
CREATE INDEX reminders_pending ON reminders (fire_at) WHERE state IN (1, 3);
CREATE INDEX reminders_user ON reminders (user_id, fire_at, task_id, reminder_id);

-- kind: 1 reminder, 2 overdue (`taskmesh.reminder.v1.Notification.Kind`).
CREATE TABLE notifications (
    id           uuid        PRIMARY KEY,
    user_id      text        NOT NULL,
    kind         smallint    NOT NULL,
    task_id      uuid        NOT NULL,
    reminder_id  text        NOT NULL DEFAULT '',
    title        text        NOT NULL,
    body         text        NOT NULL,
    create_time  timestamptz NOT NULL,
    read_time    timestamptz,
    lateness_us  bigint      NOT NULL DEFAULT 0
);
CREATE INDEX notifications_user ON notifications (user_id, create_time DESC, id DESC);
CREATE INDEX notifications_unread ON notifications (user_id) WHERE read_time IS NULL;
