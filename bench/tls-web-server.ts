/**
 * A web server that terminates TLS itself and resumes sessions through baton's library
 * mode (attachTlsResumption beside its own sidecar), run by bench:handshakes as a process
 * of its own, as a pod's web server is. It answers every request with a short text.
 *
 * Environment: BENCH_BATON_API (its sidecar's API address), BENCH_CERT_FILE and
 * BENCH_KEY_FILE (PEM), BENCH_SERVER_NAME (in the answers). It listens on 127.0.0.1, a free
 * port, and prints {"listening": port} once the cluster's TLS settings are applied; errors
 * of the resumption source go to stderr. SIGTERM (or stdin closing) stops it.
 */
import { readFileSync } from 'node:fs';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import { attachTlsResumption, BatonClient } from '../src/index';

function required(name: string): string {
  const value = process.env[name];
  if (value === undefined || value === '') throw new Error(`${name} is required`);
  return value;
}

const name = process.env.BENCH_SERVER_NAME ?? 'server';
const server = https.createServer({ cert: readFileSync(required('BENCH_CERT_FILE')), key: readFileSync(required('BENCH_KEY_FILE')) }, (_req, res) => {
  res.setHeader('content-type', 'text/plain');
  res.end(`hello from ${name}\n`);
});
// Clients that hang up right after the handshake (the benchmark's) are not errors worth a line.
server.on('tlsClientError', () => undefined);

const client = new BatonClient(required('BENCH_BATON_API'));
const resumption = attachTlsResumption(server, client, { onError: (err) => process.stderr.write(`tls resumption: ${err.message}\n`) });

void resumption.ready().then(() => {
  server.listen(0, '127.0.0.1', () => process.stdout.write(`${JSON.stringify({ listening: (server.address() as AddressInfo).port })}\n`));
});

function stop(): void {
  resumption.detach();
  client.close();
  server.close();
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 100).unref();
}
process.on('SIGTERM', stop);
process.stdin.on('end', stop);
process.stdin.resume();
