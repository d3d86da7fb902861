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
 * - Segmented sends (UDP_SEGMENT, Linux's UDP segmentation offload): `add` with a segment
 *   size puts several datagrams to one destination, laid end to end at that size (the last
 *   may be shorter), in one slot, and the kernel cuts them apart as late as it can. Each
 *   arrives as a datagram of its own. Measured here (1,400-byte datagrams multicast to three
 *   receivers, 46 per send, receivers keeping up): the sender's kernel time per datagram
 *   8.1 µs in sendmmsg batches against 2.4 µs segmented, each receiver's 2.8 against 0.8-1.0
 *   µs (docs/benchmarks.md). Where the kernel refuses one (no UDP_SEGMENT, a device without
 *   checksum offload: EINVAL, EIO), the sender stops segmenting (`segmenting` turns false)
 *   and sends that slot's datagrams one by one through the fallback.
 */
import type { Socket as DgramSocket } from 'node:dgram';
import { isIPv4 } from 'node:net';
import { MAX_PADDING } from '../../src/wire/datagram-codec';
import { loadKoffi, loadSocketSyscalls, sockaddr, udpSocketFd } from './socket-syscalls';

/** Datagrams per batch, and bytes of datagrams per batch (a larger batch is flushed in parts). */
export const BATCH_SLOTS = 256;
export const BATCH_DATA_BYTES = 1 << 20;
/**
 * Datagrams in one segmented send at most (the kernel's UDP_MAX_SEGMENTS is 64 on older
 * kernels), and its bytes at most (IPv4 carries 65,507 bytes of UDP payload).
 */
export const MAX_SEGMENTS = 64;
export const MAX_SEGMENTED_BYTES = 65_000;

/** struct mmsghdr, struct iovec and struct sockaddr_in on LP64 Linux. */
const HEADER_BYTES = 64;
const IOVEC_BYTES = 16;
const NAME_BYTES = 16;
/** CMSG_SPACE(sizeof(uint16_t)) and CMSG_LEN of it: a cmsghdr (16 bytes) and the segment size. */
const CONTROL_BYTES = 24;
const CONTROL_LENGTH = 18;
const SOL_UDP = 17;
const UDP_SEGMENT = 103;
const UDP_GRO = 104;
const TWO_POW_32 = 2 ** 32;

const EIO = 5;
const EINTR = 4;
const EAGAIN = 11;
const EINVAL = 22;
const ENOPROTOOPT = 92;
const EOPNOTSUPP = 95;
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
  /**
   * Whether `add` takes a segment size: the kernel takes segmented sends (until one is
   * refused; `segmentingRefusedErrno` then holds the errno of that refusal, else 0).
   */
  segmenting: boolean;
  segmentingRefusedErrno = 0;
  /** Datagrams the kernel took in segmented sends, since construction. */
  segmentedDatagrams = 0;
  private count = 0;
  private used = 0;
  /** Per slot: where its datagram is, its segment size (0: one datagram), and where it goes (for the fallback). */
  private readonly offsets = new Uint32Array(BATCH_SLOTS);
  private readonly lengths = new Uint32Array(BATCH_SLOTS);
  private readonly segmentSizes = new Uint32Array(BATCH_SLOTS);
  private readonly destinations: BatchDestination[] = [];
  private readonly memory: Buffer;

  /** @param segmenting whether the kernel takes UDP_SEGMENT (it may still refuse a send: see the rules). */
  constructor(
    private readonly fd: number,
    private readonly kernel: KernelMemory,
    private readonly sendmmsg: (fd: number, headers: number, count: number, flags: number) => number,
    private readonly errno: () => number,
    segmenting = false,
  ) {
    this.segmenting = segmenting;
    const memory = (this.memory = kernel.bytes);
    // Everything but the datagrams' places, lengths and destinations is the same every time.
    memory.fill(0, 0, IOVECS_AT);
    for (let slot = 0; slot < BATCH_SLOTS; slot++) {
      const header = slot * HEADER_BYTES;
      kernel.writeAddress(header, NAMES_AT + slot * NAME_BYTES); // msg_name
      memory.writeUInt32LE(NAME_BYTES, header + 8); // msg_namelen
      kernel.writeAddress(header + 16, IOVECS_AT + slot * IOVEC_BYTES); // msg_iov
      memory.writeUInt32LE(1, header + 24); // msg_iovlen
      // The control message of a segmented send; msg_control points at it only then.
      const control = CONTROLS_AT + slot * CONTROL_BYTES;
      memory.writeUInt32LE(CONTROL_LENGTH, control); // cmsg_len
      memory.writeInt32LE(SOL_UDP, control + 8); // cmsg_level
      memory.writeInt32LE(UDP_SEGMENT, control + 12); // cmsg_type
    }
  }

  /** Datagrams added and not flushed yet. */
  get pending(): number {
    return this.count;
  }

  /**
   * Room for a datagram of `length` bytes to `destination`, at `memory[at]`; -1 when the
   * batch is full (flush, then add again), or when the destination has no sockaddr (send it
   * another way). With a segment size (only while `segmenting`; see planSegments), the
   * room is for several datagrams to that destination, each at a multiple of the segment
   * size from `at`, `length` bytes in all.
   */
  add(destination: BatchDestination, length: number, segmentBytes = 0): number {
    if (this.kernel.closed) throw new Error('the batch sender is closed');
    if (segmentBytes !== 0 && (!this.segmenting || segmentBytes > 0xffff || length > MAX_SEGMENTED_BYTES || length > segmentBytes * MAX_SEGMENTS)) {
      throw new RangeError(`a segmented send of ${length} bytes in segments of ${segmentBytes}`);
    }
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
    const header = slot * HEADER_BYTES;
    const control = CONTROLS_AT + slot * CONTROL_BYTES;
    if (segmentBytes > 0) {
      this.kernel.writeAddress(header + 32, control); // msg_control
      this.memory.writeUInt32LE(CONTROL_BYTES, header + 40); // msg_controllen
      this.memory.writeUInt16LE(segmentBytes, control + 16);
    } else {
      this.memory.fill(0, header + 32, header + 48);
    }
    this.offsets[slot] = at;
    this.lengths[slot] = length;
    this.segmentSizes[slot] = segmentBytes;
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
      const sent = this.sendmmsg(this.fd, this.kernel.addressAt(start * HEADER_BYTES), count - start, 0);
      if (sent > 0) {
        for (let slot = start; slot < start + sent; slot++) {
          const segment = this.segmentSizes[slot]!;
          if (segment > 0) this.segmentedDatagrams += Math.ceil(this.lengths[slot]! / segment);
        }
        start += sent;
        continue;
      }
      const errno = this.errno();
      if (errno === EINTR) continue;
      if (errno === EAGAIN || errno === ENOBUFS) {
        for (let slot = start; slot < count; slot++) this.sendApart(slot, fallback);
        break;
      }
      if (this.segmentSizes[start]! > 0 && (errno === EINVAL || errno === EIO || errno === EOPNOTSUPP || errno === ENOPROTOOPT)) {
        // The kernel (or the device) takes no segmented sends: these go one by one, and
        // nothing more is segmented.
        this.segmenting = false;
        this.segmentingRefusedErrno = errno;
        this.sendApart(start, fallback);
        start++;
        continue;
      }
      // This datagram's destination is refused (EINVAL, ENETUNREACH, EACCES, …): skip it.
      refused++;
      start++;
    }
    this.count = 0;
    this.used = 0;
    return refused;
  }

  /** Hands a slot's datagram (each of a segmented send's) to the fallback, copied out. */
  private sendApart(slot: number, fallback: FallbackSend): void {
    const at = this.offsets[slot]!;
    const end = at + this.lengths[slot]!;
    const step = this.segmentSizes[slot]! || end - at;
    const { port, host } = this.destinations[slot]!;
    for (let from = at; from < end; from += step) fallback(Buffer.from(this.memory.subarray(from, Math.min(end, from + step))), port, host);
  }

  /** Frees the memory; the sender is not used after. */
  close(): void {
    this.count = 0;
    this.kernel.close();
  }
}

/** One segmented send: how many datagrams (from the first planned), and the segment size. */
export interface SegmentRun {
  count: number;
  segmentBytes: number;
}

/**
 * The longest run of datagrams from `start` that can go as one segmented send: datagrams
 * `start`, `start + 1`, … (below `end`) as long as each goes where the one before goes
 * (`sameDestination(i)`); every one but the last padded to one segment size (by 0, or
 * MIN_PADDING to MAX_PADDING bytes: see DatagramSealer.sealInto), the last no longer than
 * it; at most MAX_SEGMENTS datagrams and MAX_SEGMENTED_BYTES in all, and no segment over
 * `maxDatagramBytes`. `lengths[i]` is datagram i's sealed length. A run of one is a
 * datagram sent alone (its segment size is its length).
 */
export function planSegments(lengths: ArrayLike<number>, start: number, end: number, sameDestination: (i: number) => boolean, maxDatagramBytes: number): SegmentRun {
  let count = 1;
  let segmentBytes = lengths[start]!;
  // Over the datagrams before the candidate last one (those padded): the longest, the
  // shortest, and whether one is a byte short of the longest.
  let longest = -1;
  let shortest = Infinity;
  let oneShortOfLongest = false;
  for (let j = start + 1; j < end && j - start < MAX_SEGMENTS && sameDestination(j); j++) {
    const padded = lengths[j - 1]!;
    if (padded > longest) {
      longest = padded;
      oneShortOfLongest = false;
      for (let k = start; k < j; k++) if (lengths[k] === longest - 1) oneShortOfLongest = true;
    } else if (padded === longest - 1) oneShortOfLongest = true;
    shortest = Math.min(shortest, padded);
    // The segment is the longest of all (the last included), unless a padded one is a byte
    // short of it: a 1-byte padding does not exist, so the segment is 2 bytes longer.
    const last = lengths[j]!;
    const segment = last > longest ? (longest === last - 1 ? last + 2 : last) : oneShortOfLongest ? longest + 2 : longest;
    if (segment - shortest > MAX_PADDING || segment > maxDatagramBytes || segment * (j - start) + last > MAX_SEGMENTED_BYTES) break;
    count = j - start + 1;
    segmentBytes = segment;
  }
  return { count, segmentBytes };
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

  /** The address of bytes[offset]. */
  addressAt(offset: number): number {
    return this.base + offset;
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
const CONTROLS_AT = NAMES_AT + BATCH_SLOTS * NAME_BYTES;
const DATA_AT = CONTROLS_AT + BATCH_SLOTS * CONTROL_BYTES;
const MEMORY_BYTES = DATA_AT + BATCH_DATA_BYTES;

type LoadResult = { sender: BatchSender } | { sender: undefined; reason: string };

/**
 * A batch sender on `socket` (bound, IPv4), or why there cannot be one here. It segments
 * (see the rules) when `segmentation` allows and the kernel takes UDP_SEGMENT.
 */
export function loadBatchSender(socket: DgramSocket, segmentation = true): LoadResult {
  if (process.arch !== 'x64' && process.arch !== 'arm64') return { sender: undefined, reason: `sendmmsg is written for 64-bit Linux (this is ${process.arch})` };
  const loaded = loadKoffi();
  if (loaded.koffi === undefined) return { sender: undefined, reason: loaded.reason };
  const koffi = loaded.koffi;
  const fd = udpSocketFd(socket);
  if (fd === undefined) return { sender: undefined, reason: "the socket's file descriptor is not readable" };
  try {
    const libc = koffi.load('libc.so.6');
    // Addresses as plain numbers: koffi converts a Buffer argument at several times the cost.
    const sendmmsg = libc.func('int sendmmsg(int fd, uintptr_t headers, unsigned int count, int flags)') as (fd: number, headers: number, count: number, flags: number) => number;
    const segmenting = segmentation && segmentationTaken(fd);
    return { sender: new BatchSender(fd, KernelMemory.allocate(koffi, MEMORY_BYTES), sendmmsg, () => koffi.errno(), segmenting) };
  } catch (err) {
    return { sender: undefined, reason: `sendmmsg is not reachable (${(err as Error).message})` };
  }
}

/** Whether the kernel takes UDP_SEGMENT on this socket: it reads the option (Linux 4.18 and later). */
function segmentationTaken(fd: number): boolean {
  const { syscalls } = loadSocketSyscalls();
  try {
    return syscalls !== undefined && syscalls.getsockoptInt(fd, SOL_UDP, UDP_SEGMENT) >= 0;
  } catch {
    return false;
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
/** A slot of a coalescing receiver: the most a UDP datagram over IPv4, or a coalesced run, carries. */
const COALESCED_SLOT_BYTES = 65_536;
/** The control message UDP_GRO hands with a coalesced run: a cmsghdr (16 bytes) and the segment size (an int). */
const GRO_CONTROL_BYTES = 24;
const GRO_CONTROL_LENGTH = 20;

/**
 * Asks the kernel to hand over the datagrams of a segmented send (or runs of datagrams it
 * coalesced on the way in) as one buffer, with their segment size (UDP_GRO, Linux 5.0 and
 * later); true when it took the option. A segmented send then costs the sender no cutting
 * per receiving socket, and each receiver one read instead of one per datagram (measured:
 * docs/benchmarks.md). Every reader of the socket must then cut runs apart: BatchReceiver
 * made with `coalescing` does, with the size the kernel tells; node:dgram, which does not
 * tell it, hands the run whole (see coalescedSegmentBytes in datagram-codec.ts).
 */
export function receiveCoalesced(fd: number): boolean {
  const { syscalls } = loadSocketSyscalls();
  if (syscalls === undefined) return false;
  try {
    syscalls.setsockopt(fd, SOL_UDP, UDP_GRO, 1);
    return true;
  } catch {
    return false;
  }
}

/**
 * Hands on each datagram of a run laid in bytes[from, end) at `segment` bytes each (the last
 * may be shorter); answers how many.
 */
export function eachSegment(bytes: Buffer, from: number, end: number, segment: number, each: (datagram: Buffer) => void): number {
  let count = 0;
  for (let at = from; at < end; at += segment, count++) each(bytes.subarray(at, Math.min(at + segment, end)));
  return count;
}

/**
 * Reads the datagrams queued on a socket, many to a system call, into memory outside the
 * V8 heap. A datagram is handed on as a view of that memory, valid only during the call
 * that hands it on. Each slot holds one byte more than the largest datagram the node
 * takes, so a larger one arrives cut to that size and is refused as oversized. A
 * coalescing receiver (for sockets with UDP_GRO: receiveCoalesced) has slots of 64 KiB
 * and a control message each, and cuts a run apart at the segment size the kernel gives.
 */
export class BatchReceiver {
  /** Sources by IPv4 address and port, built once per peer. */
  private readonly sources = new Map<number, BatchSource>();
  private readonly memory: Buffer;
  /** Datagrams handed on from runs (a coalescing receiver's), since construction. */
  coalescedDatagrams = 0;
  /** Where the source addresses, the control messages and the datagrams begin in memory. */
  private readonly names: number;
  private readonly controls: number;
  private readonly data: number;

  constructor(
    private readonly kernel: KernelMemory,
    private readonly slots: number,
    private readonly slotBytes: number,
    private readonly recvmmsg: (fd: number, headers: number, count: number, flags: number, timeout: number) => number,
    readonly coalescing = false,
  ) {
    const memory = (this.memory = kernel.bytes);
    const iovecs = slots * HEADER_BYTES;
    const names = (this.names = iovecs + slots * IOVEC_BYTES);
    const controls = (this.controls = names + slots * NAME_BYTES);
    const data = (this.data = controls + (coalescing ? slots * GRO_CONTROL_BYTES : 0));
    memory.fill(0, 0, data);
    for (let slot = 0; slot < slots; slot++) {
      const header = slot * HEADER_BYTES;
      kernel.writeAddress(header, names + slot * NAME_BYTES); // msg_name
      kernel.writeAddress(header + 16, iovecs + slot * IOVEC_BYTES); // msg_iov
      memory.writeUInt32LE(1, header + 24); // msg_iovlen
      if (coalescing) kernel.writeAddress(header + 32, controls + slot * GRO_CONTROL_BYTES); // msg_control
      kernel.writeAddress(iovecs + slot * IOVEC_BYTES, data + slot * slotBytes); // iov_base
      memory.writeUInt32LE(slotBytes, iovecs + slot * IOVEC_BYTES + 8); // iov_len
    }
  }

  /**
   * Reads what is queued on `fd` now, at most `max` reads (a run of a coalescing receiver
   * is one), and hands each datagram to `each` in arrival order. Answers how many datagrams
   * it handed on (0 when nothing was queued or the read failed: node:dgram, which reads the
   * same socket, sees and reports its errors).
   */
  drain(fd: number, max: number, each: (datagram: Buffer, source: BatchSource) => void): number {
    if (this.kernel.closed) return 0;
    const { memory, slots, slotBytes, coalescing, names, controls, data } = this;
    let read = 0;
    let handed = 0;
    while (read < max) {
      const want = Math.min(slots, max - read);
      for (let slot = 0; slot < want; slot++) {
        const header = slot * HEADER_BYTES;
        memory.writeUInt32LE(NAME_BYTES, header + 8); // msg_namelen, in and out
        if (coalescing) memory.writeUInt32LE(GRO_CONTROL_BYTES, header + 40); // msg_controllen, in and out
      }
      const got = this.recvmmsg(fd, this.kernel.addressAt(0), want, MSG_DONTWAIT, 0);
      if (got <= 0) break;
      for (let slot = 0; slot < got; slot++) {
        const header = slot * HEADER_BYTES;
        const length = memory.readUInt32LE(header + 56); // msg_len
        const at = data + slot * slotBytes;
        const source = this.source(names + slot * NAME_BYTES);
        const segment = coalescing ? this.segmentSize(header, controls + slot * GRO_CONTROL_BYTES) : 0;
        if (segment <= 0 || segment >= length) {
          each(memory.subarray(at, at + length), source);
          handed++;
          continue;
        }
        const count = eachSegment(memory, at, at + length, segment, (datagram) => each(datagram, source));
        handed += count;
        this.coalescedDatagrams += count;
      }
      read += got;
      if (got < want) break;
    }
    return handed;
  }

  /** The segment size of the run in a slot (UDP_GRO's control message), or 0: one datagram. */
  private segmentSize(header: number, control: number): number {
    const memory = this.memory;
    if (memory.readUInt32LE(header + 40) < GRO_CONTROL_LENGTH) return 0; // msg_controllen
    if (memory.readInt32LE(control + 8) !== SOL_UDP || memory.readInt32LE(control + 12) !== UDP_GRO) return 0;
    return memory.readInt32LE(control + 16);
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

/**
 * A batch receiver for datagrams of at most `maxDatagramBytes` (for sockets with UDP_GRO,
 * `coalescing`: runs of them), or why there cannot be one here.
 */
export function loadBatchReceiver(maxDatagramBytes: number, coalescing = false): { receiver: BatchReceiver } | { receiver: undefined; reason: string } {
  if (process.arch !== 'x64' && process.arch !== 'arm64') return { receiver: undefined, reason: `recvmmsg is written for 64-bit Linux (this is ${process.arch})` };
  const loaded = loadKoffi();
  if (loaded.koffi === undefined) return { receiver: undefined, reason: loaded.reason };
  const koffi = loaded.koffi;
  const slotBytes = coalescing ? COALESCED_SLOT_BYTES : maxDatagramBytes + 1;
  const slots = Math.max(4, Math.min(64, Math.floor(RECEIVE_DATA_BYTES / slotBytes)));
  const bytes = slots * (HEADER_BYTES + IOVEC_BYTES + NAME_BYTES + (coalescing ? GRO_CONTROL_BYTES : 0) + slotBytes);
  try {
    const libc = koffi.load('libc.so.6');
    // Addresses as plain numbers (the headers', and 0 for no timeout), as for sendmmsg.
    const recvmmsg = libc.func('int recvmmsg(int fd, uintptr_t headers, unsigned int count, int flags, uintptr_t timeout)') as (
      fd: number,
      headers: number,
      count: number,
      flags: number,
      timeout: number,
    ) => number;
    return { receiver: new BatchReceiver(KernelMemory.allocate(koffi, bytes), slots, slotBytes, recvmmsg, coalescing) };
  } catch (err) {
    return { receiver: undefined, reason: `recvmmsg is not reachable (${(err as Error).message})` };
  }
}
