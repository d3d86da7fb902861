/**
 * A surface that calls the session API directly (the Redis-protocol endpoint) records each
 * call in baton_operations_total by method and result, as the gRPC and HTTP surfaces do.
 */
import { BuzHash } from '../src/store/buzhash';
import { HybridClock } from '../src/store/hybrid-clock';
import { DEFAULT_STORE_CONFIG, SessionStore } from '../src/store/store';
import { SessionApi } from '../src/core/session-api';
import { InvalidArgumentError } from '../src/wire/errors';
import { meteredApi } from '../sidecar/metrics/metered-api';
import { SidecarMetrics } from '../sidecar/metrics/metrics';

const T0 = 1_700_000_000_000;

async function operations(metrics: SidecarMetrics, method: string, result: string): Promise<number> {
  const line = (await metrics.registry.metrics())
    .split('\n')
    .find((l) => l.startsWith(`baton_operations_total{method="${method}",result="${result}"} `));
  return line === undefined ? 0 : Number(line.split(' ')[1]);
}

test('each call is counted by method and result, failures included, and its answer passes through unchanged', async () => {
  const store = new SessionStore({ ...DEFAULT_STORE_CONFIG, nodeId: 'metered-a', partitions: 4 }, new BuzHash('metered-test'), new HybridClock());
  const metrics = new SidecarMetrics(store, 64 * 1024 * 1024);
  const api = meteredApi(new SessionApi(store, { maxValueBytes: 16, maxPartsPerSession: 4 }), metrics);

  const put = await api.put({ sessionId: 's1', parts: [{ name: 'note', value: Buffer.from('apples') }], ttlSeconds: 60, minReplicas: 0 }, T0);
  expect(put.versions.length).toBe(1);
  expect((await api.get({ sessionId: 's1', parts: [], resume: false }, T0)).found).toBe(true);
  expect((await api.get({ sessionId: 'absent', parts: [], resume: false }, T0)).found).toBe(false);
  expect(api.delete({ sessionId: 'absent', parts: [] }, T0).found).toBe(false);
  expect(() => api.put({ sessionId: 's1', parts: [{ name: 'note', value: Buffer.alloc(17) }], ttlSeconds: 60, minReplicas: 0 }, T0)).toThrow(InvalidArgumentError);

  expect(await operations(metrics, 'put', 'ok')).toBe(1);
  expect(await operations(metrics, 'put', 'invalid')).toBe(1);
  expect(await operations(metrics, 'get', 'ok')).toBe(1);
  expect(await operations(metrics, 'get', 'not_found')).toBe(1);
  expect(await operations(metrics, 'delete', 'not_found')).toBe(1);
  expect(await operations(metrics, 'touch', 'ok')).toBe(0);
});
