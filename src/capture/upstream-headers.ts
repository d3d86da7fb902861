/**
 * Which headers the web server gets, and which the client gets back. Rules:
 * - every `x-baton-*` header a client sends is removed: only baton sets them, so a client
 *   cannot claim a user, a session or a resume (no spoofing);
 * - hop-by-hop headers (RFC 9110 §7.6.1: Connection and what it names, Keep-Alive,
 *   Transfer-Encoding, TE, Trailer, Upgrade, Proxy-Connection) and HTTP/2 pseudo-headers
 *   are not forwarded; an Upgrade request keeps `Connection: upgrade` and `Upgrade`;
 * - `Forwarded` and `X-Forwarded-For/-Proto/-Host` are set from the connection, replacing
 *   whatever the client sent (baton is the edge: nothing in front of it is trusted);
 * - every `x-baton-*` header of the web server's answer is removed before the client sees it.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';

export const BATON_HEADER_PREFIX = 'x-baton-';

/** Headers baton sets on the upstream request. */
export const H = {
  sessionId: 'x-baton-session-id',
  sessionNew: 'x-baton-session-new',
  resumedFrom: 'x-baton-resumed-from',
  authSubject: 'x-baton-auth-subject',
  authScopes: 'x-baton-auth-scopes',
  authExpires: 'x-baton-auth-expires',
  tlsResumed: 'x-baton-tls-resumed',
  clientCertSubject: 'x-baton-client-cert-subject',
} as const;

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'http2-settings']);

/** Where and how the client reached baton. */
export interface ClientConnection {
  remoteAddress: string | undefined;
  /** True when the client spoke TLS to baton. */
  tls: boolean;
}

/** What baton tells the web server about the session. */
export interface SessionHeaders {
  sessionId: string;
  minted: boolean;
  /** The node that owned the session before this one resumed it. */
  resumedFrom?: string;
  authSubject?: string;
  authScopes?: readonly string[];
  /** Under TLS: whether this connection's handshake was a resumption. */
  tlsResumed?: boolean;
  /** The verified client certificate's subject (mTLS). */
  clientCertSubject?: string;
}

const NO_TOKENS: ReadonlySet<string> = new Set();

/** Header names listed in the Connection header(s): hop-by-hop for this message. */
function connectionTokens(value: string | string[] | undefined): ReadonlySet<string> {
  // Most messages name nothing, or only keep-alive, which is hop-by-hop anyway.
  if (value === undefined || value === 'keep-alive') return NO_TOKENS;
  const tokens = new Set<string>();
  for (const line of Array.isArray(value) ? value : [value]) {
    for (const token of line.split(',')) {
      const name = token.trim().toLowerCase();
      if (name !== '') tokens.add(name);
    }
  }
  return tokens;
}

/** The client's request headers as the web server gets them. */
export function upstreamRequestHeaders(
  client: IncomingHttpHeaders,
  connection: ClientConnection,
  session: SessionHeaders,
  upgrade: boolean,
): OutgoingHttpHeaders {
  const named = connectionTokens(client.connection);
  const out: OutgoingHttpHeaders = {};
  for (const name in client) {
    const value = client[name];
    if (value === undefined || name.startsWith(':') || name.startsWith(BATON_HEADER_PREFIX)) continue;
    if (HOP_BY_HOP.has(name) || named.has(name)) continue;
    if (name === 'forwarded' || name.startsWith('x-forwarded-')) continue;
    out[name] = value;
  }
  // HTTP/2 carries the host as :authority.
  const host = client.host ?? (client[':authority'] as string | undefined);
  if (host !== undefined) out.host = host;
  if (upgrade && client.upgrade !== undefined) {
    out.connection = 'upgrade';
    out.upgrade = client.upgrade;
  }
  const proto = connection.tls ? 'https' : 'http';
  const address = connection.remoteAddress;
  if (address !== undefined) out['x-forwarded-for'] = address;
  out['x-forwarded-proto'] = proto;
  if (host !== undefined) out['x-forwarded-host'] = host;
  out.forwarded = forwardedValue(address, proto, host);

  out[H.sessionId] = session.sessionId;
  if (session.minted) out[H.sessionNew] = '1';
  if (session.resumedFrom !== undefined) out[H.resumedFrom] = session.resumedFrom;
  if (session.authSubject !== undefined) {
    out[H.authSubject] = session.authSubject;
    if (session.authScopes !== undefined && session.authScopes.length > 0) out[H.authScopes] = session.authScopes.join(' ');
  }
  if (session.tlsResumed !== undefined) out[H.tlsResumed] = session.tlsResumed ? '1' : '0';
  if (session.clientCertSubject !== undefined) out[H.clientCertSubject] = session.clientCertSubject;
  return out;
}

/** RFC 7239 Forwarded: for, proto, host; IPv6 addresses bracketed, values quoted where needed. */
export function forwardedValue(address: string | undefined, proto: string, host: string | undefined): string {
  const parts: string[] = [];
  if (address !== undefined) parts.push(`for=${address.includes(':') ? `"[${address}]"` : address}`);
  parts.push(`proto=${proto}`);
  if (host !== undefined) parts.push(`host=${quoteIfNeeded(host)}`);
  return parts.join(';');
}

function quoteIfNeeded(value: string): string {
  return /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(value) ? value : `"${value.replace(/["\\]/g, '\\$&')}"`;
}

/**
 * The web server's response headers as the client gets them: hop-by-hop headers and every
 * `x-baton-*` header removed (HTTP/2 forbids the hop-by-hop ones; Node refuses to send them).
 */
export function clientResponseHeaders(upstream: IncomingHttpHeaders): OutgoingHttpHeaders {
  const named = connectionTokens(upstream.connection);
  const out: OutgoingHttpHeaders = {};
  for (const name in upstream) {
    const value = upstream[name];
    if (value === undefined || name.startsWith(BATON_HEADER_PREFIX) || HOP_BY_HOP.has(name) || named.has(name)) continue;
    out[name] = value;
  }
  return out;
}

/** Adds a Set-Cookie line to response headers that may already hold some. */
export function appendSetCookie(headers: OutgoingHttpHeaders, cookie: string): void {
  const existing = headers['set-cookie'];
  if (existing === undefined) headers['set-cookie'] = [cookie];
  else if (Array.isArray(existing)) headers['set-cookie'] = [...existing, cookie];
  else headers['set-cookie'] = [String(existing), cookie];
}
