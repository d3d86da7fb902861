import { createCipheriv } from 'node:crypto';
import { BuzHash, mod64, partitionOfHash, rotl64, RollingBuzHash, toBigInt } from '../src/store/buzhash';
import { SeededRandom } from '../src/store/random';

const MASK64 = (1n << 64n) - 1n;

function randomBytes(random: SeededRandom, length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = random.below(256);
  return bytes;
}

/** A random string of code points from several ranges (ASCII, Latin-1, BMP, astral). */
function randomString(random: SeededRandom, length: number): string {
  let s = '';
  for (let i = 0; i < length; i++) {
    switch (random.below(4)) {
      case 0:
        s += String.fromCharCode(random.below(0x80));
        break;
      case 1:
        s += String.fromCharCode(0x80 + random.below(0x780));
        break;
      case 2:
        s += String.fromCharCode(0x800 + random.below(0xd000 - 0x800));
        break;
      default:
        s += String.fromCodePoint(0x10000 + random.below(0x10000));
    }
  }
  return s;
}

function table(hasher: BuzHash): bigint[] {
  const t: bigint[] = [];
  for (let b = 0; b < 256; b++) t.push(toBigInt(hasher.tableHi[b]!, hasher.tableLo[b]!));
  return t;
}

/** The textbook definition, in BigInt: h = rotl64(h, 1) ^ T[b]. */
function referenceHash(t: readonly bigint[], bytes: Uint8Array): bigint {
  let h = 0n;
  for (const b of bytes) h = (((h << 1n) | (h >> 63n)) & MASK64) ^ t[b]!;
  return h;
}

function rotlBig(x: bigint, r: number): bigint {
  const s = BigInt(r % 64);
  return ((x << s) | (x >> ((64n - s) % 64n))) & MASK64;
}

/** Pearson's statistic of observed counts against a uniform expectation. */
function chiSquare(counts: readonly number[], total: number): number {
  const expected = total / counts.length;
  let chi = 0;
  for (const c of counts) chi += ((c - expected) * (c - expected)) / expected;
  return chi;
}

describe('BuzHash', () => {
  test('hash64 agrees with a BigInt reference implementation built from the table', () => {
    for (const seed of ['test-seed', 'cluster-a', 'x']) {
      const hasher = new BuzHash(seed);
      const t = table(hasher);
      const random = new SeededRandom(seed.length * 7919);
      for (let n = 0; n < 150; n++) {
        const bytes = randomBytes(random, random.below(150));
        const expected = referenceHash(t, bytes);
        expect(hasher.hash64(bytes)).toBe(expected);
        // The halves left behind match the returned value.
        expect(toBigInt(hasher.hi, hasher.lo)).toBe(expected);
      }
    }
  });

  test('hash64 of a sub-range equals hash64 of the copied bytes', () => {
    const hasher = new BuzHash('test-seed');
    const random = new SeededRandom(5);
    for (let n = 0; n < 200; n++) {
      const bytes = randomBytes(random, 1 + random.below(100));
      const start = random.below(bytes.length);
      const end = start + random.below(bytes.length - start + 1);
      hasher.hashBytes(bytes, start, end);
      expect(toBigInt(hasher.hi, hasher.lo)).toBe(hasher.hash64(bytes.slice(start, end)));
    }
  });

  test('the empty input hashes to 0', () => {
    const hasher = new BuzHash('test-seed');
    expect(hasher.hash64(new Uint8Array(0))).toBe(0n);
    expect(hasher.hash64('')).toBe(0n);
  });

  test('hashString equals hashBytes of the UTF-8 encoding', () => {
    const hasher = new BuzHash('test-seed');
    const encoder = new TextEncoder();
    const fixed = [
      '',
      'a',
      'sess-12345',
      'é',
      '\u0080', // the first code point that takes two UTF-8 bytes
      'x\u007fy\u0080z\u00ff',
      '\u07ff\u0800\uffff',
      'Grüße, Jürgen',
      '日本語のセッション',
      '😀 emoji 👍🏽',
      'ascii prefix then ünïcödé',
      'x'.repeat(5000), // ASCII, longer than the scratch buffer
      'é'.repeat(512), // exactly 1024 UTF-8 bytes
      'a' + 'é'.repeat(512), // 1025 bytes
      'ä'.repeat(600), // 1200 bytes
      '日'.repeat(2000), // 6000 bytes
      'x'.repeat(1023) + '€', // non-ASCII only at the end, 1026 bytes
    ];
    const t = table(hasher);
    const random = new SeededRandom(77);
    const generated: string[] = [];
    for (let i = 0; i < 300; i++) generated.push(randomString(random, random.below(i < 280 ? 40 : 700)));
    for (const s of [...fixed, ...generated]) {
      const bytes = encoder.encode(s);
      expect(hasher.hash64(s)).toBe(hasher.hash64(bytes));
      expect(hasher.hash64(s)).toBe(referenceHash(t, bytes));
    }
  });

  test('a string hashed after a long one is not affected by the scratch buffer', () => {
    const hasher = new BuzHash('test-seed');
    const expected = hasher.hash64(Buffer.from('ünïcödé', 'utf8'));
    hasher.hash64('ü'.repeat(511));
    hasher.hash64('ü'.repeat(3000));
    expect(hasher.hash64('ünïcödé')).toBe(expected);
  });

  test('the table is balanced: each of the 64 bit columns has exactly 128 ones', () => {
    for (const seed of ['test-seed', 'another seed', new Uint8Array([1, 2, 3])]) {
      const hasher = new BuzHash(seed);
      for (let bit = 0; bit < 32; bit++) {
        let hiOnes = 0;
        let loOnes = 0;
        for (let b = 0; b < 256; b++) {
          hiOnes += (hasher.tableHi[b]! >>> bit) & 1;
          loOnes += (hasher.tableLo[b]! >>> bit) & 1;
        }
        expect(hiOnes).toBe(128);
        expect(loOnes).toBe(128);
      }
    }
  });

  test('the table entries are distinct', () => {
    const t = table(new BuzHash('test-seed'));
    expect(new Set(t).size).toBe(256);
  });

  test('the same seed gives the same table; string and byte seeds agree', () => {
    const a = new BuzHash('test-seed');
    const b = new BuzHash('test-seed');
    const c = new BuzHash(Buffer.from('test-seed', 'utf8'));
    expect(Array.from(b.tableHi)).toEqual(Array.from(a.tableHi));
    expect(Array.from(b.tableLo)).toEqual(Array.from(a.tableLo));
    expect(Array.from(c.tableHi)).toEqual(Array.from(a.tableHi));
    expect(Array.from(c.tableLo)).toEqual(Array.from(a.tableLo));
  });

  test('a changed seed changes the table and the hashes', () => {
    const a = new BuzHash('test-seed');
    const b = new BuzHash('test-seed2');
    const ta = table(a);
    const tb = table(b);
    let sameEntries = 0;
    for (let i = 0; i < 256; i++) if (ta[i] === tb[i]) sameEntries++;
    expect(sameEntries).toBeLessThan(3);

    const random = new SeededRandom(99);
    let differ = 0;
    let samePartition = 0;
    for (let i = 0; i < 1000; i++) {
      const id = `sess-${random.nextUint32().toString(16)}-${random.nextUint32().toString(16)}`;
      if (a.hash64(id) !== b.hash64(id)) differ++;
      if (a.partitionOf(id, 256) === b.partitionOf(id, 256)) samePartition++;
    }
    expect(differ).toBeGreaterThan(990);
    // Independent placements agree on about 1/256 of ids.
    expect(samePartition).toBeLessThan(20);
  });

  test('partitionOf(id, P) is the finalised hash64(id) mod P, always below P', () => {
    const hasher = new BuzHash('test-seed');
    const random = new SeededRandom(3);
    for (let i = 0; i < 500; i++) {
      const id = randomString(random, 1 + random.below(30));
      const P = 1 + random.below(1 << 20);
      const h = hasher.hash64(id);
      const expected = partitionOfHash(Number(h >> 32n), Number(h & 0xffffffffn), P);
      expect(hasher.partitionOf(id, P)).toBe(expected);
      expect(expected).toBeLessThan(P);
    }
  });

  // Critical values of the chi-square distribution at p = 0.001.
  const CRITICAL_255_DF = 330.52;
  const CRITICAL_6_DF = 22.458;

  /**
   * n random 16-byte ids as one string of n·32 hex digits (id i is the slice [32i, 32i+32)).
   * The key comes from SeededRandom; AES-CTR stretches it to 16 MB, because millions of
   * SeededRandom calls are slow inside jest's VM context (Math.imul is not inlined there).
   */
  function randomHexIds(seed: number, n: number): string {
    const random = new SeededRandom(seed);
    const key = Buffer.alloc(16);
    for (let i = 0; i < 16; i += 4) key.writeUInt32LE(random.nextUint32(), i);
    const stream = createCipheriv('aes-128-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(n * 16));
    return stream.toString('hex');
  }

  test('1,000,000 random 16-byte hex ids spread uniformly over 256 and over 7 partitions (chi-square, p = 0.001)', () => {
    const hasher = new BuzHash('test-seed');
    const n = 1_000_000;
    const hex = randomHexIds(2024, n);
    expect(hex.length).toBe(n * 32);
    const counts256 = new Array<number>(256).fill(0);
    const counts7 = new Array<number>(7).fill(0);
    for (let i = 0; i < n; i++) {
      const id = hex.slice(i * 32, i * 32 + 32);
      counts256[hasher.partitionOf(id, 256)]!++;
      counts7[hasher.partitionOf(id, 7)]!++;
    }
    expect(chiSquare(counts256, n)).toBeLessThan(CRITICAL_255_DF);
    expect(chiSquare(counts7, n)).toBeLessThan(CRITICAL_6_DF);
  });

  // The raw hash's low bits are XORs of few table entries, so counters would crowd some
  // partitions (chi-square ≈ 732 here); partitionOf finalises the hash to spread them.
  test("1,000,000 sequential ids 'sess-0'… spread uniformly over 256 and over 7 partitions (chi-square, p = 0.001)", () => {
    const hasher = new BuzHash('test-seed');
    const n = 1_000_000;
    const counts256 = new Array<number>(256).fill(0);
    const counts7 = new Array<number>(7).fill(0);
    for (let i = 0; i < n; i++) {
      counts256[hasher.partitionOf('sess-' + i, 256)]!++;
      counts7[hasher.partitionOf('sess-' + i, 7)]!++;
    }
    expect(chiSquare(counts7, n)).toBeLessThan(CRITICAL_6_DF);
    expect(chiSquare(counts256, n)).toBeLessThan(CRITICAL_255_DF);
  });

  // A known property of cyclic polynomial hashing with a 64-bit rotation: equal bytes 64
  // positions apart cancel, under any table. Ids crafted that way share a partition (which
  // one stays secret without the seed); docs/protocol.md says so. This pins the behaviour.
  test('equal bytes 64 positions apart cancel (documented limitation)', () => {
    const idFor = (c: string) => `${c}${'x'.repeat(63)}${c}-session`;
    const hasher = new BuzHash('test-seed');
    const hashes = new Set<bigint>();
    for (const c of 'abcdefghijklmnopqrstuvwxyz0123456789') hashes.add(hasher.hash64(idFor(c)));
    expect(hashes.size).toBe(1);
    expect(hasher.hash64('a' + 'x'.repeat(62) + 'a-session')).not.toBe(hasher.hash64('b' + 'x'.repeat(62) + 'b-session'));
  });
});

describe('RollingBuzHash', () => {
  test('after every push it equals hash64 of the last `window` bytes', () => {
    for (const seed of [1, 2, 3, 4]) {
      const random = new SeededRandom(seed);
      const hasher = new BuzHash(`seed-${seed}`);
      for (const window of [1, 2, 31, 32, 33, 64, 65, 100]) {
        const bytes = randomBytes(random, 150 + random.below(200));
        const rolling = new RollingBuzHash(hasher, window);
        expect(rolling.value()).toBe(0n);
        for (let i = 0; i < bytes.length; i++) {
          rolling.push(bytes[i]!);
          const expected = hasher.hash64(bytes.subarray(Math.max(0, i + 1 - window), i + 1));
          if (rolling.value() !== expected) {
            throw new Error(`seed ${seed}, window ${window}: mismatch after push ${i + 1}`);
          }
        }
        expect(rolling.value()).toBe(hasher.hash64(bytes.subarray(bytes.length - window)));
      }
    }
  });

  test('push masks its argument to a byte', () => {
    const hasher = new BuzHash('test-seed');
    const rolling = new RollingBuzHash(hasher, 4);
    for (const v of [0x141, 0x2ff, -1]) rolling.push(v);
    expect(rolling.value()).toBe(hasher.hash64(new Uint8Array([0x41, 0xff, 0xff])));
  });

  test('reset starts a fresh window', () => {
    const hasher = new BuzHash('test-seed');
    const random = new SeededRandom(11);
    const rolling = new RollingBuzHash(hasher, 33);
    for (const b of randomBytes(random, 100)) rolling.push(b);
    rolling.reset();
    expect(rolling.value()).toBe(0n);
    const bytes = randomBytes(random, 80);
    for (let i = 0; i < bytes.length; i++) {
      rolling.push(bytes[i]!);
      expect(rolling.value()).toBe(hasher.hash64(bytes.subarray(Math.max(0, i + 1 - 33), i + 1)));
    }
  });

  test('rejects a window that is not a positive integer', () => {
    const hasher = new BuzHash('test-seed');
    expect(() => new RollingBuzHash(hasher, 0)).toThrow(RangeError);
    expect(() => new RollingBuzHash(hasher, -3)).toThrow(RangeError);
    expect(() => new RollingBuzHash(hasher, 2.5)).toThrow(RangeError);
  });
});

describe('64-bit helpers', () => {
  test('toBigInt joins unsigned halves', () => {
    expect(toBigInt(0, 0)).toBe(0n);
    expect(toBigInt(0xffffffff, 0xffffffff)).toBe(MASK64);
    expect(toBigInt(-1, 0)).toBe(0xffffffff00000000n);
    expect(toBigInt(1, 2)).toBe((1n << 32n) + 2n);
  });

  test('rotl64 agrees with BigInt rotation for every shift, including 0, 32 and ≥ 64', () => {
    const random = new SeededRandom(17);
    const mismatches: string[] = [];
    let checked = 0;
    for (let n = 0; n < 200; n++) {
      const hi = random.nextUint32();
      const lo = random.nextUint32();
      const x = toBigInt(hi, lo);
      for (const r of [0, 1, 7, 31, 32, 33, 63, 64, 65, 100, 128]) {
        const [h, l] = rotl64(hi, lo, r);
        checked++;
        if (h < 0 || l < 0 || h > 0xffffffff || l > 0xffffffff || toBigInt(h, l) !== rotlBig(x, r)) {
          mismatches.push(`rotl64(${hi}, ${lo}, ${r}) = [${h}, ${l}]`);
        }
      }
    }
    expect(checked).toBe(2200);
    expect(mismatches).toEqual([]);
  });

  test('mod64 agrees with BigInt arithmetic for moduli up to 2^26', () => {
    const random = new SeededRandom(23);
    const moduli = [1, 2, 3, 7, 255, 256, 257, 1000, 65_521, (1 << 20) + 7, (1 << 26) - 5, 1 << 26];
    for (let n = 0; n < 300; n++) moduli.push(1 + random.below(1 << 26));
    const edges = [0, 1, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff];
    const mismatches: string[] = [];
    for (const m of moduli) {
      const pairs: [number, number][] = [];
      for (const hi of edges) for (const lo of edges) pairs.push([hi, lo]);
      for (let k = 0; k < 20; k++) pairs.push([random.nextUint32(), random.nextUint32()]);
      for (const [hi, lo] of pairs) {
        const expected = Number(toBigInt(hi, lo) % BigInt(m));
        if (mod64(hi, lo, m) !== expected) mismatches.push(`mod64(${hi}, ${lo}, ${m}) = ${mod64(hi, lo, m)}, not ${expected}`);
      }
    }
    expect(mismatches).toEqual([]);
  });
});
