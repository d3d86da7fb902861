/**
 * Drains of real `baton sidecar` processes end within --drain-timeout-seconds whatever peers
 * and clients hold open: peers' Lookup streams (opened by resumes), Exchange streams with
 * operations in flight, and watchers.
 */
import { BatonClient } from '../src/client/client';
import { FAST_FAILURE_DETECTION, StaticCluster } from './support/static-cluster';

const DRAIN_TIMEOUT_SECONDS = 3;

let cluster: StaticCluster | undefined;

afterEach(async () => {
  await cluster?.stopAll();
  cluster = undefined;
});

/** The drain's own log line: how long it took, and whether everything was acknowledged. */
function stoppedLine(c: StaticCluster, id: string): Record<string, unknown> | undefined {
  const node = c.node(id);
  const last = node.previous[node.previous.length - 1];
  return last?.logs.find((l) => l.msg === 'baton node stopped');
}

describe('drain', () => {
  it('ends within the drain timeout on every node after resumes opened peer Lookup streams to it', async () => {
    cluster = await StaticCluster.start(['a', 'b', 'c'], ['--replicas', '2', '--partitions', '16', '--drain-timeout-seconds', String(DRAIN_TIMEOUT_SECONDS), ...FAST_FAILURE_DETECTION]);
    await cluster.waitForAlive(['a', 'b', 'c'], 10_000);
    const a = cluster.node('a').client!;
    const c = cluster.node('c').client!;
    const ids = Array.from({ length: 20 }, (_, i) => `drain-${i}`);
    for (const id of ids) await a.put(id, { v: Buffer.from(id) }, { minReplicas: 2 });
    // Resumes on c ask a and b over the Lookup streams c keeps open to each.
    for (const id of ids) expect((await c.get(id, { resume: true }))?.ownerNodeId).toBe('c');
    // ...and resumes back on a open a's streams to b and c.
    for (const id of ids.slice(0, 5)) expect((await a.get(id, { resume: true }))?.ownerNodeId).toBe('a');
    // A watcher and an idle Exchange stream stay open on every node.
    const watchers = ['a', 'b', 'c'].map((id) => {
      const client = new BatonClient(cluster!.node(id).process!.apiAddress);
      const watch = client.watch('');
      void (async () => {
        try {
          for await (const _ of watch) void _;
        } catch {
          // The node ends the watch when it drains.
        }
      })();
      return client;
    });
    try {
      for (const id of ['a', 'b', 'c']) {
        expect([id, await cluster.stop(id)]).toEqual([id, 0]);
        const line = stoppedLine(cluster, id);
        expect(line).toBeDefined();
        expect(Number(line!.duration_ms)).toBeLessThanOrEqual(DRAIN_TIMEOUT_SECONDS * 1000);
      }
    } finally {
      for (const w of watchers) w.close();
    }
  });
});
