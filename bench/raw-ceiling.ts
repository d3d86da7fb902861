/**
 * The raw ceiling of bench:replication: a sender in this process sends datagrams flat out
 * to three receiver processes (bench/udp-sink.ts, 4 MiB receive buffers), by unicast to
 * each or by multicast to a group they join, and each receiver's datagrams/s is read over
 * its stdin/stdout. What baton's replication is compared with. The sender is plain
 * node:dgram, or baton's own batches (sidecar/net/udp-batch.ts): sendmmsg, or sendmmsg of
 * segmented sends (UDP_SEGMENT, as many datagrams of the size as 65,000 bytes hold); with
 * the kernel's CPU per datagram of the sender and of each receiver (system time ÷
 * datagrams). The sender stops at its deadline; the receivers are stopped in a finally.
 */
import { randomBytes } from 'node:crypto';
import * as dgram from 'node:dgram';
import * as path from 'node:path';
import { batchDestination, loadBatchSender, MAX_SEGMENTED_BYTES, MAX_SEGMENTS } from '../sidecar/net/udp-batch';
import { cpuSecondsOf, interruption, ownCpuSeconds, sleep, startChild, type Child } from './children';
import { freePeerPorts, type Transport } from './replication-cluster';

/** node:dgram's send per datagram, baton's sendmmsg batches, or batches of segmented sends. */
export type RawSender = 'dgram' | 'sendmmsg' | 'segmented';

export interface RawResult {
  transport: Transport;
  size: number;
  sender: RawSender;
  sentPerSecond: number;
  perReceiver: number[];
  /** System CPU µs per datagram sent (the sender), and per datagram received (each receiver). */
  senderKernelUs: number;
  receiverKernelUs: number[];
}

export async function rawCeiling(transport: Transport, size: number, seconds: number, sender: RawSender = 'dgram'): Promise<RawResult> {
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
    const batch = sender === 'dgram' ? undefined : loadBatchSender(socket, sender === 'segmented');
    if (batch !== undefined && batch.sender === undefined) throw new Error(`no batch sender here: ${batch.reason}`);
    if (sender === 'segmented' && batch?.sender?.segmenting !== true) throw new Error('the kernel takes no segmented sends here');
    const batchTargets = destinations.map((d) => batchDestination(d.host, d.port));
    /** Per turn and destination: 64 datagrams, or one segmented send of as many as fit. */
    const perSend = Math.min(MAX_SEGMENTS, Math.floor(MAX_SEGMENTED_BYTES / size));
    const pump = async () => {
      const until = Date.now() + (seconds + 2) * 1000;
      while (running && !interruption.requested && Date.now() < until) {
        if (batch?.sender !== undefined) {
          const out = batch.sender;
          // Datagrams the socket's buffer had no room for are not retried: not sent.
          const notSent = () => sent--;
          const add = (target: (typeof batchTargets)[number], length: number, segment: number): number => {
            const at = out.add(target, length, segment);
            if (at >= 0) return at;
            out.flush(notSent);
            return out.add(target, length, segment);
          };
          for (const target of batchTargets) {
            if (sender === 'segmented') {
              const at = add(target, perSend * size, size);
              for (let k = 0; k < perSend; k++) payload.copy(out.buffer, at + k * size);
              sent += perSend;
            } else {
              for (let k = 0; k < 64; k++) payload.copy(out.buffer, add(target, size, 0));
              sent += 64;
            }
          }
          out.flush(notSent);
        } else {
          for (let i = 0; i < 64 && inFlight < MAX_IN_FLIGHT; i++) {
            for (const d of destinations) {
              inFlight++;
              socket.send(payload, d.port, d.host, () => {
                inFlight--;
                sent++;
              });
            }
          }
        }
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
      batch?.sender?.close();
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
    const kernel = () => ({ own: ownCpuSeconds('system'), sinks: sinks.map((x) => cpuSecondsOf(x.process.pid, 'system')) });
    const pumping = pump();
    await sleep(500);
    const a = await count();
    const sentA = sent;
    const kernelA = kernel();
    const tA = process.hrtime.bigint();
    await sleep(seconds * 1000);
    const b = await count();
    const sentB = sent;
    const kernelB = kernel();
    const tB = process.hrtime.bigint();
    running = false;
    await pumping;
    return {
      transport,
      size,
      sender,
      sentPerSecond: (sentB - sentA) / (Number(tB - tA) / 1e9),
      perReceiver: b.map((x, i) => (x.datagrams - a[i]!.datagrams) / (Number(x.ns - a[i]!.ns) / 1e9)),
      senderKernelUs: ((kernelB.own - kernelA.own) * 1e6) / (sentB - sentA),
      receiverKernelUs: b.map((x, i) => ((kernelB.sinks[i]! - kernelA.sinks[i]!) * 1e6) / (x.datagrams - a[i]!.datagrams)),
    };
  } finally {
    socket.close();
    for (const s of sinks) {
      s.process.stdin!.end();
      await s.stop(2000);
    }
  }
}
