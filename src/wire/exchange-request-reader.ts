/**
 * The sidecar's reader of ExchangeRequest messages (and of unary PutRequests), by hand:
 * every message a client sends on an Exchange stream goes through it. The generated decoder
 * allocated an empty default Buffer and a copy per part value, and a reader per nested
 * message: 3.0-4.5 µs for a Put of four 1 KiB parts against 0.7-0.9 here. Without those
 * copies the writer of bench:replication's anchors spent ~2 µs (8-10%) less CPU per delta,
 * more than the decoding time saved: the copies were also memory its collector had to sweep.
 * This reads the fields in place and hands part values on as views of the message: the
 * store copies what it keeps into its slabs, and the message's buffer is grpc-js's, made for
 * this message alone, so a view holds no more than the message does.
 *
 * It answers what the generated decoder answers for every message it reads
 * (test/exchange-request-reader.test.ts compares them on seeded random and damaged
 * messages). What it does not read answers undefined, and the caller decodes that message
 * with the generated decoder, which answers it or throws as it always did: a batch inside a
 * batch, groups, a zero tag, a string that is not UTF-8, a length past its message.
 */
import type { DeleteRequest, ExchangeRequest, GetRequest, PartWrite, PutRequest, TouchRequest } from '../gen/baton/v1/session';
import { WireCursor } from './wire-cursor';

/** Field tags (number << 3 | wire type) as the generated decoder accepts them. */
const EXCHANGE = { requestId: 8, put: 18, get: 26, delete: 34, touch: 42, deadlineMs: 48, batch: 122 } as const;
const PUT = { sessionId: 10, parts: 18, ttlSeconds: 24, minReplicas: 32 } as const;
const PART = { name: 10, value: 18, ifVersion: 24 } as const;
const GET = { sessionId: 10, parts: 18, resume: 24 } as const;
const DELETE = { sessionId: 10, parts: 18 } as const;
const TOUCH = { sessionId: 10, ttlSeconds: 16 } as const;

/** A part written without a value: the generated decoder's default, one shared empty Buffer. */
const NO_VALUE = Buffer.alloc(0);

/** The ExchangeRequest in `bytes`, or undefined where the generated decoder must read it. */
export function readExchangeRequest(bytes: Buffer): ExchangeRequest | undefined {
  return readRequest(bytes, 0, bytes.length, true);
}

/** The PutRequest in `bytes` (a unary Put), or undefined where the generated decoder must read it. */
export function readPutRequest(bytes: Buffer): PutRequest | undefined {
  return readPut(bytes, 0, bytes.length);
}

function readRequest(buf: Buffer, start: number, end: number, outermost: boolean): ExchangeRequest | undefined {
  const r = new WireCursor(buf, start, end);
  const out: ExchangeRequest = { requestId: 0n, op: undefined, deadlineMs: 0, batch: [] };
  while (r.pos < r.end) {
    const tag = r.varint32();
    if (tag === undefined) return undefined;
    switch (tag) {
      case EXCHANGE.requestId: {
        const id = r.uint64();
        if (id === undefined) return undefined;
        out.requestId = typeof id === 'bigint' ? id : BigInt(id);
        break;
      }
      case EXCHANGE.deadlineMs: {
        const ms = r.uint32();
        if (ms === undefined) return undefined;
        out.deadlineMs = ms;
        break;
      }
      case EXCHANGE.put: {
        const put = r.lengthDelimited() ? readPut(buf, r.fieldStart, r.fieldEnd) : undefined;
        if (put === undefined) return undefined;
        out.op = { $case: 'put', put };
        break;
      }
      case EXCHANGE.get: {
        const get = r.lengthDelimited() ? readGet(buf, r.fieldStart, r.fieldEnd) : undefined;
        if (get === undefined) return undefined;
        out.op = { $case: 'get', get };
        break;
      }
      case EXCHANGE.delete: {
        const request = r.lengthDelimited() ? readDelete(buf, r.fieldStart, r.fieldEnd) : undefined;
        if (request === undefined) return undefined;
        out.op = { $case: 'delete', delete: request };
        break;
      }
      case EXCHANGE.touch: {
        const touch = r.lengthDelimited() ? readTouch(buf, r.fieldStart, r.fieldEnd) : undefined;
        if (touch === undefined) return undefined;
        out.op = { $case: 'touch', touch };
        break;
      }
      case EXCHANGE.batch: {
        // Clients batch one level deep; deeper nesting is the generated decoder's.
        const one = outermost && r.lengthDelimited() ? readRequest(buf, r.fieldStart, r.fieldEnd, false) : undefined;
        if (one === undefined) return undefined;
        out.batch.push(one);
        break;
      }
      default:
        if (!r.skip(tag)) return undefined;
    }
  }
  return out;
}

function readPut(buf: Buffer, start: number, end: number): PutRequest | undefined {
  const r = new WireCursor(buf, start, end);
  const out: PutRequest = { sessionId: '', parts: [], ttlSeconds: 0, minReplicas: 0 };
  while (r.pos < r.end) {
    const tag = r.varint32();
    if (tag === undefined) return undefined;
    switch (tag) {
      case PUT.sessionId: {
        const text = r.string();
        if (text === undefined) return undefined;
        out.sessionId = text;
        break;
      }
      case PUT.parts: {
        const part = r.lengthDelimited() ? readPart(buf, r.fieldStart, r.fieldEnd) : undefined;
        if (part === undefined) return undefined;
        out.parts.push(part);
        break;
      }
      case PUT.ttlSeconds:
      case PUT.minReplicas: {
        const n = r.uint32();
        if (n === undefined) return undefined;
        if (tag === PUT.ttlSeconds) out.ttlSeconds = n;
        else out.minReplicas = n;
        break;
      }
      default:
        if (!r.skip(tag)) return undefined;
    }
  }
  return out;
}

function readPart(buf: Buffer, start: number, end: number): PartWrite | undefined {
  const r = new WireCursor(buf, start, end);
  const out: PartWrite = { name: '', value: NO_VALUE, ifVersion: undefined };
  while (r.pos < r.end) {
    const tag = r.varint32();
    if (tag === undefined) return undefined;
    switch (tag) {
      case PART.name: {
        const text = r.string();
        if (text === undefined) return undefined;
        out.name = text;
        break;
      }
      case PART.value:
        if (!r.lengthDelimited()) return undefined;
        out.value = buf.subarray(r.fieldStart, r.fieldEnd);
        break;
      case PART.ifVersion: {
        const version = r.uint64();
        if (version === undefined) return undefined;
        out.ifVersion = typeof version === 'bigint' ? version : BigInt(version);
        break;
      }
      default:
        if (!r.skip(tag)) return undefined;
    }
  }
  return out;
}

function readGet(buf: Buffer, start: number, end: number): GetRequest | undefined {
  const r = new WireCursor(buf, start, end);
  const out: GetRequest = { sessionId: '', parts: [], resume: false };
  while (r.pos < r.end) {
    const tag = r.varint32();
    if (tag === undefined) return undefined;
    if (tag === GET.sessionId || tag === GET.parts) {
      const text = r.string();
      if (text === undefined) return undefined;
      if (tag === GET.sessionId) out.sessionId = text;
      else out.parts.push(text);
    } else if (tag === GET.resume) {
      const resume = r.bool();
      if (resume === undefined) return undefined;
      out.resume = resume;
    } else if (!r.skip(tag)) return undefined;
  }
  return out;
}

function readDelete(buf: Buffer, start: number, end: number): DeleteRequest | undefined {
  const r = new WireCursor(buf, start, end);
  const out: DeleteRequest = { sessionId: '', parts: [] };
  while (r.pos < r.end) {
    const tag = r.varint32();
    if (tag === undefined) return undefined;
    if (tag === DELETE.sessionId || tag === DELETE.parts) {
      const text = r.string();
      if (text === undefined) return undefined;
      if (tag === DELETE.sessionId) out.sessionId = text;
      else out.parts.push(text);
    } else if (!r.skip(tag)) return undefined;
  }
  return out;
}

function readTouch(buf: Buffer, start: number, end: number): TouchRequest | undefined {
  const r = new WireCursor(buf, start, end);
  const out: TouchRequest = { sessionId: '', ttlSeconds: 0 };
  while (r.pos < r.end) {
    const tag = r.varint32();
    if (tag === undefined) return undefined;
    if (tag === TOUCH.sessionId) {
      const text = r.string();
      if (text === undefined) return undefined;
      out.sessionId = text;
    } else if (tag === TOUCH.ttlSeconds) {
      const ttl = r.uint32();
      if (ttl === undefined) return undefined;
      out.ttlSeconds = ttl;
    } else if (!r.skip(tag)) return undefined;
  }
  return out;
}
