/**
 * Server processes for the benchmarks: start one, wait until it is ready, read its CPU
 * time, stop it. Every child is stopped by stop() (SIGTERM, then SIGKILL after a grace
 * period) and, as a last resort, killed when the bench process exits (the process handling
 * is support/child-process.ts, which the tests use too).
 */
import type { ChildProcess } from 'node:child_process';
import { accessSync, appendFileSync, constants as fsConstants, readdirSync, readFileSync } from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { describeExit, spawnChild } from './support/child-process';

export interface Child {
  readonly name: string;
  readonly process: ChildProcess;
  /** The last lines the child wrote to stdout and stderr, for error messages. */
  readonly output: string[];
  /** Resolves with the first stdout line matching `pattern` (rejects if the child exits first or after timeoutMs). */
  waitForLine(pattern: RegExp, timeoutMs: number): Promise<RegExpMatchArray>;
  /** Rejects if the child exits; for racing against a readiness check. */
  readonly exited: Promise<never>;
  /** Calls `listener` with every later line of stdout and stderr; returns a function that removes it. */
  onLine(listener: (line: string) => void): () => void;
  /** SIGTERM, wait for the exit (SIGKILL after graceMs); resolves with the exit code or signal. */
  stop(graceMs?: number): Promise<string>;
}

const OUTPUT_LINES_KEPT = 40;

/** A child with this process's environment and stdin open; its output goes to BENCH_LOG_DIR/<name>.log when that is set. */
export function startChild(name: string, command: string, args: readonly string[]): Child {
  const child = spawnChild({ name, command, args, stdin: 'pipe' });
  const output: string[] = [];
  const logFile = process.env.BENCH_LOG_DIR ? path.join(process.env.BENCH_LOG_DIR, `${name}.log`) : undefined;
  child.onLine((line) => {
    if (logFile !== undefined) appendFileSync(logFile, line + '\n');
    output.push(line);
    if (output.length > OUTPUT_LINES_KEPT) output.shift();
  });
  const exited = child.exit.then((status): never => {
    throw new Error(`${name} exited (${describeExit(status)}):\n${output.join('\n')}`);
  });
  exited.catch(() => undefined);
  return {
    name,
    process: child.process,
    output,
    exited,
    onLine: (listener) => child.onLine((line) => listener(line)),
    waitForLine: (pattern, timeoutMs) =>
      child.waitFor((line, stream) => (stream === 'stdout' ? (line.match(pattern) ?? undefined) : undefined), timeoutMs, `print ${pattern}`, () => `:\n${output.join('\n')}`),
    stop: async (graceMs = 15_000) => describeExit(await child.stop('SIGTERM', graceMs)),
  };
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}

/** Polls an HTTP URL until it answers 200, or rejects after timeoutMs. */
export async function waitForHttp200(url: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer';
  while (Date.now() < deadline) {
    const status = await new Promise<number | string>((resolve) => {
      const request = http.get(url, { timeout: 1000 }, (response) => {
        response.resume();
        resolve(response.statusCode ?? 0);
      });
      request.on('timeout', () => request.destroy(new Error('timeout')));
      request.on('error', (err) => resolve(err.message));
    });
    if (status === 200) return;
    last = String(status);
    await sleep(50);
  }
  throw new Error(`${url} did not answer 200 within ${timeoutMs} ms (last: ${last})`);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The full path of an executable on PATH, or undefined. */
export function findOnPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (dir === '') continue;
    const candidate = path.join(dir, name);
    try {
      accessSync(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

// Linux reports process times in clock ticks of 1/100 s (USER_HZ) on every common platform.
const CLOCK_TICKS_PER_SECOND = 100;

/** Which CPU time: user and system together, or the system's (the kernel working for the process) alone. */
export type CpuPart = 'all' | 'system';

/** User + system CPU seconds a process has used so far (or system alone), Linux /proc; NaN when unknown. */
export function cpuSecondsOf(pid: number | undefined, part: CpuPart = 'all'): number {
  if (pid === undefined) return NaN;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    // The command name (field 2) may hold spaces; the fields after it follow its ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    return ((part === 'all' ? Number(fields[11]) : 0) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND;
  } catch {
    return NaN;
  }
}

/**
 * A process's CPU seconds so far on its main thread and on its other threads together (the
 * V8 and libuv helpers: GC, compilation, the thread pool), how often its main thread has
 * slept and woken, how long it waited for a CPU when ready, and its minor page faults (all
 * threads: each a fresh page of memory touched), Linux /proc; NaN when unknown.
 */
export function threadCpuSecondsOf(pid: number | undefined): { main: number; others: number; wakeups: number; waited: number; faults: number } {
  if (pid === undefined) return { main: NaN, others: NaN, wakeups: NaN, waited: NaN, faults: NaN };
  let main = 0;
  let others = 0;
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'latin1');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const seconds = (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND;
      if (tid === String(pid)) main += seconds;
      else others += seconds;
    }
    // Each time the main thread slept and was woken (waiting on epoll, a lock, a page).
    const status = readFileSync(`/proc/${pid}/task/${pid}/status`, 'latin1');
    const wakeups = Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(status)?.[1] ?? NaN);
    // Time the main thread was ready to run and waited for a CPU (schedstat, nanoseconds).
    const waited = Number(readFileSync(`/proc/${pid}/task/${pid}/schedstat`, 'latin1').split(' ')[1]) / 1e9;
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const faults = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[7]);
    return { main, others, wakeups, waited, faults };
  } catch {
    return { main: NaN, others: NaN, wakeups: NaN, waited: NaN, faults: NaN };
  }
}

/** CPU seconds used by this process so far (or its system time alone). */
export function ownCpuSeconds(part: CpuPart = 'all'): number {
  const u = process.cpuUsage();
  return ((part === 'all' ? u.user : 0) + u.system) / 1e6;
}

/** CPU seconds the whole machine has been busy (all cores, Linux /proc/stat), or NaN when unknown. */
export function machineBusyCpuSeconds(): number {
  try {
    const line = readFileSync('/proc/stat', 'latin1').split('\n', 1)[0]!;
    // cpu user nice system idle iowait irq softirq steal …
    const ticks = line.trim().split(/\s+/).slice(1).map(Number);
    const total = ticks.slice(0, 8).reduce((a, b) => a + b, 0);
    return (total - ticks[3]! - ticks[4]!) / CLOCK_TICKS_PER_SECOND;
  } catch {
    return NaN;
  }
}

/** BENCH_QUIET_WAIT_SECONDS: how long to wait for a quiet machine before each timed phase (0 or unset: never wait). */
export function quietWaitSeconds(): number {
  const text = process.env.BENCH_QUIET_WAIT_SECONDS;
  if (text === undefined || text === '' || text === '0') return 0;
  const value = Number(text);
  if (!Number.isFinite(value) || value < 0) throw new Error(`BENCH_QUIET_WAIT_SECONDS must be a number of seconds, got '${text}'`);
  return value;
}

/** "Quiet": every other process of the machine together uses less than this share of one core. */
export const QUIET_OTHER_CPU = 0.2;

/**
 * On a shared machine: waits, at most maxSeconds, until the other processes use less than
 * QUIET_OTHER_CPU of a core over half a second (this process's own CPU is not counted).
 * Returns the seconds waited, or -1 if it gave up.
 */
export async function waitForQuiet(maxSeconds: number): Promise<number> {
  if (maxSeconds <= 0) return 0;
  const started = Date.now();
  for (;;) {
    const before = machineBusyCpuSeconds() - ownCpuSeconds();
    await sleep(500);
    const other = (machineBusyCpuSeconds() - ownCpuSeconds() - before) / 0.5;
    if (!(other >= QUIET_OTHER_CPU)) return (Date.now() - started) / 1000;
    if (Date.now() - started > maxSeconds * 1000) return -1;
  }
}

/** Set by the first Ctrl-C / SIGTERM or by the watchdog: a benchmark stops at its next check. */
export const interruption = { requested: false };

/**
 * Lets a benchmark stop cleanly: the first SIGINT/SIGTERM, or running longer than
 * `maxMinutes`, sets `interruption.requested` (the benchmark then stops its children); a
 * second signal exits at once, and a run still going 30 s after the watchdog fired exits 1.
 * Returns a function that disarms the watchdog.
 */
export function handleInterruptions(maxMinutes: number): () => void {
  const onSignal = () => {
    if (interruption.requested) process.exit(1);
    interruption.requested = true;
    console.log('\ninterrupted: stopping');
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const watchdog = setTimeout(() => {
    console.error(`\nthe benchmark ran longer than BENCH_MAX_MINUTES=${maxMinutes}: stopping`);
    interruption.requested = true;
    setTimeout(() => process.exit(1), 30_000).unref();
  }, maxMinutes * 60_000);
  watchdog.unref();
  return () => clearTimeout(watchdog);
}

/**
 * Runs a benchmark's main: an error is printed and makes the exit code 1; once it is done
 * (its children stopped), the process exits even if a stray handle would keep it alive.
 */
export function runMain(main: () => Promise<void>): void {
  main()
    .catch((err: unknown) => {
      console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
      process.exitCode = 1;
    })
    .finally(() => setTimeout(() => process.exit(), 10_000).unref());
}
