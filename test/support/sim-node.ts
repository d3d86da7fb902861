/**
 * Simulated baton nodes for protocol tests: each is a SessionStore, HybridClock,
 * Membership, Placement and ReplicationEngine wired the way the sidecar's
 * ReplicationDriver wires them, but on a SimNetwork and virtual time.
 *
 * Rules:
 * - Every datagram is sealed by a real DatagramSealer and opened by a real DatagramOpener,
 *   so the codec, the cluster key and the replay windows are in the loop; opener drops
 *   are counted per reason.
 * - A node does what the driver does after every input (`pump`): sends the outbox, starts
 *   the state transfers the engine asks for, and collects completed tickets.
 * - State transfers (`takeResyncs`) run as scheduled events `transferDelayMs` later: the
 *   peer's snapshots of each partition are merged into the requester's store, then
 *   `resyncDone`. A transfer to a stopped peer or across a cut link fails (and is counted),
 *   as a gRPC call would.
 * - Everything random derives from the cluster seed, so a seed replays a run exactly.
 */
import { BuzHash } from '../../src/store/buzhash';
import { applyCartUpdate } from '../../src/core/cart-merge';
import { DEFAULT_CHANNEL_RECEIVER_CONFIG, type ChannelReceiverConfig } from '../../src/core/channel-receiver';
import { clusterKeyFromBytes, deriveHashSeed, type ClusterKey } from '../../src/wire/cluster-key';
import { DatagramOpener, DatagramSealer, HEADER_BYTES, TAG_BYTES, type DropReason } from '../../src/wire/datagram-codec';
import { BinaryReader } from '@bufbuild/protobuf/wire';
import type { CartOperation } from '../../src/gen/baton/v1/session';
import { Data } from '../../src/gen/baton/v1/wire';
import { HybridClock } from '../../src/store/hybrid-clock';
import { DEFAULT_MEMBERSHIP_CONFIG, Membership, type MembershipConfig, type MembershipEvent } from '../../src/core/membership';
import { Placement } from '../../src/core/placement';
import { SeededRandom } from '../../src/store/random';
import { ReplicationEngine, type EngineDropReason, type LocalChange, type ResyncRequest } from '../../src/core/replication-engine';
import { DEFAULT_STORE_CONFIG, SessionStore, type SessionSnapshot } from '../../src/store/store';
import { PERFECT_LINK, SimNetwork, type DatagramMeta, type LinkProfile, type SimHost } from './sim-network';

/** Virtual time starts at a realistic Unix time: versions are hybrid-clock values. */
export const SIM_T0 = 1_700_000_000_000;
/** The request limits a simulated node's cart updates are checked against. */
const CART_LIMITS = { maxValueBytes: 64 * 1024, maxPartsPerSession: DEFAULT_STORE_CONFIG.maxPartsPerSession };
export const CONFIG_DIGEST = 0x6261_746f_6e00_0001n;

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
  /** Virtual duration of one state transfer. */
  transferDelayMs?: number;
}

type ResolvedOptions = Required<Omit<SimClusterOptions, 'receiver' | 'membership' | 'keys'>> & {
  keys: ClusterKey[];
  receiver: ChannelReceiverConfig;
  membership: MembershipConfig;
};

export interface ResyncRecord {
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

export class SimNode implements SimHost {
  running = true;
  /** Restarts so far. */
  generation = 0;
  incarnation = 0n;
  store!: SessionStore;
  clock!: HybridClock;
  membership!: Membership;
  placement!: Placement;
  engine!: ReplicationEngine;
  readonly openerDrops = new Map<DropReason, number>();
  readonly engineDrops = new Map<EngineDropReason, number>();
  readonly membershipEvents: ({ at: number } & MembershipEvent)[] = [];
  /** Ticket id → acknowledgements, for tickets the engine reported complete. */
  readonly completedTickets = new Map<number, number>();
  readonly resyncs: ResyncRecord[] = [];
  /** Payloads the engine produced above maxPayloadBytes (must stay 0). */
  oversizedPayloads = 0;
  datagramsAccepted = 0;
  private sealer: DatagramSealer | undefined;
  private opener: DatagramOpener | undefined;
  private keys: ClusterKey[];

  constructor(
    readonly cluster: SimCluster,
    readonly index: number,
    readonly nodeId: string,
    readonly address: string,
    readonly seeds: readonly string[],
  ) {
    this.keys = cluster.options.keys;
    this.boot();
  }

  private get net(): SimNetwork {
    return this.cluster.net;
  }

  private get options(): ResolvedOptions {
    return this.cluster.options;
  }

  /** Builds a fresh process: new incarnation, empty store, new engine. */
  private boot(): void {
    const o = this.options;
    const random = new SeededRandom(o.seed * 7919 + this.index * 104_729 + this.generation * 15_485_863);
    // Larger than any earlier incarnation of this node, as the driver's choice must be.
    this.incarnation = (BigInt(this.generation + 1) << 40n) | BigInt(random.nextUint32());
    this.clock = new HybridClock();
    this.store = new SessionStore(
      { ...DEFAULT_STORE_CONFIG, nodeId: this.nodeId, partitions: o.partitions },
      this.cluster.hasher,
      this.clock,
    );
    this.membership = new Membership({ nodeId: this.nodeId, advertiseAddress: this.address, incarnation: this.incarnation }, o.membership, CONFIG_DIGEST);
    this.membership.addSeedAddresses([...this.seeds]);
    this.placement = new Placement(this.cluster.hasher, o.partitions, o.replicas);
    this.engine = new ReplicationEngine(
      {
        nodeId: this.nodeId,
        incarnation: this.incarnation,
        transport: o.transport,
        maxPayloadBytes: o.maxPayloadBytes,
        retransmitBufferBytes: o.retransmitBufferBytes,
        sendWindowBytes: o.sendWindowBytes,
        maxReassemblyBytes: o.maxReassemblyBytes,
        reassemblyTimeoutMs: o.reassemblyTimeoutMs,
        receiver: o.receiver,
      },
      this.store,
      this.membership,
      this.placement,
      random,
      {
        lag: () => undefined,
        dropped: (reason) => this.engineDrops.set(reason, (this.engineDrops.get(reason) ?? 0) + 1),
        membershipEvent: (event) => this.membershipEvents.push({ at: this.net.now, ...event }),
      },
      () => ({ advertiseAddress: this.address, configDigest: CONFIG_DIGEST }),
    );
    this.sealer = undefined;
    this.opener = undefined;
    this.setKeys(this.keys);
  }

  /**
   * Replaces the cluster keys (the first seals, all open), as a key-file reload would.
   * The sealer is replaced only when the sealing key changes: a new sealer restarts packet
   * numbers, which under the same key would reuse GCM nonces. The opener is replaced when
   * the accepted set changes (DatagramOpener cannot change keys in place, so replay windows
   * start afresh then: the codec has no reload, see the report).
   */
  setKeys(keys: ClusterKey[]): void {
    const previous = this.keys;
    this.keys = keys;
    const ids = (list: ClusterKey[]) => list.map((k) => k.id).join(',');
    if (this.sealer === undefined || previous[0]!.id !== keys[0]!.id) this.sealer = new DatagramSealer(keys, this.incarnation);
    if (this.opener === undefined || ids([...previous].sort((a, b) => a.id - b.id)) !== ids([...keys].sort((a, b) => a.id - b.id))) {
      this.opener = new DatagramOpener(keys, { maxDatagramBytes: this.options.maxPayloadBytes + HEADER_BYTES + TAG_BYTES });
    }
  }

  // --- SimHost -------------------------------------------------------------------------

  deliver(bytes: Uint8Array, fromAddress: string, now: number): void {
    const opened = this.opener!.open(bytes);
    if (!opened.ok) {
      this.openerDrops.set(opened.reason, (this.openerDrops.get(opened.reason) ?? 0) + 1);
      return;
    }
    this.datagramsAccepted++;
    this.engine.handleDatagram(opened.payload, opened.incarnation, fromAddress, now);
    this.pump();
  }

  nextDeadline(): number {
    return Math.min(this.engine.nextDeadline(), this.store.nextDeadline() ?? Infinity);
  }

  tick(now: number): void {
    this.store.tick(now);
    this.engine.tick(now);
    this.pump();
  }

  // --- the application's writes, as the sidecar's session API makes them ----------------

  /** Puts parts (latin1 strings or bytes); sync > 0 waits for that many acknowledgements. */
  write(sessionId: string, parts: Record<string, string | Uint8Array>, options: { sync?: number; ttlMs?: number } = {}): { version: number; ticket: number | undefined } {
    const now = this.net.now;
    const writes = Object.entries(parts).map(([name, value]) => ({ name, value: typeof value === 'string' ? Buffer.from(value, 'latin1') : value }));
    const { version } = this.store.put(sessionId, writes, options.ttlMs ?? 0, now);
    const changes: LocalChange[] = writes.map((w) => ({ kind: 'put', name: w.name, value: w.value, version }));
    const ticket = this.engine.replicate(this.store.get(sessionId, now)!, changes, now);
    if (ticket !== undefined && (options.sync ?? 0) > 0) this.engine.awaitTicket(ticket, options.sync!);
    this.engine.flush(now);
    this.pump();
    return { version, ticket };
  }

  /** Applies UpdateCart operations the way SessionApi.updateCart does; returns the write's version. */
  updateCart(sessionId: string, operations: readonly CartOperation[]): number {
    const now = this.net.now;
    const { changes, version } = applyCartUpdate(this.store, sessionId, operations, 0, CART_LIMITS, now);
    if (changes.length > 0) this.engine.replicate(this.store.get(sessionId, now)!, changes, now);
    this.engine.flush(now);
    this.pump();
    return version;
  }

  /** Deletes named parts; returns whether any existed. */
  deleteParts(sessionId: string, names: string[]): boolean {
    const now = this.net.now;
    if (!this.store.delete(sessionId, names, now)) return false;
    const snapshot = this.store.snapshot(sessionId, now)!;
    const changes: LocalChange[] = snapshot.parts
      .filter((p) => p.value === null && names.includes(p.name))
      .map((p) => ({ kind: 'delete_part', name: p.name, version: p.version }));
    const session = this.store.get(sessionId, now);
    if (session !== undefined) this.engine.replicate(session, changes, now);
    this.engine.flush(now);
    this.pump();
    return true;
  }

  /** Deletes the whole session (a tombstone, replicated with the header it had). */
  deleteSession(sessionId: string): boolean {
    const now = this.net.now;
    if (!this.store.delete(sessionId, [], now)) return false;
    const snapshot = this.store.snapshot(sessionId, now)!;
    const session = { id: sessionId, parts: [], owner: snapshot.owner, epoch: snapshot.epoch, ttlMs: snapshot.ttlMs, expiresAt: now + snapshot.ttlMs };
    this.engine.replicate(session, [{ kind: 'delete_session', version: snapshot.deletedVersion }], now);
    this.engine.flush(now);
    this.pump();
    return true;
  }

  touch(sessionId: string, ttlMs = 0): boolean {
    const now = this.net.now;
    if (this.store.touch(sessionId, ttlMs, now) === undefined) return false;
    this.engine.replicate(this.store.get(sessionId, now)!, [{ kind: 'touch' }], now);
    this.engine.flush(now);
    this.pump();
    return true;
  }

  /**
   * A resume as the session API makes it: merges the copies of the running peers it can
   * reach (the peer fetch), claims the session unless it owns it, and replicates the
   * claim. Returns the epoch it owns the session at, or undefined if no one holds it.
   */
  resume(sessionId: string): number | undefined {
    const now = this.net.now;
    for (const peer of this.cluster.running) {
      if (peer === this || this.net.isCut(this.address, peer.address) || this.net.isCut(peer.address, this.address)) continue;
      const copy = peer.store.snapshot(sessionId, now);
      if (copy !== undefined) this.store.merge(copy, now);
    }
    const session = this.store.get(sessionId, now);
    if (session === undefined) return undefined;
    if (session.owner === this.nodeId) return session.epoch;
    const previousOwner = session.owner;
    const epoch = this.store.claim(sessionId, this.nodeId, now)!;
    this.engine.replicateClaim(this.store.get(sessionId, now)!, previousOwner, now);
    this.engine.flush(now);
    this.pump();
    return epoch;
  }

  // --- process lifecycle ---------------------------------------------------------------

  /** Crashes: no leave, nothing sent, state gone. */
  stop(): void {
    this.running = false;
  }

  /** Starts again as a new process: new incarnation, empty store. */
  restart(): void {
    this.generation++;
    this.boot();
    this.running = true;
  }

  // --- the driver's work after every input ---------------------------------------------

  pump(): void {
    if (!this.running) return;
    for (const { to, payload } of this.engine.takeOutbox()) {
      if (payload.length > this.options.maxPayloadBytes) this.oversizedPayloads++;
      this.net.send(this.address, to, this.sealer!.seal(payload), describe(payload));
    }
    for (const request of this.engine.takeResyncs()) this.cluster.startTransfer(this, request);
    for (const { id, acked } of this.engine.takeCompletedTickets()) this.completedTickets.set(id, acked);
  }

  count(reason: DropReason): number {
    return this.openerDrops.get(reason) ?? 0;
  }
}

/** Datagram body field numbers (wire.proto) → the label the network sees. */
const BODY_KINDS: Record<number, string> = { 2: 'data', 3: 'heartbeat', 4: 'nack', 5: 'ack', 6: 'gone', 7: 'leave' };

/** What the sender knows of its own datagram, for fault hooks (only data bodies decoded). */
function describe(payload: Uint8Array): DatagramMeta {
  const reader = new BinaryReader(payload);
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field === 2) {
      const data = Data.decode(reader.bytes());
      return { kind: 'data', seq: Number(data.seq), retransmit: data.retransmit, fragment: data.fragment !== undefined, deltaKinds: data.deltas.map((d) => d.kind) };
    }
    if (BODY_KINDS[field] !== undefined) return { kind: BODY_KINDS[field] };
    reader.skip(wireType);
  }
  return { kind: 'empty' };
}

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
      .map((p): [string, string | null, number, string, number] => [p.name, p.value, p.version, p.writer, p.epoch])
      .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)),
  };
}

/** A short, readable form of a snapshot for failure messages: values as length#hash. */
export function summary(snapshot: SessionSnapshot): string {
  const state = comparable(snapshot);
  const parts = state.parts.map(([name, value, version, writer]) => `${name}=${value === null ? 'tombstone' : `${value.length}#${hash(value)}`}@${version}/${writer}`);
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
  readonly transfers = { started: 0, ok: 0, failed: 0, stale: 0 };
  /** Highest retransmit buffer and reassembly bytes seen on any node, sampled every step. */
  readonly peaks = { retransmitBufferBytes: 0, reassemblyBytes: 0 };
  readonly boundViolations: string[] = [];

  constructor(options: SimClusterOptions) {
    const keys = options.keys ?? [DEFAULT_SIM_KEY];
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
      ...options,
      keys,
      receiver: { ...DEFAULT_CHANNEL_RECEIVER_CONFIG, ...options.receiver },
      membership: { ...DEFAULT_MEMBERSHIP_CONFIG, ...options.membership },
    };
    // One BUZhash table for the cluster: every node derives the same seed from the key.
    this.hasher = hasherFor(keys[0]!);
    this.net = new SimNetwork(options.seed, SIM_T0, this.options.profile);
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

  /** Every running node sees every other running node as live. */
  membershipSettled(): boolean {
    const ids = this.running.map((n) => n.nodeId).sort();
    return this.running.every((n) => JSON.stringify([...n.membership.liveNodeIds()]) === JSON.stringify(ids));
  }

  startTransfer(node: SimNode, request: ResyncRequest): void {
    this.transfers.started++;
    const generation = node.generation;
    const startedAt = this.net.now;
    this.net.schedule(this.net.now + this.options.transferDelayMs, () => {
      const now = this.net.now;
      if (!node.running || node.generation !== generation) {
        this.transfers.stale++;
        node.resyncs.push({ at: startedAt, request, outcome: 'stale', sessions: 0 });
        return;
      }
      const peer = this.nodes.find((n) => n.nodeId === request.peerNodeId && n.address === request.peerAddress);
      if (peer === undefined || !peer.running || this.net.isCut(node.address, peer.address) || this.net.isCut(peer.address, node.address)) {
        this.transfers.failed++;
        node.resyncs.push({ at: startedAt, request, outcome: 'failed', sessions: 0 });
        node.engine.resyncFailed(request, now);
        node.pump();
        return;
      }
      let sessions = 0;
      for (const partition of request.partitions) {
        for (const snapshot of peer.store.snapshotsIn(partition, now)) {
          node.store.merge(snapshot, now);
          sessions++;
        }
      }
      node.engine.resyncDone(request);
      this.transfers.ok++;
      node.resyncs.push({ at: startedAt, request, outcome: 'ok', sessions });
      node.pump();
    });
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
    placement.setMembers(live);
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
