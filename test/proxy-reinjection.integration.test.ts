/**
 * Re-injection across pods: two real `baton sidecar` processes, a and b, on loopback with a
 * cluster key (peer gRPC over mutual TLS), each proxying to its own web server. a's web
 * server is a separate process that holds every request but /login; b's is the test's
 * TestUpstream, which answers at once. With 110 requests held at a's web server, it is
 * killed (SIGKILL): the requests safe to repeat are answered by way of b, the others 502.
 * Then: a repeated Idempotency-Key is answered from the session, not by a web server; a
 * client's x-baton-* headers neither trigger nor shape a replay; a peer's hostile replay is
 * refused and the node keeps serving; a body still arriving is replayed whole; a draining node hands requests its web server has not
 * answered to a peer before its drain deadline. Every process is stopped in afterAll; waits
 * are bounded polls.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import { loadavg, tmpdir } from 'node:os';
import * as path from 'node:path';
import { status } from '@grpc/grpc-js';
import type { ReplayRequest } from '../src/gen/baton/v1/peer';
import { parseClusterKeys } from '../src/wire/cluster-key';
import { peerTlsFromKeys } from '../src/wire/peer-tls';
import { PeerClients, PeerCredentials } from '../sidecar/transport/peer-service';
import { FAST_FAILURE_DETECTION, mapLimit, pollUntil, StaticCluster } from './support/static-cluster';
import { TestUpstream } from './support/proxy-upstream';
import type { SidecarProcess } from './support/sidecar-process';

const GETS = 50;
const KEYED_POSTS = 50;
const UNKEYED_POSTS = 10;
const DEADLINE_MS = 10_000;

/** a's web server: answers /login (declaring alice), holds everything else and says so on stdout. */
const HOLDING_SERVER = `
const http = require('node:http');
const held = [];
const server = http.createServer((req, res) => {
  if (req.url.startsWith('/login')) {
    res.setHeader('x-baton-auth-subject', 'alice');
    res.end('welcome');
    return;
  }
  held.push(res);
  req.resume();
  process.stdout.write('held ' + req.url + '\\n');
});
server.listen(Number(process.argv[1]), '127.0.0.1', () => process.stdout.write('port ' + server.address().port + '\\n'));
`;

let dir: string;
let key: string;
let upstreamB: TestUpstream;
let webA: ChildProcess | undefined;
let webAUrl: string;
const heldAtA: string[] = [];
let cluster: StaticCluster | undefined;

function proxyUrl(p: SidecarProcess | undefined): string {
  const entry = p?.logs.find((l) => l.msg === 'baton node started');
  if (typeof entry?.proxy_port !== 'number') throw new Error('the node logged no proxy_port');
  return `http://127.0.0.1:${entry.proxy_port}`;
}

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

function send(base: string, method: string, target: string, headers: http.OutgoingHttpHeaders, body?: Buffer): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${base}${target}`, { method, headers: { ...headers, ...(body === undefined ? {} : { 'content-length': body.length }) }, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** What TestUpstream answers: the request it received. */
function echoed(answer: Answer): { method: string; url: string; headers: http.IncomingHttpHeaders; bytes: number; sha256: string } {
  return JSON.parse(answer.body.toString()) as never;
}

/** Starts a's web server (on `port`, or a free one). */
async function startHoldingServer(port = 0): Promise<void> {
  const child = spawn(process.execPath, ['-e', HOLDING_SERVER, String(port)], { stdio: ['ignore', 'pipe', 'inherit'] });
  webA = child;
  let bound = 0;
  let buffered = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    buffered += chunk.toString();
    let newline: number;
    while ((newline = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
      if (line.startsWith('port ')) bound = Number(line.slice(5));
      if (line.startsWith('held ')) heldAtA.push(line.slice(5));
    }
  });
  await pollUntil("a's web server listens", () => bound > 0, DEADLINE_MS);
  webAUrl = `http://127.0.0.1:${bound}`;
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'baton-reinjection-'));
  key = randomBytes(32).toString('base64');
  const keyFile = path.join(dir, 'cluster.key');
  writeFileSync(keyFile, key + '\n');
  upstreamB = await TestUpstream.start();
  await startHoldingServer();
  cluster = await StaticCluster.start(
    ['a', 'b'],
    ['--replicas', '1', '--partitions', '16', '--cluster-key-file', keyFile, '--proxy-listen', '127.0.0.1:0', ...FAST_FAILURE_DETECTION],
    // a drains within 4 s, so it hands requests to b 2 s after SIGTERM (the last test).
    { a: ['--proxy-upstream', webAUrl, '--drain-timeout-seconds', '4'], b: ['--proxy-upstream', upstreamB.url] },
  );
  await cluster.waitForAlive(['a', 'b'], 15_000);
}, 60_000);

afterAll(async () => {
  try {
    await cluster?.stopAll();
  } finally {
    if (webA !== undefined && webA.exitCode === null && webA.signalCode === null) webA.kill('SIGKILL');
    await upstreamB?.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

/** Cookies of the logins, one session per request: each is resumed on b by its own replay. */
const cookies: string[] = [];
const keyedBodies: Buffer[] = [];
const keyedAnswers: Answer[] = [];

function sessionOf(cookie: string): string {
  return cookie.split('=')[1]!;
}

test("a's web server dies with 110 requests in flight: the 100 safe to repeat are answered 200 by way of b, the 10 others get 502", async () => {
  const a = proxyUrl(cluster!.node('a').process);
  const total = GETS + KEYED_POSTS + UNKEYED_POSTS;
  const logins = await mapLimit(Array.from({ length: total }, (_, i) => i), 16, (i) => send(a, 'GET', `/login?${i}`, {}));
  for (const login of logins) {
    expect(login.status).toBe(200);
    cookies.push(login.headers['set-cookie']!.find((c) => c.startsWith('baton_sid='))!.split(';')[0]!);
  }
  // A client's x-baton-* headers: stripped on the replay as on any request, and they make
  // nothing replayable.
  const forged = { 'x-baton-resumed-from': 'forged', 'x-baton-session-id': 'forged', 'x-baton-auth-subject': 'mallory', 'x-baton-replay': '1' };
  const gets = Array.from({ length: GETS }, (_, i) => send(a, 'GET', `/item/${i}`, { cookie: cookies[i]!, ...forged }));
  const keyed = Array.from({ length: KEYED_POSTS }, (_, i) => {
    const body = randomBytes(2048 + i);
    keyedBodies.push(body);
    return send(a, 'POST', `/order/${i}`, { cookie: cookies[GETS + i]!, 'idempotency-key': `order-${i}`, 'content-type': 'application/octet-stream' }, body);
  });
  const unkeyed = Array.from({ length: UNKEYED_POSTS }, (_, i) =>
    send(a, 'POST', `/pay/${i}`, { cookie: cookies[GETS + KEYED_POSTS + i]!, ...forged, 'x-baton-idempotency-key': 'forged' }, randomBytes(512)),
  );
  await pollUntil("all 110 requests held at a's web server", () => heldAtA.length === total, DEADLINE_MS);
  expect(upstreamB.seen).toHaveLength(0);

  const killedAt = performance.now();
  await killWebA();

  const lastAnswer = (all: Promise<Answer>[]) => Promise.all(all.map((p) => p.then((answer) => ({ answer, at: performance.now() }))));
  const [getTimed, keyedTimed, unkeyedAnswers] = await Promise.all([lastAnswer(gets), lastAnswer(keyed), Promise.all(unkeyed)]);
  const getAnswers = getTimed.map((t) => t.answer);
  const keyedDone = keyedTimed.map((t) => t.answer);
  keyedAnswers.push(...keyedDone);
  const median = (timed: { at: number }[]) => {
    const sorted = timed.map((t) => t.at - killedAt).sort((x, y) => x - y);
    return `median ${sorted[Math.floor(sorted.length / 2)]!.toFixed(0)} ms, last ${sorted[sorted.length - 1]!.toFixed(0)} ms`;
  };
  // Figures to read, not bounds: how long after the web server's death the answers came by way of b.
  console.log(`re-injection after SIGKILL of a's web server (load ${loadavg()[0]!.toFixed(1)}): GETs ${median(getTimed)}; keyed POSTs ${median(keyedTimed)}`);
  // Every outcome at once, so a failure shows what became of each request.
  const metricsA = await cluster!.node('a').process!.scrape();
  const outcomes = Object.fromEntries(['answered', 'failed', 'not_replayable', 'too_large', 'no_peer'].map((o) => [o, metricsA.value('baton_proxy_reinjections_total', { outcome: o })]));
  expect(outcomes).toEqual({ answered: GETS + KEYED_POSTS, failed: 0, not_replayable: UNKEYED_POSTS, too_large: 0, no_peer: 0 });
  getAnswers.forEach((answer, i) => {
    expect(answer.status).toBe(200);
    const seen = echoed(answer);
    expect(seen.url).toBe(`/item/${i}`);
    expect(seen.headers['x-baton-session-id']).toBe(sessionOf(cookies[i]!));
    expect(seen.headers['x-baton-resumed-from']).toBe('a');
    expect(seen.headers['x-baton-auth-subject']).toBe('alice');
    expect(seen.headers['x-baton-replay']).toBeUndefined();
    // The client keeps its session (no new cookie) and never sees the web server's x-baton-* headers.
    expect(answer.headers['set-cookie']).toBeUndefined();
    expect(answer.headers['x-baton-internal']).toBeUndefined();
  });
  keyedDone.forEach((answer, i) => {
    expect(answer.status).toBe(200);
    const seen = echoed(answer);
    expect(seen).toMatchObject({ method: 'POST', url: `/order/${i}`, bytes: keyedBodies[i]!.length, sha256: createHash('sha256').update(keyedBodies[i]!).digest('hex') });
    expect(seen.headers['idempotency-key']).toBe(`order-${i}`);
    expect(seen.headers['x-baton-resumed-from']).toBe('a');
  });
  for (const answer of unkeyedAnswers) expect(answer.status).toBe(502);

  // b's web server saw each safe request exactly once, and none of the others.
  const urls = upstreamB.seen.map((s) => s.url).sort();
  const expected = [...Array.from({ length: GETS }, (_, i) => `/item/${i}`), ...Array.from({ length: KEYED_POSTS }, (_, i) => `/order/${i}`)].sort();
  expect(urls).toEqual(expected);
  for (const seen of upstreamB.seen) expect(seen.headers['x-baton-resumed-from']).toBe('a');

  const metricsB = await cluster!.node('b').process!.scrape();
  expect(metricsB.value('baton_proxy_reinjections_total', { outcome: 'served' })).toBe(GETS + KEYED_POSTS);
}, 120_000);

test('a repeated Idempotency-Key is answered from the session, never by a web server again', async () => {
  expect(keyedAnswers).toHaveLength(KEYED_POSTS);
  const a = proxyUrl(cluster!.node('a').process);
  const b = proxyUrl(cluster!.node('b').process);
  const seenBefore = upstreamB.seen.length;
  // The client retries on b, and on a (whose web server is gone): both answer from the session.
  const onB = await send(b, 'POST', '/order/0', { cookie: cookies[GETS]!, 'idempotency-key': 'order-0' }, keyedBodies[0]);
  const onA = await send(a, 'POST', '/order/1', { cookie: cookies[GETS + 1]!, 'idempotency-key': 'order-1' }, keyedBodies[1]);
  expect(onB.status).toBe(200);
  expect(onB.body.equals(keyedAnswers[0]!.body)).toBe(true);
  expect(onA.status).toBe(200);
  expect(onA.body.equals(keyedAnswers[1]!.body)).toBe(true);
  // The same key on another request is the client's mistake, not a repeat.
  const reused = await send(b, 'POST', '/order/other', { cookie: cookies[GETS + 2]!, 'idempotency-key': 'order-2' }, Buffer.from('x'));
  expect(reused.status).toBe(422);
  expect(upstreamB.seen.length).toBe(seenBefore);
  // A new key reaches the web server once; its repeat does not.
  const first = await send(b, 'POST', '/order/new', { cookie: cookies[GETS + 3]!, 'idempotency-key': 'order-new' }, Buffer.from('fresh'));
  await pollUntil('b remembered the answer', async () => {
    const again = await send(b, 'POST', '/order/new', { cookie: cookies[GETS + 3]!, 'idempotency-key': 'order-new' }, Buffer.from('fresh'));
    return again.status === 200 && again.body.equals(first.body);
  }, DEADLINE_MS);
  expect(upstreamB.seen.filter((s) => s.url === '/order/new')).toHaveLength(1);
  const metricsB = await cluster!.node('b').process!.scrape();
  expect(metricsB.value('baton_proxy_idempotent_repeats_total')).toBeGreaterThanOrEqual(2);
});

test("a peer's hostile or oversized replay is refused cleanly, and a caller without the cluster key is not served at all", async () => {
  const address = cluster!.node('b').process!.peerAddress;
  const insider = new PeerClients(new PeerCredentials(peerTlsFromKeys(parseClusterKeys(key), 'insider', Date.now())));
  const outsider = new PeerClients(new PeerCredentials(peerTlsFromKeys(parseClusterKeys(randomBytes(32).toString('base64')), 'outsider', Date.now())));
  const base: ReplayRequest = {
    originNodeId: 'insider',
    sessionId: 'replayed-session',
    method: 'GET',
    target: '/hostile',
    headers: [],
    body: Buffer.alloc(0),
    clientAddress: '203.0.113.9',
    clientTls: false,
  };
  const seenBefore = upstreamB.seen.length;
  try {
    const refusals: [Partial<ReplayRequest>, number][] = [
      [{ method: 'POST' }, status.FAILED_PRECONDITION],
      [{ method: 'GET\r\nx: y' }, status.INVALID_ARGUMENT],
      [{ target: 'http://elsewhere/' }, status.INVALID_ARGUMENT],
      [{ target: '/a b' }, status.INVALID_ARGUMENT],
      [{ headers: [{ name: 'x-evil', value: 'a\r\nx-baton-auth-subject: root' }] }, status.INVALID_ARGUMENT],
      [{ headers: [{ name: 'Bad Name', value: '1' }] }, status.INVALID_ARGUMENT],
      [{ headers: Array.from({ length: 300 }, (_, i) => ({ name: `h${i}`, value: '1' })) }, status.INVALID_ARGUMENT],
      [{ sessionId: '' }, status.INVALID_ARGUMENT],
      [{ method: 'PUT', body: Buffer.alloc(2 * 1024 * 1024) }, status.INVALID_ARGUMENT],
      [{ method: 'PUT', body: Buffer.alloc(6 * 1024 * 1024) }, status.RESOURCE_EXHAUSTED],
      // An answer over what a node reads for a peer (8 MiB): refused, nothing held.
      [{ target: `/big/${9 * 1024 * 1024}` }, status.RESOURCE_EXHAUSTED],
    ];
    for (const [change, code] of refusals) {
      await expect(insider.replay(address, { ...base, ...change }, DEADLINE_MS)).rejects.toMatchObject({ code });
    }
    // Only the oversized answer reached the web server.
    expect(upstreamB.seen.slice(seenBefore).map((r) => r.url)).toEqual([`/big/${9 * 1024 * 1024}`]);

    // A well-formed replay carrying x-baton-* headers: served, with baton's own headers only.
    const served = await insider.replay(
      address,
      { ...base, headers: [{ name: 'x-baton-resumed-from', value: 'forged' }, { name: 'x-baton-auth-subject', value: 'root' }, { name: 'accept', value: 'text/plain' }] },
      DEADLINE_MS,
    );
    expect(served.status).toBe(200);
    const seen = upstreamB.last('/hostile').headers;
    expect(seen['x-baton-auth-subject']).toBeUndefined();
    expect(seen['x-baton-resumed-from']).toBeUndefined();
    expect(seen['x-baton-session-new']).toBe('1');
    expect(seen['x-forwarded-for']).toBe('203.0.113.9');
    expect(seen.accept).toBe('text/plain');
    // No node holds 'replayed-session': b minted another and says which.
    expect(served.sessionId).not.toBe('replayed-session');

    await expect(outsider.replay(address, base, DEADLINE_MS)).rejects.toMatchObject({ code: status.UNAVAILABLE });
    expect(upstreamB.seen.filter((s) => s.url === '/hostile')).toHaveLength(1);
    // b keeps serving.
    expect((await cluster!.status('b')).nodeId).toBe('b');
    const metricsB = await cluster!.node('b').process!.scrape();
    // All but the 6 MiB message (refused by gRPC before any handler) were refused by the proxy.
    expect(metricsB.value('baton_proxy_reinjections_total', { outcome: 'refused' })).toBe(refusals.length - 1);
  } finally {
    insider.close();
    outsider.close();
  }
});

/** Kills a's web server and waits for its exit. */
async function killWebA(): Promise<void> {
  const exited = new Promise<void>((resolve) => webA!.once('exit', () => resolve()));
  webA!.kill('SIGKILL');
  await exited;
}

test('a body still arriving when the web server dies is replayed whole; one over the per-request cap gets 502 (too_large)', async () => {
  heldAtA.length = 0;
  await startHoldingServer(Number(new URL(webAUrl).port));
  const a = proxyUrl(cluster!.node('a').process);
  const chunks = Array.from({ length: 4 }, () => randomBytes(64 * 1024));
  // A chunked PUT: the first chunk goes before the web server dies, the rest after.
  const req = http.request(`${a}/upload-after-crash`, { method: 'PUT', headers: { cookie: cookies[0]!, 'transfer-encoding': 'chunked' }, agent: false });
  const answer = new Promise<Answer>((resolve, reject) => {
    req.on('response', (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts) }));
    });
    req.on('error', reject);
  });
  req.write(chunks[0]);
  const tooLarge = send(a, 'PUT', '/too-large', { cookie: cookies[1]! }, randomBytes(2 * 1024 * 1024));
  await pollUntil("both PUTs reached a's web server", () => heldAtA.length === 2, DEADLINE_MS);
  await killWebA();
  for (const chunk of chunks.slice(1)) req.write(chunk);
  req.end();
  const replayed = await answer;
  expect(replayed.status).toBe(200);
  const whole = Buffer.concat(chunks);
  expect(echoed(replayed)).toMatchObject({ method: 'PUT', url: '/upload-after-crash', bytes: whole.length, sha256: createHash('sha256').update(whole).digest('hex') });
  expect((await tooLarge).status).toBe(502);
  expect(upstreamB.seen.filter((r) => r.url === '/too-large')).toHaveLength(0);
  const metricsA = await cluster!.node('a').process!.scrape();
  expect(metricsA.value('baton_proxy_reinjections_total', { outcome: 'too_large' })).toBe(1);
});

test('a draining node hands the requests its web server has not answered to a peer before its deadline', async () => {
  // a's web server again, on the port a forwards to, holding everything.
  heldAtA.length = 0;
  await startHoldingServer(Number(new URL(webAUrl).port));
  const a = proxyUrl(cluster!.node('a').process);
  const count = 20;
  const gets = Array.from({ length: count }, (_, i) => send(a, 'GET', `/drain/${i}`, { cookie: cookies[i]! }));
  await pollUntil("20 requests held at a's web server", () => heldAtA.length === count, DEADLINE_MS);
  const code = await cluster!.stop('a');
  const answers = await Promise.all(gets);
  for (const [i, answer] of answers.entries()) {
    expect(answer.status).toBe(200);
    expect(echoed(answer).url).toBe(`/drain/${i}`);
    // The answer came during a drain: the client is told to reconnect (to another pod).
    expect(answer.headers.connection).toBe('close');
  }
  expect(upstreamB.seen.filter((s) => s.url.startsWith('/drain/'))).toHaveLength(count);
  expect(code).toBe(0);
}, 60_000);
