/**
 * The Redis-protocol endpoint (--resp-listen): TCP or a Unix socket, RESP2 and RESP3.
 * Parsing and encoding are src/resp/resp-codec.ts, the commands' semantics src/resp/resp-commands.ts
 * (the session API's); this file moves bytes.
 *
 * Per connection, commands run one at a time in the order they arrive and their replies
 * go out in that order; the replies to a pipelined burst leave in one write. Memory stays
 * bounded: the parser holds at most one command plus one read, and the connection stops
 * reading (socket paused, so TCP pushes back on the client) while a command waits, or
 * while more than OUTPUT_HIGH_WATER_BYTES of replies are unsent (a client that never
 * reads). Malformed input is answered `-ERR Protocol error: …` and the connection closes.
 * On close() (the node draining) the server stops accepting, every connection stops
 * reading, answers what it read, and ends; one still busy at the deadline is destroyed.
 */
import * as net from 'node:net';
import type { Logger } from 'pino';
import { encodeReply, error, joinPieces, RespParser, RespProtocolError, type RespLimits, type Reply, DEFAULT_MAX_INLINE_BYTES } from '../../src/resp/resp-codec';
import { RespConnection, type RespCommands, type RespStoreView } from '../../src/resp/resp-commands';
import type { SessionStore } from '../../src/store/store';
import type { ListenAddress } from '../config/config';
import { listenOn } from '../net/listen';

/** Unsent reply bytes past which a connection stops reading until its client catches up. */
export const OUTPUT_HIGH_WATER_BYTES = 1024 * 1024;
/** Connections served at once; one more is closed as soon as it is accepted. */
export const MAX_CONNECTIONS = 10_000;

/**
 * The parser's bounds for a node's limits: a command may carry every part at full size, as
 * a gRPC Put may. A single bulk may be as large, so a value just over --max-value-bytes is
 * read and refused by validation with its reason, not cut off as a protocol error.
 */
export function respLimits(maxValueBytes: number, maxPartsPerSession: number): RespLimits {
  const maxCommandBytes = Math.min(maxValueBytes * maxPartsPerSession + 64 * 1024, 2 ** 31 - 1);
  return {
    maxArgs: Math.max(4096, 2 * maxPartsPerSession + 2),
    maxBulkBytes: maxCommandBytes,
    maxCommandBytes,
    maxInlineBytes: DEFAULT_MAX_INLINE_BYTES,
  };
}

/** What SCAN, DBSIZE and INFO read: the sessions this node holds. */
export function storeView(store: SessionStore): RespStoreView {
  return {
    partitions: store.config.partitions,
    sessionsIn: (partition, now) => store.sessionsIn(partition, now),
    sessionCount: () => store.getStats().sessions,
  };
}

export class RespServer {
  private readonly server: net.Server;
  private readonly connections = new Set<ClientConnection>();
  private nextId = 1;

  constructor(
    private readonly commands: RespCommands,
    private readonly limits: RespLimits,
    private readonly log: Logger,
  ) {
    // Half-open: a client that sends its commands and shuts down its side still gets every
    // reply; the connection ends once they are written.
    this.server = net.createServer({ allowHalfOpen: true }, (socket) => this.accept(socket));
    this.server.maxConnections = MAX_CONNECTIONS;
  }

  /** Binds; resolves with the port (0 for a Unix socket). */
  listen(address: ListenAddress): Promise<number> {
    return listenOn(this.server, address);
  }

  /** Stops accepting; each connection answers what it read and ends; destroyed past `graceMs`. */
  async close(graceMs: number): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    const ended = [...this.connections].map((c) => c.drain());
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        for (const c of this.connections) c.destroy();
        resolve();
      }, graceMs);
    });
    await Promise.race([Promise.all(ended), late]);
    clearTimeout(timer);
    await closed;
  }

  private accept(socket: net.Socket): void {
    const connection = new ClientConnection(socket, this.nextId++, this.commands, this.limits, this.log);
    this.connections.add(connection);
    socket.once('close', () => this.connections.delete(connection));
  }
}

class ClientConnection {
  private readonly parser: RespParser;
  private readonly state: RespConnection;
  /** A command is waiting (a resume, replication back-pressure) or the socket must drain. */
  private busy = false;
  private draining = false;
  private finished = false;
  private readonly ended: Promise<void>;

  constructor(
    private readonly socket: net.Socket,
    id: number,
    private readonly commands: RespCommands,
    limits: RespLimits,
    private readonly log: Logger,
  ) {
    this.parser = new RespParser(limits);
    this.state = new RespConnection(id);
    this.ended = new Promise((resolve) =>
      socket.once('close', () => {
        this.finished = true;
        resolve();
      }),
    );
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      this.parser.push(chunk);
      this.pump();
    });
    socket.on('end', () => this.finish());
    socket.on('error', (err) => {
      this.log.debug({ err: err.message }, 'resp connection error');
      socket.destroy();
    });
  }

  /** Stop reading, answer what was read, end. */
  drain(): Promise<void> {
    this.draining = true;
    this.socket.pause();
    if (!this.busy) this.pump();
    return this.ended;
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** Runs every complete command read, in order, until one waits or the client must catch up. */
  private pump(): void {
    if (this.busy || this.finished) return;
    const out: Array<Buffer | string> = [];
    let outBytes = 0;
    for (;;) {
      if (this.socket.writableLength + outBytes > OUTPUT_HIGH_WATER_BYTES) {
        this.flush(out);
        this.waitForDrain();
        return;
      }
      let args: Buffer[] | undefined;
      try {
        args = this.parser.next();
      } catch (err) {
        if (!(err instanceof RespProtocolError)) throw err;
        encodeReply(error(`ERR Protocol error: ${err.message}`), this.state.protocol, out);
        this.flush(out);
        this.close();
        return;
      }
      if (args === undefined) break;
      let result: Reply | Promise<Reply>;
      try {
        result = this.commands.run(args, this.state, Date.now());
      } catch (err) {
        result = this.internalError(err);
      }
      if (result instanceof Promise) {
        this.flush(out);
        this.busy = true;
        this.socket.pause();
        result
          .catch((err: unknown) => this.internalError(err))
          .then((reply) => {
            this.busy = false;
            if (this.finished) return;
            const answer: Array<Buffer | string> = [];
            encodeReply(reply, this.state.protocol, answer);
            this.flush(answer);
            if (this.afterReply()) return;
            if (!this.draining) this.socket.resume();
            this.pump();
          });
        return;
      }
      const before = out.length;
      encodeReply(result, this.state.protocol, out);
      for (let i = before; i < out.length; i++) outBytes += out[i]!.length;
      if (this.state.closing) {
        this.flush(out);
        this.afterReply();
        return;
      }
    }
    this.flush(out);
    if (this.draining) this.close();
  }

  /** After a reply: QUIT closes. Returns whether the connection is done. */
  private afterReply(): boolean {
    if (!this.state.closing) return false;
    this.close();
    return true;
  }

  private waitForDrain(): void {
    this.busy = true;
    this.socket.pause();
    this.socket.once('drain', () => {
      this.busy = false;
      if (!this.draining) this.socket.resume();
      this.pump();
    });
  }

  private flush(out: Array<Buffer | string>): void {
    if (out.length === 0 || this.finished) return;
    this.socket.write(out.length === 1 && typeof out[0] !== 'string' ? out[0]! : joinPieces(out));
    out.length = 0;
  }

  /** Ends the connection once what was written is sent. */
  private close(): void {
    if (this.finished) return;
    this.finished = true;
    this.socket.pause();
    this.socket.end();
  }

  /** The client ended its side: answer what it sent, then close. */
  private finish(): void {
    this.draining = true;
    if (!this.busy) this.pump();
  }

  private internalError(err: unknown): Reply {
    this.log.error({ err }, 'resp command failed');
    return error('ERR internal error');
  }
}
