/**
 * The engine's next deadline covers reassembly expiry: a partly received large delta
 * whose other fragments never come is released at its timeout even when nothing else
 * (no datagram, no heartbeat, no receiver timer) wakes the node.
 */
import { FragmentReassembly } from '../src/core/fragment-reassembly';
import { SimCluster, type SimNode } from './support/sim-cluster';

const TIMEOUT_MS = 200;
/** Far beyond the test's horizon, so no heartbeat or failure detection wakes a node meanwhile. */
const HEARTBEAT_MS = 20_000;

test.each(['unicast', 'multicast'] as const)('%s: a lone incomplete delta is released at its reassembly timeout with nothing else happening', (transport) => {
  const cluster = new SimCluster({
    seed: 61,
    nodes: 2,
    transport,
    replicas: 1,
    reassemblyTimeoutMs: TIMEOUT_MS,
    membership: { heartbeatIntervalMs: HEARTBEAT_MS, suspectAfterMs: 4 * HEARTBEAT_MS, deadAfterMs: 6 * HEARTBEAT_MS, forgetDeadAfterMs: 10 * HEARTBEAT_MS },
    // The first view at once (not two heartbeat intervals after start), no wait for another
    // coordinator to announce itself; re-announcements scale with the heartbeat.
    coordinator: { firstViewDelayMs: 0, joinWaitMs: 0 },
  });
  expect(cluster.runUntil(() => cluster.membershipSettled(), 1000)).toBe(true);
  cluster.runFor(50); // the state transfers started on first sight finish
  const [writer, reader] = cluster.nodes as [SimNode, SimNode];

  // Only the first fragment reaches the reader; afterwards nothing at all does.
  let firstFragmentAt: number | undefined;
  const laterArrivals: string[] = [];
  cluster.net.filter = (t) => {
    if (t.to !== reader.address) return false;
    if (firstFragmentAt === undefined && t.from === writer.address && t.meta.fragment === true) {
      firstFragmentAt = cluster.net.now;
      return false;
    }
    if (firstFragmentAt !== undefined) laterArrivals.push(t.meta.kind);
    return firstFragmentAt !== undefined;
  };
  const resyncsBefore = reader.engine.stats.resyncsRequested;
  writer.write('large', { cart: 'x'.repeat(5000) });
  expect(cluster.runUntil(() => reader.engine.reassemblyBytesHeld() > 0, 100)).toBe(true);
  const heldFrom = cluster.net.now;

  // Just before the timeout the partial delta is still held; just after it is gone.
  cluster.runFor(TIMEOUT_MS - 5);
  expect(reader.engine.reassemblyBytesHeld()).toBeGreaterThan(0);
  cluster.runFor(10);
  expect(reader.engine.reassemblyBytesHeld()).toBe(0);
  expect(cluster.net.now - heldFrom).toBeLessThan(HEARTBEAT_MS);
  // The fragments dropped after they counted as received: the reader asks for a state transfer.
  expect(reader.engine.stats.resyncsRequested).toBe(resyncsBefore + 1);
  expect(laterArrivals.filter((kind) => kind !== 'data')).toEqual([]);
});

test('FragmentReassembly.nextExpiryAt is the first millisecond expire drops the oldest partial delta', () => {
  const r = new FragmentReassembly({ maxBytes: 1 << 20, timeoutMs: 1000 });
  const chunk = new Uint8Array(10);
  expect(r.nextExpiryAt()).toBe(Infinity);
  r.add('a', 1n, { deltaId: 1, index: 0, count: 2, chunk }, 100);
  r.add('b', 1n, { deltaId: 1, index: 0, count: 2, chunk }, 50.5);
  r.add('a', 1n, { deltaId: 2, index: 0, count: 2, chunk }, 300);
  expect(r.nextExpiryAt()).toBe(1051);
  expect(r.expire(1050)).toEqual([]);
  expect(r.expire(1051)).toEqual([{ nodeId: 'b', incarnation: 1n }]);
  expect(r.nextExpiryAt()).toBe(1101);
  // A completed delta no longer counts.
  r.add('a', 1n, { deltaId: 1, index: 1, count: 2, chunk }, 200);
  expect(r.nextExpiryAt()).toBe(1301);
  r.retire('a', undefined);
  expect(r.nextExpiryAt()).toBe(Infinity);
});
