/**
 * --quorum on real sidecars: five `baton sidecar` processes in network namespaces of their
 * own (test/support/netns.ts), one secondary per session, `--quorum 3`. Users' requests
 * arrive round-robin on all five, each resuming its session and writing a part of its own
 * (min_replicas 1), while nftables splits a and b from c, d and e for several times failure
 * detection and takeover. The smaller side refuses ("no quorum"), the larger side goes on
 * acknowledging writes, and after the heal every acknowledged write is on the newest copy of
 * its session. (Without --quorum the same split loses acknowledged writes: each side takes
 * the other's sessions over; docs/protocol.md, "What a partition costs".)
 *
 * Where namespaces or nftables are missing the test is skipped with the reason in its title,
 * except under CI, where it fails with the reason.
 */
import { NetnsLab, namespacesUnavailable, nftablesUnavailable } from './support/netns';
import { namespaceTest, NetnsCluster, partValue } from './support/netns-cluster';
import { FAST_FAILURE_DETECTION, mapLimit, pollUntil } from './support/static-cluster';

const NODES = ['a', 'b', 'c', 'd', 'e'] as const;
const SMALLER = ['a', 'b'];
const LARGER = ['c', 'd', 'e'];
/** Failure detection (FAST_FAILURE_DETECTION) declares a node dead after 1 s and takes its sessions over 1 s later: the split lasts three times that. */
const SPLIT_MS = 6000;
const CLUSTER_ARGS = ['--replicas', '1', '--partitions', '64', '--quorum', '3', '--drain-timeout-seconds', '5', ...FAST_FAILURE_DETECTION];
const STOP_AFTER_MS = 7000;

const missing = namespacesUnavailable() ?? nftablesUnavailable();
let lab: NetnsLab | undefined;

beforeAll(async () => {
  if (namespacesUnavailable() === undefined) lab = await NetnsLab.create(NODES);
}, 30_000);

afterAll(async () => {
  await lab?.destroy();
});

describe(missing === undefined ? '--quorum (network namespaces)' : `--quorum (network namespaces) [NOT RUN: ${missing}]`, () => {
  namespaceTest(
    'two of five split from three: the smaller side refuses for want of a quorum, the larger goes on, and no acknowledged write is lost',
    missing,
    async () => {
      const net = lab!;
      const cluster = new NetnsCluster(net, CLUSTER_ARGS, STOP_AFTER_MS);
      const USERS = 40;
      const ROUNDS = 12;
      const ids = Array.from({ length: USERS }, (_, i) => `quorum-${i}`);
      const acknowledged: { id: string; part: string; value: string; during: boolean }[] = [];
      const refusals = new Map<string, number>();
      const refused = (node: string, err: unknown) => {
        const key = `${node}: ${(err as Error).message.startsWith('no quorum') ? 'no quorum' : 'other'}`;
        refusals.set(key, (refusals.get(key) ?? 0) + 1);
      };
      const lost: string[] = [];
      let split = false;
      await cluster.run(async () => {
        await cluster.startAll(NODES);
        await cluster.waitForStates(NODES, Object.fromEntries(NODES.map((n) => [n, 'alive'])), 15_000);
        await cluster.waitForOneView([...NODES], 15_000);
        await mapLimit(ids, 8, (id, i) => cluster.node(NODES[i % NODES.length]!).client.put(id, { first: Buffer.from('first') }, { minReplicas: 1 }).then(() => undefined));
        let next = 0;
        const request = async (id: string, part: string) => {
          const node = NODES[next++ % NODES.length]!;
          const client = cluster.node(node).client;
          const during = split;
          try {
            await client.get(id, { resume: true, deadlineMs: 2000 });
            const value = `${part} on ${node}`;
            await client.put(id, { [part]: Buffer.from(value) }, { minReplicas: 1, deadlineMs: 1500 });
            acknowledged.push({ id, part, value, during: during && LARGER.includes(node) });
          } catch (err) {
            refused(node, err);
          }
        };
        let healed: Promise<void> = Promise.resolve();
        for (let round = 0; round < ROUNDS; round++) {
          if (round === 2) {
            for (const node of SMALLER) await net.partition(node, LARGER);
            split = true;
            healed = new Promise<void>((resolve) => setTimeout(resolve, SPLIT_MS)).then(async () => {
              for (const node of SMALLER) await net.heal(node);
              split = false;
            });
          }
          await Promise.all(ids.map((id) => Promise.all([request(id, `r${round}a`), request(id, `r${round}b`)])));
          await new Promise((resolve) => setTimeout(resolve, 300));
        }
        await healed;
        await cluster.waitForStates(NODES, Object.fromEntries(NODES.map((n) => [n, 'alive'])), 15_000);
        // Every acknowledged write is on the newest copy (highest epoch) of its session, read
        // without resume on every node.
        await pollUntil(
          'every acknowledged write is on the newest copy of its session',
          async () => {
            lost.length = 0;
            for (const { id, part, value } of acknowledged) {
              const copies = (await Promise.all(NODES.map((n) => cluster.node(n).client.get(id, { deadlineMs: 2000 }).catch(() => undefined)))).filter((c) => c !== undefined);
              const newest = copies.sort((x, y) => Number(y.epoch) - Number(x.epoch))[0];
              const held = partValue(newest, part);
              if (held !== value) lost.push(`${id} ${part}: acknowledged '${value}', newest copy (owner ${newest?.ownerNodeId} epoch ${newest?.epoch}) has ${held}`);
            }
            return lost.length === 0;
          },
          20_000,
        ).catch(() => undefined);
      });
      const duringOnLarger = acknowledged.filter((w) => w.during).length;
      console.log(
        `--quorum split: ${acknowledged.length} of ${USERS * ROUNDS * 2} writes acknowledged, ${duringOnLarger} of them on the larger side during the split; ` +
          `refused ${JSON.stringify(Object.fromEntries(refusals))}; acknowledged and lost after the heal: ${lost.length}${lost.length > 0 ? ` (${lost.slice(0, 3).join('; ')})` : ''}`,
      );
      expect(lost.slice(0, 5)).toEqual([]);
      expect(duringOnLarger).toBeGreaterThan(0);
      expect(SMALLER.some((node) => (refusals.get(`${node}: no quorum`) ?? 0) > 0)).toBe(true);
      expect(LARGER.map((node) => refusals.get(`${node}: no quorum`) ?? 0)).toEqual([0, 0, 0]);
    },
    150_000,
  );
});
