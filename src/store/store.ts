/**
 * The session store: sessions of named parts, partitioned by buzhash64(id) mod P.
 *
 * Invariants:
 * - Every part carries a hybrid-logical-clock version and its writer; a Put gives all of
 *   its parts one new version, so a Put is atomic and ordered as a unit.
 * - Deleting leaves a tombstone (a part with no value, or a session with deletedVersion)
 *   for `tombstoneRetentionMs`, so a late, older write cannot bring deleted state back.
 * - Each partition keeps an order-independent digest (partition-digest.ts), updated in O(1)
 *   on every change.
 * - Sessions expire after ttl of idleness (refreshed by writes and touches, not reads).
 *   A replica's expiry is the owner's latest refresh: ordered by when the owner made it
 *   (expiresAt − ttlMs on the owner's clock), so a write or touch that shortens the TTL
 *   replicates too. A tombstone keeps that refresh (its own purge time lives only in the
 *   expiry wheel): a refresh a replica learns of before or while it holds the tombstone
 *   still counts when a put revives the session.
 * - `bytes` never exceeds maxBytes after an operation returns: least recently used
 *   sessions are evicted whole; a write that cannot fit even alone is refused.
 * - Reads never see an expired session, whether or not the expiry sweep has run.
 * - An operation that fails throws before anything changed; one that succeeds returns what
 *   it stored (put: the session and its version), so callers need not read it back.
 *
 * The store reads no clock: every method takes `now` (Unix ms).
 *
 * Ownership: a session has an owner and an epoch; a claim (a resume on another node) moves
 * ownership at epoch + 1 and re-stamps every part with the new epoch. Parts are ordered by
 * (epoch, version, writer), so a write the old owner makes before it learns of the claim
 * carries the old epoch and loses to the claimed copy of that part, on every node, in
 * any order of arrival. Ownership itself goes to the higher (epoch, owner id).
 *
 * This file decides what changes (versions, compare-and-set, part limits, last-writer-wins);
 * session-table.ts makes each change with its bookkeeping (digests, bytes, LRU, expiry);
 * session-record.ts is the memory layout.
 */
import type { BuzHash } from './buzhash';
import { InvalidArgumentError, PreconditionFailedError } from '../wire/errors';
import type { HybridClock } from './hybrid-clock';
import {
  countLive,
  EMPTY_PARTS,
  EPOCH,
  indexOfPart,
  LIVE,
  NAME,
  PART_OVERHEAD_BYTES,
  partBytes,
  partNewerThan,
  SESSION_OVERHEAD_BYTES,
  type StoredSession,
  TOMBSTONE,
  VALUE,
  valueLengthAt,
  versionAt,
  WRITER,
} from './session-record';
import { type RemoteChange, type RemoteSessionMeta, type SessionSnapshot, snapshotChanges, snapshotMeta, snapshotOf } from './session-snapshot';
import { SessionTable } from './session-table';
import type { StoreConfig, StoreObserver, StoreStats } from './store-config';

export {
  findStoredPart,
  forEachPart,
  PART_OVERHEAD_BYTES,
  PART_STRIDE,
  partNewerThan,
  SESSION_OVERHEAD_BYTES,
  type PartSlot,
  type StoredPart,
  type StoredSession,
} from './session-record';
export type { RemoteChange, RemoteSessionMeta, SessionSnapshot } from './session-snapshot';

/** The owner and epoch a copy named before a remote change (applyRemote's `prior`). */
export interface PriorOwner {
  owner: string | undefined;
  epoch: number;
  /** The change replaced a part this node wrote with an older version at a higher epoch. */
  ownWriteLost?: boolean;
}

/**
 * The owner a change settled a tie over: the copy named another owner than `owner` at the
 * very epoch the change carries (two nodes made or claimed the session at once; the higher
 * node id owns it). Undefined when the change moved no tie.
 */
export function tieLoser(prior: PriorOwner, owner: string, epoch: number): string | undefined {
  return prior.owner !== undefined && prior.owner !== owner && prior.epoch === epoch ? prior.owner : undefined;
}
export { DEFAULT_STORE_CONFIG, type RemovalReason, type StoreConfig, type StoreObserver, type StoreStats } from './store-config';

export interface PartWriteRequest {
  name: string;
  value: Uint8Array;
  /** Compare-and-set: the current version this part must have (0 = must not exist). */
  ifVersion?: number | undefined;
}

/** What a put stored: the caller answers and replicates from it without reading back. */
export interface PutResult {
  /** The version every written part now has. */
  version: number;
  /** The session as stored (live; read-only, and current only until the next change). */
  session: StoredSession;
}

export class SessionStore {
  private readonly table: SessionTable;

  constructor(
    readonly config: StoreConfig,
    private readonly hasher: BuzHash,
    private readonly clock: HybridClock,
    private readonly observer?: StoreObserver,
  ) {
    this.table = new SessionTable(config, hasher, observer);
  }

  /** The partition a session id belongs to. */
  partitionOf(id: string): number {
    return this.hasher.partitionOf(id, this.config.partitions);
  }

  /** A live, unexpired session, or undefined. Marks it recently used. */
  get(id: string, now: number): StoredSession | undefined {
    const record = this.table.find(id);
    if (record === undefined || !this.table.isLive(record, now)) return undefined;
    this.table.touchLru(record);
    return record;
  }

  /**
   * Writes parts atomically. ttlMs 0 keeps the session's TTL (or the default for a new
   * session). Throws PreconditionFailedError, InvalidArgumentError (too many parts) or
   * ResourceExhaustedError; on a throw nothing has changed.
   */
  put(id: string, writes: readonly PartWriteRequest[], ttlMs: number, now: number): PutResult {
    const table = this.table;
    const key = table.keyOf(id);
    let record = table.find(id);
    table.expireIfDue(record, now);
    const live = record !== undefined && record.state === LIVE;
    const slots = record === undefined ? EMPTY_PARTS : record.parts;

    let added = 0;
    let byteDelta = record === undefined ? id.length + SESSION_OVERHEAD_BYTES : 0;
    for (const write of writes) {
      const at = indexOfPart(slots, write.name);
      const current = live && at >= 0 && slots[at + VALUE] !== null ? versionAt(slots, at) : 0;
      if (write.ifVersion !== undefined && write.ifVersion !== current) {
        throw new PreconditionFailedError(
          current === 0
            ? `part '${write.name}' does not exist, but if_version ${write.ifVersion} was expected`
            : `part '${write.name}' is at version ${current}, not the expected ${write.ifVersion}`,
        );
      }
      if (current === 0) added++;
      byteDelta +=
        at < 0 ? write.name.length + PART_OVERHEAD_BYTES + write.value.length : write.value.length - valueLengthAt(slots, at);
    }
    const liveParts = live ? countLive(slots) : 0;
    if (liveParts + added > this.config.maxPartsPerSession) {
      throw new InvalidArgumentError(
        `the session would hold ${liveParts + added} parts, over the limit of ${this.config.maxPartsPerSession}`,
      );
    }
    table.makeRoom(record, byteDelta);

    if (record === undefined) record = table.insert(key, id, this.config.nodeId, 1);
    else if (record.state === TOMBSTONE) table.revive(key, record);
    const version = this.clock.tick(now);
    const writer = this.config.nodeId;
    for (const write of writes) {
      table.setPart(key, record, write.name, write.value, version, writer, record.epoch);
    }
    table.purgePartTombstones(key, record, now);
    table.refreshExpiry(record, ttlMs, now);
    table.touchLru(record);
    if (this.observer !== undefined) {
      const parts = record.parts;
      for (const write of writes) {
        const at = indexOfPart(parts, write.name);
        this.observer.partPut(record, parts[at + NAME] as string, version, writer);
      }
    }
    return { version, session: record };
  }

  /**
   * Deletes the named parts, or the whole session when names is empty. Returns whether
   * the session (or any named part) existed.
   */
  delete(id: string, names: readonly string[], now: number): boolean {
    const table = this.table;
    const key = table.keyOf(id);
    const record = table.find(id);
    if (record === undefined || !table.isLive(record, now)) return false;
    if (names.length === 0) {
      table.tombstoneSession(key, record, this.clock.tick(now), now);
      this.observer?.partDeleted(id, '');
      return true;
    }
    const deleted = names.filter((name) => {
      const at = indexOfPart(record.parts, name);
      return at >= 0 && record.parts[at + VALUE] !== null;
    });
    if (deleted.length === 0) return false;
    const version = this.clock.tick(now);
    for (const name of deleted) table.setPart(key, record, name, null, version, this.config.nodeId, record.epoch);
    table.purgePartTombstones(key, record, now);
    table.touchLru(record);
    if (this.observer !== undefined) for (const name of deleted) this.observer.partDeleted(id, name);
    return true;
  }

  /** Refreshes idle expiry (ttlMs 0 = the session's TTL). Returns the new expiry, or undefined. */
  touch(id: string, ttlMs: number, now: number): number | undefined {
    const record = this.table.find(id);
    if (record === undefined || !this.table.isLive(record, now)) return undefined;
    this.table.refreshExpiry(record, ttlMs, now);
    this.table.touchLru(record);
    return record.expiresAt;
  }

  /**
   * Applies a change made on another node. Idempotent and order-independent: a part
   * changes only if the change is newer by (version, writer); nothing at or below a
   * session delete comes back; ownership moves only to a higher epoch; expiry follows the
   * owner's latest refresh, also while the session is a tombstone (a touch or claim that
   * overtakes the put reviving it is kept for it). Returns whether anything changed.
   * `prior`, when given, is set to the owner and epoch the copy named before the change
   * (owner undefined: no copy), so a receiver tells how ownership moved without a second
   * look-up.
   */
  applyRemote(id: string, change: RemoteChange, meta: RemoteSessionMeta, now: number, prior?: PriorOwner): boolean {
    const table = this.table;
    const key = table.keyOf(id);
    let record = table.find(id);
    table.expireIfDue(record, now);
    if (prior !== undefined) {
      prior.owner = record?.owner;
      prior.epoch = record?.epoch ?? 0;
      prior.ownWriteLost = false;
    }
    const versioned = change.kind === 'put' || change.kind === 'delete_part' || change.kind === 'delete_session';
    if (versioned) {
      this.clock.observe(change.version, now);
      if (record !== undefined && change.version <= record.deletedVersion) {
        // The change itself is gone, but its header is still the owner's view when it was
        // made (a put refreshed expiry); a delete's header carries no refresh.
        if (change.kind === 'delete_session') return table.adoptOwner(key, record, meta);
        return meta.expiresAt > now && table.adoptMeta(key, record, meta);
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
        const slots = at < 0 ? EMPTY_PARTS : record!.parts;
        if (at >= 0 && !partNewerThan(change.epoch, change.version, change.writer, slots[at + EPOCH] as number, versionAt(slots, at), slots[at + WRITER] as string)) {
          return table.adoptMeta(key, record!, meta);
        }
        // This node's own write of the part, newer than the change, loses to it all the same
        // (a claim made without it re-stamped an older value with a higher epoch).
        if (prior !== undefined && at >= 0 && slots[at + WRITER] === this.config.nodeId && versionAt(slots, at) > change.version) prior.ownWriteLost = true;
        const hadValue = at >= 0 && slots[at + VALUE] !== null;
        const byteDelta =
          (record === undefined ? id.length + SESSION_OVERHEAD_BYTES : 0) +
          (at < 0 ? partBytes(change.name, value?.length ?? 0) : (value?.length ?? 0) - valueLengthAt(slots, at));
        table.makeRoom(record, byteDelta);
        if (record === undefined) record = table.insert(key, id, meta.owner, meta.epoch);
        else if (record.state === TOMBSTONE) table.revive(key, record);
        table.adoptMeta(key, record, meta);
        table.setPart(key, record, change.name, value, change.version, table.intern(change.writer), change.epoch);
        table.touchLru(record);
        if (value !== null) this.observer?.partPut(record, change.name, change.version, change.writer);
        else if (hadValue) this.observer?.partDeleted(id, change.name);
        return true;
      }
      case 'delete_session': {
        if (record === undefined) {
          table.makeRoom(undefined, id.length + SESSION_OVERHEAD_BYTES);
          record = table.insert(key, id, meta.owner, meta.epoch);
          record.ttlMs = meta.ttlMs;
        }
        // The tombstone's header is the owner's (a claim it overtook may come later); its
        // expiry is not: a delete does not refresh the session.
        table.adoptOwner(key, record, meta);
        const wasLive = record.state === LIVE;
        table.deleteUpTo(key, record, change.version, now);
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
          table.makeRoom(undefined, id.length + SESSION_OVERHEAD_BYTES);
          record = table.insert(key, id, meta.owner, meta.epoch);
        }
        const changed = table.adoptMeta(key, record, meta);
        if (changed && change.kind === 'claim' && record.state === LIVE) this.observer?.claimed?.(record);
        return changed;
      }
    }
  }

  /**
   * The owner and epoch this node holds for a session (live or a tombstone), without
   * marking it used and without a copy (the record itself, read-only; read it at once):
   * replication checks it on every delta it receives.
   */
  ownerOf(id: string): Readonly<{ owner: string; epoch: number }> | undefined {
    return this.table.find(id);
  }

  /** Whether this node holds anything of a session (live, expired or a tombstone); allocates nothing. */
  knows(id: string): boolean {
    return this.table.find(id) !== undefined;
  }

  /** Whether this node holds a session (live or a tombstone) as owned by `nodeId`; allocates nothing. */
  isOwnedBy(id: string, nodeId: string): boolean {
    return this.table.find(id)?.owner === nodeId;
  }

  /** A session's full state, tombstones included, or undefined if unknown. */
  snapshot(id: string, now: number): SessionSnapshot | undefined {
    const record = this.table.find(id);
    if (record === undefined) return undefined;
    this.table.expireIfDue(record, now);
    return snapshotOf(record);
  }

  /** Snapshots of every session (live or tombstone) held in a partition. */
  *snapshotsIn(partition: number, now: number): IterableIterator<SessionSnapshot> {
    for (const record of this.table.partitions.records(partition)) {
      this.table.expireIfDue(record, now);
      yield snapshotOf(record);
    }
  }

  /** Merges a snapshot from a peer, part by part, with applyRemote's rules. */
  merge(snapshot: SessionSnapshot, now: number): boolean {
    const meta = snapshotMeta(snapshot);
    let changed = false;
    for (const change of snapshotChanges(snapshot)) changed = this.applyRemote(snapshot.id, change, meta, now) || changed;
    return changed;
  }

  /**
   * Bytes the slabs of part values take (allocated), the values in them still use (live),
   * and the slabs evacuated and value bytes moved so far.
   */
  valueMemory(): { allocated: number; live: number; evacuatedSlabs: number; movedBytes: number } {
    const values = this.table.values;
    return { allocated: values.allocatedBytes, live: values.liveBytes, evacuatedSlabs: values.evacuatedSlabs, movedBytes: values.movedBytes };
  }

  /**
   * Makes `owner` the owner at the next epoch (a resume) and re-stamps every part, tombstones
   * included, with that epoch: the old owner's later writes carry a lower epoch and lose.
   * Returns the new epoch, or undefined if the session is not live here.
   */
  claim(id: string, owner: string, now: number): number | undefined {
    const table = this.table;
    const key = table.keyOf(id);
    const record = table.find(id);
    if (record === undefined || !table.isLive(record, now)) return undefined;
    table.claim(key, record, owner);
    table.touchLru(record);
    this.observer?.claimed?.(record);
    return record.epoch;
  }

  /** Drops a session held for replication that this node no longer needs (placement moved). */
  discard(id: string): boolean {
    const record = this.table.find(id);
    if (record === undefined) return false;
    this.table.remove(record);
    return true;
  }

  /**
   * Drops the sessions (live or tombstones) for which drop(owner, partition) is true, for
   * copies a node no longer holds after placement moved. Walks whole partitions from
   * `from` on and stops after the partition in which it had looked at `budget` sessions:
   * a caller walks a large store a slice at a time, so no single call holds the event loop
   * for long. Returns how many it dropped and the partition to go on from (undefined once
   * the last one was walked; then sparse value slabs are evacuated).
   */
  discardWhere(drop: (owner: string, partition: number) => boolean, from = 0, budget = Infinity): { dropped: number; next: number | undefined } {
    let dropped = 0;
    let looked = 0;
    const partitions = this.table.partitions;
    for (let p = from; p < partitions.partitions; p++) {
      if (looked >= budget) return { dropped, next: p };
      if (partitions.size(p) === 0) continue;
      for (const record of partitions.records(p)) {
        looked++;
        if (!drop(record.owner, p)) continue;
        this.table.remove(record);
        dropped++;
      }
    }
    this.table.values.evacuateSparse();
    return { dropped, next: undefined };
  }

  /** Expires sessions and purges tombstones that are due. */
  tick(now: number): void {
    this.table.tick(now);
  }

  /** When tick() next has work to do, or undefined. */
  nextDeadline(): number | undefined {
    return this.table.nextDeadline();
  }

  /** The order-independent digest of one partition, as a bigint. */
  digest(partition: number): bigint {
    return this.table.digests.digest(partition);
  }

  /** Number of sessions (live and tombstoned) held in a partition. */
  partitionSize(partition: number): number {
    return this.table.partitions.size(partition);
  }

  /** Every live, unexpired session of a partition. */
  *sessionsIn(partition: number, now: number): IterableIterator<StoredSession> {
    for (const record of this.table.partitions.walk(partition)) {
      if (record.state === LIVE && !record.expiredBy(now)) yield record;
    }
  }

  getStats(): Readonly<StoreStats> {
    return this.table.stats;
  }
}
