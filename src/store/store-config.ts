/**
 * The store's configuration, its counters and the observer it reports changes to.
 * Every duration is in ms and every size in accounted bytes (session-record.ts says what a
 * session and a part are charged).
 */
import type { StoredSession } from './session-record';

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
  /**
   * Size of the slabs part values are kept in (value-slabs.ts), in bytes; a value over a
   * sixteenth of it gets a slab of its own. Default DEFAULT_SLAB_BYTES (256 KiB).
   */
  valueSlabBytes?: number;
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
  /** The part's value is in the session (findStoredPart), as of this call. */
  partPut(session: StoredSession, name: string, version: number, writer: string): void;
  /** partName is '' when the whole session was deleted. */
  partDeleted(sessionId: string, partName: string): void;
  sessionRemoved(sessionId: string, reason: RemovalReason): void;
  /** Ownership of a session moved (a claim, local or replicated). */
  claimed?(session: StoredSession): void;
}

export interface StoreStats {
  sessions: number;
  parts: number;
  tombstones: number;
  bytes: number;
  evictions: number;
  expirations: number;
}
