/**
 * Peer TLS certificates: the cluster trust root and this node's own certificate, from the
 * cluster key or from files an operator (or cert-manager) provides.
 *
 * Rules and invariants:
 * - A root derived from a cluster key is the same on every node and at every start: its
 *   Ed25519 key comes from HKDF-SHA256(cluster key, info 'baton/peer-tls-root/v1'), its
 *   fields are fixed, and Ed25519 signatures are deterministic, so the certificate is
 *   byte-for-byte identical. Every accepted key's root is trusted; the first key's root
 *   issues this node's certificate (the rotation order of src/wire/cluster-key.ts).
 * - Each start makes a fresh Ed25519 leaf key that never leaves the process; its
 *   certificate serves both ends of a connection (server and client auth).
 * - Peers dial by IP:port, so a peer is trusted for the chain to a cluster root alone; the
 *   host name in a certificate is not checked.
 * - Certificates are built here (node-forge's ASN.1 encoder, Node's Ed25519 signer)
 *   because forge signs only with RSA, and a deterministic RSA root takes seconds of pure
 *   JavaScript per start.
 * - Key material never appears in errors; `PeerTlsMaterial.keyPem` is non-enumerable.
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, hkdfSync, type KeyObject, randomBytes, sign, X509Certificate } from 'node:crypto';
import type forge from 'node-forge';
import type { ClusterKey } from './cluster-key';
import { ConfigError } from './errors';

const ROOT_SEED_INFO = 'baton/peer-tls-root/v1';
/** PKCS#8 wrapping of a raw 32-byte Ed25519 seed (RFC 8410): this prefix, then the seed. */
const ED25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const ED25519_OID = '1.3.101.112';
/** How far back a leaf's validity starts: peers' clocks may run behind this node's. */
const LEAF_BACKDATE_MS = 24 * 3600 * 1000;
/** Leaf lifetime: the key lives only as long as the process, so a long lifetime costs nothing. */
const LEAF_LIFETIME_MS = 10 * 365 * 24 * 3600 * 1000;

/** What a node needs to speak peer TLS: whom to trust, and who it is. */
export interface PeerTlsMaterial {
  /** PEM of every trusted root (the CA bundle). */
  readonly rootsPem: string;
  /** This node's certificate chain, PEM: its certificate first. */
  readonly certPem: string;
  /** This node's private key, PEM (non-enumerable; never log). */
  readonly keyPem: string;
  /** Where the material came from, for logs: 'cluster key' or 'files'. */
  readonly source: 'cluster key' | 'files';
}

/** A trust root: its certificate and the key that signs leaves. */
export interface PeerRoot {
  readonly certPem: string;
  readonly certDer: Buffer;
  readonly privateKey: KeyObject;
}

/** The root a cluster key yields: same key, same certificate, on every node. */
export function derivedRoot(key: ClusterKey): PeerRoot {
  const seed = Buffer.from(hkdfSync('sha256', key.key, Buffer.alloc(0), ROOT_SEED_INFO, 32));
  const privateKey = createPrivateKey({ key: Buffer.concat([ED25519_PKCS8_PREFIX, seed]), format: 'der', type: 'pkcs8' });
  const publicKey = createPublicKey(privateKey);
  const keyId = subjectKeyId(publicKey);
  const name = distinguishedName(`baton peer root ${keyId.subarray(0, 8).toString('hex')}`);
  const certDer = buildCertificate({
    serial: Buffer.concat([Buffer.from([0x01]), keyId.subarray(0, 15)]),
    issuer: name,
    subject: name,
    notBefore: new Date(Date.UTC(2000, 0, 1)),
    notAfter: new Date(Date.UTC(9999, 11, 31, 23, 59, 59)),
    subjectPublicKey: publicKey,
    subjectKeyId: keyId,
    authorityKeyId: keyId,
    ca: true,
    signer: privateKey,
  });
  return { certPem: toPem(certDer), certDer, privateKey };
}

/** A fresh leaf key and its certificate, issued by `root` for `nodeId`, valid from `now`. */
export function issueLeaf(root: PeerRoot, nodeId: string, now: number): { certPem: string; keyPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const rootCert = new X509Certificate(root.certDer);
  const rootKeyId = subjectKeyId(rootCert.publicKey);
  const certDer = buildCertificate({
    serial: Buffer.concat([Buffer.from([0x02]), randomBytes(15)]),
    issuer: distinguishedName(commonNameOf(rootCert)),
    subject: distinguishedName(`baton node ${nodeId}`),
    notBefore: new Date(now - LEAF_BACKDATE_MS),
    notAfter: new Date(now + LEAF_LIFETIME_MS),
    subjectPublicKey: publicKey,
    subjectKeyId: subjectKeyId(publicKey),
    authorityKeyId: rootKeyId,
    ca: false,
    signer: root.privateKey,
  });
  return { certPem: toPem(certDer), keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string };
}

/**
 * Peer TLS from the cluster keys: every key's root is trusted, the first key's root issues
 * this node's certificate.
 */
export function peerTlsFromKeys(keys: readonly ClusterKey[], nodeId: string, now: number): PeerTlsMaterial {
  if (keys.length === 0) throw new Error('peer TLS needs at least one cluster key');
  const roots = keys.map(derivedRoot);
  const leaf = issueLeaf(roots[0]!, nodeId, now);
  return material(roots.map((r) => r.certPem).join(''), leaf.certPem, leaf.keyPem, 'cluster key');
}

/** The flags the three files come from, for error messages. */
export interface PeerTlsFileNames {
  ca: string;
  cert: string;
  key: string;
}

/**
 * Peer TLS from PEM texts read from files (e.g. a cert-manager Secret's ca.crt, tls.crt
 * and tls.key). Checks what a handshake would otherwise find later: every file parses, the
 * key belongs to the certificate, the chain leads to a certificate of the CA file, and the
 * certificate is valid at `now`. Errors name the flag to fix.
 */
export function peerTlsFromPem(caPem: string, certPem: string, keyPem: string, names: PeerTlsFileNames, now: number): PeerTlsMaterial {
  const cas = parseCertificates(caPem, names.ca);
  const chain = parseCertificates(certPem, names.cert);
  let key: KeyObject;
  try {
    key = createPrivateKey(keyPem);
  } catch (err) {
    throw new ConfigError(`${names.key} holds no usable private key (PEM expected): ${(err as Error).message}`);
  }
  const leaf = chain[0]!;
  if (!leaf.checkPrivateKey(key)) throw new ConfigError(`${names.key} is not the private key of the certificate in ${names.cert}`);
  for (const cert of chain) {
    if (Date.parse(cert.validTo) <= now || Date.parse(cert.validFrom) > now) {
      throw new ConfigError(`${names.cert}: certificate "${cert.subject.replace(/\n/g, ', ')}" is valid only from ${cert.validFrom} to ${cert.validTo}`);
    }
  }
  for (let i = 0; i + 1 < chain.length; i++) {
    if (!issuedBy(chain[i]!, chain[i + 1]!)) throw new ConfigError(`${names.cert}: certificate ${i + 2} did not issue certificate ${i + 1}`);
  }
  const last = chain[chain.length - 1]!;
  if (!cas.some((ca) => ca.fingerprint256 === last.fingerprint256 || issuedBy(last, ca))) {
    throw new ConfigError(`${names.cert}: the certificate does not chain to a certificate of ${names.ca}`);
  }
  return material(caPem, certPem, keyPem, 'files');
}

/** Parses every certificate of a PEM bundle; throws ConfigError naming `source` when none or one is bad. */
export function parseCertificates(pem: string, source: string): X509Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new ConfigError(`${source} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
  return blocks.map((block, i) => {
    try {
      return new X509Certificate(block);
    } catch (err) {
      throw new ConfigError(`${source}: certificate ${i + 1} does not parse: ${(err as Error).message}`);
    }
  });
}

function issuedBy(cert: X509Certificate, issuer: X509Certificate): boolean {
  return cert.checkIssued(issuer) && cert.verify(issuer.publicKey);
}

function material(rootsPem: string, certPem: string, keyPem: string, source: PeerTlsMaterial['source']): PeerTlsMaterial {
  const result = { rootsPem, certPem, source } as { rootsPem: string; certPem: string; keyPem: string; source: PeerTlsMaterial['source'] };
  Object.defineProperty(result, 'keyPem', { value: keyPem, enumerable: false, writable: false });
  return result;
}

// --- X.509 encoding -------------------------------------------------------------------

// Only node-forge's ASN.1 encoder: loading the whole library costs every start 40-170 ms
// (measured on a loaded 2-core machine), this part a tenth of that.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const asn1 = require('node-forge/lib/asn1') as typeof forge.asn1;
const UNIVERSAL = asn1.Class.UNIVERSAL;
const CONTEXT = asn1.Class.CONTEXT_SPECIFIC;

interface CertificateFields {
  serial: Buffer;
  issuer: forge.asn1.Asn1;
  subject: forge.asn1.Asn1;
  notBefore: Date;
  notAfter: Date;
  subjectPublicKey: KeyObject;
  subjectKeyId: Buffer;
  authorityKeyId: Buffer;
  ca: boolean;
  signer: KeyObject;
}

/** A DER certificate (RFC 5280) signed with Ed25519 (RFC 8410). */
function buildCertificate(f: CertificateFields): Buffer {
  const algorithm = seq([oid(ED25519_OID)]);
  const spki = asn1.fromDer(binary(f.subjectPublicKey.export({ type: 'spki', format: 'der' })));
  const extensions = [
    extension('2.5.29.19', true, seq(f.ca ? [asn1.create(UNIVERSAL, asn1.Type.BOOLEAN, false, '\xff')] : [])),
    // keyUsage: keyCertSign for the root (bit 5), digitalSignature for leaves (bit 0).
    extension('2.5.29.15', true, asn1.create(UNIVERSAL, asn1.Type.BITSTRING, false, f.ca ? '\x02\x04' : '\x07\x80')),
    extension('2.5.29.14', false, octets(f.subjectKeyId)),
    extension('2.5.29.35', false, seq([asn1.create(CONTEXT, 0, false, binary(f.authorityKeyId))])),
  ];
  if (!f.ca) extensions.push(extension('2.5.29.37', false, seq([oid('1.3.6.1.5.5.7.3.1'), oid('1.3.6.1.5.5.7.3.2')])));
  const tbs = seq([
    asn1.create(CONTEXT, 0, true, [asn1.create(UNIVERSAL, asn1.Type.INTEGER, false, '\x02')]),
    // Serials start with 0x01 (root) or 0x02 (leaf): positive, as DER INTEGERs must be.
    asn1.create(UNIVERSAL, asn1.Type.INTEGER, false, binary(f.serial)),
    algorithm,
    f.issuer,
    seq([time(f.notBefore), time(f.notAfter)]),
    f.subject,
    spki,
    asn1.create(CONTEXT, 3, true, [seq(extensions)]),
  ]);
  const tbsDer = der(tbs);
  const signature = sign(null, tbsDer, f.signer);
  return der(seq([asn1.fromDer(binary(tbsDer)), seq([oid(ED25519_OID)]), asn1.create(UNIVERSAL, asn1.Type.BITSTRING, false, '\x00' + binary(signature))]));
}

function distinguishedName(commonName: string): forge.asn1.Asn1 {
  const attribute = (type: string, value: string) =>
    asn1.create(UNIVERSAL, asn1.Type.SET, true, [seq([oid(type), asn1.create(UNIVERSAL, asn1.Type.UTF8, false, Buffer.from(value, 'utf8').toString('binary'))])]);
  return seq([attribute('2.5.4.10', 'baton'), attribute('2.5.4.3', commonName)]);
}

function commonNameOf(cert: X509Certificate): string {
  const line = cert.subject.split('\n').find((l) => l.startsWith('CN='));
  return line === undefined ? '' : line.slice(3);
}

function extension(id: string, critical: boolean, value: forge.asn1.Asn1): forge.asn1.Asn1 {
  const fields = [oid(id)];
  if (critical) fields.push(asn1.create(UNIVERSAL, asn1.Type.BOOLEAN, false, '\xff'));
  fields.push(asn1.create(UNIVERSAL, asn1.Type.OCTETSTRING, false, binary(der(value))));
  return seq(fields);
}

/** UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 §4.1.2.5). */
function time(date: Date): forge.asn1.Asn1 {
  const iso = date.toISOString();
  const digits = iso.slice(0, 19).replace(/[-T:]/g, '') + 'Z';
  const year = date.getUTCFullYear();
  if (year < 2050) return asn1.create(UNIVERSAL, asn1.Type.UTCTIME, false, digits.slice(2));
  return asn1.create(UNIVERSAL, asn1.Type.GENERALIZEDTIME, false, digits);
}

/** The RFC 5280 method 1 key id: SHA-1 of the public key bits. */
function subjectKeyId(publicKey: KeyObject): Buffer {
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  // Ed25519 SPKI: a 12-byte header, then the 32 key bytes.
  return createHash('sha1').update(spki.subarray(spki.length - 32)).digest();
}

function seq(items: forge.asn1.Asn1[]): forge.asn1.Asn1 {
  return asn1.create(UNIVERSAL, asn1.Type.SEQUENCE, true, items);
}

function oid(id: string): forge.asn1.Asn1 {
  return asn1.create(UNIVERSAL, asn1.Type.OID, false, asn1.oidToDer(id).getBytes());
}

function octets(bytes: Buffer): forge.asn1.Asn1 {
  return asn1.create(UNIVERSAL, asn1.Type.OCTETSTRING, false, binary(bytes));
}

function der(value: forge.asn1.Asn1): Buffer {
  return Buffer.from(asn1.toDer(value).getBytes(), 'binary');
}

function binary(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('binary');
}

function toPem(certDer: Buffer): string {
  const lines = certDer.toString('base64').match(/.{1,64}/g)!;
  return `-----BEGIN CERTIFICATE-----\n${lines.join('\n')}\n-----END CERTIFICATE-----\n`;
}
