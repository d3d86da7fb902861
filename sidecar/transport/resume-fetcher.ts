/**
 * The peer side of resumes: asks peers for their copies of sessions on the
 * PeerService.Lookup stream kept open to each. The resumes of one event-loop turn are
 * coalesced into one request per peer (carrying every session id asked of that peer), so a
 * burst of resumes after a node dies costs a few requests rather than one per session and
 * peer. Each resume settles when every peer it asked has answered or failed, or at its own
 * deadline with what it has (a peer may have an earlier deadline of its own: a suspect one is
 * waited for briefly) — or as soon as a peer answers with a copy it owns: the owner
 * holds every acknowledged write (a write made elsewhere is acknowledged only once the owner
 * has it), so the other copies cannot add one.
 */
import type { Logger } from 'pino';
import type { PeerCopies } from '../../src/core/session-api';
import { MAX_IDS_PER_REQUEST, type PeerClients } from './peer-service';

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
  timer: NodeJS.Timeout | undefined;
  done: boolean;
  resolve: (copies: PeerCopies) => void;
}

export class ResumeFetcher {
  private queued: Ask[] = [];
  private scheduled = false;

  constructor(
    private readonly clients: Pick<PeerClients, 'lookup'>,
    private readonly observe: (seconds: number, outcome: 'ok' | 'error') => void,
    private readonly log: Logger,
  ) {}

  /** The copies of a session that `peers` hold, settled by `deadline` (ms since the epoch). */
  fetch(sessionId: string, peers: readonly PeerRef[], deadline: number): Promise<PeerCopies> {
    if (peers.length === 0) return Promise.resolve({ asked: 0, answered: 0, snapshots: [] });
    return new Promise((resolve) => {
      const copies: PeerCopies = { asked: peers.length, answered: 0, snapshots: [] };
      this.queued.push({ sessionId, peers, deadline, copies, waiting: new Set(peers.map((p) => p.nodeId)), timer: undefined, done: false, resolve });
      if (this.scheduled) return;
      this.scheduled = true;
      setImmediate(() => this.run());
    });
  }

  private run(): void {
    const asks = this.queued;
    this.queued = [];
    this.scheduled = false;
    const byPeer = new Map<string, { peer: PeerRef; asks: Ask[] }>();
    const now = Date.now();
    for (const ask of asks) {
      ask.timer = setTimeout(() => finish(ask), Math.max(1, ask.deadline - now));
      for (const peer of ask.peers) {
        let entry = byPeer.get(peer.address);
        if (entry === undefined) byPeer.set(peer.address, (entry = { peer, asks: [] }));
        entry.asks.push(ask);
      }
    }
    for (const { peer, asks: list } of byPeer.values()) {
      for (let i = 0; i < list.length; i += MAX_IDS_PER_REQUEST) this.call(peer, list.slice(i, i + MAX_IDS_PER_REQUEST), now);
    }
  }

  /**
   * Asks one peer on behalf of `asks`. Its answer is awaited until the latest of the asks'
   * deadlines for it; an ask whose own deadline for this peer (a suspect peer's is short)
   * comes first stops waiting for it then.
   */
  private call(peer: PeerRef, asks: Ask[], now: number): void {
    const ids = [...new Set(asks.map((a) => a.sessionId))];
    const deadlineFor = (ask: Ask) => Math.min(ask.deadline, ask.peers.find((p) => p.nodeId === peer.nodeId)?.deadline ?? ask.deadline);
    const deadline = Math.max(...asks.map(deadlineFor));
    for (const ask of asks) {
      const own = deadlineFor(ask);
      if (own < ask.deadline) setTimeout(() => settle(ask, peer.nodeId), Math.max(1, own - now));
    }
    const started = performance.now();
    this.clients
      .lookup(peer.address, ids, Math.max(1, deadline - now))
      .then(
        (snapshots) => {
          this.observe((performance.now() - started) / 1000, 'ok');
          const found = new Map(snapshots.map((s) => [s.id, s]));
          for (const ask of asks) {
            if (ask.done || !ask.waiting.has(peer.nodeId)) continue;
            ask.copies.answered++;
            const snapshot = found.get(ask.sessionId);
            if (snapshot === undefined) {
              settle(ask, peer.nodeId);
              continue;
            }
            ask.copies.snapshots.push(snapshot);
            if (snapshot.owner === peer.nodeId) finish(ask);
            else settle(ask, peer.nodeId);
          }
        },
        (err: unknown) => {
          this.observe((performance.now() - started) / 1000, 'error');
          this.log.debug({ peer: peer.address, sessions: ids.length, err: (err as Error).message }, 'resume fetch failed');
          for (const ask of asks) settle(ask, peer.nodeId);
        },
      );
  }
}

/** `nodeId` answered, failed or ran out of time: the ask is done once no peer is left. */
function settle(ask: Ask, nodeId: string): void {
  if (ask.waiting.delete(nodeId) && ask.waiting.size === 0) finish(ask);
}

function finish(ask: Ask): void {
  if (ask.done) return;
  ask.done = true;
  clearTimeout(ask.timer);
  ask.resolve(ask.copies);
}
