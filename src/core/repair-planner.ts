/**
 * What a node must do to keep every partition it holds whole once repair by NACK is not
 * enough: which partitions to pull from which peers (view changes, restarts,
 * anti-entropy), which failed transfers to try again and when, which of its own
 * partitions to send again because they were written while under-replicated, and when
 * copies it no longer holds may be dropped.
 *
 * Rules:
 * - Pure: it is given the view (`RepairView`) and `now`, and returns requests and
 *   decisions; the engine sends, counts and discards.
 * - A partition is pulled from a peer once per appearance of that peer, and from every
 *   peer again when the node gains the partition or becomes a secondary of another owner
 *   in it. `forgetPulls` makes the next pull ask everyone (anti-entropy, a restart).
 * - Placement and join transfers count as pending until settled (done, or failed with
 *   the peer gone): the node reports them as under-replicated and as `pulling`.
 * - Takeover transfers (a new master pulling a partition from its other holders before it
 *   claims the partition's orphaned sessions) count as pending per partition until
 *   settled, apart from the others: they hold up that partition's claims, not readiness.
 * - A discard comes DISCARD_AFTER_MS after the view last changed, and waits while a live
 *   peer is still pulling, but not longer than DISCARD_MAX_WAIT_MS after it came due.
 */

/** A state transfer the driver should run: pull these partitions from that peer. */
export interface ResyncRequest {
  peerNodeId: string;
  peerAddress: string;
  partitions: number[];
  /** Channels repaired by this transfer, with the sequence number it covers. */
  channels: { key: string; upTo: number }[];
  reason: 'gap' | 'join' | 'placement' | 'anti_entropy' | 'takeover';
}

/** What the planner needs to know of placement and membership. */
export interface RepairView {
  /** Partitions this node holds now (as owner or secondary). */
  heldPartitions(): readonly number[];
  /** Whether this node is a secondary of `owner` ('' = owners that are not live) in `partition`. */
  isSecondaryOf(partition: number, owner: string): boolean;
  /** A live peer's address, or undefined when not known yet. */
  addressOf(nodeId: string): string | undefined;
  /** The members holding `partition` (its replica set), in placement order. */
  holdersOf(partition: number): readonly string[];
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

/** Adds `partition` to what is pulled from `peer`. */
function addPull(pulls: Map<string, number[]>, peer: string, partition: number): void {
  const list = pulls.get(peer);
  if (list === undefined) pulls.set(peer, [partition]);
  else list.push(partition);
}

/** One transfer per peer, of the partitions gathered for it (every peer has an address). */
function pullRequests(pulls: Map<string, number[]>, view: RepairView, reason: ResyncRequest['reason']): ResyncRequest[] {
  return [...pulls].map(([peer, partitions]) => ({ peerNodeId: peer, peerAddress: view.addressOf(peer)!, partitions, channels: [], reason }));
}

export class RepairPlanner {
  /**
   * Per partition this node holds: the owners it is a secondary for ('' = owners that
   * are not live members) and the live peers it has pulled the partition from since.
   */
  private pulledFrom = new Map<number, { serves: Set<string>; peers: Set<string> }>();
  /** Partitions with local writes made while they had fewer secondaries than wanted. */
  private readonly unreplicated = new Set<number>();
  /** Partitions with a placement transfer requested and not finished, with their count. */
  private readonly pendingPulls = new Map<number, number>();
  /** Partitions with a takeover transfer requested and not finished, with their count. */
  private readonly pendingTakeovers = new Map<number, number>();
  /** Failed transfers to try again, and when. */
  private retries: { request: ResyncRequest; at: number }[] = [];
  private discardDueAt = Infinity;
  /** When the pending discard first came due (its wait for pulling peers is bounded). */
  private discardFirstDueAt = Infinity;
  /** Live peers whose latest heartbeat said they are still pulling partitions. */
  private readonly peersPulling = new Set<string>();

  // --- pulls ---------------------------------------------------------------------

  /**
   * The transfers that bring every held partition from every live peer (`others`) it
   * has not been pulled from since the peer (re)appeared, or from all of them when the
   * partition was gained or this node became a secondary of another owner in it (a
   * member's death can make a node that already held a partition the new secondary of
   * some of its owners). Any member may own sessions of any partition, so every peer is
   * asked. A peer without a known address is skipped now and asked once it has one.
   */
  pullHeld(view: RepairView, others: readonly string[], reason: 'placement' | 'anti_entropy'): ResyncRequest[] {
    const pulls = new Map<string, number[]>();
    const previous = this.pulledFrom;
    this.pulledFrom = new Map();
    for (const partition of view.heldPartitions()) {
      const serves = new Set<string>();
      for (const owner of ['', ...others]) if (view.isSecondaryOf(partition, owner)) serves.add(owner);
      const before = previous.get(partition);
      const gained = before === undefined || [...serves].some((owner) => !before.serves.has(owner));
      const pulled = new Set<string>();
      for (const peer of others) {
        if (gained || !before.peers.has(peer)) {
          if (view.addressOf(peer) === undefined) continue;
          addPull(pulls, peer, partition);
        }
        pulled.add(peer);
      }
      this.pulledFrom.set(partition, { serves, peers: pulled });
    }
    return pullRequests(pulls, view, reason);
  }

  /**
   * The transfers a new master makes before it claims the orphaned sessions of
   * `partitions`: each partition from every other live holder of it. A write acknowledged
   * by some secondaries may not have reached this node when its owner died; claimed from
   * this node's copy alone, the claim's epoch would beat that write everywhere.
   */
  takeoverPulls(view: RepairView, partitions: readonly number[], others: readonly string[]): ResyncRequest[] {
    const live = new Set(others);
    const pulls = new Map<string, number[]>();
    for (const partition of partitions) {
      for (const peer of view.holdersOf(partition)) {
        if (live.has(peer) && view.addressOf(peer) !== undefined) addPull(pulls, peer, partition);
      }
    }
    return pullRequests(pulls, view, 'takeover');
  }

  /** The next pullHeld asks every peer for every held partition. */
  forgetPulls(): void {
    this.pulledFrom.clear();
  }

  /** A transfer was requested: placement, join and takeover transfers count as pending. */
  started(request: ResyncRequest): void {
    const pending = this.pendingOf(request);
    if (pending === undefined) return;
    for (const partition of request.partitions) pending.set(partition, (pending.get(partition) ?? 0) + 1);
  }

  /** A transfer finished, or failed for good: it no longer counts as pending. */
  settled(request: ResyncRequest): void {
    const pending = this.pendingOf(request);
    if (pending === undefined) return;
    for (const partition of request.partitions) {
      const left = (pending.get(partition) ?? 1) - 1;
      if (left <= 0) pending.delete(partition);
      else pending.set(partition, left);
    }
  }

  private pendingOf(request: ResyncRequest): Map<number, number> | undefined {
    if (request.reason === 'placement' || request.reason === 'join') return this.pendingPulls;
    return request.reason === 'takeover' ? this.pendingTakeovers : undefined;
  }

  hasPendingPulls(): boolean {
    return this.pendingPulls.size > 0;
  }

  /** Whether a takeover transfer into `partition` is still pending. */
  takeoverPending(partition: number): boolean {
    return this.pendingTakeovers.has(partition);
  }

  /** A failed transfer whose peer is still live: tried again RESYNC_RETRY_MS from now. */
  retryLater(request: ResyncRequest, now: number): void {
    this.retries.push({ request, at: now + RESYNC_RETRY_MS });
  }

  /** The retries due at `now`, taken out of the plan. */
  dueRetries(now: number): ResyncRequest[] {
    if (!this.retries.some((r) => r.at <= now)) return [];
    const due = this.retries.filter((r) => r.at <= now);
    this.retries = this.retries.filter((r) => r.at > now);
    return due.map((r) => r.request);
  }

  /** When the earliest retry is due (Infinity = none). */
  nextRetryAt(): number {
    let next = Infinity;
    for (const retry of this.retries) if (retry.at < next) next = retry.at;
    return next;
  }

  // --- under-replicated writes ---------------------------------------------------

  /** A local write in `partition` reached fewer secondaries than wanted. */
  wroteUnderReplicated(partition: number): void {
    this.unreplicated.add(partition);
  }

  hasUnreplicated(): boolean {
    return this.unreplicated.size > 0;
  }

  /**
   * The partitions whose own sessions must be sent again now (they have secondaries
   * again); a partition stays listed until it has `wanted` of them.
   */
  resendUnreplicated(secondaryCount: (partition: number) => number, wanted: number): number[] {
    const resend: number[] = [];
    for (const partition of [...this.unreplicated]) {
      const secondaries = secondaryCount(partition);
      if (secondaries === 0) continue;
      if (secondaries >= wanted) this.unreplicated.delete(partition);
      resend.push(partition);
    }
    return resend;
  }

  /** Partitions lacking a copy: writes not sent to all secondaries, or transfers pending. */
  lackingPartitions(): number {
    const lacking = new Set(this.unreplicated);
    for (const partition of this.pendingPulls.keys()) lacking.add(partition);
    return lacking.size;
  }

  // --- discard -------------------------------------------------------------------

  /** The view changed at `now`: a discard comes due DISCARD_AFTER_MS later. */
  viewChanged(now: number, live: readonly string[]): void {
    this.discardDueAt = now + DISCARD_AFTER_MS;
    this.discardFirstDueAt = Infinity;
    for (const nodeId of this.peersPulling) if (!live.includes(nodeId)) this.peersPulling.delete(nodeId);
  }

  /** A live peer's heartbeat said whether it is still pulling. */
  peerPulling(nodeId: string, pulling: boolean): void {
    if (pulling) this.peersPulling.add(nodeId);
    else this.peersPulling.delete(nodeId);
  }

  /** Whether a live peer's latest heartbeat said it is still pulling partitions. */
  isPeerPulling(nodeId: string): boolean {
    return this.peersPulling.has(nodeId);
  }

  /** When the discard is next looked at (Infinity = none due). */
  get discardAt(): number {
    return this.discardDueAt;
  }

  /**
   * Whether the due discard happens at `now`: once no live peer is pulling (the new
   * holders have their copies), or DISCARD_MAX_WAIT_MS after it came due; until then it
   * is looked at again every DISCARD_RECHECK_MS.
   */
  discardNow(now: number): boolean {
    if (this.discardDueAt > now) return false;
    if (this.discardFirstDueAt === Infinity) this.discardFirstDueAt = this.discardDueAt;
    if (this.peersPulling.size > 0 && now < this.discardFirstDueAt + DISCARD_MAX_WAIT_MS) {
      this.discardDueAt = now + DISCARD_RECHECK_MS;
      return false;
    }
    this.discardDueAt = Infinity;
    this.discardFirstDueAt = Infinity;
    return true;
  }

  /**
   * Anti-entropy: every held partition is compared with every live peer again (returned
   * transfers), and unheld copies are dropped (`discard`) unless a discard is already
   * scheduled or a peer is still pulling.
   */
  antiEntropy(view: RepairView, others: readonly string[]): { pulls: ResyncRequest[]; discard: boolean } {
    this.forgetPulls();
    const pulls = this.pullHeld(view, others, 'anti_entropy');
    return { pulls, discard: this.discardDueAt === Infinity && this.peersPulling.size === 0 };
  }
}
