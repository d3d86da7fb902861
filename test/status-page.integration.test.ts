/**
 * The status page on the metrics listener of a real three-node cluster on loopback: / is
 * one self-contained HTML document under a strict Content-Security-Policy that names no
 * other host; /status.json carries what ClusterService/Status answers plus placement's
 * partition counts, and never a session id; and a real headless Chromium (Debian's
 * `chromium`) renders it: a PNG of the asked size, and a DOM that, after the page's own
 * polls, shows the three node ids and their states; then, with one member killed, that it
 * is drawn dead and holds no partition.
 *
 * Without /usr/bin/chromium the browser test fails under CI (CI=true, where .ci/run
 * installs it) and is skipped elsewhere with a message saying so. BATON_TEST_SCREENSHOT=<file>
 * keeps a copy of the screenshot.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { StatusPageData } from '../sidecar/metrics/status-page-data';
import { FAST_FAILURE_DETECTION, pollUntil, StaticCluster } from './support/static-cluster';

const IDS = ['a', 'b', 'c'];
const PARTITIONS = 64;
const CHROMIUM = '/usr/bin/chromium';
const BROWSER_TIMEOUT_MS = 60_000;
const WIDTH = 1200;
const HEIGHT = 800;
const SESSION_PREFIX = 'page-secret-session-';

const haveChromium = existsSync(CHROMIUM);
if (!haveChromium && process.env.CI !== 'true') {
  process.stderr.write(`status-page.integration.test: ${CHROMIUM} is missing, so the browser test is SKIPPED (apt-get install chromium to run it)\n`);
}
const browserTest = haveChromium || process.env.CI === 'true' ? test : test.skip;

let cluster: StaticCluster | undefined;

beforeAll(async () => {
  cluster = await StaticCluster.start(IDS, ['--replicas', '1', '--partitions', String(PARTITIONS), ...FAST_FAILURE_DETECTION]);
  await cluster.waitForAlive(IDS, 10_000);
  for (let i = 0; i < 12; i++) await cluster.client('a').put(`${SESSION_PREFIX}${i}`, { greeting: Buffer.from(`hello ${i}`) }, { minReplicas: 1 });
}, 60_000);

afterAll(async () => {
  await cluster?.stopAll();
  cluster = undefined;
});

function metricsUrl(id: string): string {
  return cluster!.node(id).process!.metricsUrl;
}

async function statusJson(id: string): Promise<StatusPageData> {
  const res = await fetch(`${metricsUrl(id)}/status.json`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toBe('application/json');
  return (await res.json()) as StatusPageData;
}

/** Runs chromium to completion (killed past BROWSER_TIMEOUT_MS); resolves with its stdout. */
function chromium(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(CHROMIUM, args, { timeout: BROWSER_TIMEOUT_MS, killSignal: 'SIGKILL', maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) =>
      err ? reject(new Error(`chromium ${args.at(-1)} failed: ${err.message}\n${stderr}`)) : resolve(stdout),
    );
  });
}

/** A fresh profile per run, and nothing the browser would fetch on its own. */
function browserArgs(profile: string): string[] {
  return [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    `--user-data-dir=${profile}`,
    `--window-size=${WIDTH},${HEIGHT}`,
    // Virtual time runs the page's timers without waiting for them: several 2 s polls happen.
    '--virtual-time-budget=7000',
  ];
}

describe('status page', () => {
  test('GET / is one HTML document under a strict CSP that names no other host', async () => {
    const res = await fetch(`${metricsUrl('a')}/`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/html; charset=utf-8');
    const csp = res.headers.get('content-security-policy') ?? '';
    const directives = new Map(csp.split(/;\s*/).map((d) => [d.split(' ')[0]!, d.split(' ').slice(1)]));
    expect(directives.get('default-src')).toEqual(["'none'"]);
    expect(directives.get('connect-src')).toEqual(["'self'"]);
    expect(directives.get('script-src')).toEqual([expect.stringMatching(/^'sha256-[A-Za-z0-9+/]+=*'$/)]);
    expect(directives.get('style-src')).toEqual([expect.stringMatching(/^'sha256-[A-Za-z0-9+/]+=*'$/)]);
    expect(csp).not.toMatch(/unsafe|https?:|\*/);
    const html = await res.text();
    expect(html).toMatch(/^<!doctype html>/);
    // No URL at all, and nothing that loads from elsewhere.
    expect(html).not.toMatch(/[a-z]+:\/\//i);
    expect(html).not.toMatch(/<(link|img|iframe|object|embed)\b|\bsrc=|@import|url\(/i);
    expect(html.match(/<script>/g)).toHaveLength(1);
    // The hashes in the CSP are those of the inline script and style actually served.
    const hash = (s: string) => `'sha256-${createHash('sha256').update(s).digest('base64')}'`;
    expect(directives.get('script-src')).toEqual([hash(/<script>([\s\S]*)<\/script>/.exec(html)![1]!)]);
    expect(directives.get('style-src')).toEqual([hash(/<style>([\s\S]*)<\/style>/.exec(html)![1]!)]);
  });

  test('/status.json is what Status answers, with every member\'s share of the partitions and no session id', async () => {
    for (const id of IDS) {
      // No writes meanwhile, but the node may still repair in the background (a copy
      // placement no longer gives it is dropped 10 s after the view last changed): the two
      // are read again until the store's counts held still between them.
      let page!: StatusPageData;
      let status!: Awaited<ReturnType<StaticCluster['status']>>;
      await pollUntil(
        `${id}: /status.json and Status read the same store counts`,
        async () => {
          page = await statusJson(id);
          status = await cluster!.status(id);
          return page.sessions === Number(status.sessions) && page.parts === Number(status.parts) && page.bytes === Number(status.bytes);
        },
        10_000,
      );
      expect(page).toMatchObject({
        nodeId: status.nodeId,
        version: status.version,
        startedAtUnixMs: Number(status.startedAtUnixMs),
        sessions: Number(status.sessions),
        parts: Number(status.parts),
        bytes: Number(status.bytes),
        maxBytes: Number(status.maxBytes),
        tombstones: Number(status.tombstones),
        partitions: PARTITIONS,
        copies: 2,
      });
      expect(page.members.map(({ nodeId, address, state, isSelf, replicationLagSeqs, role }) => ({ nodeId, address, state, isSelf, replicationLagSeqs, role }))).toEqual(
        status.members.map(({ nodeId, address, state, isSelf, replicationLagSeqs, role }) => ({ nodeId, address, state, isSelf, replicationLagSeqs: Number(replicationLagSeqs), role })),
      );
      // Rendezvous placement with replicas 1: every partition has one primary and two holders.
      expect(page.members.reduce((n, m) => n + m.partitionsPrimary, 0)).toBe(PARTITIONS);
      expect(page.members.reduce((n, m) => n + m.partitionsHeld, 0)).toBe(2 * PARTITIONS);
      for (const m of page.members) expect(m.partitionsHeld).toBeGreaterThan(m.partitionsPrimary);
      expect(page.ring.partitionsPerSegment).toBe(1);
      expect(page.ring.primaries).toHaveLength(PARTITIONS);
      for (const [i, m] of page.members.entries()) expect(page.ring.primaries.filter((p) => p === i)).toHaveLength(m.partitionsPrimary);
      expect(JSON.stringify(page)).not.toContain(SESSION_PREFIX);
    }
    // Every node computes the same placement.
    const shares = await Promise.all(IDS.map(async (id) => (await statusJson(id)).members.map((m) => [m.nodeId, m.partitionsPrimary, m.partitionsHeld])));
    expect(shares[1]).toEqual(shares[0]);
    expect(shares[2]).toEqual(shares[0]);
    // The sessions written, and baton's own: the cluster's TLS ticket keys (one system session).
    expect((await statusJson('a')).sessions).toBe(12 + 1);
  });

  browserTest(
    'headless Chromium draws the three members with their states: a screenshot of the asked size and a DOM after the polls',
    async () => {
      expect(existsSync(CHROMIUM)).toBe(true);
      const work = mkdtempSync(path.join(tmpdir(), 'baton-status-page-'));
      try {
        const url = `${metricsUrl('a')}/`;
        const screenshot = path.join(work, 'status-page.png');
        await chromium([...browserArgs(path.join(work, 'profile-1')), `--screenshot=${screenshot}`, url]);
        const png = readFileSync(screenshot);
        // A PNG signature, then the IHDR chunk with the width and height.
        expect(png.subarray(0, 8)).toEqual(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
        expect(png.subarray(12, 16).toString('latin1')).toBe('IHDR');
        expect([png.readUInt32BE(16), png.readUInt32BE(20)]).toEqual([WIDTH, HEIGHT]);
        // A drawn page, not a blank one: a blank 1200x800 PNG compresses to a few KiB.
        expect(png.length).toBeGreaterThan(20_000);
        // BATON_TEST_SCREENSHOT=<file> keeps a copy, to look at.
        const keep = process.env.BATON_TEST_SCREENSHOT;
        if (keep !== undefined && keep !== '') copyFileSync(screenshot, keep);

        const dom = await chromium([...browserArgs(path.join(work, 'profile-2')), '--dump-dom', url]);
        // The page polled more than once (it refreshes itself) and drew what it got.
        const polls = Number(/<body[^>]*data-polls="(\d+)"/.exec(dom)?.[1] ?? 0);
        expect(polls).toBeGreaterThanOrEqual(2);
        for (const id of IDS) {
          expect(dom).toMatch(new RegExp(`<g class="member" data-node="${id}" data-state="alive">`));
          expect(dom).toMatch(new RegExp(`<tr data-node="${id}">.*?<span class="state alive">alive</span>`));
        }
        expect(dom).toContain('<span class="self">this node</span>');
        // The 12 written and baton's own TLS ticket-key session.
        expect(dom).toMatch(/<div class="value" id="sessions">13<\/div>/);
        expect(dom).toContain('the cluster as node a sees it');
      } finally {
        rmSync(work, { recursive: true, force: true });
      }
    },
    3 * BROWSER_TIMEOUT_MS,
  );

  browserTest(
    'a member killed with SIGKILL is drawn dead, and its partitions go to the live members',
    async () => {
      expect(existsSync(CHROMIUM)).toBe(true);
      await cluster!.kill('c');
      await pollUntil('a sees c dead', async () => (await statusJson('a')).members.find((m) => m.nodeId === 'c')?.state === 'dead', 10_000);
      // Placement follows the coordinator's view: the partitions move once it publishes one without c.
      await pollUntil('a places from a view without c', async () => (await statusJson('a')).members.find((m) => m.nodeId === 'c')?.partitionsHeld === 0, 5_000);
      const page = await statusJson('a');
      const c = page.members.findIndex((m) => m.nodeId === 'c');
      expect(page.members[c]).toMatchObject({ partitionsHeld: 0, partitionsPrimary: 0 });
      expect(page.ring.primaries).not.toContain(c);
      const work = mkdtempSync(path.join(tmpdir(), 'baton-status-page-'));
      try {
        const url = `${metricsUrl('a')}/`;
        const keep = process.env.BATON_TEST_SCREENSHOT;
        if (keep !== undefined && keep !== '') {
          const screenshot = path.join(work, 'status-page.png');
          await chromium([...browserArgs(path.join(work, 'profile-1')), `--screenshot=${screenshot}`, url]);
          copyFileSync(screenshot, keep.replace(/(\.png)?$/, '-dead.png'));
        }
        const dom = await chromium([...browserArgs(path.join(work, 'profile-2')), '--dump-dom', url]);
        expect(dom).toMatch(/<g class="member" data-node="c" data-state="dead">/);
        expect(dom).toMatch(/<tr data-node="c">.*?<span class="state dead">dead<\/span>/);
        for (const id of ['a', 'b']) expect(dom).toMatch(new RegExp(`<g class="member" data-node="${id}" data-state="alive">`));
        expect(dom).toContain('2 / 3 alive');
      } finally {
        rmSync(work, { recursive: true, force: true });
      }
    },
    3 * BROWSER_TIMEOUT_MS,
  );
});
