/**
 * PeerService over a real gRPC server on loopback: the Lookup stream that resumes use, and
 * how it behaves when the caller asks too much or the peer goes away; then what mutual TLS
 * keeps out: callers of another cluster, plaintext callers, eavesdroppers and replays.
 */
import { createHmac, randomBytes } from 'node:crypto';
import * as net from 'node:net';
import { credentials, Metadata, Server, type ServerCredentials, type ServiceError, status } from '@grpc/grpc-js';
import { BuzHash } from '../src/store/buzhash';
import { type ClusterKey, parseClusterKeys } from '../src/wire/cluster-key';
import { type LookupResponse, PeerServiceClient, PeerServiceService, type PeerServiceServer, type SessionBatch } from '../src/gen/baton/v1/peer';
import { HybridClock } from '../src/store/hybrid-clock';
import { peerTlsFromKeys } from '../src/wire/peer-tls';
import { DEFAULT_STORE_CONFIG, SessionStore } from '../src/store/store';
import { MAX_IDS_PER_REQUEST, PeerClients, PeerCredentials, peerServiceImplementation } from '../sidecar/transport/peer-service';

const PARTITIONS = 16;
const DEADLINE_MS = 5000;

function newKeys(): ClusterKey[] {
  return parseClusterKeys(randomBytes(32).toString('base64'));
}

/** Peer credentials of a node holding `keys` (plaintext without keys). */
function peerCredentials(keys: readonly ClusterKey[] | undefined, nodeId: string): PeerCredentials {
  return new PeerCredentials(keys === undefined ? undefined : peerTlsFromKeys(keys, nodeId, Date.now()));
}

function listen(server: Server, address: string, serverCredentials: ServerCredentials): Promise<number> {
  return new Promise((resolve, reject) => server.bindAsync(address, serverCredentials, (err, port) => (err ? reject(err) : resolve(port))));
}

describe('PeerService.Lookup', () => {
  const key = newKeys();
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
    server.addService(PeerServiceService, peerServiceImplementation(store, 'peer-a', PARTITIONS));
    address = `127.0.0.1:${await listen(server, '127.0.0.1:0', peerCredentials(key, 'peer-a').server())}`;
  });

  afterAll(() => {
    server.forceShutdown();
  });

  beforeEach(() => {
    clients = new PeerClients(peerCredentials(key, 'caller'));
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
    expect(first[0]!.parts.map((p) => [p.name, p.value?.toString('latin1')])).toEqual([['cart', 'three apples']]);
    expect(second).toHaveLength(1);
    expect(second[0]!.deletedVersion).toBeGreaterThan(0);
    expect(third).toEqual([]);
  });

  test('a lookup for a claim reads each session, then asks the node to hand it over; a plain lookup asks nothing', async () => {
    const handed: string[] = [];
    const owner = new SessionStore({ ...DEFAULT_STORE_CONFIG, nodeId: 'peer-h', partitions: PARTITIONS }, new BuzHash('lookup-test'), new HybridClock());
    const now = Date.now();
    owner.put('mine', [{ name: 'cart', value: Buffer.from('two pears') }], 60_000, now);
    owner.merge({ id: 'theirs', parts: [{ name: 'cart', value: Buffer.from('a lamp'), version: 5, writer: 'peer-x', epoch: 1 }], owner: 'peer-x', epoch: 1, expiresAt: now + 60_000, ttlMs: 60_000, deletedVersion: 0 }, now);
    const handOverServer = new Server();
    handOverServer.addService(
      PeerServiceService,
      peerServiceImplementation(owner, 'peer-h', PARTITIONS, undefined, {
        // As NodeCore.handOver decides: only what this node owns.
        handOverSession: (claimant, sessionId, at) => {
          handed.push(`${sessionId} to ${claimant}`);
          if (owner.isOwnedBy(sessionId, 'peer-h')) owner.claim(sessionId, claimant, at);
          return sessionId !== 'withheld';
        },
      }),
    );
    const at = `127.0.0.1:${await listen(handOverServer, '127.0.0.1:0', peerCredentials(key, 'peer-h').server())}`;
    try {
      expect((await clients.lookup(at, ['mine', 'theirs'], DEADLINE_MS)).map((s) => [s.id, s.owner])).toEqual([['mine', 'peer-h'], ['theirs', 'peer-x']]);
      expect(handed).toEqual([]);
      // The claimant gets the copy as it was (it claims from it), and the node then names it as owner.
      // A copy the node withholds (NodeCore.handOver says false: it is itself resuming it) is left out.
      owner.put('withheld', [{ name: 'cart', value: Buffer.from('half') }], 60_000, now);
      const answered = await clients.lookup(at, ['mine', 'theirs', 'missing', 'withheld'], DEADLINE_MS, 'caller');
      expect(answered.map((s) => [s.id, s.owner, s.epoch])).toEqual([['mine', 'peer-h', 1], ['theirs', 'peer-x', 1]]);
      expect(handed).toEqual(['mine to caller', 'theirs to caller', 'missing to caller', 'withheld to caller']);
      expect(owner.ownerOf('mine')).toMatchObject({ owner: 'caller', epoch: 2 });
    } finally {
      handOverServer.forceShutdown();
    }
  });

  test('an answer larger than one response is split into several, and the client puts them back together', async () => {
    const big = ['big-1', 'big-2', 'big-3', 'big-4', 'big-5'];
    for (const [i, id] of big.entries()) store.put(id, [{ name: 'blob', value: Buffer.alloc(400 * 1024, i) }], 60_000, Date.now());
    const snapshots = await clients.lookup(address, [...big, 's1'], DEADLINE_MS);
    expect(snapshots.map((s) => [s.id, s.parts[0]!.value!.length])).toEqual([...big.map((id) => [id, 400 * 1024]), ['s1', 12]]);

    // On the wire: one request, several responses, all but the last marked `more`.
    const responses: { sessions: number; more: boolean }[] = [];
    await new Promise<void>((resolve, reject) => {
      const call = clients.client(address).lookup(new Metadata());
      call.on('data', (r: LookupResponse) => {
        responses.push({ sessions: r.sessions.length, more: r.more });
        if (!r.more) call.end();
      });
      call.on('error', reject);
      call.on('end', resolve);
      call.write({ requestId: 7n, sessionIds: big, claimantNodeId: '' });
    });
    expect(responses.length).toBeGreaterThan(1);
    expect(responses.reduce((sum, r) => sum + r.sessions, 0)).toBe(big.length);
    expect(responses.map((r) => r.more)).toEqual([...responses.slice(1).map(() => true), false]);
  });

  test('a Fetch naming one partition many times streams it once', async () => {
    const partition = store.partitionOf('s1');
    const fetched: string[] = [];
    await clients.fetch(address, { partitions: Array.from({ length: 1000 }, () => partition) }, DEADLINE_MS, (s) => fetched.push(s.id));
    expect(fetched.filter((id) => id === 's1')).toEqual(['s1']);
  });

  test('FetchBatches gathers the sessions of partitions into messages of about 64 KiB; PeerClients.fetch reads them all', async () => {
    const now = Date.now();
    const ids = Array.from({ length: 2000 }, (_, i) => `batch-${i}`);
    for (const id of ids) store.put(id, [{ name: 'cart', value: Buffer.alloc(200, 7) }], 60_000, now);
    const all = [...Array(PARTITIONS).keys()];
    const held = all.reduce((n, p) => n + store.partitionSize(p), 0);
    const messages: number[] = [];
    await new Promise<void>((resolve, reject) => {
      const call = clients.client(address).fetchBatches({ partitions: all, sessionIds: [] }, new Metadata());
      call.on('data', (batch: SessionBatch) => messages.push(batch.sessions.length));
      call.on('error', reject);
      call.on('end', resolve);
    });
    expect(messages.reduce((a, b) => a + b, 0)).toBe(held);
    // ~260 bytes a session: ~250 sessions a message, not one.
    expect(messages.length).toBeLessThan(held / 100);
    const fetched: string[] = [];
    expect(await clients.fetch(address, { partitions: all }, DEADLINE_MS, (snapshot) => fetched.push(snapshot.id))).toBe(held);
    expect(fetched.filter((id) => id.startsWith('batch-')).sort()).toEqual([...ids].sort());
  });

  test('a peer that predates FetchBatches is asked with Fetch instead', async () => {
    // A server of before: the service without FetchBatches, so gRPC answers UNIMPLEMENTED.
    const { fetchBatches: _unknown, ...before } = PeerServiceService;
    const implementation = peerServiceImplementation(store, 'peer-old', PARTITIONS);
    let fetches = 0;
    const old = new Server();
    old.addService(before, {
      ...implementation,
      fetch: (call: Parameters<PeerServiceServer['fetch']>[0]) => {
        fetches++;
        implementation.fetch(call);
      },
    });
    const oldAddress = `127.0.0.1:${await listen(old, '127.0.0.1:0', peerCredentials(key, 'peer-old').server())}`;
    try {
      const partition = store.partitionOf('s1');
      for (let round = 0; round < 2; round++) {
        const fetched: string[] = [];
        await clients.fetch(oldAddress, { partitions: [partition] }, DEADLINE_MS, (snapshot) => fetched.push(snapshot.id));
        expect(fetched).toContain('s1');
        expect(fetched.length).toBe(store.partitionSize(partition));
      }
      expect(fetches).toBe(2);
    } finally {
      old.forceShutdown();
    }
  });

  test('a request naming too many sessions ends the stream with a clear error; the next lookup opens a new one', async () => {
    const tooMany = Array.from({ length: MAX_IDS_PER_REQUEST + 1 }, (_, i) => `s${i}`);
    await expect(clients.lookup(address, tooMany, DEADLINE_MS)).rejects.toThrow(`at most ${MAX_IDS_PER_REQUEST} sessions`);
    await expect(clients.lookup(address, ['s1'], DEADLINE_MS)).resolves.toHaveLength(1);
  });

  test('a peer that is gone fails the lookup instead of leaving it waiting', async () => {
    const gone = new Server();
    gone.addService(PeerServiceService, peerServiceImplementation(store, 'peer-b', PARTITIONS));
    try {
      const goneAddress = `127.0.0.1:${await listen(gone, '127.0.0.1:0', peerCredentials(key, 'peer-b').server())}`;
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
    const implementation = peerServiceImplementation(store, 'peer-c', PARTITIONS);
    silent.addService(PeerServiceService, {
      ...implementation,
      lookup: () => {
        streams++;
      },
    });
    const silentAddress = `127.0.0.1:${await listen(silent, '127.0.0.1:0', peerCredentials(key, 'peer-c').server())}`;
    try {
      await expect(clients.lookup(silentAddress, ['s1'], 50)).rejects.toThrow('did not answer within 50 ms');
      await expect(clients.lookup(silentAddress, ['s1'], 50)).rejects.toThrow('did not answer within 50 ms');
      expect(streams).toBe(2);
    } finally {
      silent.forceShutdown();
    }
  });
});

/** A TCP relay that records every byte each way, as an eavesdropper on the path would. */
class RecordingRelay {
  readonly toServer: Buffer[] = [];
  readonly toClient: Buffer[] = [];
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();

  constructor(target: number) {
    this.server = net.createServer((client) => {
      const upstream = net.connect(target, '127.0.0.1');
      for (const socket of [client, upstream]) {
        this.sockets.add(socket);
        socket.on('error', () => {});
        socket.on('close', () => this.sockets.delete(socket));
      }
      client.on('data', (chunk: Buffer) => {
        this.toServer.push(chunk);
        upstream.write(chunk);
      });
      upstream.on('data', (chunk: Buffer) => {
        this.toClient.push(chunk);
        client.write(chunk);
      });
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
    });
  }

  listen(): Promise<string> {
    return new Promise((resolve) => this.server.listen(0, '127.0.0.1', () => resolve(`127.0.0.1:${(this.server.address() as net.AddressInfo).port}`)));
  }

  close(): void {
    for (const socket of this.sockets) socket.destroy();
    this.server.close();
  }
}

/** Sends `bytes` on a fresh connection and returns what comes back before the server closes it (at most `withinMs`). */
function replay(port: number, bytes: Buffer, withinMs: number): Promise<Buffer> {
  return new Promise((resolve) => {
    const received: Buffer[] = [];
    const socket = net.connect(port, '127.0.0.1', () => socket.write(bytes));
    const finish = () => {
      clearTimeout(bound);
      socket.destroy();
      resolve(Buffer.concat(received));
    };
    // A bound on how long to listen, not a timing assertion.
    const bound = setTimeout(finish, withinMs);
    socket.on('data', (chunk: Buffer) => received.push(chunk));
    socket.on('error', finish);
    socket.on('close', finish);
  });
}

describe('PeerService over mutual TLS', () => {
  const keys = newKeys();
  const secret = `cart-${randomBytes(12).toString('hex')}`;
  // Long and random, so ciphertext cannot contain it by chance (a 2-byte id did, now and then).
  const sessionId = `session-${randomBytes(12).toString('hex')}`;
  const store = new SessionStore({ ...DEFAULT_STORE_CONFIG, nodeId: 'peer-a', partitions: PARTITIONS }, new BuzHash('tls-test'), new HybridClock());
  /** Handler calls the server saw: a refused handshake never reaches one. */
  let handled = 0;
  let servers: Server[] = [];

  /** A PeerService on loopback serving `store`, with the credentials of `serverKeys`; resolves with its port. */
  async function serve(serverKeys: readonly ClusterKey[] | undefined): Promise<number> {
    const server = new Server();
    const implementation = peerServiceImplementation(store, 'peer-a', PARTITIONS);
    const counted: PeerServiceServer = {
      digests: (call, callback) => {
        handled++;
        implementation.digests(call, callback);
      },
      fetch: (call) => {
        handled++;
        implementation.fetch(call);
      },
      fetchBatches: (call) => {
        handled++;
        implementation.fetchBatches(call);
      },
      lookup: (call) => {
        handled++;
        implementation.lookup(call);
      },
      replay: (call, callback) => {
        handled++;
        implementation.replay(call, callback);
      },
      handoverPrepare: (call, callback) => {
        handled++;
        implementation.handoverPrepare(call, callback);
      },
      handoverCommit: (call, callback) => {
        handled++;
        implementation.handoverCommit(call, callback);
      },
      clusterSettings: (call, callback) => {
        handled++;
        implementation.clusterSettings(call, callback);
      },
    };
    server.addService(PeerServiceService, counted);
    servers.push(server);
    return listen(server, '127.0.0.1:0', peerCredentials(serverKeys, 'peer-a').server());
  }

  /** Digests, Fetch and Lookup through `clients`: what each call returned, or its gRPC status. */
  async function tryEveryCall(clients: PeerClients, address: string): Promise<Record<string, unknown>> {
    const outcome = (p: Promise<unknown>) => p.then((value) => ({ value }), (err: ServiceError) => ({ code: err.code }));
    const fetched: string[] = [];
    return {
      digests: await outcome(clients.digests(address, [], DEADLINE_MS).then((d) => d.size)),
      fetch: await outcome(clients.fetch(address, { sessionIds: [sessionId] }, DEADLINE_MS, (s) => fetched.push(s.parts[0]!.value!.toString('latin1'))).then(() => fetched)),
      lookup: await outcome(clients.lookup(address, [sessionId], DEADLINE_MS).then((s) => s.map((x) => x.parts[0]!.value?.toString('latin1')))),
    };
  }

  beforeAll(() => {
    store.put(sessionId, [{ name: 'cart', value: Buffer.from(secret) }], 60_000, Date.now());
  });

  beforeEach(() => {
    handled = 0;
  });

  afterEach(() => {
    for (const server of servers) server.forceShutdown();
    servers = [];
  });

  test('a member of the cluster reads sessions over Digests, Fetch and Lookup', async () => {
    const port = await serve(keys);
    const member = new PeerClients(peerCredentials(keys, 'peer-b'));
    try {
      expect(await tryEveryCall(member, `127.0.0.1:${port}`)).toEqual({ digests: { value: PARTITIONS }, fetch: { value: [secret] }, lookup: { value: [secret] } });
    } finally {
      member.close();
    }
  });

  test('a caller of another cluster (another key) is refused at the handshake on every call', async () => {
    const port = await serve(keys);
    const outsider = new PeerClients(peerCredentials(newKeys(), 'outsider'));
    try {
      const unavailable = { code: status.UNAVAILABLE };
      expect(await tryEveryCall(outsider, `127.0.0.1:${port}`)).toEqual({ digests: unavailable, fetch: unavailable, lookup: unavailable });
      expect(handled).toBe(0);
    } finally {
      outsider.close();
    }
  });

  test('a plaintext caller is refused, even one presenting the token that used to admit callers', async () => {
    const port = await serve(keys);
    const plaintext = new PeerClients(peerCredentials(undefined, 'plaintext'));
    const raw = new PeerServiceClient(`127.0.0.1:${port}`, credentials.createInsecure());
    try {
      const unavailable = { code: status.UNAVAILABLE };
      expect(await tryEveryCall(plaintext, `127.0.0.1:${port}`)).toEqual({ digests: unavailable, fetch: unavailable, lookup: unavailable });
      // What a sniffer of the old plaintext protocol captured: HMAC(key, 'baton/peer-token/v1').
      const metadata = new Metadata();
      metadata.set('x-baton-peer-token', createHmac('sha256', keys[0]!.key).update('baton/peer-token/v1').digest('base64'));
      const code = await new Promise<number>((resolve) =>
        raw.digests({ partitions: [] }, metadata, { deadline: Date.now() + DEADLINE_MS }, (err) => resolve(err === null ? status.OK : err.code)),
      );
      expect(code).toBe(status.UNAVAILABLE);
      expect(handled).toBe(0);
    } finally {
      raw.close();
      plaintext.close();
    }
  });

  test('a session fetched between members never crosses the wire in clear, and the captured bytes cannot be replayed', async () => {
    const port = await serve(keys);
    const relay = new RecordingRelay(port);
    const member = new PeerClients(peerCredentials(keys, 'peer-b'));
    try {
      const through = await relay.listen();
      expect(await tryEveryCall(member, through)).toMatchObject({ fetch: { value: [secret] }, lookup: { value: [secret] } });
      const onWire = Buffer.concat([...relay.toServer, ...relay.toClient]);
      expect(onWire.length).toBeGreaterThan(secret.length);
      expect(onWire.includes(secret)).toBe(false);
      expect(onWire.includes(sessionId)).toBe(false);
      // An eavesdropper sends the client's bytes again on a connection of its own.
      handled = 0;
      const answer = await replay(port, Buffer.concat(relay.toServer), 2000);
      expect(answer.includes(secret)).toBe(false);
      expect(handled).toBe(0);
    } finally {
      member.close();
      relay.close();
    }
  });

  test('the same capture without keys shows the session in clear (what the test above would see without TLS)', async () => {
    const port = await serve(undefined);
    const relay = new RecordingRelay(port);
    const member = new PeerClients(peerCredentials(undefined, 'peer-b'));
    try {
      expect(await tryEveryCall(member, await relay.listen())).toMatchObject({ fetch: { value: [secret] } });
      expect(Buffer.concat(relay.toClient).includes(secret)).toBe(true);
    } finally {
      member.close();
      relay.close();
    }
  });

  test('during a key rotation nodes listing the keys in either order read from each other', async () => {
    const newer = newKeys()[0]!;
    const port = await serve([keys[0]!, newer]);
    const rotated = new PeerClients(peerCredentials([newer, keys[0]!], 'peer-b'));
    const newOnly = new PeerClients(peerCredentials([newer], 'peer-c'));
    try {
      expect(await tryEveryCall(rotated, `127.0.0.1:${port}`)).toMatchObject({ fetch: { value: [secret] }, lookup: { value: [secret] } });
      // A node that dropped the old key before the server moved the new one first cannot.
      expect(await tryEveryCall(newOnly, `127.0.0.1:${port}`)).toMatchObject({ fetch: { code: status.UNAVAILABLE } });
    } finally {
      rotated.close();
      newOnly.close();
    }
  });
});
