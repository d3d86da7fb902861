/**
 * Starts the real `baton sidecar` process and drives every RPC (unary, and through
 * BatonClient's Exchange stream), the health service, reflection, /metrics (checked by
 * promtool) and shutdown by SIGTERM; and checks the test support that starts it.
 *
 * Each test writes what it reads: it passes alone (`-t`) as well as after the others.
 */
import * as grpc from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { spawnSync } from 'node:child_process';
import * as dgram from 'node:dgram';
import * as net from 'node:net';
import { protoPath as healthProtoPath } from 'grpc-health-check';
import { ClusterServiceClient } from '../src/gen/baton/v1/cluster';
import { AuthState, CartState } from '../src/gen/baton/v1/parts';
import {
  EventType,
  type ExchangeRequest,
  type ExchangeResponse,
  type GetResponse,
  type PutResponse,
  SessionServiceClient,
  type WatchEvent,
} from '../src/gen/baton/v1/session';
import { NETWORK_PRESETS, type NetworkTimings, SIDECAR_OPTIONS } from '../sidecar/config/config';
import { EXCHANGE_SLICE_OPS } from '../sidecar/servers/session-service';
import { BatonClient, type Session } from '../src/client/client';
import { discover, listServices } from './support/reflection-client';
import { freePeerPorts } from './support/ports';
import { isPortRace, runBaton, SidecarStartError, startSidecar, type SidecarProcess } from './support/sidecar-process';
import { rejection } from './support/rejection';

function unary<Req, Res>(fn: (req: Req, cb: (err: grpc.ServiceError | null, res: Res) => void) => unknown, req: Req): Promise<Res> {
  return new Promise((resolve, reject) => fn(req, (err, res) => (err ? reject(err) : resolve(res))));
}

/** A session's parts as name → [text, version], in name order. */
function partsOf(session: Session | undefined): Record<string, [string, bigint]> {
  const parts = [...(session?.parts ?? [])].sort((x, y) => (x.name < y.name ? -1 : 1));
  return Object.fromEntries(parts.map((p) => [p.name, [Buffer.from(p.value).toString(), p.version]]));
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('baton sidecar process', () => {
  let node: SidecarProcess;
  let client: SessionServiceClient;

  beforeAll(async () => {
    node = await startSidecar(['--node-id', 'it-node', '--log-level', 'info', '--replicas', '1']);
    client = new SessionServiceClient(node.apiAddress, grpc.credentials.createInsecure());
  });

  afterAll(async () => {
    client?.close();
    await node?.stop();
  });

  it('stores, reads, touches and deletes a session with unary calls', async () => {
    const cart = Buffer.from(CartState.encode({ items: [{ sku: 'A1', name: 'Lamp', quantity: 2, unitPriceMinor: 1999n }], currency: 'EUR', billingAddress: undefined, paymentReference: '', updatedAtUnixMs: 0n }).finish());
    const auth = Buffer.from(AuthState.encode(AuthState.fromPartial({ token: 't0k3n', subject: 'alice', scopes: ['shop'] })).finish());
    const put = await unary<any, PutResponse>(client.put.bind(client), {
      sessionId: 's-1',
      parts: [
        { name: 'cart', value: cart },
        { name: 'auth', value: auth },
      ],
      ttlSeconds: 60,
      minReplicas: 0,
    });
    expect(put.versions.map((v) => v.name)).toEqual(['cart', 'auth']);
    expect(put.versions[0]!.version).toBeGreaterThan(0n);
    expect(put.replicasAcked).toBe(0);

    const got = await unary<any, GetResponse>(client.get.bind(client), { sessionId: 's-1', parts: [], resume: false });
    expect(got.found).toBe(true);
    expect(got.session!.ownerNodeId).toBe('it-node');
    expect(got.session!.parts.map((p) => p.name).sort()).toEqual(['auth', 'cart']);
    const gotCart = got.session!.parts.find((p) => p.name === 'cart')!;
    expect(CartState.decode(gotCart.value).items[0]!.sku).toBe('A1');
    expect(gotCart.writerNodeId).toBe('it-node');
    expect(gotCart.version).toBe(put.versions[0]!.version);

    const onlyAuth = await unary<any, GetResponse>(client.get.bind(client), { sessionId: 's-1', parts: ['auth'], resume: true });
    expect(onlyAuth.session!.parts.map((p) => p.name)).toEqual(['auth']);

    const touched = await unary<any, any>(client.touch.bind(client), { sessionId: 's-1', ttlSeconds: 120 });
    expect(touched.found).toBe(true);
    expect(Number(touched.expiresAtUnixMs)).toBeGreaterThan(Date.now() + 60_000);

    // Compare-and-set: a stale if_version fails and changes nothing.
    const otherCart = Buffer.from(CartState.encode(CartState.fromPartial({ currency: 'USD' })).finish());
    await expect(
      unary(client.put.bind(client), { sessionId: 's-1', parts: [{ name: 'cart', value: otherCart, ifVersion: 1n }], ttlSeconds: 0, minReplicas: 0 }),
    ).rejects.toMatchObject({ code: grpc.status.FAILED_PRECONDITION, details: `part 'cart' is at version ${put.versions[0]!.version}, not the expected 1` });
    const unchanged = await unary<any, GetResponse>(client.get.bind(client), { sessionId: 's-1', parts: ['cart'], resume: false });
    expect(unchanged.session!.parts.map((p) => [p.version, CartState.decode(p.value).currency])).toEqual([[put.versions[0]!.version, 'EUR']]);
    await unary(client.put.bind(client), {
      sessionId: 's-1',
      parts: [{ name: 'cart', value: otherCart, ifVersion: put.versions[0]!.version }],
      ttlSeconds: 0,
      minReplicas: 0,
    });
    const changed = await unary<any, GetResponse>(client.get.bind(client), { sessionId: 's-1', parts: ['cart'], resume: false });
    expect(CartState.decode(changed.session!.parts[0]!.value).currency).toBe('USD');

    expect(await unary<any, any>(client.delete.bind(client), { sessionId: 's-1', parts: ['auth'] })).toEqual({ found: true });
    expect(await unary<any, any>(client.delete.bind(client), { sessionId: 's-1', parts: ['auth'] })).toEqual({ found: false });
    expect(await unary<any, any>(client.delete.bind(client), { sessionId: 's-1', parts: [] })).toEqual({ found: true });
    const gone = await unary<any, GetResponse>(client.get.bind(client), { sessionId: 's-1', parts: [], resume: false });
    expect(gone.found).toBe(false);
  });

  it('BatonClient compare-and-set: a put with the right ifVersions writes, a stale one fails FAILED_PRECONDITION and changes nothing', async () => {
    const baton = new BatonClient(node.apiAddress);
    const text = (s: string) => Buffer.from(s);
    try {
      // 0n: the parts must not exist yet.
      const created = await baton.put('cas', { a: text('a1'), b: text('b1') }, { ifVersions: { a: 0n, b: 0n } });
      const [a1, b1] = created.versions.map((v) => v.version) as [bigint, bigint];
      expect(partsOf(await baton.get('cas'))).toEqual({ a: ['a1', a1], b: ['b1', b1] });

      const exists = await rejection(baton.put('cas', { a: text('again') }, { ifVersions: { a: 0n } }));
      expect([exists.code, exists.message]).toEqual([grpc.status.FAILED_PRECONDITION, `part 'a' is at version ${a1}, not the expected 0`]);
      expect(partsOf(await baton.get('cas'))).toEqual({ a: ['a1', a1], b: ['b1', b1] });

      // Both expected versions right: both parts written.
      const second = await baton.put('cas', { a: text('a2'), b: text('b2') }, { ifVersions: { a: a1, b: b1 } });
      const [a2, b2] = second.versions.map((v) => v.version) as [bigint, bigint];
      expect(partsOf(await baton.get('cas'))).toEqual({ a: ['a2', a2], b: ['b2', b2] });

      // One stale version fails the whole put: neither part changes.
      const stale = await rejection(baton.put('cas', { a: text('a3'), b: text('b3') }, { ifVersions: { a: a2, b: b1 } }));
      expect([stale.code, stale.message]).toEqual([grpc.status.FAILED_PRECONDITION, `part 'b' is at version ${b2}, not the expected ${b1}`]);
      expect(partsOf(await baton.get('cas'))).toEqual({ a: ['a2', a2], b: ['b2', b2] });

      // A PartWrite's own ifVersion, stale then right (and taking precedence over ifVersions).
      const staleWrite = await rejection(baton.put('cas', [{ name: 'a', value: text('a3'), ifVersion: a1 }]));
      expect(staleWrite.code).toBe(grpc.status.FAILED_PRECONDITION);
      expect(partsOf(await baton.get('cas'))).toEqual({ a: ['a2', a2], b: ['b2', b2] });
      const third = await baton.put('cas', [{ name: 'a', value: text('a3'), ifVersion: a2 }], { ifVersions: { a: a1 } });
      expect(partsOf(await baton.get('cas'))).toEqual({ a: ['a3', third.versions[0]!.version], b: ['b2', b2] });

      // A version expected of a part that does not exist fails; 0n for it succeeds.
      const missing = await rejection(baton.put('cas', { c: text('c1') }, { ifVersions: { c: a1 } }));
      expect([missing.code, missing.message]).toEqual([grpc.status.FAILED_PRECONDITION, `part 'c' does not exist, but if_version ${a1} was expected`]);
      expect(partsOf(await baton.get('cas'))).not.toHaveProperty('c');
      await baton.put('cas', { c: text('c1') }, { ifVersions: { c: 0n } });
      expect(partsOf(await baton.get('cas')).c?.[0]).toBe('c1');
    } finally {
      baton.close();
    }
  });

  it('refuses bad input with INVALID_ARGUMENT and a clear message', async () => {
    const cases: [object, RegExp][] = [
      [{ sessionId: '', parts: [{ name: 'x', value: Buffer.from('1') }] }, /session_id is empty/],
      [{ sessionId: 's', parts: [] }, /at least one part/],
      [{ sessionId: 's', parts: [{ name: 'Bad Name', value: Buffer.alloc(1) }] }, /part name/],
      [{ sessionId: 's', parts: [{ name: 'tls', value: Buffer.from([0xff, 0xff, 0xff]) }] }, /part 'tls' is not a valid baton.v1.TlsSessionState/],
      [{ sessionId: 's', parts: [{ name: 'x', value: Buffer.alloc(1) }], minReplicas: 2 }, /above the 1 replicas configured/],
      [{ sessionId: 's', parts: [{ name: 'x', value: Buffer.alloc(1) }], ttlSeconds: 40 * 24 * 3600 }, /30 days/],
    ];
    for (const [request, message] of cases) {
      await expect(unary<any, PutResponse>(client.put.bind(client), { ttlSeconds: 0, minReplicas: 0, ...request })).rejects.toMatchObject({
        code: grpc.status.INVALID_ARGUMENT,
        details: expect.stringMatching(message),
      });
    }
  });

  it('refuses a synchronous write no live secondary can acknowledge with UNAVAILABLE', async () => {
    await expect(
      unary<any, PutResponse>(client.put.bind(client), { sessionId: 'alone', parts: [{ name: 'x', value: Buffer.alloc(1) }], ttlSeconds: 0, minReplicas: 1 }),
    ).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE, details: expect.stringMatching(/only 0 secondaries are live/) });
  });

  it('carries thousands of operations on one Exchange stream; a failed one does not end it', async () => {
    const call = client.exchange();
    const responses = new Map<bigint, ExchangeResponse>();
    const done = new Promise<void>((resolve, reject) => {
      call.on('data', (r: ExchangeResponse) => {
        responses.set(r.requestId, r);
        if (responses.size === 3001) resolve();
      });
      call.on('error', reject);
    });
    const requests: ExchangeRequest[] = [];
    for (let i = 0; i < 1000; i++) {
      requests.push({ requestId: BigInt(i), op: { $case: 'put', put: { sessionId: `x-${i}`, parts: [{ name: 'n', value: Buffer.from(String(i)) }], ttlSeconds: 0, minReplicas: 0 } }, deadlineMs: 0, batch: [] });
    }
    requests.push({ requestId: 1000n, op: { $case: 'get', get: { sessionId: '', parts: [], resume: false } }, deadlineMs: 0, batch: [] });
    for (let i = 0; i < 1000; i++) {
      requests.push({ requestId: BigInt(1001 + i), op: { $case: 'get', get: { sessionId: `x-${i}`, parts: [], resume: false } }, deadlineMs: 0, batch: [] });
      requests.push({ requestId: BigInt(2001 + i), op: { $case: 'touch', touch: { sessionId: `x-${i}`, ttlSeconds: 30 } }, deadlineMs: 0, batch: [] });
    }
    for (const r of requests) call.write(r);
    await done;
    call.end();
    const bad = responses.get(1000n)!.result;
    expect(bad?.$case).toBe('error');
    expect(bad?.$case === 'error' && bad.error.code).toBe(grpc.status.INVALID_ARGUMENT);
    for (let i = 0; i < 1000; i++) {
      const got = responses.get(BigInt(1001 + i))!.result;
      expect(got?.$case).toBe('get');
      if (got?.$case === 'get') expect(got.get.session!.parts[0]!.value.toString()).toBe(String(i));
      expect(responses.get(BigInt(2001 + i))!.result?.$case).toBe('touch');
    }
  });

  it('answers a batched Exchange request, and a nested batch is an error for that operation only', async () => {
    const call = client.exchange();
    const responses: ExchangeResponse[] = [];
    const done = new Promise<void>((resolve, reject) => {
      call.on('data', (r: ExchangeResponse) => {
        responses.push(...(r.batch.length > 0 ? r.batch : [r]));
        if (responses.length === 3) resolve();
      });
      call.on('error', reject);
    });
    const put = { sessionId: 'batched', parts: [{ name: 'a', value: Buffer.from('1') }], ttlSeconds: 0, minReplicas: 0 };
    call.write({
      requestId: 0n,
      op: undefined,
      deadlineMs: 0,
      batch: [
        { requestId: 1n, op: { $case: 'put', put }, deadlineMs: 0, batch: [] },
        { requestId: 2n, op: { $case: 'get', get: { sessionId: 'batched', parts: [], resume: false } }, deadlineMs: 0, batch: [] },
        { requestId: 3n, op: undefined, deadlineMs: 0, batch: [{ requestId: 4n, op: undefined, deadlineMs: 0, batch: [] }] },
      ],
    });
    await done;
    call.end();
    const byId = new Map(responses.map((r) => [r.requestId, r.result]));
    expect(byId.get(1n)?.$case).toBe('put');
    const got = byId.get(2n);
    expect(got?.$case === 'get' && got.get.session!.parts[0]!.value.toString()).toBe('1');
    expect(byId.get(3n)?.$case).toBe('error');
  });

  it('answers a large batch in slices, in order, so a later operation sees an earlier one', async () => {
    const call = client.exchange();
    const messages: ExchangeResponse[] = [];
    const ops = 100;
    const done = new Promise<void>((resolve, reject) => {
      let answered = 0;
      call.on('data', (r: ExchangeResponse) => {
        messages.push(r);
        answered += r.batch.length > 0 ? r.batch.length : 1;
        if (answered === ops) resolve();
      });
      call.on('error', reject);
    });
    // Each Get follows the Put of the same session in the batch, and the final Get follows
    // every Put: run in order, every Get finds its value.
    const batch: ExchangeRequest[] = [];
    for (let i = 0; i < ops / 2 - 1; i++) {
      const put = { sessionId: `slice-${i}`, parts: [{ name: 'a', value: Buffer.from(String(i)) }], ttlSeconds: 0, minReplicas: 0 };
      batch.push({ requestId: BigInt(2 * i), op: { $case: 'put', put }, deadlineMs: 0, batch: [] });
      batch.push({ requestId: BigInt(2 * i + 1), op: { $case: 'get', get: { sessionId: `slice-${i}`, parts: [], resume: false } }, deadlineMs: 0, batch: [] });
    }
    batch.push({ requestId: 1000n, op: { $case: 'put', put: { sessionId: 'slice-last', parts: [{ name: 'a', value: Buffer.from('L') }], ttlSeconds: 0, minReplicas: 0 } }, deadlineMs: 0, batch: [] });
    batch.push({ requestId: 1001n, op: { $case: 'get', get: { sessionId: 'slice-last', parts: [], resume: false } }, deadlineMs: 0, batch: [] });
    call.write({ requestId: 0n, op: undefined, deadlineMs: 0, batch });
    await done;
    call.end();
    // One request message, answered in several: no answer message holds more than a slice.
    expect(messages.length).toBeGreaterThanOrEqual(Math.ceil(ops / EXCHANGE_SLICE_OPS));
    for (const m of messages) expect(m.batch.length).toBeLessThanOrEqual(EXCHANGE_SLICE_OPS);
    const byId = new Map(messages.flatMap((m) => (m.batch.length > 0 ? m.batch : [m])).map((r) => [r.requestId, r.result]));
    for (let i = 0; i < ops / 2 - 1; i++) {
      const got = byId.get(BigInt(2 * i + 1));
      expect(got?.$case === 'get' && got.get.session?.parts[0]?.value.toString()).toBe(String(i));
    }
    const last = byId.get(1001n);
    expect(last?.$case === 'get' && last.get.session?.parts[0]?.value.toString()).toBe('L');
  });

  it('streams PUT and DELETE events to a watcher registered before the writes', async () => {
    const call = client.watch({ sessionId: 'watched' });
    const events: WatchEvent[] = [];
    const gotTwo = new Promise<void>((resolve) =>
      call.on('data', (e: WatchEvent) => {
        events.push(e);
        if (events.length === 2) resolve();
      }),
    );
    call.on('error', () => undefined);
    await new Promise((resolve) => call.once('metadata', resolve));
    await unary(client.put.bind(client), { sessionId: 'other', parts: [{ name: 'a', value: Buffer.from('x') }], ttlSeconds: 0, minReplicas: 0 });
    await unary(client.put.bind(client), { sessionId: 'watched', parts: [{ name: 'a', value: Buffer.from('hello') }], ttlSeconds: 0, minReplicas: 0 });
    await unary(client.delete.bind(client), { sessionId: 'watched', parts: ['a'] });
    await gotTwo;
    call.cancel();
    expect(events[0]).toMatchObject({ sessionId: 'watched', type: EventType.EVENT_TYPE_PUT, partName: 'a' });
    expect(events[0]!.part!.value.toString()).toBe('hello');
    expect(events[1]).toMatchObject({ sessionId: 'watched', type: EventType.EVENT_TYPE_DELETE, partName: 'a' });
  });

  it('reports cluster status', async () => {
    await unary(client.put.bind(client), { sessionId: 'status-probe', parts: [{ name: 'a', value: Buffer.from('x') }], ttlSeconds: 0, minReplicas: 0 });
    const cluster = new ClusterServiceClient(node.apiAddress, grpc.credentials.createInsecure());
    const status = await unary<any, any>(cluster.status.bind(cluster), {}).finally(() => cluster.close());
    expect(status.nodeId).toBe('it-node');
    expect(status.sessions).toBeGreaterThan(0n);
    expect(status.members).toEqual([
      expect.objectContaining({ nodeId: 'it-node', address: node.peerAddress, state: 'alive', isSelf: true, replicationLagSeqs: 0n, role: 'edge', coordinator: true }),
    ]);
    // Alone, the node coordinates and masters every partition.
    expect(status.coordinatorNodeId).toBe('it-node');
    expect(status.members[0].masteredPartitions).toEqual(Array.from({ length: status.partitions }, (_, p) => p));
    expect(status.role).toBe('edge');
    expect(status.configMismatches).toEqual([]);
  });

  it('answers the standard gRPC health service', async () => {
    const pkg = grpc.loadPackageDefinition(loadSync(healthProtoPath, { keepCase: true, enums: String })) as any;
    const health = new pkg.grpc.health.v1.Health(node.apiAddress, grpc.credentials.createInsecure());
    for (const service of ['', 'baton.v1.SessionService']) {
      const reply = await unary<any, any>(health.Check.bind(health), { service });
      expect(reply.status).toBe('SERVING');
    }
    health.close();
  });

  it('lets a generic client discover the API by reflection and use it', async () => {
    const services = await listServices(node.apiAddress);
    expect(services).toEqual(expect.arrayContaining(['baton.v1.SessionService', 'baton.v1.ClusterService', 'grpc.health.v1.Health']));
    const pkg = await discover(node.apiAddress, 'baton.v1.SessionService');
    const generic = new pkg.baton.v1.SessionService(node.apiAddress, grpc.credentials.createInsecure());
    await unary(generic.Put.bind(generic), { session_id: 'reflected', parts: [{ name: 'greeting', value: Buffer.from('hi') }] });
    const got = await unary<any, any>(generic.Get.bind(generic), { session_id: 'reflected' });
    generic.close();
    expect(got.found).toBe(true);
    expect(got.session.parts[0].value.toString()).toBe('hi');
  });

  it('serves /metrics that promtool accepts, and health endpoints', async () => {
    // A put that succeeds, one that is refused and a get, so the series below exist.
    await unary(client.put.bind(client), { sessionId: 'metrics-probe', parts: [{ name: 'a', value: Buffer.from('x') }], ttlSeconds: 0, minReplicas: 0 });
    await unary(client.get.bind(client), { sessionId: 'metrics-probe', parts: [], resume: false });
    await expect(
      unary(client.put.bind(client), { sessionId: 'metrics-probe', parts: [{ name: 'Bad Name', value: Buffer.from('x') }], ttlSeconds: 0, minReplicas: 0 }),
    ).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    const body = await (await fetch(`${node.metricsUrl}/metrics`)).text();
    expect(body).toMatch(/^baton_operations_total\{method="put",result="ok"\} [1-9]/m);
    expect(body).toMatch(/^baton_operations_total\{method="put",result="invalid"\} [1-9]/m);
    expect(body).toMatch(/^baton_sessions [1-9]/m);
    expect(body).toMatch(/^baton_operation_duration_seconds_bucket\{le="0.001",method="get"\}/m);
    expect(body).toMatch(/^process_resident_memory_bytes /m);
    expect(body).not.toMatch(/x-1|watched|reflected|metrics-probe/);
    const check = spawnSync('promtool', ['check', 'metrics'], { input: body, encoding: 'utf8' });
    expect(check.error).toBeUndefined();
    expect({ status: check.status, out: check.stdout + check.stderr }).toEqual({ status: 0, out: '' });
    expect((await fetch(`${node.metricsUrl}/healthz`)).status).toBe(200);
    // Ready only once caught up with its peers (alone: after a few heartbeat intervals).
    await node.ready();
    expect(node.logs.find((l) => l.msg === 'baton node ready')).toMatchObject({ caught_up: true });
    expect((await fetch(`${node.metricsUrl}/readyz`)).status).toBe(200);
  });

  it('exits 0 on SIGTERM after serving writes, and logs that it stopped', async () => {
    const extra = await startSidecar(['--node-id', 'short-lived']);
    const c = new SessionServiceClient(extra.apiAddress, grpc.credentials.createInsecure());
    try {
      const pending = Array.from({ length: 50 }, (_, i) =>
        unary(c.put.bind(c), { sessionId: `p${i}`, parts: [{ name: 'a', value: Buffer.alloc(10) }], ttlSeconds: 0, minReplicas: 0 }),
      );
      await Promise.all(pending);
      expect(await extra.stop()).toBe(0);
      expect(extra.logs.some((l) => l.msg === 'baton node stopped')).toBe(true);
    } finally {
      c.close();
      await extra.stop();
    }
  });
});

describe('baton sidecar on a Unix socket', () => {
  it('serves the session API on --api-listen unix:/path', async () => {
    const path = `/tmp/baton-test-${process.pid}.sock`;
    const node = await startSidecar(['--api-listen', `unix:${path}`]);
    const client = new BatonClient(`unix:${path}`);
    try {
      await client.put('over-unix', { greeting: Buffer.from('hello') });
      const session = await client.get('over-unix');
      expect(session?.parts[0]?.value.toString()).toBe('hello');
    } finally {
      client.close();
      expect(await node.stop()).toBe(0);
    }
  });
});

describe('baton command line', () => {
  it('lists every option with its default in both help texts', async () => {
    for (const args of [['--help'], ['sidecar', '--help']]) {
      const { code, stdout } = await runBaton(args);
      expect(code).toBe(0);
      for (const spec of SIDECAR_OPTIONS) {
        expect(stdout).toContain(`--${spec.flag}`);
        expect(stdout).toContain(`BATON_${spec.flag.toUpperCase().replace(/-/g, '_')}`);
      }
      expect(stdout).toContain('default: "127.0.0.1:7400"');
    }
  });

  it('exits non-zero with one line naming a bad option, from a flag or the environment', async () => {
    const flag = await runBaton(['sidecar', '--max-parts-per-session', 'many']);
    expect(flag.code).toBe(2);
    expect(flag.stderr.trim().split('\n')).toHaveLength(1);
    expect(flag.stderr).toMatch(/--max-parts-per-session/);
    const env = await runBaton(['sidecar'], { BATON_API_LISTEN: 'nowhere' });
    expect(env.code).toBe(2);
    expect(env.stderr).toMatch(/--api-listen \(BATON_API_LISTEN\) "nowhere"/);
  });

  it('exits non-zero naming the option whose address is in use', async () => {
    const first = await startSidecar();
    const port = first.apiAddress.split(':')[1]!;
    let second: Awaited<ReturnType<typeof runBaton>>;
    try {
      // Every other address is free (port 0): not the default peer port someone may hold.
      second = await runBaton(['sidecar', '--api-listen', `127.0.0.1:${port}`, '--metrics-listen', '127.0.0.1:0', '--peer-listen', '127.0.0.1:0']);
    } finally {
      await first.stop();
    }
    expect(second.code).toBe(1);
    expect(second.stderr.trim()).toBe(`baton: cannot listen on --api-listen 127.0.0.1:${port}: address already in use`);
  });
});

describe('docs/configuration.md', () => {
  it('documents every option and its variable', () => {
    const doc = require('node:fs').readFileSync(require('node:path').join(__dirname, '..', 'docs', 'configuration.md'), 'utf8') as string;
    for (const spec of SIDECAR_OPTIONS) {
      expect(doc).toContain(`\`--${spec.flag}\``);
      expect(doc).toContain(`\`BATON_${spec.flag.toUpperCase().replace(/-/g, '_')}\``);
    }
  });

  it('gives every preset-driven option its row of the presets table, with the values the sidecar uses', () => {
    const doc = require('node:fs').readFileSync(require('node:path').join(__dirname, '..', 'docs', 'configuration.md'), 'utf8') as string;
    const presetSpecs = SIDECAR_OPTIONS.filter((spec) => spec.fromPreset === true);
    expect(presetSpecs.length).toBeGreaterThan(0);
    expect(doc).toContain('| option | `lan` (default) | `local` | `wan` |');
    for (const spec of presetSpecs) {
      const key = spec.key as keyof NetworkTimings;
      const values = (['lan', 'local', 'wan'] as const).map((name) => NETWORK_PRESETS[name][key]);
      expect(doc).toContain(`| \`--${spec.flag}\` | ${values.join(' | ')} |`);
    }
  });
});

describe('test support: starting a sidecar', () => {
  it('kills a node that does not log its start in time and rejects with what it wrote', async () => {
    // At warn the node never logs "baton node started".
    const err = await startSidecar(['--log-level', 'warn'], {}, { startTimeoutMs: 1500 }).then(
      () => new Error('the start was expected to fail'),
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(SidecarStartError);
    const failed = err as SidecarStartError;
    expect(failed.message).toMatch(/did not log "baton node started" within 1500 ms and was killed/);
    expect(failed.exitCode).toBeNull();
    expect(isRunning(failed.pid!)).toBe(false);
  });

  it('rejects with the stderr of a node that exits before it starts; only a taken port counts as a race worth retrying', async () => {
    const err = await startSidecar(['--max-parts-per-session', 'many']).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SidecarStartError);
    expect((err as SidecarStartError).exitCode).toBe(2);
    expect((err as SidecarStartError).stderr).toMatch(/--max-parts-per-session/);
    expect(isPortRace(err)).toBe(false);

    // The peer port taken for TCP, then for UDP only: both are a race a retry may win.
    const [port] = await freePeerPorts(1);
    const tcp = net.createServer();
    await new Promise<void>((resolve) => tcp.listen(port, '127.0.0.1', resolve));
    try {
      const taken = await startSidecar(['--peer-listen', `127.0.0.1:${port}`]).catch((e: unknown) => e);
      expect((taken as SidecarStartError).stderr).toMatch(/cannot listen on --peer-listen .*address already in use/);
      expect(isPortRace(taken)).toBe(true);
    } finally {
      await new Promise((resolve) => tcp.close(resolve));
    }
    const udp = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => udp.bind(port, '127.0.0.1', resolve));
    try {
      const taken = await startSidecar(['--peer-listen', `127.0.0.1:${port}`]).catch((e: unknown) => e);
      expect(isPortRace(taken)).toBe(true);
    } finally {
      await new Promise<void>((resolve) => udp.close(() => resolve()));
    }
  });

  it("passes a node only the BATON_* variables the test gives, none of the test process's", async () => {
    const saved = { level: process.env.BATON_LOG_LEVEL, api: process.env.BATON_API_LISTEN };
    process.env.BATON_LOG_LEVEL = 'warn';
    process.env.BATON_API_LISTEN = 'nowhere';
    try {
      const node = await startSidecar(['--node-id', 'clean-env'], { BATON_MAX_PARTS_PER_SESSION: '7' }, { startTimeoutMs: 10_000 });
      const baton = new BatonClient(node.apiAddress);
      try {
        const eight = Object.fromEntries(Array.from({ length: 8 }, (_, i) => [`p${i}`, Buffer.from('x')]));
        expect((await rejection(baton.put('limited', eight))).message).toMatch(/over the limit of 7/);
      } finally {
        baton.close();
        expect(await node.stop()).toBe(0);
      }
      const cli = await runBaton(['sidecar', '--max-parts-per-session', 'many']);
      expect(cli.code).toBe(2);
      expect(cli.stderr).toMatch(/--max-parts-per-session/);
      expect(cli.stderr).not.toMatch(/nowhere/);
    } finally {
      for (const [name, value] of [['BATON_LOG_LEVEL', saved.level], ['BATON_API_LISTEN', saved.api]] as const) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
    }
  });
});
