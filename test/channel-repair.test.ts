/** ChannelRepair and Outbox: NACKs answered, receivers polled into replies and resyncs, timer entries kept. */
import { ChannelRepair, REASSEMBLY_TIMER } from '../src/core/channel-repair';
import { DEFAULT_CHANNEL_RECEIVER_CONFIG } from '../src/core/channel-receiver';
import { ChannelTable, receiverKey } from '../src/core/channel-table';
import { FragmentReassembly } from '../src/core/fragment-reassembly';
import type { MemberView } from '../src/core/membership';
import { newEngineStats, Outbox } from '../src/core/outbox';
import { TimerTable } from '../src/core/timer-table';
import { Datagram } from '../src/gen/baton/v1/wire';
import { SeededRandom } from '../src/store/random';

function setup() {
  const stats = newEngineStats();
  const outbox = new Outbox('a', stats);
  const channels = new ChannelTable(
    { nodeId: 'a', maxPayloadBytes: 1400, retransmitBufferBytes: 1 << 20, sendWindowBytes: 0, holdStallMs: 100, receiver: { ...DEFAULT_CHANNEL_RECEIVER_CONFIG, maxNackAttempts: 1 } },
    new SeededRandom(3),
  );
  const timers = new TimerTable();
  const reassembly = new FragmentReassembly({ maxBytes: 1 << 16, timeoutMs: 1000 });
  const members = new Map<string, MemberView>();
  const known = (nodeId: string) => members.set(nodeId, { nodeId, advertiseAddress: `${nodeId}:7401`, state: 'alive', incarnation: 1n, lastHeardAt: 0, isSelf: false, role: 'edge' });
  const repair = new ChannelRepair({ nodeId: 'a', incarnation: 9n, maxPayloadBytes: 1400 }, channels, timers, reassembly, { member: (id) => members.get(id) }, outbox, stats);
  return { stats, outbox, channels, timers, reassembly, known, repair };
}

const bodies = (outbox: Outbox) => outbox.take().map(({ to, payload }) => [to, Datagram.decode(payload).body!.$case]);

test('the outbox counts every datagram by type and bytes', () => {
  const { stats, outbox } = setup();
  const payload = outbox.encode({ $case: 'leave', leave: {} });
  outbox.push('b:7401', payload, 'leave');
  expect(stats.datagramsSent.leave).toBe(1);
  expect(stats.bytesSent).toBe(payload.length);
  expect(outbox.take()).toEqual([{ to: 'b:7401', payload }]);
  expect(outbox.take()).toEqual([]);
});

test('a NACK of a channel never used is answered with gone; stale and misrouted NACKs are refused', () => {
  const { stats, outbox, repair } = setup();
  expect(repair.nack('b', 9n, 'b', [[1, 2]], 'b:7401', 0)).toBeUndefined();
  expect(bodies(outbox)).toEqual([['b:7401', 'gone']]);
  expect(repair.nack('b', 8n, 'b', [[1, 2]], 'b:7401', 0)).toBe('stale_incarnation');
  expect(repair.nack('b', 9n, 'c', [[1, 2]], 'b:7401', 0)).toBe('misrouted');
  expect(stats.nacksReceived).toBe(3);
});

test('a NACK of sent packets is answered with retransmissions', () => {
  const { stats, outbox, channels, known, repair } = setup();
  known('b');
  const sender = channels.sender('b', () => ['b']);
  sender.enqueue({ key: 'k', bytes: new Uint8Array(100) });
  for (const packet of sender.flush(0)) repair.sendData('b', packet, false);
  expect(bodies(outbox)).toEqual([['b:7401', 'data']]);
  repair.nack('b', 9n, 'b', [[1, 1]], 'b:7401', 1000);
  expect(bodies(outbox)).toEqual([['b:7401', 'data']]);
  expect(stats.retransmissions).toBe(1);
});

test('a receiver has a timer entry only once its sender address is known, and its poll NACKs the gap', () => {
  const { outbox, channels, timers, known, repair } = setup();
  const key = receiverKey('b', 1n, 'a');
  repair.highest('b', 1n, 'a', 3, 0);
  expect(timers.get('receive ' + key)).toBe(Infinity);
  known('b');
  repair.refreshAll();
  const at = timers.get('receive ' + key);
  expect(at).toBeLessThan(Infinity);
  expect(repair.poll(key, channels.receivers.get(key)!, at, () => false)).toBeUndefined();
  expect(bodies(outbox)).toContainEqual(['b:7401', 'nack']);
});

test('a receiver asked to resync returns one resync (unless already requested), and retire drops it with its timer and partial deltas', () => {
  const { channels, timers, reassembly, known, repair } = setup();
  known('b');
  const key = receiverKey('b', 1n, 'a');
  const receiver = repair.receiverFor(key, 'b', 1n, 'a');
  receiver.handleData(1, false, 0);
  repair.resyncChannelsOf('b', 1n);
  const at = timers.get('receive ' + key);
  expect(repair.poll(key, receiver, at, () => true)).toBeUndefined();
  expect(repair.poll(key, receiver, at, () => false)).toEqual({ peerNodeId: 'b', peerAddress: 'b:7401', channels: [{ key, upTo: 1 }] });
  reassembly.add('b', 1n, { deltaId: 1, index: 0, count: 2, chunk: new Uint8Array(8) }, 0);
  repair.retire('b', undefined);
  expect(channels.receivers.has(key)).toBe(false);
  expect(timers.get('receive ' + key)).toBe(Infinity);
  expect(reassembly.bytesHeld()).toBe(0);
  expect(timers.get(REASSEMBLY_TIMER)).toBe(Infinity);
});
