/**
 * Election messages on the wire (proto/baton/v1/wire.proto, fields 20-29): notices batched
 * per destination into `Election` datagrams, and the election fields of heartbeats
 * (priority, round-trip echoes, reported delays), each read with the checks datagrams need.
 *
 * Rules:
 * - Reading never throws: a notice with a bad node id, an unknown kind, a REVOKE without the
 *   revoked index, or a negative rank is left out and counted by the caller
 *   (`dropped`); a datagram with more than MAX_NOTICES notices keeps the first ones.
 * - Writing splits notices so that every datagram payload stays within `maxPayloadBytes`.
 */
import { ElectionNotice as WireNotice, ElectionNoticeKind, type Election, type Heartbeat, type MemberIndex as WireIndex } from '../gen/baton/v1/wire';
import { isNodeId } from '../wire/datagram-fields';
import { varintBytes } from '../wire/proto-writer';
import type { ElectionNotice, MemberIndex } from './election';

/** Most notices read from one datagram (a batch for every partition of a large cluster). */
export const MAX_NOTICES = 65_536;
/** Most echoes or delays read from one heartbeat. */
export const MAX_HEARTBEAT_ENTRIES = 1024;
/** Priorities are 32-bit signed on the wire. */
const INT32_MIN = -0x80000000;
const INT32_MAX = 0x7fffffff;

export function isPriority(value: number): boolean {
  return Number.isInteger(value) && value >= INT32_MIN && value <= INT32_MAX;
}

function readIndex(index: WireIndex | undefined): MemberIndex | undefined {
  if (index === undefined || !isNodeId(index.nodeId) || !isPriority(index.priority)) return undefined;
  if (!Number.isInteger(index.rank) || index.rank < 0) return undefined;
  return { nodeId: index.nodeId, priority: index.priority, rank: index.rank };
}

/**
 * The valid notices of an Election body, and how many were left out. Any group number
 * reads (partitions are [0, partitions), other groups such as a coordinator's use others):
 * the receiver ignores and counts a notice for a group it does not have.
 */
export function readElection(election: Election): { notices: ElectionNotice[]; dropped: number } {
  const notices: ElectionNotice[] = [];
  let dropped = Math.max(0, election.notices.length - MAX_NOTICES);
  for (const wire of election.notices.slice(0, MAX_NOTICES)) {
    const sender = readIndex(wire.sender);
    const group = wire.group;
    if (sender === undefined || !Number.isInteger(group) || group < 0) {
      dropped++;
      continue;
    }
    if (wire.kind === ElectionNoticeKind.ELECTION_NOTICE_KIND_DECLARE) {
      notices.push({ kind: 'declare', group, declarer: sender });
      continue;
    }
    const revoked = readIndex(wire.revoked);
    if (wire.kind !== ElectionNoticeKind.ELECTION_NOTICE_KIND_REVOKE || revoked === undefined) {
      dropped++;
      continue;
    }
    notices.push({ kind: 'revoke', group, revoker: sender, revoked });
  }
  return { notices, dropped };
}

function toWire(notice: ElectionNotice): WireNotice {
  if (notice.kind === 'declare') return { group: notice.group, kind: ElectionNoticeKind.ELECTION_NOTICE_KIND_DECLARE, sender: notice.declarer, revoked: undefined };
  return { group: notice.group, kind: ElectionNoticeKind.ELECTION_NOTICE_KIND_REVOKE, sender: notice.revoker, revoked: notice.revoked };
}

/**
 * `notices` in Election bodies whose datagrams stay within `maxPayloadBytes`: `encode`
 * measures an empty one once, and each notice adds its own encoding plus its field tag and
 * length (and a margin for the body's growing length prefix). A single notice too large
 * for one goes alone (ids are short).
 */
export function electionBatches(notices: readonly ElectionNotice[], maxPayloadBytes: number, encode: (election: Election) => Uint8Array): Election[] {
  const base = encode({ notices: [] }).length + BODY_LENGTH_MARGIN;
  const out: Election[] = [];
  let batch: Election['notices'] = [];
  let bytes = base;
  for (const notice of notices) {
    const wire = toWire(notice);
    const size = WireNotice.encode(wire).finish().length;
    const added = size + 1 + varintBytes(size);
    if (batch.length > 0 && bytes + added > maxPayloadBytes) {
      out.push({ notices: batch });
      batch = [];
      bytes = base;
    }
    batch.push(wire);
    bytes += added;
  }
  if (batch.length > 0) out.push({ notices: batch });
  return out;
}

/** The Datagram's body length prefix grows with the batch: at most this many bytes more. */
const BODY_LENGTH_MARGIN = 4;

/** The election fields of a received heartbeat, checked. */
export interface HeartbeatElectionFields {
  priority: number;
  /** Echoes of this node's heartbeats: when it sent the one echoed, and how long the peer held it. */
  echo: { sentAtMs: number; heldMs: number } | undefined;
  /** The sender's round trips to its peers. */
  delays: Map<string, number>;
}

export function readHeartbeatElection(heartbeat: Heartbeat, self: string): HeartbeatElectionFields {
  let echo: HeartbeatElectionFields['echo'];
  for (const e of heartbeat.echoes.slice(0, MAX_HEARTBEAT_ENTRIES)) {
    if (e.nodeId !== self) continue;
    const sentAtMs = Number(e.sentAtUnixMs);
    if (Number.isFinite(e.heldMs) && e.heldMs >= 0 && Number.isSafeInteger(sentAtMs)) echo = { sentAtMs, heldMs: e.heldMs };
  }
  const delays = new Map<string, number>();
  for (const d of heartbeat.delays.slice(0, MAX_HEARTBEAT_ENTRIES)) {
    if (isNodeId(d.nodeId) && Number.isFinite(d.roundTripMs) && d.roundTripMs >= 0) delays.set(d.nodeId, d.roundTripMs);
  }
  return { priority: isPriority(heartbeat.priority) ? heartbeat.priority : 0, echo, delays };
}
