/**
 * What a receiver's poll sends back to its channel's sender: a NACK of the missing ranges
 * and an acknowledgement carrying the receiver's notes on superseded forwarded writes; and
 * how the sender reads them back (bounded, with bad entries left out).
 *
 * Rules:
 * - An acknowledgement fits in one datagram: it carries the newest notes that fit, and
 *   `superseded_complete_above` rises over those left out, so the writer sends those
 *   writes again rather than take the acknowledgement as the owner's.
 */
import type { Ack, Nack, Superseded } from '../gen/baton/v1/wire';
import { isNodeId, safeSeq } from '../wire/datagram-fields';

/** Most ranges read from one NACK. */
export const MAX_NACK_RANGES = 256;
/** Most superseded writes read from one acknowledgement. */
export const MAX_SUPERSEDED_PER_ACK = 256;

/** Bytes an acknowledgement without notes takes at most (ids of 128 bytes, four varints). */
export const ACK_BASE_BYTES = 2 * 128 + 64;
/** Bytes one note takes besides its session id and owner id (at most). */
const NOTE_BASE_BYTES = 40;

/** The channel a reply is about: its sender, the sender's incarnation, and '' or this node. */
export interface ReplyChannel {
  senderNodeId: string;
  senderIncarnation: bigint;
  targetNodeId: string;
}

export function nackFor(channel: ReplyChannel, ranges: readonly [number, number][]): Nack {
  return {
    channelSenderNodeId: channel.senderNodeId,
    channelSenderIncarnation: channel.senderIncarnation,
    targetNodeId: channel.targetNodeId,
    ranges: ranges.map(([first, last]) => ({ first: BigInt(first), last: BigInt(last) })),
  };
}

/** An acknowledgement up to `cumulative` with the notes that fit in `maxPayloadBytes`. */
export function ackFor(channel: ReplyChannel, cumulative: number, notes: readonly Superseded[], notesCompleteAbove: number, maxPayloadBytes: number): Ack {
  const ack: Ack = {
    channelSenderNodeId: channel.senderNodeId,
    channelSenderIncarnation: channel.senderIncarnation,
    targetNodeId: channel.targetNodeId,
    cumulativeSeq: BigInt(cumulative),
    superseded: [],
    supersededCompleteAbove: BigInt(notesCompleteAbove),
  };
  let room = maxPayloadBytes - ACK_BASE_BYTES;
  for (let i = notes.length - 1; i >= 0; i--) {
    const note = notes[i]!;
    room -= NOTE_BASE_BYTES + Buffer.byteLength(note.sessionId) + note.ownerNodeId.length;
    if (room < 0) {
      if (note.seq > ack.supersededCompleteAbove) ack.supersededCompleteAbove = note.seq;
      break;
    }
    ack.superseded.push(note);
  }
  return ack;
}

/** A NACK's ranges (at most MAX_NACK_RANGES), or undefined if one names sequence number 0 (malformed). */
export function readNackRanges(nack: Nack): [number, number][] | undefined {
  const ranges = nack.ranges.slice(0, MAX_NACK_RANGES).map((r): [number, number] => [safeSeq(r.first), safeSeq(r.last)]);
  return ranges.some(([first, last]) => first === 0 || last === 0) ? undefined : ranges;
}

/** An acknowledgement's notes on superseded writes: the well-formed ones (at most MAX_SUPERSEDED_PER_ACK), and the notes' floor. */
export function readSuperseded(ack: Ack): { notes: { seq: number; sessionId: string; owner: string; epoch: number }[]; completeAbove: number } {
  const notes = ack.superseded
    .slice(0, MAX_SUPERSEDED_PER_ACK)
    .filter((s) => safeSeq(s.seq) > 0 && isNodeId(s.ownerNodeId) && safeSeq(s.epoch) > 0)
    .map((s) => ({ seq: Number(s.seq), sessionId: s.sessionId, owner: s.ownerNodeId, epoch: Number(s.epoch) }));
  const completeAbove = ack.supersededCompleteAbove > BigInt(Number.MAX_SAFE_INTEGER) ? Infinity : Number(ack.supersededCompleteAbove);
  return { notes, completeAbove };
}
