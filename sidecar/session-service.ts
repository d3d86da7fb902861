/**
 * gRPC handlers of baton.v1.SessionService: unary calls, the Exchange stream and Watch.
 * Semantics live in src/session-api.ts; this file adds transport concerns: metrics,
 * status mapping, flow control and draining on shutdown.
 *
 * Exchange runs operations in the order they arrive, answers them in slices of
 * EXCHANGE_SLICE_OPS, and never ends the stream for a failed operation. When the client
 * stops reading responses, or sends faster than the operations run, the stream stops
 * reading requests until the backlog clears, so memory stays bounded.
 */
import { Metadata, status, type sendUnaryData, type ServerDuplexStream, type ServerUnaryCall, type ServerWritableStream } from '@grpc/grpc-js';
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
  type WatchEvent,
  type WatchRequest,
} from '../src/gen/baton/v1/session';
import type { SessionApi } from '../src/session-api';
import { encodeToBuffer } from '../src/proto-writer';
import { checkSessionId } from '../src/validation';
import type { WatchHub } from '../src/watch-hub';
import { toStatus } from './grpc-status';
import { resultOf, type Method, type OperationResult, type SidecarMetrics } from './metrics';

/** Events a watcher may have queued, unsent, before it is dropped as too slow. */
const MAX_WATCH_BACKLOG = 10_000;
/** Operations of an Exchange stream answered per message (one slice per event-loop turn). */
export const EXCHANGE_SLICE_OPS = 16;
/** Operations an Exchange stream may have read and not yet run before it stops reading. */
const EXCHANGE_MAX_QUEUED_OPS = 4096;

/** What the Exchange deserializer yields for a message that is not an ExchangeRequest. */
class UndecodableRequest {
  constructor(readonly reason: string) {}
}

/**
 * SessionService as served: the generated definition, except that an Exchange message that
 * does not decode reaches the handler, in order, as an UndecodableRequest. grpc-js would
 * otherwise end the call with INTERNAL the moment it fails to decode a message, while
 * messages read before it are still being answered; a response written after that status
 * leaves the stream without trailers, and the client waits for its deadline.
 */
export const SessionServiceDefinition = {
  ...SessionServiceService,
  exchange: {
    ...SessionServiceService.exchange,
    requestDeserialize: (bytes: Buffer): ExchangeRequest | UndecodableRequest => {
      try {
        return ExchangeRequest.decode(bytes);
      } catch (err) {
        return new UndecodableRequest(err instanceof Error ? err.message : String(err));
      }
    },
    responseSerialize: (value: ExchangeResponse): Buffer => encodeToBuffer((w) => ExchangeResponse.encode(value, w)),
  },
} as const;

type Outcome<T> = { ok: true; value: T } | { ok: false; code: status; message: string };

export class SessionServiceHandlers {
  private readonly streams = new Set<{ end(): void }>();
  private readonly counters = new Map<string, { inc(): void }>();
  private readonly histograms = new Map<Method, { observe(v: number): void }>();
  private draining = false;

  constructor(
    private readonly api: SessionApi,
    private readonly hub: WatchHub,
    private readonly metrics: SidecarMetrics,
    private readonly log: Logger,
    private readonly clock: () => number = Date.now,
  ) {}

  /** The implementation object for server.addService. */
  implementation(): SessionServiceServer {
    return {
      put: (call, callback) =>
        this.unary('put', call, callback, (r: PutRequest, now) => this.api.put(r, now, deadlineOf(call.getDeadline()))),
      get: (call, callback) => this.unary('get', call, callback, (r: GetRequest, now) => this.api.get(r, now, deadlineOf(call.getDeadline()))),
      delete: (call, callback) => this.unary('delete', call, callback, (r: DeleteRequest, now) => this.api.delete(r, now)),
      touch: (call, callback) => this.unary('touch', call, callback, (r: TouchRequest, now) => this.api.touch(r, now)),
      watch: (call) => this.watch(call),
      exchange: (call) => this.exchange(call),
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
    this.count(method, result);
    this.histogram(method).observe((performance.now() - started) / 1000);
  }

  private exchange(call: ServerDuplexStream<ExchangeRequest | UndecodableRequest, ExchangeResponse>): void {
    this.metrics.exchangeStreams.inc();
    let ended = false;
    const entry = {
      end: () => {
        if (ended) return;
        ended = true;
        call.end();
      },
    };
    this.streams.add(entry);
    // Reading stops while the responses are not draining (the client reads too slowly) or
    // while too many operations wait to be run; it resumes when neither holds.
    let awaitingDrain = false;
    let readsPaused = false;
    const updateReading = () => {
      const pause = awaitingDrain || queue.length - head >= EXCHANGE_MAX_QUEUED_OPS;
      if (pause === readsPaused) return;
      readsPaused = pause;
      if (pause) call.pause();
      else call.resume();
    };
    let waiting = 0;
    let endWhenAnswered = false;
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
        if (--waiting === 0 && endWhenAnswered && head === queue.length) entry.end();
      });
    };
    // Operations run in arrival order, EXCHANGE_SLICE_OPS at a time, each slice answered by
    // one message, with a turn of the event loop between slices: the first answers reach the
    // client while the rest are computed, so client and sidecar work at the same time instead
    // of taking turns with whole batches.
    let queue: (ExchangeRequest | UndecodableRequest)[] = [];
    let head = 0;
    let pumping = false;
    const pump = () => {
      pumping = false;
      if (ended || awaitingDrain) return;
      const answered: ExchangeResponse[] = [];
      let undecodable: UndecodableRequest | undefined;
      while (head < queue.length && answered.length < EXCHANGE_SLICE_OPS) {
        const one = queue[head++]!;
        if (one instanceof UndecodableRequest) {
          undecodable = one;
          break;
        }
        const response = one.batch.length > 0 ? nestedBatch(one.requestId) : this.exchangeOne(one);
        if (response instanceof Promise) later(response);
        else answered.push(response);
      }
      if (answered.length === 1) send(answered[0]!);
      else if (answered.length > 1) send({ requestId: 0n, result: undefined, batch: answered });
      if (undecodable !== undefined) {
        // The stream cannot be read past a message that does not decode: end it after the
        // answers written so far, as grpc-js ends a call whose message does not decode.
        ended = true;
        call.emit('error', { code: status.INTERNAL, details: `an Exchange request could not be decoded: ${undecodable.reason}` });
        return;
      }
      if (head < queue.length) {
        if (!awaitingDrain) {
          pumping = true;
          setImmediate(pump);
        }
      } else {
        queue = [];
        head = 0;
        if (endWhenAnswered && waiting === 0) entry.end();
      }
      updateReading();
    };
    call.on('data', (request: ExchangeRequest | UndecodableRequest) => {
      if (ended) return;
      if (request instanceof UndecodableRequest || request.batch.length === 0) queue.push(request);
      else for (const one of request.batch) queue.push(one);
      if (!pumping) pump();
    });
    // Operations still queued or waiting for replica acknowledgements are answered before the end.
    call.on('end', () => {
      if (waiting === 0 && head === queue.length) entry.end();
      else endWhenAnswered = true;
    });
    let open = true;
    const close = () => {
      this.streams.delete(entry);
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

  private exchangeOne(request: ExchangeRequest): ExchangeResponse | Promise<ExchangeResponse> {
    const requestId = request.requestId;
    const op = request.op;
    if (op === undefined) {
      return { requestId, result: { $case: 'error', error: { code: status.INVALID_ARGUMENT, message: 'the request names no operation' } }, batch: [] };
    }
    switch (op.$case) {
      case 'put':
        return this.answer(requestId, this.run('put', op.put, (r, now) => this.api.put(r, now)), (put) => ({ $case: 'put', put }));
      case 'get':
        return this.answer(requestId, this.run('get', op.get, (r, now) => this.api.get(r, now)), (get) => ({ $case: 'get', get }));
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
    const unsubscribe = this.hub.subscribe(sessionId, (event) => {
      if (done) return;
      if (call.writableLength >= MAX_WATCH_BACKLOG) {
        this.metrics.watchersDropped.inc();
        finish();
        call.emit('error', { code: status.RESOURCE_EXHAUSTED, details: 'the watcher reads too slowly; events were dropped, watch again' });
        return;
      }
      call.write(event);
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

  private count(method: Method, result: OperationResult): void {
    const key = method + ' ' + result;
    let counter = this.counters.get(key);
    if (counter === undefined) {
      counter = this.metrics.operations.labels(method, result);
      this.counters.set(key, counter);
    }
    counter.inc();
  }

  private histogram(method: Method): { observe(v: number): void } {
    let h = this.histograms.get(method);
    if (h === undefined) {
      h = this.metrics.operationDuration.labels(method);
      this.histograms.set(method, h);
    }
    return h;
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

