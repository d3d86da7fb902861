import { RowBlock } from '../src/store/row-block';
import { RowLists } from '../src/store/row-lists';
import { SeededRandom } from '../src/store/random';

// Rows of 16 B: links in i32 fields 0 (prev) and 1 (next); field 2 chains free rows.
const PREV = 0;
const NEXT = 1;
function newRow(block: RowBlock): number {
  const row = block.alloc();
  block.i32[row * block.ints + PREV] = -1;
  block.i32[row * block.ints + NEXT] = -1;
  return row;
}

test('rows are listed per list in insertion order; removal keeps the rest linked', () => {
  const block = new RowBlock(16, 2, 2);
  const lists = new RowLists(block, PREV, NEXT, 3);
  const [a, b, c, d] = [newRow(block), newRow(block), newRow(block), newRow(block)];
  lists.append(0, a);
  lists.append(0, b);
  lists.append(2, c);
  lists.append(0, d);
  expect(lists.rows(0)).toEqual([a, b, d]);
  expect([lists.size(0), lists.size(1), lists.size(2)]).toEqual([3, 0, 1]);
  lists.remove(0, b); // middle
  expect(lists.rows(0)).toEqual([a, d]);
  expect(lists.contains(0, b)).toBe(false);
  lists.remove(0, a); // head
  lists.remove(0, d); // tail, now empty
  expect(lists.rows(0)).toEqual([]);
  expect(lists.size(0)).toBe(0);
  lists.append(0, b);
  expect(lists.rows(0)).toEqual([b]);
  expect(lists.contains(0, b)).toBe(true);
  expect(lists.rows(2)).toEqual([c]);
});

test('random adds and removes, with rows freed and reused and the block growing, agree with a map per list (seeded)', () => {
  const random = new SeededRandom(7);
  const block = new RowBlock(16, 2, 4);
  const lists = new RowLists(block, PREV, NEXT, 4);
  const model: Map<string, number>[] = [new Map(), new Map(), new Map(), new Map()];
  const live = new Map<string, { row: number; list: number }>();
  for (let step = 0; step < 5000; step++) {
    const id = `s${Math.floor(random.next() * 200)}`;
    const existing = live.get(id);
    if (existing === undefined) {
      const row = newRow(block);
      const list = Math.floor(random.next() * 4);
      lists.append(list, row);
      model[list]!.set(id, row);
      live.set(id, { row, list });
    } else {
      lists.remove(existing.list, existing.row);
      block.free(existing.row);
      model[existing.list]!.delete(id);
      live.delete(id);
    }
  }
  expect(block.capacity).toBeGreaterThan(4);
  expect(block.count).toBe(live.size);
  for (let p = 0; p < 4; p++) {
    expect(lists.rows(p)).toEqual([...model[p]!.values()]);
    expect([...lists.walk(p)]).toEqual([...model[p]!.values()]);
    expect(lists.size(p)).toBe(model[p]!.size);
  }
});

test('a walk goes on past the row it just yielded when that row is removed', () => {
  const block = new RowBlock(16, 2);
  const lists = new RowLists(block, PREV, NEXT, 1);
  const rows = [newRow(block), newRow(block), newRow(block)];
  for (const r of rows) lists.append(0, r);
  const seen: number[] = [];
  for (const r of lists.walk(0)) {
    seen.push(r);
    lists.remove(0, r);
  }
  expect(seen).toEqual(rows);
  expect(lists.size(0)).toBe(0);
});

test('a block keeps every field of every row through growth, and hands freed rows out before new ones', () => {
  const block = new RowBlock(24, 4, 1);
  const rows: number[] = [];
  for (let i = 0; i < 100; i++) {
    const row = block.alloc();
    block.f64[row * block.doubles] = i * 2 ** 40 + 0.5;
    block.i32[row * block.ints + 2] = -i - 1;
    block.u32[row * block.ints + 3] = 2 ** 32 - 1 - i;
    rows.push(row);
  }
  expect(block.capacity).toBe(128);
  expect(rows).toEqual(Array.from({ length: 100 }, (_, i) => i));
  for (const [i, row] of rows.entries()) {
    expect([block.f64[row * block.doubles], block.i32[row * block.ints + 2], block.u32[row * block.ints + 3]]).toEqual([i * 2 ** 40 + 0.5, -i - 1, 2 ** 32 - 1 - i]);
  }
  block.free(17);
  block.free(3);
  expect([block.alloc(), block.alloc(), block.alloc()]).toEqual([3, 17, 100]);
  expect(block.count).toBe(101);
});
