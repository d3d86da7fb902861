/**
 * TCP state capture end to end: a `baton sidecar` (compiled, from dist/) with --proxy-listen
 * in front of a web server in this process, a client making requests over one keep-alive
 * connection (plain HTTP/1.1, HTTP/1.1 over TLS, HTTP/2), and --tcp-capture-interval-ms 50. Once the traffic stops, the session's `tcp`
 * part (read with the API's Get) must match the kernel's view of that connection:
 * - sequence positions exact, against the client socket's own repair-mode queue sequences
 *   (client snd_nxt = server rcv_nxt, client rcv_nxt = server snd_nxt = snd_una once idle);
 * - addresses and ports, MSS, window scales, SACK/timestamps, RTO and the send window equal
 *   to `ss -tin` for that connection;
 * - written only when it changed: idle samples count as unchanged and write nothing.
 * A second node runs without CAP_NET_ADMIN (setpriv drops it): receive positions exact, send
 * positions marked unknown and 0. Waits are bounded polls; every process is stopped in
 * finally/afterAll. Needs root (for the client's repair-mode view and setpriv) and koffi;
 * elsewhere the tests say they did not run, and under CI they fail.
 */
import { execFileSync } from 'node:child_process';
import * as http from 'node:http';
import * as http2 from 'node:http2';
import * as https from 'node:https';
import type { Socket } from 'node:net';
import { BatonClient } from '../src/client/client';
import { TcpConnectionState, TcpState } from '../src/gen/baton/v1/parts';
import { hasNetAdmin, queueSequences } from '../sidecar/capture/tcp-capture';
import { loadSocketSyscalls, socketFd, type SocketSyscalls } from '../sidecar/net/socket-syscalls';
import { startSidecar, type SidecarProcess } from './support/sidecar-process';
import { pollUntil } from './support/static-cluster';
import { TestUpstream } from './support/proxy-upstream';

const loaded = loadSocketSyscalls();
const missing = loaded.syscalls === undefined ? loaded.reason : !hasNetAdmin() ? 'the client-side view needs CAP_NET_ADMIN (CI runs as root)' : undefined;
const INTERVAL_MS = 50;
const WAIT_MS = 15_000;

function captureTest(title: string, fn: (syscalls: SocketSyscalls) => Promise<void>, timeoutMs = 60_000): void {
  if (missing === undefined) return void test(title, () => fn(loaded.syscalls!), timeoutMs);
  if (process.env.CI) {
    return void test(title, () => {
      throw new Error(`cannot run here: ${missing}`);
    });
  }
  console.warn(`TCP capture test NOT RUN (${missing}): ${title}`);
  test.skip(`${title} [NOT RUN: ${missing}]`, () => undefined);
}

let upstream: TestUpstream;
const started: SidecarProcess[] = [];

beforeAll(async () => {
  upstream = await TestUpstream.start();
});

afterAll(async () => {
  for (const p of started) await p.stop();
  await upstream?.close();
});

async function startProxyNode(prefix?: string[], tls = false): Promise<{ node: SidecarProcess; port: number }> {
  const node = await startSidecar(
    ['--proxy-listen', '127.0.0.1:0', '--proxy-upstream', upstream.url, '--tcp-capture-interval-ms', String(INTERVAL_MS), ...(tls ? ['--tls-self-signed'] : [])],
    {},
    prefix === undefined ? {} : { prefix },
  );
  started.push(node);
  const entry = node.logs.find((l) => l.msg === 'baton node started');
  if (typeof entry?.proxy_port !== 'number') throw new Error('the node logged no proxy_port');
  return { node, port: entry.proxy_port };
}

/** A few requests of different sizes over one keep-alive connection; answers the session id and the client's socket. */
async function traffic(port: number, tls = false): Promise<{ sessionId: string; socket: Socket; agent: http.Agent }> {
  // The self-signed certificate cannot be verified; what is tested here is the TCP connection under it.
  const agent = tls ? new https.Agent({ keepAlive: true, maxSockets: 1, rejectUnauthorized: false }) : new http.Agent({ keepAlive: true, maxSockets: 1 });
  const lib = tls ? https : http;
  const sockets = new Set<Socket>();
  let cookie = '';
  for (let i = 0; i < 6; i++) {
    const body = i % 2 === 1 ? Buffer.alloc(1000 * i + 17, 0x61) : undefined;
    await new Promise<void>((resolve, reject) => {
      const headers: http.OutgoingHttpHeaders = cookie === '' ? {} : { cookie };
      if (body !== undefined) headers['content-length'] = body.length;
      const req = lib.request({ host: '127.0.0.1', port, path: `/r${i}`, method: body === undefined ? 'GET' : 'POST', agent, headers }, (res) => {
        const line = res.headers['set-cookie']?.find((c) => c.startsWith('baton_sid='));
        if (line !== undefined) cookie = line.split(';')[0]!;
        sockets.add(res.socket);
        res.resume();
        res.on('end', resolve);
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end(body);
    });
  }
  expect(sockets.size).toBe(1);
  expect(cookie).toMatch(/^baton_sid=/);
  return { sessionId: cookie.slice('baton_sid='.length), socket: [...sockets][0]!, agent };
}

/** The same over one HTTP/2 session (TLS, ALPN h2): the proxy names the session through HTTP/2's socket proxy. */
async function trafficH2(port: number): Promise<{ sessionId: string; socket: Socket; agent: { destroy(): void } }> {
  const session = http2.connect(`https://127.0.0.1:${port}`, { rejectUnauthorized: false });
  session.on('error', () => undefined);
  let cookie = '';
  try {
    for (let i = 0; i < 6; i++) {
      const body = i % 2 === 1 ? Buffer.alloc(1000 * i + 17, 0x61) : undefined;
      await new Promise<void>((resolve, reject) => {
        const headers: http2.OutgoingHttpHeaders = { ':path': `/r${i}`, ':method': body === undefined ? 'GET' : 'POST' };
        if (cookie !== '') headers.cookie = cookie;
        const stream = session.request(headers);
        stream.on('response', (h) => {
          const set = h['set-cookie'];
          const line = (Array.isArray(set) ? set : []).find((c) => c.startsWith('baton_sid='));
          if (line !== undefined) cookie = line.split(';')[0]!;
        });
        stream.resume();
        stream.on('end', resolve);
        stream.on('error', reject);
        stream.end(body);
      });
    }
  } catch (err) {
    session.destroy();
    throw err;
  }
  expect(cookie).toMatch(/^baton_sid=/);
  return { sessionId: cookie.slice('baton_sid='.length), socket: session.socket as Socket, agent: { destroy: () => session.destroy() } };
}

/**
 * What `ss -tin` says about the server side of the connection (proxy port → client port);
 * with -o, without which ss (iproute2 6.1) leaves out the ts and sack options.
 */
function ssView(proxyPort: number, clientPort: number): { mss: number; wscale: [number, number]; ts: boolean; sack: boolean; rto: number; sndWnd: number } {
  const out = execFileSync('ss', ['-tinoH', 'state', 'established', `( sport = :${proxyPort} and dport = :${clientPort} )`], { encoding: 'utf8', timeout: 10_000 });
  const field = (name: string) => {
    const m = new RegExp(`(?:^|\\s)${name}:(\\S+)`).exec(out);
    if (m === null) throw new Error(`ss printed no ${name}: ${out}`);
    return m[1]!;
  };
  const [snd, rcv] = field('wscale').split(',').map(Number);
  return {
    mss: Number(field('mss')),
    wscale: [snd!, rcv!],
    ts: /\sts\s/.test(out),
    sack: /\ssack\s/.test(out),
    rto: Number(field('rto')),
    sndWnd: Number(field('snd_wnd')),
  };
}

async function tcpPart(api: BatonClient, sessionId: string): Promise<TcpConnectionState | undefined> {
  const session = await api.get(sessionId, { parts: ['tcp'] });
  const part = session?.parts.find((p) => p.name === 'tcp');
  return part === undefined ? undefined : TcpConnectionState.decode(part.value);
}

for (const kind of ['plain HTTP', 'TLS', 'HTTP/2'] as const) {
  const tls = kind !== 'plain HTTP';
  captureTest(`${kind}: the session's tcp part matches the kernel's view: positions exact against the client's own sequences, options equal to ss -tin; unchanged samples are not written`, async (syscalls) => {
    const { node, port } = await startProxyNode(undefined, tls);
    const api = new BatonClient(node.apiAddress);
    const { sessionId, socket, agent } = kind === 'HTTP/2' ? await trafficH2(port) : await traffic(port, tls);
    try {
      const clientFd = socketFd(socket)!;
      const clientPort = socket.localPort!;
      let last: TcpConnectionState | undefined;
      let client = queueSequences(syscalls, clientFd);
      // The traffic has stopped: poll until the captured state is the idle connection's.
      await pollUntil(
        'the tcp part shows the idle connection',
        async () => {
          client = queueSequences(syscalls, clientFd);
          last = await tcpPart(api, sessionId);
          return last !== undefined && last.receiveNext === client.writeSeq && last.sendNext === client.receiveNext && last.sendUnacknowledged === client.receiveNext;
        },
        WAIT_MS,
      ).catch((err: Error) => {
        throw new Error(`${err.message}; client view ${JSON.stringify(client)}, part ${JSON.stringify(last, (_key, value: unknown) => (typeof value === 'bigint' ? String(value) : value))}`);
      });
      const part = last!;
      expect(part).toMatchObject({
        localAddress: '127.0.0.1',
        localPort: port,
        remoteAddress: '127.0.0.1',
        remotePort: clientPort,
        state: TcpState.TCP_STATE_ESTABLISHED,
        sendSequenceKnown: true,
        receiveSequenceKnown: true,
      });
      const ss = ssView(port, clientPort);
      expect({ mss: part.mss, wscale: [part.sendWindowScale, part.receiveWindowScale], ts: part.timestampsEnabled, sack: part.sackPermitted, rto: part.rtoMs, sndWnd: part.sendWindow }).toEqual(ss);
      expect(part.receiveWindow).toBeGreaterThan(0);

      // Idle: later samples are unchanged and write nothing.
      const before = await node.scrape();
      await pollUntil(
        'ten more unchanged samples',
        async () => (await node.scrape()).value('baton_tcp_captures_total', { outcome: 'unchanged' }) >= before.value('baton_tcp_captures_total', { outcome: 'unchanged' }) + 10,
        WAIT_MS,
      );
      const after = await node.scrape();
      expect(before.value('baton_tcp_captures_total', { outcome: 'written' })).toBeGreaterThan(0);
      expect(after.value('baton_tcp_captures_total', { outcome: 'written' })).toBe(before.value('baton_tcp_captures_total', { outcome: 'written' }));
      expect(after.value('baton_tcp_captures_total', { outcome: 'failed' })).toBe(0);
      expect(await tcpPart(api, sessionId)).toEqual(part);
    } finally {
      agent.destroy();
      api.close();
    }
  });
}

captureTest('without CAP_NET_ADMIN: rcv_nxt is exact (from the saved SYN), snd_una and snd_nxt are marked unknown and 0, the rest as ss -tin says', async (syscalls) => {
  const { node, port } = await startProxyNode(['setpriv', '--bounding-set', '-net_admin']);
  expect(node.logs.find((l) => l.msg === 'TCP state capture on')?.method).toBe('saved_syn');
  const api = new BatonClient(node.apiAddress);
  const { sessionId, socket, agent } = await traffic(port);
  try {
    const clientFd = socketFd(socket)!;
    let last: TcpConnectionState | undefined;
    await pollUntil(
      'the tcp part shows the idle connection',
      async () => {
        last = await tcpPart(api, sessionId);
        return last !== undefined && last.receiveNext === queueSequences(syscalls, clientFd).writeSeq;
      },
      WAIT_MS,
    );
    expect(last).toMatchObject({ receiveSequenceKnown: true, sendSequenceKnown: false, sendNext: 0, sendUnacknowledged: 0, localPort: port, remotePort: socket.localPort });
    const ss = ssView(port, socket.localPort!);
    expect({ mss: last!.mss, wscale: [last!.sendWindowScale, last!.receiveWindowScale], ts: last!.timestampsEnabled, sack: last!.sackPermitted }).toEqual({
      mss: ss.mss,
      wscale: ss.wscale,
      ts: ss.ts,
      sack: ss.sack,
    });
  } finally {
    agent.destroy();
    api.close();
  }
});
