/**
 * The node's own TlsResumptionSource, for a TLS server inside the sidecar's process (the
 * proxy): the same settings WatchTlsResumption streams, and TLS 1.2 session-ID entries
 * written and read through the session API directly, without a gRPC hop.
 */
import type { SessionApi } from '../../src/core/session-api';
import {
  TLS_SESSION_PART,
  tlsSessionStoreId,
  type TlsResumptionFeed,
  type TlsResumptionSettings,
  type TlsResumptionSource,
} from '../../src/capture/tls-resumption-source';

/** How long a handshake waits for a session from peers before it goes on with a full one. */
const LOAD_DEADLINE_MS = 1000;

export class LocalTlsResumptionSource implements TlsResumptionSource {
  constructor(
    private readonly api: SessionApi,
    private readonly feed: TlsResumptionFeed,
    private readonly clock: () => number = Date.now,
  ) {}

  watchTlsResumption(onSettings: (settings: TlsResumptionSettings) => void): () => void {
    let stopped = false;
    const unsubscribe = this.feed.subscribe((s) => {
      if (!stopped) onSettings(s);
    });
    const current = this.feed.current();
    if (current !== undefined) queueMicrotask(() => !stopped && onSettings(current));
    return () => {
      stopped = true;
      unsubscribe();
    };
  }

  async saveTlsSession(sessionId: Buffer, session: Buffer, lifetimeSeconds: number): Promise<void> {
    const now = this.clock();
    await this.api.put(
      { sessionId: tlsSessionStoreId(sessionId), parts: [{ name: TLS_SESSION_PART, value: session, ifVersion: undefined }], ttlSeconds: lifetimeSeconds, minReplicas: 0 },
      now,
    );
  }

  async loadTlsSession(sessionId: Buffer): Promise<Buffer | undefined> {
    const now = this.clock();
    const response = await this.api.get({ sessionId: tlsSessionStoreId(sessionId), parts: [TLS_SESSION_PART], resume: true }, now, now + LOAD_DEADLINE_MS);
    const value = response.session?.parts.find((p) => p.name === TLS_SESSION_PART)?.value;
    return value === undefined ? undefined : Buffer.from(value);
  }
}
