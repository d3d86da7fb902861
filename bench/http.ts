/**
 * The HTTP/JSON API (--http-listen) against its ceiling, and the long-poll targets:
 *   (a) throughput: PUT and GET of `/v1/sessions/{id}/parts/data` alternating over 1,000
 *       sessions, 1 KiB values, 64 keep-alive connections (a node:http Agent, maxSockets 64,
 *       closed loop with 64 requests in flight), against a `baton sidecar` and against a bare
 *       node:http server answering from a Map (bench/map-http-server.ts), each in its own
 *       process; the ratio is computed within each run (target ≥ 0.8×);
 *   (b) wake latency: one long-poll `GET …/changes?after=<v>&timeout=30s` parked, then an
 *       HTTP PUT to the session on the same node; the time from sending the PUT to the poll's
 *       answer arriving, one sample at a time (target p99 ≤ 1 ms). It holds the PUT's own
 *       request travel and handling, so it is an upper bound of the wake itself; the PUT's
 *       round trip is printed beside it;
 *   (c) memory: the sidecar's RSS before and with 10,000 long-polls parked (raw keep-alive
 *       sockets, one poll each on its own session), a fresh sidecar per run (target ≤ 50 MiB);
 *       and, as the floor node:http itself sets, the same 10,000 requests held open by the
 *       bare server.
 * Medians over BENCH_RUNS runs (the starting system of (a) rotates).
 *
 * Environment: BENCH_SECONDS (measured seconds per throughput slice, default 3),
 * BENCH_WARMUP_SECONDS (default 1), BENCH_RUNS (default 3), BENCH_WAKE_SAMPLES (per run,
 * default 300), BENCH_PARKED_POLLS (default 10,000), BENCH_QUIET_WAIT_SECONDS (children.ts).
 *
 * Bounds: every load loop stops at its deadline, after MAX_OPS_PER_SLICE requests or
 * MAX_ERRORS_PER_SLICE failures; every request has a 5 s time-out; parking and releasing the
 * polls each give up after PARK_LIMIT_MS; every socket is destroyed and every process stopped
 * whatever happens, Ctrl-C included.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  freePort,
  handleInterruptions,
  interruption,
  quietWaitSeconds,
  runMain,
  sleep,
  startChild,
  waitForHttp200,
  waitForQuiet,
  type Child,
} from './children';
import { describeMachine, envNumber, formatCount, formatFixed, formatTable, LatencySamples, machineInfo, median } from './stats';
import { runClosedLoopSlice, type SliceResult } from './support/closed-loop';
import { scrape } from './support/prometheus-scrape';

const MEASURE_SECONDS = envNumber('BENCH_SECONDS', 3);
const WARMUP_SECONDS = envNumber('BENCH_WARMUP_SECONDS', 1);
const RUNS = Math.max(1, Math.round(envNumber('BENCH_RUNS', 3)));
const WAKE_SAMPLES = Math.round(envNumber('BENCH_WAKE_SAMPLES', 300));
const PARKED_POLLS = Math.round(envNumber('BENCH_PARKED_POLLS', 10_000));
const QUIET_WAIT_SECONDS = quietWaitSeconds();
const CONNECTIONS = 64;
const SESSIONS = 1000;
const VALUE_BYTES = 1024;
const PART = 'data';
const REQUEST_TIMEOUT_MS = 5000;
const MAX_OPS_PER_SLICE = Math.ceil((MEASURE_SECONDS + WARMUP_SECONDS) * 1_000_000);
const MAX_ERRORS_PER_SLICE = 1000;
const SLICE_SLACK_MS = REQUEST_TIMEOUT_MS + 10_000;
/** How long a parked poll waits before the write (it must have reached the server and parked). */
const PARK_DELAY_MS = 5;
/** Parking (or releasing) all the polls of (c) must end within this. */
const PARK_LIMIT_MS = 90_000;
/** Connections of (c) opened at once (the listen backlog is 511). */
const CONNECT_BATCH = 250;
/** Targets of issue 17. */
const TARGET_RATIO = 0.8;
const TARGET_WAKE_P99_MS = 1;
const TARGET_PARKED_MIB = 50;

const sessionIds = Array.from({ length: SESSIONS }, (_, i) => `bench-${i.toString(36).padStart(4, '0')}-session`);
const value = randomBytes(VALUE_BYTES);

interface Answer {
  status: number;
  body: Buffer;
}

/** One request; resolves with the status and whole body, rejects on a socket error or after REQUEST_TIMEOUT_MS. */
function request(agent: http.Agent, port: number, method: string, urlPath: string, body?: Buffer, timeoutMs = REQUEST_TIMEOUT_MS): Promise<Answer> {
  return new Promise<Answer>((resolve, reject) => {
    const headers: http.OutgoingHttpHeaders = body === undefined ? {} : { 'content-type': 'application/octet-stream', 'content-length': body.length };
    const req = http.request({ host: '127.0.0.1', port, method, path: urlPath, agent, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) });
      });
      res.on('error', reject);
    });
    const timer = setTimeout(() => req.destroy(new Error(`${method} ${urlPath}: no answer within ${timeoutMs} ms`)), timeoutMs);
    req.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    req.end(body);
  });
}

const partPath = (id: string) => `/v1/sessions/${id}/parts/${PART}`;

interface Target {
  name: 'baton --http-listen' | 'node:http + Map';
  pid: number | undefined;
  port: number;
  agent: http.Agent;
}

async function put(target: Target, id: string): Promise<void> {
  const answer = await request(target.agent, target.port, 'PUT', partPath(id), value);
  if (answer.status !== 200) throw new Error(`PUT ${id}: ${answer.status} ${answer.body.toString().slice(0, 200)}`);
}

async function get(target: Target, id: string): Promise<void> {
  const answer = await request(target.agent, target.port, 'GET', partPath(id));
  if (answer.status !== 200 || answer.body.length !== VALUE_BYTES) throw new Error(`GET ${id}: ${answer.status}, ${answer.body.length} bytes`);
}

/** CONNECTIONS workers, each alternating PUT and GET over the sessions in turn: warm-up, then the measured window. */
function runSlice(target: Target, warmupSeconds: number, measureSeconds: number): Promise<SliceResult> {
  return runClosedLoopSlice({
    workers: CONNECTIONS,
    warmupSeconds,
    measureSeconds,
    serverPid: target.pid,
    maxOps: MAX_OPS_PER_SLICE,
    maxErrors: MAX_ERRORS_PER_SLICE,
    maxSamples: Math.ceil(measureSeconds * 200_000),
    slackMs: SLICE_SLACK_MS,
    operation: (w, n, issued) => {
      const id = sessionIds[(issued + w) % SESSIONS]!;
      return n % 2 === 0 ? put(target, id) : get(target, id);
    },
  });
}

// --- processes --------------------------------------------------------------------------

interface Resources {
  children: Child[];
  agents: http.Agent[];
  sockets: Set<net.Socket>;
}

interface Sidecar {
  child: Child;
  httpPort: number;
  metricsUrl: string;
}

async function startSidecar(res: Resources): Promise<Sidecar> {
  const [peerPort, apiPort, metricsPort, httpPort] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const child = startChild('baton sidecar', process.execPath, [
    path.join(__dirname, '..', 'sidecar', 'cli', 'main.js'),
    'sidecar',
    '--peer-listen',
    `127.0.0.1:${peerPort}`,
    '--api-listen',
    `127.0.0.1:${apiPort}`,
    '--metrics-listen',
    `127.0.0.1:${metricsPort}`,
    '--http-listen',
    `127.0.0.1:${httpPort}`,
    '--log-level',
    'warn',
  ]);
  res.children.push(child);
  await Promise.race([waitForHttp200(`http://127.0.0.1:${metricsPort}/readyz`, 20_000), child.exited]);
  return { child, httpPort, metricsUrl: `http://127.0.0.1:${metricsPort}/metrics` };
}

async function stopChild(res: Resources, child: Child): Promise<string> {
  res.children = res.children.filter((c) => c !== child);
  return child.stop();
}

function keepAliveAgent(res: Resources, maxSockets: number): http.Agent {
  const agent = new http.Agent({ keepAlive: true, maxSockets, maxFreeSockets: maxSockets });
  res.agents.push(agent);
  return agent;
}

async function fill(target: Target): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < SESSIONS && !interruption.requested) await put(target, sessionIds[next++]!);
  };
  await Promise.all(Array.from({ length: CONNECTIONS }, worker));
}

// --- (b) wake latency -------------------------------------------------------------------

interface WakeResult {
  /** From sending the PUT to the poll's answer (ms). */
  wake: LatencySamples;
  /** The PUT's own round trip (ms). */
  putRoundTrip: LatencySamples;
  /** Polls that answered before the PUT was sent (not parked: the sample is dropped). */
  early: number;
  errors: number;
  firstError: string | undefined;
}

async function measureWake(res: Resources, port: number, samples: number): Promise<WakeResult> {
  const pollAgent = keepAliveAgent(res, 1);
  const writeAgent = keepAliveAgent(res, 1);
  const id = 'bench-wake-session';
  const first = await request(writeAgent, port, 'PUT', partPath(id), value);
  let version = String((JSON.parse(first.body.toString()) as { version: string }).version);
  const result: WakeResult = { wake: new LatencySamples(samples), putRoundTrip: new LatencySamples(samples), early: 0, errors: 0, firstError: undefined };
  for (let i = 0; i < samples && !interruption.requested && result.errors < 20; i++) {
    let pollAt: bigint | undefined;
    const poll = request(pollAgent, port, 'GET', `/v1/sessions/${id}/changes?after=${version}&timeout=30s`, undefined, 35_000).then((a) => {
      pollAt = process.hrtime.bigint();
      return a;
    });
    try {
      await sleep(PARK_DELAY_MS);
      if (pollAt !== undefined) {
        result.early++;
        await poll;
        continue;
      }
      const t0 = process.hrtime.bigint();
      const written = await request(writeAgent, port, 'PUT', partPath(id), value);
      const putAt = process.hrtime.bigint();
      const answer = await poll;
      if (written.status !== 200 || answer.status !== 200) throw new Error(`PUT ${written.status}, poll ${answer.status}: ${answer.body.toString().slice(0, 200)}`);
      const newVersion = (JSON.parse(written.body.toString()) as { version: string }).version;
      const seen = (JSON.parse(answer.body.toString()) as { version: string }).version;
      if (seen !== newVersion) throw new Error(`the poll answered version ${seen}, the PUT wrote ${newVersion}`);
      version = newVersion;
      result.wake.add(Number(pollAt! - t0));
      result.putRoundTrip.add(Number(putAt - t0));
    } catch (err) {
      result.errors++;
      result.firstError ??= err instanceof Error ? err.message : String(err);
      await poll.catch(() => undefined);
    }
  }
  pollAgent.destroy();
  writeAgent.destroy();
  return result;
}

// --- (c) memory of parked polls ---------------------------------------------------------

interface MemoryResult {
  rssBeforeMiB: number;
  rssParkedMiB: number;
  rssAfterMiB: number;
  /** V8's heap in use (nodejs_heap_size_used_bytes): live objects and garbage not yet collected. */
  heapBeforeMiB: number;
  heapParkedMiB: number;
  parked: number;
}

function rssMiB(pid: number | undefined): number {
  try {
    const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'latin1'))?.[1];
    return kb === undefined ? NaN : Number(kb) / 1024;
  } catch {
    return NaN;
  }
}

async function heapUsedMiB(metricsUrl: string): Promise<number> {
  return (await scrape(metricsUrl)).value('nodejs_heap_size_used_bytes') / 2 ** 20;
}

/** A server to park polls on: how to read its count of parked polls (and heap, when it tells). */
interface ParkingServer {
  child: Child;
  port: number;
  parked(): Promise<number>;
  heapUsedMiB(): Promise<number>;
}

/** Reads the count until `done` holds for it, at most PARK_LIMIT_MS; returns its last value. */
async function waitForParked(server: ParkingServer, done: (n: number) => boolean): Promise<number> {
  const deadline = Date.now() + PARK_LIMIT_MS;
  let n = await server.parked();
  while (!done(n) && Date.now() < deadline && !interruption.requested) {
    await sleep(250);
    n = await server.parked();
  }
  return n;
}

/** Opens one raw connection and sends one long-poll on it; resolves once the request is written. */
function parkOne(res: Resources, port: number, id: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    res.sockets.add(socket);
    socket.setTimeout(PARK_LIMIT_MS);
    socket.on('timeout', () => socket.destroy());
    socket.on('close', () => res.sockets.delete(socket));
    socket.on('data', () => undefined);
    socket.once('error', reject);
    socket.once('connect', () => socket.write(`GET /v1/sessions/${id}/changes?after=0&timeout=120s HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n`, () => resolve()));
  });
}

async function startParkingSidecar(res: Resources): Promise<ParkingServer> {
  const sidecar = await startSidecar(res);
  return {
    child: sidecar.child,
    port: sidecar.httpPort,
    parked: async () => (await scrape(sidecar.metricsUrl)).value('baton_http_long_polls'),
    heapUsedMiB: () => heapUsedMiB(sidecar.metricsUrl),
  };
}

async function startParkingMap(res: Resources): Promise<ParkingServer> {
  const child = startChild('map http server', process.execPath, [path.join(__dirname, 'map-http-server.js')]);
  res.children.push(child);
  const port = Number((await child.waitForLine(/^PORT (\d+)$/, 20_000))[1]);
  const agent = keepAliveAgent(res, 1);
  return {
    child,
    port,
    parked: async () => Number((await request(agent, port, 'GET', '/parked')).body.toString()),
    heapUsedMiB: async () => NaN,
  };
}

/** A fresh server; its RSS warmed, with PARKED_POLLS polls parked, and after they closed. */
async function measureParkedMemory(res: Resources, start: (res: Resources) => Promise<ParkingServer>): Promise<MemoryResult> {
  const server = await start(res);
  const pid = server.child.process.pid;
  try {
    // Warm the HTTP path (and the long-poll code) so the baseline is not a cold process.
    const warm = [];
    for (let i = 0; i < 200; i++) warm.push(parkOne(res, server.port, `bench-warm-${i}`));
    await Promise.all(warm);
    await waitForParked(server, (n) => n >= warm.length);
    for (const socket of res.sockets) socket.destroy();
    await waitForParked(server, (n) => n === 0);
    await sleep(1000);
    const rssBeforeMiB = rssMiB(pid);
    const heapBeforeMiB = await server.heapUsedMiB();
    const deadline = Date.now() + PARK_LIMIT_MS;
    for (let i = 0; i < PARKED_POLLS && Date.now() < deadline && !interruption.requested; i += CONNECT_BATCH) {
      const batch = [];
      for (let j = i; j < Math.min(PARKED_POLLS, i + CONNECT_BATCH); j++) batch.push(parkOne(res, server.port, `bench-parked-${j.toString(36)}`));
      await Promise.all(batch);
    }
    const parked = await waitForParked(server, (n) => n >= PARKED_POLLS);
    await sleep(1000);
    const rssParkedMiB = rssMiB(pid);
    const heapParkedMiB = await server.heapUsedMiB();
    for (const socket of res.sockets) socket.destroy();
    await waitForParked(server, (n) => n === 0);
    await sleep(1000);
    return { rssBeforeMiB, rssParkedMiB, rssAfterMiB: rssMiB(pid), heapBeforeMiB, heapParkedMiB, parked };
  } finally {
    for (const socket of res.sockets) socket.destroy();
    await stopChild(res, server.child);
  }
}

/** The open-files limit of this process (the sidecar inherits it), from /proc. */
function openFilesLimit(): number {
  try {
    return Number(/Max open files\s+(\d+)/.exec(readFileSync('/proc/self/limits', 'latin1'))?.[1] ?? NaN);
  } catch {
    return NaN;
  }
}

// --- main -------------------------------------------------------------------------------

function percent(fraction: number): string {
  return Number.isFinite(fraction) ? `${Math.round(fraction * 100)}%` : 'n/a';
}

function verdict(met: boolean): string {
  return met ? 'met' : 'missed';
}

async function main(): Promise<void> {
  const disarm = handleInterruptions(Number(process.env.BENCH_MAX_MINUTES ?? 20));
  console.log('baton bench:http');
  console.log(describeMachine(machineInfo()));
  console.log(
    `workload (a) ${CONNECTIONS} keep-alive connections, PUT/GET alternating over ${SESSIONS.toLocaleString('en-US')} sessions, ${VALUE_BYTES} B values, ` +
      `warm-up ${WARMUP_SECONDS} s + ${MEASURE_SECONDS} s per slice; (b) ${WAKE_SAMPLES} wake samples per run; ` +
      `(c) ${PARKED_POLLS.toLocaleString('en-US')} parked polls; ${RUNS} run(s)`,
  );
  const limit = openFilesLimit();
  if (!(limit > PARKED_POLLS + 1000)) {
    throw new Error(`the open-files limit is ${limit}: (c) needs more than ${PARKED_POLLS + 1000} (raise it with 'ulimit -n ${PARKED_POLLS * 2}' or set BENCH_PARKED_POLLS lower)`);
  }
  const res: Resources = { children: [], agents: [], sockets: new Set() };
  try {
    const sidecar = await startSidecar(res);
    const map = startChild('map http server', process.execPath, [path.join(__dirname, 'map-http-server.js')]);
    res.children.push(map);
    const [, mapPort] = await map.waitForLine(/^PORT (\d+)$/, 20_000);
    const targets: Target[] = [
      { name: 'baton --http-listen', pid: sidecar.child.process.pid, port: sidecar.httpPort, agent: keepAliveAgent(res, CONNECTIONS) },
      { name: 'node:http + Map', pid: map.process.pid, port: Number(mapPort), agent: keepAliveAgent(res, CONNECTIONS) },
    ];
    for (const t of targets) await fill(t);
    console.log('\nwarming up (untimed)');
    for (const t of targets) await runSlice(t, 0, WARMUP_SECONDS);
    await measureWake(res, sidecar.httpPort, Math.min(50, WAKE_SAMPLES));

    const throughput = new Map<Target['name'], SliceResult[]>();
    const wakes: WakeResult[] = [];
    const memory: MemoryResult[] = [];
    const mapMemory: MemoryResult[] = [];
    for (let run = 0; run < RUNS && !interruption.requested; run++) {
      console.log(`\nrun ${run + 1}/${RUNS} (load ${os.loadavg()[0]!.toFixed(2)})`);
      for (let k = 0; k < targets.length && !interruption.requested; k++) {
        const target = targets[(run + k) % targets.length]!;
        const waited = await waitForQuiet(QUIET_WAIT_SECONDS);
        if (waited < 0) console.log(`  (the machine stayed busy for ${QUIET_WAIT_SECONDS} s; measuring anyway)`);
        const r = await runSlice(target, WARMUP_SECONDS, MEASURE_SECONDS);
        throughput.set(target.name, [...(throughput.get(target.name) ?? []), r]);
        console.log(
          `  ${target.name.padEnd(20)} ${formatCount(r.opsPerSecond).padStart(8)} req/s  p50 ${formatFixed(r.p50Ms, 2).padStart(6)} ms  ` +
            `p99 ${formatFixed(r.p99Ms, 2).padStart(6)} ms  CPU client ${percent(r.clientCpu).padStart(4)} server ${percent(r.serverCpu).padStart(4)} ` +
            `other ${percent(r.otherCpu).padStart(4)}` +
            (r.errors > 0 ? `  ${r.errors} errors (${r.firstError})` : ''),
        );
        await sleep(200);
      }
      if (interruption.requested) break;
      const wake = await measureWake(res, sidecar.httpPort, WAKE_SAMPLES);
      wakes.push(wake);
      const [w50, w99] = wake.wake.quantilesMs(0.5, 0.99);
      const [p50, p99] = wake.putRoundTrip.quantilesMs(0.5, 0.99);
      console.log(
        `  long-poll wake       ${wake.wake.count} samples  p50 ${formatFixed(w50!, 3)} ms  p99 ${formatFixed(w99!, 3)} ms  ` +
          `(PUT round trip p50 ${formatFixed(p50!, 3)} p99 ${formatFixed(p99!, 3)} ms)` +
          (wake.early > 0 ? `  ${wake.early} polls not parked in time (dropped)` : '') +
          (wake.errors > 0 ? `  ${wake.errors} errors (${wake.firstError})` : ''),
      );
      if (interruption.requested) break;
      for (const [name, start, list] of [
        ['baton', startParkingSidecar, memory],
        ['node:http', startParkingMap, mapMemory],
      ] as const) {
        if (interruption.requested) break;
        const m = await measureParkedMemory(res, start);
        list.push(m);
        console.log(
          `  parked (${name.padEnd(9)})  ${formatCount(m.parked)}  RSS ${formatFixed(m.rssBeforeMiB, 1)} → ${formatFixed(m.rssParkedMiB, 1)} MiB ` +
            `(+${formatFixed(m.rssParkedMiB - m.rssBeforeMiB, 1)}), ${formatFixed(m.rssAfterMiB, 1)} MiB after they closed` +
            (Number.isFinite(m.heapParkedMiB) ? `; heap used ${formatFixed(m.heapBeforeMiB, 1)} → ${formatFixed(m.heapParkedMiB, 1)} MiB` : ''),
        );
      }
    }

    console.log(`\nMedians of ${throughput.get('baton --http-listen')?.length ?? 0} run(s); CPU as a share of one core (this machine has ${os.cpus().length}).`);
    const header = ['server', 'req/s', 'p50 ms', 'p99 ms', 'client CPU', 'server CPU', 'server µs/req', 'other CPU', 'errors', 'req/s per run'];
    console.log(
      formatTable(
        header,
        [...throughput].map(([name, runs]) => [
          name,
          formatCount(median(runs.map((r) => r.opsPerSecond))),
          formatFixed(median(runs.map((r) => r.p50Ms)), 2),
          formatFixed(median(runs.map((r) => r.p99Ms)), 2),
          percent(median(runs.map((r) => r.clientCpu))),
          percent(median(runs.map((r) => r.serverCpu))),
          formatFixed(median(runs.map((r) => (r.serverCpu / r.opsPerSecond) * 1e6)), 1),
          percent(Math.max(...runs.map((r) => r.otherCpu))),
          String(runs.reduce((n, r) => n + r.errors, 0)),
          runs.map((r) => formatCount(r.opsPerSecond)).join(' / '),
        ]),
      ),
    );
    const baton = throughput.get('baton --http-listen');
    const bare = throughput.get('node:http + Map');
    console.log('\nTargets (medians of the runs; ratios computed within each run):');
    if (baton !== undefined && bare !== undefined) {
      const perRun = baton.map((r, i) => r.opsPerSecond / (bare[i]?.opsPerSecond ?? NaN));
      const ratio = median(perRun);
      console.log(
        `  baton / node:http + Map      ${formatFixed(ratio, 2)}×  (per run: ${perRun.map((v) => formatFixed(v, 2)).join(', ')})  target ≥ ${TARGET_RATIO}×: ${verdict(ratio >= TARGET_RATIO)}`,
      );
    }
    if (wakes.length > 0) {
      const p50s = wakes.map((w) => w.wake.quantilesMs(0.5)[0]!);
      const p99s = wakes.map((w) => w.wake.quantilesMs(0.99)[0]!);
      const p99 = median(p99s);
      console.log(
        `  long-poll wake p50 / p99     ${formatFixed(median(p50s), 3)} / ${formatFixed(p99, 3)} ms  (p99 per run: ${p99s.map((v) => formatFixed(v, 3)).join(', ')})  ` +
          `target p99 ≤ ${TARGET_WAKE_P99_MS} ms: ${verdict(p99 <= TARGET_WAKE_P99_MS)}`,
      );
    }
    if (memory.length > 0) {
      const deltas = memory.map((m) => m.rssParkedMiB - m.rssBeforeMiB);
      const delta = median(deltas);
      const allParked = memory.every((m) => m.parked >= PARKED_POLLS);
      console.log(
        `  ${formatCount(PARKED_POLLS)} parked long-polls  +${formatFixed(delta, 1)} MiB RSS  (per run: ${deltas.map((v) => formatFixed(v, 1)).join(', ')})  ` +
          `target ≤ ${TARGET_PARKED_MIB} MiB: ${allParked ? verdict(delta <= TARGET_PARKED_MIB) : 'not measured (not every poll parked)'}`,
      );
      const heap = memory.map((m) => m.heapParkedMiB - m.heapBeforeMiB);
      if (allParked) console.log(`  (V8 heap used meanwhile: +${formatFixed(median(heap), 1)} MiB, per run: ${heap.map((v) => formatFixed(v, 1)).join(', ')})`);
      const floor = mapMemory.map((m) => m.rssParkedMiB - m.rssBeforeMiB);
      if (floor.length > 0) {
        console.log(
          `  the same ${formatCount(PARKED_POLLS)} held by the bare node:http server: +${formatFixed(median(floor), 1)} MiB RSS (per run: ${floor.map((v) => formatFixed(v, 1)).join(', ')}` +
            `${mapMemory.every((m) => m.parked >= PARKED_POLLS) ? '' : '; not every poll was held'})`,
        );
      }
    }
    console.log(`load average at the end: ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  } finally {
    disarm();
    for (const socket of res.sockets) socket.destroy();
    for (const agent of res.agents.splice(0)) agent.destroy();
    const stopped = await Promise.all(res.children.splice(0).map(async (c) => `${c.name}: ${await c.stop()}`));
    if (stopped.length > 0) console.log(`\nstopped ${stopped.join(', ')}`);
  }
}

runMain(main);
