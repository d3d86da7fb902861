/**
 * ExchangeStream's writing, against a stand-in for the gRPC call: the deadline each call
 * tells the sidecar. Timers and performance.now() are jest's (virtual); process.nextTick,
 * on which the stream writes, is left real.
 */
import { EventEmitter } from 'node:events';
import { ExchangeStream } from '../src/client/exchange-stream';
import { writeFramedRequest } from '../src/client/exchange-request-writer';
import { ExchangeRequest } from '../src/gen/baton/v1/session';

/** The calls written to the sidecar, as it reads them (a batch's operations, in order). */
class FakeCall extends EventEmitter {
  readonly written: ExchangeRequest[] = [];
  write(message: Buffer): boolean {
    const request = ExchangeRequest.decode(message);
    this.written.push(...(request.batch.length > 0 ? request.batch : [request]));
    return true;
  }
  cork(): void {}
  uncork(): void {}
  cancel(): void {}
}

const tick = () => new Promise((resolve) => process.nextTick(resolve));

describe('ExchangeStream', () => {
  beforeEach(() => jest.useFakeTimers({ doNotFake: ['nextTick', 'queueMicrotask', 'setImmediate'] }));
  afterEach(() => jest.useRealTimers());

  test('a call that waited for the stream tells the sidecar the time it has left; one made just now, the time it was made with', async () => {
    const stream = new ExchangeStream(1000, () => undefined);
    const get = (id: string) => ({ $case: 'get' as const, get: { sessionId: id, parts: [], resume: true } });
    const settled: Promise<unknown>[] = [];
    const call = (requestId: bigint, id: string, deadlineMs: number) =>
      settled.push(stream.enqueue(requestId, 'get', writeFramedRequest(requestId, get(id), deadlineMs), deadlineMs, () => undefined).catch(() => undefined));
    call(1n, 'early', 5000);
    call(2n, 'early-short', 3500);
    jest.advanceTimersByTime(3000);
    call(3n, 'now', 5000);
    const fake = new FakeCall();
    stream.attach(fake as never);
    await tick();
    expect(fake.written.map((r) => [r.requestId, r.deadlineMs])).toEqual([
      [1n, 2000],
      [2n, 500],
      [3n, 5000],
    ]);
    expect(fake.written[0]!.op).toEqual(get('early'));
    stream.abort(14, 'test over');
    await Promise.all(settled);
  });
});
