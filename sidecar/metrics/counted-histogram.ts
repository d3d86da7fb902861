/**
 * Prometheus histograms and counters for values observed tens of thousands of times a
 * second: replication lag (one observation per delta a replica applies), and the API's
 * operations (a count and a duration per operation). prom-client builds a closure, a labels
 * object and a hash per observation, even through a child made with `labels()` (about 1 µs
 * and 190 bytes per histogram observation, 3% of a replica's CPU at 1,400-byte datagrams;
 * about 330 bytes per API operation for its counter and histogram); these add to numbers
 * held per series. A series is made once per set of label values (`child`), so a hot path
 * keeps its handles. Both register on a prom-client Registry like prom-client's own metrics
 * and are exposed exactly the same way (tests compare the text).
 */
import type { Metric, Registry } from 'prom-client';

type Sample = { value: number; labels: Record<string, string | number>; metricName: string };

/** The labels object of one series, its values in `names` order. */
function labelsOf(names: readonly string[], values: readonly string[]): Record<string, string> {
  if (values.length !== names.length) throw new RangeError(`expected ${names.length} label values (${names.join(', ')}), got ${values.length}`);
  const labels: Record<string, string> = {};
  names.forEach((name, i) => (labels[name] = values[i]!));
  return labels;
}

/** The series of these label values in `series`, made (with their labels) at the first call. */
function seriesFor<S>(series: Map<string, S>, names: readonly string[], values: readonly string[], make: (labels: Record<string, string>) => S): S {
  const key = values.join('\u0000');
  let found = series.get(key);
  if (found === undefined) series.set(key, (found = make(labelsOf(names, values))));
  return found;
}

class HistogramSeries {
  /** Observations per bucket (not cumulative); the last one is above every bound. */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(
    private readonly upperBounds: readonly number[],
    readonly labels: Record<string, string>,
  ) {
    this.counts = new Float64Array(upperBounds.length + 1);
  }

  /** Counts one value (a value that is not a finite number is not counted). */
  observe(value: number): void {
    if (!Number.isFinite(value)) return;
    const bounds = this.upperBounds;
    let i = 0;
    while (i < bounds.length && value > bounds[i]!) i++;
    this.counts[i]!++;
    this.sum += value;
    this.count++;
  }
}

export class CountedHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  private readonly series = new Map<string, HistogramSeries>();
  /** The series without labels (when the histogram has no label names). */
  private readonly unlabelled: HistogramSeries | undefined;

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly upperBounds: readonly number[],
    registry: Registry,
    private readonly labelNames: readonly string[] = [],
  ) {
    if (upperBounds.some((b, i) => !Number.isFinite(b) || (i > 0 && b <= upperBounds[i - 1]!))) throw new RangeError('bucket bounds must be finite and increasing');
    this.unlabelled = labelNames.length === 0 ? this.seriesOf([]) : undefined;
    registry.registerMetric(this as unknown as Metric);
  }

  /** Counts one value in the histogram without labels. */
  observe(value: number): void {
    if (this.unlabelled === undefined) throw new Error(`${this.name} has labels: observe through child(...)`);
    this.unlabelled.observe(value);
  }

  /** The series of these label values (made at the first call; keep it). */
  child(...values: string[]): { observe(value: number): void } {
    return this.seriesOf(values);
  }

  private seriesOf(values: readonly string[]): HistogramSeries {
    return seriesFor(this.series, this.labelNames, values, (labels) => new HistogramSeries(this.upperBounds, labels));
  }

  /** What a scrape shows (prom-client's Registry calls it). */
  get(): Promise<{ name: string; help: string; type: 'histogram'; aggregator: 'sum'; values: Sample[] }> {
    const values: Sample[] = [];
    for (const series of this.series.values()) {
      let cumulative = 0;
      this.upperBounds.forEach((le, i) => {
        cumulative += series.counts[i]!;
        values.push({ value: cumulative, labels: { le, ...series.labels }, metricName: `${this.name}_bucket` });
      });
      values.push({ value: series.count, labels: { le: '+Inf', ...series.labels }, metricName: `${this.name}_bucket` });
      values.push({ value: series.sum, labels: { ...series.labels }, metricName: `${this.name}_sum` });
      values.push({ value: series.count, labels: { ...series.labels }, metricName: `${this.name}_count` });
    }
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values });
  }

  /** Empties every series (the registry's resetMetrics); labelled series are forgotten, as prom-client forgets them. */
  reset(): void {
    for (const [key, series] of this.series) {
      if (series === this.unlabelled) {
        series.counts.fill(0);
        series.sum = 0;
        series.count = 0;
      } else {
        this.series.delete(key);
      }
    }
  }
}

class CounterSeries {
  value = 0;

  constructor(readonly labels: Record<string, string>) {}

  inc(amount = 1): void {
    this.value += amount;
  }
}

/** A labelled counter, as CountedHistogram is a histogram. */
export class CountedCounter {
  readonly type = 'counter';
  readonly aggregator = 'sum';
  private readonly series = new Map<string, CounterSeries>();

  constructor(
    readonly name: string,
    readonly help: string,
    registry: Registry,
    private readonly labelNames: readonly string[],
  ) {
    registry.registerMetric(this as unknown as Metric);
  }

  /** The series of these label values (made at the first call; keep it). */
  child(...values: string[]): { inc(amount?: number): void } {
    return seriesFor(this.series, this.labelNames, values, (labels) => new CounterSeries(labels));
  }

  get(): Promise<{ name: string; help: string; type: 'counter'; aggregator: 'sum'; values: { value: number; labels: Record<string, string> }[] }> {
    const values = [...this.series.values()].map((series) => ({ value: series.value, labels: { ...series.labels } }));
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values });
  }

  reset(): void {
    this.series.clear();
  }
}
