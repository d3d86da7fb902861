/**
 * The NACK repair loop around the channel table: a sender answers NACKs with
 * retransmissions (or 'gone' below its buffer); a receiver's poll becomes NACKs, an
 * acknowledgement, or a resync; overheard NACKs and 'gone' reach the receivers they are
 * about; and every receiver keeps its entry in the engine's timer table.
 *
 * Rules:
 * - A receiver has a timer entry only once its sender's address is known: before that
 *   nothing can be sent, so its NACK attempts and acknowledgement wait (and an overdue
 *   entry would spin the driver). Callers refresh entries when addresses may change.
 * - Datagrams go on the shared outbox; a resync a receiver needs is returned (the engine
 *   requests it), and the receiver counts it as started.
 * - Retiring a node's old incarnation drops its receivers, their timers and its partial
 *   deltas together.
 */
import type { DataPacket } from './channel-sender';
import { receiverKey, splitReceiverKey, type ChannelTable, type Receiver } from './channel-table';
import type { FragmentReassembly } from './fragment-reassembly';
import type { Membership } from './membership';
import type { EngineStats, Outbox } from './outbox';
import { ackFor, nackFor } from './receiver-replies';
import type { TimerTable } from './timer-table';
import { encodeData } from '../wire/delta-codec';
import { groupDestination, groupOfChannel, isGroupChannel } from './multicast-groups';

export interface ChannelRepairConfig {
  nodeId: string;
  incarnation: bigint;
  maxPayloadBytes: number;
}

/** A resync one receiver needs from its channel's sender. */
export interface ReceiverResync {
  peerNodeId: string;
  peerAddress: string;
  channels: { key: string; upTo: number }[];
}

export type NackRanges = readonly (readonly [number, number])[];

/** The timer-table entry for reassembly expiry. */
export const REASSEMBLY_TIMER = 'reassembly';

export class ChannelRepair {
  constructor(
    private readonly config: ChannelRepairConfig,
    private readonly channels: ChannelTable,
    private readonly timers: TimerTable,
    private readonly reassembly: FragmentReassembly,
    /** Members as membership knows them (only `member` is read). */
    private readonly membership: Pick<Membership, 'member'>,
    private readonly outbox: Outbox,
    private readonly stats: EngineStats,
    /** Whether a write is waited for on `channel`: its retransmissions ask for an acknowledgement at once. */
    private readonly awaited: (channel: string) => boolean = () => false,
  ) {}

  /** Sends one data packet of this node's `channel` (dropped while the target's address is unknown). */
  sendData(channel: string, packet: DataPacket, ackRequested: boolean): void {
    const payload = encodeData(this.config.nodeId, channel, packet, ackRequested);
    const to = isGroupChannel(channel) ? groupDestination(groupOfChannel(channel) ?? 0) : this.addressOf(channel);
    if (to === undefined) return;
    if (packet.retransmit) this.stats.retransmissions++;
    if (packet.fragment !== undefined) this.stats.fragmentsSent++;
    this.outbox.push(to, payload, 'data');
  }

  /** A NACK of this node's `channel` from `from`; returns why it was dropped, if it was. */
  nack(from: string, incarnation: bigint, channel: string, ranges: NackRanges, fromAddress: string, now: number): 'stale_incarnation' | 'misrouted' | undefined {
    this.stats.nacksReceived++;
    if (incarnation !== this.config.incarnation) return 'stale_incarnation';
    if (!isGroupChannel(channel) && channel !== from) return 'misrouted';
    const sender = this.channels.senders.get(channel);
    if (sender === undefined) {
      // Nothing was ever sent on this channel by this incarnation: tell it to resync.
      this.gone(fromAddress, channel, 1);
      return undefined;
    }
    const { packets, goneBefore } = sender.handleNack(ranges, now, from);
    const ackRequested = packets.length > 0 && this.awaited(channel);
    for (const packet of packets) this.sendData(channel, packet, ackRequested);
    if (goneBefore !== undefined) this.gone(fromAddress, channel, goneBefore);
    return undefined;
  }

  /** Another receiver's NACK of a group channel: this node's receiver may hold its own back. */
  overheardNack(senderNodeId: string, senderIncarnation: bigint, channel: string, ranges: NackRanges, now: number): void {
    const key = receiverKey(senderNodeId, senderIncarnation, channel);
    const receiver = this.channels.receivers.get(key);
    if (receiver === undefined) return;
    receiver.handleOverheardNack(ranges, now);
    this.refresh(key, receiver);
  }

  /** The sender no longer retains what came before `firstRetained`. */
  goneFrom(from: string, incarnation: bigint, channel: string, firstRetained: number): void {
    const key = receiverKey(from, incarnation, channel);
    const receiver = this.channels.receivers.get(key);
    if (receiver === undefined) return;
    receiver.handleGone(firstRetained);
    this.refresh(key, receiver);
  }

  /** A heartbeat named the highest sequence number of a channel to this node. */
  highest(from: string, incarnation: bigint, channel: string, highest: number, now: number): void {
    const key = receiverKey(from, incarnation, channel);
    const receiver = this.receiverFor(key, from, incarnation, channel);
    receiver.handleHighest(highest, now);
    this.refresh(key, receiver);
  }

  /** The receiver of a channel, created (retiring older incarnations' channels) if new. */
  receiverFor(key: string, from: string, incarnation: bigint, channel: string): Receiver {
    if (!this.channels.receivers.has(key)) this.retire(from, incarnation);
    return this.channels.receiver(key, from, incarnation, channel);
  }

  /** Forgets a node's channels to this node and partial deltas, except incarnation `keep`'s. */
  /** Drops the receivers of a group channel this node no longer listens on. */
  retireChannel(channel: string): void {
    for (const key of this.channels.retireChannel(channel)) this.timers.clear('receive ' + key);
  }

  retire(nodeId: string, keep: bigint | undefined): void {
    for (const key of this.channels.retire(nodeId, keep)) this.timers.clear('receive ' + key);
    this.reassembly.retire(nodeId, keep);
    this.timers.set(REASSEMBLY_TIMER, this.reassembly.nextExpiryAt());
  }

  /**
   * A delta of this sender incarnation was dropped after its fragments counted as
   * received, so no NACK will bring it back: its channels resync instead.
   */
  resyncChannelsOf(nodeId: string, incarnation: bigint): void {
    for (const [key, receiver] of this.channels.receiversOf(nodeId, incarnation)) {
      receiver.requestResync();
      this.refresh(key, receiver);
    }
  }

  /** A state transfer covered these channels up to their marks. */
  resynced(channels: readonly { key: string; upTo: number }[]): void {
    for (const { key, upTo } of channels) {
      const receiver = this.channels.receivers.get(key);
      if (receiver === undefined) continue;
      receiver.resynced(upTo);
      this.refresh(key, receiver);
    }
  }

  /** Addresses may have come or gone: every receiver's timer entry again. */
  refreshAll(): void {
    for (const [key, receiver] of this.channels.receivers) this.refresh(key, receiver);
  }

  /** Sets a receiver's entry in the timer table: its deadline, once its sender's address is known. */
  refresh(key: string, receiver: Receiver): void {
    const known = this.addressOf(splitReceiverKey(key)[0]) !== undefined;
    this.timers.set('receive ' + key, known ? receiver.nextDeadline() : Infinity);
  }

  /**
   * Polls a receiver that is due: sends its NACKs and acknowledgement, and returns the
   * resync it needs unless `requested` says one for its channel is already asked for.
   */
  poll(key: string, receiver: Receiver, now: number, requested: (key: string) => boolean): ReceiverResync | undefined {
    const resync = this.pollOnce(key, receiver, now, requested);
    this.refresh(key, receiver);
    return resync;
  }

  private pollOnce(key: string, receiver: Receiver, now: number, requested: (key: string) => boolean): ReceiverResync | undefined {
    if (receiver.nextDeadline() > now) return undefined;
    const [from, incarnationText, channel] = splitReceiverKey(key);
    const address = this.addressOf(from);
    if (address === undefined) return undefined;
    const poll = receiver.poll(now);
    if (poll.nack === undefined && poll.ack === undefined && !poll.resync) return undefined;
    const group = isGroupChannel(channel);
    const reply = { senderNodeId: from, senderIncarnation: BigInt(incarnationText), targetNodeId: group ? channel : this.config.nodeId };
    if (poll.nack !== undefined) {
      const payload = this.outbox.encode({ $case: 'nack', nack: nackFor(reply, poll.nack) });
      // On multicast a NACK goes to the group, so other receivers can hold theirs back, and
      // to the sender itself: the sender's group socket also receives its own multicast
      // traffic and may be full; its unicast socket is not. Its repair holdoff makes the two
      // copies cost one retransmission.
      if (group) this.outbox.push(groupDestination(groupOfChannel(channel) ?? 0), payload, 'nack');
      this.outbox.push(address, payload, 'nack');
    }
    if (poll.ack !== undefined) {
      const ack = ackFor(reply, poll.ack, poll.notes, poll.notesCompleteAbove, this.config.maxPayloadBytes);
      this.outbox.push(address, this.outbox.encode({ $case: 'ack', ack }), 'ack');
    }
    if (!poll.resync || requested(key)) return undefined;
    // Until the transfer completes, the receiver neither asks again nor acknowledges past the gap.
    receiver.resyncStarted();
    return { peerNodeId: from, peerAddress: address, channels: [{ key, upTo: receiver.highestSeen }] };
  }

  private gone(to: string, channel: string, firstRetainedSeq: number): void {
    this.outbox.push(to, this.outbox.encode({ $case: 'gone', gone: { targetNodeId: channel, firstRetainedSeq: BigInt(firstRetainedSeq) } }), 'gone');
  }

  private addressOf(nodeId: string): string | undefined {
    return this.membership.member(nodeId)?.advertiseAddress;
  }
}
