import { ExpiryWheel } from '../src/store/expiry-wheel';
import { SeededRandom } from '../src/store/random';
import { RowBlock } from '../src/store/row-block';
import { S_LRU_NEXT, S_WHEEL_KEY, S_WHEEL_NEXT, S_WHEEL_PREV, SESSION_ROW_BYTES } from '../src/store/session-record';

// The wheel schedules rows of a session block; these tests name their rows.
const block = new RowBlock(SESSION_ROW_BYTES, S_LRU_NEXT);
const byRow = new Map<number, Item>();

class Item {
  readonly row = block.alloc();
  constructor(readonly name: string) {
    block.f64[this.row * block.doubles + S_WHEEL_KEY] = -1;
    byRow.set(this.row, this);
  }
  /** The bucket key the row holds, or -1. */
  get wheelKey(): number {
    return block.f64[this.row * block.doubles + S_WHEEL_KEY]!;
  }
  get wheelPrev(): number {
    return block.i32[this.row * block.ints + S_WHEEL_PREV]!;
  }
  get wheelNext(): number {
    return block.i32[this.row * block.ints + S_WHEEL_NEXT]!;
  }
}

function item(name: string): Item {
  return new Item(name);
}

/** The wheel, scheduling Items by their rows. */
class Wheel {
  private readonly wheel: ExpiryWheel;
  constructor(resolutionMs: number) {
    this.wheel = new ExpiryWheel(resolutionMs, block);
  }
  schedule(entry: Item, atMs: number): void {
    this.wheel.schedule(entry.row, atMs);
  }
  scheduleNoLater(entry: Item, atMs: number): void {
    this.wheel.scheduleNoLater(entry.row, atMs);
  }
  cancel(entry: Item): void {
    this.wheel.cancel(entry.row);
  }
  due(nowMs: number, visit: (entry: Item) => void): void {
    this.wheel.due(nowMs, (row) => visit(byRow.get(row)!));
  }
  nextDeadline(): number | undefined {
    return this.wheel.nextDeadline();
  }
}

function dueNames(wheel: Wheel, now: number): string[] {
  const names: string[] = [];
  wheel.due(now, (entry) => names.push(entry.name));
  return names.sort();
}

describe('ExpiryWheel', () => {
  test('rejects a resolution that is not positive', () => {
    expect(() => new ExpiryWheel(0, block)).toThrow(RangeError);
    expect(() => new ExpiryWheel(-5, block)).toThrow(RangeError);
    expect(() => new ExpiryWheel(Number.NaN, block)).toThrow(RangeError);
  });

  test('an empty wheel has no deadline and hands over nothing', () => {
    const wheel = new Wheel(1000);
    expect(wheel.nextDeadline()).toBeUndefined();
    expect(dueNames(wheel, 1e15)).toEqual([]);
  });

  test('an entry falls due at the end of its bucket, never before its time', () => {
    const wheel = new Wheel(1000);
    const a = item('a');
    wheel.schedule(a, 1500);
    expect(a.wheelKey).toBe(2);
    expect(wheel.nextDeadline()).toBe(2000);
    expect(dueNames(wheel, 1500)).toEqual([]);
    expect(dueNames(wheel, 1999)).toEqual([]);
    expect(dueNames(wheel, 2000)).toEqual(['a']);
    expect(a.wheelKey).toBe(-1);
    expect(wheel.nextDeadline()).toBeUndefined();
    expect(dueNames(wheel, 10_000)).toEqual([]);
  });

  test('a time on a bucket boundary falls due at that time', () => {
    const wheel = new Wheel(1000);
    const a = item('a');
    wheel.schedule(a, 3000);
    expect(wheel.nextDeadline()).toBe(3000);
    expect(dueNames(wheel, 2999)).toEqual([]);
    expect(dueNames(wheel, 3000)).toEqual(['a']);
  });

  test('scheduling again into the same bucket keeps one copy', () => {
    const wheel = new Wheel(100);
    const a = item('a');
    wheel.schedule(a, 250);
    wheel.schedule(a, 210);
    wheel.schedule(a, 300);
    expect(dueNames(wheel, 1000)).toEqual(['a']);
  });

  test('schedule moves an entry, earlier or later', () => {
    const wheel = new Wheel(10);
    const a = item('a');
    const b = item('b');
    wheel.schedule(a, 100);
    wheel.schedule(b, 100);
    wheel.schedule(a, 500);
    expect(wheel.nextDeadline()).toBe(100);
    expect(dueNames(wheel, 100)).toEqual(['b']);
    expect(wheel.nextDeadline()).toBe(500);
    wheel.schedule(a, 50);
    expect(wheel.nextDeadline()).toBe(50);
    expect(dueNames(wheel, 60)).toEqual(['a']);
    expect(dueNames(wheel, 10_000)).toEqual([]);
  });

  test('cancel unschedules; cancelling twice or an unscheduled entry is harmless', () => {
    const wheel = new Wheel(10);
    const a = item('a');
    const b = item('b');
    wheel.cancel(a);
    wheel.schedule(a, 100);
    wheel.schedule(b, 100);
    wheel.cancel(a);
    wheel.cancel(a);
    expect(a.wheelKey).toBe(-1);
    expect([b.wheelKey, b.wheelPrev, b.wheelNext]).toEqual([10, -1, -1]);
    expect(dueNames(wheel, 100)).toEqual(['b']);
  });

  test('nextDeadline skips buckets that have emptied', () => {
    const wheel = new Wheel(10);
    const a = item('a');
    const b = item('b');
    const c = item('c');
    wheel.schedule(a, 100);
    wheel.schedule(b, 200);
    wheel.schedule(c, 300);
    wheel.cancel(a);
    expect(wheel.nextDeadline()).toBe(200);
    wheel.schedule(b, 400);
    expect(wheel.nextDeadline()).toBe(300);
    wheel.cancel(c);
    wheel.cancel(b);
    expect(wheel.nextDeadline()).toBeUndefined();
    // A bucket re-created after it emptied is found again.
    wheel.schedule(a, 100);
    expect(wheel.nextDeadline()).toBe(100);
    expect(dueNames(wheel, 100)).toEqual(['a']);
  });

  test('due hands over exactly the entries of the due buckets, each once', () => {
    const wheel = new Wheel(1000);
    const times = new Map<string, number>();
    const random = new SeededRandom(8);
    for (let i = 0; i < 300; i++) {
      const e = item(`e${i}`);
      const at = random.below(60_000);
      times.set(e.name, at);
      wheel.schedule(e, at);
    }
    const handed = new Set<string>();
    const problems: string[] = [];
    for (let now = 0; now <= 61_000; now += 777) {
      for (const name of dueNames(wheel, now)) {
        const at = times.get(name)!;
        // Due when the bucket's end has passed, never earlier than the entry's own time.
        if (Math.ceil(at / 1000) * 1000 > now || at > now) problems.push(`${name} (at ${at}) handed over at ${now}`);
        if (handed.has(name)) problems.push(`${name} handed over twice`);
        handed.add(name);
      }
      // Nothing whose bucket is due is left behind.
      for (const [name, at] of times) {
        if (Math.ceil(at / 1000) * 1000 <= now && !handed.has(name)) problems.push(`${name} (at ${at}) missing at ${now}`);
      }
    }
    expect(problems).toEqual([]);
    expect([...handed].sort()).toEqual([...times.keys()].sort());
  });

  test('an entry re-scheduled by the visitor into a due bucket is handed over in the same call', () => {
    const wheel = new Wheel(1000);
    const a = item('a');
    const b = item('b');
    wheel.schedule(a, 1000);
    wheel.schedule(b, 1000);
    const seen: string[] = [];
    let rescheduled = false;
    wheel.due(5000, (entry) => {
      seen.push(entry.name);
      // Like the store turning an expired session into a tombstone whose time has passed.
      if (entry === a && !rescheduled) {
        rescheduled = true;
        wheel.schedule(a, 3000);
      }
    });
    // Order within a bucket is not kept; a, moved into a due bucket, comes again after both.
    expect([...seen.slice(0, 2)].sort()).toEqual(['a', 'b']);
    expect(seen.slice(2)).toEqual(['a']);
    expect(a.wheelKey).toBe(-1);
    expect(wheel.nextDeadline()).toBeUndefined();
  });

  test('an entry re-scheduled by the visitor into a later bucket waits for it', () => {
    const wheel = new Wheel(1000);
    const a = item('a');
    wheel.schedule(a, 1000);
    const seen: string[] = [];
    wheel.due(2000, (entry) => {
      seen.push(entry.name);
      wheel.schedule(entry, 9000);
    });
    expect(seen).toEqual(['a']);
    expect(wheel.nextDeadline()).toBe(9000);
    expect(dueNames(wheel, 8999)).toEqual([]);
    expect(dueNames(wheel, 9000)).toEqual(['a']);
  });

  test('scheduleNoLater moves an entry only to an earlier bucket', () => {
    const wheel = new Wheel(1000);
    const a = item('a');
    wheel.scheduleNoLater(a, 5000); // unscheduled: schedules
    expect(a.wheelKey).toBe(5);
    wheel.scheduleNoLater(a, 9000); // later: stays
    expect(a.wheelKey).toBe(5);
    wheel.scheduleNoLater(a, 4500); // same bucket: stays
    expect(a.wheelKey).toBe(5);
    wheel.scheduleNoLater(a, 2500); // earlier: moves
    expect(a.wheelKey).toBe(3);
    expect(wheel.nextDeadline()).toBe(3000);
    expect(dueNames(wheel, 2999)).toEqual([]);
    expect(dueNames(wheel, 3000)).toEqual(['a']);
    expect(dueNames(wheel, 10_000)).toEqual([]);
  });

  test('swap-remove keeps keys and indices right under random schedule/cancel/due (naive model)', () => {
    for (const seed of [1, 2, 3]) {
      const random = new SeededRandom(seed);
      const resolution = 1 + random.below(50);
      const wheel = new Wheel(resolution);
      const entries: Item[] = [];
      for (let i = 0; i < 60; i++) entries.push(item(`e${i}`));
      // The model: scheduled entries and their bucket keys.
      const model = new Map<Item, number>();
      let now = 0;

      for (let step = 0; step < 2500; step++) {
        const e = entries[random.below(entries.length)]!;
        const roll = random.below(100);
        if (roll < 40) {
          const at = now + random.below(40 * resolution);
          wheel.schedule(e, at);
          model.set(e, Math.ceil(at / resolution));
        } else if (roll < 60) {
          const at = now + random.below(40 * resolution);
          wheel.scheduleNoLater(e, at);
          const key = Math.ceil(at / resolution);
          const current = model.get(e);
          if (current === undefined || key < current) model.set(e, key);
        } else if (roll < 85) {
          wheel.cancel(e);
          model.delete(e);
        } else {
          now += random.below(5 * resolution);
          const handed = new Set<Item>();
          wheel.due(now, (entry) => {
            if (handed.has(entry)) throw new Error(`step ${step}: ${entry.name} handed over twice`);
            handed.add(entry);
          });
          const expected = new Set([...model].filter(([, key]) => key * resolution <= now).map(([entry]) => entry));
          const got = [...handed].map((x) => x.name).sort().join();
          const want = [...expected].map((x) => x.name).sort().join();
          if (got !== want) throw new Error(`step ${step}: due(${now}) handed over [${got}], expected [${want}]`);
          for (const entry of expected) model.delete(entry);
        }

        // Keys agree with the model, and each bucket's list is linked both ways among rows of that key.
        for (const entry of entries) {
          const key = model.get(entry);
          if (key === undefined) {
            if (entry.wheelKey !== -1) throw new Error(`step ${step}: ${entry.name} should be unscheduled`);
            continue;
          }
          if (entry.wheelKey !== key) throw new Error(`step ${step}: ${entry.name} has key ${entry.wheelKey}, not ${key}`);
          for (const [neighbour, back] of [
            [entry.wheelPrev, (x: Item) => x.wheelNext],
            [entry.wheelNext, (x: Item) => x.wheelPrev],
          ] as const) {
            if (neighbour === -1) continue;
            const other = byRow.get(neighbour)!;
            if (back(other) !== entry.row || other.wheelKey !== key) throw new Error(`step ${step}: ${entry.name}'s bucket list is broken at ${other.name}`);
          }
        }
        const keys = [...model.values()];
        const expectedDeadline = keys.length === 0 ? undefined : Math.min(...keys) * resolution;
        if (wheel.nextDeadline() !== expectedDeadline) {
          throw new Error(`step ${step}: nextDeadline ${wheel.nextDeadline()}, expected ${expectedDeadline}`);
        }
      }
      // Drain: everything left falls due, once.
      const rest = dueNames(wheel, Number.MAX_SAFE_INTEGER);
      expect(rest).toEqual([...model.keys()].map((x) => x.name).sort());
    }
  });

  // A bucket emptied and re-created must not push its key again: schedule/cancel churn on
  // a far deadline (sessions created with a long TTL and deleted soon after) would grow the
  // heap until that deadline.
  test('schedule/cancel churn does not grow the wheel without bound', () => {
    const wheel = new Wheel(1000);
    const keeper = item('keeper');
    wheel.schedule(keeper, 1000);
    const churn = item('churn');
    for (let i = 0; i < 100_000; i++) {
      wheel.schedule(churn, 30 * 24 * 3600 * 1000);
      wheel.cancel(churn);
    }
    expect(wheel.nextDeadline()).toBe(1000);
    const heap = (wheel as unknown as { wheel: { heap: number[] } }).wheel.heap;
    expect(heap.length).toBeLessThan(100);
  });
});
