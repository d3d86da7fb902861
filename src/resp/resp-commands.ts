/**
 * The Redis commands baton answers, mapped onto the session API (session-api.ts), so the
 * RESP endpoint has the gRPC API's semantics: the same validation, limits, errors and
 * resume. No I/O; the server (sidecar/servers/resp-server.ts) feeds commands in order, one at a
 * time per connection, and writes the replies.
 *
 * The mapping:
 * - A key is a session id (UTF-8, as the API requires). A string value is the session's
 *   part `value` (STRING_PART): SET writes that part and leaves any other part alone; GET
 *   answers it, or WRONGTYPE for a session without it. A hash is a session whose fields
 *   are its parts: field names are part names ([a-z0-9_.-]{1,64}), and `tls`, `auth`,
 *   `cart` and `tcp` must hold their typed values (an -ERR says why otherwise).
 * - Every baton session expires after its idle TTL, refreshed by every write, so there is
 *   no key without a TTL: SET without EX/PX/KEEPTTL gives the node's default TTL
 *   (--default-ttl-seconds), HSET keeps the session's, PERSIST and GETEX PERSIST are
 *   refused, TTL never answers -1. TTLs are whole seconds: PX, PEXPIRE and PXAT round up
 *   to the next second, so a key never expires before it was asked to.
 * - Commands that return values (GET, GETEX, MGET, HGET, HMGET, HGETALL) read with resume:
 *   a session this node lacks is fetched from its peers and this node becomes its owner,
 *   as when the application's pod takes over a session. The others read what this node
 *   holds.
 * - SCAN lists what this node holds, partition by partition (the cursor is the next
 *   partition), so a reply may hold more than COUNT keys; a key present for the whole
 *   scan is returned at least once, as Redis promises.
 * - API errors become error replies: invalid arguments `-ERR`, a full memory budget
 *   `-OOM`, unreachable replicas `-TRYAGAIN`.
 */
import { BatonError } from '../wire/errors';
import type { GetResponse, Part, Session } from '../gen/baton/v1/session';
import { globMatch } from './resp-glob';
import {
  array,
  bulk,
  error,
  integer,
  map,
  NULL,
  OK,
  simple,
  type ProtocolVersion,
  type Reply,
} from './resp-codec';
import type { SessionApi } from '../core/session-api';
import { forEachPart, type StoredSession } from '../store/store';

/** The part a plain Redis string is kept in. */
export const STRING_PART = 'value';

/** The Redis version whose command set (for what baton answers) clients may assume. */
export const REDIS_COMPATIBLE_VERSION = '7.2.0';

/** What SCAN, DBSIZE and INFO read of the local store. */
export interface RespStoreView {
  readonly partitions: number;
  sessionsIn(partition: number, now: number): Iterable<StoredSession>;
  sessionCount(): number;
}

export interface RespOptions {
  /** The node's default idle TTL (--default-ttl-seconds), given to SET without a TTL. */
  defaultTtlSeconds: number;
  /** baton's version, reported by HELLO and INFO. */
  batonVersion: string;
  nodeId: string;
}

/** Per-connection state the commands read and change. */
export class RespConnection {
  protocol: ProtocolVersion = 2;
  name = '';
  /** Set by QUIT: the server closes the connection once the reply is written. */
  closing = false;
  constructor(readonly id: number) {}
}

type Result = Reply | Promise<Reply>;
type Handler = (args: Buffer[], conn: RespConnection, now: number) => Result;

const WRONGTYPE = error('WRONGTYPE Operation against a key holding the wrong kind of value');
const SYNTAX = error('ERR syntax error');
const NOT_INTEGER = error('ERR value is not an integer or out of range');
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** A reply as an exception, so argument parsing can stop anywhere. */
class ReplyError extends Error {
  constructor(readonly reply: Reply) {
    super('reply');
  }
}

export class RespCommands {
  private readonly table: Map<string, { arity: number; run: Handler }>;
  private readonly startedAt: number;

  constructor(
    private readonly api: Pick<SessionApi, 'put' | 'get' | 'delete' | 'touch'>,
    private readonly store: RespStoreView,
    private readonly options: RespOptions,
    now: number,
  ) {
    this.startedAt = now;
    // Arity as Redis counts it: the command name included; negative = at least that many.
    this.table = new Map<string, { arity: number; run: Handler }>([
      ['ping', { arity: -1, run: (a) => (a.length === 1 ? simple('PONG') : a.length === 2 ? bulk(a[1]!) : arityError('ping')) }],
      ['echo', { arity: 2, run: (a) => bulk(a[1]!) }],
      ['quit', { arity: -1, run: (_a, c) => ((c.closing = true), OK) }],
      ['select', { arity: 2, run: (a) => (a[1]!.toString() === '0' ? OK : error('ERR DB index is out of range')) }],
      ['hello', { arity: -1, run: (a, c) => this.hello(a, c) }],
      ['auth', { arity: -2, run: () => error('ERR AUTH called without any password configured: baton\'s Redis endpoint has no authentication (it listens on loopback)') }],
      ['client', { arity: -2, run: (a, c) => this.client(a, c) }],
      ['command', { arity: -1, run: (a, c) => this.command(a, c) }],
      ['info', { arity: -1, run: (_a, _c, now) => this.info(now) }],
      ['dbsize', { arity: 1, run: () => integer(this.store.sessionCount()) }],
      ['get', { arity: 2, run: (a, _c, now) => this.get(a, now) }],
      ['getex', { arity: -2, run: (a, _c, now) => this.getex(a, now) }],
      ['set', { arity: -3, run: (a, _c, now) => this.set(a, now) }],
      ['mget', { arity: -2, run: (a, _c, now) => this.mget(a, now) }],
      ['del', { arity: -2, run: (a, _c, now) => integer(a.slice(1).filter((k) => this.api.delete({ sessionId: key(k), parts: [] }, now).found).length) }],
      ['unlink', { arity: -2, run: (a, _c, now) => integer(a.slice(1).filter((k) => this.api.delete({ sessionId: key(k), parts: [] }, now).found).length) }],
      ['exists', { arity: -2, run: (a, _c, now) => integer(a.slice(1).filter((k) => this.local(k, now) !== undefined).length) }],
      ['type', { arity: 2, run: (a, _c, now) => simple(typeOf(this.local(a[1]!, now))) }],
      ['expire', { arity: -3, run: (a, _c, now) => this.expire(a, now, 1000) }],
      ['pexpire', { arity: -3, run: (a, _c, now) => this.expire(a, now, 1) }],
      ['ttl', { arity: 2, run: (a, _c, now) => this.ttl(a, now, 1000) }],
      ['pttl', { arity: 2, run: (a, _c, now) => this.ttl(a, now, 1) }],
      ['persist', { arity: 2, run: () => error('ERR PERSIST is not supported: every baton session expires after its idle TTL') }],
      ['hget', { arity: 3, run: (a, _c, now) => this.hget(a, now) }],
      ['hmget', { arity: -3, run: (a, _c, now) => this.hmget(a, now) }],
      ['hgetall', { arity: 2, run: (a, _c, now) => this.hgetall(a, now) }],
      ['hset', { arity: -4, run: (a, _c, now) => this.hset(a, now, false) }],
      ['hmset', { arity: -4, run: (a, _c, now) => this.hset(a, now, true) }],
      ['hdel', { arity: -3, run: (a, _c, now) => this.hdel(a, now) }],
      ['hlen', { arity: 2, run: (a, _c, now) => integer(this.local(a[1]!, now)?.parts.length ?? 0) }],
      ['hexists', { arity: 3, run: (a, _c, now) => integer(this.local(a[1]!, now)?.parts.some((p) => p.name === a[2]!.toString('latin1')) === true ? 1 : 0) }],
      ['scan', { arity: -2, run: (a, _c, now) => this.scan(a, now) }],
    ]);
  }

  /** Runs one command; a Promise when it waits (a resume, replication back-pressure). */
  run(args: Buffer[], conn: RespConnection, now: number): Result {
    const name = args[0]!.toString('latin1').toLowerCase();
    const command = this.table.get(name);
    if (command === undefined) {
      const shown = args
        .slice(1, 4)
        .map((a) => `'${a.toString('latin1', 0, 64)}'`)
        .join(' ');
      return error(`ERR unknown command '${args[0]!.toString('latin1', 0, 64)}', with args beginning with: ${shown}`);
    }
    if (command.arity > 0 ? args.length !== command.arity : args.length < -command.arity) return arityError(name);
    try {
      const result = command.run(args, conn, now);
      return result instanceof Promise ? result.catch(toErrorReply) : result;
    } catch (err) {
      return toErrorReply(err);
    }
  }

  // --- connection and server ---------------------------------------------------------

  private hello(args: Buffer[], conn: RespConnection): Reply {
    let protocol = conn.protocol;
    let i = 1;
    if (args.length > 1) {
      const asked = args[1]!.toString();
      if (asked !== '2' && asked !== '3') return error('NOPROTO unsupported protocol version');
      protocol = Number(asked) as ProtocolVersion;
      i = 2;
    }
    for (; i < args.length; i++) {
      const option = args[i]!.toString().toLowerCase();
      if (option === 'auth' && i + 2 < args.length) {
        return error('ERR AUTH is not supported: baton\'s Redis endpoint has no authentication (it listens on loopback)');
      } else if (option === 'setname' && i + 1 < args.length) {
        conn.name = args[++i]!.toString();
      } else {
        return error(`ERR Syntax error in HELLO option '${option.slice(0, 64)}'`);
      }
    }
    conn.protocol = protocol;
    return map([
      [bulk('server'), bulk('baton')],
      [bulk('version'), bulk(REDIS_COMPATIBLE_VERSION)],
      [bulk('proto'), integer(protocol)],
      [bulk('id'), integer(conn.id)],
      [bulk('mode'), bulk('standalone')],
      [bulk('role'), bulk('master')],
      [bulk('modules'), array([])],
    ]);
  }

  private client(args: Buffer[], conn: RespConnection): Reply {
    const sub = args[1]!.toString().toLowerCase();
    if (sub === 'setname' && args.length === 3) {
      const name = args[2]!.toString();
      if (/[^\x21-\x7e]/.test(name)) return error('ERR Client names cannot contain spaces, newlines or special characters.');
      conn.name = name;
      return OK;
    }
    if (sub === 'getname' && args.length === 2) return conn.name === '' ? NULL : bulk(conn.name);
    if (sub === 'setinfo' && args.length === 4) return OK;
    if (sub === 'id' && args.length === 2) return integer(conn.id);
    return error(`ERR unknown subcommand or wrong number of arguments for '${sub.slice(0, 64)}'. Try CLIENT HELP.`);
  }

  /** Minimal: clients that ask (redis-cli for its hints) learn nothing and carry on. */
  private command(args: Buffer[], conn: RespConnection): Reply {
    if (args.length === 1) return array([]);
    const sub = args[1]!.toString().toLowerCase();
    if (sub === 'count') return integer(this.table.size);
    if (sub === 'docs') return conn.protocol === 3 ? map([]) : array([]);
    if (sub === 'info') return array(args.slice(2).map(() => NULL));
    return error(`ERR unknown subcommand '${sub.slice(0, 64)}'. Try COMMAND HELP.`);
  }

  private info(now: number): Reply {
    const sessions = this.store.sessionCount();
    const lines = [
      '# Server',
      `redis_version:${REDIS_COMPATIBLE_VERSION}`,
      'redis_mode:standalone',
      `baton_version:${this.options.batonVersion}`,
      `baton_node_id:${this.options.nodeId}`,
      `uptime_in_seconds:${Math.floor((now - this.startedAt) / 1000)}`,
      '',
      '# Persistence',
      'loading:0',
      '',
      '# Replication',
      'role:master',
      '',
      '# Keyspace',
      ...(sessions > 0 ? [`db0:keys=${sessions},expires=${sessions},avg_ttl=0`] : []),
      '',
    ];
    return bulk(lines.join('\r\n'));
  }

  // --- strings -----------------------------------------------------------------------

  private get(args: Buffer[], now: number): Result {
    return then(this.read(args[1]!, now), (session) => stringValue(session));
  }

  private getex(args: Buffer[], now: number): Result {
    const id = key(args[1]!);
    const ttl = args.length > 2 ? parseExpiry(args, 2, now, 'getex') : undefined;
    if (ttl === 'keep') throw new ReplyError(SYNTAX);
    return then(this.read(args[1]!, now), (session) => {
      const reply = stringValue(session);
      if (session === undefined || ttl === undefined || reply === WRONGTYPE) return reply;
      if (ttl <= 0) this.api.delete({ sessionId: id, parts: [] }, now);
      else this.api.touch({ sessionId: id, ttlSeconds: ttl }, now);
      return reply;
    });
  }

  private set(args: Buffer[], now: number): Result {
    const id = key(args[1]!);
    let condition: 'nx' | 'xx' | undefined;
    let returnOld = false;
    let ttl: number | 'keep' | undefined;
    for (let i = 3; i < args.length; i++) {
      const option = args[i]!.toString().toLowerCase();
      if ((option === 'nx' || option === 'xx') && condition === undefined) condition = option;
      else if (option === 'get' && !returnOld) returnOld = true;
      else if (ttl === undefined && (option === 'keepttl' || ((option === 'ex' || option === 'px' || option === 'exat' || option === 'pxat') && i + 1 < args.length))) {
        ttl = parseExpiry(args, i, now, 'set');
        if (ttl !== 'keep') i++;
      } else {
        return SYNTAX;
      }
    }
    // The check and the write happen in one turn of the event loop: nothing comes between.
    const before = this.local(args[1]!, now);
    const old = returnOld ? stringValue(before) : undefined;
    if (old === WRONGTYPE) return WRONGTYPE;
    const unchanged = returnOld ? old! : NULL;
    if ((condition === 'nx' && before !== undefined) || (condition === 'xx' && before === undefined)) return unchanged;
    if (typeof ttl === 'number' && ttl <= 0) {
      // An expiry already past: as Redis, the key is gone at once.
      this.api.delete({ sessionId: id, parts: [] }, now);
      return returnOld ? old! : OK;
    }
    const ttlSeconds = ttl === 'keep' ? (before === undefined ? this.options.defaultTtlSeconds : 0) : (ttl ?? this.options.defaultTtlSeconds);
    const put = this.api.put({ sessionId: id, parts: [{ name: STRING_PART, value: args[2]! }], ttlSeconds, minReplicas: 0 }, now);
    return then(put, () => (returnOld ? old! : OK));
  }

  private mget(args: Buffer[], now: number): Result {
    const reads = args.slice(1).map((k) => this.read(k, now));
    const answer = (sessions: Array<Session | undefined>) =>
      array(sessions.map((session) => {
        const part = session?.parts.find((p) => p.name === STRING_PART);
        return part === undefined ? NULL : bulk(part.value);
      }));
    return reads.some((r) => r instanceof Promise) ? Promise.all(reads).then(answer) : answer(reads as Array<Session | undefined>);
  }

  // --- expiry ------------------------------------------------------------------------

  private expire(args: Buffer[], now: number, unitMs: number): Result {
    const id = key(args[1]!);
    const amount = parseInteger(args[2]!);
    let condition: string | undefined;
    for (const option of args.slice(3).map((a) => a.toString().toLowerCase())) {
      if (!['nx', 'xx', 'gt', 'lt'].includes(option) || condition !== undefined) return error(`ERR Unsupported option ${option.slice(0, 64)}`);
      condition = option;
    }
    const session = this.local(args[1]!, now);
    if (session === undefined) return integer(0);
    const remainingMs = Number(session.expiresAtUnixMs) - now;
    const askedMs = amount * unitMs;
    // Every session has an expiry: NX never applies, XX always does.
    if (condition === 'nx' || (condition === 'gt' && askedMs <= remainingMs) || (condition === 'lt' && askedMs >= remainingMs)) return integer(0);
    if (askedMs <= 0) return integer(this.api.delete({ sessionId: id, parts: [] }, now).found ? 1 : 0);
    return integer(this.api.touch({ sessionId: id, ttlSeconds: Math.ceil(askedMs / 1000) }, now).found ? 1 : 0);
  }

  private ttl(args: Buffer[], now: number, unitMs: number): Reply {
    const session = this.local(args[1]!, now);
    if (session === undefined) return integer(-2);
    const remainingMs = Math.max(0, Number(session.expiresAtUnixMs) - now);
    return integer(unitMs === 1 ? remainingMs : Math.round(remainingMs / 1000));
  }

  // --- hashes ------------------------------------------------------------------------

  private hget(args: Buffer[], now: number): Result {
    return then(this.read(args[1]!, now, [field(args[2]!)]), (session) => {
      const part = session?.parts[0];
      return part === undefined ? NULL : bulk(part.value);
    });
  }

  private hmget(args: Buffer[], now: number): Result {
    const names = args.slice(2).map(field);
    return then(this.read(args[1]!, now, [...new Set(names)]), (session) => {
      const byName = new Map<string, Part>(session?.parts.map((p) => [p.name, p]) ?? []);
      return array(names.map((name) => {
        const part = byName.get(name);
        return part === undefined ? NULL : bulk(part.value);
      }));
    });
  }

  private hgetall(args: Buffer[], now: number): Result {
    return then(this.read(args[1]!, now), (session) => map((session?.parts ?? []).map((p) => [bulk(p.name), bulk(p.value)])));
  }

  private hset(args: Buffer[], now: number, legacy: boolean): Result {
    if (args.length % 2 !== 0) return arityError(legacy ? 'hmset' : 'hset');
    const id = key(args[1]!);
    // A field named twice: the last value wins, as in Redis.
    const writes = new Map<string, Buffer>();
    for (let i = 2; i < args.length; i += 2) writes.set(field(args[i]!), args[i + 1]!);
    const before = new Set(this.local(args[1]!, now)?.parts.map((p) => p.name) ?? []);
    const added = [...writes.keys()].filter((name) => !before.has(name)).length;
    const put = this.api.put({ sessionId: id, parts: [...writes].map(([name, value]) => ({ name, value })), ttlSeconds: 0, minReplicas: 0 }, now);
    return then(put, () => (legacy ? OK : integer(added)));
  }

  private hdel(args: Buffer[], now: number): Reply {
    const id = key(args[1]!);
    const names = [...new Set(args.slice(2).map(field))];
    const held = new Set(this.local(args[1]!, now)?.parts.map((p) => p.name) ?? []);
    const removed = names.filter((name) => held.has(name));
    if (removed.length === 0) return integer(0);
    // A hash with no fields left is gone, as in Redis.
    if (removed.length === held.size) this.api.delete({ sessionId: id, parts: [] }, now);
    else this.api.delete({ sessionId: id, parts: removed }, now);
    return integer(removed.length);
  }

  // --- keyspace ----------------------------------------------------------------------

  private scan(args: Buffer[], now: number): Reply {
    const text = args[1]!.toString();
    if (!/^\d{1,20}$/.test(text)) return error('ERR invalid cursor');
    let partition = Number(text);
    let pattern: string | undefined;
    let count = 10;
    let type: string | undefined;
    for (let i = 2; i < args.length; i += 2) {
      const option = args[i]!.toString().toLowerCase();
      if (i + 1 >= args.length) return SYNTAX;
      if (option === 'match') pattern = args[i + 1]!.toString();
      else if (option === 'count') {
        count = parseInteger(args[i + 1]!);
        if (count < 1) return SYNTAX;
      } else if (option === 'type') type = args[i + 1]!.toString().toLowerCase();
      else return SYNTAX;
    }
    const keys: Reply[] = [];
    let visited = 0;
    // Whole partitions, so a key present throughout is listed whatever else changes.
    while (partition < this.store.partitions && keys.length < count && visited < count) {
      for (const session of this.store.sessionsIn(partition, now)) {
        if (pattern !== undefined && !globMatch(pattern, session.id)) continue;
        if (type !== undefined && storedTypeOf(session) !== type) continue;
        keys.push(bulk(session.id));
      }
      partition++;
      visited++;
    }
    return array([bulk(partition >= this.store.partitions ? '0' : String(partition)), array(keys)]);
  }

  // --- reading -----------------------------------------------------------------------

  /** The session as the API reads it with resume (fetched from peers if this node lacks it). */
  private read(k: Buffer, now: number, parts: string[] = []): Session | undefined | Promise<Session | undefined> {
    return then(this.api.get({ sessionId: key(k), parts, resume: true }, now), (r: GetResponse) => (r.found ? r.session : undefined));
  }

  /** What this node holds of the session, without asking peers. */
  private local(k: Buffer, now: number): Session | undefined {
    const response = this.api.get({ sessionId: key(k), parts: [], resume: false }, now) as GetResponse;
    return response.found ? response.session : undefined;
  }
}

function then<T, R>(value: T | Promise<T>, f: (v: T) => R | Promise<R>): R | Promise<R> {
  return value instanceof Promise ? value.then(f) : f(value);
}

function key(k: Buffer): string {
  try {
    return utf8.decode(k);
  } catch {
    throw new ReplyError(error('ERR key is not valid UTF-8: baton session ids are UTF-8 text'));
  }
}

/** A hash field as a part name; the API checks that it is a valid one. */
function field(f: Buffer): string {
  return f.toString('latin1');
}

function stringValue(session: Session | undefined): Reply {
  if (session === undefined) return NULL;
  const part = session.parts.find((p) => p.name === STRING_PART);
  return part === undefined ? WRONGTYPE : bulk(part.value);
}

function typeOf(session: Session | undefined): string {
  if (session === undefined) return 'none';
  return session.parts.length === 1 && session.parts[0]!.name === STRING_PART ? 'string' : 'hash';
}

function storedTypeOf(session: StoredSession): string {
  const names: string[] = [];
  forEachPart(session, (name, value) => {
    if (value !== null) names.push(name);
  });
  return names.length === 1 && names[0] === STRING_PART ? 'string' : 'hash';
}

function parseInteger(arg: Buffer): number {
  const text = arg.toString();
  if (!/^-?\d{1,15}$/.test(text)) throw new ReplyError(NOT_INTEGER);
  return Number(text);
}

/**
 * The TTL an EX/PX/EXAT/PXAT option at `i` asks for, in whole seconds rounded up (≤ 0:
 * already expired), or 'keep' for KEEPTTL.
 */
function parseExpiry(args: Buffer[], i: number, now: number, command: string): number | 'keep' {
  const option = args[i]!.toString().toLowerCase();
  if (option === 'keepttl') return 'keep';
  if (option === 'persist') throw new ReplyError(error('ERR PERSIST is not supported: every baton session expires after its idle TTL'));
  if (i + 1 >= args.length || (args.length > i + 2 && command === 'getex')) throw new ReplyError(SYNTAX);
  const amount = parseInteger(args[i + 1]!);
  let ms: number;
  if (option === 'ex') ms = amount * 1000;
  else if (option === 'px') ms = amount;
  else if (option === 'exat') ms = amount * 1000 - now;
  else if (option === 'pxat') ms = amount - now;
  else throw new ReplyError(SYNTAX);
  if ((option === 'ex' || option === 'px') && amount <= 0) throw new ReplyError(error(`ERR invalid expire time in '${command}' command`));
  return Math.ceil(ms / 1000);
}

function arityError(name: string): Reply {
  return error(`ERR wrong number of arguments for '${name}' command`);
}

function toErrorReply(err: unknown): Reply {
  if (err instanceof ReplyError) return err.reply;
  if (err instanceof BatonError) {
    switch (err.code) {
      case 'resource_exhausted':
        return error(`OOM ${err.message}`);
      case 'unavailable':
      case 'deadline_exceeded':
        return error(`TRYAGAIN ${err.message}`);
      default:
        return error(`ERR ${err.message}`);
    }
  }
  throw err;
}
