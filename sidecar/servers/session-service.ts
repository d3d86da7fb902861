/**
 * gRPC handlers of baton.v1.SessionService: unary calls, the Exchange stream and Watch.
 * Semantics live in src/core/session-api.ts; this file adds transport concerns: metrics,
 * status mapping, flow control and draining on shutdown.
 *
 * Exchange runs operations in the order they arrive, answers them in slices of
 * EXCHANGE_SLICE_OPS, and never ends the stream for a failed operation. When the client
 * stops reading responses, or sends faster than the operations run, the stream stops
 * reading requests until the backlog clears, so memory stays bounded. On drain, a stream
 * reads on for a moment (operations sent before the signal may still be on their way),
 * then stops reading, answers every operation it read, and ends.
 *
 * What one request may cost is bounded before it is decoded (request-limits.ts): a message
 * that holds too many elements is answered RESOURCE_EXHAUSTED (on Exchange, after the
 * answers to what came before it, and the stream ends). A watcher's unsent events are
 * bounded in bytes; a watcher that reads too slowly is ended with RESOURCE_EXHAUSTED.
 */
import { Metadata, status, type sendUnaryData, type ServerDuplexStream, type ServerUnaryCall, type ServerWritableStream } from '@grpc/grpc-js';
import type { PackageDefinition } from '@grpc/proto-loader';
import type { Logger } from 'pino';
import {
  ExchangeRequest,
  type DeleteRequest,
  ExchangeResponse,
  SessionServiceService,
  type GetRequest,
  type PutRequest,
  type SessionServiceServer,
  type TouchRequest,
  type TlsResumptionSettings,
  type UpdateCartRequest,
  type WatchEvent,
  type WatchRequest,
  type WatchTlsResumptionRequest,
} from '../../src/gen/baton/v1/session';
import type { TlsResumptionFeed } from '../../src/capture/tls-resumption-source';
import type { SessionApi } from '../../src/core/session-api';
import { readExchangeRequest, readPutRequest } from '../../src/wire/exchange-request-reader';
import { encodeToBuffer } from '../../src/wire/proto-writer';
import { checkSessionId } from '../../src/wire/validation';
import type { WatchHub } from '../../src/core/watch-hub';
import { STORE_ROLE_REFUSAL } from '../../src/core/store-role';
import { toStatus } from '../net/grpc-status';
import { resultOf, type Method, type OperationResult, type SidecarMetrics } from '../metrics/metrics';
import { EXCHANGE_MAX_BATCH_OPS, guarded, RefusedRequest, RequestScanner } from '../net/request-limits';
import { Fifo } from '../../src/core/churn-free';

/** Events a watcher may have queued, unsent, before it is dropped as too slow. */
const MAX_WATCH_BACKLOG = 10_000;
/** Bytes of events a watcher may have queued, unsent, at most (and at most 1/16 of the memory budget). */
const MAX_WATCH_BACKLOG_BYTES = 16 * 1024 * 1024;
/** What an event costs beyond its session id and value, as counted against that bound. */
const WATCH_EVENT_OVERHEAD = 64;
/** Settings messages a TLS resumption watcher may leave unread (one per rotation is the normal rate). */
const MAX_TLS_SETTINGS_BACKLOG = 64;
/** Operations of an Exchange stream answered per message (one slice per event-loop turn). */
export const EXCHANGE_SLICE_OPS = 16;
/** Operations an Exchange stream may have read and not yet run before it stops reading. */
const EXCHANGE_MAX_QUEUED_OPS = 4096;
/**
 * Operations an Exchange stream may have run and not yet answered (waiting for
 * acknowledgements, back-pressure, a look-up, the node's catch-up) before it stops reading:
 * each holds its request until answered.
 */
const EXCHANGE_MAX_WAITING_OPS = 4096;
/** How long a draining Exchange stream goes on reading what the client sent before the signal. */
const EXCHANGE_DRAIN_GRACE_MS = 250;
/** Request bytes an Exchange stream may have read and not yet run before it stops reading. */
const EXCHANGE_MAX_QUEUED_BYTES = 8 * 1024 * 1024;

/** Elements a repeated field of a request may hold before the request is refused unread. */
const REPEATED_FIELD_LIMIT = 1024;
/** Fields, nested ones included, one request message may hold (a full batch of full Puts is ~270k). */
const REQUEST_MAX_FIELDS = 512 * 1024;

/** An Exchange message as read: the request, and its size on the wire. */
export class ReceivedExchange {
  constructor(
    readonly request: ExchangeRequest,
    readonly bytes: number,
  ) {}
}

/**
 * SessionService as served: the generated definition, except that every request is scanned
 * against `scanner`'s limits before it is decoded, and a message that is refused (or does
 * not decode) reaches the handler as a RefusedRequest, in order. grpc-js would otherwise end
 * the call with INTERNAL the moment it fails to decode a message, while Exchange messages
 * read before it are still being answered; a response written after that status leaves
 * the stream without trailers, and the client waits for its deadline.
 */
export function sessionServiceDefinition(scanner: RequestScanner) {
  const same = <T>(decoded: T) => decoded;
  const s = SessionServiceService;
  return {
    ...s,
    put: {
      ...s.put,
      requestDeserialize: guarded(byHandFirst(readPutRequest, s.put), 'baton.v1.PutRequest', scanner, same),
    },
    get: { ...s.get, requestDeserialize: guarded(s.get, 'baton.v1.GetRequest', scanner, same) },
    delete: { ...s.delete, requestDeserialize: guarded(s.delete, 'baton.v1.DeleteRequest', scanner, same) },
    touch: { ...s.touch, requestDeserialize: guarded(s.touch, 'baton.v1.TouchRequest', scanner, same) },
    watch: { ...s.watch, requestDeserialize: guarded(s.watch, 'baton.v1.WatchRequest', scanner, same) },
    updateCart: { ...s.updateCart, requestDeserialize: guarded(s.updateCart, 'baton.v1.UpdateCartRequest', scanner, same) },
    watchTlsResumption: {
      ...s.watchTlsResumption,
      requestDeserialize: guarded(s.watchTlsResumption, 'baton.v1.WatchTlsResumptionRequest', scanner, same),
    },
    exchange: {
      ...s.exchange,
      requestDeserialize: guarded(byHandFirst(readExchangeRequest, s.exchange), 'baton.v1.ExchangeRequest', scanner, (request, bytes) => new ReceivedExchange(request, bytes)),
      responseSerialize: (value: ExchangeResponse): Buffer => encodeToBuffer((w) => ExchangeResponse.encode(value, w)),
    },
  } as const;
}

/**
 * A method's decoder that reads by hand first (exchange-request-reader.ts: part values as
 * views, no copies) and leaves what that reader does not read to the generated decoder.
 */
function byHandFirst<T>(read: (bytes: Buffer) => T | undefined, generated: { requestDeserialize: (bytes: Buffer) => T }) {
  return { requestDeserialize: (bytes: Buffer): T => read(bytes) ?? generated.requestDeserialize(bytes) };
}

/**
 * The scanner for SessionService requests. Its limits stop decoding bombs; they are wider
 * than what validation accepts (a Put with a few parts too many is INVALID_ARGUMENT, as
 * the contract says, not refused unread).
 */
export function sessionRequestScanner(definitions: PackageDefinition, maxPartsPerSession: number): RequestScanner {
  return new RequestScanner(
    definitions,
    { 'baton.v1.ExchangeRequest.batch': EXCHANGE_MAX_BATCH_OPS },
    Math.max(REPEATED_FIELD_LIMIT, 4 * maxPartsPerSession),
    REQUEST_MAX_FIELDS,
  );
}

type Outcome<T> = { ok: true; value: T } | { ok: false; code: status; message: string };

export class SessionServiceHandlers {
  private readonly streams = new Set<{ end(): void }>();
  private draining = false;
  private readonly watchBacklogBytes: number;
  private tlsFeed: TlsResumptionFeed | undefined;
  /** Watch refused (a store node): FAILED_PRECONDITION with this message. */
  private watchRefusal: string | undefined;

  constructor(
    private readonly api: SessionApi,
    private readonly hub: WatchHub,
    private readonly metrics: SidecarMetrics,
    private readonly log: Logger,
    maxMemoryBytes: number,
    private readonly clock: () => number = Date.now,
  ) {
    this.watchBacklogBytes = Math.max(1024 * 1024, Math.min(MAX_WATCH_BACKLOG_BYTES, Math.floor(maxMemoryBytes / 16)));
  }

  /** Where WatchTlsResumption reads the settings from (the node's ticket key keeper). */
  serveTlsResumption(feed: TlsResumptionFeed): void {
    this.tlsFeed = feed;
  }

  /** A store node: Watch is an application call too, refused like the others (src/core/store-role.ts). */
  refuseWatches(): void {
    this.watchRefusal = STORE_ROLE_REFUSAL;
  }

  /** The implementation object for server.addService. */
  implementation(): SessionServiceServer {
    return {
      put: (call, callback) =>
        this.unary('put', call, callback, (r: PutRequest, now) => this.api.put(r, now, deadlineOf(call.getDeadline()))),
      get: (call, callback) => this.unary('get', call, callback, (r: GetRequest, now) => this.api.get(r, now, deadlineOf(call.getDeadline()))),
      delete: (call, callback) => this.unary('delete', call, callback, (r: DeleteRequest, now) => this.api.delete(r, now)),
      touch: (call, callback) => this.unary('touch', call, callback, (r: TouchRequest, now) => this.api.touch(r, now)),
      watch: (call) => this.watch(call),
      watchTlsResumption: (call) => this.watchTlsResumption(call),
      exchange: (call) => this.exchange(call),
      updateCart: (call, callback) =>
        this.unary('update_cart', call, callback, (r: UpdateCartRequest, now) => this.api.updateCart(r, now, deadlineOf(call.getDeadline()))),
    };
  }

  /** Ends every open stream (after the operations already read are answered). */
  drain(): void {
    this.draining = true;
    for (const stream of [...this.streams]) stream.end();
  }

  private unary<Req, Res>(
    method: Method,
    call: ServerUnaryCall<Req, Res>,
    callback: sendUnaryData<Res>,
    run: (request: Req, now: number) => Res | Promise<Res>,
  ): void {
    const reply = (outcome: Outcome<Res>) => {
      if (outcome.ok) callback(null, outcome.value);
      else callback({ code: outcome.code, details: outcome.message });
    };
    const request: unknown = call.request;
    if (request instanceof RefusedRequest) {
      this.metrics.requestsRefused.inc();
      // Refused unread: the caller's message was at fault (an undecodable one is answered
      // INTERNAL, as grpc-js answers it, but is no internal error of the node's).
      this.metrics.countOperation(method, request.code === status.RESOURCE_EXHAUSTED ? 'exhausted' : 'invalid');
      callback({ code: request.code, details: request.details });
      return;
    }
    const outcome = this.run(method, call.request, run);
    if (outcome instanceof Promise) void outcome.then(reply);
    else reply(outcome);
  }

  /** Runs one operation with metrics; never throws, and a returned promise never rejects. */
  private run<Req, Res>(
    method: Method,
    request: Req,
    run: (request: Req, now: number) => Res | Promise<Res>,
  ): Outcome<Res> | Promise<Outcome<Res>> {
    const started = performance.now();
    try {
      const value = run(request, this.clock());
      if (value instanceof Promise) {
        return value.then(
          (v) => this.succeeded(method, v, started),
          (err: unknown) => this.failed(method, err, started),
        );
      }
      return this.succeeded(method, value, started);
    } catch (err) {
      return this.failed(method, err, started);
    }
  }

  private succeeded<Res>(method: Method, value: Res, started: number): Outcome<Res> {
    this.finish(method, isNotFound(value) ? 'not_found' : 'ok', started);
    return { ok: true, value };
  }

  private failed(method: Method, err: unknown, started: number): Outcome<never> {
    const s = toStatus(err);
    if (s.errorCode === 'internal') this.log.error({ err, method }, 'operation failed');
    this.finish(method, resultOf(s.errorCode), started);
    return { ok: false, code: s.code, message: s.details };
  }

  private finish(method: Method, result: OperationResult, started: number): void {
    this.metrics.observe(method, result, (performance.now() - started) / 1000);
  }

  private exchange(call: ServerDuplexStream<ReceivedExchange | RefusedRequest, ExchangeResponse>): void {
    this.metrics.exchangeStreams.inc();
    let ended = false;
    // Set by drain and by the client's half-close: end once everything read is answered.
    let endWhenAnswered = false;
    // On drain, operations the client sent before the signal may still be on their way (in
    // socket and HTTP/2 buffers): the stream goes on reading for EXCHANGE_DRAIN_GRACE_MS, so
    // they get their real answers too (as unary calls in flight do), then stops reading.
    let grace: NodeJS.Timeout | undefined;
    let stopReading = false;
    const entry = {
      end: () => {
        if (endWhenAnswered) return;
        endWhenAnswered = true;
        grace = setTimeout(() => {
          grace = undefined;
          stopReading = true;
          updateReading();
          endIfAnswered();
        }, EXCHANGE_DRAIN_GRACE_MS);
        endIfAnswered();
      },
    };
    this.streams.add(entry);
    // Operations read and not yet run, with the wire bytes of the messages they came in
    // (released when a message's last operation runs). A Fifo forgets each operation as it
    // runs: under a steady stream the queue may not empty for a long time, and an array
    // read with an index kept the operations it had run alive (promoted by every scavenge).
    // Each operation carries its deadline: when its client stops waiting (ms since the epoch;
    // 0 = the API's default), counted from when it was read.
    type Queued = { op: ExchangeRequest | RefusedRequest; bytes: number; deadline: number };
    let queue = new Fifo<Queued>();
    let queuedBytes = 0;
    // Reading stops while the responses are not draining (the client reads too slowly),
    // while too many operations or bytes wait to be run, or while too many operations run
    // wait for their answers; it resumes when none holds.
    let awaitingDrain = false;
    let readsPaused = false;
    /** Operations run and not yet answered. */
    let waiting = 0;
    const updateReading = () => {
      const pause =
        stopReading || awaitingDrain || queue.size >= EXCHANGE_MAX_QUEUED_OPS || queuedBytes >= EXCHANGE_MAX_QUEUED_BYTES || waiting >= EXCHANGE_MAX_WAITING_OPS;
      if (pause === readsPaused) return;
      readsPaused = pause;
      if (pause) call.pause();
      else call.resume();
    };
    const endIfAnswered = () => {
      if (ended || !endWhenAnswered || grace !== undefined || waiting > 0 || queue.size > 0) return;
      ended = true;
      call.end();
    };
    const send = (response: ExchangeResponse) => {
      if (ended) return;
      if (!call.write(response) && !awaitingDrain) {
        awaitingDrain = true;
        updateReading();
        call.once('drain', () => {
          awaitingDrain = false;
          updateReading();
          if (!pumping) pump();
        });
      }
    };
    const later = (response: Promise<ExchangeResponse>) => {
      waiting++;
      void response.then((r) => {
        send(r);
        waiting--;
        updateReading();
        endIfAnswered();
      });
    };
    // Operations run in arrival order, EXCHANGE_SLICE_OPS at a time, each slice answered by
    // one message, with a turn of the event loop between slices: the first answers reach the
    // client while the rest are computed, so client and sidecar work at the same time instead
    // of taking turns with whole batches.
    let pumping = false;
    const pump = () => {
      pumping = false;
      if (ended || awaitingDrain) return;
      const answered: ExchangeResponse[] = [];
      let refused: RefusedRequest | undefined;
      while (queue.size > 0 && answered.length < EXCHANGE_SLICE_OPS) {
        const { op, bytes, deadline } = queue.shift()!;
        queuedBytes -= bytes;
        if (op instanceof RefusedRequest) {
          refused = op;
          break;
        }
        const response = op.batch.length > 0 ? nestedBatch(op.requestId) : this.exchangeOne(op, deadline);
        if (response instanceof Promise) later(response);
        else answered.push(response);
      }
      if (answered.length === 1) send(answered[0]!);
      else if (answered.length > 1) send({ requestId: 0n, result: undefined, batch: answered });
      if (refused !== undefined) {
        // The stream cannot be read past a message that is refused or does not decode: end
        // it after the answers written so far (their request ids are unknown).
        ended = true;
        queue = new Fifo();
        queuedBytes = 0;
        this.metrics.requestsRefused.inc();
        call.emit('error', { code: refused.code, details: refused.details });
        return;
      }
      if (queue.size > 0) {
        if (!awaitingDrain) {
          pumping = true;
          setImmediate(pump);
        }
      } else {
        endIfAnswered();
      }
      updateReading();
    };
    call.on('data', (received: ReceivedExchange | RefusedRequest) => {
      if (ended) return;
      if (received instanceof RefusedRequest) queue.push({ op: received, bytes: 0, deadline: 0 });
      else {
        const { request, bytes } = received;
        const ops = request.batch.length === 0 ? [request] : request.batch;
        let readAt = 0;
        // A message's bytes are counted with its last operation, released when that one runs.
        for (let i = 0; i < ops.length; i++) {
          const op = ops[i]!;
          if (op.deadlineMs > 0 && readAt === 0) readAt = this.clock();
          queue.push({ op, bytes: i === ops.length - 1 ? bytes : 0, deadline: op.deadlineMs > 0 ? readAt + op.deadlineMs : 0 });
        }
        queuedBytes += bytes;
      }
      if (!pumping) pump();
    });
    // The client sends nothing more: what is still queued or waiting for replica
    // acknowledgements is answered, then the stream ends.
    call.on('end', () => {
      endWhenAnswered = true;
      clearTimeout(grace);
      grace = undefined;
      endIfAnswered();
    });
    let open = true;
    const close = () => {
      this.streams.delete(entry);
      clearTimeout(grace);
      ended = true;
      if (open) {
        open = false;
        this.metrics.exchangeStreams.dec();
      }
    };
    call.on('error', close);
    call.on('cancelled', close);
    call.on('close', close);
    call.on('finish', close);
    if (this.draining) entry.end();
  }

  /**
   * Runs one operation of an Exchange stream within `deadline` (ms since the epoch; 0 = the
   * API's default). One whose client stopped waiting before it could run is not run: a write
   * the client counts as failed is not made behind its back, a resume does not claim a
   * session its client went on to resume elsewhere.
   */
  private exchangeOne(request: ExchangeRequest, deadline: number): ExchangeResponse | Promise<ExchangeResponse> {
    const requestId = request.requestId;
    const op = request.op;
    if (op === undefined) {
      return { requestId, result: { $case: 'error', error: { code: status.INVALID_ARGUMENT, message: 'the request names no operation' } }, batch: [] };
    }
    if (deadline > 0 && this.clock() >= deadline) {
      this.finish(op.$case, 'deadline', performance.now());
      const message = `the ${op.$case}'s deadline of ${request.deadlineMs} ms passed before it could run (operations queued ahead of it on the stream)`;
      return { requestId, result: { $case: 'error', error: { code: status.DEADLINE_EXCEEDED, message } }, batch: [] };
    }
    const until = deadline > 0 ? deadline : undefined;
    switch (op.$case) {
      case 'put':
        return this.answer(requestId, this.run('put', op.put, (r, now) => this.api.put(r, now, until)), (put) => ({ $case: 'put', put }));
      case 'get':
        return this.answer(requestId, this.run('get', op.get, (r, now) => this.api.get(r, now, until)), (get) => ({ $case: 'get', get }));
      case 'delete':
        return this.answer(requestId, this.run('delete', op.delete, (r, now) => this.api.delete(r, now)), (d) => ({ $case: 'delete', delete: d }));
      case 'touch':
        return this.answer(requestId, this.run('touch', op.touch, (r, now) => this.api.touch(r, now)), (touch) => ({ $case: 'touch', touch }));
    }
  }

  private answer<Res>(
    requestId: bigint,
    outcome: Outcome<Res> | Promise<Outcome<Res>>,
    wrap: (value: Res) => ExchangeResponse['result'],
  ): ExchangeResponse | Promise<ExchangeResponse> {
    const build = (o: Outcome<Res>): ExchangeResponse => ({ requestId, result: o.ok ? wrap(o.value) : errorResult(o), batch: [] });
    return outcome instanceof Promise ? outcome.then(build) : build(outcome);
  }

  private watch(call: ServerWritableStream<WatchRequest, WatchEvent>): void {
    const request: unknown = call.request;
    if (request instanceof RefusedRequest) {
      this.metrics.requestsRefused.inc();
      call.emit('error', { code: request.code, details: request.details });
      return;
    }
    if (this.watchRefusal !== undefined) {
      call.emit('error', { code: status.FAILED_PRECONDITION, details: this.watchRefusal });
      return;
    }
    const sessionId = call.request.sessionId;
    if (sessionId !== '') {
      try {
        checkSessionId(sessionId);
      } catch (err) {
        const s = toStatus(err);
        call.emit('error', { code: s.code, details: s.details });
        return;
      }
    }
    if (this.draining) {
      call.emit('error', { code: status.UNAVAILABLE, details: 'the node is shutting down' });
      return;
    }
    let done = false;
    const entry = {
      end: () => {
        if (done) return;
        finish();
        call.end();
      },
    };
    // Bytes of part values written to the stream and not yet handed to HTTP/2 (a write's
    // callback runs once grpc-js took the message): what a watcher that does not read holds.
    let backlogBytes = 0;
    const unsubscribe = this.hub.subscribe(sessionId, (event) => {
      if (done) return;
      const bytes = WATCH_EVENT_OVERHEAD + event.sessionId.length + (event.part?.value.length ?? 0);
      if (call.writableLength >= MAX_WATCH_BACKLOG || backlogBytes + bytes > this.watchBacklogBytes) {
        this.metrics.watchersDropped.inc();
        finish();
        call.emit('error', {
          code: status.RESOURCE_EXHAUSTED,
          details: `the watcher reads too slowly (over ${this.watchBacklogBytes} bytes of events unsent); events were dropped, watch again`,
        });
        return;
      }
      backlogBytes += bytes;
      call.write(event, () => (backlogBytes -= bytes));
    });
    const finish = () => {
      if (done) return;
      done = true;
      unsubscribe();
      this.streams.delete(entry);
      this.metrics.watchers.dec();
    };
    this.metrics.watchers.inc();
    this.streams.add(entry);
    call.on('cancelled', finish);
    call.on('close', finish);
    call.on('error', finish);
    // Headers go out now, so a client can wait for them to know the watch is registered.
    call.sendMetadata(new Metadata());
  }

  /**
   * Streams the TLS resumption settings: the current ones at once (or as soon as the node
   * holds the cluster's keys), then every change. Ended on drain like Watch.
   */
  private watchTlsResumption(call: ServerWritableStream<WatchTlsResumptionRequest, TlsResumptionSettings>): void {
    const request: unknown = call.request;
    if (request instanceof RefusedRequest) {
      this.metrics.requestsRefused.inc();
      call.emit('error', { code: request.code, details: request.details });
      return;
    }
    const feed = this.tlsFeed;
    if (feed === undefined) {
      call.emit('error', { code: status.UNIMPLEMENTED, details: 'this node serves no TLS resumption settings' });
      return;
    }
    if (this.draining) {
      call.emit('error', { code: status.UNAVAILABLE, details: 'the node is shutting down' });
      return;
    }
    let done = false;
    const send = (settings: TlsResumptionSettings) => {
      if (done) return;
      if (call.writableLength >= MAX_TLS_SETTINGS_BACKLOG) {
        finish();
        call.emit('error', { code: status.RESOURCE_EXHAUSTED, details: 'the watcher reads too slowly; watch again' });
        return;
      }
      call.write(settings);
    };
    const unsubscribe = feed.subscribe(send);
    const entry = {
      end: () => {
        if (done) return;
        finish();
        call.end();
      },
    };
    const finish = () => {
      if (done) return;
      done = true;
      unsubscribe();
      this.streams.delete(entry);
    };
    this.streams.add(entry);
    call.on('cancelled', finish);
    call.on('close', finish);
    call.on('error', finish);
    call.sendMetadata(new Metadata());
    const current = feed.current();
    if (current !== undefined) send(current);
  }
}

/** The absolute deadline of a call (ms), or undefined to use the API's default. */
function deadlineOf(deadline: Date | number): number | undefined {
  const at = deadline instanceof Date ? deadline.getTime() : deadline;
  return Number.isFinite(at) ? at : undefined;
}

function nestedBatch(requestId: bigint): ExchangeResponse {
  return { requestId, result: { $case: 'error', error: { code: status.INVALID_ARGUMENT, message: 'a batched operation may not hold a batch' } }, batch: [] };
}

function errorResult(o: { code: status; message: string }): ExchangeResponse['result'] {
  return { $case: 'error', error: { code: o.code, message: o.message } };
}

function isNotFound(value: unknown): boolean {
  return typeof value === 'object' && value !== null && 'found' in value && (value as { found: boolean }).found === false;
}

