/**
 * The simulated Transport (src/core/transport.ts) of one simulated node: what the
 * sidecar's UdpTransport does, on a SimNetwork and virtual time.
 *
 * Rules:
 * - Every datagram is sealed by a real DatagramSealer and opened by a real DatagramOpener,
 *   so the codec, the cluster key and the replay windows are in the loop; opener drops
 *   are counted per reason.
 * - Peer requests (state transfers, resume lookups) are answered from the peer's real
 *   store `requestDelayMs` of virtual time after they were made (a fetch streams its
 *   snapshots, then ends). A request to a stopped peer or across a cut link fails then,
 *   as a gRPC call would. An answer reaching a node restarted since is dropped ('stale').
 * - The timer is the SimNetwork's: it ticks a host at its `nextDeadline()`.
 */
import { BinaryReader } from '@bufbuild/protobuf/wire';
import type { ClusterKey } from '../../src/wire/cluster-key';
import { DatagramOpener, DatagramSealer, HEADER_BYTES, TAG_BYTES, type DropReason } from '../../src/wire/datagram-codec';
import { Data } from '../../src/gen/baton/v1/wire';
import type { Outgoing, PeerAnswer, PeerRequest, Transport } from '../../src/core/transport';
import type { DatagramMeta, SimNetwork } from './sim-network';
import type { SessionSnapshot, SessionStore } from '../../src/store/store';

/** What the transport needs of its node and of the cluster around it. */
export interface SimTransportHost {
  readonly address: string;
  readonly net: SimNetwork;
  /** Restarts so far: an answer to an earlier process is stale. */
  readonly generation: number;
  readonly running: boolean;
  readonly maxPayloadBytes: number;
  /** The node replicates over multicast (listens on groups). */
  readonly multicast: boolean;
  /** Virtual duration of one peer request. */
  readonly requestDelayMs: number;
  /** The store of the running node at `address`, and how it hands a session over (NodeCore.handOver), if any. */
  peer(address: string): { store: SessionStore; handOver(claimant: string, sessionId: string, now: number): boolean } | undefined;
  /** A peer answer arrived (now is the network's). */
  answer(answer: PeerAnswer): void;
  /** A peer request was made, and an answer to an earlier process was dropped. */
  requestStarted(request: PeerRequest): void;
  staleAnswer(request: PeerRequest): void;
}

export class SimTransport implements Transport {
  readonly openerDrops = new Map<DropReason, number>();
  /** Payloads the core produced above maxPayloadBytes (must stay 0). */
  oversizedPayloads = 0;
  datagramsAccepted = 0;
  private sealer: DatagramSealer | undefined;
  private opener: DatagramOpener | undefined;

  constructor(
    private readonly host: SimTransportHost,
    private keys: ClusterKey[],
    private readonly incarnation: bigint,
  ) {
    this.setKeys(keys, true);
  }

  /**
   * Replaces the cluster keys (the first seals, all open), as a key-file reload would.
   * The sealer is replaced only when the sealing key changes: a new sealer restarts packet
   * numbers, which under the same key would reuse GCM nonces. The opener is replaced when
   * the accepted set changes (DatagramOpener cannot change keys in place, so replay windows
   * start afresh then: the codec has no reload).
   */
  setKeys(keys: ClusterKey[], initial = false): void {
    const previous = this.keys;
    this.keys = keys;
    const ids = (list: ClusterKey[]) => [...list].sort((a, b) => a.id - b.id).map((k) => k.id).join(',');
    if (initial || previous[0]!.id !== keys[0]!.id) this.sealer = new DatagramSealer(keys, this.incarnation);
    if (initial || ids(previous) !== ids(keys)) {
      this.opener = new DatagramOpener(keys, { maxDatagramBytes: this.host.maxPayloadBytes + HEADER_BYTES + TAG_BYTES });
    }
  }

  /** Opens a datagram that arrived; undefined (and counted) when the opener drops it. */
  open(bytes: Uint8Array): { payload: Uint8Array; incarnation: bigint } | undefined {
    const opened = this.opener!.open(bytes);
    if (!opened.ok) {
      this.openerDrops.set(opened.reason, (this.openerDrops.get(opened.reason) ?? 0) + 1);
      return undefined;
    }
    this.datagramsAccepted++;
    return { payload: opened.payload, incarnation: opened.incarnation };
  }

  // --- Transport ---------------------------------------------------------------------

  setGroups(groups: readonly number[]): void {
    if (this.host.multicast) this.host.net.setGroups(this.host.address, groups);
  }

  sendDatagrams(datagrams: readonly Outgoing[]): void {
    for (const { to, payload } of datagrams) {
      if (payload.length > this.host.maxPayloadBytes) this.oversizedPayloads++;
      this.host.net.send(this.host.address, to, this.sealer!.seal(payload), describe(payload));
    }
  }

  startRequest(request: PeerRequest): void {
    const host = this.host;
    const net = host.net;
    host.requestStarted(request);
    if (request.kind === 'resolve_seeds') return; // simulated nodes have static seeds only
    const generation = host.generation;
    net.schedule(net.now + host.requestDelayMs, () => {
      if (!host.running || host.generation !== generation) {
        host.staleAnswer(request);
        return;
      }
      const reached = host.peer(request.peerAddress);
      const peer = reached?.store;
      // A stopped peer refuses the call (down); a cut link answers nothing (a real one
      // would time out: here the failure comes at once, as silence).
      if (reached === undefined || peer === undefined) {
        host.answer({ kind: 'failed', id: request.id, error: `${request.peerAddress} refused the call`, down: true });
        return;
      }
      if (net.isCut(host.address, request.peerAddress) || net.isCut(request.peerAddress, host.address)) {
        host.answer({ kind: 'failed', id: request.id, error: `${request.peerAddress} unreachable` });
        return;
      }
      const now = net.now;
      switch (request.kind) {
        case 'digests':
          host.answer({ kind: 'digests', id: request.id, digests: new Map(request.partitions.map((p) => [p, peer.digest(p)])) });
          return;
        case 'fetch':
          for (const partition of request.partitions) for (const snapshot of peer.snapshotsIn(partition, now)) host.answer({ kind: 'snapshot', id: request.id, snapshot });
          host.answer({ kind: 'fetched', id: request.id });
          return;
        case 'lookup': {
          const snapshots: SessionSnapshot[] = [];
          for (const id of request.sessionIds) {
            const snapshot = peer.snapshot(id, now);
            // As the peer service does: read first, then hand over (what the peer owns, or is claiming itself).
            if (request.claimant !== undefined && !reached.handOver(request.claimant, id, now)) continue;
            if (snapshot !== undefined) snapshots.push(snapshot);
          }
          host.answer({ kind: 'lookup', id: request.id, snapshots });
          return;
        }
      }
    });
  }

  /** The SimNetwork ticks the host at its next deadline: nothing to arm. */
  armTimer(): void {}

  count(reason: DropReason): number {
    return this.openerDrops.get(reason) ?? 0;
  }
}

/** Datagram body field numbers (wire.proto) → the label the network sees. */
const BODY_KINDS: Record<number, string> = { 2: 'data', 3: 'heartbeat', 4: 'nack', 5: 'ack', 6: 'gone', 7: 'leave' };

/** What the sender knows of its own datagram, for fault hooks (only data bodies decoded). */
function describe(payload: Uint8Array): DatagramMeta {
  const reader = new BinaryReader(payload);
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field === 2) {
      const data = Data.decode(reader.bytes());
      return { kind: 'data', seq: Number(data.seq), retransmit: data.retransmit, fragment: data.fragment !== undefined, deltaKinds: data.deltas.map((d) => d.kind) };
    }
    if (BODY_KINDS[field] !== undefined) return { kind: BODY_KINDS[field] };
    reader.skip(wireType);
  }
  return { kind: 'empty' };
}
