// The gateway's APIs as typed clients, over grpc-web only, with the signed-in user's token.

import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { BadRequestSchema, ErrorInfoSchema } from "./gen/google/rpc/error_details_pb";
import { LiveService } from "./gen/taskmesh/gateway/v1/live_service_pb";
import { ReminderService } from "./gen/taskmesh/reminder/v1/reminder_service_pb";
import { TaskService } from "./gen/taskmesh/task/v1/task_service_pb";

/** Typed clients of the services the app uses. */
export interface Api {
  tasks: Client<typeof TaskService>;
  reminders: Client<typeof ReminderService>;
  live: Client<typeof LiveService>;
}

/**
 * Where the clients get their bearer token: read on every call, so a renewed token is used
 * at once and nothing has to be rebuilt.
 */
export interface TokenSource {
  /** The current access token (renewed first when it is due). */
  token(): Promise<string>;
  /** The server refused `refused` as expired: a newer token (renewed if need be), or throws. */
  renew(refused: string): Promise<string>;
}

/**
 * Clients that call the gateway at `baseUrl` (the page's own origin by default) with
 * `authorization: Bearer <token>` on every call: the current token, unless the call brings
 * its own (the sync engine does, to know which token a stream was opened with). A unary call
 * refused with `TOKEN_EXPIRED` (the token ran out between the check and the call, or the tab
 * slept) is sent once more with the renewed token; a stream is resumed by its reader (see
 * sync.ts), which knows its cursor.
 */
export function connect(tokens: TokenSource, baseUrl: string = location.origin): Api {
  const bearer: Interceptor = (next) => async (req) => {
    const given = /^Bearer (.+)$/.exec(req.header.get("authorization") ?? "")?.[1];
    const token = given ?? (await tokens.token());
    req.header.set("authorization", `Bearer ${token}`);
    if (req.stream) return next(req);
    try {
      return await next(req);
    } catch (err) {
      if (!isTokenExpired(err)) throw err;
      let renewed: string;
      try {
        renewed = await tokens.renew(token);
      } catch {
        throw err; // the call's own error says what happened
      }
      req.header.set("authorization", `Bearer ${renewed}`);
      return next(req);
    }
  };
  const transport = createGrpcWebTransport({ baseUrl, interceptors: [bearer] });
  return {
    tasks: createClient(TaskService, transport),
    reminders: createClient(ReminderService, transport),
    live: createClient(LiveService, transport),
  };
}

/** One `google.rpc.BadRequest.FieldViolation`: `field` is a path such as `task.title`. */
export interface Violation {
  field: string;
  description: string;
}

/** The field violations an INVALID_ARGUMENT error carries (none for other errors). */
export function violations(err: unknown): Violation[] {
  const error = ConnectError.from(err);
  if (error.code !== Code.InvalidArgument) return [];
  return error
    .findDetails(BadRequestSchema)
    .flatMap((detail) => detail.fieldViolations)
    .map(({ field, description }) => ({ field, description }));
}

/** Whether the error means the token was refused (expired, wrong signature, missing). */
export function isUnauthenticated(err: unknown): boolean {
  return ConnectError.from(err).code === Code.Unauthenticated;
}

/**
 * The `google.rpc.ErrorInfo` reason of an error (AIP-193, domain `taskmesh.dev`), e.g.
 * `TOO_MANY_STREAMS` or `RATE_LIMITED`; empty when it carries none.
 */
export function reason(err: unknown): string {
  const info = ConnectError.from(err)
    .findDetails(ErrorInfoSchema)
    .find((detail) => detail.domain === "taskmesh.dev");
  return info?.reason ?? "";
}

/** Whether the token was refused only because it expired: renewing it is the cure. */
export function isTokenExpired(err: unknown): boolean {
  return isUnauthenticated(err) && reason(err) === "TOKEN_EXPIRED";
}

/**
 * Whether a live stream was closed because the user opened more than the gateway allows
 * (this one, the oldest, made room). Other quotas (the per-user rate) pass with a retry.
 */
export function isTooManyStreams(err: unknown): boolean {
  return ConnectError.from(err).code === Code.ResourceExhausted && reason(err) === "TOO_MANY_STREAMS";
}

/** Whether the call was cancelled by our own abort signal. */
export function isCanceled(err: unknown): boolean {
  return ConnectError.from(err).code === Code.Canceled;
}

/** A sentence a person can read for any failed call. */
export function describe(err: unknown): string {
  const error = ConnectError.from(err);
  if (error.code === Code.Unknown && error.cause instanceof TypeError) {
    // fetch() itself failed: no connection, refused, or dropped.
    return `The server cannot be reached (${error.cause.message}).`;
  }
  switch (error.code) {
    case Code.Unavailable:
      return `The server cannot be reached (${error.rawMessage || "unavailable"}).`;
    case Code.Aborted:
      return "This task was changed on another device meanwhile; the list shows the current version. Try again.";
    case Code.NotFound:
      return "It no longer exists (it was deleted meanwhile).";
    case Code.Unauthenticated:
      return `Your sign-in was refused: ${error.rawMessage}`;
    case Code.PermissionDenied:
      return `Not allowed: ${error.rawMessage}`;
    default:
      return `${Code[error.code]}: ${error.rawMessage}`;
  }
}

/** A random UUID (v4) for `request_id`; works outside secure contexts too. */
export function requestId(): string {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
