/**
 * Cluster key files: what parses, what is refused and how the refusal reads (the line, what
 * was expected, never the key), and the values derived from a key.
 */
import { createHash, hkdfSync } from 'node:crypto';
import { inspect } from 'node:util';
import {
  clusterKeyFromBytes,
  deriveHashSeed,
  keyFingerprint,
  parseClusterKeys,
  type ClusterKey,
} from '../src/wire/cluster-key';
import { ConfigError } from '../src/wire/errors';
import { SeededRandom } from '../src/store/random';

function randomBytes(random: SeededRandom, length: number): Buffer {
  const bytes = Buffer.alloc(length + 3);
  for (let i = 0; i < length; i += 4) bytes.writeUInt32LE(random.nextUint32(), i);
  return bytes.subarray(0, length);
}

function idOf(bytes: Uint8Array): number {
  return (createHash('sha256').update(bytes).digest()[0]! % 255) + 1;
}

/** Seeded 32-byte keys with distinct, non-zero ids. */
function keyBytes(count: number, seed = 1): Buffer[] {
  const random = new SeededRandom(seed);
  const keys: Buffer[] = [];
  const ids = new Set<number>();
  while (keys.length < count) {
    const bytes = randomBytes(random, 32);
    const id = idOf(bytes);
    if (id === 0 || ids.has(id)) continue;
    ids.add(id);
    keys.push(bytes);
  }
  return keys;
}

/** A key whose id is `wanted` (found by seeded search). */
function keyWithId(wanted: number, seed: number): Buffer {
  const random = new SeededRandom(seed);
  for (;;) {
    const bytes = randomBytes(random, 32);
    if (idOf(bytes) === wanted) return bytes;
  }
}

function parseError(text: string, source?: string): ConfigError {
  try {
    parseClusterKeys(text, source);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('parseClusterKeys', () => {
  const [k1, k2, k3] = keyBytes(3);

  it('parses one key per line, the first being the sending key', () => {
    const keys = parseClusterKeys(`${k1!.toString('base64')}\n${k2!.toString('base64')}\n`);
    expect(keys.map((k) => k.key)).toEqual([k1, k2]);
    expect(keys.map((k) => k.id)).toEqual([idOf(k1!), idOf(k2!)]);
  });

  it('ignores blank lines, comments, surrounding spaces and CRLF', () => {
    const text = [
      '# baton cluster keys',
      '',
      `   ${k3!.toString('base64')}   # new key, sending since the last deploy`,
      '\t',
      `${k1!.toString('base64')}\r`,
      '#' + k2!.toString('base64'),
    ].join('\r\n');
    expect(parseClusterKeys(text).map((k) => k.key)).toEqual([k3, k1]);
  });

  it('refuses text without a key', () => {
    for (const text of ['', '\n\n', '# only a comment\n  \n']) {
      expect(parseError(text).message).toMatch(/no cluster key found/);
    }
  });

  it('names the line and the expectation for invalid base64, and never echoes it', () => {
    const secretish = k1!.toString('base64').slice(0, 40) + '!!!!';
    const err = parseError(`# header\n${k2!.toString('base64')}\n${secretish}\n`, '--cluster-key-file /etc/baton/keys');
    expect(err.message).toMatch(/^--cluster-key-file \/etc\/baton\/keys: line 3 /);
    expect(err.message).toMatch(/base64/);
    expect(err.message).toMatch(/32/);
    expect(err.message).not.toContain(secretish.slice(0, 40));
    expect(err.message).not.toContain(k2!.toString('base64'));
    // Spaces inside a key and base64url are refused, not silently skipped by the decoder.
    expect(parseError(`${k1!.toString('base64').slice(0, 20)} ${k1!.toString('base64').slice(20)}`).message).toMatch(/line 1/);
    expect(parseError(k1!.toString('base64url')).message).toMatch(/line 1/);
  });

  it('refuses keys that are not exactly 32 bytes, saying how long they were', () => {
    const random = new SeededRandom(5);
    for (const length of [1, 16, 31, 33, 64]) {
      const encoded = randomBytes(random, length).toString('base64');
      const err = parseError(`\n${encoded}`);
      expect(err.message).toMatch(new RegExp(`line 2 decodes to ${length} bytes`));
      expect(err.message).toMatch(/exactly 32 bytes/);
      expect(err.message).not.toContain(encoded);
    }
  });

  it('refuses a repeated key and two keys sharing an id', () => {
    const a = k1!.toString('base64');
    expect(parseError(`${a}\n${k2!.toString('base64')}\n${a}`).message).toMatch(/line 3 repeats the key on line 1/);
    const twin = keyWithId(idOf(k1!), 11);
    expect(twin.equals(k1!)).toBe(false);
    const err = parseError(`${a}\n\n${twin.toString('base64')}`);
    expect(err.message).toMatch(/line 3: its key id 0x[0-9a-f]{2} .* also the id of the key on line 1/);
    expect(err.message).not.toContain(twin.toString('base64'));
  });

  it('gives every key an id from 1 to 255 (0 is reserved for unencrypted datagrams)', () => {
    const random = new SeededRandom(13);
    const ids = new Set<number>();
    for (let i = 0; i < 4000; i++) ids.add(clusterKeyFromBytes(randomBytes(random, 32)).id);
    expect(Math.min(...ids)).toBe(1);
    expect(Math.max(...ids)).toBe(255);
    expect(ids.size).toBe(255);
  });

  it('keeps key material out of inspection and JSON', () => {
    const [key] = parseClusterKeys(k1!.toString('base64'));
    const hex = k1!.toString('hex').slice(0, 16);
    const shown = inspect(key) + JSON.stringify(key);
    expect(shown).not.toContain(hex);
    expect(shown).not.toContain(k1!.toString('base64').slice(0, 16));
    expect(shown).not.toMatch(/<Buffer/);
    expect(key!.key.equals(k1!)).toBe(true);
  });

  it('copies the bytes it is given', () => {
    const bytes = Buffer.from(k1!);
    const key = clusterKeyFromBytes(bytes);
    bytes.fill(0);
    expect(key.key.equals(k1!)).toBe(true);
    expect(() => clusterKeyFromBytes(Buffer.alloc(31))).toThrow(ConfigError);
  });
});

describe('derived values', () => {
  const [k1, k2] = keyBytes(2, 99);
  const key1: ClusterKey = clusterKeyFromBytes(k1!);
  const key2: ClusterKey = clusterKeyFromBytes(k2!);

  it('derives the hash seed with HKDF-SHA256 (salt empty, info baton/buzhash-seed/v1)', () => {
    const seed = deriveHashSeed(key1);
    expect(seed).toHaveLength(32);
    expect(seed.equals(Buffer.from(hkdfSync('sha256', k1!, Buffer.alloc(0), 'baton/buzhash-seed/v1', 32)))).toBe(true);
    expect(deriveHashSeed(key1).equals(seed)).toBe(true);
    expect(deriveHashSeed(key2).equals(seed)).toBe(false);
    expect(seed.equals(k1!)).toBe(false);
  });

  it('fingerprints a key as hex of the first 8 bytes of its SHA-256', () => {
    const fingerprint = keyFingerprint(key1);
    expect(fingerprint).toMatch(/^[0-9a-f]{16}$/);
    expect(fingerprint).toBe(createHash('sha256').update(k1!).digest('hex').slice(0, 16));
    expect((parseInt(fingerprint.slice(0, 2), 16) % 255) + 1).toBe(key1.id);
    expect(keyFingerprint(key2)).not.toBe(fingerprint);
    expect(k1!.toString('hex')).not.toContain(fingerprint);
  });
});
