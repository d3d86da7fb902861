/**
 * ChannelSender on its own: numbering, conflation, the retransmit buffer and
 * acknowledgements (the network scenarios are in replication.sim.test.ts).
 */
import { ChannelSender } from '../src/channel-sender';

function sender(retransmitBufferBytes = 64 * 1024): ChannelSender {
  return new ChannelSender({ maxPacketBytes: 1200, retransmitBufferBytes, maxRetransmitPerNack: 64, repairHoldoffMs: 3 });
}

const bytes = (n: number, fill = 1): Uint8Array => new Uint8Array(n).fill(fill);

describe('ChannelSender', () => {
  test('a retransmission leaves out values a newer packet superseded, so it never outgrows the original', () => {
    const s = sender();
    s.enqueue({ key: 'a', bytes: bytes(10, 1) });
    s.enqueue({ key: 'b', bytes: bytes(10, 2) });
    s.flush(); // seq 1
    s.enqueue({ key: 'a', bytes: bytes(900, 3) });
    s.flush(); // seq 2 carries the newer, larger 'a'
    const { packets } = s.handleNack([[1, 2]], 0);
    expect(packets.map((p) => p.deltas.map((d) => [d[0], d.length]))).toEqual([[[2, 10]], [[3, 900]]]);
  });

  test('a packet NACKed again within the repair holdoff is not resent twice; after it, it is', () => {
    const s = sender();
    for (const key of ['a', 'b', 'c']) {
      s.enqueue({ key, bytes: bytes(10) });
      s.flush();
    }
    const seqs = (r: { packets: { seq: number }[] }) => r.packets.map((p) => p.seq);
    expect(seqs(s.handleNack([[1, 2]], 100))).toEqual([1, 2]);
    // The other copy of the same NACK, or another receiver's: 1 and 2 were just resent.
    expect(seqs(s.handleNack([[1, 3]], 101))).toEqual([3]);
    expect(s.counters.repairsHeldOff).toBe(2);
    // A receiver that lost the retransmission asks again after its retry interval.
    expect(seqs(s.handleNack([[1, 3]], 103))).toEqual([1, 2]);
    expect(s.counters.retransmitted).toBe(5);
  });

  test('a receiver added later is not counted as having acknowledged what was trimmed before it', () => {
    const s = sender(1024);
    s.setReceivers(['x']);
    for (let i = 0; i < 20; i++) {
      s.enqueue({ key: `k${i}`, bytes: bytes(200) });
      s.flush();
    }
    expect(s.firstRetainedSeq).toBeGreaterThan(10); // trimmed, unacknowledged
    s.setReceivers(['x', 'y']);
    expect(s.ackedBy('x')).toBe(0);
    expect(s.ackedBy('y')).toBe(0);
    s.handleAck('y', 3); // below the release floor, but y did acknowledge it
    expect(s.ackedBy('y')).toBe(3);
    s.handleAck('y', 20);
    expect(s.ackedBy('y')).toBe(20);
    s.setReceivers(['x']);
    s.setReceivers(['x', 'y']); // forgotten while gone
    expect(s.ackedBy('y')).toBe(0);
  });
});
