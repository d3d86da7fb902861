/**
 * In-process timing of the fan-out hot path's encoding: a write's deltas go to each of
 * BENCH_FANOUT channels (secondaries), packed into Data datagrams. Two ways:
 *   wrapped    (what the engine does) each delta is encoded once (encodeDelta, written by
 *              hand), and every channel's datagram wraps those bytes (encodeData);
 *   generated  every channel's datagram is encoded whole by the generated Datagram encoder
 *              from Delta objects, so each delta is encoded again per channel.
 * Shapes: 1 KiB and 256 B values, one delta per datagram (1,400-byte datagrams) and 48 per
 * datagram (60,000-byte datagrams). Prints deltas/s per way and the ratio; median of
 * BENCH_ROUNDS rounds of BENCH_DELTAS deltas. A figure to read, not a test.
 * The receiving side too, same shapes: a Data datagram read by hand (readDataDatagram, what
 * replicas do) against the generated decoder followed by readDelta per delta. And sealing
 * and opening datagrams of 1,400 and 60,000 bytes with AES-256-GCM: node:crypto against
 * OpenSSL contexts kept per key (sidecar/net/openssl-gcm.ts, what the sidecar uses); the
 * opener decrypts in place, so each round opens datagrams sealed for it.
 *
 * Run: npx tsc -p tsconfig.build.json && node dist/bench/delta-codec.js
 */
import { Datagram } from '../src/gen/baton/v1/wire';
import { encodeData, encodeDelta, readDataDatagram, readDelta, toDelta, type Change, type SessionStamp } from '../src/wire/delta-codec';
import { encodeWith } from '../src/wire/proto-writer';
import { DatagramOpener, DatagramSealer, nodeGcm, type GcmEngine } from '../src/wire/datagram-codec';
import { loadOpensslGcm } from '../sidecar/net/openssl-gcm';
import { randomBytes } from 'node:crypto';

const FANOUT = Number(process.env.BENCH_FANOUT ?? 3);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const DELTAS = Number(process.env.BENCH_DELTAS ?? 200_000);
const SELF = 'node-a';
const CHANNELS = Array.from({ length: FANOUT }, (_, i) => `node-${String.fromCharCode(98 + i)}`);

function sessions(valueBytes: number): { session: SessionStamp; change: Change }[] {
  return Array.from({ length: 1024 }, (_, i) => ({
    session: { id: `session-${i.toString(16).padStart(24, '0')}`, owner: SELF, epoch: 1, expiresAt: 1_800_000_000_000, ttlMs: 1_800_000 },
    change: { kind: 'put', name: 'cart', value: Buffer.alloc(valueBytes, i & 0xff), version: 1_000_000 + i },
  }));
}

/** Returns total bytes produced (so the work cannot be optimised away). */
function wrapped(input: ReturnType<typeof sessions>, perPacket: number, now: number): number {
  let bytes = 0;
  let seq = 1;
  for (let i = 0; i < DELTAS; i += perPacket) {
    const deltas: Uint8Array[] = [];
    for (let j = 0; j < perPacket; j++) {
      const { session, change } = input[(i + j) & 1023]!;
      deltas.push(encodeDelta(session, change, SELF, now));
    }
    for (const channel of CHANNELS) bytes += encodeData(SELF, channel, { seq: seq, deltas, fragment: undefined, retransmit: false }, false).length;
    seq++;
  }
  return bytes;
}

function generated(input: ReturnType<typeof sessions>, perPacket: number, now: number): number {
  let bytes = 0;
  let seq = 1;
  for (let i = 0; i < DELTAS; i += perPacket) {
    const deltas = [];
    for (let j = 0; j < perPacket; j++) {
      const { session, change } = input[(i + j) & 1023]!;
      deltas.push(toDelta(session, change, SELF, now));
    }
    for (const channel of CHANNELS) {
      const data = { targetNodeId: channel, seq: BigInt(seq), deltas, fragment: undefined, ackRequested: false, retransmit: false };
      bytes += encodeWith((w) => Datagram.encode({ senderNodeId: SELF, body: { $case: 'data', data } }, w)).length;
    }
    seq++;
  }
  return bytes;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

function rate(run: () => number): number {
  const rates: number[] = [];
  run(); // warm-up
  for (let r = 0; r < ROUNDS; r++) {
    const start = process.hrtime.bigint();
    run();
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    rates.push(DELTAS / seconds);
  }
  return median(rates);
}

const now = 1_700_000_000_000;
console.log(`fan-out ${FANOUT}, ${DELTAS} deltas per round, median of ${ROUNDS} rounds (deltas written/s; each goes to ${FANOUT} channels)`);
for (const valueBytes of [1024, 256]) {
  const input = sessions(valueBytes);
  for (const perPacket of [1, 48]) {
    const a = rate(() => wrapped(input, perPacket, now));
    const b = rate(() => generated(input, perPacket, now));
    console.log(
      `${String(valueBytes).padStart(4)} B values, ${String(perPacket).padStart(2)} per datagram: wrapped ${Math.round(a).toLocaleString('en')}/s, generated ${Math.round(b).toLocaleString('en')}/s, wrapped/generated ${(a / b).toFixed(2)}×`,
    );
  }
}

/** Reads `datagram` (carrying `perPacket` deltas) DELTAS / perPacket times; returns deltas read. */
function readByHand(datagram: Uint8Array, perPacket: number): number {
  let read = 0;
  for (let i = 0; i < DELTAS; i += perPacket) {
    const got = readDataDatagram(datagram);
    if (got === undefined || got === 'other') throw new Error('the datagram did not read');
    read += got.data.deltas.length;
  }
  return read;
}

function readGenerated(datagram: Uint8Array, perPacket: number): number {
  let read = 0;
  for (let i = 0; i < DELTAS; i += perPacket) {
    const got = Datagram.decode(datagram);
    if (got.body?.$case !== 'data') throw new Error('not data');
    for (const delta of got.body.data.deltas) if (readDelta(delta, got.senderNodeId).change !== undefined) read++;
  }
  return read;
}

console.log(`\nreceiving: deltas read/s from Data datagrams, median of ${ROUNDS} rounds`);
for (const valueBytes of [1024, 256]) {
  const input = sessions(valueBytes);
  for (const perPacket of [1, 48]) {
    const deltas = input.slice(0, perPacket).map(({ session, change }) => encodeDelta(session, change, SELF, now));
    const datagram = encodeData(SELF, '', { seq: 7, deltas, fragment: undefined, retransmit: false }, false);
    const a = rate(() => readByHand(datagram, perPacket));
    const b = rate(() => readGenerated(datagram, perPacket));
    console.log(
      `${String(valueBytes).padStart(4)} B values, ${String(perPacket).padStart(2)} per datagram: by hand ${Math.round(a).toLocaleString('en')}/s, generated + readDelta ${Math.round(b).toLocaleString('en')}/s, by hand/generated ${(a / b).toFixed(2)}×`,
    );
  }
}

/** Seals and opens `count` datagrams of `size` bytes; returns µs per seal and per open (medians of ROUNDS). */
function sealOpen(gcm: GcmEngine, size: number, count: number): { seal: number; open: number } {
  const keys = [{ id: 1, key: randomBytes(32) }];
  const sealer = new DatagramSealer(keys, 42n, gcm);
  const opener = new DatagramOpener(keys, { maxDatagramBytes: 65_000, gcm });
  const payload = randomBytes(size);
  const seals: number[] = [];
  const opens: number[] = [];
  for (let r = 0; r <= ROUNDS; r++) {
    const sealed: Buffer[] = [];
    let start = process.hrtime.bigint();
    for (let i = 0; i < count; i++) sealed.push(sealer.seal(payload));
    const sealUs = Number(process.hrtime.bigint() - start) / 1000 / count;
    start = process.hrtime.bigint();
    for (const datagram of sealed) if (!opener.open(datagram).ok) throw new Error('a datagram did not open');
    const openUs = Number(process.hrtime.bigint() - start) / 1000 / count;
    if (r === 0) continue; // warm-up
    seals.push(sealUs);
    opens.push(openUs);
  }
  return { seal: median(seals), open: median(opens) };
}

const openssl = loadOpensslGcm();
console.log(`\nsealing and opening with AES-256-GCM, µs per datagram, median of ${ROUNDS} rounds${openssl.gcm === undefined ? ` (OpenSSL contexts unavailable: ${openssl.reason})` : ''}`);
for (const size of [1400, 60_000]) {
  const count = size > 2000 ? 5000 : 50_000;
  const node = sealOpen(nodeGcm, size, count);
  const line = `${String(size).padStart(6)} B: node:crypto seal ${node.seal.toFixed(2)} / open ${node.open.toFixed(2)}`;
  if (openssl.gcm === undefined) console.log(line);
  else {
    const fast = sealOpen(openssl.gcm, size, count);
    console.log(`${line}; OpenSSL contexts seal ${fast.seal.toFixed(2)} / open ${fast.open.toFixed(2)} (${(node.seal / fast.seal).toFixed(1)}× / ${(node.open / fast.open).toFixed(1)}×)`);
  }
}
