/**
 * Upgrade (WebSocket) pass-through: the client's Upgrade request goes to the web server;
 * a 101 answer joins the two sockets byte for byte until either side closes, any other
 * answer is relayed as a plain response and the connection closed. The answer's head is
 * written here by hand (the client socket has left the HTTP server); its headers come from
 * the caller (`answered`), which strips and adds what the proxy's rules say.
 */
import type { ClientRequest, IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders } from 'node:http';
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import type { UpstreamErrorReason } from '../metrics/proxy-observer';

export interface UpgradeRelay {
  upstreamReq: ClientRequest;
  client: Socket;
  /** Bytes the client sent after its request head (already read by the HTTP parser). */
  head: Buffer;
  timeoutMs: number;
  /** The headers the client gets, given the web server's status and headers. */
  answered(status: number, headers: IncomingHttpHeaders): OutgoingHttpHeaders;
  upstreamError(reason: UpstreamErrorReason): void;
}

export function relayUpgrade(relay: UpgradeRelay): void {
  const { upstreamReq, client } = relay;
  const timer = setTimeout(() => {
    relay.upstreamError('timeout');
    upstreamReq.destroy();
    client.end(plainAnswer(504));
  }, relay.timeoutMs);
  client.once('close', () => {
    clearTimeout(timer);
    upstreamReq.destroy();
  });
  upstreamReq.on('upgrade', (upstreamRes: IncomingMessage, upstream: Socket, upstreamHead: Buffer) => {
    clearTimeout(timer);
    client.write(responseHead(101, relay.answered(101, upstreamRes.headers)));
    if (upstreamHead.length > 0) client.write(upstreamHead);
    if (relay.head.length > 0) upstream.write(relay.head);
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
    upstream.once('close', () => client.destroy());
    client.once('close', () => upstream.destroy());
    upstream.pipe(client);
    client.pipe(upstream);
  });
  upstreamReq.on('response', (upstreamRes: IncomingMessage) => {
    clearTimeout(timer);
    const status = upstreamRes.statusCode ?? 502;
    const headers = relay.answered(status, upstreamRes.headers);
    headers.connection = 'close';
    delete headers['content-length'];
    client.write(responseHead(status, headers));
    upstreamRes.pipe(client);
  });
  upstreamReq.on('error', (err: NodeJS.ErrnoException) => {
    clearTimeout(timer);
    relay.upstreamError(err.code === 'ECONNREFUSED' || err.code === 'ENOENT' ? 'connect' : 'reset');
    if (client.writable) client.end(plainAnswer(502));
  });
  upstreamReq.end();
}

/** An HTTP/1.1 response head; header values came through Node's parser, so they hold no CR or LF. */
function responseHead(status: number, headers: OutgoingHttpHeaders): string {
  let head = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n`;
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    for (const line of Array.isArray(value) ? value : [value]) head += `${name}: ${String(line)}\r\n`;
  }
  return head + '\r\n';
}

function plainAnswer(status: number): string {
  return `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`;
}
