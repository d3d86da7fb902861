/**
 * Named deadlines with the earliest one at hand: a protocol core sets a deadline per
 * timer it runs (a receiver's NACK, a channel's hold, a retry) and reports `next()` as the
 * one time its driver must wake, without scanning its parts.
 *
 * Rules:
 * - One deadline per name; setting a name again moves it, Infinity (or `clear`) removes it.
 * - An indexed binary min-heap: set and clear are O(log n), next is O(1).
 * - Times are whatever the caller's `now` is (ms); the table reads no clock.
 */

interface Slot<K> {
  name: K;
  at: number;
}

export class TimerTable<K = string> {
  private readonly heap: Slot<K>[] = [];
  private readonly index = new Map<K, number>();

  /** Sets `name` to fire at `at` (Infinity removes it). */
  set(name: K, at: number): void {
    if (at === Infinity) {
      this.clear(name);
      return;
    }
    const i = this.index.get(name);
    if (i === undefined) {
      this.heap.push({ name, at });
      this.index.set(name, this.heap.length - 1);
      this.up(this.heap.length - 1);
      return;
    }
    const slot = this.heap[i]!;
    const earlier = at < slot.at;
    slot.at = at;
    if (earlier) this.up(i);
    else this.down(i);
  }

  clear(name: K): void {
    const i = this.index.get(name);
    if (i === undefined) return;
    this.index.delete(name);
    const last = this.heap.pop()!;
    if (i === this.heap.length) return;
    this.heap[i] = last;
    this.index.set(last.name, i);
    this.up(i);
    this.down(this.index.get(last.name)!);
  }

  /** The deadline of `name` (Infinity = none). */
  get(name: K): number {
    const i = this.index.get(name);
    return i === undefined ? Infinity : this.heap[i]!.at;
  }

  /** The earliest deadline (Infinity = none). */
  next(): number {
    return this.heap.length === 0 ? Infinity : this.heap[0]!.at;
  }

  /** Names whose deadline is at or before `now`, earliest first (the table is unchanged). */
  due(now: number): K[] {
    const due: Slot<K>[] = [];
    const visit = (i: number): void => {
      const slot = this.heap[i];
      if (slot === undefined || slot.at > now) return;
      due.push(slot);
      visit(2 * i + 1);
      visit(2 * i + 2);
    };
    visit(0);
    return due.sort((a, b) => a.at - b.at).map((slot) => slot.name);
  }

  get size(): number {
    return this.heap.length;
  }

  private up(i: number): void {
    const heap = this.heap;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (heap[parent]!.at <= heap[i]!.at) break;
      this.swap(i, parent);
      i = parent;
    }
  }

  private down(i: number): void {
    const heap = this.heap;
    for (;;) {
      const left = 2 * i + 1;
      const right = left + 1;
      let least = i;
      if (left < heap.length && heap[left]!.at < heap[least]!.at) least = left;
      if (right < heap.length && heap[right]!.at < heap[least]!.at) least = right;
      if (least === i) return;
      this.swap(i, least);
      i = least;
    }
  }

  private swap(a: number, b: number): void {
    const heap = this.heap;
    const slotA = heap[a]!;
    const slotB = heap[b]!;
    heap[a] = slotB;
    heap[b] = slotA;
    this.index.set(slotB.name, a);
    this.index.set(slotA.name, b);
  }
}
