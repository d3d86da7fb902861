/**
 * Many datagrams in one system call: sendmmsg(2) on a node:dgram socket's descriptor,
 * through koffi. node:dgram makes a system call, a request object and a callback per
 * datagram, and a node flushing one event-loop turn's writes at 1,400 B sends hundreds
 * (one per 1 KiB part; three per part in unicast fan-out). Measured on this project's
 * machine (docs/benchmarks.md): 9.5-9.8 µs of the sender's CPU per 1,400-byte multicast
 * datagram through node:dgram, 4.2-5.2 µs in batches of 64 through sendmmsg.
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

export class BatchSender {
  private count = 0;
  private used = 0;
  /** Per slot: where its datagram is, and where it goes (for the fallback). */
  private readonly offsets = new Uint32Array(BATCH_SLOTS);
  private readonly lengths = new Uint32Array(BATCH_SLOTS);
  private readonly hosts: string[] = new Array<string>(BATCH_SLOTS).fill('');
  private readonly ports = new Uint16Array(BATCH_SLOTS);
  /** sockaddr_in by "host:port", built once per destination. */
  private readonly names = new Map<string, Buffer>();
  private closed = false;

  constructor(
    private readonly fd: number,
    private readonly memory: Buffer,
    /** The address of `memory`'s first byte. */
    private readonly base: number,
    private readonly sendmmsg: (fd: number, headers: Buffer, count: number, flags: number) => number,
    private readonly errno: () => number,
    private readonly free: () => void,
  ) {
    // Everything but the datagrams' places, lengths and destinations is the same every time.
    for (let slot = 0; slot < BATCH_SLOTS; slot++) {
      const header = slot * HEADER_BYTES;
      memory.fill(0, header, header + HEADER_BYTES);
      this.writeAddress(header, NAMES_AT + slot * NAME_BYTES); // msg_name
      memory.writeUInt32LE(NAME_BYTES, header + 8); // msg_namelen
      this.writeAddress(header + 16, IOVECS_AT + slot * IOVEC_BYTES); // msg_iov
      memory.writeUInt32LE(1, header + 24); // msg_iovlen
    }
  }

  /** Datagrams added and not flushed yet. */
  get pending(): number {
    return this.count;
  }

  /**
   * Room for a datagram of `length` bytes to `host`:`port`, at `memory[at]`; -1 when the
   * batch is full (flush, then add again), or when `host` is not an IPv4 address (send it
   * another way).
   */
  add(host: string, port: number, length: number): number {
    if (this.closed) throw new Error('the batch sender is closed');
    if (this.count === BATCH_SLOTS || this.used + length > BATCH_DATA_BYTES) return -1;
    let name = this.names.get(host + ':' + port);
    if (name === undefined) {
      if (!isIPv4(host) || !Number.isInteger(port) || port <= 0 || port > 0xffff) return -1;
      if (this.names.size >= 4096) this.names.clear();
      name = sockaddr(host, port);
      this.names.set(host + ':' + port, name);
    }
    const slot = this.count++;
    const at = DATA_AT + this.used;
    this.used += length;
    name.copy(this.memory, NAMES_AT + slot * NAME_BYTES);
    const iovec = IOVECS_AT + slot * IOVEC_BYTES;
    this.writeAddress(iovec, at);
    this.memory.writeUInt32LE(length, iovec + 8);
    this.memory.writeUInt32LE(0, iovec + 12);
    this.offsets[slot] = at;
    this.lengths[slot] = length;
    this.hosts[slot] = host;
    this.ports[slot] = port;
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
          fallback(Buffer.from(this.memory.subarray(at, at + this.lengths[slot]!)), this.ports[slot]!, this.hosts[slot]!);
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
    if (this.closed) return;
    this.closed = true;
    this.count = 0;
    this.free();
  }

  /** A 64-bit pointer to memory[offset], written at memory[at]. */
  private writeAddress(at: number, offset: number): void {
    const address = this.base + offset;
    this.memory.writeUInt32LE(address % TWO_POW_32, at);
    this.memory.writeUInt32LE(Math.floor(address / TWO_POW_32), at + 4);
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
    const pointer = koffi.alloc('uint8_t', MEMORY_BYTES);
    const base = Number(koffi.address(pointer));
    const memory = Buffer.from(koffi.view(pointer, MEMORY_BYTES));
    return { sender: new BatchSender(fd, memory, base, sendmmsg, () => koffi.errno(), () => koffi.free(pointer)) };
  } catch (err) {
    return { sender: undefined, reason: `sendmmsg is not reachable (${(err as Error).message})` };
  }
}
