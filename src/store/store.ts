/**
 * The session store: sessions of named parts, partitioned by buzhash64(id) mod P.
 *
 * Invariants:
 * - Every part carries a hybrid-logical-clock version and its writer; a Put gives all of
 *   its parts one new version, so a Put is atomic and ordered as a unit.
 * - Deleting leaves a tombstone (a part with no value, or a session with deletedVersion)
 *   for `tombstoneRetentionMs`, so a late, older write cannot bring deleted state back.
 * - Each partition keeps an order-independent digest: the XOR of a 64-bit hash of every
 *   entry (part, part tombstone, session header), updated in O(1) on every change.
 * - Sessions expire after ttl of idleness (refreshed by writes and touches, not reads).
 *   A replica's expiry is the owner's latest refresh: ordered by when the owner made it
 *   (expiresAt − ttlMs on the owner's clock), so a write or touch that shortens the TTL
 *   replicates too. A tombstone keeps that refresh (its own purge time lives only in the
 *   expiry wheel): a refresh a replica learns of before or while it holds the tombstone
 *   still counts when a put revives the session.
 * - `bytes` never exceeds maxBytes after an operation returns: least recently used
 *   sessions are evicted whole; a write that cannot fit even alone is refused.
 * - Reads never see an expired session, whether or not the expiry sweep has run.
 *
 * The store reads no clock: every method takes `now` (Unix ms).
 *
 * Ownership: a session has an owner and an epoch; a claim (a resume on another node) moves
 * ownership at epoch + 1 and re-stamps every part with the new epoch. Parts are ordered by
 * (epoch, version, writer), so a write the old owner makes before it learns of the claim
 * carries the old epoch and loses to the claimed copy of that part, on every node, in
 * any order of arrival. Ownership itself goes to the higher (epoch, owner id).
 *
 * Memory layout (measured by `npm run bench:store`): a session's parts are one flat array
 * [name, value, version, writer, epoch, name, value, …] of exact length, rather than an object per
 * part in a growable array; values are latin1 strings (one byte per character, in the V8
 * heap), a fraction of what a Buffer per value costs. Bytes are converted at the edges.
 */
import { BuzHash, fmix32, mixWord, partitionOfHash } from './buzhash';
import { InvalidArgumentError, PreconditionFailedError, ResourceExhaustedError } from '../wire/errors';
import { ExpiryWheel, WheelEntry } from './expiry-wheel';
import { HybridClock, newerThan, versionTimeMs } from './hybrid-clock';

/**
 * Estimated heap cost of a session beyond its id (record, map entry, parts array, boxed
 * numbers, expiry slot). With PART_OVERHEAD_BYTES, fitted to bench:store at 1M sessions
 * (1 and 4 parts of 100 B: 448 and 896-944 B of heap per session; charged 440 and 942).
 */
export const SESSION_OVERHEAD_BYTES = 240;
/** Estimated heap cost of a part beyond its name and value (object, boxed version). */
export const PART_OVERHEAD_BYTES = 64;

export interface StoreConfig {
  /** This node's id: the writer and owner of local writes. */
  nodeId: string;
  /** Number of partitions P; sessions live in partition buzhash64(id) mod P. */
  partitions: number;
  /** Idle expiry used when a write names no TTL, in ms. */
  defaultTtlMs: number;
  /** Memory budget in accounted bytes; 0 = unlimited. */
  maxBytes: number;
  /** Most live parts one session may hold. */
  maxPartsPerSession: number;
  /** How long tombstones of deleted or expired state are kept, in ms. */
  tombstoneRetentionMs: number;
  /** Granularity of the expiry sweep, in ms. */
  expiryResolutionMs: number;
}

export const DEFAULT_STORE_CONFIG: Omit<StoreConfig, 'nodeId'> = {
  partitions: 256,
  defaultTtlMs: 1800_000,
  maxBytes: 0,
  maxPartsPerSession: 64,
  tombstoneRetentionMs: 300_000,
  expiryResolutionMs: 1000,
};

/** Why the store dropped a session, for observers. */
export type RemovalReason = 'expired' | 'evicted';

/** Receives every change, synchronously, after it is applied. */
export interface StoreObserver {
  partPut(session: StoredSession, name: string, value: string, version: number, writer: string): void;
  /** partName is '' when the whole session was deleted. */
  partDeleted(sessionId: string, partName: string): void;
  sessionRemoved(sessionId: string, reason: RemovalReason): void;
  /** Ownership of a session moved (a claim, local or replicated). */
  claimed?(session: StoredSession): void;
}

/** One part, as handed to readers and observers (a copy; the store keeps its own layout). */
export interface StoredPart {
  readonly name: string;
  /** The value's bytes as a latin1 string; null for a tombstone. */
  readonly value: string | null;
  readonly version: number;
  readonly writer: string;
  /** The session's epoch when the part was written (or claimed). */
  readonly epoch: number;
}

export interface StoredSession {
  readonly id: string;
  /**
   * Live parts and part tombstones, flat: PART_STRIDE slots per part at offsets
   * NAME, VALUE (latin1 string, or null for a tombstone), VERSION, WRITER, EPOCH.
   * Read it with forEachPart / partAt rather than by hand.
   */
  readonly parts: readonly PartSlot[];
  readonly owner: string;
  readonly epoch: number;
  readonly ttlMs: number;
  readonly expiresAt: number;
}

export type PartSlot = string | number | null;
export const PART_STRIDE = 5;
const NAME = 0;
const VALUE = 1;
const VERSION = 2;
const WRITER = 3;
const EPOCH = 4;

/** Whether part state (epoch, version, writer) is newer than (otherEpoch, …): the part order. */
export function partNewerThan(epoch: number, version: number, writer: string, otherEpoch: number, otherVersion: number, otherWriter: string): boolean {
  return epoch > otherEpoch || (epoch === otherEpoch && newerThan(version, writer, otherVersion, otherWriter));
}

/** Calls fn for every part of a session, tombstones included (value null). */
export function forEachPart(
  session: StoredSession,
  fn: (name: string, value: string | null, version: number, writer: string, epoch: number) => void,
): void {
  const slots = session.parts;
  for (let i = 0; i < slots.length; i += PART_STRIDE) {
    fn(slots[i + NAME] as string, slots[i + VALUE] as string | null, slots[i + VERSION] as number, slots[i + WRITER] as string, slots[i + EPOCH] as number);
  }
}

/** The part called name (live or tombstone), or undefined. */
export function findStoredPart(session: StoredSession, name: string): StoredPart | undefined {
  const slots = session.parts;
  const i = indexOfPart(slots, name);
  if (i < 0) return undefined;
  return {
    name: slots[i + NAME] as string,
    value: slots[i + VALUE] as string | null,
    version: slots[i + VERSION] as number,
    writer: slots[i + WRITER] as string,
    epoch: slots[i + EPOCH] as number,
  };
}

export interface PartWriteRequest {
  name: string;
  value: Uint8Array;
  /** Compare-and-set: the current version this part must have (0 = must not exist). */
  ifVersion?: number | undefined;
}

/** A change made on another node, as replication delivers it (epoch: the part's epoch). */
export type RemoteChange =
  | { kind: 'put'; name: string; value: string; version: number; writer: string; epoch: number }
  | { kind: 'delete_part'; name: string; version: number; writer: string; epoch: number }
  | { kind: 'delete_session'; version: number }
  | { kind: 'touch' }
  | { kind: 'claim' };

/** Session-level facts every remote change carries from the owner. */
export interface RemoteSessionMeta {
  owner: string;
  epoch: number;
  expiresAt: number;
  ttlMs: number;
}

/** A session's whole replicated state, for state transfer. */
export interface SessionSnapshot {
  id: string;
  /** Parts and part tombstones (value null). */
  parts: StoredPart[];
  owner: string;
  epoch: number;
  expiresAt: number;
  ttlMs: number;
  /** Non-zero when the session is deleted: state at or below it is gone. */
  deletedVersion: number;
}

export interface PutResult {
  /** The version every written part now has. */
  version: number;
  expiresAt: number;
}

export interface StoreStats {
  sessions: number;
  parts: number;
  tombstones: number;
  bytes: number;
  evictions: number;
  expirations: number;
}

const LIVE = 0;
const TOMBSTONE = 1;

class SessionRecord implements StoredSession, WheelEntry {
  parts: PartSlot[] = EMPTY;
  owner: string;
  epoch = 1;
  ttlMs = 0;
  /** Idle expiry (Unix ms), kept while a tombstone; a tombstone's purge is only scheduled. */
  expiresAt = 0;
  state = LIVE;
  /** Version of the whole-session delete (or expiry); parts at or below it are gone. */
  deletedVersion = 0;
  lruPrev: SessionRecord | null = null;
  lruNext: SessionRecord | null = null;
  wheelKey = -1;
  wheelIndex = -1;

  constructor(
    readonly id: string,
    owner: string,
  ) {
    this.owner = owner;
  }
}

const EMPTY: PartSlot[] = [];

/** Accounted bytes of a session: what the memory budget charges for it. */
function sessionBytes(record: SessionRecord): number {
  let bytes = record.id.length + SESSION_OVERHEAD_BYTES;
  const slots = record.parts;
  for (let i = 0; i < slots.length; i += PART_STRIDE) bytes += partBytes(slots[i + NAME] as string, slots[i + VALUE] as string | null);
  return bytes;
}

function partBytes(name: string, value: string | null): number {
  return name.length + PART_OVERHEAD_BYTES + (value === null ? 0 : value.length);
}

class Partition {
  readonly sessions = new Map<string, SessionRecord>();
  digestHi = 0;
  digestLo = 0;
}

const DIGEST_SEED_HI = 0x5bd1e995;
const DIGEST_SEED_LO = 0x27d4eb2f;
const ENTRY_PART = 1;
const ENTRY_PART_TOMBSTONE = 2;
const ENTRY_SESSION = 3;
const INTERN_LIMIT = 4096;

export class SessionStore {
  private readonly partitions: Partition[] = [];
  private readonly wheel: ExpiryWheel<SessionRecord>;
  private lruHead: SessionRecord | null = null;
  private lruTail: SessionRecord | null = null;
  private readonly interned = new Map<string, string>();
  private readonly stringHashes = new Map<string, number>();
  private readonly stats: StoreStats = { sessions: 0, parts: 0, tombstones: 0, bytes: 0, evictions: 0, expirations: 0 };
  /** Hash halves and partition of the session the current operation is about (see loadKey). */
  private keyHi = 0;
  private keyLo = 0;
  private keyPartition = 0;

  constructor(
    readonly config: StoreConfig,
    private readonly hasher: BuzHash,
    private readonly clock: HybridClock,
    private readonly observer?: StoreObserver,
  ) {
    for (let i = 0; i < config.partitions; i++) this.partitions.push(new Partition());
    this.wheel = new ExpiryWheel(config.expiryResolutionMs);
  }

  /** The partition a session id belongs to. */
  partitionOf(id: string): number {
    return this.hasher.partitionOf(id, this.config.partitions);
  }

  /** A live, unexpired session, or undefined. Marks it recently used. */
  get(id: string, now: number): StoredSession | undefined {
    const record = this.lookup(id);
    if (record === undefined || !this.isLive(record, now)) return undefined;
    this.lruTouch(record);
    return record;
  }

  /**
   * Writes parts atomically. ttlMs 0 keeps the session's TTL (or the default for a new
   * session). Throws PreconditionFailedError, InvalidArgumentError (too many parts) or
   * ResourceExhaustedError; on a throw nothing has changed.
   */
  put(id: string, writes: readonly PartWriteRequest[], ttlMs: number, now: number): PutResult {
    let record = this.lookup(id);
    if (record !== undefined && record.state === LIVE && record.expiresAt <= now) this.expire(record);
    const live = record !== undefined && record.state === LIVE;
    const slots = record === undefined ? EMPTY : record.parts;

    let added = 0;
    let byteDelta = record === undefined ? id.length + SESSION_OVERHEAD_BYTES : 0;
    for (const write of writes) {
      const at = indexOfPart(slots, write.name);
      const oldValue = at < 0 ? null : (slots[at + VALUE] as string | null);
      const current = live && oldValue !== null ? (slots[at + VERSION] as number) : 0;
      if (write.ifVersion !== undefined && write.ifVersion !== current) {
        throw new PreconditionFailedError(
          current === 0
            ? `part '${write.name}' does not exist, but if_version ${write.ifVersion} was expected`
            : `part '${write.name}' is at version ${current}, not the expected ${write.ifVersion}`,
        );
      }
      if (current === 0) added++;
      byteDelta +=
        at < 0 ? write.name.length + PART_OVERHEAD_BYTES + write.value.length : write.value.length - (oldValue?.length ?? 0);
    }
    const liveParts = live ? countLive(slots) : 0;
    if (liveParts + added > this.config.maxPartsPerSession) {
      throw new InvalidArgumentError(
        `the session would hold ${liveParts + added} parts, over the limit of ${this.config.maxPartsPerSession}`,
      );
    }
    this.makeRoom(record, byteDelta);

    if (record === undefined) record = this.insert(id);
    else if (record.state === TOMBSTONE) this.revive(record);
    const version = this.clock.tick(now);
    const writer = this.config.nodeId;
    for (const write of writes) {
      this.setPart(record, write.name, latin1(write.value), version, writer, record.epoch);
    }
    this.purgePartTombstones(record, now);
    this.refreshExpiry(record, ttlMs, now);
    this.lruTouch(record);
    if (this.observer !== undefined) {
      const parts = record.parts;
      for (const write of writes) {
        const at = indexOfPart(parts, write.name);
        this.observer.partPut(record, parts[at + NAME] as string, parts[at + VALUE] as string, version, writer);
      }
    }
    return { version, expiresAt: record.expiresAt };
  }

  /**
   * Deletes the named parts, or the whole session when names is empty. Returns whether
   * the session (or any named part) existed.
   */
  delete(id: string, names: readonly string[], now: number): boolean {
    const record = this.lookup(id);
    if (record === undefined || !this.isLive(record, now)) return false;
    if (names.length === 0) {
      this.tombstoneSession(record, this.clock.tick(now), now);
      this.observer?.partDeleted(id, '');
      return true;
    }
    const deleted = names.filter((name) => {
      const at = indexOfPart(record.parts, name);
      return at >= 0 && record.parts[at + VALUE] !== null;
    });
    if (deleted.length === 0) return false;
    const version = this.clock.tick(now);
    for (const name of deleted) this.setPart(record, name, null, version, this.config.nodeId, record.epoch);
    this.purgePartTombstones(record, now);
    this.lruTouch(record);
    if (this.observer !== undefined) for (const name of deleted) this.observer.partDeleted(id, name);
    return true;
  }

  /** Refreshes idle expiry (ttlMs 0 = the session's TTL). Returns the new expiry, or undefined. */
  touch(id: string, ttlMs: number, now: number): number | undefined {
    const record = this.lookup(id);
    if (record === undefined || !this.isLive(record, now)) return undefined;
    this.refreshExpiry(record, ttlMs, now);
    this.lruTouch(record);
    return record.expiresAt;
  }

  /**
   * Applies a change made on another node. Idempotent and order-independent: a part
   * changes only if the change is newer by (version, writer); nothing at or below a
   * session delete comes back; ownership moves only to a higher epoch; expiry follows the
   * owner's latest refresh, also while the session is a tombstone (a touch or claim that
   * overtakes the put reviving it is kept for it). Returns whether anything changed.
   */
  applyRemote(id: string, change: RemoteChange, meta: RemoteSessionMeta, now: number): boolean {
    let record = this.lookup(id);
    if (record !== undefined && record.state === LIVE && record.expiresAt <= now) this.expire(record);
    const versioned = change.kind === 'put' || change.kind === 'delete_part' || change.kind === 'delete_session';
    if (versioned) {
      this.clock.observe(change.version, now);
      if (record !== undefined && change.version <= record.deletedVersion) {
        // The change itself is gone, but its header is still the owner's view when it was
        // made (a put refreshed expiry); a delete's header carries no refresh.
        if (change.kind === 'delete_session') return this.adoptOwner(record, meta);
        return meta.expiresAt > now && this.adoptMeta(record, meta);
      }
    }
    // Deletes are kept even for a session this node has not seen yet (they may overtake
    // its first put); other changes to a session that has already expired are not.
    if (change.kind !== 'delete_session' && meta.expiresAt <= now) return false;
    switch (change.kind) {
      case 'put':
      case 'delete_part': {
        const value = change.kind === 'put' ? change.value : null;
        const at = record === undefined ? -1 : indexOfPart(record.parts, change.name);
        const slots = at < 0 ? EMPTY : record!.parts;
        if (at >= 0 && !partNewerThan(change.epoch, change.version, change.writer, slots[at + EPOCH] as number, slots[at + VERSION] as number, slots[at + WRITER] as string)) {
          return this.adoptMeta(record!, meta);
        }
        const old = at < 0 ? null : (record!.parts[at + VALUE] as string | null);
        const byteDelta =
          (record === undefined ? id.length + SESSION_OVERHEAD_BYTES : 0) +
          (at < 0 ? partBytes(change.name, value) : (value?.length ?? 0) - (old?.length ?? 0));
        this.makeRoom(record, byteDelta);
        if (record === undefined) record = this.insert(id, meta.owner, meta.epoch);
        else if (record.state === TOMBSTONE) this.revive(record);
        this.adoptMeta(record, meta);
        this.setPart(record, change.name, value, change.version, this.intern(change.writer), change.epoch);
        this.lruTouch(record);
        if (value !== null) this.observer?.partPut(record, change.name, value, change.version, change.writer);
        else if (old !== null) this.observer?.partDeleted(id, change.name);
        return true;
      }
      case 'delete_session': {
        if (record === undefined) {
          this.makeRoom(undefined, id.length + SESSION_OVERHEAD_BYTES);
          record = this.insert(id, meta.owner, meta.epoch);
          record.ttlMs = meta.ttlMs;
        }
        // The tombstone's header is the owner's (a claim it overtook may come later); its
        // expiry is not: a delete does not refresh the session.
        this.adoptOwner(record, meta);
        const wasLive = record.state === LIVE;
        this.deleteUpTo(record, change.version, now);
        if (wasLive) this.observer?.partDeleted(id, '');
        return true;
      }
      case 'touch':
      case 'claim': {
        // A tombstone takes them too: the put that revived the session on the owner (with
        // an older expiry than this touch) may not have arrived yet, or this claim came
        // before the delete the tombstone stands for.
        if (record === undefined) {
          // The session's first put has not arrived yet: hold its header so the owner's
          // expiry and ownership are not lost when it does.
          this.makeRoom(undefined, id.length + SESSION_OVERHEAD_BYTES);
          record = this.insert(id, meta.owner, meta.epoch);
        }
        const changed = this.adoptMeta(record, meta);
        if (changed && change.kind === 'claim' && record.state === LIVE) this.observer?.claimed?.(record);
        return changed;
      }
    }
  }

  /**
   * A session delete at `version` from another node: parts at or below it go; parts newer
   * than it (written after the session was re-created) stay, and so does the session.
   */
  private deleteUpTo(record: SessionRecord, version: number, now: number): void {
    const slots = record.parts;
    let newer = false;
    for (let i = 0; i < slots.length; i += PART_STRIDE) if ((slots[i + VERSION] as number) > version) newer = true;
    if (!newer) {
      this.tombstoneSession(record, version, now);
      return;
    }
    this.xorSessionEntry(record);
    record.deletedVersion = version;
    this.xorSessionEntry(record);
    const kept: PartSlot[] = [];
    for (let i = 0; i < slots.length; i += PART_STRIDE) {
      if ((slots[i + VERSION] as number) > version) {
        kept.push(slots[i + NAME]!, slots[i + VALUE]!, slots[i + VERSION]!, slots[i + WRITER]!, slots[i + EPOCH]!);
        continue;
      }
      this.xorPart(slots, i);
      this.stats.bytes -= partBytes(slots[i + NAME] as string, slots[i + VALUE] as string | null);
      if (slots[i + VALUE] !== null) this.stats.parts--;
    }
    record.parts = kept.slice();
  }

  /**
   * The owner and epoch this node holds for a session (live or a tombstone), without
   * marking it used: replication checks it on deltas it receives.
   */
  ownerOf(id: string): { owner: string; epoch: number } | undefined {
    const record = this.lookup(id);
    return record === undefined ? undefined : { owner: record.owner, epoch: record.epoch };
  }

  /** A session's full state, tombstones included, or undefined if unknown. */
  snapshot(id: string, now: number): SessionSnapshot | undefined {
    const record = this.lookup(id);
    if (record === undefined) return undefined;
    if (record.state === LIVE && record.expiresAt <= now) this.expire(record);
    return snapshotOf(record);
  }

  /** Snapshots of every session (live or tombstone) held in a partition. */
  *snapshotsIn(partition: number, now: number): IterableIterator<SessionSnapshot> {
    for (const record of [...this.partitions[partition]!.sessions.values()]) {
      if (record.state === LIVE && record.expiresAt <= now) this.expire(record);
      yield snapshotOf(record);
    }
  }

  /** Merges a snapshot from a peer, part by part, with applyRemote's rules. */
  merge(snapshot: SessionSnapshot, now: number): boolean {
    const meta: RemoteSessionMeta = { owner: snapshot.owner, epoch: snapshot.epoch, expiresAt: snapshot.expiresAt, ttlMs: snapshot.ttlMs };
    let changed = false;
    if (snapshot.deletedVersion > 0) {
      changed = this.applyRemote(snapshot.id, { kind: 'delete_session', version: snapshot.deletedVersion }, meta, now) || changed;
    }
    for (const part of snapshot.parts) {
      const change: RemoteChange =
        part.value === null
          ? { kind: 'delete_part', name: part.name, version: part.version, writer: part.writer, epoch: part.epoch }
          : { kind: 'put', name: part.name, value: part.value, version: part.version, writer: part.writer, epoch: part.epoch };
      changed = this.applyRemote(snapshot.id, change, meta, now) || changed;
    }
    return this.applyRemote(snapshot.id, { kind: 'claim' }, meta, now) || changed;
  }

  /**
   * Makes `owner` the owner at the next epoch (a resume) and re-stamps every part, tombstones
   * included, with that epoch: the old owner's later writes carry a lower epoch and lose.
   * Returns the new epoch, or undefined if the session is not live here.
   */
  claim(id: string, owner: string, now: number): number | undefined {
    const record = this.lookup(id);
    if (record === undefined || !this.isLive(record, now)) return undefined;
    this.xorSessionEntry(record);
    record.owner = this.intern(owner);
    record.epoch++;
    this.xorSessionEntry(record);
    const slots = record.parts;
    for (let i = 0; i < slots.length; i += PART_STRIDE) {
      this.xorPart(slots, i);
      slots[i + EPOCH] = record.epoch;
      this.xorPart(slots, i);
    }
    this.lruTouch(record);
    this.observer?.claimed?.(record);
    return record.epoch;
  }

  /** Drops a session held for replication that this node no longer needs (placement moved). */
  discard(id: string): boolean {
    const record = this.lookup(id);
    if (record === undefined) return false;
    this.remove(record);
    return true;
  }

  /**
   * Drops every session (live or tombstone) for which drop(owner, partition) is true;
   * returns how many. For copies a node no longer holds after placement moved.
   */
  discardWhere(drop: (owner: string, partition: number) => boolean): number {
    let dropped = 0;
    for (let p = 0; p < this.partitions.length; p++) {
      const sessions = this.partitions[p]!.sessions;
      if (sessions.size === 0) continue;
      for (const record of [...sessions.values()]) {
        if (!drop(record.owner, p)) continue;
        this.remove(record);
        dropped++;
      }
    }
    return dropped;
  }

  /** Expires sessions and purges tombstones that are due. */
  tick(now: number): void {
    this.wheel.due(now, (record) => {
      // A tombstone is due exactly when it was scheduled; a live session may have been
      // refreshed since (refreshes move its slot only earlier).
      if (record.state !== LIVE) this.remove(record);
      else if (record.expiresAt > now) this.wheel.schedule(record, record.expiresAt);
      else this.expire(record);
    });
  }

  /** When tick() next has work to do, or undefined. */
  nextDeadline(): number | undefined {
    return this.wheel.nextDeadline();
  }

  /** The order-independent digest of one partition, as a bigint. */
  digest(partition: number): bigint {
    const p = this.partitions[partition]!;
    return (BigInt(p.digestHi >>> 0) << 32n) | BigInt(p.digestLo >>> 0);
  }

  /** Number of sessions (live and tombstoned) held in a partition. */
  partitionSize(partition: number): number {
    return this.partitions[partition]!.sessions.size;
  }

  /** Every live, unexpired session of a partition. */
  *sessionsIn(partition: number, now: number): IterableIterator<StoredSession> {
    for (const record of this.partitions[partition]!.sessions.values()) {
      if (record.state === LIVE && record.expiresAt > now) yield record;
    }
  }

  getStats(): Readonly<StoreStats> {
    return this.stats;
  }

  // --- internals -------------------------------------------------------------------

  private lookup(id: string): SessionRecord | undefined {
    this.loadKey(id);
    return this.partitions[this.keyPartition]!.sessions.get(id);
  }

  /** Hashes a session id into keyHi/keyLo/keyPartition, which the digest updates use. */
  private loadKey(id: string): void {
    this.hasher.hashString(id);
    const hi = this.hasher.hi;
    const lo = this.hasher.lo;
    this.keyHi = hi;
    this.keyLo = lo;
    this.keyPartition = partitionOfHash(hi, lo, this.config.partitions);
  }

  private isLive(record: SessionRecord, now: number): boolean {
    if (record.state !== LIVE) return false;
    if (record.expiresAt > now) return true;
    this.expire(record);
    return false;
  }

  private insert(id: string, owner = this.config.nodeId, epoch = 1): SessionRecord {
    const record = new SessionRecord(id, this.intern(owner));
    record.epoch = epoch;
    this.partitions[this.keyPartition]!.sessions.set(id, record);
    this.stats.sessions++;
    this.stats.bytes += id.length + SESSION_OVERHEAD_BYTES;
    this.xorSessionEntry(record);
    return record;
  }

  private revive(record: SessionRecord): void {
    this.xorSessionEntry(record);
    record.state = LIVE;
    this.xorSessionEntry(record);
    this.stats.tombstones--;
    this.stats.sessions++;
  }

  /** Sets or adds a part (value null = tombstone), keeping digest, bytes and counts. */
  private setPart(record: SessionRecord, name: string, value: string | null, version: number, writer: string, epoch: number): void {
    let slots = record.parts;
    let at = indexOfPart(slots, name);
    if (at < 0) {
      // Copy on add: parts are added far less often than rewritten, and exact-length
      // arrays save the slack a growing array keeps.
      at = slots.length;
      slots = slots.concat([this.intern(name), null, 0, writer, epoch]);
      record.parts = slots;
      this.stats.bytes += partBytes(name, null);
    } else {
      this.xorPart(slots, at);
    }
    const old = slots[at + VALUE] as string | null;
    this.stats.bytes += (value === null ? 0 : value.length) - (old === null ? 0 : old.length);
    if (old === null && value !== null) this.stats.parts++;
    else if (old !== null && value === null) this.stats.parts--;
    slots[at + VALUE] = value;
    slots[at + VERSION] = version;
    slots[at + WRITER] = writer;
    slots[at + EPOCH] = epoch;
    this.xorPart(slots, at);
  }

  private purgePartTombstones(record: SessionRecord, now: number): void {
    const horizon = now - this.config.tombstoneRetentionMs;
    const slots = record.parts;
    let stale = 0;
    for (let i = 0; i < slots.length; i += PART_STRIDE) {
      if (slots[i + VALUE] === null && versionTimeMs(slots[i + VERSION] as number) < horizon) stale++;
    }
    if (stale === 0) return;
    const kept: PartSlot[] = [];
    for (let i = 0; i < slots.length; i += PART_STRIDE) {
      if (slots[i + VALUE] === null && versionTimeMs(slots[i + VERSION] as number) < horizon) {
        this.xorPart(slots, i);
        this.stats.bytes -= partBytes(slots[i + NAME] as string, null);
      } else {
        kept.push(slots[i + NAME]!, slots[i + VALUE]!, slots[i + VERSION]!, slots[i + WRITER]!, slots[i + EPOCH]!);
      }
    }
    record.parts = kept.slice();
  }

  /** Makes the session a tombstone at `version`, purged tombstoneRetentionMs after `now`. */
  private tombstoneSession(record: SessionRecord, version: number, now: number): void {
    this.xorSessionEntry(record);
    const slots = record.parts;
    for (let i = 0; i < slots.length; i += PART_STRIDE) {
      this.xorPart(slots, i);
      this.stats.bytes -= partBytes(slots[i + NAME] as string, slots[i + VALUE] as string | null);
      if (slots[i + VALUE] !== null) this.stats.parts--;
    }
    record.parts = EMPTY;
    record.state = TOMBSTONE;
    record.deletedVersion = version;
    this.xorSessionEntry(record);
    this.stats.sessions--;
    this.stats.tombstones++;
    this.wheel.schedule(record, now + this.config.tombstoneRetentionMs);
  }

  /** Idle expiry: the session becomes a tombstone at the version of its newest part. */
  private expire(record: SessionRecord): void {
    this.loadKey(record.id);
    let newest = record.deletedVersion;
    const slots = record.parts;
    for (let i = 0; i < slots.length; i += PART_STRIDE) newest = Math.max(newest, slots[i + VERSION] as number);
    this.tombstoneSession(record, newest, record.expiresAt);
    this.stats.expirations++;
    this.observer?.sessionRemoved(record.id, 'expired');
  }

  /** Drops a session without a trace (tombstone purge, eviction). */
  private remove(record: SessionRecord): void {
    this.loadKey(record.id);
    const slots = record.parts;
    for (let i = 0; i < slots.length; i += PART_STRIDE) {
      this.xorPart(slots, i);
      if (slots[i + VALUE] !== null) this.stats.parts--;
    }
    this.xorSessionEntry(record);
    this.partitions[this.keyPartition]!.sessions.delete(record.id);
    this.wheel.cancel(record);
    this.lruUnlink(record);
    this.stats.bytes -= sessionBytes(record);
    if (record.state === LIVE) this.stats.sessions--;
    else this.stats.tombstones--;
  }

  /** Evicts least recently used sessions (never `keep`) until byteDelta more bytes fit. */
  private makeRoom(keep: SessionRecord | undefined, byteDelta: number): void {
    const max = this.config.maxBytes;
    if (max === 0 || this.stats.bytes + byteDelta <= max) return;
    const finalSize = (keep === undefined ? 0 : sessionBytes(keep)) + byteDelta;
    if (finalSize > max) {
      throw new ResourceExhaustedError(
        `the session would take ${finalSize} bytes, more than the whole memory budget of ${max} bytes`,
      );
    }
    const keyHi = this.keyHi;
    const keyLo = this.keyLo;
    const keyPartition = this.keyPartition;
    let candidate = this.lruHead;
    while (this.stats.bytes + byteDelta > max && candidate !== null) {
      const next = candidate.lruNext;
      if (candidate !== keep) {
        const wasLive = candidate.state === LIVE;
        this.remove(candidate);
        this.stats.evictions++;
        if (wasLive) this.observer?.sessionRemoved(candidate.id, 'evicted');
      }
      candidate = next;
    }
    this.keyHi = keyHi;
    this.keyLo = keyLo;
    this.keyPartition = keyPartition;
  }

  /**
   * A refresh is made at `now`, or 1 ms after the latest refresh this node knows of if that
   * is not earlier: replicas order refreshes by that time, so two in one millisecond (or
   * one by a new owner whose clock is behind the old one's) must not tie or go back.
   */
  private refreshExpiry(record: SessionRecord, ttlMs: number, now: number): void {
    const refreshedAt = record.expiresAt > 0 ? Math.max(now, record.expiresAt - record.ttlMs + 1) : now;
    record.ttlMs = ttlMs > 0 ? ttlMs : record.ttlMs > 0 ? record.ttlMs : this.config.defaultTtlMs;
    record.expiresAt = refreshedAt + record.ttlMs;
    this.wheel.scheduleNoLater(record, record.expiresAt);
  }

  /**
   * Takes the owner's view of ownership and expiry. Expiry: the later refresh wins (one
   * made at the same time with a longer TTL wins), so a shorter TTL replicates too.
   * Ownership goes to the higher epoch; two nodes that claimed the same epoch concurrently
   * settle on the higher node id, everywhere, whichever claim arrives first.
   */
  private adoptMeta(record: SessionRecord, meta: RemoteSessionMeta): boolean {
    let changed = this.adoptOwner(record, meta);
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
  private adoptOwner(record: SessionRecord, meta: RemoteSessionMeta): boolean {
    if (!(meta.epoch > record.epoch || (meta.epoch === record.epoch && meta.owner > record.owner))) return false;
    this.xorSessionEntry(record);
    record.owner = this.intern(meta.owner);
    record.epoch = meta.epoch;
    this.xorSessionEntry(record);
    return true;
  }

  private lruTouch(record: SessionRecord): void {
    if (this.lruTail === record) return;
    this.lruUnlink(record);
    record.lruPrev = this.lruTail;
    if (this.lruTail !== null) this.lruTail.lruNext = record;
    this.lruTail = record;
    if (this.lruHead === null) this.lruHead = record;
  }

  private lruUnlink(record: SessionRecord): void {
    const prev = record.lruPrev;
    const next = record.lruNext;
    if (prev !== null) prev.lruNext = next;
    else if (this.lruHead === record) this.lruHead = next;
    if (next !== null) next.lruPrev = prev;
    else if (this.lruTail === record) this.lruTail = prev;
    record.lruPrev = null;
    record.lruNext = null;
  }

  /** Part names and node ids repeat across sessions: keep one copy of each (bounded). */
  private intern(s: string): string {
    const known = this.interned.get(s);
    if (known !== undefined) return known;
    if (this.interned.size < INTERN_LIMIT) this.interned.set(s, s);
    return s;
  }

  private stringHash(s: string): number {
    let h = this.stringHashes.get(s);
    if (h === undefined) {
      h = 0x811c9dc5;
      for (let i = 0; i < s.length; i++) h = mixWord(h, s.charCodeAt(i));
      h = fmix32(h ^ s.length);
      if (this.stringHashes.size < INTERN_LIMIT) this.stringHashes.set(s, h);
    }
    return h;
  }

  private xorPart(slots: PartSlot[], at: number): void {
    this.xorEntry(
      slots[at + VALUE] === null ? ENTRY_PART_TOMBSTONE : ENTRY_PART,
      mixWord(this.stringHash(slots[at + NAME] as string), slots[at + EPOCH] as number),
      slots[at + VERSION] as number,
      this.stringHash(slots[at + WRITER] as string),
    );
  }

  private xorSessionEntry(record: SessionRecord): void {
    this.xorEntry(ENTRY_SESSION + record.state, record.epoch, record.deletedVersion, this.stringHash(record.owner));
  }

  /** XORs hash(key, kind, a, version, b) into the current partition's digest; twice undoes it. */
  private xorEntry(kind: number, a: number, version: number, b: number): void {
    const vHi = Math.floor(version / 0x100000000);
    const vLo = version >>> 0;
    let h1 = DIGEST_SEED_HI;
    let h2 = DIGEST_SEED_LO;
    h1 = mixWord(h1, this.keyHi);
    h2 = mixWord(h2, this.keyLo);
    h1 = mixWord(h1, this.keyLo ^ kind);
    h2 = mixWord(h2, this.keyHi ^ kind);
    h1 = mixWord(h1, a);
    h2 = mixWord(h2, b);
    h1 = mixWord(h1, vLo);
    h2 = mixWord(h2, vHi);
    h1 = mixWord(h1, b ^ vHi);
    h2 = mixWord(h2, a ^ vLo);
    const p = this.partitions[this.keyPartition]!;
    p.digestHi = (p.digestHi ^ fmix32(h1 ^ h2)) >>> 0;
    p.digestLo = (p.digestLo ^ fmix32(h2 + Math.imul(h1, 0x85ebca6b))) >>> 0;
  }
}

function snapshotOf(record: SessionRecord): SessionSnapshot {
  const parts: StoredPart[] = [];
  forEachPart(record, (name, value, version, writer, epoch) => parts.push({ name, value, version, writer, epoch }));
  return {
    id: record.id,
    parts,
    owner: record.owner,
    epoch: record.epoch,
    expiresAt: record.state === LIVE ? record.expiresAt : 0,
    ttlMs: record.ttlMs,
    deletedVersion: record.deletedVersion,
  };
}

function indexOfPart(slots: readonly PartSlot[], name: string): number {
  for (let i = 0; i < slots.length; i += PART_STRIDE) if (slots[i + NAME] === name) return i;
  return -1;
}

function countLive(slots: readonly PartSlot[]): number {
  let n = 0;
  for (let i = VALUE; i < slots.length; i += PART_STRIDE) if (slots[i] !== null) n++;
  return n;
}

/** The bytes of a value as a latin1 string (one character per byte). */
function latin1(bytes: Uint8Array): string {
  return Buffer.prototype.latin1Slice.call(bytes, 0, bytes.byteLength);
}
