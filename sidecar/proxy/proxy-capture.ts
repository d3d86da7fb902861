/**
 * The capture side of one proxied request, between the sockets and the session store: which
 * session the request belongs to (its cookie, resumed on this node; or a new id), what the
 * request itself carries to capture (a bearer token, the client certificate, the TLS
 * connection), what baton tells the web server, and what the web server's answer declares
 * about the login. Everything is written to the session's `auth` and `tls` parts through
 * the narrow ProxySessionStore. Nothing here reads or logs session contents beyond that.
 *
 * Rules:
 * - a session this node owns is read from the local store, never resumed: only the first
 *   request a node sees for a session owned elsewhere (or held nowhere here) resumes it;
 * - a cookie naming a session no node holds gets a new id (so a client cannot choose one);
 * - the `tls` part is written once per connection and session, not on every request;
 * - a session's idle expiry is refreshed at most once per TOUCH_INTERVAL_MS per node, so an
 *   active client keeps its session without a replicated touch on every request;
 * - a write refused by the store (over a limit, say) is counted and logged, never fails
 *   the request: the web server still answers;
 * - a login to a new subject on an existing session gives the session a new id (session
 *   fixation: an id an attacker planted or read before the login never becomes a logged-in
 *   session); the old id keeps the pre-login session for ROTATED_GRACE_SECONDS, so requests
 *   already sent with it neither see the login nor lose their session.
 */
import { randomBytes } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import type { Logger } from 'pino';
import type { AuthState } from '../../src/gen/baton/v1/parts';
import {
  activeLogin,
  applyDeclaration,
  authDeclaration,
  bearerToken,
  decodeAuth,
  encodeAuth,
  withBearer,
  withClientCert,
  CLIENT_CERT_CLAIM,
} from '../../src/capture/auth-capture';
import { mintSessionId, SESSION_ID_BYTES, sessionIdFromCookies } from '../../src/capture/session-cookie';
import { captureTls, encodeTls, type TlsConnectionFacts } from '../../src/capture/tls-capture';
import type { SessionHeaders } from '../../src/capture/upstream-headers';
import type { ProxySessionStore } from './proxy-sessions';
import type { ProxyObserver } from '../metrics/proxy-observer';

/** A session's idle expiry is refreshed by the proxy at most this often, per node. */
export const TOUCH_INTERVAL_MS = 60_000;
/** Sessions whose last refresh time is remembered; the table is cleared when it is full. */
const TOUCH_TABLE_LIMIT = 100_000;
/** How long an id replaced at login still names the session as it was before the login. */
export const ROTATED_GRACE_SECONDS = 60;
/** Sessions one connection remembers having written the `tls` part for. */
const TLS_WRITTEN_LIMIT = 64;

/** What the proxy knows about a client connection once its handshake is done. */
export interface ConnectionCapture {
  tls: TlsConnectionFacts | undefined;
  /** The verified client certificate's subject (mTLS). */
  clientCertSubject: string | undefined;
  /** Sessions whose `tls` part this connection wrote. */
  tlsWritten: Set<string>;
}

/** One request's session, from the request to the answer. */
export interface RequestSession {
  id: string;
  minted: boolean;
  /** The id the request came with, when the answer's login gave the session a new one. */
  rotatedFrom?: string;
  auth: AuthState | undefined;
  previousOwner: string | undefined;
}

export class ProxyCapture {
  private readonly touched = new Map<string, number>();

  constructor(
    private readonly sessions: ProxySessionStore,
    private readonly cookieName: string,
    private readonly observer: ProxyObserver,
    private readonly log: Logger,
    private readonly random: (n: number) => Uint8Array = randomBytes,
    private readonly clock: () => number = Date.now,
    private readonly rotateOnLogin = true,
  ) {}

  /**
   * The request's session: owned here, resumed on this node, or new. Captures what the
   * request carries and writes it before the request goes on. Rejects only when the session
   * store cannot tell whether the session exists (its peers do not answer). `sessionId`,
   * when given, names the session instead of the cookie: a re-injected request's session as
   * its origin node knew it (it may have been minted there for this very request).
   */
  async open(headers: IncomingHttpHeaders, connection: ConnectionCapture, sessionId?: string): Promise<RequestSession> {
    const cookie = sessionId ?? sessionIdFromCookies(headers.cookie, this.cookieName);
    let session: RequestSession | undefined;
    const owned = cookie === undefined ? undefined : this.sessions.owned(cookie);
    if (owned !== undefined) {
      session = { id: cookie!, minted: false, auth: decodeAuth(owned.auth), previousOwner: undefined };
    } else if (cookie !== undefined) {
      const resumed = await this.sessions.resume(cookie).catch((err: unknown) => {
        this.observer.resume('unavailable');
        throw err;
      });
      if (resumed.found) {
        this.observer.resume(resumed.previousOwner === undefined ? 'local' : 'peer');
        session = { id: cookie, minted: false, auth: decodeAuth(resumed.auth), previousOwner: resumed.previousOwner };
      } else {
        this.observer.resume('not_found');
      }
    }
    if (session === undefined) {
      session = { id: mintSessionId(this.random(SESSION_ID_BYTES)), minted: true, auth: undefined, previousOwner: undefined };
      this.observer.capture('session_minted');
    }
    await this.captureRequest(session, headers, connection);
    return session;
  }

  private async captureRequest(session: RequestSession, headers: IncomingHttpHeaders, connection: ConnectionCapture): Promise<void> {
    const writes: { name: 'auth' | 'tls'; value: Uint8Array }[] = [];
    let auth = session.auth;
    const bearer = bearerToken(typeof headers.authorization === 'string' ? headers.authorization : undefined);
    if (bearer?.kind === 'invalid') this.observer.capture('bearer_invalid');
    else if (bearer !== undefined && auth?.token !== bearer.token) {
      auth = withBearer(auth, bearer.token, bearer.claims);
      this.observer.capture('bearer');
    }
    const subject = connection.clientCertSubject;
    if (subject !== undefined && auth?.claims[CLIENT_CERT_CLAIM] !== subject) {
      const next = withClientCert(auth, subject);
      if (next !== undefined) {
        auth = next;
        this.observer.capture('client_cert');
      }
    }
    // A new session is stored at once (an empty auth part at least), so the cookie the
    // client gets back names a session every node can find.
    if (auth !== session.auth || session.minted) {
      session.auth = auth;
      writes.push({ name: 'auth', value: encodeAuth(auth ?? emptyAuth()) });
    }
    if (connection.tls !== undefined && !connection.tlsWritten.has(session.id)) {
      if (connection.tlsWritten.size >= TLS_WRITTEN_LIMIT) connection.tlsWritten.clear();
      connection.tlsWritten.add(session.id);
      writes.push({ name: 'tls', value: encodeTls(captureTls(connection.tls)) });
      this.observer.capture('tls');
    }
    if (writes.length > 0) {
      await this.write(session.id, writes);
      this.touched.set(session.id, this.clock());
    } else {
      this.touchNowAndThen(session.id);
    }
  }

  private touchNowAndThen(id: string): void {
    const now = this.clock();
    const last = this.touched.get(id);
    if (last !== undefined && now - last < TOUCH_INTERVAL_MS) return;
    if (this.touched.size >= TOUCH_TABLE_LIMIT) this.touched.clear();
    this.touched.set(id, now);
    try {
      this.sessions.touch(id);
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, 'proxy: session touch refused');
    }
  }

  /** What the web server is told about the session. */
  upstreamHeaders(session: RequestSession, connection: ConnectionCapture): SessionHeaders {
    const login = activeLogin(session.auth, this.clock());
    return {
      sessionId: session.id,
      minted: session.minted,
      resumedFrom: session.previousOwner,
      authSubject: login?.subject,
      authScopes: login?.scopes,
      tlsResumed: connection.tls?.resumed,
      clientCertSubject: connection.clientCertSubject,
    };
  }

  /**
   * Captures what the web server's answer declares (login, logout). Returns the write to
   * wait for before the answer goes to the client, undefined when it declares nothing: a
   * login the user was told of is held by a secondary too, so the pod's death right after
   * does not log the user out. A login to a new subject moves the session to a new id
   * (`session.id` changes, `rotatedFrom` is set: the answer must set the cookie) unless
   * `rotate` is false (an upgrade's answer, whose cookie is already decided).
   */
  answer(session: RequestSession, headers: IncomingHttpHeaders, rotate = true): Promise<void> | undefined {
    const declaration = authDeclaration(headers);
    if (declaration === undefined) return undefined;
    if (declaration.kind === 'invalid') {
      this.observer.capture('auth_invalid');
      return undefined;
    }
    const now = this.clock();
    const newSubject = declaration.kind === 'login' && activeLogin(session.auth, now)?.subject !== declaration.subject;
    session.auth = applyDeclaration(session.auth, declaration, now);
    this.observer.capture(declaration.kind);
    const auth = encodeAuth(session.auth);
    if (newSubject && rotate && this.rotateOnLogin && !session.minted) return this.rotate(session, auth);
    return this.write(session.id, [{ name: 'auth', value: auth }], true);
  }

  private async rotate(session: RequestSession, auth: Uint8Array): Promise<void> {
    const fresh = mintSessionId(this.random(SESSION_ID_BYTES));
    try {
      if (!(await this.sessions.rotate(session.id, fresh, auth, ROTATED_GRACE_SECONDS))) {
        // The session is gone from this node (expired, or deleted by the web server): the
        // login starts a new one under the new id.
        await this.sessions.put(fresh, [{ name: 'auth', value: auth }], true);
      }
    } catch (err) {
      this.observer.capture('write_failed');
      this.log.warn({ err: (err as Error).message }, 'proxy: the session could not move to a new id at login; the login is not stored');
      return;
    }
    session.rotatedFrom = session.id;
    session.id = fresh;
    this.observer.capture('session_rotated');
  }

  private async write(id: string, parts: { name: 'auth' | 'tls'; value: Uint8Array }[], durable = false): Promise<void> {
    try {
      await this.sessions.put(id, parts, durable);
    } catch (err) {
      this.observer.capture('write_failed');
      this.log.warn({ err: (err as Error).message, parts: parts.map((p) => p.name) }, 'proxy: a captured part was not stored');
    }
  }
}

function emptyAuth(): AuthState {
  return decodeAuth(new Uint8Array(0))!;
}

