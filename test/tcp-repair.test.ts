/**
 * TCP repair, each unsafe step in network namespaces this test creates (root, CI): a
 * connection from the client namespace to the VIP is frozen on host a with bytes in both
 * queues, restored on host b, the VIP's route moved, and the connection goes on — no byte
 * lost or doubled, no FIN or RST at the client. Also: a frozen connection revived in place,
 * and the drop-all filter keeping a frozen socket from taking in what the client sends.
 */
import * as net from 'node:net';
import { TcpRepair, stopReading, tcpRepairUnavailable, type FrozenConnection } from '../sidecar/capture/tcp-repair';
import { loadSocketSyscalls, SIOCOUTQ, socketFd } from '../sidecar/net/socket-syscalls';
import { namespacesUnavailable, nftablesUnavailable } from './support/netns';
import { HandoverLab, setnsUnavailable, VIP } from './support/handover-lab';

const missing = namespacesUnavailable() ?? setnsUnavailable() ?? nftablesUnavailable() ?? tcpRepairUnavailable();

/** `it` when it can run; under CI a failure with the reason; elsewhere a skip named with the reason (as the chaos tests do). */
function namespaceTest(title: string, fn: () => Promise<void>): void {
  if (missing === undefined) return void it(title, fn, 30_000);
  if (process.env.CI) {
    return void it(title, () => {
      throw new Error(`cannot run here: ${missing}`);
    });
  }
  console.warn(`namespace test NOT RUN (${missing}): ${title}`);
  it.skip(`${title} [NOT RUN: ${missing}]`, fn);
}

/** Records everything a socket reads and every end/error/close it sees. */
class Watched {
  received = Buffer.alloc(0);
  readonly events: string[] = [];
  private waiters: Array<() => void> = [];

  constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.received = Buffer.concat([this.received, chunk]);
      for (const w of this.waiters.splice(0)) w();
    });
    socket.on('end', () => this.events.push('end'));
    socket.on('error', (err) => this.events.push(`error ${err.message}`));
    socket.on('close', () => this.events.push('close'));
  }

  /** Resolves once `length` bytes arrived (fails after `ms`). */
  async bytes(length: number, ms = 10_000): Promise<Buffer> {
    const deadline = Date.now() + ms;
    while (this.received.length < length) {
      if (Date.now() > deadline) throw new Error(`only ${this.received.length} of ${length} bytes arrived; events: ${this.events.join(', ')}`);
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
    return this.received;
  }
}

let lab: HandoverLab | undefined;
beforeAll(async () => {
  if (missing === undefined) lab = await HandoverLab.create();
}, 30_000);
afterAll(async () => {
  await lab?.destroy();
});

/** A server on the VIP in host a's namespace and one client connection to it, from the client namespace. */
async function connection(l: HandoverLab): Promise<{ server: net.Server; client: Watched; serverSide: net.Socket }> {
  const server = net.createServer();
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  const port = await l.listenIn('a', server, VIP, 0);
  const client = new Watched(await l.connectIn('client', VIP, port));
  return { server, client, serverSide: await accepted };
}

/** The client's packets from the VIP are dropped (so what a sends stays unacknowledged) until the rule is deleted. */
async function holdAcks(l: HandoverLab): Promise<() => Promise<void>> {
  await l.exec('client', ['nft', 'add', 'table', 'inet', 'hold']);
  await l.exec('client', ['nft', 'add', 'chain', 'inet', 'hold', 'in', '{ type filter hook input priority 0; policy accept; }']);
  await l.exec('client', ['nft', 'add', 'rule', 'inet', 'hold', 'in', 'ip', 'saddr', VIP, 'drop']);
  return async () => void (await l.exec('client', ['nft', 'delete', 'table', 'inet', 'hold']));
}

describe('TCP repair', () => {
  namespaceTest('a connection frozen on a with bytes in both queues goes on from b after the route moves', async () => {
    const l = lab!;
    const repair = TcpRepair.load();
    const { server, client, serverSide } = await connection(l);
    let frozen: FrozenConnection | undefined;
    let live: net.Socket | undefined;
    try {
      // Before: bytes both ways work.
      serverSide.write('hello client;');
      await client.bytes(13);
      // Receive queue: the server stops reading, the client's bytes wait in a's kernel.
      stopReading(serverSide);
      const unread = Buffer.from('request bytes a never read;');
      client.socket.write(unread);
      // Send queue: bytes a sent that the client has not acknowledged (its input is held).
      const release = await holdAcks(l);
      const unacked = Buffer.from('answer bytes the client has not acknowledged;');
      serverSide.write(unacked);
      await waitFor(async () => (await sendQueueBytes(serverSide)) === unacked.length, 'a sent the bytes');
      await waitFor(async () => (await recvQueueBytes(l)) === unread.length, 'the unread bytes reached a');

      frozen = repair.freeze(serverSide);
      serverSide.destroy();
      expect(frozen.state.recvQueue.toString()).toBe(unread.toString());
      expect(frozen.state.sendQueue.toString()).toBe(unacked.toString());
      expect(frozen.state.unsentBytes).toBe(0);
      expect(frozen.state.localAddress).toBe(VIP);
      expect(frozen.state.mss).toBeGreaterThan(0);

      l.enter('b');
      let restored;
      try {
        restored = repair.restore(frozen.state);
      } finally {
        l.leave();
      }
      await l.routeVipTo('b');
      live = restored.goLive();
      frozen.release();
      await release();
      const serverView = new Watched(live);

      // The receive queue came along: b reads what a never read, then what the client sends now.
      client.socket.write('more;');
      expect((await serverView.bytes(unread.length + 5)).toString()).toBe(`${unread.toString()}more;`);
      // The send queue came along: b retransmits what the client never acknowledged.
      live.write('from b;');
      expect((await client.bytes(13 + unacked.length + 7)).toString()).toBe(`hello client;${unacked.toString()}from b;`);
      expect(client.events).toEqual([]);
      expect(serverView.events).toEqual([]);
    } finally {
      frozen?.release();
      live?.destroy();
      client.socket.destroy();
      server.close();
      await l.routeVipTo('a');
    }
  });

  namespaceTest('a frozen socket takes in nothing the client sends, and revived in place reads it all', async () => {
    const l = lab!;
    const repair = TcpRepair.load();
    const { server, client, serverSide } = await connection(l);
    let frozen: FrozenConnection | undefined;
    let revived: net.Socket | undefined;
    try {
      stopReading(serverSide);
      frozen = repair.freeze(serverSide);
      serverSide.destroy();
      expect(frozen.state.recvQueue.length).toBe(0);
      // Sent while frozen: the filter drops it before TCP sees it, so the client keeps it to retransmit.
      client.socket.write('while frozen;');
      await waitFor(async () => (await unackedAtClient(l)) === 13, 'the client holds its bytes unacknowledged');
      revived = frozen.revive();
      const view = new Watched(revived);
      client.socket.write('after;');
      expect((await view.bytes(19)).toString()).toBe('while frozen;after;');
      revived.write('ok');
      expect((await client.bytes(2)).toString()).toBe('ok');
      expect(client.events).toEqual([]);
    } finally {
      revived?.destroy();
      client.socket.destroy();
      server.close();
    }
  });

  namespaceTest('a held listener ignores SYNs silently (the client retries, no refusal) and takes the connection once released', async () => {
    const l = lab!;
    const repair = TcpRepair.load();
    const server = net.createServer();
    const accepted: net.Socket[] = [];
    server.on('connection', (socket) => accepted.push(socket));
    const port = await l.listenIn('a', server, VIP, 0);
    await l.exec('a', ['nft', 'add', 'table', 'inet', 'syns']);
    await l.exec('a', ['nft', 'add', 'chain', 'inet', 'syns', 'in', '{ type filter hook input priority 0; policy accept; }']);
    await l.exec('a', ['nft', 'add', 'rule', 'inet', 'syns', 'in', 'tcp', 'dport', String(port), 'tcp', 'flags', '& (syn | ack) == syn', 'counter']);
    const release = repair.holdListener(socketFdOfServer(server));
    let client: net.Socket | undefined;
    try {
      const connecting = l.connectIn('client', VIP, port);
      // A second SYN means the first got no answer: neither a RST (the connect would have failed) nor a SYN-ACK.
      await waitFor(async () => (await synsSeen(l)) >= 2, 'the client sent its SYN again');
      expect(accepted).toHaveLength(0);
      release();
      client = await connecting;
      await waitFor(() => Promise.resolve(accepted.length === 1), 'the listener took the connection');
      expect(accepted[0]!.remotePort).toBe(client.localPort);
    } finally {
      release();
      client?.destroy();
      for (const socket of accepted) socket.destroy();
      server.close();
      await l.exec('a', ['nft', 'delete', 'table', 'inet', 'syns']);
    }
  });
});

function socketFdOfServer(server: net.Server): number {
  return (server as unknown as { _handle: { fd: number } })._handle.fd;
}

/** SYNs (without ACK) host a's nft counter saw. */
async function synsSeen(l: HandoverLab): Promise<number> {
  const out = await l.exec('a', ['nft', 'list', 'table', 'inet', 'syns']);
  return Number(/counter packets (\d+)/.exec(out)?.[1] ?? 0);
}

/** Polls `check` until it holds (at most 5 s). */
async function waitFor(check: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function sendQueueBytes(socket: net.Socket): Promise<number> {
  return Promise.resolve(loadSocketSyscalls().syscalls!.ioctlInt(socketFd(socket)!, SIOCOUTQ));
}

/** Recv-Q of host a's connections to the client, from `ss`. */
async function recvQueueBytes(l: HandoverLab): Promise<number> {
  const out = await l.exec('a', ['ss', '-tnH', 'state', 'established', 'src', VIP]);
  return Number(out.trim().split(/\s+/)[0] ?? 0);
}

/** Send-Q of the client's connection (bytes it sent that nobody acknowledged), from `ss`. */
async function unackedAtClient(l: HandoverLab): Promise<number> {
  const out = await l.exec('client', ['ss', '-tnH', 'state', 'established', 'dst', VIP]);
  return Number(out.trim().split(/\s+/)[1] ?? 0);
}
