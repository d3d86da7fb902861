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
import type { Server, Socket } from 'node:net';

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
}

type LoadResult = { syscalls: SocketSyscalls } | { syscalls: undefined; reason: string };

let loaded: LoadResult | undefined;

/** Loads the calls once per process; answers why not when they cannot be had here. */
export function loadSocketSyscalls(): LoadResult {
  loaded ??= load();
  return loaded;
}

function load(): LoadResult {
  if (process.platform !== 'linux') return { syscalls: undefined, reason: `socket system calls need Linux (this is ${process.platform})` };
  let koffi: typeof import('koffi');
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    koffi = require('koffi') as typeof import('koffi');
  } catch (err) {
    return { syscalls: undefined, reason: `the optional dependency koffi is not installed (${(err as Error).message})` };
  }
  const libc = koffi.load('libc.so.6');
  const getsockopt = libc.func('int getsockopt(int, int, int, _Out_ uint8_t *value, _Inout_ uint32_t *length)');
  const setsockopt = libc.func('int setsockopt(int, int, int, const uint8_t *value, uint32_t length)');
  const recv = libc.func('long recv(int, _Out_ uint8_t *buffer, unsigned long length, int flags)');
  const ioctl = libc.func('int ioctl(int, unsigned long request, _Out_ int *value)');
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
  };
  return { syscalls };
}

/** The file descriptor of a listening node:net server (its socket), or undefined. */
export function serverFd(server: Server): number | undefined {
  const handle = (server as unknown as { _handle?: { fd?: number } | null })._handle;
  const fd = handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

/** The file descriptor under a connected node:net socket (TCP on Linux), or undefined. */
export function socketFd(socket: Socket): number | undefined {
  const handle = (socket as unknown as { _handle?: { fd?: number } })._handle;
  const fd = handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}
