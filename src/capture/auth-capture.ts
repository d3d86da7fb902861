/**
 * Auth capture: the `auth` part (AuthState) of a session, kept from what passes through the
 * proxy. Sources, and what each may change:
 * - the web server's answer: `x-baton-auth-subject: <user>` (with `x-baton-auth-scopes`,
 *   `x-baton-auth-expires` in Unix seconds) declares a login, an empty subject a logout.
 *   Only the web server sets the subject, so only it decides who is logged in;
 * - a bearer token in the client's `Authorization`: token and type, and for a JWT its
 *   `sub`, `exp`, `iat` and `scope` claims, decoded and NOT verified. They go to `claims`
 *   only, never to `subject`: a client can send any token;
 * - a verified client certificate (mTLS): its subject, in `claims`.
 * Values that are too long or hold control characters are refused (the header is ignored and
 * the caller counts it), so a hostile client or a broken web server cannot grow a session
 * without bound. Pure: `now` is a parameter.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { AuthState } from '../gen/baton/v1/parts';

/** Longest subject, scope list or client-certificate subject kept, in characters. */
export const MAX_AUTH_TEXT = 1024;
/** Most scopes kept from one declaration. */
export const MAX_SCOPES = 64;
/** Longest bearer token captured, in characters; a longer one is not captured. */
export const MAX_BEARER_TOKEN = 8192;
/** The claims key a verified client certificate's subject is kept under. */
export const CLIENT_CERT_CLAIM = 'x509_subject';
/** The JWT claims copied into `claims` (prefixed `jwt_`), as text. */
export const JWT_CLAIMS = ['sub', 'exp', 'iat', 'scope'] as const;

const CONTROL = /[\u0000-\u001f\u007f]/;

export type AuthDeclaration =
  | { kind: 'login'; subject: string; scopes: string[]; expiresAtUnixMs: number }
  | { kind: 'logout' }
  | { kind: 'invalid'; reason: string };

function single(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/** What the web server's response headers declare about the login; undefined: nothing. */
export function authDeclaration(headers: IncomingHttpHeaders): AuthDeclaration | undefined {
  const raw = single(headers['x-baton-auth-subject']);
  if (raw === undefined) return undefined;
  const subject = raw.trim();
  if (subject === '') return { kind: 'logout' };
  if (subject.length > MAX_AUTH_TEXT || CONTROL.test(subject)) return { kind: 'invalid', reason: 'subject' };
  const scopesText = single(headers['x-baton-auth-scopes'])?.trim() ?? '';
  if (scopesText.length > MAX_AUTH_TEXT || CONTROL.test(scopesText)) return { kind: 'invalid', reason: 'scopes' };
  const scopes = scopesText === '' ? [] : scopesText.split(/[\s,]+/).filter((s) => s !== '');
  if (scopes.length > MAX_SCOPES) return { kind: 'invalid', reason: 'scopes' };
  const expiresText = single(headers['x-baton-auth-expires'])?.trim();
  let expiresAtUnixMs = 0;
  if (expiresText !== undefined && expiresText !== '') {
    if (!/^\d{1,12}$/.test(expiresText)) return { kind: 'invalid', reason: 'expires' };
    expiresAtUnixMs = Number(expiresText) * 1000;
  }
  return { kind: 'login', subject, scopes, expiresAtUnixMs };
}

/** The auth state after a declaration: a login replaces who is logged in, a logout clears everything. */
export function applyDeclaration(current: AuthState | undefined, declaration: AuthDeclaration, now: number): AuthState {
  const base = current ?? AuthState.fromPartial({});
  switch (declaration.kind) {
    case 'login':
      return {
        ...base,
        subject: declaration.subject,
        scopes: declaration.scopes,
        expiresAtUnixMs: BigInt(declaration.expiresAtUnixMs),
        issuedAtUnixMs: BigInt(now),
      };
    case 'logout':
      return AuthState.fromPartial({});
    case 'invalid':
      return base;
  }
}

/** Who is logged in now: the declared subject and scopes, unless logged out or expired. */
export function activeLogin(auth: AuthState | undefined, now: number): { subject: string; scopes: string[] } | undefined {
  if (auth === undefined || auth.subject === '') return undefined;
  if (auth.expiresAtUnixMs !== 0n && auth.expiresAtUnixMs <= BigInt(now)) return undefined;
  return { subject: auth.subject, scopes: auth.scopes };
}

export type BearerCapture = { kind: 'token'; token: string; claims: Record<string, string> } | { kind: 'invalid'; reason: string };

/**
 * The bearer token of an Authorization header (RFC 6750 `Bearer <token68>`); undefined when
 * the header holds another scheme or none. A JWT's claims are decoded, not verified.
 */
export function bearerToken(authorization: string | undefined): BearerCapture | undefined {
  if (authorization === undefined) return undefined;
  const match = /^bearer[ ]+(\S+)\s*$/i.exec(authorization);
  if (match === null) return undefined;
  const token = match[1]!;
  if (token.length > MAX_BEARER_TOKEN) return { kind: 'invalid', reason: 'too_long' };
  if (!/^[A-Za-z0-9\-._~+/]+=*$/.test(token)) return { kind: 'invalid', reason: 'malformed' };
  return { kind: 'token', token, claims: jwtClaims(token) };
}

/** The JWT_CLAIMS of a JWT (three base64url segments, a JSON object in the second), as text. */
export function jwtClaims(token: string): Record<string, string> {
  const segments = token.split('.');
  if (segments.length !== 3) return {};
  let payload: unknown;
  try {
    payload = JSON.parse(Buffer.from(segments[1]!, 'base64url').toString('utf8'));
  } catch {
    return {};
  }
  if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) return {};
  const claims: Record<string, string> = {};
  for (const name of JWT_CLAIMS) {
    const value = (payload as Record<string, unknown>)[name];
    let text: string | undefined;
    if (typeof value === 'string') text = value;
    else if (typeof value === 'number' && Number.isFinite(value)) text = String(value);
    else if (Array.isArray(value) && value.every((v) => typeof v === 'string')) text = value.join(' ');
    if (text !== undefined && text.length <= MAX_AUTH_TEXT && !CONTROL.test(text)) claims[`jwt_${name}`] = text;
  }
  return claims;
}

/** The auth state with a bearer token captured: token, type and decoded claims replace the previous token's. */
export function withBearer(current: AuthState | undefined, token: string, claims: Record<string, string>): AuthState {
  const base = current ?? AuthState.fromPartial({});
  const kept = Object.fromEntries(Object.entries(base.claims).filter(([key]) => !key.startsWith('jwt_')));
  return { ...base, token, tokenType: 'Bearer', claims: { ...kept, ...claims } };
}

/** The auth state with a verified client certificate's subject; undefined when it is unusable. */
export function withClientCert(current: AuthState | undefined, subject: string): AuthState | undefined {
  if (subject.length > MAX_AUTH_TEXT || CONTROL.test(subject)) return undefined;
  const base = current ?? AuthState.fromPartial({});
  return { ...base, claims: { ...base.claims, [CLIENT_CERT_CLAIM]: subject } };
}

export function encodeAuth(auth: AuthState): Buffer {
  return Buffer.from(AuthState.encode(auth).finish());
}

/** The stored part's bytes as AuthState; undefined when absent or not decodable. */
export function decodeAuth(bytes: Uint8Array | undefined): AuthState | undefined {
  if (bytes === undefined) return undefined;
  try {
    return AuthState.decode(bytes);
  } catch {
    return undefined;
  }
}
