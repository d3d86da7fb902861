/**
 * The demo's certificates: a certificate authority made at start, and the one certificate
 * every pod's proxy presents, issued by it for 127.0.0.1 and localhost (all pods share one
 * name, as pods behind one Service do). The customer trusts the CA and nothing else, so
 * every handshake is verified (sidecar/net/certificates.ts makes them). The files live in a temporary directory that remove() deletes.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { issueCertificate, rsaKeyPair } from '../net/certificates';

const CA_NAME = 'baton demo CA';
const SERVER_NAMES = ['127.0.0.1', 'localhost'];
const HOUR_MS = 3600_000;
const VALID_MS = 24 * HOUR_MS;

export interface DemoCa {
  /** PEM of the CA certificate: what the customer trusts. */
  caPem: string;
  /** Paths for --tls-cert-file and --tls-key-file. */
  certFile: string;
  keyFile: string;
  /** Deletes the files. */
  remove(): void;
}

export function makeDemoCa(now: number = Date.now()): DemoCa {
  const ca = rsaKeyPair();
  const leaf = rsaKeyPair();
  // An hour back: a clock a little behind this one still accepts the certificates.
  const validity = { validFrom: now - HOUR_MS, validTo: now + VALID_MS };
  const caPem = issueCertificate({ subject: CA_NAME, publicPem: ca.publicPem, issuer: { selfSignedKeyPem: ca.privatePem }, ca: true, ...validity });
  const leafPem = issueCertificate({ subject: SERVER_NAMES[0]!, publicPem: leaf.publicPem, issuer: { name: CA_NAME, keyPem: ca.privatePem }, ca: false, altNames: SERVER_NAMES, ...validity });
  const dir = mkdtempSync(path.join(tmpdir(), 'baton-demo-'));
  const certFile = path.join(dir, 'tls.crt');
  const keyFile = path.join(dir, 'tls.key');
  writeFileSync(certFile, leafPem);
  writeFileSync(keyFile, leaf.privatePem, { mode: 0o600 });
  return { caPem, certFile, keyFile, remove: () => rmSync(dir, { recursive: true, force: true }) };
}
