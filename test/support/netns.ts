/**
 * A private network of Linux network namespaces for chaos tests, and real `baton sidecar`
 * processes (compiled, from dist/) running inside it.
 *
 * Layout: one "switch" namespace holding a bridge, and one namespace per host with a veth
 * whose other end is on that bridge, an address 10.77.0.N/24, loopback up and a 224.0.0.0/4
 * route (so multicast works too). Nothing is created in the caller's namespace: the test
 * addresses are never routed to the machine. Names carry the creating pid and a random tag,
 * so two runs at once cannot collide; interface names are fixed, as each lives in a
 * namespace of this run.
 *
 * The test process stays outside the namespaces and reaches each node through the file
 * system: the session API listens on a Unix socket, and the node's HTTP endpoints
 * (127.0.0.1:9464 inside its namespace) are forwarded to a Unix socket by a small process
 * started in that namespace. Fixed ports are safe here: every namespace has its own.
 *
 * Rules:
 * - A partition is nftables drop rules in the cut-off host's namespace for everything to
 *   and from the named peers, both directions: packets vanish silently, as on a real
 *   network, instead of the immediate errors a downed link would give senders.
 * - Every process started here is ended by destroy() (SIGKILL for any still running), and
 *   by an exit hook as a last resort; destroy() then deletes every namespace and the
 *   socket directory. Namespaces left by a run that was killed outright are deleted by the
 *   next run, once their creator's pid is gone. Nodes get a clean environment: the caller's BATON_* variables are not
 *   passed on.
 * - Every external command runs with a time-out; waiting is polling with a bound.
 */
import { execFile, execFileSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, unlinkSync } from 'node:fs';
import * as http from 'node:http';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { credentials, Metadata } from '@grpc/grpc-js';
import { BatonProcess, type LogEntry } from '../../bench/support/baton-process';
import { spawnChild, type ChildHandle, type StopResult } from '../../bench/support/child-process';
import { Scrape } from '../../bench/support/prometheus-scrape';
import { BatonClient } from '../../src/client/client';
import { ClusterServiceClient, type StatusResponse } from '../../src/gen/baton/v1/cluster';

export const BATON_BIN = path.join(__dirname, '..', '..', 'dist', 'sidecar', 'cli', 'main.js');

/** Port of the node's HTTP endpoints (/metrics, /healthz, /readyz) inside its namespace. */
const METRICS_PORT = 9464;
/** Peer (UDP replication and peer gRPC) port inside each namespace. */
export const PEER_PORT = 7401;
const SUBNET = '10.77.0';
const COMMAND_TIMEOUT_MS = 10_000;
const START_TIMEOUT_MS = 15_000;
const STATUS_DEADLINE_MS = 1000;
const HTTP_TIMEOUT_MS = 1000;
const NFT_TABLE = 'baton_chaos';

export type { StopResult };

/** Namespaces made here and not yet deleted, for the exit hook (child-process.ts kills the processes). */
const liveNamespaces = new Set<string>();
process.on('exit', () => {
  for (const ns of liveNamespaces) {
    try {
      execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore', timeout: COMMAND_TIMEOUT_MS });
    } catch {
      // Best effort: the process is exiting.
    }
  }
});

/** Runs a command to completion; rejects with its stderr when it fails. */
function run(command: string, args: readonly string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(command, args, { timeout: COMMAND_TIMEOUT_MS }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${command} ${args.join(' ')}: ${stderr.trim() || err.message}`));
      else resolve(stdout);
    });
    if (input !== undefined) child.stdin!.end(input);
  });
}

function commandWorks(command: string, args: readonly string[]): string | undefined {
  try {
    execFileSync(command, args, { stdio: ['ignore', 'ignore', 'pipe'], timeout: COMMAND_TIMEOUT_MS });
    return undefined;
  } catch (err) {
    const e = err as { code?: string; stderr?: Buffer; message: string };
    if (e.code === 'ENOENT') return `\`${command}\` is not installed`;
    return `\`${command} ${args.join(' ')}\` failed: ${e.stderr?.toString().trim() || e.message}`;
  }
}

/**
 * Why network namespaces cannot be made here (not root, no `ip`, no netns support), or
 * undefined when they can. Tries for real: creates and deletes a namespace.
 */
export function namespacesUnavailable(): string | undefined {
  if (process.platform !== 'linux') return `network namespaces need Linux (this is ${process.platform})`;
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return 'network namespaces need root (CI runs as root)';
  const probe = `baton-probe-${process.pid}-${randomBytes(3).toString('hex')}`;
  const failed = commandWorks('ip', ['netns', 'add', probe]);
  if (failed !== undefined) return failed;
  commandWorks('ip', ['netns', 'del', probe]);
  return undefined;
}

/**
 * Deletes the namespaces of earlier runs whose process is gone (killed before its exit
 * hook could run), so they do not pile up on a machine that is kept between sessions.
 */
async function deleteOrphanedNamespaces(): Promise<void> {
  const list = await run('ip', ['netns', 'list']);
  for (const match of list.matchAll(/^(baton-chaos-(\d+)-\S+)/gm)) {
    const [, ns, pid] = match;
    if (processAlive(Number(pid))) continue;
    await run('ip', ['netns', 'del', ns!]).catch(() => undefined);
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Why nftables rules cannot be used here (Debian package `nftables`), or undefined. */
export function nftablesUnavailable(): string | undefined {
  const missing = commandWorks('nft', ['--version']);
  return missing === undefined ? undefined : `${missing} (Debian package nftables)`;
}

export interface LabHost {
  /** The test's name for the host; also the baton node id run on it. */
  readonly label: string;
  readonly netns: string;
  readonly address: string;
  /** Unix socket of the node's session API. */
  readonly apiSocket: string;
  /** Unix socket forwarded to the node's HTTP endpoints. */
  readonly httpSocket: string;
}

export class NetnsLab {
  private readonly switchNs: string;
  private readonly processes = new Set<ChildHandle>();
  private readonly namespaces: string[] = [];
  private destroyed = false;

  private constructor(
    readonly hosts: readonly LabHost[],
    private readonly socketDir: string,
    prefix: string,
  ) {
    this.switchNs = `${prefix}-switch`;
  }

  /** Creates the switch and one namespace per label (at most 250), each on the bridge. */
  static async create(labels: readonly string[]): Promise<NetnsLab> {
    await deleteOrphanedNamespaces();
    const prefix = `baton-chaos-${process.pid}-${randomBytes(3).toString('hex')}`;
    const socketDir = mkdtempSync(path.join(tmpdir(), 'baton-chaos-'));
    const hosts = labels.map((label, i) => ({
      label,
      netns: `${prefix}-${label}`,
      address: `${SUBNET}.${i + 1}`,
      apiSocket: path.join(socketDir, `${label}-api.sock`),
      httpSocket: path.join(socketDir, `${label}-http.sock`),
    }));
    const lab = new NetnsLab(hosts, socketDir, prefix);
    try {
      await lab.addNamespace(lab.switchNs);
      await run('ip', ['-n', lab.switchNs, 'link', 'add', 'br0', 'type', 'bridge', 'mcast_snooping', '0']);
      await run('ip', ['-n', lab.switchNs, 'link', 'set', 'br0', 'up']);
      for (const [i, host] of hosts.entries()) {
        await lab.addNamespace(host.netns);
        await run('ip', ['-n', lab.switchNs, 'link', 'add', `v${i}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', host.netns]);
        await run('ip', ['-n', lab.switchNs, 'link', 'set', `v${i}`, 'master', 'br0', 'up']);
        await run('ip', ['-n', host.netns, 'link', 'set', 'lo', 'up']);
        await run('ip', ['-n', host.netns, 'addr', 'add', `${host.address}/24`, 'dev', 'eth0']);
        await run('ip', ['-n', host.netns, 'link', 'set', 'eth0', 'up']);
        await run('ip', ['-n', host.netns, 'route', 'add', '224.0.0.0/4', 'dev', 'eth0']);
        await lab.startHttpForwarder(host);
      }
    } catch (err) {
      await lab.destroy();
      throw err;
    }
    return lab;
  }

  host(label: string): LabHost {
    const host = this.hosts.find((h) => h.label === label);
    if (host === undefined) throw new Error(`no host ${label}`);
    return host;
  }

  /** host:port of every host's peer address, for --peers. */
  peerList(): string {
    return this.hosts.map((h) => `${h.address}:${PEER_PORT}`).join(',');
  }

  /** Drops every packet between `label` and each of `from`, both directions (replaces an earlier partition of `label`). */
  async partition(label: string, from: readonly string[]): Promise<void> {
    const host = this.host(label);
    const peers = from.map((l) => this.host(l).address).join(', ');
    await this.heal(label);
    await run(
      'ip',
      ['netns', 'exec', host.netns, 'nft', '-f', '-'],
      `table inet ${NFT_TABLE} {
        chain input { type filter hook input priority 0; policy accept; ip saddr { ${peers} } counter drop; }
        chain output { type filter hook output priority 0; policy accept; ip daddr { ${peers} } counter drop; }
      }\n`,
    );
  }

  /** Packets the partition rules of `label` dropped so far, both directions together. */
  async droppedPackets(label: string): Promise<number> {
    const text = await run('ip', ['netns', 'exec', this.host(label).netns, 'nft', 'list', 'table', 'inet', NFT_TABLE]);
    return [...text.matchAll(/counter packets (\d+)/g)].reduce((sum, m) => sum + Number(m[1]), 0);
  }

  /** Removes the partition rules of `label`, if any. */
  async heal(label: string): Promise<void> {
    const ns = this.host(label).netns;
    const tables = await run('ip', ['netns', 'exec', ns, 'nft', 'list', 'tables']);
    if (tables.includes(`inet ${NFT_TABLE}`)) await run('ip', ['netns', 'exec', ns, 'nft', 'delete', 'table', 'inet', NFT_TABLE]);
  }

  /**
   * Starts `baton sidecar` on host `label` (node id = label, peer address on its veth,
   * API and HTTP endpoints reached through Unix sockets); `args` follow the fixed flags.
   * Resolves once the node logged that it started.
   */
  async startBaton(label: string, args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<NamespacedBaton> {
    if (this.destroyed) throw new Error('the lab is destroyed');
    const host = this.host(label);
    // A node that was killed leaves its socket file behind, and the API would not bind.
    if (existsSync(host.apiSocket)) unlinkSync(host.apiSocket);
    const node = await BatonProcess.start({
      ...this.inNamespace(host, [
        process.execPath,
        BATON_BIN,
        'sidecar',
        '--node-id', label,
        '--api-listen', `unix:${host.apiSocket}`,
        '--metrics-listen', `127.0.0.1:${METRICS_PORT}`,
        '--peer-listen', `${host.address}:${PEER_PORT}`,
        '--log-level', 'info',
        ...args,
      ], env),
      name: `baton on ${label}`,
      startTimeoutMs: START_TIMEOUT_MS,
    });
    this.track(node.child);
    return new NamespacedBaton(host, node);
  }

  /** Ends every process still running (SIGKILL), deletes the namespaces and the socket directory. Idempotent. */
  async destroy(): Promise<void> {
    this.destroyed = true;
    await Promise.all([...this.processes].map((child) => child.stop('SIGKILL')));
    const errors: string[] = [];
    for (const ns of this.namespaces.splice(0).reverse()) {
      await run('ip', ['netns', 'del', ns]).then(
        () => liveNamespaces.delete(ns),
        (err: Error) => errors.push(err.message),
      );
    }
    rmSync(this.socketDir, { recursive: true, force: true });
    if (errors.length > 0) throw new Error(`could not delete every namespace: ${errors.join('; ')}`);
  }

  private async addNamespace(ns: string): Promise<void> {
    await run('ip', ['netns', 'add', ns]);
    this.namespaces.push(ns);
    liveNamespaces.add(ns);
  }

  /**
   * The command line and environment of `argv` run in the host's namespace: the caller's
   * BATON_* variables are not passed on. `ip netns exec` execs the command, so the child's
   * pid is the command's own.
   */
  private inNamespace(host: LabHost, argv: readonly string[], env: NodeJS.ProcessEnv): { command: string; args: string[]; env: NodeJS.ProcessEnv } {
    const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('BATON_')));
    return { command: 'ip', args: ['netns', 'exec', host.netns, ...argv], env: { ...base, ...env } };
  }

  /** Remembers a child until it ends, for destroy(). */
  private track(child: ChildHandle): void {
    this.processes.add(child);
    void child.exit.then(() => this.processes.delete(child));
  }

  /**
   * A process in the host's namespace that forwards connections on host.httpSocket to
   * the node's HTTP port. It exits when its stdin closes, so it cannot outlive the test.
   */
  private async startHttpForwarder(host: LabHost): Promise<void> {
    const code = `
      const net = require('node:net');
      const [socket, port] = process.argv.slice(1);
      process.stdin.on('end', () => process.exit(0)).resume();
      net.createServer((c) => {
        const u = net.connect(Number(port), '127.0.0.1');
        c.pipe(u).pipe(c);
        u.on('error', () => c.destroy());
        c.on('error', () => u.destroy());
      }).listen(socket, () => console.log('listening'));`;
    const child = spawnChild({
      ...this.inNamespace(host, [process.execPath, '-e', code, host.httpSocket, String(METRICS_PORT)], {}),
      name: `the HTTP forwarder in ${host.netns}`,
      stdin: 'pipe',
    });
    this.track(child);
    await child.waitFor((line) => (line === 'listening' ? true : undefined), COMMAND_TIMEOUT_MS, 'listen');
  }
}

/** A `baton sidecar` running in a lab namespace. */
export class NamespacedBaton {
  readonly client: BatonClient;

  constructor(
    readonly host: LabHost,
    private readonly node: BatonProcess,
  ) {
    this.client = new BatonClient(`unix:${host.apiSocket}`);
  }

  get child(): ChildProcess {
    return this.node.child.process;
  }

  /** Every JSON log line the process wrote to stdout. */
  get logs(): LogEntry[] {
    return this.node.logs;
  }

  get stderr(): string[] {
    return this.node.stderr;
  }

  get label(): string {
    return this.host.label;
  }

  get running(): boolean {
    return this.node.running;
  }

  /** The HTTP status of GET `path` (e.g. /readyz), or undefined when the node does not answer. */
  httpStatus(urlPath: string): Promise<number | undefined> {
    return new Promise((resolve) => {
      const request = http.get({ socketPath: this.host.httpSocket, path: urlPath, timeout: HTTP_TIMEOUT_MS }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode));
        res.on('error', () => resolve(undefined));
      });
      request.on('timeout', () => request.destroy());
      request.on('error', () => resolve(undefined));
    });
  }

  /** The GET `path` body, or undefined when the node does not answer. */
  httpText(urlPath: string): Promise<string | undefined> {
    return new Promise((resolve) => {
      const request = http.get({ socketPath: this.host.httpSocket, path: urlPath, timeout: HTTP_TIMEOUT_MS }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve(body));
        res.on('error', () => resolve(undefined));
      });
      request.on('timeout', () => request.destroy());
      request.on('error', () => resolve(undefined));
    });
  }

  /** Its /metrics, parsed (empty when the node does not answer). */
  async scrape(): Promise<Scrape> {
    return Scrape.parse((await this.httpText('/metrics')) ?? '');
  }

  async status(): Promise<StatusResponse> {
    const client = new ClusterServiceClient(`unix:${this.host.apiSocket}`, credentials.createInsecure());
    try {
      return await new Promise<StatusResponse>((resolve, reject) =>
        client.status({}, new Metadata(), { deadline: Date.now() + STATUS_DEADLINE_MS }, (err, response) => (err ? reject(err) : resolve(response))),
      );
    } finally {
      client.close();
    }
  }

  /** node id → member state ('alive', 'suspect', 'dead', …) as this node sees it; empty when it does not answer. */
  async memberStates(): Promise<Record<string, string>> {
    const status = await this.status().catch(() => undefined);
    return Object.fromEntries((status?.members ?? []).map((m) => [m.nodeId, m.state]));
  }

  /**
   * Sends `signal` and waits for the exit; SIGKILL after `graceMs`. The client is closed
   * after the exit, so answers the node sent before it died are still read.
   */
  async stop(signal: NodeJS.Signals = 'SIGTERM', graceMs = 10_000): Promise<StopResult> {
    const result = await this.node.stop(signal, graceMs);
    this.client.close();
    return result;
  }

  /** The last `n` log lines, for failure messages. */
  logTail(n = 15): string {
    return this.node.logTail(n);
  }
}
