/**
 * The sidecar's Prometheus registry as a scrape sees it: the Node memory gauges operators size
 * pods with must read real values on the first scrape.
 */
import { BuzHash } from '../src/buzhash';
import { HybridClock } from '../src/hybrid-clock';
import { DEFAULT_STORE_CONFIG, SessionStore } from '../src/store';
import { SidecarMetrics } from '../sidecar/metrics';

function scrapeValue(body: string, name: string, labels = ''): number | undefined {
  for (const line of body.split('\n')) {
    if (line.startsWith('#')) continue;
    const [key, value] = line.split(' ');
    if (key === name + labels) return Number(value);
  }
  return undefined;
}

describe('SidecarMetrics', () => {
  const store = new SessionStore({ ...DEFAULT_STORE_CONFIG, nodeId: 'metrics-a', partitions: 4 }, new BuzHash('metrics-test'), new HybridClock());
  const metrics = new SidecarMetrics(store, 64 * 1024 * 1024);

  test('heap used, external memory and heap spaces read real values on the first scrape', async () => {
    const body = await metrics.registry.metrics();
    const { heapUsed, heapTotal } = process.memoryUsage();
    expect(scrapeValue(body, 'nodejs_heap_size_used_bytes')).toBeGreaterThan(heapUsed / 4);
    expect(scrapeValue(body, 'nodejs_heap_size_bytes')).toBeGreaterThan(heapTotal / 4);
    expect(scrapeValue(body, 'nodejs_external_memory_bytes')).toBeGreaterThan(0);
    expect(scrapeValue(body, 'nodejs_heap_space_size_used_bytes', '{space="old"}')).toBeGreaterThan(0);
    expect(scrapeValue(body, 'nodejs_heap_space_size_available_bytes', '{space="old"}')).toBeGreaterThanOrEqual(0);
    expect(scrapeValue(body, 'nodejs_heap_space_size_bytes', '{space="old"}')).toBeGreaterThan(0);
    expect(scrapeValue(body, 'process_resident_memory_bytes')).toBeGreaterThan(0);
  });

  test('no gauge carries a _total name (promtool rejects them)', async () => {
    for (const metric of await metrics.registry.getMetricsAsJSON()) {
      if (String(metric.type) === 'gauge') expect(metric.name).not.toMatch(/_total$/);
    }
  });
});
