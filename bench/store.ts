/**
 * In-process SessionStore figures at 1,000,000 sessions, for two shapes:
 *   "1 part":  one part ('auth') of 100 B per session;
 *   "4 parts": tls, auth, cart, tcp of 100 B each per session.
 * For each shape (in its own child process, so heap and RSS start clean):
 *   - memory: heapUsed / rss / external after a full GC, before and after filling the
 *     store; the session id strings are created inside the measured region, so they count
 *     as the store's cost (the figure without them subtracts their measured size);
 *   - Gets/s: random ids from the pool, precomputed outside the timed loop, twice: as fresh
 *     strings (what a decoded request brings: V8 must hash them) and as the very strings the
 *     store holds (hash cached, equal by pointer); median of BENCH_STORE_ROUNDS rounds;
 *   - Puts/s: overwrite one existing part (and, for 4 parts, all four at once), fresh ids;
 *   - the share of each timed loop spent in GC pauses (perf_hooks 'gc' entries);
 *   - a baseline in the same heap and rounds: a bare Map from the same ids to small objects,
 *     looked up with fresh id strings, the least a string-keyed Get can cost here; the Get
 *     figures are also printed as a ratio to it, which machine noise moves less.
 *   - a Put baseline the same way: a bare Map.set, over existing entries, of a part-like object
 *     (name, a copy of the 100 B value, version, writer).
 * Targets (issue 18): Get ≥ 0.9× Map.get, Put ≥ 0.5× Map.set, ≤ 150 B per part beyond its
 * value bytes (with and without the id string), also with one part.
 * Then churn (bench/store-churn.ts): RSS against the memory budget while 16 times the budget
 * (at least 1 GiB) of values is written into a store with a 64 MiB and a 256 MiB budget (each
 * in its own child process), and once through a real sidecar with --max-memory-mb 64.
 *
 * Run with --expose-gc (npm run bench:store). Environment: BENCH_STORE_SESSIONS (default
 * 1,000,000), BENCH_STORE_ROUNDS (default 5), BENCH_STORE_OPS (operations per timed round,
 * default 500,000), BENCH_QUIET_WAIT_SECONDS (on a shared machine, wait up to this long before
 * each timed loop until other processes use < 20% of a core; default off),
 * BENCH_STORE_SHAPES (a comma list of `1 part`, `4 parts`; default both),
 * BENCH_STORE_PHASES (a comma list of `ops`, `churn`, `sidecar`; default all three),
 * BENCH_STORE_CHURN_MIB (MiB of values each churn run writes at least, default 1024; a run
 * writes 16× its budget when that is more, since V8 takes several times the budget's worth of
 * writes to reach its steady heap size),
 * BENCH_STORE_CHURN_BUDGETS (in-process budgets in MiB, default `64,256`),
 * BENCH_STORE_SIDECAR_BUDGET (the sidecar's --max-memory-mb, default 64),
 * BENCH_STORE_CHURN_NODE_ARGS (extra `node` flags for the churn processes and the sidecar,
 * e.g. `--max-old-space-size=512`, to see how V8's heap sizing moves RSS).
 */
import { fork } from 'node:child_process';
import { PerformanceObserver, performance } from 'node:perf_hooks';
import { getHeapStatistics } from 'node:v8';
import { BuzHash } from '../src/store/buzhash';
import { HybridClock } from '../src/store/hybrid-clock';
import { DEFAULT_STORE_CONFIG, SessionStore, type PartWriteRequest } from '../src/store/store';
import { machineBusyCpuSeconds, ownCpuSeconds, quietWaitSeconds, waitForQuiet } from './children';
import { reportChurn, runChurnInProcess, runChurnThroughSidecar, type ChurnResult } from './store-churn';
import { describeMachine, envNumber, formatCount, formatFixed, formatTable, IndexPicker, machineInfo, median } from './stats';

const SESSIONS = Math.round(envNumber('BENCH_STORE_SESSIONS', 1_000_000));
const ROUNDS = Math.max(1, Math.round(envNumber('BENCH_STORE_ROUNDS', 5)));
const OPS_PER_ROUND = Math.round(envNumber('BENCH_STORE_OPS', 500_000));
const VALUE_BYTES = 100;
const QUIET_WAIT_SECONDS = quietWaitSeconds();
const PHASES = new Set((process.env.BENCH_STORE_PHASES ?? 'ops,churn,sidecar').split(',').map((p) => p.trim()));
for (const phase of PHASES) if (!['ops', 'churn', 'sidecar'].includes(phase)) throw new Error(`BENCH_STORE_PHASES: unknown phase '${phase}'`);
const CHURN_MIN_BYTES = Math.round(envNumber('BENCH_STORE_CHURN_MIB', 1024) * 2 ** 20);
/** Bytes a churn run writes: at least CHURN_MIN_BYTES and 16 times the budget. */
const churnBytes = (budgetMiB: number) => Math.max(CHURN_MIN_BYTES, 16 * budgetMiB * 2 ** 20);
const CHURN_BUDGETS_MIB = (process.env.BENCH_STORE_CHURN_BUDGETS ?? '64,256').split(',').map((text) => {
  const mib = Number(text);
  if (!Number.isInteger(mib) || mib <= 0) throw new Error(`BENCH_STORE_CHURN_BUDGETS: '${text}' is not a whole number of MiB`);
  return mib;
});
const SIDECAR_BUDGET_MIB = Math.round(envNumber('BENCH_STORE_SIDECAR_BUDGET', 64));
const CHURN_NODE_ARGS = (process.env.BENCH_STORE_CHURN_NODE_ARGS ?? '').split(/\s+/).filter((a) => a !== '');

const SHAPES = {
  '1 part': ['auth'],
  '4 parts': ['tls', 'auth', 'cart', 'tcp'],
} as const satisfies Record<string, readonly string[]>;
type ShapeName = keyof typeof SHAPES;
const SHAPES_RUN = (process.env.BENCH_STORE_SHAPES ?? Object.keys(SHAPES).join(',')).split(',').map((text) => {
  const shape = text.trim() as ShapeName;
  if (!(shape in SHAPES)) throw new Error(`BENCH_STORE_SHAPES: unknown shape '${text}' (${Object.keys(SHAPES).join(', ')})`);
  return shape;
});

const OPERATIONS = ['get, fresh id', 'get, pooled id', 'put 1 part', 'put all parts', 'baseline map get', 'baseline map set'] as const;
type OperationName = (typeof OPERATIONS)[number];

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
  /** Per timed operation: ops/s of each round, and the median share of the loop's time spent in GC pauses. */
  operations: { name: OperationName; opsPerSecond: number[]; gcShare: number }[];
  heapLimitMiB: number;
  /** CPU used by every other process of the machine during the timed loops, as a fraction of one core. */
  otherCpu: number;
  /** Seconds spent waiting for a quiet machine before timed loops, and how many loops ran busy anyway. */
  quietWaitSeconds: number;
  quietGaveUp: number;
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

async function runShape(shape: ShapeName): Promise<ShapeResult> {
  const names = SHAPES[shape];
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

  // The store's own id strings (hash already cached by V8), for the "pooled" Get variant.
  const pool: string[] = [];
  for (let p = 0; p < DEFAULT_STORE_CONFIG.partitions; p++) for (const session of store.sessionsIn(p, now)) pool.push(session.id);
  const baseline = new Map<string, { hits: number }>();
  for (const id of pool) baseline.set(id, { hits: 0 });
  // The Put baseline: a bare Map.set, over existing entries, of an object comparable to one
  // stored part (its name, a copy of its value, a version and a writer).
  const baselineSet = new Map<string, ComparablePart>();
  for (const id of pool) baselineSet.set(id, { name: names[0]!, value: values[0]!.toString('latin1'), version: 0, writer: 'bench-node' });

  // --- timed rounds, interleaved; each loop's inputs are built before its clock starts ---
  const gcPauses = watchGcPauses();
  const picker = new IndexPicker(SESSIONS, 12345);
  const probes: string[] = new Array<string>(OPS_PER_ROUND);
  const timings = new Map<OperationName, Timing[]>(OPERATIONS.map((name) => [name, []]));
  let sink = 0;
  let otherCpuSeconds = 0;
  let timedSeconds = 0;
  let quietWaits = 0;
  let quietGaveUp = 0;
  const timed = async (name: OperationName, loop: () => void) => {
    const waited = await waitForQuiet(QUIET_WAIT_SECONDS);
    if (waited < 0) quietGaveUp++;
    else quietWaits += waited;
    globalThis.gc!();
    const machineBefore = machineBusyCpuSeconds();
    const ownBefore = ownCpuSeconds();
    const startMs = performance.now();
    const t = process.hrtime.bigint();
    loop();
    const elapsed = seconds(t);
    otherCpuSeconds += machineBusyCpuSeconds() - machineBefore - (ownCpuSeconds() - ownBefore);
    timedSeconds += elapsed;
    timings.get(name)!.push({ opsPerSecond: OPS_PER_ROUND / elapsed, startMs, endMs: performance.now() });
  };
  const rotation = onePart.length - 1;
  for (let round = 0; round < ROUNDS; round++) {
    const roundNow = Date.now();
    for (let i = 0; i < OPS_PER_ROUND; i++) probes[i] = sessionId(picker.next());
    await timed('get, fresh id', () => {
      for (let i = 0; i < OPS_PER_ROUND; i++) if (store.get(probes[i]!, roundNow) !== undefined) sink++;
    });
    for (let i = 0; i < OPS_PER_ROUND; i++) probes[i] = pool[picker.next()]!;
    await timed('get, pooled id', () => {
      for (let i = 0; i < OPS_PER_ROUND; i++) if (store.get(probes[i]!, roundNow) !== undefined) sink++;
    });
    for (let i = 0; i < OPS_PER_ROUND; i++) probes[i] = sessionId(picker.next());
    await timed('put 1 part', () => {
      for (let i = 0; i < OPS_PER_ROUND; i++) store.put(probes[i]!, onePart[i & rotation]!, 0, roundNow);
    });
    for (let i = 0; i < OPS_PER_ROUND; i++) probes[i] = sessionId(picker.next());
    await timed('baseline map get', () => {
      for (let i = 0; i < OPS_PER_ROUND; i++) baseline.get(probes[i]!)!.hits++;
    });
    for (let i = 0; i < OPS_PER_ROUND; i++) probes[i] = sessionId(picker.next());
    await timed('baseline map set', () => {
      for (let i = 0; i < OPS_PER_ROUND; i++) {
        baselineSet.set(probes[i]!, { name: names[i % names.length]!, value: values[i & 15]!.toString('latin1'), version: roundNow + i, writer: 'bench-node' });
      }
    });
    if (names.length > 1) {
      for (let i = 0; i < OPS_PER_ROUND; i++) probes[i] = sessionId(picker.next());
      await timed('put all parts', () => {
        for (let i = 0; i < OPS_PER_ROUND; i++) store.put(probes[i]!, allParts[i & 15]!, 0, roundNow);
      });
    }
  }
  if (sink !== 2 * ROUNDS * OPS_PER_ROUND) throw new Error(`${2 * ROUNDS * OPS_PER_ROUND - sink} gets missed`);
  if (store.getStats().sessions !== SESSIONS) throw new Error('the timed rounds changed the number of sessions');
  const otherCpu = Math.max(0, otherCpuSeconds / timedSeconds);
  const pauses = await gcPauses.stop();

  const operations: ShapeResult['operations'] = [];
  for (const [name, list] of timings) {
    if (list.length === 0) continue;
    const gcShare = list.map((t) => pauses.within(t.startMs, t.endMs) / (t.endMs - t.startMs));
    operations.push({ name, opsPerSecond: list.map((t) => t.opsPerSecond), gcShare: median(gcShare) });
  }
  return {
    shape,
    sessions: SESSIONS,
    partsPerSession: names.length,
    idLength: sessionId(0).length,
    idStringBytes,
    perSession: perSession(before, after, SESSIONS),
    accountedPerSession: stats.bytes / SESSIONS,
    fillPutsPerSecond: SESSIONS / fillSeconds,
    operations,
    heapLimitMiB: Math.round(getHeapStatistics().heap_size_limit / 2 ** 20),
    otherCpu,
    quietWaitSeconds: quietWaits,
    quietGaveUp,
  };
}

interface ComparablePart {
  name: string;
  value: string;
  version: number;
  writer: string;
}

interface Timing {
  opsPerSecond: number;
  startMs: number;
  endMs: number;
}

/** Collects GC pauses (perf_hooks 'gc' entries) until stop(). */
function watchGcPauses(): { stop(): Promise<{ within(startMs: number, endMs: number): number }> } {
  const pauses: { start: number; end: number }[] = [];
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) pauses.push({ start: entry.startTime, end: entry.startTime + entry.duration });
  });
  observer.observe({ entryTypes: ['gc'] });
  return {
    async stop() {
      // Entries are delivered asynchronously; let them arrive.
      await new Promise((resolve) => setTimeout(resolve, 50));
      observer.disconnect();
      return {
        within: (startMs, endMs) =>
          pauses.reduce((sum, p) => sum + Math.max(0, Math.min(p.end, endMs) - Math.max(p.start, startMs)), 0),
      };
    },
  };
}

/** Runs this script with `args` in a child process (fresh heap and RSS) and resolves with what it sends. */
function runInChild<T>(args: string[], what: string, nodeArgs: readonly string[] = []): Promise<T> {
  return new Promise((resolve, reject) => {
    const child = fork(__filename, args, { execArgv: [...process.execArgv, ...nodeArgs], stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
    let result: T | undefined;
    // A run takes well under a minute or two; ten minutes means something is wrong.
    const timer = setTimeout(() => child.kill('SIGKILL'), 600_000);
    child.on('message', (message) => (result = message as T));
    child.stdout!.resume();
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      if (result !== undefined) resolve(result);
      else reject(new Error(`the ${what} run exited with ${signal ?? code} and no result`));
    });
  });
}

function report(results: ShapeResult[]): void {
  const memoryRows = results.map((r) => {
    const valueBytes = r.partsPerSession * VALUE_BYTES;
    // Off-heap bytes (values in ArrayBuffers) count as much as heap bytes.
    const heap = r.perSession.heapUsed + r.perSession.external;
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
      perPart <= 150 ? 'met' : perPartNoIds <= 150 ? 'met without the id' : 'MISSED',
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
  const labels: Record<OperationName, string> = {
    'get, fresh id': 'Get, fresh id string',
    'get, pooled id': "Get, the store's own id string",
    'put 1 part': 'Put, 1 part overwritten',
    'put all parts': 'Put, all 4 parts overwritten',
    'baseline map get': 'baseline: bare Map.get, fresh id string',
    'baseline map set': 'baseline: bare Map.set of a part-like object',
  };
  for (const r of results) {
    const getBaseline = r.operations.find((op) => op.name === 'baseline map get')!.opsPerSecond;
    const setBaseline = r.operations.find((op) => op.name === 'baseline map set')!.opsPerSecond;
    for (const op of r.operations) {
      const ops = median(op.opsPerSecond);
      const isBaseline = op.name.startsWith('baseline');
      const isGet = op.name.startsWith('get');
      const baseline = isGet ? getBaseline : setBaseline;
      const ratio = median(op.opsPerSecond.map((x, round) => x / baseline[round]!));
      // Issue 18: Get ≥ 0.9× Map.get, Put ≥ 0.5× Map.set (ratios within each round).
      const ratioTarget = isGet ? 0.9 : 0.5;
      speedRows.push([
        `${r.shape}: ${labels[op.name]}`,
        formatCount(ops),
        isBaseline ? '' : `${formatFixed(ratio, 2)}×`,
        `${Math.round(op.gcShare * 100)}%`,
        op.opsPerSecond.map((x) => formatCount(x)).join(' / '),
        isBaseline ? 'ceiling' : `${ratio >= ratioTarget ? 'met' : 'MISSED'} (≥${ratioTarget}× ${isGet ? 'get' : 'set'})`,
      ]);
    }
    speedRows.push([`${r.shape}: fill (insert; ids built in the loop)`, formatCount(r.fillPutsPerSecond), '', '', '1 pass', '']);
  }
  console.log(
    `\nOperations per second on one core, in process: median of ${ROUNDS} rounds of ${formatCount(OPS_PER_ROUND)}; ` +
      `'× Map' is the median of each round's ratio to the bare Map.get (Gets) or Map.set (Puts) of that round; ` +
      `'GC' is the share of the loop's time spent in GC pauses.`,
  );
  console.log(formatTable(['operation', 'ops/s', '× Map', 'GC', 'per round', 'target'], speedRows));
  // The three store figures of issue 18, from this one run.
  const one = results.find((r) => r.partsPerSession === 1) ?? results[0]!;
  const ratioOf = (r: ShapeResult, name: OperationName, base: OperationName) => {
    const op = r.operations.find((o) => o.name === name)!.opsPerSecond;
    const b = r.operations.find((o) => o.name === base)!.opsPerSecond;
    return median(op.map((x, round) => x / b[round]!));
  };
  const oneHeap = one.perSession.heapUsed + one.perSession.external - VALUE_BYTES;
  console.log(
    `\nissue 18 store targets (${one.shape}): Get ${formatFixed(ratioOf(one, 'get, fresh id', 'baseline map get'), 2)}× Map.get (≥0.9), ` +
      `Put ${formatFixed(ratioOf(one, 'put 1 part', 'baseline map set'), 2)}× Map.set (≥0.5), ` +
      `${formatFixed(oneHeap, 0)} B beyond the value per one-part session, ${formatFixed(oneHeap - one.idStringBytes, 0)} B without the id string (≤150)`,
  );
  const noise = results.map((r) => `${r.shape} ${Math.round(r.otherCpu * 100)}%`).join(', ');
  for (const r of results) {
    if (r.quietWaitSeconds >= 1 || r.quietGaveUp > 0) {
      console.log(`${r.shape}: waited ${Math.round(r.quietWaitSeconds)} s for a quiet machine; ${r.quietGaveUp} timed loops ran on a busy one`);
    }
  }
  console.log(`\nduring the timed loops, other processes used ${noise} of a core (noise; should be near 0)`);
  console.log(`heap limit ${results[0]!.heapLimitMiB} MiB (node ${process.execArgv.join(' ')})`);
}

async function main(): Promise<void> {
  const shapeArg = process.argv.indexOf('--shape');
  if (shapeArg >= 0) {
    const shape = process.argv[shapeArg + 1] as ShapeName;
    if (!(shape in SHAPES)) throw new Error(`unknown shape '${shape}'`);
    process.send!(await runShape(shape));
    return;
  }
  const churnArg = process.argv.indexOf('--churn');
  if (churnArg >= 0) {
    const budgetMiB = Number(process.argv[churnArg + 1]);
    process.send!(runChurnInProcess(budgetMiB * 2 ** 20, churnBytes(budgetMiB)));
    return;
  }
  console.log('baton bench:store');
  console.log(describeMachine(machineInfo()));
  if (globalThis.gc === undefined) throw new Error('run with node --expose-gc (npm run bench:store)');
  if (PHASES.has('ops')) {
    console.log(
      `${formatCount(SESSIONS)} sessions, ${VALUE_BYTES} B values, ${ROUNDS} rounds of ${formatCount(OPS_PER_ROUND)} operations; ` +
        `store config: DEFAULT_STORE_CONFIG (${DEFAULT_STORE_CONFIG.partitions} partitions, no memory budget)`,
    );
    const results: ShapeResult[] = [];
    for (const shape of SHAPES_RUN) {
      const r = await runInChild<ShapeResult>(['--shape', shape], `'${shape}'`);
      console.log(`  ${shape}: done (fill ${formatCount(r.fillPutsPerSecond)} puts/s)`);
      results.push(r);
    }
    report(results);
  }
  const churn: ChurnResult[] = [];
  if (CHURN_NODE_ARGS.length > 0 && (PHASES.has('churn') || PHASES.has('sidecar'))) {
    console.log(`churn processes run with extra node flags: ${CHURN_NODE_ARGS.join(' ')}`);
  }
  if (PHASES.has('churn')) {
    for (const budget of CHURN_BUDGETS_MIB) {
      const r = await runInChild<ChurnResult>(['--churn', String(budget)], `churn ${budget} MiB`, CHURN_NODE_ARGS);
      console.log(`  churn in process, ${budget} MiB budget: done`);
      churn.push(r);
    }
  }
  if (PHASES.has('sidecar')) {
    churn.push(await runChurnThroughSidecar(SIDECAR_BUDGET_MIB, churnBytes(SIDECAR_BUDGET_MIB), CHURN_NODE_ARGS));
    console.log(`  churn through a sidecar, --max-memory-mb ${SIDECAR_BUDGET_MIB}: done`);
  }
  reportChurn(churn);
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
  process.exitCode = 1;
});
