/**
 * One baton node, sans-IO: the composition of its store, membership, placement,
 * replication engine and session API, and every decision the node makes around them —
 * the only place a node is wired. The sidecar (sidecar/transport/udp-transport.ts), the
 * benchmark's in-process writer and the simulator (test/support/sim-cluster.ts) all build
 * their nodes here, so simulations run the composition that runs in production.
 *
 * Inputs, each with `now` (ms since the epoch, never read from a clock here):
 * - `handleDatagram`: an opened datagram payload from a peer;
 * - `handleAnswer`: a peer's answer to a request this core made (or its failure);
 * - `tick`: the one timer fired (at or after `Ready.deadline`);
 * - `flush`: datagrams or API calls made through `api` queued work (the core called its
 *   `wake` hook);
 * - `stop`: the node leaves.
 * Each returns a `Ready` (transport.ts): datagrams to send, peer requests to start, the
 * next deadline — in that order; except `handleDatagram`, which wakes the driver: what the
 * datagrams read in one turn make the node send goes out in one `flush`. API calls go to
 * `api` (the real SessionApi); the promises they wait on (synchronous writes, resumes)
 * and `drain`/`caughtUp`/back-pressure are resolved by the inputs above, never by a timer
 * of their own.
 *
 * Decisions made here: state transfers (coalescing requests for the same partitions of
 * the same peer; comparing digests before fetching, except after a gap; keeping only transferred sessions
 * placement gives this node), resume candidates (dead and left members skipped, suspect
 * ones waited for SUSPECT_PEER_WAIT_MS, the settle margin before the caller's deadline),
 * readiness (caught up after start), the drain predicate, the config digest, synchronous
 * write deadlines, anti-entropy rounds, seed re-resolution and injected loss.
 */
import type { BuzHash } from '../store/buzhash';
import { overallDigest, settingDigests, toWire, type ClusterSetting, type ClusterSettingValues } from './config-digests';
import { FORMAT_VERSION } from '../wire/datagram-codec';
import type { ChannelReceiverConfig } from './channel-receiver';
import { Membership, type MembershipConfig, type MembershipEvent, type NodeRoleName } from './membership';
import { NodeRole } from '../gen/baton/v1/wire';
import { Coordinator, membershipCoordinator, type CoordinatorTimings } from './coordinator';
import { NodeCounters } from './node-counters';
import { Placement } from './placement';
import { defaultElectionTimings, ownerGone, PartitionMasters, type ElectionTimings } from './partition-masters';
import { partitionMaster } from './name-service';
import { SeededRandom, type Random } from '../store/random';
import { ReplicationEngine, type LocalChange, type ResyncRequest } from './replication-engine';
import { TimerTable } from './timer-table';
import { ResumeAsks, type PeerRef } from './resume-asks';
import { SessionApi, type FetchOptions, type PeerCopies, type Replicator, type ResumeObserver } from './session-api';
import type { SessionSnapshot, SessionStore, StoredSession } from '../store/store';
import type { PeerAnswer, PeerRequest, Ready } from './transport';
import type { RequestLimits } from '../wire/validation';

/** Deadline of one state-transfer call: generous, as a partition pulled under load may be large; a failure is retried. */
export const RESYNC_DEADLINE_MS = 60_000;
/** Transfers parked behind other transfers' fetches wait at most this long (ms) without a snapshot arriving. */
export const PARK_STALL_MS = 1000;
/** How long a resume waits for a member that stopped answering heartbeats (suspect). */
export const SUSPECT_PEER_WAIT_MS = 200;
/** A resume's fetch settles up to this long before the caller's deadline (at most a quarter of its time). */
export const RESUME_ANSWER_MARGIN_MS = 250;
/** Readiness waits at least this many heartbeat intervals after start: time to hear from the peers. */
const CAUGHT_UP_HEARTBEATS = 3;
/**
 * The longest a node counts as catching up after its start: past it, a transfer that keeps
 * failing no longer holds writes back (readiness stops waiting at the same bound).
 */
export const CATCH_UP_LIMIT_MS = 60_000;

export interface NodeCoreConfig {
  nodeId: string;
  /** host:port peers reach this node at (datagrams and the peer gRPC service). */
  advertiseAddress: string;
  /** This process's incarnation: higher on every restart. */
  incarnation: bigint;
  partitions: number;
  /** Secondaries per session; 0 = every other member. */
  replicas: number;
  transport: 'unicast' | 'multicast';
  /** Largest datagram payload before sealing, in bytes. */
  maxPayloadBytes: number;
  retransmitBufferBytes: number;
  sendWindowBytes: number;
  maxReassemblyBytes: number;
  reassemblyTimeoutMs: number;
  receiver: ChannelReceiverConfig;
  membership: MembershipConfig;
  /** Static seed addresses (host:port). */
  seeds: readonly string[];
  /** Resolve more seeds (DNS) this often, in ms; 0 = no resolver (no `resolve_seeds` requests). */
  seedRefreshMs: number;
  /** Anti-entropy round interval in ms; 0 = off. */
  antiEntropyIntervalMs: number;
  /** Percentage of datagrams in dropped on purpose (testing), 0–100. */
  injectLossPercent: number;
  /** Request limits of the session API. */
  limits: RequestLimits;
  /** edge (default): serves and owns sessions; store: holds replicas, ranked first for secondaries. */
  role?: NodeRoleName;
  /** Multicast groups K (multicast transport): partition p's deltas go to group p mod K; default 1. */
  multicastGroups?: number;
  /** Sessions a discard walk looks at per slice (default 1024; the simulator's tests take small slices). */
  discardSliceSessions?: number;
  /**
   * What the config digests name (config-digests.ts) beyond this config: the multicast
   * groups' addresses (default: K unnamed groups) and the sealing cluster key's id (default 0).
   */
  multicastGroupAddresses?: readonly string[];
  clusterKeyId?: number;
  /** --priority: this node's stated capacity; higher wins partition master and coordinator elections. Default 0. */
  priority?: number;
  /**
   * --quorum: the fewest members, this node included, it must have heard from within
   * `membership.suspectAfterMs` to acknowledge writes, claim sessions and take them over
   * (quorumLost). Default 0: no quorum.
   */
  quorum?: number;
  /** Election timings (default: defaultElectionTimings of the heartbeat interval). */
  election?: Partial<ElectionTimings>;
  /** Coordinator election and view timings (default: DEFAULT_COORDINATOR_TIMINGS). */
  coordinator?: Partial<CoordinatorTimings>;
}

/**
 * What the core reports as it happens, beyond the counts in `NodeCore.counters`: events
 * (for logs and simulations) and distributions (for histograms).
 */
export interface NodeObserver {
  lag(seconds: number): void;
  /** A state transfer ended; `sessions` = sessions it merged. */
  resync(request: ResyncRequest, outcome: 'ok' | 'error', sessions: number, error?: string): void;
  membership(event: MembershipEvent): void;
  /** One peer's answer to a resume's lookup (or its failure), with its latency. */
  peerFetch(seconds: number, outcome: 'ok' | 'error'): void;
  /** With --quorum: this node lost its quorum (why: quorumLost's message), or has it (again: undefined). */
  quorum?(lost: string | undefined): void;
}

export interface NodeCoreDeps {
  /** The node's store (its config's nodeId and partitions match this config's). */
  store: SessionStore;
  /** The cluster's BUZhash table (placement, config digest). */
  hasher: BuzHash;
  /** The engine's random source (NACK timing); seeded for replay in simulations. */
  random: Random;
  observer: NodeObserver;
  resumeObserver?: ResumeObserver;
  /**
   * Called when a datagram or an API call queued work outside an input that returns a
   * Ready (an acknowledgement, a write to send, a resume to ask peers for): the driver calls
   * `flush(now)` soon (the sidecar once the datagrams and calls of this turn of its event
   * loop are in, so they share datagrams, one acknowledgement and one lookup per peer).
   */
  wake: () => void;
  /** Overrides the config digest (tests of the digest check only). */
  configDigest?: bigint;
}

/**
 * A schedule that runs beside the node on its one timer (the TLS ticket key schedule):
 * its deadline counts in `Ready.deadline`, and `tick` runs it when due. A companion whose
 * deadline moved outside an input calls `NodeCore.rescheduled()`.
 */
export interface Companion {
  nextDeadline(): number;
  tick(now: number): void;
}

interface Waiter {
  needed: number;
  deadline: number;
  resolve: (acked: number) => void;
}

interface Transfer {
  request: ResyncRequest;
  key: string;
  sessions: number;
  /** The partitions it is fetching (counted in NodeCore.fetching), once it fetches. */
  fetching?: readonly number[];
  /** It waited once for other transfers' fetches (see onDigests); it does not wait again. */
  parked?: boolean;
}

interface Pending<T> {
  deadline: number;
  resolve: (value: T) => void;
}

export class NodeCore implements Replicator {
  readonly store: SessionStore;
  readonly membership: Membership;
  readonly placement: Placement;
  readonly engine: ReplicationEngine;
  readonly api: SessionApi;
  readonly configDigest: bigint;
  /** One digest per cluster-critical setting (config-digests.ts): heartbeats carry them. */
  readonly settingDigests: ReadonlyMap<ClusterSetting, bigint>;
  /** Every count this node keeps (the engine's, the core's, the transport's): what metrics read. */
  readonly counters: NodeCounters;
  /** Partition master elections and takeover. */
  readonly masters: PartitionMasters;
  /** The cluster coordinator's election and views: what placement ranks. */
  readonly coordinator: Coordinator;
  /** The latest `now` an input carried. */
  private now: number;
  private readonly startedAt: number;
  /** Set once ownCopiesComplete has been true: it stays true. */
  private wholeSinceStart = false;
  private readonly observer: NodeObserver;
  private readonly wake: () => void;
  private readonly companions: Companion[] = [];
  private readonly lossRandom: SeededRandom;
  private readonly asks: ResumeAsks;
  private nextRequestId = 1;
  private requests: PeerRequest[] = [];
  private readonly waiters = new Map<number, Waiter>();
  private readonly waiterDeadlines = new TimerTable<number>();
  private awaited: number[] = [];
  private completed: { id: number; acked: number }[] = [];
  private settled = 0;
  private asksSettledBefore = 0;
  /** State transfers by request id (digests, then fetch). */
  private readonly transfers = new Map<number, Transfer>();
  /** Fetches in flight per partition. */
  private readonly fetching = new Map<number, number>();
  /** Transfers waiting for other transfers' fetches of their partitions (see onDigests). */
  private parked: Transfer[] = [];
  /** When a fetch last brought a snapshot (or started): parked transfers wait while fetches progress. */
  private fetchProgressAt = -Infinity;
  /** Transfers in progress by peer and partitions, with the request to run again after (if any). */
  private readonly resyncing = new Map<string, ResyncRequest | undefined>();
  /** Transfers started since the last Ready (their requests not handed out yet), by key. */
  private readonly unsentTransfers = new Map<string, Transfer>();
  /** Puts waiting for the send queues to shorten (one promise for all of them). */
  private room: { promise: Promise<void>; resolve: () => void } | undefined;
  private drains: Pending<boolean>[] = [];
  private catchUps: Pending<boolean>[] = [];
  private antiEntropyAt: number;
  private seedsAt: number;
  private stopped = false;
  /** The multicast groups last reported in a Ready ('' before the first). */
  private reportedGroups = '';
  private readonly hasher: BuzHash;
  /** Placement as it was when each owner was last heard (claimVouched), for the membership view it was computed in. */
  private readonly placementsThen = new Map<string, Placement>();
  private placementsThenView = -1;
  /**
   * With --quorum, since when this node has had its quorum without a break (Infinity while it
   * has not; sampled at every input, before it is applied, and after every turn): a member
   * it held dead meanwhile may have been alive on the other side of a split, so a member
   * counts as gone only once it has been unheard for dead-after with the quorum (ownerGone).
   */
  private quorumSince = Infinity;
  /** Why this node lacks its quorum as of `now` (undefined: it has it, or there is no --quorum): quorumLost. */
  private quorumMissing: string | undefined;
  /** Whether this node last reported having its quorum (NodeObserver.quorum); undefined before the first report. */
  private quorumReported: boolean | undefined;

  constructor(
    readonly config: NodeCoreConfig,
    deps: NodeCoreDeps,
    now: number,
  ) {
    this.now = now;
    this.startedAt = now;
    this.store = deps.store;
    this.observer = deps.observer;
    this.wake = deps.wake;
    this.settingDigests = settingDigests(clusterSettingValues(config, deps.hasher));
    this.configDigest = deps.configDigest ?? overallDigest(this.settingDigests);
    const self = { nodeId: config.nodeId, advertiseAddress: config.advertiseAddress, incarnation: config.incarnation, role: config.role ?? 'edge' };
    this.membership = new Membership(self, config.membership, this.configDigest, this.settingDigests);
    this.membership.addSeedAddresses([...config.seeds]);
    this.placement = new Placement(deps.hasher, config.partitions, config.replicas);
    this.hasher = deps.hasher;
    const settings = { self: config.nodeId, priority: config.priority ?? 0, role: config.role ?? 'edge', maxPayloadBytes: config.maxPayloadBytes, heartbeatIntervalMs: config.membership.heartbeatIntervalMs, timings: config.coordinator };
    this.coordinator = membershipCoordinator(this.membership, settings, (to, body) => this.engine.sendBody(to, body), now);
    const observer = this.observer;
    this.engine = new ReplicationEngine(
      {
        nodeId: config.nodeId,
        incarnation: config.incarnation,
        transport: config.transport,
        maxPayloadBytes: config.maxPayloadBytes,
        retransmitBufferBytes: config.retransmitBufferBytes,
        sendWindowBytes: config.sendWindowBytes,
        maxReassemblyBytes: config.maxReassemblyBytes,
        reassemblyTimeoutMs: config.reassemblyTimeoutMs,
        receiver: config.receiver,
        multicastGroups: config.multicastGroups ?? 1,
        discardSliceSessions: config.discardSliceSessions,
      },
      this.store,
      this.membership,
      this.placement,
      deps.random,
      {
        lag: (ms) => observer.lag(ms / 1000),
        dropped: (reason) => this.counters.drop(reason),
        membershipEvent: (event) => {
          this.counters.membershipEvent(event.type);
          observer.membership(event);
        },
      },
      () => ({
        advertiseAddress: config.advertiseAddress,
        configDigest: this.configDigest,
        role: config.role === 'store' ? NodeRole.NODE_ROLE_STORE : NodeRole.NODE_ROLE_EDGE,
        settingDigests: toWire(this.settingDigests),
        ...this.masters.heartbeatExtras(this.now),
        ...this.coordinator.heartbeatExtras(),
      }),
      {
        heard: (from, at) => this.masters.heard(from, at),
        heartbeat: (from, heartbeat, at) => {
          this.masters.heartbeat(from, heartbeat, at);
          this.coordinator.heartbeat(from, safeViewId(heartbeat.viewId), heartbeat.viewCoordinator, at);
        },
        body: (from, fromAddress, body, at) => {
          if (body.$case === 'coordinatorNotice' || body.$case === 'viewPage') this.coordinator.body(from, body, at);
          else this.masters.body(from, fromAddress, body, at);
        },
        masterOf: (partition) => partitionMaster(this, partition),
      },
      this.coordinator,
    );
    this.counters = new NodeCounters(this.engine.stats);
    this.masters = new PartitionMasters(
      {
        self: config.nodeId,
        priority: config.priority ?? 0,
        timings: { ...defaultElectionTimings(config.membership), ...config.election },
        maxPayloadBytes: config.maxPayloadBytes,
        store: this.store,
        membership: this.membership,
        placement: this.placement,
        counters: this.counters,
        send: (to, body) => this.engine.sendBody(to, body),
        replicateClaim: (session, previousOwner, at) => this.engine.replicateClaim(session, previousOwner, at),
        flush: (at) => this.engine.flush(at),
        pulling: () => this.engine.hasPendingPulls(),
        pullForTakeover: (partitions) => this.engine.pullForTakeover(partitions),
        takeoverPending: (partition) => this.engine.takeoverPending(partition),
        quorumLost: (at) => this.quorumLost(at),
        vouched: (partition, owner) => this.takeoverVouched(partition, owner),
        quorumSince: () => (this.quorumOn ? this.quorumSince : -Infinity),
      },
      now,
    );
    this.lossRandom = new SeededRandom(Number(config.incarnation & 0xffffffffn) ^ 0x1055_1055);
    this.asks = new ResumeAsks(
      (seconds, outcome) => observer.peerFetch(seconds, outcome),
      () => this.nextRequestId++,
      (nodeId, settleBy, now) => this.peerToAsk(nodeId, settleBy, now),
    );
    this.api = new SessionApi(this.store, config.limits, this, deps.resumeObserver, () => this.now);
    this.antiEntropyAt = config.antiEntropyIntervalMs > 0 ? now + config.antiEntropyIntervalMs : Infinity;
    this.seedsAt = config.seedRefreshMs > 0 ? now : Infinity;
  }

  // --- inputs ------------------------------------------------------------------------

  /**
   * An opened datagram payload from `fromAddress` (host:port), sealed by `incarnation`.
   * What it makes the node send waits for the next `flush` (the core wakes its driver), so
   * the datagrams a driver reads together are answered together: a burst of data on a
   * channel is acknowledged once, not datagram by datagram, and the node's bookkeeping
   * after an input runs once for all of them. The payload is lent for the call: the driver
   * may reuse its bytes after, so the core copies what it keeps (values go into the store's
   * slabs, fragments into reassembly).
   */
  handleDatagram(payload: Uint8Array, incarnation: bigint, fromAddress: string, now: number): void {
    this.advance(now);
    if (this.stopped) return;
    if (this.config.injectLossPercent > 0 && this.lossRandom.next() * 100 < this.config.injectLossPercent) {
      this.counters.drop('injected_loss');
      return;
    }
    this.engine.handleDatagram(payload, incarnation, fromAddress, now);
    this.wake();
  }

  /**
   * A peer's answer to one of this core's requests, or its failure. A transfer's snapshot
   * is merged and nothing more: what the node does after it waits for the next flush (the
   * core wakes its driver), as after a datagram. A transfer streams thousands of them a
   * second, and the bookkeeping after every input took half the joining node's time.
   */
  handleAnswer(answer: PeerAnswer, now: number): Ready {
    this.advance(now);
    if (this.stopped) return this.idle();
    switch (answer.kind) {
      case 'digests':
        this.onDigests(answer.id, answer.digests, now);
        break;
      case 'snapshot':
        this.onSnapshot(answer.id, answer.snapshot, now);
        this.wake();
        return this.idle();
      case 'fetched': {
        const transfer = this.transfers.get(answer.id);
        if (transfer !== undefined) this.endTransfer(answer.id, transfer, undefined, now);
        break;
      }
      case 'lookup':
        this.asks.answer(answer.id, answer.snapshots, now);
        break;
      case 'seeds':
        this.membership.setSeedAddresses([...this.config.seeds, ...answer.addresses]);
        break;
      case 'failed': {
        if (this.asks.owns(answer.id)) this.asks.answer(answer.id, undefined, now, answer.down === true);
        const transfer = this.transfers.get(answer.id);
        if (transfer !== undefined) this.endTransfer(answer.id, transfer, answer.error, now);
        break;
      }
    }
    return this.collect(now, false);
  }

  /** The timer fired: everything due at `now`. */
  tick(now: number): Ready {
    this.advance(now);
    if (this.stopped) return this.idle();
    if ((this.store.nextDeadline() ?? Infinity) <= now) this.store.tick(now);
    this.unpark(now);
    this.engine.tick(now);
    this.asks.tick(now);
    if (this.coordinator.nextDeadline() <= now) this.coordinator.tick(now);
    for (const companion of this.companions) if (companion.nextDeadline() <= now) companion.tick(now);
    for (const ticket of this.waiterDeadlines.due(now)) {
      this.waiterDeadlines.clear(ticket);
      const waiter = this.waiters.get(ticket);
      if (waiter === undefined || waiter.deadline > now) continue;
      this.waiters.delete(ticket);
      const acked = this.engine.ackCount(ticket);
      this.engine.releaseTicket(ticket);
      this.settle(() => waiter.resolve(acked));
    }
    if (this.antiEntropyAt <= now) {
      this.engine.antiEntropy(now);
      this.antiEntropyAt = now + this.config.antiEntropyIntervalMs;
    }
    if (this.seedsAt <= now) {
      this.requests.push({ kind: 'resolve_seeds', id: this.nextRequestId++ });
      this.seedsAt = now + this.config.seedRefreshMs;
    }
    return this.collect(now);
  }

  /** Sends what datagrams and API calls queued since the last input (the core called `wake`). */
  flush(now: number): Ready {
    this.advance(now);
    if (this.stopped) return this.idle();
    this.engine.flush(now);
    return this.collect(now);
  }

  /**
   * Leaves: announces departure (peers re-replicate at once), and settles everything still
   * waiting — writes with the acknowledgements they have, resumes with the copies they
   * have, drain with whether all was acknowledged. Inputs after this change nothing.
   */
  stop(now: number): Ready {
    this.advance(now);
    if (this.stopped) return this.idle();
    this.engine.leave();
    const datagrams = this.engine.takeOutbox();
    this.stopped = true;
    for (const [ticket, waiter] of this.waiters) {
      const acked = this.engine.ackCount(ticket);
      this.settle(() => waiter.resolve(acked));
    }
    this.waiters.clear();
    this.releaseRoom(true);
    this.asks.settleAll();
    const acknowledged = this.engine.allAcknowledged(this.answering);
    for (const drain of this.drains.splice(0)) this.settle(() => drain.resolve(acknowledged));
    const caughtUp = !this.engine.hasPendingPulls();
    for (const wait of this.catchUps.splice(0)) this.settle(() => wait.resolve(caughtUp));
    return { ...this.idle(), datagrams };
  }

  // --- what the node's lifecycle waits for ----------------------------------------------

  /**
   * Resolves once this node has caught up after start: it has had time to hear from its
   * peers (three heartbeat intervals) and every partition transfer that placement gave it
   * has finished — or at `deadline`, with whether it caught up. Readiness waits for it, so a
   * rolling restart does not take down the next node while this one still lacks its copies.
   */
  caughtUp(deadline: number): Promise<boolean> {
    if (this.stopped) return Promise.resolve(!this.engine.hasPendingPulls());
    return new Promise((resolve) => {
      this.catchUps.push({ deadline, resolve });
      this.wake();
    });
  }

  /**
   * Drain: sends what is queued and resolves once every live secondary acknowledged
   * everything this node sent, or at `deadline`, with whether everything was acknowledged.
   * Heartbeats, NACK repairs and acknowledgements go on meanwhile.
   */
  drain(deadline: number): Promise<boolean> {
    if (this.stopped) return Promise.resolve(this.engine.allAcknowledged(this.answering));
    return new Promise((resolve) => {
      this.drains.push({ deadline, resolve });
      this.wake();
    });
  }

  /** Runs `companion` on this node's timer from now on. */
  addCompanion(companion: Companion): void {
    this.companions.push(companion);
    this.wake();
  }

  /** A companion's deadline moved outside an input: the driver re-arms its timer at the next flush. */
  rescheduled(): void {
    this.wake();
  }

  /** The earliest time `tick` has work. */
  nextDeadline(): number {
    if (this.stopped) return Infinity;
    let next = Math.min(this.engine.nextDeadline(), this.store.nextDeadline() ?? Infinity, this.asks.nextDeadline(), this.antiEntropyAt, this.seedsAt);
    for (const companion of this.companions) next = Math.min(next, companion.nextDeadline());
    next = Math.min(next, this.waiterDeadlines.next(), this.masters.nextDeadline(this.now), this.coordinator.nextDeadline());
    if (this.parked.length > 0) next = Math.min(next, this.fetchProgressAt + PARK_STALL_MS);
    for (const drain of this.drains) if (drain.deadline < next) next = drain.deadline;
    const heard = this.peersHeardAt();
    for (const wait of this.catchUps) next = Math.min(next, wait.deadline, heard > this.now ? heard : Infinity);
    return next;
  }

  /** Status view: every member, with lag in unacknowledged sequence numbers. */
  unacked(): Map<string, number> {
    return this.engine.unackedByPeer();
  }

  // --- Replicator: what the session API asks of replication -----------------------------

  get replicas(): number {
    return this.config.replicas;
  }

  secondariesFor(sessionId: string): number {
    return this.placement.secondaries(this.store.partitionOf(sessionId), this.config.nodeId).length;
  }

  /**
   * Whether this node's own copies are whole: it has caught up once since it started (heard
   * its peers for CAUGHT_UP_HEARTBEATS intervals with no partition transfer pending).
   * Restarted under the same id, it owns sessions again before the copies pulled from its
   * peers (one of which may hold the last acknowledged write) have all arrived.
   */
  ownCopiesComplete(now: number): boolean {
    this.advance(now);
    this.noteCaughtUp(this.now);
    return this.wholeSinceStart;
  }

  /**
   * Latches wholeSinceStart the first time the node has caught up (or CATCH_UP_LIMIT_MS
   * after its start): checked on every input, so that a pull placement starts much later
   * (a member left) does not count as the start's.
   */
  private noteCaughtUp(now: number): void {
    if (this.wholeSinceStart || now < this.peersHeardAt()) return;
    if (!this.engine.hasPendingPulls() || now >= this.startedAt + CATCH_UP_LIMIT_MS) this.wholeSinceStart = true;
  }

  /** When this node has had time to hear from its peers after it started (caught-up waits). */
  private peersHeardAt(): number {
    return this.startedAt + CAUGHT_UP_HEARTBEATS * this.config.membership.heartbeatIntervalMs;
  }

  holdsEverySessionOf(sessionId: string): boolean {
    return this.config.replicas === 0 || this.placement.ranking(this.store.partitionOf(sessionId))[0] === this.config.nodeId;
  }

  holds(sessionId: string, owner: string): boolean {
    return owner === this.config.nodeId || this.placement.isSecondary(this.config.nodeId, this.store.partitionOf(sessionId), owner);
  }

  /**
   * Why this node may neither acknowledge writes nor claim sessions (see NodeCoreConfig.quorum),
   * or undefined while it may. The window is membership's suspect time: the other side of a
   * split holds this node live until its dead time and claims its sessions no sooner, so this
   * node stops before any claim there (2 s before, at the defaults).
   */
  quorumLost(now: number): string | undefined {
    this.advance(now);
    return this.quorumMissing;
  }

  /** quorumLost's answer at `now`, computed afresh (advance keeps it). */
  private missingQuorum(now: number): string | undefined {
    const quorum = this.config.quorum!;
    const heard = this.membersHeard(now);
    if (heard >= quorum) return undefined;
    return `no quorum: this node has heard from ${heard} of the ${quorum} members --quorum asks for (itself included) in the last ${this.config.membership.suspectAfterMs} ms, so it may be on the smaller side of a network split`;
  }

  /**
   * With --quorum, whether a claim of a session `owner` held may be made from the copies of
   * the peers that `answered` (this node's own counts as one): the owner answered, or it is
   * gone — departed, `down` (it refused the call), or dead and unheard for dead-after while
   * this node had its quorum (ownerGone) — and one of them was its secondary when it was
   * last heard (the members live then, membersWhenLastHeard), so the copies hold every
   * write it acknowledged. A live owner that did not answer may be cut off and go on
   * acknowledging writes on the other side of a split; others' copies — one kept from an
   * earlier resume, one pulled from a node that never held the session — may lack some of
   * its writes. A claim from them would beat those writes everywhere once the network
   * heals. Without a quorum, a claim takes the copies at hand.
   */
  claimVouched(sessionId: string, owner: string, answered: readonly string[], down: readonly string[]): boolean {
    if (!this.quorumOn) return true;
    if (!answered.includes(owner) && !down.includes(owner)) {
      const gone = ownerGone(this.membership.member(owner), this.now, this.startedAt, this.config.membership.deadAfterMs, this.quorumSince);
      if (!gone) return false;
    }
    return this.vouchedIn(this.store.partitionOf(sessionId), owner, answered);
  }

  /** Whether `sources` or this node are the owner or were its secondaries when it was last heard; true without --quorum. */
  private vouchedIn(partition: number, owner: string, sources: readonly string[]): boolean {
    const self = this.config.nodeId;
    if (!this.quorumOn || owner === self || sources.includes(owner)) return true;
    if (this.placementsThenView !== this.membership.viewVersion) {
      this.placementsThen.clear();
      this.placementsThenView = this.membership.viewVersion;
    }
    let placement = this.placementsThen.get(owner);
    if (placement === undefined) {
      placement = this.placementWhenLastHeard(owner);
      this.placementsThen.set(owner, placement);
    }
    return placement.secondaries(partition, owner).some((id) => id === self || sources.includes(id));
  }

  /**
   * Placement over the members live when `owner` was last heard. An owner this node has no
   * record of (it joined after the owner left, and after its peers forgot it): the members
   * now, with the owner — the holders that took its sessions over or re-replicated them as
   * it went.
   */
  private placementWhenLastHeard(owner: string): Placement {
    const then = this.membership.membersWhenLastHeard(owner) ?? { nodeIds: [...this.membership.liveNodeIds(), owner], storeIds: [...this.membership.liveStoreIds()] };
    const placement = new Placement(this.hasher, this.config.partitions, this.config.replicas);
    placement.setMembers(then.nodeIds, then.storeIds);
    return placement;
  }

  private get quorumOn(): boolean {
    return (this.config.quorum ?? 0) > 1;
  }

  /**
   * claimVouched for a master's takeover: its own copy must be one it held for the owner
   * (what it pulled from others may come from a view that did not reach the owner's other
   * holders: just after a split heals, say, with the owner still dead here). An orphaned
   * session it may not take over is left to a resume, which asks the holders.
   */
  takeoverVouched(partition: number, owner: string): boolean {
    return this.vouchedIn(partition, owner, []);
  }

  /** The members heard from within the suspect time, this node included: what --quorum counts. */
  membersHeard(now: number): number {
    return this.membership.heardWithin(this.config.membership.suspectAfterMs, now);
  }

  unplacedMembers(): number {
    const placed = this.placement.memberIds();
    return this.membership.liveNodeIds().filter((id) => !placed.includes(id)).length;
  }

  replicate(session: StoredSession, changes: readonly LocalChange[], now: number): number | undefined {
    this.advance(now);
    const ticket = this.engine.replicate(session, changes, now);
    this.wake();
    return ticket;
  }

  waitForAcks(ticket: number, needed: number, deadline: number): Promise<number> {
    this.engine.awaitTicket(ticket, needed);
    if (this.stopped) return Promise.resolve(this.engine.ackCount(ticket));
    this.awaited.push(ticket);
    this.waiterDeadlines.set(ticket, deadline);
    return new Promise((resolve) => this.waiters.set(ticket, { needed, deadline, resolve }));
  }

  /**
   * Back-pressure for writes: once a channel's queue (deltas waiting for its send window)
   * holds two windows' worth, writers wait until it is down to one (ReplicationEngine.
   * sendQueueOver: channels with a suspect receiver do not count, so a dead secondary holds
   * writers back only until it is suspect).
   */
  sendQueueRoom(): Promise<void> | undefined {
    if (this.stopped) return undefined;
    if (this.room === undefined) {
      if (!this.engine.sendQueueOver(2)) return undefined;
      let resolve!: () => void;
      const promise = new Promise<void>((r) => (resolve = r));
      this.room = { promise, resolve };
    }
    this.counters.backpressureWaits++;
    return this.room.promise;
  }

  /**
   * Asks the members that may hold a session for their copies, in rank order (ResumeAsks
   * asks the next only when the ones before did not settle it): `knownOwner` first when it
   * is live (its copy alone settles the ask), then the partition's holders by placement
   * rank — store nodes first. A dead or departed member is not asked (a resume during a
   * partition must not wait on the side it cannot reach), a suspect one is waited for at
   * most SUSPECT_PEER_WAIT_MS, and one whose heartbeat says it still pulls partitions is
   * asked as incomplete (its own copy does not settle the ask). The fetch settles a little before the caller's deadline, so
   * the answer reaches the caller in time. A claim's owner hands the session over to this
   * node as it answers (handOver).
   */
  fetchFromPeers(sessionId: string, knownOwner: string | undefined, deadline: number, now: number, { claim = false, ownerOnly = false }: FetchOptions = {}): Promise<PeerCopies> {
    this.advance(now);
    const partition = this.store.partitionOf(sessionId);
    const holders = ownerOnly ? [] : this.placement.holders(partition);
    const candidates = knownOwner === undefined ? holders : [knownOwner, ...holders.filter((id) => id !== knownOwner)];
    const settleBy = deadline - Math.min(RESUME_ANSWER_MARGIN_MS, Math.max(0, deadline - now) / 4);
    const peers: PeerRef[] = [];
    for (const nodeId of candidates) {
      const peer = this.peerToAsk(nodeId, settleBy, now);
      if (peer !== undefined) peers.push(peer);
    }
    if (this.stopped) return Promise.resolve({ asked: 0, answered: 0, snapshots: [] });
    const copies = this.asks.ask(sessionId, peers, settleBy, claim);
    if (peers.length > 0) this.wake();
    return copies;
  }

  /**
   * A member to ask for its copy of a session, waited for until `settleBy` (a suspect one
   * at most SUSPECT_PEER_WAIT_MS); undefined for this node, a stranger, and a member dead
   * or departed.
   */
  private peerToAsk(nodeId: string, settleBy: number, now: number): PeerRef | undefined {
    if (nodeId === this.config.nodeId) return undefined;
    const member = this.membership.member(nodeId);
    if (member === undefined || member.state === 'dead' || member.state === 'left') return undefined;
    const waitUntil = member.state === 'suspect' ? Math.min(settleBy, now + SUSPECT_PEER_WAIT_MS) : settleBy;
    return { nodeId, address: member.advertiseAddress, deadline: waitUntil, complete: !this.engine.peerPulling(nodeId) };
  }

  /**
   * A peer resuming a session asked for this node's copy (`claimant`, a lookup for a claim),
   * and the copy was just read for the answer: if this node owns the session, it hands it
   * over — it takes the claim the claimant is about to make (the claimant as owner, epoch
   * + 1, every part re-stamped) at once, before anything else runs here. Its own writes from
   * then on are writes on a session another node owns: they carry the claimed epoch (so the
   * claimed copy, which lacks them, does not beat them) and wait for the claimant's word.
   * Without this, a write this node made as owner between its answer and the claim's
   * arrival was acknowledged and then lost to the claim everywhere. The claimant claims as
   * it always did (from the copy answered), so the two claims agree; if it never does (it
   * died), its sessions are orphans the partition's master takes over. Only to a live
   * member other than this node.
   *
   * Returns false when the copy read must not be given at all: this node owns the session
   * only because the node it is itself resuming the session from handed it over, and that
   * node's answer, with the session's newest parts, has not been merged here yet (the
   * claim reached this node by replication first). Answered as owner, the claimant would
   * take this copy for the newest and claim from it; without it, the claimant asks the
   * others and merges their copies.
   */
  handOver(claimant: string, sessionId: string, now: number): boolean {
    this.advance(now);
    if (this.stopped || claimant === this.config.nodeId || this.membership.member(claimant)?.state !== 'alive') return true;
    if (!this.store.isOwnedBy(sessionId, this.config.nodeId)) return true;
    if (this.api.isResuming(sessionId)) return false;
    if (this.store.claim(sessionId, claimant, now) !== undefined) this.counters.handedOver++;
    return true;
  }

  replicateClaim(session: StoredSession, previousOwner: string, now: number): void {
    this.advance(now);
    this.counters.claimed('resume');
    this.engine.replicateClaim(session, previousOwner, now);
    this.wake();
  }

  // --- internals -----------------------------------------------------------------------

  private advance(now: number): void {
    if (now > this.now) this.now = now;
    if (!this.quorumOn) return;
    const lost = this.missingQuorum(this.now);
    this.quorumMissing = lost;
    this.quorumSince = lost !== undefined ? Infinity : Math.min(this.quorumSince, this.now);
    // Reported when it changes; a node that starts without its quorum (it has heard no one
    // yet) says so only if it still lacks it after dead-after: --quorum above the cluster's size.
    const has = lost === undefined;
    if (has === this.quorumReported || (!has && this.quorumReported === undefined && this.now < this.startedAt + this.config.membership.deadAfterMs)) return;
    this.quorumReported = has;
    this.observer.quorum?.(lost);
  }

  /** Members a drain waits for: a suspect one has stopped answering (likely dead). */
  private readonly answering = (nodeId: string): boolean => this.membership.member(nodeId)?.state === 'alive';

  private settle(resolve: () => void): void {
    this.settled++;
    resolve();
  }

  private idle(): Ready {
    return { datagrams: [], requests: [], deadline: Infinity, settled: 0, tickets: [], awaited: [] };
  }

  /**
   * Gathers what the engine and the waits produced into one Ready. `turn`: the input is the
   * timer or the flush, each at most once per event-loop turn; takeover claims only then
   * (a peer's answers can come by the thousand in one turn).
   */
  private collect(now: number, turn = true): Ready {
    this.advance(now);
    this.engine.pollArrived(now);
    this.coordinator.sync(now);
    this.engine.placementChanged(now);
    this.masters.work(now, turn);
    const datagrams = this.engine.takeOutbox();
    this.releaseRoom(false);
    for (const request of this.engine.takeResyncs()) this.startResync(request, now);
    const tickets = this.completed;
    this.completed = [];
    for (const done of this.engine.takeCompletedTickets()) {
      const waiter = this.waiters.get(done.id);
      if (waiter === undefined) continue;
      this.waiters.delete(done.id);
      this.waiterDeadlines.clear(done.id);
      tickets.push(done);
      this.settle(() => waiter.resolve(done.acked));
    }
    for (const { forClaim, ...lookup } of this.asks.takeRequests(now)) {
      this.requests.push(forClaim ? { kind: 'lookup', ...lookup, claimant: this.config.nodeId } : { kind: 'lookup', ...lookup });
    }
    this.checkWaits(now);
    const settled = this.settled + (this.asks.settledCount - this.asksSettledBefore);
    this.settled = 0;
    this.asksSettledBefore = this.asks.settledCount;
    const awaited = this.awaited;
    this.awaited = [];
    const requests = this.requests;
    this.requests = [];
    this.unsentTransfers.clear();
    const ready: Ready = { datagrams, requests, deadline: this.nextDeadline(), settled, tickets, awaited };
    const groups = this.engine.joinedGroups();
    const key = groups.join(',');
    if (key !== this.reportedGroups) {
      this.reportedGroups = key;
      ready.groups = groups;
    }
    return ready;
  }

  private checkWaits(now: number): void {
    this.noteCaughtUp(now);
    if (this.drains.length > 0) {
      const acknowledged = this.engine.allAcknowledged(this.answering);
      this.drains = this.drains.filter((drain) => {
        if (!acknowledged && drain.deadline > now) return true;
        this.settle(() => drain.resolve(acknowledged));
        return false;
      });
    }
    if (this.catchUps.length > 0) {
      const heard = now >= this.peersHeardAt();
      const pending = this.engine.hasPendingPulls();
      this.catchUps = this.catchUps.filter((wait) => {
        if ((!heard || pending) && wait.deadline > now) return true;
        this.settle(() => wait.resolve(!pending));
        return false;
      });
    }
  }

  private releaseRoom(force: boolean): void {
    if (this.room === undefined) return;
    if (!force && this.engine.sendQueueOver(1)) return;
    const room = this.room;
    this.room = undefined;
    this.settle(() => room.resolve());
  }

  /**
   * Pulls partitions from a peer: compare digests, fetch those that differ (a gap's
   * partitions: all of them), merge. A
   * request for what a transfer in progress already covers runs again once that one ends
   * (its snapshot may predate what the new request must cover); it is never taken as done
   * before it ran — unless that one was asked in the same input for the same reason
   * (the view changed twice while the datagrams of one turn were read): then one transfer
   * covers both.
   */
  private startResync(request: ResyncRequest, now: number): void {
    const key = `${request.peerNodeId} ${request.partitions.join(',')}`;
    const twin = this.unsentTransfers.get(key);
    if (twin !== undefined && twin.request.reason === request.reason) {
      twin.request = { ...twin.request, channels: [...twin.request.channels, ...request.channels] };
      this.engine.resyncDone({ ...request, channels: [] });
      return;
    }
    if (this.resyncing.has(key)) {
      const waiting = this.resyncing.get(key);
      this.resyncing.set(key, waiting === undefined ? request : { ...request, channels: [...waiting.channels, ...request.channels] });
      if (waiting !== undefined) this.engine.resyncDone({ ...waiting, channels: [] });
      return;
    }
    this.resyncing.set(key, undefined);
    this.counters.resyncs++;
    const id = this.nextRequestId++;
    const transfer = { request, key, sessions: 0 };
    this.transfers.set(id, transfer);
    this.unsentTransfers.set(key, transfer);
    const { peerAddress, partitions } = request;
    // A gap lost deltas, and some (touches, TTLs) change no digest: equal digests would
    // leave them lost, so a gap's partitions are fetched whatever their digests say.
    if (request.reason === 'gap') {
      this.markFetching(transfer, partitions, now);
      this.requests.push({ kind: 'fetch', id, peerAddress, partitions, deadline: now + RESYNC_DEADLINE_MS });
    } else {
      this.askDigests(id, transfer, now, false);
    }
  }

  /** The first step of a transfer (`again`: once more, after it was parked), under request `id`. */
  private askDigests(id: number, transfer: Transfer, now: number, again: boolean): void {
    const { peerAddress, partitions } = transfer.request;
    this.requests.push({ kind: 'digests', id, peerAddress, partitions, deadline: now + RESYNC_DEADLINE_MS, again });
  }

  private markFetching(transfer: Transfer, partitions: readonly number[], now: number): void {
    transfer.fetching = partitions;
    for (const p of partitions) this.fetching.set(p, (this.fetching.get(p) ?? 0) + 1);
    this.fetchProgressAt = now;
  }

  /** A transfer's fetch ended: its partitions are free again. */
  private doneFetching(transfer: Transfer): void {
    if (transfer.fetching === undefined) return;
    for (const p of transfer.fetching) {
      const left = (this.fetching.get(p) ?? 1) - 1;
      if (left > 0) this.fetching.set(p, left);
      else this.fetching.delete(p);
    }
    transfer.fetching = undefined;
  }

  /**
   * Parked transfers ask for digests again once no fetch holds their partitions, or once
   * fetches have brought nothing for PARK_STALL_MS (a peer cut off without a reset holds
   * its fetch until the deadline): then all of them, and they do not wait again.
   */
  private unpark(now: number): void {
    if (this.parked.length === 0) return;
    const stalled = now >= this.fetchProgressAt + PARK_STALL_MS;
    const parked = this.parked;
    this.parked = [];
    for (const waiting of parked) {
      if (!stalled && waiting.request.partitions.some((p) => this.fetching.has(p))) {
        this.parked.push(waiting);
        continue;
      }
      const id = this.nextRequestId++;
      this.transfers.set(id, waiting);
      this.askDigests(id, waiting, now, true);
    }
  }

  private onDigests(id: number, theirs: ReadonlyMap<number, bigint>, now: number): void {
    const transfer = this.transfers.get(id);
    if (transfer === undefined) return;
    const differing = transfer.request.partitions.filter((p) => theirs.get(p) !== this.store.digest(p));
    if (differing.length === 0) {
      this.endTransfer(id, transfer, undefined, now);
      return;
    }
    this.transfers.delete(id);
    // Another peer's copy of these partitions is arriving (a restarted node pulls every
    // partition from every peer at once): compared once it has arrived, this peer's
    // digests mostly agree, and the same sessions do not come two or three times. A
    // takeover's pull does not wait: the master's claims of a dead owner's sessions do.
    if (transfer.parked !== true && transfer.request.reason !== 'takeover' && differing.some((p) => this.fetching.has(p))) {
      transfer.parked = true;
      this.parked.push(transfer);
      return;
    }
    // The fetch continues the same transfer under a new id.
    const fetchId = this.nextRequestId++;
    this.transfers.set(fetchId, transfer);
    this.markFetching(transfer, differing, now);
    this.requests.push({ kind: 'fetch', id: fetchId, peerAddress: transfer.request.peerAddress, partitions: differing, deadline: now + RESYNC_DEADLINE_MS });
  }

  /** A transferred session: merged only if this node owns it or placement makes it a secondary of its owner. */
  private onSnapshot(id: number, snapshot: SessionSnapshot, now: number): void {
    const transfer = this.transfers.get(id);
    if (transfer === undefined) return;
    this.fetchProgressAt = now;
    const partition = this.store.partitionOf(snapshot.id);
    const owner = snapshot.owner;
    if (owner !== this.config.nodeId && !this.placement.isSecondary(this.config.nodeId, partition, owner)) return;
    if (!this.engine.mergeTransferred(snapshot, now)) return;
    transfer.sessions++;
    this.counters.sessionsTransferred++;
    const reason = transfer.request.reason;
    if (reason === 'anti_entropy') this.counters.antiEntropyRepairs++;
    if (reason === 'placement' || reason === 'join') this.counters.rereplicatedBytes += snapshotBytes(snapshot);
  }

  private endTransfer(id: number, transfer: Transfer, error: string | undefined, now: number): void {
    this.transfers.delete(id);
    this.doneFetching(transfer);
    this.unpark(now);
    const { request, key } = transfer;
    if (error === undefined) {
      this.engine.resyncDone(request);
      this.counters.transferEnded(request.reason, 'ok');
      this.observer.resync(request, 'ok', transfer.sessions);
    } else {
      this.counters.resyncFailures++;
      this.counters.transferEnded(request.reason, 'error');
      this.observer.resync(request, 'error', transfer.sessions, error);
      this.engine.resyncFailed(request, now);
    }
    const again = this.resyncing.get(key);
    this.resyncing.delete(key);
    if (again !== undefined) this.startResync(again, now);
  }
}

/** Bytes of state a snapshot carries (ids, names, values), for the re-replication counter. */
function snapshotBytes(snapshot: SessionSnapshot): number {
  let bytes = snapshot.id.length;
  for (const part of snapshot.parts) bytes += part.name.length + (part.value?.length ?? 0);
  return bytes;
}

/** The cluster-critical settings of a node core's configuration, as config-digests.ts digests them. */
export function clusterSettingValues(config: NodeCoreConfig, hasher: BuzHash): ClusterSettingValues {
  const groups = config.transport === 'multicast' ? (config.multicastGroupAddresses ?? Array.from({ length: config.multicastGroups ?? 1 }, (_, i) => `group ${i}`)) : [];
  return {
    partitions: config.partitions,
    replicas: config.replicas,
    hasher,
    protocolVersion: FORMAT_VERSION,
    multicastGroups: groups,
    clusterKeyId: config.clusterKeyId ?? 0,
  };
}

/** A heartbeat's view id as a number (0, "none", when out of the safe range). */
function safeViewId(id: bigint): number {
  return id > 0n && id <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(id) : 0;
}
