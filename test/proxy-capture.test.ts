/**
 * The proxy's capture logic against an in-memory session store and virtual time: which
 * session a request gets, what is written when, and what the web server is told. Also
 * SessionApi.resumeSession, the resume path the proxy uses, on two stores.
 */
import pino from 'pino';
import { encodeAuth, withBearer } from '../src/capture/auth-capture';
import { SessionApi, type PeerCopies, type Replicator } from '../src/core/session-api';
import { AuthState, TlsSessionState } from '../src/gen/baton/v1/parts';
import { BuzHash } from '../src/store/buzhash';
import { HybridClock } from '../src/store/hybrid-clock';
import { DEFAULT_STORE_CONFIG, SessionStore } from '../src/store/store';
import { UnavailableError } from '../src/wire/errors';
import { ProxyCapture, ROTATED_GRACE_SECONDS, TOUCH_INTERVAL_MS, type ConnectionCapture, type RequestSession } from '../sidecar/proxy/proxy-capture';
import { NO_PROXY_OBSERVER, type CaptureKind, type ProxyObserver } from '../sidecar/metrics/proxy-observer';
import { sessionApiStore, type OwnedSession, type ProxySessionStore, type ResumedSession } from '../sidecar/proxy/proxy-sessions';

const T0 = 1_700_000_000_000;
const silent = pino({ level: 'silent' });

/** A replicator with one live secondary that acknowledges at once and no peer holding anything, changed by `script`. */
function scriptedReplicator(script: Partial<Replicator>): Replicator {
  return {
    replicas: 1,
    secondariesFor: () => 1,
    replicate: () => 1,
    waitForAcks: () => Promise.resolve(1),
    sendQueueRoom: () => undefined,
    fetchFromPeers: () => Promise.resolve({ asked: 0, answered: 0, snapshots: [] }),
    replicateClaim: () => undefined,
    ...script,
  };
}

class MemoryStore implements ProxySessionStore {
  readonly parts = new Map<string, Map<string, Uint8Array>>();
  readonly writes: { id: string; names: string[] }[] = [];
  readonly touches: string[] = [];
  /** Sessions this node owns: written here or resumed here. The others are another node's. */
  readonly ownedHere = new Set<string>();
  readonly resumes: string[] = [];
  previousOwner: string | undefined;
  unavailable = false;
  refuseWrites = false;

  owned(sessionId: string): OwnedSession | undefined {
    return this.ownedHere.has(sessionId) ? { auth: this.parts.get(sessionId)?.get('auth') } : undefined;
  }
  resume(sessionId: string): Promise<ResumedSession> {
    this.resumes.push(sessionId);
    if (this.unavailable) return Promise.reject(new UnavailableError('no peer answered'));
    const parts = this.parts.get(sessionId);
    if (parts !== undefined) this.ownedHere.add(sessionId);
    return Promise.resolve({ found: parts !== undefined, auth: parts?.get('auth'), previousOwner: parts === undefined ? undefined : this.previousOwner });
  }
  put(sessionId: string, parts: readonly { name: string; value: Uint8Array }[]): Promise<void> {
    if (this.refuseWrites) return Promise.reject(new Error('over the memory budget'));
    const session = this.parts.get(sessionId) ?? new Map<string, Uint8Array>();
    for (const p of parts) session.set(p.name, p.value);
    this.parts.set(sessionId, session);
    this.ownedHere.add(sessionId);
    this.writes.push({ id: sessionId, names: parts.map((p) => p.name) });
    return Promise.resolve();
  }
  readPart(sessionId: string, name: string): Uint8Array | undefined {
    return this.parts.get(sessionId)?.get(name);
  }
  touch(sessionId: string): void {
    this.touches.push(sessionId);
  }
  readonly rotations: { from: string; to: string; graceSeconds: number }[] = [];
  rotate(fromId: string, toId: string, auth: Uint8Array, graceSeconds: number): Promise<boolean> {
    const old = this.parts.get(fromId);
    if (old === undefined) return Promise.resolve(false);
    this.parts.set(toId, new Map([...old, ['auth', auth]]));
    this.ownedHere.add(toId);
    this.rotations.push({ from: fromId, to: toId, graceSeconds });
    return Promise.resolve(true);
  }
}

function plainConnection(): ConnectionCapture {
  return { tls: undefined, clientCertSubject: undefined, tlsWritten: new Set() };
}

function tlsConnection(resumed = false): ConnectionCapture {
  return {
    tls: { protocol: 'TLSv1.3', cipher: 'TLS_AES_128_GCM_SHA256', servername: 'shop', alpnProtocol: 'h2', session: undefined, resumed, handshakeAtUnixMs: T0 },
    clientCertSubject: undefined,
    tlsWritten: new Set(),
  };
}

function setup(observer: ProxyObserver = NO_PROXY_OBSERVER, rotateOnLogin = true) {
  const store = new MemoryStore();
  let now = T0;
  let counter = 0;
  const random = (n: number) => Uint8Array.from({ length: n }, () => ++counter % 256);
  const capture = new ProxyCapture(store, 'baton_sid', observer, silent, random, () => now, rotateOnLogin);
  return { store, capture, advance: (ms: number) => (now += ms) };
}

describe('ProxyCapture', () => {
  test('no cookie: a new id, stored at once (an empty auth part), marked new for the web server', async () => {
    const { store, capture } = setup();
    const session = await capture.open({}, plainConnection());
    expect(session.minted).toBe(true);
    expect(session.id).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(store.writes).toEqual([{ id: session.id, names: ['auth'] }]);
    expect(capture.upstreamHeaders(session, plainConnection())).toMatchObject({ sessionId: session.id, minted: true, authSubject: undefined });
  });

  test('a known cookie resumes the session with its login; an unknown one gets a new id', async () => {
    const { store, capture } = setup();
    const id = 'AAAAAAAAAAAAAAAAAAAAAA';
    await store.put(id, [{ name: 'auth', value: encodeAuth(AuthState.fromPartial({ subject: 'alice', scopes: ['r'] })) }]);
    store.ownedHere.delete(id); // pod-0's session
    store.previousOwner = 'pod-0';
    const resumed = await capture.open({ cookie: `baton_sid=${id}` }, plainConnection());
    expect(resumed).toMatchObject({ id, minted: false, previousOwner: 'pod-0' });
    expect(capture.upstreamHeaders(resumed, plainConnection())).toMatchObject({ resumedFrom: 'pod-0', authSubject: 'alice', authScopes: ['r'] });
    const unknown = await capture.open({ cookie: 'baton_sid=BBBBBBBBBBBBBBBBBBBBBB' }, plainConnection());
    expect(unknown.minted).toBe(true);
    expect(unknown.id).not.toBe('BBBBBBBBBBBBBBBBBBBBBB');
  });

  test('a session owned here is read locally on every request, never resumed; one owned elsewhere is resumed once', async () => {
    const outcomes: string[] = [];
    const { store, capture } = setup({ ...NO_PROXY_OBSERVER, resume: (outcome) => outcomes.push(outcome) });
    const minted = await capture.open({}, plainConnection());
    const connection = plainConnection();
    for (let i = 0; i < 3; i++) expect(await capture.open({ cookie: `baton_sid=${minted.id}` }, connection)).toMatchObject({ id: minted.id, minted: false, previousOwner: undefined });
    expect(store.resumes).toEqual([]);

    const elsewhere = 'CCCCCCCCCCCCCCCCCCCCCC';
    await store.put(elsewhere, [{ name: 'auth', value: encodeAuth(AuthState.fromPartial({ subject: 'bob' })) }]);
    store.ownedHere.delete(elsewhere);
    store.previousOwner = 'pod-0';
    const first = await capture.open({ cookie: `baton_sid=${elsewhere}` }, connection);
    const second = await capture.open({ cookie: `baton_sid=${elsewhere}` }, connection);
    expect(store.resumes).toEqual([elsewhere]);
    expect(outcomes).toEqual(['peer']);
    expect(first.previousOwner).toBe('pod-0');
    expect(second.previousOwner).toBeUndefined();
    expect(capture.upstreamHeaders(second, connection).authSubject).toBe('bob');
  });

  test('a store that cannot tell whether the session exists fails the request (no silent new session)', async () => {
    const { store, capture } = setup();
    store.unavailable = true;
    await expect(capture.open({ cookie: 'baton_sid=AAAAAAAAAAAAAAAAAAAAAA' }, plainConnection())).rejects.toBeInstanceOf(UnavailableError);
  });

  test('the tls part is written once per connection and session; the handshake’s resumption reaches the web server', async () => {
    const { store, capture } = setup();
    const connection = tlsConnection(true);
    const first = await capture.open({}, connection);
    const cookie = `baton_sid=${first.id}`;
    await capture.open({ cookie }, connection);
    await capture.open({ cookie }, connection);
    expect(store.writes.filter((w) => w.names.includes('tls'))).toHaveLength(1);
    expect(TlsSessionState.decode(store.parts.get(first.id)!.get('tls')!)).toMatchObject({ protocol: 'TLSv1.3', alpnProtocol: 'h2', resumed: true });
    await capture.open({ cookie }, tlsConnection(false));
    expect(store.writes.filter((w) => w.names.includes('tls'))).toHaveLength(2);
    expect(capture.upstreamHeaders(first, connection).tlsResumed).toBe(true);
  });

  test('login and logout from the answer; the login ends at its expiry', async () => {
    const { store, capture, advance } = setup();
    const session = await capture.open({}, plainConnection());
    capture.answer(session, { 'x-baton-auth-subject': 'alice', 'x-baton-auth-expires': String(T0 / 1000 + 60) });
    await Promise.resolve();
    expect(AuthState.decode(store.parts.get(session.id)!.get('auth')!).subject).toBe('alice');
    const again = await capture.open({ cookie: `baton_sid=${session.id}` }, plainConnection());
    expect(capture.upstreamHeaders(again, plainConnection()).authSubject).toBe('alice');
    advance(60_000);
    expect(capture.upstreamHeaders(again, plainConnection()).authSubject).toBeUndefined();
    capture.answer(again, { 'x-baton-auth-subject': '' });
    await Promise.resolve();
    expect(AuthState.decode(store.parts.get(session.id)!.get('auth')!).subject).toBe('');
  });

  test('a login on a session the client brought moves it to a new id; the old id keeps the pre-login session for the grace', async () => {
    const kinds: CaptureKind[] = [];
    const { store, capture } = setup({ ...NO_PROXY_OBSERVER, capture: (kind) => kinds.push(kind) });
    const first = await capture.open({}, plainConnection());
    store.parts.get(first.id)!.set('cart', Buffer.from('3 apples'));
    const planted = first.id; // an id the client (or someone who planted it) already knew
    const request = await capture.open({ cookie: `baton_sid=${planted}` }, plainConnection());
    await capture.answer(request, { 'x-baton-auth-subject': 'alice' });
    expect(request.rotatedFrom).toBe(planted);
    expect(request.id).not.toBe(planted);
    expect(request.id).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(store.rotations).toEqual([{ from: planted, to: request.id, graceSeconds: ROTATED_GRACE_SECONDS }]);
    expect(AuthState.decode(store.parts.get(request.id)!.get('auth')!).subject).toBe('alice');
    expect(Buffer.from(store.parts.get(request.id)!.get('cart')!).toString()).toBe('3 apples');
    expect(AuthState.decode(store.parts.get(planted)!.get('auth')!).subject).toBe(''); // the old id is not logged in
    expect(kinds).toContain('session_rotated');
    // The same subject declared again (a web server that repeats it on every answer): no new id.
    const later = await capture.open({ cookie: `baton_sid=${request.id}` }, plainConnection());
    await capture.answer(later, { 'x-baton-auth-subject': 'alice' });
    expect(later.rotatedFrom).toBeUndefined();
    expect(later.id).toBe(request.id);
    // Another subject on the same session: a new id again.
    await capture.answer(later, { 'x-baton-auth-subject': 'bob' });
    expect(later.rotatedFrom).toBe(request.id);
    expect(store.rotations).toHaveLength(2);
  });

  test('no new id for a session minted by this very request, for an upgrade, or when rotation is off', async () => {
    const { store, capture } = setup();
    const minted = await capture.open({}, plainConnection());
    await capture.answer(minted, { 'x-baton-auth-subject': 'alice' });
    expect(minted.rotatedFrom).toBeUndefined();
    const upgrade = await capture.open({ cookie: `baton_sid=${minted.id}` }, plainConnection());
    await capture.answer(upgrade, { 'x-baton-auth-subject': 'bob' }, false);
    expect(upgrade.rotatedFrom).toBeUndefined();
    expect(store.rotations).toHaveLength(0);

    const off = setup(NO_PROXY_OBSERVER, false);
    const session = await off.capture.open({}, plainConnection());
    const again = await off.capture.open({ cookie: `baton_sid=${session.id}` }, plainConnection());
    await off.capture.answer(again, { 'x-baton-auth-subject': 'alice' });
    expect(again.id).toBe(session.id);
    expect(AuthState.decode(off.store.parts.get(session.id)!.get('auth')!).subject).toBe('alice');
  });

  test('a bearer token is written when it changes, not on every request', async () => {
    const kinds: CaptureKind[] = [];
    const { store, capture } = setup({ ...NO_PROXY_OBSERVER, capture: (kind) => kinds.push(kind) });
    const session = await capture.open({ authorization: 'Bearer t1' }, plainConnection());
    const cookie = `baton_sid=${session.id}`;
    await capture.open({ cookie, authorization: 'Bearer t1' }, plainConnection());
    await capture.open({ cookie, authorization: 'Bearer t2' }, plainConnection());
    expect(store.writes.map((w) => w.names)).toEqual([['auth'], ['auth']]);
    expect(AuthState.decode(store.parts.get(session.id)!.get('auth')!)).toMatchObject(withBearer(undefined, 't2', {}));
    expect(kinds.filter((k) => k === 'bearer')).toHaveLength(2);
  });

  test('an active session is touched at most once per interval', async () => {
    const { store, capture, advance } = setup();
    const session = await capture.open({}, plainConnection());
    const cookie = `baton_sid=${session.id}`;
    for (let i = 0; i < 5; i++) await capture.open({ cookie }, plainConnection());
    expect(store.touches).toHaveLength(0);
    advance(TOUCH_INTERVAL_MS);
    for (let i = 0; i < 5; i++) await capture.open({ cookie }, plainConnection());
    expect(store.touches).toEqual([session.id]);
  });

  test('a refused write is counted and does not fail the request', async () => {
    const kinds: CaptureKind[] = [];
    const { store, capture } = setup({ ...NO_PROXY_OBSERVER, capture: (kind) => kinds.push(kind) });
    store.refuseWrites = true;
    const session = await capture.open({}, plainConnection());
    expect(session.minted).toBe(true);
    expect(kinds).toContain('write_failed');
  });
});

describe('SessionApi.resumeSession', () => {
  const LIMITS = { maxValueBytes: 64 * 1024, maxPartsPerSession: 64 };
  const store = (nodeId: string) => new SessionStore({ ...DEFAULT_STORE_CONFIG, nodeId, partitions: 16 }, new BuzHash('proxy-test'), new HybridClock());

  function peersHolding(source: SessionStore): Replicator {
    return scriptedReplicator({
      replicas: 0,
      replicate: () => undefined,
      waitForAcks: () => Promise.resolve(0),
      fetchFromPeers: (id): Promise<PeerCopies> => {
        const snapshot = source.snapshot(id, T0);
        return Promise.resolve({ asked: 1, answered: 1, snapshots: snapshot === undefined ? [] : [snapshot] });
      },
    });
  }

  test('says which node owned the session before this one claimed it, once', async () => {
    const a = store('node-a');
    a.put('s', [{ name: 'auth', value: encodeAuth(AuthState.fromPartial({ subject: 'alice' })) }], 0, T0);
    const b = new SessionApi(store('node-b'), LIMITS, peersHolding(a), undefined, () => T0);
    const first = await b.resumeSession({ sessionId: 's', parts: ['auth'], resume: true }, T0);
    expect(first.previousOwner).toBe('node-a');
    expect(first.response.found).toBe(true);
    expect(first.response.session!.ownerNodeId).toBe('node-b');
    const second = await b.resumeSession({ sessionId: 's', parts: [], resume: true }, T0);
    expect(second.previousOwner).toBeUndefined();
    const missing = await b.resumeSession({ sessionId: 'none', parts: [], resume: true }, T0);
    expect(missing).toEqual({ response: { found: false, session: undefined }, previousOwner: undefined });
  });

  test('sessionApiStore.owned: a local read that answers only for sessions this node owns', async () => {
    const a = store('node-a');
    a.put('s', [{ name: 'auth', value: encodeAuth(AuthState.fromPartial({ subject: 'alice' })) }], 0, T0);
    const bStore = store('node-b');
    bStore.merge(a.snapshot('s', T0)!, T0); // a secondary copy of node-a's session
    const proxyStore = sessionApiStore(new SessionApi(bStore, LIMITS, peersHolding(a), undefined, () => T0), 'node-b', () => T0);
    expect(proxyStore.owned('s')).toBeUndefined();
    expect(proxyStore.owned('none')).toBeUndefined();
    expect((await proxyStore.resume('s')).previousOwner).toBe('node-a');
    expect(AuthState.decode(proxyStore.owned('s')!.auth!).subject).toBe('alice');
  });

  test('sessionApiStore.rotate: every part under the new id with the new auth, the old id expiring after the grace', async () => {
    // A node whose peers are all gone: the durable write is stored here at once.
    const alone = scriptedReplicator({ secondariesFor: () => 0, waitForAcks: () => Promise.resolve(0) });
    const api = new SessionApi(store('node-a'), LIMITS, alone, undefined, () => T0);
    const sessions = sessionApiStore(api, 'node-a', () => T0);
    api.put({ sessionId: 'before-login', parts: [{ name: 'basket', value: Buffer.from('3 apples') }, { name: 'auth', value: Buffer.alloc(0) }], ttlSeconds: 0, minReplicas: 0 }, T0);
    const auth = encodeAuth({ ...AuthState.fromPartial({}), subject: 'alice' });
    expect(await sessions.rotate('before-login', 'after-login', auth, 60)).toBe(true);
    const read = (id: string) => api.get({ sessionId: id, parts: [], resume: false }, T0) as Awaited<ReturnType<SessionApi['get']>>;
    const moved = read('after-login').session!;
    expect(Object.fromEntries(moved.parts.map((p) => [p.name, Buffer.from(p.value).toString('hex')]))).toEqual({
      basket: Buffer.from('3 apples').toString('hex'),
      auth: Buffer.from(auth).toString('hex'),
    });
    const old = read('before-login').session!;
    expect(old.parts.find((p) => p.name === 'auth')!.value).toHaveLength(0);
    expect(Number(old.expiresAtUnixMs) - T0).toBeGreaterThanOrEqual(60_000);
    expect(Number(old.expiresAtUnixMs) - T0).toBeLessThan(61_000); // not the default TTL
    expect(await sessions.rotate('never-held', 'other', auth, 60)).toBe(false);
    expect(read('other').found).toBe(false);
  });

  test('a login written under a new id that no peer can be asked about (the look-up before a synchronous write fails) is stored here all the same', async () => {
    const silentPeers = scriptedReplicator({ holdsEverySessionOf: () => false, fetchFromPeers: () => Promise.resolve({ asked: 2, answered: 0, snapshots: [] }) });
    const api = new SessionApi(store('node-a'), LIMITS, silentPeers, undefined, () => T0);
    await expect(api.put({ sessionId: 'direct', parts: [{ name: 'basket', value: Buffer.from('x') }], ttlSeconds: 0, minReplicas: 1 }, T0)).rejects.toThrow(/the write was not made/);
    const sessions = sessionApiStore(api, 'node-a', () => T0);
    const auth = encodeAuth(AuthState.fromPartial({ subject: 'alice' }));
    await sessions.put('after-login', [{ name: 'auth', value: auth }], true);
    const stored = api.get({ sessionId: 'after-login', parts: [], resume: false }, T0) as Awaited<ReturnType<SessionApi['get']>>;
    expect(AuthState.decode(stored.session!.parts[0]!.value).subject).toBe('alice');
  });

  test('a declared login waits for a secondary before its answer goes on; with no live secondary it does not wait', async () => {
    let acknowledge: ((acked: number) => void) | undefined;
    const asked: number[] = [];
    let live = 1;
    const replicator = scriptedReplicator({
      replicas: 0,
      secondariesFor: () => live,
      replicate: () => 7,
      waitForAcks: (_ticket, needed) => {
        asked.push(needed);
        return new Promise((resolve) => (acknowledge = resolve));
      },
    });
    const api = new SessionApi(store('node-a'), LIMITS, replicator, undefined, () => T0);
    const capture = new ProxyCapture(sessionApiStore(api, 'node-a', () => T0), 'baton_sid', NO_PROXY_OBSERVER, silent, undefined, () => T0);
    const session = { id: 'login-1', minted: false, auth: undefined, previousOwner: undefined };
    expect(capture.answer(session, {})).toBeUndefined(); // nothing declared: nothing to wait for

    let answered = false;
    const pending = capture.answer(session, { 'x-baton-auth-subject': 'alice' })!.then(() => (answered = true));
    await new Promise((resolve) => setImmediate(resolve));
    expect(asked).toEqual([1]);
    expect(answered).toBe(false);
    acknowledge!(1);
    await pending;
    expect(answered).toBe(true);

    live = 0; // the other pods are gone: the login is stored here and answered at once
    const second = { id: 'login-2', minted: false, auth: undefined, previousOwner: undefined } as RequestSession;
    await capture.answer(second, { 'x-baton-auth-subject': 'bob' });
    expect(asked).toEqual([1]);
    expect(second.rotatedFrom).toBe('login-2'); // a login on an id the client brought: a new id
    const stored = api.get({ sessionId: second.id, parts: ['auth'], resume: false }, T0) as Awaited<ReturnType<SessionApi['get']>>;
    expect(AuthState.decode(stored.session!.parts[0]!.value).subject).toBe('bob');
  });
});
