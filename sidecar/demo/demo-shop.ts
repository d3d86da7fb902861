/**
 * The demo's shop: one small HTTP server per baton node, standing in for a web server pod
 * with its baton sidecar beside it. The shop keeps no state of its own, and runs in one of
 * two modes:
 * - API mode (default): the shop calls baton itself. Login mints a session id (the `sid`
 *   cookie) and writes the `auth` part; every request reads the session from its own node
 *   with resume, so whichever pod a request lands on takes the session over.
 * - Behind the capture proxy (`behindProxy`, `baton demo-shop --behind-proxy`): baton's
 *   proxy names the session (x-baton-session-id) and resumes it before the request
 *   arrives. The shop has no baton calls for auth: login answers with
 *   `x-baton-auth-subject: <user>` and the proxy stores the login; the user of every later
 *   request is the request's `x-baton-auth-subject`. The cart stays in baton, keyed by
 *   x-baton-session-id. x-baton-* headers are trusted in this mode only: the proxy removes
 *   any a client sends, while a shop serving clients directly must not believe them.
 *
 * Routes (JSON bodies):
 * - POST /login {user}                              → a logged-in session
 * - POST /cart  {sku, name, quantity, unitPriceMinor} → adds to part `cart`
 * - GET  /cart                                      → the user and the cart
 * Every answer says which pod and node served it and what baton reported (owner, epoch,
 * secondaries that acknowledged the write) or, behind the proxy, what the proxy told the
 * shop, so the demo prints what baton did, not what it expected.
 */
import { randomBytes } from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { BatonClient, BatonClientError, type Session } from '../../src/client/client';
import { decodeWellKnownPart } from '../../src/client/client-parts';
import type { AuthState, CartItem, CartState } from '../../src/gen/baton/v1/parts';

/** Writes must reach one secondary before the shop answers: the owner may die right after. */
const MIN_REPLICAS = 1;
const SESSION_TTL_SECONDS = 600;
const MAX_BODY_BYTES = 16 * 1024;
const CURRENCY = 'EUR';

export interface CartLine {
  sku: string;
  name: string;
  quantity: number;
  unitPriceMinor: number;
}

/** What every successful shop answer carries. */
export interface ShopAnswer {
  pod: string;
  node: string;
  session: string;
  user: string;
  items: CartLine[];
  currency: string;
  totalMinor: number;
  /**
   * The session's owner and epoch as this request's Get (with resume) reported them; '' on
   * login, which writes without reading.
   */
  owner: string;
  epoch: string;
  /** Node that wrote the cart part baton returned; '' when there was no cart yet. */
  cartWrittenBy: string;
  /** Secondaries that acknowledged this request's write; absent for reads and for a login behind the proxy. */
  replicasAcked?: number;
  /** Behind the capture proxy: what the proxy told the shop about this request; absent in API mode. */
  capture?: CaptureHeaders;
}

/** The x-baton-* headers of a request through the capture proxy, as the shop got them ('' when absent). */
export interface CaptureHeaders {
  sessionId: string;
  sessionNew: string;
  authSubject: string;
  resumedFrom: string;
  tlsResumed: string;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export class ShopPod {
  private readonly baton: BatonClient;
  private readonly server: http.Server;

  /**
   * `apiAddress`: the session API of this pod's baton node; `behindProxy`: the pod's baton
   * node is its capture proxy (see the header).
   */
  constructor(
    readonly name: string,
    readonly nodeId: string,
    apiAddress: string,
    readonly behindProxy = false,
  ) {
    this.baton = new BatonClient(apiAddress);
    this.server = http.createServer((request, response) => {
      this.handle(request).then(
        (answer) => reply(response, 200, answer, request.url === '/login' ? this.loginHeaders(answer) : {}),
        (err: unknown) => {
          const status = err instanceof HttpError ? err.status : err instanceof BatonClientError ? 503 : 500;
          const prefix = err instanceof BatonClientError ? `baton ${this.nodeId}: ` : '';
          reply(response, status, { error: `${prefix}${err instanceof Error ? err.message : String(err)}` });
        },
      );
    });
  }

  /** Listens (by default on a free loopback port); resolves with the pod's base URL. */
  listen(host = '127.0.0.1', port = 0): Promise<string> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        const { port: bound } = this.server.address() as AddressInfo;
        resolve(`http://${host.includes(':') ? `[${host}]` : host}:${bound}`);
      });
    });
  }

  /** Stops serving, drops open connections (as a dead pod would) and closes the baton client. */
  close(): Promise<void> {
    this.baton.close();
    return new Promise((resolve) => {
      if (!this.server.listening) return resolve();
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private async handle(request: http.IncomingMessage): Promise<ShopAnswer> {
    const route = `${request.method} ${request.url}`;
    if (this.behindProxy) {
      const capture = captureHeadersOf(request);
      switch (route) {
        case 'POST /login':
          return { ...this.answer(capture.sessionId, stringField(await readJson(request), 'user'), emptyCart(), '', '', ''), capture };
        case 'POST /cart':
          return { ...(await this.addToCart(capture.sessionId, loggedInUser(capture), await readJson(request))), capture };
        case 'GET /cart':
          return { ...(await this.viewCart(capture.sessionId, loggedInUser(capture))), capture };
        default:
          throw new HttpError(404, `no route ${route}`);
      }
    }
    switch (route) {
      case 'POST /login':
        return this.login(await readJson(request));
      case 'POST /cart':
        return this.addToCart(sessionIdOf(request), undefined, await readJson(request));
      case 'GET /cart':
        return this.viewCart(sessionIdOf(request), undefined);
      default:
        throw new HttpError(404, `no route ${route}`);
    }
  }

  /**
   * A login's answer: behind the proxy, the declaration the proxy captures (and removes
   * before the client sees it); in API mode, the session cookie.
   */
  private loginHeaders(answer: ShopAnswer): http.OutgoingHttpHeaders {
    if (this.behindProxy) return { 'x-baton-auth-subject': answer.user, 'x-baton-auth-scopes': 'shop', 'x-baton-auth-expires': String(Math.floor(Date.now() / 1000) + SESSION_TTL_SECONDS) };
    return { 'set-cookie': `sid=${answer.session}; Path=/; HttpOnly; SameSite=Lax` };
  }

  private async login(body: Record<string, unknown>): Promise<ShopAnswer> {
    const user = stringField(body, 'user');
    const sessionId = randomBytes(16).toString('hex');
    const now = Date.now();
    const auth: AuthState = {
      token: randomBytes(24).toString('base64url'),
      tokenType: 'session',
      subject: user,
      scopes: ['shop'],
      expiresAtUnixMs: BigInt(now + SESSION_TTL_SECONDS * 1000),
      claims: {},
      refreshToken: '',
      issuedAtUnixMs: BigInt(now),
    };
    const put = await this.baton.putAuth(sessionId, auth, { minReplicas: MIN_REPLICAS, ttlSeconds: SESSION_TTL_SECONDS });
    return { ...this.answer(sessionId, user, emptyCart(), '', '', ''), replicasAcked: put.replicasAcked };
  }

  /** `proxyUser`: the user the proxy vouches for; undefined in API mode (the user comes from the `auth` part). */
  private async addToCart(sessionId: string, proxyUser: string | undefined, body: Record<string, unknown>): Promise<ShopAnswer> {
    const line: CartLine = {
      sku: stringField(body, 'sku'),
      name: stringField(body, 'name'),
      quantity: positiveIntegerField(body, 'quantity'),
      unitPriceMinor: positiveIntegerField(body, 'unitPriceMinor'),
    };
    const { session, user, cart, cartWrittenBy } = await this.resume(sessionId, proxyUser);
    const existing = cart.items.find((item) => item.sku === line.sku);
    if (existing === undefined) cart.items.push({ ...line, unitPriceMinor: BigInt(line.unitPriceMinor) });
    else existing.quantity += line.quantity;
    cart.updatedAtUnixMs = BigInt(Date.now());
    const put = await this.baton.putCart(sessionId, cart, { minReplicas: MIN_REPLICAS, ttlSeconds: SESSION_TTL_SECONDS });
    const answer = this.answer(sessionId, user, cart, session.ownerNodeId, session.epoch.toString(), cartWrittenBy);
    return { ...answer, replicasAcked: put.replicasAcked };
  }

  private async viewCart(sessionId: string, proxyUser: string | undefined): Promise<ShopAnswer> {
    const { session, user, cart, cartWrittenBy } = await this.resume(sessionId, proxyUser);
    return this.answer(sessionId, user, cart, session.ownerNodeId, session.epoch.toString(), cartWrittenBy);
  }

  /**
   * Reads the whole session from this pod's node, resuming it here (behind the proxy, the
   * proxy resumed it already; this pulls the parts the node still lacks). In API mode the
   * user is the `auth` part's subject: 401 when baton has no such login.
   */
  private async resume(sessionId: string, proxyUser: string | undefined): Promise<{ session: Session; user: string; cart: CartState; cartWrittenBy: string }> {
    const session = await this.baton.get(sessionId, { resume: true });
    if (session === undefined) throw new HttpError(401, `baton ${this.nodeId} has no session ${short(sessionId)}: log in again`);
    const authPart = session.parts.find((part) => part.name === 'auth');
    if (proxyUser === undefined && authPart === undefined) throw new HttpError(401, `session ${short(sessionId)} has no auth part on ${this.nodeId}: log in again`);
    const cartPart = session.parts.find((part) => part.name === 'cart');
    return {
      session,
      user: proxyUser ?? decodeWellKnownPart('auth', authPart!.value).subject,
      cart: cartPart === undefined ? emptyCart() : decodeWellKnownPart('cart', cartPart.value),
      cartWrittenBy: cartPart?.writerNodeId ?? '',
    };
  }

  private answer(sessionId: string, user: string, cart: CartState, owner: string, epoch: string, cartWrittenBy: string): ShopAnswer {
    const items = cart.items.map(toLine);
    return {
      pod: this.name,
      node: this.nodeId,
      session: sessionId,
      user,
      items,
      currency: cart.currency,
      totalMinor: items.reduce((sum, item) => sum + item.quantity * item.unitPriceMinor, 0),
      owner,
      epoch,
      cartWrittenBy,
    };
  }
}

function emptyCart(): CartState {
  return { items: [], currency: CURRENCY, billingAddress: undefined, paymentReference: '', updatedAtUnixMs: 0n };
}

function toLine(item: CartItem): CartLine {
  return { sku: item.sku, name: item.name, quantity: item.quantity, unitPriceMinor: Number(item.unitPriceMinor) };
}

function short(sessionId: string): string {
  return `${sessionId.slice(0, 8)}…`;
}

function sessionIdOf(request: http.IncomingMessage): string {
  const match = /(?:^|;\s*)sid=([0-9a-f]{32})(?:;|$)/.exec(request.headers.cookie ?? '');
  if (match === null) throw new HttpError(401, 'no session cookie: log in first');
  return match[1]!;
}

/** The proxy's headers; 500 when there are none: the shop was told it is behind a proxy, and is not. */
function captureHeadersOf(request: http.IncomingMessage): CaptureHeaders {
  const header = (name: string) => {
    const value = request.headers[name];
    return typeof value === 'string' ? value : '';
  };
  const sessionId = header('x-baton-session-id');
  if (sessionId === '') throw new HttpError(500, 'no x-baton-session-id: this shop runs with --behind-proxy, but the request did not come through baton\'s proxy');
  return {
    sessionId,
    sessionNew: header('x-baton-session-new'),
    authSubject: header('x-baton-auth-subject'),
    resumedFrom: header('x-baton-resumed-from'),
    tlsResumed: header('x-baton-tls-resumed'),
  };
}

function loggedInUser(capture: CaptureHeaders): string {
  if (capture.authSubject === '') throw new HttpError(401, 'not logged in (no x-baton-auth-subject): log in first');
  return capture.authSubject;
}

async function readJson(request: http.IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new HttpError(413, `body over ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk);
  }
  let body: unknown;
  try {
    body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new HttpError(400, 'body is not JSON');
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new HttpError(400, 'body is not a JSON object');
  return body as Record<string, unknown>;
}

function stringField(body: Record<string, unknown>, name: string): string {
  const value = body[name];
  if (typeof value !== 'string' || value === '' || value.length > 200) throw new HttpError(400, `'${name}' must be a non-empty string`);
  return value;
}

function positiveIntegerField(body: Record<string, unknown>, name: string): number {
  const value = body[name];
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1 || value > 1_000_000) {
    throw new HttpError(400, `'${name}' must be an integer from 1 to 1000000`);
  }
  return value;
}

function reply(response: http.ServerResponse, status: number, body: unknown, headers: http.OutgoingHttpHeaders = {}): void {
  response.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body));
}
