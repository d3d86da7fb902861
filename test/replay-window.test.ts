/**
 * ReplayWindow against a reference model (a Set of accepted numbers and the highest one),
 * on hand-picked edges and on long seeded random walks that jump, wrap and fall behind.
 */
import { DEFAULT_REPLAY_WINDOW_BITS, ReplayWindow, type ReplayVerdict } from '../src/wire/replay-window';
import { SeededRandom } from '../src/store/random';

/** The window's meaning, with no bitmap: what a correct implementation must answer. */
class ReferenceWindow {
  private readonly seen = new Set<number>();
  private highest = 0;

  constructor(private readonly sizeBits: number) {}

  check(n: number): ReplayVerdict {
    if (!Number.isSafeInteger(n) || n < 1) return 'too_old';
    if (n > this.highest) return 'ok';
    if (this.highest - n >= this.sizeBits) return 'too_old';
    return this.seen.has(n) ? 'replayed' : 'ok';
  }

  accept(n: number): void {
    if (this.check(n) !== 'ok') return;
    this.seen.add(n);
    if (n > this.highest) this.highest = n;
  }
}

describe('ReplayWindow', () => {
  it('defaults to 4096 bits and starts empty', () => {
    const window = new ReplayWindow();
    expect(window.sizeBits).toBe(DEFAULT_REPLAY_WINDOW_BITS);
    expect(window.sizeBits).toBe(4096);
    expect(window.highest).toBe(0);
    expect(window.check(1)).toBe('ok');
    expect(window.check(1_000_000)).toBe('ok');
  });

  it('never accepts packet number 0 or numbers outside 1 … 2^53 - 1', () => {
    const window = new ReplayWindow(64);
    for (const n of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53, 2 ** 60]) {
      expect(window.check(n)).toBe('too_old');
      window.accept(n);
      expect(window.highest).toBe(0);
    }
    expect(window.check(Number.MAX_SAFE_INTEGER)).toBe('ok');
    window.accept(Number.MAX_SAFE_INTEGER);
    expect(window.check(Number.MAX_SAFE_INTEGER)).toBe('replayed');
    expect(window.check(Number.MAX_SAFE_INTEGER - 1)).toBe('ok');
  });

  it('check does not change state; accept marks', () => {
    const window = new ReplayWindow(64);
    expect(window.check(5)).toBe('ok');
    expect(window.check(5)).toBe('ok');
    expect(window.highest).toBe(0);
    window.accept(5);
    expect(window.check(5)).toBe('replayed');
    expect(window.highest).toBe(5);
  });

  it('accepts reordering within the window, rejects replays and what fell behind it', () => {
    const window = new ReplayWindow(64);
    for (const n of [3, 1, 2, 10, 7]) {
      expect(window.check(n)).toBe('ok');
      window.accept(n);
    }
    for (const n of [1, 2, 3, 7, 10]) expect(window.check(n)).toBe('replayed');
    for (const n of [4, 5, 6, 8, 9, 11]) expect(window.check(n)).toBe('ok');

    window.accept(100);
    // The window is now [37, 100].
    expect(window.check(37)).toBe('ok');
    expect(window.check(36)).toBe('too_old');
    expect(window.check(10)).toBe('too_old');
    window.accept(37);
    expect(window.check(37)).toBe('replayed');
    window.accept(36); // ignored: outside the window
    expect(window.check(36)).toBe('too_old');
  });

  it('forgets the bits a large jump passes over, including across the ring end', () => {
    const window = new ReplayWindow(32);
    for (let n = 1; n <= 32; n++) window.accept(n);
    for (let n = 1; n <= 32; n++) expect(window.check(n)).toBe('replayed');
    window.accept(40); // window [9, 40]: 33…39 are new, 9…32 still seen
    for (let n = 9; n <= 32; n++) expect(window.check(n)).toBe('replayed');
    for (let n = 33; n <= 39; n++) expect(window.check(n)).toBe('ok');
    expect(window.check(8)).toBe('too_old');
    window.accept(1000); // a jump longer than the window clears everything
    for (let n = 969; n < 1000; n++) expect(window.check(n)).toBe('ok');
    expect(window.check(968)).toBe('too_old');
    expect(window.check(1000)).toBe('replayed');
  });

  it('refuses sizes that are not positive multiples of 32', () => {
    for (const size of [0, 16, 33, 100, -32, 1.5]) expect(() => new ReplayWindow(size)).toThrow(RangeError);
    expect(() => new ReplayWindow(32)).not.toThrow();
    expect(() => new ReplayWindow(96)).not.toThrow();
  });

  it.each([32, 96, 256, 4096])('agrees with the reference model on random walks (%i bits)', (sizeBits) => {
    const random = new SeededRandom(sizeBits * 7919);
    // Disagreements are collected (walk, step, n, got, wanted) and asserted once: an
    // expect per step would make this test slow without making it stricter.
    const disagreements: string[] = [];
    const compare = (window: ReplayWindow, reference: ReferenceWindow, where: string, n: number): ReplayVerdict => {
      const got = window.check(n);
      const wanted = reference.check(n);
      if (got !== wanted && disagreements.length < 10) disagreements.push(`${where} n=${n}: ${got}, wanted ${wanted}`);
      return got;
    };
    for (let walk = 0; walk < 20; walk++) {
      const window = new ReplayWindow(sizeBits);
      const reference = new ReferenceWindow(sizeBits);
      let highest = 0;
      for (let step = 0; step < 3000; step++) {
        let n: number;
        const roll = random.below(100);
        if (roll < 50) n = highest + 1 + random.below(3); // mostly in order
        else if (roll < 85) n = highest - random.below(sizeBits + 8); // reordered, replayed or too old
        else if (roll < 95) n = highest + random.below(sizeBits * 2); // jumps, some past the window
        else n = random.below(highest + 2); // anywhere, 0 included
        const verdict = compare(window, reference, `walk ${walk} step ${step}`, n);
        if (verdict === 'ok' || random.below(10) === 0) {
          // Stray accepts of refused numbers must change nothing.
          window.accept(n);
          reference.accept(n);
        }
        highest = Math.max(highest, window.highest);
      }
      // The whole window, and a little below and above it, agrees at the end.
      for (let n = Math.max(0, highest - sizeBits - 4); n <= highest + 4; n++) {
        compare(window, reference, `walk ${walk} end`, n);
      }
    }
    expect(disagreements).toEqual([]);
  });
});
