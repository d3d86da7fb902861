/**
 * A master for every partition (sans-IO), beside the node core: one election group per
 * partition this node holds — the partition's replica set from placement (rank 0 and the
 * secondaries) — driven by ElectionGroups, and the takeover a new master makes.
 *
 * Inputs (from the node core, each with `now`): `heard`, `heartbeat` and `body` (what the
 * engine hands over from received datagrams), `work` after every input (placement
 * changes, timers, takeover), `heartbeatExtras` when heartbeats go out. Outputs go out
 * through `deps.send` (election datagrams, batched per destination) and
 * `deps.replicateClaim` (takeover claims); `nextDeadline()` is when `work` is due again.
 *
 * Rules:
 * - Groups follow placement: recomputed after every view or priority change, at most
 *   GROUPS_PER_PASS partitions per input, so a large table spreads over several turns.
 * - Takeover: a partition's master claims its orphaned sessions (owner left, unknown to
 *   membership, or dead for `takeoverGraceMs`) at epoch + 1, replicated like a resume's
 *   claim, at most CLAIMS_PER_PASS per input. Before it claims any in a partition it pulls
 *   the partition from its other live holders (once per view): a write the dead owner had
 *   acknowledged may be on some of them and not here, and a claim from this copy alone would
 *   stamp the older part with the new epoch, beating that write everywhere — the resume's
 *   rule (a secondary's copy alone does not settle a resume) for takeover. Partitions are (re)scanned when this node
 *   becomes their master and, for those it masters, when the view changes and once the
 *   grace has passed, and only while the node pulls nothing. The grace spares a pod that crashed and came straight back (same
 *   node id, new incarnation, a moment after it was declared dead): its users still reach it. An owner the probe declared
 *   failed but membership still counts is not taken from: the probe's verdict (inquiries
 *   unanswered for about a second) is enough to elect a master, but a live owner behind a
 *   lossy link would keep writing at its old epoch and lose those writes to the claim; its
 *   sessions are claimed once membership declares it dead (or by a client's resume).
 * - With --quorum: no takeover while this node lacks its quorum; an owner counts as dead
 *   only for time this node had it (quorumSince); and a master claims only sessions whose
 *   owner it was a secondary of when the owner was last heard (vouched) — the others wait
 *   for a resume, which asks their holders.
 * - Bad election input is dropped and counted (NodeCounters.dropped): 'malformed' for a
 *   notice that does not read, 'election_ignored' for one about a group this node does not
 *   share with its sender.
 */
import type { ClusterBody } from './replication-engine';
import type { Heartbeat } from '../gen/baton/v1/wire';
import { Datagram } from '../gen/baton/v1/wire';
import { encodeWith } from '../wire/proto-writer';
import type { MemberIndex } from './election';
import { ElectionGroups, DEFAULT_DELAY_MS, DEFAULT_ELECTION_BASE_MS } from './election-groups';
import { electionBatches, readElection, readHeartbeatElection } from './election-wire';
import type { MemberView, Membership, MembershipConfig } from './membership';
import type { NodeCounters } from './node-counters';
import type { Placement } from './placement';
import type { SessionStore, StoredSession } from '../store/store';

/** Partitions whose group is recomputed per input at most. */
export const GROUPS_PER_PASS = 512;
/** Partitions scanned for orphaned sessions per input at most. */
export const SCANS_PER_PASS = 64;
/**
 * Sessions looked at for orphans per input at most (whole partitions: the last one may run
 * past it): with 300,000 sessions, 64 partitions were ~75,000 and held the node for ~30 ms.
 */
export const SCAN_SESSIONS_PER_PASS = 1024;
/** Takeover claims per pass at most (a pass per input, one per millisecond at most). */
export const CLAIMS_PER_PASS = 256;
/** A round trip longer than this is not a measurement (a reply to an old inquiry). */
const MAX_ROUND_TRIP_MS = 10_000;

/** Election timings, in ms (see failure-probe.ts and election-groups.ts). */
export interface ElectionTimings {
  inquireAfterMs: number;
  inquiryIntervalMs: number;
  detectionTimeoutMs: number;
  electionBaseMs: number;
  defaultDelayMs: number;
  reannounceMs: number;
  /** How long an owner must have been dead before its sessions are taken over. */
  takeoverGraceMs: number;
}

/**
 * Timings from membership's: a silent master is inquired once membership would suspect it
 * (1 s at the defaults), every heartbeat interval, and declared failed halfway from suspect
 * to dead (2 s: a second before membership declares it dead, and long enough that an event
 * loop stalled by load is not taken for a crash); masters re-announce every four heartbeat
 * intervals; a dead owner's sessions are taken over as long again as membership took to
 * declare it dead (3 s): a crashed pod that restarts in that time keeps them.
 */
export function defaultElectionTimings(membership: MembershipConfig): ElectionTimings {
  return {
    inquireAfterMs: membership.suspectAfterMs,
    inquiryIntervalMs: membership.heartbeatIntervalMs,
    detectionTimeoutMs: (membership.deadAfterMs - membership.suspectAfterMs) / 2,
    electionBaseMs: DEFAULT_ELECTION_BASE_MS,
    defaultDelayMs: DEFAULT_DELAY_MS,
    reannounceMs: 4 * membership.heartbeatIntervalMs,
    takeoverGraceMs: membership.deadAfterMs,
  };
}

export interface PartitionMastersDeps {
  self: string;
  /** --priority: higher wins elections. */
  priority: number;
  timings: ElectionTimings;
  maxPayloadBytes: number;
  store: SessionStore;
  membership: Membership;
  placement: Placement;
  counters: NodeCounters;
  send(to: string, body: ClusterBody): void;
  /** Queues a claim's deltas (like a resume's claim). */
  replicateClaim(session: StoredSession, previousOwner: string, now: number): void;
  /** Sends what the claims queued. */
  flush(now: number): void;
  /** The node still pulls partitions placement gave it: its copies may predate others' claims. */
  pulling(): boolean;
  /** Pulls the partitions from their other live holders (takeoverPending says until when). */
  pullForTakeover(partitions: readonly number[]): void;
  takeoverPending(partition: number): boolean;
  /** Why this node may not claim sessions now (--quorum), or undefined: no takeover meanwhile. */
  quorumLost(now: number): string | undefined;
  /** With --quorum, since when this node has had its quorum (-Infinity without one: ownerGone). */
  quorumSince(): number;
  /** With --quorum, whether this node was `owner`'s secondary in the partition when the owner was last heard, so its copy holds every write the owner acknowledged (NodeCore.takeoverVouched); true without. */
  vouched(partition: number, owner: string): boolean;
}

/**
 * Whether a session's owner is gone, so a master takes its sessions over: it left, has been
 * dead for `afterMs` since it was last heard (--dead-after-ms and the takeover grace), or is
 * unknown to membership — but a node that (re)started at `startedAt` has not heard every
 * live member yet: an owner it does not know counts as gone only `afterMs` after its start
 * (a restarted node took over sessions of owners alive elsewhere that its membership had
 * not heard from yet, and its claims beat their writes). `watchingSince`: with --quorum,
 * since when this node has had its quorum (NodeCore.quorumSince); silence before that does
 * not count (the owner may have been alive on the other side of a split).
 */
export function ownerGone(member: Pick<MemberView, 'state' | 'lastHeardAt'> | undefined, now: number, startedAt: number, afterMs: number, watchingSince = -Infinity): boolean {
  if (member?.state === 'left') return true;
  if (member !== undefined && member.state !== 'dead') return false;
  return now >= Math.max(member === undefined ? startedAt : (member.lastHeardAt ?? -Infinity), watchingSince) + afterMs;
}

export class PartitionMasters {
  readonly elections: ElectionGroups;
  private readonly priorities = new Map<string, number>();
  /** The last heartbeat from each member: its sent-at, and when it arrived (echoed back). */
  private readonly lastHeartbeats = new Map<string, { sentAtMs: number; receivedAt: number }>();
  private viewVersion = -1;
  /** Placement's version as of the last regroup: placement follows the coordinator's views, which change apart from membership. */
  private placementVersion = -1;
  /** Next partition to regroup (Infinity = all done). */
  private regroupFrom = Infinity;
  private readonly scans = new Set<number>();
  private claims: string[] = [];
  /** Partitions pulled from their other holders in this view: their orphans may be claimed. */
  private readonly pulled = new Set<number>();
  /** Partitions whose takeover pull is pending, with the view (`views`) it was asked in. */
  private readonly pulling = new Map<number, number>();
  /** Views seen (a pull asked in an earlier one does not count). */
  private views = 0;
  /** When takeover last scanned or claimed (it does so once per millisecond at most). */
  private lastPassAt = -Infinity;
  /** When the mastered partitions are scanned again: a grace after each view change, ascending. */
  private rescans: number[] = [];

  /** When this node started: an owner membership does not know yet may not have been heard from. */
  private readonly startedAt: number;

  constructor(
    private readonly deps: PartitionMastersDeps,
    now: number,
  ) {
    this.startedAt = now;
    const t = deps.timings;
    this.elections = new ElectionGroups(
      {
        self: deps.self,
        probe: { inquireAfterMs: t.inquireAfterMs, inquiryIntervalMs: t.inquiryIntervalMs, detectionTimeoutMs: t.detectionTimeoutMs },
        electionBaseMs: t.electionBaseMs,
        defaultDelayMs: t.defaultDelayMs,
        reannounceMs: t.reannounceMs,
      },
      now,
    );
  }

  /** The master this node knows for `partition` (undefined: it holds no copy, or none is known). */
  masterOf(partition: number): string | undefined {
    return this.elections.masterOf(partition);
  }

  /** A member's --priority as its heartbeats state it (this node's own for itself; 0 if unheard). */
  priorityOf(nodeId: string): number {
    return nodeId === this.deps.self ? this.deps.priority : (this.priorities.get(nodeId) ?? 0);
  }

  /** The partitions this node masters, ascending. */
  mastered(): number[] {
    return this.elections.masteredGroups();
  }

  heard(from: string, now: number): void {
    this.elections.heard(from, now);
  }

  heartbeat(from: string, heartbeat: Heartbeat, now: number): void {
    const fields = readHeartbeatElection(heartbeat, this.deps.self);
    if (this.priorities.get(from) !== fields.priority) {
      this.priorities.set(from, fields.priority);
      this.regroupFrom = 0;
    }
    if (fields.echo !== undefined) {
      const rtt = now - fields.echo.sentAtMs - fields.echo.heldMs;
      if (rtt >= 0 && rtt <= MAX_ROUND_TRIP_MS) this.elections.roundTrip(from, rtt);
    }
    this.elections.delays.report(from, fields.delays);
    this.lastHeartbeats.set(from, { sentAtMs: Number(heartbeat.sentAtUnixMs), receivedAt: now });
  }

  body(from: string, fromAddress: string, body: ClusterBody, now: number): void {
    switch (body.$case) {
      case 'election': {
        const { notices, dropped } = readElection(body.election);
        for (let i = 0; i < dropped; i++) this.deps.counters.drop('malformed');
        for (const notice of notices) if (!this.elections.handleNotice(from, notice, now)) this.deps.counters.drop('election_ignored');
        break;
      }
      case 'inquiry': {
        const sentAtMs = body.inquiry.sentAtMs;
        if (!Number.isFinite(sentAtMs)) {
          this.deps.counters.drop('malformed');
          break;
        }
        const to = this.deps.membership.member(from)?.advertiseAddress ?? fromAddress;
        this.deps.send(to, { $case: 'inquiryReply', inquiryReply: { inquirySentAtMs: sentAtMs } });
        break;
      }
      case 'inquiryReply': {
        const rtt = now - body.inquiryReply.inquirySentAtMs;
        if (rtt >= 0 && rtt <= MAX_ROUND_TRIP_MS) this.elections.roundTrip(from, rtt);
        break;
      }
    }
  }

  /** The election fields of this node's heartbeats: priority, echoes, measured round trips. */
  heartbeatExtras(now: number): Partial<Heartbeat> {
    const echoes: Heartbeat['echoes'] = [];
    for (const [nodeId, last] of this.lastHeartbeats) echoes.push({ nodeId, sentAtUnixMs: BigInt(Math.floor(last.sentAtMs)), heldMs: Math.max(0, now - last.receivedAt) });
    const delays: Heartbeat['delays'] = [];
    for (const [nodeId, roundTripMs] of this.elections.delays.ownEstimates()) delays.push({ nodeId, roundTripMs });
    return { priority: this.deps.priority, echoes, delays };
  }

  /**
   * Runs after every input: placement changes, election timers, takeover (only when
   * `claims`: the driver's timer or flush, not each of a burst of answers); sends what they
   * made.
   */
  work(now: number, claims = true): void {
    this.syncView(now);
    this.regroup(now);
    if ((this.rescans[0] ?? Infinity) <= now) {
      this.rescans = this.rescans.filter((at) => at > now);
      for (const p of this.elections.masteredGroups()) this.scans.add(p);
    }
    if (this.elections.nextDeadline() <= now) this.elections.tick(now);
    this.elections.takeFailures();
    for (const { group } of this.elections.takeMastered()) this.scans.add(group);
    if (claims) this.takeOver(now);
    this.sendOut(now);
  }

  nextDeadline(now: number): number {
    if (this.regroupFrom !== Infinity) return now;
    // Without a quorum, takeover waits for an input (the heartbeat that brings it back).
    if (!this.deps.pulling() && this.deps.quorumLost(now) === undefined && (this.scans.size > 0 || this.claims.length > 0 || this.takeoverPullEnded())) return Math.max(now, this.lastPassAt + 1);
    return Math.min(this.elections.nextDeadline(), this.rescans[0] ?? Infinity);
  }

  /** A takeover pull has ended (its partitions are scanned at the next pass). */
  private takeoverPullEnded(): boolean {
    for (const p of this.pulling.keys()) if (!this.deps.takeoverPending(p)) return true;
    return false;
  }

  private syncView(now: number): void {
    const membership = this.deps.membership;
    if (membership.viewVersion === this.viewVersion && this.deps.placement.version === this.placementVersion) return;
    this.viewVersion = membership.viewVersion;
    this.placementVersion = this.deps.placement.version;
    this.regroupFrom = 0;
    // An owner may have died since the partitions were pulled: their orphans are found,
    // pulled for and claimed again.
    this.views++;
    this.pulled.clear();
    this.claims = [];
    for (const p of this.elections.masteredGroups()) this.scans.add(p);
    // Inputs carry a growing `now`, so the list stays sorted; it holds the view changes of
    // one grace period.
    this.rescans.push(now + this.deps.timings.takeoverGraceMs);
    for (const nodeId of [...this.priorities.keys(), ...this.lastHeartbeats.keys()]) {
      const state = membership.member(nodeId)?.state;
      if (state !== undefined && state !== 'left') continue;
      this.priorities.delete(nodeId);
      this.lastHeartbeats.delete(nodeId);
      this.elections.forget(nodeId);
    }
  }

  private regroup(now: number): void {
    const { placement, self } = this.deps;
    const end = Math.min(placement.partitions, this.regroupFrom + GROUPS_PER_PASS);
    for (let p = this.regroupFrom; p < end; p++) {
      const holders = placement.holders(p);
      if (!holders.includes(self)) {
        this.elections.dropGroup(p);
        continue;
      }
      const members: MemberIndex[] = holders.map((nodeId, rank) => ({ nodeId, rank, priority: nodeId === self ? this.deps.priority : (this.priorities.get(nodeId) ?? 0) }));
      this.elections.setGroup(p, members, now);
    }
    this.regroupFrom = end >= placement.partitions ? Infinity : end;
  }

  private orphaned(owner: string, now: number): boolean {
    if (owner === this.deps.self) return false;
    return ownerGone(this.deps.membership.member(owner), now, this.startedAt, this.deps.membership.config.deadAfterMs + this.deps.timings.takeoverGraceMs, this.deps.quorumSince());
  }

  private takeOver(now: number): void {
    const { store, self } = this.deps;
    // A copy being pulled may predate a claim another master already made (a partition
    // this node only now holds): claiming from it would claim the session twice. The
    // pull's end is an input, and takeover runs at the next pass (nextDeadline).
    if (this.deps.pulling() || this.deps.quorumLost(now) !== undefined) return;
    // One pass per millisecond (and per turn of the event loop: see work): a pass after
    // each of the answers a transfer brings in one turn held the node for 100-160 ms while a
    // master claimed a dead owner's sessions.
    if (now <= this.lastPassAt) return;
    for (const [p, view] of this.pulling) {
      if (this.deps.takeoverPending(p)) continue;
      this.pulling.delete(p);
      if (view === this.views) this.pulled.add(p);
      this.scans.add(p);
    }
    const toPull: number[] = [];
    let scanned = 0;
    let looked = 0;
    for (const p of this.scans) {
      if (scanned++ >= SCANS_PER_PASS || looked >= SCAN_SESSIONS_PER_PASS) break;
      this.scans.delete(p);
      if (this.elections.stateOf(p) !== 'master' || this.pulling.has(p)) continue;
      looked += store.partitionSize(p);
      const found = this.claims.length;
      for (const session of store.sessionsIn(p, now)) if (this.orphaned(session.owner, now)) this.claims.push(session.id);
      if (this.claims.length === found || this.pulled.has(p)) continue;
      this.claims.length = found;
      toPull.push(p);
    }
    if (toPull.length > 0) {
      this.deps.pullForTakeover(toPull);
      for (const p of toPull) {
        if (this.deps.takeoverPending(p)) this.pulling.set(p, this.views);
        else {
          // No other live holder: this copy is all there is.
          this.pulled.add(p);
          this.scans.add(p);
        }
      }
    }
    if (scanned > 0 || this.claims.length > 0) this.lastPassAt = now;
    const batch = this.claims.splice(0, CLAIMS_PER_PASS);
    let claimed = 0;
    for (const id of batch) {
      const owner = store.ownerOf(id)?.owner;
      const partition = store.partitionOf(id);
      if (owner === undefined || !this.orphaned(owner, now) || this.elections.stateOf(partition) !== 'master') continue;
      if (!this.deps.vouched(partition, owner)) {
        this.deps.counters.claimsUnvouched++;
        continue;
      }
      if (store.claim(id, self, now) === undefined) continue;
      const session = store.get(id, now);
      if (session === undefined) continue;
      this.deps.replicateClaim(session, owner, now);
      this.deps.counters.claimed('takeover');
      claimed++;
    }
    if (claimed > 0) this.deps.flush(now);
  }

  private sendOut(now: number): void {
    const { membership, send, self, maxPayloadBytes } = this.deps;
    const out = this.elections.take();
    for (const nodeId of out.inquiries) {
      const address = membership.member(nodeId)?.advertiseAddress;
      if (address !== undefined) send(address, { $case: 'inquiry', inquiry: { sentAtMs: now } });
    }
    const encode = (election: NonNullable<Datagram['body']>) => encodeWith((w) => Datagram.encode({ senderNodeId: self, body: election }, w));
    for (const [nodeId, notices] of out.notices) {
      const address = membership.member(nodeId)?.advertiseAddress;
      if (address === undefined) continue;
      for (const election of electionBatches(notices, maxPayloadBytes, (e) => encode({ $case: 'election', election: e }))) send(address, { $case: 'election', election });
    }
  }
}
