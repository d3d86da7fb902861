/**
 * baton's capture proxy against nginx as a reverse proxy, and both against calling the web
 * server directly, in the same run.
 *
 * One web server (bench/proxy-upstream.ts: node:http, 1 KiB answers, also HTTPS on a second
 * port) behind (a) `baton sidecar --proxy-listen … --proxy-upstream http://… --tls-cert-file
 * … --tls-key-file …` and (b) nginx with one worker process, the same certificate (RSA-2048)
 * and a keep-alive upstream pool; (c) and (d) are the web server called directly over HTTP
 * and over HTTPS. Per row and run:
 *   - throughput: autocannon (its CLI, a process of its own), 64 keep-alive connections,
 *     HTTP/1.1 over TLS, a warm-up run, then the measured run; CPU of the proxy and of the
 *     web server over that run;
 *   - latency: one keep-alive connection, one request at a time (node's https Agent in this
 *     process, timed with hrtime: autocannon's histogram counts whole milliseconds).
 * Every request carries the same session cookie (minted by baton's proxy on a first
 * request), as a returning browser does. Rows rotate their order each run; medians over
 * runs, ratios within each run. Targets (issue 13): baton ≥ 0.8× nginx in requests/s;
 * baton's added latency p50 (over calling the web server directly over HTTP) ≤ 0.3 ms.
 *
 * nginx comes from the OS (Debian: `apt-get install -y nginx-light`); without it the nginx
 * row is skipped with that advice. A build without --proxy-listen skips the baton row;
 * BENCH_BATON_MAIN names another build's dist/sidecar/cli/main.js to measure instead.
 *
 * Environment: BENCH_SECONDS (measured seconds per throughput run, default 5),
 * BENCH_WARMUP_SECONDS (1), BENCH_LATENCY_SECONDS (2), BENCH_RUNS (3), BENCH_CONNECTIONS
 * (64), BENCH_BATON_MAIN, BENCH_QUIET_WAIT_SECONDS (children.ts), BENCH_MAX_MINUTES (15).
 *
 * Bounds: autocannon runs for its duration (killed after it plus a minute), every latency
 * request has a 5 s time-out and the slice a watchdog; every process is stopped and the
 * scratch directory removed at the end, on error and on Ctrl-C.
 */
import { accessSync, constants as fsConstants, readFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  cpuSecondsOf,
  findOnPath,
  freePort,
  handleInterruptions,
  interruption,
  machineBusyCpuSeconds,
  ownCpuSeconds,
  quietWaitSeconds,
  runMain,
  sleep,
  startChild,
  waitForQuiet,
  type Child,
} from './children';
import { freePeerPorts, SIDECAR_MAIN, startReplica, type Replica } from './replication-cluster';
import { describeMachine, envNumber, formatCount, formatFixed, formatTable, machineInfo, median } from './stats';
import { writeBenchCertificate, type CertificateFiles } from './support/bench-certificate';
import { runClosedLoopSlice, type SliceResult } from './support/closed-loop';
import { runToCompletion } from './support/child-process';
import { scrape, seriesName, type Scrape } from './support/prometheus-scrape';

const MEASURE_SECONDS = envNumber('BENCH_SECONDS', 5);
const WARMUP_SECONDS = envNumber('BENCH_WARMUP_SECONDS', 1);
const LATENCY_SECONDS = envNumber('BENCH_LATENCY_SECONDS', 2);
const RUNS = Math.max(1, Math.round(envNumber('BENCH_RUNS', 3)));
const CONNECTIONS = Math.max(1, Math.round(envNumber('BENCH_CONNECTIONS', 64)));
const QUIET_WAIT_SECONDS = quietWaitSeconds();
const BATON_MAIN = process.env.BENCH_BATON_MAIN || SIDECAR_MAIN;
const REQUEST_TIMEOUT_MS = 5000;
const START_TIMEOUT_MS = 30_000;
const SESSION_COOKIE = 'baton_sid';
/** The web server's answer size (bench/proxy-upstream.ts answers with this many bytes). */
const RESPONSE_BYTES = 1024;
/** Targets of issue 13. */
const TARGET_RATIO = 0.8;
const TARGET_ADDED_P50_MS = 0.3;
const NGINX_INSTALL = 'apt-get update && apt-get install -y nginx-light';

type RowName = 'direct (HTTP)' | 'direct (HTTPS)' | 'nginx, 1 worker' | 'baton --proxy-listen';

interface Row {
  name: RowName;
  url: string;
  /** The proxy's processes (nginx: master and worker), or the web server's for the direct rows. */
  pids: () => (number | undefined)[];
  /** baton's /metrics: what the proxy did per request is printed beside its row. */
  metricsUrl?: string;
}

interface ThroughputResult {
  requestsPerSecond: number;
  /** autocannon's, in whole milliseconds. */
  p50Ms: number;
  p99Ms: number;
  errors: number;
  non2xx: number;
  proxyCpu: number;
  upstreamCpu: number;
  otherCpu: number;
  /** For baton: its proxy counters' increase per request over the measured run, by series. */
  perRequest: Record<string, number>;
}

/** baton's counters that say what its proxy does per request. */
const PROXY_COUNTERS = ['baton_proxy_resumes_total', 'baton_proxy_captures_total', 'baton_resumes_total', 'baton_operations_total'];

interface RowResult {
  throughput: ThroughputResult;
  latency: SliceResult;
}

// --- processes --------------------------------------------------------------------------

/** Children of a process (Linux), e.g. nginx's workers under its master. */
function childPids(pid: number | undefined): number[] {
  if (pid === undefined) return [];
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'latin1').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

function cpuOf(pids: readonly (number | undefined)[]): number {
  return pids.reduce((sum: number, pid) => sum + cpuSecondsOf(pid), 0);
}

async function startUpstream(cert: CertificateFiles, children: Child[]): Promise<{ child: Child; httpPort: number; httpsPort: number }> {
  // startChild passes this process's environment on: set the certificate for this start only.
  Object.assign(process.env, { BENCH_CERT_FILE: cert.certFile, BENCH_KEY_FILE: cert.keyFile, BENCH_RESPONSE_BYTES: String(RESPONSE_BYTES) });
  let child: Child;
  try {
    child = startChild('web server', process.execPath, [path.join(__dirname, 'proxy-upstream.js')]);
  } finally {
    delete process.env.BENCH_CERT_FILE;
    delete process.env.BENCH_KEY_FILE;
    delete process.env.BENCH_RESPONSE_BYTES;
  }
  children.push(child);
  const [line] = await child.waitForLine(/^\{"http":\d+,"https":\d+\}$/, START_TIMEOUT_MS);
  const ports = JSON.parse(line) as { http: number; https: number };
  return { child, httpPort: ports.http, httpsPort: ports.https };
}

/** nginx on the PATH, or where Debian puts it (sbin is not on every user's PATH). */
function nginxBinary(): string | undefined {
  return findOnPath('nginx') ?? ['/usr/sbin/nginx', '/usr/local/sbin/nginx'].find(isExecutable);
}

function isExecutable(file: string): boolean {
  try {
    accessSync(file, fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** nginx, one worker, TLS with `cert`, proxying to the web server over a keep-alive pool; logs to `dir`. */
async function startNginx(binary: string, dir: string, cert: CertificateFiles, upstreamPort: number, children: Child[]): Promise<{ child: Child; port: number }> {
  const port = await freePort();
  const root = path.join(dir, 'nginx');
  mkdirSync(path.join(root, 'temp'), { recursive: true });
  const conf = path.join(root, 'nginx.conf');
  writeFileSync(
    conf,
    [
      'worker_processes 1;',
      'daemon off;',
      `pid ${root}/nginx.pid;`,
      `error_log ${root}/error.log warn;`,
      'events { worker_connections 4096; }',
      'http {',
      '  access_log off;',
      ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `  ${t}_temp_path ${root}/temp/${t};`),
      `  upstream web { server 127.0.0.1:${upstreamPort}; keepalive ${CONNECTIONS}; }`,
      '  server {',
      `    listen 127.0.0.1:${port} ssl;`,
      `    ssl_certificate ${cert.certFile};`,
      `    ssl_certificate_key ${cert.keyFile};`,
      '    ssl_protocols TLSv1.2 TLSv1.3;',
      '    keepalive_requests 1000000;',
      '    location / {',
      '      proxy_pass http://web;',
      '      proxy_http_version 1.1;',
      '      proxy_set_header Connection "";',
      '      proxy_set_header Host $host;',
      '      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;',
      '      proxy_set_header X-Forwarded-Proto $scheme;',
      '    }',
      '  }',
      '}',
      '',
    ].join('\n'),
  );
  const child = startChild('nginx', binary, ['-e', `${root}/error.log`, '-p', root, '-c', conf]);
  children.push(child);
  await Promise.race([waitForAnswer(`https://127.0.0.1:${port}/`, cert.certPem, START_TIMEOUT_MS), child.exited]);
  return { child, port };
}

/** True when the build's `baton sidecar --help` offers --proxy-listen. */
async function hasProxy(main: string): Promise<boolean> {
  const help = await runToCompletion({ name: 'baton sidecar --help', command: process.execPath, args: [main, 'sidecar', '--help'] }, 30_000);
  return help.stdout.includes('--proxy-listen');
}

async function startBatonProxy(cert: CertificateFiles, upstreamPort: number): Promise<{ sidecar: Replica; port: number }> {
  const [peerPort] = await freePeerPorts(1);
  const port = await freePort();
  const sidecar = await startReplica(
    'proxy',
    [
      '--peer-listen', `127.0.0.1:${peerPort}`,
      '--proxy-listen', `127.0.0.1:${port}`,
      '--proxy-upstream', `http://127.0.0.1:${upstreamPort}`,
      '--tls-cert-file', cert.certFile,
      '--tls-key-file', cert.keyFile,
    ],
    [],
    BATON_MAIN,
  );
  try {
    await Promise.race([waitForAnswer(`https://127.0.0.1:${port}/`, cert.certPem, START_TIMEOUT_MS), sidecar.child.exited]);
  } catch (err) {
    sidecar.client.close();
    await sidecar.child.stop(5000);
    throw err;
  }
  return { sidecar, port };
}

// --- requests ---------------------------------------------------------------------------

interface Answer {
  status: number;
  bytes: number;
  setCookie: string[];
}

function get(url: string, agent: http.Agent, ca: string, headers: http.OutgoingHttpHeaders): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const options: https.RequestOptions = { agent, headers, timeout: REQUEST_TIMEOUT_MS, ...(url.startsWith('https:') ? { ca, servername: 'localhost' } : {}) };
    const req = (url.startsWith('https:') ? https : http).get(url, options, (res) => {
      let bytes = 0;
      res.on('data', (chunk: Buffer) => (bytes += chunk.length));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes, setCookie: res.headers['set-cookie'] ?? [] }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url}: no answer within ${REQUEST_TIMEOUT_MS} ms`)));
    req.on('error', reject);
  });
}

/** Polls `url` until it answers 200 with the web server's body. */
async function waitForAnswer(url: string, ca: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const agent = new (url.startsWith('https:') ? https.Agent : http.Agent)({ keepAlive: false });
  let last = 'no answer';
  try {
    while (Date.now() < deadline) {
      try {
        const answer = await get(url, agent, ca, {});
        if (answer.status === 200 && answer.bytes === RESPONSE_BYTES) return;
        last = `${answer.status}, ${answer.bytes} bytes`;
      } catch (err) {
        last = (err as Error).message;
      }
      await sleep(100);
    }
  } finally {
    agent.destroy();
  }
  throw new Error(`${url} did not answer 200 with ${RESPONSE_BYTES} bytes within ${timeoutMs} ms (last: ${last})`);
}

/** A session cookie minted by baton's proxy (a returning browser's), or a stand-in of the same form without it. */
async function sessionCookie(batonUrl: string | undefined, ca: string): Promise<string> {
  if (batonUrl === undefined) return `${SESSION_COOKIE}=AAAAAAAAAAAAAAAAAAAAAA`;
  const agent = new https.Agent({ keepAlive: false });
  try {
    const answer = await get(batonUrl, agent, ca, {});
    const cookie = answer.setCookie.map((c) => c.split(';')[0]!).find((c) => c.startsWith(`${SESSION_COOKIE}=`));
    if (cookie === undefined) throw new Error(`baton's proxy set no ${SESSION_COOKIE} cookie on a first request (got ${JSON.stringify(answer.setCookie)})`);
    return cookie;
  } finally {
    agent.destroy();
  }
}

// --- measuring --------------------------------------------------------------------------

const AUTOCANNON = require.resolve('autocannon/autocannon.js');

interface AutocannonJson {
  requests: { total: number };
  latency: { p50: number; p99: number };
  errors: number;
  timeouts: number;
  non2xx: number;
  duration: number;
}

async function autocannon(url: string, seconds: number, cookie: string): Promise<AutocannonJson> {
  const run = await runToCompletion(
    { name: 'autocannon', command: process.execPath, args: [AUTOCANNON, '-c', String(CONNECTIONS), '-d', String(seconds), '-j', '-n', '-H', `cookie=${cookie}`, url] },
    (seconds + 60) * 1000,
  );
  if (run.code !== 0) throw new Error(`autocannon exited with ${run.code}: ${run.stderr.slice(0, 500)}`);
  return JSON.parse(run.stdout) as AutocannonJson;
}

async function measureThroughput(row: Row, upstreamPid: number | undefined, cookie: string): Promise<ThroughputResult> {
  await autocannon(row.url, WARMUP_SECONDS, cookie);
  const pids = row.pids();
  const proxyPids = pids.includes(upstreamPid) ? [] : pids;
  const metricsBefore: Scrape | undefined = row.metricsUrl === undefined ? undefined : await scrape(row.metricsUrl);
  const before = { wall: process.hrtime.bigint(), proxy: cpuOf(proxyPids), upstream: cpuSecondsOf(upstreamPid), machine: machineBusyCpuSeconds(), own: ownCpuSeconds() };
  const result = await autocannon(row.url, MEASURE_SECONDS, cookie);
  const wall = Number(process.hrtime.bigint() - before.wall) / 1e9;
  const proxyCpu = (cpuOf(proxyPids) - before.proxy) / wall;
  const upstreamCpu = (cpuSecondsOf(upstreamPid) - before.upstream) / wall;
  // autocannon's own CPU is the load generator's: "other" is everything but it, the proxy and the web server.
  const machine = (machineBusyCpuSeconds() - before.machine) / wall;
  const perRequest: Record<string, number> = {};
  if (row.metricsUrl !== undefined && metricsBefore !== undefined) {
    const after = await scrape(row.metricsUrl);
    for (const name of PROXY_COUNTERS) {
      for (const sample of after.select(name)) {
        const delta = sample.value - metricsBefore.value(name, sample.labels);
        if (delta > 0) perRequest[seriesName(sample)] = delta / result.requests.total;
      }
    }
  }
  return {
    perRequest,
    requestsPerSecond: result.requests.total / (result.duration || MEASURE_SECONDS),
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    errors: result.errors + result.timeouts,
    non2xx: result.non2xx,
    proxyCpu,
    upstreamCpu,
    otherCpu: machine - proxyCpu - upstreamCpu - (ownCpuSeconds() - before.own) / wall,
  };
}

/** One keep-alive connection, one request at a time, timed here. */
async function measureLatency(row: Row, ca: string, cookie: string): Promise<SliceResult> {
  const agent = new (row.url.startsWith('https:') ? https.Agent : http.Agent)({ keepAlive: true, maxSockets: 1 });
  try {
    return await runClosedLoopSlice({
      workers: 1,
      warmupSeconds: Math.min(1, WARMUP_SECONDS),
      measureSeconds: LATENCY_SECONDS,
      serverPid: undefined,
      maxOps: LATENCY_SECONDS * 1_000_000,
      maxErrors: 100,
      maxSamples: LATENCY_SECONDS * 100_000,
      slackMs: REQUEST_TIMEOUT_MS + 10_000,
      operation: async () => {
        const answer = await get(row.url, agent, ca, { cookie });
        if (answer.status !== 200 || answer.bytes !== RESPONSE_BYTES) throw new Error(`${row.name}: ${answer.status}, ${answer.bytes} bytes`);
      },
    });
  } finally {
    agent.destroy();
  }
}

// --- main -------------------------------------------------------------------------------

function percent(fraction: number): string {
  return Number.isFinite(fraction) ? `${Math.round(fraction * 100)}%` : 'n/a';
}

function perRun(values: readonly number[], digits: number): string {
  return values.map((v) => formatFixed(v, digits)).join(', ');
}

async function main(): Promise<void> {
  const disarm = handleInterruptions(Number(process.env.BENCH_MAX_MINUTES ?? 15));
  console.log('baton bench:proxy');
  console.log(describeMachine(machineInfo()));
  console.log(
    `workload: GET of ${RESPONSE_BYTES} B answers from a node:http web server; throughput with autocannon, ${CONNECTIONS} keep-alive connections, ` +
      `warm-up ${WARMUP_SECONDS} s + ${MEASURE_SECONDS} s; latency on one connection, ${LATENCY_SECONDS} s; ${RUNS} run(s); RSA-2048 certificate`,
  );
  const dir = mkdtempSync(path.join(os.tmpdir(), 'baton-bench-proxy-'));
  const children: Child[] = [];
  let baton: Replica | undefined;
  try {
    const cert = writeBenchCertificate(dir);
    const upstream = await startUpstream(cert, children);
    const upstreamPid = upstream.child.process.pid;
    const rows: Row[] = [
      { name: 'direct (HTTP)', url: `http://127.0.0.1:${upstream.httpPort}/`, pids: () => [upstreamPid] },
      { name: 'direct (HTTPS)', url: `https://127.0.0.1:${upstream.httpsPort}/`, pids: () => [upstreamPid] },
    ];
    const nginx = nginxBinary();
    if (nginx === undefined) {
      console.log(`\nnginx is not installed: the nginx row is skipped (Debian/Ubuntu: ${NGINX_INSTALL})`);
    } else {
      const started = await startNginx(nginx, dir, cert, upstream.httpPort, children);
      const master = started.child.process.pid;
      rows.push({ name: 'nginx, 1 worker', url: `https://127.0.0.1:${started.port}/`, pids: () => [master, ...childPids(master)] });
      const version = await runToCompletion({ name: 'nginx -v', command: nginx, args: ['-v'] }, 10_000);
      console.log(`nginx    ${version.stderr.trim()}`);
    }
    let batonUrl: string | undefined;
    if (!(await hasProxy(BATON_MAIN))) {
      console.log(`\n${BATON_MAIN} has no --proxy-listen: the baton row is skipped (set BENCH_BATON_MAIN to a build with the proxy)`);
    } else {
      const started = await startBatonProxy(cert, upstream.httpPort);
      baton = started.sidecar;
      const pid = baton.child.process.pid;
      batonUrl = `https://127.0.0.1:${started.port}/`;
      rows.push({ name: 'baton --proxy-listen', url: batonUrl, pids: () => [pid], metricsUrl: baton.metricsUrl });
      console.log(`baton    ${BATON_MAIN}`);
    }
    const cookie = await sessionCookie(batonUrl, cert.certPem);

    console.log('\nwarming up (untimed)');
    for (const row of rows) await autocannon(row.url, WARMUP_SECONDS, cookie);

    const results = new Map<RowName, RowResult[]>(rows.map((r) => [r.name, []]));
    for (let run = 0; run < RUNS && !interruption.requested; run++) {
      console.log(`\nrun ${run + 1}/${RUNS} (load ${os.loadavg()[0]!.toFixed(2)})`);
      for (let k = 0; k < rows.length && !interruption.requested; k++) {
        const row = rows[(run + k) % rows.length]!;
        const waited = await waitForQuiet(QUIET_WAIT_SECONDS);
        if (waited < 0) console.log(`  (the machine stayed busy for ${QUIET_WAIT_SECONDS} s; measuring anyway)`);
        const throughput = await measureThroughput(row, upstreamPid, cookie);
        const latency = await measureLatency(row, cert.certPem, cookie);
        results.get(row.name)!.push({ throughput, latency });
        console.log(
          `  ${row.name.padEnd(20)} ${formatCount(throughput.requestsPerSecond).padStart(7)} req/s  CPU proxy ${percent(throughput.proxyCpu).padStart(4)} ` +
            `web server ${percent(throughput.upstreamCpu).padStart(4)} other ${percent(throughput.otherCpu).padStart(4)}  ` +
            `1 connection: p50 ${formatFixed(latency.p50Ms, 3)} ms p99 ${formatFixed(latency.p99Ms, 3)} ms` +
            (throughput.errors + throughput.non2xx + latency.errors > 0
              ? `  errors ${throughput.errors}, non-2xx ${throughput.non2xx}, latency errors ${latency.errors} (${latency.firstError ?? ''})`
              : ''),
        );
        const counted = Object.entries(throughput.perRequest);
        if (counted.length > 0) console.log(`    per request: ${counted.map(([series, n]) => `${series} ${n.toFixed(2)}`).join(', ')}`);
      }
    }

    const runs = Math.min(...[...results.values()].map((r) => r.length));
    console.log(`\nMedians of ${runs} run(s); CPU as a share of one core (this machine has ${os.cpus().length}); p50/p99 at ${CONNECTIONS} connections are autocannon's (whole ms).`);
    console.log(
      formatTable(
        ['row', 'req/s', `p50 ms @${CONNECTIONS}`, `p99 ms @${CONNECTIONS}`, 'proxy µs/req', 'web server µs/req', 'other CPU', 'p50 ms @1', 'p99 ms @1', 'errors', 'req/s per run'],
        rows.map((row) => {
          const list = results.get(row.name)!;
          const t = list.map((r) => r.throughput);
          const proxied = row.name !== 'direct (HTTP)' && row.name !== 'direct (HTTPS)';
          return [
            row.name,
            formatCount(median(t.map((r) => r.requestsPerSecond))),
            formatFixed(median(t.map((r) => r.p50Ms)), 0),
            formatFixed(median(t.map((r) => r.p99Ms)), 0),
            proxied ? formatFixed(median(t.map((r) => (r.proxyCpu / r.requestsPerSecond) * 1e6)), 1) : '—',
            formatFixed(median(t.map((r) => (r.upstreamCpu / r.requestsPerSecond) * 1e6)), 1),
            percent(Math.max(...t.map((r) => r.otherCpu))),
            formatFixed(median(list.map((r) => r.latency.p50Ms)), 3),
            formatFixed(median(list.map((r) => r.latency.p99Ms)), 3),
            String(list.reduce((n, r) => n + r.throughput.errors + r.throughput.non2xx + r.latency.errors, 0)),
            t.map((r) => formatCount(r.requestsPerSecond)).join(' / '),
          ];
        }),
      ),
    );

    const direct = results.get('direct (HTTP)')!;
    const nginxRuns = results.get('nginx, 1 worker');
    const batonRuns = results.get('baton --proxy-listen');
    console.log('\nTargets (ratios and differences computed within each run, then the median):');
    if (batonRuns !== undefined && nginxRuns !== undefined) {
      const ratios = batonRuns.map((r, i) => r.throughput.requestsPerSecond / (nginxRuns[i]?.throughput.requestsPerSecond ?? NaN));
      const ratio = median(ratios);
      console.log(`  baton / nginx req/s             ${formatFixed(ratio, 2)}×  (per run: ${perRun(ratios, 2)})  target ≥ ${TARGET_RATIO}×: ${ratio >= TARGET_RATIO ? 'met' : 'missed'}`);
    } else {
      console.log(`  baton / nginx req/s             not measured (${batonRuns === undefined ? 'no baton row' : 'no nginx row'})`);
    }
    for (const [name, list] of [
      ['baton', batonRuns],
      ['nginx', nginxRuns],
      ['direct HTTPS', results.get('direct (HTTPS)')],
    ] as const) {
      if (list === undefined) continue;
      const added = list.map((r, i) => r.latency.p50Ms - (direct[i]?.latency.p50Ms ?? NaN));
      const value = median(added);
      const verdict = name === 'baton' ? `  target ≤ ${TARGET_ADDED_P50_MS} ms: ${value <= TARGET_ADDED_P50_MS ? 'met' : 'missed'}` : '';
      console.log(`  ${`${name}: added p50 over direct HTTP`.padEnd(32)} ${formatFixed(value, 3)} ms  (per run: ${perRun(added, 3)})${verdict}`);
    }
    console.log(`load average at the end: ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  } finally {
    disarm();
    const stopped = await Promise.all([
      ...children.splice(0).map(async (c) => `${c.name}: ${await c.stop(5000)}`),
      ...(baton === undefined
        ? []
        : [
            (async (b: Replica) => {
              b.client.close();
              return `baton: ${await b.child.stop()}`;
            })(baton),
          ]),
    ]);
    if (stopped.length > 0) console.log(`\nstopped ${stopped.join(', ')}`);
    rmSync(dir, { recursive: true, force: true });
  }
}

runMain(main);
