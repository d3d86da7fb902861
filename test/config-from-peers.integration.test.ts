/**
 * Cluster-critical configuration across real processes (loopback, with a cluster key, so
 * the peer calls run over mutual TLS): a node started with only --peers, the key and
 * --config-from-peers adopts the cluster's partitions, replicas and hash seed and joins
 * without being refused; a node whose --partitions differ is refused, with the setting
 * named in Status, the metric and the log; peers that disagree, or none answering, make
 * --config-from-peers refuse to start with a message that says so.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { parseConfig } from '../sidecar/config/config';
import { adoptClusterSettings } from '../sidecar/transport/config-from-peers';
import { parseClusterKeys } from '../src/wire/cluster-key';
import { freePeerPorts } from './support/ports';
import { runBaton, startSidecar, type SidecarProcess } from './support/sidecar-process';
import { FAST_FAILURE_DETECTION, pollUntil, StaticCluster } from './support/static-cluster';

jest.setTimeout(120_000);

const dir = mkdtempSync(path.join(tmpdir(), 'baton-config-peers-'));
const keyFile = path.join(dir, 'cluster.key');
const KEY = randomBytes(32).toString('base64');
writeFileSync(keyFile, `${KEY}\n`);

let cluster: StaticCluster | undefined;
const extra: SidecarProcess[] = [];

beforeAll(async () => {
  cluster = await StaticCluster.start(['a', 'b'], ['--partitions', '32', '--replicas', '1', '--cluster-seed', 'pinned-seed', '--cluster-key-file', keyFile, ...FAST_FAILURE_DETECTION]);
  await cluster.waitForAlive(['a', 'b'], 10_000);
});

afterAll(async () => {
  for (const node of extra) await node.stop('SIGKILL');
  await cluster?.stopAll();
  rmSync(dir, { recursive: true, force: true });
});

function peersOf(): string {
  return ['a', 'b'].map((id) => `127.0.0.1:${cluster!.node(id).peerPort}`).join(',');
}

test('a node with only its peers and the key adopts the cluster\'s settings and is not refused', async () => {
  const node = await startSidecar(['--node-id', 'c', '--peers', peersOf(), '--cluster-key-file', keyFile, '--config-from-peers', ...FAST_FAILURE_DETECTION]);
  extra.push(node);
  const adopted = node.logs.find((l) => String(l.msg).startsWith("adopted the cluster's settings"));
  expect(adopted).toMatchObject({ partitions: 32, replicas: 1, clusterSeed: 'given', multicastGroups: [] });
  await pollUntil('a sees c alive', async () => (await cluster!.status('a')).members.some((m) => m.nodeId === 'c' && m.state === 'alive'), 10_000);
  const status = await cluster!.status('a');
  expect(status.configMismatches).toEqual([]);
  // c runs what it adopted: its sessions land in the same partitions as everyone's.
  const metrics = await node.scrape();
  expect(metrics.value('baton_config_mismatches_total', { setting: 'partitions' })).toBe(0);
});

test('a node with other --partitions is refused, the setting named in Status, the metric and the log', async () => {
  const node = await startSidecar(['--node-id', 'd', '--peers', peersOf(), '--cluster-key-file', keyFile, '--partitions', '64', '--replicas', '1', '--cluster-seed', 'pinned-seed', ...FAST_FAILURE_DETECTION]);
  extra.push(node);
  await pollUntil('a refuses d', async () => (await cluster!.status('a')).configMismatches.some((m) => m.nodeId === 'd'), 10_000);
  const status = await cluster!.status('a');
  expect(status.configMismatches.find((m) => m.nodeId === 'd')?.settings).toEqual(['partitions']);
  expect(status.members.some((m) => m.nodeId === 'd')).toBe(false);
  expect((await cluster!.node('a').process!.scrape()).value('baton_config_mismatches_total', { setting: 'partitions' })).toBeGreaterThan(0);
  const logged = cluster!.node('a').process!.logs.find((l) => l.peer === 'd' && String(l.msg).startsWith('refusing d'));
  expect(logged?.msg).toContain('differs in partitions');
  expect(logged?.level).toBe('warn');
});

test('peers that disagree make --config-from-peers refuse to start, naming the setting', async () => {
  const [p1, p2] = await freePeerPorts(2);
  const one = await startSidecar(['--node-id', 'x1', '--peer-listen', `127.0.0.1:${p1}`, '--cluster-key-file', keyFile, '--partitions', '16']);
  extra.push(one);
  const two = await startSidecar(['--node-id', 'x2', '--peer-listen', `127.0.0.1:${p2}`, '--cluster-key-file', keyFile, '--partitions', '8']);
  extra.push(two);
  const run = await runBaton(['sidecar', '--node-id', 'x3', '--api-listen', '127.0.0.1:0', '--metrics-listen', '127.0.0.1:0', '--http-listen', 'off', '--peer-listen', '127.0.0.1:0',
    '--peers', `127.0.0.1:${p1},127.0.0.1:${p2}`, '--cluster-key-file', keyFile, '--config-from-peers']);
  expect(run.code).toBe(2);
  expect(run.stderr).toMatch(/--config-from-peers: the peers disagree on the cluster's settings: .*\(they differ in partitions\)/);
});

test('with no peer answering within the bound, --config-from-peers refuses with a clear error', async () => {
  const [port] = await freePeerPorts(1);
  const config = parseConfig({ peers: `127.0.0.1:${port}`, 'config-from-peers': 'true', 'cluster-key-file': keyFile }, {}, () => `${KEY}\n`);
  await expect(adoptClusterSettings(config, parseClusterKeys(KEY), 1200)).rejects.toThrow(
    /--config-from-peers: no peer answered with the cluster's settings within 1 s \(127\.0\.0\.1:\d+: .*\); check --peers/,
  );
});
