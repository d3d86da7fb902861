/**
 * ResumeAsks on virtual time (peers in rank order): lookups are taken as the driver takes them (once per turn),
 * answered or failed by the test, and deadlines pass by ticking.
 */
import type { PeerCopies } from '../src/core/session-api';
import type { SessionSnapshot } from '../src/store/store';
import { type PeerRef, ResumeAsks, TAKEOVER_AFTER_MS } from '../src/core/resume-asks';

/** A peer's answer to one lookup, settled by the test. */
interface Lookup {
  address: string;
  ids: string[];
  forClaim: boolean;
  deadlineMs: number;
  answer: (snapshots: SessionSnapshot[]) => void;
  fail: (err: Error) => void;
}

function snapshot(id: string, owner: string, version: number): SessionSnapshot {
  return { id, parts: [{ name: 'cart', value: Buffer.from(`v${version}`), version, writer: owner, epoch: 1 }], owner, epoch: 1, expiresAt: 0, ttlMs: 60_000, deletedVersion: 0 };
}

const A: PeerRef = { nodeId: 'a', address: '127.0.0.1:7001', deadline: Infinity };
const B: PeerRef = { nodeId: 'b', address: '127.0.0.1:7002', deadline: Infinity };
const T0 = 1_000_000;

describe('ResumeAsks', () => {
  let lookups: Lookup[];
  let observed: string[];
  let asks: ResumeAsks;
  let now: number;
  let nextId: number;

  beforeEach(() => {
    lookups = [];
    observed = [];
    now = T0;
    nextId = 1;
    asks = new ResumeAsks((_seconds, outcome) => observed.push(outcome), () => nextId++);
  });

  const fetcher = {
    fetch: (sessionId: string, peers: readonly PeerRef[], deadline: number) => asks.ask(sessionId, peers, deadline),
  };

  /** The driver's turn: lookups queued so far go out; promise callbacks settle. */
  async function turn(): Promise<void> {
    for (const request of asks.takeRequests(now)) {
      lookups.push({
        address: request.peerAddress,
        ids: request.sessionIds,
        forClaim: request.forClaim,
        deadlineMs: request.deadline - now,
        answer: (snapshots) => asks.answer(request.id, snapshots, now),
        fail: () => asks.answer(request.id, undefined, now),
      });
    }
    for (let i = 0; i < 5; i++) await Promise.resolve();
  }

  /** Virtual time passes: the timer fires at every deadline on the way. */
  async function advance(ms: number): Promise<void> {
    const until = now + ms;
    for (;;) {
      const next = asks.nextDeadline();
      if (next > until) break;
      now = Math.max(now, next);
      asks.tick(now);
    }
    now = until;
    await turn();
  }

  function settledState(promise: Promise<PeerCopies>): { copies: PeerCopies | undefined } {
    const state: { copies: PeerCopies | undefined } = { copies: undefined };
    void promise.then((copies) => (state.copies = copies));
    return state;
  }

  test('the resumes of one turn share one lookup per peer; rank 0 is asked first', async () => {
    const first = settledState(fetcher.fetch('s1', [A, B], now + 5000));
    const second = settledState(fetcher.fetch('s2', [A], now + 5000));
    await turn();
    // Only rank 0 (A) is asked at first, once for both sessions.
    expect(lookups.map((l) => [l.address, l.ids])).toEqual([[A.address, ['s1', 's2']]]);
    lookups[0]!.answer([snapshot('s1', 'c', 3), snapshot('s2', 'c', 4)]);
    await turn();
    // s2 asked only A; s1 got a secondary's copy from A, so B (rank 1) is asked too.
    expect(second.copies).toEqual({ asked: 1, answered: 1, answeredBy: ['a'], snapshots: [snapshot('s2', 'c', 4)] });
    expect(first.copies).toBeUndefined();
    expect(lookups.map((l) => [l.address, l.ids])).toEqual([
      [A.address, ['s1', 's2']],
      [B.address, ['s1']],
    ]);
    lookups[1]!.answer([]);
    await turn();
    expect(first.copies).toEqual({ asked: 2, answered: 2, answeredBy: ['a', 'b'], snapshots: [snapshot('s1', 'c', 3)] });
    expect(observed).toEqual(['ok', 'ok']);
  });

  test('resumes (claims) and look-ups of one turn go to a peer as separate lookups, each saying which it is', async () => {
    const resumed = settledState(asks.ask('s1', [A], now + 5000, true));
    const lookedUp = settledState(asks.ask('s2', [A], now + 5000, false));
    const alsoResumed = settledState(asks.ask('s3', [A], now + 5000, true));
    await turn();
    expect(lookups.map((l) => [l.address, l.ids, l.forClaim])).toEqual([
      [A.address, ['s1', 's3'], true],
      [A.address, ['s2'], false],
    ]);
    lookups[0]!.answer([snapshot('s1', 'a', 1)]);
    lookups[1]!.answer([snapshot('s2', 'a', 2)]);
    await turn();
    expect(resumed.copies?.snapshots).toEqual([snapshot('s1', 'a', 1)]);
    expect(alsoResumed.copies).toEqual({ asked: 1, answered: 1, answeredBy: ['a'], snapshots: [] });
    expect(lookedUp.copies?.snapshots).toEqual([snapshot('s2', 'a', 2)]);
  });

  test('a copy naming an owner the resume would not ask has that owner asked next; its copy settles the resume', async () => {
    const X: PeerRef = { nodeId: 'x', address: '127.0.0.1:7009', deadline: Infinity };
    const chasing = new ResumeAsks(() => undefined, () => nextId++, (nodeId) => (nodeId === 'x' ? X : undefined));
    asks = chasing;
    const resumed = settledState(asks.ask('s1', [A, B], now + 5000, true));
    await turn();
    expect(lookups.map((l) => l.address)).toEqual([A.address]);
    // A holds a copy x owns (a claim made x the owner): x is asked next, before B.
    lookups[0]!.answer([snapshot('s1', 'x', 3)]);
    await turn();
    expect(lookups.map((l) => [l.address, l.forClaim])).toEqual([
      [A.address, true],
      [X.address, true],
    ]);
    lookups[1]!.answer([snapshot('s1', 'x', 4)]);
    await turn();
    expect(resumed.copies).toEqual({ asked: 2, answered: 2, answeredBy: ['a', 'x'], snapshots: [snapshot('s1', 'x', 3), snapshot('s1', 'x', 4)], fromOwner: 'x' });
    // An owner that is not one to ask (gone, or this node) is not chased: the ranks go on.
    const other = settledState(asks.ask('s2', [A, B], now + 5000));
    await turn();
    lookups[2]!.answer([snapshot('s2', 'gone', 1)]);
    await turn();
    expect(lookups.map((l) => l.address).slice(3)).toEqual([B.address]);
    expect(other.copies).toBeUndefined();
  });

  test('a peer that answers with a copy it owns settles the resume: the ranks after it are never asked', async () => {
    const resumed = settledState(fetcher.fetch('s1', [A, B], now + 5000));
    await turn();
    lookups[0]!.answer([snapshot('s1', 'a', 7)]);
    await turn();
    expect(resumed.copies).toEqual({ asked: 1, answered: 1, answeredBy: ['a'], snapshots: [snapshot('s1', 'a', 7)], fromOwner: 'a' });
    expect(lookups.map((l) => l.address)).toEqual([A.address]);
  });

  test('a copy from its owner does not settle the resume while the owner still pulls its partitions (restarted): the next rank is asked too', async () => {
    const resumed = settledState(fetcher.fetch('s1', [{ ...A, complete: false }, B], now + 5000));
    await turn();
    lookups[0]!.answer([snapshot('s1', 'a', 3)]);
    await turn();
    expect(resumed.copies).toBeUndefined();
    expect(lookups.map((l) => l.address)).toEqual([A.address, B.address]);
    lookups[1]!.answer([snapshot('s1', 'a', 4)]);
    await turn();
    // Both copies come back: the merge keeps the newer part, the one the owner lacked.
    expect(resumed.copies).toEqual({ asked: 2, answered: 2, answeredBy: ['a', 'b'], snapshots: [snapshot('s1', 'a', 3), snapshot('s1', 'a', 4)], fromOwner: 'a' });
  });

  test('the next rank takes over when rank 0 fails', async () => {
    const resumed = settledState(fetcher.fetch('s1', [A, B], now + 5000));
    await turn();
    expect(lookups.map((l) => l.address)).toEqual([A.address]);
    lookups[0]!.fail(new Error('connection refused'));
    await turn();
    expect(lookups.map((l) => l.address)).toEqual([A.address, B.address]);
    expect(resumed.copies).toBeUndefined();
    lookups[1]!.answer([snapshot('s1', 'b', 2)]);
    await turn();
    // A failed peer counts as asked but not answered.
    expect(resumed.copies).toEqual({ asked: 2, answered: 1, answeredBy: ['b'], snapshots: [snapshot('s1', 'b', 2)], fromOwner: 'b', silent: ['a'] });
    expect(observed).toEqual(['error', 'ok']);
  });

  test('a rank that does not answer within TAKEOVER_AFTER_MS has the next asked beside it, and is still waited for', async () => {
    const resumed = settledState(fetcher.fetch('s1', [A, B], now + 5000));
    await turn();
    await advance(TAKEOVER_AFTER_MS - 1);
    expect(lookups.map((l) => l.address)).toEqual([A.address]);
    await advance(1);
    expect(lookups.map((l) => l.address)).toEqual([A.address, B.address]);
    lookups[1]!.answer([snapshot('s1', 'c', 2)]);
    await turn();
    expect(resumed.copies).toBeUndefined(); // A may still bring a newer copy
    lookups[0]!.answer([snapshot('s1', 'c', 5)]);
    await turn();
    expect(resumed.copies).toEqual({ asked: 2, answered: 2, answeredBy: ['b', 'a'], snapshots: [snapshot('s1', 'c', 2), snapshot('s1', 'c', 5)] });
  });

  test('at its deadline a resume settles with what it has', async () => {
    const resumed = settledState(fetcher.fetch('s1', [A, B], now + 200));
    await turn();
    expect(lookups.map((l) => l.deadlineMs)).toEqual([200]);
    lookups[0]!.answer([snapshot('s1', 'c', 1)]);
    await turn();
    await advance(199);
    expect(resumed.copies).toBeUndefined();
    await advance(1);
    expect(resumed.copies).toEqual({ asked: 2, answered: 1, answeredBy: ['a'], snapshots: [snapshot('s1', 'c', 1)], silent: ['b'] });
    // A late answer changes nothing.
    lookups[1]!.answer([snapshot('s1', 'c', 9)]);
    await turn();
    expect(resumed.copies?.snapshots).toHaveLength(1);
  });

  test('a peer with an earlier deadline of its own (a suspect owner) is waited for only until then, then the next rank takes over', async () => {
    const suspect: PeerRef = { ...A, deadline: now + 20 };
    const resumed = settledState(fetcher.fetch('s1', [suspect, B], now + 5000));
    await turn();
    // Its lookup was asked with its own deadline, not the resume's.
    expect(lookups.map((l) => [l.address, l.deadlineMs])).toEqual([[A.address, 20]]);
    await advance(20);
    expect(lookups.map((l) => l.address)).toEqual([A.address, B.address]);
    lookups[1]!.answer([snapshot('s1', 'a', 3)]);
    await turn();
    expect(resumed.copies).toEqual({ asked: 2, answered: 1, answeredBy: ['b'], snapshots: [snapshot('s1', 'a', 3)], silent: ['a'] });
    // A late failure of the suspect's lookup changes nothing.
    lookups[0]!.fail(new Error('gone'));
    await turn();
    expect(resumed.copies?.answered).toBe(1);
  });

  test('no peers to ask settles at once', async () => {
    await expect(fetcher.fetch('s1', [], now + 5000)).resolves.toEqual({ asked: 0, answered: 0, snapshots: [] });
    expect(lookups).toHaveLength(0);
  });
});
