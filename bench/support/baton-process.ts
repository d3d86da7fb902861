/**
 * A `baton sidecar` child process, as tests and benchmarks start one: its JSON log lines
 * parsed as they come, the "baton node started" line (which carries the bound ports)
 * awaited within a time-out, "baton node ready" remembered, stderr kept. The command is
 * the caller's (node and the built main.js, possibly behind `ip netns exec` or `unshare`),
 * and so are the flags.
 *
 * Rules:
 * - A start that has not logged "baton node started" within its time-out kills the child
 *   (SIGKILL) and rejects with a SidecarStartError holding what it wrote; so does a node
 *   that exits first. The rejection comes after both pipes were read to the end.
 * - The node must log at info or more verbose, or it never reports its start.
 * - Every log line is kept (baton logs a handful of lines at info: starts, membership
 *   changes, the stop), for tests that look for one.
 */
import { ChildHandle, spawnChild, type SpawnOptions, type StopResult } from './child-process';

export type LogEntry = Record<string, unknown>;

export const STARTED_MSG = 'baton node started';
export const READY_MSG = 'baton node ready';

/** One stdout line: its JSON object, or `{ unparsed: line }` when it is not one. */
export function parseLogLine(line: string): LogEntry {
  try {
    const value = JSON.parse(line) as unknown;
    if (typeof value === 'object' && value !== null && !Array.isArray(value)) return value as LogEntry;
  } catch {
    // not JSON: kept as it is below
  }
  return { unparsed: line };
}

/** A node that exited, or was killed for taking too long, before it logged its start. */
export class SidecarStartError extends Error {
  constructor(
    message: string,
    readonly pid: number | undefined,
    /** The exit code; null when it ended by a signal (ours, after the time-out). */
    readonly exitCode: number | null,
    readonly stderr: string,
  ) {
    super(message);
    this.name = 'SidecarStartError';
  }
}

export interface BatonStartOptions extends SpawnOptions {
  /** Kill the node and reject if it has not logged its start after this long. */
  startTimeoutMs: number;
}

export class BatonProcess {
  private constructor(
    readonly child: ChildHandle,
    /** The "baton node started" entry: api_port, metrics_port, peer, … */
    readonly started: LogEntry,
    /** Every JSON log line the process wrote to stdout. */
    readonly logs: LogEntry[],
    readonly stderr: string[],
    private readonly readyLogged: Promise<void>,
  ) {}

  /** Spawns the node and resolves once it logged its start; see the rules above. */
  static async start(options: BatonStartOptions): Promise<BatonProcess> {
    const child = spawnChild(options);
    const logs: LogEntry[] = [];
    const stderr: string[] = [];
    let markReady: () => void = () => {};
    const readyLogged = new Promise<void>((resolve) => (markReady = resolve));
    child.onLine((line, stream) => {
      if (stream === 'stderr') {
        stderr.push(line);
        return;
      }
      const entry = parseLogLine(line);
      logs.push(entry);
      if (entry.msg === READY_MSG) markReady();
    });
    const isStart = (line: string, stream: string) => {
      if (stream !== 'stdout') return undefined;
      const entry = parseLogLine(line);
      return entry.msg === STARTED_MSG ? entry : undefined;
    };
    try {
      const started = await child.waitFor(isStart, options.startTimeoutMs, `log "${STARTED_MSG}"`);
      return new BatonProcess(child, started, logs, stderr, readyLogged);
    } catch {
      // Timed out (the child still runs: kill it) or ended: either way, report once it is gone.
      const timedOut = child.running;
      if (timedOut) child.process.kill('SIGKILL');
      const status = await child.closed;
      const logTail = logs.slice(-5).map((l) => JSON.stringify(l)).join('\n');
      const said = stderr.join('\n');
      const what = timedOut
        ? `${options.name} (pid ${child.pid}) did not log "${STARTED_MSG}" within ${options.startTimeoutMs} ms and was killed`
        : `${options.name} (pid ${child.pid}) exited with ${status.error?.message ?? status.signal ?? status.code} before starting`;
      throw new SidecarStartError(`${what}; stderr: ${said || '(empty)'}${logTail ? `; last log lines:\n${logTail}` : ''}`, child.pid, timedOut ? null : status.code, said);
    }
  }

  /** Resolves when the node logged that it is ready (caught up with its peers). */
  ready(): Promise<void> {
    return this.readyLogged;
  }

  get running(): boolean {
    return this.child.running;
  }

  /** Sends `signal` and waits for the exit; SIGKILL after `graceMs`. */
  stop(signal: NodeJS.Signals = 'SIGTERM', graceMs = 15_000): Promise<StopResult> {
    return this.child.stop(signal, graceMs);
  }

  /** The last `n` lines it wrote (log lines, then stderr), for failure messages. */
  logTail(n = 15): string {
    return [...this.logs.map((l) => JSON.stringify(l)), ...this.stderr].slice(-n).join('\n');
  }
}
