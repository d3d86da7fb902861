/**
 * A watch on one session's changes (or every session's): a server-streaming Watch call
 * wrapped as an async iterable. A watch is never reopened, and it never ends quietly unless
 * the caller cancelled it: a sidecar that ends it is going away, and a loop that stopped
 * without an error would leave the application believing it still watches.
 */
import { status as Status, type ClientReadableStream, type StatusObject } from '@grpc/grpc-js';
import type { WatchEvent } from '../gen/baton/v1/session';
import { BatonClientError, toClientError } from './client-errors';

/**
 * A running watch: iterate it (once) for events, await `ready()` to know the sidecar has
 * registered it, `cancel()` to stop. Iteration ends quietly after cancel() (or close()) and
 * otherwise throws a BatonClientError: its deadline, a failure, or UNAVAILABLE when the
 * sidecar ended the watch (it drains on SIGTERM) or could not be reached. A watch is never
 * reopened: changes made until a new one is ready are not seen. Leaving a `for await` loop
 * early cancels the watch.
 */
export class BatonWatch implements AsyncIterable<WatchEvent> {
  private readonly registered: Promise<void>;
  private failure: BatonClientError | undefined;
  private cancelled = false;
  private iterated = false;

  /** Made by BatonClient.watch(). */
  constructor(
    private readonly stream: ClientReadableStream<WatchEvent>,
    onFinished: () => void,
  ) {
    stream.on('error', (err: unknown) => {
      this.failure ??= toClientError(err, 'the watch failed');
    });
    this.registered = new Promise<void>((resolve, reject) => {
      // The sidecar sends response headers as soon as the watch is registered.
      stream.once('metadata', () => resolve());
      stream.once('status', (status: StatusObject) => {
        onFinished();
        reject(this.failure ?? new BatonClientError(status.code || Status.UNAVAILABLE, 'the watch ended before it was registered'));
      });
    });
    // ready() is optional; a watch that fails before anyone asks is not an unhandled rejection.
    this.registered.catch(() => undefined);
  }

  /** Resolves once the sidecar has registered the watch; rejects if the watch ends first. */
  ready(): Promise<void> {
    return this.registered;
  }

  /** Stops the watch; iteration ends without an error. */
  cancel(): void {
    this.cancelled = true;
    this.stream.cancel();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<WatchEvent, void, undefined> {
    if (this.iterated) throw new BatonClientError(Status.FAILED_PRECONDITION, 'a BatonWatch can be iterated only once');
    this.iterated = true;
    try {
      for await (const event of this.stream as AsyncIterable<WatchEvent>) yield event;
    } catch (err) {
      this.failure ??= toClientError(err, 'the watch failed');
    } finally {
      // Also runs when the consumer leaves the loop early; a finished call ignores it.
      this.stream.cancel();
    }
    if (this.cancelled) return;
    // The stream may have failed before iteration began; its 'error' was recorded, not thrown.
    // Not cancelled here, so a CANCELLED came from a sidecar that reset the stream as it stopped.
    if (this.failure?.code === Status.CANCELLED) throw new BatonClientError(Status.UNAVAILABLE, this.failure.message, { cause: this.failure });
    if (this.failure !== undefined) throw this.failure;
    // The sidecar never ends a watch on its own accord while it runs: it is going away, and
    // a loop that ended quietly would leave the application believing it still watches.
    throw new BatonClientError(Status.UNAVAILABLE, 'the sidecar ended the watch (it is shutting down or restarting); read the session again and watch again');
  }
}
