/**
 * The GC pause reader the benchmarks summarize --trace-gc (Node children) and -Xlog:gc
 * (the JGroups JVMs) with (bench/gc-pauses.ts): which lines count, which figure is the
 * pause, and the rates per second a phase reports.
 */
import { gcRate, GcTotals, parseGcLine } from '../bench/gc-pauses';

describe('parseGcLine', () => {
  it("reads a V8 scavenge's pause, not the time spent outside it", () => {
    const line = '[22562:0x1f43b490]       90 ms: Scavenge 3.8 (4.0) -> 3.4 (5.0) MB, 9.60 / 0.25 ms  (average mu = 1.000, current mu = 1.000) allocation failure; ';
    expect(parseGcLine(line)).toEqual({ kind: 'scavenge', ms: 9.6 });
  });

  it('counts V8 mark-compacts (with their incremental-marking note) as major', () => {
    const line =
      '[7:0x6a3c2b0]    41020 ms: Mark-Compact 120.3 (130.2) -> 80.1 (128.0) MB, 12.50 / 0.00 ms  (+ 3.2 ms in 45 steps since start of marking, biggest step 0.3 ms, walltime since start of marking 120 ms) (average mu = 0.98) finalize incremental marking via task; GC in old space requested';
    expect(parseGcLine(line)).toEqual({ kind: 'major', ms: 12.5 });
  });

  it("reads the JVM's young pauses as scavenges and its other pauses as major", () => {
    expect(parseGcLine('[0.765s][info][gc] GC(1) Pause Young (Normal) (G1 Evacuation Pause) 8M->8M(64M) 20.157ms')).toEqual({ kind: 'scavenge', ms: 20.157 });
    expect(parseGcLine('[1.267s][info][gc] GC(6) Pause Young (Concurrent Start) (G1 Evacuation Pause) 41M->41M(64M) 116.649ms')).toEqual({ kind: 'scavenge', ms: 116.649 });
    expect(parseGcLine('[2.001s][info][gc] GC(9) Pause Remark 50M->50M(64M) 1.250ms')).toEqual({ kind: 'major', ms: 1.25 });
  });

  it('ignores everything else a child writes, including GC lines that are not pauses', () => {
    for (const line of [
      '{"level":30,"msg":"baton node started","api_port":1234}',
      '[0.040s][info][gc] Using G1',
      '[1.269s][info][gc] GC(8) Concurrent Mark Cycle 35.100ms',
      'READY',
      '',
      'Scavenge 3.8 (4.0) -> 3.4 (5.0) MB, 9.60 / 0.00 ms',
    ]) {
      expect(parseGcLine(line)).toBeUndefined();
    }
  });
});

describe('GcTotals and gcRate', () => {
  it('sums pauses by kind from lines and gives per-second rates between snapshots', () => {
    const totals = new GcTotals();
    totals.addLine('[1:0xa]  10 ms: Scavenge 1.0 (2.0) -> 0.5 (2.0) MB, 2.00 / 0.00 ms  (average mu = 1.000) allocation failure;');
    const before = totals.snapshot();
    totals.addLine('[1:0xa]  20 ms: Scavenge 1.0 (2.0) -> 0.5 (2.0) MB, 3.00 / 0.00 ms  (average mu = 1.000) allocation failure;');
    totals.addLine('a log line');
    totals.addLine('[1:0xa]  30 ms: Scavenge 1.0 (2.0) -> 0.5 (2.0) MB, 5.00 / 0.00 ms  (average mu = 1.000) allocation failure;');
    totals.addLine('[1:0xa]  40 ms: Mark-Compact 9.0 (12.0) -> 4.0 (12.0) MB, 8.00 / 0.00 ms  (average mu = 1.000) low memory;');
    const rate = gcRate(before, totals.snapshot(), 2);
    expect(rate).toEqual({ scavengeMsPerSecond: 4, scavengesPerSecond: 1, meanScavengeMs: 4, majorMsPerSecond: 4 });
  });

  it('gives no mean pause for an interval without scavenges', () => {
    const totals = new GcTotals();
    const s = totals.snapshot();
    expect(gcRate(s, s, 1).meanScavengeMs).toBeNaN();
    expect(gcRate(s, s, 1).scavengeMsPerSecond).toBe(0);
  });
});
