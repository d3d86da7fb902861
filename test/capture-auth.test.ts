import {
  activeLogin,
  applyDeclaration,
  authDeclaration,
  bearerToken,
  CLIENT_CERT_CLAIM,
  decodeAuth,
  encodeAuth,
  jwtClaims,
  MAX_BEARER_TOKEN,
  withBearer,
  withClientCert,
} from '../src/capture/auth-capture';
import { checkWellKnownPart } from '../src/wire/well-known-parts';

const NOW = 1_700_000_000_000;

function jwt(payload: object): string {
  const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(payload)}.c2lnbmF0dXJl`;
}

describe('auth declarations from the web server', () => {
  test('a subject with scopes and expiry is a login; an empty subject a logout; no header nothing', () => {
    expect(authDeclaration({ 'x-baton-auth-subject': 'alice', 'x-baton-auth-scopes': 'read, write admin', 'x-baton-auth-expires': '1700000600' })).toEqual({
      kind: 'login',
      subject: 'alice',
      scopes: ['read', 'write', 'admin'],
      expiresAtUnixMs: 1_700_000_600_000,
    });
    expect(authDeclaration({ 'x-baton-auth-subject': '' })).toEqual({ kind: 'logout' });
    expect(authDeclaration({ 'content-type': 'text/html' })).toBeUndefined();
  });

  test('too long, control characters or a bad expiry make the declaration invalid (ignored)', () => {
    expect(authDeclaration({ 'x-baton-auth-subject': 'a'.repeat(1025) })).toEqual({ kind: 'invalid', reason: 'subject' });
    expect(authDeclaration({ 'x-baton-auth-subject': 'a\u0001b' })).toEqual({ kind: 'invalid', reason: 'subject' });
    expect(authDeclaration({ 'x-baton-auth-subject': 'a', 'x-baton-auth-expires': 'soon' })).toEqual({ kind: 'invalid', reason: 'expires' });
    expect(authDeclaration({ 'x-baton-auth-subject': 'a', 'x-baton-auth-scopes': Array.from({ length: 65 }, (_, i) => `s${i}`).join(' ') })).toEqual({ kind: 'invalid', reason: 'scopes' });
  });

  test('login is active until logout or expiry; a login keeps a captured token, a logout clears all', () => {
    const withToken = withBearer(undefined, 'tok', {});
    const login = applyDeclaration(withToken, { kind: 'login', subject: 'alice', scopes: ['r'], expiresAtUnixMs: NOW + 1000 }, NOW);
    expect(login.token).toBe('tok');
    expect(login.issuedAtUnixMs).toBe(BigInt(NOW));
    expect(activeLogin(login, NOW)).toEqual({ subject: 'alice', scopes: ['r'] });
    expect(activeLogin(login, NOW + 1000)).toBeUndefined();
    const forever = applyDeclaration(undefined, { kind: 'login', subject: 'bob', scopes: [], expiresAtUnixMs: 0 }, NOW);
    expect(activeLogin(forever, NOW + 10 ** 12)).toEqual({ subject: 'bob', scopes: [] });
    const out = applyDeclaration(login, { kind: 'logout' }, NOW);
    expect(activeLogin(out, NOW)).toBeUndefined();
    expect(out.token).toBe('');
    expect(applyDeclaration(login, { kind: 'invalid', reason: 'subject' }, NOW)).toEqual(login);
  });

  test('the part round-trips and is a valid well-known auth part', () => {
    const state = applyDeclaration(withBearer(undefined, jwt({ sub: 'x' }), jwtClaims(jwt({ sub: 'x' }))), { kind: 'login', subject: 'alice', scopes: ['a'], expiresAtUnixMs: 5000 }, NOW);
    const bytes = encodeAuth(state);
    expect(checkWellKnownPart('auth', bytes)).toBeUndefined();
    expect(decodeAuth(bytes)).toEqual(state);
    expect(decodeAuth(Buffer.from([0xff, 0xff]))).toBeUndefined();
    expect(decodeAuth(undefined)).toBeUndefined();
  });
});

describe('bearer tokens', () => {
  test('a JWT is captured with sub, exp, iat and scope decoded but never as the subject', () => {
    const token = jwt({ sub: 'mallory', exp: 1700000600, iat: 1700000000, scope: ['admin', 'root'], other: 'x' });
    const captured = bearerToken(`Bearer ${token}`);
    expect(captured).toEqual({ kind: 'token', token, claims: { jwt_sub: 'mallory', jwt_exp: '1700000600', jwt_iat: '1700000000', jwt_scope: 'admin root' } });
    const state = withBearer(undefined, token, captured!.kind === 'token' ? captured!.claims : {});
    expect(state.subject).toBe('');
    expect(state.tokenType).toBe('Bearer');
    expect(activeLogin(state, NOW)).toBeUndefined();
  });

  test('an opaque token is captured without claims; other schemes and junk are not tokens', () => {
    expect(bearerToken('bearer abc.def')).toEqual({ kind: 'token', token: 'abc.def', claims: {} });
    expect(bearerToken('Basic dXNlcjpwYXNz')).toBeUndefined();
    expect(bearerToken(undefined)).toBeUndefined();
    expect(bearerToken('Bearer a"b')).toEqual({ kind: 'invalid', reason: 'malformed' });
    expect(bearerToken(`Bearer ${'a'.repeat(MAX_BEARER_TOKEN + 1)}`)).toEqual({ kind: 'invalid', reason: 'too_long' });
  });

  test('a JWT whose payload is not a JSON object yields no claims; a new token replaces the old claims', () => {
    expect(jwtClaims('a.b.c')).toEqual({});
    expect(jwtClaims(`x.${Buffer.from('[1]').toString('base64url')}.y`)).toEqual({});
    expect(jwtClaims(`x.${Buffer.from('{"sub":{"nested":1}}').toString('base64url')}.y`)).toEqual({});
    const first = withClientCert(withBearer(undefined, 't1', { jwt_sub: 'a', jwt_exp: '1' }), 'CN=x')!;
    const second = withBearer(first, 't2', { jwt_sub: 'b' });
    expect(second.claims).toEqual({ jwt_sub: 'b', [CLIENT_CERT_CLAIM]: 'CN=x' });
  });

  test('a client certificate subject is kept in claims; an unusable one is refused', () => {
    expect(withClientCert(undefined, 'CN=alice,O=Shop')!.claims[CLIENT_CERT_CLAIM]).toBe('CN=alice,O=Shop');
    expect(withClientCert(undefined, 'x'.repeat(2000))).toBeUndefined();
  });
});
