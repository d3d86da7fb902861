/**
 * Starts the real `baton sidecar` (compiled, from dist/) on free loopback ports and stops
 * it; runs the baton CLI to completion. The process handling (start time-out, log parsing,
 * stop, exit hook) is bench/support/baton-process.ts, shared with the benchmarks and netns.ts.
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
import type { ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import { BatonProcess, SidecarStartError, type LogEntry } from '../../bench/support/baton-process';
import { runToCompletion } from '../../bench/support/child-process';
import { scrape, type Scrape } from '../../bench/support/prometheus-scrape';

export { SidecarStartError };

export const BATON_BIN = path.join(__dirname, '..', '..', 'dist', 'sidecar', 'cli', 'main.js');

/** How long a node may take to log "baton node started" (a loaded CI host included). */
export const DEFAULT_START_TIMEOUT_MS = 20_000;
/** How long a CLI run may take before it is killed (it only parses options or prints help). */
const RUN_TIMEOUT_MS = 20_000;
const STOP_GRACE_MS = 15_000;

export interface SidecarProcess {
  child: ChildProcess;
  apiAddress: string;
  metricsUrl: string;
  /** The HTTP/JSON API's base URL ('' when a test turned it off with --http-listen off). */
  httpUrl: string;
  /** The advertised peer (replication) address. */
  peerAddress: string;
  /** Every JSON log line the process wrote to stdout. */
  logs: LogEntry[];
  stderr: string[];
  /** Resolves when the node logged that it is ready (caught up with its peers). */
  ready(): Promise<void>;
  /** Its /metrics, parsed. */
  scrape(): Promise<Scrape>;
  /** `signal` (default SIGTERM), then wait for exit; resolves with the exit code (SIGKILL after `graceMs`, default 15 s). */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<number | null>;
}

export interface StartOptions {
  /** Kill the node and reject if it has not logged its start after this long; default DEFAULT_START_TIMEOUT_MS. */
  startTimeoutMs?: number;
  /**
   * A command the node runs behind, e.g. `['unshare', '-n', 'sh', '-c', '… && exec "$0" "$@"']`;
   * node and its arguments follow it. The addresses returned are then inside that command's world.
   */
  prefix?: readonly string[];
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
  const [command, ...prefixArgs] = [...(options.prefix ?? []), process.execPath];
  const node = await BatonProcess.start({
    name: 'sidecar',
    command: command!,
    args: [...prefixArgs, BATON_BIN, 'sidecar', '--api-listen', '127.0.0.1:0', '--metrics-listen', '127.0.0.1:0', '--http-listen', '127.0.0.1:0', '--peer-listen', '127.0.0.1:0', ...args],
    env: childEnv(env),
    startTimeoutMs: options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS,
  });
  const metricsUrl = `http://127.0.0.1:${node.started.metrics_port}`;
  return {
    child: node.child.process,
    apiAddress: `127.0.0.1:${node.started.api_port}`,
    metricsUrl,
    httpUrl: node.started.http_port === undefined ? '' : `http://127.0.0.1:${node.started.http_port}`,
    peerAddress: String(node.started.peer),
    logs: node.logs,
    stderr: node.stderr,
    ready: () => node.ready(),
    scrape: () => scrape(`${metricsUrl}/metrics`),
    stop: async (signal = 'SIGTERM', graceMs = STOP_GRACE_MS) => (await node.stop(signal, graceMs)).code,
  };
}

/**
 * Runs the baton CLI to completion; for option errors and --help. Rejects (after killing
 * it) if it has not exited within RUN_TIMEOUT_MS.
 */
export function runBaton(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return runToCompletion({ name: `baton ${args.join(' ')}`, command: process.execPath, args: [BATON_BIN, ...args], env: childEnv(env) }, RUN_TIMEOUT_MS);
}
