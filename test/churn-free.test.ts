import { dictionary, Fifo, SeqWindow } from '../src/core/churn-free';
import { SeededRandom } from '../src/store/random';

describe('SeqWindow', () => {
  it('holds consecutive numbers and drops them from the low end, like a Map of them would (seeded)', () => {
    const random = new SeededRandom(42);
    const window = new SeqWindow<string>(1);
    const model = new Map<number, string>();
    let next = 1;
    let first = 1;
    for (let step = 0; step < 20_000; step++) {
      if (random.next() < 0.55) {
        window.add(next, `v${next}`);
        model.set(next, `v${next}`);
        next++;
      } else {
        const dropped = window.shift();
        expect(dropped).toBe(model.get(first));
        if (dropped !== undefined) model.delete(first++);
      }
      expect(window.size).toBe(model.size);
      expect(window.firstSeq).toBe(first);
      const probe = first - 2 + Math.floor(random.next() * (next - first + 4));
      expect(window.get(probe)).toBe(model.get(probe));
    }
  });

  it('runs long with more added than dropped, drains, and refuses a number out of order', () => {
    const window = new SeqWindow<number>(5);
    for (let seq = 5; seq < 100_005; seq++) {
      window.add(seq, seq);
      if (seq % 3 !== 0) window.shift();
    }
    expect(window.size).toBeGreaterThan(30_000);
    while (window.shift() !== undefined);
    expect(window.size).toBe(0);
    expect(window.firstSeq).toBe(100_005);
    expect(() => window.add(100_007, 1)).toThrow(RangeError);
    expect(window.get(1.5)).toBeUndefined();
    window.add(100_005, 7);
    expect(window.get(100_005)).toBe(7);
  });
});

describe('Fifo', () => {
  it('hands values out in order and peeks like an array of what it holds (seeded)', () => {
    const random = new SeededRandom(9);
    const fifo = new Fifo<number>();
    const model: number[] = [];
    let next = 0;
    for (let step = 0; step < 30_000; step++) {
      // Runs of pushes and of shifts, so the queue both empties and grows past the cut.
      const pushing = Math.floor(step / 2500) % 2 === 0 ? random.next() < 0.7 : random.next() < 0.3;
      if (pushing) {
        fifo.push(next);
        model.push(next++);
      } else {
        expect(fifo.shift()).toBe(model.shift());
      }
      expect(fifo.size).toBe(model.length);
      const index = Math.floor(random.next() * (model.length + 2));
      expect(fifo.peek(index)).toBe(model[index]);
    }
  });
});

describe('dictionary', () => {
  it('has no prototype keys and forgets deleted ones', () => {
    const d = dictionary<number>();
    expect(d['constructor']).toBeUndefined();
    expect(d['__proto__']).toBeUndefined();
    d['__proto__'] = 1;
    d['7'] = 2;
    d['a'] = 3;
    expect(Object.keys(d).sort()).toEqual(['7', '__proto__', 'a']);
    delete d['7'];
    expect(d['7']).toBeUndefined();
  });
});
