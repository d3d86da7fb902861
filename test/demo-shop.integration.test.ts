/**
 * The demo shop in both of its modes, against two real baton nodes on loopback (the demo
 * itself runs only the mode behind the proxy):
 * - API mode: login writes the `auth` part, the cart follows the `sid` cookie to the other
 *   pod (which resumes the session), and x-baton-* headers from a client are not believed;
 * - behind the proxy: the login is declared in x-baton-auth-subject (no baton call), the
 *   user of a request is its x-baton-auth-subject, and a request that did not come through
 *   a proxy is refused.
 */
import { ShopPod, type ShopAnswer } from '../sidecar/demo/demo-shop';
import { FAST_FAILURE_DETECTION, StaticCluster } from './support/static-cluster';

jest.setTimeout(60_000);

let cluster: StaticCluster | undefined;
const pods: ShopPod[] = [];

beforeAll(async () => {
  cluster = await StaticCluster.start(['a', 'b'], FAST_FAILURE_DETECTION);
  await cluster.waitForAlive(['a', 'b'], 15_000);
});

afterAll(async () => {
  await Promise.all(pods.map((pod) => pod.close()));
  await cluster?.stopAll();
});

async function pod(name: string, node: 'a' | 'b', behindProxy: boolean): Promise<string> {
  const shop = new ShopPod(name, node, cluster!.node(node).process!.apiAddress, behindProxy);
  pods.push(shop);
  return shop.listen();
}

async function call(url: string, method: 'GET' | 'POST', headers: Record<string, string>, body?: unknown) {
  const response = await fetch(url, { method, headers: { 'content-type': 'application/json', ...headers }, body: body === undefined ? null : JSON.stringify(body) });
  return { status: response.status, headers: response.headers, body: (await response.json()) as ShopAnswer & { error?: string } };
}

const LAMP = { sku: 'LAMP-1', name: 'Desk lamp', quantity: 1, unitPriceMinor: 2999 };

describe('API mode', () => {
  it('keeps the login and the cart in baton: the session follows its cookie to the other pod', async () => {
    const [a, b] = [await pod('api-a', 'a', false), await pod('api-b', 'b', false)];
    const login = await call(`${a}/login`, 'POST', {}, { user: 'ada' });
    expect(login.status).toBe(200);
    expect(login.headers.get('x-baton-auth-subject')).toBeNull();
    const cookie = /^sid=[0-9a-f]{32}/.exec(login.headers.get('set-cookie') ?? '')?.[0];
    expect(cookie).toBeDefined();
    expect((await call(`${a}/cart`, 'POST', { cookie: cookie! }, LAMP)).body.replicasAcked).toBe(1);
    const there = await call(`${b}/cart`, 'GET', { cookie: cookie! });
    expect(there.status).toBe(200);
    expect({ user: there.body.user, items: there.body.items, owner: there.body.owner, capture: there.body.capture }).toEqual({
      user: 'ada',
      items: [LAMP],
      owner: 'b',
      capture: undefined,
    });
  });

  it('does not believe x-baton-* headers from a client: no cookie, no session', async () => {
    const a = await pod('api-spoofed', 'a', false);
    const spoofed = await call(`${a}/cart`, 'GET', { 'x-baton-session-id': 'anything', 'x-baton-auth-subject': 'mallory' });
    expect(spoofed.status).toBe(401);
    expect(spoofed.body.error).toBe('no session cookie: log in first');
  });
});

describe('behind the proxy', () => {
  it('declares the login in x-baton-auth-subject and serves the user the proxy names, with the cart in baton', async () => {
    const a = await pod('proxied-a', 'a', true);
    const session = { 'x-baton-session-id': 'proxied-session-1' };
    const login = await call(`${a}/login`, 'POST', { ...session, 'x-baton-session-new': '1' }, { user: 'ada' });
    expect(login.status).toBe(200);
    expect(login.headers.get('x-baton-auth-subject')).toBe('ada');
    expect(login.headers.get('set-cookie')).toBeNull();
    // No login was written by the shop: baton holds no session under this id yet.
    expect(await cluster!.client('a').get('proxied-session-1')).toBeUndefined();
    // What the proxy stores when it mints the id and captures the declared login.
    await cluster!.client('a').putAuth('proxied-session-1', {
      token: '', tokenType: '', subject: 'ada', scopes: ['shop'], expiresAtUnixMs: 0n, claims: {}, refreshToken: '', issuedAtUnixMs: 0n,
    });

    const headers = { ...session, 'x-baton-auth-subject': 'ada', 'x-baton-resumed-from': 'c', 'x-baton-tls-resumed': '1' };
    expect((await call(`${a}/cart`, 'POST', headers, LAMP)).body.replicasAcked).toBe(1);
    const view = await call(`${a}/cart`, 'GET', headers);
    expect({ user: view.body.user, session: view.body.session, items: view.body.items, capture: view.body.capture }).toEqual({
      user: 'ada',
      session: 'proxied-session-1',
      items: [LAMP],
      capture: { sessionId: 'proxied-session-1', sessionNew: '', authSubject: 'ada', resumedFrom: 'c', tlsResumed: '1' },
    });
    expect((await cluster!.client('a').getCart('proxied-session-1'))?.items.map((item) => item.sku)).toEqual(['LAMP-1']);
  });

  it('answers 401 without x-baton-auth-subject and 500 for a request that did not come through a proxy', async () => {
    const a = await pod('proxied-refusals', 'a', true);
    const anonymous = await call(`${a}/cart`, 'GET', { 'x-baton-session-id': 'proxied-session-2' });
    expect([anonymous.status, anonymous.body.error]).toEqual([401, 'not logged in (no x-baton-auth-subject): log in first']);
    const direct = await call(`${a}/login`, 'POST', {}, { user: 'ada' });
    expect(direct.status).toBe(500);
    expect(direct.body.error).toMatch(/^no x-baton-session-id: this shop runs with --behind-proxy/);
  });
});
