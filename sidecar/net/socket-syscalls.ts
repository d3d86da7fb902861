/**
 * The socket system calls Node does not expose (getsockopt/setsockopt with any option, recv
 * with flags, ioctl), called on a socket's file descriptor through koffi, an FFI library that
 * ships prebuilt binaries. Linux only.
 *
 * Rules: koffi is an optional dependency — `loadSocketSyscalls()` answers undefined (with the
 * reason) when it is missing or the platform is not Linux, and everything built on it must
 * work without it (the proxy does). Every call returns the kernel's answer or throws a
 * `SyscallError` naming the call and errno; nothing here keeps state beyond the loaded
 * functions. Option numbers are Linux's (include/uapi/linux/tcp.h, asm-generic/socket.h).
 */
import type { Socket as DgramSocket } from 'node:dgram';
import { isIPv4, isIPv6, type Server, type Socket } from 'node:net';

export const SOL_SOCKET = 1;
export const IPPROTO_TCP = 6;
export const TCP_INFO = 11;
export const TCP_REPAIR = 19;
/** TCP_REPAIR values: on, off (sends a window probe), off without the window probe. */
export const TCP_REPAIR_ON = 1;
export const TCP_REPAIR_OFF = 0;
export const TCP_REPAIR_OFF_NO_WP = -1;
export const TCP_REPAIR_QUEUE = 20;
export const TCP_QUEUE_SEQ = 21;
/** TCP_REPAIR_QUEUE values: which queue TCP_QUEUE_SEQ and recv address. */
export const TCP_RECV_QUEUE = 1;
export const TCP_SEND_QUEUE = 2;
export const TCP_NO_QUEUE = 0;
export const TCP_REPAIR_OPTIONS = 22;
export const TCP_REPAIR_WINDOW = 29;
export const TCP_SAVE_SYN = 27;
export const TCP_SAVED_SYN = 28;
export const TCP_MAXSEG = 2;
export const SO_REUSEADDR = 2;
export const SO_ATTACH_FILTER = 26;
export const MSG_PEEK = 0x2;
export const MSG_DONTWAIT = 0x40;
export const SIOCINQ = 0x541b;
export const SIOCOUTQ = 0x5411;
/** Bytes of the send queue never sent (the rest is sent and not yet acknowledged). */
export const SIOCOUTQNSD = 0x894b;
export const TCP_TIMESTAMP = 24;
export const SO_DETACH_FILTER = 27;
export const AF_INET = 2;
export const AF_INET6 = 10;
export const SOCK_STREAM = 1;
export const SOCK_CLOEXEC = 0o2000000;
const F_DUPFD_CLOEXEC = 1030;
const CLONE_NEWNET = 0x40000000;
/** TCP option kinds for TCP_REPAIR_OPTIONS (RFC 793, 7323, 2018). */
export const TCPOPT_MAXSEG = 2;
export const TCPOPT_WINDOW = 3;
export const TCPOPT_SACK_PERM = 4;
export const TCPOPT_TIMESTAMP = 8;

/** A failed system call: which one, and the errno the kernel answered. */
export class SyscallError extends Error {
  constructor(readonly call: string, readonly errno: number) {
    super(`${call} failed: errno ${errno}`);
    this.name = 'SyscallError';
  }
}

export interface SocketSyscalls {
  /** getsockopt into a buffer of `length` bytes; answers the bytes the kernel wrote. */
  getsockopt(fd: number, level: number, name: number, length: number): Buffer;
  /** getsockopt of an int option. */
  getsockoptInt(fd: number, level: number, name: number): number;
  /** setsockopt with raw bytes (structs) or an int. */
  setsockopt(fd: number, level: number, name: number, value: Buffer | number): void;
  /** recv into `buffer`; answers the byte count (flags such as MSG_PEEK | MSG_DONTWAIT). */
  recv(fd: number, buffer: Buffer, flags: number): number;
  /** ioctl with an int out-argument (SIOCINQ, SIOCOUTQ). */
  ioctlInt(fd: number, request: number): number;
  /** A new socket (close-on-exec is the caller's to ask for with SOCK_CLOEXEC); answers its fd. */
  socket(domain: number, type: number, protocol: number): number;
  /** bind / connect to a sockaddr built by `sockaddr()`. */
  bind(fd: number, address: Buffer): void;
  connect(fd: number, address: Buffer): void;
  /** send; answers the byte count taken (may be fewer than asked). */
  send(fd: number, buffer: Buffer, flags: number): number;
  /** A second descriptor of the same socket, close-on-exec (so hooks the sidecar runs do not inherit it). */
  dup(fd: number): number;
  close(fd: number): void;
  /** SO_ATTACH_FILTER with a one-instruction classic BPF program that drops every packet. */
  attachDropAllFilter(fd: number): void;
  /**
   * SO_ATTACH_FILTER with a classic BPF program that drops the UDP datagrams sent from
   * `address`:`port` (IPv4) and accepts every other.
   */
  attachDropSourceFilter(fd: number, address: string, port: number): void;
  /** SO_DETACH_FILTER. */
  detachFilter(fd: number): void;
  /**
   * setns(fd, CLONE_NEWNET): the calling thread (Node's main thread) makes its sockets in the
   * network namespace `fd` names from now on. For tests that place both ends of a connection.
   */
  enterNetworkNamespace(fd: number): void;
}

/** The option and queue calls alone: what reading a connection's state needs (TCP state capture). */
export type SocketOptionCalls = Pick<SocketSyscalls, 'getsockopt' | 'getsockoptInt' | 'setsockopt' | 'recv' | 'ioctlInt'>;

type LoadResult = { syscalls: SocketSyscalls } | { syscalls: undefined; reason: string };

let loaded: LoadResult | undefined;

/** Loads the calls once per process; answers why not when they cannot be had here. */
export function loadSocketSyscalls(): LoadResult {
  loaded ??= load();
  return loaded;
}

/** koffi on Linux, or why it cannot be had here (what needs it says what it is for). */
export function loadKoffi(): { koffi: typeof import('koffi') } | { koffi: undefined; reason: string } {
  if (process.platform !== 'linux') return { koffi: undefined, reason: `needs Linux (this is ${process.platform})` };
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return { koffi: require('koffi') as typeof import('koffi') };
  } catch (err) {
    return { koffi: undefined, reason: `the optional dependency koffi is not installed (${(err as Error).message})` };
  }
}

function load(): LoadResult {
  const loadedKoffi = loadKoffi();
  if (loadedKoffi.koffi === undefined) return { syscalls: undefined, reason: `socket system calls: ${loadedKoffi.reason}` };
  const koffi = loadedKoffi.koffi;
  const libc = koffi.load('libc.so.6');
  const getsockopt = libc.func('int getsockopt(int, int, int, _Out_ uint8_t *value, _Inout_ uint32_t *length)');
  const setsockopt = libc.func('int setsockopt(int, int, int, const uint8_t *value, uint32_t length)');
  const recv = libc.func('long recv(int, _Out_ uint8_t *buffer, unsigned long length, int flags)');
  const ioctl = libc.func('int ioctl(int, unsigned long request, _Out_ int *value)');
  const socket = libc.func('int socket(int domain, int type, int protocol)');
  const bind = libc.func('int bind(int, const uint8_t *address, uint32_t length)');
  const connect = libc.func('int connect(int, const uint8_t *address, uint32_t length)');
  const send = libc.func('long send(int, const uint8_t *buffer, unsigned long length, int flags)');
  const fcntl = libc.func('int fcntl(int, int cmd, int arg)');
  const close = libc.func('int close(int)');
  const setns = libc.func('int setns(int fd, int nstype)');
  // struct sock_filter / sock_fprog (linux/filter.h). Anonymous: koffi's type names are
  // process-wide, and a second load (a test runner's fresh module registry) would clash.
  const sockFilter = koffi.struct({ code: 'uint16_t', jt: 'uint8_t', jf: 'uint8_t', k: 'uint32_t' });
  const sockFprog = koffi.struct({ len: 'uint16_t', filter: koffi.pointer(sockFilter) });
  const setsockoptProgram = libc.func('setsockopt', 'int', ['int', 'int', 'int', koffi.pointer(sockFprog), 'uint32_t']);
  // BPF_RET | BPF_K with k = 0: accept zero bytes of every packet, that is drop it.
  const dropAll = { len: 1, filter: [{ code: 0x06, jt: 0, jf: 0, k: 0 }] };
  const fail = (call: string): never => {
    throw new SyscallError(call, koffi.errno());
  };
  const intBytes = (value: number) => {
    const bytes = Buffer.alloc(4);
    bytes.writeInt32LE(value);
    return bytes;
  };
  const syscalls: SocketSyscalls = {
    getsockopt(fd, level, name, length) {
      const value = Buffer.alloc(length);
      const size = [length];
      if (getsockopt(fd, level, name, value, size) !== 0) fail(`getsockopt(${level}, ${name})`);
      return value.subarray(0, size[0]);
    },
    getsockoptInt(fd, level, name) {
      return syscalls.getsockopt(fd, level, name, 4).readInt32LE(0);
    },
    setsockopt(fd, level, name, value) {
      const bytes = typeof value === 'number' ? intBytes(value) : value;
      if (setsockopt(fd, level, name, bytes, bytes.length) !== 0) fail(`setsockopt(${level}, ${name})`);
    },
    recv(fd, buffer, flags) {
      const n = Number(recv(fd, buffer, buffer.length, flags));
      if (n < 0) fail('recv');
      return n;
    },
    ioctlInt(fd, request) {
      const value = [0];
      if (ioctl(fd, request, value) !== 0) fail(`ioctl(${request.toString(16)})`);
      return value[0];
    },
    socket(domain, type, protocol) {
      const fd = socket(domain, type, protocol);
      if (fd < 0) fail('socket');
      return fd;
    },
    bind(fd, address) {
      if (bind(fd, address, address.length) !== 0) fail('bind');
    },
    connect(fd, address) {
      if (connect(fd, address, address.length) !== 0) fail('connect');
    },
    send(fd, buffer, flags) {
      const n = Number(send(fd, buffer, buffer.length, flags));
      if (n < 0) fail('send');
      return n;
    },
    dup(fd) {
      const copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
      if (copy < 0) fail('fcntl(F_DUPFD_CLOEXEC)');
      return copy;
    },
    close(fd) {
      if (close(fd) !== 0) fail('close');
    },
    attachDropAllFilter(fd) {
      if (setsockoptProgram(fd, SOL_SOCKET, SO_ATTACH_FILTER, dropAll, koffi.sizeof(sockFprog)) !== 0) fail('setsockopt(SO_ATTACH_FILTER)');
    },
    attachDropSourceFilter(fd, address, port) {
      const program = dropSourceProgram(address, port);
      if (setsockoptProgram(fd, SOL_SOCKET, SO_ATTACH_FILTER, { len: program.length, filter: program }, koffi.sizeof(sockFprog)) !== 0) {
        fail('setsockopt(SO_ATTACH_FILTER)');
      }
    },
    detachFilter(fd) {
      syscalls.setsockopt(fd, SOL_SOCKET, SO_DETACH_FILTER, 0);
    },
    enterNetworkNamespace(fd) {
      if (setns(fd, CLONE_NEWNET) !== 0) fail('setns(CLONE_NEWNET)');
    },
  };
  return { syscalls };
}

/** Offset of the network (IP) header in classic BPF loads (SKF_NET_OFF, linux/filter.h). */
const SKF_NET_OFF = -0x100000;

/**
 * A classic BPF program for a UDP socket that drops datagrams from `address`:`port` (IPv4)
 * and accepts the rest whole. A UDP socket's filter sees the packet from the UDP header on
 * (source port at offset 0); the IPv4 header, source address at byte 12, is reached
 * through SKF_NET_OFF. Loads are in network order, so the constants are plain numbers.
 */
export function dropSourceProgram(address: string, port: number): { code: number; jt: number; jf: number; k: number }[] {
  if (!isIPv4(address)) throw new RangeError(`not an IPv4 address: ${address}`);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new RangeError(`not a port: ${port}`);
  const ip = address.split('.').reduce((value, octet) => value * 256 + Number(octet), 0);
  const BPF_LD_H_ABS = 0x28;
  const BPF_LD_W_ABS = 0x20;
  const BPF_JEQ_K = 0x15;
  const BPF_RET_K = 0x06;
  return [
    { code: BPF_LD_H_ABS, jt: 0, jf: 0, k: 0 }, // A = source port
    { code: BPF_JEQ_K, jt: 0, jf: 2, k: port }, // not ours: accept
    { code: BPF_LD_W_ABS, jt: 0, jf: 0, k: (SKF_NET_OFF + 12) >>> 0 }, // A = source address
    { code: BPF_JEQ_K, jt: 1, jf: 0, k: ip }, // ours: drop
    { code: BPF_RET_K, jt: 0, jf: 0, k: 0xffffffff }, // accept the whole datagram
    { code: BPF_RET_K, jt: 0, jf: 0, k: 0 }, // drop
  ];
}

/** The file descriptor of a listening node:net server (its socket), or undefined. */
export function serverFd(server: Server): number | undefined {
  const handle = (server as unknown as { _handle?: { fd?: number } | null })._handle;
  const fd = handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

/**
 * The file descriptor of a bound node:dgram socket, or undefined. Read from the socket's
 * internal state: its `_handle` getter is deprecated and warns once per process.
 */
export function udpSocketFd(socket: DgramSocket): number | undefined {
  const state = Object.getOwnPropertySymbols(socket).find((symbol) => symbol.description === 'state symbol');
  const fd = state === undefined ? undefined : (socket as unknown as Record<symbol, { handle?: { fd?: number } | null } | undefined>)[state]?.handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

/** The file descriptor under a connected node:net socket (TCP on Linux), or undefined. */
export function socketFd(socket: Socket): number | undefined {
  const handle = (socket as unknown as { _handle?: { fd?: number } })._handle;
  const fd = handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

/**
 * A struct sockaddr_in or sockaddr_in6 for bind/connect: family in host order, port and
 * address in network order. Throws on an address that is neither IPv4 nor IPv6.
 */
export function sockaddr(address: string, port: number): Buffer {
  const v4 = address.startsWith('::ffff:') && isIPv4(address.slice(7)) ? address.slice(7) : address;
  if (isIPv4(v4)) {
    const bytes = Buffer.alloc(16);
    bytes.writeUInt16LE(AF_INET, 0);
    bytes.writeUInt16BE(port, 2);
    v4.split('.').forEach((octet, i) => bytes.writeUInt8(Number(octet), 4 + i));
    return bytes;
  }
  if (!isIPv6(address)) throw new Error(`not an IP address: ${address}`);
  const bytes = Buffer.alloc(28);
  bytes.writeUInt16LE(AF_INET6, 0);
  bytes.writeUInt16BE(port, 2);
  ipv6Bytes(address).copy(bytes, 8);
  return bytes;
}

function ipv6Bytes(address: string): Buffer {
  const [head, tail = ''] = address.split('::');
  const groups = (part: string) => (part === '' ? [] : part.split(':'));
  const expand = (parts: string[]) =>
    parts.flatMap((g) => (isIPv4(g) ? [((Number(g.split('.')[0]) << 8) | Number(g.split('.')[1])).toString(16), ((Number(g.split('.')[2]) << 8) | Number(g.split('.')[3])).toString(16)] : [g]));
  const left = expand(groups(head!));
  const right = address.includes('::') ? expand(groups(tail)) : [];
  const all = [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
  const bytes = Buffer.alloc(16);
  all.forEach((g, i) => bytes.writeUInt16BE(parseInt(g, 16), i * 2));
  return bytes;
}
