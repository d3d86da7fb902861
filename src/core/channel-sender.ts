/**
 * The sending side of one channel (one sender to one multicast group, or to one peer):
 * sequence numbers, batching of deltas into datagrams, fragmentation of large deltas,
 * and the retransmit buffer. Sans-IO: it returns packets; the driver seals and sends.
 *
 * Invariants:
 * - Sequence numbers start at 1 and increase by one per packet, never reused.
 * - The retransmit buffer holds, per sequence number, the conflation keys of the deltas
 *   it carried; the bytes live once per key (the latest value). Retransmitting a sequence
 *   number sends the values it still holds the latest of and leaves out those superseded
 *   by a newer packet: a receiver that missed an old packet never gets state older than
 *   what the newer packets bring, and a retransmission is never larger than the original.
 * - Buffer memory (the bytes of latest values plus a fixed cost per entry) is bounded by
 *   retransmitBufferBytes: beyond it the oldest entries are dropped, and a receiver
 *   that NACKs them is told they are gone (it then resyncs over gRPC).
 * - Entries every known receiver has acknowledged are released at once.
 * - `ackedBy` reports only what a receiver itself acknowledged: a receiver added later
 *   starts at 0 there, even though buffer release treats it as holding everything
 *   already trimmed (it will never be sent again, so it cannot be waited for).
 * - Flow control: flush sends no more while the packets not yet acknowledged by every
 *   receiver (in flight) carry sendWindowBytes or more; the rest stays queued, conflated
 *   to the latest delta per key, until acknowledgements open the window. A window with
 *   nothing in flight always takes one packet. The hold gives way when the queue outgrows
 *   retransmitBufferBytes (its oldest deltas beyond the bound are sent, so its memory is
 *   bounded) and when no acknowledgement has released anything for holdStallMs (one more
 *   window is sent per holdStallMs: a receiver that stopped answering must neither stall
 *   the channel until it is declared dead nor set off a flood; the buffer bound then
 *   ejects it, and it resyncs).
 */

import { dictionary, Fifo, SeqWindow } from './churn-free';

export interface ChannelSenderConfig {
  /** Largest encoded Data body (deltas and framing), in bytes; datagram overhead excluded. */
  maxPacketBytes: number;
  /** Bound on retransmit buffer memory, in bytes. */
  retransmitBufferBytes: number;
  /** Most packets resent for one NACK (the receiver NACKs the rest again). */
  maxRetransmitPerNack: number;
  /**
   * A packet resent less than this long ago (ms) is not resent again: NACKs for the same
   * packet from several multicast receivers, or the unicast and multicast copies of one
   * NACK, cost one retransmission. Below a receiver's NACK retry interval, so a resend
   * that was lost is still repaired.
   */
  repairHoldoffMs: number;
  /** Bytes in flight (sent, not acknowledged by every receiver) before flush holds back; 0 = no window. */
  sendWindowBytes: number;
  /** A hold with no acknowledgement progress for this long (ms) gives way. */
  holdStallMs: number;
}

/** Acknowledged entries freed per acknowledgement or `releaseMore` at most. */
export const RELEASE_PER_CALL = 4096;

/** The holdoff replication uses (receivers repeat a NACK after 10 ms at the soonest). */
export const DEFAULT_REPAIR_HOLDOFF_MS = 3;

/** A delta ready to send: its encoded bytes and the key conflation groups it by. */
export interface OutgoingDelta {
  /** Session id and part name (or the session alone for session-level changes). */
  key: string;
  bytes: Uint8Array;
}

export interface FragmentBody {
  deltaId: number;
  index: number;
  count: number;
  chunk: Uint8Array;
}

export interface DataPacket {
  seq: number;
  /** Encoded deltas (empty for a fragment, or for a retransmission whose keys are gone). */
  deltas: Uint8Array[];
  fragment: FragmentBody | undefined;
  retransmit: boolean;
}

/** Per-delta framing inside Data: field tag (1 byte) and a length varint (up to 3 bytes). */
export const DELTA_FRAMING_BYTES = 4;
/** Fixed cost charged to the buffer per entry (object, key array), in bytes. */
const ENTRY_OVERHEAD_BYTES = 64;

interface BufferEntry {
  seq: number;
  /** Bytes the packet carried when first sent (deltas with framing, or the chunk). */
  size: number;
  /** When it was last resent (-Infinity: never). */
  resentAt: number;
  /** Conflation keys of the deltas this packet carried. */
  keys: string[] | undefined;
  fragment: FragmentBody | undefined;
}

/** A delta waiting to be sent; a newer delta of the same key takes its place (and number). */
interface QueuedDelta {
  readonly key: string;
  delta: OutgoingDelta;
  /** Its number in enqueue order (the replaced one's, when it replaced one). */
  readonly order: number;
}

interface Latest {
  bytes: Uint8Array;
  /** The newest sequence number that carried this key. */
  seq: number;
}

export class ChannelSender {
  private seq = 0;
  /**
   * Deltas not yet sent, in order, one per conflation key (a newer delta
   * takes the older's place), and the same by key. No Map holds what flows through a
   * channel (see churn-free.ts).
   */
  private readonly queue = new Fifo<QueuedDelta>();
  private readonly queuedByKey = dictionary<QueuedDelta>();
  private enqueued = 0;
  private pendingBytes = 0;
  /** Bytes of the retained packets, as sent (what the window counts). */
  private inFlight = 0;
  /** The highest sequence number sent with the last ask for acknowledgement (askAck). */
  private askedThrough = 0;
  /** Since when deltas are held back with no acknowledgement progress (Infinity: none held). */
  private heldSince = Infinity;
  /** An acknowledgement released packets since the last flush. */
  private progressed = false;
  /** The retransmit buffer: an entry per sequence number from the first retained one. */
  private readonly buffer = new SeqWindow<BufferEntry>(1);
  private readonly latest = dictionary<Latest>();
  private bytes = 0;
  private nextDeltaId = 1;
  /** Per receiver: the floor for buffer release (starts at what was already trimmed). */
  private readonly acked = new Map<string, number>();
  /** Per receiver: the highest cumulative sequence number it acknowledged itself. */
  private readonly confirmed = new Map<string, number>();
  /** Counters for metrics. */
  readonly counters = {
    packets: 0,
    retransmitted: 0,
    fragments: 0,
    goneReplies: 0,
    trimmedUnacked: 0,
    repairsHeldOff: 0,
    /** Flushes that left deltas queued because the window was full. */
    windowHolds: 0,
    /** Holds that gave way (queue over the buffer bound, or no acknowledgement progress). */
    windowOverrides: 0,
    /** Queued deltas replaced by a newer delta of the same key before they were sent. */
    conflated: 0,
    /** NACKed ranges the receiver had acknowledged since (late copies), not answered. */
    staleNacks: 0,
  };

  constructor(private readonly config: ChannelSenderConfig) {
    if (config.maxPacketBytes < 64) throw new RangeError('maxPacketBytes must be at least 64');
  }

  /** Highest sequence number sent so far (0 = none). */
  /** The sequence number of the packet that carries `key`'s latest value still buffered (0: none). */
  latestSeqOf(key: string): number {
    return this.latest[key]?.seq ?? 0;
  }

  get highestSeq(): number {
    return this.seq;
  }

  /** Lowest sequence number still retransmittable. */
  get firstRetainedSeq(): number {
    return this.buffer.firstSeq;
  }

  get bufferBytes(): number {
    return this.bytes;
  }

  /** Deltas queued and not yet sent. */
  get pendingCount(): number {
    return this.queue.size;
  }

  /** Bytes of the deltas queued and not yet sent. */
  get queuedBytes(): number {
    return this.pendingBytes;
  }

  /** Bytes of the packets sent and not yet acknowledged by every receiver. */
  get inFlightBytes(): number {
    return this.inFlight;
  }

  /**
   * Whether the packets this flush made should ask their receivers to acknowledge at once:
   * half the send window is in flight and every receiver has answered the last ask.
   * Receivers otherwise acknowledge at their own pace (ChannelReceiverConfig.ackIntervalMs),
   * which a writer at full speed would outrun; asking at half the window keeps it open
   * without an acknowledgement per turn at lower rates. Call after `flush`.
   */
  askAck(): boolean {
    const window = this.config.sendWindowBytes;
    if (window === 0 || this.acked.size === 0 || this.inFlight < window / 2) return false;
    if (this.askedThrough > this.ackFloor()) return false;
    this.askedThrough = this.seq;
    return true;
  }

  /** When a hold gives way if no acknowledgement comes (Infinity: nothing held). */
  get holdDeadline(): number {
    return this.heldSince === Infinity ? Infinity : this.heldSince + this.config.holdStallMs;
  }

  /** Deltas enqueued so far (the number of the last one). */
  get enqueuedCount(): number {
    return this.enqueued;
  }

  /** Every delta enqueued up to this number has been sent (or replaced by one that was). */
  get sentThrough(): number {
    const first = this.queue.peek();
    return first !== undefined ? first.order - 1 : this.enqueued;
  }

  /** Queues a delta for the next flush, in place of a queued one of the same key. */
  enqueue(delta: OutgoingDelta): void {
    this.enqueued++;
    const queued = this.queuedByKey[delta.key];
    if (queued !== undefined) {
      // A replaced key keeps its place: order between keys does not matter (versions order
      // the changes of one key, and the key holds only the latest).
      this.pendingBytes -= queued.delta.bytes.length;
      this.counters.conflated++;
      queued.delta = delta;
    } else {
      const entry = { key: delta.key, delta, order: this.enqueued };
      this.queue.push(entry);
      this.queuedByKey[delta.key] = entry;
    }
    this.pendingBytes += delta.bytes.length;
  }

  /**
   * Packs queued deltas into packets (in order), numbering and buffering them, as far as
   * the send window allows; what does not fit stays queued for a later flush.
   */
  flush(now: number): DataPacket[] {
    if (this.queue.size === 0) return [];
    if (this.progressed && this.heldSince !== Infinity) this.heldSince = now;
    this.progressed = false;
    const window = this.config.sendWindowBytes;
    const stalled = now >= this.holdDeadline;
    // Nobody to acknowledge (no live receiver): nothing to wait for. A stalled hold lets
    // one more window go.
    const limit = window === 0 || this.acked.size === 0 ? Infinity : stalled ? this.inFlight + window : window;
    let overridden = false;
    const packets: DataPacket[] = [];
    const budget = this.config.maxPacketBytes;
    let deltas: Uint8Array[] = [];
    let keys: string[] = [];
    let size = 0;
    const close = () => {
      if (deltas.length === 0) return;
      packets.push(this.record(deltas, keys, size));
      deltas = [];
      keys = [];
      size = 0;
    };
    for (let queued = this.queue.peek(); queued !== undefined; queued = this.queue.peek()) {
      const { key, delta } = queued;
      const cost = delta.bytes.length + DELTA_FRAMING_BYTES;
      const open = this.inFlight + size === 0 || this.inFlight + size + Math.min(cost, budget) <= limit;
      if (!open) {
        // The queue outgrew its bound: its oldest excess goes past the window.
        if (this.pendingBytes <= this.config.retransmitBufferBytes) break;
        overridden = true;
      }
      this.queue.shift();
      delete this.queuedByKey[key];
      this.pendingBytes -= delta.bytes.length;
      if (cost > budget) {
        close();
        for (const packet of this.fragment(delta)) packets.push(packet);
        continue;
      }
      if (size + cost > budget) close();
      deltas.push(delta.bytes);
      keys.push(delta.key);
      size += cost;
    }
    close();
    if (stalled && this.inFlight > window) overridden = true;
    if (overridden) this.counters.windowOverrides++;
    if (this.queue.size === 0) this.heldSince = Infinity;
    else if (stalled) this.heldSince = now;
    else if (this.heldSince === Infinity) {
      this.heldSince = now;
      this.counters.windowHolds++;
    }
    this.enforceBound();
    return packets;
  }

  /**
   * Answers a NACK. Returns the packets to resend (at most maxRetransmitPerNack; none
   * resent within repairHoldoffMs) and, if any asked-for sequence number has left the
   * buffer, the first one still held.
   */
  handleNack(ranges: readonly (readonly [number, number])[], now: number, from?: string): { packets: DataPacket[]; goneBefore: number | undefined } {
    const packets: DataPacket[] = [];
    let goneBefore: number | undefined;
    // What the NACKing receiver has itself acknowledged since is a late copy of a NACK
    // already answered (the group copy of a multicast NACK queues behind the sender's own
    // multicast traffic): answering it would resend packets, or say they are gone.
    const confirmed = from === undefined ? 0 : (this.confirmed.get(from) ?? 0);
    for (const [first, last] of ranges) {
      if (first > last || last > this.seq) continue;
      if (last <= confirmed) {
        this.counters.staleNacks++;
        continue;
      }
      if (first < this.buffer.firstSeq) goneBefore = this.buffer.firstSeq;
      for (let s = Math.max(first, this.buffer.firstSeq); s <= last; s++) {
        if (packets.length >= this.config.maxRetransmitPerNack) break;
        const entry = this.buffer.get(s);
        if (entry !== undefined) {
          if (now - entry.resentAt < this.config.repairHoldoffMs) {
            this.counters.repairsHeldOff++;
            continue;
          }
          entry.resentAt = now;
        }
        // Released by acknowledgement from everyone: an empty packet fills the gap.
        packets.push(entry === undefined ? emptyPacket(s) : this.rebuild(entry));
      }
    }
    this.counters.retransmitted += packets.length;
    if (goneBefore !== undefined) this.counters.goneReplies++;
    return { packets, goneBefore };
  }

  /** Sets the receivers whose acknowledgements release buffer entries. */
  setReceivers(nodeIds: readonly string[]): void {
    const keep = new Set(nodeIds);
    for (const id of [...this.acked.keys()]) {
      if (!keep.has(id)) {
        this.acked.delete(id);
        this.confirmed.delete(id);
      }
    }
    for (const id of nodeIds) if (!this.acked.has(id)) this.acked.set(id, this.buffer.firstSeq - 1);
    this.release();
  }

  /** A receiver holds everything up to cumulativeSeq. */
  handleAck(nodeId: string, cumulativeSeq: number): void {
    const known = this.acked.get(nodeId);
    if (known === undefined) return;
    const seq = Math.min(cumulativeSeq, this.seq);
    if (seq > (this.confirmed.get(nodeId) ?? 0)) this.confirmed.set(nodeId, seq);
    if (seq <= known) return;
    this.acked.set(nodeId, seq);
    this.release();
  }

  /** The highest sequence number a receiver acknowledged itself (0 if none or unknown). */
  ackedBy(nodeId: string): number {
    return this.confirmed.get(nodeId) ?? 0;
  }

  /** Receivers tracked for acknowledgements. */
  receivers(): string[] {
    return [...this.acked.keys()];
  }

  private record(deltas: Uint8Array[], keys: string[], size: number): DataPacket {
    const seq = ++this.seq;
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i]!;
      const bytes = deltas[i]!;
      const previous = this.latest[key];
      if (previous !== undefined) {
        this.bytes -= previous.bytes.length;
        previous.bytes = bytes;
        previous.seq = seq;
      } else this.latest[key] = { bytes, seq };
      this.bytes += bytes.length;
    }
    this.buffer.add(seq, { seq, size, resentAt: -Infinity, keys, fragment: undefined });
    this.bytes += ENTRY_OVERHEAD_BYTES;
    this.inFlight += size;
    this.counters.packets++;
    return { seq, deltas, fragment: undefined, retransmit: false };
  }

  private fragment(delta: OutgoingDelta): DataPacket[] {
    const chunkSize = this.config.maxPacketBytes - 32;
    const count = Math.ceil(delta.bytes.length / chunkSize);
    const deltaId = this.nextDeltaId++;
    const packets: DataPacket[] = [];
    for (let index = 0; index < count; index++) {
      const chunk = delta.bytes.subarray(index * chunkSize, Math.min(delta.bytes.length, (index + 1) * chunkSize));
      const fragment: FragmentBody = { deltaId, index, count, chunk };
      const seq = ++this.seq;
      this.buffer.add(seq, { seq, size: chunk.length, resentAt: -Infinity, keys: undefined, fragment });
      this.bytes += chunk.length + ENTRY_OVERHEAD_BYTES;
      this.inFlight += chunk.length;
      this.counters.packets++;
      this.counters.fragments++;
      packets.push({ seq, deltas: [], fragment, retransmit: false });
    }
    // A whole-value fragment train supersedes older buffered values of the key.
    const previous = this.latest[delta.key];
    if (previous !== undefined) {
      this.bytes -= previous.bytes.length;
      delete this.latest[delta.key];
    }
    return packets;
  }

  private rebuild(entry: BufferEntry): DataPacket {
    if (entry.fragment !== undefined) return { seq: entry.seq, deltas: [], fragment: entry.fragment, retransmit: true };
    // Only keys this packet still carries the latest value of: a newer value travels in
    // its own, newer packet (which the receiver has or will NACK), and putting it here
    // could make the packet larger than the datagram limit.
    const deltas: Uint8Array[] = [];
    for (const key of entry.keys!) {
      const latest = this.latest[key];
      if (latest !== undefined && latest.seq === entry.seq) deltas.push(latest.bytes);
    }
    return { seq: entry.seq, deltas, fragment: undefined, retransmit: true };
  }

  /**
   * Whether entries every receiver acknowledged are still buffered: release frees at most
   * RELEASE_PER_CALL of them at a time, and `releaseMore` frees the next ones.
   */
  get releaseBacklog(): boolean {
    return this.acked.size > 0 && this.buffer.firstSeq <= this.ackFloor();
  }

  /** Frees the next acknowledged entries (see releaseBacklog). */
  releaseMore(): void {
    this.release();
  }

  /** The sequence number every receiver has acknowledged (Infinity without receivers). */
  private ackFloor(): number {
    let floor = Infinity;
    for (const seq of this.acked.values()) floor = Math.min(floor, seq);
    return floor;
  }

  /**
   * Frees entries every receiver acknowledged, RELEASE_PER_CALL at most: one acknowledgement
   * after a burst (a master's takeover claims) covered hundreds of thousands, and freeing
   * them at once held the node for 100-160 ms.
   */
  private release(): void {
    if (this.acked.size === 0) return;
    const floor = this.ackFloor();
    if (this.buffer.firstSeq <= floor) this.progressed = true;
    for (let freed = 0; freed < RELEASE_PER_CALL && this.buffer.firstSeq <= floor; freed++) this.dropOldest();
  }

  private enforceBound(): void {
    const floor = this.acked.size === 0 ? 0 : this.ackFloor();
    while (this.bytes > this.config.retransmitBufferBytes && this.buffer.firstSeq <= this.seq) {
      if (this.buffer.firstSeq > floor) this.counters.trimmedUnacked++;
      this.dropOldest();
    }
  }

  private dropOldest(): void {
    const seq = this.buffer.firstSeq;
    const entry = this.buffer.shift();
    if (entry === undefined) return;
    this.bytes -= ENTRY_OVERHEAD_BYTES;
    this.inFlight -= entry.size;
    if (entry.fragment !== undefined) {
      this.bytes -= entry.fragment.chunk.length;
      return;
    }
    for (const key of entry.keys!) {
      const latest = this.latest[key];
      if (latest !== undefined && latest.seq === seq) {
        delete this.latest[key];
        this.bytes -= latest.bytes.length;
      }
    }
  }
}

function emptyPacket(seq: number): DataPacket {
  return { seq, deltas: [], fragment: undefined, retransmit: true };
}
