/**
 * ChannelSender on its own: numbering, conflation, the retransmit buffer and
 * acknowledgements (the network scenarios are in replication.sim.test.ts).
 */
import { ChannelSender, RELEASE_PER_CALL } from '../src/core/channel-sender';

function sender(retransmitBufferBytes = 64 * 1024, sendWindowBytes = 0): ChannelSender {
  return new ChannelSender({ maxPacketBytes: 1200, retransmitBufferBytes, maxRetransmitPerNack: 64, repairHoldoffMs: 3, sendWindowBytes, holdStallMs: 500 });
}

/** A sender with a 3,000-byte window and one receiver, 'r'. 1,000-byte deltas travel one per packet. */
function windowed(retransmitBufferBytes = 64 * 1024): ChannelSender {
  const s = sender(retransmitBufferBytes, 3000);
  s.setReceivers(['r']);
  return s;
}

/** Deltas of 1,000 bytes under keys k0…k(n-1); the first byte tells them apart. */
function enqueueMany(s: ChannelSender, n: number, fill = 1): void {
  for (let i = 0; i < n; i++) s.enqueue({ key: `k${i}`, bytes: bytes(1000, fill) });
}

/** The sent deltas as [key index by position, fill byte], per packet. */
const fills = (packets: { deltas: Uint8Array[] }[]) => packets.map((p) => p.deltas.map((d) => d[0]));

const bytes = (n: number, fill = 1): Uint8Array => new Uint8Array(n).fill(fill);

describe('ChannelSender', () => {
  test('a retransmission leaves out values a newer packet superseded, so it never outgrows the original', () => {
    const s = sender();
    s.enqueue({ key: 'a', bytes: bytes(10, 1) });
    s.enqueue({ key: 'b', bytes: bytes(10, 2) });
    s.flush(0); // seq 1
    s.enqueue({ key: 'a', bytes: bytes(900, 3) });
    s.flush(0); // seq 2 carries the newer, larger 'a'
    const { packets } = s.handleNack([[1, 2]], 0);
    expect(packets.map((p) => p.deltas.map((d) => [d[0], d.length]))).toEqual([[[2, 10]], [[3, 900]]]);
  });

  test('a packet NACKed again within the repair holdoff is not resent twice; after it, it is', () => {
    const s = sender();
    for (const key of ['a', 'b', 'c']) {
      s.enqueue({ key, bytes: bytes(10) });
      s.flush(0);
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

  test('an acknowledgement covering more than RELEASE_PER_CALL packets frees them over several calls, and none of them counts as trimmed unacknowledged', () => {
    const s = sender(64 * 1024 * 1024);
    s.setReceivers(['r']);
    const count = RELEASE_PER_CALL * 2 + 100;
    for (let i = 0; i < count; i++) {
      s.enqueue({ key: `k${i}`, bytes: bytes(10) });
      s.flush(0); // one packet each
    }
    expect(s.highestSeq).toBe(count);
    const full = s.bufferBytes;
    s.handleAck('r', count);
    expect(s.releaseBacklog).toBe(true);
    expect(s.bufferBytes).toBeGreaterThan(0);
    expect(s.bufferBytes).toBeLessThan(full);
    let calls = 1;
    while (s.releaseBacklog && calls < 10) {
      s.releaseMore();
      calls++;
    }
    expect(calls).toBe(3);
    expect(s.releaseBacklog).toBe(false);
    expect(s.bufferBytes).toBe(0);
    expect(s.inFlightBytes).toBe(0);
    expect(s.counters.trimmedUnacked).toBe(0);
  });

  test('a NACK for what its receiver has acknowledged since (a late copy) is not answered', () => {
    const s = sender();
    s.setReceivers(['x', 'y']);
    for (const key of ['a', 'b', 'c', 'd']) {
      s.enqueue({ key, bytes: bytes(10) });
      s.flush(0);
    }
    s.handleAck('x', 4);
    s.handleAck('y', 4); // everything released
    expect(s.firstRetainedSeq).toBe(5);
    expect(s.handleNack([[2, 3]], 10, 'x')).toEqual({ packets: [], goneBefore: undefined });
    expect(s.counters.staleNacks).toBe(1);
    // From a receiver that did not acknowledge it (or an unknown one) it is answered: gone.
    expect(s.handleNack([[2, 3]], 10, 'z').goneBefore).toBe(5);
    expect(s.handleNack([[2, 3]], 10).goneBefore).toBe(5);
  });

  test('a receiver added later is not counted as having acknowledged what was trimmed before it', () => {
    const s = sender(1024);
    s.setReceivers(['x']);
    for (let i = 0; i < 20; i++) {
      s.enqueue({ key: `k${i}`, bytes: bytes(200) });
      s.flush(0);
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

describe('ChannelSender: send window', () => {
  test('holds deltas beyond the window and sends them, in order, as acknowledgements release packets', () => {
    const s = windowed();
    enqueueMany(s, 10);
    const first = s.flush(0);
    // Two packets of 1,004 bytes fit in 3,000; a third would not.
    expect(first.map((p) => p.seq)).toEqual([1, 2]);
    expect(s.inFlightBytes).toBe(2008);
    expect(s.pendingCount).toBe(8);
    expect(s.counters.windowHolds).toBe(1);
    // Nothing acknowledged: another flush sends nothing.
    expect(s.flush(10)).toEqual([]);
    s.handleAck('r', 1);
    expect(s.inFlightBytes).toBe(1004);
    expect(s.flush(20).map((p) => p.seq)).toEqual([3]);
    s.handleAck('r', 3);
    expect(s.flush(30).map((p) => p.seq)).toEqual([4, 5]);
    // Everything goes out eventually, one sequence number per delta, none lost or doubled.
    let seq = 5;
    while (s.pendingCount > 0) {
      s.handleAck('r', seq);
      seq = Math.max(seq, ...s.flush(40).map((p) => p.seq));
    }
    expect(seq).toBe(10);
    expect(s.counters.windowOverrides).toBe(0);
  });

  test('a queued delta is replaced by a newer one of the same key, in its place', () => {
    const s = windowed();
    enqueueMany(s, 4, 1);
    s.flush(0); // k0, k1 sent; k2, k3 held
    s.enqueue({ key: 'k3', bytes: bytes(1000, 7) });
    s.enqueue({ key: 'k2', bytes: bytes(1000, 8) });
    s.enqueue({ key: 'k9', bytes: bytes(1000, 9) });
    expect(s.pendingCount).toBe(3);
    expect(s.counters.conflated).toBe(2);
    s.handleAck('r', 2);
    const sent = [...s.flush(10)];
    s.handleAck('r', 4);
    sent.push(...s.flush(20));
    expect(fills(sent)).toEqual([[8], [7], [9]]);
  });

  test('with nothing in flight one packet always goes, even one larger than the window', () => {
    const s = sender(64 * 1024, 500);
    s.setReceivers(['r']);
    s.enqueue({ key: 'big', bytes: bytes(1000) });
    s.enqueue({ key: 'next', bytes: bytes(10) });
    expect(s.flush(0).map((p) => p.deltas.length)).toEqual([1]);
    expect(s.pendingCount).toBe(1);
    s.handleAck('r', 1);
    expect(s.flush(1).map((p) => p.seq)).toEqual([2]);
  });

  test('a hold with no acknowledgement progress gives way after holdStallMs', () => {
    const s = windowed();
    enqueueMany(s, 6);
    s.flush(1000);
    expect(s.holdDeadline).toBe(1500);
    s.handleAck('r', 1); // progress: the stall clock restarts at the next flush
    expect(s.flush(1400).map((p) => p.seq)).toEqual([3]);
    expect(s.holdDeadline).toBe(1900);
    expect(s.flush(1899)).toEqual([]);
    // The receiver stopped answering: one more window goes, then another after each stall.
    expect(s.flush(1900).map((p) => p.seq)).toEqual([4, 5]);
    expect(s.inFlightBytes).toBe(4016);
    expect(s.holdDeadline).toBe(2400);
    expect(s.counters.windowOverrides).toBe(1);
    expect(s.flush(2399)).toEqual([]);
    expect(s.flush(2400).map((p) => p.seq)).toEqual([6]);
    expect(s.pendingCount).toBe(0);
    expect(s.holdDeadline).toBe(Infinity);
    expect(s.counters.windowOverrides).toBe(2);
  });

  test('a queue larger than the retransmit buffer bound sends its oldest excess (its memory stays bounded)', () => {
    const s = windowed(4500);
    enqueueMany(s, 4);
    expect(s.flush(0)).toHaveLength(2);
    enqueueMany(s, 4, 2); // k0…k3 again: k2, k3 replaced in place, k0, k1 queued anew
    expect(s.pendingCount).toBe(4);
    s.enqueue({ key: 'k4', bytes: bytes(1000, 3) }); // 5,000 queued bytes > 4,500
    const sent = s.flush(1);
    // Only the oldest delta goes past the window: 4,000 queued bytes are within the bound.
    expect(sent).toHaveLength(1);
    expect(s.pendingCount).toBe(4);
    expect(s.counters.windowOverrides).toBe(1);
    // The buffer bound then trims the oldest unacknowledged packets, as before.
    expect(s.bufferBytes).toBeLessThanOrEqual(4500);
    // Acknowledgements take the rest through the window as usual.
    s.handleAck('r', 3);
    expect(s.flush(2)).toHaveLength(2);
  });

  test('with no receiver to wait for there is no window', () => {
    const s = sender(64 * 1024, 3000);
    enqueueMany(s, 6);
    expect(s.flush(0)).toHaveLength(6);
  });

  test('asks for acknowledgement once half the window is in flight, and again only after every receiver answered the last ask', () => {
    // A 4,000-byte window: 1,000-byte deltas are 2 in flight below half, the third reaches it.
    const s = sender(64 * 1024, 4000);
    s.setReceivers(['r', 'q']);
    s.enqueue({ key: 'a', bytes: bytes(1000) });
    s.flush(0);
    expect(s.askAck()).toBe(false); // ~1,000 in flight
    s.enqueue({ key: 'b', bytes: bytes(1000) });
    s.flush(0);
    expect(s.askAck()).toBe(true); // half the window: seq 2 carries the ask
    s.enqueue({ key: 'c', bytes: bytes(1000) });
    s.flush(0);
    expect(s.askAck()).toBe(false); // the ask through seq 2 is unanswered
    s.handleAck('r', 2);
    expect(s.askAck()).toBe(false); // 'q' has not answered it yet
    s.handleAck('q', 1);
    expect(s.askAck()).toBe(false);
    s.handleAck('q', 2);
    // Answered by both; seq 3 is still in flight, under half the window.
    expect(s.askAck()).toBe(false);
    s.enqueue({ key: 'd', bytes: bytes(1000) });
    s.flush(0);
    expect(s.askAck()).toBe(true); // seqs 3 and 4 in flight: half again
  });

  test('asks for no acknowledgement without a window or without receivers', () => {
    const unwindowed = sender(64 * 1024, 0);
    unwindowed.setReceivers(['r']);
    enqueueMany(unwindowed, 10);
    unwindowed.flush(0);
    expect(unwindowed.askAck()).toBe(false);
    const alone = sender(64 * 1024, 4000);
    enqueueMany(alone, 4);
    alone.flush(0);
    expect(alone.askAck()).toBe(false);
  });
});
