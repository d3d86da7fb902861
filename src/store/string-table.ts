/**
 * Strings the store's rows name by number: part names and node ids, which repeat across
 * sessions (a row holds a 32-bit index, not a pointer to a string of its own).
 *
 * Rules:
 * - Every index a row holds is one reference (ref); dropping the row's use of it is
 *   unref. A string nobody references any more is forgotten and its index reused, so
 *   the table holds only strings some row uses (part names may be anything a client sends).
 * - The last string looked up is remembered by identity: writes by this node pass the same
 *   node id string every time, and find it without a map look-up.
 */
export class StringTable {
  private readonly indexes = new Map<string, number>();
  private readonly strings: (string | undefined)[] = [];
  private readonly refs: number[] = [];
  private readonly freed: number[] = [];
  private lastString: string | undefined;
  private lastIndex = -1;

  /** The index of s, referenced once more. */
  ref(s: string): number {
    let index = s === this.lastString ? this.lastIndex : this.indexes.get(s);
    if (index === undefined) {
      index = this.freed.pop() ?? this.strings.length;
      this.strings[index] = s;
      this.refs[index] = 0;
      this.indexes.set(s, index);
    }
    this.lastString = s;
    this.lastIndex = index;
    this.refs[index]!++;
    return index;
  }

  /** One reference to index fewer; the string is forgotten with its last. */
  unref(index: number): void {
    if (--this.refs[index]! > 0) return;
    const s = this.strings[index]!;
    this.indexes.delete(s);
    this.strings[index] = undefined;
    this.freed.push(index);
    if (this.lastIndex === index) {
      this.lastString = undefined;
      this.lastIndex = -1;
    }
  }

  /** The string at a referenced index. */
  at(index: number): string {
    return this.strings[index]!;
  }

  /** The index of s if some row references it, else -1 (takes no reference). */
  find(s: string): number {
    if (s === this.lastString) return this.lastIndex;
    return this.indexes.get(s) ?? -1;
  }

  /** Strings held. */
  get size(): number {
    return this.indexes.size;
  }
}
