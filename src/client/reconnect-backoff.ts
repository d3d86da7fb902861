/**
 * How long BatonClient waits before opening another Exchange stream after one that failed
 * without ever answering (the sidecar refused it, or went away before it answered).
 *
 * Rules:
 * - Pure: no timers and no clock; the caller arms one timer for the delay it is given, and
 *   the jitter comes from an injected source, so tests replay a sequence exactly.
 * - The n-th failure in a row (n from 1) waits min(maxMs, initialMs × 2^(n-1)), moved by up
 *   to ±JITTER of itself (gRPC's connection backoff uses the same 0.2), so clients that lost
 *   the same sidecar at the same moment do not come back in step.
 * - reset() after a stream that answered: the next failure waits initialMs again.
 */

export interface BackoffConfig {
  /** Wait after the first failure, in milliseconds. */
  initialMs: number;
  /** Longest wait, in milliseconds (before jitter). */
  maxMs: number;
}

/** The fraction of a delay by which jitter may move it either way. */
export const JITTER = 0.2;

export class ReconnectBackoff {
  private failures = 0;

  /** `random`: uniform in [0, 1). */
  constructor(
    private readonly config: BackoffConfig,
    private readonly random: () => number,
  ) {}

  /** Counts one more failed attempt; returns how long to wait before the next, in milliseconds. */
  fail(): number {
    // Capped before it is computed, so a long outage never overflows to Infinity.
    const doublings = Math.min(this.failures, 52);
    this.failures++;
    const base = Math.min(this.config.maxMs, this.config.initialMs * 2 ** doublings);
    return Math.max(0, Math.round(base * (1 + JITTER * (2 * this.random() - 1))));
  }

  /** A stream worked: start again from initialMs. */
  reset(): void {
    this.failures = 0;
  }

  /** Failed attempts since the last reset. */
  get failuresInARow(): number {
    return this.failures;
  }
}
