// Test fixtures: a real `taskmesh dev` (its own PostgreSQL database, the embedded broker in
// memory), tokens from `taskmesh token`, a TCP proxy that can cut connections, and headless
// Debian Chromium driven by playwright-core.

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
/** The log of the `taskmesh dev` under test. */
const devLog = path.join(root, "build", "web-tests", "taskmesh-dev.log");

const bin = process.env.TASKMESH_BIN ?? path.join(root, "target", "debug", "taskmesh");
const databaseBase = process.env.TASKMESH_TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432";

/** A free TCP port on 127.0.0.1 (closed again; a tiny race is acceptable in tests). */
async function freePort() {
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
 * that it is up. `stop()` shuts it down (SIGTERM) and drops the database.
 */
export async function startDev() {
  const database = `taskmesh_web_${process.pid}_${Date.now()}`;
  const kafka = await freePort();
  const child = spawn(
    bin,
    [
      "dev",
      "--listen", "127.0.0.1:0",
      "--kafka-listen", `127.0.0.1:${kafka}`,
      "--broker-storage", "memory://tansu/",
      "--web-dir", path.join(root, "web", "dist"),
      "--skip-web-build",
    ],
    {
      env: { ...process.env, DATABASE_URL: `${databaseBase}/${database}` },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  // Its whole log goes to build/web-tests/taskmesh-dev.log; only the start is kept here.
  await mkdir(path.dirname(devLog), { recursive: true });
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
    async token(sub) {
      const { stdout } = await run(bin, ["token", "--sub", sub]);
      return stdout.trim().split("\n").pop();
    },
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
 * A signed-in page of `user` in a fresh browser context (its own storage, like another
 * device), in Berlin time with British formats, showing `url`.
 */
export async function signedInPage(browser, url, token, { screenshot } = {}) {
  const context = await browser.newContext({
    timezoneId: "Europe/Berlin",
    locale: "en-GB",
    viewport: { width: 1100, height: 760 },
  });
  const page = await context.newPage();
  page.on("pageerror", (err) => console.error(`page error: ${err.message}`));
  await page.goto(url);
  await page.getByTestId("sign-in").waitFor();
  await page.locator("textarea[name=token]").fill(token);
  if (screenshot) await page.screenshot({ path: path.join(screenshots, screenshot) });
  await page.getByRole("button", { name: "Sign in" }).click({ noWaitAfter: true });
  await live(page);
  return page;
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
