/**
 * The proxy's in-flight log: the requests it has forwarded to the web server and not yet
 * had an answer head for, each kept with its method, target, headers and body bytes so it
 * can be sent to a peer if the web server fails (proxy-replay.ts).
 *
 * Rules:
 * - the log holds at most `capacityBytes` in all (--replay-buffer-mb); one request at most
 *   `perRequestBytes` (REPLAY_MAX_REQUEST_BYTES). A request that would pass either is not
 *   replayable: it is refused at once when its declared length says so, or dropped from the
 *   log (its bytes given back) when its streamed body grows past the limit;
 * - an entry leaves the log exactly once (release is idempotent): when the answer head
 *   arrives, when the client goes away, when the request times out, or after its replay;
 * - only byte counts are kept about entries, never their contents outside the entry itself.
 */

/** Largest request (method, target, headers and body) one entry holds: a replay carries it in one peer message. */
export const REPLAY_MAX_REQUEST_BYTES = 1024 * 1024;
/** What an entry costs beyond its bytes (objects, the chunk list). */
const ENTRY_OVERHEAD_BYTES = 256;

export type Admission = { kind: 'logged'; entry: ReplayEntry } | { kind: 'too_large' };

export class ReplayLog {
  private used = 0;
  private count = 0;

  constructor(
    readonly capacityBytes: number,
    readonly perRequestBytes: number = REPLAY_MAX_REQUEST_BYTES,
  ) {}

  /** Bytes held by entries in the log. */
  get bytes(): number {
    return this.used;
  }

  /** Entries in the log. */
  get size(): number {
    return this.count;
  }

  /**
   * Logs a request whose method, target and headers take `headBytes` and whose body is
   * declared to be `declaredBodyBytes` long (0 when unknown: it is counted as it arrives).
   */
  admit(headBytes: number, declaredBodyBytes: number): Admission {
    const head = headBytes + ENTRY_OVERHEAD_BYTES;
    if (head + declaredBodyBytes > this.perRequestBytes || !this.fits(head + declaredBodyBytes)) return { kind: 'too_large' };
    this.used += head;
    this.count++;
    return { kind: 'logged', entry: new ReplayEntry(this, head) };
  }

  private fits(bytes: number): boolean {
    return this.used + bytes <= this.capacityBytes;
  }

  /** @internal an entry asks for `bytes` more; false when the log or the entry's cap cannot take them. */
  grow(entryBytes: number, bytes: number): boolean {
    if (entryBytes + bytes > this.perRequestBytes || !this.fits(bytes)) return false;
    this.used += bytes;
    return true;
  }

  /** @internal an entry leaves, giving back what it held. */
  give(bytes: number, leaving: boolean): void {
    this.used -= bytes;
    if (leaving) this.count--;
  }
}

export type EntryState = 'logging' | 'dropped' | 'released';

/** One logged request: its body chunks as they passed on to the web server. */
export class ReplayEntry {
  private readonly chunks: Buffer[] = [];
  private held: number;
  private bodyBytes = 0;
  private current: EntryState = 'logging';

  constructor(
    private readonly log: ReplayLog,
    headBytes: number,
  ) {
    this.held = headBytes;
  }

  get state(): EntryState {
    return this.current;
  }

  /** Records a body chunk; false (and the entry dropped, its bytes given back) when it does not fit. */
  add(chunk: Buffer): boolean {
    if (this.current !== 'logging') return false;
    if (!this.log.grow(this.held, chunk.length)) {
      this.drop();
      return false;
    }
    this.chunks.push(chunk);
    this.held += chunk.length;
    this.bodyBytes += chunk.length;
    return true;
  }

  /** The body recorded so far, as one buffer. */
  body(): Buffer {
    return this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.bodyBytes);
  }

  /** Leaves the log without being replayable any more (over a limit). */
  private drop(): void {
    this.chunks.length = 0;
    this.current = 'dropped';
    this.log.give(this.held, true);
    this.held = 0;
  }

  /** Leaves the log (answered, abandoned or replayed). Idempotent. */
  release(): void {
    if (this.current === 'logging') this.log.give(this.held, true);
    this.chunks.length = 0;
    this.held = 0;
    this.current = 'released';
  }
}
