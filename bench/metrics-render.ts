/**
 * How long a /metrics render holds a sidecar's event loop: a BatonNode in this process (a
 * cluster of one, encrypted), its registry rendered BENCH_RENDERS times each way, alternating —
 * whole (Registry#metrics, one turn) and sliced (renderMetrics, what /metrics serves) — while a
 * 1 ms interval notes the longest gap between its runs during each render (1 ms is the floor:
 * an idle loop's gap). Prints p50/p90/p99/max per way. A figure to read, not a test.
 *
 * Run: npx tsc -p tsconfig.build.json && node dist/bench/metrics-render.js
 */
import { randomBytes } from 'node:crypto';
import pino from 'pino';
import { BatonNode } from '../sidecar/node';
import { renderMetrics } from '../sidecar/metrics/http-server';
import { freePeerPorts, writerConfig } from './replication-cluster';

const RENDERS = Number(process.env.BENCH_RENDERS ?? 150);

async function main(): Promise<void> {
  const [port] = await freePeerPorts(1);
  const peer = `127.0.0.1:${port}`;
  const config = writerConfig(
    { 'node-id': 'render', 'api-listen': '127.0.0.1:0', 'peer-listen': peer, 'metrics-listen': '127.0.0.1:0', 'http-listen': 'off', peers: peer },
    randomBytes(32).toString('base64'),
  );
  const node = new BatonNode(config, pino({ level: 'silent' }));
  await node.start();
  const registry = node.metrics.registry;
  let last = performance.now();
  let worst = 0;
  const probe = setInterval(() => {
    const now = performance.now();
    worst = Math.max(worst, now - last);
    last = now;
  }, 1);
  const ways = { whole: () => registry.metrics(), sliced: () => renderMetrics(registry) };
  const gaps: Record<keyof typeof ways, number[]> = { whole: [], sliced: [] };
  try {
    for (let i = 0; i < RENDERS; i++) {
      for (const way of i % 2 === 0 ? (['sliced', 'whole'] as const) : (['whole', 'sliced'] as const)) {
        await new Promise((resolve) => setTimeout(resolve, 10));
        last = performance.now();
        worst = 0;
        await ways[way]();
        await new Promise((resolve) => setTimeout(resolve, 3));
        gaps[way].push(worst);
      }
    }
  } finally {
    clearInterval(probe);
    await node.stop();
  }
  console.log(`/metrics render: longest gap of a 1 ms interval during each of ${RENDERS} renders per way (ms)`);
  for (const way of ['whole', 'sliced'] as const) {
    const sorted = [...gaps[way]].sort((a, b) => a - b);
    const q = (p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!.toFixed(2);
    console.log(`  ${way.padEnd(6)}  first ${gaps[way][0]!.toFixed(1)}  p50 ${q(0.5)}  p90 ${q(0.9)}  p99 ${q(0.99)}  max ${sorted[sorted.length - 1]!.toFixed(1)}`);
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
