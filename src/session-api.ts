/**
 * The session API's semantics, independent of transport: validates a request, runs it on
 * the store and builds the response. The unary handlers and the Exchange stream share it.
 * Throws BatonError subclasses; the server edge turns them into gRPC statuses.
 */
import { InvalidArgumentError } from './errors';
import type {
  DeleteRequest,
  DeleteResponse,
  GetRequest,
  GetResponse,
  Part,
  PutRequest,
  PutResponse,
  Session,
  TouchRequest,
  TouchResponse,
} from './gen/baton/v1/session';
import { versionTimeMs } from './hybrid-clock';
import { forEachPart, type SessionStore, type StoredSession } from './store';
import { checkPartNames, checkPartWrites, checkSessionId, checkTtlSeconds, RequestLimits } from './validation';

export interface SessionApiConfig extends RequestLimits {
  /** Secondaries each partition is replicated to; a Put's min_replicas may not exceed it. */
  replicas: number;
}

export class SessionApi {
  constructor(
    private readonly store: SessionStore,
    private readonly config: SessionApiConfig,
  ) {}

  put(request: PutRequest, now: number): PutResponse {
    checkSessionId(request.sessionId);
    checkPartWrites(request.parts, this.config);
    checkTtlSeconds(request.ttlSeconds);
    if (request.minReplicas > this.config.replicas) {
      throw new InvalidArgumentError(
        this.config.replicas === 0
          ? `min_replicas is ${request.minReplicas}, but no replicas are configured`
          : `min_replicas is ${request.minReplicas}, above the ${this.config.replicas} replicas configured`,
      );
    }
    const writes = request.parts.map((p) => ({
      name: p.name,
      value: p.value,
      ifVersion: p.ifVersion === undefined ? undefined : Number(p.ifVersion),
    }));
    const { version } = this.store.put(request.sessionId, writes, request.ttlSeconds * 1000, now);
    const v = BigInt(version);
    return { versions: request.parts.map((p) => ({ name: p.name, version: v })), replicasAcked: 0 };
  }

  get(request: GetRequest, now: number): GetResponse {
    checkSessionId(request.sessionId);
    checkPartNames(request.parts, this.config);
    const session = this.store.get(request.sessionId, now);
    if (session === undefined) return { found: false, session: undefined };
    return { found: true, session: toProtoSession(session, request.parts) };
  }

  delete(request: DeleteRequest, now: number): DeleteResponse {
    checkSessionId(request.sessionId);
    checkPartNames(request.parts, this.config);
    return { found: this.store.delete(request.sessionId, request.parts, now) };
  }

  touch(request: TouchRequest, now: number): TouchResponse {
    checkSessionId(request.sessionId);
    checkTtlSeconds(request.ttlSeconds);
    const expiresAt = this.store.touch(request.sessionId, request.ttlSeconds * 1000, now);
    return expiresAt === undefined
      ? { found: false, expiresAtUnixMs: 0n }
      : { found: true, expiresAtUnixMs: BigInt(expiresAt) };
  }
}

/** A stored session as the API returns it: live parts only, optionally just the named ones. */
export function toProtoSession(session: StoredSession, names: readonly string[] = []): Session {
  const parts: Part[] = [];
  forEachPart(session, (name, value, version, writer) => {
    if (value !== null && (names.length === 0 || names.includes(name))) parts.push(toProtoPart(name, value, version, writer));
  });
  return {
    sessionId: session.id,
    parts,
    ownerNodeId: session.owner,
    epoch: BigInt(session.epoch),
    expiresAtUnixMs: BigInt(session.expiresAt),
  };
}

export function toProtoPart(name: string, value: string, version: number, writer: string): Part {
  return {
    name,
    value: Buffer.from(value, 'latin1'),
    version: BigInt(version),
    writerNodeId: writer,
    updatedAtUnixMs: BigInt(versionTimeMs(version)),
  };
}
