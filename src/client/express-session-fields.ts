/**
 * How the top-level fields of an express-session session map to baton parts, and back.
 *
 * Rules:
 * - A field `name` becomes the part `f.<escaped name>`: the characters a-z, 0-9, '_' and '-'
 *   stand for themselves; every other UTF-8 byte (capitals, '.', anything beyond ASCII)
 *   becomes '.' and two lowercase hex digits. Each escaped form decodes to one name only, so
 *   the mapping is reversible and two fields never share a part. The 'f.' prefix keeps the
 *   fields apart from the typed well-known parts (tls, auth, cart, tcp) and from parts other
 *   writers keep in the same session.
 * - A field whose escaped form would not fit in a part name (64 characters), or whose name
 *   is not well-formed UTF-16 (a lone surrogate has no UTF-8 form), becomes
 *   `h.<40 hex digits of SHA-256 of the name's JSON>`, and its part holds the name with the
 *   value: `{"k": name, "v": value}`.
 * - Values are JSON in UTF-8, compared as their JSON text: a field "changed" when its text did.
 * - Parts that are neither form are not fields: decoding skips them.
 */
import { createHash } from 'node:crypto';

/** Most characters of a part name (proto/baton/v1/session.proto). */
export const MAX_PART_NAME_LENGTH = 64;
export const FIELD_PART_PREFIX = 'f.';
export const HASHED_FIELD_PART_PREFIX = 'h.';
const HASH_HEX_DIGITS = 40;

const PLAIN = /^[a-z0-9_-]$/;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const HEX_PAIR = /^[0-9a-f]{2}$/;

/** The part name that holds `field`. */
export function fieldPartName(field: string): string {
  if (!LONE_SURROGATE.test(field)) {
    const escaped = escapeField(field);
    if (escaped !== undefined) return FIELD_PART_PREFIX + escaped;
  }
  return HASHED_FIELD_PART_PREFIX + createHash('sha256').update(JSON.stringify(field)).digest('hex').slice(0, HASH_HEX_DIGITS);
}

/** Whether `field`'s part holds its name beside its value (the hashed form). */
export function isHashedField(field: string): boolean {
  return fieldPartName(field).startsWith(HASHED_FIELD_PART_PREFIX);
}

/** The field a part of the 'f.' form holds; undefined for any other part name. */
export function fieldOfPartName(part: string): string | undefined {
  if (!part.startsWith(FIELD_PART_PREFIX)) return undefined;
  const bytes: number[] = [];
  for (let i = FIELD_PART_PREFIX.length; i < part.length; ) {
    const c = part[i]!;
    if (c === '.') {
      const hex = part.slice(i + 1, i + 3);
      if (!HEX_PAIR.test(hex)) return undefined;
      const byte = parseInt(hex, 16);
      // An escaped byte that could have stood for itself has a second spelling: not ours.
      if (PLAIN.test(String.fromCharCode(byte))) return undefined;
      bytes.push(byte);
      i += 3;
    } else {
      if (!PLAIN.test(c)) return undefined;
      bytes.push(c.charCodeAt(0));
      i += 1;
    }
  }
  const buffer = Buffer.from(bytes);
  const field = buffer.toString('utf8');
  // Bytes that are not UTF-8 decode to U+FFFD and would not encode back to this name.
  return Buffer.from(field, 'utf8').equals(buffer) ? field : undefined;
}

/** The bytes stored in `field`'s part for a value's JSON text. */
export function encodeFieldValue(field: string, json: string): Buffer {
  const text = isHashedField(field) ? `{"k":${JSON.stringify(field)},"v":${json}}` : json;
  return Buffer.from(text, 'utf8');
}

/**
 * The field and the JSON text of its value held by a part; undefined for a part that is not
 * a field. Throws (SyntaxError) when a field's part does not hold JSON.
 */
export function decodeFieldPart(part: string, value: Uint8Array): { field: string; json: string } | undefined {
  if (part.startsWith(HASHED_FIELD_PART_PREFIX)) {
    const held: unknown = JSON.parse(Buffer.from(value).toString('utf8'));
    if (typeof held !== 'object' || held === null || !('k' in held) || !('v' in held) || typeof held.k !== 'string') {
      throw new SyntaxError(`part '${part}' does not hold {"k": field, "v": value}`);
    }
    if (fieldPartName(held.k) !== part) throw new SyntaxError(`part '${part}' holds a field whose name maps to another part`);
    return { field: held.k, json: JSON.stringify(held.v) };
  }
  const field = fieldOfPartName(part);
  if (field === undefined) return undefined;
  const text = Buffer.from(value).toString('utf8');
  JSON.parse(text);
  return { field, json: text };
}

function escapeField(field: string): string | undefined {
  let escaped = '';
  for (const byte of Buffer.from(field, 'utf8')) {
    const c = String.fromCharCode(byte);
    escaped += PLAIN.test(c) ? c : '.' + byte.toString(16).padStart(2, '0');
    if (FIELD_PART_PREFIX.length + escaped.length > MAX_PART_NAME_LENGTH) return undefined;
  }
  return escaped;
}
