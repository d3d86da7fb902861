/**
 * What the capture proxy needs from the node's session API, and no more: resume a session
 * (the path of a gRPC Get with `resume`: a session this node does not own is pulled from
 * the peers and claimed), write its `auth` and `tls` parts, and keep it alive while the
 * client is active. The node builds it from its SessionApi (sessionApiStore); tests may
 * give the proxy any other implementation.
 */
import type { SessionApi } from '../../src/core/session-api';

export interface ResumedSession {
  /** False when no node holds the session (expired, deleted, or never existed). */
  found: boolean;
  /** The `auth` part's bytes, when the session has one. */
  auth: Uint8Array | undefined;
  /** The node that owned the session before this one resumed it; undefined if this node owned it. */
  previousOwner: string | undefined;
}

export interface ProxySessionStore {
  /** Rejects (UnavailableError) when the peers that may hold the session do not answer. */
  resume(sessionId: string): Promise<ResumedSession>;
  /** Writes parts; resolves once the replication queues have room (back-pressure). */
  put(sessionId: string, parts: readonly { name: 'auth' | 'tls'; value: Uint8Array }[]): Promise<void>;
  /** Refreshes the session's idle expiry (the proxy calls it at most once per interval per session). */
  touch(sessionId: string): void;
}

export function sessionApiStore(api: SessionApi, clock: () => number = Date.now): ProxySessionStore {
  return {
    async resume(sessionId) {
      const { response, previousOwner } = await api.resumeSession({ sessionId, parts: ['auth'], resume: true }, clock());
      const auth = response.session?.parts.find((p) => p.name === 'auth')?.value;
      return { found: response.found, auth, previousOwner };
    },
    async put(sessionId, parts) {
      await api.put({ sessionId, parts: parts.map((p) => ({ name: p.name, value: Buffer.from(p.value) })), ttlSeconds: 0, minReplicas: 0 }, clock());
    },
    touch(sessionId) {
      api.touch({ sessionId, ttlSeconds: 0 }, clock());
    },
  };
}
