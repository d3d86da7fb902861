/**
 * A simulated baton cluster for protocol tests: every node is the real node core
 * (src/core/node-core.ts) — store, membership, placement, replication engine and the real
 * SessionApi, composed the way the sidecar composes them — driven through a simulated
 * Transport (sim-transport.ts) on a SimNetwork and virtual time. One simulator for
 * replication, membership, ownership, resume and drain.
 *
 * Rules:
 * - A node's writes, deletes, touches, cart updates and resumes are SessionApi calls, as
 *   the sidecar's servers make them; after each, the node flushes (what the sidecar does
 *   on the next turn of its event loop).
 * - Every Ready the core returns is carried out by `carryOut`, as in the sidecar; the
 *   network ticks a node at the core's `nextDeadline()`.
 * - Promises the core settles (resumes, drains) continue after the simulation step that
 *   settled them: `resume` and `drain` run the network until the core settles something,
 *   let the continuations run, and go on (they are async for that reason only).
 * - Everything random derives from the cluster seed, so a seed replays a run exactly.
 */
import { BuzHash } from '../../src/store/buzhash';
import { DEFAULT_CHANNEL_RECEIVER_CONFIG, type ChannelReceiverConfig } from '../../src/core/channel-receiver';
import { clusterKeyFromBytes, deriveHashSeed, type ClusterKey } from '../../src/wire/cluster-key';
import type { DropReason } from '../../src/wire/datagram-codec';
import type { CartOperation, PutResponse } from '../../src/gen/baton/v1/session';
import { HybridClock } from '../../src/store/hybrid-clock';
import { DEFAULT_MEMBERSHIP_CONFIG, type MembershipConfig, type MembershipEvent, type NodeRoleName } from '../../src/core/membership';
import { NodeCore, type NodeCoreConfig } from '../../src/core/node-core';
import { Placement } from '../../src/core/placement';
import { SeededRandom } from '../../src/store/random';
import type { EngineDropReason, ResyncRequest } from '../../src/core/replication-engine';
import { DEFAULT_STORE_CONFIG, SessionStore, type SessionSnapshot } from '../../src/store/store';
import { carryOut, type PeerAnswer, type PeerRequest, type Ready } from '../../src/core/transport';
import type { CoordinatorTimings } from '../../src/core/coordinator';
import { PERFECT_LINK, SimNetwork, type LinkProfile, type SimHost } from './sim-network';
import { SimTransport, type SimTransportHost } from './sim-transport';

/** Virtual time starts at a realistic Unix time: versions are hybrid-clock values. */
export const SIM_T0 = 1_700_000_000_000;
/**
 * The request limits of a simulated node's API: large values (fragmentation scenarios). The
 * API checks well-known parts as in production, so simulations write readable test values
 * under other names ('basket', 'login').
 */
const SIM_LIMITS = { maxValueBytes: 16 * 1024 * 1024, maxPartsPerSession: DEFAULT_STORE_CONFIG.maxPartsPerSession };
/** How long a simulated synchronous write waits by default: longer than any scenario runs. */
const SIM_SYNC_DEADLINE_MS = 3_600_000;
/** A simulated client's Put: sync > 0 waits for that many acknowledgements. */
/**
 * A write writeSettled made. `ticket` is the last ticket the core reported awaited when the
 * write was made: a write the API held first (a look-up of its peers) may be made beside
 * others, so a test of concurrent writes reads `answer` instead — the API's own answer to
 * this write (undefined when it answered at once, as an asynchronous write).
 */
export interface SettledWrite {
  version: number;
  ticket: number | undefined;
  answer: Promise<PutResponse> | undefined;
}

export interface WriteOptions {
  sync?: number;
  ttlMs?: number;
  deadlineMs?: number;
}

/** How long a simulated resume may take (the API's default deadline). */
const SIM_RESUME_DEADLINE_MS = 5000;

export interface SimClusterOptions {
  seed: number;
  nodes: number;
  transport: 'unicast' | 'multicast';
  partitions?: number;
  replicas?: number;
  maxPayloadBytes?: number;
  /** Per channel. */
  retransmitBufferBytes?: number;
  /** Per channel; 0 = no window. */
  sendWindowBytes?: number;
  /** Per sender. */
  maxReassemblyBytes?: number;
  reassemblyTimeoutMs?: number;
  profile?: LinkProfile;
  /** Cluster keys every node starts with (the first seals); default DEFAULT_SIM_KEY. */
  keys?: ClusterKey[];
  receiver?: Partial<ChannelReceiverConfig>;
  membership?: Partial<MembershipConfig>;
  /** Virtual duration of one peer request (a state transfer takes two: digests, then fetch). */
  transferDelayMs?: number;
  /** Anti-entropy interval (ms; 0 = off, the default). */
  antiEntropyIntervalMs?: number;
  /** Virtual time at the start (Unix ms; default SIM_T0). */
  startMs?: number;
  /** Roles by node index from 1 (node-1 is roles[0]); default edge. */
  roles?: readonly NodeRoleName[];
  /** Multicast groups K (multicast transport; default 1). */
  multicastGroups?: number;
  /** Sessions a discard walk looks at per slice (default: the engine's). */
  discardSliceSessions?: number;
  /** --priority by node id (default 0); `SimCluster.priorities` changes it for later starts. */
  priorities?: Record<string, number>;
  /** Coordinator timings (default: what node-core derives from the heartbeat interval). */
  coordinator?: Partial<CoordinatorTimings>;
  /** --quorum of every node (default 0: none). */
  quorum?: number;
}

/** A node of one's own naming (membership scenarios). */
export interface SimNodeSpec {
  nodeId: string;
  address: string;
  seeds?: readonly string[];
  /** The first process's incarnation (default: drawn from the seed). */
  incarnation?: bigint;
  /** A config digest of its own (a misconfigured node); default: the cluster's. */
  configDigest?: bigint;
  /** A --replicas of its own (a misconfigured node: its digests differ in 'replicas'); default: the cluster's. */
  replicas?: number;
}

type ResolvedOptions = Required<Omit<SimClusterOptions, 'receiver' | 'membership' | 'keys' | 'priorities' | 'coordinator' | 'discardSliceSessions'>> & {
  coordinator: Partial<CoordinatorTimings> | undefined;
  discardSliceSessions: number | undefined;
  keys: ClusterKey[];
  receiver: ChannelReceiverConfig;
  membership: MembershipConfig;
};

export interface ResyncRecord {
  /** When the transfer ended. */
  at: number;
  request: ResyncRequest;
  outcome: 'ok' | 'failed' | 'stale';
  sessions: number;
}

/** A deterministic cluster key (one whose id is not the reserved 0). */
export function makeClusterKey(seed: number): ClusterKey {
  const random = new SeededRandom(seed);
  for (;;) {
    const bytes = Buffer.alloc(32);
    for (let i = 0; i < 32; i++) bytes[i] = random.below(256);
    try {
      return clusterKeyFromBytes(bytes);
    } catch {
      // id 0: draw again
    }
  }
}

export class SimNode implements SimHost, SimTransportHost {
  running = true;
  /** Restarts so far. */
  generation = 0;
  incarnation = 0n;
  core!: NodeCore;
  transport!: SimTransport;
  readonly membershipEvents: ({ at: number } & MembershipEvent)[] = [];
  /** With --quorum: when this node lost its quorum (and why) or had it again (lost undefined). */
  readonly quorumEvents: { at: number; lost: string | undefined }[] = [];
  /** The replication engine's drops by reason (the core's counters, this incarnation). */
  get engineDrops(): Map<EngineDropReason, number> {
    return new Map([...this.core.counters.dropped].filter(([reason]) => ENGINE_DROP_REASONS.has(reason))) as Map<EngineDropReason, number>;
  }
  /** Ticket id → acknowledgements, for synchronous writes the core reported acknowledged. */
  readonly completedTickets = new Map<number, number>();
  readonly resyncs: ResyncRecord[] = [];
  /** Every peer request this node's core made (transfers, lookups), with its virtual time. */
  readonly peerRequests: { at: number; request: PeerRequest }[] = [];
  /** Promises the core settled so far (continuations run between simulation steps). */
  private settledCount = 0;
  private lastAwaited: number | undefined;
  private flushScheduled = false;
  private keys: ClusterKey[];

  constructor(
    readonly cluster: SimCluster,
    readonly index: number,
    readonly nodeId: string,
    readonly address: string,
    readonly seeds: readonly string[],
    private readonly identity: { incarnation?: bigint; configDigest?: bigint; replicas?: number } = {},
  ) {
    this.keys = cluster.options.keys;
    this.boot();
  }

  get net(): SimNetwork {
    return this.cluster.net;
  }

  private get options(): ResolvedOptions {
    return this.cluster.options;
  }

  get store(): SessionStore {
    return this.core.store;
  }

  get membership(): NodeCore['membership'] {
    return this.core.membership;
  }

  get placement(): NodeCore['placement'] {
    return this.core.placement;
  }

  get engine(): NodeCore['engine'] {
    return this.core.engine;
  }

  get openerDrops(): Map<DropReason, number> {
    return this.transport.openerDrops;
  }

  get oversizedPayloads(): number {
    return this.transport.oversizedPayloads;
  }

  get datagramsAccepted(): number {
    return this.transport.datagramsAccepted;
  }

  get multicast(): boolean {
    return this.options.transport === 'multicast';
  }

  get maxPayloadBytes(): number {
    return this.options.maxPayloadBytes;
  }

  get requestDelayMs(): number {
    return this.options.transferDelayMs;
  }

  /** Builds a fresh process: new incarnation, empty store, new core. */
  private boot(): void {
    const o = this.options;
    // Ticket ids are the core's: a new one numbers its writes from 1 again.
    this.completedTickets.clear();
    this.lastAwaited = undefined;
    const random = new SeededRandom(o.seed * 7919 + this.index * 104_729 + this.generation * 15_485_863);
    // Larger than any earlier incarnation of this node, as the sidecar's choice must be.
    this.incarnation = (BigInt(this.generation + 1) << 40n) | BigInt(random.nextUint32());
    if (this.generation === 0 && this.identity.incarnation !== undefined) this.incarnation = this.identity.incarnation;
    const store = new SessionStore({ ...DEFAULT_STORE_CONFIG, nodeId: this.nodeId, partitions: o.partitions }, this.cluster.hasher, new HybridClock());
    const config: NodeCoreConfig = {
      nodeId: this.nodeId,
      advertiseAddress: this.address,
      incarnation: this.incarnation,
      partitions: o.partitions,
      replicas: this.identity.replicas ?? o.replicas,
      transport: o.transport,
      maxPayloadBytes: o.maxPayloadBytes,
      retransmitBufferBytes: o.retransmitBufferBytes,
      sendWindowBytes: o.sendWindowBytes,
      maxReassemblyBytes: o.maxReassemblyBytes,
      reassemblyTimeoutMs: o.reassemblyTimeoutMs,
      receiver: o.receiver,
      membership: o.membership,
      seeds: this.seeds,
      seedRefreshMs: 0,
      antiEntropyIntervalMs: o.antiEntropyIntervalMs,
      injectLossPercent: 0,
      limits: SIM_LIMITS,
      role: o.roles[this.index - 1] ?? 'edge',
      multicastGroups: o.multicastGroups,
      discardSliceSessions: o.discardSliceSessions,
      priority: this.cluster.priorities.get(this.nodeId) ?? 0,
      coordinator: o.coordinator,
      quorum: o.quorum,
    };
    this.core = new NodeCore(
      config,
      {
        store,
        hasher: this.cluster.hasher,
        random,
        observer: {
          lag: () => undefined,
          membership: (event) => this.membershipEvents.push({ at: this.net.now, ...event }),
          quorum: (lost) => this.quorumEvents.push({ at: this.net.now, lost }),
          peerFetch: () => undefined,
          resync: (request, outcome, sessions) => this.transferEnded(request, outcome, sessions),
        },
        wake: () => this.scheduleFlush(),
        ...(this.identity.configDigest === undefined ? {} : { configDigest: this.identity.configDigest }),
      },
      this.net.now,
    );
    this.transport = new SimTransport(this, this.keys, this.incarnation);
  }

  /** Replaces the cluster keys (the first seals, all open), as a key-file reload would. */
  setKeys(keys: ClusterKey[]): void {
    this.keys = keys;
    this.transport.setKeys(keys);
  }

  // --- SimHost -------------------------------------------------------------------------

  deliver(bytes: Uint8Array, fromAddress: string, now: number): void {
    // A copy of its own, as each socket reads one; opened in place, as the sidecar does.
    const opened = this.transport.open(Uint8Array.prototype.slice.call(bytes));
    if (opened === undefined) return;
    this.core.handleDatagram(opened.payload, opened.incarnation, fromAddress, now);
    // The payload was lent for the call: the sidecar reads the next datagram into the same
    // memory. Scribbling over it here makes anything the core kept without copying wrong.
    opened.payload.fill(0xee);
  }

  nextDeadline(): number {
    return this.core.nextDeadline();
  }

  tick(now: number): void {
    this.carry(this.core.tick(now));
  }

  // --- SimTransportHost ------------------------------------------------------------------

  peer(address: string): { store: SessionStore; handOver(claimant: string, sessionId: string, now: number): boolean } | undefined {
    const node = this.cluster.nodes.find((n) => n.address === address && n.running && !n.refusesPeerCalls);
    return node === undefined ? undefined : { store: node.store, handOver: (claimant, sessionId, now) => node.core.handOver(claimant, sessionId, now) };
  }

  /** Peers' calls to this node (transfers, look-ups) fail while set; its datagrams flow as ever. */
  refusesPeerCalls = false;

  answer(answer: PeerAnswer): void {
    // A fetch started on a digests answer continues that transfer.
    this.continuing = answer.kind === 'digests';
    this.carry(this.core.handleAnswer(answer, this.net.now));
    this.continuing = false;
  }

  private continuing = false;

  requestStarted(request: PeerRequest): void {
    this.peerRequests.push({ at: this.net.now, request });
    if ((request.kind === 'digests' && request.again !== true) || (request.kind === 'fetch' && !this.continuing)) this.cluster.transfers.started++;
  }

  staleAnswer(request: PeerRequest): void {
    if (request.kind !== 'digests' && request.kind !== 'fetch') return;
    this.cluster.transfers.stale++;
  }

  private transferEnded(request: ResyncRequest, outcome: 'ok' | 'error', sessions: number): void {
    if (outcome === 'ok') this.cluster.transfers.ok++;
    else this.cluster.transfers.failed++;
    this.resyncs.push({ at: this.net.now, request, outcome: outcome === 'ok' ? 'ok' : 'failed', sessions });
  }

  // --- the application's calls, through the real SessionApi -------------------------------

  /**
   * Puts parts (latin1 strings or bytes); sync > 0 waits for that many acknowledgements
   * (the ticket then names the write; see completedTickets). The write is made when this
   * returns; a write the API holds first (a synchronous write of a session this node lacks
   * looks it up at its peers) throws: use writeSettled.
   */
  write(sessionId: string, parts: Record<string, string | Uint8Array>, options: WriteOptions = {}): { version: number; ticket: number | undefined } {
    const started = this.startWrite(sessionId, parts, options);
    if (!started.made()) throw new Error(`${this.nodeId}: the API held the write of ${sessionId} (a look-up of its peers first): use writeSettled`);
    return started.result();
  }

  /**
   * write(), for a write the API may hold first: runs the network until the write is made
   * (or rejects as the API refused it).
   */
  async writeSettled(sessionId: string, parts: Record<string, string | Uint8Array>, options: WriteOptions = {}): Promise<SettledWrite> {
    const started = this.startWrite(sessionId, parts, options);
    let refused: { error: unknown } | undefined;
    started.answer?.catch((error: unknown) => (refused = { error }));
    const until = this.net.now + SIM_RESUME_DEADLINE_MS * 2;
    while (!started.made()) {
      await new Promise((resolve) => setImmediate(resolve));
      if (this.flushScheduled) this.flushNow();
      if (started.made()) break;
      if (refused !== undefined) throw refused.error;
      const before = this.settledCount;
      this.net.run(until, () => this.settledCount > before);
      if (this.settledCount === before && this.net.now >= until) throw new Error(`${this.nodeId}: the write of ${sessionId} was not made within ${SIM_RESUME_DEADLINE_MS * 2} ms of virtual time`);
    }
    return { ...started.result(), answer: started.answer };
  }

  /**
   * `count` session ids starting with `prefix` in partitions this node holds first: a
   * synchronous write of a new one is made at once, with no look-up of the peers first.
   */
  idsHeldFirst(prefix: string, count = 1): string[] {
    const ids: string[] = [];
    for (let k = 0; ids.length < count; k++) {
      const id = `${prefix}-${k}`;
      if (this.core.holdsEverySessionOf(id)) ids.push(id);
    }
    return ids;
  }

  /** Calls the API's Put; `made` says whether the write is in the store yet, `result` reads it. */
  private startWrite(sessionId: string, parts: Record<string, string | Uint8Array>, options: WriteOptions) {
    const writes = Object.entries(parts).map(([name, value]) => ({
      name,
      value: typeof value === 'string' ? Buffer.from(value, 'latin1') : Buffer.from(value.buffer, value.byteOffset, value.byteLength),
      ifVersion: undefined,
    }));
    const sync = options.sync ?? 0;
    const versionOf = () => this.store.snapshot(sessionId, this.net.now)?.parts.find((p) => p.name === writes[0]!.name)?.version ?? 0;
    const before = versionOf();
    this.lastAwaited = undefined;
    this.untilCaughtUp();
    const now = this.net.now;
    const answer = this.core.api.put(
      { sessionId, parts: writes, ttlSeconds: (options.ttlMs ?? 0) / 1000, minReplicas: sync },
      now,
      now + (options.deadlineMs ?? SIM_SYNC_DEADLINE_MS),
    );
    if (answer instanceof Promise) answer.catch(() => undefined);
    this.flushNow();
    return {
      answer: answer instanceof Promise ? answer : undefined,
      made: () => versionOf() > before,
      result: () => {
        this.flushNow();
        return { version: versionOf(), ticket: sync > 0 ? this.lastAwaited : undefined };
      },
    };
  }

  /**
   * The API holds writes until the node has caught up after its start (SessionApi): a
   * simulated client waits for that as a real one's call would, so a write made here is
   * applied when it returns.
   */
  private untilCaughtUp(): void {
    if (!this.cluster.runUntil(() => this.core.ownCopiesComplete(this.net.now), SIM_SYNC_DEADLINE_MS)) {
      throw new Error(`${this.nodeId} did not catch up after its start within ${SIM_SYNC_DEADLINE_MS} ms of virtual time: writes are held`);
    }
  }

  /** Applies UpdateCart operations through the API; returns the write's version. */
  updateCart(sessionId: string, operations: readonly CartOperation[]): number {
    this.untilCaughtUp();
    const now = this.net.now;
    const answer = this.core.api.updateCart({ sessionId, operations: [...operations], ttlSeconds: 0, minReplicas: 0 }, now);
    this.flushNow();
    if (answer instanceof Promise) throw new Error('a simulated cart update met back-pressure: give the scenario a larger send window');
    return Number(answer.version);
  }

  /** Deletes named parts; returns whether any existed. */
  deleteParts(sessionId: string, names: string[]): boolean {
    const { found } = this.core.api.delete({ sessionId, parts: names }, this.net.now);
    this.flushNow();
    return found;
  }

  /** Deletes the whole session (a tombstone, replicated with the header it had). */
  deleteSession(sessionId: string): boolean {
    const { found } = this.core.api.delete({ sessionId, parts: [] }, this.net.now);
    this.flushNow();
    return found;
  }

  touch(sessionId: string, ttlMs = 0): boolean {
    const { found } = this.core.api.touch({ sessionId, ttlSeconds: ttlMs / 1000 }, this.net.now);
    this.flushNow();
    return found;
  }

  /** Reads a session through the API, without resuming it. */
  get(sessionId: string): SessionSnapshot | undefined {
    return this.store.snapshot(sessionId, this.net.now);
  }

  /**
   * A resume through the API (Get with resume): asks the peers that may hold the session,
   * merges their copies, claims the session unless it owns it, and replicates the claim —
   * running the network meanwhile. Resolves with the epoch it owns the session at, or
   * undefined if no one holds it; rejects as the API does (UNAVAILABLE when no peer answered).
   */
  async resume(sessionId: string): Promise<number | undefined> {
    const now = this.net.now;
    const answer = this.core.api.get({ sessionId, parts: [], resume: true }, now, now + SIM_RESUME_DEADLINE_MS);
    const response = await this.runUntilSettled(Promise.resolve(answer), SIM_RESUME_DEADLINE_MS * 2);
    return response.found ? Number(response.session!.epoch) : undefined;
  }

  /** A drain (the sidecar's SIGTERM path before it leaves): resolves whether every live secondary acknowledged everything. */
  async drain(timeoutMs: number): Promise<boolean> {
    return this.runUntilSettled(this.core.drain(this.net.now + timeoutMs), timeoutMs * 2);
  }

  /** Runs the network until `promise` settles, letting the core's continuations run between steps. */
  private async runUntilSettled<T>(promise: Promise<T>, timeoutMs: number): Promise<T> {
    let outcome: { value: T } | { error: unknown } | undefined;
    promise.then(
      (value) => (outcome = { value }),
      (error: unknown) => (outcome = { error }),
    );
    this.flushNow();
    const until = this.net.now + timeoutMs;
    for (;;) {
      await new Promise((resolve) => setImmediate(resolve));
      if (this.flushScheduled) this.flushNow();
      if (outcome !== undefined) break;
      const before = this.settledCount;
      this.net.run(until, () => this.settledCount > before);
      if (this.settledCount === before && this.net.now >= until) throw new Error(`${this.nodeId}: nothing settled within ${timeoutMs} ms of virtual time`);
    }
    if ('error' in outcome) throw outcome.error;
    return outcome.value;
  }

  // --- process lifecycle ---------------------------------------------------------------

  /** Crashes: no leave, nothing sent, state gone. */
  stop(): void {
    this.running = false;
  }

  /** Leaves as a draining sidecar does last: announces departure, then stops. */
  leave(): void {
    if (!this.running) return;
    this.carry(this.core.stop(this.net.now));
    this.running = false;
  }

  /** Starts again as a new process: new incarnation, empty store. */
  restart(): void {
    this.generation++;
    this.boot();
    this.running = true;
  }

  // --- carrying out the core's Ready -------------------------------------------------------

  /** Sends what datagrams and API calls queued (what the sidecar does on the next event-loop turn). */
  flushNow(): void {
    this.flushScheduled = false;
    if (!this.running) return;
    this.carry(this.core.flush(this.net.now));
  }

  /** The core's wake: datagrams or API calls queued work (an acknowledgement, a resume's claim). */
  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    this.net.schedule(this.net.now, () => {
      if (this.flushScheduled) this.flushNow();
    });
  }

  private carry(ready: Ready): void {
    if (!this.running && ready.datagrams.length === 0) return;
    carryOut(ready, this.transport);
    for (const { id, acked } of ready.tickets) this.completedTickets.set(id, acked);
    if (ready.awaited.length > 0) this.lastAwaited = ready.awaited.at(-1);
    this.settledCount += ready.settled;
  }

  /** Kept for scenarios that drove the engine directly: sends what it queued. */
  pump(): void {
    if (this.running) this.carry(this.core.flush(this.net.now));
  }

  count(reason: DropReason): number {
    return this.transport.count(reason);
  }
}

const ENGINE_DROP_REASONS = new Set<string>(['malformed', 'misrouted', 'stale_incarnation', 'unknown_sender', 'reassembly_overflow', 'not_replica']);

/** A normalised snapshot for comparison (parts sorted; owner left out, see below). */
export interface ComparableState {
  live: boolean;
  deletedVersion: number;
  epoch: number;
  expiresAt: number;
  ttlMs: number;
  parts: [string, string | null, number, string, number][];
}

/**
 * A tombstone's TTL is left out: only the owner uses it (as the TTL of a put that revives
 * the session, and that put carries it to the replicas), and a replica whose last refresh
 * before the delete came by a state transfer made after the delete cannot learn it (a
 * tombstone's snapshot carries no expiry).
 */
export function comparable(snapshot: SessionSnapshot): ComparableState {
  const live = snapshot.expiresAt > 0;
  return {
    live,
    deletedVersion: snapshot.deletedVersion,
    epoch: snapshot.epoch,
    expiresAt: snapshot.expiresAt,
    ttlMs: live ? snapshot.ttlMs : 0,
    parts: snapshot.parts
      .map((p): [string, string | null, number, string, number] => [p.name, p.value === null ? null : p.value.toString('latin1'), p.version, p.writer, p.epoch])
      .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)),
  };
}

/** A short, readable form of a snapshot for failure messages: values as length#hash. */
export function summary(snapshot: SessionSnapshot): string {
  const state = comparable(snapshot);
  const parts = state.parts.map(([name, value, version, writer, epoch]) => `${name}=${value === null ? 'tombstone' : `${value.length}#${hash(value)}`}@${version}/${writer}/e${epoch}`);
  const head = state.live ? `live exp=${state.expiresAt}` : `deleted@${state.deletedVersion}`;
  return `{${head} epoch=${state.epoch} ttl=${state.ttlMs}${state.live && state.deletedVersion > 0 ? ` deleted@${state.deletedVersion}` : ''} [${parts.join(' ')}]}`;
}

function hash(s: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return (h >>> 0).toString(16).padStart(8, '0');
}

/** The cluster key of simulations that name none. */
export const DEFAULT_SIM_KEY = makeClusterKey(0x5eed);

/** BUZhash tables by seed (building one costs ~15 ms; simulations mostly share a key). */
const hashers = new Map<string, BuzHash>();
function hasherFor(key: ClusterKey): BuzHash {
  const seed = deriveHashSeed(key);
  const id = seed.toString('hex');
  let hasher = hashers.get(id);
  if (hasher === undefined) hashers.set(id, (hasher = new BuzHash(seed)));
  return hasher;
}

export class SimCluster {
  readonly net: SimNetwork;
  readonly nodes: SimNode[] = [];
  readonly options: ResolvedOptions;
  readonly hasher: BuzHash;
  /** --priority by node id, read when a node (re)starts. */
  readonly priorities: Map<string, number>;
  readonly transfers = { started: 0, ok: 0, failed: 0, stale: 0 };
  /** Highest retransmit buffer and reassembly bytes seen on any node, sampled every step. */
  readonly peaks = { retransmitBufferBytes: 0, reassemblyBytes: 0 };
  readonly boundViolations: string[] = [];

  constructor(options: SimClusterOptions) {
    const keys = options.keys ?? [DEFAULT_SIM_KEY];
    this.priorities = new Map(Object.entries(options.priorities ?? {}));
    this.options = {
      partitions: 32,
      replicas: 2,
      maxPayloadBytes: 1400,
      retransmitBufferBytes: 256 * 1024,
      sendWindowBytes: 64 * 1024,
      maxReassemblyBytes: 256 * 1024,
      reassemblyTimeoutMs: 10_000,
      profile: PERFECT_LINK,
      transferDelayMs: 5,
      antiEntropyIntervalMs: 0,
      startMs: SIM_T0,
      roles: [],
      multicastGroups: 1,
      quorum: 0,
      coordinator: undefined,
      discardSliceSessions: undefined,
      ...withoutPriorities(options),
      keys,
      receiver: { ...DEFAULT_CHANNEL_RECEIVER_CONFIG, ...options.receiver },
      membership: { ...DEFAULT_MEMBERSHIP_CONFIG, ...options.membership },
    };
    // One BUZhash table for the cluster: every node derives the same seed from the key.
    this.hasher = hasherFor(keys[0]!);
    this.net = new SimNetwork(options.seed, this.options.startMs, this.options.profile);
    for (let i = 0; i < options.nodes; i++) this.addNode();
    this.net.onStep = () => this.sampleBounds();
  }

  /** Adds a node whose seeds are every earlier node (a joiner, after construction). */
  addNode(): SimNode {
    const index = this.nodes.length + 1;
    const address = `10.0.0.${index}:7401`;
    const seeds = this.options.nodes >= index ? Array.from({ length: this.options.nodes }, (_, i) => `10.0.0.${i + 1}:7401`) : this.nodes.map((n) => n.address);
    const node = new SimNode(this, index, `node-${index}`, address, seeds.filter((a) => a !== address));
    this.nodes.push(node);
    this.net.attach(node, this.options.transport === 'multicast');
    return node;
  }

  /** Starts a node of one's own naming: a new process at `spec.address`, replacing (stopping) any there. */
  startNode(spec: SimNodeSpec): SimNode {
    for (const old of this.nodes) if (old.address === spec.address) old.stop();
    const node = new SimNode(this, this.nodes.length + 1, spec.nodeId, spec.address, spec.seeds ?? [], spec);
    this.nodes.push(node);
    this.net.attach(node, this.options.transport === 'multicast');
    return node;
  }

  node(nodeId: string): SimNode {
    const node = this.nodes.find((n) => n.nodeId === nodeId);
    if (node === undefined) throw new Error(`no node ${nodeId}`);
    return node;
  }

  get running(): SimNode[] {
    return this.nodes.filter((n) => n.running);
  }

  /** Runs for durationMs of virtual time. */
  runFor(durationMs: number): void {
    this.net.runFor(durationMs);
  }

  /** Runs until cond holds or timeoutMs of virtual time passes; returns whether it held. */
  runUntil(cond: () => boolean, timeoutMs: number): boolean {
    return this.net.run(this.net.now + timeoutMs, cond);
  }

  /**
   * Runs until every running node has caught up after its start (it holds API writes
   * until then: SessionApi); throws when one does not within `timeoutMs`.
   */
  runUntilCaughtUp(timeoutMs = 10_000): void {
    if (!this.runUntil(() => this.running.every((n) => n.core.ownCopiesComplete(this.net.now)), timeoutMs)) throw new Error(`not every node caught up within ${timeoutMs} ms of virtual time`);
  }

  /** Every running node sees every other running node as live. */
  membershipSettled(): boolean {
    const ids = this.running.map((n) => n.nodeId).sort();
    // Placement ranks the coordinator's view: settled once every node also places from that view of the running nodes.
    return this.running.every((n) => JSON.stringify([...n.membership.liveNodeIds()]) === JSON.stringify(ids) && n.core.coordinator.placingFromView && JSON.stringify([...n.placement.memberIds()]) === JSON.stringify(ids));
  }

  /** Upper bounds the engine promises for one node, given how many peers it can have. */
  bounds(): { retransmitBufferBytes: number; reassemblyBytes: number } {
    const peers = Math.max(1, this.nodes.length - 1);
    const channels = this.options.transport === 'multicast' ? 1 : peers;
    return {
      retransmitBufferBytes: this.options.retransmitBufferBytes * channels,
      reassemblyBytes: this.options.maxReassemblyBytes * peers,
    };
  }

  private sampleBounds(): void {
    const bounds = this.bounds();
    for (const node of this.nodes) {
      if (!node.running) continue;
      const buffered = node.engine.retransmitBufferBytes();
      const reassembly = node.engine.reassemblyBytesHeld();
      if (buffered > this.peaks.retransmitBufferBytes) this.peaks.retransmitBufferBytes = buffered;
      if (reassembly > this.peaks.reassemblyBytes) this.peaks.reassemblyBytes = reassembly;
      if (buffered > bounds.retransmitBufferBytes && this.boundViolations.length < 10) {
        this.boundViolations.push(`${node.nodeId} retransmit buffer ${buffered} > ${bounds.retransmitBufferBytes} at ${this.net.now - SIM_T0}`);
      }
      if (reassembly > bounds.reassemblyBytes && this.boundViolations.length < 10) {
        this.boundViolations.push(`${node.nodeId} reassembly ${reassembly} > ${bounds.reassemblyBytes} at ${this.net.now - SIM_T0}`);
      }
    }
  }

  /**
   * What is wrong with the replicas, as readable lines (empty = converged): for every
   * session (id → owner node id), every designated secondary of the owner (placement over
   * the running nodes) must hold exactly the owner's state, and, unless allowExtraCopies,
   * no other running node may hold it.
   *
   * The owner field is not compared: SessionStore.applyRemote/merge create a replica's
   * record with the replica itself as owner at epoch 1, and an owner's epoch-1 claim
   * never displaces it (see the report / the test that pins it).
   */
  divergences(owners: ReadonlyMap<string, string>, options: { allowExtraCopies?: boolean } = {}): string[] {
    const now = this.net.now;
    const problems: string[] = [];
    const live = this.running.map((n) => n.nodeId);
    const placement = new Placement(this.hasher, this.options.partitions, this.options.replicas);
    placement.setMembers(live, this.running.filter((n) => this.options.roles[n.index - 1] === 'store').map((n) => n.nodeId));
    for (const [id, ownerId] of owners) {
      const owner = this.node(ownerId);
      if (!owner.running) continue;
      const ownerSnapshot = owner.store.snapshot(id, now);
      if (ownerSnapshot === undefined) {
        problems.push(`${id}: the owner ${ownerId} does not hold it`);
        continue;
      }
      const want = JSON.stringify(comparable(ownerSnapshot));
      const partition = owner.store.partitionOf(id);
      const secondaries = new Set(placement.secondaries(partition, ownerId));
      for (const node of this.running) {
        if (node === owner) continue;
        const snapshot = node.store.snapshot(id, now);
        if (secondaries.has(node.nodeId)) {
          if (snapshot === undefined) problems.push(`${id}: secondary ${node.nodeId} lacks it (owner ${ownerId}: ${summary(ownerSnapshot)})`);
          else if (JSON.stringify(comparable(snapshot)) !== want) {
            problems.push(`${id}: secondary ${node.nodeId} holds ${summary(snapshot)}, owner ${ownerId} holds ${summary(ownerSnapshot)}`);
          }
        } else if (snapshot !== undefined && options.allowExtraCopies !== true) {
          problems.push(`${id}: ${node.nodeId} holds a copy but is not a secondary of ${ownerId}`);
        }
      }
    }
    return problems;
  }
}

function withoutPriorities(options: SimClusterOptions): Omit<SimClusterOptions, 'priorities'> {
  const { priorities: _priorities, ...rest } = options;
  return rest;
}
