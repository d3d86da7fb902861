/** FanOut: who a session's changes go to, on which channels, and what a call reports it queued. */
import { ChannelTable } from '../src/core/channel-table';
import { DEFAULT_CHANNEL_RECEIVER_CONFIG } from '../src/core/channel-receiver';
import { FanOut } from '../src/core/fan-out';
import { Placement } from '../src/core/placement';
import { BuzHash } from '../src/store/buzhash';
import { HybridClock } from '../src/store/hybrid-clock';
import { SeededRandom } from '../src/store/random';
import { DEFAULT_STORE_CONFIG, findStoredPart, SessionStore } from '../src/store/store';

const NOW = 1_700_000_000_000;
const NODES = ['a', 'b', 'c', 'd'];

function setup(
  transport: 'unicast' | 'multicast',
  self = 'a',
  masterOf: (partition: number) => string | undefined = () => undefined,
  isLive: (nodeId: string) => boolean = () => false,
  members: readonly string[] = NODES,
) {
  const hasher = new BuzHash('fan-out-tests');
  const store = new SessionStore({ ...DEFAULT_STORE_CONFIG, nodeId: self, partitions: 16 }, hasher, new HybridClock());
  const placement = new Placement(hasher, 16, 2);
  placement.setMembers([...members]);
  const channels = new ChannelTable(
    { nodeId: self, maxPayloadBytes: 1400, retransmitBufferBytes: 1 << 20, sendWindowBytes: 0, holdStallMs: 100, receiver: DEFAULT_CHANNEL_RECEIVER_CONFIG },
    new SeededRandom(1),
  );
  const fanOut = new FanOut({ nodeId: self, transport }, store, placement, channels, () => members.filter((n) => n !== self), undefined, masterOf, isLive);
  return { store, placement, channels, fanOut };
}

function put(store: SessionStore, id: string, value = 'v') {
  store.put(id, [{ name: 'cart', value: Buffer.from(value) }], 60_000, NOW);
  return store.get(id, NOW)!;
}

test('unicast: a local write goes to each secondary on its own channel, one wait per holder', () => {
  const { store, placement, channels, fanOut } = setup('unicast');
  const session = put(store, 's1');
  const secondaries = placement.secondaries(store.partitionOf('s1'), 'a');
  expect(secondaries.length).toBe(2);
  const change = { kind: 'put' as const, name: 'cart', value: Buffer.from('v'), version: 1 };
  const { underReplicated, write } = fanOut.write(session, [change, change], NOW);
  expect(underReplicated).toBe(false);
  expect(write!.owner).toBeUndefined();
  expect(write!.waits.map((w) => [w.nodeId, w.channel])).toEqual(secondaries.map((id) => [id, id]));
  expect(write!.deltas).toBe(2 * 2);
  expect([...fanOut.takeDirty()].sort()).toEqual([...secondaries].sort());
  expect(fanOut.takeDirty().size).toBe(0);
  // Both changes share a key: the channel conflates them to one queued delta.
  for (const id of secondaries) expect(channels.senders.get(id)!.pendingCount).toBe(1);
});

test('multicast: one group channel whatever the holders; deltas count once', () => {
  const { store, fanOut } = setup('multicast');
  const session = put(store, 's1');
  const { write } = fanOut.write(session, [{ kind: 'touch' }], NOW);
  expect(write!.waits.every((w) => w.channel === '')).toBe(true);
  expect(write!.deltas).toBe(1);
  expect([...fanOut.takeDirty()]).toEqual(['']);
});

test('a write on a session another member owns goes to that owner first and waits for it', () => {
  const { store, placement, fanOut } = setup('unicast');
  put(store, 's2');
  store.applyRemote('s2', { kind: 'claim' }, { owner: 'c', epoch: 2, expiresAt: NOW + 60_000, ttlMs: 60_000 }, NOW);
  const session = store.get('s2', NOW)!;
  const { underReplicated, write } = fanOut.write(session, [{ kind: 'touch' }], NOW);
  expect(underReplicated).toBe(false);
  expect(write!.owner).toBe('c');
  expect(write!.waits[0]!.nodeId).toBe('c');
  expect(write!.waits.map((w) => w.nodeId).slice(1)).toEqual(placement.secondaries(store.partitionOf('s2'), 'c').filter((id) => id !== 'a'));
});

test('a write on a session whose owner is gone waits for the partition master, which takes it over; none when this node is the master', () => {
  const masters = new Map<number, string>();
  const { store, placement, fanOut } = setup('unicast', 'a', (partition) => masters.get(partition));
  put(store, 's3');
  // The owner, x, is not a member: its sessions are orphaned.
  store.applyRemote('s3', { kind: 'claim' }, { owner: 'x', epoch: 2, expiresAt: NOW + 60_000, ttlMs: 60_000 }, NOW);
  const session = store.get('s3', NOW)!;
  const partition = store.partitionOf('s3');
  const holders = placement.secondaries(partition, 'x').filter((id) => id !== 'a');
  expect(fanOut.write(session, [{ kind: 'touch' }], NOW).write!.owner).toBeUndefined();
  masters.set(partition, holders[0]!);
  const { write } = fanOut.write(session, [{ kind: 'touch' }], NOW);
  expect(write!.owner).toBe(holders[0]);
  expect(write!.waits.map((w) => w.nodeId)).toEqual(holders);
  // A master the write would not reach is added to it.
  const outsider = NODES.find((n) => n !== 'a' && !holders.includes(n))!;
  masters.set(partition, outsider);
  const toOutsider = fanOut.write(session, [{ kind: 'touch' }], NOW).write!;
  expect(toOutsider.owner).toBe(outsider);
  expect(toOutsider.waits.map((w) => w.nodeId)).toEqual([outsider, ...holders]);
  masters.set(partition, 'a');
  expect(fanOut.write(session, [{ kind: 'touch' }], NOW).write!.owner).toBeUndefined();
});

// Membership calls x live, but the view placement follows does not list it yet (alive again
// after it was taken for dead, or just joined): a resume there made it the owner. The write
// must reach x and wait for it, not for a master that will not take a live node's session over.
test('a write on a session owned by a live node placement does not list goes to that owner and waits for it', () => {
  const live = new Set<string>();
  const { store, placement, fanOut } = setup('unicast', 'a', () => 'b', (nodeId) => live.has(nodeId));
  put(store, 's5');
  store.applyRemote('s5', { kind: 'claim' }, { owner: 'x', epoch: 2, expiresAt: NOW + 60_000, ttlMs: 60_000 }, NOW);
  const session = store.get('s5', NOW)!;
  const holders = placement.secondaries(store.partitionOf('s5'), 'x').filter((id) => id !== 'a');
  expect(fanOut.write(session, [{ kind: 'touch' }], NOW).write!.owner).toBe('b');
  live.add('x');
  const { write } = fanOut.write(session, [{ kind: 'touch' }], NOW);
  expect(write!.owner).toBe('x');
  expect(write!.waits.map((w) => w.nodeId)).toEqual(['x', ...holders]);
});

test('alone, a write is under-replicated and queued nowhere; later resendOwned queues the partition again', () => {
  const { store, placement, fanOut } = setup('unicast');
  placement.setMembers(['a']);
  const session = put(store, 's3');
  const result = fanOut.write(session, [{ kind: 'touch' }], NOW);
  expect(result).toEqual({ underReplicated: true, partition: store.partitionOf('s3'), write: undefined });
  placement.setMembers(NODES);
  expect(fanOut.resendOwned([store.partitionOf('s3')], NOW).deltas).toBe(2); // one part, two secondaries
  expect(fanOut.takeDirty().size).toBe(2);
});

test('a claim goes to the new secondaries and to the previous owner', () => {
  const { store, placement, fanOut } = setup('unicast');
  put(store, 's4');
  const partition = store.partitionOf('s4');
  const previous = NODES.find((n) => n !== 'a' && !placement.secondaries(partition, 'a').includes(n))!;
  const session = store.get('s4', NOW)!;
  // claim + one part, to two secondaries and the previous owner.
  expect(fanOut.claim(session, previous, NOW).deltas).toBe(2 * 3);
  expect(fanOut.takeDirty().has(previous)).toBe(true);
});

// The previous owner's secondaries vouch for its writes: holding the claim, they note the
// writes it makes before it hears of it (a resume that could not reach it).
test("a claim also goes to the previous owner's secondaries", () => {
  const members = ['a', 'b', 'c', 'd', 'e', 'f', 'g'];
  let live = true;
  const { store, placement, fanOut } = setup('unicast', 'a', undefined, () => live, members);
  let beyond = 0;
  for (let i = 0; i < 20; i++) {
    const id = `claimed-${i}`;
    put(store, id);
    const partition = store.partitionOf(id);
    for (const previous of members.filter((n) => n !== 'a')) {
      const before = new Set([...placement.secondaries(partition, 'a'), previous]);
      const expected = new Set([...before, ...placement.secondaries(partition, previous)].filter((n) => n !== 'a'));
      fanOut.claim(store.get(id, NOW)!, previous, NOW);
      expect([...fanOut.takeDirty()].sort()).toEqual([...expected].sort());
      if (expected.size > before.size) beyond++;
    }
  }
  expect(beyond).toBeGreaterThan(0);
  // A dead previous owner writes nothing more: its secondaries are not told.
  live = false;
  const partition = store.partitionOf('claimed-0');
  const previous = members.find((n) => n !== 'a' && placement.rank(n, partition) >= 0 && !placement.secondaries(partition, 'a').includes(n))!;
  fanOut.claim(store.get('claimed-0', NOW)!, previous, NOW);
  expect([...fanOut.takeDirty()].sort()).toEqual([...placement.secondaries(partition, 'a'), previous].filter((n) => n !== 'a').sort());
});

test('resendForwarded stamps unstamped parts with the session epoch and sends to the adopted owner', () => {
  const { store, fanOut } = setup('unicast');
  const version = findStoredPart(put(store, 's5'), 'cart')!.version + 1;
  fanOut.adoptOwner('s5', 'd', 5, NOW);
  expect(store.ownerOf('s5')).toMatchObject({ owner: 'd', epoch: 5 });
  const resent = fanOut.resendForwarded('s5', [{ kind: 'put', name: 'cart', value: Buffer.from('w'), version }], NOW)!;
  expect(resent.owner).toBe('d');
  expect(resent.changes).toEqual([{ kind: 'put', name: 'cart', value: Buffer.from('w'), version, epoch: 5 }]);
  expect(findStoredPart(store.get('s5', NOW)!, 'cart')?.value?.toString('latin1')).toBe('w');
  expect(fanOut.resendForwarded('missing', [], NOW)).toBeUndefined();
});

// Stamped with the newer epoch, an older write would beat what was written since everywhere.
test('resendForwarded leaves out a part written since (this copy holds a newer version of it)', () => {
  const { store, fanOut } = setup('unicast');
  const older = findStoredPart(put(store, 's6', 'first'), 'cart')!.version;
  put(store, 's6', 'second');
  fanOut.adoptOwner('s6', 'd', 5, NOW);
  fanOut.takeDirty();
  expect(fanOut.resendForwarded('s6', [{ kind: 'put', name: 'cart', value: Buffer.from('first'), version: older }], NOW)).toBeUndefined();
  expect(findStoredPart(store.get('s6', NOW)!, 'cart')?.value?.toString('latin1')).toBe('second');
  expect(fanOut.takeDirty().size).toBe(0);
  const both = fanOut.resendForwarded('s6', [
    { kind: 'put', name: 'cart', value: Buffer.from('first'), version: older },
    { kind: 'put', name: 'note', value: Buffer.from('n'), version: older },
  ], NOW)!;
  expect(both.changes.map((c) => (c.kind === 'put' ? c.name : c.kind))).toEqual(['note']);
});

test('resendForwarded also sends to the member it is asked to (the holder whose word the write waits for), though it holds the session no more', () => {
  const { store, placement, fanOut } = setup('unicast');
  const version = findStoredPart(put(store, 's7'), 'cart')!.version + 1;
  const partition = store.partitionOf('s7');
  const outside = NODES.find((n) => n !== 'a' && !placement.secondaries(partition, 'a').includes(n))!;
  const write = [{ kind: 'put' as const, name: 'cart', value: Buffer.from('w'), version }];
  const resent = fanOut.resendForwarded('s7', write, NOW, outside)!;
  expect(resent.owner).toBeUndefined();
  expect(resent.waits.map((w) => w.nodeId).sort()).toEqual([...placement.secondaries(partition, 'a').filter((n) => n !== 'a'), outside].sort());
  expect(fanOut.resendForwarded('s7', write, NOW)!.waits.map((w) => w.nodeId)).not.toContain(outside);
});

// Just after a long split heals, this node's view does not place the owner a holder named yet.
test('resendForwarded of a write no holder can be reached for comes back with no waits (its ticket counts nobody), its copy stamped', () => {
  const { store, placement, fanOut } = setup('unicast', 'a', () => undefined, () => false, ['a']);
  const version = findStoredPart(put(store, 's8'), 'cart')!.version + 1;
  expect(placement.secondaries(store.partitionOf('s8'), 'z').filter((n) => n !== 'a')).toEqual([]);
  fanOut.adoptOwner('s8', 'z', 5, NOW);
  const resent = fanOut.resendForwarded('s8', [{ kind: 'put', name: 'cart', value: Buffer.from('w'), version }], NOW)!;
  expect(resent.waits).toEqual([]);
  expect(resent.deltas).toBe(0);
  expect(findStoredPart(store.get('s8', NOW)!, 'cart')).toMatchObject({ epoch: 5, version });
});

test('holdsWrite: a copy holds a write while its part is at the write version or newer, not once an older value replaced it', () => {
  const { store, fanOut } = setup('unicast');
  const session = put(store, 's1', 'mine');
  const mine = findStoredPart(session, 'cart')!;
  const write = [{ kind: 'touch' as const }, { kind: 'put' as const, name: 'cart', value: Buffer.from('mine'), version: mine.version }];
  expect(fanOut.holdsWrite(session, write)).toBe(true);
  expect(fanOut.holdsWrite(session, [{ kind: 'delete_part', name: 'cart', version: mine.version - 1 }])).toBe(true);
  expect(fanOut.holdsWrite(session, [{ kind: 'delete_part', name: 'basket', version: 1 }])).toBe(false);
  // A copy claimed at epoch 3 elsewhere re-stamps the older value: it beats this node's write.
  const meta = { owner: 'b', epoch: 3, expiresAt: NOW + 60_000, ttlMs: 60_000 };
  store.applyRemote('s1', { kind: 'put', name: 'cart', value: Buffer.from('older'), version: mine.version - 1, writer: 'c', epoch: 3 }, meta, NOW);
  expect(fanOut.holdsWrite(store.get('s1', NOW)!, write)).toBe(false);
});
