/**
 * The sidecar's Prometheus registry as a scrape sees it: the Node memory gauges operators size
 * pods with must read real values on the first scrape, and baton_build_info says what runs.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { BuzHash } from '../src/store/buzhash';
import { HybridClock } from '../src/store/hybrid-clock';
import { DEFAULT_STORE_CONFIG, SessionStore } from '../src/store/store';
import { buildInfoLabels, SidecarMetrics } from '../sidecar/metrics/metrics';
import { PACKAGE_ROOT, VERSION } from '../sidecar/config/package-root';

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

  test('baton_build_info is 1 with the package version, the Node version and the checked-out commit', async () => {
    const body = await metrics.registry.metrics();
    const labels = buildInfoLabels();
    expect(labels.version).toBe(VERSION);
    expect(labels.node_version).toBe(process.version);
    const text = Object.entries(labels).map(([k, v]) => `${k}="${v}"`).join(',');
    expect(scrapeValue(body, 'baton_build_info', `{${text}}`)).toBe(1);
    // Tests run from a git checkout: the label must name what git itself says (the test may
    // run git; the sidecar never does).
    let head: string | undefined;
    try {
      head = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: PACKAGE_ROOT, encoding: 'utf8' }).trim();
    } catch {
      head = undefined; // no git binary or no checkout here: the label must then be absent too
    }
    expect(labels.commit).toBe(head);
  });

  describe('the commit label', () => {
    const A = 'a'.repeat(40);
    const B = 'b'.repeat(40);
    let root: string;
    beforeEach(() => {
      root = mkdtempSync(path.join(tmpdir(), 'baton-build-info-'));
    });
    afterEach(() => rmSync(root, { recursive: true, force: true }));
    const write = (file: string, text: string) => {
      mkdirSync(path.dirname(path.join(root, file)), { recursive: true });
      writeFileSync(path.join(root, file), text);
    };
    const commit = () => buildInfoLabels(root, '9.9.9').commit;

    test('is absent without a .git, or when HEAD names nothing readable', () => {
      expect(buildInfoLabels(root, '9.9.9')).toEqual({ version: '9.9.9', node_version: process.version });
      write('.git/HEAD', 'ref: refs/heads/main\n');
      expect('commit' in buildInfoLabels(root, '9.9.9')).toBe(false);
      write('.git/refs/heads/main', 'not a commit\n');
      expect(commit()).toBeUndefined();
      write('.git/HEAD', 'garbage');
      expect(commit()).toBeUndefined();
    });

    test('follows a detached HEAD, a loose ref, packed refs and a worktree pointer', () => {
      write('.git/HEAD', `${A}\n`);
      expect(commit()).toBe(A);
      write('.git/HEAD', 'ref: refs/heads/main\n');
      write('.git/packed-refs', `# pack-refs with: peeled fully-peeled sorted\n${B} refs/heads/other\n${A} refs/heads/main\n`);
      expect(commit()).toBe(A);
      write('.git/refs/heads/main', `${B}\n`);
      expect(commit()).toBe(B);

      rmSync(path.join(root, '.git'), { recursive: true });
      write('main/.git/refs/heads/feature', `${A}\n`);
      write('main/.git/worktrees/wt/HEAD', 'ref: refs/heads/feature\n');
      write('main/.git/worktrees/wt/commondir', '../..\n');
      write('.git', 'gitdir: main/.git/worktrees/wt\n');
      expect(commit()).toBe(A);
    });
  });
});
