/**
 * Starts the real `baton sidecar` (compiled, from dist/) on free loopback ports and stops
 * it; runs the baton CLI to completion.
 *
 * Rules:
 * - Every process started here is killed by stop(), by a start that fails or times out,
 *   and by an exit hook as a last resort. A start that does not complete within its time-out
 *   kills the child and rejects with what it wrote, so a node that never reports its start
 *   fails the test instead of hanging the suite.
 * - The children get none of this process's BATON_* variables, only the ones a test passes:
 *   a shell or CI job that sets, say, BATON_LOG_LEVEL must not change what a test runs
 *   (with warn, no node would ever log its start).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import * as readline from 'node:readline';

export const BATON_BIN = path.join(__dirname, '..', '..', 'dist', 'sidecar', 'main.js');

/** How long a node may take to log "baton node started" (a loaded CI host included). */
export const DEFAULT_START_TIMEOUT_MS = 20_000;
/** How long a CLI run may take before it is killed (it only parses options or prints help). */
const RUN_TIMEOUT_MS = 20_000;
const STOP_GRACE_MS = 15_000;

const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

export interface SidecarProcess {
  child: ChildProcess;
  apiAddress: string;
  metricsUrl: string;
  /** The advertised peer (replication) address. */
  peerAddress: string;
  /** Every JSON log line the process wrote to stdout. */
  logs: Record<string, unknown>[];
  stderr: string[];
  /** Resolves when the node logged that it is ready (caught up with its peers). */
  ready(): Promise<void>;
  /** SIGTERM, then wait for exit; resolves with the exit code (SIGKILL after 15 s). */
  stop(): Promise<number | null>;
}

export interface StartOptions {
  /** Kill the node and reject if it has not logged its start after this long; default DEFAULT_START_TIMEOUT_MS. */
  startTimeoutMs?: number;
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

/**
 * True when a start failed only because a port was taken between choosing it and binding
 * it (baton exits 1 with "cannot listen on --<flag> …: address already in use"). Only such
 * a start is worth retrying on fresh ports: any other failure is the node's own.
 */
export function isPortRace(err: unknown): boolean {
  return err instanceof SidecarStartError && err.exitCode === 1 && /cannot listen on --[a-z-]+ .*: address already in use/.test(err.stderr);
}

/** The environment a child runs with: ours without any BATON_* variable, plus `env`. */
export function childEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('BATON_')));
  return { ...inherited, ...env };
}

/** Needs the "baton node started" log line: --log-level must be info or more verbose. */
export async function startSidecar(args: string[] = [], env: NodeJS.ProcessEnv = {}, options: StartOptions = {}): Promise<SidecarProcess> {
  const startTimeoutMs = options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS;
  const child = spawn(
    process.execPath,
    [BATON_BIN, 'sidecar', '--api-listen', '127.0.0.1:0', '--metrics-listen', '127.0.0.1:0', '--peer-listen', '127.0.0.1:0', ...args],
    { env: childEnv(env), stdio: ['ignore', 'pipe', 'pipe'] },
  );
  running.add(child);
  const logs: Record<string, unknown>[] = [];
  const stderr: string[] = [];
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => {
      running.delete(child);
      resolve(code);
    }),
  );
  readline.createInterface({ input: child.stderr! }).on('line', (line) => stderr.push(line));
  let markReady: () => void = () => {};
  const ready = new Promise<void>((resolve) => (markReady = resolve));
  let timer: NodeJS.Timeout | undefined;
  const started = new Promise<Record<string, unknown>>((resolve, reject) => {
    readline.createInterface({ input: child.stdout! }).on('line', (line) => {
      let entry: Record<string, unknown>;
      try {
        entry = JSON.parse(line) as Record<string, unknown>;
      } catch {
        entry = { unparsed: line };
      }
      logs.push(entry);
      if (entry.msg === 'baton node started') resolve(entry);
      if (entry.msg === 'baton node ready') markReady();
    });
    let timedOut = false;
    timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, startTimeoutMs);
    // 'close' comes after the exit and after both pipes were read to the end, so the
    // message holds everything the node wrote. Once started, this rejection changes nothing.
    child.once('close', (code) => {
      const said = stderr.join('\n');
      const logTail = logs.slice(-5).map((l) => JSON.stringify(l)).join('\n');
      const what = timedOut
        ? `sidecar (pid ${child.pid}) did not log "baton node started" within ${startTimeoutMs} ms and was killed`
        : `sidecar (pid ${child.pid}) exited with ${code} before starting`;
      reject(new SidecarStartError(`${what}; stderr: ${said || '(empty)'}${logTail ? `; last log lines:\n${logTail}` : ''}`, child.pid, timedOut ? null : code, said));
    });
  });
  let entry: Record<string, unknown>;
  try {
    entry = await started;
  } finally {
    clearTimeout(timer);
  }
  return {
    child,
    apiAddress: `127.0.0.1:${entry.api_port}`,
    metricsUrl: `http://127.0.0.1:${entry.metrics_port}`,
    peerAddress: String(entry.peer),
    logs,
    stderr,
    ready: () => ready,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill('SIGTERM');
      const straggler = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
      const code = await exited;
      clearTimeout(straggler);
      return code;
    },
  };
}

/**
 * Runs the baton CLI to completion; for option errors and --help. Rejects (after killing
 * it) if it has not exited within RUN_TIMEOUT_MS.
 */
export function runBaton(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BATON_BIN, ...args], { env: childEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
    running.add(child);
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, RUN_TIMEOUT_MS);
    // 'close', not 'exit': both pipes are read to the end.
    child.once('close', (code) => {
      clearTimeout(timer);
      running.delete(child);
      if (timedOut) reject(new Error(`baton ${args.join(' ')} did not exit within ${RUN_TIMEOUT_MS} ms and was killed; stderr: ${stderr || '(empty)'}`));
      else resolve({ code, stdout, stderr });
    });
  });
}
