/**
 * Reassembly of deltas too large for one datagram: fragments in, whole encoded deltas
 * out, per sender incarnation.
 *
 * Rules:
 * - Memory is bounded per sender by `maxBytes`, charged per chunk and per entry as well as
 *   by bytes, so tiny fragments claiming huge counts cannot hold more than the budget.
 * - A fragment that would exceed the budget drops its delta's partial entry and is an
 *   'overflow'; an entry older than `timeoutMs` is dropped by `expire`. Either way the
 *   fragments were already counted as received by the channel, so no NACK brings the
 *   delta back: the caller resyncs that sender's channels (both are returned, not acted on).
 * - `nextExpiryAt` is when `expire` next has work, for the caller's timer: each sender's
 *   entries are kept in start order (callers' `now` does not go back), so its first entry
 *   is its oldest.
 * - A repeated chunk, or one whose count disagrees with its entry's, is ignored.
 */

export interface FragmentReassemblyConfig {
  /** Bound on bytes of partly reassembled deltas per sender incarnation. */
  maxBytes: number;
  /** Incomplete reassemblies older than this are dropped (ms). */
  timeoutMs: number;
}

export interface FragmentIn {
  deltaId: number;
  index: number;
  count: number;
  chunk: Uint8Array;
}

/** What one fragment did: completed a delta (its encoded bytes), or why not. */
export type FragmentResult =
  | { kind: 'complete'; bytes: Uint8Array }
  | { kind: 'partial' }
  | { kind: 'ignored' }
  | { kind: 'malformed' }
  | { kind: 'overflow' };

interface Entry {
  chunks: Map<number, Uint8Array>;
  count: number;
  /** Bytes charged to the sender's budget (chunks plus overheads). */
  bytes: number;
  startedAt: number;
}

interface SenderState {
  entries: Map<number, Entry>;
  bytes: number;
}

export const REASSEMBLY_CHUNK_OVERHEAD = 64;
export const REASSEMBLY_ENTRY_OVERHEAD = 256;
/** Most fragments one delta may have. */
export const MAX_FRAGMENT_COUNT = 1 << 16;

export class FragmentReassembly {
  /** Keyed by `node/incarnation`. */
  private readonly senders = new Map<string, SenderState>();

  constructor(private readonly config: FragmentReassemblyConfig) {}

  add(from: string, incarnation: bigint, fragment: FragmentIn, now: number): FragmentResult {
    const { count, index } = fragment;
    if (count < 2 || count > MAX_FRAGMENT_COUNT || index >= count) return { kind: 'malformed' };
    const key = senderKey(from, incarnation);
    let sender = this.senders.get(key);
    if (sender === undefined) {
      sender = { entries: new Map(), bytes: 0 };
      this.senders.set(key, sender);
    }
    let entry = sender.entries.get(fragment.deltaId);
    if (entry !== undefined && (entry.count !== count || entry.chunks.has(index))) return { kind: 'ignored' };
    const cost = fragment.chunk.length + REASSEMBLY_CHUNK_OVERHEAD + (entry === undefined ? REASSEMBLY_ENTRY_OVERHEAD : 0);
    if (sender.bytes + cost > this.config.maxBytes) {
      if (entry !== undefined) {
        sender.bytes -= entry.bytes;
        sender.entries.delete(fragment.deltaId);
      }
      return { kind: 'overflow' };
    }
    if (entry === undefined) {
      entry = { chunks: new Map(), count, bytes: 0, startedAt: now };
      sender.entries.set(fragment.deltaId, entry);
    }
    // A copy: the chunk is a view of a datagram the transport reuses once it is handled.
    entry.chunks.set(index, Buffer.from(fragment.chunk));
    entry.bytes += cost;
    sender.bytes += cost;
    if (entry.chunks.size < count) return { kind: 'partial' };
    sender.entries.delete(fragment.deltaId);
    sender.bytes -= entry.bytes;
    const ordered: Uint8Array[] = [];
    for (let i = 0; i < count; i++) ordered.push(entry.chunks.get(i)!);
    return { kind: 'complete', bytes: Buffer.concat(ordered) };
  }

  /**
   * Drops reassemblies older than the timeout; returns the senders (node, incarnation)
   * that lost a delta that way, each once.
   */
  expire(now: number): { nodeId: string; incarnation: bigint }[] {
    const lost: { nodeId: string; incarnation: bigint }[] = [];
    for (const [key, sender] of this.senders) {
      let expired = false;
      for (const [id, entry] of sender.entries) {
        if (now - entry.startedAt <= this.config.timeoutMs) continue;
        sender.entries.delete(id);
        sender.bytes -= entry.bytes;
        expired = true;
      }
      if (expired) lost.push(splitSenderKey(key));
      if (sender.entries.size === 0) this.senders.delete(key);
    }
    return lost;
  }

  /**
   * The first millisecond at which `expire` drops an entry (Infinity = none held): an
   * entry expires once strictly more than `timeoutMs` has passed since it started.
   */
  nextExpiryAt(): number {
    let next = Infinity;
    for (const sender of this.senders.values()) {
      const oldest = sender.entries.values().next();
      if (!oldest.done) next = Math.min(next, Math.floor(oldest.value.startedAt + this.config.timeoutMs) + 1);
    }
    return next;
  }

  /** Forgets a node's reassemblies, except those of incarnation `keep` when given. */
  retire(nodeId: string, keep: bigint | undefined): void {
    for (const key of [...this.senders.keys()]) {
      const sender = splitSenderKey(key);
      if (sender.nodeId === nodeId && sender.incarnation !== keep) this.senders.delete(key);
    }
  }

  /** Reassembly memory held now, over all senders (bytes). */
  bytesHeld(): number {
    let total = 0;
    for (const sender of this.senders.values()) total += sender.bytes;
    return total;
  }
}

function senderKey(nodeId: string, incarnation: bigint): string {
  return `${nodeId}/${incarnation}`;
}

function splitSenderKey(key: string): { nodeId: string; incarnation: bigint } {
  const slash = key.lastIndexOf('/');
  return { nodeId: key.slice(0, slash), incarnation: BigInt(key.slice(slash + 1)) };
}
