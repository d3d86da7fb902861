/**
 * A node's replication as a recorder: the deadlines the API hands it for acknowledgements
 * and peer look-ups, which settle at once (acknowledged by one secondary; the one peer asked
 * answers without a copy). For tests of the surfaces that carry a caller's deadline.
 */
import type { PeerCopies, Replicator } from '../../src/core/session-api';

export function recordingReplicator(): { replicator: Replicator; deadlines: { ack: number[]; fetch: number[] } } {
  const deadlines: { ack: number[]; fetch: number[] } = { ack: [], fetch: [] };
  let tickets = 0;
  const replicator: Replicator = {
    replicas: 1,
    secondariesFor: () => 1,
    replicate: () => ++tickets,
    waitForAcks: (_ticket, _needed, deadline) => {
      deadlines.ack.push(deadline);
      return Promise.resolve(1);
    },
    sendQueueRoom: () => undefined,
    fetchFromPeers: (_id, _owner, deadline): Promise<PeerCopies> => {
      deadlines.fetch.push(deadline);
      return Promise.resolve({ asked: 1, answered: 1, snapshots: [] });
    },
    replicateClaim: () => undefined,
  };
  return { replicator, deadlines };
}
