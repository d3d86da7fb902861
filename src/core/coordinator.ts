/**
 * The cluster coordinator (sans-IO): the whole membership is one election group (the same
 * staggered election partitions use, src/core/election.ts), its master is the coordinator,
 * and the coordinator publishes numbered views (cluster-views.ts) that placement ranks.
 *
 * Inputs carry `now`: `sync` (membership may have changed; node-core calls it on every
 * input), `heartbeat` (a member's reported view), `body` (a coordinator notice or a view
 * page), `tick` (at or after `nextDeadline()`). Outputs go through `deps.send`; `version()`
 * and `members()` are placement's source (replication-engine.ts PlacementSource).
 *
 * Rules:
 * - Election: the group is the live members (alive and suspect), index = priority, then
 *   node id (rank 0 for all: the whole membership has no placement rank). A member is
 *   failed when membership calls it dead or left. The coordinator DECLAREs again every
 *   `reannounceMs` and at once to a member that joined, so split coordinators meet and the
 *   higher index yields (REVOKE otherwise). Priorities of others are learned from their
 *   notices (a notice carries its sender's index).
 * - Views: the coordinator publishes a view when it becomes coordinator and when the live
 *   membership changes, `viewBatchMs` after the first change (changes within the window share
 *   one view). Its id is above every view id it has held or heard reported, so a new
 *   coordinator's first view supersedes whatever its predecessor sent before crashing. A
 *   member reporting (in its heartbeat) a view other than the coordinator's current one is
 *   sent the view again (at most once per `viewResendMs`); one reporting an id at or above
 *   the current one from another coordinator makes the coordinator publish a higher id. A
 *   node publishes nothing in its first `firstViewDelayMs` (two heartbeat intervals): time to
 *   hear the views its members hold, so a restarted coordinator does not reuse an id.
 * - Placement: the coordinator's current view when this node follows that view's publisher,
 *   that coordinator is not failed, and the view lists this node; otherwise (before the
 *   first view, while the coordinator is unreachable or changing) this node's own live
 *   members — the bootstrap.
 *
 * Memory: the live members, one priority and one last-send time per live member, the
 * current view and one assembly (cluster-views.ts), the current view's pages.
 */
import { ElectionGroup, type ElectionContext, type MemberIndex } from './election';
import { CoordinatorNoticeKind, type CoordinatorIndex, type ViewPage } from '../gen/baton/v1/wire';
import { orderMembers, ViewBook, viewPages, type ClusterView, type ViewOffer } from './cluster-views';
import type { Membership } from './membership';
import type { ClusterBody, PlacementSource } from './replication-engine';

/** The coordinator group's id in notices (it is the node's only group of this kind). */
const COORDINATOR_GROUP = 0;

export interface CoordinatorConfig {
  self: string;
  /** --priority: higher wins the election. */
  priority: number;
  /** This node's role in views (edge or store). */
  role: string;
  /** Fixed part of the election timer, in ms. */
  electionBaseMs: number;
  /** Delay assumed between any two members (round trip), in ms: the timer's stagger step. */
  delayMs: number;
  /** Interval between the coordinator's DECLAREs, in ms. */
  reannounceMs: number;
  /** How long the coordinator gathers membership changes into one view, in ms. */
  viewBatchMs: number;
  /** Least time between two sends of the current view to one member, in ms. */
  viewResendMs: number;
  /**
   * How long after start this node publishes no view, in ms: time to hear the members'
   * heartbeats (two intervals), so its first view is numbered above the views they hold.
   */
  firstViewDelayMs: number;
  /**
   * How long a starting node waits for a coordinator's DECLARE before it takes the live
   * member with the smallest index (the election's JOINING wait), in ms. 0 by default: it
   * takes it at once (a lone node coordinates from its start, and issues the TLS ticket
   * keys); split coordinators meet through re-announcements and one yields.
   */
  joinWaitMs: number;
  /** Largest datagram payload, in bytes (views are paged to fit). */
  maxPayloadBytes: number;
}

export interface CoordinatorDeps {
  /** Alive and suspect members per this node's failure detector, self included. */
  liveMembers(): readonly string[];
  /** Changes whenever liveMembers() does. */
  membersVersion(): number;
  /** Membership calls the member dead or left (or does not know it). */
  isFailed(nodeId: string): boolean;
  /** A member's role for views (edge or store). */
  roleOf(nodeId: string): string;
  /** Sends to a member by node id. */
  send(to: string, body: ClusterBody): void;
}

/** How many pages and notices the coordinator refused, by reason (the node's counters read it). */
export type CoordinatorDrop = Exclude<ViewOffer, 'adopted' | 'pending'> | 'bad_notice';

export class Coordinator implements PlacementSource {
  private readonly group: ElectionGroup;
  readonly views = new ViewBook();
  private readonly priorities = new Map<string, number>();
  private membersSeen = -1;
  private live: readonly string[] = [];
  private placed: readonly string[] = [];
  private placedVersion = 0;
  /** What placement's members were last computed from: members version, view id, coordinator. */
  private placedFrom: [number, number, string | undefined] = [NaN, NaN, undefined];
  /** The current view's pages, encoded once per view. */
  private pages: { id: number; pages: ViewPage[] } | undefined;
  private highestSeen = 0;
  private publishAt = Infinity;
  private readonly firstViewAt: number;
  private reannounceAt: number;
  private readonly sentAt = new Map<string, number>();
  readonly drops = new Map<CoordinatorDrop, number>();
  /** Views this node adopted from a coordinator, and views it published. */
  adopted = 0;
  published = 0;

  constructor(
    readonly config: CoordinatorConfig,
    private readonly deps: CoordinatorDeps,
    now: number,
  ) {
    const context: ElectionContext = {
      self: config.self,
      isFailed: (nodeId) => nodeId !== config.self && deps.isFailed(nodeId),
      delayMs: () => config.delayMs,
      electionBaseMs: config.electionBaseMs,
      joinWaitMs: config.joinWaitMs,
    };
    this.group = new ElectionGroup(COORDINATOR_GROUP, context);
    this.reannounceAt = now + config.reannounceMs;
    this.firstViewAt = now + config.firstViewDelayMs;
    this.sync(now);
  }

  /** The coordinator this node follows (itself when it coordinates); undefined while none is known. */
  get coordinatorId(): string | undefined {
    return this.group.master;
  }

  get isCoordinator(): boolean {
    return this.group.state === 'master';
  }

  /** The view this node holds (0 = none yet). */
  get viewId(): number {
    return this.views.currentId;
  }

  /** Whether placement follows the coordinator's view now (false: the bootstrap). */
  get placingFromView(): boolean {
    const view = this.views.current;
    if (view === undefined || view.coordinator !== this.group.master) return false;
    if (view.coordinator !== this.config.self && this.deps.isFailed(view.coordinator)) return false;
    return view.members.some((m) => m.nodeId === this.config.self);
  }

  // --- PlacementSource ------------------------------------------------------------------

  version(): number {
    return this.placedVersion;
  }

  members(): readonly string[] {
    return this.placed;
  }

  // --- inputs ---------------------------------------------------------------------------

  /** Membership may have changed: the group's members, a batched view, placement's source. */
  sync(now: number): void {
    const version = this.deps.membersVersion();
    if (version !== this.membersSeen) {
      this.membersSeen = version;
      const before = new Set(this.live);
      this.live = [...new Set([this.config.self, ...this.deps.liveMembers()])];
      const live = new Set(this.live);
      for (const nodeId of this.priorities.keys()) if (!live.has(nodeId)) this.priorities.delete(nodeId);
      this.run(() => this.group.setMembers(this.live.map((id) => this.indexOf(id)), now), now);
      for (const id of this.live) if (!before.has(id) && id !== this.config.self) this.run(() => this.group.peerRecovered(id, now), now);
      if (this.isCoordinator && this.publishAt === Infinity) this.publishAt = now + this.config.viewBatchMs;
    }
    this.replace();
  }

  /** A member's heartbeat reported the view it holds. */
  heartbeat(from: string, viewId: number, viewCoordinator: string, now: number): void {
    if (viewId > this.highestSeen) this.highestSeen = viewId;
    if (!this.isCoordinator) return;
    const current = this.views.current;
    if (current === undefined || current.coordinator !== this.config.self) return;
    if (viewId === current.id && viewCoordinator === this.config.self) return;
    if (viewId >= current.id) {
      // The member holds a view at least as new from another coordinator: outnumber it.
      if (this.publishAt === Infinity) this.publishAt = now;
      return;
    }
    if ((this.sentAt.get(from) ?? -Infinity) + this.config.viewResendMs <= now) this.sendView(current, [from], now);
  }

  /** A coordinator notice or a view page from `from`. */
  body(from: string, body: ClusterBody, now: number): void {
    if (body.$case !== 'coordinatorNotice' && body.$case !== 'viewPage') return; // the partition elections'
    this.sync(now);
    if (body.$case === 'viewPage') {
      const outcome = this.views.offer(body.viewPage, from, this.group.master);
      if (outcome === 'adopted') {
        this.adopted++;
        if (this.views.currentId > this.highestSeen) this.highestSeen = this.views.currentId;
        this.replace();
      } else if (outcome !== 'pending') {
        this.drops.set(outcome, (this.drops.get(outcome) ?? 0) + 1);
      }
      return;
    }
    const notice = body.coordinatorNotice;
    const sender = readIndex(notice.sender);
    if (sender === undefined || sender.nodeId !== from) {
      this.drop('bad_notice');
      return;
    }
    const known = this.priorities.get(from) ?? 0;
    if (sender.priority !== 0) this.priorities.set(from, sender.priority);
    else this.priorities.delete(from);
    if (known !== sender.priority) {
      // The group's indexes must agree with what the members say of themselves.
      this.membersSeen = -1;
      this.sync(now);
    }
    if (notice.kind === CoordinatorNoticeKind.COORDINATOR_NOTICE_KIND_DECLARE) {
      this.run(() => this.group.handleDeclare(sender, now), now);
    } else if (notice.kind === CoordinatorNoticeKind.COORDINATOR_NOTICE_KIND_REVOKE) {
      const revoked = readIndex(notice.revoked);
      if (revoked === undefined) {
        this.drop('bad_notice');
        return;
      }
      this.run(() => this.group.handleRevoke(sender, revoked, now), now);
    } else {
      this.drop('bad_notice');
    }
    this.replace();
  }

  tick(now: number): void {
    this.sync(now);
    if (this.group.deadline <= now) this.run(() => this.group.tick(now), now);
    if (this.reannounceAt <= now) {
      this.reannounceAt = now + this.config.reannounceMs;
      this.run(() => this.group.reannounce(now), now);
    }
    if (this.publishAt <= now) {
      this.publishAt = Infinity;
      if (this.isCoordinator && now >= this.firstViewAt) this.publish(now);
      else if (this.isCoordinator) this.publishAt = this.firstViewAt;
    }
    this.replace();
  }

  nextDeadline(): number {
    return Math.min(this.group.deadline, this.reannounceAt, this.publishAt);
  }

  /** Heartbeat fields: the view this node holds. */
  heartbeatExtras(): { viewId: bigint; viewCoordinator: string } {
    const view = this.views.current;
    return { viewId: BigInt(view?.id ?? 0), viewCoordinator: view?.coordinator ?? '' };
  }

  // --- internals ------------------------------------------------------------------------

  private indexOf(nodeId: string): MemberIndex {
    const priority = nodeId === this.config.self ? this.config.priority : (this.priorities.get(nodeId) ?? 0);
    return { nodeId, priority, rank: 0 };
  }

  /** Runs an election input, sends its notices, and starts publishing when it made this node coordinator. */
  private run(input: () => void, now: number): void {
    const was = this.isCoordinator;
    input();
    for (const { to, notice } of this.group.take()) {
      const body: ClusterBody =
        notice.kind === 'declare'
          ? { $case: 'coordinatorNotice', coordinatorNotice: { kind: CoordinatorNoticeKind.COORDINATOR_NOTICE_KIND_DECLARE, sender: wireIndex(notice.declarer), revoked: undefined } }
          : { $case: 'coordinatorNotice', coordinatorNotice: { kind: CoordinatorNoticeKind.COORDINATOR_NOTICE_KIND_REVOKE, sender: wireIndex(notice.revoker), revoked: wireIndex(notice.revoked) } };
      for (const nodeId of to) this.deps.send(nodeId, body);
    }
    if (!was && this.isCoordinator) this.publishAt = Math.min(this.publishAt, now + this.config.viewBatchMs);
    if (was && !this.isCoordinator) this.publishAt = Infinity;
  }

  private publish(now: number): void {
    const id = Math.max(this.highestSeen, this.views.currentId) + 1;
    const members = orderMembers(this.live.map((nodeId) => ({ nodeId, priority: this.indexOf(nodeId).priority, role: nodeId === this.config.self ? this.config.role : this.deps.roleOf(nodeId) })));
    const view: ClusterView = { id, coordinator: this.config.self, members };
    if (!this.views.publish(view)) return;
    this.highestSeen = id;
    this.published++;
    this.sendView(
      view,
      this.live.filter((nodeId) => nodeId !== this.config.self),
      now,
    );
  }

  private sendView(view: ClusterView, to: readonly string[], now: number): void {
    if (this.pages?.id !== view.id) this.pages = { id: view.id, pages: viewPages(view, this.config.maxPayloadBytes) };
    const pages = this.pages.pages;
    for (const nodeId of to) {
      this.sentAt.set(nodeId, now);
      for (const viewPage of pages) this.deps.send(nodeId, { $case: 'viewPage', viewPage });
    }
    const live = new Set(this.live);
    for (const nodeId of this.sentAt.keys()) if (!live.has(nodeId)) this.sentAt.delete(nodeId);
  }

  /** Recomputes placement's members; the version moves only when they changed. */
  private replace(): void {
    // Runs on every input of the node: only a change of what it depends on costs a pass.
    const from = this.placedFrom;
    if (from[0] === this.membersSeen && from[1] === this.views.currentId && from[2] === this.group.master) return;
    this.placedFrom = [this.membersSeen, this.views.currentId, this.group.master];
    const view = this.views.current;
    const next = this.placingFromView && view !== undefined ? view.members.map((m) => m.nodeId) : this.live;
    const sorted = [...next].sort();
    if (sorted.length === this.placed.length && sorted.every((id, i) => id === this.placed[i])) return;
    this.placed = sorted;
    this.placedVersion++;
  }

  private drop(reason: CoordinatorDrop): void {
    this.drops.set(reason, (this.drops.get(reason) ?? 0) + 1);
  }
}

function wireIndex(index: MemberIndex): CoordinatorIndex {
  return { nodeId: index.nodeId, priority: index.priority };
}

function readIndex(index: CoordinatorIndex | undefined): MemberIndex | undefined {
  if (index === undefined || index.nodeId === '' || !Number.isInteger(index.priority)) return undefined;
  return { nodeId: index.nodeId, priority: index.priority, rank: 0 };
}

export const DEFAULT_COORDINATOR_TIMINGS = {
  electionBaseMs: 20,
  delayMs: 5,
  reannounceMs: 1000,
  viewBatchMs: 50,
  viewResendMs: 100,
};
/** Timings a node may override (firstViewDelayMs defaults to two heartbeat intervals, reannounceMs to four, joinWaitMs to 0). */
export type CoordinatorTimings = typeof DEFAULT_COORDINATOR_TIMINGS & { firstViewDelayMs: number; joinWaitMs: number };

/**
 * A coordinator whose members, failure verdicts and peer addresses come from `membership`
 * (what node-core builds); `send` takes a peer's address.
 */
export function membershipCoordinator(
  membership: Pick<Membership, 'liveNodeIds' | 'member'> & { readonly viewVersion: number },
  settings: { self: string; priority: number; role?: string; maxPayloadBytes: number; heartbeatIntervalMs: number; timings?: Partial<CoordinatorTimings> },
  send: (to: string, body: ClusterBody) => void,
  now: number,
): Coordinator {
  // Both scale with the heartbeat: re-announcing is as periodic as failure detection.
  const reannounceMs = settings.timings?.reannounceMs ?? 4 * settings.heartbeatIntervalMs;
  const derived = { firstViewDelayMs: 2 * settings.heartbeatIntervalMs, reannounceMs, joinWaitMs: 0 };
  const config: CoordinatorConfig = { ...DEFAULT_COORDINATOR_TIMINGS, ...derived, ...settings.timings, self: settings.self, priority: settings.priority, role: settings.role ?? 'edge', maxPayloadBytes: settings.maxPayloadBytes };
  const deps: CoordinatorDeps = {
    liveMembers: () => membership.liveNodeIds(),
    membersVersion: () => membership.viewVersion,
    isFailed: (nodeId) => {
      const state = membership.member(nodeId)?.state;
      return state === undefined || state === 'dead' || state === 'left';
    },
    roleOf: (nodeId) => membership.member(nodeId)?.role ?? 'edge',
    send: (nodeId, body) => {
      const address = membership.member(nodeId)?.advertiseAddress;
      if (address !== undefined && address !== '') send(address, body);
    },
  };
  return new Coordinator(config, deps, now);
}
