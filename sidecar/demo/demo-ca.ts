/**
 * The demo's certificates: a certificate authority made at start, and the one certificate
 * every pod's proxy presents, issued by it for 127.0.0.1 and localhost (all pods share one
 * name, as pods behind one Service do). The customer trusts the CA and nothing else, so
 * every handshake is verified. Keys come from node:crypto; node-forge writes the
 * certificates. The files live in a temporary directory that remove() deletes.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import forge from 'node-forge';

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
  const caPem = certificate(ca.publicPem, CA_NAME, ca.privatePem, true, now);
  const leafPem = certificate(leaf.publicPem, SERVER_NAMES[0]!, ca.privatePem, false, now);
  const dir = mkdtempSync(path.join(tmpdir(), 'baton-demo-'));
  const certFile = path.join(dir, 'tls.crt');
  const keyFile = path.join(dir, 'tls.key');
  writeFileSync(certFile, leafPem);
  writeFileSync(keyFile, leaf.privatePem, { mode: 0o600 });
  return { caPem, certFile, keyFile, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

function rsaKeyPair(): { privatePem: string; publicPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, publicPem: publicKey.export({ type: 'spki', format: 'pem' }) as string };
}

/** The CA's own certificate (isCa) or a server certificate for SERVER_NAMES, signed with the CA's key. */
function certificate(publicPem: string, subject: string, caKeyPem: string, isCa: boolean, now: number): string {
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(publicPem);
  cert.serialNumber = '01' + randomBytes(15).toString('hex');
  // An hour back: a clock a little behind this one still accepts the certificates.
  cert.validity.notBefore = new Date(now - HOUR_MS);
  cert.validity.notAfter = new Date(now + VALID_MS);
  cert.setSubject([{ name: 'commonName', value: subject }]);
  cert.setIssuer([{ name: 'commonName', value: CA_NAME }]);
  cert.setExtensions(
    isCa
      ? [
          { name: 'basicConstraints', cA: true, critical: true },
          { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
          { name: 'subjectKeyIdentifier' },
        ]
      : [
          { name: 'basicConstraints', cA: false },
          { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
          { name: 'extKeyUsage', serverAuth: true },
          { name: 'subjectAltName', altNames: SERVER_NAMES.map((n) => (/^[\d.]+$/.test(n) ? { type: 7, ip: n } : { type: 2, value: n })) },
        ],
  );
  cert.sign(forge.pki.privateKeyFromPem(caKeyPem), forge.md.sha256.create());
  return forge.pki.certificateToPem(cert);
}
