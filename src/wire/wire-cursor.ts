/**
 * A protobuf wire-format reader for the decoders written by hand (Data datagrams, Exchange
 * requests): it reads in place (numbers as numbers, byte fields as ranges of the buffer),
 * makes no object per field, and never throws.
 */

const ASCII_STRING_MAX = 64;

/**
 * Short ASCII texts read lately, by a hash of their bytes (direct-mapped, a slot per hash,
 * the last text wins): ids, part names and node ids come again and again (the four parts of
 * a put, the writer's id in every delta), and a text found here costs a comparison instead
 * of a string made by a call into node (Buffer#toString), and arrives with its hash already
 * computed for the Maps it is looked up in. Bounded: TEXT_CACHE_SLOTS strings of at most
 * ASCII_STRING_MAX characters.
 */
const TEXT_CACHE_SLOTS = 4096;
const textCache: (string | undefined)[] = new Array<string | undefined>(TEXT_CACHE_SLOTS).fill(undefined);

/**
 * Reads protobuf wire format from buf[pos, end) the way the generated decoders do (a field
 * of a known number but another wire type is skipped like an unknown one); every read
 * answers undefined past the end or on data it cannot read, and never throws.
 */
export class WireCursor {
  /** The byte range of the last length-delimited field read (no object per field). */
  fieldStart = 0;
  fieldEnd = 0;

  constructor(
    readonly buf: Buffer,
    public pos: number,
    readonly end: number,
  ) {}

  /** A varint read as uint32 (longer varints are read whole and cut to 32 bits, as the generated reader does). */
  uint32(): number | undefined {
    const buf = this.buf;
    let value = 0;
    for (let shift = 0; shift < 70; shift += 7) {
      if (this.pos >= this.end) return undefined;
      const byte = buf[this.pos++]!;
      if (shift < 32) value |= (byte & 0x7f) << shift;
      if (byte < 0x80) return value >>> 0;
    }
    return undefined;
  }

  /** A tag: a uint32 varint, zero refused. */
  varint32(): number | undefined {
    const tag = this.uint32();
    return tag === 0 ? undefined : tag;
  }

  /** A uint64 varint: a number below 2^53, else the exact bigint (mod 2^64). */
  uint64(): number | bigint | undefined {
    const buf = this.buf;
    const start = this.pos;
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) return undefined;
      const byte = buf[this.pos++]!;
      value += (byte & 0x7f) * scale;
      scale *= 128;
      if (byte < 0x80) {
        if (value <= Number.MAX_SAFE_INTEGER) return value;
        let big = 0n;
        for (let j = this.pos - 1; j >= start; j--) big = (big << 7n) | BigInt(buf[j]! & 0x7f);
        return BigInt.asUintN(64, big);
      }
    }
    return undefined;
  }

  bool(): boolean | undefined {
    const value = this.uint64();
    return value === undefined ? undefined : value !== 0 && value !== 0n;
  }

  /** Reads a length-delimited field's length and steps over it; its bytes are at [fieldStart, fieldEnd). */
  lengthDelimited(): boolean {
    const length = this.uint32();
    if (length === undefined || length > this.end - this.pos) return false;
    this.fieldStart = this.pos;
    this.pos += length;
    this.fieldEnd = this.pos;
    return true;
  }

  /**
   * UTF-8 text; undefined for text that is not valid UTF-8, which baton's generated decoders
   * refuse too (strict-utf8.ts): one string has one byte form on the wire.
   */
  string(): string | undefined {
    if (!this.lengthDelimited()) return undefined;
    const start = this.fieldStart;
    const end = this.fieldEnd;
    const buf = this.buf;
    if (end - start <= ASCII_STRING_MAX) {
      let ascii = true;
      let hash = 0x811c9dc5;
      for (let i = start; i < end; i++) {
        const byte = buf[i]!;
        if (byte > 0x7f) {
          ascii = false;
          break;
        }
        hash = Math.imul(hash ^ byte, 0x01000193);
      }
      if (ascii) return asciiText(buf, start, end, (hash ^ (hash >>> 15)) & (TEXT_CACHE_SLOTS - 1));
    }
    try {
      return UTF8.decode(buf.subarray(start, end));
    } catch {
      return undefined;
    }
  }

  /** Skips a field of the tag's wire type; false for a wire type it cannot skip (groups, 6, 7). */
  skip(tag: number): boolean {
    switch (tag & 7) {
      case 0:
        return this.uint64() !== undefined;
      case 1:
        return this.advance(8);
      case 2:
        return this.lengthDelimited();
      case 5:
        return this.advance(4);
      default:
        return false;
    }
  }

  private advance(bytes: number): boolean {
    if (bytes > this.end - this.pos) return false;
    this.pos += bytes;
    return true;
  }
}

const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** buf[start, end), ASCII, as a string: the cached one in `slot` when it has these bytes. */
function asciiText(buf: Buffer, start: number, end: number, slot: number): string {
  const cached = textCache[slot];
  if (cached !== undefined && cached.length === end - start) {
    let same = true;
    for (let i = start, j = 0; i < end; i++, j++) {
      if (cached.charCodeAt(j) !== buf[i]) {
        same = false;
        break;
      }
    }
    if (same) return cached;
  }
  const text = buf.toString('latin1', start, end);
  textCache[slot] = text;
  return text;
}
