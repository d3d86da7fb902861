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
import { ChannelReceiver, type ChannelReceiverConfig } from './channel-receiver';
import { ChannelSender, type DataPacket, DEFAULT_REPAIR_HOLDOFF_MS } from './channel-sender';
import { Datagram, Delta, DeltaKind, type Ack, type Data, type Heartbeat, type Superseded } from '../gen/baton/v1/wire';
import type { Membership, MembershipEvent } from './membership';
import type { Placement } from './placement';
import { encodeWith } from '../wire/proto-writer';
import type { Random } from '../store/random';
import { forEachPart, type RemoteChange, type SessionStore, type StoredSession } from '../store/store';

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

/**
 * One local change to replicate. Values are the bytes the client sent. A part change is
 * this node's write at the session's epoch unless it names the part's own writer and
 * epoch (a repeat of state written earlier or elsewhere).
 */
export type LocalChange =
  | { kind: 'put'; name: string; value: Uint8Array; version: number; writer?: string; epoch?: number }
  | { kind: 'delete_part'; name: string; version: number; writer?: string; epoch?: number }
  | { kind: 'delete_session'; version: number }
  | { kind: 'touch' }
  | { kind: 'claim' };

export interface Outgoing {
  /** A peer's host:port, or 'multicast' for the group. */
  to: string;
  payload: Uint8Array;
}

/** A state transfer the driver should run: pull these partitions from that peer. */
export interface ResyncRequest {
  peerNodeId: string;
  peerAddress: string;
  partitions: number[];
  /** Channels repaired by this transfer, with the sequence number it covers. */
  channels: { key: string; upTo: number }[];
  reason: 'gap' | 'join' | 'placement' | 'anti_entropy';
}

/** A failed state transfer is tried again after this long (ms), while its peer is live. */
export const RESYNC_RETRY_MS = 1000;
/**
 * After the member view changes, copies this node no longer holds are dropped once the
 * view has been stable this long (ms) and no live peer says it is still pulling
 * partitions (heartbeat `pulling`): the new holders have their copies first.
 */
export const DISCARD_AFTER_MS = 10_000;
/** While a peer is still pulling, the discard is looked at again this often (ms)… */
export const DISCARD_RECHECK_MS = 1000;
/** …but not for longer than this after it was due (ms): a peer stuck pulling does not pin memory. */
export const DISCARD_MAX_WAIT_MS = 120_000;
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

interface Ticket {
  id: number;
  /**
   * Secondaries that must acknowledge, with the channel sequence number covering the write
   * (0 until it is sent), the first sequence number that may carry it (the write went out
   * in packets firstSeq..seq), and its place in the channel's queue (ChannelSender.enqueuedCount).
   */
  waits: { nodeId: string; channel: string; seq: number; firstSeq: number; queued: number }[];
  needed: number;
  flushed: boolean;
  /**
   * For a write made on a node that does not own the session: the owner, whose
   * acknowledgement every count needs (a resume on the owner answers from its own copy,
   * so an acknowledged write must be there).
   */
  owner: string | undefined;
  /**
   * The owner acknowledged the write as its owner: an acknowledgement covering it whose
   * notes are complete for it and name no newer owner for the session (see onOwnerAck).
   */
  ownerConfirmed: boolean;
  /** For a write made elsewhere: what to send again if its owner turns out superseded. */
  forwarded: { sessionId: string; changes: readonly LocalChange[]; resends: number } | undefined;
}

/**
 * A forwarded write is sent again at most this many times (a newer owner, or an
 * acknowledgement that could not say): beyond, its ticket waits for its deadline.
 */
const MAX_FORWARDED_RESENDS = 8;
/** Most superseded writes read from one acknowledgement. */
const MAX_SUPERSEDED_PER_ACK = 256;
/** Bytes an acknowledgement without notes takes at most (ids of 128 bytes, four varints). */
const ACK_BASE_BYTES = 2 * 128 + 64;

interface Reassembly {
  chunks: Map<number, Uint8Array>;
  count: number;
  /** Bytes charged to the sender's reassembly budget (chunks plus overheads). */
  bytes: number;
  startedAt: number;
}

const REASSEMBLY_CHUNK_OVERHEAD = 64;
const REASSEMBLY_ENTRY_OVERHEAD = 256;

/**
 * Conflation key of a delta: a retransmission carries the latest delta of each key, so
 * one key must only hold changes the latest of which supersedes all earlier ones. Part
 * changes (put, delete_part) are ordered by the part's version: session id, NUL, part
 * name. Session-level changes are keyed by kind (SOH + kind): a touch must not stand in
 * for an earlier delete of the session, nor a delete for an earlier claim.
 */
function deltaKey(sessionId: string, change: LocalChange): string {
  return change.kind === 'put' || change.kind === 'delete_part' ? sessionId + '\u0000' + change.name : sessionId + '\u0001' + change.kind;
}

export class ReplicationEngine {
  private readonly senders = new Map<string, ChannelSender>();
  /** Receivers note the forwarded writes they did not take as owner (acknowledgements carry them). */
  private readonly receivers = new Map<string, ChannelReceiver<Superseded>>();
  private readonly reassembly = new Map<string, Map<number, Reassembly>>();
  private readonly reassemblyBytes = new Map<string, number>();
  private outbox: Outgoing[] = [];
  private resyncs: ResyncRequest[] = [];
  private readonly tickets = new Map<number, Ticket>();
  private readonly completedTickets: { id: number; acked: number }[] = [];
  private nextTicket = 1;
  private dirty = new Set<string>();
  /**
   * Per partition this node holds: the owners it is a secondary for ('' = owners that
   * are not live members) and the live peers it has pulled the partition from since.
   */
  private pulledFrom = new Map<number, { serves: Set<string>; peers: Set<string> }>();
  /** Partitions with local writes made while they had fewer secondaries than wanted. */
  private readonly unreplicated = new Set<number>();
  /** Partitions with a placement transfer requested and not finished, with their count. */
  private readonly pendingPulls = new Map<number, number>();
  /** Failed transfers to try again, and when. */
  private retries: { request: ResyncRequest; at: number }[] = [];
  private discardDueAt = Infinity;
  /** When the pending discard first came due (its wait for pulling peers is bounded). */
  private discardFirstDueAt = Infinity;
  /** Live peers whose latest heartbeat said they are still pulling partitions. */
  private readonly peersPulling = new Set<string>();
  private viewVersion = -1;
  private leaving = false;
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
    private readonly random: Random,
    private readonly observer: ReplicationObserver,
    private readonly heartbeatExtras: () => Partial<Heartbeat> = () => ({}),
  ) {}

  // --- local writes --------------------------------------------------------------

  /**
   * Queues the deltas of one local operation for the session's secondaries and returns
   * a ticket for acknowledgement tracking (or undefined if there is nobody to send to).
   * To wait for acknowledgements, call awaitTicket before the next flush: a ticket nobody
   * awaits is forgotten once flushed (so asynchronous writes hold no memory here).
   */
  replicate(session: StoredSession, changes: readonly LocalChange[], now: number): number | undefined {
    const partition = this.store.partitionOf(session.id);
    const holders = this.holdersBesidesSelf(session.owner, partition);
    if (session.owner === this.config.nodeId && holders.length < this.wantedSecondaries()) this.unreplicated.add(partition);
    if (holders.length === 0) return undefined;
    const owner = session.owner !== this.config.nodeId && holders[0] === session.owner ? session.owner : undefined;
    const forwarded = owner === undefined ? undefined : { sessionId: session.id, changes, resends: 0 };
    const ticket: Ticket = { id: this.nextTicket++, waits: [], needed: 0, flushed: false, owner, ownerConfirmed: false, forwarded };
    this.enqueue(session, changes, holders, now);
    ticket.waits = this.waitsFor(holders);
    this.tickets.set(ticket.id, ticket);
    return ticket.id;
  }

  /** A ticket's waits for a write just queued to `holders`. */
  private waitsFor(holders: readonly string[]): Ticket['waits'] {
    return holders.map((nodeId) => {
      const channel = this.channelTo(nodeId);
      return { nodeId, channel, seq: 0, firstSeq: 0, queued: this.sender(channel).enqueuedCount };
    });
  }

  /**
   * Replicates a claim this node made (a resume): the claim and every part, re-stamped
   * with the new epoch, go to the new owner's secondaries, and to the previous owner so
   * it stops acting as owner at once (its later writes carry the old epoch and lose).
   */
  replicateClaim(session: StoredSession, previousOwner: string, now: number): void {
    const partition = this.store.partitionOf(session.id);
    const holders = this.holdersBesidesSelf(session.owner, partition);
    if (previousOwner !== this.config.nodeId && !holders.includes(previousOwner) && this.placement.rank(previousOwner, partition) >= 0) {
      holders.push(previousOwner);
    }
    if (holders.length === 0) return;
    const changes: LocalChange[] = [{ kind: 'claim' }];
    forEachPart(session, (name, value, version, writer) => {
      changes.push(value === null ? { kind: 'delete_part', name, version, writer } : { kind: 'put', name, value: Buffer.from(value, 'latin1'), version, writer });
    });
    this.enqueue(session, changes, holders, now);
  }

  /**
   * The live members other than this node that hold a session: its owner's secondaries,
   * and the owner itself when that is another live member (a write made here on a
   * session owned elsewhere goes to the owner's replica set).
   */
  private holdersBesidesSelf(owner: string, partition: number): string[] {
    const self = this.config.nodeId;
    const holders = this.placement.secondaries(partition, owner).filter((id) => id !== self);
    if (owner !== self && this.placement.rank(owner, partition) >= 0) holders.unshift(owner);
    return holders;
  }

  private channelTo(nodeId: string): string {
    return this.config.transport === 'multicast' ? '' : nodeId;
  }

  /** Encodes changes once and queues them on the channels that reach `holders`. */
  private enqueue(session: StoredSession, changes: readonly LocalChange[], holders: readonly string[], now: number): void {
    const deltas = changes.map((change) => ({ key: deltaKey(session.id, change), bytes: encodeWith((w) => Delta.encode(this.toDelta(session, change, now), w)) }));
    const channels = this.config.transport === 'multicast' ? [''] : holders;
    for (const channel of channels) {
      const sender = this.sender(channel);
      for (const delta of deltas) sender.enqueue(delta);
      this.dirty.add(channel);
    }
    this.stats.deltasSent += deltas.length * channels.length;
  }

  /**
   * How many holders have acknowledged a ticket's write (the session's secondaries, and
   * its owner when the write was made elsewhere — then none counts until the owner did).
   */
  ackCount(ticketId: number): number {
    const ticket = this.tickets.get(ticketId);
    if (ticket === undefined || !ticket.flushed) return 0;
    let acked = 0;
    for (const wait of ticket.waits) {
      if (this.senders.get(wait.channel)!.ackedBy(wait.nodeId) < wait.seq) continue;
      acked++;
    }
    return ticket.owner === undefined || ticket.ownerConfirmed ? acked : 0;
  }

  /** Forgets a ticket (its caller stopped waiting). */
  releaseTicket(ticketId: number): void {
    this.tickets.delete(ticketId);
  }

  /** Marks that the driver waits for `needed` acknowledgements of a ticket (before flush). */
  awaitTicket(ticketId: number, needed: number): void {
    const ticket = this.tickets.get(ticketId);
    if (ticket !== undefined) ticket.needed = needed;
  }

  /** Tickets whose awaited acknowledgements arrived since the last call. */
  takeCompletedTickets(): { id: number; acked: number }[] {
    return this.completedTickets.splice(0);
  }

  /**
   * Sends what is queued, as far as each channel's send window allows (the rest stays
   * queued until acknowledgements open it). The driver calls this once per event-loop
   * turn after writes; the engine itself flushes held channels on acknowledgements and
   * when a hold gives way (tick).
   */
  flush(now: number): void {
    const held: string[] = [];
    for (const channel of this.dirty) {
      const sender = this.senders.get(channel);
      if (sender === undefined) continue;
      const firstSeq = sender.highestSeq + 1;
      const packets = sender.flush(now);
      if (sender.pendingCount > 0) held.push(channel);
      const ackRequested = packets.length > 0 && this.hasWaitingTicket(channel);
      for (const packet of packets) this.sendData(channel, packet, ackRequested);
      // A ticket's write is in a packet once nothing queued up to it is left.
      const sentThrough = sender.sentThrough;
      const highest = sender.highestSeq;
      for (const ticket of this.tickets.values()) {
        if (ticket.flushed) continue;
        for (const wait of ticket.waits) {
          if (wait.channel !== channel || wait.seq !== 0 || wait.queued > sentThrough) continue;
          wait.seq = highest;
          wait.firstSeq = firstSeq;
        }
        if (ticket.waits.every((w) => w.seq > 0)) ticket.flushed = true;
        // Nobody awaits it (awaitTicket comes before the flush): forget it now, sent or held.
        if (ticket.needed === 0) this.tickets.delete(ticket.id);
      }
    }
    this.dirty = new Set(held);
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
    if (!NODE_ID.test(from) || datagram.body === undefined) {
      this.observer.dropped('malformed');
      return;
    }
    this.stats.bytesReceived += payload.length;
    const body = datagram.body;
    if (body.$case !== 'heartbeat' && body.$case !== 'leave') {
      const events = this.membership.heardFrom(from, incarnation, now);
      if (events.length > 0) this.onMembershipEvents(events, now);
    }
    switch (body.$case) {
      case 'heartbeat':
        this.stats.datagramsReceived.heartbeat++;
        this.onHeartbeat(from, incarnation, fromAddress, body.heartbeat, now);
        break;
      case 'data':
        this.stats.datagramsReceived.data++;
        this.onData(from, incarnation, body.data, now);
        break;
      case 'nack': {
        this.stats.datagramsReceived.nack++;
        const nack = body.nack;
        const ranges = nack.ranges.slice(0, MAX_NACK_RANGES).map((r) => [safeSeq(r.first), safeSeq(r.last)] as const);
        if (ranges.some(([first, last]) => first === 0 || last === 0)) {
          this.observer.dropped('malformed');
          break;
        }
        if (nack.channelSenderNodeId === this.config.nodeId) {
          this.onNack(from, nack.channelSenderIncarnation, nack.targetNodeId, ranges, fromAddress, now);
        } else if (nack.targetNodeId === '') {
          const receiver = this.receivers.get(receiverKey(nack.channelSenderNodeId, nack.channelSenderIncarnation, ''));
          receiver?.handleOverheardNack(ranges, now);
        }
        break;
      }
      case 'ack': {
        this.stats.datagramsReceived.ack++;
        const ack = body.ack;
        if (ack.channelSenderNodeId !== this.config.nodeId || ack.channelSenderIncarnation !== this.config.incarnation) {
          this.observer.dropped('stale_incarnation');
          break;
        }
        this.stats.acksReceived++;
        const sender = this.senders.get(ack.targetNodeId);
        sender?.handleAck(from, safeSeq(ack.cumulativeSeq));
        if (sender !== undefined) this.onOwnerAck(from, ack, now);
        // An acknowledgement may open a held window.
        if (sender !== undefined && sender.pendingCount > 0) this.flush(now);
        this.checkTickets();
        break;
      }
      case 'gone': {
        this.stats.datagramsReceived.gone++;
        const gone = body.gone;
        if (gone.targetNodeId !== '' && gone.targetNodeId !== this.config.nodeId) break;
        const key = receiverKey(from, incarnation, gone.targetNodeId);
        this.receivers.get(key)?.handleGone(safeSeq(gone.firstRetainedSeq));
        break;
      }
      case 'leave':
        this.stats.datagramsReceived.leave++;
        this.onMembershipEvents(this.membership.handleLeave(from, incarnation, now), now);
        break;
    }
  }

  /** Timers: heartbeats, failure detection, NACKs, acks, reassembly expiry. */
  tick(now: number): void {
    this.onMembershipEvents(this.membership.tick(now), now);
    this.syncView(now);
    if (this.membership.heartbeatDue(now)) {
      this.sendHeartbeats(now);
      this.membership.heartbeatSent(now);
    }
    for (const [key, receiver] of this.receivers) this.pollReceiver(key, receiver, now);
    this.expireReassembly(now);
    if (this.retries.length > 0 && this.retries.some((r) => r.at <= now)) {
      const due = this.retries.filter((r) => r.at <= now);
      this.retries = this.retries.filter((r) => r.at > now);
      for (const { request } of due) this.resyncs.push(request);
    }
    if (this.discardDueAt <= now) this.discardWhenPeersHaveCopies(now);
    for (const sender of this.senders.values()) {
      if (sender.holdDeadline <= now) {
        this.flush(now);
        break;
      }
    }
  }

  /** The earliest time tick() has work. */
  nextDeadline(): number {
    let next = Math.min(this.membership.nextDeadline(), this.discardDueAt);
    for (const retry of this.retries) if (retry.at < next) next = retry.at;
    for (const sender of this.senders.values()) if (sender.holdDeadline < next) next = sender.holdDeadline;
    for (const [key, receiver] of this.receivers) {
      const at = receiver.nextDeadline();
      // A receiver cannot act before its sender's address is known (its heartbeat brings
      // it, and then the overdue deadline counts): counting it now would spin the driver.
      if (at < next && this.addressOf(splitReceiverKey(key)[0]) !== undefined) next = at;
    }
    return next;
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
    for (const { key, upTo } of request.channels) this.receivers.get(key)?.resynced(upTo);
    this.settlePulls(request);
  }

  /**
   * A state transfer failed. While its peer is live it is tried again after
   * RESYNC_RETRY_MS; a peer that is gone has nothing more to give (its channels are
   * dropped when it restarts, and anti-entropy compares with the rest).
   */
  resyncFailed(request: ResyncRequest, now: number): void {
    const state = this.membership.member(request.peerNodeId)?.state;
    if (state === 'alive' || state === 'suspect') {
      this.retries.push({ request, at: now + RESYNC_RETRY_MS });
      return;
    }
    for (const { key, upTo } of request.channels) this.receivers.get(key)?.resynced(upTo);
    this.settlePulls(request);
  }

  private settlePulls(request: ResyncRequest): void {
    if (request.reason !== 'placement' && request.reason !== 'join') return;
    for (const partition of request.partitions) {
      const left = (this.pendingPulls.get(partition) ?? 1) - 1;
      if (left <= 0) this.pendingPulls.delete(partition);
      else this.pendingPulls.set(partition, left);
    }
  }

  /** Whether a transfer into a partition this node now holds is still pending. */
  hasPendingPulls(): boolean {
    return this.pendingPulls.size > 0;
  }

  /**
   * Partitions this node holds that lack a copy: a transfer into them is pending, local
   * writes in them have not reached all their secondaries, or there are too few live
   * members for the configured copies. 0 everywhere = the cluster is fully replicated.
   */
  underReplicatedPartitions(): number {
    const wantedHolders = this.placement.replicas === 0 ? 1 : this.placement.replicas + 1;
    if (this.placement.holderCount() < wantedHolders) return this.placement.partitionsHeldBy(this.config.nodeId).length;
    const lacking = new Set(this.unreplicated);
    for (const partition of this.pendingPulls.keys()) lacking.add(partition);
    return lacking.size;
  }

  /**
   * Anti-entropy: compare every held partition with every live peer again (the driver
   * fetches only those whose digests differ), and drop copies no longer held.
   */
  antiEntropy(now: number): void {
    this.pulledFrom.clear();
    this.pullHeldPartitions(this.otherLiveMembers(), 'anti_entropy');
    if (this.discardDueAt === Infinity && !this.anyPeerPulling()) this.discardUnheld();
    void now;
  }

  /**
   * The due discard: done once no live peer is pulling (the new holders have their
   * copies), or DISCARD_MAX_WAIT_MS after it came due; until then looked at again every
   * DISCARD_RECHECK_MS.
   */
  private discardWhenPeersHaveCopies(now: number): void {
    if (this.discardFirstDueAt === Infinity) this.discardFirstDueAt = this.discardDueAt;
    if (this.anyPeerPulling() && now < this.discardFirstDueAt + DISCARD_MAX_WAIT_MS) {
      this.discardDueAt = now + DISCARD_RECHECK_MS;
      return;
    }
    this.discardDueAt = Infinity;
    this.discardFirstDueAt = Infinity;
    this.discardUnheld();
  }

  /** peersPulling holds live members only: syncView drops the others on every view change. */
  private anyPeerPulling(): boolean {
    return this.peersPulling.size > 0;
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
    for (const to of this.heartbeatDestinations()) this.push(to, payload, 'leave');
  }

  /** Sum of retransmit buffer bytes over all channels. */
  retransmitBufferBytes(): number {
    let total = 0;
    for (const sender of this.senders.values()) total += sender.bufferBytes;
    return total;
  }

  /**
   * Flow control, summed over channels: deltas waiting for the send window, bytes in
   * flight, holds, holds that gave way, queued deltas replaced by newer ones.
   */
  sendWindow(): { queuedDeltas: number; inFlightBytes: number; holds: number; overrides: number; conflated: number } {
    const w = { queuedDeltas: 0, inFlightBytes: 0, holds: 0, overrides: 0, conflated: 0 };
    for (const sender of this.senders.values()) {
      w.queuedDeltas += sender.pendingCount;
      w.inFlightBytes += sender.inFlightBytes;
      w.holds += sender.counters.windowHolds;
      w.overrides += sender.counters.windowOverrides;
      w.conflated += sender.counters.conflated;
    }
    return w;
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
    if (window === 0) return false;
    for (const sender of this.senders.values()) {
      if (sender.queuedBytes <= windows * window) continue;
      if (sender.receivers().some((id) => this.membership.member(id)?.state === 'suspect')) continue;
      return true;
    }
    return false;
  }

  /** Replication lag to each peer in sequence numbers not yet acknowledged. */
  unackedByPeer(): Map<string, number> {
    const lag = new Map<string, number>();
    for (const [channel, sender] of this.senders) {
      for (const nodeId of sender.receivers()) {
        const behind = sender.highestSeq - sender.ackedBy(nodeId);
        lag.set(nodeId, Math.max(lag.get(nodeId) ?? 0, behind));
        void channel;
      }
    }
    return lag;
  }

  /**
   * Whether every sent sequence number has been acknowledged by its receivers (those for
   * which `counts` holds: a drain need not wait for a member that stopped answering).
   */
  allAcknowledged(counts: (nodeId: string) => boolean = () => true): boolean {
    for (const sender of this.senders.values()) {
      if (sender.pendingCount > 0 && sender.receivers().some(counts)) return false;
      for (const nodeId of sender.receivers()) if (counts(nodeId) && sender.ackedBy(nodeId) < sender.highestSeq) return false;
    }
    return true;
  }

  /** Counters of the channels, summed. */
  channelCounters(): { packets: number; retransmitted: number; fragments: number; goneReplies: number; repairsHeldOff: number; staleNacks: number; duplicates: number; nacksSent: number } {
    const c = { packets: 0, retransmitted: 0, fragments: 0, goneReplies: 0, repairsHeldOff: 0, staleNacks: 0, duplicates: 0, nacksSent: 0 };
    for (const s of this.senders.values()) {
      c.packets += s.counters.packets;
      c.retransmitted += s.counters.retransmitted;
      c.fragments += s.counters.fragments;
      c.goneReplies += s.counters.goneReplies;
      c.repairsHeldOff += s.counters.repairsHeldOff;
      c.staleNacks += s.counters.staleNacks;
    }
    for (const r of this.receivers.values()) {
      c.duplicates += r.counters.duplicates;
      c.nacksSent += r.counters.nacksSent;
    }
    return c;
  }

  // --- internals -----------------------------------------------------------------

  private sender(channel: string): ChannelSender {
    let sender = this.senders.get(channel);
    if (sender === undefined) {
      sender = new ChannelSender({
        maxPacketBytes: this.config.maxPayloadBytes - 48 - this.config.nodeId.length - channel.length,
        retransmitBufferBytes: this.config.retransmitBufferBytes,
        maxRetransmitPerNack: 64,
        repairHoldoffMs: DEFAULT_REPAIR_HOLDOFF_MS,
        sendWindowBytes: this.config.sendWindowBytes,
        holdStallMs: HOLD_STALL_MS,
      });
      sender.setReceivers(channel === '' ? this.otherLiveMembers() : [channel]);
      this.senders.set(channel, sender);
    }
    return sender;
  }

  private addressOf(nodeId: string): string | undefined {
    return this.membership.member(nodeId)?.advertiseAddress;
  }

  private nodeIdAt(address: string): string | undefined {
    const member = this.membership.members().find((m) => m.advertiseAddress === address && m.nodeId !== '' && !m.isSelf);
    return member?.nodeId;
  }

  private otherLiveMembers(): string[] {
    return this.membership.liveNodeIds().filter((id) => id !== this.config.nodeId);
  }

  private toDelta(session: StoredSession, change: LocalChange, now: number): Delta {
    const delta: Delta = {
      sessionId: session.id,
      kind: DeltaKind.DELTA_KIND_UNSPECIFIED,
      partName: '',
      value: EMPTY,
      version: 0n,
      writerNodeId: '',
      // The store takes any `now`; the wire carries whole milliseconds.
      expiresAtUnixMs: BigInt(Math.floor(session.expiresAt)),
      ttlMs: session.ttlMs,
      ownerNodeId: session.owner,
      epoch: BigInt(session.epoch),
      writtenAtUnixMs: BigInt(Math.floor(now)),
    };
    switch (change.kind) {
      case 'put':
        delta.kind = DeltaKind.DELTA_KIND_PUT_PART;
        delta.partName = change.name;
        delta.value = change.value as Buffer;
        delta.version = BigInt(change.version);
        if (change.epoch !== undefined) delta.epoch = BigInt(change.epoch);
        if (change.writer !== undefined && change.writer !== this.config.nodeId) delta.writerNodeId = change.writer;
        break;
      case 'delete_part':
        delta.kind = DeltaKind.DELTA_KIND_DELETE_PART;
        delta.partName = change.name;
        delta.version = BigInt(change.version);
        if (change.epoch !== undefined) delta.epoch = BigInt(change.epoch);
        if (change.writer !== undefined && change.writer !== this.config.nodeId) delta.writerNodeId = change.writer;
        break;
      case 'delete_session':
        delta.kind = DeltaKind.DELTA_KIND_DELETE_SESSION;
        delta.version = BigInt(change.version);
        break;
      case 'touch':
        delta.kind = DeltaKind.DELTA_KIND_TOUCH;
        break;
      case 'claim':
        delta.kind = DeltaKind.DELTA_KIND_CLAIM;
        break;
    }
    return delta;
  }

  private hasWaitingTicket(channel: string): boolean {
    for (const ticket of this.tickets.values()) {
      if (ticket.needed > 0 && !ticket.flushed && ticket.waits.some((w) => w.channel === channel)) return true;
    }
    return false;
  }

  /**
   * An acknowledgement from `from`, read for the forwarded writes it owns: each covered
   * write is confirmed as taken by its owner, or, when `from` noted a newer owner for its
   * session (or its notes may be incomplete for it), sent again. Newer owners it names are
   * adopted either way, so later writes go to them directly.
   */
  private onOwnerAck(from: string, ack: Ack, now: number): void {
    const superseded = ack.superseded.slice(0, MAX_SUPERSEDED_PER_ACK).filter((s) => safeSeq(s.seq) > 0 && NODE_ID.test(s.ownerNodeId) && safeSeq(s.epoch) > 0);
    for (const s of superseded) this.adoptOwner(s.sessionId, s.ownerNodeId, Number(s.epoch), now);
    const cumulative = safeSeq(ack.cumulativeSeq);
    const completeAbove = ack.supersededCompleteAbove > BigInt(Number.MAX_SAFE_INTEGER) ? Infinity : Number(ack.supersededCompleteAbove);
    const resend: Ticket[] = [];
    for (const ticket of this.tickets.values()) {
      if (ticket.owner !== from || ticket.ownerConfirmed || ticket.forwarded === undefined) continue;
      const wait = ticket.waits.find((w) => w.nodeId === from && w.channel === ack.targetNodeId);
      if (wait === undefined || wait.seq === 0) continue;
      const sessionId = ticket.forwarded.sessionId;
      if (superseded.some((s) => s.sessionId === sessionId && Number(s.seq) >= wait.firstSeq && Number(s.seq) <= wait.seq)) resend.push(ticket);
      else if (cumulative < wait.seq) continue;
      else if (completeAbove < wait.firstSeq) ticket.ownerConfirmed = true;
      else resend.push(ticket);
    }
    for (const ticket of resend) this.resendForwarded(ticket, now);
    if (resend.length > 0) this.flush(now);
  }

  /** Takes a newer owner of a session that another node reported (a claim this node missed). */
  private adoptOwner(sessionId: string, owner: string, epoch: number, now: number): void {
    const session = this.store.get(sessionId, now);
    if (session === undefined) return;
    this.store.applyRemote(sessionId, { kind: 'claim' }, { owner, epoch, expiresAt: session.expiresAt, ttlMs: session.ttlMs }, now);
  }

  /**
   * Sends a forwarded write again, to the holders of the owner this node now knows of, and
   * makes its ticket wait for them. Its parts are stamped with the session's epoch here
   * (the claimed one, once adopted) and keep their version, writer and value: they are
   * newer than the claimed copy of the part unless it was written since, so every holder
   * converges on the write (and a client's if_version keeps matching). This node's copy
   * takes the same stamp, so it agrees with the others.
   */
  private resendForwarded(ticket: Ticket, now: number): void {
    const forwarded = ticket.forwarded!;
    if (forwarded.resends >= MAX_FORWARDED_RESENDS) return;
    forwarded.resends++;
    const session = this.store.get(forwarded.sessionId, now);
    if (session === undefined) return;
    const self = this.config.nodeId;
    const meta = { owner: session.owner, epoch: session.epoch, expiresAt: session.expiresAt, ttlMs: session.ttlMs };
    const changes = forwarded.changes.map((change): LocalChange => {
      if ((change.kind !== 'put' && change.kind !== 'delete_part') || change.writer !== undefined) return change;
      const epoch = session.epoch;
      const local: RemoteChange =
        change.kind === 'put'
          ? { kind: 'put', name: change.name, value: latin1(change.value), version: change.version, writer: self, epoch }
          : { kind: 'delete_part', name: change.name, version: change.version, writer: self, epoch };
      this.store.applyRemote(session.id, local, meta, now);
      return { ...change, epoch };
    });
    const holders = this.holdersBesidesSelf(session.owner, this.store.partitionOf(session.id));
    if (holders.length === 0) return;
    ticket.owner = session.owner !== self && holders[0] === session.owner ? session.owner : undefined;
    ticket.ownerConfirmed = false;
    ticket.flushed = false;
    forwarded.changes = changes;
    this.enqueue(session, changes, holders, now);
    ticket.waits = this.waitsFor(holders);
  }

  private checkTickets(): void {
    for (const ticket of this.tickets.values()) {
      if (ticket.needed === 0 || !ticket.flushed) continue;
      const acked = this.ackCount(ticket.id);
      if (acked >= ticket.needed) {
        this.completedTickets.push({ id: ticket.id, acked });
        this.tickets.delete(ticket.id);
      }
    }
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
    const channel = data.targetNodeId;
    if ((channel !== '' && channel !== this.config.nodeId) || (channel === '' && this.config.transport !== 'multicast')) {
      this.observer.dropped('misrouted');
      return;
    }
    // Channel state is kept only for members, so strangers cannot make it grow.
    if (this.membership.member(from) === undefined) {
      this.observer.dropped('unknown_sender');
      return;
    }
    const seq = safeSeq(data.seq);
    if (seq === 0) {
      this.observer.dropped('malformed');
      return;
    }
    if (this.isStale(from, incarnation)) {
      this.observer.dropped('stale_incarnation');
      return;
    }
    const key = receiverKey(from, incarnation, channel);
    const receiver = this.receiverFor(key, from, incarnation, channel);
    if (receiver.handleData(seq, data.ackRequested, now) === 'duplicate') return;
    for (const delta of data.deltas) this.apply(from, delta, now, receiver, seq);
    if (data.fragment !== undefined) this.onFragment(from, incarnation, data.fragment, now, receiver, seq);
    this.pollReceiver(key, receiver, now);
  }

  private onFragment(from: string, incarnation: bigint, fragment: NonNullable<Data['fragment']>, now: number, receiver: ChannelReceiver<Superseded>, seq: number): void {
    const senderKey = `${from}/${incarnation}`;
    let pending = this.reassembly.get(senderKey);
    if (pending === undefined) {
      pending = new Map();
      this.reassembly.set(senderKey, pending);
    }
    const count = fragment.count;
    if (count < 2 || count > 1 << 16 || fragment.index >= count) {
      this.observer.dropped('malformed');
      return;
    }
    const id = Number(fragment.deltaId);
    let entry = pending.get(id);
    // Charged per chunk and per entry as well as by bytes, so tiny fragments claiming huge
    // counts cannot hold more memory than maxReassemblyBytes.
    const cost = fragment.chunk.length + REASSEMBLY_CHUNK_OVERHEAD + (entry === undefined ? REASSEMBLY_ENTRY_OVERHEAD : 0);
    const used = this.reassemblyBytes.get(senderKey) ?? 0;
    if (entry !== undefined && (entry.count !== count || entry.chunks.has(fragment.index))) return;
    if (used + cost > this.config.maxReassemblyBytes) {
      this.observer.dropped('reassembly_overflow');
      if (entry !== undefined) {
        this.reassemblyBytes.set(senderKey, used - entry.bytes);
        pending.delete(id);
      }
      this.resyncChannelsOf(senderKey);
      return;
    }
    if (entry === undefined) {
      entry = { chunks: new Map(), count, bytes: 0, startedAt: now };
      pending.set(id, entry);
    }
    entry.chunks.set(fragment.index, fragment.chunk);
    entry.bytes += cost;
    this.reassemblyBytes.set(senderKey, used + cost);
    if (entry.chunks.size < count) return;
    pending.delete(id);
    this.reassemblyBytes.set(senderKey, (this.reassemblyBytes.get(senderKey) ?? 0) - entry.bytes);
    const ordered: Uint8Array[] = [];
    for (let i = 0; i < count; i++) ordered.push(entry.chunks.get(i)!);
    let delta: Delta;
    try {
      delta = Delta.decode(Buffer.concat(ordered));
    } catch {
      this.observer.dropped('malformed');
      return;
    }
    this.apply(from, delta, now, receiver, seq);
  }

  private expireReassembly(now: number): void {
    for (const [senderKey, pending] of this.reassembly) {
      for (const [id, entry] of pending) {
        if (now - entry.startedAt > this.config.reassemblyTimeoutMs) {
          pending.delete(id);
          this.reassemblyBytes.set(senderKey, (this.reassemblyBytes.get(senderKey) ?? 0) - entry.bytes);
          this.resyncChannelsOf(senderKey);
        }
      }
      if (pending.size === 0) {
        this.reassembly.delete(senderKey);
        this.reassemblyBytes.delete(senderKey);
      }
    }
  }

  /**
   * A delta of this sender (`node/incarnation`) was dropped after its fragments counted as
   * received, so no NACK will bring it back: its channels resync instead.
   */
  private resyncChannelsOf(senderKey: string): void {
    const prefix = senderKey + '/';
    for (const [key, receiver] of this.receivers) if (key.startsWith(prefix)) receiver.requestResync();
  }

  /** Reassembly memory held now, over all senders (bytes). */
  reassemblyBytesHeld(): number {
    let total = 0;
    for (const bytes of this.reassemblyBytes.values()) total += bytes;
    return total;
  }

  /** Applies a delta that came in packet `seq` of `receiver`'s channel. */
  private apply(from: string, delta: Delta, now: number, receiver: ChannelReceiver<Superseded>, seq: number): void {
    const owner = delta.ownerNodeId === '' ? from : delta.ownerNodeId;
    if (this.config.transport === 'multicast') {
      const partition = this.store.partitionOf(delta.sessionId);
      if (owner !== this.config.nodeId && !this.placement.isSecondary(this.config.nodeId, partition, owner) && this.store.snapshot(delta.sessionId, now) === undefined) {
        this.stats.deltasIgnored++;
        return;
      }
    }
    const change = toChange(delta, from);
    if (change === undefined) {
      this.observer.dropped('malformed');
      return;
    }
    const meta = { owner, epoch: Number(delta.epoch), expiresAt: Number(delta.expiresAtUnixMs), ttlMs: delta.ttlMs };
    this.store.applyRemote(delta.sessionId, change, meta, now);
    this.stats.deltasApplied++;
    // A write made elsewhere that names this node as the owner, while this node knows of a
    // newer owner or epoch (a claim its writer has not heard of, maybe this node's own
    // later one): the write carries an epoch the claimed copy beats, so this node is not
    // the owner that must have it. The acknowledgement says so, and the writer sends it
    // again to that owner at that epoch.
    if (owner === this.config.nodeId) {
      const current = this.store.ownerOf(delta.sessionId);
      if (current !== undefined && (current.owner !== owner || current.epoch > Number(delta.epoch))) {
        receiver.note(seq, { seq: BigInt(seq), sessionId: delta.sessionId, ownerNodeId: current.owner, epoch: BigInt(current.epoch) });
      }
    }
    const writtenAt = Number(delta.writtenAtUnixMs);
    if (writtenAt > 0) this.observer.lag(Math.max(0, now - writtenAt));
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
    const sender = this.senders.get(channel);
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
    const advertised = heartbeat.advertiseAddress || fromAddress;
    if (!isPeerAddress(advertised)) {
      this.observer.dropped('malformed');
      return;
    }
    const events = this.membership.handleHeartbeat(
      {
        nodeId: from,
        incarnation,
        advertiseAddress: advertised,
        configDigest: heartbeat.configDigest,
        leaving: heartbeat.leaving,
        known: heartbeat.known.filter((k) => NODE_ID.test(k.nodeId) && isPeerAddress(k.advertiseAddress)).slice(0, 1024),
      },
      now,
    );
    this.onMembershipEvents(events, now);
    // Channels are trusted only from the incarnation membership accepted (not a stale one).
    if (this.membership.member(from)?.incarnation !== incarnation) return;
    if (heartbeat.pulling) this.peersPulling.add(from);
    else this.peersPulling.delete(from);
    for (const channel of heartbeat.channels) {
      const target = channel.targetNodeId;
      if (target !== '' && target !== this.config.nodeId) continue;
      if (target === '' && this.config.transport !== 'multicast') continue;
      const highest = safeSeq(channel.highestSeq);
      if (highest === 0) continue;
      this.receiverFor(receiverKey(from, incarnation, target), from, incarnation, target).handleHighest(highest, now);
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
    if (events.length > 0) this.syncView(now);
    // A restart changes no view, but what its old incarnation sent last may have reached
    // some replicas and not others, and the new one starts empty: pull everything held
    // from every peer again.
    if (restarted) {
      this.pulledFrom.clear();
      this.pullHeldPartitions(this.otherLiveMembers(), 'placement');
    }
  }

  /** Applies a changed member view: placement, ack tracking, and new partitions to pull. */
  private syncView(now: number): void {
    if (this.membership.viewVersion === this.viewVersion) return;
    this.viewVersion = this.membership.viewVersion;
    const live = this.membership.liveNodeIds();
    this.placement.setMembers(live);
    const others = live.filter((id) => id !== this.config.nodeId);
    this.senders.get('')?.setReceivers(others);
    for (const [channel, sender] of this.senders) {
      if (channel !== '' && !others.includes(channel)) sender.setReceivers([]);
      else if (channel !== '') sender.setReceivers([channel]);
    }
    this.checkTickets();
    this.pullHeldPartitions(others, 'placement');
    if (this.unreplicated.size > 0) this.replicateUnreplicated(now);
    this.discardDueAt = now + DISCARD_AFTER_MS;
    this.discardFirstDueAt = Infinity;
    for (const nodeId of this.peersPulling) if (!live.includes(nodeId)) this.peersPulling.delete(nodeId);
  }

  /**
   * Pulls every partition this node holds from every live peer it has not pulled it from
   * since the peer (re)appeared, or from every peer when the partition was gained or this
   * node became a secondary of another owner in it (a member's death can make a node that
   * already held a partition the new secondary of some of its owners). Any member may own
   * sessions of any partition, so every peer is asked. A node alone (just started, or cut
   * off) holds everything with nobody to ask: it asks each peer as the peer appears, and
   * the peers, seeing it (re)appear, ask it in turn.
   */
  private pullHeldPartitions(others: readonly string[], reason: 'placement' | 'anti_entropy'): void {
    const pulls = new Map<string, number[]>();
    const previous = this.pulledFrom;
    this.pulledFrom = new Map();
    const self = this.config.nodeId;
    for (const partition of this.placement.partitionsHeldBy(self)) {
      const serves = new Set<string>();
      for (const owner of ['', ...others]) if (this.placement.isSecondary(self, partition, owner)) serves.add(owner);
      const before = previous.get(partition);
      const gained = before === undefined || [...serves].some((owner) => !before.serves.has(owner));
      const pulled = new Set<string>();
      for (const peer of others) {
        if (gained || !before.peers.has(peer)) {
          if (this.addressOf(peer) === undefined) continue;
          let list = pulls.get(peer);
          if (list === undefined) pulls.set(peer, (list = []));
          list.push(partition);
        }
        pulled.add(peer);
      }
      this.pulledFrom.set(partition, { serves, peers: pulled });
    }
    for (const [peer, partitions] of pulls) {
      this.requestResync({ peerNodeId: peer, peerAddress: this.addressOf(peer)!, partitions, channels: [], reason });
    }
  }

  /** Secondaries a fully replicated partition has (replicas, or at least one with replicas = 0). */
  private wantedSecondaries(): number {
    return this.placement.replicas === 0 ? 1 : this.placement.replicas;
  }

  /**
   * Sends again, as deltas, this node's own sessions of partitions written while they had
   * fewer secondaries than wanted (a node that started or was cut off accepts writes
   * before it knows its peers; nobody else has them to pull). A partition stays listed
   * until it has all its secondaries.
   */
  private replicateUnreplicated(now: number): void {
    const self = this.config.nodeId;
    for (const partition of [...this.unreplicated]) {
      const secondaries = this.placement.secondaries(partition, self).length;
      if (secondaries === 0) continue;
      if (secondaries >= this.wantedSecondaries()) this.unreplicated.delete(partition);
      for (const snapshot of this.store.snapshotsIn(partition, now)) {
        if (snapshot.owner !== self) continue;
        if (snapshot.expiresAt === 0) {
          if (snapshot.deletedVersion === 0) continue;
          const header = { id: snapshot.id, parts: [], owner: self, epoch: snapshot.epoch, ttlMs: snapshot.ttlMs, expiresAt: now + snapshot.ttlMs };
          this.replicateQuietly(header, [{ kind: 'delete_session', version: snapshot.deletedVersion }], now);
          continue;
        }
        const session = this.store.get(snapshot.id, now);
        if (session === undefined) continue;
        const changes: LocalChange[] = snapshot.parts.map((part) =>
          part.value === null
            ? { kind: 'delete_part', name: part.name, version: part.version, writer: part.writer, epoch: part.epoch }
            : { kind: 'put', name: part.name, value: Buffer.from(part.value, 'latin1'), version: part.version, writer: part.writer, epoch: part.epoch },
        );
        if (changes.length > 0) this.replicateQuietly(session, changes, now);
      }
    }
    this.flush(now);
  }

  /** replicate() without a ticket or an entry in `unreplicated` (a repeat, not a write). */
  private replicateQuietly(session: StoredSession, changes: readonly LocalChange[], now: number): void {
    this.enqueue(session, changes, this.holdersBesidesSelf(session.owner, this.store.partitionOf(session.id)), now);
  }

  private pollReceiver(key: string, receiver: ChannelReceiver<Superseded>, now: number): void {
    if (receiver.nextDeadline() > now) return;
    const [from, incarnationText, channel] = splitReceiverKey(key);
    // Until the sender's address is known nothing can be sent: keep the receiver's NACK
    // attempts and acknowledgement for then, rather than spend them on nothing.
    const address = this.addressOf(from);
    if (address === undefined) return;
    const poll = receiver.poll(now);
    if (poll.nack === undefined && poll.ack === undefined && !poll.resync) return;
    const incarnation = BigInt(incarnationText);
    if (poll.nack !== undefined) {
      const ranges = poll.nack.map(([first, last]) => ({ first: BigInt(first), last: BigInt(last) }));
      const nack = { channelSenderNodeId: from, channelSenderIncarnation: incarnation, targetNodeId: channel === '' ? '' : this.config.nodeId, ranges };
      const payload = this.encode({ $case: 'nack', nack });
      // On multicast a NACK goes to the group, so other receivers can hold theirs back, and
      // to the sender itself: the sender's group socket also receives its own multicast
      // traffic and may be full; its unicast socket is not. Its repair holdoff makes the two
      // copies cost one retransmission.
      if (channel === '') this.push('multicast', payload, 'nack');
      this.push(address, payload, 'nack');
    }
    if (poll.ack !== undefined) {
      const ack: Ack = {
        channelSenderNodeId: from,
        channelSenderIncarnation: incarnation,
        targetNodeId: channel === '' ? '' : this.config.nodeId,
        cumulativeSeq: BigInt(poll.ack),
        superseded: [],
        supersededCompleteAbove: BigInt(poll.notesCompleteAbove),
      };
      // The notes that fit in one datagram, newest first; those left out make the list
      // complete only above them (the writer sends those writes again).
      let room = this.config.maxPayloadBytes - ACK_BASE_BYTES;
      for (let i = poll.notes.length - 1; i >= 0; i--) {
        const note = poll.notes[i]!;
        room -= 40 + Buffer.byteLength(note.sessionId) + note.ownerNodeId.length;
        if (room < 0) {
          if (note.seq > ack.supersededCompleteAbove) ack.supersededCompleteAbove = note.seq;
          break;
        }
        ack.superseded.push(note);
      }
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
    if (request.reason === 'placement' || request.reason === 'join') {
      for (const partition of request.partitions) this.pendingPulls.set(partition, (this.pendingPulls.get(partition) ?? 0) + 1);
    }
    this.resyncs.push(request);
  }

  /**
   * Data from an older incarnation than membership knows for a live node is a straggler
   * from before its restart: it must not retire the new incarnation's receivers. (A dead
   * member's other incarnation is a restart, as membership treats it.)
   */
  /** The receiver of a channel, created (retiring older incarnations' channels) if new. */
  private receiverFor(key: string, from: string, incarnation: bigint, channel: string): ChannelReceiver<Superseded> {
    let receiver = this.receivers.get(key);
    if (receiver === undefined) {
      this.retireOldIncarnations(from, incarnation);
      receiver = new ChannelReceiver<Superseded>(this.config.receiver, channel === '', this.random);
      this.receivers.set(key, receiver);
    }
    return receiver;
  }

  private isStale(from: string, incarnation: bigint): boolean {
    const member = this.membership.member(from);
    return member !== undefined && member.incarnation > incarnation && member.state !== 'dead';
  }

  private retireOldIncarnations(nodeId: string, keep: bigint | undefined): void {
    const prefix = nodeId + '/';
    for (const key of [...this.receivers.keys()]) {
      if (key.startsWith(prefix) && (keep === undefined || !key.startsWith(`${prefix}${keep}/`))) this.receivers.delete(key);
    }
    for (const key of [...this.reassembly.keys()]) {
      if (key.startsWith(prefix) && (keep === undefined || key !== `${prefix}${keep}`)) {
        this.reassembly.delete(key);
        this.reassemblyBytes.delete(key);
      }
    }
  }

  private sendHeartbeats(now: number): void {
    const extras = this.heartbeatExtras();
    const known = this.membership
      .members()
      .filter((m) => m.nodeId !== '' && (m.state === 'alive' || m.state === 'suspect'))
      .map((m) => ({ nodeId: m.nodeId, advertiseAddress: m.advertiseAddress }));
    const base = {
      advertiseAddress: '',
      configDigest: this.membership.configDigest,
      channels: [] as { targetNodeId: string; highestSeq: bigint }[],
      leaving: this.leaving,
      pulling: this.hasPendingPulls(),
      sentAtUnixMs: BigInt(Math.floor(now)),
      known,
      ...extras,
    };
    // A channel is named only while a receiver has not acknowledged all of it: the
    // receiver then learns of lost tail packets, and answers with an acknowledgement (so
    // a lost final acknowledgement is repaired too). Fully acknowledged channels stay quiet.
    const multicastSender = this.senders.get('');
    if (this.config.transport === 'multicast') {
      const unacked = multicastSender !== undefined && multicastSender.receivers().some((id) => multicastSender.ackedBy(id) < multicastSender.highestSeq);
      const channels = unacked ? [{ targetNodeId: '', highestSeq: BigInt(multicastSender.highestSeq) }] : [];
      this.push('multicast', this.encode({ $case: 'heartbeat', heartbeat: { ...base, channels } }), 'heartbeat');
    }
    for (const target of this.membership.heartbeatTargets()) {
      const peer = this.nodeIdAt(target);
      const sender = peer === undefined ? undefined : this.senders.get(peer);
      const unacked = sender !== undefined && sender.ackedBy(peer!) < sender.highestSeq;
      const channels = unacked ? [{ targetNodeId: peer!, highestSeq: BigInt(sender.highestSeq) }] : [];
      if (this.config.transport === 'multicast' && peer !== undefined) continue;
      this.push(target, this.encode({ $case: 'heartbeat', heartbeat: { ...base, channels } }), 'heartbeat');
    }
  }

  private heartbeatDestinations(): string[] {
    const targets = this.membership.heartbeatTargets();
    return this.config.transport === 'multicast' ? ['multicast', ...targets] : targets;
  }

  private encode(body: NonNullable<Datagram['body']>): Uint8Array {
    return encodeWith((w) => Datagram.encode({ senderNodeId: this.config.nodeId, body }, w));
  }

  private push(to: string, payload: Uint8Array, type: keyof ReplicationEngine['stats']['datagramsSent']): void {
    this.outbox.push({ to, payload });
    this.stats.datagramsSent[type]++;
    this.stats.bytesSent += payload.length;
  }
}

const EMPTY = Buffer.alloc(0);

/** Node ids as --node-id accepts them; anything else in a datagram is malformed. */
const NODE_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const MAX_NACK_RANGES = 256;

/** host:port (IPv4 or a DNS name) with a port a datagram can be sent to. */
export function isPeerAddress(address: string): boolean {
  const match = /^([A-Za-z0-9.-]{1,253}):(\d{1,5})$/.exec(address);
  return match !== null && Number(match[2]) >= 1 && Number(match[2]) <= 65535;
}

/** A wire sequence number as a JS number, or 0 (never valid) when out of the safe range. */
function safeSeq(value: bigint): number {
  return value > 0n && value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : 0;
}

function receiverKey(from: string, incarnation: bigint, channel: string): string {
  return `${from}/${incarnation}/${channel}`;
}

function splitReceiverKey(key: string): [string, string, string] {
  const first = key.indexOf('/');
  const second = key.indexOf('/', first + 1);
  return [key.slice(0, first), key.slice(first + 1, second), key.slice(second + 1)];
}

function toChange(delta: Delta, from: string): RemoteChange | undefined {
  const writer = delta.writerNodeId === '' ? from : delta.writerNodeId;
  const version = Number(delta.version);
  // A part change carries the session epoch it was written (or claimed) in.
  const epoch = Number(delta.epoch);
  switch (delta.kind) {
    case DeltaKind.DELTA_KIND_PUT_PART:
      if (delta.partName === '' || version <= 0) return undefined;
      return { kind: 'put', name: delta.partName, value: latin1(delta.value), version, writer, epoch };
    case DeltaKind.DELTA_KIND_DELETE_PART:
      if (delta.partName === '' || version <= 0) return undefined;
      return { kind: 'delete_part', name: delta.partName, version, writer, epoch };
    case DeltaKind.DELTA_KIND_DELETE_SESSION:
      return version > 0 ? { kind: 'delete_session', version } : undefined;
    case DeltaKind.DELTA_KIND_TOUCH:
      return { kind: 'touch' };
    case DeltaKind.DELTA_KIND_CLAIM:
      return { kind: 'claim' };
    default:
      return undefined;
  }
}

function latin1(bytes: Uint8Array): string {
  return Buffer.prototype.latin1Slice.call(bytes, 0, bytes.byteLength);
}

/**
 * Encodes Datagram{sender, data: Data{target, seq, deltas, fragment, flags}} around
 * deltas that are already encoded, so a delta fanned out to several channels is encoded
 * once. Field numbers follow proto/baton/v1/wire.proto.
 */
function encodeData(sender: string, channel: string, packet: DataPacket, ackRequested: boolean): Uint8Array {
  return encodeWith((w) => {
    w.uint32(10).string(sender);
    w.uint32(18).fork();
    if (channel !== '') w.uint32(10).string(channel);
    w.uint32(16).uint64(packet.seq);
    for (const delta of packet.deltas) w.uint32(26).bytes(delta);
    if (packet.fragment !== undefined) {
      const f = packet.fragment;
      w.uint32(34).fork();
      w.uint32(8).uint64(f.deltaId).uint32(16).uint32(f.index).uint32(24).uint32(f.count).uint32(34).bytes(f.chunk);
      w.join();
    }
    if (ackRequested) w.uint32(40).bool(true);
    if (packet.retransmit) w.uint32(48).bool(true);
    w.join();
  });
}
