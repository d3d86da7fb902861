/**
 * A stored session and its parts, as the store lays them out in memory.
 *
 * Rules:
 * - A session's parts are one flat array [name, slab, offset, length, version, writer,
 *   epoch, name, …] of exact length (PART_STRIDE slots per part), never an object per part
 *   in a growable array: at a million sessions that is most of the heap (measured by
 *   `npm run bench:store`).
 * - A value's bytes live in a slab off the V8 heap (value-slabs.ts); the part holds the
 *   slab, the offset and the length, all without an object of its own. A null slab marks
 *   a part tombstone. Readers get a copy of the bytes (forEachPart, findStoredPart): slab
 *   memory is reused, so nothing outside the store may point into it.
 * - A record the store dropped keeps copies of its values outside the slabs (the slab space
 *   is reused): a reader still holding it, such as a state transfer streaming a partition,
 *   reads what it held when it went.
 * - Readers get the record itself as a read-only StoredSession (no copy on the read path);
 *   only the store mutates it.
 * - Parts are ordered by (epoch, version, writer): partNewerThan.
 */
import { newerThan } from './hybrid-clock';
import type { WheelEntry } from './expiry-wheel';
import { readValue, type ValueSlab } from './value-slabs';

/**
 * Estimated heap cost of a session beyond its id (record, map entry, parts array, boxed
 * numbers, expiry slot, list links). With PART_OVERHEAD_BYTES, fitted to bench:store at 1M
 * sessions (1 and 4 parts of 100 B: 472 and ~920-970 B of heap per session; charged 464 and 966).
 */
export const SESSION_OVERHEAD_BYTES = 264;
/** Estimated heap cost of a part beyond its name and value (object, boxed version). */
export const PART_OVERHEAD_BYTES = 64;

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

export interface StoredSession {
  readonly id: string;
  /**
   * Live parts and part tombstones, flat: PART_STRIDE slots per part at offsets NAME,
   * VALUE (the value's slab, or null for a tombstone), VALUE_OFFSET, VALUE_LENGTH,
   * VERSION_HIGH and VERSION_LOW (versionAt), WRITER, EPOCH. Read it with forEachPart /
   * findStoredPart rather than by hand.
   */
  readonly parts: readonly PartSlot[];
  readonly owner: string;
  readonly epoch: number;
  readonly ttlMs: number;
  readonly expiresAt: number;
}

export type PartSlot = string | number | ValueSlab | null;
export const PART_STRIDE = 8;
/** Slot offsets inside one part's PART_STRIDE slots. */
export const NAME = 0;
export const VALUE = 1;
export const VALUE_OFFSET = 2;
export const VALUE_LENGTH = 3;
/** A version is two slots (SPLIT): as a double it would be a number object of its own per part, made anew by every write. */
const VERSION_HIGH = 4;
const VERSION_LOW = 5;
export const WRITER = 6;
export const EPOCH = 7;

/** Record states. */
export const LIVE = 0;
export const TOMBSTONE = 1;

/** The parts array of a session without parts (shared; replaced, never written). */
export const EMPTY_PARTS: PartSlot[] = [];

/**
 * A time or version (a whole number of at most 2^56 in magnitude) split into two small
 * integers, high and low bits, each kept as `| 0` makes it (an int32, so V8 stores it in the
 * field itself): a field that ever holds a double points to a number object of its own
 * (16 B on this Node's V8, which has no pointer compression), one more cache miss on every
 * Get, and a new one for every write of a slot.
 */
const SPLIT = 2 ** 26;

function highOf(n: number): number {
  return Math.floor(n / SPLIT) | 0;
}

function lowOf(n: number): number {
  return (n - Math.floor(n / SPLIT) * SPLIT) | 0;
}

function joined(high: number, low: number): number {
  return high * SPLIT + low;
}

export class SessionRecord implements StoredSession, WheelEntry {
  // The fields a Get reads (state, expiry, the used flag, and lruPrev, which says whether the
  // record is in the LRU list) come first, beside the header: at a million sessions the
  // record is a cache miss, and one more line would be a second.
  state = LIVE;
  private expiresHigh = 0;
  private expiresLow = 0;
  /** Used since it last moved to the recently used end (its second chance: makeRoom). */
  lruUsed = false;
  lruPrev: SessionRecord | null = null;
  lruNext: SessionRecord | null = null;
  readonly id: string;
  parts: PartSlot[] = EMPTY_PARTS;
  owner: string;
  epoch = 1;
  ttlMs = 0;
  private deletedHigh = 0;
  private deletedLow = 0;
  /** The neighbours in its partition's list (partition-lists.ts). */
  partPrev: SessionRecord | null = null;
  partNext: SessionRecord | null = null;
  wheelKey = -1;
  wheelIndex = -1;

  constructor(id: string, owner: string) {
    this.id = id;
    this.owner = owner;
  }

  /**
   * Whether the expiry is at or before `now`. The hot paths ask this rather than compare
   * `expiresAt`: a getter that is not inlined returns its double as a new number object.
   */
  expiredBy(now: number): boolean {
    return joined(this.expiresHigh, this.expiresLow) <= now;
  }

  /** Idle expiry (Unix ms), kept while a tombstone; a tombstone's purge is only scheduled. */
  get expiresAt(): number {
    return joined(this.expiresHigh, this.expiresLow);
  }

  set expiresAt(ms: number) {
    this.expiresHigh = highOf(ms);
    this.expiresLow = lowOf(ms);
  }

  /** Version of the whole-session delete (or expiry); parts at or below it are gone. */
  get deletedVersion(): number {
    return joined(this.deletedHigh, this.deletedLow);
  }

  set deletedVersion(version: number) {
    this.deletedHigh = highOf(version);
    this.deletedLow = lowOf(version);
  }
}

/** Whether part state (epoch, version, writer) is newer than (otherEpoch, …): the part order. */
export function partNewerThan(epoch: number, version: number, writer: string, otherEpoch: number, otherVersion: number, otherWriter: string): boolean {
  return epoch > otherEpoch || (epoch === otherEpoch && newerThan(version, writer, otherVersion, otherWriter));
}

/** Calls fn for every part of a session, tombstones included (value null); values are copies. */
export function forEachPart(
  session: StoredSession,
  fn: (name: string, value: Buffer | null, version: number, writer: string, epoch: number) => void,
): void {
  const slots = session.parts;
  for (let i = 0; i < slots.length; i += PART_STRIDE) {
    fn(slots[i + NAME] as string, valueAt(slots, i), versionAt(slots, i), slots[i + WRITER] as string, slots[i + EPOCH] as number);
  }
}

/** The version of the part at offset i. */
export function versionAt(slots: readonly PartSlot[], i: number): number {
  return joined(slots[i + VERSION_HIGH] as number, slots[i + VERSION_LOW] as number);
}

/** Sets the version of the part at offset i. */
export function setVersionAt(slots: PartSlot[], i: number, version: number): void {
  slots[i + VERSION_HIGH] = highOf(version);
  slots[i + VERSION_LOW] = lowOf(version);
}

/** The slots of a new part called name, without a value yet (setPart fills them in). */
export function newPartSlots(name: string, writer: string, epoch: number): PartSlot[] {
  return [name, null, 0, 0, 0, 0, writer, epoch];
}

/** A copy of the bytes of the part at offset i, or null for a tombstone. */
export function valueAt(slots: readonly PartSlot[], i: number): Buffer | null {
  const slab = slots[i + VALUE] as ValueSlab | null;
  return slab === null ? null : readValue(slab, slots[i + VALUE_OFFSET] as number, slots[i + VALUE_LENGTH] as number);
}

/** The length of the part's value at offset i (0 for a tombstone). */
export function valueLengthAt(slots: readonly PartSlot[], i: number): number {
  return slots[i + VALUE] === null ? 0 : (slots[i + VALUE_LENGTH] as number);
}

/** The part called name (live or tombstone), or undefined. */
export function findStoredPart(session: StoredSession, name: string): StoredPart | undefined {
  const slots = session.parts;
  const i = indexOfPart(slots, name);
  if (i < 0) return undefined;
  return {
    name: slots[i + NAME] as string,
    value: valueAt(slots, i),
    version: versionAt(slots, i),
    writer: slots[i + WRITER] as string,
    epoch: slots[i + EPOCH] as number,
  };
}

/** Offset of the part called name in slots, or -1. */
export function indexOfPart(slots: readonly PartSlot[], name: string): number {
  for (let i = 0; i < slots.length; i += PART_STRIDE) if (slots[i + NAME] === name) return i;
  return -1;
}

/** Number of live (non-tombstone) parts. */
export function countLive(slots: readonly PartSlot[]): number {
  let n = 0;
  for (let i = VALUE; i < slots.length; i += PART_STRIDE) if (slots[i] !== null) n++;
  return n;
}

/** Accounted bytes of a session: what the memory budget charges for it. */
export function sessionBytes(record: SessionRecord): number {
  let bytes = record.id.length + SESSION_OVERHEAD_BYTES;
  const slots = record.parts;
  for (let i = 0; i < slots.length; i += PART_STRIDE) bytes += partBytes(slots[i + NAME] as string, valueLengthAt(slots, i));
  return bytes;
}

/** Accounted bytes of one part whose value has valueLength bytes (0 for a tombstone). */
export function partBytes(name: string, valueLength: number): number {
  return name.length + PART_OVERHEAD_BYTES + valueLength;
}
