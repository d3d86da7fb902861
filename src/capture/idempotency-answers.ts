/**
 * The answers a session remembers for requests that carried an Idempotency-Key: one part,
 * `baton.idempotency` (IdempotencyAnswers in peer.proto), replicated like any other part and
 * expiring with the session. A repeat of a remembered key, from the client or from a
 * re-injection, is answered from here without reaching the web server.
 *
 * Rules:
 * - at most MAX_REMEMBERED answers, newest last: remembering one more forgets the oldest;
 * - an answer whose body is over MAX_REMEMBERED_BODY_BYTES is not remembered (a repeat of
 *   its key reaches the web server again), and the whole part stays under
 *   MAX_REMEMBERED_PART_BYTES (older answers are forgotten first to make room);
 * - a key is remembered with the method and target it came with: the same key on another
 *   request is a client error (422), not a repeat;
 * - bytes that do not decode are treated as no answers (a part written by anything else).
 */
import { IdempotencyAnswers, type HttpHeader, type RememberedAnswer } from '../gen/baton/v1/peer';

/** The session part holding the remembered answers. */
export const IDEMPOTENCY_PART = 'baton.idempotency';
/** Answers one session remembers. */
export const MAX_REMEMBERED = 32;
/** Largest answer body remembered, in bytes. */
export const MAX_REMEMBERED_BODY_BYTES = 64 * 1024;
/** Largest encoded part, in bytes (below the store's default --max-value-bytes of 1 MiB). */
export const MAX_REMEMBERED_PART_BYTES = 512 * 1024;

export interface Answer {
  status: number;
  headers: HttpHeader[];
  body: Buffer;
}

export type Lookup = { kind: 'none' } | { kind: 'answer'; answer: Answer } | { kind: 'mismatch' };

export function decodeAnswers(bytes: Uint8Array | undefined): RememberedAnswer[] {
  if (bytes === undefined || bytes.length === 0) return [];
  try {
    return IdempotencyAnswers.decode(bytes).answers;
  } catch {
    return [];
  }
}

/** What the session remembers for `key`, checked against the request's method and target. */
export function lookupAnswer(bytes: Uint8Array | undefined, key: string, method: string, target: string): Lookup {
  const found = decodeAnswers(bytes).find((a) => a.key === key);
  if (found === undefined) return { kind: 'none' };
  if (found.method !== method || found.target !== target) return { kind: 'mismatch' };
  return { kind: 'answer', answer: { status: found.status, headers: found.headers, body: found.body } };
}

/**
 * The part's next value with `answer` remembered under `key`, or undefined when the answer
 * is too large to remember.
 */
export function rememberAnswer(
  bytes: Uint8Array | undefined,
  entry: { key: string; method: string; target: string; atUnixMs: number },
  answer: Answer,
): Uint8Array | undefined {
  if (answer.body.length > MAX_REMEMBERED_BODY_BYTES) return undefined;
  const next: RememberedAnswer = {
    key: entry.key,
    method: entry.method,
    target: entry.target,
    atUnixMs: BigInt(entry.atUnixMs),
    status: answer.status,
    headers: answer.headers,
    body: answer.body,
  };
  const own = answerSize(next);
  if (own > MAX_REMEMBERED_PART_BYTES) return undefined;
  const kept = decodeAnswers(bytes).filter((a) => a.key !== entry.key);
  // Keep the newest that fit beside the new one, in their order.
  let room = MAX_REMEMBERED_PART_BYTES - own;
  let first = kept.length;
  while (first > 0 && kept.length - first < MAX_REMEMBERED - 1) {
    const size = answerSize(kept[first - 1]!);
    if (size > room) break;
    room -= size;
    first--;
  }
  return IdempotencyAnswers.encode({ answers: [...kept.slice(first), next] }).finish();
}

/** Bytes one answer takes in the part (its encoding and the list's framing). */
function answerSize(answer: RememberedAnswer): number {
  return IdempotencyAnswers.encode({ answers: [answer] }).finish().length;
}
