/**
 * The delta codec: Change ⇄ Delta through the generated code, and Data datagrams around
 * already encoded deltas decoding exactly as the generated decoder reads them.
 */
import { Datagram, Delta, DeltaKind } from '../src/gen/baton/v1/wire';
import { DATA_TAGS, decodeDelta, deltaKey, encodeData, encodeDelta, readDelta, type Change } from '../src/wire/delta-codec';
import { SeededRandom } from '../src/store/random';

const session = { id: 'sess-1', owner: 'node-a', epoch: 3, expiresAt: 1_700_000_060_000.7, ttlMs: 60_000 };

describe('delta codec', () => {
  it('round-trips every kind of change, filling writer and epoch of part changes', () => {
    const changes: Change[] = [
      { kind: 'put', name: 'cart', value: Buffer.from('v1'), version: 10 },
      { kind: 'put', name: 'auth', value: Buffer.from('v2'), version: 11, writer: 'node-c', epoch: 2 },
      { kind: 'delete_part', name: 'tls', version: 12 },
      { kind: 'delete_session', version: 13 },
      { kind: 'touch' },
      { kind: 'claim' },
    ];
    const decoded = changes.map((c) => decodeDelta(encodeDelta(session, c, 'node-a', 1_700_000_000_000.4), 'node-a')!);
    expect(decoded.map((d) => d.change)).toEqual([
      { kind: 'put', name: 'cart', value: Buffer.from('v1'), version: 10, writer: 'node-a', epoch: 3 },
      { kind: 'put', name: 'auth', value: Buffer.from('v2'), version: 11, writer: 'node-c', epoch: 2 },
      { kind: 'delete_part', name: 'tls', version: 12, writer: 'node-a', epoch: 3 },
      { kind: 'delete_session', version: 13 },
      { kind: 'touch' },
      { kind: 'claim' },
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
