/**
 * attachTlsResumption: makes a Node TLS server (tls.Server, https.Server,
 * http2.createSecureServer) resume TLS sessions that began on any pod of the cluster.
 *
 * - Ticket keys (TLS 1.3 and TLS 1.2 tickets): the cluster's keys, from the source, followed
 *   at every rotation; previous and next keys are accepted (secure-context-hooks.ts).
 * - sessionIdContext: the cluster's, instead of Node's per-command-line default.
 * - TLS 1.2 session IDs: newSession stores the session in baton (one session per TLS
 *   session id, living the cluster's session lifetime) and resumeSession reads it back,
 *   from peers when this pod never saw it.
 * - TLS 1.3 resumes by ticket only, never by session id: the sessions OpenSSL announces for
 *   TLS 1.3 (one per ticket sent, two per full handshake) are not stored, and a server that
 *   cannot speak TLS 1.2 (minVersion TLSv1.3) looks nothing up.
 *
 * What cannot be avoided: a TLS 1.3 client sends a random 32-byte legacy session id in its
 * ClientHello (RFC 8446 §4.1.2, middlebox compatibility), and Node asks the resumeSession
 * hook about it before OpenSSL has read the hello's supported versions; the hook gets the
 * id alone. Such an id cannot be told from a TLS 1.2 session id issued on another pod (both
 * 32 random bytes from OpenSSL), so on a server that also speaks TLS 1.2 every such
 * handshake costs one lookup that misses (asking the peers). A server whose clients all
 * speak TLS 1.3 should set minVersion 'TLSv1.3' (or pass sessionIds: false).
 *
 * Rules:
 * - Until the first settings arrive the server keeps Node's own behaviour (its random
 *   ticket key, its own context): it serves, it only does not resume across pods yet.
 * - A failing source never fails a handshake: a session that cannot be stored or read is
 *   a full handshake, and the error goes to onError.
 * - A later server.setSecureContext() (a certificate rotation) gets the hooks again.
 */
import * as tls from 'node:tls';
import { sslSessionVersion, TLS1_3_VERSION } from './tls-capture';
import { installTicketKeys, setSessionIdContext, supportsHooks, type TicketKeyRing } from './secure-context-hooks';
import {
  MAX_TLS_SESSION_BYTES,
  MAX_TLS_SESSION_ID_BYTES,
  type TlsResumptionSettings,
  type TlsResumptionSource,
} from './tls-resumption-source';

export interface TlsResumptionOptions {
  /** Store TLS 1.2 sessions by id in baton (newSession/resumeSession); default true. */
  sessionIds?: boolean;
  /** Called with errors of the source (each failed save, load or stream); default: ignored. */
  onError?: (err: Error) => void;
}

export interface TlsResumption {
  /** Resolves once the cluster's settings are applied. */
  ready(): Promise<void>;
  /** The settings in force, once received. */
  settings(): TlsResumptionSettings | undefined;
  /** Stops following rotations and removes the session-ID hooks (the last keys stay in force). */
  detach(): void;
}

export function attachTlsResumption(server: tls.Server, source: TlsResumptionSource, options: TlsResumptionOptions = {}): TlsResumption {
  if (!supportsHooks(server)) {
    throw new TypeError('attachTlsResumption: the server is not a TLS server of this Node version (no secure context to hook)');
  }
  const onError = options.onError ?? (() => undefined);
  let current: TlsResumptionSettings | undefined;
  let ring: TicketKeyRing | undefined;
  let markReady: (() => void) | undefined;
  const ready = new Promise<void>((resolve) => (markReady = resolve));

  const apply = () => {
    if (current === undefined) return;
    installTicketKeys(server, () => ring);
    setSessionIdContext(server, current.sessionIdContext);
  };
  const stopWatching = source.watchTlsResumption((settings) => {
    current = settings;
    ring = { issue: Buffer.from(settings.issueKey), accept: settings.acceptKeys.map((k) => Buffer.from(k)) };
    apply();
    markReady?.();
    markReady = undefined;
  }, onError);

  // setSecureContext builds a new native context: hook it too.
  const original = server.setSecureContext;
  const own = function (this: tls.Server, secureOptions: tls.SecureContextOptions) {
    original.call(this, secureOptions);
    apply();
  };
  server.setSecureContext = own;

  const onNewSession = (id: Buffer, data: Buffer, done: () => void) => {
    // The handshake does not wait for the store: the session is on its way to baton while
    // the client reads its first response.
    done();
    if (current === undefined || id.length === 0 || id.length > MAX_TLS_SESSION_ID_BYTES || data.length > MAX_TLS_SESSION_BYTES) return;
    if (sslSessionVersion(data) === TLS1_3_VERSION) return;
    source.saveTlsSession(id, data, current.sessionLifetimeSeconds).catch((err: unknown) => onError(asError(err)));
  };
  const onResumeSession = (id: Buffer, done: (err: Error | null, data: Buffer | null) => void) => {
    if (current === undefined || id.length === 0 || id.length > MAX_TLS_SESSION_ID_BYTES || !speaksTls12(server)) {
      done(null, null);
      return;
    }
    source.loadTlsSession(id).then(
      (data) => done(null, data ?? null),
      (err: unknown) => {
        onError(asError(err));
        done(null, null);
      },
    );
  };
  const sessionIds = options.sessionIds ?? true;
  if (sessionIds) {
    server.on('newSession', onNewSession);
    server.on('resumeSession', onResumeSession);
  }

  return {
    ready: () => ready,
    settings: () => current,
    detach: () => {
      stopWatching();
      if (server.setSecureContext === own) server.setSecureContext = original;
      server.off('newSession', onNewSession);
      server.off('resumeSession', onResumeSession);
    },
  };
}

/** Whether the server may negotiate TLS 1.2, the only version that resumes by session id. */
function speaksTls12(server: tls.Server): boolean {
  const min = (server as tls.Server & { minVersion?: tls.SecureVersion }).minVersion ?? tls.DEFAULT_MIN_VERSION;
  return min !== 'TLSv1.3';
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}
