/**
 * A simulated datagram network on virtual time, for deterministic protocol tests.
 *
 * Rules:
 * - Nothing here touches a socket or a clock. Time is `now` (Unix ms), and it only moves
 *   inside `run`, which jumps to the next event: a delivery, a scheduled callback, or the
 *   earliest `nextDeadline()` of a host (then that host is ticked). Like Date.now() in the
 *   sidecar, `now` is always a whole millisecond: an event due at a fraction runs at the
 *   next whole one (so sub-ms delays still order deliveries, and ties run in order).
 * - Every random choice (delay, loss, duplication, reordering, burst state) comes from one
 *   seeded source, so a seed replays the same run exactly.
 * - A link is directed (from → to). Its profile is the network default unless a link
 *   override or a per-address override applies. Cut links drop everything (partitions).
 * - Multicast delivers one independent copy over each (sender → member) link to every
 *   member of the addressed group ('multicast' = group 0, 'multicast#g') except the sender.
 *   A multicast host is a member of group 0 when attached; `setGroups` changes that.
 * - Events at the same virtual time run in the order they were scheduled, before any host
 *   due then is ticked; due hosts are ticked one per step, in the order they were attached.
 * - `run` is bounded: it throws when the number of steps at one virtual instant exceeds a
 *   limit (a core that asks to be woken "now" forever is a livelock, and a bug).
 */
import { SeededRandom } from '../../src/store/random';
import { groupOfDestination } from '../../src/core/multicast-groups';

/** Two-state (good/bad) Markov loss model: bursty loss as on congested links. */
export interface GilbertElliott {
  /** Probability per datagram of moving good → bad. */
  pGoodToBad: number;
  /** Probability per datagram of moving bad → good (mean burst length is 1 / this). */
  pBadToGood: number;
  /** Loss probability in the good state. */
  lossGood: number;
  /** Loss probability in the bad state. */
  lossBad: number;
}

export interface LinkProfile {
  /** One-way delay, uniform in [delayMinMs, delayMaxMs]. */
  delayMinMs: number;
  delayMaxMs: number;
  /** Steady loss probability per datagram (ignored when `burst` is set). */
  loss: number;
  /** Bursty loss instead of steady loss. */
  burst?: GilbertElliott | undefined;
  /** Probability that a datagram is delivered twice (the copy with its own delay). */
  duplicate: number;
  /** Probability that a datagram is held back by an extra delay, so later ones overtake it. */
  reorder: number;
  /** Upper bound of that extra delay (uniform in [0, reorderExtraMs]). */
  reorderExtraMs: number;
}

export const PERFECT_LINK: LinkProfile = {
  delayMinMs: 0.1,
  delayMaxMs: 2,
  loss: 0,
  duplicate: 0,
  reorder: 0,
  reorderExtraMs: 0,
};

/** What the network (and an adversary) can know about a datagram besides its bytes. */
export interface DatagramMeta {
  /** Body case of the plaintext Datagram ('data', 'heartbeat', 'nack', …), as its sender labelled it. */
  kind: string;
  /** For data: the channel sequence number and whether it is a retransmission. */
  seq?: number | undefined;
  retransmit?: boolean | undefined;
  fragment?: boolean | undefined;
  /** For data: the DeltaKind of each delta it carries. */
  deltaKinds?: number[] | undefined;
}

export interface Transmission {
  from: string;
  /** The destination address (a multicast copy names the member it goes to). */
  to: string;
  multicast: boolean;
  /** The multicast group a multicast copy was sent to. */
  group?: number;
  bytes: Uint8Array;
  meta: DatagramMeta;
  sentAt: number;
}

/** A participant of the network: the simulation delivers to it and ticks it. */
export interface SimHost {
  readonly address: string;
  /** Whether the host receives (a stopped host drops everything sent to it). */
  readonly running: boolean;
  /** A datagram arrived. */
  deliver(bytes: Uint8Array, fromAddress: string, now: number): void;
  /** When the host next needs tick(); Infinity for never. */
  nextDeadline(): number;
  tick(now: number): void;
}

export interface NetworkStats {
  sent: number;
  delivered: number;
  lost: number;
  cut: number;
  duplicated: number;
  reordered: number;
  undeliverable: number;
  dropped: number;
  injected: number;
}

interface QueuedEvent {
  at: number;
  order: number;
  run: () => void;
}

/** A binary min-heap of events by (at, order). */
class EventQueue {
  private readonly heap: QueuedEvent[] = [];

  get size(): number {
    return this.heap.length;
  }

  peek(): QueuedEvent | undefined {
    return this.heap[0];
  }

  push(event: QueuedEvent): void {
    const heap = this.heap;
    heap.push(event);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(heap[i]!, heap[parent]!)) break;
      [heap[i], heap[parent]] = [heap[parent]!, heap[i]!];
      i = parent;
    }
  }

  pop(): QueuedEvent | undefined {
    const heap = this.heap;
    const top = heap[0];
    const last = heap.pop();
    if (heap.length > 0 && last !== undefined) {
      heap[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < heap.length && before(heap[l]!, heap[m]!)) m = l;
        if (r < heap.length && before(heap[r]!, heap[m]!)) m = r;
        if (m === i) break;
        [heap[i], heap[m]] = [heap[m]!, heap[i]!];
        i = m;
      }
    }
    return top;
  }
}

function before(a: QueuedEvent, b: QueuedEvent): boolean {
  return a.at < b.at || (a.at === b.at && a.order < b.order);
}

/** Most steps `run` takes at one virtual instant before it calls it a livelock. */
const MAX_STEPS_AT_ONE_INSTANT = 20_000;

export class SimNetwork {
  now: number;
  readonly stats: NetworkStats = { sent: 0, delivered: 0, lost: 0, cut: 0, duplicated: 0, reordered: 0, undeliverable: 0, dropped: 0, injected: 0 };
  /** Default profile of every link without an override. */
  profile: LinkProfile;
  /**
   * Adversary/fault hook, called for every transmission (each multicast copy separately)
   * before loss is drawn: return true to drop it. Also sees everything, so a test can
   * capture datagrams to replay or tamper with later.
   */
  filter: ((t: Transmission) => boolean) | undefined;
  /** Fault hook: extra delay (ms) for a transmission that passed, to force an order. */
  extraDelay: ((t: Transmission) => number) | undefined;
  /** Called after every step of `run` (sampling bounds and invariants). */
  onStep: ((now: number) => void) | undefined;

  private readonly random: SeededRandom;
  private readonly hosts = new Map<string, SimHost>();
  /** Members of each multicast group, by group index. */
  private readonly groups = new Map<number, Set<string>>();
  private readonly cutLinks = new Set<string>();
  private readonly linkProfiles = new Map<string, LinkProfile>();
  private readonly addressProfiles = new Map<string, LinkProfile>();
  /** Gilbert–Elliott state per directed link: true = bad. */
  private readonly burstBad = new Map<string, boolean>();
  private readonly queue = new EventQueue();
  private order = 0;

  constructor(seed: number, startMs: number, profile: LinkProfile = PERFECT_LINK) {
    this.random = new SeededRandom(seed);
    this.now = startMs;
    this.profile = profile;
  }

  // --- topology ----------------------------------------------------------------------

  /** Attaches a host at its address (replacing any earlier host there). */
  attach(host: SimHost, multicastMember: boolean): void {
    this.hosts.set(host.address, host);
    this.setGroups(host.address, multicastMember ? [0] : []);
  }

  detach(address: string): void {
    this.hosts.delete(address);
    this.setGroups(address, []);
  }

  /** The host at `address` listens on exactly these multicast groups. */
  setGroups(address: string, groups: readonly number[]): void {
    for (const [group, members] of this.groups) if (!groups.includes(group)) members.delete(address);
    for (const group of groups) {
      let members = this.groups.get(group);
      if (members === undefined) this.groups.set(group, (members = new Set()));
      members.add(address);
    }
  }

  /** The addresses listening on a multicast group. */
  groupMembers(group: number): string[] {
    return [...(this.groups.get(group) ?? [])];
  }

  /** Cuts both directions between a and b. */
  cut(a: string, b: string): void {
    this.cutLinks.add(linkKey(a, b)).add(linkKey(b, a));
  }

  heal(a: string, b: string): void {
    this.cutLinks.delete(linkKey(a, b));
    this.cutLinks.delete(linkKey(b, a));
  }

  /** Cuts every link between address and any other attached host. */
  isolate(address: string): void {
    for (const other of this.hosts.keys()) if (other !== address) this.cut(address, other);
  }

  healAll(): void {
    this.cutLinks.clear();
  }

  isCut(from: string, to: string): boolean {
    return this.cutLinks.has(linkKey(from, to));
  }

  /** A profile for one directed link. */
  setLinkProfile(from: string, to: string, profile: LinkProfile | undefined): void {
    if (profile === undefined) this.linkProfiles.delete(linkKey(from, to));
    else this.linkProfiles.set(linkKey(from, to), profile);
  }

  /** The profile set for one directed link (undefined: none of its own). */
  linkProfile(from: string, to: string): LinkProfile | undefined {
    return this.linkProfiles.get(linkKey(from, to));
  }

  /** A profile for every link to or from an address (a slow or lossy host). */
  setAddressProfile(address: string, profile: LinkProfile | undefined): void {
    if (profile === undefined) this.addressProfiles.delete(address);
    else this.addressProfiles.set(address, profile);
  }

  // --- traffic -----------------------------------------------------------------------

  /** Sends a datagram from an attached host to an address or to the multicast group. */
  send(from: string, to: string, bytes: Uint8Array, meta: DatagramMeta): void {
    this.stats.sent++;
    const group = groupOfDestination(to);
    if (group !== undefined) {
      for (const member of this.groups.get(group) ?? []) {
        if (member !== from) this.transmit({ from, to: member, multicast: true, group, bytes, meta, sentAt: this.now });
      }
      return;
    }
    this.transmit({ from, to, multicast: false, bytes, meta, sentAt: this.now });
  }

  /**
   * Delivers arbitrary bytes to `to` as if sent from `from` (an attacker on the network),
   * after delayMs, bypassing loss, cuts and the filter.
   */
  inject(from: string, to: string, bytes: Uint8Array, delayMs = 0.5): void {
    this.stats.injected++;
    const copy = Uint8Array.from(bytes);
    this.schedule(this.now + delayMs, () => this.deliverNow(from, to, copy));
  }

  /** Runs fn at virtual time `at` (not before now). */
  schedule(at: number, fn: () => void): void {
    this.queue.push({ at: Math.max(at, this.now), order: this.order++, run: fn });
  }

  /** Random draws for tests that want the network's seeded source. */
  get rng(): SeededRandom {
    return this.random;
  }

  // --- time --------------------------------------------------------------------------

  /**
   * Advances virtual time to `untilMs`, running deliveries, scheduled callbacks and host
   * ticks in time order. With `until`, stops early (and returns true) once it holds.
   */
  run(untilMs: number, until?: () => boolean): boolean {
    let stepsHere = 0;
    let instant = this.now;
    for (;;) {
      if (until?.() === true) return true;
      const event = this.queue.peek();
      const eventAt = event === undefined ? Infinity : event.at;
      let tickAt = Infinity;
      for (const host of this.hosts.values()) {
        if (!host.running) continue;
        const deadline = host.nextDeadline();
        if (deadline < tickAt) tickAt = deadline;
      }
      const next = Math.max(this.now, Math.ceil(Math.min(eventAt, tickAt)));
      if (next > untilMs) {
        this.now = Math.max(this.now, Math.floor(untilMs));
        return until?.() === true;
      }
      this.now = next;
      if (next === instant) {
        if (++stepsHere > MAX_STEPS_AT_ONE_INSTANT) {
          const due = [...this.hosts.values()].filter((h) => h.running && h.nextDeadline() <= next).map((h) => h.address);
          throw new Error(`livelock: more than ${MAX_STEPS_AT_ONE_INSTANT} steps at virtual time ${next}; hosts due: ${due.join(', ') || 'none'}`);
        }
      } else {
        instant = next;
        stepsHere = 0;
      }
      if (eventAt <= tickAt) {
        this.queue.pop()!.run();
      } else {
        // One host per step: what it sends with no delay arrives before the next host's
        // tick at the same instant (as if each host's timer fired a moment apart).
        for (const host of this.hosts.values()) {
          if (!host.running || host.nextDeadline() > this.now) continue;
          host.tick(this.now);
          break;
        }
      }
      this.onStep?.(this.now);
    }
  }

  /** Runs for durationMs of virtual time. */
  runFor(durationMs: number): void {
    this.run(this.now + durationMs);
  }

  // --- internals -------------------------------------------------------------------

  private transmit(t: Transmission): void {
    if (this.filter?.(t) === true) {
      this.stats.dropped++;
      return;
    }
    if (this.cutLinks.has(linkKey(t.from, t.to))) {
      this.stats.cut++;
      return;
    }
    const profile = this.profileOf(t.from, t.to);
    if (this.lost(t.from, t.to, profile)) {
      this.stats.lost++;
      return;
    }
    const copies = this.random.next() < profile.duplicate ? 2 : 1;
    if (copies === 2) this.stats.duplicated++;
    const extra = this.extraDelay?.(t) ?? 0;
    for (let i = 0; i < copies; i++) {
      let delay = extra + profile.delayMinMs + this.random.next() * (profile.delayMaxMs - profile.delayMinMs);
      if (this.random.next() < profile.reorder) {
        delay += this.random.next() * profile.reorderExtraMs;
        this.stats.reordered++;
      }
      const bytes = t.bytes;
      this.schedule(this.now + delay, () => this.deliverNow(t.from, t.to, bytes));
    }
  }

  private lost(from: string, to: string, profile: LinkProfile): boolean {
    const burst = profile.burst;
    if (burst === undefined) return profile.loss > 0 && this.random.next() < profile.loss;
    const key = linkKey(from, to);
    let bad = this.burstBad.get(key) ?? false;
    bad = bad ? this.random.next() >= burst.pBadToGood : this.random.next() < burst.pGoodToBad;
    this.burstBad.set(key, bad);
    return this.random.next() < (bad ? burst.lossBad : burst.lossGood);
  }

  private profileOf(from: string, to: string): LinkProfile {
    return this.linkProfiles.get(linkKey(from, to)) ?? this.addressProfiles.get(to) ?? this.addressProfiles.get(from) ?? this.profile;
  }

  private deliverNow(from: string, to: string, bytes: Uint8Array): void {
    const host = this.hosts.get(to);
    if (host === undefined || !host.running) {
      this.stats.undeliverable++;
      return;
    }
    this.stats.delivered++;
    host.deliver(bytes, from, this.now);
  }
}

function linkKey(from: string, to: string): string {
  return `${from}>${to}`;
}
