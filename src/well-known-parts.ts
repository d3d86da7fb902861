/**
 * The typed well-known parts: a part named tls, auth, cart or tcp must hold bytes that
 * parse as its message. The bytes are stored as given, so fields this version does not
 * know survive a round trip; only bytes that are not a well-formed message are refused.
 */
import { BinaryReader } from '@bufbuild/protobuf/wire';
import { AuthState, CartState, TcpConnectionState, TlsSessionState } from './gen/baton/v1/parts';

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
 * Returns undefined if `bytes` is a well-formed instance of the part's message, else a
 * short reason. Checks the wire structure strictly (tags, wire types, lengths, nesting),
 * then decodes with the generated codec so field values are type-checked too.
 */
export function checkWellKnownPart(name: WellKnownPartName, bytes: Uint8Array): string | undefined {
  const structural = checkWireFormat(bytes, 0);
  if (structural !== undefined) return structural;
  try {
    WELL_KNOWN_PARTS[name].codec.decode(bytes);
    return undefined;
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
}

const MAX_NESTING = 32;

/** Walks protobuf wire format; length-delimited fields that look like messages are walked too. */
function checkWireFormat(bytes: Uint8Array, depth: number): string | undefined {
  if (depth > MAX_NESTING) return 'nested too deeply';
  const reader = new BinaryReader(bytes);
  try {
    while (reader.pos < reader.len) {
      const [field, wireType] = reader.tag();
      if (field < 1) return `invalid field number ${field} at byte ${reader.pos}`;
      switch (wireType) {
        case 0:
          reader.uint64();
          break;
        case 1:
          if (reader.pos + 8 > reader.len) return 'truncated 64-bit field';
          reader.skip(wireType);
          break;
        case 2: {
          const length = reader.uint32();
          if (reader.pos + length > reader.len) return `field ${field} is truncated`;
          reader.pos += length;
          break;
        }
        case 5:
          if (reader.pos + 4 > reader.len) return 'truncated 32-bit field';
          reader.skip(wireType);
          break;
        default:
          return `field ${field} has wire type ${wireType}, which is not allowed`;
      }
    }
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
  if (reader.pos !== reader.len) return 'trailing bytes after the last field';
  return undefined;
}
