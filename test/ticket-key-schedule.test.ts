import { MAX_TICKET_KEYS, planTicketKeys, type TicketKey, type TicketKeyScheduleConfig } from '../src/capture/ticket-key-schedule';
import { SeededRandom } from '../src/store/random';

const MINUTE = 60_000;
const config: TicketKeyScheduleConfig = { rotationMs: 720 * MINUTE, sessionLifetimeMs: 5 * MINUTE, fetchRetryMs: 5000 };
const T0 = 1_700_000_000_000;

function keySource(seed: number): () => Buffer {
  const random = new SeededRandom(seed);
  return () => {
    const key = Buffer.alloc(48);
    for (let i = 0; i < 48; i++) key[i] = Math.floor(random.next() * 256);
    return key;
  };
}

const name = (k: TicketKey | undefined) => k?.key.subarray(0, 16).toString('hex');

describe('planTicketKeys', () => {
  test('a generator of a cluster with no keys writes an active key and the next one a whole period ahead', () => {
    const plan = planTicketKeys({ now: T0, stored: undefined, generator: true, peersHaveNone: true, newKey: keySource(1) }, config);
    expect(plan.write?.map((k) => k.activatesAt)).toEqual([T0, T0 + config.rotationMs]);
    expect(plan.issue).toBe(plan.write![0]);
    expect(plan.accept).toEqual(plan.write);
    expect(plan.fetch).toBe(false);
    expect(plan.nextDeadline).toBe(T0 + config.rotationMs);
  });

  test('a generator that holds no keys asks its peers first and writes nothing (a joiner must not replace the cluster keys)', () => {
    const plan = planTicketKeys({ now: T0, stored: undefined, generator: true, peersHaveNone: false, newKey: keySource(1) }, config);
    expect(plan.write).toBeUndefined();
    expect(plan.issue).toBeUndefined();
    expect(plan.fetch).toBe(true);
    expect(plan.nextDeadline).toBe(T0 + config.fetchRetryMs);
  });

  test('a generator that took over late writes the next key at least a quarter period ahead', () => {
    const stored = [{ key: keySource(2)(), activatesAt: T0 }];
    const now = T0 + config.rotationMs - 1000;
    const plan = planTicketKeys({ now, stored, generator: true, peersHaveNone: false, newKey: keySource(3) }, config);
    expect(plan.write!.map((k) => k.activatesAt)).toEqual([T0, now + config.rotationMs / 4]);
  });

  test('a node that holds no next key asks its peers an eighth of a period after the activation, not before', () => {
    const stored = [{ key: keySource(2)(), activatesAt: T0 }];
    const early = planTicketKeys({ now: T0 + 1000, stored, generator: false, peersHaveNone: false, newKey: keySource(3) }, config);
    expect(early.fetch).toBe(false);
    expect(early.write).toBeUndefined();
    expect(early.nextDeadline).toBe(T0 + config.rotationMs / 8);
    const late = planTicketKeys({ now: T0 + config.rotationMs / 8, stored, generator: false, peersHaveNone: false, newKey: keySource(3) }, config);
    expect(late.fetch).toBe(true);
    expect(late.issue).toBe(stored[0]);
  });

  test('a stored set with malformed, duplicate and too many keys is cut down to well-formed distinct ones', () => {
    const make = keySource(4);
    const good = Array.from({ length: MAX_TICKET_KEYS + 5 }, (_, i) => ({ key: make(), activatesAt: T0 - (MAX_TICKET_KEYS + 5 - i) * 1000 }));
    const stored = [...good, { key: Buffer.alloc(47), activatesAt: T0 + 1 }, { key: good[good.length - 1]!.key, activatesAt: T0 + 2 }];
    const plan = planTicketKeys({ now: T0, stored, generator: false, peersHaveNone: false, newKey: make }, { ...config, sessionLifetimeMs: config.rotationMs });
    expect(plan.accept).toHaveLength(MAX_TICKET_KEYS);
    expect(plan.accept.every((k) => k.key.length === 48)).toBe(true);
    expect(plan.issue).toBe(good[good.length - 1]);
  });

  test('three nodes over ten rotations on virtual time: they switch in lockstep, hold every key a quarter period before it issues, and drop retired keys after a session lifetime', () => {
    const random = new SeededRandom(7);
    const newKey = keySource(8);
    // The key session lives on the generator and one replica; node c is outside the replica
    // set and gets the set only by asking (a fetch answers with the generator's copy).
    const held = new Map<string, TicketKey[] | undefined>([['a', undefined], ['b', undefined], ['c', undefined]]);
    // The generator starts first; the others start a moment later.
    const deadline = new Map<string, number>([['a', T0], ['b', T0 + 1], ['c', T0 + 1]]);
    const firstHeld = new Map<string, Map<string, number>>([['a', new Map()], ['b', new Map()], ['c', new Map()]]);
    const issuing = new Map<string, TicketKey | undefined>();
    const accepting = new Map<string, TicketKey[]>();
    const end = T0 + 10 * config.rotationMs;
    let now = T0;
    let checks = 0;
    const hold = (node: string, keys: TicketKey[] | undefined) => {
      held.set(node, keys);
      for (const k of keys ?? []) if (!firstHeld.get(node)!.has(name(k)!)) firstHeld.get(node)!.set(name(k)!, now);
    };
    while (now < end) {
      // Visit the due nodes in a random order.
      const due = [...deadline.entries()].filter(([, at]) => at <= now).map(([n]) => n).sort(() => random.next() - 0.5);
      for (const node of due) {
        const plan = planTicketKeys({ now, stored: held.get(node), generator: node === 'a', peersHaveNone: true, newKey }, config);
        if (plan.write !== undefined) {
          hold('a', plan.write);
          hold('b', plan.write);
        }
        if (plan.fetch) hold(node, held.get('a'));
        const after = plan.fetch || plan.write !== undefined ? planTicketKeys({ now, stored: held.get(node), generator: node === 'a', peersHaveNone: true, newKey }, config) : plan;
        issuing.set(node, after.issue);
        accepting.set(node, after.accept);
        expect(after.nextDeadline).toBeGreaterThan(now);
        deadline.set(node, after.nextDeadline);
      }
      // Every key a node issues with is accepted by every node, and every node held it a
      // quarter period before its activation (except the very first key).
      for (const [, issue] of issuing) {
        if (issue === undefined) continue;
        for (const [other, accepted] of accepting) {
          expect(accepted.map(name)).toContain(name(issue));
          if (issue.activatesAt > T0) expect(firstHeld.get(other)!.get(name(issue)!)!).toBeLessThanOrEqual(issue.activatesAt - config.rotationMs / 4);
          checks++;
        }
      }
      // All nodes issue with the same key at every moment after the first write.
      expect(new Set([...issuing.values()].map(name)).size).toBe(1);
      for (const accepted of accepting.values()) expect(accepted.length).toBeLessThanOrEqual(3);
      now = Math.min(...deadline.values());
    }
    expect(checks).toBeGreaterThan(50);
    // Ten rotations made ten more keys, and the set stayed small.
    expect(firstHeld.get('c')!.size).toBeGreaterThanOrEqual(11);
  });

  test('a key retired less than a session lifetime ago is still accepted, and after that it is not', () => {
    const make = keySource(9);
    const stored = [
      { key: make(), activatesAt: T0 - config.rotationMs },
      { key: make(), activatesAt: T0 },
      { key: make(), activatesAt: T0 + config.rotationMs },
    ];
    const within = planTicketKeys({ now: T0 + config.sessionLifetimeMs - 1, stored, generator: false, peersHaveNone: false, newKey: make }, config);
    expect(within.accept.map(name)).toEqual(stored.map(name));
    expect(within.nextDeadline).toBe(T0 + config.sessionLifetimeMs);
    const after = planTicketKeys({ now: T0 + config.sessionLifetimeMs, stored, generator: true, peersHaveNone: false, newKey: make }, config);
    expect(after.accept.map(name)).toEqual(stored.slice(1).map(name));
    expect(after.write?.map(name)).toEqual(stored.slice(1).map(name));
    expect(name(after.issue)).toBe(name(stored[1]));
  });
});
