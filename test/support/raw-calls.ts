/**
 * gRPC calls that carry raw bytes: the serializers pass buffers through, so a test can send
 * messages no generated client would build (garbage, decoding bombs) and see the status the
 * server answers; and a call on a bare HTTP/2 stream that does not read its responses.
 * Every call has a deadline and resolves (never rejects) with its status.
 */
import * as grpc from '@grpc/grpc-js';
import * as http2 from 'node:http2';

export interface RawOutcome {
  code: grpc.status;
  details: string;
  responses: Buffer[];
  /** Response headers arrived (the server accepted the call and kept it open). */
  metadata: boolean;
}

export const identity = (b: Buffer): Buffer => b;

export function rawUnary(client: grpc.Client, path: string, bytes: Buffer, deadline: Date): Promise<RawOutcome> {
  return new Promise((resolve) => {
    client.makeUnaryRequest(path, identity, identity, bytes, new grpc.Metadata(), { deadline }, (err, res) =>
      resolve(err ? { code: err.code, details: err.details, responses: [], metadata: false } : { code: grpc.status.OK, details: '', responses: [res!], metadata: true }),
    );
  });
}

/**
 * A server-streaming call that we cancel: by default as soon as the server has sent
 * headers (the call was accepted), or when `hooks` say so.
 */
export function rawServerStream(
  client: grpc.Client,
  path: string,
  bytes: Buffer,
  deadline: Date,
  hooks: { onOpen?: (cancel: () => void) => void; onData?: (data: Buffer, cancel: () => void) => void } = {},
): Promise<RawOutcome> {
  return new Promise((resolve) => {
    const responses: Buffer[] = [];
    let metadata = false;
    const call = client.makeServerStreamRequest(path, identity, identity, bytes, new grpc.Metadata(), { deadline });
    const cancel = () => call.cancel();
    call.on('data', (d: Buffer) => {
      responses.push(d);
      hooks.onData?.(d, cancel);
    });
    call.on('metadata', () => {
      metadata = true;
      (hooks.onOpen ?? ((c: () => void) => c()))(cancel);
    });
    call.on('error', () => undefined);
    call.on('status', (s: grpc.StatusObject) => resolve({ code: s.code, details: s.details, responses, metadata }));
  });
}

/** A bidirectional call that writes `frames`, half-closes, and reads every response. */
export function rawBidi(client: grpc.Client, path: string, frames: Buffer[], deadline: Date): Promise<RawOutcome> {
  return new Promise((resolve) => {
    const responses: Buffer[] = [];
    let metadata = false;
    const call = client.makeBidiStreamRequest(path, identity, identity, new grpc.Metadata(), { deadline });
    call.on('data', (d: Buffer) => responses.push(d));
    call.on('metadata', () => (metadata = true));
    call.on('error', () => undefined);
    call.on('status', (s: grpc.StatusObject) => resolve({ code: s.code, details: s.details, responses, metadata }));
    for (const frame of frames) call.write(frame);
    call.end();
  });
}

/** A gRPC message as it travels on an HTTP/2 stream: not compressed, 4-byte length, bytes. */
export function grpcFrame(message: Uint8Array): Buffer {
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  frame.set(message, 5);
  return frame;
}

/**
 * A gRPC call on a bare HTTP/2 stream that reads none of its responses until told to: the
 * client a test needs to see what a node does with a caller that stops reading. (A grpc-js
 * client stream cannot play it: grpc-js keeps reading messages into memory whether or not
 * the application consumes them.) HTTP/2 flow control then holds the node's responses back
 * once the stream's window is full.
 */
export class UnreadCall {
  private readonly stream: http2.ClientHttp2Stream;
  /** Resolves when the response headers arrived (the server accepted the call). */
  readonly opened: Promise<void>;
  /** The call's status, from its trailers; CANCELLED (with the reset code) if it ended without. */
  readonly status: Promise<{ code: grpc.status; details: string }>;

  constructor(session: http2.ClientHttp2Session, path: string, timeoutSeconds: number) {
    this.stream = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers', 'grpc-timeout': `${timeoutSeconds}S` });
    this.stream.pause();
    const statusOf = (headers: http2.IncomingHttpHeaders) =>
      headers['grpc-status'] === undefined ? undefined : { code: Number(headers['grpc-status']) as grpc.status, details: decodeURIComponent(String(headers['grpc-message'] ?? '')) };
    let trailersOnly: { code: grpc.status; details: string } | undefined;
    this.opened = new Promise((resolve) =>
      this.stream.once('response', (headers) => {
        trailersOnly = statusOf(headers);
        resolve();
      }),
    );
    this.status = new Promise((resolve) => {
      let status: { code: grpc.status; details: string } | undefined;
      this.stream.once('trailers', (headers) => (status = statusOf(headers)));
      this.stream.once('close', () => resolve(status ?? trailersOnly ?? { code: grpc.status.CANCELLED, details: `stream reset with code ${this.stream.rstCode}` }));
    });
    this.stream.on('error', () => undefined);
  }

  /**
   * Writes `frame`; resolves true once the stream takes it (at once, or after a 'drain' within
   * `stallMs`), false when it has not after `stallMs`: flow control holds the writer back.
   */
  write(frame: Buffer, stallMs: number): Promise<boolean> {
    if (this.stream.write(frame)) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.stream.off('drain', drained);
        resolve(false);
      }, stallMs);
      const drained = () => {
        clearTimeout(timer);
        resolve(true);
      };
      this.stream.once('drain', drained);
    });
  }

  /** Half-closes the request side. */
  end(): void {
    this.stream.end();
  }

  /** Starts reading (and discarding) responses, so the trailers behind them can arrive. */
  readAll(): void {
    this.stream.on('data', () => undefined);
    this.stream.resume();
  }

  cancel(): void {
    if (!this.stream.closed) this.stream.close(http2.constants.NGHTTP2_CANCEL);
  }
}
