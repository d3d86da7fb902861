/**
 * TCP state capture (--tcp-capture-interval-ms): keeps the `tcp` part of each proxy client's
 * session current — addresses, state, MSS, window scales, options, RTO, windows and the
 * exact sequence positions (src/capture/tcp-state.ts computes them).
 *
 * How the sequence origins (ISS + 1, IRS + 1) are learnt, once per connection, at accept
 * (the listener's 'connection' event, before the proxy has written a byte):
 * - with CAP_NET_ADMIN (the only exact way to ISS from user space short of capturing the
 *   SYN-ACK with a raw socket, and the cheapest: twelve system calls once per connection,
 *   0.3–0.45 ms on this 2-core machine at load average ~17, bench/tcp-capture.ts): repair
 *   mode on, TCP_QUEUE_SEQ of the send queue (write_seq) and of the receive queue
 *   (rcv_nxt), repair off *without* the window probe
 *   (TCP_REPAIR_OFF_NO_WP), SO_REUSEADDR set back (leaving repair clears it); taken back to
 *   the origins with TCP_INFO's byte counters and SIOCOUTQ, read between two TCP_INFO
 *   answers that agree (a byte acked or received in between: read again). Safe on a live
 *   connection at accept, shown in test/tcp-capture-repair.integration.test.ts: the toggle
 *   sends no packet, no RST follows, every byte is delivered both ways. It is done before the proxy writes anything on
 *   purpose: in repair mode with the send queue selected, the kernel would mark queued
 *   data sent without transmitting it (to be retransmitted later); at accept there is
 *   nothing queued to send (measured: 1,025 toggles during a 64 MiB echo drew ~250
 *   retransmissions, against ~10 without them or with the one toggle at accept).
 * - without it: the listener saves each SYN (TCP_SAVE_SYN) and the accepted socket's
 *   TCP_SAVED_SYN gives IRS; ISS cannot be had without privilege, so the part carries
 *   rcv_nxt and says snd_una/snd_nxt are unknown (send_sequence_known false) — no invented
 *   numbers.
 *
 * Rules:
 * - one timer for all connections; connections are tracked in a Map keyed by their fd,
 *   removed on close (and a closed fd whose 'close' event has not run yet is recognised by
 *   its handle, so a reused fd number is never read for another connection);
 * - a connection is sampled only once a request has named its session (the most recent
 *   one is written), and the part is written only when the state changed (the capture time
 *   aside): an idle connection costs one getsockopt per interval and no replication;
 * - one write in flight per connection; a refused write is counted and tried again on the
 *   next change or tick;
 * - a session with several connections (a browser opens up to six) has one `tcp` part: it
 *   holds the connection whose state changed last (each connection writes only its own
 *   changes, so idle connections do not take turns overwriting it);
 * - koffi absent or not Linux: capture is off with one warning; the proxy works as before.
 */
import { readFileSync } from 'node:fs';
import type { Server, Socket } from 'node:net';
import type { Logger } from 'pino';
import type { TcpConnectionState } from '../../src/gen/baton/v1/parts';
import {
  decodeTcpInfo,
  encodeTcpState,
  needsOutq,
  originsFromQueues,
  receiveOriginFromSyn,
  sameTcpState,
  sequencePositions,
  tcpConnectionState,
  TCP_INFO_LENGTH,
  type SequenceOrigins,
  type TcpInfo,
} from '../../src/capture/tcp-state';
import type { TcpCaptureObserver } from '../metrics/proxy-observer';
import {
  IPPROTO_TCP,
  loadSocketSyscalls,
  serverFd,
  SIOCOUTQ,
  socketFd,
  SOL_SOCKET,
  SO_REUSEADDR,
  SyscallError,
  TCP_INFO,
  TCP_NO_QUEUE,
  TCP_QUEUE_SEQ,
  TCP_RECV_QUEUE,
  TCP_REPAIR,
  TCP_REPAIR_OFF_NO_WP,
  TCP_REPAIR_ON,
  TCP_REPAIR_QUEUE,
  TCP_SAVED_SYN,
  TCP_SAVE_SYN,
  TCP_SEND_QUEUE,
  type SocketOptionCalls,
} from '../net/socket-syscalls';

/** How the sequence origins are learnt at accept. */
export type OriginMethod = 'repair' | 'saved_syn';

/** Readings taken again when the connection moved between them, before giving up for this tick. */
const READ_ATTEMPTS = 3;
/** Room for a saved SYN: IPv6 header, extension headers and a TCP header with options. */
const SAVED_SYN_BYTES = 512;
const EPERM = 1;
/** CAP_NET_ADMIN's bit in /proc/self/status CapEff. */
const CAP_NET_ADMIN = 12;

export interface TcpCaptureOptions {
  syscalls: SocketOptionCalls;
  /** Sampling interval in ms (> 0). */
  intervalMs: number;
  /** Writes the session's `tcp` part (the proxy's session store). */
  write: (sessionId: string, value: Uint8Array) => Promise<void>;
  observer: TcpCaptureObserver;
  log: Logger;
  /** 'repair' when the process holds CAP_NET_ADMIN (see hasNetAdmin). */
  method: OriginMethod;
  clock?: () => number;
}

interface Tracked {
  fd: number;
  /** The socket's libuv handle: its fd turns negative once closed, before 'close' is emitted. */
  handle: { fd?: number };
  endpoints: { localAddress: string; localPort: number; remoteAddress: string; remotePort: number };
  origins: SequenceOrigins;
  sessionId: string | undefined;
  /** The state last written to sessionId. */
  written: TcpConnectionState | undefined;
  writing: boolean;
}

export class TcpCapture {
  private readonly tracked = new Map<number, Tracked>();
  private readonly listeners = new Set<Server>();
  private readonly timer: NodeJS.Timeout;
  private readonly clock: () => number;
  private method: OriginMethod;

  /**
   * The capture for the proxy, or undefined (with one warning) when it cannot run here, or
   * when `intervalMs` is 0 (off).
   */
  static start(options: Omit<TcpCaptureOptions, 'syscalls' | 'method'>): TcpCapture | undefined {
    if (options.intervalMs <= 0) return undefined;
    const loaded = loadSocketSyscalls();
    if (loaded.syscalls === undefined) {
      options.log.warn({ reason: loaded.reason }, '--tcp-capture-interval-ms: TCP state capture is off');
      return undefined;
    }
    const method: OriginMethod = hasNetAdmin() ? 'repair' : 'saved_syn';
    options.log.info({ method, interval_ms: options.intervalMs }, 'TCP state capture on');
    return new TcpCapture({ ...options, syscalls: loaded.syscalls, method });
  }

  constructor(private readonly options: TcpCaptureOptions) {
    this.method = options.method;
    this.clock = options.clock ?? Date.now;
    this.timer = setInterval(() => this.sampleAll(), options.intervalMs);
    this.timer.unref();
  }

  /** Connections tracked now. */
  get size(): number {
    return this.tracked.size;
  }

  /**
   * Watches a server's accepted connections; call before it listens. Its 'connection'
   * listener runs first, before TLS or HTTP see the socket.
   */
  attach(server: Server): void {
    this.listeners.add(server);
    server.prependListener('connection', (socket: Socket) => this.accepted(socket));
    const saveSyns = () => {
      if (this.method === 'saved_syn') this.saveSyns(server);
    };
    if (server.listening) saveSyns();
    else server.once('listening', saveSyns);
  }

  private saveSyns(server: Server): void {
    const fd = serverFd(server);
    if (fd === undefined) return;
    try {
      this.options.syscalls.setsockopt(fd, IPPROTO_TCP, TCP_SAVE_SYN, 1);
    } catch (err) {
      this.options.log.warn({ err: (err as Error).message }, 'TCP state capture: the listener cannot save SYNs; receive positions are unknown too');
    }
  }

  private accepted(socket: Socket): void {
    const fd = socketFd(socket);
    const handle = (socket as unknown as { _handle?: { fd?: number } })._handle;
    if (fd === undefined || handle === undefined) return;
    let origins: SequenceOrigins | undefined;
    try {
      origins = this.learnOrigins(fd);
    } catch (err) {
      this.options.observer.sample('failed');
      this.options.log.debug({ err: (err as Error).message }, 'TCP state capture: sequence origins not learnt');
    }
    const entry: Tracked = {
      fd,
      handle,
      endpoints: {
        localAddress: socket.localAddress ?? '',
        localPort: socket.localPort ?? 0,
        remoteAddress: socket.remoteAddress ?? '',
        remotePort: socket.remotePort ?? 0,
      },
      origins: origins ?? { send: undefined, receive: undefined },
      sessionId: undefined,
      written: undefined,
      writing: false,
    };
    // An entry already under this fd belongs to a connection that is closed (fds are not
    // reused while open) and whose 'close' has not run yet.
    this.tracked.set(fd, entry);
    socket.once('close', () => {
      if (this.tracked.get(fd) === entry) this.tracked.delete(fd);
    });
  }

  private learnOrigins(fd: number): SequenceOrigins | undefined {
    if (this.method === 'saved_syn') {
      const syn = this.options.syscalls.getsockopt(fd, IPPROTO_TCP, TCP_SAVED_SYN, SAVED_SYN_BYTES);
      return { send: undefined, receive: receiveOriginFromSyn(syn) };
    }
    try {
      return learnOriginsByRepair(this.options.syscalls, fd);
    } catch (err) {
      if (!(err instanceof SyscallError) || err.errno !== EPERM) throw err;
      // The capability check said yes but the kernel says no (a user namespace, say):
      // later connections learn IRS from saved SYNs; this one learns nothing.
      this.method = 'saved_syn';
      this.options.log.warn('TCP state capture: TCP_REPAIR is not permitted (CAP_NET_ADMIN missing in this network namespace); send positions are unknown from now on');
      for (const server of this.listeners) this.saveSyns(server);
      return undefined;
    }
  }

  /**
   * Names the session a connection's latest request belongs to: from now on its `tcp` part
   * is this connection's. `socket` is any socket over the connection (TLS, HTTP/2's proxy).
   */
  session(socket: Socket, sessionId: string): void {
    let fd: number | undefined;
    try {
      fd = socketFd(socket);
    } catch {
      return; // HTTP/2 whose socket is already gone
    }
    const entry = fd === undefined ? undefined : this.tracked.get(fd);
    if (entry === undefined || entry.sessionId === sessionId) return;
    entry.sessionId = sessionId;
    entry.written = undefined;
  }

  /** One sample of every tracked connection (the timer's work; public for tests). */
  sampleAll(): void {
    const now = this.clock();
    for (const entry of this.tracked.values()) {
      if (entry.handle.fd !== entry.fd) {
        this.tracked.delete(entry.fd);
        continue;
      }
      if (entry.sessionId === undefined || entry.writing) continue;
      this.sample(entry, now);
    }
  }

  private sample(entry: Tracked, now: number): void {
    let reading: { info: TcpInfo; outq: number | undefined } | undefined;
    try {
      reading = readConsistent(this.options.syscalls, entry.fd);
    } catch (err) {
      this.options.observer.sample('failed');
      this.options.log.debug({ err: (err as Error).message }, 'TCP state capture: sample failed');
      return;
    }
    if (reading === undefined) {
      this.options.observer.sample('skipped');
      return;
    }
    const state = tcpConnectionState(entry.endpoints, reading.info, sequencePositions(entry.origins, reading.info, reading.outq), now);
    if (entry.written !== undefined && sameTcpState(entry.written, state)) {
      this.options.observer.sample('unchanged');
      return;
    }
    const sessionId = entry.sessionId!;
    entry.writing = true;
    this.options.write(sessionId, encodeTcpState(state)).then(
      () => {
        entry.writing = false;
        if (entry.sessionId === sessionId) entry.written = state;
        this.options.observer.sample('written');
      },
      (err: unknown) => {
        entry.writing = false;
        this.options.observer.sample('write_failed');
        this.options.log.debug({ err: (err as Error).message }, 'TCP state capture: the tcp part was not written');
      },
    );
  }

  /** Stops sampling; tracked connections are forgotten. */
  close(): void {
    clearInterval(this.timer);
    this.tracked.clear();
    this.listeners.clear();
  }
}

function tcpInfo(syscalls: SocketOptionCalls, fd: number): TcpInfo {
  const info = decodeTcpInfo(syscalls.getsockopt(fd, IPPROTO_TCP, TCP_INFO, TCP_INFO_LENGTH));
  if (info === undefined) throw new Error('TCP_INFO answered fewer than 8 bytes');
  return info;
}

/**
 * TCP_INFO, and SIOCOUTQ when segments are in flight, describing one moment: SIOCOUTQ is
 * write_seq − snd_una, and only an ACK moves snd_una (write_seq moves only when this
 * process writes, which it cannot do during these synchronous calls), so an equal
 * bytes_acked before and after the ioctl makes it consistent with the second answer.
 * Undefined when ACKs kept arriving through every attempt.
 */
export function readConsistent(syscalls: SocketOptionCalls, fd: number): { info: TcpInfo; outq: number | undefined } | undefined {
  let info = tcpInfo(syscalls, fd);
  for (let attempt = 0; attempt < READ_ATTEMPTS; attempt++) {
    if (!needsOutq(info)) return { info, outq: undefined };
    const outq = syscalls.ioctlInt(fd, SIOCOUTQ);
    const after = tcpInfo(syscalls, fd);
    if (after.bytesAcked === info.bytesAcked) return { info: after, outq };
    info = after;
  }
  return undefined;
}

/**
 * ISS + 1 and IRS + 1 of a connected socket through repair mode (needs CAP_NET_ADMIN).
 * Call it before the process wrote to the socket (see the file's header). Throws
 * SyscallError; undefined when the connection kept moving through every attempt.
 */
export function learnOriginsByRepair(syscalls: SocketOptionCalls, fd: number): SequenceOrigins | undefined {
  for (let attempt = 0; attempt < READ_ATTEMPTS; attempt++) {
    const before = tcpInfo(syscalls, fd);
    const { writeSeq, receiveNext } = queueSequences(syscalls, fd);
    const outq = syscalls.ioctlInt(fd, SIOCOUTQ);
    const after = tcpInfo(syscalls, fd);
    if (after.bytesAcked === before.bytesAcked && after.bytesReceived === before.bytesReceived) {
      return originsFromQueues(after, writeSeq, receiveNext, outq);
    }
  }
  return undefined;
}

/** TCP_QUEUE_SEQ of both queues: repair on, read, repair off without a window probe, SO_REUSEADDR as it was. */
export function queueSequences(syscalls: SocketOptionCalls, fd: number): { writeSeq: number; receiveNext: number } {
  const reuse = syscalls.getsockoptInt(fd, SOL_SOCKET, SO_REUSEADDR);
  syscalls.setsockopt(fd, IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_ON);
  try {
    syscalls.setsockopt(fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE);
    const writeSeq = syscalls.getsockoptInt(fd, IPPROTO_TCP, TCP_QUEUE_SEQ) >>> 0;
    syscalls.setsockopt(fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE);
    const receiveNext = syscalls.getsockoptInt(fd, IPPROTO_TCP, TCP_QUEUE_SEQ) >>> 0;
    return { writeSeq, receiveNext };
  } finally {
    syscalls.setsockopt(fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_NO_QUEUE);
    syscalls.setsockopt(fd, IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_OFF_NO_WP);
    if (reuse !== 0) syscalls.setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, 1);
  }
}

/** Whether this process holds CAP_NET_ADMIN (the effective set in /proc/self/status). */
export function hasNetAdmin(status: () => string = () => readFileSync('/proc/self/status', 'utf8')): boolean {
  try {
    const line = /^CapEff:\s*([0-9a-f]+)$/im.exec(status());
    return line !== null && ((BigInt(`0x${line[1]}`) >> BigInt(CAP_NET_ADMIN)) & 1n) === 1n;
  } catch {
    return false;
  }
}
