import { MAX_FREE_SLABS } from '../src/store/value-slabs';
import { BuzHash } from '../src/store/buzhash';
import { InvalidArgumentError, PreconditionFailedError, ResourceExhaustedError } from '../src/wire/errors';
import { HybridClock, versionTimeMs } from '../src/store/hybrid-clock';
import { SeededRandom } from '../src/store/random';
import {
  DEFAULT_STORE_CONFIG,
  findStoredPart,
  forEachPart,
  PART_OVERHEAD_BYTES,
  PartWriteRequest,
  PutResult,
  RemoteChange,
  RemoteSessionMeta,
  SESSION_OVERHEAD_BYTES,
  SessionSnapshot,
  SessionStore,
  StoreConfig,
  StoredSession,
  StoreObserver,
} from '../src/store/store';

/** A multiple of every resolution used here, so ticks land on bucket boundaries. */
const T0 = 1_700_000_000_000;
const SEED = 'test-seed';

type StoreEvent =
  | { kind: 'put'; id: string; name: string; value: string; version: number }
  | { kind: 'deleted'; id: string; name: string }
  | { kind: 'removed'; id: string; reason: string };

class RecordingObserver implements StoreObserver {
  events: StoreEvent[] = [];
  partPut(session: StoredSession, name: string, version: number): void {
    this.events.push({ kind: 'put', id: session.id, name, value: findStoredPart(session, name)!.value!.toString('latin1'), version });
  }
  partDeleted(sessionId: string, partName: string): void {
    this.events.push({ kind: 'deleted', id: sessionId, name: partName });
  }
  sessionRemoved(sessionId: string, reason: string): void {
    this.events.push({ kind: 'removed', id: sessionId, reason });
  }
  take(): StoreEvent[] {
    const events = this.events;
    this.events = [];
    return events;
  }
}

function config(overrides: Partial<StoreConfig> = {}): StoreConfig {
  return { ...DEFAULT_STORE_CONFIG, nodeId: 'node-a', partitions: 16, ...overrides };
}

function makeStore(overrides: Partial<StoreConfig> = {}, clock: HybridClock = new HybridClock()) {
  const observer = new RecordingObserver();
  const store = new SessionStore(config(overrides), new BuzHash(SEED), clock, observer);
  return { store, observer, clock };
}

const bytes = (s: string): Uint8Array => Buffer.from(s, 'latin1');
const w = (name: string, value: string, ifVersion?: number): PartWriteRequest =>
  ifVersion === undefined ? { name, value: bytes(value) } : { name, value: bytes(value), ifVersion };

interface PartView {
  value: string | null;
  version: number;
  writer: string;
}

/** Every part of a session, tombstones included, keyed by name. */
function partsOf(session: StoredSession): Record<string, PartView> {
  const out: Record<string, PartView> = {};
  forEachPart(session, (name, value, version, writer) => {
    if (name in out) throw new Error(`part ${name} listed twice`);
    out[name] = { value: value === null ? null : value.toString('latin1'), version, writer };
  });
  return out;
}

function liveValues(session: StoredSession | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (session !== undefined) forEachPart(session, (name, value) => value !== null && (out[name] = value.toString('latin1')));
  return out;
}

function allDigests(store: SessionStore): bigint[] {
  const out: bigint[] = [];
  for (let p = 0; p < store.config.partitions; p++) out.push(store.digest(p));
  return out;
}

function totalSize(store: SessionStore): number {
  let n = 0;
  for (let p = 0; p < store.config.partitions; p++) n += store.partitionSize(p);
  return n;
}

function sessionBytes(id: string, parts: Record<string, string | null>): number {
  let n = id.length + SESSION_OVERHEAD_BYTES;
  for (const [name, value] of Object.entries(parts)) n += name.length + PART_OVERHEAD_BYTES + (value?.length ?? 0);
  return n;
}

/** A clock whose next version the test chooses (to rebuild a state along another path). */
class ScriptedClock extends HybridClock {
  next = 0;
  override tick(): number {
    return this.next;
  }
}

describe('SessionStore: parts and versions', () => {
  test('put then get returns every part, byte for byte', () => {
    const { store } = makeStore();
    const binary = Uint8Array.from({ length: 256 }, (_, i) => i);
    store.put('s1', [w('auth', 'token-1'), { name: 'blob', value: binary }, w('empty', '')], 0, T0);
    const session = store.get('s1', T0 + 1)!;
    expect(session).toBeDefined();
    expect(session.id).toBe('s1');
    const values = liveValues(session);
    expect(Object.keys(values).sort()).toEqual(['auth', 'blob', 'empty']);
    expect(values.auth).toBe('token-1');
    expect(values.empty).toBe('');
    expect(Uint8Array.from(Buffer.from(values.blob!, 'latin1'))).toEqual(binary);
    expect(findStoredPart(session, 'auth')!.value!.toString('latin1')).toBe('token-1');
    expect(findStoredPart(session, 'missing')).toBeUndefined();
    expect(store.get('other', T0 + 1)).toBeUndefined();
  });

  test('a Put gives all its parts one version, later Puts get higher ones, other parts keep theirs', () => {
    const { store } = makeStore();
    const first = store.put('s1', [w('a', '1'), w('b', '2'), w('c', '3')], 0, T0);
    let parts = partsOf(store.get('s1', T0)!);
    expect(parts.a!.version).toBe(first.version);
    expect(parts.b!.version).toBe(first.version);
    expect(parts.c!.version).toBe(first.version);
    expect(versionTimeMs(first.version)).toBe(T0);

    // Same millisecond: still a higher version.
    const second = store.put('s1', [w('b', '22'), w('d', '4')], 0, T0);
    expect(second.version).toBeGreaterThan(first.version);
    const third = store.put('s2', [w('a', 'x')], 0, T0 + 5);
    expect(third.version).toBeGreaterThan(second.version);
    expect(versionTimeMs(third.version)).toBe(T0 + 5);

    parts = partsOf(store.get('s1', T0 + 5)!);
    expect(parts.a!.version).toBe(first.version);
    expect(parts.c!.version).toBe(first.version);
    expect(parts.b).toEqual({ value: '22', version: second.version, writer: 'node-a' });
    expect(parts.d!.version).toBe(second.version);
  });

  test('the writer of every part and the owner of a new session is the node id', () => {
    const { store } = makeStore({ nodeId: 'node-7' });
    store.put('s1', [w('a', '1'), w('b', '2')], 0, T0);
    const session = store.get('s1', T0)!;
    expect(session.owner).toBe('node-7');
    expect(session.epoch).toBe(1);
    for (const part of Object.values(partsOf(session))) expect(part.writer).toBe('node-7');
  });

  test('the observer sees every written part with its version', () => {
    const { store, observer } = makeStore();
    const { version } = store.put('s1', [w('a', 'x'), w('b', 'y')], 0, T0);
    expect(observer.take()).toEqual([
      { kind: 'put', id: 's1', name: 'a', value: 'x', version },
      { kind: 'put', id: 's1', name: 'b', value: 'y', version },
    ]);
  });
  test('put returns the session as stored: its parts at the version it assigned, its expiry (no read back)', () => {
    const { store } = makeStore({ nodeId: 'node-7' });
    const first = store.put('s1', [w('a', '1'), w('b', '2')], 60_000, T0);
    expect(partsOf(first.session)).toEqual(partsOf(store.get('s1', T0)!));
    expect(first.session.id).toBe('s1');
    expect(first.session.owner).toBe('node-7');
    expect(first.session.expiresAt).toBe(T0 + 60_000);
    expect(partsOf(first.session)).toEqual({
      a: { value: '1', version: first.version, writer: 'node-7' },
      b: { value: '2', version: first.version, writer: 'node-7' },
    });

    // A put that revives a deleted session returns the live session, not the tombstone.
    store.delete('s1', [], T0 + 1);
    const revived = store.put('s1', [w('c', '3')], 0, T0 + 2);
    expect(partsOf(revived.session)).toEqual(partsOf(store.get('s1', T0 + 2)!));
    expect(partsOf(revived.session)).toEqual({ c: { value: '3', version: revived.version, writer: 'node-7' } });
    expect(revived.version).toBeGreaterThan(first.version);
  });
});

describe('SessionStore: compare-and-set', () => {
  test('ifVersion 0 means "must not exist"; the current version means "unchanged since"', () => {
    const { store } = makeStore();
    const v1 = store.put('s1', [w('a', '1', 0)], 0, T0).version;
    expect(() => store.put('s1', [w('a', '2', 0)], 0, T0 + 1)).toThrow(PreconditionFailedError);
    const v2 = store.put('s1', [w('a', '2', v1), w('b', 'new', 0)], 0, T0 + 2).version;
    expect(liveValues(store.get('s1', T0 + 3))).toEqual({ a: '2', b: 'new' });
    expect(() => store.put('s1', [w('a', '3', v1)], 0, T0 + 4)).toThrow(/is at version \d+, not the expected \d+/);
    expect(() => store.put('s1', [w('c', '3', 12345)], 0, T0 + 4)).toThrow(/does not exist, but if_version 12345/);
    expect(() => store.put('nope', [w('a', '1', v2)], 0, T0 + 4)).toThrow(PreconditionFailedError);
  });

  test('a failed precondition changes nothing, including the other writes of the Put', () => {
    const { store, observer } = makeStore();
    const v1 = store.put('s1', [w('a', '1'), w('b', '2')], 0, T0).version;
    observer.take();
    const before = {
      parts: partsOf(store.get('s1', T0)!),
      stats: { ...store.getStats() },
      digests: allDigests(store),
      expiresAt: store.get('s1', T0)!.expiresAt,
    };
    expect(() => store.put('s1', [w('a', 'changed', v1), w('c', 'added'), w('b', 'x', v1 + 1)], 5000, T0 + 10)).toThrow(
      PreconditionFailedError,
    );
    expect(() => store.put('s2', [w('a', 'x'), w('b', 'y', 7)], 0, T0 + 10)).toThrow(PreconditionFailedError);
    expect(observer.take()).toEqual([]);
    expect(partsOf(store.get('s1', T0 + 10)!)).toEqual(before.parts);
    expect(store.get('s1', T0 + 10)!.expiresAt).toBe(before.expiresAt);
    expect(store.get('s2', T0 + 10)).toBeUndefined();
    expect(store.getStats()).toEqual(before.stats);
    expect(allDigests(store)).toEqual(before.digests);
    expect(totalSize(store)).toBe(1);
  });

  test('a deleted part counts as absent: ifVersion 0 succeeds, its tombstone version does not', () => {
    const { store } = makeStore();
    store.put('s1', [w('a', '1'), w('b', '2')], 0, T0);
    store.delete('s1', ['a'], T0 + 1);
    const tombstone = findStoredPart(store.get('s1', T0 + 1)!, 'a')!;
    expect(tombstone.value).toBeNull();
    expect(() => store.put('s1', [w('a', 'x', tombstone.version)], 0, T0 + 2)).toThrow(PreconditionFailedError);
    store.put('s1', [w('a', 'back', 0)], 0, T0 + 2);
    expect(liveValues(store.get('s1', T0 + 2))).toEqual({ a: 'back', b: '2' });
  });

  test('parts of a deleted or expired session count as absent', () => {
    const { store } = makeStore();
    const v = store.put('s1', [w('a', '1')], 1000, T0).version;
    store.put('s2', [w('a', '1')], 0, T0);
    store.delete('s2', [], T0 + 1);
    expect(() => store.put('s1', [w('a', '2', v)], 0, T0 + 1000)).toThrow(PreconditionFailedError);
    store.put('s1', [w('a', '2', 0)], 0, T0 + 1000);
    store.put('s2', [w('a', '2', 0)], 0, T0 + 1000);
    expect(liveValues(store.get('s1', T0 + 1000))).toEqual({ a: '2' });
    expect(liveValues(store.get('s2', T0 + 1000))).toEqual({ a: '2' });
  });
});

describe('SessionStore: part limit', () => {
  test('more live parts than maxPartsPerSession is refused and changes nothing; tombstones do not count', () => {
    const { store, observer } = makeStore({ maxPartsPerSession: 3 });
    expect(() => store.put('s1', [w('a', '1'), w('b', '2'), w('c', '3'), w('d', '4')], 0, T0)).toThrow(InvalidArgumentError);
    expect(store.get('s1', T0)).toBeUndefined();
    expect(store.getStats().sessions).toBe(0);
    expect(store.getStats().bytes).toBe(0);

    store.put('s1', [w('a', '1'), w('b', '2'), w('c', '3')], 0, T0);
    // Overwriting existing parts adds none.
    store.put('s1', [w('a', '11'), w('c', '33')], 0, T0 + 1);
    observer.take();
    const before = { stats: { ...store.getStats() }, digests: allDigests(store) };
    expect(() => store.put('s1', [w('a', 'x'), w('d', '4')], 0, T0 + 2)).toThrow(/would hold 4 parts, over the limit of 3/);
    expect(liveValues(store.get('s1', T0 + 2))).toEqual({ a: '11', b: '2', c: '33' });
    expect(store.getStats()).toEqual(before.stats);
    expect(allDigests(store)).toEqual(before.digests);
    expect(observer.take()).toEqual([]);

    store.delete('s1', ['b'], T0 + 3);
    store.put('s1', [w('d', '4')], 0, T0 + 4);
    expect(liveValues(store.get('s1', T0 + 4))).toEqual({ a: '11', c: '33', d: '4' });
  });
});

describe('SessionStore: deletes and tombstones', () => {
  test('deleting parts leaves tombstones and reports whether any named part existed', () => {
    const { store, observer } = makeStore({ nodeId: 'node-b' });
    const v1 = store.put('s1', [w('a', '1'), w('b', '2'), w('c', '3')], 0, T0).version;
    observer.take();
    expect(store.delete('s1', ['a', 'zzz'], T0 + 10)).toBe(true);
    expect(observer.take()).toEqual([{ kind: 'deleted', id: 's1', name: 'a' }]);
    const session = store.get('s1', T0 + 10)!;
    const tombstone = findStoredPart(session, 'a')!;
    expect(tombstone.value).toBeNull();
    expect(tombstone.writer).toBe('node-b');
    expect(tombstone.version).toBeGreaterThan(v1);
    expect(versionTimeMs(tombstone.version)).toBe(T0 + 10);
    expect(liveValues(session)).toEqual({ b: '2', c: '3' });
    expect(store.getStats()).toMatchObject({ sessions: 1, parts: 2, tombstones: 0 });

    expect(store.delete('s1', ['a'], T0 + 11)).toBe(false); // already a tombstone
    expect(store.delete('s1', ['zzz'], T0 + 11)).toBe(false);
    expect(store.delete('nope', ['a'], T0 + 11)).toBe(false);
    expect(observer.take()).toEqual([]);

    expect(store.delete('s1', ['b', 'c'], T0 + 12)).toBe(true);
    expect(liveValues(store.get('s1', T0 + 12))).toEqual({});
    // A session whose parts are all deleted still exists.
    expect(store.get('s1', T0 + 12)).toBeDefined();
    expect(store.getStats()).toMatchObject({ sessions: 1, parts: 0 });
    expect(store.getStats().bytes).toBe(sessionBytes('s1', { a: null, b: null, c: null }));
  });

  test('deleting a whole session hides it, leaves a tombstone and tells the observer', () => {
    const { store, observer } = makeStore();
    store.put('s1', [w('a', '1'), w('b', '2')], 0, T0);
    store.put('s2', [w('a', '1')], 0, T0);
    observer.take();
    expect(store.delete('s1', [], T0 + 5)).toBe(true);
    expect(observer.take()).toEqual([{ kind: 'deleted', id: 's1', name: '' }]);
    expect(store.get('s1', T0 + 5)).toBeUndefined();
    expect(store.touch('s1', 0, T0 + 5)).toBeUndefined();
    expect(store.delete('s1', [], T0 + 6)).toBe(false);
    expect(store.delete('s1', ['a'], T0 + 6)).toBe(false);
    expect(store.getStats()).toMatchObject({ sessions: 1, parts: 1, tombstones: 1 });
    expect(store.getStats().bytes).toBe(sessionBytes('s1', {}) + sessionBytes('s2', { a: '1' }));
    expect(totalSize(store)).toBe(2);
    const p = store.partitionOf('s1');
    expect([...store.sessionsIn(p, T0 + 5)].map((s) => s.id)).not.toContain('s1');

    // Writing it again starts from nothing: the old parts do not come back.
    store.put('s1', [w('c', '3')], 0, T0 + 7);
    expect(liveValues(store.get('s1', T0 + 7))).toEqual({ c: '3' });
    expect(partsOf(store.get('s1', T0 + 7)!).a).toBeUndefined();
    expect(store.getStats()).toMatchObject({ sessions: 2, parts: 2, tombstones: 0 });
  });

  test('a session tombstone is purged by tick after tombstoneRetentionMs, not before', () => {
    const { store } = makeStore({ tombstoneRetentionMs: 60_000 });
    const digestsBefore = allDigests(store);
    store.put('s1', [w('a', '1')], 0, T0);
    store.delete('s1', [], T0 + 1000);
    expect(store.nextDeadline()).toBeLessThanOrEqual(T0 + 61_000);
    store.tick(T0 + 60_000);
    expect(totalSize(store)).toBe(1);
    expect(store.getStats().tombstones).toBe(1);
    store.tick(T0 + 61_000);
    expect(totalSize(store)).toBe(0);
    expect(store.getStats()).toMatchObject({ sessions: 0, parts: 0, tombstones: 0, bytes: 0 });
    expect(allDigests(store)).toEqual(digestsBefore);
    expect(store.nextDeadline()).toBeUndefined();
  });

  test('a part tombstone is kept for tombstoneRetentionMs and purged by the next write after that', () => {
    const { store } = makeStore({ tombstoneRetentionMs: 60_000 });
    store.put('s1', [w('a', '1'), w('b', '2')], 3_600_000, T0);
    store.delete('s1', ['a'], T0 + 1000);
    store.put('s1', [w('b', '3')], 0, T0 + 61_000);
    expect(findStoredPart(store.get('s1', T0 + 61_000)!, 'a')?.value).toBeNull();
    store.put('s1', [w('b', '4')], 0, T0 + 61_001);
    expect(findStoredPart(store.get('s1', T0 + 61_001)!, 'a')).toBeUndefined();
    expect(store.getStats().bytes).toBe(sessionBytes('s1', { b: '4' }));
  });
});

describe('SessionStore: TTL', () => {
  test('a session expires at expiresAt: reads miss it before any tick, the observer hears once', () => {
    const { store, observer } = makeStore();
    const { expiresAt } = store.put('s1', [w('a', '1')], 10_000, T0).session;
    expect(expiresAt).toBe(T0 + 10_000);
    expect(store.get('s1', T0)!.expiresAt).toBe(T0 + 10_000);
    expect(store.get('s1', T0 + 9_999)).toBeDefined();
    observer.take();
    expect(store.get('s1', T0 + 10_000)).toBeUndefined();
    expect(observer.take()).toEqual([{ kind: 'removed', id: 's1', reason: 'expired' }]);
    expect(store.get('s1', T0 + 10_001)).toBeUndefined();
    store.tick(T0 + 11_000);
    store.tick(T0 + 20_000);
    expect(observer.take()).toEqual([]);
    expect(store.getStats()).toMatchObject({ sessions: 0, parts: 0, tombstones: 1, expirations: 1 });
  });

  test('tick expires a due session exactly once and purges its tombstone after the retention', () => {
    const { store, observer } = makeStore({ tombstoneRetentionMs: 30_000 });
    store.put('s1', [w('a', '1')], 10_000, T0);
    store.put('s2', [w('a', '1')], 20_000, T0);
    observer.take();
    store.tick(T0 + 9_000);
    expect(observer.take()).toEqual([]);
    store.tick(T0 + 10_000);
    expect(observer.take()).toEqual([{ kind: 'removed', id: 's1', reason: 'expired' }]);
    store.tick(T0 + 10_000);
    store.tick(T0 + 15_000);
    expect(observer.take()).toEqual([]);
    expect(store.getStats()).toMatchObject({ sessions: 1, tombstones: 1, expirations: 1 });
    expect([...store.sessionsIn(store.partitionOf('s1'), T0 + 10_000)].map((s) => s.id)).not.toContain('s1');
    store.tick(T0 + 39_000);
    expect(totalSize(store)).toBe(2);
    store.tick(T0 + 40_000);
    // s1's tombstone is gone; s2 expired at T0 + 20 000 and its tombstone remains.
    expect(totalSize(store)).toBe(1);
    expect(observer.take()).toEqual([{ kind: 'removed', id: 's2', reason: 'expired' }]);
    expect(store.getStats()).toMatchObject({ sessions: 0, tombstones: 1, expirations: 2 });
  });

  test('put and touch refresh expiry; get does not', () => {
    const { store } = makeStore();
    store.put('s1', [w('a', '1')], 10_000, T0);
    expect(store.put('s1', [w('b', '2')], 0, T0 + 5_000).session.expiresAt).toBe(T0 + 15_000); // keeps its TTL
    expect(store.touch('s1', 0, T0 + 12_000)).toBe(T0 + 22_000);
    for (let t = T0 + 13_000; t < T0 + 22_000; t += 1_000) expect(store.get('s1', t)!.expiresAt).toBe(T0 + 22_000);
    store.tick(T0 + 21_000);
    expect(store.get('s1', T0 + 21_999)).toBeDefined();
    expect(store.get('s1', T0 + 22_000)).toBeUndefined();
  });

  test('ttl 0 gives a new session the default TTL', () => {
    const { store } = makeStore({ defaultTtlMs: 45_000 });
    expect(store.put('s1', [w('a', '1')], 0, T0).session.expiresAt).toBe(T0 + 45_000);
    expect(store.get('s1', T0)!.ttlMs).toBe(45_000);
  });

  test('touch with a longer TTL extends the session past its old expiry, also for tick', () => {
    const { store, observer } = makeStore();
    store.put('s1', [w('a', '1')], 5_000, T0);
    expect(store.touch('s1', 60_000, T0 + 1_000)).toBe(T0 + 61_000);
    observer.take();
    store.tick(T0 + 6_000);
    store.tick(T0 + 60_000);
    expect(observer.take()).toEqual([]);
    expect(store.get('s1', T0 + 60_000)).toBeDefined();
    store.tick(T0 + 61_000);
    expect(observer.take()).toEqual([{ kind: 'removed', id: 's1', reason: 'expired' }]);
  });

  test('touch with a shorter TTL makes the session expire earlier, also for tick', () => {
    const { store, observer } = makeStore();
    store.put('s1', [w('a', '1')], 600_000, T0);
    expect(store.touch('s1', 5_000, T0 + 1_000)).toBe(T0 + 6_000);
    expect(store.nextDeadline()).toBeLessThanOrEqual(T0 + 6_000);
    observer.take();
    store.tick(T0 + 5_000);
    expect(observer.take()).toEqual([]);
    store.tick(T0 + 6_000);
    expect(observer.take()).toEqual([{ kind: 'removed', id: 's1', reason: 'expired' }]);
    expect(store.get('s1', T0 + 6_000)).toBeUndefined();
    // The shorter TTL sticks for touches without one.
    store.put('s2', [w('a', '1')], 600_000, T0);
    store.touch('s2', 5_000, T0);
    expect(store.touch('s2', 0, T0 + 2_000)).toBe(T0 + 7_000);
  });

  test('an expired session is written again as a new one', () => {
    const { store, observer } = makeStore();
    store.put('s1', [w('a', '1'), w('b', '2')], 1_000, T0);
    observer.take();
    store.put('s1', [w('c', '3')], 5_000, T0 + 2_000);
    expect(observer.take().map((e) => e.kind)).toEqual(['removed', 'put']);
    expect(liveValues(store.get('s1', T0 + 2_000))).toEqual({ c: '3' });
    expect(store.getStats()).toMatchObject({ sessions: 1, parts: 1, tombstones: 0, expirations: 1 });
  });
});

describe('SessionStore: memory budget', () => {
  // Each of these sessions takes 2 + SESSION_OVERHEAD_BYTES + 1 + PART_OVERHEAD_BYTES + 100
  // accounted bytes; the budget holds three of them and 100 bytes more.
  const value100 = 'v'.repeat(100);
  const size = sessionBytes('s1', { p: value100 });
  const budget = 3 * size + 100;
  /** Value length that makes a new one-part session 's3' (part 'p') take exactly n bytes. */
  const valueFor = (n: number) => n - (2 + SESSION_OVERHEAD_BYTES) - (1 + PART_OVERHEAD_BYTES);

  test('evicts least recently used sessions whole; a get counts as use', () => {
    expect(size).toBe(2 + SESSION_OVERHEAD_BYTES + 1 + PART_OVERHEAD_BYTES + 100);
    const { store, observer } = makeStore({ maxBytes: budget });
    store.put('s1', [w('p', value100)], 0, T0);
    store.put('s2', [w('p', value100)], 0, T0 + 1);
    store.put('s3', [w('p', value100)], 0, T0 + 2);
    expect(store.getStats().bytes).toBe(3 * size);
    expect(store.get('s1', T0 + 3)).toBeDefined();
    observer.take();

    store.put('s4', [w('p', value100)], 0, T0 + 4);
    expect(observer.take()).toEqual([
      { kind: 'removed', id: 's2', reason: 'evicted' },
      { kind: 'put', id: 's4', name: 'p', value: value100, version: expect.any(Number) },
    ]);
    expect(store.get('s2', T0 + 5)).toBeUndefined();
    expect(store.getStats()).toMatchObject({ sessions: 3, tombstones: 0, evictions: 1, bytes: 3 * size });
    expect(totalSize(store)).toBe(3); // an evicted session leaves no tombstone

    // Order now s3, s1, s4 (the get of s2 above found nothing); touch and get count as use.
    store.touch('s3', 0, T0 + 6);
    store.get('s1', T0 + 7);
    observer.take();
    store.put('s5', [w('p', value100)], 0, T0 + 8); // needs one more session's bytes: s4 goes
    expect(observer.take()[0]).toEqual({ kind: 'removed', id: 's4', reason: 'evicted' });
    expect(store.getStats()).toMatchObject({ evictions: 2, bytes: 3 * size });

    // Order s3, s1, s5; deleting a part of s3 counts as use (and frees 100 bytes).
    expect(store.delete('s3', ['p'], T0 + 9)).toBe(true);
    expect(store.getStats().bytes).toBe(3 * size - 100);
    observer.take();
    store.put('s6', [w('p', value100)], 0, T0 + 10); // 3 sessions − 100 + 1 more > budget: s1 goes
    expect(observer.take()[0]).toEqual({ kind: 'removed', id: 's1', reason: 'evicted' });
    expect(store.get('s3', T0 + 11)).toBeDefined();
    expect(store.getStats()).toMatchObject({ evictions: 3, bytes: 3 * size - 100 });
  });

  test('a write bigger than the whole budget throws and evicts nothing', () => {
    const { store, observer } = makeStore({ maxBytes: budget });
    store.put('s1', [w('p', value100)], 0, T0);
    store.put('s2', [w('p', value100)], 0, T0);
    observer.take();
    const before = { stats: { ...store.getStats() }, digests: allDigests(store) };
    const big = 'x'.repeat(valueFor(budget + 1));
    expect(sessionBytes('s3', { p: big })).toBe(budget + 1);
    expect(() => store.put('s3', [w('p', big)], 0, T0 + 1)).toThrow(ResourceExhaustedError);
    // Growing an existing session past the budget on its own is refused the same way.
    expect(() => store.put('s1', [w('p', big)], 0, T0 + 1)).toThrow(`more than the whole memory budget of ${budget} bytes`);
    expect(store.getStats()).toEqual(before.stats);
    expect(allDigests(store)).toEqual(before.digests);
    expect(observer.take()).toEqual([]);
    expect(liveValues(store.get('s1', T0 + 1))).toEqual({ p: value100 });
    expect(store.get('s2', T0 + 1)).toBeDefined();

    // Exactly the budget fits, by evicting everything else.
    const fits = 'x'.repeat(valueFor(budget));
    store.put('s3', [w('p', fits)], 0, T0 + 2);
    expect(store.getStats()).toMatchObject({ bytes: budget, sessions: 1, evictions: 2 });
  });

  test('growing a session evicts others, never the session itself', () => {
    const { store } = makeStore({ maxBytes: budget });
    store.put('s1', [w('p', value100)], 0, T0);
    store.put('s2', [w('p', value100)], 0, T0 + 1);
    store.put('s3', [w('p', value100)], 0, T0 + 2);
    // s1 is least recently used, but it is the one growing (by 600 bytes, past the budget
    // with either other session).
    store.put('s1', [w('p', 'v'.repeat(700))], 0, T0 + 3);
    expect(store.get('s1', T0 + 4)).toBeDefined();
    expect(store.get('s2', T0 + 4)).toBeUndefined();
    expect(store.get('s3', T0 + 4)).toBeUndefined();
    expect(store.getStats()).toMatchObject({ sessions: 1, evictions: 2, bytes: size + 600 });
  });
});

describe('SessionStore: partitions', () => {
  test('partitionOf(id) is the seeded BuzHash partition', () => {
    const { store } = makeStore({ partitions: 37 });
    const hasher = new BuzHash(SEED);
    const random = new SeededRandom(12);
    for (let i = 0; i < 500; i++) {
      const id = `sess-${random.nextUint32().toString(36)}-é${i}`;
      expect(store.partitionOf(id)).toBe(hasher.partitionOf(id, 37));
    }
  });

  test('sessionsIn(p, now) yields exactly the live, unexpired sessions of partition p', () => {
    const { store } = makeStore({ partitions: 8 });
    const expected = new Map<number, Set<string>>();
    for (let p = 0; p < 8; p++) expected.set(p, new Set());
    for (let i = 0; i < 200; i++) {
      const id = `sess-${i}`;
      store.put(id, [w('a', String(i))], i % 3 === 0 ? 1_000 : 60_000, T0);
      if (i % 5 === 0) store.delete(id, [], T0 + 1);
      else if (i % 3 !== 0) expected.get(store.partitionOf(id))!.add(id);
    }
    for (let p = 0; p < 8; p++) {
      const ids = [...store.sessionsIn(p, T0 + 1_000)].map((s) => s.id);
      expect(new Set(ids).size).toBe(ids.length);
      expect(ids.sort()).toEqual([...expected.get(p)!].sort());
      for (const id of ids) expect(store.partitionOf(id)).toBe(p);
    }
  });
});

describe('SessionStore: digests', () => {
  test('a fresh store has all digests 0', () => {
    const { store } = makeStore();
    expect(allDigests(store).every((d) => d === 0n)).toBe(true);
  });

  test('a digest returns to its earlier value once a session is written, deleted and purged', () => {
    const { store } = makeStore({ tombstoneRetentionMs: 10_000 });
    store.put('keep', [w('a', '1')], 3_600_000, T0);
    const p = store.partitionOf('s1');
    const before = allDigests(store);
    store.put('s1', [w('a', '1'), w('b', '2')], 3_600_000, T0 + 1);
    expect(store.digest(p)).not.toBe(before[p]);
    store.put('s1', [w('a', '3')], 0, T0 + 2);
    store.delete('s1', ['b'], T0 + 3);
    store.delete('s1', [], T0 + 4);
    expect(store.digest(p)).not.toBe(before[p]);
    store.tick(T0 + 20_000);
    expect(allDigests(store)).toEqual(before);

    // The same after expiry instead of a delete.
    store.put('s1', [w('a', '1')], 5_000, T0 + 21_000);
    store.tick(T0 + 26_000);
    expect(store.getStats().tombstones).toBe(1);
    expect(store.digest(p)).not.toBe(before[p]);
    store.tick(T0 + 36_000);
    expect(allDigests(store)).toEqual(before);
  });

  test('a put that evicts sessions of other partitions leaves every digest as if only the survivors had been written', () => {
    const value = 'v'.repeat(100);
    const perSession = sessionBytes('sess-00', { p: value });
    const { store } = makeStore({ partitions: 8, maxBytes: 10 * perSession });
    for (let i = 0; i < 40; i++) store.put(`sess-${String(i).padStart(2, '0')}`, [w('p', value)], 0, T0 + i);
    expect(store.getStats().evictions).toBe(30);
    // The survivors, copied into a store without a budget, give the same digests.
    const copy = makeStore({ partitions: 8 }).store;
    let survivors = 0;
    for (let p = 0; p < 8; p++) {
      for (const snapshot of store.snapshotsIn(p, T0 + 40)) {
        copy.merge(snapshot, T0 + 40);
        survivors++;
      }
    }
    expect(survivors).toBe(10);
    expect(allDigests(copy)).toEqual(allDigests(store));
    expect(allDigests(store).some((d) => d !== 0n)).toBe(true);
  });

  test('changing one part in one of two identical stores changes that partition digest only', () => {
    const a = makeStore({ partitions: 8 }).store;
    const b = makeStore({ partitions: 8 }).store;
    for (let i = 0; i < 100; i++) {
      for (const store of [a, b]) store.put(`sess-${i}`, [w('a', `v${i}`), w('b', 'x')], 0, T0 + i);
    }
    expect(allDigests(a)).toEqual(allDigests(b));
    const random = new SeededRandom(6);
    for (let round = 0; round < 30; round++) {
      const id = `sess-${random.below(100)}`;
      const p = a.partitionOf(id);
      const now = T0 + 1000 + round;
      // A new value and version for one part, in b only.
      const op = random.below(3);
      if (op === 0) b.put(id, [w('a', `changed-${round}`)], 0, now);
      else if (op === 1) b.put(id, [w('b', 'x')], 0, now); // same value, new version
      else b.delete(id, ['b'], now);
      const da = allDigests(a);
      const db = allDigests(b);
      for (let q = 0; q < 8; q++) {
        if (q === p) expect(db[q]).not.toBe(da[q]);
        else expect(db[q]).toBe(da[q]);
      }
      // Bring a to the same state at the same time again.
      if (op === 0) a.put(id, [w('a', `changed-${round}`)], 0, now);
      else if (op === 1) a.put(id, [w('b', 'x')], 0, now);
      else a.delete(id, ['b'], now);
      expect(allDigests(a)).toEqual(allDigests(b));
    }
  });

  test('the digest depends on the state, not on the order of the writes that built it', () => {
    const random = new SeededRandom(77);
    const clock = new ScriptedClock();
    const a = makeStore({ partitions: 4 }, clock).store;
    const bClock = new ScriptedClock();
    const b = makeStore({ partitions: 4 }, bClock).store;
    // The same final writes (name, value, version) for 40 sessions, applied in different orders.
    const writes: { id: string; name: string; value: string; version: number }[] = [];
    let version = T0 * 1024;
    for (let i = 0; i < 40; i++) {
      for (const name of ['a', 'b', 'c']) if (random.below(3) > 0) writes.push({ id: `s${i}`, name, value: `${i}${name}`, version: ++version });
    }
    // a: in order, plus overwritten intermediate values.
    for (const x of writes) {
      clock.next = x.version - 1_000_000;
      a.put(x.id, [w(x.name, 'stale')], 3_600_000, T0);
      clock.next = x.version;
      a.put(x.id, [w(x.name, x.value)], 3_600_000, T0);
    }
    // b: shuffled.
    const shuffled = [...writes];
    for (let i = shuffled.length - 1; i > 0; i--) {
      const j = random.below(i + 1);
      [shuffled[i], shuffled[j]] = [shuffled[j]!, shuffled[i]!];
    }
    for (const x of shuffled) {
      bClock.next = x.version;
      b.put(x.id, [w(x.name, x.value)], 3_600_000, T0);
    }
    expect(allDigests(a)).toEqual(allDigests(b));
    expect(allDigests(a).some((d) => d !== 0n)).toBe(true);
  });
});

// --- A reference model of the store, for long random runs ---------------------------

interface ModelPart {
  value: string | null;
  version: number;
  writer: string;
}

interface ModelSession {
  id: string;
  live: boolean;
  parts: Map<string, ModelPart>;
  ttlMs: number;
  expiresAt: number;
  deletedVersion: number;
}

type Outcome = 'ok' | 'precondition' | 'invalid' | 'exhausted';

/**
 * A deliberately naive restatement of store.ts's behaviour: maps and full recounts instead
 * of flat arrays, running totals and a wheel. Where the header leaves a choice open, the
 * model follows the implementation: session tombstones keep their place in the LRU order
 * and count as evictions when evicted (without an observer event); a whole-session delete
 * is not a use; ttl 0 on a session written again after a delete or expiry reuses its old
 * TTL; eviction makes room for the write's size as measured before part tombstones are
 * purged.
 */
class StoreModel {
  readonly sessions = new Map<string, ModelSession>();
  /** The LRU order, first to evict first; a use of a session already in it flags it (`used`). */
  readonly lru = new Map<string, true>();
  /** Used since last moved to the end of `lru`: eviction moves them there instead (CLOCK). */
  readonly used = new Set<string>();
  readonly clock = new HybridClock();
  evictions = 0;
  expirations = 0;
  events: StoreEvent[] = [];

  constructor(readonly config: StoreConfig) {}

  bytesOf(s: ModelSession): number {
    let n = s.id.length + SESSION_OVERHEAD_BYTES;
    for (const [name, part] of s.parts) n += name.length + PART_OVERHEAD_BYTES + (part.value?.length ?? 0);
    return n;
  }

  stats() {
    let sessions = 0;
    let tombstones = 0;
    let parts = 0;
    let bytes = 0;
    for (const s of this.sessions.values()) {
      if (s.live) sessions++;
      else tombstones++;
      for (const part of s.parts.values()) if (part.value !== null) parts++;
      bytes += this.bytesOf(s);
    }
    return { sessions, parts, tombstones, bytes, evictions: this.evictions, expirations: this.expirations };
  }

  private use(id: string): void {
    if (this.lru.has(id)) this.used.add(id);
    else this.lru.set(id, true);
  }

  private moveToEnd(id: string): void {
    this.lru.delete(id);
    this.lru.set(id, true);
    this.used.delete(id);
  }

  private expire(s: ModelSession): void {
    for (const part of s.parts.values()) s.deletedVersion = Math.max(s.deletedVersion, part.version);
    s.parts.clear();
    s.live = false;
    s.expiresAt += this.config.tombstoneRetentionMs;
    this.expirations++;
    this.events.push({ kind: 'removed', id: s.id, reason: 'expired' });
  }

  private isLive(s: ModelSession | undefined, now: number): s is ModelSession {
    if (s === undefined || !s.live) return false;
    if (s.expiresAt > now) return true;
    this.expire(s);
    return false;
  }

  private removeSession(id: string): void {
    this.sessions.delete(id);
    this.lru.delete(id);
    this.used.delete(id);
  }

  private purgePartTombstones(s: ModelSession, now: number): void {
    for (const [name, part] of s.parts) {
      if (part.value === null && versionTimeMs(part.version) < now - this.config.tombstoneRetentionMs) s.parts.delete(name);
    }
  }

  private refresh(s: ModelSession, ttlMs: number, now: number): void {
    s.ttlMs = ttlMs > 0 ? ttlMs : s.ttlMs > 0 ? s.ttlMs : this.config.defaultTtlMs;
    s.expiresAt = now + s.ttlMs;
  }

  get(id: string, now: number): ModelSession | undefined {
    const s = this.sessions.get(id);
    if (!this.isLive(s, now)) return undefined;
    this.use(id);
    return s;
  }

  put(id: string, writes: PartWriteRequest[], ttlMs: number, now: number): { outcome: Outcome; version?: number; expiresAt?: number } {
    let s = this.sessions.get(id);
    if (s !== undefined && s.live && s.expiresAt <= now) this.expire(s);
    const live = s !== undefined && s.live;
    let added = 0;
    let delta = s === undefined ? id.length + SESSION_OVERHEAD_BYTES : 0;
    for (const write of writes) {
      const old = s?.parts.get(write.name);
      const current = live && old !== undefined && old.value !== null ? old.version : 0;
      if (write.ifVersion !== undefined && write.ifVersion !== current) return { outcome: 'precondition' };
      if (current === 0) added++;
      delta +=
        old === undefined
          ? write.name.length + PART_OVERHEAD_BYTES + write.value.length
          : write.value.length - (old.value?.length ?? 0);
    }
    let liveParts = 0;
    if (live) for (const part of s!.parts.values()) if (part.value !== null) liveParts++;
    if (liveParts + added > this.config.maxPartsPerSession) return { outcome: 'invalid' };

    const max = this.config.maxBytes;
    let total = this.stats().bytes;
    if (max > 0 && total + delta > max) {
      if ((s === undefined ? 0 : this.bytesOf(s)) + delta > max) return { outcome: 'exhausted' };
      const order = [...this.lru.keys()];
      for (let i = 0; i < order.length; i++) {
        const candidate = order[i]!;
        if (total + delta <= max) break;
        if (this.used.has(candidate)) {
          this.moveToEnd(candidate);
          order.push(candidate);
          continue;
        }
        if (candidate === id) continue;
        const victim = this.sessions.get(candidate)!;
        total -= this.bytesOf(victim);
        this.removeSession(candidate);
        this.evictions++;
        if (victim.live) this.events.push({ kind: 'removed', id: candidate, reason: 'evicted' });
      }
    }

    if (s === undefined) {
      s = { id, live: true, parts: new Map(), ttlMs: 0, expiresAt: 0, deletedVersion: 0 };
      this.sessions.set(id, s);
    }
    s.live = true;
    const version = this.clock.tick(now);
    for (const write of writes) {
      s.parts.set(write.name, { value: Buffer.from(write.value).toString('latin1'), version, writer: this.config.nodeId });
    }
    this.purgePartTombstones(s, now);
    this.refresh(s, ttlMs, now);
    this.use(id);
    for (const write of writes) {
      this.events.push({ kind: 'put', id, name: write.name, value: s.parts.get(write.name)!.value!, version });
    }
    return { outcome: 'ok', version, expiresAt: s.expiresAt };
  }

  delete(id: string, names: string[], now: number): boolean {
    const s = this.sessions.get(id);
    if (!this.isLive(s, now)) return false;
    if (names.length === 0) {
      s.deletedVersion = this.clock.tick(now);
      s.parts.clear();
      s.live = false;
      s.expiresAt = now + this.config.tombstoneRetentionMs;
      this.events.push({ kind: 'deleted', id, name: '' });
      return true;
    }
    const deleted = names.filter((name) => {
      const part = s.parts.get(name);
      return part !== undefined && part.value !== null;
    });
    if (deleted.length === 0) return false;
    const version = this.clock.tick(now);
    for (const name of deleted) s.parts.set(name, { value: null, version, writer: this.config.nodeId });
    this.purgePartTombstones(s, now);
    this.use(id);
    for (const name of deleted) this.events.push({ kind: 'deleted', id, name });
    return true;
  }

  touch(id: string, ttlMs: number, now: number): number | undefined {
    const s = this.sessions.get(id);
    if (!this.isLive(s, now)) return undefined;
    this.refresh(s, ttlMs, now);
    this.use(id);
    return s.expiresAt;
  }

  /** Only for `now` on a bucket boundary, where "due" and "expiresAt <= now" coincide. */
  tick(now: number): void {
    if (now % this.config.expiryResolutionMs !== 0) throw new Error(`model tick at ${now}, off a bucket boundary`);
    for (const s of [...this.sessions.values()]) {
      if (s.live && s.expiresAt <= now) this.expire(s);
      if (!s.live && s.expiresAt <= now) this.removeSession(s.id);
    }
  }
}

function modelPartsView(s: ModelSession): Record<string, PartView> {
  const out: Record<string, PartView> = {};
  for (const [name, part] of s.parts) out[name] = { ...part };
  return out;
}

const sortedEntries = (parts: Record<string, PartView>) => Object.entries(parts).sort(([x], [y]) => (x < y ? -1 : 1));

const sortEvents = (events: StoreEvent[]) => [...events].sort((x, y) => JSON.stringify(x).localeCompare(JSON.stringify(y)));

const RANDOM_CONFIG: Partial<StoreConfig> = {
  partitions: 32,
  // Small slabs: values move between them (evacuation) many times in a run.
  valueSlabBytes: 2048,
  maxBytes: 25_000,
  maxPartsPerSession: 4,
  tombstoneRetentionMs: 20_000,
  defaultTtlMs: 60_000,
  expiryResolutionMs: 1000,
};

const PART_NAMES = ['a', 'b', 'c', 'd', 'e', 'f', 'g'];
const TTLS = [1_000, 2_500, 10_000, 45_000, 120_000];

interface Op {
  kind: 'put' | 'get' | 'deleteParts' | 'deleteSession' | 'touch' | 'tick';
  id: string;
  now: number;
  writes?: PartWriteRequest[];
  names?: string[];
  ttlMs?: number;
}

/** A random operation; ifVersion values are drawn with help of the model's view. */
function randomOp(random: SeededRandom, model: StoreModel, ids: string[], now: number): Op {
  // Skewed towards low indices, so some sessions stay hot and others go cold.
  const r = random.next();
  const id = ids[Math.floor(r * r * ids.length)]!;
  const roll = random.below(100);
  if (roll < 40) {
    const count = 1 + random.below(3);
    const names = [...PART_NAMES];
    const writes: PartWriteRequest[] = [];
    for (let i = 0; i < count; i++) {
      const name = names.splice(random.below(names.length), 1)[0]!;
      const length = random.below(400) === 0 ? 20_000 + random.below(10_000) : random.below(120);
      // Arbitrary bytes (all 256 values occur); cheap to make, as millions of random draws are slow here.
      const value = new Uint8Array(length);
      const salt = random.nextUint32();
      for (let k = 0; k < length; k++) value[k] = (salt >>> (k & 24)) + k * 37;
      const write: PartWriteRequest = { name, value };
      if (random.below(8) === 0) {
        const existing = model.sessions.get(id)?.parts.get(name);
        const pick = random.below(4);
        write.ifVersion = pick < 2 && existing !== undefined ? existing.version : pick === 2 ? 0 : 1 + random.below(1000);
      }
      writes.push(write);
    }
    return { kind: 'put', id, now, writes, ttlMs: random.below(5) === 0 ? 0 : TTLS[random.below(TTLS.length)]! };
  }
  if (roll < 60) return { kind: 'get', id, now };
  if (roll < 72) {
    const names = [PART_NAMES[random.below(PART_NAMES.length)]!];
    if (random.below(2) === 0) {
      const other = PART_NAMES[random.below(PART_NAMES.length)]!;
      if (other !== names[0]) names.push(other);
    }
    return { kind: 'deleteParts', id, now, names };
  }
  if (roll < 77) return { kind: 'deleteSession', id, now };
  if (roll < 90) return { kind: 'touch', id, now, ttlMs: random.below(3) === 0 ? 0 : TTLS[random.below(TTLS.length)]! };
  return { kind: 'tick', id, now };
}

function outcomeOf(fn: () => unknown): { outcome: Outcome; value?: unknown } {
  try {
    return { outcome: 'ok', value: fn() };
  } catch (err) {
    if (err instanceof PreconditionFailedError) return { outcome: 'precondition' };
    if (err instanceof InvalidArgumentError) return { outcome: 'invalid' };
    if (err instanceof ResourceExhaustedError) return { outcome: 'exhausted' };
    throw err;
  }
}

/** Applies an op to the store (only). */
function applyToStore(store: SessionStore, op: Op): { outcome: Outcome; value?: unknown } {
  switch (op.kind) {
    case 'put':
      return outcomeOf(() => store.put(op.id, op.writes!, op.ttlMs!, op.now));
    case 'get':
      return outcomeOf(() => store.get(op.id, op.now));
    case 'deleteParts':
      return outcomeOf(() => store.delete(op.id, op.names!, op.now));
    case 'deleteSession':
      return outcomeOf(() => store.delete(op.id, [], op.now));
    case 'touch':
      return outcomeOf(() => store.touch(op.id, op.ttlMs!, op.now));
    case 'tick':
      return outcomeOf(() => store.tick(op.now));
  }
}

/** Generates a seeded random run, checking the store against the model after every op. */
function randomRun(seed: number, steps: number, onStep?: (op: Op, step: number, store: SessionStore) => void) {
  const random = new SeededRandom(seed);
  const observer = new RecordingObserver();
  const cfg = config(RANDOM_CONFIG);
  const store = new SessionStore(cfg, new BuzHash(SEED), new HybridClock(), observer);
  const model = new StoreModel(cfg);
  const ids: string[] = [];
  for (let i = 0; i < 200; i++) ids.push(i % 17 === 0 ? `sitzung-ü-${i}` : `sess-${i}`);
  let now = T0;
  const ops: Op[] = [];
  const outcomes: Record<string, number> = {};

  for (let step = 0; step < steps; step++) {
    now += random.below(100);
    let op = randomOp(random, model, ids, now);
    if (op.kind === 'tick') {
      now = Math.ceil(now / cfg.expiryResolutionMs) * cfg.expiryResolutionMs;
      op = { ...op, now };
    }
    ops.push(op);
    onStep?.(op, step, store);
    const actual = applyToStore(store, op);
    const label = `${op.kind}:${actual.outcome}:${typeof actual.value === 'boolean' ? actual.value : actual.value === undefined ? 'none' : 'some'}`;
    outcomes[label] = (outcomes[label] ?? 0) + 1;
    const fail = (what: string) => new Error(`seed ${seed}, step ${step} (${op.kind} ${op.id} at +${op.now - T0}): ${what}`);

    switch (op.kind) {
      case 'put': {
        const expected = model.put(op.id, op.writes!, op.ttlMs!, op.now);
        if (actual.outcome !== expected.outcome) throw fail(`outcome ${actual.outcome}, model ${expected.outcome}`);
        if (expected.outcome === 'ok') {
          const result = actual.value as PutResult;
          if (result.version !== expected.version || result.session.expiresAt !== expected.expiresAt) {
            throw fail(`put returned ${result.version}/${result.session.expiresAt}, model ${expected.version}/${expected.expiresAt}`);
          }
        }
        break;
      }
      case 'get': {
        const expected = model.get(op.id, op.now);
        const session = actual.value as StoredSession | undefined;
        if ((session === undefined) !== (expected === undefined)) throw fail(`found ${session !== undefined}, model ${expected !== undefined}`);
        if (session !== undefined && expected !== undefined) {
          const got = JSON.stringify(sortedEntries(partsOf(session)));
          const want = JSON.stringify(sortedEntries(modelPartsView(expected)));
          if (got !== want) throw fail(`parts ${got}, model ${want}`);
          if (session.expiresAt !== expected.expiresAt || session.ttlMs !== expected.ttlMs) {
            throw fail(`expiry ${session.expiresAt}/${session.ttlMs}, model ${expected.expiresAt}/${expected.ttlMs}`);
          }
        }
        break;
      }
      case 'deleteParts':
      case 'deleteSession': {
        const expected = model.delete(op.id, op.kind === 'deleteParts' ? op.names! : [], op.now);
        if (actual.value !== expected) throw fail(`delete returned ${String(actual.value)}, model ${expected}`);
        break;
      }
      case 'touch': {
        const expected = model.touch(op.id, op.ttlMs!, op.now);
        if (actual.value !== expected) throw fail(`touch returned ${String(actual.value)}, model ${expected}`);
        break;
      }
      case 'tick':
        model.tick(op.now);
        break;
    }

    const storeEvents = observer.take();
    const modelEvents = model.events;
    model.events = [];
    const gotEvents = JSON.stringify(op.kind === 'tick' ? sortEvents(storeEvents) : storeEvents);
    const wantEvents = JSON.stringify(op.kind === 'tick' ? sortEvents(modelEvents) : modelEvents);
    if (gotEvents !== wantEvents) throw fail(`events ${gotEvents}, model ${wantEvents}`);

    const stats = store.getStats();
    const expectedStats = model.stats();
    if (JSON.stringify(stats) !== JSON.stringify(expectedStats)) {
      throw fail(`stats ${JSON.stringify(stats)}, model ${JSON.stringify(expectedStats)}`);
    }
    if (stats.bytes > cfg.maxBytes) throw fail(`bytes ${stats.bytes} over the budget`);
    const memory = store.valueMemory();
    const liveValueBytes = [...model.sessions.values()].reduce((n, s) => n + [...s.parts.values()].reduce((m, p) => m + (p.value?.length ?? 0), 0), 0);
    if (memory.live !== liveValueBytes) throw fail(`slabs hold ${memory.live} live value bytes, model ${liveValueBytes}`);
    // After a tick every sparse slab was evacuated: at most twice the live bytes, plus the current slab.
    if (op.kind === 'tick' && memory.allocated > 2 * memory.live + (1 + MAX_FREE_SLABS) * 2048) throw fail(`slabs take ${memory.allocated} bytes for ${memory.live} live`);

    if (step % 500 === 0 || step === steps - 1) {
      for (let p = 0; p < cfg.partitions; p++) {
        const inModel = [...model.sessions.values()].filter((s) => store.partitionOf(s.id) === p);
        if (store.partitionSize(p) !== inModel.length) throw fail(`partition ${p} holds ${store.partitionSize(p)}, model ${inModel.length}`);
        const live = inModel.filter((s) => s.live && s.expiresAt > now);
        const listed = [...store.sessionsIn(p, now)];
        const got = JSON.stringify(listed.map((s) => [s.id, sortedEntries(partsOf(s))]).sort());
        const want = JSON.stringify(live.map((s) => [s.id, sortedEntries(modelPartsView(s))]).sort());
        if (got !== want) throw fail(`sessionsIn(${p}) ${got}, model ${want}`);
      }
    }
  }
  return { store, model, ops, now, outcomes };
}

describe('SessionStore: values in slabs', () => {
  test('a partition streamed while its sessions are discarded yields what each held, after their slab space is reused', () => {
    const { store } = makeStore({ partitions: 1, valueSlabBytes: 1024 });
    const written = new Map<string, string>();
    for (let i = 0; i < 12; i++) {
      const value = String.fromCharCode(65 + i).repeat(50);
      store.put(`s${i}`, [w('cart', value)], 0, T0);
      written.set(`s${i}`, value);
    }
    const stream = store.snapshotsIn(0, T0)[Symbol.iterator]();
    const first = stream.next().value as SessionSnapshot;
    expect(store.discardWhere(() => true).dropped).toBe(12);
    for (let i = 0; i < 60; i++) store.put(`other-${i}`, [w('cart', 'z'.repeat(50))], 0, T0);
    expect(store.valueMemory().allocated).toBeLessThanOrEqual(4 * 1024); // the emptied slabs were written over
    const streamed: SessionSnapshot[] = [first, ...Array.from({ length: 11 }, () => stream.next().value as SessionSnapshot)];
    for (const snapshot of streamed) expect(snapshot.parts.map((p) => p.value?.toString('latin1'))).toEqual([written.get(snapshot.id)]);
    // And the node they stream to takes them as the live sessions they were.
    const receiver = makeStore({ nodeId: 'node-b', partitions: 1 }).store;
    for (const snapshot of streamed) receiver.merge(snapshot, T0);
    for (const [id, value] of written) expect(liveValues(receiver.get(id, T0))).toEqual({ cart: value });
  });

  test('a value read is a copy: later writes to the session do not change it', () => {
    const { store } = makeStore({ valueSlabBytes: 1024 });
    store.put('s', [w('a', 'first')], 0, T0);
    const read = findStoredPart(store.get('s', T0)!, 'a')!.value!;
    for (let i = 0; i < 100; i++) store.put('s', [w('a', `v${i}`.padEnd(40, '.'))], 0, T0);
    expect(read.toString('latin1')).toBe('first');
  });
});

describe('SessionStore: random operations against a model', () => {
  test('20,000 random operations over 200 ids with a small budget: results, events and stats match the model', () => {
    const { store, model, now, outcomes } = randomRun(1, 20_000);
    const stats = store.getStats();
    // Values moved between slabs many times, and every read after it matched the model.
    const memory = store.valueMemory();
    expect(memory.evacuatedSlabs).toBeGreaterThan(100);
    expect(memory.movedBytes).toBeGreaterThan(10_000);
    // Every kind of outcome occurred often enough to matter.
    const rare: string[] = [];
    for (const label of [
      'put:ok:some',
      'put:precondition:none',
      'put:invalid:none',
      'put:exhausted:none',
      'get:ok:some',
      'get:ok:none',
      'deleteParts:ok:true',
      'deleteParts:ok:false',
      'deleteSession:ok:true',
      'deleteSession:ok:false',
      'touch:ok:some',
      'touch:ok:none',
      'tick:ok:none',
    ]) {
      if ((outcomes[label] ?? 0) < 10) rare.push(`${label}: ${outcomes[label] ?? 0}`);
    }
    expect(rare).toEqual([]);
    // The run exercised what it is meant to exercise.
    expect(stats.evictions).toBeGreaterThan(100);
    expect(stats.expirations).toBeGreaterThan(100);
    expect(model.sessions.size).toBeGreaterThan(10);

    // (d) Deleting everything and waiting out expiry and tombstones empties the store:
    // every digest is back to 0.
    for (const [id, s] of model.sessions) if (s.live) store.delete(id, [], now);
    store.tick(now + 10 * 24 * 3600 * 1000);
    expect(store.getStats()).toMatchObject({ sessions: 0, parts: 0, tombstones: 0, bytes: 0 });
    expect(totalSize(store)).toBe(0);
    expect(allDigests(store).every((d) => d === 0n)).toBe(true);
    expect(store.nextDeadline()).toBeUndefined();
  });

  test('two stores with the same seed fed the same operations at the same times agree on every digest', () => {
    const cfg = config(RANDOM_CONFIG);
    const twin = new SessionStore(cfg, new BuzHash(SEED), new HybridClock());
    const other = new SessionStore(cfg, new BuzHash('other-seed'), new HybridClock());
    let compared = 0;
    const { store } = randomRun(2, 3000, (op, step, main) => {
      // Before op `step`, both stores have seen the same operations.
      if (step % 100 === 0) {
        if (JSON.stringify(allDigests(twin).map(String)) !== JSON.stringify(allDigests(main).map(String))) {
          throw new Error(`digests differ before step ${step}`);
        }
        compared++;
      }
      for (const s of [twin, other]) applyToStore(s, op);
    });
    expect(compared).toBe(30);
    expect(allDigests(twin)).toEqual(allDigests(store));
    expect(twin.getStats()).toEqual(store.getStats());
    expect(allDigests(store).filter((d) => d !== 0n).length).toBeGreaterThan(10);
    // A different cluster seed places and hashes differently.
    expect(allDigests(other)).not.toEqual(allDigests(store));
  });

  test('the final state rebuilt in another order has the same digests', () => {
    const { store, model, now } = randomRun(3, 4000);
    // Rebuild what survived into a fresh store with chosen versions, sessions and parts in
    // a shuffled order, without budget or purges getting in the way.
    const clock = new ScriptedClock();
    const rebuilt = new SessionStore(
      config({ ...RANDOM_CONFIG, maxBytes: 0, maxPartsPerSession: 64, tombstoneRetentionMs: 1e12 }),
      new BuzHash(SEED),
      clock,
    );
    const random = new SeededRandom(33);
    const shuffle = <T>(xs: T[]): T[] => {
      for (let i = xs.length - 1; i > 0; i--) {
        const j = random.below(i + 1);
        [xs[i], xs[j]] = [xs[j]!, xs[i]!];
      }
      return xs;
    };
    const ttl = 10 * 24 * 3600 * 1000;
    for (const s of shuffle([...model.sessions.values()])) {
      if (s.deletedVersion > 0 || !s.live) {
        clock.next = 1;
        rebuilt.put(s.id, [w('placeholder', '')], ttl, now);
        clock.next = s.deletedVersion;
        rebuilt.delete(s.id, [], now);
      }
      if (!s.live) continue;
      for (const [name, part] of shuffle([...s.parts.entries()])) {
        if (part.value === null) {
          clock.next = 2;
          rebuilt.put(s.id, [w(name, 'doomed')], ttl, now);
          clock.next = part.version;
          rebuilt.delete(s.id, [name], now);
        } else {
          clock.next = part.version;
          rebuilt.put(s.id, [{ name, value: Buffer.from(part.value, 'latin1') }], ttl, now);
        }
      }
    }
    const expectedStats = store.getStats();
    expect(rebuilt.getStats()).toMatchObject({
      sessions: expectedStats.sessions,
      parts: expectedStats.parts,
      tombstones: expectedStats.tombstones,
      bytes: expectedStats.bytes,
    });
    expect(allDigests(rebuilt)).toEqual(allDigests(store));
  });
});

describe('ownership: claims and epochs', () => {
  const meta = (owner: string, epoch: number) => ({ owner, epoch, expiresAt: T0 + 600_000, ttlMs: 600_000 });

  test('claim moves ownership to the next epoch and re-stamps every part, keeping values and versions', () => {
    const { store } = makeStore();
    const { version } = store.put('s', [w('a', '1'), w('b', '2')], 0, T0);
    const before = store.digest(store.partitionOf('s'));
    expect(store.claim('s', 'node-b', T0 + 1)).toBe(2);
    const snapshot = store.snapshot('s', T0 + 1)!;
    expect(snapshot.owner).toBe('node-b');
    expect(snapshot.parts.map((p) => [p.name, p.value?.toString('latin1'), p.version, p.epoch])).toEqual([
      ['a', '1', version, 2],
      ['b', '2', version, 2],
    ]);
    expect(store.digest(store.partitionOf('s'))).not.toBe(before);
    expect(store.claim('missing', 'node-b', T0)).toBeUndefined();
  });

  test("a write of the old epoch loses to the claimed copy of that part, in either order of arrival", () => {
    const late = { kind: 'put' as const, name: 'cart', value: bytes('late'), version: 9e15 - 1, writer: 'node-a', epoch: 1 };
    const claimed = { kind: 'put' as const, name: 'cart', value: bytes('claimed'), version: 1000, writer: 'node-a', epoch: 2 };
    for (const order of [[late, claimed], [claimed, late]]) {
      const { store } = makeStore({ nodeId: 'node-c' });
      for (const change of order) store.applyRemote('s', change, meta(change.epoch === 2 ? 'node-b' : 'node-a', change.epoch), T0);
      const snapshot = store.snapshot('s', T0)!;
      expect(snapshot.parts.map((p) => p.value?.toString('latin1'))).toEqual(['claimed']);
      expect([snapshot.owner, snapshot.epoch]).toEqual(['node-b', 2]);
    }
  });

  test('two claims of the same epoch settle on the higher node id, whichever arrives first', () => {
    for (const order of [['node-b', 'node-c'], ['node-c', 'node-b']]) {
      const { store } = makeStore({ nodeId: 'node-a' });
      store.put('s', [w('a', '1')], 0, T0);
      for (const owner of order) store.applyRemote('s', { kind: 'claim' }, meta(owner, 2), T0);
      expect(store.snapshot('s', T0)!.owner).toBe('node-c');
    }
  });

  test('merging snapshots in any order gives the same state and digest', () => {
    const source = makeStore({ nodeId: 'node-a' }).store;
    source.put('s', [w('a', '1'), w('b', '2')], 0, T0);
    const first = source.snapshot('s', T0)!;
    source.claim('s', 'node-b', T0 + 1);
    const second = source.snapshot('s', T0 + 1)!;
    const x = makeStore({ nodeId: 'node-x' }).store;
    const y = makeStore({ nodeId: 'node-y' }).store;
    x.merge(first, T0 + 2);
    x.merge(second, T0 + 2);
    y.merge(second, T0 + 2);
    y.merge(first, T0 + 2);
    expect(x.snapshot('s', T0 + 2)).toEqual(y.snapshot('s', T0 + 2));
    expect(x.digest(x.partitionOf('s'))).toBe(y.digest(y.partitionOf('s')));
  });

  test('discardWhere drops the chosen sessions and keeps counts and digests as if they never came', () => {
    const { store } = makeStore();
    const empty = [...Array(16).keys()].map((p) => store.digest(p));
    store.applyRemote('kept', { kind: 'put', name: 'a', value: bytes('v'), version: 5, writer: 'node-b', epoch: 1 }, meta('node-b', 1), T0);
    store.applyRemote('gone', { kind: 'put', name: 'a', value: bytes('v'), version: 5, writer: 'node-c', epoch: 1 }, meta('node-c', 1), T0);
    expect(store.discardWhere((owner) => owner === 'node-c')).toEqual({ dropped: 1, next: undefined });
    expect(store.snapshot('gone', T0)).toBeUndefined();
    expect(store.getStats().sessions).toBe(1);
    store.discardWhere(() => true);
    expect([...Array(16).keys()].map((p) => store.digest(p))).toEqual(empty);
    expect(store.getStats()).toMatchObject({ sessions: 0, parts: 0, bytes: 0 });
  });

  test('discardWhere walks a slice of whole partitions per call, and the slices together drop what one walk would', () => {
    const { store } = makeStore();
    const ids = Array.from({ length: 200 }, (_, i) => `s${i}`);
    for (const id of ids) {
      const owner = id.endsWith('0') ? 'node-c' : 'node-b';
      store.applyRemote(id, { kind: 'put', name: 'a', value: bytes('v'), version: 5, writer: owner, epoch: 1 }, meta(owner, 1), T0);
    }
    const sizes = [...Array(16).keys()].map((p) => store.partitionSize(p));
    const looked: number[] = [];
    let from: number | undefined = 0;
    let dropped = 0;
    while (from !== undefined) {
      const seen: number[] = [];
      const slice = store.discardWhere((owner, partition) => (seen.push(partition), owner === 'node-c'), from, 30);
      // Whole partitions: every session of each partition walked, none of the next.
      const walked = [...new Set(seen)];
      for (const p of walked) expect(seen.filter((q) => q === p).length).toBe(sizes[p]);
      if (slice.next !== undefined) expect(Math.max(...walked)).toBeLessThan(slice.next);
      looked.push(seen.length);
      dropped += slice.dropped;
      from = slice.next;
    }
    expect(looked.length).toBeGreaterThan(3);
    // A slice stops once it has looked at the budget: only its last partition runs past it.
    for (const n of looked) expect(n).toBeLessThan(30 + Math.max(...sizes));
    expect(dropped).toBe(ids.filter((id) => id.endsWith('0')).length);
    expect(ids.filter((id) => store.snapshot(id, T0) !== undefined).length).toBe(180);
  });
});

describe('replicas: a session deleted and written again, with its deltas reordered', () => {
  type Delta = { change: RemoteChange; meta: RemoteSessionMeta };

  /**
   * An owner store, and the deltas its changes become, each with the session header the
   * owner had when it made the change (what the replication engine sends).
   */
  function owner(overrides: Partial<StoreConfig> = {}) {
    const { store } = makeStore({ nodeId: 'node-a', ...overrides });
    const header = (id: string, now: number): RemoteSessionMeta => {
      const s = store.snapshot(id, now)!;
      // A tombstone is sent with the header it had, as the session API sends it.
      return { owner: s.owner, epoch: s.epoch, expiresAt: s.expiresAt > 0 ? s.expiresAt : now + s.ttlMs, ttlMs: s.ttlMs };
    };
    return {
      store,
      put(id: string, name: string, value: string, now: number, ttlMs = 0): Delta {
        const { version } = store.put(id, [w(name, value)], ttlMs, now);
        return { change: { kind: 'put', name, value: bytes(value), version, writer: 'node-a', epoch: store.snapshot(id, now)!.epoch }, meta: header(id, now) };
      },
      deleteSession(id: string, now: number): Delta {
        store.delete(id, [], now);
        return { change: { kind: 'delete_session', version: store.snapshot(id, now)!.deletedVersion }, meta: header(id, now) };
      },
      touch(id: string, now: number): Delta {
        store.touch(id, 0, now);
        return { change: { kind: 'touch' }, meta: header(id, now) };
      },
      claim(id: string, by: string, now: number): Delta {
        store.claim(id, by, now);
        return { change: { kind: 'claim' }, meta: header(id, now) };
      },
    };
  }

  function replicaOf(deltas: Delta[], now: number, overrides: Partial<StoreConfig> = {}): SessionStore {
    const { store } = makeStore({ nodeId: 'node-r', ...overrides });
    for (const { change, meta } of deltas) store.applyRemote('s', change, meta, now);
    return store;
  }

  /** The replica must hold exactly the owner's snapshot (the owner field included). */
  const view = (store: SessionStore, now: number) => store.snapshot('s', now);

  test('a touch that arrives while the replica holds the tombstone, before the put that revived the session, is kept', () => {
    const a = owner();
    const created = a.put('s', 'cart', 'old', T0);
    const deleted = a.deleteSession('s', T0 + 5);
    const revived = a.put('s', 'cart', 'new', T0 + 8);
    const touched = a.touch('s', T0 + 20);
    // The revived put was lost and is repaired after the touch got through.
    const replica = replicaOf([created, deleted, touched, revived], T0 + 30);
    expect(view(replica, T0 + 30)!.expiresAt).toBe(T0 + 20 + DEFAULT_STORE_CONFIG.defaultTtlMs);
    expect(view(replica, T0 + 30)).toEqual(view(a.store, T0 + 30));
  });

  test('a touch applied before a late session delete is kept through the tombstone for the put that revived the session', () => {
    const a = owner();
    const created = a.put('s', 'cart', 'old', T0);
    const deleted = a.deleteSession('s', T0 + 5);
    const revived = a.put('s', 'cart', 'new', T0 + 8);
    const touched = a.touch('s', T0 + 20);
    const replica = replicaOf([created, touched, deleted, revived], T0 + 30);
    expect(view(replica, T0 + 30)).toEqual(view(a.store, T0 + 30));
  });

  test("a revived session expires at the owner's expiry, not when its tombstone would have been purged", () => {
    const a = owner({ tombstoneRetentionMs: 300_000 });
    const created = a.put('s', 'cart', 'old', T0, 60_000);
    const deleted = a.deleteSession('s', T0 + 5);
    const revived = a.put('s', 'cart', 'new', T0 + 8);
    const replica = replicaOf([created, deleted, revived], T0 + 10);
    expect(view(replica, T0 + 10)!.expiresAt).toBe(T0 + 8 + 60_000);
    expect(view(replica, T0 + 10)).toEqual(view(a.store, T0 + 10));
    // The expiry sweep finds it then too, not only reads.
    replica.tick(T0 + 8 + 61_000);
    expect(replica.getStats()).toMatchObject({ sessions: 0, tombstones: 1, expirations: 1 });
  });

  test('a claim that arrives after the session delete it preceded leaves the tombstone with the owner\'s header', () => {
    const a = owner();
    const created = a.put('s', 'cart', 'old', T0);
    const claimed = a.claim('s', 'node-b', T0 + 5);
    const deleted = a.deleteSession('s', T0 + 8);
    for (const order of [[created, claimed, deleted], [created, deleted, claimed], [deleted, claimed, created]]) {
      const replica = replicaOf(order, T0 + 10);
      expect(view(replica, T0 + 10)).toEqual(view(a.store, T0 + 10));
      expect(replica.digest(replica.partitionOf('s'))).toBe(a.store.digest(a.store.partitionOf('s')));
    }
  });

  test('a write or touch that shortens the TTL reaches the replica in any order of arrival', () => {
    const a = owner();
    const long = a.put('s', 'cart', '1', T0, 3_600_000);
    const short = a.put('s', 'cart', '2', T0 + 5, 60_000);
    const touched = a.touch('s', T0 + 9);
    for (const order of [[long, short, touched], [long, touched, short], [touched, short, long]]) {
      const replica = replicaOf(order, T0 + 10);
      expect(view(replica, T0 + 10)!.expiresAt).toBe(T0 + 9 + 60_000);
      expect(view(replica, T0 + 10)).toEqual(view(a.store, T0 + 10));
    }
  });

  test('two refreshes in one millisecond are ordered: the later one wins on every replica', () => {
    const a = owner();
    const long = a.put('s', 'cart', '1', T0, 3_600_000);
    const short = a.put('s', 'cart', '2', T0, 60_000);
    expect(view(a.store, T0)!.expiresAt).toBe(T0 + 1 + 60_000);
    for (const order of [[long, short], [short, long]]) expect(view(replicaOf(order, T0), T0)).toEqual(view(a.store, T0));
  });

  test('a put older than the session delete still brings its refresh (the TTL the tombstone keeps)', () => {
    const a = owner();
    const long = a.put('s', 'cart', '1', T0, 3_600_000);
    const short = a.put('s', 'tls', '2', T0 + 5, 60_000);
    const deleted = a.deleteSession('s', T0 + 8);
    const replica = replicaOf([long, deleted, short], T0 + 10);
    expect(view(replica, T0 + 10)).toEqual(view(a.store, T0 + 10));
    expect(view(replica, T0 + 10)!.ttlMs).toBe(60_000);
  });

  test('a tombstone is purged tombstoneRetentionMs after it was made, whatever expiry it keeps', () => {
    const { store } = makeStore({ tombstoneRetentionMs: 60_000 });
    store.put('s', [w('a', '1')], 3_600_000, T0);
    store.delete('s', [], T0 + 1000);
    store.applyRemote('s', { kind: 'touch' }, { owner: 'node-a', epoch: 1, expiresAt: T0 + 7_200_000, ttlMs: 3_600_000 }, T0 + 2000);
    store.tick(T0 + 60_000);
    expect(store.getStats().tombstones).toBe(1);
    store.tick(T0 + 61_000);
    expect(store.getStats()).toMatchObject({ sessions: 0, tombstones: 0, bytes: 0 });
    expect(store.nextDeadline()).toBeUndefined();
  });
});

describe('sessions as rows', () => {
  test('a view read after its session left the store throws, rather than read the session that took its row', () => {
    const { store } = makeStore();
    store.put('s1', [{ name: 'p', value: Buffer.from('one') }], 0, T0);
    const held = store.get('s1', T0)!;
    expect(held.owner).toBe('node-a');
    store.discard('s1');
    store.put('s2', [{ name: 'p', value: Buffer.from('two') }], 0, T0);
    expect(() => held.owner).toThrow(/'s1' left the store/);
    expect(() => forEachPart(held, () => undefined)).toThrow(/'s1' left the store/);
    expect(() => findStoredPart(held, 'p')).toThrow(/'s1' left the store/);
    expect(findStoredPart(store.get('s2', T0)!, 'p')!.value!.toString()).toBe('two');
  });

  test('rows and part rows freed by deletes, purges and evictions are used again, and hold nothing of what was there', () => {
    const random = new SeededRandom(5);
    const { store } = makeStore({ maxBytes: 40_000, tombstoneRetentionMs: 1000 });
    const written = new Map<string, string>();
    let now = T0;
    for (let step = 0; step < 3000; step++) {
      now += 10;
      const id = `s${random.below(300)}`;
      const op = random.below(10);
      if (op < 6) {
        const value = `${id}@${step}`;
        store.put(id, [{ name: `p${random.below(3)}`, value: Buffer.from(value) }], 0, now);
        written.set(id, value);
      } else if (op < 8) store.delete(id, [], now);
      else store.tick(now);
      const session = store.get(id, now);
      if (session === undefined) continue;
      expect(session.id).toBe(id);
      forEachPart(session, (_name, value) => expect(value === null || value.toString().startsWith(`${id}@`)).toBe(true));
    }
    expect(store.getStats().evictions).toBeGreaterThan(0);
    // Once every session has gone, no part name or node id is held any more (client-chosen
    // names must not pile up).
    const strings = (store as unknown as { table: { names: { size: number }; nodes: { size: number } } }).table;
    expect(strings.names.size).toBeGreaterThan(0);
    store.discardWhere(() => true);
    expect([strings.names.size, strings.nodes.size, store.getStats().bytes]).toEqual([0, 0, 0]);
  });

  test('part versions read back exactly over the whole range a version takes (kept as two 32-bit halves)', () => {
    const random = new SeededRandom(31);
    const edges = [1, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1, 2 ** 52 + 3, Number.MAX_SAFE_INTEGER];
    const versions = [...edges, ...Array.from({ length: 500 }, () => random.below(2 ** 21) * 2 ** 32 + random.below(2 ** 32))];
    const { store } = makeStore();
    const meta: RemoteSessionMeta = { owner: 'node-b', epoch: 1, expiresAt: T0 + 60_000, ttlMs: 60_000 };
    versions.forEach((version, i) => {
      store.applyRemote(`s${i}`, { kind: 'put', name: 'p', value: bytes('v'), version, writer: 'node-b', epoch: 1 }, meta, T0);
      expect(findStoredPart(store.get(`s${i}`, T0)!, 'p')!.version).toBe(version);
    });
  });

  test('epochs up to 2^32 - 1 are kept; a remote change naming a higher epoch or an inexact version is refused', () => {
    const { store } = makeStore();
    const meta = (epoch: number): RemoteSessionMeta => ({ owner: 'node-b', epoch, expiresAt: T0 + 60_000, ttlMs: 60_000 });
    const put = (epoch: number, version: number): RemoteChange => ({ kind: 'put', name: 'p', value: bytes('v'), version, writer: 'node-b', epoch });
    expect(store.applyRemote('s', put(2 ** 32 - 1, 10), meta(2 ** 32 - 1), T0)).toBe(true);
    expect(store.get('s', T0)!.epoch).toBe(2 ** 32 - 1);
    expect(findStoredPart(store.get('s', T0)!, 'p')!.epoch).toBe(2 ** 32 - 1);
    expect(store.applyRemote('s', put(2 ** 32, 11), meta(2 ** 32), T0)).toBe(false);
    expect(store.applyRemote('s', put(1, 12), meta(2 ** 32), T0)).toBe(false);
    expect(store.applyRemote('t', put(1, 2 ** 60), meta(1), T0)).toBe(false);
    expect(store.applyRemote('t', { kind: 'delete_session', version: 2 ** 60 }, meta(1), T0)).toBe(false);
    expect(store.knows('t')).toBe(false);
    expect(findStoredPart(store.get('s', T0)!, 'p')!.version).toBe(10);
  });

  test('row memory: used follows the rows in use, allocated doubles and stays', () => {
    const { store } = makeStore();
    const before = store.rowMemory();
    expect(before.used).toBe(0);
    for (let i = 0; i < 3000; i++) store.put(`s${i}`, [w('a', 'x'), w('b', 'y')], 0, T0);
    const full = store.rowMemory();
    expect(full.used).toBe(3000 * 64 + 6000 * 36);
    expect(full.allocated).toBeGreaterThanOrEqual(full.used);
    expect(full.allocated).toBeGreaterThan(before.allocated);
    store.discardWhere(() => true);
    expect(store.rowMemory()).toEqual({ allocated: full.allocated, used: 0 });
  });

  test('a TTL beyond 2^32 - 1 ms (49 days) is held at that', () => {
    const { store } = makeStore();
    store.put('s', [{ name: 'p', value: Buffer.from('v') }], 2 ** 40, T0);
    expect(store.get('s', T0)!.ttlMs).toBe(2 ** 32 - 1);
    expect(store.get('s', T0)!.expiresAt).toBe(T0 + 2 ** 32 - 1);
  });
});
