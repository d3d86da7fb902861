/**
 * Drives the replication core: owns the UDP sockets (unicast, and the multicast group
 * when configured), seals and opens datagrams, arms one timer at the core's next
 * deadline, runs state transfers over the peer gRPC service, resolves synchronous writes,
 * and keeps the peer list fresh from DNS. It makes no protocol decisions.
 */
import { randomBytes } from 'node:crypto';
import * as dgram from 'node:dgram';
import { promises as dns } from 'node:dns';
import { Server } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { BuzHash } from '../../src/store/buzhash';
import { fmix32, mixWord } from '../../src/store/buzhash';
import type { ClusterKey } from '../../src/wire/cluster-key';
import { DatagramOpener, DatagramSealer, HEADER_BYTES, TAG_BYTES, type DropReason } from '../../src/wire/datagram-codec';
import { Membership, type MembershipEvent } from '../../src/core/membership';
import { Placement } from '../../src/core/placement';
import { SeededRandom } from '../../src/store/random';
import { ReplicationEngine, type EngineDropReason, type LocalChange, type ResyncRequest } from '../../src/core/replication-engine';
import type { PeerCopies, Replicator } from '../../src/core/session-api';
import type { SessionSnapshot, SessionStore, StoredSession } from '../../src/store/store';
import { channelReceiverConfig, type Config, membershipConfig, reassemblyLimits } from '../config/config';
import { PeerClients, PeerCredentials, peerServiceDefinition, peerServiceImplementation, peerTlsFor } from './peer-service';
import { type PeerRef, ResumeFetcher } from './resume-fetcher';
import { OpenStreams, shutdownWithin } from '../net/server-shutdown';

/**
 * How often --peers-dns is re-resolved: it only finds new pods (heartbeats notice departed
 * ones), and CoreDNS answers cluster names with a 5 s TTL, so asking more often sees nothing new.
 */
const DNS_REFRESH_MS = 5000;
/** Deadline of one state-transfer call: generous, as a partition pulled under load may be large; a failure is retried. */
const RESYNC_DEADLINE_MS = 60_000;
/** How long a resume waits for a member that stopped answering heartbeats (suspect). */
const SUSPECT_PEER_WAIT_MS = 200;
/** A resume's fetch settles up to this long before the caller's deadline (at most a quarter of its time). */
const RESUME_ANSWER_MARGIN_MS = 250;
/** How long a stopping node's peer server waits for calls in flight before cancelling them. */
const PEER_SHUTDOWN_MS = 1000;
/** Socket buffers: the default 208 KiB holds only ~90 datagrams (see PLATFORM notes). */
const SOCKET_BUFFER_BYTES = 4 * 1024 * 1024;

export interface ReplicationSink {
  dropped(reason: DropReason | EngineDropReason | 'injected_loss'): void;
  lag(seconds: number): void;
  resync(reason: string, outcome: 'ok' | 'error'): void;
  membership(event: MembershipEvent): void;
  /** One peer's answer to a resume's fetch (or its failure), with its latency. */
  peerFetch(seconds: number, outcome: 'ok' | 'error'): void;
}

interface Waiter {
  needed: number;
  resolve: (acked: number) => void;
  timer: NodeJS.Timeout;
}

export class ReplicationDriver implements Replicator {
  readonly engine: ReplicationEngine;
  readonly membership: Membership;
  readonly placement: Placement;
  readonly incarnation: bigint;
  readonly advertiseAddress: string;
  private readonly sealer: DatagramSealer;
  /** This node's incarnation as the datagram header carries it (bytes 4–11). */
  private readonly incarnationBytes = Buffer.alloc(8);
  private readonly opener: DatagramOpener;
  private groupSocket: dgram.Socket | undefined;
  private readonly peerServer = new Server({ 'grpc.enable_channelz': 0, 'grpc.max_send_message_length': 256 * 1024 * 1024 });
  private readonly peers: PeerClients;
  /** Peers' Lookup streams open on this node's peer server. */
  private readonly peerStreams = new OpenStreams();
  /** Mutual TLS for the peer gRPC service and calls (plaintext without a key). */
  private readonly peerCredentials: PeerCredentials;
  private readonly resumeFetcher: ResumeFetcher;
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Infinity;
  private flushScheduled = false;
  private readonly waiters = new Map<number, Waiter>();
  /** Transfers in progress by peer and partitions, with the request to run again after (if any). */
  private readonly resyncing = new Map<string, ResyncRequest | undefined>();
  private antiEntropyTimer: NodeJS.Timeout | undefined;
  private readonly lossRandom = new SeededRandom(Date.now());
  private dnsTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  readonly counters = { resyncs: 0, resyncFailures: 0, sessionsTransferred: 0, sendErrors: 0, antiEntropyRepairs: 0, rereplicatedBytes: 0, backpressureWaits: 0 };
  /** Puts waiting for the send queues to shorten (one promise for all of them). */
  private room: { promise: Promise<void>; resolve: () => void } | undefined;

  /** Binds the UDP socket first, so the advertised address carries the real port. */
  static async open(
    config: Config,
    store: SessionStore,
    hasher: BuzHash,
    keys: ClusterKey[] | undefined,
    log: Logger,
    sink: ReplicationSink,
  ): Promise<ReplicationDriver> {
    const socket = dgram.createSocket({ type: 'udp4', recvBufferSize: SOCKET_BUFFER_BYTES, sendBufferSize: SOCKET_BUFFER_BYTES });
    const { host, port } = config.peerListen;
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind({ address: host, port, exclusive: true }, () => {
        socket.off('error', reject);
        resolve();
      });
    });
    return new ReplicationDriver(config, store, hasher, keys, log, sink, socket);
  }

  private constructor(
    private readonly config: Config,
    private readonly store: SessionStore,
    hasher: BuzHash,
    keys: ClusterKey[] | undefined,
    private readonly log: Logger,
    private readonly sink: ReplicationSink,
    private readonly socket: dgram.Socket,
  ) {
    // Start time in the high bits, so a restart is always a higher incarnation; random low
    // bits keep two starts in the same millisecond apart.
    this.incarnation = (BigInt(Date.now()) << 16n) | BigInt(randomBytes(2).readUInt16BE());
    this.advertiseAddress =
      config.advertiseAddress !== '' ? config.advertiseAddress : `${config.peerListen.host}:${socket.address().port}`;
    const digest = configDigest(hasher, config.partitions);
    this.membership = new Membership(
      { nodeId: config.nodeId, advertiseAddress: this.advertiseAddress, incarnation: this.incarnation },
      membershipConfig(config),
      digest,
    );
    this.membership.addSeedAddresses(config.peers);
    this.placement = new Placement(hasher, config.partitions, config.replicas);
    this.sealer = new DatagramSealer(keys, this.incarnation);
    this.incarnationBytes.writeBigUInt64BE(this.incarnation);
    this.opener = new DatagramOpener(keys, { maxDatagramBytes: config.maxDatagramBytes });
    const overhead = HEADER_BYTES + (keys === undefined ? 0 : TAG_BYTES);
    this.engine = new ReplicationEngine(
      {
        nodeId: config.nodeId,
        incarnation: this.incarnation,
        transport: config.multicast === undefined ? 'unicast' : 'multicast',
        maxPayloadBytes: config.maxDatagramBytes - overhead,
        retransmitBufferBytes: config.retransmitBufferBytes,
        sendWindowBytes: config.sendWindowBytes,
        ...reassemblyLimits(config),
        receiver: channelReceiverConfig(config),
      },
      store,
      this.membership,
      this.placement,
      new SeededRandom(Number(this.incarnation & 0xffffffffn)),
      {
        lag: (ms) => sink.lag(ms / 1000),
        dropped: (reason) => sink.dropped(reason),
        membershipEvent: (event) => {
          sink.membership(event);
          this.log.info({ event: event.type, peer: event.nodeId }, 'membership change');
        },
      },
      () => ({ advertiseAddress: this.advertiseAddress, configDigest: digest }),
    );
    this.socket.on('message', (msg, rinfo) => this.onMessage(msg, rinfo));
    this.socket.on('error', (err) => this.log.warn({ err }, 'replication socket error'));
    this.peerCredentials = new PeerCredentials(peerTlsFor(config, keys, Date.now()));
    this.peers = new PeerClients(this.peerCredentials);
    this.resumeFetcher = new ResumeFetcher(this.peers, (seconds, outcome) => sink.peerFetch(seconds, outcome), log);
    this.peerServer.addService(peerServiceDefinition(), peerServiceImplementation(store, config.nodeId, config.partitions, this.peerStreams));
  }

  get replicas(): number {
    return this.config.replicas;
  }

  /** Binds the peer gRPC service (and the multicast group); starts heartbeats. */
  async start(): Promise<void> {
    const host = this.config.peerListen.host!;
    await new Promise<void>((resolve, reject) =>
      this.peerServer.bindAsync(`${host}:${this.socket.address().port}`, this.peerCredentials.server(), (err) => (err ? reject(err) : resolve())),
    );
    if (this.config.multicast !== undefined) await this.joinGroup();
    if (this.config.peersDns !== undefined) {
      await this.refreshDns();
      this.dnsTimer = setInterval(() => void this.refreshDns(), DNS_REFRESH_MS);
      this.dnsTimer.unref();
    }
    if (this.config.antiEntropyIntervalSeconds > 0) {
      this.antiEntropyTimer = setInterval(() => {
        this.engine.antiEntropy(Date.now());
        this.pump();
      }, this.config.antiEntropyIntervalSeconds * 1000);
      this.antiEntropyTimer.unref();
    }
    this.pump();
  }

  /** The UDP port bound (the peer gRPC service listens on the same number). */
  get port(): number {
    return this.socket.address().port;
  }

  secondariesFor(sessionId: string): number {
    return this.placement.secondaries(this.store.partitionOf(sessionId), this.config.nodeId).length;
  }

  replicate(session: StoredSession, changes: readonly LocalChange[], now: number): number | undefined {
    const ticket = this.engine.replicate(session, changes, now);
    this.scheduleFlush();
    return ticket;
  }

  /** Sends what local operations queued once this event-loop turn's operations are in. */
  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      this.engine.flush(Date.now());
      this.pump();
    });
  }

  /**
   * Back-pressure for writes: once a channel's queue (deltas waiting for its send window)
   * holds two windows' worth, writers wait until it is down to one (ReplicationEngine.
   * sendQueueOver: channels with a suspect receiver do not count, so a dead secondary holds
   * writers back only until it is suspect).
   */
  sendQueueRoom(): Promise<void> | undefined {
    if (this.stopped) return undefined;
    if (this.room === undefined) {
      if (!this.engine.sendQueueOver(2)) return undefined;
      let resolve!: () => void;
      const promise = new Promise<void>((r) => (resolve = r));
      this.room = { promise, resolve };
    }
    this.counters.backpressureWaits++;
    return this.room.promise;
  }

  private releaseRoom(force: boolean): void {
    if (this.room === undefined) return;
    if (!force && this.engine.sendQueueOver(1)) return;
    this.room.resolve();
    this.room = undefined;
  }

  waitForAcks(ticket: number, needed: number, deadline: number): Promise<number> {
    this.engine.awaitTicket(ticket, needed);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiters.delete(ticket);
        const acked = this.engine.ackCount(ticket);
        this.engine.releaseTicket(ticket);
        resolve(acked);
      }, Math.max(0, deadline - Date.now()));
      this.waiters.set(ticket, { needed, resolve, timer });
    });
  }

  /**
   * Asks the members that may hold a session for their copies. A dead member is not asked
   * (a resume during a partition must not wait on the side it cannot reach), and a suspect
   * one is waited for at most SUSPECT_PEER_WAIT_MS. The fetch settles a little before the
   * caller's deadline, so the answer reaches the caller in time.
   */
  fetchFromPeers(sessionId: string, knownOwner: string | undefined, deadline: number): Promise<PeerCopies> {
    const partition = this.store.partitionOf(sessionId);
    const ranking = this.placement.ranking(partition);
    const candidates = ranking.slice(0, this.config.replicas === 0 ? ranking.length : this.config.replicas + 1);
    if (knownOwner !== undefined && !candidates.includes(knownOwner)) candidates.push(knownOwner);
    const now = Date.now();
    const settleBy = deadline - Math.min(RESUME_ANSWER_MARGIN_MS, Math.max(0, deadline - now) / 4);
    const peers: PeerRef[] = [];
    for (const nodeId of candidates) {
      if (nodeId === this.config.nodeId) continue;
      const member = this.membership.member(nodeId);
      if (member === undefined || member.state === 'dead' || member.state === 'left') continue;
      const waitUntil = member.state === 'suspect' ? Math.min(settleBy, now + SUSPECT_PEER_WAIT_MS) : settleBy;
      peers.push({ nodeId, address: member.advertiseAddress, deadline: waitUntil });
    }
    return this.resumeFetcher.fetch(sessionId, peers, settleBy);
  }

  replicateClaim(session: StoredSession, previousOwner: string, now: number): void {
    this.engine.replicateClaim(session, previousOwner, now);
    this.scheduleFlush();
  }

  /**
   * Resolves once this node has caught up after start: it has had time to hear from its
   * peers (three heartbeat intervals) and every partition transfer that placement gave it
   * has finished — or at `deadline`. Readiness waits for it, so a rolling restart does not
   * take down the next node while this one still lacks its copies.
   */
  async caughtUp(deadline: number): Promise<boolean> {
    const heard = Date.now() + 3 * this.config.heartbeatIntervalMs;
    while (Date.now() < deadline && !this.stopped && (Date.now() < heard || this.engine.hasPendingPulls())) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    return !this.engine.hasPendingPulls();
  }

  /**
   * Drain: sends what is queued and waits until every live secondary acknowledged
   * everything this node sent, or until `deadline`. Heartbeats, NACK repairs and acknowledgements go
   * on meanwhile. Resolves whether everything was acknowledged.
   */
  async drain(deadline: number): Promise<boolean> {
    this.engine.flush(Date.now());
    this.pump();
    // A suspect member has stopped answering (likely dead): waiting for it would only
    // stretch the drain to the failure detector's timeout.
    const answering = (nodeId: string) => this.membership.member(nodeId)?.state === 'alive';
    while (!this.engine.allAcknowledged(answering) && Date.now() < deadline && !this.stopped) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    return this.engine.allAcknowledged(answering);
  }

  /**
   * Announces departure (peers re-replicate at once) and closes sockets. Peers' Lookup
   * streams are ended, and the peer server waits at most PEER_SHUTDOWN_MS for calls in
   * flight (a state transfer a peer is reading) before it cancels them.
   */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.engine.leave();
    this.sendOutbox();
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.dnsTimer);
    clearInterval(this.antiEntropyTimer);
    for (const [ticket, waiter] of this.waiters) {
      clearTimeout(waiter.timer);
      waiter.resolve(this.engine.ackCount(ticket));
    }
    this.waiters.clear();
    this.releaseRoom(true);
    this.peers.close();
    this.peerStreams.endAll();
    await shutdownWithin(this.peerServer, PEER_SHUTDOWN_MS);
    await new Promise<void>((resolve) => this.socket.close(() => resolve()));
    if (this.groupSocket !== undefined) await new Promise<void>((resolve) => this.groupSocket!.close(() => resolve()));
  }

  // --- internals -----------------------------------------------------------------

  private async joinGroup(): Promise<void> {
    const { group, port } = this.config.multicast!;
    const iface = this.config.multicastInterface !== '' ? this.config.multicastInterface : this.config.peerListen.host!;
    this.socket.setMulticastInterface(iface);
    this.socket.setMulticastTTL(this.config.multicastTtl);
    this.socket.setMulticastLoopback(true);
    const socket = dgram.createSocket({ type: 'udp4', reuseAddr: true, recvBufferSize: SOCKET_BUFFER_BYTES });
    socket.on('message', (msg, rinfo) => this.onMessage(msg, rinfo));
    socket.on('error', (err) => this.log.warn({ err }, 'multicast socket error'));
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind({ port, address: group }, () => {
        socket.off('error', reject);
        resolve();
      });
    });
    socket.addMembership(group, iface);
    this.groupSocket = socket;
  }

  private async refreshDns(): Promise<void> {
    const { name, port } = this.config.peersDns!;
    try {
      const answers = await dns.lookup(name, { all: true, family: 4 });
      this.membership.setSeedAddresses([...this.config.peers, ...answers.map((a) => `${a.address}:${port}`)]);
    } catch (err) {
      this.log.warn({ err: (err as Error).message, name }, 'cannot resolve --peers-dns');
    }
  }

  private onMessage(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (this.stopped) return;
    // The group loops this node's own multicast datagrams back: skip them before any
    // decryption (the core would only discard them after).
    if (msg.length >= HEADER_BYTES && msg.compare(this.incarnationBytes, 0, 8, 4, 12) === 0) return;
    if (this.config.injectLossPercent > 0 && this.lossRandom.next() * 100 < this.config.injectLossPercent) {
      this.sink.dropped('injected_loss');
      return;
    }
    const opened = this.opener.open(msg);
    if (!opened.ok) {
      this.sink.dropped(opened.reason);
      return;
    }
    this.engine.handleDatagram(opened.payload, opened.incarnation, `${rinfo.address}:${rinfo.port}`, Date.now());
    this.pump();
  }

  /** Carries out what the engine asked for, then re-arms the timer. */
  private pump(): void {
    if (this.stopped) return;
    this.sendOutbox();
    this.releaseRoom(false);
    for (const request of this.engine.takeResyncs()) void this.resync(request);
    for (const { id, acked } of this.engine.takeCompletedTickets()) {
      const waiter = this.waiters.get(id);
      if (waiter === undefined) continue;
      clearTimeout(waiter.timer);
      this.waiters.delete(id);
      waiter.resolve(acked);
    }
    this.arm();
  }

  private sendOutbox(): void {
    for (const { to, payload } of this.engine.takeOutbox()) {
      let host: string;
      let port: number;
      if (to === 'multicast') {
        if (this.config.multicast === undefined) continue;
        host = this.config.multicast.group;
        port = this.config.multicast.port;
      } else {
        const colon = to.lastIndexOf(':');
        host = to.slice(0, colon).replace(/^\[|\]$/g, '');
        port = Number(to.slice(colon + 1));
      }
      try {
        this.socket.send(this.sealer.seal(payload), port, host, (err) => {
          if (err) this.counters.sendErrors++;
        });
      } catch (err) {
        // A peer advertised an address no datagram can go to: count it, never crash.
        this.counters.sendErrors++;
        this.log.debug({ err: (err as Error).message, to }, 'replication send failed');
      }
    }
  }

  private arm(): void {
    const now = Date.now();
    const next = Math.max(now, Math.min(this.engine.nextDeadline(), now + 1000));
    if (this.timer !== undefined && this.timerAt <= next) return;
    clearTimeout(this.timer);
    this.timerAt = next;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.timerAt = Infinity;
      this.engine.tick(Date.now());
      this.pump();
    }, next - now);
  }

  /**
   * Pulls partitions from a peer: compare digests, fetch those that differ, merge. A
   * request for what a transfer in progress already covers runs again once that one ends
   * (its snapshot may predate what the new request must cover); it is never taken as done
   * before it ran.
   */
  private async resync(request: ResyncRequest): Promise<void> {
    const key = `${request.peerNodeId} ${request.partitions.join(',')}`;
    if (this.resyncing.has(key)) {
      const waiting = this.resyncing.get(key);
      this.resyncing.set(key, waiting === undefined ? request : { ...request, channels: [...waiting.channels, ...request.channels] });
      if (waiting !== undefined) this.engine.resyncDone({ ...waiting, channels: [] });
      return;
    }
    this.resyncing.set(key, undefined);
    this.counters.resyncs++;
    try {
      const theirs = await this.peers.digests(request.peerAddress, request.partitions, RESYNC_DEADLINE_MS);
      const differing = request.partitions.filter((p) => theirs.get(p) !== this.store.digest(p));
      if (differing.length > 0) {
        await this.peers.fetch(request.peerAddress, { partitions: differing }, RESYNC_DEADLINE_MS, (snapshot) => {
          const now = Date.now();
          const partition = this.store.partitionOf(snapshot.id);
          const owner = snapshot.owner;
          if (owner === this.config.nodeId || this.placement.isSecondary(this.config.nodeId, partition, owner)) {
            if (!this.store.merge(snapshot, now)) return;
            this.counters.sessionsTransferred++;
            if (request.reason === 'anti_entropy') this.counters.antiEntropyRepairs++;
            if (request.reason === 'placement' || request.reason === 'join') this.counters.rereplicatedBytes += snapshotBytes(snapshot);
          }
        });
      }
      this.engine.resyncDone(request);
      this.sink.resync(request.reason, 'ok');
      this.log.debug({ peer: request.peerNodeId, reason: request.reason, partitions: request.partitions.length, differing: differing.length }, 'resync done');
    } catch (err) {
      this.counters.resyncFailures++;
      this.sink.resync(request.reason, 'error');
      this.log.warn({ peer: request.peerNodeId, reason: request.reason, err: (err as Error).message }, 'resync failed');
      this.engine.resyncFailed(request, Date.now());
    } finally {
      const again = this.resyncing.get(key);
      this.resyncing.delete(key);
      if (again !== undefined && !this.stopped) void this.resync(again);
      this.pump();
    }
  }

  /** Status view: every member, with lag in unacknowledged sequence numbers. */
  unacked(): Map<string, number> {
    return this.engine.unackedByPeer();
  }
}

/** Bytes of state a snapshot carries (ids, names, values), for the re-replication counter. */
function snapshotBytes(snapshot: SessionSnapshot): number {
  let bytes = snapshot.id.length;
  for (const part of snapshot.parts) bytes += part.name.length + (part.value?.length ?? 0);
  return bytes;
}

/** Digest of configuration that must match cluster-wide: partitions and the hash table. */
export function configDigest(hasher: BuzHash, partitions: number): bigint {
  let hi = 0x9747b28c;
  let lo = 0x1b873593;
  for (let i = 0; i < 256; i += 7) {
    hi = mixWord(hi, hasher.tableHi[i]!);
    lo = mixWord(lo, hasher.tableLo[i]!);
  }
  hi = fmix32(mixWord(hi, partitions));
  lo = fmix32(mixWord(lo, partitions ^ 0x5bd1e995));
  return (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
}
