/**
 * What TCP state capture costs (--tcp-capture-interval-ms): BENCH_CONNECTIONS loopback
 * connections (default 1000) accepted by a server in this process that TcpCapture watches,
 * each named to a session; then
 *   - learning the sequence origins at accept (repair mode, needs CAP_NET_ADMIN; otherwise
 *     the saved SYN), per connection;
 *   - one sweep over idle connections (TCP_INFO per connection, nothing written), per
 *     connection and for the whole sweep, BENCH_ROUNDS sweeps (default 20), median;
 *   - the same with the raw getsockopt(TCP_INFO) alone, to see what the system call costs
 *     through koffi against the decoding and comparing around it.
 * The writes go nowhere (counted only). Run: `npx tsc -p tsconfig.build.json && node
 * dist/bench/tcp-capture.js`. Timings vary with the machine's load: the load average is
 * printed with the figures.
 */
import * as net from 'node:net';
import { loadavg } from 'node:os';
import pino from 'pino';
import { hasNetAdmin, learnOriginsByRepair, TcpCapture } from '../sidecar/capture/tcp-capture';
import { IPPROTO_TCP, loadSocketSyscalls, socketFd, TCP_INFO } from '../sidecar/net/socket-syscalls';

const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 1000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 20);

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

function microsSince(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1000;
}

async function main(): Promise<void> {
  const loaded = loadSocketSyscalls();
  if (loaded.syscalls === undefined) {
    console.log(`tcp-capture bench not run: ${loaded.reason}`);
    return;
  }
  const syscalls = loaded.syscalls;
  const method = hasNetAdmin() ? 'repair' : 'saved_syn';
  let written = 0;
  const capture = new TcpCapture({
    syscalls,
    intervalMs: 3_600_000,
    method,
    write: async () => {
      written++;
    },
    observer: { sample: () => undefined },
    log: pino({ level: 'silent' }),
  });
  const server = net.createServer();
  capture.attach(server);
  const accepted: net.Socket[] = [];
  server.on('connection', (socket) => accepted.push(socket));
  const clients: net.Socket[] = [];
  try {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    for (let i = 0; i < CONNECTIONS; i++) {
      clients.push(await new Promise<net.Socket>((resolve, reject) => {
        const client = net.connect(port, '127.0.0.1', () => resolve(client));
        client.once('error', reject);
      }));
    }
    for (let i = 0; accepted.length < CONNECTIONS; i++) {
      if (i > 100_000) throw new Error('connections were not all accepted');
      await new Promise((resolve) => setImmediate(resolve));
    }
    const fds = accepted.map((s) => socketFd(s)!);
    let learnUs: number | undefined;
    if (method === 'repair') {
      const start = process.hrtime.bigint();
      for (const fd of fds) learnOriginsByRepair(syscalls, fd);
      learnUs = microsSince(start) / CONNECTIONS;
    }
    accepted.forEach((socket, i) => capture.session(socket, `session-${i}`));
    capture.sampleAll();
    await new Promise((resolve) => setImmediate(resolve));
    const sweeps: number[] = [];
    const raw: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      let start = process.hrtime.bigint();
      capture.sampleAll();
      sweeps.push(microsSince(start));
      start = process.hrtime.bigint();
      for (const fd of fds) syscalls.getsockopt(fd, IPPROTO_TCP, TCP_INFO, 280);
      raw.push(microsSince(start));
    }
    const sweep = median(sweeps);
    console.log(
      JSON.stringify({
        connections: CONNECTIONS,
        method,
        learn_at_accept_us_per_connection: learnUs?.toFixed(1),
        idle_sweep_ms: (sweep / 1000).toFixed(2),
        idle_sample_us_per_connection: (sweep / CONNECTIONS).toFixed(1),
        tcp_info_getsockopt_us: (median(raw) / CONNECTIONS).toFixed(1),
        core_share_at_1s_interval_percent: ((sweep / 1e6) * 100).toFixed(2),
        parts_written: written,
        load_average: loadavg().map((l) => l.toFixed(1)).join(' '),
      }),
    );
  } finally {
    capture.close();
    for (const client of clients) client.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

void main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
