/**
 * The capture proxy across pods: three real `baton sidecar` processes on loopback, each
 * proxying to the same web server (in this process). A user logs in through node a; a is
 * killed with SIGKILL; the user's next request, on node b, arrives at the web server
 * logged in and says which node it was resumed from. Waits are bounded polls.
 */
import * as http from 'node:http';
import { FAST_FAILURE_DETECTION, pollUntil, StaticCluster } from './support/static-cluster';
import { TestUpstream } from './support/proxy-upstream';
import type { SidecarProcess } from './support/sidecar-process';

let upstream: TestUpstream;
let cluster: StaticCluster | undefined;

function proxyUrl(p: SidecarProcess | undefined): string {
  const entry = p?.logs.find((l) => l.msg === 'baton node started');
  if (typeof entry?.proxy_port !== 'number') throw new Error('the node logged no proxy_port');
  return `http://127.0.0.1:${entry.proxy_port}`;
}

function get(url: string, headers: http.OutgoingHttpHeaders = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { headers, agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
      })
      .on('error', reject);
  });
}

beforeAll(async () => {
  upstream = await TestUpstream.start();
});

afterAll(async () => {
  await cluster?.stopAll();
  await upstream?.close();
});

test('login on node a; a is SIGKILLed; the next request on node b arrives logged in and resumed from a', async () => {
  cluster = await StaticCluster.start(['a', 'b', 'c'], ['--proxy-listen', '127.0.0.1:0', '--proxy-upstream', upstream.url, ...FAST_FAILURE_DETECTION]);
  await cluster.waitForAlive(['a', 'b', 'c'], 15_000);
  const login = await get(`${proxyUrl(cluster.node('a').process)}/login`);
  expect(login.status).toBe(200);
  const cookie = login.headers['set-cookie']!.find((c) => c.startsWith('baton_sid='))!.split(';')[0]!;
  const sessionId = cookie.split('=')[1]!;
  expect(upstream.last('/login').headers['x-baton-session-new']).toBe('1');
  // The login reached b's copy (replication is asynchronous).
  await pollUntil('b holds the login', async () => (await cluster!.client('b').getAuth(sessionId))?.subject === 'alice', 10_000);

  await cluster.kill('a', 'SIGKILL');
  const next = await get(`${proxyUrl(cluster.node('b').process)}/cart`, { cookie, 'x-baton-resumed-from': 'forged' });
  expect(next.status).toBe(200);
  expect(next.headers['set-cookie']).toBeUndefined();
  const seen = upstream.last('/cart').headers;
  expect(seen['x-baton-session-id']).toBe(sessionId);
  expect(seen['x-baton-session-new']).toBeUndefined();
  expect(seen['x-baton-auth-subject']).toBe('alice');
  expect(seen['x-baton-auth-scopes']).toBe('read write');
  expect(seen['x-baton-resumed-from']).toBe('a');

  // b owns it now: the request after that is not a resume.
  await get(`${proxyUrl(cluster.node('b').process)}/again`, { cookie });
  expect(upstream.last('/again').headers['x-baton-resumed-from']).toBeUndefined();
  expect(upstream.last('/again').headers['x-baton-auth-subject']).toBe('alice');
  const metrics = await cluster.node('b').process!.scrape();
  expect(metrics.value('baton_proxy_resumes_total', { outcome: 'peer' })).toBe(1);
});

test('a cookie naming a session no node holds gets a new id (a client cannot pick its session)', async () => {
  const b = proxyUrl(cluster!.node('b').process);
  const res = await get(`${b}/unknown`, { cookie: 'baton_sid=AAAAAAAAAAAAAAAAAAAAAA' });
  const minted = res.headers['set-cookie']!.find((c) => c.startsWith('baton_sid='))!.split(';')[0]!.split('=')[1];
  expect(minted).not.toBe('AAAAAAAAAAAAAAAAAAAAAA');
  expect(upstream.last('/unknown').headers['x-baton-session-id']).toBe(minted);
  expect(upstream.last('/unknown').headers['x-baton-session-new']).toBe('1');
});
