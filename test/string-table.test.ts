import { SeededRandom } from '../src/store/random';
import { StringTable } from '../src/store/string-table';

test('a string is held while referenced and forgotten with its last reference; its index is used again', () => {
  const table = new StringTable();
  const a = table.ref('a');
  expect(table.ref('a')).toBe(a);
  const b = table.ref('b');
  expect([table.at(a), table.at(b), table.size]).toEqual(['a', 'b', 2]);
  table.unref(a);
  expect(table.find('a')).toBe(a);
  table.unref(a);
  expect([table.find('a'), table.size]).toEqual([-1, 1]);
  expect(table.ref('c')).toBe(a); // a's index, free again
  expect(table.at(a)).toBe('c');
  expect(table.find('b')).toBe(b);
});

test('random references agree with a count per string, and the table holds exactly the strings referenced (seeded)', () => {
  const random = new SeededRandom(11);
  const table = new StringTable();
  const counts = new Map<string, number>();
  const held: { s: string; index: number }[] = [];
  for (let step = 0; step < 20_000; step++) {
    if (held.length > 0 && random.below(2) === 0) {
      const [{ s, index }] = held.splice(random.below(held.length), 1);
      expect(table.at(index)).toBe(s);
      table.unref(index);
      const left = counts.get(s)! - 1;
      if (left === 0) counts.delete(s);
      else counts.set(s, left);
    } else {
      const s = `name-${random.below(300)}`;
      held.push({ s, index: table.ref(s) });
      counts.set(s, (counts.get(s) ?? 0) + 1);
    }
    if (step % 1000 === 0) for (const { s, index } of held) expect(table.at(index)).toBe(s);
  }
  expect(table.size).toBe(counts.size);
  for (const { index } of held) table.unref(index);
  expect(table.size).toBe(0);
});
