/**
 * The TCP capture's bookkeeping (sidecar/capture/tcp-capture.ts) on fake sockets and a fake
 * kernel (injected SocketSyscalls): origins learnt once at accept, the part written only
 * when it changed and only for a named session, one write in flight, connections forgotten
 * on close (and a closed fd never read for a newer connection), the fallback to saved SYNs
 * when repair is refused, and readings that keep moving skipped. The timer is not used:
 * the tests call sampleAll() themselves.
 */
import { EventEmitter } from 'node:events';
import type { Server, Socket } from 'node:net';
import type { Logger } from 'pino';
import { TcpConnectionState } from '../src/gen/baton/v1/parts';
import { hasNetAdmin, TcpCapture, type OriginMethod } from '../sidecar/capture/tcp-capture';
import type { TcpCaptureOutcome } from '../sidecar/metrics/proxy-observer';
import {
  IPPROTO_TCP,
  SIOCOUTQ,
  SOL_SOCKET,
  SO_REUSEADDR,
  SyscallError,
  TCP_INFO,
  TCP_QUEUE_SEQ,
  TCP_RECV_QUEUE,
  TCP_REPAIR,
  TCP_REPAIR_QUEUE,
  TCP_SAVED_SYN,
  TCP_SAVE_SYN,
  TCP_SEND_QUEUE,
  type SocketOptionCalls,
} from '../sidecar/net/socket-syscalls';

/** One connection as the fake kernel sees it. */
interface FakeConnection {
  iss1: number;
  irs1: number;
  bytesAcked: bigint;
  bytesReceived: bigint;
  unacked: number;
  notsent: number;
  outq: number;
  rcvWnd: number;
  /** Bytes acked by the time of each TCP_INFO read after the first (a connection that keeps moving). */
  ackedPerRead?: bigint;
  queue?: number;
  repair?: boolean;
  syn?: Buffer;
}

class FakeKernel implements SocketOptionCalls {
  readonly connections = new Map<number, FakeConnection>();
  readonly calls: string[] = [];
  repairRefused = false;
  failInfo = false;

  getsockopt(fd: number, level: number, name: number, length: number): Buffer {
    this.calls.push(`get ${fd} ${name}`);
    const c = this.connection(fd, level === IPPROTO_TCP && name === TCP_SAVED_SYN);
    if (level === IPPROTO_TCP && name === TCP_INFO) {
      if (this.failInfo) throw new SyscallError('getsockopt(6, 11)', 9);
      if (c!.ackedPerRead !== undefined) c!.bytesAcked += c!.ackedPerRead;
      const b = Buffer.alloc(280);
      b.writeUInt8(1, 0);
      b.writeUInt8(7, 5);
      b.writeUInt8(0x79, 6);
      b.writeUInt32LE(204_000, 8);
      b.writeUInt32LE(1448, 16);
      b.writeUInt32LE(c!.unacked, 24);
      b.writeBigUInt64LE(c!.bytesAcked, 120);
      b.writeBigUInt64LE(c!.bytesReceived, 128);
      b.writeUInt32LE(c!.notsent, 144);
      b.writeUInt32LE(65_536, 228);
      b.writeUInt32LE(c!.rcvWnd, 232);
      return b.subarray(0, length);
    }
    if (level === IPPROTO_TCP && name === TCP_SAVED_SYN) return c?.syn ?? Buffer.alloc(0);
    if (level === IPPROTO_TCP && name === TCP_QUEUE_SEQ) {
      const writeSeq = Number(BigInt.asUintN(32, BigInt(c!.iss1) + c!.bytesAcked + BigInt(c!.outq)));
      const rcvNxt = Number(BigInt.asUintN(32, BigInt(c!.irs1) + c!.bytesReceived));
      const b = Buffer.alloc(4);
      b.writeUInt32LE(c!.queue === TCP_SEND_QUEUE ? writeSeq : rcvNxt);
      return b;
    }
    if (level === SOL_SOCKET && name === SO_REUSEADDR) return Buffer.from([1, 0, 0, 0]);
    throw new SyscallError(`getsockopt(${level}, ${name})`, 22);
  }

  getsockoptInt(fd: number, level: number, name: number): number {
    return this.getsockopt(fd, level, name, 4).readInt32LE(0);
  }

  setsockopt(fd: number, _level: number, name: number, value: Buffer | number): void {
    this.calls.push(`set ${fd} ${name} ${String(value)}`);
    if (name === TCP_SAVE_SYN) return;
    const c = this.connection(fd);
    if (name === TCP_REPAIR) {
      if (this.repairRefused) throw new SyscallError('setsockopt(6, 19)', 1);
      c!.repair = value === 1;
    }
    if (name === TCP_REPAIR_QUEUE) c!.queue = value as number;
  }

  recv(): number {
    throw new Error('not used');
  }

  ioctlInt(fd: number, request: number): number {
    this.calls.push(`ioctl ${fd} ${request}`);
    if (request !== SIOCOUTQ) throw new SyscallError('ioctl', 22);
    return this.connection(fd)!.outq;
  }

  private connection(fd: number, optional = false): FakeConnection | undefined {
    const c = this.connections.get(fd);
    if (c === undefined && !optional) throw new SyscallError('fd', 9);
    return c;
  }
}

class FakeSocket extends EventEmitter {
  readonly _handle: { fd: number };
  localAddress = '10.0.0.1';
  localPort = 8080;
  remoteAddress = '10.0.0.2';
  remotePort: number;

  constructor(fd: number) {
    super();
    this._handle = { fd };
    this.remotePort = 40_000 + fd;
  }

  /** What libuv does: the fd is closed at once, 'close' is emitted later. */
  closeFd(): void {
    this._handle.fd = -22;
  }
}

class FakeServer extends EventEmitter {
  _handle = { fd: 3 };
  listening = false;
}

function setup(method: OriginMethod = 'repair') {
  const kernel = new FakeKernel();
  const server = new FakeServer();
  const outcomes: TcpCaptureOutcome[] = [];
  const writes: { sessionId: string; state: TcpConnectionState; settle: (ok: boolean) => void }[] = [];
  const log = { warn: jest.fn(), info: jest.fn(), debug: jest.fn() };
  const capture = new TcpCapture({
    syscalls: kernel,
    intervalMs: 3_600_000,
    method,
    write: (sessionId, value) =>
      new Promise<void>((resolve, reject) => writes.push({ sessionId, state: TcpConnectionState.decode(value), settle: (ok) => (ok ? resolve() : reject(new Error('refused'))) })),
    observer: { sample: (outcome) => outcomes.push(outcome) },
    log: log as unknown as Logger,
    clock: () => 1_700_000_000_000,
  });
  capture.attach(server as unknown as Server);
  const connect = (fd: number, c: Partial<FakeConnection> = {}) => {
    kernel.connections.set(fd, { iss1: 1000, irs1: 5000, bytesAcked: 0n, bytesReceived: 0n, unacked: 0, notsent: 0, outq: 0, rcvWnd: 65_483, ...c });
    const socket = new FakeSocket(fd);
    server.emit('connection', socket);
    return socket;
  };
  const settleAll = async (ok = true) => {
    for (const w of writes.splice(0)) w.settle(ok);
    await new Promise((resolve) => setImmediate(resolve));
  };
  return { kernel, server, capture, outcomes, writes, log, connect, settleAll };
}

describe('TcpCapture', () => {
  let capture: TcpCapture | undefined;
  afterEach(() => capture?.close());

  test('learns the origins at accept by repair, and writes the part only once a request named the session, only when it changed', async () => {
    const t = setup();
    capture = t.capture;
    const socket = t.connect(7, { bytesReceived: 120n });
    expect(t.kernel.connections.get(7)!.repair).toBe(false); // left repair mode
    t.capture.sampleAll();
    expect(t.writes).toHaveLength(0); // no session yet
    t.capture.session(socket as unknown as Socket, 'S1');
    t.capture.sampleAll();
    expect(t.writes).toHaveLength(1);
    expect(t.writes[0]!.sessionId).toBe('S1');
    expect(t.writes[0]!.state).toMatchObject({ sendUnacknowledged: 1000, sendNext: 1000, receiveNext: 5120, sendSequenceKnown: true, receiveSequenceKnown: true, remotePort: 40_007 });
    await t.settleAll();
    t.capture.sampleAll();
    expect(t.writes).toHaveLength(0);
    expect(t.outcomes).toEqual(['written', 'unchanged']);
    // The client sends 30 bytes, the proxy answers 500 of which 200 are in flight.
    Object.assign(t.kernel.connections.get(7)!, { bytesReceived: 150n, bytesAcked: 300n, unacked: 1, outq: 200, notsent: 0 });
    t.capture.sampleAll();
    expect(t.writes[0]!.state).toMatchObject({ sendUnacknowledged: 1300, sendNext: 1500, receiveNext: 5150 });
  });

  test('one write in flight per connection; a refused write is counted and tried again on the next tick', async () => {
    const t = setup();
    capture = t.capture;
    t.capture.session(t.connect(7) as unknown as Socket, 'S1');
    t.capture.sampleAll();
    t.capture.sampleAll();
    expect(t.writes).toHaveLength(1);
    await t.settleAll(false);
    expect(t.outcomes).toEqual(['write_failed']);
    t.capture.sampleAll();
    expect(t.writes).toHaveLength(1);
  });

  test("a request naming another session moves the part there: written even though the state did not change", async () => {
    const t = setup();
    capture = t.capture;
    const socket = t.connect(7) as unknown as Socket;
    t.capture.session(socket, 'S1');
    t.capture.sampleAll();
    await t.settleAll();
    t.capture.session(socket, 'S1');
    t.capture.sampleAll();
    expect(t.writes).toHaveLength(0);
    t.capture.session(socket, 'S2');
    t.capture.sampleAll();
    expect(t.writes.map((w) => w.sessionId)).toEqual(['S2']);
  });

  test('forgotten on close; a closed fd whose close event has not run is never read, and a new connection on the same fd number is its own', async () => {
    const t = setup();
    capture = t.capture;
    const first = t.connect(7);
    t.capture.session(first as unknown as Socket, 'S1');
    expect(t.capture.size).toBe(1);
    first.closeFd();
    t.kernel.calls.length = 0;
    t.capture.sampleAll();
    expect(t.kernel.calls).toEqual([]);
    expect(t.capture.size).toBe(0);
    // fd 7 reused by the next connection before the first one's 'close' ran.
    const second = t.connect(7, { iss1: 9000, irs1: 9 });
    first.emit('close');
    expect(t.capture.size).toBe(1);
    t.capture.session(second as unknown as Socket, 'S2');
    t.capture.sampleAll();
    expect(t.writes.map((w) => [w.sessionId, w.state.sendNext, w.state.remotePort])).toEqual([['S2', 9000, 40_007]]);
    second.emit('close');
    expect(t.capture.size).toBe(0);
  });

  test('repair refused (EPERM): that connection learns nothing, later ones learn IRS from the saved SYN the listener now keeps', () => {
    const t = setup();
    capture = t.capture;
    t.kernel.repairRefused = true;
    t.server.listening = true;
    const first = t.connect(7);
    expect(t.log.warn).toHaveBeenCalledTimes(1);
    expect(t.kernel.calls).toContain(`set 3 ${TCP_SAVE_SYN} 1`);
    const syn = Buffer.alloc(40);
    syn.writeUInt8(0x45, 0);
    syn.writeUInt8(6, 9);
    syn.writeUInt32BE(4999, 24);
    syn.writeUInt8(0x02, 33);
    const second = t.connect(8, { syn, bytesReceived: 10n });
    t.capture.session(first as unknown as Socket, 'S1');
    t.capture.session(second as unknown as Socket, 'S2');
    t.capture.sampleAll();
    expect(t.writes.map((w) => [w.sessionId, w.state.sendSequenceKnown, w.state.receiveSequenceKnown, w.state.receiveNext])).toEqual([
      ['S1', false, false, 0],
      ['S2', false, true, 5010],
    ]);
    expect(t.kernel.calls.filter((c) => c.startsWith('set 8 '))).toEqual([]); // no repair tried on the second
  });

  test('saved_syn from the start: the listener saves SYNs once it listens', () => {
    const t = setup('saved_syn');
    capture = t.capture;
    expect(t.kernel.calls).toEqual([]);
    t.server.listening = true;
    t.server.emit('listening');
    expect(t.kernel.calls).toEqual([`set 3 ${TCP_SAVE_SYN} 1`]);
  });

  test('a connection that keeps moving while read is skipped (no write, no guess); a failing read is counted as failed', () => {
    const t = setup();
    capture = t.capture;
    const socket = t.connect(7);
    t.capture.session(socket as unknown as Socket, 'S1');
    Object.assign(t.kernel.connections.get(7)!, { unacked: 2, outq: 100, ackedPerRead: 10n });
    t.capture.sampleAll();
    expect(t.writes).toHaveLength(0);
    t.kernel.failInfo = true;
    t.capture.sampleAll();
    expect(t.outcomes).toEqual(['skipped', 'failed']);
  });

  test('reads TCP_QUEUE_SEQ of both queues in repair mode, ending with repair off without the window probe and SO_REUSEADDR set again', () => {
    const t = setup();
    capture = t.capture;
    t.kernel.calls.length = 0;
    t.connect(9);
    const sets = t.kernel.calls.filter((c) => c.startsWith('set 9 '));
    expect(sets).toEqual([
      `set 9 ${TCP_REPAIR} 1`,
      `set 9 ${TCP_REPAIR_QUEUE} ${TCP_SEND_QUEUE}`,
      `set 9 ${TCP_REPAIR_QUEUE} ${TCP_RECV_QUEUE}`,
      `set 9 ${TCP_REPAIR_QUEUE} 0`,
      `set 9 ${TCP_REPAIR} -1`,
      `set 9 ${SO_REUSEADDR} 1`,
    ]);
  });
});

describe('TcpCapture.start', () => {
  test('interval 0 is off: no capture', () => {
    const log = { warn: jest.fn(), info: jest.fn(), debug: jest.fn() };
    expect(TcpCapture.start({ intervalMs: 0, write: async () => undefined, observer: { sample: () => undefined }, log: log as unknown as Logger })).toBeUndefined();
    expect(log.warn).not.toHaveBeenCalled();
  });

  test('without koffi: off, with one warning saying why', () => {
    jest.isolateModules(() => {
      jest.doMock('koffi', () => {
        throw new Error('Cannot find module koffi');
      });
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const isolated = require('../sidecar/capture/tcp-capture') as typeof import('../sidecar/capture/tcp-capture');
      const log = { warn: jest.fn(), info: jest.fn(), debug: jest.fn() };
      expect(isolated.TcpCapture.start({ intervalMs: 1000, write: async () => undefined, observer: { sample: () => undefined }, log: log as unknown as Logger })).toBeUndefined();
      expect(log.warn).toHaveBeenCalledTimes(1);
      expect(JSON.stringify(log.warn.mock.calls[0])).toMatch(/koffi is not installed/);
    });
    jest.dontMock('koffi');
  });

  test('hasNetAdmin reads bit 12 of the effective capabilities', () => {
    expect(hasNetAdmin(() => 'Name:\tnode\nCapEff:\t000001fffeffffff\n')).toBe(true);
    expect(hasNetAdmin(() => 'Name:\tnode\nCapEff:\t000001fffeffefff\n')).toBe(false);
    expect(hasNetAdmin(() => 'no capabilities here')).toBe(false);
    expect(
      hasNetAdmin(() => {
        throw new Error('no /proc');
      }),
    ).toBe(false);
  });
});
