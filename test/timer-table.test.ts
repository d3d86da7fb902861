/**
 * TimerTable: named deadlines and the earliest of them, checked against a plain scan of
 * the same names under seeded random sets and clears.
 */
import { TimerTable } from '../src/core/timer-table';
import { SeededRandom } from '../src/store/random';

describe('TimerTable', () => {
  it('has no deadline when empty, and Infinity removes a name', () => {
    const t = new TimerTable();
    expect(t.next()).toBe(Infinity);
    t.set('a', 10);
    expect(t.next()).toBe(10);
    t.set('a', Infinity);
    expect(t.next()).toBe(Infinity);
    expect(t.size).toBe(0);
  });

  it('moves a name earlier and later', () => {
    const t = new TimerTable();
    t.set('a', 10);
    t.set('b', 20);
    t.set('b', 5);
    expect(t.next()).toBe(5);
    t.set('b', 30);
    expect(t.next()).toBe(10);
    expect(t.get('b')).toBe(30);
    t.clear('a');
    expect(t.next()).toBe(30);
    expect(t.get('a')).toBe(Infinity);
  });

  it('lists the names due at a time, earliest first, without removing them', () => {
    const t = new TimerTable();
    t.set('late', 50);
    t.set('first', 1);
    t.set('second', 7);
    t.set('third', 7.5);
    expect(t.due(8)).toEqual(['first', 'second', 'third']);
    expect(t.size).toBe(4);
  });

  it('agrees with a scan over 5,000 seeded random operations', () => {
    const random = new SeededRandom(12);
    const t = new TimerTable();
    const plain = new Map<string, number>();
    for (let i = 0; i < 5_000; i++) {
      const name = `n${random.below(200)}`;
      const op = random.below(10);
      if (op < 2) {
        t.clear(name);
        plain.delete(name);
      } else if (op === 2) {
        t.set(name, Infinity);
        plain.delete(name);
      } else {
        const at = random.below(1_000_000);
        t.set(name, at);
        plain.set(name, at);
      }
      const expected = plain.size === 0 ? Infinity : Math.min(...plain.values());
      if (t.next() !== expected) throw new Error(`op ${i}: next ${t.next()} != ${expected}`);
      expect(t.size).toBe(plain.size);
    }
    const now = 500_000;
    const due = [...plain].filter(([, at]) => at <= now).sort((a, b) => a[1] - b[1]).map(([name]) => name);
    expect(t.due(now).map((name) => plain.get(name))).toEqual(due.map((name) => plain.get(name)));
  });
});
