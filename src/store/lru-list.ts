/**
 * Least-recently-used order of the store's sessions: an intrusive doubly linked list
 * through the records' lruPrev/lruNext, so marking a session used is O(1) and allocates
 * nothing. The head is the first to evict.
 */
import type { SessionRecord } from './session-record';

export class LruList {
  head: SessionRecord | null = null;
  private tail: SessionRecord | null = null;

  /** Moves the record to the most recently used end (adds it if absent). */
  touch(record: SessionRecord): void {
    if (this.tail === record) return;
    this.unlink(record);
    record.lruPrev = this.tail;
    if (this.tail !== null) this.tail.lruNext = record;
    this.tail = record;
    if (this.head === null) this.head = record;
  }

  /** Whether the record is in the list. */
  has(record: SessionRecord): boolean {
    return record.lruPrev !== null || this.head === record;
  }

  /** Takes the record out of the list (no-op if it is not in it). */
  unlink(record: SessionRecord): void {
    const prev = record.lruPrev;
    const next = record.lruNext;
    if (prev !== null) prev.lruNext = next;
    else if (this.head === record) this.head = next;
    if (next !== null) next.lruPrev = prev;
    else if (this.tail === record) this.tail = prev;
    record.lruPrev = null;
    record.lruNext = null;
  }
}
