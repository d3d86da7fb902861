/**
 * Several multicast groups on the simulated network (virtual time, seeded loss): partition
 * p's deltas go to group p mod K, a node listens only on the groups of the partitions it
 * holds — so it receives none of the other groups' data — replicas still converge, and
 * group membership follows placement when a member dies.
 */
import { groupChannel, MulticastGroups } from '../src/core/multicast-groups';
import { Placement } from '../src/core/placement';
import { BuzHash } from '../src/store/buzhash';
import { PERFECT_LINK, type Transmission } from './support/sim-network';
import { SimCluster, type SimNode } from './support/sim-cluster';

const SETTLE_MS = 20_000;

function startCluster(groups: number, seed: number, loss = 0): SimCluster {
  const cluster = new SimCluster({ seed, nodes: 8, transport: 'multicast', partitions: 16, replicas: 1, multicastGroups: groups, profile: { ...PERFECT_LINK, loss } });
  if (!cluster.runUntil(() => cluster.membershipSettled(), 10_000)) throw new Error('membership did not settle');
  cluster.runFor(500);
  return cluster;
}

/** Records every multicast data copy the network carries (who it went to, on which group). */
function recordData(cluster: SimCluster): { to: string; group: number }[] {
  const seen: { to: string; group: number }[] = [];
  cluster.net.filter = (t: Transmission) => {
    if (t.multicast && t.meta.kind === 'data') seen.push({ to: t.to, group: t.group ?? 0 });
    return false;
  };
  return seen;
}

function writeSessions(cluster: SimCluster, count: number): Map<string, string> {
  const owners = new Map<string, string>();
  for (let i = 0; i < count; i++) {
    const writer = cluster.nodes[i % cluster.nodes.length]!;
    writer.write(`g${i}`, { basket: `cart ${i}` });
    owners.set(`g${i}`, writer.nodeId);
  }
  return owners;
}

test('MulticastGroups: group p mod K, members are the holders of some partition of the group, channels named "" and "#g"', () => {
  const placement = new Placement(new BuzHash('groups-test'), 16, 1);
  placement.setMembers(['a', 'b', 'c', 'd', 'e', 'f']);
  const groups = new MulticastGroups(4, placement);
  expect([0, 1, 5, 15].map((p) => groups.groupOf(p))).toEqual([0, 1, 1, 3]);
  expect([0, 1, 3].map(groupChannel)).toEqual(['', '#1', '#3']);
  for (let g = 0; g < 4; g++) {
    const want = new Set<string>();
    for (let p = g; p < 16; p += 4) for (const id of placement.ranking(p).slice(0, 2)) want.add(id);
    expect([...groups.membersOf(g)].sort()).toEqual([...want].sort());
  }
  // One group: every member listens on it.
  expect([...new MulticastGroups(1, placement).membersOf(0)].sort()).toEqual(['a', 'b', 'c', 'd', 'e', 'f']);
  // Membership follows placement.
  const before = groups.groupsOf('a');
  placement.setMembers(['a']);
  expect(groups.groupsOf('a')).toEqual([0, 1, 2, 3]);
  expect(before.length).toBeLessThanOrEqual(4);
});

test('with K = 8 groups a node receives no data of a group whose partitions it does not hold, and every replica converges', () => {
  const cluster = startCluster(8, 171, 0.05);
  const seen = recordData(cluster);
  const owners = writeSessions(cluster, 100);
  expect(cluster.runUntil(() => cluster.divergences(owners).length === 0, SETTLE_MS)).toBe(true);

  const byAddress = new Map(cluster.nodes.map((n) => [n.address, n]));
  let outside = 0;
  for (const { to, group } of seen) {
    const node = byAddress.get(to)!;
    if (!node.engine.joinedGroups().includes(group)) outside++;
  }
  expect(seen.length).toBeGreaterThan(0);
  expect(outside).toBe(0);
  // Some node sits outside some group (otherwise the test would prove nothing), and the
  // network's group membership is the core's choice.
  const joined = cluster.nodes.map((n) => n.engine.joinedGroups());
  expect(joined.some((groups) => groups.length < 8)).toBe(true);
  for (const node of cluster.nodes) {
    for (let g = 0; g < 8; g++) expect(cluster.net.groupMembers(g).includes(node.address)).toBe(node.engine.joinedGroups().includes(g));
  }
});

test('a node receives fewer data copies with 8 groups than with one group for the same writes', () => {
  const perNode = (groups: number): number => {
    const cluster = startCluster(groups, 172);
    const seen = recordData(cluster);
    const owners = writeSessions(cluster, 100);
    expect(cluster.runUntil(() => cluster.divergences(owners).length === 0, SETTLE_MS)).toBe(true);
    return seen.length / cluster.nodes.length;
  };
  const one = perNode(1);
  const eight = perNode(8);
  expect(eight).toBeLessThan(one * 0.75);
});

test('when a member dies, the survivors join the groups of the partitions they now hold and replicas converge again', () => {
  const cluster = startCluster(8, 173);
  const owners = writeSessions(cluster, 120);
  expect(cluster.runUntil(() => cluster.divergences(owners).length === 0, SETTLE_MS)).toBe(true);
  const victim = cluster.nodes[7]!;
  const before = new Map(cluster.nodes.map((n) => [n.nodeId, n.engine.joinedGroups().join(',')]));
  victim.stop();
  expect(cluster.runUntil(() => cluster.running.every((n: SimNode) => n.membership.liveNodeIds().length === 7), 10_000)).toBe(true);
  for (const [id, owner] of owners) if (owner === victim.nodeId) owners.delete(id);
  for (let i = 0; i < 70; i++) {
    const writer = cluster.running[i % 7]!;
    writer.write(`h${i}`, { basket: `after ${i}` });
    owners.set(`h${i}`, writer.nodeId);
  }
  expect(cluster.runUntil(() => cluster.divergences(owners).length === 0, SETTLE_MS)).toBe(true);
  expect(cluster.running.some((n) => n.engine.joinedGroups().join(',') !== before.get(n.nodeId))).toBe(true);
  for (const node of cluster.running) {
    for (let g = 0; g < 8; g++) expect(cluster.net.groupMembers(g).includes(node.address)).toBe(node.engine.joinedGroups().includes(g));
  }
});
