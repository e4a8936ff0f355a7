// The app: sign-in, then the user's tasks kept live by the sync engine.

import { useEffect, useMemo, useState } from "preact/hooks";
import { connect, describe, requestId, type Api } from "./api";
import { Auth, loadConfig, type SignInConfig } from "./auth";
import { TaskEditor } from "./editor";
import { formatDue, formatTime, isOverdue, priorities, priorityLabel } from "./format";
import { Priority, Task_State, type Task } from "./gen/taskmesh/task/v1/task_pb";
import { SignIn } from "./signin";
import { Sync, type Connection, type SyncState } from "./sync";
import { allTags, defaultView, visibleTasks, type View } from "./view";

/** Re-renders whenever the session or its notice changes. */
function useAuth(auth: Auth): void {
  const [, setVersion] = useState(0);
  useEffect(() => auth.subscribe(() => setVersion((v) => v + 1)), [auth]);
}

export function App() {
  const auth = useMemo(() => new Auth(), []);
  useAuth(auth);
  const [config, setConfig] = useState<SignInConfig>();
  const [startError, setStartError] = useState("");
  const [attempt, setAttempt] = useState(0);
  useEffect(() => {
    let cancelled = false;
    (async () => {
      try {
        const loaded = await loadConfig();
        await auth.configure(loaded);
        // Back from the identity provider: finish signing in before showing anything.
        await auth.finishOidc();
        if (!cancelled) setConfig(loaded);
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        if (!cancelled) setStartError(err instanceof TypeError ? `The server cannot be reached (${message}).` : message);
      }
    })();
    return () => {
      cancelled = true;
    };
  }, [auth, attempt]);

  if (!config) {
    return (
      <main class="sign-in">
        <form
          data-testid="starting"
          onSubmit={(e) => {
            e.preventDefault();
            setStartError("");
            setAttempt(attempt + 1);
          }}
        >
          <h1>taskmesh</h1>
          {startError ? (
            <>
              <p class="notice" role="alert">
                {startError}
              </p>
              <button type="submit">Try again</button>
            </>
          ) : (
            <p>Loading…</p>
          )}
        </form>
      </main>
    );
  }
  const session = auth.current();
  if (!session) return <SignIn auth={auth} config={config} />;
  // Keyed on the user, not the token: a renewed token changes nothing on screen.
  return <Workspace key={session.sub} auth={auth} user={session.name ?? session.sub} />;
}

/** Re-renders every `ms` milliseconds (for overdue marks and retry countdowns). */
function useNow(ms: number): number {
  const [now, setNow] = useState(Date.now);
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), ms);
    return () => clearInterval(timer);
  }, [ms]);
  return now;
}

function useSync(sync: Sync): SyncState {
  const [state, setState] = useState(sync.get());
  useEffect(() => sync.subscribe(() => setState(sync.get())), [sync]);
  return state;
}

/**
 * The server's full-text matches (ListTasks `query`) as task names, asked again when the
 * query changes (after 250 ms of quiet typing) or when tasks change while searching.
 */
function useSearch(api: Api, query: string, changes: number): { matches?: Set<string>; error: string } {
  const [result, setResult] = useState<{ matches?: Set<string>; error: string }>({ error: "" });
  useEffect(() => {
    const words = query.trim();
    if (!words) {
      setResult({ error: "" });
      return;
    }
    const abort = new AbortController();
    const timer = setTimeout(async () => {
      try {
        const names = new Set<string>();
        let pageToken = "";
        do {
          const page = await api.tasks.listTasks({ query: words, pageSize: 1000, pageToken }, { signal: abort.signal });
          for (const task of page.tasks) names.add(task.name);
          pageToken = page.nextPageToken;
        } while (pageToken);
        setResult({ matches: names, error: "" });
      } catch (err) {
        if (!abort.signal.aborted) setResult({ matches: new Set(), error: describe(err) });
      }
    }, 250);
    return () => {
      clearTimeout(timer);
      abort.abort();
    };
  }, [api, query, changes]);
  return result;
}

function Workspace({ auth, user }: { auth: Auth; user: string }) {
  // The clients read the current token on every call (see api.ts).
  const api = useMemo(() => connect(auth), [auth]);
  const sync = useMemo(
    () =>
      new Sync(api, {
        initialBackoffMs: 500,
        maxBackoffMs: 15000,
        silenceMs: 45000,
        // The server refused the token outright (not as expired): sign out, saying why
        // (unless the session has a newer token by now).
        onUnauthenticated: (message, token) => auth.refused(token, message),
        // Loads and streams carry the session's token; a stream whose token ran out waits for
        // a newer one, then resumes.
        tokens: auth,
      }),
    [api, auth],
  );
  useEffect(() => {
    sync.start();
    return () => sync.stop();
  }, [sync]);
  const state = useSync(sync);
  const [view, setView] = useState<View>(defaultView);
  const search = useSearch(api, view.query, view.query ? state.applied : 0);
  const [editing, setEditing] = useState<Task | "new" | undefined>();
  const [errors, setErrors] = useState<string[]>([]);
  const now = useNow(30000);

  const report = (err: unknown) => setErrors((list) => [...list, describe(err)]);
  const tasks = visibleTasks(state.tasks.values(), view, search.matches);
  const tags = allTags(state.tasks.values());
  const editingTask = editing === "new" ? undefined : editing && state.tasks.get(editing.name);

  async function toggle(task: Task) {
    try {
      const request = { name: task.name, etag: task.etag, requestId: requestId() };
      const response =
        task.state === Task_State.COMPLETED ? await api.tasks.uncompleteTask(request) : await api.tasks.completeTask(request);
      if (response.task) sync.applyTask(response.task);
    } catch (err) {
      report(err);
    }
  }
  async function remove(task: Task) {
    try {
      await api.tasks.deleteTask({ name: task.name, etag: task.etag });
      sync.applyDeleted(task.name);
    } catch (err) {
      report(err);
    }
  }

  return (
    <div class="app">
      <header>
        <h1>taskmesh</h1>
        <ConnectionIndicator connection={state.connection} onRetry={() => sync.retryNow()} />
        <span class="spacer" />
        <Bell api={api} sync={sync} state={state} onError={report} />
        <span class="user" data-testid="user">
          {user}
        </span>
        <button class="link" onClick={() => void auth.signOut()}>
          Sign out
        </button>
      </header>
      {errors.length > 0 && (
        <div class="errors" role="alert" data-testid="errors">
          {errors.map((e, i) => (
            <p key={i}>{e}</p>
          ))}
          <button class="link" onClick={() => setErrors([])}>
            Dismiss
          </button>
        </div>
      )}
      <Toolbar view={view} tags={tags} onChange={(patch) => setView((v) => ({ ...v, ...patch }))} onNew={() => setEditing("new")} />
      {search.error && (
        <p class="field-errors" role="alert">
          Search failed: {search.error}
        </p>
      )}
      {!state.loaded ? (
        <p class="empty">Loading…</p>
      ) : tasks.length === 0 ? (
        <p class="empty" data-testid="empty">
          {state.tasks.size === 0 ? "No tasks yet. Create one with “New task”." : "No task matches."}
        </p>
      ) : (
        <ul class="tasks" data-testid="tasks">
          {tasks.map((task) => (
            <TaskRow key={task.name} task={task} now={now} onToggle={toggle} onEdit={setEditing} onDelete={remove} />
          ))}
        </ul>
      )}
      <footer data-testid="footer" data-loads={state.loads} data-applied={state.applied}>
        <span data-testid="count">
          {tasks.length} of {state.tasks.size} tasks
        </span>
      </footer>
      {editing && (
        <TaskEditor
          api={api}
          task={editing === "new" ? undefined : (editingTask ?? editing)}
          deleted={editing !== "new" && !editingTask}
          onSaved={(task) => {
            sync.applyTask(task);
            setEditing(undefined);
          }}
          onClose={() => setEditing(undefined)}
        />
      )}
    </div>
  );
}

function ConnectionIndicator({ connection, onRetry }: { connection: Connection; onRetry: () => void }) {
  const now = useNow(1000);
  let text: string;
  switch (connection.state) {
    case "live":
      text = "Live";
      break;
    case "connecting":
      text = "Connecting…";
      break;
    case "reconnecting":
      text = `Offline — retrying in ${Math.max(0, Math.ceil((connection.retryAt - now) / 1000))} s`;
      break;
    case "failed":
      text = "Sync stopped — reload the page";
      break;
  }
  return (
    <span class={`connection ${connection.state}`} data-testid="connection" data-state={connection.state} role="status">
      <span class="dot" aria-hidden="true" />
      {text}
      {connection.state === "failed" && (
        <span class="reason" title={connection.error}>
          {connection.error}
        </span>
      )}
      {connection.state === "reconnecting" && (
        <>
          <span class="reason" title={connection.error}>
            {connection.error}
          </span>
          <button class="link" onClick={onRetry}>
            Retry now
          </button>
        </>
      )}
    </span>
  );
}

function Toolbar({
  view,
  tags,
  onChange,
  onNew,
}: {
  view: View;
  tags: string[];
  onChange: (patch: Partial<View>) => void;
  onNew: () => void;
}) {
  return (
    <div class="toolbar" data-testid="toolbar">
      <input
        type="search"
        name="query"
        placeholder="Search"
        aria-label="Search"
        value={view.query}
        onInput={(e) => onChange({ query: e.currentTarget.value })}
      />
      <button class="primary" onClick={onNew} data-testid="new-task">
        New task
      </button>
      <select name="status" aria-label="Status" value={view.status} onChange={(e) => onChange({ status: e.currentTarget.value as View["status"] })}>
        <option value="open">Open</option>
        <option value="completed">Completed</option>
        <option value="all">All</option>
      </select>
      <select
        name="priority"
        aria-label="Priority"
        value={view.minPriority}
        onChange={(e) => onChange({ minPriority: Number(e.currentTarget.value) as Priority })}
      >
        <option value={Priority.UNSPECIFIED}>Any priority</option>
        {priorities
          .filter((p) => p.value > Priority.NONE)
          .map((p) => (
            <option key={p.value} value={p.value}>
              {p.label}
              {p.value < Priority.URGENT ? " and up" : ""}
            </option>
          ))}
      </select>
      <select name="tag" aria-label="Tag" value={view.tag} onChange={(e) => onChange({ tag: e.currentTarget.value })}>
        <option value="">Any tag</option>
        {tags.map((t) => (
          <option key={t} value={t}>
            {t}
          </option>
        ))}
      </select>
      <label class="inline">
        Due from
        <input type="date" name="due-from" value={view.dueFrom} onInput={(e) => onChange({ dueFrom: e.currentTarget.value })} />
      </label>
      <label class="inline">
        to
        <input type="date" name="due-to" value={view.dueTo} onInput={(e) => onChange({ dueTo: e.currentTarget.value })} />
      </label>
      <select name="sort" aria-label="Sort" value={view.sort} onChange={(e) => onChange({ sort: e.currentTarget.value as View["sort"] })}>
        <option value="due">By due date</option>
        <option value="priority">By priority</option>
        <option value="created">Newest first</option>
        <option value="title">By title</option>
      </select>
    </div>
  );
}

function TaskRow({
  task,
  now,
  onToggle,
  onEdit,
  onDelete,
}: {
  task: Task;
  now: number;
  onToggle: (task: Task) => void;
  onEdit: (task: Task) => void;
  onDelete: (task: Task) => void;
}) {
  const [confirming, setConfirming] = useState(false);
  useEffect(() => {
    if (!confirming) return;
    const timer = setTimeout(() => setConfirming(false), 4000);
    return () => clearTimeout(timer);
  }, [confirming]);
  const completed = task.state === Task_State.COMPLETED;
  const overdue = isOverdue(task, now);
  const priority = priorityLabel(task.priority);
  return (
    <li class={`task${completed ? " completed" : ""}${overdue ? " overdue" : ""}`} data-testid="task" data-name={task.name}>
      <input type="checkbox" checked={completed} onChange={() => onToggle(task)} aria-label={completed ? "Mark as not done" : "Mark as done"} />
      <div class="body">
        <div class="line">
          <span class="title" data-testid="title">
            {task.title}
          </span>
          {task.recurrence && (
            <span class="recurring" data-testid="recurring" title={`Repeats: ${task.recurrence.rrule}`}>
              ↻ repeats
            </span>
          )}
        </div>
        <div class="meta">
          {priority !== "None" && (
            <span class={`badge priority-${priority.toLowerCase()}`} data-testid="priority">
              {priority}
            </span>
          )}
          {task.tags.map((tag) => (
            <span class="chip" data-testid="tag" key={tag}>
              {tag}
            </span>
          ))}
          {task.due && (
            <span class={`due${overdue ? " overdue" : ""}`} data-testid="due">
              {formatDue(task.due)}
              {overdue && " · overdue"}
            </span>
          )}
          {task.reminders.length > 0 && (
            <span class="reminders" title={`${task.reminders.length} reminder${task.reminders.length > 1 ? "s" : ""}`}>
              <BellIcon /> {task.reminders.length}
            </span>
          )}
          {completed && task.completeTime && <span class="done">done {formatTime(task.completeTime)}</span>}
        </div>
        {task.description && <p class="description">{task.description}</p>}
      </div>
      <button class="link" onClick={() => onEdit(task)}>
        Edit
      </button>
      <button class={`link danger`} onClick={() => (confirming ? onDelete(task) : setConfirming(true))}>
        {confirming ? "Really delete?" : "Delete"}
      </button>
    </li>
  );
}

/** A bell outline (no emoji font needed). */
function BellIcon() {
  return (
    <svg class="bell-icon" viewBox="0 0 24 24" width="16" height="16" aria-hidden="true">
      <path
        d="M12 22a2.5 2.5 0 0 0 2.45-2h-4.9A2.5 2.5 0 0 0 12 22Zm7-6V11a7 7 0 0 0-5.5-6.84V3.5a1.5 1.5 0 0 0-3 0v.66A7 7 0 0 0 5 11v5l-2 2v1h18v-1Z"
        fill="currentColor"
      />
    </svg>
  );
}

function Bell({ api, sync, state, onError }: { api: Api; sync: Sync; state: SyncState; onError: (err: unknown) => void }) {
  const [open, setOpen] = useState(false);
  async function markRead(name: string) {
    try {
      await api.reminders.markNotificationRead({ name });
      sync.applyRead([name]);
    } catch (err) {
      onError(err);
    }
  }
  async function markAll() {
    try {
      await api.reminders.markAllNotificationsRead({});
      sync.applyAllRead();
    } catch (err) {
      onError(err);
    }
  }
  return (
    <div class="bell">
      <button class="icon" onClick={() => setOpen(!open)} aria-label={`Notifications, ${state.unread} unread`} data-testid="bell">
        <BellIcon />
        {state.unread > 0 && (
          <span class="count" data-testid="unread-count">
            {state.unread}
          </span>
        )}
      </button>
      {open && (
        <div class="panel" data-testid="notifications">
          <div class="panel-head">
            <strong>Notifications</strong>
            <button class="link" onClick={markAll} disabled={state.unread === 0}>
              Mark all read
            </button>
          </div>
          {state.notifications.length === 0 && <p class="empty">Nothing yet.</p>}
          <ul>
            {state.notifications.map((n) => (
              <li key={n.name} class={n.readTime ? "read" : "unread"} data-testid="notification">
                <button class="notification" onClick={() => !n.readTime && markRead(n.name)}>
                  <strong>{n.title}</strong>
                  <span>{n.body}</span>
                  <small>{formatTime(n.createTime)}</small>
                </button>
              </li>
            ))}
          </ul>
        </div>
      )}
    </div>
  );
}
