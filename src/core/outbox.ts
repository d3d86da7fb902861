/**
 * What a node's replication engine counts, and the outbox its parts queue datagrams on.
 *
 * Rules:
 * - Every datagram the engine sends goes through `Outbox.push`, which counts it by type
 *   and bytes in the shared `EngineStats`; the driver takes the queue with `take`.
 * - EngineStats are plain counters (cores write them, metrics read them); they only grow.
 */
import { Datagram } from '../gen/baton/v1/wire';
import { encodeWith } from '../wire/proto-writer';

export type DatagramType = 'data' | 'heartbeat' | 'nack' | 'ack' | 'gone' | 'leave' | 'election' | 'inquiry' | 'inquiryReply' | 'coordinatorNotice' | 'viewPage';

export interface Outgoing {
  /** A peer's host:port, or 'multicast' for the group. */
  to: string;
  payload: Uint8Array;
}

export type EngineStats = ReturnType<typeof newEngineStats>;

export function newEngineStats() {
  return {
    datagramsSent: { data: 0, heartbeat: 0, nack: 0, ack: 0, gone: 0, leave: 0, election: 0, inquiry: 0, inquiryReply: 0, coordinatorNotice: 0, viewPage: 0 },
    datagramsReceived: { data: 0, heartbeat: 0, nack: 0, ack: 0, gone: 0, leave: 0, election: 0, inquiry: 0, inquiryReply: 0, coordinatorNotice: 0, viewPage: 0 },
    bytesSent: 0,
    bytesReceived: 0,
    deltasSent: 0,
    deltasApplied: 0,
    deltasIgnored: 0,
    nacksReceived: 0,
    acksReceived: 0,
    retransmissions: 0,
    fragmentsSent: 0,
    resyncsRequested: 0,
    sessionsDiscarded: 0,
  };
}

export class Outbox {
  private queue: Outgoing[] = [];

  constructor(
    private readonly nodeId: string,
    private readonly stats: EngineStats,
  ) {}

  /** Encodes a datagram body as sent by this node. */
  encode(body: NonNullable<Datagram['body']>): Uint8Array {
    return encodeWith((w) => Datagram.encode({ senderNodeId: this.nodeId, body }, w));
  }

  push(to: string, payload: Uint8Array, type: DatagramType): void {
    this.queue.push({ to, payload });
    this.stats.datagramsSent[type]++;
    this.stats.bytesSent += payload.length;
  }

  take(): Outgoing[] {
    const out = this.queue;
    this.queue = [];
    return out;
  }
}
