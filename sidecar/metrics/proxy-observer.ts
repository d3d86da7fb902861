/**
 * What the capture proxy reports to the metrics (sidecar/metrics/metrics.ts builds the
 * implementation). Every label value comes from the small sets below; no session id or
 * content is ever a label.
 */
export type StatusClass = '1xx' | '2xx' | '3xx' | '4xx' | '5xx';
export type ProxyProtocol = 'http/1.1' | 'h2';
export type UpstreamErrorReason = 'connect' | 'timeout' | 'reset';
export type ProxyResumeOutcome = 'local' | 'peer' | 'not_found' | 'unavailable';
export type CaptureKind =
  | 'session_minted'
  | 'session_rotated'
  | 'login'
  | 'logout'
  | 'auth_invalid'
  | 'bearer'
  | 'bearer_invalid'
  | 'client_cert'
  | 'tls'
  | 'write_failed';

/**
 * What became of a request whose web server failed before answering (origin side), or of a
 * re-injection a peer sent here (served, refused).
 */
export type ReinjectionOutcome = 'answered' | 'failed' | 'not_replayable' | 'too_large' | 'no_peer' | 'served' | 'refused';
export const REINJECTION_OUTCOMES: readonly ReinjectionOutcome[] = ['answered', 'failed', 'not_replayable', 'too_large', 'no_peer', 'served', 'refused'];

export interface ProxyObserver {
  /** One answered request (a 101 for an upgrade included). */
  request(status: number, protocol: ProxyProtocol): void;
  upstreamError(reason: UpstreamErrorReason): void;
  resume(outcome: ProxyResumeOutcome): void;
  capture(kind: CaptureKind): void;
  tlsReload(result: 'ok' | 'error'): void;
  reinjection(outcome: ReinjectionOutcome): void;
  /** A request answered from the session's remembered Idempotency-Key answers. */
  idempotentRepeat(): void;
}

export function statusClass(status: number): StatusClass {
  if (status < 200) return '1xx';
  if (status < 300) return '2xx';
  if (status < 400) return '3xx';
  if (status < 500) return '4xx';
  return '5xx';
}

/** An observer that records nothing (tests, and nodes built without metrics). */
export const NO_PROXY_OBSERVER: ProxyObserver = {
  request: () => undefined,
  upstreamError: () => undefined,
  resume: () => undefined,
  capture: () => undefined,
  tlsReload: () => undefined,
  reinjection: () => undefined,
  idempotentRepeat: () => undefined,
};

/**
 * One TCP state sample of a proxy client connection (sidecar/capture/tcp-capture.ts):
 * written (the `tcp` part changed and was stored), unchanged (not written), skipped (the
 * connection kept moving while it was read; the next tick reads again), failed (a system
 * call failed, or the sequence origins could not be learnt at accept), write_failed (the
 * store refused the part).
 */
export type TcpCaptureOutcome = 'written' | 'unchanged' | 'skipped' | 'failed' | 'write_failed';

export interface TcpCaptureObserver {
  sample(outcome: TcpCaptureOutcome): void;
}

export const TCP_CAPTURE_OUTCOMES: readonly TcpCaptureOutcome[] = ['written', 'unchanged', 'skipped', 'failed', 'write_failed'];

export const NO_TCP_CAPTURE_OBSERVER: TcpCaptureObserver = { sample: () => undefined };
