/**
 * ChannelReceiver on its own: gaps, acknowledgements and resync marks, driven by sequence
 * numbers and virtual `now` (the network scenarios are in replication.sim.test.ts).
 */
import { ChannelReceiver, DEFAULT_CHANNEL_RECEIVER_CONFIG } from '../src/channel-receiver';
import { SeededRandom } from '../src/random';

const T0 = 1_700_000_000_000;

function receiver(): ChannelReceiver {
  return new ChannelReceiver(DEFAULT_CHANNEL_RECEIVER_CONFIG, false, new SeededRandom(1));
}

describe('ChannelReceiver', () => {
  test('a heartbeat naming the channel is answered with an acknowledgement (a lost one is repaired)', () => {
    const r = receiver();
    r.handleData(1, true, T0);
    expect(r.poll(T0).ack).toBe(1); // sent, and lost on the way
    expect(r.poll(T0 + 100).ack).toBeUndefined(); // nothing new arrives: no second one by itself
    r.handleHighest(1, T0 + 250); // the sender's heartbeat still names the channel
    expect(r.nextDeadline()).toBe(T0 + 250);
    expect(r.poll(T0 + 250).ack).toBe(1);
  });

  test('a heartbeat before anything arrived schedules no acknowledgement of nothing', () => {
    const r = receiver();
    r.handleHighest(3, T0);
    const poll = r.poll(T0 + DEFAULT_CHANNEL_RECEIVER_CONFIG.reorderAllowanceMs);
    expect(poll.ack).toBeUndefined();
    expect(poll.nack).toEqual([[1, 3]]);
  });

  test('resynced(upTo) keeps the part of a gap above upTo', () => {
    const r = receiver();
    r.handleData(1, false, T0);
    r.handleData(10, false, T0); // gap 2-9
    r.resynced(5);
    expect(r.cumulative).toBe(5);
    expect(r.missing).toBe(4); // 6-9 still missing
    expect(r.poll(T0 + 100).nack).toEqual([[6, 9]]);
  });

  test('requestResync() asks for a resync at once', () => {
    const r = receiver();
    r.handleData(1, false, T0);
    r.requestResync();
    expect(r.nextDeadline()).toBe(0);
    expect(r.poll(T0).resync).toBe(true);
    r.resynced(1);
    expect(r.poll(T0).resync).toBe(false);
  });

  test('while a resync runs the receiver neither asks again nor acknowledges past its gap; a failed one is asked again later', () => {
    const r = receiver();
    r.handleData(1, false, T0);
    r.handleData(5, false, T0); // gap 2-4
    r.requestResync();
    expect(r.poll(T0).resync).toBe(true);
    r.resyncStarted();
    expect(r.poll(T0 + 1).resync).toBe(false);
    expect(r.cumulative).toBe(1); // an acknowledgement must mean the data is here
    r.resyncFailed(T0 + 1000);
    expect(r.nextDeadline()).toBeLessThanOrEqual(T0 + 1000);
    expect(r.poll(T0 + 999).resync).toBe(false);
    expect(r.poll(T0 + 1000).resync).toBe(true);
    r.resyncStarted();
    r.resynced(5);
    expect(r.cumulative).toBe(5);
    expect(r.poll(T0 + 1001).resync).toBe(false);
  });

  test('a gap given up on while a resync ran, above what that resync covers, gets a resync of its own', () => {
    const r = receiver();
    r.handleData(1, false, T0);
    r.handleData(5, false, T0); // gap 2-4
    r.requestResync();
    expect(r.poll(T0).resync).toBe(true);
    r.resyncStarted(); // covers up to 5, the highest seen now
    r.handleData(9, false, T0); // gap 6-8, above the resync's mark
    // Every NACK for 6-8 is lost: the gap exhausts its attempts while the resync runs.
    let now = T0;
    for (let i = 0; i < 100 && r.nextDeadline() !== Infinity; i++) {
      now = Math.max(now, r.nextDeadline());
      r.poll(now);
    }
    expect(r.nextDeadline()).toBe(Infinity); // parked until the resync ends
    r.resynced(5);
    expect(r.cumulative).toBe(5);
    expect(r.missing).toBe(3); // 6-8
    // Nothing else will repair 6-8 (the sender may no longer hold them): resync again.
    expect(r.nextDeadline()).toBeLessThanOrEqual(now);
    expect(r.poll(now).resync).toBe(true);
  });
});
