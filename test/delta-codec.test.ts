/**
 * The delta codec: Change ⇄ Delta through the generated code, and Data datagrams around
 * already encoded deltas decoding exactly as the generated decoder reads them (also when
 * their sealer padded them).
 */
import { Data, Datagram, Delta, DeltaKind, Heartbeat } from '../src/gen/baton/v1/wire';
import { DATA_TAGS, DELTA_TAGS, decodeDelta, deltaKey, encodeData, encodeDelta, readDataDatagram, readDelta, toDelta, type Change } from '../src/wire/delta-codec';
import { DatagramOpener, DatagramSealer, MAX_PADDING, MIN_PADDING } from '../src/wire/datagram-codec';
import { encodeWith } from '../src/wire/proto-writer';
import { SeededRandom } from '../src/store/random';
import { varint } from './support/fuzz-inputs';
// As in the sidecar: the generated decoders refuse text that is not UTF-8.
import '../src/wire/strict-utf8';

const session = { id: 'sess-1', owner: 'node-a', epoch: 3, expiresAt: 1_700_000_060_000.7, ttlMs: 60_000 };

describe('delta codec', () => {
  it('writes by hand the bytes the generated encoder writes, for every kind and edge of a field', () => {
    const random = new SeededRandom(1807);
    const texts = ['', 'a', 'node-b', 'sess-ü-€-😀', 'x'.repeat(200)];
    const numbers = [0, 1, 127, 128, 300, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1];
    const pick = <T>(list: readonly T[]): T => list[random.below(list.length)]!;
    let handWritten = 0;
    for (let i = 0; i < 3000; i++) {
      const stamp = {
        id: pick(texts) || 's',
        owner: pick(texts),
        epoch: pick([...numbers, 2 ** 32 - 1]),
        expiresAt: pick([...numbers, 1_700_000_060_000.7, -5, 2 ** 60]),
        ttlMs: pick([0, 1, 60_000, 2 ** 32 - 1, 2 ** 32, 1.5]),
      };
      const writer = pick([undefined, 'node-a', ...texts]);
      const epoch = pick([undefined, ...numbers]);
      const version = pick([...numbers, 0.5]);
      const change: Change = pick<Change>([
        { kind: 'put', name: pick(texts), value: Buffer.alloc(pick([0, 1, 1024, 5000]), i), version, writer, epoch },
        { kind: 'delete_part', name: pick(texts), version, writer, epoch },
        { kind: 'delete_session', version },
        { kind: 'touch' },
        { kind: 'claim', parts: [pick(texts), pick(texts)] },
      ]);
      const now = pick([0, 1_700_000_000_000.4, -1, 2 ** 53 - 1]);
      let generated: Uint8Array | undefined;
      try {
        generated = encodeWith((w) => Delta.encode(toDelta(stamp, change, 'node-a', now), w));
      } catch {
        generated = undefined; // a number no int64 holds: both refuse it
      }
      if (generated === undefined) {
        expect(() => encodeDelta(stamp, change, 'node-a', now)).toThrow();
        continue;
      }
      expect(Buffer.from(encodeDelta(stamp, change, 'node-a', now)).equals(Buffer.from(generated))).toBe(true);
      if (change.kind !== 'claim' && Number.isInteger(version) && now >= 0 && stamp.expiresAt >= 0 && stamp.expiresAt < 2 ** 53) handWritten++;
    }
    expect(handWritten).toBeGreaterThan(500);
  });

  it('round-trips every kind of change, filling writer and epoch of part changes', () => {
    const changes: Change[] = [
      { kind: 'put', name: 'cart', value: Buffer.from('v1'), version: 10 },
      { kind: 'put', name: 'auth', value: Buffer.from('v2'), version: 11, writer: 'node-c', epoch: 2 },
      { kind: 'delete_part', name: 'tls', version: 12 },
      { kind: 'delete_session', version: 13 },
      { kind: 'touch' },
      { kind: 'claim', parts: ['cart', 'auth', 'tls'] },
      { kind: 'claim', parts: [] },
    ];
    const decoded = changes.map((c) => decodeDelta(encodeDelta(session, c, 'node-a', 1_700_000_000_000.4), 'node-a')!);
    expect(decoded.map((d) => d.change)).toEqual([
      { kind: 'put', name: 'cart', value: Buffer.from('v1'), version: 10, writer: 'node-a', epoch: 3 },
      { kind: 'put', name: 'auth', value: Buffer.from('v2'), version: 11, writer: 'node-c', epoch: 2 },
      { kind: 'delete_part', name: 'tls', version: 12, writer: 'node-a', epoch: 3 },
      { kind: 'delete_session', version: 13 },
      { kind: 'touch' },
      { kind: 'claim', parts: ['cart', 'auth', 'tls'] },
      { kind: 'claim', parts: [] },
    ]);
    expect(decoded[0]).toMatchObject({ sessionId: 'sess-1', owner: 'node-a', epoch: 3, expiresAt: 1_700_000_060_000, ttlMs: 60_000, writtenAt: 1_700_000_000_000 });
  });

  it('leaves the writer off the wire when it is the sender', () => {
    const bytes = encodeDelta(session, { kind: 'put', name: 'p', value: Buffer.from('x'), version: 1, writer: 'node-a' }, 'node-a', 0);
    expect(Delta.decode(bytes).writerNodeId).toBe('');
  });

  it('reads deltas that make no valid change as malformed (change undefined), and garbage as undefined', () => {
    const base = Delta.fromPartial({ sessionId: 's', ownerNodeId: '' });
    expect(readDelta({ ...base, kind: DeltaKind.DELTA_KIND_PUT_PART, partName: '', version: 1n }, 'x').change).toBeUndefined();
    expect(readDelta({ ...base, kind: DeltaKind.DELTA_KIND_DELETE_PART, partName: 'p', version: 0n }, 'x').change).toBeUndefined();
    expect(readDelta({ ...base, kind: DeltaKind.DELTA_KIND_DELETE_SESSION, version: 0n }, 'x').change).toBeUndefined();
    expect(readDelta({ ...base, kind: DeltaKind.DELTA_KIND_UNSPECIFIED }, 'x').change).toBeUndefined();
    expect(readDelta(base, 'x').owner).toBe('x');
    expect(decodeDelta(Buffer.from([0xff, 0xff, 0xff]), 'x')).toBeUndefined();
  });

  it('reads an expiry beyond what a number holds exactly as one it can send again', () => {
    const INT64_MAX = (1n << 63n) - 1n;
    for (const expiresAtUnixMs of [INT64_MAX, -INT64_MAX - 1n]) {
      const read = readDelta(Delta.fromPartial({ sessionId: 's', kind: DeltaKind.DELTA_KIND_TOUCH, expiresAtUnixMs, writtenAtUnixMs: expiresAtUnixMs }), 'x');
      expect(Math.abs(read.expiresAt)).toBeLessThanOrEqual(Number.MAX_SAFE_INTEGER);
      expect(Math.abs(read.writtenAt)).toBeLessThanOrEqual(Number.MAX_SAFE_INTEGER);
      // What this node sends again (as the session's new owner, say) must encode.
      const again = decodeDelta(encodeDelta({ ...session, expiresAt: read.expiresAt }, { kind: 'touch' }, 'node-a', 0), 'node-a')!;
      expect(again.expiresAt).toBe(read.expiresAt);
    }
  });

  it('keys part changes by part and session-level changes by kind', () => {
    expect(deltaKey('s', { kind: 'put', name: 'a', value: Buffer.alloc(0), version: 1 })).toBe(deltaKey('s', { kind: 'delete_part', name: 'a', version: 2 }));
    expect(deltaKey('s', { kind: 'touch' })).not.toBe(deltaKey('s', { kind: 'delete_session', version: 1 }));
    expect(deltaKey('s', { kind: 'touch' })).not.toBe(deltaKey('s', { kind: 'put', name: 'touch', value: Buffer.alloc(0), version: 1 }));
  });

  it('takes its Delta field tags from the generated encoder (wire.proto numbers)', () => {
    expect(DELTA_TAGS).toEqual({ sessionId: 10, kind: 16, partName: 26, value: 34, version: 40, writerNodeId: 50, expiresAtUnixMs: 56, ttlMs: 64, ownerNodeId: 74, epoch: 80, writtenAtUnixMs: 88, claimedParts: 98 });
  });

  it('takes its Data field tags from the generated encoder (wire.proto numbers)', () => {
    expect(DATA_TAGS).toEqual({ senderNodeId: 10, data: 18, targetNodeId: 10, seq: 16, deltas: 26, fragment: 34, ackRequested: 40, retransmit: 48, deltaId: 8, index: 16, count: 24, chunk: 34 });
  });

  it('wraps encoded deltas into Data that the generated decoder reads back, over seeded random packets', () => {
    const random = new SeededRandom(7);
    for (let i = 0; i < 200; i++) {
      const deltas = Array.from({ length: random.below(4) }, (_, j) =>
        encodeDelta({ ...session, id: `s${i}-${j}` }, { kind: 'put', name: 'p', value: Buffer.alloc(random.below(300), j), version: 1 + random.below(1000) }, 'node-a', 5),
      );
      const deltaId = random.below(3) === 0 ? 2 ** 45 + random.below(1 << 30) : random.below(1 << 30);
      const fragment = random.below(2) === 0 ? undefined : { deltaId, index: random.below(3), count: 3, chunk: Buffer.alloc(random.below(200), 9) };
      const channel = ['', 'node-b', 'nœud-ü'][random.below(3)]!;
      const seq = random.below(3) === 0 ? 2 ** 52 + random.below(1_000_000) : 1 + random.below(1_000_000);
      const ack = random.below(2) === 0;
      const retransmit = random.below(2) === 0;
      const datagram = Datagram.decode(encodeData('node-a', channel, { seq, deltas, fragment, retransmit }, ack));
      expect(datagram.senderNodeId).toBe('node-a');
      if (datagram.body?.$case !== 'data') throw new Error('not data');
      const data = datagram.body.data;
      expect(data.targetNodeId).toBe(channel);
      expect(data.seq).toBe(BigInt(seq));
      expect(data.deltas).toEqual(deltas.map((d) => Delta.decode(d)));
      expect(data.ackRequested).toBe(ack);
      expect(data.retransmit).toBe(retransmit);
      if (fragment === undefined) expect(data.fragment).toBeUndefined();
      else expect(data.fragment).toEqual({ ...fragment, deltaId: BigInt(fragment.deltaId), chunk: Buffer.from(fragment.chunk) });
    }
  });
});

describe('reading Data datagrams by hand', () => {
  type Read = ReturnType<typeof readDataDatagram> | 'malformed';
  /** What the generated decoder and readDelta make of a datagram, in readDataDatagram's terms. */
  function generated(bytes: Uint8Array): Read {
    let datagram: Datagram;
    try {
      datagram = Datagram.decode(bytes);
    } catch {
      return 'malformed';
    }
    if (datagram.body?.$case !== 'data') return 'other';
    const d = datagram.body.data;
    const sender = datagram.senderNodeId;
    return { sender, data: { targetNodeId: d.targetNodeId, seq: d.seq, deltas: d.deltas.map((x) => readDelta(x, sender)), fragment: d.fragment, ackRequested: d.ackRequested, retransmit: d.retransmit } };
  }
  function byHand(bytes: Uint8Array): Read {
    return readDataDatagram(bytes) ?? 'malformed';
  }

  const texts = ['', 'a', 'node-b', 'nœud-ü', '会话-7', 'x'.repeat(100), '\uFEFFbom', 'emoji-😀'];
  function randomDelta(random: SeededRandom): Delta {
    const pick = <T>(list: readonly T[]): T => list[random.below(list.length)]!;
    const int64 = (): bigint => pick([0n, 1n, 127n, 128n, 1_700_000_000_000n, 2n ** 53n - 1n, 2n ** 53n + 1n, 2n ** 62n, -1n, -1_700_000_000_000n, (1n << 63n) - 1n, -(1n << 63n)]);
    const uint64 = (): bigint => pick([0n, 1n, 300n, 1_700_000_000_000n * 1024n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 60n + 7n, (1n << 64n) - 1n]);
    return {
      sessionId: pick(texts),
      kind: pick([0, 1, 2, 3, 4, 5, 6, 99, -3]) as DeltaKind,
      partName: pick(texts),
      value: Buffer.alloc(pick([0, 1, 200, 1024]), random.below(256)),
      version: uint64(),
      writerNodeId: pick(texts),
      expiresAtUnixMs: int64(),
      ttlMs: pick([0, 1, 60_000, 2 ** 32 - 1]),
      ownerNodeId: pick(texts),
      epoch: uint64(),
      writtenAtUnixMs: int64(),
      claimedParts: pick([[], [], ['basket'], ['a', 'login', 'x'.repeat(70)], [''], ['nœud-ü', 'emoji-😀']]),
    };
  }
  function randomDatagram(random: SeededRandom): Uint8Array {
    const pick = <T>(list: readonly T[]): T => list[random.below(list.length)]!;
    const deltas = Array.from({ length: random.below(4) }, () => randomDelta(random));
    const fragment = random.below(3) === 0 ? { deltaId: pick([1n, 2n ** 45n, (1n << 64n) - 1n]), index: random.below(5), count: random.below(5), chunk: Buffer.alloc(random.below(100), 3) } : undefined;
    const data = { targetNodeId: pick(['', 'node-b', '#1', 'nœud-ü']), seq: pick([0n, 1n, 2n ** 52n, 2n ** 60n]), deltas, fragment, ackRequested: random.below(2) === 0, retransmit: random.below(2) === 0 };
    if (random.below(2) === 0) {
      // As baton sends it: deltas encoded once, Data written around them by hand.
      const safe = deltas.map((d) => ({ ...d, version: d.version % 2n ** 50n, epoch: d.epoch % 2n ** 50n, expiresAtUnixMs: d.expiresAtUnixMs < 0n ? 0n : d.expiresAtUnixMs % 2n ** 50n, writtenAtUnixMs: d.writtenAtUnixMs < 0n ? 0n : d.writtenAtUnixMs % 2n ** 50n }));
      const encoded = safe.map((d) => encodeWith((w) => Delta.encode(d, w)));
      const packet = { seq: Number(data.seq % 2n ** 50n) || 1, deltas: encoded, fragment: fragment === undefined ? undefined : { ...fragment, deltaId: Number(fragment.deltaId % 2n ** 50n) }, retransmit: data.retransmit };
      return encodeData(pick(['node-a', 'nœud-ü']), data.targetNodeId, packet, data.ackRequested);
    }
    return encodeWith((w) => Datagram.encode({ senderNodeId: pick(['node-a', '', 'nœud-ü']), body: { $case: 'data', data } }, w));
  }
  /** Appends unknown fields (numbers 20-30, every skippable wire type) to an encoded message. */
  function withUnknownFields(bytes: Uint8Array, random: SeededRandom): Buffer {
    const extra: number[] = [];
    for (let i = 0; i < 1 + random.below(3); i++) {
      const field = 20 + random.below(10);
      const wireType = [0, 1, 2, 5][random.below(4)]!;
      extra.push(...varint((field << 3) | wireType));
      if (wireType === 0) extra.push(0xff, 0x01);
      else if (wireType === 1) extra.push(1, 2, 3, 4, 5, 6, 7, 8);
      else if (wireType === 2) extra.push(2, 9, 9);
      else extra.push(1, 2, 3, 4);
    }
    return Buffer.concat([Buffer.from(bytes), Buffer.from(extra.map((b) => b & 0xff))]);
  }

  it('answers what the generated decoder answers for every Data datagram, also with unknown fields inside', () => {
    const random = new SeededRandom(23);
    for (let i = 0; i < 2000; i++) {
      const bytes = randomDatagram(random);
      const expected = generated(bytes);
      expect(typeof expected).toBe('object');
      expect(byHand(bytes)).toEqual(expected);
      // Unknown fields inside Data: skipped by both.
      const datagram = Datagram.decode(bytes);
      if (datagram.body?.$case !== 'data') throw new Error('not data');
      const dataBytes = withUnknownFields(encodeWith((w) => Data.encode((datagram.body as { data: Data }).data, w)), random);
      const wrapped = Buffer.concat([Buffer.from([DATA_TAGS.senderNodeId, 1, 0x6e, DATA_TAGS.data]), Buffer.from(varint(dataBytes.length)), dataBytes]);
      expect(byHand(wrapped)).toEqual(generated(wrapped));
    }
  });

  it('reads a datagram padded by its sealer (field 15) as it reads it unpadded, as the generated decoder does', () => {
    const random = new SeededRandom(43);
    const sealer = new DatagramSealer(undefined, 5n);
    const opener = new DatagramOpener(undefined, { maxDatagramBytes: 65_507 });
    for (let i = 0; i < 500; i++) {
      const bytes = randomDatagram(random);
      const length = sealer.sealedLength(bytes.length) + MIN_PADDING + random.below(MAX_PADDING - MIN_PADDING + 1);
      const out = Buffer.alloc(length);
      sealer.sealInto(bytes, out, 0, length);
      const open = opener.open(out);
      if (!open.ok) throw new Error(open.reason);
      expect(open.payload.length).toBeGreaterThan(bytes.length);
      expect(byHand(open.payload)).toEqual(byHand(bytes));
      expect(generated(open.payload)).toEqual(generated(bytes));
    }
  });

  it('refuses a delta whose text is not UTF-8, as the generated decoder does', () => {
    const delta = encodeWith((w) => Delta.encode(randomDelta(new SeededRandom(3)), w));
    const bytes = Buffer.from(encodeData('node-a', '', { seq: 1, deltas: [Buffer.concat([Buffer.from([DELTA_TAGS.sessionId, 2, 0xc3, 0x28]), delta])], fragment: undefined, retransmit: false }, false));
    expect(generated(bytes)).toBe('malformed');
    expect(byHand(bytes)).toBe('malformed');
    // The same bytes with valid text are read by both, alike.
    bytes[bytes.indexOf(0xc3)] = 0x61;
    expect(byHand(bytes)).toEqual(generated(bytes));
    expect(typeof byHand(bytes)).toBe('object');
  });

  it('leaves every other body, and top-level fields it does not know, to the generated decoder', () => {
    const heartbeat = encodeWith((w) => Datagram.encode({ senderNodeId: 'node-a', body: { $case: 'heartbeat', heartbeat: Heartbeat.fromPartial({}) } }, w));
    expect(byHand(heartbeat)).toBe('other');
    expect(byHand(encodeWith((w) => Datagram.encode({ senderNodeId: 'node-a', body: undefined }, w)))).toBe('other');
    const data = encodeData('node-a', '', { seq: 1, deltas: [], fragment: undefined, retransmit: false }, false);
    expect(byHand(withUnknownFields(data, new SeededRandom(1)))).toBe('other');
  });

  it('never throws on damaged datagrams, and whatever it reads the generated decoder reads the same', () => {
    const random = new SeededRandom(29);
    let read = 0;
    for (let i = 0; i < 4000; i++) {
      const bytes = Buffer.from(randomDatagram(random));
      const damaged = random.below(3) === 0 ? bytes.subarray(0, random.below(bytes.length + 1)) : bytes;
      for (let j = 0; j < 1 + random.below(3); j++) if (damaged.length > 0) damaged[random.below(damaged.length)] = random.below(256);
      let actual: Read;
      try {
        actual = byHand(damaged);
      } catch (err) {
        throw new Error(`threw on ${damaged.toString('hex')}: ${String(err)}`);
      }
      if (actual === 'malformed' || actual === 'other') continue;
      read++;
      expect(actual).toEqual(generated(damaged));
    }
    // Most damage lands in values and text, which still read: the comparison is exercised.
    expect(read).toBeGreaterThan(1000);
  });
});
