/**
 * Receiver replies: an acknowledgement carries the newest notes that fit one datagram and
 * says the list is complete only above those left out.
 */
import { Ack } from '../src/gen/baton/v1/wire';
import { ackFor, nackFor } from '../src/core/receiver-replies';

const channel = { senderNodeId: 'a', senderIncarnation: 5n, targetNodeId: 'b' };
const note = (seq: number) => ({ seq: BigInt(seq), sessionId: `session-${seq}`.padEnd(100, 'x'), ownerNodeId: 'owner', epoch: 2n });

describe('receiver replies', () => {
  it('NACKs ranges of the channel', () => {
    expect(nackFor(channel, [[3, 4], [9, 9]])).toEqual({ channelSenderNodeId: 'a', channelSenderIncarnation: 5n, targetNodeId: 'b', ranges: [{ first: 3n, last: 4n }, { first: 9n, last: 9n }] });
  });

  it('carries every note when they fit', () => {
    const ack = ackFor(channel, 10, [note(2), note(7)], 0, 1400);
    expect(ack.cumulativeSeq).toBe(10n);
    expect(ack.superseded.map((n) => n.seq)).toEqual([7n, 2n]);
    expect(ack.supersededCompleteAbove).toBe(0n);
  });

  it('keeps the newest notes that fit and is complete only above the first left out', () => {
    const notes = Array.from({ length: 100 }, (_, i) => note(i + 1));
    const ack = ackFor(channel, 100, notes, 0, 1400);
    expect(ack.superseded.length).toBeGreaterThan(0);
    expect(ack.superseded.length).toBeLessThan(100);
    const oldestKept = Number(ack.superseded.at(-1)!.seq);
    expect(ack.supersededCompleteAbove).toBe(BigInt(oldestKept - 1));
    expect(Ack.encode(ack).finish().length).toBeLessThanOrEqual(1400);
  });
});
