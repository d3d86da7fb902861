/**
 * Live TCP handover end to end, in network namespaces this test creates (root; CI runs as
 * root): a router, a client namespace, and nodes a and b each with a web server behind its
 * proxy; the virtual address is on both nodes' loopback and routed to a. A client holds 20
 * idle keep-alive connections and one pipelined request stream through a's proxy; a gets
 * SIGTERM with --tcp-handover, its hook moves the route to b; every connection goes on
 * through b: no FIN or RST at the client (no 'end', 'error' or 'close' on its sockets),
 * every answer checked byte for byte, each session kept. The handover time is printed.
 *
 * When namespaces cannot be made here, the test fails with the reason under CI and is
 * skipped with the reason in its title elsewhere, as the chaos tests do.
 */
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { BatonProcess } from '../bench/support/baton-process';
import { spawnChild, type ChildHandle } from '../bench/support/child-process';
import { tcpRepairUnavailable } from '../sidecar/capture/tcp-repair';
import { HandoverLab, setnsUnavailable, VIP, type HostLabel } from './support/handover-lab';
import { BATON_BIN, NamespacedBaton, namespacesUnavailable } from './support/netns';
import { namespaceTest } from './support/netns-cluster';

const missing = namespacesUnavailable() ?? setnsUnavailable() ?? tcpRepairUnavailable();
const PROXY_PORT = 8000;
const WEB_PORT = 8080;
const PEER_PORT = 7401;
/** 20 as the issue asks; HANDOVER_IDLE_CONNECTIONS=500 measures a larger handover (the figure in docs/continuity.md). */
const IDLE_CONNECTIONS = Number(process.env.HANDOVER_IDLE_CONNECTIONS ?? 20);
const PIPELINE_DEPTH = 4;
/** The pipelined stream stops after this many batches whatever happens (a bounded loop). */
const MAX_BATCHES = 5000;
const DRAIN_TIMEOUT_SECONDS = 10;
const ANSWER_TIMEOUT_MS = 10_000;

/** The web server behind each proxy: the same bytes for the same path on both, plus who answered and the session it saw. */
const WEB_SERVER = `
  const http = require('node:http');
  const [label, port] = process.argv.slice(1);
  process.stdin.on('end', () => process.exit(0)).resume();
  http.createServer((req, res) => {
    const body = require('node:crypto').createHash('sha256').update(req.url).digest('hex').repeat(1 + (req.url.length % 7)) + '\\n';
    res.writeHead(200, {
      'content-type': 'text/plain',
      'content-length': Buffer.byteLength(body),
      'x-served-by': label,
      'x-seen-session': req.headers['x-baton-session-id'] || '',
      'x-seen-resumed-from': req.headers['x-baton-resumed-from'] || '',
    });
    res.end(body);
  }).listen(Number(port), '127.0.0.1', () => console.log('listening'));`;

function expectedBody(url: string): string {
  const hash = createHash('sha256').update(url).digest('hex');
  return `${hash.repeat(1 + (url.length % 7))}\n`;
}

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** One client connection: requests written, answers parsed strictly from every byte received, events recorded. */
class ClientConnection {
  private buffer = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  readonly events: string[] = [];
  cookie: string | undefined;
  sessionId: string | undefined;

  constructor(
    readonly name: string,
    readonly socket: net.Socket,
  ) {
    socket.on('data', (chunk: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      for (const w of this.waiters.splice(0)) w();
    });
    socket.on('end', () => this.events.push('end'));
    socket.on('error', (err) => this.events.push(`error ${err.message}`));
    socket.on('close', () => this.events.push('close'));
  }

  /** Writes `urls` as pipelined GETs in one write; resolves with their answers, in order, each checked. */
  async get(urls: readonly string[]): Promise<Answer[]> {
    const cookie = this.cookie === undefined ? '' : `cookie: ${this.cookie}\r\n`;
    this.socket.write(urls.map((url) => `GET ${url} HTTP/1.1\r\nhost: shop.test\r\n${cookie}\r\n`).join(''));
    const answers: Answer[] = [];
    for (const url of urls) {
      const answer = await this.readAnswer();
      if (answer.status !== 200) throw new Error(`${this.name} ${url}: status ${answer.status}`);
      if (answer.body !== expectedBody(url)) throw new Error(`${this.name} ${url}: the body differs from what the web server sent`);
      const setCookie = answer.headers['set-cookie'];
      if (setCookie !== undefined) {
        if (this.cookie !== undefined) throw new Error(`${this.name} ${url}: a new session was minted for a client that has one`);
        this.cookie = setCookie.split(';')[0];
      }
      this.sessionId ??= answer.headers['x-seen-session'];
      if (answer.headers['x-seen-session'] !== this.sessionId) throw new Error(`${this.name} ${url}: the web server saw another session`);
      answers.push(answer);
    }
    return answers;
  }

  private async readAnswer(): Promise<Answer> {
    const deadline = Date.now() + ANSWER_TIMEOUT_MS;
    for (;;) {
      const parsed = this.parse();
      if (parsed !== undefined) return parsed;
      if (Date.now() > deadline) throw new Error(`${this.name}: no complete answer within ${ANSWER_TIMEOUT_MS} ms (events: ${this.events.join(', ') || 'none'})`);
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 100);
      });
    }
  }

  /** One answer off the front of the buffer, or undefined when it has not all arrived. */
  private parse(): Answer | undefined {
    const end = this.buffer.indexOf('\r\n\r\n');
    if (end < 0) return undefined;
    const [statusLine, ...lines] = this.buffer.subarray(0, end).toString('latin1').split('\r\n');
    const match = /^HTTP\/1\.1 (\d{3}) /.exec(statusLine!);
    if (match === null) throw new Error(`${this.name}: not an HTTP/1.1 status line: ${JSON.stringify(statusLine)}`);
    const headers: Record<string, string> = {};
    for (const line of lines) {
      const colon = line.indexOf(':');
      headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    if (headers['transfer-encoding'] !== undefined) throw new Error(`${this.name}: a chunked answer (the web server sends content-length)`);
    const length = Number(headers['content-length']);
    if (!Number.isInteger(length)) throw new Error(`${this.name}: an answer without content-length`);
    if (this.buffer.length < end + 4 + length) return undefined;
    const body = this.buffer.subarray(end + 4, end + 4 + length).toString('latin1');
    this.buffer = this.buffer.subarray(end + 4 + length);
    return { status: Number(match[1]), headers, body };
  }
}

let lab: HandoverLab | undefined;
const children: ChildHandle[] = [];
const nodes: NamespacedBaton[] = [];
const socketDirs: string[] = [];

beforeAll(async () => {
  if (missing === undefined) lab = await HandoverLab.create();
}, 30_000);

afterAll(async () => {
  await Promise.all([...nodes.map((n) => n.stop('SIGKILL', 1000)), ...children.map((c) => c.stop('SIGKILL'))]);
  await lab?.destroy();
  for (const dir of socketDirs) rmSync(dir, { recursive: true, force: true });
});

async function startWebServer(l: HandoverLab, label: HostLabel): Promise<void> {
  const child = spawnChild({
    name: `web server on ${label}`,
    command: 'ip',
    args: ['netns', 'exec', l.netns(label), process.execPath, '-e', WEB_SERVER, label, String(WEB_PORT)],
    stdin: 'pipe',
  });
  children.push(child);
  await child.waitFor((line) => (line === 'listening' ? true : undefined), 10_000, 'listen');
}

async function startBaton(l: HandoverLab, label: 'a' | 'b', socketDir: string, clusterKey: string, hookOverride?: string): Promise<NamespacedBaton> {
  const apiSocket = path.join(socketDir, `${label}-api.sock`);
  const hook = hookOverride ?? l.routeCommand(label === 'a' ? 'b' : 'a').join(' ');
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('BATON_')));
  const node = await BatonProcess.start({
    name: `baton on ${label}`,
    command: 'ip',
    args: [
      'netns', 'exec', l.netns(label), process.execPath, BATON_BIN, 'sidecar',
      '--node-id', label,
      '--api-listen', `unix:${apiSocket}`,
      '--metrics-listen', '127.0.0.1:9464',
      '--peer-listen', `${l.address(label)}:${PEER_PORT}`,
      '--peers', `${l.address('a')}:${PEER_PORT},${l.address('b')}:${PEER_PORT}`,
      '--replicas', '2',
      '--partitions', '16',
      '--drain-timeout-seconds', String(DRAIN_TIMEOUT_SECONDS),
      '--proxy-listen', `0.0.0.0:${PROXY_PORT}`,
      '--proxy-upstream', `http://127.0.0.1:${WEB_PORT}`,
      '--tcp-handover',
      '--virtual-address', VIP,
      '--handover-hook', hook,
      '--log-level', 'info',
    ],
    env: { ...base, BATON_CLUSTER_KEY: clusterKey },
    startTimeoutMs: 20_000,
  });
  const baton = new NamespacedBaton({ label, netns: l.netns(label), address: l.address(label), apiSocket, httpSocket: path.join(socketDir, 'unused.sock') }, node);
  await node.ready();
  nodes.push(baton);
  return baton;
}

async function pollUntil(check: () => Promise<boolean>, what: string, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe('live TCP handover', () => {
  namespaceTest(
    `${IDLE_CONNECTIONS} idle keep-alive connections and a pipelined stream move from a to b with no FIN, RST or lost byte`,
    missing,
    async () => {
      const l = lab!;
      const socketDir = mkdtempSync(path.join(tmpdir(), 'baton-handover-'));
      socketDirs.push(socketDir);
      const clusterKey = randomBytes(32).toString('base64');
      await Promise.all([startWebServer(l, 'a'), startWebServer(l, 'b')]);
      const a = await startBaton(l, 'a', socketDir, clusterKey);
      const b = await startBaton(l, 'b', socketDir, clusterKey);
      await pollUntil(async () => (await a.memberStates()).b === 'alive' && (await b.memberStates()).a === 'alive', 'a and b see each other alive', 20_000);

      // 20 keep-alive connections, each with its session, then idle.
      const idle: ClientConnection[] = [];
      for (let i = 0; i < IDLE_CONNECTIONS; i++) {
        const connection = new ClientConnection(`idle ${i}`, await l.connectIn('client', VIP, PROXY_PORT));
        idle.push(connection);
        const [first] = await connection.get([`/idle/${i}/login`]);
        expect(first!.headers['x-served-by']).toBe('a');
        expect(connection.cookie).toBeDefined();
        await connection.get([`/idle/${i}/again`]);
      }

      // One pipelined stream, running through the handover.
      const stream = new ClientConnection('pipelined', await l.connectIn('client', VIP, PROXY_PORT));
      await stream.get(['/pipe/login']);
      const servedBy: string[] = [];
      let stop = false;
      let streamFailure: Error | undefined;
      const streamRunning = () => {
        if (streamFailure !== undefined) throw streamFailure;
        return Promise.resolve(true);
      };
      const streaming = (async () => {
        for (let batch = 0; batch < MAX_BATCHES && !stop; batch++) {
          const urls = Array.from({ length: PIPELINE_DEPTH }, (_, k) => `/pipe/${batch}/${k}`);
          for (const answer of await stream.get(urls)) servedBy.push(answer.headers['x-served-by']!);
        }
      })().catch((err: Error) => {
        streamFailure = err;
      });
      await pollUntil(async () => (await streamRunning()) && servedBy.length >= 10 * PIPELINE_DEPTH, 'the stream is under way through a', 10_000);

      const stopping = a.stop('SIGTERM', DRAIN_TIMEOUT_SECONDS * 1000 + 5000);
      // A client that connects while a hands over is neither refused nor reset: a ignores its
      // SYN until the address has moved, and b takes the retry.
      await pollUntil(() => Promise.resolve(a.logs.some((e) => e.msg === 'baton node draining')), 'a drains', 10_000);
      const lateConnect = l.connectIn('client', VIP, PROXY_PORT);
      const stopped = await stopping;
      expect({ code: stopped.code, killed: stopped.killed }).toEqual({ code: 0, killed: false });
      const late = new ClientConnection('connected during the handover', await lateConnect);
      expect((await late.get(['/late']))[0]!.headers['x-served-by']).toBe('b');
      const done = a.logs.find((entry) => entry.msg === 'tcp handover done');
      if (done === undefined) throw new Error(`a logged no handover:\n${a.logTail(30)}`);

      // Every idle connection goes on, through b, in its own session.
      const resumedAhead: boolean[] = [];
      for (const [i, connection] of idle.entries()) {
        const [answer] = await connection.get([`/idle/${i}/after-handover`]);
        expect(answer!.headers['x-served-by']).toBe('b');
        resumedAhead.push(answer!.headers['x-seen-resumed-from'] === '');
      }
      const firstOnB = servedBy.length;
      await pollUntil(async () => (await streamRunning()) && servedBy.length >= firstOnB + 10 * PIPELINE_DEPTH, 'the stream goes on through b', 10_000);
      stop = true;
      await streaming;
      await streamRunning();

      expect(done.handed_over).toBe(IDLE_CONNECTIONS + 1);
      expect(done.revived).toBe(0);
      expect(servedBy.at(-1)).toBe('b');
      for (const connection of [...idle, stream, late]) expect({ name: connection.name, events: connection.events }).toEqual({ name: connection.name, events: [] });
      console.log(
        `tcp handover: ${String(done.handed_over)} connections a → b in ${String(done.duration_ms)} ms from SIGTERM ` +
          `(frozen after ${String(done.frozen_after_ms)} ms; peer restore ${String(done.prepare_ms)} ms, hook ${String(done.hook_ms)} ms, go-live ${String(done.commit_ms)} ms); ` +
          `${servedBy.length} pipelined answers; ` +
          `${resumedAhead.filter(Boolean).length}/${IDLE_CONNECTIONS} sessions taken over by b before their next request`,
      );
      const metricsOfB = await l.exec('b', [process.execPath, '-e', "require('node:http').get('http://127.0.0.1:9464/metrics', (r) => r.pipe(process.stdout))"]);
      expect(metricsOfB).toContain(`baton_tcp_handover_connections_total{outcome="taken"} ${IDLE_CONNECTIONS + 1}`);
      const restoredOnB = b.logs.find((e) => e.msg === 'tcp handover: connections restored, waiting for the address');
      const liveOnB = b.logs.find((e) => e.msg === 'tcp handover: connections live');
      console.log(`on b: ${String(restoredOnB?.restored)} restored in ${String(restoredOnB?.restore_ms)} ms, live in ${String(liveOnB?.live_ms)} ms`);
      for (const connection of [...idle, stream, late]) connection.socket.destroy();
    },
    120_000,
  );

  namespaceTest(
    'a failing hook leaves the connections on a, revived, and the drain closes them normally (a FIN, not a reset or silence)',
    missing,
    async () => {
      const l = lab!;
      await Promise.all(nodes.splice(0).map((n) => n.stop('SIGTERM', DRAIN_TIMEOUT_SECONDS * 1000 + 5000)));
      await l.routeVipTo('a');
      const socketDir = mkdtempSync(path.join(tmpdir(), 'baton-handover-'));
      socketDirs.push(socketDir);
      const clusterKey = randomBytes(32).toString('base64');
      const a = await startBaton(l, 'a', socketDir, clusterKey, 'sleep 1; echo the address cannot move >&2; exit 3');
      const b = await startBaton(l, 'b', socketDir, clusterKey);
      await pollUntil(async () => (await a.memberStates()).b === 'alive' && (await b.memberStates()).a === 'alive', 'a and b see each other alive', 20_000);
      const clients: ClientConnection[] = [];
      for (let i = 0; i < 5; i++) {
        const connection = new ClientConnection(`idle ${i}`, await l.connectIn('client', VIP, PROXY_PORT));
        clients.push(connection);
        await connection.get([`/stay/${i}`]);
      }
      const stopped = await a.stop('SIGTERM', DRAIN_TIMEOUT_SECONDS * 1000 + 5000);
      expect({ code: stopped.code, killed: stopped.killed }).toEqual({ code: 0, killed: false });
      expect(a.logs.find((e) => e.msg === 'tcp handover: --handover-hook failed; the connections stay here and drain')?.err).toMatch(/exit 3: the address cannot move/);
      expect(a.logs.find((e) => e.msg === 'tcp handover done')).toMatchObject({ handed_over: 0, revived: 5 });
      expect(b.logs.find((e) => e.msg === 'tcp handover: restored connections dropped')).toMatchObject({ connections: 5, why: 'the sender called it off' });
      // The drain closed them as it closes any idle connection: a FIN, never a reset. (A
      // connection that was not revived would have been closed in repair mode: no FIN at all.)
      await pollUntil(() => Promise.resolve(clients.every((c) => c.events.includes('close'))), 'the drain closed every connection', 10_000);
      for (const c of clients) expect({ name: c.name, events: c.events }).toEqual({ name: c.name, events: ['end', 'close'] });
    },
    120_000,
  );
});

describe('--tcp-handover at start', () => {
  it('refuses to start without CAP_NET_ADMIN, naming the reason (exit 2), before binding anything', () => {
    if (process.getuid?.() !== 0) throw new Error('cannot run here: dropping CAP_NET_ADMIN needs root (CI runs as root)');
    const result = spawnSync(
      'setpriv',
      [
        '--bounding-set', '-net_admin', '--inh-caps', '-net_admin', '--',
        process.execPath, BATON_BIN, 'sidecar',
        '--node-id', 'x', '--api-listen', '127.0.0.1:0', '--metrics-listen', '127.0.0.1:0', '--peer-listen', '127.0.0.1:0',
        '--proxy-listen', '0.0.0.0:0', '--proxy-upstream', 'http://127.0.0.1:1', '--tcp-handover', '--virtual-address', '127.0.0.1',
      ],
      { encoding: 'utf8', timeout: 20_000 },
    );
    expect(result.error).toBeUndefined();
    expect(result.status).toBe(2);
    expect(result.stderr).toMatch(/--tcp-handover cannot work in this process: TCP_REPAIR needs CAP_NET_ADMIN/);
  });
});
