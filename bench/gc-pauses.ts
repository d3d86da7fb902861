/**
 * Garbage-collection pauses of the benchmarks' processes, summed by kind: young-generation
 * collections ("scavenges": V8's Scavenge, the JVM's Pause Young) and the rest ("major":
 * V8's Mark-Compact, the JVM's other pauses).
 *
 * Sources: a Node child started with --trace-gc writes one line per collection to stdout, a
 * JVM started with -Xlog:gc:stdout one line per pause; parseGcLine reads either and ignores
 * every other line. This process's own collections come from perf_hooks (observeOwnGc).
 * A bench snapshots the totals before and after a phase and reports pause time per second
 * of wall time (ms/s; 20 ms/s is 2% of the time).
 */
import { constants, PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';

export type GcKind = 'scavenge' | 'major';

export interface GcPause {
  kind: GcKind;
  ms: number;
}

// V8 --trace-gc: "[pid:0x…]   1234 ms: Scavenge 3.8 (4.0) -> 3.4 (5.0) MB, 9.60 / 0.00 ms  (average mu …"
// The pause is the first figure after "MB, " (the second is time spent outside the pause).
const V8_LINE = /^\[\d+:0x[0-9a-f]+\]\s+\d+ ms: (Scavenge|Minor Mark-Compact|Mark-Compact|Mark-sweep)\b.*? MB, ([\d.]+) \/ [\d.]+ ms/;
// JVM unified logging: "[0.123s][info][gc] GC(3) Pause Young (Normal) (G1 Evacuation Pause) 23M->2M(256M) 1.702ms"
const JVM_LINE = /\[gc\s*\] GC\(\d+\) (Pause \w+).*? ([\d.]+)ms\s*$/;

/** The pause a --trace-gc or -Xlog:gc line reports, or undefined for any other line. */
export function parseGcLine(line: string): GcPause | undefined {
  const v8 = V8_LINE.exec(line);
  if (v8 !== null) return { kind: v8[1] === 'Scavenge' ? 'scavenge' : 'major', ms: Number(v8[2]) };
  const jvm = JVM_LINE.exec(line);
  if (jvm !== null) return { kind: jvm[1] === 'Pause Young' ? 'scavenge' : 'major', ms: Number(jvm[2]) };
  return undefined;
}

/** Running totals of one process's pauses. */
export class GcTotals {
  scavengeMs = 0;
  scavenges = 0;
  majorMs = 0;
  majors = 0;
  /** The longest pause of each kind since the last resetLongest. */
  longestScavengeMs = 0;
  longestMajorMs = 0;

  add(pause: GcPause): void {
    if (pause.kind === 'scavenge') {
      this.scavengeMs += pause.ms;
      this.scavenges++;
      this.longestScavengeMs = Math.max(this.longestScavengeMs, pause.ms);
    } else {
      this.majorMs += pause.ms;
      this.majors++;
      this.longestMajorMs = Math.max(this.longestMajorMs, pause.ms);
    }
  }

  resetLongest(): void {
    this.longestScavengeMs = 0;
    this.longestMajorMs = 0;
  }

  /** Feeds a line of output; lines that are not GC lines are ignored. */
  addLine(line: string): void {
    const pause = parseGcLine(line);
    if (pause !== undefined) this.add(pause);
  }

  snapshot(): GcSnapshot {
    return { scavengeMs: this.scavengeMs, scavenges: this.scavenges, majorMs: this.majorMs, majors: this.majors };
  }
}

export interface GcSnapshot {
  readonly scavengeMs: number;
  readonly scavenges: number;
  readonly majorMs: number;
  readonly majors: number;
}

/** Pauses between two snapshots, per second of `seconds` of wall time. */
export interface GcRate {
  /** Scavenge pause ms per wall second (10 = 1% of the time). */
  scavengeMsPerSecond: number;
  scavengesPerSecond: number;
  /** Mean scavenge pause in the interval (ms); NaN without scavenges. */
  meanScavengeMs: number;
  majorMsPerSecond: number;
}

export function gcRate(before: GcSnapshot, after: GcSnapshot, seconds: number): GcRate {
  const scavengeMs = after.scavengeMs - before.scavengeMs;
  const scavenges = after.scavenges - before.scavenges;
  return {
    scavengeMsPerSecond: scavengeMs / seconds,
    scavengesPerSecond: scavenges / seconds,
    meanScavengeMs: scavenges > 0 ? scavengeMs / scavenges : NaN,
    majorMsPerSecond: (after.majorMs - before.majorMs) / seconds,
  };
}

/** Counts this process's collections into `totals` until the returned function is called. */
export function observeOwnGc(totals: GcTotals): () => void {
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      const kind = (entry as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind;
      totals.add({ kind: kind === constants.NODE_PERFORMANCE_GC_MINOR ? 'scavenge' : 'major', ms: entry.duration });
    }
  });
  observer.observe({ entryTypes: ['gc'] });
  return () => observer.disconnect();
}
