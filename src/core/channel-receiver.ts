/**
 * The receiving side of one channel: duplicate detection, gap detection, NACK scheduling
 * with back-off (and suppression on multicast), cumulative acknowledgements, and the
 * decision to give up and resync. Sans-IO: the caller feeds sequence numbers and `now`,
 * then polls for what to send.
 *
 * State is the highest sequence number seen plus the sorted list of missing ranges below
 * it; everything else up to `highest` has arrived. The cumulative acknowledgement is the
 * sequence number before the first gap.
 *
 * Timing (all in ms, from ChannelReceiverConfig):
 * - a gap is NACKed after reorderAllowanceMs (plus, on multicast, a random back-off in
 *   [0, multicastBackoffMs), reset when another receiver's NACK for it is overheard);
 * - unanswered NACKs are repeated after nackRetryMs, doubling per attempt, up to
 *   maxNackAttempts; then the channel asks for a resync;
 * - a gap wider than maxGap sequence numbers asks for a resync at once;
 * - a heartbeat naming the channel is answered with a cumulative acknowledgement at once:
 *   senders name a channel only while some receiver's acknowledgement is missing, and an
 *   acknowledgement is sent only once, so this is what repairs a lost final one.
 *
 * Notes: the caller may attach a note to a received packet for the sender (what it made
 * of the packet). Every acknowledgement that covers a note's sequence number carries it,
 * until noteRetentionMs after the first one did (so a lost acknowledgement does not lose
 * it: the next one, asked for by the sender's heartbeat, carries it again). Notes are
 * bounded (maxNotes); one dropped before that, and packets a resync covered, raise
 * `notesCompleteAbove`: an acknowledgement's notes are complete only above it.
 */
import type { Random } from '../store/random';

export interface ChannelReceiverConfig {
  /** Wait before NACKing a gap, to let reordered packets arrive (ms). */
  reorderAllowanceMs: number;
  /** First NACK repeat interval (ms); doubles per attempt, capped at 16×. */
  nackRetryMs: number;
  /** NACKs per gap before giving up and resyncing. */
  maxNackAttempts: number;
  /** Upper bound of the random NACK back-off on multicast channels (ms). */
  multicastBackoffMs: number;
  /**
   * Interval of cumulative acknowledgements while data arrives (ms); a packet that asks
   * (a synchronous write, a sender at half its window) is acknowledged at once. Each
   * acknowledgement costs the receiver a timer's turn and the sender a turn of its own.
   */
  ackIntervalMs: number;
  /** Widest gap (in sequence numbers) worth repairing by NACK rather than resync. */
  maxGap: number;
  /** Most ranges in one NACK. */
  maxRangesPerNack: number;
  /** Most notes held for the sender; beyond it the oldest is dropped. */
  maxNotes: number;
  /** How long a note rides on acknowledgements after the first that carried it (ms). */
  noteRetentionMs: number;
}

export const DEFAULT_CHANNEL_RECEIVER_CONFIG: ChannelReceiverConfig = {
  reorderAllowanceMs: 2,
  nackRetryMs: 10,
  maxNackAttempts: 10,
  multicastBackoffMs: 4,
  ackIntervalMs: 20,
  maxGap: 100_000,
  maxRangesPerNack: 64,
  maxNotes: 64,
  noteRetentionMs: 1000,
};

/** Wait before the NACK after `attempts` of them (ms): nackRetryMs doubling per attempt, capped at 16×. */
function nackRetryDelayMs(config: ChannelReceiverConfig, attempts: number): number {
  return config.nackRetryMs * Math.pow(2, Math.min(attempts - 1, 4));
}

/**
 * The longest a gap is NACKed before its channel gives up and resyncs (ms): the wait
 * before the first NACK and before each repeat, every one with the whole multicast back-off.
 */
export function nackRepairLimitMs(config: ChannelReceiverConfig): number {
  let total = config.reorderAllowanceMs + config.multicastBackoffMs;
  for (let attempts = 1; attempts <= config.maxNackAttempts; attempts++) {
    total += nackRetryDelayMs(config, attempts) + config.multicastBackoffMs;
  }
  return total;
}

interface Gap {
  first: number;
  last: number;
  nackAt: number;
  attempts: number;
}

export type DataVerdict = 'new' | 'duplicate';

export interface ReceiverPoll<Note = never> {
  /** Ranges to NACK now, inclusive. */
  nack: [number, number][] | undefined;
  /** Cumulative sequence number to acknowledge now. */
  ack: number | undefined;
  /** The channel cannot be repaired by NACKs: resync from the sender's state. */
  resync: boolean;
  /** With `ack`: the notes on packets it covers, complete above `notesCompleteAbove`. */
  notes: Note[];
  notesCompleteAbove: number;
}

export class ChannelReceiver<Note = never> {
  private highest: number;
  private gaps: Gap[] = [];
  private ackDueAt = Infinity;
  private resyncWanted = false;
  /** A resync was handed to the driver and has not finished: do not ask again meanwhile. */
  private resyncInFlight = false;
  /** After a failed resync, the next request waits until then. */
  private resyncNotBefore = 0;
  /** Notes for the sender, by sequence number; sentAt is when an acknowledgement first carried one. */
  private notes: { seq: number; note: Note; sentAt: number }[] = [];
  /** Notes on sequence numbers at or below this may have been dropped. */
  private notesFloor = 0;
  readonly counters = { duplicates: 0, nacksSent: 0, rangesNacked: 0, suppressed: 0 };

  /**
   * @param startAfter sequence numbers up to this one are taken as already handled (a
   *   receiver that meets a channel mid-stream starts after the first packet it sees - 1
   *   and relies on state transfer for what came before).
   */
  constructor(
    private readonly config: ChannelReceiverConfig,
    private readonly multicast: boolean,
    private readonly random: Random,
    startAfter = 0,
  ) {
    this.highest = startAfter;
  }

  /** Everything up to this sequence number has arrived. */
  get cumulative(): number {
    return this.gaps.length > 0 ? this.gaps[0]!.first - 1 : this.highest;
  }

  get highestSeen(): number {
    return this.highest;
  }

  /** Sequence numbers currently missing. */
  get missing(): number {
    let n = 0;
    for (const gap of this.gaps) n += gap.last - gap.first + 1;
    return n;
  }

  /** A data packet arrived. ackRequested asks for an acknowledgement without delay. */
  handleData(seq: number, ackRequested: boolean, now: number): DataVerdict {
    if (seq <= this.highest) {
      const i = this.gapIndexOf(seq);
      if (i < 0) {
        this.counters.duplicates++;
        if (ackRequested) this.ackDueAt = now;
        return 'duplicate';
      }
      this.fill(i, seq);
    } else {
      this.extendTo(seq - 1, now);
      this.highest = seq;
    }
    if (ackRequested) this.ackDueAt = now;
    else if (this.ackDueAt === Infinity) this.ackDueAt = now + this.config.ackIntervalMs;
    return 'new';
  }

  /**
   * The sender says it has sent up to seq (heartbeat): finds lost tail packets, and
   * acknowledges again what has arrived (the sender still waits for an acknowledgement).
   */
  handleHighest(seq: number, now: number): void {
    if (seq > this.highest) {
      this.extendTo(seq, now);
      this.highest = seq;
    }
    if (this.cumulative > 0) this.ackDueAt = Math.min(this.ackDueAt, now);
  }

  /** Another receiver NACKed these ranges on the multicast group: hold ours back. */
  handleOverheardNack(ranges: readonly (readonly [number, number])[], now: number): void {
    if (!this.multicast) return;
    for (const gap of this.gaps) {
      for (const [first, last] of ranges) {
        if (first <= gap.first && last >= gap.last && gap.nackAt > now) {
          gap.nackAt = now + this.retryDelay(gap.attempts) + this.backoff();
          gap.attempts++;
          this.counters.suppressed++;
        }
      }
    }
  }

  /** The sender no longer holds sequence numbers below firstRetained. */
  handleGone(firstRetained: number): void {
    if (this.gaps.length > 0 && this.gaps[0]!.first < firstRetained) this.resyncWanted = true;
  }

  /** Something that arrived could not be used (e.g. a reassembly was dropped): resync. */
  requestResync(): void {
    this.resyncWanted = true;
  }

  /**
   * Attaches a note on packet `seq` for the sender (acknowledgements carry it). At most
   * maxNotes are held: the one on the lowest sequence number goes first.
   */
  note(seq: number, note: Note): void {
    let i = this.notes.length;
    while (i > 0 && this.notes[i - 1]!.seq > seq) i--;
    this.notes.splice(i, 0, { seq, note, sentAt: Infinity });
    while (this.notes.length > this.config.maxNotes) this.dropNote();
  }

  /** Notes held now (for tests and bounds). */
  get noteCount(): number {
    return this.notes.length;
  }

  /** What to send now. */
  poll(now: number): ReceiverPoll<Note> {
    let nack: [number, number][] | undefined;
    for (const gap of this.gaps) {
      if (gap.nackAt > now) continue;
      if (gap.attempts >= this.config.maxNackAttempts) {
        // Given up on: the resync repairs it (while one runs, the gap waits for its end).
        if (this.resyncInFlight) gap.nackAt = Infinity;
        else this.resyncWanted = true;
        continue;
      }
      nack ??= [];
      if (nack.length >= this.config.maxRangesPerNack) break;
      nack.push([gap.first, gap.last]);
      gap.attempts++;
      gap.nackAt = now + this.retryDelay(gap.attempts) + this.backoff();
    }
    if (nack !== undefined) {
      this.counters.nacksSent++;
      this.counters.rangesNacked += nack.length;
    }
    let ack: number | undefined;
    const notes: Note[] = [];
    if (this.ackDueAt <= now) {
      this.ackDueAt = Infinity;
      ack = this.cumulative;
      while (this.notes.length > 0 && this.notes[0]!.sentAt + this.config.noteRetentionMs <= now) this.dropNote();
      for (const held of this.notes) {
        if (held.seq > ack) break;
        if (held.sentAt === Infinity) held.sentAt = now;
        notes.push(held.note);
      }
    }
    const resync = this.resyncWanted && !this.resyncInFlight && now >= this.resyncNotBefore;
    return { nack, ack, resync, notes, notesCompleteAbove: this.notesFloor };
  }

  /**
   * The resync poll asked for is under way. Until resynced() the receiver neither asks
   * again nor acknowledges past its gaps: an acknowledgement must mean the data is here.
   */
  resyncStarted(): void {
    this.resyncWanted = false;
    this.resyncInFlight = true;
  }

  /** The resync failed: ask again, no earlier than `retryAt`. */
  resyncFailed(retryAt: number): void {
    this.resyncInFlight = false;
    this.resyncWanted = true;
    this.resyncNotBefore = retryAt;
    for (const gap of this.gaps) if (gap.nackAt === Infinity) gap.nackAt = retryAt;
  }

  /**
   * After a resync from the sender's state: everything up to `upTo` counts as received
   * (the transferred state covers it) and the gaps below are forgotten.
   */
  resynced(upTo: number): void {
    // A gap reaching above upTo keeps its part above it.
    this.gaps = this.gaps.filter((gap) => gap.last > upTo);
    const kept = this.gaps[0];
    if (kept !== undefined && kept.first <= upTo) kept.first = upTo + 1;
    if (upTo > this.highest) this.highest = upTo;
    // A gap above upTo given up on while the transfer ran (parked for its end) was not
    // covered by it: only another resync repairs it.
    this.resyncWanted = this.gaps.some((gap) => gap.attempts >= this.config.maxNackAttempts);
    this.resyncInFlight = false;
    this.ackDueAt = 0;
    // What the transfer brought was never seen as packets: nothing was noted on it.
    if (upTo > this.notesFloor) this.notesFloor = upTo;
  }

  /** When poll next has something to do (Infinity = nothing scheduled). */
  nextDeadline(): number {
    let next = this.ackDueAt;
    for (const gap of this.gaps) if (gap.nackAt < next) next = gap.nackAt;
    if (this.resyncWanted && !this.resyncInFlight) return Math.min(next, this.resyncNotBefore);
    return next;
  }

  private extendTo(last: number, now: number): void {
    const first = this.highest + 1;
    if (last < first) return;
    if (last - this.cumulative > this.config.maxGap) {
      this.resyncWanted = true;
    }
    this.gaps.push({ first, last, nackAt: now + this.config.reorderAllowanceMs + this.backoff(), attempts: 0 });
  }

  private gapIndexOf(seq: number): number {
    // Gaps are sorted and few; binary search keeps heavy loss cheap.
    let lo = 0;
    let hi = this.gaps.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const gap = this.gaps[mid]!;
      if (seq < gap.first) hi = mid - 1;
      else if (seq > gap.last) lo = mid + 1;
      else return mid;
    }
    return -1;
  }

  private fill(i: number, seq: number): void {
    const gap = this.gaps[i]!;
    if (gap.first === gap.last) this.gaps.splice(i, 1);
    else if (seq === gap.first) gap.first++;
    else if (seq === gap.last) gap.last--;
    else {
      this.gaps.splice(i + 1, 0, { first: seq + 1, last: gap.last, nackAt: gap.nackAt, attempts: gap.attempts });
      gap.last = seq - 1;
    }
  }

  private dropNote(): void {
    const dropped = this.notes.shift()!;
    if (dropped.seq > this.notesFloor) this.notesFloor = dropped.seq;
  }

  private retryDelay(attempts: number): number {
    return nackRetryDelayMs(this.config, attempts);
  }

  private backoff(): number {
    return this.multicast ? this.random.next() * this.config.multicastBackoffMs : 0;
  }
}
