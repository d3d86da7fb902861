/**
 * PeerService over a real gRPC server on loopback: the Lookup stream that resumes use, and
 * how it behaves when the caller is not in the cluster, asks too much, or the peer goes away.
 */
import { randomBytes } from 'node:crypto';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { BuzHash } from '../src/buzhash';
import { parseClusterKeys } from '../src/cluster-key';
import { type LookupResponse, PeerServiceService } from '../src/gen/baton/v1/peer';
import { HybridClock } from '../src/hybrid-clock';
import { DEFAULT_STORE_CONFIG, SessionStore } from '../src/store';
import { MAX_IDS_PER_REQUEST, PeerAuth, PeerClients, peerServiceImplementation } from '../sidecar/peer-service';

const PARTITIONS = 16;
const DEADLINE_MS = 5000;

function listen(server: Server, address: string): Promise<number> {
  return new Promise((resolve, reject) => server.bindAsync(address, ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))));
}

describe('PeerService.Lookup', () => {
  const key = parseClusterKeys(randomBytes(32).toString('base64'));
  const store = new SessionStore({ ...DEFAULT_STORE_CONFIG, nodeId: 'peer-a', partitions: PARTITIONS }, new BuzHash('lookup-test'), new HybridClock());
  let server: Server;
  let address: string;
  let clients: PeerClients;

  beforeAll(async () => {
    const now = Date.now();
    store.put('s1', [{ name: 'cart', value: Buffer.from('three apples') }], 60_000, now);
    store.put('s2', [{ name: 'auth', value: Buffer.from('token') }], 60_000, now);
    store.delete('s2', [], now);
    server = new Server();
    server.addService(PeerServiceService, peerServiceImplementation(store, 'peer-a', new PeerAuth(key), PARTITIONS));
    address = `127.0.0.1:${await listen(server, '127.0.0.1:0')}`;
  });

  afterAll(() => {
    server.forceShutdown();
  });

  beforeEach(() => {
    clients = new PeerClients(new PeerAuth(key));
  });

  afterEach(() => {
    clients.close();
  });

  test('answers every request on one stream with the sessions it holds, tombstones included', async () => {
    const [first, second, third] = await Promise.all([
      clients.lookup(address, ['s1', 'missing'], DEADLINE_MS),
      clients.lookup(address, ['s2'], DEADLINE_MS),
      clients.lookup(address, [], DEADLINE_MS),
    ]);
    expect(first.map((s) => s.id)).toEqual(['s1']);
    expect(first[0]!.owner).toBe('peer-a');
    expect(first[0]!.parts.map((p) => [p.name, p.value])).toEqual([['cart', 'three apples']]);
    expect(second).toHaveLength(1);
    expect(second[0]!.deletedVersion).toBeGreaterThan(0);
    expect(third).toEqual([]);
  });

  test('an answer larger than one response is split into several, and the client puts them back together', async () => {
    const big = ['big-1', 'big-2', 'big-3', 'big-4', 'big-5'];
    for (const [i, id] of big.entries()) store.put(id, [{ name: 'blob', value: Buffer.alloc(400 * 1024, i) }], 60_000, Date.now());
    const snapshots = await clients.lookup(address, [...big, 's1'], DEADLINE_MS);
    expect(snapshots.map((s) => [s.id, s.parts[0]!.value!.length])).toEqual([...big.map((id) => [id, 400 * 1024]), ['s1', 12]]);

    // On the wire: one request, several responses, all but the last marked `more`.
    const responses: { sessions: number; more: boolean }[] = [];
    const auth = new PeerAuth(key);
    await new Promise<void>((resolve, reject) => {
      const call = clients.client(address).lookup(auth.metadata());
      call.on('data', (r: LookupResponse) => {
        responses.push({ sessions: r.sessions.length, more: r.more });
        if (!r.more) call.end();
      });
      call.on('error', reject);
      call.on('end', resolve);
      call.write({ requestId: 7n, sessionIds: big });
    });
    expect(responses.length).toBeGreaterThan(1);
    expect(responses.reduce((sum, r) => sum + r.sessions, 0)).toBe(big.length);
    expect(responses.map((r) => r.more)).toEqual([...responses.slice(1).map(() => true), false]);
  });

  test('a caller without the cluster key is refused', async () => {
    const outsider = new PeerClients(new PeerAuth(parseClusterKeys(randomBytes(32).toString('base64'))));
    try {
      await expect(outsider.lookup(address, ['s1'], DEADLINE_MS)).rejects.toThrow(/peer token/);
    } finally {
      outsider.close();
    }
  });

  test('a request naming too many sessions ends the stream with a clear error; the next lookup opens a new one', async () => {
    const tooMany = Array.from({ length: MAX_IDS_PER_REQUEST + 1 }, (_, i) => `s${i}`);
    await expect(clients.lookup(address, tooMany, DEADLINE_MS)).rejects.toThrow(`at most ${MAX_IDS_PER_REQUEST} sessions`);
    await expect(clients.lookup(address, ['s1'], DEADLINE_MS)).resolves.toHaveLength(1);
  });

  test('a peer that is gone fails the lookup instead of leaving it waiting', async () => {
    const gone = new Server();
    gone.addService(PeerServiceService, peerServiceImplementation(store, 'peer-b', new PeerAuth(key), PARTITIONS));
    try {
      const goneAddress = `127.0.0.1:${await listen(gone, '127.0.0.1:0')}`;
      await expect(clients.lookup(goneAddress, ['s1'], DEADLINE_MS)).resolves.toHaveLength(1);
      gone.forceShutdown();
      await expect(clients.lookup(goneAddress, ['s1'], DEADLINE_MS)).rejects.toThrow();
    } finally {
      // A server left listening would keep jest from exiting.
      gone.forceShutdown();
    }
  });

  test('a stream on which a request went unanswered past its deadline is replaced', async () => {
    const silent = new Server();
    let streams = 0;
    const implementation = peerServiceImplementation(store, 'peer-c', new PeerAuth(key), PARTITIONS);
    silent.addService(PeerServiceService, {
      ...implementation,
      lookup: () => {
        streams++;
      },
    });
    const silentAddress = `127.0.0.1:${await listen(silent, '127.0.0.1:0')}`;
    try {
      await expect(clients.lookup(silentAddress, ['s1'], 50)).rejects.toThrow('did not answer within 50 ms');
      await expect(clients.lookup(silentAddress, ['s1'], 50)).rejects.toThrow('did not answer within 50 ms');
      expect(streams).toBe(2);
    } finally {
      silent.forceShutdown();
    }
  });
});
