/**
 * The capture proxy on a real `baton sidecar` (compiled, from dist/) on loopback, with real
 * clients: curl (HTTP/1.1 and HTTP/2), Node's https and http2 clients, a WebSocket client
 * (ws). The web server is a Node server in this process (support/proxy-upstream.ts).
 * Certificates come from a test CA (node-forge). Every sidecar a test starts is stopped in
 * afterAll or the test's finally; waits are bounded polls, never fixed sleeps.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import * as http2 from 'node:http2';
import * as https from 'node:https';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import * as tls from 'node:tls';
import WebSocket from 'ws';
import { BatonClient } from '../src/client/client';
import { runBaton, startSidecar, type SidecarProcess } from './support/sidecar-process';
import { pollUntil } from './support/static-cluster';
import { issueTestLeaf, makeTestCa } from './support/test-ca';
import { TestUpstream } from './support/proxy-upstream';

const ca = makeTestCa('proxy test CA');
let dir: string;
let upstream: TestUpstream;
let node: SidecarProcess;
let client: BatonClient;
let base: string;
const started: SidecarProcess[] = [];

function proxyPort(p: SidecarProcess): number {
  const entry = p.logs.find((l) => l.msg === 'baton node started');
  if (typeof entry?.proxy_port !== 'number') throw new Error('the node logged no proxy_port');
  return entry.proxy_port;
}

function writeLeaf(name: string, subject: string): { cert: string; key: string } {
  const leaf = issueTestLeaf(ca, subject, undefined, ['localhost', '127.0.0.1']);
  const cert = path.join(dir, `${name}.crt`);
  const key = path.join(dir, `${name}.key`);
  writeFileSync(cert, leaf.certPem);
  writeFileSync(key, leaf.keyPem);
  return { cert, key };
}

async function startProxyNode(args: string[]): Promise<SidecarProcess> {
  const p = await startSidecar(['--proxy-listen', '127.0.0.1:0', ...args]);
  started.push(p);
  return p;
}

function curl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('curl', ['-sS', '--max-time', '20', '--cacert', path.join(dir, 'ca.crt'), ...args], { timeout: 30_000 }, (err, stdout, stderr) =>
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : 1, stdout, stderr }),
    );
  });
}

/** One HTTPS request with Node's client; resolves with status, headers and body. */
function request(
  url: string,
  options: https.RequestOptions & { body?: Buffer } = {},
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string; socket: tls.TLSSocket | undefined }> {
  return new Promise((resolve, reject) => {
    const lib = url.startsWith('https:') ? https : http;
    const req = lib.request(url, { ca: ca.certPem, ...options }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body, socket: res.socket as tls.TLSSocket }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(options.body);
  });
}

function cookieOf(headers: http.IncomingHttpHeaders): string {
  const line = headers['set-cookie']?.find((c) => c.startsWith('baton_sid='));
  if (line === undefined) throw new Error('no baton_sid cookie set');
  return line.split(';')[0]!;
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'baton-proxy-'));
  writeFileSync(path.join(dir, 'ca.crt'), ca.certPem);
  const leaf = writeLeaf('server', 'baton proxy');
  upstream = await TestUpstream.start();
  node = await startProxyNode(['--proxy-upstream', upstream.url, '--tls-cert-file', leaf.cert, '--tls-key-file', leaf.key, '--proxy-max-body-mb', '16']);
  client = new BatonClient(node.apiAddress);
  base = `https://localhost:${proxyPort(node)}`;
});

afterAll(async () => {
  client?.close();
  for (const p of started) await p.stop();
  await upstream?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('capture proxy, one node', () => {
  test('the requests of a session this node owns read it locally: none of them is a resume (baton_proxy_resumes_total), on one keep-alive connection', async () => {
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const first = await request(`${base}/owned`, { agent });
      const cookie = cookieOf(first.headers);
      const before = await node.scrape();
      const sockets = new Set<tls.TLSSocket | undefined>();
      for (let i = 0; i < 3; i++) {
        const next = await request(`${base}/owned`, { agent, headers: { cookie } });
        expect(next.status).toBe(200);
        expect(next.headers['set-cookie']).toBeUndefined();
        sockets.add(next.socket);
      }
      expect(sockets.size).toBe(1);
      const after = await node.scrape();
      expect(after.sum('baton_proxy_resumes_total') - before.sum('baton_proxy_resumes_total')).toBe(0);
      expect(after.sum('baton_resumes_total') - before.sum('baton_resumes_total')).toBe(0);
      expect(after.sum('baton_proxy_requests_total') - before.sum('baton_proxy_requests_total')).toBe(3);
    } finally {
      agent.destroy();
    }
  });

  test('curl over HTTP/1.1 and HTTP/2: a session id is minted once, kept by cookie, and spoofed x-baton-* headers never arrive', async () => {
    const jar = path.join(dir, 'jar');
    for (const version of ['--http1.1', '--http2']) {
      rmSync(jar, { force: true });
      const first = await curl([version, '-c', jar, '-b', jar, '-D', '-', '-H', 'x-baton-auth-subject: mallory', '-H', 'X-Baton-Session-Id: chosen', `${base}/first`]);
      expect(first.code).toBe(0);
      expect(first.stdout).toMatch(version === '--http2' ? /^HTTP\/2 200/ : /^HTTP\/1\.1 200/);
      expect(first.stdout).toMatch(/set-cookie: baton_sid=[A-Za-z0-9_-]{22}; Path=\/; HttpOnly; SameSite=Lax; Secure/i);
      expect(first.stdout).not.toMatch(/x-baton-internal/i);
      const seenFirst = upstream.last('/first').headers;
      expect(seenFirst['x-baton-session-new']).toBe('1');
      expect(seenFirst['x-baton-auth-subject']).toBeUndefined();
      expect(seenFirst['x-baton-session-id']).toMatch(/^[A-Za-z0-9_-]{22}$/);
      expect(seenFirst['x-baton-session-id']).not.toBe('chosen');
      expect(seenFirst['x-forwarded-proto']).toBe('https');
      expect(seenFirst['x-forwarded-for']).toBe('127.0.0.1');
      expect(seenFirst['x-baton-tls-resumed']).toBe('0');
      const second = await curl([version, '-c', jar, '-b', jar, '-D', '-', `${base}/second`]);
      expect(second.stdout).not.toMatch(/set-cookie: baton_sid/i);
      const seenSecond = upstream.last('/second').headers;
      expect(seenSecond['x-baton-session-id']).toBe(seenFirst['x-baton-session-id']);
      expect(seenSecond['x-baton-session-new']).toBeUndefined();
    }
  });

  test('a login declared by the web server reaches every later request until logout, and is stored in the auth part', async () => {
    const agent = new https.Agent({ keepAlive: true, ca: ca.certPem });
    try {
      const login = await request(`${base}/login`, { agent, headers: { 'x-baton-auth-subject': 'mallory' } });
      expect(login.headers['x-baton-auth-subject']).toBeUndefined();
      const cookie = cookieOf(login.headers);
      const sessionId = cookie.split('=')[1]!;
      await request(`${base}/after-login`, { agent, headers: { cookie } });
      expect(upstream.last('/after-login').headers).toMatchObject({ 'x-baton-auth-subject': 'alice', 'x-baton-auth-scopes': 'read write' });
      const auth = await client.getAuth(sessionId);
      expect(auth).toMatchObject({ subject: 'alice', scopes: ['read', 'write'] });
      const tlsPart = await client.getTls(sessionId);
      expect(tlsPart).toMatchObject({ protocol: 'TLSv1.3', alpnProtocol: '', serverName: 'localhost', resumed: false }); // Node's https client offers no ALPN
      expect(tlsPart!.cipher).not.toBe('');
      await request(`${base}/logout`, { agent, headers: { cookie } });
      await request(`${base}/after-logout`, { agent, headers: { cookie, 'x-baton-auth-subject': 'alice' } });
      expect(upstream.last('/after-logout').headers['x-baton-auth-subject']).toBeUndefined();
      expect((await client.getAuth(sessionId))!.subject).toBe('');
    } finally {
      agent.destroy();
    }
  });

  test('a login on a session the client already had gives it a new id (session fixation): the old id stays logged out', async () => {
    const agent = new https.Agent({ keepAlive: true, ca: ca.certPem });
    try {
      const before = cookieOf((await request(`${base}/browse`, { agent })).headers);
      const login = await request(`${base}/login`, { agent, headers: { cookie: before } });
      const after = cookieOf(login.headers);
      expect(after).not.toBe(before);
      await request(`${base}/after-login`, { agent, headers: { cookie: after } });
      expect(upstream.last('/after-login').headers).toMatchObject({ 'x-baton-session-id': after.split('=')[1], 'x-baton-auth-subject': 'alice' });
      await request(`${base}/with-old-id`, { agent, headers: { cookie: before } });
      expect(upstream.last('/with-old-id').headers['x-baton-session-id']).toBe(before.split('=')[1]);
      expect(upstream.last('/with-old-id').headers['x-baton-auth-subject']).toBeUndefined();
      expect((await client.getAuth(before.split('=')[1]!))!.subject).toBe('');
      expect((await client.getTls(after.split('=')[1]!))!.protocol).toBe('TLSv1.3'); // the parts moved with the session
    } finally {
      agent.destroy();
    }
  });

  test("Node's http2 client: ALPN h2, the session cookie, the tls part says h2", async () => {
    const session = http2.connect(base, { ca: ca.certPem });
    try {
      const get = (path: string, headers: http2.OutgoingHttpHeaders = {}) =>
        new Promise<{ headers: http2.IncomingHttpHeaders & http2.IncomingHttpStatusHeader; body: string }>((resolve, reject) => {
          const stream = session.request({ ':path': path, ...headers });
          let body = '';
          let head: http2.IncomingHttpHeaders & http2.IncomingHttpStatusHeader = {};
          stream.setEncoding('utf8');
          stream.on('response', (h) => (head = h));
          stream.on('data', (d: string) => (body += d));
          stream.on('end', () => resolve({ headers: head, body }));
          stream.on('error', reject);
          stream.end();
        });
      const first = await get('/h2-first');
      expect(first.headers[':status']).toBe(200);
      const setCookie = first.headers['set-cookie'] as string[];
      const cookie = setCookie[0]!.split(';')[0]!;
      await get('/h2-second', { cookie });
      const seen = upstream.last('/h2-second').headers;
      expect(seen['x-baton-session-id']).toBe(cookie.split('=')[1]);
      expect(seen.host).toBe(`localhost:${proxyPort(node)}`);
      expect(await client.getTls(cookie.split('=')[1]!)).toMatchObject({ alpnProtocol: 'h2' });
    } finally {
      session.close();
    }
  });

  test('a bearer JWT is captured with its claims decoded, and never makes anyone logged in', async () => {
    const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const token = `${b64({ alg: 'none' })}.${b64({ sub: 'mallory', exp: 4102444800, scope: 'admin' })}.x`;
    const res = await request(`${base}/api`, { headers: { authorization: `Bearer ${token}` } });
    const sessionId = cookieOf(res.headers).split('=')[1]!;
    expect(upstream.last('/api').headers['x-baton-auth-subject']).toBeUndefined();
    expect(upstream.last('/api').headers.authorization).toBe(`Bearer ${token}`);
    const auth = await client.getAuth(sessionId);
    expect(auth).toMatchObject({ token, tokenType: 'Bearer', subject: '', claims: { jwt_sub: 'mallory', jwt_exp: '4102444800', jwt_scope: 'admin' } });
  });

  test('WebSocket over TLS passes through, with the session id the web server was given', async () => {
    const socket = new WebSocket(`wss://localhost:${proxyPort(node)}/ws`, { ca: ca.certPem });
    try {
      const upgrade = new Promise<http.IncomingMessage>((resolve) => socket.once('upgrade', resolve));
      await new Promise<void>((resolve, reject) => {
        socket.once('open', () => resolve());
        socket.once('error', reject);
      });
      const cookie = cookieOf((await upgrade).headers);
      const reply = new Promise<string>((resolve) => socket.once('message', (data) => resolve(String(data))));
      socket.send('hello');
      expect(await reply).toBe(`${cookie.split('=')[1]}:hello`);
    } finally {
      socket.terminate();
    }
  });

  test('Expect: 100-continue: the web server is asked, its 100 Continue reaches the client, then the body goes through', async () => {
    const asked = upstream.continueAsked;
    const body = Buffer.alloc(100_000, 7);
    const result = await new Promise<{ continued: boolean; status: number; text: string }>((resolve, reject) => {
      let continued = false;
      const req = https.request(`${base}/continue`, { method: 'POST', ca: ca.certPem, headers: { expect: '100-continue', 'content-length': body.length } }, (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => resolve({ continued, status: res.statusCode ?? 0, text }));
      });
      req.on('continue', () => {
        continued = true;
        req.end(body);
      });
      req.on('error', reject);
    });
    expect(result.continued).toBe(true);
    expect(result.status).toBe(200);
    expect(upstream.continueAsked).toBe(asked + 1);
    expect(JSON.parse(result.text).bytes).toBe(body.length);
  });

  test('bodies stream both ways: the web server reads the upload before it ends, the client reads the download before it is written whole', async () => {
    // Upload: the second chunk is only sent once the web server has the first.
    let firstArrived!: () => void;
    const arrived = new Promise<void>((resolve) => (firstArrived = resolve));
    upstream.onUploadChunk = () => firstArrived();
    const upload = new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = https.request(`${base}/upload`, { method: 'PUT', ca: ca.certPem }, (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      });
      req.on('error', reject);
      req.write(Buffer.alloc(256 * 1024, 1));
      void arrived.then(() => req.end(Buffer.alloc(256 * 1024, 2)));
    });
    const uploaded = await upload;
    upstream.onUploadChunk = undefined;
    expect(uploaded.status).toBe(200);
    expect(JSON.parse(uploaded.text).bytes).toBe(512 * 1024);
    expect(upstream.last('/upload').headers['transfer-encoding']).toBe('chunked');

    // Download: the web server writes the rest only after the client got the first chunk.
    let release!: () => void;
    upstream.downloadGate = new Promise<void>((resolve) => (release = resolve));
    const received = await new Promise<number>((resolve, reject) => {
      https.get(`${base}/download`, { ca: ca.certPem }, (res) => {
        let bytes = 0;
        res.on('data', (d: Buffer) => {
          if (bytes === 0) release();
          bytes += d.length;
        });
        res.on('end', () => resolve(bytes));
        res.on('error', reject);
      });
    });
    expect(received).toBe(64 * 64 * 1024);
  });

  test('a body over --proxy-max-body-mb is refused 413, a header block over --proxy-max-header-bytes 431', async () => {
    const res = await request(`${base}/big`, { method: 'POST', headers: { 'content-length': String(17 * 1024 * 1024) } }).catch((err: Error) => err);
    expect(res).not.toBeInstanceOf(Error);
    expect((res as { status: number }).status).toBe(413);
    const huge = await curl(['--http1.1', '-o', '/dev/null', '-w', '%{http_code}', '-H', `x-big: ${'a'.repeat(20_000)}`, `${base}/huge`]);
    expect(huge.stdout).toBe('431');
  });

  test('the certificate is loaded again when its files change', async () => {
    const serial = async () =>
      new Promise<string>((resolve, reject) => {
        const socket = tls.connect({ host: '127.0.0.1', port: proxyPort(node), servername: 'localhost', ca: ca.certPem }, () => {
          resolve(socket.getPeerX509Certificate()!.subject);
          socket.end();
        });
        socket.on('error', reject);
      });
    expect(await serial()).toBe('CN=baton proxy');
    writeLeaf('server', 'baton proxy rotated');
    await pollUntil('the rotated certificate is presented', async () => (await serial()) === 'CN=baton proxy rotated', 15_000);
  });
});

describe('capture proxy: plain HTTP, failures, drain, mTLS, options', () => {
  test('plain HTTP without certificate options; the web server down is a 502 at once, never a hang', async () => {
    // Port 1 on loopback: nothing listens there (a port freed by a closed server may be
    // bound again by another test's server meanwhile, which answers with a reset).
    const plain = await startProxyNode(['--proxy-upstream', 'http://127.0.0.1:1']);
    const res = await request(`http://127.0.0.1:${proxyPort(plain)}/x`);
    expect(res.status).toBe(502);
    expect(res.body).toBe('baton: the web server is unavailable\n');
    expect(res.headers['set-cookie']).toBeUndefined();
    const metrics = await plain.scrape();
    expect(metrics.value('baton_proxy_upstream_errors_total', { reason: 'connect' })).toBe(1);
  });

  test('SIGTERM: an in-flight slow request is answered in full, then the node exits 0; idle connections are closed after --proxy-idle-timeout-ms', async () => {
    const p = await startProxyNode(['--proxy-upstream', upstream.url, '--proxy-idle-timeout-ms', '300']);
    const idle = await new Promise<http.IncomingMessage>((resolve, reject) => {
      http.get(`http://127.0.0.1:${proxyPort(p)}/idle`, { agent: new http.Agent({ keepAlive: true }) }, resolve).on('error', reject);
    });
    idle.resume();
    let idleClosed = false;
    idle.socket.once('close', () => (idleClosed = true));
    await pollUntil('the proxy closes the idle keep-alive connection', () => idleClosed, 10_000);
    const held = upstream.held.length;
    const answer = request(`http://127.0.0.1:${proxyPort(p)}/slow`);
    await pollUntil('the web server holds the slow request', () => upstream.held.length > held, 10_000);
    const exit = p.stop('SIGTERM');
    await pollUntil('the node is draining', () => p.logs.some((l) => l.msg === 'baton node draining'), 10_000);
    upstream.held[held]!();
    const res = await answer;
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body).url).toBe('/slow');
    expect(res.headers.connection).toBe('close');
    expect(await exit).toBe(0);
  });

  test('mTLS: a verified client certificate reaches the web server as x-baton-client-cert-subject; no certificate, no connection', async () => {
    const leaf = writeLeaf('mtls', 'baton proxy');
    const p = await startProxyNode(['--proxy-upstream', upstream.url, '--tls-cert-file', leaf.cert, '--tls-key-file', leaf.key, '--tls-client-ca-file', path.join(dir, 'ca.crt')]);
    const url = `https://localhost:${proxyPort(p)}`;
    const alice = issueTestLeaf(ca, 'alice');
    const res = await request(`${url}/who`, { cert: alice.certPem, key: alice.keyPem, headers: { 'x-baton-client-cert-subject': 'CN=root' } });
    expect(res.status).toBe(200);
    expect(upstream.last('/who').headers['x-baton-client-cert-subject']).toBe('CN=alice');
    const sessionId = cookieOf(res.headers).split('=')[1]!;
    const mtlsClient = new BatonClient(p.apiAddress);
    try {
      expect((await mtlsClient.getAuth(sessionId))!.claims).toMatchObject({ x509_subject: 'CN=alice' });
    } finally {
      mtlsClient.close();
    }
    await expect(request(`${url}/who`)).rejects.toThrow();
  });

  test('bad proxy options are configuration errors (exit 2) naming the option', async () => {
    const cases: [string[], RegExp][] = [
      [['--proxy-listen', '127.0.0.1:0'], /--proxy-listen .* needs --proxy-upstream/],
      [['--proxy-listen', '127.0.0.1:0', '--proxy-upstream', 'ftp://x:1'], /invalid --proxy-upstream/],
      [['--proxy-listen', '127.0.0.1:0', '--proxy-upstream', 'http://x:1/path'], /invalid --proxy-upstream/],
      [['--proxy-listen', '127.0.0.1:0', '--proxy-upstream', 'http://x:1', '--tls-cert-file', path.join(dir, 'ca.crt')], /--tls-cert-file .* and --tls-key-file .* go together/],
      [['--proxy-listen', '127.0.0.1:0', '--proxy-upstream', 'http://x:1', '--tls-cert-file', path.join(dir, 'ca.crt'), '--tls-key-file', path.join(dir, 'server.key')], /do not load/],
      [['--proxy-listen', '127.0.0.1:0', '--proxy-upstream', 'http://x:1', '--session-cookie', 'a;b'], /invalid --session-cookie/],
      [['--proxy-upstream', 'http://x:1'], /set --proxy-listen/],
      [['--proxy-listen', '127.0.0.1:0', '--proxy-upstream', 'http://x:1', '--tls-client-ca-file', path.join(dir, 'ca.crt')], /--tls-client-ca-file .* needs TLS/],
    ];
    for (const [args, message] of cases) {
      const result = await runBaton(['sidecar', ...args]);
      expect({ args, code: result.code }).toEqual({ args, code: 2 });
      expect(result.stderr).toMatch(message);
    }
  });
});
