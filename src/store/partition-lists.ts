/**
 * The sessions of each partition: one intrusive doubly linked list per partition through
 * the records' partPrev/partNext (like the LRU list), so the store finds a session by id in
 * one map without hashing the id into a partition first, and still walks a partition's
 * sessions (state transfer, digests, discards) without scanning the others.
 *
 * Rules:
 * - A record is in exactly one list (its partition's) from insert to remove; callers
 *   name the partition (from the session's key), records do not store it.
 * - Lists keep insertion order; `records` copies a list, so its caller may remove records
 *   while it walks the copy; `walk` copies nothing and tolerates removal of the record it
 *   just yielded only.
 */
import type { SessionRecord } from './session-record';

export class PartitionLists {
  private readonly heads: (SessionRecord | null)[];
  private readonly tails: (SessionRecord | null)[];
  private readonly sizes: number[];

  constructor(readonly partitions: number) {
    this.heads = new Array<SessionRecord | null>(partitions).fill(null);
    this.tails = new Array<SessionRecord | null>(partitions).fill(null);
    this.sizes = new Array<number>(partitions).fill(0);
  }

  add(record: SessionRecord, partition: number): void {
    const tail = this.tails[partition]!;
    record.partPrev = tail;
    record.partNext = null;
    if (tail !== null) tail.partNext = record;
    else this.heads[partition] = record;
    this.tails[partition] = record;
    this.sizes[partition]!++;
  }

  remove(record: SessionRecord, partition: number): void {
    const prev = record.partPrev;
    const next = record.partNext;
    if (prev !== null) prev.partNext = next;
    else this.heads[partition] = next;
    if (next !== null) next.partPrev = prev;
    else this.tails[partition] = prev;
    record.partPrev = null;
    record.partNext = null;
    this.sizes[partition]!--;
  }

  size(partition: number): number {
    return this.sizes[partition]!;
  }

  /** The partition's records in insertion order, read as the walk goes (no copy). */
  *walk(partition: number): IterableIterator<SessionRecord> {
    for (let r: SessionRecord | null = this.heads[partition] ?? null; r !== null; ) {
      const next: SessionRecord | null = r.partNext;
      yield r;
      r = next;
    }
  }

  /** The partition's records now, in insertion order (a copy). */
  records(partition: number): SessionRecord[] {
    const out: SessionRecord[] = [];
    for (let r: SessionRecord | null = this.heads[partition] ?? null; r !== null; r = r.partNext) out.push(r);
    return out;
  }
}
