/**
 * BatonClient: the typed Node.js client of a baton sidecar's SessionService.
 *
 * Rules and invariants:
 * - put/get/delete/touch travel on ONE long-lived Exchange stream, opened on first use. Each
 *   call is encoded at once; calls made in the same tick are queued and written together in
 *   one corked flush on process.nextTick. Writing stops when write() returns false and
 *   resumes on 'drain'; at most maxQueued calls wait to be written, later ones are refused.
 * - request_id only increases for the client's lifetime (it is not reset with the stream), so
 *   an answer can only settle the call that asked for it; answers may come in any order.
 * - Every call settles exactly once: by its answer, an OperationError, its deadline (counted
 *   from the call, queueing included), the end of its stream, or close(). An answer that
 *   comes after the deadline is dropped. Deadlines share one timer per stream: calls are
 *   grouped by deadline length, so each group expires in the order its calls were made and
 *   only the head of each group needs watching (a timer per call was a tenth of the
 *   client's CPU at 70k calls/s).
 * - No retries. When the stream ends, its calls are rejected (never resent: the sidecar may
 *   have applied them; the error says whether a call had been sent) and the next call opens
 *   a fresh stream.
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
 * - This file is a gRPC edge: BatonClientError.code is a gRPC status number, unlike the
 *   string codes of src/wire/errors.ts that the sidecar uses internally.
 */
import {
  Client,
  connectivityState as ConnectivityState,
  credentials as grpcCredentials,
  status as Status,
  type CallOptions,
  type ChannelCredentials,
  type ChannelOptions,
  type ClientDuplexStream,
  type ClientReadableStream,
  type StatusObject,
} from '@grpc/grpc-js';
import { encodeToBuffer } from '../wire/proto-writer';
import { ReconnectBackoff } from './reconnect-backoff';
import { watchTlsResumptionStream } from './tls-resumption-calls';
import { TLS_SESSION_PART, tlsSessionStoreId, type TlsResumptionSource } from '../capture/tls-resumption-source';
import type { TlsResumptionSettings } from '../gen/baton/v1/session';
import type { AuthState, CartState, TcpConnectionState, TlsSessionState } from '../gen/baton/v1/parts';
import {
  ExchangeRequest,
  SessionServiceService,
  type ExchangeResponse,
  type OperationError,
  type PutRequest,
  type PutResponse,
  type Session,
  type TouchResponse,
  type CartOperation,
  type UpdateCartRequest,
  type UpdateCartResponse,
  type WatchEvent,
} from '../gen/baton/v1/session';
import {
  decodeWellKnownPart,
  encodeWellKnownPart,
  type WellKnownPartMessage,
  type WellKnownPartName,
} from './client-parts';

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

/** A failed call. `code` is a gRPC status code (`status` in @grpc/grpc-js). */
export class BatonClientError extends Error {
  /** gRPC status code: 3 invalid argument, 4 deadline exceeded, 9 failed precondition, 14 unavailable, … */
  readonly code: number;

  constructor(code: number, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'BatonClientError';
    this.code = code;
  }
}

export interface BatonClientOptions {
  /** Channel credentials. Default: insecure, as the sidecar listens on localhost or a unix socket. */
  credentials?: ChannelCredentials;
  /** Deadline of each put/get/delete/touch in milliseconds, unless the call gives its own. Default 5000. */
  defaultDeadlineMs?: number;
  /**
   * Most calls waiting to be written to the stream (encoded but not yet handed to gRPC); a call
   * beyond it is rejected with RESOURCE_EXHAUSTED. Default 100000.
   */
  maxQueued?: number;
  /**
   * Largest encoded request in bytes. A larger one is rejected alone (RESOURCE_EXHAUSTED) rather
   * than sent, since the sidecar would end the stream every call shares. Keep it at or below the
   * sidecar's grpc.max_receive_message_length. Default 4 MiB, gRPC's default.
   */
  maxRequestBytes?: number;
  /** grpc-js channel options, applied over DEFAULT_CHANNEL_OPTIONS. */
  channelOptions?: ChannelOptions;
  /** How the Exchange stream is reopened after it failed; see ReconnectOptions. */
  reconnect?: ReconnectOptions;
}

/**
 * Reopening the Exchange stream. The channel's own reconnection (grpc-js, between TCP or unix
 * socket connection attempts) is set by the channel options grpc.initial_reconnect_backoff_ms
 * and grpc.max_reconnect_backoff_ms, which default to the same numbers.
 */
export interface ReconnectOptions {
  /** Wait after a stream failed without answering anything, in ms; doubles with each such failure in a row. Default 50. */
  initialBackoffMs?: number;
  /** Longest wait between two stream attempts, in ms. Default 2000. */
  maxBackoffMs?: number;
  /** Jitter source, uniform in [0, 1). Default Math.random. */
  random?: () => number;
  /** Timer functions for the backoff wait; default the global ones (tests pass virtual time). */
  timers?: ReconnectTimers;
}

export interface ReconnectTimers {
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const DEFAULT_RECONNECT_INITIAL_BACKOFF_MS = 50;
export const DEFAULT_RECONNECT_MAX_BACKOFF_MS = 2000;

export const DEFAULT_DEADLINE_MS = 5000;
export const DEFAULT_MAX_QUEUED = 100_000;
export const DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024;

export const DEFAULT_CHANNEL_OPTIONS: Readonly<ChannelOptions> = {
  // The client never retries (see the header); turning grpc-js retries and channelz off
  // removes their per-call bookkeeping (about 8% faster in the team's measurement).
  'grpc.enable_retries': 0,
  'grpc.enable_channelz': 0,
  // Node's HTTP/2 receive windows are 64 KiB per stream and per connection: one batch of
  // 64 one-KiB answers would stall the sidecar until this client's WINDOW_UPDATE came back.
  'grpc-node.flow_control_window': 1024 * 1024,
  // Find a dead connection under an idle Exchange stream within ~40 s. grpc-js servers
  // accept pings this often; pings only go out while a call is open.
  'grpc.keepalive_time_ms': 30_000,
  'grpc.keepalive_timeout_ms': 10_000,
  'grpc.keepalive_permit_without_calls': 0,
  // grpc-js waits 1 s doubling (×1.6) to 120 s between connection attempts: after a sidecar
  // restart that took a few seconds, calls would wait up to two minutes for a sidecar that
  // is back. The sidecar is local and a refused connection costs next to nothing.
  'grpc.initial_reconnect_backoff_ms': DEFAULT_RECONNECT_INITIAL_BACKOFF_MS,
  'grpc.max_reconnect_backoff_ms': DEFAULT_RECONNECT_MAX_BACKOFF_MS,
};

export interface CallDeadlineOption {
  /** This call's deadline in milliseconds; default BatonClientOptions.defaultDeadlineMs. */
  deadlineMs?: number;
}

/** One part to write. `ifVersion` makes the whole put conditional (0n: the part must not exist). */
export interface PartWrite {
  name: string;
  value: Uint8Array;
  ifVersion?: bigint;
}

export interface PutOptions extends CallDeadlineOption {
  /** Idle expiry in seconds; 0 or absent: the sidecar's default. */
  ttlSeconds?: number;
  /** Secondaries that must acknowledge before the put resolves; default 0. */
  minReplicas?: number;
  /**
   * Expected current version per part name (compare-and-set; 0n: the part must not exist).
   * Every name must be a part of this put; a PartWrite's own ifVersion takes precedence.
   */
  ifVersions?: Record<string, bigint>;
}

export interface GetOptions extends CallDeadlineOption {
  /** Parts to read; absent or empty: all parts. */
  parts?: readonly string[];
  /** Let the sidecar fetch missing parts from peers and claim the session. */
  resume?: boolean;
}

export type GetPartOptions = Omit<GetOptions, 'parts'>;

export interface DeleteOptions extends CallDeadlineOption {
  /** Parts to delete; absent or empty: the whole session. */
  parts?: readonly string[];
}

export interface UpdateCartOptions extends CallDeadlineOption {
  /** Idle expiry in seconds; 0 or absent: the session's current TTL (or the sidecar's default). */
  ttlSeconds?: number;
  /** Secondaries that must acknowledge before the update resolves; default 0. */
  minReplicas?: number;
}

export interface TouchOptions extends CallDeadlineOption {
  /** New idle expiry in seconds; 0 or absent: the session's current TTL. */
  ttlSeconds?: number;
}

export interface WatchOptions {
  /** Ends the watch with DEADLINE_EXCEEDED after this many milliseconds; default: no deadline. */
  deadlineMs?: number;
}

type Op = NonNullable<ExchangeRequest['op']>;
type OpKind = Op['$case'];
type OpResult = Exclude<NonNullable<ExchangeResponse['result']>, { $case: 'error' }>;
type ResultOf<K extends OpKind> = Extract<OpResult, { $case: K }>;

/** How long a TLS handshake waits for a stored session before it goes on with a full one. */
const TLS_SESSION_LOAD_DEADLINE_MS = 1000;

// setTimeout's largest delay; a longer one fires at once.
const MAX_TIMER_MS = 2 ** 31 - 1;
const MAX_UINT32 = 2 ** 32 - 1;

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
  async put(
    sessionId: string,
    parts: Record<string, Uint8Array> | readonly PartWrite[],
    options: PutOptions = {},
  ): Promise<PutResponse> {
    const put: PutRequest = {
      sessionId,
      parts: toPartWrites(parts, options.ifVersions),
      ttlSeconds: checkUint32(options.ttlSeconds ?? 0, 'ttlSeconds'),
      minReplicas: checkUint32(options.minReplicas ?? 0, 'minReplicas'),
    };
    return (await this.send({ $case: 'put', put }, options.deadlineMs)).put;
  }

  /** Reads a session (all parts, or the named ones); undefined when the sidecar does not have it. */
  async get(sessionId: string, options: GetOptions = {}): Promise<Session | undefined> {
    const get = { sessionId, parts: options.parts ? [...options.parts] : [], resume: options.resume ?? false };
    const response = (await this.send({ $case: 'get', get }, options.deadlineMs)).get;
    return response.found ? response.session : undefined;
  }

  /** Deletes a session, or the named parts of it; true if any of it existed. */
  async delete(sessionId: string, options: DeleteOptions = {}): Promise<boolean> {
    const request = { sessionId, parts: options.parts ? [...options.parts] : [] };
    return (await this.send({ $case: 'delete', delete: request }, options.deadlineMs)).delete.found;
  }

  /** Refreshes a session's idle expiry. */
  async touch(sessionId: string, options: TouchOptions = {}): Promise<TouchResponse> {
    const touch = { sessionId, ttlSeconds: checkUint32(options.ttlSeconds ?? 0, 'ttlSeconds') };
    return (await this.send({ $case: 'touch', touch }, options.deadlineMs)).touch;
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

  private send<O extends Op>(op: O, deadlineMs: number | undefined): Promise<ResultOf<O['$case']>> {
    if (this.closed) throw closedError();
    const deadline = deadlineMs ?? this.defaultDeadlineMs;
    checkDeadlineMs(deadline, 'deadlineMs');
    const requestId = this.nextRequestId++;
    let bytes: Buffer;
    try {
      bytes = encodeToBuffer((w) => ExchangeRequest.encode({ requestId, op, batch: [] }, w));
    } catch (err) {
      throw new BatonClientError(Status.INVALID_ARGUMENT, `${op.$case} request is invalid: ${messageOf(err)}`, {
        cause: err,
      });
    }
    if (bytes.length > this.maxRequestBytes) {
      throw new BatonClientError(
        Status.RESOURCE_EXHAUSTED,
        `${op.$case} request is ${bytes.length} bytes, over maxRequestBytes (${this.maxRequestBytes})`,
      );
    }
    return this.currentExchange().enqueue<O['$case']>(requestId, op.$case, bytes, deadline);
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

interface PendingCall {
  readonly requestId: bigint;
  readonly kind: OpKind;
  /** Encoded request until it is handed to the stream. */
  bytes: Buffer | undefined;
  state: 'queued' | 'sent' | 'settled';
  /** performance.now() at which the call fails with DEADLINE_EXCEEDED. */
  readonly expiresAt: number;
  readonly deadlineMs: number;
  resolve(result: OpResult): void;
  reject(error: BatonClientError): void;
}

/** Most operations, and bytes, in one batched ExchangeRequest. */
const MAX_BATCH_OPS = 256;
const MAX_BATCH_BYTES = 1024 * 1024;

/** Field 15 (ExchangeRequest.batch), length-delimited: the tag and the length varint. */
function batchFieldHeader(length: number): Buffer {
  const bytes = [0x7a];
  while (length > 0x7f) {
    bytes.push((length & 0x7f) | 0x80);
    length >>>= 7;
  }
  bytes.push(length);
  return Buffer.from(bytes);
}

/**
 * One Exchange call and the calls riding on it. Calls may be queued before the call exists
 * (the client is waiting for a backoff or for the channel); they are written once it is
 * attached. Once ended it stays ended; the client opens another.
 */
class ExchangeStream {
  ended = false;
  /** waiting: for the backoff timer; connecting: for the channel; open: attached to a gRPC call. */
  phase: 'waiting' | 'connecting' | 'open' = 'waiting';
  private call: ClientDuplexStream<Buffer, ExchangeResponse> | undefined;
  /** Whether the sidecar answered anything on this stream (then it was no failed attempt). */
  private answered = false;
  /** Every unsettled call of this stream, queued or sent. */
  private readonly pending = new Map<bigint, PendingCall>();
  /** The same calls by deadline length, each group in the order the calls were made. */
  private readonly byDeadline = new Map<number, Set<PendingCall>>();
  /** The one deadline timer, set for the earliest head of a group (timerAt). */
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Infinity;
  /** Calls not yet written, from queueHead on; settled ones are skipped when flushing. */
  private queue: (PendingCall | undefined)[] = [];
  private queueHead = 0;
  private queuedCount = 0;
  private flushScheduled = false;
  private awaitingDrain = false;

  constructor(
    private readonly maxQueued: number,
    /** Called once when the stream ends, with whether the sidecar answered anything on it. */
    private readonly onEnded: (answered: boolean) => void,
  ) {}

  /** Gives the stream its gRPC call and writes what queued up meanwhile. */
  attach(call: ClientDuplexStream<Buffer, ExchangeResponse>): void {
    this.call = call;
    this.phase = 'open';
    call.on('data', (response: ExchangeResponse) => {
      this.answered = true;
      this.onResponse(response);
    });
    // Stays attached after the end: an 'error' without a listener would throw.
    call.on('error', (err: Partial<StatusObject>) => {
      this.end(streamFailureCode(err.code), `the Exchange stream to the sidecar failed: ${err.details ?? String(err)}`);
    });
    call.on('status', (status: StatusObject) => {
      if (status.code === Status.OK) this.end(Status.UNAVAILABLE, 'the sidecar ended the Exchange stream (it is shutting down or restarting)');
      else this.end(streamFailureCode(status.code), `the Exchange stream to the sidecar failed: ${status.details}`);
    });
    if (this.queuedCount > 0 && !this.flushScheduled) {
      this.flushScheduled = true;
      process.nextTick(this.flush);
    }
  }

  enqueue<K extends OpKind>(requestId: bigint, kind: K, bytes: Buffer, deadlineMs: number): Promise<ResultOf<K>> {
    if (this.queuedCount >= this.maxQueued) {
      return Promise.reject(
        new BatonClientError(
          Status.RESOURCE_EXHAUSTED,
          `${this.queuedCount} calls are already waiting to be written to the sidecar (maxQueued); it is not keeping up`,
        ),
      );
    }
    return new Promise<ResultOf<K>>((resolve, reject) => {
      const pending: PendingCall = {
        requestId,
        kind,
        bytes,
        state: 'queued',
        expiresAt: performance.now() + deadlineMs,
        deadlineMs,
        // onResponse resolves only with a result whose $case equals `kind`.
        resolve: resolve as (result: OpResult) => void,
        reject,
      };
      this.pending.set(requestId, pending);
      let group = this.byDeadline.get(deadlineMs);
      if (group === undefined) {
        group = new Set();
        this.byDeadline.set(deadlineMs, group);
      }
      group.add(pending);
      if (pending.expiresAt < this.timerAt) this.armTimer(pending.expiresAt);
      this.queue.push(pending);
      this.queuedCount++;
      if (!this.flushScheduled && !this.awaitingDrain) {
        this.flushScheduled = true;
        process.nextTick(this.flush);
      }
    });
  }

  /** Ends the stream from this side: rejects every call with `code` and cancels the gRPC call. */
  abort(code: number, message: string): void {
    this.end(code, message);
    this.call?.cancel();
  }

  /**
   * Writes what is queued. Calls issued in the same tick leave together as batched
   * ExchangeRequests (field 15), because a gRPC stream's cost is per message: one message
   * carrying 64 operations costs little more than one carrying a single operation.
   */
  private readonly flush = (): void => {
    this.flushScheduled = false;
    const { call, queue } = this;
    // Not attached yet: attach() flushes.
    if (this.ended || this.awaitingDrain || call === undefined) return;
    let next = this.queueHead;
    let batch: Buffer[] = [];
    let batchBytes = 0;
    const writeBatch = (): boolean => {
      const message = batch.length === 1 ? batch[0]! : Buffer.concat(batch.flatMap((b) => [batchFieldHeader(b.length), b]));
      batch = [];
      batchBytes = 0;
      return call.write(message);
    };
    call.cork();
    while (next < queue.length) {
      const pending = queue[next];
      if (pending === undefined || pending.state !== 'queued') {
        queue[next++] = undefined;
        continue;
      }
      const bytes = pending.bytes as Buffer;
      if (batch.length > 0 && (batch.length >= MAX_BATCH_OPS || batchBytes + bytes.length > MAX_BATCH_BYTES) && !writeBatch()) {
        // This call stays queued; the rest goes out on 'drain'.
        this.awaitingDrain = true;
        call.once('drain', this.onDrain);
        break;
      }
      queue[next++] = undefined;
      pending.bytes = undefined;
      pending.state = 'sent';
      this.queuedCount--;
      batch.push(bytes);
      batchBytes += bytes.length;
    }
    if (batch.length > 0 && !writeBatch() && !this.awaitingDrain) {
      this.awaitingDrain = true;
      call.once('drain', this.onDrain);
    }
    call.uncork();
    if (this.ended) return;
    if (next === queue.length) {
      this.queue = [];
      this.queueHead = 0;
    } else if (next > 1024 && next * 2 > queue.length) {
      this.queue = queue.slice(next);
      this.queueHead = 0;
    } else {
      this.queueHead = next;
    }
  };

  private readonly onDrain = (): void => {
    this.awaitingDrain = false;
    this.flush();
  };

  private readonly onResponse = (response: ExchangeResponse): void => {
    if (response.batch.length > 0) {
      for (const one of response.batch) this.onResponse(one);
      return;
    }
    const pending = this.pending.get(response.requestId);
    // Absent: answered after its deadline (or never asked). Queued: cannot have been asked yet.
    if (pending === undefined || pending.state !== 'sent') return;
    this.settle(pending);
    const result = response.result;
    if (result === undefined) {
      pending.reject(new BatonClientError(Status.INTERNAL, `the sidecar answered a ${pending.kind} with no result`));
    } else if (result.$case === 'error') {
      pending.reject(fromOperationError(result.error));
    } else if (result.$case !== pending.kind) {
      pending.reject(
        new BatonClientError(Status.INTERNAL, `the sidecar answered a ${pending.kind} with a ${result.$case} result`),
      );
    } else {
      pending.resolve(result);
    }
  };

  private armTimer(at: number): void {
    clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(this.onTimer, Math.max(0, at - performance.now()));
  }

  /** Fails every call whose deadline has passed, then watches the earliest one left. */
  private readonly onTimer = (): void => {
    this.timer = undefined;
    this.timerAt = Infinity;
    const now = performance.now();
    let next = Infinity;
    for (const group of this.byDeadline.values()) {
      for (const pending of group) {
        if (pending.expiresAt > now) {
          next = Math.min(next, pending.expiresAt);
          break;
        }
        this.expire(pending);
      }
    }
    if (next !== Infinity) this.armTimer(next);
  };

  private expire(pending: PendingCall): void {
    if (pending.state === 'queued') {
      this.queuedCount--;
      pending.bytes = undefined;
    }
    const unsent = pending.state === 'queued';
    this.settle(pending);
    const why = !unsent ? '' : this.call === undefined ? '; it was not sent (no stream to the sidecar yet: it is unreachable or restarting)' : '; it was not sent';
    pending.reject(
      new BatonClientError(Status.DEADLINE_EXCEEDED, `${pending.kind} did not complete within its deadline of ${pending.deadlineMs} ms${why}`),
    );
  }

  private settle(pending: PendingCall): void {
    pending.state = 'settled';
    this.pending.delete(pending.requestId);
    const group = this.byDeadline.get(pending.deadlineMs)!;
    group.delete(pending);
    if (group.size === 0) this.byDeadline.delete(pending.deadlineMs);
  }

  private end(code: number, message: string): void {
    if (this.ended) return;
    this.ended = true;
    this.call?.removeListener('drain', this.onDrain);
    clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = Infinity;
    for (const pending of this.pending.values()) {
      // A sent call may have been applied before the stream broke; a queued one never left.
      const fate = pending.state === 'sent' ? 'it may or may not have been applied' : 'it was not sent';
      pending.state = 'settled';
      pending.bytes = undefined;
      pending.reject(new BatonClientError(code, `${message}; ${fate}`));
    }
    this.pending.clear();
    this.byDeadline.clear();
    this.queue = [];
    this.queueHead = 0;
    this.queuedCount = 0;
    this.onEnded(this.answered);
  }
}

/**
 * A running watch: iterate it (once) for events, await `ready()` to know the sidecar has
 * registered it, `cancel()` to stop. Iteration ends quietly after cancel() (or close()) and
 * otherwise throws a BatonClientError: its deadline, a failure, or UNAVAILABLE when the
 * sidecar ended the watch (it drains on SIGTERM) or could not be reached. A watch is never
 * reopened: changes made until a new one is ready are not seen. Leaving a `for await` loop
 * early cancels the watch.
 */
export class BatonWatch implements AsyncIterable<WatchEvent> {
  private readonly registered: Promise<void>;
  private failure: BatonClientError | undefined;
  private cancelled = false;
  private iterated = false;

  /** Made by BatonClient.watch(). */
  constructor(
    private readonly stream: ClientReadableStream<WatchEvent>,
    onFinished: () => void,
  ) {
    stream.on('error', (err: unknown) => {
      this.failure ??= toClientError(err, 'the watch failed');
    });
    this.registered = new Promise<void>((resolve, reject) => {
      // The sidecar sends response headers as soon as the watch is registered.
      stream.once('metadata', () => resolve());
      stream.once('status', (status: StatusObject) => {
        onFinished();
        reject(this.failure ?? new BatonClientError(status.code || Status.UNAVAILABLE, 'the watch ended before it was registered'));
      });
    });
    // ready() is optional; a watch that fails before anyone asks is not an unhandled rejection.
    this.registered.catch(() => undefined);
  }

  /** Resolves once the sidecar has registered the watch; rejects if the watch ends first. */
  ready(): Promise<void> {
    return this.registered;
  }

  /** Stops the watch; iteration ends without an error. */
  cancel(): void {
    this.cancelled = true;
    this.stream.cancel();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<WatchEvent, void, undefined> {
    if (this.iterated) throw new BatonClientError(Status.FAILED_PRECONDITION, 'a BatonWatch can be iterated only once');
    this.iterated = true;
    try {
      for await (const event of this.stream as AsyncIterable<WatchEvent>) yield event;
    } catch (err) {
      this.failure ??= toClientError(err, 'the watch failed');
    } finally {
      // Also runs when the consumer leaves the loop early; a finished call ignores it.
      this.stream.cancel();
    }
    if (this.cancelled) return;
    // The stream may have failed before iteration began; its 'error' was recorded, not thrown.
    // Not cancelled here, so a CANCELLED came from a sidecar that reset the stream as it stopped.
    if (this.failure?.code === Status.CANCELLED) throw new BatonClientError(Status.UNAVAILABLE, this.failure.message, { cause: this.failure });
    if (this.failure !== undefined) throw this.failure;
    // The sidecar never ends a watch on its own accord while it runs: it is going away, and
    // a loop that ended quietly would leave the application believing it still watches.
    throw new BatonClientError(Status.UNAVAILABLE, 'the sidecar ended the watch (it is shutting down or restarting); read the session again and watch again');
  }
}

function toPartWrites(
  parts: Record<string, Uint8Array> | readonly PartWrite[],
  ifVersions: Record<string, bigint> | undefined,
): PutRequest['parts'] {
  const entries: PartWrite[] = isPartWriteList(parts)
    ? [...parts]
    : Object.keys(parts).map((name) => ({ name, value: parts[name] as Uint8Array }));
  const writes: PutRequest['parts'] = [];
  for (const { name, value, ifVersion } of entries) {
    if (!(value instanceof Uint8Array)) {
      throw new BatonClientError(Status.INVALID_ARGUMENT, `part '${name}' value is not a Uint8Array`);
    }
    writes.push({
      name,
      value: Buffer.isBuffer(value) ? value : Buffer.from(value.buffer, value.byteOffset, value.byteLength),
      ifVersion: ifVersion ?? (ifVersions !== undefined && Object.hasOwn(ifVersions, name) ? ifVersions[name] : undefined),
    });
  }
  if (ifVersions !== undefined) {
    const written = new Set(writes.map((w) => w.name));
    for (const name of Object.keys(ifVersions)) {
      if (!written.has(name)) {
        throw new BatonClientError(Status.INVALID_ARGUMENT, `ifVersions names part '${name}', which this put does not write`);
      }
    }
  }
  return writes;
}

function isPartWriteList(parts: Record<string, Uint8Array> | readonly PartWrite[]): parts is readonly PartWrite[] {
  return Array.isArray(parts);
}

function fromOperationError(error: OperationError): BatonClientError {
  // An error answer with code OK would read as success to anyone testing the code.
  return new BatonClientError(error.code === Status.OK ? Status.UNKNOWN : error.code, error.message);
}

function toClientError(err: unknown, fallback: string): BatonClientError {
  if (err instanceof BatonClientError) return err;
  const status = err as Partial<StatusObject> | undefined;
  if (typeof status?.code === 'number') {
    return new BatonClientError(status.code, status.details || fallback, { cause: err });
  }
  return new BatonClientError(Status.UNKNOWN, `${fallback}: ${messageOf(err)}`, { cause: err });
}

/**
 * The code a stream's calls fail with. abort() ends the stream before it cancels the call, so
 * a CANCELLED that arrives here came from the other side (a sidecar cut off by its shutdown
 * reset the stream): for the caller the sidecar became unavailable, and nothing it did
 * cancelled the call.
 */
function streamFailureCode(code: number | undefined): number {
  return code === undefined || code === Status.CANCELLED ? Status.UNAVAILABLE : code;
}

function closedError(): BatonClientError {
  return new BatonClientError(Status.CANCELLED, 'the BatonClient is closed');
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function checkDeadlineMs(ms: number, name: string): void {
  if (!Number.isFinite(ms) || ms <= 0 || ms > MAX_TIMER_MS) {
    throw new BatonClientError(Status.INVALID_ARGUMENT, `${name} must be a number of milliseconds from 1 to ${MAX_TIMER_MS}, got ${ms}`);
  }
}

function checkPositiveInteger(value: number, name: string): void {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new BatonClientError(Status.INVALID_ARGUMENT, `${name} must be a positive integer, got ${value}`);
  }
}

function checkUint32(value: number, name: string): number {
  if (!Number.isInteger(value) || value < 0 || value > MAX_UINT32) {
    throw new BatonClientError(Status.INVALID_ARGUMENT, `${name} must be an integer from 0 to ${MAX_UINT32}, got ${value}`);
  }
  return value;
}
