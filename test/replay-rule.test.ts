/**
 * Which requests may be re-injected (src/capture/replay-rule.ts) and the answers a session
 * remembers for Idempotency-Keys (src/capture/idempotency-answers.ts): bounds, lookups and
 * what does not decode.
 */
import { idempotencyKey, replayable } from '../src/capture/replay-rule';
import {
  decodeAnswers,
  lookupAnswer,
  MAX_REMEMBERED,
  MAX_REMEMBERED_BODY_BYTES,
  MAX_REMEMBERED_PART_BYTES,
  rememberAnswer,
  type Answer,
} from '../src/capture/idempotency-answers';

describe('replayable', () => {
  test('GET, HEAD, OPTIONS, PUT and DELETE are safe to repeat; POST and PATCH only with an Idempotency-Key', () => {
    for (const method of ['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE']) expect(replayable(method, {})).toBe(true);
    for (const method of ['POST', 'PATCH', 'CONNECT', 'TRACE', 'get']) expect(replayable(method, {})).toBe(false);
    expect(replayable('POST', { 'idempotency-key': 'a8098c1a-f86e-11da-bd1a-00112444be1e' })).toBe(true);
    expect(replayable('PATCH', { 'idempotency-key': 'k' })).toBe(true);
  });

  test('no x-baton-* header makes a request replayable, and an Upgrade never is', () => {
    expect(replayable('POST', { 'x-baton-replay': '1', 'x-baton-idempotency-key': 'k', 'x-baton-resumed-from': 'a' })).toBe(false);
    expect(replayable('GET', { upgrade: 'websocket', connection: 'upgrade' })).toBe(false);
  });

  test('an Idempotency-Key must be 1 to 255 visible ASCII characters, else it counts as none', () => {
    expect(idempotencyKey({ 'idempotency-key': '  key-1  ' })).toBe('key-1');
    expect(idempotencyKey({ 'idempotency-key': 'k'.repeat(255) })).toBe('k'.repeat(255));
    for (const bad of ['', '   ', 'k'.repeat(256), 'two words', 'caf\u00e9', 'a\u0000b']) {
      expect(idempotencyKey({ 'idempotency-key': bad })).toBeUndefined();
      expect(replayable('POST', { 'idempotency-key': bad })).toBe(false);
    }
  });
});

function answer(body: string | Buffer, status = 201): Answer {
  return { status, headers: [{ name: 'content-type', value: 'text/plain' }, { name: 'set-cookie', value: 'a=1' }, { name: 'set-cookie', value: 'b=2' }], body: Buffer.from(body) };
}

describe('remembered Idempotency-Key answers', () => {
  test('a remembered answer comes back whole for the same key, method and target; another request with the key is a mismatch', () => {
    const part = rememberAnswer(undefined, { key: 'k1', method: 'POST', target: '/orders', atUnixMs: 1 }, answer('created'))!;
    const found = lookupAnswer(part, 'k1', 'POST', '/orders');
    expect(found.kind).toBe('answer');
    if (found.kind !== 'answer') return;
    expect(found.answer.status).toBe(201);
    expect(Buffer.from(found.answer.body).toString()).toBe('created');
    expect(found.answer.headers).toEqual(answer('').headers);
    expect(lookupAnswer(part, 'k2', 'POST', '/orders')).toEqual({ kind: 'none' });
    expect(lookupAnswer(part, 'k1', 'POST', '/refunds')).toEqual({ kind: 'mismatch' });
    expect(lookupAnswer(part, 'k1', 'PUT', '/orders')).toEqual({ kind: 'mismatch' });
  });

  test('at most MAX_REMEMBERED answers: the oldest is forgotten first, a key remembered again moves to the newest', () => {
    let part: Uint8Array | undefined;
    for (let i = 0; i < MAX_REMEMBERED + 5; i++) part = rememberAnswer(part, { key: `k${i}`, method: 'POST', target: '/', atUnixMs: i }, answer(`a${i}`));
    const keys = decodeAnswers(part).map((a) => a.key);
    expect(keys).toHaveLength(MAX_REMEMBERED);
    expect(keys[0]).toBe('k5');
    expect(keys[keys.length - 1]).toBe(`k${MAX_REMEMBERED + 4}`);
    part = rememberAnswer(part, { key: 'k5', method: 'POST', target: '/', atUnixMs: 99 }, answer('again'));
    const after = decodeAnswers(part).map((a) => a.key);
    expect(after).toHaveLength(MAX_REMEMBERED);
    expect(after[after.length - 1]).toBe('k5');
    expect(after.filter((k) => k === 'k5')).toHaveLength(1);
  });

  test('a body over the cap is not remembered; large answers forget older ones so the part stays under its byte bound', () => {
    expect(rememberAnswer(undefined, { key: 'big', method: 'POST', target: '/', atUnixMs: 0 }, answer(Buffer.alloc(MAX_REMEMBERED_BODY_BYTES + 1)))).toBeUndefined();
    let part: Uint8Array | undefined;
    for (let i = 0; i < MAX_REMEMBERED; i++) {
      part = rememberAnswer(part, { key: `k${i}`, method: 'POST', target: '/', atUnixMs: i }, answer(Buffer.alloc(MAX_REMEMBERED_BODY_BYTES)))!;
      expect(part.length).toBeLessThanOrEqual(MAX_REMEMBERED_PART_BYTES);
    }
    const kept = decodeAnswers(part);
    expect(kept.length).toBeLessThan(MAX_REMEMBERED);
    expect(kept[kept.length - 1]!.key).toBe(`k${MAX_REMEMBERED - 1}`);
  });

  test('bytes that do not decode are no answers, never an error', () => {
    expect(decodeAnswers(Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f]))).toEqual([]);
    expect(lookupAnswer(Buffer.from('not protobuf at all, just text'), 'k', 'POST', '/').kind).toBe('none');
    const part = rememberAnswer(Buffer.from([0xff, 0xff]), { key: 'k', method: 'POST', target: '/', atUnixMs: 0 }, answer('ok'));
    expect(decodeAnswers(part).map((a) => a.key)).toEqual(['k']);
  });
});
