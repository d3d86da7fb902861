/**
 * The peer side of resumes, sans-IO: asks peers for their copies of sessions. The asks
 * queued between two `takeRequests` calls (in the sidecar: one event-loop turn) are
 * coalesced into one lookup per peer carrying every session id asked of that peer, so a
 * burst of resumes after a node dies costs a few requests rather than one per session and
 * peer. Each ask settles when every peer it asked has answered or failed, or at its own
 * deadline with what it has (a peer may have an earlier deadline of its own: a suspect one
 * is waited for briefly) — or as soon as a peer answers with a copy it owns: the owner
 * holds every acknowledged write (a write made elsewhere is acknowledged only once the
 * owner has it), so the other copies cannot add one.
 *
 * Rules: no clock, no timers; every input carries `now` and `nextDeadline` says when
 * `tick` has work. A settled ask resolves its promise; `settledCount` counts them.
 */
import type { PeerCopies } from './session-api';
import type { SessionSnapshot } from '../store/store';
import { TimerTable } from './timer-table';

/** Most session ids one lookup carries (the peer service refuses more). */
export const MAX_IDS_PER_REQUEST = 10_000;

/** A member asked for its copy, and until when (ms since the epoch) its answer is awaited. */
export interface PeerRef {
  nodeId: string;
  address: string;
  deadline: number;
}

interface Ask {
  sessionId: string;
  peers: readonly PeerRef[];
  deadline: number;
  copies: PeerCopies;
  /** Node ids of the peers that have not answered, failed or run out of time yet. */
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
}

export class ResumeAsks {
  private queued: Ask[] = [];
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
  ) {}

  /** The copies of a session that `peers` hold, settled by `deadline` (ms since the epoch). */
  ask(sessionId: string, peers: readonly PeerRef[], deadline: number): Promise<PeerCopies> {
    if (peers.length === 0) return Promise.resolve({ asked: 0, answered: 0, snapshots: [] });
    return new Promise((resolve) => {
      const copies: PeerCopies = { asked: peers.length, answered: 0, snapshots: [] };
      this.queued.push({ sessionId, peers, deadline, copies, waiting: new Set(peers.map((p) => p.nodeId)), timers: [], done: false, resolve });
    });
  }

  /** The lookups to send for the asks queued since the last call, one per peer (split at MAX_IDS_PER_REQUEST). */
  takeRequests(now: number): LookupRequest[] {
    const asks = this.queued;
    if (asks.length === 0) return [];
    this.queued = [];
    const byPeer = new Map<string, { peer: PeerRef; asks: Ask[] }>();
    for (const ask of asks) {
      this.open.add(ask);
      this.arm(ask, undefined, ask.deadline);
      for (const peer of ask.peers) {
        if (peer.deadline < ask.deadline) this.arm(ask, peer.nodeId, peer.deadline);
        let entry = byPeer.get(peer.address);
        if (entry === undefined) byPeer.set(peer.address, (entry = { peer, asks: [] }));
        entry.asks.push(ask);
      }
    }
    const requests: LookupRequest[] = [];
    for (const { peer, asks: list } of byPeer.values()) {
      for (let i = 0; i < list.length; i += MAX_IDS_PER_REQUEST) {
        const slice = list.slice(i, i + MAX_IDS_PER_REQUEST);
        const id = this.nextId();
        this.lookups.set(id, { peer, asks: slice, sentAt: now });
        // The answer is awaited until the latest of the asks' deadlines for this peer.
        const deadline = Math.max(...slice.map((ask) => deadlineFor(ask, peer.nodeId)));
        requests.push({ id, peerAddress: peer.address, sessionIds: [...new Set(slice.map((a) => a.sessionId))], deadline });
      }
    }
    return requests;
  }

  /** Whether `id` is a lookup of these asks. */
  owns(id: number): boolean {
    return this.lookups.has(id);
  }

  /** A peer's answer to lookup `id` (snapshots), or its failure (undefined). */
  answer(id: number, snapshots: SessionSnapshot[] | undefined, now: number): void {
    const lookup = this.lookups.get(id);
    if (lookup === undefined) return;
    this.lookups.delete(id);
    const nodeId = lookup.peer.nodeId;
    this.observe((now - lookup.sentAt) / 1000, snapshots === undefined ? 'error' : 'ok');
    if (snapshots === undefined) {
      for (const ask of lookup.asks) this.settle(ask, nodeId);
      return;
    }
    const found = new Map(snapshots.map((s) => [s.id, s]));
    for (const ask of lookup.asks) {
      if (ask.done || !ask.waiting.has(nodeId)) continue;
      ask.copies.answered++;
      const snapshot = found.get(ask.sessionId);
      if (snapshot === undefined) {
        this.settle(ask, nodeId);
        continue;
      }
      ask.copies.snapshots.push(snapshot);
      if (snapshot.owner === nodeId) this.finish(ask);
      else this.settle(ask, nodeId);
    }
  }

  /** Stops waiting for peers past their deadline, and settles asks past theirs. */
  tick(now: number): void {
    for (const timer of this.deadlines.due(now)) {
      this.deadlines.clear(timer);
      const { ask, peer } = timer;
      if (peer === undefined) this.finish(ask);
      else this.settle(ask, peer);
    }
  }

  nextDeadline(): number {
    return this.deadlines.next();
  }

  private arm(ask: Ask, peer: string | undefined, at: number): void {
    const timer = { ask, peer };
    ask.timers.push(timer);
    this.deadlines.set(timer, at);
  }

  /** Settles every ask with what it has (the node stops). */
  settleAll(): void {
    for (const ask of [...this.queued, ...this.open]) this.finish(ask);
    this.queued = [];
  }

  /** `nodeId` answered, failed or ran out of time: the ask is done once no peer is left. */
  private settle(ask: Ask, nodeId: string): void {
    if (!ask.waiting.delete(nodeId)) return;
    const timer = ask.timers.find((t) => t.peer === nodeId);
    if (timer !== undefined) this.deadlines.clear(timer);
    if (ask.waiting.size === 0) this.finish(ask);
  }

  private finish(ask: Ask): void {
    if (ask.done) return;
    ask.done = true;
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
