/**
 * Building blocks of the replication benchmark (bench/replication.ts): free peer ports,
 * replica processes (real `baton sidecar`s), and the writer node in the bench process.
 *
 * The writer comes in two forms:
 * - `InProcessWriter` builds its node the way BatonNode.start() does — a SessionStore (with a
 *   WatchHub), SidecarMetrics and the UdpTransport, which builds the node core — but no
 *   gRPC API server, and calls the core's SessionApi.put directly: what a sidecar does
 *   after decoding a Put, without the gRPC hop.
 * - `ExchangeWriter` is a real BatonNode in this process, written to by BatonClients over
 *   Exchange on its API port: end to end, as an application sees it.
 */
import * as path from 'node:path';
import pino from 'pino';
import { BuzHash } from '../src/store/buzhash';
import { BatonClient } from '../src/client/client';
import { deriveHashSeed, parseClusterKeys } from '../src/wire/cluster-key';
import { HybridClock } from '../src/store/hybrid-clock';
import { peerTlsFromKeys } from '../src/wire/peer-tls';
import { SessionStore } from '../src/store/store';
import { WatchHub } from '../src/core/watch-hub';
import { parseConfig, storeConfig, type Config } from '../sidecar/config/config';
import { SidecarMetrics } from '../sidecar/metrics/metrics';
import { BatonNode } from '../sidecar/node';
import { PeerClients, PeerCredentials } from '../sidecar/transport/peer-service';
import { UdpTransport } from '../sidecar/transport/udp-transport';
import { startChild, type Child } from './children';
import { Scrape } from './support/prometheus-scrape';

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
    };
  } catch (err) {
    await child.stop(2000);
    throw err;
  }
}

// --- the writer ----------------------------------------------------------------------

/** What the benchmark needs from the writer node. */
export interface Writer {
  readonly kind: 'in-process' | 'exchange';
  readonly store: SessionStore;
  /**
   * Writes one part; resolves when the writer node has answered it (applied it; later, when
   * replication is behind, once its send queues are short again), not when replicated.
   * `lane` keeps every write of one id on one Exchange stream, so they apply in order.
   */
  put(id: string, value: Buffer, lane: number): void | Promise<unknown>;
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
}

const silentLogger = pino({ level: 'silent' });

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
  put(id: string, value: Buffer): void | Promise<unknown> {
    const answer = this.transport.core.api.put({ sessionId: id, parts: [{ name: 'data', value, ifVersion: undefined }], ttlSeconds: 0, minReplicas: 0 }, Date.now());
    return answer instanceof Promise ? answer : undefined;
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

  put(id: string, value: Buffer, lane: number): Promise<unknown> {
    return this.clients[lane % this.clients.length]!.put(id, { data: value });
  }

  private async scrape(): Promise<Scrape> {
    return Scrape.parse(await this.node.metrics.registry.metrics());
  }

  async liveMembers(): Promise<number> {
    return (await this.scrape()).value('baton_cluster_members', { state: 'alive' });
  }

  async counters(): Promise<WriterCounters> {
    const s = await this.scrape();
    return {
      deltasSent: s.value('baton_replication_deltas_sent_total'),
      dataDatagramsSent: s.value('baton_replication_datagrams_sent_total', { type: 'data' }),
      retransmissions: s.value('baton_replication_retransmissions_total'),
      nacksReceived: s.value('baton_replication_nacks_received_total'),
      bytesSent: s.value('baton_replication_sent_bytes_total'),
      injectedLoss: s.value('baton_replication_dropped_total', { reason: 'injected_loss' }),
      suspectOrDead: suspectOrDead(s),
    };
  }

  async retransmitBufferBytes(): Promise<number> {
    return (await this.scrape()).value('baton_replication_retransmit_buffer_bytes');
  }

  maxUnacked(): number {
    return NaN;
  }

  async stop(): Promise<void> {
    for (const c of this.clients) c.close();
    await this.node.stop();
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
