// Real sign-in: the web app as an OpenID Connect relying party (authorization code flow with
// PKCE, a public client) of a real provider (tools/oidc/provider.mjs), in headless Chromium,
// against a real `taskmesh dev` that verifies the provider's access tokens itself.
//
// Access tokens live 20 s here, so the app renews them (refresh_token grant, rotated refresh
// tokens) several times per test, and the gateway ends live streams whose token ran out
// (TOKEN_EXPIRED, 2 s leeway): the app must resume them without losing a change.

import assert from "node:assert/strict";
import path from "node:path";
import { after, before, test } from "node:test";
import {
  createTask,
  freePort,
  launchBrowser,
  live,
  newContext,
  row,
  screenshots,
  startDev,
  startProvider,
  storedSession,
  titles,
} from "./harness.mjs";

const TOKEN_TTL_S = 20;
let provider;
let dev;
let browser;
const shot = (page, name) => process.env.NO_SHOTS ? null : page.screenshot({ path: path.join(screenshots, name), fullPage: true });
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

before(async () => {
  // The gateway's address must be known first: it is the app's redirect URI at the provider.
  const port = await freePort();
  provider = await startProvider({ accessTokenTtl: TOKEN_TTL_S, redirectUris: [`http://127.0.0.1:${port}/`] });
  dev = await startDev({
    listen: `127.0.0.1:${port}`,
    env: {
      TASKMESH_OIDC_ISSUER: provider.issuer,
      TASKMESH_WEB_OIDC_CLIENT_ID: "taskmesh-web",
      TASKMESH_JWT_LEEWAY: "2s",
    },
  });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await dev?.stop();
  await provider?.stop();
});

/**
 * A browser context (another device) that talks to nothing but this machine (the provider's
 * logout page would load web fonts), and records the app's requests to the provider's
 * token endpoint in `grants` (grant_type and refresh_token of each) and the tokens it
 * revoked in `revoked`.
 */
async function device() {
  const context = await newContext(browser);
  await context.route((url) => url.hostname !== "127.0.0.1", (route) => route.abort());
  const grants = [];
  const revoked = [];
  context.on("request", (request) => {
    if (request.method() !== "POST") return;
    const form = new URLSearchParams(request.postData() ?? "");
    if (request.url() === `${provider.issuer}/token`) {
      grants.push({ grant: form.get("grant_type"), refreshToken: form.get("refresh_token") });
    } else if (request.url() === `${provider.issuer}/token/revocation`) {
      revoked.push(form.get("token"));
    }
  });
  return { context, grants, revoked };
}

/** Asserts that no refresh token was presented twice (the provider would revoke the grant). */
function eachRefreshTokenOnce(grants) {
  const used = grants.filter((g) => g.grant === "refresh_token").map((g) => g.refreshToken);
  assert.equal(new Set(used).size, used.length, `every refresh token was used once: ${used.length} refreshes`);
}

/** The refresh_token grant with `refreshToken`, as anyone holding it could send it. */
function spend(refreshToken) {
  return fetch(`${provider.issuer}/token`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ grant_type: "refresh_token", refresh_token: refreshToken, client_id: "taskmesh-web" }),
  });
}

/** What a page shows, for failure messages. */
async function dump(page) {
  const text = await page.locator("body").innerText().catch((err) => `(no text: ${err.message})`);
  return `${page.url()}\n${text}`;
}

/** Goes through the provider's login and consent pages as `user`. */
async function loginAtProvider(page, user, { shots = false } = {}) {
  await page.waitForURL((url) => url.href.startsWith(`${provider.issuer}/interaction/`));
  await page.locator("input[name=login]").fill(user);
  await page.locator("input[name=password]").fill("any password");
  if (shots) await shot(page, "14-provider-login.png");
  await page.getByRole("button", { name: "Sign-in", exact: true }).click();
  await page.getByRole("button", { name: "Continue", exact: true }).click();
}

/** Opens the app in a new page of `context`, signs in at the provider as `user`, waits until live. */
async function signIn(context, user, { shots = false } = {}) {
  const page = await context.newPage();
  await page.goto(dev.url);
  const form = page.locator('[data-testid=sign-in][data-kind="oidc"]');
  await form.waitFor();
  if (shots) await shot(page, "13-oidc-sign-in.png");
  await form.getByRole("button", { name: "Sign in", exact: true }).click();
  await loginAtProvider(page, user, { shots });
  await page.waitForURL(`${dev.url}/`);
  try {
    await live(page);
  } catch (err) {
    throw new Error(`${user} did not land signed in: ${err.message}\n${await dump(page)}`);
  }
  return page;
}

/** Another tab of the same context: signed in already (the session is shared), live. */
async function secondTab(context) {
  const page = await context.newPage();
  await page.goto(dev.url);
  await live(page);
  return page;
}

test("alice signs in at the provider; her tabs share the session live; bob sees none of it", async () => {
  const alice = await device();
  const first = await signIn(alice.context, "alice", { shots: true });
  assert.equal(await first.getByTestId("user").textContent(), "alice");
  assert.equal(first.url(), `${dev.url}/`, "the code and state are gone from the address");
  // The code, once; renewals may follow already (a slow sign-in outlasts half of 20 s).
  assert.equal(alice.grants[0]?.grant, "authorization_code");
  assert.equal(alice.grants.filter((g) => g.grant === "authorization_code").length, 1);
  eachRefreshTokenOnce(alice.grants);
  const { session: stored } = await storedSession(first);
  assert.equal(stored.kind, "oidc");
  assert.equal(stored.sub, "alice");
  assert.ok(stored.refreshToken && stored.idToken, "a refresh token and an ID token are kept");
  await first.getByTestId("empty").waitFor();

  await createTask(first, { title: "Review the quarterly report", priority: "High" });
  await row(first, "Review the quarterly report").waitFor();

  // A second tab is signed in without the provider and shows the task; a task made there
  // appears in the first tab live.
  const second = await secondTab(alice.context);
  await first.evaluate(() => (window.__sameDocument = true));
  await row(second, "Review the quarterly report").waitFor();
  assert.equal(await second.getByTestId("user").textContent(), "alice");
  await createTask(second, { title: "Book the offsite" });
  await row(first, "Book the offsite").waitFor({ timeout: 30_000 });
  assert.equal(await first.evaluate(() => window.__sameDocument), true);
  await shot(first, "15-oidc-signed-in.png");

  // Bob, on another device, signs in as himself and sees none of alice's tasks.
  const bob = await device();
  const his = await signIn(bob.context, "bob");
  assert.equal(await his.getByTestId("user").textContent(), "bob");
  await his.getByTestId("empty").waitFor();
  assert.equal(await his.getByTestId("count").textContent(), "0 of 0 tasks");
  await createTask(his, { title: "Bob's own task" });
  await row(his, "Bob's own task").waitFor();
  await sleep(1000);
  assert.equal(await row(first, "Bob's own task").count(), 0);
  assert.deepEqual((await titles(first)).sort(), ["Book the offsite", "Review the quarterly report"]);
  eachRefreshTokenOnce(alice.grants);
  await alice.context.close();
  await bob.context.close();
});

test("a live stream outlives two token lifetimes: renewed silently, resumed, nothing lost, no reload", async () => {
  const alice = await device();
  const watcher = await signIn(alice.context, "alice");
  const writer = await secondTab(alice.context);
  const resumed = [];
  watcher.on("console", (message) => {
    if (message.text().includes("live stream's token expired")) resumed.push(Date.now());
  });
  await watcher.evaluate(() => (window.__sameDocument = true));
  const start = Date.now();
  const loads = await watcher.getByTestId("footer").getAttribute("data-loads");

  // Tasks made in the other tab every second or so for 2.3 token lifetimes: some land
  // while the watcher's stream is being ended for its expired token and reopened.
  const made = [];
  try {
    for (let i = 1; Date.now() - start < TOKEN_TTL_S * 2300; i += 1) {
      const title = `Renewal check ${String(i).padStart(2, "0")}`;
      await createTask(writer, { title });
      made.push({ title, at: Date.now() - start });
      await sleep(700);
    }
    for (const { title } of made) await row(watcher, title).waitFor({ timeout: 30_000 });
  } catch (err) {
    throw new Error(`${err.message}\nwatcher:\n${await dump(watcher)}\nwriter:\n${await dump(writer)}`);
  }
  const shown = await titles(watcher);
  for (const { title } of made) assert.ok(shown.includes(title), `${title} is shown`);
  await shot(watcher, "16-oidc-renewed.png");

  const gaps = resumed.map((at) => {
    const since = at - start;
    const nearest = Math.min(...made.map((m) => Math.abs(m.at - since)));
    return `resumed at ${(since / 1000).toFixed(1)} s (nearest task ${nearest} ms away)`;
  });
  const refreshes = alice.grants.filter((g) => g.grant === "refresh_token");
  console.log(`${made.length} tasks in ${((Date.now() - start) / 1000).toFixed(0)} s; ${refreshes.length} refreshes; ${gaps.join("; ")}`);

  // The stream did end for its token and was resumed (more than once), without a reload.
  assert.ok(resumed.length >= 2, `the stream was resumed after a token renewal ${resumed.length} times`);
  assert.equal(await watcher.evaluate(() => window.__sameDocument), true, "the page was not reloaded");
  assert.equal(await watcher.getByTestId("footer").getAttribute("data-loads"), loads, "no full reload of the tasks");
  assert.equal(await watcher.getByTestId("user").textContent(), "alice");
  await live(watcher);
  // Renewed silently, by one tab at a time: no refresh token was used twice.
  assert.ok(refreshes.length >= 2, `refreshes: ${refreshes.length}`);
  eachRefreshTokenOnce(alice.grants);
  await alice.context.close();
});

test("a refused renewal ends the session with a notice", async () => {
  const alice = await device();
  const page = await signIn(alice.context, "alice");
  // Someone else uses the app's refresh token first: the provider rotates it, so the app's
  // next renewal presents a used one, and the provider revokes the whole grant.
  const other = await secondTab(alice.context);
  const { refreshToken } = (await storedSession(page)).session;
  const stolen = await spend(refreshToken);
  assert.equal(stolen.status, 200, await stolen.text());
  // Both tabs end, with the notice.
  for (const tab of [page, other]) {
    const form = tab.locator('[data-testid=sign-in][data-kind="oidc"]');
    await form.waitFor({ timeout: TOKEN_TTL_S * 1000 + 10_000 });
    assert.match(await form.getByRole("alert").textContent(), /Your session ended; sign in again/);
  }
  assert.equal((await storedSession(page)).session, undefined);
  await shot(page, "17-oidc-session-ended.png");
  await alice.context.close();
});

test("signing out revokes the refresh token and ends the session in every tab and at the provider", async () => {
  const alice = await device();
  const page = await signIn(alice.context, "alice");
  const other = await secondTab(alice.context);

  // Right after a renewal (the next is ~10 s away), the stored refresh token is the live one.
  const refreshes = () => alice.grants.filter((g) => g.grant === "refresh_token").length;
  const before = refreshes();
  for (const deadline = Date.now() + TOKEN_TTL_S * 1000; refreshes() === before && Date.now() < deadline; ) await sleep(100);
  await sleep(1000); // the renewed session is stored
  const { refreshToken } = (await storedSession(page)).session;
  const renewals = refreshes();

  await page.getByRole("button", { name: "Sign out" }).click();
  // The provider asks to confirm (RP-initiated logout), then sends the browser back.
  await page.waitForURL((url) => url.href.startsWith(`${provider.issuer}/session/end`));
  // Already, before the provider's session ends: the app revoked the refresh token it held
  // (the freshest), and the provider refuses it.
  assert.equal(refreshes(), renewals, "no renewal between reading the token and signing out");
  assert.deepEqual(alice.revoked, [refreshToken]);
  const refused = await spend(refreshToken);
  assert.equal(refused.status, 400);
  assert.equal((await refused.json()).error, "invalid_grant");
  await other.locator('[data-testid=sign-in][data-kind="oidc"]').waitFor();
  await page.getByRole("button", { name: "Yes, sign me out" }).click();
  await page.waitForURL(`${dev.url}/`);
  await page.locator('[data-testid=sign-in][data-kind="oidc"]').waitFor();
  const record = await storedSession(page);
  assert.equal(record.session, undefined);
  assert.equal(record.notice, "");
  await shot(page, "18-oidc-signed-out.png");

  // A reload stays signed out, and signing in again goes through the provider's login.
  await page.reload();
  await page.locator('[data-testid=sign-in][data-kind="oidc"]').waitFor();
  await sleep(500);
  assert.equal(await page.getByTestId("user").count(), 0, await dump(page));
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  await page.waitForURL((url) => url.href.startsWith(`${provider.issuer}/interaction/`));
  await page.locator("input[name=login]").waitFor();
  await alice.context.close();
});

test("signing out while the provider cannot be reached says so; a provider's http endpoint elsewhere is refused", async () => {
  const alice = await device();
  const page = await signIn(alice.context, "alice");
  // The provider is gone (for this device) and the page is loaded anew (nothing cached).
  await alice.context.route((url) => url.href.startsWith(provider.issuer), (route) => route.abort());
  await page.reload();
  await live(page);
  await page.getByRole("button", { name: "Sign out" }).click();
  const form = page.locator('[data-testid=sign-in][data-kind="oidc"]');
  await form.getByText("Signed out here; the identity provider could not be reached, so its session may still be open.").waitFor();
  assert.equal(page.url(), `${dev.url}/`);
  assert.equal((await storedSession(page)).session, undefined);
  await alice.context.close();

  // Discovery names a sign-in page over plain http on another host: the app does not go there.
  const bob = await device();
  await bob.context.route(`${provider.issuer}/.well-known/openid-configuration`, async (route) => {
    const response = await route.fetch();
    const metadata = await response.json();
    await route.fulfill({ response, json: { ...metadata, authorization_endpoint: "http://provider.example/auth" } });
  });
  const his = await bob.context.newPage();
  await his.goto(dev.url);
  const start = his.locator('[data-testid=sign-in][data-kind="oidc"]');
  await start.getByRole("button", { name: "Sign in", exact: true }).click();
  await start.getByText(/sign-in page is not an https address/).waitFor();
  assert.equal(his.url(), `${dev.url}/`);
  await bob.context.close();
});
