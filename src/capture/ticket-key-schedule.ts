/**
 * The TLS ticket key schedule, as a pure function of `now` and the key set baton stores:
 * which keys a node issues tickets with and accepts, what the generating member writes,
 * and when the node must look again. No I/O, no clock, no randomness of its own (new key
 * material comes from an injected source).
 *
 * Rules:
 * - A key is active from its activation time until the next key's activation (its
 *   retirement). Every node issues with the key whose activation passed last, so all nodes
 *   switch in lockstep at the same wall-clock instant.
 * - The generator (the cluster's coordinator) always keeps one
 *   key activating in the future. It is written a whole rotation period ahead (at least a
 *   quarter of one when the generator took over late), so every node holds it long before
 *   any node issues with it.
 * - A node accepts every key it holds: the previous ones, the active one and the next one.
 *   A retired key stays for one session lifetime after its retirement (tickets issued just
 *   before still resume), then the generator removes it; every node also stops accepting
 *   it at that moment, whether or not the removal has reached it.
 * - A generator that holds no keys writes a first set only once the driver asked the peers
 *   and none holds one (a node that just joined must not replace the cluster's keys).
 * - A node that holds no next key an eighth of a period after the active key's activation
 *   asks the peers (it is outside the key session's replica set, or missed the write).
 */

/** Bytes of one ticket key: name (16), HMAC secret (16), AES key (16), as Node's ticketKeys. */
export const TICKET_KEY_BYTES = 48;
/** Keys a set holds at most (a well-run cluster holds 2–3); a larger stored set keeps its newest. */
export const MAX_TICKET_KEYS = 16;

export interface TicketKey {
  /** 48 bytes: name, HMAC secret, AES-128 key. */
  readonly key: Buffer;
  /** Unix ms from which nodes issue tickets with this key. */
  readonly activatesAt: number;
}

export interface TicketKeyScheduleConfig {
  /** How long each key issues tickets (ms); --tls-ticket-rotation-minutes. */
  rotationMs: number;
  /** How long a ticket or TLS session stays resumable (ms): how long a retired key is still accepted. */
  sessionLifetimeMs: number;
  /** How soon a node that must ask its peers asks again when they had nothing (ms). */
  fetchRetryMs: number;
}

export interface TicketKeyScheduleInput {
  now: number;
  /** The key set as this node holds it (undefined: none). */
  stored: readonly TicketKey[] | undefined;
  /** Whether this node generates keys (it is the cluster's coordinator). */
  generator: boolean;
  /** True once this node asked its peers and none of them holds a key set. */
  peersHaveNone: boolean;
  /** New key material (48 random bytes). */
  newKey: () => Buffer;
}

export interface TicketKeyPlan {
  /** The set the generator must store and replicate; undefined when nothing changed. */
  write: TicketKey[] | undefined;
  /** The key to issue tickets with; undefined while the node holds no key. */
  issue: TicketKey | undefined;
  /** Every key whose tickets are accepted (issue included), oldest first. */
  accept: TicketKey[];
  /** Whether the node should ask its peers for the key set now. */
  fetch: boolean;
  /** When to plan again (Unix ms). */
  nextDeadline: number;
}

export function planTicketKeys(input: TicketKeyScheduleInput, config: TicketKeyScheduleConfig): TicketKeyPlan {
  const { now, generator } = input;
  const { rotationMs, sessionLifetimeMs, fetchRetryMs } = config;
  let keys = normalise(input.stored ?? []);
  let changed = false;
  if (generator && keys.length === 0) {
    if (!input.peersHaveNone) return { write: undefined, issue: undefined, accept: [], fetch: true, nextDeadline: now + fetchRetryMs };
    keys = [{ key: input.newKey(), activatesAt: now }];
    changed = true;
  }
  // Keys retired more than a session lifetime ago are no longer accepted (nor stored).
  const kept = keys.filter((_, i) => {
    const retiredAt = keys[i + 1]?.activatesAt;
    return retiredAt === undefined || retiredAt > now || retiredAt + sessionLifetimeMs > now;
  });
  if (kept.length !== keys.length) {
    keys = kept;
    changed = true;
  }
  let active = activeIndex(keys, now);
  if (generator && keys.length > 0 && keys[keys.length - 1]!.activatesAt <= now) {
    const last = keys[keys.length - 1]!;
    keys = [...keys, { key: input.newKey(), activatesAt: Math.max(last.activatesAt + rotationMs, now + Math.ceil(rotationMs / 4)) }];
    changed = true;
    active = activeIndex(keys, now);
  }
  const issue = active === -1 ? undefined : keys[active];
  const next = active === -1 ? undefined : keys[active + 1];
  let fetch = false;
  const deadlines: number[] = [];
  if (issue === undefined) {
    fetch = true;
    deadlines.push(now + fetchRetryMs);
  } else if (next === undefined && !generator) {
    // The generator writes the next key the moment this one activates; give replication
    // an eighth of a period to bring it before asking the peers.
    const askAt = issue.activatesAt + Math.ceil(rotationMs / 8);
    if (now >= askAt) {
      fetch = true;
      deadlines.push(now + fetchRetryMs);
    } else deadlines.push(askAt);
  }
  if (next !== undefined) deadlines.push(next.activatesAt);
  for (let i = 0; i < active; i++) deadlines.push(keys[i + 1]!.activatesAt + sessionLifetimeMs);
  return {
    write: generator && changed ? keys : undefined,
    issue,
    accept: keys,
    fetch,
    nextDeadline: deadlines.length === 0 ? now + rotationMs : Math.max(now + 1, Math.min(...deadlines)),
  };
}

/** Index of the key active at `now`: the last one activated, or the first while none is (a clock behind the generator's). */
function activeIndex(keys: readonly TicketKey[], now: number): number {
  if (keys.length === 0) return -1;
  let index = 0;
  for (let i = 0; i < keys.length; i++) if (keys[i]!.activatesAt <= now) index = i;
  return index;
}

/** Well-formed keys sorted by activation, one per key name and per activation time. */
function normalise(keys: readonly TicketKey[]): TicketKey[] {
  const names = new Set<string>();
  const times = new Set<number>();
  const result: TicketKey[] = [];
  for (const k of [...keys].sort((a, b) => a.activatesAt - b.activatesAt)) {
    if (k.key.length !== TICKET_KEY_BYTES || !Number.isSafeInteger(k.activatesAt)) continue;
    const name = k.key.subarray(0, 16).toString('hex');
    if (names.has(name) || times.has(k.activatesAt)) continue;
    names.add(name);
    times.add(k.activatesAt);
    result.push(k);
  }
  return result.slice(-MAX_TICKET_KEYS);
}
