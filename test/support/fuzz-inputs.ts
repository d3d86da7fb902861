/**
 * Seeded generators of hostile input for fuzz tests: random bytes, broken protobuf wire
 * format (truncations, bit flips, huge declared lengths, runaway varints, deep nesting,
 * invalid UTF-8) and awkward strings (empty, over-long, control characters, lone
 * surrogates). Everything draws from a Random, so a seed replays the same inputs.
 */
import { createCipheriv } from 'node:crypto';
import type { Random } from '../../src/store/random';

export function chance(rng: Random, p: number): boolean {
  return rng.next() < p;
}

export function pick<T>(rng: Random, items: readonly T[]): T {
  return items[rng.below(items.length)]!;
}

/** A length in [0, max], skewed towards small values (uniform in log scale). */
export function skewedLength(rng: Random, max: number): number {
  const bits = rng.below(Math.ceil(Math.log2(max + 1)) + 1);
  return Math.min(max, rng.below(2 ** bits + 1));
}

/**
 * `length` bytes determined by the generator's state. Long runs come from AES-CTR keyed
 * by the generator (native, so fast even inside Jest's VM context, where every call of
 * a JS generator pays for its global lookups); short ones straight from the generator.
 */
export function randomBytes(rng: Random, length: number): Buffer {
  if (length <= 32) {
    const out = Buffer.allocUnsafe(length);
    for (let i = 0; i < length; i += 4) {
      const word = rng.nextUint32();
      for (let j = 0; j < 4 && i + j < length; j++) out[i + j] = (word >>> (8 * j)) & 0xff;
    }
    return out;
  }
  const seed = Buffer.allocUnsafe(32);
  for (let i = 0; i < 32; i += 4) seed.writeUInt32LE(rng.nextUint32(), i);
  const cipher = createCipheriv('aes-128-ctr', seed.subarray(0, 16), seed.subarray(16));
  return cipher.update(Buffer.alloc(length));
}

/** A random unsigned 64-bit integer. */
export function randomUint64(rng: Random): bigint {
  return (BigInt(rng.nextUint32()) << 32n) | BigInt(rng.nextUint32());
}

export const UINT32_MAX = 0xffff_ffff;
export const UINT64_MAX = (1n << 64n) - 1n;

/** Protobuf base-128 varint of n (n ≥ 0, up to 70 bits so overlong values can be written). */
export function varint(n: bigint | number): number[] {
  let v = BigInt(n);
  const out: number[] = [];
  do {
    let byte = Number(v & 0x7fn);
    v >>= 7n;
    if (v > 0n) byte |= 0x80;
    out.push(byte);
  } while (v > 0n);
  return out;
}

export function tag(field: number, wireType: number): number[] {
  return varint((BigInt(field) << 3n) | BigInt(wireType));
}

/** A length-delimited field holding `payload`. */
export function lengthDelimited(field: number, payload: Uint8Array): Buffer {
  return Buffer.concat([Buffer.from([...tag(field, 2), ...varint(payload.length)]), payload]);
}

/** Byte sequences that are not UTF-8: stray continuation bytes, overlong forms, encoded surrogates, > U+10FFFF. */
export const INVALID_UTF8: readonly number[][] = [
  [0xff],
  [0xfe, 0xff],
  [0x80],
  [0xc0, 0x80],
  [0xe0, 0x80, 0x80],
  [0xed, 0xa0, 0x80],
  [0xed, 0xbf, 0xbf],
  [0xf4, 0x90, 0x80, 0x80],
  [0xf8, 0x88, 0x80, 0x80, 0x80],
  [0x61, 0xe2, 0x82],
];

export type GarbageKind =
  | 'empty'
  | 'random'
  | 'valid'
  | 'truncated'
  | 'bit-flips'
  | 'splice'
  | 'repeated'
  | 'huge-length'
  | 'runaway-varint'
  | 'bad-wire-type'
  | 'deep-groups'
  | 'deep-nesting'
  | 'invalid-utf8'
  | 'oversize';

export interface Garbage {
  kind: GarbageKind;
  bytes: Buffer;
}

const KINDS: readonly GarbageKind[] = [
  'empty',
  'random',
  'random',
  'random',
  'valid',
  'valid',
  'truncated',
  'truncated',
  'bit-flips',
  'bit-flips',
  'bit-flips',
  'splice',
  'repeated',
  'huge-length',
  'huge-length',
  'runaway-varint',
  'bad-wire-type',
  'deep-groups',
  'deep-nesting',
  'invalid-utf8',
  'invalid-utf8',
];

export interface GarbageOptions {
  /** Largest ordinary garbage message, in bytes. */
  maxBytes: number;
  /** Size of an 'oversize' message (above the server's receive limit); 0 = never. */
  oversizeBytes: number;
  /** Probability of an oversize message. */
  oversizeChance: number;
}

/**
 * One hostile message. `valid` returns a well-formed encoding of the method's request,
 * which most strategies start from so the damage lands inside plausible structure.
 */
export function garbage(rng: Random, valid: () => Uint8Array, options: GarbageOptions): Garbage {
  if (options.oversizeBytes > 0 && chance(rng, options.oversizeChance)) {
    return { kind: 'oversize', bytes: randomBytes(rng, options.oversizeBytes + rng.below(options.oversizeBytes)) };
  }
  const kind = pick(rng, KINDS);
  const field = 1 + rng.below(6);
  switch (kind) {
    case 'empty':
      return { kind, bytes: Buffer.alloc(0) };
    case 'random':
      return { kind, bytes: randomBytes(rng, skewedLength(rng, options.maxBytes)) };
    case 'valid':
      return { kind, bytes: Buffer.from(valid()) };
    case 'truncated': {
      const bytes = Buffer.from(valid());
      return { kind, bytes: bytes.subarray(0, rng.below(Math.max(bytes.length, 1))) };
    }
    case 'bit-flips': {
      const bytes = Buffer.from(valid());
      if (bytes.length === 0) return { kind, bytes: randomBytes(rng, 1 + rng.below(8)) };
      const flips = 1 + rng.below(8);
      for (let i = 0; i < flips; i++) bytes[rng.below(bytes.length)]! ^= 1 << rng.below(8);
      return { kind, bytes };
    }
    case 'splice': {
      const bytes = Buffer.from(valid());
      const at = rng.below(bytes.length + 1);
      const cut = rng.below(bytes.length - at + 1);
      return { kind, bytes: Buffer.concat([bytes.subarray(0, at), randomBytes(rng, skewedLength(rng, 64)), bytes.subarray(at + cut)]) };
    }
    case 'repeated': {
      // Protobuf merges repeated messages: repeated fields accumulate, scalars take the last.
      const copies = 2 + rng.below(20);
      const parts: Uint8Array[] = [];
      let total = 0;
      while (parts.length < copies && total < options.maxBytes) {
        const one = valid();
        parts.push(one);
        total += one.length;
      }
      return { kind, bytes: Buffer.concat(parts) };
    }
    case 'huge-length': {
      const declared = pick(rng, [
        2n ** 31n - 1n,
        2n ** 31n,
        2n ** 32n - 1n,
        2n ** 32n,
        2n ** 53n,
        UINT64_MAX,
        BigInt(options.maxBytes * 16),
        randomUint64(rng),
      ]);
      const prefix = chance(rng, 0.5) ? Buffer.from(valid()) : Buffer.alloc(0);
      return { kind, bytes: Buffer.concat([prefix, Buffer.from([...tag(field, 2), ...varint(declared)]), randomBytes(rng, rng.below(32))]) };
    }
    case 'runaway-varint': {
      // A varint that never ends (or runs past 10 bytes), after a tag or as the tag itself.
      const run = Buffer.alloc(10 + rng.below(40), 0xff);
      const head = chance(rng, 0.5) ? Buffer.from(tag(field, pick(rng, [0, 2]))) : Buffer.alloc(0);
      const tail = chance(rng, 0.5) ? Buffer.from([0x01]) : Buffer.alloc(0);
      return { kind, bytes: Buffer.concat([head, run, tail]) };
    }
    case 'bad-wire-type': {
      // Field number 0, wire types 6 and 7, a stray end-group, a fixed field cut short.
      const bytes = pick(rng, [
        [0x00, 0x01],
        [...tag(field, 6), 0x01],
        [...tag(field, 7), 0x01],
        [...tag(field, 4)],
        [...tag(field, 1), 0x01, 0x02],
        [...tag(field, 5), 0x01],
        [...tag(2 ** 29 - 1, 0), 0x01],
        [...varint(2n ** 35n), 0x01],
      ]);
      return { kind, bytes: Buffer.concat([Buffer.from(valid()), Buffer.from(bytes)]) };
    }
    case 'deep-groups': {
      // Start-group tags nested thousands deep; decoders that recurse on groups must stop.
      const depth = 1 + rng.below(Math.min(options.maxBytes, 10_000));
      const open = Buffer.alloc(depth, tag(field + 8, 3)[0]!);
      const close = chance(rng, 0.5) ? Buffer.alloc(depth, tag(field + 8, 4)[0]!) : Buffer.alloc(0);
      return { kind, bytes: Buffer.concat([open, close]) };
    }
    case 'deep-nesting': {
      // Length-delimited fields inside each other, each a field the schema declares.
      let inner: Buffer = randomBytes(rng, rng.below(16));
      const depth = 1 + rng.below(2000);
      for (let i = 0; i < depth && inner.length < options.maxBytes; i++) inner = lengthDelimited(1 + rng.below(3), inner);
      return { kind, bytes: inner };
    }
    case 'invalid-utf8': {
      // A string field whose bytes are not UTF-8, in front of an otherwise valid message.
      const bad = Buffer.from([...pick(rng, INVALID_UTF8), ...(chance(rng, 0.5) ? pick(rng, INVALID_UTF8) : [])]);
      const prefix = chance(rng, 0.5) ? Buffer.from('s-') : Buffer.alloc(0);
      return { kind, bytes: Buffer.concat([lengthDelimited(1, Buffer.concat([prefix, bad])), Buffer.from(valid())]) };
    }
    case 'oversize':
      return { kind, bytes: randomBytes(rng, options.maxBytes) };
  }
}

const UNICODE_PIECES = ['é', '€', '中文', '😀', '👩‍👩‍👧', 'e\u0301', '\u202e', '\ufeff', '\ufffd', '\u{10ffff}', 'ß', 'Ω'];
const CONTROL_PIECES = ['\u0000', '\n', '\t', '\r', '\u001b', '\u007f', '\u0085', '\u009f'];
const LONE_SURROGATES = ['\ud800', '\udbff', '\udc00', '\udfff', '\ud83d'];

/** A string of printable ASCII characters. */
export function asciiString(rng: Random, length: number): string {
  let s = '';
  for (let i = 0; i < length; i++) s += String.fromCharCode(0x20 + rng.below(0x5f));
  return s;
}

/**
 * A string for an id-like field: usually short and printable, often empty, over-long,
 * near a 512-byte limit, or holding control characters, lone surrogates or non-ASCII text.
 */
export function awkwardString(rng: Random): string {
  switch (rng.below(12)) {
    case 0:
      return '';
    case 1:
      return 'a'.repeat(pick(rng, [511, 512, 513, 1024]));
    case 2:
      return '€'.repeat(pick(rng, [170, 171, 512])); // 3 UTF-8 bytes each: 510, 513, 1536 bytes
    case 3:
      return asciiString(rng, 500 + rng.below(4500));
    case 4:
      return asciiString(rng, rng.below(8)) + pick(rng, CONTROL_PIECES) + asciiString(rng, rng.below(8));
    case 5:
      return asciiString(rng, rng.below(8)) + pick(rng, LONE_SURROGATES) + asciiString(rng, rng.below(8));
    case 6:
    case 7: {
      let s = '';
      const n = 1 + rng.below(6);
      for (let i = 0; i < n; i++) s += chance(rng, 0.5) ? pick(rng, UNICODE_PIECES) : asciiString(rng, 1 + rng.below(4));
      return s;
    }
    case 8: {
      let s = '';
      const n = 1 + rng.below(40);
      for (let i = 0; i < n; i++) s += String.fromCharCode(rng.below(0x10000));
      return s;
    }
    default:
      return asciiString(rng, 1 + rng.below(40));
  }
}

/** What a string becomes after a protobuf round trip: lone surrogates turn into U+FFFD. */
export function wireString(s: string): string {
  return new TextDecoder('utf-8', { ignoreBOM: true }).decode(new TextEncoder().encode(s));
}

/** Hex of the first `max` bytes, for failure messages. */
export function hexPreview(bytes: Uint8Array, max = 96): string {
  const hex = Buffer.from(bytes.subarray(0, max)).toString('hex');
  return bytes.length > max ? `${hex}… (${bytes.length} bytes)` : `${hex} (${bytes.length} bytes)`;
}

/** Runs `task(i)` for i in [0, count) with at most `limit` in flight. */
export async function pool(count: number, limit: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < count) await task(next++);
  };
  await Promise.all(Array.from({ length: Math.min(limit, count) }, worker));
}
