/**
 * A routed network of namespaces for TCP handover tests: a router namespace with one link
 * to each host (client, a, b), each on its own /24, and a virtual address (VIP) configured
 * on the loopback of a and b and routed by the router to one of them. Moving the VIP is one
 * `ip route replace` in the router namespace, as a handover hook does.
 *
 *   client 10.78.1.1 ── router ── a 10.78.2.1 (VIP on lo)
 *                         └────── b 10.78.3.1 (VIP on lo)
 *
 * Rules:
 * - Nothing is created in the caller's namespace; names carry the pid and a random tag and
 *   the `baton-chaos-` prefix, so netns.ts deletes them after a run that was killed outright.
 * - `enter(label)` moves the test process's main thread into a namespace (setns): sockets
 *   it makes from then on live there. Node makes a client socket's descriptor on the next
 *   tick after `connect()`, so callers stay in the namespace until it exists
 *   (`connectIn` does this). `leave()` goes back home.
 * - destroy() deletes every namespace (an exit hook does it as a last resort) and returns
 *   the process to its own namespace first.
 */
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import * as net from 'node:net';
import { loadSocketSyscalls, type SocketSyscalls } from '../../sidecar/net/socket-syscalls';

const COMMAND_TIMEOUT_MS = 10_000;
export const VIP = '10.78.9.1';
export type HostLabel = 'client' | 'a' | 'b';
const HOSTS: ReadonlyArray<{ label: HostLabel; index: number }> = [
  { label: 'client', index: 1 },
  { label: 'a', index: 2 },
  { label: 'b', index: 3 },
];

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

export function run(command: string, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { timeout: COMMAND_TIMEOUT_MS }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${command} ${args.join(' ')}: ${stderr.trim() || err.message}`));
      else resolve(stdout);
    });
  });
}

/** Why the process cannot switch namespaces itself (no koffi), or undefined. */
export function setnsUnavailable(): string | undefined {
  const loaded = loadSocketSyscalls();
  return loaded.syscalls === undefined ? loaded.reason : undefined;
}

export class HandoverLab {
  private readonly homeFd: number;
  private destroyed = false;

  private constructor(
    private readonly prefix: string,
    private readonly sys: SocketSyscalls,
  ) {
    this.homeFd = openSync('/proc/self/ns/net', 'r');
  }

  static async create(): Promise<HandoverLab> {
    const loaded = loadSocketSyscalls();
    if (loaded.syscalls === undefined) throw new Error(loaded.reason);
    const lab = new HandoverLab(`baton-chaos-${process.pid}-${randomBytes(3).toString('hex')}`, loaded.syscalls);
    try {
      const router = lab.netns('router');
      await lab.addNamespace(router);
      await run('ip', ['-n', router, 'link', 'set', 'lo', 'up']);
      await run('ip', ['netns', 'exec', router, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
      for (const { label, index } of HOSTS) {
        const ns = lab.netns(label);
        await lab.addNamespace(ns);
        await run('ip', ['-n', router, 'link', 'add', `r${label}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
        await run('ip', ['-n', router, 'addr', 'add', `10.78.${index}.254/24`, 'dev', `r${label}`]);
        await run('ip', ['-n', router, 'link', 'set', `r${label}`, 'up']);
        await run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
        await run('ip', ['-n', ns, 'addr', 'add', `10.78.${index}.1/24`, 'dev', 'eth0']);
        await run('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
        await run('ip', ['-n', ns, 'route', 'add', 'default', 'via', `10.78.${index}.254`]);
        if (label !== 'client') await run('ip', ['-n', ns, 'addr', 'add', `${VIP}/32`, 'dev', 'lo']);
      }
      await lab.routeVipTo('a');
    } catch (err) {
      await lab.destroy();
      throw err;
    }
    return lab;
  }

  netns(label: HostLabel | 'router'): string {
    return `${this.prefix}-${label}`;
  }

  address(label: HostLabel): string {
    return `10.78.${HOSTS.find((h) => h.label === label)!.index}.1`;
  }

  /** The router's command that sends the VIP's traffic to `label` (what a handover hook runs). */
  routeCommand(label: 'a' | 'b'): string[] {
    return ['ip', 'netns', 'exec', this.netns('router'), 'ip', 'route', 'replace', `${VIP}/32`, 'via', this.address(label)];
  }

  async routeVipTo(label: 'a' | 'b'): Promise<void> {
    const [command, ...args] = this.routeCommand(label);
    await run(command!, args);
  }

  /** Runs a command in a namespace. */
  exec(label: HostLabel | 'router', argv: readonly string[]): Promise<string> {
    return run('ip', ['netns', 'exec', this.netns(label), ...argv]);
  }

  /** The test process makes its sockets in `label`'s namespace from now on. */
  enter(label: HostLabel): void {
    const fd = openSync(`/var/run/netns/${this.netns(label)}`, 'r');
    try {
      this.sys.enterNetworkNamespace(fd);
    } finally {
      closeSync(fd);
    }
  }

  leave(): void {
    this.sys.enterNetworkNamespace(this.homeFd);
  }

  /** A TCP server listening in `label`'s namespace on host:port (0 = any port); resolves once bound. */
  async listenIn(label: HostLabel, server: net.Server, host: string, port: number): Promise<number> {
    // listen() looks the host up first (even an IP literal), and binds after: stay until bound.
    this.enter(label);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('listening', () => resolve()).once('error', reject);
        server.listen(port, host);
      });
    } finally {
      this.leave();
    }
    return (server.address() as net.AddressInfo).port;
  }

  /** A client connection made from `label`'s namespace; resolves once connected. */
  async connectIn(label: HostLabel, host: string, port: number): Promise<net.Socket> {
    this.enter(label);
    let socket: net.Socket;
    try {
      socket = net.connect({ host, port });
      // The descriptor is made on the next tick: stay until it exists.
      await new Promise<void>((resolve) => setImmediate(resolve));
    } finally {
      this.leave();
    }
    await new Promise<void>((resolve, reject) => {
      if (!socket.connecting) resolve();
      else socket.once('connect', () => resolve()).once('error', reject);
    });
    return socket;
  }

  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    try {
      this.leave();
    } finally {
      closeSync(this.homeFd);
    }
    const errors: string[] = [];
    for (const ns of [...liveNamespaces].filter((n) => n.startsWith(this.prefix))) {
      await run('ip', ['netns', 'del', ns]).then(
        () => liveNamespaces.delete(ns),
        (err: Error) => errors.push(err.message),
      );
    }
    if (errors.length > 0) throw new Error(`could not delete every namespace: ${errors.join('; ')}`);
  }

  private async addNamespace(ns: string): Promise<void> {
    await run('ip', ['netns', 'add', ns]);
    liveNamespaces.add(ns);
  }
}
