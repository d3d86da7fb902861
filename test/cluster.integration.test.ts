/**
 * Three real `baton sidecar` processes on loopback replicate 10,000 sessions written on one
 * node to each session's secondaries — over unicast fan-out and over IP multicast on the
 * loopback interface, with sealed datagrams, without loss and with 5% of received
 * datagrams dropped — and a fourth node started later receives the partitions it now
 * replicates. Replicas are read with Get without resume.
 */
import { createHash } from 'node:crypto';
import { BuzHash } from '../src/store/buzhash';
import { BatonClient } from '../src/client/client';
import { deriveHashSeed, parseClusterKeys } from '../src/wire/cluster-key';
import { Placement } from '../src/core/placement';
import { freePeerPorts, freeUdpPort } from './support/ports';
import { startSidecar, type SidecarProcess } from './support/sidecar-process';

jest.setTimeout(180_000);

const SESSIONS = 10_000;
const PARTITIONS = 64;

/**
 * A fixed key per case: the key seeds placement, and the shares asserted below (about a
 * third of the sessions per secondary) must not depend on a draw (64 partitions leave a
 * random key's share a few percent of the time outside the bounds).
 */
function clusterKey(label: string): string {
  return createHash('sha256').update(`cluster-integration ${label}`).digest('base64');
}

interface Cluster {
  nodes: { id: string; process: SidecarProcess; client: BatonClient }[];
  key: string;
  peers: string;
}

type RunningNode = Awaited<ReturnType<typeof startNode>>;

/** Starts every node at once; if one fails, stops the others (once every start settled) and rejects. */
async function startCluster(ids: string[], ports: number[], key: string, extra: string[]): Promise<Cluster> {
  const peers = ports.map((p) => `127.0.0.1:${p}`).join(',');
  const started = await Promise.allSettled(ids.map((id, i) => startNode(id, ports[i]!, peers, key, extra)));
  const nodes = started.filter((s): s is PromiseFulfilledResult<RunningNode> => s.status === 'fulfilled').map((s) => s.value);
  const failed = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed !== undefined) {
    await stopNodes(nodes);
    throw failed.reason;
  }
  return { nodes, key, peers };
}

async function startNode(id: string, port: number, peers: string, key: string, extra: string[]) {
  const process = await startSidecar(
    [
      '--node-id', id,
      '--peer-listen', `127.0.0.1:${port}`,
      '--peers', peers,
      '--replicas', '1',
      '--partitions', String(PARTITIONS),
      '--heartbeat-interval-ms', '100',
      '--suspect-after-ms', '1000',
      '--dead-after-ms', '3000',
      ...extra,
    ],
    { BATON_CLUSTER_KEY: key },
  );
  return { id, process, client: new BatonClient(process.apiAddress) };
}

/** Closes the clients and stops the nodes; resolves with each node's exit code. */
async function stopNodes(nodes: readonly RunningNode[]): Promise<Record<string, number | null>> {
  for (const node of nodes) node.client.close();
  const codes = await Promise.all(nodes.map((n) => n.process.stop()));
  return Object.fromEntries(nodes.map((n, i) => [n.id, codes[i]!]));
}

/** Waits until every node sees `n` alive members (bounded). */
async function waitForMembers(cluster: Cluster, n: number): Promise<void> {
  await eventually(async () => {
    for (const node of cluster.nodes) {
      const alive = (await node.process.scrape()).value('baton_cluster_members', { state: 'alive' });
      if (alive !== n) return false;
    }
    return true;
  }, 20_000);
}

async function eventually(check: () => Promise<boolean>, withinMs: number): Promise<void> {
  const until = Date.now() + withinMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > until) throw new Error(`condition not met within ${withinMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Which nodes must hold each session written on `owner`, by the cluster's placement. */
function expectedHolders(key: string, members: string[], owner: string, ids: string[]): Map<string, Set<string>> {
  const hasher = new BuzHash(deriveHashSeed(parseClusterKeys(key)[0]!));
  const placement = new Placement(hasher, PARTITIONS, 1);
  placement.setMembers(members);
  const holders = new Map<string, Set<string>>();
  for (const id of ids) {
    const p = hasher.partitionOf(id, PARTITIONS);
    holders.set(id, new Set([owner, ...placement.secondaries(p, owner)]));
  }
  return holders;
}

async function writeSessions(client: BatonClient, ids: string[]): Promise<void> {
  const batch = 500;
  for (let i = 0; i < ids.length; i += batch) {
    await Promise.all(ids.slice(i, i + batch).map((id) => client.put(id, { cart: cartBytes(id), note: Buffer.from(`note ${id}`) })));
  }
}

function cartBytes(id: string): Buffer {
  // A valid (empty-field) CartState carrying the id as its payment reference.
  const ref = Buffer.from(id);
  return Buffer.concat([Buffer.from([0x22, ref.length]), ref]);
}

/** Reads every session on every node (Get without resume) and compares with placement. */
async function checkReplicas(cluster: Cluster, holders: Map<string, Set<string>>): Promise<string[]> {
  const problems: string[] = [];
  for (const node of cluster.nodes) {
    const ids = [...holders.keys()];
    const sessions = await Promise.all(ids.map((id) => node.client.get(id)));
    sessions.forEach((session, i) => {
      const id = ids[i]!;
      const should = holders.get(id)!.has(node.id);
      if (should && session === undefined) problems.push(`${node.id} lacks ${id}`);
      if (!should && session !== undefined) problems.push(`${node.id} holds ${id} but is not its replica`);
      if (should && session !== undefined) {
        const note = session.parts.find((p) => p.name === 'note');
        if (note?.value.toString() !== `note ${id}`) problems.push(`${node.id} has a wrong value for ${id}`);
      }
    });
  }
  return problems;
}

describe.each([
  ['unicast', 0],
  ['multicast', 0],
  ['unicast', 5],
  ['multicast', 5],
])('a three-node cluster (%s, %d%% of datagrams dropped)', (mode, lossPercent) => {
  let cluster: Cluster | undefined;
  let late: Awaited<ReturnType<typeof startNode>> | undefined;

  afterAll(async () => {
    // Every node is stopped before anything is asserted.
    const nodes = [...(cluster?.nodes ?? []), ...(late === undefined ? [] : [late])];
    const codes = await stopNodes(nodes);
    expect(codes).toEqual(Object.fromEntries(nodes.map((n) => [n.id, 0])));
  });

  it('replicates 10,000 sessions written on one node to each session\'s secondary, and a fourth node receives its partitions', async () => {
    const ports = await freePeerPorts(4);
    const args = mode === 'multicast' ? ['--multicast', `239.255.${(ports[0]! >> 8) & 0xff}.${ports[0]! & 0xff}:${await freeUdpPort()}`, '--multicast-interface', '127.0.0.1'] : [];
    args.push('--inject-loss-percent', String(lossPercent));
    const key = clusterKey(`${mode} ${lossPercent}`);
    cluster = await startCluster(['n1', 'n2', 'n3'], ports.slice(0, 3), key, args);
    await waitForMembers(cluster, 3);

    const ids = Array.from({ length: SESSIONS }, (_, i) => `${mode}-${lossPercent}-session-${i}`);
    await writeSessions(cluster.nodes[0]!.client, ids);
    const holders = expectedHolders(key, ['n1', 'n2', 'n3'], 'n1', ids);
    let problems: string[] = [];
    await eventually(async () => { problems = await checkReplicas(cluster!, holders); if (process.env.BATON_TEST_TRACE) console.log(problems.length, problems.slice(0, 3)); return problems.length === 0; }, 30_000).catch(() => undefined);
    expect(problems.slice(0, 10)).toEqual([]);
    // Each session is on its owner and exactly one secondary: n2 and n3 share the copies.
    const onN2 = [...holders.values()].filter((h) => h.has('n2')).length;
    expect(onN2).toBeGreaterThan(SESSIONS / 4);
    expect(onN2).toBeLessThan((SESSIONS * 3) / 4);

    // A fourth node joins: it becomes the secondary of about a third of the sessions and
    // must receive them by state transfer (the writes happened before it existed).
    late = await startNode('n4', ports[3]!, cluster.peers + `,127.0.0.1:${ports[3]}`, key, args);
    const withN4 = expectedHolders(key, ['n1', 'n2', 'n3', 'n4'], 'n1', ids);
    const forN4 = ids.filter((id) => withN4.get(id)!.has('n4'));
    expect(forN4.length).toBeGreaterThan(SESSIONS / 6);
    let missing: string[] = [];
    await eventually(async () => {
      const got = await Promise.all(forN4.map((id) => late!.client.get(id)));
      missing = forN4.filter((_, i) => got[i] === undefined);
      return missing.length === 0;
    }, 30_000).catch(() => undefined);
    expect(missing.slice(0, 10)).toEqual([]);
    // The joiner counts what it received by state transfer (at least its share; an
    // anti-entropy round may add more), and nothing failed to leave its socket.
    const joiner = await late.process.scrape();
    expect(joiner.value('baton_sessions_transferred_total')).toBeGreaterThanOrEqual(forN4.length);
    expect(joiner.has('baton_replication_send_errors_total')).toBe(true);
    expect(joiner.value('baton_replication_send_errors_total')).toBe(0);
    // The writer's bursts (500 puts at a time) left as segmented sends, and arrived whole.
    const writer = await cluster.nodes[0]!.process.scrape();
    expect(writer.value('baton_replication_segmented_datagrams_total')).toBeGreaterThan(0);
    expect(writer.value('baton_replication_send_errors_total')).toBe(0);
    // With the cluster key, a replica read them as runs (UDP_GRO) and cut them apart.
    const replica = await cluster.nodes[1]!.process.scrape();
    expect(replica.value('baton_replication_coalesced_datagrams_total')).toBeGreaterThan(0);
    if (lossPercent > 0) {
      // The loss was real and was repaired: datagrams were dropped and NACKed.
      const metrics = await cluster.nodes[1]!.process.scrape();
      expect(metrics.value('baton_replication_dropped_total', { reason: 'injected_loss' })).toBeGreaterThan(0);
      expect(metrics.value('baton_replication_nacks_sent_total')).toBeGreaterThan(0);
    }
  });
});
