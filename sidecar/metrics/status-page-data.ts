/**
 * What the status page draws (served as /status.json): this node's Status, plus, per
 * member, how many partitions placement gives it, and the ring's segments.
 *
 * Rules:
 * - Built only from the node's own objects (its StatusResponse and its Placement): no
 *   session id, part name or content ever appears, and no other node is asked.
 * - Counts are JSON numbers (none comes near 2^53), under Status's proto3 JSON names, so
 *   the page and scripts read the same fields as `baton status --json`.
 * - Placement ranks live members only: a member outside it (dead, left) holds 0 partitions.
 * - The ring has at most MAX_RING_SEGMENTS segments whatever --partitions is, so the
 *   document stays small: a segment covers a run of consecutive partitions and shows the
 *   member that is rank 0 (primary) for most of them.
 */
import type { StatusResponse } from '../../src/gen/baton/v1/cluster';
import type { Placement } from '../../src/core/placement';

export const MAX_RING_SEGMENTS = 512;

export interface StatusPageMember {
  nodeId: string;
  address: string;
  state: string;
  isSelf: boolean;
  replicationLagSeqs: number;
  /** edge or store ('' for a seed never heard from). */
  role: string;
  /** Partitions this member holds a copy of (rank < replicas + 1). */
  partitionsHeld: number;
  /** Partitions for which this member ranks first. */
  partitionsPrimary: number;
}

export interface StatusPageData {
  nodeId: string;
  version: string;
  startedAtUnixMs: number;
  sessions: number;
  parts: number;
  bytes: number;
  maxBytes: number;
  tombstones: number;
  partitions: number;
  /** Copies of each partition placement asks for (replicas + 1, capped by the live members). */
  copies: number;
  /** --quorum (0: off), and the members this node heard within the suspect time, itself included. */
  quorum: number;
  membersHeard: number;
  members: StatusPageMember[];
  ring: {
    /** Consecutive partitions per segment (the last segment may cover fewer). */
    partitionsPerSegment: number;
    /** Per segment, the index in `members` of its primary; -1 when no member is live. */
    primaries: number[];
  };
}

interface Shares {
  held: number[];
  primary: number[];
  perSegment: number;
  primaries: number[];
  copies: number;
}

/**
 * Shares per placement member set (Placement makes a new memberIds() array on every change),
 * so a poll costs one pass over the partitions only after the members changed: with 65,536
 * partitions a pass is tens of milliseconds on the event loop.
 */
const sharesCache = new WeakMap<readonly string[], { key: string; shares: Shares }>();

export function statusPageData(status: StatusResponse, placement: Placement | undefined): StatusPageData {
  const ids = status.members.map((m) => m.nodeId);
  let shares: Shares;
  if (placement === undefined) {
    shares = computeShares(ids, status.nodeId, status.partitions, undefined);
  } else {
    const key = `${status.partitions}\n${ids.join('\n')}`;
    const cached = sharesCache.get(placement.memberIds());
    if (cached?.key === key) {
      shares = cached.shares;
    } else {
      shares = computeShares(ids, status.nodeId, status.partitions, placement);
      sharesCache.set(placement.memberIds(), { key, shares });
    }
  }
  const { held, primary, perSegment, primaries, copies } = shares;
  const partitions = status.partitions;
  return {
    nodeId: status.nodeId,
    version: status.version,
    startedAtUnixMs: Number(status.startedAtUnixMs),
    sessions: Number(status.sessions),
    parts: Number(status.parts),
    bytes: Number(status.bytes),
    maxBytes: Number(status.maxBytes),
    tombstones: Number(status.tombstones),
    partitions,
    copies,
    quorum: status.quorum,
    membersHeard: status.membersHeard,
    members: status.members.map((m, i) => ({
      nodeId: m.nodeId,
      address: m.address,
      state: m.state,
      isSelf: m.isSelf,
      replicationLagSeqs: Number(m.replicationLagSeqs),
      role: m.role,
      partitionsHeld: held[i]!,
      partitionsPrimary: primary[i]!,
    })),
    ring: { partitionsPerSegment: perSegment, primaries },
  };
}

function computeShares(ids: readonly string[], selfId: string, partitions: number, placement: Placement | undefined): Shares {
  const index = new Map(ids.map((id, i) => [id, i]));
  const held = new Array<number>(ids.length).fill(0);
  const primary = new Array<number>(ids.length).fill(0);
  const perSegment = Math.ceil(partitions / MAX_RING_SEGMENTS);
  const primaries: number[] = [];
  const copies = placement?.holderCount() ?? 1;
  const segmentVotes = new Array<number>(ids.length).fill(0);
  for (let p = 0; p < partitions; p++) {
    // Without replication (not started yet) this node alone holds everything.
    const ranking = placement?.ranking(p) ?? [selfId];
    const first = ranking.length > 0 ? index.get(ranking[0]!) : undefined;
    for (let r = 0; r < Math.min(copies, ranking.length); r++) {
      const i = index.get(ranking[r]!);
      if (i !== undefined) held[i]!++;
    }
    if (first !== undefined) {
      primary[first]!++;
      segmentVotes[first]!++;
    }
    if ((p + 1) % perSegment === 0 || p === partitions - 1) {
      let best = -1;
      for (let i = 0; i < segmentVotes.length; i++) if (segmentVotes[i]! > 0 && (best < 0 || segmentVotes[i]! > segmentVotes[best]!)) best = i;
      primaries.push(best);
      segmentVotes.fill(0);
    }
  }
  return { held, primary, perSegment, primaries, copies };
}
