// The session as this browser keeps it, and how the gateway says to sign in.
//
// - Configuration: `/.well-known/taskmesh-web.json` says how to sign in here: OpenID Connect
//   (see oidc.ts), the development sign-in of `taskmesh dev`, or a pasted token.
// - Storage: the session (tokens and when they expire) lives in localStorage, so every tab of
//   the browser shares it; a `storage` event brings another tab's renewal, sign-in or sign-out.
// - The session lock (Web Locks, shared by the tabs) serializes renewals; see auth.ts.

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
  /** A name to show, when the provider gave one; else `sub`. */
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

/** Refused for good (e.g. the provider's `invalid_grant`): only signing in again helps. */
export class RefusedError extends Error {}

export const SESSION_KEY = "taskmesh.session";
/** Where a pasted token was kept before sessions; adopted once. */
const LEGACY_TOKEN_KEY = "taskmesh.token";
const LOCK = "taskmesh.session";

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
    const payload = token.split(".")[1];
    const json = atob(payload.replace(/-/g, "+").replace(/_/g, "/"));
    const parsed = JSON.parse(json) as { sub?: unknown; exp?: unknown };
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
  const expiresAt = expiresIn && expiresIn > 0 ? now + expiresIn * 1000 : c.exp * 1000;
  return { ...extra, kind, sub: c.sub, accessToken, obtainedAt: now, expiresAt };
}

/** The stored session (or a token pasted before sessions existed), unchecked. */
export function readStored(): Session | undefined {
  try {
    const stored = localStorage.getItem(SESSION_KEY);
    if (stored) return JSON.parse(stored) as Session;
    const legacy = localStorage.getItem(LEGACY_TOKEN_KEY);
    return legacy ? sessionOf("token", legacy, undefined) : undefined;
  } catch {
    return undefined;
  }
}

/** Stores the session for every tab, or removes it (signing them all out). */
export function store(session: Session | undefined): void {
  localStorage.removeItem(LEGACY_TOKEN_KEY);
  if (session) localStorage.setItem(SESSION_KEY, JSON.stringify(session));
  else localStorage.removeItem(SESSION_KEY);
}

/** Whether a stored session belongs to the server's current way of signing in. */
export function fits(session: Session, config: SignInConfig): boolean {
  if (session.kind !== config.signIn) return false;
  return config.signIn !== "oidc" || (session.issuer === config.issuer && session.clientId === config.clientId);
}

/**
 * Runs `fn` holding the session lock, which all tabs of this origin share. `waited`: another
 * tab held it first (and may just have renewed).
 */
export async function withLock<T>(fn: (waited: boolean) => Promise<T>): Promise<T> {
  if (!("locks" in navigator)) return fn(false); // outside a secure context: best effort
  const quick = await navigator.locks.request(LOCK, { ifAvailable: true }, async (lock) =>
    lock ? { value: await fn(false) } : undefined,
  );
  if (quick) return quick.value;
  return navigator.locks.request(LOCK, () => fn(true));
}

/**
 * Chrome keeps a copy of localStorage per page and learns of other pages' writes a moment
 * later (with the `storage` event), in no fixed order with the lock being handed over. So a
 * tab that waited for the lock and still finds the `stale` token waits a little for a newer
 * one before spending the refresh token itself.
 */
export function newerStored(stale: string, ms = 500): Promise<Session | undefined> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      removeEventListener("storage", onStorage);
      resolve(readStored());
    };
    const onStorage = (e: StorageEvent) => {
      if (e.key === SESSION_KEY || e.key === null) done();
    };
    const timer = setTimeout(done, ms);
    addEventListener("storage", onStorage);
    if (readStored()?.accessToken !== stale) done();
  });
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
