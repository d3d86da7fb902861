/**
 * renderMetrics (sidecar/metrics/http-server.ts): the text Registry#metrics writes, rendered a
 * slice at a time, letting the event loop turn between slices.
 */
import { Counter, Gauge, Histogram, Registry, Summary } from 'prom-client';
import { renderMetrics } from '../sidecar/metrics/http-server';

function sampleRegistry(): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ node_id: 'n1' });
  const ops = new Counter({ name: 'baton_ops_total', help: 'Operations, by "kind" \\ result.', labelNames: ['kind', 'result'], registers: [registry] });
  ops.inc({ kind: 'put', result: 'ok' }, 3);
  ops.inc({ kind: 'get', result: 'quote " and \\ backslash\nnewline' });
  let held = 7;
  new Gauge({ name: 'baton_held', help: 'Held.', registers: [registry], collect() { this.set(held++); } });
  const lag = new Histogram({ name: 'baton_lag_seconds', help: 'Lag.', buckets: [0.001, 0.01, 0.1], labelNames: ['peer'], registers: [registry] });
  for (const v of [0.0005, 0.002, 0.05, 3]) lag.observe({ peer: 'n2' }, v);
  const sizes = new Summary({ name: 'baton_sizes', help: 'Sizes.', percentiles: [0.5, 0.99], registers: [registry] });
  for (let i = 1; i <= 100; i++) sizes.observe(i);
  new Counter({ name: 'baton_never_total', help: 'Never counted.', registers: [registry] });
  return registry;
}

describe('renderMetrics', () => {
  it('writes what Registry#metrics writes', async () => {
    // Two registries alike, so each collect runs once per rendering (the gauge counts its reads).
    const sliced = await renderMetrics(sampleRegistry());
    const whole = await sampleRegistry().metrics();
    expect(sliced).toBe(whole);
    expect(sliced).toContain('baton_held{node_id="n1"} 7\n');
    expect(sliced).toContain('baton_lag_seconds_bucket{le="0.01",node_id="n1",peer="n2"} 2');
  });

  it('lets the event loop turn once a slice has taken long enough', async () => {
    const registry = new Registry();
    const order: string[] = [];
    new Gauge({
      name: 'slow',
      help: 'Takes 2 ms to read.',
      registers: [registry],
      collect() {
        const until = performance.now() + 2;
        while (performance.now() < until) {
          // busy: this family takes longer than a slice
        }
        this.set(1);
      },
    });
    new Gauge({ name: 'next', help: 'Read after it.', registers: [registry], collect() { order.push('next family'); this.set(2); } });
    const turn = new Promise<void>((resolve) => setImmediate(() => { order.push('event loop turn'); resolve(); }));
    await renderMetrics(registry);
    await turn;
    expect(order).toEqual(['event loop turn', 'next family']);

    // Registry#metrics, for contrast, reads every family before the loop turns.
    order.length = 0;
    const turnAgain = new Promise<void>((resolve) => setImmediate(() => { order.push('event loop turn'); resolve(); }));
    await registry.metrics();
    await turnAgain;
    expect(order).toEqual(['next family', 'event loop turn']);
  });
});
