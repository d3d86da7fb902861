/**
 * A cluster of real `baton sidecar` processes on loopback that know each other through a
 * static --peers list, for tests that kill and restart nodes.
 *
 * Rules:
 * - Peer ports are reserved before any node starts (every node's --peers names them all)
 *   and kept per node id, so a restarted node comes back at the same peer address.
 * - Every process started here is ended by stopAll(): SIGTERM, then SIGKILL for a node that
 *   has not exited within the grace period. kill() and stop() wait for the exit.
 * - Waiting is polling with a bound (pollUntil), never a fixed sleep.
 * - A start is retried only when a reserved port was taken before its node bound it (a
 *   race with other processes on the host), and says so on stderr; any other failure to
 *   start is the test's failure, so a node that sometimes crashes at start is seen.
 * - BATON_TEST_LOG_LEVEL sets the nodes' --log-level (default info, which the start needs
 *   at least); BATON_TEST_LOG_DIR, when set, receives every node's log lines on stopAll().
 */
import { appendFileSync, mkdirSync } from 'node:fs';
import * as path from 'node:path';
import { credentials, Metadata } from '@grpc/grpc-js';
import { BatonClient } from '../../src/client/client';
import { ClusterServiceClient, type StatusResponse } from '../../src/gen/baton/v1/cluster';
import { freePeerPorts } from './ports';
import { isPortRace, startSidecar, type SidecarProcess } from './sidecar-process';

/** Failure detection fast enough for tests (the constraints: dead > suspect > heartbeat). */
export const FAST_FAILURE_DETECTION = ['--heartbeat-interval-ms', '100', '--suspect-after-ms', '400', '--dead-after-ms', '1000'];

const POLL_INTERVAL_MS = 50;
const STATUS_DEADLINE_MS = 1000;
const STOP_GRACE_MS = 5000;
const START_ATTEMPTS = 3;

export interface ClusterNode {
  readonly id: string;
  readonly peerPort: number;
  /** The running process, or undefined while the node is down. */
  process: SidecarProcess | undefined;
  /** A client of the running process's session API. */
  client: BatonClient | undefined;
  /** Processes this node ran before (killed or stopped), for their logs. */
  readonly previous: SidecarProcess[];
}

/** fn over items with at most `limit` calls pending; results in the order of items. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/** Polls `check` until it returns true; throws after `withinMs` naming `what`. */
export async function pollUntil(what: string, check: () => Promise<boolean> | boolean, withinMs: number): Promise<void> {
  const until = Date.now() + withinMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > until) throw new Error(`${what}: not within ${withinMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, POLL_INTERVAL_MS));
  }
}

export class StaticCluster {
  readonly nodes: ClusterNode[];
  readonly peers: string;

  private constructor(
    ids: readonly string[],
    ports: readonly number[],
    private readonly args: readonly string[],
    private readonly nodeArgs: Readonly<Record<string, readonly string[]>>,
  ) {
    this.nodes = ids.map((id, i) => ({ id, peerPort: ports[i]!, process: undefined, client: undefined, previous: [] }));
    this.peers = ports.map((p) => `127.0.0.1:${p}`).join(',');
  }

  /**
   * Starts one node per id at once; `args` are added to every node's command line, and
   * `nodeArgs[id]` to that node's only (on every start). A reserved port may be taken by
   * someone else before its node binds it: only such a start is retried (at most
   * START_ATTEMPTS times in all) on fresh ports. Any other failure stops the nodes that
   * did start and rejects.
   */
  static async start(ids: readonly string[], args: readonly string[], nodeArgs: Readonly<Record<string, readonly string[]>> = {}): Promise<StaticCluster> {
    for (let attempt = 1; ; attempt++) {
      const cluster = new StaticCluster(ids, await freePeerPorts(ids.length), args, nodeArgs);
      // Every start settles before a failure is handled, so no node that was still
      // starting when another failed is left running.
      const started = await Promise.allSettled(ids.map((id) => cluster.startNode(id)));
      const failures = started.filter((s): s is PromiseRejectedResult => s.status === 'rejected').map((s) => s.reason as unknown);
      if (failures.length === 0) return cluster;
      await cluster.stopAll();
      const other = failures.find((err) => !isPortRace(err));
      if (other !== undefined || attempt >= START_ATTEMPTS) throw other ?? failures[0];
      process.stderr.write(
        `StaticCluster: a reserved peer port was taken before its node bound it (attempt ${attempt} of ${START_ATTEMPTS}); ` +
          `starting again on fresh ports: ${(failures[0] as Error).message}\n`,
      );
    }
  }

  node(id: string): ClusterNode {
    const node = this.nodes.find((n) => n.id === id);
    if (node === undefined) throw new Error(`no node ${id}`);
    return node;
  }

  client(id: string): BatonClient {
    const client = this.node(id).client;
    if (client === undefined) throw new Error(`node ${id} is not running`);
    return client;
  }

  /** Starts (or restarts) a node with its id, its peer port and the cluster's --peers. */
  async startNode(id: string): Promise<void> {
    const node = this.node(id);
    if (node.process !== undefined) throw new Error(`node ${id} is already running`);
    node.process = await startSidecar([
      '--node-id', id,
      '--peer-listen', `127.0.0.1:${node.peerPort}`,
      '--peers', this.peers,
      '--log-level', process.env.BATON_TEST_LOG_LEVEL ?? 'info',
      ...this.args,
      ...(this.nodeArgs[id] ?? []),
    ]);
    node.client = new BatonClient(node.process.apiAddress);
  }

  /** Sends `signal` and waits for the exit; resolves with the exit code (null when signalled). */
  async kill(id: string, signal: NodeJS.Signals = 'SIGKILL'): Promise<number | null> {
    const node = this.node(id);
    const process = node.process;
    if (process === undefined) throw new Error(`node ${id} is not running`);
    const client = node.client;
    node.client = undefined;
    node.process = undefined;
    node.previous.push(process);
    // The client is closed after the exit, so answers the node sent before it died are read.
    try {
      return await process.stop(signal, STOP_GRACE_MS);
    } finally {
      client?.close();
    }
  }

  /** Graceful stop (SIGTERM); resolves with the exit code. */
  stop(id: string): Promise<number | null> {
    return this.kill(id, 'SIGTERM');
  }

  running(): ClusterNode[] {
    return this.nodes.filter((n) => n.process !== undefined);
  }

  async status(id: string): Promise<StatusResponse> {
    const process = this.node(id).process;
    if (process === undefined) throw new Error(`node ${id} is not running`);
    const client = new ClusterServiceClient(process.apiAddress, credentials.createInsecure());
    try {
      return await new Promise<StatusResponse>((resolve, reject) =>
        client.status({}, new Metadata(), { deadline: Date.now() + STATUS_DEADLINE_MS }, (err, response) => (err ? reject(err) : resolve(response))),
      );
    } finally {
      client.close();
    }
  }

  /**
   * Waits until every running node's Status lists exactly `ids` as alive, and all of them
   * place partitions from one coordinator view that has every one of `ids` as a member.
   */
  async waitForAlive(ids: readonly string[], withinMs: number): Promise<void> {
    const want = [...ids].sort().join(',');
    let last = '';
    await pollUntil(
      `every running node sees ${want} alive and places from one view of them`,
      async () => {
        const statuses = await Promise.all(this.running().map(async (n) => ({ id: n.id, status: await this.status(n.id).catch(() => undefined) })));
        last = statuses
          .map(({ id, status }) => {
            const alive = status?.members.filter((m) => m.state === 'alive').map((m) => m.nodeId).sort().join(',');
            return `${id}: ${alive ?? 'no answer'} (view ${status?.viewId ?? '?'} of ${status?.coordinatorNodeId ?? '?'})`;
          })
          .join('; ');
        const first = statuses[0]?.status;
        return statuses.every(({ status }) => {
          if (status === undefined || first === undefined) return false;
          const alive = status.members.filter((m) => m.state === 'alive').map((m) => m.nodeId).sort().join(',');
          // Placement follows the coordinator's view: until every node places from one view
          // of them all, a write can go to an earlier view's secondaries (or find none).
          const inView = ids.every((id) => status.members.find((m) => m.nodeId === id)?.index !== undefined);
          return alive === want && inView && status.viewId === first.viewId && status.coordinatorNodeId === first.coordinatorNodeId;
        });
      },
      withinMs,
    ).catch((err: Error) => {
      throw new Error(`${err.message} (last seen: ${last})`);
    });
  }

  /** The last `n` log lines of a node's processes (current and previous), for failure messages. */
  logTail(id: string, n = 20): string {
    const node = this.node(id);
    const processes = [...node.previous, ...(node.process === undefined ? [] : [node.process])];
    const lines = processes.flatMap((p) => [...p.logs.map((l) => JSON.stringify(l)), ...p.stderr]);
    return lines.slice(-n).join('\n');
  }

  /** Stops every running node (SIGTERM, SIGKILL after a grace period); resolves with their exit codes. */
  async stopAll(): Promise<Map<string, number | null>> {
    const codes = new Map<string, number | null>();
    await Promise.all(
      this.running().map(async (n) => {
        codes.set(n.id, await this.kill(n.id, 'SIGTERM'));
      }),
    );
    const dir = process.env.BATON_TEST_LOG_DIR;
    if (dir !== undefined && dir !== '') this.writeLogs(dir);
    return codes;
  }

  private writeLogs(dir: string): void {
    mkdirSync(dir, { recursive: true });
    for (const node of this.nodes) {
      node.previous.forEach((p, i) => {
        const lines = [...p.logs.map((l) => JSON.stringify(l)), ...p.stderr.map((l) => `stderr: ${l}`)];
        appendFileSync(path.join(dir, `${node.id}-${i + 1}.log`), lines.join('\n') + '\n');
      });
    }
  }
}
