/**
 * Freezing a live TCP connection into plain data and restoring it, in another network
 * namespace or on another host, as a live socket — Linux TCP_REPAIR, following CRIU's
 * libsoccr (soccr/soccr.c) step by step. Needs CAP_NET_ADMIN and the optional koffi.
 *
 * Rules:
 * - Freezing takes a connection Node no longer reads (the caller stopped its handle's reads:
 *   `pause()` alone leaves libuv reading) whose writes all reached the kernel. It keeps a
 *   second descriptor of the socket with a drop-all filter attached *before* repair mode (a
 *   socket in repair mode still receives and ACKs), so nothing the client sends after the
 *   freeze is taken in or acknowledged here; the bytes stay the client's to retransmit.
 * - A frozen socket stays open until the peer confirmed its copy is live (`release()`):
 *   closing it earlier lets a late packet meet no socket and draw a RST. Closed in repair
 *   mode it goes silently (no FIN, no RST). `revive()` turns it back into a live socket here
 *   when the handover does not happen.
 * - Restoring follows libsoccr's order: repair on, TCP_MAXSEG before connect, bind (repair
 *   mode binds beside the listener), both queue sequences, connect (no SYN leaves), repair
 *   options, timestamp, refill both queues, repair window. The socket stays in repair mode
 *   until `goLive()`, which the caller runs after the address moved: repair off (the kernel
 *   sends a window probe that restarts the flow), SO_REUSEADDR set again (repair off clears
 *   it; setting it while repair is on cancels the bind override), the never-sent bytes sent.
 * - Every step that fails throws a SyscallError naming it; a half-restored socket is closed
 *   (silently, in repair mode) before the error leaves.
 */
import { Socket } from 'node:net';
import {
  AF_INET,
  AF_INET6,
  IPPROTO_TCP,
  loadSocketSyscalls,
  SIOCINQ,
  SIOCOUTQ,
  SIOCOUTQNSD,
  SO_REUSEADDR,
  SOCK_CLOEXEC,
  SOCK_STREAM,
  sockaddr,
  socketFd,
  SOL_SOCKET,
  TCP_INFO,
  TCP_MAXSEG,
  TCP_QUEUE_SEQ,
  TCP_RECV_QUEUE,
  TCP_REPAIR,
  TCP_REPAIR_OFF,
  TCP_REPAIR_ON,
  TCP_REPAIR_OPTIONS,
  TCP_REPAIR_QUEUE,
  TCP_REPAIR_WINDOW,
  TCP_SEND_QUEUE,
  TCP_TIMESTAMP,
  TCPOPT_MAXSEG,
  TCPOPT_SACK_PERM,
  TCPOPT_TIMESTAMP,
  TCPOPT_WINDOW,
  MSG_DONTWAIT,
  MSG_PEEK,
  type SocketSyscalls,
} from '../net/socket-syscalls';

const TCP_ESTABLISHED = 1;
const TCPI_OPT_TIMESTAMPS = 1;
const TCPI_OPT_SACK = 2;
const TCPI_OPT_WSCALE = 4;
const TCP_INFO_BYTES = 104;
const REPAIR_WINDOW_BYTES = 20;
/** The queue-less TCP_REPAIR_QUEUE value: sends in repair mode are refused again. */
const TCP_NO_QUEUE = 0;

/** struct tcp_repair_window (linux/tcp.h). */
export interface RepairWindow {
  sndWl1: number;
  sndWnd: number;
  maxWindow: number;
  rcvWnd: number;
  rcvWup: number;
}

/** Everything needed to make the connection live again elsewhere (plain data: it crosses the network). */
export interface FrozenConnectionState {
  localAddress: string;
  localPort: number;
  remoteAddress: string;
  remotePort: number;
  /** TCP_QUEUE_SEQ of the send queue: the sequence number after its last byte (write_seq). */
  sendSeq: number;
  /** TCP_QUEUE_SEQ of the receive queue: the sequence number after its last byte (rcv_nxt). */
  recvSeq: number;
  /** The send queue: sent-unacknowledged bytes first, then `unsentBytes` never sent. */
  sendQueue: Buffer;
  unsentBytes: number;
  /** Bytes received and acknowledged that Node had not read. */
  recvQueue: Buffer;
  mss: number;
  timestamps: boolean;
  sack: boolean;
  windowScaling: boolean;
  sndWscale: number;
  rcvWscale: number;
  /** TCP_TIMESTAMP: the connection's timestamp clock now (ms ticks, offset included). */
  timestamp: number;
  window: RepairWindow;
}

/** A connection frozen here: its state, and the open socket behind it until the handover settles. */
export interface FrozenConnection {
  readonly state: FrozenConnectionState;
  /** The peer's copy is live: close ours silently (repair mode). Idempotent. */
  release(): void;
  /** The handover did not happen: the connection continues here, as a new socket (Node must read it again). */
  revive(): Socket;
}

/** A connection restored here and still in repair mode: nothing is sent or answered yet. */
export interface RestoredConnection {
  readonly state: FrozenConnectionState;
  /** Repair off, SO_REUSEADDR again, never-sent bytes sent: a live socket. */
  goLive(): Socket;
  /** The handover is called off: close silently. Idempotent. */
  abort(): void;
}

/** Why TCP repair cannot work in this process (no koffi, not Linux, no CAP_NET_ADMIN), or undefined. */
export function tcpRepairUnavailable(): string | undefined {
  const loaded = loadSocketSyscalls();
  if (loaded.syscalls === undefined) return loaded.reason;
  const sys = loaded.syscalls;
  let fd = -1;
  try {
    fd = sys.socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sys.setsockopt(fd, IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_ON);
    return undefined;
  } catch (err) {
    const errno = (err as { errno?: number }).errno;
    return errno === 1 ? 'TCP_REPAIR needs CAP_NET_ADMIN (setsockopt answered EPERM)' : `TCP_REPAIR is refused here: ${(err as Error).message}`;
  } finally {
    if (fd >= 0) sys.close(fd);
  }
}

export class TcpRepair {
  constructor(private readonly sys: SocketSyscalls) {}

  /** Built on the process's socket calls; throws with the reason when they cannot be had. */
  static load(): TcpRepair {
    const loaded = loadSocketSyscalls();
    if (loaded.syscalls === undefined) throw new Error(loaded.reason);
    return new TcpRepair(loaded.syscalls);
  }

  /**
   * Freezes `socket` (reads stopped, writes drained: see the file's rules). The node socket
   * itself is left for the caller to destroy: its descriptor is closed, not the connection.
   */
  freeze(socket: Socket): FrozenConnection {
    const sys = this.sys;
    const fd = socketFd(socket);
    if (fd === undefined) throw new Error('the socket has no descriptor (not a connected TCP socket)');
    if (socket.writableLength > 0) throw new Error('the socket still has writes Node has not handed to the kernel');
    const info = sys.getsockopt(fd, IPPROTO_TCP, TCP_INFO, TCP_INFO_BYTES);
    if (info.readUInt8(0) !== TCP_ESTABLISHED) throw new Error(`the connection is not established (TCP state ${info.readUInt8(0)})`);
    const localAddress = socket.localAddress;
    const remoteAddress = socket.remoteAddress;
    const localPort = socket.localPort;
    const remotePort = socket.remotePort;
    if (localAddress === undefined || remoteAddress === undefined || localPort === undefined || remotePort === undefined) {
      throw new Error('the socket has no addresses');
    }
    const frozenFd = sys.dup(fd);
    try {
      sys.attachDropAllFilter(frozenFd);
      sys.setsockopt(frozenFd, IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_ON);
      const state = this.readState(frozenFd, { localAddress, localPort, remoteAddress, remotePort });
      return this.frozen(frozenFd, state);
    } catch (err) {
      this.reviveFd(frozenFd, false);
      sys.close(frozenFd);
      throw err;
    }
  }

  private readState(fd: number, addresses: Pick<FrozenConnectionState, 'localAddress' | 'localPort' | 'remoteAddress' | 'remotePort'>): FrozenConnectionState {
    const sys = this.sys;
    const info = sys.getsockopt(fd, IPPROTO_TCP, TCP_INFO, TCP_INFO_BYTES);
    const options = info.readUInt8(5);
    const scales = info.readUInt8(6);
    const outq = sys.ioctlInt(fd, SIOCOUTQ);
    const unsent = sys.ioctlInt(fd, SIOCOUTQNSD);
    const inq = sys.ioctlInt(fd, SIOCINQ);
    const timestamps = (options & TCPI_OPT_TIMESTAMPS) !== 0;
    const window = sys.getsockopt(fd, IPPROTO_TCP, TCP_REPAIR_WINDOW, REPAIR_WINDOW_BYTES);
    const sendQueue = this.readQueue(fd, TCP_SEND_QUEUE, outq);
    const recvQueue = this.readQueue(fd, TCP_RECV_QUEUE, inq);
    return {
      ...addresses,
      sendSeq: sendQueue.seq,
      recvSeq: recvQueue.seq,
      sendQueue: sendQueue.bytes,
      unsentBytes: unsent,
      recvQueue: recvQueue.bytes,
      mss: sys.getsockoptInt(fd, IPPROTO_TCP, TCP_MAXSEG),
      timestamps,
      sack: (options & TCPI_OPT_SACK) !== 0,
      windowScaling: (options & TCPI_OPT_WSCALE) !== 0,
      // snd_wscale:4 then rcv_wscale:4 — gcc packs bit-fields from the low bit on little-endian.
      sndWscale: scales & 0x0f,
      rcvWscale: scales >> 4,
      timestamp: timestamps ? sys.getsockopt(fd, IPPROTO_TCP, TCP_TIMESTAMP, 4).readUInt32LE(0) : 0,
      window: {
        sndWl1: window.readUInt32LE(0),
        sndWnd: window.readUInt32LE(4),
        maxWindow: window.readUInt32LE(8),
        rcvWnd: window.readUInt32LE(12),
        rcvWup: window.readUInt32LE(16),
      },
    };
  }

  /** The queue's TCP_QUEUE_SEQ and its bytes, read without taking them (MSG_PEEK). */
  private readQueue(fd: number, queue: number, length: number): { seq: number; bytes: Buffer } {
    const sys = this.sys;
    sys.setsockopt(fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, queue);
    const seq = sys.getsockopt(fd, IPPROTO_TCP, TCP_QUEUE_SEQ, 4).readUInt32LE(0);
    if (length === 0) return { seq, bytes: Buffer.alloc(0) };
    const bytes = Buffer.alloc(length);
    const n = sys.recv(fd, bytes, MSG_PEEK | MSG_DONTWAIT);
    if (n !== length) throw new Error(`queue ${queue} held ${length} bytes but ${n} were read`);
    return { seq, bytes };
  }

  private frozen(fd: number, state: FrozenConnectionState): FrozenConnection {
    let open = true;
    return {
      state,
      release: () => {
        if (!open) return;
        open = false;
        this.sys.close(fd);
      },
      revive: () => {
        if (!open) throw new Error('the frozen connection was released');
        open = false;
        this.reviveFd(fd, true);
        return new Socket({ fd, readable: true, writable: true });
      },
    };
  }

  /** Repair off and the filter gone: the socket answers again. `strict` throws on failure. */
  private reviveFd(fd: number, strict: boolean): void {
    const steps = [
      () => this.sys.setsockopt(fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_NO_QUEUE),
      () => this.sys.setsockopt(fd, IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_OFF),
      () => this.sys.detachFilter(fd),
    ];
    for (const step of steps) {
      try {
        step();
      } catch (err) {
        if (strict) throw err;
      }
    }
  }

  /**
   * A listening socket takes no new connection until the answered function is called: a
   * drop-all filter makes it ignore SYNs silently (no RST, no refusal), so clients retry
   * their SYN a second later — by then at the address's new host. Connections it accepted
   * before are not affected (a socket takes its listener's filter only when it is made).
   */
  holdListener(fd: number): () => void {
    this.sys.attachDropAllFilter(fd);
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      this.sys.detachFilter(fd);
    };
  }

  /** Restores `state` as a socket in repair mode (see the file's rules for the order). */
  restore(state: FrozenConnectionState): RestoredConnection {
    const sys = this.sys;
    const local = sockaddr(state.localAddress, state.localPort);
    const remote = sockaddr(state.remoteAddress, state.remotePort);
    if (local.length !== remote.length) throw new Error('the local and remote addresses are of different families');
    const fd = sys.socket(local.length === 16 ? AF_INET : AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    try {
      sys.setsockopt(fd, IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_ON);
      sys.setsockopt(fd, IPPROTO_TCP, TCP_MAXSEG, state.mss);
      sys.bind(fd, local);
      this.setQueueSeq(fd, TCP_RECV_QUEUE, state.recvSeq - state.recvQueue.length);
      this.setQueueSeq(fd, TCP_SEND_QUEUE, state.sendSeq - state.sendQueue.length);
      sys.connect(fd, remote);
      sys.setsockopt(fd, IPPROTO_TCP, TCP_REPAIR_OPTIONS, repairOptions(state));
      if (state.timestamps) sys.setsockopt(fd, IPPROTO_TCP, TCP_TIMESTAMP, uint32Bytes(state.timestamp));
      this.refill(fd, TCP_RECV_QUEUE, state.recvQueue);
      // Only the bytes the client may already have seen go in as sent; the never-sent tail is
      // written after repair off, like any new data.
      const sentBytes = state.sendQueue.length - state.unsentBytes;
      this.refill(fd, TCP_SEND_QUEUE, state.sendQueue.subarray(0, sentBytes));
      sys.setsockopt(fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_NO_QUEUE);
      sys.setsockopt(fd, IPPROTO_TCP, TCP_REPAIR_WINDOW, repairWindowBytes(state.window));
    } catch (err) {
      sys.close(fd);
      throw err;
    }
    let open = true;
    return {
      state,
      goLive: () => {
        if (!open) throw new Error('the restored connection was aborted or is live already');
        open = false;
        try {
          sys.setsockopt(fd, IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_OFF);
          sys.setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, 1);
        } catch (err) {
          sys.close(fd);
          throw err;
        }
        const socket = new Socket({ fd, readable: true, writable: true });
        const unsent = state.sendQueue.subarray(state.sendQueue.length - state.unsentBytes);
        if (unsent.length > 0) socket.write(unsent);
        return socket;
      },
      abort: () => {
        if (!open) return;
        open = false;
        sys.close(fd);
      },
    };
  }

  private setQueueSeq(fd: number, queue: number, seq: number): void {
    this.sys.setsockopt(fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, queue);
    this.sys.setsockopt(fd, IPPROTO_TCP, TCP_QUEUE_SEQ, uint32Bytes(seq));
  }

  /** Writes `bytes` into a queue in repair mode (the kernel takes them as received, or as sent). */
  private refill(fd: number, queue: number, bytes: Buffer): void {
    if (bytes.length === 0) return;
    this.sys.setsockopt(fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, queue);
    let offset = 0;
    while (offset < bytes.length) {
      const n = this.sys.send(fd, bytes.subarray(offset), 0);
      if (n === 0) throw new Error(`queue ${queue} took no bytes`);
      offset += n;
    }
  }
}

/** struct tcp_repair_opt[] for TCP_REPAIR_OPTIONS: what the handshake agreed. */
function repairOptions(state: FrozenConnectionState): Buffer {
  const options: Array<[number, number]> = [[TCPOPT_MAXSEG, state.mss]];
  if (state.windowScaling) options.push([TCPOPT_WINDOW, state.sndWscale | (state.rcvWscale << 16)]);
  if (state.timestamps) options.push([TCPOPT_TIMESTAMP, 0]);
  if (state.sack) options.push([TCPOPT_SACK_PERM, 0]);
  const bytes = Buffer.alloc(options.length * 8);
  options.forEach(([code, value], i) => {
    bytes.writeUInt32LE(code, i * 8);
    bytes.writeUInt32LE(value >>> 0, i * 8 + 4);
  });
  return bytes;
}

function uint32Bytes(value: number): Buffer {
  const bytes = Buffer.alloc(4);
  bytes.writeUInt32LE(value >>> 0);
  return bytes;
}

function repairWindowBytes(window: RepairWindow): Buffer {
  const bytes = Buffer.alloc(REPAIR_WINDOW_BYTES);
  [window.sndWl1, window.sndWnd, window.maxWindow, window.rcvWnd, window.rcvWup].forEach((v, i) => bytes.writeUInt32LE(v >>> 0, i * 4));
  return bytes;
}

/**
 * Stops libuv reading the socket (`pause()` does not: libuv keeps reading into the stream's
 * buffer). The handle's `reading` flag is left as node keeps it, so node's own flow control
 * sees no change and does not start reading again by itself.
 */
export function stopReading(socket: Socket): void {
  const handle = (socket as unknown as { _handle?: { readStop?: () => number } | null })._handle;
  handle?.readStop?.();
}

/** Lets libuv read the socket again after stopReading, unless node itself holds reads back (back-pressure). */
export function startReading(socket: Socket): void {
  const handle = (socket as unknown as { _handle?: { readStart?: () => number; reading?: boolean } | null })._handle;
  if (handle?.reading === true) handle.readStart?.();
}
