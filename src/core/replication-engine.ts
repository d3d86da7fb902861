/**
 * The replication protocol of one node, sans-IO, as a dispatcher over its concepts:
 * fan-out queues local changes as deltas on the channels of each session's holders;
 * channel-repair runs the NACK loop (retransmissions, receiver NACKs, acknowledgements,
 * resyncs); delta-apply admits data packets and applies their deltas; write-tickets track
 * acknowledgements of synchronous writes; the repair planner pulls, retries and discards
 * after view changes; heartbeats carry each channel's highest sequence number. The driver
 * feeds it decoded datagram payloads and `now`, sends what `takeOutbox` returns, carries
 * out `takeResyncs`, and calls `tick` at `nextDeadline` (one timer table holds every
 * receiver's, hold's and reassembly deadline).
 *
 * Channels: in unicast mode one per (this node → secondary), named by the target's node
 * id; in multicast mode one to the group (named ''), which every member receives and
 * filters by placement. Receivers are keyed by sender, sender incarnation and channel,
 * so a restarted sender starts fresh channels.
 *
 * Forwarded writes (made here on a session another node owns) count as acknowledged only
 * once the owner has them. An owner superseded by a claim this node has not heard of says
 * so in its acknowledgement (Ack.superseded); this node adopts the newer owner and sends
 * the write again to it (FanOut.resendForwarded). An acknowledgement whose notes may be
 * incomplete for the write (Ack.superseded_complete_above) does not confirm it either.
 */
import type { ChannelReceiverConfig } from './channel-receiver';
import { ChannelRepair, REASSEMBLY_TIMER } from './channel-repair';
import { ChannelTable, receiverKey, type Receiver } from './channel-table';
import { readNackRanges, readSuperseded } from './receiver-replies';
import { Datagram, type Ack, type Heartbeat } from '../gen/baton/v1/wire';
import type { Membership, MembershipEvent } from './membership';
import type { Placement } from './placement';
import type { Random } from '../store/random';
import type { SessionSnapshot, SessionStore, StoredSession } from '../store/store';
import { readDataDatagram, receivedData, type Change, type ReceivedData } from '../wire/delta-codec';
import { isNodeId, safeSeq } from '../wire/datagram-fields';
import { DeltaApply } from './delta-apply';
import { FanOut } from './fan-out';
import { FragmentReassembly } from './fragment-reassembly';
import { newEngineStats, Outbox, type EngineStats, type Outgoing } from './outbox';
import { buildHeartbeats, membershipPlan, readHeartbeat } from './heartbeats';
import { RepairPlanner, type RepairView, type ResyncRequest } from './repair-planner';
import { TimerTable } from './timer-table';
import { dictionary } from './churn-free';
import { WriteTickets, type Ticket } from './write-tickets';
import { groupChannel, groupOfChannel, isGroupChannel, MulticastGroups } from './multicast-groups';

export { isPeerAddress } from '../wire/datagram-fields';
export { DISCARD_AFTER_MS, DISCARD_MAX_WAIT_MS, DISCARD_RECHECK_MS, RESYNC_RETRY_MS, type ResyncRequest } from './repair-planner';
export type { Change } from '../wire/delta-codec';
export type { EngineStats, Outgoing } from './outbox';

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
  /** Multicast groups K (partition p's deltas go to group p mod K); default 1. */
  multicastGroups?: number;
  /** Sessions a discard walk looks at per slice (default DISCARD_SLICE_SESSIONS). */
  discardSliceSessions?: number;
}

/** One local change to replicate (the delta codec's Change; see src/wire/delta-codec.ts). */
export type LocalChange = Change;

/**
 * A send window held shut this long with no acknowledgement progress lets one more window
 * go, and again after each further such wait (ms): a secondary that stopped answering must
 * not hold the others back until failure detection declares it dead (seconds).
 */
export const HOLD_STALL_MS = 100;

/**
 * Between two slices of work spread out so that no call holds the event loop long (a
 * discard walk, the freeing of a channel's acknowledged entries), ms: the driver's other
 * work runs in between.
 */
const SLICE_GAP_MS = 1;
/** The timer of a channel's release backlog. */
const releaseTimer = (channel: string) => 'release ' + channel;
/** The timer of the next slice of a discard walk under way. */
const DISCARD_TIMER = 'discard';

/** Sessions a discard walk looks at before it lets other work run (whole partitions: a little more). */
const DISCARD_SLICE_SESSIONS = 1024;

/** Why a datagram or delta was dropped; metrics count by reason. */
export type EngineDropReason = 'malformed' | 'misrouted' | 'stale_incarnation' | 'unknown_sender' | 'reassembly_overflow' | 'not_replica';

/** Datagram bodies the engine hands to the node core unread (elections, the coordinator's). */
export type ClusterBody = Extract<NonNullable<Datagram['body']>, { $case: 'election' | 'inquiry' | 'inquiryReply' | 'coordinatorNotice' | 'viewPage' }>;

/**
 * What the node core takes from received datagrams beyond replication (elections, the
 * coordinator), and what replication asks of its roles.
 */
export interface ClusterInput {
  /** Any well-formed datagram from `from`: its sender is alive. */
  heard(from: string, now: number): void;
  /** A heartbeat membership accepted, for the fields the node adds. */
  heartbeat(from: string, heartbeat: Heartbeat, now: number): void;
  body(from: string, fromAddress: string, body: ClusterBody, now: number): void;
  /** A partition's master (the elected one, else the live holder the election picks): it takes the partition's orphaned sessions over. */
  masterOf(partition: number): string | undefined;
}

const NO_CLUSTER_INPUT: ClusterInput = { heard: () => undefined, heartbeat: () => undefined, body: () => undefined, masterOf: () => undefined };

/**
 * The members placement ranks, with a version that changes whenever they do (node-core:
 * the coordinator's current view). Without one, placement follows membership's live members.
 */
export interface PlacementSource {
  version(): number;
  members(): readonly string[];
}

export interface ReplicationObserver {
  /** Replication lag: the owner's write time to this node's apply, in ms. */
  lag(ms: number): void;
  dropped(reason: EngineDropReason): void;
  membershipEvent(event: MembershipEvent): void;
}


export class ReplicationEngine {
  private readonly channels: ChannelTable;
  private readonly reassembly: FragmentReassembly;
  private readonly fanOut: FanOut;
  private readonly deltas: DeltaApply;
  private readonly tickets = new WriteTickets((channel, key) => this.channels.senders.get(channel)?.latestSeqOf(key) ?? 0);
  private readonly repair = new RepairPlanner();
  /**
   * Receivers' NACK/ack deadlines ('receive ' + key), channels' hold deadlines ('hold ' +
   * channel) and release backlogs (releaseTimer), the next slice of a discard walk
   * (DISCARD_TIMER), and the oldest partial delta's expiry (REASSEMBLY_TIMER).
   */
  private readonly timers = new TimerTable();
  /**
   * Receivers data arrived on since the last pollArrived, by key (polled once for a burst);
   * a dictionary replaced at each poll, not a Map cleared at each poll (churn-free.ts).
   */
  private arrived = dictionary<Receiver>();
  /** The channel of the last data packet and its receiver key (most packets come on the channel of the one before). */
  private lastChannel: { from: string; incarnation: bigint; channel: string; key: string } | undefined;
  private anyArrived = false;
  private resyncs: ResyncRequest[] = [];
  private viewVersion = -1;
  /** The multicast groups this node listens on (joinedGroups() as of the last view change). */
  private listening = new Set<number>();
  private placementVersion = -1;
  private leaving = false;
  /** Channels whose sender still holds acknowledged entries to free (each with a timer). */
  private readonly releasing = new Set<string>();
  /** The partition the discard walk under way (DISCARD_TIMER) goes on from. */
  private discardFrom = 0;
  private readonly ackedBy = (channel: string, nodeId: string): number => this.channels.ackedBy(channel, nodeId);
  private readonly view: RepairView = {
    heldPartitions: () => this.placement.partitionsHeldBy(this.config.nodeId),
    isSecondaryOf: (partition, owner) => this.placement.isSecondary(this.config.nodeId, partition, owner),
    addressOf: (nodeId) => this.addressOf(nodeId),
    holdersOf: (partition) => this.placement.holders(partition),
  };
  readonly stats: EngineStats = newEngineStats();
  private readonly outbox: Outbox;
  private readonly repairs: ChannelRepair;
  /** Which group each partition's deltas go to, and who listens on each (multicast). */
  readonly groups: MulticastGroups;

  constructor(
    readonly config: ReplicationConfig,
    private readonly store: SessionStore,
    private readonly membership: Membership,
    private readonly placement: Placement,
    random: Random,
    private readonly observer: ReplicationObserver,
    private readonly heartbeatExtras: () => Partial<Heartbeat> = () => ({}),
    private readonly cluster: ClusterInput = NO_CLUSTER_INPUT,
    private readonly placementSource?: PlacementSource,
  ) {
    this.channels = new ChannelTable({ ...config, holdStallMs: HOLD_STALL_MS }, random);
    this.reassembly = new FragmentReassembly({ maxBytes: config.maxReassemblyBytes, timeoutMs: config.reassemblyTimeoutMs });
    this.groups = new MulticastGroups(config.multicastGroups ?? 1, placement);
    this.listening = new Set(this.joinedGroups());
    this.fanOut = new FanOut(
      config,
      store,
      placement,
      this.channels,
      () => this.otherLiveMembers(),
      this.groups,
      (partition) => cluster.masterOf(partition),
      (nodeId) => membership.isLive(nodeId),
    );
    this.deltas = new DeltaApply(config, store, placement, membership, this.reassembly);
    this.outbox = new Outbox(config.nodeId, this.stats);
    this.repairs = new ChannelRepair(config, this.channels, this.timers, this.reassembly, membership, this.outbox, this.stats, (channel) => this.tickets.awaitedOn(channel, true));
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
    return this.tickets.open(write.waits, write.owner, { sessionId: session.id, changes, resends: 0 }, now).id;
  }

  /**
   * Merges a session a state transfer brought. When the copy named another owner at the
   * transferred copy's epoch (two claims at one epoch that did not reach each other: a
   * split, say), ownership settles on the transferred owner and this copy may hold writes
   * of the loser the winner lacks: they go to the winner's holders and the loser, as for a
   * delta that settled such a tie (FanOut.forwardTied). Returns whether the merge changed
   * the copy.
   */
  mergeTransferred(snapshot: SessionSnapshot, now: number): boolean {
    const current = this.store.ownerOf(snapshot.id);
    // The values, not the record ownerOf answers with, which the merge changes.
    const prior = { owner: current?.owner, epoch: current?.epoch ?? 0 };
    const changed = this.store.merge(snapshot, now);
    this.stats.deltasSent += this.fanOut.settleTie(snapshot.id, prior, snapshot.owner, snapshot.epoch, now).deltas;
    return changed;
  }

  /**
   * Replicates a claim this node made (a resume) to the new owner's secondaries and the
   * previous owner (see FanOut.claim).
   */
  replicateClaim(session: StoredSession, previousOwner: string, now: number): void {
    this.stats.deltasSent += this.fanOut.claim(session, previousOwner, now).deltas;
    if (this.tickets.size === 0) return;
    // A write of this node on the session still waiting for its holders, which a copy
    // merged before the claim replaced with an older value at a higher epoch (its owner
    // handed the session over before the write reached it): the claim re-stamped that
    // value, and a queued delta of one part holds only the latest, so the write's
    // acknowledgements would confirm the claim's value. It goes again, after the claim.
    for (const ticket of this.tickets.openOn(session.id)) {
      if (!this.fanOut.holdsWrite(session, ticket.write!.changes)) this.resendForwarded(ticket, now, true, false);
    }
  }

  /**
   * How many holders have acknowledged a ticket's write (the session's secondaries, and
   * its owner when the write was made elsewhere — then none counts until the owner did).
   */
  ackCount(ticketId: number): number {
    return this.tickets.ackCount(ticketId, this.ackedBy);
  }

  /** Its caller stopped waiting for a ticket (a forwarded write is followed still: WriteTickets.unawait). */
  releaseTicket(ticketId: number): void {
    this.tickets.unawait(ticketId);
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
      const ackRequested = packets.length > 0 && (this.tickets.awaitedOn(channel) || sender.askAck());
      for (const packet of packets) this.repairs.sendData(channel, packet, ackRequested);
      // A ticket's write is in a packet once nothing queued up to it is left.
      this.tickets.sent(channel, firstSeq, sender.sentThrough, sender.highestSeq);
    }
    this.fanOut.markDirty(held);
  }

  // --- input ---------------------------------------------------------------------

  /** A datagram payload that passed authentication, lent for the call (what is kept is copied). */
  handleDatagram(payload: Uint8Array, incarnation: bigint, fromAddress: string, now: number): void {
    const read = readDatagram(payload);
    if (read === undefined) {
      this.observer.dropped('malformed');
      return;
    }
    const { from, body } = read;
    if (from === this.config.nodeId) return;
    if (!isNodeId(from) || body === undefined) {
      this.observer.dropped('malformed');
      return;
    }
    this.stats.bytesReceived += payload.length;
    if (body.$case !== 'heartbeat' && body.$case !== 'leave') {
      const events = this.membership.heardFrom(from, incarnation, now);
      if (events.length > 0) this.onMembershipEvents(events, now);
    }
    this.stats.datagramsReceived[body.$case]++;
    this.cluster.heard(from, now);
    switch (body.$case) {
      case 'heartbeat':
        this.onHeartbeat(from, incarnation, fromAddress, body.heartbeat, now);
        break;
      case 'data':
        this.onData(from, incarnation, body.data, now);
        break;
      case 'nack': {
        const nack = body.nack;
        const ranges = readNackRanges(nack);
        if (ranges === undefined) {
          this.observer.dropped('malformed');
          break;
        }
        if (nack.channelSenderNodeId === this.config.nodeId) {
          const dropped = this.repairs.nack(from, nack.channelSenderIncarnation, nack.targetNodeId, ranges, fromAddress, now);
          if (dropped !== undefined) this.observer.dropped(dropped);
        } else if (isGroupChannel(nack.targetNodeId)) {
          this.repairs.overheardNack(nack.channelSenderNodeId, nack.channelSenderIncarnation, nack.targetNodeId, ranges, now);
        }
        break;
      }
      case 'ack':
        this.onAck(from, body.ack, now);
        break;
      case 'gone': {
        const gone = body.gone;
        if (isGroupChannel(gone.targetNodeId) || gone.targetNodeId === this.config.nodeId) this.repairs.goneFrom(from, incarnation, gone.targetNodeId, safeSeq(gone.firstRetainedSeq));
        break;
      }
      case 'leave':
        this.onMembershipEvents(this.membership.handleLeave(from, incarnation, now), now);
        break;
      case 'election':
      case 'inquiry':
      case 'inquiryReply':
      case 'coordinatorNotice':
      case 'viewPage':
        this.cluster.body(from, fromAddress, body, now);
        break;
    }
  }

  /** Sends a body the node core made (elections, the coordinator's) through the outbox, counted with the rest. */
  sendBody(to: string, body: ClusterBody): void {
    this.outbox.push(to, this.outbox.encode(body), body.$case);
  }

  /** Placement's source changed outside a datagram or tick (a view adopted): re-place now. */
  placementChanged(now: number): void {
    this.syncView(now);
  }

  /** Timers: heartbeats, failure detection, NACKs, acks, reassembly expiry, retries, discard, holds. */
  tick(now: number): void {
    this.tickets.expireFollowed(now);
    this.onMembershipEvents(this.membership.tick(now), now);
    this.syncView(now);
    if (this.membership.heartbeatDue(now)) {
      this.sendHeartbeats(now);
      this.membership.heartbeatSent(now);
    }
    for (const [key, receiver] of this.channels.receivers) this.pollReceiver(key, receiver, now);
    for (const { nodeId, incarnation } of this.reassembly.expire(now)) this.repairs.resyncChannelsOf(nodeId, incarnation);
    this.timers.set(REASSEMBLY_TIMER, this.reassembly.nextExpiryAt());
    for (const request of this.repair.dueRetries(now)) this.resyncs.push(request);
    if (this.repair.discardNow(now)) {
      this.discardFrom = 0;
      this.timers.set(DISCARD_TIMER, now);
    }
    if (this.timers.get(DISCARD_TIMER) <= now) this.discardUnheld(now);
    for (const channel of this.releasing) {
      const timer = releaseTimer(channel);
      if (this.timers.get(timer) > now) continue;
      const sender = this.channels.senders.get(channel);
      sender?.releaseMore();
      if (sender?.releaseBacklog === true) this.timers.set(timer, now + SLICE_GAP_MS);
      else {
        this.timers.clear(timer);
        this.releasing.delete(channel);
      }
    }
    for (const sender of this.channels.senders.values()) {
      if (sender.holdDeadline <= now) {
        this.flush(now);
        break;
      }
    }
  }

  /**
   * The earliest time tick() has work: membership's, the planner's retries and discard, and
   * the timer table's receivers, holds, release backlogs, discard slices and reassembly
   * expiry. A receiver cannot act before its sender's address is known (its
   * heartbeat brings it, and then the overdue deadline counts), so until then it has no
   * entry: counting it would spin the driver.
   */
  nextDeadline(): number {
    return Math.min(this.membership.nextDeadline(), this.repair.discardAt, this.repair.nextRetryAt(), this.timers.next());
  }

  takeOutbox(): Outgoing[] {
    return this.outbox.take();
  }

  takeResyncs(): ResyncRequest[] {
    return this.resyncs.splice(0);
  }

  /** A state transfer finished: the channels it covered are whole up to their marks. */
  resyncDone(request: ResyncRequest): void {
    this.repairs.resynced(request.channels);
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
    this.repairs.resynced(request.channels);
    this.repair.settled(request);
  }

  /** Whether a transfer into a partition this node now holds is still pending. */
  hasPendingPulls(): boolean {
    return this.repair.hasPendingPulls();
  }

  /**
   * Pulls `partitions` from their other live holders before this node, as their master,
   * claims their orphaned sessions (takeoverPending says until when).
   */
  pullForTakeover(partitions: readonly number[]): void {
    const pulls = this.repair.takeoverPulls(this.view, partitions, this.otherLiveMembers());
    for (const request of pulls) this.requestResync(request);
  }

  /** Whether a live peer's latest heartbeat said it still pulls partitions (its store is not whole yet). */
  peerPulling(nodeId: string): boolean {
    return this.repair.isPeerPulling(nodeId);
  }

  /** Whether a takeover transfer into `partition` is still pending. */
  takeoverPending(partition: number): boolean {
    return this.repair.takeoverPending(partition);
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
    if (discard && this.timers.get(DISCARD_TIMER) === Infinity) {
      this.discardFrom = 0;
      this.discardUnheld(now);
    }
  }

  /**
   * Drops sessions this node neither owns nor is a secondary of (placement moved), one
   * slice of partitions per call (DISCARD_SLICE_SESSIONS looked at): at a million sessions
   * the whole walk took ~200 ms, a stall of every call and heartbeat of the node. The walk
   * goes on SLICE_GAP_MS later, until the last partition; a view change ends it
   * (syncView), since a new holder may then pull copies it would drop: the planner
   * schedules the next discard.
   */
  private discardUnheld(now: number): void {
    const self = this.config.nodeId;
    // A partition's sessions have few owners: the answer is kept for the last one asked about.
    let lastOwner: string | undefined;
    let lastPartition = -1;
    let lastDrop = false;
    const drop = (owner: string, partition: number): boolean => {
      if (owner !== lastOwner || partition !== lastPartition) {
        lastOwner = owner;
        lastPartition = partition;
        lastDrop = owner !== self && !this.placement.isSecondary(self, partition, owner);
      }
      return lastDrop;
    };
    const { dropped, next } = this.store.discardWhere(
      drop,
      this.discardFrom,
      this.config.discardSliceSessions ?? DISCARD_SLICE_SESSIONS,
    );
    this.stats.sessionsDiscarded += dropped;
    this.discardFrom = next ?? 0;
    if (next === undefined) this.timers.clear(DISCARD_TIMER);
    else this.timers.set(DISCARD_TIMER, now + SLICE_GAP_MS);
  }

  /** Announces departure: peers mark this node 'left' and re-replicate at once. */
  leave(): void {
    this.leaving = true;
    const payload = this.outbox.encode({ $case: 'leave', leave: {} });
    const targets = this.membership.heartbeatTargets();
    const oneGroup = this.config.transport === 'multicast' && this.groups.count === 1;
    for (const to of oneGroup ? ['multicast', ...targets] : targets) this.outbox.push(to, payload, 'leave');
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

  /** The receivers of a group channel: the group's members but this node. */
  private groupReceivers(channel: string): string[] {
    return [...this.groups.membersOf(groupOfChannel(channel) ?? 0)].filter((id) => id !== this.config.nodeId);
  }

  /**
   * The multicast groups this node listens on now (placement's, see multicast-groups.ts);
   * empty in unicast mode. The driver joins them and leaves the others.
   */
  joinedGroups(): number[] {
    if (this.config.transport !== 'multicast') return [];
    return this.groups.count === 1 ? [0] : this.groups.groupsOf(this.config.nodeId);
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
      if (sender.releaseBacklog && !this.releasing.has(ack.targetNodeId)) {
        this.releasing.add(ack.targetNodeId);
        this.timers.set(releaseTimer(ack.targetNodeId), now + SLICE_GAP_MS);
      }
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
    const { notes, completeAbove } = readSuperseded(ack);
    let forwarded = 0;
    for (const note of notes) forwarded += this.fanOut.adoptOwner(note.sessionId, note.owner, note.epoch, now).deltas;
    this.stats.deltasSent += forwarded;
    const resend = this.tickets.ownerAck(from, ack.targetNodeId, safeSeq(ack.cumulativeSeq), completeAbove, notes);
    // Each goes to its owner, just heard of: named in the notes, or the sender itself (a
    // forwarded write is read only in its owner's acknowledgements; an own one is this node's).
    for (const ticket of resend) this.resendForwarded(ticket, now, ticket.lost === true, true);
    if (resend.length > 0 || forwarded > 0) this.flush(now);
  }

  /**
   * Sends a forwarded write again to the holders of the owner this node now knows of (see
   * FanOut.resendForwarded), and makes its ticket wait for them.
   */
  private resendForwarded(ticket: Ticket, now: number, lost: boolean, ownerHeard = lost): void {
    if (!this.tickets.countResend(ticket)) return;
    const resent = this.fanOut.resendForwarded(ticket.write!.sessionId, ticket.write!.changes, now, ticket.mustVouch, ownerHeard);
    if (resent === undefined) return;
    this.stats.deltasSent += resent.deltas;
    this.tickets.reopen(ticket, resent.owner, resent.changes, resent.waits, lost);
  }

  private onData(from: string, incarnation: bigint, data: ReceivedData, now: number): void {
    const admitted = this.deltas.admit(from, incarnation, data);
    if ('dropped' in admitted) {
      this.observer.dropped(admitted.dropped);
      return;
    }
    const { channel, seq } = admitted;
    const key = this.receiverKeyOf(from, incarnation, channel);
    const receiver = this.repairs.receiverFor(key, from, incarnation, channel);
    if (receiver.handleData(seq, data.ackRequested, now) === 'duplicate') {
      this.repairs.refresh(key, receiver);
      return;
    }
    const outcome = this.deltas.applyPacket(from, incarnation, data, now);
    if (data.fragment !== undefined) this.timers.set(REASSEMBLY_TIMER, this.reassembly.nextExpiryAt());
    this.stats.deltasApplied += outcome.applied;
    this.stats.deltasIgnored += outcome.ignored;
    for (const note of outcome.notes) receiver.note(seq, note);
    for (const { sessionId, loser } of outcome.tied) this.stats.deltasSent += this.fanOut.forwardTied(sessionId, loser, now).deltas;
    for (const { sessionId, names } of outcome.lacking) this.stats.deltasSent += this.fanOut.forwardLacking(sessionId, names, now).deltas;
    // A write of this node still waiting for its holders lost here to a claim made without
    // it: its acknowledgements would now cover the claim's value (a queued delta of one part
    // holds only the latest), so it is sent again at the claimed epoch instead. (All of these
    // go out at the driver's flush after the datagram.)
    for (const sessionId of outcome.ownWritesLost) for (const ticket of this.tickets.openOn(sessionId)) this.resendForwarded(ticket, now, true);
    for (const reason of outcome.dropped) this.observer.dropped(reason);
    for (const lag of outcome.lagsMs) this.observer.lag(lag);
    if (outcome.resyncSender) this.repairs.resyncChannelsOf(from, incarnation);
    this.arrived[key] = receiver;
    this.anyArrived = true;
  }

  /** receiverKey, without formatting the incarnation again when the packet came on the last one's channel. */
  private receiverKeyOf(from: string, incarnation: bigint, channel: string): string {
    const last = this.lastChannel;
    if (last !== undefined && last.incarnation === incarnation && last.from === from && last.channel === channel) return last.key;
    const key = receiverKey(from, incarnation, channel);
    this.lastChannel = { from, incarnation, channel, key };
    return key;
  }

  /**
   * Polls the receivers data arrived on since the last call (their acknowledgements and
   * NACKs): the driver calls it once after the datagrams it read together, so a burst of
   * them is acknowledged once rather than datagram by datagram.
   */
  pollArrived(now: number): void {
    if (!this.anyArrived) return;
    const arrived = this.arrived;
    this.arrived = dictionary();
    this.anyArrived = false;
    for (const key in arrived) {
      const receiver = arrived[key]!;
      if (this.channels.receivers.get(key) === receiver) this.pollReceiver(key, receiver, now);
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
    this.cluster.heartbeat(from, heartbeat, now);
    this.repair.peerPulling(from, read.pulling);
    for (const { target, highest } of read.channels) {
      // A group this node does not listen on: its data never comes here, nothing to repair.
      if (isGroupChannel(target) && !this.listening.has(groupOfChannel(target)!)) continue;
      this.repairs.highest(from, incarnation, target, highest, now);
    }
    this.syncView(now);
  }

  private onMembershipEvents(events: readonly MembershipEvent[], now: number): void {
    let restarted = false;
    for (const event of events) {
      this.observer.membershipEvent(event);
      if (event.type === 'restarted') {
        this.repairs.retire(event.nodeId, undefined);
        restarted = true;
      }
    }
    if (events.length === 0) return;
    // Addresses may have come or gone: receivers count for the next deadline only with one.
    this.repairs.refreshAll();
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
    const placementVersion = this.placementSource?.version() ?? -1;
    if (this.membership.viewVersion === this.viewVersion && placementVersion === this.placementVersion) return;
    this.viewVersion = this.membership.viewVersion;
    this.placementVersion = placementVersion;
    const live = this.membership.liveNodeIds();
    this.placement.setMembers(this.placementSource?.members() ?? live, this.membership.liveStoreIds());
    const others = live.filter((id) => id !== this.config.nodeId);
    this.channels.setLivePeers(others, (channel) => this.groupReceivers(channel));
    // Writes that could go to no holder may reach their owner in this view.
    if (this.tickets.size > 0) for (const ticket of this.tickets.stranded()) this.resendForwarded(ticket, now, true, false);
    this.tickets.check(this.ackedBy);
    for (const request of this.repair.pullHeld(this.view, others, 'placement')) this.requestResync(request);
    if (this.repair.hasUnreplicated()) this.replicateUnreplicated(now);
    this.timers.clear(DISCARD_TIMER);
    this.repair.viewChanged(now, live);
    this.updateListening();
  }

  /** Groups joined or left with the view: a group left drops its receivers (rejoining starts fresh). */
  private updateListening(): void {
    const now = new Set(this.joinedGroups());
    for (const group of this.listening) if (!now.has(group)) this.repairs.retireChannel(groupChannel(group));
    this.listening = now;
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

  /** Polls a receiver (see ChannelRepair.poll) and requests the resync it needs. */
  private pollReceiver(key: string, receiver: Receiver, now: number): void {
    const requested = (k: string): boolean => this.resyncs.some((r) => r.channels.some((c) => c.key === k));
    const resync = this.repairs.poll(key, receiver, now, requested);
    if (resync !== undefined) this.requestResync({ ...resync, partitions: this.placement.partitionsHeldBy(this.config.nodeId), reason: 'gap' });
  }

  private requestResync(request: ResyncRequest): void {
    this.stats.resyncsRequested++;
    this.repair.started(request);
    this.resyncs.push(request);
  }

  private sendHeartbeats(now: number): void {
    const plan = {
      ...membershipPlan(this.membership),
      transport: this.config.transport,
      leaving: this.leaving,
      pulling: this.hasPendingPulls(),
      unackedHighest: (channel: string) => this.channels.unackedHighest(channel),
      extras: this.heartbeatExtras(),
      ...(this.config.transport === 'multicast' && this.groups.count > 1
        ? { groupChannelsOf: (peer: string) => this.groups.groupsOf(peer).map(groupChannel) }
        : {}),
    };
    const heartbeats = buildHeartbeats(plan, now);
    for (const { to, heartbeat } of heartbeats) this.outbox.push(to, this.outbox.encode({ $case: 'heartbeat', heartbeat }), 'heartbeat');
  }
}

/** A datagram's body, its Data (if that is what it carries) with the deltas decoded. */
type ReceivedBody = Exclude<Datagram['body'], { $case: 'data' }> | { $case: 'data'; data: ReceivedData } | undefined;

/**
 * Decodes a datagram payload: Data by hand (readDataDatagram, the hot path), every other
 * body by the generated decoder; undefined when malformed.
 */
function readDatagram(payload: Uint8Array): { from: string; body: ReceivedBody } | undefined {
  const data = readDataDatagram(payload);
  if (data === undefined) return undefined;
  if (data !== 'other') return { from: data.sender, body: { $case: 'data', data: data.data } };
  let datagram: Datagram;
  try {
    datagram = Datagram.decode(payload);
  } catch {
    return undefined;
  }
  const from = datagram.senderNodeId;
  const body = datagram.body;
  return { from, body: body?.$case === 'data' ? { $case: 'data', data: receivedData(body.data, from) } : body };
}
