/**
 * Every count a node keeps, in one place: the replication engine, the node core and the
 * transport write here, and the metrics (and simulations) read here. Counts only: events
 * that are logged (membership changes, transfer outcomes) and distributions (lag,
 * latencies) still go to the NodeObserver.
 *
 * Rules: every field only grows; labelled counts are keyed by a small fixed set of values
 * (drop reasons, transfer reasons and outcomes, membership event types), never by a node
 * id or a session id, so the maps stay bounded.
 */
import type { EngineStats } from './outbox';

export class NodeCounters {
  /** State transfers started, and those that failed. */
  resyncs = 0;
  resyncFailures = 0;
  /** Sessions merged from peers by state transfers. */
  sessionsTransferred = 0;
  /** Sessions changed by anti-entropy transfers. */
  antiEntropyRepairs = 0;
  /** Bytes pulled from peers because placement gave this node partitions. */
  rereplicatedBytes = 0;
  /** Writes that waited for the send queues to shorten. */
  backpressureWaits = 0;
  /** Datagrams the operating system refused to send. */
  sendErrors = 0;
  /** Datagrams handed to the kernel in segmented sends (UDP_SEGMENT: several to one destination in one). */
  segmentedDatagrams = 0;
  /** Datagrams received in runs read as one (UDP_GRO: a segmented send, or datagrams the kernel coalesced), cut apart here. */
  coalescedDatagrams = 0;
  /** This node's own multicast datagrams looped back to it that reached the process (a socket filter drops the rest in the kernel). */
  ownDatagramsReceived = 0;
  /** Datagrams or deltas dropped, by reason. */
  readonly dropped = new Map<string, number>();
  /** State transfers that ended, by "reason outcome" (e.g. "placement ok"). */
  readonly transfers = new Map<string, number>();
  /** Membership changes seen, by type. */
  readonly membershipEvents = new Map<string, number>();
  /** Sessions this node took ownership of, by reason: resume (asked for), takeover (as a partition's new master). */
  readonly claims = new Map<string, number>();
  /** Sessions this node owned and handed over to a peer resuming them (as it answered the peer's lookup). */
  handedOver = 0;
  /**
   * Orphaned sessions a master left unclaimed in a takeover pass (--quorum): none of the
   * copies at hand came from a node that held the session for its owner (NodeCore.claimVouched).
   */
  claimsUnvouched = 0;

  /** `engine`: the replication engine's own counts (datagrams, bytes, deltas, NACKs). */
  constructor(readonly engine: EngineStats) {}

  drop(reason: string): void {
    this.dropped.set(reason, (this.dropped.get(reason) ?? 0) + 1);
  }

  transferEnded(reason: string, outcome: 'ok' | 'error'): void {
    const key = `${reason} ${outcome}`;
    this.transfers.set(key, (this.transfers.get(key) ?? 0) + 1);
  }

  claimed(reason: 'resume' | 'takeover'): void {
    this.claims.set(reason, (this.claims.get(reason) ?? 0) + 1);
  }

  membershipEvent(type: string): void {
    this.membershipEvents.set(type, (this.membershipEvents.get(type) ?? 0) + 1);
  }
}
