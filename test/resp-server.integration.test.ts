/**
 * The RESP server's connection handling in process, on loopback, with scripted commands:
 * a command that waits keeps the replies in order, a client that shuts its side down still
 * gets every reply, and close() answers what was read before it ends the connections.
 */
import * as net from 'node:net';
import pino from 'pino';
import { DEFAULT_MAX_INLINE_BYTES, simple, type Reply } from '../src/resp/resp-codec';
import type { RespCommands, RespConnection } from '../src/resp/resp-commands';
import { RespServer } from '../sidecar/servers/resp-server';

const LIMITS = { maxArgs: 64, maxBulkBytes: 1024, maxCommandBytes: 4096, maxInlineBytes: DEFAULT_MAX_INLINE_BYTES };

/** Resolved when the server starts running SLOW. */
let slowStarted: () => void = () => {};

/** SLOW answers DONE after 50 ms; QUIT closes; anything else answers its name at once. */
const scripted = {
  run(args: Buffer[], conn: RespConnection): Reply | Promise<Reply> {
    const name = args[0]!.toString();
    if (name === 'SLOW') {
      slowStarted();
      return new Promise((resolve) => setTimeout(() => resolve(simple('DONE')), 50));
    }
    if (name === 'QUIT') conn.closing = true;
    return simple(name);
  },
} as unknown as RespCommands;

let server: RespServer | undefined;
let port = 0;

beforeEach(async () => {
  server = new RespServer(scripted, LIMITS, pino({ level: 'silent' }));
  port = await server.listen({ text: '127.0.0.1:0', host: '127.0.0.1', port: 0 });
});

afterEach(async () => {
  await server?.close(1000);
});

function connect(): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => resolve(socket));
    socket.once('error', reject);
  });
}

function collect(socket: net.Socket): Promise<string> {
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  return new Promise((resolve) => socket.once('close', () => resolve(Buffer.concat(chunks).toString())));
}

test('a waiting command holds back the replies after it: pipelined replies stay in order', async () => {
  const socket = await connect();
  const text = collect(socket);
  socket.write('A\r\nSLOW\r\nB\r\nC\r\nQUIT\r\n');
  expect(await text).toBe('+A\r\n+DONE\r\n+B\r\n+C\r\n+QUIT\r\n');
});

test('a client that shuts its side down while a command waits gets every reply, then the connection ends', async () => {
  const socket = await connect();
  const text = collect(socket);
  socket.end('A\r\nSLOW\r\nB\r\n');
  expect(await text).toBe('+A\r\n+DONE\r\n+B\r\n');
});

test('close() answers the command in flight and what was read, then ends the connection', async () => {
  const socket = await connect();
  const text = collect(socket);
  const started = new Promise<void>((resolve) => (slowStarted = resolve));
  socket.write('SLOW\r\nB\r\n');
  await started;
  await server!.close(5000);
  server = undefined;
  expect(await text).toBe('+DONE\r\n+B\r\n');
});
