/**
 * baton.v1.PeerService: state transfer between nodes over gRPC, on the peer address.
 * The server streams partition digests and session snapshots out of the store; the
 * client side pulls them and merges what this node should hold.
 *
 * Callers authenticate with a token derived from the cluster key (HMAC, in the
 * `x-baton-peer-token` metadata); a node without a key (loopback or --insecure) accepts
 * any caller on its peer address.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { type ClientDuplexStream, credentials, Metadata, type ServerDuplexStream, status, type ServerWritableStream } from '@grpc/grpc-js';
import type { ClusterKey } from '../src/cluster-key';
import {
  type FetchRequest,
  type LookupRequest,
  type LookupResponse,
  PeerServiceClient,
  type PeerServiceServer,
  type SessionEntry,
} from '../src/gen/baton/v1/peer';
import type { SessionSnapshot, SessionStore } from '../src/store';

const TOKEN_HEADER = 'x-baton-peer-token';
/** Session ids a peer serves in one Fetch or Lookup request. */
export const MAX_IDS_PER_REQUEST = 10_000;
/** A Lookup answer is split into responses of about this many bytes of ids and values. */
export const LOOKUP_RESPONSE_BYTES = 1024 * 1024;

/** The tokens a caller may present (one per accepted key) and the one this node sends. */
export class PeerAuth {
  private readonly accepted: Buffer[];
  readonly token: string | undefined;

  constructor(keys: readonly ClusterKey[] | undefined) {
    const tokens = (keys ?? []).map((k) => createHmac('sha256', k.key).update('baton/peer-token/v1').digest());
    this.accepted = tokens;
    this.token = tokens[0]?.toString('base64');
  }

  metadata(): Metadata {
    const metadata = new Metadata();
    if (this.token !== undefined) metadata.set(TOKEN_HEADER, this.token);
    return metadata;
  }

  allows(metadata: Metadata): boolean {
    if (this.accepted.length === 0) return true;
    const presented = metadata.get(TOKEN_HEADER)[0];
    if (typeof presented !== 'string') return false;
    const bytes = Buffer.from(presented, 'base64');
    return this.accepted.some((t) => t.length === bytes.length && timingSafeEqual(t, bytes));
  }
}

export function peerServiceImplementation(store: SessionStore, nodeId: string, auth: PeerAuth, partitions: number): PeerServiceServer {
  const refuse = { code: status.UNAUTHENTICATED, details: 'missing or wrong peer token: is this node in the same cluster (same key)?' };
  const checkPartitions = (asked: readonly number[]): number[] | undefined => {
    if (asked.some((p) => p >= partitions)) return undefined;
    return asked.length > 0 ? [...asked] : Array.from({ length: partitions }, (_, i) => i);
  };
  return {
    digests: (call, callback) => {
      if (!auth.allows(call.metadata)) return callback(refuse);
      const list = checkPartitions(call.request.partitions);
      if (list === undefined) return callback({ code: status.INVALID_ARGUMENT, details: `partitions must be below ${partitions}` });
      callback(null, {
        nodeId,
        partitions: list.map((partition) => ({ partition, digest: store.digest(partition), sessions: BigInt(store.partitionSize(partition)) })),
      });
    },
    fetch: (call: ServerWritableStream<FetchRequest, SessionEntry>) => {
      if (!auth.allows(call.metadata)) return void call.emit('error', refuse);
      const now = Date.now();
      if (call.request.sessionIds.length > 0) {
        for (const id of call.request.sessionIds.slice(0, MAX_IDS_PER_REQUEST)) {
          const snapshot = store.snapshot(id, now);
          if (snapshot !== undefined) call.write(toEntry(snapshot));
        }
        call.end();
        return;
      }
      const list = checkPartitions(call.request.partitions);
      if (list === undefined) return void call.emit('error', { code: status.INVALID_ARGUMENT, details: `partitions must be below ${partitions}` });
      streamPartitions(call, store, list, now);
    },
    lookup: (call: ServerDuplexStream<LookupRequest, LookupResponse>) => {
      if (!auth.allows(call.metadata)) return void call.emit('error', refuse);
      let failed = false;
      call.on('data', (request: LookupRequest) => {
        if (failed) return;
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
        for (const id of request.sessionIds) {
          const snapshot = store.snapshot(id, now);
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
  };
}

/** Writes snapshots with flow control, so a large partition does not pile up in memory. */
function streamPartitions(call: ServerWritableStream<FetchRequest, SessionEntry>, store: SessionStore, partitions: number[], now: number): void {
  let cancelled = false;
  call.on('cancelled', () => (cancelled = true));
  const snapshots = (function* () {
    for (const p of partitions) yield* store.snapshotsIn(p, now);
  })();
  const pump = () => {
    for (;;) {
      if (cancelled) return;
      const next = snapshots.next();
      if (next.done) {
        call.end();
        return;
      }
      if (!call.write(toEntry(next.value))) {
        call.once('drain', pump);
        return;
      }
    }
  };
  pump();
}

/** About how many bytes a snapshot takes on the wire (ids, names and values). */
function snapshotBytes(s: SessionSnapshot): number {
  let bytes = s.id.length + 32;
  for (const part of s.parts) bytes += part.name.length + (part.value?.length ?? 0) + 32;
  return bytes;
}

export function toEntry(s: SessionSnapshot): SessionEntry {
  return {
    sessionId: s.id,
    parts: s.parts.map((p) => ({
      name: p.name,
      value: p.value === null ? undefined : Buffer.from(p.value, 'latin1'),
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
      value: p.value === undefined ? null : Buffer.prototype.latin1Slice.call(p.value, 0, p.value.length),
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

  constructor(private readonly auth: PeerAuth) {}

  client(address: string): PeerServiceClient {
    let client = this.clients.get(address);
    if (client === undefined) {
      client = new PeerServiceClient(address, credentials.createInsecure(), {
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
      this.client(address).digests({ partitions }, this.auth.metadata(), { deadline: Date.now() + deadlineMs }, (err, response) => {
        if (err) return reject(err);
        resolve(new Map(response.partitions.map((d) => [d.partition, d.digest])));
      });
    });
  }

  /** Streams snapshots of partitions (or of named sessions) from a peer into `onEntry`. */
  fetch(address: string, request: Partial<FetchRequest>, deadlineMs: number, onEntry: (snapshot: SessionSnapshot) => void): Promise<number> {
    return new Promise((resolve, reject) => {
      let count = 0;
      const call = this.client(address).fetch(
        { partitions: request.partitions ?? [], sessionIds: request.sessionIds ?? [] },
        this.auth.metadata(),
        { deadline: Date.now() + deadlineMs },
      );
      call.on('data', (entry: SessionEntry) => {
        count++;
        onEntry(fromEntry(entry));
      });
      call.on('error', reject);
      call.on('end', () => resolve(count));
    });
  }

  /**
   * The snapshots a peer holds of `sessionIds`, asked on the lookup stream kept open to it
   * (opened on first use, and again after it broke). Rejects if the stream breaks or no
   * answer comes within `deadlineMs`.
   */
  lookup(address: string, sessionIds: string[], deadlineMs: number): Promise<SessionSnapshot[]> {
    let stream = this.lookups.get(address);
    if (stream === undefined || stream.closed) {
      const opened = new LookupStream(this.client(address), this.auth.metadata(), () => {
        if (this.lookups.get(address) === opened) this.lookups.delete(address);
      });
      this.lookups.set(address, (stream = opened));
    }
    return stream.ask(sessionIds, deadlineMs);
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
    this.call.on('end', () => this.close(new Error('the peer ended the lookup stream')));
  }

  ask(sessionIds: string[], deadlineMs: number): Promise<SessionSnapshot[]> {
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
      this.call.write({ requestId: BigInt(id), sessionIds });
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
