/**
 * In-process SessionStore figures at 1,000,000 sessions, for two shapes:
 *   "1 part":  one part ('auth') of 100 B per session;
 *   "4 parts": tls, auth, cart, tcp of 100 B each per session.
 * For each shape (in its own child process, so heap and RSS start clean):
 *   - memory: heapUsed / rss / external after a full GC, before and after filling the
 *     store; the session id strings are created inside the measured region, so they count
 *     as the store's cost (the figure without them subtracts their measured size);
 *   - Gets/s: random ids from the pool (fresh strings, as a decoded request would bring),
 *     precomputed outside the timed loop; median of BENCH_STORE_ROUNDS rounds;
 *   - Puts/s: overwrite one existing part (and, for 4 parts, all four at once), same ids.
 * Targets: ≥ 1M Gets/s, ≥ 300k Puts/s, ≤ 150 B per part beyond its value.
 *
 * Run with --expose-gc (npm run bench:store). Environment: BENCH_STORE_SESSIONS (default
 * 1,000,000), BENCH_STORE_ROUNDS (default 5), BENCH_STORE_OPS (operations per timed round,
 * default 1,000,000).
 */
import { fork } from 'node:child_process';
import { getHeapStatistics } from 'node:v8';
import { BuzHash } from '../src/buzhash';
import { HybridClock } from '../src/hybrid-clock';
import { DEFAULT_STORE_CONFIG, SessionStore, type PartWriteRequest } from '../src/store';
import { machineBusyCpuSeconds, ownCpuSeconds } from './children';
import { describeMachine, envNumber, formatCount, formatFixed, formatTable, IndexPicker, machineInfo, median } from './stats';

const SESSIONS = Math.round(envNumber('BENCH_STORE_SESSIONS', 1_000_000));
const ROUNDS = Math.max(1, Math.round(envNumber('BENCH_STORE_ROUNDS', 5)));
const OPS_PER_ROUND = Math.round(envNumber('BENCH_STORE_OPS', 1_000_000));
const VALUE_BYTES = 100;

const SHAPES = {
  '1 part': ['auth'],
  '4 parts': ['tls', 'auth', 'cart', 'tcp'],
} as const satisfies Record<string, readonly string[]>;
type ShapeName = keyof typeof SHAPES;

interface MemoryFigures {
  heapUsed: number;
  rss: number;
  external: number;
  arrayBuffers: number;
}

interface ShapeResult {
  shape: ShapeName;
  sessions: number;
  partsPerSession: number;
  idLength: number;
  /** Measured heap bytes of one id string (its share of a large array of them, array slots excluded). */
  idStringBytes: number;
  /** Deltas after the fill, per session. */
  perSession: MemoryFigures;
  /** What the store accounts for its memory budget, per session. */
  accountedPerSession: number;
  fillPutsPerSecond: number;
  getsPerSecond: number[];
  putOnePerSecond: number[];
  putAllPerSecond: number[];
  heapLimitMiB: number;
  /** CPU used by every other process of the machine while this shape ran, as a fraction of one core. */
  otherCpu: number;
}

const idScratch = Buffer.alloc(16);

/**
 * A 32-hex-digit session id (the size of a 128-bit random cookie), unique per i. Built as a
 * flat string, fresh on every call, like an id decoded from a request (a concatenation would
 * build a rope of several string objects and overstate the id's cost).
 */
function sessionId(i: number): string {
  idScratch.writeUInt32BE(Math.imul(i, 0x9e3779b1) >>> 0, 0);
  idScratch.writeUInt32BE(i >>> 0, 4);
  idScratch.writeUInt32BE(0x5f3759df, 8);
  idScratch.writeUInt32BE(Math.imul(i ^ 0x5bd1e995, 0x85ebca6b) >>> 0, 12);
  return idScratch.toString('hex');
}

function settledMemory(): MemoryFigures {
  const gc = globalThis.gc;
  if (gc === undefined) throw new Error('run with node --expose-gc (npm run bench:store)');
  for (let i = 0; i < 3; i++) gc();
  const m = process.memoryUsage();
  return { heapUsed: m.heapUsed, rss: m.rss, external: m.external, arrayBuffers: m.arrayBuffers };
}

function perSession(before: MemoryFigures, after: MemoryFigures, n: number): MemoryFigures {
  return {
    heapUsed: (after.heapUsed - before.heapUsed) / n,
    rss: (after.rss - before.rss) / n,
    external: (after.external - before.external) / n,
    arrayBuffers: (after.arrayBuffers - before.arrayBuffers) / n,
  };
}

function seconds(from: bigint): number {
  return Number(process.hrtime.bigint() - from) / 1e9;
}

/** Heap bytes per id string: N ids held in an array, minus the array's own 8 B slots. */
function measureIdStringBytes(n: number): number {
  const held: string[] = new Array<string>(n).fill('');
  const before = settledMemory();
  for (let i = 0; i < n; i++) held[i] = sessionId(i);
  const after = settledMemory();
  // Keeps `held` alive until after the measurement.
  if (held[n - 1]!.length === 0) throw new Error('no ids were built');
  return (after.heapUsed - before.heapUsed) / n;
}

function runShape(shape: ShapeName): ShapeResult {
  const names = SHAPES[shape];
  const startWall = process.hrtime.bigint();
  const startMachine = machineBusyCpuSeconds();
  const startOwn = ownCpuSeconds();
  const idStringBytes = measureIdStringBytes(Math.min(SESSIONS, 200_000));

  const store = new SessionStore({ ...DEFAULT_STORE_CONFIG, nodeId: 'bench-node' }, new BuzHash('bench-seed'), new HybridClock());
  // Values are copied into the store (as latin1 strings), so the source buffers can be shared.
  const values = Array.from({ length: 16 }, (_, k) => Buffer.alloc(VALUE_BYTES, 0x41 + k));
  const allParts: PartWriteRequest[][] = values.map((v) => names.map((name) => ({ name, value: v })));
  const onePart: PartWriteRequest[][] = [];
  for (const v of values) for (const name of names) onePart.push([{ name, value: v }]);

  // --- fill (the ids are created inside the measured region) ---
  const now = Date.now();
  const before = settledMemory();
  let t = process.hrtime.bigint();
  for (let i = 0; i < SESSIONS; i++) store.put(sessionId(i), allParts[i & 15]!, 0, now);
  const fillSeconds = seconds(t);
  const after = settledMemory();
  const stats = store.getStats();
  if (stats.sessions !== SESSIONS || stats.parts !== SESSIONS * names.length) {
    throw new Error(`store holds ${stats.sessions} sessions and ${stats.parts} parts after the fill`);
  }

  // --- timed rounds: gets, one-part puts, all-part puts, interleaved ---
  const picker = new IndexPicker(SESSIONS, 12345);
  const probes: string[] = new Array<string>(OPS_PER_ROUND);
  const getsPerSecond: number[] = [];
  const putOnePerSecond: number[] = [];
  const putAllPerSecond: number[] = [];
  let sink = 0;
  for (let round = 0; round < ROUNDS; round++) {
    const roundNow = Date.now();
    for (let i = 0; i < OPS_PER_ROUND; i++) probes[i] = sessionId(picker.next());
    settledMemory();
    t = process.hrtime.bigint();
    for (let i = 0; i < OPS_PER_ROUND; i++) {
      if (store.get(probes[i]!, roundNow) !== undefined) sink++;
    }
    getsPerSecond.push(OPS_PER_ROUND / seconds(t));

    for (let i = 0; i < OPS_PER_ROUND; i++) probes[i] = sessionId(picker.next());
    settledMemory();
    t = process.hrtime.bigint();
    const rotation = onePart.length - 1;
    for (let i = 0; i < OPS_PER_ROUND; i++) store.put(probes[i]!, onePart[i & rotation]!, 0, roundNow);
    putOnePerSecond.push(OPS_PER_ROUND / seconds(t));

    if (names.length > 1) {
      for (let i = 0; i < OPS_PER_ROUND; i++) probes[i] = sessionId(picker.next());
      settledMemory();
      t = process.hrtime.bigint();
      for (let i = 0; i < OPS_PER_ROUND; i++) store.put(probes[i]!, allParts[i & 15]!, 0, roundNow);
      putAllPerSecond.push(OPS_PER_ROUND / seconds(t));
    }
  }
  if (sink !== ROUNDS * OPS_PER_ROUND) throw new Error(`${ROUNDS * OPS_PER_ROUND - sink} gets missed`);
  if (store.getStats().sessions !== SESSIONS) throw new Error('the timed rounds changed the number of sessions');
  const wall = seconds(startWall);
  const otherCpu = Math.max(0, (machineBusyCpuSeconds() - startMachine - (ownCpuSeconds() - startOwn)) / wall);

  return {
    shape,
    sessions: SESSIONS,
    partsPerSession: names.length,
    idLength: sessionId(0).length,
    idStringBytes,
    perSession: perSession(before, after, SESSIONS),
    accountedPerSession: stats.bytes / SESSIONS,
    fillPutsPerSecond: SESSIONS / fillSeconds,
    getsPerSecond,
    putOnePerSecond,
    putAllPerSecond,
    heapLimitMiB: Math.round(getHeapStatistics().heap_size_limit / 2 ** 20),
    otherCpu,
  };
}

function runShapeInChild(shape: ShapeName): Promise<ShapeResult> {
  return new Promise((resolve, reject) => {
    const child = fork(__filename, ['--shape', shape], { execArgv: process.execArgv, stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
    let result: ShapeResult | undefined;
    // A shape takes well under a minute at 1M sessions; ten minutes means something is wrong.
    const timer = setTimeout(() => child.kill('SIGKILL'), 600_000);
    child.on('message', (message) => (result = message as ShapeResult));
    child.stdout!.resume();
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      if (result !== undefined) resolve(result);
      else reject(new Error(`the '${shape}' run exited with ${signal ?? code} and no result`));
    });
  });
}

function report(results: ShapeResult[]): void {
  const memoryRows = results.map((r) => {
    const valueBytes = r.partsPerSession * VALUE_BYTES;
    const heap = r.perSession.heapUsed;
    const perPart = (heap - valueBytes) / r.partsPerSession;
    const perPartNoIds = (heap - r.idStringBytes - valueBytes) / r.partsPerSession;
    return [
      r.shape,
      formatFixed(heap, 0),
      formatFixed(perPart, 0),
      formatFixed(perPartNoIds, 0),
      formatFixed(r.perSession.rss, 0),
      formatFixed(r.perSession.external, 1),
      formatFixed(r.accountedPerSession, 0),
      perPart <= 150 ? 'met' : 'MISSED',
    ];
  });
  console.log(
    `\nMemory at ${formatCount(results[0]!.sessions)} sessions, bytes per session after a full GC ` +
      `(value bytes: ${VALUE_BYTES} per part; ids are ${results[0]!.idLength} characters, ` +
      `${formatFixed(results[0]!.idStringBytes, 0)} B each on the heap):`,
  );
  console.log(
    formatTable(
      ['shape', 'heap/session', 'overhead/part', 'overhead/part w/o id', 'rss/session', 'external/session', 'accounted/session', '≤150 B/part'],
      memoryRows,
    ),
  );

  const speedRows: string[][] = [];
  for (const r of results) {
    const runs = (xs: number[]) => xs.map((x) => formatCount(x)).join(' / ');
    speedRows.push([`${r.shape}: Get`, formatCount(median(r.getsPerSecond)), runs(r.getsPerSecond), median(r.getsPerSecond) >= 1e6 ? 'met (≥1M)' : 'MISSED (≥1M)']);
    speedRows.push([`${r.shape}: Put, 1 part overwritten`, formatCount(median(r.putOnePerSecond)), runs(r.putOnePerSecond), median(r.putOnePerSecond) >= 3e5 ? 'met (≥300k)' : 'MISSED (≥300k)']);
    if (r.putAllPerSecond.length > 0) {
      speedRows.push([`${r.shape}: Put, all ${r.partsPerSession} overwritten`, formatCount(median(r.putAllPerSecond)), runs(r.putAllPerSecond), median(r.putAllPerSecond) >= 3e5 ? 'met (≥300k)' : 'MISSED (≥300k)']);
    }
    speedRows.push([`${r.shape}: fill (insert, ids built in loop)`, formatCount(r.fillPutsPerSecond), '1 pass', '']);
  }
  const noise = results.map((r) => `${r.shape} ${Math.round(r.otherCpu * 100)}%`).join(', ');
  console.log(`\nOperations per second, median of ${ROUNDS} rounds of ${formatCount(OPS_PER_ROUND)} (one core, in process):`);
  console.log(formatTable(['operation', 'ops/s', 'per round', 'target'], speedRows));
  console.log(`\nother processes used ${noise} of a core meanwhile (noise; should be near 0)`);
  console.log(`heap limit ${results[0]!.heapLimitMiB} MiB (node ${process.execArgv.join(' ')})`);
}

async function main(): Promise<void> {
  const shapeArg = process.argv.indexOf('--shape');
  if (shapeArg >= 0) {
    const shape = process.argv[shapeArg + 1] as ShapeName;
    if (!(shape in SHAPES)) throw new Error(`unknown shape '${shape}'`);
    process.send!(runShape(shape));
    return;
  }
  console.log('baton bench:store');
  console.log(describeMachine(machineInfo()));
  console.log(
    `${formatCount(SESSIONS)} sessions, ${VALUE_BYTES} B values, ${ROUNDS} rounds of ${formatCount(OPS_PER_ROUND)} operations; ` +
      `store config: DEFAULT_STORE_CONFIG (${DEFAULT_STORE_CONFIG.partitions} partitions, no memory budget)`,
  );
  if (globalThis.gc === undefined) throw new Error('run with node --expose-gc (npm run bench:store)');
  const results: ShapeResult[] = [];
  for (const shape of Object.keys(SHAPES) as ShapeName[]) {
    const r = await runShapeInChild(shape);
    console.log(`  ${shape}: done (fill ${formatCount(r.fillPutsPerSecond)} puts/s)`);
    results.push(r);
  }
  report(results);
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
  process.exitCode = 1;
});
