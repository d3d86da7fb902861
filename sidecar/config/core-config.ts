/**
 * What the node core and its parts are built from, derived from the sidecar's options.
 * Not options of their own: each follows from options by a rule, which says why.
 */
import { type ChannelReceiverConfig, DEFAULT_CHANNEL_RECEIVER_CONFIG, nackRepairLimitMs } from '../../src/core/channel-receiver';
import type { MembershipConfig } from '../../src/core/membership';
import type { NodeCoreConfig } from '../../src/core/node-core';
import type { StoreConfig } from '../../src/store/store';
import type { Config } from './config';

/**
 * A dead or departed member stays in the table (listed by Status, probed so a return is
 * noticed) for max(FORGET_DEAD_MIN_MS, FORGET_DEAD_AFTER_DEATHS × --dead-after-ms) of
 * silence, then is dropped so the table stays bounded.
 */
export const FORGET_DEAD_MIN_MS = 60_000;
export const FORGET_DEAD_AFTER_DEATHS = 4;

/**
 * A note rides on acknowledgements this many heartbeat intervals after the first carried
 * it: a lost acknowledgement is asked for again only by the sender's next heartbeat.
 */
export const NOTE_RETENTION_HEARTBEATS = 4;

/**
 * Partly reassembled deltas are kept at least this long (ms), and at least twice a
 * heartbeat (which reveals a lost last fragment) plus the NACK repair limit: a fragment
 * still missing then is repaired by the resync the expiry starts, not by waiting longer.
 */
export const REASSEMBLY_TIMEOUT_MIN_MS = 10_000;

/**
 * Each sender may hold room for this many of the largest values partly reassembled at once
 * (fragments of several writes interleave while losses are repaired), and at least
 * REASSEMBLY_BUDGET_MIN_BYTES; beyond it its channels resync instead of holding more memory.
 */
export const REASSEMBLY_BUDGET_VALUES = 8;
export const REASSEMBLY_BUDGET_MIN_BYTES = 16 * 1024 * 1024;

/** The failure detector's timings. */
export function membershipConfig(config: Config): MembershipConfig {
  return {
    heartbeatIntervalMs: config.heartbeatIntervalMs,
    suspectAfterMs: config.suspectAfterMs,
    deadAfterMs: config.deadAfterMs,
    forgetDeadAfterMs: Math.max(FORGET_DEAD_MIN_MS, FORGET_DEAD_AFTER_DEATHS * config.deadAfterMs),
  };
}

/** Every channel receiver's timings: the NACK options, the rest the receiver's defaults. */
export function channelReceiverConfig(config: Config): ChannelReceiverConfig {
  return {
    ...DEFAULT_CHANNEL_RECEIVER_CONFIG,
    reorderAllowanceMs: config.nackDelayMs,
    nackRetryMs: config.nackRetryMs,
    multicastBackoffMs: config.nackMulticastBackoffMs,
    noteRetentionMs: NOTE_RETENTION_HEARTBEATS * config.heartbeatIntervalMs,
  };
}

/**
 * How often --peers-dns is re-resolved: it only finds new pods (heartbeats notice departed
 * ones), and CoreDNS answers cluster names with a 5 s TTL, so asking more often sees nothing new.
 */
export const DNS_REFRESH_MS = 5000;

/** The node core's configuration: the options, and what binding the peer address decided. */
export function nodeCoreConfig(
  config: Config,
  bound: { advertiseAddress: string; incarnation: bigint; maxPayloadBytes: number },
): NodeCoreConfig {
  return {
    nodeId: config.nodeId,
    advertiseAddress: bound.advertiseAddress,
    incarnation: bound.incarnation,
    partitions: config.partitions,
    replicas: config.replicas,
    priority: config.priority,
    quorum: config.quorum,
    transport: config.multicast === undefined ? 'unicast' : 'multicast',
    maxPayloadBytes: bound.maxPayloadBytes,
    retransmitBufferBytes: config.retransmitBufferBytes,
    sendWindowBytes: config.sendWindowBytes,
    ...reassemblyLimits(config),
    receiver: channelReceiverConfig(config),
    membership: membershipConfig(config),
    seeds: config.peers,
    seedRefreshMs: config.peersDns === undefined ? 0 : DNS_REFRESH_MS,
    antiEntropyIntervalMs: config.antiEntropyIntervalSeconds * 1000,
    injectLossPercent: config.injectLossPercent,
    limits: { maxValueBytes: config.maxValueBytes, maxPartsPerSession: config.maxPartsPerSession },
    role: config.role,
    multicastGroups: Math.max(1, config.multicastGroups.length),
    multicastGroupAddresses: config.multicastGroups.map((g) => `${g.group}:${g.port}`),
  };
}

/** The store's configuration from the options (expiry swept at 1 s resolution). */
export function storeConfig(config: Config): StoreConfig {
  return {
    nodeId: config.nodeId,
    partitions: config.partitions,
    defaultTtlMs: config.defaultTtlSeconds * 1000,
    maxBytes: config.maxMemoryBytes,
    maxPartsPerSession: config.maxPartsPerSession,
    tombstoneRetentionMs: config.tombstoneRetentionSeconds * 1000,
    expiryResolutionMs: 1000,
  };
}

/** Bounds on fragment reassembly, per sender. */
export function reassemblyLimits(config: Config): { maxReassemblyBytes: number; reassemblyTimeoutMs: number } {
  const repairMs = config.heartbeatIntervalMs + nackRepairLimitMs(channelReceiverConfig(config));
  return {
    maxReassemblyBytes: Math.max(REASSEMBLY_BUDGET_VALUES * config.maxValueBytes, REASSEMBLY_BUDGET_MIN_BYTES),
    reassemblyTimeoutMs: Math.max(REASSEMBLY_TIMEOUT_MIN_MS, 2 * repairMs),
  };
}

