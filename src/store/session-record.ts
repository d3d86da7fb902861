/**
 * A stored session and its parts: how readers see them, and how the store lays them out.
 *
 * Rules:
 * - A session is a row of the session block and each of its parts a row of the part block
 *   (row-block.ts), never a JavaScript object: at a million sessions objects were most of
 *   the heap, and all of what every full collection marks (measured by `npm run bench:store`).
 * - A value's bytes live in a slab off the V8 heap (value-slabs.ts); the part holds the
 *   slab's index, the offset and the length. A slab index of NO_VALUE marks a part
 *   tombstone. Readers get a copy of the bytes (forEachPart, findStoredPart): slab memory
 *   is reused, so nothing outside the store may point into it.
 * - Part names and node ids are indexes into the store's string table (string-table.ts).
 * - Readers get a StoredSession: a view of the row, read when asked (no copy on the read
 *   path), valid while the session stays in the store. Read it at once: a view whose
 *   session has left the store (evicted, purged, discarded) throws when read rather than
 *   read whatever session took its row.
 * - Parts are ordered by (epoch, version, writer): partNewerThan.
 */
import { newerThan } from './hybrid-clock';

/**
 * Accounted bytes of a session beyond its id (its row, its id map entry and id slot). With
 * PART_OVERHEAD_BYTES, fitted to bench:store at 1M sessions (1 and 4 parts of 100 B: 297 and
 * 723 B of heap and rows per session; charged 296 and 726).
 */
export const SESSION_OVERHEAD_BYTES = 120;
/** Accounted bytes of a part beyond its name and value (its row, its slab owner entry). */
export const PART_OVERHEAD_BYTES = 40;

/** One part, as handed to readers and observers (a copy; the store keeps its own layout). */
export interface StoredPart {
  readonly name: string;
  /** A copy of the value's bytes; null for a tombstone. */
  readonly value: Buffer | null;
  readonly version: number;
  readonly writer: string;
  /** The session's epoch when the part was written (or claimed). */
  readonly epoch: number;
}

/** What forEachPart hands over for each part (value: a copy, or null for a tombstone). */
export type PartVisitor = (name: string, value: Buffer | null, version: number, writer: string, epoch: number) => void;

/** A stored session as readers see it: read at once, while the store still holds it. */
export interface StoredSession {
  readonly id: string;
  readonly owner: string;
  readonly epoch: number;
  readonly ttlMs: number;
  /** Idle expiry (Unix ms). */
  readonly expiresAt: number;
  /** Calls fn for every part, tombstones included, in the order they were added. */
  forEachPart(fn: PartVisitor): void;
  /** The part called name (live or tombstone), or undefined. */
  findPart(name: string): StoredPart | undefined;
}

// The session block: 64 B a row. 64-bit fields (f64 index row * 8 + k):
/** Idle expiry (Unix ms), kept while a tombstone; a tombstone's purge is only scheduled. */
export const S_EXPIRES = 0;
/** Version of the whole-session delete (or expiry); parts at or below it are gone. */
export const S_DELETED = 1;
/** Expiry wheel: the bucket's key, or -1 when not scheduled. */
export const S_WHEEL_KEY = 2;
// 32-bit fields (i32 index row * 16 + k):
/** State (FREE, LIVE, TOMBSTONE) and the LRU flags in the low OWNER_SHIFT bits; the owner (its string-table index) above them. */
export const S_FLAGS = 6;
/** The epoch, unsigned (MAX_EPOCH at most: a claim a second would take 136 years to reach it). */
export const S_EPOCH = 7;
/** Idle TTL in ms, unsigned (up to 2^32 - 1 ms, 49 days; a longer one is held at that). */
export const S_TTL = 8;
/** The first part's row, or -1. */
export const S_FIRST_PART = 9;
/** The expiry wheel bucket's list links. */
export const S_WHEEL_PREV = 10;
export const S_WHEEL_NEXT = 11;
/** LRU list links. */
export const S_LRU_PREV = 12;
export const S_LRU_NEXT = 13;
/** Partition list links. */
export const S_PART_PREV = 14;
export const S_PART_NEXT = 15;
export const SESSION_ROW_BYTES = 64;
export const SESSION_INTS = SESSION_ROW_BYTES / 4;
export const SESSION_DOUBLES = SESSION_ROW_BYTES / 8;

/** Record states (S_FLAGS & STATE_MASK). */
export const FREE = 0;
export const LIVE = 1;
export const TOMBSTONE = 2;
export const STATE_MASK = 3;
/** Used since it last moved to the recently used end (its second chance: makeRoom). */
export const LRU_USED = 4;
/** In the LRU list. */
export const IN_LRU = 8;
/** S_FLAGS >>> OWNER_SHIFT is the owner's index; node ids are fewer than 2^24. */
export const OWNER_SHIFT = 8;
export const FLAG_BITS = (1 << OWNER_SHIFT) - 1;

// The part block: 36 B a row, 32-bit fields (i32 index row * 9 + k).
/** The version, high and low 32 bits (low unsigned): a double field would need 8 B alignment, and 4 B of padding with it. */
export const P_VERSION_HIGH = 0;
export const P_VERSION_LOW = 1;
/** The name: an index into the string table. */
export const P_NAME = 2;
/** The writer: an index into the string table. */
export const P_WRITER = 3;
/** The part's epoch, unsigned. */
export const P_EPOCH = 4;
/** The value's slab (its index in ValueSlabs), or NO_VALUE for a tombstone. */
export const P_SLAB = 5;
export const P_OFFSET = 6;
export const P_LENGTH = 7;
/** The session's next part, or -1. */
export const P_NEXT = 8;
export const PART_ROW_BYTES = 36;
export const PART_INTS = PART_ROW_BYTES / 4;
/** The highest epoch a row holds; a remote change naming a higher one is refused. */
export const MAX_EPOCH = 2 ** 32 - 1;
/** P_SLAB of a part tombstone. */
export const NO_VALUE = -1;

/** Whether part state (epoch, version, writer) is newer than (otherEpoch, …): the part order. */
export function partNewerThan(epoch: number, version: number, writer: string, otherEpoch: number, otherVersion: number, otherWriter: string): boolean {
  return epoch > otherEpoch || (epoch === otherEpoch && newerThan(version, writer, otherVersion, otherWriter));
}

/** Calls fn for every part of a session, tombstones included (value null); values are copies. */
export function forEachPart(session: StoredSession, fn: PartVisitor): void {
  session.forEachPart(fn);
}

/** The part called name (live or tombstone), or undefined. */
export function findStoredPart(session: StoredSession, name: string): StoredPart | undefined {
  return session.findPart(name);
}

/**
 * A session's header without parts, as a StoredSession: what a delete or a tombstone is
 * replicated with (the store holds no live session to read it from).
 */
export function sessionHeader(id: string, owner: string, epoch: number, ttlMs: number, expiresAt: number): StoredSession {
  return { id, owner, epoch, ttlMs, expiresAt, forEachPart: () => undefined, findPart: () => undefined };
}

/** Accounted bytes of one part whose value has valueLength bytes (0 for a tombstone). */
export function partBytes(name: string, valueLength: number): number {
  return name.length + PART_OVERHEAD_BYTES + valueLength;
}
