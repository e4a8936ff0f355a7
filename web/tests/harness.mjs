// Test fixtures: a real `taskmesh dev` (its own PostgreSQL database, the embedded broker in
// memory), a real OpenID Connect provider (tools/oidc/provider.mjs), a TCP proxy that can cut
// connections, and headless Debian Chromium driven by playwright-core.

import { execFile, spawn } from "node:child_process";
import { createWriteStream } from "node:fs";
import { mkdir } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { chromium } from "playwright-core";

const run = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));

/** The repository root. */
export const root = path.resolve(here, "../..");
/** Where screenshots go. */
export const screenshots = path.join(root, "build", "screenshots");
/** Where the logs of the servers under test go, named after the test file. */
const logs = path.join(root, "build", "web-tests");
const suite = path.basename(process.argv[1] ?? "web", ".mjs");

const bin = process.env.TASKMESH_BIN ?? path.join(root, "target", "debug", "taskmesh");
const databaseBase = process.env.TASKMESH_TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432";

/** A free TCP port on 127.0.0.1 (closed again; a tiny race is acceptable in tests). */
export async function freePort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function psql(sql) {
  await run("psql", [`${databaseBase}/postgres`, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql]);
}

/**
 * Starts `taskmesh dev` on a fresh database with the built web app; resolves once it logs
 * that it is up. `listen`: its gRPC and grpc-web address (a free port by default); `env`:
 * more environment (e.g. an identity provider). `stop()` shuts it down (SIGTERM) and drops
 * the database.
 */
export async function startDev({ listen = "127.0.0.1:0", env = {} } = {}) {
  const database = `taskmesh_web_${process.pid}_${Date.now()}`;
  const kafka = await freePort();
  const devLog = path.join(logs, `taskmesh-dev-${suite}.log`);
  const child = spawn(
    bin,
    [
      "dev",
      "--listen", listen,
      "--kafka-listen", `127.0.0.1:${kafka}`,
      "--broker-storage", "memory://tansu/",
      "--web-dir", path.join(root, "web", "dist"),
      "--skip-web-build",
    ],
    {
      env: { ...process.env, DATABASE_URL: `${databaseBase}/${database}`, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  // Its whole log goes to build/web-tests/taskmesh-dev-<suite>.log; only the start is kept here.
  await mkdir(logs, { recursive: true });
  const file = createWriteStream(devLog);
  child.stdout.pipe(file);
  child.stderr.pipe(file);
  let log = "";
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`taskmesh dev did not start in 120 s:\n${log}`)), 120_000);
    const onData = (chunk) => {
      log += chunk;
      const m = /taskmesh dev is up: gRPC and grpc-web at (\S+?);/.exec(log);
      if (m) {
        clearTimeout(timer);
        child.stdout.off("data", onData);
        child.stderr.off("data", onData);
        resolve(`http://${m[1]}`);
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`taskmesh dev exited with ${code}; its log: ${devLog}\n${log}`));
    });
  });
  return {
    url,
    log: devLog,
    async stop() {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 20_000))]);
      child.kill("SIGKILL");
      await psql(`DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`);
    },
  };
}

/**
 * A TCP proxy to `target` (`http://host:port`). `cut()` drops every open connection and
 * refuses new ones until `restore()`.
 */
export async function startProxy(target) {
  const { hostname, port } = new URL(target);
  const sockets = new Set();
  let open = true;
  const server = net.createServer((client) => {
    if (!open) return client.destroy();
    const upstream = net.connect(Number(port), hostname);
    const close = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on("error", close);
      socket.on("close", close);
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    cut() {
      open = false;
      for (const socket of sockets) socket.destroy();
    },
    restore() {
      open = true;
    },
    close: () => new Promise((resolve) => {
      for (const socket of sockets) socket.destroy();
      server.close(resolve);
    }),
  };
}

/** Headless Debian Chromium (`CHROMIUM`, default /usr/bin/chromium). */
export async function launchBrowser() {
  await mkdir(screenshots, { recursive: true });
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
}

/**
 * A fresh browser context (its own storage, like another device), in Berlin time with
 * British formats; page errors and, with `console`, the console go to the test's output.
 */
export async function newContext(browser) {
  const context = await browser.newContext({
    timezoneId: "Europe/Berlin",
    locale: "en-GB",
    viewport: { width: 1100, height: 760 },
  });
  context.on("page", (page) => page.on("pageerror", (err) => console.error(`page error: ${err.message}`)));
  return context;
}

/**
 * A page of `user` in a fresh browser context, signed in with `taskmesh dev`'s development
 * sign-in, showing `url` live.
 */
export async function signedInPage(browser, url, user, { screenshot } = {}) {
  const context = await newContext(browser);
  const page = await context.newPage();
  await page.goto(url);
  const form = page.locator('[data-testid=sign-in][data-kind="development"]');
  await form.waitFor();
  await form.locator("input[name=user]").fill(user);
  if (screenshot) await page.screenshot({ path: path.join(screenshots, screenshot) });
  await form.getByRole("button", { name: "Sign in" }).click({ noWaitAfter: true });
  await live(page);
  return page;
}

/**
 * Starts the OpenID Connect provider for tests (tools/oidc/provider.mjs): `issuer` is its
 * URL; its log goes to build/web-tests/. `stop()` ends it.
 */
export async function startProvider({ accessTokenTtl = 300, redirectUris = [] } = {}) {
  await mkdir(logs, { recursive: true });
  const log = path.join(logs, `oidc-provider-${suite}.log`);
  const args = [path.join(root, "tools", "oidc", "provider.mjs"), "--access-token-ttl", String(accessTokenTtl)];
  for (const uri of redirectUris) args.push("--redirect-uri", uri);
  // Its stdin stays open: it exits when this process does, however that ends.
  const child = spawn(process.execPath, args, { stdio: ["pipe", "pipe", "pipe"] });
  child.stderr.pipe(createWriteStream(log));
  let out = "";
  const issuer = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the identity provider did not start in 30 s; its log: ${log}`)), 30_000);
    child.stdout.on("data", (chunk) => {
      out += chunk;
      const m = /^listening (\S+)$/m.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`the identity provider exited with ${code}; its log: ${log}`));
    });
  });
  return {
    issuer,
    log,
    async stop() {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 5000))]);
      child.kill("SIGKILL");
    },
  };
}

/**
 * The session record the app keeps in IndexedDB (see src/session.ts):
 * `{ generation, session?, notice? }`, or null before the app stored anything.
 */
export async function storedSession(page) {
  return page.evaluate(
    () =>
      new Promise((resolve, reject) => {
        const open = indexedDB.open("taskmesh");
        // No database yet: don't create one (the app would then find no store in it).
        open.onupgradeneeded = () => open.transaction.abort();
        open.onerror = () => resolve(null);
        open.onsuccess = () => {
          const db = open.result;
          const get = db.transaction("session").objectStore("session").get("current");
          get.onsuccess = () => {
            db.close();
            resolve(get.result ?? null);
          };
          get.onerror = () => reject(get.error);
        };
      }),
  );
}

/** Replaces the app's stored session record (a test's way to age a session). */
export async function storeSession(page, record) {
  await page.evaluate(
    (record) =>
      new Promise((resolve, reject) => {
        const open = indexedDB.open("taskmesh");
        open.onerror = () => reject(open.error);
        open.onsuccess = () => {
          const db = open.result;
          const tx = db.transaction("session", "readwrite");
          tx.objectStore("session").put(record, "current");
          tx.oncomplete = () => {
            db.close();
            resolve();
          };
          tx.onerror = () => reject(tx.error);
        };
      }),
    record,
  );
}

/** A JWT's payload, decoded as UTF-8. */
export function jwtPayload(token) {
  return JSON.parse(Buffer.from(token.split(".")[1], "base64url").toString("utf8"));
}

/** Waits until the page's live stream is connected and caught up. */
export async function live(page, timeout = 30_000) {
  await page.locator('[data-testid=connection][data-state="live"]').waitFor({ timeout });
}

/** The task row with this exact title. */
export function row(page, title) {
  return page.getByTestId("task").filter({ has: page.getByTestId("title").getByText(title, { exact: true }) });
}

/** Titles of the listed tasks, in order. */
export async function titles(page) {
  return page.getByTestId("title").allTextContents();
}

/** Local wall time `YYYY-MM-DDTHH:MM[:SS]` in Europe/Berlin of an instant (for datetime-local). */
export function berlinInput(date, { seconds = false } = {}) {
  const parts = Object.fromEntries(
    new Intl.DateTimeFormat("en-GB", {
      timeZone: "Europe/Berlin",
      year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
    }).formatToParts(date).map((p) => [p.type, p.value]),
  );
  const base = `${parts.year}-${parts.month}-${parts.day}T${parts.hour}:${parts.minute}`;
  return seconds ? `${base}:${parts.second}` : base;
}

/** Fills and submits the editor; `fields` as in the tests. Resolves when the editor closes. */
export async function createTask(page, fields, { expectClose = true } = {}) {
  await page.getByTestId("new-task").click();
  await fillEditor(page, fields);
  await page.getByRole("button", { name: "Create" }).click();
  if (expectClose) await page.getByTestId("editor").waitFor({ state: "detached" });
}

/** Sets the editor's fields that `fields` names. */
export async function fillEditor(page, fields) {
  const editor = page.getByTestId("editor");
  if (fields.title !== undefined) await editor.locator("input[name=title]").fill(fields.title);
  if (fields.description !== undefined) await editor.locator("textarea[name=description]").fill(fields.description);
  if (fields.priority) await editor.locator("select[name=priority]").selectOption({ label: fields.priority });
  if (fields.tags !== undefined) await editor.locator("input[name=tags]").fill(fields.tags);
  if (fields.dueTime) {
    await editor.locator("select[name=due-kind]").selectOption("time");
    await editor.locator("input[name=due-time]").fill(fields.dueTime);
  }
  if (fields.dueDate) {
    await editor.locator("select[name=due-kind]").selectOption("date");
    await editor.locator("input[name=due-date]").fill(fields.dueDate);
  }
  for (const [i, reminder] of (fields.reminders ?? []).entries()) {
    await editor.getByRole("button", { name: "Add reminder" }).click();
    const rowLocator = editor.getByTestId("reminder-row").nth(i);
    if (reminder.at) {
      await rowLocator.locator("select").first().selectOption("at");
      await rowLocator.locator(`input[name=reminder-at-${i}]`).fill(reminder.at);
    }
  }
  if (fields.repeat) await editor.locator("select[name=repeat]").selectOption({ label: fields.repeat });
  if (fields.rrule !== undefined) await editor.locator("input[name=rrule]").fill(fields.rrule);
}
