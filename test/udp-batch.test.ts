/**
 * Datagrams sent and received many to a system call (sendmmsg and recvmmsg through koffi,
 * real sockets on loopback): every datagram reaches its destination with its bytes, in
 * order per destination, also when a batch is full and flushed in parts; a destination the
 * kernel refuses is counted and skipped without losing the datagrams after it; a receiver
 * draining behind node:dgram gets every datagram once, in order, with its source, never
 * more than asked, and a datagram larger than the node takes arrives cut (so it is refused
 * as oversized). And the sealer writes in place what it would have returned. Segmented
 * sends (UDP_SEGMENT): planned runs pad only by what the sealer can write and stay within
 * the kernel's limits; each datagram of one arrives on its own with its bytes; a kernel
 * that refuses one gets them one by one, and no segmented send after.
 */
import * as dgram from 'node:dgram';
import { BATCH_SLOTS, batchDestination, loadBatchReceiver, loadBatchSender, MAX_SEGMENTED_BYTES, MAX_SEGMENTS, planSegments, receiveCoalesced } from '../sidecar/net/udp-batch';
import { loadSocketSyscalls, SOL_SOCKET, udpSocketFd } from '../sidecar/net/socket-syscalls';
import { coalescedSegmentBytes, DatagramOpener, DatagramSealer, MAX_PADDING, MIN_PADDING } from '../src/wire/datagram-codec';
import { SeededRandom } from '../src/store/random';
import { makeClusterKey } from './support/sim-cluster';
import { pollUntil } from './support/static-cluster';

const sockets: dgram.Socket[] = [];
afterEach(async () => {
  await Promise.all(sockets.splice(0).map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
});

async function bound(): Promise<dgram.Socket> {
  const socket = dgram.createSocket({ type: 'udp4', recvBufferSize: 1 << 20 });
  sockets.push(socket);
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind({ address: '127.0.0.1', port: 0 }, () => resolve());
  });
  return socket;
}

/** Receivers collecting what they get, by receiver. */
async function receivers(count: number): Promise<{ sockets: dgram.Socket[]; got: Buffer[][] }> {
  const list = await Promise.all(Array.from({ length: count }, () => bound()));
  const got = list.map(() => [] as Buffer[]);
  list.forEach((socket, i) => socket.on('message', (msg) => got[i]!.push(msg)));
  return { sockets: list, got };
}

function loaded(socket: dgram.Socket) {
  const batch = loadBatchSender(socket);
  if (batch.sender === undefined) throw new Error(`no batch sender: ${batch.reason}`);
  return batch.sender;
}

test('sends more datagrams than a batch holds, each with its bytes, in order per destination', async () => {
  const sender = await bound();
  const { sockets: to, got } = await receivers(4);
  const batch = loaded(sender);
  const total = BATCH_SLOTS + 44;
  const expected = to.map(() => [] as Buffer[]);
  let flushes = 0;
  for (let i = 0; i < total; i++) {
    const r = i % to.length;
    const bytes = Buffer.alloc(20 + (i % 50), i & 0xff);
    bytes.writeUInt32BE(i, 0);
    let at = batch.add(batchDestination('127.0.0.1', to[r]!.address().port), bytes.length);
    if (at < 0) {
      expect(batch.pending).toBe(BATCH_SLOTS);
      expect(batch.flush(() => undefined)).toBe(0);
      flushes++;
      at = batch.add(batchDestination('127.0.0.1', to[r]!.address().port), bytes.length);
    }
    bytes.copy(batch.buffer, at);
    expected[r]!.push(bytes);
  }
  expect(batch.flush(() => undefined)).toBe(0);
  expect(flushes).toBe(1);
  await pollUntil('every datagram received', () => got.every((list, r) => list.length === expected[r]!.length), 5000);
  expect(got).toEqual(expected);
  batch.close();
  expect(() => batch.add(batchDestination('127.0.0.1', 9), 1)).toThrow(/closed/);
});

test('a destination the kernel refuses is counted and skipped; the datagrams after it are sent', async () => {
  const sender = await bound();
  const { sockets: to, got } = await receivers(1);
  const batch = loaded(sender);
  const port = to[0]!.address().port;
  const put = (host: string, text: string) => {
    const at = batch.add(batchDestination(host, port), text.length);
    expect(at).toBeGreaterThanOrEqual(0);
    batch.buffer.write(text, at, 'latin1');
  };
  put('127.0.0.1', 'first');
  // Broadcast without SO_BROADCAST: EACCES for this one datagram.
  put('255.255.255.255', 'refused');
  put('127.0.0.1', 'second');
  put('127.0.0.1', 'third');
  let fallbacks = 0;
  expect(batch.flush(() => fallbacks++)).toBe(1);
  expect(fallbacks).toBe(0);
  await pollUntil('three datagrams received', () => got[0]!.length === 3, 5000);
  expect(got[0]!.map((b) => b.toString('latin1'))).toEqual(['first', 'second', 'third']);
  // Not IPv4 (or no port): the caller sends those another way.
  expect(batch.add(batchDestination('::1', port), 4)).toBe(-1);
  expect(batch.add(batchDestination('localhost', port), 4)).toBe(-1);
  expect(batch.add(batchDestination('127.0.0.1', 0), 4)).toBe(-1);
  expect(batch.pending).toBe(0);
  batch.close();
});

test('sealInto writes at an offset the datagram seal would have returned, and it opens', () => {
  const key = makeClusterKey(3);
  const a = new DatagramSealer([key], 77n);
  const b = new DatagramSealer([key], 77n);
  const opener = new DatagramOpener([key], { maxDatagramBytes: 65_507 });
  for (const size of [0, 1, 100, 1400]) {
    const payload = Buffer.alloc(size, size & 0xff);
    const sealed = a.seal(payload);
    const out = Buffer.alloc(sealed.length + 10, 0xee);
    b.sealInto(payload, out, 7);
    expect(b.sealedLength(size)).toBe(sealed.length);
    expect(out.subarray(7, 7 + sealed.length).equals(sealed)).toBe(true);
    expect(out[6]).toBe(0xee);
    expect(out[7 + sealed.length]).toBe(0xee);
    const opened = opener.open(out.subarray(7, 7 + sealed.length));
    expect(opened.ok && Buffer.from(opened.payload).equals(payload)).toBe(true);
  }
  expect(() => b.sealInto(Buffer.alloc(10), Buffer.alloc(20), 0)).toThrow(RangeError);
});

test('a receiver draining behind node:dgram gets every datagram once, in order, with its source, at most as many as asked', async () => {
  const [a, b] = [await bound(), await bound()];
  const target = await bound();
  const loadedReceiver = loadBatchReceiver(100);
  if (loadedReceiver.receiver === undefined) throw new Error(`no batch receiver: ${loadedReceiver.reason}`);
  const receiver = loadedReceiver.receiver;
  const fd = udpSocketFd(target)!;
  const got: { text: string; from: string }[] = [];
  const sizes: number[] = [];
  let drained = 0;
  target.on('message', (msg, rinfo) => {
    got.push({ text: msg.toString('latin1', 0, 8), from: `${rinfo.address}:${rinfo.port}` });
    const read = receiver.drain(fd, 7, (datagram, source) => {
      got.push({ text: datagram.toString('latin1', 0, 8), from: source.from });
      sizes.push(datagram.length);
    });
    expect(read).toBeLessThanOrEqual(7);
    drained += read;
  });
  // Queued before the event loop reads any: node:dgram delivers one, the drain reads on.
  const batches = [loaded(a), loaded(b)];
  const expected: { text: string; from: string }[] = [];
  for (let i = 0; i < 40; i++) {
    const sender = i % 2;
    const text = `d${String(i).padStart(3, '0')}....`;
    const size = i === 39 ? 150 : 8 + i;
    const at = batches[sender]!.add(batchDestination('127.0.0.1', target.address().port), size);
    batches[sender]!.buffer.fill(0x2e, at, at + size);
    batches[sender]!.buffer.write(text, at, 'latin1');
    expected.push({ text, from: `127.0.0.1:${[a, b][sender]!.address().port}` });
    batches[sender]!.flush(() => undefined);
  }
  await pollUntil('every datagram received', () => got.length === expected.length, 5000);
  expect(got).toEqual(expected);
  expect(drained).toBeGreaterThan(0);
  // The 150-byte datagram arrives cut to one byte more than the 100 the receiver takes.
  expect(sizes.at(-1)).toBe(101);
  for (const batch of batches) batch.close();
  receiver.close();
  expect(receiver.drain(fd, 10, () => undefined)).toBe(0);
});

describe('segmented sends', () => {
  /** Checks a plan against every rule planSegments promises; answers its runs' sizes. */
  function checkPlan(lengths: number[], destinations: number[], maxDatagramBytes: number): number[] {
    const runs: number[] = [];
    for (let i = 0; i < lengths.length; ) {
      const { count, segmentBytes } = planSegments(lengths, i, lengths.length, (j) => destinations[j] === destinations[j - 1], maxDatagramBytes);
      expect(count).toBeGreaterThanOrEqual(1);
      expect(count).toBeLessThanOrEqual(MAX_SEGMENTS);
      if (count > 1) {
        const members = lengths.slice(i, i + count);
        expect(destinations.slice(i, i + count).every((d) => d === destinations[i])).toBe(true);
        expect(segmentBytes).toBeLessThanOrEqual(maxDatagramBytes);
        expect(members.at(-1)!).toBeLessThanOrEqual(segmentBytes);
        const paddings = members.slice(0, -1).map((length) => segmentBytes - length);
        expect(paddings.filter((p) => p !== 0 && (p < MIN_PADDING || p > MAX_PADDING))).toEqual([]);
        expect(segmentBytes * (count - 1) + members.at(-1)!).toBeLessThanOrEqual(MAX_SEGMENTED_BYTES);
      } else {
        expect(segmentBytes).toBe(lengths[i]);
      }
      runs.push(count);
      i += count;
    }
    return runs;
  }

  test('plans runs the sealer can pad and the kernel takes, over seeded random lengths and destinations', () => {
    const random = new SeededRandom(61);
    let segmented = 0;
    for (let round = 0; round < 200; round++) {
      const n = 1 + random.below(300);
      const base = 40 + random.below(1400);
      const spread = [0, 1, 2, 3, 40, 70, 1400][random.below(7)]!;
      const lengths = Array.from({ length: n }, () => Math.max(1, base + random.below(spread + 1) - (spread >> 1)));
      const destinations = Array.from({ length: n }, () => (random.below(10) === 0 ? random.below(3) : 0));
      const runs = checkPlan(lengths, destinations, 1400 + random.below(3) * 100);
      segmented += runs.filter((r) => r > 1).length;
    }
    expect(segmented).toBeGreaterThan(200);
  });

  test('fills runs: equal lengths, lengths a byte apart, a longer last one; and ends them where it must', () => {
    const to = (n: number) => Array<number>(n).fill(0);
    // 46 datagrams of 1,400 bytes fit 65,000.
    expect(checkPlan(Array<number>(100).fill(1400), to(100), 1400)).toEqual([46, 46, 8]);
    // Lengths a byte apart (part names 'data' and 'data2'): padded by 2 or 3 bytes.
    const mixed = Array.from({ length: 92 }, (_, i) => (i % 4 === 0 ? 1100 : 1101));
    expect(checkPlan(mixed, to(92), 1400)).toEqual([58, 34]);
    expect(planSegments([99, 100], 0, 2, () => true, 1400)).toEqual({ count: 2, segmentBytes: 102 });
    expect(planSegments([98, 100], 0, 2, () => true, 1400)).toEqual({ count: 2, segmentBytes: 100 });
    // No segment may pass the largest datagram: 1,400 and 1,399 cannot be padded past it.
    expect(planSegments([1399, 1400], 0, 2, () => true, 1400)).toEqual({ count: 1, segmentBytes: 1399 });
    // More than MAX_PADDING apart, or another destination: the run ends.
    expect(planSegments([1000, 1000, 900, 1000], 0, 4, () => true, 1400).count).toBe(3);
    expect(planSegments([1000, 1000, 1000, 1000], 0, 4, (j) => j < 2, 1400).count).toBe(2);
    expect(planSegments([500], 0, 1, () => true, 1400)).toEqual({ count: 1, segmentBytes: 500 });
  });

  test('each datagram of a segmented send arrives on its own with its bytes, in order, beside datagrams sent alone', async () => {
    const sender = await bound();
    const { sockets: to, got } = await receivers(2);
    const batch = loaded(sender);
    expect(batch.segmenting).toBe(true);
    const random = new SeededRandom(67);
    const expected = to.map(() => [] as Buffer[]);
    const datagram = (n: number, length: number) => {
      const bytes = Buffer.alloc(length, n & 0xff);
      bytes.writeUInt32BE(n, 0);
      return bytes;
    };
    let n = 0;
    let segmented = 0;
    for (let round = 0; round < 30; round++) {
      const r = random.below(2);
      const destination = batchDestination('127.0.0.1', to[r]!.address().port);
      const count = 1 + random.below(MAX_SEGMENTS);
      const segment = 8 + random.below(300);
      const last = 4 + random.below(segment - 3);
      const total = segment * (count - 1) + last;
      if (total > MAX_SEGMENTED_BYTES) continue;
      const at = batch.add(destination, total, count > 1 ? segment : 0);
      expect(at).toBeGreaterThanOrEqual(0);
      if (count > 1) segmented += count;
      for (let k = 0; k < count; k++) {
        const bytes = datagram(n++, k < count - 1 ? segment : last);
        bytes.copy(batch.buffer, at + k * segment);
        expect(k === count - 1 || count === 1 || bytes.length === segment).toBe(true);
        expected[r]!.push(bytes);
      }
      if (random.below(4) === 0) expect(batch.flush(() => undefined)).toBe(0);
    }
    expect(batch.flush(() => undefined)).toBe(0);
    expect(batch.segmenting).toBe(true);
    expect(batch.segmentedDatagrams).toBe(segmented);
    await pollUntil('every datagram received', () => got.every((list, r) => list.length === expected[r]!.length), 5000);
    expect(got).toEqual(expected);
    // What a segmented add refuses: too many bytes, or more segments than the kernel takes.
    const destination = batchDestination('127.0.0.1', to[0]!.address().port);
    expect(() => batch.add(destination, MAX_SEGMENTED_BYTES + 1, 1400)).toThrow(RangeError);
    expect(() => batch.add(destination, 100 * (MAX_SEGMENTS + 1), 100)).toThrow(RangeError);
    batch.close();
  });

  test('a socket with UDP_GRO gets each segmented send as one run, which the batch receiver and the sender header cut apart', async () => {
    const MAX_DATAGRAM = 1400;
    const sender = await bound();
    const target = await bound();
    const fd = udpSocketFd(target)!;
    expect(receiveCoalesced(fd)).toBe(true);
    const loadedReceiver = loadBatchReceiver(MAX_DATAGRAM, true);
    if (loadedReceiver.receiver === undefined) throw new Error(`no batch receiver: ${loadedReceiver.reason}`);
    const receiver = loadedReceiver.receiver;
    const key = makeClusterKey(5);
    const sealer = new DatagramSealer([key], 0x5eed5eedn);
    const opener = new DatagramOpener([key], { maxDatagramBytes: MAX_DATAGRAM });
    const got: string[] = [];
    const reads: number[] = [];
    const open = (datagram: Buffer) => {
      const opened = opener.open(datagram);
      // A padded payload ends in its padding field, after the '|'.
      got.push(opened.ok ? Buffer.from(opened.payload).toString('latin1').replace(/\|[^]*$/, '|') : `dropped: ${opened.reason}`);
    };
    // As the transport reads: node:dgram's read cut at the sender's header, then the batch.
    target.on('message', (msg) => {
      const segment = coalescedSegmentBytes(msg, MAX_DATAGRAM);
      reads.push(Math.ceil(msg.length / segment));
      for (let at = 0; at < msg.length; at += segment) open(msg.subarray(at, Math.min(at + segment, msg.length)));
      receiver.drain(fd, 64, open);
    });
    const random = new SeededRandom(71);
    const batch = loaded(sender);
    const destination = batchDestination('127.0.0.1', target.address().port);
    const expected: string[] = [];
    let segmented = 0;
    for (let round = 0; round < 12; round++) {
      const count = 1 + random.below(MAX_SEGMENTS);
      const base = random.below(1200);
      const payloads = Array.from({ length: count }, (_, k) => `r${round}d${k}:` + 'x'.repeat(base + random.below(40)) + '|');
      const lengths = new Uint32Array(payloads.map((p) => sealer.sealedLength(p.length)));
      const run = planSegments(lengths, 0, count, () => true, MAX_DATAGRAM);
      const n = run.count;
      const segment = n > 1 ? run.segmentBytes : 0;
      const at = batch.add(destination, n > 1 ? segment * (n - 1) + lengths[n - 1]! : lengths[0]!, segment);
      for (let k = 0; k < n; k++) sealer.sealInto(Buffer.from(payloads[k]!, 'latin1'), batch.buffer, at + k * segment, k < n - 1 ? segment : lengths[k]!);
      if (n > 1) segmented += n;
      expected.push(...payloads.slice(0, n));
      expect(batch.flush(() => undefined)).toBe(0);
    }
    expect(segmented).toBeGreaterThan(0);
    expect(batch.segmentedDatagrams).toBe(segmented);
    await pollUntil('every datagram received', () => got.length === expected.length, 5000);
    expect(got).toEqual(expected);
    // Some read held a whole run (not one datagram per read).
    expect(Math.max(...reads)).toBeGreaterThan(1);
    batch.close();
    receiver.close();
  });

  test('a run read without its segment size is cut where the sender header begins again, and only there', () => {
    const key = makeClusterKey(6);
    const sealer = new DatagramSealer([key], 0x0102030405060708n);
    const random = new SeededRandom(73);
    for (let round = 0; round < 200; round++) {
      const segment = 60 + random.below(1340);
      const count = 1 + random.below(40);
      const last = 40 + random.below(segment - 40 + 1);
      const run = Buffer.alloc(segment * (count - 1) + last);
      for (let k = 0; k < count; k++) {
        const length = k < count - 1 ? segment : last;
        sealer.sealInto(Buffer.from(Array.from({ length: length - 36 }, () => random.below(256))), run, k * segment, length);
      }
      expect(coalescedSegmentBytes(run, 1400)).toBe(count > 1 ? segment : last);
    }
    // Not a run: a datagram alone, one whose later bytes are not a header, and a segment over the node's largest.
    const one = sealer.seal(Buffer.alloc(500, 1));
    expect(coalescedSegmentBytes(one, 1400)).toBe(one.length);
    const two = Buffer.concat([sealer.seal(Buffer.alloc(100, 2)), sealer.seal(Buffer.alloc(100, 3))]);
    expect(coalescedSegmentBytes(two, 1400)).toBe(two.length / 2);
    expect(coalescedSegmentBytes(two, 100)).toBe(two.length);
    two.fill(0, two.length / 2, two.length / 2 + 4);
    expect(coalescedSegmentBytes(two, 1400)).toBe(two.length);
    const three = Buffer.concat([sealer.seal(Buffer.alloc(100, 2)), sealer.seal(Buffer.alloc(100, 3)), Buffer.alloc(136, 9)]);
    expect(coalescedSegmentBytes(three, 1400)).toBe(three.length);
  });

  test('a kernel that refuses a segmented send gets its datagrams one by one, and no segmented send after', async () => {
    const sender = await bound();
    const { sockets: to, got } = await receivers(1);
    // SO_NO_CHECK: the kernel refuses segmented sends from a socket without UDP checksums (EINVAL).
    const { syscalls } = loadSocketSyscalls();
    if (syscalls === undefined) throw new Error('no socket system calls here');
    syscalls.setsockopt(udpSocketFd(sender)!, SOL_SOCKET, SO_NO_CHECK, 1);
    const batch = loaded(sender);
    const destination = batchDestination('127.0.0.1', to[0]!.address().port);
    const put = (text: string, at: number) => batch.buffer.write(text, at, 'latin1');
    put('alone-1', batch.add(destination, 7));
    const at = batch.add(destination, 3 * 6 + 4, 6);
    ['seg-01', 'seg-02', 'seg-03', 'last'].forEach((text, k) => put(text, at + k * 6));
    put('alone-2', batch.add(destination, 7));
    const fallback: string[] = [];
    expect(batch.flush((bytes, port, host) => {
      fallback.push(bytes.toString('latin1'));
      sender.send(bytes, port, host);
    })).toBe(0);
    expect(fallback).toEqual(['seg-01', 'seg-02', 'seg-03', 'last']);
    expect(batch.segmenting).toBe(false);
    expect(batch.segmentingRefusedErrno).toBe(22);
    expect(batch.segmentedDatagrams).toBe(0);
    expect(() => batch.add(destination, 12, 6)).toThrow(RangeError);
    await pollUntil('six datagrams received', () => got[0]!.length === 6, 5000);
    // The fallback's datagrams went through node:dgram after the batch's own.
    expect(got[0]!.map((b) => b.toString('latin1')).sort()).toEqual(['alone-1', 'alone-2', 'last', 'seg-01', 'seg-02', 'seg-03']);
    batch.close();
  });
});

/** SO_NO_CHECK (asm-generic/socket.h). */
const SO_NO_CHECK = 11;
