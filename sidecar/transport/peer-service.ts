/**
 * baton.v1.PeerService: state transfer between nodes over gRPC, on the peer address.
 * The server streams partition digests and session snapshots out of the store; the
 * client side pulls them and merges what this node should hold.
 *
 * With a cluster key (or peer TLS files) the service runs over mutual TLS: both ends
 * present a certificate issued by a cluster root (src/wire/peer-tls.ts), the handshake refuses
 * anyone else, and no credential crosses the wire that could be replayed. Without (loopback
 * or --insecure) it is plaintext and accepts any caller on the peer address.
 */
import {
  type ChannelCredentials,
  type ChannelOptions,
  type ClientDuplexStream,
  type ClientReadableStream,
  credentials,
  Metadata,
  type ServerDuplexStream,
  ServerCredentials,
  status,
  type ServerWritableStream,
  type ServiceError,
} from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import type { ClusterKey } from '../../src/wire/cluster-key';
import { MAX_IDS_PER_REQUEST } from '../../src/core/resume-asks';
import {
  type ClusterSettingsResponse,
  type FetchRequest,
  type HandoverCommitRequest,
  type HandoverCommitResponse,
  type HandoverPrepareRequest,
  type HandoverPrepareResponse,
  type LookupRequest,
  type LookupResponse,
  PeerServiceClient,
  type ReplayRequest,
  type ReplayResponse,
  PeerServiceService,
  type PeerServiceServer,
  type SessionBatch,
  type SessionEntry,
} from '../../src/gen/baton/v1/peer';
import { type PeerTlsMaterial, peerTlsFromKeys, peerTlsFromPem } from '../../src/wire/peer-tls';
import type { SessionSnapshot, SessionStore } from '../../src/store/store';
import { PROTO_ROOT } from '../config/package-root';
import { guarded, RefusedRequest, RequestScanner } from '../net/request-limits';
import { OpenStreams } from '../net/server-shutdown';
import type { Config } from '../config/config';
import { toStatus } from '../net/grpc-status';
import { PreconditionFailedError } from '../../src/wire/errors';

/**
 * The receiving side of a live TCP handover (sidecar/capture/tcp-handover.ts), when this node
 * runs with --tcp-handover. Answers are results; a request it refuses rejects with a
 * message for the caller (FAILED_PRECONDITION).
 */
export interface HandoverReceiver {
  prepare(request: HandoverPrepareRequest): HandoverPrepareResponse;
  commit(request: HandoverCommitRequest): HandoverCommitResponse;
}

/** Frozen connections one HandoverPrepare call may carry. */
export const MAX_HANDOVER_CONNECTIONS_PER_CALL = 1000;

/** Session ids a peer serves in one Fetch or Lookup request. */
export { MAX_IDS_PER_REQUEST };
/** The most partitions a cluster may have (--partitions). */
const MAX_PARTITIONS = 65_536;
/** A Lookup answer is split into responses of about this many bytes of ids and values. */
export const LOOKUP_RESPONSE_BYTES = 1024 * 1024;
/** Peer addresses remembered as answering Fetch only. */
const MAX_PEER_ADDRESSES = 4096;
/** A FetchBatches message gathers sessions until about this many bytes of ids and values. */
export const FETCH_BATCH_BYTES = 64 * 1024;
/** A Fetch or FetchBatches stream writes about this many bytes of sessions per event-loop turn. */
const STREAM_TURN_BYTES = 256 * 1024;
/**
 * The TLS server name every peer connection asks for. Peers dial IP addresses, and an IP
 * is not a valid SNI name; the name is never checked (the chain to a cluster root is).
 */
const PEER_TLS_SERVER_NAME = 'baton-peer';

/**
 * This node's peer TLS material: from the --peer-tls-*-file options when given (already
 * validated by parseConfig), else derived from the cluster keys, else none (plaintext).
 */
export function peerTlsFor(config: Config, keys: readonly ClusterKey[] | undefined, now: number): PeerTlsMaterial | undefined {
  if (config.peerTlsFiles !== undefined) {
    const { ca, cert, key } = config.peerTlsFiles;
    return peerTlsFromPem(ca, cert, key, { ca: '--peer-tls-ca-file', cert: '--peer-tls-cert-file', key: '--peer-tls-key-file' }, now);
  }
  return keys === undefined ? undefined : peerTlsFromKeys(keys, config.nodeId, now);
}

/** The gRPC credentials of both ends of peer connections: mutual TLS, or plaintext without material. */
export class PeerCredentials {
  private readonly channelCredentials: ChannelCredentials;

  constructor(readonly tls: PeerTlsMaterial | undefined) {
    this.channelCredentials =
      tls === undefined
        ? credentials.createInsecure()
        : credentials.createSsl(Buffer.from(tls.rootsPem), Buffer.from(tls.keyPem), Buffer.from(tls.certPem), {
            // OpenSSL has verified the chain to a cluster root; the name is not what identifies a peer.
            checkServerIdentity: () => undefined,
          });
  }

  /** Server side: a certificate from a trusted root is required of every caller. */
  server(): ServerCredentials {
    const tls = this.tls;
    if (tls === undefined) return ServerCredentials.createInsecure();
    return ServerCredentials.createSsl(Buffer.from(tls.rootsPem), [{ private_key: Buffer.from(tls.keyPem), cert_chain: Buffer.from(tls.certPem) }], true);
  }

  channel(): ChannelCredentials {
    return this.channelCredentials;
  }

  channelOptions(): ChannelOptions {
    return this.tls === undefined ? {} : { 'grpc.ssl_target_name_override': PEER_TLS_SERVER_NAME };
  }
}

/**
 * PeerService as served: every request is scanned against limits before it is decoded
 * (request-limits.ts), so one message cannot cost the node more than its size in memory;
 * the limits are wider than what the handlers accept, which answer INVALID_ARGUMENT.
 */
export function peerServiceDefinition(): typeof PeerServiceService {
  const definitions = loadSync(['baton/v1/peer.proto'], { includeDirs: [PROTO_ROOT], keepCase: true });
  const scanner = new RequestScanner(
    definitions,
    {
      'baton.v1.LookupRequest.session_ids': 4 * MAX_IDS_PER_REQUEST,
      'baton.v1.FetchRequest.session_ids': 4 * MAX_IDS_PER_REQUEST,
      'baton.v1.FetchRequest.partitions': 4 * MAX_PARTITIONS,
      'baton.v1.FetchBatchesRequest.session_ids': 4 * MAX_IDS_PER_REQUEST,
      'baton.v1.FetchBatchesRequest.partitions': 4 * MAX_PARTITIONS,
      'baton.v1.DigestsRequest.partitions': 4 * MAX_PARTITIONS,
      'baton.v1.HandoverPrepareRequest.connections': 4 * MAX_HANDOVER_CONNECTIONS_PER_CALL,
    },
    1024,
    4 * (MAX_IDS_PER_REQUEST + MAX_PARTITIONS),
  );
  const same = <T>(decoded: T) => decoded;
  const s = PeerServiceService;
  return {
    ...s,
    digests: { ...s.digests, requestDeserialize: guarded(s.digests, 'baton.v1.DigestsRequest', scanner, same) },
    fetch: { ...s.fetch, requestDeserialize: guarded(s.fetch, 'baton.v1.FetchRequest', scanner, same) },
    fetchBatches: { ...s.fetchBatches, requestDeserialize: guarded(s.fetchBatches, 'baton.v1.FetchBatchesRequest', scanner, same) },
    lookup: { ...s.lookup, requestDeserialize: guarded(s.lookup, 'baton.v1.LookupRequest', scanner, same) },
    replay: { ...s.replay, requestDeserialize: guarded(s.replay, 'baton.v1.ReplayRequest', scanner, same) },
    handoverPrepare: { ...s.handoverPrepare, requestDeserialize: guarded(s.handoverPrepare, 'baton.v1.HandoverPrepareRequest', scanner, same) },
  } as typeof PeerServiceService;
}

/**
 * Who answers PeerService.Replay on this node: the capture proxy sets `serve` once it runs
 * (sidecar/proxy/proxy-replay.ts); without one, a replay is refused FAILED_PRECONDITION.
 */
export interface ReplayService {
  serve: ((request: ReplayRequest) => Promise<ReplayResponse>) | undefined;
}

/** The calls a node answers beyond its store: each absent one is refused. */
export interface PeerSideServices {
  /** Re-injected requests go to this node's proxy (FAILED_PRECONDITION without one). */
  replay?: ReplayService;
  /** The receiving side of TCP handovers (set once the node's proxy runs; undefined without --tcp-handover). */
  handover?: () => HandoverReceiver | undefined;
  /** This node's cluster-critical settings (ClusterSettings); absent = UNIMPLEMENTED. */
  settings?: () => ClusterSettingsResponse;
  /**
   * A peer resuming a session asked for it: hand it over if this node owns it
   * (NodeCore.handOver; false: the copy read is not given); absent = lookups only read.
   */
  handOverSession?: (claimant: string, sessionId: string, now: number) => boolean;
}

/**
 * The PeerService handlers. Lookup streams stay open as long as their caller wants; each
 * registers in `streams`, so a stopping node can end them (its callers then open a new
 * stream to another peer) instead of waiting for them. Callers reach these handlers only
 * through the TLS handshake (when the node has material).
 */
export function peerServiceImplementation(
  store: SessionStore,
  nodeId: string,
  partitions: number,
  streams = new OpenStreams(),
  services: PeerSideServices = {},
): PeerServiceServer {
  // Each partition once: a request naming one partition many times would otherwise have it
  // streamed that many times.
  const checkPartitions = (asked: readonly number[]): number[] | undefined => {
    if (asked.some((p) => p >= partitions)) return undefined;
    return asked.length > 0 ? [...new Set(asked)] : Array.from({ length: partitions }, (_, i) => i);
  };
  /** Fetch and FetchBatches: the asked sessions, or every session of the asked partitions. */
  const fetch = <T>(call: ServerWritableStream<FetchRequest, T>, message: (entries: SessionEntry[]) => T, batchBytes: number): void => {
    const request: unknown = call.request;
    if (request instanceof RefusedRequest) return void call.emit('error', { code: request.code, details: request.details });
    const now = Date.now();
    const ids = call.request.sessionIds;
    if (ids.length > 0) {
      const snapshots = ids.slice(0, MAX_IDS_PER_REQUEST).map((id) => store.snapshot(id, now));
      streamSnapshots(call, snapshots.filter((s) => s !== undefined).values(), message, batchBytes);
      return;
    }
    const list = checkPartitions(call.request.partitions);
    if (list === undefined) return void call.emit('error', { code: status.INVALID_ARGUMENT, details: `partitions must be below ${partitions}` });
    const snapshots = (function* () {
      for (const p of list) yield* store.snapshotsIn(p, now);
    })();
    streamSnapshots(call, snapshots, message, batchBytes);
  };
  return {
    clusterSettings: (_call, callback) => {
      const settings = services.settings;
      if (settings === undefined) return callback({ code: status.UNIMPLEMENTED, details: 'this node does not answer ClusterSettings' });
      callback(null, settings());
    },
    digests: (call, callback) => {
      const request: unknown = call.request;
      if (request instanceof RefusedRequest) return callback({ code: request.code, details: request.details });
      const list = checkPartitions(call.request.partitions);
      if (list === undefined) return callback({ code: status.INVALID_ARGUMENT, details: `partitions must be below ${partitions}` });
      callback(null, {
        nodeId,
        partitions: list.map((partition) => ({ partition, digest: store.digest(partition), sessions: BigInt(store.partitionSize(partition)) })),
      });
    },
    fetch: (call: ServerWritableStream<FetchRequest, SessionEntry>) => fetch(call, (entries) => entries[0]!, 0),
    fetchBatches: (call: ServerWritableStream<FetchRequest, SessionBatch>) => fetch(call, (sessions) => ({ sessions }), FETCH_BATCH_BYTES),
    lookup: (call: ServerDuplexStream<LookupRequest, LookupResponse>) => {
      let failed = false;
      const forget = streams.add(() => {
        failed = true;
        call.end();
      });
      for (const event of ['end', 'cancelled', 'close', 'error']) call.once(event, forget);
      call.on('data', (request: LookupRequest | RefusedRequest) => {
        if (failed) return;
        if (request instanceof RefusedRequest) {
          failed = true;
          call.emit('error', { code: request.code, details: request.details });
          return;
        }
        if (request.sessionIds.length > MAX_IDS_PER_REQUEST) {
          failed = true;
          call.emit('error', { code: status.INVALID_ARGUMENT, details: `a lookup names at most ${MAX_IDS_PER_REQUEST} sessions (got ${request.sessionIds.length})` });
          return;
        }
        const now = Date.now();
        let sessions: SessionEntry[] = [];
        let bytes = 0;
        let full = false;
        const send = (more: boolean) => {
          // A caller that stops reading stops being read: answers never pile up here.
          if (!call.write({ requestId: request.requestId, sessions, more }) && !full) {
            full = true;
            call.pause();
            call.once('drain', () => call.resume());
          }
        };
        const claimant = request.claimantNodeId;
        for (const id of request.sessionIds) {
          const snapshot = store.snapshot(id, now);
          // Read first: the claimant gets the copy as it was, and claims from it.
          if (claimant !== '' && services.handOverSession?.(claimant, id, now) === false) continue;
          if (snapshot === undefined) continue;
          const size = snapshotBytes(snapshot);
          if (sessions.length > 0 && bytes + size > LOOKUP_RESPONSE_BYTES) {
            send(true);
            sessions = [];
            bytes = 0;
          }
          sessions.push(toEntry(snapshot));
          bytes += size;
        }
        send(false);
      });
      call.on('end', () => call.end());
    },
    replay: (call, callback) => {
      const request: unknown = call.request;
      if (request instanceof RefusedRequest) return callback({ code: request.code, details: request.details });
      const serve = services.replay?.serve;
      if (serve === undefined) return callback(toStatus(new PreconditionFailedError('this node runs no capture proxy (--proxy-listen)')));
      serve(call.request).then(
        (response) => callback(null, response),
        (err: unknown) => callback(toStatus(err)),
      );
    },
    handoverPrepare: (call, callback) => {
      const request: unknown = call.request;
      if (request instanceof RefusedRequest) return callback({ code: request.code, details: request.details });
      const receiver = services.handover?.();
      if (receiver === undefined) return callback({ code: status.FAILED_PRECONDITION, details: `node ${nodeId} does not take TCP handovers (--tcp-handover is off)` });
      if (call.request.connections.length > MAX_HANDOVER_CONNECTIONS_PER_CALL) {
        return callback({ code: status.INVALID_ARGUMENT, details: `a handover call carries at most ${MAX_HANDOVER_CONNECTIONS_PER_CALL} connections` });
      }
      try {
        callback(null, receiver.prepare(call.request));
      } catch (err) {
        callback({ code: status.FAILED_PRECONDITION, details: (err as Error).message });
      }
    },
    handoverCommit: (call, callback) => {
      const receiver = services.handover?.();
      if (receiver === undefined) return callback({ code: status.FAILED_PRECONDITION, details: `node ${nodeId} does not take TCP handovers (--tcp-handover is off)` });
      try {
        callback(null, receiver.commit(call.request));
      } catch (err) {
        callback({ code: status.FAILED_PRECONDITION, details: (err as Error).message });
      }
    },
  };
}

/**
 * Writes snapshots with flow control, so a large partition does not pile up in memory:
 * each message gathers entries until they reach `batchBytes` (0: one entry per message).
 * One turn of the event loop writes at most STREAM_TURN_BYTES, then lets other work run:
 * the stream's buffer takes many messages before it says to wait, and filling it in one
 * turn could encode megabytes of sessions while the node's calls waited.
 */
function streamSnapshots<T>(call: ServerWritableStream<FetchRequest, T>, snapshots: Iterator<SessionSnapshot>, message: (entries: SessionEntry[]) => T, batchBytes: number): void {
  let cancelled = false;
  call.on('cancelled', () => (cancelled = true));
  let batch: SessionEntry[] = [];
  let bytes = 0;
  const pump = () => {
    let turnBytes = 0;
    for (;;) {
      if (cancelled) return;
      if (turnBytes >= STREAM_TURN_BYTES) {
        setImmediate(pump);
        return;
      }
      const next = snapshots.next();
      if (!next.done) {
        batch.push(toEntry(next.value));
        const size = snapshotBytes(next.value);
        bytes += size;
        turnBytes += size;
        if (bytes < batchBytes) continue;
      }
      if (batch.length > 0) {
        const room = call.write(message(batch));
        batch = [];
        bytes = 0;
        if (!room && !next.done) {
          call.once('drain', pump);
          return;
        }
      }
      if (next.done) {
        call.end();
        return;
      }
    }
  };
  pump();
}

/** Settles when a server stream ends (after `each` took every message) or fails. */
function streamed<T>(call: ClientReadableStream<T>, each: (message: T) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    call.on('data', each);
    call.on('error', reject);
    call.on('end', resolve);
  });
}

/** About how many bytes a snapshot takes on the wire (ids, names and values). */
function snapshotBytes(s: SessionSnapshot): number {
  let bytes = s.id.length + 32;
  for (const part of s.parts) bytes += part.name.length + (part.value?.length ?? 0) + 32;
  return bytes;
}

/** The lookup stream's error when the peer ends it (it is shutting down). */
const LOOKUP_ENDED = 'the peer ended the lookup stream';

/**
 * Whether a failed peer call says the peer is down — nothing listens at its address (the
 * connection was refused), its connection was reset or closed under the call (its process
 * died: grpc-js's "Connection dropped"; peer clients keep no keepalive that would drop a
 * connection over silence), or it ended the stream (it is shutting down) — rather than that
 * it did not answer in time, as a peer cut off by the network does (then grpc-js may fail
 * calls at once for a while, naming the timed-out connection attempt: not a refusal).
 */
export function peerDown(err: unknown): boolean {
  const message = err instanceof Error ? err.message : '';
  return message === LOOKUP_ENDED || /\bECONNREFUSED\b|\bECONNRESET\b|Connection dropped/.test(message);
}

export function toEntry(s: SessionSnapshot): SessionEntry {
  return {
    sessionId: s.id,
    parts: s.parts.map((p) => ({
      name: p.name,
      value: p.value ?? undefined,
      version: BigInt(p.version),
      writerNodeId: p.writer,
      epoch: BigInt(p.epoch),
    })),
    ownerNodeId: s.owner,
    epoch: BigInt(s.epoch),
    expiresAtUnixMs: BigInt(s.expiresAt),
    ttlMs: s.ttlMs,
    deletedVersion: BigInt(s.deletedVersion),
  };
}

export function fromEntry(e: SessionEntry): SessionSnapshot {
  return {
    id: e.sessionId,
    parts: e.parts.map((p) => ({
      name: p.name,
      value: p.value ?? null,
      version: Number(p.version),
      writer: p.writerNodeId,
      epoch: Number(p.epoch),
    })),
    owner: e.ownerNodeId,
    epoch: Number(e.epoch),
    expiresAt: Number(e.expiresAtUnixMs),
    ttlMs: e.ttlMs,
    deletedVersion: Number(e.deletedVersion),
  };
}

/** Client side: one connection per peer address, reused, and one lookup stream on it. */
export class PeerClients {
  private readonly clients = new Map<string, PeerServiceClient>();
  private readonly lookups = new Map<string, LookupStream>();
  /** Peers that answered FetchBatches UNIMPLEMENTED (bounded: emptied when full). */
  private readonly unbatched = new Set<string>();

  constructor(private readonly credentials: PeerCredentials) {}

  client(address: string): PeerServiceClient {
    let client = this.clients.get(address);
    if (client === undefined) {
      client = new PeerServiceClient(address, this.credentials.channel(), {
        ...this.credentials.channelOptions(),
        'grpc.enable_retries': 0,
        'grpc.enable_channelz': 0,
        'grpc.max_receive_message_length': 256 * 1024 * 1024,
      });
      this.clients.set(address, client);
    }
    return client;
  }

  digests(address: string, partitions: number[], deadlineMs: number): Promise<Map<number, bigint>> {
    return new Promise((resolve, reject) => {
      this.client(address).digests({ partitions }, new Metadata(), { deadline: Date.now() + deadlineMs }, (err, response) => {
        if (err) return reject(err);
        resolve(new Map(response.partitions.map((d) => [d.partition, d.digest])));
      });
    });
  }

  /** The cluster-critical settings a peer runs with (for --config-from-peers). */
  clusterSettings(address: string, deadlineMs: number): Promise<ClusterSettingsResponse> {
    return new Promise((resolve, reject) => {
      this.client(address).clusterSettings({}, new Metadata(), { deadline: Date.now() + deadlineMs }, (err, response) => (err ? reject(err) : resolve(response)));
    });
  }

  /**
   * Streams snapshots of partitions (or of named sessions) from a peer into `onEntry`, in
   * batches (FetchBatches); a peer that predates them answers UNIMPLEMENTED, and is asked
   * one session per message (Fetch) from then on.
   */
  fetch(address: string, request: Partial<FetchRequest>, deadlineMs: number, onEntry: (snapshot: SessionSnapshot) => void): Promise<number> {
    const deadline = Date.now() + deadlineMs;
    const asked: FetchRequest = { partitions: request.partitions ?? [], sessionIds: request.sessionIds ?? [] };
    if (this.unbatched.has(address)) return this.fetchEach(address, asked, deadline, onEntry);
    let count = 0;
    const call = this.client(address).fetchBatches(asked, new Metadata(), { deadline });
    const each = (batch: SessionBatch) => {
      for (const entry of batch.sessions) {
        count++;
        onEntry(fromEntry(entry));
      }
    };
    return streamed(call, each).then(
      () => count,
      (err: ServiceError) => {
        if (err.code !== status.UNIMPLEMENTED || count > 0) throw err;
        if (this.unbatched.size >= MAX_PEER_ADDRESSES) this.unbatched.clear();
        this.unbatched.add(address);
        return this.fetchEach(address, asked, deadline, onEntry);
      },
    );
  }

  private fetchEach(address: string, request: FetchRequest, deadline: number, onEntry: (snapshot: SessionSnapshot) => void): Promise<number> {
    let count = 0;
    const call = this.client(address).fetch(request, new Metadata(), { deadline });
    return streamed(call, (entry: SessionEntry) => {
      count++;
      onEntry(fromEntry(entry));
    }).then(() => count);
  }

  /**
   * The snapshots a peer holds of `sessionIds`, asked on the lookup stream kept open to it
   * (opened on first use, and again after it broke). Rejects if the stream breaks or no
   * answer comes within `deadlineMs`. `claimant` (a resume: this node's id): the peer hands
   * over the sessions it owns.
   */
  lookup(address: string, sessionIds: string[], deadlineMs: number, claimant = ''): Promise<SessionSnapshot[]> {
    let stream = this.lookups.get(address);
    if (stream === undefined || stream.closed) {
      const opened = new LookupStream(this.client(address), new Metadata(), () => {
        if (this.lookups.get(address) === opened) this.lookups.delete(address);
      });
      this.lookups.set(address, (stream = opened));
    }
    return stream.ask(sessionIds, deadlineMs, claimant);
  }

  /** Asks a peer's proxy to answer a request this node's web server failed (PeerService.Replay). */
  replay(address: string, request: ReplayRequest, deadlineMs: number): Promise<ReplayResponse> {
    return new Promise((resolve, reject) => {
      this.client(address).replay(request, new Metadata(), { deadline: Date.now() + deadlineMs }, (err, response) => (err ? reject(err) : resolve(response)));
    });
  }

  close(): void {
    for (const stream of this.lookups.values()) stream.close(new Error('closing'));
    this.lookups.clear();
    for (const client of this.clients.values()) client.close();
    this.clients.clear();
  }
}

interface PendingLookup {
  /** What the responses with `more` set brought so far. */
  snapshots: SessionSnapshot[];
  resolve: (snapshots: SessionSnapshot[]) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

/**
 * One PeerService.Lookup stream: requests carry ids, answers come back in order. A request
 * that times out while the stream has answered nothing since it was sent closes the stream
 * (the peer may be gone without a reset), so the next lookup opens a fresh one.
 */
class LookupStream {
  closed = false;
  private readonly call: ClientDuplexStream<LookupRequest, LookupResponse>;
  private readonly pending = new Map<number, PendingLookup>();
  private nextId = 1;
  private lastAnswerAt = 0;

  constructor(
    client: PeerServiceClient,
    metadata: Metadata,
    private readonly onClosed: () => void,
  ) {
    this.call = client.lookup(metadata);
    this.call.on('data', (response: LookupResponse) => {
      this.lastAnswerAt = performance.now();
      const id = Number(response.requestId);
      const pending = this.pending.get(id);
      if (pending === undefined) return;
      for (const entry of response.sessions) pending.snapshots.push(fromEntry(entry));
      if (response.more) return;
      this.pending.delete(id);
      clearTimeout(pending.timer);
      pending.resolve(pending.snapshots);
    });
    this.call.on('error', (err: Error) => this.close(err));
    this.call.on('end', () => this.close(new Error(LOOKUP_ENDED)));
  }

  ask(sessionIds: string[], deadlineMs: number, claimantNodeId: string): Promise<SessionSnapshot[]> {
    if (this.closed) return Promise.reject(new Error('the lookup stream is closed'));
    const id = this.nextId++;
    const askedAt = performance.now();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`the peer did not answer within ${deadlineMs} ms`));
        if (this.lastAnswerAt < askedAt) this.close(new Error('the peer stopped answering lookups'));
      }, deadlineMs);
      this.pending.set(id, { snapshots: [], resolve, reject, timer });
      this.call.write({ requestId: BigInt(id), sessionIds, claimantNodeId });
    });
  }

  close(err: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.onClosed();
    this.call.cancel();
    for (const pending of this.pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(err);
    }
    this.pending.clear();
  }
}
