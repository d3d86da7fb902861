/**
 * The field ↔ part mapping of the express-session store: every field name maps to a valid
 * part name outside the well-known ones, names map back, no two names share a part (seeded
 * random names included), long and ill-formed names take the hashed form with their name
 * in the value.
 */
import {
  decodeFieldPart,
  encodeFieldValue,
  fieldOfPartName,
  fieldPartName,
  isHashedField,
  MAX_PART_NAME_LENGTH,
} from '../src/client/express-session-fields';
import { SeededRandom } from '../src/store/random';
import { checkPartName } from '../src/wire/validation';
import { WELL_KNOWN_PARTS } from '../src/wire/well-known-parts';

/** Decodes what encodeFieldValue stored for `field`, through the part name. */
function roundTrip(field: string, value: unknown): { field: string; value: unknown } | undefined {
  const part = fieldPartName(field);
  const decoded = decodeFieldPart(part, encodeFieldValue(field, JSON.stringify(value)));
  return decoded === undefined ? undefined : { field: decoded.field, value: JSON.parse(decoded.json) };
}

describe('fieldPartName', () => {
  it('keeps lowercase names readable and escapes everything else', () => {
    expect(fieldPartName('cookie')).toBe('f.cookie');
    expect(fieldPartName('user_id-2')).toBe('f.user_id-2');
    expect(fieldPartName('userId')).toBe('f.user.49d');
    expect(fieldPartName('a.b')).toBe('f.a.2eb');
    expect(fieldPartName('')).toBe('f.');
    expect(fieldPartName('é')).toBe('f..c3.a9');
  });

  it('never yields a well-known part name', () => {
    for (const name of [...Object.keys(WELL_KNOWN_PARTS), 'TLS', 'f.tls', 'h.x']) {
      expect(Object.keys(WELL_KNOWN_PARTS)).not.toContain(fieldPartName(name));
    }
  });

  it('maps names that fit to the f. form and longer ones to the hashed form', () => {
    const longest = 'x'.repeat(MAX_PART_NAME_LENGTH - 2);
    expect(fieldPartName(longest)).toBe(`f.${longest}`);
    expect(isHashedField(longest)).toBe(false);
    expect(fieldPartName(longest + 'x')).toMatch(/^h\.[0-9a-f]{40}$/);
    // 20 capitals escape to 60 characters: fits; 21 do not.
    expect(isHashedField('A'.repeat(20))).toBe(false);
    expect(isHashedField('A'.repeat(21))).toBe(true);
    expect(isHashedField('\ud800')).toBe(true);
  });

  it('round-trips random names and values, always to a valid part name, never two names to one part', () => {
    const random = new SeededRandom(17);
    const alphabet = ['a', 'z', '0', '_', '-', '.', 'A', 'Z', ' ', '/', 'é', '€', '😀', '\ud800', '\udc00', '\u0000', ':'];
    const byPart = new Map<string, string>();
    for (let i = 0; i < 2000; i++) {
      const length = random.below(40);
      let field = '';
      for (let j = 0; j < length; j++) field += alphabet[random.below(alphabet.length)]!;
      const part = fieldPartName(field);
      expect(() => checkPartName(part)).not.toThrow();
      const seen = byPart.get(part);
      if (seen !== undefined) expect(seen).toBe(field);
      byPart.set(part, field);
      const value = { n: i, s: field };
      expect(roundTrip(field, value)).toEqual({ field, value });
    }
    expect(byPart.size).toBeGreaterThan(1500);
  });
});

describe('fieldOfPartName', () => {
  it('reads only names the store writes', () => {
    expect(fieldOfPartName('f.user.49d')).toBe('userId');
    expect(fieldOfPartName('tls')).toBeUndefined();
    expect(fieldOfPartName('cart')).toBeUndefined();
    expect(fieldOfPartName('h.0123')).toBeUndefined();
    // A second spelling of "a" (escaped although it stands for itself): not the store's.
    expect(fieldOfPartName('f..61')).toBeUndefined();
    expect(fieldOfPartName('f.a.2')).toBeUndefined();
    expect(fieldOfPartName('f.a.zz')).toBeUndefined();
    // Bytes that are not UTF-8.
    expect(fieldOfPartName('f..ff')).toBeUndefined();
  });
});

describe('decodeFieldPart', () => {
  it('skips parts that are not fields and refuses field parts that do not hold JSON', () => {
    expect(decodeFieldPart('tls', Buffer.from('{}'))).toBeUndefined();
    expect(() => decodeFieldPart('f.user', Buffer.from('{not json'))).toThrow(SyntaxError);
    const hashed = fieldPartName('y'.repeat(100));
    expect(() => decodeFieldPart(hashed, Buffer.from('{"v": 1}'))).toThrow(SyntaxError);
    // A hashed part whose stored name maps elsewhere is refused, not read as another field.
    expect(() => decodeFieldPart(hashed, Buffer.from('{"k": "other", "v": 1}'))).toThrow(SyntaxError);
  });

  it('stores a hashed field with its name beside the value', () => {
    const field = 'Z'.repeat(30);
    expect(JSON.parse(encodeFieldValue(field, '[1,2]').toString())).toEqual({ k: field, v: [1, 2] });
    expect(roundTrip(field, [1, 2])).toEqual({ field, value: [1, 2] });
  });
});
