import { appendSetCookie, clientResponseHeaders, forwardedValue, upstreamRequestHeaders } from '../src/capture/upstream-headers';

const session = { sessionId: 'S', minted: false };

describe('upstream request headers', () => {
  test('every x-baton-* header a client sends is removed, whatever its case or value', () => {
    const out = upstreamRequestHeaders(
      { 'x-baton-auth-subject': 'admin', 'x-baton-session-id': 'other', 'x-baton-resumed-from': 'n1', 'x-baton-anything': '1', accept: 'text/html' },
      { remoteAddress: '10.0.0.1', tls: false },
      session,
      false,
    );
    expect(out['x-baton-auth-subject']).toBeUndefined();
    expect(out['x-baton-resumed-from']).toBeUndefined();
    expect(out['x-baton-anything']).toBeUndefined();
    expect(out['x-baton-session-id']).toBe('S');
    expect(out.accept).toBe('text/html');
  });

  test('baton sets session, new, resumed-from, auth, TLS and client-certificate headers', () => {
    const out = upstreamRequestHeaders(
      { host: 'shop.example' },
      { remoteAddress: '10.0.0.1', tls: true },
      { sessionId: 'S', minted: true, resumedFrom: 'pod-0', authSubject: 'alice', authScopes: ['read', 'write'], tlsResumed: true, clientCertSubject: 'CN=alice' },
      false,
    );
    expect(out).toMatchObject({
      'x-baton-session-id': 'S',
      'x-baton-session-new': '1',
      'x-baton-resumed-from': 'pod-0',
      'x-baton-auth-subject': 'alice',
      'x-baton-auth-scopes': 'read write',
      'x-baton-tls-resumed': '1',
      'x-baton-client-cert-subject': 'CN=alice',
    });
    const plain = upstreamRequestHeaders({}, { remoteAddress: undefined, tls: false }, session, false);
    for (const name of ['x-baton-session-new', 'x-baton-resumed-from', 'x-baton-auth-subject', 'x-baton-tls-resumed', 'x-baton-client-cert-subject']) {
      expect(plain[name]).toBeUndefined();
    }
  });

  test('hop-by-hop headers and what Connection names are dropped; HTTP/2 :authority becomes Host', () => {
    const out = upstreamRequestHeaders(
      { ':method': 'GET', ':authority': 'h2.example', ':path': '/', connection: 'keep-alive, x-secret', 'x-secret': '1', 'keep-alive': 'timeout=5', te: 'trailers', 'transfer-encoding': 'chunked', upgrade: 'websocket', 'proxy-connection': 'x' },
      { remoteAddress: '::1', tls: true },
      session,
      false,
    );
    for (const name of [':method', ':authority', ':path', 'connection', 'x-secret', 'keep-alive', 'te', 'transfer-encoding', 'upgrade', 'proxy-connection']) {
      expect(out[name]).toBeUndefined();
    }
    expect(out.host).toBe('h2.example');
  });

  test('an Upgrade request keeps Connection: upgrade and Upgrade', () => {
    const out = upstreamRequestHeaders({ connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-key': 'k' }, { remoteAddress: '127.0.0.1', tls: false }, session, true);
    expect(out.connection).toBe('upgrade');
    expect(out.upgrade).toBe('websocket');
    expect(out['sec-websocket-key']).toBe('k');
  });

  test('Forwarded and X-Forwarded-* come from the connection, replacing what the client sent', () => {
    const out = upstreamRequestHeaders(
      { host: 'shop.example:8443', forwarded: 'for=1.2.3.4', 'x-forwarded-for': '1.2.3.4', 'x-forwarded-proto': 'http', 'x-forwarded-host': 'evil' },
      { remoteAddress: '10.1.2.3', tls: true },
      session,
      false,
    );
    expect(out['x-forwarded-for']).toBe('10.1.2.3');
    expect(out['x-forwarded-proto']).toBe('https');
    expect(out['x-forwarded-host']).toBe('shop.example:8443');
    expect(out.forwarded).toBe('for=10.1.2.3;proto=https;host="shop.example:8443"');
    expect(forwardedValue('::1', 'http', 'a')).toBe('for="[::1]";proto=http;host=a');
  });
});

describe('client response headers', () => {
  test('x-baton-* and hop-by-hop headers of the answer never reach the client', () => {
    const out = clientResponseHeaders({
      'x-baton-auth-subject': 'alice',
      'x-baton-auth-scopes': 'a',
      'x-baton-auth-expires': '1',
      connection: 'keep-alive',
      'keep-alive': 'timeout=5',
      'transfer-encoding': 'chunked',
      'content-type': 'text/plain',
      'set-cookie': ['a=1'],
    });
    expect(out).toEqual({ 'content-type': 'text/plain', 'set-cookie': ['a=1'] });
  });

  test('the session cookie joins the web server’s own Set-Cookie lines', () => {
    const headers: Record<string, string | string[] | number | undefined> = { 'set-cookie': ['a=1'] };
    appendSetCookie(headers, 'baton_sid=X');
    expect(headers['set-cookie']).toEqual(['a=1', 'baton_sid=X']);
    const none: Record<string, string | string[] | number | undefined> = {};
    appendSetCookie(none, 'baton_sid=X');
    expect(none['set-cookie']).toEqual(['baton_sid=X']);
  });
});
