// The session as this browser keeps it, and how the gateway says to sign in.
//
// - Configuration: `/.well-known/taskmesh-web.json` says how to sign in here: OpenID Connect
//   (see oidc.ts), the development sign-in of `taskmesh dev`, or a pasted token.
// - Storage: the session lives in IndexedDB (database "taskmesh", store "session", key
//   "current"), shared by every tab, as a record with a generation that every write raises;
//   signing out leaves a record without a session (a tombstone) at a higher generation.
//   IndexedDB, unlike localStorage (which Chrome copies per page and updates a moment
//   later), is consistent across tabs: a read that starts after a write has committed sees
//   it. So a tab that takes the session lock after another tab renewed reads the new refresh
//   token, never the spent one.
// - Notification: after each write, localStorage's GENERATION_KEY is set to the new
//   generation; the `storage` event tells the other tabs to read the record again.
// - The session lock (Web Locks, shared by the tabs) serializes renewals and sign-out; see
//   auth.ts.

import type { OidcConfig } from "./oidc";

/** How the gateway lets people sign in. */
export type SignInConfig =
  | ({ signIn: "oidc" } & OidcConfig)
  /** `taskmesh dev` without an identity provider: anyone signs in as anyone. */
  | { signIn: "development" }
  /** A server with static keys: paste a token. */
  | { signIn: "token" };

/** The signed-in session, as stored. Times are milliseconds since the epoch, this clock. */
export interface Session {
  kind: SignInConfig["signIn"];
  /** The access token's subject: the user id the gateway sees. */
  sub: string;
  /**
   * A name to show: the ID token's, or the name typed into the development sign-in (which
   * renewing it asks for again); else `sub` is shown.
   */
  name?: string;
  accessToken: string;
  obtainedAt: number;
  expiresAt: number;
  refreshToken?: string;
  idToken?: string;
  /** kind "oidc": the provider and client that issued the tokens. */
  issuer?: string;
  clientId?: string;
}

/** The stored record: the session (none once signed out) and its generation. */
export interface Stored {
  /** Raised by every write; 0 when nothing was ever stored. */
  generation: number;
  session?: Session;
  /** Why the session ended, for every tab's sign-in screen ("" when signed out on purpose). */
  notice?: string;
}

/** Refused for good (e.g. the provider's `invalid_grant`): only signing in again helps. */
export class RefusedError extends Error {}

/** localStorage key set to the generation after every write: the other tabs' cue. */
export const GENERATION_KEY = "taskmesh.session.generation";
/** Where the session (then a pasted token) was kept before IndexedDB; adopted once. */
const LEGACY_KEYS = ["taskmesh.session", "taskmesh.token"];
const DATABASE = "taskmesh";
const STORE = "session";
const RECORD = "current";
const LOCK = "taskmesh.session";

/**
 * The shortest lifetime a session is given. A token whose `exp` looks past or imminent
 * (a skewed clock) would otherwise be renewed over and over; `renewAt` never renews before
 * half the lifetime, so renewals stay at least 5 s apart.
 */
export const MIN_LIFETIME_MS = 10_000;

/** Reads the gateway's sign-in configuration. */
export async function loadConfig(): Promise<SignInConfig> {
  const response = await fetch("/.well-known/taskmesh-web.json", { cache: "no-store" });
  // A gateway from before OpenID Connect: tokens are pasted.
  if (response.status === 404) return { signIn: "token" };
  if (!response.ok) throw new Error(`The server answered ${response.status} when asked how to sign in.`);
  const body = (await response.json()) as Record<string, unknown>;
  switch (body.sign_in) {
    case "oidc":
      if (typeof body.issuer !== "string" || !isUrl(body.issuer) || typeof body.client_id !== "string") break;
      return {
        signIn: "oidc",
        issuer: body.issuer,
        clientId: body.client_id,
        scopes: typeof body.scopes === "string" && body.scopes ? body.scopes : "openid",
      };
    case "development":
    case "token":
      return { signIn: body.sign_in };
  }
  throw new Error(`The server's sign-in configuration is not understood: ${JSON.stringify(body)}`);
}

function isUrl(text: string): boolean {
  try {
    return Boolean(new URL(text));
  } catch {
    return false;
  }
}

/** The JWT's `sub` and `exp` (seconds), read without verifying: the server verifies. */
export function claims(token: string): { sub: string; exp: number } | undefined {
  try {
    // base64url → bytes → UTF-8: atob alone yields Latin-1, which garbles "zoë".
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(payload), (c) => c.charCodeAt(0));
    const parsed = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes)) as { sub?: unknown; exp?: unknown };
    if (typeof parsed.sub !== "string" || typeof parsed.exp !== "number") return undefined;
    return { sub: parsed.sub, exp: parsed.exp };
  } catch {
    return undefined;
  }
}

/**
 * When to renew: once 80% of the token's lifetime has passed or 60 s before it expires,
 * whichever is earlier, but never before half of it (a 20 s token is renewed after 10 s, a
 * 5 min one after 4 min, an hour's after 48 min).
 */
export function renewAt(session: Session): number {
  const lifetime = Math.max(0, session.expiresAt - session.obtainedAt);
  const margin = Math.min(Math.max(60_000, lifetime * 0.2), lifetime * 0.5);
  return session.expiresAt - margin;
}

/** A session for a freshly obtained access token; undefined if it is not a usable JWT. */
export function sessionOf(
  kind: Session["kind"],
  accessToken: string,
  expiresIn: number | undefined,
  extra: Partial<Session> = {},
): Session | undefined {
  const c = claims(accessToken);
  if (!c) return undefined;
  const now = Date.now();
  // `expires_in` is relative, so a skewed clock does not matter; `exp` is the fallback.
  let expiresAt = expiresIn && expiresIn > 0 ? now + expiresIn * 1000 : c.exp * 1000;
  // A renewable session gets a minimum lifetime (see MIN_LIFETIME_MS); a pasted token's is
  // its own, as nothing renews it.
  if (kind !== "token") expiresAt = Math.max(expiresAt, now + MIN_LIFETIME_MS);
  return { ...extra, kind, sub: c.sub, accessToken, obtainedAt: now, expiresAt };
}

/** Whether a stored session belongs to the server's current way of signing in. */
export function fits(session: Session, config: SignInConfig): boolean {
  if (session.kind !== config.signIn) return false;
  return config.signIn !== "oidc" || (session.issuer === config.issuer && session.clientId === config.clientId);
}

// --- storage --------------------------------------------------------------------------

let database: Promise<IDBDatabase> | undefined;

function open(): Promise<IDBDatabase> {
  database ??= new Promise<IDBDatabase>((resolve, reject) => {
    const request = indexedDB.open(DATABASE, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => {
      const db = request.result;
      // A newer version of the app (another tab) upgrades the database: let it.
      db.onversionchange = () => {
        db.close();
        database = undefined;
      };
      resolve(db);
    };
    request.onerror = () => reject(request.error ?? new Error("IndexedDB cannot be opened."));
  }).catch((err: unknown) => {
    database = undefined; // the next call tries again
    throw err;
  });
  return database;
}

/** The record as a transaction over the session store sees it, and the transaction's end. */
function transaction<T>(
  mode: IDBTransactionMode,
  body: (store: IDBObjectStore, current: Stored) => T,
): Promise<T> {
  return open().then(
    (db) =>
      new Promise<T>((resolve, reject) => {
        const tx = db.transaction(STORE, mode);
        const store = tx.objectStore(STORE);
        let result: T;
        const get = store.get(RECORD);
        get.onsuccess = () => {
          const found = get.result as Stored | undefined;
          result = body(store, found ?? legacy());
        };
        // Resolved only once committed: from then on every tab reads what was written.
        tx.oncomplete = () => resolve(result);
        tx.onerror = () => reject(tx.error ?? new Error("IndexedDB failed."));
        tx.onabort = () => reject(tx.error ?? new Error("IndexedDB aborted."));
      }),
  );
}

/** Nothing in IndexedDB yet: what an older version of the app kept in localStorage. */
function legacy(): Stored {
  try {
    const session = localStorage.getItem(LEGACY_KEYS[0]);
    if (session) return { generation: 0, session: JSON.parse(session) as Session };
    const token = localStorage.getItem(LEGACY_KEYS[1]);
    const pasted = token ? sessionOf("token", token, undefined) : undefined;
    return pasted ? { generation: 0, session: pasted } : { generation: 0 };
  } catch {
    return { generation: 0 };
  }
}

/** The stored record, as every tab sees it now. */
export function readStored(): Promise<Stored> {
  return transaction("readonly", (_, current) => current);
}

/**
 * Stores `session` (undefined: signs every tab out, with `notice`) at the next generation;
 * with `expected`, only if the record is still at that generation. Resolves with the record
 * now stored and whether it is this write.
 */
export async function writeStored(
  session: Session | undefined,
  { expected, notice = "" }: { expected?: number; notice?: string } = {},
): Promise<{ written: boolean; stored: Stored }> {
  const outcome = await transaction("readwrite", (store, current) => {
    if (expected !== undefined && current.generation !== expected) return { written: false, stored: current };
    const next: Stored = session ? { generation: current.generation + 1, session } : { generation: current.generation + 1, notice };
    store.put(next, RECORD);
    return { written: true, stored: next };
  });
  if (outcome.written) {
    try {
      for (const key of LEGACY_KEYS) localStorage.removeItem(key);
      localStorage.setItem(GENERATION_KEY, String(outcome.stored.generation));
    } catch {
      // No localStorage: the other tabs learn of it at their next renewal.
    }
  }
  return outcome;
}

/**
 * Runs `fn` holding the session lock, which all tabs of this origin share. Without Web Locks
 * (outside a secure context) it runs at once: OpenID Connect needs a secure context anyway
 * (PKCE uses WebCrypto), so only sessions without a refresh token go without the lock, and
 * the generation check of `writeStored` still keeps them from overwriting a newer one.
 */
export function withLock<T>(fn: () => Promise<T>): Promise<T> {
  if (!("locks" in navigator)) return fn();
  // The lock's promise settles as `fn`'s does (lib.dom types it one Promise too deep).
  return navigator.locks.request(LOCK, fn) as unknown as Promise<T>;
}

/** A development token for `user` from `taskmesh dev`'s development sign-in. */
export async function developmentToken(user: string): Promise<{ accessToken: string; expiresIn?: number }> {
  const response = await fetch("/dev/sign-in", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user }),
  });
  const body = (await response.json().catch(() => ({}))) as { access_token?: unknown; expires_in?: unknown; error?: unknown };
  if (response.status >= 400 && response.status < 500) {
    throw new RefusedError(typeof body.error === "string" ? body.error : `The server answered ${response.status}.`);
  }
  if (!response.ok || typeof body.access_token !== "string") {
    throw new Error(`The development sign-in failed (${response.status}).`);
  }
  return {
    accessToken: body.access_token,
    expiresIn: typeof body.expires_in === "number" ? body.expires_in : undefined,
  };
}
