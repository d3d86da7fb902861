/**
 * --multicast-groups with K = 2 on loopback (real processes, IP multicast on 127.0.0.1):
 * partition p's deltas go to group p mod 2, and each node listens only on the groups of the
 * partitions it holds. Four nodes, four partitions, one replica: the cluster seed is chosen
 * (by computing placement here, as every node will) so that some node holds no partition
 * of group 1. That node's Status lists only group 0, and while sessions of group 1's
 * partitions are written it receives no data datagram at all; their secondaries receive
 * them and hold every session. The writer, which listens on group 1 too, takes in only the
 * first of its own looped-back datagrams per group socket: a socket filter drops the rest.
 */
import { BatonClient } from '../src/client/client';
import { BuzHash } from '../src/store/buzhash';
import { Placement } from '../src/core/placement';
import { MulticastGroups } from '../src/core/multicast-groups';
import { freeUdpPort } from './support/ports';
import { FAST_FAILURE_DETECTION, pollUntil, StaticCluster } from './support/static-cluster';

jest.setTimeout(120_000);

const IDS = ['n1', 'n2', 'n3', 'n4'];
const PARTITIONS = 4;

/** A cluster seed under which some node other than the writer (n1) is in group 0 only. */
function chooseSeed(): { seed: string; hasher: BuzHash; outsider: string; placement: Placement } {
  for (let i = 0; ; i++) {
    const seed = `groups-it-${i}`;
    const hasher = new BuzHash(seed);
    const placement = new Placement(hasher, PARTITIONS, 1);
    placement.setMembers(IDS);
    const groups = new MulticastGroups(2, placement);
    const outsider = IDS.slice(1).find((id) => groups.groupsOf(id).join(',') === '0');
    // The writer listens on group 1 too, so its own datagrams loop back to it (the filter below).
    if (outsider !== undefined && groups.membersOf(1).size >= 2 && groups.groupsOf('n1').includes(1)) return { seed, hasher, outsider, placement };
  }
}

let cluster: StaticCluster | undefined;

afterAll(async () => {
  await cluster?.stopAll();
  cluster = undefined;
});

test('a node outside group 1 receives none of its deltas; the holders of group 1 partitions receive and keep them', async () => {
  const { seed, hasher, outsider, placement } = chooseSeed();
  const port = await freeUdpPort();
  // Group addresses of this run only (from the port), so parallel runs do not hear each other.
  const groups = [`239.255.${(port >> 8) & 0xff}.${port & 0xff}:${port}`, `239.254.${(port >> 8) & 0xff}.${port & 0xff}:${port}`];
  cluster = await StaticCluster.start(IDS, [
    '--partitions', String(PARTITIONS),
    '--replicas', '1',
    '--cluster-seed', seed,
    '--multicast-groups', groups.join(','),
    '--multicast-interface', '127.0.0.1',
    ...FAST_FAILURE_DETECTION,
  ]);
  await cluster.waitForAlive(IDS, 15_000);
  for (const id of IDS) await cluster.node(id).process!.ready();

  // Every node's Status lists the groups placement gives it.
  const expected = new MulticastGroups(2, placement);
  await pollUntil('every node listens on its groups', async () => {
    for (const id of IDS) {
      const want = expected.groupsOf(id).map((g) => groups[g]!.split(':')[0]!);
      if ((await cluster!.status(id)).multicastGroups.join(',') !== want.join(',')) return false;
    }
    return true;
  }, 10_000);
  expect((await cluster.status(outsider)).multicastGroups).toEqual([groups[0]!.split(':')[0]]);

  // Sessions of group 1's partitions (1 and 3), written on n1.
  const ids: string[] = [];
  for (let i = 0; ids.length < 200; i++) if (hasher.partitionOf(`g1-${i}`, PARTITIONS) % 2 === 1) ids.push(`g1-${i}`);
  const dataReceived = async (id: string) => (await cluster!.node(id).process!.scrape()).value('baton_replication_datagrams_received_total', { type: 'data' });
  const before = new Map(await Promise.all(IDS.map(async (id) => [id, await dataReceived(id)] as const)));
  const writer = cluster.client('n1');
  for (const id of ids) await writer.put(id, { basket: Buffer.from(`cart of ${id}`) });

  // Each session's secondary (the partition's top-ranked member other than n1) holds it.
  const clients = new Map(IDS.map((id) => [id, new BatonClient(cluster!.node(id).process!.apiAddress)]));
  try {
    await pollUntil('every secondary holds its sessions', async () => {
      for (const id of ids) {
        const secondary = placement.secondaries(hasher.partitionOf(id, PARTITIONS), 'n1')[0]!;
        if ((await clients.get(secondary)!.get(id)) === undefined) return false;
      }
      return true;
    }, 20_000);
  } finally {
    for (const client of clients.values()) client.close();
  }
  const secondaries = new Set(ids.map((id) => placement.secondaries(hasher.partitionOf(id, PARTITIONS), 'n1')[0]!));
  expect(secondaries.has(outsider)).toBe(false);
  for (const id of secondaries) expect((await dataReceived(id)) - before.get(id)!).toBeGreaterThan(0);
  expect((await dataReceived(outsider)) - before.get(outsider)!).toBe(0);

  // The writer's own datagrams to group 1 loop back to its group 1 socket: the first one
  // reaches the process, shows their source, and a socket filter drops the rest in the kernel
  // (those already queued on the socket when it attaches still arrive: a few, not hundreds).
  const writerMetrics = await cluster.node('n1').process!.scrape();
  const sent = writerMetrics.value('baton_replication_datagrams_sent_total', { type: 'data' });
  expect(sent).toBeGreaterThanOrEqual(100);
  const ownReceived = writerMetrics.value('baton_replication_own_datagrams_received_total');
  expect(ownReceived).toBeGreaterThanOrEqual(1);
  expect(ownReceived).toBeLessThanOrEqual(expected.groupsOf('n1').length * 5);
});
