/**
 * TLS handshakes on a pod that never saw the client: resumed against full, in the same run.
 *
 * Two real `baton sidecar`s (one cluster key, loopback) and beside each a Node https server
 * in a process of its own that resumes sessions through library mode (attachTlsResumption;
 * bench/tls-web-server.ts). Per phase, a load process (bench/handshake-load.ts) collects
 * sessions from server A with full handshakes, then runs a closed loop of concurrent
 * handshakers against server B that resume them (Node's tls.connect with `session`), or,
 * for the baseline, make full handshakes with B. Phases: TLS 1.3 full and resumed (tickets);
 * TLS 1.2 full and resumed with tickets; TLS 1.2 full and resumed with session ids (the
 * client sends no ticket extension; B reads the session from its sidecar). Each resumed
 * phase is compared with the full handshake the same client makes. The certificate is RSA-2048 (cert-manager's default). Each
 * round runs every phase, the starting phase rotating; medians over rounds, and each ratio
 * (resumed / full of the same version) computed within its round. Target: ≥ 1.5×.
 *
 * Environment: BENCH_SECONDS (measured seconds per phase, default 3), BENCH_WARMUP_SECONDS
 * (1), BENCH_RUNS (rounds, 3), BENCH_CONCURRENCY (handshakers, 16), BENCH_POOL (sessions
 * collected from A per phase, 256), BENCH_QUIET_WAIT_SECONDS (children.ts), BENCH_MAX_MINUTES
 * (whole-run watchdog, 15).
 *
 * Bounds: every connection has a 5 s time-out and every phase a watchdog (handshake-load.ts);
 * every process is stopped at the end, on error and on Ctrl-C.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BatonClient } from '../src/client/client';
import { handleInterruptions, interruption, quietWaitSeconds, runMain, sleep, startChild, waitForQuiet, type Child } from './children';
import type { HandshakeKind, HandshakeLoadConfig, HandshakeLoadResult } from './handshake-load';
import { freePeerPorts, startReplica, type Replica } from './replication-cluster';
import { describeMachine, envNumber, formatCount, formatFixed, formatTable, machineInfo, median } from './stats';
import { writeBenchCertificate } from './support/bench-certificate';

const MEASURE_SECONDS = envNumber('BENCH_SECONDS', 3);
const WARMUP_SECONDS = envNumber('BENCH_WARMUP_SECONDS', 1);
const RUNS = Math.max(1, Math.round(envNumber('BENCH_RUNS', 3)));
const CONCURRENCY = Math.max(1, Math.round(envNumber('BENCH_CONCURRENCY', 16)));
const POOL = Math.max(1, Math.round(envNumber('BENCH_POOL', 256)));
const QUIET_WAIT_SECONDS = quietWaitSeconds();
const START_TIMEOUT_MS = 30_000;
/** A phase: pool collection, warm-up and window, plus the process's start and slack. */
const PHASE_TIMEOUT_MS = (WARMUP_SECONDS + MEASURE_SECONDS) * 1000 + 60_000;
/** Target of issue 13. */
const TARGET_RATIO = 1.5;

interface Phase {
  name: string;
  kind: HandshakeKind;
  version: 'TLSv1.2' | 'TLSv1.3';
}

const PHASES: readonly Phase[] = [
  { name: 'TLS 1.3 full', kind: 'full', version: 'TLSv1.3' },
  { name: 'TLS 1.3 resumed (ticket)', kind: 'ticket', version: 'TLSv1.3' },
  { name: 'TLS 1.2 full', kind: 'full', version: 'TLSv1.2' },
  { name: 'TLS 1.2 resumed (ticket)', kind: 'ticket', version: 'TLSv1.2' },
  { name: 'TLS 1.2 full (no ticket)', kind: 'full-no-ticket', version: 'TLSv1.2' },
  { name: 'TLS 1.2 resumed (session id)', kind: 'session-id', version: 'TLSv1.2' },
];

interface Pod {
  sidecar: Replica;
  server: Child;
  port: number;
}

async function startWebServer(name: string, apiAddress: string, certFile: string, keyFile: string, children: Child[]): Promise<{ child: Child; port: number }> {
  // startChild passes this process's environment on: set the server's for its start only.
  const env = { BENCH_BATON_API: apiAddress, BENCH_CERT_FILE: certFile, BENCH_KEY_FILE: keyFile, BENCH_SERVER_NAME: name };
  Object.assign(process.env, env);
  let child: Child;
  try {
    child = startChild(`web server ${name}`, process.execPath, [path.join(__dirname, 'tls-web-server.js')]);
  } finally {
    for (const key of Object.keys(env)) delete process.env[key];
  }
  children.push(child);
  const [, port] = await child.waitForLine(/^\{"listening":(\d+)\}$/, START_TIMEOUT_MS);
  return { child, port: Number(port) };
}

/** Waits until both sidecars stream the same issuing ticket key (the cluster agreed on its keys). */
async function waitForSharedKeys(pods: readonly Pod[]): Promise<void> {
  const latest: (string | undefined)[] = pods.map(() => undefined);
  const clients = pods.map((p) => new BatonClient(p.sidecar.apiAddress));
  const stops = clients.map((c, i) => c.watchTlsResumption((s) => (latest[i] = Buffer.from(s.issueKey).toString('hex'))));
  try {
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (!(latest[0] !== undefined && latest.every((k) => k === latest[0]))) {
      if (Date.now() > deadline) throw new Error('the two sidecars did not agree on a ticket key within 30 s');
      await sleep(100);
    }
  } finally {
    stops.forEach((stop) => stop());
    clients.forEach((c) => c.close());
  }
}

async function runPhase(phase: Phase, pods: readonly Pod[], caFile: string, warmupSeconds: number, measureSeconds: number, children: Child[]): Promise<HandshakeLoadResult> {
  const [a, b] = pods as [Pod, Pod];
  const config: HandshakeLoadConfig = {
    kind: phase.kind,
    version: phase.version,
    portA: a.port,
    portB: b.port,
    caFile,
    concurrency: CONCURRENCY,
    poolSize: POOL,
    warmupSeconds,
    measureSeconds,
    serverPid: b.server.process.pid,
    sidecarPid: b.sidecar.child.process.pid,
    sidecarMetricsUrl: b.sidecar.metricsUrl,
  };
  const load = startChild('handshake load', process.execPath, [path.join(__dirname, 'handshake-load.js'), JSON.stringify(config)]);
  children.push(load);
  try {
    const [, json] = await load.waitForLine(/^RESULT (.*)$/, PHASE_TIMEOUT_MS);
    const raw = JSON.parse(json!) as Record<string, unknown>;
    // JSON has no NaN: a share that could not be read comes back as null.
    for (const [k, v] of Object.entries(raw)) if (v === null && k !== 'firstError') raw[k] = NaN;
    return raw as unknown as HandshakeLoadResult;
  } finally {
    children.splice(children.indexOf(load), 1);
    await load.stop(5000);
  }
}

/** "Get 1.00, Put 2.00", or "none". */
function describeOperations(perHandshake: Record<string, number>): string {
  const entries = Object.entries(perHandshake).sort(([a], [b]) => a.localeCompare(b));
  return entries.length === 0 ? 'none' : entries.map(([method, n]) => `${method} ${n.toFixed(2)}`).join(', ');
}

/** Per method, the median over rounds of its calls per handshake (0 in a round without it). */
function medianOperations(runs: readonly HandshakeLoadResult[]): Record<string, number> {
  const methods = new Set(runs.flatMap((r) => Object.keys(r.operationsPerHandshake)));
  return Object.fromEntries([...methods].map((m) => [m, median(runs.map((r) => r.operationsPerHandshake[m] ?? 0))]));
}

function percent(fraction: number): string {
  return Number.isFinite(fraction) ? `${Math.round(fraction * 100)}%` : 'n/a';
}

async function main(): Promise<void> {
  const disarm = handleInterruptions(Number(process.env.BENCH_MAX_MINUTES ?? 15));
  console.log('baton bench:handshakes');
  console.log(describeMachine(machineInfo()));
  console.log(
    `workload: ${CONCURRENCY} concurrent handshakers (one process, Node's tls.connect), RSA-2048 certificate, pools of ${POOL} sessions from server A, ` +
      `warm-up ${WARMUP_SECONDS} s + ${MEASURE_SECONDS} s per phase; ${RUNS} round(s)`,
  );
  const dir = mkdtempSync(path.join(os.tmpdir(), 'baton-bench-handshakes-'));
  const children: Child[] = [];
  const sidecars: Replica[] = [];
  try {
    const cert = writeBenchCertificate(dir);
    process.env.BATON_CLUSTER_KEY = randomBytes(32).toString('base64');
    const ports = await freePeerPorts(2);
    const peers = ports.map((p) => `127.0.0.1:${p}`).join(',');
    const pods: Pod[] = [];
    try {
      for (const [i, id] of ['a', 'b'].entries()) {
        const sidecar = await startReplica(id, ['--peers', peers, '--peer-listen', `127.0.0.1:${ports[i]}`]);
        sidecars.push(sidecar);
        const web = await startWebServer(id.toUpperCase(), sidecar.apiAddress, cert.certFile, cert.keyFile, children);
        pods.push({ sidecar, server: web.child, port: web.port });
      }
    } finally {
      delete process.env.BATON_CLUSTER_KEY;
    }
    await waitForSharedKeys(pods);

    console.log('\nwarming up (untimed)');
    for (const phase of PHASES) {
      const r = await runPhase(phase, pods, cert.certFile, 0, Math.min(1, WARMUP_SECONDS), children);
      if (r.errors > 0) throw new Error(`warm-up of ${phase.name}: ${r.errors} errors (${r.firstError})`);
    }

    const results = new Map<string, HandshakeLoadResult[]>(PHASES.map((p) => [p.name, []]));
    for (let run = 0; run < RUNS && !interruption.requested; run++) {
      console.log(`\nround ${run + 1}/${RUNS} (load ${os.loadavg()[0]!.toFixed(2)})`);
      for (let k = 0; k < PHASES.length && !interruption.requested; k++) {
        const phase = PHASES[(run + k) % PHASES.length]!;
        const waited = await waitForQuiet(QUIET_WAIT_SECONDS);
        if (waited < 0) console.log(`  (the machine stayed busy for ${QUIET_WAIT_SECONDS} s; measuring anyway)`);
        const r = await runPhase(phase, pods, cert.certFile, WARMUP_SECONDS, MEASURE_SECONDS, children);
        results.get(phase.name)!.push(r);
        console.log(
          `  ${phase.name.padEnd(30)} ${formatCount(r.opsPerSecond).padStart(6)}/s  p50 ${formatFixed(r.p50Ms, 2).padStart(6)} ms  ` +
            `CPU client ${percent(r.clientCpu).padStart(4)} server B ${percent(r.serverCpu).padStart(4)} sidecar B ${percent(r.sidecarCpu).padStart(4)} ` +
            `other ${percent(r.otherCpu).padStart(4)}` +
            `  sidecar B calls/hs ${describeOperations(r.operationsPerHandshake)}` +
            (r.errors > 0 ? `  ${r.errors} errors (${r.firstError})` : ''),
        );
      }
    }

    const rounds = Math.min(...[...results.values()].map((r) => r.length));
    console.log(`\nMedians of ${rounds} round(s); CPU as a share of one core (this machine has ${os.cpus().length}).`);
    console.log(
      formatTable(
        ['phase (handshakes with server B)', 'per s', 'p50 ms', 'p99 ms', 'server B µs/hs', 'sidecar B µs/hs', 'client µs/hs', 'sidecar B calls/hs', 'other CPU', 'errors', 'per s per round'],
        PHASES.map((p) => {
          const runs = results.get(p.name)!;
          return [
            p.name,
            formatCount(median(runs.map((r) => r.opsPerSecond))),
            formatFixed(median(runs.map((r) => r.p50Ms)), 2),
            formatFixed(median(runs.map((r) => r.p99Ms)), 2),
            formatFixed(median(runs.map((r) => (r.serverCpu / r.opsPerSecond) * 1e6)), 0),
            formatFixed(median(runs.map((r) => (r.sidecarCpu / r.opsPerSecond) * 1e6)), 0),
            formatFixed(median(runs.map((r) => (r.clientCpu / r.opsPerSecond) * 1e6)), 0),
            describeOperations(medianOperations(runs)),
            percent(Math.max(...runs.map((r) => r.otherCpu))),
            String(runs.reduce((n, r) => n + r.errors, 0)),
            runs.map((r) => formatCount(r.opsPerSecond)).join(' / '),
          ];
        }),
      ),
    );
    console.log(`\nTarget: resumed handshakes/s on server B ≥ ${TARGET_RATIO}× full handshakes/s (the same client's full handshake, ratio within each round):`);
    for (const [resumed, full] of [
      ['TLS 1.3 resumed (ticket)', 'TLS 1.3 full'],
      ['TLS 1.2 resumed (ticket)', 'TLS 1.2 full'],
      ['TLS 1.2 resumed (session id)', 'TLS 1.2 full (no ticket)'],
    ] as const) {
      const r = results.get(resumed)!;
      const f = results.get(full)!;
      const perRound = r.map((x, i) => x.opsPerSecond / (f[i]?.opsPerSecond ?? NaN));
      const ratio = median(perRound);
      console.log(
        `  ${resumed.padEnd(30)} / full  ${formatFixed(ratio, 2)}×  (per round: ${perRound.map((v) => formatFixed(v, 2)).join(', ')})  ` +
          `${Number.isFinite(ratio) ? (ratio >= TARGET_RATIO ? 'met' : 'missed') : 'not measured'}`,
      );
    }
    console.log(`load average at the end: ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  } finally {
    disarm();
    const stopped = await Promise.all([
      ...children.splice(0).map(async (c) => `${c.name}: ${await c.stop(5000)}`),
      ...sidecars.splice(0).map(async (s) => {
        s.client.close();
        return `sidecar ${s.nodeId}: ${await s.child.stop()}`;
      }),
    ]);
    if (stopped.length > 0) console.log(`\nstopped ${stopped.join(', ')}`);
    rmSync(dir, { recursive: true, force: true });
  }
}

runMain(main);
