/**
 * --config-from-peers: a new node starts with only its peers (--peers, --peers-dns) and the
 * cluster key, and adopts the cluster's cluster-critical settings — partitions, replicas,
 * the hash seed (--cluster-seed, or "derived from the first cluster key") and the
 * multicast groups — from them before it serves.
 *
 * The exchange: PeerService.ClusterSettings, asked of every peer address at once, over the
 * peer gRPC service's mutual TLS (so only a holder of the cluster key asks or answers; on
 * loopback without a key it is plaintext, like every peer call). Rounds repeat every
 * ROUND_INTERVAL_MS until some peer answered, for at most CONFIG_FROM_PEERS_LIMIT_MS:
 * - nobody answered by then: refuse to start;
 * - the peers that answered disagree (their overall config digests differ): refuse to
 *   start, naming the peers and the settings they differ in — never pick a side;
 * - else adopt what they answered. The node's own address in --peers answers nothing (it
 *   is not listening yet) and is simply not counted.
 * Every refusal is a ConfigError (exit 2) whose message names the option.
 */
import { promises as dns } from 'node:dns';
import type { ClusterKey } from '../../src/wire/cluster-key';
import type { ClusterSettingsResponse } from '../../src/gen/baton/v1/peer';
import { ConfigError } from '../../src/wire/errors';
import type { Config } from '../config/config';
import { PeerClients, PeerCredentials, peerTlsFor } from './peer-service';

/** The longest a node waits for a peer to answer before refusing to start (ms). */
export const CONFIG_FROM_PEERS_LIMIT_MS = 15_000;
/** Pause between two rounds of asking every peer (ms). */
const ROUND_INTERVAL_MS = 500;
/** Deadline of one ClusterSettings call (ms). */
const CALL_DEADLINE_MS = 2000;

/** What was adopted, for the log. */
export interface Adopted {
  from: string[];
  partitions: number;
  replicas: number;
  clusterSeed: 'given' | 'derived from the first cluster key';
  multicastGroups: string[];
}

/** Asks the peers for the cluster's settings and returns `config` with them adopted. */
export async function adoptClusterSettings(
  config: Config,
  keys: ClusterKey[] | undefined,
  limitMs = CONFIG_FROM_PEERS_LIMIT_MS,
): Promise<{ config: Config; adopted: Adopted }> {
  const clients = new PeerClients(new PeerCredentials(peerTlsFor(config, keys, Date.now())));
  const until = Date.now() + limitMs;
  const failures = new Map<string, string>();
  try {
    for (;;) {
      const addresses = await peerAddresses(config);
      const answers = await Promise.all(
        addresses.map((address) =>
          clients.clusterSettings(address, CALL_DEADLINE_MS).then(
            (answer) => ({ address, answer }),
            (err: unknown) => {
              failures.set(address, (err as Error).message.split('\n')[0]!);
              return undefined;
            },
          ),
        ),
      );
      const answered = answers.filter((a): a is { address: string; answer: ClusterSettingsResponse } => a !== undefined);
      if (answered.length > 0) return adopt(config, answered);
      if (Date.now() + ROUND_INTERVAL_MS >= until) {
        const tried = [...failures].map(([address, error]) => `${address}: ${error}`).join('; ');
        throw new ConfigError(
          `--config-from-peers: no peer answered with the cluster's settings within ${Math.round(limitMs / 1000)} s (${tried || 'no peer address to ask'}); ` +
            'check --peers / --peers-dns and that this node has the cluster key',
        );
      }
      await new Promise((resolve) => setTimeout(resolve, ROUND_INTERVAL_MS));
    }
  } finally {
    clients.close();
  }
}

function adopt(config: Config, answered: { address: string; answer: ClusterSettingsResponse }[]): { config: Config; adopted: Adopted } {
  const first = answered[0]!;
  const other = answered.find((a) => a.answer.configDigest !== first.answer.configDigest);
  if (other !== undefined) {
    throw new ConfigError(
      `--config-from-peers: the peers disagree on the cluster's settings: ${describe(first)} but ${describe(other)} ` +
        `(they differ in ${differing(first.answer, other.answer).join(', ') || 'their configuration digest'}); fix the cluster before adding nodes to it`,
    );
  }
  const { partitions, replicas, clusterSeed, multicastGroups } = first.answer;
  const groups = multicastGroups.map((text) => {
    const colon = text.lastIndexOf(':');
    return { group: text.slice(0, colon), port: Number(text.slice(colon + 1)) };
  });
  return {
    config: {
      ...config,
      partitions,
      replicas,
      clusterSeed,
      multicastGroups: groups,
      multicast: groups[0],
    },
    adopted: {
      from: answered.map((a) => `${a.answer.nodeId} (${a.address})`),
      partitions,
      replicas,
      clusterSeed: clusterSeed === '' ? 'derived from the first cluster key' : 'given',
      multicastGroups,
    },
  };
}

function describe({ address, answer }: { address: string; answer: ClusterSettingsResponse }): string {
  return `${answer.nodeId} (${address}) runs ${answer.partitions} partitions, ${answer.replicas} replicas, ${answer.multicastGroups.length === 0 ? 'unicast' : `groups ${answer.multicastGroups.join(',')}`}`;
}

function differing(a: ClusterSettingsResponse, b: ClusterSettingsResponse): string[] {
  const names: string[] = [];
  if (a.partitions !== b.partitions) names.push('partitions');
  if (a.replicas !== b.replicas) names.push('replicas');
  if (a.clusterSeed !== b.clusterSeed) names.push('hash_seed');
  if (a.protocolVersion !== b.protocolVersion) names.push('protocol_version');
  if (a.multicastGroups.join(',') !== b.multicastGroups.join(',')) names.push('multicast_groups');
  return names;
}

/** --peers, and the addresses --peers-dns resolves to now. */
async function peerAddresses(config: Config): Promise<string[]> {
  const addresses = new Set(config.peers);
  if (config.peersDns !== undefined) {
    const { name, port } = config.peersDns;
    try {
      for (const answer of await dns.lookup(name, { all: true, family: 4 })) addresses.add(`${answer.address}:${port}`);
    } catch {
      // Not resolvable yet (a Service without ready pods): the next round asks again.
    }
  }
  return [...addresses];
}
