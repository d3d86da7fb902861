/**
 * Cart merges: a cart kept as one part per item, so the store's per-part last-writer-wins
 * merges concurrent changes item by item.
 *
 * Layout (the names are part names, so `[a-z0-9_.-]{1,64}`):
 * - `cart.item.<key>` holds one baton.v1.CartItem; `<key>` is the sku escaped: a-z, 0-9,
 *   '.' and '-' stay, every other UTF-8 byte becomes `_` and two hex digits; a key longer
 *   than fits becomes `_h` and 40 hex digits of the sku's SHA-256 (`h` is no hex digit, so
 *   the two forms never meet).
 * - `cart.meta` holds a baton.v1.CartState without items (currency, billing address).
 * - The well-known part `cart` is separate: a whole cart written with Put, merged as one
 *   part (last writer wins). UpdateCart neither reads nor writes it; a session uses one or
 *   the other.
 *
 * Rules:
 * - One UpdateCart is one store Put of every item and meta part it changes (one version,
 *   atomic), followed on the same turn by one store delete of the items it removes; no
 *   other write can come between the two on this node.
 * - Adding reads the item as this node holds it and writes the sum. Two nodes adding the
 *   same sku concurrently therefore resolve last-writer-wins (one add is lost); different
 *   skus never interfere.
 * - A removal is a part delete: its tombstone carries a newer version than any add this
 *   node had seen, so a late or retransmitted older add loses to it on every replica.
 *   Removing an item this node does not hold yet changes nothing.
 * - Assembly ignores parts that do not decode (they may have been written with Put) and
 *   lists items by sku, so replicas holding the same parts show the same cart.
 */
import { createHash } from 'node:crypto';
import { InvalidArgumentError } from '../wire/errors';
import { CartItem, CartState } from '../gen/baton/v1/parts';
import type { CartOperation } from '../gen/baton/v1/session';
import { versionTimeMs } from '../store/hybrid-clock';
import type { LocalChange } from './replication-engine';
import { forEachPart, type SessionStore, type StoredSession } from '../store/store';
import { checkPartWrites, type RequestLimits } from '../wire/validation';

export const CART_ITEM_PREFIX = 'cart.item.';
export const CART_META_PART = 'cart.meta';
export const MAX_SKU_BYTES = 256;
const MAX_QUANTITY = 0xffff_ffff;
const MAX_PART_NAME = 64;
const KEEP = /^[a-z0-9.-]$/;

/** The part that holds the item with this sku. */
export function cartItemPartName(sku: string): string {
  let key = '';
  for (const byte of Buffer.from(sku, 'utf8')) {
    const c = String.fromCharCode(byte);
    key += byte < 0x80 && KEEP.test(c) ? c : '_' + byte.toString(16).padStart(2, '0');
  }
  if (CART_ITEM_PREFIX.length + key.length > MAX_PART_NAME) {
    key = '_h' + createHash('sha256').update(sku, 'utf8').digest('hex').slice(0, 40);
  }
  return CART_ITEM_PREFIX + key;
}

function decodeItem(value: Uint8Array): CartItem | undefined {
  try {
    return CartItem.decode(value);
  } catch {
    return undefined;
  }
}

function decodeMeta(value: Uint8Array): CartState | undefined {
  try {
    return CartState.decode(value);
  } catch {
    return undefined;
  }
}

/** The merged cart of a session as this node holds it (empty when there is none). */
export function assembleCart(session: StoredSession | undefined): CartState {
  const cart = CartState.fromPartial({});
  if (session === undefined) return cart;
  let newest = 0;
  forEachPart(session, (name, value, version) => {
    if (value === null) return;
    if (name === CART_META_PART) {
      const meta = decodeMeta(value);
      if (meta === undefined) return;
      cart.currency = meta.currency;
      cart.billingAddress = meta.billingAddress;
      cart.paymentReference = meta.paymentReference;
    } else if (name.startsWith(CART_ITEM_PREFIX)) {
      const item = decodeItem(value);
      // An item must sit under its own sku's name; anything else was not written here.
      if (item === undefined || item.quantity === 0 || cartItemPartName(item.sku) !== name) return;
      cart.items.push(item);
    } else {
      return;
    }
    newest = Math.max(newest, version);
  });
  cart.items.sort((a, b) => (a.sku < b.sku ? -1 : a.sku > b.sku ? 1 : 0));
  cart.updatedAtUnixMs = BigInt(newest === 0 ? 0 : versionTimeMs(newest));
  return cart;
}

/** What a list of operations does to the parts, given the parts as this node holds them. */
export interface CartPlan {
  /** Items and meta to write, by part name (one value each: the last operation's). */
  puts: Map<string, Uint8Array>;
  /** Item parts to delete. */
  removes: Set<string>;
}

function checkSku(sku: string): void {
  if (sku.length === 0) throw new InvalidArgumentError('a cart operation needs a sku');
  if (Buffer.byteLength(sku, 'utf8') > MAX_SKU_BYTES) throw new InvalidArgumentError(`sku is longer than ${MAX_SKU_BYTES} bytes`);
}

/**
 * Translates operations into part writes, reading the current items from `session`.
 * Operations apply in order; later ones see earlier ones' effect. Throws
 * InvalidArgumentError for an operation that cannot apply.
 */
export function planCartUpdate(session: StoredSession | undefined, operations: readonly CartOperation[], limits: RequestLimits): CartPlan {
  if (operations.length > limits.maxPartsPerSession) {
    throw new InvalidArgumentError(`${operations.length} cart operations; one UpdateCart takes at most ${limits.maxPartsPerSession}`);
  }
  const held = new Map<string, Uint8Array>();
  if (session !== undefined) {
    forEachPart(session, (name, value) => {
      if (value !== null && (name === CART_META_PART || name.startsWith(CART_ITEM_PREFIX))) held.set(name, value);
    });
  }
  /** Part name → the item (or meta) after the operations so far; undefined = removed. */
  const items = new Map<string, CartItem | undefined>();
  let meta: CartState | undefined;
  const itemOf = (sku: string): CartItem | undefined => {
    const name = cartItemPartName(sku);
    if (items.has(name)) return items.get(name);
    const value = held.get(name);
    const item = value === undefined ? undefined : decodeItem(value);
    return item === undefined || item.quantity === 0 || item.sku !== sku ? undefined : item;
  };
  const metaNow = (): CartState => {
    if (meta !== undefined) return meta;
    const value = held.get(CART_META_PART);
    const current = value === undefined ? undefined : decodeMeta(value);
    return CartState.fromPartial({ currency: current?.currency ?? '', billingAddress: current?.billingAddress, paymentReference: current?.paymentReference ?? '' });
  };
  for (const operation of operations) {
    const op = operation.op;
    switch (op?.$case) {
      case 'addItem': {
        const { sku, name, quantity, unitPriceMinor } = op.addItem;
        checkSku(sku);
        if (quantity === 0) throw new InvalidArgumentError('add_item needs a quantity above 0');
        const current = itemOf(sku);
        const total = (current?.quantity ?? 0) + quantity;
        if (total > MAX_QUANTITY) throw new InvalidArgumentError(`add_item would make the quantity of one item ${total}, over ${MAX_QUANTITY}`);
        items.set(cartItemPartName(sku), {
          sku,
          name: name !== '' ? name : (current?.name ?? ''),
          quantity: total,
          unitPriceMinor: unitPriceMinor !== 0n ? unitPriceMinor : (current?.unitPriceMinor ?? 0n),
        });
        break;
      }
      case 'setQuantity': {
        const { sku, quantity } = op.setQuantity;
        checkSku(sku);
        const current = itemOf(sku);
        items.set(cartItemPartName(sku), quantity === 0 ? undefined : { sku, name: current?.name ?? '', quantity, unitPriceMinor: current?.unitPriceMinor ?? 0n });
        break;
      }
      case 'removeItem':
        checkSku(op.removeItem.sku);
        items.set(cartItemPartName(op.removeItem.sku), undefined);
        break;
      case 'setBillingAddress':
        meta = { ...metaNow(), billingAddress: op.setBillingAddress };
        break;
      case 'setCurrency':
        meta = { ...metaNow(), currency: op.setCurrency };
        break;
      default:
        throw new InvalidArgumentError('a cart operation names no operation');
    }
  }
  const plan: CartPlan = { puts: new Map(), removes: new Set() };
  for (const [name, item] of items) {
    if (item !== undefined) plan.puts.set(name, CartItem.encode(item).finish());
    else if (held.has(name)) plan.removes.add(name);
  }
  if (meta !== undefined) plan.puts.set(CART_META_PART, CartState.encode({ ...meta, items: [], updatedAtUnixMs: 0n }).finish());
  return plan;
}

export interface CartUpdateResult {
  /** The changes to replicate, in order. */
  changes: LocalChange[];
  /** Version of the Put (or of the delete when only items were removed); 0 = nothing written. */
  version: number;
  /** The session as the update left it (undefined: this node holds none), to answer and replicate from. */
  session: StoredSession | undefined;
}

/**
 * Applies operations to a session's cart in the store: one Put of the items and meta
 * written, then one delete of the items removed. On a throw nothing has changed.
 */
export function applyCartUpdate(
  store: SessionStore,
  sessionId: string,
  operations: readonly CartOperation[],
  ttlMs: number,
  limits: RequestLimits,
  now: number,
): CartUpdateResult {
  let session = store.get(sessionId, now);
  const plan = planCartUpdate(session, operations, limits);
  const changes: LocalChange[] = [];
  let version = 0;
  if (plan.puts.size > 0) {
    const writes = [...plan.puts].map(([name, value]) => ({ name, value }));
    checkPartWrites(writes, limits);
    const stored = store.put(sessionId, writes, ttlMs, now);
    version = stored.version;
    session = stored.session;
    for (const w of writes) changes.push({ kind: 'put', name: w.name, value: w.value, version });
  }
  if (plan.removes.size > 0) {
    const names = [...plan.removes];
    store.delete(sessionId, names, now);
    // The delete's version is on the part tombstones it left.
    session = store.get(sessionId, now);
    if (session !== undefined) {
      forEachPart(session, (name, value, partVersion) => {
        if (value === null && plan.removes.has(name)) {
          changes.push({ kind: 'delete_part', name, version: partVersion });
          version = Math.max(version, partVersion);
        }
      });
    }
  }
  return { changes, version, session };
}
