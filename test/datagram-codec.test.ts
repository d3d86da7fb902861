/**
 * The datagram envelope: round trips with and without keys, the exact wire layout, and
 * every way a datagram is refused — bit flips, truncation, replay, foreign and rotated keys,
 * garbage floods — with the opener's memory staying bounded. Keys and payloads come from
 * seeded randomness, so every run sees the same bytes.
 */
import { createDecipheriv, createHash } from 'node:crypto';
import { clusterKeyFromBytes, type ClusterKey } from '../src/wire/cluster-key';
import {
  DatagramOpener,
  DatagramSealer,
  deriveDatagramKey,
  FORMAT_VERSION,
  HEADER_BYTES,
  MAGIC,
  MAX_PADDING,
  MIN_PADDING,
  nodeGcm,
  PADDING_TAG,
  TAG_BYTES,
  type DropReason,
  type GcmEngine,
  type OpenResult,
} from '../src/wire/datagram-codec';
import { SeededRandom } from '../src/store/random';

const MAX_DATAGRAM = 1400;

function randomBytes(random: SeededRandom, length: number): Buffer {
  const bytes = Buffer.alloc(length + 3);
  for (let i = 0; i < length; i += 4) bytes.writeUInt32LE(random.nextUint32(), i);
  return bytes.subarray(0, length);
}

function randomIncarnation(random: SeededRandom): bigint {
  return (BigInt(random.nextUint32()) << 32n) | BigInt(random.nextUint32());
}

function idOf(bytes: Uint8Array): number {
  return (createHash('sha256').update(bytes).digest()[0]! % 255) + 1;
}

/** Seeded cluster keys with distinct, non-zero ids. */
function makeKeys(count: number, seed: number): ClusterKey[] {
  const random = new SeededRandom(seed);
  const keys: ClusterKey[] = [];
  while (keys.length < count) {
    const bytes = randomBytes(random, 32);
    const id = idOf(bytes);
    if (id === 0 || keys.some((k) => k.id === id)) continue;
    keys.push(clusterKeyFromBytes(bytes));
  }
  return keys;
}

function opened(result: OpenResult): { incarnation: bigint; packetNumber: number; payload: Buffer } {
  if (!result.ok) throw new Error(`expected the datagram to open, dropped: ${result.reason}`);
  return result;
}

function reasonOf(result: OpenResult): DropReason | 'ok' {
  return result.ok ? 'ok' : result.reason;
}

const [K1, K2, K3] = makeKeys(3, 2024);
const key1 = K1!;
const key2 = K2!;
const key3 = K3!;

describe('header constants', () => {
  it('match wire.proto', () => {
    expect(MAGIC).toBe(0xba70);
    expect(FORMAT_VERSION).toBe(1);
    expect(HEADER_BYTES).toBe(20);
    expect(TAG_BYTES).toBe(16);
  });
});

describe('DatagramSealer', () => {
  it('lays out the header and seals with the derived key and nonce of wire.proto', () => {
    const incarnation = 0x0123456789abcdefn;
    const sealer = new DatagramSealer([key1, key2], incarnation);
    expect(sealer.incarnation).toBe(incarnation);
    expect(sealer.packetsSealed).toBe(0);
    const payload = Buffer.from('hello, replica');
    sealer.seal(Buffer.from('first'));
    const datagram = sealer.seal(payload);
    expect(sealer.packetsSealed).toBe(2);
    expect(datagram).toHaveLength(HEADER_BYTES + payload.length + TAG_BYTES);
    expect(datagram.subarray(0, HEADER_BYTES).toString('hex')).toBe(
      'ba70' + '01' + key1.id.toString(16).padStart(2, '0') + '0123456789abcdef' + '0000000000000002',
    );

    // Decrypt independently, from the rules in wire.proto.
    const nonce = Buffer.concat([Buffer.alloc(4), datagram.subarray(12, 20)]);
    const decipher = createDecipheriv('aes-256-gcm', deriveDatagramKey(key1, incarnation), nonce, { authTagLength: 16 });
    decipher.setAAD(datagram.subarray(0, HEADER_BYTES));
    decipher.setAuthTag(datagram.subarray(datagram.length - TAG_BYTES));
    const plain = Buffer.concat([decipher.update(datagram.subarray(HEADER_BYTES, datagram.length - TAG_BYTES)), decipher.final()]);
    expect(plain.equals(payload)).toBe(true);
    expect(datagram.subarray(HEADER_BYTES, HEADER_BYTES + payload.length).equals(payload)).toBe(false);
  });

  it('sends the payload in clear with key id 0 and no tag when it has no keys', () => {
    const sealer = new DatagramSealer(undefined, 7n);
    const datagram = sealer.seal(Buffer.from('abc'));
    expect(datagram.toString('hex')).toBe('ba70' + '01' + '00' + '0000000000000007' + '0000000000000001' + '616263');
  });

  it('pads to a given length with a field readers skip, with and without keys, and refuses paddings that cannot be written', () => {
    const random = new SeededRandom(41);
    for (const keys of [[key1], undefined]) {
      const padded = new DatagramSealer(keys, 9n);
      const plain = new DatagramSealer(keys, 9n);
      const opener = new DatagramOpener(keys, { maxDatagramBytes: MAX_DATAGRAM });
      for (let i = 0; i < 300; i++) {
        const payload = randomBytes(random, random.below(1200));
        const natural = padded.sealedLength(payload.length);
        const padding = random.below(3) === 0 ? 0 : MIN_PADDING + random.below(MAX_PADDING - MIN_PADDING + 1);
        const at = random.below(50);
        const out = Buffer.alloc(at + natural + padding + 7, 0xee);
        padded.sealInto(payload, out, at, natural + padding);
        // Nothing outside the datagram was written.
        expect(out.subarray(0, at).every((x) => x === 0xee)).toBe(true);
        expect(out.subarray(at + natural + padding).every((x) => x === 0xee)).toBe(true);
        const datagram = out.subarray(at, at + natural + padding);
        const open = opened(opener.open(Buffer.from(datagram)));
        // The payload, then field 15 (length-delimited) of zeros, as many bytes as asked.
        const expected = padding === 0 ? payload : Buffer.concat([payload, Buffer.from([PADDING_TAG, padding - MIN_PADDING]), Buffer.alloc(padding - MIN_PADDING)]);
        expect(open.payload.equals(expected)).toBe(true);
        // Unpadded, the same packet number seals to what seal() writes.
        const same = plain.seal(payload);
        if (padding === 0) expect(datagram.equals(same)).toBe(true);
        else expect(datagram.subarray(0, HEADER_BYTES).equals(same.subarray(0, HEADER_BYTES))).toBe(true);
      }
      for (const bad of [1, -1, MAX_PADDING + 1]) expect(() => padded.sealInto(Buffer.alloc(10), Buffer.alloc(200), 0, padded.sealedLength(10) + bad)).toThrow(/padding/);
      // A refused padding used no packet number.
      const before = padded.packetsSealed;
      expect(() => padded.sealInto(Buffer.alloc(10), Buffer.alloc(200), 0, padded.sealedLength(10) + 1)).toThrow(RangeError);
      expect(padded.packetsSealed).toBe(before);
    }
  });

  it('refuses an empty key list and incarnations outside 64 bits', () => {
    expect(() => new DatagramSealer([], 1n)).toThrow(RangeError);
    expect(() => new DatagramSealer(undefined, -1n)).toThrow(RangeError);
    expect(() => new DatagramSealer(undefined, 1n << 64n)).toThrow(RangeError);
    expect(() => new DatagramSealer(undefined, (1n << 64n) - 1n)).not.toThrow();
  });

  it('never repeats a (key, nonce) pair across sealers with different incarnations', () => {
    const random = new SeededRandom(31);
    const pairs = new Set<string>();
    let total = 0;
    for (let s = 0; s < 8; s++) {
      // Incarnations that differ only in low bits, and both sealers restarting at packet 1.
      const incarnation = s < 4 ? BigInt(s) : randomIncarnation(random);
      const sealer = new DatagramSealer([key1], incarnation);
      const gcmKey = deriveDatagramKey(key1, incarnation).toString('hex');
      for (let i = 0; i < 200; i++) {
        const datagram = sealer.seal(randomBytes(random, 1 + random.below(20)));
        const nonce = '00000000' + datagram.subarray(12, 20).toString('hex');
        pairs.add(`${gcmKey}/${nonce}`);
        total += 1;
      }
    }
    expect(pairs.size).toBe(total);
    // Same cluster key, different incarnations: different GCM keys.
    expect(deriveDatagramKey(key1, 1n).equals(deriveDatagramKey(key1, 2n))).toBe(false);
    expect(deriveDatagramKey(key1, 1n).equals(deriveDatagramKey(key2, 1n))).toBe(false);
  });
});

describe('DatagramOpener', () => {
  it('round-trips payloads of many sizes with keys', () => {
    const random = new SeededRandom(1);
    const incarnation = randomIncarnation(random);
    const sealer = new DatagramSealer([key1], incarnation);
    const opener = new DatagramOpener([key1], { maxDatagramBytes: MAX_DATAGRAM });
    for (let length = 0; length <= MAX_DATAGRAM - HEADER_BYTES - TAG_BYTES; length += 1 + random.below(50)) {
      const payload = randomBytes(random, length);
      const result = opened(opener.open(sealer.seal(payload)));
      expect(result.payload.equals(payload)).toBe(true);
      expect(result.incarnation).toBe(incarnation);
      expect(result.packetNumber).toBe(sealer.packetsSealed);
    }
    expect(opener.trackedSenders).toBe(1);
  });

  it('round-trips without keys, and opens a Uint8Array that is a view into a larger buffer', () => {
    const sealer = new DatagramSealer(undefined, 42n);
    const opener = new DatagramOpener(undefined, { maxDatagramBytes: MAX_DATAGRAM });
    const payload = Buffer.from('plain payload');
    const first = opened(opener.open(sealer.seal(payload)));
    expect(first.payload.equals(payload)).toBe(true);
    expect(first).toMatchObject({ incarnation: 42n, packetNumber: 1 });

    const datagram = sealer.seal(payload);
    const backing = new Uint8Array(datagram.length + 10);
    backing.set(datagram, 5);
    const view = new Uint8Array(backing.buffer, 5, datagram.length);
    expect(opened(opener.open(view)).packetNumber).toBe(2);
    expect(reasonOf(opener.open(view))).toBe('replayed');

    const keyed = new DatagramSealer([key1], 1n);
    const keyedView = keyed.seal(payload);
    const copy = new Uint8Array(keyedView.length + 3);
    copy.set(keyedView, 3);
    const keyedOpener = new DatagramOpener([key1], { maxDatagramBytes: MAX_DATAGRAM });
    expect(opened(keyedOpener.open(copy.subarray(3))).payload.equals(payload)).toBe(true);
  });

  it('refuses plaintext when it has keys, and sealed datagrams when it has none', () => {
    const plain = new DatagramSealer(undefined, 1n).seal(Buffer.from('x'));
    const sealed = new DatagramSealer([key1], 1n).seal(Buffer.from('x'));
    expect(reasonOf(new DatagramOpener([key1], { maxDatagramBytes: MAX_DATAGRAM }).open(plain))).toBe('plaintext_refused');
    expect(reasonOf(new DatagramOpener(undefined, { maxDatagramBytes: MAX_DATAGRAM }).open(sealed))).toBe('encrypted_unexpected');
  });

  it('rejects every single-bit flip anywhere in a sealed datagram, and stays unchanged by them', () => {
    for (const payloadLength of [0, 1, 5]) {
      const random = new SeededRandom(100 + payloadLength);
      const incarnation = randomIncarnation(random);
      const sealer = new DatagramSealer([key1], incarnation);
      const datagram = sealer.seal(randomBytes(random, payloadLength));
      const opener = new DatagramOpener([key1], { maxDatagramBytes: MAX_DATAGRAM });
      const seen = new Map<DropReason | 'ok', number>();
      for (let bit = 0; bit < datagram.length * 8; bit++) {
        const flipped = Buffer.from(datagram);
        flipped[bit >>> 3] ^= 0x80 >>> (bit & 7);
        const reason = reasonOf(opener.open(flipped));
        expect({ bit, reason }).toEqual({ bit, reason: expectedFlipReason(flipped) });
        seen.set(reason, (seen.get(reason) ?? 0) + 1);
      }
      expect(seen.has('ok')).toBe(false);
      expect(seen.get('auth_failed')).toBeGreaterThan(0);
      expect(opener.trackedSenders).toBe(0);
      // No failure touched the state: the untouched datagram opens, once.
      expect(opened(opener.open(datagram)).packetNumber).toBe(1);
      expect(reasonOf(opener.open(datagram))).toBe('replayed');
    }

    /** What a flip must be refused as, from where it landed. */
    function expectedFlipReason(flipped: Buffer): DropReason {
      if (flipped.readUInt16BE(0) !== MAGIC) return 'bad_magic';
      if (flipped[2] !== FORMAT_VERSION) return 'bad_version';
      if (flipped[3] === 0) return 'plaintext_refused';
      if (flipped[3] !== key1.id) return 'unknown_key';
      const packetNumber = flipped.readBigUInt64BE(12);
      if (packetNumber === 0n || packetNumber > BigInt(Number.MAX_SAFE_INTEGER)) return 'too_old';
      return 'auth_failed';
    }
  });

  it('rejects every truncation of a sealed datagram', () => {
    const random = new SeededRandom(3);
    const datagram = new DatagramSealer([key1], randomIncarnation(random)).seal(randomBytes(random, 10));
    const opener = new DatagramOpener([key1], { maxDatagramBytes: MAX_DATAGRAM });
    for (let length = 0; length <= HEADER_BYTES + TAG_BYTES; length++) {
      const reason = reasonOf(opener.open(datagram.subarray(0, length)));
      // With the whole header and a tag's worth of bytes it is long enough to try, and fails the tag.
      expect({ length, reason }).toEqual({ length, reason: length < HEADER_BYTES + TAG_BYTES ? 'truncated' : 'auth_failed' });
    }
    for (let length = HEADER_BYTES + TAG_BYTES + 1; length < datagram.length; length++) {
      expect(reasonOf(opener.open(datagram.subarray(0, length)))).toBe('auth_failed');
    }
    const plainOpener = new DatagramOpener(undefined, { maxDatagramBytes: MAX_DATAGRAM });
    const plain = new DatagramSealer(undefined, 1n).seal(Buffer.alloc(0));
    for (let length = 0; length < HEADER_BYTES; length++) {
      expect(reasonOf(plainOpener.open(plain.subarray(0, length)))).toBe('truncated');
    }
    expect(opened(plainOpener.open(plain)).payload).toHaveLength(0);
  });

  it('rejects oversized datagrams before reading them', () => {
    const sealer = new DatagramSealer([key1], 9n);
    const opener = new DatagramOpener([key1], { maxDatagramBytes: MAX_DATAGRAM });
    const fits = sealer.seal(Buffer.alloc(MAX_DATAGRAM - HEADER_BYTES - TAG_BYTES));
    const tooBig = sealer.seal(Buffer.alloc(MAX_DATAGRAM - HEADER_BYTES - TAG_BYTES + 1));
    expect(fits).toHaveLength(MAX_DATAGRAM);
    expect(opened(opener.open(fits)).packetNumber).toBe(1);
    expect(reasonOf(opener.open(tooBig))).toBe('oversized');
    expect(reasonOf(opener.open(Buffer.alloc(MAX_DATAGRAM + 1, 0xff)))).toBe('oversized');
  });

  it('rejects replays, accepts reordering within the window, and rejects what is too old', () => {
    const sealer = new DatagramSealer([key1], 77n);
    const opener = new DatagramOpener([key1], { maxDatagramBytes: MAX_DATAGRAM, windowBits: 64 });
    const datagrams = Array.from({ length: 200 }, (_, i) => sealer.seal(Buffer.from(`payload ${i + 1}`)));
    const at = (packetNumber: number): Buffer => datagrams[packetNumber - 1]!;

    // Reordered delivery within the window: all accepted, each exactly once.
    for (const n of [3, 1, 2, 10, 5, 4, 64, 6]) expect(opened(opener.open(at(n))).packetNumber).toBe(n);
    for (const n of [3, 1, 2, 10, 5, 4, 64, 6]) expect(reasonOf(opener.open(at(n)))).toBe('replayed');
    expect(opened(opener.open(at(7))).payload.toString()).toBe('payload 7');

    // Moving the top to 100 leaves the window at [37, 100].
    expect(opened(opener.open(at(100))).packetNumber).toBe(100);
    expect(reasonOf(opener.open(at(36)))).toBe('too_old');
    expect(reasonOf(opener.open(at(8)))).toBe('too_old');
    expect(opened(opener.open(at(37))).packetNumber).toBe(37);
    expect(reasonOf(opener.open(at(64)))).toBe('replayed');
    expect(opened(opener.open(at(63))).packetNumber).toBe(63);

    // Two senders keep separate windows.
    const other = new DatagramSealer([key1], 78n);
    expect(opened(opener.open(other.seal(Buffer.from('x')))).packetNumber).toBe(1);
    expect(opener.trackedSenders).toBe(2);
  });

  it('rejects a datagram sealed with another cluster key: unknown_key, or auth_failed when the ids collide', () => {
    const opener = new DatagramOpener([key1], { maxDatagramBytes: MAX_DATAGRAM });
    const foreign = new DatagramSealer([key3], 5n).seal(Buffer.from('from another cluster'));
    expect(reasonOf(opener.open(foreign))).toBe('unknown_key');

    // A foreign key that happens to share key1's id (1 in 255) gets as far as the tag.
    const random = new SeededRandom(17);
    let twinBytes: Buffer;
    do twinBytes = randomBytes(random, 32);
    while (idOf(twinBytes) !== key1.id || twinBytes.equals(key1.key));
    const twin = clusterKeyFromBytes(twinBytes);
    const impostor = new DatagramSealer([twin], 5n).seal(Buffer.from('same id, other key'));
    expect(impostor[3]).toBe(key1.id);
    expect(reasonOf(opener.open(impostor))).toBe('auth_failed');
    expect(opener.trackedSenders).toBe(0);
  });

  it('supports key rotation: the first key seals, every key opens', () => {
    const rotatedSealer = new DatagramSealer([key2, key1], 11n);
    const oldSealer = new DatagramSealer([key1, key2], 12n);
    const rotatedOpener = new DatagramOpener([key1, key2], { maxDatagramBytes: MAX_DATAGRAM });
    const newOpener = new DatagramOpener([key2, key1], { maxDatagramBytes: MAX_DATAGRAM });
    const oldOnly = new DatagramOpener([key1], { maxDatagramBytes: MAX_DATAGRAM });

    const fromRotated = rotatedSealer.seal(Buffer.from('sealed with K2'));
    const fromOld = oldSealer.seal(Buffer.from('sealed with K1'));
    expect(fromRotated[3]).toBe(key2.id);
    expect(fromOld[3]).toBe(key1.id);
    // Each opener decrypts in place: each gets a copy, as each socket would.
    const copy = (datagram: Buffer) => Buffer.from(datagram);
    expect(opened(rotatedOpener.open(copy(fromRotated))).payload.toString()).toBe('sealed with K2');
    expect(opened(rotatedOpener.open(copy(fromOld))).payload.toString()).toBe('sealed with K1');
    expect(opened(newOpener.open(copy(fromRotated))).payload.toString()).toBe('sealed with K2');
    expect(opened(newOpener.open(copy(fromOld))).payload.toString()).toBe('sealed with K1');
    expect(reasonOf(oldOnly.open(copy(fromRotated)))).toBe('unknown_key');
    expect(opened(oldOnly.open(fromOld)).payload.toString()).toBe('sealed with K1');
  });

  it('opens in place: the payload is the memory of the datagram, decrypted', () => {
    const sealer = new DatagramSealer([key1], 13n);
    const opener = new DatagramOpener([key1], { maxDatagramBytes: MAX_DATAGRAM });
    const payload = Buffer.from('the bytes of a delta, sealed');
    const datagram = sealer.seal(payload);
    expect(datagram.subarray(HEADER_BYTES, HEADER_BYTES + payload.length).equals(payload)).toBe(false);
    const result = opened(opener.open(datagram));
    expect(result.payload.equals(payload)).toBe(true);
    expect(result.payload.buffer).toBe(datagram.buffer);
    expect(result.payload.byteOffset).toBe(datagram.byteOffset + HEADER_BYTES);
    expect(datagram.subarray(HEADER_BYTES, HEADER_BYTES + payload.length).equals(payload)).toBe(true);
  });

  it('refuses 10,000 random garbage datagrams without throwing, and tracks no sender for them', () => {
    const random = new SeededRandom(4242);
    const maxSenders = 8;
    const opener = new DatagramOpener([key1, key2], { maxDatagramBytes: MAX_DATAGRAM, maxSenders });
    const sealer = new DatagramSealer([key1], randomIncarnation(random));
    const genuine = Array.from({ length: 16 }, () => sealer.seal(randomBytes(random, random.below(100))));
    expect(opened(opener.open(genuine[0]!)).packetNumber).toBe(1);
    const reasons = new Map<string, number>();
    const thrown: unknown[] = [];
    let maxTracked = 0;
    for (let i = 0; i < 10_000; i++) {
      const datagram = garbage(random, genuine);
      try {
        const reason = reasonOf(opener.open(datagram));
        reasons.set(reason, (reasons.get(reason) ?? 0) + 1);
      } catch (err) {
        thrown.push(err);
      }
      maxTracked = Math.max(maxTracked, opener.trackedSenders);
    }
    expect(thrown).toEqual([]);
    expect(reasons.get('ok')).toBeUndefined();
    expect(maxTracked).toBe(1);
    // The flood reached every check, the tag included.
    const everyCheck: DropReason[] = ['oversized', 'truncated', 'bad_magic', 'bad_version', 'unknown_key', 'plaintext_refused', 'auth_failed', 'replayed', 'too_old'];
    expect(everyCheck.filter((reason) => !reasons.has(reason))).toEqual([]);
    // The genuine sender was neither evicted nor disturbed.
    expect(opener.trackedSenders).toBe(1);
    expect(opener.evictedSenders).toBe(0);
    expect(opened(opener.open(genuine[1]!)).packetNumber).toBe(2);
  });

  it('opens a stream from one sender, and from a sender forgotten and heard again, with maxSenders 1', () => {
    // Keys that refuse to work once disposed, as the OpenSSL engine's do.
    const disposing: GcmEngine = (secret) => {
      const key = nodeGcm(secret);
      let disposed = false;
      return {
        seal: (...args) => key.seal(...args),
        openInPlace: (...args) => {
          if (disposed) throw new Error('the key was disposed');
          return key.openInPlace(...args);
        },
        dispose: () => (disposed = true),
      };
    };
    const opener = new DatagramOpener([key1], { maxDatagramBytes: MAX_DATAGRAM, maxSenders: 1, gcm: disposing });
    const a = new DatagramSealer([key1], 0x0102030405060708n);
    // Differs from a only in the incarnation's low word, then only in its high word.
    const b = new DatagramSealer([key1], 0x0102030405060709n);
    const c = new DatagramSealer([key1], 0x0102030505060708n);
    for (let i = 1; i <= 3; i++) {
      const result = opened(opener.open(a.seal(Buffer.from([i]))));
      expect([result.incarnation, result.packetNumber, [...result.payload]]).toEqual([0x0102030405060708n, i, [i]]);
    }
    for (const [sealer, incarnation] of [[b, 0x0102030405060709n], [a, 0x0102030405060708n], [c, 0x0102030505060708n], [a, 0x0102030405060708n]] as const) {
      const result = opened(opener.open(sealer.seal(Buffer.from('x'))));
      expect(result.incarnation).toBe(incarnation);
      expect(opener.trackedSenders).toBe(1);
    }
    expect(opener.evictedSenders).toBe(4);
    // The one remembered keeps its window: its datagram again is a replay.
    const again = a.seal(Buffer.from('y'));
    opened(opener.open(Buffer.from(again)));
    expect(reasonOf(opener.open(again))).toBe('replayed');
  });

  it('keeps at most maxSenders replay windows, evicting the least recently heard', () => {
    const maxSenders = 8;
    const opener = new DatagramOpener([key1], { maxDatagramBytes: MAX_DATAGRAM, maxSenders });
    const sealers = Array.from({ length: 20 }, (_, i) => new DatagramSealer([key1], BigInt(1000 + i)));
    const first = sealers[0]!.seal(Buffer.from('a'));
    expect(opened(opener.open(first)).packetNumber).toBe(1);
    for (let round = 0; round < 3; round++) {
      for (const sealer of sealers.slice(1)) {
        opened(opener.open(sealer.seal(Buffer.from('b'))));
        // Sender 0 keeps talking, so it stays among the most recent.
        opened(opener.open(sealers[0]!.seal(Buffer.from('c'))));
        expect(opener.trackedSenders).toBeLessThanOrEqual(maxSenders);
      }
    }
    expect(opener.trackedSenders).toBe(maxSenders);
    expect(opener.evictedSenders).toBeGreaterThan(0);
    expect(reasonOf(opener.open(first))).toBe('replayed');
  });

  it('keeps memory bounded without keys too, where any header creates a window', () => {
    const random = new SeededRandom(8);
    const maxSenders = 16;
    const opener = new DatagramOpener(undefined, { maxDatagramBytes: MAX_DATAGRAM, maxSenders });
    for (let i = 0; i < 2000; i++) {
      const datagram = Buffer.alloc(HEADER_BYTES + random.below(30));
      datagram.writeUInt16BE(MAGIC, 0);
      datagram[2] = FORMAT_VERSION;
      datagram.writeBigUInt64BE(randomIncarnation(random), 4);
      datagram.writeUInt32BE(1 + random.below(1000), 16);
      opened(opener.open(datagram));
      expect(opener.trackedSenders).toBeLessThanOrEqual(maxSenders);
    }
    expect(opener.trackedSenders).toBe(maxSenders);
  });

  it('refuses bad options', () => {
    expect(() => new DatagramOpener([], { maxDatagramBytes: MAX_DATAGRAM })).toThrow(RangeError);
    expect(() => new DatagramOpener([key1], { maxDatagramBytes: HEADER_BYTES + TAG_BYTES - 1 })).toThrow(RangeError);
    expect(() => new DatagramOpener([key1], { maxDatagramBytes: MAX_DATAGRAM, maxSenders: 0 })).toThrow(RangeError);
    expect(() => new DatagramOpener([key1], { maxDatagramBytes: MAX_DATAGRAM, windowBits: 100 })).toThrow(RangeError);
    expect(() => new DatagramOpener([key1, key1], { maxDatagramBytes: MAX_DATAGRAM })).toThrow(RangeError);
  });
});

/**
 * One hostile datagram: pure noise, a plausible header over noise, a genuine datagram
 * corrupted or cut, a replay, or something too long.
 */
function garbage(random: SeededRandom, genuine: readonly Buffer[]): Buffer {
  const kind = random.below(10);
  if (kind === 0) return randomBytes(random, random.below(64));
  if (kind === 1) return randomBytes(random, MAX_DATAGRAM + 1 + random.below(100));
  if (kind <= 5) {
    const datagram = randomBytes(random, HEADER_BYTES + random.below(200));
    datagram.writeUInt16BE(MAGIC, 0);
    const pick = random.below(20);
    datagram[2] = pick === 0 ? random.below(256) : FORMAT_VERSION;
    datagram[3] = pick === 1 ? 0 : pick < 5 ? random.below(256) : pick < 12 ? key1.id : key2.id;
    if (random.below(4) !== 0) datagram.writeUInt32BE(random.below(0x200000), 12); // mostly valid packet numbers
    if (random.below(20) === 0) datagram.writeBigUInt64BE(0n, 12);
    return datagram;
  }
  const source = genuine[random.below(genuine.length)]!;
  if (source === genuine[0] && random.below(2) === 0) return Buffer.from(source); // a replay
  const datagram = Buffer.from(source);
  if (kind === 6) return datagram.subarray(0, random.below(datagram.length));
  const flips = 1 + random.below(4);
  for (let f = 0; f < flips; f++) {
    // Mostly past the magic and version, so corruption reaches the key and the tag.
    const at = random.below(3) === 0 ? random.below(datagram.length) : 3 + random.below(datagram.length - 3);
    datagram[at] ^= 1 + random.below(255);
  }
  return datagram;
}
