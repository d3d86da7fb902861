/**
 * What the capture proxy needs from the node's session API, and no more: read a session this
 * node owns (a local store read, no peers asked), resume one it does not own (the path of a
 * gRPC Get with `resume`: pulled from the peers and claimed), read and write its parts
 * (`auth`, `tls`, the remembered Idempotency-Key answers), and keep it alive while the client is active. The node builds it from its
 * SessionApi (sessionApiStore); tests may give the proxy any other implementation.
 */
import type { SessionApi } from '../../src/core/session-api';
import { UnavailableError, WriteNotMadeError } from '../../src/wire/errors';

/**
 * How long a declared login or logout waits for a secondary before its answer goes to the
 * client: long enough for a round trip on a loaded node, short enough that a secondary
 * that died unnoticed (not yet declared dead) delays one answer, not the user.
 */
export const LOGIN_ACK_WAIT_MS = 1000;

export interface ResumedSession {
  /** False when no node holds the session (expired, deleted, or never existed). */
  found: boolean;
  /** The `auth` part's bytes, when the session has one. */
  auth: Uint8Array | undefined;
  /** The node that owned the session before this one resumed it; undefined if this node owned it. */
  previousOwner: string | undefined;
}

/** A session this node holds and owns, as the proxy reads it on every request. */
export interface OwnedSession {
  /** The `auth` part's bytes, when the session has one. */
  auth: Uint8Array | undefined;
}

export interface ProxySessionStore {
  /**
   * The session when this node holds it and is its owner: a synchronous local read, so the
   * requests of a session that lives here cost no resume. Undefined when this node holds no
   * copy or another node owns it (then resume it).
   */
  owned(sessionId: string): OwnedSession | undefined;
  /** Rejects (UnavailableError) when the peers that may hold the session do not answer. */
  resume(sessionId: string): Promise<ResumedSession>;
  /**
   * Writes parts; resolves once the replication queues have room (back-pressure), or, when
   * `durable`, once a secondary holds them (at most LOGIN_ACK_WAIT_MS; without a live
   * secondary, at once: there is nobody to wait for).
   */
  put(sessionId: string, parts: readonly { name: string; value: Uint8Array }[], durable?: boolean): Promise<void>;
  /** A part of a session this node holds (a local read, no peers asked); undefined when absent. */
  readPart(sessionId: string, name: string): Uint8Array | undefined;
  /** Refreshes the session's idle expiry (the proxy calls it at most once per interval per session). */
  touch(sessionId: string): void;
  /**
   * Copies every part of `fromId` to `toId` with `auth` replaced (durable, as a login is),
   * then shortens `fromId`'s idle expiry to `graceSeconds`: requests already on their way
   * with the old cookie still find the session as it was before the login (not logged in),
   * and the old id is gone soon after. Resolves false, writing nothing, when this node does
   * not hold `fromId`.
   */
  rotate(fromId: string, toId: string, auth: Uint8Array, graceSeconds: number): Promise<boolean>;
}

export function sessionApiStore(api: SessionApi, nodeId: string, clock: () => number = Date.now): ProxySessionStore {
  async function write(sessionId: string, parts: readonly { name: string; value: Uint8Array }[], durable: boolean): Promise<void> {
    const request = { sessionId, parts: parts.map((p) => ({ name: p.name, value: Buffer.from(p.value) })), ttlSeconds: 0 };
    const now = clock();
    if (!durable) {
      await api.put({ ...request, minReplicas: 0 }, now);
      return;
    }
    let answer;
    try {
      answer = api.put({ ...request, minReplicas: 1 }, now, now + LOGIN_ACK_WAIT_MS);
    } catch (err) {
      // No live secondary (a cluster of one, or the others are gone): refused before it
      // was applied; store it here, there is nobody to wait for.
      if (!(err instanceof UnavailableError)) throw err;
      answer = api.put({ ...request, minReplicas: 0 }, now);
    }
    try {
      await answer;
    } catch (err) {
      // Refused before it was made (the peers that may hold the session did not answer
      // whether it exists): store it here all the same, as a write that waits for nobody.
      if (err instanceof WriteNotMadeError) return void (await api.put({ ...request, minReplicas: 0 }, clock()));
      // No acknowledgement in time: the write stays applied here; the answer goes on.
      if (!(err instanceof UnavailableError)) throw err;
    }
  }

  return {
    owned(sessionId) {
      // Without `resume` a Get is a local read and answers at once (never a promise).
      const response = api.get({ sessionId, parts: ['auth'], resume: false }, clock());
      if (response instanceof Promise || !response.found || response.session?.ownerNodeId !== nodeId) return undefined;
      return { auth: response.session.parts.find((p) => p.name === 'auth')?.value };
    },
    async resume(sessionId) {
      const { response, previousOwner } = await api.resumeSession({ sessionId, parts: ['auth'], resume: true }, clock());
      const auth = response.session?.parts.find((p) => p.name === 'auth')?.value;
      return { found: response.found, auth, previousOwner };
    },
    put: (sessionId, parts, durable = false) => write(sessionId, parts, durable),
    readPart(sessionId, name) {
      const response = api.get({ sessionId, parts: [name], resume: false }, clock());
      if (response instanceof Promise || !response.found) return undefined;
      return response.session?.parts.find((p) => p.name === name)?.value;
    },
    touch(sessionId) {
      api.touch({ sessionId, ttlSeconds: 0 }, clock());
    },
    async rotate(fromId, toId, auth, graceSeconds) {
      const response = api.get({ sessionId: fromId, parts: [], resume: false }, clock());
      if (response instanceof Promise || !response.found || response.session === undefined) return false;
      const parts = response.session.parts.filter((p) => p.name !== 'auth');
      await write(toId, [...parts, { name: 'auth', value: auth }], true);
      api.touch({ sessionId: fromId, ttlSeconds: graceSeconds }, clock());
      return true;
    },
  };
}
