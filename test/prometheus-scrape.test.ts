/**
 * The Prometheus text parser every test and benchmark reads /metrics with
 * (bench/support/prometheus-scrape.ts): the text format's corners, the sums and filters the
 * callers use, and a round trip through prom-client, which writes baton's /metrics.
 */
import { Counter, Histogram, Registry } from 'prom-client';
import { histogramQuantile, parsePrometheusText, Scrape } from '../bench/support/prometheus-scrape';

describe('parsePrometheusText', () => {
  it('reads names, labels and values, skipping comments and blank lines', () => {
    const text = [
      '# HELP baton_sessions Sessions stored.',
      '# TYPE baton_sessions gauge',
      'baton_sessions 3',
      '',
      'baton_operations_total{method="put",result="ok"} 12',
      '  baton_operations_total{ method = "get" , result="ok", } 4  ',
      'baton_up 1 1700000000000',
    ].join('\n');
    expect(parsePrometheusText(text)).toEqual([
      { name: 'baton_sessions', labels: {}, value: 3 },
      { name: 'baton_operations_total', labels: { method: 'put', result: 'ok' }, value: 12 },
      { name: 'baton_operations_total', labels: { method: 'get', result: 'ok' }, value: 4 },
      { name: 'baton_up', labels: {}, value: 1 },
    ]);
  });

  it('reads escaped label values holding quotes, backslashes, newlines, spaces, commas and braces', () => {
    const [sample] = parsePrometheusText('m{a="say \\"hi\\"",b="c:\\\\dir",c="two\\nlines",d="x, y} z"} 1.5e3');
    expect(sample).toEqual({ name: 'm', labels: { a: 'say "hi"', b: 'c:\\dir', c: 'two\nlines', d: 'x, y} z' }, value: 1500 });
  });

  it('reads +Inf, -Inf and NaN in any case, as Prometheus does (prom-client writes "Nan")', () => {
    const values = parsePrometheusText('a +Inf\nb -Inf\nc NaN\nd -0.25\ne Nan\nf inf\ng -INF\nh 1e-3').map((s) => s.value);
    expect(values).toEqual([Infinity, -Infinity, NaN, -0.25, NaN, Infinity, -Infinity, 0.001]);
  });

  it('rejects a line that is not a sample, naming it, instead of reading it as zero', () => {
    expect(() => parsePrometheusText('ok 1\nbroken{a="1" 2')).toThrow(/line 2 .*broken\{a="1" 2/);
    expect(() => parsePrometheusText('no_value')).toThrow(/line 1/);
    expect(() => parsePrometheusText('m one')).toThrow(/'one' is not a number/);
    expect(() => parsePrometheusText('m 1 2 3')).toThrow(/at most a timestamp/);
    expect(() => parsePrometheusText('{a="1"} 1')).toThrow(/no metric name/);
  });
});

describe('Scrape', () => {
  const s = Scrape.parse(
    [
      'baton_cluster_members{state="alive"} 4',
      'baton_cluster_members{state="dead"} 1',
      'baton_insecure 0',
      'baton_fetches_total{outcome="ok",peer="a"} 2',
      'baton_fetches_total{outcome="ok",peer="b"} 3',
      'baton_fetches_total{outcome="error",peer="a"} 7',
      'baton_fetches_total_other 100',
    ].join('\n'),
  );

  it('answers one series by its exact label set, undefined (or 0) when absent', () => {
    expect(s.get('baton_cluster_members', { state: 'alive' })).toBe(4);
    expect(s.get('baton_insecure')).toBe(0);
    expect(s.get('baton_cluster_members')).toBeUndefined();
    expect(s.get('baton_fetches_total', { outcome: 'ok' })).toBeUndefined();
    expect(s.get('baton_missing')).toBeUndefined();
    expect(s.value('baton_missing')).toBe(0);
    expect(s.value('baton_cluster_members', { state: 'suspect' })).toBe(0);
  });

  it('sums every series of a name whose labels include the filter, and no other name', () => {
    expect(s.sum('baton_fetches_total')).toBe(12);
    expect(s.sum('baton_fetches_total', { outcome: 'ok' })).toBe(5);
    expect(s.sum('baton_fetches_total', { outcome: 'ok', peer: 'b' })).toBe(3);
    expect(s.sum('baton_fetches_total', { outcome: 'timeout' })).toBe(0);
    expect(s.has('baton_fetches_total')).toBe(true);
    expect(s.has('baton_fetches')).toBe(false);
  });
});

describe('a round trip through prom-client', () => {
  it('reads what prom-client writes, and a histogram quantile between two scrapes', async () => {
    const registry = new Registry();
    const counter = new Counter({ name: 'baton_test_total', help: 'h', labelNames: ['reason'], registers: [registry] });
    const histogram = new Histogram({ name: 'baton_test_seconds', help: 'h', buckets: [0.001, 0.01, 0.1], registers: [registry] });
    counter.inc({ reason: 'a "quoted" \\ reason\nwith a newline' }, 2);
    counter.inc({ reason: 'plain' }, 5);
    histogram.observe(0.0005);
    const before = Scrape.parse(await registry.metrics());
    for (let i = 0; i < 8; i++) histogram.observe(0.005);
    histogram.observe(0.05);
    histogram.observe(5);
    const after = Scrape.parse(await registry.metrics());

    expect(after.get('baton_test_total', { reason: 'a "quoted" \\ reason\nwith a newline' })).toBe(2);
    expect(after.sum('baton_test_total')).toBe(7);
    expect(after.buckets('baton_test_seconds')).toEqual([
      [0.001, 1],
      [0.01, 9],
      [0.1, 10],
      [Infinity, 11],
    ]);
    expect(after.get('baton_test_seconds_count')).toBe(11);
    // Between the scrapes: 8 of 10 observations at or below 0.01, 9 at or below 0.1.
    expect(histogramQuantile(before, after, 'baton_test_seconds', 0.5)).toBe(0.01);
    expect(histogramQuantile(before, after, 'baton_test_seconds', 0.9)).toBe(0.1);
    expect(histogramQuantile(before, after, 'baton_test_seconds', 0.99)).toBe(Infinity);
    expect(histogramQuantile(after, after, 'baton_test_seconds', 0.5)).toBeNaN();
  });
});
