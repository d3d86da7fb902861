/**
 * Runs scenarios against real `baton sidecar` processes (compiled, from dist/) on loopback:
 * the same stories the simulator runs, carried out through the real session API, so a
 * transcript's outcome lines can be compared with the simulation's golden.
 *
 * Rules:
 * - Every node the scenario will ever start gets a peer port up front, and every node's
 *   --peers names them all; a restarted node comes back at its address.
 * - Time is real: `advance` waits, `converge` polls (bounded) until the nodes' Status and
 *   their local copies say what the simulator's converge checks.
 * - What loopback cannot do (losing or cutting datagrams: that needs network namespaces,
 *   see test/support/netns.ts; multicast; the simulator's counters) throws
 *   UnsupportedCommandError. Nothing is skipped or pretended.
 * - Every process started here is stopped by close() (SIGTERM, SIGKILL after a grace),
 *   which the runner always calls; a failed start stops the ones that did start.
 */
import { credentials, Metadata, status as GrpcStatus } from '@grpc/grpc-js';
import { BatonClient, BatonClientError, type Session } from '../../src/client/client';
import { ClusterServiceClient, type StatusResponse } from '../../src/gen/baton/v1/cluster';
import type { ClusterSettings, PartValue } from './scenario-parser';
import { UnsupportedCommandError, type ConvergeResult, type ScenarioBackend, type SessionView } from './scenario-runner';
import { freePeerPorts } from './ports';
import { isPortRace, startSidecar, type SidecarProcess } from './sidecar-process';

const START_ATTEMPTS = 3;
const READY_WITHIN_MS = 20_000;
const STATUS_DEADLINE_MS = 1000;
const POLL_INTERVAL_MS = 50;
const STOP_GRACE_MS = 15_000;
/** A synchronous write's deadline: the session API's own wait (DEFAULT_SYNC_TIMEOUT_MS) and a margin. */
const WRITE_DEADLINE_MS = 8000;

interface RunningNode {
  process: SidecarProcess;
  client: BatonClient;
}

export class ProcessBackend implements ScenarioBackend {
  readonly name = 'process';
  private settings: ClusterSettings | undefined;
  private ports = new Map<string, number>();
  private readonly running = new Map<string, RunningNode>();
  private readonly priorities = new Map<string, number>();
  /** Processes that ended, for their logs in failure messages. */
  private readonly ended: { name: string; process: SidecarProcess }[] = [];

  async startCluster(settings: ClusterSettings, names: readonly string[], allNames: readonly string[]): Promise<void> {
    if (settings.transport !== 'unicast') throw new UnsupportedCommandError(this.name, 'run multicast (it would need a group per test run)');
    this.settings = settings;
    for (let attempt = 1; ; attempt++) {
      const ports = await freePeerPorts(allNames.length);
      this.ports = new Map(allNames.map((name, i) => [name, ports[i]!]));
      const started = await Promise.allSettled(names.map((name) => this.startNode(name)));
      const failure = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
      if (failure === undefined) break;
      await this.stopAll();
      if (!isPortRace(failure.reason) || attempt >= START_ATTEMPTS) throw failure.reason;
    }
    await Promise.all([...this.running.values()].map((n) => withTimeout(n.process.ready(), READY_WITHIN_MS, 'a node did not become ready')));
    await this.pollUntil('every node sees the others alive', READY_WITHIN_MS, async () => (await this.membershipProblems()).length === 0);
  }

  async startNode(name: string): Promise<void> {
    const settings = this.settings!;
    const port = this.ports.get(name);
    if (port === undefined) throw new Error(`no peer port for ${name}`);
    if (this.running.has(name)) throw new Error(`node ${name} is already running`);
    const peers = [...this.ports.values()].map((p) => `127.0.0.1:${p}`).join(',');
    const process = await startSidecar([
      '--node-id', name,
      '--peer-listen', `127.0.0.1:${port}`,
      '--peers', peers,
      '--partitions', String(settings.partitions),
      '--replicas', String(settings.replicas),
      '--priority', String(this.priorities.get(name) ?? 0),
      '--log-level', 'info',
    ]);
    this.running.set(name, { process, client: new BatonClient(process.apiAddress, { defaultDeadlineMs: WRITE_DEADLINE_MS }) });
  }

  private node(name: string): RunningNode {
    const node = this.running.get(name);
    if (node === undefined) throw new Error(`node ${name} is not running`);
    return node;
  }

  private async end(name: string, signal: NodeJS.Signals): Promise<SidecarProcess> {
    const node = this.node(name);
    this.running.delete(name);
    this.ended.push({ name, process: node.process });
    try {
      const code = await node.process.stop(signal, STOP_GRACE_MS);
      if (signal === 'SIGTERM' && code !== 0) throw new Error(`${name} exited with ${code} on SIGTERM: ${node.process.stderr.slice(-5).join(' | ')}`);
    } finally {
      node.client.close();
    }
    return node.process;
  }

  async kill(name: string): Promise<void> {
    await this.end(name, 'SIGKILL');
  }

  async restart(name: string): Promise<void> {
    await this.startNode(name);
  }

  async drain(name: string): Promise<{ allAcknowledged: boolean }> {
    const process = await this.end(name, 'SIGTERM');
    const stopped = process.logs.find((l) => l.msg === 'baton node stopped');
    if (stopped === undefined) throw new Error(`${name} exited without logging its stop`);
    return { allAcknowledged: stopped.all_acknowledged === true };
  }

  async write(name: string, session: string, parts: readonly PartValue[], sync: number): Promise<{ acked: number | undefined }> {
    const values = Object.fromEntries(parts.map((p) => [p.name, Buffer.from(p.value, 'latin1')]));
    try {
      const response = await this.node(name).client.put(session, values, { minReplicas: sync });
      return { acked: sync === 0 ? undefined : response.replicasAcked };
    } catch (err) {
      // "k of n secondaries acknowledged before the deadline": the write is applied, k came.
      const partial = err instanceof BatonClientError && err.code === GrpcStatus.UNAVAILABLE ? /^(\d+) of \d+ secondaries acknowledged/.exec(err.message) : null;
      if (partial === null) throw err;
      return { acked: Number(partial[1]) };
    }
  }

  async delete(name: string, session: string, parts: readonly string[]): Promise<boolean> {
    return this.node(name).client.delete(session, { parts });
  }

  async resume(name: string, session: string): Promise<SessionView | undefined> {
    return view(await this.node(name).client.get(session, { resume: true }));
  }

  async read(name: string, session: string): Promise<SessionView | undefined> {
    return view(await this.node(name).client.get(session));
  }

  async alive(name: string): Promise<string[]> {
    const status = await this.status(name);
    return status.members.filter((m) => m.state === 'alive').map((m) => m.nodeId).sort();
  }

  async coordination(name: string): Promise<{ coordinator: string; viewId: number; members: string[] }> {
    const status = await this.status(name);
    const members = status.members.filter((m) => m.index !== undefined).map((m) => m.nodeId).sort();
    return { coordinator: status.coordinatorNodeId, viewId: Number(status.viewId), members };
  }

  async drop(): Promise<void> {
    throw new UnsupportedCommandError(this.name, 'lose datagrams on loopback (that needs network namespaces with nftables, see test/support/netns.ts)');
  }

  async delay(): Promise<void> {
    throw new UnsupportedCommandError(this.name, 'delay datagrams on loopback (that needs network namespaces with tc netem)');
  }

  async partition(): Promise<void> {
    throw new UnsupportedCommandError(this.name, 'cut links on loopback (that needs network namespaces, see test/support/netns.ts)');
  }

  async heal(): Promise<void> {
    throw new UnsupportedCommandError(this.name, 'heal links it cannot cut');
  }

  async advance(ms: number): Promise<void> {
    await new Promise((resolve) => setTimeout(resolve, ms));
  }

  clockDetail(): undefined {
    return undefined;
  }

  /**
   * What the simulator's converge checks, from outside: every running node sees exactly
   * the running nodes alive (no suspects) with nothing unacknowledged towards them, and
   * every running node holds the same copy of each session. The last holds only while
   * every node holds every session (replicas + 1 ≥ running nodes); with more nodes,
   * placement decides who holds what, and this backend does not judge it.
   */
  async converge(sessions: readonly string[], withinMs: number): Promise<ConvergeResult> {
    const replicas = this.settings!.replicas;
    if (replicas !== 0 && this.running.size > replicas + 1) {
      throw new UnsupportedCommandError(this.name, `judge convergence of ${this.running.size} nodes holding ${replicas + 1} copies each (placement decides who holds what)`);
    }
    const started = Date.now();
    let problems: string[] = [];
    const converged = await this.poll(withinMs, async () => {
      problems = await this.membershipProblems();
      if (problems.length === 0) problems = await this.copyProblems(sessions);
      return problems.length === 0;
    });
    return { converged, problems, details: [`after ${Date.now() - started} ms`] };
  }

  private async membershipProblems(): Promise<string[]> {
    const names = [...this.running.keys()].sort();
    const problems: string[] = [];
    for (const name of names) {
      const status = await this.status(name).catch((err: Error) => err);
      if (status instanceof Error) {
        problems.push(`${name} does not answer Status: ${status.message}`);
        continue;
      }
      const alive = status.members.filter((m) => m.state === 'alive').map((m) => m.nodeId).sort();
      if (alive.join(' ') !== names.join(' ')) problems.push(`${name} sees ${alive.join(' ')} alive, running are ${names.join(' ')}`);
      const suspects = status.members.filter((m) => m.state === 'suspect').map((m) => m.nodeId);
      if (suspects.length > 0) problems.push(`${name} suspects ${suspects.join(' ')}`);
      const lagging = status.members.filter((m) => !m.isSelf && names.includes(m.nodeId) && m.replicationLagSeqs > 0n).map((m) => m.nodeId);
      if (lagging.length > 0) problems.push(`${name} has unacknowledged deltas towards ${lagging.join(' ')}`);
    }
    return problems;
  }

  private async copyProblems(sessions: readonly string[]): Promise<string[]> {
    const names = [...this.running.keys()].sort();
    const problems: string[] = [];
    for (const session of sessions) {
      const copies = await Promise.all(names.map(async (name) => JSON.stringify((await this.read(name, session)) ?? null)));
      if (new Set(copies).size > 1) problems.push(`${session}: ${names.map((n, i) => `${n} holds ${copies[i]}`).join(', ')}`);
    }
    return problems;
  }

  async counters(): Promise<string[]> {
    throw new UnsupportedCommandError(this.name, "show the simulator's counters");
  }

  async masters(): Promise<{ partition: number; views: Map<string, string | undefined> }[]> {
    throw new UnsupportedCommandError(this.name, 'show partition masters (Status does not list them yet)');
  }

  async elections(): Promise<{ elected: number; revokes: number; mastered: number }> {
    throw new UnsupportedCommandError(this.name, 'count election notices (Status does not list them yet)');
  }

  async setPriority(name: string, priority: number): Promise<void> {
    this.priorities.set(name, priority);
  }

  async claims(name: string): Promise<{ resume: number; takeover: number }> {
    const metrics = await this.node(name).process.scrape();
    const claimed = (reason: string) => metrics.value('baton_sessions_claimed_total', { reason });
    return { resume: claimed('resume'), takeover: claimed('takeover') };
  }

  async close(): Promise<void> {
    await this.stopAll();
  }

  /** The last log lines of every process that ran, for a failure message. */
  logTail(lines = 10): string {
    const all = [...this.ended, ...[...this.running].map(([name, n]) => ({ name, process: n.process }))];
    return all.map(({ name, process }) => `${name}: ${[...process.logs.map((l) => JSON.stringify(l)), ...process.stderr].slice(-lines).join('\n  ')}`).join('\n');
  }

  private async stopAll(): Promise<void> {
    await Promise.allSettled([...this.running.keys()].map((name) => this.end(name, 'SIGTERM')));
  }

  private async status(name: string): Promise<StatusResponse> {
    const client = new ClusterServiceClient(this.node(name).process.apiAddress, credentials.createInsecure());
    try {
      return await new Promise<StatusResponse>((resolve, reject) =>
        client.status({}, new Metadata(), { deadline: Date.now() + STATUS_DEADLINE_MS }, (err, response) => (err ? reject(err) : resolve(response))),
      );
    } finally {
      client.close();
    }
  }

  /** Polls check until it holds (true) or withinMs passed (false). */
  private async poll(withinMs: number, check: () => Promise<boolean>): Promise<boolean> {
    const until = Date.now() + withinMs;
    for (;;) {
      if (await check()) return true;
      if (Date.now() > until) return false;
      await new Promise((resolve) => setTimeout(resolve, POLL_INTERVAL_MS));
    }
  }

  private async pollUntil(what: string, withinMs: number, check: () => Promise<boolean>): Promise<void> {
    if (!(await this.poll(withinMs, check))) throw new Error(`${what}: not within ${withinMs} ms (${(await this.membershipProblems()).join('; ')})`);
  }
}

function view(session: Session | undefined): SessionView | undefined {
  if (session === undefined) return undefined;
  const parts: Record<string, string> = {};
  for (const p of session.parts) parts[p.name] = Buffer.from(p.value).toString('latin1');
  return { owner: session.ownerNodeId, epoch: Number(session.epoch), parts };
}

async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([promise, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} within ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}
