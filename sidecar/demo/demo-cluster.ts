/**
 * The demo's processes: baton nodes (real `baton sidecar` child processes on loopback that
 * know each other through a static --peers list and share a freshly generated cluster key)
 * and the shop pods beside them (`baton demo-shop` child processes).
 *
 * Rules:
 * - Every child started here is stopped by stop() (SIGTERM, SIGKILL after a grace period)
 *   and, as a last resort, killed when this process exits, so an interrupted demo leaves
 *   nothing behind.
 * - A child's stdout and stderr are read continuously (a full pipe would stall the node);
 *   the last lines are kept for error messages and never printed otherwise.
 * - The children get none of this process's BATON_* variables: a shell set up for a real
 *   node must not change what the demo runs.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as readline from 'node:readline';
import { credentials, Metadata } from '@grpc/grpc-js';
import { ClusterServiceClient, type StatusResponse } from '../../src/gen/baton/v1/cluster';
import { CLUSTER_KEY_ENV } from '../config/config';
import { freePeerPorts } from './free-ports';

const OUTPUT_LINES_KEPT = 30;
const STATUS_POLL_MS = 100;
const STATUS_DEADLINE_MS = 1000;

const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

export interface DemoProcess {
  readonly id: string;
  readonly pid: number;
  /** The last lines the process wrote, for error messages. */
  readonly output: string[];
  /** How the process ended ("code 0", "signal SIGKILL"), or undefined while it runs. */
  exit: string | undefined;
}

export interface DemoNode extends DemoProcess {
  /** host:port of the session API (gRPC), known once the node has started. */
  apiAddress: string;
  /** host:port peers replicate to. */
  readonly peerAddress: string;
  /** The capture proxy's port, when the node runs one; known once the node has started. */
  proxyPort: number | undefined;
  /** Set once the node logged that it is ready (caught up, holding the TLS ticket keys). */
  ready: boolean;
}

interface Running {
  process: DemoProcess;
  child: ChildProcess;
  exited: Promise<string>;
}

export class DemoCluster {
  readonly nodes: DemoNode[] = [];
  readonly shops: DemoProcess[] = [];
  private readonly children = new Map<string, Running>();

  /** `batonBin`: the compiled CLI (dist/sidecar/cli/main.js). */
  constructor(private readonly batonBin: string) {}

  /**
   * Starts `ids.length` nodes at once and resolves when every one has logged
   * "baton node started"; rejects (naming the node and its last output) if one exits first
   * or does not start within timeoutMs. `extraArgs(i)`: more flags for node i.
   */
  async start(ids: readonly string[], timeoutMs: number, extraArgs: (i: number) => string[] = () => []): Promise<void> {
    const ports = await freePeerPorts(ids.length);
    const peers = ports.map((port) => `127.0.0.1:${port}`).join(',');
    const env = withoutBatonVariables(process.env);
    env[CLUSTER_KEY_ENV] = randomBytes(32).toString('base64');
    await Promise.all(ids.map((id, i) => this.startNode(id, `127.0.0.1:${ports[i]}`, peers, env, timeoutMs, extraArgs(i))));
  }

  /**
   * Starts `baton demo-shop --behind-proxy` as pod `id` on 127.0.0.1:`port`, keeping its
   * sessions in `node`; resolves once it serves.
   */
  async startShop(id: string, port: number, node: DemoNode, timeoutMs: number): Promise<DemoProcess> {
    const args = [this.batonBin, 'demo-shop', '--listen', `127.0.0.1:${port}`, '--api', node.apiAddress, '--pod', id, '--behind-proxy'];
    const { process: shop, started } = this.spawnChild({ id, pid: -1, output: [], exit: undefined }, args, withoutBatonVariables(process.env), timeoutMs, (line) =>
      line.startsWith(`baton demo-shop ${id}: serving `),
    );
    this.shops.push(shop);
    await started;
    return shop;
  }

  /** Polls ClusterService/Status until every node sees every node alive; rejects after timeoutMs. */
  async waitUntilFormed(timeoutMs: number): Promise<void> {
    const clients = this.nodes.map((node) => new ClusterServiceClient(node.apiAddress, credentials.createInsecure()));
    const deadline = Date.now() + timeoutMs;
    let last = '';
    try {
      for (;;) {
        const statuses = await Promise.all(clients.map((client) => status(client).catch((err: Error) => err)));
        const views = statuses.map((s, i) => {
          const id = this.nodes[i]!.id;
          if (s instanceof Error) return { id, alive: -1, text: `${id}: ${s.message}` };
          const alive = s.members.filter((m) => m.state === 'alive').length;
          return { id, alive, text: `${id} sees ${alive} alive` };
        });
        if (views.every((v) => v.alive === this.nodes.length)) return;
        last = views.map((v) => v.text).join(', ');
        if (Date.now() > deadline) throw new Error(`the cluster did not form within ${timeoutMs} ms (${last})`);
        await new Promise((resolve) => setTimeout(resolve, STATUS_POLL_MS));
      }
    } finally {
      for (const client of clients) client.close();
    }
  }

  /** Resolves once every node logged that it is ready; rejects after timeoutMs, naming the nodes that are not. */
  async waitUntilReady(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.nodes.every((node) => node.ready)) {
      if (Date.now() > deadline) {
        const late = this.nodes.filter((node) => !node.ready).map((node) => node.id);
        throw new Error(`${late.join(', ')} did not report ready within ${timeoutMs} ms`);
      }
      await new Promise((resolve) => setTimeout(resolve, STATUS_POLL_MS));
    }
  }

  /** SIGKILL: the node or shop dies at once, as in a crash; resolves when it is gone. */
  async kill(id: string): Promise<void> {
    const entry = this.children.get(id);
    if (entry === undefined) throw new Error(`no demo process ${id}`);
    entry.child.kill('SIGKILL');
    await entry.exited;
  }

  /** Stops every process still running: SIGTERM, then SIGKILL after graceMs. */
  async stop(graceMs: number): Promise<void> {
    await Promise.all(
      [...this.children.values()].map(async ({ process: running, child, exited }) => {
        if (running.exit !== undefined) return;
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
        await exited;
        clearTimeout(timer);
      }),
    );
  }

  private startNode(id: string, peerAddress: string, peers: string, env: NodeJS.ProcessEnv, timeoutMs: number, extraArgs: string[]): Promise<void> {
    const args = [
      this.batonBin, 'sidecar',
      '--node-id', id,
      '--api-listen', '127.0.0.1:0',
      '--metrics-listen', '127.0.0.1:0',
      '--http-listen', '127.0.0.1:0',
      '--peer-listen', peerAddress,
      '--peers', peers,
      '--log-level', 'info',
      ...extraArgs,
    ];
    const node: DemoNode = { id, pid: -1, apiAddress: '', peerAddress, proxyPort: undefined, ready: false, output: [], exit: undefined };
    this.nodes.push(node);
    const { started } = this.spawnChild(node, args, env, timeoutMs, (line) => {
      const entry = parseLogLine(line);
      if (entry?.msg === 'baton node ready') node.ready = true;
      if (entry?.msg !== 'baton node started' || node.apiAddress !== '') return false;
      node.apiAddress = `127.0.0.1:${String(entry.api_port)}`;
      if (typeof entry.proxy_port === 'number') node.proxyPort = entry.proxy_port;
      return true;
    });
    return started;
  }

  /**
   * Spawns `node args` for `record` (whose pid and exit it fills in); `started` resolves at
   * the first stdout line `isStarted` accepts (every line is offered to it) and rejects if
   * the child exits first or timeoutMs passes.
   */
  private spawnChild<P extends DemoProcess>(
    record: P,
    args: string[],
    env: NodeJS.ProcessEnv,
    timeoutMs: number,
    isStarted: (line: string) => boolean,
  ): { process: P; started: Promise<void> } {
    const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    running.add(child);
    (record as { pid: number }).pid = child.pid ?? -1;
    const keep = (line: string) => {
      record.output.push(line);
      if (record.output.length > OUTPUT_LINES_KEPT) record.output.shift();
    };
    const exited = new Promise<string>((resolve) => {
      const done = (how: string) => {
        running.delete(child);
        record.exit ??= how;
        resolve(record.exit);
      };
      child.once('exit', (code, signal) => done(signal !== null ? `signal ${signal}` : `code ${code}`));
      child.once('error', (err) => done(`spawn error: ${err.message}`));
    });
    this.children.set(record.id, { process: record, child, exited });
    readline.createInterface({ input: child.stderr! }).on('line', keep);
    const started = new Promise<void>((resolve, reject) => {
      let done = false;
      const timer = setTimeout(() => reject(new Error(`${record.id} did not start within ${timeoutMs} ms${lastLines(record)}`)), timeoutMs);
      readline.createInterface({ input: child.stdout! }).on('line', (line) => {
        keep(line);
        if (!isStarted(line) || done) return;
        done = true;
        clearTimeout(timer);
        resolve();
      });
      void exited.then((how) => {
        clearTimeout(timer);
        reject(new Error(`${record.id} exited (${how}) before it started${lastLines(record)}`));
      });
    });
    return { process: record, started };
  }
}

function status(client: ClusterServiceClient): Promise<StatusResponse> {
  return new Promise((resolve, reject) => {
    client.status({}, new Metadata(), { deadline: Date.now() + STATUS_DEADLINE_MS }, (err, response) => (err ? reject(err) : resolve(response)));
  });
}

function withoutBatonVariables(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(env).filter(([name]) => !name.startsWith('BATON_')));
}

function parseLogLine(line: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(line);
    return typeof value === 'object' && value !== null ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

function lastLines(record: DemoProcess): string {
  return record.output.length === 0 ? '' : `; its last output:\n  ${record.output.join('\n  ')}`;
}
