/**
 * What a receiver's poll sends back to its channel's sender: a NACK of the missing ranges
 * and an acknowledgement carrying the receiver's notes on superseded forwarded writes.
 *
 * Rules:
 * - An acknowledgement fits in one datagram: it carries the newest notes that fit, and
 *   `superseded_complete_above` rises over those left out, so the writer sends those
 *   writes again rather than take the acknowledgement as the owner's.
 */
import type { Ack, Nack, Superseded } from '../gen/baton/v1/wire';

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
