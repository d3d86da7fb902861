/**
 * BatonStore's own decisions against an in-memory stand-in for BatonClient (the real
 * sidecar is in express-session.integration.test.ts): which parts a save writes and
 * deletes, the TTL it asks for, what get() takes for a session, the bounded fallback of
 * snapshots by id, errors reaching the callback, and the store without express-session.
 */
import { EventEmitter } from 'node:events';
import { Store as ExpressStore, type SessionData } from 'express-session';
import type { BatonClient, Session } from '../src/client/client';
import { BatonStore } from '../src/client/express-session-store';

type Call = { op: 'get' | 'put' | 'delete' | 'touch'; sid: string; parts?: string[]; ttlSeconds?: number };

/** The calls BatonStore makes, over a map of sessions; records every call. */
class FakeClient {
  readonly sessions = new Map<string, Map<string, Buffer>>();
  readonly calls: Call[] = [];

  async get(sid: string): Promise<Session | undefined> {
    this.calls.push({ op: 'get', sid });
    const parts = this.sessions.get(sid);
    if (parts === undefined) return undefined;
    return {
      sessionId: sid,
      parts: [...parts].map(([name, value]) => ({ name, value, version: 1n, writerNodeId: 'n', updatedAtUnixMs: 0n })),
      ownerNodeId: 'n',
      epoch: 1n,
      expiresAtUnixMs: 0n,
    } as unknown as Session;
  }

  async put(sid: string, parts: Record<string, Uint8Array>, options: { ttlSeconds?: number }): Promise<unknown> {
    this.calls.push({ op: 'put', sid, parts: Object.keys(parts).sort(), ttlSeconds: options.ttlSeconds });
    const session = this.sessions.get(sid) ?? new Map<string, Buffer>();
    for (const [name, value] of Object.entries(parts)) session.set(name, Buffer.from(value));
    this.sessions.set(sid, session);
    return { versions: [], replicasAcked: 0 };
  }

  async delete(sid: string, options: { parts?: readonly string[] } = {}): Promise<boolean> {
    this.calls.push({ op: 'delete', sid, parts: options.parts === undefined ? undefined : [...options.parts].sort() });
    const session = this.sessions.get(sid);
    if (session === undefined) return false;
    if (options.parts === undefined) this.sessions.delete(sid);
    else for (const part of options.parts) session.delete(part);
    return true;
  }

  async touch(sid: string, options: { ttlSeconds?: number }): Promise<{ found: boolean }> {
    this.calls.push({ op: 'touch', sid, ttlSeconds: options.ttlSeconds });
    return { found: this.sessions.has(sid) };
  }

  writes(): Call[] {
    return this.calls.filter((c) => c.op !== 'get');
  }
}

function storeWith(options: { ttlSeconds?: number; maxSnapshots?: number } = {}): { store: BatonStore; fake: FakeClient } {
  const fake = new FakeClient();
  return { store: new BatonStore({ client: fake as unknown as BatonClient, ...options }), fake };
}

function call<T>(fn: (cb: (err?: unknown, result?: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => fn((err, result) => (err ? reject(err) : resolve(result as T))));
}

/** Loads a session as express-session does for a request: get(), then createSession(). */
async function load(store: BatonStore, sid: string): Promise<(SessionData & Record<string, unknown>) | undefined> {
  return (await call<SessionData | undefined>((cb) => store.load(sid, cb))) as (SessionData & Record<string, unknown>) | undefined;
}

function seed(fake: FakeClient, sid: string, fields: Record<string, unknown>): void {
  const cookie = { originalMaxAge: 60_000, expires: new Date(Date.now() + 60_000).toISOString(), httpOnly: true, path: '/' };
  const parts = new Map<string, Buffer>([['f.cookie', Buffer.from(JSON.stringify(cookie))]]);
  for (const [field, value] of Object.entries(fields)) parts.set(`f.${field}`, Buffer.from(JSON.stringify(value)));
  fake.sessions.set(sid, parts);
}

describe('BatonStore', () => {
  it('extends express-session\'s Store and needs exactly one of address and client', () => {
    expect(storeWith().store).toBeInstanceOf(ExpressStore);
    expect(() => new BatonStore({})).toThrow(TypeError);
    expect(() => new BatonStore({ address: '127.0.0.1:1', client: new FakeClient() as unknown as BatonClient })).toThrow(TypeError);
  });

  it('saves only the fields a request changed, and deletes the ones it removed', async () => {
    const { store, fake } = storeWith();
    seed(fake, 's1', { user: 'ann', a: 0, gone: true });
    const session = (await load(store, 's1'))!;
    expect(session).toMatchObject({ user: 'ann', a: 0, gone: true });
    session.a = 1;
    delete session.gone;
    await call((cb) => store.set('s1', session, cb));
    expect(fake.writes()).toEqual([
      { op: 'put', sid: 's1', parts: ['f.a'], ttlSeconds: 60 },
      { op: 'delete', sid: 's1', parts: ['f.gone'] },
    ]);

    // A second save in the same request compares with what the first one wrote.
    fake.calls.length = 0;
    session.user = 'bob';
    await call((cb) => store.set('s1', session, cb));
    expect(fake.writes()).toEqual([{ op: 'put', sid: 's1', parts: ['f.user'], ttlSeconds: 60 }]);
  });

  it('refreshes the TTL when nothing changed, and stores the session again if it went away meanwhile', async () => {
    const { store, fake } = storeWith();
    seed(fake, 's1', { user: 'ann' });
    const session = (await load(store, 's1'))!;
    await call((cb) => store.set('s1', session, cb));
    expect(fake.writes()).toEqual([{ op: 'touch', sid: 's1', ttlSeconds: 60 }]);

    fake.calls.length = 0;
    fake.sessions.delete('s1');
    await call((cb) => store.set('s1', session, cb));
    expect(fake.writes()).toEqual([
      { op: 'touch', sid: 's1', ttlSeconds: 60 },
      { op: 'put', sid: 's1', parts: ['f.cookie', 'f.user'], ttlSeconds: 60 },
    ]);
  });

  it('writes every field of a session it never read, and deletes none', async () => {
    const { store, fake } = storeWith();
    const session = { cookie: { originalMaxAge: null }, user: 'ann', skipped: undefined } as unknown as SessionData;
    await call((cb) => store.set('new', session, cb));
    expect(fake.writes()).toEqual([{ op: 'put', sid: 'new', parts: ['f.cookie', 'f.user'], ttlSeconds: 0 }]);
  });

  it("takes the TTL from the cookie's remaining maxAge, capped at 30 days, else from the option; an expired cookie deletes", async () => {
    const { store, fake } = storeWith({ ttlSeconds: 900 });
    const withMaxAge = (maxAge: number | null) => ({ cookie: { maxAge }, user: 'ann' }) as unknown as SessionData;
    await call((cb) => store.set('s1', withMaxAge(1500), cb));
    await call((cb) => store.set('s2', withMaxAge(90 * 24 * 3600 * 1000), cb));
    await call((cb) => store.set('s3', withMaxAge(null), cb));
    await call((cb) => store.set('s4', withMaxAge(0), cb));
    store.touch('s1', withMaxAge(61_000), () => undefined);
    await new Promise((resolve) => setImmediate(resolve));
    expect(fake.writes().map((c) => [c.op, c.sid, c.ttlSeconds])).toEqual([
      ['put', 's1', 2],
      ['put', 's2', 30 * 24 * 3600],
      ['put', 's3', 900],
      ['delete', 's4', undefined],
      ['touch', 's1', 61],
    ]);
  });

  it('reads only field parts, and takes a session without a cookie part for none', async () => {
    const { store, fake } = storeWith();
    seed(fake, 's1', { user: 'ann' });
    fake.sessions.get('s1')!.set('tls', Buffer.from([1, 2, 3]));
    fake.sessions.get('s1')!.set('f.user.49d', Buffer.from('7'));
    fake.sessions.get('s1')!.set('f.__proto__', Buffer.from('{"polluted": true}'));
    const read = (await call<SessionData | null>((cb) => store.get('s1', cb))) as unknown as Record<string, unknown>;
    expect(read).toEqual({ cookie: expect.any(Object), user: 'ann', userId: 7, ['__proto__']: { polluted: true } });
    expect(Object.getPrototypeOf(read)).toBe(Object.prototype);
    expect(read.polluted).toBeUndefined();
    fake.sessions.get('s1')!.delete('f.cookie');
    expect(await call((cb) => store.get('s1', cb))).toBeNull();
    expect(await call((cb) => store.get('missing', cb))).toBeNull();
  });

  it('hands a part that is not JSON to the callback as an error', async () => {
    const { store, fake } = storeWith();
    seed(fake, 's1', {});
    fake.sessions.get('s1')!.set('f.user', Buffer.from('{oops'));
    await expect(call((cb) => store.get('s1', cb))).rejects.toThrow(SyntaxError);
  });

  it('keeps the fallback snapshots by id for at most maxSnapshots ids', async () => {
    const { store, fake } = storeWith({ maxSnapshots: 2 });
    for (const sid of ['s1', 's2', 's3']) seed(fake, sid, { user: sid });
    for (const sid of ['s1', 's2', 's3']) await call((cb) => store.get(sid, cb));
    // Objects the store never returned (as fastify's session plugin passes): compared with the id's last read.
    const copy = (sid: string) => ({ cookie: JSON.parse(fake.sessions.get(sid)!.get('f.cookie')!.toString()), user: sid }) as unknown as SessionData;
    fake.calls.length = 0;
    await call((cb) => store.set('s3', copy('s3'), cb));
    await call((cb) => store.set('s2', copy('s2'), cb));
    // s1's snapshot was dropped: every field is written.
    await call((cb) => store.set('s1', copy('s1'), cb));
    expect(fake.writes().map((c) => [c.op, c.sid, c.parts])).toEqual([
      ['touch', 's3', undefined],
      ['touch', 's2', undefined],
      ['put', 's1', ['f.cookie', 'f.user']],
    ]);
  });

  it('destroys the whole session', async () => {
    const { store, fake } = storeWith();
    seed(fake, 's1', { user: 'ann' });
    await call((cb) => store.destroy('s1', cb));
    expect(fake.sessions.has('s1')).toBe(false);
    expect(fake.writes()).toEqual([{ op: 'delete', sid: 's1', parts: undefined }]);
  });

  it('is a plain EventEmitter with the same get/set/destroy when express-session is not installed', async () => {
    let Isolated: typeof BatonStore | undefined;
    jest.isolateModules(() => {
      jest.doMock('express-session', () => {
        throw Object.assign(new Error("Cannot find module 'express-session' from 'src/client/express-session-store.ts'"), { code: 'MODULE_NOT_FOUND' });
      });
      Isolated = (require('../src/client/express-session-store') as typeof import('../src/client/express-session-store')).BatonStore;
    });
    const fake = new FakeClient();
    const store = new Isolated!({ client: fake as unknown as BatonClient });
    expect(store).toBeInstanceOf(EventEmitter);
    expect(store).not.toBeInstanceOf(ExpressStore);
    expect((store as unknown as { load?: unknown }).load).toBeUndefined();
    const session = { cookie: { maxAge: 5000 }, user: 'ann' } as unknown as SessionData;
    await call((cb) => store.set('s1', session, cb));
    expect(await call((cb) => store.get('s1', cb))).toEqual({ cookie: { maxAge: 5000 }, user: 'ann' });
    await call((cb) => store.destroy('s1', cb));
    expect(fake.sessions.size).toBe(0);
  });
});
