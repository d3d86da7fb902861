/**
 * Graceful stop of a gRPC server, bounded in time. grpc-js's tryShutdown waits for every
 * open call; a call a client keeps open (a stream it never ends) would hold it forever, so
 * the wait ends at `timeoutMs` with forceShutdown, which cancels what is left.
 */
import type { Server } from '@grpc/grpc-js';

export function shutdownWithin(server: Server, timeoutMs: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, Math.max(0, timeoutMs));
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** The streams a server holds open, so a stop can end them (each ends its own way). */
export class OpenStreams {
  private readonly enders = new Set<() => void>();

  /** Registers a stream's ender; returns the function that forgets it (call when the stream closes). */
  add(end: () => void): () => void {
    this.enders.add(end);
    return () => void this.enders.delete(end);
  }

  endAll(): void {
    for (const end of [...this.enders]) end();
    this.enders.clear();
  }

  get size(): number {
    return this.enders.size;
  }
}
