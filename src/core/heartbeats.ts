/**
 * Heartbeats of the replication protocol, beside membership: what this node sends to
 * each heartbeat target, and what a received heartbeat says once checked.
 *
 * Rules:
 * - A heartbeat names a channel only while some receiver has not acknowledged all of it:
 *   the receiver then learns of lost tail packets and answers with an acknowledgement (so
 *   a lost final acknowledgement is repaired too). Fully acknowledged channels stay quiet.
 * - On multicast one heartbeat goes to the group, and unicast ones only to targets not
 *   known as members yet (discovery); on unicast every target gets its own.
 * - A received heartbeat with an address a datagram cannot be sent to is malformed;
 *   gossiped members with bad ids or addresses are left out, at most MAX_KNOWN of them.
 */
import type { Heartbeat, KnownMember } from '../gen/baton/v1/wire';
import { isNodeId, isPeerAddress, safeSeq } from '../wire/datagram-fields';
import type { HeartbeatInput, Membership } from './membership';

/** Most gossiped members read from one heartbeat. */
export const MAX_KNOWN = 1024;

export interface HeartbeatPlan {
  transport: 'unicast' | 'multicast';
  configDigest: bigint;
  leaving: boolean;
  pulling: boolean;
  /** Live members (alive or suspect) to gossip. */
  known: KnownMember[];
  /** Membership's heartbeat targets (addresses). */
  targets: readonly string[];
  /** The member at an address, if known. */
  nodeIdAt(address: string): string | undefined;
  /**
   * The highest sequence number of `channel` ('' = multicast) while a receiver has not
   * acknowledged all of it, else 0.
   */
  unackedHighest(channel: string): number;
  /** Fields the node adds (cluster coordination). */
  extras: Partial<Heartbeat>;
}

/** The parts of a plan membership knows: its digest, live members to gossip, targets, who is where. */
export function membershipPlan(membership: Membership): Pick<HeartbeatPlan, 'configDigest' | 'known' | 'targets' | 'nodeIdAt'> {
  return {
    configDigest: membership.configDigest,
    known: membership
      .members()
      .filter((m) => m.nodeId !== '' && (m.state === 'alive' || m.state === 'suspect'))
      .map((m) => ({ nodeId: m.nodeId, advertiseAddress: m.advertiseAddress })),
    targets: membership.heartbeatTargets(),
    nodeIdAt: (address) => membership.members().find((m) => m.advertiseAddress === address && m.nodeId !== '' && !m.isSelf)?.nodeId,
  };
}

/** The heartbeats to send at `now`: to an address, or to 'multicast'. */
export function buildHeartbeats(plan: HeartbeatPlan, now: number): { to: string; heartbeat: Heartbeat }[] {
  const base: Heartbeat = {
    advertiseAddress: '',
    configDigest: plan.configDigest,
    channels: [],
    leaving: plan.leaving,
    pulling: plan.pulling,
    sentAtUnixMs: BigInt(Math.floor(now)),
    known: plan.known,
    viewId: 0n,
    viewCoordinator: '',
    ...plan.extras,
  };
  const channelsOf = (channel: string) => {
    const highest = plan.unackedHighest(channel);
    return highest > 0 ? [{ targetNodeId: channel, highestSeq: BigInt(highest) }] : [];
  };
  const out: { to: string; heartbeat: Heartbeat }[] = [];
  if (plan.transport === 'multicast') out.push({ to: 'multicast', heartbeat: { ...base, channels: channelsOf('') } });
  for (const target of plan.targets) {
    const peer = plan.nodeIdAt(target);
    if (plan.transport === 'multicast' && peer !== undefined) continue;
    out.push({ to: target, heartbeat: { ...base, channels: peer === undefined ? [] : channelsOf(peer) } });
  }
  return out;
}

/** A received heartbeat, checked. */
export interface ReadHeartbeat {
  /** What membership takes. */
  member: HeartbeatInput;
  /** The sender is still pulling partitions. */
  pulling: boolean;
  /** The sender's channels to this node ('' = multicast) with their highest sequence number. */
  channels: { target: string; highest: number }[];
}

/**
 * Reads a heartbeat from `from` (incarnation from the datagram) that came from
 * `fromAddress`; undefined when it is malformed.
 */
export function readHeartbeat(
  heartbeat: Heartbeat,
  from: string,
  incarnation: bigint,
  fromAddress: string,
  self: string,
  transport: 'unicast' | 'multicast',
): ReadHeartbeat | undefined {
  const advertised = heartbeat.advertiseAddress || fromAddress;
  if (!isPeerAddress(advertised)) return undefined;
  const channels: ReadHeartbeat['channels'] = [];
  for (const channel of heartbeat.channels) {
    const target = channel.targetNodeId;
    if (target !== '' && target !== self) continue;
    if (target === '' && transport !== 'multicast') continue;
    const highest = safeSeq(channel.highestSeq);
    if (highest !== 0) channels.push({ target, highest });
  }
  return {
    member: {
      nodeId: from,
      incarnation,
      advertiseAddress: advertised,
      configDigest: heartbeat.configDigest,
      leaving: heartbeat.leaving,
      known: heartbeat.known.filter((k) => isNodeId(k.nodeId) && isPeerAddress(k.advertiseAddress)).slice(0, MAX_KNOWN),
    },
    pulling: heartbeat.pulling,
    channels,
  };
}
