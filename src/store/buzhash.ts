/**
 * 64-bit BUZhash (cyclic polynomial hash) with a table derived from a cluster seed.
 *
 * h(b[0..n)) = XOR over i of rotl64(T[b[i]], n-1-i), computed as h = rotl(h, 1) ^ T[b].
 * Every node derives the same table from the same seed, so partitioning, placement and
 * digests agree cluster-wide; an outsider without the seed cannot aim ids at one partition.
 * The table is "balanced": each of the 64 bit columns has exactly 128 ones.
 *
 * 64-bit values are carried as two unsigned 32-bit halves (hi, lo) on the hot paths, which
 * keeps them free of BigInt allocation; bigint forms exist for callers that want one value.
 * Strings are hashed as their UTF-8 bytes.
 */
import { createHash } from 'node:crypto';
import { SeededRandom } from './random';

const TABLE_DOMAIN = 'baton/buzhash/v1';

export class BuzHash {
  /** High and low 32 bits of each table entry. */
  readonly tableHi = new Uint32Array(256);
  readonly tableLo = new Uint32Array(256);
  /**
   * Halves of the last hash computed by hashString/hashBytes (avoids allocating), as signed
   * 32-bit integers: V8 keeps those in the field, where unsigned ones above 2^31 would be
   * a new number object per hash (toBigInt reads them unsigned).
   */
  hi = 0;
  lo = 0;
  private readonly scratch = Buffer.allocUnsafe(1024);

  constructor(seed: Uint8Array | string) {
    const digest = createHash('sha256').update(TABLE_DOMAIN).update(seed).digest();
    const random = new SeededRandom(digest);
    const order = new Uint8Array(256);
    for (let bit = 0; bit < 64; bit++) {
      for (let i = 0; i < 256; i++) order[i] = i;
      // Fisher–Yates: the first 128 entries of the shuffled order get a one in this column.
      for (let i = 255; i > 0; i--) {
        const j = random.below(i + 1);
        const t = order[i]!;
        order[i] = order[j]!;
        order[j] = t;
      }
      for (let i = 0; i < 128; i++) {
        const entry = order[i]!;
        if (bit < 32) this.tableLo[entry] = (this.tableLo[entry]! | (1 << bit)) >>> 0;
        else this.tableHi[entry] = (this.tableHi[entry]! | (1 << (bit - 32))) >>> 0;
      }
    }
  }

  /** Hashes bytes; the result is left in this.hi / this.lo. */
  hashBytes(bytes: Uint8Array, start = 0, end = bytes.length): void {
    const th = this.tableHi;
    const tl = this.tableLo;
    let hi = 0;
    let lo = 0;
    for (let i = start; i < end; i++) {
      const b = bytes[i]!;
      const nhi = (hi << 1) | (lo >>> 31);
      lo = ((lo << 1) | (hi >>> 31)) ^ tl[b]!;
      hi = nhi ^ th[b]!;
    }
    this.hi = hi | 0;
    this.lo = lo | 0;
  }

  /** Hashes a string's UTF-8 bytes; the result is left in this.hi / this.lo. */
  hashString(s: string): void {
    const th = this.tableHi;
    const tl = this.tableLo;
    let hi = 0;
    let lo = 0;
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c >= 0x80) {
        this.hashUtf8(s);
        return;
      }
      const nhi = (hi << 1) | (lo >>> 31);
      lo = ((lo << 1) | (hi >>> 31)) ^ tl[c]!;
      hi = nhi ^ th[c]!;
    }
    this.hi = hi | 0;
    this.lo = lo | 0;
  }

  private hashUtf8(s: string): void {
    if (Buffer.byteLength(s) <= this.scratch.length) {
      const n = this.scratch.write(s, 0, 'utf8');
      this.hashBytes(this.scratch, 0, n);
    } else {
      this.hashBytes(Buffer.from(s, 'utf8'));
    }
  }

  /** The 64-bit hash of bytes or a string, as a bigint. */
  hash64(input: Uint8Array | string): bigint {
    if (typeof input === 'string') this.hashString(input);
    else this.hashBytes(input);
    return toBigInt(this.hi, this.lo);
  }

  /**
   * The partition of a session id: buzhash64(id), finalised, mod partitions. The raw
   * hash's low bits are XORs of few table entries, so ids that differ only in their last
   * characters (sess-1, sess-2…) would crowd a few partitions; murmur3's finaliser spreads
   * every bit of the hash over the bits the modulo keeps.
   */
  partitionOf(id: string, partitions: number): number {
    this.hashString(id);
    return partitionOfHash(this.hi, this.lo, partitions);
  }
}

/**
 * The rolling-window form: after each push, value() equals the from-scratch hash of the
 * last `window` bytes (or of all bytes pushed so far, while fewer than `window`).
 */
export class RollingBuzHash {
  hi = 0;
  lo = 0;
  private readonly ring: Uint8Array;
  private count = 0;
  /** rotl64(T[b], window) for every b, precomputed. */
  private readonly outHi = new Uint32Array(256);
  private readonly outLo = new Uint32Array(256);

  constructor(
    private readonly hasher: BuzHash,
    readonly window: number,
  ) {
    if (!Number.isInteger(window) || window < 1) throw new RangeError('window must be a positive integer');
    this.ring = new Uint8Array(window);
    const r = window % 64;
    for (let b = 0; b < 256; b++) {
      const [h, l] = rotl64(hasher.tableHi[b]!, hasher.tableLo[b]!, r);
      this.outHi[b] = h;
      this.outLo[b] = l;
    }
  }

  push(byte: number): void {
    const b = byte & 0xff;
    const slot = this.count % this.window;
    let hi = (this.hi << 1) | (this.lo >>> 31);
    let lo = (this.lo << 1) | (this.hi >>> 31);
    if (this.count >= this.window) {
      const out = this.ring[slot]!;
      hi ^= this.outHi[out]!;
      lo ^= this.outLo[out]!;
    }
    this.hi = (hi ^ this.hasher.tableHi[b]!) >>> 0;
    this.lo = (lo ^ this.hasher.tableLo[b]!) >>> 0;
    this.ring[slot] = b;
    this.count++;
  }

  value(): bigint {
    return toBigInt(this.hi, this.lo);
  }

  reset(): void {
    this.hi = 0;
    this.lo = 0;
    this.count = 0;
  }
}

export function rotl64(hi: number, lo: number, r: number): [number, number] {
  r %= 64;
  if (r >= 32) {
    const t = hi;
    hi = lo;
    lo = t;
    r -= 32;
  }
  if (r === 0) return [hi >>> 0, lo >>> 0];
  return [((hi << r) | (lo >>> (32 - r))) >>> 0, ((lo << r) | (hi >>> (32 - r))) >>> 0];
}

export function toBigInt(hi: number, lo: number): bigint {
  return (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
}

/** The partition of a 64-bit hash (see BuzHash.partitionOf). */
export function partitionOfHash(hi: number, lo: number, partitions: number): number {
  return fmix32(lo ^ fmix32(hi ^ 0x9e3779b9)) % partitions;
}

/** (hi·2³² + lo) mod m, exact for m ≤ 2²⁶. */
export function mod64(hi: number, lo: number, m: number): number {
  const base = 0x100000000 % m;
  return ((hi % m) * base + (lo % m)) % m;
}

/** murmur3's 32-bit finaliser. */
export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Mixes one 32-bit word into a running murmur3-style state. */
export function mixWord(h: number, k: number): number {
  k = Math.imul(k, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, 0x1b873593);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}
