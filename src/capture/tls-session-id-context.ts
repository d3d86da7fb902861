/**
 * The sessionIdContext every TLS server of a cluster sets. OpenSSL refuses to resume a
 * session (by ticket or by id) made under another context, and Node's default context is
 * a hash of the process's command line, so two pods would silently refuse each other's
 * sessions. baton derives one from the secret the cluster's hashing is seeded with (the
 * --cluster-seed, or the first cluster key), which every member must share anyway: same
 * cluster, same context; another cluster, another context. One-way, so it reveals nothing
 * of the seed.
 */
import { createHash } from 'node:crypto';

/** 32 hex characters (OpenSSL's limit is 32 bytes). */
export function clusterSessionIdContext(hashSeed: string | Uint8Array): string {
  return createHash('sha256').update('baton/tls-session-id-context\0').update(hashSeed).digest('hex').slice(0, 32);
}
