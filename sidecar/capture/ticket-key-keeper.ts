/**
 * Drives the TLS ticket key schedule (src/capture/ticket-key-schedule.ts) on a node: reads
 * the key set from the replicated store, writes it when this node is the generator, asks
 * the peers when the schedule says so, and publishes the settings a TLS server needs.
 *
 * Rules:
 * - The keys live in the system session TICKET_KEY_SESSION_ID (part "keys", a
 *   TlsTicketKeySet), so they travel over the encrypted peer channel like every delta and
 *   survive any pod. The generator is the cluster's coordinator (src/core/coordinator.ts):
 *   the one member that issues cluster-wide secrets. While no coordinator is known (a node
 *   alone, or between elections) no node generates, and the keys held keep working.
 * - Without a cluster key on a peer channel that leaves loopback (--insecure), the keys
 *   would cross the network in clear text: this node then keeps keys of its own, never
 *   stored or replicated, and says so once in the log and in every settings message
 *   (cluster_wide false). TLS sessions then resume only on the pod that began them.
 * - It runs on the node's one timer, as a companion of the node core (src/core/node-core.ts):
 *   the core counts nextDeadline() in its own and calls tick(now) when it is due; a plan
 *   made outside the core's inputs (a watch event, a fetch's answer) tells the core through
 *   `rescheduled`. Nothing here arms a timer.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { TlsTicketKeySet, type TlsResumptionSettings } from '../../src/gen/baton/v1/session';
import { planTicketKeys, TICKET_KEY_BYTES, type TicketKey, type TicketKeyScheduleConfig } from '../../src/capture/ticket-key-schedule';
import type { TlsResumptionFeed } from '../../src/capture/tls-resumption-source';
import type { Companion } from '../../src/core/node-core';
import type { SessionApi, Replicator } from '../../src/core/session-api';
import type { WatchHub } from '../../src/core/watch-hub';
import { findStoredPart, type SessionStore } from '../../src/store/store';
import { MAX_TTL_SECONDS } from '../../src/wire/validation';

/** The system session holding the cluster's ticket keys. */
export const TICKET_KEY_SESSION_ID = 'baton:tls-ticket-keys';
export const TICKET_KEY_PART = 'keys';

/** How long one ask of the peers may take. */
const FETCH_TIMEOUT_MS = 2000;
/** How soon a node that found no keys asks again (at most; a short rotation asks sooner). */
const FETCH_RETRY_MAX_MS = 5000;

export interface TicketKeyKeeperOptions {
  nodeId: string;
  rotationMs: number;
  sessionLifetimeSeconds: number;
  sessionIdContext: string;
  /** False: keep per-node keys (no cluster key on an exposed peer channel). */
  shared: boolean;
}

/** Who generates: the coordinator this node follows (undefined: none known). */
export interface GeneratorChoice {
  generator(): string | undefined;
}

export class TicketKeyKeeper implements TlsResumptionFeed, Companion {
  private readonly schedule: TicketKeyScheduleConfig;
  private readonly listeners = new Set<(settings: TlsResumptionSettings) => void>();
  private settings: TlsResumptionSettings | undefined;
  private localKeys: TicketKey[] | undefined;
  private peersHaveNone = false;
  private fetching = false;
  /** When the last fetch started: fetches are at least the schedule's retry interval apart. */
  private lastFetchAt = -Infinity;
  private deadline = Infinity;
  /** Tells the node core this schedule's deadline moved (set when it becomes a companion). */
  rescheduled: () => void = () => undefined;
  private unsubscribe: (() => void) | undefined;
  private stopped = false;
  private readyResolve: ((held: boolean) => void) | undefined;
  private readonly readyPromise = new Promise<boolean>((resolve) => (this.readyResolve = resolve));
  /** When ready() gives up waiting for keys (Infinity: nobody waits). */
  private readyBy = Infinity;

  constructor(
    private readonly options: TicketKeyKeeperOptions,
    private readonly store: SessionStore,
    private readonly api: SessionApi,
    private readonly replicator: Replicator | undefined,
    private readonly generators: GeneratorChoice | undefined,
    private readonly hub: WatchHub,
    private readonly log: Logger,
  ) {
    this.schedule = {
      rotationMs: options.rotationMs,
      sessionLifetimeMs: options.sessionLifetimeSeconds * 1000,
      fetchRetryMs: Math.min(FETCH_RETRY_MAX_MS, Math.max(100, Math.floor(options.rotationMs / 16))),
    };
  }

  start(): void {
    if (!this.options.shared) {
      this.log.warn(
        'TLS ticket keys are per node: the peer channel leaves loopback without a cluster key, so the keys are not shared (set --cluster-key-file for TLS sessions that resume on every pod)',
      );
    } else {
      this.unsubscribe = this.hub.subscribe(TICKET_KEY_SESSION_ID, () => this.plan());
    }
    this.plan();
  }

  /**
   * Resolves true once this node holds a key to issue with (the cluster's, or its own), or
   * false at `deadline` (readiness is bounded; the node's timer runs the wait).
   */
  ready(deadline: number): Promise<boolean> {
    if (this.readyResolve !== undefined && deadline < this.readyBy) {
      this.readyBy = deadline;
      this.rescheduled();
    }
    return this.readyPromise;
  }


  current(): TlsResumptionSettings | undefined {
    return this.settings;
  }

  subscribe(listener: (settings: TlsResumptionSettings) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The schedule's next deadline, or the readiness bound if sooner (Unix ms). */
  nextDeadline(): number {
    return Math.min(this.deadline, this.readyResolve === undefined ? Infinity : this.readyBy);
  }

  stop(): void {
    this.stopped = true;
    this.deadline = Infinity;
    this.unsubscribe?.();
    this.listeners.clear();
  }

  /** The node's timer reached this schedule's deadline. */
  tick(now: number): void {
    if (now >= this.readyBy) this.settleReady(false);
    this.plan(now);
  }

  private settleReady(held: boolean): void {
    this.readyResolve?.(held);
    this.readyResolve = undefined;
    this.readyBy = Infinity;
  }

  /** Runs the schedule at `now` and carries out its plan. */
  plan(now = Date.now()): void {
    if (this.stopped) return;
    const shared = this.options.shared;
    const generator = !shared || (this.generators === undefined ? true : this.generators.generator() === this.options.nodeId);
    const plan = planTicketKeys(
      {
        now,
        stored: shared ? this.readStored(now) : this.localKeys,
        generator,
        peersHaveNone: !shared || this.replicator === undefined || this.peersHaveNone,
        newKey: () => randomBytes(TICKET_KEY_BYTES),
      },
      this.schedule,
    );
    if (plan.write !== undefined) {
      if (shared) this.write(plan.write, now);
      else this.localKeys = plan.write;
    }
    // A fetch that answers at once (no peer to ask) plans again at once: without the
    // interval that would be a loop that never yields to the event loop.
    if (plan.fetch && shared && now - this.lastFetchAt >= this.schedule.fetchRetryMs) void this.fetch(now);
    if (plan.issue !== undefined) this.publish(plan.issue, plan.accept);
    if (plan.nextDeadline !== this.deadline) {
      this.deadline = plan.nextDeadline;
      this.rescheduled();
    }
  }

  private readStored(now: number): TicketKey[] | undefined {
    const session = this.store.get(TICKET_KEY_SESSION_ID, now);
    const value = session === undefined ? undefined : findStoredPart(session, TICKET_KEY_PART)?.value;
    if (value === undefined || value === null) return undefined;
    try {
      return TlsTicketKeySet.decode(value).keys.map((k) => ({ key: Buffer.from(k.key), activatesAt: Number(k.activatesAtUnixMs) }));
    } catch {
      // A set that does not decode is treated as absent: the generator writes a new one.
      return undefined;
    }
  }

  private write(keys: readonly TicketKey[], now: number): void {
    const value = Buffer.from(TlsTicketKeySet.encode({ keys: keys.map((k) => ({ key: k.key, activatesAtUnixMs: BigInt(k.activatesAt) })) }).finish());
    try {
      // The write's watch event plans again and publishes; the set is rewritten at every
      // rotation, so the session's TTL never runs out while the cluster lives.
      void Promise.resolve(
        this.api.put({ sessionId: TICKET_KEY_SESSION_ID, parts: [{ name: TICKET_KEY_PART, value, ifVersion: undefined }], ttlSeconds: MAX_TTL_SECONDS, minReplicas: 0 }, now),
      ).catch((err: unknown) => this.log.warn({ err }, 'writing the TLS ticket keys failed'));
      this.log.info({ keys: keys.length, next_activation: new Date(keys[keys.length - 1]!.activatesAt).toISOString() }, 'TLS ticket keys written');
    } catch (err) {
      this.log.warn({ err }, 'writing the TLS ticket keys failed');
    }
  }

  private async fetch(now: number): Promise<void> {
    const replicator = this.replicator;
    if (this.fetching || replicator === undefined) return;
    this.fetching = true;
    this.lastFetchAt = now;
    try {
      const copies = await replicator.fetchFromPeers(TICKET_KEY_SESSION_ID, undefined, now + FETCH_TIMEOUT_MS, now);
      const after = Date.now();
      for (const snapshot of copies.snapshots) this.store.merge(snapshot, after);
      // Only a generator that heard from peers, none of which holds keys, may start a set.
      this.peersHaveNone = copies.asked === 0 || (copies.answered > 0 && this.readStored(after) === undefined);
    } catch (err) {
      this.log.debug({ err }, 'asking the peers for the TLS ticket keys failed');
    } finally {
      this.fetching = false;
    }
    // A merge that changed the set has planned already (its watch event); plan once more for
    // a fetch that brought nothing new, so the retry deadline is armed from now.
    this.plan();
  }

  private publish(issue: TicketKey, accept: readonly TicketKey[]): void {
    const settings: TlsResumptionSettings = {
      issueKey: issue.key,
      acceptKeys: accept.map((k) => k.key),
      sessionIdContext: this.options.sessionIdContext,
      sessionLifetimeSeconds: this.options.sessionLifetimeSeconds,
      clusterWide: this.options.shared,
    };
    const previous = this.settings;
    if (previous !== undefined && sameSettings(previous, settings)) return;
    this.settings = settings;
    this.settleReady(true);
    for (const listener of [...this.listeners]) listener(settings);
  }
}

function sameSettings(a: TlsResumptionSettings, b: TlsResumptionSettings): boolean {
  return (
    Buffer.from(a.issueKey).equals(b.issueKey) &&
    a.acceptKeys.length === b.acceptKeys.length &&
    a.acceptKeys.every((k, i) => Buffer.from(k).equals(b.acceptKeys[i]!)) &&
    a.sessionIdContext === b.sessionIdContext &&
    a.clusterWide === b.clusterWide
  );
}
