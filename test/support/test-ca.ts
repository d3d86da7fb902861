/**
 * A certificate authority for tests of file-based peer TLS, made the way cert-manager's CA
 * issuer makes one: RSA keys, SHA-256 signatures, a CA certificate and leaves it issues
 * (files ca.crt, tls.crt, tls.key). Keys come from Node (fast); certificates from node-forge.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import forge from 'node-forge';

export interface TestCa {
  certPem: string;
  keyPem: string;
}

export interface TestLeaf {
  certPem: string;
  keyPem: string;
}

const DAY_MS = 24 * 3600 * 1000;

function rsaKey(): { privatePem: string; publicPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, publicPem: publicKey.export({ type: 'spki', format: 'pem' }) as string };
}

function certificate(
  subject: string,
  publicPem: string,
  issuer: { name: string; keyPem: string },
  ca: boolean,
  validFrom: number,
  validTo: number,
  altNames: readonly string[] = [],
): string {
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(publicPem);
  cert.serialNumber = '01' + randomBytes(15).toString('hex');
  cert.validity.notBefore = new Date(validFrom);
  cert.validity.notAfter = new Date(validTo);
  cert.setSubject([{ name: 'commonName', value: subject }]);
  cert.setIssuer([{ name: 'commonName', value: issuer.name }]);
  cert.setExtensions(
    ca
      ? [
          { name: 'basicConstraints', cA: true, critical: true },
          { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
          { name: 'subjectKeyIdentifier' },
        ]
      : [
          { name: 'basicConstraints', cA: false },
          { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
          { name: 'extKeyUsage', serverAuth: true, clientAuth: true },
          { name: 'subjectKeyIdentifier' },
          ...(altNames.length === 0
            ? []
            : [{ name: 'subjectAltName', altNames: altNames.map((n) => (/^[\d.]+$/.test(n) ? { type: 7, ip: n } : { type: 2, value: n })) }]),
        ],
  );
  cert.sign(forge.pki.privateKeyFromPem(issuer.keyPem), forge.md.sha256.create());
  return forge.pki.certificateToPem(cert);
}

export function makeTestCa(name = 'test peer CA'): TestCa & { name: string } {
  const key = rsaKey();
  const now = Date.now();
  return { name, keyPem: key.privatePem, certPem: certificate(name, key.publicPem, { name, keyPem: key.privatePem }, true, now - DAY_MS, now + 365 * DAY_MS) };
}

/**
 * A leaf for `subject` issued by `ca`; `validTo` in ms since the epoch (default: a year on);
 * `altNames` (DNS names and IPv4 addresses) for a server certificate clients verify by name.
 */
export function issueTestLeaf(ca: TestCa & { name: string }, subject: string, validTo = Date.now() + 365 * DAY_MS, altNames: readonly string[] = []): TestLeaf {
  const key = rsaKey();
  return { keyPem: key.privatePem, certPem: certificate(subject, key.publicPem, { name: ca.name, keyPem: ca.keyPem }, false, Date.now() - DAY_MS, validTo, altNames) };
}
