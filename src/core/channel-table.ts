/**
 * The channels of one node: a sender per outgoing channel (named by its target node in
 * unicast mode, '' for the multicast group) and a receiver per incoming one (keyed by
 * sender node, sender incarnation and channel, so a restarted sender starts fresh
 * channels), with the sums metrics and back-pressure read from them.
 *
 * Rules:
 * - Receivers exist only for channels of members (the engine checks before it asks), so
 *   strangers cannot make the table grow.
 * - Creating a receiver retires the same node's other incarnations (and `retire` does so
 *   on a restart); nothing else removes channels.
 * - Receivers note, per packet, forwarded writes they did not take as owner
 *   (acknowledgements carry the notes), hence ChannelReceiver<Superseded>.
 */
import { ChannelReceiver, type ChannelReceiverConfig } from './channel-receiver';
import { ChannelSender, DEFAULT_REPAIR_HOLDOFF_MS } from './channel-sender';
import type { Superseded } from '../gen/baton/v1/wire';
import type { Random } from '../store/random';
import { isGroupChannel } from './multicast-groups';

export interface ChannelTableConfig {
  nodeId: string;
  maxPayloadBytes: number;
  retransmitBufferBytes: number;
  sendWindowBytes: number;
  /** How long a held send window waits for acknowledgement progress before one more goes (ms). */
  holdStallMs: number;
  receiver: ChannelReceiverConfig;
}

/** Datagram bytes around a packet's deltas besides the two node ids (tags, lengths, seq, flags). */
const DATA_OVERHEAD_BYTES = 48;
/** Packets retransmitted for one NACK at most. */
const MAX_RETRANSMIT_PER_NACK = 64;

export type Receiver = ChannelReceiver<Superseded>;

export function receiverKey(from: string, incarnation: bigint, channel: string): string {
  return `${from}/${incarnation}/${channel}`;
}

export function splitReceiverKey(key: string): [string, string, string] {
  const first = key.indexOf('/');
  const second = key.indexOf('/', first + 1);
  return [key.slice(0, first), key.slice(first + 1, second), key.slice(second + 1)];
}

export class ChannelTable {
  readonly senders = new Map<string, ChannelSender>();
  readonly receivers = new Map<string, Receiver>();

  constructor(
    private readonly config: ChannelTableConfig,
    private readonly random: Random,
  ) {}

  /** The sender of `channel`, created with `receivers()` as its receivers if new. */
  sender(channel: string, receivers: () => string[]): ChannelSender {
    let sender = this.senders.get(channel);
    if (sender === undefined) {
      sender = new ChannelSender({
        maxPacketBytes: this.config.maxPayloadBytes - DATA_OVERHEAD_BYTES - this.config.nodeId.length - channel.length,
        retransmitBufferBytes: this.config.retransmitBufferBytes,
        maxRetransmitPerNack: MAX_RETRANSMIT_PER_NACK,
        repairHoldoffMs: DEFAULT_REPAIR_HOLDOFF_MS,
        sendWindowBytes: this.config.sendWindowBytes,
        holdStallMs: this.config.holdStallMs,
      });
      sender.setReceivers(receivers());
      this.senders.set(channel, sender);
    }
    return sender;
  }

  /** What `nodeId` acknowledged on `channel` (the channel must exist). */
  ackedBy(channel: string, nodeId: string): number {
    return this.senders.get(channel)!.ackedBy(nodeId);
  }

  /**
   * The live peers changed: a group channel reaches its group's members (`groupReceivers`;
   * without it, every live peer), a unicast one its target while live.
   */
  setLivePeers(others: readonly string[], groupReceivers?: (channel: string) => string[]): void {
    for (const [channel, sender] of this.senders) {
      if (isGroupChannel(channel)) sender.setReceivers(groupReceivers === undefined ? [...others] : groupReceivers(channel));
      else if (!others.includes(channel)) sender.setReceivers([]);
      else sender.setReceivers([channel]);
    }
  }

  /** The receiver of a channel, created (retiring the sender's older incarnations) if new. */
  receiver(key: string, from: string, incarnation: bigint, channel: string): Receiver {
    let receiver = this.receivers.get(key);
    if (receiver === undefined) {
      this.retire(from, incarnation);
      receiver = new ChannelReceiver<Superseded>(this.config.receiver, isGroupChannel(channel), this.random);
      this.receivers.set(key, receiver);
    }
    return receiver;
  }

  /** Drops a node's receivers, except incarnation `keep`'s when given; returns their keys. */
  retire(nodeId: string, keep: bigint | undefined): string[] {
    const prefix = nodeId + '/';
    const retired: string[] = [];
    for (const key of [...this.receivers.keys()]) {
      if (key.startsWith(prefix) && (keep === undefined || !key.startsWith(`${prefix}${keep}/`))) {
        this.receivers.delete(key);
        retired.push(key);
      }
    }
    return retired;
  }

  /** Drops every sender's receiver of `channel` (this node left that group); returns their keys. */
  retireChannel(channel: string): string[] {
    const suffix = '/' + channel;
    const retired: string[] = [];
    for (const key of [...this.receivers.keys()]) {
      if (splitReceiverKey(key)[2] === channel && key.endsWith(suffix)) {
        this.receivers.delete(key);
        retired.push(key);
      }
    }
    return retired;
  }

  /** The receivers of one sender incarnation's channels. */
  receiversOf(nodeId: string, incarnation: bigint): [string, Receiver][] {
    const prefix = `${nodeId}/${incarnation}/`;
    return [...this.receivers].filter(([key]) => key.startsWith(prefix));
  }

  /**
   * The highest sequence number of `channel` while some receiver has not acknowledged all
   * of it, else 0 (heartbeats name such channels).
   */
  unackedHighest(channel: string): number {
    const sender = this.senders.get(channel);
    if (sender === undefined) return 0;
    const behind = isGroupChannel(channel) ? sender.receivers().some((id) => sender.ackedBy(id) < sender.highestSeq) : sender.ackedBy(channel) < sender.highestSeq;
    return behind ? sender.highestSeq : 0;
  }

  // --- sums ------------------------------------------------------------------------

  retransmitBufferBytes(): number {
    return sum(this.senders.values(), (s) => s.bufferBytes);
  }

  sendWindow(): { queuedDeltas: number; inFlightBytes: number; holds: number; overrides: number; conflated: number } {
    const senders = [...this.senders.values()];
    return {
      queuedDeltas: sum(senders, (s) => s.pendingCount),
      inFlightBytes: sum(senders, (s) => s.inFlightBytes),
      holds: sum(senders, (s) => s.counters.windowHolds),
      overrides: sum(senders, (s) => s.counters.windowOverrides),
      conflated: sum(senders, (s) => s.counters.conflated),
    };
  }

  /** Whether a channel with no suspect receiver has more than `bytes` queued. */
  queueOver(bytes: number, suspect: (nodeId: string) => boolean): boolean {
    for (const sender of this.senders.values()) {
      if (sender.queuedBytes <= bytes) continue;
      if (sender.receivers().some(suspect)) continue;
      return true;
    }
    return false;
  }

  unackedByPeer(): Map<string, number> {
    const lag = new Map<string, number>();
    for (const sender of this.senders.values()) {
      for (const nodeId of sender.receivers()) {
        const behind = sender.highestSeq - sender.ackedBy(nodeId);
        lag.set(nodeId, Math.max(lag.get(nodeId) ?? 0, behind));
      }
    }
    return lag;
  }

  allAcknowledged(counts: (nodeId: string) => boolean): boolean {
    for (const sender of this.senders.values()) {
      if (sender.pendingCount > 0 && sender.receivers().some(counts)) return false;
      for (const nodeId of sender.receivers()) if (counts(nodeId) && sender.ackedBy(nodeId) < sender.highestSeq) return false;
    }
    return true;
  }

  counters(): { packets: number; retransmitted: number; fragments: number; goneReplies: number; repairsHeldOff: number; staleNacks: number; duplicates: number; nacksSent: number } {
    const senders = [...this.senders.values()];
    const receivers = [...this.receivers.values()];
    return {
      packets: sum(senders, (s) => s.counters.packets),
      retransmitted: sum(senders, (s) => s.counters.retransmitted),
      fragments: sum(senders, (s) => s.counters.fragments),
      goneReplies: sum(senders, (s) => s.counters.goneReplies),
      repairsHeldOff: sum(senders, (s) => s.counters.repairsHeldOff),
      staleNacks: sum(senders, (s) => s.counters.staleNacks),
      duplicates: sum(receivers, (r) => r.counters.duplicates),
      nacksSent: sum(receivers, (r) => r.counters.nacksSent),
    };
  }
}

function sum<T>(items: Iterable<T>, of: (item: T) => number): number {
  let total = 0;
  for (const item of items) total += of(item);
  return total;
}
