/**
 * The OpenAPI 3.1 document of the HTTP/JSON API, served at /v1/openapi.json. It is the
 * contract of http-api.ts: test/http-api.integration.test.ts checks every real response
 * against the schemas here, so a change to either that the other does not follow fails.
 * Schemas forbid fields they do not list, so a field added to a response must be added here.
 */

const decimal = { type: 'string', pattern: '^[0-9]+$' } as const;

const error = {
  type: 'object',
  required: ['code', 'message'],
  additionalProperties: false,
  properties: {
    code: {
      type: 'string',
      enum: ['invalid_argument', 'failed_precondition', 'resource_exhausted', 'not_found', 'unavailable', 'deadline_exceeded', 'internal', 'method_not_allowed', 'forbidden'],
    },
    message: { type: 'string' },
  },
} as const;

const part = {
  type: 'object',
  required: ['name', 'value_base64', 'version', 'writer_node_id', 'updated_at_unix_ms'],
  additionalProperties: false,
  properties: {
    name: { type: 'string' },
    value_base64: { type: 'string', contentEncoding: 'base64' },
    value: { type: 'string', description: 'The value as text, present when it is valid UTF-8.' },
    version: decimal,
    writer_node_id: { type: 'string' },
    updated_at_unix_ms: decimal,
  },
} as const;

const session = {
  type: 'object',
  required: ['session_id', 'owner_node_id', 'epoch', 'expires_at_unix_ms', 'parts'],
  additionalProperties: false,
  properties: {
    session_id: { type: 'string' },
    owner_node_id: { type: 'string' },
    epoch: decimal,
    expires_at_unix_ms: decimal,
    parts: { type: 'array', items: { $ref: '#/components/schemas/Part' } },
  },
} as const;

const putResult = {
  type: 'object',
  required: ['version', 'replicas_acked'],
  additionalProperties: false,
  properties: {
    version: decimal,
    versions: { type: 'object', additionalProperties: decimal },
    replicas_acked: { type: 'integer', minimum: 0 },
  },
} as const;

const putBody = {
  type: 'object',
  required: ['parts'],
  additionalProperties: false,
  properties: {
    parts: {
      type: 'object',
      description: 'Part name to value: UTF-8 text, {"value_base64": …} for bytes, or {"json": …} stored as its JSON text.',
      additionalProperties: {
        oneOf: [
          { type: 'string' },
          { type: 'object', required: ['value_base64'], additionalProperties: false, properties: { value_base64: { type: 'string' } } },
          { type: 'object', required: ['json'], additionalProperties: false, properties: { json: {} } },
        ],
      },
    },
    ttl_seconds: { type: 'integer', minimum: 0 },
    min_replicas: { type: 'integer', minimum: 0 },
    if_versions: { type: 'object', additionalProperties: decimal, description: 'Part name to the version it must have; "0" = must not exist.' },
  },
} as const;

const changes = {
  type: 'object',
  required: ['session_id', 'found', 'version', 'changes'],
  additionalProperties: false,
  properties: {
    session_id: { type: 'string' },
    found: { type: 'boolean', description: 'false when the session is gone (deleted, expired or evicted).' },
    version: { ...decimal, description: 'The newest version reported: pass it as `after` in the next poll.' },
    owner_node_id: { type: 'string' },
    epoch: decimal,
    changes: {
      type: 'array',
      items: {
        oneOf: [
          {
            type: 'object',
            required: ['type', 'part'],
            additionalProperties: false,
            properties: { type: { const: 'put' }, part: { $ref: '#/components/schemas/Part' } },
          },
          {
            type: 'object',
            required: ['type', 'part_name', 'version'],
            additionalProperties: false,
            properties: { type: { const: 'delete' }, part_name: { type: 'string' }, version: decimal },
          },
        ],
      },
    },
  },
} as const;

const signedDecimal = { type: 'string', pattern: '^-?[0-9]+$' } as const;
const int64Input = { oneOf: [signedDecimal, { type: 'integer' }] } as const;
const sku = { type: 'string', description: 'Item identifier, 1 to 256 bytes of UTF-8.' } as const;

const address = {
  type: 'object',
  additionalProperties: false,
  properties: Object.fromEntries(['name', 'line1', 'line2', 'city', 'region', 'postal_code', 'country'].map((f) => [f, { type: 'string' }])),
} as const;

const cart = {
  type: 'object',
  required: ['items', 'currency', 'payment_reference', 'updated_at_unix_ms'],
  additionalProperties: false,
  properties: {
    items: {
      type: 'array',
      description: 'By sku.',
      items: {
        type: 'object',
        required: ['sku', 'name', 'quantity', 'unit_price_minor'],
        additionalProperties: false,
        properties: { sku, name: { type: 'string' }, quantity: { type: 'integer', minimum: 1 }, unit_price_minor: signedDecimal },
      },
    },
    currency: { type: 'string' },
    billing_address: { $ref: '#/components/schemas/Address' },
    payment_reference: { type: 'string' },
    updated_at_unix_ms: decimal,
  },
} as const;

const cartBody = {
  type: 'object',
  additionalProperties: false,
  properties: {
    operations: {
      type: 'array',
      description: 'Applied in order; each object names exactly one operation.',
      items: {
        oneOf: [
          {
            type: 'object',
            required: ['add_item'],
            additionalProperties: false,
            properties: {
              add_item: {
                type: 'object',
                required: ['sku', 'quantity'],
                additionalProperties: false,
                description: 'Adds quantity (creating the item); a non-empty name or non-zero price replaces the item\'s.',
                properties: { sku, name: { type: 'string' }, quantity: { type: 'integer', minimum: 1 }, unit_price_minor: int64Input },
              },
            },
          },
          {
            type: 'object',
            required: ['set_quantity'],
            additionalProperties: false,
            properties: {
              set_quantity: {
                type: 'object',
                required: ['sku', 'quantity'],
                additionalProperties: false,
                description: 'Sets the quantity; 0 removes the item.',
                properties: { sku, quantity: { type: 'integer', minimum: 0 } },
              },
            },
          },
          {
            type: 'object',
            required: ['remove_item'],
            additionalProperties: false,
            properties: { remove_item: { type: 'object', required: ['sku'], additionalProperties: false, properties: { sku } } },
          },
          { type: 'object', required: ['set_billing_address'], additionalProperties: false, properties: { set_billing_address: { $ref: '#/components/schemas/Address' } } },
          { type: 'object', required: ['set_currency'], additionalProperties: false, properties: { set_currency: { type: 'string', description: 'ISO 4217, e.g. EUR.' } } },
        ],
      },
    },
    ttl_seconds: { type: 'integer', minimum: 0 },
    min_replicas: { type: 'integer', minimum: 0 },
  },
} as const;

const cartResult = {
  type: 'object',
  required: ['cart', 'version', 'replicas_acked'],
  additionalProperties: false,
  properties: {
    cart: { $ref: '#/components/schemas/Cart' },
    version: { ...decimal, description: 'Version of the write the operations made; "0" when nothing was written.' },
    replicas_acked: { type: 'integer', minimum: 0 },
  },
} as const;

const json = (ref: string) => ({ content: { 'application/json': { schema: { $ref: `#/components/schemas/${ref}` } } } });
const failure = (description: string) => ({ description, ...json('Error') });
const errors = {
  '400': failure('Invalid request (INVALID_ARGUMENT): bad id, part name, query value or JSON.'),
  '404': failure('No such session or part.'),
  '403': failure('The request came from a browser (it has an Origin header).'),
  '405': failure('Method not allowed on this path.'),
  '500': failure('Internal error.'),
  '503': failure('UNAVAILABLE: too few replicas or peers answered, or the node is shutting down.'),
} as const;
const sessionId = { name: 'id', in: 'path', required: true, description: 'Session id, percent-encoded UTF-8 (one path segment).', schema: { type: 'string' } };
const partName = { name: 'name', in: 'path', required: true, schema: { type: 'string', pattern: '^[a-z0-9_.-]{1,64}$' } };
const resume = { name: 'resume', in: 'query', schema: { type: 'boolean' }, description: 'Make this node the owner, fetching the newest state from peers.' };
const ttl = { name: 'ttl_seconds', in: 'query', schema: { type: 'integer', minimum: 0 } };
const minReplicas = { name: 'min_replicas', in: 'query', schema: { type: 'integer', minimum: 0 } };
const timeout = {
  name: 'timeout',
  in: 'query',
  schema: { type: 'string', pattern: '^[0-9]+(\\.[0-9]+)?(ms|s|m)?$' },
  description: 'How long the caller waits, e.g. 500ms (default 5s; at most 60s count): a resume stops waiting for peers, a synchronous write for acknowledgements, when it passes.',
};

export const HTTP_API_OPENAPI = {
  openapi: '3.1.0',
  info: { title: 'baton session API (HTTP/JSON)', version: '1' },
  paths: {
    '/v1/sessions/{id}': {
      parameters: [sessionId],
      get: {
        summary: 'Read a session',
        parameters: [resume, timeout, { name: 'parts', in: 'query', schema: { type: 'string' }, description: 'Comma-separated part names (default: all).' }],
        responses: { '200': { description: 'The session.', ...json('Session') }, ...errors },
      },
      post: {
        summary: 'Write several parts at once',
        parameters: [timeout],
        requestBody: { required: true, ...json('PutBody') },
        responses: {
          '200': { description: 'Written.', ...json('PutResult') },
          ...errors,
          '412': failure('An if_versions expectation did not hold.'),
          '413': failure('Body over the limit, or the write does not fit the memory budget.'),
          '504': failure('Deadline exceeded.'),
        },
      },
      delete: {
        summary: 'Delete a session',
        responses: { '200': { description: 'Deleted.', ...json('Found') }, ...errors },
      },
    },
    '/v1/sessions/{id}/parts/{name}': {
      parameters: [sessionId, partName],
      get: {
        summary: "One part's raw bytes",
        parameters: [resume, timeout, { name: 'If-None-Match', in: 'header', schema: { type: 'string' } }],
        responses: {
          '200': { description: 'The bytes; ETag is the quoted version.', headers: { ETag: { schema: { type: 'string' } } }, content: { 'application/octet-stream': { schema: {} } } },
          '304': { description: 'If-None-Match matched the current version.' },
          ...errors,
        },
      },
      put: {
        summary: 'Write one part: the body is the value (raw bytes, or JSON stored as its text)',
        parameters: [
          ttl,
          minReplicas,
          timeout,
          { name: 'If-Match', in: 'header', schema: { type: 'string' }, description: 'Quoted version the part must have.' },
          { name: 'If-None-Match', in: 'header', schema: { const: '*' }, description: 'The part must not exist.' },
        ],
        requestBody: { required: true, content: { 'application/octet-stream': { schema: {} } } },
        responses: {
          '200': { description: 'Written; ETag is the new version.', ...json('PutResult') },
          ...errors,
          '412': failure('If-Match / If-None-Match did not hold.'),
          '413': failure('Body over --max-value-bytes.'),
        },
      },
      delete: {
        summary: 'Delete one part',
        responses: { '200': { description: 'Deleted.', ...json('Found') }, ...errors },
      },
    },
    '/v1/sessions/{id}/touch': {
      parameters: [sessionId],
      post: {
        summary: "Refresh a session's expiry",
        parameters: [ttl],
        requestBody: { required: false, content: { 'application/json': { schema: { type: 'object', properties: { ttl_seconds: { type: 'integer', minimum: 0 } } } } } },
        responses: { '200': { description: 'The new expiry.', ...json('Touched') }, ...errors },
      },
    },
    '/v1/sessions/{id}/changes': {
      parameters: [sessionId],
      get: {
        summary: 'Long-poll for changes after a version',
        description:
          'Answers at once when the session has a part version newer than `after`; else holds the request until a change arrives (200) or `timeout` passes (204: poll again). A draining node answers parked polls 204 and new ones 503.',
        parameters: [
          { name: 'after', in: 'query', schema: { type: 'integer', minimum: 0 } },
          { name: 'timeout', in: 'query', schema: { type: 'string', pattern: '^[0-9]+(\\.[0-9]+)?(ms|s|m)?$' }, description: 'e.g. 30s, 500ms; at most 300s; default 30s.' },
        ],
        responses: {
          '200': { description: 'What changed.', ...json('Changes') },
          '204': { description: 'Nothing changed before the time-out (or the node is draining): poll again.' },
          ...errors,
          '429': failure('Too many long-polls are parked on this node.'),
        },
      },
    },
    '/v1/sessions/{id}/cart': {
      parameters: [sessionId],
      get: {
        summary: 'Read the merged cart (an empty cart when the session has none)',
        responses: { '200': { description: 'The cart.', ...json('CartResult') }, ...errors },
      },
      post: {
        summary: 'Update the merged cart item by item',
        description:
          'The cart is kept as one part per item (cart.item.<sku>) plus cart.meta, merged per item across nodes: pods updating different items concurrently keep each other\'s changes, and a removal is not undone by an older add. Concurrent changes to the same item resolve last writer wins. The part "cart" (a whole CartState written with PUT/POST) is separate and not read here.',
        parameters: [timeout],
        requestBody: { required: true, ...json('CartBody') },
        responses: {
          '200': { description: 'Applied; the cart this node then holds.', ...json('CartResult') },
          ...errors,
          '413': failure('Body over the limit, or the write does not fit the memory budget.'),
          '504': failure('Deadline exceeded.'),
        },
      },
    },
    '/v1/openapi.json': {
      get: { summary: 'This document', responses: { '200': { description: 'OpenAPI 3.1', content: { 'application/json': { schema: { type: 'object' } } } } } },
    },
  },
  components: {
    schemas: {
      Error: error,
      Part: part,
      Session: session,
      PutBody: putBody,
      PutResult: putResult,
      Changes: changes,
      Address: address,
      Cart: cart,
      CartBody: cartBody,
      CartResult: cartResult,
      Found: { type: 'object', required: ['found'], additionalProperties: false, properties: { found: { const: true } } },
      Touched: { type: 'object', required: ['expires_at_unix_ms'], additionalProperties: false, properties: { expires_at_unix_ms: decimal } },
    },
  },
} as const;
