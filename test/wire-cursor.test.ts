/**
 * WireCursor's text: what it reads is the field's bytes as text, also when the short ASCII
 * texts it keeps (by a hash of their bytes, one per slot) collide, come back in another
 * order, or differ from a kept one in a single byte.
 */
import { WireCursor } from '../src/wire/wire-cursor';
import { SeededRandom } from '../src/store/random';

/** A buffer of length-delimited fields (tag 1), one per text. */
function fields(texts: readonly Buffer[]): Buffer {
  const parts: Buffer[] = [];
  for (const text of texts) parts.push(Buffer.from([0x0a, text.length]), text);
  return Buffer.concat(parts);
}

function readAll(buf: Buffer): (string | undefined)[] {
  const cursor = new WireCursor(buf, 0, buf.length);
  const out: (string | undefined)[] = [];
  while (cursor.pos < cursor.end) {
    expect(cursor.varint32()).toBe(0x0a);
    out.push(cursor.string());
  }
  return out;
}

function randomAscii(random: SeededRandom, length: number): Buffer {
  return Buffer.from(Array.from({ length }, () => 0x20 + random.below(0x5f)));
}

describe('WireCursor.string', () => {
  it('reads 10,000 short ASCII texts (many sharing a slot) as their bytes, again and in another order', () => {
    const random = new SeededRandom(18);
    // Ids of one length (collisions between texts of equal length), names of many lengths.
    const texts = [
      ...Array.from({ length: 6_000 }, () => Buffer.from(randomAscii(random, 16).toString('hex'), 'latin1')),
      ...Array.from({ length: 4_000 }, () => randomAscii(random, random.below(65))),
    ];
    for (let round = 0; round < 2; round++) {
      const order = texts.map((_, i) => i);
      for (let i = order.length - 1; i > 0; i--) {
        const j = random.below(i + 1);
        [order[i], order[j]] = [order[j]!, order[i]!];
      }
      const picked = order.map((i) => texts[i]!);
      expect(readAll(fields(picked))).toEqual(picked.map((t) => t.toString('latin1')));
    }
  });

  it('tells apart texts one byte from a text it read just before', () => {
    const random = new SeededRandom(7);
    for (let n = 0; n < 2_000; n++) {
      const text = randomAscii(random, 1 + random.below(64));
      const other = Buffer.from(text);
      other[random.below(other.length)] ^= 1 + random.below(0x1f);
      const bytes = [text, other, text, other];
      expect(readAll(fields(bytes))).toEqual(bytes.map((t) => t.toString('latin1')));
    }
  });

  it('reads longer texts and UTF-8 past the kept ones, and refuses bytes that are not UTF-8', () => {
    const long = Buffer.from('x'.repeat(65), 'latin1');
    const utf8 = Buffer.from('sessión-ü', 'utf8');
    const bad = Buffer.from([0x61, 0xc3, 0x28]);
    expect(readAll(fields([long, utf8, long, utf8]))).toEqual([long.toString(), 'sessión-ü', long.toString(), 'sessión-ü']);
    expect(readAll(fields([bad]))).toEqual([undefined]);
  });
});
