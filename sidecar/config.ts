/**
 * The sidecar's configuration: one table of options, each a command-line flag and a
 * BATON_* environment variable, with its unit and default. Parsed and validated once at
 * start-up; every error names the flag (and variable) to fix.
 */
import { hostname } from 'node:os';
import { ConfigError } from '../src/errors';
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
  shutdownTimeoutSeconds: number;
  logLevel: LogLevel;
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
  valueName: string;
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
    flag: 'shutdown-timeout-seconds',
    key: 'shutdownTimeoutSeconds',
    valueName: 's',
    description: 'on SIGTERM/SIGINT, how long to wait for in-flight calls before exiting',
    default: () => '10',
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
];

export function envName(flag: string): string {
  return 'BATON_' + flag.toUpperCase().replace(/-/g, '_');
}

/**
 * Builds a Config from flag values (already merged with the environment by the CLI);
 * missing values take their defaults.
 */
export function parseConfig(values: Partial<Record<string, string>>): Config {
  const config: Partial<Record<keyof Config, unknown>> = {};
  for (const spec of SIDECAR_OPTIONS) {
    const raw = values[spec.flag] ?? spec.default();
    config[spec.key] = spec.parse(raw.trim(), spec.flag);
  }
  return config as Config;
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
