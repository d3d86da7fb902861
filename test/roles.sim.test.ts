/**
 * Roles on the simulated network (virtual time): store nodes take the secondary slots, the
 * store tier keeps every session while every edge node is gone and serves it back when
 * edge nodes return, and a resume asks the partition's holders in rank order — rank 0 (a
 * store node) first, the next rank only when it fails. Also: a node whose --replicas
 * differs is refused by every member, the setting named.
 */
import { SimCluster, type SimNode } from './support/sim-cluster';

const SETTLE_MS = 20_000;
const SESSIONS = 60;
const ROLES = ['edge', 'edge', 'edge', 'store', 'store'] as const;

function startCluster(seed: number): SimCluster {
  const cluster = new SimCluster({ seed, nodes: 5, transport: 'unicast', replicas: 2, roles: ROLES });
  if (!cluster.runUntil(() => cluster.membershipSettled(), 10_000)) throw new Error('membership did not settle');
  cluster.runFor(50);
  return cluster;
}

function lookupsBy(node: SimNode, since: number): string[] {
  return node.peerRequests.filter((r) => r.at >= since && r.request.kind === 'lookup').map((r) => (r.request as { peerAddress: string }).peerAddress);
}

test('every session written on an edge node is held by both store nodes, and the roles travel in heartbeats', () => {
  const cluster = startCluster(161);
  const [e1, e2, e3, s1, s2] = cluster.nodes as [SimNode, SimNode, SimNode, SimNode, SimNode];
  const owners = new Map<string, string>();
  for (let i = 0; i < SESSIONS; i++) {
    const writer = [e1, e2, e3][i % 3]!;
    writer.write(`s${i}`, { basket: `cart ${i}` });
    owners.set(`s${i}`, writer.nodeId);
  }
  expect(cluster.runUntil(() => cluster.divergences(owners).length === 0, SETTLE_MS)).toBe(true);
  for (const id of owners.keys()) {
    expect(s1.get(id)).toBeDefined();
    expect(s2.get(id)).toBeDefined();
  }
  // Edge nodes hold only what they own: both secondary slots are the stores'.
  for (const [id, owner] of owners) for (const edge of [e1, e2, e3]) if (edge.nodeId !== owner) expect(edge.get(id)).toBeUndefined();
  for (const node of cluster.nodes) expect([...node.membership.liveStoreIds()]).toEqual([s1.nodeId, s2.nodeId]);
});

test('the store tier keeps every session while all edge nodes are gone, and new edge processes resume them from it', async () => {
  const cluster = startCluster(162);
  const [e1, e2, e3, s1, s2] = cluster.nodes as [SimNode, SimNode, SimNode, SimNode, SimNode];
  const owners = new Map<string, string>();
  for (let i = 0; i < SESSIONS; i++) {
    const writer = [e1, e2, e3][i % 3]!;
    writer.write(`s${i}`, { basket: `cart ${i}` });
    owners.set(`s${i}`, writer.nodeId);
  }
  expect(cluster.runUntil(() => cluster.divergences(owners).length === 0, SETTLE_MS)).toBe(true);

  for (const edge of [e1, e2, e3]) edge.stop();
  // Long past failure detection, the discard of unheld copies and anti-entropy's reach.
  cluster.runFor(30_000);
  for (const id of owners.keys()) {
    expect(s1.get(id)?.parts[0]?.value?.toString('latin1')).toBe(`cart ${id.slice(1)}`);
    expect(s2.get(id)?.parts[0]?.value?.toString('latin1')).toBe(`cart ${id.slice(1)}`);
    // The partition's master (a store node: stores rank first) took the orphan over.
    expect([s1.nodeId, s2.nodeId]).toContain(s1.get(id)!.owner);
    expect(s1.get(id)!.epoch).toBe(2);
  }

  // The web pods come back as new processes with empty stores.
  for (const edge of [e1, e2, e3]) edge.restart();
  expect(cluster.runUntil(() => cluster.membershipSettled(), 10_000)).toBe(true);
  cluster.runFor(1000);
  for (let i = 0; i < SESSIONS; i++) {
    const edge = [e2, e3, e1][i % 3]!;
    expect(await edge.resume(`s${i}`)).toBe(3); // written (1), taken over (2), resumed (3)
    expect(edge.get(`s${i}`)?.parts[0]?.value?.toString('latin1')).toBe(`cart ${i}`);
  }
});

test("a resume asks rank 0 (a store node) first, and the next rank only after rank 0 failed", async () => {
  const cluster = startCluster(163);
  const [e1, e2, , s1, s2] = cluster.nodes as [SimNode, SimNode, SimNode, SimNode, SimNode];
  e1.write('cart-1', { basket: 'two lamps' });
  expect(cluster.runUntil(() => s1.get('cart-1') !== undefined && s2.get('cart-1') !== undefined, SETTLE_MS)).toBe(true);
  e1.stop();
  expect(cluster.runUntil(() => e2.membership.member(e1.nodeId)?.state === 'dead', 10_000)).toBe(true);

  const partition = e2.store.partitionOf('cart-1');
  const ranking = e2.placement.ranking(partition);
  const rank0 = cluster.nodes.find((n) => n.nodeId === ranking[0])!;
  const rank1 = cluster.nodes.find((n) => n.nodeId === ranking[1])!;
  expect([rank0, rank1].map((n) => n.nodeId).sort()).toEqual([s1.nodeId, s2.nodeId]);

  let since = cluster.net.now;
  expect(await e2.resume('cart-1')).toBe(2);
  // rank 0 answered with a secondary's copy, so rank 1 was asked after it (never before).
  expect(lookupsBy(e2, since)).toEqual([rank0.address, rank1.address]);

  // Rank 0 stops answering (its process is gone, not yet declared dead): rank 1 takes over.
  const e3 = cluster.nodes[2]!;
  rank0.stop();
  since = cluster.net.now;
  expect(await e3.resume('cart-1')).toBe(3);
  // e3 holds nothing, so it knows no owner: rank 0 first, rank 1 once rank 0's lookup failed,
  // then the third holder (an edge node), as rank 1's copy is a secondary's.
  const asked = lookupsBy(e3, since);
  expect(asked.slice(0, 2)).toEqual([rank0.address, rank1.address]);
  expect(asked.slice(2)).toEqual([cluster.nodes.find((n) => n.nodeId === e3.placement.ranking(partition)[2])!.address]);
  expect(e3.get('cart-1')?.parts[0]?.value?.toString('latin1')).toBe('two lamps');
});

test('a node started with another --replicas is refused by every member, which names the setting', () => {
  const cluster = startCluster(164);
  const stranger = cluster.startNode({ nodeId: 'odd', address: '10.0.0.99:7401', seeds: cluster.nodes.map((n) => n.address), replicas: 1 });
  cluster.runFor(2000);
  for (const node of cluster.nodes.slice(0, 5)) {
    expect(node.membership.liveNodeIds()).not.toContain('odd');
    expect(node.membership.configMismatches().map((r) => [r.nodeId, r.settings])).toEqual([['odd', ['replicas']]]);
    expect(node.membershipEvents.filter((e) => e.type === 'config_mismatch').map((e) => (e as { settings: string[] }).settings)).toEqual([['replicas']]);
    expect(node.membership.configMismatchesBySetting.get('replicas')).toBeGreaterThan(1);
  }
  // Refused everywhere, it joins no one (the members never learn its address to answer it).
  expect(stranger.membership.liveNodeIds()).toEqual(['odd']);
});
