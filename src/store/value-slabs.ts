/**
 * The bytes of every stored part value, off the V8 heap: a value is copied into a large
 * slab (one Buffer, appended to until full), and its part holds the slab, an offset and a
 * length.
 *
 * Why: a value kept as a string lives in the V8 heap, and a value a node stores survives
 * the scavenges after its write, so it is copied twice (to the other semi-space, then to
 * the old generation). On a replica applying 10,000 deltas/s of 1 KiB that copying is
 * most of the scavenge time (measured: docs/benchmarks.md). A Buffer of its own per value
 * costs an ArrayBuffer each, which every collection sweeps. A slab is one ArrayBuffer
 * that no collection copies.
 *
 * Rules:
 * - Slab memory never leaves the store: readers get copies (readValue), and a record leaving
 *   the store takes copies (session-table.ts), so the only references to a value's bytes
 *   are the parts that hold it. Space comes back by moving the live
 *   values out of a slab that is mostly garbage (evacuation); a shared slab without live
 *   values is kept for reuse (up to MAX_FREE_SLABS) or forgotten. Reusing slabs matters:
 *   every new ArrayBuffer counts as external memory, and V8 answers external memory
 *   growth with full collections (measured: a replica's mark-compacts went from 3 to 19-33
 *   in one bench phase when every slab was new).
 * - A shared slab other than the current one is either at least half live or waits in
 *   `sparse` to be evacuated, which happens when the next slab is opened and on
 *   `evacuateSparse` (the store calls it from its expiry tick). So the slabs hold at most
 *   twice the live bytes plus the current slab, the slabs waiting and the free ones.
 * - Evacuation moves values only: the owner's relocate callback rewrites a part's slab and
 *   offset in place. Each slab remembers the owners that stored into it (consecutive
 *   stores by one owner once); relocate must skip an owner no longer stored, whose values
 *   were released when it went.
 * - Values over dedicatedMinBytes get a slab of their own, forgotten when released.
 *   Empty values share one empty slab, which is never counted.
 * - Every slab held has an index (slabAt), which parts keep instead of a pointer: index 0
 *   is the empty slab; a forgotten slab's index is handed to the next new one.
 */

/** Size of a shared slab. */
export const DEFAULT_SLAB_BYTES = 256 * 1024;
/** Empty shared slabs kept for reuse. */
export const MAX_FREE_SLABS = 16;

export class ValueSlab {
  /** Bytes appended so far (a dedicated slab: its value's length). */
  used = 0;
  /** Bytes of the values stored here that are still referenced by a part. */
  live = 0;
  /**
   * Owners that stored into this slab (the first ownerCount), for evacuation; not kept for
   * dedicated slabs. 32-bit numbers (the store's part rows): 4 B a value, off the heap.
   */
  owners = NO_OWNERS;
  ownerCount = 0;
  /** Its index in its ValueSlabs (slabAt), or -1 while it has none. */
  index = -1;

  constructor(
    readonly bytes: Buffer,
    readonly dedicated: boolean,
  ) {}
}

const NO_OWNERS = new Int32Array(0);

/** The slab of every empty value: nothing is stored in it, nothing released from it. */
export const EMPTY_SLAB = new ValueSlab(Buffer.alloc(0), true);
EMPTY_SLAB.index = 0;

export interface ValueSlabsOptions {
  slabBytes?: number;
  dedicatedMinBytes?: number;
}

export class ValueSlabs {
  /** The offset of the value the last store or move placed (read it right after). */
  lastOffset = 0;
  /** Bytes of all slabs held: shared (free ones included), current and dedicated. */
  allocatedBytes = 0;
  /** Bytes of the values still referenced. */
  liveBytes = 0;
  /** Slabs evacuated, and the value bytes they moved, since construction. */
  evacuatedSlabs = 0;
  movedBytes = 0;
  private current: ValueSlab;
  private readonly sparse = new Set<ValueSlab>();
  private readonly free: ValueSlab[] = [];
  private evacuating = false;
  /** Slabs by index (slabAt); undefined at a free index. */
  private readonly slabs: (ValueSlab | undefined)[] = [EMPTY_SLAB];
  private readonly freeIndexes: number[] = [];
  private readonly slabBytes: number;
  private readonly dedicatedMinBytes: number;

  /**
   * @param relocate moves every value of `owner` held in `from` (with move()) and rewrites
   *   its parts to the new place; does nothing for an owner no longer stored.
   */
  constructor(
    private readonly relocate: (owner: number, from: ValueSlab) => void,
    options: ValueSlabsOptions = {},
  ) {
    this.slabBytes = options.slabBytes ?? DEFAULT_SLAB_BYTES;
    this.dedicatedMinBytes = Math.min(options.dedicatedMinBytes ?? this.slabBytes / 16, this.slabBytes);
    this.current = this.newShared();
  }

  /** The slab with this index (one held: a part's). */
  slabAt(index: number): ValueSlab {
    return this.slabs[index]!;
  }

  /** Copies a value in for owner; returns its slab (its offset: lastOffset). */
  store(value: Uint8Array, owner: number): ValueSlab {
    const length = value.length;
    if (length === 0) {
      this.lastOffset = 0;
      return EMPTY_SLAB;
    }
    const slab = this.placeFor(length, owner);
    slab.bytes.set(value, this.lastOffset);
    return slab;
  }

  /**
   * Moves a value out of `from` (during relocate): copies it to the current slab for
   * owner and releases it from `from`. Returns its new slab (offset: lastOffset).
   */
  move(from: ValueSlab, offset: number, length: number, owner: number): ValueSlab {
    if (length === 0) {
      this.lastOffset = 0;
      return EMPTY_SLAB;
    }
    const slab = this.placeFor(length, owner);
    // set() of a view is one memmove; Buffer#copy validates its arguments in JavaScript first.
    slab.bytes.set(from.bytes.subarray(offset, offset + length), this.lastOffset);
    this.release(from, length);
    return slab;
  }

  /** A value is no longer referenced by its part. */
  release(slab: ValueSlab, length: number): void {
    if (slab === EMPTY_SLAB) return;
    slab.live -= length;
    this.liveBytes -= length;
    if (slab.dedicated) {
      this.allocatedBytes -= slab.used;
      this.unregister(slab);
      return;
    }
    if (slab === this.current) return;
    if (slab.live === 0) this.forget(slab);
    else if (slab.live * 2 < slab.used && slab.ownerCount > 0) this.sparse.add(slab);
  }

  /** Slabs waiting to be evacuated. */
  get sparseSlabs(): number {
    return this.sparse.size;
  }

  /** Moves the live values out of every slab that is mostly garbage. */
  evacuateSparse(): void {
    if (this.evacuating || this.sparse.size === 0) return;
    this.evacuating = true;
    try {
      for (const slab of this.sparse) {
        this.sparse.delete(slab);
        this.evacuatedSlabs++;
        this.movedBytes += slab.live;
        const owners = slab.owners;
        const count = slab.ownerCount;
        slab.owners = NO_OWNERS;
        slab.ownerCount = 0;
        // Each move releases from the slab, and the last forgets it. Every live value has
        // an owner still stored: were one missed, the slab would stay, counted, and never
        // be sparse again (no owners), rather than lose bytes a part uses.
        for (let i = 0; i < count && slab.live > 0; i++) this.relocate(owners[i]!, slab);
      }
    } finally {
      this.evacuating = false;
    }
  }

  /** Reserves length bytes (lastOffset) in the current slab, or a dedicated one. */
  private placeFor(length: number, owner: number): ValueSlab {
    let slab: ValueSlab;
    if (length > this.dedicatedMinBytes) {
      slab = this.register(new ValueSlab(Buffer.allocUnsafeSlow(length), true));
      this.allocatedBytes += length;
    } else {
      while (this.current.used + length > this.slabBytes) this.openNext();
      slab = this.current;
      const count = slab.ownerCount;
      if (count === 0 || slab.owners[count - 1] !== owner) {
        if (count === slab.owners.length) {
          const grown = new Int32Array(Math.max(64, count * 2));
          grown.set(slab.owners);
          slab.owners = grown;
        }
        slab.owners[count] = owner;
        slab.ownerCount = count + 1;
      }
    }
    this.lastOffset = slab.used;
    slab.used += length;
    slab.live += length;
    this.liveBytes += length;
    return slab;
  }

  /** Retires the full current slab, opens the next, and evacuates the sparse ones into it. */
  private openNext(): void {
    const full = this.current;
    this.current = this.newShared();
    // Its owner list is complete: it keeps a copy at its length, and the room it grew by
    // doubling goes to the next slab, which then grows no buffers of its own for values of
    // the same sizes (a new ArrayBuffer per doubling was measurable CPU on a replica).
    if (full.ownerCount < full.owners.length) {
      const room = full.owners;
      full.owners = room.slice(0, full.ownerCount);
      this.current.owners = room;
    }
    if (full.live === 0) this.forget(full);
    else if (full.live * 2 < full.used) this.sparse.add(full);
    this.evacuateSparse();
  }

  private newShared(): ValueSlab {
    const reused = this.free.pop();
    if (reused !== undefined) return reused;
    this.allocatedBytes += this.slabBytes;
    return this.register(new ValueSlab(Buffer.allocUnsafeSlow(this.slabBytes), false));
  }

  private register(slab: ValueSlab): ValueSlab {
    const index = this.freeIndexes.pop() ?? this.slabs.length;
    this.slabs[index] = slab;
    slab.index = index;
    return slab;
  }

  private unregister(slab: ValueSlab): void {
    this.slabs[slab.index] = undefined;
    this.freeIndexes.push(slab.index);
    slab.index = -1;
  }

  /** A shared slab without live values: kept for reuse, or left to the garbage collector. */
  private forget(slab: ValueSlab): void {
    this.sparse.delete(slab);
    slab.owners = NO_OWNERS;
    slab.ownerCount = 0;
    if (this.free.length < MAX_FREE_SLABS) {
      slab.used = 0;
      this.free.push(slab);
    } else {
      this.allocatedBytes -= slab.bytes.length;
      this.unregister(slab);
    }
  }
}

/** A copy of a value's bytes (one memmove; Buffer's pool serves values under 4 KiB). */
export function readValue(slab: ValueSlab, offset: number, length: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  out.set(slab.bytes.subarray(offset, offset + length));
  return out;
}
