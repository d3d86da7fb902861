/**
 * Cart merges across nodes on a simulated lossy network and virtual time: two nodes apply
 * UpdateCart operations to one session concurrently, and every replica must end with the
 * same cart, holding both writers' items, with a removal never undone by an older add
 * that arrives after it. Seeded: a failing seed replays exactly; no sleeps, no timings.
 */
import { assembleCart } from '../src/core/cart-merge';
import type { CartOperation } from '../src/gen/baton/v1/session';
import { SeededRandom } from '../src/store/random';
import { findStoredPart } from '../src/store/store';
import { PERFECT_LINK } from './support/sim-network';
import { SimCluster, type SimNode } from './support/sim-cluster';

const SESSION = 'cart-session';
/** Most virtual time the network runs after the last write before replicas are compared. */
const SETTLE_MS = 30_000;

const add = (sku: string, quantity: number): CartOperation => ({ op: { $case: 'addItem', addItem: { sku, name: sku.toUpperCase(), quantity, unitPriceMinor: 100n } } });
const setQty = (sku: string, quantity: number): CartOperation => ({ op: { $case: 'setQuantity', setQuantity: { sku, quantity } } });
const remove = (sku: string): CartOperation => ({ op: { $case: 'removeItem', removeItem: { sku } } });

function cartOf(node: SimNode): Record<string, number> {
  const cart = assembleCart(node.store.get(SESSION, node.cluster.net.now));
  return Object.fromEntries(cart.items.map((i) => [i.sku, i.quantity]));
}

/** The cart parts (and their tombstones) a node holds, comparable across nodes. */
function cartParts(node: SimNode): string {
  const snapshot = node.store.snapshot(SESSION, node.cluster.net.now);
  if (snapshot === undefined) return 'none';
  return JSON.stringify(
    snapshot.parts
      .filter((p) => p.name.startsWith('cart.'))
      .map((p) => [p.name, p.value, p.version, p.writer, p.epoch])
      .sort((a, b) => ((a[0] as string) < (b[0] as string) ? -1 : 1)),
  );
}

function converged(cluster: SimCluster): boolean {
  const [first, ...rest] = cluster.nodes.map(cartParts);
  return rest.every((p) => p === first);
}

function startCluster(seed: number, transport: 'unicast' | 'multicast'): SimCluster {
  const cluster = new SimCluster({ seed, nodes: 3, replicas: 2, transport, profile: { ...PERFECT_LINK, loss: 0.1 } });
  if (!cluster.runUntil(() => cluster.membershipSettled(), 10_000)) throw new Error('membership did not settle');
  cluster.runFor(50);
  return cluster;
}

/** What one writer's operations on its own skus leave, applied in order. */
function applyModel(model: Map<string, number>, op: CartOperation): void {
  switch (op.op?.$case) {
    case 'addItem':
      model.set(op.op.addItem.sku, (model.get(op.op.addItem.sku) ?? 0) + op.op.addItem.quantity);
      break;
    case 'setQuantity':
      if (op.op.setQuantity.quantity === 0) model.delete(op.op.setQuantity.sku);
      else model.set(op.op.setQuantity.sku, op.op.setQuantity.quantity);
      break;
    case 'removeItem':
      model.delete(op.op.removeItem.sku);
      break;
    default:
      throw new Error('unexpected operation');
  }
}

describe.each(['unicast', 'multicast'] as const)('%s, 10%% loss: two writers on one cart', (transport) => {
  test('concurrent writers keep both their items and every replica converges to the same cart', () => {
    const cluster = startCluster(41, transport);
    const [a, b, c] = cluster.nodes as [SimNode, SimNode, SimNode];
    // The same instant on both nodes: neither has seen the other's write.
    a.updateCart(SESSION, [add('fig', 1)]);
    b.updateCart(SESSION, [add('date', 2)]);
    const models = new Map<SimNode, Map<string, number>>([
      [a, new Map([['fig', 1]])],
      [b, new Map([['date', 2]])],
    ]);

    // Then a random interleaving, each writer on its own skus, operations a few ms apart
    // (far less than a repair takes under loss, so the writers' views lag each other).
    const random = new SeededRandom(4242);
    for (let i = 0; i < 300; i++) {
      const writer = random.below(2) === 0 ? a : b;
      const sku = `${writer === a ? 'a' : 'b'}${random.below(5)}`;
      const roll = random.below(10);
      const op = roll < 6 ? add(sku, 1 + random.below(3)) : roll < 8 ? setQty(sku, random.below(4)) : remove(sku);
      writer.updateCart(SESSION, [op]);
      applyModel(models.get(writer)!, op);
      cluster.runFor(random.below(8));
    }
    cluster.runUntil(() => converged(cluster), SETTLE_MS);

    const expected = Object.fromEntries([...models.get(a)!, ...models.get(b)!].sort(([x], [y]) => (x < y ? -1 : 1)));
    expect(expected.fig).toBe(1);
    expect(expected.date).toBe(2);
    for (const node of [a, b, c]) expect({ node: node.nodeId, cart: cartOf(node) }).toEqual({ node: node.nodeId, cart: expected });
    expect(converged(cluster)).toBe(true);
    // The loss was real: datagrams were lost and repaired.
    expect(cluster.nodes.reduce((n, node) => n + node.engine.stats.retransmissions, 0)).toBeGreaterThan(0);
  });

  test('a removal is not undone by an older add that reaches a replica after it', () => {
    const cluster = startCluster(43, transport);
    const [a, b, c] = cluster.nodes as [SimNode, SimNode, SimNode];
    a.updateCart(SESSION, [add('pear', 1)]);
    cluster.runUntil(() => converged(cluster) && cartOf(c).pear === 1, SETTLE_MS);
    expect(cartOf(c)).toEqual({ pear: 1 });

    // A's add cannot reach C; B sees it and removes the item.
    cluster.net.cut(a.address, c.address);
    cluster.net.cut(c.address, a.address);
    const added = a.updateCart(SESSION, [add('kiwi', 2)]);
    expect(cluster.runUntil(() => cartOf(b).kiwi === 2, SETTLE_MS)).toBe(true);
    const removed = b.updateCart(SESSION, [remove('kiwi'), add('pear', 1)]);
    expect(removed).toBeGreaterThan(added);
    const tombstoneAtC = () => findStoredPart(c.store.get(SESSION, cluster.net.now)!, 'cart.item.kiwi')?.value === null;
    expect(cluster.runUntil(tombstoneAtC, SETTLE_MS)).toBe(true);

    // Now the older add is repaired to C, after the removal, and loses to it.
    const staleAdds: boolean[] = [];
    const applyRemote = c.store.applyRemote.bind(c.store);
    c.store.applyRemote = (id, change, meta, now) => {
      const changed = applyRemote(id, change, meta, now);
      if (change.kind === 'put' && change.name === 'cart.item.kiwi' && change.version === added) staleAdds.push(changed);
      return changed;
    };
    cluster.net.heal(a.address, c.address);
    cluster.net.heal(c.address, a.address);
    // Every node holds the same parts already: run on until the repair has happened.
    expect(cluster.runUntil(() => staleAdds.length > 0, SETTLE_MS)).toBe(true);
    cluster.runUntil(() => converged(cluster), SETTLE_MS);
    for (const node of [a, b, c]) expect({ node: node.nodeId, cart: cartOf(node) }).toEqual({ node: node.nodeId, cart: { pear: 2 } });
    expect(converged(cluster)).toBe(true);
    expect(tombstoneAtC()).toBe(true);
    expect(staleAdds.length).toBeGreaterThan(0);
    expect(staleAdds.every((changed) => !changed)).toBe(true);
  });
});
