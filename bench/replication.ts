/**
 * Replication benchmark: one writer, three replicas, on loopback.
 *
 * The replicas are real `baton sidecar` processes (dist/sidecar/cli/main.js) with a cluster key
 * (datagrams sealed with AES-256-GCM, as users run it) and `--replicas 3`, so each of them
 * holds every session the writer writes. The writer node runs in this process and is
 * written to in-process through SessionApi (see bench/replication-cluster.ts), so the
 * figures measure replication rather than the gRPC API; one extra configuration writes
 * through BatonClient over Exchange instead, end to end.
 *
 * Configurations: unicast and multicast × parts of 1 KiB and 256 B × 0% and 5% injected
 * loss, with 60000-byte datagrams, plus 1400-byte datagrams for the 1 KiB parts
 * (BENCH_FULL_MATRIX=1: for 256 B too); one multicast row written over Exchange; and a
 * bound check under heavy loss (30%, 1 KiB parts with every 8th at 16 KiB, so fragmented,
 * and a 2 MiB retransmit buffer). For each it starts a fresh cluster, warms it up untimed —
 * fills the id pool once (windowed), then overwrites every id once flat out, so that the
 * measured phases run code the JIT has already optimised for overwrites at full speed, as
 * JGroups' anchor is measured after its warm-up messages — and runs:
 *   flat-out  BENCH_SESSIONS puts over the id pool, as fast as the writer goes, in batches
 *             of WRITE_BATCH per event-loop turn (baton has no flow control of its own);
 *   windowed  the same, but the writer pauses while any replica has more than
 *             BENCH_WINDOW_KB of datagrams unacknowledged (flow control done by the bench);
 *   paced     BENCH_PACED_RATE puts/s for BENCH_SECONDS (lag, NACKs, retransmissions).
 * After each phase it waits until every replica's partition digests (PeerService.Digests)
 * equal the writer's and a sample of ids read back (Get) equals the writer's value:
 * "converged". Delivered deltas/s per replica = deltas it applied in the phase ÷ (first
 * put → converged). Lag quantiles come from each replica's baton_replication_lag_seconds
 * histogram (bucket deltas over the phase: the figure is the bucket's upper bound).
 *
 * The anchors, in the same run (bench/replication-anchors.ts): baton end to end — a sidecar
 * writer fed over Exchange with Puts of 4 parts of 1 KiB — against JGroups 2.12 (1 sender →
 * 3 receivers, 1 KiB messages, its default UDP stack; bench/jgroups-anchor.ts), at 1,400 B and
 * 60,000 B datagrams and in unicast fan-out, BENCH_ANCHOR_RUNS times, with the ratio per run;
 * and lag, scavenge time and CPU per delta at BENCH_PACED_RATE deltas/s, 0% and 5% loss.
 * Without Java or the JGroups jar it says which Debian package is missing and runs the rest.
 * Every sidecar runs with --trace-gc: each phase reports the young-generation GC pause per
 * second of every process (and CPU µs per delta).
 *
 * The raw ceiling, in the same run (bench/raw-ceiling.ts): a sender in this process sends
 * datagrams flat out for BENCH_RAW_SECONDS to three receiver processes (bench/udp-sink.ts,
 * 4 MiB receive buffers), by unicast to each and by multicast to a group they join: plain
 * node:dgram, and for 1 KiB datagrams also baton's sendmmsg batches and segmented sends,
 * with the kernel's CPU per datagram of sender and receivers.
 *
 * Loss is injected by the sidecars' --inject-loss-percent (received datagrams dropped, on
 * every node, writer included), counted in baton_replication_dropped_total{reason="injected_loss"}.
 *
 * Environment: BENCH_SECONDS (paced phase, default 5), BENCH_SESSIONS (puts per flat-out
 * and windowed phase, default 100000), BENCH_IDS (id pool, default 20000), BENCH_PACED_RATE
 * (10000), BENCH_WINDOW_KB (1024), BENCH_RAW_SECONDS (3), BENCH_DATAGRAM_SIZES ("1400,60000"),
 * BENCH_FULL_MATRIX (0), BENCH_ONLY (substrings of configuration names, comma-separated),
 * BENCH_HEAVY_LOSS (30; 0 skips the bound check), BENCH_HEAVY_TRANSPORTS ("multicast"; or
 * "multicast,unicast"), BENCH_HEAVY_SESSIONS (20000), BENCH_EXCHANGE (1; 0 skips that row),
 * BENCH_CONVERGE_TIMEOUT_SECONDS (15), BENCH_MAX_MINUTES (35, whole-run watchdog),
 * BENCH_PHASES (comma list of flat-out, windowed, paced), BENCH_SIDECAR_NODE_ARGS (extra
 * node flags for the replicas), BENCH_DEBUG=1 (per-phase counters of every node),
 * BENCH_PROFILE_DIR (a CPU profile of this process per timed phase, written there),
 * BENCH_ANCHORS (1; 0 skips the anchors), BENCH_ANCHOR_RUNS (3), BENCH_ANCHOR_DELTAS (deltas
 * per flat-out phase and JGroups messages per round, default BENCH_SESSIONS),
 * BENCH_JGROUPS_WARMUP (1000000 messages: its JIT's steady state, see below), BENCH_JGROUPS_MAX_SECONDS (120 per round),
 * BENCH_JGROUPS_JAR (/usr/share/java/jgroups.jar).
 * BENCH_RAW_SECONDS=0 skips the raw ceiling. A phase that does not converge within the
 * timeout is reported as such, and the next phase runs on a fresh cluster.
 *
 * Every loop is bounded in count and time; every child process is stopped at the end, on
 * error and on Ctrl-C (and killed by an exit hook as a last resort).
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { Session as InspectorSession } from 'node:inspector/promises';
import { join } from 'node:path';
import { cpuSecondsOf, handleInterruptions, interruption, ownCpuSeconds, runMain, sleep, threadCpuSecondsOf } from './children';
import {
  DigestReader,
  ExchangeWriter,
  freePeerPorts,
  InProcessWriter,
  ownGc,
  SidecarWriter,
  cpuPerDelta,
  systemPerDelta,
  lagMs as ms,
  pct,
  fullCollections,
  scavenges,
  startReplica,
  writerConfig,
  type ClusterConfig,
  type PartValue,
  type PhaseKind,
  type PhaseResult,
  type Replica,
  type ReplicaResult,
  type Transport,
  type Writer,
  type WriterCounters,
} from './replication-cluster';
import { gcRate } from './gc-pauses';
import { MAX_SEGMENTED_BYTES } from '../sidecar/net/udp-batch';
import { rawCeiling, type RawResult } from './raw-ceiling';
import { anchorConfigs, printAnchors, runAnchors } from './replication-anchors';
import { histogramQuantile, scrape, Scrape, seriesName, type Labels } from './support/prometheus-scrape';
import { describeMachine, envNumber, formatCount, formatFixed, formatTable, machineInfo } from './stats';

const PACED_SECONDS = envNumber('BENCH_SECONDS', 5);
const SESSIONS = Math.round(envNumber('BENCH_SESSIONS', 100_000));
const ID_POOL = Math.round(envNumber('BENCH_IDS', 20_000));
/** Puts of each cluster's warm-up (fresh() in runCluster): the id pool written twice. */
const WARMUP_PUTS = 2 * ID_POOL;
const PACED_RATE = envNumber('BENCH_PACED_RATE', 10_000);
const WINDOW_BYTES = envNumberOrZero('BENCH_WINDOW_KB', 1024) * 1024;
const RAW_SECONDS = envNumberOrZero('BENCH_RAW_SECONDS', 3);
const DATAGRAM_SIZES = (process.env.BENCH_DATAGRAM_SIZES ?? '1400,60000').split(',').map((s) => Number(s.trim()));
const ONLY = (process.env.BENCH_ONLY ?? '').split(',').map((s) => s.trim()).filter((s) => s !== '');
const HEAVY_LOSS = envNumberOrZero('BENCH_HEAVY_LOSS', 30);
const HEAVY_TRANSPORTS = (process.env.BENCH_HEAVY_TRANSPORTS ?? 'multicast').split(',').map((s) => s.trim());
const HEAVY_SESSIONS = Math.round(envNumber('BENCH_HEAVY_SESSIONS', 20_000));
const FULL_MATRIX = envNumberOrZero('BENCH_FULL_MATRIX', 0) > 0;
const EXCHANGE = envNumberOrZero('BENCH_EXCHANGE', 1) > 0;
const CONVERGE_TIMEOUT_MS = envNumber('BENCH_CONVERGE_TIMEOUT_SECONDS', 15) * 1000;
const MAX_MINUTES = envNumber('BENCH_MAX_MINUTES', 35);
const ANCHORS = envNumberOrZero('BENCH_ANCHORS', 1) > 0;
const ANCHOR_RUNS = Math.round(envNumber('BENCH_ANCHOR_RUNS', 3));
const ANCHOR_DELTAS = Math.round(envNumber('BENCH_ANCHOR_DELTAS', SESSIONS));
/**
 * JGroups' warm-up. The JVM keeps getting faster long after its first messages: 100,000
 * timed messages per receiver went at ~25k/s after 20,000 warm-up messages, ~62k/s after
 * 100,000, ~120k/s after 200,000 and ~180-195k/s after 800,000-1,600,000 (2026-12-08,
 * docs/benchmarks.md), so the anchor is measured after a million.
 */
const JGROUPS_WARMUP = Math.round(envNumber('BENCH_JGROUPS_WARMUP', 1_000_000));
const JGROUPS_MAX_SECONDS = envNumber('BENCH_JGROUPS_MAX_SECONDS', 120);
const PHASES = (process.env.BENCH_PHASES ?? 'flat-out,windowed,paced').split(',').map((s) => s.trim());
/** Extra baton flags for every sidecar of the cluster (BENCH_SIDECAR_FLAGS, e.g. "--send-window-kb 4096"). */
const SIDECAR_FLAGS = (process.env.BENCH_SIDECAR_FLAGS ?? '').split(/\s+/).filter((a) => a !== '');
/** Node flags of every sidecar: --trace-gc (its GC pauses are summed per phase), then BENCH_SIDECAR_NODE_ARGS. */
const SIDECAR_NODE_ARGS = ['--trace-gc', ...(process.env.BENCH_SIDECAR_NODE_ARGS ?? '').split(/\s+/).filter((a) => a !== '')];

/** Puts per event-loop turn in the flat-out and windowed phases (one flush per turn). */
const WRITE_BATCH = 128;
/** Exchange writer: BatonClients (streams) and puts in flight across them. */
const EXCHANGE_CLIENTS = 4;
const EXCHANGE_IN_FLIGHT = 256;
/** Ids read back from each replica to check values (besides the digests). */
const SAMPLE_IDS = 200;
/** A write phase that has not issued its puts after this long stops (and says so). */
const WRITE_TIMEOUT_MS = 120_000;
/** How often convergence is polled. */
const CONVERGE_POLL_MS = 10;
/** Retransmit buffer of the heavy-loss configuration (MiB), small enough to be reached. */
const HEAVY_RETRANSMIT_MB = 2;
/** The heavy-loss configuration writes every HEAVY_LARGE_EVERY-th part at this size (fragmented). */
const HEAVY_LARGE_BYTES = 16 * 1024;
const HEAVY_LARGE_EVERY = 8;
/** The reassembly bound the driver sets: max(8 × --max-value-bytes, 16 MiB) per sender. */
const REASSEMBLY_BOUND_BYTES = Math.max(8 * 1_048_576, 16 * 1024 * 1024);
const PARTITIONS = 256;

function envNumberOrZero(name: string, fallback: number): number {
  const text = process.env[name];
  if (text === '0') return 0;
  return envNumber(name, fallback);
}

// --- configurations --------------------------------------------------------------------

function configurations(): ClusterConfig[] {
  const list: ClusterConfig[] = [];
  for (const transport of ['multicast', 'unicast'] as const) {
    for (const valueBytes of [1024, 256]) {
      // Every datagram size for 1 KiB parts; the largest only for 256 B (BENCH_FULL_MATRIX=1: all).
      const sizes = FULL_MATRIX || valueBytes === 1024 ? DATAGRAM_SIZES : DATAGRAM_SIZES.slice(-1);
      for (const datagramBytes of sizes) {
        for (const lossPercent of [0, 5]) {
          list.push({
            name: `${transport} ${valueBytes === 1024 ? '1 KiB' : `${valueBytes} B`} dg ${datagramBytes} loss ${lossPercent}%`,
            transport,
            valueBytes,
            lossPercent,
            datagramBytes,
            writer: 'in-process',
            partsPerPut: 1,
            largeEvery: 0,
            largeBytes: 0,
            phases: ['flat-out', 'windowed', 'paced'],
          });
        }
      }
    }
  }
  if (EXCHANGE) {
    const datagramBytes = DATAGRAM_SIZES[DATAGRAM_SIZES.length - 1]!;
    list.push({
      name: `multicast 1 KiB dg ${datagramBytes} loss 0% via Exchange`,
      transport: 'multicast',
      valueBytes: 1024,
      lossPercent: 0,
      datagramBytes,
      writer: 'exchange',
      partsPerPut: 1,
      largeEvery: 0,
      largeBytes: 0,
      phases: ['flat-out', 'paced'],
    });
  }
  if (HEAVY_LOSS > 0) {
    for (const transport of (['multicast', 'unicast'] as const).filter((t) => HEAVY_TRANSPORTS.includes(t))) {
      list.push({
        name: `${transport} 1 KiB+16 KiB dg 1400 loss ${HEAVY_LOSS}% rtx ${HEAVY_RETRANSMIT_MB} MiB`,
        transport,
        valueBytes: 1024,
        lossPercent: HEAVY_LOSS,
        datagramBytes: 1400,
        writer: 'in-process',
        partsPerPut: 1,
        retransmitMb: HEAVY_RETRANSMIT_MB,
        largeEvery: HEAVY_LARGE_EVERY,
        largeBytes: HEAVY_LARGE_BYTES,
        puts: HEAVY_SESSIONS,
        phases: ['flat-out', 'paced'],
      });
    }
  }
  return ONLY.length === 0 ? list : list.filter((c) => ONLY.some((o) => c.name.includes(o)));
}

// --- the workload ----------------------------------------------------------------------

class Workload {
  readonly ids: string[] = [];
  private readonly base: Buffer;
  private counter = 0;

  constructor(
    private readonly config: ClusterConfig,
    private readonly writer: Writer,
  ) {
    for (let i = 0; i < ID_POOL; i++) this.ids.push(randomBytes(16).toString('hex'));
    this.base = randomBytes(Math.max(config.valueBytes, config.largeBytes));
  }

  /** Put number k (of this cluster's life): id k mod pool, parts with values no other put has. */
  put(k: number): void | Promise<unknown> {
    const parts: PartValue[] = [];
    for (let i = 0; i < this.config.partsPerPut; i++) {
      const n = ++this.counter;
      const size = this.config.largeEvery > 0 && n % this.config.largeEvery === 0 ? this.config.largeBytes : this.config.valueBytes;
      const value = Buffer.allocUnsafe(size);
      this.base.copy(value, 0, 0, size);
      value.writeUInt32BE(n, 0);
      parts.push({ name: i === 0 ? 'data' : `data${i + 1}`, value });
    }
    const lane = k % ID_POOL;
    return this.writer.put(this.ids[lane]!, parts, lane);
  }
}

interface LoadResult {
  puts: number;
  errors: number;
  firstError: string | undefined;
  seconds: number;
}

/**
 * Issues `count` puts: flat out (WRITE_BATCH per turn), optionally held back by a window of
 * unacknowledged datagrams, or paced at `rate` puts/s. Bounded by count and WRITE_TIMEOUT_MS.
 */
async function runLoad(
  work: Workload,
  writer: Writer,
  firstK: number,
  count: number,
  options: { rate?: number; windowPackets?: number },
): Promise<LoadResult> {
  let issued = 0;
  let errors = 0;
  let firstError: string | undefined;
  let inFlight = 0;
  let wake: (() => void) | undefined;
  const started = process.hrtime.bigint();
  const deadline = Date.now() + WRITE_TIMEOUT_MS;
  const issue = () => {
    const result = work.put(firstK + issued++);
    if (result === undefined) return;
    inFlight++;
    result.then(
      () => undefined,
      (err: unknown) => {
        errors++;
        firstError ??= err instanceof Error ? err.message : String(err);
      },
    ).finally(() => {
      inFlight--;
      if (wake !== undefined && inFlight < EXCHANGE_IN_FLIGHT) {
        const w = wake;
        wake = undefined;
        w();
      }
    });
  };
  while (issued < count && !interruption.requested && Date.now() < deadline && errors < 1000) {
    if (inFlight >= EXCHANGE_IN_FLIGHT) {
      await new Promise<void>((resolve) => (wake = resolve));
      continue;
    }
    if (options.rate !== undefined) {
      const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
      const due = Math.min(count, Math.floor(options.rate * elapsed) + 1);
      let n = 0;
      // Behind schedule (a writer slower than the rate) it catches up WRITE_BATCH per turn,
      // as the flat-out phase writes, rather than in one burst.
      while (issued < due && n < WRITE_BATCH && inFlight < EXCHANGE_IN_FLIGHT) {
        issue();
        n++;
      }
      if (issued < due) await new Promise<void>((resolve) => setImmediate(resolve));
      else await sleep(1);
      continue;
    }
    if (options.windowPackets !== undefined && writer.maxUnacked() > options.windowPackets) {
      await sleep(1);
      continue;
    }
    const stop = Math.min(count, issued + WRITE_BATCH);
    while (issued < stop && inFlight < EXCHANGE_IN_FLIGHT) issue();
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  // Wait for the writer to have applied the puts still in flight (Exchange), bounded.
  const drainUntil = Date.now() + 30_000;
  while (inFlight > 0 && Date.now() < drainUntil) await sleep(5);
  return { puts: issued, errors, firstError, seconds: Number(process.hrtime.bigint() - started) / 1e9 };
}

// --- one cluster -------------------------------------------------------------------------

interface Cluster {
  config: ClusterConfig;
  replicas: Replica[];
  writer: Writer;
  digests: DigestReader;
  work: Workload;
}

async function startCluster(config: ClusterConfig, stoppers: (() => Promise<unknown>)[]): Promise<Cluster> {
  const key = randomBytes(32).toString('base64');
  process.env.BATON_CLUSTER_KEY = key;
  const ports = await freePeerPorts(5);
  const peers = ports.slice(0, 4).map((p) => `127.0.0.1:${p}`).join(',');
  const common: Record<string, string> = {
    peers,
    replicas: '3',
    partitions: String(PARTITIONS),
    'max-datagram-bytes': String(config.datagramBytes),
    'inject-loss-percent': String(config.lossPercent),
  };
  if (config.transport === 'multicast') {
    common.multicast = `239.255.${(ports[4]! >> 8) & 0xff}.${ports[4]! & 0xff}:${ports[4]}`;
    common['multicast-interface'] = '127.0.0.1';
  }
  if (config.retransmitMb !== undefined) common['retransmit-buffer-mb'] = String(config.retransmitMb);
  const flags = [...Object.entries(common).flatMap(([k, v]) => [`--${k}`, v]), ...SIDECAR_FLAGS];
  const replicas: Replica[] = [];
  let writer: Writer;
  try {
    for (let i = 0; i < 3; i++) {
      const replica = await startReplica(`r${i + 1}`, [...flags, '--peer-listen', `127.0.0.1:${ports[i + 1]}`], SIDECAR_NODE_ARGS);
      replicas.push(replica);
      stoppers.push(async () => {
        replica.client.close();
        return replica.child.stop();
      });
    }
    if (config.writer === 'sidecar') {
      const sidecar = await SidecarWriter.start([...flags, '--peer-listen', `127.0.0.1:${ports[0]}`], SIDECAR_NODE_ARGS, EXCHANGE_CLIENTS, key, config.minReplicas);
      stoppers.push(() => sidecar.stop());
      writer = sidecar;
    } else {
      const values = { ...common, 'node-id': 'writer', 'api-listen': '127.0.0.1:0', 'metrics-listen': '127.0.0.1:0', 'http-listen': 'off', 'peer-listen': `127.0.0.1:${ports[0]}` };
      const wconfig = writerConfig(values, key);
      const inProcess = config.writer === 'exchange' ? await ExchangeWriter.start(wconfig, EXCHANGE_CLIENTS) : await InProcessWriter.start(wconfig);
      stoppers.push(() => inProcess.stop());
      writer = inProcess;
    }
  } finally {
    delete process.env.BATON_CLUSTER_KEY;
  }
  const digests = new DigestReader(key);
  stoppers.push(async () => digests.close());
  const cluster = { config, replicas, writer, digests, work: new Workload(config, writer) };
  await waitForMembers(cluster);
  return cluster;
}

async function waitForMembers(cluster: Cluster): Promise<void> {
  const until = Date.now() + 20_000;
  for (;;) {
    let ok = (await cluster.writer.liveMembers()) === 4;
    for (const r of cluster.replicas) {
      if (!ok) break;
      ok = (await scrape(r.metricsUrl)).value('baton_cluster_members', { state: 'alive' }) === 4;
    }
    if (ok) break;
    if (Date.now() > until) throw new Error('the four nodes did not see each other within 20 s');
    await sleep(50);
  }
  // Let the state transfers placement starts at join finish (the stores are empty).
  await sleep(500);
}

/**
 * Waits until every replica's partition digests equal the writer's and a sample of ids
 * reads back the writer's value. Returns undefined when converged, else what differed.
 */
async function waitConverged(cluster: Cluster, sampleFrom: number, sampleCount: number, timeoutMs: number): Promise<string | undefined> {
  const until = Date.now() + timeoutMs;
  let problem = 'not checked';
  while (!interruption.requested) {
    problem = await convergenceProblem(cluster, sampleFrom, sampleCount).catch(
      (err: unknown) => `reading digests or values failed: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`,
    );
    if (problem === '') return undefined;
    if (Date.now() > until) break;
    await sleep(CONVERGE_POLL_MS);
  }
  return problem;
}

async function convergenceProblem(cluster: Cluster, sampleFrom: number, sampleCount: number): Promise<string> {
  const mine = await cluster.writer.partitionDigests(PARTITIONS);
  const theirs = await Promise.all(cluster.replicas.map((r) => cluster.digests.digests(r.peerAddress)));
  for (const [i, map] of theirs.entries()) {
    let differing = 0;
    for (let p = 0; p < PARTITIONS; p++) if (map.get(p) !== mine[p]) differing++;
    if (differing > 0) return `${cluster.replicas[i]!.nodeId}: ${differing} partitions differ`;
  }
  // Digests cover versions, not bytes: read a sample of values back.
  // Half the sample: the ids written last (the likeliest to lag); half spread over the pool.
  const n = Math.min(SAMPLE_IDS, ID_POOL);
  const ids = new Set<string>();
  for (let j = 0; j < Math.min(n / 2, sampleCount); j++) ids.add(cluster.work.ids[(sampleFrom + sampleCount - 1 - j) % ID_POOL]!);
  for (let j = 0; ids.size < n && j < n; j++) ids.add(cluster.work.ids[Math.floor((j * ID_POOL) / n)]!);
  const list = [...ids];
  const expected = await cluster.writer.values(list, 'data');
  for (const replica of cluster.replicas) {
    const sessions = await Promise.all(list.map((id) => replica.client.get(id, { parts: ['data'] })));
    for (const [j, session] of sessions.entries()) {
      const got = session?.parts.find((p) => p.name === 'data')?.value;
      const want = expected[j];
      const same = got === undefined || want === undefined ? got === want : Buffer.from(got).equals(want);
      if (!same) return `${replica.nodeId}: session ${j} of the sample has ${got === undefined ? 'no value' : 'another value'}`;
    }
  }
  return '';
}

/**
 * With BENCH_PROFILE_DIR, a CPU profile of this process (the in-process writer, or the
 * Exchange clients) over one timed phase, written there as <phase>-<time>.cpuprofile:
 * --cpu-prof would mix in the start and the warm-up.
 */
async function startProfile(): Promise<{ stop(name: string): Promise<void> } | undefined> {
  const dir = process.env.BENCH_PROFILE_DIR;
  if (dir === undefined || dir === '') return undefined;
  const session = new InspectorSession();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.start');
  return {
    async stop(name) {
      const { profile } = await session.post('Profiler.stop');
      session.disconnect();
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, `${name.replace(/[^A-Za-z0-9]+/g, '-')}-${Date.now()}.cpuprofile`), JSON.stringify(profile));
    },
  };
}

function kernelRcvbufErrors(): number {
  try {
    const lines = readFileSync('/proc/net/snmp', 'latin1').split('\n').filter((l) => l.startsWith('Udp:'));
    const names = lines[0]!.split(/\s+/);
    const values = lines[1]!.split(/\s+/);
    return Number(values[names.indexOf('RcvbufErrors')]);
  } catch {
    return NaN;
  }
}

async function runPhase(cluster: Cluster, kind: PhaseKind, firstK: number): Promise<PhaseResult> {
  const { config, replicas, writer, work } = cluster;
  // The paced rate is in deltas/s: puts of several parts go at PACED_RATE ÷ parts puts/s.
  const pacedPutRate = PACED_RATE / config.partsPerPut;
  const count = kind === 'paced' ? Math.round(pacedPutRate * PACED_SECONDS) : (config.puts ?? SESSIONS);
  const windowPackets = kind === 'windowed' ? Math.max(4, Math.floor(WINDOW_BYTES / config.datagramBytes)) : undefined;

  const before = await Promise.all(replicas.map((r) => scrape(r.metricsUrl)));
  const writerBefore = await writer.counters();
  const cpuBefore = {
    own: ownCpuSeconds(),
    writer: writer.cpuSeconds(),
    writerSystem: writer.cpuSeconds('system'),
    replicas: replicas.map((r) => cpuSecondsOf(r.child.process.pid)),
    replicasSystem: replicas.map((r) => cpuSecondsOf(r.child.process.pid, 'system')),
    threads: [writer.pid, ...replicas.map((r) => r.child.process.pid)].map(threadCpuSecondsOf),
  };
  const gcBefore = { writer: writer.gc(), replicas: replicas.map((r) => r.gc.snapshot()), own: ownGc().snapshot() };
  const rcvbufBefore = kernelRcvbufErrors();

  // Peaks: the writer's retransmit buffer often, the replicas' reassembly gauge sparingly.
  // Not a sidecar writer's: scraping its metrics holds its event loop for 3-13 ms, which
  // its lag figures would count (every 500 ms, ~2% of the phase: the p99); its peak is n/a.
  const sampleWriter = writer.kind !== 'sidecar';
  let retransmitPeak = sampleWriter ? 0 : NaN;
  const reassemblyPeak = replicas.map(() => 0);
  let sampling = true;
  let stopSampling!: () => void;
  const samplingStopped = new Promise<void>((resolve) => (stopSampling = resolve));
  const sampler = (async () => {
    let i = 0;
    while (sampling) {
      if (sampleWriter) retransmitPeak = Math.max(retransmitPeak, await writer.retransmitBufferBytes().catch(() => 0));
      // Scraping a replica costs it a few ms of CPU (and delays its datagrams): only where
      // fragments exist, i.e. where reassembly memory can be non-zero.
      if (config.largeEvery > 0 && i++ % 50 === 0) {
        const scrapes = await Promise.all(replicas.map((r) => scrape(r.metricsUrl).catch(() => undefined)));
        scrapes.forEach((s, j) => {
          if (s !== undefined) reassemblyPeak[j] = Math.max(reassemblyPeak[j]!, s.value('baton_replication_reassembly_bytes'));
        });
      }
      await Promise.race([sleep(writer.kind === 'in-process' ? 5 : 50), samplingStopped]);
    }
  })();

  const t0 = process.hrtime.bigint();
  let load: LoadResult;
  let tWritten: bigint;
  let tDone: bigint;
  let problem: string | undefined;
  const profile = await startProfile();
  try {
    load = await runLoad(work, writer, firstK, count, kind === 'paced' ? { rate: pacedPutRate } : { windowPackets });
    tWritten = process.hrtime.bigint();
    problem = await waitConverged(cluster, firstK, load.puts, CONVERGE_TIMEOUT_MS);
    // The clock stops here, not after the sampler's turn below: a sidecar writer's sampler
    // sleeps 500 ms between scrapes, and until 2026-12-08 every phase with one counted up to
    // that much after convergence (its rates came out in steps of ~0.5 s of phase time).
    tDone = process.hrtime.bigint();
  } finally {
    await profile?.stop(`${config.name} ${kind}`);
    // The sampler must end whatever happens, or it keeps the process alive.
    sampling = false;
    stopSampling();
    await sampler.catch(() => undefined);
  }

  const cpuWall = Number(tDone - t0) / 1e9;
  const after = await Promise.all(replicas.map((r) => scrape(r.metricsUrl)));
  const writerAfter = await writer.counters();
  const totalSeconds = Number(tDone - t0) / 1e9;
  const replicaResults = replicas.map((r, i): ReplicaResult => {
    const b = before[i]!;
    const a = after[i]!;
    const d = (name: string, labels?: Labels) => a.value(name, labels) - b.value(name, labels);
    const applied = d('baton_replication_deltas_applied_total');
    return {
      nodeId: r.nodeId,
      applied,
      deliveredPerSecond: applied / totalSeconds,
      nacksSent: d('baton_replication_nacks_sent_total'),
      injectedLoss: d('baton_replication_dropped_total', { reason: 'injected_loss' }),
      resyncs: a.sum('baton_replication_resyncs_total') - b.sum('baton_replication_resyncs_total'),
      lagP50: histogramQuantile(b, a, 'baton_replication_lag_seconds', 0.5),
      lagP99: histogramQuantile(b, a, 'baton_replication_lag_seconds', 0.99),
      receivedBytes: d('baton_replication_received_bytes_total'),
      dataDatagrams: d('baton_replication_datagrams_received_total', { type: 'data' }),
      reassemblyPeak: Math.max(reassemblyPeak[i]!, a.value('baton_replication_reassembly_bytes')),
      tooOld: d('baton_replication_dropped_total', { reason: 'too_old' }),
      suspectOrDead: d('baton_cluster_membership_events_total', { type: 'suspect' }) + d('baton_cluster_membership_events_total', { type: 'dead' }),
      cpu: (cpuSecondsOf(r.child.process.pid) - cpuBefore.replicas[i]!) / cpuWall,
      cpuUsPerDelta: ((cpuSecondsOf(r.child.process.pid) - cpuBefore.replicas[i]!) * 1e6) / applied,
      systemUsPerDelta: ((cpuSecondsOf(r.child.process.pid, 'system') - cpuBefore.replicasSystem[i]!) * 1e6) / applied,
      gc: gcRate(gcBefore.replicas[i]!, r.gc.snapshot(), cpuWall),
    };
  });
  if (process.env.BENCH_DEBUG === '1') {
    const threads = [writer.pid, ...replicas.map((r) => r.child.process.pid)].map((pid, i) => {
      const now = threadCpuSecondsOf(pid);
      const then = cpuBefore.threads[i]!;
      return `${i === 0 ? 'writer' : replicas[i - 1]!.nodeId} ${(((now.main - then.main) / cpuWall) * 100).toFixed(0)}+${(((now.others - then.others) / cpuWall) * 100).toFixed(0)}% (${formatCount((now.wakeups - then.wakeups) / cpuWall)} wakeups/s, waited ${(((now.waited - then.waited) / cpuWall) * 1000).toFixed(0)} ms/s for a CPU, ${formatCount((now.faults - then.faults) / cpuWall)} page faults/s)`;
    });
    const w = subtractCounters(writerAfter, writerBefore);
    console.log(`    [debug] writer: send window holds ${w.windowHolds}, overrides ${w.windowOverrides}, retransmissions ${w.retransmissions}`);
    const ownGcRate = gcRate(gcBefore.own, ownGc().snapshot(), cpuWall);
    const benchCpu = `this process ${(((ownCpuSeconds() - cpuBefore.own) / cpuWall) * 100).toFixed(0)}% (GC ${(ownGcRate.scavengeMsPerSecond + ownGcRate.majorMsPerSecond).toFixed(1)} ms/s)`;
    console.log(`    [debug] CPU main thread + other threads, % of a core over ${cpuWall.toFixed(2)} s: ${threads.join(', ')}, ${benchCpu}; load from ${t0 / 1000n} to ${tWritten / 1000n} µs (CLOCK_MONOTONIC, as in --cpu-prof profiles)`);
    for (const [i, r] of replicas.entries()) {
      const diff: string[] = [];
      for (const sample of after[i]!.samples) {
        const key = seriesName(sample);
        if (!/^baton_(replication_(datagrams|dropped|resyncs|nacks|duplicates|fragments|lag_seconds_bucket)|sessions_transferred|anti_entropy_repairs|rereplicated_bytes)/.test(key)) continue;
        const delta = sample.value - before[i]!.value(sample.name, sample.labels);
        if (delta !== 0) diff.push(`${key.replace('baton_replication_', '')}=${delta}`);
      }
      console.log(`    [debug] ${r.nodeId}: ${diff.join(' ')}`);
    }
    if (writer instanceof InProcessWriter) {
      const e = writer.transport.core.engine;
      const events = Scrape.parse(await writer.metrics.registry.metrics()).select('baton_cluster_membership_events_total');
      console.log(`    [debug] writer membership events (cumulative): ${events.map((e) => `${seriesName(e).slice(37)}=${e.value}`).join(' ')}`);
      console.log(`    [debug] writer: sent ${JSON.stringify(e.stats.datagramsSent)} received ${JSON.stringify(e.stats.datagramsReceived)} channels ${JSON.stringify(e.channelCounters())} counters ${JSON.stringify({ ...writer.transport.core.counters, dropped: Object.fromEntries(writer.transport.core.counters.dropped) })}`);
    }
  }
  return {
    config,
    kind,
    puts: load.puts,
    putErrors: load.errors,
    writeSeconds: Number(tWritten - t0) / 1e9,
    offeredPerSecond: load.puts / (Number(tWritten - t0) / 1e9),
    convergeMs: problem === undefined ? Number(tDone - tWritten) / 1e6 : undefined,
    convergeProblem: problem ?? (load.errors > 0 ? `${load.errors} puts failed: ${load.firstError}` : undefined),
    totalSeconds,
    replicas: replicaResults,
    writer: subtractCounters(writerAfter, writerBefore),
    retransmitPeak,
    writerCpu: (writer.cpuSeconds() - cpuBefore.writer) / cpuWall,
    deltasWritten: load.puts * config.partsPerPut,
    writerCpuUsPerDelta: ((writer.cpuSeconds() - cpuBefore.writer) * 1e6) / (load.puts * config.partsPerPut),
    writerSystemUsPerDelta: ((writer.cpuSeconds('system') - cpuBefore.writerSystem) * 1e6) / (load.puts * config.partsPerPut),
    writerGc: gcRate(gcBefore.writer, writer.gc(), cpuWall),
    benchCpu: (ownCpuSeconds() - cpuBefore.own) / cpuWall,
    kernelRcvbufErrors: kernelRcvbufErrors() - rcvbufBefore,
  };
}

function subtractCounters(a: WriterCounters, b: WriterCounters): WriterCounters {
  const out = { ...a };
  for (const k of Object.keys(a) as (keyof WriterCounters)[]) out[k] = a[k] - b[k];
  return out;
}

async function runCluster(config: ClusterConfig): Promise<{ phases: PhaseResult[]; warmupProblem: string | undefined; peakRssMiB: number[] }> {
  let stoppers: (() => Promise<unknown>)[] = [];
  const stopAll = async () => {
    for (const stop of stoppers.reverse()) {
      try {
        await stop();
      } catch {
        // keep stopping the rest
      }
    }
    stoppers = [];
  };
  /**
   * A fresh cluster, warmed up and converged: every id written once (windowed), then
   * overwritten once flat out. Without the second pass the first measured phase paid for
   * the JIT: code optimised while ids were created was deoptimised by the first overwrites
   * and compiled again inside the phase (the writer's first flat-out phase 30-50% dearer per
   * delta than the next, in the same cluster; docs/benchmarks.md).
   */
  const fresh = async () => {
    const cluster = await startCluster(config, stoppers);
    const created = await runLoad(cluster.work, cluster.writer, 0, ID_POOL, { windowPackets: Math.max(4, Math.floor((WINDOW_BYTES || 1 << 20) / config.datagramBytes)) });
    const overwritten = await runLoad(cluster.work, cluster.writer, ID_POOL, ID_POOL, {});
    return { cluster, problem: await waitConverged(cluster, 0, created.puts + overwritten.puts, CONVERGE_TIMEOUT_MS) };
  };
  try {
    let { cluster, problem: warmupProblem } = await fresh();
    let k = WARMUP_PUTS;
    const phases: PhaseResult[] = [];
    const peakRssMiB = [0, 0, 0];
    const notePeakRss = () => cluster.replicas.forEach((r, i) => (peakRssMiB[i] = Math.max(peakRssMiB[i]!, peakRss(r.child.process.pid))));
    const kinds = config.phases.filter((kind) => PHASES.includes(kind));
    for (const [i, kind] of kinds.entries()) {
      if (interruption.requested) break;
      const result = await runPhase(cluster, kind, k);
      k += result.puts;
      phases.push(result);
      printPhaseLine(result);
      if (result.convergeMs === undefined && i < kinds.length - 1 && !interruption.requested) {
        // The next phase must not inherit this one's divergence: start over.
        console.log('    (not converged: the next phase runs on a fresh cluster)');
        notePeakRss();
        await stopAll();
        ({ cluster, problem: warmupProblem } = await fresh());
        k = WARMUP_PUTS;
      }
    }
    notePeakRss();
    return { phases, warmupProblem, peakRssMiB };
  } finally {
    await stopAll();
  }
}

function peakRss(pid: number | undefined): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'latin1'));
    return m === null ? NaN : Number(m[1]) / 1024;
  } catch {
    return NaN;
  }
}

// --- output ----------------------------------------------------------------------------

function kib(bytes: number): string {
  return Number.isFinite(bytes) ? `${formatCount(bytes / 1024)} KiB` : 'n/a';
}

function minOf(values: number[]): number {
  return Math.min(...values);
}

function maxOf(values: number[]): number {
  return Math.max(...values);
}

function printPhaseLine(r: PhaseResult): void {
  const delivered = r.replicas.map((x) => formatCount(x.deliveredPerSecond)).join('/');
  console.log(
    `  ${r.kind.padEnd(8)} ${formatCount(r.puts).padStart(7)} puts  offered ${formatCount(r.offeredPerSecond).padStart(7)}/s  ` +
      `delivered ${delivered}/s  converge ${r.convergeMs === undefined ? 'NO' : `${formatCount(r.convergeMs)} ms`}  ` +
      `lag p50/p99 ${ms(maxOf(r.replicas.map((x) => x.lagP50)))}/${ms(maxOf(r.replicas.map((x) => x.lagP99)))} ms  ` +
      `NACKs ${formatCount(sum(r.replicas.map((x) => x.nacksSent)))}  rtx ${formatCount(r.writer.retransmissions)}  ` +
      `resyncs ${sum(r.replicas.map((x) => x.resyncs))}  kernel drops ${formatCount(r.kernelRcvbufErrors)}  ` +
      `too_old ${formatCount(sum(r.replicas.map((x) => x.tooOld)))}  susp/dead ${sum(r.replicas.map((x) => x.suspectOrDead)) + r.writer.suspectOrDead}  ` +
      `CPU writer ${pct(r.writerCpu)} replicas ${r.replicas.map((x) => pct(x.cpu)).join('/')}  ` +
      `µs/delta ${cpuPerDelta(r)} (kernel ${systemPerDelta(r)})  scavenge ms/s ${scavenges(r)}  full GC ms/s ${fullCollections(r)}` +
      (r.convergeProblem !== undefined ? `  (${r.convergeProblem})` : ''),
  );
}

function sum(values: number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

function rawFor(raw: RawResult[], transport: Transport, size: number): number {
  const r = raw.find((x) => x.transport === transport && x.size === size && x.sender === 'dgram');
  return r === undefined ? NaN : minOf(r.perReceiver);
}

function printReport(results: PhaseResult[], raw: RawResult[], warmups: Map<string, string | undefined>, rss: Map<string, number[]>): void {
  console.log('\n=== raw ceiling: one sender (this process) → 3 receiver processes (node:dgram), flat out ===');
  console.log(
    formatTable(
      ['transport', 'datagram B', 'sender', 'sent/s (all dests)', 'received/s per receiver', 'min MB/s per receiver', 'kernel µs/datagram sender / receivers'],
      raw.map((r) => [
        r.transport,
        String(r.size),
        r.sender,
        formatCount(r.sentPerSecond),
        r.perReceiver.map(formatCount).join(' / '),
        formatFixed((minOf(r.perReceiver) * r.size) / 1e6, 1),
        `${formatFixed(r.senderKernelUs, 2)} / ${r.receiverKernelUs.map((x) => formatFixed(x, 2)).join(' ')}`,
      ]),
    ),
  );
  console.log('sender: node:dgram send per datagram, sendmmsg batches (64 per destination per turn), or segmented sends (UDP_SEGMENT) in sendmmsg.');

  const table = (kind: PhaseKind) => {
    const rows = results.filter((r) => r.kind === kind);
    if (rows.length === 0) return;
    console.log(`\n=== ${kind} ===`);
    console.log(
      formatTable(
        [
          'configuration',
          'puts',
          'offered/s',
          'delivered/s per replica (min)',
          'each',
          '÷ raw 1 KiB',
          'converge ms',
          'lag p50 ms',
          'lag p99 ms',
          'NACKs',
          'rtx',
          'resyncs',
          'inj. drops',
          'kernel drops',
          'too_old',
          'susp/dead',
          'rtx buf peak',
          'reasm peak',
          'CPU w/r',
          'CPU µs/delta w/r',
          'scavenge ms/s w/r',
        ],
        rows.map((r) => [
          r.config.name,
          formatCount(r.puts),
          formatCount(r.offeredPerSecond),
          formatCount(minOf(r.replicas.map((x) => x.deliveredPerSecond))),
          r.replicas.map((x) => formatCount(x.deliveredPerSecond / 1000) + 'k').join('/'),
          formatFixed(minOf(r.replicas.map((x) => x.deliveredPerSecond)) / rawFor(raw, r.config.transport, 1024), 2) + '×',
          r.convergeMs === undefined ? 'NO' : formatCount(r.convergeMs),
          ms(maxOf(r.replicas.map((x) => x.lagP50))),
          ms(maxOf(r.replicas.map((x) => x.lagP99))),
          formatCount(sum(r.replicas.map((x) => x.nacksSent))),
          formatCount(r.writer.retransmissions),
          String(sum(r.replicas.map((x) => x.resyncs))),
          formatCount(sum(r.replicas.map((x) => x.injectedLoss)) + r.writer.injectedLoss),
          formatCount(r.kernelRcvbufErrors),
          formatCount(sum(r.replicas.map((x) => x.tooOld))),
          String(sum(r.replicas.map((x) => x.suspectOrDead)) + r.writer.suspectOrDead),
          kib(r.retransmitPeak),
          kib(maxOf(r.replicas.map((x) => x.reassemblyPeak))),
          `${pct(r.writerCpu)}/${r.replicas.map((x) => pct(x.cpu)).join('+')}`,
          cpuPerDelta(r),
          scavenges(r),
        ]),
      ),
    );
  };
  table('flat-out');
  table('windowed');
  table('paced');
  console.log(
    '\nlag: the upper bound of the baton_replication_lag_seconds bucket holding the quantile (bounds 0.5, 1, 2, 5, 10, 20, 50, 100, 250 ms…),\n' +
      'worst replica; lag is owner clock (whole ms) to replica clock (whole ms). delivered/s = deltas applied ÷ (first put → converged).\n' +
      "NACKs: sent by the replicas; rtx: datagrams the writer sent again; inj. drops: datagrams dropped by --inject-loss-percent, all nodes;\n" +
      'kernel drops: UDP RcvbufErrors of the whole machine (/proc/net/snmp) during the phase; too_old: datagrams the replicas\' replay\n' +
      'windows refused as older than 4096 packets; susp/dead: members marked suspect or dead (all nodes).\n' +
      'CPU µs/delta: process CPU time ÷ deltas, the writer per delta written, each replica per delta applied (an in-process writer\n' +
      "counts this whole process), and in brackets its system time (the kernel's sends and receives); scavenge ms/s: young-generation GC pause per second of the phase (--trace-gc of the sidecars,\n" +
      'perf_hooks for this process), 20 ms/s = 2% of the time; full GC ms/s: the same for full collections (Mark-Compact; their\n' +
      'final pauses only, not the incremental marking steps before them).',
  );

  const problems = results.filter((r) => r.convergeMs === undefined || r.putErrors > 0);
  for (const [name, problem] of warmups) if (problem !== undefined) console.log(`warm-up of ${name} did not converge: ${problem}`);
  for (const [name, list] of rss) console.log(`peak RSS of the replicas, ${name}: ${list.map((x) => `${formatFixed(x, 0)} MiB`).join(' / ')}`);

  console.log('\n=== targets ===');
  const mc1k = (dg: number, loss: number, kind: PhaseKind) =>
    results.find((r) => r.kind === kind && r.config.writer === 'in-process' && r.config.transport === 'multicast' && r.config.valueBytes === 1024 && r.config.datagramBytes === dg && r.config.lossPercent === loss && r.config.largeEvery === 0);
  for (const dg of DATAGRAM_SIZES) {
    for (const kind of ['flat-out', 'windowed'] as const) {
      const r = mc1k(dg, 0, kind);
      if (r === undefined) continue;
      const v = minOf(r.replicas.map((x) => x.deliveredPerSecond));
      console.log(`≥ 67k deltas/s per replica (multicast, 1 KiB, no loss, ${dg} B datagrams, ${kind}): ${formatCount(v)}/s — ${v >= 67_000 ? 'met' : 'MISSED'}`);
    }
  }
  for (const dg of DATAGRAM_SIZES) {
    for (const [loss, bound] of [[0, 0.005], [5, 0.025]] as const) {
      const r = mc1k(dg, loss, 'paced');
      if (r === undefined) continue;
      const p50 = maxOf(r.replicas.map((x) => x.lagP50));
      const p99 = maxOf(r.replicas.map((x) => x.lagP99));
      console.log(
        `lag p50 ≤ 1 ms, p99 ≤ ${bound * 1000} ms at ${formatCount(PACED_RATE)} deltas/s, ${loss}% loss (multicast, 1 KiB, ${dg} B): ` +
          `${ms(p50)}/${ms(p99)} ms — ${p50 <= 0.001 && p99 <= bound ? 'met' : 'MISSED'}`,
      );
    }
  }
  for (const r of results.filter((x) => x.kind === 'paced' && x.config.lossPercent === 0 && x.config.largeEvery === 0)) {
    const worst = Math.max(r.writerGc.scavengeMsPerSecond, ...r.replicas.map((x) => x.gc.scavengeMsPerSecond));
    console.log(
      `scavenge pauses ≤ 2% of wall time on every process at ${formatCount(PACED_RATE)} deltas/s (${r.config.name}): ` +
        `${scavenges(r)} ms/s — ${worst <= 20 ? 'met' : 'MISSED'}${r.config.writer === 'sidecar' ? '' : ' (writer: this process)'}`,
    );
  }
  const converged = results.length - problems.length;
  console.log(`100% convergence: ${converged} of ${results.length} phases converged — ${problems.length === 0 ? 'met' : 'MISSED'}`);
  for (const p of problems) console.log(`  not converged: ${p.config.name} ${p.kind}: ${p.convergeProblem}`);
  for (const r of results.filter((x) => x.config.retransmitMb !== undefined)) {
    const channels = r.config.transport === 'multicast' ? 1 : 3;
    const rtxBound = r.config.retransmitMb! * 1024 * 1024 * channels;
    const reasm = maxOf(r.replicas.map((x) => x.reassemblyPeak));
    console.log(
      `bounds under ${r.config.lossPercent}% loss (${r.config.name}, ${r.kind}): retransmit buffer peak ${kib(r.retransmitPeak)} of ${kib(rtxBound)} ` +
        `(${channels} channel${channels > 1 ? 's' : ''} × ${r.config.retransmitMb} MiB); reassembly peak ${kib(reasm)} of ${kib(REASSEMBLY_BOUND_BYTES)} per sender — ` +
        (r.retransmitPeak <= rtxBound && reasm <= REASSEMBLY_BOUND_BYTES ? 'met' : 'MISSED'),
    );
  }
}

// --- main ------------------------------------------------------------------------------

async function main(): Promise<void> {
  const disarm = handleInterruptions(MAX_MINUTES);

  console.log('baton replication benchmark\n');
  console.log(describeMachine(machineInfo()));
  console.log(
    `\nworkload: ${formatCount(ID_POOL)} session ids, one part 'data' each; each cluster warmed up untimed (every id written, then overwritten flat out); flat-out and windowed phases ${formatCount(SESSIONS)} puts, ` +
      `paced ${formatCount(PACED_RATE)} puts/s × ${PACED_SECONDS} s; window ${WINDOW_BYTES / 1024} KiB of unacknowledged datagrams; ` +
      `writer batch ${WRITE_BATCH} puts per event-loop turn; AES-256-GCM on; --replicas 3; 4 nodes (writer in this process + 3 sidecars)`,
  );

  const configs = configurations();
  const raw: RawResult[] = [];
  console.log('\nraw ceiling');
  for (const transport of ['unicast', 'multicast'] as const) {
    for (const size of [1024, ...DATAGRAM_SIZES.filter((s) => s > 1500)]) {
      // Segmented sends only where two datagrams fit one.
      for (const sender of size * 2 <= MAX_SEGMENTED_BYTES ? (['dgram', 'sendmmsg', 'segmented'] as const) : (['dgram'] as const)) {
        if (interruption.requested || RAW_SECONDS === 0) break;
        const r = await rawCeiling(transport, size, RAW_SECONDS, sender);
        raw.push(r);
        console.log(
          `  ${transport.padEnd(9)} ${String(size).padStart(5)} B  ${sender.padEnd(9)}  sent ${formatCount(r.sentPerSecond)}/s  received per receiver ${r.perReceiver.map(formatCount).join(' / ')}/s  ` +
            `kernel µs/datagram ${formatFixed(r.senderKernelUs, 2)} / ${r.receiverKernelUs.map((x) => formatFixed(x, 2)).join(' ')}`,
        );
      }
    }
  }

  const results: PhaseResult[] = [];
  const warmups = new Map<string, string | undefined>();
  const rss = new Map<string, number[]>();
  for (const config of configs) {
    if (interruption.requested) break;
    console.log(`\n${config.name}${config.writer === 'exchange' ? ` (writer: BatonNode + ${EXCHANGE_CLIENTS} BatonClients over Exchange, ${EXCHANGE_IN_FLIGHT} in flight)` : ''}`);
    try {
      const { phases, warmupProblem, peakRssMiB } = await runCluster(config);
      results.push(...phases);
      warmups.set(config.name, warmupProblem);
      if (config.retransmitMb !== undefined) rss.set(config.name, peakRssMiB);
    } catch (err) {
      console.log(`  FAILED: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      warmups.set(config.name, `failed: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  printReport(results, raw, warmups, rss);

  const anchorConfigList = anchorConfigs(ANCHOR_DELTAS).filter((c) => ONLY.length === 0 || ONLY.some((o) => c.name.includes(o)));
  if (ANCHORS && anchorConfigList.length > 0 && !interruption.requested) {
    const anchors = await runAnchors({
      runs: ANCHOR_RUNS,
      deltas: ANCHOR_DELTAS,
      jgroupsWarmup: JGROUPS_WARMUP,
      jgroupsMaxSeconds: JGROUPS_MAX_SECONDS,
      pacedDeltasPerSecond: PACED_RATE,
      configs: anchorConfigList,
      runCluster: async (config) => {
        const { phases, warmupProblem } = await runCluster(config);
        if (warmupProblem !== undefined) console.log(`  warm-up did not converge: ${warmupProblem}`);
        return phases;
      },
    });
    printAnchors(anchors);
  }
  disarm();
}

runMain(main);
