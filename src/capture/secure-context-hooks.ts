/**
 * The only place baton reaches into Node's TLS internals. Node's public setTicketKeys holds
 * one key and drops tickets made under any other at once; accepting the previous and the
 * next cluster key needs OpenSSL's ticket key callback, which Node exposes only on the
 * server's internal SecureContext (`enableTicketKeyCallback` / `onticketkeycallback`, the
 * hook Node's own test-https-resume-after-renew uses). The callback is called with the
 * ticket's key name, IV and whether a ticket is being made, and returns
 * [result, hmacKey, aesKey, name, iv]: result 1 = use these keys, 2 = accepted but issue a
 * fresh ticket, 0 = unknown key (full handshake); name and iv only when making one.
 *
 * Rules: every function checks that the internals look as expected and reports false
 * instead of throwing when they do not (a future Node may change them); a ticket under an
 * unknown key is never an error, only a full handshake.
 */
import { randomBytes } from 'node:crypto';
import type * as tls from 'node:tls';

const PART = 16;
const ZERO = Buffer.alloc(PART);

/** The keys a server issues tickets with and accepts (48 bytes each: name, HMAC secret, AES key). */
export interface TicketKeyRing {
  issue: Buffer;
  accept: readonly Buffer[];
}

interface NativeSecureContext {
  enableTicketKeyCallback(): void;
  setSessionIdContext(context: string): void;
  onticketkeycallback?: (name: Buffer, iv: Buffer, encrypt: boolean) => unknown[];
}

function nativeContext(server: tls.Server): NativeSecureContext | undefined {
  const context = (server as unknown as { _sharedCreds?: { context?: Partial<NativeSecureContext> } })._sharedCreds?.context;
  if (context === undefined || typeof context.enableTicketKeyCallback !== 'function' || typeof context.setSessionIdContext !== 'function') return undefined;
  return context as NativeSecureContext;
}

/** Whether this server's internals are the ones these hooks know. */
export function supportsHooks(server: tls.Server): boolean {
  return nativeContext(server) !== undefined;
}

/**
 * Makes the server issue tickets with `ring().issue` and accept every key of `ring().accept`
 * (a ticket under an accepted key other than the issue key is renewed under the issue key).
 * `ring` is read at every handshake, so a rotation only has to change what it returns.
 */
export function installTicketKeys(server: tls.Server, ring: () => TicketKeyRing | undefined): boolean {
  const context = nativeContext(server);
  if (context === undefined) return false;
  context.enableTicketKeyCallback();
  context.onticketkeycallback = (name: Buffer, _iv: Buffer, encrypt: boolean): unknown[] => {
    const keys = ring();
    if (encrypt) {
      if (keys === undefined) return [0, ZERO, ZERO, ZERO, ZERO];
      const k = keys.issue;
      return [1, k.subarray(PART, 2 * PART), k.subarray(2 * PART), k.subarray(0, PART), randomBytes(PART)];
    }
    const k = keys?.accept.find((candidate) => candidate.subarray(0, PART).equals(name));
    if (k === undefined) return [0, ZERO, ZERO];
    return [k.equals(keys!.issue) ? 1 : 2, k.subarray(PART, 2 * PART), k.subarray(2 * PART)];
  };
  return true;
}

/** Sets the server's sessionIdContext (also kept for a later setSecureContext of its own). */
export function setSessionIdContext(server: tls.Server, sessionIdContext: string): boolean {
  const context = nativeContext(server);
  if (context === undefined) return false;
  context.setSessionIdContext(sessionIdContext);
  (server as unknown as { sessionIdContext: string }).sessionIdContext = sessionIdContext;
  return true;
}
