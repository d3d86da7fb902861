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
import { LIVE, MAX_EPOCH, PART_OVERHEAD_BYTES, partBytes, partNewerThan, SESSION_OVERHEAD_BYTES, type StoredSession, TOMBSTONE } from './session-record';
import { type RemoteChange, type RemoteSessionMeta, type SessionSnapshot, snapshotChanges, snapshotMeta } from './session-snapshot';
import { SessionTable } from './session-table';
import type { StoreConfig, StoreObserver, StoreStats } from './store-config';

export {
  findStoredPart,
  forEachPart,
  PART_OVERHEAD_BYTES,
  partNewerThan,
  SESSION_OVERHEAD_BYTES,
  sessionHeader,
  type PartVisitor,
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
    const row = this.table.findLive(id, now);
    return row === -1 ? undefined : this.table.view(row, id);
  }

  /**
   * Writes parts atomically. ttlMs 0 keeps the session's TTL (or the default for a new
   * session). Throws PreconditionFailedError, InvalidArgumentError (too many parts) or
   * ResourceExhaustedError; on a throw nothing has changed.
   */
  put(id: string, writes: readonly PartWriteRequest[], ttlMs: number, now: number): PutResult {
    const table = this.table;
    const key = table.keyOf(id);
    let row = table.find(id);
    table.expireIfDue(row, now);
    const live = row !== -1 && table.state(row) === LIVE;

    let added = 0;
    let byteDelta = row === -1 ? id.length + SESSION_OVERHEAD_BYTES : 0;
    for (const write of writes) {
      const p = row === -1 ? -1 : table.partIndexOf(row, write.name);
      const current = live && p >= 0 && table.partLive(p) ? table.partVersion(p) : 0;
      if (write.ifVersion !== undefined && write.ifVersion !== current) {
        throw new PreconditionFailedError(
          current === 0
            ? `part '${write.name}' does not exist, but if_version ${write.ifVersion} was expected`
            : `part '${write.name}' is at version ${current}, not the expected ${write.ifVersion}`,
        );
      }
      if (current === 0) added++;
      byteDelta += p < 0 ? write.name.length + PART_OVERHEAD_BYTES + write.value.length : write.value.length - table.partLength(p);
    }
    const liveParts = live ? table.countLive(row) : 0;
    if (liveParts + added > this.config.maxPartsPerSession) {
      throw new InvalidArgumentError(
        `the session would hold ${liveParts + added} parts, over the limit of ${this.config.maxPartsPerSession}`,
      );
    }
    table.makeRoom(row, byteDelta);

    if (row === -1) row = table.insert(key, id, this.config.nodeId, 1);
    else if (table.state(row) === TOMBSTONE) table.revive(key, row);
    const version = this.clock.tick(now);
    const writer = this.config.nodeId;
    const epoch = table.epoch(row);
    for (const write of writes) table.setPart(key, row, write.name, write.value, version, writer, epoch);
    table.purgePartTombstones(key, row, now);
    table.refreshExpiry(row, ttlMs, now);
    table.touchLru(row);
    const session = table.view(row);
    if (this.observer !== undefined) for (const write of writes) this.observer.partPut(session, write.name, version, writer);
    return { version, session };
  }

  /**
   * Deletes the named parts, or the whole session when names is empty. Returns whether
   * the session (or any named part) existed.
   */
  delete(id: string, names: readonly string[], now: number): boolean {
    const table = this.table;
    const key = table.keyOf(id);
    const row = table.find(id);
    if (row === -1 || !table.isLive(row, now)) return false;
    if (names.length === 0) {
      table.tombstoneSession(key, row, this.clock.tick(now), now);
      this.observer?.partDeleted(id, '');
      return true;
    }
    const deleted = names.filter((name) => {
      const p = table.partIndexOf(row, name);
      return p >= 0 && table.partLive(p);
    });
    if (deleted.length === 0) return false;
    const version = this.clock.tick(now);
    for (const name of deleted) table.setPart(key, row, name, null, version, this.config.nodeId, table.epoch(row));
    table.purgePartTombstones(key, row, now);
    table.touchLru(row);
    if (this.observer !== undefined) for (const name of deleted) this.observer.partDeleted(id, name);
    return true;
  }

  /** Refreshes idle expiry (ttlMs 0 = the session's TTL). Returns the new expiry, or undefined. */
  touch(id: string, ttlMs: number, now: number): number | undefined {
    const row = this.table.find(id);
    if (row === -1 || !this.table.isLive(row, now)) return undefined;
    this.table.refreshExpiry(row, ttlMs, now);
    this.table.touchLru(row);
    return this.table.expiresAt(row);
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
    const versioned = change.kind === 'put' || change.kind === 'delete_part' || change.kind === 'delete_session';
    // No node of baton makes these: an epoch past what a row holds, a version past what a
    // number holds exactly.
    if (meta.epoch > MAX_EPOCH || (change.kind !== 'delete_session' && versioned && change.epoch > MAX_EPOCH)) return false;
    if (versioned && !Number.isSafeInteger(change.version)) return false;
    const table = this.table;
    const key = table.keyOf(id);
    let row = table.find(id);
    table.expireIfDue(row, now);
    if (prior !== undefined) {
      prior.owner = row === -1 ? undefined : table.owner(row);
      prior.epoch = row === -1 ? 0 : table.epoch(row);
      prior.ownWriteLost = false;
    }
    if (versioned) {
      this.clock.observe(change.version, now);
      if (row !== -1 && change.version <= table.deletedVersion(row)) {
        // The change itself is gone, but its header is still the owner's view when it was
        // made (a put refreshed expiry); a delete's header carries no refresh.
        if (change.kind === 'delete_session') return table.adoptOwner(key, row, meta);
        return meta.expiresAt > now && table.adoptMeta(key, row, meta);
      }
    }
    // Deletes are kept even for a session this node has not seen yet (they may overtake
    // its first put); other changes to a session that has already expired are not.
    if (change.kind !== 'delete_session' && meta.expiresAt <= now) return false;
    switch (change.kind) {
      case 'put':
      case 'delete_part': {
        const value = change.kind === 'put' ? change.value : null;
        const p = row === -1 ? -1 : table.partIndexOf(row, change.name);
        if (p >= 0 && !partNewerThan(change.epoch, change.version, change.writer, table.partEpoch(p), table.partVersion(p), table.partWriter(p))) {
          return table.adoptMeta(key, row, meta);
        }
        // This node's own write of the part, newer than the change, loses to it all the same
        // (a claim made without it re-stamped an older value with a higher epoch).
        if (prior !== undefined && p >= 0 && table.partWriter(p) === this.config.nodeId && table.partVersion(p) > change.version) prior.ownWriteLost = true;
        const hadValue = p >= 0 && table.partLive(p);
        const byteDelta =
          (row === -1 ? id.length + SESSION_OVERHEAD_BYTES : 0) +
          (p < 0 ? partBytes(change.name, value?.length ?? 0) : (value?.length ?? 0) - table.partLength(p));
        table.makeRoom(row, byteDelta);
        if (row === -1) row = table.insert(key, id, meta.owner, meta.epoch);
        else if (table.state(row) === TOMBSTONE) table.revive(key, row);
        table.adoptMeta(key, row, meta);
        table.setPart(key, row, change.name, value, change.version, change.writer, change.epoch);
        table.touchLru(row);
        if (value !== null) this.observer?.partPut(table.view(row), change.name, change.version, change.writer);
        else if (hadValue) this.observer?.partDeleted(id, change.name);
        return true;
      }
      case 'delete_session': {
        if (row === -1) {
          table.makeRoom(-1, id.length + SESSION_OVERHEAD_BYTES);
          row = table.insert(key, id, meta.owner, meta.epoch);
          table.setTtl(row, meta.ttlMs);
        }
        // The tombstone's header is the owner's (a claim it overtook may come later); its
        // expiry is not: a delete does not refresh the session.
        table.adoptOwner(key, row, meta);
        const wasLive = table.state(row) === LIVE;
        table.deleteUpTo(key, row, change.version, now);
        if (wasLive) this.observer?.partDeleted(id, '');
        return true;
      }
      case 'touch':
      case 'claim': {
        // A tombstone takes them too: the put that revived the session on the owner (with
        // an older expiry than this touch) may not have arrived yet, or this claim came
        // before the delete the tombstone stands for.
        if (row === -1) {
          // The session's first put has not arrived yet: hold its header so the owner's
          // expiry and ownership are not lost when it does.
          table.makeRoom(-1, id.length + SESSION_OVERHEAD_BYTES);
          row = table.insert(key, id, meta.owner, meta.epoch);
        }
        const changed = table.adoptMeta(key, row, meta);
        if (changed && change.kind === 'claim' && table.state(row) === LIVE) this.observer?.claimed?.(table.view(row));
        return changed;
      }
    }
  }

  /**
   * The owner and epoch this node holds for a session (live or a tombstone), without
   * marking it used and without a copy (a view of the row; read it at once):
   * replication checks it on every delta it receives.
   */
  ownerOf(id: string): Readonly<{ owner: string; epoch: number }> | undefined {
    const row = this.table.find(id);
    return row === -1 ? undefined : this.table.view(row);
  }

  /** Whether this node holds anything of a session (live, expired or a tombstone); allocates nothing. */
  knows(id: string): boolean {
    return this.table.find(id) !== -1;
  }

  /** Whether this node holds a session (live or a tombstone) as owned by `nodeId`; allocates nothing. */
  isOwnedBy(id: string, nodeId: string): boolean {
    const row = this.table.find(id);
    return row !== -1 && this.table.owner(row) === nodeId;
  }

  /** A session's full state, tombstones included, or undefined if unknown. */
  snapshot(id: string, now: number): SessionSnapshot | undefined {
    const row = this.table.find(id);
    if (row === -1) return undefined;
    this.table.expireIfDue(row, now);
    return this.table.snapshot(row);
  }

  /**
   * Snapshots of every session (live or tombstone) a partition holds when the walk starts:
   * each as it is when the walk reaches it, or as it was when it left the store if it left
   * before that (a state transfer may stream a partition while its sessions are discarded).
   */
  snapshotsIn(partition: number, now: number): IterableIterator<SessionSnapshot> {
    return this.table.snapshotsIn(partition, now);
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

  /** Bytes of the buffers sessions and parts are rows of: allocated (they double as the store grows and never shrink) and used. */
  rowMemory(): { allocated: number; used: number } {
    return this.table.rowMemory();
  }

  /**
   * Makes `owner` the owner at the next epoch (a resume) and re-stamps every part, tombstones
   * included, with that epoch: the old owner's later writes carry a lower epoch and lose.
   * Returns the new epoch, or undefined if the session is not live here.
   */
  claim(id: string, owner: string, now: number): number | undefined {
    const table = this.table;
    const key = table.keyOf(id);
    const row = table.find(id);
    if (row === -1 || !table.isLive(row, now)) return undefined;
    table.claim(key, row, owner);
    table.touchLru(row);
    this.observer?.claimed?.(table.view(row));
    return table.epoch(row);
  }

  /** Drops a session held for replication that this node no longer needs (placement moved). */
  discard(id: string): boolean {
    const row = this.table.find(id);
    if (row === -1) return false;
    this.table.remove(row);
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
    for (let p = from; p < partitions.lists; p++) {
      if (looked >= budget) return { dropped, next: p };
      if (partitions.size(p) === 0) continue;
      for (const row of partitions.rows(p)) {
        looked++;
        if (!drop(this.table.owner(row), p)) continue;
        this.table.remove(row);
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
    const table = this.table;
    for (const row of table.partitions.walk(partition)) {
      if (table.state(row) === LIVE && !table.expiredBy(row, now)) yield table.view(row);
    }
  }

  getStats(): Readonly<StoreStats> {
    return this.table.stats;
  }
}
