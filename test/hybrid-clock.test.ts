import { HybridClock, LOGICAL_SPAN, newerThan, versionTimeMs } from '../src/store/hybrid-clock';
import { SeededRandom } from '../src/store/random';

const T0 = 1_700_000_000_000;

describe('HybridClock', () => {
  test('a fresh clock starts at 0 and its first tick is the wall-clock millisecond', () => {
    const clock = new HybridClock();
    expect(clock.current()).toBe(0);
    const v = clock.tick(T0);
    expect(v).toBe(T0 * LOGICAL_SPAN);
    expect(versionTimeMs(v)).toBe(T0);
    expect(clock.current()).toBe(v);
  });

  test('fractional milliseconds are floored', () => {
    const clock = new HybridClock();
    expect(clock.tick(T0 + 0.9)).toBe(T0 * LOGICAL_SPAN);
    expect(versionTimeMs(clock.tick(T0 + 1.2))).toBe(T0 + 1);
  });

  test('tick is strictly increasing when the wall clock stands still', () => {
    const clock = new HybridClock();
    const first = clock.tick(T0);
    let last = first;
    for (let i = 1; i < 3000; i++) {
      const v = clock.tick(T0);
      if (v !== last + 1) throw new Error(`tick ${i}: ${v} after ${last}`);
      last = v;
    }
    // Beyond 1024 events the clock runs ahead of the wall clock, as documented.
    expect(versionTimeMs(last)).toBe(T0 + Math.floor(2999 / LOGICAL_SPAN));
    // Once the wall clock passes it, versions follow the wall clock again.
    expect(clock.tick(T0 + 10)).toBe((T0 + 10) * LOGICAL_SPAN);
  });

  test('tick is strictly increasing when the wall clock goes backwards', () => {
    const clock = new HybridClock();
    const a = clock.tick(T0);
    const b = clock.tick(T0 - 5000);
    const c = clock.tick(T0 - 10_000);
    expect(b).toBeGreaterThan(a);
    expect(c).toBeGreaterThan(b);
    expect(versionTimeMs(c)).toBe(T0);
  });

  test('tick is strictly increasing under a random walk of the wall clock', () => {
    const random = new SeededRandom(31);
    const clock = new HybridClock();
    let wall = T0;
    let last = 0;
    const problems: string[] = [];
    for (let i = 0; i < 5000; i++) {
      wall += random.below(7) - 3; // stands still, goes back or forward by a few ms
      const v = clock.tick(wall);
      if (v <= last) problems.push(`tick ${i}: ${v} not above ${last}`);
      if (!Number.isSafeInteger(v)) problems.push(`tick ${i}: ${v} is not a safe integer`);
      // A version is never behind the wall clock.
      if (versionTimeMs(v) < Math.floor(wall)) problems.push(`tick ${i}: ${versionTimeMs(v)} behind wall ${wall}`);
      if (clock.current() !== v) problems.push(`tick ${i}: current() ${clock.current()} is not ${v}`);
      last = v;
    }
    expect(problems).toEqual([]);
  });

  test('versionTimeMs recovers the millisecond of any logical counter value', () => {
    expect(versionTimeMs(0)).toBe(0);
    expect(versionTimeMs(T0 * LOGICAL_SPAN)).toBe(T0);
    expect(versionTimeMs(T0 * LOGICAL_SPAN + 1)).toBe(T0);
    expect(versionTimeMs(T0 * LOGICAL_SPAN + LOGICAL_SPAN - 1)).toBe(T0);
    expect(versionTimeMs((T0 + 1) * LOGICAL_SPAN)).toBe(T0 + 1);
  });

  test('observe adopts a higher remote version, so the next tick is above it', () => {
    const clock = new HybridClock();
    clock.tick(T0);
    const remote = (T0 + 5000) * LOGICAL_SPAN + 7;
    expect(clock.observe(remote, T0)).toBe(true);
    expect(clock.current()).toBe(remote);
    expect(clock.tick(T0)).toBe(remote + 1);
  });

  test('observe of a lower or equal version accepts it and changes nothing', () => {
    const clock = new HybridClock();
    const v = clock.tick(T0);
    expect(clock.observe(v - 100, T0)).toBe(true);
    expect(clock.observe(v, T0)).toBe(true);
    expect(clock.current()).toBe(v);
    expect(clock.tick(T0)).toBe(v + 1);
  });

  test('observe refuses a version too far ahead of the wall clock and keeps its own', () => {
    const drift = 60_000;
    const clock = new HybridClock(drift);
    const v = clock.tick(T0);
    // Exactly at the drift limit: adopted.
    expect(clock.observe((T0 + drift) * LOGICAL_SPAN, T0)).toBe(true);
    expect(clock.current()).toBe((T0 + drift) * LOGICAL_SPAN);

    const other = new HybridClock(drift);
    other.tick(T0);
    const farAhead = (T0 + drift + 1) * LOGICAL_SPAN;
    expect(other.observe(farAhead, T0)).toBe(false);
    expect(other.current()).toBe(v);
    expect(other.tick(T0 + 1)).toBe((T0 + 1) * LOGICAL_SPAN);
    // Once the wall clock has caught up, the same version is within bounds.
    expect(other.observe(farAhead, T0 + 1)).toBe(true);
    expect(other.current()).toBe(farAhead);
  });

  test('the default drift limit is one minute', () => {
    const clock = new HybridClock();
    expect(clock.observe((T0 + 60_000) * LOGICAL_SPAN, T0)).toBe(true);
    const other = new HybridClock();
    expect(other.observe((T0 + 60_001) * LOGICAL_SPAN, T0)).toBe(false);
    expect(other.current()).toBe(0);
  });
});

describe('newerThan', () => {
  test('the higher version wins regardless of writer', () => {
    expect(newerThan(10, 'a', 9, 'z')).toBe(true);
    expect(newerThan(9, 'z', 10, 'a')).toBe(false);
  });

  test('equal versions resolve by writer id', () => {
    expect(newerThan(10, 'node-b', 10, 'node-a')).toBe(true);
    expect(newerThan(10, 'node-a', 10, 'node-b')).toBe(false);
  });

  test('a write is not newer than itself', () => {
    expect(newerThan(10, 'node-a', 10, 'node-a')).toBe(false);
  });

  test('is a strict total order on (version, writer) pairs', () => {
    const random = new SeededRandom(4);
    const pairs: [number, string][] = [];
    for (let i = 0; i < 40; i++) pairs.push([random.below(5), `n${random.below(4)}`]);
    const problems: string[] = [];
    for (const [va, wa] of pairs) {
      for (const [vb, wb] of pairs) {
        const ab = newerThan(va, wa, vb, wb);
        const ba = newerThan(vb, wb, va, wa);
        const same = va === vb && wa === wb;
        // Exactly one of: a newer, b newer, identical.
        if (Number(ab) + Number(ba) + Number(same) !== 1) problems.push(`(${va},${wa}) vs (${vb},${wb})`);
        for (const [vc, wc] of pairs) {
          if (ab && newerThan(vb, wb, vc, wc) && !newerThan(va, wa, vc, wc)) problems.push('not transitive');
        }
      }
    }
    expect(problems).toEqual([]);
  });
});
