/**
 * SessionApi with a scripted replicator: what a Put answers, and when, as replication
 * back-pressure comes and goes (the watermarks themselves are tested in the simulation), and
 * what it says when min_replicas cannot be met.
 */
import type { GetResponse } from '../src/gen/baton/v1/session';
import { UnavailableError, WriteNotMadeError } from '../src/wire/errors';
import { BuzHash } from '../src/store/buzhash';
import { HybridClock } from '../src/store/hybrid-clock';
import type { LocalChange } from '../src/core/replication-engine';
import { OWNER_ASKS_AFTER_MERGE, SessionApi, WRITE_LOOKUP_MAX_MS, type FetchOptions, type PeerCopies, type Replicator } from '../src/core/session-api';
import { DEFAULT_STORE_CONFIG, findStoredPart, type SessionSnapshot, SessionStore, type StoredSession } from '../src/store/store';

const T0 = 1_700_000_000_000;

class ScriptedReplicator implements Replicator {
  readonly replicas = 2;
  /** What sendQueueRoom() answers next: undefined = room now. */
  room: Promise<void> | undefined;
  readonly replicated: string[] = [];

  /** What secondariesFor() and unplacedMembers() answer. */
  secondaries = 2;
  unplaced = 0;

  secondariesFor(): number {
    return this.secondaries;
  }
  unplacedMembers(): number {
    return this.unplaced;
  }
  replicate(session: StoredSession, changes: readonly LocalChange[]): number | undefined {
    for (const change of changes) this.replicated.push(`${session.id}/${change.kind}`);
    return this.replicated.length;
  }
  waitForAcks(): Promise<number> {
    return Promise.resolve(2);
  }
  sendQueueRoom(): Promise<void> | undefined {
    return this.room;
  }
  /** What ownCopiesComplete() answers, the copies fetchFromPeers() returns, and how often it was asked. */
  complete = true;
  copies: SessionSnapshot[] = [];
  fetches = 0;

  ownCopiesComplete(): boolean {
    return this.complete;
  }
  /** What holdsEverySessionOf() answers, and whether the peers asked answer (fetchFromPeers). */
  holdsEvery = true;
  peersAnswer = true;
  holdsEverySessionOf(): boolean {
    return this.holdsEvery;
  }
  /** What holds() answers: whether this node holds a session for its owner (as its secondary). */
  holdsCopy = true;
  holds(): boolean {
    return this.holdsCopy;
  }
  /** What caughtUp() answers, and the deadlines it was asked with. */
  catchUp: Promise<boolean> = Promise.resolve(true);
  readonly catchUpDeadlines: number[] = [];
  caughtUp(deadline: number): Promise<boolean> {
    this.catchUpDeadlines.push(deadline);
    return this.catchUp;
  }
  /** The deadlines fetchFromPeers() was asked with. */
  readonly fetchDeadlines: number[] = [];
  /** Answers to give, in turn, before `copies` (each fetch takes the next); and who each fetch asked. */
  answers: PeerCopies[] = [];
  readonly asked: { owner: string | undefined; ownerOnly: boolean }[] = [];
  fetchFromPeers(_sessionId: string, owner: string | undefined, deadline: number, _now: number, { ownerOnly = false }: FetchOptions = {}): Promise<PeerCopies> {
    this.fetchDeadlines.push(deadline);
    this.fetches++;
    this.asked.push({ owner, ownerOnly });
    const next = this.answers.shift();
    if (next !== undefined) return Promise.resolve(next);
    if (!this.peersAnswer) return Promise.resolve({ asked: 2, answered: 0, snapshots: [] });
    return Promise.resolve({ asked: Math.max(1, this.copies.length), answered: Math.max(1, this.copies.length), snapshots: this.copies });
  }
  /** What quorumLost() answers (undefined: this node has its quorum). */
  noQuorum: string | undefined;
  quorumLost(): string | undefined {
    return this.noQuorum;
  }
  /** What claimVouched() answers, and what it was asked: session, owner, peers that answered, peers down. */
  vouched = true;
  readonly vouchAsks: [string, string, string[], string[]][] = [];
  claimVouched(sessionId: string, owner: string, answered: readonly string[], down: readonly string[]): boolean {
    this.vouchAsks.push([sessionId, owner, [...answered], [...down]]);
    return this.vouched;
  }
  /** Claims replicated: session id, epoch, previous owner. */
  readonly claims: string[] = [];
  replicateClaim(session: StoredSession, previousOwner: string): void {
    this.claims.push(`${session.id}@${session.epoch} from ${previousOwner}`);
  }
}

function setUp() {
  const store = new SessionStore({ ...DEFAULT_STORE_CONFIG, nodeId: 'node-a', partitions: 16 }, new BuzHash('api-test'), new HybridClock());
  const replicator = new ScriptedReplicator();
  const api = new SessionApi(store, { maxValueBytes: 1024, maxPartsPerSession: 8 }, replicator, undefined, () => T0);
  return { store, replicator, api };
}

const put = (sessionId: string, minReplicas = 0) => ({
  sessionId,
  parts: [{ name: 'note', value: Buffer.from('x'), ifVersion: undefined }],
  ttlSeconds: 0,
  minReplicas,
});

describe('SessionApi: replication back-pressure', () => {
  test('with room, a Put is answered at once', () => {
    const { api } = setUp();
    const answer = api.put(put('s1'), T0);
    expect(answer).not.toBeInstanceOf(Promise);
    expect(answer).toMatchObject({ replicasAcked: 0 });
  });

  test('without room, a Put is applied and replicated at once, but answered only once there is room', async () => {
    const { api, store, replicator } = setUp();
    let makeRoom!: () => void;
    replicator.room = new Promise<void>((resolve) => (makeRoom = resolve));
    const answer = api.put(put('s1'), T0);
    expect(answer).toBeInstanceOf(Promise);
    // The write is not held back: the store has it and its delta is queued.
    expect(store.get('s1', T0)).toBeDefined();
    expect(replicator.replicated).toEqual(['s1/put']);
    let answered = false;
    void (answer as Promise<unknown>).then(() => (answered = true));
    await Promise.resolve();
    expect(answered).toBe(false);
    makeRoom();
    await expect(answer).resolves.toMatchObject({ replicasAcked: 0, versions: [{ name: 'note' }] });
  });

  test('a synchronous Put waits for acknowledgements, not for queue room', async () => {
    const { api, replicator } = setUp();
    replicator.room = new Promise<void>(() => undefined); // never
    await expect(api.put(put('s1', 2), T0)).resolves.toMatchObject({ replicasAcked: 2 });
  });
});

describe('SessionApi: writes on a node that has not caught up since its start', () => {
  test('a Put is held, not applied, until the node has caught up; then it is made', async () => {
    const { api, store, replicator } = setUp();
    replicator.complete = false;
    let caughtUp!: (whole: boolean) => void;
    replicator.catchUp = new Promise<boolean>((resolve) => (caughtUp = resolve));
    const answer = api.put(put('s1', 1), T0, T0 + 700);
    expect(answer).toBeInstanceOf(Promise);
    expect(replicator.catchUpDeadlines).toEqual([T0 + 700]);
    await Promise.resolve();
    expect(store.get('s1', T0)).toBeUndefined();
    expect(replicator.replicated).toEqual([]);
    caughtUp(true);
    await expect(answer).resolves.toMatchObject({ replicasAcked: 2 });
    expect(store.get('s1', T0)).toBeDefined();
    expect(replicator.replicated).toEqual(['s1/put']);
  });

  test('a Put still held at its deadline fails UNAVAILABLE, saying why, and is not made', async () => {
    const { api, store, replicator } = setUp();
    replicator.complete = false;
    replicator.catchUp = Promise.resolve(false);
    await expect(api.put(put('s1'), T0)).rejects.toThrow(/has not caught up with its peers yet.*the write was not made/);
    await expect(api.put(put('s1'), T0)).rejects.toBeInstanceOf(WriteNotMadeError);
    expect(store.get('s1', T0)).toBeUndefined();
    await expect(api.updateCart({ sessionId: 's2', operations: [], ttlSeconds: 0, minReplicas: 0 }, T0)).rejects.toBeInstanceOf(UnavailableError);
  });

  test('bad input is refused at once, held or not', () => {
    const { api, replicator } = setUp();
    replicator.complete = false;
    expect(() => api.put({ ...put('s1'), sessionId: '' }, T0)).toThrow();
    expect(replicator.catchUpDeadlines).toEqual([]);
  });
});

describe('SessionApi: writes answer and replicate from what the store stored', () => {
  test('a Put hands replication the stored session at the version it answers, without reading the session back', () => {
    const { api, store, replicator } = setUp();
    const seen: { session: StoredSession; changes: readonly LocalChange[] }[] = [];
    replicator.replicate = (session, changes) => {
      seen.push({ session, changes });
      return seen.length;
    };
    const get = jest.spyOn(store, 'get');
    const answer = api.put(put('s1'), T0) as { versions: { name: string; version: bigint }[] };
    expect(get).not.toHaveBeenCalled();
    get.mockRestore();
    expect(seen).toHaveLength(1);
    expect(seen[0]!.session).toStrictEqual(store.get('s1', T0));
    const version = answer.versions[0]!.version;
    expect(seen[0]!.changes).toEqual([{ kind: 'put', name: 'note', value: Buffer.from('x'), version: Number(version) }]);
  });

  test('an UpdateCart answers with the cart it wrote and replicates that session', () => {
    const { api, store, replicator } = setUp();
    const get = jest.spyOn(store, 'get');
    const answer = api.updateCart(
      { sessionId: 'c1', operations: [{ op: { $case: 'addItem', addItem: { sku: 'apple', name: 'Apple', quantity: 2, unitPriceMinor: 150n } } }], ttlSeconds: 0, minReplicas: 0 },
      T0,
    ) as { cart: { items: { sku: string; quantity: number }[] }; version: bigint };
    // One read: the cart as held before the update, which the operations apply to.
    expect(get).toHaveBeenCalledTimes(1);
    get.mockRestore();
    expect(answer.cart.items).toEqual([expect.objectContaining({ sku: 'apple', quantity: 2 })]);
    expect(answer.version).toBeGreaterThan(0n);
    expect(replicator.replicated).toEqual(['c1/put']);
  });
});

describe('SessionApi: min_replicas above the live secondaries', () => {
  test('is refused before anything is written, naming members alive but not yet placed when there are any', () => {
    const { api, store, replicator } = setUp();
    replicator.secondaries = 1;
    expect(() => api.put(put('s1', 2), T0)).toThrow(new UnavailableError('min_replicas is 2, but only 1 secondaries are live for this session'));
    replicator.unplaced = 1;
    expect(() => api.put(put('s1', 2), T0)).toThrow(
      new UnavailableError(
        "min_replicas is 2, but only 1 secondaries are live for this session; 1 more alive but not yet in the coordinator's view that placement follows (a node that just joined): try again shortly",
      ),
    );
    expect(store.get('s1', T0)).toBeUndefined();
    expect(replicator.replicated).toEqual([]);
  });
});

describe('SessionApi: a synchronous write of a session this node lacks', () => {
  /** s1 as node-c holds it: claimed (epoch 2), with an older note. */
  const claimedElsewhere = (version: number): SessionSnapshot => ({
    id: 's1',
    parts: [{ name: 'note', value: Buffer.from('claimed'), version, writer: 'node-b', epoch: 2 }],
    owner: 'node-c',
    epoch: 2,
    expiresAt: T0 + 3_600_000,
    ttlMs: 3_600_000,
    deletedVersion: 0,
  });

  test('looks the session up at its peers first, and writes on it as it exists (owned elsewhere, at its epoch)', async () => {
    const { api, store, replicator } = setUp();
    replicator.holdsEvery = false;
    replicator.copies = [claimedElsewhere(1)];
    const answer = api.put(put('s1', 1), T0);
    expect(answer).toBeInstanceOf(Promise);
    await expect(answer).resolves.toMatchObject({ replicasAcked: 2 });
    expect(replicator.fetches).toBe(1);
    // The look-up waits at most WRITE_LOOKUP_MAX_MS of the write's 5 s, leaving the rest to its acknowledgements.
    expect(replicator.fetchDeadlines).toEqual([T0 + WRITE_LOOKUP_MAX_MS]);
    const session = store.get('s1', T0)!;
    // Not a fresh session at the first epoch, which the claimed copy would beat everywhere.
    expect([session.owner, session.epoch]).toEqual(['node-c', 2]);
    expect(findStoredPart(session, 'note')?.value?.toString()).toBe('x');
    // Known now: the next synchronous write asks no one.
    await api.put(put('s1', 1), T0);
    expect(replicator.fetches).toBe(1);
  });

  test('asks no one for an asynchronous write, for a session this node has, or where it holds every session of the partition', async () => {
    const { api, replicator } = setUp();
    replicator.holdsEvery = false;
    expect(api.put(put('s1', 0), T0)).not.toBeInstanceOf(Promise);
    await api.put(put('s1', 1), T0);
    replicator.holdsEvery = true;
    await api.put(put('s2', 1), T0);
    expect(replicator.fetches).toBe(0);
  });

  test('fails UNAVAILABLE, the write not made, when no peer that may hold the session answers', async () => {
    const { api, store, replicator } = setUp();
    replicator.holdsEvery = false;
    replicator.peersAnswer = false;
    await expect(api.put(put('s1', 1), T0)).rejects.toThrow(/none of the 2 peers that may hold the session answered.*the write was not made/);
    await expect(api.put(put('s1', 1), T0)).rejects.toBeInstanceOf(WriteNotMadeError);
    expect(store.get('s1', T0)).toBeUndefined();
    expect(replicator.replicated).toEqual([]);
  });
});

describe('SessionApi: a resume no peer answers', () => {
  /** A copy of s1 here, owned by node-b (as a secondary holds it, or a former owner kept it). */
  function withCopy() {
    const setup = setUp();
    setup.store.applyRemote('s1', { kind: 'put', name: 'note', value: Buffer.from('kept'), version: 5, writer: 'node-b', epoch: 1 }, { owner: 'node-b', epoch: 1, expiresAt: T0 + 60_000, ttlMs: 60_000 }, T0);
    return setup;
  }

  test('fails UNAVAILABLE, claiming nothing, when a peer asked did not answer in time (this node may be the one cut off)', async () => {
    const { api, store, replicator } = withCopy();
    replicator.answers = [{ asked: 2, answered: 0, snapshots: [], silent: ['node-b', 'node-c'], down: ['node-b'] }];
    await expect(api.get({ sessionId: 's1', parts: [], resume: true }, T0)).rejects.toThrow(/none of the 2 peers that may hold the session answered \(1 did not answer in time/);
    expect(store.get('s1', T0)!.owner).toBe('node-b');
    expect(replicator.claims).toEqual([]);
  });

  test('claims from the copy it holds for the owner when every peer asked is down', async () => {
    const { api, replicator } = withCopy();
    replicator.answers = [{ asked: 2, answered: 0, snapshots: [], silent: ['node-b', 'node-c'], down: ['node-b', 'node-c'] }];
    const answer = await api.get({ sessionId: 's1', parts: [], resume: true }, T0);
    expect(answer.session!.parts[0]!.value.toString()).toBe('kept');
    expect(replicator.claims).toEqual(['s1@2 from node-b']);
  });

  test('fails UNAVAILABLE when every peer asked is down but the copy here is not one it holds for the owner, or there is none', async () => {
    const { api, store, replicator } = withCopy();
    replicator.holdsCopy = false;
    replicator.answers = [{ asked: 1, answered: 0, snapshots: [], silent: ['node-b'], down: ['node-b'] }];
    await expect(api.get({ sessionId: 's1', parts: [], resume: true }, T0)).rejects.toThrow(/the peer that may hold the session is down, and this node's copy is not one it holds for the owner \(node-b\)/);
    expect(store.get('s1', T0)!.owner).toBe('node-b');
    replicator.answers = [{ asked: 1, answered: 0, snapshots: [], silent: ['node-b'], down: ['node-b'] }];
    await expect(api.get({ sessionId: 's2', parts: [], resume: true }, T0)).rejects.toThrow(/the peer that may hold the session is down; try again/);
    expect(replicator.claims).toEqual([]);
  });
});

describe('SessionApi: a resume on the owner', () => {
  test("answers from this node's copy once its copies are whole; before (restarted, still pulling) it merges its peers' copies first", async () => {
    const { api, store, replicator } = setUp();
    const { version } = store.put('s1', [{ name: 'note', value: Buffer.from('old') }], 0, T0);
    const newer: SessionSnapshot = {
      id: 's1',
      parts: [{ name: 'note', value: Buffer.from('acknowledged'), version: version + 1, writer: 'node-a', epoch: 1 }],
      owner: 'node-a',
      epoch: 1,
      expiresAt: T0 + 3_600_000,
      ttlMs: 3_600_000,
      deletedVersion: 0,
    };
    replicator.copies = [newer];
    const note = (answer: Awaited<ReturnType<SessionApi['get']>>) => Buffer.from(answer.session!.parts[0]!.value).toString();

    replicator.complete = false;
    expect(note(await api.get({ sessionId: 's1', parts: [], resume: true }, T0))).toBe('acknowledged');
    expect(replicator.fetches).toBe(1);
    expect(store.get('s1', T0)!.owner).toBe('node-a');

    replicator.complete = true;
    replicator.copies = [];
    const local = api.get({ sessionId: 's1', parts: [], resume: true }, T0);
    expect(local).not.toBeInstanceOf(Promise);
    expect(note(await local)).toBe('acknowledged');
    expect(replicator.fetches).toBe(1);
  });
});

describe('SessionApi: a resume whose copies name an owner that did not answer as owner', () => {
  const copy = (owner: string, epoch: number, basket: string, version: number): SessionSnapshot => ({
    id: 's1',
    parts: [{ name: 'basket', value: Buffer.from(basket), version, writer: owner, epoch }],
    owner,
    epoch,
    expiresAt: T0 + 60_000,
    ttlMs: 60_000,
    deletedVersion: 0,
  });
  const resume = (api: SessionApi) => api.get({ sessionId: 's1', parts: [], resume: true }, T0) as Promise<GetResponse>;

  test('asks that owner alone (it hands the session over), then claims from its copy too', async () => {
    const { api, replicator, store } = setUp();
    // A holder's copy names node-p as owner (a claim the holder heard of): node-p's writes
    // since are in no copy answered.
    replicator.answers = [
      { asked: 1, answered: 1, snapshots: [copy('node-p', 2, 'old', 10)] },
      { asked: 1, answered: 1, snapshots: [copy('node-p', 2, 'new', 20)], fromOwner: 'node-p' },
    ];
    const answer = await resume(api);
    expect(replicator.asked).toEqual([
      { owner: undefined, ownerOnly: false },
      { owner: 'node-p', ownerOnly: true },
    ]);
    expect(answer.session?.parts.map((p) => Buffer.from(p.value).toString())).toEqual(['new']);
    expect(replicator.claims).toEqual(['s1@3 from node-p']);
    expect(findStoredPart(store.get('s1', T0)!, 'basket')?.version).toBe(20);
  });

  test('does not ask again an owner that answered as owner, or one that was asked and did not answer', async () => {
    for (const first of [
      { asked: 1, answered: 1, snapshots: [copy('node-p', 2, 'old', 10)], fromOwner: 'node-p' },
      { asked: 2, answered: 1, snapshots: [copy('node-p', 2, 'old', 10)], silent: ['node-p'] },
    ]) {
      const { api, replicator } = setUp();
      replicator.answers = [first];
      await resume(api);
      expect(replicator.asked).toHaveLength(1);
      expect(replicator.claims).toEqual(['s1@3 from node-p']);
    }
  });

  test('asks it at most OWNER_ASKS_AFTER_MERGE more times while it answers without owning the session', async () => {
    const { api, replicator } = setUp();
    const stillResuming: PeerCopies = { asked: 1, answered: 1, snapshots: [copy('node-p', 2, 'old', 10)] };
    replicator.answers = Array.from({ length: 5 }, () => stillResuming);
    await resume(api);
    expect(replicator.asked).toHaveLength(1 + OWNER_ASKS_AFTER_MERGE);
    expect(replicator.claims).toEqual(['s1@3 from node-p']);
  });
});

describe('SessionApi: --quorum', () => {
  const NO_QUORUM = 'no quorum: this node has heard from 1 of the 2 members --quorum asks for';
  const ownedByB = (store: SessionStore) =>
    store.applyRemote('s1', { kind: 'put', name: 'note', value: Buffer.from('kept'), version: 5, writer: 'node-b', epoch: 1 }, { owner: 'node-b', epoch: 1, expiresAt: T0 + 60_000, ttlMs: 60_000 }, T0);

  test('a node without its quorum makes no write, deletes nothing and claims nothing; it still answers reads', async () => {
    const { api, store, replicator } = setUp();
    api.put(put('mine'), T0);
    ownedByB(store);
    replicator.noQuorum = NO_QUORUM;
    expect(() => api.put(put('s2'), T0)).toThrow(UnavailableError);
    expect(() => api.put(put('s2', 1), T0)).toThrow(/^no quorum: .*: the write was not made; try another node$/);
    expect(store.get('s2', T0)).toBeUndefined();
    expect(() => api.updateCart({ sessionId: 's2', operations: [], ttlSeconds: 0, minReplicas: 0 }, T0)).toThrow(/no quorum/);
    expect(() => api.delete({ sessionId: 'mine', parts: [] }, T0)).toThrow(/no quorum: .*: nothing was deleted/);
    expect(store.get('mine', T0)).toBeDefined();
    await expect(api.get({ sessionId: 's1', parts: [], resume: true }, T0)).rejects.toThrow(/no quorum: .*: the session was not resumed/);
    expect(replicator.fetches).toBe(0); // an owner asked with `claim` would hand the session over
    expect(store.get('s1', T0)!.owner).toBe('node-b');
    expect(replicator.claims).toEqual([]);
    // Reads, and a resume of a session this node owns (no claim), still answer.
    expect((await api.get({ sessionId: 's1', parts: [], resume: false }, T0)).found).toBe(true);
    expect((await api.get({ sessionId: 'mine', parts: [], resume: true }, T0)).found).toBe(true);
    expect(replicator.replicated).toEqual(['mine/put']);
  });

  test('a synchronous write whose acknowledgements come once the quorum is lost is answered UNAVAILABLE (applied here; it may be lost)', async () => {
    const { api, store, replicator } = setUp();
    const answer = api.put(put('s1', 1), T0);
    replicator.noQuorum = NO_QUORUM; // before the acknowledgements are read
    await expect(answer).rejects.toThrow(/no quorum: .*: 2 of 1 secondaries acknowledged, and the write is applied on this node, but it may be lost; try another node/);
    expect(store.get('s1', T0)).toBeDefined();
    replicator.noQuorum = undefined;
    await expect(api.put(put('s1', 1), T0)).resolves.toMatchObject({ replicasAcked: 2 });
  });

  test("a resume claims from its peers' copies only when the owner's holders gave them (claimVouched, told who answered and who was down)", async () => {
    const { api, store, replicator } = setUp();
    ownedByB(store);
    const answered = (): PeerCopies => ({ asked: 2, answered: 1, snapshots: [store.snapshot('s1', T0)!], answeredBy: ['node-c'], silent: ['node-b'], down: ['node-b'] });
    replicator.vouched = false;
    replicator.answers = [answered(), answered(), answered()];
    await expect(api.get({ sessionId: 's1', parts: [], resume: true }, T0)).rejects.toThrow(/the session was not resumed: its owner node-b did not answer and is not known to be gone, or none of the nodes that held the session for it answered/);
    expect(store.get('s1', T0)!.owner).toBe('node-b');
    expect(replicator.claims).toEqual([]);
    expect(replicator.vouchAsks.at(-1)).toEqual(['s1', 'node-b', ['node-c'], ['node-b']]);
    replicator.vouched = true;
    replicator.answers = [answered()];
    await api.get({ sessionId: 's1', parts: [], resume: true }, T0);
    expect(replicator.claims).toEqual(['s1@2 from node-b']);
  });
});
