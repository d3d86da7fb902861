/**
 * The socket filter that drops a node's own looped-back multicast datagrams (real sockets,
 * IP multicast on 127.0.0.1): a group socket with the filter for one source address and
 * port no longer takes in that source's datagrams, and still takes in every other source's,
 * also one with the same port on another address. The program's shape is checked too, and
 * the descriptor is read without the deprecated `_handle` (which warns).
 */
import * as dgram from 'node:dgram';
import { dropSourceProgram, loadSocketSyscalls, udpSocketFd } from '../sidecar/net/socket-syscalls';
import { freeUdpPort } from './support/ports';
import { pollUntil } from './support/static-cluster';

const sockets: dgram.Socket[] = [];
afterEach(async () => {
  await Promise.all(sockets.splice(0).map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
});

async function bound(address: string, port: number, options: dgram.SocketOptions = { type: 'udp4' }): Promise<dgram.Socket> {
  const socket = dgram.createSocket(options);
  sockets.push(socket);
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind({ address, port }, () => resolve());
  });
  return socket;
}

function send(socket: dgram.Socket, text: string, group: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => socket.send(Buffer.from(text), port, group, (err) => (err ? reject(err) : resolve())));
}

test('drops the datagrams of one source address and port, and only those', async () => {
  const loaded = loadSocketSyscalls();
  if (loaded.syscalls === undefined) throw new Error(`socket system calls unavailable: ${loaded.reason}`);
  const syscalls = loaded.syscalls;
  const port = await freeUdpPort();
  const group = `239.253.${(port >> 8) & 0xff}.${port & 0xff}`;
  const receiver = await bound(group, port, { type: 'udp4', reuseAddr: true });
  receiver.addMembership(group, '127.0.0.1');
  const received: string[] = [];
  receiver.on('message', (msg, rinfo) => received.push(`${msg.toString()} from ${rinfo.address}:${rinfo.port}`));

  const own = await bound('127.0.0.1', 0);
  const ownPort = own.address().port;
  // Another sender on the same port, other address: must still get through.
  const samePort = await bound('127.0.0.2', ownPort);
  const other = await bound('127.0.0.1', 0);
  for (const s of [own, samePort, other]) {
    s.setMulticastInterface('127.0.0.1');
    s.setMulticastLoopback(true);
  }

  await send(own, 'own-1', group, port);
  await pollUntil('the first own datagram arrives', async () => received.length === 1, 5000);

  syscalls.attachDropSourceFilter(udpSocketFd(receiver)!, '127.0.0.1', ownPort);

  // Sent in this order; a datagram is queued on the receiving socket as it is sent, so once
  // the last has arrived, an own datagram let through would have arrived before it.
  await send(own, 'own-2', group, port);
  await send(samePort, 'same-port', group, port);
  await send(own, 'own-3', group, port);
  await send(other, 'other', group, port);
  await pollUntil('the other source arrives', async () => received.some((r) => r.startsWith('other ')), 5000);
  expect(received).toEqual([
    `own-1 from 127.0.0.1:${ownPort}`,
    `same-port from 127.0.0.2:${ownPort}`,
    `other from 127.0.0.1:${other.address().port}`,
  ]);
});

test('reads a dgram socket\'s descriptor without touching the deprecated _handle', async () => {
  const socket = await bound('127.0.0.1', 0);
  let touched = false;
  // Node's _handle getter warns (DEP0112); an own property in its place records any read.
  Object.defineProperty(socket, '_handle', {
    get() {
      touched = true;
      return undefined;
    },
  });
  expect(udpSocketFd(socket)).toBeGreaterThan(2);
  expect(touched).toBe(false);
  const unbound = dgram.createSocket('udp4');
  expect(udpSocketFd(unbound)).toBeUndefined();
  unbound.close();
});

test('the program compares the UDP source port, then the IPv4 source address, and refuses what it cannot express', () => {
  const program = dropSourceProgram('10.1.2.3', 7946);
  expect(program).toHaveLength(6);
  expect(program[1]).toMatchObject({ k: 7946 });
  expect(program[3]).toMatchObject({ k: 0x0a010203 });
  expect(program[4]).toMatchObject({ code: 0x06, k: 0xffffffff });
  expect(program[5]).toMatchObject({ code: 0x06, k: 0 });
  expect(() => dropSourceProgram('::1', 7946)).toThrow(RangeError);
  expect(() => dropSourceProgram('127.0.0.1', 0)).toThrow(RangeError);
  expect(() => dropSourceProgram('127.0.0.1', 70000)).toThrow(RangeError);
});
