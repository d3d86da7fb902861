/**
 * Fan-out: which nodes a session's changes go to, and queueing them as encoded deltas on
 * the channels that reach those nodes. Local writes, claims, re-sends of forwarded writes
 * to a newer owner, re-sends of partitions written while under-replicated, and parts sent
 * to an owner whose copy lacks them (an ownership tie, a claim that did not name them) all
 * come through here.
 *
 * Rules:
 * - A session's holders (besides this node) are its owner's secondaries, with the owner
 *   itself first when it is another live member — placed, or live to membership before the
 *   coordinator's view lists it (a write made here on a session owned elsewhere goes to
 *   the owner's replica set).
 * - A write made here on a session another node owns waits for one holder's word before
 *   any acknowledgement counts: the owner's, when it is a live member; when the owner is
 *   gone (its sessions orphaned), the partition's master's, which takes them over — its
 *   claim either comes after the write and holds it, or came first, and then its
 *   acknowledgement says so and the write goes again to it as the new owner. Without
 *   that word a master's claim made a moment before the write arrived (this node had not
 *   heard of it yet) would beat the acknowledged write everywhere.
 * - Changes are encoded once per call and queued on every channel that reaches a holder
 *   (each holder's own channel in unicast mode; in multicast mode the channel of the
 *   partition's group, and the holder's own channel for a holder that is not a member of
 *   that group — see multicast-groups.ts); the channels written to are marked dirty until
 *   the engine flushes them.
 * - Nothing here sends or opens tickets: each call returns what was queued (holders,
 *   the owner to wait for, the waits a ticket needs, deltas counted) for the engine.
 */
import type { ChannelSender } from './channel-sender';
import type { ChannelTable } from './channel-table';
import { toRemoteChange } from './delta-apply';
import type { Placement } from './placement';
import { findStoredPart, forEachPart, sessionHeader, tieLoser, type PriorOwner, type SessionStore, type StoredSession } from '../store/store';
import { deltaKey, encodeDelta, type Change } from '../wire/delta-codec';
import type { TicketWait } from './write-tickets';
import { groupOfChannel, isGroupChannel, MulticastGroups } from './multicast-groups';

export interface FanOutConfig {
  nodeId: string;
  transport: 'unicast' | 'multicast';
}

/** What one call queued. */
export interface Queued {
  /** Deltas queued, counted once per channel. */
  deltas: number;
}

/** A write queued for its holders, with what its ticket waits for. */
export interface QueuedWrite extends Queued {
  /** One wait per holder, on the channel that reaches it. */
  waits: TicketWait[];
  /**
   * For a write made on a session another node owns: the holder whose acknowledgement must
   * confirm it (the owner, or the partition's master when the owner is gone).
   */
  owner: string | undefined;
}

export class FanOut {
  private dirty = new Set<string>();
  /** What applyRemote says of a copy before adopting an owner (one object, reused). */
  private readonly prior: PriorOwner = { owner: undefined, epoch: 0, ownWriteLost: false };

  constructor(
    private readonly config: FanOutConfig,
    private readonly store: SessionStore,
    private readonly placement: Placement,
    private readonly channels: ChannelTable,
    /** The live members besides this node (the one group's receivers when there is one group). */
    private readonly otherLiveMembers: () => string[],
    /** Multicast groups; absent = one group that every live member listens on. */
    private readonly groups: MulticastGroups = new MulticastGroups(1, placement),
    /** A partition's master, the node that takes its orphaned sessions over (the elected one, else the likely one). */
    private readonly masterOf: (partition: number) => string | undefined = () => undefined,
    /** Whether membership takes a node for live (alive or suspect). */
    private readonly isLive: (nodeId: string) => boolean = () => false,
  ) {}

  /** Secondaries a fully replicated partition has (replicas, or at least one with replicas = 0). */
  wantedSecondaries(): number {
    return this.placement.replicas === 0 ? 1 : this.placement.replicas;
  }

  /**
   * Queues a local write for the session's holders. `underReplicated` says that this
   * node owns it and its partition has fewer secondaries than wanted (the write must be
   * sent again once there are more); undefined `write` = nobody to send to.
   */
  write(session: StoredSession, changes: readonly Change[], now: number): { underReplicated: boolean; partition: number; write: QueuedWrite | undefined } {
    const partition = this.store.partitionOf(session.id);
    const holders = this.holders(session.owner, partition);
    const underReplicated = session.owner === this.config.nodeId && holders.length < this.wantedSecondaries();
    if (holders.length === 0) return { underReplicated, partition, write: undefined };
    return { underReplicated, partition, write: this.queueWrite(session, changes, holders, now) };
  }

  /**
   * Queues a claim this node made (a resume): the claim and every part, re-stamped with
   * the new epoch, go to the new owner's secondaries, to the previous owner so it stops
   * acting as owner at once (its later writes carry the old epoch and lose), and, while
   * the previous owner lives, to its secondaries: they vouch for its writes, and once they
   * hold the claim they note the writes it makes before it hears of the claim (a resume
   * that could not reach it), which then go to this node — else they acknowledged writes
   * the claim beats. (A dead owner writes nothing more; its sessions' new holders are the
   * claimant's.)
   */
  claim(session: StoredSession, previousOwner: string, now: number): Queued {
    const partition = this.store.partitionOf(session.id);
    const holders = this.holders(session.owner, partition);
    const self = this.config.nodeId;
    if (previousOwner !== self) {
      const vouching = this.isLive(previousOwner) ? this.placement.secondaries(partition, previousOwner) : [];
      for (const nodeId of [previousOwner, ...vouching]) {
        if (nodeId !== self && !holders.includes(nodeId) && this.reaches(nodeId, partition)) holders.push(nodeId);
      }
    }
    if (holders.length === 0) return { deltas: 0 };
    const names: string[] = [];
    const changes: Change[] = [{ kind: 'claim', parts: names }];
    forEachPart(session, (name, value, version, writer) => {
      names.push(name);
      changes.push(partChange(name, value, version, writer, undefined));
    });
    return this.enqueue(session, changes, holders, now);
  }

  /**
   * Whether this node's copy of a session still holds every part a write of it changed, or
   * a newer version of it: false once a copy merged from a peer replaced the write with an
   * older value at a higher epoch.
   */
  holdsWrite(session: StoredSession, changes: readonly Change[]): boolean {
    for (const change of changes) {
      if (change.kind !== 'put' && change.kind !== 'delete_part') continue;
      const part = findStoredPart(session, change.name);
      if (part === undefined || part.version < change.version) return false;
    }
    return true;
  }

  /**
   * Sends this node's copy of a session, every part as written (its writer, version and
   * epoch), to the owner's holders and to `loser` and its secondaries: a delta settled
   * ownership at the epoch the copy had on another owner than it named (see delta-apply.ts,
   * TiedSession). The winner merges what the loser wrote; the loser and the holders of its
   * copy take the winner for owner.
   */
  forwardTied(sessionId: string, loser: string, now: number): Queued {
    const session = this.store.get(sessionId, now);
    if (session === undefined) return { deltas: 0 };
    const partition = this.store.partitionOf(sessionId);
    const holders = this.holders(session.owner, partition);
    for (const nodeId of [loser, ...this.placement.secondaries(partition, loser)]) {
      if (nodeId !== this.config.nodeId && !holders.includes(nodeId) && this.reaches(nodeId, partition)) holders.push(nodeId);
    }
    return this.sendParts(session, holders, undefined, now);
  }

  /**
   * Sends the owner's holders (the owner first) the parts `names` of this node's copy, as
   * written: a claim in effect here lacked them (see delta-apply.ts, lackedBy).
   */
  forwardLacking(sessionId: string, names: readonly string[], now: number): Queued {
    const session = this.store.get(sessionId, now);
    if (session === undefined) return { deltas: 0 };
    return this.sendParts(session, this.holders(session.owner, this.store.partitionOf(sessionId)), names, now);
  }

  /** Queues parts of a copy as written (writer, version and epoch kept) for `holders`; `names` undefined: every part. */
  private sendParts(session: StoredSession, holders: readonly string[], names: readonly string[] | undefined, now: number): Queued {
    if (holders.length === 0) return { deltas: 0 };
    const changes: Change[] = [];
    forEachPart(session, (name, value, version, writer, epoch) => {
      if (names === undefined || names.includes(name)) changes.push(partChange(name, value, version, writer, epoch));
    });
    return changes.length === 0 ? { deltas: 0 } : this.enqueue(session, changes, holders, now);
  }

  /**
   * Sends a forwarded write again, to the holders of the owner this node now knows of.
   * Its parts are stamped with the session's epoch here (the claimed one, once adopted)
   * and keep their version, writer and value: they are newer than the claimed copy of the
   * part, so every holder converges on the write (and a client's if_version keeps
   * matching). This node's copy takes the same stamp, so it agrees with the others. A part
   * this node's copy holds a newer version of was written since, and is left out: stamped
   * with the newer epoch, the older write would beat it everywhere. Returns the changes as
   * sent, for the ticket (undefined = the session is gone, or every part was written since);
   * a write that reaches no holder (this node's view does not place the owner it learned of
   * yet) comes back with no waits (WriteTickets.reopen says what its ticket waits for then).
   * `alsoTo`: a member that gets it too although it holds the session no more (WriteTickets'
   * mustVouch: the holder whose word the write waits for; it just acknowledged, so it is
   * reachable even if membership, which has not heard its heartbeats again yet, holds it dead).
   * `ownerHeard`: the owner was just heard of as owner (a holder named it, or its claim
   * arrived), so it gets the write, and confirms it, even where this node's view does not
   * place it yet (just after a long split heals; the partition's master would only name
   * the owner back, over and over).
   */
  resendForwarded(sessionId: string, changes: readonly Change[], now: number, alsoTo?: string, ownerHeard = false): (QueuedWrite & { changes: Change[] }) | undefined {
    const session = this.store.get(sessionId, now);
    if (session === undefined) return undefined;
    const self = this.config.nodeId;
    const meta = { owner: session.owner, epoch: session.epoch, expiresAt: session.expiresAt, ttlMs: session.ttlMs };
    const stampedChanges: Change[] = [];
    for (const change of changes) {
      if ((change.kind !== 'put' && change.kind !== 'delete_part') || change.writer !== undefined) {
        stampedChanges.push(change);
        continue;
      }
      if ((findStoredPart(session, change.name)?.version ?? 0) > change.version) continue;
      const stamped = { ...change, writer: self, epoch: session.epoch };
      this.store.applyRemote(session.id, toRemoteChange(stamped)!, meta, now);
      stampedChanges.push({ ...change, epoch: session.epoch });
    }
    if (stampedChanges.length === 0) return undefined;
    const holders = this.holders(session.owner, this.store.partitionOf(session.id), ownerHeard);
    if (alsoTo !== undefined && alsoTo !== self && !holders.includes(alsoTo)) holders.push(alsoTo);
    return { ...this.queueWrite(session, stampedChanges, holders, now), changes: stampedChanges };
  }

  /**
   * Takes a newer owner of a session that another node reported (a claim this node missed,
   * or the owner a tie at this copy's epoch settled on: this node made the session afresh
   * at once with a higher node, and sends that node its copy, as forwardTied).
   */
  adoptOwner(sessionId: string, owner: string, epoch: number, now: number): Queued {
    const session = this.store.get(sessionId, now);
    if (session === undefined) return { deltas: 0 };
    const prior = this.prior;
    this.store.applyRemote(sessionId, { kind: 'claim' }, { owner, epoch, expiresAt: session.expiresAt, ttlMs: session.ttlMs }, now, prior);
    return this.settleTie(sessionId, prior, owner, epoch, now);
  }

  /**
   * After a change of the session to `owner` at `epoch` (a claim it adopted, a transferred
   * copy it merged): when the copy had named another owner at that very epoch and `owner`
   * won the tie, sends the copy as forwardTied does; else nothing.
   */
  settleTie(sessionId: string, prior: PriorOwner, owner: string, epoch: number, now: number): Queued {
    const loser = owner === this.config.nodeId ? undefined : tieLoser(prior, owner, epoch);
    return loser !== undefined && this.store.isOwnedBy(sessionId, owner) ? this.forwardTied(sessionId, loser, now) : { deltas: 0 };
  }

  /**
   * Queues again, as deltas without tickets, this node's own sessions of `partitions`
   * (written while they had fewer secondaries than wanted: a node that started or was
   * cut off accepts writes before it knows its peers; nobody else has them to pull).
   */
  resendOwned(partitions: readonly number[], now: number): Queued {
    const self = this.config.nodeId;
    let deltas = 0;
    for (const partition of partitions) {
      for (const snapshot of this.store.snapshotsIn(partition, now)) {
        if (snapshot.owner !== self) continue;
        if (snapshot.expiresAt === 0) {
          if (snapshot.deletedVersion === 0) continue;
          const header = sessionHeader(snapshot.id, self, snapshot.epoch, snapshot.ttlMs, now + snapshot.ttlMs);
          deltas += this.resendQuietly(header, [{ kind: 'delete_session', version: snapshot.deletedVersion }], now);
          continue;
        }
        const session = this.store.get(snapshot.id, now);
        if (session === undefined) continue;
        const changes: Change[] = snapshot.parts.map((part) =>
          part.value === null
            ? { kind: 'delete_part', name: part.name, version: part.version, writer: part.writer, epoch: part.epoch }
            : { kind: 'put', name: part.name, value: part.value, version: part.version, writer: part.writer, epoch: part.epoch },
        );
        if (changes.length > 0) deltas += this.resendQuietly(session, changes, now);
      }
    }
    return { deltas };
  }

  /** The channels written to since the last call (the engine flushes them). */
  takeDirty(): Set<string> {
    const dirty = this.dirty;
    this.dirty = new Set();
    return dirty;
  }

  /** Marks channels to flush again (their window held part of the queue back). */
  markDirty(channels: Iterable<string>): void {
    for (const channel of channels) this.dirty.add(channel);
  }

  /** The sender of `channel`, created if new (a group channel reaches the group's members). */
  sender(channel: string): ChannelSender {
    return this.channels.sender(channel, () => (isGroupChannel(channel) ? this.groupReceivers(channel) : [channel]));
  }

  private groupReceivers(channel: string): string[] {
    if (this.groups.count === 1) return this.otherLiveMembers();
    return [...this.groups.membersOf(groupOfChannel(channel) ?? 0)].filter((id) => id !== this.config.nodeId);
  }

  /**
   * The live members other than this node that hold a session: its owner's secondaries,
   * and the owner itself, first, when that is another live member.
   */
  private holders(owner: string, partition: number, ownerHeard = false): string[] {
    const self = this.config.nodeId;
    const holders = this.placement.secondaries(partition, owner).filter((id) => id !== self);
    if (owner !== self && (ownerHeard || this.reaches(owner, partition))) holders.unshift(owner);
    return holders;
  }

  /**
   * Whether `nodeId` is sent a session's changes as its owner: placed, or live though the
   * view placement follows does not list it yet (a node alive again, or one that just
   * joined, before the coordinator's next view) — it owns the sessions resumed there, and
   * a write on one must reach it, not a master that will not take it over.
   */
  private reaches(nodeId: string, partition: number): boolean {
    return this.placement.rank(nodeId, partition) >= 0 || this.isLive(nodeId);
  }

  /** The channel that reaches `nodeId` with deltas of `partition`. */
  private channelTo(nodeId: string, partition: number): string {
    if (this.config.transport !== 'multicast') return nodeId;
    if (this.groups.count === 1) return '';
    return this.groups.isMember(nodeId, this.groups.groupOf(partition)) ? this.groups.channelOf(partition) : nodeId;
  }

  /**
   * The holder whose acknowledgement confirms a write made here on a session `owner`
   * owns (see the rules above), added to `holders` when it is not among them; undefined
   * when this node owns the session or masters its partition, or no master is known.
   */
  private confirmer(owner: string, partition: number, holders: string[]): string | undefined {
    const self = this.config.nodeId;
    if (owner === self) return undefined;
    if (holders[0] === owner) return owner;
    const master = this.masterOf(partition);
    if (master === undefined || master === self || this.placement.rank(master, partition) < 0) return undefined;
    if (!holders.includes(master)) holders.unshift(master);
    return master;
  }

  /** Queues a write for `holders` and reads the waits its ticket needs (after queueing: their places). */
  private queueWrite(session: StoredSession, changes: readonly Change[], holders: string[], now: number): QueuedWrite {
    const partition = this.store.partitionOf(session.id);
    const owner = this.confirmer(session.owner, partition, holders);
    const { deltas } = this.enqueue(session, changes, holders, now);
    const waits = holders.map((nodeId) => {
      const channel = this.channelTo(nodeId, partition);
      return { nodeId, channel, seq: 0, firstSeq: 0, queued: this.sender(channel).enqueuedCount };
    });
    return { deltas, waits, owner };
  }

  /** A write again without a ticket or an under-replicated mark (a repeat, not a write). */
  private resendQuietly(session: StoredSession, changes: readonly Change[], now: number): number {
    return this.enqueue(session, changes, this.holders(session.owner, this.store.partitionOf(session.id)), now).deltas;
  }

  /** Encodes changes once and queues them on the channels that reach `holders`. */
  private enqueue(session: StoredSession, changes: readonly Change[], holders: readonly string[], now: number): Queued {
    const self = this.config.nodeId;
    const deltas = changes.map((change) => ({ key: deltaKey(session.id, change), bytes: encodeDelta(session, change, self, now) }));
    const partition = this.store.partitionOf(session.id);
    const channels = this.config.transport === 'multicast' ? [...new Set(holders.map((nodeId) => this.channelTo(nodeId, partition)))] : holders;
    for (const channel of channels) {
      const sender = this.sender(channel);
      for (const delta of deltas) sender.enqueue(delta);
      this.dirty.add(channel);
    }
    return { deltas: deltas.length * channels.length };
  }
}

/** A part of a copy as a change: at its own epoch, or (undefined) at the session's when sent. */
function partChange(name: string, value: Buffer | null, version: number, writer: string, epoch: number | undefined): Change {
  return value === null ? { kind: 'delete_part', name, version, writer, epoch } : { kind: 'put', name, value, version, writer, epoch };
}
