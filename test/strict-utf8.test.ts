/**
 * Session ids that are not valid UTF-8 are refused with INVALID_ARGUMENT on every
 * SessionService method, and do not alias the valid id U+FFFD "(" that the protobuf runtime
 * used to substitute for all of them.
 */
import { status } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { PROTO_ROOT } from '../sidecar/config/package-root';
import { RefusedRequest } from '../sidecar/net/request-limits';
import { sessionRequestScanner, sessionServiceDefinition } from '../sidecar/servers/session-service';
import { DeleteRequest, ExchangeRequest, GetRequest, PutRequest, TouchRequest, WatchRequest } from '../src/gen/baton/v1/session';
import { Utf8Error } from '../src/wire/strict-utf8';

const INVALID_IDS = [Buffer.from([0xc3, 0x28]), Buffer.from([0xc4, 0x28]), Buffer.from([0xff, 0x28]), Buffer.from([0xed, 0xa0, 0x80])];
const REPLACEMENT_ID = Buffer.from([0xef, 0xbf, 0xbd, 0x28]);

const definitions = loadSync(['baton/v1/session.proto'], { includeDirs: [PROTO_ROOT], keepCase: true });
const service = sessionServiceDefinition(sessionRequestScanner(definitions, 8));

/** Encodes a message with a placeholder id, then puts the raw id bytes in its place. */
function withRawId(encoded: Uint8Array, raw: Buffer): Buffer {
  const bytes = Buffer.from(encoded);
  const placeholder = Buffer.from('#'.repeat(raw.length));
  const at = bytes.indexOf(placeholder);
  if (at < 0) throw new Error('placeholder not found');
  raw.copy(bytes, at);
  return bytes;
}

const part = { name: 'note', value: Buffer.from('x'), ifVersion: undefined };

function requests(raw: Buffer): [string, (bytes: Buffer) => unknown, Buffer][] {
  const p = '#'.repeat(raw.length);
  const op = { requestId: 1n, op: { $case: 'get' as const, get: { sessionId: p, parts: [], resume: false } }, deadlineMs: 0, batch: [] };
  return [
    ['put', service.put.requestDeserialize, withRawId(PutRequest.encode({ sessionId: p, parts: [part], ttlSeconds: 0, minReplicas: 0 }).finish(), raw)],
    ['get', service.get.requestDeserialize, withRawId(GetRequest.encode({ sessionId: p, parts: [], resume: true }).finish(), raw)],
    ['delete', service.delete.requestDeserialize, withRawId(DeleteRequest.encode({ sessionId: p, parts: [] }).finish(), raw)],
    ['touch', service.touch.requestDeserialize, withRawId(TouchRequest.encode({ sessionId: p, ttlSeconds: 0 }).finish(), raw)],
    ['watch', service.watch.requestDeserialize, withRawId(WatchRequest.encode({ sessionId: p }).finish(), raw)],
    ['exchange batch', service.exchange.requestDeserialize, withRawId(ExchangeRequest.encode({ requestId: 0n, op: undefined, deadlineMs: 0, batch: [op] }).finish(), raw)],
  ];
}

describe('session ids that are not valid UTF-8', () => {
  test.each(INVALID_IDS.map((id) => [id.toString('hex'), id] as const))('%s is refused with INVALID_ARGUMENT by every method', (_hex, raw) => {
    for (const [method, deserialize, bytes] of requests(raw)) {
      const decoded = deserialize(bytes);
      expect([method, decoded instanceof RefusedRequest]).toEqual([method, true]);
      expect((decoded as RefusedRequest).code).toBe(status.INVALID_ARGUMENT);
      expect((decoded as RefusedRequest).details).toMatch(/not valid UTF-8/);
    }
  });

  test('the generated decoders throw a Utf8Error rather than substitute U+FFFD', () => {
    for (const raw of INVALID_IDS) {
      expect(() => GetRequest.decode(withRawId(GetRequest.encode({ sessionId: '#'.repeat(raw.length), parts: [], resume: false }).finish(), raw))).toThrow(Utf8Error);
    }
  });

  test('the valid id U+FFFD "(" decodes as itself', () => {
    const decoded = service.get.requestDeserialize(withRawId(GetRequest.encode({ sessionId: '####', parts: [], resume: false }).finish(), REPLACEMENT_ID));
    expect(decoded).toMatchObject({ sessionId: '\ufffd(' });
  });
});
