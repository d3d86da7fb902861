/**
 * Anti-replay sliding window over one sender's packet numbers, as in IPsec and DTLS
 * (RFC 4303 §3.4.3, RFC 6347 §4.1.2.6).
 *
 * Rules and invariants:
 * - Valid packet numbers are the integers 1 … Number.MAX_SAFE_INTEGER (senders start at 1
 *   and never reach 2^53). 0 and anything outside that range are never accepted; check
 *   reports them 'too_old' (they lie outside every window).
 * - The window is the `sizeBits` packet numbers ending at `highest`, the largest number
 *   accepted so far: [highest - sizeBits + 1, highest]. A number above `highest` is new; one
 *   inside the window is new unless its bit is set; one below the window is 'too_old',
 *   because whether it was seen is no longer known.
 * - `check` never changes state: call it before authenticating, and `accept` only after the
 *   datagram proved authentic, so forgeries cannot move the window.
 * - The bitmap is a ring of `sizeBits` bits (a Uint32Array) indexed by n mod sizeBits. When
 *   `highest` advances, the bits of the numbers it passes over are cleared — whole words at
 *   a time — so accept costs O(sizeBits / 32) at worst and O(1) for in-order traffic.
 */

export type ReplayVerdict = 'ok' | 'replayed' | 'too_old';

export const DEFAULT_REPLAY_WINDOW_BITS = 4096;

export class ReplayWindow {
  private readonly bits: Uint32Array;
  private top = 0;

  /** @param sizeBits packet numbers the window remembers; a positive multiple of 32. */
  constructor(readonly sizeBits: number = DEFAULT_REPLAY_WINDOW_BITS) {
    if (!Number.isInteger(sizeBits) || sizeBits < 32 || sizeBits % 32 !== 0 || sizeBits > 1 << 24) {
      throw new RangeError(`replay window size must be a multiple of 32 between 32 and 2^24 bits, got ${sizeBits}`);
    }
    this.bits = new Uint32Array(sizeBits >>> 5);
  }

  /** The largest packet number accepted so far (0 before the first). */
  get highest(): number {
    return this.top;
  }

  /** Whether packet number n would be accepted now. Does not change the window. */
  check(n: number): ReplayVerdict {
    if (!isPacketNumber(n)) return 'too_old';
    if (n > this.top) return 'ok';
    if (this.top - n >= this.sizeBits) return 'too_old';
    const pos = n % this.sizeBits;
    return (this.bits[pos >>> 5]! & (1 << (pos & 31))) !== 0 ? 'replayed' : 'ok';
  }

  /**
   * Marks packet number n as seen. Call only after check(n) said 'ok' and the datagram
   * authenticated; numbers check would refuse are ignored, so a stray call cannot corrupt
   * the window.
   */
  accept(n: number): void {
    if (!isPacketNumber(n)) return;
    if (n > this.top) {
      const advance = n - this.top;
      if (advance >= this.sizeBits) this.bits.fill(0);
      else this.clear((this.top + 1) % this.sizeBits, advance);
      this.top = n;
    } else if (this.top - n >= this.sizeBits) {
      return;
    }
    const pos = n % this.sizeBits;
    this.bits[pos >>> 5] |= 1 << (pos & 31);
  }

  /** Clears `count` (< sizeBits) ring positions starting at `pos`, wrapping at the end. */
  private clear(pos: number, count: number): void {
    const bits = this.bits;
    while (count > 0) {
      if ((pos & 31) === 0 && count >= 32) {
        bits[pos >>> 5] = 0;
        pos += 32;
        count -= 32;
      } else {
        bits[pos >>> 5] &= ~(1 << (pos & 31));
        pos += 1;
        count -= 1;
      }
      // sizeBits is a multiple of 32, so a whole-word step lands exactly on the end.
      if (pos === this.sizeBits) pos = 0;
    }
  }
}

/** True for the packet numbers a sender can use: integers 1 … 2^53 - 1. */
export function isPacketNumber(n: number): boolean {
  return Number.isSafeInteger(n) && n >= 1;
}
