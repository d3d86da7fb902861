/**
 * Runs scenarios in the simulator (test/support/sim-cluster.ts, sim-network.ts): seeded,
 * on virtual time, a whole file in milliseconds.
 *
 * Rules:
 * - This is the ONLY scenario file that knows the simulator's API: when the simulator
 *   changes, only this adapter does.
 * - Scenario names map to simulated nodes in the order they start; owners are mapped back,
 *   so transcripts speak of a, b, c and never of the simulator's node ids.
 * - Time moves only in advance, converge, drain and sync writes, each bounded; a bound that
 *   runs out is reported, never waited past.
 */
import { DEFAULT_SYNC_TIMEOUT_MS } from '../../src/core/session-api';
import type { ClusterSettings, PartValue } from './scenario-parser';
import type { ConvergeResult, ScenarioBackend, SessionView } from './scenario-runner';
import { PERFECT_LINK, type LinkProfile } from './sim-network';
import { comparable, SIM_T0, SimCluster, type SimNode } from './sim-cluster';

/** How long membership may take to settle when nodes start (virtual ms). */
const SETTLE_MS = 10_000;
/** The sidecar's default --drain-timeout-seconds, in virtual ms. */
const DRAIN_TIMEOUT_MS = 20_000;

/** A node's counters, with the restart they belong to. */
interface Figures {
  generation: number;
  data: number;
  retransmitted: number;
  nacksSent: number;
  nacksReceived: number;
  transfersDone: number;
  transfersAsked: number;
}

export class SimBackend implements ScenarioBackend {
  readonly name = 'simulation';
  private cluster: SimCluster | undefined;
  private readonly byName = new Map<string, SimNode>();
  private readonly nameOf = new Map<string, string>();
  /** Each first node's election counts once the cluster was ready. */
  private readonly electionBaselines = new Map<string, { generation: number; elected: number; revokes: number }>();
  /** --priority by scenario name, for nodes' next starts. */
  private readonly priorities = new Map<string, number>();
  /** Each first node's counters once the cluster was ready. */
  private readonly baselines = new Map<string, Figures>();

  private get sim(): SimCluster {
    if (this.cluster === undefined) throw new Error('no cluster yet');
    return this.cluster;
  }

  private node(name: string): SimNode {
    const node = this.byName.get(name);
    if (node === undefined) throw new Error(`no node ${name}`);
    return node;
  }

  private named(nodeId: string): string {
    return this.nameOf.get(nodeId) ?? nodeId;
  }

  private bind(name: string, node: SimNode): void {
    this.byName.set(name, node);
    this.nameOf.set(node.nodeId, name);
  }

  async startCluster(settings: ClusterSettings, names: readonly string[]): Promise<void> {
    // The simulator names its nodes node-1, node-2… in start order.
    const priorities = Object.fromEntries(names.flatMap((name, i) => (this.priorities.has(name) ? [[`node-${i + 1}`, this.priorities.get(name)!]] : [])));
    const cluster = new SimCluster({ seed: settings.seed, nodes: names.length, transport: settings.transport, replicas: settings.replicas, partitions: settings.partitions, priorities });
    this.cluster = cluster;
    names.forEach((name, i) => this.bind(name, cluster.nodes[i]!));
    // Ready as the sidecar's readiness means it: every node sees the others and has pulled
    // what placement gave it.
    if (!cluster.runUntil(() => this.membershipMatches() && this.caughtUp(), SETTLE_MS)) throw new Error(`the nodes were not ready within ${SETTLE_MS} ms`);
    // Counters count from here: what a story shows is what happened in it, not the start-up pulls.
    for (const name of names) this.baselines.set(name, this.figures(this.node(name)));
    for (const name of names) {
      const node = this.node(name);
      const { elected, revokes } = node.core.masters.elections.counts;
      this.electionBaselines.set(name, { generation: node.generation, elected, revokes });
    }
  }

  async startNode(name: string): Promise<void> {
    const priority = this.priorities.get(name);
    if (priority !== undefined) this.sim.priorities.set(`node-${this.sim.nodes.length + 1}`, priority);
    this.bind(name, this.sim.addNode());
  }

  async setPriority(name: string, priority: number): Promise<void> {
    this.priorities.set(name, priority);
    const node = this.byName.get(name);
    if (node !== undefined) this.sim.priorities.set(node.nodeId, priority);
  }

  async elections(name: string): Promise<{ elected: number; revokes: number; mastered: number }> {
    const node = this.node(name);
    const counts = node.core.masters.elections.counts;
    const base = this.electionBaselines.get(name);
    const since = base !== undefined && base.generation === node.generation ? base : { elected: 0, revokes: 0 };
    return { elected: counts.elected - since.elected, revokes: counts.revokes - since.revokes, mastered: node.core.masters.mastered().length };
  }

  async kill(name: string): Promise<void> {
    this.node(name).stop();
  }

  async restart(name: string): Promise<void> {
    this.node(name).restart();
  }

  /** What the sidecar's drain does: flush, wait for every alive secondary's acknowledgement, leave, stop. */
  async drain(name: string): Promise<{ allAcknowledged: boolean }> {
    const node = this.node(name);
    node.engine.flush(this.sim.net.now);
    node.pump();
    const answering = (nodeId: string) => node.membership.member(nodeId)?.state === 'alive';
    const allAcknowledged = this.sim.runUntil(() => node.engine.allAcknowledged(answering), DRAIN_TIMEOUT_MS);
    node.engine.leave();
    node.pump();
    node.stop();
    return { allAcknowledged };
  }

  async write(name: string, session: string, parts: readonly PartValue[], sync: number): Promise<{ acked: number | undefined }> {
    const node = this.node(name);
    const { ticket } = await node.writeSettled(session, Object.fromEntries(parts.map((p) => [p.name, p.value])), { sync });
    if (sync === 0) return { acked: undefined };
    if (ticket === undefined) return { acked: 0 };
    this.sim.runUntil(() => node.completedTickets.has(ticket), DEFAULT_SYNC_TIMEOUT_MS);
    const acked = node.completedTickets.get(ticket) ?? node.engine.ackCount(ticket);
    node.engine.releaseTicket(ticket);
    return { acked };
  }

  async delete(name: string, session: string, parts: readonly string[]): Promise<boolean> {
    const node = this.node(name);
    return parts.length === 0 ? node.deleteSession(session) : node.deleteParts(session, [...parts]);
  }

  async resume(name: string, session: string): Promise<SessionView | undefined> {
    const node = this.node(name);
    return (await node.resume(session)) === undefined ? undefined : this.read(name, session);
  }

  async read(name: string, session: string): Promise<SessionView | undefined> {
    const snapshot = this.node(name).store.snapshot(session, this.sim.net.now);
    if (snapshot === undefined || snapshot.expiresAt === 0) return undefined;
    const parts: Record<string, string> = {};
    for (const p of snapshot.parts) if (p.value !== null) parts[p.name] = p.value.toString('latin1');
    return { owner: this.named(snapshot.owner), epoch: snapshot.epoch, parts };
  }

  async alive(name: string): Promise<string[]> {
    return this.aliveSeenBy(this.node(name));
  }

  private aliveSeenBy(node: SimNode): string[] {
    return node.membership
      .members()
      .filter((m) => m.state === 'alive')
      .map((m) => this.named(m.nodeId))
      .sort();
  }

  async coordination(name: string): Promise<{ coordinator: string; viewId: number; members: string[] }> {
    const coordinator = this.node(name).core.coordinator;
    const view = coordinator.views.current;
    const id = coordinator.coordinatorId;
    return { coordinator: id === undefined ? '' : this.named(id), viewId: view?.id ?? 0, members: (view?.members ?? []).map((m) => this.named(m.nodeId)).sort() };
  }

  async drop(from: string, to: string, percent: number): Promise<void> {
    this.setLink(from, to, { loss: percent / 100 });
  }

  async delay(from: string, to: string, ms: number): Promise<void> {
    this.setLink(from, to, ms === 0 ? { delayMinMs: PERFECT_LINK.delayMinMs, delayMaxMs: PERFECT_LINK.delayMaxMs } : { delayMinMs: ms, delayMaxMs: ms });
  }

  /** Changes some of a link's properties, keeping the others (a perfect link again: no profile). */
  private setLink(from: string, to: string, change: Partial<LinkProfile>): void {
    const [a, b] = [this.node(from).address, this.node(to).address];
    const profile = { ...(this.sim.net.linkProfile(a, b) ?? PERFECT_LINK), ...change };
    const perfect = (Object.keys(PERFECT_LINK) as (keyof LinkProfile)[]).every((k) => profile[k] === PERFECT_LINK[k]);
    this.sim.net.setLinkProfile(a, b, perfect ? undefined : profile);
  }

  async partition(groups: readonly (readonly string[])[]): Promise<void> {
    for (let i = 0; i < groups.length; i++) {
      for (let j = i + 1; j < groups.length; j++) {
        for (const a of groups[i]!) for (const b of groups[j]!) this.sim.net.cut(this.node(a).address, this.node(b).address);
      }
    }
  }

  async heal(): Promise<void> {
    const net = this.sim.net;
    net.healAll();
    for (const a of this.sim.nodes) for (const b of this.sim.nodes) if (a !== b) net.setLinkProfile(a.address, b.address, undefined);
  }

  async advance(ms: number): Promise<void> {
    this.sim.runFor(ms);
  }

  clockDetail(): string {
    return `virtual time ${this.sim.net.now - SIM_T0} ms`;
  }

  async converge(sessions: readonly string[], withinMs: number): Promise<ConvergeResult> {
    const started = this.sim.net.now;
    const converged = this.sim.runUntil(() => this.problems(sessions, true).length === 0, withinMs);
    return {
      converged,
      problems: converged ? [] : this.problems(sessions, false),
      details: [`after ${this.sim.net.now - started} ms of virtual time`],
    };
  }

  /** What keeps the cluster from having converged (stops at the first when `first`). */
  private problems(sessions: readonly string[], first: boolean): string[] {
    const sim = this.sim;
    const problems: string[] = [];
    const running = sim.running;
    const runningNames = running.map((n) => this.named(n.nodeId)).sort().join(' ');
    for (const node of running) {
      const seen = this.aliveSeenBy(node).join(' ');
      if (seen !== runningNames) problems.push(`${this.named(node.nodeId)} sees ${seen} alive, running are ${runningNames}`);
      // A suspect is neither alive nor gone: placement has not moved yet.
      const suspects = node.membership.members().filter((m) => m.state === 'suspect');
      if (suspects.length > 0) problems.push(`${this.named(node.nodeId)} suspects ${suspects.map((m) => this.named(m.nodeId)).join(' ')}`);
      const answering = (nodeId: string) => node.membership.member(nodeId)?.state === 'alive';
      if (!node.engine.allAcknowledged(answering)) problems.push(`${this.named(node.nodeId)} has unacknowledged deltas`);
      if (node.engine.hasPendingPulls()) problems.push(`${this.named(node.nodeId)} is still pulling partitions`);
      // Placement follows the coordinator's view: converged means one coordinator, one view of the running nodes, placed from.
      const coordinator = node.core.coordinator;
      const view = coordinator.views.current;
      const viewNames = (view?.members ?? []).map((m) => this.named(m.nodeId)).sort().join(' ');
      if (!coordinator.placingFromView || viewNames !== runningNames || view?.coordinator !== running[0]!.core.coordinator.coordinatorId || coordinator.viewId !== running[0]!.core.coordinator.viewId) {
        problems.push(`${this.named(node.nodeId)} follows ${this.named(coordinator.coordinatorId ?? 'none')} at view ${coordinator.viewId} (${viewNames})`);
      }
      if (first && problems.length > 0) return problems;
    }
    const t = sim.transfers;
    if (t.started !== t.ok + t.failed + t.stale) problems.push(`${t.started - t.ok - t.failed - t.stale} state transfers in flight`);
    const now = sim.net.now;
    for (const id of sessions) {
      if (first && problems.length > 0) return problems;
      const copies = running.map((n) => ({ node: n, snapshot: n.store.snapshot(id, now) })).filter((c) => c.snapshot !== undefined);
      if (copies.length === 0) continue;
      const newest = copies.reduce((a, b) => (b.snapshot!.epoch > a.snapshot!.epoch ? b : a));
      const owner = running.find((n) => n.nodeId === newest.snapshot!.owner);
      if (owner !== undefined) {
        // Extra copies are allowed: a former secondary discards its copy only later.
        problems.push(...sim.divergences(new Map([[id, owner.nodeId]]), { allowExtraCopies: true }).map((p) => this.rename(p)));
        continue;
      }
      // The owner is gone and nobody resumed the session yet: the holders agree with each other.
      const want = JSON.stringify(comparable(copies[0]!.snapshot!));
      for (const c of copies.slice(1)) {
        if (JSON.stringify(comparable(c.snapshot!)) !== want) problems.push(`${id}: ${this.named(c.node.nodeId)} and ${this.named(copies[0]!.node.nodeId)} hold different copies`);
      }
    }
    return problems;
  }

  /** The simulator's node ids in a message, as scenario names. */
  private rename(text: string): string {
    return text.replace(/node-\d+/g, (id) => this.named(id));
  }

  async masters(): Promise<{ partition: number; views: Map<string, string | undefined> }[]> {
    const out: { partition: number; views: Map<string, string | undefined> }[] = [];
    const running = [...this.sim.running].sort((a, b) => (this.named(a.nodeId) < this.named(b.nodeId) ? -1 : 1));
    for (let partition = 0; partition < this.sim.options.partitions; partition++) {
      const views = new Map<string, string | undefined>();
      for (const node of running) {
        if (node.core.masters.elections.group(partition) === undefined) continue;
        const master = node.core.masters.masterOf(partition);
        views.set(this.named(node.nodeId), master === undefined ? undefined : this.named(master));
      }
      out.push({ partition, views });
    }
    return out;
  }

  async claims(name: string): Promise<{ resume: number; takeover: number }> {
    const claims = this.node(name).core.counters.claims;
    return { resume: claims.get('resume') ?? 0, takeover: claims.get('takeover') ?? 0 };
  }

  async counters(name: string): Promise<string[]> {
    const now = this.figures(this.node(name));
    const base = this.baselines.get(name);
    const since = (key: keyof Figures) => now[key] - (base !== undefined && base.generation === now.generation ? base[key] : 0);
    return [
      `data sent ${since('data')}, retransmitted ${since('retransmitted')}, nacks sent ${since('nacksSent')}, nacks received ${since('nacksReceived')}`,
      `state transfers ${since('transfersDone')} of ${since('transfersAsked')} requested`,
    ];
  }

  private figures(node: SimNode): Figures {
    const s = node.engine.stats;
    return {
      generation: node.generation,
      data: s.datagramsSent.data,
      retransmitted: s.retransmissions,
      nacksSent: s.datagramsSent.nack,
      nacksReceived: s.nacksReceived,
      transfersDone: node.resyncs.filter((r) => r.outcome === 'ok').length,
      transfersAsked: node.resyncs.length,
    };
  }

  async close(): Promise<void> {
    // Nothing outlives the run: the simulation is plain objects.
  }

  private caughtUp(): boolean {
    const t = this.sim.transfers;
    return t.started === t.ok + t.failed + t.stale && this.sim.running.every((n) => !n.engine.hasPendingPulls());
  }

  private membershipMatches(): boolean {
    const running = this.sim.running.map((n) => this.named(n.nodeId)).sort().join(' ');
    return this.sim.running.every((n) => this.aliveSeenBy(n).join(' ') === running);
  }
}
