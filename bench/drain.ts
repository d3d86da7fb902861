/**
 * Drain benchmark: how long does a SIGTERM take, and what do the clients of a draining node
 * get back?
 *
 * Each run starts three `baton sidecar` processes (unicast, sealed with a cluster key,
 * --replicas 2, --drain-timeout-seconds BENCH_DRAIN_TIMEOUT_SECONDS) on loopback and
 * SIGTERMs nodes three ways, timing SIGTERM → process exit and reading the drain's own
 * `baton node stopped` line (duration_ms, all_acknowledged):
 *   (a) idle: the third node of the fresh cluster, before anything was written (the
 *       baseline of the same run); then it is restarted;
 *   (b) under load: the first node, after
 *       - RESUMED_SESSIONS sessions were written through it (min_replicas 1) and resumed on
 *         the two other nodes, half on each (each resume opens the resuming node's Lookup
 *         streams to its peers, the drained node included),
 *       - a Watch of every session and an idle Exchange stream (one Get, then nothing) were
 *         opened on it,
 *       - two BatonClients had written to it over Exchange for BENCH_LOAD_SECONDS, one with
 *         min_replicas 0 and one with min_replicas 1, each keeping BENCH_IN_FLIGHT puts in
 *         flight (closed loop) over its own LOAD_SESSIONS sessions;
 *       the calls made before the signal are written to the stream before it is sent; after
 *       it the clients go on sending, as an application does until its calls fail: each of
 *       a client's IN_FLIGHT callers stops at its first UNAVAILABLE (or when the process has
 *       exited). Every put in flight at the signal, and every put sent after it, is classed
 *       by its answer: a real one (the put's response or its own error), or UNAVAILABLE
 *       (the stream ended without an answer to it). Then every load session is read on a
 *       survivor (Get with resume): its counter must be the highest value that was
 *       acknowledged (else an acknowledged write was lost) and must not be a value that was
 *       answered UNAVAILABLE (else the node applied a put whose answer never came; the last
 *       value of each session shows it). The node is then restarted;
 *   (c) rolling restart: each node in turn gets the treatment of (b), is restarted, and the
 *       next one is SIGTERMed once the restarted node answers /readyz and every node counts
 *       three live members.
 *
 * Environment: BENCH_RUNS (3), BENCH_DRAIN_TIMEOUT_SECONDS (20), BENCH_KILL_AFTER_SECONDS
 * (30: SIGKILL if the process is still there), BENCH_LOAD_SECONDS (1), BENCH_IN_FLIGHT
 * (128 per client), BENCH_MAX_MINUTES (30, whole-run watchdog), BENCH_BATON_BIN (the
 * sidecar's main.js; default this build's, e.g. an older commit's dist/sidecar/cli/main.js to
 * compare), BENCH_SIDECAR_NODE_ARGS (extra node flags for the sidecars).
 *
 * Every loop is bounded in count and time; every child process is stopped at the end, on
 * error and on Ctrl-C (SIGTERM, then SIGKILL; an exit hook kills any left).
 */
import { randomBytes } from 'node:crypto';
import { status as Status } from '@grpc/grpc-js';
import { BatonClient, BatonClientError } from '../src/client/client';
import { handleInterruptions, interruption, runMain, sleep, waitForHttp200, type Child } from './children';
import { freePeerPorts, SIDECAR_MAIN, startReplica, type Replica } from './replication-cluster';
import { scrape } from './support/prometheus-scrape';
import { describeMachine, envNumber, formatCount, formatFixed, formatTable, machineInfo, median } from './stats';

const RUNS = Math.round(envNumber('BENCH_RUNS', 3));
const DRAIN_TIMEOUT_SECONDS = envNumber('BENCH_DRAIN_TIMEOUT_SECONDS', 20);
const KILL_AFTER_MS = envNumber('BENCH_KILL_AFTER_SECONDS', 30) * 1000;
const LOAD_SECONDS = envNumber('BENCH_LOAD_SECONDS', 1);
const IN_FLIGHT = Math.round(envNumber('BENCH_IN_FLIGHT', 128));
const MAX_MINUTES = envNumber('BENCH_MAX_MINUTES', 30);
const BATON_BIN = process.env.BENCH_BATON_BIN ?? SIDECAR_MAIN;
const SIDECAR_NODE_ARGS = (process.env.BENCH_SIDECAR_NODE_ARGS ?? '').split(/\s+/).filter((a) => a !== '');

const NODES = 3;
const REPLICAS = 2;
/** Sessions written through the drained node and resumed on the others (half on each). */
const RESUMED_SESSIONS = 16;
/** Sessions each load client rewrites, round robin. */
const LOAD_SESSIONS = 256;
/** Puts one load client issues at most (bounds the loop and its outcome table). */
const MAX_PUTS = 2_000_000;
/** A put's deadline: longer than any drain, so only the node's answer or the stream's end settles it. */
const PUT_DEADLINE_MS = 120_000;
const START_TIMEOUT_MS = 60_000;
const ALIVE_TIMEOUT_MS = 30_000;
const READ_CONCURRENCY = 32;
const READ_ATTEMPTS = 5;

function nowNs(): bigint {
  return process.hrtime.bigint();
}

function msBetween(from: bigint, to: bigint): number {
  return Number(to - from) / 1e6;
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message.split('\n')[0]! : String(err);
}

function counterValue(n: number): Buffer {
  const value = Buffer.alloc(4);
  value.writeUInt32BE(n, 0);
  return value;
}

// --- the cluster -----------------------------------------------------------------------

interface Cluster {
  key: string;
  /** Each node's own flags (its --peer-listen among them), to restart it as it was. */
  flags: string[][];
  nodes: Replica[];
}

async function withClusterKey<T>(key: string, start: () => Promise<T>): Promise<T> {
  process.env.BATON_CLUSTER_KEY = key;
  try {
    return await start();
  } finally {
    delete process.env.BATON_CLUSTER_KEY;
  }
}

async function startNode(cluster: Cluster, index: number): Promise<Replica> {
  const node = await withClusterKey(cluster.key, () => startReplica(`n${index + 1}`, cluster.flags[index]!, SIDECAR_NODE_ARGS, BATON_BIN));
  cluster.nodes[index] = node;
  return node;
}

/** Starts the nodes one after the other (none left running if one fails: the caller's finally stops them). */
async function startCluster(): Promise<Cluster> {
  const ports = await freePeerPorts(NODES);
  const peers = ports.map((p) => `127.0.0.1:${p}`).join(',');
  const common = ['--peers', peers, '--replicas', String(REPLICAS), '--drain-timeout-seconds', String(DRAIN_TIMEOUT_SECONDS)];
  const cluster: Cluster = {
    key: randomBytes(32).toString('base64'),
    flags: ports.map((port) => [...common, '--peer-listen', `127.0.0.1:${port}`]),
    nodes: [],
  };
  return cluster;
}

async function stopCluster(cluster: Cluster): Promise<void> {
  for (const node of cluster.nodes) {
    node.client.close();
    await node.child.stop(5000).catch(() => undefined);
  }
}

function readyUrl(node: Replica): string {
  return node.metricsUrl.replace(/\/metrics$/, '/readyz');
}

/** Waits until every node counts `alive` live members. */
async function waitForAlive(nodes: readonly Replica[], alive: number, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const scrapes = await Promise.all(nodes.map((n) => scrape(n.metricsUrl).catch(() => undefined)));
    if (scrapes.every((s) => s !== undefined && s.value('baton_cluster_members', { state: 'alive' }) === alive)) return;
    if (Date.now() > until || interruption.requested) throw new Error(`the nodes did not all see ${alive} live members within ${timeoutMs} ms`);
    await sleep(50);
  }
}

/** Starts node `index` again with its flags; resolves with ms from the start to /readyz answering 200. */
async function restart(cluster: Cluster, index: number): Promise<number> {
  const started = nowNs();
  const node = await startNode(cluster, index);
  await Promise.race([waitForHttp200(readyUrl(node), START_TIMEOUT_MS), node.child.exited]);
  const readyMs = msBetween(started, nowNs());
  await waitForAlive(cluster.nodes, NODES, ALIVE_TIMEOUT_MS);
  return readyMs;
}

// --- one SIGTERM -----------------------------------------------------------------------

interface Stopped {
  /** SIGTERM to the process's exit, ms. */
  exitMs: number;
  /** 'code 0', 'signal SIGKILL', … */
  how: string;
  /** duration_ms of the `baton node stopped` line; NaN when the node never printed it. */
  drainMs: number;
  allAcknowledged: boolean | undefined;
}

/** Resolves once the child's stdout has closed, so every line it wrote has been read (at most 2 s). */
function outputRead(child: Child): Promise<void> {
  const stdout = child.process.stdout;
  if (stdout === null || stdout.closed) return Promise.resolve();
  return Promise.race([new Promise<void>((resolve) => stdout.once('close', () => resolve())), sleep(2000)]);
}

async function sigterm(node: Replica): Promise<Stopped> {
  const sent = nowNs();
  const how = await node.child.stop(KILL_AFTER_MS);
  const exitMs = msBetween(sent, nowNs());
  node.client.close();
  await outputRead(node.child);
  const line = node.child.output.find((l) => l.includes('"msg":"baton node stopped"'));
  const entry = line === undefined ? undefined : (JSON.parse(line) as { duration_ms?: number; all_acknowledged?: boolean });
  return { exitMs, how, drainMs: entry?.duration_ms ?? NaN, allAcknowledged: entry?.all_acknowledged };
}

// --- load ------------------------------------------------------------------------------

// Outcomes of a put (0: not settled yet).
const OK = 1;
const UNAVAILABLE = 2;
const OTHER = 3;

/**
 * One BatonClient writing to the drained node: IN_FLIGHT puts in flight, put number v
 * writes counter v into session v mod LOAD_SESSIONS. Its own stream and its own sessions,
 * so on each session the node applies the values in increasing order.
 */
class LoadClient {
  readonly client: BatonClient;
  readonly sessions: string[];
  /** Outcome of put v (index v), 0 until it settles. */
  readonly outcomes = new Uint8Array(MAX_PUTS + 1);
  /** Highest acknowledged value per session (0: none). */
  readonly highestAcked: Uint32Array;
  readonly pending = new Set<number>();
  issued = 0;
  /** `issued` at the signal: higher values were sent after it. */
  issuedAtSignal = Infinity;
  firstOther: string | undefined;
  private stopped = false;
  /** While set, callers wait before their next put. */
  private gate: { promise: Promise<void>; open: () => void } | undefined;
  private workers: Promise<void>[] = [];

  constructor(
    address: string,
    readonly minReplicas: number,
    prefix: string,
  ) {
    this.client = new BatonClient(address, { defaultDeadlineMs: PUT_DEADLINE_MS });
    this.sessions = Array.from({ length: LOAD_SESSIONS }, (_, i) => `${prefix}-${i}`);
    this.highestAcked = new Uint32Array(LOAD_SESSIONS);
  }

  start(): void {
    this.workers = Array.from({ length: IN_FLIGHT }, () => this.worker());
  }

  /** Callers wait before their next put until release(). */
  hold(): void {
    let open = () => undefined as void;
    const promise = new Promise<void>((resolve) => (open = resolve));
    this.gate = { promise, open };
  }

  release(): void {
    this.gate?.open();
    this.gate = undefined;
  }

  /** From now on a caller stops at its first UNAVAILABLE; returns the puts in flight. */
  signalled(): number[] {
    this.issuedAtSignal = this.issued;
    return [...this.pending];
  }

  /** Puts sent after the signal. */
  sentAfterSignal(): number[] {
    const values: number[] = [];
    for (let v = this.issuedAtSignal + 1; v <= this.issued; v++) values.push(v);
    return values;
  }

  /** No more puts; the ones in flight settle on their own. */
  stop(): void {
    this.stopped = true;
    this.release();
  }

  /** Resolves when every put issued has settled. */
  settled(): Promise<void> {
    return Promise.all(this.workers).then(() => undefined);
  }

  private async worker(): Promise<void> {
    while (!this.stopped && this.issued < MAX_PUTS && !interruption.requested) {
      if (this.gate !== undefined) {
        await this.gate.promise;
        continue;
      }
      const value = ++this.issued;
      const session = value % LOAD_SESSIONS;
      this.pending.add(value);
      try {
        await this.client.put(this.sessions[session]!, { counter: counterValue(value) }, { minReplicas: this.minReplicas });
        this.outcomes[value] = OK;
        if (value > this.highestAcked[session]!) this.highestAcked[session] = value;
      } catch (err) {
        if (err instanceof BatonClientError && err.code === Status.UNAVAILABLE) {
          this.outcomes[value] = UNAVAILABLE;
          // The application notices: this caller sends no more.
          if (this.issuedAtSignal !== Infinity) return;
        } else {
          this.outcomes[value] = OTHER;
          this.firstOther ??= messageOf(err);
        }
      } finally {
        this.pending.delete(value);
      }
    }
  }
}

interface Answers {
  inFlight: number;
  real: number;
  unavailable: number;
  /** Of `real`, those answered with an error of the put's own (not UNAVAILABLE). */
  errors: number;
}

function classify(load: LoadClient, values: readonly number[]): Answers {
  const answers: Answers = { inFlight: values.length, real: 0, unavailable: 0, errors: 0 };
  for (const v of values) {
    const outcome = load.outcomes[v];
    if (outcome === UNAVAILABLE) answers.unavailable++;
    else if (outcome === OK || outcome === OTHER) answers.real++;
    if (outcome === OTHER) answers.errors++;
  }
  return answers;
}

function sumAnswers(list: readonly Answers[]): Answers {
  return list.reduce(
    (sum, a) => ({ inFlight: sum.inFlight + a.inFlight, real: sum.real + a.real, unavailable: sum.unavailable + a.unavailable, errors: sum.errors + a.errors }),
    { inFlight: 0, real: 0, unavailable: 0, errors: 0 },
  );
}

interface Checked {
  sessions: number;
  /** Sessions whose counter is below the highest acknowledged value (or missing). */
  lost: number;
  /** Sessions whose counter is a value that was answered UNAVAILABLE. */
  appliedUnanswered: number;
  /** Sessions that could not be read. */
  unread: number;
  firstProblem: string | undefined;
}

/** Reads every load session on `reader` (Get with resume) and compares it with what the client was told. */
async function check(loads: readonly LoadClient[], reader: BatonClient): Promise<Checked> {
  const result: Checked = { sessions: 0, lost: 0, appliedUnanswered: 0, unread: 0, firstProblem: undefined };
  const work: { load: LoadClient; index: number }[] = [];
  // Put v wrote session v mod LOAD_SESSIONS, v from 1: session i was written once i ≤ issued (0 once issued ≥ LOAD_SESSIONS).
  for (const load of loads) {
    for (let i = 0; i < LOAD_SESSIONS; i++) if (i === 0 ? load.issued >= LOAD_SESSIONS : i <= load.issued) work.push({ load, index: i });
  }
  result.sessions = work.length;
  const worker = async () => {
    for (;;) {
      const item = work.pop();
      if (item === undefined || interruption.requested) return;
      const { load, index } = item;
      const id = load.sessions[index]!;
      let counter: number | undefined;
      let read = false;
      for (let attempt = 1; attempt <= READ_ATTEMPTS && !read; attempt++) {
        try {
          const session = await reader.get(id, { resume: true });
          const part = session?.parts.find((p) => p.name === 'counter')?.value;
          counter = part === undefined || part.length < 4 ? undefined : Buffer.from(part).readUInt32BE(0);
          read = true;
        } catch (err) {
          if (attempt === READ_ATTEMPTS) result.firstProblem ??= `reading ${id}: ${messageOf(err)}`;
          else await sleep(100);
        }
      }
      if (!read) {
        result.unread++;
        continue;
      }
      const acked = load.highestAcked[index]!;
      if (counter === undefined ? acked > 0 : counter < acked) {
        result.lost++;
        result.firstProblem ??= `${id} (min_replicas ${load.minReplicas}): counter ${counter ?? 'missing'}, ${acked} was acknowledged`;
      } else if (counter !== undefined && counter > acked && load.outcomes[counter] === UNAVAILABLE) {
        result.appliedUnanswered++;
        result.firstProblem ??= `${id} (min_replicas ${load.minReplicas}): counter ${counter} was applied but answered UNAVAILABLE`;
      }
    }
  };
  await Promise.all(Array.from({ length: READ_CONCURRENCY }, worker));
  return result;
}

interface LoadedDrain extends Stopped {
  node: string;
  putsPerSecond: number;
  /** Puts in flight at SIGTERM and their answers, both clients together. */
  answers: Answers;
  /** The same, per min_replicas (0, 1). */
  byMinReplicas: Answers[];
  /** Puts sent after SIGTERM and their answers. */
  after: Answers;
  /** Puts answered with an error before the signal. */
  errorsBefore: number;
  firstError: string | undefined;
  /** Resumes on the other nodes, and how many of them peer-fetched (Lookup streams opened). */
  resumes: number;
  resumeProblems: number;
  peerFetches: number;
  watchEnd: string;
  idleEnd: string;
  checked: Checked;
}

/** Runs (b) on node `index`: resumes elsewhere, a Watch, an idle Exchange, load, SIGTERM, answers, check. */
async function loadedDrain(cluster: Cluster, index: number, tag: string): Promise<LoadedDrain> {
  const victim = cluster.nodes[index]!;
  const others = cluster.nodes.filter((_, i) => i !== index);
  const resumed = Array.from({ length: RESUMED_SESSIONS }, (_, i) => `${tag}-resumed-${i}`);
  for (const id of resumed) await victim.client.put(id, { v: Buffer.from(id) }, { minReplicas: 1 });

  const fetchesOf = async () => {
    const scrapes = await Promise.all(others.map((n) => scrape(n.metricsUrl)));
    return scrapes.reduce((sum, s) => sum + s.value('baton_resume_peer_fetch_duration_seconds_count', { outcome: 'ok' }), 0);
  };
  const fetchesBefore = await fetchesOf();
  let resumeProblems = 0;
  for (let i = 0; i < resumed.length; i++) {
    const resumer = others[i % others.length]!;
    const session = await resumer.client.get(resumed[i]!, { resume: true }).catch(() => undefined);
    if (session?.ownerNodeId !== resumer.nodeId) resumeProblems++;
  }
  const peerFetches = (await fetchesOf()) - fetchesBefore;

  const side = new BatonClient(victim.apiAddress, { defaultDeadlineMs: 10_000 });
  const idle = new BatonClient(victim.apiAddress, { defaultDeadlineMs: 10_000 });
  const loads = [0, 1].map((minReplicas) => new LoadClient(victim.apiAddress, minReplicas, `${tag}-load-r${minReplicas}`));
  try {
    const watch = side.watch('');
    await watch.ready();
    const watchEnded = (async () => {
      try {
        for await (const _ of watch) void _;
        return 'ended';
      } catch (err) {
        return err instanceof BatonClientError ? `status ${Status[err.code] ?? err.code}` : messageOf(err);
      }
    })();
    // One call opens the idle client's Exchange stream; nothing more is sent on it until after the drain.
    await idle.get(resumed[0]!);

    for (const load of loads) load.start();
    const loadStarted = nowNs();
    await Promise.race([sleep(LOAD_SECONDS * 1000), victim.child.exited]);
    const issued = loads.reduce((sum, load) => sum + load.issued, 0);
    const errorsBefore = loads.reduce((sum, load) => sum + load.outcomes.reduce((n, o) => n + (o === OTHER || o === UNAVAILABLE ? 1 : 0), 0), 0);
    const firstError = loads.find((l) => l.firstOther !== undefined)?.firstOther;
    const loadMs = msBetween(loadStarted, nowNs());
    // BatonClient writes the calls of a tick on process.nextTick: a tick callback queued now
    // runs after that write, so every call "in flight at SIGTERM" was handed to gRPC before
    // the signal (a turn of the event loop would let most of them be answered first). No
    // call is made meanwhile; the callers go on once the signal is sent.
    for (const load of loads) load.hold();
    await new Promise<void>((resolve) => process.nextTick(resolve));
    const inFlight = loads.map((load) => load.signalled());
    const stopping = sigterm(victim);
    for (const load of loads) load.release();
    const stopped = await stopping;
    for (const load of loads) load.stop();
    await Promise.race([Promise.all(loads.map((load) => load.settled())), sleep(PUT_DEADLINE_MS + 5000)]);
    const byMinReplicas = loads.map((load, i) => classify(load, inFlight[i]!));
    const answers = sumAnswers(byMinReplicas);
    const after = sumAnswers(loads.map((load) => classify(load, load.sentAfterSignal())));
    const watchEnd = await Promise.race([watchEnded, sleep(5000).then(() => 'still open')]);
    const idleEnd = await idle.get(resumed[0]!, { deadlineMs: 2000 }).then(
      () => 'answered after the drain',
      (err: unknown) => (err instanceof BatonClientError ? `status ${Status[err.code] ?? err.code}` : messageOf(err)),
    );
    const checked = await check(loads, others[0]!.client);
    return {
      ...stopped,
      node: victim.nodeId,
      putsPerSecond: (issued / loadMs) * 1000,
      answers,
      byMinReplicas,
      after,
      errorsBefore,
      firstError,
      resumes: resumed.length,
      resumeProblems,
      peerFetches,
      watchEnd,
      idleEnd,
      checked,
    };
  } finally {
    for (const load of loads) load.client.close();
    side.close();
    idle.close();
  }
}

// --- one run ---------------------------------------------------------------------------

interface RunResult {
  idle: Stopped;
  loaded: LoadedDrain;
  rolling: { drain: LoadedDrain; readyMs: number }[];
  /** First SIGTERM of the rolling restart to the last node ready with three live members, ms. */
  rollingMs: number;
}

async function run(runNumber: number): Promise<RunResult> {
  const cluster = await startCluster();
  try {
    for (let i = 0; i < NODES; i++) await startNode(cluster, i);
    await waitForAlive(cluster.nodes, NODES, ALIVE_TIMEOUT_MS);
    await Promise.all(cluster.nodes.map((n) => waitForHttp200(readyUrl(n), START_TIMEOUT_MS)));

    const idle = await sigterm(cluster.nodes[NODES - 1]!);
    console.log(`  run ${runNumber} (a) idle ${cluster.nodes[NODES - 1]!.nodeId}: ${describeStop(idle)}`);
    await restart(cluster, NODES - 1);

    const loaded = await loadedDrain(cluster, 0, `r${runNumber}-b`);
    console.log(`  run ${runNumber} (b) ${describeLoaded(loaded)}`);
    await restart(cluster, 0);

    const rolling: RunResult['rolling'] = [];
    const rollingStarted = nowNs();
    for (let i = 0; i < NODES && !interruption.requested; i++) {
      const drain = await loadedDrain(cluster, i, `r${runNumber}-c${i}`);
      const readyMs = await restart(cluster, i);
      rolling.push({ drain, readyMs });
      console.log(`  run ${runNumber} (c) ${describeLoaded(drain)}; restarted, /readyz after ${fmt(readyMs, 0)} ms`);
    }
    const rollingMs = msBetween(rollingStarted, nowNs());
    return { idle, loaded, rolling, rollingMs };
  } finally {
    await stopCluster(cluster);
  }
}

// --- output ----------------------------------------------------------------------------

function fmt(n: number, digits = 0): string {
  return formatFixed(n, digits);
}

function describeStop(s: Stopped): string {
  return `SIGTERM → exit ${fmt(s.exitMs)} ms (${s.how}); drain ${Number.isNaN(s.drainMs) ? 'never logged "baton node stopped"' : `${fmt(s.drainMs)} ms, all_acknowledged ${String(s.allAcknowledged)}`}`;
}

function describeAnswers(a: Answers): string {
  return `${a.inFlight}: ${a.real} real answers${a.errors > 0 ? ` (${a.errors} errors)` : ''}, ${a.unavailable} UNAVAILABLE`;
}

function describeLoaded(r: LoadedDrain): string {
  const c = r.checked;
  return [
    `${r.node} under ${formatCount(r.putsPerSecond)} puts/s: ${describeStop(r)}`,
    `      in flight at SIGTERM ${describeAnswers(r.answers)} (min_replicas 0: ${r.byMinReplicas[0]!.real}/${r.byMinReplicas[0]!.inFlight}, 1: ${r.byMinReplicas[1]!.real}/${r.byMinReplicas[1]!.inFlight} real); ` +
      `sent after it ${describeAnswers(r.after)}` +
      (r.errorsBefore > 0 ? `; ${r.errorsBefore} puts failed before the signal (${r.firstError ?? ''})` : ''),
    `      ${r.resumes} resumes on the other nodes (${r.peerFetches} peer fetches${r.resumeProblems > 0 ? `, ${r.resumeProblems} not claimed` : ''}); watch: ${r.watchEnd}; idle Exchange next call: ${r.idleEnd}`,
    `      ${c.sessions} sessions read on a survivor: ${c.lost} lost an acknowledged write, ${c.appliedUnanswered} hold a value answered UNAVAILABLE, ${c.unread} unread` +
      (c.firstProblem !== undefined ? ` (${c.firstProblem})` : ''),
  ].join('\n');
}

interface Figure {
  label: string;
  idle?: (r: RunResult) => number[];
  loaded?: (r: RunResult) => number[];
  rolling?: (r: RunResult) => number[];
  digits: number;
  combine: 'median' | 'sum' | 'max';
}

const loadedOf = (f: (d: LoadedDrain) => number) => ({
  loaded: (r: RunResult) => [f(r.loaded)],
  rolling: (r: RunResult) => r.rolling.map((x) => f(x.drain)),
});
const stoppedOf = (f: (s: Stopped) => number) => ({
  idle: (r: RunResult) => [f(r.idle)],
  ...loadedOf(f),
});

const FIGURES: Figure[] = [
  { label: 'SIGTERM → exit, ms (median)', ...stoppedOf((s) => s.exitMs), digits: 0, combine: 'median' },
  { label: 'SIGTERM → exit, ms (max)', ...stoppedOf((s) => s.exitMs), digits: 0, combine: 'max' },
  { label: 'drain duration_ms from the log (median)', ...stoppedOf((s) => s.drainMs), digits: 0, combine: 'median' },
  { label: 'exits with code 0 (sum)', ...stoppedOf((s) => (s.how === 'code 0' ? 1 : 0)), digits: 0, combine: 'sum' },
  { label: 'ended by SIGKILL (sum)', ...stoppedOf((s) => (s.how === 'signal SIGKILL' ? 1 : 0)), digits: 0, combine: 'sum' },
  { label: 'all_acknowledged true (sum)', ...stoppedOf((s) => (s.allAcknowledged === true ? 1 : 0)), digits: 0, combine: 'sum' },
  { label: 'puts/s before the signal (median)', ...loadedOf((d) => d.putsPerSecond), digits: 0, combine: 'median' },
  { label: 'puts in flight at SIGTERM (median)', ...loadedOf((d) => d.answers.inFlight), digits: 0, combine: 'median' },
  { label: '  real answers (median)', ...loadedOf((d) => d.answers.real), digits: 0, combine: 'median' },
  { label: '  UNAVAILABLE (median)', ...loadedOf((d) => d.answers.unavailable), digits: 0, combine: 'median' },
  { label: '  in flight, all runs (sum)', ...loadedOf((d) => d.answers.inFlight), digits: 0, combine: 'sum' },
  { label: '  real answers, all runs (sum)', ...loadedOf((d) => d.answers.real), digits: 0, combine: 'sum' },
  { label: '  UNAVAILABLE, all runs (sum)', ...loadedOf((d) => d.answers.unavailable), digits: 0, combine: 'sum' },
  { label: 'puts sent after SIGTERM (median)', ...loadedOf((d) => d.after.inFlight), digits: 0, combine: 'median' },
  { label: '  real answers (median)', ...loadedOf((d) => d.after.real), digits: 0, combine: 'median' },
  { label: '  UNAVAILABLE (median)', ...loadedOf((d) => d.after.unavailable), digits: 0, combine: 'median' },
  { label: 'sessions with a lost acknowledged write (sum)', ...loadedOf((d) => d.checked.lost + d.checked.unread), digits: 0, combine: 'sum' },
  { label: 'sessions holding a value answered UNAVAILABLE (sum)', ...loadedOf((d) => d.checked.appliedUnanswered), digits: 0, combine: 'sum' },
  { label: 'restart → /readyz, ms (median)', rolling: (r) => r.rolling.map((x) => x.readyMs), digits: 0, combine: 'median' },
];

function combine(values: number[], how: Figure['combine']): number {
  if (values.length === 0) return NaN;
  if (how === 'sum') return values.reduce((a, b) => a + b, 0);
  if (how === 'max') return Math.max(...values);
  return median(values);
}

function printReport(results: RunResult[]): void {
  const column = (pick: ((r: RunResult) => number[]) | undefined, f: Figure) =>
    pick === undefined ? '' : fmt(combine(results.flatMap(pick), f.combine), f.digits);
  const drains = (n: number) => `${n} drain${n === 1 ? '' : 's'}`;
  const rollingCount = results.reduce((n, r) => n + r.rolling.length, 0);
  console.log(`\n=== ${results.length} run${results.length === 1 ? '' : 's'} (medians, maxima or sums over runs as marked) ===`);
  console.log(
    formatTable(
      ['figure', `(a) idle, ${drains(results.length)}`, `(b) under load, ${drains(results.length)}`, `(c) rolling restart, ${drains(rollingCount)}`],
      FIGURES.map((f) => [f.label, column(f.idle, f), column(f.loaded, f), column(f.rolling, f)]),
    ),
  );
  const idle = median(results.map((r) => r.idle.exitMs));
  const loaded = median(results.map((r) => r.loaded.exitMs));
  const rolling = median(results.flatMap((r) => r.rolling.map((x) => x.drain.exitMs)));
  console.log(
    `\nSIGTERM → exit, ratio to idle (medians): (b) ${fmt(loaded / idle, 1)}×, (c) ${fmt(rolling / idle, 1)}×; ` +
      `rolling restart of ${NODES} nodes, first SIGTERM to the last node ready: ${fmt(median(results.map((r) => r.rollingMs)) / 1000, 1)} s (median)`,
  );
  const all = results.flatMap((r) => [r.idle, r.loaded, ...r.rolling.map((x) => x.drain)]);
  const within = all.filter((s) => s.how === 'code 0' && s.exitMs <= DRAIN_TIMEOUT_SECONDS * 1000 + 2000).length;
  console.log(`every SIGTERM exits 0 within the drain timeout (${DRAIN_TIMEOUT_SECONDS} s, + 2 s to leave): ${within} of ${all.length} — ${within === all.length ? 'met' : 'MISSED'}`);
}

// --- main ------------------------------------------------------------------------------

async function main(): Promise<void> {
  const disarm = handleInterruptions(MAX_MINUTES);
  console.log('baton drain benchmark\n');
  console.log(describeMachine(machineInfo()));
  console.log(
    `\ncluster: ${NODES} baton sidecars (unicast, sealed), --replicas ${REPLICAS}, --drain-timeout-seconds ${DRAIN_TIMEOUT_SECONDS}; ` +
      `SIGKILL ${KILL_AFTER_MS / 1000} s after SIGTERM if still running; sidecar ${BATON_BIN}`,
  );
  console.log(
    `load: ${RESUMED_SESSIONS} sessions resumed on the other nodes, a Watch and an idle Exchange stream on the node, ` +
      `2 clients × ${IN_FLIGHT} puts in flight (min_replicas 0 and 1) for ${LOAD_SESSIONS} sessions each, ${LOAD_SECONDS} s, then SIGTERM ` +
      `(each caller goes on until its first UNAVAILABLE); ${RUNS} run${RUNS > 1 ? 's' : ''}\n`,
  );
  const results: RunResult[] = [];
  for (let r = 1; r <= RUNS && !interruption.requested; r++) {
    try {
      const result = await run(r);
      if (!interruption.requested) results.push(result);
    } catch (err) {
      console.log(`  run ${r}: FAILED: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    }
  }
  if (results.length > 0) printReport(results);
  disarm();
}

runMain(main);
