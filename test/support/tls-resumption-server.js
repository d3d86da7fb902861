/**
 * A small TLS web server that terminates TLS itself and uses attachTlsResumption beside
 * its own sidecar, run by the integration tests as a child process (a process of its own,
 * as a pod's web server is: Node's default sessionIdContext differs between processes, so
 * a resumption across two of them is a real test of the shared one). Plain CommonJS, it
 * loads baton by the package name (dist/ through package.json "exports").
 *
 * Environment: APP_BATON_API (the sidecar's API address, required), APP_CERT_FILE and
 * APP_KEY_FILE (PEM, required), APP_NAME (answered in every body), APP_KIND (https, the
 * default, or http2: http2.createSecureServer with HTTP/1.1 allowed).
 * It listens on 127.0.0.1, a free port, and prints {"listening": port} on stdout once the
 * cluster's TLS settings are applied. SIGTERM closes the server and the client.
 */
'use strict';

const fs = require('node:fs');
const https = require('node:https');
const http2 = require('node:http2');
const { BatonClient, attachTlsResumption } = require('baton');

const address = process.env.APP_BATON_API;
if (!address) throw new Error('APP_BATON_API is required');
const name = process.env.APP_NAME ?? 'server';
const options = { cert: fs.readFileSync(process.env.APP_CERT_FILE), key: fs.readFileSync(process.env.APP_KEY_FILE) };

const handler = (req, res) => {
  res.setHeader('content-type', 'text/plain');
  res.end(`hello from ${name}\n`);
};
const server = process.env.APP_KIND === 'http2' ? http2.createSecureServer({ ...options, allowHTTP1: true }, handler) : https.createServer(options, handler);

const client = new BatonClient(address);
const resumption = attachTlsResumption(server, client, { onError: (err) => process.stderr.write(`tls resumption: ${err.message}\n`) });

resumption.ready().then(() => {
  server.listen(0, '127.0.0.1', () => {
    process.stdout.write(`${JSON.stringify({ listening: server.address().port })}\n`);
  });
});

process.on('SIGTERM', () => {
  resumption.detach();
  client.close();
  server.close();
  if (typeof server.closeAllConnections === 'function') server.closeAllConnections();
  setTimeout(() => process.exit(0), 100).unref();
});
