/**
 * Starts the real `baton sidecar` (compiled, from dist/) on free loopback ports and stops
 * it. Every process started here is killed by stop(), and by an exit hook as a last resort.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import * as readline from 'node:readline';

export const BATON_BIN = path.join(__dirname, '..', '..', 'dist', 'sidecar', 'main.js');

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

/** Needs the "baton node started" log line: --log-level must be info or more verbose. */
export async function startSidecar(args: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<SidecarProcess> {
  const child = spawn(
    process.execPath,
    [BATON_BIN, 'sidecar', '--api-listen', '127.0.0.1:0', '--metrics-listen', '127.0.0.1:0', '--peer-listen', '127.0.0.1:0', ...args],
    { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] },
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
    void exited.then((code) => reject(new Error(`sidecar exited with ${code} before starting: ${stderr.join('\n')}`)));
  });
  const entry = await started;
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
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

/** Runs the baton CLI to completion; for option errors and --help. */
export function runBaton(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BATON_BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    running.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.once('exit', (code) => {
      clearTimeout(timer);
      running.delete(child);
      resolve({ code, stdout, stderr });
    });
  });
}
