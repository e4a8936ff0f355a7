// OpenID Connect for the web app, a public client (no secret) of the identity provider the
// gateway names: the authorization code flow with PKCE (S256), the refresh_token grant,
// token revocation and RP-initiated logout, all through oauth4webapi.
//
// The redirect URI and the post-logout redirect URI are both the app's root on this origin.
// What the flow needs across the redirect (PKCE verifier, state, nonce) stays in this tab's
// sessionStorage; the tokens it yields are the caller's to keep (see auth.ts).

import * as oauth from "oauth4webapi";
import { RefusedError } from "./session";

/** The provider and client the gateway's sign-in configuration names. */
export interface OidcConfig {
  issuer: string;
  clientId: string;
  /** Space-separated scopes to ask for. */
  scopes: string;
}

/** What the token endpoint answered. */
export interface Tokens {
  accessToken: string;
  /** Seconds the access token lives, when the provider says. */
  expiresIn?: number;
  refreshToken?: string;
  idToken?: string;
  /** The (validated) ID token's `sub`, when there is one. */
  idSubject?: string;
  /** The ID token's `preferred_username` or `name`, when it carries one. */
  name?: string;
}

/** The app's root on this origin: where the provider sends the browser back. */
export function redirectUri(): string {
  return `${location.origin}/`;
}

const PENDING_KEY = "taskmesh.oidc.pending";
/** How long a request to the provider may take (discovery, code exchange, revocation). */
const REQUEST_TIMEOUT_MS = 15_000;
/**
 * How long a refresh may take. Aborting it does not undo it: a provider that did answer has
 * rotated the refresh token, and the new one is in the lost answer, so the session would end
 * at the next renewal. So only a long wait is cut short (the renewal holds the session lock
 * meanwhile, and every tab waits for it).
 */
const REFRESH_TIMEOUT_MS = 60_000;

interface Pending {
  issuer: string;
  clientId: string;
  verifier: string;
  state: string;
  nonce: string;
}

/** Whether `host` (a URL's hostname) is this machine. */
function isLoopback(host: string): boolean {
  return host === "localhost" || host === "[::1]" || /^127(\.\d{1,3}){3}$/.test(host);
}

/**
 * Per-request options: a timeout, and plain http only for a provider on this machine
 * (loopback, as in development and tests); anywhere else oauth4webapi insists on https.
 */
function options(
  issuer: string,
  timeoutMs = REQUEST_TIMEOUT_MS,
): { signal: () => AbortSignal; [oauth.allowInsecureRequests]: boolean } {
  const loopback = isLoopback(new URL(issuer).hostname);
  return { signal: () => AbortSignal.timeout(timeoutMs), [oauth.allowInsecureRequests]: loopback };
}

/**
 * `href` (an endpoint from the provider's metadata) if the browser may be sent there: https,
 * or http on this machine. Anything else (http elsewhere, `javascript:`, `data:`) is refused
 * with a sentence, as the metadata is only as trustworthy as the connection it came over.
 */
function navigable(href: string, what: string): string {
  const url = new URL(href);
  if (url.protocol === "https:" || (url.protocol === "http:" && isLoopback(url.hostname))) return url.href;
  throw new Error(`The identity provider's ${what} is not an https address (${url.protocol}); not going there.`);
}

const discovered = new Map<string, Promise<oauth.AuthorizationServer>>();

/** The provider's metadata (OpenID Connect Discovery), fetched once per page load. */
function discover(issuer: string): Promise<oauth.AuthorizationServer> {
  let server = discovered.get(issuer);
  if (!server) {
    const url = new URL(issuer);
    server = oauth
      .discoveryRequest(url, { ...options(issuer), algorithm: "oidc" })
      .then((response) => oauth.processDiscoveryResponse(url, response));
    // A failure is not kept: the next call asks again.
    server.catch(() => discovered.delete(issuer));
    discovered.set(issuer, server);
  }
  return server;
}

const client = (config: OidcConfig): oauth.Client => ({ client_id: config.clientId });

/** Sends the browser to the provider's sign-in; resolves only if that fails to start. */
export async function beginSignIn(config: OidcConfig): Promise<void> {
  const server = await discover(config.issuer);
  if (!server.authorization_endpoint) throw new Error("The identity provider has no authorization endpoint.");
  const methods = server.code_challenge_methods_supported;
  if (methods && !methods.includes("S256")) throw new Error("The identity provider does not support PKCE with S256.");
  const pending: Pending = {
    issuer: config.issuer,
    clientId: config.clientId,
    verifier: oauth.generateRandomCodeVerifier(),
    state: oauth.generateRandomState(),
    nonce: oauth.generateRandomNonce(),
  };
  const url = new URL(navigable(server.authorization_endpoint, "sign-in page"));
  const params = url.searchParams;
  params.set("client_id", config.clientId);
  params.set("redirect_uri", redirectUri());
  params.set("response_type", "code");
  params.set("scope", config.scopes);
  params.set("code_challenge", await oauth.calculatePKCECodeChallenge(pending.verifier));
  params.set("code_challenge_method", "S256");
  params.set("state", pending.state);
  params.set("nonce", pending.nonce);
  // OpenID Connect Core §11: a request for offline_access (refresh tokens that outlive the
  // provider's session) must ask for consent, or the provider drops the scope.
  if (config.scopes.split(/\s+/).includes("offline_access")) params.set("prompt", "consent");
  sessionStorage.setItem(PENDING_KEY, JSON.stringify(pending));
  location.assign(url.href);
}

/** Whether this page load is the provider sending the browser back (`?code=…&state=…`). */
export function isRedirectBack(params: URLSearchParams): boolean {
  return params.has("state") && (params.has("code") || params.has("error"));
}

/** Finishes the sign-in the provider sent the browser back from (`params`: the query). */
export async function finishSignIn(config: OidcConfig, params: URLSearchParams): Promise<Tokens> {
  const stored = sessionStorage.getItem(PENDING_KEY);
  sessionStorage.removeItem(PENDING_KEY);
  const pending = stored ? (JSON.parse(stored) as Pending) : undefined;
  if (!pending || pending.issuer !== config.issuer || pending.clientId !== config.clientId) {
    throw new Error("That sign-in was not started in this tab, or has expired; sign in again.");
  }
  const server = await discover(config.issuer);
  try {
    const callback = oauth.validateAuthResponse(server, client(config), params, pending.state);
    const response = await oauth.authorizationCodeGrantRequest(
      server,
      client(config),
      oauth.None(),
      callback,
      redirectUri(),
      pending.verifier,
      options(config.issuer),
    );
    const result = await oauth.processAuthorizationCodeResponse(server, client(config), response, {
      expectedNonce: pending.nonce,
      requireIdToken: true,
    });
    return tokensOf(result);
  } catch (err) {
    if (err instanceof oauth.AuthorizationResponseError) {
      throw new Error(`The identity provider refused the sign-in: ${err.error_description ?? err.error}`);
    }
    throw err;
  }
}

/**
 * The refresh_token grant; throws {@link RefusedError} when the provider refuses it (or
 * answers what cannot be used), another error when it may pass (no connection, timeout, 5xx).
 */
export async function refresh(config: OidcConfig, refreshToken: string): Promise<Tokens> {
  const server = await discover(config.issuer);
  // Failing to send, or no answer: the refresh token may still be unspent; try again later.
  const response = await oauth.refreshTokenGrantRequest(
    server,
    client(config),
    oauth.None(),
    refreshToken,
    options(config.issuer, REFRESH_TIMEOUT_MS),
  );
  try {
    return tokensOf(await oauth.processRefreshTokenResponse(server, client(config), response));
  } catch (err) {
    if (!refusal(err)) throw err;
    throw new RefusedError(err instanceof oauth.ResponseBodyError ? (err.error_description ?? err.error) : err.message);
  }
}

/**
 * Whether an answer of the token endpoint that oauth4webapi rejected is final: any 4xx (an
 * OAuth error such as invalid_grant, a 401 challenge for invalid_client, a body that is not
 * JSON), except 408 and 429, and a 200 that cannot be used (its refresh token, if any, is
 * lost with it, and the old one is spent). 5xx, 408 and 429 may pass.
 */
function refusal(err: unknown): err is Error {
  let status: number | undefined;
  if (err instanceof oauth.ResponseBodyError || err instanceof oauth.WWWAuthenticateChallengeError) status = err.status;
  else if (err instanceof oauth.OperationProcessingError && err.cause instanceof Response) status = err.cause.status;
  if (status !== undefined && (status >= 500 || status === 408 || status === 429)) return false;
  return (
    err instanceof oauth.ResponseBodyError ||
    err instanceof oauth.WWWAuthenticateChallengeError ||
    err instanceof oauth.OperationProcessingError ||
    err instanceof oauth.UnsupportedOperationError
  );
}

/** Revokes a refresh token (RFC 7009) if the provider offers that; best effort. */
export async function revoke(config: OidcConfig, refreshToken: string): Promise<void> {
  const server = await discover(config.issuer);
  if (!server.revocation_endpoint) return;
  const response = await oauth.revocationRequest(server, client(config), oauth.None(), refreshToken, {
    ...options(config.issuer),
    additionalParameters: { token_type_hint: "refresh_token" },
  });
  await oauth.processRevocationResponse(response);
}

/**
 * The provider's end-session URL (RP-initiated logout) that comes back to the app, or
 * undefined when the provider advertises none.
 */
export async function endSessionUrl(config: OidcConfig, idToken: string | undefined): Promise<string | undefined> {
  const server = await discover(config.issuer);
  if (!server.end_session_endpoint) return undefined;
  const url = new URL(navigable(server.end_session_endpoint, "sign-out page"));
  if (idToken) url.searchParams.set("id_token_hint", idToken);
  url.searchParams.set("client_id", config.clientId);
  url.searchParams.set("post_logout_redirect_uri", redirectUri());
  return url.href;
}

function tokensOf(result: oauth.TokenEndpointResponse): Tokens {
  const claims = oauth.getValidatedIdTokenClaims(result);
  const name = claims?.preferred_username ?? claims?.name;
  return {
    accessToken: result.access_token,
    expiresIn: result.expires_in,
    refreshToken: result.refresh_token,
    idToken: result.id_token,
    idSubject: claims?.sub,
    name: typeof name === "string" && name ? name : undefined,
  };
}
