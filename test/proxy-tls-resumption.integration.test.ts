/**
 * The capture proxy resumes TLS sessions begun on another pod, with no code in the web
 * server: three real `baton sidecar` processes on loopback, each terminating TLS in front of
 * the same web server (in this process). openssl s_client makes a full handshake with node
 * a's proxy and reads an answer, then offers the saved session to node b's proxy: `Reused`,
 * for TLS 1.3, TLS 1.2 with tickets and TLS 1.2 with session IDs, also after a was
 * SIGKILLed; the web server is told the handshake was resumed (x-baton-tls-resumed: 1).
 * A proxy of another cluster (its own key) refuses the same sessions: the check can fail.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { handshake, resumeAcross, sClient, TLS_VARIANTS } from './support/openssl-client';
import { TestUpstream } from './support/proxy-upstream';
import { startSidecar, type SidecarProcess } from './support/sidecar-process';
import { FAST_FAILURE_DETECTION, pollUntil, StaticCluster } from './support/static-cluster';
import { issueTestLeaf, makeTestCa } from './support/test-ca';

jest.setTimeout(120_000);

let upstream: TestUpstream;
let cluster: StaticCluster | undefined;
let stranger: SidecarProcess | undefined;
let dir = '';
let caFile = '';
let proxyArgs: string[] = [];

function proxyPort(p: SidecarProcess | undefined): number {
  const entry = p?.logs.find((l) => l.msg === 'baton node started');
  if (typeof entry?.proxy_port !== 'number') throw new Error('the node logged no proxy_port');
  return entry.proxy_port;
}

/** Ready means caught up with the peers and holding the cluster's ticket keys. */
async function waitReady(p: SidecarProcess): Promise<void> {
  const ready = () =>
    new Promise<boolean>((resolve) => {
      http.get(`${p.metricsUrl}/readyz`, { agent: false }, (res) => (res.resume(), resolve(res.statusCode === 200))).on('error', () => resolve(false));
    });
  await pollUntil('the node is ready', ready, 30_000);
}

const request = (url: string) => `GET ${url} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`;

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'baton-proxy-tls-'));
  const ca = makeTestCa('proxy tls test CA');
  const leaf = issueTestLeaf(ca, 'localhost', undefined, ['localhost', '127.0.0.1']);
  caFile = path.join(dir, 'ca.crt');
  writeFileSync(caFile, ca.certPem);
  writeFileSync(path.join(dir, 'tls.crt'), leaf.certPem);
  writeFileSync(path.join(dir, 'tls.key'), leaf.keyPem);
  upstream = await TestUpstream.start();
  proxyArgs = ['--proxy-listen', '127.0.0.1:0', '--proxy-upstream', upstream.url, '--tls-cert-file', path.join(dir, 'tls.crt'), '--tls-key-file', path.join(dir, 'tls.key')];
  cluster = await StaticCluster.start(['a', 'b', 'c'], [...proxyArgs, ...FAST_FAILURE_DETECTION]);
  await cluster.waitForAlive(['a', 'b', 'c'], 15_000);
  for (const id of ['a', 'b', 'c']) await waitReady(cluster.node(id).process!);
});

afterAll(async () => {
  await stranger?.stop();
  await cluster?.stopAll();
  await upstream?.close();
  rmSync(dir, { recursive: true, force: true });
});

test.each(TLS_VARIANTS)('a session made through node a resumes through node b: %s', async (name, args, version) => {
  const a = proxyPort(cluster!.node('a').process);
  const b = proxyPort(cluster!.node('b').process);
  const path1 = `/first-${version}-${args.length}`;
  const path2 = `/second-${version}-${args.length}`;
  const sessionFile = path.join(dir, `s-${name.replace(/\W+/g, '-')}.pem`);
  const first = await sClient(a, caFile, [...args, '-sess_out', sessionFile], request(path1));
  expect(handshake(first)).toBe(`New, ${version}`);
  expect(upstream.last(path1).headers['x-baton-tls-resumed']).toBe('0');
  const second = await sClient(b, caFile, [...args, '-sess_in', sessionFile], request(path2));
  expect(handshake(second)).toBe(`Reused, ${version}`);
  expect(upstream.last(path2).headers['x-baton-tls-resumed']).toBe('1');
});

test('a proxy of another cluster does not resume them (its keys and context are its own)', async () => {
  stranger = await startSidecar([...proxyArgs, '--node-id', 'stranger']);
  await waitReady(stranger);
  for (const [, args, version] of TLS_VARIANTS) {
    const { second } = await resumeAcross(proxyPort(cluster!.node('a').process), proxyPort(stranger), caFile, dir, args);
    expect(handshake(second)).toBe(`New, ${version}`);
  }
});

test('sessions made through node a resume through node c after a was SIGKILLed', async () => {
  const files = TLS_VARIANTS.map((_, i) => path.join(dir, `killed-${i}.pem`));
  for (const [i, [, args, version]] of TLS_VARIANTS.entries()) {
    expect(handshake(await sClient(proxyPort(cluster!.node('a').process), caFile, [...args, '-sess_out', files[i]!]))).toBe(`New, ${version}`);
  }
  await cluster!.kill('a', 'SIGKILL');
  for (const [i, [, args, version]] of TLS_VARIANTS.entries()) {
    expect(handshake(await sClient(proxyPort(cluster!.node('c').process), caFile, [...args, '-sess_in', files[i]!]))).toBe(`Reused, ${version}`);
  }
});
