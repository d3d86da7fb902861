/**
 * A raw UDP receiver for the replication benchmark's ceiling measurement: binds a port
 * (unicast) or joins a multicast group on 127.0.0.1, and counts datagrams and bytes. No
 * decoding, no crypto: what node:dgram itself delivers to a Node process.
 *
 *   node dist/bench/udp-sink.js unicast            → prints "READY <port>"
 *   node dist/bench/udp-sink.js multicast GROUP PORT → prints "READY <port>"
 *
 * Each line "count" on stdin is answered with "COUNT <datagrams> <bytes> <hrtime ns>".
 * The process exits when stdin closes (so it never outlives the bench) or on SIGTERM.
 */
import * as dgram from 'node:dgram';
import * as readline from 'node:readline';

/** As the sidecar sets it (the kernel doubles it; net.core.rmem_max caps it). */
const RECV_BUFFER_BYTES = 4 * 1024 * 1024;

const [mode, group, portText] = process.argv.slice(2);
const socket = dgram.createSocket({ type: 'udp4', reuseAddr: mode === 'multicast', recvBufferSize: RECV_BUFFER_BYTES });
let datagrams = 0;
let bytes = 0;
socket.on('message', (msg) => {
  datagrams++;
  bytes += msg.length;
});
socket.on('error', (err) => {
  console.error(`udp-sink: ${err.message}`);
  process.exit(1);
});

const ready = () => {
  console.log(`READY ${socket.address().port}`);
};
if (mode === 'multicast') {
  if (group === undefined || portText === undefined) throw new Error('usage: udp-sink multicast GROUP PORT');
  socket.bind({ port: Number(portText), address: group }, () => {
    socket.addMembership(group, '127.0.0.1');
    ready();
  });
} else {
  socket.bind({ port: 0, address: '127.0.0.1' }, ready);
}

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.trim() === 'count') console.log(`COUNT ${datagrams} ${bytes} ${process.hrtime.bigint()}`);
});
process.stdin.on('end', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
