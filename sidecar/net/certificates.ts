/**
 * Certificates made by baton itself, with node-forge (keys come from node:crypto, which is
 * fast): the proxy's --tls-self-signed certificate, the demo's CA and server certificate,
 * and the certificates tests and benchmarks use. One issuer, so every certificate baton
 * makes carries the same extensions for the same role.
 *
 * Rules: RSA-2048 and SHA-256 (what cert-manager issues by default); a random 128-bit
 * serial; subject alternative names are DNS names or IP addresses (v4 or v6); a CA
 * certificate can sign certificates and CRLs and nothing else.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import forge from 'node-forge';

export interface KeyPair {
  privatePem: string;
  publicPem: string;
}

export function rsaKeyPair(): KeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, publicPem: publicKey.export({ type: 'spki', format: 'pem' }) as string };
}

export interface CertificateSpec {
  /** Common name of the subject. */
  subject: string;
  /** Organization of the subject (and of the issuer, for a self-signed certificate). */
  organization?: string;
  publicPem: string;
  /** Who signs: a CA's name and key, or the subject's own key (self-signed). */
  issuer: { name: string; keyPem: string } | { selfSignedKeyPem: string };
  /** A CA certificate (keyCertSign), or a leaf for servers (and clients when `clientAuth`). */
  ca: boolean;
  validFrom: number;
  validTo: number;
  altNames?: readonly string[];
  clientAuth?: boolean;
}

/** The certificate's PEM. */
export function issueCertificate(spec: CertificateSpec): string {
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(spec.publicPem);
  cert.serialNumber = '01' + randomBytes(15).toString('hex');
  cert.validity.notBefore = new Date(spec.validFrom);
  cert.validity.notAfter = new Date(spec.validTo);
  const subject = [{ name: 'commonName', value: spec.subject }, ...(spec.organization === undefined ? [] : [{ name: 'organizationName', value: spec.organization }])];
  cert.setSubject(subject);
  const selfSigned = 'selfSignedKeyPem' in spec.issuer;
  cert.setIssuer(selfSigned ? subject : [{ name: 'commonName', value: (spec.issuer as { name: string }).name }]);
  const altNames = spec.altNames ?? [];
  cert.setExtensions([
    ...(spec.ca
      ? [
          { name: 'basicConstraints', cA: true, critical: true },
          { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
        ]
      : [
          { name: 'basicConstraints', cA: false },
          { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
          { name: 'extKeyUsage', serverAuth: true, clientAuth: spec.clientAuth === true },
        ]),
    { name: 'subjectKeyIdentifier' },
    ...(altNames.length === 0 ? [] : [{ name: 'subjectAltName', altNames: altNames.map(altName) }]),
  ]);
  const signingKey = 'selfSignedKeyPem' in spec.issuer ? spec.issuer.selfSignedKeyPem : spec.issuer.keyPem;
  cert.sign(forge.pki.privateKeyFromPem(signingKey), forge.md.sha256.create());
  return forge.pki.certificateToPem(cert);
}

function altName(name: string): { type: number; ip?: string; value?: string } {
  return /^[\d.]+$|:/.test(name) ? { type: 7, ip: name } : { type: 2, value: name };
}
