/**
 * Reads a node's /metrics for tests and benchmarks: fetches the Prometheus text exposition
 * once, parses it into samples (name, labels, value), and answers the few questions the
 * callers ask — one series' value, a sum over label sets, a histogram's buckets.
 *
 * Rules:
 * - It lives in bench/ because benchmarks are built and run from dist/ and must not import
 *   test/; tests may import bench/ (imports point down: test → bench → sidecar → src).
 * - The parser follows the text format (version 0.0.4): `#` lines and blank lines are
 *   skipped; label values may hold escaped `\\`, `\"` and `\n`, spaces, commas and braces;
 *   a timestamp after the value is ignored; `+Inf`, `-Inf` and `NaN` (in any case) are values. A line it
 *   cannot read is an error naming the line: a scrape that is not what baton serves must
 *   fail the caller, not read as zero.
 * - Label filters match by equality on the labels they name; a series may carry more.
 */

export type Labels = Readonly<Record<string, string>>;

export interface Sample {
  readonly name: string;
  readonly labels: Labels;
  readonly value: number;
}

const SCRAPE_TIMEOUT_MS = 5000;

/** One parsed exposition. */
export class Scrape {
  constructor(readonly samples: readonly Sample[]) {}

  static parse(text: string): Scrape {
    return new Scrape(parsePrometheusText(text));
  }

  /** The value of the series with exactly `labels` (none: the unlabelled series), or undefined when absent. */
  get(name: string, labels: Labels = {}): number | undefined {
    const want = Object.keys(labels).length;
    return this.samples.find((s) => s.name === name && Object.keys(s.labels).length === want && matches(s.labels, labels))?.value;
  }

  /** Like get(), 0 when the series is absent (a counter not yet incremented). */
  value(name: string, labels: Labels = {}): number {
    return this.get(name, labels) ?? 0;
  }

  /** Sum over every series of `name` whose labels include `filter` (none: all of its series); 0 when there is none. */
  sum(name: string, filter: Labels = {}): number {
    let sum = 0;
    for (const s of this.select(name, filter)) sum += s.value;
    return sum;
  }

  /** True when the exposition holds at least one series of `name`. */
  has(name: string): boolean {
    return this.samples.some((s) => s.name === name);
  }

  /** Every series of `name` whose labels include `filter`. */
  select(name: string, filter: Labels = {}): Sample[] {
    return this.samples.filter((s) => s.name === name && matches(s.labels, filter));
  }

  /**
   * A histogram's buckets (upper bound → cumulative count, +Inf included, by bound), for
   * the series whose other labels include `filter`.
   */
  buckets(name: string, filter: Labels = {}): [number, number][] {
    const byBound = new Map<number, number>();
    for (const s of this.select(`${name}_bucket`, filter)) {
      const le = s.labels.le;
      if (le === undefined) continue;
      const bound = parseValue(le);
      byBound.set(bound, (byBound.get(bound) ?? 0) + s.value);
    }
    return [...byBound].sort((a, b) => a[0] - b[0]);
  }
}

/** GETs `url` and parses the body; rejects on a non-200 answer or after SCRAPE_TIMEOUT_MS. */
export async function scrape(url: string): Promise<Scrape> {
  const response = await fetch(url, { signal: AbortSignal.timeout(SCRAPE_TIMEOUT_MS) });
  const text = await response.text();
  if (response.status !== 200) throw new Error(`${url} answered ${response.status}: ${text.slice(0, 200)}`);
  return Scrape.parse(text);
}

/**
 * The q-quantile of the observations made between two scrapes of a histogram, as the
 * upper bound of the bucket it falls in (Infinity if beyond the last bound, NaN if none).
 */
export function histogramQuantile(before: Scrape, after: Scrape, name: string, q: number, filter: Labels = {}): number {
  const b = new Map(before.buckets(name, filter));
  const a = after.buckets(name, filter).map(([le, count]) => [le, count - (b.get(le) ?? 0)] as [number, number]);
  const total = a.length > 0 ? a[a.length - 1]![1] : 0;
  if (total <= 0) return NaN;
  for (const [le, count] of a) if (count >= q * total) return le;
  return Infinity;
}

/** A series as the exposition prints it, `name{a="x",b="y"}` (no braces without labels), for messages. */
export function seriesName(sample: Sample): string {
  const labels = Object.entries(sample.labels).map(([k, v]) => `${k}=${JSON.stringify(v)}`);
  return labels.length === 0 ? sample.name : `${sample.name}{${labels.join(',')}}`;
}

function matches(labels: Labels, filter: Labels): boolean {
  for (const [key, value] of Object.entries(filter)) if (labels[key] !== value) return false;
  return true;
}

/** Every sample of a text exposition, in order. */
export function parsePrometheusText(text: string): Sample[] {
  const samples: Sample[] = [];
  const lines = text.split('\n');
  for (const [i, raw] of lines.entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    try {
      samples.push(parseSampleLine(line));
    } catch (err) {
      throw new Error(`metrics line ${i + 1} is not a sample (${(err as Error).message}): ${raw.slice(0, 200)}`);
    }
  }
  return samples;
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*/;

function parseSampleLine(line: string): Sample {
  const name = NAME.exec(line)?.[0];
  if (name === undefined) throw new Error('no metric name');
  let at = name.length;
  const labels: Record<string, string> = {};
  if (line[at] === '{') {
    at++;
    for (;;) {
      at = skipSpaces(line, at);
      if (line[at] === '}') break;
      const label = LABEL_NAME.exec(line.slice(at))?.[0];
      if (label === undefined) throw new Error('bad label name');
      at = skipSpaces(line, at + label.length);
      if (line[at] !== '=') throw new Error(`no '=' after label ${label}`);
      at = skipSpaces(line, at + 1);
      if (line[at] !== '"') throw new Error(`label ${label} has no quoted value`);
      let value = '';
      for (at++; ; at++) {
        const c = line[at];
        if (c === undefined) throw new Error(`label ${label}'s value is not closed`);
        if (c === '"') break;
        if (c === '\\') {
          const next = line[++at];
          value += next === 'n' ? '\n' : (next ?? '');
        } else {
          value += c;
        }
      }
      labels[label] = value;
      at = skipSpaces(line, at + 1);
      if (line[at] === ',') at++;
      else if (line[at] !== '}') throw new Error(`expected ',' or '}' after label ${label}`);
    }
    at++;
  }
  const rest = line.slice(at).trim().split(/\s+/);
  if (rest.length < 1 || rest.length > 2 || rest[0] === '') throw new Error('expected a value and at most a timestamp');
  return { name, labels, value: parseValue(rest[0]!) };
}

function skipSpaces(line: string, at: number): number {
  while (line[at] === ' ' || line[at] === '\t') at++;
  return at;
}

/** Prometheus reads floats as Go's ParseFloat does: Inf and NaN in any case (prom-client writes `Nan`). */
function parseValue(text: string): number {
  const special = /^([+-]?)(inf|infinity|nan)$/i.exec(text);
  if (special !== null) return special[2]!.toLowerCase() === 'nan' ? NaN : special[1] === '-' ? -Infinity : Infinity;
  const value = Number(text);
  if (Number.isNaN(value) || text === '') throw new Error(`'${text}' is not a number`);
  return value;
}
