/**
 * HttpApiServer in process, on a loopback port: the bounds of the long-poll (the most
 * parked at once, 429 beyond; subscriptions released however a poll ends), one answer for
 * a change of several parts, and drain (parked polls 204, new ones 503). Parking is
 * detected through the watch hub's subscriber count, never by waiting a while.
 */
import * as http from 'node:http';
import pino from 'pino';
import { HttpApiServer } from '../sidecar/servers/http-api';
import { SidecarMetrics } from '../sidecar/metrics/metrics';
import { BuzHash } from '../src/store/buzhash';
import { HybridClock } from '../src/store/hybrid-clock';
import { DEFAULT_SYNC_TIMEOUT_MS, MAX_OPERATION_MS, SessionApi } from '../src/core/session-api';
import { recordingReplicator } from './support/recording-replicator';
import { DEFAULT_STORE_CONFIG, SessionStore } from '../src/store/store';
import { WatchHub } from '../src/core/watch-hub';

const MIB = 1024 * 1024;

function setup(maxLongPolls: number, maxBufferedBodyBytes?: number) {
  const hub = new WatchHub();
  const store = new SessionStore({ ...DEFAULT_STORE_CONFIG, nodeId: 'http-a', partitions: 8, maxBytes: 64 * MIB }, new BuzHash('http-test'), new HybridClock(), hub);
  const metrics = new SidecarMetrics(store, 64 * MIB);
  const api = new SessionApi(store, { maxValueBytes: 1024, maxPartsPerSession: 8 });
  const server = new HttpApiServer(api, store, hub, metrics, pino({ level: 'silent' }), { maxValueBytes: 1024, maxPartsPerSession: 8, maxLongPolls, maxBufferedBodyBytes });
  return { hub, store, api, metrics, server };
}

/** Yields to the event loop until `done` holds (bounded: a poll that never parks fails the test). */
async function until(done: () => boolean): Promise<void> {
  for (let i = 0; i < 10_000; i++) {
    if (done()) return;
    await new Promise((r) => setImmediate(r));
  }
  throw new Error('condition never held');
}

async function gauge(metrics: SidecarMetrics): Promise<number> {
  return (await metrics.httpLongPolls.get()).values[0]?.value ?? 0;
}

describe('HttpApiServer long-poll bounds', () => {
  let env: ReturnType<typeof setup>;
  let base: string;

  afterEach(async () => {
    await env.server.close(0);
  });

  async function start(maxLongPolls: number, maxBufferedBodyBytes?: number) {
    env = setup(maxLongPolls, maxBufferedBodyBytes);
    const port = await env.server.listen({ text: '127.0.0.1:0', host: '127.0.0.1', port: 0 });
    base = `http://127.0.0.1:${port}`;
  }

  it('parks at most maxLongPolls; the next gets 429 with Retry-After; a freed slot parks again', async () => {
    await start(2);
    const controllers = [new AbortController(), new AbortController()];
    const held = controllers.map((c, i) => fetch(`${base}/v1/sessions/s${i}/changes?timeout=300s`, { signal: c.signal }).catch((err: Error) => err));
    await until(() => env.hub.size === 2);
    const refused = await fetch(`${base}/v1/sessions/s9/changes?timeout=300s`);
    expect(refused.status).toBe(429);
    expect(refused.headers.get('retry-after')).toBe('1');
    expect(await refused.json()).toEqual({ code: 'resource_exhausted', message: '2 long-polls are already waiting on this node; poll again later' });
    // An answer at once needs no slot.
    env.api.put({ sessionId: 's9', parts: [{ name: 'a', value: Buffer.from('x'), ifVersion: undefined }], ttlSeconds: 0, minReplicas: 0 }, Date.now());
    expect((await fetch(`${base}/v1/sessions/s9/changes`)).status).toBe(200);

    controllers[0]!.abort();
    expect(((await held[0]) as Error).name).toBe('AbortError');
    await until(() => env.hub.size === 1);
    expect(await gauge(env.metrics)).toBe(1);
    const again = fetch(`${base}/v1/sessions/s8/changes?timeout=300s`);
    await until(() => env.hub.size === 2);
    env.api.put({ sessionId: 's8', parts: [{ name: 'a', value: Buffer.from('y'), ifVersion: undefined }], ttlSeconds: 0, minReplicas: 0 }, Date.now());
    expect((await again).status).toBe(200);
    controllers[1]!.abort();
    await held[1];
    await until(() => env.hub.size === 0);
    expect(await gauge(env.metrics)).toBe(0);
  });

  it('wakes a waiter once for a Put of several parts, with every part in the answer', async () => {
    await start(4);
    const held = fetch(`${base}/v1/sessions/multi/changes?timeout=300s`);
    await until(() => env.hub.size === 1);
    const parts = ['a', 'b', 'c'].map((name) => ({ name, value: Buffer.from(name + '!'), ifVersion: undefined }));
    env.api.put({ sessionId: 'multi', parts, ttlSeconds: 0, minReplicas: 0 }, Date.now());
    const answer = await held;
    expect(answer.status).toBe(200);
    const body = (await answer.json()) as { changes: { part: { name: string; value: string } }[] };
    expect(body.changes.map((c) => [c.part.name, c.part.value])).toEqual([
      ['a', 'a!'],
      ['b', 'b!'],
      ['c', 'c!'],
    ]);
    expect(env.hub.size).toBe(0);
  });

  it('a time-out releases the subscription', async () => {
    await start(4);
    const answer = await fetch(`${base}/v1/sessions/t/changes?timeout=1ms`);
    expect(answer.status).toBe(204);
    expect(env.hub.size).toBe(0);
    expect(await gauge(env.metrics)).toBe(0);
  });

  it('drain answers parked polls 204 (closing their connections) and refuses new ones 503', async () => {
    await start(4);
    const held = [0, 1].map((i) => fetch(`${base}/v1/sessions/d${i}/changes?timeout=300s`));
    await until(() => env.hub.size === 2);
    env.server.drain();
    const answers = await Promise.all(held);
    expect(answers.map((a) => [a.status, a.headers.get('connection')])).toEqual([
      [204, 'close'],
      [204, 'close'],
    ]);
    expect(env.hub.size).toBe(0);
    const refused = await fetch(`${base}/v1/sessions/d9/changes?timeout=300s`);
    expect(refused.status).toBe(503);
    expect(((await refused.json()) as { code: string }).code).toBe('unavailable');
    // Other requests are still served while the drain lets in-flight work finish.
    expect((await fetch(`${base}/v1/sessions/d9`)).status).toBe(404);
  });

  it('holds the bodies being received together to maxBufferedBodyBytes (503 beyond), and releases them once answered', async () => {
    // The bound is raised to one largest POST body: (ceil(1024 / 3) * 4 + 256) * 8 + 64 KiB = 78,528 bytes.
    await start(4, 1);
    const post = (body: string[]) => {
      let finish: () => void = () => undefined;
      const answer = new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = http.request(new URL(`${base}/v1/sessions/up`), { method: 'POST' }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode!, body: Buffer.concat(chunks).toString() }));
        });
        req.on('error', reject);
        req.write(body[0]);
        finish = () => req.end(body[1]);
      });
      return { answer, finish: () => finish() };
    };
    // JSON allows the padding: 60,000 spaces, then a small valid body.
    const slow = post([' '.repeat(60_000), '{"parts":{"a":"x"}}']);
    try {
      await until(() => env.server.bufferedBytes >= 60_000);
      const second = post([' '.repeat(30_000), '{"parts":{"b":"y"}}']);
      second.finish();
      const refused = await second.answer;
      expect(refused.status).toBe(503);
      expect(JSON.parse(refused.body).code).toBe('unavailable');
      expect(env.server.bufferedBytes).toBe(60_000);
    } catch (err) {
      // Let the first upload end, so the failure is this test's and not a reset socket's.
      slow.finish();
      await slow.answer.catch(() => undefined);
      throw err;
    }

    slow.finish();
    expect((await slow.answer).status).toBe(200);
    expect(env.server.bufferedBytes).toBe(0);
    const after = post([' '.repeat(30_000), '{"parts":{"b":"y"}}']);
    after.finish();
    expect((await after.answer).status).toBe(200);
  });
});

describe('HttpApiServer deadlines', () => {
  const T0 = 1_700_000_000_000;
  let server: HttpApiServer;
  afterEach(async () => {
    await server.close(0);
  });

  it("runs a resume and a synchronous write within the caller's timeout=…, at most 60 s; without one, the API's default", async () => {
    const hub = new WatchHub();
    const store = new SessionStore({ ...DEFAULT_STORE_CONFIG, nodeId: 'http-a', partitions: 8, maxBytes: 64 * MIB }, new BuzHash('http-test'), new HybridClock(), hub);
    const { replicator, deadlines } = recordingReplicator();
    const clock = () => T0;
    const api = new SessionApi(store, { maxValueBytes: 1024, maxPartsPerSession: 8 }, replicator, undefined, clock);
    const limits = { maxValueBytes: 1024, maxPartsPerSession: 8 };
    server = new HttpApiServer(api, store, hub, new SidecarMetrics(store, 64 * MIB), pino({ level: 'silent' }), limits, clock);
    const port = await server.listen({ text: '127.0.0.1:0', host: '127.0.0.1', port: 0 });
    const base = `http://127.0.0.1:${port}/v1/sessions`;

    expect((await fetch(`${base}/elsewhere/parts/a?resume=true&timeout=300ms`)).status).toBe(404);
    expect((await fetch(`${base}/elsewhere?resume=true`)).status).toBe(404);
    expect((await fetch(`${base}/elsewhere?resume=true&timeout=120s`)).status).toBe(404);
    expect(deadlines.fetch).toEqual([T0 + 300, T0 + DEFAULT_SYNC_TIMEOUT_MS, T0 + MAX_OPERATION_MS]);

    expect((await fetch(`${base}/s1/parts/a?min_replicas=1&timeout=250ms`, { method: 'PUT', body: 'v' })).status).toBe(200);
    expect((await fetch(`${base}/s1?timeout=2s`, { method: 'POST', body: JSON.stringify({ parts: { b: 'w' }, min_replicas: 1 }) })).status).toBe(200);
    expect((await fetch(`${base}/s1/cart?timeout=1500ms`, { method: 'POST', body: JSON.stringify({ operations: [{ add_item: { sku: 'lamp', quantity: 1 } }], min_replicas: 1 }) })).status).toBe(200);
    expect(deadlines.ack).toEqual([T0 + 250, T0 + 2000, T0 + 1500]);

    const refused = await fetch(`${base}/s1?resume=true&timeout=soon`);
    expect(refused.status).toBe(400);
    expect(JSON.parse(await refused.text()).message).toMatch(/timeout "soon" is not a duration/);
  });
});
