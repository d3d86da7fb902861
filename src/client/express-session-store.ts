/**
 * BatonStore: an express-session store (also usable by fastify's session plugin) that keeps
 * each session in the local baton sidecar, one part per top-level field
 * (express-session-fields.ts), so another pod resumes it after this one dies.
 *
 * Rules:
 * - set() writes only the fields whose JSON changed since the session was read, and deletes
 *   the parts of fields removed since then. Two requests of one session that change
 *   different fields therefore both keep their change, where a store that writes the whole
 *   session lets the later save undo the earlier one.
 * - "Since the session was read" means this request's read: the snapshot get() returned is
 *   tied to the session object express-session builds from it (createSession), in a
 *   WeakMap that lives as long as the request's session. A session object the store never
 *   saw (fastify, or a store.set() by hand) falls back to the last snapshot read for its id,
 *   kept for at most maxSnapshots ids; with neither, every field is written and none deleted.
 * - The cookie's remaining maxAge is the session's idle TTL (capped at 30 days, the
 *   sidecar's limit); a session saved with an expired cookie is deleted. A cookie without
 *   maxAge gets the ttlSeconds option (default 0: the sidecar's --default-ttl-seconds).
 * - get() asks with resume, so a session this sidecar lacks is fetched from its replicas
 *   and claimed. A baton session without a cookie field is not an express-session session:
 *   get() reports it missing. destroy() deletes the whole baton session.
 * - all(), length() and clear() are not provided: baton has no call that lists sessions
 *   (SessionService has Get by id and Watch of changes only), and express-session marks
 *   them optional.
 * - express-session is loaded only if installed: the class then extends its Store (which
 *   supplies createSession, regenerate and load); otherwise it is a plain EventEmitter.
 *   Express is never loaded. The store never emits 'disconnect': BatonClient keeps calls
 *   while it reconnects, and a call that cannot complete fails with its own error.
 */
import { EventEmitter } from 'node:events';
import type { SessionData, Store as ExpressSessionStore } from 'express-session';
import { BatonClient, type BatonClientOptions } from './client';
import { decodeFieldPart, encodeFieldValue, fieldPartName } from './express-session-fields';
import { MAX_TTL_SECONDS } from '../wire/validation';

export interface BatonStoreOptions {
  /** The sidecar's API address (`host:port` or `unix:/path`); the store then owns its client and close() closes it. */
  address?: string;
  /** Options of the client the store creates for `address`. */
  clientOptions?: BatonClientOptions;
  /** A client to share instead of `address`; close() leaves it open. */
  client?: BatonClient;
  /** Idle TTL in seconds of a session whose cookie has no maxAge; default 0, the sidecar's default. */
  ttlSeconds?: number;
  /** Secondaries that must acknowledge a save before set() calls back; default 0. */
  minReplicas?: number;
  /** Ids whose last read is kept for session objects read without createSession; default 10000. */
  maxSnapshots?: number;
}

/** A session as read: field → the JSON text of its value. */
export type FieldSnapshot = ReadonlyMap<string, string>;

type Callback<T = void> = (err?: unknown, result?: T) => void;
type StoreClass = abstract new () => ExpressSessionStore;

export const DEFAULT_MAX_SNAPSHOTS = 10_000;

/** express-session's Store when it is installed, else EventEmitter (which has what fastify asks for). */
function loadBase(): StoreClass {
  try {
    return (require('express-session') as { Store: StoreClass }).Store;
  } catch (err) {
    // Only express-session's own absence; a broken installation of it is the caller's to see.
    const missing = (err as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND' && (err as Error).message.includes("'express-session'");
    if (!missing) throw err;
    return EventEmitter as unknown as StoreClass;
  }
}

const Base = loadBase();

export class BatonStore extends Base {
  readonly client: BatonClient;
  private readonly ownsClient: boolean;
  private readonly ttlSeconds: number;
  private readonly minReplicas: number;
  private readonly maxSnapshots: number;
  /** What get() returned, by the object returned and by the session express-session made of it. */
  private readonly readByObject = new WeakMap<object, FieldSnapshot>();
  /** The last snapshot read per id, least recently read first. */
  private readonly readById = new Map<string, FieldSnapshot>();

  constructor(options: BatonStoreOptions) {
    super();
    if ((options.client === undefined) === (options.address === undefined)) {
      throw new TypeError('BatonStore needs exactly one of { address } and { client }');
    }
    this.client = options.client ?? new BatonClient(options.address!, options.clientOptions);
    this.ownsClient = options.client === undefined;
    this.ttlSeconds = checkCount(options.ttlSeconds ?? 0, 'ttlSeconds', MAX_TTL_SECONDS);
    this.minReplicas = checkCount(options.minReplicas ?? 0, 'minReplicas', 2 ** 32 - 1);
    this.maxSnapshots = checkCount(options.maxSnapshots ?? DEFAULT_MAX_SNAPSHOTS, 'maxSnapshots', Number.MAX_SAFE_INTEGER);
  }

  override get(sid: string, callback: Callback<SessionData | null>): void {
    settle(this.read(sid), callback);
  }

  override set(sid: string, session: SessionData, callback?: Callback): void {
    settle(this.write(sid, session), callback);
  }

  override destroy(sid: string, callback?: Callback): void {
    settle(
      this.client.delete(sid).then(() => {
        this.readById.delete(sid);
      }),
      callback,
    );
  }

  override touch(sid: string, session: SessionData, callback?: () => void): void {
    const ttlSeconds = this.ttlOf(session);
    const done = ttlSeconds === undefined ? this.client.delete(sid) : this.client.touch(sid, { ttlSeconds });
    settle(
      done.then(() => undefined),
      callback,
    );
  }

  /** Ties the request's session to the snapshot its data was read with (express-session calls this after get). */
  override createSession(...args: Parameters<ExpressSessionStore['createSession']>): ReturnType<ExpressSessionStore['createSession']> {
    const [, data] = args;
    const snapshot = this.readByObject.get(data);
    const session = super.createSession(...args);
    if (snapshot !== undefined) this.readByObject.set(session, snapshot);
    return session;
  }

  /** Closes the client if the store created it. */
  close(): void {
    if (this.ownsClient) this.client.close();
  }

  /**
   * What this store last read of `session` (undefined: nothing, and set() then writes every
   * field and deletes none).
   */
  protected snapshotOf(sid: string, session: object): FieldSnapshot | undefined {
    return this.readByObject.get(session) ?? this.readById.get(sid);
  }

  private async read(sid: string): Promise<SessionData | null> {
    const stored = await this.client.get(sid, { resume: true });
    if (stored === undefined) return null;
    const snapshot = new Map<string, string>();
    const data: Record<string, unknown> = {};
    for (const part of stored.parts) {
      const field = decodeFieldPart(part.name, part.value);
      if (field === undefined) continue;
      snapshot.set(field.field, field.json);
      // Defined, not assigned: a field named __proto__ is a field, not the object's prototype.
      Object.defineProperty(data, field.field, { value: JSON.parse(field.json), enumerable: true, writable: true, configurable: true });
    }
    if (!snapshot.has('cookie')) return null;
    this.remember(sid, data, snapshot);
    return data as unknown as SessionData;
  }

  private async write(sid: string, session: SessionData): Promise<void> {
    const ttlSeconds = this.ttlOf(session);
    if (ttlSeconds === undefined) {
      await this.client.delete(sid);
      this.readById.delete(sid);
      return;
    }
    const current = fieldsOf(session);
    const previous = this.snapshotOf(sid, session);
    const parts: Record<string, Uint8Array> = {};
    let changed = 0;
    for (const [field, json] of current) {
      if (previous?.get(field) === json) continue;
      parts[fieldPartName(field)] = encodeFieldValue(field, json);
      changed += 1;
    }
    if (changed > 0) {
      await this.client.put(sid, parts, { ttlSeconds, minReplicas: this.minReplicas });
    } else {
      const touched = await this.client.touch(sid, { ttlSeconds });
      // Gone since it was read (expired or destroyed elsewhere): store it whole again.
      if (!touched.found) await this.client.put(sid, allParts(current), { ttlSeconds, minReplicas: this.minReplicas });
    }
    // Removed fields go after the writes: a save that fails part-way has deleted nothing.
    const removed = previous === undefined ? [] : [...previous.keys()].filter((field) => !current.has(field)).map(fieldPartName);
    if (removed.length > 0) await this.client.delete(sid, { parts: removed });
    // A second save in the same request compares with what the first one wrote.
    if (this.readByObject.has(session)) this.readByObject.set(session, current);
  }

  /** The idle TTL a save of `session` gets; undefined when its cookie has expired. */
  private ttlOf(session: SessionData): number | undefined {
    const maxAge = (session.cookie as { maxAge?: number | null } | undefined)?.maxAge;
    if (typeof maxAge !== 'number') return this.ttlSeconds;
    if (maxAge <= 0) return undefined;
    return Math.min(Math.ceil(maxAge / 1000), MAX_TTL_SECONDS);
  }

  private remember(sid: string, data: object, snapshot: FieldSnapshot): void {
    this.readByObject.set(data, snapshot);
    this.readById.delete(sid);
    this.readById.set(sid, snapshot);
    if (this.readById.size > this.maxSnapshots) this.readById.delete(this.readById.keys().next().value!);
  }
}

/** A session's top-level fields as JSON text; fields JSON leaves out (undefined, functions) are absent. */
export function fieldsOf(session: object): Map<string, string> {
  const fields = new Map<string, string>();
  for (const [field, value] of Object.entries(session)) {
    const json = JSON.stringify(value) as string | undefined;
    if (json !== undefined) fields.set(field, json);
  }
  return fields;
}

function allParts(fields: ReadonlyMap<string, string>): Record<string, Uint8Array> {
  const parts: Record<string, Uint8Array> = {};
  for (const [field, json] of fields) parts[fieldPartName(field)] = encodeFieldValue(field, json);
  return parts;
}

/** Calls back outside the promise chain, so an exception in the callback is not turned into a rejection. */
function settle<T>(promise: Promise<T>, callback: Callback<T> | undefined): void {
  promise.then(
    (result) => {
      if (callback !== undefined) process.nextTick(callback, null, result);
    },
    (err: unknown) => {
      if (callback !== undefined) process.nextTick(callback, err);
    },
  );
}

function checkCount(value: number, name: string, max: number): number {
  if (!Number.isInteger(value) || value < 0 || value > max) throw new RangeError(`${name} must be an integer from 0 to ${max}, not ${value}`);
  return value;
}
