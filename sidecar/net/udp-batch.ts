/**
 * Many datagrams in one system call: sendmmsg(2) and recvmmsg(2) on a node:dgram socket's
 * descriptor, through koffi. node:dgram makes a system call, a request object and a
 * callback per datagram, and a node flushing one event-loop turn's writes at 1,400 B sends
 * hundreds (one per 1 KiB part; three per part in unicast fan-out). Measured on this
 * project's machine (docs/benchmarks.md), 1,400-byte multicast datagrams to three
 * receivers: the sender's CPU per datagram 9.5-9.8 µs through node:dgram, 4.2-5.2 µs in
 * batches of 64 through sendmmsg; a receiver's 7.9-9.7 µs through node:dgram alone, 5.4-7.6
 * when each datagram node:dgram delivers is followed by recvmmsg reading what else is
 * queued (BatchReceiver): node:dgram stays the socket's reader and wakes the process, the
 * batch only drains.
 *
 * Rules:
 * - Linux on a 64-bit machine only (the struct layouts written here are LP64's) and IPv4
 *   destinations only; `loadBatchSender()` answers why not elsewhere, and callers keep
 *   node:dgram.
 * - `add` reserves room for one datagram in memory outside the V8 heap, so a sealer writes
 *   it in place; `flush` hands every datagram added since to the kernel, in order.
 * - A datagram the kernel refuses (a destination it cannot send to) is counted and
 *   skipped; when the socket's send buffer is full (EAGAIN, ENOBUFS) the rest go to the
 *   fallback (node:dgram, which queues them), copied out first. The caller sends nothing
 *   here while node:dgram has sends queued: their order would be lost.
 * - The memory is the sender's until `close()`; nothing is added or flushed after.
 */
import type { Socket as DgramSocket } from 'node:dgram';
import { isIPv4 } from 'node:net';
import { loadKoffi, sockaddr, udpSocketFd } from './socket-syscalls';

/** Datagrams per batch, and bytes of datagrams per batch (a larger batch is flushed in parts). */
export const BATCH_SLOTS = 256;
export const BATCH_DATA_BYTES = 1 << 20;

/** struct mmsghdr, struct iovec and struct sockaddr_in on LP64 Linux. */
const HEADER_BYTES = 64;
const IOVEC_BYTES = 16;
const NAME_BYTES = 16;
const TWO_POW_32 = 2 ** 32;

const EINTR = 4;
const EAGAIN = 11;
const ENOBUFS = 105;

/** Sends what the batch could not (the socket's buffer was full): node:dgram's send. */
export type FallbackSend = (bytes: Buffer, port: number, host: string) => void;

/** Where datagrams go: host and port, and their sockaddr_in when the batch can send there (IPv4). */
export interface BatchDestination {
  readonly host: string;
  readonly port: number;
  readonly sockaddr: Buffer | undefined;
}

/** A destination, its sockaddr built once (none for a host name, an IPv6 address or no port). */
export function batchDestination(host: string, port: number): BatchDestination {
  const valid = isIPv4(host) && Number.isInteger(port) && port > 0 && port <= 0xffff;
  return { host, port, sockaddr: valid ? sockaddr(host, port) : undefined };
}

export class BatchSender {
  private count = 0;
  private used = 0;
  /** Per slot: where its datagram is, and where it goes (for the fallback). */
  private readonly offsets = new Uint32Array(BATCH_SLOTS);
  private readonly lengths = new Uint32Array(BATCH_SLOTS);
  private readonly destinations: BatchDestination[] = [];
  private readonly memory: Buffer;

  constructor(
    private readonly fd: number,
    private readonly kernel: KernelMemory,
    private readonly sendmmsg: (fd: number, headers: Buffer, count: number, flags: number) => number,
    private readonly errno: () => number,
  ) {
    const memory = (this.memory = kernel.bytes);
    // Everything but the datagrams' places, lengths and destinations is the same every time.
    memory.fill(0, 0, IOVECS_AT);
    for (let slot = 0; slot < BATCH_SLOTS; slot++) {
      const header = slot * HEADER_BYTES;
      kernel.writeAddress(header, NAMES_AT + slot * NAME_BYTES); // msg_name
      memory.writeUInt32LE(NAME_BYTES, header + 8); // msg_namelen
      kernel.writeAddress(header + 16, IOVECS_AT + slot * IOVEC_BYTES); // msg_iov
      memory.writeUInt32LE(1, header + 24); // msg_iovlen
    }
  }

  /** Datagrams added and not flushed yet. */
  get pending(): number {
    return this.count;
  }

  /**
   * Room for a datagram of `length` bytes to `destination`, at `memory[at]`; -1 when the
   * batch is full (flush, then add again), or when the destination has no sockaddr (send it
   * another way).
   */
  add(destination: BatchDestination, length: number): number {
    if (this.kernel.closed) throw new Error('the batch sender is closed');
    const name = destination.sockaddr;
    if (name === undefined || this.count === BATCH_SLOTS || this.used + length > BATCH_DATA_BYTES) return -1;
    const slot = this.count++;
    const at = DATA_AT + this.used;
    this.used += length;
    name.copy(this.memory, NAMES_AT + slot * NAME_BYTES);
    const iovec = IOVECS_AT + slot * IOVEC_BYTES;
    this.kernel.writeAddress(iovec, at);
    this.memory.writeUInt32LE(length, iovec + 8);
    this.memory.writeUInt32LE(0, iovec + 12);
    this.offsets[slot] = at;
    this.lengths[slot] = length;
    this.destinations[slot] = destination;
    return at;
  }

  /** The memory `add` answers offsets into. */
  get buffer(): Buffer {
    return this.memory;
  }

  /** Sends every datagram added, in order; answers how many the kernel refused. */
  flush(fallback: FallbackSend): number {
    let start = 0;
    let refused = 0;
    const count = this.count;
    while (start < count) {
      const sent = this.sendmmsg(this.fd, this.memory.subarray(start * HEADER_BYTES), count - start, 0);
      if (sent > 0) {
        start += sent;
        continue;
      }
      const errno = this.errno();
      if (errno === EINTR) continue;
      if (errno === EAGAIN || errno === ENOBUFS) {
        for (let slot = start; slot < count; slot++) {
          const at = this.offsets[slot]!;
          const { port, host } = this.destinations[slot]!;
          fallback(Buffer.from(this.memory.subarray(at, at + this.lengths[slot]!)), port, host);
        }
        break;
      }
      // This datagram's destination is refused (EINVAL, ENETUNREACH, EACCES, …): skip it.
      refused++;
      start++;
    }
    this.count = 0;
    this.used = 0;
    return refused;
  }

  /** Frees the memory; the sender is not used after. */
  close(): void {
    this.count = 0;
    this.kernel.close();
  }
}

/** Memory outside the V8 heap whose address is known, for the kernel to read and write through pointers in it. */
class KernelMemory {
  closed = false;

  constructor(
    readonly bytes: Buffer,
    /** The address of bytes[0]. */
    private readonly base: number,
    private readonly free: () => void,
  ) {}

  /** Allocates `length` bytes through koffi. */
  static allocate(koffi: typeof import('koffi'), length: number): KernelMemory {
    const pointer = koffi.alloc('uint8_t', length);
    return new KernelMemory(Buffer.from(koffi.view(pointer, length)), Number(koffi.address(pointer)), () => koffi.free(pointer));
  }

  /** A 64-bit pointer to bytes[offset], written at bytes[at]. */
  writeAddress(at: number, offset: number): void {
    const address = this.base + offset;
    this.bytes.writeUInt32LE(address % TWO_POW_32, at);
    this.bytes.writeUInt32LE(Math.floor(address / TWO_POW_32), at + 4);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.free();
  }
}

const IOVECS_AT = BATCH_SLOTS * HEADER_BYTES;
const NAMES_AT = IOVECS_AT + BATCH_SLOTS * IOVEC_BYTES;
const DATA_AT = NAMES_AT + BATCH_SLOTS * NAME_BYTES;
const MEMORY_BYTES = DATA_AT + BATCH_DATA_BYTES;

type LoadResult = { sender: BatchSender } | { sender: undefined; reason: string };

/** A batch sender on `socket` (bound, IPv4), or why there cannot be one here. */
export function loadBatchSender(socket: DgramSocket): LoadResult {
  if (process.arch !== 'x64' && process.arch !== 'arm64') return { sender: undefined, reason: `sendmmsg is written for 64-bit Linux (this is ${process.arch})` };
  const loaded = loadKoffi();
  if (loaded.koffi === undefined) return { sender: undefined, reason: loaded.reason };
  const koffi = loaded.koffi;
  const fd = udpSocketFd(socket);
  if (fd === undefined) return { sender: undefined, reason: "the socket's file descriptor is not readable" };
  try {
    const libc = koffi.load('libc.so.6');
    const sendmmsg = libc.func('int sendmmsg(int fd, uint8_t *headers, unsigned int count, int flags)') as (fd: number, headers: Buffer, count: number, flags: number) => number;
    return { sender: new BatchSender(fd, KernelMemory.allocate(koffi, MEMORY_BYTES), sendmmsg, () => koffi.errno()) };
  } catch (err) {
    return { sender: undefined, reason: `sendmmsg is not reachable (${(err as Error).message})` };
  }
}

/** A datagram read by `BatchReceiver.drain`: where it came from (IPv4). */
export interface BatchSource {
  address: string;
  family: 'IPv4';
  port: number;
  /** address:port */
  from: string;
}

const MSG_DONTWAIT = 0x40;
/** Memory for the datagrams of one recvmmsg. */
const RECEIVE_DATA_BYTES = 2 << 20;

/**
 * Reads the datagrams queued on a socket, many to a system call, into memory outside the
 * V8 heap. A datagram is handed on as a view of that memory, valid only during the call
 * that hands it on. Each slot holds one byte more than the largest datagram the node
 * takes, so a larger one arrives cut to that size and is refused as oversized.
 */
export class BatchReceiver {
  /** Sources by IPv4 address and port, built once per peer. */
  private readonly sources = new Map<number, BatchSource>();
  private readonly memory: Buffer;

  constructor(
    private readonly kernel: KernelMemory,
    private readonly slots: number,
    private readonly slotBytes: number,
    private readonly recvmmsg: (fd: number, headers: Buffer, count: number, flags: number, timeout: null) => number,
  ) {
    const memory = (this.memory = kernel.bytes);
    const iovecs = slots * HEADER_BYTES;
    const names = iovecs + slots * IOVEC_BYTES;
    const data = names + slots * NAME_BYTES;
    memory.fill(0, 0, data);
    for (let slot = 0; slot < slots; slot++) {
      const header = slot * HEADER_BYTES;
      kernel.writeAddress(header, names + slot * NAME_BYTES); // msg_name
      kernel.writeAddress(header + 16, iovecs + slot * IOVEC_BYTES); // msg_iov
      memory.writeUInt32LE(1, header + 24); // msg_iovlen
      kernel.writeAddress(iovecs + slot * IOVEC_BYTES, data + slot * slotBytes); // iov_base
      memory.writeUInt32LE(slotBytes, iovecs + slot * IOVEC_BYTES + 8); // iov_len
    }
  }

  /**
   * Reads what is queued on `fd` now, at most `max` datagrams, and hands each to `each`
   * in arrival order. Answers how many were read (0 when nothing was queued or the read
   * failed: node:dgram, which reads the same socket, sees and reports its errors).
   */
  drain(fd: number, max: number, each: (datagram: Buffer, source: BatchSource) => void): number {
    if (this.kernel.closed) return 0;
    const { memory, slots, slotBytes } = this;
    const names = slots * (HEADER_BYTES + IOVEC_BYTES);
    const data = names + slots * NAME_BYTES;
    let read = 0;
    while (read < max) {
      const want = Math.min(slots, max - read);
      for (let slot = 0; slot < want; slot++) memory.writeUInt32LE(NAME_BYTES, slot * HEADER_BYTES + 8); // msg_namelen, in and out
      const got = this.recvmmsg(fd, memory, want, MSG_DONTWAIT, null);
      if (got <= 0) break;
      for (let slot = 0; slot < got; slot++) {
        const length = memory.readUInt32LE(slot * HEADER_BYTES + 56); // msg_len
        const at = data + slot * slotBytes;
        each(memory.subarray(at, at + length), this.source(names + slot * NAME_BYTES));
      }
      read += got;
      if (got < want) break;
    }
    return read;
  }

  close(): void {
    this.kernel.close();
  }

  private source(at: number): BatchSource {
    const port = this.memory.readUInt16BE(at + 2);
    const ip = this.memory.readUInt32BE(at + 4);
    const key = ip * 65536 + port;
    let source = this.sources.get(key);
    if (source === undefined) {
      const address = `${ip >>> 24}.${(ip >>> 16) & 0xff}.${(ip >>> 8) & 0xff}.${ip & 0xff}`;
      source = { address, family: 'IPv4', port, from: `${address}:${port}` };
      if (this.sources.size >= 4096) this.sources.clear();
      this.sources.set(key, source);
    }
    return source;
  }
}

/** A batch receiver for datagrams of at most `maxDatagramBytes`, or why there cannot be one here. */
export function loadBatchReceiver(maxDatagramBytes: number): { receiver: BatchReceiver } | { receiver: undefined; reason: string } {
  if (process.arch !== 'x64' && process.arch !== 'arm64') return { receiver: undefined, reason: `recvmmsg is written for 64-bit Linux (this is ${process.arch})` };
  const loaded = loadKoffi();
  if (loaded.koffi === undefined) return { receiver: undefined, reason: loaded.reason };
  const koffi = loaded.koffi;
  const slotBytes = maxDatagramBytes + 1;
  const slots = Math.max(4, Math.min(64, Math.floor(RECEIVE_DATA_BYTES / slotBytes)));
  const bytes = slots * (HEADER_BYTES + IOVEC_BYTES + NAME_BYTES + slotBytes);
  try {
    const libc = koffi.load('libc.so.6');
    const recvmmsg = libc.func('int recvmmsg(int fd, uint8_t *headers, unsigned int count, int flags, void *timeout)') as (
      fd: number,
      headers: Buffer,
      count: number,
      flags: number,
      timeout: null,
    ) => number;
    return { receiver: new BatchReceiver(KernelMemory.allocate(koffi, bytes), slots, slotBytes, recvmmsg) };
  } catch (err) {
    return { receiver: undefined, reason: `recvmmsg is not reachable (${(err as Error).message})` };
  }
}
