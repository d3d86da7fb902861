/**
 * HTTP endpoints for operators: /metrics (Prometheus text format), /healthz (the process
 * is alive), /readyz (the node accepts work; fails while starting and draining), and the
 * status page at / with the data it polls at /status.json.
 */
import * as http from 'node:http';
import type { Registry } from 'prom-client';
import type { ListenAddress } from '../config/config';
import type { StatusPageData } from './status-page-data';
import { STATUS_PAGE_HEADERS, STATUS_PAGE_HTML } from './status-page';
import { listenOn } from '../net/listen';

export class HttpServer {
  private readonly server: http.Server;
  ready = false;

  /** statusPage supplies /status.json; without it, / and /status.json are not served. */
  constructor(registry: Registry, statusPage?: () => StatusPageData) {
    this.server = http.createServer((req, res) => {
      const url = (req.url ?? '/').split('?')[0];
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD' }).end();
        return;
      }
      switch (url) {
        case '/metrics':
          registry.metrics().then(
            (body) => res.writeHead(200, { 'content-type': registry.contentType }).end(body),
            () => res.writeHead(500).end('metrics collection failed\n'),
          );
          return;
        case '/healthz':
          res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
          return;
        case '/readyz':
          res.writeHead(this.ready ? 200 : 503, { 'content-type': 'text/plain' }).end(this.ready ? 'ready\n' : 'not ready\n');
          return;
        case '/':
          if (statusPage === undefined) break;
          res.writeHead(200, STATUS_PAGE_HEADERS).end(STATUS_PAGE_HTML);
          return;
        case '/status.json': {
          if (statusPage === undefined) break;
          let body: string;
          try {
            body = JSON.stringify(statusPage());
          } catch {
            res.writeHead(500, { 'content-type': 'text/plain' }).end('status collection failed\n');
            return;
          }
          res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' }).end(body);
          return;
        }
      }
      res.writeHead(404, { 'content-type': 'text/plain' }).end(`not found: try ${statusPage === undefined ? '' : '/, /status.json, '}/metrics, /healthz or /readyz\n`);
    });
    this.server.keepAliveTimeout = 65_000;
  }

  listen(address: ListenAddress): Promise<number> {
    return listenOn(this.server, address);
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}
