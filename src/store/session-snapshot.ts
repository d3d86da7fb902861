/**
 * What crosses between nodes' stores: a change made on another node (as replication
 * delivers it) and a session's whole state (for state transfer and resume).
 *
 * Rules:
 * - A snapshot is a copy: tombstones included (a part with value null, or deletedVersion
 *   > 0 for the whole session), so a peer that merges it cannot bring deleted state back.
 * - Merging a snapshot is applying, in order, its session delete, each of its parts and
 *   then its header as a claim (snapshotChanges): one set of rules for deltas and transfers.
 */
import type { StoredPart } from './session-record';

/** A change made on another node, as replication delivers it (epoch: the part's epoch). */
export type RemoteChange =
  | { kind: 'put'; name: string; value: Uint8Array; version: number; writer: string; epoch: number }
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

/** The header every change of a merged snapshot carries. */
export function snapshotMeta(snapshot: SessionSnapshot): RemoteSessionMeta {
  return { owner: snapshot.owner, epoch: snapshot.epoch, expiresAt: snapshot.expiresAt, ttlMs: snapshot.ttlMs };
}

/** The remote changes that merging a snapshot applies, in the order they are applied. */
export function snapshotChanges(snapshot: SessionSnapshot): RemoteChange[] {
  const changes: RemoteChange[] = [];
  if (snapshot.deletedVersion > 0) changes.push({ kind: 'delete_session', version: snapshot.deletedVersion });
  for (const part of snapshot.parts) {
    changes.push(
      part.value === null
        ? { kind: 'delete_part', name: part.name, version: part.version, writer: part.writer, epoch: part.epoch }
        : { kind: 'put', name: part.name, value: part.value, version: part.version, writer: part.writer, epoch: part.epoch },
    );
  }
  changes.push({ kind: 'claim' });
  return changes;
}
