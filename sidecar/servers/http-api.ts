/**
 * The session API over HTTP/JSON (--http-listen): push with PUT/POST, pull with GET, DELETE,
 * touch, and a long-poll for changes. Semantics are SessionApi's, as on gRPC; this file
 * adds transport concerns: routes (http-api-routes.ts), body limits, metrics, ETags, the
 * long-poll and draining.
 *
 * Bounds: a request body is read up to what the largest valid request needs (a part's
 * value for PUT; every part at full size, base64 included, for POST), and a longer one is
 * answered 413 without reading further; the bodies of all requests together are held to
 * `maxBufferedBodyBytes` (503 beyond it, so many slow large uploads cannot exhaust memory).
 * A parked long-poll holds no events, only a hub
 * subscription and a timer: a change wakes it, and it reads what is new from the store;
 * at most `maxLongPolls` are parked (429 beyond). On drain every parked poll is answered
 * 204 at once (the client polls again, elsewhere), new polls get 503, requests in flight
 * finish, and connections close after their answer.
 *
 * The API is for servers beside the node, not for browsers: a request with an Origin header
 * is refused (403), so a web page open on the same machine cannot write sessions with a
 * cross-site form POST (a "simple" request a browser sends without asking first).
 */
import * as http from 'node:http';
import type { Logger } from 'pino';
import { InvalidArgumentError } from '../../src/wire/errors';
import type { SessionApi } from '../../src/core/session-api';
import { forEachPart, type SessionStore } from '../../src/store/store';
import { versionTimeMs } from '../../src/store/hybrid-clock';
import { checkSessionId } from '../../src/wire/validation';
import type { WatchHub } from '../../src/core/watch-hub';
import type { ListenAddress } from '../config/config';
import { updateCartRequestFromJson, updateCartResponseJson } from './http-api-cart';
import { HTTP_API_OPENAPI } from './http-api-openapi';
import {
  DEFAULT_POLL_TIMEOUT_MS,
  etagMatches,
  HttpError,
  httpErrorOf,
  ifVersionOf,
  deadlineOf,
  parseDurationMs,
  partJson,
  putRequestFromJson,
  queryBoolean,
  queryInteger,
  queryParts,
  routeOf,
  sessionJson,
  type Route,
} from './http-api-routes';
import { resultOf, type Method, type SidecarMetrics } from '../metrics/metrics';
import { listenOn } from '../net/listen';

/** Request bytes buffered at once across all requests, by default (one largest body always fits). */
export const DEFAULT_MAX_BUFFERED_BODY_BYTES = 64 * 1024 * 1024;
/** Parked long-polls at most, by default (each costs a socket, a subscription and a timer). */
export const DEFAULT_MAX_LONG_POLLS = 16_384;
/** A client has this long to send its request headers. */
const HEADERS_TIMEOUT_MS = 15_000;
/** ... and this long to send its whole request (a large POST over a slow link included). */
const REQUEST_TIMEOUT_MS = 120_000;
/** An idle keep-alive connection is closed after this long (above common proxies' 60 s). */
const KEEP_ALIVE_TIMEOUT_MS = 65_000;
/** Body of a touch: `{ "ttl_seconds": n }` at most. */
const TOUCH_MAX_BODY_BYTES = 4096;
/** What a JSON body needs beyond its part values: names, quoting, the other fields. */
const JSON_OVERHEAD_PER_PART = 256;
const JSON_OVERHEAD = 64 * 1024;

export interface HttpApiLimits {
  maxValueBytes: number;
  maxPartsPerSession: number;
  maxLongPolls?: number;
  /** Request body bytes buffered at once across all requests; raised to the largest one body may be. */
  maxBufferedBodyBytes?: number;
}

interface ParkedPoll {
  /** Answers 204 (no change yet: poll again) unless already answered. */
  end(): void;
}

export class HttpApiServer {
  private readonly server: http.Server;
  private readonly polls = new Set<ParkedPoll>();
  private readonly openapi = Buffer.from(JSON.stringify(HTTP_API_OPENAPI));
  private readonly maxPutBodyBytes: number;
  private readonly maxPostBodyBytes: number;
  private readonly maxLongPolls: number;
  /** Operations one cart update may carry (each touches one part). */
  private readonly maxCartOperations: number;
  private readonly maxBufferedBodyBytes: number;
  /** Body bytes of requests read and not yet answered. */
  private bufferedBodyBytes = 0;
  private draining = false;
  /** The change feed refused (a store node): 412 with this message, like the other application calls. */
  private changesRefusal: string | undefined;

  constructor(
    private readonly api: SessionApi,
    private readonly store: SessionStore,
    private readonly hub: WatchHub,
    private readonly metrics: SidecarMetrics,
    private readonly log: Logger,
    limits: HttpApiLimits,
    private readonly clock: () => number = Date.now,
  ) {
    this.maxPutBodyBytes = limits.maxValueBytes;
    const perPart = Math.ceil(limits.maxValueBytes / 3) * 4 + JSON_OVERHEAD_PER_PART;
    this.maxPostBodyBytes = Math.min(perPart * limits.maxPartsPerSession + JSON_OVERHEAD, 2 ** 31 - 1);
    this.maxLongPolls = limits.maxLongPolls ?? DEFAULT_MAX_LONG_POLLS;
    this.maxCartOperations = limits.maxPartsPerSession;
    this.maxBufferedBodyBytes = Math.max(this.maxPostBodyBytes, limits.maxBufferedBodyBytes ?? DEFAULT_MAX_BUFFERED_BODY_BYTES);
    this.server = http.createServer((req, res) => this.handle(req, res));
    this.server.headersTimeout = HEADERS_TIMEOUT_MS;
    this.server.requestTimeout = REQUEST_TIMEOUT_MS;
    this.server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
  }

  listen(address: ListenAddress): Promise<number> {
    return listenOn(this.server, address);
  }

  /** Answers every parked long-poll 204, refuses new ones, and closes connections after their answers. */
  /** A store node: the change feed is an application call too (src/core/store-role.ts). */
  refuseChanges(message: string): void {
    this.changesRefusal = message;
  }

  drain(): void {
    this.draining = true;
    for (const poll of [...this.polls]) poll.end();
  }

  /** Stops accepting; requests in flight get `timeoutMs` to finish, then every connection closes. */
  close(timeoutMs: number): Promise<void> {
    this.drain();
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.server.closeAllConnections(), Math.max(0, timeoutMs));
      this.server.close(() => {
        clearTimeout(timer);
        resolve();
      });
      this.server.closeIdleConnections();
    });
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    if (this.draining) res.setHeader('connection', 'close');
    let route: Route;
    let query: URLSearchParams;
    try {
      if (req.headers.origin !== undefined) {
        throw new HttpError(403, 'forbidden', 'requests from browsers (with an Origin header) are refused: the HTTP API is for the servers beside the node');
      }
      ({ route, query } = routeOf(req.method ?? '', req.url ?? '/'));
    } catch (err) {
      this.sendError(res, err);
      req.resume();
      return;
    }
    this.serve(route, query, req, res).catch((err: unknown) => this.sendError(res, err));
  }

  private async serve(route: Route, query: URLSearchParams, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    switch (route.kind) {
      case 'openapi':
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': this.openapi.length }).end(this.openapi);
        return;
      case 'get-session': {
        const resume = queryBoolean(query, 'resume');
        const parts = queryParts(query);
        const answer = await this.run('get', (now) => this.api.get({ sessionId: route.sessionId, parts, resume }, now, deadlineOf(query, now)));
        if (!answer.found || answer.session === undefined) throw sessionNotFound();
        this.sendJson(res, 200, sessionJson(answer.session));
        return;
      }
      case 'get-part': {
        const resume = queryBoolean(query, 'resume');
        const answer = await this.run('get', (now) => this.api.get({ sessionId: route.sessionId, parts: [route.part], resume }, now, deadlineOf(query, now)));
        const part = answer.session?.parts[0];
        if (part === undefined) throw new HttpError(404, 'not_found', answer.found ? `the session has no part '${route.part}'` : 'no such session');
        const version = Number(part.version);
        const headers = {
          etag: `"${version}"`,
          'last-modified': new Date(versionTimeMs(version)).toUTCString(),
          'x-baton-owner': answer.session!.ownerNodeId,
        };
        if (etagMatches(header(req, 'if-none-match'), version)) {
          res.writeHead(304, headers).end();
          return;
        }
        res.writeHead(200, { ...headers, 'content-type': 'application/octet-stream', 'content-length': part.value.length }).end(part.value);
        return;
      }
      case 'put-part': {
        const ifVersion = ifVersionOf(header(req, 'if-match'), header(req, 'if-none-match'));
        const ttlSeconds = queryInteger(query, 'ttl_seconds', 0);
        const minReplicas = queryInteger(query, 'min_replicas', 0, 1024);
        const value = await this.readBody(req, res, this.maxPutBodyBytes);
        const answer = await this.run('put', (now) =>
          this.api.put({ sessionId: route.sessionId, parts: [{ name: route.part, value, ifVersion }], ttlSeconds, minReplicas }, now, deadlineOf(query, now)),
        );
        const version = answer.versions[0]!.version.toString();
        res.setHeader('etag', `"${version}"`);
        this.sendJson(res, 200, { version, replicas_acked: answer.replicasAcked });
        return;
      }
      case 'put-session': {
        const body = parseJson(await this.readBody(req, res, this.maxPostBodyBytes));
        const request = putRequestFromJson(route.sessionId, body);
        const answer = await this.run('put', (now) => this.api.put(request, now, deadlineOf(query, now)));
        const versions = Object.fromEntries(answer.versions.map((v) => [v.name, v.version.toString()]));
        this.sendJson(res, 200, { version: answer.versions[0]!.version.toString(), versions, replicas_acked: answer.replicasAcked });
        return;
      }
      case 'delete-session':
      case 'delete-part': {
        req.resume();
        const parts = route.kind === 'delete-part' ? [route.part] : [];
        const answer = await this.run('delete', (now) => this.api.delete({ sessionId: route.sessionId, parts }, now));
        if (!answer.found) throw route.kind === 'delete-part' ? new HttpError(404, 'not_found', `the session has no part '${route.part}'`) : sessionNotFound();
        this.sendJson(res, 200, { found: true });
        return;
      }
      case 'touch': {
        const body = await this.readBody(req, res, TOUCH_MAX_BODY_BYTES);
        let ttlSeconds = queryInteger(query, 'ttl_seconds', 0);
        if (body.length > 0) ttlSeconds = touchBodyTtl(parseJson(body));
        const answer = await this.run('touch', (now) => this.api.touch({ sessionId: route.sessionId, ttlSeconds }, now));
        if (!answer.found) throw sessionNotFound();
        this.sendJson(res, 200, { expires_at_unix_ms: answer.expiresAtUnixMs.toString() });
        return;
      }
      case 'changes':
        req.resume();
        this.longPoll(route.sessionId, query, res);
        return;
      case 'get-cart':
      case 'update-cart': {
        const request =
          route.kind === 'get-cart'
            ? { sessionId: route.sessionId, operations: [], ttlSeconds: 0, minReplicas: 0 }
            : updateCartRequestFromJson(route.sessionId, parseJson(await this.readBody(req, res, this.maxPostBodyBytes)), this.maxCartOperations);
        if (route.kind === 'get-cart') req.resume();
        const answer = await this.run('update_cart', (now) => this.api.updateCart(request, now, deadlineOf(query, now)));
        this.sendJson(res, 200, updateCartResponseJson(answer));
        return;
      }
    }
  }

  /**
   * GET /v1/sessions/{id}/changes?after=&timeout=: what changed after version `after`, at
   * once if anything did; else parked until a change arrives (200) or the time-out (204).
   */
  private longPoll(sessionId: string, query: URLSearchParams, res: http.ServerResponse): void {
    if (this.changesRefusal !== undefined) throw new HttpError(412, 'failed_precondition', this.changesRefusal);
    checkSessionId(sessionId);
    const after = queryInteger(query, 'after', 0);
    const timeoutText = query.get('timeout');
    const timeoutMs = timeoutText === null ? DEFAULT_POLL_TIMEOUT_MS : parseDurationMs(timeoutText, 'timeout');
    const ready = this.changesSince(sessionId, after);
    if (ready !== undefined) {
      this.sendJson(res, 200, ready);
      return;
    }
    if (this.draining) throw new HttpError(503, 'unavailable', 'the node is shutting down; poll another node');
    if (timeoutMs === 0) {
      res.writeHead(204).end();
      return;
    }
    if (this.polls.size >= this.maxLongPolls) {
      throw new HttpError(429, 'resource_exhausted', `${this.maxLongPolls} long-polls are already waiting on this node; poll again later`, { 'retry-after': '1' });
    }
    let done = false;
    let checkQueued = false;
    // Changes that arrive together (the parts of a replicated delta, a merged snapshot) are
    // published one by one as the store applies them: the waiter looks at the store once
    // they all are, and answers once.
    const check = () => {
      checkQueued = false;
      const changes = this.changesSince(sessionId, after);
      if (changes !== undefined) finish(() => this.sendJson(res, 200, changes));
    };
    const unsubscribe = this.hub.subscribe(sessionId, () => {
      if (done || checkQueued) return;
      checkQueued = true;
      queueMicrotask(check);
    });
    const timer = setTimeout(() => finish(() => res.writeHead(204).end()), timeoutMs);
    const poll: ParkedPoll = {
      end: () =>
        finish(() => {
          res.setHeader('connection', 'close');
          res.writeHead(204).end();
        }),
    };
    const finish = (answer: () => void) => {
      if (done) return;
      done = true;
      unsubscribe();
      clearTimeout(timer);
      this.polls.delete(poll);
      this.metrics.httpLongPolls.dec();
      if (!res.writableEnded && !res.destroyed) answer();
    };
    this.polls.add(poll);
    this.metrics.httpLongPolls.inc();
    res.on('close', () => finish(() => undefined));
  }

  /** What changed in the session after `after`, or undefined when nothing newer exists. */
  private changesSince(sessionId: string, after: number): Record<string, unknown> | undefined {
    const session = this.store.get(sessionId, this.clock());
    if (session === undefined) {
      // Gone (deleted, expired, evicted) since the client saw it; never seen: wait for it.
      return after > 0 ? { session_id: sessionId, found: false, version: String(after), changes: [] } : undefined;
    }
    let newest = after;
    const changes: Record<string, unknown>[] = [];
    forEachPart(session, (name, value, version, writer) => {
      if (version <= after) return;
      newest = Math.max(newest, version);
      if (value === null) changes.push({ type: 'delete', part_name: name, version: String(version) });
      else {
        const part = { name, value, version: BigInt(version), writerNodeId: writer, updatedAtUnixMs: BigInt(versionTimeMs(version)) };
        changes.push({ type: 'put', part: partJson(part) });
      }
    });
    if (changes.length === 0) return undefined;
    return { session_id: sessionId, found: true, version: String(newest), owner_node_id: session.owner, epoch: String(session.epoch), changes };
  }

  /** Body bytes buffered now, across requests (for tests). */
  get bufferedBytes(): number {
    return this.bufferedBodyBytes;
  }

  /**
   * The request body, or HttpError 413 once it is longer than `limit`, or 503 once the
   * bodies buffered across requests would pass maxBufferedBodyBytes (the rest is not read).
   * Its bytes count against that bound until the response is sent or the connection closes.
   */
  private readBody(req: http.IncomingMessage, res: http.ServerResponse, limit: number): Promise<Buffer> {
    const declared = req.headers['content-length'];
    // A body left unread would be read as the next request: a refusal closes the connection.
    if (declared !== undefined && Number(declared) > limit) {
      res.setHeader('connection', 'close');
      return Promise.reject(tooLarge(limit));
    }
    let held = 0;
    const release = () => {
      this.bufferedBodyBytes -= held;
      held = 0;
    };
    res.once('close', release);
    res.once('finish', release);
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let length = 0;
      const refuse = (err: HttpError) => {
        req.off('data', onData);
        req.pause();
        chunks.length = 0;
        release();
        res.setHeader('connection', 'close');
        reject(err);
      };
      const onData = (chunk: Buffer) => {
        length += chunk.length;
        if (length > limit) return refuse(tooLarge(limit));
        if (this.bufferedBodyBytes + chunk.length > this.maxBufferedBodyBytes) {
          return refuse(new HttpError(503, 'unavailable', `request bodies being received are over ${this.maxBufferedBodyBytes} bytes together; retry`, { 'retry-after': '1' }));
        }
        this.bufferedBodyBytes += chunk.length;
        held += chunk.length;
        chunks.push(chunk);
      };
      req.on('data', onData);
      req.once('end', () => resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, length)));
      req.once('error', reject);
    });
  }

  /** Runs one SessionApi operation with its metrics. */
  private async run<T>(method: Method, op: (now: number) => T | Promise<T>): Promise<T> {
    const started = performance.now();
    try {
      const value = await op(this.clock());
      const notFound = typeof value === 'object' && value !== null && 'found' in value && value.found === false;
      this.metrics.observe(method, notFound ? 'not_found' : 'ok', (performance.now() - started) / 1000);
      return value;
    } catch (err) {
      const e = httpErrorOf(err);
      if (e.code === 'internal') this.log.error({ err, method }, 'operation failed');
      this.metrics.observe(method, e.code === 'method_not_allowed' || e.code === 'forbidden' ? 'invalid' : resultOf(e.code), (performance.now() - started) / 1000);
      throw err;
    }
  }

  private sendJson(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
    const text = JSON.stringify(body);
    res.writeHead(status, { ...headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }).end(text);
  }

  private sendError(res: http.ServerResponse, err: unknown): void {
    const e = httpErrorOf(err);
    if (e.code === 'internal' && !(err instanceof HttpError)) this.log.error({ err }, 'HTTP request failed');
    if (res.headersSent) {
      res.destroy();
      return;
    }
    this.sendJson(res, e.status, { code: e.code, message: e.message }, e.headers);
  }
}

function header(req: http.IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value.join(', ') : value;
}

function sessionNotFound(): HttpError {
  return new HttpError(404, 'not_found', 'no such session');
}

function tooLarge(limit: number): HttpError {
  return new HttpError(413, 'resource_exhausted', `the request body is over the limit of ${limit} bytes (--max-value-bytes, --max-parts-per-session)`);
}

function parseJson(body: Buffer): unknown {
  try {
    return JSON.parse(body.toString('utf8'));
  } catch {
    throw new InvalidArgumentError('the body is not valid JSON');
  }
}

function touchBodyTtl(body: unknown): number {
  const ttl = typeof body === 'object' && body !== null && !Array.isArray(body) ? (body as Record<string, unknown>).ttl_seconds : undefined;
  if (typeof ttl !== 'number' || !Number.isSafeInteger(ttl) || ttl < 0 || Object.keys(body as object).length !== 1) {
    throw new InvalidArgumentError('a touch body is {"ttl_seconds": n} with a whole number n');
  }
  return ttl;
}
