/**
 * The chart's alerts and dashboard: `promtool test rules` (Debian's prometheus package, as
 * .ci/run installs) runs test/helm/alerts.promtool.yaml against helm/baton/files/alerts.yaml,
 * and every metric the alerts and dashboard query is one baton exports.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';

const ROOT = path.join(__dirname, '..');
const FILES = path.join(ROOT, 'helm', 'baton', 'files');

/** Metric names in a PromQL text, without histogram suffixes. */
function metricNames(text: string): Set<string> {
  return new Set([...text.matchAll(/\b((?:baton|process|nodejs)_[a-z_]+)/g)].map((m) => m[1]!.replace(/_(bucket|sum|count)$/, '')));
}

describe('alerts', () => {
  it('pass promtool test rules (each alert fires on its series and not on healthy ones)', () => {
    const out = execFileSync('promtool', ['test', 'rules', path.join(ROOT, 'test', 'helm', 'alerts.promtool.yaml')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    expect(out).toContain('SUCCESS');
  });

  it('pass promtool check rules', () => {
    const out = execFileSync('promtool', ['check', 'rules', path.join(FILES, 'alerts.yaml')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    expect(out).toContain('SUCCESS: 10 rules found');
  });
});

describe('alerts and dashboard query only metrics baton exports', () => {
  const source = readFileSync(path.join(ROOT, 'sidecar', 'metrics', 'metrics.ts'), 'utf8');
  const exported = new Set([...source.matchAll(/'((?:baton)_[a-z_]+)'/g)].map((m) => m[1]!));
  it.each(['alerts.yaml', 'dashboard.json'])('%s', (file) => {
    const used = [...metricNames(readFileSync(path.join(FILES, file), 'utf8'))].filter((name) => name.startsWith('baton_'));
    expect(used.length).toBeGreaterThan(5);
    expect(used.filter((name) => !exported.has(name))).toEqual([]);
  });

  it('the dashboard has the panels an operator needs', () => {
    const dashboard = JSON.parse(readFileSync(path.join(FILES, 'dashboard.json'), 'utf8')) as { panels: { title: string }[] };
    expect(dashboard.panels.map((p) => p.title)).toEqual([
      'Sessions held', 'Session bytes vs memory budget', 'Operations per second by method', 'Operation latency p99 by method',
      'Replication lag (owner write to secondary apply)', 'NACKs and retransmissions', 'Under-replicated partitions',
      'Resumes by outcome', 'Members by state (as each node sees them)', 'Drain durations',
    ]);
  });
});
