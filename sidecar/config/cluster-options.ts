/**
 * The cluster-shape options: a node's role (--role), the multicast groups partitions map
 * to (--multicast-groups) and --config-from-peers. Part of the sidecar's one option table
 * (config.ts spreads CLUSTER_OPTIONS into it), kept here so the table stays readable.
 * checkClusterConfig runs once at start-up after every value parsed, and refuses the
 * combinations that cannot work, naming the flags.
 */
import { ConfigError } from '../../src/wire/errors';
import type { Config, OptionSpec } from './config';
import { bad, envName } from './option-parsing';

/** What a node is for: beside a web server (edge), or holding replicas only (store). */
export type NodeRoleOption = 'edge' | 'store';

/** Most multicast groups one cluster may use. */
export const MAX_MULTICAST_GROUPS = 64;

export interface ClusterShapeConfig {
  /** edge: serves and owns sessions; store: holds replicas, refuses application calls. */
  role: NodeRoleOption;
  /**
   * The multicast groups partition p's deltas go to (group p mod K); empty = one group
   * (--multicast) or unicast. Set from --multicast-groups; --multicast is one group.
   */
  multicastGroups: { group: string; port: number }[];
  /** Start with only peers and the key, and adopt partitions, replicas, seed and groups from them. */
  configFromPeers: boolean;
}

/** Parses one IPv4 multicast group:port, naming the flag when it is not one. */
export function parseMulticastGroup(value: string, flag: string): { group: string; port: number } {
  const m = /^(\d+\.\d+\.\d+\.\d+):(\d{1,5})$/.exec(value);
  const octets = m === null ? [] : m[1]!.split('.').map(Number);
  const valid = m !== null && octets.every((o) => o <= 255) && octets[0]! >= 224 && octets[0]! <= 239 && Number(m[2]) > 0 && Number(m[2]) <= 65535;
  if (!valid) throw bad(flag, value, 'expected an IPv4 multicast group (224.0.0.0/4) and port, e.g. 239.1.2.3:7402');
  return { group: m[1]!, port: Number(m[2]) };
}

export const CLUSTER_OPTIONS: readonly OptionSpec[] = [
  {
    flag: 'role',
    key: 'role',
    valueName: 'role',
    description:
      'edge (beside a web server: serves and owns sessions) or store (no web server: holds replicas, preferred for secondaries, answers application calls with FAILED_PRECONDITION)',
    default: () => 'edge',
    parse: (v, flag) => {
      if (v !== 'edge' && v !== 'store') throw bad(flag, v, 'use edge or store');
      return v;
    },
  },
  {
    flag: 'multicast-groups',
    key: 'multicastGroups',
    valueName: 'list',
    description:
      'replicate over IP multicast to K groups, group:port,group:port,…; partition p goes to group p mod K and a node joins only the groups of partitions it holds (instead of --multicast); must match cluster-wide',
    default: () => '',
    parse: (v, flag) => {
      if (v === '') return [];
      const groups = v.split(',').map((g) => parseMulticastGroup(g.trim(), flag));
      if (groups.length > MAX_MULTICAST_GROUPS) throw bad(flag, v, `at most ${MAX_MULTICAST_GROUPS} groups`);
      const seen = new Set(groups.map((g) => `${g.group}:${g.port}`));
      if (seen.size !== groups.length) throw bad(flag, v, 'a group is listed twice');
      return groups;
    },
  },
  {
    flag: 'config-from-peers',
    key: 'configFromPeers',
    valueName: undefined,
    description:
      "adopt the cluster's partitions, replicas, hash seed and multicast groups from the peers (--peers or --peers-dns) before serving; start with only the peers and the cluster key",
    default: () => 'false',
    parse: (v, flag) => {
      if (!['true', 'false', '1', '0', ''].includes(v)) throw bad(flag, v, 'expected true or false');
      return v === 'true' || v === '1' || v === '';
    },
  },
];

/** Refuses option combinations of the cluster shape that cannot work. */
export function checkClusterConfig(config: Config): void {
  const named = (flag: string) => `--${flag} (${envName(flag)})`;
  if (config.multicastGroups.length > 0 && config.multicast !== undefined) {
    throw new ConfigError(`${named('multicast')} and ${named('multicast-groups')} exclude each other: give the one group as --multicast-groups`);
  }
  if (config.multicastGroups.length === 0 && config.multicast !== undefined) config.multicastGroups = [config.multicast];
  // --multicast stays the first group: it is what says "multicast mode" everywhere else.
  if (config.multicast === undefined && config.multicastGroups.length > 0) config.multicast = config.multicastGroups[0];
  if (config.role === 'store' && config.proxyListen !== undefined) {
    throw new ConfigError(`--role store has no web server: ${named('proxy-listen')} cannot be used with it (run the proxy on edge nodes)`);
  }
  if (config.configFromPeers && config.peers.length === 0 && config.peersDns === undefined) {
    throw new ConfigError(`${named('config-from-peers')} needs peers to ask: set --peers or --peers-dns`);
  }
}
