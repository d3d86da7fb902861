/**
 * Fuzzes one real sidecar process, started with small limits, through every surface a
 * client or a peer can reach:
 *
 * 1. raw bytes on every SessionService and ClusterService method and on paths the node
 *    does not serve (random, truncated, bit-flipped, huge declared lengths, runaway
 *    varints, deep nesting, invalid UTF-8, oversize), sent with identity serializers;
 * 2. gRPC framing garbage on a bare HTTP/2 connection (bad flags, lengths, compression);
 * 3. structured random values through the generated client, checked against the
 *    validation rules of session.proto and read back when a write succeeds;
 * 4. one Exchange stream of thousands of random operations;
 * 5. Watch calls with random session ids;
 * 6. raw bytes and random values on the peer service (Digests, Fetch);
 * 7. replication datagrams: garbage, damaged headers, and random heartbeats, data,
 *    fragments, NACKs, acks, gone and leave messages from made-up peers.
 *
 * Between phases and at the end the node must still answer, keep its memory budget, log
 * no internal error, and finally exit 0 on SIGTERM (so it never crashed).
 *
 * Inputs come from SeededRandom: every failure message names the seed, and
 * BATON_FUZZ_SEED=<seed> replays the same inputs (BATON_FUZZ_TRACE=1 prints progress).
 */
import * as grpc from '@grpc/grpc-js';
import * as dgram from 'node:dgram';
import * as http2 from 'node:http2';
import * as zlib from 'node:zlib';
import { ClusterServiceClient, ClusterServiceService, StatusRequest, StatusResponse } from '../src/gen/baton/v1/cluster';
import { AuthState, CartState, TcpConnectionState, TlsSessionState } from '../src/gen/baton/v1/parts';
import { Utf8Error } from '../src/wire/strict-utf8';
import {
  DeleteRequest,
  DeleteResponse,
  ExchangeRequest,
  ExchangeResponse,
  GetRequest,
  GetResponse,
  PutRequest,
  PutResponse,
  SessionServiceClient,
  SessionServiceService,
  TouchRequest,
  TouchResponse,
  WatchEvent,
  WatchRequest,
} from '../src/gen/baton/v1/session';
import { DigestsRequest, DigestsResponse, FetchRequest, PeerServiceService, SessionEntry } from '../src/gen/baton/v1/peer';
import { Datagram, type CoordinatorNoticeKind, type Delta } from '../src/gen/baton/v1/wire';
import { BuzHash } from '../src/store/buzhash';
import { FORMAT_VERSION, HEADER_BYTES, MAGIC } from '../src/wire/datagram-codec';
import { SeededRandom, type Random } from '../src/store/random';
import { MAX_SESSION_ID_BYTES, MAX_TTL_SECONDS } from '../src/wire/validation';
import {
  asciiString,
  awkwardString,
  chance,
  garbage,
  hexPreview,
  pick,
  pool,
  randomBytes,
  randomUint64,
  skewedLength,
  UINT32_MAX,
  UINT64_MAX,
  wireString,
} from './support/fuzz-inputs';
import { Scrape } from '../bench/support/prometheus-scrape';
import { rawBidi, rawServerStream, rawUnary } from './support/raw-calls';
import { startSidecar, type SidecarProcess } from './support/sidecar-process';
import { clusterConfigDigest } from '../src/core/config-digests';

const SEED = process.env.BATON_FUZZ_SEED !== undefined ? Number(process.env.BATON_FUZZ_SEED) : 0x5eedba70;
const NODE_ID = 'fuzz-node';
const MAX_MEMORY_BYTES = 4 * 1024 * 1024;
const MAX_VALUE_BYTES = 4096;
const MAX_PARTS = 8;
/** Secondaries per session (--replicas); the node runs alone, so none is ever live. */
const REPLICAS = 2;
const PARTITIONS = 256;
/** Pinned so the test can compute the config digest peers must present in heartbeats. */
const CLUSTER_SEED = 'fuzz-cluster-seed';
/** The sidecar's gRPC receive limit for these options (see sidecar/node.ts). */
const MAX_MESSAGE_BYTES = MAX_VALUE_BYTES * MAX_PARTS + 64 * 1024;
/** Generous ceiling on the whole process's resident memory. */
const MAX_RSS_BYTES = 512 * 1024 * 1024;
/** Hang protection only: every call here should finish in milliseconds. */
const CALL_DEADLINE_MS = 10_000;

const RAW_CALLS_PER_UNARY_METHOD = 1000;
const RAW_WATCH_CALLS = 500;
const RAW_EXCHANGE_STREAMS = 300;
const RAW_UNKNOWN_PATH_CALLS = 200;
const HTTP2_CALLS = 300;
const STRUCTURED_CALLS = 2000;
const EXCHANGE_OPERATIONS = 3000;
const WATCH_CALLS = 300;
const PEER_CALLS_PER_METHOD = 250;
const UDP_DATAGRAMS = 2500;
/** One-byte fragments each declaring the largest fragment count: about 63 KB of UDP. */
const FRAGMENT_FLOOD = 1200;

const PART_NAME = /^[a-z0-9_.-]{1,64}$/;
const CONTROL_CHARACTER = /[\u0000-\u001f\u007f-\u009f]/;
const ALLOWED_FAILURES = new Set([grpc.status.INVALID_ARGUMENT, grpc.status.FAILED_PRECONDITION, grpc.status.RESOURCE_EXHAUSTED]);

const S = grpc.status;
const statusName = (code: number): string => S[code] ?? String(code);
const deadline = (): Date => new Date(Date.now() + CALL_DEADLINE_MS);

/** Per-phase generator, so each phase replays on its own from the seed. */
function rngFor(phase: number): Random {
  return new SeededRandom((SEED ^ Math.imul(phase + 1, 0x9e3779b9)) >>> 0);
}

/** Collects problems and fails once per phase, with the seed and the first reproducers. */
class Findings {
  readonly list: string[] = [];
  constructor(readonly phase: string) {}
  add(problem: string): void {
    this.list.push(problem);
  }
  check(): void {
    trace(`${this.phase}: done, ${this.list.length} problem(s)`);
    if (this.list.length === 0) return;
    throw new Error(
      `${this.phase}: ${this.list.length} problem(s) with seed ${SEED} (replay: BATON_FUZZ_SEED=${SEED}):\n` +
        this.list.slice(0, 15).join('\n'),
    );
  }
}

/** Progress lines on stderr when BATON_FUZZ_TRACE is set, to see where a run hangs. */
function trace(message: string): void {
  if (process.env.BATON_FUZZ_TRACE) process.stderr.write(`[fuzz ${(performance.now() / 1000).toFixed(1)}s] ${message}\n`);
}

/** Status codes seen, per label, for the summary printed at the end. */
const tally = new Map<string, Map<string, number>>();
let callsMade = 0;
function count(label: string, code: number): void {
  callsMade++;
  if (callsMade % 500 === 0) trace(`${callsMade} calls, last: ${label} ${statusName(code)}`);
  const byCode = tally.get(label) ?? new Map<string, number>();
  byCode.set(statusName(code), (byCode.get(statusName(code)) ?? 0) + 1);
  tally.set(label, byCode);
}

// --- calls with raw bytes (test/support/raw-calls.ts) -----------------------------------

function decodes(decode: (b: Uint8Array) => unknown, bytes: Uint8Array): boolean {
  try {
    decode(bytes);
    return true;
  } catch {
    return false;
  }
}

/** The status of a request that does not decode: a string that is not UTF-8 is the caller's error. */
function undecodableStatus(decode: (b: Uint8Array) => unknown, bytes: Uint8Array): grpc.status {
  try {
    decode(bytes);
  } catch (err) {
    if (err instanceof Utf8Error) return S.INVALID_ARGUMENT;
  }
  return S.INTERNAL;
}

// --- structured random requests -----------------------------------------------------------

const VALID_NAMES = ['a', 'b', 'c', 'n', 'x.y-z_0', 'profile', 'prefs', 'z'.repeat(64), '0', 'cart-v2', 'tls.backup'];
const WELL_KNOWN = ['tls', 'auth', 'cart', 'tcp'] as const;
const INVALID_NAMES = ['', 'Bad Name', 'A', 'z'.repeat(65), 'caf\u00e9', 'tab\tname', 'slash/name', 'émoji😀', 'nul\u0000', '\ud800', ' a', 'a '];

/** Session ids the structured phases keep coming back to, so state builds up. */
const POOL_IDS = Array.from({ length: 40 }, (_, i) => (i % 5 === 0 ? `pool-😀-${i}` : `pool-${i}`));

function sessionIdProblem(id: string): string | undefined {
  const w = wireString(id);
  if (w.length === 0) return 'session_id is empty';
  if (w.length > MAX_SESSION_ID_BYTES || Buffer.byteLength(w, 'utf8') > MAX_SESSION_ID_BYTES) return 'session_id is too long';
  if (CONTROL_CHARACTER.test(w)) return 'session_id has a control character';
  return undefined;
}

function namesProblem(names: readonly string[]): string | undefined {
  if (names.length > MAX_PARTS) return 'too many part names';
  const wire = names.map(wireString);
  const bad = wire.find((n) => !PART_NAME.test(n));
  if (bad !== undefined) return `invalid part name ${JSON.stringify(bad)}`;
  if (new Set(wire).size !== wire.length) return 'a part is named twice';
  return undefined;
}

function putProblem(r: PutRequest): string | undefined {
  const id = sessionIdProblem(r.sessionId);
  if (id) return id;
  if (r.parts.length === 0) return 'no parts';
  const names = namesProblem(r.parts.map((p) => p.name));
  if (names) return names;
  const big = r.parts.find((p) => p.value.length > MAX_VALUE_BYTES);
  if (big) return `part ${big.name} is ${big.value.length} bytes`;
  if (r.ttlSeconds > MAX_TTL_SECONDS) return 'ttl over 30 days';
  if (r.minReplicas > REPLICAS) return `min_replicas above --replicas ${REPLICAS}`;
  return undefined;
}

function getProblem(r: GetRequest | DeleteRequest): string | undefined {
  return sessionIdProblem(r.sessionId) ?? namesProblem(r.parts);
}

function touchProblem(r: TouchRequest): string | undefined {
  return sessionIdProblem(r.sessionId) ?? (r.ttlSeconds > MAX_TTL_SECONDS ? 'ttl over 30 days' : undefined);
}

function int64(rng: Random): bigint {
  return BigInt.asIntN(64, randomUint64(rng));
}

function shortString(rng: Random): string {
  return chance(rng, 0.2) ? awkwardString(rng).slice(0, 200) : asciiString(rng, rng.below(24));
}

/** A well-formed value of a typed part, small enough to be accepted. */
function typedValue(rng: Random, name: (typeof WELL_KNOWN)[number]): Buffer {
  switch (name) {
    case 'tls':
      return Buffer.from(
        TlsSessionState.encode(
          TlsSessionState.fromPartial({
            sessionId: randomBytes(rng, rng.below(33)),
            sessionData: randomBytes(rng, rng.below(600)),
            protocol: pick(rng, ['TLSv1.3', 'TLSv1.2', '']),
            cipher: shortString(rng),
            serverName: shortString(rng),
            createdAtUnixMs: int64(rng),
            lifetimeSeconds: rng.nextUint32(),
            alpnProtocol: pick(rng, ['h2', 'http/1.1', '']),
          }),
        ).finish(),
      );
    case 'auth':
      return Buffer.from(
        AuthState.encode(
          AuthState.fromPartial({
            token: asciiString(rng, rng.below(300)),
            tokenType: 'Bearer',
            subject: shortString(rng),
            scopes: Array.from({ length: rng.below(5) }, () => shortString(rng)),
            expiresAtUnixMs: int64(rng),
            claims: Object.fromEntries(Array.from({ length: rng.below(4) }, () => [shortString(rng), shortString(rng)])),
            refreshToken: asciiString(rng, rng.below(100)),
            issuedAtUnixMs: int64(rng),
          }),
        ).finish(),
      );
    case 'cart':
      return Buffer.from(
        CartState.encode(
          CartState.fromPartial({
            items: Array.from({ length: rng.below(6) }, () => ({
              sku: shortString(rng),
              name: shortString(rng),
              quantity: rng.nextUint32(),
              unitPriceMinor: int64(rng),
            })),
            currency: pick(rng, ['EUR', 'USD', '', 'x'.repeat(10)]),
            billingAddress: chance(rng, 0.5) ? { name: shortString(rng), city: shortString(rng), country: 'DE' } : undefined,
            paymentReference: shortString(rng),
            updatedAtUnixMs: int64(rng),
          }),
        ).finish(),
      );
    case 'tcp':
      return Buffer.from(
        TcpConnectionState.encode(
          TcpConnectionState.fromPartial({
            localAddress: '10.0.0.1',
            localPort: rng.below(65536),
            remoteAddress: shortString(rng),
            remotePort: rng.nextUint32(),
            sendNext: rng.nextUint32(),
            receiveNext: rng.nextUint32(),
            sendWindow: rng.nextUint32(),
            mss: rng.nextUint32(),
            sackPermitted: chance(rng, 0.5),
            state: rng.below(14), // 12 and 13 are not in the enum: proto3 enums are open
            capturedAtUnixMs: int64(rng),
            timestampsEnabled: chance(rng, 0.5),
            sendSequenceKnown: chance(rng, 0.5),
            receiveSequenceKnown: chance(rng, 0.5),
          }),
        ).finish(),
      );
  }
}

/** Builds random requests; remembers versions written so if_version sometimes matches. */
class RequestFactory {
  /** session id → part name → version last written by a successful Put. */
  readonly versions = new Map<string, Map<string, bigint>>();

  constructor(private readonly rng: Random) {}

  sessionId(): string {
    return chance(this.rng, 0.55) ? pick(this.rng, POOL_IDS) : awkwardString(this.rng);
  }

  partName(): string {
    const r = this.rng.next();
    if (r < 0.6) return pick(this.rng, VALID_NAMES);
    if (r < 0.85) return pick(this.rng, WELL_KNOWN);
    if (r < 0.95) return pick(this.rng, INVALID_NAMES);
    return awkwardString(this.rng).slice(0, 80);
  }

  partNames(): string[] {
    const n = chance(this.rng, 0.3) ? 0 : chance(this.rng, 0.9) ? 1 + this.rng.below(4) : MAX_PARTS + this.rng.below(4);
    return Array.from({ length: n }, () => (chance(this.rng, 0.85) ? pick(this.rng, [...VALID_NAMES, ...WELL_KNOWN]) : this.partName()));
  }

  value(name: string): Buffer {
    const rng = this.rng;
    if ((WELL_KNOWN as readonly string[]).includes(name) && chance(rng, 0.6)) {
      const typed = typedValue(rng, name as (typeof WELL_KNOWN)[number]);
      if (chance(rng, 0.8)) return typed;
      for (let i = 0; i < 1 + rng.below(4) && typed.length > 0; i++) typed[rng.below(typed.length)]! ^= 1 << rng.below(8);
      return typed;
    }
    const size = pick(rng, [
      0,
      1,
      skewedLength(rng, 512),
      skewedLength(rng, MAX_VALUE_BYTES),
      MAX_VALUE_BYTES - 1,
      MAX_VALUE_BYTES,
      MAX_VALUE_BYTES,
      MAX_VALUE_BYTES + 1,
      MAX_VALUE_BYTES + rng.below(MAX_VALUE_BYTES),
      rng.below(MAX_VALUE_BYTES + 1),
    ]);
    return randomBytes(rng, size);
  }

  ifVersion(sessionId: string, name: string): bigint | undefined {
    const rng = this.rng;
    const known = this.versions.get(wireString(sessionId))?.get(name);
    const r = rng.next();
    if (r < 0.6) return undefined;
    if (r < 0.8 && known !== undefined) return chance(rng, 0.8) ? known : known + 1n;
    return pick(rng, [0n, 1n, randomUint64(rng), UINT64_MAX, 2n ** 53n + 1n, BigInt(Date.now()) * 1024n]);
  }

  ttl(): number {
    return chance(this.rng, 0.7)
      ? 0
      : pick(this.rng, [1, 60, MAX_TTL_SECONDS, MAX_TTL_SECONDS + 1, UINT32_MAX, this.rng.nextUint32(), this.rng.below(3600)]);
  }

  put(): PutRequest {
    const rng = this.rng;
    const sessionId = this.sessionId();
    if (chance(rng, 0.12)) {
      // A new full-size session (8 parts of the largest size): the fuzzing writes well over
      // the memory budget, so eviction runs.
      return {
        sessionId: `bulk-${rng.nextUint32()}`,
        parts: Array.from({ length: MAX_PARTS }, (_, i) => ({ name: `bulk${i}`, value: randomBytes(rng, MAX_VALUE_BYTES), ifVersion: undefined })),
        ttlSeconds: 0,
        minReplicas: 0,
      };
    }
    const n = chance(rng, 0.05) ? 0 : chance(rng, 0.9) ? 1 + rng.below(3) : MAX_PARTS - 1 + rng.below(4);
    const parts = Array.from({ length: n }, () => {
      const name = this.partName();
      return { name, value: this.value(name), ifVersion: this.ifVersion(sessionId, name) };
    });
    if (n > 0 && chance(rng, 0.05)) parts.push({ ...parts[0]!, value: randomBytes(rng, 3) }); // the same name twice
    return {
      sessionId,
      parts,
      ttlSeconds: this.ttl(),
      minReplicas: chance(rng, 0.9) ? 0 : pick(rng, [1, 2, UINT32_MAX, rng.nextUint32()]),
    };
  }

  get(): GetRequest {
    return { sessionId: this.sessionId(), parts: this.partNames(), resume: chance(this.rng, 0.3) };
  }

  delete(): DeleteRequest {
    return { sessionId: this.sessionId(), parts: chance(this.rng, 0.3) ? [] : this.partNames() };
  }

  touch(): TouchRequest {
    return { sessionId: this.sessionId(), ttlSeconds: this.ttl() };
  }

  watch(): WatchRequest {
    return { sessionId: chance(this.rng, 0.1) ? '' : this.sessionId() };
  }

  /** An Exchange request; 10% name no operation. */
  exchange(requestId: bigint): ExchangeRequest {
    const r = this.rng.next();
    if (r < 0.35) return { requestId, op: { $case: 'put', put: this.put() }, deadlineMs: 0, batch: [] };
    if (r < 0.6) return { requestId, op: { $case: 'get', get: this.get() }, deadlineMs: 0, batch: [] };
    if (r < 0.75) return { requestId, op: { $case: 'delete', delete: this.delete() }, deadlineMs: 0, batch: [] };
    if (r < 0.9) return { requestId, op: { $case: 'touch', touch: this.touch() }, deadlineMs: 0, batch: [] };
    return { requestId, op: undefined, deadlineMs: 0, batch: [] };
  }

  remember(r: PutRequest, res: PutResponse): void {
    const id = wireString(r.sessionId);
    const byName = this.versions.get(id) ?? new Map<string, bigint>();
    for (const v of res.versions) byName.set(v.name, v.version);
    this.versions.set(id, byName);
  }
}

/** A request or response as readable JSON: bigints, byte strings and long strings shortened. */
function show(value: unknown): string {
  return JSON.stringify(value, function (this: Record<string, unknown>, key: string, v: unknown) {
    const original = key === '' ? v : this[key]; // before Buffer.prototype.toJSON ran
    if (typeof original === 'bigint') return `${original}n`;
    if (original instanceof Uint8Array) return hexPreview(original, 24);
    if (typeof original === 'string' && original.length > 80) return `${JSON.stringify(original.slice(0, 40))}…(${original.length} chars)`;
    return v;
  });
}

type Outcome<T> = { ok: true; value: T } | { ok: false; code: number; details: string };

/**
 * Judges one Put/Get/Delete/Touch outcome against the contract: a request the rules of
 * session.proto refuse gets INVALID_ARGUMENT; any other fails only for a reason the
 * stored state explains; a success looks right. Returns the problem, or undefined.
 */
function judge(method: 'put' | 'get' | 'delete' | 'touch', request: PutRequest | GetRequest | DeleteRequest | TouchRequest, outcome: Outcome<unknown>): string | undefined {
  const problem =
    method === 'put'
      ? putProblem(request as PutRequest)
      : method === 'touch'
        ? touchProblem(request as TouchRequest)
        : getProblem(request as GetRequest);
  const unavailableForReplicas = method === 'put' && !outcome.ok && outcome.code === S.UNAVAILABLE && (request as PutRequest).minReplicas > 0;
  if (!outcome.ok && !ALLOWED_FAILURES.has(outcome.code) && !unavailableForReplicas) return `${method} failed with ${statusName(outcome.code)} (${outcome.details})`;
  if (problem !== undefined) {
    if (outcome.ok) return `${method} succeeded, but should be refused: ${problem}`;
    if (outcome.code !== S.INVALID_ARGUMENT) return `${method} got ${statusName(outcome.code)}, not INVALID_ARGUMENT for: ${problem} (${outcome.details})`;
    return undefined;
  }
  if (outcome.ok) return checkSuccess(method, request, outcome.value);
  // A request that passes validation may still be refused because of what is stored.
  if (method === 'put') {
    const put = request as PutRequest;
    if (outcome.code === S.FAILED_PRECONDITION && put.parts.some((p) => p.ifVersion !== undefined)) return undefined;
    // Alone, the node has no live secondary to wait for: UNAVAILABLE, saying so.
    if (outcome.code === S.UNAVAILABLE && put.minReplicas > 0 && /only 0 secondaries are live/.test(outcome.details)) return undefined;
    if (outcome.code === S.INVALID_ARGUMENT && new RegExp(`the session would hold \\d+ parts, over the limit of ${MAX_PARTS}`).test(outcome.details)) return undefined;
    if (
      outcome.code === S.INVALID_ARGUMENT &&
      put.parts.some((p) => (WELL_KNOWN as readonly string[]).includes(p.name)) &&
      /^part '(tls|auth|cart|tcp)' is not a valid baton\.v1\.\w+: /.test(outcome.details)
    ) {
      return undefined;
    }
    // With 8 parts of 4 KiB at most, a session is far below the 4 MiB budget: eviction
    // must always make room, so RESOURCE_EXHAUSTED would be a bug here.
  }
  return `${method} of a valid request got ${statusName(outcome.code)} (${outcome.details})`;
}

function checkSuccess(method: string, request: unknown, value: unknown): string | undefined {
  switch (method) {
    case 'put': {
      const req = request as PutRequest;
      const res = value as PutResponse;
      if (res.replicasAcked !== 0) return `put acked ${res.replicasAcked} replicas with no secondary alive`;
      if (res.versions.map((v) => v.name).join('\n') !== req.parts.map((p) => wireString(p.name)).join('\n')) return `put answered versions for other parts: ${show(res)}`;
      if (res.versions.some((v) => v.version <= 0n || v.version !== res.versions[0]!.version)) return `put versions are not one positive version: ${show(res)}`;
      return undefined;
    }
    case 'get': {
      const req = request as GetRequest;
      const res = value as GetResponse;
      if (!res.found) return res.session === undefined ? undefined : 'get: not found, but a session was returned';
      const s = res.session;
      if (s === undefined) return 'get: found without a session';
      if (s.sessionId !== wireString(req.sessionId)) return `get returned session ${JSON.stringify(s.sessionId)}`;
      if (s.ownerNodeId !== NODE_ID) return `get: owner ${s.ownerNodeId}`;
      const names = s.parts.map((p) => p.name);
      if (new Set(names).size !== names.length) return `get returned a part twice: ${names.join(',')}`;
      if (req.parts.length > 0 && names.some((n) => !req.parts.includes(n))) return `get returned parts not asked for: ${names.join(',')}`;
      if (s.parts.some((p) => p.value.length > MAX_VALUE_BYTES || p.writerNodeId !== NODE_ID || p.version <= 0n)) return 'get returned a part that was never accepted';
      return undefined;
    }
    case 'delete':
      return typeof (value as DeleteResponse).found === 'boolean' ? undefined : 'delete: no found flag';
    case 'touch': {
      const res = value as TouchResponse;
      return res.found === res.expiresAtUnixMs > 0n ? undefined : `touch: found=${res.found} but expires_at=${res.expiresAtUnixMs}`;
    }
  }
  return undefined;
}

function call<Req, Res>(client: SessionServiceClient | ClusterServiceClient, method: string, request: Req): Promise<Outcome<Res>> {
  return new Promise((resolve) => {
    const fn = (client as unknown as Record<string, Function>)[method]!.bind(client);
    fn(request, new grpc.Metadata(), { deadline: deadline() }, (err: grpc.ServiceError | null, res: Res) =>
      resolve(err ? { ok: false, code: err.code, details: err.details } : { ok: true, value: res }),
    );
  });
}

// --- metrics ----------------------------------------------------------------------------

/** The value of an unlabelled series in a /metrics body, or undefined when absent. */
function metric(body: string, name: string): number | undefined {
  return Scrape.parse(body).get(name);
}

// -----------------------------------------------------------------------------------------

describe(`fuzzing one sidecar (seed ${SEED})`, () => {
  let node: SidecarProcess;
  let client: SessionServiceClient;
  let cluster: ClusterServiceClient;
  let raw: grpc.Client;

  beforeAll(async () => {
    node = await startSidecar([
      '--node-id',
      NODE_ID,
      '--max-memory-mb',
      String(MAX_MEMORY_BYTES / 1024 / 1024),
      '--max-value-bytes',
      String(MAX_VALUE_BYTES),
      '--max-parts-per-session',
      String(MAX_PARTS),
      '--replicas',
      String(REPLICAS),
      '--partitions',
      String(PARTITIONS),
      '--cluster-seed',
      CLUSTER_SEED,
    ]);
    const options = { 'grpc.max_send_message_length': -1, 'grpc.max_receive_message_length': -1 };
    client = new SessionServiceClient(node.apiAddress, grpc.credentials.createInsecure(), options);
    cluster = new ClusterServiceClient(node.apiAddress, grpc.credentials.createInsecure(), options);
    raw = new grpc.Client(node.apiAddress, grpc.credentials.createInsecure(), options);
  });

  afterAll(async () => {
    client?.close();
    cluster?.close();
    raw?.close();
    await node?.stop();
    const lines = [...tally].map(([label, byCode]) => `  ${label}: ${[...byCode].map(([c, n]) => `${c}=${n}`).join(' ')}`);
    console.log(`fuzz seed ${SEED}: ${callsMade} calls\n${lines.join('\n')}`);
  });

  /** The node is up and answers a trivial call. */
  async function expectAlive(findings: Findings): Promise<void> {
    const status = await call<StatusRequest, StatusResponse>(cluster, 'status', {});
    if (!status.ok && status.code === S.UNAVAILABLE && node.child.exitCode === null) {
      // Refused: the process is probably on its way out; let its exit (and stderr) arrive.
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 5000);
        node.child.once('exit', () => {
          clearTimeout(timer);
          setImmediate(resolve);
        });
      });
    }
    if (node.child.exitCode !== null || node.child.signalCode !== null) {
      const last = node.logs.slice(-3).map((l) => JSON.stringify(l).slice(0, 2000));
      findings.add(
        `the sidecar exited (code ${node.child.exitCode}, signal ${node.child.signalCode}); ` +
          `stderr: ${node.stderr.slice(-30).join('\n')}\nlast log lines: ${last.join('\n')}`,
      );
      return;
    }
    count('alive-check', status.ok ? S.OK : status.code);
    if (!status.ok) findings.add(`Status after the phase failed: ${statusName(status.code)} ${status.details}`);
    else if (status.value.bytes > BigInt(MAX_MEMORY_BYTES)) findings.add(`stored bytes ${status.value.bytes} over the budget`);
  }

  it('answers raw garbage on every unary method with a status, and decodable garbage without INTERNAL', async () => {
    const rng = rngFor(1);
    const factory = new RequestFactory(rng);
    const findings = new Findings('raw unary');
    interface RawMethod {
      label: string;
      path: string;
      /** The session API method, whose outcome `judge` checks; undefined for Status. */
      method?: 'put' | 'get' | 'delete' | 'touch';
      valid: () => Uint8Array;
      decode: (b: Uint8Array) => unknown;
      decodeResponse: (b: Uint8Array) => unknown;
    }
    const methods: RawMethod[] = [
      { label: 'raw Put', path: SessionServiceService.put.path, method: 'put', valid: () => PutRequest.encode(factory.put()).finish(), decode: PutRequest.decode, decodeResponse: PutResponse.decode },
      { label: 'raw Get', path: SessionServiceService.get.path, method: 'get', valid: () => GetRequest.encode(factory.get()).finish(), decode: GetRequest.decode, decodeResponse: GetResponse.decode },
      { label: 'raw Delete', path: SessionServiceService.delete.path, method: 'delete', valid: () => DeleteRequest.encode(factory.delete()).finish(), decode: DeleteRequest.decode, decodeResponse: DeleteResponse.decode },
      { label: 'raw Touch', path: SessionServiceService.touch.path, method: 'touch', valid: () => TouchRequest.encode(factory.touch()).finish(), decode: TouchRequest.decode, decodeResponse: TouchResponse.decode },
      { label: 'raw Status', path: ClusterServiceService.status.path, valid: () => StatusRequest.encode({}).finish(), decode: StatusRequest.decode, decodeResponse: StatusResponse.decode },
    ];
    // Inputs are drawn up front, in order, so concurrency cannot change what is sent.
    const inputs = methods.flatMap((m) =>
      Array.from({ length: RAW_CALLS_PER_UNARY_METHOD }, () => ({
        m,
        input: garbage(rng, m.valid, { maxBytes: 10 * 1024, oversizeBytes: MAX_MESSAGE_BYTES + 1, oversizeChance: 0.005 }),
      })),
    );
    await pool(inputs.length, 32, async (i) => {
      const { m, input } = inputs[i]!;
      const out = await rawUnary(raw, m.path, input.bytes, deadline());
      count(m.label, out.code);
      const where = `${m.label} #${i} [${input.kind}] bytes=${hexPreview(input.bytes)}`;
      if (input.bytes.length > MAX_MESSAGE_BYTES) {
        if (out.code !== S.RESOURCE_EXHAUSTED) findings.add(`${where}: oversize message got ${statusName(out.code)} (${out.details})`);
      } else if (decodes(m.decode, input.bytes)) {
        // The server decodes exactly these bytes with the same code, so the request reached
        // the handler: judge its answer as if the generated client had sent it.
        const request = m.decode(input.bytes);
        if (out.code === S.OK && !decodes(m.decodeResponse, out.responses[0]!)) {
          findings.add(`${where}: OK with an undecodable response ${hexPreview(out.responses[0]!)}`);
        } else if (m.method === undefined) {
          if (out.code !== S.OK) findings.add(`${where}: Status got ${statusName(out.code)} (${out.details})`);
        } else {
          const outcome: Outcome<unknown> = out.code === S.OK ? { ok: true, value: m.decodeResponse(out.responses[0]!) } : { ok: false, code: out.code, details: out.details };
          const problem = judge(m.method, request as PutRequest, outcome);
          if (problem !== undefined) findings.add(`${where} = ${show(request)}: ${problem}`);
        }
      } else if (out.code !== S.INTERNAL && out.code !== S.INVALID_ARGUMENT && out.code !== S.RESOURCE_EXHAUSTED) {
        findings.add(`${where}: undecodable request got ${statusName(out.code)} (${out.details})`);
      }
    });
    await expectAlive(findings);
    findings.check();
  }, 60_000);

  it('answers raw garbage on Watch, Exchange and unknown method paths', async () => {
    const rng = rngFor(2);
    const factory = new RequestFactory(rng);
    const findings = new Findings('raw streams');
    const opts = { maxBytes: 10 * 1024, oversizeBytes: MAX_MESSAGE_BYTES + 1, oversizeChance: 0.01 };

    const watchInputs = Array.from({ length: RAW_WATCH_CALLS }, () => garbage(rng, () => WatchRequest.encode(factory.watch()).finish(), opts));
    await pool(watchInputs.length, 32, async (i) => {
      const input = watchInputs[i]!;
      const out = await rawServerStream(raw, SessionServiceService.watch.path, input.bytes, deadline());
      count('raw Watch', out.code);
      const where = `raw Watch #${i} [${input.kind}] bytes=${hexPreview(input.bytes)}`;
      if (input.bytes.length > MAX_MESSAGE_BYTES) {
        if (out.code !== S.RESOURCE_EXHAUSTED) findings.add(`${where}: oversize got ${statusName(out.code)}`);
        return;
      }
      if (!decodes(WatchRequest.decode, input.bytes)) {
        if (out.code !== undecodableStatus(WatchRequest.decode, input.bytes)) findings.add(`${where}: undecodable request got ${statusName(out.code)} (${out.details})`);
        return;
      }
      const id = WatchRequest.decode(input.bytes).sessionId;
      const expected = id !== '' && sessionIdProblem(id) !== undefined ? S.INVALID_ARGUMENT : S.CANCELLED;
      if (out.code !== expected) findings.add(`${where}: watch of ${JSON.stringify(id.slice(0, 40))} got ${statusName(out.code)} (${out.details}), expected ${statusName(expected)}`);
    });

    const exchangeInputs = Array.from({ length: RAW_EXCHANGE_STREAMS }, () =>
      Array.from({ length: 1 + rng.below(6) }, () =>
        garbage(rng, () => ExchangeRequest.encode(factory.exchange(randomUint64(rng))).finish(), { ...opts, oversizeChance: 0.002 }),
      ),
    );
    await pool(exchangeInputs.length, 16, async (i) => {
      const frames = exchangeInputs[i]!;
      const out = await rawBidi(raw, SessionServiceService.exchange.path, frames.map((f) => f.bytes), deadline());
      count('raw Exchange', out.code);
      const where = `raw Exchange #${i} frames=[${frames.map((f) => `${f.kind}:${hexPreview(f.bytes, 32)}`).join(' | ')}]`;
      const firstBad = frames.findIndex((f) => f.bytes.length > MAX_MESSAGE_BYTES || !decodes(ExchangeRequest.decode, f.bytes));
      if (firstBad < 0) {
        // Every frame is a request: each gets exactly one response and the stream ends OK.
        if (out.code !== S.OK) findings.add(`${where}: decodable frames got ${statusName(out.code)} (${out.details})`);
        else if (out.responses.length !== frames.length) findings.add(`${where}: ${frames.length} requests, ${out.responses.length} responses`);
        else {
          const asked = frames.map((f) => ExchangeRequest.decode(f.bytes).requestId).sort();
          const answered = out.responses.map((r) => ExchangeResponse.decode(r).requestId).sort();
          if (asked.join() !== answered.join()) findings.add(`${where}: request ids ${asked.join()} answered as ${answered.join()}`);
        }
      } else {
        const expected = frames[firstBad]!.bytes.length > MAX_MESSAGE_BYTES ? S.RESOURCE_EXHAUSTED : undecodableStatus(ExchangeRequest.decode, frames[firstBad]!.bytes);
        if (out.code !== expected) findings.add(`${where}: bad frame ${firstBad} got ${statusName(out.code)} (${out.details}), expected ${statusName(expected)}`);
        if (out.responses.length > firstBad) findings.add(`${where}: ${out.responses.length} responses, but frame ${firstBad} was bad`);
      }
    });

    const paths = [
      '/baton.v1.SessionService/Nope',
      '/baton.v1.SessionService/put',
      '/baton.v1.SessionService/Put/extra',
      '/baton.v1.NoSuchService/Put',
      '/baton.v1.ClusterService/Join',
      '/grpc.health.v1.Health/Nope',
      '/x',
      '/',
    ];
    await pool(RAW_UNKNOWN_PATH_CALLS, 32, async (i) => {
      const local = rngFor(1000 + i);
      const path = chance(local, 0.5) ? pick(local, paths) : `/${asciiString(local, 1 + local.below(20)).replace(/[^A-Za-z0-9.]/g, 'q')}/${asciiString(local, 1 + local.below(20)).replace(/[^A-Za-z0-9]/g, 'Q')}`;
      const bytes = randomBytes(local, skewedLength(local, 4096));
      const out = i % 3 === 0 ? await rawBidi(raw, path, [bytes, bytes], deadline()) : await rawUnary(raw, path, bytes, deadline());
      count('raw unknown path', out.code);
      if (out.code !== S.UNIMPLEMENTED) findings.add(`unknown path #${i} ${path} got ${statusName(out.code)} (${out.details})`);
    });

    await expectAlive(findings);
    findings.check();
  }, 60_000);

  it('answers gRPC framing garbage on a bare HTTP/2 connection', async () => {
    const rng = rngFor(3);
    const factory = new RequestFactory(rng);
    const findings = new Findings('http2 framing');
    const session = http2.connect(`http://${node.apiAddress}`);
    session.on('error', (err) => findings.add(`HTTP/2 connection error: ${err.message}`));
    const bomb = zlib.gzipSync(Buffer.alloc(8 * 1024 * 1024));
    const paths = [SessionServiceService.put.path, SessionServiceService.get.path, SessionServiceService.exchange.path, SessionServiceService.watch.path, '/baton.v1.ClusterService/Status'];

    const frame = (flag: number, declared: number, payload: Buffer): Buffer => {
      const head = Buffer.alloc(5);
      head.writeUInt8(flag, 0);
      head.writeUInt32BE(declared >>> 0, 1);
      return Buffer.concat([head, payload]);
    };
    interface H2Case {
      label: string;
      headers: http2.OutgoingHttpHeaders;
      body: Buffer;
    }
    const cases: H2Case[] = Array.from({ length: HTTP2_CALLS }, () => {
      const path = pick(rng, paths);
      const valid = Buffer.from(GetRequest.encode(factory.get()).finish());
      const headers: http2.OutgoingHttpHeaders = { ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers', 'grpc-timeout': '10S' };
      const payload = randomBytes(rng, skewedLength(rng, 2048));
      switch (rng.below(12)) {
        case 0:
          return { label: 'declared length above the limit', headers, body: frame(0, pick(rng, [0xffffffff, 0x7fffffff, MAX_MESSAGE_BYTES + 1]), payload) };
        case 1:
          return { label: 'declared length beyond the body', headers, body: frame(0, payload.length + 1 + rng.below(1000), payload) };
        case 2:
          return { label: 'partial frame header', headers, body: Buffer.from([0, 0, 0]) };
        case 3:
          return { label: 'no message', headers, body: Buffer.alloc(0) };
        case 4:
          return { label: 'two messages', headers, body: Buffer.concat([frame(0, valid.length, valid), frame(0, valid.length, valid)]) };
        case 5:
          return { label: 'compressed flag, bad gzip', headers: { ...headers, 'grpc-encoding': 'gzip' }, body: frame(1, payload.length, payload) };
        case 6:
          return { label: 'compressed flag, gzip bomb', headers: { ...headers, 'grpc-encoding': 'gzip' }, body: frame(1, bomb.length, bomb) };
        case 7:
          return { label: 'compressed flag, unknown encoding', headers: { ...headers, 'grpc-encoding': pick(rng, ['br', 'x-bogus', 'identity']) }, body: frame(1, valid.length, valid) };
        case 8:
          return { label: 'flag byte not 0 or 1', headers, body: frame(2 + rng.below(254), valid.length, valid) };
        case 9:
          return { label: 'bad grpc-timeout', headers: { ...headers, 'grpc-timeout': pick(rng, ['abc', '-1S', '99999999999H', '']) }, body: frame(0, valid.length, valid) };
        case 10:
          return { label: 'bad content-type', headers: { ...headers, 'content-type': pick(rng, ['text/plain', 'application/json', 'application/grpc+proto']) }, body: frame(0, valid.length, valid) };
        default:
          return { label: 'random body', headers, body: payload };
      }
    });

    await pool(cases.length, 16, async (i) => {
      const c = cases[i]!;
      const result = await new Promise<{ http?: number; grpcStatus?: string; error?: string }>((resolve) => {
        const out: { http?: number; grpcStatus?: string; error?: string } = {};
        const req = session.request(c.headers);
        const guard = setTimeout(() => {
          out.error = `no answer within ${CALL_DEADLINE_MS + 5000} ms`;
          req.close(http2.constants.NGHTTP2_CANCEL);
        }, CALL_DEADLINE_MS + 5000);
        req.on('response', (h) => {
          out.http = Number(h[':status']);
          if (h['grpc-status'] !== undefined) out.grpcStatus = String(h['grpc-status']);
          // A watch that was accepted stays open: we only wanted to see it answered.
          if (h['grpc-status'] === undefined && c.headers[':path'] === SessionServiceService.watch.path) req.close(http2.constants.NGHTTP2_CANCEL);
        });
        req.on('trailers', (t) => (out.grpcStatus = String(t['grpc-status'])));
        req.on('data', () => undefined);
        req.on('error', (err) => (out.error ??= err.message));
        req.on('close', () => {
          clearTimeout(guard);
          resolve(out);
        });
        req.end(c.body);
      });
      callsMade++;
      const label = `http2 ${c.label}`;
      const byCode = tally.get('http2') ?? new Map<string, number>();
      const key = result.grpcStatus !== undefined ? statusName(Number(result.grpcStatus)) : `http-${result.http ?? 'none'}`;
      byCode.set(key, (byCode.get(key) ?? 0) + 1);
      tally.set('http2', byCode);
      const accepted = c.headers[':path'] === SessionServiceService.watch.path && result.http === 200 && result.grpcStatus === undefined;
      if (result.error !== undefined && !accepted) findings.add(`${label} #${i} on ${c.headers[':path']}: ${result.error}; body=${hexPreview(c.body)}`);
      else if (result.http === undefined) findings.add(`${label} #${i}: no response headers`);
      else if (result.grpcStatus === undefined && result.http === 200 && !accepted) findings.add(`${label} #${i}: HTTP 200 without grpc-status`);
      else if (result.grpcStatus === String(S.UNKNOWN)) findings.add(`${label} #${i}: grpc-status UNKNOWN`);
    });
    await new Promise<void>((resolve) => session.close(() => resolve()));
    await expectAlive(findings);
    findings.check();
  }, 60_000);

  it('answers random structured values on every unary method as the contract says', async () => {
    const rng = rngFor(4);
    const factory = new RequestFactory(rng);
    const findings = new Findings('structured unary');
    for (let i = 0; i < STRUCTURED_CALLS; i++) {
      const r = rng.next();
      const method = r < 0.45 ? 'put' : r < 0.7 ? 'get' : r < 0.82 ? 'delete' : r < 0.95 ? 'touch' : 'status';
      if (method === 'status') {
        const out = await call<StatusRequest, StatusResponse>(cluster, 'status', {});
        count('Status', out.ok ? S.OK : out.code);
        if (!out.ok) findings.add(`Status #${i} failed: ${statusName(out.code)} ${out.details}`);
        else if (out.value.bytes > BigInt(MAX_MEMORY_BYTES) || out.value.maxBytes !== BigInt(MAX_MEMORY_BYTES) || out.value.nodeId !== NODE_ID) {
          findings.add(`Status #${i}: ${show(out.value)}`);
        }
        continue;
      }
      const request = method === 'put' ? factory.put() : method === 'get' ? factory.get() : method === 'delete' ? factory.delete() : factory.touch();
      const out = await call<typeof request, unknown>(client, method, request);
      count(method, out.ok ? S.OK : out.code);
      const problem = judge(method, request, out);
      if (problem !== undefined) {
        findings.add(`${method} #${i} ${show(request)}: ${problem}`);
        continue;
      }
      if (method === 'put' && out.ok) {
        // What was acknowledged reads back: same bytes, same version, this node as writer.
        const put = request as PutRequest;
        const res = out.value as PutResponse;
        factory.remember(put, res);
        const got = await call<GetRequest, GetResponse>(client, 'get', { sessionId: put.sessionId, parts: [], resume: false });
        count('get (read-back)', got.ok ? S.OK : got.code);
        if (!got.ok || !got.value.found) {
          findings.add(`put #${i} ${show(put)} succeeded, then the read-back got ${got.ok ? 'found=false' : statusName(got.code)}`);
          continue;
        }
        for (const written of put.parts) {
          const part = got.value.session!.parts.find((p) => p.name === written.name);
          if (part === undefined || !Buffer.from(part.value).equals(Buffer.from(written.value)) || part.version !== res.versions[0]!.version || part.writerNodeId !== NODE_ID) {
            findings.add(`put #${i} ${show(put)}: read back part ${written.name} as ${part === undefined ? 'missing' : show(part)}`);
          }
        }
      }
    }
    await expectAlive(findings);
    findings.check();
  }, 60_000);

  it('answers every request of one Exchange stream of random operations exactly once, and keeps it open', async () => {
    const rng = rngFor(5);
    const factory = new RequestFactory(rng);
    const findings = new Findings('exchange');
    trace('exchange: start');
    const requests: ExchangeRequest[] = [];
    const ids = new Set<bigint>();
    while (requests.length < EXCHANGE_OPERATIONS) {
      const id = pick(rng, [BigInt(requests.length), randomUint64(rng), UINT64_MAX - BigInt(requests.length), 0n]);
      if (ids.has(id)) continue;
      ids.add(id);
      requests.push(factory.exchange(id));
    }
    trace(`exchange: ${requests.length} requests generated`);
    const byId = new Map(requests.map((r) => [r.requestId, r]));
    const answers = new Map<bigint, ExchangeResponse[]>();
    const call = client.exchange(new grpc.Metadata(), { deadline: new Date(Date.now() + 55_000) });
    let received = 0;
    let ended: grpc.StatusObject | undefined;
    const allAnswered = new Promise<void>((resolve) => {
      call.on('data', (r: ExchangeResponse) => {
        answers.set(r.requestId, [...(answers.get(r.requestId) ?? []), r]);
        if (++received === requests.length + 1) resolve();
      });
      call.on('status', (s: grpc.StatusObject) => {
        ended = s;
        resolve();
      });
    });
    call.on('error', () => undefined);
    for (const r of requests) call.write(r);
    // One more request after all the random ones: the stream must still be serving.
    const lastId = UINT64_MAX - 1_000_000n;
    call.write({ requestId: lastId, op: { $case: 'get', get: { sessionId: 'after-the-storm', parts: [], resume: false } }, deadlineMs: 0, batch: [] });
    await allAnswered;
    trace(`exchange: ${received} responses`);
    if (ended !== undefined) findings.add(`the stream ended early after ${received} responses: ${statusName(ended.code)} (${ended.details})`);
    const statusDone = new Promise<grpc.StatusObject>((resolve) => (ended ? resolve(ended) : call.on('status', resolve)));
    call.end();
    const final = await statusDone;
    count('Exchange stream', final.code);
    if (final.code !== S.OK) findings.add(`the stream closed with ${statusName(final.code)} (${final.details})`);
    if (answers.get(lastId)?.[0]?.result?.$case !== 'get') findings.add(`the request after the random ones got ${show(answers.get(lastId))}`);

    for (const [id, responses] of answers) {
      if (id !== lastId && !byId.has(id)) findings.add(`a response for request id ${id}, which was never sent`);
      if (responses.length > 1) findings.add(`request id ${id} answered ${responses.length} times`);
    }
    for (const request of requests) {
      const response = answers.get(request.requestId)?.[0];
      const where = () => `exchange request ${show(request)}`;
      if (response === undefined) {
        findings.add(`${where()}: no response`);
        continue;
      }
      const result = response.result;
      const op = request.op;
      if (op === undefined) {
        if (result?.$case !== 'error' || result.error.code !== S.INVALID_ARGUMENT) findings.add(`${where()} (no operation): answered ${show(result)}`);
        count('exchange (no op)', result?.$case === 'error' ? result.error.code : S.OK);
        continue;
      }
      const method = op.$case;
      const inner = op.$case === 'put' ? op.put : op.$case === 'get' ? op.get : op.$case === 'delete' ? op.delete : op.touch;
      let outcome: Outcome<unknown>;
      if (result?.$case === 'error') outcome = { ok: false, code: result.error.code, details: result.error.message };
      else if (result?.$case === method) outcome = { ok: true, value: (result as Record<string, unknown>)[method] };
      else {
        findings.add(`${where()}: answered with ${result?.$case ?? 'no result'}`);
        continue;
      }
      count(`exchange ${method}`, outcome.ok ? S.OK : outcome.code);
      const problem = judge(method, inner, outcome);
      if (problem !== undefined) findings.add(`${where()}: ${problem}`);
    }
    await expectAlive(findings);
    findings.check();
  }, 60_000);

  it('refuses Watch of an invalid session id with INVALID_ARGUMENT and opens the others', async () => {
    const rng = rngFor(6);
    const factory = new RequestFactory(rng);
    const findings = new Findings('watch');
    const requests = Array.from({ length: WATCH_CALLS }, () => ({ request: factory.watch(), writeOne: chance(rng, 0.1) }));
    await pool(requests.length, 16, async (i) => {
      const { request, writeOne } = requests[i]!;
      const problem = request.sessionId === '' ? undefined : sessionIdProblem(request.sessionId);
      const watchedWrite = writeOne && request.sessionId !== '' && problem === undefined;
      let wrote = false;
      const out = await rawServerStream(raw, SessionServiceService.watch.path, Buffer.from(WatchRequest.encode(request).finish()), deadline(), {
        onOpen: (cancel) => {
          if (!watchedWrite) return cancel();
          // A registered watcher sees a write to its session; cancel once it arrives.
          const put: PutRequest = { sessionId: request.sessionId, parts: [{ name: 'watched', value: Buffer.from([i & 0xff]), ifVersion: undefined }], ttlSeconds: 0, minReplicas: 0 };
          void call<PutRequest, PutResponse>(client, 'put', put).then((o) => {
            count('put (watched)', o.ok ? S.OK : o.code);
            wrote = o.ok;
            if (!o.ok) cancel();
          });
        },
        onData: (_data, cancel) => cancel(),
      });
      count('Watch', out.code);
      const where = () => `Watch #${i} ${show(request)}`;
      if (problem !== undefined) {
        if (out.code !== S.INVALID_ARGUMENT || out.metadata) findings.add(`${where()}: invalid id (${problem}) got ${statusName(out.code)} (${out.details})`);
        return;
      }
      if (out.code !== S.CANCELLED || !out.metadata) findings.add(`${where()}: valid id got ${statusName(out.code)} (${out.details}) before we cancelled`);
      if (wrote) {
        const event = out.responses.length > 0 ? WatchEvent.decode(out.responses[0]!) : undefined;
        if (event?.sessionId !== wireString(request.sessionId) || event.partName !== 'watched') findings.add(`${where()}: after a write, the watcher saw ${show(event)}`);
      }
    });
    await expectAlive(findings);
    findings.check();
  }, 60_000);

  it('answers raw garbage and random values on the peer service (Digests, Fetch)', async () => {
    const rng = rngFor(7);
    const findings = new Findings('peer service');
    const peer = new grpc.Client(node.peerAddress, grpc.credentials.createInsecure());
    const partitions = (): number[] =>
      Array.from({ length: chance(rng, 0.3) ? 0 : 1 + rng.below(8) }, () => (chance(rng, 0.8) ? rng.below(PARTITIONS) : pick(rng, [PARTITIONS, PARTITIONS + 1, UINT32_MAX, rng.nextUint32()])));
    const digestsValid = () => DigestsRequest.encode({ partitions: partitions() }).finish();
    const fetchValid = () =>
      FetchRequest.encode({ partitions: partitions(), sessionIds: chance(rng, 0.5) ? [] : Array.from({ length: 1 + rng.below(5) }, () => (chance(rng, 0.5) ? pick(rng, POOL_IDS) : awkwardString(rng))) }).finish();
    const opts = { maxBytes: 10 * 1024, oversizeBytes: 0, oversizeChance: 0 };
    const inputs = [
      ...Array.from({ length: PEER_CALLS_PER_METHOD }, () => ({ fetch: false, input: garbage(rng, digestsValid, opts) })),
      ...Array.from({ length: PEER_CALLS_PER_METHOD }, () => ({ fetch: true, input: garbage(rng, fetchValid, opts) })),
    ];
    await pool(inputs.length, 16, async (i) => {
      const { fetch, input } = inputs[i]!;
      const label = fetch ? 'raw peer Fetch' : 'raw peer Digests';
      // Fetch streams to the end by itself: never cancel it.
      const out = fetch
        ? await rawServerStream(peer, PeerServiceService.fetch.path, input.bytes, deadline(), { onOpen: () => undefined })
        : await rawUnary(peer, PeerServiceService.digests.path, input.bytes, deadline());
      count(label, out.code);
      const where = `${label} #${i} [${input.kind}] bytes=${hexPreview(input.bytes)}`;
      const decode = fetch ? FetchRequest.decode : DigestsRequest.decode;
      if (!decodes(decode, input.bytes)) {
        const expected = undecodableStatus(decode, input.bytes);
        if (out.code !== expected) findings.add(`${where}: undecodable request got ${statusName(out.code)} (${out.details}), expected ${statusName(expected)}`);
        return;
      }
      const request = decode(input.bytes) as FetchRequest;
      const outOfRange = request.partitions.some((p) => p >= PARTITIONS);
      const expected = fetch && request.sessionIds?.length > 0 ? S.OK : outOfRange ? S.INVALID_ARGUMENT : S.OK;
      if (out.code !== expected) findings.add(`${where} = ${show(request)}: got ${statusName(out.code)} (${out.details}), expected ${statusName(expected)}`);
      else if (out.code === S.OK) {
        const responses = fetch ? out.responses.map((r) => SessionEntry.decode(r)) : [DigestsResponse.decode(out.responses[0]!)];
        if (!fetch && (responses[0] as DigestsResponse).nodeId !== NODE_ID) findings.add(`${where}: digests from ${(responses[0] as DigestsResponse).nodeId}`);
      }
    });
    peer.close();
    await expectAlive(findings);
    findings.check();
  }, 60_000);

  /** A normal write reads back, the HTTP endpoints answer, and memory is within bounds. */
  async function expectServing(findings: Findings, sessionId: string): Promise<string | undefined> {
    if (node.child.exitCode !== null || node.child.signalCode !== null) {
      await expectAlive(findings); // reports the exit, stderr and last log lines
      return undefined;
    }
    const value = Buffer.from(`still here: ${sessionId}`);
    const put = await call<PutRequest, PutResponse>(client, 'put', { sessionId, parts: [{ name: 'check', value, ifVersion: undefined }], ttlSeconds: 0, minReplicas: 0 });
    if (!put.ok) findings.add(`a normal Put failed: ${statusName(put.code)} ${put.details}`);
    const got = await call<GetRequest, GetResponse>(client, 'get', { sessionId, parts: ['check'], resume: false });
    if (!(got.ok && got.value.found && Buffer.from(got.value.session!.parts[0]!.value).equals(value))) findings.add(`a normal Get did not read the Put back: ${show(got)}`);
    await node.ready();
    for (const path of ['/healthz', '/readyz']) {
      const status = (await fetch(`${node.metricsUrl}${path}`)).status;
      if (status !== 200) findings.add(`${path} answered ${status}`);
    }
    const response = await fetch(`${node.metricsUrl}/metrics`);
    if (response.status !== 200) findings.add(`/metrics answered ${response.status}`);
    const body = await response.text();
    const stored = metric(body, 'baton_stored_bytes');
    const rss = metric(body, 'process_resident_memory_bytes');
    if (stored === undefined || stored > MAX_MEMORY_BYTES) findings.add(`baton_stored_bytes ${stored} is over the ${MAX_MEMORY_BYTES}-byte budget`);
    if (rss === undefined || rss > MAX_RSS_BYTES) findings.add(`process_resident_memory_bytes ${rss} is over ${MAX_RSS_BYTES}`);
    return body;
  }

  it('still serves after the API fuzzing, within its memory budget, with no internal error and no stream left counted', async () => {
    const findings = new Findings('after the API fuzzing');
    let body = await expectServing(findings, 'after-api');
    if (body === undefined) return findings.check();
    // The inputs wrote well over 4 MiB, so the budget was really exercised.
    const evictions = metric(body, 'baton_evictions_total');
    if (!(evictions! > 0)) findings.add(`baton_evictions_total is ${evictions}: the fuzzing never reached the memory budget`);
    const internal = /^baton_operations_total\{[^}]*result="error"[^}]*\} (\S+)$/m.exec(body);
    if (internal) findings.add(`operations ended in internal errors: ${internal[0]}`);

    // Every stream we opened is closed, so the gauges must be back at zero. Cancellations
    // travel on other streams than the /metrics request: read a few times.
    const open = (b: string) => [metric(b, 'baton_exchange_streams'), metric(b, 'baton_watchers')];
    for (let attempt = 0; attempt < 50 && open(body).some((n) => n !== 0); attempt++) body = await (await fetch(`${node.metricsUrl}/metrics`)).text();
    const [exchangeStreams, watchers] = open(body);
    if (exchangeStreams !== 0) {
      findings.add(
        `baton_exchange_streams is ${exchangeStreams} with no Exchange stream open ` +
          `(the raw phases ended ${tally.get('raw Exchange')?.get('INTERNAL') ?? 0} streams with an undecodable frame)`,
      );
    }
    if (watchers !== 0) findings.add(`baton_watchers is ${watchers} with no watch open`);

    const errors = node.logs.filter((l) => l.level === 'error' || l.level === 'fatal');
    if (errors.length > 0) findings.add(`the sidecar logged errors: ${JSON.stringify(errors.slice(0, 3))}`);
    if (node.stderr.length > 0) findings.add(`the sidecar wrote to stderr: ${node.stderr.slice(0, 10).join('\n')}`);
    findings.check();
  }, 60_000);

  it('drops or applies random replication datagrams, and keeps memory bounded', async () => {
    const rng = rngFor(8);
    const findings = new Findings('datagrams');
    const started = node.logs.find((l) => l.msg === 'baton node started')!;
    const ourIncarnation = BigInt(`0x${String(started.incarnation)}`);
    // The node runs unicast without a key: its digest is this one.
    const digest = clusterConfigDigest({ partitions: PARTITIONS, replicas: REPLICAS, hasher: new BuzHash(CLUSTER_SEED), protocolVersion: FORMAT_VERSION, multicastGroups: [], clusterKeyId: 0 });
    const [peerHost, peerPort] = [node.peerAddress.slice(0, node.peerAddress.lastIndexOf(':')), Number(node.peerAddress.slice(node.peerAddress.lastIndexOf(':') + 1))];
    const socket = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
    const fakes = Array.from({ length: 6 }, (_, i) => ({ id: `fake-${i}`, incarnation: (BigInt(Date.now()) << 16n) + BigInt(i), packet: 0n, seq: 0n }));
    const sent: Buffer[] = [];
    let datagramsSent = 0;
    let bytesSent = 0;
    const send = (datagram: Buffer) =>
      new Promise<void>((resolve) => {
        datagramsSent++;
        bytesSent += datagram.length;
        callsMade++;
        socket.send(datagram, peerPort, peerHost, (err) => {
          if (err) findings.add(`sending a ${datagram.length}-byte datagram failed: ${err.message}`);
          resolve();
        });
      });
    const seqValue = (next: bigint): bigint => pick(rng, [next, next, next, 0n, 1n, randomUint64(rng), UINT64_MAX, 2n ** 53n]);
    const address = (): string =>
      pick(rng, ['', '127.0.0.1:1', node.peerAddress, node.apiAddress, `127.0.0.1:${1024 + rng.below(60000)}`, '127.0.0.1:0', '127.0.0.1:99999', '[::1]:70000', '127.0.0.1:x', ':::', '999.1.1.1:5']);
    const delta = (): Delta => ({
      sessionId: chance(rng, 0.6) ? pick(rng, POOL_IDS) : awkwardString(rng).slice(0, 200),
      kind: rng.below(7),
      partName: chance(rng, 0.8) ? pick(rng, [...VALID_NAMES, ...WELL_KNOWN]) : pick(rng, INVALID_NAMES),
      value: randomBytes(rng, skewedLength(rng, 300)),
      version: pick(rng, [0n, 1n, BigInt(Date.now()) * 1024n, BigInt(Date.now() + 3_600_000) * 1024n, UINT64_MAX, randomUint64(rng)]),
      writerNodeId: pick(rng, ['', NODE_ID, 'fake-0', awkwardString(rng).slice(0, 100)]),
      expiresAtUnixMs: pick(rng, [0n, BigInt(Date.now() + 60_000), -1n, 2n ** 63n - 1n, -(2n ** 63n), BigInt.asIntN(64, randomUint64(rng))]),
      ttlMs: pick(rng, [0, 1, 60_000, UINT32_MAX, rng.nextUint32()]),
      ownerNodeId: pick(rng, ['', NODE_ID, 'fake-1', awkwardString(rng).slice(0, 100)]),
      epoch: pick(rng, [0n, 1n, 2n, UINT64_MAX, randomUint64(rng)]),
      writtenAtUnixMs: pick(rng, [BigInt(Date.now()), 0n, BigInt.asIntN(64, randomUint64(rng))]),
      claimedParts: chance(rng, 0.8) ? [] : Array.from({ length: skewedLength(rng, 2000) }, () => (chance(rng, 0.5) ? pick(rng, [...VALID_NAMES, ...WELL_KNOWN]) : awkwardString(rng).slice(0, 80))),
    });
    const structured = (fake: (typeof fakes)[number]): Datagram => {
      // Node ids are free text: '' and our own id must be refused, and one with a '/' must
      // not be confused with the member whose id precedes it.
      const senderNodeId = pick(rng, [fake.id, fake.id, fake.id, '', NODE_ID, `${fake.id}/${rng.below(10)}`, awkwardString(rng).slice(0, 100)]);
      const r = rng.next();
      if (r < 0.4) {
        const count = pick(rng, [0, 1, 2, 3, 1000, 1 << 16, (1 << 16) + 1, UINT32_MAX, rng.nextUint32()]);
        return {
          senderNodeId,
          body: {
            $case: 'data',
            data: {
              targetNodeId: pick(rng, ['', '', NODE_ID, 'someone-else']),
              seq: seqValue(++fake.seq),
              deltas: Array.from({ length: rng.below(3) }, delta),
              fragment: chance(rng, 0.3)
                ? { deltaId: pick(rng, [0n, 1n, randomUint64(rng)]), index: pick(rng, [0, 1, count - 1, count, rng.nextUint32()]) >>> 0, count, chunk: randomBytes(rng, skewedLength(rng, 600)) }
                : undefined,
              ackRequested: chance(rng, 0.2),
              retransmit: chance(rng, 0.1),
            },
          },
        };
      }
      if (r < 0.65) {
        return {
          senderNodeId,
          body: {
            $case: 'heartbeat',
            heartbeat: {
              advertiseAddress: address(),
              configDigest: chance(rng, 0.7) ? digest : randomUint64(rng),
              channels: Array.from({ length: rng.below(4) }, () => ({ targetNodeId: pick(rng, ['', NODE_ID, 'x']), highestSeq: seqValue(fake.seq) })),
              role: rng.below(4),
              settingDigests: chance(rng, 0.5) ? [] : [{ setting: pick(rng, ['partitions', 'hash_seed', 'x']), digest: randomUint64(rng) }],
              leaving: chance(rng, 0.1),
              pulling: chance(rng, 0.5),
              sentAtUnixMs: pick(rng, [BigInt(Date.now()), 0n, BigInt.asIntN(64, randomUint64(rng))]),
              known: Array.from({ length: rng.below(4) }, () => ({ nodeId: pick(rng, [NODE_ID, 'fake-2', 'ghost', awkwardString(rng).slice(0, 100)]), advertiseAddress: address() })),
              priority: rng.nextUint32() | 0,
              echoes: Array.from({ length: rng.below(3) }, () => ({ nodeId: pick(rng, [NODE_ID, 'x']), sentAtUnixMs: BigInt.asIntN(64, randomUint64(rng)), heldMs: pick(rng, [0, -1, 1e30, Number.NaN]) })),
              delays: Array.from({ length: rng.below(3) }, () => ({ nodeId: pick(rng, [NODE_ID, 'ghost', '']), roundTripMs: pick(rng, [0, -5, 3.5, Number.POSITIVE_INFINITY]) })),
              viewId: pick(rng, [0n, 1n, randomUint64(rng)]),
              viewCoordinator: pick(rng, ['', NODE_ID, 'fake-2', awkwardString(rng).slice(0, 100)]),
            },
          },
        };
      }
      const range = () => ({ first: pick(rng, [0n, 1n, randomUint64(rng), UINT64_MAX]), last: pick(rng, [0n, 1n, 100n, randomUint64(rng), UINT64_MAX]) });
      const channelSender = pick(rng, [NODE_ID, NODE_ID, 'fake-3']);
      const channelIncarnation = pick(rng, [ourIncarnation, ourIncarnation, randomUint64(rng), 0n]);
      if (r < 0.75) return { senderNodeId, body: { $case: 'nack', nack: { channelSenderNodeId: channelSender, channelSenderIncarnation: channelIncarnation, targetNodeId: pick(rng, ['', senderNodeId, 'x']), ranges: Array.from({ length: rng.below(6) }, range) } } };
      if (r < 0.85) return { senderNodeId, body: { $case: 'ack', ack: { channelSenderNodeId: channelSender, channelSenderIncarnation: channelIncarnation, targetNodeId: pick(rng, ['', senderNodeId]), cumulativeSeq: pick(rng, [0n, 1n, UINT64_MAX, randomUint64(rng)]), superseded: Array.from({ length: rng.below(3) }, () => ({ seq: pick(rng, [0n, 1n, UINT64_MAX, randomUint64(rng)]), sessionId: pick(rng, ['s1', '', 'x'.repeat(600)]), ownerNodeId: pick(rng, [NODE_ID, '', 'bad id']), epoch: pick(rng, [0n, 2n, UINT64_MAX]) })), supersededCompleteAbove: pick(rng, [0n, 1n, UINT64_MAX]) } } };
      if (r < 0.93) return { senderNodeId, body: { $case: 'gone', gone: { targetNodeId: pick(rng, ['', NODE_ID, 'x']), firstRetainedSeq: pick(rng, [0n, 1n, UINT64_MAX, randomUint64(rng)]) } } };
      if (r < 0.95) return { senderNodeId, body: { $case: 'leave', leave: {} } };
      if (r < 0.965) {
        const index = () => (chance(rng, 0.1) ? undefined : { nodeId: pick(rng, [senderNodeId, NODE_ID, '', 'bad id', awkwardString(rng).slice(0, 100)]), priority: pick(rng, [0, 1, -1, 2 ** 31 - 1, -(2 ** 31)]) });
        return { senderNodeId, body: { $case: 'coordinatorNotice', coordinatorNotice: { kind: pick(rng, [0, 1, 2, 3, 99]) as CoordinatorNoticeKind, sender: index(), revoked: index() } } };
      }
      if (r < 0.98) {
        const memberCount = pick(rng, [0, 1, 2, 3, 4096, 4097, UINT32_MAX, rng.nextUint32()]);
        const members = Array.from({ length: rng.below(5) }, (_, i) => ({ nodeId: pick(rng, [senderNodeId, NODE_ID, 'fake-2', '', 'bad id']), priority: pick(rng, [0, 5, -(2 ** 31)]), index: pick(rng, [i, 0, UINT32_MAX]), role: pick(rng, ['edge', 'store', '', 'x'.repeat(300)]) }));
        return { senderNodeId, body: { $case: 'viewPage', viewPage: { viewId: pick(rng, [0n, 1n, 2n, UINT64_MAX, randomUint64(rng)]), coordinatorNodeId: pick(rng, [senderNodeId, NODE_ID, '']), memberCount, first: pick(rng, [0, 1, UINT32_MAX, rng.nextUint32()]), members } } };
      }
      return { senderNodeId, body: undefined };
    };
    const header = (incarnation: bigint, packet: bigint, keyId = 0): Buffer => {
      const h = Buffer.alloc(HEADER_BYTES);
      h.writeUInt16BE(MAGIC, 0);
      h[2] = FORMAT_VERSION;
      h[3] = keyId;
      h.writeBigUInt64BE(BigInt.asUintN(64, incarnation), 4);
      h.writeBigUInt64BE(BigInt.asUintN(64, packet), 12);
      return h;
    };

    try {
      // Fragments that declare the largest allowed count (65536) but carry one byte each:
      // whatever the node sets aside for them must stay within the memory bounds.
      const flooder = { id: 'fragment-flood', incarnation: BigInt(Date.now()) << 16n };
      for (let i = 0; i < FRAGMENT_FLOOD; i++) {
        const d: Datagram = {
          senderNodeId: flooder.id,
          body: { $case: 'data', data: { targetNodeId: '', seq: BigInt(i + 1), deltas: [], fragment: { deltaId: BigInt(i), index: 0, count: 1 << 16, chunk: Buffer.from([i & 0xff]) }, ackRequested: false, retransmit: false } },
        };
        await send(Buffer.concat([header(flooder.incarnation, BigInt(i + 1)), Buffer.from(Datagram.encode(d).finish())]));
        if (i % 100 === 99) await expectAlive(findings);
      }
      await expectAlive(findings);
      const floodBytes = bytesSent;
      const flooded = await (await fetch(`${node.metricsUrl}/metrics`)).text();
      const rss = metric(flooded, 'process_resident_memory_bytes');
      const reassembly = metric(flooded, 'baton_replication_reassembly_bytes');
      if (rss === undefined || rss > MAX_RSS_BYTES) {
        findings.add(
          `after ${FRAGMENT_FLOOD} one-byte fragments (each declaring ${1 << 16} pieces, ${floodBytes} bytes of UDP in all), ` +
            `process_resident_memory_bytes is ${rss} (over ${MAX_RSS_BYTES}) while baton_replication_reassembly_bytes reports ${reassembly}`,
        );
      }

      // Then random datagrams: garbage, damaged headers, and structured bodies of every kind.
      for (let i = 0; i < UDP_DATAGRAMS; i++) {
        const fake = pick(rng, fakes);
        const payload = Buffer.from(Datagram.encode(structured(fake)).finish());
        let datagram: Buffer;
        switch (rng.below(12)) {
          case 0:
            datagram = randomBytes(rng, skewedLength(rng, 1500));
            break;
          case 1: {
            // A valid header in front of damage: wrong magic, version or key id, or no body.
            const h = header(fake.incarnation, ++fake.packet, pick(rng, [0, 0, 1, 255]));
            if (chance(rng, 0.3)) h[rng.below(4)]! ^= 1 << rng.below(8);
            datagram = Buffer.concat([h, chance(rng, 0.5) ? payload : randomBytes(rng, rng.below(64))]);
            break;
          }
          case 2: {
            const bytes = Buffer.concat([header(fake.incarnation, ++fake.packet), payload]);
            for (let f = 0; f < 1 + rng.below(6); f++) bytes[HEADER_BYTES + rng.below(Math.max(1, payload.length))]! ^= 1 << rng.below(8);
            datagram = bytes;
            break;
          }
          case 3:
            datagram = sent.length > 0 && chance(rng, 0.7) ? pick(rng, sent) : Buffer.concat([header(fake.incarnation, pick(rng, [0n, UINT64_MAX, 2n ** 53n])), payload]);
            break;
          case 4:
            datagram = Buffer.concat([header(fake.incarnation, ++fake.packet), payload, randomBytes(rng, 1401 + rng.below(20_000))]);
            break;
          default:
            datagram = Buffer.concat([header(fake.incarnation, ++fake.packet), payload]);
        }
        if (sent.length < 200) sent.push(datagram);
        await send(datagram);
        // Let the node drain its socket now and then; it must answer between bursts.
        if (i % 100 === 99) {
          await expectAlive(findings);
          if (node.child.exitCode !== null) findings.check();
        }
      }
      await expectAlive(findings);
      if (node.child.exitCode !== null || node.child.signalCode !== null) findings.check();
      const body = await (await fetch(`${node.metricsUrl}/metrics`)).text();
      if (!(metric(body, 'baton_replication_received_bytes_total')! > 0)) findings.add('no datagram reached the replication engine');
    } finally {
      socket.close();
      tally.set('datagrams', new Map([['sent', datagramsSent]]));
    }
    findings.check();
  }, 60_000);

  it('is still up after everything, serves, and exits 0 on SIGTERM (so it never crashed)', async () => {
    const findings = new Findings('at the end');
    await expectServing(findings, 'at-the-end');
    const code = await node.stop();
    if (code !== 0) findings.add(`exit code ${code} on SIGTERM; stderr: ${node.stderr.slice(-30).join('\n')}`);
    findings.check();
  }, 60_000);
});
