/**
 * The privileged step of TCP state capture on real sockets (loopback, in this process):
 * learning a freshly accepted connection's sequence origins through repair mode
 * (sidecar/capture/tcp-capture.ts) must leave the connection as it was — no packet sent
 * (repair is left without the window probe), SO_REUSEADDR kept, no RST, every byte
 * delivered both ways and the FINs exchanged — and the origins must be the ones the client
 * sees from its side. Needs CAP_NET_ADMIN (CI runs as root) and koffi: elsewhere the tests
 * say they did not run, and under CI they fail.
 */
import { createHash, randomBytes } from 'node:crypto';
import * as net from 'node:net';
import { hasNetAdmin, learnOriginsByRepair, queueSequences } from '../sidecar/capture/tcp-capture';
import { IPPROTO_TCP, loadSocketSyscalls, socketFd, SOL_SOCKET, SO_REUSEADDR, TCP_INFO, type SocketSyscalls } from '../sidecar/net/socket-syscalls';

const loaded = loadSocketSyscalls();
const missing = loaded.syscalls === undefined ? loaded.reason : hasNetAdmin() ? undefined : 'TCP_REPAIR needs CAP_NET_ADMIN (CI runs as root)';

function repairTest(title: string, fn: (syscalls: SocketSyscalls) => Promise<void>): void {
  if (missing === undefined) return void test(title, () => fn(loaded.syscalls!));
  if (process.env.CI) {
    return void test(title, () => {
      throw new Error(`cannot run here: ${missing}`);
    });
  }
  console.warn(`TCP repair test NOT RUN (${missing}): ${title}`);
  test.skip(`${title} [NOT RUN: ${missing}]`, () => undefined);
}

/** tcpi_segs_out: segments this socket has sent. */
function segmentsOut(syscalls: SocketSyscalls, fd: number): number {
  return syscalls.getsockopt(fd, IPPROTO_TCP, TCP_INFO, 280).readUInt32LE(136);
}

repairTest('origins learnt at accept equal the client\'s own view; the socket sent nothing, kept SO_REUSEADDR, and then carries 2 MiB each way and closes with FINs, no RST', async (syscalls) => {
  const payload = randomBytes(2 << 20);
  const server = net.createServer();
  const learnt: { origins: ReturnType<typeof learnOriginsByRepair>; segmentsBefore: number; segmentsAfter: number; reuseBefore: number; reuseAfter: number }[] = [];
  const serverErrors: Error[] = [];
  server.on('connection', (socket) => {
    const fd = socketFd(socket)!;
    const reuseBefore = syscalls.getsockoptInt(fd, SOL_SOCKET, SO_REUSEADDR);
    const segmentsBefore = segmentsOut(syscalls, fd);
    const origins = learnOriginsByRepair(syscalls, fd);
    learnt.push({ origins, segmentsBefore, segmentsAfter: segmentsOut(syscalls, fd), reuseBefore, reuseAfter: syscalls.getsockoptInt(fd, SOL_SOCKET, SO_REUSEADDR) });
    socket.on('error', (err) => serverErrors.push(err));
    socket.pipe(socket); // echo, and end when the client ends
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  try {
    await new Promise<void>((resolve, reject) => {
      client.once('connect', resolve);
      client.once('error', reject);
    });
    // The client has written nothing yet: its write_seq is its ISS + 1 (the server's IRS + 1),
    // and its rcv_nxt is the server's ISS + 1 (the server has written nothing either).
    const clientView = queueSequences(syscalls, socketFd(client)!);
    const clientErrors: Error[] = [];
    client.on('error', (err) => clientErrors.push(err));
    const echoed = createHash('sha256');
    let received = 0;
    const ended = new Promise<void>((resolve) => client.once('end', resolve));
    client.on('data', (chunk: Buffer) => {
      echoed.update(chunk);
      received += chunk.length;
    });
    const closed = new Promise<boolean>((resolve) => client.once('close', resolve));
    client.end(payload);
    await ended;
    expect(await closed).toBe(false); // closed without error

    expect(learnt).toHaveLength(1);
    const [one] = learnt;
    expect(one!.origins).toEqual({ send: clientView.receiveNext, receive: clientView.writeSeq });
    expect(one!.segmentsAfter).toBe(one!.segmentsBefore);
    expect(one!.reuseAfter).toBe(one!.reuseBefore);
    expect(received).toBe(payload.length);
    expect(echoed.digest('hex')).toBe(createHash('sha256').update(payload).digest('hex'));
    expect(clientErrors).toEqual([]);
    expect(serverErrors).toEqual([]);
  } finally {
    client.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

repairTest('a connection whose client wrote before the accept handler ran: IRS + 1 is still exact (TCP_INFO\'s bytes_received taken back)', async (syscalls) => {
  const server = net.createServer();
  const origins: ReturnType<typeof learnOriginsByRepair>[] = [];
  let release: () => void = () => undefined;
  const gate = new Promise<void>((resolve) => (release = resolve));
  server.on('connection', (socket) => {
    socket.pause();
    // Learn only once the client's bytes are in the receive queue (the test releases it).
    void gate.then(() => {
      origins.push(learnOriginsByRepair(syscalls, socketFd(socket)!));
      socket.resume();
      socket.on('data', () => undefined);
      socket.on('end', () => socket.end());
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  try {
    await new Promise<void>((resolve) => client.once('connect', resolve));
    const before = queueSequences(syscalls, socketFd(client)!);
    client.write(Buffer.alloc(1000, 1));
    // Bounded wait until the kernel acked the 1,000 bytes (they sit in the server's queue).
    const deadline = Date.now() + 10_000;
    while (client.writableLength > 0 || syscalls.getsockopt(socketFd(client)!, IPPROTO_TCP, TCP_INFO, 280).readBigUInt64LE(120) < 1000n) {
      if (Date.now() > deadline) throw new Error('the 1,000 bytes were never acked');
      await new Promise((resolve) => setImmediate(resolve));
    }
    release();
    const ended = new Promise<void>((resolve) => client.once('end', resolve));
    client.end();
    await ended;
    expect(origins).toEqual([{ send: before.receiveNext, receive: before.writeSeq }]);
  } finally {
    client.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});
