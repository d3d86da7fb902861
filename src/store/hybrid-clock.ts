/**
 * Hybrid logical clock (Kulkarni et al.) packed into one safe integer:
 * version = physicalMs · 1024 + logical. Versions order writes cluster-wide; ties between
 * nodes resolve by writer node id (see newerThan).
 *
 * The packing keeps versions JavaScript numbers (exact below 2⁵³, i.e. until the year
 * 2248) so the store never allocates BigInts; they become uint64 only on the wire. When
 * more than 1024 events share a millisecond the clock runs ahead of the wall clock by a
 * little, as HLCs do, and falls back in step once the wall clock passes it.
 */

export const LOGICAL_SPAN = 1024;

export class HybridClock {
  private last = 0;

  /**
   * @param maxForwardDriftMs a remote version further than this ahead of our wall clock
   *   is not adopted (a peer with a broken clock must not drag every node into the future).
   */
  constructor(private readonly maxForwardDriftMs = 60_000) {}

  /** A fresh version for a local event at wall-clock time nowMs, above all seen so far. */
  tick(nowMs: number): number {
    const physical = Math.floor(nowMs) * LOGICAL_SPAN;
    this.last = physical > this.last ? physical : this.last + 1;
    return this.last;
  }

  /** Merges a version seen from a peer; returns false if it was too far ahead to adopt. */
  observe(version: number, nowMs: number): boolean {
    if (version <= this.last) return true;
    if (version > (nowMs + this.maxForwardDriftMs) * LOGICAL_SPAN) return false;
    this.last = version;
    return true;
  }

  /** The highest version issued or observed. */
  current(): number {
    return this.last;
  }
}

/** The wall-clock millisecond a version was issued at. */
export function versionTimeMs(version: number): number {
  return Math.floor(version / LOGICAL_SPAN);
}

/** Last-writer-wins order: higher version wins; equal versions resolve by writer id. */
export function newerThan(version: number, writer: string, otherVersion: number, otherWriter: string): boolean {
  return version > otherVersion || (version === otherVersion && writer > otherWriter);
}
