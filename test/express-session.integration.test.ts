/**
 * BatonStore under a real express application (test/support/express-session-app.js, a child
 * process) and real sidecars, over HTTP with cookies: fields set by one request are seen by
 * the next and stored one part each; two concurrent requests that change different fields
 * both keep their change (and a store that writes the whole session loses one, which shows
 * the test can fail); the cookie's maxAge is the session's TTL; logout destroys it; and
 * after the first app's sidecar is SIGKILLed, the same cookie on a second app beside the
 * other sidecar of the cluster resumes the session.
 *
 * The order of the concurrent saves is set by the test (the app holds each request until
 * told to answer), not by timing.
 */
import * as path from 'node:path';
import { BatonClient, type Session } from '../src/client/client';
import { spawnChild, type ChildHandle } from '../bench/support/child-process';
import { childEnv, startSidecar, type SidecarProcess } from './support/sidecar-process';
import { FAST_FAILURE_DETECTION, pollUntil, StaticCluster } from './support/static-cluster';

const APP = path.join(__dirname, 'support', 'express-session-app.js');
const APP_START_TIMEOUT_MS = 20_000;
const MAX_AGE_MS = 120_000;

interface App {
  readonly url: string;
  readonly child: ChildHandle;
}

interface Answer {
  status: number;
  body: any;
}

const apps: App[] = [];
let sidecar: SidecarProcess | undefined;
let cluster: StaticCluster | undefined;
let client: BatonClient | undefined;

afterEach(async () => {
  const stopping = apps.splice(0);
  await Promise.all(stopping.map((app) => app.child.stop('SIGTERM', 5000)));
  client?.close();
  client = undefined;
  await sidecar?.stop();
  sidecar = undefined;
  await cluster?.stopAll();
  cluster = undefined;
});

async function startApp(apiAddress: string, env: Record<string, string> = {}): Promise<App> {
  const child = spawnChild({
    name: 'express-session app',
    command: process.execPath,
    args: [APP],
    env: childEnv({ APP_BATON_API: apiAddress, APP_SECRET: 'shared secret', APP_MAX_AGE_MS: String(MAX_AGE_MS), ...env }),
  });
  const app = { url: '', child };
  apps.push(app);
  const port = await child.waitFor(
    (line, stream) => (stream === 'stdout' && line.startsWith('{"listening"') ? (JSON.parse(line) as { listening: number }).listening : undefined),
    APP_START_TIMEOUT_MS,
    'the app listening',
  );
  return Object.assign(app, { url: `http://127.0.0.1:${port}` });
}

/** A browser of one session: keeps the session cookie the app sets. */
class Browser {
  cookie: string | undefined;

  async request(app: App, method: 'GET' | 'POST', route: string): Promise<Answer> {
    const response = await fetch(app.url + route, { method, headers: this.cookie === undefined ? {} : { cookie: this.cookie } });
    const setCookie = response.headers.getSetCookie().find((c) => c.startsWith('connect.sid='));
    if (setCookie !== undefined) this.cookie = setCookie.split(';')[0];
    return { status: response.status, body: await response.json() };
  }
}

function setRoute(field: string, value: unknown): string {
  return `/set?field=${encodeURIComponent(field)}&value=${encodeURIComponent(JSON.stringify(value))}`;
}

function partNames(session: Session | undefined): string[] {
  return (session?.parts ?? []).map((p) => p.name).sort();
}

async function oneSidecarAndApp(env: Record<string, string> = {}): Promise<{ app: App; client: BatonClient }> {
  sidecar = await startSidecar();
  client = new BatonClient(sidecar.apiAddress);
  return { app: await startApp(sidecar.apiAddress, env), client };
}

describe('BatonStore with express-session over HTTP', () => {
  it('keeps fields set by one request for the next, one part per field, and removes a deleted field', async () => {
    const { app, client } = await oneSidecarAndApp();
    const browser = new Browser();
    const login = await browser.request(app, 'POST', setRoute('user', { name: 'ann', roles: ['admin'] }));
    expect(login.status).toBe(200);
    expect(browser.cookie).toBeDefined();
    await browser.request(app, 'POST', setRoute('lastPage', '/cart'));

    const later = await browser.request(app, 'GET', '/session');
    expect(later.body.id).toBe(login.body.id);
    expect(later.body.session.user).toEqual({ name: 'ann', roles: ['admin'] });
    expect(later.body.session.lastPage).toBe('/cart');
    const stored = await client.get(login.body.id);
    expect(partNames(stored)).toEqual(['f.cookie', 'f.last.50age', 'f.user']);
    expect(JSON.parse(Buffer.from(stored!.parts.find((p) => p.name === 'f.user')!.value).toString())).toEqual({ name: 'ann', roles: ['admin'] });

    await browser.request(app, 'POST', '/remove?field=lastPage');
    expect(partNames(await client.get(login.body.id))).toEqual(['f.cookie', 'f.user']);
    expect((await browser.request(app, 'GET', '/session')).body.session.lastPage).toBeUndefined();
  });

  it('leaves parts that are not fields alone and does not take a baton session without a cookie for one', async () => {
    const { app, client } = await oneSidecarAndApp();
    const browser = new Browser();
    const { body } = await browser.request(app, 'POST', setRoute('user', 'ann'));
    await client.put(body.id, { 'other.part': Buffer.from('kept') });
    await browser.request(app, 'POST', setRoute('user', 'bob'));
    const stored = await client.get(body.id);
    expect(partNames(stored)).toEqual(['f.cookie', 'f.user', 'other.part']);
    expect((await browser.request(app, 'GET', '/session')).body.session.user).toBe('bob');

    await client.delete(body.id, { parts: ['f.cookie'] });
    const again = await browser.request(app, 'GET', '/session');
    expect(again.body.id).not.toBe(body.id);
    expect(again.body.session.user).toBeUndefined();
  });

  it.each([
    ['this store', {}, { a: 1, b: 2 }],
    // B's save writes its stale copy of a over A's change.
    ['a store that writes the whole session', { APP_STORE: 'whole' }, { a: 0, b: 2 }],
    // B's save is compared with the read made after A's save, so its stale a looks changed.
    ['a store that compares with the last read of the id', { APP_STORE: 'last-read' }, { a: 0, b: 2 }],
  ])('two concurrent requests changing different fields: %s', async (_name, env, expected) => {
    const { app } = await oneSidecarAndApp(env);
    const browser = new Browser();
    await browser.request(app, 'POST', setRoute('user', 'ann'));
    await browser.request(app, 'POST', setRoute('a', 0));
    await browser.request(app, 'POST', setRoute('b', 0));
    // Both requests read the session before either saves; A saves first, then B.
    const a = browser.request(app, 'POST', `/hold?field=a&value=1&gate=A`);
    const b = browser.request(app, 'POST', `/hold?field=b&value=2&gate=B`);
    const outsider = new Browser();
    await pollUntil('both requests held', async () => (await outsider.request(app, 'GET', '/held')).body.length === 2, 10_000);
    await outsider.request(app, 'POST', '/open?gate=A');
    expect((await a).status).toBe(200);
    // Another request reads the session between the two saves.
    expect((await browser.request(app, 'GET', '/session')).body.session.a).toBe(1);
    await outsider.request(app, 'POST', '/open?gate=B');
    expect((await b).status).toBe(200);

    const { session } = (await browser.request(app, 'GET', '/session')).body;
    expect({ a: session.a, b: session.b }).toEqual(expected);
    expect(session.user).toBe('ann');
  });

  it("stores the session with the cookie's maxAge as its idle TTL", async () => {
    const { app, client } = await oneSidecarAndApp();
    const browser = new Browser();
    const before = Date.now();
    const { body } = await browser.request(app, 'POST', setRoute('user', 'ann'));
    const after = Date.now();
    const stored = await client.get(body.id);
    const expiresAt = Number(stored!.expiresAtUnixMs);
    // The TTL is the cookie's remaining maxAge at the save, rounded up to a second.
    expect(expiresAt).toBeGreaterThanOrEqual(before + MAX_AGE_MS - 5000);
    expect(expiresAt).toBeLessThanOrEqual(after + MAX_AGE_MS + 1000);
  });

  it('destroys the session on logout', async () => {
    const { app, client } = await oneSidecarAndApp();
    const browser = new Browser();
    const { body } = await browser.request(app, 'POST', setRoute('user', 'ann'));
    expect(await client.get(body.id)).toBeDefined();
    expect((await browser.request(app, 'POST', '/logout')).body).toEqual({ destroyed: true });
    expect(await client.get(body.id)).toBeUndefined();
    const after = await browser.request(app, 'GET', '/session');
    expect(after.body.id).not.toBe(body.id);
    expect(after.body.session.user).toBeUndefined();
  });

  it("resumes the session on a second app after the first app's sidecar is SIGKILLed", async () => {
    cluster = await StaticCluster.start(['a', 'b'], ['--replicas', '1', '--partitions', '64', ...FAST_FAILURE_DETECTION]);
    await cluster.waitForAlive(['a', 'b'], 10_000);
    // Saves through the first app wait for the other node's copy, so none is lost with its node.
    const first = await startApp(cluster.node('a').process!.apiAddress, { APP_MIN_REPLICAS: '1' });
    const second = await startApp(cluster.node('b').process!.apiAddress);
    const browser = new Browser();
    const { body } = await browser.request(first, 'POST', setRoute('user', 'ann'));
    await browser.request(first, 'POST', setRoute('cart', ['book']));

    expect(await cluster.kill('a')).toBeNull();
    const resumed = await browser.request(second, 'GET', '/session');
    expect(resumed.body.id).toBe(body.id);
    expect(resumed.body.session.user).toBe('ann');
    expect(resumed.body.session.cart).toEqual(['book']);
    expect((await cluster.client('b').get(body.id))!.ownerNodeId).toBe('b');

    // The session goes on on the second app.
    await browser.request(second, 'POST', setRoute('cart', ['book', 'pen']));
    expect((await browser.request(second, 'GET', '/session')).body.session).toMatchObject({ user: 'ann', cart: ['book', 'pen'] });
  });
});
