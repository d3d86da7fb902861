/**
 * What a node core needs from the world, and what the world hands back: the narrow seam
 * between the pure node core (node-core.ts) and the I/O that carries it out — UDP and the
 * peer gRPC service in the sidecar (sidecar/transport/udp-transport.ts), a simulated
 * network in the tests (test/support/sim-transport.ts).
 *
 * Rules:
 * - Out: a transport sends datagram payloads (sealing them on the way), starts peer
 *   requests, and arms ONE timer at the core's next deadline. It makes no decision: which
 *   datagram goes where, which peer is asked what and until when, all come from the core.
 * - In: datagram payloads (opened) go to `NodeCore.handleDatagram`, peer answers to
 *   `NodeCore.handleAnswer`, the timer to `NodeCore.tick`, each with `now`; each but the
 *   first returns the next `Ready`, which `carryOut` hands back to the transport (a
 *   datagram wakes the driver instead, which flushes once the turn's datagrams are in).
 * - Peer requests from other nodes are served read-only from the core's store (digests,
 *   snapshots, lookups): the answer is whatever the store holds, nothing to decide.
 */
import type { SessionSnapshot } from '../store/store';

/**
 * A datagram payload (before sealing) and where it goes: a peer's host:port, 'multicast'
 * (the first multicast group) or 'multicast#g' (group g; see multicast-groups.ts).
 */
export interface Outgoing {
  to: string;
  payload: Uint8Array;
}

/**
 * A request to a peer the transport must run. Its answer (or failure) comes back as a
 * `PeerAnswer` with the same `id`. `deadline` is absolute (ms since the epoch): past it the
 * call is abandoned and answered as failed.
 */
export type PeerRequest =
  /**
   * The digests of `partitions` at the peer (the first step of a state transfer; `again`:
   * the same transfer asks once more, after it waited for another peer's copy).
   */
  | { kind: 'digests'; id: number; peerAddress: string; partitions: number[]; deadline: number; again?: boolean }
  /** Every session of `partitions` at the peer, streamed as `snapshot` answers, then `fetched`. */
  | { kind: 'fetch'; id: number; peerAddress: string; partitions: number[]; deadline: number }
  /**
   * The peer's copies of `sessionIds` (a resume, or a look-up before a write): one `lookup`
   * answer. `claimant` (a resume: this node's id): the peer hands over those it owns.
   */
  | { kind: 'lookup'; id: number; peerAddress: string; sessionIds: string[]; deadline: number; claimant?: string }
  /** Resolve the seed addresses again (DNS): one `seeds` answer (a failure changes nothing). */
  | { kind: 'resolve_seeds'; id: number };

export type PeerAnswer =
  | { kind: 'digests'; id: number; digests: ReadonlyMap<number, bigint> }
  | { kind: 'snapshot'; id: number; snapshot: SessionSnapshot }
  | { kind: 'fetched'; id: number }
  | { kind: 'lookup'; id: number; snapshots: SessionSnapshot[] }
  | { kind: 'seeds'; id: number; addresses: string[] }
  /**
   * `down`: the peer refused the call or dropped its connection — nothing answers at its
   * address (its process is gone) — rather than not answering in time (it may be alive and
   * cut off from this node).
   */
  | { kind: 'failed'; id: number; error: string; down?: boolean };

/**
 * What the core asks of its transport after an input, in the order it must be done:
 * 1. `datagrams`, in order (acknowledgements and repairs before new data is what the
 *    engine queued; sending out of order only costs NACKs);
 * 2. `requests` (a request may concern state those datagrams just announced);
 * 3. `deadline`: (re)arm the one timer — call `NodeCore.tick` at or after it (Infinity =
 *    nothing due).
 * `settled` says how many of the core's promises (synchronous writes, resumes, drain,
 * readiness, back-pressure) this input resolved: their continuations run after the call
 * returns and may queue more work (then the core calls its `wake` hook). `tickets` lists
 * the synchronous writes acknowledged by this input and `awaited` the tickets API calls
 * began waiting for since the last Ready, for observation (simulations, tests).
 */
export interface Ready {
  datagrams: Outgoing[];
  requests: PeerRequest[];
  deadline: number;
  /**
   * The multicast groups (indexes into the configured list) the node must listen on now,
   * present only when that changed since the last Ready: join these, leave the others.
   * Carried out before the datagrams.
   */
  groups?: readonly number[];
  settled: number;
  tickets: { id: number; acked: number }[];
  awaited: number[];
}

/** The I/O side of a node: carries out a Ready. */
export interface Transport {
  /** Listens on exactly these multicast groups (see Ready.groups). */
  setGroups?(groups: readonly number[]): void;
  /** Sends these datagrams, in order (together where the transport can: one system call). */
  sendDatagrams(datagrams: readonly Outgoing[]): void;
  startRequest(request: PeerRequest): void;
  /** Arms the one timer at `deadline` (ms since the epoch; Infinity = disarm). */
  armTimer(deadline: number): void;
}

/** Carries out a Ready in its documented order. */
export function carryOut(ready: Ready, transport: Transport): void {
  if (ready.groups !== undefined) transport.setGroups?.(ready.groups);
  if (ready.datagrams.length > 0) transport.sendDatagrams(ready.datagrams);
  for (const request of ready.requests) transport.startRequest(request);
  transport.armTimer(ready.deadline);
}
