/**
 * What the status page draws, from a StatusResponse and a Placement: per member, the
 * partitions it is primary for and holds a copy of (placement's own answers); nothing for
 * a member outside placement; a ring of at most MAX_RING_SEGMENTS segments, each showing
 * the primary of most of its partitions; this node alone before replication has started;
 * shares that follow member changes (they are cached per member set).
 */
import { BuzHash } from '../src/store/buzhash';
import type { Member, StatusResponse } from '../src/gen/baton/v1/cluster';
import { Placement } from '../src/core/placement';
import { MAX_RING_SEGMENTS, statusPageData } from '../sidecar/metrics/status-page-data';

function member(nodeId: string, state = 'alive', isSelf = false): Member {
  return { nodeId, address: `10.0.0.${nodeId.length}:7401`, state, isSelf, replicationLagSeqs: 7n, role: 'edge', coordinator: false, masteredPartitions: [] };
}

function status(partitions: number, members: Member[]): StatusResponse {
  return {
    nodeId: 'n1',
    sessions: 3n,
    parts: 5n,
    bytes: 1234n,
    members,
    maxBytes: 1n << 29n,
    partitions,
    version: '0.1.0',
    startedAtUnixMs: 1_700_000_000_000n,
    tombstones: 2n,
    configMismatches: [],
    role: 'edge',
    multicastGroups: [],
    coordinatorNodeId: 'n1',
    viewId: 1n,
    quorum: 0,
    membersHeard: 1,
  };
}

function placement(partitions: number, replicas: number, live: string[]): Placement {
  const p = new Placement(new BuzHash('status-page-data-test'), partitions, replicas);
  p.setMembers(live);
  return p;
}

test('counts are placement\'s, a dead member holds nothing, Status fields become numbers', () => {
  const members = [member('n1', 'alive', true), member('n2'), member('n3'), member('n4', 'dead')];
  const live = ['n1', 'n2', 'n3'];
  const p = placement(100, 1, live);
  const data = statusPageData({ ...status(100, members), quorum: 3, membersHeard: 2 }, p);
  expect(data).toMatchObject({ nodeId: 'n1', sessions: 3, parts: 5, bytes: 1234, maxBytes: 2 ** 29, tombstones: 2, partitions: 100, copies: 2, startedAtUnixMs: 1_700_000_000_000, quorum: 3, membersHeard: 2 });
  for (const m of data.members.slice(0, 3)) {
    expect(m.partitionsHeld).toBe(p.partitionsHeldBy(m.nodeId).length);
    expect(m.partitionsPrimary).toBe(Array.from({ length: 100 }, (_, i) => p.ranking(i)[0]).filter((id) => id === m.nodeId).length);
    expect(m.replicationLagSeqs).toBe(7);
  }
  expect(data.members[3]).toMatchObject({ nodeId: 'n4', state: 'dead', partitionsHeld: 0, partitionsPrimary: 0 });
  expect(data.ring.partitionsPerSegment).toBe(1);
  expect(data.ring.primaries).toEqual(Array.from({ length: 100 }, (_, i) => live.indexOf(p.ranking(i)[0]!)));
});

test('many partitions: at most MAX_RING_SEGMENTS segments, each showing the primary of most of its partitions', () => {
  const partitions = 4096;
  const members = [member('n1', 'alive', true), member('n2'), member('n3')];
  const p = placement(partitions, 0, ['n1', 'n2', 'n3']);
  const data = statusPageData(status(partitions, members), p);
  const per = partitions / MAX_RING_SEGMENTS;
  expect(data.ring.partitionsPerSegment).toBe(per);
  expect(data.ring.primaries).toHaveLength(MAX_RING_SEGMENTS);
  for (let s = 0; s < MAX_RING_SEGMENTS; s += 37) {
    const votes = [0, 0, 0];
    for (let q = s * per; q < (s + 1) * per; q++) votes[['n1', 'n2', 'n3'].indexOf(p.ranking(q)[0]!)]!++;
    expect(votes[data.ring.primaries[s]!]).toBe(Math.max(...votes));
  }
  // replicas 0: every member holds every partition.
  expect(data.members.map((m) => m.partitionsHeld)).toEqual([partitions, partitions, partitions]);
  expect(data.copies).toBe(3);
});

test('an uneven last segment, and no placement yet: this node holds everything', () => {
  const data = statusPageData(status(1000, [member('n1', 'alive', true)]), undefined);
  expect(data.ring.partitionsPerSegment).toBe(2);
  expect(data.ring.primaries).toEqual(new Array(500).fill(0));
  expect(data.members[0]).toMatchObject({ partitionsHeld: 1000, partitionsPrimary: 1000 });
  expect(data.copies).toBe(1);
  const uneven = statusPageData(status(1025, [member('n1', 'alive', true)]), undefined);
  expect(uneven.ring.partitionsPerSegment).toBe(3);
  expect(uneven.ring.primaries).toHaveLength(342);
});

test('no live member in placement: segments show -1', () => {
  const data = statusPageData(status(8, [member('n1', 'alive', true)]), placement(8, 1, []));
  expect(data.ring.primaries).toEqual(new Array(8).fill(-1));
  expect(data.members[0]).toMatchObject({ partitionsHeld: 0, partitionsPrimary: 0 });
});

test('the shares follow a change of placement\'s members and of Status\'s member list', () => {
  const members = [member('n1', 'alive', true), member('n2'), member('n3')];
  const p = placement(64, 1, ['n1', 'n2', 'n3']);
  const before = statusPageData(status(64, members), p);
  expect(before.members.every((m) => m.partitionsHeld > 0)).toBe(true);
  p.setMembers(['n1', 'n2']);
  const after = statusPageData(status(64, [member('n1', 'alive', true), member('n2'), member('n3', 'dead')]), p);
  expect(after.members.map((m) => m.partitionsHeld)).toEqual([64, 64, 0]);
  // Same placement, members listed in another order: the counts follow the names.
  const reordered = statusPageData(status(64, [member('n2'), member('n1', 'alive', true)]), p);
  expect(reordered.members.map((m) => [m.nodeId, m.partitionsPrimary])).toEqual([
    ['n2', after.members[1]!.partitionsPrimary],
    ['n1', after.members[0]!.partitionsPrimary],
  ]);
  expect(reordered.ring.primaries).toEqual(after.ring.primaries.map((i) => 1 - i));
});
