/**
 * Digests of the cluster-critical configuration, one per setting, so that a node whose
 * configuration differs is refused with the setting(s) named, never silently divergent.
 *
 * Settings (the names are the protocol: heartbeats carry them, metrics label by them):
 * - partitions: --partitions (sessions map to buzhash64(id) mod P);
 * - replicas: --replicas (placement's holder count);
 * - hash_seed: the BUZhash table (from --cluster-seed or the first cluster key); digested
 *   from the table, never from the secret;
 * - protocol_version: the datagram format version;
 * - multicast_groups: the multicast groups in order (partition p → group p mod K), or none
 *   (unicast fan-out);
 * - cluster_key: the id of the key this node seals with (0 without a key).
 *
 * Rules:
 * - The overall digest (Heartbeat.config_digest) covers every setting but cluster_key, and
 *   a node is refused when it differs. A heartbeat that opened was sealed with a key this
 *   node accepts, and a rolling key rotation passes through nodes that seal with different
 *   keys, so a differing cluster_key alone is no reason to refuse; it is named beside the
 *   others when a node is refused.
 * - A peer that sends no per-setting digests (a node from before them) is refused with
 *   the setting "unknown" when its overall digest differs.
 */
import { createHash } from 'node:crypto';
import type { BuzHash } from '../store/buzhash';
import type { SettingDigest } from '../gen/baton/v1/wire';

export const CLUSTER_SETTINGS = ['partitions', 'replicas', 'hash_seed', 'protocol_version', 'multicast_groups', 'cluster_key'] as const;
export type ClusterSetting = (typeof CLUSTER_SETTINGS)[number];

/** Named when a peer differs in its overall digest but sent no per-setting digests. */
export const UNKNOWN_SETTING = 'unknown';

/** The settings that refuse a peer when they differ (every one but cluster_key, see above). */
const REFUSING: readonly ClusterSetting[] = CLUSTER_SETTINGS.filter((s) => s !== 'cluster_key');

export interface ClusterSettingValues {
  partitions: number;
  replicas: number;
  hasher: BuzHash;
  protocolVersion: number;
  /** The multicast groups as group:port, in order; empty for unicast. */
  multicastGroups: readonly string[];
  /** Id of the sealing cluster key; 0 without a key. */
  clusterKeyId: number;
}

/** One digest per setting. */
export function settingDigests(values: ClusterSettingValues): Map<ClusterSetting, bigint> {
  const table: number[] = [];
  for (let i = 0; i < 256; i += 7) table.push(values.hasher.tableHi[i]!, values.hasher.tableLo[i]!);
  return new Map<ClusterSetting, bigint>([
    ['partitions', digestOf('partitions', String(values.partitions))],
    ['replicas', digestOf('replicas', String(values.replicas))],
    ['hash_seed', digestOf('hash_seed', table.join(','))],
    ['protocol_version', digestOf('protocol_version', String(values.protocolVersion))],
    ['multicast_groups', digestOf('multicast_groups', values.multicastGroups.join(','))],
    ['cluster_key', digestOf('cluster_key', String(values.clusterKeyId))],
  ]);
}

/** The overall digest: every refusing setting's digest, in order. */
export function overallDigest(digests: ReadonlyMap<ClusterSetting, bigint>): bigint {
  return digestOf('config', REFUSING.map((s) => digests.get(s)!.toString(16)).join(','));
}

/** The overall digest of a configuration (what a peer's heartbeat must carry to be accepted). */
export function clusterConfigDigest(values: ClusterSettingValues): bigint {
  return overallDigest(settingDigests(values));
}

/** The digests as a heartbeat carries them. */
export function toWire(digests: ReadonlyMap<ClusterSetting, bigint>): SettingDigest[] {
  return [...digests].map(([setting, digest]) => ({ setting, digest }));
}

/**
 * The settings in which a peer's digests differ from ours, in CLUSTER_SETTINGS order
 * (names it sent that are unknown here are left out); [UNKNOWN_SETTING] when it sent none
 * or none of ours differs (its overall digest does, or it would not be asked).
 */
export function differingSettings(ours: ReadonlyMap<ClusterSetting, bigint>, theirs: readonly SettingDigest[]): string[] {
  const sent = new Map(theirs.map((d) => [d.setting, d.digest]));
  const differing = CLUSTER_SETTINGS.filter((setting) => sent.has(setting) && sent.get(setting) !== ours.get(setting));
  return differing.length > 0 && differing.some((s) => s !== 'cluster_key') ? differing : [UNKNOWN_SETTING, ...differing];
}

function digestOf(setting: string, value: string): bigint {
  return createHash('sha256').update(`baton config ${setting}\0${value}`).digest().readBigUInt64BE(0);
}
