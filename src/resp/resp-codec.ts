/**
 * The Redis serialization protocol (RESP2 and RESP3), as a server reads and writes it: an
 * incremental command parser and a reply encoder. No I/O.
 *
 * Parser rules:
 * - Bytes are pushed as they arrive, in chunks of any size; next() returns one complete
 *   command (its arguments as bytes) at a time, or undefined until more bytes arrive, so
 *   pipelined commands come out in the order sent and the reader can stop pulling (and the
 *   socket stop reading) whenever it must.
 * - Bounded: a multibulk holds at most `maxArgs` arguments, a bulk at most `maxBulkBytes`,
 *   a command at most `maxCommandBytes` of bulks, an inline command or header line at most
 *   `maxInlineBytes`. What is held unparsed is at most one command plus one read chunk.
 * - Cheap whatever the chunking: a chunk is copied into the parse buffer only once it can
 *   complete what is awaited (a line's end, a bulk's length), so a client trickling a
 *   large command byte by byte costs linear, not quadratic, time.
 * - Malformed input throws RespProtocolError; the parser is then unusable (the connection
 *   answers `-ERR Protocol error: …` and closes, as Redis does).
 */

export interface RespLimits {
  maxArgs: number;
  maxBulkBytes: number;
  maxCommandBytes: number;
  maxInlineBytes: number;
}

/** Redis's own inline and header line limit. */
export const DEFAULT_MAX_INLINE_BYTES = 64 * 1024;

export class RespProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RespProtocolError';
  }
}

const EMPTY = Buffer.alloc(0);
const CR = 13;
const LF = 10;
/** "*<count>" and "$<length>": a sign and at most 19 digits. */
const MAX_NUMBER_LINE = 21;

export class RespParser {
  /** Bytes not yet parsed; `pos` is the first. */
  private buf: Buffer = EMPTY;
  private pos = 0;
  /** Chunks pushed but not yet joined to `buf`. */
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** The multibulk being read, and how many of its arguments are still to come. */
  private args: Buffer[] | undefined;
  private argsLeft = 0;
  /** The length of the bulk whose header was read, or -1. */
  private bulkLength = -1;
  private commandBytes = 0;
  private failed: RespProtocolError | undefined;

  constructor(private readonly limits: RespLimits) {}

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
  }

  /** Bytes held, parsed or not, for a caller that wants to bound what it buffers. */
  get bufferedBytes(): number {
    return this.buf.length - this.pos + this.pendingBytes;
  }

  /** The next complete command, or undefined until more bytes are pushed. Throws RespProtocolError. */
  next(): Buffer[] | undefined {
    if (this.failed !== undefined) throw this.failed;
    try {
      return this.parse();
    } catch (err) {
      if (err instanceof RespProtocolError) this.failed = err;
      throw err;
    }
  }

  private parse(): Buffer[] | undefined {
    for (;;) {
      if (this.args === undefined) {
        if (!this.fill(1)) return undefined;
        if (this.buf[this.pos] !== 0x2a /* '*' */) {
          const line = this.line(this.limits.maxInlineBytes, 'too big inline request');
          if (line === undefined) return undefined;
          const args = splitInline(line);
          if (args.length > this.limits.maxArgs) throw new RespProtocolError('too many arguments in inline request');
          if (args.length > 0) return args;
          continue;
        }
        const header = this.line(MAX_NUMBER_LINE, 'invalid multibulk length');
        if (header === undefined) return undefined;
        const count = parseNumber(header, 1);
        if (count === undefined || count > this.limits.maxArgs) throw new RespProtocolError('invalid multibulk length');
        if (count <= 0) continue; // "*0" and "*-1" are empty: nothing to run
        this.args = [];
        this.argsLeft = count;
        this.commandBytes = 0;
      }
      while (this.argsLeft > 0) {
        if (this.bulkLength < 0) {
          if (!this.fill(1)) return undefined;
          if (this.buf[this.pos] !== 0x24 /* '$' */) {
            throw new RespProtocolError(`expected '$', got '${printable(this.buf[this.pos]!)}'`);
          }
          const header = this.line(MAX_NUMBER_LINE, 'invalid bulk length');
          if (header === undefined) return undefined;
          const length = parseNumber(header, 1);
          if (length === undefined || length < 0 || length > this.limits.maxBulkBytes) throw new RespProtocolError('invalid bulk length');
          this.commandBytes += length;
          if (this.commandBytes > this.limits.maxCommandBytes) throw new RespProtocolError('command too large');
          this.bulkLength = length;
        }
        if (!this.fill(this.bulkLength + 2)) return undefined;
        const end = this.pos + this.bulkLength;
        if (this.buf[end] !== CR || this.buf[end + 1] !== LF) throw new RespProtocolError('bulk not followed by CRLF');
        this.args!.push(this.buf.subarray(this.pos, end));
        this.pos = end + 2;
        this.bulkLength = -1;
        this.argsLeft--;
      }
      const args = this.args!;
      this.args = undefined;
      return args;
    }
  }

  /** Whether `n` bytes are ready at `pos`; joins pending chunks only once they suffice. */
  private fill(n: number): boolean {
    const have = this.buf.length - this.pos;
    if (have >= n) return true;
    if (have + this.pendingBytes < n) return false;
    this.join();
    return true;
  }

  private join(): void {
    const rest = this.buf.subarray(this.pos);
    this.buf = rest.length === 0 && this.pending.length === 1 ? this.pending[0]! : Buffer.concat([rest, ...this.pending]);
    this.pos = 0;
    this.pending = [];
    this.pendingBytes = 0;
  }

  /**
   * The line at `pos` without its end ("\r\n", or "\n" alone as Redis accepts inline),
   * consumed; undefined until its end arrives. A line longer than `max` is an error.
   */
  private line(max: number, tooLong: string): Buffer | undefined {
    let end = this.buf.indexOf(LF, this.pos);
    if (end < 0 && this.pending.length > 0) {
      // Join only when a pending chunk holds the line's end (or the line is too long anyway).
      const ends = this.pending.some((chunk) => chunk.includes(LF));
      if (!ends && this.buf.length - this.pos + this.pendingBytes <= max + 1) return undefined;
      this.join();
      end = this.buf.indexOf(LF, this.pos);
    }
    if (end < 0) {
      if (this.buf.length - this.pos > max + 1) throw new RespProtocolError(tooLong);
      return undefined;
    }
    const stop = end > this.pos && this.buf[end - 1] === CR ? end - 1 : end;
    if (stop - this.pos > max) throw new RespProtocolError(tooLong);
    const line = this.buf.subarray(this.pos, stop);
    this.pos = end + 1;
    return line;
  }
}

/** An integer in `line` from `from` on ("-1", "42"), or undefined if it is not one. */
function parseNumber(line: Buffer, from: number): number | undefined {
  if (line.length <= from || line.length - from > 19) return undefined;
  let i = from;
  let negative = false;
  if (line[i] === 0x2d /* '-' */) {
    negative = true;
    i++;
    if (i === line.length) return undefined;
  }
  let n = 0;
  for (; i < line.length; i++) {
    const d = line[i]! - 0x30;
    if (d < 0 || d > 9) return undefined;
    n = n * 10 + d;
  }
  return negative ? -n : n;
}

/** Arguments of an inline command: separated by spaces or tabs (no quoting). */
function splitInline(line: Buffer): Buffer[] {
  const args: Buffer[] = [];
  let start = -1;
  for (let i = 0; i <= line.length; i++) {
    const c = i < line.length ? line[i]! : 0x20;
    const space = c === 0x20 || c === 0x09 || c === CR;
    if (space && start >= 0) {
      args.push(line.subarray(start, i));
      start = -1;
    } else if (!space && start < 0) {
      start = i;
    }
  }
  return args;
}

function printable(byte: number): string {
  return byte >= 0x20 && byte < 0x7f ? String.fromCharCode(byte) : `\\x${byte.toString(16).padStart(2, '0')}`;
}

// --- Replies -----------------------------------------------------------------------

/** A reply, encoded per the connection's protocol version (RESP3 has maps and a null). */
export type Reply =
  | { kind: 'simple'; text: string }
  | { kind: 'error'; text: string }
  | { kind: 'integer'; value: number }
  | { kind: 'bulk'; value: Buffer | string }
  | { kind: 'null' }
  | { kind: 'array'; items: Reply[] }
  | { kind: 'map'; entries: Array<[Reply, Reply]> };

export const OK: Reply = { kind: 'simple', text: 'OK' };
export const NULL: Reply = { kind: 'null' };
export const simple = (text: string): Reply => ({ kind: 'simple', text });
export const integer = (value: number): Reply => ({ kind: 'integer', value });
export const bulk = (value: Buffer | string): Reply => ({ kind: 'bulk', value });
export const array = (items: Reply[]): Reply => ({ kind: 'array', items });
export const map = (entries: Array<[Reply, Reply]>): Reply => ({ kind: 'map', entries });
/** An error reply; `text` starts with its code (ERR, WRONGTYPE…). Line breaks become spaces. */
export const error = (text: string): Reply => ({ kind: 'error', text: text.replace(/[\r\n]+/g, ' ') });

export type ProtocolVersion = 2 | 3;

/** Appends `reply`'s encoding to `out` (strings as latin1-safe ASCII or UTF-8, values as bytes). */
export function encodeReply(reply: Reply, version: ProtocolVersion, out: Array<Buffer | string>): void {
  switch (reply.kind) {
    case 'simple':
      out.push(`+${reply.text}\r\n`);
      return;
    case 'error':
      out.push(`-${reply.text}\r\n`);
      return;
    case 'integer':
      out.push(`:${reply.value}\r\n`);
      return;
    case 'bulk': {
      const value = reply.value;
      if (typeof value === 'string') {
        out.push(`$${Buffer.byteLength(value)}\r\n${value}\r\n`);
      } else {
        out.push(`$${value.length}\r\n`, value, '\r\n');
      }
      return;
    }
    case 'null':
      out.push(version === 3 ? '_\r\n' : '$-1\r\n');
      return;
    case 'array':
      out.push(`*${reply.items.length}\r\n`);
      for (const item of reply.items) encodeReply(item, version, out);
      return;
    case 'map':
      out.push(version === 3 ? `%${reply.entries.length}\r\n` : `*${reply.entries.length * 2}\r\n`);
      for (const [key, value] of reply.entries) {
        encodeReply(key, version, out);
        encodeReply(value, version, out);
      }
      return;
  }
}

/** `pieces` as one buffer (strings in UTF-8). */
export function joinPieces(pieces: ReadonlyArray<Buffer | string>): Buffer {
  return Buffer.concat(pieces.map((p) => (typeof p === 'string' ? Buffer.from(p) : p)));
}
