/**
 * An RSA-2048 certificate for `localhost` and 127.0.0.1, issued by a CA made here, written as tls.crt and
 * tls.key into a directory: what the TLS benchmarks' servers (baton's proxy, nginx, the
 * library-mode web servers) all present, so every row pays for the same key. RSA-2048 is
 * what cert-manager issues by default (sidecar/net/certificates.ts makes it, with its CA).
 */
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { issueCertificate, rsaKeyPair } from '../../sidecar/net/certificates';

export interface CertificateFiles {
  certFile: string;
  keyFile: string;
  /** The PEM of the CA that issued it, for clients to trust. */
  certPem: string;
}

const DAY_MS = 24 * 3600 * 1000;

export function writeBenchCertificate(dir: string): CertificateFiles {
  const ca = rsaKeyPair();
  const leaf = rsaKeyPair();
  const validity = { validFrom: Date.now() - DAY_MS, validTo: Date.now() + 30 * DAY_MS };
  const caPem = issueCertificate({ subject: 'baton bench CA', publicPem: ca.publicPem, issuer: { selfSignedKeyPem: ca.privatePem }, ca: true, ...validity });
  const certPem = issueCertificate({
    subject: 'localhost',
    publicPem: leaf.publicPem,
    issuer: { name: 'baton bench CA', keyPem: ca.privatePem },
    ca: false,
    altNames: ['localhost', '127.0.0.1'],
    ...validity,
  });
  const certFile = path.join(dir, 'tls.crt');
  const keyFile = path.join(dir, 'tls.key');
  writeFileSync(certFile, certPem);
  writeFileSync(keyFile, leaf.privatePem, { mode: 0o600 });
  return { certFile, keyFile, certPem: caPem };
}
