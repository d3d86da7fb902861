/**
 * Which requests the proxy may send to a peer when its web server failed before answering:
 * only those that are safe to repeat, since the failed web server may have acted on them.
 * GET, HEAD, OPTIONS, PUT and DELETE are idempotent by HTTP's definition (RFC 9110 §9.2.2);
 * any other method only with an `Idempotency-Key` header, whose answer baton remembers in
 * the session so the key is acted on once per remembered answer (idempotency-answers.ts).
 *
 * Rules:
 * - the rule reads the method and the Idempotency-Key header only: no `x-baton-*` header
 *   (which clients cannot send through the proxy anyway) makes a request replayable;
 * - a key that is empty, too long or not visible ASCII counts as no key (the request is
 *   forwarded as usual, just not replayed and not remembered);
 * - an Upgrade (WebSocket) request is never replayed: its socket is joined, not answered.
 */
import type { IncomingHttpHeaders } from 'node:http';

/** Methods safe to repeat whatever the request carries. */
export const IDEMPOTENT_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE']);
/** Longest Idempotency-Key accepted (a UUID is 36; Stripe allows 255). */
export const MAX_IDEMPOTENCY_KEY_LENGTH = 255;

const VISIBLE_ASCII = /^[\x21-\x7e]+$/;

/** The request's Idempotency-Key, when it has a usable one. */
export function idempotencyKey(headers: IncomingHttpHeaders): string | undefined {
  const value = headers['idempotency-key'];
  if (typeof value !== 'string') return undefined;
  const key = value.trim();
  if (key.length === 0 || key.length > MAX_IDEMPOTENCY_KEY_LENGTH || !VISIBLE_ASCII.test(key)) return undefined;
  return key;
}

/** Whether a request may be sent again, to a peer, after the web server failed to answer it. */
export function replayable(method: string, headers: IncomingHttpHeaders): boolean {
  if (headers.upgrade !== undefined) return false;
  return IDEMPOTENT_METHODS.has(method) || idempotencyKey(headers) !== undefined;
}
