/**
 * Cart merges on one node: how sku map to part names, how operations become part writes
 * and deletes, and how the cart is assembled from the parts. Merging across nodes under
 * loss is tested in test/cart-merge.sim.test.ts.
 */
import { applyCartUpdate, assembleCart, CART_META_PART, cartItemPartName, planCartUpdate } from '../src/core/cart-merge';
import { InvalidArgumentError } from '../src/wire/errors';
import { CartItem, CartState } from '../src/gen/baton/v1/parts';
import type { CartOperation } from '../src/gen/baton/v1/session';
import { HybridClock } from '../src/store/hybrid-clock';
import { SeededRandom } from '../src/store/random';
import type { LocalChange } from '../src/core/replication-engine';
import { SessionApi, type PeerCopies, type Replicator } from '../src/core/session-api';
import { DEFAULT_STORE_CONFIG, findStoredPart, SessionStore, type StoredSession } from '../src/store/store';
import { BuzHash } from '../src/store/buzhash';

const T0 = 1_700_000_000_000;
const LIMITS = { maxValueBytes: 64 * 1024, maxPartsPerSession: 64 };
const PART_NAME = /^[a-z0-9_.-]{1,64}$/;

function newStore(): SessionStore {
  return new SessionStore({ ...DEFAULT_STORE_CONFIG, nodeId: 'node-a', partitions: 16 }, new BuzHash('cart-test'), new HybridClock());
}

const add = (sku: string, quantity: number, name = '', unitPriceMinor = 0n): CartOperation => ({ op: { $case: 'addItem', addItem: { sku, name, quantity, unitPriceMinor } } });
const setQty = (sku: string, quantity: number): CartOperation => ({ op: { $case: 'setQuantity', setQuantity: { sku, quantity } } });
const remove = (sku: string): CartOperation => ({ op: { $case: 'removeItem', removeItem: { sku } } });

function quantities(cart: CartState): Record<string, number> {
  return Object.fromEntries(cart.items.map((i) => [i.sku, i.quantity]));
}

describe('cartItemPartName', () => {
  test('keeps a-z, 0-9, . and -, escapes every other byte as _xx', () => {
    expect(cartItemPartName('shoe-42.blue')).toBe('cart.item.shoe-42.blue');
    expect(cartItemPartName('SKU_1')).toBe('cart.item._53_4b_55_5f1');
    expect(cartItemPartName('é')).toBe('cart.item._c3_a9');
  });

  test('a sku too long to escape within 64 characters is hashed (_h is no escape)', () => {
    const name = cartItemPartName('X'.repeat(40));
    expect(name).toMatch(/^cart\.item\._h[0-9a-f]{40}$/);
    expect(cartItemPartName('x'.repeat(54))).toBe('cart.item.' + 'x'.repeat(54));
    expect(cartItemPartName('x'.repeat(55))).toMatch(/^cart\.item\._h/);
  });

  test('random skus give valid, distinct part names', () => {
    const random = new SeededRandom(17);
    const alphabet = 'aZ_-.09é/ %~';
    const seen = new Map<string, string>();
    for (let i = 0; i < 5000; i++) {
      let sku = '';
      const length = 1 + random.below(70);
      for (let j = 0; j < length; j++) sku += alphabet[random.below(alphabet.length)];
      const name = cartItemPartName(sku);
      expect(name).toMatch(PART_NAME);
      const other = seen.get(name);
      if (other !== undefined) expect(other).toBe(sku);
      seen.set(name, sku);
    }
    expect(seen.size).toBeGreaterThan(4000);
  });
});

describe('operations on one node', () => {
  test('add sums per item, set replaces, remove and set 0 delete the part', () => {
    const store = newStore();
    applyCartUpdate(store, 's', [add('apple', 2, 'Apple', 150n), add('pear', 1)], 0, LIMITS, T0);
    applyCartUpdate(store, 's', [add('apple', 3)], 0, LIMITS, T0 + 1);
    let cart = assembleCart(store.get('s', T0 + 1));
    expect(quantities(cart)).toEqual({ apple: 5, pear: 1 });
    // A later add without name or price keeps the item's.
    expect(cart.items[0]).toEqual({ sku: 'apple', name: 'Apple', quantity: 5, unitPriceMinor: 150n });

    const result = applyCartUpdate(store, 's', [setQty('apple', 9), remove('pear')], 0, LIMITS, T0 + 2);
    expect(result.changes.map((c) => c.kind + ':' + ('name' in c ? c.name : ''))).toEqual(['put:cart.item.apple', 'delete_part:cart.item.pear']);
    cart = assembleCart(store.get('s', T0 + 2));
    expect(quantities(cart)).toEqual({ apple: 9 });
    // The removal is a tombstone at a newer version than the Put before it.
    const pear = findStoredPart(store.get('s', T0 + 2)!, 'cart.item.pear')!;
    expect(pear.value).toBeNull();
    expect(pear.version).toBe(result.version);

    applyCartUpdate(store, 's', [setQty('apple', 0)], 0, LIMITS, T0 + 3);
    expect(assembleCart(store.get('s', T0 + 3)).items).toEqual([]);
  });

  test('the result carries the session as the update left it, so the API answers without reading it back', () => {
    const store = newStore();
    const first = applyCartUpdate(store, 's', [add('apple', 2), add('pear', 1)], 0, LIMITS, T0);
    expect(first.session).toStrictEqual(store.get('s', T0));
    expect(quantities(assembleCart(first.session))).toEqual({ apple: 2, pear: 1 });
    const second = applyCartUpdate(store, 's', [add('apple', 1), remove('pear')], 0, LIMITS, T0 + 1);
    expect(second.session).toStrictEqual(store.get('s', T0 + 1));
    expect(quantities(assembleCart(second.session))).toEqual({ apple: 3 });
    // Nothing to change: the session held is still what the answer is built from.
    const third = applyCartUpdate(store, 's', [remove('pear')], 0, LIMITS, T0 + 2);
    expect(third.changes).toEqual([]);
    expect(quantities(assembleCart(third.session))).toEqual({ apple: 3 });
  });

  test('operations of one request apply in order and write each part once', () => {
    const store = newStore();
    const plan = planCartUpdate(undefined, [add('a', 1), add('a', 2), remove('b'), setQty('c', 4), remove('c')], LIMITS);
    expect([...plan.puts.keys()]).toEqual(['cart.item.a']);
    expect(CartItem.decode(plan.puts.get('cart.item.a')!).quantity).toBe(3);
    // Nothing to remove: b and c were never held.
    expect(plan.removes.size).toBe(0);
    expect(applyCartUpdate(store, 's', [remove('b')], 0, LIMITS, T0)).toEqual({ changes: [], version: 0, session: undefined });
    expect(store.get('s', T0)).toBeUndefined();
  });

  test('address and currency go to cart.meta and survive item changes', () => {
    const store = newStore();
    const address = { name: 'A. Buyer', line1: '1 Main St', line2: '', city: 'Town', region: '', postalCode: '12345', country: 'DE' };
    applyCartUpdate(store, 's', [{ op: { $case: 'setCurrency', setCurrency: 'EUR' } }, { op: { $case: 'setBillingAddress', setBillingAddress: address } }], 0, LIMITS, T0);
    applyCartUpdate(store, 's', [add('a', 1)], 0, LIMITS, T0 + 1);
    const cart = assembleCart(store.get('s', T0 + 1));
    expect(cart.currency).toBe('EUR');
    expect(cart.billingAddress).toEqual(address);
    expect(quantities(cart)).toEqual({ a: 1 });
    expect(CartState.decode(findStoredPart(store.get('s', T0 + 1)!, CART_META_PART)!.value!).items).toEqual([]);
  });

  test('bad operations are refused and change nothing', () => {
    const store = newStore();
    applyCartUpdate(store, 's', [add('a', 0xffff_fff0)], 0, LIMITS, T0);
    const bad: CartOperation[][] = [
      [add('', 1)],
      [add('a', 0)],
      [add('b', 1), add('a', 0x20)],
      [{ op: undefined }],
      [add('x'.repeat(257), 1)],
      Array.from({ length: 65 }, (_, i) => add(`s${i}`, 1)),
    ];
    for (const ops of bad) expect(() => applyCartUpdate(store, 's', ops, 0, LIMITS, T0 + 1)).toThrow(InvalidArgumentError);
    expect(quantities(assembleCart(store.get('s', T0 + 1)))).toEqual({ a: 0xffff_fff0 });
  });

  test('more new items than the session may hold is refused whole', () => {
    const store = newStore();
    const ops = Array.from({ length: 40 }, (_, i) => add(`s${i}`, 1));
    applyCartUpdate(store, 's', ops, 0, LIMITS, T0);
    expect(() => applyCartUpdate(store, 's', Array.from({ length: 30 }, (_, i) => add(`t${i}`, 1)), 0, LIMITS, T0 + 1)).toThrow(InvalidArgumentError);
    expect(assembleCart(store.get('s', T0 + 1)).items).toHaveLength(40);
  });
});

describe('assembleCart', () => {
  test('lists items by sku, skips parts that do not decode or sit under another sku, ignores the whole-cart part', () => {
    const store = newStore();
    const item = (sku: string, quantity: number) => CartItem.encode({ sku, name: '', quantity, unitPriceMinor: 0n }).finish();
    store.put(
      's',
      [
        { name: cartItemPartName('zeta'), value: item('zeta', 1) },
        { name: cartItemPartName('alpha'), value: item('alpha', 2) },
        { name: cartItemPartName('beta'), value: item('gamma', 3) },
        { name: cartItemPartName('delta'), value: Buffer.from([0xff, 0xff, 0xff]) },
        { name: cartItemPartName('eta'), value: item('eta', 0) },
        { name: 'cart', value: CartState.encode({ billingAddress: undefined, items: [{ sku: 'whole', name: '', quantity: 1, unitPriceMinor: 0n }], currency: 'USD', paymentReference: '', updatedAtUnixMs: 0n }).finish() },
        { name: 'other', value: Buffer.from('x') },
      ],
      0,
      T0,
    );
    const cart = assembleCart(store.get('s', T0));
    expect(cart.items.map((i) => i.sku)).toEqual(['alpha', 'zeta']);
    expect(cart.currency).toBe('');
    expect(cart.updatedAtUnixMs).toBe(BigInt(T0));
    expect(assembleCart(undefined)).toEqual(CartState.fromPartial({}));
  });
});

class RecordingReplicator implements Replicator {
  readonly replicas = 2;
  readonly changes: LocalChange[] = [];
  secondariesFor(): number {
    return 2;
  }
  replicate(_session: StoredSession, changes: readonly LocalChange[]): number | undefined {
    this.changes.push(...changes);
    return this.changes.length;
  }
  waitForAcks(): Promise<number> {
    return Promise.resolve(2);
  }
  sendQueueRoom(): Promise<void> | undefined {
    return undefined;
  }
  fetchFromPeers(): Promise<PeerCopies> {
    return Promise.resolve({ asked: 0, answered: 0, snapshots: [] });
  }
  replicateClaim(): void {}
}

describe('SessionApi.updateCart', () => {
  test('replicates what it wrote, answers the merged cart, and reads without writing when given no operations', async () => {
    const store = newStore();
    const replicator = new RecordingReplicator();
    const api = new SessionApi(store, LIMITS, replicator);
    const first = await api.updateCart({ sessionId: 's', operations: [add('a', 1), add('b', 2)], ttlSeconds: 0, minReplicas: 1 }, T0);
    expect(quantities(first.cart!)).toEqual({ a: 1, b: 2 });
    expect(first.replicasAcked).toBe(2);
    expect(first.version).toBeGreaterThan(0n);
    const second = await api.updateCart({ sessionId: 's', operations: [remove('a')], ttlSeconds: 0, minReplicas: 0 }, T0 + 1);
    expect(quantities(second.cart!)).toEqual({ b: 2 });
    expect(replicator.changes.map((c) => c.kind)).toEqual(['put', 'put', 'delete_part']);
    const read = await api.updateCart({ sessionId: 's', operations: [], ttlSeconds: 0, minReplicas: 0 }, T0 + 2);
    expect(read).toEqual({ ...second, version: 0n, replicasAcked: 0 });
    expect(replicator.changes).toHaveLength(3);
    expect(() => api.updateCart({ sessionId: '', operations: [], ttlSeconds: 0, minReplicas: 0 }, T0)).toThrow(InvalidArgumentError);
  });
});
