/**
 * UpdateCart through the real surfaces: two `baton sidecar` processes on loopback, the
 * BatonClient's updateCart (gRPC) on each at once, and the HTTP route
 * (`POST`/`GET /v1/sessions/{id}/cart`). Both pods' items survive, a removal on one node
 * reaches the other, and both answer the same cart. Waiting is bounded polling, never a
 * sleep; every process is stopped in afterAll.
 */
import * as grpc from '@grpc/grpc-js';
import { BatonClientError } from '../src/client/client';
import { SessionServiceService, UpdateCartRequest, UpdateCartResponse, type CartOperation } from '../src/gen/baton/v1/session';
import { SeededRandom } from '../src/store/random';
import { garbage, hexPreview, pool } from './support/fuzz-inputs';
import { rawUnary } from './support/raw-calls';
import { FAST_FAILURE_DETECTION, pollUntil, StaticCluster } from './support/static-cluster';

jest.setTimeout(90_000);

const add = (sku: string, quantity: number, unitPriceMinor = 0n): CartOperation => ({ op: { $case: 'addItem', addItem: { sku, name: '', quantity, unitPriceMinor } } });
const remove = (sku: string): CartOperation => ({ op: { $case: 'removeItem', removeItem: { sku } } });

let cluster: StaticCluster | undefined;

beforeAll(async () => {
  cluster = await StaticCluster.start(['cart-a', 'cart-b'], ['--replicas', '1', '--partitions', '16', ...FAST_FAILURE_DETECTION]);
  await cluster.waitForAlive(['cart-a', 'cart-b'], 20_000);
});

afterAll(async () => {
  await cluster?.stopAll();
});

async function skus(node: string, sessionId: string): Promise<string> {
  const { cart } = await cluster!.client(node).updateCart(sessionId, []);
  return (cart?.items ?? []).map((i) => `${i.sku}x${i.quantity}`).join(',');
}

test('two pods adding different items at once keep both; a removal on one reaches the other', async () => {
  const a = cluster!.client('cart-a');
  const b = cluster!.client('cart-b');
  const id = 'cart-integration-1';
  const [fromA, fromB] = await Promise.all([a.updateCart(id, [add('apple', 2, 150n)], { minReplicas: 1 }), b.updateCart(id, [add('pear', 1)], { minReplicas: 1 })]);
  expect(fromA.replicasAcked).toBe(1);
  expect(fromB.replicasAcked).toBe(1);
  expect(fromA.cart!.items.find((i) => i.sku === 'apple')).toEqual({ sku: 'apple', name: '', quantity: 2, unitPriceMinor: 150n });
  await pollUntil('both nodes hold both items', async () => (await skus('cart-a', id)) === 'applex2,pearx1' && (await skus('cart-b', id)) === 'applex2,pearx1', 20_000);

  await b.updateCart(id, [remove('apple'), add('pear', 2)], { minReplicas: 1 });
  await pollUntil('the removal reaches cart-a', async () => (await skus('cart-a', id)) === 'pearx3', 20_000);
  expect(await skus('cart-b', id)).toBe('pearx3');

  // The whole-cart part is separate: UpdateCart neither wrote it nor reads it.
  const session = await a.get(id);
  expect(session!.parts.map((p) => p.name).sort()).toEqual(['cart.item.pear']);

  const refused = await a.updateCart(id, [add('', 1)]).catch((err: unknown) => err);
  expect(refused).toBeInstanceOf(BatonClientError);
  expect((refused as BatonClientError).code).toBe(3);
});

test('the HTTP route updates and reads the same merged cart', async () => {
  const httpA = cluster!.node('cart-a').process!.httpUrl;
  const httpB = cluster!.node('cart-b').process!.httpUrl;
  const id = 'cart-integration/2';
  const url = (base: string) => `${base}/v1/sessions/${encodeURIComponent(id)}/cart`;
  const post = await fetch(url(httpA), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      operations: [
        { add_item: { sku: 'Shoe-42', name: 'Shoe', quantity: 1, unit_price_minor: '5999' } },
        { set_currency: 'EUR' },
        { set_billing_address: { name: 'A. Buyer', city: 'Town', country: 'DE' } },
      ],
      min_replicas: 1,
    }),
  });
  expect(post.status).toBe(200);
  const posted = (await post.json()) as { cart: { items: unknown[]; currency: string; billing_address: Record<string, string> }; version: string; replicas_acked: number };
  expect(posted.cart.items).toEqual([{ sku: 'Shoe-42', name: 'Shoe', quantity: 1, unit_price_minor: '5999' }]);
  expect(posted.cart.currency).toBe('EUR');
  expect(posted.cart.billing_address.city).toBe('Town');
  expect(posted.version).toMatch(/^[1-9][0-9]*$/);
  expect(posted.replicas_acked).toBe(1);

  // The gRPC client on the other node adds its own item; the HTTP read on either node shows both.
  await cluster!.client('cart-b').updateCart(id, [add('sock', 3)]);
  await pollUntil(
    'both nodes answer both items over HTTP',
    async () => {
      const carts = await Promise.all([httpA, httpB].map(async (base) => ((await (await fetch(url(base))).json()) as { cart: { items: { sku: string }[] } }).cart.items.map((i) => i.sku).join(',')));
      return carts.every((c) => c === 'Shoe-42,sock');
    },
    20_000,
  );

  const bad = await fetch(url(httpA), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ operations: [{ add_itme: { sku: 'x' } }] }) });
  expect(bad.status).toBe(400);
  expect(((await bad.json()) as { code: string }).code).toBe('invalid_argument');
  const wrongMethod = await fetch(url(httpA), { method: 'DELETE' });
  expect(wrongMethod.status).toBe(405);
});

test('hostile UpdateCart messages get a clear status, never crash the node, and leave the cart readable', async () => {
  const rng = new SeededRandom(0xca27);
  const address = cluster!.node('cart-a').process!.apiAddress;
  const raw = new grpc.Client(address, grpc.credentials.createInsecure());
  const id = 'cart-fuzz';
  const valid = () =>
    UpdateCartRequest.encode({
      sessionId: id,
      operations: [
        add(`sku-${rng.below(4)}`, 1 + rng.below(3), BigInt(rng.below(1000))),
        remove(`sku-${rng.below(4)}`),
        { op: { $case: 'setBillingAddress', setBillingAddress: { name: 'n', line1: 'l', line2: '', city: 'c', region: '', postalCode: '1', country: 'DE' } } },
        { op: { $case: 'setCurrency', setCurrency: 'EUR' } },
      ],
      ttlSeconds: 0,
      minReplicas: 0,
    }).finish();
  const inputs = Array.from({ length: 400 }, () => garbage(rng, valid, { maxBytes: 8 * 1024, oversizeBytes: 0, oversizeChance: 0 }));
  const findings: string[] = [];
  try {
    await pool(inputs.length, 16, async (i) => {
      const input = inputs[i]!;
      const out = await rawUnary(raw, SessionServiceService.updateCart.path, input.bytes, new Date(Date.now() + 10_000));
      const where = `#${i} [${input.kind}] ${hexPreview(input.bytes)}`;
      if (out.code === grpc.status.OK) {
        try {
          UpdateCartResponse.decode(out.responses[0]!);
        } catch {
          findings.push(`${where}: OK with an undecodable response`);
        }
      } else if (![grpc.status.INVALID_ARGUMENT, grpc.status.INTERNAL, grpc.status.RESOURCE_EXHAUSTED].includes(out.code)) {
        findings.push(`${where}: ${out.code} ${out.details}`);
      }
    });
  } finally {
    raw.close();
  }
  expect(findings).toEqual([]);
  const { cart } = await cluster!.client('cart-a').updateCart(id, []);
  expect(cart!.items.every((i) => i.quantity > 0)).toBe(true);
  expect(cluster!.node('cart-a').process!.child.exitCode).toBeNull();
});
