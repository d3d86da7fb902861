/**
 * Many election groups of one node (sans-IO), sharing one failure probe, one table of
 * delay estimates and one timer table: node-core keeps one group per partition (its
 * replica set), and another driver may add groups of its own (a coordinator group over the
 * whole membership) under ids it chooses outside [0, partitions).
 *
 * Inputs carry `now`: `setGroup`/`dropGroup`, `heard` (any authenticated datagram from a
 * member), `handleNotice`, `roundTrip` (a measured round trip), `tick`. Outputs: `take()`
 * gives the notices to send batched per destination node and the inquiries to send;
 * `takeMastered()` the groups this node became master of (with the master it replaced);
 * `takeFailures()` the peers the probe declared failed (drain both after every input);
 * `counts` (elections won, notices made); `nextDeadline()` the one time `tick` has work.
 *
 * Rules:
 * - Every master re-announces its groups every `reannounceMs` (batched), so lost notices and
 *   healed partitions converge; a recovered member is announced to at once.
 * - The probe watches exactly the masters this node follows.
 * - Notices for a group this node does not have, or from a non-member, are ignored and
 *   counted by the caller (`handleNotice` returns false).
 */
import { ElectionGroup, type ElectionContext, type ElectionNotice, type ElectionState, type MemberIndex } from './election';
import { FailureProbe, type FailureProbeConfig } from './failure-probe';
import { PeerDelays } from './peer-delays';
import { TimerTable } from './timer-table';

export interface ElectionGroupsConfig {
  self: string;
  probe: FailureProbeConfig;
  /** Fixed part of every election timer, in ms. */
  electionBaseMs: number;
  /** Delay (round trip) assumed for a pair never measured, in ms. */
  defaultDelayMs: number;
  /** Interval between a master's DECLAREs of the groups it masters, in ms. */
  reannounceMs: number;
}

export const DEFAULT_ELECTION_BASE_MS = 20;
export const DEFAULT_DELAY_MS = 5;
export const DEFAULT_REANNOUNCE_MS = 1000;

/** A master change this node made: it became master of `group`, replacing `previous`. */
export interface Mastered {
  group: number;
  previous: string | undefined;
}

export interface ElectionOutbox {
  /** Notices per destination node id, in the order they were made. */
  readonly notices: ReadonlyMap<string, readonly ElectionNotice[]>;
  /** Node ids to send an inquiry to. */
  readonly inquiries: readonly string[];
}

/** What the take methods answer when there is nothing (after most inputs): nothing allocated. */
const NONE: readonly never[] = Object.freeze([]);

const NOTHING_TO_SEND: ElectionOutbox = Object.freeze({ notices: new Map<string, readonly ElectionNotice[]>(), inquiries: NONE });

const REANNOUNCE = -1;

export class ElectionGroups {
  readonly probe: FailureProbe;
  readonly delays: PeerDelays;
  private readonly context: ElectionContext;
  private readonly groups = new Map<number, ElectionGroup>();
  private readonly timers = new TimerTable<number>();
  private notices = new Map<string, ElectionNotice[]>();
  private inquiries: string[] = [];
  private mastered: Mastered[] = [];
  private failures: string[] = [];
  private watchDirty = true;
  /**
   * What this node's groups did: `elected` = became master when the election timer fired;
   * `declares` and `revokes` = notices made (once per group, whatever the number of members).
   */
  readonly counts = { elected: 0, declares: 0, revokes: 0 };

  constructor(
    readonly config: ElectionGroupsConfig,
    now: number,
  ) {
    this.probe = new FailureProbe(config.probe);
    this.delays = new PeerDelays(config.self, config.defaultDelayMs);
    const { probe, delays } = this;
    this.context = {
      self: config.self,
      isFailed: (nodeId) => probe.isFailed(nodeId),
      delayMs: (from, to) => delays.delayMs(from, to),
      electionBaseMs: config.electionBaseMs,
      // Past one re-announcement (with margin for its trip): a group with a master has heard it.
      joinWaitMs: Math.ceil(config.reannounceMs * 1.5),
    };
    this.timers.set(REANNOUNCE, now + config.reannounceMs);
  }

  /** Creates or updates group `id` with its members (self included). */
  setGroup(id: number, members: readonly MemberIndex[], now: number): void {
    let group = this.groups.get(id);
    if (group === undefined) {
      group = new ElectionGroup(id, this.context);
      this.groups.set(id, group);
    }
    const g = group;
    this.touch(g, () => g.setMembers(members, now));
  }

  dropGroup(id: number): void {
    if (!this.groups.delete(id)) return;
    this.timers.clear(id);
    this.watchDirty = true;
  }

  group(id: number): ElectionGroup | undefined {
    return this.groups.get(id);
  }

  masterOf(id: number): string | undefined {
    return this.groups.get(id)?.master;
  }

  stateOf(id: number): ElectionState | undefined {
    return this.groups.get(id)?.state;
  }

  /** Ids of the groups this node masters, ascending. */
  masteredGroups(): number[] {
    const ids: number[] = [];
    for (const [id, group] of this.groups) if (group.state === 'master') ids.push(id);
    return ids.sort((a, b) => a - b);
  }

  groupIds(): IterableIterator<number> {
    return this.groups.keys();
  }

  /** Something authenticated came from `nodeId`. */
  heard(nodeId: string, now: number): void {
    if (!this.probe.heard(nodeId, now)) return;
    for (const group of this.groups.values()) this.touch(group, () => group.peerRecovered(nodeId, now));
  }

  /** A measured round trip to `peer` (an inquiry's reply, a heartbeat's echo), in ms. */
  roundTrip(peer: string, rttMs: number): void {
    this.delays.roundTrip(peer, rttMs);
  }

  /** A notice from `from`; false when it was not for a group of this node or not from its sender. */
  handleNotice(from: string, notice: ElectionNotice, now: number): boolean {
    const group = this.groups.get(notice.group);
    if (group === undefined) return false;
    const sender = notice.kind === 'declare' ? notice.declarer : notice.revoker;
    if (sender.nodeId !== from || !group.memberIds().includes(from)) return false;
    if (notice.kind === 'declare') this.touch(group, () => group.handleDeclare(notice.declarer, now));
    else this.touch(group, () => group.handleRevoke(notice.revoker, notice.revoked, now));
    return true;
  }

  /** A member left the membership: its probe record and delay estimates go. */
  forget(nodeId: string): void {
    this.probe.forget(nodeId);
    this.delays.forget(nodeId);
  }

  tick(now: number): void {
    this.refreshWatch(now);
    const probed = this.probe.tick(now);
    this.inquiries.push(...probed.inquiries);
    for (const failed of probed.failed) {
      this.failures.push(failed);
      for (const group of this.groups.values()) this.touch(group, () => group.masterFailed(failed, now));
    }
    for (const id of this.timers.due(now)) {
      if (id === REANNOUNCE) {
        for (const group of this.groups.values()) if (group.state === 'master') this.touch(group, () => group.reannounce(now));
        this.timers.set(REANNOUNCE, now + this.config.reannounceMs);
        continue;
      }
      const group = this.groups.get(id);
      if (group === undefined) this.timers.clear(id);
      else this.touch(group, () => group.tick(now));
    }
    this.refreshWatch(now);
  }

  /** When `tick` has work; 0 (at once) after the masters to watch changed. */
  nextDeadline(): number {
    if (this.watchDirty) return 0;
    return Math.min(this.timers.next(), this.probe.nextDeadline());
  }

  take(): ElectionOutbox {
    if (this.notices.size === 0 && this.inquiries.length === 0) return NOTHING_TO_SEND;
    const out = { notices: this.notices, inquiries: [...new Set(this.inquiries)] };
    this.notices = new Map();
    this.inquiries = [];
    return out;
  }

  /** Peers the probe declared failed since the last call. */
  takeFailures(): readonly string[] {
    return this.failures.length === 0 ? NONE : this.failures.splice(0);
  }

  takeMastered(): readonly Mastered[] {
    if (this.mastered.length === 0) return NONE;
    const out = this.mastered;
    this.mastered = [];
    return out;
  }

  /** Runs an input on one group and gathers what it changed: notices, its timer, mastership. */
  private touch(group: ElectionGroup, input: () => void): void {
    const stateBefore: ElectionState = group.state;
    const before = group.master;
    input();
    if (stateBefore !== 'master' && (group.state as ElectionState) === 'master') {
      this.mastered.push({ group: group.id, previous: before });
      if (stateBefore === 'waiting') this.counts.elected++;
    }
    if (before !== group.master) this.watchDirty = true;
    this.timers.set(group.id, group.deadline);
    for (const { to, notice } of group.take()) {
      if (notice.kind === 'declare') this.counts.declares++;
      else this.counts.revokes++;
      for (const nodeId of to) {
        let list = this.notices.get(nodeId);
        if (list === undefined) this.notices.set(nodeId, (list = []));
        list.push(notice);
      }
    }
  }

  private refreshWatch(now: number): void {
    if (!this.watchDirty) return;
    this.watchDirty = false;
    const masters = new Set<string>();
    for (const group of this.groups.values()) {
      const master = group.master;
      if (master !== undefined && master !== this.config.self) masters.add(master);
    }
    this.probe.watch(masters, now);
  }
}
