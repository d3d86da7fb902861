/**
 * The churn phase of bench:store: resident memory against the memory budget while far more
 * than the budget is written, so that LRU eviction runs all the time.
 *
 * The workload (one seeded sequence, the same in process and through a sidecar):
 *   - Puts of 1 to 4 parts (`p0`…`p3`) whose values are all of one size class, 1 KiB, 16 KiB
 *     or 256 KiB; each class writes about a third of the bytes (a class is drawn with odds
 *     proportional to 1/size);
 *   - 70% of Puts create a new session, 30% rewrite one of the 4,096 most recently created
 *     (evicted ones come back); every 33rd operation deletes one of those whole (tombstones);
 *   - it stops once `totalBytes` of values were written.
 * Memory is sampled as the bytes go by (in process: process.memoryUsage() every MiB written;
 * a sidecar: VmRSS from /proc/<pid>/status every 100 ms, the store's accounted bytes from
 * /metrics every second), and reported as min / median / max and as ratios to the budget,
 * plus the largest RSS of each quarter of the bytes written: if RSS grew with the bytes
 * written rather than settling, the later quarters would show it.
 *
 * Every loop ends after `totalBytes`; a sidecar is stopped (SIGTERM, then SIGKILL) whatever
 * happens.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { getHeapSpaceStatistics } from 'node:v8';
import { BuzHash } from '../src/store/buzhash';
import { HybridClock } from '../src/store/hybrid-clock';
import { DEFAULT_STORE_CONFIG, SessionStore } from '../src/store/store';
import { sleep } from './children';
import { freePeerPorts, startReplica } from './replication-cluster';
import { formatFixed, formatTable, median } from './stats';
import { scrape } from './support/prometheus-scrape';

const MiB = 2 ** 20;
const SIZE_CLASSES = [1024, 16 * 1024, 256 * 1024] as const;
const PART_NAMES = ['p0', 'p1', 'p2', 'p3'] as const;
const RECENT_IDS = 4096;
const DELETE_EVERY = 33;
const NEW_SESSION_SHARE = 0.7;
/** Source values per size class; the store copies what it keeps, so sources are shared. */
const VALUES_PER_CLASS = 8;
/** Puts a sidecar run keeps in flight on its one Exchange stream. */
const SIDECAR_IN_FLIGHT = 8;
const SIDECAR_SAMPLE_MS = 100;
const SIDECAR_STORED_BYTES_EVERY_MS = 1000;
/** How long a sidecar is left idle after the writes, and when its RSS is reported meanwhile. */
const SIDECAR_IDLE_SECONDS = 15;
const IDLE_REPORTED_AT = [2, 5, 10, 15];

/** A part without a version condition: both SessionStore.put and BatonClient.put take it. */
export interface ChurnPart {
  name: string;
  value: Buffer;
}

export type ChurnOp = { kind: 'put'; id: string; parts: ChurnPart[]; bytes: number } | { kind: 'delete'; id: string };

/** The seeded operation sequence described in the header. */
export class ChurnWorkload {
  private state: number;
  private created = 0;
  private operations = 0;
  private readonly values: Buffer[][];
  writtenBytes = 0;

  constructor(
    readonly totalBytes: number,
    seed = 0x2545f491,
  ) {
    this.state = seed >>> 0 || 1;
    // Random contents: nothing downstream may get away with sharing or compressing them.
    this.values = SIZE_CLASSES.map((size) => Array.from({ length: VALUES_PER_CLASS }, () => randomBytes(size)));
  }

  get done(): boolean {
    return this.writtenBytes >= this.totalBytes;
  }

  next(): ChurnOp {
    this.operations++;
    if (this.operations % DELETE_EVERY === 0 && this.created > 0) return { kind: 'delete', id: this.recentId() };
    const id = this.created === 0 || this.random() < NEW_SESSION_SHARE ? churnSessionId(this.created++) : this.recentId();
    const sizeClass = this.pickSizeClass();
    const count = 1 + (this.randomInt() % PART_NAMES.length);
    const parts: ChurnPart[] = [];
    for (let i = 0; i < count; i++) {
      parts.push({ name: PART_NAMES[i]!, value: this.values[sizeClass]![this.randomInt() % VALUES_PER_CLASS]! });
    }
    const bytes = count * SIZE_CLASSES[sizeClass]!;
    this.writtenBytes += bytes;
    return { kind: 'put', id, parts, bytes };
  }

  private recentId(): string {
    const span = Math.min(this.created, RECENT_IDS);
    return churnSessionId(this.created - 1 - (this.randomInt() % span));
  }

  /** Odds proportional to 1/size, so each class writes about the same bytes. */
  private pickSizeClass(): number {
    const weights = SIZE_CLASSES.map((size) => 1 / size);
    let r = this.random() * weights.reduce((a, b) => a + b, 0);
    for (let i = 0; i < weights.length; i++) {
      r -= weights[i]!;
      if (r < 0) return i;
    }
    return weights.length - 1;
  }

  /** xorshift32 */
  private randomInt(): number {
    let x = this.state;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.state = x >>> 0;
    return this.state;
  }

  private random(): number {
    return this.randomInt() / 2 ** 32;
  }
}

/** A 32-hex-digit id, unique per n (the shape of a 128-bit cookie). */
function churnSessionId(n: number): string {
  return `c${(Math.imul(n, 0x9e3779b1) >>> 0).toString(16).padStart(8, '0')}${n.toString(16).padStart(23, '0')}`;
}

export interface ChurnSample {
  writtenBytes: number;
  rss: number;
  /** NaN where the run cannot see them (a sidecar's heap). */
  heapUsed: number;
  external: number;
  arrayBuffers: number;
  /** The store's accounted bytes (what the budget charges); NaN when not sampled at this point. */
  accounted: number;
}

export interface ChurnResult {
  where: 'in process' | 'sidecar';
  budgetBytes: number;
  totalBytes: number;
  operations: number;
  seconds: number;
  /** RSS before the first write (the process's fixed cost: Node, modules, an empty store). */
  startRss: number;
  samples: ChurnSample[];
  /** Largest accounted bytes seen; must not exceed the budget. */
  maxAccounted: number;
  evictions: number;
  /** After the writes: after three full GCs in process; after SIDECAR_IDLE_SECONDS idle for a sidecar. */
  endRss: number;
  endHeapUsed: number;
  /** The kernel's RSS high-water mark (VmHWM), covering moments between samples. */
  peakRss: number;
  /** V8 spaces at the end of an in-process run (MiB of used / committed), for explaining RSS. */
  heapSpaces?: { name: string; usedMiB: number; sizeMiB: number }[];
  /** A sidecar's RSS while it idles after the writes. */
  idleRss?: { seconds: number; rss: number }[];
}

function vmKiB(pid: number | 'self', field: 'VmRSS' | 'VmHWM'): number {
  const status = readFileSync(`/proc/${pid}/status`, 'latin1');
  const match = status.match(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm'));
  if (match === null) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(match[1]) * 1024;
}

/** Writes `totalBytes` into a SessionStore with a budget in this process (run it in a fresh child). */
export function runChurnInProcess(budgetBytes: number, totalBytes: number): ChurnResult {
  const gc = globalThis.gc;
  if (gc === undefined) throw new Error('run with node --expose-gc (npm run bench:store)');
  const workload = new ChurnWorkload(totalBytes);
  const store = new SessionStore(
    { ...DEFAULT_STORE_CONFIG, nodeId: 'bench-node', maxBytes: budgetBytes },
    new BuzHash('bench-seed'),
    new HybridClock(),
  );
  for (let i = 0; i < 3; i++) gc();
  const startRss = process.memoryUsage().rss;
  const samples: ChurnSample[] = [];
  let maxAccounted = 0;
  let nextSampleAt = 0;
  let operations = 0;
  let now = Date.now();
  const started = process.hrtime.bigint();
  while (!workload.done) {
    const op = workload.next();
    operations++;
    if ((operations & 255) === 0) now = Date.now();
    if (op.kind === 'put') store.put(op.id, op.parts, 0, now);
    else store.delete(op.id, [], now);
    const accounted = store.getStats().bytes;
    if (accounted > maxAccounted) maxAccounted = accounted;
    if (workload.writtenBytes >= nextSampleAt) {
      nextSampleAt = workload.writtenBytes + MiB;
      const m = process.memoryUsage();
      samples.push({ writtenBytes: workload.writtenBytes, rss: m.rss, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers, accounted });
    }
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  for (let i = 0; i < 3; i++) gc();
  const end = process.memoryUsage();
  const heapSpaces = getHeapSpaceStatistics().map((s) => ({
    name: s.space_name,
    usedMiB: s.space_used_size / MiB,
    sizeMiB: s.space_size / MiB,
  }));
  return {
    where: 'in process',
    budgetBytes,
    totalBytes: workload.writtenBytes,
    operations,
    seconds,
    startRss,
    samples,
    maxAccounted,
    evictions: store.getStats().evictions,
    endRss: end.rss,
    endHeapUsed: end.heapUsed,
    peakRss: vmKiB('self', 'VmHWM'),
    heapSpaces,
  };
}

/**
 * Writes `totalBytes` through a real `baton sidecar --max-memory-mb <budget>` on loopback,
 * with BatonClient over Exchange, sampling the child's VmRSS. Stops the child in any case.
 */
export async function runChurnThroughSidecar(budgetMiB: number, totalBytes: number, nodeArgs: readonly string[] = []): Promise<ChurnResult> {
  const [peerPort] = await freePeerPorts(1);
  const replica = await startReplica('churn', ['--peer-listen', `127.0.0.1:${peerPort}`, '--max-memory-mb', String(budgetMiB)], nodeArgs);
  const pid = replica.child.process.pid!;
  const samples: ChurnSample[] = [];
  const workload = new ChurnWorkload(totalBytes);
  let lastAccounted = NaN;
  let maxAccounted = 0;
  let sampler: NodeJS.Timeout | undefined;
  let scraper: NodeJS.Timeout | undefined;
  try {
    // Let start-up allocation settle before taking the fixed cost.
    await sleep(1000);
    const startRss = vmKiB(pid, 'VmRSS');
    sampler = setInterval(() => {
      samples.push({ writtenBytes: workload.writtenBytes, rss: vmKiB(pid, 'VmRSS'), heapUsed: NaN, external: NaN, arrayBuffers: NaN, accounted: lastAccounted });
      lastAccounted = NaN;
    }, SIDECAR_SAMPLE_MS);
    let scraping = false;
    scraper = setInterval(() => {
      if (scraping) return;
      scraping = true;
      scrape(replica.metricsUrl)
        .then((s) => {
          lastAccounted = s.value('baton_stored_bytes');
          maxAccounted = Math.max(maxAccounted, lastAccounted);
        })
        .catch(() => undefined)
        .finally(() => (scraping = false));
    }, SIDECAR_STORED_BYTES_EVERY_MS);

    let operations = 0;
    let failures = 0;
    const started = process.hrtime.bigint();
    const lane = async () => {
      while (!workload.done) {
        const op = workload.next();
        operations++;
        try {
          if (op.kind === 'put') await replica.client.put(op.id, op.parts);
          else await replica.client.delete(op.id);
        } catch (err) {
          // A bounded number of failures is reported; more means the run is not measuring churn.
          if (++failures > 100) throw err;
        }
      }
    };
    await Promise.race([Promise.all(Array.from({ length: SIDECAR_IN_FLIGHT }, lane)), replica.child.exited]);
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    clearInterval(sampler);
    clearInterval(scraper);
    if (failures > 0) console.log(`  sidecar ${budgetMiB} MiB: ${failures} operations failed`);
    // An idle sidecar: does V8's memory reducer give the garbage back?
    const idleRss: { seconds: number; rss: number }[] = [];
    for (let second = 1; second <= SIDECAR_IDLE_SECONDS; second++) {
      await sleep(1000);
      if (IDLE_REPORTED_AT.includes(second)) idleRss.push({ seconds: second, rss: vmKiB(pid, 'VmRSS') });
    }
    const end = await scrape(replica.metricsUrl);
    maxAccounted = Math.max(maxAccounted, end.value('baton_stored_bytes'));
    const heapUsed = end.value('nodejs_heap_size_used_bytes');
    return {
      where: 'sidecar',
      budgetBytes: budgetMiB * MiB,
      totalBytes: workload.writtenBytes,
      operations,
      seconds,
      startRss,
      samples,
      maxAccounted,
      evictions: end.value('baton_evictions_total'),
      endRss: vmKiB(pid, 'VmRSS'),
      endHeapUsed: heapUsed > 0 ? heapUsed : NaN,
      peakRss: vmKiB(pid, 'VmHWM'),
      idleRss,
    };
  } finally {
    if (sampler !== undefined) clearInterval(sampler);
    if (scraper !== undefined) clearInterval(scraper);
    replica.client.close();
    await replica.child.stop(5000);
  }
}

/** Largest RSS in each quarter of the bytes written. */
function quarterPeaks(r: ChurnResult): number[] {
  const peaks = [0, 0, 0, 0];
  for (const s of r.samples) {
    const q = Math.min(3, Math.floor((4 * s.writtenBytes) / r.totalBytes));
    peaks[q] = Math.max(peaks[q]!, s.rss);
  }
  return peaks;
}

/**
 * Samples of the last three quarters of the bytes written: the store has been full and
 * evicting for a long time (the budget is 1/16 of the bytes or less), so start-up's low
 * figures do not pull the minimum and median down.
 */
function steadySamples(r: ChurnResult): ChurnSample[] {
  return r.samples.filter((s) => 4 * s.writtenBytes >= r.totalBytes);
}

function stats(values: number[]): { min: number; median: number; max: number } {
  const finite = values.filter(Number.isFinite);
  if (finite.length === 0) return { min: NaN, median: NaN, max: NaN };
  return { min: Math.min(...finite), median: median(finite), max: Math.max(...finite) };
}

const mib = (bytes: number) => formatFixed(bytes / MiB, 0);
const ratio = (bytes: number, budget: number) => `${formatFixed(bytes / budget, 2)}×`;

export function reportChurn(results: ChurnResult[]): void {
  if (results.length === 0) return;
  const rows = results.map((r) => {
    const steady = steadySamples(r);
    const rss = stats(steady.map((s) => s.rss));
    const heap = stats(steady.map((s) => s.heapUsed));
    const external = stats(steady.map((s) => s.external));
    const b = r.budgetBytes;
    return [
      `${r.where}, ${mib(b)} MiB`,
      `${mib(r.totalBytes)}`,
      mib(r.startRss),
      `${mib(rss.min)} / ${mib(rss.median)} / ${mib(rss.max)}`,
      `${ratio(rss.median, b)} / ${ratio(rss.max, b)}`,
      mib(r.peakRss),
      Number.isFinite(heap.median) ? `${ratio(heap.median, b)} / ${ratio(heap.max, b)}` : 'n/a',
      Number.isFinite(external.median) ? `${mib(external.median)} / ${mib(external.max)}` : 'n/a',
      `${ratio(r.maxAccounted, b)}`,
      quarterPeaks(r).map(mib).join(' / '),
      `${mib(r.endRss)}`,
    ];
  });
  console.log(
    '\nRSS against the memory budget under churn (MiB; ratios to the budget; min / median / max over the samples of ' +
      'the last three quarters of the bytes written):\n' +
      "'fixed' is RSS before the first write; 'peak' is the kernel's high-water mark (VmHWM); " +
      "'Q1–Q4 max' is the largest RSS sampled in each quarter of the bytes written; 'end' is RSS after the writes " +
      `(in process: after full GCs; sidecar: after ${SIDECAR_IDLE_SECONDS} s idle).`,
  );
  console.log(
    formatTable(
      ['run, budget', 'written', 'fixed', 'RSS min / med / max', 'RSS/budget med / max', 'peak', 'heapUsed/budget med / max', 'external med / max', 'accounted max', 'Q1–Q4 max', 'end'],
      rows,
    ),
  );
  for (const r of results) {
    const overBudget = r.maxAccounted > r.budgetBytes ? ' — OVER THE BUDGET' : '';
    console.log(
      `  ${r.where}, ${mib(r.budgetBytes)} MiB: ${r.operations.toLocaleString('en-US')} operations in ${formatFixed(r.seconds, 1)} s, ` +
        `${r.evictions.toLocaleString('en-US')} evictions, (RSS − fixed)/budget median ` +
        `${ratio(stats(steadySamples(r).map((s) => s.rss)).median - r.startRss, r.budgetBytes)}${overBudget}`,
    );
    if (Number.isFinite(r.endHeapUsed)) console.log(`    heapUsed at the end: ${mib(r.endHeapUsed)} MiB`);
    if (r.idleRss !== undefined) {
      console.log(`    RSS while idle after the writes: ${r.idleRss.map((x) => `${x.seconds} s ${mib(x.rss)} MiB`).join(', ')}`);
    }
    if (r.heapSpaces !== undefined) {
      const spaces = r.heapSpaces.filter((s) => s.sizeMiB >= 1).map((s) => `${s.name} ${formatFixed(s.usedMiB, 0)}/${formatFixed(s.sizeMiB, 0)}`);
      console.log(`    V8 spaces at the end, MiB used/committed: ${spaces.join(', ')}`);
    }
  }
}
