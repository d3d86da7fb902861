/**
 * The HTTP/JSON form of UpdateCart (`POST /v1/sessions/{id}/cart`, `GET …/cart`): JSON
 * operations in, the merged cart out. Field names are the .proto's (snake_case); 64-bit
 * numbers (prices in minor units, versions, times) are decimal strings in answers and
 * strings or whole numbers in requests, as in protobuf's JSON mapping. Unknown fields are
 * refused, so a misspelt operation is a 400 rather than a silent no-op.
 */
import { InvalidArgumentError } from '../../src/wire/errors';
import type { Address, CartState } from '../../src/gen/baton/v1/parts';
import type { CartOperation, UpdateCartRequest, UpdateCartResponse } from '../../src/gen/baton/v1/session';

const ADDRESS_FIELDS = ['name', 'line1', 'line2', 'city', 'region', 'postal_code', 'country'] as const;

/** `{ operations: [ { add_item | set_quantity | remove_item | set_billing_address | set_currency } ], ttl_seconds?, min_replicas? }`. */
export function updateCartRequestFromJson(sessionId: string, body: unknown, maxOperations: number): UpdateCartRequest {
  const object = objectOf(body, 'the body');
  onlyKeys(object, ['operations', 'ttl_seconds', 'min_replicas'], 'the body');
  const operations = object.operations ?? [];
  if (!Array.isArray(operations)) throw new InvalidArgumentError('operations must be an array');
  if (operations.length > maxOperations) throw new InvalidArgumentError(`${operations.length} cart operations; one update takes at most ${maxOperations}`);
  return {
    sessionId,
    operations: operations.map((op: unknown, i) => operationOf(op, `operations[${i}]`)),
    ttlSeconds: wholeNumber(object.ttl_seconds, 'ttl_seconds', 0xffff_ffff),
    minReplicas: wholeNumber(object.min_replicas, 'min_replicas', 1024),
  };
}

function operationOf(value: unknown, at: string): CartOperation {
  const op = objectOf(value, at);
  const keys = Object.keys(op);
  if (keys.length !== 1) throw new InvalidArgumentError(`${at} must name exactly one of add_item, set_quantity, remove_item, set_billing_address, set_currency`);
  const key = keys[0]!;
  const body = op[key];
  switch (key) {
    case 'add_item': {
      const item = objectOf(body, `${at}.add_item`);
      onlyKeys(item, ['sku', 'name', 'quantity', 'unit_price_minor'], `${at}.add_item`);
      return {
        op: {
          $case: 'addItem',
          addItem: {
            sku: text(item.sku, `${at}.add_item.sku`),
            name: text(item.name, `${at}.add_item.name`),
            quantity: wholeNumber(item.quantity, `${at}.add_item.quantity`, 0xffff_ffff),
            unitPriceMinor: int64(item.unit_price_minor, `${at}.add_item.unit_price_minor`),
          },
        },
      };
    }
    case 'set_quantity': {
      const item = objectOf(body, `${at}.set_quantity`);
      onlyKeys(item, ['sku', 'quantity'], `${at}.set_quantity`);
      return { op: { $case: 'setQuantity', setQuantity: { sku: text(item.sku, `${at}.set_quantity.sku`), quantity: wholeNumber(item.quantity, `${at}.set_quantity.quantity`, 0xffff_ffff) } } };
    }
    case 'remove_item': {
      const item = objectOf(body, `${at}.remove_item`);
      onlyKeys(item, ['sku'], `${at}.remove_item`);
      return { op: { $case: 'removeItem', removeItem: { sku: text(item.sku, `${at}.remove_item.sku`) } } };
    }
    case 'set_billing_address': {
      const address = objectOf(body, `${at}.set_billing_address`);
      onlyKeys(address, ADDRESS_FIELDS, `${at}.set_billing_address`);
      const field = (name: (typeof ADDRESS_FIELDS)[number]) => text(address[name], `${at}.set_billing_address.${name}`);
      const setBillingAddress: Address = {
        name: field('name'),
        line1: field('line1'),
        line2: field('line2'),
        city: field('city'),
        region: field('region'),
        postalCode: field('postal_code'),
        country: field('country'),
      };
      return { op: { $case: 'setBillingAddress', setBillingAddress } };
    }
    case 'set_currency':
      return { op: { $case: 'setCurrency', setCurrency: text(body, `${at}.set_currency`) } };
    default:
      throw new InvalidArgumentError(`${at}: unknown operation ${JSON.stringify(key.slice(0, 40))}`);
  }
}

export function cartJson(cart: CartState): Record<string, unknown> {
  const json: Record<string, unknown> = {
    items: cart.items.map((i) => ({ sku: i.sku, name: i.name, quantity: i.quantity, unit_price_minor: i.unitPriceMinor.toString() })),
    currency: cart.currency,
    payment_reference: cart.paymentReference,
    updated_at_unix_ms: cart.updatedAtUnixMs.toString(),
  };
  const a = cart.billingAddress;
  if (a !== undefined) {
    json.billing_address = { name: a.name, line1: a.line1, line2: a.line2, city: a.city, region: a.region, postal_code: a.postalCode, country: a.country };
  }
  return json;
}

export function updateCartResponseJson(answer: UpdateCartResponse): Record<string, unknown> {
  return { cart: cartJson(answer.cart ?? emptyCart()), version: answer.version.toString(), replicas_acked: answer.replicasAcked };
}

function emptyCart(): CartState {
  return { items: [], currency: '', billingAddress: undefined, paymentReference: '', updatedAtUnixMs: 0n };
}

function objectOf(value: unknown, at: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new InvalidArgumentError(`${at} is not a JSON object`);
  return value as Record<string, unknown>;
}

function onlyKeys(object: Record<string, unknown>, allowed: readonly string[], at: string): void {
  for (const key of Object.keys(object)) if (!allowed.includes(key)) throw new InvalidArgumentError(`${at}: unknown field ${JSON.stringify(key.slice(0, 40))}`);
}

function text(value: unknown, at: string): string {
  if (value === undefined) return '';
  if (typeof value !== 'string') throw new InvalidArgumentError(`${at} must be a string`);
  return value;
}

function wholeNumber(value: unknown, at: string, max: number): number {
  if (value === undefined) return 0;
  if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 && value <= max) return value;
  throw new InvalidArgumentError(`${at} must be a whole number from 0 to ${max}`);
}

function int64(value: unknown, at: string): bigint {
  if (value === undefined) return 0n;
  if (typeof value === 'number' && Number.isSafeInteger(value)) return BigInt(value);
  if (typeof value === 'string' && /^-?\d{1,19}$/.test(value)) {
    const n = BigInt(value);
    if (n >= -(2n ** 63n) && n < 2n ** 63n) return n;
  }
  throw new InvalidArgumentError(`${at} must be a 64-bit integer (a decimal string or a whole number)`);
}
