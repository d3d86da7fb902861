/**
 * BatonClient against an in-process fake sidecar (grpc-js server on 127.0.0.1, port 0).
 *
 * The fake is only as clever as the client tests need: an in-memory map of sessions that
 * honours if_version as the sidecar does (FAILED_PRECONDITION, nothing written), and hooks
 * to answer out of order, hold answers back, fail an operation, or drop the stream.
 * Compare-and-set against a real node is tested in sidecar.integration.test.ts.
 * No test sleeps: each waits for an event (an answer, a rejection, a deadline firing). The
 * reconnect backoff runs on virtual timers the test fires itself; a restart across a real
 * sidecar process is client-reconnect.integration.test.ts.
 */
import { Metadata, Server, ServerCredentials, status, type ServerDuplexStream, type ServerWritableStream } from '@grpc/grpc-js';
import { BatonClient, BatonClientError, WELL_KNOWN_PARTS, type ReconnectTimers } from '../src/client/client';
import { SeededRandom } from '../src/store/random';
import { JITTER, ReconnectBackoff } from '../src/client/reconnect-backoff';
import { AuthState, CartState, TcpConnectionState, TcpState, TlsSessionState } from '../src/gen/baton/v1/parts';
import {
  EventType,
  SessionServiceService,
  type ExchangeRequest,
  type ExchangeResponse,
  type Part,
  type WatchEvent,
  type WatchRequest,
} from '../src/gen/baton/v1/session';
import { rejection } from './support/rejection';

const PART_NAME = /^[a-z0-9_.-]{1,64}$/;

/** Session ids the fake treats specially. */
const NEVER_ANSWER = 'never-answer';
const PARKED = 'parked';
const KILL_STREAM = 'kill-stream';
/** Ends the stream with status OK, as a draining sidecar does. */
const END_STREAM = 'end-stream';

class FakeSidecar {
  readonly server = new Server();
  address = '';
  exchangeStreams = 0;
  /** Size of every batch of answers the fake wrote (each batch is written reversed). */
  readonly answerBatches: number[] = [];
  /** Operations carried by each request message (more than one = a batched ExchangeRequest). */
  readonly opsPerMessage: number[] = [];
  /** When > 0, answers are held until this many are ready, then written as one reversed batch. */
  holdUntil = 0;
  /** This many next Exchange streams fail (UNAVAILABLE) as soon as they open, answering nothing. */
  failNextStreams = 0;
  private readonly sessions = new Map<string, Map<string, Part>>();
  private readonly watchers = new Set<ServerWritableStream<WatchRequest, WatchEvent>>();
  private readonly parked: { call: ServerDuplexStream<ExchangeRequest, ExchangeResponse>; response: ExchangeResponse }[] = [];
  private nextVersion = 1n;

  /** `address`: bind this one (a restart on the same port); default a free port. */
  async start(address = '127.0.0.1:0'): Promise<void> {
    this.server.addService(SessionServiceService, {
      put: unimplemented,
      get: unimplemented,
      delete: unimplemented,
      touch: unimplemented,
      watch: (call: ServerWritableStream<WatchRequest, WatchEvent>) => {
        this.watchers.add(call);
        call.on('cancelled', () => this.watchers.delete(call));
        call.sendMetadata(new Metadata());
      },
      exchange: (call: ServerDuplexStream<ExchangeRequest, ExchangeResponse>) => this.exchange(call),
    });
    const port = await new Promise<number>((resolve, reject) => {
      this.server.bindAsync(address, ServerCredentials.createInsecure(), (err, boundPort) =>
        err ? reject(err) : resolve(boundPort),
      );
    });
    this.address = `127.0.0.1:${port}`;
  }

  /** Answers every parked request now, long after its client gave up on it. */
  releaseParked(): void {
    for (const { call, response } of this.parked.splice(0)) call.write(response);
  }

  /** Ends every watch with status OK, as a draining sidecar does. */
  endWatches(): void {
    for (const watcher of this.watchers) watcher.end();
    this.watchers.clear();
  }

  stop(): void {
    this.server.forceShutdown();
  }

  private exchange(call: ServerDuplexStream<ExchangeRequest, ExchangeResponse>): void {
    this.exchangeStreams++;
    if (this.failNextStreams > 0) {
      this.failNextStreams--;
      call.emit('error', { code: status.UNAVAILABLE, details: 'the fake refused the stream' });
      return;
    }
    let batch: ExchangeResponse[] = [];
    let flushScheduled = false;
    let ended = false;
    const flush = (): void => {
      flushScheduled = false;
      if (ended || batch.length === 0) return;
      const answers = batch.reverse();
      batch = [];
      this.answerBatches.push(answers.length);
      for (const answer of answers) call.write(answer);
    };
    const handle = (request: ExchangeRequest): void => {
      const sessionId = sessionIdOf(request);
      if (sessionId === KILL_STREAM) {
        ended = true;
        call.emit('error', { code: status.UNAVAILABLE, details: 'the fake dropped the stream' });
        return;
      }
      if (sessionId === END_STREAM) {
        ended = true;
        call.end();
        return;
      }
      if (sessionId === NEVER_ANSWER) return;
      const response: ExchangeResponse = { requestId: request.requestId, result: this.answer(request), batch: [] };
      if (sessionId === PARKED) {
        this.parked.push({ call, response });
        return;
      }
      batch.push(response);
      if (this.holdUntil > 0) {
        if (batch.length < this.holdUntil) return;
        this.holdUntil = 0;
        flush();
      } else if (!flushScheduled) {
        flushScheduled = true;
        setImmediate(flush);
      }
    };
    call.on('data', (request: ExchangeRequest) => {
      const ops = request.batch.length > 0 ? request.batch : [request];
      this.opsPerMessage.push(ops.length);
      for (const op of ops) if (!ended) handle(op);
    });
    call.on('end', () => {
      ended = true;
      call.end();
    });
    call.on('error', () => {
      ended = true;
    });
  }

  private answer(request: ExchangeRequest): ExchangeResponse['result'] {
    const op = request.op;
    switch (op?.$case) {
      case 'put': {
        const bad = op.put.parts.find((p) => !PART_NAME.test(p.name));
        if (bad !== undefined) {
          return { $case: 'error', error: { code: status.INVALID_ARGUMENT, message: `part name '${bad.name}' is invalid` } };
        }
        const session = this.sessions.get(op.put.sessionId) ?? new Map<string, Part>();
        for (const write of op.put.parts) {
          const current = session.get(write.name)?.version ?? 0n;
          if (write.ifVersion !== undefined && write.ifVersion !== current) {
            return { $case: 'error', error: { code: status.FAILED_PRECONDITION, message: `part '${write.name}' is at version ${current}, not the expected ${write.ifVersion}` } };
          }
        }
        this.sessions.set(op.put.sessionId, session);
        const versions = op.put.parts.map((write) => {
          const part: Part = { name: write.name, value: write.value, version: this.nextVersion++, writerNodeId: 'fake', updatedAtUnixMs: 0n };
          session.set(write.name, part);
          this.notify({ sessionId: op.put.sessionId, type: EventType.EVENT_TYPE_PUT, part, partName: '' });
          return { name: part.name, version: part.version };
        });
        return { $case: 'put', put: { versions, replicasAcked: op.put.minReplicas } };
      }
      case 'get': {
        const session = this.sessions.get(op.get.sessionId);
        if (session === undefined) return { $case: 'get', get: { found: false, session: undefined } };
        const parts = [...session.values()].filter((p) => op.get.parts.length === 0 || op.get.parts.includes(p.name));
        return {
          $case: 'get',
          get: { found: true, session: { sessionId: op.get.sessionId, parts, ownerNodeId: 'fake', epoch: 1n, expiresAtUnixMs: 0n } },
        };
      }
      case 'delete':
        return { $case: 'delete', delete: { found: this.sessions.delete(op.delete.sessionId) } };
      case 'touch':
        return {
          $case: 'touch',
          touch: { found: this.sessions.has(op.touch.sessionId), expiresAtUnixMs: BigInt(op.touch.ttlSeconds) * 1000n },
        };
      default:
        return { $case: 'error', error: { code: status.INVALID_ARGUMENT, message: 'no operation' } };
    }
  }

  private notify(event: WatchEvent): void {
    for (const watcher of this.watchers) {
      const wanted = watcher.request.sessionId;
      if (wanted === '' || wanted === event.sessionId) watcher.write(event);
    }
  }
}

function sessionIdOf(request: ExchangeRequest): string {
  const op = request.op;
  switch (op?.$case) {
    case 'put':
      return op.put.sessionId;
    case 'get':
      return op.get.sessionId;
    case 'delete':
      return op.delete.sessionId;
    case 'touch':
      return op.touch.sessionId;
    default:
      return '';
  }
}

function unimplemented(_call: unknown, callback: (err: { code: number; details: string }) => void): void {
  callback({ code: status.UNIMPLEMENTED, details: 'the client uses Exchange' });
}

const bytes = (...values: number[]): Uint8Array => Uint8Array.from(values);

describe('BatonClient', () => {
  let fake: FakeSidecar;
  let client: BatonClient;

  beforeEach(async () => {
    fake = new FakeSidecar();
    await fake.start();
    client = new BatonClient(fake.address);
  });

  afterEach(() => {
    client.close();
    fake.stop();
  });

  test('operations issued in one tick share one stream and resolve correctly when answered in reverse', async () => {
    const n = 100;
    fake.holdUntil = 2 * n + 2;
    const puts = [];
    const gets = [];
    for (let i = 0; i < n; i++) puts.push(client.put(`s${i}`, { cart: bytes(i), note: bytes(i, i) }));
    for (let i = 0; i < n; i++) gets.push(client.get(`s${i}`, { parts: ['note'] }));
    const touched = client.touch('s7', { ttlSeconds: 60 });
    const deleted = client.delete('s8');

    const putResults = await Promise.all(puts);
    const sessions = await Promise.all(gets);

    expect(fake.answerBatches).toEqual([2 * n + 2]);
    expect(fake.exchangeStreams).toBe(1);
    // They left as batched requests (at most 256 operations a message), not 202 messages.
    expect(fake.opsPerMessage.reduce((a, b) => a + b, 0)).toBe(2 * n + 2);
    expect(fake.opsPerMessage.length).toBeLessThanOrEqual(2);
    putResults.forEach((result) => expect(result.versions.map((v) => v.name)).toEqual(['cart', 'note']));
    sessions.forEach((session, i) => {
      expect(session?.sessionId).toBe(`s${i}`);
      expect(session?.parts.map((p) => [p.name, [...p.value]])).toEqual([['note', [i, i]]]);
    });
    expect(await touched).toEqual({ found: true, expiresAtUnixMs: 60_000n });
    expect(await deleted).toBe(true);
    expect(await client.get('s8')).toBeUndefined();
    expect(await client.delete('s8')).toBe(false);
  });

  test('sends the expected versions of a put, from ifVersions and from each part write', async () => {
    const first = await client.put('cas', [{ name: 'a', value: bytes(1) }], { ifVersions: { a: 0n } });
    const version = first.versions[0]?.version ?? 0n;
    const again = await rejection(client.put('cas', { a: bytes(9) }, { ifVersions: { a: 0n } }));
    expect([again.code, again.message]).toEqual([status.FAILED_PRECONDITION, `part 'a' is at version ${version}, not the expected 0`]);
    const stale = await rejection(client.put('cas', [{ name: 'a', value: bytes(9), ifVersion: version + 1n }]));
    expect(stale.code).toBe(status.FAILED_PRECONDITION);
    expect((await client.get('cas'))?.parts[0]?.value).toEqual(Buffer.from([1]));
    // A part write's own ifVersion wins over ifVersions.
    await client.put('cas', [{ name: 'a', value: bytes(2), ifVersion: version }], { ifVersions: { a: 0n } });
    expect((await client.get('cas'))?.parts[0]?.value).toEqual(Buffer.from([2]));
  });

  test('an OperationError rejects that operation only, with its code', async () => {
    const failed = client.put('s', { 'Not A Name': bytes(1) });
    const fine = client.put('s', { fine: bytes(1) });

    const err = await rejection(failed);
    expect(err.name).toBe('BatonClientError');
    expect(err.code).toBe(status.INVALID_ARGUMENT);
    expect(err.message).toBe("part name 'Not A Name' is invalid");
    await expect(fine).resolves.toMatchObject({ versions: [{ name: 'fine' }] });
    expect(fake.exchangeStreams).toBe(1);
  });

  test('an unanswered operation rejects with DEADLINE_EXCEEDED and its late answer is ignored', async () => {
    const never = client.get(NEVER_ANSWER, { deadlineMs: 50 });
    const parked = client.get(PARKED, { deadlineMs: 50 });
    expect((await rejection(never)).code).toBe(status.DEADLINE_EXCEEDED);
    expect((await rejection(parked)).code).toBe(status.DEADLINE_EXCEEDED);

    fake.releaseParked();
    // Written after the late answer on the same stream, so answered after it was dropped.
    await client.put('after', { a: bytes(1) });
    expect(await client.get('after')).toBeDefined();
    expect(fake.exchangeStreams).toBe(1);
  });

  test('deadlines of different lengths each fire on time, whatever order the calls were made in', async () => {
    const order: string[] = [];
    const track = (name: string, call: Promise<unknown>) =>
      rejection(call).then((err) => {
        order.push(name);
        return err.code;
      });
    const long = track('long', client.get(NEVER_ANSWER, { deadlineMs: 400 }));
    const short = track('short', client.get(NEVER_ANSWER, { deadlineMs: 20 }));
    // An answered call is not failed by the deadlines around it (its own is far off: the
    // answer must not race a 20 ms timer on a loaded machine).
    const answered = client.put('deadline-mix', { a: bytes(1) }, { deadlineMs: 10_000 });
    const middle = track('middle', client.get(NEVER_ANSWER, { deadlineMs: 100 }));
    await expect(answered).resolves.toMatchObject({ versions: [{ name: 'a' }] });
    expect(await Promise.all([long, short, middle])).toEqual([status.DEADLINE_EXCEEDED, status.DEADLINE_EXCEEDED, status.DEADLINE_EXCEEDED]);
    expect(order).toEqual(['short', 'middle', 'long']);
  });

  test('an unanswered call still expires after many calls of its deadline length were answered behind it', async () => {
    // Each answered call only needs answering within its own second: the rounds take milliseconds.
    const parked = client.get(PARKED, { deadlineMs: 1000 });
    for (let round = 0; round < 5; round++) {
      // 40 answered calls per round with the parked one's deadline length, so the group's
      // settled calls pile up behind it and are compacted away, and 12 more deadline lengths
      // than the group cache keeps.
      const calls = Array.from({ length: 40 }, (_, i) => client.put(`behind-${round}-${i}`, { a: bytes(1) }, { deadlineMs: 1000 }));
      const others = Array.from({ length: 20 }, (_, i) => client.touch(`other-${i}`, { deadlineMs: 10_000 + round * 20 + i }));
      await Promise.all([...calls, ...others]);
    }
    expect((await rejection(parked)).code).toBe(status.DEADLINE_EXCEEDED);
    fake.releaseParked();
    await expect(client.put('after-parked', { a: bytes(1) })).resolves.toMatchObject({ versions: [{ name: 'a' }] });
  });

  test('when the stream dies its operations reject with its status and the next call opens a new stream', async () => {
    const pending = client.get(PARKED);
    const killer = client.get(KILL_STREAM);

    expect((await rejection(pending)).code).toBe(status.UNAVAILABLE);
    const err = await rejection(killer);
    expect(err.code).toBe(status.UNAVAILABLE);
    expect(err.message).toContain('the fake dropped the stream');

    await client.put('again', { a: bytes(3) });
    expect((await client.get('again'))?.parts[0]?.value).toEqual(Buffer.from([3]));
    expect(fake.exchangeStreams).toBe(2);
  });

  test('the typed helpers round-trip every well-known part', async () => {
    const tls = TlsSessionState.fromPartial({
      sessionId: Buffer.from([1, 2, 3]),
      sessionData: Buffer.from('session-bytes'),
      protocol: 'TLSv1.3',
      cipher: 'TLS_AES_128_GCM_SHA256',
      serverName: 'shop.example',
      createdAtUnixMs: 1_700_000_000_000n,
      lifetimeSeconds: 7200,
      alpnProtocol: 'h2',
    });
    const auth = AuthState.fromPartial({
      token: 't0k3n',
      tokenType: 'Bearer',
      subject: 'user-42',
      scopes: ['read', 'write'],
      expiresAtUnixMs: 1_700_000_360_000n,
      claims: { role: 'admin', tenant: 'eu' },
    });
    const cart = CartState.fromPartial({
      items: [{ sku: 'A-1', name: 'Mug', quantity: 2, unitPriceMinor: 1299n }],
      currency: 'EUR',
      billingAddress: { name: 'Ada', line1: '1 Main St', city: 'Paris', postalCode: '75001', country: 'FR' },
      updatedAtUnixMs: 5n,
    });
    const tcp = TcpConnectionState.fromPartial({
      localAddress: '10.0.0.1',
      localPort: 443,
      remoteAddress: '10.0.0.2',
      remotePort: 51234,
      sendNext: 4_000_000_000,
      state: TcpState.TCP_STATE_ESTABLISHED,
      sackPermitted: true,
      capturedAtUnixMs: 9n,
    });

    await Promise.all([
      client.putTls('typed', tls),
      client.putAuth('typed', auth),
      client.putCart('typed', cart),
      client.putTcp('typed', tcp),
    ]);

    expect(await client.getTls('typed')).toEqual(tls);
    expect(await client.getAuth('typed')).toEqual(auth);
    expect(await client.getCart('typed')).toEqual(cart);
    expect(await client.getTcp('typed')).toEqual(tcp);
    expect(await client.getPart('typed', 'cart')).toEqual(cart);
    // Stored bytes are exactly the generated encoding, so the server's checks accept them.
    const stored = await client.get('typed', { parts: ['tls'] });
    expect(WELL_KNOWN_PARTS.tls.codec.decode(stored?.parts[0]?.value ?? new Uint8Array())).toEqual(tls);

    expect(await client.getTls('no-such-session')).toBeUndefined();
    await client.put('untyped', { other: bytes(1) });
    expect(await client.getTls('untyped')).toBeUndefined();
  });

  test('watch delivers events after ready() and ends quietly when cancelled', async () => {
    const watch = client.watch('watched');
    await watch.ready();

    await client.put('unwatched', { a: bytes(0) });
    await client.put('watched', { a: bytes(1), b: bytes(2) });

    const events: WatchEvent[] = [];
    for await (const event of watch) {
      events.push(event);
      if (events.length === 2) break;
    }
    expect(events.map((e) => [e.sessionId, e.type, e.part?.name])).toEqual([
      ['watched', EventType.EVENT_TYPE_PUT, 'a'],
      ['watched', EventType.EVENT_TYPE_PUT, 'b'],
    ]);

    const all = client.watch('');
    await all.ready();
    const seen: string[] = [];
    const iteration = (async () => {
      for await (const event of all) {
        seen.push(event.sessionId);
        all.cancel();
      }
    })();
    await client.put('any', { a: bytes(1) });
    await iteration;
    expect(seen).toEqual(['any']);
  });

  test('input the stream cannot carry is refused before it is sent', async () => {
    const small = new BatonClient(fake.address, { maxRequestBytes: 1024 });
    try {
      expect((await rejection(small.put('big', { a: new Uint8Array(2048) }))).code).toBe(status.RESOURCE_EXHAUSTED);
      expect((await rejection(small.put('s', { a: bytes(1) }, { ttlSeconds: -1 }))).code).toBe(status.INVALID_ARGUMENT);
      expect((await rejection(small.put('s', { a: bytes(1) }, { ifVersions: { b: 1n } }))).code).toBe(
        status.INVALID_ARGUMENT,
      );
      expect((await rejection(small.get('s', { deadlineMs: 0 }))).code).toBe(status.INVALID_ARGUMENT);
      await small.put('s', { a: bytes(1) });
    } finally {
      small.close();
    }
  });

  test('calls beyond maxQueued are refused', async () => {
    const bounded = new BatonClient(fake.address, { maxQueued: 2 });
    try {
      const calls = [bounded.touch('a'), bounded.touch('b'), bounded.touch('c')];
      expect((await rejection(calls[2] as Promise<unknown>)).code).toBe(status.RESOURCE_EXHAUSTED);
      await Promise.all(calls.slice(0, 2));
    } finally {
      bounded.close();
    }
  });

  test('close() rejects pending calls and refuses new ones', async () => {
    const closing = new BatonClient(fake.address);
    const pending = closing.get(PARKED);
    await closing.touch('x'); // answered, so the parked get has been sent too
    const watch = closing.watch('w');
    await watch.ready();
    closing.close();
    expect((await rejection(pending)).code).toBe(status.CANCELLED);
    expect((await rejection(closing.get('x'))).code).toBe(status.CANCELLED);
    expect(() => closing.watch('x')).toThrow(BatonClientError);
    for await (const _event of watch) throw new Error('a cancelled watch has no events');
  });

  test('a call the client cannot send rejects (it never throws at the caller)', async () => {
    const calls: (() => Promise<unknown>)[] = [
      () => client.put('s', { p: 'not bytes' as unknown as Uint8Array }),
      () => client.put('s', { p: Buffer.from('v') }, { ttlSeconds: -1 }),
      () => client.put('s', [{ name: 'p', value: Buffer.from('v'), ifVersion: -1n }]),
      () => client.touch('s', { ttlSeconds: 2 ** 32 }),
      () => client.get('s', { deadlineMs: 0 }),
      () => client.delete('s', { deadlineMs: Number.NaN }),
    ];
    for (const call of calls) {
      let promise: Promise<unknown> | undefined;
      expect(() => (promise = call())).not.toThrow();
      expect((await rejection(promise!)).code).toBe(status.INVALID_ARGUMENT);
    }
  });
});

/** Timers the test fires by hand: the client's backoff waits are recorded, never slept. */
class VirtualTimers implements ReconnectTimers {
  readonly waits: number[] = [];
  private armed: { fn: () => void; live: boolean }[] = [];

  setTimeout(fn: () => void, ms: number): unknown {
    this.waits.push(ms);
    const timer = { fn, live: true };
    this.armed.push(timer);
    return timer;
  }

  clearTimeout(handle: unknown): void {
    if (handle !== undefined) (handle as { live: boolean }).live = false;
  }

  get pending(): number {
    return this.armed.filter((t) => t.live).length;
  }

  /** Runs every armed timer, as if its time had come. */
  fire(): void {
    const due = this.armed.filter((t) => t.live);
    this.armed = [];
    for (const timer of due) {
      timer.live = false;
      timer.fn();
    }
  }
}

const seeded = (seed: number): (() => number) => {
  const random = new SeededRandom(seed);
  return () => random.next();
};

describe('ReconnectBackoff', () => {
  test('doubles from the initial wait to the cap, each within the jitter, and starts again after reset()', () => {
    const backoff = new ReconnectBackoff({ initialMs: 50, maxMs: 2000 }, seeded(11));
    const bases = [50, 100, 200, 400, 800, 1600, 2000, 2000, 2000, 50, 100];
    const waits: number[] = [];
    bases.forEach((base, i) => {
      if (i === 9) backoff.reset();
      const wait = backoff.fail();
      waits.push(wait);
      expect(wait).toBeGreaterThanOrEqual(Math.floor(base * (1 - JITTER)));
      expect(wait).toBeLessThanOrEqual(Math.ceil(base * (1 + JITTER)));
    });
    // Jittered: not every wait sits on its base.
    expect(waits.some((wait, i) => wait !== bases[i])).toBe(true);
    // A long outage neither overflows nor exceeds the cap.
    for (let i = 0; i < 2000; i++) backoff.fail();
    expect(backoff.fail()).toBeLessThanOrEqual(2000 * (1 + JITTER));
  });

  test('the extremes of the jitter source stay within ±JITTER', () => {
    expect(new ReconnectBackoff({ initialMs: 100, maxMs: 100 }, () => 0).fail()).toBe(80);
    expect(new ReconnectBackoff({ initialMs: 100, maxMs: 100 }, () => 0.999999).fail()).toBe(120);
  });
});

describe('BatonClient reconnecting', () => {
  let fake: FakeSidecar;
  const clients: BatonClient[] = [];
  const newClient = (options: ConstructorParameters<typeof BatonClient>[1] = {}): BatonClient => {
    const client = new BatonClient(fake.address, options);
    clients.push(client);
    return client;
  };

  beforeEach(async () => {
    fake = new FakeSidecar();
    await fake.start();
  });

  afterEach(() => {
    for (const client of clients.splice(0)) client.close();
    fake.stop();
  });

  test('a stream the sidecar ends fails its calls in flight, and the next call opens a new stream at once', async () => {
    const timers = new VirtualTimers();
    const client = newClient({ reconnect: { timers } });
    await client.put('s', { a: bytes(1) });
    const inFlight = client.get(PARKED);
    const ending = client.get(END_STREAM);

    const err = await rejection(inFlight);
    expect(err.code).toBe(status.UNAVAILABLE);
    expect(err.message).toBe('the sidecar ended the Exchange stream (it is shutting down or restarting); it may or may not have been applied');
    expect((await rejection(ending)).code).toBe(status.UNAVAILABLE);

    // The ended stream had answered: no backoff before the next one.
    expect((await client.get('s'))?.parts[0]?.value).toEqual(Buffer.from([1]));
    expect(timers.waits).toEqual([]);
    expect(fake.exchangeStreams).toBe(2);
  });

  test('streams that fail without answering are reopened after a growing backoff, reset by a stream that answered', async () => {
    const timers = new VirtualTimers();
    const client = newClient({ reconnect: { timers, random: seeded(7) } });
    const expected = new ReconnectBackoff({ initialMs: 50, maxMs: 2000 }, seeded(7));
    const failures = 8;
    fake.failNextStreams = failures;

    const first = await rejection(client.get('a'));
    expect([first.code, first.message]).toEqual([status.UNAVAILABLE, 'the Exchange stream to the sidecar failed: the fake refused the stream; it may or may not have been applied']);
    const expectedWaits = [expected.fail()];
    for (let attempt = 2; attempt <= failures; attempt++) {
      expect(timers.waits).toEqual(expectedWaits);
      // Calls made during the wait share the one attempt that follows it.
      const calls = [client.get('a'), client.touch('b')];
      timers.fire();
      for (const call of calls) expect((await rejection(call)).code).toBe(status.UNAVAILABLE);
      expect(fake.exchangeStreams).toBe(attempt);
      expectedWaits.push(expected.fail());
    }
    expect(timers.waits).toEqual(expectedWaits);
    expect(Math.max(...expectedWaits)).toBeLessThanOrEqual(2000 * (1 + JITTER));
    expect(expectedWaits[failures - 1]).toBeGreaterThanOrEqual(2000 * (1 - JITTER));

    // The sidecar accepts streams again: the waiting call goes out when the wait ends.
    const waiting = client.put('c', { a: bytes(2) });
    timers.fire();
    await waiting;
    expect(fake.exchangeStreams).toBe(failures + 1);

    // That stream answered, so the next failure waits the initial backoff again.
    await rejection(client.get(END_STREAM));
    fake.failNextStreams = 1;
    await rejection(client.get('a'));
    expected.reset();
    expect(timers.waits).toEqual([...expectedWaits, expected.fail()]);
    expect(timers.waits[timers.waits.length - 1]).toBeLessThanOrEqual(50 * (1 + JITTER));
  });

  test('a call waiting for a stream fails at its own deadline, unsent', async () => {
    const timers = new VirtualTimers();
    const client = newClient({ reconnect: { timers } });
    fake.failNextStreams = 1;
    await rejection(client.get('a'));
    expect(timers.pending).toBe(1);

    const err = await rejection(client.put('late', { a: bytes(1) }, { deadlineMs: 30 }));
    expect(err.code).toBe(status.DEADLINE_EXCEEDED);
    expect(err.message).toBe('put did not complete within its deadline of 30 ms; it was not sent (no stream to the sidecar yet: it is unreachable or restarting)');
    timers.fire();
    expect(await client.get('late')).toBeUndefined();
    expect(fake.exchangeStreams).toBe(2);
  });

  test('a call made while the sidecar is gone waits for it to come back on the same port', async () => {
    const client = newClient();
    await client.put('s', { a: bytes(1) });
    const inFlight = client.get(PARKED);
    await client.touch('s'); // answered, so the parked get has been sent
    const address = fake.address;
    fake.stop();
    const err = await rejection(inFlight);
    expect(err.code).toBe(status.UNAVAILABLE);
    expect(err.message).toMatch(/it may or may not have been applied$/);

    const unreachable = await rejection(client.get('s', { deadlineMs: 30 }));
    expect(unreachable.code).toBe(status.DEADLINE_EXCEEDED);
    expect(unreachable.message).toContain('it was not sent');
    const waiting = client.put('back', { a: bytes(2) }, { deadlineMs: 30_000 });

    fake = new FakeSidecar();
    await fake.start(address);
    expect((await waiting).versions.map((v) => v.name)).toEqual(['a']);
    expect((await client.get('back'))?.parts[0]?.value).toEqual(Buffer.from([2]));
    // The new sidecar saw one stream, carrying only what was still wanted.
    expect(fake.exchangeStreams).toBe(1);
    expect(await client.get('s')).toBeUndefined();
  });

  test('close() during a reconnect rejects the waiting calls and clears the backoff timer', async () => {
    const timers = new VirtualTimers();
    const backingOff = newClient({ reconnect: { timers } });
    fake.failNextStreams = 1;
    await rejection(backingOff.get('a'));
    const waiting = backingOff.get('b');
    expect(timers.pending).toBe(1);
    backingOff.close();
    expect((await rejection(waiting)).code).toBe(status.CANCELLED);
    expect(timers.pending).toBe(0);
    expect(fake.exchangeStreams).toBe(1);

    // Waiting for the channel instead (nothing listens): close() ends that wait too.
    const connecting = newClient();
    fake.stop();
    const pending = connecting.get('c', { deadlineMs: 60_000 });
    connecting.close();
    expect((await rejection(pending)).code).toBe(status.CANCELLED);
    expect((await rejection(connecting.get('c'))).code).toBe(status.CANCELLED);
  });

  test('a watch the sidecar ends throws UNAVAILABLE; one it cannot reach fails ready()', async () => {
    const client = newClient();
    const watch = client.watch('w');
    await watch.ready();
    const ended = rejection(
      (async () => {
        for await (const _event of watch) void _event;
      })(),
    );
    fake.endWatches();
    const err = await ended;
    expect(err.code).toBe(status.UNAVAILABLE);
    expect(err.message).toContain('watch again');

    // A sidecar that stops without a drain resets the stream (CANCELLED on the wire).
    const cut = client.watch('w');
    await cut.ready();
    const cutEnded = rejection(
      (async () => {
        for await (const _event of cut) void _event;
      })(),
    );
    fake.stop();
    expect((await cutEnded).code).toBe(status.UNAVAILABLE);
    const unreachable = client.watch('w');
    expect((await rejection(unreachable.ready())).code).toBe(status.UNAVAILABLE);
    await expect(
      (async () => {
        for await (const _event of unreachable) void _event;
      })(),
    ).rejects.toMatchObject({ code: status.UNAVAILABLE });
  });
});
