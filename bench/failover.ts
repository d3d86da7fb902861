/**
 * Failover benchmark: a node dies under load; how fast, and how completely, do its
 * sessions come back on the survivors?
 *
 * Each run starts four `baton sidecar` processes (unicast, sealed with a cluster key,
 * --replicas 2, short failure detection) and, once for each BENCH_MIN_REPLICAS value, on a
 * fresh cluster:
 *   1. preloads BENCH_SESSIONS sessions on the victim (it owns them), three parts each
 *      (profile 160 B, prefs 64 B, counter 32 B), written with min_replicas 1;
 *   2. runs a steady write load on the victim: BENCH_WRITE_RATE puts/s, each rewriting the
 *      counter part of a random session with a number no other put uses, with that run's
 *      min_replicas, and records every acknowledged write (session, number, time of the
 *      acknowledgement);
 *   3. after BENCH_LOAD_SECONDS (plus a random part of KILL_JITTER_MS, so the kill is not
 *      in step with the load's batches) SIGKILLs the victim while puts are in flight, and at
 *      once resumes every session on survivor A through BatonClient over Exchange
 *      (BENCH_RESUME_CONCURRENCY in flight; a failed resume is retried after 20 ms, at most
 *      RESUME_ATTEMPTS times): peer-fetch latency under that load, the time until every
 *      session has been resumed, and lost writes = acknowledged writes whose number is
 *      above the counter the resume returned;
 *   4. from the kill on, polls the survivors every POLL_MS (below);
 *   5. resumes every session on A again (A owns them now): local latency at the same
 *      concurrency;
 *   6. resumes BENCH_SERIAL_SESSIONS of them on survivor B one at a time (peer fetch, owner
 *      alive), then the same ones on B again one at a time (local): latency of a single
 *      request, without queueing behind others. Every one-at-a-time call is made and timed
 *      in a process of its own (support/one-at-a-time-client.ts), not in this one, whose
 *      heap holds the whole run. Before these, every survivor is warmed
 *      (warmSurvivors: BENCH_WARMUP other sessions resumed on each in turn, from the one
 *      before, then again locally and read without resume, twice round): a sidecar that has
 *      served for a while has its resume, Get and Lookup paths compiled; the first few
 *      thousand calls of a fresh process run while the compiler works on the same two
 *      cores (this VM: a single hop's p99 2-3 ms over the first 2,000 calls, 0.4-0.6 ms
 *      after). Baselines in the same run: the same sessions read on B
 *      without resume (one gRPC hop, local state), and looked up on A over PeerService.Lookup
 *      (the peer hop a resume adds) — a peer resume is those two in a row.
 *   7. BENCH_HELD_BACK sessions are left out of the flood, so the survivors' partition masters
 *      claim them by takeover before any client asks. After the polls, each is located
 *      (ClusterService.Locate) and resumed one at a time on the node that owns it then — the
 *      new master, a local resume — and then on another survivor (one hop to the master).
 *      Like the serial passes, which stay on B, these go to one node (one pair of nodes)
 *      after another: on an idle cluster a call to a process idle since its last call waits
 *      to be woken, which on a VM is most of a sub-millisecond tail. The resumes on the
 *      owner run again interleaved (every call to another owner than the last) and are
 *      reported beside.
 *
 * Back to full replication, three ways, each in ms after the kill:
 * - the gauge baton_partitions_under_replicated reads 0 on every survivor, after having
 *   read above 0 on one (before the victim is declared dead it reads 0 too);
 * - every survivor holds every session (session counts of PeerService.Digests). With four
 *   nodes and --replicas 2 a partition is held by three nodes, so after one dies the
 *   three survivors should each hold every session (owner + 2 secondaries). With three
 *   nodes and --replicas 2 that would be impossible after a death: two survivors cannot
 *   hold three copies;
 * - the survivors are identical (equal digests of every partition), from the start of the
 *   last run of equal polls: the claims the resumes make break equality until they reach
 *   the other two survivors, so this one includes the resumes.
 * The same polls give when every survivor counts the victim dead.
 *
 * Environment: BENCH_RUNS (3), BENCH_SESSIONS (10000), BENCH_WRITE_RATE (2000),
 * BENCH_LOAD_SECONDS (3), BENCH_RESUME_CONCURRENCY (64), BENCH_SERIAL_SESSIONS (1000), BENCH_WARMUP (1500),
 * BENCH_MIN_REPLICAS ("1,0"), BENCH_HELD_BACK (200), BENCH_REPLICATION_TIMEOUT_SECONDS (60), BENCH_MAX_MINUTES
 * (20, whole-run watchdog), BENCH_QUIET_WAIT_SECONDS (see bench/children.ts),
 * BENCH_SIDECAR_NODE_ARGS (extra node flags for the sidecars, e.g. --cpu-prof), BENCH_QUORUM (0: the
 * sidecars' --quorum).
 *
 * Every loop is bounded in count and time; every child process is stopped at the end, on
 * error and on Ctrl-C (SIGTERM, then SIGKILL; an exit hook kills any left).
 */
import { randomBytes } from 'node:crypto';
import { credentials, Metadata } from '@grpc/grpc-js';
import { ClusterServiceClient, type LocateResponse } from '../src/gen/baton/v1/cluster';
import type { Session } from '../src/client/client';
import { parseClusterKeys } from '../src/wire/cluster-key';
import type { PartitionDigest } from '../src/gen/baton/v1/peer';
import { peerTlsFromKeys } from '../src/wire/peer-tls';
import { PeerClients, PeerCredentials } from '../sidecar/transport/peer-service';
import { cpuSecondsOf, handleInterruptions, interruption, machineBusyCpuSeconds, ownCpuSeconds, quietWaitSeconds, runMain, sleep, waitForQuiet } from './children';
import { freePeerPorts, startReplica, type Replica } from './replication-cluster';
import {
  describeMachine,
  envNumber,
  formatCount,
  formatFixed,
  formatTable,
  IndexPicker,
  LatencySamples,
  machineInfo,
  median,
  quantileOfSorted,
} from './stats';
import { histogramQuantile, scrape, type Scrape } from './support/prometheus-scrape';
import { answeredSession, OneAtATimeClient, type AnsweredSession, type OnePass } from './support/one-at-a-time-client';

const RUNS = Math.round(envNumber('BENCH_RUNS', 3));
/** --quorum of every sidecar (0: off). */
const QUORUM = Math.round(envNumber('BENCH_QUORUM', 0));
const SESSIONS = Math.round(envNumber('BENCH_SESSIONS', 10_000));
const WRITE_RATE = envNumber('BENCH_WRITE_RATE', 2000);
const LOAD_SECONDS = envNumber('BENCH_LOAD_SECONDS', 3);
const RESUME_CONCURRENCY = Math.round(envNumber('BENCH_RESUME_CONCURRENCY', 64));
const SERIAL_SESSIONS = Math.min(SESSIONS, Math.round(envNumber('BENCH_SERIAL_SESSIONS', 1000)));
/** Sessions warmSurvivors resumes on every survivor before the one-at-a-time passes (not measured). */
const WARMUP = Math.max(0, Math.min(SESSIONS - SERIAL_SESSIONS, Math.round(envNumber('BENCH_WARMUP', 1500))));
/** Sessions the flood leaves to takeover (and to step 7's resumes on the new master and elsewhere). */
const HELD_BACK = Math.max(0, Math.min(Math.round(envNumber('BENCH_HELD_BACK', 200)), SESSIONS - SERIAL_SESSIONS - WARMUP));
const MIN_REPLICAS = (process.env.BENCH_MIN_REPLICAS ?? '1,0').split(',').map((s) => Number(s.trim()));
const REPLICATION_TIMEOUT_MS = envNumber('BENCH_REPLICATION_TIMEOUT_SECONDS', 60) * 1000;
const MAX_MINUTES = envNumber('BENCH_MAX_MINUTES', 20);
const SIDECAR_NODE_ARGS = (process.env.BENCH_SIDECAR_NODE_ARGS ?? '').split(/\s+/).filter((a) => a !== '');

const NODES = 4;
const REPLICAS = 2;
const PARTITIONS = 256;
/** Failure detection short enough for a benchmark (the defaults are 250/1000/3000 ms). */
const HEARTBEAT_INTERVAL_MS = 100;
const SUSPECT_AFTER_MS = 500;
const DEAD_AFTER_MS = 1500;

const PROFILE_BYTES = 160;
const PREFS_BYTES = 64;
const COUNTER_BYTES = 32;
/** Puts in flight at most, preload and write load alike. */
const PUTS_IN_FLIGHT = 256;
const PRELOAD_TIMEOUT_MS = 120_000;
const PRELOAD_ATTEMPTS = 3;
/** The kill comes at BENCH_LOAD_SECONDS plus a random part of this. */
const KILL_JITTER_MS = 2;
const RESUME_ATTEMPTS = 50;
const RESUME_RETRY_MS = 20;
/** A resume pass (all sessions, retries included) gives up after this long. */
const RESUME_PASS_TIMEOUT_MS = 60_000;
/** Polls scrape every survivor: often enough for figures in seconds, rarely enough not to load them. */
const POLL_MS = 100;
/** Full replication counts once the survivors' digests stayed equal this long after the resumes. */
const STABLE_MS = 500;
/** Lost writes with min_replicas 0 should all have been acknowledged at most this long before the kill. */
const FEW_MS = 10;
/** Issue 16: every orphaned partition has a master again within failure detection plus this long. */
const MASTER_AFTER_DETECTION_MS = 100;
const UNDER_REPLICATED = 'baton_partitions_under_replicated';

for (const n of MIN_REPLICAS) {
  if (!Number.isInteger(n) || n < 0 || n > REPLICAS) throw new Error(`BENCH_MIN_REPLICAS must list whole numbers from 0 to ${REPLICAS}, got '${process.env.BENCH_MIN_REPLICAS}'`);
}

function nowNs(): bigint {
  return process.hrtime.bigint();
}

function msBetween(from: bigint, to: bigint): number {
  return Number(to - from) / 1e6;
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message.split('\n')[0]! : String(err);
}

// --- the sessions ----------------------------------------------------------------------

/** Session ids and the parts the preload wrote; the counter part is what the load rewrites. */
class Sessions {
  readonly ids: string[] = [];
  private readonly profileBase = randomBytes(PROFILE_BYTES);
  private readonly prefsBase = randomBytes(PREFS_BYTES);

  constructor(count: number) {
    for (let i = 0; i < count; i++) this.ids.push(randomBytes(16).toString('hex'));
  }

  profile(index: number): Buffer {
    const value = Buffer.from(this.profileBase);
    value.writeUInt32BE(index, 0);
    return value;
  }

  prefs(index: number): Buffer {
    const value = Buffer.from(this.prefsBase);
    value.writeUInt32BE(index, 0);
    return value;
  }

  static counter(n: number): Buffer {
    const value = Buffer.alloc(COUNTER_BYTES);
    value.writeUInt32BE(n, 0);
    return value;
  }
}

/** What a resume returned, checked against what the preload wrote. */
interface Resumed {
  counter: number;
  /** Profile or prefs missing or changed, or the owner not the resuming node. */
  problem: string | undefined;
}

function inspect(sessions: Sessions, index: number, session: AnsweredSession | Session, expectedOwner: string): Resumed {
  const part = (name: string) => session.parts.find((p) => p.name === name)?.value;
  const counter = part('counter');
  const profile = part('profile');
  const prefs = part('prefs');
  let problem: string | undefined;
  if (counter === undefined || counter.length !== COUNTER_BYTES) problem = 'counter part missing';
  else if (profile === undefined || !Buffer.from(profile).equals(sessions.profile(index))) problem = 'profile part missing or changed';
  else if (prefs === undefined || !Buffer.from(prefs).equals(sessions.prefs(index))) problem = 'prefs part missing or changed';
  else if (session.ownerNodeId !== expectedOwner) problem = `owner is ${session.ownerNodeId}, not ${expectedOwner}`;
  const value = counter === undefined || counter.length < 4 ? -1 : Buffer.from(counter).readUInt32BE(0);
  return { counter: value, problem };
}

// --- the cluster -----------------------------------------------------------------------

/**
 * Partition digests and session counts of peers over PeerService.Digests (the shared
 * DigestReader of bench/replication-cluster.ts returns digests only).
 */
class PartitionReader {
  private readonly clients: PeerClients;

  constructor(clusterKey: string) {
    this.clients = new PeerClients(new PeerCredentials(peerTlsFromKeys(parseClusterKeys(clusterKey), 'bench-partition-reader', Date.now())));
  }

  read(peerAddress: string): Promise<PartitionDigest[]> {
    return new Promise((resolve, reject) => {
      this.clients.client(peerAddress).digests({ partitions: [] }, new Metadata(), { deadline: Date.now() + 5000 }, (err, response) =>
        err ? reject(err) : resolve(response.partitions),
      );
    });
  }

  close(): void {
    this.clients.close();
  }
}

interface Cluster {
  nodes: Replica[];
  victim: Replica;
  /** The survivor that resumes every session right after the kill. */
  resumer: Replica;
  /** The survivor the one-at-a-time resumes run on. */
  serial: Replica;
  survivors: Replica[];
  partitions: PartitionReader;
  /** The process the one-at-a-time calls are made and timed in. */
  measuring: OneAtATimeClient;
}

async function startCluster(stoppers: (() => Promise<unknown>)[]): Promise<Cluster> {
  const key = randomBytes(32).toString('base64');
  const ports = await freePeerPorts(NODES);
  const peers = ports.map((p) => `127.0.0.1:${p}`).join(',');
  const flags = [
    '--peers',
    peers,
    '--replicas',
    String(REPLICAS),
    '--partitions',
    String(PARTITIONS),
    '--heartbeat-interval-ms',
    String(HEARTBEAT_INTERVAL_MS),
    '--suspect-after-ms',
    String(SUSPECT_AFTER_MS),
    '--dead-after-ms',
    String(DEAD_AFTER_MS),
    ...(QUORUM > 0 ? ['--quorum', String(QUORUM)] : []),
  ];
  const nodes: Replica[] = [];
  process.env.BATON_CLUSTER_KEY = key;
  try {
    const started = await Promise.all(
      ports.map((port, i) => startReplica(`n${i + 1}`, [...flags, '--peer-listen', `127.0.0.1:${port}`], SIDECAR_NODE_ARGS).then((node) => {
        stoppers.push(async () => {
          node.client.close();
          return node.child.stop(5000);
        });
        return node;
      })),
    );
    nodes.push(...started);
  } finally {
    delete process.env.BATON_CLUSTER_KEY;
  }
  const partitions = new PartitionReader(key);
  stoppers.push(async () => partitions.close());
  const measuring = OneAtATimeClient.start(key);
  stoppers.push(async () => measuring.stop());
  const [victim, resumer, serial] = nodes as [Replica, Replica, Replica, Replica];
  const cluster = { nodes, victim, resumer, serial, survivors: nodes.filter((n) => n !== victim), partitions, measuring };
  await waitForAlive(nodes, NODES, 20_000);
  return cluster;
}

/** Waits until every node in `nodes` counts `alive` live members. */
async function waitForAlive(nodes: readonly Replica[], alive: number, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const scrapes = await Promise.all(nodes.map((n) => scrape(n.metricsUrl).catch(() => undefined)));
    if (scrapes.every((s) => s !== undefined && s.value('baton_cluster_members', { state: 'alive' }) === alive)) return;
    if (Date.now() > until || interruption.requested) throw new Error(`the nodes did not all see ${alive} live members within ${timeoutMs} ms`);
    await sleep(50);
  }
}

// --- preload and write load ---------------------------------------------------------------

/** Writes every session on the victim (min_replicas 1); a failed put is tried again, at most PRELOAD_ATTEMPTS times. */
async function preload(cluster: Cluster, sessions: Sessions): Promise<{ seconds: number; retried: number }> {
  const client = cluster.victim.client;
  const started = nowNs();
  const deadline = Date.now() + PRELOAD_TIMEOUT_MS;
  const queue = sessions.ids.map((_, index) => ({ index, attempts: 0 }));
  let retried = 0;
  let failed: string | undefined;
  const worker = async () => {
    for (;;) {
      const item = queue.shift();
      if (item === undefined || failed !== undefined) return;
      if (Date.now() > deadline || interruption.requested) {
        failed = `preload did not finish within ${PRELOAD_TIMEOUT_MS} ms`;
        return;
      }
      item.attempts++;
      const i = item.index;
      const parts = { profile: sessions.profile(i), prefs: sessions.prefs(i), counter: Sessions.counter(0) };
      try {
        await client.put(sessions.ids[i]!, parts, { minReplicas: 1 });
      } catch (err) {
        if (item.attempts >= PRELOAD_ATTEMPTS) failed = `a preload put failed ${item.attempts} times: ${messageOf(err)}`;
        retried++;
        queue.push(item);
      }
    }
  };
  await Promise.all(Array.from({ length: PUTS_IN_FLIGHT }, worker));
  if (failed !== undefined) throw new Error(failed);
  return { seconds: msBetween(started, nowNs()) / 1000, retried };
}

/** Waits until the nodes' applied-delta counters stop moving (replication of the preload done). */
async function waitReplicationQuiet(nodes: readonly Replica[], timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  let last = -1;
  while (Date.now() < until && !interruption.requested) {
    const scrapes = await Promise.all(nodes.map((n) => scrape(n.metricsUrl)));
    const applied = scrapes.reduce((sum, s) => sum + s.value('baton_replication_deltas_applied_total'), 0);
    if (applied === last) return;
    last = applied;
    await sleep(200);
  }
}

interface Ack {
  index: number;
  value: number;
  at: bigint;
}

interface LoadResult {
  killedAt: bigint;
  issued: number;
  acks: Ack[];
  /** Puts that failed before the kill (after it, failures are expected: the stream ends). */
  errorsBeforeKill: number;
  firstError: string | undefined;
  /** Put latency quantiles (ms) of the acknowledged puts. */
  putP50: number;
  putP99: number;
  inFlightAtKill: number;
  /** Resolves when every put issued has settled (the victim's stream has ended). */
  settled: Promise<void>;
}

/**
 * Steady puts on the victim at WRITE_RATE for LOAD_SECONDS, then SIGKILL while puts are in
 * flight. Returns right after the kill; acknowledgements already on their way keep being
 * recorded until `settled`.
 */
async function loadThenKill(cluster: Cluster, sessions: Sessions, minReplicas: number): Promise<LoadResult> {
  const client = cluster.victim.client;
  const picker = new IndexPicker(sessions.ids.length, Number(nowNs() & 0xffffffffn));
  const acks: Ack[] = [];
  const latency = new LatencySamples(Math.ceil(WRITE_RATE * LOAD_SECONDS * 2) + 1024);
  const pending = new Set<Promise<unknown>>();
  let issued = 0;
  let errorsBeforeKill = 0;
  let firstError: string | undefined;
  let killedAt: bigint | undefined;
  const started = nowNs();
  // The kill comes at a random moment of the steady load, not in step with its batches.
  const killAt = started + BigInt(Math.round((LOAD_SECONDS + Math.random() * KILL_JITTER_MS / 1000) * 1e9));
  while (!interruption.requested) {
    const now = nowNs();
    if (now >= killAt) break;
    const due = Math.floor((WRITE_RATE * Number(now - started)) / 1e9) + 1;
    while (issued < due && pending.size < PUTS_IN_FLIGHT) {
      const index = picker.next();
      const value = ++issued;
      const sent = nowNs();
      const put = client.put(sessions.ids[index]!, { counter: Sessions.counter(value) }, { minReplicas }).then(
        () => {
          const at = nowNs();
          acks.push({ index, value, at });
          latency.add(Number(at - sent));
        },
        (err: unknown) => {
          if (killedAt !== undefined) return;
          errorsBeforeKill++;
          firstError ??= messageOf(err);
        },
      );
      pending.add(put);
      void put.finally(() => pending.delete(put));
    }
    // Timers pace the load (~1 ms granularity); the last stretch spins on setImmediate so
    // the kill lands on time, with puts still being issued and acknowledged.
    if (killAt - nowNs() > 1_500_000n) await sleep(1);
    else await new Promise<void>((resolve) => setImmediate(resolve));
  }
  const inFlightAtKill = pending.size;
  killedAt = nowNs();
  cluster.victim.child.process.kill('SIGKILL');
  const [putP50, putP99] = latency.quantilesMs(0.5, 0.99);
  return {
    killedAt,
    issued,
    acks,
    errorsBeforeKill,
    firstError,
    putP50: putP50!,
    putP99: putP99!,
    inFlightAtKill,
    settled: Promise.all([...pending]).then(() => undefined),
  };
}

// --- resumes ---------------------------------------------------------------------------------

interface ResumePass {
  latency: LatencySamples;
  /** Each successful resume: when it started (ms after `since`) and how long it took (ms). */
  samples: { startMs: number; ms: number }[];
  /** ms from `since` to the last successful resume. */
  doneMs: number;
  resumed: (Resumed | undefined)[];
  failures: number;
  notFound: number;
  firstFailure: string | undefined;
  unresumed: number;
}

/**
 * Resumes the sessions `indexes` on `node` with `concurrency` in flight, retrying failures
 * (with `resume` false: reads them, for a baseline).
 */
async function resumePass(
  node: Replica,
  sessions: Sessions,
  indexes: readonly number[],
  concurrency: number,
  since: bigint,
  resume = true,
  resumed: (Resumed | undefined)[] = new Array(sessions.ids.length),
): Promise<ResumePass> {
  const latency = new LatencySamples(indexes.length * 2);
  const samples: { startMs: number; ms: number }[] = [];
  const queue = indexes.map((index) => ({ index, attempts: 0 }));
  const deadline = Date.now() + RESUME_PASS_TIMEOUT_MS;
  let failures = 0;
  let notFound = 0;
  let firstFailure: string | undefined;
  let lastDone = since;
  let unresumed = 0;
  const worker = async () => {
    for (;;) {
      const item = queue.shift();
      if (item === undefined) return;
      if (Date.now() > deadline || interruption.requested) {
        unresumed++;
        continue;
      }
      item.attempts++;
      const started = nowNs();
      let session: Session | undefined;
      let failure: string | undefined;
      try {
        session = await node.client.get(sessions.ids[item.index]!, { resume });
        if (session === undefined) {
          notFound++;
          failure = 'not found';
        }
      } catch (err) {
        failures++;
        failure = messageOf(err);
      }
      const done = nowNs();
      if (failure === undefined) {
        latency.add(Number(done - started));
        samples.push({ startMs: msBetween(since, started), ms: msBetween(started, done) });
        resumed[item.index] = inspect(sessions, item.index, session!, node.nodeId);
        if (done > lastDone) lastDone = done;
        continue;
      }
      firstFailure ??= failure;
      if (item.attempts >= RESUME_ATTEMPTS) {
        unresumed++;
        continue;
      }
      await sleep(RESUME_RETRY_MS);
      queue.push(item);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, concurrency) }, worker));
  return { latency, samples, doneMs: msBetween(since, lastDone), resumed, failures, notFound, firstFailure, unresumed };
}

/**
 * Every survivor's resume paths, and the measuring client's, compiled before the
 * one-at-a-time passes, the same on each (the flood warmed the resumer alone): `pool` is
 * resumed on each survivor in turn — a peer resume there, answered by the one before, which
 * owned the pool — then resumed again (local) and read without resume; twice round.
 */
async function warmSurvivors(cluster: Cluster, sessions: Sessions, pool: readonly number[]): Promise<void> {
  for (let round = 0; round < 2; round++) {
    for (const node of cluster.survivors) {
      await oneAtATime(cluster, sessions, pool, () => node, true, false);
      await oneAtATime(cluster, sessions, pool, () => node, true, false);
      await oneAtATime(cluster, sessions, pool, () => node, false, false);
    }
  }
}

/** The measuring client's collection pauses inside the measured passes, this run (ms). */
const clientPauses = { scavengeMs: 0, majorMs: 0 };

function countPauses(gc: OnePass['gc']): void {
  clientPauses.scavengeMs += gc.scavengeMs;
  clientPauses.majorMs += gc.majorMs;
}

/** One-at-a-time calls' figures: latency (ms) per call that answered, in call order and per node; what came back. */
interface OneAtATimePass {
  samples: number[];
  byNode: Map<string, number[]>;
  resumed: (Resumed | undefined)[];
  /** Calls that failed or found nothing. */
  failures: number;
}

/**
 * Gets (with `resume` or without) of `indexes`, one at a time, each on the node `nodeFor`
 * picks (skipped when undefined), from the measuring client; a `measured` pass adds its
 * collection pauses to clientPauses.
 */
async function oneAtATime(
  cluster: Cluster,
  sessions: Sessions,
  indexes: readonly number[],
  nodeFor: (index: number) => Replica | undefined,
  resume: boolean,
  measured = true,
): Promise<OneAtATimePass> {
  const picked: { index: number; node: Replica }[] = [];
  for (const index of indexes) {
    const node = nodeFor(index);
    if (node !== undefined && !interruption.requested) picked.push({ index, node });
  }
  const pass = await cluster.measuring.run(picked.map(({ index, node }) => ({ kind: 'get', address: node.apiAddress, sessionId: sessions.ids[index]!, resume })));
  if (measured) countPauses(pass.gc);
  const out: OneAtATimePass = { samples: [], byNode: new Map(), resumed: new Array(sessions.ids.length), failures: 0 };
  pass.results.forEach((result, i) => {
    const { index, node } = picked[i]!;
    const session = answeredSession(result);
    if (session === undefined) {
      out.failures++;
      return;
    }
    out.samples.push(result.ms);
    let mine = out.byNode.get(node.nodeId);
    if (mine === undefined) out.byNode.set(node.nodeId, (mine = []));
    mine.push(result.ms);
    out.resumed[index] = inspect(sessions, index, session, node.nodeId);
  });
  return out;
}

/** One PeerService.Lookup round trip per session, one at a time, from the measuring client to the resumer (a peer resume's hop, without the resume): ms each. */
async function lookupEach(cluster: Cluster, sessions: Sessions, indexes: readonly number[]): Promise<number[]> {
  const pass = await cluster.measuring.run(indexes.map((index) => ({ kind: 'lookup', peerAddress: cluster.resumer.peerAddress, sessionId: sessions.ids[index]! })));
  countPauses(pass.gc);
  return pass.results.filter((r) => r.failure === undefined).map((r) => r.ms);
}

// --- after the kill: detection and full replication ------------------------------------------

interface Watch {
  /** ms after the kill when every survivor counted the victim dead; NaN if never. */
  deadSeenMs: number;
  /** ms after the kill when the survivors together mastered every partition (each orphaned one has a master again); NaN if never. */
  mastersMs: number;
  /**
   * Sessions the survivors claimed by takeover (summed over survivors, highest seen while
   * polling): a takeover claims only sessions no live node owns, so each was claimed
   * proactively, before any client's resume reached it.
   */
  takeoverClaims: number;
  /** ms after the kill when every survivor held all the sessions (PeerService session counts). */
  copiesMs: number;
  /** ms after the kill when the gauge read 0 on every survivor after reading > 0 on one. */
  gaugeZeroMs: number;
  gauge: 'present' | 'missing' | 'never above 0';
  gaugePeak: number;
  /** Sessions each survivor held at the poll where the gauge reached 0 (empty if it did not). */
  sessionsAtGaugeZero: number[];
  /** ms after the kill to the start of the final run of polls with equal digests; NaN if not reached. */
  identicalMs: number;
  /** At the last poll: partitions whose digests differ, and the fewest sessions a survivor held. */
  differingAtEnd: number;
  fewestSessionsAtEnd: number;
  polls: number;
}

/**
 * Polls the survivors every POLL_MS from the kill until the resumes are done and their
 * digests have been equal for STABLE_MS (bounded by REPLICATION_TIMEOUT_MS after the kill).
 */
async function watchSurvivors(cluster: Cluster, sessionCount: number, killedAt: bigint, resumesDone: () => boolean): Promise<Watch> {
  const w: Watch = {
    deadSeenMs: NaN,
    mastersMs: NaN,
    takeoverClaims: 0,
    copiesMs: NaN,
    gaugeZeroMs: NaN,
    gauge: 'missing',
    gaugePeak: 0,
    sessionsAtGaugeZero: [],
    identicalMs: NaN,
    differingAtEnd: NaN,
    fewestSessionsAtEnd: NaN,
    polls: 0,
  };
  let equalSince: bigint | undefined;
  let gaugeAboveZero = false;
  const until = killedAt + BigInt(REPLICATION_TIMEOUT_MS) * 1_000_000n;
  while (!interruption.requested) {
    const polledAt = nowNs();
    if (polledAt > until) break;
    w.polls++;
    const [partitions, scrapes] = await Promise.all([
      Promise.all(cluster.survivors.map((n) => cluster.partitions.read(n.peerAddress).catch(() => undefined))),
      Promise.all(cluster.survivors.map((n) => scrape(n.metricsUrl).catch(() => undefined))),
    ]);
    const sinceKill = msBetween(killedAt, polledAt);
    if (Number.isNaN(w.deadSeenMs) && scrapes.every((s) => s !== undefined && s.value('baton_cluster_members', { state: 'dead' }) >= 1)) {
      w.deadSeenMs = sinceKill;
    }
    // Each survivor counts the partitions it masters: they add up to all once every partition
    // the victim mastered has a new master (the victim mastered some, so not before the kill).
    const mastered = scrapes.reduce((sum, s) => sum + (s?.value('baton_partitions_mastered') ?? NaN), 0);
    if (Number.isNaN(w.mastersMs) && mastered >= PARTITIONS) w.mastersMs = sinceKill;
    const takeovers = scrapes.reduce((sum, s) => sum + (s?.sum('baton_sessions_claimed_total', { reason: 'takeover' }) ?? 0), 0);
    w.takeoverClaims = Math.max(w.takeoverClaims, takeovers);

    const totals = partitions.map((list) => (list === undefined ? NaN : list.reduce((sum, d) => sum + Number(d.sessions), 0)));
    const present = scrapes.some((s) => s !== undefined && s.has(UNDER_REPLICATED));
    if (present) {
      w.gauge = 'present';
      const values = scrapes.map((s) => (s === undefined ? NaN : s.value(UNDER_REPLICATED)));
      const peak = Math.max(...values.filter(Number.isFinite), 0);
      w.gaugePeak = Math.max(w.gaugePeak, peak);
      if (peak > 0) {
        gaugeAboveZero = true;
        w.gaugeZeroMs = NaN;
      } else if (gaugeAboveZero && Number.isNaN(w.gaugeZeroMs) && values.every((v) => v === 0)) {
        w.gaugeZeroMs = sinceKill;
        w.sessionsAtGaugeZero = totals;
      }
    }

    let differing = NaN;
    let fewest = NaN;
    if (partitions.every((list) => list !== undefined)) {
      const maps = partitions.map((list) => new Map(list!.map((d) => [d.partition, d])));
      fewest = Math.min(...totals);
      differing = 0;
      for (let p = 0; p < PARTITIONS; p++) {
        const first = maps[0]!.get(p)?.digest;
        if (first === undefined || maps.some((m) => m.get(p)?.digest !== first)) differing++;
      }
    }
    w.differingAtEnd = differing;
    w.fewestSessionsAtEnd = fewest;
    // Copies only grow after the kill (nothing deletes), so the first poll that finds them all counts.
    if (Number.isNaN(w.copiesMs) && fewest >= sessionCount) w.copiesMs = sinceKill;
    if (differing === 0) equalSince ??= polledAt;
    else equalSince = undefined;

    const gaugeSettled = w.gauge !== 'present' || !Number.isNaN(w.gaugeZeroMs);
    if (equalSince !== undefined && resumesDone() && gaugeSettled && msBetween(equalSince, polledAt) >= STABLE_MS) break;
    await sleep(POLL_MS);
  }
  if (equalSince !== undefined) w.identicalMs = msBetween(killedAt, equalSince);
  if (w.gauge === 'present' && !gaugeAboveZero) w.gauge = 'never above 0';
  return w;
}

/** What state transfers the survivors ran (all reasons, summed over survivors): the cost of repair after the kill. */
async function transferCounters(survivors: readonly { metricsUrl: string }[]): Promise<string> {
  const scrapes = await Promise.all(survivors.map((n) => scrape(n.metricsUrl).catch(() => undefined)));
  const sum = (name: string, labels: Record<string, string> = {}) => scrapes.reduce((total, s) => total + (s?.sum(name, labels) ?? 0), 0);
  const reasons = ['gap', 'join', 'placement', 'anti_entropy'].map((reason) => `${reason} ${sum('baton_replication_resyncs_total', { reason })}`);
  const claims = `sessions claimed by takeover ${sum('baton_sessions_claimed_total', { reason: 'takeover' })}, by resume ${sum('baton_sessions_claimed_total', { reason: 'resume' })}`;
  return `resyncs ${reasons.join(', ')}; sessions transferred ${sum('baton_sessions_transferred_total')}; ${claims}`;
}

// --- resumes of sessions taken over ----------------------------------------------------------

interface TakeoverResumes {
  /** Held-back sessions, and those a survivor owned when located (the rest: nobody). */
  heldBack: number;
  owned: number;
  /** Of the owned: owner = the partition's master (what takeover should give). */
  ownedByMaster: number;
  /**
   * One at a time on the owner, the sessions of one owner after another (as the serial
   * passes stay on one node): latency, and how many baton counted local.
   */
  onMaster: SplitLatency;
  /** onMaster's p99 per owner node ("n2 0.12 / n3 2.70 / …"). */
  onMasterByNode: string;
  onMasterLocal: number;
  /**
   * The same resumes again (local by then too), each to a different owner than the one
   * before: every call wakes a process that sat idle since its last one.
   */
  onMasterInterleaved: SplitLatency;
  /** Then one at a time on another survivor (one hop to the owner), grouped by that pair of nodes. */
  elsewhere: SplitLatency;
  /** elsewhere's p99 per resuming node. */
  elsewhereByNode: string;
  resumed: (Resumed | undefined)[];
  failures: number;
}

async function locateAll(node: Replica, ids: readonly string[]): Promise<(LocateResponse | undefined)[]> {
  const client = new ClusterServiceClient(node.apiAddress, credentials.createInsecure());
  try {
    const answers: (LocateResponse | undefined)[] = [];
    for (const sessionId of ids) {
      answers.push(
        await new Promise<LocateResponse>((resolve, reject) =>
          client.locate({ sessionId }, new Metadata(), { deadline: Date.now() + 3000 }, (err, response) => (err ? reject(err) : resolve(response))),
        ).catch(() => undefined),
      );
    }
    return answers;
  } finally {
    client.close();
  }
}

/** `indexes` reordered so that consecutive ones have different keys wherever possible (round robin over the keys). */
function interleave(indexes: readonly number[], keyOf: (index: number) => string): number[] {
  const queues = new Map<string, number[]>();
  for (const index of indexes) {
    const key = keyOf(index);
    const queue = queues.get(key);
    if (queue === undefined) queues.set(key, [index]);
    else queue.push(index);
  }
  const out: number[] = [];
  const lists = [...queues.values()];
  for (let i = 0; out.length < indexes.length; i++) for (const list of lists) if (i < list.length) out.push(list[i]!);
  return out;
}

/** p99 per node that answered, in node order: one slow node (a pause, a stall) shows as itself. */
function p99ByNode(byNode: ReadonlyMap<string, readonly number[]>): string {
  return [...byNode]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([nodeId, samples]) => `${nodeId} ${fmtMs(latencyOf(samples).p99, 2)}`)
    .join(' / ');
}

function latencyOf(samples: readonly number[]): SplitLatency {
  const sorted = [...samples].sort((a, b) => a - b);
  return { count: sorted.length, p50: quantileOfSorted(sorted, 0.5), p99: quantileOfSorted(sorted, 0.99) };
}

/**
 * Step 7: the held-back sessions, which no client asked for since the kill, located on the
 * resumer; each resumed on its owner then (the new master, if takeover claimed it), then on
 * another survivor.
 */
async function resumeTakenOver(cluster: Cluster, sessions: Sessions, heldBack: readonly number[]): Promise<TakeoverResumes> {
  const located = await locateAll(cluster.resumer, heldBack.map((i) => sessions.ids[i]!));
  const byId = new Map(cluster.survivors.map((n) => [n.nodeId, n]));
  const owner = new Map<number, Replica>();
  let ownedByMaster = 0;
  heldBack.forEach((index, i) => {
    const answer = located[i];
    const node = answer?.owner === undefined ? undefined : byId.get(answer.owner.nodeId);
    if (node === undefined) return;
    owner.set(index, node);
    if (answer!.master?.nodeId === node.nodeId) ownedByMaster++;
  });
  // On an idle cluster a call to a process that sat idle waits for it to be woken and
  // scheduled (on this VM: p99 ×2-4 when every call goes to another node than the last):
  // the measured pass keeps each node busy with a run of calls, as the serial passes do.
  const nodeOrder = (node: Replica | undefined) => (node === undefined ? '' : node.nodeId);
  const byOwner = [...heldBack].sort((a, b) => nodeOrder(owner.get(a)).localeCompare(nodeOrder(owner.get(b))));
  const localBefore = await Promise.all(cluster.survivors.map((n) => scrape(n.metricsUrl).catch(() => undefined)));
  const onMaster = await oneAtATime(cluster, sessions, byOwner, (index) => owner.get(index), true);
  const localAfter = await Promise.all(cluster.survivors.map((n) => scrape(n.metricsUrl).catch(() => undefined)));
  const local = (list: (Scrape | undefined)[]) => list.reduce((sum, s) => sum + (s?.value('baton_resumes_total', { outcome: 'local' }) ?? NaN), 0);
  const interleaved = await oneAtATime(cluster, sessions, interleave(heldBack, (index) => nodeOrder(owner.get(index))), (index) => owner.get(index), true);
  const elsewhereOf = (index: number): Replica | undefined => {
    const at = owner.get(index);
    if (at === undefined) return undefined;
    const others = cluster.survivors.filter((n) => n !== at);
    return others[index % others.length];
  };
  const pairOf = (index: number) => `${nodeOrder(elsewhereOf(index))} ${nodeOrder(owner.get(index))}`;
  const elsewhere = await oneAtATime(cluster, sessions, [...heldBack].sort((a, b) => pairOf(a).localeCompare(pairOf(b))), elsewhereOf, true);
  const resumed = onMaster.resumed.map((r, i) => r ?? elsewhere.resumed[i]);
  return {
    heldBack: heldBack.length,
    owned: owner.size,
    ownedByMaster,
    onMaster: latencyOf(onMaster.samples),
    onMasterByNode: p99ByNode(onMaster.byNode),
    onMasterLocal: local(localAfter) - local(localBefore),
    onMasterInterleaved: latencyOf(interleaved.samples),
    elsewhere: latencyOf(elsewhere.samples),
    elsewhereByNode: p99ByNode(elsewhere.byNode),
    resumed,
    failures: onMaster.failures + elsewhere.failures,
  };
}

// --- one failover -------------------------------------------------------------------------------

interface FailoverResult {
  minReplicas: number;
  preloadSeconds: number;
  preloadRetried: number;
  puts: number;
  acked: number;
  putErrors: number;
  putFirstError: string | undefined;
  putP50: number;
  putP99: number;
  inFlightAtKill: number;
  /** Acknowledged writes whose number is above what the resume returned. */
  lostWrites: number;
  lostSessions: number;
  /** ms before the kill the oldest lost write was acknowledged (negative: acknowledged after the kill call returned). */
  oldestLostMs: number;
  allResumedMs: number;
  resumeFailures: number;
  resumeNotFound: number;
  firstResumeFailure: string | undefined;
  unresumed: number;
  damaged: number;
  firstDamage: string | undefined;
  peerP50: number;
  peerP99: number;
  /** Resumes per second of the flood (sessions ÷ time until all resumed). */
  resumesPerSecond: number;
  /** The flood's resumes that started before / after every survivor counted the victim dead. */
  beforeDead: SplitLatency;
  afterDead: SplitLatency;
  /** Server-side baton_resume_duration_seconds p99 bucket bound (ms) during the flood. */
  serverPeerP99: number;
  /** Peer fetches (one per peer asked per resume) during the flood, and those that failed. */
  peerFetches: number;
  peerFetchErrors: number;
  /** Mean duration (ms) of the flood's peer fetches that succeeded / failed. */
  fetchOkMeanMs: number;
  fetchErrorMeanMs: number;
  claims: number;
  localP50: number;
  localP99: number;
  localOutcomes: number;
  serialPeerP50: number;
  serialPeerP99: number;
  serialLocalP50: number;
  serialLocalP99: number;
  /** Baselines, one at a time: a Get without resume on B, a Lookup to A. */
  serialGetP50: number;
  serialGetP99: number;
  lookupP50: number;
  lookupP99: number;
  serialDamaged: number;
  /** Share of a core each survivor (resumer first) and the bench process used during the flood. */
  floodCpu: number[];
  benchCpu: number;
  /** Share of a core the rest of the machine used during the flood (other processes). */
  otherCpu: number;
  watch: Watch;
  takeover: TakeoverResumes;
  /** The measuring client's collection pauses inside the one-at-a-time passes (ms). */
  clientPauses: { scavengeMs: number; majorMs: number };
}

interface SplitLatency {
  count: number;
  p50: number;
  p99: number;
}

function splitLatency(samples: readonly { startMs: number; ms: number }[], keep: (startMs: number) => boolean): SplitLatency {
  const sorted = samples.filter((x) => keep(x.startMs)).map((x) => x.ms).sort((a, b) => a - b);
  return { count: sorted.length, p50: quantileOfSorted(sorted, 0.5), p99: quantileOfSorted(sorted, 0.99) };
}

async function runFailover(minReplicas: number, run: number): Promise<FailoverResult> {
  const stoppers: (() => Promise<unknown>)[] = [];
  try {
    const cluster = await startCluster(stoppers);
    const sessions = new Sessions(SESSIONS);
    const pre = await preload(cluster, sessions);
    if (pre.retried > 0) console.log(`    preload: ${pre.retried} puts failed once and were written again`);
    await waitReplicationQuiet(cluster.nodes, 10_000);
    const quiet = quietWaitSeconds();
    if (quiet > 0 && (await waitForQuiet(quiet)) < 0) console.log(`    (the machine was not quiet within ${quiet} s)`);
    const before = await scrape(cluster.resumer.metricsUrl);
    const cpuBefore = cluster.survivors.map((n) => cpuSecondsOf(n.child.process.pid));
    const ownCpuBefore = ownCpuSeconds();
    const machineBefore = machineBusyCpuSeconds();

    // Load, kill, and at once: resume everything on the resumer while watching the survivors.
    const load = await loadThenKill(cluster, sessions, minReplicas);
    let floodDone = false;
    const all = sessions.ids.map((_, i) => i);
    const flooded = all.slice(0, SESSIONS - HELD_BACK);
    const heldBack = all.slice(SESSIONS - HELD_BACK);
    const flooding = resumePass(cluster.resumer, sessions, flooded, RESUME_CONCURRENCY, load.killedAt).finally(() => (floodDone = true));
    const watching = watchSurvivors(cluster, SESSIONS, load.killedAt, () => floodDone);
    const flood = await flooding;
    const floodSeconds = flood.doneMs / 1000;
    const floodCpu = cluster.survivors.map((n, i) => (cpuSecondsOf(n.child.process.pid) - cpuBefore[i]!) / floodSeconds);
    const benchCpu = (ownCpuSeconds() - ownCpuBefore) / floodSeconds;
    // Everything else on the machine (other work, the victim's last moments): contention.
    const otherCpu = (machineBusyCpuSeconds() - machineBefore) / floodSeconds - benchCpu - floodCpu.reduce((a, b) => a + b, 0);
    const afterFlood = await scrape(cluster.resumer.metricsUrl);
    const watch = await watching;
    console.log(`    survivors: ${await transferCounters(cluster.survivors)}`);
    await Promise.race([load.settled, sleep(10_000)]);
    cluster.victim.client.close();

    // Local resumes on the new owner, same concurrency.
    const local = await resumePass(cluster.resumer, sessions, flooded, RESUME_CONCURRENCY, nowNs());
    const afterLocal = await scrape(cluster.resumer.metricsUrl);

    // One at a time on another survivor: peer fetch (the owner alive), then local.
    const sample = all.slice(0, SERIAL_SESSIONS);
    await warmSurvivors(cluster, sessions, all.slice(SERIAL_SESSIONS, SERIAL_SESSIONS + WARMUP));
    clientPauses.scavengeMs = 0;
    clientPauses.majorMs = 0;
    const onSerial = () => cluster.serial;
    const serialPeer = await oneAtATime(cluster, sessions, sample, onSerial, true);
    const serialLocal = await oneAtATime(cluster, sessions, sample, onSerial, true);
    const serialGet = await oneAtATime(cluster, sessions, sample, onSerial, false);
    const lookups = await lookupEach(cluster, sessions, sample);
    const serialDamaged = [...serialPeer.resumed, ...serialLocal.resumed].filter((r) => r?.problem !== undefined).length;
    const takeover = await resumeTakenOver(cluster, sessions, heldBack);

    // Lost writes: acknowledged numbers above what the resume returned.
    let lostWrites = 0;
    let oldestLostMs = NaN;
    const lostSessions = new Set<number>();
    for (const ack of load.acks) {
      const got = flood.resumed[ack.index] ?? takeover.resumed[ack.index];
      if (got === undefined || got.counter >= ack.value) continue;
      lostWrites++;
      lostSessions.add(ack.index);
      const age = msBetween(ack.at, load.killedAt);
      oldestLostMs = Number.isNaN(oldestLostMs) ? age : Math.max(oldestLostMs, age);
    }
    const damage = [...flood.resumed, ...takeover.resumed].filter((r) => r?.problem !== undefined);

    const [peerP50, peerP99] = flood.latency.quantilesMs(0.5, 0.99);
    const [localP50, localP99] = local.latency.quantilesMs(0.5, 0.99);
    const { p50: serialPeerP50, p99: serialPeerP99 } = latencyOf(serialPeer.samples);
    const { p50: serialLocalP50, p99: serialLocalP99 } = latencyOf(serialLocal.samples);
    const { p50: serialGetP50, p99: serialGetP99 } = latencyOf(serialGet.samples);
    const { p50: lookupP50, p99: lookupP99 } = latencyOf(lookups);
    const result: FailoverResult = {
      minReplicas,
      preloadSeconds: pre.seconds,
      preloadRetried: pre.retried,
      puts: load.issued,
      acked: load.acks.length,
      putErrors: load.errorsBeforeKill,
      putFirstError: load.firstError,
      putP50: load.putP50,
      putP99: load.putP99,
      inFlightAtKill: load.inFlightAtKill,
      lostWrites,
      lostSessions: lostSessions.size,
      oldestLostMs,
      allResumedMs: flood.unresumed > 0 ? NaN : flood.doneMs,
      resumeFailures: flood.failures,
      resumeNotFound: flood.notFound,
      firstResumeFailure: flood.firstFailure,
      unresumed: flood.unresumed,
      damaged: damage.length,
      firstDamage: damage[0]?.problem,
      peerP50: peerP50!,
      peerP99: peerP99!,
      resumesPerSecond: flood.unresumed > 0 ? NaN : (flooded.length * 1000) / flood.doneMs,
      beforeDead: splitLatency(flood.samples, (t) => !(t >= watch.deadSeenMs)),
      afterDead: splitLatency(flood.samples, (t) => t >= watch.deadSeenMs),
      serverPeerP99: histogramQuantile(before, afterFlood, 'baton_resume_duration_seconds', 0.99) * 1000,
      peerFetches: fetches(afterFlood, 'ok') + fetches(afterFlood, 'error') - fetches(before, 'ok') - fetches(before, 'error'),
      peerFetchErrors: fetches(afterFlood, 'error') - fetches(before, 'error'),
      fetchOkMeanMs: fetchMeanMs(before, afterFlood, 'ok'),
      fetchErrorMeanMs: fetchMeanMs(before, afterFlood, 'error'),
      claims: afterFlood.value('baton_claims_total') - before.value('baton_claims_total'),
      localP50: localP50!,
      localP99: localP99!,
      localOutcomes: afterLocal.value('baton_resumes_total', { outcome: 'local' }) - afterFlood.value('baton_resumes_total', { outcome: 'local' }),
      serialPeerP50,
      serialPeerP99,
      serialLocalP50,
      serialLocalP99,
      serialGetP50,
      serialGetP99,
      lookupP50,
      lookupP99,
      serialDamaged,
      floodCpu,
      benchCpu,
      otherCpu,
      watch,
      takeover,
      clientPauses: { ...clientPauses },
    };
    printRunLine(run, result, flood, local);
    return result;
  } finally {
    for (const stop of stoppers.reverse()) await stop().catch(() => undefined);
  }
}

function fetches(s: Scrape, outcome: 'ok' | 'error'): number {
  return s.value('baton_resume_peer_fetch_duration_seconds_count', { outcome });
}

function fetchMeanMs(before: Scrape, after: Scrape, outcome: 'ok' | 'error'): number {
  const sum = (s: Scrape) => s.value('baton_resume_peer_fetch_duration_seconds_sum', { outcome });
  const count = fetches(after, outcome) - fetches(before, outcome);
  return count > 0 ? ((sum(after) - sum(before)) / count) * 1000 : NaN;
}

// --- output ----------------------------------------------------------------------------------

function fmtMs(ms: number, digits = 1): string {
  return formatFixed(ms, digits);
}

function printRunLine(run: number, r: FailoverResult, flood: ResumePass, local: ResumePass): void {
  const w = r.watch;
  const lines = [
    `  run ${run}, min_replicas ${r.minReplicas}`,
    `    load: ${formatCount(r.acked)} of ${formatCount(r.puts)} puts acknowledged (p50/p99 ${fmtMs(r.putP50, 2)}/${fmtMs(r.putP99, 2)} ms), ` +
      `${r.inFlightAtKill} in flight at the kill` +
      (r.putErrors > 0 ? `, ${r.putErrors} failed before it (${r.putFirstError ?? ''})` : ''),
    `    lost: ${r.lostWrites} acknowledged writes in ${r.lostSessions} sessions` +
      (r.lostWrites > 0 ? `, the oldest acknowledged ${fmtMs(r.oldestLostMs, 2)} ms before the kill` : ''),
    `    flood on ${formatCount(SESSIONS - HELD_BACK)} sessions (${formatCount(HELD_BACK)} held back): all resumed ${fmtMs(r.allResumedMs, 0)} ms after the kill ` +
      `(${formatCount(r.resumesPerSecond)}/s); failed attempts ${flood.failures}, not found ${flood.notFound}, unresumed ${flood.unresumed}, ` +
      `damaged ${r.damaged}, claims ${r.claims}; peer fetches ${r.peerFetches} (mean ${fmtMs(r.fetchOkMeanMs, 2)} ms), ` +
      `failed ${r.peerFetchErrors} (mean ${fmtMs(r.fetchErrorMeanMs, 2)} ms)` +
      (r.firstResumeFailure !== undefined ? `; first failure: ${r.firstResumeFailure}` : '') +
      (r.firstDamage !== undefined ? `; first damage: ${r.firstDamage}` : ''),
    `    peer resume p50/p99 ${fmtMs(r.peerP50, 2)}/${fmtMs(r.peerP99, 2)} ms (${RESUME_CONCURRENCY} in flight; ` +
      `started before the victim was counted dead: ${r.beforeDead.count} at ${fmtMs(r.beforeDead.p50, 2)}/${fmtMs(r.beforeDead.p99, 2)} ms, ` +
      `after: ${r.afterDead.count} at ${fmtMs(r.afterDead.p50, 2)}/${fmtMs(r.afterDead.p99, 2)} ms; server p99 ≤ ${fmtMs(r.serverPeerP99, 1)} ms); ` +
      `one at a time ${fmtMs(r.serialPeerP50, 2)}/${fmtMs(r.serialPeerP99, 2)} ms`,
    `    CPU during the flood: resumer ${pct(r.floodCpu[0]!)}, other survivors ${r.floodCpu.slice(1).map(pct).join(' / ')}, bench ${pct(r.benchCpu)}, ` +
      `other processes ${pct(r.otherCpu)} (of 100% per core)`,
    `    local resume p50/p99 ${fmtMs(r.localP50, 2)}/${fmtMs(r.localP99, 2)} ms (${RESUME_CONCURRENCY} in flight; ${r.localOutcomes} counted local, ` +
      `${local.failures} failed); one at a time ${fmtMs(r.serialLocalP50, 2)}/${fmtMs(r.serialLocalP99, 2)} ms; ` +
      `baselines one at a time: Get without resume ${fmtMs(r.serialGetP50, 2)}/${fmtMs(r.serialGetP99, 2)} ms, Lookup ${fmtMs(r.lookupP50, 2)}/${fmtMs(r.lookupP99, 2)} ms` +
      (r.serialDamaged > 0 ? `; ${r.serialDamaged} one-at-a-time resumes damaged` : ''),
    `    taken over, then resumed one at a time: ${r.takeover.owned} of ${r.takeover.heldBack} held-back sessions owned by a survivor when located ` +
      `(${r.takeover.ownedByMaster} by their partition's master); on the owner p50/p99 ${fmtMs(r.takeover.onMaster.p50, 2)}/${fmtMs(r.takeover.onMaster.p99, 2)} ms ` +
      `(p99 by owner ${r.takeover.onMasterByNode}; ${r.takeover.onMasterLocal} counted local; interleaved across owners ${fmtMs(r.takeover.onMasterInterleaved.p50, 2)}/${fmtMs(r.takeover.onMasterInterleaved.p99, 2)} ms), ` +
      `elsewhere ${fmtMs(r.takeover.elsewhere.p50, 2)}/${fmtMs(r.takeover.elsewhere.p99, 2)} ms (p99 by resuming node ${r.takeover.elsewhereByNode})` +
      (r.takeover.failures > 0 ? `; ${r.takeover.failures} failed attempts` : ''),
    `    the measuring client's own collection pauses inside the one-at-a-time passes: ${fmtMs(r.clientPauses.scavengeMs, 1)} ms young-generation, ${fmtMs(r.clientPauses.majorMs, 1)} ms full`,
    `    after the kill: every partition has a master at ${fmtMs(w.mastersMs, 0)} ms (failure detection + ${MASTER_AFTER_DETECTION_MS} ms: ` +
      `${fmtMs(w.deadSeenMs + MASTER_AFTER_DETECTION_MS, 0)} ms); ${formatCount(w.takeoverClaims)} sessions claimed proactively by takeover; ` +
      `victim counted dead by all at ${fmtMs(w.deadSeenMs, 0)} ms; every survivor holds every session at ${fmtMs(w.copiesMs, 0)} ms; ` +
      `${UNDER_REPLICATED} ${w.gauge === 'present' ? `0 on all at ${fmtMs(w.gaugeZeroMs, 0)} ms (peak ${w.gaugePeak}; sessions held then ${w.sessionsAtGaugeZero.map(formatCount).join(' / ')})` : w.gauge}; ` +
      `survivors identical from ${fmtMs(w.identicalMs, 0)} ms (${w.polls} polls` +
      (w.differingAtEnd !== 0 ? `; at the last, ${w.differingAtEnd} partitions differ, fewest sessions held ${w.fewestSessionsAtEnd}` : '') +
      ')',
  ];
  console.log(lines.join('\n'));
}

function pct(share: number): string {
  return Number.isFinite(share) ? `${Math.round(share * 100)}%` : 'n/a';
}

interface Figure {
  label: string;
  value: (r: FailoverResult) => number;
  digits: number;
  /** How runs combine: median by default; sum or max where any one run matters. */
  combine?: 'sum' | 'max';
}

const FIGURES: Figure[] = [
  { label: 'acknowledged writes in the load', value: (r) => r.acked, digits: 0 },
  { label: 'put p99 under load, ms', value: (r) => r.putP99, digits: 2 },
  { label: 'puts in flight at the kill', value: (r) => r.inFlightAtKill, digits: 0 },
  { label: 'lost acknowledged writes (sum of runs)', value: (r) => r.lostWrites, digits: 0, combine: 'sum' },
  { label: 'oldest lost write, ms before the kill (max)', value: (r) => r.oldestLostMs, digits: 2, combine: 'max' },
  { label: 'every session resumed, ms after the kill', value: (r) => r.allResumedMs, digits: 0 },
  { label: '  resumes/s', value: (r) => r.resumesPerSecond, digits: 0 },
  { label: '  failed resume attempts (sum)', value: (r) => r.resumeFailures + r.resumeNotFound, digits: 0, combine: 'sum' },
  { label: '  sessions unresumed or damaged (sum)', value: (r) => r.unresumed + r.damaged, digits: 0, combine: 'sum' },
  { label: `peer resume p50, ms (${RESUME_CONCURRENCY} in flight)`, value: (r) => r.peerP50, digits: 2 },
  { label: `peer resume p99, ms (${RESUME_CONCURRENCY} in flight)`, value: (r) => r.peerP99, digits: 2 },
  { label: '  p99 of those started before dead, ms', value: (r) => r.beforeDead.p99, digits: 2 },
  { label: '  p99 of those started after dead, ms', value: (r) => r.afterDead.p99, digits: 2 },
  { label: '  server side p99 (bucket bound), ms', value: (r) => r.serverPeerP99, digits: 1 },
  { label: '  peer fetches', value: (r) => r.peerFetches, digits: 0 },
  { label: '  peer fetches failed', value: (r) => r.peerFetchErrors, digits: 0 },
  { label: '  mean failed peer fetch, ms', value: (r) => r.fetchErrorMeanMs, digits: 2 },
  { label: '  resumer CPU during the flood, % of a core', value: (r) => r.floodCpu[0]! * 100, digits: 0 },
  { label: '  other processes\' CPU then, % of a core', value: (r) => r.otherCpu * 100, digits: 0 },
  { label: 'peer resume p50, ms (1 in flight)', value: (r) => r.serialPeerP50, digits: 2 },
  { label: 'peer resume p99, ms (1 in flight)', value: (r) => r.serialPeerP99, digits: 2 },
  { label: `local resume p50, ms (${RESUME_CONCURRENCY} in flight)`, value: (r) => r.localP50, digits: 2 },
  { label: `local resume p99, ms (${RESUME_CONCURRENCY} in flight)`, value: (r) => r.localP99, digits: 2 },
  { label: 'local resume p50, ms (1 in flight)', value: (r) => r.serialLocalP50, digits: 2 },
  { label: 'local resume p99, ms (1 in flight)', value: (r) => r.serialLocalP99, digits: 2 },
  { label: 'baseline: Get without resume p50, ms (1 in flight)', value: (r) => r.serialGetP50, digits: 2 },
  { label: 'baseline: Get without resume p99, ms (1 in flight)', value: (r) => r.serialGetP99, digits: 2 },
  { label: 'baseline: Lookup round trip p50, ms (1 in flight)', value: (r) => r.lookupP50, digits: 2 },
  { label: 'baseline: Lookup round trip p99, ms (1 in flight)', value: (r) => r.lookupP99, digits: 2 },
  { label: 'every partition has a master again, ms after the kill', value: (r) => r.watch.mastersMs, digits: 0 },
  { label: '  sessions claimed proactively (takeover)', value: (r) => r.watch.takeoverClaims, digits: 0 },
  { label: '  taken-over resume on the owner p99, ms (1 in flight)', value: (r) => r.takeover.onMaster.p99, digits: 2 },
  { label: '    the same, interleaved across owners, p99, ms', value: (r) => r.takeover.onMasterInterleaved.p99, digits: 2 },
  { label: '  taken-over resume elsewhere p99, ms (1 in flight)', value: (r) => r.takeover.elsewhere.p99, digits: 2 },
  { label: 'victim counted dead by all, ms after the kill', value: (r) => r.watch.deadSeenMs, digits: 0 },
  { label: `${UNDER_REPLICATED} 0 on all, ms`, value: (r) => r.watch.gaugeZeroMs, digits: 0 },
  { label: 'every survivor holds every session, ms', value: (r) => r.watch.copiesMs, digits: 0 },
  { label: 'survivors identical (digests), ms', value: (r) => r.watch.identicalMs, digits: 0 },
];

function combine(figure: Figure, rows: FailoverResult[]): number {
  const values = rows.map(figure.value);
  if (figure.combine === 'sum') return values.reduce((a, b) => a + b, 0);
  if (figure.combine === 'max') {
    const finite = values.filter(Number.isFinite);
    return finite.length === 0 ? NaN : Math.max(...finite);
  }
  // A figure not reached in some run must not hide behind the other runs' median.
  return values.some(Number.isNaN) ? NaN : median(values);
}

function printReport(results: FailoverResult[]): void {
  const levels = MIN_REPLICAS.filter((n) => results.some((r) => r.minReplicas === n));
  const byLevel = levels.map((n) => results.filter((r) => r.minReplicas === n));
  const runs = Math.max(...byLevel.map((rows) => rows.length));
  console.log(`\n=== medians of ${runs} run${runs > 1 ? 's' : ''} (sums or maxima where marked; n/a: none, or not reached in some run) ===`);
  console.log(
    formatTable(
      ['figure', ...levels.map((n) => `min_replicas ${n}`)],
      FIGURES.map((f) => [f.label, ...byLevel.map((rows) => formatFixed(combine(f, rows), f.digits))]),
    ),
  );
  const gauges = new Set(results.map((r) => r.watch.gauge));
  if (!gauges.has('present')) console.log(`\n${UNDER_REPLICATED}: ${[...gauges].join(', ')}`);

  console.log('\n=== targets ===');
  const verdict = (ok: boolean) => (ok ? 'met' : 'MISSED');
  const m = (f: (r: FailoverResult) => number) => {
    const values = results.map(f);
    return values.some(Number.isNaN) ? NaN : median(values);
  };
  const one = results.filter((r) => r.minReplicas === 1);
  if (one.length > 0) {
    const lost = one.reduce((a, r) => a + r.lostWrites, 0);
    console.log(`0 acknowledged writes lost with min_replicas 1: ${lost} lost in ${one.length} failovers — ${verdict(lost === 0)}`);
  }
  const zero = results.filter((r) => r.minReplicas === 0);
  if (zero.length > 0) {
    const lost = zero.reduce((a, r) => a + r.lostWrites, 0);
    const oldest = Math.max(...zero.map((r) => (Number.isNaN(r.oldestLostMs) ? -Infinity : r.oldestLostMs)));
    console.log(
      `min_replicas 0 loses only writes of the last few ms (≤ ${FEW_MS} ms): ${lost} lost in ${zero.length} failovers` +
        (lost > 0 ? `, the oldest acknowledged ${fmtMs(oldest, 2)} ms before the kill` : '') +
        ` — ${verdict(lost === 0 || oldest <= FEW_MS)}`,
    );
  }
  const peerSerial = m((r) => r.serialPeerP99);
  const peerFlood = m((r) => r.peerP99);
  console.log(
    `peer-fetch resume p99 ≤ 5 ms: ${fmtMs(peerSerial, 2)} ms one at a time — ${verdict(peerSerial <= 5)} ` +
      `(its two hops alone, same run: Get p99 ${fmtMs(m((r) => r.serialGetP99), 2)} ms + Lookup p99 ${fmtMs(m((r) => r.lookupP99), 2)} ms); ` +
      `${fmtMs(peerFlood, 2)} ms with ${RESUME_CONCURRENCY} in flight right after the kill — ${verdict(peerFlood <= 5)}`,
  );
  const localSerial = m((r) => r.serialLocalP99);
  const localFlood = m((r) => r.localP99);
  console.log(
    `local resume p99 ≤ 1 ms: ${fmtMs(localSerial, 2)} ms one at a time — ${verdict(localSerial <= 1)} ` +
      `(Get without resume, same run: p99 ${fmtMs(m((r) => r.serialGetP99), 2)} ms); ` +
      `${fmtMs(localFlood, 2)} ms with ${RESUME_CONCURRENCY} in flight — ${verdict(localFlood <= 1)}`,
  );
  // Failure detection: the poll at which every survivor counted the victim dead. Elections
  // detect a failed master on their own (halfway from suspect to dead), so masters may
  // return before it; the polls are POLL_MS apart, so both figures are that coarse.
  const masters = m((r) => r.watch.mastersMs);
  const detected = m((r) => r.watch.deadSeenMs);
  const lateMasters = results.filter((r) => !(r.watch.mastersMs <= r.watch.deadSeenMs + MASTER_AFTER_DETECTION_MS)).length;
  console.log(
    `every orphaned partition has a master again within failure detection + ${MASTER_AFTER_DETECTION_MS} ms: ${fmtMs(masters, 0)} ms after the kill, ` +
      `detection at ${fmtMs(detected, 0)} ms (medians, polls every ${POLL_MS} ms); ${lateMasters} of ${results.length} failovers later — ${verdict(lateMasters === 0)}; ` +
      `sessions claimed proactively by takeover before any client asked: ${results.map((r) => formatCount(r.watch.takeoverClaims)).join(', ')} of ${formatCount(SESSIONS)} per failover ` +
      `(the resume flood starts at the kill and races them)`,
  );
  const onMaster = m((r) => r.takeover.onMaster.p99);
  const onMasterInterleaved = m((r) => r.takeover.onMasterInterleaved.p99);
  const elsewhere = m((r) => r.takeover.elsewhere.p99);
  console.log(
    `resume of a taken-over session, one at a time: on the new master p99 ≤ 1 ms: ${fmtMs(onMaster, 2)} ms — ${verdict(onMaster <= 1)} ` +
      `(each call to another owner than the last: ${fmtMs(onMasterInterleaved, 2)} ms); ` +
      `elsewhere p99 ≤ 3 ms: ${fmtMs(elsewhere, 2)} ms — ${verdict(elsewhere <= 3)} ` +
      `(${results.map((r) => `${r.takeover.ownedByMaster} of ${r.takeover.heldBack}`).join(', ')} held-back sessions owned by their master when located)`,
  );
  const bad = results.reduce((a, r) => a + r.resumeFailures + r.resumeNotFound + r.unresumed + r.damaged, 0);
  console.log(
    `every session resumable on a survivor immediately after the kill: ${bad} failed, missing or damaged resumes in ${results.length} failovers — ` +
      `${verdict(bad === 0)}; all ${formatCount(SESSIONS)} resumed ${fmtMs(m((r) => r.allResumedMs), 0)} ms after the kill (median)`,
  );
  const gauge = m((r) => r.watch.gaugeZeroMs);
  const copies = m((r) => r.watch.copiesMs);
  const identical = m((r) => r.watch.identicalMs);
  console.log(
    `back to full replication within 5 s: ${UNDER_REPLICATED} 0 on every survivor at ${gauges.has('present') ? `${fmtMs(gauge, 0)} ms — ${verdict(gauge <= 5000)}` : 'n/a (gauge missing)'}; ` +
      `every survivor holding every session at ${fmtMs(copies, 0)} ms — ${verdict(copies <= 5000)}; ` +
      `survivors identical, claims included, at ${fmtMs(identical, 0)} ms — ${verdict(identical <= 5000)} (medians)`,
  );
}

// --- main ------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const disarm = handleInterruptions(MAX_MINUTES);

  console.log('baton failover benchmark\n');
  console.log(describeMachine(machineInfo()));
  console.log(
    `\ncluster: ${NODES} baton sidecars (unicast, sealed), --replicas ${REPLICAS}, --partitions ${PARTITIONS}, ` +
      `--heartbeat-interval-ms ${HEARTBEAT_INTERVAL_MS} --suspect-after-ms ${SUSPECT_AFTER_MS} --dead-after-ms ${DEAD_AFTER_MS}` +
      (QUORUM > 0 ? ` --quorum ${QUORUM}` : ''),
  );
  console.log(
    `workload: ${formatCount(SESSIONS)} sessions preloaded on the victim (profile ${PROFILE_BYTES} B, prefs ${PREFS_BYTES} B, counter ${COUNTER_BYTES} B; min_replicas 1), ` +
      `then ${formatCount(WRITE_RATE)} counter puts/s on it for ${LOAD_SECONDS} s (≤ ${PUTS_IN_FLIGHT} in flight), SIGKILL; ` +
      `resumes on one survivor with ${RESUME_CONCURRENCY} in flight; ${formatCount(SERIAL_SESSIONS)} one at a time on another (after ${formatCount(WARMUP)} unmeasured on every survivor); ` +
      `min_replicas ${MIN_REPLICAS.join(' and ')}; ${RUNS} run${RUNS > 1 ? 's' : ''}\n`,
  );

  const results: FailoverResult[] = [];
  for (let run = 1; run <= RUNS && !interruption.requested; run++) {
    for (const minReplicas of MIN_REPLICAS) {
      if (interruption.requested) break;
      try {
        const result = await runFailover(minReplicas, run);
        // An interrupted run's figures are partial: leave them out of the medians.
        if (!interruption.requested) results.push(result);
      } catch (err) {
        console.log(`  run ${run} min_replicas ${minReplicas}: FAILED: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      }
    }
  }
  if (results.length > 0) printReport(results);
  disarm();
}

runMain(main);
