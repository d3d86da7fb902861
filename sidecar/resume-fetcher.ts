/**
 * The peer side of resumes: asks peers for their copies of sessions over
 * PeerService.Fetch. The resumes of one event-loop turn are coalesced into one call per
 * peer (carrying every session id asked of that peer), so a burst of resumes after a node
 * dies costs a few calls rather than one per session and peer. Each resume settles when
 * every peer it asked has answered or failed, or at its own deadline with what it has.
 */
import type { Logger } from 'pino';
import type { PeerCopies } from '../src/session-api';
import type { SessionSnapshot } from '../src/store';
import type { PeerClients } from './peer-service';

/** Session ids in one Fetch call (the peer service serves at most 10,000 per call). */
const IDS_PER_CALL = 5000;

interface Ask {
  sessionId: string;
  addresses: readonly string[];
  deadline: number;
  copies: PeerCopies;
  /** Peers that have not answered or failed yet. */
  waiting: number;
  timer: NodeJS.Timeout | undefined;
  done: boolean;
  resolve: (copies: PeerCopies) => void;
}

export class ResumeFetcher {
  private queued: Ask[] = [];
  private scheduled = false;

  constructor(
    private readonly peers: PeerClients,
    private readonly observe: (seconds: number, outcome: 'ok' | 'error') => void,
    private readonly log: Logger,
  ) {}

  /** The copies of a session that `addresses` hold, settled by `deadline`. */
  fetch(sessionId: string, addresses: readonly string[], deadline: number): Promise<PeerCopies> {
    if (addresses.length === 0) return Promise.resolve({ asked: 0, answered: 0, snapshots: [] });
    return new Promise((resolve) => {
      const copies: PeerCopies = { asked: addresses.length, answered: 0, snapshots: [] };
      this.queued.push({ sessionId, addresses, deadline, copies, waiting: addresses.length, timer: undefined, done: false, resolve });
      if (this.scheduled) return;
      this.scheduled = true;
      setImmediate(() => this.run());
    });
  }

  private run(): void {
    const asks = this.queued;
    this.queued = [];
    this.scheduled = false;
    const byPeer = new Map<string, Ask[]>();
    const now = Date.now();
    for (const ask of asks) {
      ask.timer = setTimeout(() => finish(ask), Math.max(1, ask.deadline - now));
      for (const address of ask.addresses) {
        let list = byPeer.get(address);
        if (list === undefined) byPeer.set(address, (list = []));
        list.push(ask);
      }
    }
    for (const [address, list] of byPeer) {
      for (let i = 0; i < list.length; i += IDS_PER_CALL) this.call(address, list.slice(i, i + IDS_PER_CALL), now);
    }
  }

  private call(address: string, asks: Ask[], now: number): void {
    const ids = [...new Set(asks.map((a) => a.sessionId))];
    const deadline = Math.max(...asks.map((a) => a.deadline));
    const found = new Map<string, SessionSnapshot>();
    const started = performance.now();
    this.peers
      .fetch(address, { sessionIds: ids }, Math.max(1, deadline - now), (snapshot) => found.set(snapshot.id, snapshot))
      .then(
        () => {
          this.observe((performance.now() - started) / 1000, 'ok');
          for (const ask of asks) {
            if (ask.done) continue;
            ask.copies.answered++;
            const snapshot = found.get(ask.sessionId);
            if (snapshot !== undefined) ask.copies.snapshots.push(snapshot);
            settle(ask);
          }
        },
        (err: unknown) => {
          this.observe((performance.now() - started) / 1000, 'error');
          this.log.debug({ peer: address, sessions: ids.length, err: (err as Error).message }, 'resume fetch failed');
          for (const ask of asks) settle(ask);
        },
      );
  }
}

function settle(ask: Ask): void {
  if (--ask.waiting === 0) finish(ask);
}

function finish(ask: Ask): void {
  if (ask.done) return;
  ask.done = true;
  clearTimeout(ask.timer);
  ask.resolve(ask.copies);
}
