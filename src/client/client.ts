/**
 * BatonClient: the typed Node.js client of a baton sidecar's SessionService.
 *
 * Rules and invariants:
 * - put/get/delete/touch travel on ONE long-lived Exchange stream (exchange-stream.ts), opened
 *   on first use. Each call is encoded and checked here at once, so a call the stream could
 *   not carry fails alone.
 * - request_id only increases for the client's lifetime (it is not reset with the stream), so
 *   an answer can only settle the call that asked for it; answers may come in any order.
 * - No retries. When the stream ends, its calls are rejected (never resent) and the next call
 *   opens a fresh stream; close() settles every call still pending with CANCELLED.
 * - Reconnecting (the sidecar restarted): grpc-js reconnects the channel by itself; the
 *   client reopens the stream. A new stream is opened only once the channel is READY, so a
 *   call made while the sidecar is away waits in the client's own queue, unsent, until the
 *   new stream takes it or its deadline passes. A stream that failed without answering
 *   anything delays the next one by ReconnectBackoff (50 ms doubling to 2 s, with jitter;
 *   back to 50 ms after a stream that answered). Streams are opened only for calls, so an
 *   idle client makes no attempts; close() clears the backoff timer and stops the wait.
 * - The client checks only what would break the shared stream for every caller (values the
 *   encoder refuses, requests over maxRequestBytes). Every other rule is the sidecar's, so
 *   one place decides.
 * - Options and their checks are in client-options.ts, errors in client-errors.ts (a gRPC
 *   edge: codes are gRPC status numbers), watches in session-watch.ts.
 */
import {
  Client,
  connectivityState as ConnectivityState,
  credentials as grpcCredentials,
  status as Status,
  type CallOptions,
} from '@grpc/grpc-js';
import { ReconnectBackoff } from './reconnect-backoff';
import { watchTlsResumptionStream } from './tls-resumption-calls';
import { TLS_SESSION_PART, tlsSessionStoreId, type TlsResumptionSource } from '../capture/tls-resumption-source';
import type { TlsResumptionSettings } from '../gen/baton/v1/session';
import type { AuthState, CartState, TcpConnectionState, TlsSessionState } from '../gen/baton/v1/parts';
import {
  SessionServiceService,
  type PutRequest,
  type PutResponse,
  type Session,
  type TouchResponse,
  type CartOperation,
  type UpdateCartRequest,
  type UpdateCartResponse,
} from '../gen/baton/v1/session';
import {
  decodeWellKnownPart,
  encodeWellKnownPart,
  type WellKnownPartMessage,
  type WellKnownPartName,
} from './client-parts';
import { BatonClientError, closedError, messageOf, toClientError } from './client-errors';
import {
  checkDeadlineMs,
  checkPositiveInteger,
  checkUint32,
  DEFAULT_CHANNEL_OPTIONS,
  DEFAULT_DEADLINE_MS,
  DEFAULT_MAX_QUEUED,
  DEFAULT_MAX_REQUEST_BYTES,
  DEFAULT_RECONNECT_INITIAL_BACKOFF_MS,
  DEFAULT_RECONNECT_MAX_BACKOFF_MS,
  toPartWrites,
  type BatonClientOptions,
  type DeleteOptions,
  type GetOptions,
  type GetPartOptions,
  type PartWrite,
  type PutOptions,
  type ReconnectTimers,
  type TouchOptions,
  type UpdateCartOptions,
  type WatchOptions,
} from './client-options';
import { ExchangeStream, type Op, type ResultOf } from './exchange-stream';
import { unframedLength, writeFramedRequest } from './exchange-request-writer';
import { BatonWatch } from './session-watch';

export { BatonClientError } from './client-errors';
export {
  DEFAULT_CHANNEL_OPTIONS,
  DEFAULT_DEADLINE_MS,
  DEFAULT_MAX_QUEUED,
  DEFAULT_MAX_REQUEST_BYTES,
  DEFAULT_RECONNECT_INITIAL_BACKOFF_MS,
  DEFAULT_RECONNECT_MAX_BACKOFF_MS,
  type BatonClientOptions,
  type CallDeadlineOption,
  type DeleteOptions,
  type GetOptions,
  type GetPartOptions,
  type PartWrite,
  type PutOptions,
  type ReconnectOptions,
  type ReconnectTimers,
  type TouchOptions,
  type UpdateCartOptions,
  type WatchOptions,
} from './client-options';
export { BatonWatch } from './session-watch';
export { WELL_KNOWN_PARTS, type WellKnownPartMessage, type WellKnownPartName } from './client-parts';
export {
  EventType,
  type Part,
  type PartVersion,
  type PutResponse,
  type Session,
  type TouchResponse,
  type WatchEvent,
  type CartOperation,
  type UpdateCartResponse,
} from '../gen/baton/v1/session';

/** How long a TLS handshake waits for a stored session before it goes on with a full one. */
const TLS_SESSION_LOAD_DEADLINE_MS = 1000;

/** What each call resolves with, taken from the sidecar's result. */
const PUT_RESPONSE = (result: ResultOf<'put'>): PutResponse => result.put;
const GET_SESSION = (result: ResultOf<'get'>): Session | undefined => (result.get.found ? result.get.session : undefined);
const DELETE_FOUND = (result: ResultOf<'delete'>): boolean => result.delete.found;
const TOUCH_RESPONSE = (result: ResultOf<'touch'>): TouchResponse => result.touch;


/**
 * The client of one sidecar. Share one instance per process; call close() when done, since
 * the open Exchange stream (and any watch) keeps the event loop alive.
 */
export class BatonClient implements TlsResumptionSource {
  private readonly grpc: Client;
  private readonly defaultDeadlineMs: number;
  private readonly maxQueued: number;
  private readonly maxRequestBytes: number;
  private exchange: ExchangeStream | undefined;
  private nextRequestId = 1n;
  private readonly watches = new Set<BatonWatch>();
  private closed = false;
  private readonly backoff: ReconnectBackoff;
  private readonly timers: ReconnectTimers;
  /** Set while the next stream must wait after a failed one; the waiting stream opens when it fires. */
  private backoffTimer: unknown;

  /** `address`: `host:port` (e.g. `127.0.0.1:7400`) or `unix:/path/to/socket`. */
  constructor(address: string, options: BatonClientOptions = {}) {
    this.defaultDeadlineMs = options.defaultDeadlineMs ?? DEFAULT_DEADLINE_MS;
    checkDeadlineMs(this.defaultDeadlineMs, 'defaultDeadlineMs');
    this.maxQueued = options.maxQueued ?? DEFAULT_MAX_QUEUED;
    checkPositiveInteger(this.maxQueued, 'maxQueued');
    this.maxRequestBytes = options.maxRequestBytes ?? DEFAULT_MAX_REQUEST_BYTES;
    checkPositiveInteger(this.maxRequestBytes, 'maxRequestBytes');
    const reconnect = options.reconnect ?? {};
    const initialMs = reconnect.initialBackoffMs ?? DEFAULT_RECONNECT_INITIAL_BACKOFF_MS;
    const maxMs = reconnect.maxBackoffMs ?? Math.max(initialMs, DEFAULT_RECONNECT_MAX_BACKOFF_MS);
    checkDeadlineMs(initialMs, 'reconnect.initialBackoffMs');
    checkDeadlineMs(maxMs, 'reconnect.maxBackoffMs');
    if (maxMs < initialMs) {
      throw new BatonClientError(Status.INVALID_ARGUMENT, `reconnect.maxBackoffMs (${maxMs}) is less than reconnect.initialBackoffMs (${initialMs})`);
    }
    this.backoff = new ReconnectBackoff({ initialMs, maxMs }, reconnect.random ?? Math.random);
    this.timers = reconnect.timers ?? { setTimeout: (fn, ms) => setTimeout(fn, ms), clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout) };
    this.grpc = new Client(address, options.credentials ?? grpcCredentials.createInsecure(), {
      ...DEFAULT_CHANNEL_OPTIONS,
      'grpc.initial_reconnect_backoff_ms': initialMs,
      'grpc.max_reconnect_backoff_ms': maxMs,
      ...options.channelOptions,
    });
  }

  /** Writes parts of a session atomically. */
  put(sessionId: string, parts: Record<string, Uint8Array> | readonly PartWrite[], options: PutOptions = {}): Promise<PutResponse> {
    try {
      const put: PutRequest = {
        sessionId,
        parts: toPartWrites(parts, options.ifVersions),
        ttlSeconds: checkUint32(options.ttlSeconds ?? 0, 'ttlSeconds'),
        minReplicas: checkUint32(options.minReplicas ?? 0, 'minReplicas'),
      };
      return this.send({ $case: 'put', put }, options.deadlineMs, PUT_RESPONSE);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Reads a session (all parts, or the named ones); undefined when the sidecar does not have it. */
  get(sessionId: string, options: GetOptions = {}): Promise<Session | undefined> {
    try {
      const get = { sessionId, parts: options.parts ? [...options.parts] : [], resume: options.resume ?? false };
      return this.send({ $case: 'get', get }, options.deadlineMs, GET_SESSION);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Deletes a session, or the named parts of it; true if any of it existed. */
  delete(sessionId: string, options: DeleteOptions = {}): Promise<boolean> {
    try {
      const request = { sessionId, parts: options.parts ? [...options.parts] : [] };
      return this.send({ $case: 'delete', delete: request }, options.deadlineMs, DELETE_FOUND);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Refreshes a session's idle expiry. */
  touch(sessionId: string, options: TouchOptions = {}): Promise<TouchResponse> {
    try {
      const touch = { sessionId, ttlSeconds: checkUint32(options.ttlSeconds ?? 0, 'ttlSeconds') };
      return this.send({ $case: 'touch', touch }, options.deadlineMs, TOUCH_RESPONSE);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * Applies item-level operations to a session's merged cart (add, set quantity, remove,
   * billing address, currency) and resolves to the cart the sidecar then holds. Pods that
   * update one cart concurrently keep each other's items; no operations only reads the cart.
   * A unary call (not on the Exchange stream): carts change at the pace of people.
   */
  async updateCart(sessionId: string, operations: readonly CartOperation[], options: UpdateCartOptions = {}): Promise<UpdateCartResponse> {
    if (this.closed) throw closedError();
    const request: UpdateCartRequest = {
      sessionId,
      operations: [...operations],
      ttlSeconds: checkUint32(options.ttlSeconds ?? 0, 'ttlSeconds'),
      minReplicas: checkUint32(options.minReplicas ?? 0, 'minReplicas'),
    };
    const deadlineMs = options.deadlineMs ?? this.defaultDeadlineMs;
    checkDeadlineMs(deadlineMs, 'deadlineMs');
    const method = SessionServiceService.updateCart;
    return new Promise((resolve, reject) => {
      this.grpc.makeUnaryRequest(method.path, method.requestSerialize, method.responseDeserialize, request, { deadline: Date.now() + deadlineMs }, (err, response) => {
        if (err !== null || response === undefined) reject(toClientError(err, 'UpdateCart failed'));
        else resolve(response);
      });
    });
  }

  /**
   * Streams changes to one session, or to every session when `sessionId` is ''. Await
   * `ready()` before writing to be sure the watch sees the write. A watch is not reopened:
   * when the sidecar ends it (a drain, a restart) or cannot be reached, iteration throws a
   * BatonClientError with code UNAVAILABLE; events in between are not replayed, so read the
   * session again and watch again.
   */
  watch(sessionId: string, options: WatchOptions = {}): BatonWatch {
    if (this.closed) throw closedError();
    const callOptions: CallOptions = {};
    if (options.deadlineMs !== undefined) {
      checkDeadlineMs(options.deadlineMs, 'deadlineMs');
      callOptions.deadline = Date.now() + options.deadlineMs;
    }
    const method = SessionServiceService.watch;
    const stream = this.grpc.makeServerStreamRequest(
      method.path,
      method.requestSerialize,
      method.responseDeserialize,
      { sessionId },
      callOptions,
    );
    const watch = new BatonWatch(stream, () => this.watches.delete(watch));
    this.watches.add(watch);
    return watch;
  }

  /**
   * Streams the cluster's TLS resumption settings (ticket keys, session id context) from the
   * sidecar: once known, then at every change; reopens the stream after a failure. For
   * attachTlsResumption; returns a function that stops it.
   */
  watchTlsResumption(onSettings: (settings: TlsResumptionSettings) => void, onError: (err: Error) => void = () => undefined): () => void {
    if (this.closed) throw closedError();
    return watchTlsResumptionStream(this.grpc, onSettings, onError);
  }

  /** Stores a TLS 1.2 session under its id (for attachTlsResumption). */
  async saveTlsSession(sessionId: Buffer, session: Buffer, lifetimeSeconds: number): Promise<void> {
    await this.put(tlsSessionStoreId(sessionId), [{ name: TLS_SESSION_PART, value: session }], { ttlSeconds: lifetimeSeconds });
  }

  /** A stored TLS 1.2 session, pulled from peers when this sidecar lacks it (for attachTlsResumption). */
  async loadTlsSession(sessionId: Buffer): Promise<Buffer | undefined> {
    const session = await this.get(tlsSessionStoreId(sessionId), { parts: [TLS_SESSION_PART], resume: true, deadlineMs: TLS_SESSION_LOAD_DEADLINE_MS });
    const value = session?.parts.find((p) => p.name === TLS_SESSION_PART)?.value;
    return value === undefined ? undefined : Buffer.from(value);
  }

  /** Writes one well-known part from its typed message. */
  async putPart<K extends WellKnownPartName>(
    sessionId: string,
    name: K,
    state: WellKnownPartMessage<K>,
    options?: PutOptions,
  ): Promise<PutResponse> {
    let value: Uint8Array;
    try {
      value = encodeWellKnownPart(name, state);
    } catch (err) {
      throw new BatonClientError(Status.INVALID_ARGUMENT, `part '${name}' does not encode: ${messageOf(err)}`, {
        cause: err,
      });
    }
    return this.put(sessionId, [{ name, value }], options);
  }

  /** Reads one well-known part as its typed message; undefined when the session or the part is missing. */
  async getPart<K extends WellKnownPartName>(
    sessionId: string,
    name: K,
    options: GetPartOptions = {},
  ): Promise<WellKnownPartMessage<K> | undefined> {
    const session = await this.get(sessionId, { ...options, parts: [name] });
    const part = session?.parts.find((p) => p.name === name);
    if (part === undefined) return undefined;
    try {
      return decodeWellKnownPart(name, part.value);
    } catch (err) {
      throw new BatonClientError(Status.INTERNAL, `stored part '${name}' does not decode: ${messageOf(err)}`, {
        cause: err,
      });
    }
  }

  putTls(sessionId: string, state: TlsSessionState, options?: PutOptions): Promise<PutResponse> {
    return this.putPart(sessionId, 'tls', state, options);
  }
  getTls(sessionId: string, options?: GetPartOptions): Promise<TlsSessionState | undefined> {
    return this.getPart(sessionId, 'tls', options);
  }
  putAuth(sessionId: string, state: AuthState, options?: PutOptions): Promise<PutResponse> {
    return this.putPart(sessionId, 'auth', state, options);
  }
  getAuth(sessionId: string, options?: GetPartOptions): Promise<AuthState | undefined> {
    return this.getPart(sessionId, 'auth', options);
  }
  putCart(sessionId: string, state: CartState, options?: PutOptions): Promise<PutResponse> {
    return this.putPart(sessionId, 'cart', state, options);
  }
  getCart(sessionId: string, options?: GetPartOptions): Promise<CartState | undefined> {
    return this.getPart(sessionId, 'cart', options);
  }
  putTcp(sessionId: string, state: TcpConnectionState, options?: PutOptions): Promise<PutResponse> {
    return this.putPart(sessionId, 'tcp', state, options);
  }
  getTcp(sessionId: string, options?: GetPartOptions): Promise<TcpConnectionState | undefined> {
    return this.getPart(sessionId, 'tcp', options);
  }

  /**
   * Rejects calls still pending with CANCELLED, cancels the Exchange stream and every watch,
   * and closes the channel. Later calls reject with CANCELLED.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.timers.clearTimeout(this.backoffTimer);
    this.backoffTimer = undefined;
    this.exchange?.abort(Status.CANCELLED, 'the BatonClient was closed');
    this.exchange = undefined;
    for (const watch of this.watches) watch.cancel();
    this.watches.clear();
    this.grpc.close();
  }

  /**
   * Queues one operation on the Exchange stream; throws (the public methods turn it into a
   * rejection) when it cannot be sent. The promise resolves with `unwrap` of the result.
   */
  private send<O extends Op, T>(op: O, deadlineMs: number | undefined, unwrap: (result: ResultOf<O['$case']>) => T): Promise<T> {
    if (this.closed) throw closedError();
    const deadline = deadlineMs ?? this.defaultDeadlineMs;
    checkDeadlineMs(deadline, 'deadlineMs');
    const requestId = this.nextRequestId++;
    let bytes: Buffer;
    try {
      bytes = writeFramedRequest(requestId, op, deadline);
    } catch (err) {
      throw new BatonClientError(Status.INVALID_ARGUMENT, `${op.$case} request is invalid: ${messageOf(err)}`, {
        cause: err,
      });
    }
    const requestBytes = unframedLength(bytes);
    if (requestBytes > this.maxRequestBytes) {
      throw new BatonClientError(
        Status.RESOURCE_EXHAUSTED,
        `${op.$case} request is ${requestBytes} bytes, over maxRequestBytes (${this.maxRequestBytes})`,
      );
    }
    return this.currentExchange().enqueue<O['$case'], T>(requestId, op.$case, bytes, deadline, unwrap);
  }

  /** The stream calls go on: the open one, or a new one that opens when it can. */
  private currentExchange(): ExchangeStream {
    const current = this.exchange;
    if (current !== undefined && !current.ended) return current;
    const stream: ExchangeStream = new ExchangeStream(this.maxQueued, (answered) => this.onExchangeEnded(stream, answered));
    this.exchange = stream;
    if (this.backoffTimer === undefined) this.openWhenReady(stream);
    return stream;
  }

  private onExchangeEnded(stream: ExchangeStream, answered: boolean): void {
    if (this.closed || stream !== this.exchange) return;
    if (answered) {
      this.backoff.reset();
      return;
    }
    this.backoffTimer = this.timers.setTimeout(() => {
      this.backoffTimer = undefined;
      const waiting = this.exchange;
      if (!this.closed && waiting !== undefined && waiting.phase === 'waiting') this.openWhenReady(waiting);
    }, this.backoff.fail());
  }

  /**
   * Opens the stream once the channel is READY. grpc-js connects (and reconnects, with its
   * own backoff) when asked; each state change calls back once, so this waits without polling.
   */
  private openWhenReady(stream: ExchangeStream): void {
    stream.phase = 'connecting';
    const channel = this.grpc.getChannel();
    const check = (): void => {
      if (this.closed || stream.ended) return;
      const state = channel.getConnectivityState(true);
      if (state === ConnectivityState.SHUTDOWN) return;
      if (state !== ConnectivityState.READY) {
        channel.watchConnectivityState(state, Infinity, check);
        return;
      }
      const method = SessionServiceService.exchange;
      stream.attach(
        this.grpc.makeBidiStreamRequest(method.path, (encodedRequest: Buffer) => encodedRequest, method.responseDeserialize),
      );
    };
    check();
  }
}
