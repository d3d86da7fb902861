/**
 * RepairPlanner: which partitions to pull from whom as the view changes, pending pulls,
 * retries, re-sending under-replicated writes, and when unheld copies may be dropped
 * (a scripted view, virtual time).
 */
import { DISCARD_AFTER_MS, DISCARD_MAX_WAIT_MS, DISCARD_RECHECK_MS, RESYNC_RETRY_MS, RepairPlanner, type RepairView } from '../src/core/repair-planner';

/**
 * A view where this node ('a') holds `held` and is a secondary of the owners in `serves` per
 * partition; every partition's holders are `holders[partition]` (a, b, c by default).
 */
function view(
  held: number[],
  serves: Record<number, string[]> = {},
  addresses: Record<string, string> = { b: 'b:1', c: 'c:1' },
  holders: Record<number, string[]> = {},
): RepairView {
  return {
    heldPartitions: () => held,
    isSecondaryOf: (partition, owner) => (serves[partition] ?? ['']).includes(owner),
    addressOf: (nodeId) => addresses[nodeId],
    holdersOf: (partition) => holders[partition] ?? ['a', 'b', 'c'],
  };
}

const pulled = (requests: ReturnType<RepairPlanner['pullHeld']>) => Object.fromEntries(requests.map((r) => [r.peerNodeId, r.partitions]));

describe('RepairPlanner', () => {
  it('pulls held partitions from every peer once, then only from peers that appear or when a partition is gained', () => {
    const p = new RepairPlanner();
    expect(pulled(p.pullHeld(view([1, 2]), ['b'], 'placement'))).toEqual({ b: [1, 2] });
    expect(p.pullHeld(view([1, 2]), ['b'], 'placement')).toEqual([]);
    expect(pulled(p.pullHeld(view([1, 2]), ['b', 'c'], 'placement'))).toEqual({ c: [1, 2] });
    expect(pulled(p.pullHeld(view([1, 2, 3]), ['b', 'c'], 'placement'))).toEqual({ b: [3], c: [3] });
    // Becoming a secondary of another owner in a partition already held: pull it again from all.
    expect(pulled(p.pullHeld(view([1, 2, 3], { 2: ['', 'c'] }), ['b', 'c'], 'placement'))).toEqual({ b: [2], c: [2] });
    p.forgetPulls();
    expect(pulled(p.pullHeld(view([1]), ['b'], 'anti_entropy'))).toEqual({ b: [1] });
  });

  it('skips a peer without an address until it has one', () => {
    const p = new RepairPlanner();
    expect(pulled(p.pullHeld(view([1], {}, { b: 'b:1' }), ['b', 'c'], 'placement'))).toEqual({ b: [1] });
    expect(pulled(p.pullHeld(view([1]), ['b', 'c'], 'placement'))).toEqual({ c: [1] });
  });

  it('counts placement and join pulls as pending until settled, gap and anti-entropy ones not', () => {
    const p = new RepairPlanner();
    const [request] = p.pullHeld(view([1, 2]), ['b'], 'placement');
    p.started(request!);
    p.started({ ...request!, peerNodeId: 'c' });
    p.started({ ...request!, reason: 'gap' });
    expect(p.hasPendingPulls()).toBe(true);
    expect(p.lackingPartitions()).toBe(2);
    p.settled(request!);
    expect(p.hasPendingPulls()).toBe(true);
    p.settled(request!);
    expect(p.hasPendingPulls()).toBe(false);
    expect(p.lackingPartitions()).toBe(0);
  });

  it('pulls a partition from its other live holders before a takeover, pending per partition and apart from readiness', () => {
    const p = new RepairPlanner();
    // Partition 1 is held by a, b, c; 2 by a, c, d (d dead); 3 by a alone; c has no address yet for 4.
    const v = view([1, 2, 3, 4], {}, { b: 'b:1', c: 'c:1', d: 'd:1' }, { 1: ['a', 'b', 'c'], 2: ['c', 'a', 'd'], 3: ['a'], 4: ['a', 'c'] });
    const requests = p.takeoverPulls({ ...v, addressOf: (id) => (id === 'c' ? 'c:1' : id === 'b' ? 'b:1' : undefined) }, [1, 2, 3], ['b', 'c']);
    expect(pulled(requests)).toEqual({ b: [1], c: [1, 2] });
    expect(requests.every((r) => r.reason === 'takeover' && r.peerAddress === `${r.peerNodeId}:1`)).toBe(true);
    expect(pulled(p.takeoverPulls({ ...v, addressOf: (id) => (id === 'c' ? undefined : 'b:1') }, [4], ['b', 'c']))).toEqual({});
    for (const request of requests) p.started(request);
    expect([1, 2, 3].map((partition) => p.takeoverPending(partition))).toEqual([true, true, false]);
    expect(p.hasPendingPulls()).toBe(false);
    expect(p.lackingPartitions()).toBe(0);
    p.settled(requests[1]!);
    expect([1, 2].map((partition) => p.takeoverPending(partition))).toEqual([true, false]);
    p.settled(requests[0]!);
    expect(p.takeoverPending(1)).toBe(false);
  });

  it('retries a failed transfer RESYNC_RETRY_MS later', () => {
    const p = new RepairPlanner();
    const request = { peerNodeId: 'b', peerAddress: 'b:1', partitions: [1], channels: [], reason: 'gap' as const };
    p.retryLater(request, 100);
    expect(p.nextRetryAt()).toBe(100 + RESYNC_RETRY_MS);
    expect(p.dueRetries(100 + RESYNC_RETRY_MS - 1)).toEqual([]);
    expect(p.dueRetries(100 + RESYNC_RETRY_MS)).toEqual([request]);
    expect(p.nextRetryAt()).toBe(Infinity);
  });

  it('re-sends under-replicated partitions once they have secondaries, and forgets them once they have enough', () => {
    const p = new RepairPlanner();
    p.wroteUnderReplicated(1);
    p.wroteUnderReplicated(2);
    expect(p.lackingPartitions()).toBe(2);
    const secondaries: Record<number, number> = { 1: 0, 2: 1 };
    expect(p.resendUnreplicated((partition) => secondaries[partition]!, 2)).toEqual([2]);
    expect(p.hasUnreplicated()).toBe(true);
    secondaries[1] = 2;
    secondaries[2] = 2;
    expect(p.resendUnreplicated((partition) => secondaries[partition]!, 2)).toEqual([1, 2]);
    expect(p.hasUnreplicated()).toBe(false);
  });

  it('discards DISCARD_AFTER_MS after the view settles, waiting for pulling peers but not forever', () => {
    const p = new RepairPlanner();
    p.viewChanged(0, ['a', 'b']);
    expect(p.discardAt).toBe(DISCARD_AFTER_MS);
    expect(p.discardNow(DISCARD_AFTER_MS - 1)).toBe(false);
    p.peerPulling('b', true);
    expect(p.discardNow(DISCARD_AFTER_MS)).toBe(false);
    expect(p.discardAt).toBe(DISCARD_AFTER_MS + DISCARD_RECHECK_MS);
    // Still pulling at the bound: discard anyway.
    expect(p.discardNow(DISCARD_AFTER_MS + DISCARD_MAX_WAIT_MS)).toBe(true);
    expect(p.discardAt).toBe(Infinity);
    // A pulling peer that leaves the view no longer holds a discard back.
    p.viewChanged(1_000_000, ['a']);
    expect(p.discardNow(1_000_000 + DISCARD_AFTER_MS)).toBe(true);
  });

  it('anti-entropy pulls everything again and discards only with no discard scheduled and nobody pulling', () => {
    const p = new RepairPlanner();
    p.pullHeld(view([1]), ['b'], 'placement');
    const first = p.antiEntropy(view([1]), ['b']);
    expect(pulled(first.pulls)).toEqual({ b: [1] });
    expect(first.pulls[0]!.reason).toBe('anti_entropy');
    expect(first.discard).toBe(true);
    p.peerPulling('b', true);
    expect(p.antiEntropy(view([1]), ['b']).discard).toBe(false);
    p.peerPulling('b', false);
    p.viewChanged(0, ['a', 'b']);
    expect(p.antiEntropy(view([1]), ['b']).discard).toBe(false);
  });
});
