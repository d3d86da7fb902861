/**
 * Small helpers shared by the benchmarks: percentiles, medians, machine facts and a plain
 * text table. Latencies are nanoseconds from process.hrtime.bigint(), kept as numbers
 * (exact below 2⁵³ ns, i.e. 104 days).
 */
import * as os from 'node:os';

/** The q-quantile (0 ≤ q ≤ 1) of ascending samples, nearest-rank; NaN when empty. */
export function quantileOfSorted(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank]!;
}

/** Median of the finite values; NaN when there are none. Even counts average the middle two. */
export function median(values: readonly number[]): number {
  const sorted = values.filter(Number.isFinite).sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Latency samples in nanoseconds, in a fixed-size buffer (samples beyond capacity are counted, not kept). */
export class LatencySamples {
  private readonly samples: Float64Array;
  private kept = 0;
  /** Samples offered after the buffer was full. */
  dropped = 0;

  constructor(capacity: number) {
    this.samples = new Float64Array(capacity);
  }

  add(ns: number): void {
    if (this.kept < this.samples.length) this.samples[this.kept++] = ns;
    else this.dropped++;
  }

  get count(): number {
    return this.kept + this.dropped;
  }

  /** Quantiles in milliseconds. */
  quantilesMs(...qs: number[]): number[] {
    const sorted = this.samples.subarray(0, this.kept).slice().sort();
    return qs.map((q) => quantileOfSorted(sorted, q) / 1e6);
  }
}

export interface MachineInfo {
  cores: number;
  cpuModel: string;
  cpuMHz: number;
  memoryGiB: number;
  node: string;
  platform: string;
  date: string;
}

export function machineInfo(): MachineInfo {
  const cpus = os.cpus();
  return {
    cores: cpus.length,
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    cpuMHz: cpus[0]?.speed ?? 0,
    memoryGiB: os.totalmem() / 2 ** 30,
    node: process.version,
    platform: `${os.type()} ${os.release()} ${os.arch()}`,
    date: new Date().toISOString(),
  };
}

export function describeMachine(m: MachineInfo): string {
  const speed = m.cpuMHz > 0 ? ` @ ${m.cpuMHz} MHz` : '';
  return [
    `date     ${m.date}`,
    `cpu      ${m.cores} × ${m.cpuModel}${speed}`,
    `memory   ${m.memoryGiB.toFixed(1)} GiB`,
    `node     ${m.node} (${m.platform})`,
    `load     ${os.loadavg().map((l) => l.toFixed(2)).join(' ')} (1/5/15 min, at start)`,
  ].join('\n');
}

/** A text table with a header rule; columns after the first are right-aligned. */
export function formatTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

/** 12345.6 → "12,346". */
export function formatCount(n: number): string {
  return Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : 'n/a';
}

/** A number with `digits` decimals, or "n/a". */
export function formatFixed(n: number, digits: number): string {
  return Number.isFinite(n) ? n.toFixed(digits) : 'n/a';
}

/** Seconds from an environment variable (a positive number), or the default. */
export function envNumber(name: string, fallback: number): number {
  const text = process.env[name];
  if (text === undefined || text === '') return fallback;
  const value = Number(text);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name} must be a positive number, got '${text}'`);
  return value;
}

/** xorshift32: a fast, seeded source of indexes for picking ids (not for anything secret). */
export class IndexPicker {
  private state: number;

  constructor(
    private readonly size: number,
    seed: number,
  ) {
    this.state = seed >>> 0 || 0x9e3779b9;
  }

  next(): number {
    let x = this.state;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.state = x >>> 0;
    return this.state % this.size;
  }
}
