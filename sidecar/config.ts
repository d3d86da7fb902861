/**
 * The sidecar's configuration: one table of options, each a command-line flag and a
 * BATON_* environment variable, with its unit and default. Parsed and validated once at
 * start-up; every error names the flag (and variable) to fix.
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { parseClusterKeys } from '../src/cluster-key';
import { ConfigError } from '../src/errors';
import { peerTlsFromPem } from '../src/peer-tls';
import { MAX_TTL_SECONDS } from '../src/validation';

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export interface Config {
  /** This node's id in the cluster; default: the host name (a pod's name on Kubernetes). */
  nodeId: string;
  /** Where the session API (gRPC) listens: host:port or unix:/path. */
  apiListen: ListenAddress;
  /** Where /metrics, /healthz and /readyz are served (HTTP): host:port. */
  metricsListen: ListenAddress;
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
  /** Heartbeat interval, failure-detector timeouts (ms). */
  heartbeatIntervalMs: number;
  suspectAfterMs: number;
  deadAfterMs: number;
  /** Percentage of received replication datagrams dropped on purpose (tests and benchmarks). */
  injectLossPercent: number;
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
  parse: (value: string, flag: string) => Config[keyof Config];
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
    description: 'HTTP address for /metrics, /healthz and /readyz',
    default: () => '127.0.0.1:9464',
    parse: (v, flag) => parseListen(v, flag, false),
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
    flag: 'multicast',
    key: 'multicast',
    valueName: 'group:port',
    description: 'replicate over IP multicast to this group (default: unicast fan-out)',
    default: () => '',
    parse: (v, flag) => {
      if (v === '') return undefined;
      const m = /^(\d+\.\d+\.\d+\.\d+):(\d{1,5})$/.exec(v);
      const first = m === null ? 0 : Number(m[1]!.split('.')[0]);
      if (m === null || first < 224 || first > 239 || Number(m[2]) === 0 || Number(m[2]) > 65535) {
        throw bad(flag, v, 'expected an IPv4 multicast group (224.0.0.0/4) and port, e.g. 239.1.2.3:7402');
      }
      return { group: m[1]!, port: Number(m[2]) };
    },
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
    flag: 'heartbeat-interval-ms',
    key: 'heartbeatIntervalMs',
    valueName: 'ms',
    description: 'interval of heartbeats to every peer',
    default: () => '250',
    parse: (v, flag) => parseInteger(v, flag, 10, 60_000),
  },
  {
    flag: 'suspect-after-ms',
    key: 'suspectAfterMs',
    valueName: 'ms',
    description: 'a peer not heard from for this long is suspect',
    default: () => '1000',
    parse: (v, flag) => parseInteger(v, flag, 20, 600_000),
  },
  {
    flag: 'dead-after-ms',
    key: 'deadAfterMs',
    valueName: 'ms',
    description: 'a peer not heard from for this long is dead (its partitions are re-replicated)',
    default: () => '3000',
    parse: (v, flag) => parseInteger(v, flag, 40, 3_600_000),
  },
  {
    flag: 'anti-entropy-interval-seconds',
    key: 'antiEntropyIntervalSeconds',
    valueName: 's',
    description: 'how often held partitions are compared with every peer by digest and differences repaired (0 = never)',
    default: () => '30',
    parse: (v, flag) => parseInteger(v, flag, 0, 86_400),
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
];

/** Environment variables read besides the per-option ones. */
export const CLUSTER_KEY_ENV = 'BATON_CLUSTER_KEY';

function checkHostPort(value: string, flag: string): string {
  const address = parseListen(value, flag, false);
  if (address.port === 0) throw bad(flag, value, 'port 0 is not a reachable address');
  return value;
}

export function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

export function envName(flag: string): string {
  return 'BATON_' + flag.toUpperCase().replace(/-/g, '_');
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
  for (const spec of SIDECAR_OPTIONS) {
    const raw = values[spec.flag] ?? spec.default();
    parsed[spec.key] = spec.parse(raw.trim(), spec.flag);
  }
  const config = parsed as Config;
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
  if (config.deadAfterMs <= config.suspectAfterMs) {
    throw new ConfigError(`--dead-after-ms (${config.deadAfterMs}) must be greater than --suspect-after-ms (${config.suspectAfterMs})`);
  }
  if (config.suspectAfterMs <= config.heartbeatIntervalMs) {
    throw new ConfigError(`--suspect-after-ms (${config.suspectAfterMs}) must be greater than --heartbeat-interval-ms (${config.heartbeatIntervalMs})`);
  }
  const exposure = peerExposure(config);
  if (config.clusterKeys === '' && !config.insecure && exposure !== undefined) {
    throw new ConfigError(
      `refusing to ${exposure} without a cluster key: anyone on the network could read ` +
        `and forge replication traffic. Set --cluster-key-file or ${CLUSTER_KEY_ENV}, or pass --insecure`,
    );
  }
  config.peerTlsFiles = readPeerTlsFiles(config, readFile);
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

function bad(flag: string, value: string, hint: string): ConfigError {
  return new ConfigError(`invalid --${flag} (${envName(flag)}) ${JSON.stringify(value)}: ${hint}`);
}

function parseInteger(value: string, flag: string, min: number, max: number): number {
  if (!/^\d+$/.test(value)) throw bad(flag, value, `expected a whole number from ${min} to ${max}`);
  const n = Number(value);
  if (n < min || n > max) throw bad(flag, value, `expected a whole number from ${min} to ${max}`);
  return n;
}

export function parseListen(value: string, flag: string, allowUnix: boolean): ListenAddress {
  if (value.startsWith('unix:')) {
    if (!allowUnix) throw bad(flag, value, 'expected host:port');
    const path = value.slice('unix:'.length);
    if (path.length === 0) throw bad(flag, value, 'expected unix:/path/to/socket');
    return { text: value, path };
  }
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\[\]]+)):(\d{1,5})$/.exec(value);
  const port = match === null ? NaN : Number(match[3]);
  if (match === null || !(port >= 0 && port <= 65535)) {
    throw bad(flag, value, allowUnix ? 'expected host:port, [ipv6]:port or unix:/path' : 'expected host:port or [ipv6]:port');
  }
  return { text: value, host: match[1] ?? match[2]!, port };
}
