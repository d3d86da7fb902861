/**
 * The typed layer of BatonClient for the well-known parts (tls, auth, cart, tcp).
 *
 * Rules: codecs come only from the WELL_KNOWN_PARTS table in well-known-parts.ts, the same
 * table the server validates with, so a part added there is typed here too and the client
 * and server cannot disagree on a part's message. Nothing in this file names a part. The
 * functions throw what the generated codec throws; the client maps that to its errors.
 */
import { WELL_KNOWN_PARTS, type PartCodec, type WellKnownPartName } from '../wire/well-known-parts';

export { WELL_KNOWN_PARTS, isWellKnownPart, type PartCodec, type WellKnownPartName } from '../wire/well-known-parts';

/** The generated message type of a well-known part: `WellKnownPartMessage<'tls'>` is TlsSessionState. */
export type WellKnownPartMessage<K extends WellKnownPartName> =
  (typeof WELL_KNOWN_PARTS)[K]['codec'] extends PartCodec<infer T> ? T : never;

function codecOf<K extends WellKnownPartName>(name: K): PartCodec<WellKnownPartMessage<K>> {
  // The table pairs each name with its codec; TypeScript cannot follow a generic index through it.
  return WELL_KNOWN_PARTS[name].codec as PartCodec<WellKnownPartMessage<K>>;
}

/** Protobuf bytes of a well-known part's message. */
export function encodeWellKnownPart<K extends WellKnownPartName>(name: K, message: WellKnownPartMessage<K>): Uint8Array {
  return codecOf(name).encode(message).finish();
}

/** A well-known part's message from its stored bytes; throws if the bytes do not decode. */
export function decodeWellKnownPart<K extends WellKnownPartName>(name: K, bytes: Uint8Array): WellKnownPartMessage<K> {
  return codecOf(name).decode(bytes);
}
