/**
 * The raw ceiling of bench:replication: a plain node:dgram sender in this process sends
 * datagrams flat out to three receiver processes (bench/udp-sink.ts, 4 MiB receive
 * buffers), by unicast to each or by multicast to a group they join, and each receiver's
 * datagrams/s is read over its stdin/stdout. What baton's replication is compared with.
 * The sender stops at its deadline; the receivers are stopped in a finally.
 */
import { randomBytes } from 'node:crypto';
import * as dgram from 'node:dgram';
import * as path from 'node:path';
import { interruption, sleep, startChild, type Child } from './children';
import { freePeerPorts, type Transport } from './replication-cluster';

export interface RawResult {
  transport: Transport;
  size: number;
  sentPerSecond: number;
  perReceiver: number[];
}

export async function rawCeiling(transport: Transport, size: number, seconds: number): Promise<RawResult> {
  const sinks: Child[] = [];
  const socket = dgram.createSocket({ type: 'udp4', sendBufferSize: 4 * 1024 * 1024 });
  try {
    const [groupPort] = await freePeerPorts(1);
    const group = `239.254.${(groupPort! >> 8) & 0xff}.${groupPort! & 0xff}`;
    const destinations: { host: string; port: number }[] = [];
    const sinkMain = path.join(__dirname, 'udp-sink.js');
    for (let i = 0; i < 3; i++) {
      const args = transport === 'multicast' ? [sinkMain, 'multicast', group, String(groupPort)] : [sinkMain, 'unicast'];
      const sink = startChild(`udp-sink ${i + 1}`, process.execPath, args);
      sinks.push(sink);
      const [, port] = await sink.waitForLine(/^READY (\d+)$/, 10_000);
      if (transport === 'unicast') destinations.push({ host: '127.0.0.1', port: Number(port) });
    }
    if (transport === 'multicast') destinations.push({ host: group, port: groupPort! });
    await new Promise<void>((resolve) => socket.bind({ port: 0, address: '127.0.0.1' }, resolve));
    if (transport === 'multicast') {
      socket.setMulticastInterface('127.0.0.1');
      socket.setMulticastLoopback(true);
      socket.setMulticastTTL(1);
    }
    const payload = randomBytes(size);
    let inFlight = 0;
    let sent = 0;
    let running = true;
    const MAX_IN_FLIGHT = 256;
    const pump = async () => {
      const until = Date.now() + (seconds + 2) * 1000;
      while (running && !interruption.requested && Date.now() < until) {
        for (let i = 0; i < 64 && inFlight < MAX_IN_FLIGHT; i++) {
          for (const d of destinations) {
            inFlight++;
            socket.send(payload, d.port, d.host, () => {
              inFlight--;
              sent++;
            });
          }
        }
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
    };
    const count = async () =>
      Promise.all(
        sinks.map(async (s) => {
          const line = s.waitForLine(/^COUNT (\d+) (\d+) (\d+)$/, 10_000);
          s.process.stdin!.write('count\n');
          const m = await line;
          return { datagrams: Number(m[1]), ns: BigInt(m[3]!) };
        }),
      );
    const pumping = pump();
    await sleep(500);
    const a = await count();
    const sentA = sent;
    const tA = process.hrtime.bigint();
    await sleep(seconds * 1000);
    const b = await count();
    const sentB = sent;
    const tB = process.hrtime.bigint();
    running = false;
    await pumping;
    return {
      transport,
      size,
      sentPerSecond: (sentB - sentA) / (Number(tB - tA) / 1e9),
      perReceiver: b.map((x, i) => (x.datagrams - a[i]!.datagrams) / (Number(x.ns - a[i]!.ns) / 1e9)),
    };
  } finally {
    socket.close();
    for (const s of sinks) {
      s.process.stdin!.end();
      await s.stop(2000);
    }
  }
}
