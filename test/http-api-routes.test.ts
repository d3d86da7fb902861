/**
 * The HTTP/JSON API's pure parts: routing, percent-decoding of ids, query values, request
 * bodies, entity tags and the error → status mapping. The server itself is tested against a
 * real sidecar in http-api.integration.test.ts.
 */
import {
  DeadlineExceededError,
  InvalidArgumentError,
  PreconditionFailedError,
  ResourceExhaustedError,
  UnavailableError,
} from '../src/wire/errors';
import {
  etagMatches,
  HttpError,
  httpErrorOf,
  ifVersionOf,
  MAX_POLL_TIMEOUT_MS,
  parseDurationMs,
  putRequestFromJson,
  queryBoolean,
  queryInteger,
  queryParts,
  routeOf,
} from '../sidecar/servers/http-api-routes';

function failure(fn: () => unknown): Error {
  try {
    fn();
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a failure');
}

describe('routeOf', () => {
  it.each([
    ['GET', '/v1/sessions/abc', { kind: 'get-session', sessionId: 'abc' }],
    ['HEAD', '/v1/sessions/abc?resume=true', { kind: 'get-session', sessionId: 'abc' }],
    ['POST', '/v1/sessions/abc', { kind: 'put-session', sessionId: 'abc' }],
    ['DELETE', '/v1/sessions/abc', { kind: 'delete-session', sessionId: 'abc' }],
    ['POST', '/v1/sessions/abc/touch', { kind: 'touch', sessionId: 'abc' }],
    ['GET', '/v1/sessions/abc/changes?after=5', { kind: 'changes', sessionId: 'abc' }],
    ['GET', '/v1/sessions/abc/parts/cart', { kind: 'get-part', sessionId: 'abc', part: 'cart' }],
    ['PUT', '/v1/sessions/abc/parts/cart', { kind: 'put-part', sessionId: 'abc', part: 'cart' }],
    ['DELETE', '/v1/sessions/abc/parts/cart', { kind: 'delete-part', sessionId: 'abc', part: 'cart' }],
    ['GET', '/v1/openapi.json', { kind: 'openapi' }],
    // Ids are one percent-encoded segment, decoded as UTF-8.
    ['GET', '/v1/sessions/a%2Fb%20c', { kind: 'get-session', sessionId: 'a/b c' }],
    ['GET', '/v1/sessions/%E2%9C%93', { kind: 'get-session', sessionId: '\u2713' }],
    ['GET', '/v1/sessions/touch', { kind: 'get-session', sessionId: 'touch' }],
  ])('%s %s', (method, url, route) => {
    expect(routeOf(method, url).route).toEqual(route);
  });

  it('keeps the query', () => {
    expect(routeOf('GET', '/v1/sessions/x/changes?after=7&timeout=2s').query.get('timeout')).toBe('2s');
  });

  it.each([
    ['GET', '/'],
    ['GET', '/v2/sessions/x'],
    ['GET', '/v1/sessions'],
    ['GET', '/v1/sessions/x/other'],
    ['GET', '/v1/sessions/x/parts'],
    ['GET', '/v1/sessions/x/parts/a/b'],
    ['GET', '/v1/sessions/x/items/a'],
  ])('%s %s is 404', (method, url) => {
    const err = failure(() => routeOf(method, url)) as HttpError;
    expect([err.status, err.code]).toEqual([404, 'not_found']);
  });

  it.each([
    ['PUT', '/v1/sessions/x', 'GET, HEAD, POST, DELETE'],
    ['POST', '/v1/sessions/x/parts/a', 'GET, HEAD, PUT, DELETE'],
    ['GET', '/v1/sessions/x/touch', 'POST'],
    ['POST', '/v1/sessions/x/changes', 'GET'],
    ['DELETE', '/v1/openapi.json', 'GET, HEAD'],
  ])('%s %s is 405 with Allow', (method, url, allow) => {
    const err = failure(() => routeOf(method, url)) as HttpError;
    expect([err.status, err.headers.allow]).toEqual([405, allow]);
  });

  it('refuses ids that are not percent-encoded UTF-8 (400)', () => {
    for (const url of ['/v1/sessions/%ff', '/v1/sessions/%ED%A0%80', '/v1/sessions/%', '/v1/sessions/x/parts/%c3%28']) {
      const err = failure(() => routeOf('GET', url));
      expect(err).toBeInstanceOf(InvalidArgumentError);
      expect(httpErrorOf(err).status).toBe(400);
    }
  });
});

describe('httpErrorOf', () => {
  it.each([
    [new InvalidArgumentError('x'), 400, 'invalid_argument'],
    [new PreconditionFailedError('x'), 412, 'failed_precondition'],
    [new ResourceExhaustedError('x'), 413, 'resource_exhausted'],
    [new UnavailableError('x'), 503, 'unavailable'],
    [new DeadlineExceededError('x'), 504, 'deadline_exceeded'],
  ])('%p → %i', (err, status, code) => {
    const e = httpErrorOf(err);
    expect([e.status, e.code, e.message]).toEqual([status, code, 'x']);
  });

  it('hides what is not a baton error behind a 500', () => {
    const e = httpErrorOf(new TypeError('secret detail'));
    expect([e.status, e.code]).toEqual([500, 'internal']);
    expect(e.message).not.toContain('secret');
  });
});

describe('query values', () => {
  const q = (text: string) => new URLSearchParams(text);

  it('whole numbers', () => {
    expect(queryInteger(q(''), 'after', 0)).toBe(0);
    expect(queryInteger(q('after=42'), 'after', 0)).toBe(42);
    for (const bad of ['-1', '1.5', 'x', '1e3', '99999999999999999']) {
      expect(failure(() => queryInteger(q(`after=${bad}`), 'after', 0))).toBeInstanceOf(InvalidArgumentError);
    }
    expect(failure(() => queryInteger(q('min_replicas=2000'), 'min_replicas', 0, 1024)).message).toMatch(/from 0 to 1024/);
  });

  it('booleans', () => {
    expect(queryBoolean(q(''), 'resume')).toBe(false);
    expect(queryBoolean(q('resume=true'), 'resume')).toBe(true);
    expect(queryBoolean(q('resume=1'), 'resume')).toBe(true);
    expect(queryBoolean(q('resume=false'), 'resume')).toBe(false);
    expect(failure(() => queryBoolean(q('resume=yes'), 'resume'))).toBeInstanceOf(InvalidArgumentError);
  });

  it('durations', () => {
    expect(parseDurationMs('30s', 'timeout')).toBe(30_000);
    expect(parseDurationMs('30', 'timeout')).toBe(30_000);
    expect(parseDurationMs('250ms', 'timeout')).toBe(250);
    expect(parseDurationMs('1.5s', 'timeout')).toBe(1500);
    expect(parseDurationMs('2m', 'timeout')).toBe(120_000);
    expect(parseDurationMs('0s', 'timeout')).toBe(0);
    expect(parseDurationMs(`${MAX_POLL_TIMEOUT_MS / 1000}s`, 'timeout')).toBe(MAX_POLL_TIMEOUT_MS);
    for (const bad of ['', '-1s', '10h', 'soon', '301s', '6m']) expect(failure(() => parseDurationMs(bad, 'timeout'))).toBeInstanceOf(InvalidArgumentError);
  });

  it('part lists', () => {
    expect(queryParts(q('parts=a,b&parts=c'))).toEqual(['a', 'b', 'c']);
    expect(queryParts(q(''))).toEqual([]);
  });
});

describe('entity tags', () => {
  it('If-None-Match matches the quoted version, weak or in a list, or *', () => {
    expect(etagMatches('"17"', 17)).toBe(true);
    expect(etagMatches('W/"17"', 17)).toBe(true);
    expect(etagMatches('"3", "17"', 17)).toBe(true);
    expect(etagMatches('*', 17)).toBe(true);
    expect(etagMatches('"16"', 17)).toBe(false);
    expect(etagMatches('17', 17)).toBe(false);
    expect(etagMatches(undefined, 17)).toBe(false);
  });

  it('If-Match is the version a write expects; If-None-Match: * is "must not exist"', () => {
    expect(ifVersionOf('"123"', undefined)).toBe(123n);
    expect(ifVersionOf(undefined, '*')).toBe(0n);
    expect(ifVersionOf(undefined, undefined)).toBeUndefined();
    expect(failure(() => ifVersionOf('123', undefined))).toBeInstanceOf(InvalidArgumentError);
    expect(failure(() => ifVersionOf('"1", "2"', undefined))).toBeInstanceOf(InvalidArgumentError);
    expect(failure(() => ifVersionOf(undefined, '"5"'))).toBeInstanceOf(InvalidArgumentError);
    expect(failure(() => ifVersionOf('"1"', '*'))).toBeInstanceOf(InvalidArgumentError);
  });
});

describe('putRequestFromJson', () => {
  it('reads text, base64 and JSON values, ttl, min_replicas and if_versions', () => {
    const request = putRequestFromJson('s', {
      parts: { a: 'héllo', b: { value_base64: 'AAEC' }, c: { json: { k: [1, 2] } } },
      ttl_seconds: 60,
      min_replicas: 1,
      if_versions: { a: '0', b: 42 },
    });
    expect(request.sessionId).toBe('s');
    expect(request.ttlSeconds).toBe(60);
    expect(request.minReplicas).toBe(1);
    expect(request.parts.map((p) => [p.name, p.value.toString('hex'), p.ifVersion])).toEqual([
      ['a', Buffer.from('héllo').toString('hex'), 0n],
      ['b', '000102', 42n],
      ['c', Buffer.from('{"k":[1,2]}').toString('hex'), undefined],
    ]);
  });

  it.each([
    ['not an object', []],
    ['null', null],
    ['no parts', {}],
    ['parts as an array', { parts: ['a'] }],
    ['a number value', { parts: { a: 1 } }],
    ['an object value of another shape', { parts: { a: { value: 'x' } } }],
    ['base64 that is not', { parts: { a: { value_base64: 'A*==' } } }],
    ['unpadded base64', { parts: { a: { value_base64: 'AAE' } } }],
    ['an unknown field', { parts: { a: 'x' }, ttl: 5 }],
    ['a negative ttl', { parts: { a: 'x' }, ttl_seconds: -1 }],
    ['a fractional min_replicas', { parts: { a: 'x' }, min_replicas: 1.5 }],
    ['a version of a part not written', { parts: { a: 'x' }, if_versions: { b: '1' } }],
    ['a version that is not a number', { parts: { a: 'x' }, if_versions: { a: 'v1' } }],
  ])('refuses %s (400)', (_what, body) => {
    expect(failure(() => putRequestFromJson('s', body))).toBeInstanceOf(InvalidArgumentError);
  });
});
