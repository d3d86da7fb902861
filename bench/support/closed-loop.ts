/**
 * A closed-loop load slice: `workers` callers each issue one operation at a time for a
 * warm-up, then for the measured window; latency of operations started in the window,
 * completions inside it, errors (the first one kept), and the CPU the client, the server and
 * everything else used during the window as shares of one core. Bounded in operations,
 * errors and time (a watchdog ends a slice that hangs).
 */
import { cpuSecondsOf, interruption, machineBusyCpuSeconds, ownCpuSeconds } from '../children';
import { LatencySamples } from '../stats';

export interface SliceResult {
  opsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  firstError: string | undefined;
  /** CPU as a share of one core during the measured window. */
  clientCpu: number;
  serverCpu: number;
  otherCpu: number;
}

export interface SliceOptions {
  workers: number;
  warmupSeconds: number;
  measureSeconds: number;
  /** The server's pid, for its CPU share. */
  serverPid: number | undefined;
  maxOps: number;
  maxErrors: number;
  /** Latency samples kept at most. */
  maxSamples: number;
  /** Beyond warm-up and window, how long the slice may run before the watchdog ends it. */
  slackMs: number;
  /** One operation: worker `w`, its `n`th, the `issued`th of the slice. */
  operation: (w: number, n: number, issued: number) => Promise<void>;
}

export async function runClosedLoopSlice(o: SliceOptions): Promise<SliceResult> {
  const samples = new LatencySamples(o.maxSamples);
  const measureStart = process.hrtime.bigint() + BigInt(Math.round(o.warmupSeconds * 1e9));
  const measureEnd = measureStart + BigInt(Math.round(o.measureSeconds * 1e9));
  let issued = 0;
  let completed = 0;
  let errors = 0;
  let firstError: string | undefined;
  const worker = async (w: number): Promise<void> => {
    for (let n = 0; ; n++) {
      const t0 = process.hrtime.bigint();
      if (t0 >= measureEnd || issued >= o.maxOps || errors >= o.maxErrors || interruption.requested) return;
      let failed = false;
      try {
        await o.operation(w, n, issued++);
      } catch (err) {
        failed = true;
        errors++;
        firstError ??= err instanceof Error ? err.message : String(err);
      }
      const t1 = process.hrtime.bigint();
      if (t1 >= measureStart && t1 < measureEnd && !failed) completed++;
      if (t0 >= measureStart) samples.add(Number(t1 - t0));
    }
  };
  let cpuAtStart: CpuSnapshot | undefined;
  let cpuAtEnd: CpuSnapshot | undefined;
  const startTimer = setTimeout(() => (cpuAtStart = cpuSnapshot(o.serverPid)), o.warmupSeconds * 1000);
  const endTimer = setTimeout(() => (cpuAtEnd = cpuSnapshot(o.serverPid)), (o.warmupSeconds + o.measureSeconds) * 1000);
  let watchdog: NodeJS.Timeout | undefined;
  try {
    const limitMs = (o.warmupSeconds + o.measureSeconds) * 1000 + o.slackMs;
    await Promise.race([
      Promise.all(Array.from({ length: o.workers }, (_, w) => worker(w))),
      new Promise<never>((_, reject) => (watchdog = setTimeout(() => reject(new Error(`slice did not end within ${limitMs} ms`)), limitMs))),
    ]);
  } finally {
    clearTimeout(watchdog);
    clearTimeout(startTimer);
    clearTimeout(endTimer);
  }
  cpuAtEnd ??= cpuSnapshot(o.serverPid);
  const [p50Ms, p99Ms] = samples.quantilesMs(0.5, 0.99);
  return { opsPerSecond: completed / o.measureSeconds, p50Ms: p50Ms!, p99Ms: p99Ms!, errors, firstError, ...cpuShares(cpuAtStart, cpuAtEnd) };
}

interface CpuSnapshot {
  wall: bigint;
  own: number;
  server: number;
  machine: number;
}

function cpuSnapshot(pid: number | undefined): CpuSnapshot {
  return { wall: process.hrtime.bigint(), own: ownCpuSeconds(), server: cpuSecondsOf(pid), machine: machineBusyCpuSeconds() };
}

function cpuShares(start: CpuSnapshot | undefined, end: CpuSnapshot) {
  if (start === undefined) return { clientCpu: NaN, serverCpu: NaN, otherCpu: NaN };
  const wall = Number(end.wall - start.wall) / 1e9;
  const clientCpu = (end.own - start.own) / wall;
  const serverCpu = (end.server - start.server) / wall;
  return { clientCpu, serverCpu, otherCpu: Math.max(0, (end.machine - start.machine) / wall - clientCpu - serverCpu) };
}
