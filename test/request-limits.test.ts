/**
 * The pre-decode scan of requests: what it counts (elements of repeated fields, packed
 * scalars per element, repeats of singular fields, every field of nested messages) and that
 * a request within the limits passes unchanged.
 */
import { status } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { PROTO_ROOT } from '../sidecar/config/package-root';
import { guarded, RefusedRequest, RequestScanner } from '../sidecar/net/request-limits';
import { DigestsRequest, LookupRequest } from '../src/gen/baton/v1/peer';
import { ExchangeRequest, GetRequest, PutRequest } from '../src/gen/baton/v1/session';

const definitions = loadSync(['baton/v1/session.proto', 'baton/v1/peer.proto'], { includeDirs: [PROTO_ROOT], keepCase: true });
const scanner = new RequestScanner(definitions, { 'baton.v1.ExchangeRequest.batch': 4, 'baton.v1.DigestsRequest.partitions': 10 }, 3, 100);

const part = (name: string) => ({ name, value: Buffer.from('v'), ifVersion: undefined });
const put = (parts: number) => PutRequest.encode({ sessionId: 's', parts: Array.from({ length: parts }, (_, i) => part(`p${i}`)), ttlSeconds: 0, minReplicas: 0 }).finish();
const getOp = (i: number) => ({ requestId: BigInt(i), op: { $case: 'get' as const, get: { sessionId: `s${i}`, parts: [], resume: false } }, deadlineMs: 0, batch: [] });

describe('RequestScanner', () => {
  test('a repeated field may hold up to its limit', () => {
    expect(scanner.check(put(3), 'baton.v1.PutRequest')).toBeUndefined();
    expect(scanner.check(put(4), 'baton.v1.PutRequest')).toBe('baton.v1.PutRequest.parts holds more than 3 elements');
  });

  test('a field-specific limit applies to that field', () => {
    const ok = ExchangeRequest.encode({ requestId: 0n, op: undefined, deadlineMs: 0, batch: [1, 2, 3, 4].map(getOp) }).finish();
    const over = ExchangeRequest.encode({ requestId: 0n, op: undefined, deadlineMs: 0, batch: [1, 2, 3, 4, 5].map(getOp) }).finish();
    expect(scanner.check(ok, 'baton.v1.ExchangeRequest')).toBeUndefined();
    expect(scanner.check(over, 'baton.v1.ExchangeRequest')).toBe('baton.v1.ExchangeRequest.batch holds more than 4 elements');
  });

  test('limits apply inside nested messages', () => {
    const nested = ExchangeRequest.encode({ requestId: 0n, op: undefined, deadlineMs: 0, batch: [{ requestId: 1n, op: { $case: 'get', get: { sessionId: 's', parts: ['a', 'b', 'c', 'd'], resume: false } }, deadlineMs: 0, batch: [] }] }).finish();
    expect(scanner.check(nested, 'baton.v1.ExchangeRequest')).toBe('baton.v1.GetRequest.parts holds more than 3 elements');
  });

  test('packed repeated scalars count per element, fixed and varint widths alike', () => {
    expect(scanner.check(DigestsRequest.encode({ partitions: [1, 2, 300, 70000, 5, 6, 7, 8, 9, 10] }).finish(), 'baton.v1.DigestsRequest')).toBeUndefined();
    expect(scanner.check(DigestsRequest.encode({ partitions: Array.from({ length: 11 }, (_, i) => i * 1000) }).finish(), 'baton.v1.DigestsRequest')).toBe(
      'baton.v1.DigestsRequest.partitions holds more than 10 elements',
    );
  });

  test('a singular field repeated on the wire counts too (protobuf merges repeats)', () => {
    const one = GetRequest.encode({ sessionId: 'abc', parts: [], resume: false }).finish();
    const repeated = Buffer.concat(Array.from({ length: 4 }, () => Buffer.from(one)));
    expect(scanner.check(Buffer.concat([one, one, one]), 'baton.v1.GetRequest')).toBeUndefined();
    expect(scanner.check(repeated, 'baton.v1.GetRequest')).toBe('baton.v1.GetRequest.session_id is repeated 4 times');
  });

  test('the fields of the whole message are bounded', () => {
    const ids = LookupRequest.encode({ requestId: 1n, sessionIds: ['a', 'b', 'c'], claimantNodeId: '' }).finish();
    // 3 ids per message; 40 messages concatenated merge into one with 120 ids and 40 request ids.
    const big = Buffer.concat(Array.from({ length: 40 }, () => Buffer.from(ids)));
    const roomy = new RequestScanner(definitions, {}, 1000, 100);
    expect(roomy.check(big, 'baton.v1.LookupRequest')).toBe('the message holds more than 100 fields');
  });

  test('malformed data is left to the decoder', () => {
    expect(scanner.check(Buffer.from([0x0a, 0xff, 0xff]), 'baton.v1.GetRequest')).toBeUndefined();
    expect(scanner.check(Buffer.from([0x0b]), 'baton.v1.GetRequest')).toBeUndefined();
  });
});

describe('guarded deserializers', () => {
  test('refuse over a limit with RESOURCE_EXHAUSTED, unread', () => {
    const neverDecodes = {
      requestDeserialize: (): PutRequest => {
        throw new Error('a refused request must not be decoded');
      },
    };
    const refused = guarded(neverDecodes, 'baton.v1.PutRequest', scanner, (d) => d)(Buffer.from(put(9)));
    expect(refused).toBeInstanceOf(RefusedRequest);
    expect((refused as RefusedRequest).code).toBe(status.RESOURCE_EXHAUSTED);
  });

  test('answer INTERNAL for data that does not decode, as grpc-js does', () => {
    const refused = guarded({ requestDeserialize: (b: Buffer) => PutRequest.decode(b) }, 'baton.v1.PutRequest', scanner, (d) => d)(Buffer.from([0x0a, 0x05, 0x61]));
    expect((refused as RefusedRequest).code).toBe(status.INTERNAL);
  });
});
