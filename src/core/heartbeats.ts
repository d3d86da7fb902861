/**
 * Heartbeats of the replication protocol, beside membership: what this node sends to
 * each heartbeat target, and what a received heartbeat says once checked.
 *
 * Rules:
 * - A heartbeat names a channel only while some receiver has not acknowledged all of it:
 *   the receiver then learns of lost tail packets and answers with an acknowledgement (so
 *   a lost final acknowledgement is repaired too). Fully acknowledged channels stay quiet.
 * - On multicast with one group, one heartbeat goes to the group, and unicast ones only to
 *   targets not known as members yet (discovery); on unicast, and on multicast with
 *   several groups (a member may listen on none of this node's groups), every target gets
 *   its own, naming its unicast channel and the group channels it listens on.
 * - A received heartbeat with an address a datagram cannot be sent to is malformed;
 *   gossiped members with bad ids or addresses are left out, at most MAX_KNOWN of them.
 */
import { NodeRole, type Heartbeat, type KnownMember } from '../gen/baton/v1/wire';
import { isNodeId, isPeerAddress, safeSeq } from '../wire/datagram-fields';
import type { HeartbeatInput, Membership } from './membership';
import { groupOfChannel, isGroupChannel } from './multicast-groups';

/** Most gossiped members read from one heartbeat. */
export const MAX_KNOWN = 1024;
/** Most per-setting config digests read from one heartbeat (there are six settings). */
export const MAX_SETTING_DIGESTS = 16;

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
  /**
   * Several multicast groups: the group channels a peer listens on (its heartbeat names
   * them); absent with one group or none.
   */
  groupChannelsOf?: (peer: string) => readonly string[];
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
    role: NodeRole.NODE_ROLE_UNSPECIFIED,
    settingDigests: [],
    priority: 0,
    echoes: [],
    delays: [],
    viewId: 0n,
    viewCoordinator: '',
    ...plan.extras,
  };
  const channelsOf = (channel: string) => {
    const highest = plan.unackedHighest(channel);
    return highest > 0 ? [{ targetNodeId: channel, highestSeq: BigInt(highest) }] : [];
  };
  const out: { to: string; heartbeat: Heartbeat }[] = [];
  const groupChannelsOf = plan.groupChannelsOf;
  const oneGroup = plan.transport === 'multicast' && groupChannelsOf === undefined;
  if (oneGroup) out.push({ to: 'multicast', heartbeat: { ...base, channels: channelsOf('') } });
  for (const target of plan.targets) {
    const peer = plan.nodeIdAt(target);
    if (oneGroup && peer !== undefined) continue;
    const channels = peer === undefined ? [] : channelsOf(peer);
    if (peer !== undefined && groupChannelsOf !== undefined) for (const channel of groupChannelsOf(peer)) channels.push(...channelsOf(channel));
    out.push({ to: target, heartbeat: { ...base, channels } });
  }
  return out;
}

/** A received heartbeat, checked. */
export interface ReadHeartbeat {
  /** What membership takes. */
  member: HeartbeatInput;
  /** The sender is still pulling partitions. */
  pulling: boolean;
  /** The sender's channels to this node (group channels: '' or '#g') with their highest sequence number. */
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
    const group = isGroupChannel(target);
    if (!group && target !== self) continue;
    if (group && (transport !== 'multicast' || groupOfChannel(target) === undefined)) continue;
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
      role: heartbeat.role === NodeRole.NODE_ROLE_STORE ? 'store' : 'edge',
      settingDigests: heartbeat.settingDigests.slice(0, MAX_SETTING_DIGESTS),
    },
    pulling: heartbeat.pulling,
    channels,
  };
}
