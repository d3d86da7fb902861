/**
 * View adoption rules (src/core/cluster-views.ts): a member adopts a view only from the
 * coordinator it follows, only with a higher id, only once every page arrived, and refuses
 * malformed pages without throwing.
 */
import { Datagram, type ViewPage } from '../src/gen/baton/v1/wire';
import { MAX_VIEW_MEMBERS, orderMembers, ViewBook, viewPages, type ClusterView } from '../src/core/cluster-views';

function view(id: number, coordinator: string, ids: string[]): ClusterView {
  return { id, coordinator, members: orderMembers(ids.map((nodeId) => ({ nodeId, priority: 0, role: 'edge' }))) };
}

function onePage(v: ClusterView): ViewPage {
  const pages = viewPages(v, 1400);
  expect(pages).toHaveLength(1);
  return pages[0]!;
}

describe('adopting a view', () => {
  test('a complete view from the coordinator this node follows is adopted', () => {
    const book = new ViewBook();
    expect(book.offer(onePage(view(3, 'a', ['a', 'b', 'c'])), 'a', 'a')).toBe('adopted');
    expect(book.currentId).toBe(3);
    expect(book.current?.members.map((m) => m.nodeId)).toEqual(['a', 'b', 'c']);
    expect(book.current?.coordinator).toBe('a');
  });

  test('a view from a node this node does not follow changes nothing', () => {
    const book = new ViewBook();
    book.offer(onePage(view(1, 'a', ['a', 'b'])), 'a', 'a');
    expect(book.offer(onePage(view(5, 'b', ['a', 'b'])), 'b', 'a')).toBe('not_coordinator');
    expect(book.offer(onePage(view(5, 'b', ['a', 'b'])), 'b', undefined)).toBe('not_coordinator');
    expect(book.currentId).toBe(1);
  });

  test('a page naming another publisher than its sender is malformed', () => {
    const book = new ViewBook();
    expect(book.offer(onePage(view(2, 'a', ['a', 'b'])), 'b', 'b')).toBe('malformed');
    expect(book.current).toBeUndefined();
  });

  test('only higher ids are adopted: a late or repeated view is stale', () => {
    const book = new ViewBook();
    book.offer(onePage(view(4, 'a', ['a', 'b', 'c'])), 'a', 'a');
    expect(book.offer(onePage(view(4, 'a', ['a', 'b'])), 'a', 'a')).toBe('stale');
    expect(book.offer(onePage(view(3, 'a', ['a'])), 'a', 'a')).toBe('stale');
    expect(book.current?.members).toHaveLength(3);
    expect(book.offer(onePage(view(5, 'a', ['a', 'b'])), 'a', 'a')).toBe('adopted');
    expect(book.currentId).toBe(5);
  });

  test("a new coordinator's view is adopted only above the view held, whoever published that", () => {
    const book = new ViewBook();
    book.offer(onePage(view(7, 'a', ['a', 'b', 'c'])), 'a', 'a');
    expect(book.offer(onePage(view(7, 'b', ['b', 'c'])), 'b', 'b')).toBe('stale');
    expect(book.offer(onePage(view(8, 'b', ['b', 'c'])), 'b', 'b')).toBe('adopted');
    expect(book.current?.coordinator).toBe('b');
  });

  test('its own published views only grow too', () => {
    const book = new ViewBook();
    expect(book.publish(view(2, 'a', ['a']))).toBe(true);
    expect(book.publish(view(2, 'a', ['a', 'b']))).toBe(false);
    expect(book.publish(view(1, 'a', ['a', 'b']))).toBe(false);
    expect(book.current?.members).toHaveLength(1);
  });
});

describe('views in pages', () => {
  const big = view(
    9,
    'node-000',
    Array.from({ length: 300 }, (_, i) => `node-${String(i).padStart(3, '0')}`),
  );

  test('a view larger than a datagram is paged, each page within the payload bound', () => {
    const pages = viewPages(big, 1400);
    expect(pages.length).toBeGreaterThan(1);
    for (const page of pages) {
      const bytes = Datagram.encode({ senderNodeId: 'node-000', body: { $case: 'viewPage', viewPage: page } }).finish().length;
      expect(bytes).toBeLessThanOrEqual(1400);
    }
    expect(pages.reduce((n, p) => n + p.members.length, 0)).toBe(300);
  });

  test('the view is adopted once the last page arrives, in any order', () => {
    const pages = viewPages(big, 1400).reverse();
    const book = new ViewBook();
    for (const page of pages.slice(0, -1)) expect(book.offer(page, 'node-000', 'node-000')).toBe('pending');
    expect(book.current).toBeUndefined();
    expect(book.offer(pages.at(-1)!, 'node-000', 'node-000')).toBe('adopted');
    expect(book.current?.members.map((m) => m.nodeId)).toEqual(big.members.map((m) => m.nodeId));
  });

  test('a page of a higher view replaces the assembly; a page of a lower one is dropped', () => {
    const old = viewPages(big, 1400);
    const newer = viewPages({ ...big, id: 10 }, 1400);
    const book = new ViewBook();
    expect(book.offer(old[0]!, 'node-000', 'node-000')).toBe('pending');
    expect(book.offer(newer[0]!, 'node-000', 'node-000')).toBe('pending');
    expect(book.offer(old[1]!, 'node-000', 'node-000')).toBe('stale');
    for (const page of newer.slice(1, -1)) expect(book.offer(page, 'node-000', 'node-000')).toBe('pending');
    expect(book.offer(newer.at(-1)!, 'node-000', 'node-000')).toBe('adopted');
    expect(book.currentId).toBe(10);
  });
});

describe('malformed pages are refused, never thrown', () => {
  const good = onePage(view(2, 'a', ['a', 'b']));
  const cases: [string, ViewPage][] = [
    ['view id 0', { ...good, viewId: 0n }],
    ['a view id beyond the safe range', { ...good, viewId: 1n << 60n }],
    ['no members', { ...good, members: [], memberCount: 0 }],
    ['more members than a view may list', { ...good, memberCount: MAX_VIEW_MEMBERS + 1 }],
    ['a page past the member count', { ...good, first: 1 }],
    ['an index out of order', { ...good, members: [good.members[1]!, good.members[0]!] }],
    ['a bad node id', { ...good, members: [{ ...good.members[0]!, nodeId: 'bad id' }, good.members[1]!] }],
    ['a duplicated member', { ...good, members: [good.members[0]!, { ...good.members[0]!, index: 1 }] }],
    ['a role longer than any role', { ...good, members: [{ ...good.members[0]!, role: 'x'.repeat(100) }, good.members[1]!] }],
  ];
  test.each(cases)('%s', (_name, page) => {
    const book = new ViewBook();
    expect(book.offer(page, 'a', 'a')).toBe('malformed');
    expect(book.current).toBeUndefined();
    // A good view still gets through afterwards.
    expect(book.offer(good, 'a', 'a')).toBe('adopted');
  });
});

test('members are ordered by priority (higher first), then node id', () => {
  const ordered = orderMembers([
    { nodeId: 'c', priority: 0, role: 'edge' },
    { nodeId: 'b', priority: 5, role: 'store' },
    { nodeId: 'a', priority: 0, role: 'edge' },
  ]);
  expect(ordered.map((m) => [m.nodeId, m.index])).toEqual([
    ['b', 0],
    ['a', 1],
    ['c', 2],
  ]);
});
