/**
 * The Redis-protocol endpoint against a real redis-server, same client, same run: ioredis
 * (no auto-pipelining, as applications configure it) with 64 commands in flight, 1 KiB
 * values, SET and GET alternating over 1,000 keys, against
 *   (a) a `baton sidecar` with --resp-listen on loopback (the sidecar in its own process),
 *   (b) redis-server (when it is on the PATH; else that row is skipped and said so).
 * Each run measures both systems (the starting one rotates); medians over BENCH_RUNS runs,
 * and the baton / redis-server throughput ratio computed within each run (target ≥ 0.8×).
 *
 * Environment: BENCH_SECONDS (measured seconds per slice, default 3), BENCH_WARMUP_SECONDS
 * (default 1), BENCH_RUNS (default 3), BENCH_QUIET_WAIT_SECONDS (see children.ts).
 *
 * Every load loop stops at its deadline, after MAX_OPS_PER_SLICE operations or after
 * MAX_ERRORS_PER_SLICE failures; every command has a 5 s time-out; a slice that does not end
 * in time aborts the run; the server processes are stopped whatever happens, Ctrl-C included.
 */
import { randomBytes } from 'node:crypto';
import * as os from 'node:os';
import * as path from 'node:path';
import Redis from 'ioredis';
import {
  findOnPath,
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
import { describeMachine, envNumber, formatCount, formatFixed, formatTable, machineInfo, median } from './stats';
import { runClosedLoopSlice, type SliceResult } from './support/closed-loop';

const MEASURE_SECONDS = envNumber('BENCH_SECONDS', 3);
const WARMUP_SECONDS = envNumber('BENCH_WARMUP_SECONDS', 1);
const RUNS = Math.max(1, Math.round(envNumber('BENCH_RUNS', 3)));
const QUIET_WAIT_SECONDS = quietWaitSeconds();
const CONCURRENCY = 64;
const KEYS = 1000;
const VALUE_BYTES = 1024;
const OP_TIMEOUT_MS = 5000;
/** A ceiling far above any rate seen here, so a loop is bounded even if the clock misbehaves. */
const MAX_OPS_PER_SLICE = Math.ceil((MEASURE_SECONDS + WARMUP_SECONDS) * 2_000_000);
const MAX_ERRORS_PER_SLICE = 1000;
const SLICE_SLACK_MS = OP_TIMEOUT_MS + 10_000;
/** The target: baton's RESP throughput at least this share of redis-server's. */
const TARGET_RATIO = 0.8;

const keys = Array.from({ length: KEYS }, (_, i) => `bench-${i.toString(36).padStart(4, '0')}-session`);
const value = randomBytes(VALUE_BYTES);

interface Target {
  name: 'baton --resp-listen' | 'redis-server';
  pid: number | undefined;
  redis: Redis;
}

/**
 * CONCURRENCY workers, each alternating SET and GET on keys taken in turn (a GET reads a key
 * some SET wrote, since every key is filled first): a warm-up, then the measured window.
 */
function runSlice(target: Target, warmupSeconds: number, measureSeconds: number): Promise<SliceResult> {
  return runClosedLoopSlice({
    workers: CONCURRENCY,
    warmupSeconds,
    measureSeconds,
    serverPid: target.pid,
    maxOps: MAX_OPS_PER_SLICE,
    maxErrors: MAX_ERRORS_PER_SLICE,
    maxSamples: Math.ceil(measureSeconds * 500_000),
    slackMs: SLICE_SLACK_MS,
    operation: async (w, n, issued) => {
      const key = keys[(issued + w) % KEYS]!;
      if (n % 2 === 0) await target.redis.set(key, value);
      else {
        const answer = await target.redis.getBuffer(key);
        if (answer?.length !== VALUE_BYTES) throw new Error(`GET ${key} returned ${answer?.length ?? 'nil'}`);
      }
    },
  });
}

interface Resources {
  children: Child[];
  clients: Redis[];
}

/** ioredis as most applications configure it, with a time-out on every command. */
async function connect(res: Resources, port: number): Promise<Redis> {
  const redis = new Redis({ host: '127.0.0.1', port, lazyConnect: true, commandTimeout: OP_TIMEOUT_MS, maxRetriesPerRequest: 1, retryStrategy: () => null });
  res.clients.push(redis);
  await redis.connect();
  return redis;
}

async function startBaton(res: Resources): Promise<Target> {
  const [peerPort, apiPort, metricsPort, respPort] = [await freePort(), await freePort(), await freePort(), await freePort()];
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
    'off',
    '--resp-listen',
    `127.0.0.1:${respPort}`,
    '--log-level',
    'warn',
  ]);
  res.children.push(child);
  await Promise.race([waitForHttp200(`http://127.0.0.1:${metricsPort}/readyz`, 20_000), child.exited]);
  return { name: 'baton --resp-listen', pid: child.process.pid, redis: await connect(res, respPort) };
}

/** redis-server as bench/api.ts starts it: loopback, no persistence, in the foreground. */
async function startRedis(res: Resources, redisServer: string): Promise<Target> {
  const port = await freePort();
  const child = startChild('redis-server', redisServer, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no']);
  res.children.push(child);
  await child.waitForLine(/Ready to accept connections/, 20_000);
  return { name: 'redis-server', pid: child.process.pid, redis: await connect(res, port) };
}

async function fill(target: Target): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < KEYS && !interruption.requested) await target.redis.set(keys[next++]!, value);
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
}

function percent(fraction: number): string {
  return Number.isFinite(fraction) ? `${Math.round(fraction * 100)}%` : 'n/a';
}

async function main(): Promise<void> {
  const disarm = handleInterruptions(Number(process.env.BENCH_MAX_MINUTES ?? 20));
  console.log('baton bench:resp');
  console.log(describeMachine(machineInfo()));
  console.log(
    `workload ioredis, ${CONCURRENCY} in flight, SET/GET alternating over ${KEYS.toLocaleString('en-US')} keys, ${VALUE_BYTES} B values, ` +
      `warm-up ${WARMUP_SECONDS} s + ${MEASURE_SECONDS} s measured per slice, ${RUNS} run(s)`,
  );
  const res: Resources = { children: [], clients: [] };
  try {
    const targets: Target[] = [await startBaton(res)];
    const redisServer = findOnPath('redis-server');
    if (redisServer === undefined) console.log('redis-server is not on the PATH: the comparison with Redis is skipped, baton is measured alone');
    else targets.push(await startRedis(res, redisServer));
    for (const t of targets) await fill(t);

    console.log('\nwarming up (untimed)');
    for (const t of targets) await runSlice(t, 0, WARMUP_SECONDS);

    const results = new Map<Target['name'], SliceResult[]>();
    for (let run = 0; run < RUNS && !interruption.requested; run++) {
      console.log(`\nrun ${run + 1}/${RUNS} (load ${os.loadavg()[0]!.toFixed(2)})`);
      for (let k = 0; k < targets.length && !interruption.requested; k++) {
        const target = targets[(run + k) % targets.length]!;
        const waited = await waitForQuiet(QUIET_WAIT_SECONDS);
        if (waited < 0) console.log(`  (the machine stayed busy for ${QUIET_WAIT_SECONDS} s; measuring anyway)`);
        const r = await runSlice(target, WARMUP_SECONDS, MEASURE_SECONDS);
        results.set(target.name, [...(results.get(target.name) ?? []), r]);
        console.log(
          `  ${target.name.padEnd(20)} ${formatCount(r.opsPerSecond).padStart(8)} ops/s  p50 ${formatFixed(r.p50Ms, 2).padStart(6)} ms  ` +
            `p99 ${formatFixed(r.p99Ms, 2).padStart(6)} ms  CPU client ${percent(r.clientCpu).padStart(4)} server ${percent(r.serverCpu).padStart(4)} ` +
            `other ${percent(r.otherCpu).padStart(4)}` +
            (r.errors > 0 ? `  ${r.errors} errors (${r.firstError})` : ''),
        );
        await sleep(200);
      }
    }

    const header = ['server', 'ops/s', 'p50 ms', 'p99 ms', 'client CPU', 'server CPU', 'server µs/op', 'other CPU', 'errors', 'ops/s per run'];
    const rows = [...results].map(([name, runs]) => [
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
    ]);
    console.log(`\nMedians of ${results.get('baton --resp-listen')?.length ?? 0} run(s); CPU as a share of one core (this machine has ${os.cpus().length}).`);
    console.log(formatTable(header, rows));
    const baton = results.get('baton --resp-listen');
    const redis = results.get('redis-server');
    if (baton !== undefined && redis !== undefined) {
      const perRun = baton.map((r, i) => r.opsPerSecond / (redis[i]?.opsPerSecond ?? NaN));
      const ratio = median(perRun);
      console.log(
        `\nbaton / redis-server (within each run, median): ${formatFixed(ratio, 2)}×  (per run: ${perRun.map((v) => formatFixed(v, 2)).join(', ')})` +
          `  target ≥ ${TARGET_RATIO}×: ${ratio >= TARGET_RATIO ? 'met' : 'missed'}`,
      );
    }
    console.log(`load average at the end: ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  } finally {
    disarm();
    for (const client of res.clients.splice(0)) await client.quit().catch(() => client.disconnect());
    const stopped = await Promise.all(res.children.splice(0).map(async (c) => `${c.name}: ${await c.stop()}`));
    if (stopped.length > 0) console.log(`\nstopped ${stopped.join(', ')}`);
  }
}

runMain(main);
