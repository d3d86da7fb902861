/**
 * The sidecar's ExchangeRequest reader against the generated decoder: the same request for
 * every message it reads, part values as views of the message, and undefined (the
 * generated decoder's turn) for what it leaves alone.
 */
import { ExchangeRequest, PutRequest } from '../src/gen/baton/v1/session';
import { writeFramedRequest } from '../src/client/exchange-request-writer';
import { readExchangeRequest, readPutRequest } from '../src/wire/exchange-request-reader';
import { encodeToBuffer } from '../src/wire/proto-writer';
import { SeededRandom } from '../src/store/random';
import { varint } from './support/fuzz-inputs';
import { op, uint32, uint64 } from './support/exchange-requests';
import '../src/wire/strict-utf8';

const generated = (request: ExchangeRequest): Buffer => encodeToBuffer((w) => ExchangeRequest.encode(request, w));

function randomRequest(random: SeededRandom): ExchangeRequest {
  const one = (): ExchangeRequest => ({ requestId: uint64(random), op: random.below(10) === 0 ? undefined : op(random), deadlineMs: uint32(random), batch: [] });
  if (random.below(2) === 0) return one();
  return { requestId: 0n, op: undefined, deadlineMs: 0, batch: Array.from({ length: random.below(12) }, one) };
}

/** The request's bytes: from the generated encoder, or (a batch of operations) as BatonClient writes them. */
function encoded(request: ExchangeRequest, random: SeededRandom): Buffer {
  const asClient = request.batch.length > 0 && request.batch.every((r) => r.op !== undefined) && random.below(2) === 0;
  if (!asClient) return generated(request);
  return Buffer.concat(request.batch.map((r) => writeFramedRequest(r.requestId, r.op!, r.deadlineMs)));
}

/** Every part value the request holds. */
function values(request: ExchangeRequest): Buffer[] {
  const own = request.op?.$case === 'put' ? request.op.put.parts.map((p) => p.value) : [];
  return [...own, ...request.batch.flatMap(values)];
}

/** Unknown fields (numbers 20-30, every wire type the reader skips), appended to a message. */
function unknownFields(random: SeededRandom): Buffer {
  const extra: number[] = [];
  for (let i = 0; i < 1 + random.below(3); i++) {
    const wireType = [0, 1, 2, 5][random.below(4)]!;
    extra.push(...varint(((20 + random.below(10)) << 3) | wireType));
    if (wireType === 0) extra.push(0xff, 0x01);
    else if (wireType === 1) extra.push(1, 2, 3, 4, 5, 6, 7, 8);
    else if (wireType === 2) extra.push(2, 9, 9);
    else extra.push(1, 2, 3, 4);
  }
  return Buffer.from(extra);
}

/** What the generated decoder makes of bytes: the request (plain), or the error's name. */
function decodedOrError(bytes: Buffer): unknown {
  try {
    return plain(ExchangeRequest.decode(bytes));
  } catch (err) {
    return err instanceof Error ? err.name : 'thrown';
  }
}

/** The request with its part values as hex: Jest compares long Buffers byte by byte, slowly. */
function plain(request: ExchangeRequest | undefined): unknown {
  if (request === undefined) return undefined;
  const op = request.op?.$case === 'put' ? { ...request.op, put: plainPut(request.op.put) } : request.op;
  return { ...request, op, batch: request.batch.map(plain) };
}

function plainPut(put: PutRequest): unknown {
  return { ...put, parts: put.parts.map((p) => ({ ...p, value: Buffer.from(p.value).toString('hex') })) };
}

describe('the sidecar ExchangeRequest reader', () => {
  it('reads every request the generated decoder reads, the same, also as BatonClient writes batches (seeded)', () => {
    const random = new SeededRandom(0xe8c4);
    let batched = 0;
    for (let i = 0; i < 1000; i++) {
      const request = randomRequest(random);
      const bytes = encoded(request, random);
      const read = readExchangeRequest(bytes);
      expect(plain(read)).toEqual(plain(ExchangeRequest.decode(bytes)));
      if (request.batch.length > 0) batched++;
      // Values are the message's own bytes, not copies.
      for (const value of values(read!)) if (value.length > 0) expect(value.buffer).toBe(bytes.buffer);
    }
    expect(batched).toBeGreaterThan(400);
  });

  it('skips unknown fields at every level, as the generated decoder does', () => {
    const random = new SeededRandom(31);
    for (let i = 0; i < 500; i++) {
      const sessionId = `s-${i}`;
      const part = Buffer.concat([Buffer.from([0x0a, 1, 0x70, 0x12, 2, 7, 7]), unknownFields(random)]);
      const put = Buffer.concat([Buffer.from([0x0a, sessionId.length]), Buffer.from(sessionId), Buffer.from([0x12, part.length]), part, unknownFields(random)]);
      const element = Buffer.concat([Buffer.from([0x08, i & 0x7f, 0x12, put.length]), put, unknownFields(random)]);
      const message = Buffer.concat([Buffer.from([0x7a]), Buffer.from(varint(element.length)), element, unknownFields(random)]);
      const read = readExchangeRequest(message);
      expect(plain(read)).toEqual(plain(ExchangeRequest.decode(message)));
      expect(read!.batch[0]!.op).toEqual({ $case: 'put', put: { sessionId, parts: [{ name: 'p', value: Buffer.from([7, 7]), ifVersion: undefined }], ttlSeconds: 0, minReplicas: 0 } });
    }
  });

  it('leaves to the generated decoder a batch inside a batch, groups, a zero tag and text that is not UTF-8', () => {
    const put = { $case: 'put' as const, put: { sessionId: 's', parts: [], ttlSeconds: 0, minReplicas: 0 } };
    const nested = generated({ requestId: 0n, op: undefined, deadlineMs: 0, batch: [{ requestId: 1n, op: undefined, deadlineMs: 0, batch: [{ requestId: 2n, op: put, deadlineMs: 0, batch: [] }] }] });
    expect(readExchangeRequest(nested)).toBeUndefined();
    expect(ExchangeRequest.decode(nested).batch[0]!.batch[0]!.requestId).toBe(2n);
    // A group (wire type 3, then its end) and a zero tag: the generated decoder reads past or stops.
    expect(readExchangeRequest(Buffer.from([0x08, 5, 0xa3, 0x01, 0xa4, 0x01]))).toBeUndefined();
    expect(readExchangeRequest(Buffer.from([0x08, 5, 0x00, 0x30, 1]))).toBeUndefined();
    // A session id that is not UTF-8: the generated decoder refuses it (strict-utf8.ts).
    const invalid = Buffer.from([0x12, 4, 0x0a, 2, 0xc3, 0x28]);
    expect(readExchangeRequest(invalid)).toBeUndefined();
    expect(decodedOrError(invalid)).toBe('Utf8Error');
    // Valid multi-byte text is read here.
    const text = Buffer.from('nœud-😀');
    expect(readExchangeRequest(Buffer.from([0x2a, text.length + 2, 0x0a, text.length, ...text]))?.op).toEqual({ $case: 'touch', touch: { sessionId: 'nœud-😀', ttlSeconds: 0 } });
  });

  it('never throws on damaged messages, and whatever it reads the generated decoder reads the same (seeded)', () => {
    const random = new SeededRandom(47);
    let read = 0;
    let left = 0;
    for (let i = 0; i < 2000; i++) {
      const bytes = Buffer.from(encoded(randomRequest(random), random));
      if (bytes.length === 0) continue;
      switch (random.below(4)) {
        case 0:
          for (let k = 0; k <= random.below(4); k++) bytes[random.below(bytes.length)] = random.below(256);
          break;
        case 1: {
          const cut = bytes.subarray(0, random.below(bytes.length));
          expectSame(cut);
          continue;
        }
        case 2: {
          // An overlong varint (a tag or a length), or a huge declared length.
          const at = random.below(bytes.length);
          expectSame(Buffer.concat([bytes.subarray(0, at), Buffer.from(random.below(2) === 0 ? [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01] : [0x12, 0xff, 0xff, 0xff, 0x0f]), bytes.subarray(at)]));
          continue;
        }
        default:
          bytes[random.below(bytes.length)] = 0xc3;
      }
      expectSame(bytes);
    }
    function expectSame(bytes: Buffer): void {
      let mine: ExchangeRequest | undefined;
      expect(() => (mine = readExchangeRequest(bytes))).not.toThrow();
      if (mine === undefined) left++;
      else {
        read++;
        expect(plain(mine)).toEqual(decodedOrError(bytes));
      }
    }
    // Both paths are exercised.
    expect(read).toBeGreaterThan(300);
    expect(left).toBeGreaterThan(300);
  });
});

describe('the sidecar PutRequest reader (unary Put)', () => {
  it('reads what the generated decoder reads, values as views, and leaves text that is not UTF-8 to it (seeded)', () => {
    const random = new SeededRandom(61);
    let seen = 0;
    for (let i = 0; i < 500; i++) {
      const one = op(random);
      if (one.$case !== 'put') continue;
      seen++;
      const bytes = Buffer.from(PutRequest.encode(one.put).finish());
      const read = readPutRequest(bytes);
      expect(read && plainPut(read)).toEqual(plainPut(PutRequest.decode(bytes)));
      for (const part of read!.parts) if (part.value.length > 0) expect(part.value.buffer).toBe(bytes.buffer);
    }
    expect(seen).toBeGreaterThan(50);
    expect(readPutRequest(Buffer.from([0x0a, 2, 0xc3, 0x28]))).toBeUndefined();
  });
});
