/**
 * --role store on real processes (loopback): two edge nodes and one store node. The store
 * node refuses every application call — gRPC (unary and Watch), HTTP/JSON (the change feed
 * included), the Redis
 * endpoint — with FAILED_PRECONDITION (HTTP 412, RESP -ERR) naming its role, while Status,
 * health and metrics work; Status lists every member's role; and it holds the copies of
 * what the edge nodes write (store nodes take the secondary slots first).
 */
import * as net from 'node:net';
import { credentials, status as GrpcStatus, type ServiceError } from '@grpc/grpc-js';
import { SessionServiceClient } from '../src/gen/baton/v1/session';
import { BatonClientError } from '../src/client/client-errors';
import { FAST_FAILURE_DETECTION, pollUntil, StaticCluster } from './support/static-cluster';

const IDS = ['edge-a', 'edge-b', 'store-s'];

let cluster: StaticCluster | undefined;

beforeAll(async () => {
  cluster = await StaticCluster.start(IDS, ['--replicas', '1', '--partitions', '16', ...FAST_FAILURE_DETECTION], {
    'store-s': ['--role', 'store', '--resp-listen', '127.0.0.1:0'],
  });
  await cluster.waitForAlive(IDS, 10_000);
});

afterAll(async () => {
  await cluster?.stopAll();
  cluster = undefined;
});

async function refusal(call: Promise<unknown>): Promise<{ code: number; message: string }> {
  try {
    await call;
  } catch (err) {
    if (err instanceof BatonClientError) return { code: err.code, message: err.message };
    throw err;
  }
  throw new Error('the call succeeded on a store node');
}

/** One Redis command over a raw connection; resolves with the first reply line. */
function respCommand(port: number, command: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let data = '';
    socket.setTimeout(5000, () => socket.destroy(new Error('no RESP reply within 5 s')));
    socket.on('data', (chunk) => {
      data += chunk.toString('utf8');
      const line = data.indexOf('\r\n');
      if (line >= 0) {
        resolve(data.slice(0, line));
        socket.end();
      }
    });
    socket.on('error', reject);
    socket.write(command);
  });
}

test('the store node refuses application calls on every surface with FAILED_PRECONDITION naming its role', async () => {
  const store = cluster!.client('store-s');
  for (const call of [
    store.put('role-1', { basket: Buffer.from('lamp') }),
    store.get('role-1', { resume: true }),
    store.get('role-1'),
    store.delete('role-1'),
  ]) {
    const refused = await refusal(call);
    expect(refused.code).toBe(GrpcStatus.FAILED_PRECONDITION);
    expect(refused.message).toContain('store node (--role store)');
  }

  const httpUrl = cluster!.node('store-s').process!.httpUrl;
  const http = await fetch(`${httpUrl}/v1/sessions/role-1/parts/basket`, { method: 'PUT', body: 'lamp' });
  expect(http.status).toBe(412);
  const body = (await http.json()) as { code: string; message: string };
  expect(body.code).toBe('failed_precondition');
  expect(body.message).toContain('store node (--role store)');

  const changes = await fetch(`${httpUrl}/v1/sessions/role-1/changes?timeout=0`);
  expect(changes.status).toBe(412);
  expect(((await changes.json()) as { message: string }).message).toContain('store node (--role store)');

  // Watch (a server stream) is refused too.
  const watch = new SessionServiceClient(cluster!.node('store-s').process!.apiAddress, credentials.createInsecure());
  try {
    const error = await new Promise<ServiceError>((resolve, reject) => {
      const call = watch.watch({ sessionId: 'role-1' });
      call.on('error', resolve);
      call.on('data', () => reject(new Error('a store node streamed a watch event')));
      call.on('end', () => reject(new Error('the watch ended without an error')));
    });
    expect(error.code).toBe(GrpcStatus.FAILED_PRECONDITION);
    expect(error.details).toContain('store node (--role store)');
  } finally {
    watch.close();
  }

  const started = cluster!.node('store-s').process!.logs.find((l) => l.msg === 'baton node started')!;
  const reply = await respCommand(Number(started.resp_port), '*3\r\n$3\r\nSET\r\n$6\r\nrole-1\r\n$4\r\nlamp\r\n');
  expect(reply).toMatch(/^-ERR this is a store node \(--role store\)/);
});

test('Status, health and metrics work on the store node, and Status lists every member\'s role', async () => {
  const status = await cluster!.status('store-s');
  expect(status.role).toBe('store');
  expect(status.members.filter((m) => m.nodeId !== '').map((m) => [m.nodeId, m.role])).toEqual([
    ['edge-a', 'edge'],
    ['edge-b', 'edge'],
    ['store-s', 'store'],
  ]);
  expect((await cluster!.status('edge-a')).members.find((m) => m.nodeId === 'store-s')?.role).toBe('store');
  const metricsUrl = cluster!.node('store-s').process!.metricsUrl;
  expect((await fetch(`${metricsUrl}/healthz`)).status).toBe(200);
  expect((await cluster!.node('store-s').process!.scrape()).value('baton_sessions')).toBeGreaterThanOrEqual(0);
});

test('what an edge node writes is held by the store node, the preferred secondary', async () => {
  for (let i = 0; i < 20; i++) {
    const response = await cluster!.client(i % 2 === 0 ? 'edge-a' : 'edge-b').put(`kept-${i}`, { basket: Buffer.from(`cart ${i}`) }, { minReplicas: 1 });
    expect(response.replicasAcked).toBe(1);
  }
  // 20 written and baton's own TLS ticket-key session: every one has its secondary on the store node.
  await pollUntil('the store node holds every session', async () => Number((await cluster!.status('store-s')).sessions) >= 21, 10_000);
  expect(Number((await cluster!.status('edge-a')).sessions)).toBeLessThan(21);
});
