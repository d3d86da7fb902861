/**
 * Session identity for the capture proxy: the session id is the value of one cookie.
 * A request without a usable id gets a new one: 128 random bits, base64url (22 characters).
 * Only ids of that form are accepted from clients, so a cookie cannot name an arbitrary
 * string as a session. The random bytes come from the caller (the proxy uses node:crypto),
 * so this file does no I/O.
 */

/** Random bytes in a session id (128 bits). */
export const SESSION_ID_BYTES = 16;

/** base64url of SESSION_ID_BYTES bytes, without padding. */
const SESSION_ID = /^[A-Za-z0-9_-]{22}$/;

/** Cookie names are RFC 6265 tokens. */
const COOKIE_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}$/;

export function isCookieName(name: string): boolean {
  return COOKIE_NAME.test(name);
}

export function isSessionId(value: string): boolean {
  return SESSION_ID.test(value);
}

/** A new session id from SESSION_ID_BYTES random bytes. */
export function mintSessionId(random: Uint8Array): string {
  if (random.length !== SESSION_ID_BYTES) throw new Error(`a session id needs ${SESSION_ID_BYTES} random bytes`);
  return Buffer.from(random).toString('base64url');
}

/**
 * The session id a request carries in cookie `name`, or undefined when it carries none of
 * baton's form. `cookie` is the Cookie header (HTTP/2 clients may send several, which the
 * caller passes as an array). With the cookie given twice, the first well-formed value wins.
 */
export function sessionIdFromCookies(cookie: string | readonly string[] | undefined, name: string): string | undefined {
  if (cookie === undefined) return undefined;
  const headers = typeof cookie === 'string' ? [cookie] : cookie;
  for (const header of headers) {
    for (const pair of header.split(';')) {
      const eq = pair.indexOf('=');
      if (eq < 0 || pair.slice(0, eq).trim() !== name) continue;
      let value = pair.slice(eq + 1).trim();
      if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1);
      if (isSessionId(value)) return value;
    }
  }
  return undefined;
}

/**
 * The Set-Cookie value that gives the client its session id: HttpOnly (scripts cannot read
 * it), SameSite=Lax (not sent on cross-site subrequests), Path=/ (every path of the site)
 * and Secure when the client reached baton over TLS. A session cookie: no Max-Age, the
 * session's idle expiry is baton's.
 */
export function sessionSetCookie(name: string, id: string, secure: boolean): string {
  return `${name}=${id}; Path=/; HttpOnly; SameSite=Lax${secure ? '; Secure' : ''}`;
}
