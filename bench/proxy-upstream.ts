/**
 * The web server behind the proxies of bench:proxy: node:http answering every request with
 * the same body of BENCH_RESPONSE_BYTES (default 1024; keep-alive, content-length), as a
 * pod's application would. With
 * BENCH_CERT_FILE and BENCH_KEY_FILE it also listens for HTTPS with that certificate (the
 * "direct over HTTPS" reference row). It prints {"http": port, "https": port or null} once
 * listening on 127.0.0.1; SIGTERM (or stdin closing) stops it.
 */
import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';

const body = Buffer.alloc(Number(process.env.BENCH_RESPONSE_BYTES ?? 1024), 'x');
const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
  req.resume();
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
  res.end(body);
};

const servers: http.Server[] = [];
// The proxies keep their upstream connections open between requests: never time them out first.
const plain = http.createServer({ keepAliveTimeout: 120_000 }, handler);
servers.push(plain);
const certFile = process.env.BENCH_CERT_FILE;
const keyFile = process.env.BENCH_KEY_FILE;
const secure = certFile && keyFile ? https.createServer({ cert: readFileSync(certFile), key: readFileSync(keyFile), keepAliveTimeout: 120_000 }, handler) : undefined;
if (secure !== undefined) servers.push(secure);

function listen(server: http.Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)));
}

void Promise.all([listen(plain), secure === undefined ? Promise.resolve(null) : listen(secure)]).then(([httpPort, httpsPort]) => {
  process.stdout.write(`${JSON.stringify({ http: httpPort, https: httpsPort })}\n`);
});

function stop(): void {
  for (const server of servers) {
    server.close();
    server.closeAllConnections();
  }
  setTimeout(() => process.exit(0), 100).unref();
}
process.on('SIGTERM', stop);
process.stdin.on('end', stop);
process.stdin.resume();
