/**
 * `baton status`: asks one node's ClusterService/Status and its gRPC health, prints the
 * cluster as that node sees it (a table, or the StatusResponse as JSON), and says with its
 * exit code whether the cluster is healthy.
 *
 * Rules:
 * - The verdict and both output formats are pure functions of what the node answered (and
 *   `now`, for the uptime); only runStatus does I/O, and it closes every client it opens.
 * - Exit codes: 0 healthy; 1 unhealthy or no answer (one line on stderr saying which);
 *   usage errors are thrown as ConfigError and end as exit 2 in main.ts, as for `baton sidecar`.
 * - Healthy means: the node answers, its gRPC health is SERVING, and no member it knows is
 *   suspect or dead. `left` is a planned departure (a drained node), not a fault.
 * - --json writes every field of StatusResponse under its proto3 JSON name (lowerCamelCase),
 *   defaults included, and 64-bit counts as JSON numbers with every digit, so `jq '.sessions > 0'`
 *   compares numbers (a proto3-JSON string would compare as text). No count baton keeps comes
 *   near 2^53, where JavaScript's JSON.parse would start rounding.
 * - The address comes from --api, else BATON_API_LISTEN (what the sidecar in the same
 *   container listens on), else 127.0.0.1:7400; a wildcard host (0.0.0.0, ::) means this
 *   machine, so it is asked on loopback.
 */
import { credentials, logVerbosity, makeGenericClientConstructor, Metadata, setLogVerbosity, status as GrpcStatus, type ServiceError } from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { ConfigError } from '../../src/wire/errors';
import { ClusterServiceClient, type StatusResponse } from '../../src/gen/baton/v1/cluster';
import { parseListen } from '../config/config';

export const DEFAULT_STATUS_API = '127.0.0.1:7400';
/** The sidecar's own variable: `baton status` inside the sidecar's container needs no flag. */
export const STATUS_API_ENV = 'BATON_API_LISTEN';
export const DEFAULT_STATUS_TIMEOUT_MS = 3000;
const MAX_TIMEOUT_MS = 600_000;

export const EXIT_HEALTHY = 0;
export const EXIT_UNHEALTHY = 1;

/** Member states that make the cluster unhealthy. */
const FAULTY_STATES = new Set(['suspect', 'dead']);

export interface StatusOptions {
  /** host:port, [ipv6]:port or unix:/path. */
  api: string;
  json?: boolean;
  /** Whole milliseconds, as given on the command line. */
  timeoutMs: string;
}

/** The node's gRPC health for the whole server ('' service), or why it could not be read. */
export type Serving = { status: string } | { error: string };

export interface Verdict {
  healthy: boolean;
  /** One phrase per fault, e.g. "c (127.0.0.1:7012) is dead". */
  problems: string[];
}

export interface StatusIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  now: () => number;
}

const PROCESS_IO: StatusIo = {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
  now: () => Date.now(),
};

/** The gRPC target for --api; throws ConfigError naming the flag and the variable. */
export function statusTarget(api: string): string {
  let address;
  try {
    address = parseListen(api, 'api', true);
  } catch {
    throw usage(api, 'expected host:port, [ipv6]:port or unix:/path');
  }
  if (address.path !== undefined) return `unix:${address.path}`;
  if (address.port === 0) throw usage(api, "port 0 is not an address to ask: give the port the sidecar logged as api_port");
  const host = address.host === '0.0.0.0' ? '127.0.0.1' : address.host === '::' ? '::1' : address.host!;
  return host.includes(':') ? `[${host}]:${address.port}` : `${host}:${address.port}`;
}

export function parseTimeoutMs(value: string): number {
  const ms = /^\d+$/.test(value) ? Number(value) : NaN;
  if (!(ms >= 1 && ms <= MAX_TIMEOUT_MS)) {
    throw new ConfigError(`invalid --timeout-ms ${JSON.stringify(value)}: expected a whole number of milliseconds from 1 to ${MAX_TIMEOUT_MS}`);
  }
  return ms;
}

export function judge(status: StatusResponse, serving: Serving): Verdict {
  const problems: string[] = [];
  if ('error' in serving) problems.push(`node ${status.nodeId} did not answer its health check (${serving.error})`);
  else if (serving.status !== 'SERVING') problems.push(`node ${status.nodeId} is not serving (gRPC health ${serving.status}: draining or stopping)`);
  for (const member of status.members) {
    if (FAULTY_STATES.has(member.state)) problems.push(`${memberName(member)} is ${member.state}`);
  }
  for (const refused of status.configMismatches) {
    problems.push(`${refused.nodeId} (${refused.address}) is refused: its configuration differs in ${refused.settings.join(', ')}`);
  }
  if (status.quorum > 1 && status.membersHeard < status.quorum) {
    problems.push(`node ${status.nodeId} has no quorum: it hears ${status.membersHeard} of the ${status.quorum} members --quorum asks for, and refuses writes and claims`);
  }
  return { healthy: problems.length === 0, problems };
}

/** The human form: this node's summary line, then one row per member. */
export function formatTable(status: StatusResponse, now: number): string {
  const budget =
    status.maxBytes === 0n
      ? `${formatBytes(status.bytes)} (no budget)`
      : `${formatBytes(status.bytes)} of ${formatBytes(status.maxBytes)} (${percent(status.bytes, status.maxBytes)})`;
  const summary =
    `node ${status.nodeId}: ${status.sessions} sessions, ${status.parts} parts, ${budget}, ` +
    `${status.tombstones} tombstones, ${status.partitions} partitions; ` +
    `baton ${status.version}, up ${formatDuration(now - Number(status.startedAtUnixMs))}`;
  const rows = [
    ['NODE', 'ADDRESS', 'STATE', 'SELF', 'LAG (SEQS)', 'ROLE', 'INDEX', 'MASTERS'],
    ...status.members.map((m) => [
      m.nodeId === '' ? '-' : m.nodeId,
      m.address,
      m.state,
      m.isSelf ? '*' : '',
      m.isSelf ? '-' : String(m.replicationLagSeqs),
      m.role === '' ? '-' : m.role,
      // Place in the view's election order; the coordinator is marked.
      m.index === undefined ? '-' : `${m.index}${m.coordinator ? ' (coordinator)' : ''}`,
      `${m.masteredPartitions.length} partition${m.masteredPartitions.length === 1 ? '' : 's'}`,
    ]),
  ];
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  const lines = rows.map((row) => row.map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column]!))).join('  ').trimEnd());
  const coordination =
    status.viewId === 0n
      ? `coordinator ${status.coordinatorNodeId || 'none'}, no view yet (placement follows this node's failure detector)`
      : `coordinator ${status.coordinatorNodeId || 'none'}, view ${status.viewId}`;
  const groups = status.multicastGroups.length === 0 ? '' : `; listening on multicast groups ${status.multicastGroups.join(', ')}`;
  const quorum =
    status.quorum <= 1 ? '' : `; quorum ${status.quorum}: ${status.membersHeard} heard${status.membersHeard < status.quorum ? ' (NO QUORUM: writes and claims refused)' : ''}`;
  return `${summary}\n${coordination}${groups}${quorum}\n\n${lines.join('\n')}\n`;
}

/** The StatusResponse as JSON (see the header for names and integers), with a final newline. */
export function formatJson(status: StatusResponse): string {
  return `${jsonExact(status, '')}\n`;
}

/** Asks the node, prints, and resolves with the exit code. Usage errors throw ConfigError. */
export async function runStatus(options: StatusOptions, io: StatusIo = PROCESS_IO): Promise<number> {
  const target = statusTarget(options.api);
  const timeoutMs = parseTimeoutMs(options.timeoutMs);
  // grpc-js would log connection failures on its own; the one line below says what failed.
  setLogVerbosity(logVerbosity.NONE);
  const deadline = Date.now() + timeoutMs;
  const cluster = new ClusterServiceClient(target, credentials.createInsecure());
  const health = new HealthClient(target, credentials.createInsecure());
  try {
    const [status, serving] = await Promise.all([
      unary<StatusResponse>((done) => cluster.status({}, new Metadata(), { deadline }, done)),
      unary<HealthAnswer>((done) =>
        health.makeUnaryRequest(CHECK.path, CHECK.requestSerialize, CHECK.responseDeserialize, { service: '' }, new Metadata(), { deadline }, done),
      ),
    ]);
    if ('error' in status) {
      const asked = target === options.api ? options.api : `${options.api} (asked as ${target})`;
      io.stderr(`baton: ${describeUnreachable(asked, status.error, timeoutMs)}\n`);
      return EXIT_UNHEALTHY;
    }
    const verdict = judge(status.value, 'error' in serving ? { error: firstLine(serving.error.details || serving.error.message) } : serving.value);
    io.stdout(options.json === true ? formatJson(status.value) : formatTable(status.value, io.now()));
    if (verdict.healthy) return EXIT_HEALTHY;
    io.stderr(`baton: unhealthy as node ${status.value.nodeId} sees it: ${verdict.problems.join('; ')}\n`);
    return EXIT_UNHEALTHY;
  } finally {
    cluster.close();
    health.close();
  }
}

/** grpc.health.v1.Health/Check, called by path: the package carries its own definition. */
const HealthClient = makeGenericClientConstructor({}, 'grpc.health.v1.Health');
interface HealthAnswer {
  status: string;
}
const CHECK = healthService['Check'] as unknown as {
  path: string;
  requestSerialize: (request: { service: string }) => Buffer;
  responseDeserialize: (bytes: Buffer) => HealthAnswer;
};

type Answer<T> = { value: T } | { error: ServiceError };

function unary<T>(call: (done: (err: ServiceError | null, value?: T) => void) => void): Promise<Answer<T>> {
  return new Promise((resolve) => call((err, value) => resolve(err !== null ? { error: err } : { value: value! })));
}

function describeUnreachable(api: string, error: ServiceError, timeoutMs: number): string {
  const details = firstLine(error.details || error.message).replace(/\s*Resolution note:.*$/, '');
  const connect = /connect (E[A-Z]+) \S*?(?=\.?(\s|$))/.exec(details);
  const why =
    error.code === GrpcStatus.DEADLINE_EXCEEDED
      ? `no answer within ${timeoutMs} ms (--timeout-ms)`
      : connect?.[1] === 'ECONNREFUSED'
        ? `nothing is listening there (${connect[0]})`
        : connect !== null
          ? connect[0]
          : `${GrpcStatus[error.code] ?? error.code}: ${details}`;
  return `cannot get the status from the baton API at ${api} (set by --api or ${STATUS_API_ENV}): ${why}`;
}

function memberName(member: StatusResponse['members'][number]): string {
  return member.nodeId === '' ? `peer ${member.address} (never heard from)` : `${member.nodeId} (${member.address})`;
}

function usage(api: string, hint: string): ConfigError {
  return new ConfigError(`invalid --api (or ${STATUS_API_ENV}) ${JSON.stringify(api)}: ${hint}`);
}

function firstLine(text: string): string {
  return text.split('\n')[0]!;
}

const BYTE_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

export function formatBytes(bytes: bigint): string {
  let value = Number(bytes);
  let unit = 0;
  while (value >= 1024 && unit < BYTE_UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1).replace(/\.0$/, '')} ${BYTE_UNITS[unit]}`;
}

function percent(part: bigint, whole: bigint): string {
  return `${((Number(part) / Number(whole)) * 100).toFixed(1)}%`;
}

/** "45s", "2m 5s", "3h 12m", "4d 3h"; a node whose clock runs ahead of ours is "0s" old. */
export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86_400)}d ${Math.floor((s % 86_400) / 3600)}h`;
}

/** JSON.stringify's two-space layout, with bigints written as exact JSON numbers. */
function jsonExact(value: unknown, indent: string): string {
  if (typeof value === 'bigint') return value.toString();
  const inner = `${indent}  `;
  if (Array.isArray(value)) {
    if (value.length === 0) return '[]';
    return `[\n${value.map((v) => inner + jsonExact(v, inner)).join(',\n')}\n${indent}]`;
  }
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value).filter(([, v]) => v !== undefined);
    if (entries.length === 0) return '{}';
    return `{\n${entries.map(([k, v]) => `${inner}${JSON.stringify(k)}: ${jsonExact(v, inner)}`).join(',\n')}\n${indent}}`;
  }
  return JSON.stringify(value);
}
