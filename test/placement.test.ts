/**
 * Rendezvous placement: determinism, replica sets, balance, and the minimal-disruption
 * property that makes membership changes cheap.
 */
import { BuzHash } from '../src/store/buzhash';
import { Placement } from '../src/core/placement';

const SEED = 'cluster-seed-for-placement-tests';
const PARTITIONS = 4096;
const FIVE = ['node-1', 'node-2', 'node-3', 'node-4', 'node-5'];

const hashers = new Map<string, BuzHash>();

function placement(members: readonly string[], replicas = 2, seed = SEED, partitions = PARTITIONS): Placement {
  let hasher = hashers.get(seed);
  if (hasher === undefined) hashers.set(seed, (hasher = new BuzHash(seed)));
  const p = new Placement(hasher, partitions, replicas);
  p.setMembers(members);
  return p;
}

function allRankings(p: Placement): (readonly string[])[] {
  return Array.from({ length: p.partitions }, (_, partition) => p.ranking(partition));
}

function rankZeroCounts(p: Placement): Map<string, number> {
  const counts = new Map<string, number>();
  for (let partition = 0; partition < p.partitions; partition++) {
    const first = p.ranking(partition)[0]!;
    counts.set(first, (counts.get(first) ?? 0) + 1);
  }
  return counts;
}

describe('determinism', () => {
  test('the same seed and members give the same rankings, whatever the member order', () => {
    const one = placement(FIVE);
    const two = placement([...FIVE].reverse().concat('node-3'));
    expect(allRankings(two).map(String)).toEqual(allRankings(one).map(String));
    expect(allRankings(one).filter((ranking) => [...ranking].sort().join() !== FIVE.join())).toEqual([]);
  });

  test('a different BuzHash seed gives different rankings', () => {
    const one = allRankings(placement(FIVE));
    const other = allRankings(placement(FIVE, 2, 'another-cluster-seed'));
    let same = 0;
    for (let partition = 0; partition < PARTITIONS; partition++) {
      if (one[partition]!.join() === other[partition]!.join()) same++;
    }
    // Independent rankings of 5 agree with probability 1/120 (about 34 of 4096).
    expect(same).toBeLessThan(PARTITIONS / 40);
  });

  test('rankings are cached until the member set changes', () => {
    const p = placement(FIVE);
    const before = p.ranking(7);
    expect(p.ranking(7)).toBe(before);
    p.setMembers([...FIVE].reverse());
    expect(p.ranking(7)).toBe(before);
    p.setMembers(FIVE.slice(1));
    expect(p.ranking(7)).not.toBe(before);
  });
});

describe('replica sets', () => {
  test.each([
    [1, 1],
    [2, 2],
    [0, 4], // 0 = every other member
    [9, 4], // more replicas than members: every other member
  ])('replicas %i: secondaries exclude the owner and number %i', (replicas, expected) => {
    const p = placement(FIVE, replicas);
    const wrong: string[] = [];
    for (let partition = 0; partition < 256; partition++) {
      const ranking = p.ranking(partition);
      for (const owner of FIVE) {
        const secondaries = p.secondaries(partition, owner);
        if (secondaries.length !== expected || secondaries.includes(owner)) wrong.push(`${partition}/${owner}: ${secondaries}`);
        // In ranking order, taken from the top.
        if (secondaries.join() !== ranking.filter((id) => id !== owner).slice(0, expected).join()) wrong.push(`${partition}/${owner}: order`);
        for (const id of FIVE) {
          if (p.isSecondary(id, partition, owner) !== secondaries.includes(id)) wrong.push(`${partition}/${owner}: isSecondary(${id})`);
        }
      }
    }
    expect(wrong).toEqual([]);
  });

  test('an owner that is not a member excludes no one', () => {
    const p = placement(FIVE, 2);
    expect(p.secondaries(3, 'departed')).toEqual(p.ranking(3).slice(0, 2));
    expect(p.isSecondary(p.ranking(3)[0]!, 3, 'departed')).toBe(true);
  });

  test('holders are the top replicas + 1; rank and partitionsHeldBy agree', () => {
    const p = placement(FIVE, 1, SEED, 512);
    let holdings = 0;
    const wrong: string[] = [];
    for (const id of FIVE) {
      const held = new Set(p.partitionsHeldBy(id));
      holdings += held.size;
      for (let partition = 0; partition < 512; partition++) {
        const rank = p.rank(id, partition);
        if (p.ranking(partition)[rank] !== id) wrong.push(`${id}/${partition}: rank`);
        if (p.holdsPartition(id, partition) !== rank <= 1) wrong.push(`${id}/${partition}: holdsPartition`);
        if (held.has(partition) !== rank <= 1) wrong.push(`${id}/${partition}: partitionsHeldBy`);
        // Every secondary of the rank-0 owner holds the partition.
        for (const s of p.secondaries(partition, p.ranking(partition)[0]!)) {
          if (!p.holdsPartition(s, partition)) wrong.push(`${s}/${partition}: secondary not holder`);
        }
      }
    }
    expect(wrong).toEqual([]);
    expect(holdings).toBe(512 * 2);
    expect(p.rank('stranger', 0)).toBe(-1);
    expect(p.partitionsHeldBy('stranger')).toEqual([]);
    expect(placement(FIVE, 0, SEED, 64).partitionsHeldBy('node-2')).toHaveLength(64);
  });

  test('empty and single-member sets', () => {
    const p = placement([], 2, SEED, 8);
    expect(p.ranking(0)).toEqual([]);
    expect(p.secondaries(0, 'x')).toEqual([]);
    p.setMembers(['only']);
    expect(p.ranking(5)).toEqual(['only']);
    expect(p.secondaries(5, 'only')).toEqual([]);
    expect(p.holdsPartition('only', 5)).toBe(true);
  });

  test('bad arguments are refused', () => {
    const hasher = new BuzHash(SEED);
    expect(() => new Placement(hasher, 0, 1)).toThrow(/partitions/);
    expect(() => new Placement(hasher, 16, -1)).toThrow(/replicas/);
    const p = placement(FIVE, 1, SEED, 16);
    expect(() => p.ranking(16)).toThrow(/partition/);
    expect(() => p.ranking(1.5)).toThrow(/partition/);
  });
});

describe('balance and disruption', () => {
  test('with 5 members, each is rank 0 for about a fifth of 4096 partitions (±20%)', () => {
    const counts = rankZeroCounts(placement(FIVE));
    const fair = PARTITIONS / FIVE.length;
    for (const id of FIVE) {
      expect(counts.get(id)).toBeGreaterThanOrEqual(fair * 0.8);
      expect(counts.get(id)).toBeLessThanOrEqual(fair * 1.2);
    }
  });

  test('removing a member only deletes it from every ranking', () => {
    const before = allRankings(placement(FIVE));
    const p = placement(FIVE);
    for (const gone of FIVE) {
      p.setMembers(FIVE.filter((id) => id !== gone));
      const after = allRankings(p).map(String);
      expect(after).toEqual(before.map((ranking) => ranking.filter((id) => id !== gone).join()));
    }
  });

  test('adding a member moves only about 1/(N+1) of rank-0 assignments, all to it', () => {
    const before = allRankings(placement(FIVE));
    const after = allRankings(placement([...FIVE, 'node-6']));
    let moved = 0;
    const wrong: string[] = [];
    for (let partition = 0; partition < PARTITIONS; partition++) {
      const was = before[partition]![0];
      const is = after[partition]![0];
      if (was !== is) {
        moved++;
        if (is !== 'node-6') wrong.push(`${partition}: ${was} → ${is}`);
      }
      // Everyone else keeps their relative order.
      if (after[partition]!.filter((id) => id !== 'node-6').join() !== before[partition]!.join()) wrong.push(`${partition}: order`);
    }
    expect(wrong).toEqual([]);
    const expected = PARTITIONS / 6;
    expect(moved).toBeGreaterThanOrEqual(expected * 0.8);
    expect(moved).toBeLessThanOrEqual(expected * 1.2);
  });

  test('similar node ids (pod ordinals) still spread evenly', () => {
    const pods = Array.from({ length: 8 }, (_, i) => `baton-${i}`);
    const counts = rankZeroCounts(placement(pods));
    for (const id of pods) {
      expect(counts.get(id)).toBeGreaterThanOrEqual((PARTITIONS / 8) * 0.8);
      expect(counts.get(id)).toBeLessThanOrEqual((PARTITIONS / 8) * 1.2);
    }
  });
});

describe('roles: store nodes rank first', () => {
  const EDGES = ['edge-1', 'edge-2', 'edge-3'];
  const STORES = ['store-1', 'store-2'];

  function withStores(edges: readonly string[], stores: readonly string[], replicas = 2): Placement {
    const p = placement([...edges, ...stores], replicas, SEED, 512);
    p.setMembers([...edges, ...stores], stores);
    return p;
  }

  test('every ranking lists the store nodes first, each tier in its rendezvous order', () => {
    const p = withStores(EDGES, STORES);
    const plainEdges = placement(EDGES, 2, SEED, 512);
    const plainStores = placement(STORES, 2, SEED, 512);
    for (let partition = 0; partition < 512; partition++) {
      expect(p.ranking(partition)).toEqual([...plainStores.ranking(partition), ...plainEdges.ranking(partition)]);
    }
    expect(p.isStoreNode('store-1')).toBe(true);
    expect(p.isStoreNode('edge-1')).toBe(false);
  });

  test('an edge owner\'s secondaries are store nodes while there are enough of them', () => {
    const p = withStores(EDGES, STORES);
    for (let partition = 0; partition < 512; partition++) {
      for (const owner of EDGES) expect([...p.secondaries(partition, owner)].sort()).toEqual(STORES);
    }
    // One store node and two replicas: the store, then the best-ranked other edge node.
    const one = withStores(EDGES, ['store-1']);
    for (let partition = 0; partition < 64; partition++) {
      const secondaries = one.secondaries(partition, 'edge-1');
      expect(secondaries[0]).toBe('store-1');
      expect(secondaries[1]).toBe(one.ranking(partition).filter((id) => id !== 'edge-1' && id !== 'store-1')[0]);
    }
  });

  test('the store tier keeps every partition while all edge nodes are gone and back: the orphans\' secondaries do not move', () => {
    const p = withStores(EDGES, STORES, 1);
    const before = Array.from({ length: 512 }, (_, partition) => p.secondaries(partition, 'edge-1'));
    p.setMembers(STORES, STORES); // every edge node gone: sessions owned by edge-1 are orphans
    const orphaned = Array.from({ length: 512 }, (_, partition) => p.secondaries(partition, 'edge-1'));
    expect(orphaned).toEqual(before);
    p.setMembers(['edge-4', 'edge-5', ...STORES], STORES); // new edge nodes arrive
    expect(Array.from({ length: 512 }, (_, partition) => p.secondaries(partition, 'edge-1'))).toEqual(before);
    for (let partition = 0; partition < 512; partition++) expect(STORES).toContain(p.ranking(partition)[0]);
  });

  test('a role change is a member change: rankings are recomputed', () => {
    const p = placement([...EDGES, ...STORES], 2, SEED, 512);
    const plain = allRankings(p);
    p.setMembers([...EDGES, ...STORES], STORES);
    expect(allRankings(p)).not.toEqual(plain);
    p.setMembers([...EDGES, ...STORES]);
    expect(allRankings(p)).toEqual(plain);
  });
});
