import { isCookieName, isSessionId, mintSessionId, SESSION_ID_BYTES, sessionIdFromCookies, sessionSetCookie } from '../src/capture/session-cookie';
import { SeededRandom } from '../src/store/random';

function seededRandom(seed: number): (n: number) => Uint8Array {
  const random = new SeededRandom(seed);
  return (n) => Uint8Array.from({ length: n }, () => random.below(256));
}

describe('session identity', () => {
  test('a minted id is 128 random bits in base64url, and is accepted back', () => {
    const random = seededRandom(7);
    const ids = new Set<string>();
    for (let i = 0; i < 200; i++) {
      const id = mintSessionId(random(SESSION_ID_BYTES));
      expect(id).toMatch(/^[A-Za-z0-9_-]{22}$/);
      expect(Buffer.from(id, 'base64url')).toHaveLength(16);
      expect(isSessionId(id)).toBe(true);
      ids.add(id);
    }
    expect(ids.size).toBe(200);
    expect(() => mintSessionId(new Uint8Array(8))).toThrow(/16 random bytes/);
  });

  test('the cookie is found among others, quoted or not, in one header or several', () => {
    const id = 'AAAAAAAAAAAAAAAAAAAAAA';
    expect(sessionIdFromCookies(`a=1; baton_sid=${id}; b=2`, 'baton_sid')).toBe(id);
    expect(sessionIdFromCookies(`baton_sid="${id}"`, 'baton_sid')).toBe(id);
    expect(sessionIdFromCookies(['a=1', `baton_sid=${id}`], 'baton_sid')).toBe(id);
    expect(sessionIdFromCookies(`other_sid=${id}`, 'baton_sid')).toBeUndefined();
    expect(sessionIdFromCookies(undefined, 'baton_sid')).toBeUndefined();
  });

  test('a cookie value not of baton form names no session (a client cannot pick an arbitrary id)', () => {
    for (const value of ['', 'short', 'A'.repeat(23), 'AAAAAAAAAAAAAAAAAAAAA=', 'AAAAAAAAAAAAAAAAAAAA/+', 'x'.repeat(10_000)]) {
      expect(sessionIdFromCookies(`baton_sid=${value}`, 'baton_sid')).toBeUndefined();
    }
    // The first well-formed value wins when the cookie is given twice.
    expect(sessionIdFromCookies('baton_sid=bad; baton_sid=BBBBBBBBBBBBBBBBBBBBBB', 'baton_sid')).toBe('BBBBBBBBBBBBBBBBBBBBBB');
  });

  test('Set-Cookie: HttpOnly, SameSite=Lax, Path=/, Secure only under TLS', () => {
    expect(sessionSetCookie('baton_sid', 'X', true)).toBe('baton_sid=X; Path=/; HttpOnly; SameSite=Lax; Secure');
    expect(sessionSetCookie('baton_sid', 'X', false)).toBe('baton_sid=X; Path=/; HttpOnly; SameSite=Lax');
  });

  test('cookie names are RFC 6265 tokens', () => {
    expect(isCookieName('baton_sid')).toBe(true);
    expect(isCookieName('__Host-sid')).toBe(true);
    for (const bad of ['', 'a b', 'a;b', 'a=b', 'é']) expect(isCookieName(bad)).toBe(false);
  });
});
