/**
 * Replica placement by rendezvous (highest-random-weight) hashing over BUZhash.
 *
 * For each partition, every live member gets a 64-bit score; the ranking is the members
 * by descending score, ties (never seen in practice) broken by ascending node id. Rank 0
 * answers first; a partition is held by the top replicas + 1 members (the owner's
 * secondaries come from there). Because a member's score does not depend on the other
 * members, removing a member only deletes it from each ranking (everyone else keeps their
 * relative order), and adding one moves about 1/(N+1) of the partitions to it.
 *
 * score(node, p) = two murmur3-style 32-bit hashes of the words (hash lo, hash hi, p)
 * with different seeds, where hash = buzhash64(node id) under the cluster seed: every node
 * computes the same rankings, and outsiders cannot predict them.
 *
 * Roles: store nodes (--role store) rank before edge nodes, each group in score order.
 * The owner of a session is the edge node that serves it (it was written or resumed there),
 * whatever its rank; its secondaries are the first `replicas` members of the ranking other
 * than itself, so store nodes take the secondary slots first, and with at least `replicas`
 * store nodes every session has all its copies in the store tier: it survives every edge
 * node going away, and coming back does not move it (stores keep ranking first). Rank 0 of
 * a partition is its first store node (its top edge node when there is no store node): it
 * answers peer fetches first (node-core.ts asks in rank order). Without store nodes the
 * ranking is the plain rendezvous order.
 *
 * Rankings are computed lazily per partition and cached until the member set (or a
 * member's role) changes.
 */
import { BuzHash, fmix32, mixWord } from '../store/buzhash';

const SEED_HI = 0x9747b28c;
const SEED_LO = 0x5bd1e995;

export class Placement {
  private members: readonly string[] = Object.freeze([]);
  /** members[i] is a store node. */
  private isStore: readonly boolean[] = Object.freeze([]);
  /** buzhash64 halves of members[i]. */
  private hashHi = new Uint32Array(0);
  private hashLo = new Uint32Array(0);
  private readonly rankings = new Map<number, readonly string[]>();
  /** Increments whenever the members or their roles change (what derived caches key on). */
  version = 0;

  constructor(
    private readonly hasher: BuzHash,
    readonly partitions: number,
    /** Secondaries per owner; 0 = every other member. */
    readonly replicas: number,
  ) {
    if (!Number.isInteger(partitions) || partitions < 1) throw new RangeError(`partitions must be a positive integer (got ${partitions})`);
    if (!Number.isInteger(replicas) || replicas < 0) throw new RangeError(`replicas must be a non-negative integer (got ${replicas})`);
  }

  /**
   * Sets the live members (any order, duplicates ignored) and which of them are store
   * nodes (ids that are not members are ignored). Caches survive an unchanged set.
   */
  setMembers(liveNodeIds: readonly string[], storeNodeIds: readonly string[] = []): void {
    const sorted = [...new Set(liveNodeIds)].sort(compare);
    const stores = new Set(storeNodeIds);
    const isStore = sorted.map((id) => stores.has(id));
    if (sorted.length === this.members.length && sorted.every((id, i) => id === this.members[i] && isStore[i] === this.isStore[i])) return;
    this.members = Object.freeze(sorted);
    this.isStore = Object.freeze(isStore);
    this.hashHi = new Uint32Array(sorted.length);
    this.hashLo = new Uint32Array(sorted.length);
    for (let i = 0; i < sorted.length; i++) {
      this.hasher.hashString(sorted[i]!);
      this.hashHi[i] = this.hasher.hi;
      this.hashLo[i] = this.hasher.lo;
    }
    this.rankings.clear();
    this.version++;
  }

  /** The current members, sorted by node id. */
  memberIds(): readonly string[] {
    return this.members;
  }

  /** Whether nodeId is a member with the store role. */
  isStoreNode(nodeId: string): boolean {
    const i = this.members.indexOf(nodeId);
    return i >= 0 && this.isStore[i] === true;
  }

  /** The members ordered for this partition: store nodes first, each group by descending score. */
  ranking(partition: number): readonly string[] {
    this.checkPartition(partition);
    let ranking = this.rankings.get(partition);
    if (ranking === undefined) {
      ranking = this.computeRanking(partition);
      this.rankings.set(partition, ranking);
    }
    return ranking;
  }

  /** 0-based position of nodeId in the partition's ranking; -1 if it is not a member. */
  rank(nodeId: string, partition: number): number {
    return this.ranking(partition).indexOf(nodeId);
  }

  /** Number of members that hold each partition: replicas + 1, or all with replicas = 0. */
  holderCount(): number {
    return this.replicas === 0 ? this.members.length : Math.min(this.replicas + 1, this.members.length);
  }

  /** The members holding a partition (its replica set), in rank order. */
  holders(partition: number): readonly string[] {
    return this.ranking(partition).slice(0, this.holderCount());
  }

  /**
   * The owner's secondaries for this partition: the first `replicas` members of the
   * ranking other than the owner (every other member when replicas = 0). An owner that is
   * not a member excludes no one.
   */
  secondaries(partition: number, owner: string): readonly string[] {
    const ranking = this.ranking(partition);
    const wanted = this.replicas === 0 ? ranking.length : this.replicas;
    const result: string[] = [];
    for (let i = 0; i < ranking.length && result.length < wanted; i++) {
      if (ranking[i] !== owner) result.push(ranking[i]!);
    }
    return result;
  }

  isSecondary(nodeId: string, partition: number, owner: string): boolean {
    if (nodeId === owner) return false;
    const ranking = this.ranking(partition);
    const wanted = this.replicas === 0 ? ranking.length : this.replicas;
    let seen = 0;
    for (let i = 0; i < ranking.length && seen < wanted; i++) {
      if (ranking[i] === owner) continue;
      if (ranking[i] === nodeId) return true;
      seen++;
    }
    return false;
  }

  /** True if nodeId is among the top replicas + 1 of the ranking (a possible secondary). */
  holdsPartition(nodeId: string, partition: number): boolean {
    const rank = this.rank(nodeId, partition);
    return rank >= 0 && rank < this.holderCount();
  }

  /** Every partition nodeId holds, ascending. */
  partitionsHeldBy(nodeId: string): number[] {
    const held: number[] = [];
    if (!this.members.includes(nodeId)) return held;
    for (let p = 0; p < this.partitions; p++) {
      if (this.holdsPartition(nodeId, p)) held.push(p);
    }
    return held;
  }

  private computeRanking(partition: number): readonly string[] {
    const n = this.members.length;
    const scoreHi = new Uint32Array(n);
    const scoreLo = new Uint32Array(n);
    for (let i = 0; i < n; i++) {
      const hi = this.hashHi[i]!;
      const lo = this.hashLo[i]!;
      scoreHi[i] = fmix32(mixWord(mixWord(mixWord(SEED_HI, lo), hi), partition) ^ 12);
      scoreLo[i] = fmix32(mixWord(mixWord(mixWord(SEED_LO, hi), lo), partition) ^ 12);
    }
    const order = Array.from({ length: n }, (_, i) => i);
    const tier = (i: number): number => (this.isStore[i] === true ? 0 : 1);
    order.sort((a, b) => tier(a) - tier(b) || scoreHi[b]! - scoreHi[a]! || scoreLo[b]! - scoreLo[a]! || a - b);
    return Object.freeze(order.map((i) => this.members[i]!));
  }

  private checkPartition(partition: number): void {
    if (!Number.isInteger(partition) || partition < 0 || partition >= this.partitions) {
      throw new RangeError(`partition must be an integer in [0, ${this.partitions}) (got ${partition})`);
    }
  }
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
