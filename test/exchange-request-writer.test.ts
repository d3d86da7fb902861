import { ExchangeRequest } from '../src/gen/baton/v1/session';
import { restampDeadline, unframed, unframedLength, writeFramedRequest } from '../src/client/exchange-request-writer';
import { encodeToBuffer, messageBuffer } from '../src/wire/proto-writer';
import { SeededRandom } from '../src/store/random';
import { op, uint32, uint64, type Op } from './support/exchange-requests';

const generated = (request: ExchangeRequest): Buffer => encodeToBuffer((w) => ExchangeRequest.encode(request, w));

describe('the client ExchangeRequest writer', () => {
  it('writes the bytes the generated encoder writes, for every operation and field shape (seeded)', () => {
    const random = new SeededRandom(0x5eed_e7c1);
    for (let i = 0; i < 2000; i++) {
      const requestId = uint64(random);
      const one = op(random);
      const deadlineMs = uint32(random);
      const framed = writeFramedRequest(requestId, one, deadlineMs);
      const expected = generated({ requestId, op: one, deadlineMs, batch: [] });
      expect(unframed(framed).equals(expected)).toBe(true);
      expect(unframedLength(framed)).toBe(expected.length);
    }
  });

  it('cuts message buffers from shared chunks that never overlap while they are held (seeded)', () => {
    const random = new SeededRandom(11);
    const held = Array.from({ length: 300 }, (_, i) => {
      const buffer = messageBuffer(random.below(20_000));
      buffer.fill(i & 0xff);
      return buffer;
    });
    expect(held.every((buffer, i) => buffer.equals(Buffer.alloc(buffer.length, i & 0xff)))).toBe(true);
    // Small ones share chunks (that is the point), large ones have their own memory.
    const small = held.filter((b) => b.length <= 16 * 1024);
    expect(new Set(small.map((b) => b.buffer)).size).toBeLessThan(small.length / 2);
    for (const large of held.filter((b) => b.length > 16 * 1024)) expect(held.filter((b) => b.buffer === large.buffer).length).toBe(1);
  });

  it('makes frames whose concatenation is the batched request', () => {
    const random = new SeededRandom(7);
    const ops = Array.from({ length: 40 }, (_, i) => ({ requestId: BigInt(i + 1), op: op(random), deadlineMs: i % 3 === 0 ? 0 : 250 * i, batch: [] }));
    const batch = Buffer.concat(ops.map((r) => writeFramedRequest(r.requestId, r.op, r.deadlineMs)));
    expect(batch.equals(generated({ requestId: 0n, op: undefined, deadlineMs: 0, batch: ops }))).toBe(true);
    const decoded = ExchangeRequest.decode(batch);
    expect(decoded.batch.map((r) => r.requestId)).toEqual(ops.map((r) => r.requestId));
    expect(decoded.batch.map((r) => r.op?.$case)).toEqual(ops.map((r) => r.op.$case));
    expect(decoded.batch.map((r) => r.deadlineMs)).toEqual(ops.map((r) => r.deadlineMs));
  });

  it('restamps a frame with the time its call has left: the frame written with that deadline (seeded)', () => {
    const random = new SeededRandom(11);
    for (let i = 0; i < 500; i++) {
      const requestId = uint64(random);
      const one = op(random);
      const deadlineMs = [1, 127, 128, 5000, 16_384, 2 ** 31 - 1][i % 6]!;
      const remainingMs = [0.2, 126.5, 128, 4000, 16_383, -5][Math.floor(random.next() * 6)]!;
      const restamped = restampDeadline(writeFramedRequest(requestId, one, deadlineMs), deadlineMs, remainingMs);
      expect(restamped.equals(writeFramedRequest(requestId, one, Math.max(1, Math.ceil(remainingMs))))).toBe(true);
    }
  });

  it('carries a deadline in whole milliseconds, rounded up; none (0) is left out', () => {
    const get: Op = { $case: 'get', get: { sessionId: 's', parts: [], resume: true } };
    expect(ExchangeRequest.decode(unframed(writeFramedRequest(1n, get, 2.2))).deadlineMs).toBe(3);
    expect(unframed(writeFramedRequest(1n, get, 0)).equals(generated({ requestId: 1n, op: get, deadlineMs: 0, batch: [] }))).toBe(true);
    expect(unframed(writeFramedRequest(1n, get)).length).toBe(unframed(writeFramedRequest(1n, get, 1)).length - 2);
  });

  it('frames a request whose length needs a multi-byte varint, and a tiny one', () => {
    const big: Op = { $case: 'put', put: { sessionId: 's', parts: [{ name: 'p', value: Buffer.alloc(300_000, 1) }], ttlSeconds: 0, minReplicas: 0 } };
    const framed = writeFramedRequest(1n, big);
    expect(framed[0]).toBe(0x7a);
    expect(unframed(framed).equals(generated({ requestId: 1n, op: big, deadlineMs: 0, batch: [] }))).toBe(true);
    const tiny = writeFramedRequest(0n, { $case: 'touch', touch: { sessionId: '', ttlSeconds: 0 } });
    expect([...tiny]).toEqual([0x7a, 2, 0x2a, 0]);
  });

  it('refuses what the wire cannot carry', () => {
    const put = (ifVersion: bigint, ttlSeconds = 0): Op => ({ $case: 'put', put: { sessionId: 's', parts: [{ name: 'p', value: Buffer.from('v'), ifVersion }], ttlSeconds, minReplicas: 0 } });
    expect(() => writeFramedRequest(1n, put(-1n))).toThrow(/uint64/);
    expect(() => writeFramedRequest(1n, put(1n << 64n))).toThrow(/uint64/);
    expect(() => writeFramedRequest(-1n, put(1n))).toThrow(/uint64/);
    expect(() => writeFramedRequest(1n, put(1n, 2 ** 32))).toThrow(/uint32/);
    expect(() => writeFramedRequest(1n, put(1n, 1.5))).toThrow(/uint32/);
    expect(() => writeFramedRequest(1n, { $case: 'get', get: { sessionId: 5 as unknown as string, parts: [], resume: false } })).toThrow(/string/);
    const notBytes = { $case: 'put', put: { sessionId: 's', parts: [{ name: 'p', value: 'v' as unknown as Buffer }], ttlSeconds: 0, minReplicas: 0 } } as Op;
    expect(() => writeFramedRequest(1n, notBytes)).toThrow(/bytes/);
  });
});
