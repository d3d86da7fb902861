/**
 * FragmentReassembly: whole deltas from fragments in any order, the per-sender byte
 * budget, expiry, and retirement of old incarnations (seeded order, virtual time).
 */
import { FragmentReassembly, REASSEMBLY_CHUNK_OVERHEAD, REASSEMBLY_ENTRY_OVERHEAD } from '../src/core/fragment-reassembly';
import { SeededRandom } from '../src/store/random';

function fragmentsOf(bytes: Buffer, deltaId: number, size: number): { deltaId: number; index: number; count: number; chunk: Buffer }[] {
  const count = Math.ceil(bytes.length / size);
  return Array.from({ length: count }, (_, index) => ({ deltaId, index, count, chunk: bytes.subarray(index * size, (index + 1) * size) }));
}

describe('FragmentReassembly', () => {
  it('returns the whole delta once every fragment came, in any seeded order, and then holds nothing', () => {
    const random = new SeededRandom(3);
    const r = new FragmentReassembly({ maxBytes: 1 << 20, timeoutMs: 1000 });
    for (let round = 0; round < 50; round++) {
      const bytes = Buffer.alloc(500 + random.below(5000), round);
      const fragments = fragmentsOf(bytes, round, 100 + random.below(400));
      for (let i = fragments.length - 1; i > 0; i--) {
        const j = random.below(i + 1);
        [fragments[i], fragments[j]] = [fragments[j]!, fragments[i]!];
      }
      const results = fragments.map((f) => r.add('a', 1n, f, round));
      expect(results.slice(0, -1).every((x) => x.kind === 'partial')).toBe(true);
      expect(results.at(-1)).toEqual({ kind: 'complete', bytes });
      expect(r.bytesHeld()).toBe(0);
    }
  });

  it('ignores repeated chunks and chunks whose count disagrees; rejects impossible counts', () => {
    const r = new FragmentReassembly({ maxBytes: 1 << 20, timeoutMs: 1000 });
    expect(r.add('a', 1n, { deltaId: 1, index: 0, count: 3, chunk: Buffer.from('x') }, 0).kind).toBe('partial');
    expect(r.add('a', 1n, { deltaId: 1, index: 0, count: 3, chunk: Buffer.from('x') }, 0).kind).toBe('ignored');
    expect(r.add('a', 1n, { deltaId: 1, index: 1, count: 4, chunk: Buffer.from('x') }, 0).kind).toBe('ignored');
    expect(r.add('a', 1n, { deltaId: 2, index: 0, count: 1, chunk: Buffer.from('x') }, 0).kind).toBe('malformed');
    expect(r.add('a', 1n, { deltaId: 2, index: 5, count: 5, chunk: Buffer.from('x') }, 0).kind).toBe('malformed');
    expect(r.add('a', 1n, { deltaId: 2, index: 0, count: (1 << 16) + 1, chunk: Buffer.from('x') }, 0).kind).toBe('malformed');
  });

  it('overflows past the byte budget per sender, dropping the delta it grew, and counts overheads', () => {
    const chunk = Buffer.alloc(100);
    const first = chunk.length + REASSEMBLY_CHUNK_OVERHEAD + REASSEMBLY_ENTRY_OVERHEAD;
    const r = new FragmentReassembly({ maxBytes: first + chunk.length + REASSEMBLY_CHUNK_OVERHEAD, timeoutMs: 1000 });
    expect(r.add('a', 1n, { deltaId: 1, index: 0, count: 9, chunk }, 0).kind).toBe('partial');
    expect(r.bytesHeld()).toBe(first);
    expect(r.add('a', 1n, { deltaId: 1, index: 1, count: 9, chunk }, 0).kind).toBe('partial');
    expect(r.add('a', 1n, { deltaId: 1, index: 2, count: 9, chunk }, 0).kind).toBe('overflow');
    expect(r.bytesHeld()).toBe(0);
    // Another sender has its own budget.
    expect(r.add('b', 1n, { deltaId: 1, index: 0, count: 9, chunk }, 0).kind).toBe('partial');
    // Many tiny fragments claiming huge counts stop at the budget.
    const tiny = new FragmentReassembly({ maxBytes: 10_000, timeoutMs: 1000 });
    let overflowed = 0;
    for (let id = 0; id < 1000; id++) if (tiny.add('a', 1n, { deltaId: id, index: 0, count: 65_536, chunk: Buffer.alloc(1) }, 0).kind === 'overflow') overflowed++;
    expect(tiny.bytesHeld()).toBeLessThanOrEqual(10_000);
    expect(overflowed).toBeGreaterThan(950);
  });

  it('expires entries older than the timeout, naming each sender that lost one once', () => {
    const r = new FragmentReassembly({ maxBytes: 1 << 20, timeoutMs: 1000 });
    r.add('a', 1n, { deltaId: 1, index: 0, count: 2, chunk: Buffer.alloc(10) }, 0);
    r.add('a', 1n, { deltaId: 2, index: 0, count: 2, chunk: Buffer.alloc(10) }, 0);
    r.add('b', 7n, { deltaId: 1, index: 0, count: 2, chunk: Buffer.alloc(10) }, 500);
    expect(r.expire(1000)).toEqual([]);
    expect(r.expire(1001)).toEqual([{ nodeId: 'a', incarnation: 1n }]);
    expect(r.expire(1501)).toEqual([{ nodeId: 'b', incarnation: 7n }]);
    expect(r.bytesHeld()).toBe(0);
  });

  it('retires a node\'s other incarnations', () => {
    const r = new FragmentReassembly({ maxBytes: 1 << 20, timeoutMs: 1000 });
    r.add('a', 1n, { deltaId: 1, index: 0, count: 2, chunk: Buffer.alloc(10) }, 0);
    r.add('a', 2n, { deltaId: 1, index: 0, count: 2, chunk: Buffer.alloc(10) }, 0);
    r.add('ab', 1n, { deltaId: 1, index: 0, count: 2, chunk: Buffer.alloc(10) }, 0);
    const one = r.bytesHeld() / 3;
    r.retire('a', 2n);
    expect(r.bytesHeld()).toBe(2 * one);
    r.retire('a', undefined);
    expect(r.bytesHeld()).toBe(one);
  });
});
