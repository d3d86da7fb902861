/**
 * API throughput and latency, client in this process and each server in its own:
 *   (a) unary Put/Get with the generated SessionServiceClient,
 *   (b) Put/Get with BatonClient over one Exchange stream,
 *   (c) SET/GET with ioredis against redis-server (when it is on the PATH),
 *   (d) the platform ceiling: a raw grpc-js echo server (bench/echo-server.ts), unary and,
 *       for Exchange, over one bidirectional stream.
 *   (e) the mixed workload: 64 workers each alternating a 1 KiB Put and a Get on 1,000 keys,
 *       BatonClient (Exchange) against ioredis + redis-server (SET/GET), back to back in
 *       each run (which goes first alternates), with ops/s and p99 ratios per run.
 * Every other workload: 64 operations in flight (closed loop), ids drawn from a pool of 10,000,
 * 1 KiB values; a warm-up, then a measured phase of fixed length. The whole set repeats
 * BENCH_RUNS times interleaved (the starting system rotates) and the medians are printed,
 * with the ratios computed within each run.
 *
 * Environment: BENCH_SECONDS (measured seconds per phase, default 5), BENCH_WARMUP_SECONDS
 * (default 1), BENCH_RUNS (default 3), BENCH_ONLY (comma list of echo,unary,exchange,redis,mixed),
 * BENCH_MIXED_SECONDS (measured seconds of each mixed slice, default 3),
 * BENCH_SIDECAR_NODE_ARGS (extra node flags for the sidecar, e.g. "--cpu-prof
 * --cpu-prof-dir=/tmp/prof"), BENCH_QUIET_WAIT_SECONDS (on a shared machine, wait up to this
 * long before each phase until other processes use < 20% of a core; default off).
 *
 * An untimed warm-up pass over every workload precedes the first run.
 * Every load loop stops at its deadline, after MAX_OPS_PER_PHASE operations or after
 * MAX_ERRORS_PER_PHASE failures; every operation has a 5 s deadline; a phase that does not
 * finish in time aborts the run; the server processes are stopped (SIGTERM) whatever
 * happens, Ctrl-C included.
 */
import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import { Client, credentials, Metadata, type ChannelOptions, type ServiceError } from '@grpc/grpc-js';
import Redis from 'ioredis';
import { BatonClient } from '../src/client/client';
import { SessionServiceClient, type GetResponse, type PutRequest, type PutResponse } from '../src/gen/baton/v1/session';
import {
  cpuSecondsOf,
  findOnPath,
  freePort,
  machineBusyCpuSeconds,
  ownCpuSeconds,
  quietWaitSeconds,
  sleep,
  startChild,
  waitForHttp200,
  waitForQuiet,
  type Child,
} from './children';
import { ECHO_METHOD_PATH, ECHO_STREAM_METHOD_PATH } from './echo-server';
import {
  describeMachine,
  envNumber,
  formatCount,
  formatFixed,
  formatTable,
  IndexPicker,
  LatencySamples,
  machineInfo,
  median,
} from './stats';

const MEASURE_SECONDS = envNumber('BENCH_SECONDS', 5);
const WARMUP_SECONDS = envNumber('BENCH_WARMUP_SECONDS', 1);
const RUNS = Math.max(1, Math.round(envNumber('BENCH_RUNS', 3)));
/** On a shared machine: wait up to this long before each phase for other processes to go quiet (0: do not wait). */
const QUIET_WAIT_SECONDS = quietWaitSeconds();
const CONCURRENCY = 64;
const ID_POOL = 10_000;
const VALUE_BYTES = 1024;
const PART_NAME = 'data';
const OP_DEADLINE_MS = 5000;
/** A ceiling far above any rate seen here (~10M ops/s), so a loop is bounded even if the clock misbehaves. */
const MAX_OPS_PER_PHASE = Math.ceil((MEASURE_SECONDS + WARMUP_SECONDS) * 10_000_000);
/** Latency samples kept per phase (more are counted, not kept). */
const SAMPLE_CAPACITY = Math.min(8_000_000, Math.ceil(MEASURE_SECONDS * 400_000));
/** A phase stops issuing operations after this many failures (a dead server must not be hammered). */
const MAX_ERRORS_PER_PHASE = 1000;
/** Extra time a phase may take beyond warm-up + measurement before the run is aborted. */
const PHASE_SLACK_MS = OP_DEADLINE_MS + 10_000;
/** The mixed workload: keys (the first ids of the pool, written before any run) and measured seconds per slice. */
const MIXED_KEYS = 1000;
const MIXED_SECONDS = envNumber('BENCH_MIXED_SECONDS', 3);
/** Issue 18's targets for the mixed workload, baton against Redis within each run. */
const MIXED_OPS_TARGET = 1.0;
const MIXED_P99_TARGET = 1.5;

/** The grpc-js channel options the brief asks for (also BatonClient's defaults). */
const CHANNEL_OPTIONS: ChannelOptions = { 'grpc.enable_retries': 0, 'grpc.enable_channelz': 0 };

const SYSTEMS = ['echo', 'unary', 'exchange', 'redis', 'mixed'] as const;
type SystemName = (typeof SYSTEMS)[number];

type Op = (id: string) => Promise<void>;

interface Phase {
  row: (typeof ROWS)[number];
  op: Op;
  /** Each worker alternates op and this (op first); ids from the first `pool` of the pool. */
  alternate?: { op: Op; pool: number };
  /** The server process whose CPU time is reported, when not the system's. */
  serverPid?: number | undefined;
  /** Measured seconds, when not BENCH_SECONDS. */
  seconds?: number;
}

interface System {
  name: SystemName;
  /** The server process whose CPU time is reported. */
  serverPid: number | undefined;
  phases: Phase[];
  /** Runs the phases in reverse order in odd runs (so neither side of a pair always goes first). */
  alternateOrder?: boolean;
}

interface PhaseResult {
  opsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  firstError: string | undefined;
  /** CPU used during the measured phase, as a fraction of one core. */
  clientCpu: number;
  serverCpu: number;
  /** CPU used by every other process of the machine meanwhile (noise), as a fraction of one core. */
  otherCpu: number;
}

const ROWS = [
  'raw echo (grpc-js unary)',
  'raw echo (grpc-js stream)',
  'unary Put',
  'unary Get',
  'Exchange Put',
  'Exchange Get',
  'Redis SET',
  'Redis GET',
  'mixed Exchange Put/Get',
  'mixed Redis SET/GET',
] as const;

/** Set by SIGINT/SIGTERM: load loops stop issuing operations. */
let interrupted = false;

const ids: string[] = [];
for (let i = 0; i < ID_POOL; i++) ids.push(`bench-${i.toString(36).padStart(6, '0')}-session`);
const value = randomBytes(VALUE_BYTES);

/**
 * Runs `op` with CONCURRENCY operations in flight: warm-up, then the measured window.
 * Throughput counts completions inside the window; latency is recorded for operations that
 * started inside it.
 */
async function runPhase(
  op: Op,
  serverPid: number | undefined,
  seed: number,
  warmupSeconds = WARMUP_SECONDS,
  measureSeconds = MEASURE_SECONDS,
  alternate?: { op: Op; pool: number },
): Promise<PhaseResult> {
  const picker = new IndexPicker(alternate?.pool ?? ID_POOL, seed);
  const samples = new LatencySamples(SAMPLE_CAPACITY);
  const begin = process.hrtime.bigint();
  const measureStart = begin + BigInt(Math.round(warmupSeconds * 1e9));
  const measureEnd = measureStart + BigInt(Math.round(measureSeconds * 1e9));
  let issued = 0;
  let completedInWindow = 0;
  let errors = 0;
  let firstError: string | undefined;

  const worker = async (): Promise<void> => {
    let turn = 0;
    for (;;) {
      const t0 = process.hrtime.bigint();
      if (t0 >= measureEnd || issued >= MAX_OPS_PER_PHASE || errors >= MAX_ERRORS_PER_PHASE || interrupted) return;
      issued++;
      let failed = false;
      const next = alternate !== undefined && (turn++ & 1) === 1 ? alternate.op : op;
      try {
        await next(ids[picker.next()]!);
      } catch (err) {
        failed = true;
        errors++;
        firstError ??= err instanceof Error ? err.message : String(err);
      }
      const t1 = process.hrtime.bigint();
      if (t1 >= measureStart && t1 < measureEnd && !failed) completedInWindow++;
      if (t0 >= measureStart) samples.add(Number(t1 - t0));
    }
  };

  // CPU is sampled by timers at the window's edges, each with its own timestamp.
  let cpuAtStart: { wall: bigint; own: number; server: number; machine: number } | undefined;
  let cpuAtEnd: typeof cpuAtStart;
  const snapshot = () => ({
    wall: process.hrtime.bigint(),
    own: ownCpuSeconds(),
    server: cpuSecondsOf(serverPid),
    machine: machineBusyCpuSeconds(),
  });
  const startTimer = setTimeout(() => (cpuAtStart = snapshot()), warmupSeconds * 1000);
  const endTimer = setTimeout(() => (cpuAtEnd = snapshot()), (warmupSeconds + measureSeconds) * 1000);
  let watchdog: NodeJS.Timeout | undefined;
  try {
    const workers = Array.from({ length: CONCURRENCY }, worker);
    const limitMs = (warmupSeconds + measureSeconds) * 1000 + PHASE_SLACK_MS;
    await Promise.race([
      Promise.all(workers),
      new Promise<never>((_, reject) => {
        watchdog = setTimeout(() => reject(new Error(`phase did not finish within ${limitMs} ms`)), limitMs);
      }),
    ]);
  } finally {
    clearTimeout(watchdog);
    clearTimeout(startTimer);
    clearTimeout(endTimer);
  }
  cpuAtEnd ??= snapshot();
  let clientCpu = NaN;
  let serverCpu = NaN;
  let otherCpu = NaN;
  if (cpuAtStart !== undefined) {
    const wall = Number(cpuAtEnd.wall - cpuAtStart.wall) / 1e9;
    clientCpu = (cpuAtEnd.own - cpuAtStart.own) / wall;
    serverCpu = (cpuAtEnd.server - cpuAtStart.server) / wall;
    otherCpu = Math.max(0, (cpuAtEnd.machine - cpuAtStart.machine) / wall - clientCpu - serverCpu);
  }
  const [p50Ms, p99Ms] = samples.quantilesMs(0.5, 0.99);
  return {
    opsPerSecond: completedInWindow / measureSeconds,
    p50Ms: p50Ms!,
    p99Ms: p99Ms!,
    errors,
    firstError,
    clientCpu,
    serverCpu,
    otherCpu,
  };
}

/** Runs op once for every id of the pool, CONCURRENCY at a time (untimed). */
async function fillPool(op: Op): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < ids.length && !interrupted) await op(ids[next++]!);
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
}

function deadline(): Date {
  return new Date(Date.now() + OP_DEADLINE_MS);
}

function unaryPromise<T>(start: (callback: (err: ServiceError | null, response?: T) => void) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => start((err, response) => (err ? reject(err) : resolve(response as T))));
}

// --- the systems ------------------------------------------------------------------------

interface Resources {
  children: Child[];
  closers: (() => void | Promise<void>)[];
}

async function startSidecar(res: Resources): Promise<{ address: string; pid: number | undefined }> {
  const apiPort = await freePort();
  const metricsPort = await freePort();
  const extraNodeArgs = (process.env.BENCH_SIDECAR_NODE_ARGS ?? '').split(/\s+/).filter((a) => a !== '');
  const main = path.join(__dirname, '..', 'sidecar', 'cli', 'main.js');
  const child = startChild('sidecar', process.execPath, [
    ...extraNodeArgs,
    main,
    'sidecar',
    '--api-listen',
    `127.0.0.1:${apiPort}`,
    '--metrics-listen',
    `127.0.0.1:${metricsPort}`,
    '--http-listen',
    'off',
    '--log-level',
    'warn',
  ]);
  res.children.push(child);
  await Promise.race([waitForHttp200(`http://127.0.0.1:${metricsPort}/readyz`, 20_000), child.exited]);
  return { address: `127.0.0.1:${apiPort}`, pid: child.process.pid };
}

async function echoSystem(res: Resources): Promise<System> {
  const child = startChild('echo server', process.execPath, [path.join(__dirname, 'echo-server.js')]);
  res.children.push(child);
  const [, port] = await child.waitForLine(/^PORT (\d+)$/, 20_000);
  const identity = (b: Buffer): Buffer => b;
  const client = new Client(`127.0.0.1:${port}`, credentials.createInsecure(), CHANNEL_OPTIONS);
  res.closers.push(() => client.close());
  const echo: Op = async () => {
    const answer = await unaryPromise<Buffer>((cb) =>
      client.makeUnaryRequest(ECHO_METHOD_PATH, identity, identity, value, new Metadata(), { deadline: deadline() }, cb),
    );
    if (answer.length !== VALUE_BYTES) throw new Error(`echo returned ${answer.length} bytes`);
  };
  await echo('');
  const streamEcho = rawStreamEcho(client);
  await streamEcho('');
  return {
    name: 'echo',
    serverPid: child.process.pid,
    phases: [
      { row: 'raw echo (grpc-js unary)', op: echo },
      { row: 'raw echo (grpc-js stream)', op: streamEcho },
    ],
  };
}

/**
 * The streaming ceiling: 1 KiB Buffers over one bidirectional call, matched by a 4-byte tag,
 * written the way BatonClient writes (calls of one tick corked together, flushed on
 * process.nextTick), with no protobuf, deadlines or bookkeeping beyond a Map.
 */
function rawStreamEcho(client: Client): Op {
  const identity = (b: Buffer): Buffer => b;
  const call = client.makeBidiStreamRequest(ECHO_STREAM_METHOD_PATH, identity, identity);
  const waiting = new Map<number, { resolve(): void; reject(err: Error): void }>();
  let nextTag = 0;
  let queued: Buffer[] = [];
  let failure: Error | undefined;
  const fail = (err: Error) => {
    failure ??= err;
    for (const w of waiting.values()) w.reject(err);
    waiting.clear();
  };
  call.on('data', (message: Buffer) => {
    const tag = message.readUInt32LE(0);
    const w = waiting.get(tag);
    if (w === undefined) return;
    waiting.delete(tag);
    if (message.length === VALUE_BYTES) w.resolve();
    else w.reject(new Error(`stream echo returned ${message.length} bytes`));
  });
  call.on('error', (err: Error) => fail(err));
  call.on('end', () => fail(new Error('the echo stream ended')));
  const flush = () => {
    const batch = queued;
    queued = [];
    call.cork();
    for (const message of batch) call.write(message);
    call.uncork();
  };
  return () =>
    new Promise<void>((resolve, reject) => {
      if (failure !== undefined) return reject(failure);
      const tag = nextTag;
      nextTag = (nextTag + 1) >>> 0;
      const message = Buffer.allocUnsafe(VALUE_BYTES);
      value.copy(message);
      message.writeUInt32LE(tag, 0);
      waiting.set(tag, { resolve, reject });
      if (queued.push(message) === 1) process.nextTick(flush);
    });
}

function unarySystem(res: Resources, address: string, pid: number | undefined): System {
  const client = new SessionServiceClient(address, credentials.createInsecure(), CHANNEL_OPTIONS);
  res.closers.push(() => client.close());
  const put: Op = async (id) => {
    const request: PutRequest = { sessionId: id, parts: [{ name: PART_NAME, value }], ttlSeconds: 0, minReplicas: 0 };
    await unaryPromise<PutResponse>((cb) => client.put(request, new Metadata(), { deadline: deadline() }, cb));
  };
  const get: Op = async (id) => {
    const response = await unaryPromise<GetResponse>((cb) =>
      client.get({ sessionId: id, parts: [], resume: false }, new Metadata(), { deadline: deadline() }, cb),
    );
    if (!response.found || response.session?.parts[0]?.value.length !== VALUE_BYTES) throw new Error(`session ${id} not found`);
  };
  return {
    name: 'unary',
    serverPid: pid,
    phases: [
      { row: 'unary Put', op: put },
      { row: 'unary Get', op: get },
    ],
  };
}

function exchangeSystem(res: Resources, address: string, pid: number | undefined): System {
  const client = new BatonClient(address, { defaultDeadlineMs: OP_DEADLINE_MS, channelOptions: CHANNEL_OPTIONS });
  res.closers.push(() => client.close());
  const put: Op = async (id) => {
    await client.put(id, [{ name: PART_NAME, value }]);
  };
  const get: Op = async (id) => {
    const session = await client.get(id);
    if (session?.parts[0]?.value.length !== VALUE_BYTES) throw new Error(`session ${id} not found`);
  };
  return {
    name: 'exchange',
    serverPid: pid,
    phases: [
      { row: 'Exchange Put', op: put },
      { row: 'Exchange Get', op: get },
    ],
  };
}

async function redisSystem(res: Resources, redisServer: string): Promise<System> {
  const port = await freePort();
  const child = startChild('redis-server', redisServer, [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--save',
    '',
    '--appendonly',
    'no',
    '--daemonize',
    'no',
  ]);
  res.children.push(child);
  await child.waitForLine(/Ready to accept connections/, 20_000);
  // ioredis as most applications configure it: no auto-pipelining; a per-command timeout
  // bounds every operation like the gRPC deadlines do.
  const redis = new Redis({
    host: '127.0.0.1',
    port,
    lazyConnect: true,
    commandTimeout: OP_DEADLINE_MS,
    maxRetriesPerRequest: 1,
    retryStrategy: () => null,
  });
  res.closers.push(async () => {
    await redis.quit().catch(() => redis.disconnect());
  });
  await redis.connect();
  const set: Op = async (id) => {
    await redis.set(id, value);
  };
  const get: Op = async (id) => {
    const answer = await redis.getBuffer(id);
    if (answer?.length !== VALUE_BYTES) throw new Error(`key ${id} not found`);
  };
  await fillPool(set);
  return {
    name: 'redis',
    serverPid: child.process.pid,
    phases: [
      { row: 'Redis SET', op: set },
      { row: 'Redis GET', op: get },
    ],
  };
}

/**
 * The mixed workload: every worker alternates a Put/SET and a Get/GET of 1 KiB on the first
 * MIXED_KEYS ids (both servers hold them from fillPool), baton's phase and Redis's back to
 * back. Without redis-server only baton's runs.
 */
function mixedSystem(exchange: System, redis: System | undefined): System {
  const pair = (system: System, row: (typeof ROWS)[number]): Phase => ({
    row,
    op: system.phases[0]!.op,
    alternate: { op: system.phases[1]!.op, pool: MIXED_KEYS },
    serverPid: system.serverPid,
    seconds: MIXED_SECONDS,
  });
  const phases = [pair(exchange, 'mixed Exchange Put/Get')];
  if (redis !== undefined) phases.push(pair(redis, 'mixed Redis SET/GET'));
  return { name: 'mixed', serverPid: undefined, phases, alternateOrder: true };
}

// --- report -----------------------------------------------------------------------------

function selectedSystems(): Set<SystemName> {
  const only = process.env.BENCH_ONLY;
  if (only === undefined || only.trim() === '') return new Set(SYSTEMS);
  const chosen = new Set<SystemName>();
  for (const name of only.split(',').map((s) => s.trim())) {
    if (!(SYSTEMS as readonly string[]).includes(name)) throw new Error(`BENCH_ONLY: unknown system '${name}' (use ${SYSTEMS.join(',')})`);
    chosen.add(name as SystemName);
  }
  return chosen;
}

function percent(fraction: number): string {
  return Number.isFinite(fraction) ? `${Math.round(fraction * 100)}%` : 'n/a';
}

function printReport(results: Map<string, PhaseResult[]>): void {
  const header = ['workload', 'ops/s', 'p50 ms', 'p99 ms', 'client CPU', 'server CPU', 'client µs/op', 'server µs/op', 'other CPU', 'errors', 'ops/s per run'];
  const rows: string[][] = [];
  for (const row of ROWS) {
    const runs = results.get(row);
    if (runs === undefined || runs.length === 0) continue;
    rows.push([
      row,
      formatCount(median(runs.map((r) => r.opsPerSecond))),
      formatFixed(median(runs.map((r) => r.p50Ms)), 2),
      formatFixed(median(runs.map((r) => r.p99Ms)), 2),
      percent(median(runs.map((r) => r.clientCpu))),
      percent(median(runs.map((r) => r.serverCpu))),
      formatFixed(median(runs.map((r) => (r.clientCpu / r.opsPerSecond) * 1e6)), 1),
      formatFixed(median(runs.map((r) => (r.serverCpu / r.opsPerSecond) * 1e6)), 1),
      percent(Math.max(...runs.map((r) => r.otherCpu))),
      String(runs.reduce((n, r) => n + r.errors, 0)),
      runs.map((r) => formatCount(r.opsPerSecond)).join(' / '),
    ]);
  }
  console.log(
    `\nMedians of ${RUNS} run(s). CPU: share of one core (this machine has ${machineInfo().cores}) and CPU time per ` +
      `operation, for this process (client) and the server process; 'other CPU': the most that every other ` +
      `process on the machine used in one run (noise; should be near 0).`,
  );
  console.log(formatTable(header, rows));

  const ratio = (a: (typeof ROWS)[number], b: (typeof ROWS)[number]): string => {
    const x = results.get(a);
    const y = results.get(b);
    if (x === undefined || y === undefined) return 'n/a (not run)';
    const perRun = x.map((r, i) => r.opsPerSecond / (y[i]?.opsPerSecond ?? NaN));
    return `${formatFixed(median(perRun), 2)}×  (per run: ${perRun.map((v) => formatFixed(v, 2)).join(', ')})`;
  };
  console.log('\nThroughput ratios (computed within each run, median over runs):');
  console.log(`  Exchange Get / Redis GET        ${ratio('Exchange Get', 'Redis GET')}`);
  console.log(`  Exchange Put / Redis SET        ${ratio('Exchange Put', 'Redis SET')}`);
  console.log(`  unary Get / raw unary echo      ${ratio('unary Get', 'raw echo (grpc-js unary)')}`);
  console.log(`  unary Put / raw unary echo      ${ratio('unary Put', 'raw echo (grpc-js unary)')}`);
  console.log(`  Exchange Get / raw stream echo  ${ratio('Exchange Get', 'raw echo (grpc-js stream)')}`);
  console.log(`  Exchange Put / raw stream echo  ${ratio('Exchange Put', 'raw echo (grpc-js stream)')}`);
  console.log(`  raw stream echo / Redis GET     ${ratio('raw echo (grpc-js stream)', 'Redis GET')}`);
  console.log(`  Exchange Get / unary Get        ${ratio('Exchange Get', 'unary Get')}`);

  printMixed(results);

  const failures = [...results.entries()].flatMap(([row, runs]) =>
    runs.filter((r) => r.errors > 0).map((r) => `  ${row}: ${r.errors} errors, first: ${r.firstError}`),
  );
  if (failures.length > 0) console.log(`\nErrors:\n${failures.join('\n')}`);
}

/** The mixed workload per run: baton's and Redis's ops/s and p99, and the ratios against the targets. */
function printMixed(results: Map<string, PhaseResult[]>): void {
  const baton = results.get('mixed Exchange Put/Get');
  if (baton === undefined || baton.length === 0) return;
  const redis = results.get('mixed Redis SET/GET') ?? [];
  console.log(
    `\nMixed workload: ${CONCURRENCY} workers, each alternating a ${VALUE_BYTES} B Put/SET and a Get/GET on ${formatCount(MIXED_KEYS)} keys, ` +
      `${MIXED_SECONDS} s per slice; BatonClient (Exchange) against ioredis + redis-server, back to back in each run. ` +
      `Targets per run: ops/s ≥ ${formatFixed(MIXED_OPS_TARGET, 1)}× and p99 ≤ ${formatFixed(MIXED_P99_TARGET, 1)}× Redis's.`,
  );
  const verdict = (ok: boolean, value: number) => (Number.isFinite(value) ? (ok ? 'met' : 'MISSED') : 'n/a');
  const rows = baton.map((b, i) => {
    const r = redis[i];
    const opsRatio = b.opsPerSecond / (r?.opsPerSecond ?? NaN);
    const p99Ratio = b.p99Ms / (r?.p99Ms ?? NaN);
    return [
      `run ${i + 1}`,
      formatCount(b.opsPerSecond),
      formatFixed(b.p99Ms, 2),
      formatCount(r?.opsPerSecond ?? NaN),
      formatFixed(r?.p99Ms ?? NaN, 2),
      `${formatFixed(opsRatio, 2)}× ${verdict(opsRatio >= MIXED_OPS_TARGET, opsRatio)}`,
      `${formatFixed(p99Ratio, 2)}× ${verdict(p99Ratio <= MIXED_P99_TARGET, p99Ratio)}`,
      `${percent(b.otherCpu)} / ${percent(r?.otherCpu ?? NaN)}`,
    ];
  });
  const opsRatios = baton.map((b, i) => b.opsPerSecond / (redis[i]?.opsPerSecond ?? NaN));
  const p99Ratios = baton.map((b, i) => b.p99Ms / (redis[i]?.p99Ms ?? NaN));
  rows.push([
    'median',
    formatCount(median(baton.map((b) => b.opsPerSecond))),
    formatFixed(median(baton.map((b) => b.p99Ms)), 2),
    formatCount(median(redis.map((r) => r.opsPerSecond))),
    formatFixed(median(redis.map((r) => r.p99Ms)), 2),
    `${formatFixed(median(opsRatios), 2)}×`,
    `${formatFixed(median(p99Ratios), 2)}×`,
    '',
  ]);
  console.log(formatTable(['slice', 'baton ops/s', 'baton p99 ms', 'Redis ops/s', 'Redis p99 ms', 'ops/s ratio', 'p99 ratio', 'other CPU baton / Redis'], rows));
  if (redis.length === 0) console.log('(no Redis slices: redis-server is not on the PATH)');
}

// --- main -------------------------------------------------------------------------------

async function main(): Promise<void> {
  const machine = machineInfo();
  console.log('baton bench:api');
  console.log(describeMachine(machine));
  console.log(
    `workload ${CONCURRENCY} in flight, ${ID_POOL.toLocaleString('en-US')} ids, ${VALUE_BYTES} B values, ` +
      `warm-up ${WARMUP_SECONDS} s + ${MEASURE_SECONDS} s measured per phase, ${RUNS} run(s)`,
  );
  const selected = selectedSystems();
  const res: Resources = { children: [], closers: [] };
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted) process.exit(130);
    interrupted = true;
    console.error(`\n${signal}: stopping the servers`);
    void cleanup(res).finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const systems: System[] = [];
    if (selected.has('echo')) systems.push(await echoSystem(res));
    let exchange: System | undefined;
    if (selected.has('unary') || selected.has('exchange') || selected.has('mixed')) {
      const sidecar = await startSidecar(res);
      exchange = exchangeSystem(res, sidecar.address, sidecar.pid);
      await fillPool(exchange.phases[0]!.op);
      if (selected.has('unary')) systems.push(unarySystem(res, sidecar.address, sidecar.pid));
      if (selected.has('exchange')) systems.push(exchange);
    }
    let redis: System | undefined;
    if (selected.has('redis') || selected.has('mixed')) {
      const redisServer = findOnPath('redis-server');
      if (redisServer === undefined) console.log('redis-server is not on the PATH: the Redis comparison is skipped');
      else redis = await redisSystem(res, redisServer);
      if (redis !== undefined && selected.has('redis')) systems.push(redis);
    }
    if (selected.has('mixed')) systems.push(mixedSystem(exchange!, redis));

    // One untimed pass over every phase first, so no system meets the first run with cold code.
    console.log('\nwarming up every workload (untimed)');
    for (const system of systems) {
      for (const phase of system.phases) await runPhase(phase.op, phase.serverPid ?? system.serverPid, 0, 0, WARMUP_SECONDS, phase.alternate);
    }

    const results = new Map<string, PhaseResult[]>();
    let seed = 1;
    for (let run = 0; run < RUNS; run++) {
      console.log(`\nrun ${run + 1}/${RUNS}`);
      for (let k = 0; k < systems.length; k++) {
        const system = systems[(run + k) % systems.length]!;
        const phases = system.alternateOrder === true && run % 2 === 1 ? [...system.phases].reverse() : system.phases;
        for (const phase of phases) {
          if (interrupted) return;
          const waited = await waitForQuiet(QUIET_WAIT_SECONDS);
          if (waited < 0 || waited >= 1) {
            console.log(waited < 0 ? `  (the machine stayed busy for ${QUIET_WAIT_SECONDS} s; measuring anyway)` : `  (waited ${Math.round(waited)} s for the machine to go quiet)`);
          }
          if (interrupted) return;
          const result = await runPhase(phase.op, phase.serverPid ?? system.serverPid, seed++, WARMUP_SECONDS, phase.seconds ?? MEASURE_SECONDS, phase.alternate);
          const list = results.get(phase.row) ?? [];
          list.push(result);
          results.set(phase.row, list);
          console.log(
            `  ${phase.row.padEnd(27)} ${formatCount(result.opsPerSecond).padStart(8)} ops/s  ` +
              `p50 ${formatFixed(result.p50Ms, 2).padStart(6)} ms  p99 ${formatFixed(result.p99Ms, 2).padStart(6)} ms  ` +
              `CPU client ${percent(result.clientCpu).padStart(4)} server ${percent(result.serverCpu).padStart(4)} ` +
              `other ${percent(result.otherCpu).padStart(4)}` +
              (result.errors > 0 ? `  ${result.errors} errors (${result.firstError})` : ''),
          );
        }
        // Let the last phase's stragglers and garbage settle before the next system starts.
        await sleep(200);
      }
    }
    printReport(results);
  } finally {
    await cleanup(res);
  }
}

async function cleanup(res: Resources): Promise<void> {
  for (const close of res.closers.splice(0)) {
    try {
      await close();
    } catch {
      // closing a client must not keep the servers running
    }
  }
  const stopped = await Promise.all(res.children.splice(0).map(async (c) => `${c.name}: ${await c.stop()}`));
  if (stopped.length > 0) console.log(`\nstopped ${stopped.join(', ')}`);
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
  process.exitCode = 1;
});
