/**
 * The capture proxy (--proxy-listen): accepts clients, terminates TLS, and forwards each
 * request to the web server (--proxy-upstream) with the session headers ProxyCapture
 * computes. HTTP/1.1 and HTTP/2 share one port: a TLS server offers both by ALPN and hands
 * each connection to an HTTP/1.1 or an HTTP/2 server; without certificate options the
 * proxy speaks plain HTTP/1.1.
 *
 * Rules:
 * - bodies stream both ways, never buffered whole: the request is piped to the web server
 *   (a body over --proxy-max-body-mb is refused 413, or cut off once it passes the limit),
 *   the answer piped back; `Expect: 100-continue` is passed on and the web server's
 *   100 Continue relayed; Upgrade (WebSocket) requests get the web server's socket
 *   joined to the client's;
 * - the web server down or not answering within --proxy-upstream-timeout-ms: 502 or 504
 *   with a short body at once, never a hang; but a request safe to repeat that the web
 *   server refused or dropped before its answer began is re-injected into a peer
 *   (proxy-replay.ts) from the in-flight log (replay-log.ts), and the peer's answer sent;
 * - a request with an Idempotency-Key the session remembers an answer for gets that answer
 *   without reaching the web server; a fresh answer to one is remembered once it is sent;
 * - on close: stop accepting, answer what is in flight (HTTP/1.1 answers say
 *   `Connection: close`, HTTP/2 sessions get GOAWAY), close idle connections now and
 *   everything left at the drain deadline; shortly before it (DRAIN_HANDOFF_MS), requests
 *   still waiting for the web server's answer that a peer could take are handed to one.
 */
import * as http from 'node:http';
import * as http2 from 'node:http2';
import type { Socket } from 'node:net';
import { Transform, type TransformCallback } from 'node:stream';
import * as tls from 'node:tls';
import type { Logger } from 'pino';
import { appendSetCookie, clientResponseHeaders, upstreamRequestHeaders } from '../../src/capture/upstream-headers';
import { sessionSetCookie } from '../../src/capture/session-cookie';
import type { ListenAddress } from '../config/config';
import type { ProxyConfig, ProxyUpstream } from '../config/proxy-options';
import { listenOn } from '../net/listen';
import type { TcpCapture } from '../capture/tcp-capture';
import { ProxyCapture, type ConnectionCapture, type RequestSession } from './proxy-capture';
import type { ProxyObserver, ProxyProtocol } from '../metrics/proxy-observer';
import type { ProxySessionStore } from './proxy-sessions';
import { selfSignedMaterial, selfSignedNames, readTlsFiles, TlsFileWatcher, type TlsMaterial } from './proxy-tls';
import { Upstream } from './proxy-upstream';
import { relayUpgrade } from './proxy-upgrade';
import { headerLines, headerObject, ProxyReplay, replayDeadlineMs, type OriginRequest, type ReplayPeers } from './proxy-replay';
import { ReplayLog, type ReplayEntry } from './replay-log';
import { idempotencyKey, replayable } from '../../src/capture/replay-rule';
import { MAX_REMEMBERED_BODY_BYTES, type Answer } from '../../src/capture/idempotency-answers';
import type { ReplayRequest, ReplayResponse } from '../../src/gen/baton/v1/peer';

export interface ProxyServerOptions {
  config: ProxyConfig & { nodeId: string };
  sessions: ProxySessionStore;
  observer: ProxyObserver;
  log: Logger;
  /**
   * TLS RESUMPTION HOOK: called once with the proxy's TLS server right after it is made and
   * before it listens (not at all for plain HTTP). Cluster-wide ticket keys, the shared
   * sessionIdContext and the TLS 1.2 session-ID cache attach here. A certificate rotation
   * calls server.setSecureContext, which keeps the server's ticket keys.
   */
  onTlsServer?: (server: tls.Server) => void;
  /** Samples each client connection's TCP state into its session's `tcp` part; closed with the proxy. */
  tcp?: TcpCapture;
  /** Where requests the web server failed go (re-injection); none = every such request gets 502. */
  peers?: ReplayPeers;
}

type Request = http.IncomingMessage | http2.Http2ServerRequest;

/** Where a plain client connection is between requests, for TCP handover (see connectionState). */
export type ConnectionState = 'idle' | 'answering' | 'reading';

/** The session the connection's last request named, for TCP handover. */
const LAST_SESSION = Symbol('baton.proxy.lastSession');

/** Where a client socket keeps what its handshake told the proxy. */
const CONNECTION_CAPTURE = Symbol('baton.proxy.connection');
type CapturedSocket = Socket & { [CONNECTION_CAPTURE]?: ConnectionCapture };
type Response = http.ServerResponse | http2.Http2ServerResponse;

export class ProxyServer {
  private readonly h1: http.Server;
  private readonly h2: http2.Http2Server | undefined;
  private readonly tlsServer: tls.Server | undefined;
  private readonly upstream: Upstream;
  private readonly capture: ProxyCapture;
  private readonly replay: ProxyReplay;
  /** Requests forwarded and not yet answered, for re-injection; undefined with --replay-buffer-mb 0. */
  readonly replayLog: ReplayLog | undefined;
  private readonly h2Sessions = new Set<http2.Http2Session>();
  private readonly upgraded = new Set<Socket>();
  /** Requests waiting for the web server's answer head that a drain may hand to a peer. */
  private readonly awaitingAnswer = new Set<() => void>();
  /** Plain HTTP/1.1 client connections (TCP handover moves them); empty with TLS. */
  private readonly plainConnections = new Set<Socket>();
  private readonly watcher: TlsFileWatcher | undefined;
  private draining = false;
  private closing: Promise<void> | undefined;

  constructor(private readonly options: ProxyServerOptions) {
    const config = options.config;
    this.upstream = new Upstream(config.proxyUpstream as ProxyUpstream);
    this.capture = new ProxyCapture(options.sessions, config.sessionCookie, options.observer, options.log, undefined, undefined, config.sessionRotateOnLogin);
    this.replay = new ProxyReplay({ config, sessions: options.sessions, capture: this.capture, upstream: this.upstream, observer: options.observer, log: options.log, peers: options.peers });
    this.replayLog = config.replayBufferBytes > 0 ? new ReplayLog(config.replayBufferBytes) : undefined;
    this.h1 = http.createServer({
      maxHeaderSize: config.proxyMaxHeaderBytes,
      headersTimeout: config.proxyHeaderTimeoutMs,
      // A long upload or download is not a slow client; the idle time-outs bound stalls.
      requestTimeout: 0,
      keepAliveTimeout: config.proxyIdleTimeoutMs,
    });
    this.h1.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => this.handle(req, res, 'http/1.1', false));
    this.h1.on('checkContinue', (req: http.IncomingMessage, res: http.ServerResponse) => this.handle(req, res, 'http/1.1', true));
    this.h1.on('upgrade', (req: http.IncomingMessage, socket: Socket, head: Buffer) => this.handleUpgrade(req, socket, head));
    this.h1.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => this.clientError(err, socket));

    const material = this.tlsMaterial();
    if (material === undefined) {
      options.tcp?.attach(this.h1);
      this.h1.on('connection', (socket: Socket) => {
        this.plainConnections.add(socket);
        socket.once('close', () => this.plainConnections.delete(socket));
      });
      return;
    }
    this.h2 = http2.createServer({ settings: { maxHeaderListSize: config.proxyMaxHeaderBytes }, maxSessionMemory: 16 });
    this.h2.on('request', (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => this.handle(req, res, 'h2', false));
    this.h2.on('checkContinue', (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => this.handle(req, res, 'h2', true));
    this.h2.on('session', (session: http2.ServerHttp2Session) => {
      this.h2Sessions.add(session);
      session.once('close', () => this.h2Sessions.delete(session));
      session.setTimeout(config.proxyIdleTimeoutMs, () => session.close());
      if (this.draining) session.close();
    });
    this.tlsServer = tls.createServer({
      ...secureContextOptions(material),
      requestCert: material.ca !== undefined,
      rejectUnauthorized: material.ca !== undefined,
      ALPNProtocols: ['h2', 'http/1.1'],
      handshakeTimeout: config.proxyHeaderTimeoutMs,
      // Answers are written head and body apart: Nagle would hold the body for the head's ACK.
      noDelay: true,
    });
    this.tlsServer.on('secureConnection', (socket: tls.TLSSocket) => this.secureConnection(socket));
    this.tlsServer.on('tlsClientError', (err: Error) => options.log.debug({ err: err.message }, 'proxy: TLS handshake failed'));
    if (config.tlsCertFile !== '') {
      this.watcher = new TlsFileWatcher(
        { certFile: config.tlsCertFile, keyFile: config.tlsKeyFile, caFile: config.tlsClientCaFile },
        (next) => this.tlsServer!.setSecureContext(secureContextOptions(next)),
        options.log,
        (result) => options.observer.tlsReload(result),
      );
    }
    options.onTlsServer?.(this.tlsServer);
    options.tcp?.attach(this.tlsServer);
  }

  private tlsMaterial(): TlsMaterial | undefined {
    const config = this.options.config;
    if (config.tlsSelfSigned) {
      const names = selfSignedNames(config.nodeId, config.proxyListen?.host);
      const material = selfSignedMaterial(names);
      this.options.log.warn({ names }, '--tls-self-signed: the proxy presents a self-signed certificate that clients cannot verify; for development only');
      return config.tlsClientCaFile === '' ? material : { ...material, ca: readTlsFiles({ certFile: '', keyFile: '', caFile: config.tlsClientCaFile }).ca };
    }
    if (config.tlsCertFile === '') return undefined;
    return readTlsFiles({ certFile: config.tlsCertFile, keyFile: config.tlsKeyFile, caFile: config.tlsClientCaFile });
  }

  /** Binds the proxy's address; resolves with the port. */
  listen(address: ListenAddress): Promise<number> {
    return listenOn(this.tlsServer ?? this.h1, address);
  }

  get tls(): boolean {
    return this.tlsServer !== undefined;
  }

  private secureConnection(socket: tls.TLSSocket): void {
    const facts = {
      protocol: socket.getProtocol(),
      cipher: socket.getCipher().standardName,
      servername: (socket as tls.TLSSocket & { servername?: string | false }).servername,
      alpnProtocol: socket.alpnProtocol,
      session: socket.getSession(),
      resumed: socket.isSessionReused(),
      handshakeAtUnixMs: Date.now(),
    };
    const subject = socket.authorized ? certificateSubject(socket) : undefined;
    (socket as CapturedSocket)[CONNECTION_CAPTURE] = { tls: facts, clientCertSubject: subject, tlsWritten: new Set() };
    if (socket.alpnProtocol === 'h2') this.h2!.emit('connection', socket);
    else this.h1.emit('connection', socket);
  }

  /** The client connection of a request (for HTTP/2, node's proxy of it, which reads its properties through). */
  private connectionOf(req: Request): { socket: Socket; capture: ConnectionCapture } {
    const socket = ('stream' in req ? req.stream.session?.socket : req.socket) as CapturedSocket;
    let capture = socket[CONNECTION_CAPTURE];
    if (capture === undefined) {
      capture = { tls: undefined, clientCertSubject: undefined, tlsWritten: new Set() };
      socket[CONNECTION_CAPTURE] = capture;
    }
    return { socket, capture };
  }

  private handle(req: Request, res: Response, protocol: ProxyProtocol, expectContinue: boolean): void {
    res.once('finish', () => this.options.observer.request(res.statusCode, protocol));
    void this.forward(req, res, protocol, expectContinue).catch((err: unknown) => {
      this.options.log.debug({ err: (err as Error).message }, 'proxy: request failed');
      this.fail(res, 503, 'baton: the session store is unavailable; try again\n');
    });
  }

  private async forward(req: Request, res: Response, protocol: ProxyProtocol, expectContinue: boolean): Promise<void> {
    const config = this.options.config;
    const declared = Number(req.headers['content-length'] ?? 0);
    if (config.proxyMaxBodyBytes > 0 && declared > config.proxyMaxBodyBytes) {
      this.fail(res, 413, 'baton: request body too large\n');
      return;
    }
    const { socket, capture } = this.connectionOf(req);
    const session = await this.capture.open(req.headers, capture);
    (socket as Socket & { [LAST_SESSION]?: string })[LAST_SESSION] = session.id;
    if (res.closed || res.destroyed) return;
    this.options.tcp?.session(socket, session.id);
    const method = req.method ?? 'GET';
    const target = req.url ?? '/';
    const key = idempotencyKey(req.headers);
    if (key !== undefined) {
      const remembered = this.replay.remembered(session.id, key, method, target);
      if (remembered !== undefined) {
        this.answerWith(res, remembered, session, protocol, session.id, method);
        return;
      }
    }
    const headers = upstreamRequestHeaders(req.headers, { remoteAddress: socket.remoteAddress, tls: this.tls }, this.capture.upstreamHeaders(session, capture), false);
    if (expectContinue) headers.expect = '100-continue';
    const body = requestBody(req, declared);
    const canReplay = replayable(method, req.headers);
    let entry: ReplayEntry | undefined;
    if (canReplay && this.replayLog !== undefined) {
      const admission = this.replayLog.admit(headBytes(req), body === 'sized' ? declared : 0);
      if (admission.kind === 'logged') entry = admission.entry;
    }
    const upstreamReq = this.upstream.request(method, target, headers);
    let answered = false;
    let timedOut = false;
    // A draining node hands the request to a peer rather than cut it at its deadline.
    const handOff = () => {
      if (entry?.state === 'logging' && (this.options.peers?.candidates(session.id).length ?? 0) > 0) upstreamReq.destroy(new Error(HANDED_OFF));
    };
    if (entry !== undefined) {
      this.awaitingAnswer.add(handOff);
      upstreamReq.once('close', () => this.awaitingAnswer.delete(handOff));
    }
    const timer = setTimeout(() => {
      timedOut = true;
      entry?.release();
      this.options.observer.upstreamError('timeout');
      upstreamReq.destroy();
      this.fail(res, 504, 'baton: the web server did not answer in time\n');
    }, config.proxyUpstreamTimeoutMs);
    upstreamReq.on('continue', () => {
      if (expectContinue && !res.headersSent) res.writeContinue();
    });
    upstreamReq.on('response', (upstreamRes: http.IncomingMessage) => {
      answered = true;
      clearTimeout(timer);
      // From the answer head on, a failure is the client's to see: the log lets go.
      entry?.release();
      const remember = key === undefined ? undefined : { key, method, target };
      this.respond(res, upstreamRes, session, protocol, remember);
    });
    upstreamReq.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (answered || res.headersSent || timedOut || res.destroyed) {
        entry?.release();
        if (!timedOut) destroyResponse(res);
        return;
      }
      if (err.message === BODY_TOO_LARGE) {
        entry?.release();
        this.fail(res, 413, 'baton: request body too large\n');
        return;
      }
      const refused = err.code === 'ECONNREFUSED' || err.code === 'ENOENT' || (err.code === 'ECONNRESET' && !upstreamReq.reusedSocket);
      if (err.message !== HANDED_OFF) this.options.observer.upstreamError(refused ? 'connect' : 'reset');
      if (entry?.state === 'logging') {
        const origin: OriginRequest = { session, method, target, headers: req.headers, clientAddress: socket.remoteAddress, clientTls: this.tls };
        void this.reinject(entry, origin, req, res, protocol);
        return;
      }
      entry?.release();
      if (this.replayLog !== undefined) this.options.observer.reinjection(canReplay ? 'too_large' : 'not_replayable');
      this.fail(res, 502, 'baton: the web server is unavailable\n');
    });
    res.once('close', () => {
      clearTimeout(timer);
      if (!res.writableFinished) {
        entry?.release();
        upstreamReq.destroy();
      }
    });
    // The log keeps a copy of the body as it passes; a chunk it cannot hold drops the entry.
    if (entry !== undefined && body !== 'none') {
      const logged = entry;
      (req as NodeJS.ReadableStream).on('data', (chunk: Buffer) => logged.add(chunk));
    }
    const limit = config.proxyMaxBodyBytes;
    // Most requests have no body: end the upstream request at once instead of piping an
    // empty stream through (a pipe and its listeners per request). A body of a declared
    // length was checked against the limit above, and Node's parser delivers no more than
    // that: only a body of unknown length is counted as it passes.
    if (body === 'none') upstreamReq.end();
    else if (body === 'unsized' && limit > 0) (req as NodeJS.ReadableStream).pipe(new BodyLimit(limit, upstreamReq));
    else (req as NodeJS.ReadableStream).pipe(upstreamReq);
  }

  /** A failed request's answer from a peer (or the 502 when none gave one). */
  private async reinject(entry: ReplayEntry, origin: OriginRequest, req: Request, res: Response, protocol: ProxyProtocol): Promise<void> {
    const result = await this.replay.reinject(entry, origin, bodyComplete(req, replayDeadlineMs(this.options.config)));
    this.options.observer.reinjection(result.kind);
    if (result.kind !== 'answered') {
      this.fail(res, 502, 'baton: the web server is unavailable\n');
      return;
    }
    const { status, headers, body, sessionId } = result.response;
    this.answerWith(res, { status, headers, body }, origin.session, protocol, sessionId, origin.method);
  }

  /**
   * Writes a whole answer that did not come from this node's web server (a peer's, or a
   * remembered one). `sessionId` is the session it belongs to: a new one for the client (a
   * cookie is set) when the session was minted here or the peer had to mint another.
   */
  private answerWith(res: Response, answer: Answer, session: RequestSession, protocol: ProxyProtocol, sessionId: string, method: string): void {
    if (res.closed || res.destroyed) return;
    const headers = clientResponseHeaders(headerObject(answer.headers) as http.IncomingHttpHeaders);
    // A HEAD answer keeps the length of the GET it describes.
    if (method !== 'HEAD' || headers['content-length'] === undefined) headers['content-length'] = answer.body.length;
    if (session.minted || sessionId !== session.id) appendSetCookie(headers, sessionSetCookie(this.options.config.sessionCookie, sessionId, this.tls));
    if (this.draining && protocol === 'http/1.1') headers.connection = 'close';
    try {
      (res as http.ServerResponse).writeHead(answer.status, headers);
      if (method === 'HEAD') res.end();
      else res.end(answer.body);
    } catch (err) {
      this.options.log.debug({ err: (err as Error).message }, 'proxy: a replayed answer could not be written');
      this.fail(res, 502, 'baton: the web server answered with headers that cannot be relayed\n');
    }
  }

  /** Serves PeerService.Replay for a peer whose web server failed (throws BatonErrors). */
  async serveReplay(request: ReplayRequest): Promise<ReplayResponse> {
    try {
      const response = await this.replay.serve(request);
      this.options.observer.reinjection('served');
      return response;
    } catch (err) {
      this.options.observer.reinjection('refused');
      throw err;
    }
  }

  private respond(res: Response, upstreamRes: http.IncomingMessage, session: RequestSession, protocol: ProxyProtocol, remember?: RememberAs): void {
    const captured = this.capture.answer(session, upstreamRes.headers);
    if (captured === undefined) this.relay(res, upstreamRes, session, protocol, remember);
    else void captured.then(() => this.relay(res, upstreamRes, session, protocol, remember));
  }

  /** Keeps a copy of an Idempotency-Key request's answer as it streams, and remembers it whole. */
  private rememberWhenSent(upstreamRes: http.IncomingMessage, session: RequestSession, as: RememberAs): void {
    const chunks: Buffer[] = [];
    let bytes = 0;
    upstreamRes.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      if (bytes <= MAX_REMEMBERED_BODY_BYTES) chunks.push(chunk);
    });
    upstreamRes.once('end', () => {
      if (bytes > MAX_REMEMBERED_BODY_BYTES) return;
      const answer: Answer = { status: upstreamRes.statusCode ?? 502, headers: headerLines(clientResponseHeaders(upstreamRes.headers)), body: Buffer.concat(chunks, bytes) };
      void this.replay.remember(session.id, as, answer);
    });
  }

  private relay(res: Response, upstreamRes: http.IncomingMessage, session: RequestSession, protocol: ProxyProtocol, remember?: RememberAs): void {
    const headers = clientResponseHeaders(upstreamRes.headers);
    if (session.minted || session.rotatedFrom !== undefined) appendSetCookie(headers, sessionSetCookie(this.options.config.sessionCookie, session.id, this.tls));
    if (this.draining && protocol === 'http/1.1') headers.connection = 'close';
    try {
      (res as http.ServerResponse).writeHead(upstreamRes.statusCode ?? 502, headers);
    } catch (err) {
      // A header HTTP/2 cannot carry, or a value Node refuses: the answer cannot be relayed.
      this.options.log.debug({ err: (err as Error).message }, 'proxy: answer headers refused');
      upstreamRes.destroy();
      this.fail(res, 502, 'baton: the web server answered with headers that cannot be relayed\n');
      return;
    }
    upstreamRes.on('error', () => destroyResponse(res));
    upstreamRes.pipe(res as NodeJS.WritableStream);
    // After the pipe: a data listener sets the stream flowing, and the client must get every chunk.
    if (remember !== undefined) this.rememberWhenSent(upstreamRes, session, remember);
  }

  private fail(res: Response, status: number, body: string): void {
    if (res.headersSent) {
      destroyResponse(res);
      return;
    }
    const headers: http.OutgoingHttpHeaders = { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body) };
    if ('req' in res && res.req?.httpVersion !== '2.0') headers.connection = 'close';
    try {
      (res as http.ServerResponse).writeHead(status, headers);
      res.end(body);
    } catch {
      destroyResponse(res);
    }
  }

  /** TCP handover: the descriptor of the listening socket (plain HTTP only), to hold new connections off. */
  listeningFd(): number | undefined {
    if (this.tlsServer !== undefined) return undefined;
    const fd = (this.h1 as unknown as { _handle?: { fd?: number } | null })._handle?.fd;
    return typeof fd === 'number' && fd >= 0 ? fd : undefined;
  }

  /** TCP handover: the plain HTTP/1.1 client connections open now (none with TLS; upgraded ones are not HTTP any more). */
  clientConnections(): Socket[] {
    return [...this.plainConnections].filter((socket) => !this.upgraded.has(socket) && !socket.destroyed);
  }

  /**
   * TCP handover: 'reading' while a request's bytes are being parsed (it must be read to its
   * end), 'answering' while an answer is unfinished or not yet handed to the kernel, 'idle'
   * otherwise — the judgement of node's own closeIdleConnections, plus the write queues.
   */
  connectionState(socket: Socket): ConnectionState {
    const parser = (socket as Socket & { parser?: unknown }).parser;
    if (parser !== undefined && parser !== null && activeParsers(this.h1).has(parser)) return 'reading';
    const message = (socket as Socket & { _httpMessage?: http.ServerResponse | null })._httpMessage;
    const queued = (socket as unknown as { _handle?: { writeQueueSize?: number } })._handle?.writeQueueSize ?? 0;
    if ((message !== undefined && message !== null) || socket.writableLength > 0 || queued > 0) return 'answering';
    return 'idle';
  }

  /** TCP handover: the session the connection's last request named. */
  sessionOf(socket: Socket): string | undefined {
    return (socket as Socket & { [LAST_SESSION]?: string })[LAST_SESSION];
  }

  /** TCP handover: a connection restored from a peer (or revived here) continues in this proxy. */
  adopt(socket: Socket): void {
    this.h1.emit('connection', socket);
  }

  /** TCP handover: resumes (claims) a session whose connection moves here, before its next request. */
  async resumeSession(sessionId: string): Promise<void> {
    await this.options.sessions.resume(sessionId);
  }

  private handleUpgrade(req: http.IncomingMessage, socket: Socket, head: Buffer): void {
    this.upgraded.add(socket);
    socket.once('close', () => this.upgraded.delete(socket));
    socket.on('error', () => socket.destroy());
    if (this.draining) {
      socket.end('HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
      return;
    }
    const { capture } = this.connectionOf(req);
    void this.capture.open(req.headers, capture).then(
      (session) => {
        this.options.tcp?.session(socket, session.id);
        const headers = upstreamRequestHeaders(req.headers, { remoteAddress: socket.remoteAddress, tls: this.tls }, this.capture.upstreamHeaders(session, capture), true);
        const cookie = session.minted ? sessionSetCookie(this.options.config.sessionCookie, session.id, this.tls) : undefined;
        relayUpgrade({
          upstreamReq: this.upstream.request(req.method ?? 'GET', req.url ?? '/', headers),
          client: socket,
          head,
          timeoutMs: this.options.config.proxyUpstreamTimeoutMs,
          answered: (status, upstreamHeaders) => {
            void this.capture.answer(session, upstreamHeaders, false);
            this.options.observer.request(status, 'http/1.1');
            const out = clientResponseHeaders(upstreamHeaders);
            if (cookie !== undefined) appendSetCookie(out, cookie);
            if (status === 101) {
              out.connection = 'upgrade';
              if (upstreamHeaders.upgrade !== undefined) out.upgrade = upstreamHeaders.upgrade;
            }
            return out;
          },
          upstreamError: (reason) => this.options.observer.upstreamError(reason),
        });
      },
      () => {
        this.options.observer.request(503, 'http/1.1');
        socket.end('HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
      },
    );
  }

  private clientError(err: NodeJS.ErrnoException, socket: Socket): void {
    if (!socket.writable) {
      socket.destroy();
      return;
    }
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : '400 Bad Request';
    socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
  }

  /**
   * Stops accepting, lets requests in flight finish within `timeoutMs`, closes idle
   * connections now and everything still open at the deadline. Idempotent.
   */
  close(timeoutMs: number): Promise<void> {
    this.closing ??= this.doClose(timeoutMs);
    return this.closing;
  }

  private doClose(timeoutMs: number): Promise<void> {
    this.draining = true;
    this.watcher?.stop();
    this.options.tcp?.close();
    const listening: http.Server | tls.Server = this.tlsServer ?? this.h1;
    return new Promise<void>((resolve) => {
      const handOff = setTimeout(() => {
        for (const handOffOne of [...this.awaitingAnswer]) handOffOne();
      }, Math.max(0, timeoutMs - Math.min(DRAIN_HANDOFF_MS, timeoutMs / 2)));
      const timer = setTimeout(() => {
        this.h1.closeAllConnections();
        for (const session of this.h2Sessions) session.destroy();
        for (const socket of this.upgraded) socket.destroy();
      }, Math.max(0, timeoutMs));
      listening.close(() => {
        clearTimeout(handOff);
        clearTimeout(timer);
        this.upstream.close();
        resolve();
      });
      if (listening !== this.h1) this.h1.close();
      this.h1.closeIdleConnections();
      for (const session of this.h2Sessions) session.close();
    });
  }
}

const BODY_TOO_LARGE = 'request body over --proxy-max-body-mb';
/** Why a draining node gave up on its web server's answer: the request went to a peer. */
const HANDED_OFF = 'handed to a peer: this node is draining';
/**
 * How long before the drain deadline requests still waiting for the web server are handed
 * to peers (at most half the drain): time for a peer's web server to answer them.
 */
const DRAIN_HANDOFF_MS = 5000;

/** An Idempotency-Key request, as its answer is remembered. */
interface RememberAs {
  key: string;
  method: string;
  target: string;
}

/** Bytes of a request's method, target and header lines, as the in-flight log counts them. */
function headBytes(req: Request): number {
  let bytes = (req.method?.length ?? 0) + (req.url?.length ?? 0);
  for (const field of req.rawHeaders) bytes += field.length + 2;
  return bytes;
}

/**
 * Resolves true once the whole request body has arrived, false if the client went away
 * first or it did not come within `withinMs`. The body no longer goes to the failed web
 * server: it is unpiped (a body-limit stage would otherwise hold it back once full) and set
 * flowing into the log alone.
 */
function bodyComplete(req: Request, withinMs: number): Promise<boolean> {
  const stream = req as NodeJS.ReadableStream & { readableEnded: boolean; destroyed: boolean; unpipe(): void };
  if (stream.readableEnded) return Promise.resolve(true);
  if (stream.destroyed) return Promise.resolve(false);
  return new Promise((resolve) => {
    const done = (complete: boolean) => {
      clearTimeout(timer);
      resolve(complete);
    };
    const timer = setTimeout(() => done(false), withinMs);
    stream.once('end', () => done(true));
    stream.once('close', () => done(stream.readableEnded));
    stream.once('error', () => done(false));
    stream.unpipe();
    stream.resume();
  });
}

/**
 * The parsers of node's HTTP server that are inside a message (its connection list, which
 * closeIdleConnections reads too; an internal of node's http module, found by its symbol's
 * description). Empty when this node version does not keep one.
 */
function activeParsers(server: http.Server): Set<unknown> {
  const key = Object.getOwnPropertySymbols(server).find((symbol) => symbol.description === 'http.server.connections');
  const list = key === undefined ? undefined : (server as unknown as Record<symbol, { active?: () => unknown[] } | undefined>)[key];
  return new Set(list?.active?.() ?? []);
}

/**
 * Whether a request has a body, and whether its length is known before it arrives: HTTP/1.1
 * without Transfer-Encoding has exactly Content-Length bytes (none without it, RFC 9112
 * §6.3); an HTTP/2 request has one unless its headers ended the stream, of a length only
 * its DATA frames tell.
 */
function requestBody(req: Request, declared: number): 'none' | 'sized' | 'unsized' {
  if ('stream' in req) return req.stream.endAfterHeaders ? 'none' : 'unsized';
  if (req.headers['transfer-encoding'] !== undefined) return 'unsized';
  return declared > 0 ? 'sized' : 'none';
}

/** Passes a request body on and fails the upstream request once it passes `limit` bytes. */
class BodyLimit extends Transform {
  private seen = 0;

  constructor(
    private readonly limit: number,
    target: http.ClientRequest,
  ) {
    super();
    this.pipe(target);
    this.on('error', (err) => target.destroy(err));
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.seen += chunk.length;
    if (this.seen > this.limit) callback(new Error(BODY_TOO_LARGE));
    else callback(null, chunk);
  }
}

function secureContextOptions(material: TlsMaterial): tls.SecureContextOptions {
  return material.ca === undefined ? { cert: material.cert, key: material.key } : { cert: material.cert, key: material.key, ca: material.ca };
}

function destroyResponse(res: Response): void {
  if ('stream' in res) res.stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
  else res.destroy();
}

/**
 * The verified client certificate's subject as one line ("CN=alice, O=Shop"): characters
 * outside printable ASCII are written \XX (RFC 4514 style) so the value is a valid header.
 */
function certificateSubject(socket: tls.TLSSocket): string | undefined {
  const subject = socket.getPeerX509Certificate()?.subject;
  if (subject === undefined || subject === '') return undefined;
  const line = subject.split('\n').join(', ');
  return Array.from(Buffer.from(line, 'utf8'))
    .map((b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : `\\${b.toString(16).toUpperCase().padStart(2, '0')}`))
    .join('');
}
