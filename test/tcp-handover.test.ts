/**
 * The receiving side of a TCP handover against handed-over states that are wrong or hostile:
 * every one is answered as failed (or refused) and nothing crashes or piles up. The socket
 * calls are fakes: the namespace tests (tcp-repair.test.ts, tcp-handover.integration.test.ts)
 * run the real ones. Time is jest's fake clock.
 */
import pino from 'pino';
import type { FrozenTcpConnection } from '../src/gen/baton/v1/peer';
import { MAX_PENDING_CONNECTIONS, PREPARED_TTL_MS, TcpHandover, type HandoverProxy } from '../sidecar/capture/tcp-handover';
import { TcpRepair } from '../sidecar/capture/tcp-repair';
import { SyscallError, type SocketSyscalls } from '../sidecar/net/socket-syscalls';

const VIP = '10.9.9.9';

/** Socket calls that record what was asked and succeed (or, with `failing`, fail every call). */
function fakeSyscalls(failing: boolean): { sys: SocketSyscalls; calls: string[] } {
  const calls: string[] = [];
  let nextFd = 100;
  const call = <T>(name: string, answer: T) => {
    calls.push(name);
    if (failing) throw new SyscallError(name, 1);
    return answer;
  };
  const sys: SocketSyscalls = {
    getsockopt: (_fd, _l, _n, length) => call('getsockopt', Buffer.alloc(length)),
    getsockoptInt: () => call('getsockoptInt', 0),
    setsockopt: () => call('setsockopt', undefined),
    recv: () => call('recv', 0),
    ioctlInt: () => call('ioctlInt', 0),
    socket: () => call('socket', nextFd++),
    bind: () => call('bind', undefined),
    connect: () => call('connect', undefined),
    send: (_fd, buffer) => call('send', buffer.length),
    dup: () => call('dup', nextFd++),
    close: () => call('close', undefined),
    attachDropAllFilter: () => call('attachDropAllFilter', undefined),
    attachDropSourceFilter: () => call('attachDropSourceFilter', undefined),
    detachFilter: () => call('detachFilter', undefined),
    enterNetworkNamespace: () => call('enterNetworkNamespace', undefined),
  };
  return { sys, calls };
}

function connection(id: number, overrides: Partial<FrozenTcpConnection> = {}): FrozenTcpConnection {
  return {
    connectionId: BigInt(id),
    localAddress: VIP,
    localPort: 80,
    remoteAddress: '10.1.1.1',
    remotePort: 40_000 + (id % 20_000),
    sendSeq: 1000,
    recvSeq: 2000,
    sendQueue: Buffer.alloc(0),
    unsentBytes: 0,
    recvQueue: Buffer.alloc(0),
    mss: 1460,
    timestamps: true,
    sack: true,
    windowScaling: true,
    sndWscale: 7,
    rcvWscale: 7,
    timestamp: 12345,
    sndWl1: 0,
    sndWnd: 65535,
    maxWindow: 65535,
    rcvWnd: 65535,
    rcvWup: 2000,
    sessionId: '',
    ...overrides,
  };
}

function receiver(failing = false) {
  const { sys, calls } = fakeSyscalls(failing);
  const resumed: string[] = [];
  const proxy: HandoverProxy = {
    listeningFd: () => undefined,
    clientConnections: () => [],
    connectionState: () => 'idle',
    sessionOf: () => undefined,
    adopt: () => {
      throw new Error('nothing goes live in these tests');
    },
    resumeSession: (id) => {
      resumed.push(id);
      return Promise.resolve();
    },
  };
  const counts: Record<string, number> = {};
  const handover = TcpHandover.create(
    {
      nodeId: 'b',
      virtualAddress: VIP,
      hook: '',
      hookTimeoutMs: 1000,
      proxy,
      peer: () => undefined,
      log: pino({ level: 'silent' }),
      count: (outcome, n) => (counts[outcome] = (counts[outcome] ?? 0) + n),
    },
    new TcpRepair(sys),
  );
  return { handover, calls, resumed, counts };
}

afterEach(() => {
  jest.useRealTimers();
});

describe('TCP handover, receiving side', () => {
  test('states that cannot be a connection to the virtual address fail before any socket call', () => {
    const { handover, calls, counts } = receiver();
    const response = handover.prepare({
      handoverId: 1n,
      fromNodeId: 'a',
      connections: [
        connection(1, { localAddress: '10.0.0.1' }),
        connection(2, { localPort: 0 }),
        connection(3, { remotePort: 70_000 }),
        connection(4, { mss: 0 }),
        connection(5, { sndWscale: 15 }),
        connection(6, { unsentBytes: 5, sendQueue: Buffer.from('abc') }),
      ],
    });
    expect(response.restored).toEqual([]);
    expect(response.failed.map((f) => [Number(f.connectionId), f.reason])).toEqual([
      [1, `not a connection to --virtual-address ${VIP}`],
      [2, 'a port out of range'],
      [3, 'a port out of range'],
      [4, 'an MSS out of range'],
      [5, 'a window scale over 14'],
      [6, 'more unsent bytes than the send queue holds'],
    ]);
    expect(calls).toEqual([]);
    expect(counts).toEqual({ refused: 6 });
    handover.stop();
  });

  test('a state the kernel refuses is answered as failed with the call that failed; nothing waits for a commit', () => {
    const { handover } = receiver(true);
    const response = handover.prepare({ handoverId: 2n, fromNodeId: 'a', connections: [connection(1, { sessionId: 's1' })] });
    expect(response.restored).toEqual([]);
    expect(response.failed[0]!.reason).toMatch(/socket failed: errno 1/);
    expect(handover.commit({ handoverId: 2n, abort: false })).toEqual({ live: [] });
    handover.stop();
  });

  test('a connection id twice in one handover is restored once; the sessions of restored connections are resumed ahead', () => {
    const { handover, resumed } = receiver();
    const first = handover.prepare({ handoverId: 3n, fromNodeId: 'a', connections: [connection(1, { sessionId: 's1' }), connection(2, { sessionId: 's1' })] });
    const again = handover.prepare({ handoverId: 3n, fromNodeId: 'a', connections: [connection(1, { sessionId: 's1' })] });
    expect(first.restored.map(Number)).toEqual([1, 2]);
    expect(again.failed.map((f) => f.reason)).toEqual(['restored already']);
    expect(resumed).toEqual(['s1']);
    expect(handover.commit({ handoverId: 3n, abort: true })).toEqual({ live: [] });
    handover.stop();
  });

  test('at most MAX_PENDING_CONNECTIONS wait for a commit; an abort frees their room', () => {
    const { handover } = receiver();
    let id = 0;
    const batch = () => Array.from({ length: 1000 }, () => connection(id++));
    for (let i = 0; i < MAX_PENDING_CONNECTIONS / 1000; i++) handover.prepare({ handoverId: BigInt(i), fromNodeId: 'a', connections: batch() });
    expect(() => handover.prepare({ handoverId: 999n, fromNodeId: 'a', connections: [connection(id++)] })).toThrow(/too many handed-over connections/);
    handover.commit({ handoverId: 0n, abort: true });
    expect(handover.prepare({ handoverId: 999n, fromNodeId: 'a', connections: [connection(id++)] }).restored).toHaveLength(1);
    handover.stop();
  });

  test('restored connections with no commit within PREPARED_TTL_MS are closed and forgotten', () => {
    jest.useFakeTimers();
    const { handover, calls, counts } = receiver();
    handover.prepare({ handoverId: 7n, fromNodeId: 'a', connections: [connection(1), connection(2)] });
    const closesBefore = calls.filter((c) => c === 'close').length;
    jest.advanceTimersByTime(PREPARED_TTL_MS - 1);
    expect(calls.filter((c) => c === 'close').length).toBe(closesBefore);
    jest.advanceTimersByTime(1);
    expect(calls.filter((c) => c === 'close').length).toBe(closesBefore + 2);
    expect(counts).toEqual({ dropped: 2 });
    expect(handover.commit({ handoverId: 7n, abort: false })).toEqual({ live: [] });
  });
});
