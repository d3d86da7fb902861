/**
 * ChannelReceiver on its own: gaps, acknowledgements and resync marks, driven by sequence
 * numbers and virtual `now` (the network scenarios are in replication.sim.test.ts).
 */
import { ChannelReceiver, DEFAULT_CHANNEL_RECEIVER_CONFIG } from '../src/core/channel-receiver';
import { SeededRandom } from '../src/store/random';

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

  describe('notes for the sender', () => {
    function noted(config: Partial<typeof DEFAULT_CHANNEL_RECEIVER_CONFIG> = {}): ChannelReceiver<string> {
      return new ChannelReceiver<string>({ ...DEFAULT_CHANNEL_RECEIVER_CONFIG, ...config }, false, new SeededRandom(1));
    }

    test('ride on every acknowledgement that covers them, and on none below them', () => {
      const r = noted();
      r.handleData(1, false, T0);
      r.handleData(3, true, T0);
      r.note(3, 'three');
      r.note(1, 'one');
      let poll = r.poll(T0);
      expect([poll.ack, poll.notes, poll.notesCompleteAbove]).toEqual([1, ['one'], 0]);
      r.handleData(2, true, T0 + 1);
      poll = r.poll(T0 + 1);
      expect([poll.ack, poll.notes]).toEqual([3, ['one', 'three']]);
      // The acknowledgement was lost: the sender's heartbeat asks for another, with the same notes.
      r.handleHighest(3, T0 + 250);
      expect(r.poll(T0 + 250).notes).toEqual(['one', 'three']);
    });

    test('are dropped noteRetentionMs after the first acknowledgement that carried them, and the notes are then complete only above them', () => {
      const r = noted({ noteRetentionMs: 1000 });
      r.handleData(1, true, T0);
      r.note(1, 'one');
      expect(r.poll(T0).notes).toEqual(['one']);
      r.handleData(2, true, T0 + 999);
      r.note(2, 'two');
      expect(r.poll(T0 + 999).notes).toEqual(['one', 'two']);
      r.handleHighest(2, T0 + 1000);
      const poll = r.poll(T0 + 1000);
      expect([poll.ack, poll.notes, poll.notesCompleteAbove]).toEqual([2, ['two'], 1]);
      expect(r.noteCount).toBe(1);
    });

    test('a note not yet carried by an acknowledgement is kept however long it waits', () => {
      const r = noted({ noteRetentionMs: 1000 });
      r.handleData(2, false, T0);
      r.note(2, 'two'); // 1 is missing: no acknowledgement covers 2
      expect(r.poll(T0 + 5000).notes).toEqual([]);
      r.handleData(1, true, T0 + 5000);
      const poll = r.poll(T0 + 5000);
      expect([poll.ack, poll.notes, poll.notesCompleteAbove]).toEqual([2, ['two'], 0]);
    });

    test('beyond maxNotes the oldest is dropped, and the notes are complete only above it', () => {
      const r = noted({ maxNotes: 2 });
      for (let seq = 1; seq <= 3; seq++) {
        r.handleData(seq, true, T0);
        r.note(seq, `n${seq}`);
      }
      expect(r.noteCount).toBe(2);
      const poll = r.poll(T0);
      expect([poll.ack, poll.notes, poll.notesCompleteAbove]).toEqual([3, ['n2', 'n3'], 1]);
    });

    test('what a resync covered was never seen as packets: the notes are complete only above it', () => {
      const r = noted();
      r.handleData(1, true, T0);
      r.handleData(5, true, T0);
      r.note(5, 'five');
      r.resyncStarted();
      r.resynced(7);
      const poll = r.poll(T0 + 1);
      expect([poll.ack, poll.notes, poll.notesCompleteAbove]).toEqual([7, ['five'], 7]);
    });
  });
});
