-- Tasks per user, for the tasks-per-user quota (TASKMESH_MAX_TASKS_PER_USER): kept by
-- statement-level triggers on tasks, so CreateTask reads the count inside its INSERT
-- (no extra statement) and a set-based write updates each user's count once.
-- No insert or delete of tasks between the count below and the triggers (the migration Job
-- runs while the old TaskService may still write).
LOCK TABLE tasks IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE task_counts (
    user_id text   PRIMARY KEY,
    tasks   bigint NOT NULL CHECK (tasks >= 0)
);

INSERT INTO task_counts (user_id, tasks)
SELECT user_id, count(*) FROM tasks GROUP BY user_id;

CREATE FUNCTION count_inserted_tasks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_counts (user_id, tasks)
    SELECT user_id, count(*) FROM inserted GROUP BY user_id
    ON CONFLICT (user_id) DO UPDATE SET tasks = task_counts.tasks + EXCLUDED.tasks;
    RETURN NULL;
END $$;

CREATE FUNCTION count_deleted_tasks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE task_counts c SET tasks = c.tasks - d.n
    FROM (SELECT user_id, count(*) AS n FROM deleted GROUP BY user_id) d
    WHERE c.user_id = d.user_id;
    RETURN NULL;
END $$;

CREATE TRIGGER tasks_counted_on_insert AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION count_inserted_tasks();

CREATE TRIGGER tasks_counted_on_delete AFTER DELETE ON tasks
    REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION count_deleted_tasks();

CREATE FUNCTION count_truncated_tasks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM task_counts;
    RETURN NULL;
END $$;

CREATE TRIGGER tasks_counted_on_truncate AFTER TRUNCATE ON tasks
    FOR EACH STATEMENT EXECUTE FUNCTION count_truncated_tasks();
