// The sync engine (src/sync.ts) on its own, against a scripted fake of the gateway's APIs:
// ordering by version, final deletions, resuming from the last cursor, backoff that resets
// once caught up, resync reloads (and no tight loop when resync repeats), the silence
// watchdog, resuming after a token renewal (TOKEN_EXPIRED), and stopping on other
// UNAUTHENTICATED errors and on RESOURCE_EXHAUSTED.

import assert from "node:assert/strict";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Code, ConnectError } from "@connectrpc/connect";
import * as esbuild from "esbuild";

const web = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
// Bundled next to node_modules so the protobuf and connect packages stay shared with this file.
const out = path.join(web, "node_modules", ".cache", "taskmesh-tests", "sync.mjs");
await mkdir(path.dirname(out), { recursive: true });
await esbuild.build({
  entryPoints: [path.join(web, "src", "sync.ts")],
  bundle: true,
  format: "esm",
  platform: "node",
  outfile: out,
  packages: "external",
  logLevel: "error",
});
const { Sync } = await import(pathToFileURL(out).href);
// The error detail type the gateway sends, to make errors as it does.
const details = path.join(path.dirname(out), "error_details.mjs");
await esbuild.build({
  entryPoints: [path.join(web, "src", "gen", "google", "rpc", "error_details_pb.ts")],
  bundle: true,
  format: "esm",
  platform: "node",
  outfile: details,
  packages: "external",
  logLevel: "error",
});
const { ErrorInfoSchema } = await import(pathToFileURL(details).href);
/** A ConnectError as the gateway sends it: a code and a `google.rpc.ErrorInfo` reason. */
const failure = (message, code, reason) =>
  new ConnectError(message, code, undefined, [{ desc: ErrorInfoSchema, value: { reason, domain: "taskmesh.dev" } }]);

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const task = (id, version, title = `task ${id}`) => ({ name: `tasks/${id}`, version: BigInt(version), title, tags: [] });
const message = (cursor, kase, value = {}) => ({ cursor, event: { case: kase, value } });
const created = (cursor, t) => message(cursor, "taskCreated", { task: t });
const updated = (cursor, t) => message(cursor, "taskUpdated", { task: t });
const deleted = (cursor, t) => message(cursor, "taskDeleted", { task: t });
const caughtUp = (cursor) => message(cursor, "caughtUp");

/**
 * A fake Api. `streams` is a list of scripts, one per StreamChanges call in order: each an
 * array of messages, then how the stream ends: "end", "hang" (until aborted), an Error, or
 * "resync".
 */
function fakeApi({ pages = [[]], streams }) {
  const calls = { list: 0, streams: [], unread: 0, streamTokens: [] };
  const api = {
    tasks: {
      async listTasks() {
        calls.list += 1;
        return { tasks: pages[Math.min(calls.list - 1, pages.length - 1)], nextPageToken: "", cursor: `list-${calls.list}` };
      },
    },
    reminders: {
      async listNotifications() {
        return { notifications: [], nextPageToken: "", cursor: "notes" };
      },
      async getUnreadCount() {
        calls.unread += 1;
        return { unreadCount: 0n };
      },
    },
    live: {
      streamChanges(request, { signal, headers }) {
        calls.streams.push(request);
        calls.streamTokens.push(headers?.authorization);
        const script = streams[Math.min(calls.streams.length - 1, streams.length - 1)];
        return (async function* () {
          for (const m of script.messages) {
            await sleep(1);
            yield m;
          }
          if (script.end === "resync") yield message("", "resync", { reason: "too old" });
          else if (script.end === "hang") {
            await new Promise((_, reject) => signal.addEventListener("abort", () => reject(new ConnectError("aborted", Code.Canceled))));
          } else if (script.end instanceof Error) throw script.end;
        })();
      },
    },
  };
  return { api, calls };
}

function start(api, options = {}) {
  const sync = new Sync(api, { initialBackoffMs: 20, maxBackoffMs: 160, silenceMs: 10_000, onUnauthenticated: () => {}, ...options });
  sync.start();
  return sync;
}

async function until(probe, limit = 3000) {
  const deadline = Date.now() + limit;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error("timed out");
    await sleep(5);
  }
}

test("changes apply by version; a deletion is final; the stream starts from the List cursors", async () => {
  const { api, calls } = fakeApi({
    pages: [[task(1, 2, "listed")]],
    streams: [
      {
        messages: [
          caughtUp("c0"),
          updated("c1", task(1, 1, "older")), // a replay older than the page: ignored
          created("c2", task(2, 1)),
          updated("c3", task(1, 3, "newer")),
          deleted("c4", task(2, 2)),
          created("c5", task(2, 1)), // a late copy of a deleted task: ignored
        ],
        end: "hang",
      },
    ],
  });
  const sync = start(api);
  await until(() => sync.get().applied === 5);
  const state = sync.get();
  assert.deepEqual([...state.tasks.keys()], ["tasks/1"]);
  assert.equal(state.tasks.get("tasks/1").title, "newer");
  assert.equal(state.connection.state, "live");
  assert.deepEqual(calls.streams[0], { cursor: "list-1", alsoCursor: "notes" });
  sync.stop();
});

test("a dropped stream resumes from its last cursor; backoff resets once caught up", async () => {
  const drop = new ConnectError("connection reset", Code.Unavailable);
  const { api, calls } = fakeApi({
    streams: [
      { messages: [caughtUp("a1"), created("a2", task(1, 1))], end: drop },
      { messages: [], end: drop }, // fails before catching up: backoff doubles
      { messages: [caughtUp("a2"), created("a3", task(2, 1))], end: drop },
      { messages: [caughtUp("a3")], end: "hang" },
    ],
  });
  const sync = start(api);
  const retries = [];
  sync.subscribe(() => {
    const c = sync.get().connection;
    if (c.state === "reconnecting" && retries.at(-1)?.retryAt !== c.retryAt) retries.push({ retryAt: c.retryAt, at: Date.now(), error: c.error });
  });
  await until(() => calls.streams.length === 4 && sync.get().connection.state === "live");
  assert.deepEqual(calls.streams.map((r) => r.cursor), ["list-1", "a2", "a2", "a3"]);
  assert.deepEqual([...sync.get().tasks.keys()].sort(), ["tasks/1", "tasks/2"]);
  assert.equal(calls.list, 1, "no reload: resumed from the cursor");
  // Delays: ~20 ms, then ~40 ms (no catch-up between), then ~20 ms again after catching up.
  const delays = retries.map((r) => r.retryAt - r.at);
  assert.equal(delays.length, 3);
  assert.ok(delays[1] > delays[0] && delays[1] <= 40, `doubled: ${delays}`);
  assert.ok(delays[2] <= 20, `reset after catching up: ${delays}`);
  assert.match(retries[0].error, /connection reset/);
  sync.stop();
});

test("resync reloads once at once; a repeated resync backs off instead of looping", async () => {
  const { api, calls } = fakeApi({
    streams: [{ messages: [], end: "resync" }],
  });
  const sync = start(api, { initialBackoffMs: 100, maxBackoffMs: 100 });
  await sleep(250);
  // Load, stream (resync), reload at once, stream (resync), then one retry per ~100 ms.
  assert.ok(calls.list >= 2 && calls.list <= 5, `reloads in 250 ms: ${calls.list}`);
  assert.ok(sync.get().loads >= 2);
  sync.stop();
});

test("a silent stream counts as dropped and is reopened", async () => {
  const { api, calls } = fakeApi({
    streams: [{ messages: [caughtUp("s1")], end: "hang" }],
  });
  const sync = start(api, { silenceMs: 60 });
  await until(() => calls.streams.length >= 2, 2000);
  assert.equal(calls.streams[1].cursor, "s1");
  sync.stop();
});

test("UNAUTHENTICATED stops syncing and reports once", async () => {
  const refused = new ConnectError("token expired", Code.Unauthenticated);
  const { api, calls } = fakeApi({ streams: [{ messages: [], end: refused }] });
  const reports = [];
  const sync = start(api, { onUnauthenticated: (m) => reports.push(m) });
  await until(() => reports.length === 1);
  await sleep(100);
  assert.equal(calls.streams.length, 1);
  assert.match(reports[0], /token expired/);
  sync.stop();
});

test("TOO_MANY_STREAMS (a newer tab took the stream's place) stops syncing without reconnecting", async () => {
  const displaced = failure("too many live streams", Code.ResourceExhausted, "TOO_MANY_STREAMS");
  const { api, calls } = fakeApi({
    streams: [{ messages: [caughtUp("c1")], end: displaced }, { messages: [caughtUp("c2")], end: "hang" }],
  });
  const sync = start(api);
  await until(() => sync.get().connection.state === "failed");
  await sleep(100);
  assert.equal(calls.streams.length, 1, "it did not reconnect (that would close another tab's stream)");
  assert.match(sync.get().connection.error, /Too many tabs/);
  sync.stop();
});

test("another RESOURCE_EXHAUSTED (the per-user rate limit) reconnects with backoff", async () => {
  const limited = failure("quota exceeded (requests per user)", Code.ResourceExhausted, "RATE_LIMITED");
  const { api, calls } = fakeApi({
    streams: [{ messages: [caughtUp("c1")], end: limited }, { messages: [caughtUp("c2")], end: "hang" }],
  });
  const sync = start(api);
  await until(() => calls.streams.length === 2 && sync.get().connection.state === "live");
  assert.equal(sync.get().connection.state, "live", "it reconnected, not gave up");
  sync.stop();
});

test("TOKEN_EXPIRED waits for a token newer than the stream's and resumes from the last cursor without a reload", async () => {
  const expired = failure("the token expired", Code.Unauthenticated, "TOKEN_EXPIRED");
  const { api, calls } = fakeApi({
    streams: [
      { messages: [caughtUp("e1"), created("e2", task(1, 1))], end: expired },
      { messages: [created("e3", task(2, 1)), caughtUp("e3")], end: expired },
      { messages: [caughtUp("e3")], end: "hang" },
    ],
  });
  let current = 1;
  const renewals = [];
  const refused = [];
  const started = Date.now();
  const sync = start(api, {
    // One backoff (at least 30 s) would time the test out: a renewal resumes at once.
    initialBackoffMs: 60_000,
    maxBackoffMs: 60_000,
    tokens: {
      token: async () => `t${current}`,
      renew: async (token) => {
        renewals.push(token);
        await sleep(20);
        current += 1;
        return `t${current}`;
      },
    },
    onUnauthenticated: (m) => refused.push(m),
  });
  await until(() => calls.streams.length === 3 && sync.get().connection.state === "live");
  const elapsed = Date.now() - started;
  assert.ok(elapsed < 1500, `resumed at once, no backoff: ${elapsed} ms`);
  assert.deepEqual(calls.streams.map((r) => r.cursor), ["list-1", "e2", "e3"]);
  assert.deepEqual([...sync.get().tasks.keys()].sort(), ["tasks/1", "tasks/2"]);
  assert.equal(calls.list, 1, "no reload");
  assert.equal(sync.get().loads, 1);
  // Each renewal names the token its stream was opened with; each stream carries the newest.
  assert.deepEqual(renewals, ["t1", "t2"]);
  assert.deepEqual(calls.streamTokens, ["Bearer t1", "Bearer t2", "Bearer t3"]);
  assert.deepEqual(refused, [], "not signed out");
  sync.stop();
});

test("a failed renewal is retried with backoff; other UNAUTHENTICATED errors still sign out", async () => {
  const expired = failure("the token expired", Code.Unauthenticated, "TOKEN_EXPIRED");
  const { api, calls } = fakeApi({
    streams: [
      { messages: [caughtUp("f1")], end: expired },
      { messages: [], end: expired },
      { messages: [caughtUp("f1")], end: "hang" },
    ],
  });
  let renewals = 0;
  const sync = start(api, {
    tokens: {
      token: async () => "t",
      renew: async () => {
        renewals += 1;
        if (renewals === 1) throw new Error("provider unreachable");
        return "t";
      },
    },
  });
  const errors = [];
  sync.subscribe(() => {
    const c = sync.get().connection;
    if (c.state === "reconnecting" && errors.at(-1) !== c.error) errors.push(c.error);
  });
  await until(() => calls.streams.length === 3 && sync.get().connection.state === "live");
  assert.match(errors[0], /Renewing the sign-in failed: provider unreachable/);
  assert.deepEqual(calls.streams.map((r) => r.cursor), ["list-1", "f1", "f1"]);
  assert.equal(calls.list, 1);
  sync.stop();

  const invalid = failure("bad signature", Code.Unauthenticated, "TOKEN_INVALID");
  const second = fakeApi({ streams: [{ messages: [], end: invalid }] });
  const reports = [];
  let asked = 0;
  const other = start(second.api, {
    tokens: { token: async () => "t", renew: async () => void (asked += 1) },
    onUnauthenticated: (m, token) => reports.push({ m, token }),
  });
  await until(() => reports.length === 1);
  assert.equal(asked, 0, "only an expired token is renewed");
  assert.match(reports[0].m, /bad signature/);
  assert.equal(reports[0].token, "t", "the refused token is named");
  other.stop();
});

test("a token refused outright after the session moved on is retried with the current one", async () => {
  const invalid = failure("bad signature", Code.Unauthenticated, "TOKEN_INVALID");
  const { api, calls } = fakeApi({
    streams: [
      { messages: [], end: invalid },
      { messages: [caughtUp("m1")], end: "hang" },
    ],
  });
  // The load and the first stream get "old"; by the refusal the session holds "new".
  const handed = [];
  const reports = [];
  const sync = start(api, {
    tokens: {
      token: async () => {
        handed.push(handed.length < 2 ? "old" : "new");
        return handed.at(-1);
      },
      renew: async () => "new",
    },
    onUnauthenticated: (m, token) => {
      reports.push(token);
      return token === "new"; // ends the session only if the refused token is the current one
    },
  });
  await until(() => calls.streams.length === 2 && sync.get().connection.state === "live");
  assert.deepEqual(reports, ["old"]);
  assert.deepEqual(calls.streamTokens, ["Bearer old", "Bearer new"]);
  sync.stop();
});
