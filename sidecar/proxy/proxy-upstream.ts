/**
 * The web server the proxy forwards to, over a keep-alive pool: node's http.Agent (or
 * https.Agent) with keepAlive, so requests reuse idle connections instead of connecting
 * each time. A Unix socket upstream speaks HTTP/1.1 over the socket path.
 */
import * as http from 'node:http';
import * as https from 'node:https';
import type { ProxyUpstream } from '../config/proxy-options';

/** Idle upstream connections kept per pool. */
const MAX_FREE_SOCKETS = 256;

/**
 * A pooled connection idle this long is closed by baton (ms): below the 5 s keep-alive
 * time-out of Node's own HTTP server, so baton rarely sends a request on a connection the
 * web server is closing at that moment (which fails as a reset, answered 502).
 */
const IDLE_SOCKET_MS = 4000;

export class Upstream {
  private readonly agent: http.Agent;
  /** Where every request goes (host and port, or the socket path): made once, not per request. */
  private readonly address: http.RequestOptions & { servername?: string };

  constructor(private readonly target: ProxyUpstream) {
    const options: http.AgentOptions = { keepAlive: true, maxFreeSockets: MAX_FREE_SOCKETS, scheduling: 'lifo', timeout: IDLE_SOCKET_MS };
    this.agent = target.kind === 'https' ? new https.Agent(options) : new http.Agent(options);
    if (target.kind === 'unix') this.address = { socketPath: target.path };
    else if (target.kind === 'https') this.address = { host: target.host, port: target.port, servername: /^[\d.]+$|:/.test(target.host) ? undefined : target.host };
    else this.address = { host: target.host, port: target.port };
  }

  /** Starts a request to the web server; the caller writes the body and ends it. */
  request(method: string, path: string, headers: http.OutgoingHttpHeaders): http.ClientRequest {
    const options = { ...this.address, method, path, headers, agent: this.agent };
    return this.target.kind === 'https' ? https.request(options) : http.request(options);
  }

  /** Closes every pooled connection: call once no request is in flight. */
  close(): void {
    this.agent.destroy();
  }
}
