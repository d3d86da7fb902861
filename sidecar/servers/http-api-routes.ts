/**
 * The HTTP/JSON API's pure parts: which route a method and URL name, how query values and
 * JSON bodies become SessionApi requests, how baton errors become HTTP statuses, and how
 * sessions become JSON. No sockets here (http-api.ts serves them).
 *
 * Rules: a session id or part name in the path is one percent-encoded segment, decoded as
 * UTF-8 (a '/' inside an id is %2F; bytes that are not UTF-8 are a 400). 64-bit numbers
 * (versions, epochs, times) are decimal strings in JSON, as in protobuf's JSON mapping.
 * Every error leaves as `{code, message}` with the same codes as the gRPC API's.
 */
import { BatonError, InvalidArgumentError, type ErrorCode } from '../../src/wire/errors';
import type { PartWrite, PutRequest, Session } from '../../src/gen/baton/v1/session';

/** Longest a long-poll may be held (timeout=…), and the time-out when none is given. */
export const MAX_POLL_TIMEOUT_MS = 300_000;
export const DEFAULT_POLL_TIMEOUT_MS = 30_000;

export type Route =
  | { kind: 'openapi' }
  | { kind: 'get-session'; sessionId: string }
  | { kind: 'put-session'; sessionId: string }
  | { kind: 'delete-session'; sessionId: string }
  | { kind: 'touch'; sessionId: string }
  | { kind: 'changes'; sessionId: string }
  | { kind: 'get-cart'; sessionId: string }
  | { kind: 'update-cart'; sessionId: string }
  | { kind: 'get-part'; sessionId: string; part: string }
  | { kind: 'put-part'; sessionId: string; part: string }
  | { kind: 'delete-part'; sessionId: string; part: string };

/** An answer that is not a 2xx: status, stable code, message, and extra headers. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: ErrorCode | 'method_not_allowed' | 'forbidden',
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

const HTTP_STATUS_OF: Record<ErrorCode, number> = {
  invalid_argument: 400,
  not_found: 404,
  failed_precondition: 412,
  // The store refuses a write only when it cannot be held even after evicting the rest:
  // the request is too large for this node, which is what 413 says.
  resource_exhausted: 413,
  unavailable: 503,
  deadline_exceeded: 504,
  internal: 500,
};

/** Status, code and message of any error (what is not a baton error is an internal one). */
export function httpErrorOf(err: unknown): HttpError {
  if (err instanceof HttpError) return err;
  if (err instanceof BatonError) return new HttpError(HTTP_STATUS_OF[err.code], err.code, err.message);
  return new HttpError(500, 'internal', 'internal error (see the sidecar log)');
}

/** The route `method` and `url` name; throws HttpError 404/405/400. */
export function routeOf(method: string, url: string): { route: Route; query: URLSearchParams } {
  const q = url.indexOf('?');
  const path = q < 0 ? url : url.slice(0, q);
  const query = new URLSearchParams(q < 0 ? '' : url.slice(q + 1));
  const read = method === 'GET' || method === 'HEAD';
  if (path === '/v1/openapi.json') return { route: allow(read, 'GET, HEAD', { kind: 'openapi' }), query };
  const segments = path.split('/');
  // ['', 'v1', 'sessions', id, ...rest]
  if (segments.length < 4 || segments.length > 6 || segments[0] !== '' || segments[1] !== 'v1' || segments[2] !== 'sessions') {
    throw notFound(path);
  }
  const sessionId = decodeSegment(segments[3]!, 'session id');
  if (segments.length === 4) {
    if (read) return { route: { kind: 'get-session', sessionId }, query };
    if (method === 'POST') return { route: { kind: 'put-session', sessionId }, query };
    if (method === 'DELETE') return { route: { kind: 'delete-session', sessionId }, query };
    throw notAllowed('GET, HEAD, POST, DELETE');
  }
  if (segments.length === 5) {
    if (segments[4] === 'touch') return { route: allow(method === 'POST', 'POST', { kind: 'touch', sessionId }), query };
    if (segments[4] === 'changes') return { route: allow(read, 'GET', { kind: 'changes', sessionId }), query };
    if (segments[4] === 'cart') {
      if (read) return { route: { kind: 'get-cart', sessionId }, query };
      return { route: allow(method === 'POST', 'GET, HEAD, POST', { kind: 'update-cart', sessionId }), query };
    }
    throw notFound(path);
  }
  if (segments[4] !== 'parts') throw notFound(path);
  const part = decodeSegment(segments[5]!, 'part name');
  if (read) return { route: { kind: 'get-part', sessionId, part }, query };
  if (method === 'PUT') return { route: { kind: 'put-part', sessionId, part }, query };
  if (method === 'DELETE') return { route: { kind: 'delete-part', sessionId, part }, query };
  throw notAllowed('GET, HEAD, PUT, DELETE');
}

function allow(ok: boolean, allowed: string, route: Route): Route {
  if (!ok) throw notAllowed(allowed);
  return route;
}

function notAllowed(allowed: string): HttpError {
  return new HttpError(405, 'method_not_allowed', `method not allowed here; use ${allowed}`, { allow: allowed });
}

function notFound(path: string): HttpError {
  return new HttpError(404, 'not_found', `no such route ${JSON.stringify(path.slice(0, 80))}; see /v1/openapi.json`);
}

function decodeSegment(segment: string, what: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new InvalidArgumentError(`the ${what} in the path is not valid percent-encoded UTF-8`);
  }
}

/** A whole number query value in [0, max]; `fallback` when absent. */
export function queryInteger(query: URLSearchParams, name: string, fallback: number, max = Number.MAX_SAFE_INTEGER): number {
  const text = query.get(name);
  if (text === null || text === '') return fallback;
  return wholeNumber(text, name, max);
}

function wholeNumber(text: string, field: string, max = Number.MAX_SAFE_INTEGER): number {
  if (!/^\d{1,16}$/.test(text) || Number(text) > max) throw new InvalidArgumentError(`${field} ${JSON.stringify(text.slice(0, 40))} is not a whole number from 0 to ${max}`);
  return Number(text);
}

/** true/1/false/0/absent. */
export function queryBoolean(query: URLSearchParams, name: string): boolean {
  const text = query.get(name);
  if (text === null || text === '' || text === 'false' || text === '0') return false;
  if (text === 'true' || text === '1') return true;
  throw new InvalidArgumentError(`${name} ${JSON.stringify(text.slice(0, 40))} is not true or false`);
}

/**
 * The deadline of a call from its `timeout=…` (how long its caller waits, a duration), or
 * undefined without one (the API's default, 5 s). The node works within it: a resume stops
 * waiting for peers, a synchronous write for acknowledgements (at most 60 s count).
 */
export function deadlineOf(query: URLSearchParams, now: number): number | undefined {
  const text = query.get('timeout');
  return text === null ? undefined : now + parseDurationMs(text, 'timeout');
}

/** A duration: `30s`, `1500ms`, `2m`, or a bare number of seconds; in [0, MAX_POLL_TIMEOUT_MS]. */
export function parseDurationMs(text: string, field: string): number {
  const match = /^(\d{1,9}(?:\.\d{1,3})?)(ms|s|m)?$/.exec(text);
  const unit = match?.[2] ?? 's';
  const ms = match === null ? NaN : Number(match[1]) * (unit === 'ms' ? 1 : unit === 's' ? 1000 : 60_000);
  if (!(ms >= 0 && ms <= MAX_POLL_TIMEOUT_MS)) {
    throw new InvalidArgumentError(`${field} ${JSON.stringify(text.slice(0, 40))} is not a duration from 0s to ${MAX_POLL_TIMEOUT_MS / 1000}s (e.g. 30s, 500ms)`);
  }
  return Math.round(ms);
}

/** Part names listed as `parts=a,b` (several `parts` values also add up). */
export function queryParts(query: URLSearchParams): string[] {
  return query.getAll('parts').flatMap((v) => v.split(',')).filter((v) => v !== '');
}

/** The version an `If-Match: "<version>"` or `If-None-Match: *` header asks a write to find. */
export function ifVersionOf(ifMatch: string | undefined, ifNoneMatch: string | undefined): bigint | undefined {
  if (ifNoneMatch !== undefined) {
    if (ifNoneMatch.trim() !== '*') throw new InvalidArgumentError('a write takes If-None-Match: * (the part must not exist) only');
    if (ifMatch !== undefined) throw new InvalidArgumentError('If-Match and If-None-Match together');
    return 0n;
  }
  if (ifMatch === undefined) return undefined;
  const match = /^\s*"(\d{1,20})"\s*$/.exec(ifMatch);
  if (match === null) throw new InvalidArgumentError('If-Match takes one version as an entity tag: If-Match: "<version>"');
  return BigInt(match[1]!);
}

/** Whether an If-None-Match header matches the entity tag of `version` (weak tags compare too). */
export function etagMatches(ifNoneMatch: string | undefined, version: number): boolean {
  if (ifNoneMatch === undefined) return false;
  const tag = `"${version}"`;
  return ifNoneMatch.split(',').some((t) => {
    const trimmed = t.trim();
    return trimmed === '*' || trimmed === tag || trimmed === `W/${tag}`;
  });
}

/**
 * The body of `POST /v1/sessions/{id}`:
 * `{ parts: { name: "text" | { value_base64 } | { json } }, ttl_seconds?, min_replicas?, if_versions?: { name: "version" } }`.
 */
export function putRequestFromJson(sessionId: string, body: unknown): PutRequest {
  if (!isObject(body)) throw new InvalidArgumentError('the body is not a JSON object');
  for (const key of Object.keys(body)) {
    if (!['parts', 'ttl_seconds', 'min_replicas', 'if_versions'].includes(key)) throw new InvalidArgumentError(`unknown field ${JSON.stringify(key.slice(0, 40))}`);
  }
  if (!isObject(body.parts)) throw new InvalidArgumentError('parts must be an object of part name to value');
  const ifVersions = body.if_versions ?? {};
  if (!isObject(ifVersions)) throw new InvalidArgumentError('if_versions must be an object of part name to version');
  const parts: PartWrite[] = Object.entries(body.parts).map(([name, value]) => ({ name, value: valueOf(name, value), ifVersion: undefined }));
  for (const [name, version] of Object.entries(ifVersions)) {
    const part = parts.find((p) => p.name === name);
    if (part === undefined) throw new InvalidArgumentError(`if_versions names part ${JSON.stringify(name.slice(0, 64))}, which the body does not write`);
    part.ifVersion = BigInt(versionField(version, `if_versions.${name}`));
  }
  return {
    sessionId,
    parts,
    ttlSeconds: numberField(body.ttl_seconds, 'ttl_seconds'),
    minReplicas: numberField(body.min_replicas, 'min_replicas', 1024),
  };
}

function valueOf(name: string, value: unknown): Buffer {
  if (typeof value === 'string') return Buffer.from(value, 'utf8');
  if (isObject(value)) {
    const keys = Object.keys(value);
    if (keys.length === 1 && keys[0] === 'value_base64' && typeof value.value_base64 === 'string') {
      if (!/^[A-Za-z0-9+/]*={0,2}$/.test(value.value_base64) || value.value_base64.length % 4 !== 0) {
        throw new InvalidArgumentError(`part '${name.slice(0, 64)}': value_base64 is not padded base64`);
      }
      return Buffer.from(value.value_base64, 'base64');
    }
    if (keys.length === 1 && keys[0] === 'json') return Buffer.from(JSON.stringify(value.json), 'utf8');
  }
  throw new InvalidArgumentError(`part '${name.slice(0, 64)}' must be a string, {"value_base64": "…"} or {"json": …}`);
}

function numberField(value: unknown, field: string, max = Number.MAX_SAFE_INTEGER): number {
  if (value === undefined) return 0;
  if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 && value <= max) return value;
  throw new InvalidArgumentError(`${field} must be a whole number from 0 to ${max}`);
}

function versionField(value: unknown, field: string): string {
  if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0) return String(value);
  if (typeof value === 'string' && /^\d{1,20}$/.test(value)) return value;
  throw new InvalidArgumentError(`${field} must be a version: a decimal string (or a whole number)`);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** A part as JSON: the bytes in base64, and as `value` too when they are UTF-8 text. */
export function partJson(part: { name: string; value: Uint8Array; version: bigint; writerNodeId: string; updatedAtUnixMs: bigint }): Record<string, string> {
  const json: Record<string, string> = {
    name: part.name,
    value_base64: Buffer.from(part.value).toString('base64'),
    version: part.version.toString(),
    writer_node_id: part.writerNodeId,
    updated_at_unix_ms: part.updatedAtUnixMs.toString(),
  };
  try {
    json.value = strictUtf8.decode(part.value);
  } catch {
    // Not text: base64 only.
  }
  return json;
}

export function sessionJson(session: Session): Record<string, unknown> {
  return {
    session_id: session.sessionId,
    owner_node_id: session.ownerNodeId,
    epoch: session.epoch.toString(),
    expires_at_unix_ms: session.expiresAtUnixMs.toString(),
    parts: session.parts.map(partJson),
  };
}
