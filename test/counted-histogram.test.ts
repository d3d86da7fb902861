/**
 * The counted histogram (replication lag) is exposed exactly as prom-client's Histogram
 * exposes the same observations: bucket bounds inclusive, cumulative counts, +Inf, sum and
 * count; reset by the registry; a value that is not a number is not counted.
 */
import { Histogram, Registry } from 'prom-client';
import { CountedHistogram } from '../sidecar/metrics/counted-histogram';
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
