/**
 * One baton node: wires the store, the session API, the gRPC, HTTP and RESP servers and
 * the timers together, and owns start-up and graceful shutdown. Holds no protocol logic.
 */
import type * as tls from 'node:tls';
import type { Logger } from 'pino';
import { BuzHash } from '../src/store/buzhash';
import { deriveHashSeed, parseClusterKeys, type ClusterKey } from '../src/wire/cluster-key';
import type { ClusterServiceServer, StatusResponse } from '../src/gen/baton/v1/cluster';
import { HybridClock } from '../src/store/hybrid-clock';
import { SessionStore } from '../src/store/store';
import { WatchHub } from '../src/core/watch-hub';
import { ApiServer } from './servers/api-server';
import { type Config, type ListenAddress, peerExposure, runsInsecure, storeConfig } from './config/config';
import { HttpApiServer } from './servers/http-api';
import { HttpServer } from './metrics/http-server';
import { RespCommands } from '../src/resp/resp-commands';
import { meteredApi, type ApiCalls } from './metrics/metered-api';
import { respLimits, RespServer, storeView } from './servers/resp-server';
import { UdpTransport } from './transport/udp-transport';
import type { SessionApi } from '../src/core/session-api';
import { SidecarMetrics } from './metrics/metrics';
import { SessionServiceHandlers } from './servers/session-service';
import { clusterService } from './servers/cluster-service';
import { mastersByMember } from '../src/core/name-service';
import { CATCH_UP_LIMIT_MS } from '../src/core/node-core';
import { statusPageData } from './metrics/status-page-data';
import { VERSION } from './config/package-root';
import { TicketKeyKeeper } from './capture/ticket-key-keeper';
import { LocalTlsResumptionSource } from './capture/local-tls-resumption';
import { clusterSessionIdContext } from '../src/capture/tls-session-id-context';
import { startProxy, type ProxyServer } from './proxy/proxy-start';
import { attachTlsResumption } from '../src/capture/tls-resumption';
import type { ReplayRequest } from '../src/gen/baton/v1/peer';
import { TcpHandover } from './capture/tcp-handover';
import { tcpRepairUnavailable } from './capture/tcp-repair';
import { ConfigError } from '../src/wire/errors';
import { refusingApplicationCalls, STORE_ROLE_REFUSAL } from '../src/core/store-role';

/** Tries with --peer-listen port 0 to find a port free over both UDP and TCP. */
const PORT_ZERO_ATTEMPTS = 20;

/** Seed of the BUZhash table until a cluster key is configured. */
const DEFAULT_CLUSTER_SEED = 'baton/default-cluster';

export interface BoundPorts {
  api: number;
  metrics: number;
  peer: number;
  /** The HTTP/JSON API's port; undefined with --http-listen off. */
  http?: number;
  /** The Redis-protocol port, when --resp-listen is on (0 for a Unix socket). */
  resp?: number;
  /** The capture proxy's port, when --proxy-listen is on. */
  proxy?: number;
}

/** A listen failure, naming the option whose address could not be bound. */
export class ListenError extends Error {
  constructor(
    readonly flag: string,
    readonly address: ListenAddress,
    cause: unknown,
  ) {
    super(`cannot listen on --${flag} ${address.text}: ${describeListenError(cause)}`, { cause });
    this.name = 'ListenError';
  }
}

export class BatonNode {
  readonly store: SessionStore;
  readonly metrics: SidecarMetrics;
  private readonly hub = new WatchHub();
  private readonly hasher: BuzHash;
  private readonly hashSeed: string | Buffer;
  private tickets: TicketKeyKeeper | undefined;
  /** For attachTlsResumption on a TLS server in this process (the proxy); set by start(). */
  tlsResumption: LocalTlsResumptionSource | undefined;
  private readonly keys: ClusterKey[] | undefined;
  private handlers: SessionServiceHandlers | undefined;
  private api: ApiServer | undefined;
  private httpApi: HttpApiServer | undefined;
  private replication: UdpTransport | undefined;
  private resp: RespServer | undefined;
  private proxy: ProxyServer | undefined;
  private handover: TcpHandover | undefined;
  private readonly http: HttpServer;
  private readonly startedAt = Date.now();
  /** The API address as bound (the real port when --api-listen asked for port 0). */
  private apiAddress: string;
  private stopping: Promise<void> | undefined;

  constructor(
    readonly config: Config,
    private readonly log: Logger,
  ) {
    this.keys = config.clusterKeys === '' ? undefined : parseClusterKeys(config.clusterKeys, config.clusterKeySource);
    this.hashSeed = config.clusterSeed !== '' ? config.clusterSeed : this.keys !== undefined ? deriveHashSeed(this.keys[0]!) : DEFAULT_CLUSTER_SEED;
    this.hasher = new BuzHash(this.hashSeed);
    this.store = new SessionStore(storeConfig(config), this.hasher, new HybridClock(), this.hub);
    this.metrics = new SidecarMetrics(this.store, config.maxMemoryBytes);
    this.metrics.insecure.set(runsInsecure(config) ? 1 : 0);
    this.http = new HttpServer(this.metrics.registry, () => statusPageData(this.status(), this.replication?.core.placement));
    this.apiAddress = config.apiListen.text;
  }

  async start(): Promise<BoundPorts> {
    // Before anything binds: a node that could not hand over refuses now, not at drain time.
    const repairMissing = this.config.tcpHandover ? tcpRepairUnavailable() : undefined;
    if (repairMissing !== undefined) throw new ConfigError(`--tcp-handover cannot work in this process: ${repairMissing}`);
    if (runsInsecure(this.config)) {
      this.log.warn(
        { exposed: peerExposure(this.config) },
        '--insecure: peer traffic leaves loopback without a cluster key; anyone on the network can read every session and forge replication (set --cluster-key-file or BATON_CLUSTER_KEY)',
      );
    }
    const metrics = await this.http.listen(this.config.metricsListen).catch((err: unknown) => {
      throw new ListenError('metrics-listen', this.config.metricsListen, err);
    });
    const replication = await this.startReplication();
    this.replication = replication;
    this.metrics.attachReplication(replication);
    const ownApi = replication.core.api;
    // A store node's surfaces refuse application calls; its own writers (the ticket key
    // schedule) use the API itself.
    const sessionApi = this.config.role === 'store' ? refusingApplicationCalls(ownApi) : ownApi;
    this.handlers = new SessionServiceHandlers(sessionApi, this.hub, this.metrics, this.log, this.config.maxMemoryBytes);
    if (this.config.role === 'store') this.handlers.refuseWatches();
    this.tickets = this.ticketKeeper(ownApi, replication);
    this.handlers.serveTlsResumption(this.tickets);
    this.tlsResumption = new LocalTlsResumptionSource(sessionApi, this.tickets);
    // A Put may carry every part at full size; leave room for ids, names and framing.
    const maxMessageBytes = Math.min(this.config.maxValueBytes * this.config.maxPartsPerSession + 64 * 1024, 2 ** 31 - 1);
    this.api = new ApiServer(this.handlers.implementation(), this.clusterService(), maxMessageBytes, this.config.maxPartsPerSession);
    const api = await this.api.listen(this.config.apiListen).catch(async (err: unknown) => {
      await replication.stop();
      await this.http.close();
      throw new ListenError('api-listen', this.config.apiListen, err);
    });
    const httpListen = this.config.httpListen;
    let httpPort: number | undefined;
    if (httpListen !== undefined) {
      const limits = { maxValueBytes: this.config.maxValueBytes, maxPartsPerSession: this.config.maxPartsPerSession };
      this.httpApi = new HttpApiServer(sessionApi, this.store, this.hub, this.metrics, this.log, limits);
      if (this.config.role === 'store') this.httpApi.refuseChanges(STORE_ROLE_REFUSAL);
      httpPort = await this.httpApi.listen(httpListen).catch(async (err: unknown) => {
        await this.api?.shutdown(0);
        await replication.stop();
        await this.http.close();
        throw new ListenError('http-listen', httpListen, err);
      });
    }
    const resp = await this.startResp(meteredApi(sessionApi, this.metrics)).catch(async (err: unknown) => {
      await this.api?.shutdown(0);
      await replication.stop();
      await this.http.close();
      throw err;
    });
    const peers = {
      candidates: (sessionId: string) => replication.replayCandidates(this.store.partitionOf(sessionId)),
      send: (address: string, request: ReplayRequest, deadlineMs: number) => replication.replay(address, request, deadlineMs),
    };
    const proxy = await startProxy(this.config, sessionApi, this.metrics, this.log, (server) => this.resumeTlsAcrossPods(server), peers).catch(async (err: unknown) => {
      await Promise.all([this.api?.shutdown(0), this.httpApi?.close(0), this.resp?.close(0)]);
      await replication.stop();
      await this.http.close();
      throw new ListenError('proxy-listen', this.config.proxyListen!, err);
    });
    this.proxy = proxy?.server;
    // Peers' re-injected requests go to this node's proxy (and its web server).
    if (proxy !== undefined) replication.replayService.serve = (request) => proxy.server.serveReplay(request);
    if (this.config.tcpHandover && proxy !== undefined) this.handover = this.startHandover(proxy.server, replication);
    if (this.config.apiListen.path === undefined) this.apiAddress = this.config.apiListen.text.replace(/:\d+$/, `:${api}`);
    this.api.setServing(true);
    // Ready (for Kubernetes) once caught up with the peers and holding the TLS ticket keys:
    // the API serves meanwhile. The key keeper starts once the members are known, so a
    // restarted node never takes itself for a cluster of one and replaces the keys.
    const readyBy = Date.now() + CATCH_UP_LIMIT_MS;
    const tickets = this.tickets;
    const caughtUpAndKeyed = replication.core.caughtUp(readyBy).then(async (caughtUp) => {
      if (this.stopping !== undefined) return caughtUp;
      tickets.start();
      await tickets.ready(readyBy);
      return caughtUp;
    });
    void caughtUpAndKeyed.then((caughtUp) => {
      if (this.stopping !== undefined) return;
      this.http.ready = true;
      this.log.info({ caught_up: caughtUp, after_ms: Date.now() - this.startedAt }, 'baton node ready');
    });
    this.log.info(
      {
        api: this.config.apiListen.text,
        api_port: api,
        metrics: this.config.metricsListen.text,
        metrics_port: metrics,
        http: httpListen?.text ?? 'off',
        http_port: httpPort,
        ...(resp === undefined ? {} : { resp: this.config.respListen!.text, resp_port: resp }),
        ...(proxy === undefined ? {} : { proxy: this.config.proxyListen!.text, proxy_port: proxy.port, proxy_tls: proxy.server.tls }),
        peer: replication.advertiseAddress,
        peer_port: replication.port,
        incarnation: replication.incarnation.toString(16),
        transport: this.config.multicast === undefined ? 'unicast' : 'multicast',
        role: this.config.role,
        ...(this.config.quorum > 1 ? { quorum: this.config.quorum } : {}),
        preset: this.config.preset,
        encrypted: this.keys !== undefined,
        peer_tls: this.config.peerTlsFiles !== undefined ? 'files' : this.keys !== undefined ? 'cluster key' : 'off',
        version: VERSION,
      },
      'baton node started',
    );
    return { api, metrics, peer: replication.port, http: httpPort, resp, proxy: proxy?.port };
  }

  /** --tcp-handover: this node hands its proxy's connections to a live peer on SIGTERM, and takes a peer's. */
  private startHandover(proxy: ProxyServer, replication: UdpTransport): TcpHandover {
    const handover = TcpHandover.create({
      nodeId: this.config.nodeId,
      virtualAddress: this.config.virtualAddress,
      hook: this.config.handoverHook,
      hookTimeoutMs: this.config.handoverHookTimeoutMs,
      proxy,
      log: this.log,
      count: (outcome, connections) => this.metrics.tcpHandoverConnections.inc({ outcome }, connections),
      peer: () => {
        const target = replication.core.membership
          .members()
          .filter((m) => !m.isSelf && m.state === 'alive')
          .sort((a, b) => (a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0))[0];
        if (target === undefined) return undefined;
        return { nodeId: target.nodeId, address: target.advertiseAddress, client: replication.peerServiceClient(target.advertiseAddress) };
      },
    });
    replication.handoverReceiver = handover;
    return handover;
  }

  /** The capture proxy's TLS server resumes sessions begun on any pod (this node's keys and TLS session store). */
  private resumeTlsAcrossPods(server: tls.Server): void {
    attachTlsResumption(server, this.tlsResumption!, { onError: (err) => this.log.debug({ err }, 'TLS session store or key feed failed: full handshake') });
  }

  private ticketKeeper(sessionApi: SessionApi, replication: UdpTransport): TicketKeyKeeper {
    const options = {
      nodeId: this.config.nodeId,
      rotationMs: this.config.tlsTicketRotationMs,
      sessionLifetimeSeconds: this.config.tlsSessionLifetimeSeconds,
      sessionIdContext: clusterSessionIdContext(this.hashSeed),
      shared: !runsInsecure(this.config),
    };
    const generators = { generator: () => replication.core.coordinator.coordinatorId };
    const keeper = new TicketKeyKeeper(options, this.store, sessionApi, replication.core, generators, this.hub, this.log);
    keeper.rescheduled = () => replication.core.rescheduled();
    replication.core.addCompanion(keeper);
    return keeper;
  }

  /** The Redis-protocol endpoint, when --resp-listen asks for it; resolves with its port. */
  private async startResp(sessionApi: ApiCalls): Promise<number | undefined> {
    const address = this.config.respListen;
    if (address === undefined) return undefined;
    const commands = new RespCommands(
      sessionApi,
      storeView(this.store),
      { defaultTtlSeconds: this.config.defaultTtlSeconds, batonVersion: VERSION, nodeId: this.config.nodeId },
      Date.now(),
    );
    this.resp = new RespServer(commands, respLimits(this.config.maxValueBytes, this.config.maxPartsPerSession), this.log);
    return this.resp.listen(address).catch((err: unknown) => {
      throw new ListenError('resp-listen', address, err);
    });
  }

  /**
   * Binds the peer address and starts replication. With --peer-listen port 0 the UDP socket
   * takes a free port and the peer gRPC service must take the same number over TCP, where
   * another process (an outgoing connection's ephemeral port, say) may hold it: then both
   * try again on a new port, up to PORT_ZERO_ATTEMPTS times (a machine with thousands of connections open has thousands of such ports taken).
   */
  private async startReplication(): Promise<UdpTransport> {
    const sink = this.metrics.replicationSink();
    const resumes = this.metrics.resumeObserver();
    for (let attempt = 1; ; attempt++) {
      const replication = await UdpTransport.open(this.config, this.store, this.hasher, this.keys, this.log, sink, resumes).catch(
        async (err: unknown) => {
          await this.http.close();
          throw new ListenError('peer-listen', this.config.peerListen, err);
        },
      );
      try {
        await replication.start();
        return replication;
      } catch (err) {
        const port = replication.port;
        await replication.stop();
        if (this.config.peerListen.port === 0 && attempt < PORT_ZERO_ATTEMPTS && /EADDRINUSE|address already in use/i.test(String(err))) {
          this.log.debug({ port, attempt }, 'peer port taken over TCP; binding another');
          continue;
        }
        await this.http.close();
        throw new ListenError(this.config.multicast !== undefined && /multicast|membership/i.test(String(err)) ? 'multicast' : 'peer-listen', this.config.peerListen, err);
      }
    }
  }

  /** Graceful stop: not ready, end streams, finish in-flight calls, close. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  /**
   * Drain, bounded by --drain-timeout-seconds: not ready and NOT_SERVING at once, finish
   * in-flight calls, send every pending delta and wait until the secondaries acknowledged
   * all of it, then announce leaving (peers re-replicate at once rather than wait for
   * failure detection) and close.
   */
  private async doStop(): Promise<void> {
    const started = Date.now();
    const deadline = started + this.config.drainTimeoutSeconds * 1000;
    this.log.info({ drain_timeout_s: this.config.drainTimeoutSeconds }, 'baton node draining');
    this.http.ready = false;
    this.api?.setServing(false);
    this.handlers?.drain();
    this.tickets?.stop();
    this.httpApi?.drain();
    // Before the proxy drains (which closes idle connections): they move to a peer instead.
    await this.handover?.handOver(deadline).catch((err: unknown) => this.log.error({ err }, 'tcp handover failed; the connections drain here'));
    this.handover?.stop();
    await Promise.all([
      this.api?.shutdown(Math.max(0, deadline - Date.now())),
      this.httpApi?.close(Math.max(0, deadline - Date.now())),
      this.resp?.close(Math.max(0, deadline - Date.now())),
      this.proxy?.close(Math.max(0, deadline - Date.now())),
    ]);
    const acknowledged = (await this.replication?.core.drain(deadline)) ?? true;
    this.metrics.drainDuration.set((Date.now() - started) / 1000);
    await this.replication?.stop();
    await this.http.close();
    this.log.info({ duration_ms: Date.now() - started, all_acknowledged: acknowledged }, 'baton node stopped');
  }

  /** Every member (peers configured but never heard from as 'dead' with no node id). */
  private memberList(): StatusResponse['members'] {
    const replication = this.replication;
    if (replication === undefined) return [{ nodeId: this.config.nodeId, address: this.apiAddress, state: 'alive', isSelf: true, replicationLagSeqs: 0n, coordinator: true, masteredPartitions: [], role: this.config.role }];
    const core = replication.core;
    const lag = core.unacked();
    const view = core.coordinator.views.current;
    const mastered = mastersByMember(core);
    return core.membership.members().map((m) => ({
      nodeId: m.nodeId,
      address: m.advertiseAddress,
      state: m.state,
      isSelf: m.isSelf,
      replicationLagSeqs: BigInt(lag.get(m.nodeId) ?? 0),
      role: m.nodeId === '' ? '' : m.role,
      index: view?.members.find((v) => v.nodeId === m.nodeId)?.index,
      coordinator: m.nodeId !== '' && m.nodeId === core.coordinator.coordinatorId,
      masteredPartitions: mastered.get(m.nodeId) ?? [],
    }));
  }

  /** What ClusterService/Status answers (and the status page draws). */
  private status(): StatusResponse {
    const stats = this.store.getStats();
    return {
      nodeId: this.config.nodeId,
      sessions: BigInt(stats.sessions),
      parts: BigInt(stats.parts),
      bytes: BigInt(stats.bytes),
      members: this.memberList(),
      maxBytes: BigInt(this.config.maxMemoryBytes),
      partitions: this.config.partitions,
      version: VERSION,
      startedAtUnixMs: BigInt(this.startedAt),
      tombstones: BigInt(stats.tombstones),
      configMismatches: (this.replication?.core.membership.configMismatches() ?? []).map((r) => ({
        nodeId: r.nodeId,
        address: r.advertiseAddress,
        settings: r.settings,
        lastSeenUnixMs: BigInt(r.lastAt),
      })),
      role: this.config.role,
      multicastGroups: this.replication?.joinedGroups() ?? [],
      coordinatorNodeId: this.replication === undefined ? this.config.nodeId : (this.replication.core.coordinator.coordinatorId ?? ''),
      viewId: BigInt(this.replication?.core.coordinator.viewId ?? 0),
      quorum: this.config.quorum,
      membersHeard: this.replication?.core.membersHeard(Date.now()) ?? 1,
    };
  }

  private clusterService(): ClusterServiceServer {
    return clusterService({
      status: () => this.status(),
      names: () => this.replication?.core,
      viewId: () => this.replication?.core.coordinator.viewId ?? 0,
    });
  }
}

function describeListenError(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  if (/EADDRINUSE|address already in use/i.test(text)) return 'address already in use';
  if (/EACCES|permission denied/i.test(text)) return 'permission denied';
  if (/EADDRNOTAVAIL|cannot assign requested address/i.test(text)) return 'no such local address';
  return text.split('\n')[0]!;
}
