/**
 * Membership scenarios on virtual time, on the simulator every protocol test uses
 * (test/support/sim-cluster.ts): every node is a real node core on a simulated network
 * with no delay, so a heartbeat arrives at the instant it is sent; `runUntil(t)` runs every
 * delivery and deadline up to t. Every event is recorded with its virtual time, and every
 * step (and every direct call) checks that viewVersion moved exactly when liveNodeIds()
 * changed. No test sleeps.
 */
import {
  DEFAULT_MEMBERSHIP_CONFIG,
  Membership,
  validateMembershipConfig,
  type HeartbeatInput,
  type MembershipConfig,
  type MembershipEvent,
} from '../src/core/membership';
import { SimCluster, type SimNode } from './support/sim-cluster';
import { BuzHash } from '../src/store/buzhash';
import { overallDigest, settingDigests, toWire } from '../src/core/config-digests';
import { PERFECT_LINK } from './support/sim-network';

const DIGEST = 0xc0ffee_0000_0001n;

/**
 * The incarnation a test's node runs with: `logical` (1 for a first start, higher for a
 * restart) in the tens, the node's place in NODE_IDS in the units. Incarnations are cluster-unique
 * on the real datagram path (the opener keeps one replay window per incarnation), so two
 * nodes cannot both be incarnation 1, as they could in a simulator without sealing.
 */
function inc(node: string, logical: bigint): bigint {
  return logical * 10n + BigInt(NODE_IDS.indexOf(node) + 1);
}
const NODE_IDS = ['a', 'b', 'c', 'd', 'b2'];

class Cluster {
  private readonly sim: SimCluster;
  /** Each node's view when last checked: live set and viewVersion. */
  private readonly views = new Map<SimNode, { live: string; version: number }>();

  constructor(config: MembershipConfig = DEFAULT_MEMBERSHIP_CONFIG) {
    this.sim = new SimCluster({
      seed: 1,
      nodes: 0,
      transport: 'unicast',
      membership: config,
      startMs: 0,
      profile: { ...PERFECT_LINK, delayMinMs: 0, delayMaxMs: 0 },
    });
    const sample = this.sim.net.onStep;
    this.sim.net.onStep = (now) => {
      sample?.(now);
      for (const node of this.sim.running) this.checkView(node);
    };
  }

  get now(): number {
    return this.sim.net.now;
  }

  /** Starts (or restarts, with a new logical incarnation, see inc) a node at the current virtual time. */
  start(nodeId: string, address: string, options: { incarnation?: bigint; seeds?: string[]; configDigest?: bigint } = {}): SimNode {
    const node = this.sim.startNode({
      nodeId,
      address,
      seeds: options.seeds ?? [],
      incarnation: inc(nodeId, options.incarnation ?? 1n),
      configDigest: options.configDigest ?? DIGEST,
    });
    this.checkView(node);
    return node;
  }

  stop(node: SimNode): void {
    node.stop();
  }

  block(a: SimNode, b: SimNode): void {
    this.sim.net.cut(a.address, b.address);
  }

  unblock(a: SimNode, b: SimNode): void {
    this.sim.net.heal(a.address, b.address);
  }

  heartbeatOf(node: SimNode): HeartbeatInput {
    return {
      nodeId: node.nodeId,
      incarnation: node.incarnation,
      advertiseAddress: node.address,
      configDigest: node.core.configDigest,
      leaving: false,
      known: node.membership.knownMembers(),
    };
  }

  /** Hands a heartbeat straight to a node (a delayed or forged packet). */
  inject(to: SimNode, heartbeat: HeartbeatInput): MembershipEvent[] {
    return this.call(to, () => to.membership.handleHeartbeat(heartbeat, this.now));
  }

  /** Hands a node a non-heartbeat datagram (data, ack, NACK) from another, now. */
  dataFrom(to: SimNode, from: SimNode, incarnation = from.incarnation): MembershipEvent[] {
    return this.call(to, () => to.membership.heardFrom(from.nodeId, incarnation, this.now));
  }

  /** Runs every delivery and deadline up to and including t, then sets the clock to t. */
  runUntil(t: number): void {
    this.sim.net.run(t);
  }

  private call(node: SimNode, step: () => MembershipEvent[]): MembershipEvent[] {
    this.checkView(node);
    const events = step();
    this.checkView(node);
    for (const event of events) node.membershipEvents.push({ at: this.now, ...event });
    return events;
  }

  /** viewVersion moved by one exactly when the live set changed since the last check. */
  private checkView(node: SimNode): void {
    const live = node.membership.liveNodeIds().join(',');
    const version = node.membership.viewVersion;
    const before = this.views.get(node);
    if (before !== undefined) expect(version).toBe(before.version + (live !== before.live ? 1 : 0));
    this.views.set(node, { live, version });
  }
}

function stateOf(node: SimNode, nodeId: string): string | undefined {
  return node.membership.member(nodeId)?.state;
}

/** Events as `time type nodeId` lines, for readable expectations. */
function timeline(node: SimNode): string[] {
  return node.membershipEvents.map((e) => `${e.at} ${e.type} ${e.nodeId}`);
}

const SEEDS = ['a:7946', 'b:7946', 'c:7946'];

describe('three nodes exchanging heartbeats', () => {
  let cluster: Cluster;
  let a: SimNode;
  let b: SimNode;
  let c: SimNode;

  beforeEach(() => {
    cluster = new Cluster();
    a = cluster.start('a', 'a:7946', { seeds: SEEDS });
    b = cluster.start('b', 'b:7946', { seeds: SEEDS });
    c = cluster.start('c', 'c:7946', { seeds: SEEDS });
    cluster.runUntil(0);
  });

  test('everyone joins at the first heartbeat round; our own seed address is ignored', () => {
    expect(timeline(a)).toEqual(['0 joined b', '0 joined c']);
    expect(a.membership.liveNodeIds()).toEqual(['a', 'b', 'c']);
    expect(a.membership.heartbeatTargets()).toEqual(['b:7946', 'c:7946']);
    expect(a.membership.members()).toEqual([
      { nodeId: 'a', advertiseAddress: 'a:7946', state: 'alive', incarnation: inc('a', 1n), lastHeardAt: null, isSelf: true, role: 'edge' },
      { nodeId: 'b', advertiseAddress: 'b:7946', state: 'alive', incarnation: inc('b', 1n), lastHeardAt: 0, isSelf: false, role: 'edge' },
      { nodeId: 'c', advertiseAddress: 'c:7946', state: 'alive', incarnation: inc('c', 1n), lastHeardAt: 0, isSelf: false, role: 'edge' },
    ]);
  });

  test('member(id) is the entry members() lists for that id, ourselves included', () => {
    cluster.runUntil(1000);
    cluster.stop(c);
    cluster.runUntil(4000);
    for (const view of a.membership.members()) expect(a.membership.member(view.nodeId)).toEqual(view);
    expect(a.membership.member('c')?.state).toBe('dead');
    expect(a.membership.member('nobody')).toBeUndefined();
    expect(a.membership.member('')).toBeUndefined();
  });

  test('a stopped node is suspect 1000 ms and dead 3000 ms after its last heartbeat', () => {
    cluster.runUntil(1000); // c's heartbeat at 1000 is its last
    cluster.stop(c);

    cluster.runUntil(1999);
    expect(stateOf(a, 'c')).toBe('alive');
    cluster.runUntil(2000);
    expect(stateOf(a, 'c')).toBe('suspect');
    expect(a.membership.liveNodeIds()).toEqual(['a', 'b', 'c']); // suspect still counts

    cluster.runUntil(3999);
    expect(stateOf(a, 'c')).toBe('suspect');
    cluster.runUntil(4000);
    expect(stateOf(a, 'c')).toBe('dead');
    expect(a.membership.liveNodeIds()).toEqual(['a', 'b']);
    // Dead members are still sent heartbeats, so they are found when they come back.
    expect(a.membership.heartbeatTargets()).toEqual(['b:7946', 'c:7946']);

    expect(timeline(a)).toEqual(['0 joined b', '0 joined c', '2000 suspect c', '4000 dead c']);
    expect(timeline(b)).toEqual(['0 joined a', '0 joined c', '2000 suspect c', '4000 dead c']);
  });

  test('data from a member keeps it alive while its heartbeats are lost, and brings it back from suspect', () => {
    cluster.runUntil(1000);
    cluster.block(a, c); // heartbeats between a and c lost from now on
    cluster.runUntil(2000);
    expect(stateOf(a, 'c')).toBe('suspect');
    cluster.runUntil(2500);
    expect(cluster.dataFrom(a, c)).toEqual([{ type: 'alive', nodeId: 'c', previous: 'suspect' }]);
    expect(stateOf(a, 'c')).toBe('alive');
    for (let t = 3000; t <= 8000; t += 500) {
      cluster.runUntil(t);
      cluster.dataFrom(a, c);
    }
    expect(stateOf(a, 'c')).toBe('alive');
    // A datagram of another incarnation says nothing about this one.
    cluster.runUntil(9000);
    expect(stateOf(a, 'c')).toBe('suspect');
    expect(cluster.dataFrom(a, c, 7n)).toEqual([]);
    cluster.runUntil(11_000);
    expect(stateOf(a, 'c')).toBe('dead');
    // A dead member comes back only with a heartbeat (config digest checked), not with data.
    expect(cluster.dataFrom(a, c)).toEqual([]);
    expect(stateOf(a, 'c')).toBe('dead');
    expect(timeline(a)).toEqual(['0 joined b', '0 joined c', '2000 suspect c', '2500 alive c', '9000 suspect c', '11000 dead c']);
  });

  test('a cut-off node recovers to alive from suspect, and from dead', () => {
    cluster.runUntil(1000); // last heartbeats between a and c
    cluster.block(a, c);
    cluster.runUntil(2250);
    expect(stateOf(a, 'c')).toBe('suspect');
    cluster.unblock(a, c);
    cluster.runUntil(2500);
    expect(stateOf(a, 'c')).toBe('alive');

    cluster.block(a, c);
    cluster.runUntil(5500);
    expect(stateOf(a, 'c')).toBe('dead');
    cluster.unblock(a, c);
    cluster.runUntil(5750);

    expect(timeline(a)).toEqual([
      '0 joined b',
      '0 joined c',
      '2000 suspect c',
      '2500 alive c',
      '3500 suspect c',
      '5500 dead c',
      '5750 alive c',
    ]);
    expect(a.membershipEvents.at(-1)).toEqual({ at: 5750, type: 'alive', nodeId: 'c', previous: 'dead' });
    expect(timeline(c)).toEqual(['0 joined a', '0 joined b', '2000 suspect a', '2500 alive a', '3500 suspect a', '5500 dead a', '5750 alive a']);
    // b never lost c.
    expect(timeline(b)).toEqual(['0 joined a', '0 joined c']);
  });

  test('a restart is a new incarnation; stragglers from the old one are ignored', () => {
    cluster.runUntil(1000);
    const oldHeartbeat = cluster.heartbeatOf(c);
    cluster.stop(c);
    cluster.runUntil(1600);
    const versionBefore = a.membership.viewVersion;

    c = cluster.start('c', 'c:7946', { incarnation: 2n, seeds: SEEDS });
    cluster.runUntil(1600);

    expect(a.membershipEvents.at(-1)).toEqual({
      at: 1600,
      type: 'restarted',
      nodeId: 'c',
      oldIncarnation: inc('c', 1n),
      newIncarnation: inc('c', 2n),
      advertiseAddress: 'c:7946',
    });
    expect(a.membership.member('c')).toMatchObject({ state: 'alive', incarnation: inc('c', 2n), lastHeardAt: 1600 });
    expect(a.membership.viewVersion).toBe(versionBefore); // c never left the live set
    expect(a.membership.counters.restarts).toBe(1);

    // The restarted c learns a and b as new members from their next heartbeats.
    cluster.runUntil(1750);
    expect(timeline(c)).toEqual(['1750 joined a', '1750 joined b']);

    // A heartbeat of the old incarnation arrives late: it changes nothing (the new
    // incarnation was last heard at its own restart heartbeat or later).
    const heardBefore = a.membership.member('c')!.lastHeardAt!;
    expect(heardBefore).toBeGreaterThanOrEqual(1600);
    expect(cluster.inject(a, oldHeartbeat)).toEqual([]);
    expect(a.membership.counters.staleHeartbeats).toBe(1);
    expect(a.membership.member('c')).toMatchObject({ incarnation: inc('c', 2n), lastHeardAt: heardBefore });
    expect(a.membership.handleLeave('c', inc('c', 1n), cluster.now)).toEqual([]);
    expect(a.membership.counters.staleHeartbeats).toBe(2);
    expect(stateOf(a, 'c')).toBe('alive');
  });

  test('a restart after being declared dead brings the member straight back', () => {
    cluster.stop(c);
    cluster.runUntil(3000);
    expect(stateOf(a, 'c')).toBe('dead');
    c = cluster.start('c', 'c:7946', { incarnation: 5n, seeds: SEEDS });
    cluster.runUntil(3250);
    expect(timeline(a).slice(-3)).toEqual(['1000 suspect c', '3000 dead c', '3000 restarted c']);
    expect(a.membership.liveNodeIds()).toEqual(['a', 'b', 'c']);
  });

  test('a dead member coming back with a lower incarnation is a restart, not a straggler', () => {
    cluster.stop(c);
    cluster.runUntil(1000);
    expect(stateOf(a, 'c')).toBe('suspect');
    // While c is only suspect, a lower incarnation is still taken for a straggler.
    expect(cluster.inject(a, { ...cluster.heartbeatOf(c), incarnation: inc('c', 0n) })).toEqual([]);
    expect(a.membership.counters.staleHeartbeats).toBe(1);

    cluster.runUntil(3000);
    expect(stateOf(a, 'c')).toBe('dead');
    c = cluster.start('c', 'c:7946', { incarnation: 0n, seeds: SEEDS });
    cluster.runUntil(3000);
    expect(a.membershipEvents.at(-1)).toMatchObject({ at: 3000, type: 'restarted', nodeId: 'c', oldIncarnation: inc('c', 1n), newIncarnation: inc('c', 0n) });
    expect(a.membership.member('c')).toMatchObject({ state: 'alive', incarnation: inc('c', 0n) });
  });

  test('a draining node is left at once, is no longer sent heartbeats, and is forgotten later', () => {
    // b drains: at 750, after its heartbeat, it leaves (its Leave datagrams go out) and exits.
    cluster.runUntil(750);
    b.leave();
    cluster.runUntil(750);
    expect(timeline(a).slice(-1)).toEqual(['750 left b']);
    expect(timeline(c).slice(-1)).toEqual(['750 left b']);
    expect(a.membership.liveNodeIds()).toEqual(['a', 'c']);
    expect(a.membership.member('b')).toMatchObject({ state: 'left', incarnation: inc('b', 1n) });

    // Seeds that left are not sent heartbeats; further leaving heartbeats raise no event.
    expect(a.membership.heartbeatTargets()).toEqual(['c:7946']);
    expect(cluster.inject(a, { ...cluster.heartbeatOf(b), leaving: true })).toEqual([]);
    cluster.runUntil(1500);
    expect(timeline(a).slice(-1)).toEqual(['750 left b']);

    // A heartbeat without `leaving` cannot undo a leave at the same incarnation.
    expect(cluster.inject(a, { ...cluster.heartbeatOf(b), leaving: false })).toEqual([]);
    expect(a.membership.counters.heartbeatsAfterLeft).toBe(1);

    // b exited at 750 (its last heartbeat). 60 s later its record is done with; b's
    // address is a seed, so a keeps it listed, as dead, and probes the address again.
    cluster.runUntil(60_749);
    expect(stateOf(a, 'b')).toBe('left');
    cluster.runUntil(60_750);
    expect(stateOf(a, 'b')).toBe('dead');
    expect(a.membership.heartbeatTargets()).toEqual(['b:7946', 'c:7946']);
    expect(timeline(a).slice(-1)).toEqual(['750 left b']);
  });

  test('a Leave datagram marks the member left', () => {
    expect(a.membership.handleLeave('b', inc('b', 1n), 10)).toEqual([{ type: 'left', nodeId: 'b', incarnation: inc('b', 1n) }]);
    expect(a.membership.liveNodeIds()).toEqual(['a', 'c']);
    expect(a.membership.handleLeave('b', inc('b', 1n), 20)).toEqual([]);
    expect(a.membership.handleLeave('nobody', 1n, 20)).toEqual([]);
    expect(a.membership.counters.unknownLeaves).toBe(1);
  });

  test('heartbeats carrying our own node id are ignored', () => {
    expect(cluster.inject(a, { ...cluster.heartbeatOf(a), advertiseAddress: 'elsewhere:1' })).toEqual([]);
    expect(a.membership.counters.selfHeartbeats).toBe(1);
    expect(a.membership.members().map((m) => m.nodeId)).toEqual(['a', 'b', 'c']);
  });
});

test('a node with a different config digest is refused, once reported, always counted', () => {
  const cluster = new Cluster();
  const a = cluster.start('a', 'a:1', { seeds: ['d:1'] });
  const d = cluster.start('d', 'd:1', { seeds: ['a:1'], configDigest: DIGEST + 1n });
  cluster.runUntil(500);

  expect(timeline(a)).toEqual(['0 config_mismatch d']);
  expect(a.membershipEvents[0]).toEqual({
    at: 0,
    type: 'config_mismatch',
    nodeId: 'd',
    advertiseAddress: 'd:1',
    theirDigest: DIGEST + 1n,
    ourDigest: DIGEST,
    settings: ['unknown'], // the test's nodes send no per-setting digests
  });
  expect(a.membership.configMismatches()).toEqual([{ nodeId: 'd', advertiseAddress: 'd:1', settings: ['unknown'], lastAt: 500 }]);
  expect(a.membership.counters.configMismatches).toBe(3); // heartbeats at 0, 250, 500
  expect(a.membership.liveNodeIds()).toEqual(['a']);
  expect(a.membership.members().map((m) => [m.nodeId, m.state])).toEqual([
    ['', 'dead'], // d's address is a seed never (validly) heard from
    ['a', 'alive'],
  ]);
  expect(timeline(d)).toEqual(['0 config_mismatch a']);

  // d restarts with the same wrong config: reported again, as a new incarnation.
  cluster.stop(d);
  cluster.start('d', 'd:1', { seeds: ['a:1'], configDigest: DIGEST + 1n, incarnation: 2n });
  cluster.runUntil(750); // the new d sends its first heartbeat at once, at 500
  expect(timeline(a)).toEqual(['0 config_mismatch d', '500 config_mismatch d']);

  // A refused heartbeat's gossip is not learned either.
  cluster.inject(a, { nodeId: 'd', incarnation: inc('d', 2n), advertiseAddress: 'd:1', configDigest: 7n, leaving: false, known: [{ nodeId: 'x', advertiseAddress: 'x:1' }] });
  expect(a.membership.heartbeatTargets()).toEqual(['d:1']);
});

test('seeds never heard from are listed as dead with an empty node id, until they answer', () => {
  const cluster = new Cluster();
  const a = cluster.start('a', 'a:1', { seeds: ['a:1', ' b:1 ', 'x:1', ''] });
  cluster.runUntil(0);
  expect(a.membership.seedAddresses()).toEqual(['b:1', 'x:1']);
  expect(a.membership.members()).toEqual([
    { nodeId: '', advertiseAddress: 'b:1', state: 'dead', incarnation: 0n, lastHeardAt: null, isSelf: false, role: 'edge' },
    { nodeId: '', advertiseAddress: 'x:1', state: 'dead', incarnation: 0n, lastHeardAt: null, isSelf: false, role: 'edge' },
    { nodeId: 'a', advertiseAddress: 'a:1', state: 'alive', incarnation: inc('a', 1n), lastHeardAt: null, isSelf: true, role: 'edge' },
  ]);
  expect(a.membership.liveNodeIds()).toEqual(['a']);

  cluster.start('b', 'b:1');
  cluster.runUntil(250);
  expect(a.membership.members().map((m) => `${m.nodeId || '-'} ${m.advertiseAddress} ${m.state}`)).toEqual([
    '- x:1 dead',
    'a a:1 alive',
    'b b:1 alive',
  ]);

  // A fresh DNS answer replaces the seeds.
  a.membership.setSeedAddresses(['y:1', 'a:1']);
  expect(a.membership.seedAddresses()).toEqual(['y:1']);
  expect(a.membership.heartbeatTargets()).toEqual(['b:1', 'y:1']);
});

test('dead members whose address is a seed stay listed; others are forgotten after 60 s', () => {
  const cluster = new Cluster();
  const a = cluster.start('a', 'a:1', { seeds: ['b:1'] });
  const b = cluster.start('b', 'b:1', { seeds: ['a:1'] });
  const c = cluster.start('c', 'c:1', { seeds: ['a:1'] });
  cluster.runUntil(0);
  cluster.stop(b);
  cluster.stop(c);
  cluster.runUntil(59_999);
  expect(a.membership.members().map((m) => `${m.nodeId} ${m.state}`)).toEqual(['a alive', 'b dead', 'c dead']);
  cluster.runUntil(60_000);
  expect(a.membership.members().map((m) => `${m.nodeId} ${m.state}`)).toEqual(['a alive', 'b dead']);
  expect(a.membership.heartbeatTargets()).toEqual(['b:1']);
  expect(a.membership.counters.forgottenMembers).toBe(1);
  cluster.runUntil(600_000);
  expect(a.membership.members().map((m) => `${m.nodeId} ${m.state}`)).toEqual(['a alive', 'b dead']);
});

test('a new node id at a dead member address replaces the dead record', () => {
  const cluster = new Cluster();
  const a = cluster.start('a', 'a:1', { seeds: ['b:1'] });
  const b = cluster.start('b', 'b:1', { seeds: ['a:1'] });
  cluster.runUntil(0);
  cluster.stop(b);
  cluster.runUntil(5000);
  cluster.start('b2', 'b:1', { seeds: ['a:1'] });
  cluster.runUntil(5000);
  expect(a.membership.members().map((m) => `${m.nodeId} ${m.advertiseAddress} ${m.state}`)).toEqual([
    'a a:1 alive',
    'b2 b:1 alive',
  ]);
});

test('known-member gossip adds addresses to probe, not members', () => {
  const cluster = new Cluster();
  // a and c only know b; b knows both. c is started first, so at 0 it sends before b
  // has told it about a.
  const c = cluster.start('c', 'c:1', { seeds: ['b:1'] });
  const a = cluster.start('a', 'a:1', { seeds: ['b:1'] });
  const b = cluster.start('b', 'b:1', { seeds: ['a:1', 'c:1'] });
  cluster.runUntil(0);

  // b's heartbeat at 0 listed a and c: a now probes c's address, but c is no member yet.
  expect(a.membership.heartbeatTargets()).toEqual(['b:1', 'c:1']);
  expect(a.membership.liveNodeIds()).toEqual(['a', 'b']);
  expect(a.membership.member('c')).toBeUndefined();
  expect(a.membership.members().map((m) => m.nodeId)).toEqual(['a', 'b']);
  expect(c.membership.heartbeatTargets()).toEqual(['a:1', 'b:1']);

  // At 250 a and c heartbeat each other directly.
  cluster.runUntil(250);
  expect(timeline(a)).toEqual(['0 joined b', '250 joined c']);
  expect(timeline(c)).toEqual(['0 joined b', '250 joined a']);
  expect(b.membership.liveNodeIds()).toEqual(['a', 'b', 'c']);
});

test('a gossiped address that never answers is dropped after 60 s without mention', () => {
  const cluster = new Cluster();
  const a = cluster.start('a', 'a:1');
  cluster.runUntil(0);
  const ghostly = { nodeId: 'b', incarnation: 1n, advertiseAddress: 'b:1', configDigest: DIGEST, leaving: false };
  cluster.inject(a, { ...ghostly, known: [{ nodeId: 'ghost', advertiseAddress: 'g:1' }, { nodeId: 'a', advertiseAddress: 'a:1' }, { nodeId: 'x', advertiseAddress: '' }] });
  expect(a.membership.heartbeatTargets()).toEqual(['b:1', 'g:1']);
  cluster.runUntil(10_000);
  cluster.inject(a, { ...ghostly, known: [{ nodeId: 'ghost', advertiseAddress: 'g:1' }] }); // mentioned again
  expect(a.membership.nextDeadline()).toBe(10_250);
  cluster.runUntil(69_999);
  expect(a.membership.heartbeatTargets()).toContain('g:1');
  cluster.runUntil(70_000);
  expect(a.membership.heartbeatTargets()).toEqual([]); // b was forgotten too (no seed)
});

test('viewVersion changes exactly when the live set changes', () => {
  const cluster = new Cluster();
  const a = cluster.start('a', 'a:1', { seeds: ['b:1', 'c:1'] });
  const b = cluster.start('b', 'b:1', { seeds: ['a:1'] });
  let c = cluster.start('c', 'c:1', { seeds: ['a:1'] });
  const versions: string[] = [];
  const record = (label: string): void => {
    versions.push(`${label}: v${a.membership.viewVersion} [${a.membership.liveNodeIds().join(',')}]`);
  };
  record('start');
  cluster.runUntil(0);
  record('joins');
  cluster.stop(c);
  cluster.runUntil(1000);
  record('c suspect');
  cluster.runUntil(3000);
  record('c dead');
  c = cluster.start('c', 'c:1', { incarnation: 2n, seeds: ['a:1'] });
  cluster.runUntil(3000);
  record('c restarted');
  cluster.runUntil(3500);
  record('quiet');
  cluster.runUntil(3750);
  b.leave();
  cluster.runUntil(3750);
  record('b left');
  cluster.inject(a, { nodeId: 'd', incarnation: 1n, advertiseAddress: 'd:1', configDigest: 1n, leaving: false, known: [] });
  record('d refused');
  expect(versions).toEqual([
    'start: v0 [a]',
    'joins: v2 [a,b,c]', // b and c joined in separate heartbeats
    'c suspect: v2 [a,b,c]',
    'c dead: v3 [a,b]',
    'c restarted: v4 [a,b,c]',
    'quiet: v4 [a,b,c]',
    'b left: v5 [a,c]',
    'd refused: v5 [a,c]',
  ]);
  // (Every call inside the cluster also asserted: version + 1 exactly when the set changed.)
});

test('nextDeadline is the next heartbeat or state transition', () => {
  const config = { ...DEFAULT_MEMBERSHIP_CONFIG, heartbeatIntervalMs: 10_000 };
  const m = new Membership({ nodeId: 'a', advertiseAddress: 'a:1', incarnation: 1n }, config, DIGEST);
  m.addSeedAddresses(['s:1']);
  expect(m.nextDeadline()).toBe(0); // first heartbeat due at once
  expect(m.heartbeatDue(0)).toBe(true);
  m.heartbeatSent(0);
  expect(m.heartbeatDue(9_999)).toBe(false);
  expect(m.nextDeadline()).toBe(10_000); // an unheard seed sets no deadline

  m.handleHeartbeat({ nodeId: 'b', incarnation: 1n, advertiseAddress: 'b:1', configDigest: DIGEST, leaving: false, known: [] }, 100);
  expect(m.nextDeadline()).toBe(1_100); // b suspect
  expect(m.tick(1_099)).toEqual([]);
  expect(m.tick(1_100)).toEqual([{ type: 'suspect', nodeId: 'b', lastHeardAt: 100 }]);
  expect(m.nextDeadline()).toBe(3_100); // b dead
  expect(m.tick(3_100)).toEqual([{ type: 'dead', nodeId: 'b', lastHeardAt: 100 }]);
  expect(m.nextDeadline()).toBe(10_000); // heartbeat before forgetting b at 60 100
  m.heartbeatSent(10_000);
  m.heartbeatSent(60_000);
  expect(m.nextDeadline()).toBe(60_100);
  expect(m.tick(60_100)).toEqual([]);
  expect(m.members().map((v) => v.nodeId)).toEqual(['', 'a']);
  expect(m.nextDeadline()).toBe(70_000);

  // A tick that finds a member past both timeouts reports both transitions, in order.
  m.handleHeartbeat({ nodeId: 'c', incarnation: 1n, advertiseAddress: 'c:1', configDigest: DIGEST, leaving: false, known: [] }, 61_000);
  expect(m.tick(65_000).map((e) => e.type)).toEqual(['suspect', 'dead']);
});

test('invalid heartbeats are dropped and counted; bad config is refused with the field name', () => {
  const m = new Membership({ nodeId: 'a', advertiseAddress: 'a:1', incarnation: 1n }, DEFAULT_MEMBERSHIP_CONFIG, DIGEST);
  expect(m.handleHeartbeat({ nodeId: '', incarnation: 1n, advertiseAddress: 'x:1', configDigest: DIGEST, leaving: false, known: [] }, 0)).toEqual([]);
  expect(m.handleHeartbeat({ nodeId: 'x', incarnation: 1n, advertiseAddress: '', configDigest: DIGEST, leaving: false, known: [] }, 0)).toEqual([]);
  expect(m.counters.invalidHeartbeats).toBe(2);
  // A leaving heartbeat from a node never known adds nothing.
  expect(m.handleHeartbeat({ nodeId: 'y', incarnation: 1n, advertiseAddress: 'y:1', configDigest: DIGEST, leaving: true, known: [] }, 0)).toEqual([]);
  expect(m.liveNodeIds()).toEqual(['a']);

  expect(() => validateMembershipConfig({ ...DEFAULT_MEMBERSHIP_CONFIG, heartbeatIntervalMs: 0 })).toThrow(/heartbeatIntervalMs/);
  expect(() => validateMembershipConfig({ ...DEFAULT_MEMBERSHIP_CONFIG, deadAfterMs: 500 })).toThrow(/deadAfterMs/);
  expect(() => validateMembershipConfig({ ...DEFAULT_MEMBERSHIP_CONFIG, forgetDeadAfterMs: 2000 })).toThrow(/forgetDeadAfterMs/);
});

test('a member\'s role comes from its heartbeats; a restart may change it, and that is a view change', () => {
  const m = new Membership({ nodeId: 'a', advertiseAddress: 'a:1', incarnation: 1n, role: 'store' }, DEFAULT_MEMBERSHIP_CONFIG, DIGEST);
  expect(m.liveStoreIds()).toEqual(['a']);
  const beat = (nodeId: string, incarnation: bigint, role?: 'edge' | 'store') => ({
    nodeId,
    incarnation,
    advertiseAddress: `${nodeId}:1`,
    configDigest: DIGEST,
    leaving: false,
    known: [],
    ...(role === undefined ? {} : { role }),
  });
  m.handleHeartbeat(beat('b', 1n, 'store'), 0);
  m.handleHeartbeat(beat('c', 1n), 0); // no role: edge
  expect(m.liveStoreIds()).toEqual(['a', 'b']);
  expect(m.member('b')?.role).toBe('store');
  expect(m.member('c')?.role).toBe('edge');
  const version = m.viewVersion;
  m.handleHeartbeat(beat('b', 2n, 'edge'), 10);
  expect(m.liveStoreIds()).toEqual(['a']);
  expect(m.viewVersion).toBe(version + 1);
  // A dead store node is no longer listed.
  m.handleHeartbeat(beat('c', 2n, 'store'), 20);
  expect(m.liveStoreIds()).toEqual(['a', 'c']);
  m.tick(20 + DEFAULT_MEMBERSHIP_CONFIG.deadAfterMs);
  expect(m.liveStoreIds()).toEqual(['a']);
});

test('a refused heartbeat names the settings whose digests differ, counted by setting; a cluster key alone does not refuse', () => {
  const hasher = new BuzHash('config-digest-test');
  const base = { partitions: 64, replicas: 2, hasher, protocolVersion: 1, multicastGroups: [] as string[], clusterKeyId: 7 };
  const ours = settingDigests(base);
  const m = new Membership({ nodeId: 'a', advertiseAddress: 'a:1', incarnation: 1n }, DEFAULT_MEMBERSHIP_CONFIG, overallDigest(ours), ours);
  const beat = (nodeId: string, values: typeof base) => {
    const digests = settingDigests(values);
    return { nodeId, incarnation: 1n, advertiseAddress: `${nodeId}:1`, configDigest: overallDigest(digests), leaving: false, known: [], settingDigests: toWire(digests) };
  };
  const [refusedPartitions] = m.handleHeartbeat(beat('b', { ...base, partitions: 128 }), 0);
  expect(refusedPartitions).toMatchObject({ type: 'config_mismatch', nodeId: 'b', settings: ['partitions'] });
  const [refusedTwo] = m.handleHeartbeat(beat('c', { ...base, hasher: new BuzHash('another seed'), multicastGroups: ['239.1.2.3:7402'], clusterKeyId: 9 }), 0);
  expect(refusedTwo).toMatchObject({ settings: ['hash_seed', 'multicast_groups', 'cluster_key'] });
  m.handleHeartbeat(beat('b', { ...base, partitions: 128 }), 250);
  expect(Object.fromEntries(m.configMismatchesBySetting)).toEqual({ partitions: 2, hash_seed: 1, multicast_groups: 1, cluster_key: 1 });
  expect(m.configMismatches().map((r) => [r.nodeId, r.settings, r.lastAt])).toEqual([
    ['b', ['partitions'], 250],
    ['c', ['hash_seed', 'multicast_groups', 'cluster_key'], 0],
  ]);
  expect(m.liveNodeIds()).toEqual(['a']);
  // Another sealing key alone (a rolling key rotation) is accepted.
  expect(m.handleHeartbeat(beat('d', { ...base, clusterKeyId: 9 }), 300).map((e) => e.type)).toEqual(['joined']);
  // A differing replicas count or protocol version refuses too.
  expect(m.handleHeartbeat(beat('e', { ...base, replicas: 1 }), 300)[0]).toMatchObject({ settings: ['replicas'] });
  expect(m.handleHeartbeat(beat('f', { ...base, protocolVersion: 2 }), 300)[0]).toMatchObject({ settings: ['protocol_version'] });
  // Refused reports are forgotten after the forget timeout.
  m.tick(300 + DEFAULT_MEMBERSHIP_CONFIG.forgetDeadAfterMs);
  expect(m.configMismatches()).toEqual([]);
});

test('--quorum counts this node and the members heard within the window; the members live when a node was last heard include those gone since', () => {
  const m = new Membership({ nodeId: 'a', advertiseAddress: 'a:1', incarnation: 1n }, DEFAULT_MEMBERSHIP_CONFIG, DIGEST);
  const beat = (nodeId: string, at: number, role?: 'store') => {
    m.handleHeartbeat({ nodeId, incarnation: 1n, advertiseAddress: `${nodeId}:1`, configDigest: DIGEST, leaving: false, known: [], ...(role === undefined ? {} : { role }) }, at);
    m.tick(at);
  };
  expect(m.heardWithin(1000, 0)).toBe(1);
  beat('b', 0);
  beat('c', 0, 'store');
  beat('d', 500);
  expect(m.heardWithin(1000, 999)).toBe(4);
  // c and b fall silent: heard within 1000 ms counts d alone (b and c are still live, suspect).
  beat('d', 1400);
  expect(m.heardWithin(1000, 1400)).toBe(2);
  expect(m.liveNodeIds()).toEqual(['a', 'b', 'c', 'd']);
  // Data from a member counts as hearing it.
  m.heardFrom('b', 1n, 1500);
  expect(m.heardWithin(1000, 1500)).toBe(3);

  // b dies at 4500 (last heard 1500), c at 3000; d is last heard at 4000 and dies later.
  m.tick(3000);
  expect(m.member('c')?.state).toBe('dead');
  beat('d', 4000);
  m.tick(7000);
  expect(m.member('d')?.state).toBe('dead');
  expect(m.member('b')?.state).toBe('dead');
  // When d was last heard (4000), b was still live (until 4500) and c was not (until 3000).
  expect(m.membersWhenLastHeard('d')).toEqual({ nodeIds: ['a', 'b', 'd'], storeIds: [] });
  // When c was last heard (0), all four were live; c is a store node.
  const atC = m.membersWhenLastHeard('c')!;
  expect(atC.nodeIds.sort()).toEqual(['a', 'b', 'c', 'd']);
  expect(atC.storeIds).toEqual(['c']);
  expect(m.membersWhenLastHeard('x')).toBeUndefined();
  // Forgotten members are remembered for this: the same answers after the forget timeout.
  m.tick(80_000);
  expect(m.members().map((v) => v.nodeId)).toEqual(['a']);
  expect(m.membersWhenLastHeard('d')).toEqual({ nodeIds: ['a', 'b', 'd'], storeIds: [] });
  expect(m.membersWhenLastHeard('c')!.nodeIds.sort()).toEqual(['a', 'b', 'c', 'd']);
  // A member that left stopped counting at its leave, not dead-after later.
  beat('e', 90_000);
  beat('f', 90_000);
  m.handleLeave('e', 1n, 90_100);
  beat('f', 90_200);
  m.tick(95_000);
  expect(m.member('f')?.state).toBe('dead');
  expect(m.membersWhenLastHeard('f')).toEqual({ nodeIds: ['a', 'f'], storeIds: [] });
});
