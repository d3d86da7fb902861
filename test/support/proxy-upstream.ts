/**
 * A web server for the capture proxy's tests, in the test process on loopback: it answers
 * with what it received (method, path, headers, body digest) as JSON, declares a login on
 * /login and a logout on /logout, streams on /download, answers /big/<n> with n bytes, holds /slow until the test releases
 * it, handles Expect: 100-continue itself, and echoes WebSocket messages with the session
 * id it was told. Every request it saw is kept. Stop it with close().
 */
import { createHash } from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer } from 'ws';

export interface SeenRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
}

export class TestUpstream {
  readonly seen: SeenRequest[] = [];
  /** Requests to /slow waiting for release(), in arrival order. */
  readonly held: (() => void)[] = [];
  /** Set by a test to be called with each chunk /upload receives (before the request ends). */
  onUploadChunk: ((chunk: Buffer) => void) | undefined;
  /** /download sends its first chunk, then waits for this before the rest. */
  downloadGate: Promise<void> = Promise.resolve();
  continueAsked = 0;
  private readonly server: http.Server;
  private readonly wss: WebSocketServer;

  private constructor() {
    this.server = http.createServer((req, res) => this.answer(req, res));
    this.server.on('checkContinue', (req: http.IncomingMessage, res: http.ServerResponse) => {
      this.continueAsked++;
      res.writeContinue();
      this.answer(req, res);
    });
    this.wss = new WebSocketServer({ server: this.server });
    this.wss.on('connection', (socket, req) => {
      const session = req.headers['x-baton-session-id'];
      socket.on('message', (data) => socket.send(`${String(session)}:${String(data)}`));
    });
  }

  static async start(): Promise<TestUpstream> {
    const upstream = new TestUpstream();
    await new Promise<void>((resolve) => upstream.server.listen(0, '127.0.0.1', resolve));
    return upstream;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  private answer(req: http.IncomingMessage, res: http.ServerResponse): void {
    this.seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    const hash = createHash('sha256');
    let bytes = 0;
    req.on('data', (chunk: Buffer) => {
      hash.update(chunk);
      bytes += chunk.length;
      if (req.url === '/upload') this.onUploadChunk?.(chunk);
    });
    req.on('end', () => {
      const url = req.url ?? '/';
      if (url === '/login') {
        res.setHeader('x-baton-auth-subject', 'alice');
        res.setHeader('x-baton-auth-scopes', 'read write');
      }
      if (url === '/logout') res.setHeader('x-baton-auth-subject', '');
      if (url === '/download') {
        void this.download(res);
        return;
      }
      const big = /^\/big\/(\d{1,9})$/.exec(url);
      if (big !== null) {
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': Number(big[1]) }).end(Buffer.alloc(Number(big[1]), 7));
        return;
      }
      const body = JSON.stringify({ method: req.method, url, headers: req.headers, bytes, sha256: hash.digest('hex') });
      const send = () => res.writeHead(200, { 'content-type': 'application/json', 'x-baton-internal': 'hidden' }).end(body);
      if (url === '/slow') this.held.push(send);
      else send();
    });
  }

  private async download(res: http.ServerResponse): Promise<void> {
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    res.write(Buffer.alloc(64 * 1024, 1));
    await this.downloadGate;
    for (let i = 0; i < 63; i++) res.write(Buffer.alloc(64 * 1024, 1));
    res.end();
  }

  /** The last request the web server saw for `url`. */
  last(url: string): SeenRequest {
    const found = [...this.seen].reverse().find((r) => r.url === url);
    if (found === undefined) throw new Error(`the web server saw no request for ${url}`);
    return found;
  }

  async close(): Promise<void> {
    for (const client of this.wss.clients) client.terminate();
    this.wss.close();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
