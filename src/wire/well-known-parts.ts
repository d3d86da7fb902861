/**
 * The typed well-known parts: a part named tls, auth, cart or tcp must hold bytes that
 * parse as its message. The bytes are stored as given, so fields this version does not
 * know survive a round trip; only bytes that are not a well-formed message are refused.
 *
 * The check is a strict, schema-aware walk of the wire format (see PART_MESSAGE_FIELDS):
 * every tag, varint and length is checked against the bytes of the message that encloses
 * it, known fields must arrive with their field's wire type, strings must be UTF-8 and
 * nested messages are walked with the same rules. Unknown fields are skipped unread.
 */
import { isUtf8 } from 'node:buffer';
import { AuthState, CartState, TcpConnectionState, TlsSessionState } from '../gen/baton/v1/parts';

export interface PartCodec<T> {
  encode(message: T): { finish(): Uint8Array };
  decode(input: Uint8Array): T;
  fromPartial(object: any): T;
}

export const WELL_KNOWN_PARTS = {
  tls: { typeName: 'baton.v1.TlsSessionState', codec: TlsSessionState as PartCodec<TlsSessionState> },
  auth: { typeName: 'baton.v1.AuthState', codec: AuthState as PartCodec<AuthState> },
  cart: { typeName: 'baton.v1.CartState', codec: CartState as PartCodec<CartState> },
  tcp: { typeName: 'baton.v1.TcpConnectionState', codec: TcpConnectionState as PartCodec<TcpConnectionState> },
} as const;

export type WellKnownPartName = keyof typeof WELL_KNOWN_PARTS;

export function isWellKnownPart(name: string): name is WellKnownPartName {
  return Object.prototype.hasOwnProperty.call(WELL_KNOWN_PARTS, name);
}

/**
 * How a field travels on the wire: 'varint' covers int32, int64, uint32, uint64, sint32,
 * sint64, bool and enums; 'fixed64' covers fixed64, sfixed64 and double; 'fixed32' covers
 * fixed32, sfixed32 and float; 'message:<full name>' is an embedded message.
 */
export type WireFieldKind = 'string' | 'bytes' | 'varint' | 'fixed64' | 'fixed32' | `message:${string}`;

export interface WireFieldSpec {
  /** The field's name in the .proto file, used in error messages. */
  readonly name: string;
  readonly kind: WireFieldKind;
  readonly repeated?: true;
  /** A map field: repeated entries of the message named by kind, with key = 1 and value = 2. */
  readonly map?: true;
}

/** Message full name → field number → field. */
export type WireSchema = Readonly<Record<string, Readonly<Record<number, WireFieldSpec>>>>;

/**
 * The messages of proto/baton/v1/parts.proto as the validator sees them. Kept in step with
 * the .proto by a test that compares it with the file's reflection.
 */
export const PART_MESSAGE_FIELDS = {
  'baton.v1.TlsSessionState': {
    1: { name: 'session_id', kind: 'bytes' },
    2: { name: 'session_data', kind: 'bytes' },
    3: { name: 'protocol', kind: 'string' },
    4: { name: 'cipher', kind: 'string' },
    5: { name: 'server_name', kind: 'string' },
    6: { name: 'created_at_unix_ms', kind: 'varint' },
    7: { name: 'lifetime_seconds', kind: 'varint' },
    8: { name: 'alpn_protocol', kind: 'string' },
    9: { name: 'resumed', kind: 'varint' },
  },
  'baton.v1.AuthState': {
    1: { name: 'token', kind: 'string' },
    2: { name: 'token_type', kind: 'string' },
    3: { name: 'subject', kind: 'string' },
    4: { name: 'scopes', kind: 'string', repeated: true },
    5: { name: 'expires_at_unix_ms', kind: 'varint' },
    6: { name: 'claims', kind: 'message:baton.v1.AuthState.ClaimsEntry', repeated: true, map: true },
    7: { name: 'refresh_token', kind: 'string' },
    8: { name: 'issued_at_unix_ms', kind: 'varint' },
  },
  'baton.v1.AuthState.ClaimsEntry': {
    1: { name: 'key', kind: 'string' },
    2: { name: 'value', kind: 'string' },
  },
  'baton.v1.CartItem': {
    1: { name: 'sku', kind: 'string' },
    2: { name: 'name', kind: 'string' },
    3: { name: 'quantity', kind: 'varint' },
    4: { name: 'unit_price_minor', kind: 'varint' },
  },
  'baton.v1.Address': {
    1: { name: 'name', kind: 'string' },
    2: { name: 'line1', kind: 'string' },
    3: { name: 'line2', kind: 'string' },
    4: { name: 'city', kind: 'string' },
    5: { name: 'region', kind: 'string' },
    6: { name: 'postal_code', kind: 'string' },
    7: { name: 'country', kind: 'string' },
  },
  'baton.v1.CartState': {
    1: { name: 'items', kind: 'message:baton.v1.CartItem', repeated: true },
    2: { name: 'currency', kind: 'string' },
    3: { name: 'billing_address', kind: 'message:baton.v1.Address' },
    4: { name: 'payment_reference', kind: 'string' },
    5: { name: 'updated_at_unix_ms', kind: 'varint' },
  },
  'baton.v1.TcpConnectionState': {
    1: { name: 'local_address', kind: 'string' },
    2: { name: 'local_port', kind: 'varint' },
    3: { name: 'remote_address', kind: 'string' },
    4: { name: 'remote_port', kind: 'varint' },
    5: { name: 'send_next', kind: 'varint' },
    6: { name: 'send_unacknowledged', kind: 'varint' },
    7: { name: 'receive_next', kind: 'varint' },
    8: { name: 'send_window', kind: 'varint' },
    9: { name: 'receive_window', kind: 'varint' },
    10: { name: 'send_window_scale', kind: 'varint' },
    11: { name: 'receive_window_scale', kind: 'varint' },
    12: { name: 'mss', kind: 'varint' },
    13: { name: 'timestamp_value', kind: 'varint' },
    14: { name: 'timestamp_echo_reply', kind: 'varint' },
    15: { name: 'sack_permitted', kind: 'varint' },
    16: { name: 'rto_ms', kind: 'varint' },
    17: { name: 'state', kind: 'varint' },
    18: { name: 'captured_at_unix_ms', kind: 'varint' },
    19: { name: 'timestamps_enabled', kind: 'varint' },
    20: { name: 'send_sequence_known', kind: 'varint' },
    21: { name: 'receive_sequence_known', kind: 'varint' },
  },
} as const satisfies WireSchema;

/** Nested messages deeper than this (below the part's own message) are refused. */
export const MAX_NESTING = 32;

/** Largest valid field number, 2^29 - 1. */
const MAX_FIELD_NUMBER = 0x1fffffff;

const KIND_VARINT = 0;
const KIND_FIXED64 = 1;
const KIND_FIXED32 = 2;
const KIND_BYTES = 3;
const KIND_STRING = 4;
const KIND_MESSAGE = 5;

interface CompiledField {
  /** "field 1 (items)", built once so error paths need not. */
  readonly label: string;
  readonly kind: number;
  /** The wire type an unpacked value of this field has. */
  readonly wireType: number;
  /** Repeated varint or fixed field: wire type 2 holds a packed run of values. */
  readonly packable: boolean;
  message: CompiledMessage | undefined;
}

interface CompiledMessage {
  /** Indexed by field number; holes are unknown fields. */
  readonly fields: readonly (CompiledField | undefined)[];
}

/** Compiled form of a WireSchema: checks bytes against one of its messages. */
export type WireChecker = (typeName: string, bytes: Uint8Array) => string | undefined;

/** Compiles a schema table into a checker. Throws if the table refers to a message it lacks. */
export function compileWireSchema(schema: WireSchema): WireChecker {
  const messages = compileMessages(schema);
  return (typeName, bytes) => {
    const message = messages.get(typeName);
    if (message === undefined) throw new Error(`unknown message type ${typeName}`);
    return walkMessage(bytes, 0, bytes.length, message, 0);
  };
}

function compileMessages(schema: WireSchema): Map<string, CompiledMessage> {
  const messages = new Map<string, CompiledMessage>();
  const links: [CompiledField, string][] = [];
  for (const [typeName, specs] of Object.entries(schema)) {
    const fields: (CompiledField | undefined)[] = [];
    for (const [key, spec] of Object.entries(specs)) {
      const number = Number(key);
      if (!Number.isInteger(number) || number < 1 || number > MAX_FIELD_NUMBER) {
        throw new Error(`${typeName}: invalid field number ${key}`);
      }
      // Sparse numbers would make a huge array; the fields of these messages are dense.
      if (number > 1024) throw new Error(`${typeName}: field number ${number} is too large for the table`);
      while (fields.length <= number) fields.push(undefined);
      const field = compileField(number, spec);
      if (spec.kind.startsWith('message:')) links.push([field, spec.kind.slice('message:'.length)]);
      fields[number] = field;
    }
    messages.set(typeName, { fields });
  }
  for (const [field, typeName] of links) {
    field.message = messages.get(typeName);
    if (field.message === undefined) throw new Error(`${field.label} refers to unknown message ${typeName}`);
  }
  return messages;
}

function compileField(number: number, spec: WireFieldSpec): CompiledField {
  const label = `field ${number} (${spec.name})`;
  const repeated = spec.repeated === true;
  switch (spec.kind) {
    case 'varint':
      return { label, kind: KIND_VARINT, wireType: 0, packable: repeated, message: undefined };
    case 'fixed64':
      return { label, kind: KIND_FIXED64, wireType: 1, packable: repeated, message: undefined };
    case 'fixed32':
      return { label, kind: KIND_FIXED32, wireType: 5, packable: repeated, message: undefined };
    case 'bytes':
      return { label, kind: KIND_BYTES, wireType: 2, packable: false, message: undefined };
    case 'string':
      return { label, kind: KIND_STRING, wireType: 2, packable: false, message: undefined };
    default:
      if (!spec.kind.startsWith('message:')) throw new Error(`${label} has unknown kind ${spec.kind as string}`);
      return { label, kind: KIND_MESSAGE, wireType: 2, packable: false, message: undefined };
  }
}

const PART_MESSAGES = compileMessages(PART_MESSAGE_FIELDS);

function partMessage(name: WellKnownPartName): CompiledMessage {
  const message = PART_MESSAGES.get(WELL_KNOWN_PARTS[name].typeName);
  if (message === undefined) throw new Error(`no wire schema for ${WELL_KNOWN_PARTS[name].typeName}`);
  return message;
}

const PART_CHECKS: Readonly<Record<WellKnownPartName, CompiledMessage>> = {
  tls: partMessage('tls'),
  auth: partMessage('auth'),
  cart: partMessage('cart'),
  tcp: partMessage('tcp'),
};

/**
 * Returns undefined if `bytes` is a well-formed instance of the part's message, else a
 * short reason that names fields but never echoes their contents.
 */
export function checkWellKnownPart(name: WellKnownPartName, bytes: Uint8Array): string | undefined {
  return walkMessage(bytes, 0, bytes.length, PART_CHECKS[name], 0);
}

// readVarint's results: a position after the varint, or one of these.
const VARINT_TRUNCATED = -1;
const VARINT_MALFORMED = -2;

/** The value of the varint readVarint last read; exact up to 2^53, approximate above. */
let varintValue = 0;

/**
 * Reads the varint at `pos`, which must end before `end`: at most 10 bytes, and a 10th
 * byte may only carry bit 63 (as protobuf-go requires). Returns the position after it.
 */
function readVarint(buf: Uint8Array, pos: number, end: number): number {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < 10; i++) {
    if (pos >= end) return VARINT_TRUNCATED;
    const b = buf[pos++]!;
    value += (b & 0x7f) * scale;
    if (b < 0x80) {
      if (i === 9 && b > 1) return VARINT_MALFORMED;
      varintValue = value;
      return pos;
    }
    scale *= 128;
  }
  return VARINT_MALFORMED;
}

function fieldLabel(field: CompiledField | undefined, number: number): string {
  return field === undefined ? `field ${number}` : field.label;
}

function varintProblem(label: string, result: number): string {
  return result === VARINT_TRUNCATED ? `${label} is truncated` : `${label} is not a valid varint`;
}

/** Checks the fields in buf[pos, end) against `message`; the fields must fill it exactly. */
function walkMessage(
  buf: Uint8Array,
  pos: number,
  end: number,
  message: CompiledMessage,
  depth: number,
): string | undefined {
  const fields = message.fields;
  while (pos < end) {
    pos = readVarint(buf, pos, end);
    if (pos < 0) return pos === VARINT_TRUNCATED ? 'a field tag is truncated' : 'a field tag is not a valid varint';
    const tag = varintValue;
    if (tag < 8) return 'invalid field number 0';
    if (tag > MAX_FIELD_NUMBER * 8 + 7) return 'a field number is over the maximum of 2^29 - 1';
    const number = tag >>> 3;
    const wireType = tag & 7;
    const field = number < fields.length ? fields[number] : undefined;
    if (field !== undefined && wireType !== field.wireType && !(wireType === 2 && field.packable)) {
      return wireType <= 5 && wireType !== 3 && wireType !== 4
        ? `${field.label} has wire type ${wireType}, but its type needs wire type ${field.wireType}`
        : `${field.label} has wire type ${wireType}, which is not allowed`;
    }
    switch (wireType) {
      case 0:
        pos = readVarint(buf, pos, end);
        if (pos < 0) return varintProblem(fieldLabel(field, number), pos);
        break;
      case 1:
        if (end - pos < 8) return `${fieldLabel(field, number)} is truncated`;
        pos += 8;
        break;
      case 5:
        if (end - pos < 4) return `${fieldLabel(field, number)} is truncated`;
        pos += 4;
        break;
      case 2: {
        pos = readVarint(buf, pos, end);
        if (pos < 0) return varintProblem(fieldLabel(field, number), pos);
        if (varintValue > end - pos) return `${fieldLabel(field, number)} is truncated`;
        const stop = pos + varintValue;
        if (field !== undefined) {
          const problem = checkLengthDelimited(buf, pos, stop, field, depth);
          if (problem !== undefined) return problem;
        }
        pos = stop;
        break;
      }
      default:
        return `${fieldLabel(field, number)} has wire type ${wireType}, which is not allowed`;
    }
  }
  return undefined;
}

/** Checks the payload buf[pos, stop) of a known field that arrived with wire type 2. */
function checkLengthDelimited(
  buf: Uint8Array,
  pos: number,
  stop: number,
  field: CompiledField,
  depth: number,
): string | undefined {
  switch (field.kind) {
    case KIND_BYTES:
      return undefined;
    case KIND_STRING:
      return isValidUtf8(buf, pos, stop) ? undefined : `${field.label} is not valid UTF-8`;
    case KIND_MESSAGE: {
      if (depth >= MAX_NESTING) return `${field.label} is nested too deeply`;
      const problem = walkMessage(buf, pos, stop, field.message!, depth + 1);
      return problem === undefined ? undefined : `${field.label}: ${problem}`;
    }
    case KIND_VARINT:
      while (pos < stop) {
        pos = readVarint(buf, pos, stop);
        if (pos < 0) return `${field.label} has a malformed packed value`;
      }
      return undefined;
    case KIND_FIXED64:
      return (stop - pos) % 8 === 0 ? undefined : `${field.label} has a malformed packed value`;
    default: // KIND_FIXED32
      return (stop - pos) % 4 === 0 ? undefined : `${field.label} has a malformed packed value`;
  }
}

/** UTF-8 check of buf[start, stop) without a copy; only non-ASCII text needs a view for isUtf8. */
function isValidUtf8(buf: Uint8Array, start: number, stop: number): boolean {
  for (let i = start; i < stop; i++) {
    if (buf[i]! >= 0x80) return isUtf8(buf.subarray(i, stop));
  }
  return true;
}
