/**
 * Replication protocol scenarios on a simulated network and virtual time.
 *
 * Each scenario builds a SimCluster (test/support/sim-node.ts): real stores, membership,
 * placement and replication engines, every datagram sealed and opened with a cluster key,
 * on a SimNetwork (test/support/sim-network.ts) that delays, drops, duplicates, reorders
 * and partitions by seed. Writes are made the way the sidecar makes them (store write,
 * then `replicate`, then `flush`). After the writes stop, the network runs on (bounded
 * virtual time) and every replica must hold exactly its owner's state. No test sleeps and
 * no test asserts timings; a failing seed replays exactly.
 */
import { clusterKeyFromBytes } from '../src/cluster-key';
import { DatagramSealer } from '../src/datagram-codec';
import { Datagram } from '../src/gen/baton/v1/wire';
import { SeededRandom } from '../src/random';
import type { GilbertElliott, LinkProfile, Transmission } from './support/sim-network';
import { PERFECT_LINK } from './support/sim-network';
import { makeClusterKey, SimCluster, type SimClusterOptions, type SimNode } from './support/sim-node';

const TRANSPORTS = ['unicast', 'multicast'] as const;
/** Virtual time the network runs after the last write before replicas are compared. */
const SETTLE_MS = 30_000;

function lossy(loss: number, extra: Partial<LinkProfile> = {}): LinkProfile {
  return { ...PERFECT_LINK, loss, ...extra };
}

/** Starts a cluster and runs until every node sees every other as live. */
function startCluster(options: SimClusterOptions): SimCluster {
  const cluster = new SimCluster(options);
  if (!cluster.runUntil(() => cluster.membershipSettled(), 10_000)) throw new Error('membership did not settle');
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
  /** Also delete parts, delete sessions and touch. */
  mixed?: boolean;
  owners?: Map<string, string>;
  /** Prefix of session ids (distinct workloads use distinct ids). */
  prefix?: string;
}

function valueOf(random: SeededRandom, length: number): string {
  const salt = random.nextUint32();
  let s = '';
  for (let i = 0; i < length; i++) s += String.fromCharCode((salt >>> (i & 24)) + i * 37 & 0xff);
  return s;
}

/**
 * Random writes by the given writers, each on its own sessions, with the network running
 * between operations. With `mixed`, some operations delete parts or whole sessions, or
 * touch; a deleted session id is never written again (see the test of that case below).
 */
function runWorkload(cluster: SimCluster, options: WorkloadOptions): Workload {
  const random = new SeededRandom(options.seed);
  const owners = options.owners ?? new Map<string, string>();
  const deleted = new Set<string>();
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
    if (deleted.has(id)) {
      // fall through to a write on another, fresh id
    } else if (options.mixed === true && roll < 6 && owners.has(id)) {
      writer.deleteSession(id);
      deleted.add(id);
    } else if (options.mixed === true && roll < 14 && owners.has(id)) {
      writer.deleteParts(id, [pickPart(random)]);
    } else if (options.mixed === true && roll < 22 && owners.has(id)) {
      writer.touch(id);
    } else {
      const parts: Record<string, string> = {};
      const count = 1 + random.below(3);
      for (let i = 0; i < count; i++) parts[pickPart(random)] = valueOf(random, minBytes + random.below(maxBytes - minBytes + 1));
      writer.write(id, parts);
      owners.set(id, writer.nodeId);
      writes++;
    }
    cluster.runFor(options.spacingMs * (0.5 + random.next()));
  }
  return { owners, writes };
}

const PART_NAMES = ['tls', 'auth', 'cart', 'tcp', 'prefs', 'csrf'];
function pickPart(random: SeededRandom): string {
  return PART_NAMES[random.below(PART_NAMES.length)]!;
}

/** Runs the network on after the writes, then asserts convergence and bounds. */
function expectConverged(cluster: SimCluster, owners: Map<string, string>, options: { allowExtraCopies?: boolean } = {}): void {
  cluster.runFor(SETTLE_MS);
  expect(cluster.divergences(owners, options)).toEqual([]);
  expect(cluster.boundViolations).toEqual([]);
  for (const node of cluster.running) {
    expect([node.nodeId, node.oversizedPayloads]).toEqual([node.nodeId, 0]);
    // Nothing forged or malformed came from the simulated peers; network duplicates are
    // stopped by the replay window.
    const drops = Object.fromEntries([...node.openerDrops].filter(([reason]) => reason !== 'replayed'));
    expect([node.nodeId, drops]).toEqual([node.nodeId, {}]);
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
    const { owners } = runWorkload(cluster, { seed: 101, writers: cluster.nodes, operations: 240, sessionsPerWriter: 15, spacingMs: 4, mixed: true, valueBytes: [1, 2500] });
    expectConverged(cluster, owners);
    if (loss > 0) expect(totalRetransmissions(cluster)).toBeGreaterThan(0);
    else expect(totalRetransmissions(cluster)).toBe(0);
  });
});

describe.each(TRANSPORTS)('%s: burst loss and reordering', (transport) => {
  const burst: GilbertElliott = { pGoodToBad: 0.03, pBadToGood: 0.25, lossGood: 0.01, lossBad: 0.7 };

  test('Gilbert–Elliott burst loss', () => {
    const cluster = startCluster({ seed: 12, nodes: 3, transport, profile: lossy(0, { burst }) });
    const { owners } = runWorkload(cluster, { seed: 102, writers: cluster.nodes, operations: 240, sessionsPerWriter: 12, spacingMs: 2, mixed: true });
    expectConverged(cluster, owners);
    expect(cluster.net.stats.lost).toBeGreaterThan(0);
  });

  test('reordering and duplication: duplicates are detected, order does not matter', () => {
    const cluster = startCluster({ seed: 13, nodes: 3, transport, profile: lossy(0.02, { duplicate: 0.2, reorder: 0.3, reorderExtraMs: 15 }) });
    const { owners } = runWorkload(cluster, { seed: 103, writers: cluster.nodes, operations: 240, sessionsPerWriter: 10, spacingMs: 1, mixed: true });
    expectConverged(cluster, owners);
    expect(cluster.net.stats.duplicated).toBeGreaterThan(0);
    // A network duplicate is the same sealed datagram: the opener's replay window drops it.
    const replayed = cluster.nodes.reduce((sum, n) => sum + n.count('replayed'), 0);
    expect(replayed).toBeGreaterThan(0);
    expect(replayed).toBeLessThanOrEqual(cluster.net.stats.duplicated);
    expect(cluster.net.stats.reordered).toBeGreaterThan(0);
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
      writer.write(`tail-${i}`, { cart: `items-${i}`.repeat(20) });
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
    runWorkload(cluster, { seed: 108, writers: [writer], operations: 200, sessionsPerWriter: 40, spacingMs: 40, mixed: true, owners: before.owners });
    expect(writer.membership.liveNodeIds()).not.toContain(receiver.nodeId);
    cluster.net.healAll();
    expectConverged(cluster, before.owners);
  });
});

describe.each(TRANSPORTS)('%s: restarts and slow receivers', (transport) => {
  test('a sender restarts mid-stream (new incarnation, empty store): it gets its state back and replicas converge', () => {
    const cluster = startCluster({ seed: 17, nodes: 3, transport, profile: lossy(0.05) });
    const [writer] = cluster.nodes as [SimNode, SimNode, SimNode];
    const { owners } = runWorkload(cluster, { seed: 109, writers: cluster.nodes, operations: 150, sessionsPerWriter: 10, spacingMs: 3, mixed: true });
    writer.stop();
    cluster.runFor(400);
    writer.restart();
    expect(writer.store.getStats().sessions).toBe(0);
    runWorkload(cluster, { seed: 110, writers: cluster.nodes, operations: 150, sessionsPerWriter: 10, spacingMs: 3, mixed: true, owners });
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
    const { owners } = runWorkload(cluster, { seed: 111, writers: cluster.nodes.slice(0, 2), operations: 300, sessionsPerWriter: 20, spacingMs: 2, mixed: true });
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
