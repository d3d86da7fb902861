/**
 * Re-injection: a request the web server failed to answer (refused, reset, crashed) is sent
 * to a peer node's proxy over PeerService.Replay, and the peer's answer goes to the client on
 * its original connection. Both ends live here: `reinject` on the node whose web server
 * failed, `serve` on the peer, which resumes the session (the usual resume: its web server
 * is told x-baton-resumed-from), applies the same capture rules as to any client request,
 * and forwards the request to its own web server.
 *
 * Rules:
 * - only a request replayable by src/capture/replay-rule.ts, whose whole body the in-flight
 *   log held (replay-log.ts), is re-injected; anything else fails as before (502);
 * - peers: live members only, the session partition's replicas first; at most
 *   MAX_ATTEMPTS peers, all within one deadline; a peer's refusal or silence moves on to the
 *   next one, never back to a peer already tried;
 * - a request carrying an Idempotency-Key is answered from the session's remembered
 *   answers when its key is there (idempotency-answers.ts), on either end, without reaching
 *   a web server; a fresh answer is remembered (with a secondary, before it is sent back);
 * - what a peer sends is checked like client input (method, target, header names and
 *   values, sizes, the replay rule) and every x-baton-* header it carries is dropped by the
 *   usual capture rules: an authenticated peer cannot make this node's web server see what
 *   a client could not send;
 * - the answer a peer sends back is bounded (MAX_ANSWER_BYTES each, and all answers being
 *   read for peers together) and filtered again before the client sees it.
 */
import type * as http from 'node:http';
import type { Logger } from 'pino';
import { clientResponseHeaders, upstreamRequestHeaders } from '../../src/capture/upstream-headers';
import { idempotencyKey, replayable } from '../../src/capture/replay-rule';
import { IDEMPOTENCY_PART, lookupAnswer, rememberAnswer, type Answer } from '../../src/capture/idempotency-answers';
import type { HttpHeader, ReplayRequest, ReplayResponse } from '../../src/gen/baton/v1/peer';
import { InvalidArgumentError, PreconditionFailedError, ResourceExhaustedError, UnavailableError } from '../../src/wire/errors';
import { checkSessionId } from '../../src/wire/validation';
import type { ProxyConfig } from '../config/proxy-options';
import type { ProxyObserver } from '../metrics/proxy-observer';
import type { ProxyCapture, RequestSession } from './proxy-capture';
import type { ProxySessionStore } from './proxy-sessions';
import { REPLAY_MAX_REQUEST_BYTES, ReplayLog, type ReplayEntry } from './replay-log';
import type { Upstream } from './proxy-upstream';

/** Peers one re-injection tries at most. */
export const MAX_ATTEMPTS = 3;
/** The longest a re-injection takes, all attempts together (ms); --proxy-upstream-timeout-ms if shorter. */
export const REPLAY_DEADLINE_MS = 30_000;
/** Largest answer a peer sends back (status, headers and body), in bytes. */
export const MAX_ANSWER_BYTES = 8 * 1024 * 1024;
/** Most header lines a replayed request may carry. */
const MAX_HEADER_LINES = 256;
const METHOD = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,32}$/;
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9a-z]{1,256}$/;
// Field values: visible characters, spaces and tabs (RFC 9110 §5.5), no CR, LF or NUL.
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
const TARGET = /^\/[\x21-\x7e]*$/;

/** How long one re-injection may take, all attempts (and the rest of the client's body) together. */
export function replayDeadlineMs(config: ProxyConfig): number {
  return Math.min(REPLAY_DEADLINE_MS, config.proxyUpstreamTimeoutMs);
}

/** The peers a re-injection may go to, from the node's membership and peer connections. */
export interface ReplayPeers {
  /** Live peers for a session, best first (its partition's replicas first); never this node. */
  candidates(sessionId: string): readonly { nodeId: string; address: string }[];
  /** Calls PeerService.Replay on one peer; rejects on any gRPC error or past the deadline. */
  send(address: string, request: ReplayRequest, deadlineMs: number): Promise<ReplayResponse>;
}

/** What the origin knows of the client's request when it asks a peer to answer it. */
export interface OriginRequest {
  session: RequestSession;
  method: string;
  target: string;
  headers: http.IncomingHttpHeaders;
  clientAddress: string | undefined;
  clientTls: boolean;
}

export type ReinjectionResult = { kind: 'answered'; response: ReplayResponse } | { kind: 'no_peer' } | { kind: 'failed' };

export interface ProxyReplayOptions {
  config: ProxyConfig & { nodeId: string };
  sessions: ProxySessionStore;
  capture: ProxyCapture;
  upstream: Upstream;
  observer: ProxyObserver;
  log: Logger;
  peers: ReplayPeers | undefined;
  clock?: () => number;
}

export class ProxyReplay {
  private readonly clock: () => number;
  /**
   * The answers this node is reading for peers' re-injections, bounded together like the
   * in-flight log (--replay-buffer-mb, at least one whole answer): a flood of replays, or of
   * large answers, is refused RESOURCE_EXHAUSTED (the origin tries its next peer) instead of
   * growing memory.
   */
  private readonly answers: ReplayLog;

  constructor(private readonly options: ProxyReplayOptions) {
    this.clock = options.clock ?? Date.now;
    this.answers = new ReplayLog(Math.max(options.config.replayBufferBytes, MAX_ANSWER_BYTES), MAX_ANSWER_BYTES);
  }

  // --- the origin: the node whose web server failed ---------------------------------

  /** Sends a logged request to peers until one answers; the entry leaves the log either way. */
  async reinject(entry: ReplayEntry, origin: OriginRequest, bodyComplete: Promise<boolean>): Promise<ReinjectionResult> {
    const deadline = this.clock() + replayDeadlineMs(this.options.config);
    try {
      const peers = this.options.peers?.candidates(origin.session.id).slice(0, MAX_ATTEMPTS) ?? [];
      if (peers.length === 0) return { kind: 'no_peer' };
      // The client may still be sending the body; the replay needs all of it.
      if (!(await bodyComplete) || entry.state !== 'logging') return { kind: 'failed' };
      const request: ReplayRequest = {
        originNodeId: this.options.config.nodeId,
        sessionId: origin.session.id,
        method: origin.method,
        target: origin.target,
        headers: headerLines(origin.headers),
        body: entry.body(),
        clientAddress: origin.clientAddress ?? '',
        clientTls: origin.clientTls,
      };
      for (const peer of peers) {
        const left = deadline - this.clock();
        if (left <= 0) break;
        try {
          const response = await this.options.peers!.send(peer.address, request, left);
          return { kind: 'answered', response };
        } catch (err) {
          this.options.log.debug({ peer: peer.nodeId, err: (err as Error).message }, 'proxy: re-injection refused by a peer; trying the next');
        }
      }
      return { kind: 'failed' };
    } finally {
      entry.release();
    }
  }

  // --- the peer: answers a request another node's web server failed -----------------

  /** Serves PeerService.Replay; throws BatonErrors (the peer service maps them to statuses). */
  async serve(request: ReplayRequest): Promise<ReplayResponse> {
    const headers = checkedRequest(request, this.options.config.proxyMaxHeaderBytes);
    const connection = { tls: undefined, clientCertSubject: undefined, tlsWritten: new Set<string>() };
    let session: RequestSession;
    try {
      session = await this.options.capture.open(headers, connection, request.sessionId);
    } catch {
      throw new UnavailableError('the session store is unavailable');
    }
    const key = idempotencyKey(headers);
    if (key !== undefined) {
      const found = this.remembered(session.id, key, request.method, request.target);
      if (found !== undefined) return { ...found, sessionId: session.id, remembered: true };
    }
    const upstreamHeaders = upstreamRequestHeaders(
      headers,
      { remoteAddress: request.clientAddress === '' ? undefined : request.clientAddress, tls: request.clientTls },
      this.options.capture.upstreamHeaders(session, connection),
      false,
    );
    if (request.body.length > 0 || headers['content-length'] !== undefined) upstreamHeaders['content-length'] = String(request.body.length);
    const admission = this.answers.admit(request.target.length, 0);
    if (admission.kind !== 'logged') throw new ResourceExhaustedError('replay: this node is reading as many answers for peers as it holds; try another');
    let answered;
    try {
      answered = await this.forward(request.method, request.target, upstreamHeaders, request.body, admission.entry);
    } finally {
      admission.entry.release();
    }
    await this.options.capture.answer(session, answered.rawHeaders);
    const answer: Answer = { status: answered.status, headers: headerLines(clientResponseHeaders(answered.rawHeaders)), body: answered.body };
    if (key !== undefined) await this.remember(session.id, { key, method: request.method, target: request.target }, answer);
    return { ...answer, sessionId: session.id, remembered: false };
  }

  /** One request to this node's web server, its answer read whole into `held` (up to MAX_ANSWER_BYTES, within the shared budget). */
  private forward(
    method: string,
    target: string,
    headers: http.OutgoingHttpHeaders,
    body: Uint8Array,
    held: ReplayEntry,
  ): Promise<{ status: number; rawHeaders: http.IncomingHttpHeaders; body: Buffer }> {
    return new Promise((resolve, reject) => {
      const upstreamReq = this.options.upstream.request(method, target, headers);
      let settled = false;
      // After the answer head, failures surface on the answer, not the request: both end here once.
      const fail = (err: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        upstreamReq.destroy();
        reject(err);
      };
      const timer = setTimeout(() => {
        this.options.observer.upstreamError('timeout');
        fail(new UnavailableError('the web server did not answer in time'));
      }, this.options.config.proxyUpstreamTimeoutMs);
      upstreamReq.on('error', (err) => fail(new UnavailableError(`the web server did not answer: ${err.message}`)));
      upstreamReq.on('response', (res: http.IncomingMessage) => {
        res.on('data', (chunk: Buffer) => {
          if (settled || held.add(chunk)) return;
          res.destroy();
          fail(new ResourceExhaustedError(`replay: the answer is over ${MAX_ANSWER_BYTES} bytes, or over what this node holds for peers`));
        });
        res.on('error', (err) => fail(new UnavailableError(`the web server's answer broke off: ${err.message}`)));
        res.on('close', () => {
          if (!res.complete) fail(new UnavailableError("the web server's answer broke off"));
        });
        res.on('end', () => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          resolve({ status: res.statusCode ?? 502, rawHeaders: res.headers, body: held.body() });
        });
      });
      if (body.length > 0) upstreamReq.end(body);
      else upstreamReq.end();
    });
  }

  // --- remembered Idempotency-Key answers (both ends) --------------------------------

  /** The answer the session remembers for this key, if any; a key reused on another request is a 422. */
  remembered(sessionId: string, key: string, method: string, target: string): Answer | undefined {
    const found = lookupAnswer(this.options.sessions.readPart(sessionId, IDEMPOTENCY_PART), key, method, target);
    if (found.kind === 'none') return undefined;
    if (found.kind === 'mismatch') {
      const body = Buffer.from('baton: this Idempotency-Key was used for another request\n');
      return { status: 422, headers: [{ name: 'content-type', value: 'text/plain; charset=utf-8' }], body };
    }
    this.options.observer.idempotentRepeat();
    return found.answer;
  }

  /** Remembers an answer in the session, held by a secondary before it resolves (at most LOGIN_ACK_WAIT_MS). */
  async remember(sessionId: string, request: { key: string; method: string; target: string }, answer: Answer): Promise<void> {
    const value = rememberAnswer(this.options.sessions.readPart(sessionId, IDEMPOTENCY_PART), { ...request, atUnixMs: this.clock() }, answer);
    if (value === undefined) return;
    try {
      await this.options.sessions.put(sessionId, [{ name: IDEMPOTENCY_PART, value }], true);
    } catch (err) {
      this.options.observer.capture('write_failed');
      this.options.log.warn({ err: (err as Error).message }, 'proxy: an Idempotency-Key answer was not remembered');
    }
  }
}

/** Header lines from Node's header object (a list value is several lines); HTTP/2 pseudo-headers left out. */
export function headerLines(headers: http.IncomingHttpHeaders | http.OutgoingHttpHeaders): HttpHeader[] {
  const lines: HttpHeader[] = [];
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined || name.startsWith(':')) continue;
    if (Array.isArray(value)) for (const v of value) lines.push({ name, value: String(v) });
    else lines.push({ name, value: String(value) });
  }
  return lines;
}

/** Node's header object from header lines: repeated names joined as Node's parser joins them. */
export function headerObject(lines: readonly HttpHeader[]): http.OutgoingHttpHeaders {
  const out: http.OutgoingHttpHeaders = {};
  for (const { name, value } of lines) {
    const existing = out[name];
    if (existing === undefined) out[name] = name === 'set-cookie' ? [value] : value;
    else if (Array.isArray(existing)) existing.push(value);
    else out[name] = `${String(existing)}, ${value}`;
  }
  return out;
}

/** A peer's request checked as client input would be; its headers as the proxy reads a client's. */
function checkedRequest(request: ReplayRequest, maxHeaderBytes: number): http.IncomingHttpHeaders {
  try {
    checkSessionId(request.sessionId);
  } catch (err) {
    throw new InvalidArgumentError(`replay: ${(err as Error).message}`);
  }
  if (!METHOD.test(request.method)) throw new InvalidArgumentError('replay: the method is not an HTTP token');
  if (request.target.length > maxHeaderBytes || !TARGET.test(request.target)) throw new InvalidArgumentError('replay: the target is not an origin-form path');
  if (request.headers.length > MAX_HEADER_LINES) throw new InvalidArgumentError(`replay: more than ${MAX_HEADER_LINES} header lines`);
  let headerBytes = 0;
  const headers: http.IncomingHttpHeaders = {};
  for (const { name, value } of request.headers) {
    headerBytes += name.length + value.length + 4;
    if (!HEADER_NAME.test(name) || !HEADER_VALUE.test(value)) throw new InvalidArgumentError('replay: a header line is not a valid lowercase field');
    const existing = headers[name];
    if (existing === undefined) headers[name] = name === 'set-cookie' ? [value] : value;
    else if (Array.isArray(existing)) existing.push(value);
    else headers[name] = name === 'cookie' ? `${existing}; ${value}` : `${existing}, ${value}`;
  }
  if (headerBytes > maxHeaderBytes) throw new InvalidArgumentError(`replay: headers over ${maxHeaderBytes} bytes`);
  if (request.body.length > REPLAY_MAX_REQUEST_BYTES) throw new InvalidArgumentError(`replay: a body over ${REPLAY_MAX_REQUEST_BYTES} bytes`);
  if (!replayable(request.method, headers)) throw new PreconditionFailedError('replay: the request is not safe to repeat (method, or no Idempotency-Key)');
  return headers;
}
