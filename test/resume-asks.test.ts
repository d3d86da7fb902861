/**
 * ResumeAsks on virtual time: lookups are taken as the driver takes them (once per turn),
 * answered or failed by the test, and deadlines pass by ticking.
 */
import type { PeerCopies } from '../src/core/session-api';
import type { SessionSnapshot } from '../src/store/store';
import { type PeerRef, ResumeAsks } from '../src/core/resume-asks';

/** A peer's answer to one lookup, settled by the test. */
interface Lookup {
  address: string;
  ids: string[];
  deadlineMs: number;
  answer: (snapshots: SessionSnapshot[]) => void;
  fail: (err: Error) => void;
}

function snapshot(id: string, owner: string, version: number): SessionSnapshot {
  return { id, parts: [{ name: 'cart', value: `v${version}`, version, writer: owner, epoch: 1 }], owner, epoch: 1, expiresAt: 0, ttlMs: 60_000, deletedVersion: 0 };
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

  test('the resumes of one turn share one lookup per peer', async () => {
    const first = settledState(fetcher.fetch('s1', [A, B], now + 5000));
    const second = settledState(fetcher.fetch('s2', [A], now + 5000));
    await turn();
    expect(lookups.map((l) => [l.address, l.ids])).toEqual([
      [A.address, ['s1', 's2']],
      [B.address, ['s1']],
    ]);
    lookups[0]!.answer([snapshot('s1', 'c', 3), snapshot('s2', 'c', 4)]);
    await turn();
    // s1 still waits for B; s2 asked only A.
    expect(first.copies).toBeUndefined();
    expect(second.copies).toEqual({ asked: 1, answered: 1, snapshots: [snapshot('s2', 'c', 4)] });
    lookups[1]!.answer([]);
    await turn();
    expect(first.copies).toEqual({ asked: 2, answered: 2, snapshots: [snapshot('s1', 'c', 3)] });
    expect(observed).toEqual(['ok', 'ok']);
  });

  test('a peer that answers with a copy it owns settles the resume without waiting for the others', async () => {
    const resumed = settledState(fetcher.fetch('s1', [A, B], now + 5000));
    await turn();
    lookups[1]!.answer([snapshot('s1', 'b', 7)]);
    await turn();
    expect(resumed.copies).toEqual({ asked: 2, answered: 1, snapshots: [snapshot('s1', 'b', 7)] });
    // A copy the answering peer does not own is not enough.
    const other = settledState(fetcher.fetch('s2', [A, B], now + 5000));
    await turn();
    lookups[3]!.answer([snapshot('s2', 'a', 2)]);
    await turn();
    expect(other.copies).toBeUndefined();
    lookups[2]!.answer([snapshot('s2', 'a', 2)]);
    await turn();
    expect(other.copies).toEqual({ asked: 2, answered: 2, snapshots: [snapshot('s2', 'a', 2), snapshot('s2', 'a', 2)] });
  });

  test('a failed peer counts as asked but not answered', async () => {
    const resumed = settledState(fetcher.fetch('s1', [A, B], now + 5000));
    await turn();
    lookups[0]!.fail(new Error('connection refused'));
    lookups[1]!.answer([]);
    await turn();
    expect(resumed.copies).toEqual({ asked: 2, answered: 1, snapshots: [] });
    expect(observed.sort()).toEqual(['error', 'ok']);
  });

  test('at its deadline a resume settles with what it has', async () => {
    const resumed = settledState(fetcher.fetch('s1', [A, B], now + 200));
    await turn();
    expect(lookups.every((l) => l.deadlineMs === 200)).toBe(true);
    lookups[0]!.answer([snapshot('s1', 'c', 1)]);
    await advance(199);
    expect(resumed.copies).toBeUndefined();
    await advance(1);
    expect(resumed.copies).toEqual({ asked: 2, answered: 1, snapshots: [snapshot('s1', 'c', 1)] });
    // A late answer changes nothing.
    lookups[1]!.answer([snapshot('s1', 'c', 9)]);
    await turn();
    expect(resumed.copies?.snapshots).toHaveLength(1);
  });

  test('a peer with an earlier deadline of its own (a suspect owner) is waited for only until then', async () => {
    const suspect: PeerRef = { ...A, deadline: now + 200 };
    const resumed = settledState(fetcher.fetch('s1', [suspect, B], now + 5000));
    await turn();
    // B answers at once; the suspect owner never does.
    lookups.find((l) => l.address === B.address)!.answer([snapshot('s1', 'a', 3)]);
    await advance(199);
    expect(resumed.copies).toBeUndefined();
    await advance(1);
    expect(resumed.copies).toEqual({ asked: 2, answered: 1, snapshots: [snapshot('s1', 'a', 3)] });
    // Its lookup was asked with its own deadline, not the resume's.
    expect(lookups.find((l) => l.address === A.address)!.deadlineMs).toBe(200);
    // A late failure of the suspect's lookup changes nothing.
    lookups.find((l) => l.address === A.address)!.fail(new Error('gone'));
    await turn();
    expect(resumed.copies?.answered).toBe(1);
  });

  test('no peers to ask settles at once', async () => {
    await expect(fetcher.fetch('s1', [], now + 5000)).resolves.toEqual({ asked: 0, answered: 0, snapshots: [] });
    expect(lookups).toHaveLength(0);
  });
});
