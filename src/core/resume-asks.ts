/**
 * The peer side of resumes, sans-IO: asks peers for their copies of sessions, in rank order.
 *
 * Rank order: an ask's peers come ranked (node-core.ts: the session's live owner first, then
 * the partition's holders by placement rank — store nodes first). Rank 0 is asked at once;
 * the next rank is asked when every peer asked so far has answered without the owner's
 * copy, failed or run out of its own time (it takes over), or when the last one asked has
 * not answered within TAKEOVER_AFTER_MS (a stalled peer: the next is asked beside it,
 * and the stalled one is still waited for). A peer that answers with a copy it owns
 * settles the ask at once: the owner holds every acknowledged write (a write made elsewhere
 * is acknowledged only once the owner has it), so the other copies cannot add one — unless
 * the owner still pulls its partitions (`PeerRef.complete` false: restarted under the same
 * id, it rebuilds its store from the others' copies, and one not pulled yet may hold a
 * write its copy lacks), whose copy counts like a secondary's. A copy
 * from a secondary does not settle it: an acknowledged write may have reached only some
 * secondaries, so the ranks after it are asked too — in the common cases (the owner alive,
 * or a resume of a session no one holds) one lookup is made instead of one per holder.
 *
 * A resume's ask is a claim (`ask(…, claim)`): its lookups say so, and an owner asked hands
 * the session over as it answers (NodeCore.handOver), answering with its copy as it was.
 * A copy that names an owner the ask would not ask (a node a claim made owner, outside the
 * partition's holders) has that owner asked next.
 *
 * The lookups queued between two `takeRequests` calls (in the sidecar: one event-loop turn)
 * are coalesced into one per peer (and per kind: claims, look-ups) carrying every session
 * id asked of that peer, so a burst
 * of resumes after a node dies costs a few requests rather than one per session and peer.
 * Each ask settles when no peer is left to ask or wait for, or at its own deadline with
 * what it has.
 *
 * Rules: no clock, no timers; every input carries `now` and `nextDeadline` says when
 * `tick` has work. A settled ask resolves its promise; `settledCount` counts them.
 */
import type { PeerCopies } from './session-api';
import type { SessionSnapshot } from '../store/store';
import { TimerTable } from './timer-table';

/** Most session ids one lookup carries (the peer service refuses more). */
export const MAX_IDS_PER_REQUEST = 10_000;

/**
 * A peer asked this long ago that has not answered is taken as stalled, and the next rank
 * is asked beside it (ms). A lookup answers in about a millisecond on a LAN and in a few
 * under load; a GC pause or a saturated peer takes longer, and a dead one is skipped
 * before it is asked (membership).
 */
export const TAKEOVER_AFTER_MS = 50;

/** A member asked for its copy, and until when (ms since the epoch) its answer is awaited. */
export interface PeerRef {
  nodeId: string;
  address: string;
  deadline: number;
  /**
   * False while the member's heartbeats say it still pulls partitions from its peers (a
   * restarted owner, its store empty at start): a copy it owns then may lack a write the
   * others hold, so it does not settle the ask. Absent: true.
   */
  complete?: boolean;
}

interface Ask {
  sessionId: string;
  /** A resume's ask: an owner asked hands the session over to this node. */
  claim: boolean;
  /** In rank order (an owner a copy named is put next: chaseOwner). */
  peers: readonly PeerRef[];
  /** peers[next] is the next to ask. */
  next: number;
  deadline: number;
  copies: PeerCopies;
  /** Node ids of the peers asked that have not answered, failed or run out of time yet. */
  waiting: Set<string>;
  /** Its entries in the timer table: the ask's own deadline and earlier ones of single peers. */
  timers: AskTimer[];
  done: boolean;
  resolve: (copies: PeerCopies) => void;
}

interface AskTimer {
  ask: Ask;
  /** The peer waited for until then; undefined: the ask's own deadline. */
  peer: string | undefined;
  /** A take-over: past it, the next rank is asked beside `peer`. */
  takeover?: true;
}

interface Lookup {
  peer: PeerRef;
  asks: Ask[];
  sentAt: number;
}

export interface LookupRequest {
  id: number;
  peerAddress: string;
  sessionIds: string[];
  deadline: number;
  /** The sessions are being resumed here: an owner asked hands them over. */
  forClaim: boolean;
}

export class ResumeAsks {
  /** Asks made since the last takeRequests (not armed yet). */
  private queued: Ask[] = [];
  /** Peers to ask at the next takeRequests, with their ask. */
  private launches: { ask: Ask; peer: PeerRef }[] = [];
  /** Asks sent and not settled. */
  private readonly open = new Set<Ask>();
  /** When an ask stops waiting: for one peer (its own deadline), or at all (peer undefined). */
  private readonly deadlines = new TimerTable<AskTimer>();
  private readonly lookups = new Map<number, Lookup>();
  settledCount = 0;

  constructor(
    private readonly observe: (seconds: number, outcome: 'ok' | 'error') => void,
    /** Request ids, shared with the node's other peer requests. */
    private readonly nextId: () => number,
    /** The owner a copy names, as a peer to ask until `settleBy` (undefined: not one to ask). */
    private readonly peerOf: (nodeId: string, settleBy: number, now: number) => PeerRef | undefined = () => undefined,
  ) {}

  /**
   * The copies of a session that `peers` hold, settled by `deadline` (ms since the epoch);
   * `claim`: for a resume (the owner asked hands the session over).
   */
  ask(sessionId: string, peers: readonly PeerRef[], deadline: number, claim = false): Promise<PeerCopies> {
    if (peers.length === 0) return Promise.resolve({ asked: 0, answered: 0, snapshots: [] });
    return new Promise((resolve) => {
      const copies: PeerCopies = { asked: 0, answered: 0, snapshots: [] };
      this.queued.push({ sessionId, claim, peers, next: 0, deadline, copies, waiting: new Set(), timers: [], done: false, resolve });
    });
  }

  /** The lookups to send for the peers to ask since the last call, one per peer (split at MAX_IDS_PER_REQUEST). */
  takeRequests(now: number): LookupRequest[] {
    for (const ask of this.queued) {
      this.open.add(ask);
      this.arm(ask, undefined, ask.deadline);
      this.askNext(ask);
    }
    this.queued = [];
    const launches = this.launches;
    if (launches.length === 0) return [];
    this.launches = [];
    const byPeer = new Map<string, { peer: PeerRef; claim: boolean; asks: Ask[] }>();
    for (const { ask, peer } of launches) {
      if (ask.done) continue;
      if (peer.deadline < ask.deadline) this.arm(ask, peer.nodeId, peer.deadline);
      if (ask.next < ask.peers.length) this.arm(ask, peer.nodeId, Math.min(now + TAKEOVER_AFTER_MS, ask.deadline), true);
      const key = ask.claim ? `claim ${peer.address}` : peer.address;
      let entry = byPeer.get(key);
      if (entry === undefined) byPeer.set(key, (entry = { peer, claim: ask.claim, asks: [] }));
      entry.asks.push(ask);
    }
    const requests: LookupRequest[] = [];
    for (const { peer, claim, asks: list } of byPeer.values()) {
      for (let i = 0; i < list.length; i += MAX_IDS_PER_REQUEST) {
        const slice = list.slice(i, i + MAX_IDS_PER_REQUEST);
        const id = this.nextId();
        this.lookups.set(id, { peer, asks: slice, sentAt: now });
        // The answer is awaited until the latest of the asks' deadlines for this peer.
        const deadline = Math.max(...slice.map((ask) => deadlineFor(ask, peer.nodeId)));
        requests.push({ id, peerAddress: peer.address, sessionIds: [...new Set(slice.map((a) => a.sessionId))], deadline, forClaim: claim });
      }
    }
    return requests;
  }

  /** Whether `id` is a lookup of these asks. */
  owns(id: number): boolean {
    return this.lookups.has(id);
  }

  /** A peer's answer to lookup `id` (snapshots), or its failure (undefined; `down`: see PeerAnswer). */
  answer(id: number, snapshots: SessionSnapshot[] | undefined, now: number, down = false): void {
    const lookup = this.lookups.get(id);
    if (lookup === undefined) return;
    this.lookups.delete(id);
    const nodeId = lookup.peer.nodeId;
    this.observe((now - lookup.sentAt) / 1000, snapshots === undefined ? 'error' : 'ok');
    if (snapshots === undefined) {
      for (const ask of lookup.asks) {
        if (down && ask.waiting.has(nodeId)) (ask.copies.down ??= []).push(nodeId);
        this.settle(ask, nodeId, true);
      }
      return;
    }
    const found = new Map(snapshots.map((s) => [s.id, s]));
    for (const ask of lookup.asks) {
      if (ask.done || !ask.waiting.has(nodeId)) continue;
      ask.copies.answered++;
      (ask.copies.answeredBy ??= []).push(nodeId);
      const snapshot = found.get(ask.sessionId);
      if (snapshot === undefined) {
        this.settle(ask, nodeId);
        continue;
      }
      ask.copies.snapshots.push(snapshot);
      if (snapshot.owner === nodeId) ask.copies.fromOwner = nodeId;
      if (snapshot.owner === nodeId && lookup.peer.complete !== false) this.finish(ask);
      else {
        this.chaseOwner(ask, snapshot.owner, now);
        this.settle(ask, nodeId);
      }
    }
  }

  /** Stops waiting for peers past their deadline, asks the next rank beside stalled ones, and settles asks past their deadline. */
  tick(now: number): void {
    for (const timer of this.deadlines.due(now)) {
      this.deadlines.clear(timer);
      const { ask, peer } = timer;
      if (peer === undefined) this.finish(ask, true);
      else if (timer.takeover === true) {
        if (!ask.done && ask.waiting.has(peer)) this.askNext(ask);
      } else this.settle(ask, peer, true);
    }
  }

  nextDeadline(): number {
    return this.deadlines.next();
  }

  private arm(ask: Ask, peer: string | undefined, at: number, takeover = false): void {
    const timer: AskTimer = takeover ? { ask, peer, takeover } : { ask, peer };
    ask.timers.push(timer);
    this.deadlines.set(timer, at);
  }

  /** Settles every ask with what it has (the node stops). */
  settleAll(): void {
    for (const ask of [...this.queued, ...this.open]) this.finish(ask);
    this.queued = [];
    this.launches = [];
  }

  /**
   * A copy named an owner this ask has not asked and would not: it is asked next, at once
   * (the owner's copy settles the ask, and a resume's owner hands the session over). A
   * resuming node that holds no copy knows no owner, and the partition's holders it asks
   * need not include the node a claim made owner since.
   */
  private chaseOwner(ask: Ask, owner: string, now: number): void {
    if (ask.peers.some((p) => p.nodeId === owner)) return;
    const peer = this.peerOf(owner, ask.deadline, now);
    if (peer === undefined) return;
    ask.peers = [...ask.peers.slice(0, ask.next), peer, ...ask.peers.slice(ask.next)];
    this.askNext(ask);
  }

  /** Queues the next rank of an ask for the next takeRequests; finishes it when none is left and none is awaited. */
  private askNext(ask: Ask): void {
    const peer = ask.peers[ask.next];
    if (peer === undefined) {
      if (ask.waiting.size === 0) this.finish(ask);
      return;
    }
    ask.next++;
    ask.waiting.add(peer.nodeId);
    ask.copies.asked++;
    this.launches.push({ ask, peer });
  }

  /**
   * `nodeId` answered without the owner's copy, or (`silent`) failed or ran out of time:
   * the next rank takes over once none is awaited.
   */
  private settle(ask: Ask, nodeId: string, silent = false): void {
    if (!ask.waiting.delete(nodeId)) return;
    if (silent) (ask.copies.silent ??= []).push(nodeId);
    for (const timer of ask.timers) if (timer.peer === nodeId) this.deadlines.clear(timer);
    if (ask.waiting.size === 0) this.askNext(ask);
  }

  /** Settles an ask; `timedOut`: at its deadline, and the peers still awaited count as silent. */
  private finish(ask: Ask, timedOut = false): void {
    if (ask.done) return;
    ask.done = true;
    if (timedOut && ask.waiting.size > 0) (ask.copies.silent ??= []).push(...ask.waiting);
    for (const timer of ask.timers) this.deadlines.clear(timer);
    this.open.delete(ask);
    this.settledCount++;
    ask.resolve(ask.copies);
  }
}

/** Until when an ask waits for one peer: its own deadline, or the peer's if earlier. */
function deadlineFor(ask: Ask, nodeId: string): number {
  return Math.min(ask.deadline, ask.peers.find((p) => p.nodeId === nodeId)?.deadline ?? ask.deadline);
}
