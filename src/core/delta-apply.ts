/**
 * Receive and apply: whether a data packet may open or use a channel receiver, and what
 * its deltas (whole ones, and one completed from fragments) do to the store.
 *
 * Rules:
 * - Channel state is kept only for members, so a packet from a stranger, one misrouted,
 *   one without a sequence number, or a straggler from an older incarnation of a live
 *   node is refused before any receiver exists for it (`admit`).
 * - In multicast mode every member receives the group's deltas: a node applies those of
 *   sessions it owns, is a secondary of, or already holds, and ignores the rest.
 * - A write made elsewhere that names this node as the owner, while this node knows of a
 *   newer owner or epoch (a claim its writer has not heard of, maybe this node's own
 *   later one), carries an epoch the claimed copy beats: this node is not the owner that
 *   must have it. Nor does any holder vouch for a write older than the claim it holds (an
 *   owner a resume could not reach, writing on). The packet's outcome carries a note
 *   saying so; the engine attaches it to the receiver, the acknowledgement carries it, and
 *   the writer sends the write again to that owner at that epoch.
 * - A holder whose copy names another owner than a write's at the same epoch (two nodes
 *   made the session at once; the higher node id owns it) notes it the same way. When the
 *   delta's owner is the one that wins such a tie, the copy may hold the loser's writes:
 *   the outcome says so (`tied`), and the engine sends the copy to the winner.
 * - Parts this copy holds that the owner's copy lacks — ones a claim does not name
 *   (a claim names every part it holds), or a late write kept here because the claimed
 *   copy has no newer one — are reported (`lacking`) for the engine to send to the owner.
 * - Nothing here sends or reports: outcomes are returned (drops by reason, lag samples,
 *   notes, ties, lacking parts, whether the sender's channels must resync).
 */
import type { FragmentReassembly } from './fragment-reassembly';
import type { Membership } from './membership';
import type { Placement } from './placement';
import type { Superseded } from '../gen/baton/v1/wire';
import { findStoredPart, forEachPart, tieLoser, type PriorOwner, type RemoteChange, type SessionStore } from '../store/store';
import { safeSeq } from '../wire/datagram-fields';
import { groupOfChannel, isGroupChannel } from './multicast-groups';
import { decodeDelta, type Change, type DecodedDelta, type ReceivedData } from '../wire/delta-codec';

export interface DeltaApplyConfig {
  nodeId: string;
  transport: 'unicast' | 'multicast';
}

/** Why a data packet or one of its deltas was dropped (a subset of the engine's reasons). */
export type ApplyDropReason = 'malformed' | 'misrouted' | 'stale_incarnation' | 'unknown_sender' | 'reassembly_overflow';

/**
 * Two owners at one epoch (two nodes made the session afresh, each not knowing of the
 * other's, or claimed it without reaching each other): ownership settles on the higher
 * node id everywhere, but the winner's own copy lacks what the loser wrote. A holder that
 * held the loser's copy when the winner's delta arrived has both: it sends its copy to the
 * winner's holders, and to the loser and its secondaries, so that they stop naming the
 * loser as owner (FanOut.forwardTied).
 */
export interface TiedSession {
  sessionId: string;
  /** The owner this copy named before. */
  loser: string;
}

/** What one packet's deltas did. */
export interface PacketOutcome {
  applied: number;
  ignored: number;
  dropped: ApplyDropReason[];
  /** Replication lag of each applied delta that carried its write time (ms). */
  lagsMs: number[];
  /** Notes on superseded writes, for the packet's receiver. */
  notes: Superseded[];
  /** Sessions whose ownership a delta settled on another node at the epoch this copy had (see TiedSession). */
  tied: TiedSession[];
  /** Sessions where a delta replaced a write of this node with an older value at a higher epoch (a claim made without it): its ticket, if open, must send it again. */
  ownWritesLost: string[];
  /** Parts this copy holds that the owner's copy lacks: a claim in effect here did not name them (lackedBy), or a late write kept here (keeps). */
  lacking: { sessionId: string; names: string[] }[];
  /** A delta's fragments were dropped after they counted as received: resync the sender's channels. */
  resyncSender: boolean;
}

/** Notes for the packet's sender, on session `sessionId` in packet `seq`, the owner and epoch this copy names. */
function noteOwner(outcome: PacketOutcome, seq: number, sessionId: string, current: Readonly<{ owner: string; epoch: number }>): void {
  outcome.notes.push({ seq: BigInt(seq), sessionId, ownerNodeId: current.owner, epoch: BigInt(current.epoch) });
}

export class DeltaApply {
  /** What applyRemote says of a copy before each delta (one object, reused). */
  private readonly prior: PriorOwner = { owner: undefined, epoch: 0, ownWriteLost: false };

  constructor(
    private readonly config: DeltaApplyConfig,
    private readonly store: SessionStore,
    private readonly placement: Placement,
    /** Members as membership knows them (only `member` is read). */
    private readonly membership: Pick<Membership, 'member' | 'isLive'>,
    private readonly reassembly: FragmentReassembly,
  ) {}

  /** The packet's channel and sequence number, or why it is refused. */
  admit(from: string, incarnation: bigint, data: Pick<ReceivedData, 'targetNodeId' | 'seq'>): { channel: string; seq: number } | { dropped: ApplyDropReason } {
    const channel = data.targetNodeId;
    const group = isGroupChannel(channel);
    if ((!group && channel !== this.config.nodeId) || (group && (this.config.transport !== 'multicast' || groupOfChannel(channel) === undefined))) return { dropped: 'misrouted' };
    const member = this.membership.member(from);
    if (member === undefined) return { dropped: 'unknown_sender' };
    const seq = safeSeq(data.seq);
    if (seq === 0) return { dropped: 'malformed' };
    // Data from an older incarnation than membership knows for a live node is a straggler
    // from before its restart: it must not retire the new incarnation's receivers. (A dead
    // member's other incarnation is a restart, as membership treats it.)
    if (member.incarnation > incarnation && member.state !== 'dead') return { dropped: 'stale_incarnation' };
    return { channel, seq };
  }

  /** Applies a new (not duplicate) packet's deltas, and its fragment to reassembly. */
  applyPacket(from: string, incarnation: bigint, data: ReceivedData, now: number): PacketOutcome {
    const outcome: PacketOutcome = { applied: 0, ignored: 0, dropped: [], lagsMs: [], notes: [], tied: [], lacking: [], ownWritesLost: [], resyncSender: false };
    const seq = safeSeq(data.seq);
    for (const delta of data.deltas) this.apply(from, delta, seq, data.ackRequested, now, outcome);
    const fragment = data.fragment;
    if (fragment === undefined) return outcome;
    const result = this.reassembly.add(from, incarnation, { ...fragment, deltaId: Number(fragment.deltaId) }, now);
    if (result.kind === 'malformed') outcome.dropped.push('malformed');
    if (result.kind === 'overflow') {
      outcome.dropped.push('reassembly_overflow');
      outcome.resyncSender = true;
    }
    if (result.kind === 'complete') {
      const delta = decodeDelta(result.bytes, from);
      if (delta === undefined) outcome.dropped.push('malformed');
      else this.apply(from, delta, seq, data.ackRequested, now, outcome);
    }
    return outcome;
  }

  /**
   * Applies a delta that came from `from` in packet `seq`, recording what it did in
   * `outcome`. `awaited`: the packet asked for an acknowledgement at once (its sender waits
   * for one of its writes).
   */
  private apply(from: string, delta: DecodedDelta, seq: number, awaited: boolean, now: number, outcome: PacketOutcome): void {
    const { sessionId, owner } = delta;
    if (this.config.transport === 'multicast') {
      const partition = this.store.partitionOf(sessionId);
      if (owner !== this.config.nodeId && !this.placement.isSecondary(this.config.nodeId, partition, owner) && this.store.snapshot(sessionId, now) === undefined) {
        outcome.ignored++;
        return;
      }
    }
    const change = delta.change === undefined ? undefined : toRemoteChange(delta.change);
    if (change === undefined) {
      outcome.dropped.push('malformed');
      return;
    }
    const prior = this.prior;
    const changed = this.store.applyRemote(sessionId, change, { owner, epoch: delta.epoch, expiresAt: delta.expiresAt, ttlMs: delta.ttlMs }, now, prior);
    outcome.applied++;
    if (prior.ownWriteLost === true) outcome.ownWritesLost.push(sessionId);
    // Any holder whose copy, the delta merged, names another owner than the delta says so:
    // the writer takes that owner for the session's and sends the write again to it. The
    // copy knows a newer claim (a resume that could not reach the writing owner: the
    // claimed copy beats the write; or this node's own, as master of an owner gone), or
    // ownership at the same epoch settled on a node the writer does not know of (two nodes
    // made the session afresh at once: the higher node id owns it everywhere, and the
    // other's writes must reach it). The writer waits for this node's word when the delta
    // names it as owner (a forwarded write) all the same.
    const current = this.store.ownerOf(sessionId);
    if (current !== undefined && (current.epoch > delta.epoch || current.owner !== owner)) {
      noteOwner(outcome, seq, sessionId, current);
      // A part this copy kept all the same (the owner's copy has none newer: one the old
      // owner made after a claim it had not heard of) must reach the owner too. A writer
      // waiting for it sends it again; one nobody waits for (asynchronous) is sent from here.
      if (changed && current.owner !== this.config.nodeId && (change.kind === 'put' || change.kind === 'delete_part') && this.keeps(sessionId, change, now)) {
        outcome.lacking.push({ sessionId, names: [change.name] });
      }
    } else if (owner !== this.config.nodeId && tieLoser(prior, owner, delta.epoch) !== undefined) {
      // The delta's owner won the tie over the owner this copy named: the copy may hold
      // writes of that owner the winner lacks (acknowledged here before the tie showed).
      outcome.tied.push({ sessionId, loser: prior.owner! });
    } else if (delta.change?.kind === 'claim' && delta.change.parts !== undefined && owner !== this.config.nodeId) {
      const names = this.lackedBy(sessionId, delta.epoch, delta.change.parts, now);
      if (names.length > 0) outcome.lacking.push({ sessionId, names });
    } else if (awaited && current !== undefined && this.notConfirming(from, owner)) {
      noteOwner(outcome, seq, sessionId, current);
    }
    if (delta.writtenAt > 0) outcome.lagsMs.push(Math.max(0, now - delta.writtenAt));
  }

  /**
   * A write made on another node than its owner, reaching this node while the owner lives
   * here: this node's word must not confirm it. A writer that waits for this node's word on
   * such a write holds the owner gone and sent it here as the partition's master, to take
   * the session over — which no node does while the owner lives (a healed partition: the
   * side that was cut off still holds the other side dead for a moment, and may know
   * another master than this node does). So the owner is named instead, and the writer
   * sends the write to it. A writer waiting for the owner's word reads no other holder's
   * notes on its write; notes are made only in packets that ask for an acknowledgement at
   * once (a write is waited for), so that parts forwarded for a tie or a claim, which nobody
   * waits for, do not crowd out the notes that matter (a receiver holds at most maxNotes).
   */
  private notConfirming(from: string, owner: string): boolean {
    return from !== owner && owner !== this.config.nodeId && this.membership.isLive(owner);
  }

  /** Whether this node's copy holds the part change as written (it was newer than the copy's). */
  private keeps(sessionId: string, change: { name: string; version: number; writer: string; epoch: number }, now: number): boolean {
    const copy = this.store.get(sessionId, now);
    const part = copy === undefined ? undefined : findStoredPart(copy, change.name);
    return part !== undefined && part.version === change.version && part.writer === change.writer && part.epoch === change.epoch;
  }

  /**
   * The parts of this node's copy a claim (at `epoch`, naming `claimed`) lacks: older than
   * the claim and not among its parts. The claimant did not have them — written after it
   * asked, or held by a node it did not ask (a holder vouched for a write a moment before
   * the claim reached it; a loser of an ownership tie answered the claimant as owner) —
   * and the new owner must get them, or a resume there answers without them.
   */
  private lackedBy(sessionId: string, epoch: number, claimed: readonly string[], now: number): string[] {
    const copy = this.store.get(sessionId, now);
    const names: string[] = [];
    if (copy === undefined) return names;
    const named = new Set(claimed);
    forEachPart(copy, (name, _value, _version, _writer, partEpoch) => {
      if (partEpoch < epoch && !named.has(name)) names.push(name);
    });
    return names;
  }
}

/** A Change as the store applies it (the store copies values in); part changes must name writer and epoch. */
export function toRemoteChange(change: Change): RemoteChange | undefined {
  switch (change.kind) {
    case 'put':
      if (change.writer === undefined || change.epoch === undefined) return undefined;
      return { kind: 'put', name: change.name, value: change.value, version: change.version, writer: change.writer, epoch: change.epoch };
    case 'delete_part':
      if (change.writer === undefined || change.epoch === undefined) return undefined;
      return { kind: 'delete_part', name: change.name, version: change.version, writer: change.writer, epoch: change.epoch };
    default:
      return change;
  }
}
