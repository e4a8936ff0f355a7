// Who is signed in on this page: the session (see session.ts), its silent renewal and
// sign-out.
//
// - Renewal: before the access token runs out (see `renewAt`), and whenever the gateway
//   refuses one as expired. One tab at a time renews, under a Web Lock, and reads the stored
//   session again inside it: if another tab renewed meanwhile, that token is taken as is, so a
//   refresh token is never used twice (the provider rotates them and would revoke the grant).
// - Ending: a refused renewal signs out locally with a notice; signing out clears the session
//   everywhere and, with OpenID Connect, ends the provider's session too (RP-initiated logout).

import { Code, ConnectError } from "@connectrpc/connect";
import type { TokenSource } from "./api";
import * as oidc from "./oidc";
import {
  RefusedError,
  SESSION_KEY,
  claims,
  developmentToken,
  fits,
  newerStored,
  readStored,
  renewAt,
  sessionOf,
  store,
  withLock,
  type Session,
  type SignInConfig,
} from "./session";

export { loadConfig, type Session, type SignInConfig } from "./session";

const ENDED = "Your session ended; sign in again.";
const TOKEN_EXPIRED = "Your token expired; sign in with a new one.";

/** The session is gone (signed out here or in another tab, or it ended). */
export class SignedOut extends ConnectError {
  constructor(message = "You are signed out.") {
    super(message, Code.Unauthenticated);
  }
}

/** The session of this page: read by the API clients on every call, renewed in time. */
export class Auth implements TokenSource {
  private session: Session | undefined = readStored();
  private config: SignInConfig | undefined;
  /** Why the last session ended, for the sign-in screen. */
  private reason = "";
  private readonly listeners = new Set<() => void>();
  private timer: ReturnType<typeof setTimeout> | undefined;
  private renewing: Promise<string> | undefined;
  /** Renewals in a row that failed without an answer (provider unreachable): sets the retry. */
  private failures = 0;

  constructor() {
    addEventListener("storage", (e) => {
      if (e.key !== SESSION_KEY && e.key !== null) return;
      const stored = readStored();
      this.adopt(stored && (!this.config || fits(stored, this.config)) ? stored : undefined);
    });
  }

  /** Takes the gateway's configuration; a stored session of another kind or provider is dropped. */
  configure(config: SignInConfig): void {
    this.config = config;
    if (this.session && !fits(this.session, config)) this.end("");
    else if (this.session?.kind === "token" && this.session.expiresAt <= Date.now()) this.end(TOKEN_EXPIRED);
    else this.schedule();
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
   * A token newer than `refused`, renewing if need be: `refused` is the token the server
   * refused as expired, or the time the refused call started (its token was the one current
   * then). Throws {@link SignedOut} when the session ended, another error when the renewal
   * failed but may succeed later.
   */
  renew(refused: string | number): Promise<string> {
    this.renewing ??= withLock((waited) => this.renewLocked(refused, waited)).finally(() => {
      this.renewing = undefined;
    });
    return this.renewing;
  }

  private async renewLocked(refused: string | number, waited: boolean): Promise<string> {
    const stale = (s: Session) => (typeof refused === "string" ? s.accessToken === refused : s.obtainedAt <= refused);
    let stored = readStored();
    if (waited && stored && stale(stored)) stored = await newerStored(stored.accessToken);
    if (!stored || !this.config || !fits(stored, this.config)) {
      this.adopt(undefined);
      throw new SignedOut();
    }
    if (!stale(stored) && Date.now() < renewAt(stored)) {
      this.adopt(stored); // another tab renewed it
      return stored.accessToken;
    }
    let next: Session | undefined;
    try {
      next = await this.obtain(stored);
    } catch (err) {
      if (err instanceof RefusedError) {
        console.warn("taskmesh: the session could not be renewed:", err.message);
        const notice = stored.kind === "token" ? TOKEN_EXPIRED : ENDED;
        this.end(notice);
        throw new SignedOut(notice);
      }
      throw err;
    }
    // Signed out (or in as someone else) meanwhile, in this tab or another: keep that.
    if (readStored()?.accessToken !== stored.accessToken) {
      this.adopt(readStored());
      throw new SignedOut();
    }
    store(next);
    this.adopt(next);
    return next.accessToken;
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
    } else if (session.kind === "development") {
      // Anyone may sign in as anyone here, so renewing is signing in as the same user again.
      const { accessToken, expiresIn } = await developmentToken(session.sub);
      next = sessionOf("development", accessToken, expiresIn);
    } else {
      throw new RefusedError(TOKEN_EXPIRED);
    }
    if (!next) throw new RefusedError("the renewed access token is not a JWT with sub and exp");
    return next;
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
      this.begin(session);
    } catch (err) {
      this.reason = `Signing in failed: ${err instanceof Error ? err.message : String(err)}`;
      this.emit();
    }
  }

  /** Signs in with the development sign-in of `taskmesh dev`. */
  async signInDevelopment(user: string): Promise<void> {
    const { accessToken, expiresIn } = await developmentToken(user);
    const session = sessionOf("development", accessToken, expiresIn);
    if (!session) throw new Error("The server's development token is not a JWT with sub and exp.");
    this.begin(session);
  }

  /** Signs in with a pasted token; throws with a sentence if it cannot be used. */
  signInWithToken(token: string): void {
    const c = claims(token);
    if (!c) throw new Error("That is not a JWT with `sub` and `exp` claims.");
    if (c.exp * 1000 <= Date.now()) throw new Error("That token has expired; mint a new one.");
    const session = sessionOf("token", token, undefined);
    if (session) this.begin(session);
  }

  /**
   * Signs out in every tab; with OpenID Connect the refresh token is revoked and the browser
   * goes on to the provider to end its session there too, and comes back to the app.
   */
  async signOut(): Promise<void> {
    const session = this.session;
    const config = this.config;
    this.end("");
    if (session?.kind !== "oidc" || config?.signIn !== "oidc") return;
    try {
      if (session.refreshToken) await oidc.revoke(config, session.refreshToken);
    } catch (err) {
      console.warn("taskmesh: revoking the refresh token failed", err);
    }
    try {
      const url = await oidc.endSessionUrl(config, session.idToken);
      if (url) location.assign(url);
    } catch (err) {
      console.warn("taskmesh: the identity provider's session could not be ended", err);
    }
  }

  /** Ends the session in every tab, locally, with `notice` for the sign-in screen. */
  end(notice: string): void {
    store(undefined);
    this.reason = notice;
    this.session = undefined;
    this.schedule();
    this.emit();
  }

  private begin(session: Session): void {
    store(session);
    this.reason = "";
    this.adopt(session);
    this.emit();
  }

  /** Takes `session` as this page's (stored already); listeners hear of a new token. */
  private adopt(session: Session | undefined): void {
    const changed = session?.accessToken !== this.session?.accessToken;
    this.session = session;
    if (changed) this.failures = 0;
    this.schedule();
    if (changed) this.emit();
  }

  /** Renews at `renewAt` (a little jitter keeps tabs apart); retries failures with backoff. */
  private schedule(): void {
    clearTimeout(this.timer);
    const session = this.session;
    if (!session || !this.config || session.kind === "token") return;
    const lifetime = session.expiresAt - session.obtainedAt;
    const delay = this.failures
      ? Math.min(60_000, 1000 * 2 ** this.failures)
      : renewAt(session) - Date.now() - Math.random() * Math.min(5000, lifetime * 0.05);
    this.timer = setTimeout(
      () => {
        this.renew(session.accessToken).catch((err: unknown) => {
          if (err instanceof SignedOut) return;
          console.warn("taskmesh: renewing the sign-in failed; retrying", err);
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

