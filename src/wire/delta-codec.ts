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
 *   objects) cannot carry. bench/delta-codec.ts times both ways on the fan-out path. Their field tags are read from the generated encoder at
 *   load time, never written as literals, so wire.proto stays the one source of numbers.
 * - Decoding never throws: a delta that cannot be read is `undefined` (the caller counts
 *   it as malformed).
 */
import { BinaryReader, type BinaryWriter } from '@bufbuild/protobuf/wire';
import { Data, Datagram, Delta, DeltaKind, Fragment } from '../gen/baton/v1/wire';
import { encodeWith, putVarint, varintBytes } from './proto-writer';

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
  | { kind: 'claim' };

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
      break;
  }
  return delta;
}

/** encodeDelta: the encoded Delta message of a change. */
export function encodeDelta(session: SessionStamp, change: Change, self: string, now: number): Uint8Array {
  const delta = toDelta(session, change, self, now);
  return encodeWith((w) => Delta.encode(delta, w));
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

/** Reads a decoded Delta message sent by `from`. */
export function readDelta(delta: Delta, from: string): DecodedDelta {
  return {
    sessionId: delta.sessionId,
    owner: delta.ownerNodeId === '' ? from : delta.ownerNodeId,
    epoch: Number(delta.epoch),
    expiresAt: wireMs(delta.expiresAtUnixMs),
    ttlMs: delta.ttlMs,
    writtenAt: wireMs(delta.writtenAtUnixMs),
    change: toChange(delta, from),
  };
}

/** Decodes an encoded Delta message (a reassembled fragment); undefined if it is not one. */
export function decodeDelta(bytes: Uint8Array, from: string): DecodedDelta | undefined {
  let delta: Delta;
  try {
    delta = Delta.decode(bytes);
  } catch {
    return undefined;
  }
  return readDelta(delta, from);
}

function toChange(delta: Delta, from: string): Change | undefined {
  const writer = delta.writerNodeId === '' ? from : delta.writerNodeId;
  const version = Number(delta.version);
  // A part change carries the session epoch it was written (or claimed) in.
  const epoch = Number(delta.epoch);
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
      return { kind: 'claim' };
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
  if (channel !== '') dataBytes += varintBytes(t.targetNodeId) + varintBytes(channelBytes) + channelBytes;
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

  const out = Buffer.allocUnsafe(varintBytes(t.senderNodeId) + varintBytes(senderBytes) + senderBytes + varintBytes(t.data) + varintBytes(dataBytes) + dataBytes);
  let at = putVarint(out, 0, t.senderNodeId);
  at = putVarint(out, at, senderBytes);
  at += out.write(sender, at, 'utf8');
  at = putVarint(out, at, t.data);
  at = putVarint(out, at, dataBytes);
  if (channel !== '') {
    at = putVarint(out, at, t.targetNodeId);
    at = putVarint(out, at, channelBytes);
    at += out.write(channel, at, 'utf8');
  }
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
