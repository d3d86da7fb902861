/**
 * Write tickets: which holders a write waits for, on which channel and up to which
 * sequence number, how many have acknowledged it, and when it is complete.
 *
 * Rules:
 * - A ticket is opened when a write is queued; its waits learn their sequence numbers as
 *   channels send (`sent`), and it is `flushed` once every wait has one.
 * - A ticket nobody awaits (`await` comes before the flush) is forgotten at the first
 *   flush after it, so asynchronous writes hold no memory here — except a forwarded one,
 *   which is followed until its owner confirmed it (or said it came too late, and it was
 *   sent again to the newer owner), for at most FOLLOW_FORWARDED_MS and MAX_FOLLOWED at a
 *   time: nobody waits for it, but without it the write made through this node on a session
 *   a resume is moving elsewhere was lost everywhere, this node's copy included. A ticket
 *   whose caller stopped waiting (`unawait`) is followed the same way.
 * - A forwarded write (made here on a session another node owns) counts no
 *   acknowledgement until its owner confirmed it as owner (`ownerAck`) — or, when the
 *   owner is gone, the partition master that takes the session over (see FanOut).
 * - A write made here as owner counts a holder's acknowledgement only once the holder
 *   vouched for it: an acknowledgement covering it whose notes are complete for it and
 *   say nothing of it. A holder that knows a newer claim of the session (a resume that
 *   could not reach this node) notes the write instead — it would lose to the claim — and
 *   the write is sent again to the new owner, as a forwarded write.
 * - Nothing here sends: acknowledgement levels are read through `AckedBy`, and what must
 *   be sent again is returned.
 */
import { deltaKey, type Change } from '../wire/delta-codec';
import { dictionary } from './churn-free';

/** The highest sequence number `nodeId` acknowledged on `channel` (0 = none). */
export type AckedBy = (channel: string, nodeId: string) => number;

export interface TicketWait {
  nodeId: string;
  channel: string;
  /** The channel sequence number covering the write (0 until it is sent). */
  seq: number;
  /** The first sequence number that may carry it (the write went out in firstSeq..seq). */
  firstSeq: number;
  /** Its place in the channel's queue (ChannelSender.enqueuedCount after queueing it). */
  queued: number;
  /** For a write made as owner: the holder acknowledged it and noted nothing against it (ownerAck). */
  vouched?: boolean;
}

/** What to send again if the session's owner turns out superseded (a write made elsewhere, or as owner). */
export interface ResendableWrite {
  sessionId: string;
  changes: readonly Change[];
  resends: number;
  /** The channel keys of its deltas (WriteTickets computes them when first needed). */
  keys?: readonly string[];
}

export interface Ticket {
  id: number;
  waits: TicketWait[];
  needed: number;
  flushed: boolean;
  /**
   * For a write made on a node that does not own the session: the owner, whose
   * acknowledgement every count needs (a resume on the owner answers from its own copy,
   * so an acknowledged write must be there); the partition's master when the owner is gone
   * (its takeover claim must hold the write, or say it came first).
   */
  owner: string | undefined;
  /**
   * The owner acknowledged the write as its owner: an acknowledgement covering it whose
   * notes are complete for it and name no newer owner for the session (see ownerAck).
   */
  ownerConfirmed: boolean;
  /** The write, to send again to a newer owner (every write the engine makes; absent only in tests of counting alone). */
  write: ResendableWrite | undefined;
  /** When it was opened (ms since the epoch): a followed write is let go FOLLOW_FORWARDED_MS later. */
  openedAt: number;
  /**
   * The write had to go again (a holder said its word would not confirm it, or this node's
   * copy lost it) and could not, its resends spent: no acknowledgement counts any more —
   * its notes ride acknowledgements for a while only, and a later one without them would
   * vouch for a write known not to be where it must be. It waits for its deadline.
   */
  refuted?: boolean;
  /**
   * A write made here as owner whose holder acknowledged it without being able to say
   * whether it knew a newer claim of the session (its notes no longer reached back that
   * far): the write went to that holder again, and counts only once it vouched for it —
   * another holder's word does not say what this one knew. (After a long split, a
   * holder the writer's side placed meanwhile vouches before it heard the other side's
   * claim; the holder from before the split has heard it, and says so.)
   */
  mustVouch?: string;
  /**
   * Why it last had to go again: a holder said it lost to a newer claim of its session
   * (true: the holders it waited for are moot), or a holder could not say (false: they
   * still are, and it keeps them when it can go to no one else).
   */
  lost?: boolean;
}

/** How long a forwarded write nobody awaits is followed (ms since its ticket opened). */
export const FOLLOW_FORWARDED_MS = 10_000;
/** At most this many such writes are followed; past it, the oldest is let go. */
export const MAX_FOLLOWED = 16_384;

/** A superseded-write note of an acknowledgement, already validated. */
export interface SupersededNote {
  seq: number;
  sessionId: string;
}

/**
 * A forwarded write is sent again at most this many times (a newer owner, or an
 * acknowledgement that could not say): beyond, its ticket waits for its deadline.
 */
export const MAX_FORWARDED_RESENDS = 8;

const NO_TICKETS: readonly Ticket[] = [];

function keysOf(sessionId: string, changes: readonly Change[]): string[] {
  return changes.map((change) => deltaKey(sessionId, change));
}

/** The sequence number of the packet of `channel` that carries `key`'s latest delta still held for retransmission (0: none). */
export type LatestSeq = (channel: string, key: string) => number;

export class WriteTickets {
  /** Open tickets by id: a dictionary, not a Map (one in and one out per write: churn-free.ts). */
  private readonly tickets = dictionary<Ticket>();
  private count = 0;
  private readonly completed: { id: number; acked: number }[] = [];
  private nextId = 1;

  /**
   * `latestSeq`: a write's deltas may be superseded, after they went out, by a later
   * packet carrying the same keys (a tie's or a claim's forward of the part, a newer write
   * of it); a retransmission of the write's packet then leaves them out, and an
   * acknowledgement of that packet alone says nothing of the write. Its waits count up to
   * the latest packet that carries one of its keys.
   */
  constructor(private readonly latestSeq: LatestSeq = () => 0) {}

  /** Opens a ticket for a write just queued; `owner` is set for a forwarded write. */
  open(waits: TicketWait[], owner: string | undefined, write: ResendableWrite | undefined, now = 0): Ticket {
    const ticket: Ticket = { id: this.nextId++, waits, needed: 0, flushed: false, owner, ownerConfirmed: false, write, openedAt: now };
    this.tickets[ticket.id] = ticket;
    this.count++;
    return ticket;
  }

  get size(): number {
    return this.count;
  }

  get(id: number): Ticket | undefined {
    return this.tickets[id];
  }

  /** Marks that the caller waits for `needed` acknowledgements (before the flush). */
  await(id: number, needed: number): void {
    const ticket = this.tickets[id];
    if (ticket !== undefined) ticket.needed = needed;
  }

  release(id: number): void {
    if (this.tickets[id] === undefined) return;
    delete this.tickets[id];
    this.count--;
  }

  /** The caller stopped waiting: a forwarded write not yet confirmed is followed still, any other forgotten. */
  unawait(id: number): void {
    const ticket = this.tickets[id];
    if (ticket === undefined) return;
    ticket.needed = 0;
    if (!this.followed(ticket)) this.release(id);
  }

  /** Lets go of followed writes older than FOLLOW_FORWARDED_MS, and the oldest past MAX_FOLLOWED. */
  expireFollowed(now: number): void {
    let followed = 0;
    for (const ticket of this.openTickets()) if (this.followed(ticket)) followed++;
    if (followed === 0) return;
    for (const ticket of this.openTickets()) {
      if (!this.followed(ticket)) continue;
      if (followed > MAX_FOLLOWED || now - ticket.openedAt > FOLLOW_FORWARDED_MS) {
        this.release(ticket.id);
        followed--;
      }
    }
  }

  /** Nobody waits for it, but it is a forwarded write its owner has not confirmed. */
  private followed(ticket: Ticket): boolean {
    return ticket.needed === 0 && ticket.owner !== undefined && !ticket.ownerConfirmed && ticket.write !== undefined;
  }

  /** The open tickets, oldest first (ids ascend); nothing is allocated when there are none. */
  private openTickets(): readonly Ticket[] {
    return this.count === 0 ? NO_TICKETS : Object.values(this.tickets);
  }

  /** Tickets completed since the last call. */
  takeCompleted(): { id: number; acked: number }[] {
    return this.completed.splice(0);
  }

  /**
   * How many holders acknowledged a ticket's write (none until it is sent, and none of
   * a forwarded write until its owner confirmed it and, when other holders are waited
   * for, one of them acknowledged it too: a copy only the owner holds is lost when the
   * owner leaves and a master takes the session over from a copy without it — the claim's
   * epoch then beats the write everywhere, the writer's own copy included).
   */
  ackCount(id: number, ackedBy: AckedBy): number {
    const ticket = this.tickets[id];
    if (ticket === undefined || !ticket.flushed) return 0;
    if (ticket.refuted === true || (ticket.owner !== undefined && !ticket.ownerConfirmed)) return 0;
    // Made as owner: a holder's acknowledgement counts once it vouched for the write (and
    // the holder that could not say, once it did: mustVouch).
    const vouching = ticket.owner === undefined && ticket.write !== undefined;
    if (vouching && ticket.mustVouch !== undefined && !ticket.waits.some((w) => w.nodeId === ticket.mustVouch && w.vouched === true)) return 0;
    let acked = 0;
    let othersWaited = false;
    let othersAcked = false;
    for (const wait of ticket.waits) {
      const level = ackedBy(wait.channel, wait.nodeId);
      const covered = level >= wait.seq && (vouching ? wait.vouched === true : level >= this.coveringSeq(ticket, wait));
      if (covered) acked++;
      if (wait.nodeId !== ticket.owner) {
        othersWaited = true;
        if (covered) othersAcked = true;
      }
    }
    return ticket.owner !== undefined && othersWaited && !othersAcked ? 0 : acked;
  }

  /**
   * Whether an awaited write waits for a holder on `channel`: one not yet sent (its packets
   * ask for an acknowledgement at once), or, with `sentToo`, any (so do retransmissions).
   */
  awaitedOn(channel: string, sentToo = false): boolean {
    for (const ticket of this.openTickets()) {
      if (ticket.needed > 0 && (sentToo || !ticket.flushed) && ticket.waits.some((w) => w.channel === channel)) return true;
    }
    return false;
  }

  /**
   * `channel` sent packets firstSeq..highest and has nothing queued up to `sentThrough`:
   * writes queued up to there are covered by `highest`. Tickets nobody awaits are dropped.
   */
  sent(channel: string, firstSeq: number, sentThrough: number, highest: number): void {
    for (const ticket of this.openTickets()) {
      if (ticket.flushed) continue;
      for (const wait of ticket.waits) {
        if (wait.channel !== channel || wait.seq !== 0 || wait.queued > sentThrough) continue;
        wait.seq = highest;
        wait.firstSeq = firstSeq;
      }
      if (ticket.waits.every((w) => w.seq > 0)) ticket.flushed = true;
      if (ticket.needed === 0 && !this.followed(ticket)) this.release(ticket.id);
    }
  }

  /** Moves awaited tickets whose acknowledgements arrived to the completed list. */
  check(ackedBy: AckedBy): void {
    for (const ticket of this.openTickets()) {
      if (ticket.needed === 0 || !ticket.flushed) continue;
      const acked = this.ackCount(ticket.id, ackedBy);
      if (acked >= ticket.needed) {
        this.completed.push({ id: ticket.id, acked });
        this.release(ticket.id);
      }
    }
  }

  /**
   * An acknowledgement from `from` on `channel` up to `cumulative`, read for the forwarded
   * writes `from` owns and for the writes made here as owner that wait for `from`: each
   * covered write is confirmed as taken by its owner (or vouched for by the holder), or,
   * when `from` noted a newer owner for its session (or its notes may be incomplete for
   * it, `completeAbove`), returned to be sent again (see `countResend`).
   */
  ownerAck(from: string, channel: string, cumulative: number, completeAbove: number, superseded: readonly SupersededNote[]): Ticket[] {
    const resend: Ticket[] = [];
    for (const ticket of this.openTickets()) {
      const write = ticket.write;
      if (write === undefined) continue;
      const own = ticket.owner === undefined;
      if (ticket.refuted === true || (!own && (ticket.owner !== from || ticket.ownerConfirmed))) continue;
      const wait = ticket.waits.find((w) => w.nodeId === from && w.channel === channel);
      if (wait === undefined || wait.seq === 0 || wait.vouched === true) continue;
      const sessionId = write.sessionId;
      // A note on the session in any packet from the write's first up to what this
      // acknowledgement covers counts against it: a retransmission leaves out a delta a later
      // packet supersedes, so the write's part may have reached the holder, and been noted,
      // in a later packet than the one its wait names.
      if (cumulative < wait.seq && superseded.length === 0) continue;
      const covering = this.coveringSeq(ticket, wait);
      const through = Math.max(covering, cumulative);
      if (superseded.some((s) => s.sessionId === sessionId && s.seq >= wait.firstSeq && s.seq <= through)) {
        ticket.mustVouch = undefined;
        ticket.lost = true;
        resend.push(ticket);
      } else if (cumulative < covering) continue;
      else if (completeAbove >= wait.firstSeq) {
        if (own) ticket.mustVouch = from;
        ticket.lost = false;
        resend.push(ticket);
      } else if (own) wait.vouched = true;
      else {
        ticket.ownerConfirmed = true;
        if (ticket.needed === 0) this.release(ticket.id);
      }
    }
    return resend;
  }

  /** The packet whose acknowledgement covers a wait: its own, or a later one carrying the write's keys (see the constructor). */
  private coveringSeq(ticket: Ticket, wait: TicketWait): number {
    let seq = wait.seq;
    const write = ticket.write;
    if (write === undefined) return seq;
    write.keys ??= keysOf(write.sessionId, write.changes);
    for (const key of write.keys) {
      const latest = this.latestSeq(wait.channel, key);
      if (latest > seq) seq = latest;
    }
    return seq;
  }

  /**
   * Writes that had to go again and reached no holder (FanOut.resendForwarded: the owner
   * they learned of is not in this node's view yet): to send again once the view changes.
   */
  stranded(): Ticket[] {
    return this.openTickets().filter((ticket) => ticket.write !== undefined && ticket.waits.length === 0 && ticket.refuted !== true);
  }

  /** The open tickets of writes on `sessionId` (a scan: only for the rare write that lost to a claim). */
  openOn(sessionId: string): Ticket[] {
    return this.openTickets().filter((ticket) => ticket.write?.sessionId === sessionId);
  }

  /**
   * Counts one more sending of a forwarded write; false once it had MAX_FORWARDED_RESENDS,
   * and then the ticket is refuted (see Ticket.refuted).
   */
  countResend(ticket: Ticket): boolean {
    const write = ticket.write;
    if (write === undefined) return false;
    if (write.resends >= MAX_FORWARDED_RESENDS) {
      ticket.refuted = true;
      return false;
    }
    write.resends++;
    return true;
  }

  /**
   * A forwarded write was queued again: it now waits for `waits`, and for `owner` as
   * owner (undefined: the session's owner is this node or not a holder). With no waits it
   * went to no holder, and that was no sending: its resends are left for when it can go.
   * Then, `lost` to a newer claim, it counts nobody's word (stranded: the engine tries it
   * again on view changes); sent again only because a holder could not say, it keeps
   * waiting for the holders it went to before.
   */
  reopen(ticket: Ticket, owner: string | undefined, changes: readonly Change[], waits: TicketWait[], lost = true): void {
    if (waits.length === 0) {
      ticket.write!.resends--;
      if (!lost) return;
    }
    ticket.owner = owner;
    ticket.ownerConfirmed = false;
    ticket.flushed = false;
    ticket.write!.changes = changes;
    ticket.write!.keys = undefined;
    ticket.waits = waits;
    // Not sent to it (gone, or the session is another node's now): its word is not awaited.
    if (ticket.mustVouch !== undefined && (owner !== undefined || !waits.some((w) => w.nodeId === ticket.mustVouch))) ticket.mustVouch = undefined;
  }
}
