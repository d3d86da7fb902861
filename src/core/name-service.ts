/**
 * The name service: where a session lives, answered on any node — its partition, the
 * partition's master and the node that owns the session now, each with the address peers
 * reach it at. An ingress uses it to send a returning user to the pod that holds the session.
 *
 * Rules:
 * - Current holders only: a master or owner that membership does not call alive or
 *   suspect (dead, left, unknown) is left out; the caller then knows no live node serves
 *   the session, and the partition's master is where a resume is one hop.
 * - A partition's master is the one its election chose, as this node knows it when it holds
 *   the partition; otherwise the live holder the election chooses when nobody failed: the
 *   highest --priority, then the lowest rank, in the placement this node uses (the
 *   coordinator's view once there is one).
 * - The owner is read from this node's copy when it holds one; otherwise the partition's
 *   holders are asked (one lookup each, as a resume asks), and the copy with the highest
 *   epoch names it. A deleted session has no owner.
 */
import type { Membership } from './membership';
import type { Placement } from './placement';
import type { PeerCopies } from './session-api';
import type { SessionSnapshot } from '../store/session-snapshot';

export interface NodeAddress {
  nodeId: string;
  address: string;
}

export interface Location {
  partition: number;
  master: NodeAddress | undefined;
  owner: NodeAddress | undefined;
}

export interface NameServiceSource {
  readonly membership: Pick<Membership, 'member'>;
  readonly placement: Pick<Placement, 'holders' | 'partitions'>;
  /** The partition elections (src/core/partition-masters.ts). */
  readonly masters: { masterOf(partition: number): string | undefined; priorityOf(nodeId: string): number };
  readonly store: { partitionOf(id: string): number; snapshot(id: string, now: number): SessionSnapshot | undefined };
  fetchFromPeers(sessionId: string, knownOwner: string | undefined, deadline: number, now: number): Promise<PeerCopies>;
}

/** `nodeId` with its address when membership calls it alive or suspect; else undefined. */
export function liveAddress(membership: Pick<Membership, 'member'>, nodeId: string): NodeAddress | undefined {
  const member = membership.member(nodeId);
  if (member === undefined || (member.state !== 'alive' && member.state !== 'suspect')) return undefined;
  return { nodeId, address: member.advertiseAddress };
}

/** The partition's master (undefined when no holder is live). */
export function partitionMaster(source: Pick<NameServiceSource, 'membership' | 'placement' | 'masters'>, partition: number): string | undefined {
  const elected = source.masters.masterOf(partition);
  if (elected !== undefined && liveAddress(source.membership, elected) !== undefined) return elected;
  let best: string | undefined;
  let bestPriority = -Infinity;
  const holders = source.placement.holders(partition);
  for (const nodeId of holders) {
    if (liveAddress(source.membership, nodeId) === undefined) continue;
    const priority = source.masters.priorityOf(nodeId);
    if (priority > bestPriority) [best, bestPriority] = [nodeId, priority];
  }
  return best;
}

/** Partitions each live member masters, ascending. */
export function mastersByMember(source: Pick<NameServiceSource, 'membership' | 'placement' | 'masters'>): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (let p = 0; p < source.placement.partitions; p++) {
    const master = partitionMaster(source, p);
    if (master === undefined) continue;
    let list = out.get(master);
    if (list === undefined) out.set(master, (list = []));
    list.push(p);
  }
  return out;
}

/** Where `sessionId` lives, asking the partition's holders when this node has no copy. */
export async function locateSession(source: NameServiceSource, sessionId: string, deadline: number, now: number): Promise<Location> {
  const partition = source.store.partitionOf(sessionId);
  const masterId = partitionMaster(source, partition);
  const master = masterId === undefined ? undefined : liveAddress(source.membership, masterId);
  let copy = source.store.snapshot(sessionId, now);
  if (copy === undefined) {
    const copies = await source.fetchFromPeers(sessionId, undefined, deadline, now);
    for (const snapshot of copies.snapshots) if (copy === undefined || snapshot.epoch > copy.epoch) copy = snapshot;
  }
  const owner = copy === undefined || copy.deletedVersion > 0 ? undefined : liveAddress(source.membership, copy.owner);
  return { partition, master, owner };
}
