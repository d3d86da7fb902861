/**
 * Cluster keys: the shared secrets that seal every datagram and seed the BUZhash table.
 *
 * Rules and invariants:
 * - A key file holds one or more keys, one per line, each standard base64 of exactly 32
 *   bytes (`openssl rand -base64 32`). Blank lines and `#` comments are ignored.
 * - The first key is the sending key; every key listed is accepted when opening. Rotation
 *   is: add the new key second on every node, then move it first, then drop the old one.
 * - A key's id is (first byte of SHA-256 of the key mod 255) + 1; it travels in every
 *   datagram header so receivers pick the key without trying each (id 0 means an
 *   unencrypted datagram). Two keys of one file must not share an id.
 * - Key material never appears in messages, logs or inspection output: errors name the
 *   line and what was expected, `key` is a non-enumerable property (console.log, pino and
 *   JSON.stringify skip it), and `keyFingerprint` is what to log.
 */
import { createHash, hkdfSync } from 'node:crypto';
import { ConfigError } from './errors';

export const CLUSTER_KEY_BYTES = 32;

const HASH_SEED_INFO = 'baton/buzhash-seed/v1';
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

export interface ClusterKey {
  /** First byte of SHA-256 of the key, 1 … 255: the key id on the wire. */
  readonly id: number;
  /** The 32 secret bytes (non-enumerable; never log). */
  readonly key: Buffer;
}

/**
 * Parses a key file. `source` names where the text came from (a flag or file) and starts
 * every error message, so the operator knows what to fix.
 */
export function parseClusterKeys(text: string, source = 'cluster keys'): ClusterKey[] {
  const keys: ClusterKey[] = [];
  const lineOf: number[] = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = i + 1;
    const raw = lines[i]!;
    const hash = raw.indexOf('#');
    const encoded = (hash >= 0 ? raw.slice(0, hash) : raw).trim();
    if (encoded === '') continue;
    const where = `${source}: line ${line}`;
    if (!BASE64.test(encoded) || encoded.length % 4 !== 0) {
      throw new ConfigError(
        `${where} is not valid base64; expected one key per line, 32 random bytes in standard base64 ` +
          `(44 characters, e.g. from \`openssl rand -base64 32\`)`,
      );
    }
    const bytes = Buffer.from(encoded, 'base64');
    if (bytes.length !== CLUSTER_KEY_BYTES) {
      throw new ConfigError(
        `${where} decodes to ${bytes.length} bytes; a cluster key must be exactly ${CLUSTER_KEY_BYTES} bytes ` +
          `(e.g. from \`openssl rand -base64 32\`)`,
      );
    }
    const key = clusterKeyFrom(bytes);
    for (let k = 0; k < keys.length; k++) {
      if (keys[k]!.id !== key.id) continue;
      if (keys[k]!.key.equals(key.key)) throw new ConfigError(`${where} repeats the key on line ${lineOf[k]}`);
      throw new ConfigError(
        `${where}: its key id ${hexId(key.id)} is also the id of the key on ` +
          `line ${lineOf[k]}; replace one of them with a freshly generated key`,
      );
    }
    keys.push(key);
    lineOf.push(line);
  }
  if (keys.length === 0) {
    throw new ConfigError(`${source}: no cluster key found; expected one base64 key (32 bytes) per line`);
  }
  return keys;
}

/** A ClusterKey from 32 raw bytes (copied). Throws ConfigError for another length. */
export function clusterKeyFromBytes(bytes: Uint8Array): ClusterKey {
  if (bytes.length !== CLUSTER_KEY_BYTES) {
    throw new ConfigError(`a cluster key must be exactly ${CLUSTER_KEY_BYTES} bytes, got ${bytes.length}`);
  }
  return clusterKeyFrom(bytes);
}

/** The BUZhash table seed: HKDF-SHA256(key, salt '', info 'baton/buzhash-seed/v1'), 32 bytes. */
export function deriveHashSeed(key: ClusterKey): Buffer {
  return Buffer.from(hkdfSync('sha256', key.key, Buffer.alloc(0), HASH_SEED_INFO, 32));
}

/**
 * A name for the key that is safe to log: hex of the first 8 bytes of SHA-256 of the key.
 * The key is 256 random bits, so 64 bits of its hash reveal nothing usable. It starts with
 * the key id and matches `base64 -d keyfile | sha256sum | cut -c1-16` for a one-key file.
 */
export function keyFingerprint(key: ClusterKey): string {
  return sha256(key.key).subarray(0, 8).toString('hex');
}

function clusterKeyFrom(bytes: Uint8Array): ClusterKey {
  // 1 … 255: id 0 is reserved on the wire for unencrypted datagrams.
  const id = (sha256(bytes)[0]! % 255) + 1;
  const key = Buffer.alloc(CLUSTER_KEY_BYTES);
  key.set(bytes);
  const clusterKey = { id } as { id: number; key: Buffer };
  Object.defineProperty(clusterKey, 'key', { value: key, enumerable: false, writable: false });
  return clusterKey;
}

function sha256(bytes: Uint8Array): Buffer {
  return createHash('sha256').update(bytes).digest();
}

function hexId(id: number): string {
  return `0x${id.toString(16).padStart(2, '0')}`;
}
