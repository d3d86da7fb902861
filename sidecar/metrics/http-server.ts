/**
 * HTTP endpoints for operators: /metrics (Prometheus text format), /healthz (the process
 * is alive), /readyz (the node accepts work; fails while starting and draining), and the
 * status page at / with the data it polls at /status.json.
 */
import * as http from 'node:http';
import { setImmediate as nextTurn } from 'node:timers/promises';
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
          renderMetrics(registry).then(
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

/** How long a scrape renders before it lets the event loop turn. */
const RENDER_SLICE_MS = 0.5;

/**
 * The registry in Prometheus' text format, as Registry#metrics writes it, but a slice at a
 * time: metric families are rendered until RENDER_SLICE_MS has passed, then the event loop
 * turns (datagrams, API calls and timers waiting go first) before the next. Rendered in one
 * go, the ~100 families of a sidecar held its event loop for ~2 ms a scrape, and for 8-16 ms
 * when the rendering code was cold, as it mostly is at a real scrape interval (15-30 s).
 * Families are read a slice apart; Registry#metrics reads them one after another too, with
 * no snapshot across them.
 */
export async function renderMetrics(registry: Registry): Promise<string> {
  const families: string[] = [];
  let sliceStart = performance.now();
  for (const { name } of registry.getMetricsAsArray()) {
    if (performance.now() - sliceStart >= RENDER_SLICE_MS) {
      await nextTurn();
      sliceStart = performance.now();
      // Removed while the loop turned: nothing to write.
      if (registry.getSingleMetric(name) === undefined) continue;
    }
    families.push(await registry.getSingleMetricAsString(name));
  }
  return `${families.join('\n\n')}\n`;
}
