/**
 * SessionService handlers driven through a stand-in for grpc-js's stream objects: what a
 * drain answers on an Exchange stream, and what a watcher that never reads may hold. The
 * calls are plain event emitters, so every step is in the test's hands (no sockets, no time).
 */
import { EventEmitter } from 'node:events';
import { status } from '@grpc/grpc-js';
import pino from 'pino';
import { ReceivedExchange, SessionServiceHandlers } from '../sidecar/servers/session-service';
import { SidecarMetrics } from '../sidecar/metrics/metrics';
import { BuzHash } from '../src/store/buzhash';
import type { ExchangeRequest, ExchangeResponse, PutRequest, TlsResumptionSettings, WatchEvent } from '../src/gen/baton/v1/session';
import type { TlsResumptionFeed } from '../src/capture/tls-resumption-source';
import { HybridClock } from '../src/store/hybrid-clock';
import { DEFAULT_SYNC_TIMEOUT_MS, MAX_OPERATION_MS, SessionApi } from '../src/core/session-api';
import { recordingReplicator } from './support/recording-replicator';
import { DEFAULT_STORE_CONFIG, SessionStore } from '../src/store/store';
import { WatchHub } from '../src/core/watch-hub';

const MIB = 1024 * 1024;

function node(maxMemoryBytes = 64 * MIB) {
  const hub = new WatchHub();
  const store = new SessionStore({ ...DEFAULT_STORE_CONFIG, nodeId: 'svc-a', partitions: 8, maxBytes: 1024 * MIB }, new BuzHash('svc-test'), new HybridClock(), hub);
  const metrics = new SidecarMetrics(store, maxMemoryBytes);
  const api = new SessionApi(store, { maxValueBytes: 2 * MIB, maxPartsPerSession: 8 });
  const handlers = new SessionServiceHandlers(api, hub, metrics, pino({ level: 'silent' }), maxMemoryBytes);
  return { store, api, metrics, handlers, implementation: handlers.implementation() };
}

/** A node whose replication is a recorder (support/recording-replicator.ts). */
function recordingNode(clock: () => number) {
  const { replicator, deadlines } = recordingReplicator();
  const hub = new WatchHub();
  const store = new SessionStore({ ...DEFAULT_STORE_CONFIG, nodeId: 'svc-a', partitions: 8 }, new BuzHash('svc-test'), new HybridClock(), hub);
  const metrics = new SidecarMetrics(store, 64 * MIB);
  const api = new SessionApi(store, { maxValueBytes: 2 * MIB, maxPartsPerSession: 8 }, replicator, undefined, clock);
  const handlers = new SessionServiceHandlers(api, hub, metrics, pino({ level: 'silent' }), 64 * MIB, clock);
  return { store, metrics, deadlines, implementation: handlers.implementation() };
}

async function operations(metrics: SidecarMetrics, method: string, result: string): Promise<number> {
  const line = (await metrics.registry.metrics()).split('\n').find((l) => l.startsWith(`baton_operations_total{method="${method}",result="${result}"} `));
  return line === undefined ? 0 : Number(line.split(' ')[1]);
}

/** A bidirectional call as a handler sees it: what it wrote, whether it ended, with which error. */
class FakeDuplex extends EventEmitter {
  readonly written: ExchangeResponse[] = [];
  ended = false;
  paused = false;
  error: { code: number; details: string } | undefined;
  writableLength = 0;
  write(response: ExchangeResponse): boolean {
    if (this.ended) throw new Error('write after end');
    this.written.push(response);
    return true;
  }
  end(): void {
    this.ended = true;
  }
  pause(): void {
    this.paused = true;
  }
  resume(): void {
    this.paused = false;
  }
  override emit(event: string | symbol, ...args: unknown[]): boolean {
    if (event === 'error') this.error = args[0] as { code: number; details: string };
    return super.emit(event, ...args);
  }
}

function answers(call: FakeDuplex): ExchangeResponse[] {
  return call.written.flatMap((r) => (r.batch.length > 0 ? r.batch : [r]));
}

function putOp(i: number): ExchangeRequest {
  return {
    requestId: BigInt(i + 1),
    op: { $case: 'put', put: { sessionId: `s-${i}`, parts: [{ name: 'n', value: Buffer.from(String(i)), ifVersion: undefined }], ttlSeconds: 0, minReplicas: 0 } },
    deadlineMs: 0,
    batch: [],
  };
}

/** Turns of the event loop until `done` holds (the handler answers one slice per turn). */
async function turnsUntil(done: () => boolean, limit = 10_000): Promise<void> {
  for (let i = 0; i < limit && !done(); i++) await new Promise((resolve) => setImmediate(resolve));
  expect(done()).toBe(true);
}

describe('Exchange on drain', () => {
  beforeEach(() => {
    // The drain grace is a timer; the handler's slices run on setImmediate, left real.
    jest.useFakeTimers({ doNotFake: ['setImmediate', 'nextTick', 'queueMicrotask'] });
  });
  afterEach(() => {
    jest.useRealTimers();
  });

  const batchOf = (from: number, count: number) =>
    new ReceivedExchange({ requestId: 0n, op: undefined, deadlineMs: 0, batch: Array.from({ length: count }, (_, i) => putOp(from + i)) }, count * 40);

  test('every operation read before the drain gets its real answer, then the stream ends after the grace', async () => {
    const { store, handlers, implementation } = node();
    const call = new FakeDuplex();
    implementation.exchange(call as never);
    for (let i = 0; i < 2000; i += 250) call.emit('data', batchOf(i, 250));
    handlers.drain();
    await turnsUntil(() => answers(call).length === 2000);
    const got = answers(call);
    expect(got.filter((r) => r.result?.$case === 'put')).toHaveLength(2000);
    expect(new Set(got.map((r) => r.requestId)).size).toBe(2000);
    expect(store.getStats().sessions).toBe(2000);
    expect(call.ended).toBe(false);
    jest.advanceTimersByTime(250);
    expect(call.ended).toBe(true);
    expect(call.error).toBeUndefined();
  });

  test('operations that arrive during the grace (sent before the signal) are answered; then the stream stops reading and ends', async () => {
    const { handlers, implementation } = node();
    const call = new FakeDuplex();
    implementation.exchange(call as never);
    handlers.drain();
    jest.advanceTimersByTime(100);
    expect(call.ended).toBe(false);
    call.emit('data', batchOf(0, 100));
    await turnsUntil(() => answers(call).length === 100);
    expect(call.paused).toBe(false);
    jest.advanceTimersByTime(150);
    expect(call.paused).toBe(true);
    expect(call.ended).toBe(true);
    expect(answers(call).every((r) => r.result?.$case === 'put')).toBe(true);
  });

  test("a client's half-close ends the stream once its operations are answered, without the grace", async () => {
    const { implementation } = node();
    const call = new FakeDuplex();
    implementation.exchange(call as never);
    call.emit('data', batchOf(0, 40));
    call.emit('end');
    await turnsUntil(() => call.ended);
    expect(answers(call)).toHaveLength(40);
  });
});

describe('Exchange deadlines', () => {
  const T0 = 1_700_000_000_000;
  const syncPut = (i: number, deadlineMs: number): ExchangeRequest => {
    const op = putOp(i);
    return { ...op, op: { $case: 'put', put: { ...(op.op as { put: PutRequest }).put, minReplicas: 1 } }, deadlineMs };
  };
  const resume = (i: number, deadlineMs: number): ExchangeRequest => ({
    requestId: BigInt(1000 + i),
    op: { $case: 'get', get: { sessionId: `elsewhere-${i}`, parts: [], resume: true } },
    deadlineMs,
    batch: [],
  });

  test("an operation runs within the deadline its client sent (at most MAX_OPERATION_MS), counted from when it was read; without one, the API's default", async () => {
    const now = T0;
    const { deadlines, implementation } = recordingNode(() => now);
    const call = new FakeDuplex();
    implementation.exchange(call as never);
    call.emit('data', new ReceivedExchange({ requestId: 0n, op: undefined, deadlineMs: 0, batch: [syncPut(0, 250), syncPut(1, 0), resume(0, 300), resume(1, 0), syncPut(2, 0xffffffff)] }, 200));
    await turnsUntil(() => answers(call).length === 5);
    expect(deadlines.ack).toEqual([T0 + 250, T0 + DEFAULT_SYNC_TIMEOUT_MS, T0 + MAX_OPERATION_MS]);
    expect(deadlines.fetch).toEqual([T0 + 300, T0 + DEFAULT_SYNC_TIMEOUT_MS]);
    expect(answers(call).map((r) => r.result?.$case).sort()).toEqual(['get', 'get', 'put', 'put', 'put']);
  });

  test('an operation whose deadline passed while it waited behind others is answered DEADLINE_EXCEEDED and not run, and counted', async () => {
    let now = T0;
    const { store, metrics, implementation } = recordingNode(() => now);
    const call = new FakeDuplex();
    implementation.exchange(call as never);
    // Ahead of them, more operations than one slice runs: the rest run on later turns.
    const ahead = Array.from({ length: 40 }, (_, i) => putOp(i));
    const late = [syncPut(100, 5), { ...putOp(101), deadlineMs: 5 }];
    const inTime = [syncPut(102, 50), { ...putOp(103), deadlineMs: 0 }];
    call.emit('data', new ReceivedExchange({ requestId: 0n, op: undefined, deadlineMs: 0, batch: [...ahead, ...late, ...inTime] }, 2000));
    now += 10;
    await turnsUntil(() => answers(call).length === 44);
    const byId = new Map(answers(call).map((r) => [r.requestId, r.result]));
    for (const op of late) {
      const result = byId.get(op.requestId);
      expect(result?.$case).toBe('error');
      expect(result?.$case === 'error' && result.error.code).toBe(status.DEADLINE_EXCEEDED);
      expect(result?.$case === 'error' && result.error.message).toMatch(/deadline of 5 ms passed before it could run/);
    }
    expect(store.get('s-100', now)).toBeUndefined();
    expect(store.get('s-101', now)).toBeUndefined();
    for (const op of inTime) expect(byId.get(op.requestId)?.$case).toBe('put');
    expect(store.get('s-102', now)).toBeDefined();
    expect(await operations(metrics, 'put', 'deadline')).toBe(2);
    expect(await operations(metrics, 'put', 'ok')).toBe(42);
  });
});

/** A server-streaming call whose client never reads: writes are taken, their callbacks never run. */
class StalledWatch extends EventEmitter {
  readonly request = { sessionId: '' };
  writableLength = 0;
  error: { code: number; details: string } | undefined;
  write(_event: WatchEvent, _taken?: () => void): boolean {
    this.writableLength++;
    return false;
  }
  end(): void {}
  sendMetadata(): void {}
  override emit(event: string | symbol, ...args: unknown[]): boolean {
    if (event === 'error') this.error = args[0] as { code: number; details: string };
    return super.emit(event, ...args);
  }
}

describe('a watcher that never reads', () => {
  const value = Buffer.alloc(MIB, 1);

  test('is ended with RESOURCE_EXHAUSTED once its unsent events pass 1/16 of the memory budget, and counted', async () => {
    const { api, metrics, implementation } = node(64 * MIB);
    const watch = new StalledWatch();
    implementation.watch(watch as never);
    let written = 0;
    for (let i = 0; i < 4000 && watch.error === undefined; i++) {
      api.put({ sessionId: `big-${i % 50}`, parts: [{ name: 'blob', value, ifVersion: undefined }], ttlSeconds: 0, minReplicas: 0 }, 1_800_000_000_000 + i);
      written++;
    }
    // 64 MiB / 16 = 4 MiB: three 1 MiB events (and their ids) fit, the fourth does not.
    expect(written).toBe(4);
    expect(watch.writableLength).toBe(3);
    expect(watch.error?.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(watch.error?.details).toMatch(/reads too slowly/);
    expect(await metrics.watchersDropped.get()).toMatchObject({ values: [{ value: 1 }] });
    expect(await metrics.watchers.get()).toMatchObject({ values: [{ value: 0 }] });
  });

  test('a watcher that takes its events is not ended however many pass', () => {
    const { api, implementation } = node(64 * MIB);
    const watch = new StalledWatch();
    // This client reads: grpc-js takes each event at once.
    watch.write = (_event: WatchEvent, taken?: () => void) => {
      taken?.();
      return true;
    };
    implementation.watch(watch as never);
    for (let i = 0; i < 200; i++) api.put({ sessionId: `big-${i % 50}`, parts: [{ name: 'blob', value, ifVersion: undefined }], ttlSeconds: 0, minReplicas: 0 }, 1_800_000_000_000 + i);
    expect(watch.error).toBeUndefined();
  });
});

describe('WatchTlsResumption', () => {
  const settings = (n: number): TlsResumptionSettings => ({
    issueKey: Buffer.alloc(48, n),
    acceptKeys: [Buffer.alloc(48, n)],
    sessionIdContext: 'c'.repeat(32),
    sessionLifetimeSeconds: 300,
    clusterWide: true,
  });

  class Feed implements TlsResumptionFeed {
    value: TlsResumptionSettings | undefined;
    readonly listeners = new Set<(s: TlsResumptionSettings) => void>();
    current(): TlsResumptionSettings | undefined {
      return this.value;
    }
    subscribe(listener: (s: TlsResumptionSettings) => void): () => void {
      this.listeners.add(listener);
      return () => this.listeners.delete(listener);
    }
    push(s: TlsResumptionSettings): void {
      this.value = s;
      for (const l of this.listeners) l(s);
    }
  }

  function stream() {
    const call = new StalledWatch() as StalledWatch & { written: TlsResumptionSettings[] };
    call.written = [];
    // grpc-js's call has its own error listener; an EventEmitter without one would throw.
    call.on('error', () => undefined);
    call.write = (s: unknown) => {
      call.written.push(s as TlsResumptionSettings);
      call.writableLength++;
      return true;
    };
    return call;
  }

  test('without a feed the call is UNIMPLEMENTED', () => {
    const { implementation } = node();
    const call = stream();
    implementation.watchTlsResumption(call as never);
    expect(call.error?.code).toBe(status.UNIMPLEMENTED);
  });

  test('sends the current settings, then every change; a cancelled call is unsubscribed; a drain ends it', () => {
    const { handlers, implementation } = node();
    const feed = new Feed();
    handlers.serveTlsResumption(feed);
    const waiting = stream();
    implementation.watchTlsResumption(waiting as never);
    expect(waiting.written).toHaveLength(0);
    feed.push(settings(1));
    expect(waiting.written.map((s) => s.issueKey[0])).toEqual([1]);
    const late = stream();
    implementation.watchTlsResumption(late as never);
    expect(late.written.map((s) => s.issueKey[0])).toEqual([1]);
    late.emit('cancelled');
    feed.push(settings(2));
    expect(waiting.written.map((s) => s.issueKey[0])).toEqual([1, 2]);
    expect(late.written).toHaveLength(1);
    expect(feed.listeners.size).toBe(1);
    let ended = false;
    waiting.end = () => (ended = true);
    handlers.drain();
    expect(ended).toBe(true);
    expect(feed.listeners.size).toBe(0);
  });

  test('a watcher that never reads is ended with RESOURCE_EXHAUSTED, not buffered without bound', () => {
    const { handlers, implementation } = node();
    const feed = new Feed();
    handlers.serveTlsResumption(feed);
    const call = stream();
    implementation.watchTlsResumption(call as never);
    for (let i = 0; i < 1000 && call.error === undefined; i++) feed.push(settings(i % 256));
    expect(call.error?.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(call.written.length).toBeLessThanOrEqual(64);
    expect(feed.listeners.size).toBe(0);
  });
});
