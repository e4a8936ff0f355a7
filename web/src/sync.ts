// The sync engine: the signed-in user's tasks and notifications, loaded once with List and
// then kept in step by the gateway's live stream (taskmesh.gateway.v1.LiveService).
//
// - Load: every task (ListTasks pages of 1,000), the newest notifications and the unread count;
//   the List responses' cursors position the stream right after that snapshot.
// - Stream: StreamChanges from the last cursor received. Each change is applied to the local
//   state as it arrives (tasks by name, only when its `version` is newer, deletions final).
// - Drops: reconnect with exponential backoff (0.5 s doubling to 15 s, with jitter) from the
//   last cursor, so the gateway replays exactly what was missed. A stream silent for longer
//   than three heartbeats (45 s) is treated as dropped.
// - Resync: only when the gateway sends `resync` (the cursor is older than its change logs)
//   does the app reload everything with List.
// - Token renewal: a stream keeps the token it was opened with (the engine sends it itself, so
//   it knows which), and the gateway ends it with UNAUTHENTICATED / TOKEN_EXPIRED when that
//   token runs out. The engine then asks for a token newer than that one (`tokens.renew`) and
//   reopens the stream at once from the last cursor: no reload, no backoff, and the replay
//   brings whatever changed in between.

import { timestampNow } from "@bufbuild/protobuf/wkt";
import type { Notification } from "./gen/taskmesh/reminder/v1/reminder_pb";
import type { StreamChangesResponse } from "./gen/taskmesh/gateway/v1/live_service_pb";
import type { Task } from "./gen/taskmesh/task/v1/task_pb";
import { describe, isTokenExpired, isTooManyStreams, isUnauthenticated, type Api, type TokenSource } from "./api";

/** The stream's state, for the connection indicator. */
export type Connection =
  | { state: "connecting" }
  | { state: "live" }
  | { state: "reconnecting"; retryAt: number; error: string }
  /** Syncing stopped (a bug, or a newer tab took this one's stream); only a reload helps. */
  | { state: "failed"; error: string };

/** What the app shows: immutable snapshots, replaced on every change. */
export interface SyncState {
  /** Every task of the user, by resource name (`tasks/{id}`). */
  tasks: ReadonlyMap<string, Task>;
  /** The newest notifications, newest first (the first page, then live ones). */
  notifications: readonly Notification[];
  /** Unread notifications in all (the server's count). */
  unread: number;
  connection: Connection;
  /** Whether the first load finished. */
  loaded: boolean;
  /** Full loads so far: 1, plus one per `resync`. */
  loads: number;
  /** Changes applied from the stream so far. */
  applied: number;
}

/** Tunables; the defaults suit people, tests may shorten them. */
export interface SyncOptions {
  /** First retry delay in milliseconds; doubles per failed attempt. */
  initialBackoffMs: number;
  /** Largest retry delay in milliseconds. */
  maxBackoffMs: number;
  /** Silence after which the stream counts as dropped, in milliseconds (heartbeats: 15 s). */
  silenceMs: number;
  /**
   * Called when the server refuses `token` (the one the failed call carried; undefined
   * without `tokens`) for good: syncing stops, unless it answers false (that token is no
   * longer the session's), and then the engine retries with the current one.
   */
  onUnauthenticated: (message: string, token: string | undefined) => boolean | void;
  /**
   * The session's tokens: the engine sends the current one with each load and stream, and
   * when a stream's token expires, waits for one newer than it (`renew`, renewing if need
   * be; a failure is retried with backoff). Without it the API client's own token is used,
   * and an expired token ends syncing like any refused one.
   */
  tokens?: TokenSource;
}

/** Renewals in a row without catching up before the engine backs off between them. */
const RENEWALS_WITHOUT_BACKOFF = 2;

const NOTIFICATIONS_PAGE = 50;
const TASKS_PAGE = 1000;

/** Keeps a {@link SyncState} in step with the server; see the module comment. */
export class Sync {
  private state: SyncState = {
    tasks: new Map(),
    notifications: [],
    unread: 0,
    connection: { state: "connecting" },
    loaded: false,
    loads: 0,
    applied: 0,
  };
  private readonly listeners = new Set<() => void>();
  /** The last stream cursor received; empty until the first message. */
  private cursor = "";
  /** The List snapshot's cursors, used while `cursor` is empty. */
  private taskCursor = "";
  private notificationCursor = "";
  /** Deleted task names: a late page or a replayed event must not bring them back. */
  private readonly deleted = new Set<string>();
  private abort = new AbortController();
  private stopped = false;
  private wakeRetry: (() => void) | undefined;
  private unreadTimer: ReturnType<typeof setTimeout> | undefined;
  /** Only the newest unread-count request may set the count. */
  private unreadRequest = 0;
  /** Failed attempts since the stream was last caught up; sets the backoff. */
  private attempt = 0;
  /** `resync` answers since the stream was last caught up. */
  private resyncs = 0;
  /** Token renewals since the stream was last caught up. */
  private renewals = 0;
  /** The token the last load or stream was sent with (with `tokens`). */
  private token: string | undefined;

  constructor(
    private readonly api: Api,
    private readonly options: SyncOptions,
  ) {}

  /** The current snapshot. */
  get(): SyncState {
    return this.state;
  }

  /** Calls `listener` after every change; returns the unsubscribe function. */
  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Loads and starts streaming; runs until {@link stop}. */
  start(): void {
    this.run().catch((err: unknown) => {
      console.error("taskmesh: syncing stopped", err);
      this.state = { ...this.state, connection: { state: "failed", error: String(err) } };
      this.emit();
    });
  }

  /** Stops streaming and retrying. */
  stop(): void {
    this.stopped = true;
    this.abort.abort();
    this.wakeRetry?.();
    clearTimeout(this.unreadTimer);
  }

  /** Retries at once instead of waiting out the backoff (the indicator's "retry now"). */
  retryNow(): void {
    this.wakeRetry?.();
  }

  /**
   * Applies a task an RPC of this app returned (create, update, complete), so the change
   * shows before its event arrives; the event then changes nothing (same `version`).
   */
  applyTask(task: Task): void {
    if (this.upsert(task)) this.emit();
  }

  /** Applies a deletion this app made. */
  applyDeleted(name: string): void {
    if (this.remove(name)) this.emit();
  }

  /** Applies notifications this app marked read. */
  applyRead(names: readonly string[]): void {
    this.markRead(names);
    this.emit();
  }

  /** Applies "mark all read" (the count is zero, even for notifications not on the page). */
  applyAllRead(): void {
    this.markRead(this.state.notifications.map((n) => n.name));
    this.set({ unread: 0 });
  }

  private async run(): Promise<void> {
    let load = true;
    while (!this.stopped) {
      let error = "";
      try {
        if (load) {
          await this.load();
          load = false;
        }
        const outcome = await this.stream();
        if (outcome.resync) {
          load = true;
          // The first resync reloads at once; a gateway that keeps answering resync (a
          // cursor it cannot place) is retried with backoff instead of in a tight loop.
          this.resyncs += 1;
          if (this.resyncs === 1) continue;
          error = "The server asked for a reload again.";
        } else {
          error = "The server closed the live stream.";
        }
      } catch (err) {
        if (this.stopped) return;
        if (isTokenExpired(err) && this.options.tokens) {
          this.renewals += 1;
          try {
            await this.options.tokens.renew(this.token ?? "");
            if (this.stopped) return;
            console.info("taskmesh: the live stream's token expired; resuming from the last cursor");
            // Resume from the cursor at once; a server that keeps refusing renewed tokens
            // (clocks far apart) is retried with backoff instead of in a tight loop.
            if (this.renewals <= RENEWALS_WITHOUT_BACKOFF) continue;
            error = "The server refused the renewed sign-in.";
          } catch (renewal) {
            if (this.stopped) return;
            error = `Renewing the sign-in failed: ${renewal instanceof Error ? renewal.message : String(renewal)}`;
          }
        } else if (isUnauthenticated(err)) {
          error = describe(err);
          // The session moved on since this token was taken (renewed, or replaced in another
          // tab): try again with the current one rather than end it.
          if (this.options.onUnauthenticated(error, this.token) !== false) {
            this.stop();
            return;
          }
        } else if (isTooManyStreams(err)) {
          // A newer stream of this account took this one's place: reconnecting would only
          // close another tab's, and that one would close ours again.
          this.stop();
          this.set({
            connection: {
              state: "failed",
              error: "Too many tabs of this account are open: close some, then reload this one.",
            },
          });
          return;
        } else {
          error = this.abort.signal.aborted ? "The live stream went silent." : describe(err);
        }
      }
      this.attempt += 1;
      const backoff = Math.min(
        this.options.maxBackoffMs,
        this.options.initialBackoffMs * 2 ** (this.attempt - 1),
      );
      const delay = Math.round(backoff * (0.5 + Math.random() / 2));
      this.set({ connection: { state: "reconnecting", retryAt: Date.now() + delay, error } });
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, delay);
        this.wakeRetry = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wakeRetry = undefined;
    }
  }

  /** Reads the whole state with List; the stream then starts from the List cursors. */
  private async load(): Promise<void> {
    this.set({ connection: { state: "connecting" } });
    this.abort = new AbortController();
    const signal = this.abort.signal;
    const headers = await this.authorization();
    const tasks = new Map<string, Task>();
    let taskCursor = "";
    let pageToken = "";
    do {
      const page = await this.api.tasks.listTasks(
        { pageSize: TASKS_PAGE, pageToken, orderBy: "create_time" },
        { signal, headers },
      );
      taskCursor ||= page.cursor;
      for (const task of page.tasks) {
        const known = tasks.get(task.name);
        if (!known || known.version < task.version) tasks.set(task.name, task);
      }
      pageToken = page.nextPageToken;
    } while (pageToken);
    const notifications = await this.api.reminders.listNotifications(
      { pageSize: NOTIFICATIONS_PAGE },
      { signal, headers },
    );
    const { unreadCount } = await this.api.reminders.getUnreadCount({}, { signal, headers });
    this.deleted.clear();
    this.cursor = "";
    this.taskCursor = taskCursor;
    this.notificationCursor = notifications.cursor;
    this.set({
      tasks,
      notifications: notifications.notifications,
      unread: Number(unreadCount),
      loaded: true,
      loads: this.state.loads + 1,
    });
  }

  /** One stream, until it ends, fails or says resync. */
  private async stream(): Promise<{ caughtUp: boolean; resync: boolean }> {
    this.abort = new AbortController();
    const abort = this.abort;
    let silence: ReturnType<typeof setTimeout> | undefined;
    const watch = () => {
      clearTimeout(silence);
      silence = setTimeout(() => abort.abort(), this.options.silenceMs);
    };
    const request = this.cursor
      ? { cursor: this.cursor }
      : { cursor: this.taskCursor, alsoCursor: this.notificationCursor };
    let caughtUp = false;
    if (this.state.connection.state !== "connecting") this.set({ connection: { state: "connecting" } });
    const headers = await this.authorization();
    try {
      watch();
      for await (const message of this.api.live.streamChanges(request, { signal: abort.signal, headers })) {
        watch();
        if (message.event.case === "resync") return { caughtUp, resync: true };
        if (message.event.case === "caughtUp") {
          caughtUp = true;
          this.attempt = 0;
          this.resyncs = 0;
          this.renewals = 0;
          this.set({ connection: { state: "live" } });
          this.refreshUnread();
        } else if (message.event.case !== "heartbeat") {
          this.apply(message);
        }
        if (message.cursor) this.cursor = message.cursor;
      }
      return { caughtUp, resync: false };
    } finally {
      clearTimeout(silence);
    }
  }

  /** The current token as the call's `authorization` header (remembered), with `tokens`. */
  private async authorization(): Promise<Record<string, string> | undefined> {
    if (!this.options.tokens) return undefined;
    this.token = await this.options.tokens.token();
    return { authorization: `Bearer ${this.token}` };
  }

  private apply(message: StreamChangesResponse): void {
    const event = message.event;
    switch (event.case) {
      case "taskCreated":
      case "taskUpdated":
      case "taskCompleted":
      case "taskUncompleted":
        if (event.value.task) this.upsert(event.value.task);
        break;
      case "taskDeleted":
        if (event.value.task) this.remove(event.value.task.name);
        break;
      case "reminderFired":
      case "taskOverdue":
        if (event.value.notification) this.addNotification(event.value.notification);
        this.refreshUnread();
        break;
      case "notificationRead":
        this.markRead(event.value.notifications);
        this.refreshUnread();
        break;
      default:
        // Tag events: the app shows tags as the tasks carry them.
        break;
    }
    this.state = { ...this.state, applied: this.state.applied + 1 };
    this.emit();
  }

  private upsert(task: Task): boolean {
    if (this.deleted.has(task.name)) return false;
    const known = this.state.tasks.get(task.name);
    if (known && known.version >= task.version) return false;
    const tasks = new Map(this.state.tasks);
    tasks.set(task.name, task);
    this.state = { ...this.state, tasks };
    return true;
  }

  private remove(name: string): boolean {
    this.deleted.add(name);
    if (!this.state.tasks.has(name)) return false;
    const tasks = new Map(this.state.tasks);
    tasks.delete(name);
    this.state = { ...this.state, tasks };
    return true;
  }

  private addNotification(notification: Notification): void {
    if (this.state.notifications.some((n) => n.name === notification.name)) return;
    const unread = notification.readTime ? this.state.unread : this.state.unread + 1;
    this.state = {
      ...this.state,
      notifications: [notification, ...this.state.notifications],
      unread,
    };
  }

  private markRead(names: readonly string[]): void {
    const read = new Set(names);
    let newlyRead = 0;
    const notifications = this.state.notifications.map((n) => {
      if (!read.has(n.name) || n.readTime) return n;
      newlyRead += 1;
      return { ...n, readTime: timestampNow() };
    });
    this.state = {
      ...this.state,
      notifications,
      unread: Math.max(0, this.state.unread - newlyRead),
    };
  }

  /**
   * The unread count is the server's: asked again shortly after every notification change
   * (a page holds only the newest notifications, so counting locally would drift).
   */
  private refreshUnread(): void {
    clearTimeout(this.unreadTimer);
    this.unreadTimer = setTimeout(() => {
      const request = ++this.unreadRequest;
      this.api.reminders
        .getUnreadCount({})
        .then(({ unreadCount }) => {
          if (request === this.unreadRequest) this.set({ unread: Number(unreadCount) });
        })
        .catch(() => {
          // The stream's own error handling reports a lost connection.
        });
    }, 100);
  }

  private set(patch: Partial<SyncState>): void {
    this.state = { ...this.state, ...patch };
    this.emit();
  }

  private emit(): void {
    for (const listener of this.listeners) {
      try {
        listener();
      } catch (err) {
        console.error("taskmesh: a sync listener failed", err);
      }
    }
  }
}
