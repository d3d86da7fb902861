/**
 * Attacks a real sidecar process on every kind of stream a client or a peer can open —
 * unary calls, Exchange, Watch, and the peer service's Lookup, Fetch and Digests — with
 * messages and readers built to cost the node memory, and checks for each that
 *
 * (a) the attacker gets the documented status (RESOURCE_EXHAUSTED);
 * (b) a well-behaved client on its own connection keeps being served meanwhile: Put/Get
 *     round trips run back to back for as long as the attack is in flight, and each must
 *     complete within PROBE_DEADLINE_MS (a bound for "not frozen", not a benchmark);
 * (c) the process's resident memory (VmRSS from /proc/<pid>/status, sampled every
 *     RSS_SAMPLE_MS during and after the attack) stays under a bound: MAX_RSS_BYTES, or
 *     MAX_RSS_BYTES_TWO_64_MIB_MESSAGES for the one attack that legitimately costs more;
 * and that the node still exits 0 on SIGTERM (so it never crashed).
 *
 * Each test starts its own node (--max-memory-mb 64, loopback, no cluster key, so the
 * peer service is plaintext on the peer address): every measurement starts from a fresh
 * heap, and a node that fails one attack does not fail the others. A watchdog SIGKILLs a
 * node whose RSS passes KILL_RSS_BYTES, so a node without bounds cannot take the machine
 * down with it (without them, one Exchange message took RSS to 4.2 GB).
 *
 * Attacks are bounded in count and bytes; every call has a deadline. BATON_LIMITS_TRACE=1
 * prints what was measured.
 */
import * as grpc from '@grpc/grpc-js';
import { readFileSync } from 'node:fs';
import * as http2 from 'node:http2';
import { ExchangeRequest, type GetResponse, type PutResponse, SessionServiceClient, SessionServiceService, WatchRequest } from '../src/gen/baton/v1/session';
import { PeerServiceService } from '../src/gen/baton/v1/peer';
import { grpcFrame, rawBidi, rawServerStream, rawUnary, type RawOutcome, UnreadCall } from './support/raw-calls';
import { startSidecar, type SidecarProcess } from './support/sidecar-process';

const MAX_MEMORY_MB = 64;
const MAX_VALUE_BYTES = 1024 * 1024;
const MAX_PARTS = 64;
/**
 * The API server's message size limit for these options (sidecar/node.ts): 64 MiB + 64 KiB,
 * so a 64 MiB message passes grpc-js's size check and reaches the request scanner.
 */
const MAX_MESSAGE_BYTES = MAX_VALUE_BYTES * MAX_PARTS + 64 * 1024;
/** grpc-js's default receive limit, which the peer server keeps. */
const PEER_MAX_MESSAGE_BYTES = 4 * 1024 * 1024;

/**
 * The bounds on the node's RSS. An idle node holds ~72 MiB. grpc-js holds a message whole
 * before any deserializer sees it (its chunks, then the joined copy: up to twice its size),
 * so an attack costs about twice the bytes it has in flight at once on top of that: four
 * 16 MiB Puts or six 4 MB peer requests ~128 MiB or less (measured peaks 170 and 110 MiB),
 * a stalled Exchange stream 8 MiB of queued requests (86 MiB), a watcher 1/16 of the
 * 64 MiB budget while 1 MiB values pass through (126-138 MiB). 256 MiB leaves room for the
 * garbage collector's lag. Without the bounds (f456076) the unary attack ran into the
 * watchdog at 2 GiB, the peer one peaked at 1.0-1.1 GiB and the watch one at 321-330 MiB
 * (with only 200 Puts: the watcher was never dropped).
 */
const MAX_RSS_BYTES = 256 * 1024 * 1024;
/**
 * Two 64 MiB Exchange messages at once are 128 MiB in flight, held twice at worst (measured
 * peak 326-330 MiB). 512 MiB is still 8x under the 4.2 GB one of them cost without the bounds
 * (at f456076 the two ran into the watchdog at 2 GiB within seconds).
 */
const MAX_RSS_BYTES_TWO_64_MIB_MESSAGES = 512 * 1024 * 1024;
/** The watchdog: past this the node is killed (and the test fails), before it eats the machine. */
const KILL_RSS_BYTES = 2 * 1024 * 1024 * 1024;
const RSS_SAMPLE_MS = 20;
/** How long one probe (a Put, then a Get of what it wrote) may take. */
const PROBE_DEADLINE_MS = 5_000;
/** Hang protection for the attacks' calls: a bounded node answers them in well under a second. */
const ATTACK_DEADLINE_MS = 30_000;

const S = grpc.status;
const statusName = (code: number): string => S[code] ?? String(code);
const deadlineIn = (ms: number): Date => new Date(Date.now() + ms);
/** Separate connections: clients with equal options would otherwise share one (grpc-js's subchannel pool). */
const OWN_CONNECTION = { 'grpc.use_local_subchannel_pool': 1, 'grpc.max_send_message_length': -1, 'grpc.max_receive_message_length': -1 };

function trace(message: string): void {
  if (process.env.BATON_LIMITS_TRACE) process.stderr.write(`[limits ${(performance.now() / 1000).toFixed(1)}s] ${message}\n`);
}

const mib = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(0)} MiB`;

/** `count` copies of `pattern`, after `prefix`: a repeated field of empty elements, on the wire. */
function repeated(prefix: number[], pattern: number[], count: number): Buffer {
  const bytes = Buffer.allocUnsafe(prefix.length + pattern.length * count);
  Buffer.from(prefix).copy(bytes, 0);
  return bytes.fill(Buffer.from(pattern), prefix.length);
}

function varint(value: number): number[] {
  const out: number[] = [];
  while (value >= 0x80) {
    out.push((value & 0x7f) | 0x80);
    value = Math.floor(value / 128);
  }
  out.push(value);
  return out;
}

/** Samples a process's VmRSS; SIGKILLs it past KILL_RSS_BYTES. */
class RssMonitor {
  peak = 0;
  /** The RSS at which the watchdog killed the node, if it did. */
  killedAt: number | undefined;
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly pid: number) {
    this.timer = setInterval(() => this.sample(), RSS_SAMPLE_MS);
  }

  /** The current RSS in bytes (0 once the process is gone). */
  sample(): number {
    let rss = 0;
    try {
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${this.pid}/status`, 'latin1'));
      rss = m === null ? 0 : Number(m[1]) * 1024;
    } catch {
      return 0;
    }
    this.peak = Math.max(this.peak, rss);
    if (rss > KILL_RSS_BYTES && this.killedAt === undefined) {
      this.killedAt = rss;
      process.kill(this.pid, 'SIGKILL');
    }
    return rss;
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

interface Probes {
  rounds: number;
  slowestMs: number;
  failures: string[];
}

/** Put then Get of one small session, checked; throws a message saying what went wrong. */
async function roundTrip(client: SessionServiceClient, round: number): Promise<void> {
  const sessionId = `probe-${round}`;
  const value = Buffer.from(`value ${round}`);
  const deadline = deadlineIn(PROBE_DEADLINE_MS);
  await new Promise<PutResponse>((resolve, reject) =>
    client.put({ sessionId, parts: [{ name: 'p', value, ifVersion: undefined }], ttlSeconds: 0, minReplicas: 0 }, new grpc.Metadata(), { deadline }, (err, res) =>
      err ? reject(new Error(`Put: ${statusName(err.code)} ${err.details}`)) : resolve(res),
    ),
  );
  const got = await new Promise<GetResponse>((resolve, reject) =>
    client.get({ sessionId, parts: [], resume: false }, new grpc.Metadata(), { deadline }, (err, res) => (err ? reject(new Error(`Get: ${statusName(err.code)} ${err.details}`)) : resolve(res))),
  );
  const read = got.session?.parts.find((p) => p.name === 'p')?.value;
  if (!got.found || read === undefined || !Buffer.from(read).equals(value)) throw new Error(`Get read ${JSON.stringify(got)} back, not what the Put wrote`);
}

/** Round trips back to back until `attack` settles (at least one), each on a fresh deadline. */
async function probeDuring(client: SessionServiceClient, attack: Promise<unknown>): Promise<Probes> {
  let settled = false;
  void attack.then(
    () => (settled = true),
    () => (settled = true),
  );
  const probes: Probes = { rounds: 0, slowestMs: 0, failures: [] };
  do {
    const started = performance.now();
    try {
      await roundTrip(client, probes.rounds);
    } catch (err) {
      probes.failures.push(`round ${probes.rounds} after ${(performance.now() - started).toFixed(0)} ms: ${(err as Error).message}`);
    }
    probes.slowestMs = Math.max(probes.slowestMs, performance.now() - started);
    probes.rounds++;
  } while (!settled && probes.failures.length < 3);
  return probes;
}

/** What `promise` resolves to, or undefined if it has not within `ms`. */
async function within<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), ms)));
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

interface Attacked {
  node: SidecarProcess;
  client: SessionServiceClient;
  rss: RssMonitor;
  /** Records a figure for the trace. */
  note(figure: string): void;
}

/**
 * Starts a node, runs `attack` against it with the RSS watchdog on, and stops it; the
 * node must then exit 0 on SIGTERM.
 */
async function withNode(label: string, attack: (t: Attacked) => Promise<void>): Promise<void> {
  const node = await startSidecar([
    '--node-id',
    `limits-${label}`,
    '--max-memory-mb',
    String(MAX_MEMORY_MB),
    '--max-value-bytes',
    String(MAX_VALUE_BYTES),
    '--max-parts-per-session',
    String(MAX_PARTS),
  ]);
  const rss = new RssMonitor(node.child.pid!);
  const client = new SessionServiceClient(node.apiAddress, grpc.credentials.createInsecure(), OWN_CONNECTION);
  const figures = [`idle ${mib(rss.sample())}`];
  let exitCode: number | null;
  try {
    await attack({ node, client, rss, note: (figure) => figures.push(figure) });
  } finally {
    client.close();
    rss.stop();
    exitCode = await node.stop();
    trace(`${label}: ${figures.join('; ')}; peak ${mib(rss.peak)}${rss.killedAt === undefined ? '' : ` (killed at ${mib(rss.killedAt)})`}`);
  }
  expect({ exitCode, signal: node.child.signalCode }).toEqual({ exitCode: 0, signal: null });
}

/** The outcome every attack is judged by, besides its own: probes served and RSS bounded. */
function health(t: Attacked, probes: Probes, boundBytes = MAX_RSS_BYTES): { served: unknown; memory: string } {
  const after = t.rss.sample();
  t.note(`${probes.rounds} probes (slowest ${probes.slowestMs.toFixed(0)} ms), RSS after ${mib(after)}`);
  return {
    served: probes.failures.length === 0 ? 'every probe answered' : probes.failures,
    memory:
      t.rss.killedAt !== undefined
        ? `killed by the watchdog at ${mib(t.rss.killedAt)}`
        : Math.max(t.rss.peak, after) < boundBytes
          ? `under ${mib(boundBytes)}`
          : `peak ${mib(t.rss.peak)}, ${mib(after)} after: over ${mib(boundBytes)}`,
  };
}

const healthy = (boundBytes = MAX_RSS_BYTES) => ({ served: 'every probe answered', memory: `under ${mib(boundBytes)}` });

/** One line per call: its status and details. */
const answers = (outcomes: RawOutcome[]): string[] => outcomes.map((o) => `${statusName(o.code)}: ${o.details}`);
const refusedAs = (count: number, details: RegExp): unknown[] => Array.from({ length: count }, () => expect.stringMatching(new RegExp(`^RESOURCE_EXHAUSTED: .*${details.source}`)));

describe('bounded memory under attack, per stream type', () => {
  it('unary: Puts of millions of empty parts are refused RESOURCE_EXHAUSTED unread', async () => {
    await withNode('unary', async (t) => {
      // PutRequest: session_id "bomb", then 8 Mi empty `parts` entries (field 2, `12 00`): 16 MiB each.
      const bomb = repeated([0x0a, 4, ...Buffer.from('bomb')], [0x12, 0x00], 8 * 1024 * 1024);
      expect(bomb.length).toBeLessThan(MAX_MESSAGE_BYTES);
      const raw = new grpc.Client(t.node.apiAddress, grpc.credentials.createInsecure(), OWN_CONNECTION);
      try {
        const attack = Promise.all(Array.from({ length: 4 }, () => rawUnary(raw, SessionServiceService.put.path, bomb, deadlineIn(ATTACK_DEADLINE_MS))));
        const probes = await probeDuring(t.client, attack);
        expect({ answers: answers(await attack), ...health(t, probes) }).toEqual({
          answers: refusedAs(4, /PutRequest\.parts holds more than \d+ elements/),
          ...healthy(),
        });
      } finally {
        raw.close();
      }
    });
  }, 60_000);

  it('Exchange: two 64 MiB messages of 33.5 M empty batch entries at once are refused RESOURCE_EXHAUSTED unread', async () => {
    await withNode('exchange-bomb', async (t) => {
      // ExchangeRequest: 32 Mi empty `batch` entries (field 15, `7a 00`), 64 MiB.
      const bomb = repeated([], [0x7a, 0x00], 32 * 1024 * 1024);
      expect(bomb.length).toBeLessThan(MAX_MESSAGE_BYTES);
      const raws = [0, 1].map(() => new grpc.Client(t.node.apiAddress, grpc.credentials.createInsecure(), OWN_CONNECTION));
      try {
        const attack = Promise.all(raws.map((raw) => rawBidi(raw, SessionServiceService.exchange.path, [bomb], deadlineIn(ATTACK_DEADLINE_MS))));
        const probes = await probeDuring(t.client, attack);
        expect({ answers: answers(await attack), ...health(t, probes, MAX_RSS_BYTES_TWO_64_MIB_MESSAGES) }).toEqual({
          answers: refusedAs(2, /ExchangeRequest\.batch holds more than 1024 elements/),
          ...healthy(MAX_RSS_BYTES_TWO_64_MIB_MESSAGES),
        });
      } finally {
        for (const raw of raws) raw.close();
      }
    });
  }, 60_000);

  it('Exchange: a client that writes Puts as fast as it can and never reads is no longer read', async () => {
    await withNode('exchange-flood', async (t) => {
      const MAX_OPS = 200_000;
      /** A write not taken for this long means flow control holds the writer back. */
      const STALL_MS = 2_000;
      const session = http2.connect(`http://${t.node.apiAddress}`);
      session.on('error', () => undefined);
      const call = new UnreadCall(session, SessionServiceService.exchange.path, ATTACK_DEADLINE_MS / 1000);
      const value = Buffer.alloc(1024, 0x61);
      let written = 0;
      let stalledAfter: number | undefined;
      let rssAtStall = 0;
      // Writes until the stream takes nothing more for STALL_MS, then stays stalled as long again.
      const flood = (async () => {
        while (written < MAX_OPS) {
          const request: ExchangeRequest = {
            requestId: BigInt(written),
            op: { $case: 'put', put: { sessionId: `flood-${written % 64}`, parts: [{ name: 'v', value, ifVersion: undefined }], ttlSeconds: 0, minReplicas: 0 } },
            deadlineMs: 0,
            batch: [],
          };
          if (!(await call.write(grpcFrame(ExchangeRequest.encode(request).finish()), STALL_MS))) {
            stalledAfter = written;
            rssAtStall = t.rss.sample();
            await new Promise((resolve) => setTimeout(resolve, STALL_MS));
            return;
          }
          written++;
        }
      })();
      try {
        const probes = await probeDuring(t.client, flood);
        const rssHeld = t.rss.sample();
        t.note(`stalled after ${stalledAfter} Puts of 1 KiB (RSS ${mib(rssAtStall)}, ${mib(rssHeld)} ${STALL_MS} ms later)`);
        expect({
          stalled: stalledAfter === undefined ? `all ${MAX_OPS} Puts were taken` : 'stalled',
          // Held back, the stream costs no more: RSS does not climb while the writer waits.
          heldStill: rssHeld < rssAtStall + 32 * 1024 * 1024 ? 'yes' : `RSS ${mib(rssAtStall)} at the stall, ${mib(rssHeld)} ${STALL_MS} ms later`,
          ...health(t, probes),
        }).toEqual({ stalled: 'stalled', heldStill: 'yes', ...healthy() });
      } finally {
        call.cancel();
        session.close();
      }
    });
  }, 60_000);

  it('Watch: a watcher that never reads is ended RESOURCE_EXHAUSTED while 200 Puts of 1 MiB go on', async () => {
    await withNode('watch', async (t) => {
      const PUTS = 200;
      const session = http2.connect(`http://${t.node.apiAddress}`);
      session.on('error', () => undefined);
      const writer = new SessionServiceClient(t.node.apiAddress, grpc.credentials.createInsecure(), OWN_CONNECTION);
      const call = new UnreadCall(session, SessionServiceService.watch.path, ATTACK_DEADLINE_MS / 1000);
      try {
        await call.write(grpcFrame(WatchRequest.encode({ sessionId: 'watched' }).finish()), PROBE_DEADLINE_MS);
        call.end();
        // The node sends headers once the watch is registered.
        await call.opened;
        const writes = (async () => {
          for (let i = 0; i < PUTS; i++) {
            const value = Buffer.alloc(MAX_VALUE_BYTES - 64, i & 0xff);
            await new Promise<void>((resolve, reject) =>
              writer.put(
                { sessionId: 'watched', parts: [{ name: 'blob', value, ifVersion: undefined }], ttlSeconds: 0, minReplicas: 0 },
                new grpc.Metadata(),
                { deadline: deadlineIn(PROBE_DEADLINE_MS) },
                (err) => (err ? reject(new Error(`Put ${i}: ${statusName(err.code)} ${err.details}`)) : resolve()),
              ),
            );
          }
        })();
        const probes = await probeDuring(t.client, writes);
        await writes;
        const dropped = (await t.node.scrape()).get('baton_watchers_dropped_total');
        // The status comes after the events the node wrote before it: it arrives once they are read.
        call.readAll();
        const status = await within(call.status, 10_000);
        expect({ dropped, answer: status === undefined ? 'no status within 10 s' : `${statusName(status.code)}: ${status.details}`, ...health(t, probes) }).toEqual({
          dropped: 1,
          answer: expect.stringMatching(/^RESOURCE_EXHAUSTED: the watcher reads too slowly/),
          ...healthy(),
        });
      } finally {
        call.cancel();
        session.close();
        writer.close();
      }
    });
  }, 60_000);

  it('peer streams: a Lookup of millions of ids and a Fetch or Digests of millions of partitions are refused RESOURCE_EXHAUSTED unread', async () => {
    await withNode('peer', async (t) => {
      // LookupRequest: request_id 1, then 2 M empty session ids (field 2, `12 00`).
      const lookup = repeated([0x08, 0x01], [0x12, 0x00], 2_000_000);
      // FetchRequest / DigestsRequest: 4 M packed partitions (field 1, length-delimited, 1-byte varints).
      const PARTITIONS = 4_000_000;
      const packed = repeated([0x0a, ...varint(PARTITIONS)], [0x00], PARTITIONS);
      expect(Math.max(lookup.length, packed.length)).toBeLessThan(PEER_MAX_MESSAGE_BYTES);
      const peers = [0, 1, 2].map(() => new grpc.Client(t.node.peerAddress, grpc.credentials.createInsecure(), OWN_CONNECTION));
      try {
        const deadline = deadlineIn(ATTACK_DEADLINE_MS);
        const lookups = Promise.all([0, 1].map(() => rawBidi(peers[0]!, PeerServiceService.lookup.path, [lookup], deadline)));
        const fetches = Promise.all([0, 1].map(() => rawServerStream(peers[1]!, PeerServiceService.fetch.path, packed, deadline, { onOpen: () => undefined })));
        const digests = Promise.all([0, 1].map(() => rawUnary(peers[2]!, PeerServiceService.digests.path, packed, deadline)));
        const probes = await probeDuring(t.client, Promise.all([lookups, fetches, digests]));
        expect({ lookups: answers(await lookups), fetches: answers(await fetches), digests: answers(await digests), ...health(t, probes) }).toEqual({
          lookups: refusedAs(2, /LookupRequest\.session_ids holds more than \d+ elements/),
          fetches: refusedAs(2, /FetchRequest\.partitions holds more than \d+ elements/),
          digests: refusedAs(2, /DigestsRequest\.partitions holds more than \d+ elements/),
          ...healthy(),
        });
      } finally {
        for (const peer of peers) peer.close();
      }
    });
  }, 60_000);
});
