/** DeltaApply: which data packets are admitted, and what their deltas do to the store. */
import { DeltaApply, toRemoteChange } from '../src/core/delta-apply';
import { FragmentReassembly } from '../src/core/fragment-reassembly';
import type { MemberView } from '../src/core/membership';
import { Placement } from '../src/core/placement';
import { BuzHash } from '../src/store/buzhash';
import { HybridClock } from '../src/store/hybrid-clock';
import { DEFAULT_STORE_CONFIG, findStoredPart, SessionStore, sessionHeader, type StoredSession } from '../src/store/store';
import { decodeDelta, encodeDelta, type Change, type DecodedDelta, type ReceivedData } from '../src/wire/delta-codec';

const NOW = 1_700_000_000_000;

function setup(transport: 'unicast' | 'multicast' = 'unicast') {
  const hasher = new BuzHash('delta-apply-tests');
  const store = new SessionStore({ ...DEFAULT_STORE_CONFIG, nodeId: 'a', partitions: 16 }, hasher, new HybridClock());
  const placement = new Placement(hasher, 16, 1);
  placement.setMembers(['a', 'b', 'c']);
  const members = new Map<string, MemberView>([['b', { nodeId: 'b', advertiseAddress: 'b:1', state: 'alive', incarnation: 5n, lastHeardAt: NOW, isSelf: false, role: 'edge' }]]);
  const reassembly = new FragmentReassembly({ maxBytes: 4096, timeoutMs: 1000 });
  const apply = new DeltaApply({ nodeId: 'a', transport }, store, placement, { member: (id) => members.get(id), isLive: (id) => members.get(id)?.state === 'alive' || members.get(id)?.state === 'suspect' }, reassembly);
  return { store, placement, apply, reassembly };
}

/** A session as its writer `owner` stamps deltas. */
function header(id: string, owner: string, epoch = 1): StoredSession {
  return sessionHeader(id, owner, epoch, 60_000, NOW + 60_000);
}

function data(deltas: DecodedDelta[], extra: Partial<ReceivedData> = {}): ReceivedData {
  return { targetNodeId: 'a', seq: 1n, deltas, fragment: undefined, ackRequested: false, retransmit: false, ...extra };
}

/** A delta as the sender (session.owner) writes it and this node reads it. */
function delta(session: StoredSession, change: Change): DecodedDelta {
  return decodeDelta(encodeDelta(session, change, session.owner, NOW - 5), session.owner)!;
}

const PUT: Change = { kind: 'put', name: 'cart', value: Buffer.from('v'), version: 10, writer: 'b', epoch: 1 };

test('admit refuses misrouted, unknown, unsequenced and stale packets before any receiver exists', () => {
  const { apply } = setup();
  expect(apply.admit('b', 5n, data([]))).toEqual({ channel: 'a', seq: 1 });
  expect(apply.admit('b', 5n, data([], { targetNodeId: 'c' }))).toEqual({ dropped: 'misrouted' });
  expect(apply.admit('b', 5n, data([], { targetNodeId: '' }))).toEqual({ dropped: 'misrouted' });
  expect(apply.admit('x', 5n, data([]))).toEqual({ dropped: 'unknown_sender' });
  expect(apply.admit('b', 5n, data([], { seq: 0n }))).toEqual({ dropped: 'malformed' });
  expect(apply.admit('b', 4n, data([]))).toEqual({ dropped: 'stale_incarnation' });
  expect(setup('multicast').apply.admit('b', 5n, data([], { targetNodeId: '' }))).toEqual({ channel: '', seq: 1 });
});

test('a packet applies its deltas and reports them with their lag', () => {
  const { store, apply } = setup();
  const outcome = apply.applyPacket('b', 5n, data([delta(header('s1', 'b'), PUT), delta(header('s1', 'b'), { kind: 'touch' })]), NOW);
  expect(outcome).toEqual({ applied: 2, ignored: 0, dropped: [], lagsMs: [5, 5], notes: [], tied: [], lacking: [], ownWritesLost: [], resyncSender: false });
  expect(findStoredPart(store.get('s1', NOW)!, 'cart')?.value?.toString('latin1')).toBe('v');
});

test('multicast: deltas of sessions this node neither owns, replicates nor holds are ignored', () => {
  const { store, placement, apply } = setup('multicast');
  let id = 0;
  while (placement.isSecondary('a', store.partitionOf(`m${id}`), 'b')) id++;
  const outcome = apply.applyPacket('b', 5n, data([delta(header(`m${id}`, 'b'), PUT)], { targetNodeId: '' }), NOW);
  expect(outcome.ignored).toBe(1);
  expect(store.get(`m${id}`, NOW)).toBeUndefined();
});

test('a write naming this node as owner, while a newer claim is known, yields a superseded note', () => {
  const { store, apply } = setup();
  store.put('s2', [{ name: 'cart', value: Buffer.from('old') }], 60_000, NOW);
  store.applyRemote('s2', { kind: 'claim' }, { owner: 'c', epoch: 3, expiresAt: NOW + 60_000, ttlMs: 60_000 }, NOW);
  const outcome = apply.applyPacket('b', 5n, data([delta(header('s2', 'a', 1), PUT)], { seq: 7n }), NOW);
  expect(outcome.notes).toEqual([{ seq: 7n, sessionId: 's2', ownerNodeId: 'c', epoch: 3n }]);
});

test("a write naming a gone owner, on a session this node's claim took over since, yields a superseded note", () => {
  const { store, apply } = setup();
  store.applyRemote('s4', toRemoteChange(PUT)!, { owner: 'x', epoch: 1, expiresAt: NOW + 60_000, ttlMs: 60_000 }, NOW);
  store.claim('s4', 'a', NOW);
  const outcome = apply.applyPacket('b', 5n, data([delta(header('s4', 'x', 1), { ...PUT, version: 11 })], { seq: 9n }), NOW);
  expect(outcome.notes).toEqual([{ seq: 9n, sessionId: 's4', ownerNodeId: 'a', epoch: 2n }]);
  // The claimed copy kept its part: the write's epoch is older.
  expect(findStoredPart(store.get('s4', NOW)!, 'cart')?.version).toBe(10);
  // Another node's write under the owner this node holds says nothing.
  const plain = apply.applyPacket('b', 5n, data([delta(header('s5', 'b', 1), PUT)], { seq: 10n }), NOW);
  expect(plain.notes).toEqual([]);
});

test('an owner writing at an epoch older than the claim this node holds gets a superseded note from any holder', () => {
  const { store, apply } = setup();
  // This node holds s6 as a secondary of b, then hears c's claim (a resume b could not be asked for).
  store.applyRemote('s6', toRemoteChange(PUT)!, { owner: 'b', epoch: 1, expiresAt: NOW + 60_000, ttlMs: 60_000 }, NOW);
  store.applyRemote('s6', { kind: 'claim' }, { owner: 'c', epoch: 2, expiresAt: NOW + 60_000, ttlMs: 60_000 }, NOW);
  const late = apply.applyPacket('b', 5n, data([delta(header('s6', 'b', 1), { ...PUT, version: 12 })], { seq: 11n }), NOW);
  expect(late.notes).toEqual([{ seq: 11n, sessionId: 's6', ownerNodeId: 'c', epoch: 2n }]);
  // The same write at the claimed epoch (sent again to the new owner's holders) is taken without a word.
  const resent = apply.applyPacket('b', 5n, data([delta(header('s6', 'c', 2), { ...PUT, version: 12, epoch: 2 })], { seq: 12n }), NOW);
  expect(resent.notes).toEqual([]);
  expect(findStoredPart(store.get('s6', NOW)!, 'cart')?.version).toBe(12);
});

// Two nodes made one session afresh at once (each looked it up before the other's copy
// arrived anywhere): both own it at epoch 1, and the higher node id owns it everywhere.
test('two owners at one epoch: the one the tie passes over gets a superseded note; a delta that wins it reports the copy it settled', () => {
  const { store, apply } = setup();
  const meta = (owner: string) => ({ owner, epoch: 1, expiresAt: NOW + 60_000, ttlMs: 60_000 });
  // This node holds s7 as c made it; b's write, as owner, would be acknowledged here and lost to c's copy.
  store.applyRemote('s7', toRemoteChange({ ...PUT, writer: 'c' })!, meta('c'), NOW);
  const passedOver = apply.applyPacket('b', 5n, data([delta(header('s7', 'b', 1), { ...PUT, name: 'login', version: 11 })], { seq: 13n }), NOW);
  expect(passedOver.notes).toEqual([{ seq: 13n, sessionId: 's7', ownerNodeId: 'c', epoch: 1n }]);
  expect(passedOver.tied).toEqual([]);
  // The part is kept here all the same (parts merge by version).
  expect(findStoredPart(store.get('s7', NOW)!, 'login')?.version).toBe(11);
  // s8: b's copy came first, then c's delta wins the tie; this copy holds what b wrote, which c may lack.
  store.applyRemote('s8', toRemoteChange(PUT)!, meta('b'), NOW);
  const won = apply.applyPacket('b', 5n, data([delta(header('s8', 'c', 1), { ...PUT, name: 'login', version: 11, writer: 'c' })], { seq: 14n }), NOW);
  expect(won.notes).toEqual([]);
  expect(won.tied).toEqual([{ sessionId: 's8', loser: 'b' }]);
  expect(store.ownerOf('s8')).toMatchObject({ owner: 'c', epoch: 1 });
  // Later deltas of the winner settle nothing more.
  const after = apply.applyPacket('b', 5n, data([delta(header('s8', 'c', 1), { ...PUT, name: 'login', version: 12, writer: 'c' })], { seq: 15n }), NOW);
  expect(after).toMatchObject({ notes: [], tied: [] });
});

// A claim names every part the claimed copy holds. A holder whose copy has parts the claim
// lacks (written after the claimant asked, or held by nodes it did not ask) reports them,
// for the new owner; parts the claim names, or written since at its epoch, are not.
test('a claim that lacks parts this copy holds reports them for the new owner', () => {
  const { store, apply } = setup();
  const meta = (owner: string, epoch: number) => ({ owner, epoch, expiresAt: NOW + 60_000, ttlMs: 60_000 });
  store.applyRemote('s9', toRemoteChange({ ...PUT, name: 'login', writer: 'b' })!, meta('b', 1), NOW);
  store.applyRemote('s9', toRemoteChange({ ...PUT, name: 'basket', version: 11, writer: 'b' })!, meta('b', 1), NOW);
  const claim = apply.applyPacket('b', 5n, data([delta(header('s9', 'c', 2), { kind: 'claim', parts: ['login'] })], { seq: 16n }), NOW);
  expect(claim).toMatchObject({ notes: [], tied: [], lacking: [{ sessionId: 's9', names: ['basket'] }] });
  expect(store.ownerOf('s9')).toMatchObject({ owner: 'c', epoch: 2 });
  // Once the claim's parts and a later write at its epoch are here, nothing is lacking.
  apply.applyPacket('b', 5n, data([delta(header('s9', 'c', 2), { ...PUT, name: 'basket', version: 12, writer: 'c', epoch: 2 })], { seq: 17n }), NOW);
  const again = apply.applyPacket('b', 5n, data([delta(header('s9', 'c', 2), { kind: 'claim', parts: ['login'] })], { seq: 18n }), NOW);
  expect(again.lacking).toEqual([]);
  // A claim naming every part reports nothing.
  store.applyRemote('s10', toRemoteChange(PUT)!, meta('b', 1), NOW);
  expect(apply.applyPacket('b', 5n, data([delta(header('s10', 'c', 2), { kind: 'claim', parts: ['cart'] })], { seq: 19n }), NOW).lacking).toEqual([]);
});

// The old owner, not having heard of a claim, writes: a part the claimed copy also has loses
// to it; a part it lacks is kept here, and reported for the new owner (an asynchronous write
// has no writer waiting to send it again).
test('a late write kept because the claimed copy has no newer part is reported for the new owner; one that loses is not', () => {
  const { store, apply } = setup();
  const meta = (owner: string, epoch: number) => ({ owner, epoch, expiresAt: NOW + 60_000, ttlMs: 60_000 });
  store.applyRemote('s11', toRemoteChange(PUT)!, meta('b', 1), NOW);
  store.applyRemote('s11', { kind: 'claim' }, meta('c', 2), NOW);
  store.applyRemote('s11', toRemoteChange({ ...PUT, writer: 'c', epoch: 2 })!, meta('c', 2), NOW);
  const lost = apply.applyPacket('b', 5n, data([delta(header('s11', 'b', 1), { ...PUT, version: 20 })], { seq: 20n }), NOW);
  expect(lost).toMatchObject({ notes: [{ seq: 20n, sessionId: 's11', ownerNodeId: 'c', epoch: 2n }], lacking: [] });
  const kept = apply.applyPacket('b', 5n, data([delta(header('s11', 'b', 1), { ...PUT, name: 'note', version: 21 })], { seq: 21n }), NOW);
  expect(kept).toMatchObject({ notes: [{ seq: 21n, sessionId: 's11', ownerNodeId: 'c', epoch: 2n }], lacking: [{ sessionId: 's11', names: ['note'] }] });
});

// This node wrote a part; a claim made without that write re-stamps the older value with a
// higher epoch, which wins here: the write's ticket must send it again (its acknowledgements
// would cover the claim's value, the key's latest in a channel's queue).
test('a claim that re-stamps an older value over a write of this node reports the write lost', () => {
  const { store, apply } = setup();
  store.put('s12', [{ name: 'cart', value: Buffer.from('mine') }], 60_000, NOW);
  const mine = findStoredPart(store.get('s12', NOW)!, 'cart')!;
  const older = apply.applyPacket('b', 5n, data([delta(header('s12', 'c', 2), { ...PUT, version: mine.version - 1, writer: 'b', epoch: 2 })], { seq: 22n }), NOW);
  expect(older.ownWritesLost).toEqual(['s12']);
  expect(findStoredPart(store.get('s12', NOW)!, 'cart')!.value!.toString('latin1')).toBe('v');
  // A newer write of another node over this node's part is no loss of this node's write.
  store.put('s13', [{ name: 'cart', value: Buffer.from('mine') }], 60_000, NOW);
  const newer = apply.applyPacket('b', 5n, data([delta(header('s13', 'a', 1), { ...PUT, version: findStoredPart(store.get('s13', NOW)!, 'cart')!.version + 1 })], { seq: 23n }), NOW);
  expect(newer.ownWritesLost).toEqual([]);
});

test('fragments complete into a delta; one past the reassembly budget asks for a resync of the sender', () => {
  const { store, apply, reassembly } = setup();
  const bytes = encodeDelta(header('s3', 'b'), PUT, 'b', NOW);
  const half = Math.ceil(bytes.length / 2);
  const chunks = [Buffer.from(bytes.subarray(0, half)), Buffer.from(bytes.subarray(half))];
  const first = apply.applyPacket('b', 5n, data([], { fragment: { deltaId: 1n, index: 0, count: 2, chunk: chunks[0]! } }), NOW);
  expect(first.applied).toBe(0);
  expect(reassembly.bytesHeld()).toBeGreaterThan(0);
  const second = apply.applyPacket('b', 5n, data([], { seq: 2n, fragment: { deltaId: 1n, index: 1, count: 2, chunk: chunks[1]! } }), NOW);
  expect(second.applied).toBe(1);
  expect(store.get('s3', NOW)).toBeDefined();
  const overflow = apply.applyPacket('b', 5n, data([], { seq: 3n, fragment: { deltaId: 2n, index: 0, count: 2, chunk: Buffer.alloc(5000) } }), NOW);
  expect(overflow).toMatchObject({ dropped: ['reassembly_overflow'], resyncSender: true });
});
