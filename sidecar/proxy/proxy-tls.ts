/**
 * The proxy's TLS material: the certificate and key from --tls-cert-file/--tls-key-file
 * (polled, and loaded again when either changes, as cert-manager rotates them; a pair
 * that does not load keeps the previous one in service and is logged), the client roots of
 * --tls-client-ca-file, or a self-signed certificate made at start with node-forge
 * (--tls-self-signed, development only). Keys come from node:crypto; node-forge only
 * writes the certificate.
 */
import { readFileSync, unwatchFile, watchFile, type Stats } from 'node:fs';
import { hostname } from 'node:os';
import { createSecureContext } from 'node:tls';
import { issueCertificate, rsaKeyPair } from '../net/certificates';
import type { Logger } from 'pino';

export interface TlsMaterial {
  cert: string;
  key: string;
  /** Roots client certificates must chain to (mTLS); undefined = no client certificates. */
  ca: string | undefined;
}

/** How often the certificate files are checked for a change (stat, no read), in ms. */
export const TLS_FILE_POLL_MS = 2000;

const SELF_SIGNED_DAYS = 30;

/**
 * A self-signed certificate for `names` (DNS names and IP addresses) valid from an hour
 * ago for SELF_SIGNED_DAYS: RSA-2048, SHA-256, serverAuth.
 */
export function selfSignedMaterial(names: readonly string[], now: number = Date.now()): TlsMaterial {
  const key = rsaKeyPair();
  const cert = issueCertificate({
    subject: names[0] ?? 'baton',
    organization: 'baton self-signed',
    publicPem: key.publicPem,
    issuer: { selfSignedKeyPem: key.privatePem },
    ca: false,
    validFrom: now - 3600_000,
    validTo: now + SELF_SIGNED_DAYS * 24 * 3600_000,
    altNames: names,
  });
  return { cert, key: key.privatePem, ca: undefined };
}

/** The names a self-signed certificate is made for: this host, the node id, the listen host, loopback. */
export function selfSignedNames(nodeId: string, listenHost: string | undefined): string[] {
  const names = [hostname(), nodeId, 'localhost', '127.0.0.1', '::1'];
  if (listenHost !== undefined && listenHost !== '0.0.0.0' && listenHost !== '::') names.push(listenHost);
  return [...new Set(names.filter((n) => /^[A-Za-z0-9.:-]{1,253}$/.test(n)))];
}

export interface TlsFilePaths {
  certFile: string;
  keyFile: string;
  caFile: string;
}

/** Reads the files; throws when they do not load together. */
export function readTlsFiles(paths: TlsFilePaths): TlsMaterial {
  const material = {
    cert: readFileSync(paths.certFile, 'utf8'),
    key: readFileSync(paths.keyFile, 'utf8'),
    ca: paths.caFile === '' ? undefined : readFileSync(paths.caFile, 'utf8'),
  };
  createSecureContext(material);
  return material;
}

/**
 * Watches the certificate, key and client-root files and calls `reload` with the new
 * material once all of them load together again. Stop with stop().
 */
export class TlsFileWatcher {
  private readonly files: string[];
  private readonly listener = (current: Stats, previous: Stats) => {
    if (current.mtimeMs !== previous.mtimeMs || current.ino !== previous.ino || current.size !== previous.size) this.check();
  };

  constructor(
    private readonly paths: TlsFilePaths,
    private readonly reload: (material: TlsMaterial) => void,
    private readonly log: Logger,
    private readonly onResult: (result: 'ok' | 'error') => void,
    pollMs: number = TLS_FILE_POLL_MS,
  ) {
    this.files = [paths.certFile, paths.keyFile, paths.caFile].filter((p) => p !== '');
    for (const file of this.files) watchFile(file, { interval: pollMs, persistent: false }, this.listener);
  }

  private check(): void {
    let material: TlsMaterial;
    try {
      material = readTlsFiles(this.paths);
    } catch (err) {
      // A rotation writes the files one by one: the pair may not match until the last one lands.
      this.log.warn({ err: (err as Error).message, cert: this.paths.certFile }, 'proxy TLS files changed but do not load; the previous certificate stays in service');
      this.onResult('error');
      return;
    }
    this.reload(material);
    this.onResult('ok');
    this.log.info({ cert: this.paths.certFile }, 'proxy TLS certificate loaded again');
  }

  stop(): void {
    for (const file of this.files) unwatchFile(file, this.listener);
  }
}
