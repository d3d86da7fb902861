/**
 * Deadlines of many waiting things (synchronous writes, resumes and the peers they wait
 * for), so the earliest is found in O(1) and the due ones taken in O(log n) each: the
 * node core reports one next deadline whatever number of calls wait.
 *
 * Rules: entries are never removed early; an entry whose thing has settled meanwhile is
 * skipped by the caller's `live` check when it comes due (lazy deletion), so the heap
 * holds at most one entry per deadline ever pushed and not yet due.
 */
export class DeadlineHeap<T> {
  private readonly heap: { at: number; item: T }[] = [];

  get size(): number {
    return this.heap.length;
  }

  push(at: number, item: T): void {
    const heap = this.heap;
    heap.push({ at, item });
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (heap[parent]!.at <= heap[i]!.at) break;
      [heap[i], heap[parent]] = [heap[parent]!, heap[i]!];
      i = parent;
    }
  }

  /** The earliest deadline of an entry `live` holds for (dead ones on top are dropped); Infinity if none. */
  next(live: (item: T) => boolean): number {
    while (this.heap.length > 0 && !live(this.heap[0]!.item)) this.pop();
    return this.heap.length === 0 ? Infinity : this.heap[0]!.at;
  }

  /** Removes and returns the items due at `now` (live or not: the caller checks). */
  takeDue(now: number): T[] {
    const due: T[] = [];
    while (this.heap.length > 0 && this.heap[0]!.at <= now) due.push(this.pop().item);
    return due;
  }

  private pop(): { at: number; item: T } {
    const heap = this.heap;
    const top = heap[0]!;
    const last = heap.pop()!;
    if (heap.length > 0) {
      heap[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < heap.length && heap[l]!.at < heap[m]!.at) m = l;
        if (r < heap.length && heap[r]!.at < heap[m]!.at) m = r;
        if (m === i) break;
        [heap[i], heap[m]] = [heap[m]!, heap[i]!];
        i = m;
      }
    }
    return top;
  }
}
