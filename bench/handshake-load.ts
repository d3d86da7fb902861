/**
 * The client side of bench:handshakes, in a process of its own so that the handshakers do
 * not share an event loop with the bench: for one phase, collects a pool of sessions from
 * server A (full handshakes), then runs a closed loop of concurrent handshakers against
 * server B (Node's tls.connect, with a session from the pool or none) for a warm-up and a
 * measured window, and prints one line `RESULT {json}`.
 *
 * Every handshake is checked: a resumed phase's connections must say isSessionReused(), a
 * full phase's must not, and the pool's sessions must be of the kind the phase names (a
 * ticket, or a session id with no ticket). A connection that is not what the phase claims
 * counts as an error, not as a handshake.
 *
 * Argument: one JSON object (HandshakeLoadConfig). Bounds: every connection has a 5 s
 * time-out, the slice stops after its window, MAX_OPS operations or MAX_ERRORS failures,
 * and a watchdog ends a slice that hangs; the process exits when done.
 */
import { readFileSync } from 'node:fs';
import * as tls from 'node:tls';
import { constants as cryptoConstants } from 'node:crypto';
import { cpuSecondsOf } from './children';
import { runClosedLoopSlice, type SliceResult } from './support/closed-loop';
import { scrape, type Scrape } from './support/prometheus-scrape';

/** Full handshakes (with or without the ticket extension), or resumptions by ticket or by session id. */
export type HandshakeKind = 'full' | 'full-no-ticket' | 'ticket' | 'session-id';

export interface HandshakeLoadConfig {
  kind: HandshakeKind;
  version: 'TLSv1.2' | 'TLSv1.3';
  /** Port of server A (sessions come from it) and of server B (the measured one). */
  portA: number;
  portB: number;
  caFile: string;
  concurrency: number;
  poolSize: number;
  warmupSeconds: number;
  measureSeconds: number;
  /** Pids whose CPU is reported: B's web server (the closed loop's server) and B's sidecar. */
  serverPid: number | undefined;
  sidecarPid: number | undefined;
  /** B's sidecar's /metrics, read at the window's start and end. */
  sidecarMetricsUrl: string;
}

export interface HandshakeLoadResult extends SliceResult {
  /** B's sidecar's CPU during the measured window, as a share of one core. */
  sidecarCpu: number;
  /** Sessions collected from A. */
  pool: number;
  /** Session API operations B's sidecar served per handshake of the window, by method (baton_operations_total). */
  operationsPerHandshake: Record<string, number>;
}

const CONNECT_TIMEOUT_MS = 5000;
const MAX_OPS = 5_000_000;
const MAX_ERRORS = 1000;
const SLICE_SLACK_MS = 15_000;
/** After collecting, the time A's sidecar has to store TLS 1.2 sessions (saved after the handshake) before B asks for them. */
const SETTLE_MS = 500;

function connectOptions(config: HandshakeLoadConfig, ca: Buffer, port: number, session: Buffer | undefined): tls.ConnectionOptions {
  return {
    host: '127.0.0.1',
    port,
    servername: 'localhost',
    ca,
    minVersion: config.version,
    maxVersion: config.version,
    // Without the ticket extension a TLS 1.2 server falls back to session ids.
    ...(config.kind === 'session-id' || config.kind === 'full-no-ticket' ? { secureOptions: cryptoConstants.SSL_OP_NO_TICKET } : {}),
    ...(session !== undefined ? { session } : {}),
  };
}

/** One full handshake with A; resolves with the first session it hands out, checked against the kind. */
function collectOne(config: HandshakeLoadConfig, ca: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect(connectOptions(config, ca, config.portA, undefined));
    let settled = false;
    const finish = (err: Error | undefined, session?: Buffer) => {
      if (settled) return;
      settled = true;
      socket.end();
      socket.destroySoon();
      if (err !== undefined) reject(err);
      else resolve(session!);
    };
    socket.setTimeout(CONNECT_TIMEOUT_MS, () => finish(new Error(`no session from A within ${CONNECT_TIMEOUT_MS} ms`)));
    socket.on('session', (session: Buffer) => {
      const ticket = socket.getTLSTicket();
      const hasTicket = ticket !== undefined && ticket.length > 0;
      if (config.kind === 'session-id' && hasTicket) finish(new Error('A issued a ticket to a client that asked for none'));
      else if (config.kind === 'ticket' && !hasTicket) finish(new Error('A issued no ticket'));
      else finish(undefined, session);
    });
    socket.on('data', () => undefined);
    socket.once('error', (err) => finish(err));
  });
}

async function collectPool(config: HandshakeLoadConfig, ca: Buffer): Promise<Buffer[]> {
  const pool: Buffer[] = [];
  let next = 0;
  const worker = async () => {
    while (next < config.poolSize) {
      next++;
      pool.push(await collectOne(config, ca));
    }
  };
  await Promise.all(Array.from({ length: Math.min(config.concurrency, config.poolSize) }, worker));
  return pool;
}

/** One handshake with B: resolves once the connection closed after a handshake of the expected kind. */
function handshake(config: HandshakeLoadConfig, ca: Buffer, session: Buffer | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    let failure: Error | undefined;
    const socket = tls.connect(connectOptions(config, ca, config.portB, session), () => {
      const reused = socket.isSessionReused();
      // end(), not destroy(): the server finishes its side (and sends its tickets) before the close.
      socket.end();
      if (reused !== (session !== undefined)) failure = new Error(session !== undefined ? 'B did not resume the session (full handshake)' : 'B resumed a session no client offered');
    });
    socket.setTimeout(CONNECT_TIMEOUT_MS, () => socket.destroy(new Error(`no handshake with B within ${CONNECT_TIMEOUT_MS} ms`)));
    socket.on('data', () => undefined);
    socket.once('error', (err) => (failure ??= err));
    socket.once('close', () => (failure === undefined ? resolve() : reject(failure)));
  });
}

async function main(): Promise<void> {
  const config = JSON.parse(process.argv[2] ?? '') as HandshakeLoadConfig;
  const ca = readFileSync(config.caFile);
  const pool = config.kind === 'ticket' || config.kind === 'session-id' ? await collectPool(config, ca) : [];
  if (pool.length > 0) await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
  let sidecarAt: [bigint, number] | undefined;
  let sidecarEnd: [bigint, number] | undefined;
  let metricsAt: Promise<Scrape> | undefined;
  let metricsEnd: Promise<Scrape> | undefined;
  const snapshot = (): [bigint, number] => [process.hrtime.bigint(), cpuSecondsOf(config.sidecarPid)];
  const startTimer = setTimeout(() => {
    sidecarAt = snapshot();
    metricsAt = scrape(config.sidecarMetricsUrl);
  }, config.warmupSeconds * 1000);
  const endTimer = setTimeout(() => {
    sidecarEnd = snapshot();
    metricsEnd = scrape(config.sidecarMetricsUrl);
  }, (config.warmupSeconds + config.measureSeconds) * 1000);
  const result = await runClosedLoopSlice({
    workers: config.concurrency,
    warmupSeconds: config.warmupSeconds,
    measureSeconds: config.measureSeconds,
    serverPid: config.serverPid,
    maxOps: MAX_OPS,
    maxErrors: MAX_ERRORS,
    maxSamples: Math.ceil(config.measureSeconds * 50_000),
    slackMs: SLICE_SLACK_MS,
    operation: (_w, _n, issued) => handshake(config, ca, pool.length === 0 ? undefined : pool[issued % pool.length]),
  });
  clearTimeout(startTimer);
  clearTimeout(endTimer);
  sidecarEnd ??= snapshot();
  const sidecarCpu = sidecarAt === undefined ? NaN : (sidecarEnd[1] - sidecarAt[1]) / (Number(sidecarEnd[0] - sidecarAt[0]) / 1e9);
  const operationsPerHandshake: Record<string, number> = {};
  if (metricsAt !== undefined && metricsEnd !== undefined) {
    const [before, after] = await Promise.all([metricsAt, metricsEnd]);
    const handshakes = result.opsPerSecond * config.measureSeconds;
    for (const sample of after.select('baton_operations_total')) {
      const method = sample.labels.method ?? '?';
      const delta = sample.value - before.value('baton_operations_total', sample.labels);
      if (delta > 0) operationsPerHandshake[method] = (operationsPerHandshake[method] ?? 0) + delta / handshakes;
    }
  }
  const out: HandshakeLoadResult = { ...result, sidecarCpu, pool: pool.length, operationsPerHandshake };
  process.stdout.write(`RESULT ${JSON.stringify(out)}\n`);
}

main()
  .catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  })
  .finally(() => setTimeout(() => process.exit(), 1000).unref());
