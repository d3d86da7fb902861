/**
 * Buckets session rows by due time (at a fixed resolution) so the store finds what has
 * expired without scanning. Each row sits in at most one bucket: a doubly linked list
 * through its S_WHEEL_PREV / S_WHEEL_NEXT fields, its bucket's key in S_WHEEL_KEY, so
 * cancelling or moving it is O(1) and allocates nothing. Bucket keys due next come from a
 * binary min-heap; a key whose bucket has emptied is skipped when popped.
 *
 * Rows may sit in a bucket later than their true deadline only if the caller chose
 * scheduleNoLater's lazy form; `due` hands every row of a due bucket to the caller, who
 * re-schedules the ones not yet due.
 */
import type { RowBlock } from './row-block';
import { S_WHEEL_KEY, S_WHEEL_NEXT, S_WHEEL_PREV, SESSION_DOUBLES, SESSION_INTS } from './session-record';

export class ExpiryWheel {
  /** Head row of each non-empty bucket, by key. */
  private readonly buckets = new Map<number, number>();
  private readonly heap: number[] = [];
  /** Keys in the heap, so a bucket emptied and re-created does not push its key twice. */
  private readonly heapKeys = new Set<number>();

  /** @param rows the session rows; their wheel fields are this wheel's (-1 key: unscheduled) */
  constructor(
    readonly resolutionMs: number,
    private readonly rows: RowBlock,
  ) {
    if (!(resolutionMs > 0)) throw new RangeError('resolutionMs must be positive');
  }

  /** Schedules (or moves) the row to the bucket holding atMs. */
  schedule(row: number, atMs: number): void {
    const key = Math.ceil(atMs / this.resolutionMs);
    const keyAt = row * SESSION_DOUBLES + S_WHEEL_KEY;
    if (this.rows.f64[keyAt] === key) return;
    this.cancel(row);
    const head = this.buckets.get(key);
    const i32 = this.rows.i32;
    const at = row * SESSION_INTS;
    this.rows.f64[keyAt] = key;
    i32[at + S_WHEEL_PREV] = -1;
    if (head === undefined) {
      i32[at + S_WHEEL_NEXT] = -1;
      this.pushKey(key);
    } else {
      i32[at + S_WHEEL_NEXT] = head;
      i32[head * SESSION_INTS + S_WHEEL_PREV] = row;
    }
    this.buckets.set(key, row);
  }

  /**
   * Moves the row only if atMs falls in an earlier bucket than its current one; a later
   * deadline is left for `due` to find, which saves a move on every refresh.
   */
  scheduleNoLater(row: number, atMs: number): void {
    const held = this.rows.f64[row * SESSION_DOUBLES + S_WHEEL_KEY]!;
    if (held === -1 || Math.ceil(atMs / this.resolutionMs) < held) this.schedule(row, atMs);
  }

  cancel(row: number): void {
    const keyAt = row * SESSION_DOUBLES + S_WHEEL_KEY;
    const held = this.rows.f64[keyAt]!;
    if (held === -1) return;
    const i32 = this.rows.i32;
    const at = row * SESSION_INTS;
    const prev = i32[at + S_WHEEL_PREV]!;
    const next = i32[at + S_WHEEL_NEXT]!;
    if (next !== -1) i32[next * SESSION_INTS + S_WHEEL_PREV] = prev;
    if (prev !== -1) i32[prev * SESSION_INTS + S_WHEEL_NEXT] = next;
    else if (next !== -1) this.buckets.set(held, next);
    else this.buckets.delete(held);
    this.rows.f64[keyAt] = -1;
    i32[at + S_WHEEL_PREV] = -1;
    i32[at + S_WHEEL_NEXT] = -1;
  }

  /** Unschedules and hands over every row in buckets due at nowMs. */
  due(nowMs: number, visit: (row: number) => void): void {
    while (this.heap.length > 0 && this.heap[0]! * this.resolutionMs <= nowMs) {
      const key = this.popKey();
      let row = this.buckets.get(key);
      if (row === undefined) continue;
      this.buckets.delete(key);
      const rows: number[] = [];
      const i32 = this.rows.i32;
      const f64 = this.rows.f64;
      while (row !== -1) {
        const at: number = row! * SESSION_INTS;
        const next: number = i32[at + S_WHEEL_NEXT]!;
        f64[row! * SESSION_DOUBLES + S_WHEEL_KEY] = -1;
        i32[at + S_WHEEL_PREV] = -1;
        i32[at + S_WHEEL_NEXT] = -1;
        rows.push(row!);
        row = next;
      }
      for (const r of rows) visit(r);
    }
  }

  /** The time the earliest non-empty bucket falls due, or undefined if none. */
  nextDeadline(): number | undefined {
    while (this.heap.length > 0 && !this.buckets.has(this.heap[0]!)) this.popKey();
    return this.heap.length > 0 ? this.heap[0]! * this.resolutionMs : undefined;
  }

  private pushKey(key: number): void {
    if (this.heapKeys.has(key)) return;
    this.heapKeys.add(key);
    const heap = this.heap;
    let i = heap.length;
    heap.push(key);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (heap[parent]! <= key) break;
      heap[i] = heap[parent]!;
      i = parent;
    }
    heap[i] = key;
  }

  private popKey(): number {
    const heap = this.heap;
    const top = heap[0]!;
    this.heapKeys.delete(top);
    const last = heap.pop()!;
    if (heap.length > 0) {
      let i = 0;
      for (;;) {
        const left = 2 * i + 1;
        if (left >= heap.length) break;
        const right = left + 1;
        const child = right < heap.length && heap[right]! < heap[left]! ? right : left;
        if (heap[child]! >= last) break;
        heap[i] = heap[child]!;
        i = child;
      }
      heap[i] = last;
    }
    return top;
  }
}
