/**
 * Fixed-size rows in one growable ArrayBuffer, read through typed views: the store's
 * sessions and parts live here rather than as JavaScript objects.
 *
 * Why: an object per session and an array per session's parts cost ~320 B of heap per
 * one-part session on this Node (no pointer compression: 8 B a field, 24 B a header, a
 * number object of its own for every field that ever held a double), and every full
 * collection marks them all. A row is the fields alone, off the heap, and marked by nobody.
 *
 * Rules:
 * - A row is a number; its fields are at `row * doubles + k` in f64 and `row * ints + k` in
 *   i32 (u32 reads the same 32-bit slots unsigned). A layout puts its doubles first and its
 *   32-bit fields after them, so no field overlaps another; a row of a size not a multiple of
 *   8 has 32-bit fields only (its f64 view is empty).
 * - Growing replaces the views: read `block.i32` (and f64, u32) afresh after anything that
 *   may allocate a row, never keep them in a local across it.
 * - A freed row goes on a free list chained through the i32 field `freeLink`; it is handed
 *   out again before the block grows. What a freed row's fields hold is the caller's
 *   concern (the store marks its own rows free in a flags field).
 * - The block never shrinks: a store that once held a million sessions keeps their rows.
 */

/** Rows of a new block. */
const INITIAL_ROWS = 1024;

export class RowBlock {
  f64: Float64Array;
  i32: Int32Array;
  u32: Uint32Array;
  /** Rows the buffer holds (handed out or not). */
  capacity: number;
  /** Rows handed out and not freed. */
  count = 0;
  /** 64-bit slots per row. */
  readonly doubles: number;
  /** 32-bit slots per row. */
  readonly ints: number;
  /** Rows handed out at least once (the rest of the buffer has never been used). */
  private top = 0;
  private freeHead = -1;

  /**
   * @param rowBytes bytes per row, a multiple of 4 (of 8 for 64-bit fields)
   * @param freeLink the i32 field (index within the row) that chains free rows
   */
  constructor(
    readonly rowBytes: number,
    private readonly freeLink: number,
    initialRows = INITIAL_ROWS,
  ) {
    if (rowBytes <= 0 || rowBytes % 4 !== 0) throw new RangeError('rowBytes must be a positive multiple of 4');
    this.doubles = rowBytes % 8 === 0 ? rowBytes / 8 : 0;
    this.ints = rowBytes / 4;
    if (freeLink < 0 || freeLink >= this.ints) throw new RangeError('freeLink must be a 32-bit field of the row');
    this.capacity = Math.max(1, initialRows);
    const buffer = new ArrayBuffer(this.capacity * rowBytes);
    this.f64 = this.doublesOf(buffer);
    this.i32 = new Int32Array(buffer);
    this.u32 = new Uint32Array(buffer);
  }

  /** A row to use (its fields hold whatever they last held: the caller sets every one). */
  alloc(): number {
    this.count++;
    const free = this.freeHead;
    if (free >= 0) {
      this.freeHead = this.i32[free * this.ints + this.freeLink]!;
      return free;
    }
    if (this.top === this.capacity) this.grow();
    return this.top++;
  }

  /** Gives a row back; the caller no longer reads it. */
  free(row: number): void {
    this.count--;
    this.i32[row * this.ints + this.freeLink] = this.freeHead;
    this.freeHead = row;
  }

  /** Rows handed out at least once: every row in use is below it. */
  get highWater(): number {
    return this.top;
  }

  /** Bytes of the buffer (allocated, used or not). */
  get bytes(): number {
    return this.capacity * this.rowBytes;
  }

  private grow(): void {
    const capacity = this.capacity * 2;
    const buffer = new ArrayBuffer(capacity * this.rowBytes);
    new Uint8Array(buffer).set(new Uint8Array(this.i32.buffer, 0, this.top * this.rowBytes));
    this.capacity = capacity;
    this.f64 = this.doublesOf(buffer);
    this.i32 = new Int32Array(buffer);
    this.u32 = new Uint32Array(buffer);
  }

  private doublesOf(buffer: ArrayBuffer): Float64Array {
    return this.doubles === 0 ? new Float64Array(0) : new Float64Array(buffer);
  }
}
