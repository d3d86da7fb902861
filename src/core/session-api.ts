/**
 * The session API's semantics, independent of transport: validates a request, runs it on
 * the store and builds the response. The unary handlers and the Exchange stream share it.
 * Throws BatonError subclasses; the server edge turns them into gRPC statuses.
 */
import { applyCartUpdate, assembleCart } from './cart-merge';
import { InvalidArgumentError, UnavailableError, WriteNotMadeError } from '../wire/errors';
import type {
  DeleteRequest,
  DeleteResponse,
  GetRequest,
  GetResponse,
  Part,
  PutRequest,
  PutResponse,
  Session,
  TouchRequest,
  TouchResponse,
  UpdateCartRequest,
  UpdateCartResponse,
} from '../gen/baton/v1/session';
import { versionTimeMs } from '../store/hybrid-clock';
import type { LocalChange } from './replication-engine';
import { forEachPart, sessionHeader, type SessionSnapshot, type SessionStore, type StoredSession } from '../store/store';
import { checkPartNames, checkPartWrites, checkSessionId, checkTtlSeconds, RequestLimits } from '../wire/validation';

/** What the API needs from replication (absent on a node without peers). */
export interface Replicator {
  /** Secondaries configured per session; 0 = every other member. */
  readonly replicas: number;
  /** Secondaries a session written here would have now. */
  secondariesFor(sessionId: string): number;
  /**
   * Whether this node's own copies are whole (absent: true). Until then, a resume of a
   * session it owns also asks the peers and merges their copies, as a resume elsewhere does.
   */
  ownCopiesComplete?(now: number): boolean;
  /**
   * Resolves once this node has caught up after its start (the condition of
   * ownCopiesComplete), or at `deadline`, with whether it did.
   */
  caughtUp?(deadline: number): Promise<boolean>;
  /**
   * Whether this node holds every session of the session's partition (absent: true), so
   * that a session it lacks does not exist: it is the partition's first holder, which
   * every owner's deltas reach.
   */
  holdsEverySessionOf?(sessionId: string): boolean;
  /**
   * Whether this node is a holder of the session under `owner` (the owner itself or one of
   * its secondaries; absent: true): a holder's copy has every write a holder vouched for,
   * while any other node's copy is one it kept from an earlier resume, which no write since
   * reached.
   */
  holds?(sessionId: string, owner: string): boolean;
  /**
   * Members counted alive that placement does not rank yet: it follows the coordinator's
   * view, which lists a node that just joined a moment after membership counts it.
   */
  unplacedMembers?(): number;
  /**
   * Why this node may neither acknowledge writes nor claim sessions now (--quorum: it hears
   * fewer members than that), or undefined when it may (absent: it always may).
   */
  quorumLost?(now: number): string | undefined;
  /**
   * Whether a claim of the session, owned by `owner`, may be made from the copies of the
   * peers that `answered` and this node's own: one of them held it for the owner, and the
   * owner, when it did not answer, is gone (dead, departed, or among those found `down`).
   * Absent: always.
   */
  claimVouched?(sessionId: string, owner: string, answered: readonly string[], down: readonly string[]): boolean;
  /** Queues a local change for the session's secondaries; returns an acknowledgement ticket. */
  replicate(session: StoredSession, changes: readonly LocalChange[], now: number): number | undefined;
  /** Resolves once `needed` secondaries acknowledged the ticket's write, or at `deadline`. */
  waitForAcks(ticket: number, needed: number, deadline: number): Promise<number>;
  /**
   * Back-pressure: undefined while the replication send queues are short, else a promise
   * that resolves once they are short again (the secondaries acknowledged enough).
   */
  sendQueueRoom(): Promise<void> | undefined;
  /**
   * Asks the members that may hold a session (its partition's top-ranked holders, and
   * `knownOwner`), in parallel, for their copy of it; settles by `deadline`.
   */
  fetchFromPeers(sessionId: string, knownOwner: string | undefined, deadline: number, now: number, options?: FetchOptions): Promise<PeerCopies>;
  /** Replicates a claim made here to the new secondaries and the previous owner. */
  replicateClaim(session: StoredSession, previousOwner: string, now: number): void;
}

/** How fetchFromPeers asks. */
export interface FetchOptions {
  /** A resume: an owner asked hands the session over to this node as it answers. */
  claim?: boolean;
  /** Only `knownOwner` is asked (no one when it is not a live member). */
  ownerOnly?: boolean;
}

/** What a resume learned from its peers. */
export interface PeerCopies {
  /** Peers asked, and how many of them answered (with a copy or without one). */
  asked: number;
  answered: number;
  snapshots: SessionSnapshot[];
  /** The peer that answered with a copy it owns (absent: no owner answered as owner). */
  fromOwner?: string;
  /** Peers asked that failed or ran out of time (absent: none). */
  silent?: string[];
  /** Those of `silent` that were down: they refused the call or dropped the connection (absent: none). */
  down?: string[];
  /** The peers that answered (absent: none). */
  answeredBy?: string[];
}

/** How a resume was served: by this node as owner, after asking peers, or not found. */
export type ResumeOutcome = 'local' | 'peer' | 'not_found';

export interface ResumeObserver {
  resumed(outcome: ResumeOutcome, seconds: number): void;
  claimed(): void;
}

/** How long a synchronous write waits for acknowledgements when the call sets no deadline. */
export const DEFAULT_SYNC_TIMEOUT_MS = 5000;
/**
 * The most time one call is given, whatever deadline its caller sent: a synchronous write
 * holds its values (to send them again) and its caller's slot until it is answered.
 */
export const MAX_OPERATION_MS = 60_000;

function bounded(deadline: number, now: number): number {
  return Math.min(deadline, now + MAX_OPERATION_MS);
}
/**
 * The longest the look-up before a synchronous write of a session this node lacks waits
 * for the peers asked: a peer cut off without a reset would otherwise hold the write until
 * its deadline, leaving no time for its acknowledgements.
 */
export const WRITE_LOOKUP_MAX_MS = 1000;

/**
 * After a resume merged its peers' copies, how many more times it asks the owner they name
 * when that owner did not answer as owner (see resume).
 */
export const OWNER_ASKS_AFTER_MERGE = 2;

const WRITE_NOT_MADE = 'the write was not made';

export class SessionApi {
  /**
   * Resumes in progress by session id: concurrent resumes of one session share one fetch.
   * Each resolves with the node that owned the session before this one claimed it.
   */
  private readonly resuming = new Map<string, Promise<string | undefined>>();
  /** Whether a resume of the session is under way on this node (its peers' copies not merged yet). */
  isResuming(sessionId: string): boolean {
    return this.resuming.has(sessionId);
  }

  /** Look-ups before a synchronous write of a session this node lacks, by session id (shared like resumes). */
  private readonly lookingUp = new Map<string, Promise<void>>();

  constructor(
    private readonly store: SessionStore,
    private readonly config: RequestLimits,
    private readonly replicator?: Replicator,
    private readonly observer?: ResumeObserver,
    private readonly clock: () => number = Date.now,
  ) {}

  /**
   * Writes parts. With min_replicas n > 0 the response waits until n secondaries
   * acknowledged (or fails UNAVAILABLE at `deadline`, saying how many did); the write
   * stays applied on this node either way.
   */
  put(request: PutRequest, now: number, deadline = now + DEFAULT_SYNC_TIMEOUT_MS): PutResponse | Promise<PutResponse> {
    deadline = bounded(deadline, now);
    checkSessionId(request.sessionId);
    checkPartWrites(request.parts, this.config);
    checkTtlSeconds(request.ttlSeconds);
    return this.whenWritable(request, now, deadline, (at) => this.putNow(request, at, deadline));
  }

  private putNow(request: PutRequest, now: number, deadline: number): PutResponse | Promise<PutResponse> {
    const needed = request.minReplicas;
    if (needed > 0) this.checkReplicasPossible(request.sessionId, needed);
    const writes = request.parts.map((p) => ({
      name: p.name,
      value: p.value,
      ifVersion: p.ifVersion === undefined ? undefined : Number(p.ifVersion),
    }));
    const { version, session } = this.store.put(request.sessionId, writes, request.ttlSeconds * 1000, now);
    const v = BigInt(version);
    const versions = request.parts.map((p) => ({ name: p.name, version: v }));
    const ticket = this.replicator?.replicate(session, request.parts.map((p) => ({ kind: 'put' as const, name: p.name, value: p.value, version })), now);
    return this.answerWrite(session.owner, ticket, needed, deadline, (replicasAcked) => ({ versions, replicasAcked }));
  }

  /**
   * Applies item-level operations to the session's merged cart (src/core/cart-merge.ts) and
   * answers with the cart this node then holds; min_replicas as for put.
   */
  updateCart(request: UpdateCartRequest, now: number, deadline = now + DEFAULT_SYNC_TIMEOUT_MS): UpdateCartResponse | Promise<UpdateCartResponse> {
    deadline = bounded(deadline, now);
    checkSessionId(request.sessionId);
    checkTtlSeconds(request.ttlSeconds);
    return this.whenWritable(request, now, deadline, (at) => this.updateCartNow(request, at, deadline));
  }

  private updateCartNow(request: UpdateCartRequest, now: number, deadline: number): UpdateCartResponse | Promise<UpdateCartResponse> {
    const needed = request.minReplicas;
    if (needed > 0) this.checkReplicasPossible(request.sessionId, needed);
    const { changes, version, session } = applyCartUpdate(this.store, request.sessionId, request.operations, request.ttlSeconds * 1000, this.config, now);
    const ticket = changes.length === 0 || session === undefined ? undefined : this.replicator?.replicate(session, changes, now);
    const cart = assembleCart(session);
    const answer = (replicasAcked: number): UpdateCartResponse => ({ cart, version: BigInt(version), replicasAcked });
    if (changes.length === 0) return answer(0);
    return this.answerWrite(session?.owner, ticket, needed, deadline, answer);
  }

  /**
   * Runs a write now, or once what it waits for before it is made is done: the node's
   * catch-up after its start, then, for a synchronous write of a session this node lacks,
   * a look-up. `run` gets the time it runs at.
   */
  private whenWritable<T>(request: { sessionId: string; minReplicas: number }, now: number, deadline: number, run: (now: number) => T | Promise<T>): T | Promise<T> {
    const { sessionId, minReplicas } = request;
    this.checkQuorum(now, WRITE_NOT_MADE);
    const caughtUp = this.untilCaughtUp(now, deadline);
    const held =
      minReplicas === 0 ? caughtUp : caughtUp === undefined ? this.lookUpFirst(sessionId, now, deadline) : caughtUp.then(() => this.lookUpFirst(sessionId, this.clock(), deadline));
    if (held === undefined) return run(now);
    return held.then(() => {
      const at = this.clock();
      this.checkQuorum(at, WRITE_NOT_MADE);
      return run(at);
    });
  }

  /**
   * Before a synchronous write of a session this node lacks and may not know of (it is not
   * the partition's first holder): its copies from the peers that may hold it, merged, so
   * that the write is made on the session as it exists — as a write on a session another
   * node owns, which that owner confirms. Created afresh instead, the session would carry
   * the first epoch, and any copy a claim had raised above it would beat the acknowledged
   * write everywhere. Undefined when nothing is to be looked up; rejects UNAVAILABLE when
   * peers were asked and none answered.
   */
  private lookUpFirst(sessionId: string, now: number, deadline: number): Promise<void> | undefined {
    const replicator = this.replicator;
    if (replicator === undefined || this.store.knows(sessionId) || (replicator.holdsEverySessionOf?.(sessionId) ?? true)) return undefined;
    return shared(this.lookingUp, sessionId, async () => {
      const copies = await this.mergePeerCopies(sessionId, undefined, Math.min(deadline, now + WRITE_LOOKUP_MAX_MS), now);
      if (copies.asked > 0 && copies.answered === 0) {
        throw new WriteNotMadeError(`none of the ${copies.asked} peers that may hold the session answered, so this node cannot tell whether it exists; the write was not made; try again`);
      }
    });
  }

  /** Asks the peers that may hold the session for their copies and merges them here (resumes, `claim`, and look-ups). */
  private async mergePeerCopies(sessionId: string, knownOwner: string | undefined, deadline: number, now: number, options: FetchOptions = {}): Promise<PeerCopies> {
    const copies = await this.replicator!.fetchFromPeers(sessionId, knownOwner, deadline, now, options);
    const at = this.clock();
    for (const snapshot of copies.snapshots) this.store.merge(snapshot, at);
    return copies;
  }

  /**
   * Undefined when this node may write now; else a promise that resolves once it may, or
   * rejects UNAVAILABLE at `deadline`. A node that just started (restarted under the same
   * id, say) may not know every member yet, nor hold the copies its peers have: a write
   * made then can miss the session's owner (it looks gone) and go only to another holder,
   * which acknowledges it while the owner keeps answering from its own copy without it.
   * Writes wait until the node has caught up once (readiness waits for the same).
   */
  private untilCaughtUp(now: number, deadline: number): Promise<void> | undefined {
    const replicator = this.replicator;
    if (replicator?.caughtUp === undefined || (replicator.ownCopiesComplete?.(now) ?? true)) return undefined;
    return replicator.caughtUp(deadline).then((caughtUp) => {
      if (!caughtUp) {
        throw new WriteNotMadeError('this node started moments ago and has not caught up with its peers yet (it is still pulling its copies of the sessions): the write was not made; try again shortly');
      }
    });
  }

  /**
   * Answers a write: at once (after back-pressure) or once `needed` secondaries acknowledged.
   * `owner`: the written session's owner, named when too few acknowledged.
   */
  private answerWrite<T>(owner: string | undefined, ticket: number | undefined, needed: number, deadline: number, answer: (acked: number) => T): T | Promise<T> {
    if (needed === 0) {
      // A writer faster than its secondaries gets its answers at their pace, rather than
      // a replication queue that grows until it must be flooded out.
      const room = this.replicator?.sendQueueRoom();
      return room === undefined ? answer(0) : room.then(() => answer(0));
    }
    if (ticket === undefined) throw new UnavailableError(`0 of ${needed} secondaries acknowledged: none is live`);
    return this.replicator!.waitForAcks(ticket, needed, deadline).then((acked) => {
      // Acknowledgements that came once this node was cut off from most of its cluster are
      // from holders on its side: the other side may take the session over without the write.
      this.checkQuorum(this.clock(), `${acked} of ${needed} secondaries acknowledged, and the write is applied on this node, but it may be lost`);
      if (acked < needed) {
        const elsewhere =
          owner !== undefined && owner !== this.store.config.nodeId
            ? ` (the session is owned by ${owner}: a write made on another node counts only once the owner has it; resume the session on this node to own it)`
            : '';
        throw new UnavailableError(
          `${acked} of ${needed} secondaries acknowledged before the deadline; the write is applied on this node${elsewhere}`,
        );
      }
      return answer(acked);
    });
  }

  /** Throws UNAVAILABLE, saying `outcome`, when this node has lost its quorum (--quorum). */
  private checkQuorum(now: number, outcome: string): void {
    const lost = this.replicator?.quorumLost?.(now);
    if (lost !== undefined) throw new UnavailableError(`${lost}: ${outcome}; try another node`);
  }

  private checkReplicasPossible(sessionId: string, needed: number): void {
    const replicator = this.replicator;
    if (replicator === undefined) {
      throw new InvalidArgumentError(`min_replicas is ${needed}, but no replicas are configured`);
    }
    if (replicator.replicas > 0 && needed > replicator.replicas) {
      throw new InvalidArgumentError(`min_replicas is ${needed}, above the ${replicator.replicas} replicas configured (--replicas)`);
    }
    const live = replicator.secondariesFor(sessionId);
    if (needed > live) {
      const unplaced = replicator.unplacedMembers?.() ?? 0;
      const joining =
        unplaced > 0 ? `; ${unplaced} more alive but not yet in the coordinator's view that placement follows (a node that just joined): try again shortly` : '';
      throw new UnavailableError(`min_replicas is ${needed}, but only ${live} secondaries are live for this session${joining}`);
    }
  }

  private replicate(sessionId: string, changes: LocalChange[], now: number): number | undefined {
    if (this.replicator === undefined) return undefined;
    const session = this.store.get(sessionId, now);
    return session === undefined ? undefined : this.replicator.replicate(session, changes, now);
  }

  /**
   * Reads a session. Without resume, local state only. With resume, this node makes sure
   * it holds the newest state and becomes the owner: a node that owns the session answers
   * at once; any other asks the peers that may hold it, merges the newest version of every
   * part, claims the session (epoch + 1) and replicates the claim. Parts no peer that
   * answered holds are absent. If no peer answers and this node holds nothing, the call
   * fails UNAVAILABLE rather than report a session missing that may exist.
   */
  get(request: GetRequest, now: number, deadline = now + DEFAULT_SYNC_TIMEOUT_MS): GetResponse | Promise<GetResponse> {
    deadline = bounded(deadline, now);
    const read = this.read(request, request.resume, now, deadline);
    return read instanceof Promise ? read.then((r) => r.response) : read;
  }

  /**
   * A Get with resume that also says which node owned the session before this one claimed
   * it (`previousOwner`; undefined when this node already owned it or nobody held it). The
   * capture proxy passes it on to the web server.
   */
  resumeSession(request: GetRequest, now: number, deadline = now + DEFAULT_SYNC_TIMEOUT_MS): Promise<{ response: GetResponse; previousOwner: string | undefined }> {
    deadline = bounded(deadline, now);
    const read = this.read(request, true, now, deadline);
    return read instanceof Promise ? read : Promise.resolve({ response: read, previousOwner: undefined });
  }

  /** The answer now when this node can give it (no resume, or the session is its own); else the resume from peers. */
  private read(request: GetRequest, resume: boolean, now: number, deadline: number): GetResponse | Promise<{ response: GetResponse; previousOwner: string | undefined }> {
    checkSessionId(request.sessionId);
    checkPartNames(request.parts, this.config);
    const session = this.store.get(request.sessionId, now);
    if (!resume || this.replicator === undefined) return this.answerGet(session, request);
    if (session !== undefined && session.owner === this.store.config.nodeId && (this.replicator.ownCopiesComplete?.(now) ?? true)) {
      this.observer?.resumed('local', 0);
      return this.answerGet(session, request);
    }
    return this.resumeFromPeers(request, session?.owner, deadline, now);
  }

  private resumeFromPeers(request: GetRequest, knownOwner: string | undefined, deadline: number, now: number): Promise<{ response: GetResponse; previousOwner: string | undefined }> {
    const started = now;
    const resume = shared(this.resuming, request.sessionId, () => this.resume(request.sessionId, knownOwner, deadline, now));
    return resume.then((previousOwner) => {
      const resumed = this.store.get(request.sessionId, this.clock());
      this.observer?.resumed(resumed === undefined ? 'not_found' : 'peer', (this.clock() - started) / 1000);
      return { response: this.answerGet(resumed, request), previousOwner };
    });
  }

  private answerGet(session: StoredSession | undefined, request: GetRequest): GetResponse {
    if (session === undefined) return { found: false, session: undefined };
    return { found: true, session: toProtoSession(session, request.parts) };
  }

  /**
   * Fetches, merges and claims; resolves with the owner before the claim (undefined: no
   * claim made). `knownOwner`: the owner this node's own copy named (undefined: none).
   */
  private async resume(sessionId: string, knownOwner: string | undefined, deadline: number, now: number): Promise<string | undefined> {
    const replicator = this.replicator!;
    const self = this.store.config.nodeId;
    // Asked with `claim`, an owner hands the session over: not to a node that may not claim it.
    this.checkQuorum(now, 'the session was not resumed');
    let copies = await this.mergePeerCopies(sessionId, knownOwner, deadline, now, { claim: true });
    const answeredBy = [...(copies.answeredBy ?? [])];
    const down = [...(copies.down ?? [])];
    now = this.clock();
    if (copies.answered === 0) {
      const own = this.store.snapshot(sessionId, now);
      // Peers asked were silent, not down: this node may be the one cut off, and the owner
      // and its secondaries, alive, may acknowledge writes a claim none of them hears of
      // would beat once the network heals. With every peer asked down (or none to ask), a
      // copy this node holds as the owner's secondary has what that secondary vouched for
      // and is claimed; a copy kept from an earlier resume, which no write reached since, is not.
      const silent = copies.asked - (copies.down?.length ?? 0);
      if (silent > 0) {
        throw new UnavailableError(`none of the ${copies.asked} peers that may hold the session answered (${silent} did not answer in time: this node may be cut off from them); try again`);
      }
      if (own === undefined ? copies.asked > 0 : own.owner !== self && !(replicator.holds?.(sessionId, own.owner) ?? true)) {
        throw new UnavailableError(
          `${copies.asked === 1 ? 'the peer' : `the ${copies.asked} peers`} that may hold the session ${copies.asked === 1 ? 'is' : 'are'} down${own === undefined ? '' : `, and this node's copy is not one it holds for the owner (${own.owner})`}; try again`,
        );
      }
    }
    let merged = this.store.get(sessionId, now);
    // The owner the merged copies name did not answer as owner (another node's claim reached
    // this node while it asked, or the owner was itself still resuming the session when
    // asked): its writes since are in none of them, and a claim made now would beat them. It
    // is asked alone (and hands the session over), at most OWNER_ASKS_AFTER_MERGE times —
    // not when it was asked and did not answer (cut off: the resume must not wait twice).
    for (let asks = 0; asks < OWNER_ASKS_AFTER_MERGE && merged !== undefined && ownerUnheard(merged.owner, self, copies); asks++) {
      copies = await this.mergePeerCopies(sessionId, merged.owner, deadline, this.clock(), { claim: true, ownerOnly: true });
      answeredBy.push(...(copies.answeredBy ?? []));
      down.push(...(copies.down ?? []));
      if (copies.asked === 0) break;
      merged = this.store.get(sessionId, this.clock());
    }
    now = this.clock();
    // Claimed unless it was this node's before the fetch: a write the owner made after
    // handing the session over names this node as owner at the claimed epoch, and may
    // arrive before the owner's answer; that alone does not replicate the claim.
    if (merged === undefined || (merged.owner === self && knownOwner === self)) return undefined;
    const previousOwner = merged.owner !== self ? merged.owner : knownOwner;
    // A handover (the owner named this node) is completed; a claim from copies is not made
    // without a quorum, nor from copies none of the owner's holders gave.
    if (merged.owner !== self) {
      this.checkQuorum(now, "the session was not resumed (this node merged its peers' copies but did not claim it)");
      if (!(replicator.claimVouched?.(sessionId, merged.owner, answeredBy, down) ?? true)) {
        throw new UnavailableError(
          `the session was not resumed: its owner ${merged.owner} did not answer and is not known to be gone, or none of the nodes that held the session for it answered (either may be across a network split), and a claim from the copies at hand could beat writes the owner acknowledged; try again`,
        );
      }
    }
    this.store.claim(sessionId, self, now);
    replicator.replicateClaim(this.store.get(sessionId, now)!, previousOwner ?? self, now);
    this.observer?.claimed();
    return previousOwner;
  }

  delete(request: DeleteRequest, now: number): DeleteResponse {
    checkSessionId(request.sessionId);
    checkPartNames(request.parts, this.config);
    this.checkQuorum(now, 'nothing was deleted');
    const before = this.replicator === undefined ? undefined : this.store.get(request.sessionId, now);
    const found = this.store.delete(request.sessionId, request.parts, now);
    if (found && before !== undefined) this.replicateDelete(request.sessionId, request.parts, now);
    return { found };
  }

  private replicateDelete(sessionId: string, names: readonly string[], now: number): void {
    const snapshot = this.store.snapshot(sessionId, now);
    if (snapshot === undefined) return;
    if (names.length === 0) {
      // The session is a tombstone now: replicate it with the header it had.
      const session = sessionHeader(sessionId, snapshot.owner, snapshot.epoch, snapshot.ttlMs, now + snapshot.ttlMs);
      this.replicator!.replicate(session, [{ kind: 'delete_session', version: snapshot.deletedVersion }], now);
      return;
    }
    const changes: LocalChange[] = [];
    for (const part of snapshot.parts) if (part.value === null && names.includes(part.name)) changes.push({ kind: 'delete_part', name: part.name, version: part.version });
    this.replicate(sessionId, changes, now);
  }

  touch(request: TouchRequest, now: number): TouchResponse {
    checkSessionId(request.sessionId);
    checkTtlSeconds(request.ttlSeconds);
    const expiresAt = this.store.touch(request.sessionId, request.ttlSeconds * 1000, now);
    if (expiresAt !== undefined) this.replicate(request.sessionId, [{ kind: 'touch' }], now);
    return expiresAt === undefined
      ? { found: false, expiresAtUnixMs: 0n }
      : { found: true, expiresAtUnixMs: BigInt(expiresAt) };
  }
}

/** Whether `owner`, another node, neither answered as owner nor was asked and stayed silent. */
function ownerUnheard(owner: string, self: string, copies: PeerCopies): boolean {
  return owner !== self && copies.fromOwner !== owner && !(copies.silent?.includes(owner) ?? false);
}

/** The promise in flight for `key`, or a new one from `start`, shared until it settles. */
function shared<T>(inFlight: Map<string, Promise<T>>, key: string, start: () => Promise<T>): Promise<T> {
  let promise = inFlight.get(key);
  if (promise === undefined) {
    promise = start().finally(() => inFlight.delete(key));
    inFlight.set(key, promise);
  }
  return promise;
}

/** A stored session as the API returns it: live parts only, optionally just the named ones. */
export function toProtoSession(session: StoredSession, names: readonly string[] = []): Session {
  const parts: Part[] = [];
  forEachPart(session, (name, value, version, writer) => {
    if (value !== null && (names.length === 0 || names.includes(name))) parts.push(toProtoPart(name, value, version, writer));
  });
  return {
    sessionId: session.id,
    parts,
    ownerNodeId: session.owner,
    epoch: BigInt(session.epoch),
    expiresAtUnixMs: BigInt(session.expiresAt),
  };
}

export function toProtoPart(name: string, value: Buffer, version: number, writer: string): Part {
  return {
    name,
    value,
    version: BigInt(version),
    writerNodeId: writer,
    updatedAtUnixMs: BigInt(versionTimeMs(version)),
  };
}
