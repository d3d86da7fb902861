/**
 * The sidecar's configuration: one table of options, each a command-line flag and a
 * BATON_* environment variable, with its unit and default. Parsed and validated once at
 * start-up; every error names the flag (and variable) to fix. The network timings take
 * their defaults from --preset (NETWORK_PRESETS), and an option given explicitly wins; the
 * settings the cores need beyond the options are derived here, each by a named rule.
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { parseClusterKeys } from '../../src/wire/cluster-key';
import { ConfigError } from '../../src/wire/errors';
import { peerTlsFromPem } from '../../src/wire/peer-tls';
import { MAX_TTL_SECONDS } from '../../src/wire/validation';
import { bad, envName, isLoopbackHost, parseInteger, parseListen } from './option-parsing';
import { checkProxyConfig, PROXY_OPTIONS, type ProxyConfig } from './proxy-options';
import { checkClusterConfig, CLUSTER_OPTIONS, parseMulticastGroup, type ClusterShapeConfig } from './cluster-options';
export * from './core-config';

export { envName, isLoopbackHost, parseListen };

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export interface Config extends ProxyConfig, ClusterShapeConfig {
  /** This node's id in the cluster; default: the host name (a pod's name on Kubernetes). */
  nodeId: string;
  /** Where the session API (gRPC) listens: host:port or unix:/path. */
  apiListen: ListenAddress;
  /** Where /metrics, /healthz and /readyz are served (HTTP): host:port. */
  metricsListen: ListenAddress;
  /** Where the session API is served as HTTP/JSON: host:port; undefined = off. */
  httpListen: ListenAddress | undefined;
  /** Where the Redis-protocol endpoint listens: a loopback host:port or unix:/path; undefined = off. */
  respListen: ListenAddress | undefined;
  /** Memory budget for session state in bytes (from --max-memory-mb); 0 = unlimited. */
  maxMemoryBytes: number;
  /** Idle expiry for sessions written without a TTL, in seconds. */
  defaultTtlSeconds: number;
  /** Largest part value accepted, in bytes. */
  maxValueBytes: number;
  /** Most parts one session may hold. */
  maxPartsPerSession: number;
  /** Partitions P (sessions map to buzhash64(id) mod P); must match cluster-wide. */
  partitions: number;
  /** How long tombstones of deleted or expired sessions are kept, in seconds. */
  tombstoneRetentionSeconds: number;
  /** Seconds a SIGTERM waits for in-flight calls before the process exits anyway. */
  drainTimeoutSeconds: number;
  antiEntropyIntervalSeconds: number;
  /** How long each TLS ticket key issues tickets, in ms (from --tls-ticket-rotation-minutes, fractions allowed). */
  tlsTicketRotationMs: number;
  /** How long a TLS session (ticket or session-ID entry) stays resumable, in seconds. */
  tlsSessionLifetimeSeconds: number;
  logLevel: LogLevel;
  /** UDP replication and the peer gRPC service: host:port (the same port number for both). */
  peerListen: ListenAddress;
  /** host:port peers use to reach this node; '' = the peer-listen address. */
  advertiseAddress: string;
  /** Static peer list (host:port), possibly including this node. */
  peers: string[];
  /** A DNS name (a Kubernetes headless Service) and port, resolved at start and every few seconds. */
  peersDns: { name: string; port: number } | undefined;
  /** Secondaries per session; 0 = every other member. */
  replicas: number;
  /** Stated capacity (computing power, bandwidth): a higher priority wins partition master elections. */
  priority: number;
  /** Fewest members (this node included) a node must hear to acknowledge writes and claim sessions; 0 = off. */
  quorum: number;
  /** IP multicast group and port; undefined = unicast fan-out. */
  multicast: { group: string; port: number } | undefined;
  /** Local interface address for multicast; '' = the peer-listen host. */
  multicastInterface: string;
  /** Multicast TTL (hops); 1 keeps datagrams on the local network. */
  multicastTtl: number;
  /** Largest datagram sent, in bytes (IP and UDP headers excluded). */
  maxDatagramBytes: number;
  /** Retransmit buffer bound per channel, in bytes (from --retransmit-buffer-mb). */
  retransmitBufferBytes: number;
  /** Send window per channel, in bytes (from --send-window-kb); 0 = none. */
  sendWindowBytes: number;
  /** Text of the cluster key file or variable (one base64 key per line); '' = no key. */
  clusterKeys: string;
  /** Where clusterKeys came from, for error messages. */
  clusterKeySource: string;
  /** Secret string the BUZhash table derives from; '' = derived from the first cluster key. */
  clusterSeed: string;
  /** Allow peer traffic on a non-loopback address (--peer-listen, --multicast-interface) without a cluster key. */
  insecure: boolean;
  /** Paths of the peer TLS trust bundle, certificate (chain) and key; '' = not given (all three or none). */
  peerTlsCaFile: string;
  peerTlsCertFile: string;
  peerTlsKeyFile: string;
  /** The three files' contents (PEM), read and checked by parseConfig; undefined = derive from the cluster key. */
  peerTlsFiles: { ca: string; cert: string; key: string } | undefined;
  /** Which NETWORK_PRESETS row the timings below default to; an explicit option wins over it. */
  preset: PresetName;
  /** Interval of heartbeats to every peer (ms). */
  heartbeatIntervalMs: number;
  /** Silence after which a peer is suspect (ms). */
  suspectAfterMs: number;
  /** Silence after which a peer is dead and its partitions move (ms). */
  deadAfterMs: number;
  /** Wait before NACKing a gap, so reordered datagrams can arrive (ms). */
  nackDelayMs: number;
  /** First repeat of an unanswered NACK (ms); doubles per attempt, capped at 16×. */
  nackRetryMs: number;
  /** Upper bound of the random back-off before a NACK on multicast (ms). */
  nackMulticastBackoffMs: number;
  /** Percentage of received replication datagrams dropped on purpose (tests and benchmarks). */
  injectLossPercent: number;
  /** Send datagrams in a row to one destination as one segmented send (UDP_SEGMENT) where the kernel takes it. */
  udpSegmentation: boolean;
}

export interface ListenAddress {
  /** As given, for logs and errors. */
  text: string;
  /** host for TCP; undefined for a Unix socket. */
  host?: string;
  port?: number;
  /** Unix socket path. */
  path?: string;
}

export interface OptionSpec {
  /** Flag without dashes, kebab-case; the env variable is BATON_ + upper snake case. */
  flag: string;
  key: keyof Config;
  /** Undefined for a boolean flag (present = true). */
  valueName: string | undefined;
  description: string;
  default: () => string;
  /** The default comes from the chosen --preset (NETWORK_PRESETS); `default` is the lan value. */
  fromPreset?: true;
  parse: (value: string, flag: string) => Config[keyof Config];
}

export type PresetName = 'lan' | 'local' | 'wan';
export type NetworkTimings = Pick<
  Config,
  'heartbeatIntervalMs' | 'suspectAfterMs' | 'deadAfterMs' | 'nackDelayMs' | 'nackRetryMs' | 'nackMulticastBackoffMs'
>;

export const DEFAULT_PRESET: PresetName = 'lan';

/**
 * The timings that depend on the network between nodes, chosen as a group by --preset; an
 * option given explicitly (flag or variable) wins over its preset. Every node of a cluster
 * should use the same values. Failure detection trades how soon a dead node's partitions
 * move against how often a live but stalled one (a GC pause, a full receive buffer, a loss
 * burst) is declared dead and has its partitions moved and pulled for nothing. A NACK
 * should wait out reordering, and be repeated only once a repair could have come back (a
 * round trip); a gap is NACKed 10 times (111 × the retry in all) before the channel resyncs.
 *
 * - lan (the default): one data centre or zone, round trips well under 1 ms, little
 *   reordering. Heartbeats every 250 ms, suspect after 1 s (4 missed), dead after 3 s (12
 *   missed). NACK after 2 ms, repeated after 10 ms (~1.1 s before resyncing); on multicast
 *   a back-off of up to 4 ms lets one receiver's NACK (overheard) stand for the others.
 * - local: every node on one machine (loopback: development, tests, demos). Nothing is in
 *   flight long, so detection is faster: 100 ms / 500 ms / 1.5 s, the timings
 *   bench:failover runs four loaded nodes on two shared cores with. Loopback does not
 *   reorder (a gap is a datagram a full buffer dropped): NACK after 1 ms (timer
 *   granularity), repeat after 5 ms — above the sender's 3 ms repair hold-off, which
 *   would swallow a faster repeat; back-off up to 2 ms.
 * - wan: nodes in different regions, round trips of 20–150 ms with jitter and loss bursts
 *   of a second or more. A false death moves partitions and starts state transfers across
 *   the WAN, which costs more than noticing a real death seconds later: heartbeats every
 *   500 ms, suspect after 3 s (6 missed), dead after 10 s (20 missed). NACK after 10 ms
 *   (paths reorder), repeated after 50 ms: doubling, the third repeat waits out a 150 ms
 *   round trip, and ten NACKs take ~5.8 s (the reassembly timeout grows
 *   to 12.6 s to outlast them, see reassemblyLimits); back-off up to 20 ms (receivers'
 *   delays differ more).
 */
export const NETWORK_PRESETS: Readonly<Record<PresetName, Readonly<NetworkTimings>>> = {
  lan: { heartbeatIntervalMs: 250, suspectAfterMs: 1000, deadAfterMs: 3000, nackDelayMs: 2, nackRetryMs: 10, nackMulticastBackoffMs: 4 },
  local: { heartbeatIntervalMs: 100, suspectAfterMs: 500, deadAfterMs: 1500, nackDelayMs: 1, nackRetryMs: 5, nackMulticastBackoffMs: 2 },
  wan: { heartbeatIntervalMs: 500, suspectAfterMs: 3000, deadAfterMs: 10_000, nackDelayMs: 10, nackRetryMs: 50, nackMulticastBackoffMs: 20 },
};

const PRESET_NAMES = Object.keys(NETWORK_PRESETS) as PresetName[];

/** Help text for an option whose default is its preset's: every preset's value. */
export function presetDefaultText(key: keyof NetworkTimings): string {
  return 'by --preset: ' + PRESET_NAMES.map((name) => `${name} ${NETWORK_PRESETS[name][key]}`).join(', ') + '; given explicitly, this wins';
}

/** An option that defaults to its --preset value (the lan one, the default preset, in `default`). */
function presetOption(
  flag: string,
  key: keyof NetworkTimings,
  description: string,
  min: number,
  max: number,
): OptionSpec {
  return {
    flag,
    key,
    valueName: 'ms',
    description,
    default: () => String(NETWORK_PRESETS[DEFAULT_PRESET][key]),
    fromPreset: true,
    parse: (v, f) => parseInteger(v, f, min, max),
  };
}

export const SIDECAR_OPTIONS: readonly OptionSpec[] = [
  {
    flag: 'node-id',
    key: 'nodeId',
    valueName: 'id',
    description: "this node's id in the cluster",
    default: () => hostname(),
    parse: (v, flag) => {
      if (!/^[A-Za-z0-9._:-]{1,128}$/.test(v)) throw bad(flag, v, 'use 1 to 128 characters from A-Z a-z 0-9 . _ : -');
      return v;
    },
  },
  {
    flag: 'api-listen',
    key: 'apiListen',
    valueName: 'addr',
    description: 'session API (gRPC) address: host:port or unix:/path',
    default: () => '127.0.0.1:7400',
    parse: (v, flag) => parseListen(v, flag, true),
  },
  {
    flag: 'metrics-listen',
    key: 'metricsListen',
    valueName: 'addr',
    description: 'HTTP address for /metrics, /healthz, /readyz and the status page (/)',
    default: () => '127.0.0.1:9464',
    parse: (v, flag) => parseListen(v, flag, false),
  },
  {
    flag: 'http-listen',
    key: 'httpListen',
    valueName: 'addr',
    description: "session API as HTTP/JSON (push, pull, long-poll): host:port, or 'off'",
    default: () => '127.0.0.1:7402',
    parse: (v, flag) => (v === 'off' ? undefined : parseListen(v, flag, false)),
  },
  {
    flag: 'resp-listen',
    key: 'respListen',
    valueName: 'addr',
    description: 'Redis-protocol endpoint (RESP2/RESP3, no authentication): a loopback host:port or unix:/path; empty = off',
    default: () => '',
    parse: (v, flag) => {
      if (v === '') return undefined;
      const address = parseListen(v, flag, true);
      if (address.host !== undefined && !isLoopbackHost(address.host)) {
        throw bad(flag, v, 'the Redis endpoint has no authentication: use a loopback address (127.0.0.1, ::1, localhost) or unix:/path; containers of one pod share loopback');
      }
      return address;
    },
  },
  {
    flag: 'max-memory-mb',
    key: 'maxMemoryBytes',
    valueName: 'MiB',
    description: 'memory budget for session state; least recently used sessions are evicted beyond it (0 = unlimited)',
    default: () => '512',
    parse: (v, flag) => parseInteger(v, flag, 0, 1 << 20) * 1024 * 1024,
  },
  {
    flag: 'default-ttl-seconds',
    key: 'defaultTtlSeconds',
    valueName: 's',
    description: 'idle expiry of sessions written without a TTL',
    default: () => '1800',
    parse: (v, flag) => parseInteger(v, flag, 1, MAX_TTL_SECONDS),
  },
  {
    flag: 'max-value-bytes',
    key: 'maxValueBytes',
    valueName: 'bytes',
    description: 'largest part value accepted',
    default: () => String(1024 * 1024),
    parse: (v, flag) => parseInteger(v, flag, 1, 64 * 1024 * 1024),
  },
  {
    flag: 'max-parts-per-session',
    key: 'maxPartsPerSession',
    valueName: 'n',
    description: 'most parts one session may hold',
    default: () => '64',
    parse: (v, flag) => parseInteger(v, flag, 1, 4096),
  },
  {
    flag: 'partitions',
    key: 'partitions',
    valueName: 'n',
    description: 'partitions P (sessions map to buzhash64(id) mod P); must match cluster-wide',
    default: () => '256',
    parse: (v, flag) => parseInteger(v, flag, 1, 65536),
  },
  {
    flag: 'tombstone-retention-seconds',
    key: 'tombstoneRetentionSeconds',
    valueName: 's',
    description: 'how long deleted and expired sessions leave tombstones',
    default: () => '300',
    parse: (v, flag) => parseInteger(v, flag, 1, 7 * 24 * 3600),
  },
  {
    flag: 'drain-timeout-seconds',
    key: 'drainTimeoutSeconds',
    valueName: 's',
    description: 'on SIGTERM/SIGINT, the longest drain: in-flight calls, then acknowledgement of every replicated change, then leave',
    default: () => '20',
    parse: (v, flag) => parseInteger(v, flag, 0, 3600),
  },
  {
    flag: 'tls-ticket-rotation-minutes',
    key: 'tlsTicketRotationMs',
    valueName: 'min',
    description: 'how long each cluster-wide TLS ticket key issues tickets before the next takes over (fractions allowed, from 0.05)',
    default: () => '720',
    parse: (v, flag) => {
      if (!/^\d+(\.\d+)?$/.test(v) || Number(v) < 0.05 || Number(v) > MAX_TICKET_ROTATION_MINUTES) {
        throw bad(flag, v, `expected minutes from 0.05 to ${MAX_TICKET_ROTATION_MINUTES}`);
      }
      return Math.round(Number(v) * 60_000);
    },
  },
  {
    flag: 'tls-session-lifetime-seconds',
    key: 'tlsSessionLifetimeSeconds',
    valueName: 's',
    description: 'how long a TLS session stays resumable: TTL of TLS 1.2 session-ID entries, and how long a retired ticket key is still accepted',
    default: () => '300',
    parse: (v, flag) => parseInteger(v, flag, 1, 7 * 24 * 3600),
  },
  {
    flag: 'log-level',
    key: 'logLevel',
    valueName: 'level',
    description: 'fatal, error, warn, info, debug, trace or silent',
    default: () => 'info',
    parse: (v, flag) => {
      const levels = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
      if (!levels.includes(v)) throw bad(flag, v, `use one of ${levels.join(', ')}`);
      return v as LogLevel;
    },
  },
  {
    flag: 'peer-listen',
    key: 'peerListen',
    valueName: 'addr',
    description: 'UDP replication and peer gRPC address (same port number for both): host:port',
    default: () => '127.0.0.1:7401',
    parse: (v, flag) => parseListen(v, flag, false),
  },
  {
    flag: 'advertise-address',
    key: 'advertiseAddress',
    valueName: 'addr',
    description: "host:port peers use to reach this node (default: the peer-listen address)",
    default: () => '',
    parse: (v, flag) => (v === '' ? '' : checkHostPort(v, flag)),
  },
  {
    flag: 'peers',
    key: 'peers',
    valueName: 'list',
    description: 'static peers, host:port,host:port,… (may include this node)',
    default: () => '',
    parse: (v, flag) => (v === '' ? [] : v.split(',').map((p) => checkHostPort(p.trim(), flag))),
  },
  {
    flag: 'peers-dns',
    key: 'peersDns',
    valueName: 'name:port',
    description: 'DNS name whose addresses are peers (a Kubernetes headless Service), re-resolved every 5 s',
    default: () => '',
    parse: (v, flag) => {
      if (v === '') return undefined;
      const m = /^([A-Za-z0-9.-]+):(\d{1,5})$/.exec(v);
      if (m === null || Number(m[2]) > 65535 || Number(m[2]) === 0) throw bad(flag, v, 'expected name:port');
      return { name: m[1]!, port: Number(m[2]) };
    },
  },
  {
    flag: 'replicas',
    key: 'replicas',
    valueName: 'n',
    description: 'secondaries each session is replicated to (0 = every other member)',
    default: () => '2',
    parse: (v, flag) => parseInteger(v, flag, 0, 64),
  },
  {
    flag: 'priority',
    key: 'priority',
    valueName: 'n',
    description: "this node's capacity against its peers': a higher priority is preferred as a partition's master (ties: placement rank)",
    default: () => '0',
    parse: (v, flag) => parseInteger(v, flag, 0, 1_000_000),
  },
  {
    flag: 'quorum',
    key: 'quorum',
    valueName: 'n',
    description:
      'fewest members, this node included, a node must hear (within --suspect-after-ms) to acknowledge writes and claim sessions: ' +
      'set a majority of the cluster (e.g. 3 of 5) so that in a network split only the larger side goes on, losing no write every secondary acknowledged; 0 = off',
    default: () => '0',
    parse: (v, flag) => parseInteger(v, flag, 0, 1024),
  },
  {
    flag: 'multicast',
    key: 'multicast',
    valueName: 'group:port',
    description: 'replicate over IP multicast to this group (default: unicast fan-out)',
    default: () => '',
    parse: (v, flag) => (v === '' ? undefined : parseMulticastGroup(v, flag)),
  },
  {
    flag: 'multicast-interface',
    key: 'multicastInterface',
    valueName: 'ip',
    description: 'local interface address for multicast (default: the peer-listen host)',
    default: () => '',
    parse: (v, flag) => {
      if (v !== '' && !/^\d+\.\d+\.\d+\.\d+$/.test(v)) throw bad(flag, v, 'expected an IPv4 address');
      return v;
    },
  },
  {
    flag: 'multicast-ttl',
    key: 'multicastTtl',
    valueName: 'hops',
    description: 'multicast TTL',
    default: () => '1',
    parse: (v, flag) => parseInteger(v, flag, 0, 255),
  },
  {
    flag: 'max-datagram-bytes',
    key: 'maxDatagramBytes',
    valueName: 'bytes',
    description: 'largest replication datagram (deltas are batched up to it; larger ones are fragmented)',
    default: () => '1400',
    parse: (v, flag) => parseInteger(v, flag, 512, 65_000),
  },
  {
    flag: 'retransmit-buffer-mb',
    key: 'retransmitBufferBytes',
    valueName: 'MiB',
    description: 'retransmit buffer per channel; receivers that fall further behind resync',
    default: () => '16',
    parse: (v, flag) => parseInteger(v, flag, 1, 4096) * 1024 * 1024,
  },
  {
    flag: 'send-window-kb',
    key: 'sendWindowBytes',
    valueName: 'KiB',
    description:
      'flow control: bytes of datagrams a channel may have unacknowledged before further deltas wait (conflated per part) for acknowledgements; 0 = no window',
    default: () => '1024',
    parse: (v, flag) => parseInteger(v, flag, 0, 1 << 20) * 1024,
  },
  {
    flag: 'cluster-key-file',
    key: 'clusterKeys',
    valueName: 'path',
    description: 'file of cluster keys (base64, 32 bytes, one per line; the first seals, all open); BATON_CLUSTER_KEY may hold the keys themselves',
    default: () => '',
    parse: (v) => v,
  },
  {
    flag: 'cluster-seed',
    key: 'clusterSeed',
    valueName: 'secret',
    description: 'secret the hash table derives from (default: derived from the first cluster key); pin it before rotating keys',
    default: () => '',
    parse: (v) => v,
  },
  {
    flag: 'insecure',
    key: 'insecure',
    valueName: undefined,
    description:
      'allow peer traffic on a non-loopback address (--peer-listen, --multicast-interface) without a cluster key: datagrams and peer gRPC unencrypted and unauthenticated',
    default: () => 'false',
    parse: (v, flag) => {
      if (!['true', 'false', '1', '0', ''].includes(v)) throw bad(flag, v, 'expected true or false');
      return v === 'true' || v === '1' || v === '';
    },
  },
  {
    flag: 'peer-tls-ca-file',
    key: 'peerTlsCaFile',
    valueName: 'path',
    description: 'PEM bundle of the roots peer certificates must chain to (e.g. ca.crt of a cert-manager Secret); default: roots derived from the cluster keys',
    default: () => '',
    parse: (v) => v,
  },
  {
    flag: 'peer-tls-cert-file',
    key: 'peerTlsCertFile',
    valueName: 'path',
    description: "PEM certificate (chain) this node presents to peers (e.g. tls.crt); with --peer-tls-ca-file and --peer-tls-key-file",
    default: () => '',
    parse: (v) => v,
  },
  {
    flag: 'peer-tls-key-file',
    key: 'peerTlsKeyFile',
    valueName: 'path',
    description: "PEM private key of --peer-tls-cert-file (e.g. tls.key)",
    default: () => '',
    parse: (v) => v,
  },
  {
    flag: 'preset',
    key: 'preset',
    valueName: 'name',
    description:
      'network the failure-detector and NACK timings (--heartbeat-interval-ms, --suspect-after-ms, --dead-after-ms, --nack-*) are chosen for: ' +
      'lan (one data centre), local (every node on one machine) or wan (regions apart); any of them given explicitly wins',
    default: () => DEFAULT_PRESET,
    parse: (v, flag) => {
      if (!(PRESET_NAMES as string[]).includes(v)) throw bad(flag, v, `use one of ${PRESET_NAMES.join(', ')}`);
      return v as PresetName;
    },
  },
  presetOption('heartbeat-interval-ms', 'heartbeatIntervalMs', 'interval of heartbeats to every peer', 10, 60_000),
  presetOption('suspect-after-ms', 'suspectAfterMs', 'a peer not heard from for this long is suspect', 20, 600_000),
  presetOption('dead-after-ms', 'deadAfterMs', 'a peer not heard from for this long is dead (its partitions are re-replicated)', 40, 3_600_000),
  presetOption('nack-delay-ms', 'nackDelayMs', 'wait before NACKing a gap in a channel, for reordered datagrams', 0, 10_000),
  presetOption('nack-retry-ms', 'nackRetryMs', 'first repeat of an unanswered NACK, doubling per attempt up to 16 times it; 10 NACKs before a resync', 1, 60_000),
  presetOption('nack-multicast-backoff-ms', 'nackMulticastBackoffMs', 'upper bound of the random wait before a NACK on multicast', 0, 10_000),
  {
    flag: 'anti-entropy-interval-seconds',
    key: 'antiEntropyIntervalSeconds',
    valueName: 's',
    description: 'how often held partitions are compared with every peer by digest and differences repaired (0 = never)',
    default: () => '30',
    parse: (v, flag) => parseInteger(v, flag, 0, 86_400),
  },
  {
    flag: 'udp-segmentation',
    key: 'udpSegmentation',
    valueName: 'on|off',
    description:
      'hand the kernel datagrams in a row to one destination as one segmented send (UDP_SEGMENT), where it takes them; each still travels as a datagram of its own. With a cluster key, also read a segmented send received as one (UDP_GRO)',
    default: () => 'on',
    parse: (v, flag) => {
      if (['on', 'true', '1'].includes(v)) return true;
      if (['off', 'false', '0'].includes(v)) return false;
      throw bad(flag, v, 'expected on or off');
    },
  },
  {
    flag: 'inject-loss-percent',
    key: 'injectLossPercent',
    valueName: 'percent',
    description: 'drop this share of received replication datagrams on purpose, to test loss repair (never in production)',
    default: () => '0',
    parse: (v, flag) => {
      const n = Number(v);
      if (v === '' || !Number.isFinite(n) || n < 0 || n > 90) throw bad(flag, v, 'expected a number from 0 to 90');
      return n;
    },
  },
  ...CLUSTER_OPTIONS,
  ...PROXY_OPTIONS,
];

/** Environment variables read besides the per-option ones. */
export const CLUSTER_KEY_ENV = 'BATON_CLUSTER_KEY';

function checkHostPort(value: string, flag: string): string {
  const address = parseListen(value, flag, false);
  if (address.port === 0) throw bad(flag, value, 'port 0 is not a reachable address');
  return value;
}

/**
 * Builds a Config from flag values (already merged with the environment by the CLI);
 * missing values take their defaults.
 */
export function parseConfig(
  values: Partial<Record<string, string>>,
  env: NodeJS.ProcessEnv = process.env,
  readFile: (path: string) => string = (path) => readFileSync(path, 'utf8'),
): Config {
  const parsed: Partial<Record<keyof Config, unknown>> = {};
  const presetSpec = SIDECAR_OPTIONS.find((spec) => spec.key === 'preset')!;
  const preset = presetSpec.parse((values[presetSpec.flag] ?? presetSpec.default()).trim(), presetSpec.flag) as PresetName;
  /** Flags whose value is the preset's, for error messages. */
  const fromPreset = new Set<string>();
  for (const spec of SIDECAR_OPTIONS) {
    let raw = values[spec.flag];
    if (raw === undefined && spec.fromPreset === true) {
      raw = String(NETWORK_PRESETS[preset][spec.key as keyof NetworkTimings]);
      fromPreset.add(spec.flag);
    }
    parsed[spec.key] = spec.parse((raw ?? spec.default()).trim(), spec.flag);
  }
  const config = parsed as Config;
  const named = (flag: string, value: number) => `--${flag} (${value}${fromPreset.has(flag) ? `, from --preset ${preset}` : ''})`;
  config.clusterKeySource = '';
  if (config.clusterKeys !== '') {
    const path = config.clusterKeys;
    try {
      config.clusterKeys = readFile(path);
    } catch (err) {
      throw new ConfigError(`cannot read --cluster-key-file (BATON_CLUSTER_KEY_FILE) ${JSON.stringify(path)}: ${(err as Error).message}`);
    }
    config.clusterKeySource = `--cluster-key-file ${path}`;
  } else if ((env[CLUSTER_KEY_ENV] ?? '') !== '') {
    config.clusterKeys = env[CLUSTER_KEY_ENV]!.replace(/[,;]\s*/g, '\n');
    config.clusterKeySource = `${CLUSTER_KEY_ENV} (or --cluster-key-file)`;
  }
  // Parsed here, not first at node start, so a bad key is a configuration error (exit 2).
  if (config.clusterKeys !== '') parseClusterKeys(config.clusterKeys, config.clusterKeySource);
  // Checked on the values in force, after the preset filled in what was not given.
  if (config.deadAfterMs <= config.suspectAfterMs) {
    throw new ConfigError(
      `${named('dead-after-ms', config.deadAfterMs)} must be greater than ${named('suspect-after-ms', config.suspectAfterMs)}`,
    );
  }
  if (config.suspectAfterMs <= config.heartbeatIntervalMs) {
    throw new ConfigError(
      `${named('suspect-after-ms', config.suspectAfterMs)} must be greater than ${named('heartbeat-interval-ms', config.heartbeatIntervalMs)}`,
    );
  }
  // Before the exposure check: --multicast-groups decides --multicast.
  checkClusterConfig(config);
  const exposure = peerExposure(config);
  if (config.clusterKeys === '' && !config.insecure && exposure !== undefined) {
    throw new ConfigError(
      `refusing to ${exposure} without a cluster key: anyone on the network could read ` +
        `and forge replication traffic. Set --cluster-key-file or ${CLUSTER_KEY_ENV}, or pass --insecure`,
    );
  }
  config.peerTlsFiles = readPeerTlsFiles(config, readFile);
  checkProxyConfig(config, readFile);
  return config;
}

/**
 * What of this node's peer traffic leaves the machine, as the refusal and the --insecure
 * warning say it ("bind --peer-listen …", "join --multicast … on --multicast-interface …");
 * undefined when everything stays on loopback.
 */
export function peerExposure(config: Config): string | undefined {
  if (!isLoopbackHost(config.peerListen.host!)) return `bind --peer-listen ${config.peerListen.text}`;
  const multicast = config.multicast;
  if (multicast !== undefined && config.multicastInterface !== '' && !isLoopbackHost(config.multicastInterface)) {
    return `join --multicast ${multicast.group}:${multicast.port} on --multicast-interface ${config.multicastInterface}`;
  }
  return undefined;
}

/** Whether --insecure is what lets this node start: peer traffic leaves loopback with no key. */
export function runsInsecure(config: Config): boolean {
  return config.clusterKeys === '' && peerExposure(config) !== undefined;
}

// --- Settings derived from the options -----------------------------------------------
const PEER_TLS_FLAGS = ['peer-tls-ca-file', 'peer-tls-cert-file', 'peer-tls-key-file'] as const;

/** Reads and checks the three peer TLS files (all or none), naming the flag of whatever is wrong. */
function readPeerTlsFiles(config: Config, readFile: (path: string) => string): Config['peerTlsFiles'] {
  const paths = [config.peerTlsCaFile, config.peerTlsCertFile, config.peerTlsKeyFile];
  if (paths.every((p) => p === '')) return undefined;
  const missing = PEER_TLS_FLAGS.filter((_, i) => paths[i] === '');
  if (missing.length > 0) {
    throw new ConfigError(
      `--peer-tls-ca-file, --peer-tls-cert-file and --peer-tls-key-file go together; missing ` +
        missing.map((f) => `--${f} (${envName(f)})`).join(', '),
    );
  }
  const [ca, cert, key] = PEER_TLS_FLAGS.map((flag, i) => {
    try {
      return readFile(paths[i]!);
    } catch (err) {
      throw new ConfigError(`cannot read --${flag} (${envName(flag)}) ${JSON.stringify(paths[i])}: ${(err as Error).message}`);
    }
  }) as [string, string, string];
  const name = (i: number) => `--${PEER_TLS_FLAGS[i]} (${envName(PEER_TLS_FLAGS[i])}) ${paths[i]}`;
  peerTlsFromPem(ca, cert, key, { ca: name(0), cert: name(1), key: name(2) }, Date.now());
  return { ca, cert, key };
}

/** Longest ticket key rotation (14 days): the stored key set, rewritten at every rotation, lives 30 days. */
const MAX_TICKET_ROTATION_MINUTES = 14 * 24 * 60;
