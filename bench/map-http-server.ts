/**
 * The HTTP ceiling for bench/http.ts: a bare node:http server with keep-alive that answers
 * `PUT /v1/sessions/{id}/parts/{name}` and `GET` of the same path from a Map, the way baton's
 * HTTP API answers them (a JSON body with the version and an ETag on PUT; the raw bytes with
 * an ETag on GET; 404 when absent), with no validation, store or replication. It also holds
 * `GET /v1/sessions/{id}/changes` open until the client goes (at most MAX_PARKED, for
 * PARKED_HOLD_MS; `GET /parked` answers how many are held): the floor of what a parked
 * long-poll costs in node:http. Run as a child
 * process: binds 127.0.0.1 on a free port, prints "PORT <n>" on stdout, exits on SIGTERM or
 * when its stdin closes. Bodies are capped at MAX_BODY_BYTES so a stray client cannot grow it.
 */
import * as http from 'node:http';

const MAX_BODY_BYTES = 1024 * 1024;
const PREFIX = '/v1/sessions/';
const MAX_PARKED = 20_000;
const PARKED_HOLD_MS = 120_000;

function main(): void {
  const parts = new Map<string, { value: Buffer; version: number }>();
  let version = 0;
  const parked = new Set<http.ServerResponse>();
  const server = http.createServer((req, res) => {
    const url = req.url ?? '';
    if (req.method === 'GET' && url === '/parked') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end(String(parked.size));
      return;
    }
    if (req.method === 'GET' && url.startsWith(PREFIX) && url.includes('/changes')) {
      req.resume();
      if (parked.size >= MAX_PARKED) {
        res.writeHead(503).end();
        return;
      }
      parked.add(res);
      const timer = setTimeout(() => res.writeHead(204).end(), PARKED_HOLD_MS);
      res.on('close', () => {
        clearTimeout(timer);
        parked.delete(res);
      });
      return;
    }
    if (!url.startsWith(PREFIX) || !url.includes('/parts/')) {
      req.resume();
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"code":"not_found"}');
      return;
    }
    if (req.method === 'GET') {
      req.resume();
      const part = parts.get(url);
      if (part === undefined) res.writeHead(404, { 'content-type': 'application/json' }).end('{"code":"not_found"}');
      else res.writeHead(200, { etag: `"${part.version}"`, 'content-type': 'application/octet-stream', 'content-length': part.value.length }).end(part.value);
      return;
    }
    if (req.method !== 'PUT') {
      req.resume();
      res.writeHead(405).end();
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        res.writeHead(413, { connection: 'close' }).end();
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (res.headersSent) return;
      const entry = { value: Buffer.concat(chunks, size), version: ++version };
      parts.set(url, entry);
      const body = JSON.stringify({ version: String(entry.version), replicas_acked: 0 });
      res.writeHead(200, { etag: `"${entry.version}"`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body);
    });
  });
  server.keepAliveTimeout = 65_000;
  server.listen(0, '127.0.0.1', () => {
    const address = server.address();
    process.stdout.write(`PORT ${typeof address === 'object' && address !== null ? address.port : 0}\n`);
  });
  const stop = () => {
    const timer = setTimeout(() => process.exit(0), 2000);
    server.close(() => {
      clearTimeout(timer);
      process.exit(0);
    });
    server.closeAllConnections();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  // The parent going away (its end of stdin closes) also ends the server.
  process.stdin.on('end', stop).resume();
}

if (require.main === module) main();
