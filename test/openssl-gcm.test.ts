/**
 * AES-256-GCM through OpenSSL over koffi against node:crypto's: the same bytes both ways,
 * at every size class a datagram has (empty, under and over a block, 1,400 B, 60,000 B),
 * at an offset in the output and in place; forged tags, ciphertexts and additional data refused; and
 * the datagram sealer and opener built on either reading each other's datagrams.
 */
import { randomBytes } from 'node:crypto';
import { loadOpensslGcm, SCRATCH_DATA_BYTES } from '../sidecar/net/openssl-gcm';
import { DatagramOpener, DatagramSealer, nodeGcm, TAG_BYTES, type GcmEngine, type GcmKey } from '../src/wire/datagram-codec';
import { SeededRandom } from '../src/store/random';

function engine(): GcmEngine {
  const loaded = loadOpensslGcm();
  if (loaded.gcm === undefined) throw new Error(`the OpenSSL engine is unavailable here: ${loaded.reason}`);
  return loaded.gcm;
}

test('seals and opens the bytes node:crypto does, both ways, and refuses what was changed', () => {
  const random = new SeededRandom(5);
  const key = randomBytes(32);
  const fast = engine()(key);
  const node = nodeGcm(key);
  try {
    // Both sides of SCRATCH_DATA_BYTES: through the engine's own memory, and straight through Buffers.
    for (const size of [0, 1, 15, 16, 17, 255, 1400, SCRATCH_DATA_BYTES, SCRATCH_DATA_BYTES + 1, 60_000]) {
      for (let round = 0; round < 3; round++) {
        const nonce = randomBytes(12);
        const aad = randomBytes(20);
        const plaintext = randomBytes(size);
        const at = random.below(40);
        const a = Buffer.alloc(at + size + TAG_BYTES + random.below(5), 0xee);
        const b = Buffer.alloc(a.length, 0xee);
        fast.seal(nonce, aad, plaintext, a, at);
        node.seal(nonce, aad, plaintext, b, at);
        expect(a.equals(b)).toBe(true);
        // Sealing in place (the plaintext already where the ciphertext goes) writes the same.
        for (const key of [fast, node]) {
          const c = Buffer.alloc(a.length, 0xee);
          plaintext.copy(c, at);
          key.seal(nonce, aad, c.subarray(at, at + size), c, at);
          expect(c.equals(a)).toBe(true);
        }
        // Nothing outside [at, at + size + tag) was written.
        expect(a.subarray(0, at).every((x) => x === 0xee)).toBe(true);
        expect(a.subarray(at + size + TAG_BYTES).every((x) => x === 0xee)).toBe(true);
        const ciphertext = a.subarray(at, at + size);
        const tag = a.subarray(at + size, at + size + TAG_BYTES);
        // Each open decrypts its own copy in place, and touches nothing outside it.
        const opens = (key: GcmKey, n: Buffer, ad: Buffer, body: Buffer, t: Buffer): boolean => {
          const framed = Buffer.concat([Buffer.from([0xee]), body, Buffer.from([0xee])]);
          const inPlace = framed.subarray(1, 1 + body.length);
          const ok = key.openInPlace(n, ad, inPlace, t);
          expect(framed[0]).toBe(0xee);
          expect(framed[framed.length - 1]).toBe(0xee);
          if (ok) expect(inPlace.equals(plaintext)).toBe(true);
          return ok;
        };
        expect(opens(fast, nonce, aad, ciphertext, tag)).toBe(true);
        expect(opens(node, nonce, aad, ciphertext, tag)).toBe(true);
        const flip = (bytes: Buffer) => {
          const copy = Buffer.from(bytes);
          copy[random.below(copy.length)]! ^= 1 << random.below(8);
          return copy;
        };
        expect(opens(fast, nonce, aad, ciphertext, flip(tag))).toBe(false);
        expect(opens(fast, nonce, flip(aad), ciphertext, tag)).toBe(false);
        expect(opens(fast, flip(nonce), aad, ciphertext, tag)).toBe(false);
        if (size > 0) expect(opens(fast, nonce, aad, flip(ciphertext), tag)).toBe(false);
        expect(opens(fast, nonce, aad, ciphertext, tag.subarray(0, 12))).toBe(false);
        expect(opens(node, nonce, aad, ciphertext, flip(tag))).toBe(false);
      }
    }
  } finally {
    fast.dispose();
  }
});

test('refuses lengths it cannot write, and a key used after dispose', () => {
  const key = engine()(randomBytes(32));
  const nonce = randomBytes(12);
  expect(() => key.seal(nonce, Buffer.alloc(0), Buffer.alloc(10), Buffer.alloc(25), 0)).toThrow(RangeError);
  expect(() => key.seal(nonce, Buffer.alloc(0), Buffer.alloc(10), Buffer.alloc(30), 5)).toThrow(RangeError);
  expect(() => key.seal(Buffer.alloc(8), Buffer.alloc(0), Buffer.alloc(10), Buffer.alloc(30), 0)).toThrow(RangeError);
  expect(() => engine()(randomBytes(16))).toThrow(RangeError);
  key.dispose();
  expect(() => key.seal(nonce, Buffer.alloc(0), Buffer.alloc(1), Buffer.alloc(17), 0)).toThrow(/disposed/);
  key.dispose();
});

test('datagrams sealed with one engine open with the other, and forgeries are dropped by both', () => {
  const keys = [{ id: 7, key: randomBytes(32) }];
  const random = new SeededRandom(9);
  for (const [seal, open] of [
    [engine(), nodeGcm],
    [nodeGcm, engine()],
    [engine(), engine()],
  ] as const) {
    const sealer = new DatagramSealer(keys, 0x1234_5678_9abc_def0n, seal);
    const opener = new DatagramOpener(keys, { maxDatagramBytes: 65_000, gcm: open, maxSenders: 2 });
    for (let i = 0; i < 20; i++) {
      const payload = randomBytes(random.below(3) === 0 ? 60_000 : random.below(1400));
      const datagram = sealer.seal(payload);
      const opened = opener.open(datagram);
      expect(opened.ok && opened.payload.equals(payload)).toBe(true);
      const forged = Buffer.from(sealer.seal(payload));
      forged[forged.length - 1 - random.below(forged.length - 20)]! ^= 1;
      expect(opener.open(forged)).toEqual({ ok: false, reason: 'auth_failed' });
    }
    // Senders past maxSenders are evicted (and their keys disposed); a later one still opens.
    for (let n = 0; n < 3; n++) {
      const other = new DatagramSealer(keys, BigInt(n + 1), seal);
      expect(opener.open(other.seal(Buffer.from('hello'))).ok).toBe(true);
    }
    expect(opener.evictedSenders).toBeGreaterThan(0);
  }
});
