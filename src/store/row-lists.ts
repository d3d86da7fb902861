/**
 * Doubly linked lists of rows through two i32 fields of each row (prev, next): the store's
 * LRU order (one list) and the sessions of each partition (one list per partition). Adding,
 * removing and moving a row is O(1) and allocates nothing.
 *
 * Rules:
 * - A row is in at most one list of a RowLists; callers name the list (a partition comes
 *   from the session's key, rows do not store it) and set both links to -1 on a new row.
 * - Lists keep insertion order (append adds at the tail); `rows` copies a list, so its
 *   caller may remove rows while it walks the copy; `walk` copies nothing and tolerates
 *   removal of the row it just yielded only.
 */
import type { RowBlock } from './row-block';

export class RowLists {
  private readonly heads: Int32Array;
  private readonly tails: Int32Array;
  private readonly sizes: Int32Array;

  constructor(
    private readonly block: RowBlock,
    private readonly prevField: number,
    private readonly nextField: number,
    readonly lists: number,
  ) {
    this.heads = new Int32Array(lists).fill(-1);
    this.tails = new Int32Array(lists).fill(-1);
    this.sizes = new Int32Array(lists);
  }

  /** Adds the row at the tail of the list. */
  append(list: number, row: number): void {
    const i32 = this.block.i32;
    const ints = this.block.ints;
    const tail = this.tails[list]!;
    i32[row * ints + this.prevField] = tail;
    i32[row * ints + this.nextField] = -1;
    if (tail !== -1) i32[tail * ints + this.nextField] = row;
    else this.heads[list] = row;
    this.tails[list] = row;
    this.sizes[list]!++;
  }

  /** Takes the row out of the list it is in. */
  remove(list: number, row: number): void {
    const i32 = this.block.i32;
    const ints = this.block.ints;
    const prev = i32[row * ints + this.prevField]!;
    const next = i32[row * ints + this.nextField]!;
    if (prev !== -1) i32[prev * ints + this.nextField] = next;
    else this.heads[list] = next;
    if (next !== -1) i32[next * ints + this.prevField] = prev;
    else this.tails[list] = prev;
    i32[row * ints + this.prevField] = -1;
    i32[row * ints + this.nextField] = -1;
    this.sizes[list]!--;
  }

  /** Whether the row is in the list (a row in no list of these has both links -1). */
  contains(list: number, row: number): boolean {
    return this.block.i32[row * this.block.ints + this.prevField] !== -1 || this.heads[list] === row;
  }

  /** Whether the row is the list's last. */
  isTail(list: number, row: number): boolean {
    return this.tails[list] === row;
  }

  /** The list's first row, or -1. */
  head(list: number): number {
    return this.heads[list]!;
  }

  /** The row after this one in its list, or -1. */
  next(row: number): number {
    return this.block.i32[row * this.block.ints + this.nextField]!;
  }

  size(list: number): number {
    return this.sizes[list]!;
  }

  /** The list's rows in order, read as the walk goes (no copy). */
  *walk(list: number): IterableIterator<number> {
    for (let row = this.heads[list]!; row !== -1; ) {
      const next = this.next(row);
      yield row;
      row = next;
    }
  }

  /** The list's rows now, in order (a copy). */
  rows(list: number): number[] {
    const out: number[] = [];
    for (let row = this.heads[list]!; row !== -1; row = this.next(row)) out.push(row);
    return out;
  }
}
