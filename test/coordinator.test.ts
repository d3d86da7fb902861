/**
 * The coordinator core (src/core/coordinator.ts) on virtual time: a few Coordinators joined
 * by an in-memory bus (delivery after a fixed delay, links that can be cut), each with its
 * own view of who is alive. No sockets, no clock.
 */
import { Coordinator, DEFAULT_COORDINATOR_TIMINGS, type CoordinatorConfig } from '../src/core/coordinator';
import type { ClusterBody } from '../src/core/replication-engine';

const LINK_MS = 1;

interface Sim {
  now: number;
  nodes: Map<string, Coordinator>;
  /** Who each node considers alive (self included), with a version that moves on change. */
  live: Map<string, { ids: string[]; version: number }>;
  cut: Set<string>;
  queue: { at: number; from: string; to: string; body: ClusterBody }[];
  sent: number;
}

function cluster(ids: string[], priorities: Record<string, number> = {}): Sim {
  const sim: Sim = { now: 1_000, nodes: new Map(), live: new Map(), cut: new Set(), queue: [], sent: 0 };
  for (const id of ids) sim.live.set(id, { ids: [...ids], version: 1 });
  for (const id of ids) {
    const config: CoordinatorConfig = { ...DEFAULT_COORDINATOR_TIMINGS, firstViewDelayMs: 500, joinWaitMs: 0, self: id, priority: priorities[id] ?? 0, role: 'edge', maxPayloadBytes: 1400 };
    sim.nodes.set(
      id,
      new Coordinator(
        config,
        {
          liveMembers: () => sim.live.get(id)!.ids,
          membersVersion: () => sim.live.get(id)!.version,
          isFailed: (nodeId) => !sim.live.get(id)!.ids.includes(nodeId),
          roleOf: () => 'edge',
          send: (to, body) => {
            sim.sent++;
            if (!sim.cut.has(`${id}>${to}`)) sim.queue.push({ at: sim.now + LINK_MS, from: id, to, body });
          },
        },
        sim.now,
      ),
    );
  }
  return sim;
}

/** Runs every delivery and timer up to `until`, with heartbeats (view reports) every 250 ms. */
function run(sim: Sim, ms: number): void {
  const until = sim.now + ms;
  let nextBeat = Math.ceil(sim.now / 250) * 250;
  for (;;) {
    sim.queue.sort((a, b) => a.at - b.at);
    const timers = [...sim.nodes.values()].map((c) => c.nextDeadline());
    const next = Math.min(sim.queue[0]?.at ?? Infinity, ...timers, nextBeat);
    if (next > until) break;
    sim.now = Math.max(sim.now, next);
    if (nextBeat <= sim.now) {
      nextBeat += 250;
      for (const [id, c] of sim.nodes) {
        const { viewId, viewCoordinator } = c.heartbeatExtras();
        for (const [to, other] of sim.nodes) if (to !== id && !sim.cut.has(`${id}>${to}`) && sim.live.get(to)!.ids.includes(id)) other.heartbeat(id, Number(viewId), viewCoordinator, sim.now);
      }
    }
    while (sim.queue.length > 0 && sim.queue[0]!.at <= sim.now) {
      const m = sim.queue.shift()!;
      sim.nodes.get(m.to)?.body(m.from, m.body, sim.now);
    }
    for (const c of sim.nodes.values()) if (c.nextDeadline() <= sim.now) c.tick(sim.now);
  }
  sim.now = until;
}

/** Node `id` stops: it leaves the bus and every other node's live set. */
function crash(sim: Sim, id: string): void {
  sim.nodes.delete(id);
  for (const [, live] of sim.live) {
    if (!live.ids.includes(id)) continue;
    live.ids = live.ids.filter((x) => x !== id);
    live.version++;
  }
  sim.queue = sim.queue.filter((m) => m.to !== id && m.from !== id);
  for (const c of sim.nodes.values()) c.sync(sim.now);
}

function join(sim: Sim, id: string, on: string): void {
  const live = sim.live.get(on)!;
  live.ids = [...live.ids, id];
  live.version++;
  sim.nodes.get(on)!.sync(sim.now);
}

function agreement(sim: Sim): string[] {
  return [...sim.nodes].map(([id, c]) => `${id}:${c.coordinatorId}@${c.viewId}${c.placingFromView ? '' : '(bootstrap)'}`);
}

describe('electing one coordinator', () => {
  test('every member follows the smallest index and places from its one view', () => {
    const sim = cluster(['c', 'a', 'b']);
    run(sim, 2_000);
    const views = [...sim.nodes.values()].map((c) => c.views.current);
    expect(agreement(sim)).toEqual(['c:a@1', 'a:a@1', 'b:a@1']);
    expect(views.every((v) => v?.coordinator === 'a' && v.members.map((m) => m.nodeId).join() === 'a,b,c')).toBe(true);
    for (const c of sim.nodes.values()) expect(c.members()).toEqual(['a', 'b', 'c']);
  });

  test('a higher priority wins over a smaller node id', () => {
    const sim = cluster(['a', 'b', 'c'], { c: 5 });
    run(sim, 2_000);
    expect(agreement(sim)).toEqual(['a:c@1', 'b:c@1', 'c:c@1']);
    expect(sim.nodes.get('a')!.views.current!.members.map((m) => `${m.nodeId}${m.index}`)).toEqual(['c0', 'a1', 'b2']);
  });

  test('before the first view every node places from its own live members (the bootstrap)', () => {
    const sim = cluster(['a', 'b']);
    const b = sim.nodes.get('b')!;
    expect(b.viewId).toBe(0);
    expect(b.placingFromView).toBe(false);
    expect(b.members()).toEqual(['a', 'b']);
  });
});

describe('the coordinator fails', () => {
  test('the next index takes over and publishes a view above every view held', () => {
    const sim = cluster(['a', 'b', 'c', 'd']);
    run(sim, 2_000);
    const before = sim.nodes.get('b')!.viewId;
    crash(sim, 'a');
    // Between the crash and the new view, survivors place from their own detectors.
    expect(sim.nodes.get('c')!.placingFromView).toBe(false);
    expect(sim.nodes.get('c')!.members()).toEqual(['b', 'c', 'd']);
    run(sim, 2_000);
    expect(agreement(sim)).toEqual([`b:b@${before + 1}`, `c:b@${before + 1}`, `d:b@${before + 1}`]);
  });

  test('a member holding a newer view from the old coordinator makes the new one outnumber it', () => {
    const sim = cluster(['a', 'b', 'c']);
    run(sim, 2_000);
    // a publishes a view b never receives (a->b loses everything), then crashes.
    sim.cut.add('a>b');
    join(sim, 'x', 'a');
    run(sim, 200);
    expect(sim.nodes.get('c')!.viewId).toBe(2);
    expect(sim.nodes.get('b')!.viewId).toBe(1);
    crash(sim, 'a');
    sim.cut.clear();
    run(sim, 3_000);
    const b = sim.nodes.get('b')!;
    expect(agreement(sim)).toEqual([`b:b@${b.viewId}`, `c:b@${b.viewId}`]);
    expect(b.viewId).toBeGreaterThan(2);
  });
});

describe('views follow membership', () => {
  test('changes within the batch window share one view', () => {
    const sim = cluster(['a', 'b', 'c', 'd']);
    run(sim, 2_000);
    const a = sim.nodes.get('a')!;
    const published = a.published;
    crash(sim, 'c');
    run(sim, DEFAULT_COORDINATOR_TIMINGS.viewBatchMs / 2);
    crash(sim, 'd');
    run(sim, 1_000);
    expect(a.published).toBe(published + 1);
    expect(sim.nodes.get('b')!.views.current!.members.map((m) => m.nodeId)).toEqual(['a', 'b']);
  });

  test('a member that missed a view is sent it again after its heartbeat reports an older one', () => {
    const sim = cluster(['a', 'b', 'c']);
    run(sim, 2_000);
    sim.cut.add('a>c');
    crash(sim, 'b');
    run(sim, 100);
    expect(sim.nodes.get('c')!.viewId).toBe(1);
    sim.cut.clear();
    run(sim, 1_000);
    expect(agreement(sim)).toEqual(['a:a@2', 'c:a@2']);
  });

  test('a view from a node that is not the coordinator is refused and counted', () => {
    const sim = cluster(['a', 'b']);
    run(sim, 2_000);
    const b = sim.nodes.get('b')!;
    b.body('c', { $case: 'viewPage', viewPage: { viewId: 99n, coordinatorNodeId: 'c', memberCount: 1, first: 0, members: [{ nodeId: 'c', priority: 0, index: 0, role: 'edge' }] } }, sim.now);
    expect(b.viewId).toBe(1);
    expect(b.drops.get('not_coordinator')).toBe(1);
  });

  test('a notice whose sender is not the datagram sender is dropped', () => {
    const sim = cluster(['a', 'b']);
    run(sim, 2_000);
    const b = sim.nodes.get('b')!;
    b.body('a', { $case: 'coordinatorNotice', coordinatorNotice: { kind: 1, sender: { nodeId: 'z', priority: 9 }, revoked: undefined } }, sim.now);
    expect(b.drops.get('bad_notice')).toBe(1);
    expect(b.coordinatorId).toBe('a');
  });
});
