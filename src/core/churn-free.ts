/**
 * Keyed collections for entries that come and go at the data rate, built without Map or Set.
 *
 * V8 links a Map's or Set's outgrown hash table to the table that replaced it (so live
 * iterators can follow), and the old table keeps the entries it held. A Map whose entries
 * come and go (one in and one out per delta, per datagram, per call) replaces its table
 * every few dozen changes. Once one of those tables has reached the old generation, each
 * scavenge keeps the next table alive through that link, with every entry in it, and
 * promotes it, so the next one is kept alive too: the values flowing through the Map
 * survive every scavenge until a full collection breaks the chain. In BatonClient this
 * happened in about one run of three, and then 14-18% of all it allocated survived each
 * scavenge (5-6 ms pauses instead of 0.4); a replication writer and its replicas showed
 * 10-16% in every run.
 *
 * An object in dictionary mode has no such link: a dictionary that outgrows its table is
 * copied, and the old table is just garbage. Entries numbered consecutively need no hash
 * table at all (SeqWindow), nor do queues (Fifo).
 */

/** A string- or number-keyed dictionary: an object without prototype, used with `delete`. */
export type Dictionary<V> = Record<string, V>;

export function dictionary<V>(): Dictionary<V> {
  return Object.create(null) as Dictionary<V>;
}

/**
 * A first-in first-out queue on an array: taken slots are cleared at once (a queue that is
 * never empty under steady traffic must not keep what it handed out), and the array is
 * emptied when the queue is, or cut when its taken front is at least half of it.
 */
export class Fifo<T> {
  private slots: (T | undefined)[] = [];
  private head = 0;

  push(value: T): void {
    this.slots.push(value);
  }

  /** The value `index` places from the front (0: the front), or undefined. */
  peek(index = 0): T | undefined {
    return this.slots[this.head + index];
  }

  shift(): T | undefined {
    if (this.head >= this.slots.length) return undefined;
    const value = this.slots[this.head];
    this.slots[this.head++] = undefined;
    if (this.head === this.slots.length) {
      this.slots.length = 0;
      this.head = 0;
    } else if (this.head >= 1024 && this.head * 2 >= this.slots.length) {
      this.slots = this.slots.slice(this.head);
      this.head = 0;
    }
    return value;
  }

  get size(): number {
    return this.slots.length - this.head;
  }
}

/**
 * Values numbered by consecutive sequence numbers, added at the high end and dropped from
 * the low end (a retransmit buffer): a Fifo and the number of its front.
 */
export class SeqWindow<T> {
  private readonly values = new Fifo<T>();
  /** The sequence number at the front. */
  private first: number;

  constructor(first: number) {
    this.first = first;
  }

  /** Holds `value` as `seq`, which must be the number after the last one added (or the first). */
  add(seq: number, value: T): void {
    const expected = this.first + this.values.size;
    if (seq !== expected) throw new RangeError(`SeqWindow: added ${seq}, expected ${expected}`);
    this.values.push(value);
  }

  get(seq: number): T | undefined {
    const at = seq - this.first;
    if (at < 0 || !Number.isInteger(at)) return undefined;
    return this.values.peek(at);
  }

  /** Drops the lowest sequence number held; returns its value (undefined when empty). */
  shift(): T | undefined {
    if (this.values.size === 0) return undefined;
    this.first++;
    return this.values.shift();
  }

  /** The lowest sequence number a value may be held for (the next to shift). */
  get firstSeq(): number {
    return this.first;
  }

  get size(): number {
    return this.values.size;
  }
}
