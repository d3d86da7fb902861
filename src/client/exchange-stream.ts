/**
 * One Exchange stream to the sidecar and the calls riding on it.
 *
 * Rules and invariants:
 * - Calls arrive encoded; calls made in the same tick are queued and written together,
 *   batched (ExchangeRequest field 15), in one corked flush on process.nextTick. Writing
 *   stops when write() returns false and resumes on 'drain'; at most maxQueued calls wait to
 *   be written, later ones are refused (RESOURCE_EXHAUSTED).
 * - Every call settles exactly once: by its answer, an OperationError, its deadline (counted
 *   from the call, queueing included), or the end of the stream. An answer that comes after
 *   the deadline is dropped. Deadlines share one timer per stream: calls are grouped by
 *   deadline length, so each group expires in the order its calls were made and only the
 *   head of each group needs watching (a timer per call was a tenth of the client's CPU at
 *   70k calls/s).
 * - No Map or Set holds the calls (an entry in and out per call: see src/core/churn-free.ts,
 *   which measured this client): they are found by request id in a dictionary, and each
 *   deadline group is an array.
 * - When the stream ends its calls are rejected, never resent (the sidecar may have applied
 *   them; the error says whether a call had been sent). Once ended it stays ended.
 * - A call tells the sidecar how long it is waited for: the deadline it was made with, or
 *   what is left of it when it waited here to be written (RESTAMP_AFTER_MS).
 */
import { status as Status, type ClientDuplexStream, type StatusObject } from '@grpc/grpc-js';
import type { ExchangeRequest, ExchangeResponse } from '../gen/baton/v1/session';
import { BatonClientError, fromOperationError, streamFailureCode } from './client-errors';
import { restampDeadline, unframed } from './exchange-request-writer';
import { dictionary } from '../core/churn-free';

export type Op = NonNullable<ExchangeRequest['op']>;
export type OpKind = Op['$case'];
export type OpResult = Exclude<NonNullable<ExchangeResponse['result']>, { $case: 'error' }>;
export type ResultOf<K extends OpKind> = Extract<OpResult, { $case: K }>;

interface PendingCall {
  readonly requestId: bigint;
  readonly kind: OpKind;
  /** The request, framed as a batch element (exchange-request-writer.ts), until it is handed to the stream. */
  bytes: Buffer | undefined;
  state: 'queued' | 'sent' | 'settled';
  /** performance.now() at which the call fails with DEADLINE_EXCEEDED. */
  readonly expiresAt: number;
  readonly deadlineMs: number;
  /** What the caller's promise resolves with, taken from the result (one promise per call, no `then` on it). */
  readonly unwrap: (result: OpResult) => unknown;
  resolve(value: unknown): void;
  reject(error: BatonClientError): void;
}

/** Deadline groups kept while empty (see settle). */
const KEPT_DEADLINE_GROUPS = 8;

/**
 * The unsettled calls of one deadline length in the order they were made, so in the order
 * they expire. A settled call stays in the array until it reaches the front or until
 * settled calls are more than half of it (then the array is compacted): it holds at most
 * twice the unsettled calls plus 32, and each call is moved at most a few times.
 */
class DeadlineGroup {
  private calls: (PendingCall | undefined)[] = [];
  private start = 0;
  /** Settled calls in calls[start..]. */
  private settledCount = 0;

  add(call: PendingCall): void {
    this.calls.push(call);
  }

  /** The earliest unsettled call, or undefined. */
  head(): PendingCall | undefined {
    while (this.start < this.calls.length) {
      const first = this.calls[this.start]!;
      if (first.state !== 'settled') return first;
      this.calls[this.start++] = undefined;
      this.settledCount--;
    }
    return undefined;
  }

  /** One of the group's calls settled. */
  settled(): void {
    this.settledCount++;
    const left = this.calls.length - this.start;
    if (this.settledCount === left) {
      this.calls.length = 0;
      this.start = 0;
      this.settledCount = 0;
    } else if (this.settledCount > 32 && this.settledCount * 2 > left) {
      this.calls = this.calls.slice(this.start).filter((call) => call!.state !== 'settled');
      this.start = 0;
      this.settledCount = 0;
    }
  }

  isEmpty(): boolean {
    return this.calls.length === this.start;
  }
}

/** Most operations, and bytes, in one batched ExchangeRequest. */
const MAX_BATCH_OPS = 256;
/**
 * A call that waited in the client longer than this before it is written is sent with the
 * time it has left as its deadline (restampDeadline), not the time it was made with: the
 * sidecar works within what a request carries, and must not go on after the client gave up.
 */
const RESTAMP_AFTER_MS = 20;
const MAX_BATCH_BYTES = 1024 * 1024;

/**
 * One Exchange call and the calls riding on it. Calls may be queued before the call exists
 * (the client is waiting for a backoff or for the channel); they are written once it is
 * attached. Once ended it stays ended; the client opens another.
 */
export class ExchangeStream {
  ended = false;
  /** waiting: for the backoff timer; connecting: for the channel; open: attached to a gRPC call. */
  phase: 'waiting' | 'connecting' | 'open' = 'waiting';
  private call: ClientDuplexStream<Buffer, ExchangeResponse> | undefined;
  /** Whether the sidecar answered anything on this stream (then it was no failed attempt). */
  private answered = false;
  /** Every unsettled call of this stream, queued or sent, by request id (a number below 2^53). */
  private pending = dictionary<PendingCall>();
  /** The same calls by deadline length, each group in the order the calls were made. */
  private readonly byDeadline = new Map<number, DeadlineGroup>();
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

  /** Sends one operation; its promise resolves with `unwrap` of the sidecar's result. */
  enqueue<K extends OpKind, T>(requestId: bigint, kind: K, bytes: Buffer, deadlineMs: number, unwrap: (result: ResultOf<K>) => T): Promise<T> {
    if (this.queuedCount >= this.maxQueued) {
      return Promise.reject(
        new BatonClientError(
          Status.RESOURCE_EXHAUSTED,
          `${this.queuedCount} calls are already waiting to be written to the sidecar (maxQueued); it is not keeping up`,
        ),
      );
    }
    return new Promise<T>((resolve, reject) => {
      const pending: PendingCall = {
        requestId,
        kind,
        bytes,
        state: 'queued',
        expiresAt: performance.now() + deadlineMs,
        deadlineMs,
        // onResponse unwraps only a result whose $case equals `kind`.
        unwrap: unwrap as (result: OpResult) => unknown,
        resolve: resolve as (value: unknown) => void,
        reject,
      };
      this.pending[Number(requestId)] = pending;
      let group = this.byDeadline.get(deadlineMs);
      if (group === undefined) {
        group = new DeadlineGroup();
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
    // Framed requests side by side are the batched ExchangeRequest; one alone goes unframed.
    const writeBatch = (): boolean => {
      const message = batch.length === 1 ? unframed(batch[0]!) : Buffer.concat(batch, batchBytes);
      batch = [];
      batchBytes = 0;
      return call.write(message);
    };
    const now = performance.now();
    call.cork();
    while (next < queue.length) {
      const pending = queue[next];
      if (pending === undefined || pending.state !== 'queued') {
        queue[next++] = undefined;
        continue;
      }
      let bytes = pending.bytes as Buffer;
      // Made at expiresAt - deadlineMs.
      if (pending.expiresAt - pending.deadlineMs < now - RESTAMP_AFTER_MS) bytes = restampDeadline(bytes, pending.deadlineMs, pending.expiresAt - now);
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
    const pending = this.pending[Number(response.requestId)];
    // Absent: answered after its deadline (or never asked). Queued: cannot have been asked yet.
    if (pending === undefined || pending.requestId !== response.requestId || pending.state !== 'sent') return;
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
      pending.resolve(pending.unwrap(result));
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
      for (let pending = group.head(); pending !== undefined; pending = group.head()) {
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
    delete this.pending[Number(pending.requestId)];
    const group = this.byDeadline.get(pending.deadlineMs)!;
    group.settled();
    // Groups of a few deadline lengths stay (deleting and adding one per call would churn the
    // Map); a client with many lengths has its empty groups dropped.
    if (group.isEmpty() && this.byDeadline.size > KEPT_DEADLINE_GROUPS) this.byDeadline.delete(pending.deadlineMs);
  }

  private end(code: number, message: string): void {
    if (this.ended) return;
    this.ended = true;
    this.call?.removeListener('drain', this.onDrain);
    clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = Infinity;
    for (const pending of Object.values(this.pending)) {
      // A sent call may have been applied before the stream broke; a queued one never left.
      const fate = pending.state === 'sent' ? 'it may or may not have been applied' : 'it was not sent';
      pending.state = 'settled';
      pending.bytes = undefined;
      pending.reject(new BatonClientError(code, `${message}; ${fate}`));
    }
    this.pending = dictionary();
    this.byDeadline.clear();
    this.queue = [];
    this.queueHead = 0;
    this.queuedCount = 0;
    this.onEnded(this.answered);
  }
}
