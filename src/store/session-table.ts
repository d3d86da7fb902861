/**
 * The store's records and the bookkeeping every change to them must keep: the id map
 * and partition lists, the partition digests, accounted bytes and counts, the LRU order,
 * the expiry wheel. SessionStore decides what changes (versions, compare-and-set, last-writer-wins);
 * this table makes each change with its bookkeeping, so no caller updates a digest or a
 * byte count by hand.
 *
 * Rules:
 * - Every mutation that touches a digest takes the session's SessionKey: nothing here
 *   remembers which session an operation is about. Expiry and eviction, which reach other
 *   sessions in the middle of an operation, hash those sessions' ids themselves.
 * - `stats.bytes` never exceeds maxBytes after makeRoom returns: least recently used
 *   sessions are evicted whole (a read or write flags a session, and eviction moves a
 *   flagged session to the recently used end instead of evicting it: CLOCK); a session
 *   that cannot fit even alone is refused (ResourceExhaustedError) before anything changed.
 * - A live session sits in the wheel no later than its expiry (refreshes only move it
 *   earlier; tick re-schedules one not yet due); a tombstone sits at its purge time.
 * - Reads take no clock either: every method that can expire takes `now` (Unix ms).
 */
import type { BuzHash } from './buzhash';
import { ResourceExhaustedError } from '../wire/errors';
import { ExpiryWheel } from './expiry-wheel';
import { versionTimeMs } from './hybrid-clock';
import { LruList } from './lru-list';
import { PartitionDigests, sessionKey, type SessionKey } from './partition-digest';
import { PartitionLists } from './partition-lists';
import {
  EMPTY_PARTS,
  EPOCH,
  indexOfPart,
  LIVE,
  NAME,
  PART_STRIDE,
  partBytes,
  type PartSlot,
  SESSION_OVERHEAD_BYTES,
  SessionRecord,
  sessionBytes,
  TOMBSTONE,
  VALUE,
  VALUE_LENGTH,
  VALUE_OFFSET,
  valueLengthAt,
  newPartSlots,
  setVersionAt,
  versionAt,
  WRITER,
} from './session-record';
import { DEFAULT_SLAB_BYTES, ValueSlab, ValueSlabs } from './value-slabs';
import type { RemoteSessionMeta } from './session-snapshot';
import type { StoreConfig, StoreObserver, StoreStats } from './store-config';

/**
 * The parts of a record leaving the store, with every value copied into one buffer of its
 * own (outside the slabs, uncounted: it lives as long as a reader holds the record).
 */
function detachedParts(slots: readonly PartSlot[]): PartSlot[] {
  let total = 0;
  for (let i = 0; i < slots.length; i += PART_STRIDE) total += valueLengthAt(slots, i);
  if (total === 0) return slots as PartSlot[];
  const copy = new ValueSlab(Buffer.allocUnsafe(total), true);
  const parts = slots.slice();
  let at = 0;
  for (let i = 0; i < slots.length; i += PART_STRIDE) {
    const slab = slots[i + VALUE] as ValueSlab | null;
    const length = valueLengthAt(slots, i);
    if (slab === null || length === 0) continue;
    const offset = slots[i + VALUE_OFFSET] as number;
    copy.bytes.set(slab.bytes.subarray(offset, offset + length), at);
    parts[i + VALUE] = copy;
    parts[i + VALUE_OFFSET] = at;
    at += length;
  }
  return parts;
}

/** Most distinct part names and node ids kept as one shared string each. */
const INTERN_LIMIT = 4096;

export class SessionTable {
  /** Sessions (live and tombstones) by id: one map, so a read hashes nothing but the map key. */
  private readonly byId = new Map<string, SessionRecord>();
  /** The same records, listed by partition. */
  readonly partitions: PartitionLists;
  readonly digests: PartitionDigests;
  readonly stats: StoreStats = { sessions: 0, parts: 0, tombstones: 0, bytes: 0, evictions: 0, expirations: 0 };
  private readonly wheel: ExpiryWheel<SessionRecord>;
  private readonly lru = new LruList();
  private readonly interned = new Map<string, string>();
  /** The bytes of every part value (off the V8 heap). */
  readonly values: ValueSlabs<SessionRecord>;

  constructor(
    private readonly config: StoreConfig,
    private readonly hasher: BuzHash,
    private readonly observer?: StoreObserver,
  ) {
    this.partitions = new PartitionLists(config.partitions);
    this.digests = new PartitionDigests(config.partitions);
    this.wheel = new ExpiryWheel(config.expiryResolutionMs);
    const slabBytes = config.valueSlabBytes ?? DEFAULT_SLAB_BYTES;
    this.values = new ValueSlabs((record, from) => this.relocateValues(record, from), { slabBytes, dedicatedMinBytes: slabBytes / 16 });
  }

  /** The key of a session id: its hash and partition, for one operation. */
  keyOf(id: string): SessionKey {
    return sessionKey(this.hasher, id, this.config.partitions);
  }

  /** The record of a session (live or tombstone); allocates nothing (the read path). */
  find(id: string): SessionRecord | undefined {
    return this.byId.get(id);
  }

  /** Whether the record is live and unexpired; expires it (now) if it is due. */
  isLive(record: SessionRecord, now: number): boolean {
    if (record.state !== LIVE) return false;
    if (!record.expiredBy(now)) return true;
    this.expire(record);
    return false;
  }

  /** Expires the record if it is live and due, so a write finds it as a tombstone. */
  expireIfDue(record: SessionRecord | undefined, now: number): void {
    if (record !== undefined && record.state === LIVE && record.expiredBy(now)) this.expire(record);
  }

  /** Adds a live session without parts. The caller made room for it (makeRoom). */
  insert(key: SessionKey, id: string, owner: string, epoch: number): SessionRecord {
    const record = new SessionRecord(id, this.intern(owner));
    record.epoch = epoch;
    this.byId.set(id, record);
    this.partitions.add(record, key.partition);
    this.stats.sessions++;
    this.stats.bytes += id.length + SESSION_OVERHEAD_BYTES;
    this.digests.xorSession(key, record);
    return record;
  }

  /** Makes a tombstoned session live again (its parts come with the write reviving it). */
  revive(key: SessionKey, record: SessionRecord): void {
    this.digests.xorSession(key, record);
    record.state = LIVE;
    this.digests.xorSession(key, record);
    this.stats.tombstones--;
    this.stats.sessions++;
  }

  /** Sets or adds a part (value null = tombstone; its bytes are copied), keeping digest, bytes and counts. */
  setPart(key: SessionKey, record: SessionRecord, name: string, value: Uint8Array | null, version: number, writer: string, epoch: number): void {
    // Stored first: storing may evacuate a slab, which rewrites value slots (this record's
    // too) but never the shape of a parts array.
    const slab = value === null ? null : this.values.store(value, record);
    const offset = this.values.lastOffset;
    let slots = record.parts;
    let at = indexOfPart(slots, name);
    if (at < 0) {
      // Copy on add: parts are added far less often than rewritten, and exact-length
      // arrays save the slack a growing array keeps.
      at = slots.length;
      slots = slots.concat(newPartSlots(this.intern(name), writer, epoch));
      record.parts = slots;
      this.stats.bytes += partBytes(name, 0);
    } else {
      this.digests.xorPart(key, slots, at);
    }
    const old = slots[at + VALUE] as ValueSlab | null;
    const oldLength = valueLengthAt(slots, at);
    const length = value === null ? 0 : value.length;
    if (old !== null) this.values.release(old, oldLength);
    this.stats.bytes += length - oldLength;
    if (old === null && value !== null) this.stats.parts++;
    else if (old !== null && value === null) this.stats.parts--;
    slots[at + VALUE] = slab;
    slots[at + VALUE_OFFSET] = offset;
    slots[at + VALUE_LENGTH] = length;
    setVersionAt(slots, at, version);
    slots[at + WRITER] = writer;
    slots[at + EPOCH] = epoch;
    this.digests.xorPart(key, slots, at);
  }

  /** Drops part tombstones older than the retention. */
  purgePartTombstones(key: SessionKey, record: SessionRecord, now: number): void {
    const horizon = now - this.config.tombstoneRetentionMs;
    const slots = record.parts;
    let stale = 0;
    for (let i = 0; i < slots.length; i += PART_STRIDE) {
      if (slots[i + VALUE] === null && versionTimeMs(versionAt(slots, i)) < horizon) stale++;
    }
    if (stale === 0) return;
    const kept: PartSlot[] = [];
    for (let i = 0; i < slots.length; i += PART_STRIDE) {
      if (slots[i + VALUE] === null && versionTimeMs(versionAt(slots, i)) < horizon) {
        this.digests.xorPart(key, slots, i);
        this.stats.bytes -= partBytes(slots[i + NAME] as string, 0);
      } else {
        for (let j = 0; j < PART_STRIDE; j++) kept.push(slots[i + j]!);
      }
    }
    record.parts = kept.slice();
  }

  /** Makes the session a tombstone at `version`, purged tombstoneRetentionMs after `now`. */
  tombstoneSession(key: SessionKey, record: SessionRecord, version: number, now: number): void {
    this.digests.xorSession(key, record);
    const slots = record.parts;
    for (let i = 0; i < slots.length; i += PART_STRIDE) {
      this.digests.xorPart(key, slots, i);
      this.dropValue(slots, i);
    }
    record.parts = EMPTY_PARTS;
    record.state = TOMBSTONE;
    record.deletedVersion = version;
    this.digests.xorSession(key, record);
    this.stats.sessions--;
    this.stats.tombstones++;
    this.wheel.schedule(record, now + this.config.tombstoneRetentionMs);
  }

  /**
   * A session delete at `version` from another node: parts at or below it go; parts newer
   * than it (written after the session was re-created) stay, and so does the session.
   */
  deleteUpTo(key: SessionKey, record: SessionRecord, version: number, now: number): void {
    const slots = record.parts;
    let newer = false;
    for (let i = 0; i < slots.length; i += PART_STRIDE) if (versionAt(slots, i) > version) newer = true;
    if (!newer) {
      this.tombstoneSession(key, record, version, now);
      return;
    }
    this.digests.xorSession(key, record);
    record.deletedVersion = version;
    this.digests.xorSession(key, record);
    const kept: PartSlot[] = [];
    for (let i = 0; i < slots.length; i += PART_STRIDE) {
      if (versionAt(slots, i) > version) {
        for (let j = 0; j < PART_STRIDE; j++) kept.push(slots[i + j]!);
        continue;
      }
      this.digests.xorPart(key, slots, i);
      this.dropValue(slots, i);
    }
    record.parts = kept.slice();
  }

  /** Moves ownership to `owner` at the next epoch and re-stamps every part with it. */
  claim(key: SessionKey, record: SessionRecord, owner: string): void {
    this.digests.xorSession(key, record);
    record.owner = this.intern(owner);
    record.epoch++;
    this.digests.xorSession(key, record);
    const slots = record.parts;
    for (let i = 0; i < slots.length; i += PART_STRIDE) {
      this.digests.xorPart(key, slots, i);
      slots[i + EPOCH] = record.epoch;
      this.digests.xorPart(key, slots, i);
    }
  }

  /** Idle expiry: the session becomes a tombstone at the version of its newest part. */
  expire(record: SessionRecord): void {
    let newest = record.deletedVersion;
    const slots = record.parts;
    for (let i = 0; i < slots.length; i += PART_STRIDE) newest = Math.max(newest, versionAt(slots, i));
    this.tombstoneSession(this.keyOf(record.id), record, newest, record.expiresAt);
    this.stats.expirations++;
    this.observer?.sessionRemoved(record.id, 'expired');
  }

  /** Drops a session without a trace (tombstone purge, eviction, discard). */
  remove(record: SessionRecord): void {
    const key = this.keyOf(record.id);
    const slots = record.parts;
    const detached = detachedParts(slots);
    for (let i = 0; i < slots.length; i += PART_STRIDE) {
      this.digests.xorPart(key, slots, i);
      this.dropValue(slots, i);
    }
    this.digests.xorSession(key, record);
    this.byId.delete(record.id);
    this.partitions.remove(record, key.partition);
    this.wheel.cancel(record);
    this.lru.unlink(record);
    this.stats.bytes -= record.id.length + SESSION_OVERHEAD_BYTES;
    if (record.state === LIVE) this.stats.sessions--;
    else this.stats.tombstones--;
    // Its slab space may be reused now; a reader still holding the record (a state
    // transfer streaming a partition, say) reads the copies, and sees it as it was.
    record.parts = detached;
  }

  /** Evicts least recently used sessions (never `keep`) until byteDelta more bytes fit. */
  makeRoom(keep: SessionRecord | undefined, byteDelta: number): void {
    const max = this.config.maxBytes;
    if (max === 0 || this.stats.bytes + byteDelta <= max) return;
    const finalSize = (keep === undefined ? 0 : sessionBytes(keep)) + byteDelta;
    if (finalSize > max) {
      throw new ResourceExhaustedError(
        `the session would take ${finalSize} bytes, more than the whole memory budget of ${max} bytes`,
      );
    }
    let candidate = this.lru.head;
    while (this.stats.bytes + byteDelta > max && candidate !== null) {
      const next = candidate.lruNext;
      if (candidate.lruUsed) {
        // Used since it last moved: it moves to the recently used end now, and is
        // evicted only if the walk reaches it there again (its flag cleared) — at once
        // when it was the last already.
        candidate.lruUsed = false;
        this.lru.touch(candidate);
        candidate = next ?? candidate;
        continue;
      }
      if (candidate !== keep) {
        const wasLive = candidate.state === LIVE;
        this.remove(candidate);
        this.stats.evictions++;
        if (wasLive) this.observer?.sessionRemoved(candidate.id, 'evicted');
      }
      candidate = next;
    }
  }

  /**
   * A refresh is made at `now`, or 1 ms after the latest refresh this node knows of if that
   * is not earlier: replicas order refreshes by that time, so two in one millisecond (or
   * one by a new owner whose clock is behind the old one's) must not tie or go back.
   */
  refreshExpiry(record: SessionRecord, ttlMs: number, now: number): void {
    const held = record.expiresAt;
    const refreshedAt = held > 0 ? Math.max(now, held - record.ttlMs + 1) : now;
    record.ttlMs = ttlMs > 0 ? ttlMs : record.ttlMs > 0 ? record.ttlMs : this.config.defaultTtlMs;
    const expiresAt = refreshedAt + record.ttlMs;
    record.expiresAt = expiresAt;
    this.wheel.scheduleNoLater(record, expiresAt);
  }

  /**
   * Takes the owner's view of ownership and expiry. Expiry: the later refresh wins (one
   * made at the same time with a longer TTL wins), so a shorter TTL replicates too.
   * Ownership goes to the higher epoch; two nodes that claimed the same epoch concurrently
   * settle on the higher node id, everywhere, whichever claim arrives first.
   */
  adoptMeta(key: SessionKey, record: SessionRecord, meta: RemoteSessionMeta): boolean {
    let changed = this.adoptOwner(key, record, meta);
    const refreshedAt = meta.expiresAt - meta.ttlMs;
    const heldRefreshedAt = record.expiresAt - record.ttlMs;
    if (refreshedAt > heldRefreshedAt || (refreshedAt === heldRefreshedAt && meta.expiresAt > record.expiresAt)) {
      record.expiresAt = meta.expiresAt;
      if (meta.ttlMs > 0) record.ttlMs = meta.ttlMs;
      changed = true;
    }
    // A tombstone's slot is its purge; a session just revived may still sit in it.
    if (record.state === LIVE) this.wheel.scheduleNoLater(record, record.expiresAt);
    return changed;
  }

  /** Ownership goes to the higher (epoch, owner id); returns whether it moved. */
  adoptOwner(key: SessionKey, record: SessionRecord, meta: RemoteSessionMeta): boolean {
    if (!(meta.epoch > record.epoch || (meta.epoch === record.epoch && meta.owner > record.owner))) return false;
    this.digests.xorSession(key, record);
    record.owner = this.intern(meta.owner);
    record.epoch = meta.epoch;
    this.digests.xorSession(key, record);
    return true;
  }

  /**
   * Marks the session used (reads and writes): a new session joins the recently used end
   * of the list; one already in it is flagged, and counts as most recently used once
   * eviction reaches it (a second chance, as in CLOCK). Flagging writes one field of the
   * record itself, where moving it would write its two neighbours too: at a million
   * sessions those are cache misses that cost a Get as much as the map lookup itself.
   */
  touchLru(record: SessionRecord): void {
    if (this.lru.has(record)) record.lruUsed = true;
    else this.lru.touch(record);
  }

  /** Expires sessions and purges tombstones that are due. */
  tick(now: number): void {
    this.wheel.due(now, (record) => {
      // A tombstone is due exactly when it was scheduled; a live session may have been
      // refreshed since (refreshes move its slot only earlier).
      if (record.state !== LIVE) this.remove(record);
      else if (!record.expiredBy(now)) this.wheel.schedule(record, record.expiresAt);
      else this.expire(record);
    });
    this.values.evacuateSparse();
  }

  /** When tick() next has work to do, or undefined. */
  nextDeadline(): number | undefined {
    return this.wheel.nextDeadline();
  }

  /** Uncounts the part at offset i as it leaves its record (its bytes and, if live, its value). */
  private dropValue(slots: readonly PartSlot[], i: number): void {
    const length = valueLengthAt(slots, i);
    this.stats.bytes -= partBytes(slots[i + NAME] as string, length);
    const slab = slots[i + VALUE] as ValueSlab | null;
    if (slab === null) return;
    this.values.release(slab, length);
    this.stats.parts--;
  }

  /** Moves record's values out of a slab being evacuated (a record no longer stored holds only copies). */
  private relocateValues(record: SessionRecord, from: ValueSlab): void {
    const slots = record.parts;
    for (let i = 0; i < slots.length; i += PART_STRIDE) {
      if (slots[i + VALUE] !== from) continue;
      const to = this.values.move(from, slots[i + VALUE_OFFSET] as number, slots[i + VALUE_LENGTH] as number, record);
      slots[i + VALUE] = to;
      slots[i + VALUE_OFFSET] = this.values.lastOffset;
    }
  }

  /** Part names and node ids repeat across sessions: keep one copy of each (bounded). */
  intern(s: string): string {
    const known = this.interned.get(s);
    if (known !== undefined) return known;
    if (this.interned.size < INTERN_LIMIT) this.interned.set(s, s);
    return s;
  }
}
