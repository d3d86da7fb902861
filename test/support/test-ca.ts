/**
 * A certificate authority for tests of file-based peer TLS, made the way cert-manager's CA
 * issuer makes one: RSA keys, SHA-256 signatures, a CA certificate and leaves it issues
 * (files ca.crt, tls.crt, tls.key), with baton's own issuer (sidecar/net/certificates.ts).
 */
import { issueCertificate, rsaKeyPair } from '../../sidecar/net/certificates';

export interface TestCa {
  certPem: string;
  keyPem: string;
}

export interface TestLeaf {
  certPem: string;
  keyPem: string;
}

const DAY_MS = 24 * 3600 * 1000;

export function makeTestCa(name = 'test peer CA'): TestCa & { name: string } {
  const key = rsaKeyPair();
  const now = Date.now();
  const certPem = issueCertificate({ subject: name, publicPem: key.publicPem, issuer: { selfSignedKeyPem: key.privatePem }, ca: true, validFrom: now - DAY_MS, validTo: now + 365 * DAY_MS });
  return { name, keyPem: key.privatePem, certPem };
}

/**
 * A leaf for `subject` issued by `ca`; `validTo` in ms since the epoch (default: a year on);
 * `altNames` (DNS names and IPv4 addresses) for a server certificate clients verify by name.
 */
export function issueTestLeaf(ca: TestCa & { name: string }, subject: string, validTo = Date.now() + 365 * DAY_MS, altNames: readonly string[] = []): TestLeaf {
  const key = rsaKeyPair();
  const certPem = issueCertificate({
    subject,
    publicPem: key.publicPem,
    issuer: { name: ca.name, keyPem: ca.keyPem },
    ca: false,
    clientAuth: true,
    validFrom: Date.now() - DAY_MS,
    validTo,
    altNames,
  });
  return { keyPem: key.privatePem, certPem };
}
