/**
 * One election group (sans-IO): a set of members that elects one master with staggered
 * timers, DECLARE and REVOKE. Generic: a partition's replica set uses it (node-core via
 * election-groups.ts), and so can "the whole membership elects a coordinator".
 *
 * API summary (for drivers of a group; election-groups.ts is the driver for many groups):
 * - `new ElectionGroup(id, context)`; `context` is shared by every group of a node: the
 *   node's id, `isFailed(nodeId)` (the failure probe's verdict), `delayMs(from, to)` (the
 *   measured one-way delay estimate) and `electionBaseMs`.
 * - Inputs, each with `now` (ms): `setMembers(members, now)` (the group's members and
 *   their indexes, self included), `masterFailed(nodeId, now)`, `peerRecovered(nodeId, now)`,
 *   `handleDeclare(declarer, now)`, `handleRevoke(revoker, revoked, now)`, `reannounce(now)`
 *   and `tick(now)` (at or after `deadline`).
 * - Outputs: `take()` returns the notices to send (to node ids), `deadline` the election
 *   timer (Infinity = none), `state` and `master` the result.
 *
 * Index: a member's index orders it: higher `priority` first (the operator's statement of
 * capacity: higher wins), then lower placement `rank`, then lower node id (UTF-16 `<`).
 * "Smaller index" means earlier in that order; the smallest index wins every comparison.
 *
 * Protocol:
 * - A new group (no master yet) takes the live member with the smallest index as master:
 *   every member computes the same one, so no message is needed.
 * - BACKUP: following `master`. When the master fails (the probe's inquiries went
 *   unanswered, or it left the group), a backup enters WAITING and arms its election timer
 *   at `now + electionBaseMs + Σ_{j<i} max_{k>j} delay(B_j, B_k)`, where B is the live
 *   backups sorted by index and i is this node's position: every backup with a smaller
 *   index gets the time its DECLARE needs to reach every backup after it.
 * - The timer fires with no DECLARE or REVOKE heard: MASTER, DECLARE to the group.
 * - DECLARE received in BACKUP or WAITING: accepted (master = declarer, timer stopped).
 *   In MASTER: if the declarer's index wins, accepted; else REVOKE (both indexes) to the
 *   group and this node stays master.
 * - REVOKE received: a MASTER whose own index wins sends its own REVOKE; any other member
 *   switches to the revoker unless it follows a live master whose index beats the revoker's
 *   (that master will revoke it in turn).
 * - Masters DECLARE again on `reannounce` (the driver calls it periodically and when a
 *   member recovers), so masters on both sides of a healed partition meet and one yields.
 *
 * Invariants: `deadline` is finite only in WAITING; `master` is never a failed member
 * after an input returns (unless every member failed: then undefined); memory is the
 * member list and the queued notices, both bounded by the group's size per input.
 */

/** A member's place in the election order (see the header: smaller index wins). */
export interface MemberIndex {
  nodeId: string;
  /** Operator-stated capacity; higher wins. */
  priority: number;
  /** Placement rank within the group (0 = first). */
  rank: number;
}

export type ElectionState = 'backup' | 'waiting' | 'master';

export type ElectionNotice =
  | { kind: 'declare'; group: number; declarer: MemberIndex }
  | { kind: 'revoke'; group: number; revoker: MemberIndex; revoked: MemberIndex };

/** A notice to send to each node id in `to`. */
export interface ElectionSend {
  to: readonly string[];
  notice: ElectionNotice;
}

/** What every group of one node shares. */
export interface ElectionContext {
  readonly self: string;
  /** The failure probe's verdict: inquiries to the member went unanswered. */
  isFailed(nodeId: string): boolean;
  /** Estimated communication delay from `from` to `to` (a round trip: see peer-delays.ts), in ms. */
  delayMs(from: string, to: string): number;
  /** Fixed part of every election timer, in ms: processing and jitter margin. */
  readonly electionBaseMs: number;
}

/** Negative when `a` has the smaller index (wins), positive when `b` does, 0 for the same member. */
export function compareIndex(a: MemberIndex, b: MemberIndex): number {
  if (a.priority !== b.priority) return b.priority - a.priority;
  if (a.rank !== b.rank) return a.rank - b.rank;
  return a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0;
}

/**
 * The staggered election timer of `self` among `backups` (sorted by index): base plus, over
 * every backup before it, the largest delay from that backup to any backup after it.
 */
export function electionDelayMs(backups: readonly string[], self: string, baseMs: number, delayMs: (from: string, to: string) => number): number {
  const i = backups.indexOf(self);
  let total = baseMs;
  for (let j = 0; j < i; j++) {
    let worst = 0;
    for (let k = j + 1; k < backups.length; k++) worst = Math.max(worst, delayMs(backups[j]!, backups[k]!));
    total += worst;
  }
  return total;
}

export class ElectionGroup {
  private members: MemberIndex[] = [];
  private current: string | undefined;
  private mode: ElectionState = 'backup';
  private timer = Infinity;
  private outbox: ElectionSend[] = [];

  constructor(
    readonly id: number,
    private readonly context: ElectionContext,
  ) {}

  get state(): ElectionState {
    return this.mode;
  }

  /** The member this node takes as master (itself in MASTER); undefined while none is known. */
  get master(): string | undefined {
    return this.current;
  }

  /** The election timer: finite only in WAITING. */
  get deadline(): number {
    return this.timer;
  }

  memberIds(): string[] {
    return this.members.map((m) => m.nodeId);
  }

  /**
   * The group's members (self included) with their current indexes. A master that is no
   * longer a member counts as failed; a group without a master takes the best live member.
   */
  setMembers(members: readonly MemberIndex[], now: number): void {
    this.members = [...members].sort(compareIndex);
    const master = this.current;
    if (master === undefined) {
      const best = this.liveMembers()[0];
      if (best !== undefined) this.follow(best.nodeId);
      return;
    }
    if (!this.isMember(master) || (this.mode === 'backup' && this.context.isFailed(master))) {
      this.startElection(now);
      return;
    }
    if (this.mode === 'waiting') this.timer = now + this.electionTimeoutMs();
  }

  /** The probe declared `nodeId` failed: if it is the master, the election starts. */
  masterFailed(nodeId: string, now: number): void {
    if (nodeId !== this.current || this.mode === 'master') {
      if (this.mode === 'waiting') this.timer = now + this.electionTimeoutMs();
      return;
    }
    this.startElection(now);
  }

  /** `nodeId` answers again: a master announces itself to it; a group waiting on it follows it again. */
  peerRecovered(nodeId: string, now: number): void {
    if (!this.isMember(nodeId)) return;
    if (this.mode === 'master') {
      this.send([nodeId], { kind: 'declare', group: this.id, declarer: this.selfIndex() });
      return;
    }
    if (this.mode === 'waiting' && nodeId === this.current) {
      this.follow(nodeId);
      return;
    }
    if (this.mode === 'waiting') this.timer = now + this.electionTimeoutMs();
  }

  /** The election timer fired. */
  tick(now: number): void {
    if (this.mode !== 'waiting' || this.timer > now) return;
    this.becomeMaster();
  }

  handleDeclare(declarer: MemberIndex, _now: number): void {
    if (!this.isMember(declarer.nodeId) || declarer.nodeId === this.context.self) return;
    if (this.mode !== 'master') {
      this.follow(declarer.nodeId);
      return;
    }
    const own = this.selfIndex();
    if (compareIndex(declarer, own) < 0) {
      this.follow(declarer.nodeId);
      return;
    }
    this.send(this.others(), { kind: 'revoke', group: this.id, revoker: own, revoked: declarer });
  }

  handleRevoke(revoker: MemberIndex, revoked: MemberIndex, _now: number): void {
    if (!this.isMember(revoker.nodeId) || revoker.nodeId === this.context.self) return;
    if (this.mode === 'master') {
      const own = this.selfIndex();
      if (compareIndex(own, revoker) < 0) {
        this.send(this.others(), { kind: 'revoke', group: this.id, revoker: own, revoked: revoker });
        return;
      }
      this.follow(revoker.nodeId);
      return;
    }
    const master = this.current;
    const masterLive = master !== undefined && master !== revoked.nodeId && this.isMember(master) && !this.context.isFailed(master);
    if (this.mode === 'backup' && masterLive && compareIndex(this.indexOf(master) ?? revoker, revoker) < 0) return;
    this.follow(revoker.nodeId);
  }

  /** A master DECLAREs again to every other member (periodic, and after a partition heals). */
  reannounce(_now: number): void {
    if (this.mode === 'master') this.send(this.others(), { kind: 'declare', group: this.id, declarer: this.selfIndex() });
  }

  /** Notices queued since the last take. */
  take(): ElectionSend[] {
    const out = this.outbox;
    this.outbox = [];
    return out;
  }

  /** This node's index in the group (priority and rank as the members list gives them). */
  selfIndex(): MemberIndex {
    return this.indexOf(this.context.self) ?? { nodeId: this.context.self, priority: 0, rank: Number.MAX_SAFE_INTEGER };
  }

  private startElection(now: number): void {
    if (!this.isMember(this.context.self)) {
      this.current = undefined;
      this.mode = 'backup';
      this.timer = Infinity;
      return;
    }
    this.mode = 'waiting';
    this.timer = now + this.electionTimeoutMs();
  }

  private becomeMaster(): void {
    this.current = this.context.self;
    this.mode = 'master';
    this.timer = Infinity;
    this.send(this.others(), { kind: 'declare', group: this.id, declarer: this.selfIndex() });
  }

  private follow(nodeId: string): void {
    this.current = nodeId;
    this.timer = Infinity;
    if (nodeId === this.context.self) {
      this.mode = 'master';
      return;
    }
    this.mode = 'backup';
  }

  private electionTimeoutMs(): number {
    // In WAITING the master is failed or gone, so the live members are the backups.
    const backups = this.liveMembers().map((m) => m.nodeId);
    return electionDelayMs(backups, this.context.self, this.context.electionBaseMs, (a, b) => this.context.delayMs(a, b));
  }

  /** Members not declared failed, by index (self always counts as live). */
  private liveMembers(): MemberIndex[] {
    return this.members.filter((m) => m.nodeId === this.context.self || !this.context.isFailed(m.nodeId));
  }

  private others(): string[] {
    return this.members.filter((m) => m.nodeId !== this.context.self).map((m) => m.nodeId);
  }

  private isMember(nodeId: string): boolean {
    return this.members.some((m) => m.nodeId === nodeId);
  }

  private indexOf(nodeId: string): MemberIndex | undefined {
    return this.members.find((m) => m.nodeId === nodeId);
  }

  private send(to: string[], notice: ElectionNotice): void {
    if (to.length > 0) this.outbox.push({ to, notice });
  }
}
