/**
 * The store's rows and the bookkeeping every change to them must keep: the id map and
 * partition lists, the partition digests, accounted bytes and counts, the LRU order, the
 * expiry wheel, the string references. SessionStore decides what changes (versions,
 * compare-and-set, last-writer-wins); this table makes each change with its bookkeeping, so
 * no caller updates a digest or a byte count by hand.
 *
 * Rules:
 * - A session is a row number here (session-record.ts has the layout); readers outside the
 *   store get a view of it (view()).
 * - Every mutation that touches a digest takes the session's SessionKey: nothing here
 *   remembers which session an operation is about. Expiry and eviction, which reach other
 *   sessions in the middle of an operation, hash those sessions' ids themselves.
 * - `stats.bytes` never exceeds maxBytes after makeRoom returns: least recently used
 *   sessions are evicted whole (a read or write flags a session, and eviction moves a
 *   flagged session to the recently used end instead of evicting it: CLOCK); a session
 *   that cannot fit even alone is refused (ResourceExhaustedError) before anything changed.
 * - A live session sits in the wheel no later than its expiry (refreshes only move it
 *   earlier; tick re-schedules one not yet due); a tombstone sits at its purge time.
 * - A partition walk (snapshotsIn) yields every session the partition held when it began,
 *   as it was when the walk reached it or, for one that left the store before that (evicted,
 *   purged, discarded while a state transfer streams the partition), as it was when it left.
 * - A freed part row holds no slab (P_SLAB = NO_VALUE): value evacuation finds parts by the
 *   rows that stored into a slab, and must not move a value for a row that let it go.
 * - Reads take no clock either: every method that can expire takes `now` (Unix ms).
 */
import type { BuzHash } from './buzhash';
import { ResourceExhaustedError } from '../wire/errors';
import { ExpiryWheel } from './expiry-wheel';
import { versionTimeMs } from './hybrid-clock';
import { PartitionDigests, sessionKey, type SessionKey } from './partition-digest';
import { RowBlock } from './row-block';
import { RowLists } from './row-lists';
import {
  FLAG_BITS,
  FREE,
  IN_LRU,
  LIVE,
  LRU_USED,
  MAX_EPOCH,
  NO_VALUE,
  OWNER_SHIFT,
  P_EPOCH,
  P_LENGTH,
  P_NAME,
  P_NEXT,
  P_OFFSET,
  P_SLAB,
  P_VERSION_HIGH,
  P_VERSION_LOW,
  P_WRITER,
  PART_INTS,
  PART_ROW_BYTES,
  partBytes,
  type PartVisitor,
  S_DELETED,
  S_EPOCH,
  S_EXPIRES,
  S_FIRST_PART,
  S_FLAGS,
  S_LRU_NEXT,
  S_LRU_PREV,
  S_PART_NEXT,
  S_PART_PREV,
  S_TTL,
  S_WHEEL_KEY,
  S_WHEEL_NEXT,
  S_WHEEL_PREV,
  SESSION_DOUBLES,
  SESSION_INTS,
  SESSION_OVERHEAD_BYTES,
  SESSION_ROW_BYTES,
  STATE_MASK,
  type StoredPart,
  type StoredSession,
  TOMBSTONE,
} from './session-record';
import type { RemoteSessionMeta, SessionSnapshot } from './session-snapshot';
import { StringTable } from './string-table';
import { DEFAULT_SLAB_BYTES, readValue, type ValueSlab, ValueSlabs } from './value-slabs';
import type { StoreConfig, StoreObserver, StoreStats } from './store-config';

/** Rows per chunk of the id column (a power of two). */
const ID_CHUNK_BITS = 12;
const ID_CHUNK = 1 << ID_CHUNK_BITS;

/** Most node ids the owner field holds (S_FLAGS above OWNER_SHIFT). */
const MAX_NODES = 2 ** (32 - OWNER_SHIFT);
/** The longest TTL a row holds (S_TTL is unsigned 32-bit). */
const MAX_TTL_MS = 2 ** 32 - 1;

/** A session row as readers see it (session-record.ts: StoredSession). */
class SessionView implements StoredSession {
  constructor(
    private readonly table: SessionTable,
    private readonly row: number,
    readonly id: string,
  ) {}

  get owner(): string {
    return this.table.owner(this.held());
  }

  get epoch(): number {
    return this.table.epoch(this.held());
  }

  get ttlMs(): number {
    return this.table.ttlMs(this.held());
  }

  get expiresAt(): number {
    return this.table.expiresAt(this.held());
  }

  forEachPart(fn: PartVisitor): void {
    this.table.forEachPart(this.held(), fn);
  }

  findPart(name: string): StoredPart | undefined {
    const table = this.table;
    const p = table.partIndexOf(this.held(), name);
    return p < 0 ? undefined : table.storedPart(p);
  }

  /** The row, while it still holds this session. */
  private held(): number {
    if (this.table.idAt(this.row) !== this.id) throw new Error(`session '${this.id}' left the store while it was being read`);
    return this.row;
  }
}

/**
 * A walk of a partition's snapshots in progress: the rows it has yet to reach, and copies of
 * those that left the store before it did. Held weakly by the table: a walk its reader
 * abandoned (a cancelled stream) is forgotten with it.
 */
interface PartitionWalk {
  readonly partition: number;
  readonly pending: Set<number>;
  readonly departed: Map<number, SessionSnapshot>;
}

export class SessionTable {
  /** Session rows (live and tombstones) by id: one map, so a read hashes nothing but the map key. */
  private readonly byId = new Map<string, number>();
  /**
   * The id of each row in use (undefined: free), in chunks of ID_CHUNK rows: one array
   * grown by push keeps up to half its length again spare, 4 B a session at a million.
   */
  private readonly ids: (string | undefined)[][] = [];
  readonly sessions = new RowBlock(SESSION_ROW_BYTES, S_LRU_NEXT);
  readonly parts = new RowBlock(PART_ROW_BYTES, P_NEXT);
  /** The same rows, listed by partition. */
  readonly partitions: RowLists;
  readonly digests: PartitionDigests;
  readonly stats: StoreStats = { sessions: 0, parts: 0, tombstones: 0, bytes: 0, evictions: 0, expirations: 0 };
  private readonly wheel: ExpiryWheel;
  private readonly lru: RowLists;
  /** Owners and writers. */
  private readonly nodes = new StringTable();
  /** Part names. */
  private readonly names = new StringTable();
  /** The bytes of every part value (off the V8 heap), each stored for its part row. */
  readonly values: ValueSlabs;
  private readonly walks = new Set<WeakRef<PartitionWalk>>();

  constructor(
    private readonly config: StoreConfig,
    private readonly hasher: BuzHash,
    private readonly observer?: StoreObserver,
  ) {
    this.partitions = new RowLists(this.sessions, S_PART_PREV, S_PART_NEXT, config.partitions);
    this.lru = new RowLists(this.sessions, S_LRU_PREV, S_LRU_NEXT, 1);
    this.digests = new PartitionDigests(config.partitions);
    this.wheel = new ExpiryWheel(config.expiryResolutionMs, this.sessions);
    const slabBytes = config.valueSlabBytes ?? DEFAULT_SLAB_BYTES;
    this.values = new ValueSlabs((part, from) => this.relocateValue(part, from), { slabBytes, dedicatedMinBytes: slabBytes / 16 });
  }

  /** The key of a session id: its hash and partition, for one operation. */
  keyOf(id: string): SessionKey {
    return sessionKey(this.hasher, id, this.config.partitions);
  }

  /** The row of a session (live or tombstone), or -1; allocates nothing. */
  find(id: string): number {
    return this.byId.get(id) ?? -1;
  }

  /**
   * The read path: the row of a live, unexpired session, marked used, or -1 (one that is
   * due expires now). Reads the row's flags once and its expiry, beside them.
   */
  findLive(id: string, now: number): number {
    const row = this.byId.get(id);
    if (row === undefined) return -1;
    const i32 = this.sessions.i32;
    const at = row * SESSION_INTS + S_FLAGS;
    const flags = i32[at]!;
    if ((flags & STATE_MASK) !== LIVE) return -1;
    if (this.sessions.f64[row * SESSION_DOUBLES + S_EXPIRES]! <= now) {
      this.expire(row);
      return -1;
    }
    if ((flags & IN_LRU) === 0) this.touchLru(row);
    else if ((flags & LRU_USED) === 0) i32[at] = flags | LRU_USED;
    return row;
  }

  /**
   * A reader's view of the row (StoredSession). `id`: the session's id when the caller has
   * it at hand (equal to the row's: a Get then reads no more than the row).
   */
  view(row: number, id: string = this.idAt(row)!): StoredSession {
    return new SessionView(this, row, id);
  }

  // --- reading a session row ---

  /** The id of the session in the row, or undefined if the row is free. */
  idAt(row: number): string | undefined {
    return this.ids[row >> ID_CHUNK_BITS]?.[row & (ID_CHUNK - 1)];
  }

  private setId(row: number, id: string | undefined): void {
    const chunk = row >> ID_CHUNK_BITS;
    while (this.ids.length <= chunk) this.ids.push(new Array<string | undefined>(ID_CHUNK));
    this.ids[chunk]![row & (ID_CHUNK - 1)] = id;
  }

  state(row: number): number {
    return this.sessions.i32[row * SESSION_INTS + S_FLAGS]! & STATE_MASK;
  }

  owner(row: number): string {
    return this.nodes.at(this.sessions.i32[row * SESSION_INTS + S_FLAGS]! >>> OWNER_SHIFT);
  }

  /** The epoch (unsigned 32-bit: MAX_EPOCH at most). */
  epoch(row: number): number {
    return this.sessions.u32[row * SESSION_INTS + S_EPOCH]!;
  }

  ttlMs(row: number): number {
    return this.sessions.u32[row * SESSION_INTS + S_TTL]!;
  }

  /** Idle expiry (Unix ms), kept while a tombstone. */
  expiresAt(row: number): number {
    return this.sessions.f64[row * SESSION_DOUBLES + S_EXPIRES]!;
  }

  /** Version of the whole-session delete (or expiry); parts at or below it are gone. */
  deletedVersion(row: number): number {
    return this.sessions.f64[row * SESSION_DOUBLES + S_DELETED]!;
  }

  /** Whether the expiry is at or before `now`. */
  expiredBy(row: number, now: number): boolean {
    return this.sessions.f64[row * SESSION_DOUBLES + S_EXPIRES]! <= now;
  }

  // --- reading parts (a part is a row of the part block) ---

  /** The session's first part, or -1 (then nextPart). */
  firstPart(row: number): number {
    return this.sessions.i32[row * SESSION_INTS + S_FIRST_PART]!;
  }

  nextPart(part: number): number {
    return this.parts.i32[part * PART_INTS + P_NEXT]!;
  }

  /** The session's part called name (live or tombstone), or -1. */
  partIndexOf(row: number, name: string): number {
    const i32 = this.parts.i32;
    for (let p = this.firstPart(row); p !== -1; p = i32[p * PART_INTS + P_NEXT]!) {
      if (this.names.at(i32[p * PART_INTS + P_NAME]!) === name) return p;
    }
    return -1;
  }

  partName(part: number): string {
    return this.names.at(this.parts.i32[part * PART_INTS + P_NAME]!);
  }

  /** Whether the part holds a value (not a tombstone). */
  partLive(part: number): boolean {
    return this.parts.i32[part * PART_INTS + P_SLAB]! !== NO_VALUE;
  }

  partVersion(part: number): number {
    const at = part * PART_INTS;
    return this.parts.i32[at + P_VERSION_HIGH]! * 4294967296 + this.parts.u32[at + P_VERSION_LOW]!;
  }

  /** Sets the part's version (a whole number of at most 2^53 in magnitude). */
  private setPartVersion(part: number, version: number): void {
    const at = part * PART_INTS;
    this.parts.i32[at + P_VERSION_HIGH] = Math.floor(version / 4294967296);
    this.parts.u32[at + P_VERSION_LOW] = version >>> 0;
  }

  partWriter(part: number): string {
    return this.nodes.at(this.parts.i32[part * PART_INTS + P_WRITER]!);
  }

  partEpoch(part: number): number {
    return this.parts.u32[part * PART_INTS + P_EPOCH]!;
  }

  /** The length of the part's value (0 for a tombstone). */
  partLength(part: number): number {
    const at = part * PART_INTS;
    return this.parts.i32[at + P_SLAB]! === NO_VALUE ? 0 : this.parts.i32[at + P_LENGTH]!;
  }

  /** A copy of the part's value, or null for a tombstone. */
  partValue(part: number): Buffer | null {
    const i32 = this.parts.i32;
    const at = part * PART_INTS;
    const slab = i32[at + P_SLAB]!;
    return slab === NO_VALUE ? null : readValue(this.values.slabAt(slab), i32[at + P_OFFSET]!, i32[at + P_LENGTH]!);
  }

  /** A copy of the part as readers see it. */
  storedPart(part: number): StoredPart {
    return { name: this.partName(part), value: this.partValue(part), version: this.partVersion(part), writer: this.partWriter(part), epoch: this.partEpoch(part) };
  }

  /** Calls fn for every part of the row, tombstones included (value null); values are copies. */
  forEachPart(row: number, fn: PartVisitor): void {
    for (let p = this.firstPart(row); p !== -1; ) {
      const next = this.nextPart(p);
      fn(this.partName(p), this.partValue(p), this.partVersion(p), this.partWriter(p), this.partEpoch(p));
      p = next;
    }
  }

  /** Number of live (non-tombstone) parts. */
  countLive(row: number): number {
    let n = 0;
    for (let p = this.firstPart(row); p !== -1; p = this.nextPart(p)) if (this.partLive(p)) n++;
    return n;
  }

  /** The session's whole state, tombstones included, as a copy (a tombstone's expiry reads 0). */
  snapshot(row: number): SessionSnapshot {
    const parts: StoredPart[] = [];
    for (let p = this.firstPart(row); p !== -1; p = this.nextPart(p)) parts.push(this.storedPart(p));
    return {
      id: this.idAt(row)!,
      parts,
      owner: this.owner(row),
      epoch: this.epoch(row),
      expiresAt: this.state(row) === LIVE ? this.expiresAt(row) : 0,
      ttlMs: this.ttlMs(row),
      deletedVersion: this.deletedVersion(row),
    };
  }

  /**
   * Snapshots of every session (live or tombstone) the partition holds now, each as it is
   * when the walk reaches it, or as it was when it left the store if it left before that.
   */
  *snapshotsIn(partition: number, now: number): IterableIterator<SessionSnapshot> {
    const rows = this.partitions.rows(partition);
    const walk: PartitionWalk = { partition, pending: new Set(rows), departed: new Map() };
    const ref = new WeakRef(walk);
    if (this.walks.size >= 64) for (const held of this.walks) if (held.deref() === undefined) this.walks.delete(held);
    this.walks.add(ref);
    try {
      for (const row of rows) {
        walk.pending.delete(row);
        const departed = walk.departed.get(row);
        if (departed !== undefined) {
          walk.departed.delete(row);
          yield departed;
          continue;
        }
        this.expireIfDue(row, now);
        yield this.snapshot(row);
      }
    } finally {
      this.walks.delete(ref);
    }
  }

  /** Accounted bytes of a session: what the memory budget charges for it. */
  sessionBytes(row: number): number {
    let bytes = this.idAt(row)!.length + SESSION_OVERHEAD_BYTES;
    for (let p = this.firstPart(row); p !== -1; p = this.nextPart(p)) bytes += partBytes(this.partName(p), this.partLength(p));
    return bytes;
  }

  // --- changes ---

  /** Whether the row is live and unexpired; expires it (now) if it is due. */
  isLive(row: number, now: number): boolean {
    if (this.state(row) !== LIVE) return false;
    if (!this.expiredBy(row, now)) return true;
    this.expire(row);
    return false;
  }

  /** Expires the row (-1: none) if it is live and due, so a write finds it as a tombstone. */
  expireIfDue(row: number, now: number): void {
    if (row !== -1 && this.state(row) === LIVE && this.expiredBy(row, now)) this.expire(row);
  }

  /** Adds a live session without parts. The caller made room for it (makeRoom). */
  insert(key: SessionKey, id: string, owner: string, epoch: number): number {
    const owners = this.refNode(owner);
    const row = this.sessions.alloc();
    const f64 = this.sessions.f64;
    const i32 = this.sessions.i32;
    const d = row * SESSION_DOUBLES;
    const at = row * SESSION_INTS;
    f64[d + S_EXPIRES] = 0;
    f64[d + S_DELETED] = 0;
    f64[d + S_WHEEL_KEY] = -1;
    i32[at + S_FLAGS] = LIVE | (owners << OWNER_SHIFT);
    this.sessions.u32[at + S_EPOCH] = epoch;
    i32[at + S_TTL] = 0;
    i32[at + S_FIRST_PART] = -1;
    i32[at + S_WHEEL_PREV] = -1;
    i32[at + S_WHEEL_NEXT] = -1;
    i32[at + S_LRU_PREV] = -1;
    i32[at + S_LRU_NEXT] = -1;
    this.setId(row, id);
    this.byId.set(id, row);
    this.partitions.append(key.partition, row);
    this.stats.sessions++;
    this.stats.bytes += id.length + SESSION_OVERHEAD_BYTES;
    this.xorSession(key, row);
    return row;
  }

  /** Makes a tombstoned session live again (its parts come with the write reviving it). */
  revive(key: SessionKey, row: number): void {
    this.xorSession(key, row);
    this.setState(row, LIVE);
    this.xorSession(key, row);
    this.stats.tombstones--;
    this.stats.sessions++;
  }

  /** Sets or adds a part (value null = tombstone; its bytes are copied), keeping digest, bytes and counts. */
  setPart(key: SessionKey, row: number, name: string, value: Uint8Array | null, version: number, writer: string, epoch: number): void {
    let p = this.partIndexOf(row, name);
    if (p < 0) {
      p = this.addPart(row, name, writer);
      this.stats.bytes += partBytes(name, 0);
    } else {
      this.xorPart(key, p);
    }
    // Storing may evacuate a slab, which moves values (this part's old one too) and rewrites
    // their parts' slab and offset: the old value is read after it.
    const slab = value === null ? null : this.values.store(value, p);
    const offset = this.values.lastOffset;
    const length = value === null ? 0 : value.length;
    const i32 = this.parts.i32;
    const at = p * PART_INTS;
    const old = i32[at + P_SLAB]!;
    const oldLength = old === NO_VALUE ? 0 : i32[at + P_LENGTH]!;
    if (old !== NO_VALUE) this.values.release(this.values.slabAt(old), oldLength);
    this.stats.bytes += length - oldLength;
    if (old === NO_VALUE && slab !== null) this.stats.parts++;
    else if (old !== NO_VALUE && slab === null) this.stats.parts--;
    i32[at + P_SLAB] = slab === null ? NO_VALUE : slab.index;
    i32[at + P_OFFSET] = offset;
    i32[at + P_LENGTH] = length;
    this.setPartVersion(p, version);
    const writers = i32[at + P_WRITER]!;
    if (this.nodes.at(writers) !== writer) {
      i32[at + P_WRITER] = this.nodes.ref(writer);
      this.nodes.unref(writers);
    }
    this.parts.u32[at + P_EPOCH] = epoch;
    this.xorPart(key, p);
  }

  /** Drops part tombstones older than the retention. */
  purgePartTombstones(key: SessionKey, row: number, now: number): void {
    const horizon = now - this.config.tombstoneRetentionMs;
    this.dropParts(key, row, (p) => !this.partLive(p) && versionTimeMs(this.partVersion(p)) < horizon);
  }

  /** Makes the session a tombstone at `version`, purged tombstoneRetentionMs after `now`. */
  tombstoneSession(key: SessionKey, row: number, version: number, now: number): void {
    this.xorSession(key, row);
    this.dropParts(key, row, () => true);
    this.setState(row, TOMBSTONE);
    this.sessions.f64[row * SESSION_DOUBLES + S_DELETED] = version;
    this.xorSession(key, row);
    this.stats.sessions--;
    this.stats.tombstones++;
    this.wheel.schedule(row, now + this.config.tombstoneRetentionMs);
  }

  /**
   * A session delete at `version` from another node: parts at or below it go; parts newer
   * than it (written after the session was re-created) stay, and so does the session.
   */
  deleteUpTo(key: SessionKey, row: number, version: number, now: number): void {
    let newer = false;
    for (let p = this.firstPart(row); p !== -1; p = this.nextPart(p)) if (this.partVersion(p) > version) newer = true;
    if (!newer) {
      this.tombstoneSession(key, row, version, now);
      return;
    }
    this.xorSession(key, row);
    this.sessions.f64[row * SESSION_DOUBLES + S_DELETED] = version;
    this.xorSession(key, row);
    this.dropParts(key, row, (p) => this.partVersion(p) <= version);
  }

  /** Moves ownership to `owner` at the next epoch and re-stamps every part with it. */
  claim(key: SessionKey, row: number, owner: string): void {
    this.xorSession(key, row);
    this.setOwner(row, owner);
    const epoch = Math.min(this.epoch(row) + 1, MAX_EPOCH);
    this.sessions.u32[row * SESSION_INTS + S_EPOCH] = epoch;
    this.xorSession(key, row);
    for (let p = this.firstPart(row); p !== -1; p = this.nextPart(p)) {
      this.xorPart(key, p);
      this.parts.u32[p * PART_INTS + P_EPOCH] = epoch;
      this.xorPart(key, p);
    }
  }

  /** Idle expiry: the session becomes a tombstone at the version of its newest part. */
  expire(row: number): void {
    let newest = this.deletedVersion(row);
    for (let p = this.firstPart(row); p !== -1; p = this.nextPart(p)) newest = Math.max(newest, this.partVersion(p));
    const id = this.idAt(row)!;
    this.tombstoneSession(this.keyOf(id), row, newest, this.expiresAt(row));
    this.stats.expirations++;
    this.observer?.sessionRemoved(id, 'expired');
  }

  /** Drops a session without a trace (tombstone purge, eviction, discard); its views read no more. */
  remove(row: number): void {
    const id = this.idAt(row)!;
    const key = this.keyOf(id);
    if (this.walks.size > 0) this.keepForWalks(row, key.partition);
    this.dropParts(key, row, () => true);
    this.xorSession(key, row);
    this.byId.delete(id);
    this.partitions.remove(key.partition, row);
    this.wheel.cancel(row);
    if (this.lru.contains(0, row)) this.lru.remove(0, row);
    this.stats.bytes -= id.length + SESSION_OVERHEAD_BYTES;
    if (this.state(row) === LIVE) this.stats.sessions--;
    else this.stats.tombstones--;
    const i32 = this.sessions.i32;
    this.nodes.unref(i32[row * SESSION_INTS + S_FLAGS]! >>> OWNER_SHIFT);
    i32[row * SESSION_INTS + S_FLAGS] = FREE;
    this.setId(row, undefined);
    this.sessions.free(row);
  }

  /** Evicts least recently used sessions (never `keep`; -1: none) until byteDelta more bytes fit. */
  makeRoom(keep: number, byteDelta: number): void {
    const max = this.config.maxBytes;
    if (max === 0 || this.stats.bytes + byteDelta <= max) return;
    const finalSize = (keep === -1 ? 0 : this.sessionBytes(keep)) + byteDelta;
    if (finalSize > max) {
      throw new ResourceExhaustedError(
        `the session would take ${finalSize} bytes, more than the whole memory budget of ${max} bytes`,
      );
    }
    const lru = this.lru;
    let candidate = lru.head(0);
    while (this.stats.bytes + byteDelta > max && candidate !== -1) {
      const next = lru.next(candidate);
      const flagsAt = candidate * SESSION_INTS + S_FLAGS;
      if ((this.sessions.i32[flagsAt]! & LRU_USED) !== 0) {
        // Used since it last moved: it moves to the recently used end now, and is
        // evicted only if the walk reaches it there again (its flag cleared) — at once
        // when it was the last already.
        this.sessions.i32[flagsAt] = this.sessions.i32[flagsAt]! & ~LRU_USED;
        if (!lru.isTail(0, candidate)) {
          lru.remove(0, candidate);
          lru.append(0, candidate);
        }
        candidate = next === -1 ? candidate : next;
        continue;
      }
      if (candidate !== keep) {
        const wasLive = this.state(candidate) === LIVE;
        const id = this.idAt(candidate)!;
        this.remove(candidate);
        this.stats.evictions++;
        if (wasLive) this.observer?.sessionRemoved(id, 'evicted');
      }
      candidate = next;
    }
  }

  /**
   * A refresh is made at `now`, or 1 ms after the latest refresh this node knows of if that
   * is not earlier: replicas order refreshes by that time, so two in one millisecond (or
   * one by a new owner whose clock is behind the old one's) must not tie or go back.
   */
  refreshExpiry(row: number, ttlMs: number, now: number): void {
    const held = this.expiresAt(row);
    const heldTtl = this.ttlMs(row);
    const refreshedAt = held > 0 ? Math.max(now, held - heldTtl + 1) : now;
    this.setTtl(row, ttlMs > 0 ? ttlMs : heldTtl > 0 ? heldTtl : this.config.defaultTtlMs);
    const expiresAt = refreshedAt + this.ttlMs(row);
    this.sessions.f64[row * SESSION_DOUBLES + S_EXPIRES] = expiresAt;
    this.wheel.scheduleNoLater(row, expiresAt);
  }

  /**
   * Takes the owner's view of ownership and expiry. Expiry: the later refresh wins (one
   * made at the same time with a longer TTL wins), so a shorter TTL replicates too.
   * Ownership goes to the higher epoch; two nodes that claimed the same epoch concurrently
   * settle on the higher node id, everywhere, whichever claim arrives first.
   */
  adoptMeta(key: SessionKey, row: number, meta: RemoteSessionMeta): boolean {
    let changed = this.adoptOwner(key, row, meta);
    const expiresAt = this.expiresAt(row);
    const refreshedAt = meta.expiresAt - meta.ttlMs;
    const heldRefreshedAt = expiresAt - this.ttlMs(row);
    if (refreshedAt > heldRefreshedAt || (refreshedAt === heldRefreshedAt && meta.expiresAt > expiresAt)) {
      this.sessions.f64[row * SESSION_DOUBLES + S_EXPIRES] = meta.expiresAt;
      if (meta.ttlMs > 0) this.setTtl(row, meta.ttlMs);
      changed = true;
    }
    // A tombstone's slot is its purge; a session just revived may still sit in it.
    if (this.state(row) === LIVE) this.wheel.scheduleNoLater(row, this.expiresAt(row));
    return changed;
  }

  /** Ownership goes to the higher (epoch, owner id); returns whether it moved. */
  adoptOwner(key: SessionKey, row: number, meta: RemoteSessionMeta): boolean {
    const epoch = this.epoch(row);
    if (!(meta.epoch > epoch || (meta.epoch === epoch && meta.owner > this.owner(row)))) return false;
    this.xorSession(key, row);
    this.setOwner(row, meta.owner);
    this.sessions.u32[row * SESSION_INTS + S_EPOCH] = meta.epoch;
    this.xorSession(key, row);
    return true;
  }

  /** Sets the TTL a row holds (at most MAX_TTL_MS). */
  setTtl(row: number, ttlMs: number): void {
    this.sessions.u32[row * SESSION_INTS + S_TTL] = Math.min(Math.max(0, ttlMs), MAX_TTL_MS);
  }

  /**
   * Marks the session used (reads and writes): a new session joins the recently used end
   * of the list; one already in it is flagged, and counts as most recently used once
   * eviction reaches it (a second chance, as in CLOCK). Flagging writes one field of the
   * row itself, where moving it would write its two neighbours too: at a million
   * sessions those are cache misses that cost a Get as much as the map lookup itself.
   */
  touchLru(row: number): void {
    const i32 = this.sessions.i32;
    const at = row * SESSION_INTS + S_FLAGS;
    const flags = i32[at]!;
    if ((flags & IN_LRU) !== 0) {
      if ((flags & LRU_USED) === 0) i32[at] = flags | LRU_USED;
      return;
    }
    i32[at] = flags | IN_LRU;
    this.lru.append(0, row);
  }

  /** Expires sessions and purges tombstones that are due. */
  tick(now: number): void {
    this.wheel.due(now, (row) => {
      // A tombstone is due exactly when it was scheduled; a live session may have been
      // refreshed since (refreshes move its slot only earlier).
      if (this.state(row) !== LIVE) this.remove(row);
      else if (!this.expiredBy(row, now)) this.wheel.schedule(row, this.expiresAt(row));
      else this.expire(row);
    });
    this.values.evacuateSparse();
  }

  /** When tick() next has work to do, or undefined. */
  nextDeadline(): number | undefined {
    return this.wheel.nextDeadline();
  }

  /** Bytes of the row buffers: allocated (they double and never shrink) and used by rows in use. */
  rowMemory(): { allocated: number; used: number } {
    const { sessions, parts } = this;
    return { allocated: sessions.bytes + parts.bytes, used: sessions.count * sessions.rowBytes + parts.count * parts.rowBytes };
  }

  /** A copy of a row about to leave, for each walk of its partition that has yet to reach it. */
  private keepForWalks(row: number, partition: number): void {
    let copy: SessionSnapshot | undefined;
    for (const ref of this.walks) {
      const walk = ref.deref();
      if (walk === undefined) {
        this.walks.delete(ref);
        continue;
      }
      if (walk.partition !== partition || !walk.pending.has(row) || walk.departed.has(row)) continue;
      copy ??= this.snapshot(row);
      walk.departed.set(row, copy);
    }
  }

  private setState(row: number, state: number): void {
    const at = row * SESSION_INTS + S_FLAGS;
    this.sessions.i32[at] = (this.sessions.i32[at]! & ~STATE_MASK) | state;
  }

  /** A reference to a node id for the owner field, which holds fewer than MAX_NODES. */
  private refNode(nodeId: string): number {
    const index = this.nodes.ref(nodeId);
    if (index < MAX_NODES) return index;
    this.nodes.unref(index);
    throw new ResourceExhaustedError(`the store knows ${MAX_NODES} node ids already`);
  }

  private setOwner(row: number, owner: string): void {
    const i32 = this.sessions.i32;
    const at = row * SESSION_INTS + S_FLAGS;
    const held = i32[at]! >>> OWNER_SHIFT;
    if (this.nodes.at(held) === owner) return;
    const index = this.refNode(owner);
    i32[at] = (i32[at]! & FLAG_BITS) | (index << OWNER_SHIFT);
    this.nodes.unref(held);
  }

  /** A new part row at the end of the session's list, without a value (a tombstone until set). */
  private addPart(row: number, name: string, writer: string): number {
    const p = this.parts.alloc();
    const i32 = this.parts.i32;
    const at = p * PART_INTS;
    this.setPartVersion(p, 0);
    i32[at + P_NAME] = this.names.ref(name);
    i32[at + P_WRITER] = this.nodes.ref(writer);
    i32[at + P_EPOCH] = 0;
    i32[at + P_SLAB] = NO_VALUE;
    i32[at + P_OFFSET] = 0;
    i32[at + P_LENGTH] = 0;
    i32[at + P_NEXT] = -1;
    let last = this.firstPart(row);
    if (last === -1) {
      this.sessions.i32[row * SESSION_INTS + S_FIRST_PART] = p;
      return p;
    }
    for (let next = this.nextPart(last); next !== -1; next = this.nextPart(last)) last = next;
    i32[last * PART_INTS + P_NEXT] = p;
    return p;
  }

  /** Takes the parts `drop` picks out of the session: out of its digest, bytes and counts, their rows freed. */
  private dropParts(key: SessionKey, row: number, drop: (part: number) => boolean): void {
    let prev = -1;
    for (let p = this.firstPart(row); p !== -1; ) {
      const next = this.nextPart(p);
      if (!drop(p)) {
        prev = p;
        p = next;
        continue;
      }
      this.xorPart(key, p);
      const length = this.partLength(p);
      this.stats.bytes -= partBytes(this.partName(p), length);
      const i32 = this.parts.i32;
      const at = p * PART_INTS;
      const slab = i32[at + P_SLAB]!;
      if (slab !== NO_VALUE) {
        this.values.release(this.values.slabAt(slab), length);
        this.stats.parts--;
      }
      if (prev === -1) this.sessions.i32[row * SESSION_INTS + S_FIRST_PART] = next;
      else i32[prev * PART_INTS + P_NEXT] = next;
      this.names.unref(i32[at + P_NAME]!);
      this.nodes.unref(i32[at + P_WRITER]!);
      i32[at + P_SLAB] = NO_VALUE;
      this.parts.free(p);
      p = next;
    }
  }

  /** XORs the part in or out of its session's partition digest. */
  private xorPart(key: SessionKey, part: number): void {
    this.digests.xorPart(key, !this.partLive(part), this.partName(part), this.partEpoch(part), this.partVersion(part), this.partWriter(part));
  }

  /** XORs the session's header in or out of its partition digest. */
  private xorSession(key: SessionKey, row: number): void {
    this.digests.xorSession(key, this.state(row) === TOMBSTONE ? 1 : 0, this.epoch(row), this.deletedVersion(row), this.owner(row));
  }

  /** Moves the part's value out of a slab being evacuated (a row that let its value go holds none). */
  private relocateValue(part: number, from: ValueSlab): void {
    const i32 = this.parts.i32;
    const at = part * PART_INTS;
    if (i32[at + P_SLAB] !== from.index) return;
    const to = this.values.move(from, i32[at + P_OFFSET]!, i32[at + P_LENGTH]!, part);
    i32[at + P_SLAB] = to.index;
    i32[at + P_OFFSET] = this.values.lastOffset;
  }
}
