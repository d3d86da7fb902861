/**
 * The HTTP/JSON API (--http-listen) of a real `baton sidecar`: every route, the errors and
 * their statuses, ETag/304, body limits, the long-poll (at once, held and woken, timed out,
 * ended by a drain), and the gRPC API seeing the same sessions. Every response is checked
 * against the OpenAPI document the node serves: its status must be listed for the route
 * and its JSON body must match the schema.
 *
 * No timing assertions: a held long-poll is known to be parked once baton_http_long_polls
 * counts it, and only then is the change made.
 */
import * as http from 'node:http';
import { BatonClient } from '../src/client/client';
import { HTTP_API_OPENAPI } from '../sidecar/servers/http-api-openapi';
import { runBaton, startSidecar, type SidecarProcess } from './support/sidecar-process';

jest.setTimeout(90_000);

const MAX_VALUE_BYTES = 4096;
const MAX_PARTS = 8;

type Schema = Record<string, unknown>;
const doc = HTTP_API_OPENAPI as unknown as {
  paths: Record<string, Record<string, { responses?: Record<string, { content?: Record<string, { schema: Schema }> }> }>>;
  components: { schemas: Record<string, Schema> };
};

/** Keywords the check below enforces, and those that only document. Anything else fails the test. */
const ENFORCED = ['$ref', 'type', 'const', 'enum', 'pattern', 'minimum', 'required', 'properties', 'additionalProperties', 'items', 'oneOf'];
const DOCUMENTING = ['description', 'contentEncoding'];

/** A small JSON Schema check (the subset the document uses); returns what does not match. */
function mismatches(schema: Schema, value: unknown, at = '$'): string[] {
  for (const key of Object.keys(schema)) if (!ENFORCED.includes(key) && !DOCUMENTING.includes(key)) return [`${at}: schema keyword ${key} is not checked`];
  if (typeof schema.$ref === 'string') {
    const name = schema.$ref.replace('#/components/schemas/', '');
    const target = doc.components.schemas[name];
    return target === undefined ? [`${at}: no schema ${name}`] : mismatches(target, value, at);
  }
  const out: string[] = [];
  if ('const' in schema && value !== schema.const) out.push(`${at}: ${JSON.stringify(value)} is not ${JSON.stringify(schema.const)}`);
  if (Array.isArray(schema.enum) && !schema.enum.includes(value)) out.push(`${at}: ${JSON.stringify(value)} not in enum`);
  switch (schema.type) {
    case undefined:
      break;
    case 'object':
      if (typeof value !== 'object' || value === null || Array.isArray(value)) return [...out, `${at}: not an object`];
      break;
    case 'array':
      if (!Array.isArray(value)) return [...out, `${at}: not an array`];
      break;
    case 'integer':
      if (!Number.isInteger(value)) return [...out, `${at}: not an integer`];
      break;
    default:
      if (typeof value !== schema.type) return [...out, `${at}: not a ${String(schema.type)}`];
  }
  if (typeof schema.pattern === 'string' && typeof value === 'string' && !new RegExp(schema.pattern).test(value)) out.push(`${at}: ${JSON.stringify(value)} does not match ${schema.pattern}`);
  if (typeof schema.minimum === 'number' && typeof value === 'number' && value < schema.minimum) out.push(`${at}: below ${schema.minimum}`);
  if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
    const object = value as Record<string, unknown>;
    for (const name of (schema.required as string[] | undefined) ?? []) if (!(name in object)) out.push(`${at}: ${name} is missing`);
    const properties = (schema.properties ?? {}) as Record<string, Schema>;
    for (const [name, v] of Object.entries(object)) {
      if (name in properties) out.push(...mismatches(properties[name]!, v, `${at}.${name}`));
      else if (schema.additionalProperties === false) out.push(`${at}.${name}: not in the schema`);
      else if (typeof schema.additionalProperties === 'object') out.push(...mismatches(schema.additionalProperties as Schema, v, `${at}.${name}`));
    }
  }
  if (Array.isArray(value) && schema.items !== undefined) value.forEach((v, i) => out.push(...mismatches(schema.items as Schema, v, `${at}[${i}]`)));
  if (Array.isArray(schema.oneOf)) {
    const matching = (schema.oneOf as Schema[]).filter((s) => mismatches(s, value, at).length === 0).length;
    if (matching !== 1) out.push(`${at}: matches ${matching} of oneOf`);
  }
  return out;
}

/** The document's operation for a request, by path template. */
function operationOf(method: string, path: string) {
  for (const [template, item] of Object.entries(doc.paths)) {
    const pattern = new RegExp('^' + template.replace(/\{[^}]+\}/g, '[^/]+') + '$');
    if (pattern.test(path)) return { template, operation: item[method === 'HEAD' ? 'get' : method.toLowerCase()] };
  }
  return undefined;
}

interface Answer {
  status: number;
  headers: Headers;
  body: Buffer;
  json: any;
}

/** Checks an answer against the OpenAPI document; throws with what does not match. */
function checkAgainstDocument(method: string, path: string, answer: Answer): void {
  const found = operationOf(method, path);
  const errorSchema = { $ref: '#/components/schemas/Error' };
  const problems: string[] = [];
  if (found === undefined || found.operation === undefined) {
    // Not a route (404) or not a method of it (405): an error body all the same.
    if (answer.status !== (found === undefined ? 404 : 405)) problems.push(`status ${answer.status} for an undocumented ${method} ${path}`);
    problems.push(...mismatches(errorSchema, answer.json));
  } else {
    const response = found.operation.responses?.[String(answer.status)];
    if (response === undefined) problems.push(`status ${answer.status} is not documented for ${method} ${found.template}`);
    else {
      const json = response.content?.['application/json'];
      if (method === 'HEAD') {
        if (answer.body.length !== 0) problems.push('a HEAD answered with a body');
      } else if (json !== undefined) {
        expect(answer.headers.get('content-type')).toBe('application/json');
        problems.push(...mismatches(json.schema, answer.json));
      } else if (response.content === undefined) {
        if (answer.body.length !== 0) problems.push(`a ${answer.status} with a body`);
      }
    }
  }
  if (problems.length > 0) throw new Error(`${method} ${path} → ${answer.status} ${answer.body.toString().slice(0, 300)}\n${problems.join('\n')}`);
}

let node: SidecarProcess;

async function call(method: string, pathAndQuery: string, init: { body?: string | Buffer; headers?: Record<string, string> } = {}, base = node.httpUrl): Promise<Answer> {
  const response = await fetch(base + pathAndQuery, { method, body: init.body, headers: init.headers });
  const body = Buffer.from(await response.arrayBuffer());
  const type = response.headers.get('content-type');
  const answer: Answer = { status: response.status, headers: response.headers, body, json: type === 'application/json' && body.length > 0 ? JSON.parse(body.toString()) : undefined };
  checkAgainstDocument(method, pathAndQuery.split('?')[0]!, answer);
  return answer;
}

/** Waits (bounded) until `n` long-polls are parked on the node. */
async function parked(target: SidecarProcess, n: number): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if ((await target.scrape()).value('baton_http_long_polls') === n) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`${n} long-polls never parked`);
}

beforeAll(async () => {
  node = await startSidecar(['--max-value-bytes', String(MAX_VALUE_BYTES), '--max-parts-per-session', String(MAX_PARTS)]);
});

afterAll(async () => {
  await node?.stop();
});

describe('the schema check itself', () => {
  it('finds what does not match', () => {
    expect(mismatches({ $ref: '#/components/schemas/Error' }, { code: 'not_found', message: 'x' })).toEqual([]);
    expect(mismatches({ $ref: '#/components/schemas/Error' }, { code: 'nope', message: 'x' })).toHaveLength(1);
    expect(mismatches({ $ref: '#/components/schemas/Error' }, { code: 'not_found' })).toHaveLength(1);
    expect(mismatches({ $ref: '#/components/schemas/Found' }, { found: true, extra: 1 })).toHaveLength(1);
    expect(mismatches({ $ref: '#/components/schemas/PutResult' }, { version: 12, replicas_acked: 0 })).toHaveLength(1);
    expect(mismatches({ $ref: '#/components/schemas/Changes' }, { session_id: 's', found: true, version: '1', changes: [{ type: 'put' }] })).toHaveLength(1);
    expect(() => checkAgainstDocument('GET', '/v1/sessions/x', { status: 418, headers: new Headers(), body: Buffer.alloc(0), json: undefined })).toThrow(/not documented/);
  });
});

describe('HTTP/JSON API', () => {
  it('serves its OpenAPI document', async () => {
    const answer = await call('GET', '/v1/openapi.json');
    expect(answer.status).toBe(200);
    expect(answer.json).toEqual(JSON.parse(JSON.stringify(HTTP_API_OPENAPI)));
    expect(answer.json.openapi).toBe('3.1.0');
  });

  it('PUT raw bytes, GET them back with an ETag, If-None-Match → 304; the gRPC API sees the same session under the decoded id', async () => {
    const id = 'user/\u2713 1';
    const path = `/v1/sessions/${encodeURIComponent(id)}/parts/blob`;
    const bytes = Buffer.from([0, 255, 1, 128, 10]);
    const put = await call('PUT', path, { body: bytes, headers: { 'content-type': 'application/octet-stream' } });
    expect(put.status).toBe(200);
    const version = put.json.version as string;
    expect(put.headers.get('etag')).toBe(`"${version}"`);
    expect(put.json.replicas_acked).toBe(0);

    const got = await call('GET', path);
    expect(got.status).toBe(200);
    expect(got.headers.get('content-type')).toBe('application/octet-stream');
    expect(got.body).toEqual(bytes);
    expect(got.headers.get('etag')).toBe(`"${version}"`);

    const same = await call('GET', path, { headers: { 'if-none-match': `"${version}"` } });
    expect([same.status, same.body.length, same.headers.get('etag')]).toEqual([304, 0, `"${version}"`]);
    const other = await call('GET', path, { headers: { 'if-none-match': '"1"' } });
    expect(other.status).toBe(200);

    const baton = new BatonClient(node.apiAddress);
    try {
      const session = await baton.get(id);
      expect(Buffer.from(session!.parts[0]!.value)).toEqual(bytes);
      expect(session!.parts[0]!.version.toString()).toBe(version);
    } finally {
      baton.close();
    }
    // A JSON document as a part's value is stored as its text.
    const doc = await call('PUT', `/v1/sessions/${encodeURIComponent(id)}/parts/prefs`, { body: '{"theme":"dark"}', headers: { 'content-type': 'application/json' } });
    expect(doc.status).toBe(200);
    expect((await call('GET', `/v1/sessions/${encodeURIComponent(id)}/parts/prefs`)).body.toString()).toBe('{"theme":"dark"}');
  });

  it('POST several parts at once (text, base64, JSON) with ttl_seconds; GET the session as JSON, with resume and a parts filter; HEAD', async () => {
    const post = await call('POST', '/v1/sessions/multi', {
      body: JSON.stringify({ parts: { a: 'text é', b: { value_base64: Buffer.from([1, 2, 250]).toString('base64') }, c: { json: { n: 1 } } }, ttl_seconds: 120 }),
      headers: { 'content-type': 'application/json' },
    });
    expect(post.status).toBe(200);
    expect(Object.keys(post.json.versions).sort()).toEqual(['a', 'b', 'c']);

    const got = await call('GET', '/v1/sessions/multi');
    expect(got.status).toBe(200);
    expect(got.json.session_id).toBe('multi');
    const parts = Object.fromEntries((got.json.parts as any[]).map((p) => [p.name, p]));
    expect(parts.a.value).toBe('text é');
    expect(Buffer.from(parts.b.value_base64, 'base64')).toEqual(Buffer.from([1, 2, 250]));
    expect(parts.b.value).toBeUndefined();
    expect(parts.c.value).toBe('{"n":1}');
    expect(parts.a.version).toBe(post.json.version);
    // The TTL was applied: the session expires about 120 s after the write.
    expect(Number(got.json.expires_at_unix_ms) - Number(parts.a.updated_at_unix_ms)).toBeGreaterThan(100_000);
    expect(Number(got.json.expires_at_unix_ms) - Number(parts.a.updated_at_unix_ms)).toBeLessThanOrEqual(121_000);

    const filtered = await call('GET', '/v1/sessions/multi?parts=a,c&resume=true');
    expect(filtered.status).toBe(200);
    expect((filtered.json.parts as any[]).map((p) => p.name).sort()).toEqual(['a', 'c']);

    const head = await call('HEAD', '/v1/sessions/multi');
    expect([head.status, head.body.length]).toEqual([200, 0]);
  });

  it('compare-and-set: if_versions and If-Match / If-None-Match: * (412 when they do not hold, nothing written)', async () => {
    const created = await call('POST', '/v1/sessions/cas', { body: JSON.stringify({ parts: { a: 'a1' }, if_versions: { a: '0' } }) });
    expect(created.status).toBe(200);
    const v1 = created.json.version as string;
    const again = await call('POST', '/v1/sessions/cas', { body: JSON.stringify({ parts: { a: 'x' }, if_versions: { a: '0' } }) });
    expect([again.status, again.json.code]).toEqual([412, 'failed_precondition']);
    expect(again.json.message).toBe(`part 'a' is at version ${v1}, not the expected 0`);

    const stale = await call('PUT', '/v1/sessions/cas/parts/a', { body: 'y', headers: { 'if-match': '"1"' } });
    expect([stale.status, stale.json.code]).toEqual([412, 'failed_precondition']);
    const exists = await call('PUT', '/v1/sessions/cas/parts/a', { body: 'y', headers: { 'if-none-match': '*' } });
    expect(exists.status).toBe(412);
    expect((await call('GET', '/v1/sessions/cas/parts/a')).body.toString()).toBe('a1');

    const right = await call('PUT', '/v1/sessions/cas/parts/a', { body: 'a2', headers: { 'if-match': `"${v1}"` } });
    expect(right.status).toBe(200);
    const fresh = await call('PUT', '/v1/sessions/cas/parts/b', { body: 'b1', headers: { 'if-none-match': '*' } });
    expect(fresh.status).toBe(200);
    expect((await call('GET', '/v1/sessions/cas/parts/a')).body.toString()).toBe('a2');
  });

  it('touch, DELETE a part, DELETE the session; 404 for what does not exist', async () => {
    await call('POST', '/v1/sessions/gone', { body: JSON.stringify({ parts: { a: '1', b: '2' } }) });
    const touched = await call('POST', '/v1/sessions/gone/touch?ttl_seconds=600');
    expect(touched.status).toBe(200);
    expect(Number(touched.json.expires_at_unix_ms)).toBeGreaterThan(Date.now() + 500_000);
    const byBody = await call('POST', '/v1/sessions/gone/touch', { body: '{"ttl_seconds": 60}' });
    expect(Number(byBody.json.expires_at_unix_ms)).toBeLessThan(Number(touched.json.expires_at_unix_ms));

    expect((await call('DELETE', '/v1/sessions/gone/parts/a')).json).toEqual({ found: true });
    const partGone = await call('GET', '/v1/sessions/gone/parts/a');
    expect([partGone.status, partGone.json.code]).toEqual([404, 'not_found']);
    expect((await call('DELETE', '/v1/sessions/gone/parts/a')).status).toBe(404);
    expect((await call('DELETE', '/v1/sessions/gone')).status).toBe(200);
    for (const [method, path] of [
      ['GET', '/v1/sessions/gone'],
      ['GET', '/v1/sessions/gone/parts/b'],
      ['DELETE', '/v1/sessions/gone'],
      ['POST', '/v1/sessions/gone/touch'],
    ] as const) {
      const answer = await call(method, path);
      expect([method, path, answer.status, answer.json.code]).toEqual([method, path, 404, 'not_found']);
    }
  });

  it('maps errors to statuses with a {code, message} body', async () => {
    const cases: [string, string, { body?: string }, number, string][] = [
      ['POST', '/v1/sessions/e', { body: '{"parts":' }, 400, 'invalid_argument'],
      ['POST', '/v1/sessions/e', { body: '{"parts":{"A!":"x"}}' }, 400, 'invalid_argument'],
      ['POST', '/v1/sessions/e', { body: '{"parts":{}}' }, 400, 'invalid_argument'],
      ['POST', '/v1/sessions/e', { body: '{"parts":{"a":"x"},"ttl_seconds":99999999}' }, 400, 'invalid_argument'],
      ['PUT', '/v1/sessions/e/parts/Bad%20Name', { body: 'x' }, 400, 'invalid_argument'],
      ['GET', '/v1/sessions/%ff', {}, 400, 'invalid_argument'],
      ['GET', '/v1/sessions/a%01b', {}, 400, 'invalid_argument'],
      ['GET', '/v1/sessions/e?resume=maybe', {}, 400, 'invalid_argument'],
      ['GET', '/v1/sessions/e/changes?timeout=1h', {}, 400, 'invalid_argument'],
      ['POST', '/v1/sessions/e/touch', { body: '{"ttl":1}' }, 400, 'invalid_argument'],
      ['GET', '/v1/nothing', {}, 404, 'not_found'],
      ['PATCH', '/v1/sessions/e', {}, 405, 'method_not_allowed'],
      // One node: no secondary can acknowledge.
      ['PUT', '/v1/sessions/e/parts/a?min_replicas=1', { body: 'x' }, 503, 'unavailable'],
    ];
    for (const [method, path, init, status, code] of cases) {
      const answer = await call(method, path, init);
      expect([method, path, answer.status, answer.json.code]).toEqual([method, path, status, code]);
      expect(typeof answer.json.message).toBe('string');
    }
    expect((await call('PATCH', '/v1/sessions/e')).headers.get('allow')).toBe('GET, HEAD, POST, DELETE');
    // None of the refused writes happened.
    expect((await call('GET', '/v1/sessions/e')).status).toBe(404);
  });

  it('refuses requests from browsers (an Origin header) with 403, writing nothing', async () => {
    const form = await call('POST', '/v1/sessions/csrf', { body: '{"parts":{"a":"x"}}', headers: { origin: 'https://example.com', 'content-type': 'text/plain' } });
    expect([form.status, form.json.code]).toEqual([403, 'forbidden']);
    expect((await call('GET', '/v1/sessions/csrf', { headers: { origin: 'http://127.0.0.1:7402' } })).status).toBe(403);
    expect((await call('GET', '/v1/sessions/csrf')).status).toBe(404);
  });

  it('refuses bodies over the limits with 413, declared or chunked, and serves the next request', async () => {
    const over = await call('PUT', '/v1/sessions/big/parts/a', { body: Buffer.alloc(MAX_VALUE_BYTES + 1, 7) });
    expect([over.status, over.json.code]).toEqual([413, 'resource_exhausted']);
    const atLimit = await call('PUT', '/v1/sessions/big/parts/a', { body: Buffer.alloc(MAX_VALUE_BYTES, 7) });
    expect(atLimit.status).toBe(200);

    // Every part at full size in base64 fits; far more does not.
    const full = Object.fromEntries(Array.from({ length: MAX_PARTS }, (_, i) => [`p${i}`, { value_base64: Buffer.alloc(MAX_VALUE_BYTES, i).toString('base64') }]));
    expect((await call('POST', '/v1/sessions/big-post', { body: JSON.stringify({ parts: full }) })).status).toBe(200);
    const huge = await call('POST', '/v1/sessions/big-post', { body: JSON.stringify({ parts: { a: 'x'.repeat(MAX_VALUE_BYTES * MAX_PARTS * 4) } }) });
    expect(huge.status).toBe(413);

    // Chunked (no Content-Length): refused once the bytes read pass the limit.
    const url = new URL(`${node.httpUrl}/v1/sessions/big/parts/a`);
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request(url, { method: 'PUT' }, (res) => {
        res.resume();
        resolve(res.statusCode!);
      });
      req.on('error', reject);
      for (let i = 0; i < 8; i++) req.write(Buffer.alloc(1024, 1));
      req.end();
    });
    expect(status).toBe(413);
    expect((await call('GET', '/v1/sessions/big/parts/a')).body).toEqual(Buffer.alloc(MAX_VALUE_BYTES, 7));
  });

  describe('long-poll', () => {
    it('answers at once when something newer than `after` exists', async () => {
      const put = await call('POST', '/v1/sessions/lp1', { body: JSON.stringify({ parts: { a: '1', b: '2' } }) });
      const answer = await call('GET', '/v1/sessions/lp1/changes?after=0&timeout=120s');
      expect(answer.status).toBe(200);
      expect(answer.json.version).toBe(put.json.version);
      expect((answer.json.changes as any[]).map((c) => [c.type, c.part.name, c.part.value]).sort()).toEqual([
        ['put', 'a', '1'],
        ['put', 'b', '2'],
      ]);
    });

    it('answers 204 when nothing changes before the time-out', async () => {
      const put = await call('PUT', '/v1/sessions/lp2/parts/a', { body: 'x' });
      const at = put.json.version as string;
      expect((await call('GET', `/v1/sessions/lp2/changes?after=${at}&timeout=0s`)).status).toBe(204);
      const timedOut = await call('GET', `/v1/sessions/lp2/changes?after=${at}&timeout=50ms`);
      expect([timedOut.status, timedOut.body.length]).toEqual([204, 0]);
      expect((await node.scrape()).value('baton_http_long_polls')).toBe(0);
    });

    it('holds the request until a change arrives (a gRPC write, a part deleted, the session deleted), reporting only what is newer', async () => {
      const first = await call('POST', '/v1/sessions/lp3', { body: JSON.stringify({ parts: { a: '1', b: '2' } }) });
      let after = first.json.version as string;

      const held = call('GET', `/v1/sessions/lp3/changes?after=${after}&timeout=120s`);
      await parked(node, 1);
      const baton = new BatonClient(node.apiAddress);
      try {
        await baton.put('lp3', { b: Buffer.from('22') });
      } finally {
        baton.close();
      }
      const woken = await held;
      expect(woken.status).toBe(200);
      expect((woken.json.changes as any[]).map((c) => [c.type, c.part.name, c.part.value])).toEqual([['put', 'b', '22']]);
      expect(BigInt(woken.json.version)).toBeGreaterThan(BigInt(after));
      after = woken.json.version;

      const heldDelete = call('GET', `/v1/sessions/lp3/changes?after=${after}`);
      await parked(node, 1);
      await call('DELETE', '/v1/sessions/lp3/parts/a');
      const deleted = await heldDelete;
      expect(deleted.status).toBe(200);
      expect((deleted.json.changes as any[]).map((c) => [c.type, c.part_name])).toEqual([['delete', 'a']]);
      after = deleted.json.version;

      const heldGone = call('GET', `/v1/sessions/lp3/changes?after=${after}`);
      await parked(node, 1);
      await call('DELETE', '/v1/sessions/lp3');
      const gone = await heldGone;
      expect([gone.status, gone.json.found]).toEqual([200, false]);
      expect((await node.scrape()).value('baton_http_long_polls')).toBe(0);
    });

    it('waits for a session that does not exist yet (after=0) and wakes on its first write', async () => {
      const held = call('GET', '/v1/sessions/lp4/changes');
      await parked(node, 1);
      await call('PUT', '/v1/sessions/lp4/parts/a', { body: 'hello' });
      const answer = await held;
      expect([answer.status, answer.json.found, answer.json.changes[0].part.value]).toEqual([200, true, 'hello']);
    });

    it('a poll whose client goes away is no longer parked', async () => {
      const controller = new AbortController();
      const held = fetch(`${node.httpUrl}/v1/sessions/lp5/changes?timeout=120s`, { signal: controller.signal }).catch((err: unknown) => err);
      await parked(node, 1);
      controller.abort();
      expect((await held as Error).name).toBe('AbortError');
      await parked(node, 0);
    });
  });

  test('cart: POST operations and GET the merged cart, answers as documented; bad operations 400, other methods 405', async () => {
    const json = { 'content-type': 'application/json' };
    const empty = await call('GET', '/v1/sessions/cart1/cart');
    expect(empty.json).toEqual({ cart: { items: [], currency: '', payment_reference: '', updated_at_unix_ms: '0' }, version: '0', replicas_acked: 0 });
    const operations = [
      { add_item: { sku: 'B-2', name: 'Bee', quantity: 2, unit_price_minor: '-5' } },
      { add_item: { sku: 'a1', quantity: 1, unit_price_minor: 300 } },
      { set_quantity: { sku: 'a1', quantity: 4 } },
      { set_currency: 'EUR' },
      { set_billing_address: { name: 'A. Buyer', line1: '1 Main St', postal_code: '12345', country: 'DE' } },
    ];
    const posted = await call('POST', '/v1/sessions/cart1/cart', { body: JSON.stringify({ operations, ttl_seconds: 60 }), headers: json });
    expect(posted.status).toBe(200);
    expect(posted.json.cart.items).toEqual([
      { sku: 'B-2', name: 'Bee', quantity: 2, unit_price_minor: '-5' },
      { sku: 'a1', name: '', quantity: 4, unit_price_minor: '300' },
    ]);
    expect(posted.json.cart.billing_address).toEqual({ name: 'A. Buyer', line1: '1 Main St', line2: '', city: '', region: '', postal_code: '12345', country: 'DE' });
    const removed = await call('POST', '/v1/sessions/cart1/cart', { body: JSON.stringify({ operations: [{ remove_item: { sku: 'B-2' } }] }), headers: json });
    expect(removed.json.cart.items.map((i: { sku: string }) => i.sku)).toEqual(['a1']);
    expect(BigInt(removed.json.version)).toBeGreaterThan(BigInt(posted.json.version));
    expect((await call('GET', '/v1/sessions/cart1/cart')).json.cart).toEqual(removed.json.cart);

    for (const body of [
      '[]',
      '{"operations": {}}',
      '{"operations": [{}]}',
      '{"operations": [{"add_item": {"sku": "x", "quantity": 1}, "remove_item": {"sku": "x"}}]}',
      '{"operations": [{"add_item": {"sku": "x", "quantity": 1, "colour": "red"}}]}',
      '{"operations": [{"add_item": {"sku": "", "quantity": 1}}]}',
      '{"operations": [{"add_item": {"sku": "x", "quantity": -1}}]}',
      '{"operations": [{"add_item": {"sku": "x", "quantity": 1, "unit_price_minor": "9223372036854775808"}}]}',
      '{"operations": [{"set_currency": 5}]}',
      `{"operations": [${Array.from({ length: MAX_PARTS + 1 }, (_, i) => `{"remove_item": {"sku": "s${i}"}}`).join(',')}]}`,
    ]) {
      const answer = await call('POST', '/v1/sessions/cart2/cart', { body, headers: json });
      expect([body, answer.status, answer.json.code]).toEqual([body, 400, 'invalid_argument']);
    }
    expect((await call('GET', '/v1/sessions/cart2/cart')).json.cart.items).toEqual([]);
    expect((await call('PUT', '/v1/sessions/cart2/cart', { body: '{}', headers: json })).status).toBe(405);
  });
});

describe('HTTP/JSON API lifecycle', () => {
  it('a drain answers parked long-polls 204 and the node exits cleanly', async () => {
    const draining = await startSidecar([]);
    try {
      const polls = [0, 1, 2].map((i) => call('GET', `/v1/sessions/drain-${i}/changes?timeout=300s`, {}, draining.httpUrl));
      await parked(draining, 3);
      const exit = draining.stop('SIGTERM');
      const answers = await Promise.all(polls);
      expect(answers.map((a) => a.status)).toEqual([204, 204, 204]);
      expect(await exit).toBe(0);
    } finally {
      await draining.stop();
    }
  });

  it('a taken --http-listen address fails the start, naming the flag', async () => {
    const holder = http.createServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
    const port = (holder.address() as { port: number }).port;
    try {
      const result = await runBaton(['sidecar', '--api-listen', '127.0.0.1:0', '--metrics-listen', '127.0.0.1:0', '--peer-listen', '127.0.0.1:0', '--http-listen', `127.0.0.1:${port}`]);
      expect(result.code).toBe(1);
      expect(result.stderr.trim()).toBe(`baton: cannot listen on --http-listen 127.0.0.1:${port}: address already in use`);
    } finally {
      holder.close();
    }
  });

  it('--http-listen off serves no HTTP API', async () => {
    const off = await startSidecar(['--http-listen', 'off']);
    try {
      expect(off.httpUrl).toBe('');
      const started = off.logs.find((l) => l.msg === 'baton node started')!;
      expect([started.http, started.http_port]).toEqual(['off', undefined]);
    } finally {
      await off.stop();
    }
  });
});
