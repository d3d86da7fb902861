/**
 * Session ids that are not valid UTF-8 are refused on every API operation, and do not alias
 * the valid id U+FFFD "(" that the protobuf runtime used to substitute for all of them.
 */
import { BuzHash } from '../src/buzhash';
import { InvalidArgumentError } from '../src/errors';
import { DeleteRequest, ExchangeRequest, GetRequest, PutRequest, TouchRequest, WatchRequest } from '../src/gen/baton/v1/session';
import { HybridClock } from '../src/hybrid-clock';
import { SessionApi } from '../src/session-api';
import { DEFAULT_STORE_CONFIG, SessionStore } from '../src/store';
import { isWellFormedText } from '../src/strict-utf8';

const INVALID_IDS = [Buffer.from([0xc3, 0x28]), Buffer.from([0xc4, 0x28]), Buffer.from([0xff, 0x28]), Buffer.from([0xed, 0xa0, 0x80])];
const REPLACEMENT_ID = Buffer.from([0xef, 0xbf, 0xbd, 0x28]);
const T0 = 1_800_000_000_000;

/** Encodes a message with a placeholder id, then puts the raw id bytes in its place. */
function withRawId(encoded: Uint8Array, placeholder: string, raw: Buffer): Buffer {
  const bytes = Buffer.from(encoded);
  const at = bytes.indexOf(Buffer.from(placeholder));
  expect(at).toBeGreaterThan(0);
  expect(raw.length).toBe(placeholder.length);
  raw.copy(bytes, at);
  return bytes;
}

function api() {
  const store = new SessionStore({ ...DEFAULT_STORE_CONFIG, nodeId: 'utf8-a', partitions: 8 }, new BuzHash('utf8-test'), new HybridClock());
  return { store, api: new SessionApi(store, { maxValueBytes: 1024, maxPartsPerSession: 8 }) };
}

const part = { name: 'note', value: Buffer.from('x'), ifVersion: undefined };

describe('session ids that are not valid UTF-8', () => {
  test.each(INVALID_IDS.map((id) => [id.toString('hex'), id]))('%s is refused by put, get, delete and touch', (_hex, raw) => {
    const { api: sessions, store } = api();
    const p = '#'.repeat(raw.length);
    const put = PutRequest.decode(withRawId(PutRequest.encode({ sessionId: p, parts: [part], ttlSeconds: 0, minReplicas: 0 }).finish(), p, raw));
    expect(isWellFormedText(put.sessionId)).toBe(false);
    expect(() => sessions.put(put, T0)).toThrow(InvalidArgumentError);
    expect(() => sessions.put(put, T0)).toThrow('session_id is not valid UTF-8');
    const get = GetRequest.decode(withRawId(GetRequest.encode({ sessionId: p, parts: [], resume: false }).finish(), p, raw));
    expect(() => sessions.get(get, T0)).toThrow('session_id is not valid UTF-8');
    const del = DeleteRequest.decode(withRawId(DeleteRequest.encode({ sessionId: p, parts: [] }).finish(), p, raw));
    expect(() => sessions.delete(del, T0)).toThrow('session_id is not valid UTF-8');
    const touch = TouchRequest.decode(withRawId(TouchRequest.encode({ sessionId: p, ttlSeconds: 0 }).finish(), p, raw));
    expect(() => sessions.touch(touch, T0)).toThrow('session_id is not valid UTF-8');
    expect(store.getStats().sessions).toBe(0);
  });

  test('nested in an Exchange batch and in a Watch they decode as not well formed too', () => {
    const raw = INVALID_IDS[0]!;
    const op = { requestId: 1n, op: { $case: 'get' as const, get: { sessionId: '##', parts: [], resume: false } }, batch: [] };
    const exchange = ExchangeRequest.decode(withRawId(ExchangeRequest.encode({ requestId: 0n, op: undefined, batch: [op] }).finish(), '##', raw));
    const nested = exchange.batch[0]!.op;
    expect(nested?.$case === 'get' && isWellFormedText(nested.get.sessionId)).toBe(false);
    const watch = WatchRequest.decode(withRawId(WatchRequest.encode({ sessionId: '##' }).finish(), '##', raw));
    expect(isWellFormedText(watch.sessionId)).toBe(false);
  });

  test('the valid id U+FFFD "(" is its own session, not an alias of the invalid ones', () => {
    const { api: sessions, store } = api();
    const valid = PutRequest.decode(withRawId(PutRequest.encode({ sessionId: '####', parts: [part], ttlSeconds: 0, minReplicas: 0 }).finish(), '####', REPLACEMENT_ID));
    expect(valid.sessionId).toBe('\ufffd(');
    sessions.put(valid, T0);
    for (const raw of INVALID_IDS.slice(0, 3)) {
      const get = GetRequest.decode(withRawId(GetRequest.encode({ sessionId: '##', parts: [], resume: false }).finish(), '##', raw));
      expect(() => sessions.get(get, T0)).toThrow(InvalidArgumentError);
    }
    expect(store.getStats().sessions).toBe(1);
    expect(sessions.get({ sessionId: '\ufffd(', parts: [], resume: false }, T0)).toMatchObject({ found: true });
  });

  test('well-formed text passes, lone surrogates do not', () => {
    expect(isWellFormedText('caf\u00e9 \ud83d\ude00 \ufffd')).toBe(true);
    expect(isWellFormedText('a\ud83d')).toBe(false);
    expect(isWellFormedText('\ude00b')).toBe(false);
  });
});
