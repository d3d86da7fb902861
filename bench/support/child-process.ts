/**
 * One child process of a test or a benchmark: spawn it, read its output line by line, wait
 * for a line, stop it. Knows nothing of what runs (a baton node, redis-server, a helper
 * script, a command behind `ip netns exec`): baton-process.ts adds what a baton node logs.
 *
 * Rules:
 * - Every child is stopped by stop() (the signal, then SIGKILL after the grace period) and,
 *   as a last resort, killed by an exit hook of this process, so none outlives its parent.
 * - The environment is the caller's to give whole (the default is this process's): tests
 *   pass one without BATON_* variables, benchmarks pass theirs on.
 * - A wait ends when its line comes, when its time-out passes (the child keeps running:
 *   the caller decides), or when the child has ended and both pipes were read to the end,
 *   so an error message holds everything the child wrote.
 * - It lives in bench/ so benchmarks (built and run from dist/) and tests both use it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as readline from 'node:readline';

const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

export type OutputStream = 'stdout' | 'stderr';

/** How a child ended: its exit code or signal, or the error that kept it from starting. */
export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Set when the command could not be started (e.g. ENOENT). */
  error?: Error;
}

export interface StopResult extends ExitStatus {
  /** From the signal to the exit (0 when it had ended already). */
  ms: number;
  /** The child outlived the grace period and was SIGKILLed. */
  killed: boolean;
}

export interface SpawnOptions {
  /** The child's name in messages, e.g. "redis-server" or "baton on a". */
  name: string;
  command: string;
  args: readonly string[];
  /** The whole environment; default this process's. */
  env?: NodeJS.ProcessEnv;
  /** 'pipe' keeps stdin open (a child that exits when it closes); default 'ignore'. */
  stdin?: 'ignore' | 'pipe';
}

/** "code 0", "signal SIGTERM" or "spawn error: …". */
export function describeExit(status: ExitStatus): string {
  if (status.error !== undefined) return `spawn error: ${status.error.message}`;
  return status.signal !== null ? `signal ${status.signal}` : `code ${status.code}`;
}

export class ChildHandle {
  readonly name: string;
  readonly process: ChildProcess;
  /** Resolves when the child has ended (or could not start). */
  readonly exit: Promise<ExitStatus>;
  /** Resolves after `exit`, once both pipes were read to the end. */
  readonly closed: Promise<ExitStatus>;
  private readonly listeners = new Set<(line: string, stream: OutputStream) => void>();
  private ended: ExitStatus | undefined;

  constructor(options: SpawnOptions) {
    this.name = options.name;
    this.process = spawn(options.command, options.args, { env: options.env ?? process.env, stdio: [options.stdin ?? 'ignore', 'pipe', 'pipe'] });
    const child = this.process;
    running.add(child);
    for (const stream of ['stdout', 'stderr'] as const) {
      readline.createInterface({ input: child[stream]! }).on('line', (line) => {
        for (const listener of this.listeners) listener(line, stream);
      });
    }
    this.exit = new Promise<ExitStatus>((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
      child.once('error', (error) => resolve({ code: null, signal: null, error }));
    }).then((status: ExitStatus) => {
      running.delete(child);
      this.ended = status;
      return status;
    });
    // 'close' does not follow a failed spawn on every Node version: the error ends it too.
    this.closed = new Promise<void>((resolve) => {
      child.once('close', () => resolve());
      child.once('error', () => resolve());
    }).then(() => this.exit);
  }

  get pid(): number | undefined {
    return this.process.pid;
  }

  /** True until the child has ended. */
  get running(): boolean {
    return this.ended === undefined && this.process.exitCode === null && this.process.signalCode === null;
  }

  /** Calls `listener` with every later line of stdout and stderr; returns a function that removes it. */
  onLine(listener: (line: string, stream: OutputStream) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Resolves with the first later value `match` returns for a line (undefined: keep
   * waiting). Rejects, with `describe()` appended, after `timeoutMs` or once the child has
   * ended and all its output was read.
   */
  waitFor<T>(match: (line: string, stream: OutputStream) => T | undefined, timeoutMs: number, what: string, describe: () => string = () => ''): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let done = false;
      const finish = (settle: () => void) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        remove();
        settle();
      };
      const remove = this.onLine((line, stream) => {
        const value = match(line, stream);
        if (value !== undefined) finish(() => resolve(value));
      });
      const timer = setTimeout(() => finish(() => reject(new Error(`${this.name} (pid ${this.pid}) did not ${what} within ${timeoutMs} ms${describe()}`))), timeoutMs);
      void this.closed.then((status) => finish(() => reject(new Error(`${this.name} (pid ${this.pid}) ended (${describeExit(status)}) before it did ${what}${describe()}`))));
    });
  }

  /**
   * Sends `signal` and waits for the exit; SIGKILL after `graceMs` (at once for SIGKILL).
   * A child that has ended already is not signalled.
   */
  async stop(signal: NodeJS.Signals = 'SIGTERM', graceMs = 15_000): Promise<StopResult> {
    const sentAt = Date.now();
    let killed = false;
    if (this.running) {
      this.process.kill(signal);
      const timer =
        signal === 'SIGKILL'
          ? undefined
          : setTimeout(() => {
              killed = true;
              this.process.kill('SIGKILL');
            }, graceMs);
      await this.exit;
      clearTimeout(timer);
    }
    return { ...(await this.exit), ms: Date.now() - sentAt, killed };
  }
}

/** Starts a child; see ChildHandle. */
export function spawnChild(options: SpawnOptions): ChildHandle {
  return new ChildHandle(options);
}

/**
 * Runs a command to completion and collects its output; kills it and rejects if it has not
 * ended within `timeoutMs`.
 */
export async function runToCompletion(options: SpawnOptions, timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawnChild(options);
  let stdout = '';
  let stderr = '';
  child.process.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.process.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.process.kill('SIGKILL');
  }, timeoutMs);
  const status = await child.closed;
  clearTimeout(timer);
  if (timedOut) throw new Error(`${options.name} did not exit within ${timeoutMs} ms and was killed; stderr: ${stderr || '(empty)'}`);
  if (status.error !== undefined) throw status.error;
  return { code: status.code, stdout, stderr };
}
