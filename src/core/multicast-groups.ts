/**
 * Several multicast groups (--multicast-groups): which group a partition's deltas go to,
 * which members listen on each group, and how group channels are named on the wire.
 *
 * Rules:
 * - With K groups, partition p's deltas go to group p mod K (every node computes the same).
 * - With K = 1 (--multicast) every live member is a member of the one group: the protocol
 *   is what it was before groups existed (channel '', destination 'multicast').
 * - With K ≥ 2 a node is a member of group g exactly when placement makes it a holder (top
 *   replicas + 1 of the ranking) of some partition p with p mod K = g: it joins those
 *   groups and leaves the others as placement changes, so a node receives only the
 *   deltas of partitions it may replicate. A delta for a holder that is not a member of its
 *   partition's group (an owner outside the top of the ranking) goes to that holder on its
 *   unicast channel instead.
 * - Group channels are named '' (group 0) and '#g' (group g ≥ 1); '#' is not allowed in a
 *   node id, so a group channel never collides with a unicast one. Datagrams to group g
 *   go to the destination 'multicast' (g = 0) or 'multicast#g'.
 * - Membership sets are computed from placement once per placement version.
 */
import type { Placement } from './placement';

/** The channel name of group `group`. */
export function groupChannel(group: number): string {
  return group === 0 ? '' : `#${group}`;
}

/** Whether `channel` is a multicast group's channel (not one node's unicast channel). */
export function isGroupChannel(channel: string): boolean {
  return channel === '' || channel.charCodeAt(0) === 35; // '#'
}

/** The group a group channel names; undefined for anything else. */
export function groupOfChannel(channel: string): number | undefined {
  if (channel === '') return 0;
  if (!/^#[1-9]\d{0,2}$/.test(channel)) return undefined;
  return Number(channel.slice(1));
}

/** Where a datagram to group `group` goes (Outgoing.to). */
export function groupDestination(group: number): string {
  return group === 0 ? 'multicast' : `multicast#${group}`;
}

/** The group an Outgoing.to names; undefined when it names an address. */
export function groupOfDestination(to: string): number | undefined {
  if (to === 'multicast') return 0;
  if (!to.startsWith('multicast#')) return undefined;
  const group = Number(to.slice('multicast#'.length));
  return Number.isInteger(group) && group > 0 ? group : undefined;
}

export class MulticastGroups {
  private version = -1;
  /** Members of each group, by group. */
  private members: Set<string>[] = [];

  constructor(
    /** K: groups configured (1 = one group for every member). */
    readonly count: number,
    private readonly placement: Placement,
  ) {
    if (!Number.isInteger(count) || count < 1) throw new RangeError(`multicast groups must be a positive integer (got ${count})`);
  }

  groupOf(partition: number): number {
    return partition % this.count;
  }

  /** The channel a partition's deltas go on. */
  channelOf(partition: number): string {
    return groupChannel(this.groupOf(partition));
  }

  /** Whether nodeId listens on `group` (K = 1: every live member). */
  isMember(nodeId: string, group: number): boolean {
    return this.membersOf(group).has(nodeId);
  }

  /** The live members that listen on `group`. */
  membersOf(group: number): ReadonlySet<string> {
    this.refresh();
    return this.members[group] ?? new Set();
  }

  /** The groups nodeId listens on, ascending. */
  groupsOf(nodeId: string): number[] {
    this.refresh();
    const groups: number[] = [];
    for (let g = 0; g < this.count; g++) if (this.members[g]!.has(nodeId)) groups.push(g);
    return groups;
  }

  private refresh(): void {
    if (this.version === this.placement.version) return;
    this.version = this.placement.version;
    const all = this.placement.memberIds();
    if (this.count === 1) {
      this.members = [new Set(all)];
      return;
    }
    this.members = Array.from({ length: this.count }, () => new Set<string>());
    const holders = this.placement.holderCount();
    for (let p = 0; p < this.placement.partitions; p++) {
      const group = this.members[this.groupOf(p)]!;
      const ranking = this.placement.ranking(p);
      for (let i = 0; i < holders; i++) group.add(ranking[i]!);
    }
  }
}
