/**
 * Election: the index order, the staggered timer, one group's DECLARE / accept / REVOKE,
 * the failure probe's inquiries, delay estimates, and many groups of several nodes on a
 * simulated network (seeded delays, virtual time: the clock jumps to the next event).
 */
import { compareIndex, electionDelayMs, ElectionGroup, type ElectionContext, type MemberIndex } from '../src/core/election';
import { ElectionGroups, type ElectionGroupsConfig } from '../src/core/election-groups';
import { FailureProbe } from '../src/core/failure-probe';
import { MAX_REPORTED, PeerDelays } from '../src/core/peer-delays';
import { SeededRandom } from '../src/store/random';

const idx = (nodeId: string, rank: number, priority = 0): MemberIndex => ({ nodeId, priority, rank });

function context(self: string, failed: Set<string> = new Set(), delay = 10): ElectionContext {
  return { self, isFailed: (id) => failed.has(id), delayMs: (a, b) => (a === b ? 0 : delay), electionBaseMs: 20, joinWaitMs: 1500 };
}

/** A group past its join wait with no DECLARE heard: it follows its smallest-index live member. */
function settled(g: ElectionGroup, members: MemberIndex[]): ElectionGroup {
  g.setMembers(members, 0);
  g.tick(1500);
  g.take();
  return g;
}

describe('election index and timer', () => {
  it('orders by priority (higher wins), then rank, then node id', () => {
    expect(compareIndex(idx('z', 5, 2), idx('a', 0, 1))).toBeLessThan(0);
    expect(compareIndex(idx('z', 1), idx('a', 2))).toBeLessThan(0);
    expect(compareIndex(idx('a', 1), idx('b', 1))).toBeLessThan(0);
    expect(compareIndex(idx('b', 1), idx('b', 1))).toBe(0);
    const sorted = [idx('c', 2), idx('b', 0, -1), idx('a', 1), idx('d', 3, 7)].sort(compareIndex).map((m) => m.nodeId);
    expect(sorted).toEqual(['d', 'a', 'c', 'b']);
  });

  it('staggers: base plus, for every earlier backup, its largest delay to the backups after it', () => {
    const d: Record<string, number> = { 'a>b': 3, 'a>c': 7, 'a>d': 2, 'b>c': 4, 'b>d': 11, 'c>d': 1 };
    const delay = (x: string, y: string): number => d[`${x}>${y}`] ?? 100;
    const backups = ['a', 'b', 'c', 'd'];
    expect(electionDelayMs(backups, 'a', 20, delay)).toBe(20);
    expect(electionDelayMs(backups, 'b', 20, delay)).toBe(20 + 7);
    expect(electionDelayMs(backups, 'c', 20, delay)).toBe(20 + 7 + 11);
    expect(electionDelayMs(backups, 'd', 20, delay)).toBe(20 + 7 + 11 + 1);
  });
});

describe('one election group', () => {
  const members = [idx('m', 0), idx('a', 1), idx('b', 2), idx('c', 3)];

  it('a new group waits for a DECLARE; with none it follows its smallest-index live member', () => {
    const g = new ElectionGroup(0, context('b', new Set(['m'])));
    g.setMembers(members, 0);
    expect([g.state, g.master, g.deadline]).toEqual(['joining', undefined, 1500]);
    g.tick(1499);
    expect(g.state).toBe('joining');
    g.tick(1500);
    expect([g.state, g.master]).toEqual(['backup', 'a']);
    expect(g.take()).toEqual([]);
    const m = new ElectionGroup(0, context('m'));
    m.setMembers(members, 0);
    m.tick(1500);
    expect([m.state, m.master]).toEqual(['master', 'm']);
    expect(m.take()).toEqual([{ to: ['a', 'b', 'c'], notice: { kind: 'declare', group: 0, declarer: idx('m', 0) } }]);
  });

  it('a joining member accepts a DECLARE whose index wins, and REVOKEs one whose index loses (a late arrival)', () => {
    const late = new ElectionGroup(4, context('m'));
    late.setMembers(members, 0);
    late.handleDeclare(idx('a', 1), 10);
    expect([late.state, late.master, late.deadline]).toEqual(['master', 'm', Infinity]);
    expect(late.take()).toEqual([{ to: ['a', 'b', 'c'], notice: { kind: 'revoke', group: 4, revoker: idx('m', 0), revoked: idx('a', 1) } }]);
    const joiner = new ElectionGroup(4, context('c'));
    joiner.setMembers(members, 0);
    joiner.handleDeclare(idx('a', 1), 10);
    expect([joiner.state, joiner.master, joiner.deadline]).toEqual(['backup', 'a', Infinity]);
    expect(joiner.take()).toEqual([]);
  });

  it('a master DECLAREs to a member that joins its group', () => {
    const m = settled(new ElectionGroup(0, context('m')), members.slice(0, 3));
    m.setMembers(members, 2000);
    expect(m.take()).toEqual([{ to: ['c'], notice: { kind: 'declare', group: 0, declarer: idx('m', 0) } }]);
  });

  it('master failure: WAITING with the staggered timer, then MASTER and DECLARE to every other member', () => {
    const failed = new Set<string>();
    const g = settled(new ElectionGroup(7, context('b', failed)), members);
    expect(g.master).toBe('m');
    failed.add('m');
    g.masterFailed('m', 2000);
    expect(g.state).toBe('waiting');
    // backups a, b, c: b waits for a (its delay to b and c: 10).
    expect(g.deadline).toBe(2000 + 20 + 10);
    g.tick(2029);
    expect(g.state).toBe('waiting');
    g.tick(2030);
    expect([g.state, g.master, g.deadline]).toEqual(['master', 'b', Infinity]);
    expect(g.take()).toEqual([{ to: ['m', 'a', 'c'], notice: { kind: 'declare', group: 7, declarer: idx('b', 2) } }]);
  });

  it('a DECLARE stops a WAITING member: it accepts and never declares', () => {
    const failed = new Set<string>();
    const g = settled(new ElectionGroup(0, context('c', failed)), members);
    failed.add('m');
    g.masterFailed('m', 2000);
    g.handleDeclare(idx('a', 1), 2025);
    expect([g.state, g.master, g.deadline]).toEqual(['backup', 'a', Infinity]);
    g.tick(10_000);
    expect(g.take()).toEqual([]);
  });

  it('a MASTER accepts a DECLARE whose index wins and REVOKEs one whose index loses', () => {
    const failed = new Set<string>();
    const b = settled(new ElectionGroup(3, context('b', failed)), members);
    failed.add('m');
    b.masterFailed('m', 2000);
    b.tick(3000);
    expect(b.state).toBe('master');
    b.take();
    b.handleDeclare(idx('c', 3), 3001);
    expect([b.state, b.master]).toEqual(['master', 'b']);
    expect(b.take()).toEqual([{ to: ['m', 'a', 'c'], notice: { kind: 'revoke', group: 3, revoker: idx('b', 2), revoked: idx('c', 3) } }]);
    b.handleDeclare(idx('a', 1), 3002);
    expect([b.state, b.master]).toEqual(['backup', 'a']);
    expect(b.take()).toEqual([]);
  });

  it('a higher priority wins over a lower rank', () => {
    const g = settled(new ElectionGroup(0, context('a')), [idx('a', 0), idx('b', 1, 5)]);
    expect(g.master).toBe('b');
  });

  it('REVOKE: backups switch to the revoker; a master with a better index revokes back', () => {
    const failed = new Set<string>();
    const c = settled(new ElectionGroup(0, context('c', failed)), members);
    failed.add('m');
    c.masterFailed('m', 0);
    c.handleDeclare(idx('b', 2), 10);
    c.handleRevoke(idx('a', 1), idx('b', 2), 11);
    expect(c.master).toBe('a');
    // A revoke from a worse member than the live master c follows changes nothing.
    c.handleRevoke(idx('b', 2), idx('m', 0), 12);
    expect(c.master).toBe('a');

    failed.delete('m');
    const a = settled(new ElectionGroup(0, context('a', failed)), members);
    failed.add('m');
    a.masterFailed('m', 2000);
    a.tick(2100);
    a.take();
    a.handleRevoke(idx('b', 2), idx('a', 1), 101);
    expect([a.state, a.master]).toEqual(['master', 'a']);
    expect(a.take()).toEqual([{ to: ['m', 'b', 'c'], notice: { kind: 'revoke', group: 0, revoker: idx('a', 1), revoked: idx('b', 2) } }]);
  });

  it('a master that leaves the group starts an election; a member outside the group follows no one', () => {
    const g = settled(new ElectionGroup(0, context('a')), members);
    g.setMembers(members.slice(1), 2050);
    expect(g.state).toBe('waiting');
    expect(g.deadline).toBe(2050 + 20);
    const out = settled(new ElectionGroup(0, context('m')), members);
    out.setMembers(members.slice(1), 2001);
    expect([out.state, out.master]).toEqual(['backup', undefined]);
  });

  it('ignores notices from non-members and from itself', () => {
    const g = settled(new ElectionGroup(0, context('b')), members);
    g.handleDeclare(idx('x', 0, 99), 1);
    g.handleDeclare(idx('b', 2), 1);
    expect(g.master).toBe('m');
  });
});

describe('failure probe', () => {
  const config = { inquireAfterMs: 500, inquiryIntervalMs: 100, detectionTimeoutMs: 300 };

  it('inquires a silent watched peer and declares it failed only after the detection time-out', () => {
    const probe = new FailureProbe(config);
    probe.heard('m', 0);
    probe.heard('x', 0);
    probe.watch(['m'], 0);
    expect(probe.nextDeadline()).toBe(500);
    expect(probe.tick(499)).toEqual({ inquiries: [], failed: [] });
    expect(probe.tick(500)).toEqual({ inquiries: ['m'], failed: [] });
    expect(probe.nextDeadline()).toBe(600);
    expect(probe.tick(600)).toEqual({ inquiries: ['m'], failed: [] });
    expect(probe.tick(700)).toEqual({ inquiries: ['m'], failed: [] });
    expect(probe.tick(800)).toEqual({ inquiries: [], failed: ['m'] });
    expect(probe.isFailed('m')).toBe(true);
    expect(probe.isFailed('x')).toBe(false);
    expect(probe.nextDeadline()).toBe(Infinity);
    expect(probe.heard('m', 900)).toBe(true);
    expect(probe.isFailed('m')).toBe(false);
  });

  it('a reply within the time-out keeps the peer alive', () => {
    const probe = new FailureProbe(config);
    probe.watch(['m'], 0);
    probe.tick(500);
    expect(probe.heard('m', 790)).toBe(false);
    expect(probe.tick(800).failed).toEqual([]);
    expect(probe.nextDeadline()).toBe(1290);
  });
});

describe('peer delays', () => {
  it('averages own round trips, reads reports, falls back to the reverse direction, then the default', () => {
    const d = new PeerDelays('me', 5);
    d.roundTrip('a', 8);
    expect(d.delayMs('me', 'a')).toBe(8);
    d.roundTrip('a', 16);
    expect(d.delayMs('me', 'a')).toBe(8 + (16 - 8) / 8);
    d.roundTrip('a', Number.NaN);
    d.roundTrip('a', -3);
    expect(d.delayMs('a', 'me')).toBe(9);
    d.report('b', new Map([['c', 2], ['me', 7], ['bad', -1]]));
    expect(d.delayMs('b', 'c')).toBe(2);
    expect(d.delayMs('c', 'b')).toBe(2);
    expect(d.delayMs('b', 'bad')).toBe(5);
    expect(d.delayMs('x', 'y')).toBe(5);
    d.forget('b');
    expect(d.delayMs('b', 'c')).toBe(5);
  });

  it('keeps at most MAX_REPORTED estimates from one report', () => {
    const d = new PeerDelays('me', 5);
    const big = new Map<string, number>();
    for (let i = 0; i < MAX_REPORTED + 10; i++) big.set(`n${i}`, 1);
    d.report('b', big);
    expect(d.delayMs('b', `n${MAX_REPORTED - 1}`)).toBe(1);
    expect(d.delayMs('b', `n${MAX_REPORTED}`)).toBe(5);
  });
});

// --- several nodes on a simulated network -------------------------------------------

interface Event {
  at: number;
  seq: number;
  to: string;
  from: string;
  kind: 'notice' | 'heartbeat';
  notice?: ReturnType<ElectionGroups['take']>['notices'] extends ReadonlyMap<string, infer L> ? L : never;
}

/**
 * Nodes each running ElectionGroups over the same groups; heartbeats every 250 ms (each
 * one is a datagram the probe hears), links that can be cut. Each node has a seeded
 * latency of 1-9 ms; a datagram from a to b takes the mean of theirs (hosts differ, the
 * network between them adds the same).
 */
class ElectionSim {
  now = 0;
  readonly nodes = new Map<string, ElectionGroups>();
  readonly crashed = new Set<string>();
  readonly cut = new Set<string>();
  /** Who sent DECLAREs, and how many REVOKEs were sent. */
  declarers = new Set<string>();
  revokes = 0;
  private events: Event[] = [];
  private seq = 0;
  private nextHeartbeat = 0;
  private readonly delay = new Map<string, number>();

  constructor(
    readonly ids: string[],
    seed: number,
    groups: Map<number, MemberIndex[]>,
    /** Drop every notice (not heartbeats): lost DECLAREs. */
    public dropNotices = false,
  ) {
    const random = new SeededRandom(seed);
    const latency = new Map(ids.map((id) => [id, 1 + random.below(9)]));
    for (const a of ids) for (const b of ids) this.delay.set(`${a}>${b}`, (latency.get(a)! + latency.get(b)!) / 2);
    const config = (self: string): ElectionGroupsConfig => ({
      self,
      probe: { inquireAfterMs: 500, inquiryIntervalMs: 100, detectionTimeoutMs: 300 },
      electionBaseMs: 20,
      defaultDelayMs: 5,
      reannounceMs: 1000,
    });
    for (const id of ids) {
      const node = new ElectionGroups(config(id), 0);
      for (const a of ids) for (const b of ids) if (a !== b && a === id) node.roundTrip(b, 2 * this.delay.get(`${a}>${b}`)!);
      for (const [gid, members] of groups) if (members.some((m) => m.nodeId === id)) node.setGroup(gid, members, 0);
      this.nodes.set(id, node);
    }
    // Every node learns the others' delays, as heartbeats would report them.
    for (const [id, node] of this.nodes) {
      for (const other of ids) if (other !== id) node.delays.report(other, new Map(ids.filter((x) => x !== other).map((x) => [x, 2 * this.delay.get(`${other}>${x}`)!])));
    }
  }

  linked(a: string, b: string): boolean {
    return !this.cut.has(`${a}|${b}`) && !this.cut.has(`${b}|${a}`);
  }

  /** Runs until `until`, jumping from event to event. */
  run(until: number): void {
    for (;;) {
      let next = Math.min(this.nextHeartbeat, this.events[0]?.at ?? Infinity);
      for (const [id, node] of this.nodes) if (!this.crashed.has(id)) next = Math.min(next, node.nextDeadline());
      if (next > until) break;
      this.now = Math.max(this.now, next);
      if (this.nextHeartbeat <= this.now) {
        for (const from of this.ids) for (const to of this.ids) if (from !== to) this.post(from, to, 'heartbeat');
        this.nextHeartbeat = this.now + 250;
      }
      while (this.events.length > 0 && this.events[0]!.at <= this.now) this.deliver(this.events.shift()!);
      for (const [id, node] of this.nodes) if (!this.crashed.has(id) && node.nextDeadline() <= this.now) node.tick(this.now);
      this.drain();
    }
    this.now = until;
  }

  masters(group: number): string[] {
    const out = new Set<string>();
    for (const [id, node] of this.nodes) if (!this.crashed.has(id) && node.group(group) !== undefined) out.add(`${id}->${node.masterOf(group)}`);
    return [...out].sort();
  }

  private post(from: string, to: string, kind: Event['kind'], notice?: Event['notice']): void {
    if (this.crashed.has(from) || !this.linked(from, to)) return;
    if (kind === 'notice' && this.dropNotices) return;
    this.events.push({ at: this.now + this.delay.get(`${from}>${to}`)!, seq: this.seq++, to, from, kind, notice });
    this.events.sort((x, y) => x.at - y.at || x.seq - y.seq);
  }

  private deliver(event: Event): void {
    if (this.crashed.has(event.to)) return;
    const node = this.nodes.get(event.to)!;
    node.heard(event.from, this.now);
    if (event.kind === 'notice') for (const notice of event.notice!) node.handleNotice(event.from, notice, this.now);
  }

  private drain(): void {
    for (const [id, node] of this.nodes) {
      const out = node.take();
      for (const [to, notices] of out.notices) {
        for (const n of notices) {
          if (n.kind === 'declare') this.declarers.add(id);
          else this.revokes++;
        }
        this.post(id, to, 'notice', notices);
      }
      // An inquiry is answered at once: the reply is a datagram the probe hears.
      for (const to of out.inquiries) if (!this.crashed.has(to) && this.linked(id, to)) this.post(to, id, 'heartbeat');
    }
  }
}

describe('elections on a simulated network', () => {
  const names = ['m', 'b1', 'b2', 'b3', 'b4', 'b5'];

  it.each([2, 3, 5])('master crash with %i backups: exactly one DECLARE, from the best live backup, followed by all', (backups) => {
    for (const seed of [1, 2, 3]) {
      const ids = names.slice(0, backups + 1);
      const members = ids.map((id, rank) => idx(id, rank));
      const sim = new ElectionSim(ids, seed, new Map([[0, members]]));
      sim.run(2000);
      expect(sim.masters(0)).toEqual(ids.map((id) => `${id}->m`).sort());
      expect([...sim.declarers]).toEqual(['m']); // its periodic re-announcements
      sim.declarers.clear();
      sim.crashed.add('m');
      // Heard last before 2000; failed 800 ms later at the latest, plus a staggered timer.
      sim.run(2000 + 500 + 300 + 250 + 200);
      expect(sim.masters(0)).toEqual(ids.slice(1).map((id) => `${id}->b1`).sort());
      expect([...sim.declarers]).toEqual(['b1']);
      expect(sim.revokes).toBe(0);
    }
  });

  it('two candidates declaring at once (their DECLAREs lost): REVOKE leaves the smaller index master', () => {
    const ids = ['m', 'b1', 'b2'];
    const sim = new ElectionSim(ids, 9, new Map([[0, ids.map((id, rank) => idx(id, rank))]]));
    sim.run(2000);
    sim.dropNotices = true;
    sim.crashed.add('m');
    sim.run(4000);
    expect(sim.masters(0)).toEqual(['b1->b1', 'b2->b2']);
    sim.dropNotices = false;
    sim.run(6000);
    expect(sim.masters(0)).toEqual(['b1->b1', 'b2->b1']);
    expect(sim.revokes).toBeGreaterThan(0);
  });

  it('partition and heal: one master per side, then one master per group', () => {
    const ids = ['a', 'b', 'c', 'd'];
    const groups = new Map<number, MemberIndex[]>();
    for (let g = 0; g < 8; g++) groups.set(g, ids.map((id, i) => idx(id, (i + g) % 4)).sort(compareIndex));
    const sim = new ElectionSim(ids, 4, groups);
    sim.run(2000);
    for (const x of ['a', 'b']) for (const y of ['c', 'd']) sim.cut.add(`${x}|${y}`);
    sim.run(5000);
    for (let g = 0; g < 8; g++) {
      const sides = new Set(sim.masters(g).map((s) => s.split('->')[1]));
      expect(sides.size).toBe(2);
    }
    sim.cut.clear();
    sim.run(9000);
    for (let g = 0; g < 8; g++) {
      const masters = sim.masters(g).map((s) => s.split('->')[1]);
      expect(new Set(masters).size).toBe(1);
      // The group's smallest index wins in the end.
      expect(masters[0]).toBe(groups.get(g)![0]!.nodeId);
    }
  });

  it('a flapping link does not leave two masters', () => {
    const ids = ['m', 'b1', 'b2'];
    const sim = new ElectionSim(ids, 5, new Map([[0, ids.map((id, rank) => idx(id, rank))]]));
    sim.run(2000);
    for (let i = 0; i < 10; i++) {
      sim.cut.add('m|b2');
      sim.run(sim.now + 900);
      sim.cut.clear();
      sim.run(sim.now + 700);
    }
    sim.run(sim.now + 3000);
    expect(sim.masters(0)).toEqual(['b1->m', 'b2->m', 'm->m']);
  });
});
