/**
 * The client the one-at-a-time figures are measured from: a process of its own that does
 * nothing but the calls it is handed, one at a time, and the clock around each.
 *
 * Why a process of its own: measured from the benchmark's main process, a single call's p99
 * was the main process's, not baton's. That process holds every acknowledged write and
 * resume of the run and had collected fully before each pass (to keep its Mark-Compacts
 * out of them); after a forced full collection it spent about half as much CPU again per
 * call for the next thousand or more calls, and the p99 came out 2-4 times higher than
 * without the collection (docs/benchmarks.md, "The measuring client"). This process keeps
 * a small heap that the calls alone move, is warmed up by the unmeasured passes before the
 * measured ones, and reports its own collection pauses in each pass.
 *
 * Protocol (over the fork's IPC channel): the parent sends `{ id, calls }`, the child runs
 * the calls in order and answers `{ id, results, gc }`, one result per call, and the pauses
 * of its own collections during them. A Get answer carries the session's owner and parts
 * (base64), so the parent checks what came back after the clock stopped. A lookup is one
 * PeerService.Lookup round trip over the peers' TLS (the hop a peer resume adds).
 *
 * Rules: calls run strictly one after another; a failed call is a result with `failure`,
 * never a crash; the child exits when its channel closes.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { BatonClient } from '../../src/client/client';
import { parseClusterKeys } from '../../src/wire/cluster-key';
import { peerTlsFromKeys } from '../../src/wire/peer-tls';
import { PeerClients, PeerCredentials } from '../../sidecar/transport/peer-service';
import { GcTotals, observeOwnGc } from '../gc-pauses';

export type OneCall =
  | { kind: 'get'; address: string; sessionId: string; resume: boolean }
  | { kind: 'lookup'; peerAddress: string; sessionId: string };

export interface OneResult {
  /** Milliseconds from the call to its answer. */
  ms: number;
  /** Why the call failed ('not found' for a Get that found nothing); undefined when it answered. */
  failure?: string;
  /** A Get's answer. */
  session?: { ownerNodeId: string; parts: { name: string; value: string }[] };
}

export interface OnePass {
  results: OneResult[];
  /** This process's collection pauses during the pass (ms). */
  gc: { scavengeMs: number; majorMs: number };
}

interface Request {
  id: number;
  calls: readonly OneCall[];
}

interface Answer extends OnePass {
  id: number;
}

const CHILD_FLAG = '--one-at-a-time-client';
const CALL_DEADLINE_MS = 10_000;

/** The parent's handle on the measuring process. */
export class OneAtATimeClient {
  private next = 0;
  private readonly waiting = new Map<number, { resolve: (pass: OnePass) => void; reject: (err: Error) => void }>();

  private constructor(private readonly child: ChildProcess) {
    child.on('message', (message: Answer) => {
      const waiter = this.waiting.get(message.id);
      if (waiter === undefined) return;
      this.waiting.delete(message.id);
      waiter.resolve({ results: message.results, gc: message.gc });
    });
    child.on('exit', (code, signal) => {
      for (const waiter of this.waiting.values()) waiter.reject(new Error(`the measuring client exited (${signal ?? code})`));
      this.waiting.clear();
    });
  }

  /** Starts the process; `clusterKey` (the BATON_CLUSTER_KEY value) for its lookups over the peers' TLS. */
  static start(clusterKey: string): OneAtATimeClient {
    const child = fork(__filename, [CHILD_FLAG], { env: { ...process.env, BENCH_ONE_CLIENT_KEY: clusterKey }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    return new OneAtATimeClient(child);
  }

  /** Runs `calls` one at a time in the measuring process. */
  run(calls: readonly OneCall[]): Promise<OnePass> {
    const id = this.next++;
    return new Promise<OnePass>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.child.send({ id, calls } satisfies Request, (err) => {
        if (err === null) return;
        this.waiting.delete(id);
        reject(err);
      });
    });
  }

  /** Ends the process (it closes its clients when the channel closes). */
  stop(): void {
    if (this.child.connected) this.child.disconnect();
    setTimeout(() => this.child.kill('SIGKILL'), 2000).unref();
  }
}

/** A Get's answer as the parent reads it back: the owner and the parts' values. */
export interface AnsweredSession {
  ownerNodeId: string;
  parts: { name: string; value: Buffer }[];
}

export function answeredSession(result: OneResult): AnsweredSession | undefined {
  if (result.session === undefined) return undefined;
  return { ownerNodeId: result.session.ownerNodeId, parts: result.session.parts.map((p) => ({ name: p.name, value: Buffer.from(p.value, 'base64') })) };
}

// --- the measuring process ---------------------------------------------------------------------

function childMain(): void {
  const clients = new Map<string, BatonClient>();
  const clientFor = (address: string) => {
    let client = clients.get(address);
    if (client === undefined) clients.set(address, (client = new BatonClient(address, { defaultDeadlineMs: CALL_DEADLINE_MS })));
    return client;
  };
  const peers = new PeerClients(new PeerCredentials(peerTlsFromKeys(parseClusterKeys(process.env.BENCH_ONE_CLIENT_KEY!), 'bench-one-at-a-time', Date.now())));
  const gc = new GcTotals();
  observeOwnGc(gc);

  const one = async (call: OneCall): Promise<OneResult> => {
    const started = process.hrtime.bigint();
    try {
      if (call.kind === 'lookup') {
        await peers.lookup(call.peerAddress, [call.sessionId], CALL_DEADLINE_MS);
        return { ms: Number(process.hrtime.bigint() - started) / 1e6 };
      }
      const session = await clientFor(call.address).get(call.sessionId, { resume: call.resume });
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      if (session === undefined) return { ms, failure: 'not found' };
      return { ms, session: { ownerNodeId: session.ownerNodeId, parts: session.parts.map((p) => ({ name: p.name, value: Buffer.from(p.value).toString('base64') })) } };
    } catch (err) {
      return { ms: Number(process.hrtime.bigint() - started) / 1e6, failure: err instanceof Error ? err.message.split('\n')[0]! : String(err) };
    }
  };

  process.on('message', (request: Request) => {
    void (async () => {
      const before = gc.snapshot();
      const results: OneResult[] = [];
      for (const call of request.calls) results.push(await one(call));
      const after = gc.snapshot();
      const answer: Answer = { id: request.id, results, gc: { scavengeMs: after.scavengeMs - before.scavengeMs, majorMs: after.majorMs - before.majorMs } };
      process.send!(answer);
    })();
  });
  process.on('disconnect', () => {
    for (const client of clients.values()) client.close();
    peers.close();
    process.exit(0);
  });
}

if (process.argv.includes(CHILD_FLAG)) childMain();
