/**
 * Failover of real `baton sidecar` processes on loopback: the owner of sessions is killed
 * (SIGKILL) under continuous writes and the sessions are resumed on a survivor; every node
 * of a cluster is restarted in turn (SIGTERM) under load; two nodes resume one session at
 * once; a replica dies while a resume is reading from it; a resume on the owner must see a
 * write acknowledged through another node; a user's requests spread over every node, two at
 * a time, each resuming the session where it lands and writing it.
 *
 * A session's "counter" part holds the writer's round number, so a resumed value says
 * which write survived: it must be at least the last acknowledged round and at most the
 * last round attempted (a write that failed or was in flight may have been applied).
 */
import { execFileSync } from 'node:child_process';
import { BatonClient, type PutResponse, type Session } from '../src/client/client';
import * as sidecarProcess from './support/sidecar-process';
import { isPortRace, SidecarStartError } from './support/sidecar-process';
import { FAST_FAILURE_DETECTION, mapLimit, pollUntil, StaticCluster } from './support/static-cluster';

/** How long before a SIGKILL an acknowledged write may be and still be lost with min_replicas = 0. */
const RECENT_MS = 1000;

/** Three nodes, two secondaries per session: every node holds every session. */
const THREE_NODES = ['a', 'b', 'c'];

let cluster: StaticCluster | undefined;

afterEach(async () => {
  const stopping = cluster;
  cluster = undefined;
  if (stopping === undefined) return;
  // Every node still running leaves gracefully (none crashed during the test).
  const codes = await stopping.stopAll();
  expect(Object.fromEntries(codes)).toEqual(Object.fromEntries([...codes.keys()].map((id) => [id, 0])));
});

async function startCluster(ids: readonly string[], replicas = 2, extra: readonly string[] = []): Promise<StaticCluster> {
  cluster = await StaticCluster.start(ids, ['--replicas', String(replicas), '--partitions', '64', ...FAST_FAILURE_DETECTION, ...extra]);
  await cluster.waitForAlive(ids, 10_000);
  return cluster;
}

function counterOf(session: Session | undefined): number | undefined {
  const part = session?.parts.find((p) => p.name === 'counter');
  return part === undefined ? undefined : Number(Buffer.from(part.value).toString());
}

/** A session's owner, epoch and counter part, for failure messages. */
function summarize(session: Session | undefined): string {
  if (session === undefined) return 'nothing';
  const part = session.parts.find((p) => p.name === 'counter');
  return `owner ${session.ownerNodeId}@${session.epoch} counter ${part === undefined ? '-' : `${Buffer.from(part.value).toString()} v${part.version} by ${part.writerNodeId}`}`;
}

/** A session's parts as name → text, in name order (comparable with toEqual or as JSON). */
function partsText(session: Session | undefined): Record<string, string> {
  const parts = [...(session?.parts ?? [])].sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0));
  return Object.fromEntries(parts.map((p) => [p.name, Buffer.from(p.value).toString()]));
}

function sorted(record: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(record).sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0)));
}

function partValue(session: Session | undefined, name: string): string | undefined {
  const part = session?.parts.find((p) => p.name === name);
  return part === undefined ? undefined : Buffer.from(part.value).toString();
}

/** What a writer knows of each session: the last round acknowledged and the last attempted. */
class WriteLog {
  readonly acked = new Map<string, number>();
  readonly attempted = new Map<string, number>();
  /** The last acknowledged write of each session: when it was acknowledged, by which node, its version. */
  readonly lastAck = new Map<string, { at: number; via: string; version: bigint }>();
  ackCount = 0;

  attempt(id: string, round: number): void {
    this.attempted.set(id, Math.max(round, this.attempted.get(id) ?? 0));
  }

  ack(id: string, round: number, via: string, response: PutResponse): void {
    if (round >= (this.acked.get(id) ?? 0)) this.lastAck.set(id, { at: Date.now(), via, version: response.versions[0]?.version ?? 0n });
    this.acked.set(id, Math.max(round, this.acked.get(id) ?? 0));
    this.ackCount++;
  }
}

/** How resumed counters compare with the write log. */
interface Verdict {
  lost: string[];
  phantom: string[];
  missing: string[];
  failed: string[];
}

async function resumeAll(client: BatonClient, ids: readonly string[]): Promise<Map<string, Session | undefined | Error>> {
  const answers = await Promise.all(ids.map((id) => client.get(id, { resume: true }).catch((err: Error) => err)));
  return new Map(ids.map((id, i) => [id, answers[i]!]));
}

function judge(resumed: Map<string, Session | undefined | Error>, log: WriteLog, ids: readonly string[]): Verdict {
  const verdict: Verdict = { lost: [], phantom: [], missing: [], failed: [] };
  for (const id of ids) {
    const answer = resumed.get(id);
    const acked = log.acked.get(id) ?? 0;
    const attempted = log.attempted.get(id) ?? 0;
    if (answer instanceof Error) {
      verdict.failed.push(`${id}: ${answer.message}`);
      continue;
    }
    const value = counterOf(answer);
    if (value === undefined) {
      if (acked > 0) verdict.missing.push(`${id}: acknowledged round ${acked}, resume found ${answer === undefined ? 'no session' : 'no counter'}`);
      continue;
    }
    if (value < acked) {
      const last = log.lastAck.get(id)!;
      const part = answer!.parts.find((p) => p.name === 'counter')!;
      verdict.lost.push(
        `${id}: acknowledged round ${acked} (written on ${last.via}, version ${last.version}), ` +
          `resumed ${value} (written on ${part.writerNodeId}, version ${part.version})`,
      );
    }
    if (value > attempted) verdict.phantom.push(`${id}: resumed ${value}, never written beyond ${attempted}`);
  }
  return verdict;
}

/**
 * One sequential writer per session, all running at once through `client` (of node
 * `via`): round after round it puts counter = round. Calls `afterAck` after every acknowledgement; a writer
 * stops at its first failure (the node it writes to is gone).
 */
async function writeRounds(
  client: BatonClient,
  via: string,
  ids: readonly string[],
  rounds: { from: number; to: number },
  minReplicas: number,
  log: WriteLog,
  afterAck: () => void = () => undefined,
): Promise<number> {
  let failures = 0;
  await Promise.all(
    ids.map(async (id) => {
      for (let round = rounds.from; round <= rounds.to; round++) {
        log.attempt(id, round);
        const parts: Record<string, Uint8Array> = { counter: Buffer.from(String(round)) };
        if (round === 1) parts.profile = Buffer.from(`profile of ${id}`);
        let response: PutResponse;
        try {
          response = await client.put(id, parts, { minReplicas, deadlineMs: 3000 });
        } catch {
          failures++;
          return;
        }
        log.ack(id, round, via, response);
        afterAck();
      }
    }),
  );
  return failures;
}

/** Waits until `holderIds` each hold every session at round `round` or later (local Get). */
async function waitForReplicas(c: StaticCluster, holderIds: readonly string[], ids: readonly string[], round: number): Promise<void> {
  await pollUntil(
    `${holderIds.join(', ')} hold all ${ids.length} sessions at round ${round}`,
    async () => {
      for (const holder of holderIds) {
        const sessions = await Promise.all(ids.map((id) => c.client(holder).get(id)));
        if (!sessions.every((s) => (counterOf(s) ?? 0) >= round)) return false;
      }
      return true;
    },
    10_000,
  );
}

/**
 * The owner `a` writes 300 sessions round after round and is SIGKILLed once
 * `killAfterAcks` writes were acknowledged; then `b` resumes every session at once.
 */
async function killOwnerUnderWrites(minReplicas: number, killAfterAcks: number, rounds: number) {
  const c = await startCluster(THREE_NODES);
  const SESSIONS = 300;
  const ids = Array.from({ length: SESSIONS }, (_, i) => `failover-m${minReplicas}-${i}`);
  const log = new WriteLog();
  const writer = c.client('a');

  // Round 1 everywhere first, so every session exists on every node before the kill.
  expect(await writeRounds(writer, 'a', ids, { from: 1, to: 1 }, minReplicas, log)).toBe(0);
  await waitForReplicas(c, ['b', 'c'], ids, 1);

  let killed: Promise<number | null> | undefined;
  let acksAtKill = 0;
  let killedAt = 0;
  const failures = await writeRounds(writer, 'a', ids, { from: 2, to: rounds }, minReplicas, log, () => {
    if (killed === undefined && log.ackCount >= killAfterAcks) {
      acksAtKill = log.ackCount;
      killedAt = Date.now();
      killed = c.kill('a');
    }
  });
  expect(killed).toBeDefined();
  expect(await killed).toBeNull(); // ended by the signal
  // The kill came in the middle: writes were still going and some failed.
  expect(failures).toBeGreaterThan(0);

  const resumed = await resumeAll(c.client('b'), ids);
  const verdict = judge(resumed, log, ids);
  const owners = new Set([...resumed.values()].map((s) => (s instanceof Error ? 'error' : s?.ownerNodeId)));
  const profilesOk = [...resumed.entries()].every(([id, s]) => !(s instanceof Error) && partValue(s, 'profile') === `profile of ${id}`);
  // When the lost acknowledgements arrived, in ms after the kill signal (negative: before).
  const lostAt = verdict.lost.map((line) => log.lastAck.get(line.slice(0, line.indexOf(':')))!.at - killedAt);
  const roundsBehind = verdict.lost.map((line) => {
    const id = line.slice(0, line.indexOf(':'));
    return log.acked.get(id)! - counterOf(resumed.get(id) as Session)!;
  });
  const lostWindow =
    lostAt.length === 0
      ? ''
      : `; their acknowledgements arrived from ${Math.min(...lostAt)} to ${Math.max(...lostAt)} ms after the kill signal; ` +
        `resumed values were at most ${Math.max(...roundsBehind)} round(s) behind`;
  const resumedCounters = [...resumed.values()].map((s) => (s instanceof Error ? undefined : counterOf(s)));
  return { c, ids, log, verdict, owners, profilesOk, acksAtKill, failures, lostWindow, lostAt, resumedCounters };
}

describe('failover', () => {
  it('(a) with min_replicas = 1, every acknowledged write survives a SIGKILL of the owner and is resumed on a survivor', async () => {
    const { verdict, owners, profilesOk, log, acksAtKill, failures } = await killOwnerUnderWrites(1, 300 + 1200, 12);
    console.log(
      `(a) min_replicas=1: ${log.ackCount} writes acknowledged (${acksAtKill} when a was killed), ${failures} writers cut off; ` +
        `lost ${verdict.lost.length}, missing ${verdict.missing.length}, resume failures ${verdict.failed.length}`,
    );
    expect(verdict.failed.slice(0, 5)).toEqual([]);
    expect(verdict.missing.slice(0, 5)).toEqual([]);
    expect(verdict.lost.slice(0, 5)).toEqual([]);
    expect(verdict.phantom.slice(0, 5)).toEqual([]);
    expect(profilesOk).toBe(true);
    expect([...owners]).toEqual(['b']);
  }, 30_000);

  it('(b) with min_replicas = 0, a SIGKILL of the owner loses only recent writes: every session is resumed, none older than its replicated first round', async () => {
    const { verdict, owners, profilesOk, log, acksAtKill, failures, ids, lostWindow, lostAt, resumedCounters } = await killOwnerUnderWrites(0, 300 + 1200, 12);
    // Not asserted: how many acknowledged writes a crash loses without synchronous replication.
    console.log(
      `(b) min_replicas=0: ${log.ackCount} writes acknowledged (${acksAtKill} when a was killed), ${failures} writers cut off; ` +
        `sessions whose last acknowledged write was lost: ${verdict.lost.length} of ${ids.length}${lostWindow}` +
        (verdict.lost.length > 0 ? ` (e.g. ${verdict.lost.slice(0, 3).join('; ')})` : ''),
    );
    // Every session was on b and c at round 1 before the kill: each is found, never older
    // than round 1, never newer than what was written.
    expect(verdict.failed.slice(0, 5)).toEqual([]);
    expect(verdict.missing.slice(0, 5)).toEqual([]);
    expect(resumedCounters.filter((n) => n === undefined || n < 1)).toEqual([]);
    expect(verdict.phantom.slice(0, 5)).toEqual([]);
    expect(profilesOk).toBe(true);
    expect([...owners]).toEqual(['b']);
    // Only recent writes are lost: replication trails acknowledgement by milliseconds on
    // loopback, so a write acknowledged a whole second before the kill and still missing
    // on the survivors was never replicated at all. (A generous bound on purpose: it tells
    // "lost in flight" from "never sent", it does not measure replication lag.)
    expect(lostAt.filter((ms) => ms < -RECENT_MS)).toEqual([]);
  }, 30_000);

  it('(c) a rolling restart of every node (SIGTERM) under writes with min_replicas = 1 loses no session', async () => {
    const c = await startCluster(THREE_NODES);
    const log = new WriteLog();
    let target = 'b';
    let stopWriting = false;
    const errors = { total: 0, retried: 0 };
    const catchUpMs: number[] = [];

    // Eight writers: each takes a new session or updates one of its own (so writes to one
    // session never overlap), through `target` (never the node being restarted); a failed
    // write is retried once through another node.
    const writerLoop = async (w: number) => {
      const mine: string[] = [];
      for (let i = 0; !stopWriting && i < 100_000; i++) {
        const id = i % 3 === 0 ? `rolling-${w}-${mine.length}` : mine[(i * 31) % mine.length]!;
        if (i % 3 === 0) mine.push(id);
        const round = (log.attempted.get(id) ?? 0) + 1;
        log.attempt(id, round);
        const value = { counter: Buffer.from(String(round)) };
        let via = target;
        let response: PutResponse;
        try {
          response = await c.client(via).put(id, value, { minReplicas: 1, deadlineMs: 3000 });
        } catch {
          errors.total++;
          const other = c.running().find((n) => n.id !== via)?.id;
          if (other === undefined) continue;
          try {
            errors.retried++;
            via = other;
            response = await c.client(via).put(id, value, { minReplicas: 1, deadlineMs: 3000 });
          } catch {
            continue;
          }
        }
        log.ack(id, round, via, response);
      }
    };
    const writers = Array.from({ length: 8 }, (_, w) => writerLoop(w));

    try {
      await pollUntil('writes are acknowledged', () => log.ackCount >= 200, 10_000);
      for (const [restarting, next] of [['a', 'b'], ['b', 'c'], ['c', 'a']] as const) {
        target = next;
        const ackedBefore = [...log.acked.keys()];
        const acksBefore = log.ackCount;
        expect(await c.stop(restarting)).toBe(0);
        await c.startNode(restarting);
        await c.waitForAlive(THREE_NODES, 15_000);
        const aliveAt = Date.now();
        // Back means also caught up: it holds every session acknowledged before it stopped.
        await pollUntil(
          `${restarting} holds the ${ackedBefore.length} sessions acknowledged before its restart`,
          async () => (await Promise.all(ackedBefore.map((id) => c.client(restarting).get(id)))).every((s) => s !== undefined),
          15_000,
        );
        catchUpMs.push(Date.now() - aliveAt);
        // The load went on through the restart.
        await pollUntil('writes go on after the restart', () => log.ackCount >= acksBefore + 200, 10_000);
      }
    } finally {
      stopWriting = true;
      await Promise.all(writers);
    }

    const acked = [...log.acked.keys()];
    // Resume every session, spread over the three nodes. At most 64 at a time: this checks
    // what survived, not how many resumes a node serves at once.
    const resumerOf = (i: number) => THREE_NODES[i % 3]!;
    const answers = await mapLimit(acked, 64, (id, i) => c.client(resumerOf(i)).get(id, { resume: true }).catch((err: Error) => err));
    const verdict = judge(new Map(acked.map((id, i) => [id, answers[i]!])), log, acked);
    // For the failure message: where each lost write was resumed, and what every node holds now.
    const index = new Map(acked.map((id, i) => [id, i]));
    for (const [k, line] of verdict.lost.entries()) {
      const id = line.slice(0, line.indexOf(':'));
      const views = await Promise.all(THREE_NODES.map(async (n) => `${n} holds ${summarize(await c.client(n).get(id))}`));
      verdict.lost[k] = `${line}; resumed on ${resumerOf(index.get(id)!)}; now ${views.join(', ')}`;
    }
    console.log(
      `(c) rolling restart: ${acked.length} sessions, ${log.ackCount} writes acknowledged, ${errors.total} failed writes ` +
        `(${errors.retried} retried through another node); ` +
        `restarted nodes held every earlier session ${catchUpMs.join('/')} ms after all were alive; ` +
        `lost ${verdict.lost.length}, missing ${verdict.missing.length}, resume failures ${verdict.failed.length}` +
        ` (${THREE_NODES.map((n, k) => `${n}: ${answers.filter((x, i) => i % 3 === k && x instanceof Error).length}`).join(', ')})`,
    );
    expect(acked.length).toBeGreaterThan(100);
    expect(verdict.failed.slice(0, 5)).toEqual([]);
    expect(verdict.missing.slice(0, 5)).toEqual([]);
    expect(verdict.lost.slice(0, 5)).toEqual([]);
    expect(verdict.phantom.slice(0, 5)).toEqual([]);
  }, 60_000);

  it('(d) two nodes resuming one session at once end with one owner and every part', async () => {
    const c = await startCluster(THREE_NODES);
    const SESSIONS = 20;
    const ids = Array.from({ length: SESSIONS }, (_, i) => `contended-${i}`);
    const expected = (id: string): Record<string, string> => ({
      basket: `basket of ${id}`,
      login: `login of ${id}`,
      prefs: `prefs of ${id}`,
      note: `note from b for ${id}`,
    });
    for (const id of ids) {
      const want = expected(id);
      await c.client('a').put(id, { basket: Buffer.from(want.basket!), login: Buffer.from(want.login!), prefs: Buffer.from(want.prefs!) }, { minReplicas: 2 });
      // A part written on a node that does not own the session goes to the owner's replica set.
      await c.client('b').put(id, { note: Buffer.from(want.note!) }, { minReplicas: 2 });
    }

    const [onB, onC] = await Promise.all([
      Promise.all(ids.map((id) => c.client('b').get(id, { resume: true }))),
      Promise.all(ids.map((id) => c.client('c').get(id, { resume: true }))),
    ]);
    for (const [i, id] of ids.entries()) {
      for (const answer of [onB[i], onC[i]]) {
        expect(partsText(answer)).toEqual(expected(id));
      }
    }

    // Every node settles on the same owner and epoch, with every part.
    let disagreements: string[] = [];
    await pollUntil(
      'a, b and c agree on owner and epoch of every contended session',
      async () => {
        disagreements = [];
        for (const id of ids) {
          const views = await Promise.all(THREE_NODES.map((n) => c.client(n).get(id)));
          const heads = new Set(views.map((s) => `${s?.ownerNodeId}@${s?.epoch}`));
          const want = JSON.stringify(sorted(expected(id)));
          const partsOk = views.every((s) => JSON.stringify(partsText(s)) === want);
          if (heads.size !== 1 || !partsOk) disagreements.push(`${id}: ${[...heads].join(' / ')}${partsOk ? '' : ' (parts differ)'}`);
        }
        return disagreements.length === 0;
      },
      10_000,
    ).catch(() => undefined);
    expect(disagreements.slice(0, 5)).toEqual([]);
    const heads = new Map<string, number>();
    for (const id of ids) {
      const session = await c.client('a').get(id);
      expect(['b', 'c']).toContain(session!.ownerNodeId);
      expect(session!.epoch).toBeGreaterThanOrEqual(2n);
      const head = `${session!.ownerNodeId}@${session!.epoch}`;
      heads.set(head, (heads.get(head) ?? 0) + 1);
    }
    console.log(`(d) contended resumes settled on (owner@epoch: sessions) ${JSON.stringify(Object.fromEntries(heads))}`);
  }, 30_000);

  it('(e) a replica killed while another node resumes from it: the resume succeeds from the remaining replica', async () => {
    const ids4 = ['a', 'b', 'c', 'd'];
    // Debug: a resumer logs each failed peer fetch with the peer's address.
    const c = await startCluster(ids4, 2, ['--log-level', 'debug']);
    const SESSIONS = 60;
    const ids = Array.from({ length: SESSIONS }, (_, i) => `replica-loss-${i}`);
    const partsOf = (id: string) => ({ basket: `basket of ${id}`, login: `login of ${id}`, prefs: `prefs of ${id}` });
    await Promise.all(
      ids.map((id) => c.client('a').put(id, Object.fromEntries(Object.entries(partsOf(id)).map(([k, v]) => [k, Buffer.from(v)])), { minReplicas: 2 })),
    );

    // Which of b, c, d hold each session (the owner a and two secondaries do).
    const holders = new Map<string, string[]>();
    for (const id of ids) {
      const views = await Promise.all(['b', 'c', 'd'].map((n) => c.client(n).get(id)));
      holders.set(id, ['b', 'c', 'd'].filter((_, i) => views[i] !== undefined));
    }
    expect([...holders].filter(([, h]) => h.length !== 2).map(([id, h]) => `${id}: ${h.join(',')}`)).toEqual([]);

    // b dies during the resumes: take the sessions b holds, and resume each on the node
    // that holds no copy, so its only sources are a (killed first), b and the other replica.
    const victims = ids.filter((id) => holders.get(id)!.includes('b'));
    expect(victims.length).toBeGreaterThan(10);
    const resumer = (id: string) => ['c', 'd'].find((n) => !holders.get(id)!.includes(n))!;
    const resumers = [...new Set(victims.map(resumer))];
    expect(await c.kill('a')).toBeNull();

    // b is frozen (SIGSTOP) before the resumes ask it, so it never answers one: whatever
    // the resumes return came from the remaining replica. It is killed once the resumes
    // have asked every peer (the remaining replica has answered them), so its death cuts
    // short a fetch that is waiting on it.
    const FETCHES = 'baton_resume_peer_fetch_duration_seconds_count';
    const fetches = async (id: string, outcome: string) => (await c.node(id).process!.scrape()).sum(FETCHES, { outcome });
    const okBefore = new Map(await Promise.all(resumers.map(async (n) => [n, await fetches(n, 'ok')] as const)));
    const errorsBefore = new Map(await Promise.all(resumers.map(async (n) => [n, await fetches(n, 'error')] as const)));
    const addressOfB = c.node('b').process!.peerAddress;
    c.node('b').process!.child.kill('SIGSTOP');
    let resumes: Promise<(Session | undefined | Error)[]> | undefined;
    try {
      resumes = Promise.all(victims.map((id) => c.client(resumer(id)).get(id, { resume: true }).catch((err: Error) => err)));
      await pollUntil(
        'every resumer heard from its remaining replica',
        async () => (await Promise.all(resumers.map(async (n) => (await fetches(n, 'ok')) > okBefore.get(n)!))).every(Boolean),
        10_000,
      );
    } finally {
      // SIGKILL ends a stopped process too.
      expect(await c.kill('b')).toBeNull();
    }
    const answers = await resumes;

    const problems: string[] = [];
    answers.forEach((answer, i) => {
      const id = victims[i]!;
      if (answer instanceof Error) return void problems.push(`${id} on ${resumer(id)}: ${answer.message}`);
      if (answer === undefined) return void problems.push(`${id} on ${resumer(id)}: not found`);
      const parts = JSON.stringify(partsText(answer));
      if (parts !== JSON.stringify(sorted(partsOf(id)))) problems.push(`${id} on ${resumer(id)}: parts ${parts}`);
      if (answer.ownerNodeId !== resumer(id)) problems.push(`${id} on ${resumer(id)}: owner ${answer.ownerNodeId}`);
    });
    expect(problems.slice(0, 5)).toEqual([]);

    // Each resumer's fetch from b failed: b never answered, and its death ended the fetch.
    const failedOnB = resumers.filter((n) =>
      c.node(n).process!.logs.some((l) => l.msg === 'resume fetch failed' && l.peer === addressOfB),
    );
    expect(failedOnB).toEqual(resumers);
    const failed = await Promise.all(resumers.map(async (n) => (await fetches(n, 'error')) - errorsBefore.get(n)!));
    const answered = await Promise.all(resumers.map(async (n) => (await fetches(n, 'ok')) - okBefore.get(n)!));
    console.log(
      `(e) ${victims.length} sessions resumed on ${resumers.join(' and ')} after a died and while b was frozen, then killed; ` +
        `peer fetches answered ${answered.join('/')}, failed ${failed.join('/')}`,
    );
  }, 30_000);

  // A write made on a node that does not own the session is acknowledged only once the
  // owner has it, because a resume on the owner answers from the owner's own copy. Here the
  // owner drops 30% of the replication datagrams it receives (repaired later), so without
  // that rule the resume would often miss the write.
  test('(f) a resume on the owner returns a write acknowledged through another node', async () => {
    const c = (cluster = await StaticCluster.start(THREE_NODES, ['--replicas', '2', '--partitions', '64', ...FAST_FAILURE_DETECTION], {
      c: ['--inject-loss-percent', '30'],
    }));
    await c.waitForAlive(THREE_NODES, 10_000);
    const ids = Array.from({ length: 100 }, (_, i) => `owned-by-c-${i}`);
    await Promise.all(ids.map((id) => c.client('c').put(id, { counter: Buffer.from('1') }, { minReplicas: 2 })));

    const stale: string[] = [];
    // One at a time, so no later datagram reveals a dropped one to c before it is asked.
    for (const id of ids) {
      const put = await c.client('a').put(id, { counter: Buffer.from('2') }, { minReplicas: 1 });
      const resumed = await c.client('c').get(id, { resume: true });
      if (counterOf(resumed) !== 2) {
        const onB = await c.client('b').get(id);
        stale.push(
          `${id}: write acknowledged on a at version ${put.versions[0]!.version} (b holds ${summarize(onB)}); ` +
            `resume on the owner c answered ${summarize(resumed)}`,
        );
      }
    }
    console.log(`(f) ${stale.length} of ${ids.length} resumes on the owner missed an acknowledged write${stale.length > 0 ? `, e.g. ${stale[0]}` : ''}`);
    expect(stale.slice(0, 5)).toEqual([]);
  }, 30_000);

  // A round-robin balancer spreads a user's requests over every node, two at a time (a
  // page's parallel requests): each resumes the session where it lands, then writes a part
  // of its own that existed before, with min_replicas 1. The owner hands a session over as
  // it answers a resume's lookup (and a resume asks again an owner that answered without
  // owning the session yet), so a write it makes a moment later is not beaten by the claim.
  // Before: 663 of 4,000 such acknowledged writes lost (200 users, 10 rounds).
  test('(g) requests of one user spread over every node, two at a time, each resuming then writing: every acknowledged write is kept', async () => {
    const c = await startCluster(THREE_NODES);
    const USERS = 100;
    const ROUNDS = 5;
    const ids = Array.from({ length: USERS }, (_, u) => `user-${u}`);
    const names = Array.from({ length: ROUNDS }, (_, r) => [`r${r}a`, `r${r}b`]).flat();
    const empty = Object.fromEntries(names.map((name) => [name, Buffer.from('empty')]));
    await mapLimit(ids, 32, (id, u) => c.client(THREE_NODES[u % 3]!).put(id, empty, { minReplicas: 2 }));
    const acknowledged = new Map(ids.map((id) => [id, new Map<string, string>()]));
    const failures: string[] = [];
    let requests = 0;
    const request = async (id: string, name: string) => {
      const node = THREE_NODES[requests++ % 3]!;
      const value = `written on ${node}`;
      try {
        await c.client(node).get(id, { resume: true });
        await c.client(node).put(id, { [name]: Buffer.from(value) }, { minReplicas: 1 });
        acknowledged.get(id)!.set(name, value);
      } catch (err) {
        failures.push(`${id} ${name} on ${node}: ${(err as Error).message}`);
      }
    };
    for (let r = 0; r < ROUNDS; r++) await Promise.all(ids.map((id) => Promise.all([request(id, `r${r}a`), request(id, `r${r}b`)])));

    let lost: string[] = [];
    await pollUntil(
      'every node holds every acknowledged write',
      async () => {
        lost = [];
        for (const [id, written] of acknowledged) {
          for (const node of THREE_NODES) {
            const held = partsText(await c.client(node).get(id));
            for (const [name, value] of written) if (held[name] !== value) lost.push(`${id} ${name}: acknowledged '${value}', ${node} holds '${held[name]}'`);
          }
        }
        return lost.length === 0;
      },
      10_000,
    ).catch(() => undefined);
    const count = [...acknowledged.values()].reduce((sum, m) => sum + m.size, 0);
    console.log(`(g) ${count} of ${USERS * ROUNDS * 2} writes acknowledged, ${failures.length} failed, ${lost.length} acknowledged and not held by every node`);
    expect(failures.slice(0, 5)).toEqual([]);
    expect(lost.slice(0, 5)).toEqual([]);
  }, 60_000);

  // A new user's first two requests land on two pods at once, each writing a part of its own
  // (min_replicas 1) to a session neither has: both look it up, find nothing and make it, so
  // two nodes own it at the first epoch and the higher node id owns it everywhere. Five
  // nodes with one secondary each, so the two copies meet only on some holders. The owner's
  // own copy (what a resume there answers) must hold both acknowledged writes. Before: 713 of
  // 4,000 missing (2,000 sessions).
  test('(h) a session made at once on two nodes by acknowledged writes holds both on the node that owns it', async () => {
    const FIVE_NODES = ['a', 'b', 'c', 'd', 'e'];
    const c = await startCluster(FIVE_NODES, 1);
    const SESSIONS = 400;
    const failures: string[] = [];
    const pairs = Array.from({ length: SESSIONS }, (_, k) => ({ id: `new-${k}`, first: FIVE_NODES[k % 5]!, second: FIVE_NODES[(k + 1) % 5]! }));
    await mapLimit(pairs, 25, ({ id, first, second }) =>
      Promise.all(
        [first, second].map((node, i) => c.client(node).put(id, { [i === 0 ? 'first' : 'second']: Buffer.from(`by ${node}`) }, { minReplicas: 1 }).catch((err: Error) => failures.push(`${id} on ${node}: ${err.message}`))),
      ),
    );
    let missing: string[] = [];
    await pollUntil(
      'every owner holds both writes',
      async () => {
        missing = [];
        for (const { id, first, second } of pairs) {
          const owner = [first, second].sort()[1]!;
          const held = partsText(await c.client(owner).get(id, { resume: true }));
          if (held.first !== `by ${first}` || held.second !== `by ${second}`) missing.push(`${id} on ${owner}: first '${held.first}', second '${held.second}'`);
        }
        return missing.length === 0;
      },
      10_000,
    ).catch(() => undefined);
    console.log(`(h) ${SESSIONS * 2 - failures.length} of ${SESSIONS * 2} writes acknowledged; sessions whose owner lacks one: ${missing.length}`);
    expect(failures.slice(0, 5)).toEqual([]);
    expect(missing.slice(0, 5)).toEqual([]);
  }, 60_000);
});

describe('StaticCluster', () => {
  it('does not retry a start that failed for another reason than a taken port, and leaves no node of it running', async () => {
    const stderr = jest.spyOn(process.stderr, 'write');
    const starts = jest.spyOn(sidecarProcess, 'startSidecar');
    let err: unknown;
    let startCalls = 0;
    let retryNotes: unknown[][] = [];
    try {
      err = await StaticCluster.start(['start-fail-a', 'start-fail-b', 'start-fail-c'], [], { 'start-fail-b': ['--max-parts-per-session', 'many'] }).then(
        () => new Error('the start was expected to fail'),
        (e: unknown) => e,
      );
    } finally {
      // Read before the restore, which clears them.
      startCalls = starts.mock.calls.length;
      retryNotes = stderr.mock.calls.filter(([text]) => String(text).includes('StaticCluster:'));
      stderr.mockRestore();
      starts.mockRestore();
    }
    // One attempt: three nodes started once each, and no word of a retry.
    expect(startCalls).toBe(3);
    expect(retryNotes).toEqual([]);
    expect(err).toBeInstanceOf(SidecarStartError);
    expect(isPortRace(err)).toBe(false);
    expect((err as SidecarStartError).exitCode).toBe(2);
    const left = execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' }).split('\n').filter((line) => line.includes('--node-id start-fail-'));
    expect(left).toEqual([]);
  });
});
