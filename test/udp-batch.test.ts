/**
 * Datagrams sent and received many to a system call (sendmmsg and recvmmsg through koffi,
 * real sockets on loopback): every datagram reaches its destination with its bytes, in
 * order per destination, also when a batch is full and flushed in parts; a destination the
 * kernel refuses is counted and skipped without losing the datagrams after it; a receiver
 * draining behind node:dgram gets every datagram once, in order, with its source, never
 * more than asked, and a datagram larger than the node takes arrives cut (so it is refused
 * as oversized). And the sealer writes in place what it would have returned.
 */
import * as dgram from 'node:dgram';
import { BATCH_SLOTS, batchDestination, loadBatchReceiver, loadBatchSender } from '../sidecar/net/udp-batch';
import { udpSocketFd } from '../sidecar/net/socket-syscalls';
import { DatagramOpener, DatagramSealer } from '../src/wire/datagram-codec';
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
