/**
 * Where a TLS server's resumption state comes from, as attachTlsResumption sees it. Two
 * implementations: BatonClient (library mode: the application's process talks to its
 * sidecar over the session API) and the node itself (the proxy, in the sidecar's process).
 */
import type { TlsResumptionSettings } from '../gen/baton/v1/session';

export type { TlsResumptionSettings };

/** Session id under which a TLS 1.2 session-ID entry is stored (one session per TLS session). */
export function tlsSessionStoreId(tlsSessionId: Uint8Array): string {
  return `baton:tls-session:${Buffer.from(tlsSessionId).toString('hex')}`;
}

/** The part of that session holding the serialized TLS session (DER, as OpenSSL exports it). */
export const TLS_SESSION_PART = 'tls-session';

/** Longest TLS session id (SSL_MAX_SSL_SESSION_ID_LENGTH). */
export const MAX_TLS_SESSION_ID_BYTES = 32;

/** A TLS session entry larger than this is not stored (Node's own limit, kMaxSessionSize). */
export const MAX_TLS_SESSION_BYTES = 10 * 1024;

export interface TlsResumptionSource {
  /**
   * Delivers the cluster's settings once they are known and again at every change; keeps
   * trying when the source is unavailable (`onError` reports each failure). Returns a
   * function that stops it.
   */
  watchTlsResumption(onSettings: (settings: TlsResumptionSettings) => void, onError?: (err: Error) => void): () => void;
  /** Stores a TLS 1.2 session under its id for `lifetimeSeconds`. */
  saveTlsSession(sessionId: Buffer, session: Buffer, lifetimeSeconds: number): Promise<void>;
  /** The stored TLS 1.2 session with this id (pulled from peers when needed), or undefined. */
  loadTlsSession(sessionId: Buffer): Promise<Buffer | undefined>;
}

/** What a node serves the settings from: the current ones, and each change. */
export interface TlsResumptionFeed {
  /** Undefined until this node holds the cluster's keys. */
  current(): TlsResumptionSettings | undefined;
  /** Calls `listener` with every new settings value; returns the unsubscribe function. */
  subscribe(listener: (settings: TlsResumptionSettings) => void): () => void;
}
