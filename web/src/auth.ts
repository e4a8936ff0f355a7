// Who is signed in on this page: the session (see session.ts), its silent renewal and
// sign-out.
//
// - Renewal: before the access token runs out (see `renewAt`), and whenever the gateway
//   refuses one as expired. One tab at a time renews, under a Web Lock, and reads the stored
//   session again inside it (IndexedDB: every tab sees the last write): if another tab renewed
//   meanwhile, that token is taken as is; otherwise the stored refresh token, the freshest
//   there is, is spent. So a refresh token is never used twice (the provider rotates them and
//   would revoke the grant). A renewal writes only if the stored generation is still the one
//   it read, so nothing is written back over a sign-out or a newer sign-in.
// - Ending: a refused renewal signs out everywhere with a notice; signing out clears the
//   session everywhere, revokes its refresh token and, with OpenID Connect, ends the
//   provider's session too (RP-initiated logout).

import { Code, ConnectError } from "@connectrpc/connect";
import type { TokenSource } from "./api";
import * as oidc from "./oidc";
import {
  GENERATION_KEY,
  MIN_LIFETIME_MS,
  RefusedError,
  claims,
  developmentToken,
  fits,
  readStored,
  renewAt,
  sessionOf,
  withLock,
  writeStored,
  type Session,
  type SignInConfig,
  type Stored,
} from "./session";

export { loadConfig, type Session, type SignInConfig } from "./session";

const ENDED = "Your session ended; sign in again.";
const TOKEN_EXPIRED = "Your token expired; sign in with a new one.";
const SIGNING_OUT = "Signing out…";
const PROVIDER_UNREACHABLE = "Signed out here; the identity provider could not be reached, so its session may still be open.";
const NOT_REVOKED =
  "Signed out; the identity provider could not be reached to revoke this app's access, so it may stay usable until it expires.";
/** A notice that must outlive the trip to the provider's sign-out page (sessionStorage). */
const NOTICE_KEY = "taskmesh.notice";

/** The session is gone (signed out here or in another tab, or it ended). */
export class SignedOut extends ConnectError {
  constructor(message = "You are signed out.") {
    super(message, Code.Unauthenticated);
  }
}

/** An error's message, never the error itself: oauth4webapi's carry the response body (tokens). */
const messageOf = (err: unknown) => (err instanceof Error ? err.message : String(err));

/** The session of this page: read by the API clients on every call, renewed in time. */
export class Auth implements TokenSource {
  private session: Session | undefined;
  /** The generation of the stored record this page last took (see session.ts). */
  private generation = -1;
  private config: SignInConfig | undefined;
  /** Why the last session ended, for the sign-in screen. */
  private reason = "";
  private readonly listeners = new Set<() => void>();
  private timer: ReturnType<typeof setTimeout> | undefined;
  private renewing: Promise<string> | undefined;
  /** Renewals in a row that failed without an answer (provider unreachable): sets the retry. */
  private failures = 0;
  /** Signing out: this page takes no session from storage until the tombstone is written. */
  private signingOut = false;

  constructor() {
    try {
      this.reason = sessionStorage.getItem(NOTICE_KEY) ?? "";
      sessionStorage.removeItem(NOTICE_KEY);
    } catch {
      // No sessionStorage: no notice carried over.
    }
    addEventListener("storage", (e) => {
      if (e.key === GENERATION_KEY || e.key === null) void this.refresh();
    });
  }

  /**
   * Takes the gateway's configuration and the stored session; a stored session of another
   * kind or provider is dropped, an expired pasted token ends.
   */
  async configure(config: SignInConfig): Promise<void> {
    this.config = config;
    const stored = await readStored();
    const session = stored.session;
    if (session && !fits(session, config)) await this.endStored("", stored.generation);
    else if (session?.kind === "token" && session.expiresAt <= Date.now()) await this.endStored(TOKEN_EXPIRED, stored.generation);
    else this.take(stored);
  }

  /** The signed-in session, if any. */
  current(): Session | undefined {
    return this.config ? this.session : undefined;
  }

  /** Why the last session ended ("" if it did not, or was signed out on purpose). */
  notice(): string {
    return this.reason;
  }

  /** Calls `listener` whenever the session or the notice changes; returns the unsubscribe. */
  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The current access token; renewed first if it is due (the timer was late: a tab asleep). */
  async token(): Promise<string> {
    const session = this.session;
    if (!session) throw new SignedOut();
    if (Date.now() >= renewAt(session) && session.kind !== "token") {
      try {
        return await this.renew(session.accessToken);
      } catch (err) {
        if (err instanceof SignedOut) throw err;
        // Not renewed (provider unreachable): the current token may still do.
      }
    }
    return session.accessToken;
  }

  /**
   * A token newer than `refused` (the token the server refused as expired, or the one due
   * for renewal), renewing if need be. Throws {@link SignedOut} when the session ended,
   * another error when the renewal failed but may succeed later.
   */
  renew(refused: string): Promise<string> {
    this.renewing ??= withLock(() => this.renewLocked(refused)).finally(() => {
      this.renewing = undefined;
    });
    return this.renewing;
  }

  private async renewLocked(refused: string): Promise<string> {
    const config = this.config;
    // Inside the lock the stored session is the freshest: no other tab is renewing.
    const stored = await readStored();
    this.take(stored);
    const session = stored.session;
    if (!session || !config || !fits(session, config)) throw new SignedOut();
    if (session.accessToken !== refused && Date.now() < renewAt(session)) return session.accessToken; // renewed elsewhere
    let next: Session;
    try {
      next = await this.obtain(session);
    } catch (err) {
      if (!(err instanceof RefusedError)) throw err;
      // A newer session than the one refused (written without the lock): keep that one.
      const now = await readStored();
      const newer = now.generation !== stored.generation ? this.sameUser(now, session) : undefined;
      if (newer) return newer;
      console.warn("taskmesh: the session could not be renewed:", err.message);
      const notice = session.kind === "token" ? TOKEN_EXPIRED : ENDED;
      await this.endStored(notice, stored.generation);
      // Ended, unless a session was stored meanwhile; only the same user's token will do.
      const kept = this.current();
      if (kept && kept.sub === session.sub) return kept.accessToken;
      throw new SignedOut(notice);
    }
    const { written, stored: now } = await writeStored(next, { expected: stored.generation });
    this.take(now);
    if (written) return next.accessToken;
    // Signed out, or signed in again, meanwhile (without the lock): that stands.
    const newer = this.sameUser(now, session);
    if (newer) return newer;
    // Signed out: the tokens just obtained are nobody's now. (Not when another session is
    // stored: a new sign-in may have been given the same grant, which revoking would end.)
    if (!now.session) void this.discard(next);
    throw new SignedOut();
  }

  /** `stored`'s access token if it holds a fitting session of `session`'s user (a newer one). */
  private sameUser(stored: Stored, session: Session): string | undefined {
    const other = stored.session;
    if (!other || !this.config || !fits(other, this.config) || other.sub !== session.sub) return undefined;
    this.take(stored);
    return other.accessToken;
  }

  /** A renewed session, by the session's kind; {@link RefusedError} when refused. */
  private async obtain(session: Session): Promise<Session> {
    const config = this.config;
    let next: Session | undefined;
    if (session.kind === "oidc" && config?.signIn === "oidc") {
      if (!session.refreshToken) throw new RefusedError("no refresh token");
      const tokens = await oidc.refresh(config, session.refreshToken);
      next = sessionOf("oidc", tokens.accessToken, tokens.expiresIn, {
        name: tokens.name ?? session.name,
        // The provider rotates refresh tokens; one that does not keeps the old one valid.
        refreshToken: tokens.refreshToken ?? session.refreshToken,
        idToken: tokens.idToken ?? session.idToken,
        issuer: session.issuer,
        clientId: session.clientId,
      });
      // OpenID Connect Core §12.2: a refreshed ID token is about the same user.
      if (tokens.idSubject !== undefined && tokens.idSubject !== session.sub) {
        throw new RefusedError("the renewed ID token is about another user");
      }
    } else if (session.kind === "development") {
      // Anyone may sign in as anyone here, so renewing is signing in as the same name again.
      const user = session.name ?? session.sub;
      const { accessToken, expiresIn } = await developmentToken(user);
      next = sessionOf("development", accessToken, expiresIn, { name: user });
    } else {
      throw new RefusedError(TOKEN_EXPIRED);
    }
    if (!next) throw new RefusedError("the renewed access token is not a JWT with sub and exp");
    if (next.sub !== session.sub) throw new RefusedError("the renewed access token is for another user");
    return next;
  }

  /** Revokes the refresh token of a session nobody keeps; best effort. */
  private async discard(session: Session): Promise<void> {
    if (session.kind !== "oidc" || this.config?.signIn !== "oidc" || !session.refreshToken) return;
    try {
      await oidc.revoke(this.config, session.refreshToken);
    } catch (err) {
      console.warn("taskmesh: revoking an unused refresh token failed:", messageOf(err));
    }
  }

  /** Sends the browser to the identity provider's sign-in. */
  async beginOidc(): Promise<void> {
    if (this.config?.signIn !== "oidc") throw new Error("This server does not sign in with OpenID Connect.");
    await oidc.beginSignIn(this.config);
  }

  /**
   * Finishes a sign-in the provider sent the browser back from, if this page load is one,
   * and cleans the address (the code is single-use). Failures become the notice.
   */
  async finishOidc(): Promise<void> {
    const params = new URLSearchParams(location.search);
    if (this.config?.signIn !== "oidc" || !oidc.isRedirectBack(params)) return;
    history.replaceState(history.state, "", location.pathname + location.hash);
    try {
      const config = this.config;
      const tokens = await oidc.finishSignIn(config, params);
      const session = sessionOf("oidc", tokens.accessToken, tokens.expiresIn, {
        name: tokens.name,
        refreshToken: tokens.refreshToken,
        idToken: tokens.idToken,
        issuer: config.issuer,
        clientId: config.clientId,
      });
      if (!session) throw new Error("The identity provider's access token is not a JWT with sub and exp.");
      // The ID token says who signed in; the access token must be for that same user.
      if (tokens.idSubject !== session.sub) {
        throw new Error("The identity provider's ID token and access token are about different users.");
      }
      await this.begin(session);
    } catch (err) {
      this.reason = `Signing in failed: ${messageOf(err)}`;
      this.emit();
    }
  }

  /** Signs in with the development sign-in of `taskmesh dev`. */
  async signInDevelopment(user: string): Promise<void> {
    const { accessToken, expiresIn } = await developmentToken(user);
    // The name as typed is kept: renewing asks for it again.
    const session = sessionOf("development", accessToken, expiresIn, { name: user });
    if (!session) throw new Error("The server's development token is not a JWT with sub and exp.");
    await this.begin(session);
  }

  /** Signs in with a pasted token; throws with a sentence if it cannot be used. */
  async signInWithToken(token: string): Promise<void> {
    const c = claims(token);
    if (!c) throw new Error("That is not a JWT with `sub` and `exp` claims.");
    if (c.exp * 1000 <= Date.now()) throw new Error("That token has expired; mint a new one.");
    const session = sessionOf("token", token, undefined);
    if (session) await this.begin(session);
  }

  /**
   * Signs out in every tab. Under the session lock (so no renewal is under way, and none can
   * write its session back: the tombstone raises the generation), the stored session (the
   * freshest) is cleared everywhere; its refresh token is then revoked, and with OpenID Connect
   * the browser goes on to the provider to end its session too, and comes back to the app.
   * Whatever fails on the provider's side is said in the notice.
   */
  async signOut(): Promise<void> {
    const config = this.config;
    // This page stops using the session at once; the lock may have to wait for a renewal.
    this.signingOut = true;
    this.session = undefined;
    this.reason = SIGNING_OUT;
    this.schedule();
    this.emit();
    let ended: Session | undefined;
    try {
      ended = await withLock(async () => {
        const stored = await readStored();
        this.take((await writeStored(undefined)).stored, true);
        return stored.session;
      });
    } catch (err) {
      console.warn("taskmesh: signing out failed:", messageOf(err));
      this.signingOut = false;
      this.reason = `Signing out failed: ${messageOf(err)}`;
      this.emit();
      void this.refresh();
      return;
    }
    this.signingOut = false;
    this.reason = await this.signOutAtProvider(ended, config);
    this.emit();
  }

  /**
   * Revokes `ended`'s refresh token and goes on to the provider's sign-out page; resolves
   * with the notice if it stays here.
   */
  private async signOutAtProvider(ended: Session | undefined, config: SignInConfig | undefined): Promise<string> {
    if (ended?.kind !== "oidc" || config?.signIn !== "oidc") return "";
    let revoked = true;
    if (ended.refreshToken) {
      try {
        await oidc.revoke(config, ended.refreshToken);
      } catch (err) {
        console.warn("taskmesh: revoking the refresh token failed:", messageOf(err));
        revoked = false;
      }
    }
    let url: string | undefined;
    try {
      url = await oidc.endSessionUrl(config, ended.idToken);
    } catch (err) {
      console.warn("taskmesh: the identity provider's session could not be ended:", messageOf(err));
      return PROVIDER_UNREACHABLE;
    }
    if (!url) return revoked ? "" : NOT_REVOKED;
    // The provider's page sends the browser back: the notice waits in this tab's sessionStorage.
    if (!revoked) sessionStorage.setItem(NOTICE_KEY, NOT_REVOKED);
    location.assign(url);
    return "";
  }

  /**
   * The server refused `token` outright (not as expired): ends the session everywhere with
   * `notice` if `token` is still its token. Returns false if the session has moved on (renewed
   * or replaced meanwhile): then the caller should try again with the current one.
   */
  refused(token: string | undefined, notice: string): boolean {
    const session = this.session;
    if (!session) return true;
    if (token !== undefined && token !== session.accessToken) return false;
    this.endStored(notice, this.generation).catch((err: unknown) => {
      console.warn("taskmesh: ending the session failed:", messageOf(err));
    });
    return true;
  }

  /**
   * Ends the stored session (at generation `expected`) everywhere with `notice`. If the record
   * moved on meanwhile, it is taken instead.
   */
  private async endStored(notice: string, expected: number): Promise<void> {
    // This page stops at once, whatever storage says.
    this.session = undefined;
    this.reason = notice;
    this.schedule();
    this.emit();
    const { written, stored } = await writeStored(undefined, { expected, notice });
    this.take(stored, written);
  }

  private async begin(session: Session): Promise<void> {
    const { stored } = await writeStored(session);
    this.reason = "";
    this.take(stored);
    this.emit();
  }

  /** Reads the stored record again (another tab wrote it). */
  private async refresh(): Promise<void> {
    try {
      this.take(await readStored());
    } catch (err) {
      console.warn("taskmesh: reading the session failed:", messageOf(err));
    }
  }

  /**
   * Takes `stored` as this page's session, unless this page has seen a newer record (reads
   * may finish out of order). `own`: this page wrote it (keeps the page's notice).
   */
  private take(stored: Stored, own = false): void {
    if (stored.generation < this.generation || !this.config) return;
    if (this.signingOut && !own) return;
    this.generation = stored.generation;
    const session = stored.session && fits(stored.session, this.config) ? stored.session : undefined;
    if (!session && !own && this.session && stored.notice !== undefined) this.reason = stored.notice;
    this.adopt(session);
  }

  /** Takes `session` as this page's (stored already); listeners hear of a change. */
  private adopt(session: Session | undefined): void {
    const changed = session?.accessToken !== this.session?.accessToken;
    this.session = session;
    if (changed) this.failures = 0;
    this.schedule();
    if (changed) this.emit();
  }

  /**
   * Renews at `renewAt` (a little jitter keeps tabs apart), never sooner than half the
   * shortest lifetime after the session was obtained; retries failures with backoff.
   */
  private schedule(): void {
    clearTimeout(this.timer);
    const session = this.session;
    if (!session || !this.config || session.kind === "token") return;
    const now = Date.now();
    const lifetime = Math.max(MIN_LIFETIME_MS, session.expiresAt - session.obtainedAt);
    const due = renewAt(session) - now - Math.random() * Math.min(5000, lifetime * 0.05);
    const delay = this.failures
      ? Math.min(60_000, 1000 * 2 ** this.failures)
      : Math.min(Math.max(due, session.obtainedAt + MIN_LIFETIME_MS / 2 - now), lifetime);
    this.timer = setTimeout(
      () => {
        this.renew(session.accessToken).catch((err: unknown) => {
          if (err instanceof SignedOut) return;
          console.warn("taskmesh: renewing the sign-in failed; retrying:", messageOf(err));
          this.failures += 1;
          this.schedule();
        });
      },
      Math.min(Math.max(0, delay), 2 ** 31 - 1),
    );
  }

  private emit(): void {
    for (const listener of this.listeners) listener();
  }
}
