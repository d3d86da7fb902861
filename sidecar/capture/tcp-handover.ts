/**
 * Live TCP handover on a planned move (--tcp-handover): on SIGTERM the proxy's plain-HTTP
 * client connections to --virtual-address that are idle between requests are frozen
 * (tcp-repair.ts) and handed, with their sessions, to a live peer, which restores them in
 * repair mode; --handover-hook moves the address; the peer's copies go live in its proxy;
 * only then are the frozen sockets here closed (silently). The client's TCP connection
 * goes on: no RST, no FIN, no byte lost or doubled.
 *
 * Rules:
 * - Optional: TcpHandover.create refuses (ConfigError, exit 2) at start when TCP repair
 *   cannot work in this process (no koffi, no CAP_NET_ADMIN), never at drain time.
 * - A connection is frozen only between requests: reads stopped (its next request waits in
 *   the kernel and moves with the receive queue), no request half-read, its answer handed
 *   to the kernel. A connection busy mid-request is read to the end of its request and
 *   answered first; one still busy when the wait ends stays here and drains normally.
 * - Every failure before the address moves leaves the connection working here: a peer that
 *   restores nothing, refuses, or does not answer, and a hook that fails or overruns
 *   --handover-hook-timeout-ms, revive the frozen sockets into this proxy (the hook's
 *   failure is logged and the drain goes on). After the address moved there is no way
 *   back; the frozen sockets are closed silently.
 * - Receiving: restored connections wait in repair mode at most PREPARED_TTL_MS for their
 *   commit, and at most MAX_PENDING_CONNECTIONS wait at once; a connection for another
 *   address than --virtual-address, or one the kernel refuses, is answered as failed.
 */
import { execFile } from 'node:child_process';
import type { Socket } from 'node:net';
import { Metadata } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type {
  FrozenTcpConnection,
  HandoverCommitRequest,
  HandoverCommitResponse,
  HandoverPrepareRequest,
  HandoverPrepareResponse,
  PeerServiceClient,
} from '../../src/gen/baton/v1/peer';
import { ConfigError } from '../../src/wire/errors';
import { MAX_HANDOVER_CONNECTIONS_PER_CALL, type HandoverReceiver } from '../transport/peer-service';
import type { ConnectionState } from '../proxy/proxy-server';
import { startReading, stopReading, tcpRepairUnavailable, TcpRepair, type FrozenConnection, type FrozenConnectionState, type RestoredConnection } from './tcp-repair';

/** How long restored connections wait in repair mode for their commit before they are dropped. */
export const PREPARED_TTL_MS = 30_000;
/** Restored connections waiting for a commit at once, over all handovers. */
export const MAX_PENDING_CONNECTIONS = 20_000;
/** Longest wait for busy connections to finish their request before the handover goes ahead without them. */
const BUSY_WAIT_MS = 10_000;
/** Time left for the peer calls and the hook after the busy wait, beyond the hook's own bound. */
const CALLS_RESERVE_MS = 2000;
/**
 * Queue bytes one HandoverPrepare call carries at most (with more connections than one):
 * the peer's gRPC server takes messages of up to 4 MiB. A single connection over it goes
 * alone, and is revived here if the peer refuses it.
 */
const PREPARE_CALL_BYTES = 3 * 1024 * 1024;
/** Deadline of one peer call. */
const PEER_CALL_MS = 5000;
/** How often busy connections are looked at while the handover waits for them. */
const BUSY_POLL_MS = 2;

/** What the handover needs of the proxy (ProxyServer implements it). */
export interface HandoverProxy {
  /** The listening socket's descriptor, or undefined (then new connections are not held off). */
  listeningFd(): number | undefined;
  clientConnections(): Socket[];
  connectionState(socket: Socket): ConnectionState;
  sessionOf(socket: Socket): string | undefined;
  adopt(socket: Socket): void;
  resumeSession(sessionId: string): Promise<void>;
}

/** The live peer a handover goes to. */
export interface HandoverPeer {
  nodeId: string;
  /** Its peer address (gRPC PeerService), host:port. */
  address: string;
  client: PeerServiceClient;
}

export interface TcpHandoverOptions {
  nodeId: string;
  virtualAddress: string;
  /** Shell command that moves the address; '' = it moves by other means. */
  hook: string;
  hookTimeoutMs: number;
  proxy: HandoverProxy;
  /** The peer to hand over to now, or undefined when no peer is live. */
  peer: () => HandoverPeer | undefined;
  log: Logger;
  /** Counts connections by what became of them (the metrics' sink). */
  count?: (outcome: HandoverOutcome, connections: number) => void;
}

export type HandoverOutcome = 'handed_over' | 'revived' | 'lost' | 'left' | 'taken' | 'refused' | 'dropped';

/** What one handover did, for the log and the caller. */
export interface HandoverResult {
  peer: string | undefined;
  /** Connections to the virtual address when the freeze began. */
  connections: number;
  /** Connections that went live on the peer. */
  handedOver: number;
  /** Frozen, then revived here because the handover did not happen for them. */
  revived: number;
  /** Frozen, the address moved, and the peer did not confirm them live. */
  lost: number;
  /** From SIGTERM's handover start until the peer's copies were live. */
  durationMs: number;
  /** The connections were frozen (or the busy wait ended) this long after the start. */
  frozenAfterMs: number;
  hookMs: number | undefined;
  /** The peer's restore (HandoverPrepare) and go-live (HandoverCommit) calls. */
  prepareMs: number | undefined;
  commitMs: number | undefined;
}

interface Outgoing {
  id: bigint;
  frozen: FrozenConnection;
  sessionId: string | undefined;
}

interface Incoming {
  connections: Map<bigint, RestoredConnection>;
  timer: NodeJS.Timeout;
}

export class TcpHandover implements HandoverReceiver {
  private readonly incoming = new Map<bigint, Incoming>();
  private pendingConnections = 0;
  private nextHandoverId = BigInt(Date.now()) << 16n;

  private constructor(
    private readonly options: TcpHandoverOptions,
    private readonly repair: TcpRepair,
  ) {}

  /**
   * Refuses (ConfigError) when this process cannot use TCP repair. `repair` is for tests
   * that give it socket calls of their own.
   */
  static create(options: TcpHandoverOptions, repair?: TcpRepair): TcpHandover {
    if (repair !== undefined) return new TcpHandover(options, repair);
    const missing = tcpRepairUnavailable();
    if (missing !== undefined) throw new ConfigError(`--tcp-handover cannot work in this process: ${missing}`);
    return new TcpHandover(options, TcpRepair.load());
  }

  /** Sending side, on SIGTERM: hands the idle connections over; resolves when settled (never rejects). */
  async handOver(deadline: number): Promise<HandoverResult> {
    const log = this.options.log;
    const started = performance.now();
    const result: HandoverResult = { peer: undefined, connections: 0, handedOver: 0, revived: 0, lost: 0, durationMs: 0, frozenAfterMs: 0, hookMs: undefined, prepareMs: undefined, commitMs: undefined };
    const finish = () => {
      result.durationMs = Math.round(performance.now() - started);
      this.count('handed_over', result.handedOver);
      this.count('revived', result.revived);
      this.count('lost', result.lost);
      this.count('left', Math.max(0, result.connections - result.handedOver - result.revived - result.lost));
      log.info(
        {
          peer: result.peer,
          connections: result.connections,
          handed_over: result.handedOver,
          revived: result.revived,
          lost: result.lost,
          duration_ms: result.durationMs,
          frozen_after_ms: result.frozenAfterMs,
          hook_ms: result.hookMs,
          prepare_ms: result.prepareMs,
          commit_ms: result.commitMs,
        },
        'tcp handover done',
      );
      return result;
    };
    const peer = this.options.peer();
    result.peer = peer?.nodeId;
    const connections = () => this.options.proxy.clientConnections().filter((s) => sameAddress(s.localAddress, this.options.virtualAddress));
    if (connections().length === 0) return finish();
    if (peer === undefined) {
      result.connections = connections().length;
      log.warn({ connections: result.connections }, 'tcp handover: no live peer; the connections drain here');
      return finish();
    }
    // From now on no new connection is taken here: one would not be in the handover, and
    // after the move the peer would answer its packets with a reset. Clients retry their SYN.
    const resumeAccepting = this.holdNewConnections();
    const waitUntil = Math.min(Date.now() + BUSY_WAIT_MS, deadline - this.options.hookTimeoutMs - CALLS_RESERVE_MS);
    const ready = await this.quiesce(connections, waitUntil);
    result.connections = connections().length;
    const outgoing = this.freeze(ready);
    result.frozenAfterMs = Math.round(performance.now() - started);
    if (outgoing.length === 0) {
      resumeAccepting();
      return finish();
    }
    const handoverId = this.nextHandoverId++;

    const prepareStarted = performance.now();
    const restored = await this.sendPrepare(peer, handoverId, outgoing).catch(async (err: unknown) => {
      log.warn({ peer: peer.nodeId, err: (err as Error).message }, 'tcp handover: the peer did not take the connections; they stay here');
      // Copies an earlier call restored there must not wait for a commit that never comes.
      await this.sendCommit(peer, { handoverId, abort: true }).catch(() => undefined);
      return new Set<bigint>();
    });
    result.prepareMs = Math.round(performance.now() - prepareStarted);
    const moving = outgoing.filter((o) => restored.has(o.id));
    result.revived += this.revive(outgoing.filter((o) => !restored.has(o.id)));
    if (moving.length === 0) {
      resumeAccepting();
      return finish();
    }

    const hookStarted = performance.now();
    const hookError = await this.runHook(peer);
    result.hookMs = Math.round(performance.now() - hookStarted);
    if (hookError !== undefined) {
      log.error({ hook: this.options.hook, err: hookError }, 'tcp handover: --handover-hook failed; the connections stay here and drain');
      await this.sendCommit(peer, { handoverId, abort: true }).catch(() => undefined);
      result.revived += this.revive(moving);
      resumeAccepting();
      return finish();
    }
    // The address has moved: from here on the connections live on the peer or nowhere.
    const commitStarted = performance.now();
    const live = await this.sendCommit(peer, { handoverId, abort: false })
      .catch(() => this.sendCommit(peer, { handoverId, abort: false }))
      .catch((err: unknown) => {
        log.error({ peer: peer.nodeId, err: (err as Error).message }, 'tcp handover: the peer did not confirm after the address moved; the connections are lost');
        return new Set<bigint>();
      });
    result.commitMs = Math.round(performance.now() - commitStarted);
    for (const o of moving) o.frozen.release();
    result.handedOver = moving.filter((o) => live.has(o.id)).length;
    result.lost = moving.length - result.handedOver;
    return finish();
  }

  /** Holds the proxy's listener (see TcpRepair.holdListener); answers how to let connections in again. */
  private holdNewConnections(): () => void {
    const fd = this.options.proxy.listeningFd();
    if (fd === undefined) return () => undefined;
    try {
      const release = this.repair.holdListener(fd);
      return () => {
        try {
          release();
        } catch (err) {
          this.options.log.warn({ err: (err as Error).message }, 'tcp handover: the listener could not take connections again');
        }
      };
    } catch (err) {
      this.options.log.warn({ err: (err as Error).message }, 'tcp handover: new connections could not be held off');
      return () => undefined;
    }
  }

  /**
   * Stops reading every connection; answers those idle between requests when all are (or
   * when the wait ends), judged again on every pass. Connections the proxy accepted
   * meanwhile (already in the accept queue when the listener was held) join in.
   */
  private async quiesce(connections: () => Socket[], waitUntil: number): Promise<Socket[]> {
    const proxy = this.options.proxy;
    for (;;) {
      const ready: Socket[] = [];
      let busy = 0;
      for (const socket of connections()) {
        if (socket.destroyed) continue;
        stopReading(socket);
        const state = proxy.connectionState(socket);
        if (state === 'idle') {
          ready.push(socket);
          continue;
        }
        busy++;
        // A request half read: read it to its end (the answer comes before the move).
        if (state === 'reading') startReading(socket);
      }
      if (busy === 0 || Date.now() >= waitUntil) {
        // Busy ones are left to the drain.
        for (const socket of connections()) if (!ready.includes(socket)) startReading(socket);
        return ready;
      }
      await new Promise((resolve) => setTimeout(resolve, BUSY_POLL_MS));
    }
  }

  private freeze(ready: Socket[]): Outgoing[] {
    const outgoing: Outgoing[] = [];
    let id = 0n;
    for (const socket of ready) {
      if (this.options.proxy.connectionState(socket) !== 'idle') {
        startReading(socket);
        continue;
      }
      const sessionId = this.options.proxy.sessionOf(socket);
      let frozen: FrozenConnection;
      try {
        frozen = this.repair.freeze(socket);
      } catch (err) {
        // Closed by the client meanwhile, or the kernel refused: it goes on (or ends) here.
        this.options.log.debug({ err: (err as Error).message }, 'tcp handover: a connection could not be frozen');
        startReading(socket);
        continue;
      }
      // Node's descriptor is closed, not the connection: the frozen one keeps it.
      socket.destroy();
      outgoing.push({ id: id++, frozen, sessionId });
    }
    return outgoing;
  }

  private revive(connections: Outgoing[]): number {
    let revived = 0;
    for (const o of connections) {
      try {
        this.options.proxy.adopt(o.frozen.revive());
        revived++;
      } catch (err) {
        o.frozen.release();
        this.options.log.warn({ err: (err as Error).message }, 'tcp handover: a frozen connection could not be revived');
      }
    }
    return revived;
  }

  private async sendPrepare(peer: HandoverPeer, handoverId: bigint, outgoing: Outgoing[]): Promise<Set<bigint>> {
    const restored = new Set<bigint>();
    for (const batch of batches(outgoing)) {
      const connections = batch.map((o) => toMessage(o.id, o.frozen.state, o.sessionId));
      const response = await unary<HandoverPrepareRequest, HandoverPrepareResponse>(peer.client.handoverPrepare.bind(peer.client), {
        handoverId,
        fromNodeId: this.options.nodeId,
        connections,
      });
      for (const id of response.restored) restored.add(id);
      for (const failure of response.failed) this.options.log.debug({ reason: failure.reason }, 'tcp handover: the peer could not restore a connection');
    }
    return restored;
  }

  private async sendCommit(peer: HandoverPeer, request: HandoverCommitRequest): Promise<Set<bigint>> {
    const response = await unary<HandoverCommitRequest, HandoverCommitResponse>(peer.client.handoverCommit.bind(peer.client), request);
    return new Set(response.live);
  }

  /** Runs --handover-hook; answers why it failed, or undefined. */
  private runHook(peer: HandoverPeer): Promise<string | undefined> {
    const hook = this.options.hook;
    if (hook === '') return Promise.resolve(undefined);
    return new Promise((resolve) => {
      execFile(
        '/bin/sh',
        ['-c', hook],
        {
          timeout: this.options.hookTimeoutMs,
          killSignal: 'SIGKILL',
          env: { ...process.env, BATON_HANDOVER_PEER: peer.nodeId, BATON_HANDOVER_PEER_ADDRESS: peer.address, BATON_VIRTUAL_ADDRESS: this.options.virtualAddress },
        },
        (err, _stdout, stderr) => {
          if (err === null) return resolve(undefined);
          const e = err as NodeJS.ErrnoException & { killed?: boolean; code?: number | string };
          if (e.killed) return resolve(`did not finish within ${this.options.hookTimeoutMs} ms (--handover-hook-timeout-ms)`);
          resolve(`exit ${String(e.code)}: ${stderr.trim().slice(0, 500) || e.message}`);
        },
      );
    });
  }

  /** Receiving side: restores the connections in repair mode and resumes their sessions. */
  prepare(request: HandoverPrepareRequest): HandoverPrepareResponse {
    const count = request.connections.length;
    if (this.pendingConnections + count > MAX_PENDING_CONNECTIONS) {
      throw new Error(`too many handed-over connections waiting for a commit (at most ${MAX_PENDING_CONNECTIONS})`);
    }
    let entry = this.incoming.get(request.handoverId);
    if (entry === undefined) {
      const created: Incoming = { connections: new Map(), timer: setTimeout(() => this.drop(request.handoverId, 'no commit came in time'), PREPARED_TTL_MS) };
      created.timer.unref();
      this.incoming.set(request.handoverId, (entry = created));
    }
    const started = performance.now();
    const response: HandoverPrepareResponse = { restored: [], failed: [] };
    const sessions = new Set<string>();
    for (const message of request.connections) {
      const fail = (reason: string) => response.failed.push({ connectionId: message.connectionId, reason });
      if (entry.connections.has(message.connectionId)) {
        fail('restored already');
        continue;
      }
      const state = fromMessage(message);
      if (!sameAddress(state.localAddress, this.options.virtualAddress)) {
        fail(`not a connection to --virtual-address ${this.options.virtualAddress}`);
        continue;
      }
      const invalid = invalidState(state);
      if (invalid !== undefined) {
        fail(invalid);
        continue;
      }
      try {
        entry.connections.set(message.connectionId, this.repair.restore(state));
        this.pendingConnections++;
        response.restored.push(message.connectionId);
        if (message.sessionId !== '') sessions.add(message.sessionId);
      } catch (err) {
        fail((err as Error).message);
      }
    }
    this.count('refused', response.failed.length);
    for (const sessionId of sessions) {
      this.options.proxy.resumeSession(sessionId).catch((err: unknown) => this.options.log.debug({ err: (err as Error).message }, 'tcp handover: a session could not be resumed ahead'));
    }
    this.options.log.info(
      { from: request.fromNodeId, restored: response.restored.length, failed: response.failed.length, restore_ms: Math.round((performance.now() - started) * 10) / 10 },
      'tcp handover: connections restored, waiting for the address',
    );
    return response;
  }

  /** Receiving side: the restored connections go live in the proxy (or are closed, on abort). */
  commit(request: HandoverCommitRequest): HandoverCommitResponse {
    const entry = this.incoming.get(request.handoverId);
    if (entry === undefined) return { live: [] };
    if (request.abort) {
      this.drop(request.handoverId, 'the sender called it off');
      return { live: [] };
    }
    this.forget(request.handoverId, entry);
    const started = performance.now();
    const live: bigint[] = [];
    for (const [id, restored] of entry.connections) {
      try {
        this.options.proxy.adopt(restored.goLive());
        live.push(id);
      } catch (err) {
        this.options.log.warn({ err: (err as Error).message }, 'tcp handover: a restored connection could not go live');
      }
    }
    this.count('taken', live.length);
    this.count('refused', entry.connections.size - live.length);
    this.options.log.info({ live: live.length, live_ms: Math.round((performance.now() - started) * 10) / 10 }, 'tcp handover: connections live');
    return { live };
  }

  /** Node stopping: restored connections that never got their commit are dropped. */
  stop(): void {
    for (const id of [...this.incoming.keys()]) this.drop(id, 'this node is stopping');
  }

  private drop(handoverId: bigint, why: string): void {
    const entry = this.incoming.get(handoverId);
    if (entry === undefined) return;
    this.forget(handoverId, entry);
    for (const restored of entry.connections.values()) restored.abort();
    this.count('dropped', entry.connections.size);
    this.options.log.warn({ connections: entry.connections.size, why }, 'tcp handover: restored connections dropped');
  }

  private count(outcome: HandoverOutcome, connections: number): void {
    if (connections > 0) this.options.count?.(outcome, connections);
  }

  private forget(handoverId: bigint, entry: Incoming): void {
    clearTimeout(entry.timer);
    this.incoming.delete(handoverId);
    this.pendingConnections -= entry.connections.size;
  }
}

/** The outgoing connections in calls of at most MAX_HANDOVER_CONNECTIONS_PER_CALL connections and about PREPARE_CALL_BYTES. */
function batches(outgoing: Outgoing[]): Outgoing[][] {
  const out: Outgoing[][] = [];
  let current: Outgoing[] = [];
  let bytes = 0;
  for (const o of outgoing) {
    const size = o.frozen.state.sendQueue.length + o.frozen.state.recvQueue.length + 256;
    if (current.length > 0 && (current.length >= MAX_HANDOVER_CONNECTIONS_PER_CALL || bytes + size > PREPARE_CALL_BYTES)) {
      out.push(current);
      current = [];
      bytes = 0;
    }
    current.push(o);
    bytes += size;
  }
  if (current.length > 0) out.push(current);
  return out;
}

type UnaryCall<Req, Res> = (request: Req, metadata: Metadata, options: { deadline: number }, callback: (err: Error | null, response: Res) => void) => unknown;

function unary<Req, Res>(call: UnaryCall<Req, Res>, request: Req): Promise<Res> {
  return new Promise((resolve, reject) => {
    call(request, new Metadata(), { deadline: Date.now() + PEER_CALL_MS }, (err, response) => (err ? reject(err) : resolve(response)));
  });
}

/** Addresses equal, IPv4-mapped IPv6 included. */
function sameAddress(a: string | undefined, b: string): boolean {
  if (a === undefined) return false;
  const plain = (x: string) => (x.startsWith('::ffff:') ? x.slice(7) : x);
  return plain(a) === plain(b);
}

/** Why a state from the wire cannot be a connection, or undefined. */
function invalidState(s: FrozenConnectionState): string | undefined {
  if (s.localPort < 1 || s.localPort > 65535 || s.remotePort < 1 || s.remotePort > 65535) return 'a port out of range';
  if (s.mss < 1 || s.mss > 65535) return 'an MSS out of range';
  if (s.sndWscale > 14 || s.rcvWscale > 14) return 'a window scale over 14';
  if (s.unsentBytes > s.sendQueue.length) return 'more unsent bytes than the send queue holds';
  return undefined;
}

function toMessage(id: bigint, s: FrozenConnectionState, sessionId: string | undefined): FrozenTcpConnection {
  return {
    connectionId: id,
    localAddress: s.localAddress,
    localPort: s.localPort,
    remoteAddress: s.remoteAddress,
    remotePort: s.remotePort,
    sendSeq: s.sendSeq,
    recvSeq: s.recvSeq,
    sendQueue: s.sendQueue,
    unsentBytes: s.unsentBytes,
    recvQueue: s.recvQueue,
    mss: s.mss,
    timestamps: s.timestamps,
    sack: s.sack,
    windowScaling: s.windowScaling,
    sndWscale: s.sndWscale,
    rcvWscale: s.rcvWscale,
    timestamp: s.timestamp,
    sndWl1: s.window.sndWl1,
    sndWnd: s.window.sndWnd,
    maxWindow: s.window.maxWindow,
    rcvWnd: s.window.rcvWnd,
    rcvWup: s.window.rcvWup,
    sessionId: sessionId ?? '',
  };
}

function fromMessage(m: FrozenTcpConnection): FrozenConnectionState {
  return {
    localAddress: m.localAddress,
    localPort: m.localPort,
    remoteAddress: m.remoteAddress,
    remotePort: m.remotePort,
    sendSeq: m.sendSeq,
    recvSeq: m.recvSeq,
    sendQueue: Buffer.from(m.sendQueue),
    unsentBytes: m.unsentBytes,
    recvQueue: Buffer.from(m.recvQueue),
    mss: m.mss,
    timestamps: m.timestamps,
    sack: m.sack,
    windowScaling: m.windowScaling,
    sndWscale: m.sndWscale,
    rcvWscale: m.rcvWscale,
    timestamp: m.timestamp,
    window: { sndWl1: m.sndWl1, sndWnd: m.sndWnd, maxWindow: m.maxWindow, rcvWnd: m.rcvWnd, rcvWup: m.rcvWup },
  };
}
