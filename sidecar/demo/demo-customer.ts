/**
 * The demo's customer: a browser-like HTTPS client that trusts only the demo's CA, keeps
 * its cookies, and keeps its TLS session — one keep-alive connection per pod, and the
 * newest session (ticket) it was given offered to the next pod it connects to, as a
 * browser offers its session to any server behind the same name.
 *
 * Rules:
 * - every answer that is not 200 is an error naming the route, the pod and the shop's reason;
 * - what the TLS layer did is read from the socket (isSessionReused), never assumed;
 * - forget(port) drops a pod's connection, so nothing is left open when the demo ends.
 */
import * as https from 'node:https';
import type { TLSSocket } from 'node:tls';
import type { ShopAnswer } from './demo-shop';

const MAX_ANSWER_BYTES = 64 * 1024;

export interface Visit {
  answer: ShopAnswer;
  /** Whether this request's connection was made with an abbreviated (resumed) handshake. */
  tlsReused: boolean;
  /** The connection's TLS version, e.g. TLSv1.3. */
  tlsProtocol: string;
}

export class Customer {
  private readonly cookies = new Map<string, string>();
  private readonly agents = new Map<number, https.Agent>();
  private readonly watched = new WeakSet<TLSSocket>();
  private tlsSession: Buffer | undefined;

  constructor(
    private readonly caPem: string,
    private readonly signal: AbortSignal,
  ) {}

  /** Sends one request to the pod whose proxy listens on 127.0.0.1:`port`. */
  send(port: number, method: 'GET' | 'POST', route: string, body?: unknown): Promise<Visit> {
    this.signal.throwIfAborted();
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const headers: Record<string, string> = {};
    if (this.cookies.size > 0) headers.cookie = [...this.cookies].map(([name, value]) => `${name}=${value}`).join('; ');
    if (payload !== undefined) headers['content-type'] = 'application/json';
    return new Promise<Visit>((resolve, reject) => {
      const request = https.request(
        {
          host: '127.0.0.1',
          port,
          method,
          path: route,
          headers,
          ca: this.caPem,
          agent: this.agentFor(port),
          // Only used when the agent opens a new connection (a pod this customer has not been on).
          ...(this.tlsSession === undefined ? {} : { session: this.tlsSession }),
          signal: this.signal,
        },
        (response) => {
          const socket = response.socket as TLSSocket;
          this.keepCookies(response.headers['set-cookie']);
          const chunks: Buffer[] = [];
          let size = 0;
          response.on('data', (chunk: Buffer) => {
            size += chunk.length;
            if (size > MAX_ANSWER_BYTES) response.destroy(new Error(`${method} ${route} on port ${port}: the answer is over ${MAX_ANSWER_BYTES} bytes`));
            else chunks.push(chunk);
          });
          response.once('error', reject);
          response.once('end', () => {
            let answer: ShopAnswer & { error?: string };
            try {
              answer = JSON.parse(Buffer.concat(chunks).toString('utf8')) as ShopAnswer & { error?: string };
            } catch {
              return reject(new Error(`${method} ${route} on port ${port} answered ${response.statusCode} without JSON`));
            }
            if (response.statusCode !== 200) return reject(new Error(`${method} ${route} on port ${port} answered ${response.statusCode}: ${answer.error ?? 'no reason given'}`));
            resolve({ answer, tlsReused: socket.isSessionReused(), tlsProtocol: socket.getProtocol() ?? 'unknown' });
          });
        },
      );
      request.on('socket', (socket) => this.watch(socket as TLSSocket));
      request.once('error', reject);
      request.end(payload);
    });
  }

  /** Closes the connection to the pod at `port` (a pod that is gone, or the end of the demo). */
  forget(port: number): void {
    this.agents.get(port)?.destroy();
    this.agents.delete(port);
  }

  forgetAll(): void {
    for (const port of [...this.agents.keys()]) this.forget(port);
  }

  private agentFor(port: number): https.Agent {
    let agent = this.agents.get(port);
    if (agent === undefined) {
      agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
      this.agents.set(port, agent);
    }
    return agent;
  }

  /** TLS 1.3 hands out tickets after the handshake: the newest one is the session to offer next. */
  private watch(socket: TLSSocket): void {
    if (this.watched.has(socket)) return;
    this.watched.add(socket);
    socket.on('session', (session: Buffer) => {
      this.tlsSession = session;
    });
  }

  private keepCookies(setCookie: string[] | undefined): void {
    for (const line of setCookie ?? []) {
      const [pair] = line.split(';', 1);
      const eq = pair!.indexOf('=');
      if (eq > 0) this.cookies.set(pair!.slice(0, eq).trim(), pair!.slice(eq + 1).trim());
    }
  }
}
