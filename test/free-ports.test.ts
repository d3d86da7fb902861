/**
 * freePeerPorts: ports for nodes whose peer addresses are fixed before they start, drawn
 * below the kernel's ephemeral range (where outgoing connections take their local ports).
 */
import { readFileSync } from 'node:fs';
import * as dgram from 'node:dgram';
import * as net from 'node:net';
import { freePeerPorts } from '../sidecar/demo/free-ports';

function ephemeralLow(): number | undefined {
  try {
    return Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
  } catch {
    return undefined;
  }
}

async function bindsBoth(port: number): Promise<boolean> {
  const udp = dgram.createSocket('udp4');
  const udpOk = await new Promise<boolean>((resolve) => {
    udp.once('error', () => resolve(false));
    udp.bind({ port, address: '127.0.0.1', exclusive: true }, () => resolve(true));
  });
  const tcp = net.createServer();
  const tcpOk = await new Promise<boolean>((resolve) => {
    tcp.once('error', () => resolve(false));
    tcp.listen(port, '127.0.0.1', () => resolve(true));
  });
  await new Promise<void>((resolve) => (udpOk ? udp.close(() => resolve()) : resolve()));
  await new Promise<void>((resolve) => (tcpOk ? tcp.close(() => resolve()) : resolve()));
  return udpOk && tcpOk;
}

test('gives distinct ports free for both UDP and TCP, below the ephemeral range where the machine has one', async () => {
  const ports = await freePeerPorts(8);
  expect(new Set(ports).size).toBe(8);
  const low = ephemeralLow();
  if (low !== undefined && low > 11_000) for (const port of ports) expect(port).toBeLessThan(low);
  for (const port of ports) expect(await bindsBoth(port)).toBe(true);
});
