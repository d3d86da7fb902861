/**
 * Building blocks of the replication benchmark (bench/replication.ts and its JGroups
 * anchors, bench/replication-anchors.ts): free peer ports, replica processes (real `baton
 * sidecar`s), the writer node, and the shapes of a configuration and of a phase's results.
 *
 * The writer comes in three forms:
 * - `InProcessWriter` builds its node the way BatonNode.start() does — a SessionStore (with a
 *   WatchHub), SidecarMetrics and the UdpTransport, which builds the node core — but no
 *   gRPC API server, and calls the core's SessionApi.put directly: what a sidecar does
 *   after decoding a Put, without the gRPC hop.
 * - `ExchangeWriter` is a real BatonNode in this process, written to by BatonClients over
 *   Exchange on its API port: end to end, as an application sees it.
 * - `SidecarWriter` is a `baton sidecar` process like the replicas, written to by BatonClients
 *   in this process over Exchange: end to end, with the writer's CPU and GC its own (the
 *   JGroups comparison's configuration).
 *
 * Every replica (and the sidecar writer) sums the GC pauses its output reports (run it with
 * --trace-gc to get them).
 */
import * as path from 'node:path';
import pino from 'pino';
import { BuzHash } from '../src/store/buzhash';
import { BatonClient } from '../src/client/client';
import { deriveHashSeed, parseClusterKeys } from '../src/wire/cluster-key';
import { HybridClock } from '../src/store/hybrid-clock';
import { peerTlsFromKeys } from '../src/wire/peer-tls';
import { findStoredPart, SessionStore } from '../src/store/store';
import { WatchHub } from '../src/core/watch-hub';
import { parseConfig, storeConfig, type Config } from '../sidecar/config/config';
import { SidecarMetrics } from '../sidecar/metrics/metrics';
import { BatonNode } from '../sidecar/node';
import { PeerClients, PeerCredentials } from '../sidecar/transport/peer-service';
import { UdpTransport } from '../sidecar/transport/udp-transport';
import { cpuSecondsOf, type CpuPart, ownCpuSeconds, startChild, type Child } from './children';
import { GcTotals, observeOwnGc, type GcRate, type GcSnapshot } from './gc-pauses';
import { scrape, Scrape } from './support/prometheus-scrape';
import { formatFixed } from './stats';

// --- ports ---------------------------------------------------------------------------

export { freePeerPorts } from '../sidecar/demo/free-ports';

// --- metrics -------------------------------------------------------------------------

function suspectOrDead(s: Scrape): number {
  return s.value('baton_cluster_membership_events_total', { type: 'suspect' }) + s.value('baton_cluster_membership_events_total', { type: 'dead' });
}

// --- replicas ------------------------------------------------------------------------

export interface Replica {
  nodeId: string;
  child: Child;
  apiAddress: string;
  metricsUrl: string;
  peerAddress: string;
  client: BatonClient;
  /** GC pauses from the child's --trace-gc lines (zero without that flag). */
  gc: GcTotals;
}

export const SIDECAR_MAIN = path.join(__dirname, '..', 'sidecar', 'cli', 'main.js');

/**
 * Starts a `baton sidecar` child with --log-level info (its 'baton node started' line
 * carries the bound ports). The cluster key travels in BATON_CLUSTER_KEY, inherited from
 * this process's environment (set by the caller). `sidecarMain` runs another build of the
 * sidecar (an older commit's dist/sidecar/cli/main.js, to compare).
 */
export async function startReplica(
  nodeId: string,
  args: readonly string[],
  extraNodeArgs: readonly string[] = [],
  sidecarMain: string = SIDECAR_MAIN,
): Promise<Replica> {
  const child = startChild(nodeId, process.execPath, [
    ...extraNodeArgs,
    sidecarMain,
    'sidecar',
    '--node-id',
    nodeId,
    '--api-listen',
    '127.0.0.1:0',
    '--metrics-listen',
    '127.0.0.1:0',
    '--http-listen',
    'off',
    '--log-level',
    process.env.BENCH_REPLICA_LOG_LEVEL ?? 'info',
    ...args,
  ]);
  const gc = new GcTotals();
  child.onLine((line) => gc.addLine(line));
  try {
    const match = await child.waitForLine(/"msg":"baton node started"/, 20_000);
    const entry = JSON.parse(match.input!) as { api_port: number; metrics_port: number; peer: string };
    const apiAddress = `127.0.0.1:${entry.api_port}`;
    return {
      nodeId,
      child,
      apiAddress,
      metricsUrl: `http://127.0.0.1:${entry.metrics_port}/metrics`,
      peerAddress: entry.peer,
      client: new BatonClient(apiAddress, { defaultDeadlineMs: 10_000 }),
      gc,
    };
  } catch (err) {
    await child.stop(2000);
    throw err;
  }
}

// --- configurations and results of bench:replication -----------------------------------

export type Transport = 'unicast' | 'multicast';

export interface ClusterConfig {
  name: string;
  transport: Transport;
  valueBytes: number;
  lossPercent: number;
  datagramBytes: number;
  writer: Writer['kind'];
  /** Parts per put, each of valueBytes (named data, data2, …); every part is one delta. */
  partsPerPut: number;
  /** --retransmit-buffer-mb; undefined = default (16). */
  retransmitMb?: number;
  /** Every n-th put is `largeBytes` (fragmented); 0 = none. */
  largeEvery: number;
  largeBytes: number;
  /** Puts of the flat-out and windowed phases; default BENCH_SESSIONS. */
  puts?: number;
  /** The puts' min_replicas (a sidecar writer only; default 0: asynchronous). */
  minReplicas?: number;
  phases: PhaseKind[];
}

export type PhaseKind = 'flat-out' | 'windowed' | 'paced';

// --- results ---------------------------------------------------------------------------

export interface ReplicaResult {
  nodeId: string;
  applied: number;
  deliveredPerSecond: number;
  nacksSent: number;
  injectedLoss: number;
  resyncs: number;
  lagP50: number;
  lagP99: number;
  receivedBytes: number;
  dataDatagrams: number;
  reassemblyPeak: number;
  /** Datagrams dropped by the replay window as older than it (reason too_old). */
  tooOld: number;
  /** Members this replica marked suspect or dead during the phase. */
  suspectOrDead: number;
  cpu: number;
  /** CPU µs per delta applied. */
  cpuUsPerDelta: number;
  /** Of it, system time: the kernel's work for the replica (receiving, acknowledging). */
  systemUsPerDelta: number;
  gc: GcRate;
}

export interface PhaseResult {
  config: ClusterConfig;
  kind: PhaseKind;
  puts: number;
  putErrors: number;
  writeSeconds: number;
  offeredPerSecond: number;
  /** ms from the last put to convergence; undefined when it did not converge in time. */
  convergeMs: number | undefined;
  convergeProblem: string | undefined;
  totalSeconds: number;
  replicas: ReplicaResult[];
  writer: WriterCounters;
  retransmitPeak: number;
  writerCpu: number;
  /** Deltas the writer originated (puts × parts per put). */
  deltasWritten: number;
  /** Writer CPU µs per delta originated, and of it system time (the kernel's sends). */
  writerCpuUsPerDelta: number;
  writerSystemUsPerDelta: number;
  writerGc: GcRate;
  /** CPU of this process (the clients, when the writer is a sidecar), share of a core. */
  benchCpu: number;
  kernelRcvbufErrors: number;
}


/** A lag quantile (seconds, a histogram bucket's upper bound) as "≤N" ms. */
export function lagMs(seconds: number): string {
  if (Number.isNaN(seconds)) return 'n/a';
  if (seconds === Infinity) return '>5000';
  return `≤${formatFixed(seconds * 1000, seconds < 0.001 ? 1 : 0)}`;
}

/** A share of one core as a percentage. */
export function pct(x: number): string {
  return Number.isFinite(x) ? `${Math.round(x * 100)}%` : 'n/a';
}

/** CPU µs per delta: writer (per delta written) / each replica (per delta applied). */
export function cpuPerDelta(r: PhaseResult): string {
  return `${formatFixed(r.writerCpuUsPerDelta, 1)}/${r.replicas.map((x) => formatFixed(x.cpuUsPerDelta, 1)).join('+')}`;
}

/** Of it, system time (the kernel's work for the process), µs per delta: writer/replica+replica+… */
export function systemPerDelta(r: PhaseResult): string {
  return `${formatFixed(r.writerSystemUsPerDelta, 1)}/${r.replicas.map((x) => formatFixed(x.systemUsPerDelta, 1)).join('+')}`;
}

/** Scavenge pause ms per wall second: writer / each replica (20 ms/s = 2% of the time). */
export function scavenges(r: PhaseResult): string {
  return perProcess(r, (gc) => gc.scavengeMsPerSecond);
}

/** Full collections' (Mark-Compact) final pauses, ms per second: writer/replica+replica+… */
export function fullCollections(r: PhaseResult): string {
  return perProcess(r, (gc) => gc.majorMsPerSecond);
}

function perProcess(r: PhaseResult, figure: (gc: GcRate) => number): string {
  return `${formatFixed(figure(r.writerGc), 1)}/${r.replicas.map((x) => formatFixed(figure(x.gc), 1)).join('+')}`;
}

// --- the writer ----------------------------------------------------------------------

/** One part of a put. */
export interface PartValue {
  name: string;
  value: Buffer;
}

/** What the benchmark needs from the writer node. */
export interface Writer {
  readonly kind: 'in-process' | 'exchange' | 'sidecar';
  /**
   * Writes parts of one session; resolves when the writer node has answered it (applied it;
   * later, when replication is behind, once its send queues are short again), not when
   * replicated. `lane` keeps every write of one id on one Exchange stream, so they apply in order.
   */
  put(id: string, parts: PartValue[], lane: number): void | Promise<unknown>;
  /** The writer's digest of each partition 0 … partitions-1. */
  partitionDigests(partitions: number): Promise<bigint[]>;
  /** The value of each id's part `name` on the writer (undefined: none). */
  values(ids: readonly string[], name: string): Promise<(Buffer | undefined)[]>;
  /** CPU seconds used so far by the process the writer node runs in (or its system time alone). */
  cpuSeconds(part?: CpuPart): number;
  /** The process the writer node runs in (this one, or its sidecar's). */
  readonly pid: number | undefined;
  /** GC pauses so far of the process the writer node runs in. */
  gc(): GcSnapshot;
  /** Live members this node sees (itself included). */
  liveMembers(): Promise<number>;
  /** Replication counters of the writer. */
  counters(): Promise<WriterCounters>;
  /** Retransmit buffer bytes now (all channels). */
  retransmitBufferBytes(): Promise<number>;
  /** Highest number of sequence numbers any receiver has not acknowledged (NaN if unknown). */
  maxUnacked(): number;
  stop(): Promise<void>;
}

export interface WriterCounters {
  deltasSent: number;
  dataDatagramsSent: number;
  retransmissions: number;
  nacksReceived: number;
  bytesSent: number;
  injectedLoss: number;
  /** Members this node marked suspect or dead. */
  suspectOrDead: number;
  /** Times a channel held deltas back at a full send window, and sent past it. */
  windowHolds: number;
  windowOverrides: number;
}

const silentLogger = pino({ level: 'silent' });

let ownGcTotals: GcTotals | undefined;

/** This process's GC pauses, observed from the first call on. */
export function ownGc(): GcTotals {
  if (ownGcTotals === undefined) {
    ownGcTotals = new GcTotals();
    observeOwnGc(ownGcTotals);
  }
  return ownGcTotals;
}

function storeDigests(store: SessionStore, partitions: number): bigint[] {
  const digests: bigint[] = [];
  for (let p = 0; p < partitions; p++) digests.push(store.digest(p));
  return digests;
}

function storeValues(store: SessionStore, ids: readonly string[], name: string): (Buffer | undefined)[] {
  const now = Date.now();
  return ids.map((id) => {
    const stored = store.get(id, now);
    const value = stored === undefined ? undefined : findStoredPart(stored, name)?.value;
    return value ?? undefined;
  });
}

function countersFrom(s: Scrape): WriterCounters {
  return {
    deltasSent: s.value('baton_replication_deltas_sent_total'),
    dataDatagramsSent: s.value('baton_replication_datagrams_sent_total', { type: 'data' }),
    retransmissions: s.value('baton_replication_retransmissions_total'),
    nacksReceived: s.value('baton_replication_nacks_received_total'),
    bytesSent: s.value('baton_replication_sent_bytes_total'),
    injectedLoss: s.value('baton_replication_dropped_total', { reason: 'injected_loss' }),
    suspectOrDead: suspectOrDead(s),
    windowHolds: s.value('baton_replication_send_window_holds_total'),
    windowOverrides: s.value('baton_replication_send_window_overrides_total'),
  };
}

/** Config of the writer node from flag values, as `baton sidecar` would parse them. */
export function writerConfig(values: Record<string, string>, clusterKey: string): Config {
  return parseConfig(values, { BATON_CLUSTER_KEY: clusterKey });
}

export class InProcessWriter implements Writer {
  readonly kind = 'in-process';

  private constructor(
    readonly store: SessionStore,
    readonly transport: UdpTransport,
    readonly metrics: SidecarMetrics,
  ) {}

  static async start(config: Config): Promise<InProcessWriter> {
    const keys = config.clusterKeys === '' ? undefined : parseClusterKeys(config.clusterKeys, config.clusterKeySource);
    if (keys === undefined) throw new Error('the benchmark runs with a cluster key (encryption on)');
    const hasher = new BuzHash(config.clusterSeed !== '' ? config.clusterSeed : deriveHashSeed(keys[0]!));
    const store = new SessionStore(storeConfig(config), hasher, new HybridClock(), new WatchHub());
    const metrics = new SidecarMetrics(store, config.maxMemoryBytes);
    const transport = await UdpTransport.open(config, store, hasher, keys, silentLogger, metrics.replicationSink());
    metrics.attachReplication(transport);
    await transport.start();
    return new InProcessWriter(store, transport, metrics);
  }

  /** A put answered at once, or (back-pressure: replication is behind) a promise of its answer. */
  put(id: string, parts: PartValue[]): void | Promise<unknown> {
    const writes = parts.map((p) => ({ name: p.name, value: p.value, ifVersion: undefined }));
    const answer = this.transport.core.api.put({ sessionId: id, parts: writes, ttlSeconds: 0, minReplicas: 0 }, Date.now());
    return answer instanceof Promise ? answer : undefined;
  }

  async partitionDigests(partitions: number): Promise<bigint[]> {
    return storeDigests(this.store, partitions);
  }

  async values(ids: readonly string[], name: string): Promise<(Buffer | undefined)[]> {
    return storeValues(this.store, ids, name);
  }

  readonly pid = process.pid;

  cpuSeconds(part: CpuPart = 'all'): number {
    return ownCpuSeconds(part);
  }

  gc(): GcSnapshot {
    return ownGc().snapshot();
  }

  async liveMembers(): Promise<number> {
    return this.transport.core.membership.liveNodeIds().length;
  }

  async counters(): Promise<WriterCounters> {
    const s = this.transport.core.engine.stats;
    const scraped = Scrape.parse(await this.metrics.registry.metrics());
    return {
      deltasSent: s.deltasSent,
      dataDatagramsSent: s.datagramsSent.data,
      retransmissions: s.retransmissions,
      nacksReceived: s.nacksReceived,
      bytesSent: s.bytesSent,
      injectedLoss: scraped.value('baton_replication_dropped_total', { reason: 'injected_loss' }),
      suspectOrDead: suspectOrDead(scraped),
      windowHolds: scraped.value('baton_replication_send_window_holds_total'),
      windowOverrides: scraped.value('baton_replication_send_window_overrides_total'),
    };
  }

  async retransmitBufferBytes(): Promise<number> {
    return this.transport.core.engine.retransmitBufferBytes();
  }

  maxUnacked(): number {
    let max = 0;
    for (const n of this.transport.core.unacked().values()) max = Math.max(max, n);
    return max;
  }

  async stop(): Promise<void> {
    await this.transport.stop();
  }
}

/** A real BatonNode in this process, written to over Exchange by `clients` BatonClients. */
export class ExchangeWriter implements Writer {
  readonly kind = 'exchange';

  private constructor(
    private readonly node: BatonNode,
    private readonly clients: BatonClient[],
  ) {}

  get store(): SessionStore {
    return this.node.store;
  }

  static async start(config: Config, clients: number): Promise<ExchangeWriter> {
    const node = new BatonNode(config, silentLogger);
    const ports = await node.start();
    const list = Array.from({ length: clients }, () => new BatonClient(`127.0.0.1:${ports.api}`, { defaultDeadlineMs: 30_000 }));
    return new ExchangeWriter(node, list);
  }

  put(id: string, parts: PartValue[], lane: number): Promise<unknown> {
    return this.clients[lane % this.clients.length]!.put(id, parts);
  }

  async partitionDigests(partitions: number): Promise<bigint[]> {
    return storeDigests(this.store, partitions);
  }

  async values(ids: readonly string[], name: string): Promise<(Buffer | undefined)[]> {
    return storeValues(this.store, ids, name);
  }

  readonly pid = process.pid;

  cpuSeconds(part: CpuPart = 'all'): number {
    return ownCpuSeconds(part);
  }

  gc(): GcSnapshot {
    return ownGc().snapshot();
  }

  private async scrape(): Promise<Scrape> {
    return Scrape.parse(await this.node.metrics.registry.metrics());
  }

  async liveMembers(): Promise<number> {
    return (await this.scrape()).value('baton_cluster_members', { state: 'alive' });
  }

  async counters(): Promise<WriterCounters> {
    return countersFrom(await this.scrape());
  }

  /** The gauge alone: the sampler asks every 50 ms, and rendering the whole registry would hold this writer's event loop. */
  async retransmitBufferBytes(): Promise<number> {
    const gauge = this.node.metrics.registry.getSingleMetric('baton_replication_retransmit_buffer_bytes');
    const values = (await gauge?.get())?.values ?? [];
    return values.reduce((total, v) => total + v.value, 0);
  }

  maxUnacked(): number {
    return NaN;
  }

  async stop(): Promise<void> {
    for (const c of this.clients) c.close();
    await this.node.stop();
  }
}

/**
 * A `baton sidecar` process, written to over Exchange by `clients` BatonClients in this
 * process. Start it like a replica (the cluster key in BATON_CLUSTER_KEY).
 */
export class SidecarWriter implements Writer {
  readonly kind = 'sidecar';

  private constructor(
    readonly node: Replica,
    private readonly clients: BatonClient[],
    private readonly digestReader: DigestReader,
    private readonly minReplicas: number,
  ) {}

  static async start(args: readonly string[], extraNodeArgs: readonly string[], clients: number, clusterKey: string, minReplicas = 0): Promise<SidecarWriter> {
    const node = await startReplica('writer', args, extraNodeArgs);
    const list = Array.from({ length: clients }, () => new BatonClient(node.apiAddress, { defaultDeadlineMs: 30_000 }));
    return new SidecarWriter(node, list, new DigestReader(clusterKey), minReplicas);
  }

  put(id: string, parts: PartValue[], lane: number): Promise<unknown> {
    return this.clients[lane % this.clients.length]!.put(id, parts, { minReplicas: this.minReplicas });
  }

  async partitionDigests(partitions: number): Promise<bigint[]> {
    const map = await this.digestReader.digests(this.node.peerAddress);
    return Array.from({ length: partitions }, (_, p) => map.get(p) ?? 0n);
  }

  async values(ids: readonly string[], name: string): Promise<(Buffer | undefined)[]> {
    const sessions = await Promise.all(ids.map((id) => this.node.client.get(id, { parts: [name] })));
    return sessions.map((s) => {
      const value = s?.parts.find((p) => p.name === name)?.value;
      return value === undefined ? undefined : Buffer.from(value);
    });
  }

  get pid(): number | undefined {
    return this.node.child.process.pid;
  }

  cpuSeconds(part: CpuPart = 'all'): number {
    return cpuSecondsOf(this.node.child.process.pid, part);
  }

  gc(): GcSnapshot {
    return this.node.gc.snapshot();
  }

  async liveMembers(): Promise<number> {
    return (await scrape(this.node.metricsUrl)).value('baton_cluster_members', { state: 'alive' });
  }

  async counters(): Promise<WriterCounters> {
    return countersFrom(await scrape(this.node.metricsUrl));
  }

  async retransmitBufferBytes(): Promise<number> {
    return (await scrape(this.node.metricsUrl)).value('baton_replication_retransmit_buffer_bytes');
  }

  maxUnacked(): number {
    return NaN;
  }

  async stop(): Promise<void> {
    for (const c of this.clients) c.close();
    this.node.client.close();
    this.digestReader.close();
    await this.node.child.stop();
  }
}

/** Partition digests of peers over PeerService (mutual TLS from the cluster key). */
export class DigestReader {
  private readonly clients: PeerClients;

  constructor(clusterKey: string) {
    this.clients = new PeerClients(new PeerCredentials(peerTlsFromKeys(parseClusterKeys(clusterKey), 'bench-digest-reader', Date.now())));
  }

  /** Every partition's digest at a peer address. */
  digests(peerAddress: string): Promise<Map<number, bigint>> {
    return this.clients.digests(peerAddress, [], 5000);
  }

  close(): void {
    this.clients.close();
  }
}
