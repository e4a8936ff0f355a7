// The web app as a person uses it, in headless Debian Chromium against a real `taskmesh dev`
// (PostgreSQL, the embedded Kafka-compatible broker, every service, the gateway serving
// dist/). Screenshots of the main views land in build/screenshots/.

import assert from "node:assert/strict";
import path from "node:path";
import { after, before, test } from "node:test";
import {
  berlinInput,
  createTask,
  fillEditor,
  jwtPayload,
  launchBrowser,
  live,
  newContext,
  row,
  screenshots,
  signedInPage,
  startDev,
  startProxy,
  storeSession,
  storedSession,
  titles,
} from "./harness.mjs";

let dev;
let browser;
const shot = (page, name) => process.env.NO_SHOTS ? null : page.screenshot({ path: path.join(screenshots, name), fullPage: true });
const day = 24 * 3600 * 1000;

before(async () => {
  dev = await startDev();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await dev?.stop();
});

test("a person's journey: sign in, create, see, filter, search, complete", async () => {
  const page = await signedInPage(browser, dev.url, "journey", { screenshot: "01-sign-in.png" });
  assert.equal(await page.getByTestId("user").textContent(), "journey");
  await page.getByTestId("empty").waitFor();

  // A task with priority, tags, a due time (Berlin) and a description.
  const due = new Date(Date.now() + 9 * day);
  due.setUTCHours(16, 0, 0, 0); // 17:00 in Berlin in winter, 18:00 in summer
  await page.getByTestId("new-task").click();
  await fillEditor(page, {
    title: "Buy oat milk",
    description: "Two litres, the barista kind",
    priority: "High",
    tags: "home, errands",
    dueTime: berlinInput(due),
  });
  await shot(page, "02-editor.png");
  await page.getByRole("button", { name: "Create" }).click();
  await page.getByTestId("editor").waitFor({ state: "detached" });

  const milk = row(page, "Buy oat milk");
  await milk.waitFor();
  assert.equal(await milk.getByTestId("priority").textContent(), "High");
  assert.deepEqual((await milk.getByTestId("tag").allTextContents()).sort(), ["errands", "home"]);
  const shown = await milk.getByTestId("due").textContent();
  const expected = new Intl.DateTimeFormat("en-GB", {
    timeZone: "Europe/Berlin", day: "numeric", month: "short", year: "numeric", hour: "2-digit", minute: "2-digit",
  }).formatToParts(due);
  const part = (type) => expected.find((p) => p.type === type).value;
  assert.ok(shown.includes(`${part("hour")}:${part("minute")}`), `due shows Berlin time: ${shown}`);
  assert.ok(shown.includes(`${part("day")} ${part("month")} ${part("year")}`), `due shows the date: ${shown}`);

  // More tasks: an overdue one, a recurring one, a low-priority work task.
  await createTask(page, { title: "File taxes", priority: "Urgent", tags: "admin", dueDate: berlinInput(new Date(Date.now() - 3 * day)).slice(0, 10) });
  await createTask(page, { title: "Water the plants", tags: "home", dueTime: berlinInput(new Date(Date.now() + day)), repeat: "Every day" });
  await createTask(page, { title: "Call the plumber", priority: "Low", tags: "work" });
  await row(page, "Call the plumber").waitFor();

  const taxes = row(page, "File taxes");
  assert.match(await taxes.getAttribute("class"), /overdue/);
  assert.match(await taxes.getByTestId("due").textContent(), /overdue/);
  assert.doesNotMatch(await milk.getAttribute("class"), /overdue/);
  assert.equal(await row(page, "Water the plants").getByTestId("recurring").count(), 1);
  assert.equal(await milk.getByTestId("recurring").count(), 0);
  // Default order: by due (overdue first), tasks without a due last.
  assert.deepEqual(await titles(page), ["File taxes", "Water the plants", "Buy oat milk", "Call the plumber"]);
  await shot(page, "03-list.png");

  // Filter by priority, by tag, by due range; sort by priority.
  const toolbar = page.getByTestId("toolbar");
  await toolbar.locator("select[name=priority]").selectOption({ label: "High and up" });
  assert.deepEqual(await titles(page), ["File taxes", "Buy oat milk"]);
  await toolbar.locator("select[name=priority]").selectOption({ label: "Any priority" });
  await toolbar.locator("select[name=tag]").selectOption("home");
  assert.deepEqual(await titles(page), ["Water the plants", "Buy oat milk"]);
  await toolbar.locator("select[name=tag]").selectOption("");
  await toolbar.locator("input[name=due-from]").fill(berlinInput(new Date()).slice(0, 10));
  assert.deepEqual(await titles(page), ["Water the plants", "Buy oat milk"]);
  await toolbar.locator("input[name=due-from]").fill("");
  await toolbar.locator("select[name=sort]").selectOption("priority");
  assert.deepEqual(await titles(page), ["File taxes", "Buy oat milk", "Call the plumber", "Water the plants"]);
  await toolbar.locator("select[name=sort]").selectOption("due");

  // Full-text search (the server's): a word prefix, then a word of the description.
  await toolbar.getByRole("searchbox").fill("plumb");
  await page.waitForFunction(() => document.querySelectorAll("[data-testid=task]").length === 1);
  assert.deepEqual(await titles(page), ["Call the plumber"]);
  await toolbar.getByRole("searchbox").fill("barista");
  await page.waitForFunction(() => document.querySelector("[data-testid=title]")?.textContent === "Buy oat milk");
  assert.deepEqual(await titles(page), ["Buy oat milk"]);
  await shot(page, "04-search.png");
  await toolbar.getByRole("searchbox").fill("");
  await page.waitForFunction(() => document.querySelectorAll("[data-testid=task]").length === 4);

  // Complete: it leaves the open list and shows, struck through, under Completed.
  await milk.getByRole("checkbox").click();
  await milk.waitFor({ state: "detached" });
  await toolbar.locator("select[name=status]").selectOption("completed");
  await row(page, "Buy oat milk").waitFor();
  assert.match(await row(page, "Buy oat milk").getAttribute("class"), /completed/);
  await shot(page, "05-completed.png");

  // And back: uncomplete it.
  await row(page, "Buy oat milk").getByRole("checkbox").click();
  await row(page, "Buy oat milk").waitFor({ state: "detached" });
  await toolbar.locator("select[name=status]").selectOption("open");
  await row(page, "Buy oat milk").waitFor();
  await page.context().close();
});

test("the development sign-in says it is for development only and refuses a bad name", async () => {
  const context = await newContext(browser);
  const page = await context.newPage();
  await page.goto(dev.url);
  const form = page.locator('[data-testid=sign-in][data-kind="development"]');
  await form.waitFor();
  assert.match(await form.getByTestId("development-warning").textContent(), /DEVELOPMENT ONLY.*anyone can sign in as anyone/);
  // A control character: the server's 400 is shown, nobody is signed in.
  await form.locator("input[name=user]").fill("eve\u0007");
  await form.getByRole("button", { name: "Sign in" }).click();
  await form.getByRole("alert").waitFor();
  assert.match(await form.getByRole("alert").textContent(), /user name/);
  assert.equal((await storedSession(page))?.session, undefined);
  // Signing out clears the session in every tab of the browser.
  await form.locator("input[name=user]").fill("eve");
  await form.getByRole("button", { name: "Sign in" }).click();
  await live(page);
  const other = await context.newPage();
  await other.goto(dev.url);
  await live(other);
  assert.equal(await other.getByTestId("user").textContent(), "eve");
  await page.getByRole("button", { name: "Sign out" }).click();
  await form.waitFor();
  await other.locator('[data-testid=sign-in][data-kind="development"]').waitFor();
  await context.close();
});

test("a non-ASCII name signs in, shows and renews exactly as typed", async () => {
  const page = await signedInPage(browser, dev.url, "zoë");
  assert.equal(await page.getByTestId("user").textContent(), "zoë");
  const record = await storedSession(page);
  assert.equal(record.session.sub, "zoë", "the token's sub is read as UTF-8");
  assert.equal(jwtPayload(record.session.accessToken).sub, "zoë");

  // Aged so that it is due (development tokens live an hour), the session is renewed on the
  // next load by signing in as the same name again.
  const aged = { ...record.session, obtainedAt: Date.now() - 3_590_000, expiresAt: Date.now() + 10_000 };
  await storeSession(page, { generation: record.generation + 1, session: aged });
  await page.reload();
  await live(page);
  let renewed = await storedSession(page);
  for (const deadline = Date.now() + 10_000; renewed.generation <= record.generation + 1 && Date.now() < deadline; ) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    renewed = await storedSession(page);
  }
  assert.ok(renewed.session.obtainedAt > aged.obtainedAt + 3_000_000, "renewed");
  assert.equal(renewed.session.name, "zoë");
  assert.equal(jwtPayload(renewed.session.accessToken).sub, "zoë");
  assert.equal(await page.getByTestId("user").textContent(), "zoë");
  await page.context().close();
});

test("a server that takes pasted tokens shows the token form, which signs in", async () => {
  const context = await newContext(browser);
  // This server has a development sign-in; the app is told to take pasted tokens instead.
  await context.route("**/.well-known/taskmesh-web.json", (route) => route.fulfill({ json: { sign_in: "token" } }));
  const minted = await fetch(`${dev.url}/dev/sign-in`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user: "paster" }),
  });
  const { access_token: token } = await minted.json();
  const page = await context.newPage();
  await page.goto(dev.url);
  const form = page.locator('[data-testid=sign-in][data-kind="token"]');
  await form.waitFor();
  await form.locator("textarea[name=token]").fill("not a token");
  await form.getByRole("button", { name: "Sign in" }).click();
  await form.getByText("That is not a JWT with `sub` and `exp` claims.").waitFor();
  await form.locator("textarea[name=token]").fill(token);
  await form.getByRole("button", { name: "Sign in" }).click();
  await live(page);
  assert.equal(await page.getByTestId("user").textContent(), "paster");
  assert.equal((await storedSession(page)).session.kind, "token");
  await context.close();
});

test("invalid input shows the server's field violations next to the fields and creates nothing", async () => {
  const page = await signedInPage(browser, dev.url, "careless");
  await page.getByTestId("new-task").click();
  await fillEditor(page, {
    title: "",
    tags: "ok",
    dueDate: "2026-12-24",
    repeat: "Custom rule (RRULE)",
    rrule: "FREQ=HOURLY;COUNT=3;UNTIL=20270101",
  });
  await page.getByRole("button", { name: "Create" }).click();
  const titleErrors = page.getByTestId("error-title");
  await titleErrors.waitFor();
  const recurrenceErrors = await page.getByTestId("error-recurrence").textContent();
  assert.match(await titleErrors.textContent(), /title|required|empty/i);
  assert.match(recurrenceErrors, /COUNT/, recurrenceErrors);
  assert.match(recurrenceErrors, /UNTIL/, recurrenceErrors);
  assert.equal(await page.locator("input[name=title]").getAttribute("aria-invalid"), "true");
  await shot(page, "06-violations.png");

  // Fixing the fields creates the task once (the editor's request_id stays the same).
  await fillEditor(page, { title: "Advent calendar", rrule: "FREQ=DAILY;COUNT=3" });
  await page.getByRole("button", { name: "Create" }).click();
  await page.getByTestId("editor").waitFor({ state: "detached" });
  await row(page, "Advent calendar").waitFor();
  assert.deepEqual(await titles(page), ["Advent calendar"]);
  await page.context().close();
});

test("two tabs of a user stay in step without reload; another user sees none of it", async () => {
  const user = "twins";
  const a = await signedInPage(browser, dev.url, user);
  const b = await signedInPage(browser, dev.url, user);
  const stranger = await signedInPage(browser, dev.url, "stranger");
  await a.evaluate(() => (window.__sameDocument = true));
  await b.evaluate(() => (window.__sameDocument = true));

  const delays = [];
  const timed = async (label, change, observe) => {
    await change();
    const started = Date.now();
    await observe();
    delays.push(`${label} ${Date.now() - started} ms`);
  };

  // Created in A; appears in B. Measured from the editor closing in A (the RPC returned) to
  // the row in B: the live stream's delivery plus rendering, no timed assertion.
  await timed("create", () => createTask(a, { title: "Plan the trip", priority: "Medium", tags: "travel" }), () =>
    row(b, "Plan the trip").waitFor({ timeout: 30_000 }),
  );
  assert.deepEqual(await row(b, "Plan the trip").getByTestId("tag").allTextContents(), ["travel"]);

  // Edited in B; A follows.
  await timed(
    "update",
    async () => {
      await row(b, "Plan the trip").getByRole("button", { name: "Edit" }).click();
      await fillEditor(b, { title: "Plan the trip to Lisbon", priority: "Urgent" });
      await b.getByRole("button", { name: "Save" }).click();
      await b.getByTestId("editor").waitFor({ state: "detached" });
    },
    () => row(a, "Plan the trip to Lisbon").waitFor({ timeout: 30_000 }),
  );
  assert.equal(await row(a, "Plan the trip to Lisbon").getByTestId("priority").textContent(), "Urgent");
  await shot(a, "07-two-tabs-a.png");
  await shot(b, "08-two-tabs-b.png");

  // Completed in A; leaves B's open list. Deleted in B; gone from A's "all" list.
  await timed("complete", () => row(a, "Plan the trip to Lisbon").getByRole("checkbox").click(), () =>
    row(b, "Plan the trip to Lisbon").waitFor({ state: "detached", timeout: 30_000 }),
  );
  await a.getByTestId("toolbar").locator("select[name=status]").selectOption("all");
  await b.getByTestId("toolbar").locator("select[name=status]").selectOption("all");
  const doomed = row(b, "Plan the trip to Lisbon");
  await doomed.getByRole("button", { name: "Delete" }).click();
  await timed("delete", () => doomed.getByRole("button", { name: "Really delete?" }).click(), () =>
    row(a, "Plan the trip to Lisbon").waitFor({ state: "detached", timeout: 30_000 }),
  );

  console.log(`live sync delay between two tabs: ${delays.join(", ")}`);
  // No reload happened in either tab: same document, one load each, changes applied live.
  for (const page of [a, b]) {
    assert.equal(await page.evaluate(() => window.__sameDocument), true);
    assert.equal(await page.getByTestId("footer").getAttribute("data-loads"), "1");
    assert.ok(Number(await page.getByTestId("footer").getAttribute("data-applied")) >= 4);
  }
  // The stranger's tab saw nothing: no task, no change applied.
  await stranger.getByTestId("empty").waitFor();
  assert.equal(await stranger.getByTestId("footer").getAttribute("data-applied"), "0");
  assert.equal(await stranger.getByTestId("count").textContent(), "0 of 0 tasks");
  for (const page of [a, b, stranger]) await page.context().close();
});

test("a cut stream reconnects, resumes from its cursor and shows exactly the current state", async () => {
  const proxy = await startProxy(dev.url);
  try {
    const user = "commuter";
    const phone = await signedInPage(browser, proxy.url, user);
    const laptop = await signedInPage(browser, dev.url, user);
    for (const title of ["Renew passport", "Book dentist", "Pay rent"]) await createTask(laptop, { title });
    await row(phone, "Pay rent").waitFor();
    await phone.evaluate(() => (window.__sameDocument = true));
    const appliedBefore = Number(await phone.getByTestId("footer").getAttribute("data-applied"));

    proxy.cut();
    await phone.locator('[data-testid=connection][data-state="reconnecting"]').waitFor({ timeout: 30_000 });
    await shot(phone, "09-offline.png");

    // Changes while the phone is offline.
    await createTask(laptop, { title: "Buy a new umbrella", tags: "errands" });
    await row(laptop, "Renew passport").getByRole("checkbox").click();
    await row(laptop, "Renew passport").waitFor({ state: "detached" });
    const dentist = row(laptop, "Book dentist");
    await dentist.getByRole("button", { name: "Delete" }).click();
    await dentist.getByRole("button", { name: "Really delete?" }).click();
    await dentist.waitFor({ state: "detached" });
    await row(laptop, "Pay rent").getByRole("button", { name: "Edit" }).click();
    await fillEditor(laptop, { title: "Pay rent (December)", priority: "High" });
    await laptop.getByRole("button", { name: "Save" }).click();
    await laptop.getByTestId("editor").waitFor({ state: "detached" });
    // Still offline, still showing the old state.
    assert.equal(await row(phone, "Book dentist").count(), 1);

    proxy.restore();
    await live(phone, 60_000);
    await row(phone, "Buy a new umbrella").waitFor();
    await row(phone, "Book dentist").waitFor({ state: "detached" });
    await row(phone, "Pay rent (December)").waitFor();
    await row(phone, "Renew passport").waitFor({ state: "detached" });

    // Exactly the current state: the same tasks, states and fields as a fresh load.
    const snapshot = async (page) => {
      await page.getByTestId("toolbar").locator("select[name=status]").selectOption("all");
      await page.getByTestId("toolbar").locator("select[name=sort]").selectOption("title");
      return page.getByTestId("task").evaluateAll((rows) =>
        rows.map((r) => `${r.querySelector("[data-testid=title]").textContent}|${r.className}|${r.querySelector("[data-testid=priority]")?.textContent ?? "None"}|${[...r.querySelectorAll("[data-testid=tag]")].map((t) => t.textContent).join(",")}`),
      );
    };
    const fresh = await signedInPage(browser, dev.url, user);
    const expected = await snapshot(fresh);
    assert.deepEqual(await snapshot(phone), expected);
    assert.deepEqual(
      expected.map((s) => s.split("|")[0]),
      ["Buy a new umbrella", "Pay rent (December)", "Renew passport"],
    );
    await shot(phone, "10-reconnected.png");

    // Resumed, not reloaded: same document, one load, the missed changes applied from the
    // replay (4 changes, plus the umbrella's tag event).
    assert.equal(await phone.evaluate(() => window.__sameDocument), true);
    assert.equal(await phone.getByTestId("footer").getAttribute("data-loads"), "1");
    assert.ok(Number(await phone.getByTestId("footer").getAttribute("data-applied")) >= appliedBefore + 4);
    for (const page of [phone, laptop, fresh]) await page.context().close();
  } finally {
    await proxy.close();
  }
});

test("a reminder fires into the bell; marking it read clears the count on every tab", async () => {
  const user = "forgetful";
  const page = await signedInPage(browser, dev.url, user);
  const other = await signedInPage(browser, dev.url, user);
  await page.getByTestId("new-task").click();
  await fillEditor(page, { title: "Stretch" });
  // The time is set just before saving, so a slow machine cannot make it past already.
  await fillEditor(page, { reminders: [{ at: berlinInput(new Date(Date.now() + 5000), { seconds: true }) }] });
  await page.getByRole("button", { name: "Create" }).click();
  await page.getByTestId("editor").waitFor({ state: "detached" });
  await page.getByTestId("unread-count").waitFor({ timeout: 60_000 });
  assert.equal(await page.getByTestId("unread-count").textContent(), "1");
  await other.getByTestId("unread-count").waitFor({ timeout: 30_000 });
  await page.getByTestId("bell").click();
  const notification = page.getByTestId("notification").first();
  await notification.waitFor();
  assert.match(await notification.textContent(), /Stretch/);
  assert.match(await notification.getAttribute("class"), /unread/);
  await shot(page, "11-notifications.png");
  await notification.getByRole("button").click();
  await page.getByTestId("unread-count").waitFor({ state: "detached" });
  await other.getByTestId("unread-count").waitFor({ state: "detached", timeout: 30_000 });
  for (const p of [page, other]) await p.context().close();
});

test("an edit made stale by another tab is refused (etag), kept, and applied on a second save", async () => {
  const user = "editors";
  const a = await signedInPage(browser, dev.url, user);
  const b = await signedInPage(browser, dev.url, user);
  await createTask(a, { title: "Draft the speech", priority: "Low" });
  await row(b, "Draft the speech").waitFor();

  // A opens the editor; meanwhile B renames the task.
  await row(a, "Draft the speech").getByRole("button", { name: "Edit" }).click();
  await row(b, "Draft the speech").getByRole("button", { name: "Edit" }).click();
  await fillEditor(b, { title: "Draft the wedding speech" });
  await b.getByRole("button", { name: "Save" }).click();
  await b.getByTestId("editor").waitFor({ state: "detached" });
  await row(a, "Draft the wedding speech").waitFor();

  // A's save of its own change is refused, not silently applied over B's.
  await fillEditor(a, { priority: "Urgent" });
  await a.getByRole("button", { name: "Save" }).click();
  await a.getByTestId("error-general").getByText(/changed on another device/).waitFor();
  assert.equal(await row(a, "Draft the wedding speech").getByTestId("priority").textContent(), "Low");
  await shot(a, "12-conflict.png");

  // Saving again applies A's change on top of B's: both survive.
  await a.getByRole("button", { name: "Save" }).click();
  await a.getByTestId("editor").waitFor({ state: "detached" });
  for (const page of [a, b]) {
    await page.getByTestId("priority").getByText("Urgent").waitFor();
    assert.deepEqual(await titles(page), ["Draft the wedding speech"]);
  }
  for (const page of [a, b]) await page.context().close();
});
