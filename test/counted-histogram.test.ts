/**
 * The counted histogram (replication lag) is exposed exactly as prom-client's Histogram
 * exposes the same observations: bucket bounds inclusive, cumulative counts, +Inf, sum and
 * count; reset by the registry; a value that is not a number is not counted.
 */
import { Counter, Histogram, Registry } from 'prom-client';
import { CountedCounter, CountedHistogram } from '../sidecar/metrics/counted-histogram';
import { SeededRandom } from '../src/store/random';

const BOUNDS = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1, 5];

test("scrapes exactly as prom-client's Histogram does for the same observations", async () => {
  const ours = new Registry();
  const theirs = new Registry();
  const counted = new CountedHistogram('x_lag_seconds', 'Lag.', BOUNDS, ours);
  const reference = new Histogram({ name: 'x_lag_seconds', help: 'Lag.', buckets: BOUNDS, registers: [theirs] });
  const random = new SeededRandom(7);
  // Whole milliseconds as the lag is measured, the bounds themselves, and beyond the last.
  const values = [0, 0.0005, 0.001, 5, 7.5, ...Array.from({ length: 500 }, () => random.below(300) / 1000)];
  for (const v of values) {
    counted.observe(v);
    reference.observe(v);
  }
  expect(await ours.metrics()).toBe(await theirs.metrics());
  expect(await ours.metrics()).toContain(`x_lag_seconds_count ${values.length}`);
});

test('a registry reset empties it, and a value that is not a number is not counted', async () => {
  const registry = new Registry();
  const counted = new CountedHistogram('y_seconds', 'Y.', [1, 2], registry);
  counted.observe(1.5);
  counted.observe(Number.NaN);
  counted.observe(Number.POSITIVE_INFINITY);
  expect(await registry.metrics()).toContain('y_seconds_bucket{le="2"} 1');
  expect(await registry.metrics()).toContain('y_seconds_count 1');
  registry.resetMetrics();
  expect(await registry.metrics()).toContain('y_seconds_count 0');
  expect(() => new CountedHistogram('z', 'Z.', [2, 1], new Registry())).toThrow(RangeError);
});

test("labelled series scrape exactly as prom-client's Histogram and Counter do", async () => {
  const ours = new Registry();
  const theirs = new Registry();
  const bounds = [0.00001, 0.0001, 0.001, 0.01];
  const histogram = new CountedHistogram('x_duration_seconds', 'Duration.', bounds, ours, ['method']);
  const counter = new CountedCounter('x_operations_total', 'Operations.', ours, ['method', 'result']);
  const refHistogram = new Histogram({ name: 'x_duration_seconds', help: 'Duration.', labelNames: ['method'], buckets: bounds, registers: [theirs] });
  const refCounter = new Counter({ name: 'x_operations_total', help: 'Operations.', labelNames: ['method', 'result'], registers: [theirs] });
  const random = new SeededRandom(11);
  const methods = ['put', 'get', 'delete'];
  const results = ['ok', 'not_found', 'invalid'];
  for (let i = 0; i < 2000; i++) {
    const method = methods[random.below(methods.length)]!;
    const result = results[random.below(results.length)]!;
    const seconds = random.below(20_000) / 1e6;
    histogram.child(method).observe(seconds);
    refHistogram.labels(method).observe(seconds);
    counter.child(method, result).inc();
    refCounter.labels(method, result).inc();
  }
  // Series appear in the order their label values were first seen, in both.
  expect(await ours.metrics()).toBe(await theirs.metrics());
  expect(() => histogram.observe(1)).toThrow(/labels/);
  expect(() => counter.child('put')).toThrow(RangeError);
  ours.resetMetrics();
  theirs.resetMetrics();
  expect(await ours.metrics()).toBe(await theirs.metrics());
});
