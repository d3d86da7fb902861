import { PartitionLists } from '../src/store/partition-lists';
import { SessionRecord } from '../src/store/session-record';
import { SeededRandom } from '../src/store/random';

test('records are listed per partition in insertion order; removal keeps the rest linked', () => {
  const lists = new PartitionLists(3);
  const r = (id: string) => new SessionRecord(id, 'n1');
  const [a, b, c, d] = [r('a'), r('b'), r('c'), r('d')];
  lists.add(a, 0);
  lists.add(b, 0);
  lists.add(c, 2);
  lists.add(d, 0);
  expect(lists.records(0).map((x) => x.id)).toEqual(['a', 'b', 'd']);
  expect([lists.size(0), lists.size(1), lists.size(2)]).toEqual([3, 0, 1]);
  lists.remove(b, 0); // middle
  expect(lists.records(0).map((x) => x.id)).toEqual(['a', 'd']);
  lists.remove(a, 0); // head
  lists.remove(d, 0); // tail, now empty
  expect(lists.records(0)).toEqual([]);
  expect(lists.size(0)).toBe(0);
  lists.add(b, 0);
  expect(lists.records(0).map((x) => x.id)).toEqual(['b']);
  expect(lists.records(2).map((x) => x.id)).toEqual(['c']);
});

test('random adds and removes agree with a map per partition (seeded)', () => {
  const random = new SeededRandom(7);
  const lists = new PartitionLists(4);
  const model: Map<string, SessionRecord>[] = [new Map(), new Map(), new Map(), new Map()];
  const live = new Map<string, { record: SessionRecord; partition: number }>();
  for (let step = 0; step < 5000; step++) {
    const id = `s${Math.floor(random.next() * 200)}`;
    const existing = live.get(id);
    if (existing === undefined) {
      const record = new SessionRecord(id, 'n1');
      const partition = Math.floor(random.next() * 4);
      lists.add(record, partition);
      model[partition]!.set(id, record);
      live.set(id, { record, partition });
    } else {
      lists.remove(existing.record, existing.partition);
      model[existing.partition]!.delete(id);
      live.delete(id);
    }
  }
  for (let p = 0; p < 4; p++) {
    expect(lists.records(p).map((x) => x.id)).toEqual([...model[p]!.keys()]);
    expect([...lists.walk(p)].map((x) => x.id)).toEqual([...model[p]!.keys()]);
    expect(lists.size(p)).toBe(model[p]!.size);
  }
});

test('a walk goes on past the record it just yielded when that record is removed', () => {
  const lists = new PartitionLists(1);
  const records = ['a', 'b', 'c'].map((id) => new SessionRecord(id, 'n1'));
  for (const r of records) lists.add(r, 0);
  const seen: string[] = [];
  for (const r of lists.walk(0)) {
    seen.push(r.id);
    lists.remove(r, 0);
  }
  expect(seen).toEqual(['a', 'b', 'c']);
  expect(lists.size(0)).toBe(0);
});
