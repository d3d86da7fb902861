/**
 * The one codec between a session change (`Change`) and its wire form (the generated
 * `Delta` of proto/baton/v1/wire.proto), and the Data datagram that carries deltas.
 *
 * Rules:
 * - `Change` is the only change type of the replication path: local writes are Changes,
 *   and a received delta decodes to a Change with its writer and epoch filled in.
 * - Deltas are encoded by the generated encoder, once per change: a delta fanned out to
 *   several channels is the same bytes on each.
 * - Data datagrams wrap those already encoded deltas: channel senders buffer, conflate,
 *   size and fragment deltas as bytes, which the generated Data encoder (taking Delta
 *   objects) cannot carry. bench/delta-codec.ts times both ways on the fan-out path.
 * - Data datagrams, and the deltas in them, are read by hand (readDataDatagram): what the
 *   generated decoder and readDelta would answer, without an object per delta field or a
 *   copy of each value. Every other datagram goes through the generated decoder.
 * - Field tags are read from the generated encoder at load time, never written as
 *   literals, so wire.proto stays the one source of numbers.
 * - Decoding never throws: a delta that cannot be read is `undefined` (the caller counts
 *   it as malformed).
 */
import { BinaryReader, type BinaryWriter } from '@bufbuild/protobuf/wire';
import { Data, Datagram, Delta, DeltaKind, Fragment } from '../gen/baton/v1/wire';
import { PADDING_TAG } from './datagram-codec';
import { WireCursor } from './wire-cursor';
import { bufferView, encodeWith, messageBuffer, putStringField, putVarint, putVarintField, delimitedFieldBytes, varintBytes, varintFieldBytes } from './proto-writer';

/**
 * One change to one session. Values are the bytes the client sent. A part change is its
 * writer's change at the session's epoch unless it names the part's own writer and epoch
 * (a repeat of state written earlier or elsewhere; decoded deltas always name both).
 */
export type Change =
  | { kind: 'put'; name: string; value: Uint8Array; version: number; writer?: string; epoch?: number }
  | { kind: 'delete_part'; name: string; version: number; writer?: string; epoch?: number }
  | { kind: 'delete_session'; version: number }
  | { kind: 'touch' }
  /** `parts`: every part name the claimed copy holds (decoded claims always name them). */
  | { kind: 'claim'; parts?: readonly string[] };

/** The session-level facts every delta carries from the session's owner. */
export interface SessionStamp {
  id: string;
  owner: string;
  epoch: number;
  /** Unix ms; the wire carries whole milliseconds. */
  expiresAt: number;
  ttlMs: number;
}

/** A delta read off the wire. */
export interface DecodedDelta {
  sessionId: string;
  /** The session's owner as the delta names it (its sender when it names none). */
  owner: string;
  epoch: number;
  expiresAt: number;
  ttlMs: number;
  /** The owner's clock when it made the change (0 = not given). */
  writtenAt: number;
  /** undefined: the delta's kind or fields make no valid change (malformed). */
  change: Change | undefined;
}

/** A Data packet's contents (see ChannelSender's DataPacket). */
export interface DataPacketFields {
  seq: number;
  /** Deltas already encoded by encodeDelta. */
  deltas: readonly Uint8Array[];
  fragment: { deltaId: number; index: number; count: number; chunk: Uint8Array } | undefined;
  retransmit: boolean;
}

const EMPTY = Buffer.alloc(0);

/**
 * Conflation key of a delta: a retransmission carries the latest delta of each key, so
 * one key must only hold changes the latest of which supersedes all earlier ones. Part
 * changes (put, delete_part) are ordered by the part's version: session id, NUL, part
 * name. Session-level changes are keyed by kind (SOH + kind): a touch must not stand in
 * for an earlier delete of the session, nor a delete for an earlier claim.
 */
export function deltaKey(sessionId: string, change: Change): string {
  return change.kind === 'put' || change.kind === 'delete_part' ? sessionId + '\u0000' + change.name : sessionId + '\u0001' + change.kind;
}

/** The wire form of a change made (or repeated) by `self` at `now`. */
export function toDelta(session: SessionStamp, change: Change, self: string, now: number): Delta {
  const delta: Delta = {
    sessionId: session.id,
    kind: DeltaKind.DELTA_KIND_UNSPECIFIED,
    partName: '',
    value: EMPTY,
    version: 0n,
    writerNodeId: '',
    // The store takes any `now`; the wire carries whole milliseconds.
    expiresAtUnixMs: BigInt(Math.floor(session.expiresAt)),
    ttlMs: session.ttlMs,
    ownerNodeId: session.owner,
    epoch: BigInt(session.epoch),
    writtenAtUnixMs: BigInt(Math.floor(now)),
    claimedParts: [],
  };
  switch (change.kind) {
    case 'put':
    case 'delete_part':
      delta.kind = change.kind === 'put' ? DeltaKind.DELTA_KIND_PUT_PART : DeltaKind.DELTA_KIND_DELETE_PART;
      delta.partName = change.name;
      if (change.kind === 'put') delta.value = change.value as Buffer;
      delta.version = BigInt(change.version);
      if (change.epoch !== undefined) delta.epoch = BigInt(change.epoch);
      // The sender is the writer unless named otherwise (saves the id on every delta).
      if (change.writer !== undefined && change.writer !== self) delta.writerNodeId = change.writer;
      break;
    case 'delete_session':
      delta.kind = DeltaKind.DELTA_KIND_DELETE_SESSION;
      delta.version = BigInt(change.version);
      break;
    case 'touch':
      delta.kind = DeltaKind.DELTA_KIND_TOUCH;
      break;
    case 'claim':
      delta.kind = DeltaKind.DELTA_KIND_CLAIM;
      if (change.parts !== undefined) delta.claimedParts = [...change.parts];
      break;
  }
  return delta;
}

/**
 * encodeDelta: the encoded Delta message of a change, the bytes the generated encoder
 * writes for toDelta's message (test/delta-codec.test.ts compares them). Written by hand
 * into a buffer of its exact size, cut from a shared chunk (messageBuffer: a delta lives
 * until its receivers acknowledge it): the generated encoder made an object, four BigInts
 * and a fresh ArrayBuffer per delta, the writer's hottest work after the system calls;
 * Node's own pool, 8 KiB, made a new ArrayBuffer every seven 1 KiB deltas. Claims, and
 * numbers that are not whole, safe and non-negative (a negative time, say), go through the
 * generated encoder.
 */
export function encodeDelta(session: SessionStamp, change: Change, self: string, now: number): Uint8Array {
  if (change.kind === 'claim') return encodeGenerated(session, change, self, now);
  const expiresAt = Math.floor(session.expiresAt);
  const writtenAt = Math.floor(now);
  const ttl = session.ttlMs;
  let kind: DeltaKind;
  let name = '';
  let value: Uint8Array | undefined;
  let version = 0;
  let writer = '';
  let epoch = session.epoch;
  switch (change.kind) {
    case 'put':
    case 'delete_part':
      kind = change.kind === 'put' ? DeltaKind.DELTA_KIND_PUT_PART : DeltaKind.DELTA_KIND_DELETE_PART;
      name = change.name;
      if (change.kind === 'put' && change.value.length > 0) value = change.value;
      version = change.version;
      if (change.epoch !== undefined) epoch = change.epoch;
      if (change.writer !== undefined && change.writer !== self) writer = change.writer;
      break;
    case 'delete_session':
      kind = DeltaKind.DELTA_KIND_DELETE_SESSION;
      version = change.version;
      break;
    case 'touch':
      kind = DeltaKind.DELTA_KIND_TOUCH;
      break;
  }
  const safe = Number.MAX_SAFE_INTEGER;
  if (!(wholeUpTo(expiresAt, safe) && wholeUpTo(writtenAt, safe) && wholeUpTo(ttl, 0xffffffff) && wholeUpTo(version, safe) && wholeUpTo(epoch, safe))) {
    return encodeGenerated(session, change, self, now);
  }
  const t = DELTA_TAGS;
  const id = session.id;
  const owner = session.owner;
  const idBytes = Buffer.byteLength(id);
  const nameBytes = Buffer.byteLength(name);
  const writerBytes = Buffer.byteLength(writer);
  const ownerBytes = Buffer.byteLength(owner);
  const size =
    delimitedFieldBytes(t.sessionId, idBytes) +
    varintFieldBytes(t.kind, kind) +
    delimitedFieldBytes(t.partName, nameBytes) +
    (value === undefined ? 0 : delimitedFieldBytes(t.value, value.length)) +
    varintFieldBytes(t.version, version) +
    delimitedFieldBytes(t.writerNodeId, writerBytes) +
    varintFieldBytes(t.expiresAtUnixMs, expiresAt) +
    varintFieldBytes(t.ttlMs, ttl) +
    delimitedFieldBytes(t.ownerNodeId, ownerBytes) +
    varintFieldBytes(t.epoch, epoch) +
    varintFieldBytes(t.writtenAtUnixMs, writtenAt);
  const out = messageBuffer(size);
  let at = putStringField(out, 0, t.sessionId, id, idBytes);
  at = putVarintField(out, at, t.kind, kind);
  at = putStringField(out, at, t.partName, name, nameBytes);
  if (value !== undefined) {
    at = putVarint(out, at, t.value);
    at = putVarint(out, at, value.length);
    out.set(value, at);
    at += value.length;
  }
  at = putVarintField(out, at, t.version, version);
  at = putStringField(out, at, t.writerNodeId, writer, writerBytes);
  at = putVarintField(out, at, t.expiresAtUnixMs, expiresAt);
  at = putVarintField(out, at, t.ttlMs, ttl);
  at = putStringField(out, at, t.ownerNodeId, owner, ownerBytes);
  at = putVarintField(out, at, t.epoch, epoch);
  putVarintField(out, at, t.writtenAtUnixMs, writtenAt);
  return out;
}

/** A delta through the generated encoder (claims; numbers a varint of a safe integer cannot carry). */
function encodeGenerated(session: SessionStamp, change: Change, self: string, now: number): Uint8Array {
  const delta = toDelta(session, change, self, now);
  return encodeWith((w) => Delta.encode(delta, w));
}

/** Whether `n` is a whole number from 0 to `max`. */
function wholeUpTo(n: number, max: number): boolean {
  return Number.isInteger(n) && n >= 0 && n <= max;
}

const MAX_MS = BigInt(Number.MAX_SAFE_INTEGER);

/**
 * A wire time (int64 ms) as a number, clamped to ±MAX_SAFE_INTEGER: Number() of a value near
 * the int64 limits rounds past them, and such a time, stored and sent again (a session this
 * node came to own), would no longer fit its int64 field.
 */
function wireMs(value: bigint): number {
  return Number(value > MAX_MS ? MAX_MS : value < -MAX_MS ? -MAX_MS : value);
}

/** A Delta's fields with its 64-bit numbers as the receiver uses them (what readDelta reads). */
interface DeltaFields {
  sessionId: string;
  kind: DeltaKind;
  partName: string;
  value: Buffer;
  version: number;
  writerNodeId: string;
  expiresAt: number;
  ttlMs: number;
  ownerNodeId: string;
  epoch: number;
  writtenAt: number;
  /** A claim's part names (undefined: none on the wire). */
  claimedParts: string[] | undefined;
}

/** Reads a decoded Delta message sent by `from`. */
export function readDelta(delta: Delta, from: string): DecodedDelta {
  return decodedFrom(
    {
      sessionId: delta.sessionId,
      kind: delta.kind,
      partName: delta.partName,
      value: delta.value,
      version: Number(delta.version),
      writerNodeId: delta.writerNodeId,
      expiresAt: wireMs(delta.expiresAtUnixMs),
      ttlMs: delta.ttlMs,
      ownerNodeId: delta.ownerNodeId,
      epoch: Number(delta.epoch),
      writtenAt: wireMs(delta.writtenAtUnixMs),
      claimedParts: delta.claimedParts.length > 0 ? delta.claimedParts : undefined,
    },
    from,
  );
}

function decodedFrom(delta: DeltaFields, from: string): DecodedDelta {
  return {
    sessionId: delta.sessionId,
    owner: delta.ownerNodeId === '' ? from : delta.ownerNodeId,
    epoch: delta.epoch,
    expiresAt: delta.expiresAt,
    ttlMs: delta.ttlMs,
    writtenAt: delta.writtenAt,
    change: toChange(delta, from),
  };
}

/** Decodes an encoded Delta message (a reassembled fragment); undefined if it is not one. */
export function decodeDelta(bytes: Uint8Array, from: string): DecodedDelta | undefined {
  const buf = bufferView(bytes);
  return readDeltaAt(buf, 0, buf.length, from);
}

function toChange(delta: DeltaFields, from: string): Change | undefined {
  const writer = delta.writerNodeId === '' ? from : delta.writerNodeId;
  const version = delta.version;
  // A part change carries the session epoch it was written (or claimed) in.
  const epoch = delta.epoch;
  switch (delta.kind) {
    case DeltaKind.DELTA_KIND_PUT_PART:
      if (delta.partName === '' || version <= 0) return undefined;
      return { kind: 'put', name: delta.partName, value: delta.value, version, writer, epoch };
    case DeltaKind.DELTA_KIND_DELETE_PART:
      if (delta.partName === '' || version <= 0) return undefined;
      return { kind: 'delete_part', name: delta.partName, version, writer, epoch };
    case DeltaKind.DELTA_KIND_DELETE_SESSION:
      return version > 0 ? { kind: 'delete_session', version } : undefined;
    case DeltaKind.DELTA_KIND_TOUCH:
      return { kind: 'touch' };
    case DeltaKind.DELTA_KIND_CLAIM:
      return { kind: 'claim', parts: delta.claimedParts ?? [] };
    default:
      return undefined;
  }
}

// --- Data datagrams around encoded deltas ------------------------------------------

/** The tag (field number and wire type) the generated encoder writes first for `write`. */
function firstTag(write: (w: BinaryWriter) => unknown): number {
  return new BinaryReader(encodeWith(write)).uint32();
}

/** Field tags of Datagram, Data and Fragment, as the generated encoders write them. */
export const DATA_TAGS = (() => {
  const data = (fields: Parameters<typeof Data.fromPartial>[0]) => firstTag((w) => Data.encode(Data.fromPartial(fields), w));
  const fragment = (fields: Parameters<typeof Fragment.fromPartial>[0]) => firstTag((w) => Fragment.encode(Fragment.fromPartial(fields), w));
  return {
    senderNodeId: firstTag((w) => Datagram.encode(Datagram.fromPartial({ senderNodeId: 'x' }), w)),
    data: firstTag((w) => Datagram.encode(Datagram.fromPartial({ body: { $case: 'data', data: {} } }), w)),
    targetNodeId: data({ targetNodeId: 'x' }),
    seq: data({ seq: 1n }),
    deltas: data({ deltas: [{}] }),
    fragment: data({ fragment: {} }),
    ackRequested: data({ ackRequested: true }),
    retransmit: data({ retransmit: true }),
    deltaId: fragment({ deltaId: 1n }),
    index: fragment({ index: 1 }),
    count: fragment({ count: 1 }),
    chunk: fragment({ chunk: Buffer.from([0]) }),
  };
})();

/**
 * Encodes Datagram{sender, data: Data{target, seq, deltas, fragment, flags}} around
 * deltas that are already encoded: the generated decoder reads it as the Data it would
 * have encoded from those deltas (test/delta-codec.test.ts checks that). Sizes are known
 * before a byte is written, so the datagram is written once into a buffer of its exact
 * size (a BinaryWriter would gather chunks and copy them all again at finish).
 */
export function encodeData(sender: string, channel: string, packet: DataPacketFields, ackRequested: boolean): Uint8Array {
  const t = DATA_TAGS;
  const senderBytes = Buffer.byteLength(sender);
  const channelBytes = Buffer.byteLength(channel);
  let dataBytes = 0;
  dataBytes += delimitedFieldBytes(t.targetNodeId, channelBytes);
  dataBytes += varintBytes(t.seq) + varintBytes(packet.seq);
  for (const delta of packet.deltas) dataBytes += varintBytes(t.deltas) + varintBytes(delta.length) + delta.length;
  const f = packet.fragment;
  let fragmentBytes = 0;
  if (f !== undefined) {
    fragmentBytes =
      varintBytes(t.deltaId) + varintBytes(f.deltaId) + varintBytes(t.index) + varintBytes(f.index) + varintBytes(t.count) + varintBytes(f.count) +
      varintBytes(t.chunk) + varintBytes(f.chunk.length) + f.chunk.length;
    dataBytes += varintBytes(t.fragment) + varintBytes(fragmentBytes) + fragmentBytes;
  }
  if (ackRequested) dataBytes += varintBytes(t.ackRequested) + 1;
  if (packet.retransmit) dataBytes += varintBytes(t.retransmit) + 1;

  const out = messageBuffer(varintBytes(t.senderNodeId) + varintBytes(senderBytes) + senderBytes + varintBytes(t.data) + varintBytes(dataBytes) + dataBytes);
  let at = putVarint(out, 0, t.senderNodeId);
  at = putVarint(out, at, senderBytes);
  at += out.write(sender, at, 'utf8');
  at = putVarint(out, at, t.data);
  at = putVarint(out, at, dataBytes);
  at = putStringField(out, at, t.targetNodeId, channel, channelBytes);
  at = putVarint(out, at, t.seq);
  at = putVarint(out, at, packet.seq);
  for (const delta of packet.deltas) {
    at = putVarint(out, at, t.deltas);
    at = putVarint(out, at, delta.length);
    out.set(delta, at);
    at += delta.length;
  }
  if (f !== undefined) {
    at = putVarint(out, at, t.fragment);
    at = putVarint(out, at, fragmentBytes);
    at = putVarint(out, at, t.deltaId);
    at = putVarint(out, at, f.deltaId);
    at = putVarint(out, at, t.index);
    at = putVarint(out, at, f.index);
    at = putVarint(out, at, t.count);
    at = putVarint(out, at, f.count);
    at = putVarint(out, at, t.chunk);
    at = putVarint(out, at, f.chunk.length);
    out.set(f.chunk, at);
    at += f.chunk.length;
  }
  if (ackRequested) {
    at = putVarint(out, at, t.ackRequested);
    out[at++] = 1;
  }
  if (packet.retransmit) {
    at = putVarint(out, at, t.retransmit);
    out[at++] = 1;
  }
  return out;
}

// --- Data datagrams, read by hand -------------------------------------------------------

/** Field tags of Delta, as the generated encoder writes them. */
export const DELTA_TAGS = (() => {
  const tag = (fields: Parameters<typeof Delta.fromPartial>[0]) => firstTag((w) => Delta.encode(Delta.fromPartial(fields), w));
  return {
    sessionId: tag({ sessionId: 'x' }),
    kind: tag({ kind: DeltaKind.DELTA_KIND_PUT_PART }),
    partName: tag({ partName: 'x' }),
    value: tag({ value: Buffer.from([0]) }),
    version: tag({ version: 1n }),
    writerNodeId: tag({ writerNodeId: 'x' }),
    expiresAtUnixMs: tag({ expiresAtUnixMs: 1n }),
    ttlMs: tag({ ttlMs: 1 }),
    ownerNodeId: tag({ ownerNodeId: 'x' }),
    epoch: tag({ epoch: 1n }),
    writtenAtUnixMs: tag({ writtenAtUnixMs: 1n }),
    claimedParts: tag({ claimedParts: ['x'] }),
  };
})();

/** A Data datagram as the receiver reads it: its deltas decoded (the sender fills in writer and owner). */
export interface ReceivedData {
  targetNodeId: string;
  seq: bigint;
  deltas: DecodedDelta[];
  fragment: Fragment | undefined;
  ackRequested: boolean;
  retransmit: boolean;
}

/** A Data message the generated decoder read, as the receiver uses it. */
export function receivedData(data: Data, from: string): ReceivedData {
  return { targetNodeId: data.targetNodeId, seq: data.seq, deltas: data.deltas.map((delta) => readDelta(delta, from)), fragment: data.fragment, ackRequested: data.ackRequested, retransmit: data.retransmit };
}

/** The sender and Data of a data datagram; 'other' for any other body; undefined when malformed. */
export type DataDatagramRead = { sender: string; data: ReceivedData } | 'other' | undefined;

/**
 * Reads a Datagram whose body is Data, by hand: the replica's hottest decode. The generated
 * decoder made an object per delta with four BigInts and copied every value; this reads the
 * fields in place, numbers as numbers, values as views of `payload` (the store copies what it
 * keeps). It answers what the generated decoder and readDelta answer for every datagram it
 * reads (test/delta-codec.test.ts compares them on seeded random and mutated datagrams).
 * A datagram with any other body, or any top-level field but the sender, Data and padding, is
 * 'other': the generated decoder reads it. What this reader cannot read is malformed
 * (undefined), also some damage the generated decoder would read past: a zero tag, a group
 * (wire types 3 and 4), a varint over ten bytes.
 */
export function readDataDatagram(payload: Uint8Array): DataDatagramRead {
  const buf = bufferView(payload);
  const r = new WireCursor(buf, 0, buf.length);
  let sender = '';
  let dataStart = -1;
  let dataEnd = -1;
  while (r.pos < r.end) {
    const tag = r.varint32();
    if (tag === undefined) return undefined;
    if (tag === DATA_TAGS.senderNodeId) {
      const text = r.string();
      if (text === undefined) return undefined;
      sender = text;
    } else if (tag === DATA_TAGS.data) {
      if (!r.lengthDelimited()) return undefined;
      dataStart = r.fieldStart;
      dataEnd = r.fieldEnd;
    } else if (tag === PADDING_TAG) {
      if (!r.lengthDelimited()) return undefined;
    } else return 'other';
  }
  if (dataStart < 0) return 'other';
  const read = readData(buf, dataStart, dataEnd, sender);
  return read === undefined ? undefined : { sender, data: read };
}

function readData(buf: Buffer, start: number, end: number, from: string): ReceivedData | undefined {
  const t = DATA_TAGS;
  const r = new WireCursor(buf, start, end);
  const out: ReceivedData = { targetNodeId: '', seq: 0n, deltas: [], fragment: undefined, ackRequested: false, retransmit: false };
  /** Start and end of each encoded delta, in pairs: they are read once the sender is known. */
  const deltas: number[] = [];
  while (r.pos < r.end) {
    const tag = r.varint32();
    if (tag === undefined) return undefined;
    switch (tag) {
      case t.targetNodeId: {
        const text = r.string();
        if (text === undefined) return undefined;
        out.targetNodeId = text;
        break;
      }
      case t.seq: {
        const seq = r.uint64();
        if (seq === undefined) return undefined;
        out.seq = typeof seq === 'bigint' ? seq : BigInt(seq);
        break;
      }
      case t.deltas: {
        if (!r.lengthDelimited()) return undefined;
        deltas.push(r.fieldStart, r.fieldEnd);
        break;
      }
      case t.fragment: {
        const fragment = r.lengthDelimited() ? readFragment(buf, r.fieldStart, r.fieldEnd) : undefined;
        if (fragment === undefined) return undefined;
        out.fragment = fragment;
        break;
      }
      case t.ackRequested:
      case t.retransmit: {
        const flag = r.bool();
        if (flag === undefined) return undefined;
        if (tag === t.ackRequested) out.ackRequested = flag;
        else out.retransmit = flag;
        break;
      }
      default:
        if (!r.skip(tag)) return undefined;
    }
  }
  for (let i = 0; i < deltas.length; i += 2) {
    const delta = readDeltaAt(buf, deltas[i]!, deltas[i + 1]!, from);
    if (delta === undefined) return undefined;
    out.deltas.push(delta);
  }
  return out;
}

function readFragment(buf: Buffer, start: number, end: number): Fragment | undefined {
  const t = DATA_TAGS;
  const r = new WireCursor(buf, start, end);
  const out: Fragment = { deltaId: 0n, index: 0, count: 0, chunk: EMPTY };
  while (r.pos < r.end) {
    const tag = r.varint32();
    if (tag === undefined) return undefined;
    if (tag === t.deltaId) {
      const id = r.uint64();
      if (id === undefined) return undefined;
      out.deltaId = typeof id === 'bigint' ? id : BigInt(id);
    } else if (tag === t.index || tag === t.count) {
      const n = r.uint32();
      if (n === undefined) return undefined;
      if (tag === t.index) out.index = n;
      else out.count = n;
    } else if (tag === t.chunk) {
      if (!r.lengthDelimited()) return undefined;
      out.chunk = buf.subarray(r.fieldStart, r.fieldEnd);
    } else if (!r.skip(tag)) return undefined;
  }
  return out;
}

/** One encoded Delta at buf[start, end), as readDelta(Delta.decode(...), from) reads it. */
function readDeltaAt(buf: Buffer, start: number, end: number, from: string): DecodedDelta | undefined {
  const t = DELTA_TAGS;
  const r = new WireCursor(buf, start, end);
  const d: DeltaFields = {
    sessionId: '',
    kind: DeltaKind.DELTA_KIND_UNSPECIFIED,
    partName: '',
    value: EMPTY,
    version: 0,
    writerNodeId: '',
    expiresAt: 0,
    ttlMs: 0,
    ownerNodeId: '',
    epoch: 0,
    writtenAt: 0,
    claimedParts: undefined,
  };
  while (r.pos < r.end) {
    const tag = r.varint32();
    if (tag === undefined) return undefined;
    switch (tag) {
      case t.sessionId:
      case t.partName:
      case t.writerNodeId:
      case t.ownerNodeId:
      case t.claimedParts: {
        const text = r.string();
        if (text === undefined) return undefined;
        if (tag === t.sessionId) d.sessionId = text;
        else if (tag === t.partName) d.partName = text;
        else if (tag === t.writerNodeId) d.writerNodeId = text;
        else if (tag === t.ownerNodeId) d.ownerNodeId = text;
        else (d.claimedParts ??= []).push(text);
        break;
      }
      case t.kind: {
        const kind = r.uint32();
        if (kind === undefined) return undefined;
        d.kind = kind | 0;
        break;
      }
      case t.value: {
        if (!r.lengthDelimited()) return undefined;
        d.value = buf.subarray(r.fieldStart, r.fieldEnd);
        break;
      }
      case t.ttlMs: {
        const ttl = r.uint32();
        if (ttl === undefined) return undefined;
        d.ttlMs = ttl;
        break;
      }
      case t.version:
      case t.epoch: {
        const n = r.uint64();
        if (n === undefined) return undefined;
        if (tag === t.version) d.version = Number(n);
        else d.epoch = Number(n);
        break;
      }
      case t.expiresAtUnixMs:
      case t.writtenAtUnixMs: {
        const n = r.uint64();
        if (n === undefined) return undefined;
        const ms = typeof n === 'number' ? n : wireMs(BigInt.asIntN(64, n));
        if (tag === t.expiresAtUnixMs) d.expiresAt = ms;
        else d.writtenAt = ms;
        break;
      }
      default:
        if (!r.skip(tag)) return undefined;
    }
  }
  return decodedFrom(d, from);
}
