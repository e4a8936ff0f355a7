-- Full-text search within one user's tasks. The GIN index on `search` spans every user: for a
-- common word or prefix PostgreSQL read its posting list across all users (60,982 entries
-- for `call:*` over 1,000,000 tasks) and intersected it with the user's rows, about 27 ms
-- per ListTasks; a (user_id, search) GIN index reads the same posting list (17 ms). Every
-- ListTasks is scoped to one user, so the user's index range plus a recheck of `search` on
-- those rows is the cheaper plan, and without the global index the planner takes it.
-- Measured with taskmesh-bench `search` (see the README).
DROP INDEX tasks_search;
