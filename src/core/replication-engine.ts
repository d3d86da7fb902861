/**
 * The replication protocol of one node, sans-IO. It turns local changes into deltas on
 * the channels of each session's secondaries, repairs losses (NACKs, retransmissions,
 * heartbeats carrying each channel's highest sequence number), applies what peers send,
 * tracks acknowledgements for synchronous writes, and asks for state transfers when
 * repair by NACK is not possible. The driver feeds it decoded datagram payloads and
 * `now`, sends what `takeOutbox` returns, carries out `takeResyncs`, and calls `tick` at
 * `nextDeadline`.
 *
 * Channels: in unicast mode one per (this node → secondary), named by the target's node
 * id; in multicast mode one to the group (named ''), which every member receives and
 * filters by placement. Receivers are keyed by sender, sender incarnation and channel,
 * so a restarted sender starts fresh channels.
 *
 * Forwarded writes (made here on a session another node owns) count as acknowledged only
 * once the owner has them. The owner this node knows of may have been superseded by a
 * claim this node has not heard of yet: such an owner does not take the write as owner
 * (it carries the old epoch and loses to the claimed copy) and says so in its
 * acknowledgement (Ack.superseded). This node then adopts the newer owner, sends the write
 * again at the newer epoch (same version and value) to that owner's holders, and waits for
 * that owner instead. An acknowledgement whose notes may be incomplete for the write
 * (Ack.superseded_complete_above) does not confirm it either: the write is sent again.
 */
import type { ChannelReceiverConfig } from './channel-receiver';
import type { DataPacket } from './channel-sender';
import { ChannelTable, receiverKey, splitReceiverKey, type Receiver } from './channel-table';
import { ackFor, nackFor } from './receiver-replies';
import { Datagram, type Ack, type Data, type Heartbeat } from '../gen/baton/v1/wire';
import type { Membership, MembershipEvent } from './membership';
import type { Placement } from './placement';
import { encodeWith } from '../wire/proto-writer';
import type { Random } from '../store/random';
import type { SessionStore, StoredSession } from '../store/store';
import { encodeData, type Change } from '../wire/delta-codec';
import { isNodeId, safeSeq } from '../wire/datagram-fields';
import { DeltaApply } from './delta-apply';
import { FanOut } from './fan-out';
import { FragmentReassembly } from './fragment-reassembly';
import { buildHeartbeats, readHeartbeat } from './heartbeats';
import { RepairPlanner, type RepairView, type ResyncRequest } from './repair-planner';
import { TimerTable } from './timer-table';
import { WriteTickets, type Ticket } from './write-tickets';

export { isPeerAddress } from '../wire/datagram-fields';
export { DISCARD_AFTER_MS, DISCARD_MAX_WAIT_MS, DISCARD_RECHECK_MS, RESYNC_RETRY_MS, type ResyncRequest } from './repair-planner';
export type { Change } from '../wire/delta-codec';

export interface ReplicationConfig {
  nodeId: string;
  incarnation: bigint;
  /** Unicast fan-out to each secondary, or one multicast group for all. */
  transport: 'unicast' | 'multicast';
  /** Largest datagram payload (the Datagram message before sealing), in bytes. */
  maxPayloadBytes: number;
  /** Retransmit buffer bound per channel, in bytes. */
  retransmitBufferBytes: number;
  /** Send window per channel: bytes in flight before sending holds back (0 = none). */
  sendWindowBytes: number;
  /** Bound on bytes of partly reassembled deltas per sender. */
  maxReassemblyBytes: number;
  /** Incomplete reassemblies older than this are dropped (ms). */
  reassemblyTimeoutMs: number;
  receiver: ChannelReceiverConfig;
}

/** One local change to replicate (the delta codec's Change; see src/wire/delta-codec.ts). */
export type LocalChange = Change;

export interface Outgoing {
  /** A peer's host:port, or 'multicast' for the group. */
  to: string;
  payload: Uint8Array;
}

/**
 * A send window held shut this long with no acknowledgement progress lets one more window
 * go, and again after each further such wait (ms): a secondary that stopped answering must
 * not hold the others back until failure detection declares it dead (seconds).
 */
export const HOLD_STALL_MS = 100;

/** Why a datagram or delta was dropped; metrics count by reason. */
export type EngineDropReason = 'malformed' | 'misrouted' | 'stale_incarnation' | 'unknown_sender' | 'reassembly_overflow' | 'not_replica';

export interface ReplicationObserver {
  /** Replication lag: the owner's write time to this node's apply, in ms. */
  lag(ms: number): void;
  dropped(reason: EngineDropReason): void;
  membershipEvent(event: MembershipEvent): void;
}

/** Most superseded writes read from one acknowledgement. */
const MAX_SUPERSEDED_PER_ACK = 256;
const MAX_NACK_RANGES = 256;

/** The timer-table entry for reassembly expiry. */
const REASSEMBLY_TIMER = 'reassembly';

type DatagramType = 'data' | 'heartbeat' | 'nack' | 'ack' | 'gone' | 'leave';

export class ReplicationEngine {
  private readonly channels: ChannelTable;
  private readonly reassembly: FragmentReassembly;
  private readonly fanOut: FanOut;
  private readonly deltas: DeltaApply;
  private readonly tickets = new WriteTickets();
  private readonly repair = new RepairPlanner();
  /**
   * Receivers' NACK/ack deadlines ('receive ' + key), channels' hold deadlines ('hold ' +
   * channel), and the oldest partial delta's expiry (REASSEMBLY_TIMER).
   */
  private readonly timers = new TimerTable();
  private outbox: Outgoing[] = [];
  private resyncs: ResyncRequest[] = [];
  private viewVersion = -1;
  private leaving = false;
  private readonly ackedBy = (channel: string, nodeId: string): number => this.channels.ackedBy(channel, nodeId);
  private readonly view: RepairView = {
    heldPartitions: () => this.placement.partitionsHeldBy(this.config.nodeId),
    isSecondaryOf: (partition, owner) => this.placement.isSecondary(this.config.nodeId, partition, owner),
    addressOf: (nodeId) => this.addressOf(nodeId),
  };
  readonly stats = {
    datagramsSent: { data: 0, heartbeat: 0, nack: 0, ack: 0, gone: 0, leave: 0 },
    datagramsReceived: { data: 0, heartbeat: 0, nack: 0, ack: 0, gone: 0, leave: 0 },
    bytesSent: 0,
    bytesReceived: 0,
    deltasSent: 0,
    deltasApplied: 0,
    deltasIgnored: 0,
    nacksReceived: 0,
    acksReceived: 0,
    retransmissions: 0,
    fragmentsSent: 0,
    resyncsRequested: 0,
    sessionsDiscarded: 0,
  };

  constructor(
    readonly config: ReplicationConfig,
    private readonly store: SessionStore,
    private readonly membership: Membership,
    private readonly placement: Placement,
    random: Random,
    private readonly observer: ReplicationObserver,
    private readonly heartbeatExtras: () => Partial<Heartbeat> = () => ({}),
  ) {
    this.channels = new ChannelTable({ ...config, holdStallMs: HOLD_STALL_MS }, random);
    this.reassembly = new FragmentReassembly({ maxBytes: config.maxReassemblyBytes, timeoutMs: config.reassemblyTimeoutMs });
    this.fanOut = new FanOut(config, store, placement, this.channels, () => this.otherLiveMembers());
    this.deltas = new DeltaApply(config, store, placement, membership, this.reassembly);
  }

  // --- local writes --------------------------------------------------------------

  /**
   * Queues the deltas of one local operation for the session's secondaries and returns
   * a ticket for acknowledgement tracking (or undefined if there is nobody to send to).
   * To wait for acknowledgements, call awaitTicket before the next flush: a ticket nobody
   * awaits is forgotten once flushed (so asynchronous writes hold no memory here).
   */
  replicate(session: StoredSession, changes: readonly LocalChange[], now: number): number | undefined {
    const { underReplicated, partition, write } = this.fanOut.write(session, changes, now);
    if (underReplicated) this.repair.wroteUnderReplicated(partition);
    if (write === undefined) return undefined;
    this.stats.deltasSent += write.deltas;
    const forwarded = write.owner === undefined ? undefined : { sessionId: session.id, changes, resends: 0 };
    return this.tickets.open(write.waits, write.owner, forwarded).id;
  }

  /**
   * Replicates a claim this node made (a resume) to the new owner's secondaries and the
   * previous owner (see FanOut.claim).
   */
  replicateClaim(session: StoredSession, previousOwner: string, now: number): void {
    this.stats.deltasSent += this.fanOut.claim(session, previousOwner, now).deltas;
  }

  /**
   * How many holders have acknowledged a ticket's write (the session's secondaries, and
   * its owner when the write was made elsewhere — then none counts until the owner did).
   */
  ackCount(ticketId: number): number {
    return this.tickets.ackCount(ticketId, this.ackedBy);
  }

  /** Forgets a ticket (its caller stopped waiting). */
  releaseTicket(ticketId: number): void {
    this.tickets.release(ticketId);
  }

  /** Marks that the driver waits for `needed` acknowledgements of a ticket (before flush). */
  awaitTicket(ticketId: number, needed: number): void {
    this.tickets.await(ticketId, needed);
  }

  /** Tickets whose awaited acknowledgements arrived since the last call. */
  takeCompletedTickets(): { id: number; acked: number }[] {
    return this.tickets.takeCompleted();
  }

  /**
   * Sends what is queued, as far as each channel's send window allows (the rest stays
   * queued until acknowledgements open it). The driver calls this once per event-loop
   * turn after writes; the engine itself flushes held channels on acknowledgements and
   * when a hold gives way (tick).
   */
  flush(now: number): void {
    const held: string[] = [];
    for (const channel of this.fanOut.takeDirty()) {
      const sender = this.channels.senders.get(channel);
      if (sender === undefined) continue;
      const firstSeq = sender.highestSeq + 1;
      const packets = sender.flush(now);
      this.timers.set('hold ' + channel, sender.holdDeadline);
      if (sender.pendingCount > 0) held.push(channel);
      const ackRequested = packets.length > 0 && this.tickets.awaitedOn(channel);
      for (const packet of packets) this.sendData(channel, packet, ackRequested);
      // A ticket's write is in a packet once nothing queued up to it is left.
      this.tickets.sent(channel, firstSeq, sender.sentThrough, sender.highestSeq);
    }
    this.fanOut.markDirty(held);
  }

  // --- input ---------------------------------------------------------------------

  /** A datagram payload that passed authentication. */
  handleDatagram(payload: Uint8Array, incarnation: bigint, fromAddress: string, now: number): void {
    let datagram: Datagram;
    try {
      datagram = Datagram.decode(payload);
    } catch {
      this.observer.dropped('malformed');
      return;
    }
    const from = datagram.senderNodeId;
    if (from === this.config.nodeId) return;
    if (!isNodeId(from) || datagram.body === undefined) {
      this.observer.dropped('malformed');
      return;
    }
    this.stats.bytesReceived += payload.length;
    const body = datagram.body;
    if (body.$case !== 'heartbeat' && body.$case !== 'leave') {
      const events = this.membership.heardFrom(from, incarnation, now);
      if (events.length > 0) this.onMembershipEvents(events, now);
    }
    this.stats.datagramsReceived[body.$case]++;
    switch (body.$case) {
      case 'heartbeat':
        this.onHeartbeat(from, incarnation, fromAddress, body.heartbeat, now);
        break;
      case 'data':
        this.onData(from, incarnation, body.data, now);
        break;
      case 'nack': {
        const nack = body.nack;
        const ranges = nack.ranges.slice(0, MAX_NACK_RANGES).map((r) => [safeSeq(r.first), safeSeq(r.last)] as const);
        if (ranges.some(([first, last]) => first === 0 || last === 0)) {
          this.observer.dropped('malformed');
          break;
        }
        if (nack.channelSenderNodeId === this.config.nodeId) {
          this.onNack(from, nack.channelSenderIncarnation, nack.targetNodeId, ranges, fromAddress, now);
        } else if (nack.targetNodeId === '') {
          const key = receiverKey(nack.channelSenderNodeId, nack.channelSenderIncarnation, '');
          const receiver = this.channels.receivers.get(key);
          if (receiver !== undefined) {
            receiver.handleOverheardNack(ranges, now);
            this.receiverTimer(key, receiver);
          }
        }
        break;
      }
      case 'ack':
        this.onAck(from, body.ack, now);
        break;
      case 'gone': {
        const gone = body.gone;
        if (gone.targetNodeId !== '' && gone.targetNodeId !== this.config.nodeId) break;
        const key = receiverKey(from, incarnation, gone.targetNodeId);
        const receiver = this.channels.receivers.get(key);
        if (receiver !== undefined) {
          receiver.handleGone(safeSeq(gone.firstRetainedSeq));
          this.receiverTimer(key, receiver);
        }
        break;
      }
      case 'leave':
        this.onMembershipEvents(this.membership.handleLeave(from, incarnation, now), now);
        break;
    }
  }

  /** Timers: heartbeats, failure detection, NACKs, acks, reassembly expiry, retries, discard, holds. */
  tick(now: number): void {
    this.onMembershipEvents(this.membership.tick(now), now);
    this.syncView(now);
    if (this.membership.heartbeatDue(now)) {
      this.sendHeartbeats(now);
      this.membership.heartbeatSent(now);
    }
    for (const [key, receiver] of this.channels.receivers) this.pollReceiver(key, receiver, now);
    for (const { nodeId, incarnation } of this.reassembly.expire(now)) this.resyncChannelsOf(nodeId, incarnation);
    this.timers.set(REASSEMBLY_TIMER, this.reassembly.nextExpiryAt());
    for (const request of this.repair.dueRetries(now)) this.resyncs.push(request);
    if (this.repair.discardNow(now)) this.discardUnheld();
    for (const sender of this.channels.senders.values()) {
      if (sender.holdDeadline <= now) {
        this.flush(now);
        break;
      }
    }
  }

  /**
   * The earliest time tick() has work: membership's, the planner's retries and discard,
   * and the timer table's receivers, holds and reassembly expiry. A receiver cannot act before its sender's
   * address is known (its heartbeat brings it, and then the overdue deadline counts), so
   * until then it has no entry: counting it would spin the driver.
   */
  nextDeadline(): number {
    return Math.min(this.membership.nextDeadline(), this.repair.discardAt, this.repair.nextRetryAt(), this.timers.next());
  }

  takeOutbox(): Outgoing[] {
    const out = this.outbox;
    this.outbox = [];
    return out;
  }

  takeResyncs(): ResyncRequest[] {
    return this.resyncs.splice(0);
  }

  /** A state transfer finished: the channels it covered are whole up to their marks. */
  resyncDone(request: ResyncRequest): void {
    this.resyncedChannels(request);
    this.repair.settled(request);
  }

  /**
   * A state transfer failed. While its peer is live it is tried again after
   * RESYNC_RETRY_MS; a peer that is gone has nothing more to give (its channels are
   * dropped when it restarts, and anti-entropy compares with the rest).
   */
  resyncFailed(request: ResyncRequest, now: number): void {
    const state = this.membership.member(request.peerNodeId)?.state;
    if (state === 'alive' || state === 'suspect') {
      this.repair.retryLater(request, now);
      return;
    }
    this.resyncedChannels(request);
    this.repair.settled(request);
  }

  private resyncedChannels(request: ResyncRequest): void {
    for (const { key, upTo } of request.channels) {
      const receiver = this.channels.receivers.get(key);
      if (receiver === undefined) continue;
      receiver.resynced(upTo);
      this.receiverTimer(key, receiver);
    }
  }

  /** Whether a transfer into a partition this node now holds is still pending. */
  hasPendingPulls(): boolean {
    return this.repair.hasPendingPulls();
  }

  /**
   * Partitions this node holds that lack a copy: a transfer into them is pending, local
   * writes in them have not reached all their secondaries, or there are too few live
   * members for the configured copies. 0 everywhere = the cluster is fully replicated.
   */
  underReplicatedPartitions(): number {
    const wantedHolders = this.placement.replicas === 0 ? 1 : this.placement.replicas + 1;
    if (this.placement.holderCount() < wantedHolders) return this.placement.partitionsHeldBy(this.config.nodeId).length;
    return this.repair.lackingPartitions();
  }

  /**
   * Anti-entropy: compare every held partition with every live peer again (the driver
   * fetches only those whose digests differ), and drop copies no longer held.
   */
  antiEntropy(now: number): void {
    const { pulls, discard } = this.repair.antiEntropy(this.view, this.otherLiveMembers());
    for (const request of pulls) this.requestResync(request);
    if (discard) this.discardUnheld();
    void now;
  }

  /** Drops sessions this node neither owns nor is a secondary of (placement moved). */
  private discardUnheld(): void {
    const self = this.config.nodeId;
    this.stats.sessionsDiscarded += this.store.discardWhere(
      (owner, partition) => owner !== self && !this.placement.isSecondary(self, partition, owner),
    );
  }

  /** Announces departure: peers mark this node 'left' and re-replicate at once. */
  leave(): void {
    this.leaving = true;
    const payload = this.encode({ $case: 'leave', leave: {} });
    const targets = this.membership.heartbeatTargets();
    for (const to of this.config.transport === 'multicast' ? ['multicast', ...targets] : targets) this.push(to, payload, 'leave');
  }

  // --- queries -------------------------------------------------------------------

  /** Sum of retransmit buffer bytes over all channels. */
  retransmitBufferBytes(): number {
    return this.channels.retransmitBufferBytes();
  }

  /** Reassembly memory held now, over all senders (bytes). */
  reassemblyBytesHeld(): number {
    return this.reassembly.bytesHeld();
  }

  /**
   * Flow control, summed over channels: deltas waiting for the send window, bytes in
   * flight, holds, holds that gave way, queued deltas replaced by newer ones.
   */
  sendWindow(): { queuedDeltas: number; inFlightBytes: number; holds: number; overrides: number; conflated: number } {
    return this.channels.sendWindow();
  }

  /**
   * Whether some channel's queue (deltas waiting for its send window) holds more than
   * `windows` windows' worth of bytes: the back-pressure watermarks. Never with no window,
   * and not for a channel with a suspect receiver: writers wait for secondaries that are
   * slow, not for one that may be dead (its window trickles on, one more per HOLD_STALL_MS,
   * until failure detection removes it). A secondary busy repairing losses is not suspect
   * (every datagram from it counts as hearing from it), so it keeps holding writers back.
   */
  sendQueueOver(windows: number): boolean {
    const window = this.config.sendWindowBytes;
    return window !== 0 && this.channels.queueOver(windows * window, (id) => this.membership.member(id)?.state === 'suspect');
  }

  /** Replication lag to each peer in sequence numbers not yet acknowledged. */
  unackedByPeer(): Map<string, number> {
    return this.channels.unackedByPeer();
  }

  /**
   * Whether every sent sequence number has been acknowledged by its receivers (those for
   * which `counts` holds: a drain need not wait for a member that stopped answering).
   */
  allAcknowledged(counts: (nodeId: string) => boolean = () => true): boolean {
    return this.channels.allAcknowledged(counts);
  }

  /** Counters of the channels, summed. */
  channelCounters(): ReturnType<ChannelTable['counters']> {
    return this.channels.counters();
  }

  // --- internals -----------------------------------------------------------------

  private addressOf(nodeId: string): string | undefined {
    return this.membership.member(nodeId)?.advertiseAddress;
  }

  private otherLiveMembers(): string[] {
    return this.membership.liveNodeIds().filter((id) => id !== this.config.nodeId);
  }

  /** An acknowledgement of one of this node's channels: windows, owners, tickets. */
  private onAck(from: string, ack: Ack, now: number): void {
    if (ack.channelSenderNodeId !== this.config.nodeId || ack.channelSenderIncarnation !== this.config.incarnation) {
      this.observer.dropped('stale_incarnation');
      return;
    }
    this.stats.acksReceived++;
    const sender = this.channels.senders.get(ack.targetNodeId);
    if (sender !== undefined) {
      sender.handleAck(from, safeSeq(ack.cumulativeSeq));
      this.onOwnerAck(from, ack, now);
      // An acknowledgement may open a held window.
      if (sender.pendingCount > 0) this.flush(now);
    }
    this.tickets.check(this.ackedBy);
  }

  /**
   * An acknowledgement from `from`, read for the forwarded writes it owns (see
   * WriteTickets.ownerAck). Newer owners it names are adopted either way, so later
   * writes go to them directly.
   */
  private onOwnerAck(from: string, ack: Ack, now: number): void {
    const superseded = ack.superseded.slice(0, MAX_SUPERSEDED_PER_ACK).filter((s) => safeSeq(s.seq) > 0 && isNodeId(s.ownerNodeId) && safeSeq(s.epoch) > 0);
    for (const s of superseded) this.fanOut.adoptOwner(s.sessionId, s.ownerNodeId, Number(s.epoch), now);
    const completeAbove = ack.supersededCompleteAbove > BigInt(Number.MAX_SAFE_INTEGER) ? Infinity : Number(ack.supersededCompleteAbove);
    const notes = superseded.map((s) => ({ seq: Number(s.seq), sessionId: s.sessionId }));
    const resend = this.tickets.ownerAck(from, ack.targetNodeId, safeSeq(ack.cumulativeSeq), completeAbove, notes);
    for (const ticket of resend) this.resendForwarded(ticket, now);
    if (resend.length > 0) this.flush(now);
  }

  /**
   * Sends a forwarded write again to the holders of the owner this node now knows of (see
   * FanOut.resendForwarded), and makes its ticket wait for them.
   */
  private resendForwarded(ticket: Ticket, now: number): void {
    if (!this.tickets.countResend(ticket)) return;
    const resent = this.fanOut.resendForwarded(ticket.forwarded!.sessionId, ticket.forwarded!.changes, now);
    if (resent === undefined) return;
    this.stats.deltasSent += resent.deltas;
    this.tickets.reopen(ticket, resent.owner, resent.changes, resent.waits);
  }

  private sendData(channel: string, packet: DataPacket, ackRequested: boolean): void {
    const payload = encodeData(this.config.nodeId, channel, packet, ackRequested);
    const to = channel === '' ? 'multicast' : this.addressOf(channel);
    if (to === undefined) return;
    if (packet.retransmit) this.stats.retransmissions++;
    if (packet.fragment !== undefined) this.stats.fragmentsSent++;
    this.push(to, payload, 'data');
  }

  private onData(from: string, incarnation: bigint, data: Data, now: number): void {
    const admitted = this.deltas.admit(from, incarnation, data);
    if ('dropped' in admitted) {
      this.observer.dropped(admitted.dropped);
      return;
    }
    const { channel, seq } = admitted;
    const key = receiverKey(from, incarnation, channel);
    const receiver = this.receiverFor(key, from, incarnation, channel);
    if (receiver.handleData(seq, data.ackRequested, now) === 'duplicate') {
      this.receiverTimer(key, receiver);
      return;
    }
    const outcome = this.deltas.applyPacket(from, incarnation, data, now);
    if (data.fragment !== undefined) this.timers.set(REASSEMBLY_TIMER, this.reassembly.nextExpiryAt());
    this.stats.deltasApplied += outcome.applied;
    this.stats.deltasIgnored += outcome.ignored;
    for (const note of outcome.notes) receiver.note(seq, note);
    for (const reason of outcome.dropped) this.observer.dropped(reason);
    for (const lag of outcome.lagsMs) this.observer.lag(lag);
    if (outcome.resyncSender) this.resyncChannelsOf(from, incarnation);
    this.pollReceiver(key, receiver, now);
  }

  /**
   * A delta of this sender incarnation was dropped after its fragments counted as
   * received, so no NACK will bring it back: its channels resync instead.
   */
  private resyncChannelsOf(nodeId: string, incarnation: bigint): void {
    for (const [key, receiver] of this.channels.receiversOf(nodeId, incarnation)) {
      receiver.requestResync();
      this.receiverTimer(key, receiver);
    }
  }

  private onNack(from: string, incarnation: bigint, channel: string, ranges: readonly (readonly [number, number])[], fromAddress: string, now: number): void {
    this.stats.nacksReceived++;
    if (incarnation !== this.config.incarnation) {
      this.observer.dropped('stale_incarnation');
      return;
    }
    if (channel !== '' && channel !== from) {
      this.observer.dropped('misrouted');
      return;
    }
    const sender = this.channels.senders.get(channel);
    if (sender === undefined) {
      // Nothing was ever sent on this channel by this incarnation: tell it to resync.
      this.push(fromAddress, this.encode({ $case: 'gone', gone: { targetNodeId: channel, firstRetainedSeq: 1n } }), 'gone');
      return;
    }
    const { packets, goneBefore } = sender.handleNack(ranges, now, from);
    for (const packet of packets) this.sendData(channel, packet, false);
    if (goneBefore !== undefined) {
      this.push(fromAddress, this.encode({ $case: 'gone', gone: { targetNodeId: channel, firstRetainedSeq: BigInt(goneBefore) } }), 'gone');
    }
  }

  private onHeartbeat(from: string, incarnation: bigint, fromAddress: string, heartbeat: Heartbeat, now: number): void {
    const read = readHeartbeat(heartbeat, from, incarnation, fromAddress, this.config.nodeId, this.config.transport);
    if (read === undefined) {
      this.observer.dropped('malformed');
      return;
    }
    this.onMembershipEvents(this.membership.handleHeartbeat(read.member, now), now);
    // Channels are trusted only from the incarnation membership accepted (not a stale one).
    if (this.membership.member(from)?.incarnation !== incarnation) return;
    this.repair.peerPulling(from, read.pulling);
    for (const { target, highest } of read.channels) {
      const key = receiverKey(from, incarnation, target);
      const receiver = this.receiverFor(key, from, incarnation, target);
      receiver.handleHighest(highest, now);
      this.receiverTimer(key, receiver);
    }
    this.syncView(now);
  }

  private onMembershipEvents(events: readonly MembershipEvent[], now: number): void {
    let restarted = false;
    for (const event of events) {
      this.observer.membershipEvent(event);
      if (event.type === 'restarted') {
        this.retireOldIncarnations(event.nodeId, undefined);
        restarted = true;
      }
    }
    if (events.length === 0) return;
    // Addresses may have come or gone: receivers count for the next deadline only with one.
    for (const [key, receiver] of this.channels.receivers) this.receiverTimer(key, receiver);
    this.syncView(now);
    // A restart changes no view, but what its old incarnation sent last may have reached
    // some replicas and not others, and the new one starts empty: pull everything held
    // from every peer again.
    if (restarted) {
      this.repair.forgetPulls();
      for (const request of this.repair.pullHeld(this.view, this.otherLiveMembers(), 'placement')) this.requestResync(request);
    }
  }

  /** Applies a changed member view: placement, ack tracking, and new partitions to pull. */
  private syncView(now: number): void {
    if (this.membership.viewVersion === this.viewVersion) return;
    this.viewVersion = this.membership.viewVersion;
    const live = this.membership.liveNodeIds();
    this.placement.setMembers(live);
    const others = live.filter((id) => id !== this.config.nodeId);
    this.channels.setLivePeers(others);
    this.tickets.check(this.ackedBy);
    for (const request of this.repair.pullHeld(this.view, others, 'placement')) this.requestResync(request);
    if (this.repair.hasUnreplicated()) this.replicateUnreplicated(now);
    this.repair.viewChanged(now, live);
  }

  /**
   * Sends again, as deltas, this node's own sessions of partitions written while they had
   * fewer secondaries than wanted, once they have secondaries (see FanOut.resendOwned).
   */
  private replicateUnreplicated(now: number): void {
    const self = this.config.nodeId;
    const partitions = this.repair.resendUnreplicated((partition) => this.placement.secondaries(partition, self).length, this.fanOut.wantedSecondaries());
    this.stats.deltasSent += this.fanOut.resendOwned(partitions, now).deltas;
    this.flush(now);
  }

  /** Sets a receiver's entry in the timer table: its deadline, once its sender's address is known. */
  private receiverTimer(key: string, receiver: Receiver): void {
    const known = this.addressOf(splitReceiverKey(key)[0]) !== undefined;
    this.timers.set('receive ' + key, known ? receiver.nextDeadline() : Infinity);
  }

  private pollReceiver(key: string, receiver: Receiver, now: number): void {
    this.pollReceiverOnce(key, receiver, now);
    this.receiverTimer(key, receiver);
  }

  private pollReceiverOnce(key: string, receiver: Receiver, now: number): void {
    if (receiver.nextDeadline() > now) return;
    const [from, incarnationText, channel] = splitReceiverKey(key);
    // Until the sender's address is known nothing can be sent: keep the receiver's NACK
    // attempts and acknowledgement for then, rather than spend them on nothing.
    const address = this.addressOf(from);
    if (address === undefined) return;
    const poll = receiver.poll(now);
    if (poll.nack === undefined && poll.ack === undefined && !poll.resync) return;
    const reply = { senderNodeId: from, senderIncarnation: BigInt(incarnationText), targetNodeId: channel === '' ? '' : this.config.nodeId };
    if (poll.nack !== undefined) {
      const payload = this.encode({ $case: 'nack', nack: nackFor(reply, poll.nack) });
      // On multicast a NACK goes to the group, so other receivers can hold theirs back, and
      // to the sender itself: the sender's group socket also receives its own multicast
      // traffic and may be full; its unicast socket is not. Its repair holdoff makes the two
      // copies cost one retransmission.
      if (channel === '') this.push('multicast', payload, 'nack');
      this.push(address, payload, 'nack');
    }
    if (poll.ack !== undefined) {
      const ack = ackFor(reply, poll.ack, poll.notes, poll.notesCompleteAbove, this.config.maxPayloadBytes);
      this.push(address, this.encode({ $case: 'ack', ack }), 'ack');
    }
    if (poll.resync && !this.resyncs.some((r) => r.channels.some((c) => c.key === key))) {
      const partitions = this.placement.partitionsHeldBy(this.config.nodeId);
      this.requestResync({ peerNodeId: from, peerAddress: address, partitions, channels: [{ key, upTo: receiver.highestSeen }], reason: 'gap' });
      // Until the transfer completes, the receiver neither asks again nor acknowledges past the gap.
      receiver.resyncStarted();
    }
  }

  private requestResync(request: ResyncRequest): void {
    this.stats.resyncsRequested++;
    this.repair.started(request);
    this.resyncs.push(request);
  }

  /** The receiver of a channel, created (retiring older incarnations' channels) if new. */
  private receiverFor(key: string, from: string, incarnation: bigint, channel: string): Receiver {
    if (!this.channels.receivers.has(key)) this.retireOldIncarnations(from, incarnation);
    return this.channels.receiver(key, from, incarnation, channel);
  }

  private retireOldIncarnations(nodeId: string, keep: bigint | undefined): void {
    for (const key of this.channels.retire(nodeId, keep)) this.timers.clear('receive ' + key);
    this.reassembly.retire(nodeId, keep);
    this.timers.set(REASSEMBLY_TIMER, this.reassembly.nextExpiryAt());
  }

  private sendHeartbeats(now: number): void {
    const heartbeats = buildHeartbeats(
      {
        transport: this.config.transport,
        configDigest: this.membership.configDigest,
        leaving: this.leaving,
        pulling: this.hasPendingPulls(),
        known: this.membership
          .members()
          .filter((m) => m.nodeId !== '' && (m.state === 'alive' || m.state === 'suspect'))
          .map((m) => ({ nodeId: m.nodeId, advertiseAddress: m.advertiseAddress })),
        targets: this.membership.heartbeatTargets(),
        nodeIdAt: (address) => this.membership.members().find((m) => m.advertiseAddress === address && m.nodeId !== '' && !m.isSelf)?.nodeId,
        unackedHighest: (channel) => this.channels.unackedHighest(channel),
        extras: this.heartbeatExtras(),
      },
      now,
    );
    for (const { to, heartbeat } of heartbeats) this.push(to, this.encode({ $case: 'heartbeat', heartbeat }), 'heartbeat');
  }

  private encode(body: NonNullable<Datagram['body']>): Uint8Array {
    return encodeWith((w) => Datagram.encode({ senderNodeId: this.config.nodeId, body }, w));
  }

  private push(to: string, payload: Uint8Array, type: DatagramType): void {
    this.outbox.push({ to, payload });
    this.stats.datagramsSent[type]++;
    this.stats.bytesSent += payload.length;
  }
}
