/**
 * Replication protocol scenarios on a simulated network and virtual time.
 *
 * Each scenario builds a SimCluster (test/support/sim-cluster.ts): every node the real
 * node core (store, membership, placement, replication engine, SessionApi), every
 * datagram sealed and opened with a cluster key, on a SimNetwork
 * (test/support/sim-network.ts) that delays, drops, duplicates, reorders and partitions
 * by seed. Writes are SessionApi calls, flushed as the sidecar flushes them. After the writes stop, the network runs on (bounded
 * virtual time) and every replica must hold exactly its owner's state. No test sleeps and
 * no test asserts timings; a failing seed replays exactly.
 */
import { findStoredPart } from '../src/store/store';
import { DatagramSealer } from '../src/wire/datagram-codec';
import { Datagram, DeltaKind } from '../src/gen/baton/v1/wire';
import { SeededRandom } from '../src/store/random';
import { HOLD_STALL_MS } from '../src/core/replication-engine';
import type { GilbertElliott, LinkProfile, Transmission } from './support/sim-network';
import { PERFECT_LINK } from './support/sim-network';
import { makeClusterKey, SimCluster, type SimClusterOptions, type SimNode } from './support/sim-cluster';

const TRANSPORTS = ['unicast', 'multicast'] as const;
/** Most virtual time the network runs after the last write before replicas are compared. */
const SETTLE_MS = 30_000;

function lossy(loss: number, extra: Partial<LinkProfile> = {}): LinkProfile {
  return { ...PERFECT_LINK, loss, ...extra };
}

/**
 * Starts a cluster, runs until every node sees every other as live, and lets the state
 * transfers nodes start when they first see each other finish.
 */
function startCluster(options: SimClusterOptions): SimCluster {
  const cluster = new SimCluster(options);
  if (!cluster.runUntil(() => cluster.membershipSettled(), 10_000)) throw new Error('membership did not settle');
  cluster.runFor(50);
  return cluster;
}

interface Workload {
  /** Session id → the node that owns (writes) it. */
  owners: Map<string, string>;
  writes: number;
}

interface WorkloadOptions {
  seed: number;
  /** Nodes that write (each owns its own sessions). */
  writers: SimNode[];
  operations: number;
  sessionsPerWriter: number;
  /** Virtual time between two operations (ms). */
  spacingMs: number;
  valueBytes?: [number, number];
  /**
   * Which operations besides puts: part deletes and touches ('parts'), or those and whole
   * session deletes too ('all'). Default: puts only.
   */
  mix?: 'parts' | 'all';
  owners?: Map<string, string>;
  /** Prefix of session ids (distinct workloads use distinct ids). */
  prefix?: string;
  /** TTLs (ms; 0 = keep the session's) that writes and touches pick from; default: 0 only. */
  ttls?: number[];
}

/** Random latin1 text (all 256 byte values) that values are cut from. */
const VALUE_SOURCE = (() => {
  const random = new SeededRandom(0xba70);
  const bytes = Buffer.alloc(64 * 1024);
  for (let i = 0; i < bytes.length; i++) bytes[i] = random.below(256);
  return bytes.toString('latin1');
})();

/**
 * A value of about `length` bytes, different from the others (a random tag), drawn from
 * the workload's own source only: a test replays the same whether run alone or not.
 */
function valueOf(random: SeededRandom, length: number): string {
  const tag = `${random.nextUint32().toString(36)}:`;
  const size = Math.max(0, length - tag.length);
  const start = random.below(VALUE_SOURCE.length - size);
  return tag + VALUE_SOURCE.slice(start, start + size);
}

/**
 * Random writes by the given writers, each on its own sessions, with the network running
 * between operations. With `mix`, some operations delete parts or whole sessions, or
 * touch, on any session the writer has written (acknowledged by its secondaries or not),
 * and a deleted session may be written again, which revives it.
 */
function runWorkload(cluster: SimCluster, options: WorkloadOptions): Workload {
  const random = new SeededRandom(options.seed);
  const owners = options.owners ?? new Map<string, string>();
  const [minBytes, maxBytes] = options.valueBytes ?? [1, 200];
  const prefix = options.prefix ?? 's';
  let writes = 0;
  for (let op = 0; op < options.operations; op++) {
    const writer = options.writers[random.below(options.writers.length)]!;
    if (!writer.running) {
      cluster.runFor(options.spacingMs);
      continue;
    }
    const id = `${prefix}-${writer.nodeId}-${random.below(options.sessionsPerWriter)}`;
    const roll = random.below(100);
    const mix = owners.has(id) ? options.mix : undefined;
    if (mix === 'all' && roll < 6) {
      writer.deleteSession(id);
    } else if (mix !== undefined && roll >= 6 && roll < 14) {
      writer.deleteParts(id, [pickPart(random)]);
    } else if (mix !== undefined && roll >= 14 && roll < 22) {
      writer.touch(id, pickTtl(random, options.ttls));
    } else {
      const parts: Record<string, string> = {};
      const count = 1 + random.below(3);
      for (let i = 0; i < count; i++) parts[pickPart(random)] = valueOf(random, minBytes + random.below(maxBytes - minBytes + 1));
      writer.write(id, parts, { ttlMs: pickTtl(random, options.ttls) });
      owners.set(id, writer.nodeId);
      writes++;
    }
    cluster.runFor(options.spacingMs * (0.5 + random.next()));
  }
  return { owners, writes };
}

/** A TTL from the list (drawn only when there is one, so workloads without keep their seeds). */
function pickTtl(random: SeededRandom, ttls: number[] | undefined): number {
  return ttls === undefined ? 0 : ttls[random.below(ttls.length)]!;
}

const PART_NAMES = ['handshake', 'login', 'basket', 'conn', 'prefs', 'csrf'];
function pickPart(random: SeededRandom): string {
  return PART_NAMES[random.below(PART_NAMES.length)]!;
}

/**
 * Runs the network on after the writes (checking each virtual second, for at most
 * SETTLE_MS) until the replicas match their owners and every sender is fully
 * acknowledged, then asserts convergence and bounds.
 */
function expectConverged(cluster: SimCluster, owners: Map<string, string>, options: { allowExtraCopies?: boolean; forgeriesInjected?: boolean } = {}): void {
  for (let waited = 0; waited < SETTLE_MS; waited += 1000) {
    cluster.runFor(1000);
    const quiet = cluster.running.every((n) => n.engine.allAcknowledged() && n.engine.reassemblyBytesHeld() === 0);
    if (quiet && cluster.divergences(owners, options).length === 0) break;
  }
  expect(cluster.divergences(owners, options)).toEqual([]);
  expect(cluster.boundViolations).toEqual([]);
  for (const node of cluster.running) {
    expect([node.nodeId, node.oversizedPayloads]).toEqual([node.nodeId, 0]);
    // Nothing forged or malformed came from the simulated peers; network duplicates are
    // stopped by the replay window.
    if (options.forgeriesInjected !== true) {
      const drops = Object.fromEntries([...node.openerDrops].filter(([reason]) => reason !== 'replayed'));
      expect([node.nodeId, drops]).toEqual([node.nodeId, {}]);
    }
    expect([node.nodeId, node.engine.reassemblyBytesHeld()]).toEqual([node.nodeId, 0]);
  }
}

function totalRetransmissions(cluster: SimCluster): number {
  return cluster.nodes.reduce((sum, n) => sum + n.engine.stats.retransmissions, 0);
}

// --- loss --------------------------------------------------------------------------

describe.each(TRANSPORTS)('%s: steady loss', (transport) => {
  test.each([0, 0.05, 0.1, 0.3])('loss %p: every replica converges to its owner, buffers stay bounded', (loss) => {
    const cluster = startCluster({ seed: 11, nodes: 3, transport, profile: lossy(loss), retransmitBufferBytes: 32 * 1024, maxReassemblyBytes: 64 * 1024 });
    const { owners } = runWorkload(cluster, { seed: 101, writers: cluster.nodes, operations: 240, sessionsPerWriter: 15, spacingMs: 4, mix: 'all', valueBytes: [1, 2500] });
    expectConverged(cluster, owners);
    if (loss > 0) expect(totalRetransmissions(cluster)).toBeGreaterThan(0);
    else expect(totalRetransmissions(cluster)).toBe(0);
  });
});

describe.each(TRANSPORTS)('%s: burst loss and reordering', (transport) => {
  const burst: GilbertElliott = { pGoodToBad: 0.03, pBadToGood: 0.25, lossGood: 0.01, lossBad: 0.7 };

  test('Gilbert–Elliott burst loss', () => {
    const cluster = startCluster({ seed: 12, nodes: 3, transport, profile: lossy(0, { burst }) });
    const { owners } = runWorkload(cluster, { seed: 102, writers: cluster.nodes, operations: 240, sessionsPerWriter: 12, spacingMs: 2, mix: 'all' });
    expectConverged(cluster, owners);
    expect(cluster.net.stats.lost).toBeGreaterThan(0);
  });

  test('reordering and duplication: duplicates are detected, order does not matter', () => {
    const cluster = startCluster({ seed: 13, nodes: 3, transport, profile: lossy(0.02, { duplicate: 0.2, reorder: 0.3, reorderExtraMs: 15 }) });
    const { owners } = runWorkload(cluster, { seed: 103, writers: cluster.nodes, operations: 240, sessionsPerWriter: 10, spacingMs: 1, mix: 'all' });
    expectConverged(cluster, owners);
    expect(cluster.net.stats.duplicated).toBeGreaterThan(0);
    // A network duplicate is the same sealed datagram: the opener's replay window drops it.
    const replayed = cluster.nodes.reduce((sum, n) => sum + n.count('replayed'), 0);
    expect(replayed).toBeGreaterThan(0);
    expect(replayed).toBeLessThanOrEqual(cluster.net.stats.duplicated);
    expect(cluster.net.stats.reordered).toBeGreaterThan(0);
  });
});

// --- acknowledgements ----------------------------------------------------------------

describe.each(TRANSPORTS)('%s: acknowledgements', (transport) => {
  test('the data a replica reads in one turn is acknowledged once per channel, and every synchronous write in it completes', () => {
    // Every datagram takes exactly 1 ms: a burst of writes arrives at the replicas at once.
    const cluster = startCluster({ seed: 23, nodes: 3, transport, replicas: 2, profile: { ...PERFECT_LINK, delayMinMs: 1, delayMaxMs: 1 } });
    const [writer, ...replicas] = cluster.nodes as [SimNode, SimNode, SimNode];
    const acksBefore = replicas.map((r) => r.engine.stats.datagramsSent.ack);
    const dataBefore = replicas.map((r) => r.engine.stats.datagramsReceived.data);
    const tickets: number[] = [];
    // Sessions of partitions the writer holds first: new ones, written without a look-up (all in one turn).
    writer.idsHeldFirst('burst', 10).forEach((id, i) => tickets.push(writer.write(id, { basket: `items-${i}` }, { sync: 2 }).ticket!));
    expect(cluster.runUntil(() => tickets.every((t) => writer.completedTickets.has(t)), 1000)).toBe(true);
    expect(tickets.map((t) => writer.completedTickets.get(t))).toEqual(tickets.map(() => 2));
    // Ten datagrams with an acknowledgement requested, one acknowledgement from each replica.
    expect(replicas.map((r, i) => r.engine.stats.datagramsReceived.data - dataBefore[i]!)).toEqual([10, 10]);
    expect(replicas.map((r, i) => r.engine.stats.datagramsSent.ack - acksBefore[i]!)).toEqual([1, 1]);
  });
});

// --- tail loss ---------------------------------------------------------------------

describe.each(TRANSPORTS)('%s: tail loss', (transport) => {
  test('the last datagrams of a write burst are lost: heartbeats reveal them and NACKs repair them', () => {
    const cluster = startCluster({ seed: 14, nodes: 3, transport });
    const writer = cluster.nodes[0]!;
    const owners = new Map<string, string>();
    // Every channel of the writer is fresh (sequence numbers from 1, one packet per write):
    // the first transmissions of packets 16-20 are lost, retransmissions pass.
    cluster.net.filter = (t: Transmission) =>
      t.from === writer.address && t.meta.kind === 'data' && t.meta.retransmit === false && (t.meta.seq ?? 0) > 15;
    for (let i = 0; i < 20; i++) {
      writer.write(`tail-${i}`, { basket: `items-${i}`.repeat(20) });
      owners.set(`tail-${i}`, writer.nodeId);
    }
    // No more data follows: only heartbeats (carrying the highest sequence number) can tell.
    expectConverged(cluster, owners);
    expect(cluster.net.stats.dropped).toBeGreaterThan(0);
    const nacks = cluster.nodes.reduce((sum, n) => sum + n.engine.stats.datagramsSent.nack, 0);
    expect(nacks).toBeGreaterThan(0);
  });
});

// --- partitions, restarts, slow receivers --------------------------------------------

describe.each(TRANSPORTS)('%s: a receiver cut off past the retransmit buffer', (transport) => {
  test('short partition (still live): NACKs meet Gone, the receiver resyncs and converges', () => {
    const cluster = startCluster({ seed: 15, nodes: 3, transport, retransmitBufferBytes: 4 * 1024 });
    const [writer, , receiver] = cluster.nodes as [SimNode, SimNode, SimNode];
    const before = runWorkload(cluster, { seed: 105, writers: [writer], operations: 20, sessionsPerWriter: 10, spacingMs: 5 });
    cluster.net.isolate(receiver.address);
    // 2 s: shorter than deadAfterMs, so the receiver stays in everyone's view and the
    // writer keeps sending to it; ~40 KB of writes overflow the 4 KiB buffer.
    runWorkload(cluster, { seed: 106, writers: [writer], operations: 200, sessionsPerWriter: 40, spacingMs: 10, valueBytes: [100, 300], owners: before.owners });
    expect(receiver.membership.liveNodeIds()).toContain(writer.nodeId);
    cluster.net.healAll();
    expectConverged(cluster, before.owners);
    expect(writer.engine.channelCounters().goneReplies).toBeGreaterThan(0);
    expect(receiver.resyncs.some((r) => r.request.reason === 'gap' && r.request.peerNodeId === writer.nodeId && r.outcome === 'ok')).toBe(true);
  });

  test('long partition (declared dead): on return it is pulled up to date', () => {
    const cluster = startCluster({ seed: 16, nodes: 3, transport, retransmitBufferBytes: 4 * 1024 });
    const [writer, , receiver] = cluster.nodes as [SimNode, SimNode, SimNode];
    const before = runWorkload(cluster, { seed: 107, writers: [writer], operations: 20, sessionsPerWriter: 10, spacingMs: 5 });
    cluster.net.isolate(receiver.address);
    runWorkload(cluster, { seed: 108, writers: [writer], operations: 200, sessionsPerWriter: 40, spacingMs: 40, mix: 'all', owners: before.owners });
    expect(writer.membership.liveNodeIds()).not.toContain(receiver.nodeId);
    cluster.net.healAll();
    expectConverged(cluster, before.owners);
  });
});

describe.each(TRANSPORTS)('%s: restarts and slow receivers', (transport) => {
  test('a sender restarts mid-stream (new incarnation, empty store): it gets its state back and replicas converge', () => {
    const cluster = startCluster({ seed: 17, nodes: 3, transport, profile: lossy(0.05) });
    const [writer] = cluster.nodes as [SimNode, SimNode, SimNode];
    const { owners } = runWorkload(cluster, { seed: 109, writers: cluster.nodes, operations: 150, sessionsPerWriter: 10, spacingMs: 3, mix: 'all' });
    writer.stop();
    cluster.runFor(400);
    writer.restart();
    expect(writer.store.getStats().sessions).toBe(0);
    runWorkload(cluster, { seed: 110, writers: cluster.nodes, operations: 150, sessionsPerWriter: 10, spacingMs: 3, mix: 'all', owners });
    expectConverged(cluster, owners);
    expect(writer.resyncs.filter((r) => r.outcome === 'ok').length).toBeGreaterThan(0);
    // Sessions it wrote before the restart are back on it.
    const mine = [...owners].filter(([, o]) => o === writer.nodeId);
    expect(mine.length).toBeGreaterThan(0);
    for (const [id] of mine) expect(writer.store.snapshot(id, cluster.net.now)).toBeDefined();
  });

  test('a slow, lossy receiver (high delay and loss on its links only)', () => {
    const cluster = startCluster({ seed: 18, nodes: 3, transport });
    const slow = cluster.nodes[2]!;
    cluster.net.setAddressProfile(slow.address, { ...PERFECT_LINK, delayMinMs: 20, delayMaxMs: 90, loss: 0.2, reorder: 0.2, reorderExtraMs: 50 });
    const { owners } = runWorkload(cluster, { seed: 111, writers: cluster.nodes.slice(0, 2), operations: 300, sessionsPerWriter: 20, spacingMs: 2, mix: 'all' });
    expectConverged(cluster, owners);
  });
});

// --- fragmentation -------------------------------------------------------------------

describe.each(TRANSPORTS)('%s: fragmented deltas', (transport) => {
  test('values larger than a datagram, with lost fragments, arrive whole; reassembly memory is released', () => {
    const cluster = startCluster({ seed: 19, nodes: 3, transport, profile: lossy(0.15), maxReassemblyBytes: 64 * 1024 });
    const { owners } = runWorkload(cluster, { seed: 112, writers: cluster.nodes, operations: 80, sessionsPerWriter: 6, spacingMs: 5, valueBytes: [1500, 9000] });
    expectConverged(cluster, owners);
    expect(cluster.nodes.reduce((sum, n) => sum + n.engine.stats.fragmentsSent, 0)).toBeGreaterThan(100);
    expect(cluster.peaks.reassemblyBytes).toBeGreaterThan(0);
  });
});

// --- bounds under heavy loss -----------------------------------------------------------

describe.each(TRANSPORTS)('%s: memory bounds under 30%% loss', (transport) => {
  test('tight retransmit and reassembly bounds hold at every step; overflowing reassembly resyncs instead of losing deltas', () => {
    const options = { retransmitBufferBytes: 12 * 1024, maxReassemblyBytes: 12 * 1024 };
    const cluster = startCluster({ seed: 20, nodes: 3, transport, profile: lossy(0.3), ...options });
    const { owners } = runWorkload(cluster, { seed: 113, writers: cluster.nodes, operations: 150, sessionsPerWriter: 8, spacingMs: 2, valueBytes: [200, 7000], mix: 'all' });
    expectConverged(cluster, owners);
    const bounds = cluster.bounds();
    expect(cluster.peaks.retransmitBufferBytes).toBeGreaterThan(0);
    expect(cluster.peaks.retransmitBufferBytes).toBeLessThanOrEqual(bounds.retransmitBufferBytes);
    expect(cluster.peaks.reassemblyBytes).toBeGreaterThan(0);
    expect(cluster.peaks.reassemblyBytes).toBeLessThanOrEqual(bounds.reassemblyBytes);
    // The bounds bit: unacknowledged entries were trimmed, and some receivers resynced.
    expect(cluster.nodes.reduce((sum, n) => sum + n.engine.channelCounters().goneReplies, 0)).toBeGreaterThan(0);
    expect(cluster.transfers.ok).toBeGreaterThan(0);
  });
});

// --- cluster keys and hostile datagrams ----------------------------------------------

/** A key whose id differs from every key given. */
function keyNotLike(seed: number, ...others: { id: number }[]): ReturnType<typeof makeClusterKey> {
  for (let s = seed; ; s++) {
    const key = makeClusterKey(s);
    if (others.every((o) => o.id !== key.id)) return key;
  }
}

describe.each(TRANSPORTS)('%s: key rotation', (transport) => {
  test('[K1] → [K1,K2] everywhere → [K2,K1] node by node → [K2]: nothing is refused, replicas converge', () => {
    const k1 = makeClusterKey(1);
    const k2 = keyNotLike(2, k1);
    const cluster = startCluster({ seed: 21, nodes: 3, transport, keys: [k1], profile: lossy(0.05) });
    const owners = new Map<string, string>();
    const phase = (seed: number) => runWorkload(cluster, { seed, writers: cluster.nodes, operations: 60, sessionsPerWriter: 10, spacingMs: 3, mix: 'all', owners });
    phase(114);
    for (const node of cluster.nodes) node.setKeys([k1, k2]);
    phase(115);
    for (const node of cluster.nodes) {
      node.setKeys([k2, k1]);
      phase(116 + node.index);
    }
    // Let datagrams still sealed with K1 arrive before K1 is dropped.
    cluster.runFor(500);
    for (const node of cluster.nodes) node.setKeys([k2]);
    phase(120);
    expectConverged(cluster, owners);
    // A datagram sealed with the retired key is now refused.
    const old = new DatagramSealer([k1], 0x77n);
    cluster.net.inject(cluster.nodes[0]!.address, cluster.nodes[1]!.address, old.seal(Buffer.from('x')));
    cluster.runFor(10);
    expect(cluster.nodes[1]!.count('unknown_key')).toBe(1);
  });
});

describe.each(TRANSPORTS)('%s: forged, replayed and garbage datagrams', (transport) => {
  test('are dropped and counted by reason, and change nothing', () => {
    const cluster = startCluster({ seed: 22, nodes: 3, transport });
    const [a, b] = cluster.nodes as [SimNode, SimNode, SimNode];
    // Capture what reaches b; also take away (and keep) one original data datagram, whose
    // packet number b therefore never sees (NACKs repair the loss under a new one).
    const captured: Transmission[] = [];
    let unseen: Transmission | undefined;
    cluster.net.filter = (t) => {
      if (t.to !== b.address || t.meta.kind !== 'data') return false;
      if (unseen === undefined && t.meta.seq === 5 && t.meta.retransmit === false) {
        unseen = t;
        return true;
      }
      captured.push(t);
      return false;
    };
    const { owners } = runWorkload(cluster, { seed: 121, writers: [a], operations: 30, sessionsPerWriter: 5, spacingMs: 3 });
    cluster.runFor(1000);
    cluster.net.filter = undefined;
    expect(captured.length).toBeGreaterThan(5);
    expect(unseen).toBeDefined();

    const digests = () => cluster.nodes.map((n) => Array.from({ length: 32 }, (_, p) => n.store.digest(p).toString(16)).join(','));
    const views = () => cluster.nodes.map((n) => n.membership.liveNodeIds().join(','));
    const applied = () => cluster.nodes.map((n) => n.engine.stats.deltasApplied);
    const before = { digests: digests(), views: views(), applied: applied() };

    const random = new SeededRandom(122);
    // The replay window is checked before the tag, so tampering is tried on a packet
    // number b has not seen; replays use datagrams it has.
    const genuine = Buffer.from(unseen!.bytes);
    const delivered = Buffer.from(captured[captured.length - 1]!.bytes);
    const flipped = (at: number) => {
      const copy = Buffer.from(genuine);
      copy[at]! ^= 1 << random.below(8);
      return copy;
    };
    const sameIdKey = (() => {
      for (let s = 1000; ; s++) {
        const key = makeClusterKey(s);
        if (key.id === cluster.options.keys[0]!.id && !key.key.equals(cluster.options.keys[0]!.key)) return key;
      }
    })();
    const forgeries: [string, Uint8Array][] = [
      ['auth_failed', flipped(20 + random.below(genuine.length - 36))], // ciphertext
      ['auth_failed', flipped(genuine.length - 1 - random.below(16))], // tag
      ['auth_failed', flipped(4 + random.below(8))], // incarnation in the header
      ['auth_failed', new DatagramSealer([sameIdKey], 0x1234n).seal(Buffer.from('forged'))], // wrong key, same id
      ['unknown_key', new DatagramSealer([keyNotLike(2000, cluster.options.keys[0]!)], 0x1234n).seal(Buffer.from('forged'))],
      ['plaintext_refused', new DatagramSealer(undefined, 0x1234n).seal(Datagram.encode({ senderNodeId: a.nodeId, body: { $case: 'leave', leave: {} } }).finish())],
      ['bad_magic', Buffer.from(Array.from({ length: 200 }, () => random.below(256)).map((x, i) => (i === 0 ? 0 : x)))],
      ['truncated', genuine.subarray(0, 12)],
      ['oversized', Buffer.concat([genuine, Buffer.alloc(2000)])],
      ['bad_version', (() => { const c = Buffer.from(genuine); c[2] = 9; return c; })()],
      ['replayed', delivered],
      ['replayed', Buffer.from(captured[0]!.bytes)],
    ];
    for (const [, bytes] of forgeries) cluster.net.inject(a.address, b.address, bytes);
    // An insider with the cluster key: authentic, but the payload is not a Datagram.
    const insider = new DatagramSealer(cluster.options.keys, 0x9999n);
    cluster.net.inject(a.address, b.address, insider.seal(Buffer.from([0xff, 0xff, 0xff, 0x0f, 0x08])));
    cluster.runFor(100);

    const expected: Record<string, number> = {};
    for (const [reason] of forgeries) expected[reason] = (expected[reason] ?? 0) + 1;
    expect(Object.fromEntries(b.openerDrops)).toEqual(expected);
    expect(Object.fromEntries(b.engineDrops)).toEqual({ malformed: 1 });
    expect({ digests: digests(), views: views(), applied: applied() }).toEqual(before);
    expectConverged(cluster, owners, { forgeriesInjected: true });
  });
});

// --- synchronous writes --------------------------------------------------------------

describe.each(TRANSPORTS)('%s: synchronous writes', (transport) => {
  test('awaitTicket(ticket, 2) completes once both secondaries acknowledged, also when acknowledgements are lost', () => {
    const cluster = startCluster({ seed: 23, nodes: 3, transport, profile: lossy(0.25) });
    const writer = cluster.nodes[0]!;
    for (const [i, id] of writer.idsHeldFirst('sync', 30).entries()) {
      const { ticket } = writer.write(id, { login: `token-${i}` }, { sync: 2 });
      expect(ticket).toBeDefined();
      // Nothing acknowledged before the network ran.
      expect(writer.engine.ackCount(ticket!)).toBe(0);
      expect(writer.completedTickets.has(ticket!)).toBe(false);
      // The write is the last datagram for a while: a lost ack must be asked for again.
      expect(cluster.runUntil(() => writer.completedTickets.has(ticket!), 5000)).toBe(true);
      expect(writer.completedTickets.get(ticket!)).toBe(2);
      for (const node of cluster.nodes.slice(1)) expect(node.store.get(id, cluster.net.now)).toBeDefined();
    }
    // Asynchronous writes leave nothing behind in the engine (no ticket is kept for them).
    for (let i = 0; i < 20; i++) writer.write(`async-${i}`, { basket: 'x' });
    expect(engineTickets(writer)).toBe(0);
    cluster.runFor(2000);
    expect(writer.engine.allAcknowledged()).toBe(true);
  });

  test('with a secondary down, the ticket reaches 1 acknowledgement and does not complete', () => {
    const cluster = startCluster({ seed: 24, nodes: 3, transport });
    const [writer, , down] = cluster.nodes as [SimNode, SimNode, SimNode];
    down.stop();
    const { ticket } = writer.write(writer.idsHeldFirst('sync-down')[0]!, { login: 'token' }, { sync: 2 });
    cluster.runFor(500);
    expect(writer.engine.ackCount(ticket!)).toBe(1);
    expect(writer.completedTickets.has(ticket!)).toBe(false);
    // Declared dead later: still not acknowledged by it (and never counted by mistake).
    cluster.runFor(5000);
    expect(writer.membership.liveNodeIds()).not.toContain(down.nodeId);
    expect(writer.engine.ackCount(ticket!)).toBe(1);
    expect(writer.completedTickets.has(ticket!)).toBe(false);
    writer.engine.releaseTicket(ticket!);
    expect(writer.engine.ackCount(ticket!)).toBe(0);
  });
});

// --- flow control ----------------------------------------------------------------------

describe.each(TRANSPORTS)('%s: flow control', (transport) => {
  test('a burst beyond the send window waits for acknowledgements; a synchronous write behind it completes only once its secondaries hold it', () => {
    const window = 8 * 1024;
    const cluster = startCluster({ seed: 43, nodes: 3, transport, sendWindowBytes: window });
    const [writer, ...secondaries] = cluster.nodes as [SimNode, SimNode, SimNode];
    const channels = transport === 'multicast' ? 1 : 2;
    const owners = new Map<string, string>();
    const value = 'v'.repeat(1000);
    for (let i = 0; i < 200; i++) {
      writer.write(`burst-${i}`, { basket: `${value}${i}` });
      owners.set(`burst-${i}`, writer.nodeId);
    }
    const held = writer.engine.sendWindow();
    expect(held.queuedDeltas).toBeGreaterThan(100 * channels);
    // ~190 KiB queued per channel: far over two 8 KiB windows, so Puts wait (back-pressure).
    expect(writer.engine.sendQueueOver(2)).toBe(true);
    expect(held.inFlightBytes).toBeLessThanOrEqual(window * channels);
    // Rewriting a held part replaces the queued delta: it is sent once, with the newest value.
    writer.write('burst-199', { basket: 'newest' });
    expect(writer.engine.sendWindow().conflated).toBe(channels);
    const behind = writer.idsHeldFirst('sync-behind')[0]!;
    const { ticket } = writer.write(behind, { login: 'token' }, { sync: 2 });
    owners.set(behind, writer.nodeId);

    let completedEarly = false;
    let peakInFlight = 0;
    const done = cluster.runUntil(() => {
      peakInFlight = Math.max(peakInFlight, writer.engine.sendWindow().inFlightBytes);
      const complete = writer.completedTickets.has(ticket!);
      if (complete && secondaries.some((n) => n.store.get(behind, cluster.net.now) === undefined)) completedEarly = true;
      return complete;
    }, 10_000);
    expect(done).toBe(true);
    expect(completedEarly).toBe(false);
    expect(writer.completedTickets.get(ticket!)).toBe(2);
    expect(peakInFlight).toBeLessThanOrEqual(window * channels);
    expect(writer.engine.sendQueueOver(1)).toBe(false);
    const after = writer.engine.sendWindow();
    expect(after).toMatchObject({ queuedDeltas: 0, overrides: 0 });
    expect(after.holds).toBeGreaterThan(0);
    expectConverged(cluster, owners);
    for (const node of secondaries) expect(findStoredPart(node.store.get('burst-199', cluster.net.now)!, 'basket')?.value?.toString('latin1')).toBe('newest');
  });

  test('a synchronous write completes while later writes keep the queue from ever emptying', () => {
    const cluster = startCluster({ seed: 45, nodes: 3, transport, sendWindowBytes: 8 * 1024 });
    const [writer, ...secondaries] = cluster.nodes as [SimNode, SimNode, SimNode];
    const value = 'q'.repeat(1000);
    const writeSome = (n: number, from: number) => {
      for (let i = 0; i < n; i++) writer.write(`busy-${(from + i) % 300}`, { basket: `${value}${from + i}` });
    };
    writeSome(300, 0);
    const amid = writer.idsHeldFirst('sync-amid')[0]!;
    const { ticket } = writer.write(amid, { login: 'token' }, { sync: 2 });
    let completedAt: number | undefined;
    let queueEmptied = false;
    for (let ms = 1; ms <= 400 && completedAt === undefined; ms++) {
      cluster.runFor(1);
      writeSome(10, ms * 10);
      if (writer.engine.sendWindow().queuedDeltas === 0) queueEmptied = true;
      if (writer.completedTickets.has(ticket!)) completedAt = ms;
    }
    expect(queueEmptied).toBe(false);
    expect(completedAt).toBeDefined();
    for (const node of secondaries) expect(node.store.get(amid, cluster.net.now)).toBeDefined();
  });

  test('a secondary that stops answering slows the window to one more per stall, not to a halt; the others keep up', () => {
    const window = 4 * 1024;
    const cluster = startCluster({ seed: 44, nodes: 3, transport, sendWindowBytes: window });
    const [writer, alive, silent] = cluster.nodes as [SimNode, SimNode, SimNode];
    silent.stop();
    const owners = new Map<string, string>();
    for (let i = 0; i < 40; i++) {
      writer.write(`s-${i}`, { basket: 'x'.repeat(1000) });
      owners.set(`s-${i}`, writer.nodeId);
    }
    expect(writer.engine.sendWindow().queuedDeltas).toBeGreaterThan(0);
    // 36 KiB queued: over two windows, so Puts would wait...
    expect(writer.engine.sendQueueOver(2)).toBe(true);
    // ...until the silent secondary is suspect: writers do not wait for one that may be dead.
    expect(cluster.runUntil(() => writer.membership.member(silent.nodeId)?.state === 'suspect', 2000)).toBe(true);
    expect(writer.engine.sendWindow().queuedDeltas).toBeGreaterThan(0);
    expect(writer.engine.sendQueueOver(2)).toBe(false);
    // Well before the silent node is declared dead (3 s), the held deltas went out: one
    // more window per HOLD_STALL_MS (40 KiB in 4 KiB windows).
    cluster.runFor(HOLD_STALL_MS * 15);
    expect(writer.membership.liveNodeIds()).toContain(silent.nodeId);
    expect(writer.engine.sendWindow().overrides).toBeGreaterThan(0);
    for (let i = 0; i < 40; i++) expect(alive.store.get(`s-${i}`, cluster.net.now)).toBeDefined();
  });
});

/** Tickets the engine holds (private state, read to pin that asynchronous writes keep none). */
function engineTickets(node: SimNode): number {
  return (node.engine as unknown as { tickets: Map<number, unknown> }).tickets.size;
}

// --- property: random loss schedules, random operations --------------------------------

function randomProfile(random: SeededRandom): LinkProfile {
  const base = { ...PERFECT_LINK, duplicate: random.next() * 0.05, reorder: random.next() * 0.2, reorderExtraMs: 1 + random.below(20) };
  if (random.below(4) === 0) {
    return { ...base, burst: { pGoodToBad: 0.01 + random.next() * 0.05, pBadToGood: 0.1 + random.next() * 0.4, lossGood: random.next() * 0.02, lossBad: 0.4 + random.next() * 0.5 } };
  }
  return { ...base, loss: random.next() * 0.35 };
}

/**
 * Seeds 7001 onwards (7501 with random TTLs); SIM_PROPERTY_SEEDS=<count> runs that many
 * of each instead of 20 (a longer search by hand). Seeds that once found a divergence
 * always run too.
 */
const PROPERTY_COUNT = Number(process.env.SIM_PROPERTY_SEEDS ?? 20);
function propertySeeds(first: number, found: number[]): number[] {
  const seeds = Array.from({ length: PROPERTY_COUNT }, (_, i) => first + i);
  return [...seeds, ...found.filter((s) => !seeds.includes(s))];
}

/** One property run: a random cluster, then six workload slices each under a new random link profile. */
function propertyRun(seed: number, ttls?: number[]): void {
  const random = new SeededRandom(seed);
  const transport = TRANSPORTS[random.below(2)]!;
  const cluster = startCluster({
    seed,
    nodes: 3,
    transport,
    retransmitBufferBytes: random.below(2) === 0 ? 8 * 1024 : 64 * 1024,
    maxReassemblyBytes: 32 * 1024,
    // No window, one that holds bursts back, or the default.
    sendWindowBytes: [0, 3 * 1024, 64 * 1024][seed % 3],
  });
  // One owner, or every node owning its own sessions.
  const writers = random.below(2) === 0 ? [cluster.nodes[random.below(3)]!] : cluster.nodes;
  const owners = new Map<string, string>();
  // The loss schedule: a new random profile (steady or bursty loss, duplication,
  // reordering) for each slice of the workload.
  for (let slice = 0; slice < 6; slice++) {
    cluster.net.profile = randomProfile(random);
    runWorkload(cluster, {
      seed: random.nextUint32(),
      writers,
      operations: 25,
      sessionsPerWriter: 8,
      spacingMs: 1 + random.below(8),
      valueBytes: [1, random.below(4) === 0 ? 4000 : 300],
      mix: 'all',
      owners,
      prefix: `p${slice % 2}`,
      ...(ttls === undefined ? {} : { ttls }),
    });
  }
  cluster.net.profile = randomProfile(random);
  expectConverged(cluster, owners);
}

describe('property: random loss schedules and random operations', () => {
  // 7234: a touch reached a replica holding the tombstone of a session deleted and written again.
  test.each(propertySeeds(7001, [7234]))('seed %i: puts, part and session deletes, touches and rewrites of deleted sessions: every replica converges to exactly its owner state', (seed) => {
    propertyRun(seed);
  });

  test.each(propertySeeds(7501, []))('seed %i, with TTLs that grow and shrink: every replica converges to exactly its owner state, expiry included', (seed) => {
    propertyRun(seed, [0, 60_000, 3_600_000]);
  });
});

// --- a node joins ----------------------------------------------------------------------

describe.each(TRANSPORTS)('%s: a fourth node joins', (transport) => {
  test('it pulls its partitions (state transfer), then receives deltas; every designated secondary converges', () => {
    const cluster = startCluster({ seed: 25, nodes: 3, transport, profile: lossy(0.05) });
    const owners = new Map<string, string>();
    runWorkload(cluster, { seed: 130, writers: cluster.nodes, operations: 150, sessionsPerWriter: 15, spacingMs: 2, mix: 'all', owners });
    const before = new Map(owners);
    const joiner = cluster.addNode();
    expect(joiner.store.getStats().sessions).toBe(0);
    expect(cluster.runUntil(() => cluster.membershipSettled(), 5000)).toBe(true);
    runWorkload(cluster, { seed: 131, writers: cluster.nodes, operations: 150, sessionsPerWriter: 15, spacingMs: 2, mix: 'all', owners });
    // Former secondaries keep their copies after placement moved (nothing discards them
    // yet), so extra copies are allowed; every designated secondary must be exact.
    expectConverged(cluster, owners, { allowExtraCopies: true });
    expect(joiner.resyncs.some((r) => r.request.reason === 'placement' && r.outcome === 'ok' && r.sessions > 0)).toBe(true);
    // It holds sessions written before it existed, for which it is now a secondary.
    const placement = joiner.placement;
    const inherited = [...before].filter(([id, owner]) => owner !== joiner.nodeId && placement.isSecondary(joiner.nodeId, joiner.store.partitionOf(id), owner));
    expect(inherited.length).toBeGreaterThan(5);
    for (const [id] of inherited) expect(joiner.store.snapshot(id, cluster.net.now)).toBeDefined();
  });
});

// --- protocol details ------------------------------------------------------------------

describe('protocol details', () => {
  test('a retransmission carries the latest delta of each key, and a later touch does not stand in for a lost session delete', () => {
    const cluster = startCluster({ seed: 27, nodes: 3, transport: 'unicast' });
    const [writer, , late] = cluster.nodes as [SimNode, SimNode, SimNode];
    writer.write('conflated', { basket: 'old', handshake: 'old' }); // seq 1
    cluster.runFor(50);
    const resent: number[][] = [];
    cluster.net.filter = (t) => {
      if (t.from !== writer.address || t.to !== late.address || t.meta.seq !== 2) return false;
      if (t.meta.retransmit === true) resent.push(t.meta.deltaKinds ?? []);
      return t.meta.retransmit === false;
    };
    writer.deleteSession('conflated'); // seq 2: its first transmission to `late` is lost
    writer.write('conflated', { basket: 'new' }); // seq 3 revives the session
    writer.touch('conflated'); // seq 4: a session-level delta after the delete
    cluster.runFor(200);
    expect(resent.length).toBeGreaterThan(0);
    for (const kinds of resent) expect(kinds).toEqual([DeltaKind.DELTA_KIND_DELETE_SESSION]);
    expectConverged(cluster, new Map([['conflated', writer.nodeId]]));
  });

  test('a straggler datagram from before a sender restarted is dropped and does not reset its new channel', () => {
    const cluster = startCluster({ seed: 28, nodes: 3, transport: 'unicast' });
    const [writer, receiver] = cluster.nodes as [SimNode, SimNode, SimNode];
    const owners = new Map<string, string>();
    writer.write('before', { basket: '1' });
    owners.set('before', writer.nodeId);
    cluster.runFor(50);
    let straggler: Transmission | undefined;
    cluster.net.filter = (t) => {
      if (straggler !== undefined || t.from !== writer.address || t.to !== receiver.address || t.meta.kind !== 'data') return false;
      straggler = t; // held back in the network; its loss is repaired by NACK meanwhile
      return true;
    };
    writer.write('held-back', { basket: '2' });
    owners.set('held-back', writer.nodeId);
    cluster.runFor(200);
    cluster.net.filter = undefined;
    writer.stop();
    cluster.runFor(100);
    writer.restart();
    expect(cluster.runUntil(() => cluster.membershipSettled(), 5000)).toBe(true);
    cluster.runFor(100);
    writer.write('after', { basket: '3' });
    owners.set('after', writer.nodeId);
    cluster.runFor(100);
    const nacksBefore = receiver.engine.stats.datagramsSent.nack;
    cluster.net.inject(writer.address, receiver.address, straggler!.bytes);
    cluster.runFor(100);
    writer.write('after', { basket: '4' });
    cluster.runFor(500);
    expect(receiver.engineDrops.get('stale_incarnation')).toBe(1);
    // The new incarnation's channel went on without a gap: nothing to NACK.
    expect(receiver.engine.stats.datagramsSent.nack).toBe(nacksBefore);
    expectConverged(cluster, owners);
  });

  test.each(TRANSPORTS)('%s: a sender crashing right after a write that reached only one replica: the other catches up from it', (transport) => {
    const cluster = startCluster({ seed: 41, nodes: 3, transport });
    const [writer, , missed] = cluster.nodes as [SimNode, SimNode, SimNode];
    const owners = new Map<string, string>();
    runWorkload(cluster, { seed: 160, writers: [writer], operations: 10, sessionsPerWriter: 3, spacingMs: 5, owners });
    cluster.runFor(100);
    cluster.net.filter = (t) => t.from === writer.address && t.to === missed.address && t.meta.kind === 'data';
    writer.write('last-words', { basket: 'only one replica saw this' });
    owners.set('last-words', writer.nodeId);
    cluster.runFor(1); // crashes before anyone NACKs, and before a heartbeat names the channel
    writer.stop();
    cluster.net.filter = undefined;
    cluster.runFor(300);
    writer.restart();
    expectConverged(cluster, owners);
  });

  test.each(TRANSPORTS)('%s: a fragment held back past the reassembly timeout: the partial delta is dropped and the channel resyncs', (transport) => {
    const cluster = startCluster({ seed: 42, nodes: 3, transport, reassemblyTimeoutMs: 200 });
    // The write below is made at once (writes are held until the node caught up after its start), inside the window the filter holds.
    cluster.runUntilCaughtUp();
    const [writer, , slow] = cluster.nodes as [SimNode, SimNode, SimNode];
    const owners = new Map([['big', writer.nodeId]]);
    const until = cluster.net.now + 600;
    let last = 0;
    // Every copy of the last fragment to `slow` is lost for 600 ms (longer than the timeout).
    cluster.net.filter = (t) => {
      if (t.from !== writer.address || t.to !== slow.address || t.meta.fragment !== true) return false;
      if (t.meta.retransmit === false) last = Math.max(last, t.meta.seq ?? 0);
      return t.meta.seq === last && cluster.net.now < until;
    };
    writer.write('big', { basket: 'x'.repeat(5000) });
    expectConverged(cluster, owners);
    expect(slow.resyncs.some((r) => r.request.reason === 'gap' && r.outcome === 'ok')).toBe(true);
  });

  test('a secondary counts for a ticket only once it acknowledged, not because the buffer moved past the write', () => {
    const cluster = startCluster({ seed: 29, nodes: 3, transport: 'unicast', retransmitBufferBytes: 4 * 1024 });
    const [writer, , away] = cluster.nodes as [SimNode, SimNode, SimNode];
    cluster.net.isolate(away.address);
    const { ticket } = writer.write('sync-away', { login: 'token' }, { sync: 2 });
    // Still live for a while: more writes go to its channel and push the ticket's
    // write out of the retransmit buffer, unacknowledged.
    runWorkload(cluster, { seed: 150, writers: [writer], operations: 40, sessionsPerWriter: 10, spacingMs: 10, valueBytes: [200, 300] });
    expect(cluster.runUntil(() => !writer.membership.liveNodeIds().includes(away.nodeId), 10_000)).toBe(true);
    expect(writer.engine.ackCount(ticket!)).toBe(1);
    cluster.net.healAll();
    // Back in the view: it is tracked again, but has acknowledged nothing of it yet.
    expect(cluster.runUntil(() => writer.membership.liveNodeIds().includes(away.nodeId), 10_000)).toBe(true);
    expect(writer.completedTickets.has(ticket!)).toBe(false);
    expect(writer.engine.ackCount(ticket!)).toBe(1);
  });
});

// --- robustness of the engine's inputs ------------------------------------------------

test('a fractional clock reading (any `now` the store accepts) does not break replication', () => {
  const cluster = startCluster({ seed: 26, nodes: 3, transport: 'unicast' });
  cluster.net.now += 0.25;
  const writer = cluster.nodes[0]!;
  expect(() => writer.write('fractional', { handshake: 'x' })).not.toThrow();
  expect(() => writer.engine.tick(cluster.net.now + 250.5)).not.toThrow();
  cluster.runFor(1000);
  for (const node of cluster.nodes.slice(1)) expect(findStoredPart(node.store.get('fractional', cluster.net.now)!, 'handshake')?.value?.toString('latin1')).toBe('x');
});

// --- SessionStore under reordered and repaired deltas --------------------------------------
//
// Each scenario below once diverged because of SessionStore (src/store/store.ts), not the
// replication protocol: deletes, touches and claims that overtake a session's first put,
// tombstones in state transfer, late session deletes, and touches that reach a tombstone
// before the put that revived it must all converge.

describe('SessionStore under reordered and repaired deltas', () => {
  /** Drops the first transmission of the writer's data packet `seq` to `to`. */
  function loseFirst(cluster: SimCluster, writer: SimNode, to: SimNode, seqs: number[]): void {
    cluster.net.filter = (t) => t.from === writer.address && t.to === to.address && t.meta.kind === 'data' && t.meta.retransmit === false && seqs.includes(t.meta.seq ?? 0);
  }

  test('S1: a session delete repaired by state transfer (a merged tombstone) reaches the replica', () => {
    const cluster = startCluster({ seed: 31, nodes: 3, transport: 'unicast', retransmitBufferBytes: 4 * 1024 });
    const [writer, , away] = cluster.nodes as [SimNode, SimNode, SimNode];
    const owners = new Map([['deleted-while-away', writer.nodeId]]);
    writer.write('deleted-while-away', { basket: 'items' });
    cluster.runFor(100);
    // Cut off briefly (still live): the delete and enough writes to push it out of the
    // retransmit buffer, so the replica is repaired by a gap resync (merge) only.
    cluster.net.isolate(away.address);
    writer.deleteSession('deleted-while-away');
    runWorkload(cluster, { seed: 140, writers: [writer], operations: 40, sessionsPerWriter: 10, spacingMs: 5, valueBytes: [200, 300], owners });
    cluster.net.healAll();
    cluster.runFor(1000);
    expect(away.resyncs.some((r) => r.request.reason === 'gap' && r.outcome === 'ok')).toBe(true);
    expectConverged(cluster, owners);
  });

  test('S2: a delete_session that overtakes the session\'s first put is kept, and the put does not revive the session', () => {
    const cluster = startCluster({ seed: 32, nodes: 3, transport: 'unicast' });
    const [writer, , late] = cluster.nodes as [SimNode, SimNode, SimNode];
    loseFirst(cluster, writer, late, [1]);
    writer.write('overtaken', { basket: 'items' });
    cluster.runFor(1);
    writer.deleteSession('overtaken');
    expectConverged(cluster, new Map([['overtaken', writer.nodeId]]));
  });

  test('S2 (touch): a touch that overtakes the session\'s first put is kept, so the replica expires when the owner does', () => {
    const cluster = startCluster({ seed: 33, nodes: 3, transport: 'unicast' });
    const [writer, , late] = cluster.nodes as [SimNode, SimNode, SimNode];
    loseFirst(cluster, writer, late, [1]);
    writer.write('touched', { basket: 'items' });
    cluster.runFor(1);
    writer.touch('touched', 3_600_000);
    expectConverged(cluster, new Map([['touched', writer.nodeId]]));
  });

  test('S2 (delete_part): a part delete that overtakes the session\'s first put is kept, and the put does not revive the part', () => {
    const cluster = startCluster({ seed: 36, nodes: 3, transport: 'unicast' });
    const [writer, , late] = cluster.nodes as [SimNode, SimNode, SimNode];
    // The first put is delayed, not lost: a retransmission would carry the latest delta
    // of each part (the delete of tls), which repairs it.
    cluster.net.extraDelay = (t) => (t.from === writer.address && t.to === late.address && t.meta.seq === 1 ? 20 : 0);
    writer.write('part-deleted', { basket: 'items', handshake: 'ticket' });
    cluster.runFor(1);
    writer.deleteParts('part-deleted', ['handshake']);
    expectConverged(cluster, new Map([['part-deleted', writer.nodeId]]));
  });

  test('S4: a delete_session applied after a newer put of the revived session keeps the newer part', () => {
    const cluster = startCluster({ seed: 34, nodes: 3, transport: 'unicast' });
    const [writer, , late] = cluster.nodes as [SimNode, SimNode, SimNode];
    writer.write('revived', { basket: 'old', handshake: 'old' });
    cluster.runFor(50);
    loseFirst(cluster, writer, late, [2]);
    writer.deleteSession('revived'); // seq 2: lost once, repaired after seq 3
    cluster.runFor(1);
    writer.write('revived', { basket: 'new' }); // seq 3
    expectConverged(cluster, new Map([['revived', writer.nodeId]]));
  });

  test('S5: a touch that reaches the tombstone before the put that revived the session is kept, so the replica expires when the owner does', () => {
    const cluster = startCluster({ seed: 37, nodes: 3, transport: 'unicast' });
    const [writer, , late] = cluster.nodes as [SimNode, SimNode, SimNode];
    writer.write('rewritten', { basket: 'old' }); // seq 1
    cluster.runFor(50);
    writer.deleteSession('rewritten'); // seq 2
    cluster.runFor(5);
    loseFirst(cluster, writer, late, [3]);
    writer.write('rewritten', { basket: 'new' }); // seq 3: lost once, repaired after seq 4
    cluster.runFor(10);
    writer.touch('rewritten'); // seq 4: 10 ms later than the put's expiry
    const owners = new Map([['rewritten', writer.nodeId]]);
    expectConverged(cluster, owners);
    expect(cluster.net.stats.dropped).toBe(1);
    expect(late.store.snapshot('rewritten', cluster.net.now)!.expiresAt).toBe(writer.store.snapshot('rewritten', cluster.net.now)!.expiresAt);
  });

  test('S3: a replica records the owner, not itself, as the session\'s owner', () => {
    const cluster = startCluster({ seed: 35, nodes: 3, transport: 'unicast' });
    const writer = cluster.nodes[0]!;
    writer.write('owned', { basket: 'items' });
    cluster.runFor(100);
    for (const node of cluster.nodes) expect(node.store.snapshot('owned', cluster.net.now)?.owner).toBe(writer.nodeId);
  });
});
