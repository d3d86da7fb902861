/**
 * Failure detection for elections (sans-IO): besides membership's heartbeat time-outs, a
 * member watches the masters it follows; when one goes silent it sends *inquiries*, and it
 * declares the master failed only when no reply (nor anything else) came within the
 * detection time-out. Much faster than membership's dead time-out, and per peer, not per
 * group: one silent node that masters many partitions costs one inquiry stream.
 *
 *   t                              last datagram heard from watched peer X
 *   t + inquireAfterMs             inquiry to X, again every inquiryIntervalMs
 *   t + inquireAfterMs + detectionTimeoutMs   no reply: X failed ('failed' event)
 *   any datagram from X later      X recovered ('recovered' event)
 *
 * Inputs carry `now`: `heard(nodeId, now)` for any authenticated datagram from a member,
 * `watch(nodeIds)` the peers worth inquiring (the masters this node follows), `tick(now)`;
 * outputs: `tick` returns the inquiries to send and the failures declared, `nextDeadline()`.
 * Memory: one record per member ever heard; `forget` drops members membership dropped.
 */

export interface FailureProbeConfig {
  /** Silence from a watched peer before the first inquiry, in ms. Default 2 heartbeat intervals. */
  inquireAfterMs: number;
  /** Interval between inquiries to a silent peer, in ms. */
  inquiryIntervalMs: number;
  /** Time from the first inquiry without any reply until the peer is declared failed, in ms. */
  detectionTimeoutMs: number;
}

/** Defaults for a 250 ms heartbeat: a silent master is failed 800 ms after its last datagram. */
export const DEFAULT_FAILURE_PROBE_CONFIG: Readonly<FailureProbeConfig> = Object.freeze({
  inquireAfterMs: 500,
  inquiryIntervalMs: 100,
  detectionTimeoutMs: 300,
});

interface PeerRecord {
  lastHeardAt: number;
  /** When inquiries began (Infinity = not inquiring). */
  inquiringSince: number;
  nextInquiryAt: number;
  failed: boolean;
}

export interface ProbeTick {
  /** Peers to send an inquiry to now. */
  inquiries: string[];
  /** Peers declared failed now. */
  failed: string[];
}

export class FailureProbe {
  private readonly peers = new Map<string, PeerRecord>();
  private watched = new Set<string>();

  constructor(readonly config: FailureProbeConfig) {}

  /** Something authenticated came from `nodeId`; true when that peer had been declared failed. */
  heard(nodeId: string, now: number): boolean {
    const record = this.peers.get(nodeId);
    if (record === undefined) {
      this.peers.set(nodeId, { lastHeardAt: now, inquiringSince: Infinity, nextInquiryAt: Infinity, failed: false });
      return false;
    }
    const recovered = record.failed;
    record.lastHeardAt = Math.max(record.lastHeardAt, now);
    record.inquiringSince = Infinity;
    record.nextInquiryAt = Infinity;
    record.failed = false;
    return recovered;
  }

  /** The peers to inquire when silent; others are never declared failed here. */
  watch(nodeIds: Iterable<string>, now: number): void {
    this.watched = new Set(nodeIds);
    for (const id of this.watched) if (!this.peers.has(id)) this.peers.set(id, { lastHeardAt: now, inquiringSince: Infinity, nextInquiryAt: Infinity, failed: false });
  }

  isFailed(nodeId: string): boolean {
    return this.peers.get(nodeId)?.failed ?? false;
  }

  forget(nodeId: string): void {
    this.peers.delete(nodeId);
  }

  tick(now: number): ProbeTick {
    const out: ProbeTick = { inquiries: [], failed: [] };
    const { inquireAfterMs, inquiryIntervalMs, detectionTimeoutMs } = this.config;
    for (const id of this.watched) {
      const record = this.peers.get(id);
      if (record === undefined || record.failed) continue;
      if (record.inquiringSince === Infinity) {
        if (now < record.lastHeardAt + inquireAfterMs) continue;
        record.inquiringSince = now;
        record.nextInquiryAt = now;
      }
      if (now >= record.inquiringSince + detectionTimeoutMs) {
        record.failed = true;
        record.nextInquiryAt = Infinity;
        out.failed.push(id);
        continue;
      }
      if (now >= record.nextInquiryAt) {
        out.inquiries.push(id);
        record.nextInquiryAt = now + inquiryIntervalMs;
      }
    }
    return out;
  }

  nextDeadline(): number {
    let next = Infinity;
    for (const id of this.watched) {
      const record = this.peers.get(id);
      if (record === undefined || record.failed) continue;
      const at = record.inquiringSince === Infinity ? record.lastHeardAt + this.config.inquireAfterMs : Math.min(record.nextInquiryAt, record.inquiringSince + this.config.detectionTimeoutMs);
      if (at < next) next = at;
    }
    return next;
  }
}
