/**
 * Communication delay estimates between members, for staggered election timers: this
 * node's own measurements (round trips of heartbeat echoes and inquiries) and the
 * estimates each peer reports about itself in its heartbeats.
 *
 * The delay used is the whole round trip, not half of it: a DECLARE's one-way trip plus
 * the skew between two backups' failure detections (each detects from the master's last
 * datagram, which reached them one master-to-backup trip apart), both of which a staggered
 * timer step must cover.
 *
 * Rules:
 * - Own estimates are a moving average (1/8 weight per sample, as TCP's SRTT); a sample
 *   that is negative or not finite is ignored.
 * - `delayMs(a, b)`: a's own estimate to b when a is this node, else what a reported for b,
 *   else what b reported for a (delays are near symmetric), else `defaultDelayMs`.
 * - Memory: one entry per member for own estimates, at most MAX_REPORTED entries per
 *   reporting member; `forget` drops a member that left the membership.
 */

/** Most estimates kept from one member's report. */
export const MAX_REPORTED = 1024;
/** Weight of a new sample in the moving average. */
const SAMPLE_WEIGHT = 1 / 8;

export class PeerDelays {
  private readonly own = new Map<string, number>();
  private readonly reported = new Map<string, Map<string, number>>();

  constructor(
    private readonly self: string,
    /** Assumed one-way delay when nothing was measured, in ms. */
    readonly defaultDelayMs: number,
  ) {}

  /** A measured round trip to `peer`, in ms. */
  roundTrip(peer: string, rttMs: number): void {
    if (!Number.isFinite(rttMs) || rttMs < 0 || peer === this.self) return;
    const sample = rttMs;
    const before = this.own.get(peer);
    this.own.set(peer, before === undefined ? sample : before + (sample - before) * SAMPLE_WEIGHT);
  }

  /** `from`'s own estimates (node id → round-trip ms), replacing what it reported before. */
  report(from: string, delays: ReadonlyMap<string, number>): void {
    if (from === this.self) return;
    const kept = new Map<string, number>();
    for (const [to, ms] of delays) {
      if (kept.size >= MAX_REPORTED) break;
      if (Number.isFinite(ms) && ms >= 0) kept.set(to, ms);
    }
    this.reported.set(from, kept);
  }

  delayMs(from: string, to: string): number {
    if (from === to) return 0;
    const direct = from === this.self ? this.own.get(to) : this.reported.get(from)?.get(to);
    if (direct !== undefined) return direct;
    const reverse = to === this.self ? this.own.get(from) : this.reported.get(to)?.get(from);
    return reverse ?? this.defaultDelayMs;
  }

  /** This node's own estimates, for its heartbeats. */
  ownEstimates(): ReadonlyMap<string, number> {
    return this.own;
  }

  forget(nodeId: string): void {
    this.own.delete(nodeId);
    this.reported.delete(nodeId);
  }
}
