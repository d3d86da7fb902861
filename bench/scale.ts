/**
 * Scale benchmark: four sidecars holding a million sessions. What does a client of one node
 * see while the cluster does its background work at that size, and how long does a node
 * restarted among them take to hold its copies again?
 *
 * One run starts four `baton sidecar` processes (unicast, sealed with a cluster key,
 * --replicas 2, --partitions 256, heartbeats every 200 ms, dead after 3 s,
 * --anti-entropy-interval-seconds BENCH_ANTI_ENTROPY_SECONDS, --trace-gc), writes
 * BENCH_SESSIONS sessions of one part (BENCH_VALUE_BYTES) through n1's API (512 in flight),
 * then reads sessions on n2 one at a time (Get over Exchange, a closed loop) through four
 * phases, and prints, per phase, the reads' p50/p99/p99.9/max, how many took over 20 ms,
 * and n2's collector pauses (the longest young-generation and full collection):
 *   1. steady: BENCH_STEADY_SECONDS with nothing else happening but heartbeats, elections
 *      and anti-entropy rounds (each compares digests and drops copies placement moved);
 *   2. kill: the victim SIGKILLed (BENCH_VICTIM: n4, which owns no session, or n1, the
 *      owner of every one), BENCH_PHASE_SECONDS: failure detection, re-replication, and
 *      with n1 the takeover of every session by the partitions' new masters;
 *   3. restart: the victim started again under its id with an empty store; the phase lasts
 *      until it answers /readyz and reports no partition under-replicated (at most
 *      BENCH_CATCH_UP_SECONDS): how long that took, and how many of its transfers failed;
 *   4. drain: n3 SIGTERMed, BENCH_PHASE_SECONDS; how long it took to exit.
 * It also prints the RSS of each node after the writes.
 *
 * Environment: BENCH_SESSIONS (1000000), BENCH_VALUE_BYTES (100), BENCH_STEADY_SECONDS
 * (20), BENCH_PHASE_SECONDS (15), BENCH_CATCH_UP_SECONDS (180), BENCH_ANTI_ENTROPY_SECONDS
 * (10), BENCH_VICTIM (n4 or n1), BENCH_MAX_MINUTES (20, whole-run watchdog),
 * BENCH_BATON_BIN (the sidecar's main.js; default this build's, e.g. an older commit's to
 * compare), BENCH_SIDECAR_NODE_ARGS (extra node flags for the sidecars).
 *
 * Every loop is bounded in count and time; every child process is stopped at the end, on
 * error and on Ctrl-C.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { BatonClient } from '../src/client/client';
import { handleInterruptions, interruption, runMain, sleep, waitForHttp200 } from './children';
import type { GcTotals } from './gc-pauses';
import { freePeerPorts, SIDECAR_MAIN, startReplica, type Replica } from './replication-cluster';
import { scrape } from './support/prometheus-scrape';
import { describeMachine, envNumber, formatCount, formatFixed, formatTable, machineInfo, quantileOfSorted } from './stats';

const SESSIONS = Math.round(envNumber('BENCH_SESSIONS', 1_000_000));
const VALUE_BYTES = Math.round(envNumber('BENCH_VALUE_BYTES', 100));
const STEADY_SECONDS = envNumber('BENCH_STEADY_SECONDS', 20);
const PHASE_SECONDS = envNumber('BENCH_PHASE_SECONDS', 15);
const CATCH_UP_SECONDS = envNumber('BENCH_CATCH_UP_SECONDS', 180);
const ANTI_ENTROPY_SECONDS = envNumber('BENCH_ANTI_ENTROPY_SECONDS', 10);
/** The node killed and restarted: 4 (owns no session) or 1 (owns every one). */
const VICTIM = process.env.BENCH_VICTIM === 'n1' ? 0 : 3;
const MAX_MINUTES = envNumber('BENCH_MAX_MINUTES', 20);
const BATON_BIN = process.env.BENCH_BATON_BIN ?? SIDECAR_MAIN;
const SIDECAR_NODE_ARGS = ['--trace-gc', '--max-old-space-size=8192', ...(process.env.BENCH_SIDECAR_NODE_ARGS ?? '').split(/\s+/).filter((a) => a !== '')];

const NODES = 4;
const LOAD_IN_FLIGHT = 512;
/** A read slower than this is counted (ms). */
const SLOW_MS = 20;
/** Reads of one phase kept for quantiles at most. */
const MAX_SAMPLES = 2_000_000;
const UNDER_REPLICATED = 'baton_partitions_under_replicated';

interface PhaseFigures {
  name: string;
  reads: number;
  errors: number;
  p50: number;
  p99: number;
  p999: number;
  max: number;
  slow: number;
  longestScavengeMs: number;
  longestMajorMs: number;
  note: string;
}

/** Reads on `node` one at a time until `done` says so (checked between reads) or the bound. */
async function readPhase(name: string, reader: BatonClient, gc: GcTotals, maxSeconds: number, done: () => boolean = () => false): Promise<Omit<PhaseFigures, 'note'>> {
  const samples: number[] = [];
  let errors = 0;
  let slow = 0;
  let k = 0;
  gc.resetLongest();
  const end = Date.now() + maxSeconds * 1000;
  while (Date.now() < end && !done() && !interruption.requested && samples.length < MAX_SAMPLES) {
    const started = process.hrtime.bigint();
    try {
      await reader.get(`s${(k++ * 7919) % SESSIONS}`);
    } catch {
      errors++;
    }
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    samples.push(ms);
    if (ms > SLOW_MS) slow++;
  }
  samples.sort((a, b) => a - b);
  const q = (x: number) => quantileOfSorted(samples, x);
  return { name, reads: samples.length, errors, p50: q(0.5), p99: q(0.99), p999: q(0.999), max: samples[samples.length - 1] ?? NaN, slow, longestScavengeMs: gc.longestScavengeMs, longestMajorMs: gc.longestMajorMs };
}

function rssMiB(node: Replica): number {
  try {
    const pages = Number(readFileSync(`/proc/${node.child.process.pid}/statm`, 'utf8').split(' ')[1]);
    return (pages * 4096) / (1024 * 1024);
  } catch {
    return NaN;
  }
}

async function gauge(node: Replica, name: string): Promise<number> {
  try {
    return (await scrape(node.metricsUrl)).value(name);
  } catch {
    return NaN;
  }
}

async function failedTransfers(node: Replica): Promise<number> {
  try {
    const s = await scrape(node.metricsUrl);
    return s.samples.filter((x) => x.name === 'baton_replication_resyncs_total' && x.labels.outcome !== 'ok').reduce((sum, x) => sum + x.value, 0);
  } catch {
    return NaN;
  }
}

async function main(): Promise<void> {
  const stopWatchdog = handleInterruptions(MAX_MINUTES);
  const machine = machineInfo();
  process.env.BATON_CLUSTER_KEY = randomBytes(32).toString('base64');
  const ports = await freePeerPorts(NODES);
  const peers = ports.map((p) => `127.0.0.1:${p}`).join(',');
  const flags = (i: number) => [
    '--peers',
    peers,
    '--peer-listen',
    `127.0.0.1:${ports[i]}`,
    '--replicas',
    '2',
    '--partitions',
    '256',
    '--heartbeat-interval-ms',
    '200',
    '--suspect-after-ms',
    '1000',
    '--dead-after-ms',
    '3000',
    '--anti-entropy-interval-seconds',
    String(ANTI_ENTROPY_SECONDS),
  ];
  const start = (i: number) => startReplica(`n${i + 1}`, flags(i), SIDECAR_NODE_ARGS, BATON_BIN);
  const nodes: (Replica | undefined)[] = [];
  const phases: PhaseFigures[] = [];
  const writer = { client: undefined as BatonClient | undefined };
  try {
    for (let i = 0; i < NODES; i++) nodes.push(await start(i));
    await Promise.all(nodes.map((n) => waitForHttp200(n!.metricsUrl.replace('/metrics', '/readyz'), 30_000)));
    const [n1, n2, n3] = nodes as Replica[];
    writer.client = new BatonClient(n1.apiAddress, { defaultDeadlineMs: 60_000 });
    const value = Buffer.alloc(VALUE_BYTES, 7);
    const loadStarted = Date.now();
    for (let k = 0; k < SESSIONS && !interruption.requested; k += LOAD_IN_FLIGHT) {
      const batch = Array.from({ length: Math.min(LOAD_IN_FLIGHT, SESSIONS - k) }, (_, j) => writer.client!.put(`s${k + j}`, { data: value }));
      await Promise.all(batch);
    }
    const loadSeconds = (Date.now() - loadStarted) / 1000;
    console.log(`wrote ${formatCount(SESSIONS)} sessions of ${VALUE_BYTES} B through n1 in ${formatFixed(loadSeconds, 1)} s; RSS ${nodes.map((n) => `${n!.nodeId} ${formatFixed(rssMiB(n!), 0)} MiB`).join(', ')}`);
    await sleep(5000);
    const reader = n2.client;

    const steady = await readPhase('steady', reader, n2.gc, STEADY_SECONDS);
    phases.push({ ...steady, note: `anti-entropy every ${ANTI_ENTROPY_SECONDS} s` });

    const victim = nodes[VICTIM]!;
    const name = victim.nodeId;
    victim.child.process.kill('SIGKILL');
    const killed = await readPhase(`kill ${name}`, reader, n2.gc, PHASE_SECONDS);
    const claims = await Promise.all(nodes.filter((n): n is Replica => n !== undefined && n !== victim).map((n) => scrape(n.metricsUrl).then((x) => x.value('baton_sessions_claimed_total', { reason: 'takeover' }), () => NaN)));
    phases.push({ ...killed, note: `SIGKILL: detection, re-replication; ${formatCount(claims.reduce((a, b) => a + b, 0))} sessions taken over` });
    await victim.child.stop(1000);

    const restartedAt = Date.now();
    const back = await start(VICTIM);
    nodes[VICTIM] = back;
    let caughtUpAt = NaN;
    let polling = true;
    const poll = (async () => {
      while (polling && !interruption.requested) {
        const ready = await fetch(back.metricsUrl.replace('/metrics', '/readyz')).then((r) => r.status === 200, () => false);
        if (ready && (await gauge(back, UNDER_REPLICATED)) === 0) {
          caughtUpAt = Date.now();
          return;
        }
        await sleep(250);
      }
    })();
    const restarted = await readPhase(`restart ${name}`, reader, n2.gc, CATCH_UP_SECONDS, () => !Number.isNaN(caughtUpAt));
    polling = false;
    await poll;
    const failed = await failedTransfers(back);
    phases.push({
      ...restarted,
      note: Number.isNaN(caughtUpAt)
        ? `${name} not caught up within ${CATCH_UP_SECONDS} s`
        : `${name} ready and fully replicated ${formatFixed((caughtUpAt - restartedAt) / 1000, 1)} s after its start; ${failed} failed transfers`,
    });

    const termAt = Date.now();
    n3.child.process.kill('SIGTERM');
    let exitedAt = NaN;
    n3.child.exited.catch(() => (exitedAt = Date.now()));
    const drained = await readPhase('drain n3', reader, n2.gc, PHASE_SECONDS);
    phases.push({ ...drained, note: Number.isNaN(exitedAt) ? `n3 still running ${PHASE_SECONDS} s after SIGTERM` : `n3 exited ${formatFixed((exitedAt - termAt) / 1000, 2)} s after SIGTERM` });
  } finally {
    writer.client?.close();
    for (const node of nodes) node?.client.close();
    await Promise.all(nodes.map((n) => n?.child.stop(5000)));
    stopWatchdog();
  }

  console.log(`\n=== scale: four sidecars, ${formatCount(SESSIONS)} sessions, reads on n2 one at a time ===`);
  console.log(describeMachine(machine));
  console.log(
    formatTable(
      ['phase', 'reads', 'errors', 'p50 ms', 'p99 ms', 'p99.9 ms', 'max ms', `> ${SLOW_MS} ms`, 'n2 longest scavenge / full GC ms', ''],
      phases.map((p) => [
        p.name,
        formatCount(p.reads),
        String(p.errors),
        formatFixed(p.p50, 2),
        formatFixed(p.p99, 2),
        formatFixed(p.p999, 2),
        formatFixed(p.max, 1),
        String(p.slow),
        `${formatFixed(p.longestScavengeMs, 1)} / ${formatFixed(p.longestMajorMs, 1)}`,
        p.note,
      ]),
    ),
  );
}

runMain(main);
