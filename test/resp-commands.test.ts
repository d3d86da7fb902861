/**
 * The Redis commands on a real store and SessionApi, on virtual time: the mapping of
 * strings and hashes onto sessions and parts, TTL rounding, errors with their reasons,
 * SCAN's cursor over partitions, and glob matching.
 */
import { BuzHash } from '../src/store/buzhash';
import { HybridClock } from '../src/store/hybrid-clock';
import { encodeReply, joinPieces, type Reply } from '../src/resp/resp-codec';
import { RespCommands, RespConnection, STRING_PART } from '../src/resp/resp-commands';
import { globMatch } from '../src/resp/resp-glob';
import { SessionApi } from '../src/core/session-api';
import { DEFAULT_STORE_CONFIG, SessionStore } from '../src/store/store';

const T0 = 1_700_000_000_000;
const DEFAULT_TTL_S = 1800;

function setUp(partitions = 16) {
  const store = new SessionStore(
    { ...DEFAULT_STORE_CONFIG, nodeId: 'node-a', partitions, defaultTtlMs: DEFAULT_TTL_S * 1000, maxPartsPerSession: 8 },
    new BuzHash('resp-test'),
    new HybridClock(),
  );
  const api = new SessionApi(store, { maxValueBytes: 1000, maxPartsPerSession: 8 });
  const view = {
    partitions,
    sessionsIn: (p: number, now: number) => store.sessionsIn(p, now),
    sessionCount: () => store.getStats().sessions,
  };
  const commands = new RespCommands(api, view, { defaultTtlSeconds: DEFAULT_TTL_S, batonVersion: '0.1.0', nodeId: 'node-a' }, T0);
  const conn = new RespConnection(1);
  let now = T0;
  /** Runs a command (words split on spaces) and returns its RESP encoding as text. */
  const run = async (line: string | Array<string | Buffer>, at = now): Promise<string> => {
    const args = (typeof line === 'string' ? line.split(' ') : line).map((a) => (typeof a === 'string' ? Buffer.from(a) : a));
    const reply: Reply = await commands.run(args, conn, at);
    const out: Array<Buffer | string> = [];
    encodeReply(reply, conn.protocol, out);
    return joinPieces(out).toString('latin1');
  };
  return { store, api, run, conn, advance: (ms: number) => (now += ms), now: () => now };
}

describe('RespCommands', () => {
  it('keeps a string in the part `value` of a session', async () => {
    const { run, api } = setUp();
    expect(await run('SET s1 hello')).toBe('+OK\r\n');
    expect(await run('GET s1')).toBe('$5\r\nhello\r\n');
    const got = api.get({ sessionId: 's1', parts: [], resume: false }, T0) as { session: { parts: Array<{ name: string }> } };
    expect(got.session.parts.map((p) => p.name)).toEqual([STRING_PART]);
    expect(await run('GET missing')).toBe('$-1\r\n');
    expect(await run('TYPE s1')).toBe('+string\r\n');
  });

  it('answers WRONGTYPE for GET of a session without the part `value`, and SET leaves other parts alone', async () => {
    const { run } = setUp();
    expect(await run('HSET s1 user alice')).toBe(':1\r\n');
    expect(await run('GET s1')).toBe('-WRONGTYPE Operation against a key holding the wrong kind of value\r\n');
    expect(await run('MGET s1 nope')).toBe('*2\r\n$-1\r\n$-1\r\n');
    expect(await run('SET s1 v')).toBe('+OK\r\n');
    expect(await run('HGETALL s1')).toBe('*4\r\n$4\r\nuser\r\n$5\r\nalice\r\n$5\r\nvalue\r\n$1\r\nv\r\n');
    expect(await run('TYPE s1')).toBe('+hash\r\n');
  });

  it('honours NX, XX and GET on SET', async () => {
    const { run } = setUp();
    expect(await run('SET s1 a XX')).toBe('$-1\r\n');
    expect(await run('EXISTS s1')).toBe(':0\r\n');
    expect(await run('SET s1 a NX')).toBe('+OK\r\n');
    expect(await run('SET s1 b NX')).toBe('$-1\r\n');
    expect(await run('SET s1 c XX GET')).toBe('$1\r\na\r\n');
    expect(await run('GET s1')).toBe('$1\r\nc\r\n');
    expect(await run('SET s1 d NX XX')).toBe('-ERR syntax error\r\n');
  });

  it('gives SET without a TTL the default, rounds PX up to whole seconds, keeps the TTL with KEEPTTL', async () => {
    const { run, advance } = setUp();
    await run('SET s1 a');
    expect(await run('TTL s1')).toBe(`:${DEFAULT_TTL_S}\r\n`);
    advance(1000);
    await run('SET s1 a PX 1500');
    expect(await run('PTTL s1')).toBe(':2000\r\n');
    advance(1000);
    await run('SET s1 b EX 100');
    await run('SET s1 c KEEPTTL');
    expect(await run('TTL s1')).toBe(':100\r\n');
    expect(await run('SET s1 a EX 0')).toBe("-ERR invalid expire time in 'set' command\r\n");
    expect(await run('SET s1 a EX x')).toBe('-ERR value is not an integer or out of range\r\n');
    expect(await run(`SET s1 a EX ${31 * 24 * 3600}`)).toMatch(/^-ERR ttl_seconds \d+ is over the limit/);
  });

  it('expires a key when its TTL has passed, on virtual time', async () => {
    const { run } = setUp();
    await run('SET s1 a EX 10');
    expect(await run('GET s1', T0 + 9_999)).toBe('$1\r\na\r\n');
    expect(await run('GET s1', T0 + 10_000)).toBe('$-1\r\n');
    expect(await run('TTL s1', T0 + 10_000)).toBe(':-2\r\n');
  });

  it('maps EXPIRE, PEXPIRE and GETEX onto touch, and a non-positive TTL onto delete', async () => {
    const { run, advance } = setUp();
    expect(await run('EXPIRE nope 10')).toBe(':0\r\n');
    await run('SET s1 a EX 100');
    expect(await run('EXPIRE s1 50 NX')).toBe(':0\r\n');
    expect(await run('EXPIRE s1 50 GT')).toBe(':0\r\n');
    expect(await run('EXPIRE s1 50 LT')).toBe(':1\r\n');
    expect(await run('TTL s1')).toBe(':50\r\n');
    advance(1000);
    expect(await run('PEXPIRE s1 2001')).toBe(':1\r\n');
    expect(await run('PTTL s1')).toBe(':3000\r\n');
    expect(await run('GETEX s1 EX 70')).toBe('$1\r\na\r\n');
    expect(await run('TTL s1')).toBe(':70\r\n');
    expect(await run('GETEX s1 PERSIST')).toMatch(/^-ERR PERSIST is not supported/);
    expect(await run('PERSIST s1')).toMatch(/^-ERR PERSIST is not supported/);
    expect(await run('EXPIRE s1 0')).toBe(':1\r\n');
    expect(await run('EXISTS s1')).toBe(':0\r\n');
  });

  it('maps hash fields onto parts, with the API validation of names and typed parts', async () => {
    const { run } = setUp();
    expect(await run('HSET s1 a 1 b 2 a 3')).toBe(':2\r\n');
    expect(await run('HGET s1 a')).toBe('$1\r\n3\r\n');
    expect(await run('HMGET s1 b zz a b')).toBe('*4\r\n$1\r\n2\r\n$-1\r\n$1\r\n3\r\n$1\r\n2\r\n');
    expect(await run('HSET s1 b 5 c 6')).toBe(':1\r\n');
    expect(await run('HLEN s1')).toBe(':3\r\n');
    expect(await run('HEXISTS s1 c')).toBe(':1\r\n');
    expect(await run('HSET s1 Bad x')).toMatch(/^-ERR part name "Bad" is invalid: use 1 to 64 characters/);
    expect(await run('HGET s1 Bad')).toMatch(/^-ERR part name "Bad" is invalid/);
    expect(await run('HSET s1 cart notaproto')).toMatch(/^-ERR part 'cart' is not a valid /);
    expect(await run('HSET s1 a')).toBe("-ERR wrong number of arguments for 'hset' command\r\n");
    expect(await run('HDEL s1 a zz a')).toBe(':1\r\n');
    expect(await run('HDEL s1 b c')).toBe(':2\r\n');
    // A hash with no fields left is gone.
    expect(await run('EXISTS s1')).toBe(':0\r\n');
    expect(await run('HGETALL s1')).toBe('*0\r\n');
  });

  it('refuses what the API refuses, with its reason', async () => {
    const { run } = setUp();
    expect(await run(['SET', 's1', 'x'.repeat(1001)])).toBe("-ERR part 'value' is 1001 bytes, over the limit of 1000 bytes\r\n");
    expect(await run(['GET', 'a\nb'])).toBe('-ERR session_id contains a control character\r\n');
    expect(await run(['GET', 'x'.repeat(513)])).toBe('-ERR session_id is longer than 512 bytes\r\n');
    expect(await run(['GET', Buffer.from([0xc3, 0x28])])).toBe('-ERR key is not valid UTF-8: baton session ids are UTF-8 text\r\n');
  });

  it('deletes and counts keys with DEL and EXISTS', async () => {
    const { run } = setUp();
    await run('SET a 1');
    await run('HSET b f 1');
    expect(await run('EXISTS a b c a')).toBe(':3\r\n');
    expect(await run('DEL a b c')).toBe(':2\r\n');
    expect(await run('DBSIZE')).toBe(':0\r\n');
  });

  it('lists every held session once over a whole SCAN, with MATCH, COUNT and TYPE', async () => {
    const { run } = setUp(16);
    const ids = Array.from({ length: 40 }, (_, i) => `sess:${i}`);
    for (const id of ids) await run(`SET ${id} v`);
    await run('HSET other:1 f v');
    const seen: string[] = [];
    let cursor = '0';
    let calls = 0;
    do {
      const reply = await run(`SCAN ${cursor} MATCH sess:* COUNT 3`);
      const lines = reply.split('\r\n');
      cursor = lines[2]!;
      for (let i = 5; i < lines.length - 1; i += 2) seen.push(lines[i]!);
      calls++;
    } while (cursor !== '0' && calls < 100);
    expect(cursor).toBe('0');
    expect(seen.sort()).toEqual([...ids].sort());
    expect(calls).toBeGreaterThan(1);
    expect(await run('SCAN 0 COUNT 1000 TYPE hash')).toBe('*2\r\n$1\r\n0\r\n*1\r\n$7\r\nother:1\r\n');
    expect(await run('SCAN x')).toBe('-ERR invalid cursor\r\n');
  });

  it('answers the connection commands: PING, ECHO, SELECT, CLIENT, COMMAND, INFO, QUIT, HELLO', async () => {
    const { run, conn } = setUp();
    expect(await run('PING')).toBe('+PONG\r\n');
    expect(await run('PING hi')).toBe('$2\r\nhi\r\n');
    expect(await run('ECHO hey')).toBe('$3\r\nhey\r\n');
    expect(await run('SELECT 0')).toBe('+OK\r\n');
    expect(await run('SELECT 1')).toBe('-ERR DB index is out of range\r\n');
    expect(await run('CLIENT SETNAME app')).toBe('+OK\r\n');
    expect(await run('CLIENT GETNAME')).toBe('$3\r\napp\r\n');
    expect(await run('CLIENT SETINFO LIB-NAME ioredis')).toBe('+OK\r\n');
    expect(await run('COMMAND DOCS')).toBe('*0\r\n');
    expect(await run('INFO')).toMatch(/^\$\d+\r\n# Server\r\nredis_version:7\.2\.0\r\n/);
    expect(await run('HELLO 4')).toBe('-NOPROTO unsupported protocol version\r\n');
    expect(await run('HELLO 3 AUTH default pw')).toMatch(/^-ERR AUTH is not supported/);
    expect(conn.protocol).toBe(2);
    const hello = await run('HELLO 3 SETNAME x');
    expect(hello.startsWith('%7\r\n$6\r\nserver\r\n$5\r\nbaton\r\n')).toBe(true);
    expect(conn.protocol).toBe(3);
    expect(await run('GET missing')).toBe('_\r\n');
    expect(await run('COMMAND DOCS')).toBe('%0\r\n');
    expect(await run('QUIT')).toBe('+OK\r\n');
    expect(conn.closing).toBe(true);
  });

  it('answers unknown commands and wrong arities as Redis does', async () => {
    const { run } = setUp();
    expect(await run('FLUSHALL a b')).toBe("-ERR unknown command 'FLUSHALL', with args beginning with: 'a' 'b'\r\n");
    expect(await run('GET')).toBe("-ERR wrong number of arguments for 'get' command\r\n");
    expect(await run('GET a b')).toBe("-ERR wrong number of arguments for 'get' command\r\n");
  });
});

describe('globMatch', () => {
  it.each([
    ['*', 'anything', true],
    ['sess:*', 'sess:abc', true],
    ['sess:*', 'other', false],
    ['h?llo', 'hello', true],
    ['h?llo', 'hllo', false],
    ['h[ae]llo', 'hallo', true],
    ['h[^e]llo', 'hello', false],
    ['h[a-c]llo', 'hbllo', true],
    ['h\\*llo', 'h*llo', true],
    ['h\\*llo', 'hello', false],
    ['*a*b*c', 'xxaxxbxxc', true],
    ['*a*b*c', 'xxaxxbxx', false],
  ])('%s against %s: %s', (pattern, text, expected) => {
    expect(globMatch(pattern, text)).toBe(expected);
  });

  it('costs polynomial time on a pattern of many stars', () => {
    expect(globMatch('*a'.repeat(30) + 'b', 'a'.repeat(2000))).toBe(false);
  });
});
