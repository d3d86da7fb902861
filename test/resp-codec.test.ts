/**
 * The RESP parser and encoder: valid streams cut at seeded random places parse to the same
 * commands in order; limits and malformed input end in RespProtocolError, never a crash
 * or unbounded buffering; replies encode per protocol version.
 */
import { SeededRandom } from '../src/store/random';
import {
  array,
  bulk,
  encodeReply,
  error,
  integer,
  joinPieces,
  map,
  NULL,
  OK,
  RespParser,
  RespProtocolError,
  type RespLimits,
  type Reply,
} from '../src/resp/resp-codec';

const LIMITS: RespLimits = { maxArgs: 64, maxBulkBytes: 4096, maxCommandBytes: 16 * 1024, maxInlineBytes: 1024 };

function multibulk(args: Buffer[]): Buffer {
  return Buffer.concat([Buffer.from(`*${args.length}\r\n`), ...args.flatMap((a) => [Buffer.from(`$${a.length}\r\n`), a, Buffer.from('\r\n')])]);
}

function randomCommand(random: SeededRandom): Buffer[] {
  const count = 1 + random.below(6);
  const args: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    const length = random.below(4) === 0 ? random.below(3000) : random.below(20);
    const arg = Buffer.alloc(length);
    for (let j = 0; j < length; j++) arg[j] = random.below(256);
    args.push(arg);
  }
  return args;
}

/** Feeds `stream` in random pieces (1 byte up to `maxPiece`), pulling commands after each. */
function parseInPieces(stream: Buffer, random: SeededRandom, maxPiece: number, limits = LIMITS): Buffer[][] {
  const parser = new RespParser(limits);
  const out: Buffer[][] = [];
  for (let at = 0; at < stream.length; ) {
    const piece = 1 + random.below(maxPiece);
    parser.push(stream.subarray(at, at + piece));
    at += piece;
    for (let command = parser.next(); command !== undefined; command = parser.next()) out.push(command);
  }
  return out;
}

function encode(reply: Reply, version: 2 | 3): string {
  const out: Array<Buffer | string> = [];
  encodeReply(reply, version, out);
  return joinPieces(out).toString('latin1');
}

describe('RespParser', () => {
  it('parses pipelined multibulk commands split at random places, in order, for many seeds', () => {
    for (let seed = 1; seed <= 200; seed++) {
      const random = new SeededRandom(seed);
      const commands = Array.from({ length: 1 + random.below(20) }, () => randomCommand(random));
      const stream = Buffer.concat(commands.map(multibulk));
      const parsed = parseInPieces(stream, random, seed % 2 === 0 ? 7 : 2000);
      expect(parsed.map((c) => c.map((a) => a.toString('hex')))).toEqual(commands.map((c) => c.map((a) => a.toString('hex'))));
    }
  });

  it('parses inline commands, with \\r\\n or \\n alone, and skips empty lines and empty multibulks', () => {
    const random = new SeededRandom(7);
    const stream = Buffer.from('PING\r\n\r\nset  a\tb\n*0\r\n*-1\r\nGET a\r\n*1\r\n$4\r\nPING\r\n');
    for (let i = 0; i < 50; i++) {
      expect(parseInPieces(stream, random, 5).map((c) => c.map(String))).toEqual([['PING'], ['set', 'a', 'b'], ['GET', 'a'], ['PING']]);
    }
  });

  it('returns nothing until a command is complete, and holds only what was pushed', () => {
    const parser = new RespParser(LIMITS);
    parser.push(Buffer.from('*2\r\n$3\r\nGET\r\n$5\r\nab'));
    expect(parser.next()).toBeUndefined();
    parser.push(Buffer.from('cde\r'));
    expect(parser.next()).toBeUndefined();
    parser.push(Buffer.from('\n'));
    expect(parser.next()!.map(String)).toEqual(['GET', 'abcde']);
    expect(parser.next()).toBeUndefined();
    expect(parser.bufferedBytes).toBe(0);
  });

  it('does not join a trickled bulk before it is complete (linear cost)', () => {
    const parser = new RespParser({ ...LIMITS, maxBulkBytes: 1 << 20, maxCommandBytes: 1 << 21 });
    const value = Buffer.alloc(100_000, 0x61);
    const stream = multibulk([Buffer.from('SET'), Buffer.from('k'), value]);
    const concat = jest.spyOn(Buffer, 'concat');
    try {
      for (let at = 0; at < stream.length; at += 10) {
        parser.push(stream.subarray(at, at + 10));
        if (at + 10 < stream.length) expect(parser.next()).toBeUndefined();
      }
      const command = parser.next()!;
      expect(command[2]!.equals(value)).toBe(true);
      // One join per header line and one for the bulk: not one per pushed piece.
      expect(concat.mock.calls.length).toBeLessThan(20);
    } finally {
      concat.mockRestore();
    }
  });

  const refused: Array<[string, string, Partial<RespLimits>]> = [
    ['a bulk over maxBulkBytes', '*2\r\n$3\r\nGET\r\n$4097\r\n', {}],
    ['a negative bulk length', '*1\r\n$-1\r\n', {}],
    ['a multibulk over maxArgs', '*65\r\n', {}],
    ['a non-numeric multibulk length', '*x\r\n', {}],
    ['a non-numeric bulk length', '*1\r\n$1x\r\n', {}],
    ['a bulk length with too many digits', '*1\r\n$99999999999999999999999\r\n', {}],
    ['something other than a bulk inside a multibulk', '*1\r\n+OK\r\n', {}],
    ['a bulk not ended by CRLF', '*1\r\n$3\r\nGETxx', {}],
    ['a command over maxCommandBytes', '*3\r\n$3\r\nSET\r\n$3000\r\n' + 'a'.repeat(3000) + '\r\n$3000\r\n', { maxCommandBytes: 5000 }],
    ['an inline command over maxInlineBytes without its end', 'GET ' + 'a'.repeat(2000), {}],
    ['an inline command over maxInlineBytes', 'GET ' + 'a'.repeat(2000) + '\r\n', {}],
  ];
  it.each(refused)('refuses %s with RespProtocolError, and stays failed', (_name, input, limits) => {
    const parser = new RespParser({ ...LIMITS, ...limits });
    parser.push(Buffer.from(input, 'latin1'));
    expect(() => parser.next()).toThrow(RespProtocolError);
    expect(() => parser.next()).toThrow(RespProtocolError);
  });

  it('answers the commands before a malformed one, then fails', () => {
    const parser = new RespParser(LIMITS);
    parser.push(Buffer.from('PING\r\n*1\r\n$4\r\nPING\r\n*1\r\n:1\r\n'));
    expect(parser.next()!.map(String)).toEqual(['PING']);
    expect(parser.next()!.map(String)).toEqual(['PING']);
    expect(() => parser.next()).toThrow("expected '$', got ':'");
  });

  it('never throws anything but RespProtocolError on garbage, and never holds more than one command plus the last piece', () => {
    for (let seed = 1; seed <= 300; seed++) {
      const random = new SeededRandom(seed * 7919);
      const parser = new RespParser(LIMITS);
      const alphabet = Buffer.from('*$\r\n0123456789-+:PINGSETabc \t');
      // Valid commands with bytes flipped, or noise from a RESP-heavy alphabet, or any bytes.
      let stream: Buffer;
      if (seed % 3 === 0) {
        stream = Buffer.concat(Array.from({ length: 5 }, () => multibulk(randomCommand(random))));
        for (let flips = 1 + random.below(4); flips > 0; flips--) stream[random.below(stream.length)] = random.below(256);
      } else {
        stream = Buffer.alloc(1 + random.below(5000));
        for (let i = 0; i < stream.length; i++) stream[i] = seed % 3 === 1 ? alphabet[random.below(alphabet.length)]! : random.below(256);
      }
      try {
        for (let at = 0; at < stream.length; ) {
          const piece = 1 + random.below(300);
          parser.push(stream.subarray(at, at + piece));
          at += piece;
          while (parser.next() !== undefined);
          expect(parser.bufferedBytes).toBeLessThanOrEqual(LIMITS.maxCommandBytes + 2 * LIMITS.maxArgs * 24 + LIMITS.maxInlineBytes + 300);
        }
      } catch (err) {
        expect(err).toBeInstanceOf(RespProtocolError);
      }
    }
  });
});

describe('encodeReply', () => {
  it('encodes every reply kind in RESP2', () => {
    expect(encode(OK, 2)).toBe('+OK\r\n');
    expect(encode(error('ERR bad\r\nthing'), 2)).toBe('-ERR bad thing\r\n');
    expect(encode(integer(-3), 2)).toBe(':-3\r\n');
    expect(encode(bulk('héllo'), 2)).toBe('$6\r\nh\xc3\xa9llo\r\n');
    expect(encode(bulk(Buffer.from([0, 13, 10])), 2)).toBe('$3\r\n\x00\r\n\r\n');
    expect(encode(NULL, 2)).toBe('$-1\r\n');
    expect(encode(array([integer(1), NULL]), 2)).toBe('*2\r\n:1\r\n$-1\r\n');
    expect(encode(map([[bulk('a'), integer(1)]]), 2)).toBe('*2\r\n$1\r\na\r\n:1\r\n');
  });

  it('encodes nulls and maps as RESP3 types in RESP3', () => {
    expect(encode(NULL, 3)).toBe('_\r\n');
    expect(encode(map([[bulk('a'), integer(1)]]), 3)).toBe('%1\r\n$1\r\na\r\n:1\r\n');
  });
});
