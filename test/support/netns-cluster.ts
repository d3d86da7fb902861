/**
 * Real `baton sidecar` processes in network namespaces (netns.ts) for the chaos tests: the
 * nodes one test starts, and a test that runs only where namespaces can be made.
 */
import { randomBytes } from 'node:crypto';
import type { Session } from '../../src/client/client';
import type { NetnsLab, NamespacedBaton } from './netns';
import { pollUntil } from './static-cluster';

/**
 * `it` when `missing` is undefined. Otherwise the test cannot run here: under CI it fails
 * with the reason; elsewhere it is skipped with the reason in its title and a warning.
 */
export function namespaceTest(title: string, missing: string | undefined, fn: () => Promise<void>, timeoutMs: number): void {
  if (missing === undefined) return void it(title, fn, timeoutMs);
  if (process.env.CI) {
    return void it(title, () => {
      throw new Error(`cannot run here: ${missing}`);
    });
  }
  console.warn(`namespace test NOT RUN (${missing}): ${title}`);
  it.skip(`${title} [NOT RUN: ${missing}]`, fn);
}

/** The nodes one test started; stopAll() ends every one still running. */
export class NetnsCluster {
  private readonly nodes = new Map<string, NamespacedBaton>();
  private readonly clusterKey = randomBytes(32).toString('base64');

  constructor(
    private readonly lab: NetnsLab,
    /** Flags every node starts with, after --peers. */
    private readonly args: readonly string[],
    /** stopAll: SIGKILL a node still running this long after SIGTERM. */
    private readonly stopAfterMs: number,
  ) {}

  async start(label: string): Promise<NamespacedBaton> {
    const node = await this.lab.startBaton(label, ['--peers', this.lab.peerList(), ...this.args], { BATON_CLUSTER_KEY: this.clusterKey });
    this.nodes.set(label, node);
    return node;
  }

  /** Starts every label at once; when one fails, the others are stopped by stopAll() all the same. */
  async startAll(labels: readonly string[]): Promise<void> {
    const started = await Promise.allSettled(labels.map((l) => this.start(l)));
    const failed = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed !== undefined) throw failed.reason;
  }

  node(label: string): NamespacedBaton {
    const node = this.nodes.get(label);
    if (node === undefined) throw new Error(`node ${label} was never started`);
    return node;
  }

  /** Waits until every one of `observers` sees each node of `want` in the given state. */
  async waitForStates(observers: readonly string[], want: Record<string, string>, withinMs: number): Promise<void> {
    let last = '';
    await pollUntil(
      `${observers.join(', ')} see ${JSON.stringify(want)}`,
      async () => {
        const views = await Promise.all(observers.map(async (o) => [o, await this.node(o).memberStates()] as const));
        last = views.map(([o, v]) => `${o}: ${JSON.stringify(v)}`).join('; ');
        return views.every(([, v]) => Object.entries(want).every(([id, state]) => v[id] === state));
      },
      withinMs,
    ).catch((err: Error) => {
      throw new Error(`${err.message} (last seen: ${last})`);
    });
  }

  /**
   * Waits until every one of `labels` places partitions from one coordinator view that has
   * them all as members: membership can count a node alive before the view that placement
   * follows includes it, and until then a write finds fewer secondaries (min_replicas fails).
   */
  async waitForOneView(labels: readonly string[], withinMs: number): Promise<void> {
    let last = '';
    await pollUntil(
      `${labels.join(', ')} place from one view of them all`,
      async () => {
        const statuses = await Promise.all(labels.map(async (l) => [l, await this.node(l).status().catch(() => undefined)] as const));
        last = statuses.map(([l, s]) => `${l}: view ${s?.viewId ?? '?'} of ${s?.coordinatorNodeId ?? '?'}, indexed ${s?.members.filter((m) => m.index !== undefined).map((m) => m.nodeId).join(',') ?? '?'}`).join('; ');
        const first = statuses[0]?.[1];
        return statuses.every(
          ([, s]) =>
            s !== undefined &&
            first !== undefined &&
            s.viewId === first.viewId &&
            s.coordinatorNodeId === first.coordinatorNodeId &&
            labels.every((l) => s.members.find((m) => m.nodeId === l)?.index !== undefined),
        );
      },
      withinMs,
    ).catch((err: Error) => {
      throw new Error(`${err.message} (last seen: ${last})`);
    });
  }

  /** SIGTERM to every node still running, SIGKILL once the drain limit has passed (the drains measured are the test's own). */
  async stopAll(): Promise<void> {
    await Promise.all([...this.nodes.values()].map((n) => n.stop('SIGTERM', this.stopAfterMs)));
  }

  /**
   * Runs a test's body against the cluster: a failure comes back with every node's log tail,
   * and every node is stopped afterwards, whatever happened (`cleanup` first: the test's own
   * load, say).
   */
  async run(body: () => Promise<void>, cleanup?: () => Promise<void>): Promise<void> {
    try {
      await body();
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${this.logTails()}`);
    } finally {
      await cleanup?.();
      await this.stopAll();
    }
  }

  /** Log tails of every node, for failure messages. */
  logTails(): string {
    return [...this.nodes.values()].map((n) => `--- ${n.label}\n${n.logTail(10)}`).join('\n');
  }
}

/** A part of a session as text (undefined: no session, or no such part). */
export function partValue(session: Session | undefined, name: string): string | undefined {
  const part = session?.parts.find((p) => p.name === name);
  return part === undefined ? undefined : Buffer.from(part.value).toString();
}
