/**
 * Buckets entries by due time (at a fixed resolution) so the store finds what has expired
 * without scanning. Each entry sits in at most one bucket; it records its bucket key and
 * index, so cancelling or moving it is O(1) (swap-remove). Bucket keys due next come from
 * a binary min-heap; a key whose bucket has emptied is skipped when popped.
 *
 * Entries may sit in a bucket later than their true deadline only if the caller chose
 * scheduleNoLater's lazy form; `due` hands every entry of a due bucket to the caller, who
 * re-schedules the ones not yet due.
 */

export interface WheelEntry {
  /** Bucket key, or -1 when not scheduled. Owned by the wheel. */
  wheelKey: number;
  /** Index inside the bucket. Owned by the wheel. */
  wheelIndex: number;
}

export class ExpiryWheel<T extends WheelEntry> {
  private readonly buckets = new Map<number, T[]>();
  private readonly heap: number[] = [];
  /** Keys in the heap, so a bucket emptied and re-created does not push its key twice. */
  private readonly heapKeys = new Set<number>();

  constructor(readonly resolutionMs: number) {
    if (!(resolutionMs > 0)) throw new RangeError('resolutionMs must be positive');
  }

  /** Schedules (or moves) the entry to the bucket holding atMs. */
  schedule(entry: T, atMs: number): void {
    const key = Math.ceil(atMs / this.resolutionMs);
    if (entry.wheelKey === key) return;
    this.cancel(entry);
    let bucket = this.buckets.get(key);
    if (bucket === undefined) {
      bucket = [];
      this.buckets.set(key, bucket);
      this.pushKey(key);
    }
    entry.wheelKey = key;
    entry.wheelIndex = bucket.length;
    bucket.push(entry);
  }

  /**
   * Moves the entry only if atMs falls in an earlier bucket than its current one; a later
   * deadline is left for `due` to find, which saves a move on every refresh.
   */
  scheduleNoLater(entry: T, atMs: number): void {
    if (entry.wheelKey === -1 || Math.ceil(atMs / this.resolutionMs) < entry.wheelKey) this.schedule(entry, atMs);
  }

  cancel(entry: T): void {
    if (entry.wheelKey === -1) return;
    const bucket = this.buckets.get(entry.wheelKey);
    if (bucket !== undefined) {
      const last = bucket.pop()!;
      if (last !== entry) {
        bucket[entry.wheelIndex] = last;
        last.wheelIndex = entry.wheelIndex;
      }
      if (bucket.length === 0) this.buckets.delete(entry.wheelKey);
    }
    entry.wheelKey = -1;
    entry.wheelIndex = -1;
  }

  /** Unschedules and hands over every entry in buckets due at nowMs. */
  due(nowMs: number, visit: (entry: T) => void): void {
    while (this.heap.length > 0 && this.heap[0]! * this.resolutionMs <= nowMs) {
      const key = this.popKey();
      const bucket = this.buckets.get(key);
      if (bucket === undefined) continue;
      this.buckets.delete(key);
      for (const entry of bucket) {
        entry.wheelKey = -1;
        entry.wheelIndex = -1;
      }
      for (const entry of bucket) visit(entry);
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
