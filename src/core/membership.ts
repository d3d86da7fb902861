/**
 * The failure detector and member table of one node (sans-IO).
 *
 * Driven by `handleHeartbeat(…, now)`, `handleLeave(…, now)` and `tick(now)`; each returns
 * the membership events it caused. States change only inside those calls, never on their
 * own: the driver arms one timer for `nextDeadline()` and calls `tick` when it fires, and
 * sends a heartbeat to every `heartbeatTargets()` address when `heartbeatDue(now)`.
 *
 * All three timeouts count from the last heartbeat accepted from the member. With the
 * defaults (a heartbeat every 250 ms), a node X that stops:
 *
 *   t          last heartbeat from X accepted                           alive
 *   t + 1000   4 heartbeats missed: 'suspect' (still in liveNodeIds,
 *              so one late packet does not move partitions)             suspect
 *   t + 3000   'dead': X leaves liveNodeIds and placement moves away     dead
 *   t + 60000  forgotten: dropped from the table, unless its address is
 *              a seed (then it stays listed as dead, and keeps being
 *              sent heartbeats so it is found again when it returns)
 *
 * Any accepted heartbeat from a suspect or dead member makes it alive again ('alive').
 *
 * Incarnations: a node picks a new incarnation at every process start, larger than any
 * before it (the driver's choice; start time in the high bits works). A heartbeat from a
 * known node id with a higher incarnation means the node restarted: 'restarted' (old and
 * new incarnation), and the member is alive at once whatever its state was; the caller
 * must reset every channel keyed on the old incarnation. A heartbeat with a lower
 * incarnation than known is a straggler from before the restart: ignored and counted;
 * except when the member is dead: no straggler lingers for deadAfterMs, so any other
 * incarnation from a dead member is a restart too. That keeps a node whose incarnations
 * do not grow (a clock stepped back, a random pick) from being locked out of a seed
 * address, whose dead record is never forgotten.
 *
 * Leaving: a heartbeat with `leaving` or a Leave makes the member 'left' for that
 * incarnation; only a higher incarnation brings it back. A left member is not sent
 * heartbeats; after the forget timeout it is dropped, or, if its address is a seed,
 * demoted to dead so that the seed is probed again.
 *
 * Refused: heartbeats whose config digest differs from ours (the member is never added;
 * 'config_mismatch' once per node incarnation and digest, naming the differing settings
 * (config-digests.ts); every one counted, by setting; the latest per node kept for Status
 * until the forget timeout), heartbeats from
 * ourselves, and heartbeats without a node id or address. Member addresses learned from
 * others' `known` lists are only probed (sent heartbeats), never counted as members until
 * they answer; the list is capped and entries not mentioned for the forget timeout expire,
 * so peers cannot grow it without bound.
 *
 * Roles: every heartbeat carries its sender's role (edge or store); a member's role is
 * the one its latest accepted heartbeat gave (a restart may change it). A role change
 * counts as a view change, since placement ranks store nodes first.
 *
 * Order: node ids compare by UTF-16 code units (`<`), the same on every node.
 */

import type { SettingDigest } from '../gen/baton/v1/wire';
import { differingSettings, type ClusterSetting } from './config-digests';

/** Failure detector timings. Every node of a cluster should use the same values. */
export interface MembershipConfig {
  /** Interval between two heartbeats this node sends, in ms. Default 250. */
  heartbeatIntervalMs: number;
  /** Silence after which an alive member becomes suspect, in ms since its last heartbeat. Default 1000. */
  suspectAfterMs: number;
  /** Silence after which a member is declared dead, in ms since its last heartbeat. Default 3000. */
  deadAfterMs: number;
  /**
   * Silence after which a dead or left member with no seed address is dropped from the
   * table (and a gossip-learned address is no longer probed), in ms since its last
   * heartbeat (or mention). Default 60000.
   */
  forgetDeadAfterMs: number;
}

export const DEFAULT_MEMBERSHIP_CONFIG: Readonly<MembershipConfig> = Object.freeze({
  heartbeatIntervalMs: 250,
  suspectAfterMs: 1000,
  deadAfterMs: 3000,
  forgetDeadAfterMs: 60_000,
});

/** Most gossip-learned addresses kept for probing; more are dropped and counted. */
export const MAX_PROBE_ADDRESSES = 1024;
/** Most forgotten members remembered for membersWhenLastHeard (the oldest go first). */
const MAX_DEPARTED = 1024;
/** Most nodes remembered as already reported for a config mismatch. */
const MAX_MISMATCH_REPORTS = 1024;

/** Throws a RangeError naming the field when the config is unusable. */
export function validateMembershipConfig(config: MembershipConfig): void {
  const positive = (name: keyof MembershipConfig): void => {
    const value = config[name];
    if (!Number.isFinite(value) || value <= 0) throw new RangeError(`${name} must be a positive number of ms (got ${value})`);
  };
  positive('heartbeatIntervalMs');
  positive('suspectAfterMs');
  positive('deadAfterMs');
  positive('forgetDeadAfterMs');
  if (config.deadAfterMs <= config.suspectAfterMs) {
    throw new RangeError(`deadAfterMs (${config.deadAfterMs}) must be greater than suspectAfterMs (${config.suspectAfterMs})`);
  }
  if (config.forgetDeadAfterMs < config.deadAfterMs) {
    throw new RangeError(`forgetDeadAfterMs (${config.forgetDeadAfterMs}) must be at least deadAfterMs (${config.deadAfterMs})`);
  }
}

export type MemberState = 'alive' | 'suspect' | 'dead' | 'left';

/** What a node is for (--role): beside a web server, or a replica holder only. */
export type NodeRoleName = 'edge' | 'store';

export interface KnownMemberAddress {
  nodeId: string;
  advertiseAddress: string;
}

/** A received heartbeat, as the driver decoded it (sender id and incarnation from the datagram). */
export interface HeartbeatInput {
  nodeId: string;
  incarnation: bigint;
  advertiseAddress: string;
  configDigest: bigint;
  leaving: boolean;
  known: readonly KnownMemberAddress[];
  /** The sender's role; absent = edge. */
  role?: NodeRoleName;
  /** The sender's per-setting config digests (config-digests.ts); absent = none sent. */
  settingDigests?: readonly SettingDigest[];
}

export type MembershipEvent =
  /** A node we had no record of was heard from. */
  | { type: 'joined'; nodeId: string; advertiseAddress: string; incarnation: bigint }
  /** A suspect or dead member was heard from again (same incarnation). */
  | { type: 'alive'; nodeId: string; previous: 'suspect' | 'dead' }
  | { type: 'suspect'; nodeId: string; lastHeardAt: number }
  | { type: 'dead'; nodeId: string; lastHeardAt: number }
  | { type: 'left'; nodeId: string; incarnation: bigint }
  /** A known node id came back with a new incarnation: reset its channel state. */
  | { type: 'restarted'; nodeId: string; oldIncarnation: bigint; newIncarnation: bigint; advertiseAddress: string }
  /** A node with different cluster-critical configuration was refused. */
  | { type: 'config_mismatch'; nodeId: string; advertiseAddress: string; theirDigest: bigint; ourDigest: bigint; settings: string[] };

/** A node refused for its configuration, as Status lists it. */
export interface ConfigMismatchReport {
  nodeId: string;
  advertiseAddress: string;
  /** The differing settings (config-digests.ts names; 'unknown' when the node sent none). */
  settings: string[];
  /** When its last refused heartbeat came. */
  lastAt: number;
}

export interface MemberView {
  /** '' for a seed address never heard from. */
  nodeId: string;
  advertiseAddress: string;
  state: MemberState;
  /** 0n for a seed address never heard from. */
  incarnation: bigint;
  /** Time of the last accepted heartbeat; null for ourselves and for unheard seeds. */
  lastHeardAt: number | null;
  isSelf: boolean;
  /** 'edge' for a seed address never heard from. */
  role: NodeRoleName;
}

export interface MembershipCounters {
  /** Heartbeats accepted (from known or new members). */
  heartbeatsAccepted: number;
  /** Heartbeats or leaves carrying an older incarnation than known (member not dead). */
  staleHeartbeats: number;
  /** Heartbeats refused for a config digest different from ours. */
  configMismatches: number;
  /** Heartbeats carrying our own node id (multicast loopback, or a duplicate node id). */
  selfHeartbeats: number;
  /** Heartbeats without a node id or advertise address. */
  invalidHeartbeats: number;
  /** Heartbeats without `leaving` from a member that already left at that incarnation. */
  heartbeatsAfterLeft: number;
  /** Leaves (or leaving heartbeats) from nodes with no record: nothing to do. */
  unknownLeaves: number;
  /** Restarts detected (a higher incarnation, or any other one from a dead member). */
  restarts: number;
  /** Members dropped from the table after the forget timeout or replaced at their address. */
  forgottenMembers: number;
  /** Gossip-learned addresses dropped because MAX_PROBE_ADDRESSES were already kept. */
  probeAddressesDropped: number;
}

interface MemberRecord {
  readonly nodeId: string;
  advertiseAddress: string;
  incarnation: bigint;
  state: MemberState;
  lastHeardAt: number;
  role: NodeRoleName;
}

interface MismatchReport {
  incarnation: bigint;
  digest: bigint;
  lastAt: number;
  advertiseAddress: string;
  settings: string[];
}

export class Membership {
  readonly config: Readonly<MembershipConfig>;
  readonly counters: MembershipCounters = {
    heartbeatsAccepted: 0,
    staleHeartbeats: 0,
    configMismatches: 0,
    selfHeartbeats: 0,
    invalidHeartbeats: 0,
    heartbeatsAfterLeft: 0,
    unknownLeaves: 0,
    restarts: 0,
    forgottenMembers: 0,
    probeAddressesDropped: 0,
  };
  /** Increments once for every call that changes liveNodeIds(). */
  viewVersion = 0;
  /** Heartbeats refused for their configuration, by differing setting (a few fixed names). */
  readonly configMismatchesBySetting = new Map<string, number>();

  private readonly records = new Map<string, MemberRecord>();
  private seeds = new Set<string>();
  /** Gossip-learned addresses → when they were last mentioned. */
  private readonly probes = new Map<string, number>();
  private readonly mismatches = new Map<string, MismatchReport>();
  /** Members forgotten (dropped from the table), oldest first: when each was last heard, and its role. */
  private readonly departed = new Map<string, { lastHeardAt: number; liveUntil: number; role: NodeRoleName }>();
  private live: readonly string[];
  /** The live members with the store role (ourselves included), sorted. */
  private liveStores: readonly string[] = Object.freeze([]);
  /** 0 before the first heartbeat: due at once. */
  private nextHeartbeatAt = 0;

  constructor(
    private readonly self: { readonly nodeId: string; readonly advertiseAddress: string; readonly incarnation: bigint; readonly role?: NodeRoleName },
    config: MembershipConfig,
    readonly configDigest: bigint,
    /** Our per-setting digests, to name what differs in a refused heartbeat. */
    private readonly settingDigests: ReadonlyMap<ClusterSetting, bigint> = new Map(),
  ) {
    if (self.nodeId === '') throw new RangeError('self.nodeId must not be empty');
    validateMembershipConfig(config);
    this.config = Object.freeze({ ...config });
    this.live = Object.freeze([self.nodeId]);
    if (self.role === 'store') this.liveStores = Object.freeze([self.nodeId]);
  }

  get role(): NodeRoleName {
    return this.self.role ?? 'edge';
  }

  get nodeId(): string {
    return this.self.nodeId;
  }

  get incarnation(): bigint {
    return this.self.incarnation;
  }

  /** Adds static (`--peers`) or discovered seed addresses; our own address is ignored. */
  addSeedAddresses(addresses: readonly string[]): void {
    for (const raw of addresses) {
      const address = raw.trim();
      if (address !== '' && address !== this.self.advertiseAddress) {
        this.seeds.add(address);
        this.probes.delete(address);
      }
    }
  }

  /** Replaces the seed addresses (e.g. with a fresh DNS answer). */
  setSeedAddresses(addresses: readonly string[]): void {
    this.seeds = new Set();
    this.addSeedAddresses(addresses);
  }

  seedAddresses(): string[] {
    return [...this.seeds].sort();
  }

  handleHeartbeat(from: HeartbeatInput, now: number): MembershipEvent[] {
    if (from.nodeId === this.self.nodeId) {
      this.counters.selfHeartbeats++;
      return [];
    }
    if (from.nodeId === '' || from.advertiseAddress === '') {
      this.counters.invalidHeartbeats++;
      return [];
    }
    if (from.configDigest !== this.configDigest) return this.refuseMismatch(from, now);
    this.mismatches.delete(from.nodeId);

    const events: MembershipEvent[] = [];
    const record = this.records.get(from.nodeId);
    if (record === undefined) {
      if (from.leaving) {
        // A draining node we never knew: nothing to add, but its address is now accounted for.
        this.counters.unknownLeaves++;
        this.probes.delete(from.advertiseAddress);
      } else {
        this.counters.heartbeatsAccepted++;
        this.records.set(from.nodeId, {
          nodeId: from.nodeId,
          advertiseAddress: from.advertiseAddress,
          incarnation: from.incarnation,
          state: 'alive',
          lastHeardAt: now,
          role: from.role ?? 'edge',
        });
        this.claimAddress(from.nodeId, from.advertiseAddress);
        events.push({ type: 'joined', nodeId: from.nodeId, advertiseAddress: from.advertiseAddress, incarnation: from.incarnation });
      }
    } else if (from.incarnation < record.incarnation && record.state !== 'dead') {
      this.counters.staleHeartbeats++;
      return [];
    } else if (from.incarnation !== record.incarnation) {
      this.counters.heartbeatsAccepted++;
      this.restart(record, from.incarnation, from.advertiseAddress, now, events);
      if (from.leaving) this.markLeft(record, events);
    } else if (record.state === 'left') {
      if (from.leaving) {
        // Still draining: keep it from being forgotten while it talks.
        this.counters.heartbeatsAccepted++;
        record.lastHeardAt = now;
      } else {
        this.counters.heartbeatsAfterLeft++;
      }
      return [];
    } else {
      this.counters.heartbeatsAccepted++;
      record.lastHeardAt = now;
      if (record.advertiseAddress !== from.advertiseAddress) {
        record.advertiseAddress = from.advertiseAddress;
        this.claimAddress(record.nodeId, record.advertiseAddress);
      }
      if (from.leaving) {
        this.markLeft(record, events);
      } else if (record.state === 'suspect' || record.state === 'dead') {
        events.push({ type: 'alive', nodeId: record.nodeId, previous: record.state });
        record.state = 'alive';
      }
    }

    const accepted = this.records.get(from.nodeId);
    if (accepted !== undefined && accepted.incarnation === from.incarnation) accepted.role = from.role ?? 'edge';
    this.learn(from.known, now);
    this.updateView();
    return events;
  }

  /**
   * Any other authenticated datagram from a member at its current incarnation (data,
   * acknowledgements, NACKs) shows it alive as well as a heartbeat does: under heavy
   * replication traffic a heartbeat can be lost in a full receive buffer while data still
   * arrives, and declaring such a member suspect or dead would move placement for nothing.
   * Brings a suspect member back to alive; a dead or departed one needs a heartbeat.
   */
  heardFrom(nodeId: string, incarnation: bigint, now: number): MembershipEvent[] {
    const record = this.records.get(nodeId);
    if (record === undefined || record.incarnation !== incarnation) return [];
    if (record.state === 'alive') {
      record.lastHeardAt = now;
      return [];
    }
    if (record.state !== 'suspect') return [];
    record.lastHeardAt = now;
    record.state = 'alive'; // suspect counted as live already: the view does not change
    return [{ type: 'alive', nodeId, previous: 'suspect' }];
  }

  /** A Leave datagram from nodeId at incarnation. Unknown nodes are ignored. */
  handleLeave(nodeId: string, incarnation: bigint, now: number): MembershipEvent[] {
    if (nodeId === this.self.nodeId) {
      this.counters.selfHeartbeats++;
      return [];
    }
    const record = this.records.get(nodeId);
    if (record === undefined) {
      this.counters.unknownLeaves++;
      return [];
    }
    if (incarnation < record.incarnation && record.state !== 'dead') {
      this.counters.staleHeartbeats++;
      return [];
    }
    const events: MembershipEvent[] = [];
    if (incarnation !== record.incarnation) this.restart(record, incarnation, record.advertiseAddress, now, events);
    else record.lastHeardAt = now;
    this.markLeft(record, events);
    this.updateView();
    return events;
  }

  /** Applies every timeout due at `now`. */
  tick(now: number): MembershipEvent[] {
    const { suspectAfterMs, deadAfterMs, forgetDeadAfterMs } = this.config;
    const events: MembershipEvent[] = [];
    for (const record of [...this.records.values()]) {
      const silentMs = now - record.lastHeardAt;
      if (record.state === 'alive' && silentMs >= suspectAfterMs) {
        record.state = 'suspect';
        events.push({ type: 'suspect', nodeId: record.nodeId, lastHeardAt: record.lastHeardAt });
      }
      if (record.state === 'suspect' && silentMs >= deadAfterMs) {
        record.state = 'dead';
        events.push({ type: 'dead', nodeId: record.nodeId, lastHeardAt: record.lastHeardAt });
      }
      if ((record.state === 'dead' || record.state === 'left') && silentMs >= forgetDeadAfterMs) {
        if (!this.seeds.has(record.advertiseAddress)) {
          this.forget(record);
        } else if (record.state === 'left') {
          // Keep the seed's last known identity, and probe the address again.
          record.state = 'dead';
        }
      }
    }
    for (const [address, mentionedAt] of this.probes) {
      if (now - mentionedAt >= forgetDeadAfterMs) this.probes.delete(address);
    }
    for (const [nodeId, report] of this.mismatches) {
      if (now - report.lastAt >= forgetDeadAfterMs) this.mismatches.delete(nodeId);
    }
    this.updateView();
    return events;
  }

  heartbeatDue(now: number): boolean {
    return now >= this.nextHeartbeatAt;
  }

  /** The driver sent a heartbeat to every heartbeatTargets() address at `now`. */
  heartbeatSent(now: number): void {
    this.nextHeartbeatAt = now + this.config.heartbeatIntervalMs;
  }

  /**
   * Where to send heartbeats: every seed, every gossip-learned address and every member
   * address, except ours and those of members that left. Sorted, without duplicates.
   */
  heartbeatTargets(): string[] {
    const targets = new Set<string>(this.seeds);
    for (const address of this.probes.keys()) targets.add(address);
    for (const record of this.records.values()) {
      if (record.state !== 'left') targets.add(record.advertiseAddress);
    }
    for (const record of this.records.values()) {
      if (record.state === 'left') targets.delete(record.advertiseAddress);
    }
    targets.delete(this.self.advertiseAddress);
    return [...targets].sort();
  }

  /** Members to list in our heartbeats' `known` field: alive and suspect, not ourselves. */
  knownMembers(): KnownMemberAddress[] {
    const known: KnownMemberAddress[] = [];
    for (const record of this.sortedRecords()) {
      if (record.state === 'alive' || record.state === 'suspect') {
        known.push({ nodeId: record.nodeId, advertiseAddress: record.advertiseAddress });
      }
    }
    return known;
  }

  /**
   * When `tick` (or a heartbeat) next has work: the next heartbeat, state transition,
   * forgetting or expiry. At or before `now` when something is already due.
   */
  nextDeadline(): number {
    const { suspectAfterMs, deadAfterMs, forgetDeadAfterMs } = this.config;
    let deadline = this.nextHeartbeatAt;
    for (const record of this.records.values()) {
      let at: number;
      switch (record.state) {
        case 'alive':
          at = record.lastHeardAt + suspectAfterMs;
          break;
        case 'suspect':
          at = record.lastHeardAt + deadAfterMs;
          break;
        case 'dead':
          at = this.seeds.has(record.advertiseAddress) ? Infinity : record.lastHeardAt + forgetDeadAfterMs;
          break;
        case 'left':
          at = record.lastHeardAt + forgetDeadAfterMs;
          break;
      }
      if (at < deadline) deadline = at;
    }
    for (const mentionedAt of this.probes.values()) deadline = Math.min(deadline, mentionedAt + forgetDeadAfterMs);
    for (const report of this.mismatches.values()) deadline = Math.min(deadline, report.lastAt + forgetDeadAfterMs);
    return deadline;
  }

  /**
   * Every member, ourselves included, and every seed address never heard from (node id
   * '', dead), sorted by node id, then address.
   */
  members(): MemberView[] {
    const views: MemberView[] = [
      {
        nodeId: this.self.nodeId,
        advertiseAddress: this.self.advertiseAddress,
        state: 'alive',
        incarnation: this.self.incarnation,
        lastHeardAt: null,
        isSelf: true,
        role: this.role,
      },
    ];
    const heard = new Set<string>();
    for (const record of this.records.values()) {
      heard.add(record.advertiseAddress);
      views.push({
        nodeId: record.nodeId,
        advertiseAddress: record.advertiseAddress,
        state: record.state,
        incarnation: record.incarnation,
        lastHeardAt: record.lastHeardAt,
        isSelf: false,
        role: record.role,
      });
    }
    for (const address of this.seeds) {
      if (!heard.has(address)) {
        views.push({ nodeId: '', advertiseAddress: address, state: 'dead', incarnation: 0n, lastHeardAt: null, isSelf: false, role: 'edge' });
      }
    }
    return views.sort((a, b) => compare(a.nodeId, b.nodeId) || compare(a.advertiseAddress, b.advertiseAddress));
  }

  /** The member with this node id (ourselves included), if known. Called per datagram: no list built. */
  member(nodeId: string): MemberView | undefined {
    if (nodeId === '') return undefined;
    if (nodeId === this.self.nodeId) {
      const self = this.self;
      return { nodeId, advertiseAddress: self.advertiseAddress, state: 'alive', incarnation: self.incarnation, lastHeardAt: null, isSelf: true, role: this.role };
    }
    const record = this.records.get(nodeId);
    if (record === undefined) return undefined;
    const { advertiseAddress, state, incarnation, lastHeardAt, role } = record;
    return { nodeId, advertiseAddress, state, incarnation, lastHeardAt, isSelf: false, role };
  }

  /** Whether another member is live (alive or suspect), without a view of it. */
  isLive(nodeId: string): boolean {
    const state = this.records.get(nodeId)?.state;
    return state === 'alive' || state === 'suspect';
  }

  /** Ourselves plus every alive and suspect member, sorted: the input to placement. */
  liveNodeIds(): readonly string[] {
    return this.live;
  }

  /**
   * Ourselves plus every member (alive or suspect) heard from within `windowMs` before
   * `now`: what --quorum counts. It reads the times heartbeats and data were last accepted,
   * not the member states, which change only at `tick`.
   */
  heardWithin(windowMs: number, now: number): number {
    let heard = 1;
    for (const record of this.records.values()) {
      if ((record.state === 'alive' || record.state === 'suspect') && now - record.lastHeardAt < windowMs) heard++;
    }
    return heard;
  }

  /**
   * The members (ourselves included) that were live when `nodeId` was last heard from, and
   * which of them are store nodes: those live now, and those that stopped counting as live
   * after it was last heard (dead, departed or forgotten since). The members its sessions
   * were placed on then, as far as this node can tell; undefined for a node it has no
   * record of.
   */
  membersWhenLastHeard(nodeId: string): { nodeIds: string[]; storeIds: string[] } | undefined {
    const record = this.records.get(nodeId);
    const heardAt = nodeId === this.self.nodeId ? Infinity : record !== undefined ? record.lastHeardAt : this.departed.get(nodeId)?.lastHeardAt;
    if (heardAt === undefined) return undefined;
    const nodeIds = [...this.live];
    const storeIds = [...this.liveStores];
    const add = (id: string, liveUntil: number, role: NodeRoleName): void => {
      if (liveUntil <= heardAt && id !== nodeId) return;
      nodeIds.push(id);
      if (role === 'store') storeIds.push(id);
    };
    for (const other of this.records.values()) if (other.state === 'dead' || other.state === 'left') add(other.nodeId, this.liveUntil(other), other.role);
    for (const [id, { liveUntil, role }] of this.departed) if (!this.records.has(id)) add(id, liveUntil, role);
    return { nodeIds, storeIds };
  }

  /** When a dead or departed member stopped counting as live: its leave, or dead-after past its last heartbeat. */
  private liveUntil(record: MemberRecord): number {
    return record.state === 'left' ? record.lastHeardAt : record.lastHeardAt + this.config.deadAfterMs;
  }

  /** The live members (ourselves included) with the store role, sorted: placement ranks them first. */
  liveStoreIds(): readonly string[] {
    return this.liveStores;
  }

  private refuseMismatch(from: HeartbeatInput, now: number): MembershipEvent[] {
    this.counters.configMismatches++;
    const settings = differingSettings(this.settingDigests, from.settingDigests ?? []);
    for (const setting of settings) this.configMismatchesBySetting.set(setting, (this.configMismatchesBySetting.get(setting) ?? 0) + 1);
    const report = this.mismatches.get(from.nodeId);
    if (report !== undefined && report.incarnation === from.incarnation && report.digest === from.configDigest) {
      report.lastAt = now;
      return [];
    }
    if (report !== undefined || this.mismatches.size < MAX_MISMATCH_REPORTS) {
      this.mismatches.set(from.nodeId, { incarnation: from.incarnation, digest: from.configDigest, lastAt: now, advertiseAddress: from.advertiseAddress, settings });
    }
    return [
      {
        type: 'config_mismatch',
        nodeId: from.nodeId,
        advertiseAddress: from.advertiseAddress,
        theirDigest: from.configDigest,
        ourDigest: this.configDigest,
        settings,
      },
    ];
  }

  /** Nodes refused for their configuration and heard from within the forget timeout, by node id. */
  configMismatches(): ConfigMismatchReport[] {
    return [...this.mismatches]
      .map(([nodeId, r]) => ({ nodeId, advertiseAddress: r.advertiseAddress, settings: r.settings, lastAt: r.lastAt }))
      .sort((a, b) => compare(a.nodeId, b.nodeId));
  }

  private restart(record: MemberRecord, incarnation: bigint, address: string, now: number, events: MembershipEvent[]): void {
    this.counters.restarts++;
    events.push({
      type: 'restarted',
      nodeId: record.nodeId,
      oldIncarnation: record.incarnation,
      newIncarnation: incarnation,
      advertiseAddress: address,
    });
    record.incarnation = incarnation;
    record.state = 'alive';
    record.lastHeardAt = now;
    if (record.advertiseAddress !== address) {
      record.advertiseAddress = address;
      this.claimAddress(record.nodeId, address);
    }
  }

  private markLeft(record: MemberRecord, events: MembershipEvent[]): void {
    if (record.state === 'left') return;
    record.state = 'left';
    events.push({ type: 'left', nodeId: record.nodeId, incarnation: record.incarnation });
  }

  /**
   * nodeId now answers at address: stop probing it as a learned address, and drop any
   * dead or left record of another node id that had it (that node was replaced).
   */
  private claimAddress(nodeId: string, address: string): void {
    this.probes.delete(address);
    for (const other of [...this.records.values()]) {
      if (other.nodeId !== nodeId && other.advertiseAddress === address && (other.state === 'dead' || other.state === 'left')) this.forget(other);
    }
  }

  private learn(known: readonly KnownMemberAddress[], now: number): void {
    let memberAddresses: Set<string> | undefined;
    for (const entry of known) {
      const address = entry.advertiseAddress;
      if (entry.nodeId === '' || address === '' || entry.nodeId === this.self.nodeId || address === this.self.advertiseAddress) continue;
      if (this.records.has(entry.nodeId) || this.seeds.has(address)) continue;
      memberAddresses ??= new Set([...this.records.values()].map((record) => record.advertiseAddress));
      if (memberAddresses.has(address)) continue;
      if (this.probes.has(address) || this.probes.size < MAX_PROBE_ADDRESSES) this.probes.set(address, now);
      else this.counters.probeAddressesDropped++;
    }
  }

  private sortedRecords(): MemberRecord[] {
    return [...this.records.values()].sort((a, b) => compare(a.nodeId, b.nodeId));
  }

  /** Drops a dead or departed member from the table, remembering when it was last heard (membersWhenLastHeard). */
  private forget(record: MemberRecord): void {
    this.records.delete(record.nodeId);
    this.counters.forgottenMembers++;
    this.departed.delete(record.nodeId);
    if (this.departed.size >= MAX_DEPARTED) this.departed.delete(this.departed.keys().next().value!);
    this.departed.set(record.nodeId, { lastHeardAt: record.lastHeardAt, liveUntil: this.liveUntil(record), role: record.role });
  }

  private updateView(): void {
    const live = [this.self.nodeId];
    const stores = this.role === 'store' ? [this.self.nodeId] : [];
    for (const record of this.records.values()) {
      if (record.state !== 'alive' && record.state !== 'suspect') continue;
      live.push(record.nodeId);
      if (record.role === 'store') stores.push(record.nodeId);
    }
    live.sort(compare);
    stores.sort(compare);
    if (sameIds(live, this.live) && sameIds(stores, this.liveStores)) return;
    this.live = Object.freeze(live);
    this.liveStores = Object.freeze(stores);
    this.viewVersion++;
  }
}

function sameIds(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((id, i) => id === b[i]);
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
