/**
 * Every metric the sidecar exports, in one place. Names follow Prometheus conventions:
 * baton_ prefix, base units, _total on counters. No label ever carries a session id or
 * any session content; label values come from small fixed sets.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { ErrorCode } from '../../src/wire/errors';
import type { ResumeObserver } from '../../src/core/session-api';
import type { SessionStore } from '../../src/store/store';
import { PACKAGE_ROOT, VERSION } from '../config/package-root';
import type { NodeObserver } from '../../src/core/node-core';
import type { UdpTransport } from '../transport/udp-transport';
import { CountedCounter, CountedHistogram } from './counted-histogram';
import { REINJECTION_OUTCOMES, statusClass, TCP_CAPTURE_OUTCOMES, type ProxyObserver, type TcpCaptureObserver } from './proxy-observer';

export type Method = 'put' | 'get' | 'delete' | 'touch' | 'update_cart';
export type OperationResult = 'ok' | 'not_found' | 'invalid' | 'precondition' | 'exhausted' | 'unavailable' | 'deadline' | 'error';

export function resultOf(code: ErrorCode): OperationResult {
  switch (code) {
    case 'invalid_argument':
      return 'invalid';
    case 'failed_precondition':
      return 'precondition';
    case 'resource_exhausted':
      return 'exhausted';
    case 'not_found':
      return 'not_found';
    case 'unavailable':
      return 'unavailable';
    case 'deadline_exceeded':
      return 'deadline';
    case 'internal':
      return 'error';
  }
}

/**
 * prom-client's default Node metrics, less those that `promtool check metrics` rejects
 * (gauges named *_total). Each has a conforming twin without the suffix
 * (nodejs_active_handles, nodejs_heap_size_bytes…) or is covered by nodejs_heap_space_size_*.
 */
const NON_CONFORMING_DEFAULTS = new Set([
  'nodejs_active_handles_total',
  'nodejs_active_requests_total',
  'nodejs_active_resources_total',
  'nodejs_heap_size_total_bytes',
  'nodejs_heap_space_size_total_bytes',
]);

/**
 * Two of the removed gauges carry the collect() that sets their siblings' values (heap used,
 * external memory, heap spaces used and available): without it those read 0 for good. Each
 * comes back under a conforming name whose collect runs the original's, and the siblings are
 * registered again after it, so one scrape reads them fresh.
 */
const RENAMED_COLLECTORS: Record<string, { name: string; help: string; siblings: string[] }> = {
  nodejs_heap_size_total_bytes: {
    name: 'nodejs_heap_size_bytes',
    help: 'Process heap size from Node.js in bytes.',
    siblings: ['nodejs_heap_size_used_bytes', 'nodejs_external_memory_bytes'],
  },
  nodejs_heap_space_size_total_bytes: {
    name: 'nodejs_heap_space_size_bytes',
    help: 'Process heap space size from Node.js in bytes.',
    siblings: ['nodejs_heap_space_size_used_bytes', 'nodejs_heap_space_size_available_bytes'],
  },
};

function registerConformingDefaults(registry: Registry): void {
  collectDefaultMetrics({ register: registry });
  for (const name of NON_CONFORMING_DEFAULTS) {
    const removed = registry.getSingleMetric(name) as Gauge | undefined;
    registry.removeSingleMetric(name);
    const renamed = RENAMED_COLLECTORS[name];
    if (renamed === undefined || removed === undefined) continue;
    new Gauge({
      name: renamed.name,
      help: renamed.help,
      labelNames: ['space'],
      registers: [registry],
      async collect() {
        for (const v of (await removed.get()).values) this.set(v.labels as Record<string, string>, v.value);
      },
    });
    for (const sibling of renamed.siblings) {
      const metric = registry.getSingleMetric(sibling);
      if (metric === undefined) continue;
      registry.removeSingleMetric(sibling);
      registry.registerMetric(metric);
    }
  }
}

export class SidecarMetrics {
  readonly registry = new Registry();
  readonly operations: CountedCounter;
  readonly operationDuration: CountedHistogram;
  readonly exchangeStreams: Gauge;
  readonly watchers: Gauge;
  readonly watchersDropped: Counter;
  /** HTTP long-polls parked, waiting for a change. */
  readonly httpLongPolls: Gauge;
  readonly requestsRefused: Counter;
  readonly drainDuration: Gauge;
  /** Live TCP handover (--tcp-handover), by what became of each connection. */
  readonly tcpHandoverConnections: Counter<'outcome'>;
  /** 1 while --insecure lets peer traffic leave loopback without a cluster key. */
  readonly insecure: Gauge;

  constructor(store: SessionStore, maxMemoryBytes: number) {
    const registry = this.registry;
    registerConformingDefaults(registry);

    // Counted (counted-histogram.ts): every API operation passes here.
    this.operations = new CountedCounter('baton_operations_total', 'Session API operations by method and result.', registry, ['method', 'result']);
    this.operationDuration = new CountedHistogram(
      'baton_operation_duration_seconds',
      'Time to serve one session API operation inside the sidecar, from decoded request to encoded response.',
      [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1],
      registry,
      ['method'],
    );
    this.exchangeStreams = new Gauge({
      name: 'baton_exchange_streams',
      help: 'Open Exchange streams.',
      registers: [registry],
    });
    this.watchers = new Gauge({ name: 'baton_watchers', help: 'Open Watch streams.', registers: [registry] });
    this.watchersDropped = new Counter({
      name: 'baton_watchers_dropped_total',
      help: 'Watch streams ended because the client read too slowly.',
      registers: [registry],
    });
    this.httpLongPolls = new Gauge({
      name: 'baton_http_long_polls',
      help: 'HTTP long-polls (GET /v1/sessions/{id}/changes) parked, waiting for a change.',
      registers: [registry],
    });
    this.requestsRefused = new Counter({
      name: 'baton_requests_refused_total',
      help: 'Session API messages refused before decoding (over an element limit) or that did not decode.',
      registers: [registry],
    });
    this.drainDuration = new Gauge({
      name: 'baton_drain_duration_seconds',
      help: 'Duration of the last drain (SIGTERM to leaving the cluster); 0 until the node drains.',
      registers: [registry],
    });
    this.tcpHandoverConnections = new Counter({
      name: 'baton_tcp_handover_connections_total',
      help:
        'Client connections of a live TCP handover by outcome: handed_over, revived (kept here when the handover failed), lost (the peer did not confirm after the address moved), left (busy to the end: drained here); on the receiving node taken, refused, dropped (no commit came).',
      labelNames: ['outcome'],
      registers: [registry],
    });
    const build = buildInfoLabels();
    new Gauge({
      name: 'baton_build_info',
      help: 'Always 1; the labels say which baton runs: version (package.json), node_version, and commit when the installed tree records it.',
      labelNames: Object.keys(build),
      registers: [registry],
    }).set(build, 1);
    this.insecure = new Gauge({
      name: 'baton_insecure',
      help: '1 if --insecure lets this node send and accept peer traffic off loopback without a cluster key (unencrypted, unauthenticated), else 0.',
      registers: [registry],
    });
    const stats = () => store.getStats();
    new Gauge({
      name: 'baton_sessions',
      help: 'Live sessions held.',
      registers: [registry],
      collect() {
        this.set(stats().sessions);
      },
    });
    new Gauge({
      name: 'baton_parts',
      help: 'Live parts held.',
      registers: [registry],
      collect() {
        this.set(stats().parts);
      },
    });
    new Gauge({
      name: 'baton_tombstones',
      help: 'Tombstones of deleted or expired sessions held.',
      registers: [registry],
      collect() {
        this.set(stats().tombstones);
      },
    });
    new Gauge({
      name: 'baton_stored_bytes',
      help: 'Bytes of session state held, as the memory budget counts them.',
      registers: [registry],
      collect() {
        this.set(stats().bytes);
      },
    });
    gaugeByKind(
      registry,
      'baton_value_slab_bytes',
      'Bytes of the slabs holding part values off the V8 heap (allocated: all slabs; live: values still in use). Allocated stays within about twice live plus one slab.',
      () => {
        const { allocated, live } = store.valueMemory();
        return { allocated, live };
      },
    );
    gaugeByKind(
      registry,
      'baton_store_row_bytes',
      'Bytes of the buffers sessions and parts are rows of, off the V8 heap (allocated: they double as the store grows and never shrink; used: rows in use).',
      () => store.rowMemory(),
    );
    counterFrom(registry, 'baton_value_slab_moved_bytes_total', 'Value bytes moved out of mostly released slabs so the slabs could be freed.', () => store.valueMemory().movedBytes);
    new Gauge({
      name: 'baton_memory_budget_bytes',
      help: 'The memory budget for session state (0 = unlimited).',
      registers: [registry],
    }).set(maxMemoryBytes);
    counterFrom(registry, 'baton_evictions_total', 'Sessions evicted to stay within the memory budget.', () => stats().evictions);
    counterFrom(registry, 'baton_expirations_total', 'Sessions expired after their idle TTL.', () => stats().expirations);
  }

  /** Replication metrics read from the node core (and the transport's send errors) at scrape time. */
  attachReplication(transport: UdpTransport): void {
    const registry = this.registry;
    const core = transport.core;
    const engine = core.engine;
    const stats = core.counters.engine;
    const types = ['data', 'heartbeat', 'nack', 'ack', 'gone', 'leave', 'election', 'inquiry', 'inquiryReply', 'coordinatorNotice', 'viewPage'] as const;
    const perType = (name: string, help: string, read: (t: (typeof types)[number]) => number) =>
      labelledCounterFrom(registry, name, help, ['type'], () => types.map((type) => [{ type }, read(type)]));
    perType('baton_replication_datagrams_sent_total', 'Replication datagrams sent, by type.', (t) => stats.datagramsSent[t]);
    perType('baton_replication_datagrams_received_total', 'Replication datagrams received and authenticated, by type.', (t) => stats.datagramsReceived[t]);
    counterFrom(registry, 'baton_replication_sent_bytes_total', 'Replication payload bytes sent (before sealing).', () => stats.bytesSent);
    counterFrom(registry, 'baton_replication_received_bytes_total', 'Replication payload bytes received (after opening).', () => stats.bytesReceived);
    counterFrom(registry, 'baton_replication_deltas_sent_total', 'Deltas queued to secondaries (once per channel).', () => stats.deltasSent);
    counterFrom(registry, 'baton_replication_deltas_applied_total', 'Deltas from owners applied here.', () => stats.deltasApplied);
    counterFrom(registry, 'baton_replication_nacks_sent_total', 'NACKs this node sent for missing sequence numbers.', () => engine.channelCounters().nacksSent);
    counterFrom(registry, 'baton_replication_nacks_received_total', 'NACKs this node received as a sender.', () => stats.nacksReceived);
    counterFrom(registry, 'baton_replication_retransmissions_total', 'Datagrams sent again after a NACK.', () => stats.retransmissions);
    counterFrom(
      registry,
      'baton_replication_repairs_held_off_total',
      'Packets NACKed again within the repair holdoff of their last retransmission, and not resent.',
      () => engine.channelCounters().repairsHeldOff,
    );
    counterFrom(
      registry,
      'baton_replication_stale_nacks_total',
      'NACKed ranges their receiver had acknowledged since (late copies of NACKs already answered), not answered.',
      () => engine.channelCounters().staleNacks,
    );
    counterFrom(registry, 'baton_replication_fragments_sent_total', 'Fragments of deltas too large for one datagram.', () => stats.fragmentsSent);
    counterFrom(registry, 'baton_replication_acks_received_total', 'Acknowledgements received from secondaries.', () => stats.acksReceived);
    counterFrom(registry, 'baton_replication_duplicates_total', 'Data datagrams received more than once.', () => engine.channelCounters().duplicates);
    new Gauge({
      name: 'baton_replication_retransmit_buffer_bytes',
      help: 'Bytes held for retransmission, all channels.',
      registers: [registry],
      collect() {
        this.set(engine.retransmitBufferBytes());
      },
    });
    new Gauge({
      name: 'baton_replication_send_queue_deltas',
      help: 'Deltas waiting for the send window (acknowledgements) before they are sent, all channels.',
      registers: [registry],
      collect() {
        this.set(engine.sendWindow().queuedDeltas);
      },
    });
    counterFrom(
      registry,
      'baton_replication_send_window_holds_total',
      'Times a channel held deltas back because its send window was full.',
      () => engine.sendWindow().holds,
    );
    counterFrom(
      registry,
      'baton_replication_send_window_overrides_total',
      'Held deltas sent past a full window: the queue outgrew the retransmit buffer bound, or acknowledgements stopped.',
      () => engine.sendWindow().overrides,
    );
    counterFrom(
      registry,
      'baton_replication_backpressure_waits_total',
      'Puts whose answer waited until the replication send queues were short again (a writer faster than its secondaries).',
      () => core.counters.backpressureWaits,
    );
    counterFrom(
      registry,
      'baton_replication_deltas_conflated_total',
      'Queued deltas replaced by a newer delta of the same part before they were sent.',
      () => engine.sendWindow().conflated,
    );
    new Gauge({
      name: 'baton_replication_reassembly_bytes',
      help: 'Bytes of partly received fragmented deltas.',
      registers: [registry],
      collect() {
        this.set(engine.reassemblyBytesHeld());
      },
    });
    new Gauge({
      name: 'baton_partitions_under_replicated',
      help: 'Partitions this node holds that lack a copy: a transfer into them pending, local writes not yet on all their secondaries, or too few live members.',
      registers: [registry],
      collect() {
        this.set(engine.underReplicatedPartitions());
      },
    });
    counterFrom(registry, 'baton_rereplicated_bytes_total', 'Bytes of session state pulled from peers because placement gave this node new partitions.', () => core.counters.rereplicatedBytes);
    counterFrom(registry, 'baton_anti_entropy_repairs_total', 'Sessions changed by anti-entropy: divergence found by digest comparison and repaired.', () => core.counters.antiEntropyRepairs);
    counterFrom(registry, 'baton_sessions_transferred_total', 'Sessions merged from peers by state transfers (joins, placement changes, resyncs, anti-entropy).', () => core.counters.sessionsTransferred);
    counterFrom(registry, 'baton_replication_send_errors_total', 'Datagrams the operating system refused to send (an unreachable or invalid peer address, a full buffer).', () => core.counters.sendErrors);
    counterFrom(
      registry,
      'baton_replication_segmented_datagrams_total',
      'Datagrams handed to the kernel several to one destination in one segmented send (UDP_SEGMENT); it stops growing where the kernel refuses them (logged).',
      () => core.counters.segmentedDatagrams,
    );
    counterFrom(
      registry,
      'baton_replication_coalesced_datagrams_total',
      'Datagrams received in runs the kernel handed over as one read (UDP_GRO: a peer\'s segmented send), cut apart by this node; flat without a cluster key or with --udp-segmentation off.',
      () => core.counters.coalescedDatagrams,
    );
    counterFrom(
      registry,
      'baton_replication_own_datagrams_received_total',
      "This node's own multicast datagrams that the group looped back into the process and it skipped; once the first has shown their source, a socket filter drops the rest in the kernel (this grows only where the filter cannot be attached).",
      () => core.counters.ownDatagramsReceived,
    );
    const counters = core.counters;
    labelledCounterFrom(registry, 'baton_replication_dropped_total', 'Datagrams or deltas dropped, by reason.', ['reason'], () =>
      [...counters.dropped].map(([reason, n]) => [{ reason }, n]),
    );
    labelledCounterFrom(registry, 'baton_replication_resyncs_total', 'State transfers from peers, by reason and outcome.', ['reason', 'outcome'], () =>
      [...counters.transfers].map(([key, n]) => {
        const [reason = '', outcome = ''] = key.split(' ');
        return [{ reason, outcome }, n];
      }),
    );
    labelledCounterFrom(registry, 'baton_cluster_membership_events_total', 'Membership changes seen, by type.', ['type'], () =>
      [...counters.membershipEvents].map(([type, n]) => [{ type }, n]),
    );
    labelledCounterFrom(
      registry,
      'baton_config_mismatches_total',
      'Heartbeats refused because the sender\'s cluster-critical configuration differs, by differing setting (partitions, replicas, hash_seed, protocol_version, multicast_groups, cluster_key, unknown).',
      ['setting'],
      () => [...core.membership.configMismatchesBySetting].map(([setting, n]) => [{ setting }, n]),
    );
    labelledCounterFrom(registry, 'baton_sessions_claimed_total', 'Sessions this node took ownership of, by reason: resume (a client asked), takeover (orphaned sessions of a partition this node became master of).', ['reason'], () =>
      (['resume', 'takeover'] as const).map((reason) => [{ reason }, counters.claims.get(reason) ?? 0]),
    );
    counterFrom(
      registry,
      'baton_sessions_handed_over_total',
      "Sessions this node owned and handed over to a peer resuming them, as it answered the peer's lookup (its writes from then on wait for the new owner's word).",
      () => counters.handedOver,
    );
    counterFrom(
      registry,
      'baton_takeovers_withheld_total',
      "Orphaned sessions a partition's master passed over in a takeover (--quorum): no copy at hand came from a node that held the session for its owner; counted once per pass.",
      () => counters.claimsUnvouched,
    );
    new Gauge({
      name: 'baton_quorum_present',
      help: '1 while this node hears at least --quorum members (itself included) and so acknowledges writes and claims sessions; 0 while it does not. 1 without --quorum.',
      registers: [registry],
      collect() {
        this.set(core.quorumLost(Date.now()) === undefined ? 1 : 0);
      },
    });
    counterFrom(registry, 'baton_replication_sessions_discarded_total', 'Copies dropped because placement moved them to other members.', () => stats.sessionsDiscarded);
    new Gauge({
      name: 'baton_cluster_members',
      help: 'Members by state, this node included.',
      labelNames: ['state'],
      registers: [registry],
      collect() {
        const counts = { alive: 0, suspect: 0, dead: 0, left: 0 };
        for (const m of core.membership.members()) counts[m.state]++;
        for (const [state, n] of Object.entries(counts)) this.set({ state }, n);
      },
    });
    const elections = core.masters.elections;
    counterFrom(registry, 'baton_elections_won_total', 'Partitions this node became master of when its staggered election timer fired (its master had failed).', () => elections.counts.elected);
    counterFrom(registry, 'baton_election_revokes_total', 'REVOKEs this node sent: another member declared itself master of a partition where this node has the smaller index.', () => elections.counts.revokes);
    new Gauge({
      name: 'baton_partitions_mastered',
      help: 'Partitions this node is the elected master of.',
      registers: [registry],
      collect() {
        this.set(core.masters.mastered().length);
      },
    });
    const coordinator = core.coordinator;
    new Gauge({
      name: 'baton_cluster_view_id',
      help: "The id of the coordinator's view this node holds (0 = none yet).",
      registers: [registry],
      collect() {
        this.set(coordinator.viewId);
      },
    });
    new Gauge({
      name: 'baton_cluster_view_placement',
      help: "1 when placement ranks the coordinator's view, 0 while it follows this node's own failure detector (before the first view, or while the coordinator is unreachable).",
      registers: [registry],
      collect() {
        this.set(coordinator.placingFromView ? 1 : 0);
      },
    });
    new Gauge({
      name: 'baton_cluster_coordinator',
      help: "1 when this node is the cluster's coordinator.",
      registers: [registry],
      collect() {
        this.set(coordinator.isCoordinator ? 1 : 0);
      },
    });
    labelledCounterFrom(registry, 'baton_cluster_views_total', 'Coordinator views this node published (as coordinator) or adopted.', ['outcome'], () => [
      [{ outcome: 'published' }, coordinator.published],
      [{ outcome: 'adopted' }, coordinator.adopted],
    ]);
    labelledCounterFrom(registry, 'baton_cluster_coordination_dropped_total', 'View pages and coordinator notices refused, by reason (not_coordinator, stale, malformed, bad_notice).', ['reason'], () =>
      [...coordinator.drops].map(([reason, n]) => [{ reason }, n]),
    );
  }

  /** Replication metrics the node core (and the transport) report as events happen. */
  replicationSink(): NodeObserver {
    const registry = this.registry;
    // One observation per delta applied: counted without prom-client's per-call work.
    const lag = new CountedHistogram(
      'baton_replication_lag_seconds',
      "Time from the owner's write to its apply on this node (owner's clock to this node's clock).",
      [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1, 5],
      registry,
    );
    const peerFetch = new Histogram({
      name: 'baton_resume_peer_fetch_duration_seconds',
      help: "Time for one peer to answer a resume's fetch of a session, by outcome.",
      labelNames: ['outcome'],
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5],
      registers: [registry],
    });
    return {
      lag: (seconds) => lag.observe(seconds),
      // Transfers and membership changes are counted in the core's NodeCounters (read in
      // attachReplication); these events are for the log.
      resync: () => undefined,
      membership: () => undefined,
      peerFetch: (seconds, outcome) => peerFetch.observe({ outcome }, seconds),
    };
  }

  /** Resumes (Get with resume) by outcome and duration, and the claims they made. */
  resumeObserver(): ResumeObserver {
    const resumes = new Counter({
      name: 'baton_resumes_total',
      help: 'Resumes by outcome: local (this node owned the session), peer (fetched from peers), not_found.',
      labelNames: ['outcome'],
      registers: [this.registry],
    });
    const duration = new Histogram({
      name: 'baton_resume_duration_seconds',
      help: 'Time to serve a resume that asked peers, from the request to the merged answer.',
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5],
      registers: [this.registry],
    });
    const claims = new Counter({
      name: 'baton_claims_total',
      help: 'Sessions this node took ownership of (a resume of a session owned elsewhere).',
      registers: [this.registry],
    });
    for (const outcome of ['local', 'peer', 'not_found']) resumes.inc({ outcome }, 0);
    return {
      resumed: (outcome, seconds) => {
        resumes.inc({ outcome });
        if (outcome !== 'local') duration.observe(seconds);
      },
      claimed: () => claims.inc(),
    };
  }

  /** The capture proxy's requests, upstream errors, resumes and captures. */
  proxyObserver(): ProxyObserver {
    const registry = this.registry;
    const requests = new Counter({
      name: 'baton_proxy_requests_total',
      help: 'Requests the capture proxy answered, by status class and client protocol.',
      labelNames: ['status_class', 'protocol'],
      registers: [registry],
    });
    const upstreamErrors = new Counter({
      name: 'baton_proxy_upstream_errors_total',
      help: 'Requests the web server did not answer, by reason: connect (refused or absent), timeout (--proxy-upstream-timeout-ms), reset.',
      labelNames: ['reason'],
      registers: [registry],
    });
    const resumes = new Counter({
      name: 'baton_proxy_resumes_total',
      help: "Resumes the proxy made for a request naming a session this node does not own (requests of sessions owned here read the local store and are not counted), by outcome: peer (resumed from another node), local (owned here by then), not_found (a new id was minted), unavailable (503).",
      labelNames: ['outcome'],
      registers: [registry],
    });
    const captures = new Counter({
      name: 'baton_proxy_captures_total',
      help: 'State the proxy captured into sessions, by kind (session_minted, login, logout, bearer, client_cert, tls; auth_invalid and bearer_invalid were ignored; write_failed was refused by the store).',
      labelNames: ['kind'],
      registers: [registry],
    });
    const reloads = new Counter({
      name: 'baton_proxy_tls_reloads_total',
      help: 'Loads of changed --tls-cert-file/--tls-key-file, by result (error: the previous certificate stays in service).',
      labelNames: ['result'],
      registers: [registry],
    });
    const reinjections = new Counter({
      name: 'baton_proxy_reinjections_total',
      help:
        'Requests the web server failed to answer (refused, reset, crashed), by what became of them: answered (by a peer, re-injected), failed (no peer answered), ' +
        'not_replayable (not safe to repeat: 502), too_large (over --replay-buffer-mb or the per-request cap: 502), no_peer (none live: 502); and re-injections peers sent here: served, refused.',
      labelNames: ['outcome'],
      registers: [registry],
    });
    const repeats = new Counter({
      name: 'baton_proxy_idempotent_repeats_total',
      help: "Requests answered from the session's remembered Idempotency-Key answers, without reaching a web server.",
      registers: [registry],
    });
    for (const outcome of REINJECTION_OUTCOMES) reinjections.inc({ outcome }, 0);
    for (const reason of ['connect', 'timeout', 'reset']) upstreamErrors.inc({ reason }, 0);
    for (const outcome of ['local', 'peer', 'not_found', 'unavailable']) resumes.inc({ outcome }, 0);
    const requestChildren = new Map<string, { inc(): void }>();
    return {
      request: (status, protocol) => {
        const key = statusClass(status) + protocol;
        let child = requestChildren.get(key);
        if (child === undefined) requestChildren.set(key, (child = requests.labels(statusClass(status), protocol)));
        child.inc();
      },
      upstreamError: (reason) => upstreamErrors.inc({ reason }),
      resume: (outcome) => resumes.inc({ outcome }),
      capture: (kind) => captures.inc({ kind }),
      tlsReload: (result) => reloads.inc({ result }),
      reinjection: (outcome) => reinjections.inc({ outcome }),
      idempotentRepeat: () => repeats.inc(),
    };
  }

  /** The proxy's TCP state samples (--tcp-capture-interval-ms), by outcome. */
  tcpCaptureObserver(): TcpCaptureObserver {
    const samples = new Counter({
      name: 'baton_tcp_captures_total',
      help: "TCP state samples of the proxy's client connections, by outcome: written (the session's tcp part changed and was stored), unchanged (not written), skipped (the connection moved while read; read again next tick), failed (a system call failed, or the sequence origins were not learnt at accept), write_failed (the store refused the part).",
      labelNames: ['outcome'],
      registers: [this.registry],
    });
    const children = new Map(TCP_CAPTURE_OUTCOMES.map((outcome) => [outcome, samples.labels(outcome)]));
    for (const child of children.values()) child.inc(0);
    return { sample: (outcome) => children.get(outcome)!.inc() };
  }

  /** Label children by method and result, so the hot path looks labels up once. */
  private readonly operationCounters = new Map<string, { inc(): void }>();
  private readonly operationHistograms = new Map<Method, { observe(v: number): void }>();

  /** Records one finished operation (every API surface: gRPC, HTTP, RESP). */
  observe(method: Method, result: OperationResult, seconds: number): void {
    this.countOperation(method, result);
    let histogram = this.operationHistograms.get(method);
    if (histogram === undefined) this.operationHistograms.set(method, (histogram = this.operationDuration.child(method)));
    histogram.observe(seconds);
  }

  /** Counts an operation that was refused before it ran (no duration). */
  countOperation(method: Method, result: OperationResult): void {
    const key = method + ' ' + result;
    let counter = this.operationCounters.get(key);
    if (counter === undefined) this.operationCounters.set(key, (counter = this.operations.child(method, result)));
    counter.inc();
  }
}

/** A labelled counter that mirrors monotonically growing numbers kept elsewhere (NodeCounters). */
function labelledCounterFrom(
  registry: Registry,
  name: string,
  help: string,
  labelNames: string[],
  read: () => [Record<string, string>, number][],
): void {
  const reported = new Map<string, number>();
  new Counter({
    name,
    help,
    labelNames,
    registers: [registry],
    collect() {
      for (const [labels, value] of read()) {
        const key = Object.values(labels).join(' ');
        const before = reported.get(key) ?? 0;
        // inc(0) too: a label's series exists from the first scrape.
        this.inc(labels, Math.max(0, value - before));
        reported.set(key, Math.max(before, value));
      }
    },
  });
}

/** A gauge with one series per `kind`, read at each scrape. */
function gaugeByKind(registry: Registry, name: string, help: string, read: () => Record<string, number>): void {
  new Gauge({
    name,
    help,
    labelNames: ['kind'],
    registers: [registry],
    collect() {
      for (const [kind, value] of Object.entries(read())) this.set({ kind }, value);
    },
  });
}

/** A counter that mirrors a monotonically growing number kept elsewhere. */
function counterFrom(registry: Registry, name: string, help: string, read: () => number): void {
  labelledCounterFrom(registry, name, help, [], () => [[{}, read()]]);
}

/**
 * The labels of baton_build_info. `commit` comes from a git checkout's own files (HEAD, a
 * loose ref or packed-refs; a worktree's `.git` file points to its directory), read once:
 * no git process runs, and an installed package or an image without `.git` has no commit
 * label rather than a wrong one.
 */
export function buildInfoLabels(root: string = PACKAGE_ROOT, version: string = VERSION): Record<string, string> {
  const labels: Record<string, string> = { version, node_version: process.version };
  const commit = checkedOutCommit(root);
  if (commit !== undefined) labels.commit = commit;
  return labels;
}

const COMMIT_ID = /^[0-9a-f]{40}([0-9a-f]{24})?$/;

function checkedOutCommit(root: string): string | undefined {
  try {
    let gitDir = path.join(root, '.git');
    if (!existsSync(gitDir)) return undefined;
    if (statSync(gitDir).isFile()) {
      const pointer = /^gitdir: (.+)$/m.exec(readFileSync(gitDir, 'utf8'))?.[1]?.trim();
      if (pointer === undefined) return undefined;
      gitDir = path.resolve(root, pointer);
    }
    const head = readFileSync(path.join(gitDir, 'HEAD'), 'utf8').trim();
    if (COMMIT_ID.test(head)) return head;
    const ref = /^ref: (refs\/\S+)$/.exec(head)?.[1];
    if (ref === undefined) return undefined;
    // A worktree keeps its HEAD; branches live in the main repository's directory.
    const commonFile = path.join(gitDir, 'commondir');
    const common = existsSync(commonFile) ? path.resolve(gitDir, readFileSync(commonFile, 'utf8').trim()) : gitDir;
    for (const dir of [gitDir, common]) {
      const loose = path.join(dir, ref);
      if (existsSync(loose)) {
        const id = readFileSync(loose, 'utf8').trim();
        return COMMIT_ID.test(id) ? id : undefined;
      }
    }
    const packed = path.join(common, 'packed-refs');
    if (!existsSync(packed)) return undefined;
    for (const line of readFileSync(packed, 'utf8').split('\n')) {
      const [id, name] = line.trim().split(' ');
      if (name === ref && id !== undefined && COMMIT_ID.test(id)) return id;
    }
    return undefined;
  } catch {
    // An unreadable checkout only costs the label.
    return undefined;
  }
}
