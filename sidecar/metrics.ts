/**
 * Every metric the sidecar exports, in one place. Names follow Prometheus conventions:
 * baton_ prefix, base units, _total on counters. No label ever carries a session id or
 * any session content; label values come from small fixed sets.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { ErrorCode } from '../src/errors';
import type { SessionStore } from '../src/store';

export type Method = 'put' | 'get' | 'delete' | 'touch';
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

export class SidecarMetrics {
  readonly registry = new Registry();
  readonly operations: Counter<'method' | 'result'>;
  readonly operationDuration: Histogram<'method'>;
  readonly exchangeStreams: Gauge;
  readonly watchers: Gauge;
  readonly watchersDropped: Counter;
  readonly requestsRejected: Counter<'reason'>;

  constructor(store: SessionStore, maxMemoryBytes: number) {
    const registry = this.registry;
    collectDefaultMetrics({ register: registry });
    for (const name of NON_CONFORMING_DEFAULTS) registry.removeSingleMetric(name);

    this.operations = new Counter({
      name: 'baton_operations_total',
      help: 'Session API operations by method and result.',
      labelNames: ['method', 'result'],
      registers: [registry],
    });
    this.operationDuration = new Histogram({
      name: 'baton_operation_duration_seconds',
      help: 'Time to serve one session API operation inside the sidecar, from decoded request to encoded response.',
      labelNames: ['method'],
      buckets: [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1],
      registers: [registry],
    });
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
    this.requestsRejected = new Counter({
      name: 'baton_requests_rejected_total',
      help: 'Calls refused before reaching the store, by reason.',
      labelNames: ['reason'],
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
    new Gauge({
      name: 'baton_memory_budget_bytes',
      help: 'The memory budget for session state (0 = unlimited).',
      registers: [registry],
    }).set(maxMemoryBytes);
    counterFrom(registry, 'baton_evictions_total', 'Sessions evicted to stay within the memory budget.', () => stats().evictions);
    counterFrom(registry, 'baton_expirations_total', 'Sessions expired after their idle TTL.', () => stats().expirations);
  }

  /** Records one finished operation. */
  observe(method: Method, result: OperationResult, seconds: number): void {
    this.operations.inc({ method, result });
    this.operationDuration.observe({ method }, seconds);
  }
}

/** A counter that mirrors a monotonically growing number kept elsewhere. */
function counterFrom(registry: Registry, name: string, help: string, read: () => number): void {
  let reported = 0;
  new Counter({
    name,
    help,
    registers: [registry],
    collect() {
      const value = read();
      if (value > reported) this.inc(value - reported);
      reported = value;
    },
  });
}
