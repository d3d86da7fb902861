/**
 * The sidecar's Transport (src/core/transport.ts): carries out what the node core asks
 * for over UDP (unicast, and the multicast groups when configured: one socket per group,
 * bound at start, whose membership follows the core's Ready.groups) and the peer gRPC
 * service. It owns the sockets, seals and opens datagrams, runs peer requests (state
 * transfers, resume lookups, DNS) and feeds their answers back, and arms exactly one
 * timer, at the core's next deadline. It makes no protocol decision: every datagram,
 * request and deadline comes from the core, and every input goes to it with `now` read
 * from the wall clock here.
 */
import { randomBytes } from 'node:crypto';
import * as dgram from 'node:dgram';
import { promises as dns } from 'node:dns';
import { createServer } from 'node:net';
import { networkInterfaces } from 'node:os';
import { Server } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { BuzHash } from '../../src/store/buzhash';
import type { ClusterKey } from '../../src/wire/cluster-key';
import { coalescedSegmentBytes, DatagramOpener, DatagramSealer, FORMAT_VERSION, HEADER_BYTES, nodeGcm, TAG_BYTES } from '../../src/wire/datagram-codec';
import { NodeCore, type NodeObserver } from '../../src/core/node-core';
import { SeededRandom } from '../../src/store/random';
import type { ResumeObserver } from '../../src/core/session-api';
import type { SessionStore } from '../../src/store/store';
import { groupOfDestination } from '../../src/core/multicast-groups';
import { carryOut, type Outgoing, type PeerAnswer, type PeerRequest, type Ready, type Transport } from '../../src/core/transport';
import { type Config, nodeCoreConfig } from '../config/config';
import { type HandoverReceiver, PeerClients, PeerCredentials, peerDown, peerServiceDefinition, peerServiceImplementation, peerTlsFor, type ReplayService } from './peer-service';
import type { PeerServiceClient, ReplayRequest, ReplayResponse } from '../../src/gen/baton/v1/peer';
import { OpenStreams, shutdownWithin } from '../net/server-shutdown';
import { loadOpensslGcm } from '../net/openssl-gcm';
import { loadSocketSyscalls, udpSocketFd } from '../net/socket-syscalls';
import { type BatchDestination, batchDestination, type BatchReceiver, type BatchSender, eachSegment, loadBatchReceiver, loadBatchSender, MAX_SEGMENTED_BYTES, planSegments, receiveCoalesced } from '../net/udp-batch';

/** How long a stopping node's peer server waits for calls in flight before cancelling them. */
const PEER_SHUTDOWN_MS = 1000;
/** Socket buffers: the default 208 KiB holds only ~90 datagrams (see PLATFORM notes). */
const SOCKET_BUFFER_BYTES = 4 * 1024 * 1024;
/** A group that could not be joined (after the start) is tried again this often. */
const GROUP_RETRY_MS = 1000;
/**
 * Most datagrams read in batches per event-loop turn, besides those node:dgram delivers
 * itself (libuv reads up to 32 a turn): other work waits no longer than that. Draining
 * after every delivery could read 32 × 256 in one turn (a takeover's flood of claims).
 */
const DRAIN_MAX = 256;
/** Ephemeral UDP ports drawn at most while looking for one whose number TCP has free too. */
const PORT_ATTEMPTS = 20;

export class UdpTransport implements Transport {
  readonly core: NodeCore;
  readonly incarnation: bigint;
  readonly advertiseAddress: string;
  private readonly sealer: DatagramSealer;
  /** This node's incarnation as the datagram header carries it (bytes 4–11), as two 32-bit halves. */
  private readonly incarnationHigh: number;
  private readonly incarnationLow: number;
  private readonly opener: DatagramOpener;
  /** sendmmsg where koffi reaches it: a flush's datagrams in one system call. */
  private readonly batch: BatchSender | undefined;
  /** recvmmsg where koffi reaches it: after a datagram node:dgram delivers, the rest queued on its socket. */
  private readonly receiver: BatchReceiver | undefined;
  private readonly socketFds = new WeakMap<dgram.Socket, number | undefined>();
  /** Sockets the kernel hands runs of datagrams on (UDP_GRO): node:dgram's reads of them are cut apart here. */
  private readonly coalescingSockets = new WeakSet<dgram.Socket>();
  /** sendDatagrams' scratch: each datagram's destination and sealed length. */
  private readonly targets: (BatchDestination | undefined)[] = [];
  private lengths = new Uint32Array(256);
  /** Host, port and sockaddr by destination (a peer's host:port or a group), made once. */
  private readonly destinations = new Map<string, BatchDestination | undefined>();
  /**
   * The socket of each multicast group this node listens on (index = group; undefined =
   * not listening). A group left is closed, not just dropped: Linux delivers a group's
   * datagrams to every socket bound to its address and port while any socket of the host
   * is a member (IP_MULTICAST_ALL), so a socket kept open would go on receiving them.
   */
  private groupSockets: (dgram.Socket | undefined)[] = [];
  /** Group sockets a filter for own datagrams was tried on. */
  private readonly ownFiltered = new WeakSet<dgram.Socket>();
  private localAddresses: Set<string> | undefined;
  private readonly peerServer = new Server({ 'grpc.enable_channelz': 0, 'grpc.max_send_message_length': 256 * 1024 * 1024 });
  private readonly peers: PeerClients;
  /** Who answers peers' re-injected requests (the capture proxy sets it). */
  readonly replayService: ReplayService = { serve: undefined };
  /** Peers' Lookup streams open on this node's peer server. */
  private readonly peerStreams = new OpenStreams();
  /** Serves PeerService's handover calls once the node's proxy runs with --tcp-handover. */
  handoverReceiver: HandoverReceiver | undefined;
  /** Mutual TLS for the peer gRPC service and calls (plaintext without a key). */
  private readonly peerCredentials: PeerCredentials;
  /** The one timer, and when it fires. */
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Infinity;
  private flushScheduled = false;
  private stopped = false;
  /** A batch was read this event-loop turn (the next waits for the next turn). */
  private drainedThisTurn = false;
  /**
   * Groups whose sockets are being opened, and the groups the core last asked for
   * (undefined until it asked: a node alone holds every partition, so it wants them all).
   */
  private readonly groupsOpening = new Map<number, Promise<void>>();
  private wantedGroups: Set<number> | undefined;
  /** Groups whose last join failed (logged once at warn until joined), and the retry timer. */
  private readonly groupsFailing = new Set<number>();
  private groupRetry: NodeJS.Timeout | undefined;

  /**
   * Binds the UDP socket first, so the advertised address carries the real port. The peer
   * gRPC service takes the same number over TCP (start): with port 0, a number some TCP
   * socket already holds (another process's connection, say) is given back and another
   * drawn, rather than failing the start.
   */
  static async open(
    config: Config,
    store: SessionStore,
    hasher: BuzHash,
    keys: ClusterKey[] | undefined,
    log: Logger,
    observer: NodeObserver,
    resumeObserver?: ResumeObserver,
  ): Promise<UdpTransport> {
    const { host, port } = config.peerListen;
    for (let attempt = 1; ; attempt++) {
      const socket = dgram.createSocket({ type: 'udp4', recvBufferSize: SOCKET_BUFFER_BYTES, sendBufferSize: SOCKET_BUFFER_BYTES });
      await new Promise<void>((resolve, reject) => {
        socket.once('error', reject);
        socket.bind({ address: host, port, exclusive: true }, () => {
          socket.off('error', reject);
          resolve();
        });
      });
      if (port !== 0 || attempt === PORT_ATTEMPTS || (await tcpPortFree(host!, socket.address().port))) {
        return new UdpTransport(config, store, hasher, keys, log, observer, resumeObserver, socket);
      }
      await new Promise<void>((resolve) => socket.close(() => resolve()));
    }
  }

  private constructor(
    private readonly config: Config,
    store: SessionStore,
    hasher: BuzHash,
    keys: ClusterKey[] | undefined,
    private readonly log: Logger,
    observer: NodeObserver,
    resumeObserver: ResumeObserver | undefined,
    private readonly socket: dgram.Socket,
  ) {
    const now = Date.now();
    // Start time in the high bits, so a restart is always a higher incarnation; random low
    // bits keep two starts in the same millisecond apart.
    this.incarnation = (BigInt(now) << 16n) | BigInt(randomBytes(2).readUInt16BE());
    this.advertiseAddress =
      config.advertiseAddress !== '' ? config.advertiseAddress : `${config.peerListen.host}:${socket.address().port}`;
    const overhead = HEADER_BYTES + (keys === undefined ? 0 : TAG_BYTES);
    this.core = new NodeCore(
      {
        ...nodeCoreConfig(config, { advertiseAddress: this.advertiseAddress, incarnation: this.incarnation, maxPayloadBytes: config.maxDatagramBytes - overhead }),
        clusterKeyId: keys?.[0]?.id ?? 0,
      },
      {
        store,
        hasher,
        random: new SeededRandom(Number(this.incarnation & 0xffffffffn)),
        observer: loggingObserver(observer, log),
        resumeObserver,
        wake: () => this.scheduleFlush(),
      },
      now,
    );
    // AES-256-GCM with a kept OpenSSL context per key where koffi reaches it; node:crypto else.
    const openssl = keys === undefined ? undefined : loadOpensslGcm();
    if (openssl?.gcm === undefined && openssl !== undefined) log.info({ reason: openssl.reason }, 'datagrams sealed with node:crypto (a cipher object per datagram)');
    const gcm = openssl?.gcm ?? nodeGcm;
    this.sealer = new DatagramSealer(keys, this.incarnation, gcm);
    this.incarnationHigh = Number(this.incarnation >> 32n);
    this.incarnationLow = Number(this.incarnation & 0xffffffffn);
    this.opener = new DatagramOpener(keys, { maxDatagramBytes: config.maxDatagramBytes, gcm });
    this.socket.on('message', (msg, rinfo) => this.onMessage(msg, rinfo));
    this.socket.on('error', (err) => this.log.warn({ err }, 'replication socket error'));
    const batch = loadBatchSender(socket, config.udpSegmentation);
    if (batch.sender === undefined) log.info({ reason: batch.reason }, 'datagrams sent one system call each (no sendmmsg)');
    else if (!batch.sender.segmenting) {
      log.info(`datagrams to one destination sent one by one (${config.udpSegmentation ? 'the kernel takes no UDP_SEGMENT' : '--udp-segmentation off'})`);
    }
    this.batch = batch.sender;
    // Runs of datagrams read as one (UDP_GRO) where peers may send them segmented: sealed
    // datagrams (a run is cut at its sender's header, which only a sealed stream keeps
    // apart from the data), at least two to a run, and segmentation not ruled out.
    const coalescing = keys !== undefined && config.udpSegmentation && 2 * config.maxDatagramBytes <= MAX_SEGMENTED_BYTES;
    const receiver = loadBatchReceiver(config.maxDatagramBytes, coalescing);
    if (receiver.receiver === undefined) log.info({ reason: receiver.reason }, 'datagrams received one system call each (no recvmmsg)');
    this.receiver = receiver.receiver;
    this.receiveCoalescedOn(socket);
    this.peerCredentials = new PeerCredentials(peerTlsFor(config, keys, now));
    this.peers = new PeerClients(this.peerCredentials);
    const settings = () => ({
      nodeId: config.nodeId,
      partitions: config.partitions,
      replicas: config.replicas,
      clusterSeed: config.clusterSeed,
      multicastGroups: config.multicastGroups.map((g) => `${g.group}:${g.port}`),
      protocolVersion: FORMAT_VERSION,
      configDigest: this.core.configDigest,
    });
    const services = {
      replay: this.replayService,
      handover: () => this.handoverReceiver,
      settings,
      handOverSession: (claimant: string, sessionId: string, now: number) => this.core.handOver(claimant, sessionId, now),
    };
    this.peerServer.addService(peerServiceDefinition(), peerServiceImplementation(store, config.nodeId, config.partitions, this.peerStreams, services));
  }

  /** Binds the peer gRPC service (and the multicast group); starts the core (heartbeats). */
  async start(): Promise<void> {
    const host = this.config.peerListen.host!;
    await new Promise<void>((resolve, reject) =>
      this.peerServer.bindAsync(`${host}:${this.socket.address().port}`, this.peerCredentials.server(), (err) => (err ? reject(err) : resolve())),
    );
    if (this.config.multicast !== undefined) await this.openGroups();
    this.carry(this.core.tick(Date.now()));
  }

  /**
   * Peers a request of a session in `partition` may be re-injected into, best first: the
   * live replicas of its partition in rank order, every other live member, then suspected
   * members (most likely only slow: a try costs at most the replay's deadline).
   */
  replayCandidates(partition: number): { nodeId: string; address: string }[] {
    const live = new Map<string, string>();
    const suspect: { nodeId: string; address: string }[] = [];
    for (const m of this.core.membership.members()) {
      if (m.isSelf || m.nodeId === '') continue;
      if (m.state === 'alive') live.set(m.nodeId, m.advertiseAddress);
      else if (m.state === 'suspect') suspect.push({ nodeId: m.nodeId, address: m.advertiseAddress });
    }
    const ordered: { nodeId: string; address: string }[] = [];
    for (const nodeId of this.core.placement.ranking(partition)) {
      const address = live.get(nodeId);
      if (address === undefined) continue;
      ordered.push({ nodeId, address });
      live.delete(nodeId);
    }
    for (const [nodeId, address] of live) ordered.push({ nodeId, address });
    return [...ordered, ...suspect];
  }

  /** PeerService.Replay on a peer, over this node's peer connection to it. */
  replay(address: string, request: ReplayRequest, deadlineMs: number): Promise<ReplayResponse> {
    return this.peers.replay(address, request, deadlineMs);
  }

  /** The PeerService client of a peer address (one connection per address, reused). */
  peerServiceClient(address: string): PeerServiceClient {
    return this.peers.client(address);
  }

  /** The UDP port bound (the peer gRPC service listens on the same number). */
  get port(): number {
    return this.socket.address().port;
  }

  /**
   * Announces departure (peers re-replicate at once) and closes sockets. Peers' Lookup
   * streams are ended, and the peer server waits at most PEER_SHUTDOWN_MS for calls in
   * flight (a state transfer a peer is reading) before it cancels them.
   */
  async stop(): Promise<void> {
    if (this.stopped) return;
    const leaving = this.core.stop(Date.now());
    this.sendDatagrams(leaving.datagrams);
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.groupRetry);
    this.peers.close();
    this.peerStreams.endAll();
    await shutdownWithin(this.peerServer, PEER_SHUTDOWN_MS);
    await new Promise<void>((resolve) => this.socket.close(() => resolve()));
    this.batch?.close();
    this.receiver?.close();
    for (const socket of this.groupSockets) if (socket !== undefined) await new Promise<void>((resolve) => socket.close(() => resolve()));
    this.groupSockets = [];
    // A group still opening closes its socket as it opens (stopped).
    await this.groupsSettled();
  }

  // --- Transport ---------------------------------------------------------------------

  sendDatagrams(datagrams: readonly Outgoing[]): void {
    const batch = this.batch;
    // node:dgram still holding sends (its socket buffer was full) sends these after them.
    if (batch === undefined || datagrams.length < 2 || this.socket.getSendQueueCount() > 0) {
      for (const datagram of datagrams) this.sendOne(datagram);
      return;
    }
    const count = datagrams.length;
    const targets = this.targets;
    if (this.lengths.length < count) this.lengths = new Uint32Array(Math.max(count, 2 * this.lengths.length));
    const lengths = this.lengths;
    for (let i = 0; i < count; i++) {
      targets[i] = this.destination(datagrams[i]!.to);
      lengths[i] = this.sealer.sealedLength(datagrams[i]!.payload.length);
    }
    for (let i = 0; i < count; ) {
      const destination = targets[i];
      if (destination === undefined) {
        i++;
        continue;
      }
      // Datagrams in a row to one destination go as one segmented send where the kernel takes them.
      const run = batch.segmenting && destination.sockaddr !== undefined ? planSegments(lengths, i, count, (j) => targets[j] === destination, this.config.maxDatagramBytes) : undefined;
      const n = run?.count ?? 1;
      const segmentBytes = n > 1 ? run!.segmentBytes : 0;
      const total = n > 1 ? segmentBytes * (n - 1) + lengths[i + n - 1]! : lengths[i]!;
      const at = batch.add(destination, total, segmentBytes);
      if (at < 0 && batch.pending > 0 && destination.sockaddr !== undefined) {
        // Full: flush and plan again (the flush may have stopped segmenting).
        this.flushBatch(batch);
        continue;
      }
      for (let k = 0; k < n; k++) {
        const datagram = datagrams[i + k]!;
        // Not an IPv4 address (a host name), or larger than a batch: node:dgram sends it.
        if (at < 0) this.sendOne(datagram);
        else this.sealer.sealInto(datagram.payload, batch.buffer, at + k * segmentBytes, k < n - 1 ? segmentBytes : lengths[i + k]!);
      }
      i += n;
    }
    targets.length = 0;
    this.flushBatch(batch);
  }

  private flushBatch(batch: BatchSender): void {
    const segmenting = batch.segmenting;
    const segmented = batch.segmentedDatagrams;
    this.core.counters.sendErrors += batch.flush((bytes, port, host) => this.sendSealed(bytes, port, host));
    this.core.counters.segmentedDatagrams += batch.segmentedDatagrams - segmented;
    if (segmenting && !batch.segmenting) {
      this.log.warn({ errno: batch.segmentingRefusedErrno }, 'the kernel refused a segmented send (UDP_SEGMENT): datagrams go one by one from now on');
    }
  }

  private sendOne({ to, payload }: Outgoing): void {
    const destination = this.destination(to);
    if (destination !== undefined) this.sendSealed(this.sealer.seal(payload), destination.port, destination.host);
  }

  private sendSealed(bytes: Buffer, port: number, host: string): void {
    try {
      this.socket.send(bytes, port, host, (err) => {
        if (err) this.core.counters.sendErrors++;
      });
    } catch (err) {
      // A peer advertised an address no datagram can go to: count it, never crash.
      this.core.counters.sendErrors++;
      this.log.debug({ err: (err as Error).message, host, port }, 'replication send failed');
    }
  }

  /** Where `to` (a peer's host:port, or a multicast group) is; undefined for a group not configured. */
  private destination(to: string): BatchDestination | undefined {
    if (this.destinations.has(to)) return this.destinations.get(to);
    let destination: BatchDestination | undefined;
    const group = groupOfDestination(to);
    if (group !== undefined) {
      const address = this.config.multicastGroups[group];
      destination = address === undefined ? undefined : batchDestination(address.group, address.port);
    } else {
      const colon = to.lastIndexOf(':');
      destination = batchDestination(to.slice(0, colon).replace(/^\[|\]$/g, ''), Number(to.slice(colon + 1)));
    }
    // Peers come and go with new addresses: the map is bounded, emptied when full.
    if (this.destinations.size >= 4096) this.destinations.clear();
    this.destinations.set(to, destination);
    return destination;
  }

  startRequest(request: PeerRequest): void {
    const answer = (a: PeerAnswer) => {
      if (!this.stopped) this.carry(this.core.handleAnswer(a, Date.now()));
    };
    const failed = (err: unknown) => answer({ kind: 'failed', id: request.id, error: (err as Error).message, down: peerDown(err) });
    const within = (deadline: number) => Math.max(1, deadline - Date.now());
    switch (request.kind) {
      case 'digests':
        this.peers.digests(request.peerAddress, request.partitions, within(request.deadline)).then((digests) => answer({ kind: 'digests', id: request.id, digests }), failed);
        return;
      case 'fetch':
        this.peers
          .fetch(request.peerAddress, { partitions: request.partitions }, within(request.deadline), (snapshot) => answer({ kind: 'snapshot', id: request.id, snapshot }))
          .then(() => answer({ kind: 'fetched', id: request.id }), failed);
        return;
      case 'lookup':
        this.peers.lookup(request.peerAddress, request.sessionIds, within(request.deadline), request.claimant).then((snapshots) => answer({ kind: 'lookup', id: request.id, snapshots }), (err: unknown) => {
          this.log.debug({ peer: request.peerAddress, sessions: request.sessionIds.length, err: (err as Error).message }, 'resume fetch failed');
          failed(err);
        });
        return;
      case 'resolve_seeds': {
        const { name, port } = this.config.peersDns!;
        dns.lookup(name, { all: true, family: 4 }).then(
          (answers) => answer({ kind: 'seeds', id: request.id, addresses: answers.map((a) => `${a.address}:${port}`) }),
          (err: unknown) => this.log.warn({ err: (err as Error).message, name }, 'cannot resolve --peers-dns'),
        );
        return;
      }
    }
  }

  /** The one timer: kept when it fires no later than `deadline`, else moved to it. */
  armTimer(deadline: number): void {
    if (this.stopped || deadline === Infinity) return;
    if (this.timer !== undefined && this.timerAt <= deadline) return;
    clearTimeout(this.timer);
    const now = Date.now();
    this.timerAt = deadline;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.timerAt = Infinity;
      this.carry(this.core.tick(Date.now()));
    }, Math.max(0, deadline - now));
  }

  // --- internals -----------------------------------------------------------------

  private carry(ready: Ready): void {
    if (!this.stopped) carryOut(ready, this);
  }

  /** Sends what datagrams and API calls queued once this event-loop turn's are in (the core's wake). */
  private scheduleFlush(): void {
    if (this.flushScheduled || this.stopped) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      this.carry(this.core.flush(Date.now()));
    });
  }

  private get multicastInterface(): string {
    return this.config.multicastInterface !== '' ? this.config.multicastInterface : this.config.peerListen.host!;
  }

  /**
   * Joins the groups wanted at start: every group, unless the core already chose (peers'
   * heartbeats arrive on the unicast socket while the groups open). Errors here fail the
   * start; later joins and leaves (setGroups) only log.
   */
  private async openGroups(): Promise<void> {
    this.socket.setMulticastInterface(this.multicastInterface);
    this.socket.setMulticastTTL(this.config.multicastTtl);
    this.socket.setMulticastLoopback(true);
    for (let index = 0; index < this.config.multicastGroups.length; index++) {
      if (this.wantsGroup(index) && this.groupSockets[index] === undefined && !this.groupsOpening.has(index)) await this.joinGroup(index);
    }
  }

  /** Opens group `index`'s socket; settled by adoptGroupSocket once open. */
  private joinGroup(index: number): Promise<void> {
    const opening = this.openGroup(index)
      .then((socket) => this.adoptGroupSocket(index, socket))
      .finally(() => this.groupsOpening.delete(index));
    this.groupsOpening.set(index, opening);
    return opening;
  }

  /** Resolves once no group socket is opening (every join and leave asked for is done). */
  async groupsSettled(): Promise<void> {
    while (this.groupsOpening.size > 0) await Promise.allSettled([...this.groupsOpening.values()]);
  }

  private wantsGroup(index: number): boolean {
    return this.wantedGroups === undefined || this.wantedGroups.has(index);
  }

  /**
   * Keeps a group socket just opened, or closes it when the group was left (or the node
   * stopped) while it opened. One socket per group at most: only the one opening of a
   * group in flight (groupsOpening) gets here.
   */
  private adoptGroupSocket(index: number, socket: dgram.Socket): void {
    if (this.stopped || !this.wantsGroup(index)) {
      socket.close();
      return;
    }
    this.groupSockets[index] = socket;
    this.log.debug({ group: this.config.multicastGroups[index]!.group }, 'joined multicast group');
  }

  private async openGroup(index: number): Promise<dgram.Socket> {
    const { group, port } = this.config.multicastGroups[index]!;
    const socket = dgram.createSocket({ type: 'udp4', reuseAddr: true, recvBufferSize: SOCKET_BUFFER_BYTES });
    socket.on('message', (msg, rinfo) => this.onMessage(msg, rinfo, socket));
    socket.on('error', (err) => this.log.warn({ err, group }, 'multicast socket error'));
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('error', reject);
        socket.bind({ port, address: group }, () => {
          socket.off('error', reject);
          resolve();
        });
      });
      socket.addMembership(group, this.multicastInterface);
    } catch (err) {
      socket.close();
      throw err;
    }
    this.receiveCoalescedOn(socket);
    return socket;
  }

  /**
   * Listens on exactly `groups` (the core's choice: the groups of the partitions this node
   * holds): opens the sockets of groups joined, closes those of groups left. A group
   * whose socket is still opening is settled when it opens (adoptGroupSocket).
   */
  setGroups(groups: readonly number[]): void {
    if (this.config.multicast === undefined || this.stopped) return;
    this.wantedGroups = new Set(groups);
    for (let index = 0; index < this.config.multicastGroups.length; index++) {
      const socket = this.groupSockets[index];
      const { group } = this.config.multicastGroups[index]!;
      if (!this.wantsGroup(index)) {
        this.groupsFailing.delete(index);
        if (socket === undefined) continue;
        this.groupSockets[index] = undefined;
        socket.close();
        this.log.debug({ group }, 'left multicast group');
      } else if (socket === undefined && !this.groupsOpening.has(index)) {
        this.joinGroup(index).then(
          () => {
            if (this.groupsFailing.delete(index)) this.log.info({ group }, 'joined multicast group after failing to');
          },
          (err: unknown) => {
            const first = !this.groupsFailing.has(index);
            this.groupsFailing.add(index);
            this.log[first ? 'warn' : 'debug']({ err: (err as Error).message, group, retryMs: GROUP_RETRY_MS }, 'cannot join multicast group; trying again');
            this.retryGroupsLater();
          },
        );
      }
    }
  }

  /**
   * Asks for the wanted groups again after GROUP_RETRY_MS (one timer at most): a group the
   * core chose must not stay unjoined because one join failed, since the core reports
   * its groups only when they change.
   */
  private retryGroupsLater(): void {
    if (this.groupRetry !== undefined || this.stopped) return;
    this.groupRetry = setTimeout(() => {
      this.groupRetry = undefined;
      if (this.wantedGroups !== undefined) this.setGroups([...this.wantedGroups]);
    }, GROUP_RETRY_MS);
    this.groupRetry.unref();
  }

  /** The multicast groups (addresses) this node listens on now. */
  joinedGroups(): string[] {
    return this.groupSockets.flatMap((socket, index) => (socket !== undefined ? [this.config.multicastGroups[index]!.group] : []));
  }

  /**
   * Every own datagram a group socket receives cost a wake-up, a copy and a callback (one
   * per delta with small datagrams, and a full receive buffer drops them in the kernel
   * anyway). The first one shows the address they come from; a socket filter then drops
   * that source in the kernel. Only a source that is this node's own socket is filtered
   * (its port, an address of this host): the bytes that mark a datagram as ours are in
   * the clear, and a datagram claiming them from a peer's address must not make this node
   * deaf to that peer. Tried once per socket; without the filter (no koffi, not Linux,
   * IPv6) the check above still skips them.
   */
  private filterOwnDatagrams(socket: dgram.Socket, rinfo: { address: string; family: string; port: number }): void {
    if (this.ownFiltered.has(socket)) return;
    if (rinfo.family !== 'IPv4' || rinfo.port !== this.socket.address().port) return;
    // Read once: interfaces rarely change, and a flood of copies must not cost a lookup each.
    this.localAddresses ??= localAddresses();
    if (!this.localAddresses.has(rinfo.address)) return;
    this.ownFiltered.add(socket);
    const fd = this.fdOf(socket);
    const loaded = loadSocketSyscalls();
    if (loaded.syscalls === undefined || fd === undefined) return;
    try {
      loaded.syscalls.attachDropSourceFilter(fd, rinfo.address, rinfo.port);
      this.log.debug({ address: rinfo.address, port: rinfo.port }, 'own multicast datagrams dropped by a socket filter');
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, 'cannot filter own multicast datagrams; skipping them instead');
    }
  }

  /** Has the kernel hand runs of datagrams on `socket` as one read, where the batch receiver cuts them apart (it was made coalescing). */
  private receiveCoalescedOn(socket: dgram.Socket): void {
    if (this.receiver?.coalescing !== true) return;
    const fd = this.fdOf(socket);
    if (fd !== undefined && receiveCoalesced(fd)) this.coalescingSockets.add(socket);
  }

  /** node:dgram read a datagram (or a run of them) from a socket; what else is queued on that socket now is read in batches. */
  private onMessage(msg: Buffer, rinfo: dgram.RemoteInfo, groupSocket?: dgram.Socket): void {
    const from = `${rinfo.address}:${rinfo.port}`;
    const segment = this.coalescingSockets.has(groupSocket ?? this.socket) ? coalescedSegmentBytes(msg, this.config.maxDatagramBytes) : msg.length;
    if (segment >= msg.length) this.onDatagram(msg, rinfo, from, groupSocket);
    else this.core.counters.coalescedDatagrams += eachSegment(msg, 0, msg.length, segment, (datagram) => this.onDatagram(datagram, rinfo, from, groupSocket));
    const receiver = this.receiver;
    if (receiver === undefined || this.stopped || this.drainedThisTurn) return;
    this.drainedThisTurn = true;
    setImmediate(() => (this.drainedThisTurn = false));
    const socket = groupSocket ?? this.socket;
    const fd = this.fdOf(socket);
    if (fd === undefined) return;
    // A view of the batch's memory, valid during the call: it opens in place, and the core
    // copies what it keeps of a payload (handleDatagram).
    const coalesced = receiver.coalescedDatagrams;
    receiver.drain(fd, DRAIN_MAX, (datagram, source) => this.onDatagram(datagram, source, source.from, groupSocket));
    this.core.counters.coalescedDatagrams += receiver.coalescedDatagrams - coalesced;
  }

  /** A socket's descriptor, read once per socket. */
  private fdOf(socket: dgram.Socket): number | undefined {
    if (!this.socketFds.has(socket)) this.socketFds.set(socket, udpSocketFd(socket));
    return this.socketFds.get(socket);
  }

  private onDatagram(msg: Buffer, rinfo: { address: string; family: string; port: number }, from: string, groupSocket: dgram.Socket | undefined): void {
    if (this.stopped) return;
    // The group loops this node's own multicast datagrams back: skip them before any
    // decryption (the core would only discard them after), and have the kernel drop them.
    // Two reads: Buffer#compare with ranges validated its arguments for ~80 ns a datagram.
    if (msg.length >= HEADER_BYTES && msg.readUInt32BE(4) === this.incarnationHigh && msg.readUInt32BE(8) === this.incarnationLow) {
      this.core.counters.ownDatagramsReceived++;
      if (groupSocket !== undefined) this.filterOwnDatagrams(groupSocket, rinfo);
      return;
    }
    const opened = this.opener.open(msg);
    if (!opened.ok) {
      this.core.counters.drop(opened.reason);
      return;
    }
    this.core.handleDatagram(opened.payload, opened.incarnation, from, Date.now());
  }
}

/** Whether a TCP listener could bind host:port now (it is closed again at once). */
function tcpPortFree(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once('error', () => resolve(false));
    probe.listen({ host, port, exclusive: true }, () => probe.close(() => resolve(true)));
  });
}

/** This host's (its network namespace's) interface addresses. */
function localAddresses(): Set<string> {
  return new Set(Object.values(networkInterfaces()).flatMap((list) => (list ?? []).map((entry) => entry.address)));
}

/** The observer, with the log lines operators read: membership changes, and state transfers. */
function loggingObserver(observer: NodeObserver, log: Logger): NodeObserver {
  return {
    lag: (seconds) => observer.lag(seconds),
    peerFetch: (seconds, outcome) => observer.peerFetch(seconds, outcome),
    membership: (event) => {
      observer.membership(event);
      if (event.type === 'config_mismatch') {
        log.warn(
          { peer: event.nodeId, address: event.advertiseAddress, settings: event.settings },
          `refusing ${event.nodeId} (${event.advertiseAddress}): its cluster-critical configuration differs in ${event.settings.join(', ')}`,
        );
      } else log.info({ event: event.type, peer: event.nodeId }, 'membership change');
    },
    quorum: (lost) => {
      observer.quorum?.(lost);
      if (lost === undefined) log.info('quorum: this node hears enough members to acknowledge writes and claim sessions');
      else log.warn(`${lost}: it refuses writes, deletes and claims until it hears enough again`);
    },
    resync: (request, outcome, sessions, error) => {
      observer.resync(request, outcome, sessions, error);
      if (outcome === 'ok') log.debug({ peer: request.peerNodeId, reason: request.reason, partitions: request.partitions.length, sessions }, 'resync done');
      else log.warn({ peer: request.peerNodeId, reason: request.reason, err: error }, 'resync failed');
    },
  };
}
