/**
 * Bounds what one API request may cost before it is decoded.
 *
 * Decoding a protobuf message allocates an object per element of every repeated field: a
 * 64 MiB Exchange message of 33.5 M empty batch entries (2 bytes each) became 33.5 M objects,
 * gigabytes of heap, and froze the node. The scan here walks the wire format without
 * allocating (tags, varints and lengths only; its counters are kept per nesting depth and
 * reused), with the message shapes taken from the
 * .proto files, and refuses a message in which a field occurs more often than its limit
 * (a singular field may repeat on the wire: protobuf merges repeats), that holds too many
 * fields in all, or whose messages nest too deep. Only a message that passes is decoded.
 *
 * Malformed wire data is not judged here: the scan stops and lets the decoder report it.
 */
import { status } from '@grpc/grpc-js';
import type { PackageDefinition } from '@grpc/proto-loader';
import { Utf8Error } from '../../src/wire/strict-utf8';

/** Most operations one Exchange message may batch (BatonClient sends at most 256). */
export const EXCHANGE_MAX_BATCH_OPS = 1024;
/** Nesting of messages: an Exchange batch entry holds a request that holds parts. */
const MAX_DEPTH = 8;

/** A message the server will not run: it does not decode, or it is over a limit. */
export class RefusedRequest {
  constructor(
    readonly code: status,
    readonly details: string,
  ) {}
}

type Decoder<T> = { requestDeserialize: (bytes: Buffer) => T };

/**
 * A method's request deserializer that scans before it decodes, and yields a RefusedRequest
 * instead of throwing: RESOURCE_EXHAUSTED over a limit, INVALID_ARGUMENT for a string that
 * is not UTF-8, INTERNAL for data that does not decode (what grpc-js itself answers).
 */
export function guarded<T, R>(
  method: Decoder<T>,
  typeName: string,
  scanner: RequestScanner,
  wrap: (decoded: T, bytes: number) => R,
): (bytes: Buffer) => R | RefusedRequest {
  return (bytes) => {
    const refused = scanner.check(bytes, typeName);
    if (refused !== undefined) return new RefusedRequest(status.RESOURCE_EXHAUSTED, `the request is over a limit: ${refused}`);
    try {
      return wrap(method.requestDeserialize(bytes), bytes.length);
    } catch (err) {
      if (err instanceof Utf8Error) return new RefusedRequest(status.INVALID_ARGUMENT, `${err.message} (session ids and part names are UTF-8 text)`);
      return new RefusedRequest(status.INTERNAL, `the request could not be decoded: ${err instanceof Error ? err.message : String(err)}`);
    }
  };
}

interface FieldShape {
  name: string;
  repeated: boolean;
  /** For a repeated scalar: bytes per element when packed (0 = varints, counted by their last byte). */
  packedWidth: number | undefined;
  /** Full name of the message type, for fields that hold a message. */
  message: string | undefined;
  limit: number;
}

type Shapes = Map<string, Map<number, FieldShape>>;

interface DescriptorField {
  name: string;
  number: number;
  label: string;
  type: string;
  typeName: string;
}

export class RequestScanner {
  private readonly shapes: Shapes = new Map();
  /** Fields the current check may still read (every field of every nested message counts). */
  private fieldsLeft = 0;
  /** Per nesting depth, reused by every check: what a walk counts, and where it reads. */
  private readonly levels = Array.from({ length: MAX_DEPTH + 1 }, () => ({ counts: new FieldCounts(), cursor: { pos: 0 } }));

  /**
   * `limits` maps a field's full name (`baton.v1.ExchangeRequest.batch`) to the most elements
   * it may hold; any other field may occur `defaultLimit` times per message, and so may
   * fields of unknown numbers together. A message may hold at most
   * `maxFields` fields in all, nested ones included (this bounds a batch of batches).
   */
  constructor(
    definitions: PackageDefinition,
    limits: Record<string, number>,
    private readonly defaultLimit: number,
    private readonly maxFields: number,
  ) {
    for (const [typeName, definition] of Object.entries(definitions)) {
      if (!('format' in definition) || definition.format !== 'Protocol Buffer 3 DescriptorProto') continue;
      const fields = new Map<number, FieldShape>();
      const scope = typeName.slice(0, typeName.lastIndexOf('.'));
      for (const f of (definition.type as { field: DescriptorField[] }).field) {
        const repeated = f.label === 'LABEL_REPEATED';
        const message = f.type === 'TYPE_MESSAGE' ? resolve(f.typeName, scope) : undefined;
        const packedWidth = repeated && message === undefined && f.type !== 'TYPE_STRING' && f.type !== 'TYPE_BYTES' ? (FIXED_WIDTHS[f.type] ?? 0) : undefined;
        fields.set(f.number, { name: f.name, repeated, packedWidth, message, limit: limits[`${typeName}.${f.name}`] ?? defaultLimit });
      }
      this.shapes.set(typeName, fields);
    }
  }

  /** Why `bytes`, a message of type `typeName`, is refused; undefined when it may be decoded. */
  check(bytes: Uint8Array, typeName: string): string | undefined {
    const shape = this.shapes.get(typeName);
    if (shape === undefined) throw new Error(`no message type ${typeName} in the scanned schema`);
    this.fieldsLeft = this.maxFields;
    return this.walk(bytes, 0, bytes.length, typeName, shape, 0);
  }

  private walk(bytes: Uint8Array, start: number, end: number, typeName: string, shape: Map<number, FieldShape>, depth: number): string | undefined {
    if (depth > MAX_DEPTH) return `messages nest deeper than ${MAX_DEPTH} levels`;
    const { counts, cursor } = this.levels[depth]!;
    counts.reset();
    cursor.pos = start;
    let unknown = 0;
    while (cursor.pos < end) {
      const tag = readVarint(bytes, cursor, end);
      if (tag === undefined) return undefined;
      if (--this.fieldsLeft < 0) return `the message holds more than ${this.maxFields} fields`;
      const number = Math.floor(tag / 8);
      const wireType = tag & 7;
      const field = shape.get(number);
      if (field === undefined) {
        if (++unknown > this.defaultLimit) return `${typeName} carries more than ${this.defaultLimit} unknown fields`;
      } else {
        const count = counts.add(number, 1);
        if (count > field.limit) {
          return field.repeated
            ? `${typeName}.${field.name} holds more than ${field.limit} elements`
            : `${typeName}.${field.name} is repeated ${count} times`;
        }
      }
      switch (wireType) {
        case 0:
          if (readVarint(bytes, cursor, end) === undefined) return undefined;
          break;
        case 1:
          cursor.pos += 8;
          break;
        case 5:
          cursor.pos += 4;
          break;
        case 2: {
          const length = readVarint(bytes, cursor, end);
          if (length === undefined || cursor.pos + length > end) return undefined;
          if (field?.packedWidth !== undefined) {
            // A packed repeated scalar: one field on the wire, many elements once decoded.
            const elements = field.packedWidth > 0 ? Math.ceil(length / field.packedWidth) : countVarints(bytes, cursor.pos, cursor.pos + length);
            const count = counts.add(number, elements - 1);
            this.fieldsLeft -= elements - 1;
            if (count > field.limit) return `${typeName}.${field.name} holds more than ${field.limit} elements`;
            if (this.fieldsLeft < 0) return `the message holds more than ${this.maxFields} fields`;
          }
          const inner = field?.message === undefined ? undefined : this.shapes.get(field.message);
          if (inner !== undefined) {
            const refused = this.walk(bytes, cursor.pos, cursor.pos + length, field!.message!, inner, depth + 1);
            if (refused !== undefined) return refused;
          }
          cursor.pos += length;
          break;
        }
        default:
          return undefined;
      }
    }
    return undefined;
  }
}

/** Occurrences per field number in one message: small numbers in an array, the rest (rare) in a map. */
class FieldCounts {
  private readonly small = new Float64Array(64);
  private large: Map<number, number> | undefined;

  reset(): void {
    this.small.fill(0);
    this.large?.clear();
  }

  /** Adds n occurrences of field `number`; answers its count. */
  add(number: number, n: number): number {
    if (number < this.small.length) return (this.small[number]! += n);
    this.large ??= new Map();
    const count = (this.large.get(number) ?? 0) + n;
    this.large.set(number, count);
    return count;
  }
}

/** Bytes per element of the fixed-width scalar types (packed). */
const FIXED_WIDTHS: Record<string, number> = {
  TYPE_FIXED32: 4,
  TYPE_SFIXED32: 4,
  TYPE_FLOAT: 4,
  TYPE_FIXED64: 8,
  TYPE_SFIXED64: 8,
  TYPE_DOUBLE: 8,
};

/** Varints in bytes[start, end): each ends with a byte below 0x80. */
function countVarints(bytes: Uint8Array, start: number, end: number): number {
  let n = 0;
  for (let i = start; i < end; i++) if (bytes[i]! < 0x80) n++;
  return n;
}

/** A relative type name as descriptors carry it, resolved against the enclosing package. */
function resolve(typeName: string, scope: string): string {
  if (typeName.startsWith('.')) return typeName.slice(1);
  return scope === '' ? typeName : `${scope}.${typeName}`;
}

/** Reads a varint of up to 53 bits; undefined when the data ends first or it is longer. */
function readVarint(bytes: Uint8Array, cursor: { pos: number }, end: number): number | undefined {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < 8; i++) {
    if (cursor.pos >= end) return undefined;
    const byte = bytes[cursor.pos++]!;
    value += (byte & 0x7f) * scale;
    if (byte < 0x80) return value;
    scale *= 128;
  }
  // Ten-byte varints (negative int64) are skipped, not valued: no length or tag is that large.
  for (let i = 8; i < 10; i++) {
    if (cursor.pos >= end) return undefined;
    if (bytes[cursor.pos++]! < 0x80) return value;
  }
  return undefined;
}
