/**
 * bench:replication's anchors: baton end to end against JGroups, in the same run.
 *
 * baton: a `baton sidecar` writer fed by BatonClients in the bench process over Exchange,
 * Puts of ANCHOR_PARTS_PER_PUT parts of 1 KiB (each part one delta), three replica sidecars,
 * --replicas 3, datagrams sealed with AES-256-GCM; a flat-out phase of `deltas` deltas (the
 * clock stops when every replica holds every part) and a paced phase at BENCH_PACED_RATE
 * deltas/s (lag, GC, CPU). Configurations: multicast at baton's default datagram size (1,400 B)
 * and at 60,000 B, unicast fan-out at 1,400 B, the paced phase again at 5% injected loss, and
 * the 1,400 B flat-out phase again with synchronous Puts (min_replicas 1: each answered once a
 * replica acknowledged it; no JGroups counterpart, reported beside the asynchronous row).
 * JGroups: 1 sender → 3 receivers, `deltas` messages of 1 KiB on its default UDP stack
 * (bench/jgroups-anchor.ts). Both on this machine's cores and loopback.
 *
 * The set repeats `runs` times, JGroups first in odd runs and last in even ones; a ratio is
 * computed within each run and the median over runs is reported. Without Java or the jar the
 * baton rows still run and the ratios say why they are missing.
 */
import { freePeerPorts, cpuPerDelta, lagMs, scavenges, type ClusterConfig, type PhaseResult } from './replication-cluster';
import type { GcRate } from './gc-pauses';
import { compileJGroupsAnchor, findJGroupsTools, runJGroupsRound, type CompiledAnchor, type JGroupsRound } from './jgroups-anchor';
import { interruption } from './children';
import { formatCount, formatFixed, formatTable, median } from './stats';

export const ANCHOR_PARTS_PER_PUT = 4;
const ANCHOR_VALUE_BYTES = 1024;
/** baton's default --max-datagram-bytes, and the largest a datagram may be. */
const DEFAULT_DATAGRAM = 1400;
const LARGE_DATAGRAM = 60_000;
const RECEIVERS = 3;
const SYNC_SUFFIX = 'min_replicas 1';
/** Targets of issue 18: baton deltas/s per replica ÷ JGroups msgs/s per receiver. */
const TARGETS: Record<string, number> = {
  [`anchor multicast dg ${DEFAULT_DATAGRAM}`]: 1.4,
  [`anchor multicast dg ${LARGE_DATAGRAM}`]: 2.0,
  [`anchor unicast dg ${DEFAULT_DATAGRAM}`]: 1.5,
};

/** The baton side: `deltas` per flat-out phase. */
export function anchorConfigs(deltas: number): ClusterConfig[] {
  const config = (transport: 'multicast' | 'unicast', datagramBytes: number, lossPercent: number, minReplicas = 0): ClusterConfig => ({
    name: `anchor ${transport} dg ${datagramBytes}${lossPercent > 0 ? ` loss ${lossPercent}%` : ''}${minReplicas > 0 ? ` ${SYNC_SUFFIX}` : ''}`,
    transport,
    valueBytes: ANCHOR_VALUE_BYTES,
    lossPercent,
    datagramBytes,
    writer: 'sidecar',
    partsPerPut: ANCHOR_PARTS_PER_PUT,
    largeEvery: 0,
    largeBytes: 0,
    puts: Math.max(1, Math.round(deltas / ANCHOR_PARTS_PER_PUT)),
    phases: lossPercent > 0 ? ['paced'] : minReplicas > 0 ? ['flat-out'] : ['flat-out', 'paced'],
    minReplicas,
  });
  return [
    config('multicast', DEFAULT_DATAGRAM, 0),
    config('multicast', LARGE_DATAGRAM, 0),
    config('unicast', DEFAULT_DATAGRAM, 0),
    config('multicast', DEFAULT_DATAGRAM, 5),
    config('multicast', DEFAULT_DATAGRAM, 0, 1),
  ];
}

export interface AnchorOptions {
  runs: number;
  /** Deltas per baton flat-out phase = JGroups messages per round. */
  deltas: number;
  /** JGroups warm-up messages (baton's warm-up writes every id, then overwrites each once flat out). */
  jgroupsWarmup: number;
  jgroupsMaxSeconds: number;
  /** The paced phase's rate (BENCH_PACED_RATE), for the report. */
  pacedDeltasPerSecond: number;
  configs: ClusterConfig[];
  /** Runs one configuration on a fresh cluster (printing its phase lines) and returns its phases. */
  runCluster(config: ClusterConfig): Promise<PhaseResult[]>;
}

interface AnchorRun {
  jgroups: JGroupsRound | undefined;
  /** Why this run has no JGroups figures. */
  jgroupsProblem: string | undefined;
  baton: PhaseResult[];
}

export interface AnchorResults {
  runs: AnchorRun[];
  javaVersion: string | undefined;
  jar: string | undefined;
  options: AnchorOptions;
}

export async function runAnchors(options: AnchorOptions): Promise<AnchorResults> {
  const tools = findJGroupsTools();
  let anchor: CompiledAnchor | undefined;
  let setupProblem: string | undefined;
  if (typeof tools === 'string') {
    setupProblem = tools;
  } else {
    try {
      anchor = await compileJGroupsAnchor(tools);
    } catch (err) {
      setupProblem = `JGroups anchor skipped: ${err instanceof Error ? err.message : String(err)}`;
    }
  }
  if (setupProblem !== undefined) console.log(`\n${setupProblem}`);
  const runs: AnchorRun[] = [];
  try {
    for (let run = 0; run < options.runs && !interruption.requested; run++) {
      console.log(`\n--- anchors, run ${run + 1}/${options.runs} ---`);
      const result: AnchorRun = { jgroups: undefined, jgroupsProblem: setupProblem, baton: [] };
      const jgroupsRound = async () => {
        if (anchor === undefined || interruption.requested) return;
        try {
          result.jgroups = await jgroups(anchor, options);
          printJGroupsLine(result.jgroups);
        } catch (err) {
          result.jgroupsProblem = `JGroups round failed: ${err instanceof Error ? err.message : String(err)}`;
          console.log(`  ${result.jgroupsProblem}`);
        }
      };
      if (run % 2 === 0) await jgroupsRound();
      for (const config of options.configs) {
        if (interruption.requested) break;
        console.log(`\n${config.name} (writer: a baton sidecar ← BatonClients over Exchange, puts of ${config.partsPerPut} parts)`);
        try {
          result.baton.push(...(await options.runCluster(config)));
        } catch (err) {
          console.log(`  FAILED: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
        }
      }
      if (run % 2 === 1) await jgroupsRound();
      runs.push(result);
    }
  } finally {
    anchor?.dispose();
  }
  return { runs, javaVersion: anchor?.javaVersion, jar: typeof tools === 'string' ? undefined : tools.jar, options };
}

async function jgroups(anchor: CompiledAnchor, options: AnchorOptions): Promise<JGroupsRound> {
  const [port] = await freePeerPorts(1);
  console.log(`\nJGroups 2.12: 1 sender → ${RECEIVERS} receivers, ${formatCount(options.deltas)} messages of ${ANCHOR_VALUE_BYTES} B (udp.xml)`);
  return runJGroupsRound(anchor, {
    receivers: RECEIVERS,
    messages: options.deltas,
    warmup: options.jgroupsWarmup,
    bytes: ANCHOR_VALUE_BYTES,
    maxSeconds: options.jgroupsMaxSeconds,
    group: `239.253.${(port! >> 8) & 0xff}.${port! & 0xff}`,
    port: port!,
  });
}

function printJGroupsLine(r: JGroupsRound): void {
  console.log(
    `  delivered ${r.perReceiver.map(formatCount).join('/')}/s per receiver  sent in ${formatFixed(r.sendSeconds, 2)} s  ` +
      `order errors ${r.orderErrors}  CPU µs/msg ${formatFixed(r.senderCpuUsPerMessage, 1)}/${r.receiverCpuUsPerMessage.map((x) => formatFixed(x, 1)).join('+')}  ` +
      `young GC ms/s ${formatFixed(r.senderGc.scavengeMsPerSecond, 1)}/${r.receiverGc.map((g) => formatFixed(g.scavengeMsPerSecond, 1)).join('+')}`,
  );
}

// --- report ----------------------------------------------------------------------------

function minOf(values: number[]): number {
  return values.length === 0 ? NaN : Math.min(...values);
}

function find(run: AnchorRun, name: string, kind: PhaseResult['kind']): PhaseResult | undefined {
  return run.baton.find((p) => p.config.name === name && p.kind === kind);
}

function batonRate(p: PhaseResult | undefined): number {
  if (p === undefined || p.convergeMs === undefined) return NaN;
  return minOf(p.replicas.map((x) => x.deliveredPerSecond));
}

function perRun(values: number[], digits: number, unit = ''): string {
  return values.map((v) => (Number.isFinite(v) ? formatFixed(v, digits) + unit : 'n/a')).join(' / ');
}

/** Median that keeps infinite values (a lag beyond the histogram's last bucket is +Infinity). */
function medianOf(values: number[]): number {
  const sorted = values.filter((v) => !Number.isNaN(v)).sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

function medianGc(rates: GcRate[][]): string {
  // Per process position (writer/sender first), the median over runs.
  const positions = Math.max(0, ...rates.map((r) => r.length));
  return Array.from({ length: positions }, (_, i) => formatFixed(median(rates.map((r) => r[i]?.scavengeMsPerSecond ?? NaN)), 1)).join('/');
}

export function printAnchors(results: AnchorResults): void {
  const { runs, options } = results;
  if (runs.length === 0) return;
  console.log('\n=== anchors: baton end to end vs JGroups 2.12, same run (issue 18) ===');
  console.log(
    `baton: a sidecar writer ← BatonClients in this process over Exchange, Puts of ${ANCHOR_PARTS_PER_PUT} × ${ANCHOR_VALUE_BYTES} B parts, ` +
      `${formatCount(options.deltas)} deltas per flat-out phase (first put → every replica holds every part) after an untimed warm-up ` +
      `(every id written, then overwritten flat out), 3 replica sidecars, AES-256-GCM.\n` +
      `JGroups: ${results.javaVersion ?? 'no Java'}, ${results.jar ?? 'no jar'}, udp.xml, 1 sender → ${RECEIVERS} receivers, ` +
      `${formatCount(options.deltas)} messages of ${ANCHOR_VALUE_BYTES} B after ${formatCount(options.jgroupsWarmup)} warm-up ` +
      `(sender's start → the receiver holds every message). ${runs.length} run(s); ratios within each run, medians over runs.`,
  );
  const problems = [...new Set(runs.map((r) => r.jgroupsProblem).filter((p): p is string => p !== undefined))];
  for (const p of problems) console.log(p);

  const jgroupsPerRun = runs.map((r) => (r.jgroups === undefined ? NaN : minOf(r.jgroups.perReceiver)));
  const rows: string[][] = [];
  for (const name of Object.keys(TARGETS)) {
    const phases = runs.map((r) => find(r, name, 'flat-out'));
    if (phases.every((p) => p === undefined)) continue;
    // A phase that did not converge has no rate: it counts as missing the target.
    const converged = phases.filter((p) => p?.convergeMs !== undefined).length;
    const baton = phases.map(batonRate);
    const ratios = baton.map((b, i) => b / jgroupsPerRun[i]!);
    const ratio = median(ratios);
    const target = TARGETS[name]!;
    const verdict = converged < phases.length ? `MISSED (${phases.length - converged} run(s) not converged)` : Number.isFinite(ratio) ? (ratio >= target ? 'met' : 'MISSED') : 'n/a';
    rows.push([
      name,
      converged === 0 ? 'not converged' : formatCount(median(baton)),
      formatCount(median(jgroupsPerRun)),
      Number.isFinite(ratio) ? `${formatFixed(ratio, 2)}×` : 'n/a',
      `≥ ${formatFixed(target, 1)}× — ${verdict}`,
      perRun(ratios, 2, '×'),
      phases.map((p) => (p === undefined ? 'n/a' : p.convergeMs === undefined ? 'NO' : `${formatFixed(batonRate(p) / 1000, 1)}k`)).join(' / '),
      perRun(jgroupsPerRun.map((j) => j / 1000), 1, 'k'),
    ]);
  }
  console.log(
    '\n' +
      formatTable(
        ['configuration (flat-out)', 'baton deltas/s per replica (min)', 'JGroups msgs/s per receiver (min)', 'ratio', 'target', 'ratio per run', 'baton per run', 'JGroups per run'],
        rows,
      ),
  );

  const costRows: string[][] = [];
  for (const name of Object.keys(TARGETS)) {
    const phases = runs.map((r) => find(r, name, 'flat-out')).filter((p): p is PhaseResult => p !== undefined);
    if (phases.length === 0) continue;
    costRows.push([
      `baton ${name.replace('anchor ', '')}`,
      `${formatFixed(median(phases.map((p) => p.writerCpuUsPerDelta)), 1)} / ${formatFixed(median(phases.flatMap((p) => p.replicas.map((x) => x.cpuUsPerDelta))), 1)}`,
      `${formatFixed(median(phases.map((p) => p.writerSystemUsPerDelta)), 1)} / ${formatFixed(median(phases.flatMap((p) => p.replicas.map((x) => x.systemUsPerDelta))), 1)}`,
      formatFixed(median(phases.map((p) => p.benchCpu)) * 100, 0) + '%',
      medianGc(phases.map((p) => [p.writerGc, ...p.replicas.map((x) => x.gc)])),
      phases.map(cpuPerDelta).join('  '),
    ]);
  }
  const rounds = runs.map((r) => r.jgroups).filter((j): j is JGroupsRound => j !== undefined);
  if (rounds.length > 0) {
    costRows.push([
      'JGroups',
      `${formatFixed(median(rounds.map((j) => j.senderCpuUsPerMessage)), 1)} / ${formatFixed(median(rounds.flatMap((j) => j.receiverCpuUsPerMessage)), 1)}`,
      `${formatFixed(median(rounds.map((j) => j.senderSystemUsPerMessage)), 1)} / ${formatFixed(median(rounds.flatMap((j) => j.receiverSystemUsPerMessage)), 1)}`,
      '—',
      medianGc(rounds.map((j) => [j.senderGc, ...j.receiverGc])),
      rounds.map((j) => `${formatFixed(j.senderCpuUsPerMessage, 1)}/${j.receiverCpuUsPerMessage.map((x) => formatFixed(x, 1)).join('+')}`).join('  '),
    ]);
  }
  if (costRows.length > 0) {
    console.log('\nCost per delta (baton) and per message (JGroups), flat-out phases, medians over runs:');
    console.log(
      formatTable(
        ['process set', 'CPU µs writer|sender / replica|receiver', 'of it kernel', 'Exchange clients CPU', 'young-GC pause ms/s writer|sender/each', 'CPU µs per run (w/r…)'],
        costRows,
      ),
    );
  }

  const syncRows: string[][] = [];
  for (const config of options.configs) {
    if (!config.name.endsWith(SYNC_SUFFIX)) continue;
    const asyncName = config.name.slice(0, -SYNC_SUFFIX.length - 1);
    const pairs = runs.map((r) => [find(r, asyncName, 'flat-out'), find(r, config.name, 'flat-out')] as const);
    const rate = (i: 0 | 1) => pairs.map((pair) => batonRate(pair[i]));
    const cpu = (i: 0 | 1) => {
      const phases = pairs.map((pair) => pair[i]).filter((p): p is PhaseResult => p !== undefined);
      return `${formatFixed(median(phases.map((p) => p.writerCpuUsPerDelta)), 1)} / ${formatFixed(median(phases.flatMap((p) => p.replicas.map((x) => x.cpuUsPerDelta))), 1)}`;
    };
    const ratios = pairs.map((_, i) => rate(1)[i]! / rate(0)[i]!);
    syncRows.push([asyncName.replace('anchor ', ''), formatCount(median(rate(0))), formatCount(median(rate(1))), `${formatFixed(median(ratios), 2)}×`, cpu(0), cpu(1), perRun(ratios, 2, '×')]);
  }
  if (syncRows.length > 0) {
    console.log(`\nSynchronous Puts (${SYNC_SUFFIX}: answered once a replica acknowledged every part) against asynchronous ones, flat out, medians over runs:`);
    console.log(
      formatTable(['configuration', 'async deltas/s per replica', 'sync deltas/s per replica', 'sync/async', 'CPU µs/delta async w / r', 'sync w / r', 'sync/async per run'], syncRows),
    );
  }

  const lagRows: string[][] = [];
  for (const config of options.configs) {
    const phases = runs.map((r) => find(r, config.name, 'paced')).filter((p): p is PhaseResult => p !== undefined);
    if (phases.length === 0) continue;
    const p50 = phases.map((p) => Math.max(...p.replicas.map((x) => x.lagP50)));
    const p99 = phases.map((p) => Math.max(...p.replicas.map((x) => x.lagP99)));
    const bound = config.lossPercent > 0 ? 0.025 : 0.005;
    const lag50 = medianOf(p50);
    const lag99 = medianOf(p99);
    const worstGc = phases.map((p) => Math.max(p.writerGc.scavengeMsPerSecond, ...p.replicas.map((x) => x.gc.scavengeMsPerSecond)));
    lagRows.push([
      config.name,
      lagMs(lag50),
      lagMs(lag99),
      `p50 ≤ 1, p99 ≤ ${bound * 1000} — ${lag50 <= 0.001 && lag99 <= bound ? 'met' : 'MISSED'}`,
      medianGc(phases.map((p) => [p.writerGc, ...p.replicas.map((x) => x.gc)])),
      `≤ 20 — ${median(worstGc) <= 20 ? 'met' : 'MISSED'}`,
      `${formatFixed(median(phases.map((p) => p.writerCpuUsPerDelta)), 1)} / ${formatFixed(median(phases.flatMap((p) => p.replicas.map((x) => x.cpuUsPerDelta))), 1)}`,
      phases.map((p) => `${lagMs(Math.max(...p.replicas.map((x) => x.lagP99)))} ${scavenges(p)}`).join('  '),
    ]);
  }
  if (lagRows.length > 0) {
    console.log(`\nLag and GC at a paced ${formatCount(options.pacedDeltasPerSecond)} deltas/s (end to end, medians over runs; lag: worst replica's bucket bound):`);
    console.log(
      formatTable(['configuration (paced)', 'lag p50 ms', 'lag p99 ms', 'target ms', 'scavenge ms/s w/r…', 'target ms/s (every process)', 'CPU µs/delta w / r', 'per run: p99, scavenge ms/s'], lagRows),
    );
  }
}
