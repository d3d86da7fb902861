/**
 * Free loopback ports for nodes whose peer address must be known before they start (a
 * static --peers list names every node, so port 0 will not do). A peer port carries both
 * UDP (replication) and TCP (peer gRPC), so a port counts as free only when both bind.
 * "Free" means free a moment ago: the caller binds it soon after, and a rare collision
 * shows up as that node failing to listen. Ports are drawn below the kernel's ephemeral
 * range where it has one (Linux): a port bound with port 0 comes from that range, which is
 * also where every outgoing connection of the machine gets its local port, so one of those
 * could take it in the moment between the check and the node's bind (seen in the benches,
 * whose clients and JVMs open connections while sidecars start).
 */
import * as dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import * as net from 'node:net';

/** Lowest port drawn from, below the ephemeral range. */
const LOWEST_DRAWN = 10_000;

/** The range ports are drawn from ([low, high)), or undefined to let the kernel pick (port 0). */
function drawnRange(): [number, number] | undefined {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > LOWEST_DRAWN + 1000 ? [LOWEST_DRAWN, low] : undefined;
  } catch {
    return undefined;
  }
}

async function tryPort(port: number): Promise<number | undefined> {
  const udp = dgram.createSocket('udp4');
  const udpPort = await new Promise<number | undefined>((resolve) => {
    udp.once('error', () => resolve(undefined));
    udp.bind({ port, address: '127.0.0.1', exclusive: true }, () => resolve(udp.address().port));
  });
  if (udpPort === undefined) {
    udp.close();
    return undefined;
  }
  const tcp = net.createServer();
  const ok = await new Promise<boolean>((resolve) => {
    tcp.once('error', () => resolve(false));
    tcp.listen(udpPort, '127.0.0.1', () => resolve(true));
  });
  await new Promise<void>((resolve) => udp.close(() => resolve()));
  if (ok) await new Promise<void>((resolve) => tcp.close(() => resolve()));
  return ok ? udpPort : undefined;
}

/** n distinct ports free for both TCP and UDP on 127.0.0.1. */
export async function freePeerPorts(n: number): Promise<number[]> {
  const ports: number[] = [];
  const range = drawnRange();
  for (let attempt = 0; ports.length < n && attempt < 100; attempt++) {
    const port = await tryPort(range === undefined ? 0 : range[0] + Math.floor(Math.random() * (range[1] - range[0])));
    if (port !== undefined && !ports.includes(port)) ports.push(port);
  }
  if (ports.length < n) throw new Error('could not find free loopback ports');
  return ports;
}

/** A multicast port: free for UDP on the group. */
export async function freeUdpPort(): Promise<number> {
  const [port] = await freePeerPorts(1);
  return port!;
}
