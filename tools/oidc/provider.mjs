#!/usr/bin/env node
// A real OpenID Connect provider for taskmesh's integration tests.
//
// It wraps the OpenID-certified `oidc-provider` package (tools/package.json; run
// `npm install` in tools/ first) and serves it on loopback, plain http:
//
//   node tools/oidc/provider.mjs [--port N] [--access-token-ttl SECONDS] [--redirect-uri URI ...]
//     [--exit-with-stdin]   (exit when stdin closes: the Rust tests hold it open)
//
// Once listening it prints exactly one line to stdout,
//   listening http://127.0.0.1:<port>
// and that URL (no trailing slash) is the issuer. Everything else goes to stderr.
// A Rust integration test spawns this script, reads that line, points taskmesh's OIDC
// settings at the issuer (discovery, JWKS) and drives the scenarios through the
// plain-JSON control endpoints under /test/ (see handleTest below):
//
//   GET  /test/token?user=alice  full authorization-code + PKCE flow against this provider
//                                over real HTTP; answers the token endpoint's JSON
//   POST /test/rotate            new signing key; JWKS = [new, old...]   -> {kid}
//   POST /test/retire            JWKS = [current signing key] only       -> {kids}
//   GET  /test/jwks-count        GETs of the jwks_uri served so far      -> {count}
//   POST /test/down | /test/up   every non-/test/ request answers 503, or not
//
// What the provider issues:
// - one public client `taskmesh-web` (no secret, PKCE S256 required, code +
//   refresh_token grants); its redirect_uris and post_logout_redirect_uris are the
//   --redirect-uri values plus http://127.0.0.1/callback (used by /test/token).
// - two users, `alice` (roles ["admin"]) and `bob` (roles []); the login form at
//   /interaction/<uid> accepts any password for them and refuses every other login.
// - access tokens: RFC 9068 JWTs signed RS256 with iss = issuer, aud = "taskmesh",
//   sub = user id, iat, exp (--access-token-ttl, default 300 s), roles, scope, client_id, jti.
//   The resource indicator is `urn:taskmesh` (RFC 8707 wants an absolute URI) and is
//   applied by default, so clients need not send `resource` at all.
// - refresh tokens, rotated on every use (oidc-provider's default for public clients;
//   presenting an already rotated one revokes the whole grant).
// - token revocation (RFC 7009) at the revocation_endpoint of the discovery document
//   (/token/revocation): a client revokes its own tokens (the public client with its
//   client_id alone); revoking a refresh token revokes its whole grant.
//
// Logging in without /test/token: /auth redirects to /interaction/<uid>, a login form
// (POST /interaction/<uid>/login: prompt=login, login=alice|bob, password=anything),
// then a consent form (POST /interaction/<uid>/confirm: prompt=consent); each answers
// 303 back to /auth/<uid>, which finally redirects to the redirect_uri with the code.
// Keep the cookies. RP-initiated logout: GET /session/end?id_token_hint=...&
// post_logout_redirect_uri=... shows a form; POST /session/end/confirm with its xsrf
// field and logout=yes ends the session and redirects to post_logout_redirect_uri.
//
// oidc-provider 9 warns "Unsupported runtime" on stderr under Node 20; it runs fine.

import { createServer } from 'node:http';
import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';

// oidc-provider prints its configuration notices with console.info; stdout carries only
// the "listening" line, so send them to stderr. Done before the (dynamic) import.
console.log = console.info = console.debug = console.error;
const { default: Provider, errors } = await import('oidc-provider');

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    'access-token-ttl': { type: 'string', default: '300' },
    'redirect-uri': { type: 'string', multiple: true, default: [] },
    'exit-with-stdin': { type: 'boolean', default: false },
  },
});
const PORT = Number(args.port);
const ACCESS_TOKEN_TTL = Number(args['access-token-ttl']);
if (!Number.isInteger(PORT) || PORT < 0 || !Number.isInteger(ACCESS_TOKEN_TTL) || ACCESS_TOKEN_TTL <= 0) {
  console.error('usage: provider.mjs [--port N] [--access-token-ttl SECONDS] [--redirect-uri URI ...] [--exit-with-stdin]');
  process.exit(2);
}

const CLIENT_ID = 'taskmesh-web';
const HARNESS_CALLBACK = 'http://127.0.0.1/callback';
const REDIRECT_URIS = [...new Set([...args['redirect-uri'], HARNESS_CALLBACK])];
const AUDIENCE = 'taskmesh';
const RESOURCE = 'urn:taskmesh';

const ACCOUNTS = {
  alice: { roles: ['admin'] },
  bob: { roles: [] },
};
const accountFor = (id) => (Object.hasOwn(ACCOUNTS, id) ? ACCOUNTS[id] : undefined);

// --- signing keys -----------------------------------------------------------

let keySerial = 0;
function newSigningKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  keySerial += 1;
  const kid = `key-${keySerial}-${randomBytes(4).toString('hex')}`;
  return { ...privateKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' };
}

// Private JWKs, newest first: oidc-provider signs with the first RS256 key and
// publishes the public halves of all of them at the jwks_uri.
const keys = [newSigningKey()];

// --- the provider -----------------------------------------------------------

let issuer; // known once the server listens (the port may be 0)
let provider; // the current Provider instance
let providerCallback; // its node (req, res) handler

// Sessions, grants, codes and tokens: a minimal in-memory adapter (oidc-provider's
// documented adapter interface). Its storage is shared by every Provider instance, so
// logins and refresh tokens survive a key rotation. (oidc-provider's built-in memory
// adapter keeps a separate store per instance.)
const store = new Map(); // key -> { value, exp (ms since epoch, or undefined) }
const grantMembers = new Map(); // grantId -> Set of keys, for revokeByGrantId
function load(key) {
  const entry = store.get(key);
  if (entry?.exp !== undefined && entry.exp <= Date.now()) store.delete(key);
  else return entry?.value;
  return undefined;
}
class SharedMemoryAdapter {
  constructor(model) { this.model = model; }
  key(id) { return `${this.model}:${id}`; }
  async upsert(id, payload, expiresIn) {
    const exp = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : undefined;
    const key = this.key(id);
    store.set(key, { value: payload, exp });
    if (this.model === 'Session') store.set(`sessionUid:${payload.uid}`, { value: id, exp });
    if (payload.userCode) store.set(`userCode:${payload.userCode}`, { value: id, exp });
    if (payload.grantId) {
      if (!grantMembers.has(payload.grantId)) grantMembers.set(payload.grantId, new Set());
      grantMembers.get(payload.grantId).add(key);
    }
  }
  async find(id) { return load(this.key(id)); }
  async findByUid(uid) { const id = load(`sessionUid:${uid}`); return id && this.find(id); }
  async findByUserCode(code) { const id = load(`userCode:${code}`); return id && this.find(id); }
  async consume(id) {
    const payload = load(this.key(id));
    if (payload) payload.consumed = Math.floor(Date.now() / 1000);
  }
  async destroy(id) { store.delete(this.key(id)); }
  async revokeByGrantId(grantId) {
    for (const key of grantMembers.get(grantId) ?? []) store.delete(key);
    grantMembers.delete(grantId);
  }
}

// Signed cookies, with keys that outlive a Provider instance too.
const COOKIE_KEYS = [randomBytes(32).toString('base64url')];

function configuration() {
  return {
    clients: [{
      client_id: CLIENT_ID,
      token_endpoint_auth_method: 'none', // public client: PKCE is then required
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: REDIRECT_URIS,
      post_logout_redirect_uris: REDIRECT_URIS,
    }],
    jwks: { keys },
    adapter: SharedMemoryAdapter,
    cookies: { keys: COOKIE_KEYS },
    claims: { openid: ['sub'], profile: ['name', 'preferred_username'] },
    scopes: ['openid', 'offline_access', 'profile'],
    responseTypes: ['code'],

    async findAccount(ctx, id) {
      if (!accountFor(id)) return undefined; // any other subject does not exist
      return {
        accountId: id,
        claims: async () => ({ sub: id, name: id, preferred_username: id }),
      };
    },

    // The login and consent pages are ours (see handleInteraction), not devInteractions:
    // its login form takes any login name, and we want to refuse strangers.
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },

    features: {
      devInteractions: { enabled: false },
      rpInitiatedLogout: { enabled: true },
      revocation: {
        enabled: true,
        // oidc-provider's default, stated (it warns otherwise): a client revokes only its own
        // tokens; another client's are silently left alone (RFC 7009 answers 200 either way).
        allowedPolicy: async (ctx, client, token) => token.clientId === client.clientId,
      },
      resourceIndicators: {
        enabled: true,
        // Every authorization request is for taskmesh, whether `resource` is sent or not...
        defaultResource: () => RESOURCE,
        // ...and so is every access token, even with the `openid` scope (otherwise the
        // token endpoint would issue an opaque userinfo token).
        useGrantedResource: () => true,
        getResourceServerInfo(ctx, indicator) {
          if (indicator !== RESOURCE) throw new errors.InvalidTarget();
          return {
            scope: 'openid profile offline_access',
            audience: AUDIENCE,
            accessTokenFormat: 'jwt',
            accessTokenTTL: ACCESS_TOKEN_TTL,
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },

    // Added to the JWT access tokens' payload.
    async extraTokenClaims(ctx, token) {
      const account = accountFor(token.accountId);
      if (token.kind !== 'AccessToken' || !account) return undefined;
      return { roles: [...account.roles] };
    },

    // Refresh tokens whenever the client may use them. With `offline_access` (which
    // oidc-provider only keeps together with prompt=consent) they outlive the login
    // session; without it they end with it (e.g. at RP-initiated logout).
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),

    ttl: {
      AccessToken: (ctx, token) => token.resourceServer?.accessTokenTTL ?? ACCESS_TOKEN_TTL,
      IdToken: 3600,
      Interaction: 3600,
      Session: 24 * 3600,
      Grant: 24 * 3600,
    },
  };
}

// oidc-provider takes its keys at construction: a key change builds a new instance.
function buildProvider() {
  const next = new Provider(issuer, configuration());
  for (const event of ['server_error', 'authorization.error', 'grant.error', 'end_session.error']) {
    next.on(event, (ctx, err) => console.error(`oidc-provider ${event}:`, err?.message, err?.error_detail ?? ''));
  }
  provider = next;
  providerCallback = next.callback();
}

// --- login and consent pages ------------------------------------------------

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(res, status, title, body) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(`<!DOCTYPE html><html><head><meta charset="utf-8"><title>${esc(title)}</title></head>`
    + `<body><h1>${esc(title)}</h1>${body}</body></html>`);
}

// Form field names follow oidc-provider's devInteractions (prompt, login, password).
function loginForm(uid, error) {
  return `${error ? `<p class="error">${esc(error)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}/login">
  <input type="hidden" name="prompt" value="login">
  <input type="text" name="login" placeholder="alice or bob" required autofocus>
  <input type="password" name="password" placeholder="any password">
  <button type="submit">Sign-in</button>
</form>`;
}

function consentForm(uid, client) {
  return `<p>Allow ${esc(client)} to access taskmesh on your behalf?</p>
<form method="post" action="/interaction/${esc(uid)}/confirm">
  <input type="hidden" name="prompt" value="consent">
  <button type="submit">Continue</button>
</form>
<form method="post" action="/interaction/${esc(uid)}/abort"><button type="submit">Cancel</button></form>`;
}

async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

// GET /interaction/<uid>, POST /interaction/<uid>/{login,confirm,abort}
async function handleInteraction(req, res, uid, action) {
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (err) {
    return page(res, 400, 'Sign-in failed', `<p>${esc(err.message)}</p>`);
  }
  if (details.uid !== uid) return page(res, 400, 'Sign-in failed', '<p>interaction mismatch</p>');
  const { prompt, params, session } = details;

  if (req.method === 'GET' && action === undefined) {
    if (prompt.name === 'login') return page(res, 200, 'Sign-in', loginForm(uid));
    if (prompt.name === 'consent') return page(res, 200, 'Authorize', consentForm(uid, params.client_id));
    return page(res, 501, 'Not implemented', `<p>prompt ${esc(prompt.name)}</p>`);
  }
  if (req.method !== 'POST') return page(res, 405, 'Method not allowed', '');

  if (action === 'login' && prompt.name === 'login') {
    const login = (await readForm(req)).get('login') ?? '';
    if (!accountFor(login)) {
      return page(res, 400, 'Sign-in', loginForm(uid, `unknown user: ${login}`));
    }
    return provider.interactionFinished(req, res, { login: { accountId: login } }, { mergeWithLastSubmission: false });
  }

  if (action === 'confirm' && prompt.name === 'consent') {
    // Grant everything that was asked for (same as devInteractions' consent).
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const missing = prompt.details;
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const result = { consent: { grantId: await grant.save() } };
    return provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
  }

  if (action === 'abort') {
    const result = { error: 'access_denied', error_description: 'End-User aborted interaction' };
    return provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
  }

  return page(res, 400, 'Sign-in failed', `<p>unexpected ${esc(action)} for prompt ${esc(prompt.name)}</p>`);
}

// --- /test/token: the code flow, as a browser would do it ---------------------

class FlowError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const b64url = (buf) => Buffer.from(buf).toString('base64url');

async function codeFlow(user) {
  const cookies = new Map(); // name -> value; all cookies are ours, paths ignored
  async function send(url, init = {}) {
    const headers = { ...init.headers };
    if (cookies.size) headers.cookie = [...cookies].map(([k, v]) => `${k}=${v}`).join('; ');
    const res = await fetch(url, { ...init, headers, redirect: 'manual' });
    for (const line of res.headers.getSetCookie()) {
      const [pair] = line.split(';');
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      if (value === '' || /expires=Thu, 01 Jan 1970/i.test(line)) cookies.delete(name);
      else cookies.set(name, value);
    }
    return res;
  }

  const verifier = b64url(randomBytes(32));
  const state = b64url(randomBytes(16));
  const auth = new URL('/auth', issuer);
  auth.search = new URLSearchParams({
    client_id: CLIENT_ID,
    response_type: 'code',
    redirect_uri: HARNESS_CALLBACK,
    scope: 'openid offline_access',
    prompt: 'consent', // needed for oidc-provider to keep offline_access
    code_challenge: b64url(createHash('sha256').update(verifier).digest()),
    code_challenge_method: 'S256',
    state,
    nonce: b64url(randomBytes(16)),
  }).toString();

  let url = auth;
  let init = {};
  let callback;
  for (let step = 0; step < 12 && !callback; step += 1) {
    const res = await send(url, init);
    if (res.status >= 300 && res.status < 400) {
      const location = new URL(res.headers.get('location'), url);
      // The final redirect to the client: read the code, don't follow it.
      if (`${location.origin}${location.pathname}` === HARNESS_CALLBACK) callback = location;
      else [url, init] = [location, {}];
      continue;
    }
    const html = await res.text();
    const prompt = /name="prompt" value="(\w+)"/.exec(html)?.[1];
    const action = /<form method="post" action="([^"]+)"/.exec(html)?.[1];
    if (res.status === 400 && prompt === 'login') throw new FlowError(400, `login refused for user ${user}`);
    if (res.status !== 200 || !action || (prompt !== 'login' && prompt !== 'consent')) {
      throw new FlowError(502, `unexpected ${res.status} from ${url.pathname}: ${html.slice(0, 300)}`);
    }
    const form = prompt === 'login'
      ? { prompt, login: user, password: 'password' }
      : { prompt };
    url = new URL(action, url);
    init = {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(form).toString(),
    };
  }
  if (!callback) throw new FlowError(502, 'authorization flow did not reach the redirect_uri');
  const error = callback.searchParams.get('error');
  if (error) throw new FlowError(502, `authorization error: ${error} ${callback.searchParams.get('error_description') ?? ''}`);
  if (callback.searchParams.get('state') !== state) throw new FlowError(502, 'state mismatch');

  const res = await fetch(new URL('/token', issuer), {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'authorization_code',
      code: callback.searchParams.get('code'),
      redirect_uri: HARNESS_CALLBACK,
      client_id: CLIENT_ID,
      code_verifier: verifier,
    }).toString(),
  });
  const body = await res.json();
  if (!res.ok) throw new FlowError(502, `token endpoint answered ${res.status}: ${JSON.stringify(body)}`);
  return body;
}

// --- the server -------------------------------------------------------------

let down = false;
let jwksCount = 0;

function json(res, status, value) {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(value));
}

async function handleTest(req, res, url) {
  const route = `${req.method} ${url.pathname}`;
  switch (route) {
    case 'GET /test/token': {
      const user = url.searchParams.get('user') ?? '';
      try {
        return json(res, 200, await codeFlow(user));
      } catch (err) {
        return json(res, err.status ?? 500, { error: err.message });
      }
    }
    case 'POST /test/rotate': {
      const key = newSigningKey();
      keys.unshift(key);
      buildProvider();
      return json(res, 200, { kid: key.kid });
    }
    case 'POST /test/retire':
      keys.splice(1);
      buildProvider();
      return json(res, 200, { kids: keys.map((k) => k.kid) });
    case 'GET /test/jwks-count':
      return json(res, 200, { count: jwksCount });
    case 'POST /test/down':
    case 'POST /test/up':
      down = url.pathname === '/test/down';
      return json(res, 200, { down });
    default:
      return json(res, 404, { error: `no such test endpoint: ${route}` });
  }
}

const server = createServer(async (req, res) => {
  try {
    const url = new URL(req.url, issuer);
    if (url.pathname.startsWith('/test/')) return await handleTest(req, res, url);
    if (url.pathname === '/jwks' && req.method === 'GET') jwksCount += 1;
    if (down) return json(res, 503, { error: 'temporarily_unavailable', error_description: 'down for a test' });
    const interaction = /^\/interaction\/([\w-]+)(?:\/(login|confirm|abort))?$/.exec(url.pathname);
    if (interaction) return await handleInteraction(req, res, interaction[1], interaction[2]);
    return providerCallback(req, res);
  } catch (err) {
    console.error('request failed:', err);
    if (!res.headersSent) json(res, 500, { error: String(err?.message ?? err) });
    else res.destroy();
  }
});

server.listen(PORT, '127.0.0.1', () => {
  issuer = `http://127.0.0.1:${server.address().port}`;
  buildProvider();
  process.stdout.write(`listening ${issuer}\n`);
});

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
// --exit-with-stdin: the caller (the Rust tests) holds our stdin open; when it dies (even by
// SIGKILL), stdin closes and the provider goes too, so no provider outlives its test.
if (args['exit-with-stdin']) {
  process.stdin.on('end', shutdown);
  process.stdin.on('error', shutdown);
  process.stdin.resume();
}
