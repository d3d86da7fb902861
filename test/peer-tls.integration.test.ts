/**
 * Peer TLS between real `baton sidecar` processes on loopback: resumes read across nodes
 * holding one key, keys listed in either order (a rotation), or certificate files; a
 * process of another cluster, or a plaintext caller with the token that used to admit
 * callers, cannot read a node. And what the command line refuses or warns about: multicast
 * off loopback without a key (exit 2), bad peer TLS files (exit 2), and --insecure (a
 * warning and baton_insecure 1, in a network namespace the test makes).
 */
import { spawnSync } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { credentials, Metadata, status } from '@grpc/grpc-js';
import { parseClusterKeys } from '../src/wire/cluster-key';
import { PeerServiceClient } from '../src/gen/baton/v1/peer';
import { peerTlsFromKeys } from '../src/wire/peer-tls';
import { PeerClients, PeerCredentials } from '../sidecar/transport/peer-service';
import { runBaton, startSidecar } from './support/sidecar-process';
import { FAST_FAILURE_DETECTION, StaticCluster } from './support/static-cluster';
import { issueTestLeaf, makeTestCa } from './support/test-ca';

const DEADLINE_MS = 5000;

let dir: string;
let cluster: StaticCluster | undefined;

beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'baton-peer-tls-'));
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

afterEach(async () => {
  const stopping = cluster;
  cluster = undefined;
  if (stopping === undefined) return;
  const codes = await stopping.stopAll();
  expect([...codes.values()].every((code) => code === 0)).toBe(true);
});

function newKey(): string {
  return randomBytes(32).toString('base64');
}

function writeFile(name: string, text: string): string {
  const file = path.join(dir, name);
  writeFileSync(file, text);
  return file;
}

/** Two nodes, `a` and `b`, with per-node options; waits until they see each other. */
async function startPair(nodeArgs: Record<string, string[]>): Promise<StaticCluster> {
  cluster = await StaticCluster.start(['a', 'b'], ['--replicas', '1', '--partitions', '16', ...FAST_FAILURE_DETECTION], nodeArgs);
  await cluster.waitForAlive(['a', 'b'], 10_000);
  return cluster;
}

/** Writes a session on `a` and resumes it on `b`: b asks a over PeerService.Lookup. */
async function resumeAcross(c: StaticCluster): Promise<void> {
  const secret = `cart-${randomBytes(8).toString('hex')}`;
  const id = `tls-${randomBytes(4).toString('hex')}`;
  await c.client('a').put(id, { note: Buffer.from(secret) }, { minReplicas: 1 });
  const session = await c.client('b').get(id, { resume: true });
  expect(session?.ownerNodeId).toBe('b');
  expect(session?.parts.map((p) => [p.name, Buffer.from(p.value).toString()])).toEqual([['note', secret]]);
  const b = await c.node('b').process!.scrape();
  expect(b.sum('baton_resume_peer_fetch_duration_seconds_count', { outcome: 'ok' })).toBeGreaterThan(0);
  expect(b.sum('baton_resume_peer_fetch_duration_seconds_count', { outcome: 'error' })).toBe(0);
}

describe('peer TLS between baton processes', () => {
  test('with one cluster key a session resumes across nodes over TLS', async () => {
    const keyFile = writeFile('one.key', newKey() + '\n');
    const c = await startPair({ a: ['--cluster-key-file', keyFile], b: ['--cluster-key-file', keyFile] });
    await resumeAcross(c);
    expect(c.node('a').process!.logs.find((l) => l.msg === 'baton node started')).toMatchObject({ peer_tls: 'cluster key', encrypted: true });
    expect((await c.node('a').process!.scrape()).value('baton_insecure')).toBe(0);
  });

  test('during a key rotation (the two keys listed in either order) resumes still read across', async () => {
    const [oldKey, nextKey] = [newKey(), newKey()];
    // The hash table derives from the first key unless pinned: a rotation pins it first.
    const seed = ['--cluster-seed', randomBytes(16).toString('hex')];
    const c = await startPair({
      a: ['--cluster-key-file', writeFile('a.keys', `${oldKey}\n${nextKey}\n`), ...seed],
      b: ['--cluster-key-file', writeFile('b.keys', `${nextKey}\n${oldKey}\n`), ...seed],
    });
    await resumeAcross(c);
  });

  test('a process of another cluster, or a plaintext caller with the old peer token, cannot read a node', async () => {
    const key = newKey();
    const keyFile = writeFile('own.key', key + '\n');
    const c = await startPair({ a: ['--cluster-key-file', keyFile], b: ['--cluster-key-file', keyFile] });
    await c.client('a').put('kept', { note: Buffer.from('secret') }, { minReplicas: 1 });
    const address = c.node('a').process!.peerAddress;
    const outsider = new PeerClients(new PeerCredentials(peerTlsFromKeys(parseClusterKeys(newKey()), 'outsider', Date.now())));
    const plaintext = new PeerServiceClient(address, credentials.createInsecure());
    try {
      await expect(outsider.lookup(address, ['kept'], DEADLINE_MS)).rejects.toMatchObject({ code: status.UNAVAILABLE });
      const metadata = new Metadata();
      metadata.set('x-baton-peer-token', createHmac('sha256', parseClusterKeys(key)[0]!.key).update('baton/peer-token/v1').digest('base64'));
      const fetched = await new Promise<{ code: number; sessions: number }>((resolve) => {
        let sessions = 0;
        const call = plaintext.fetch({ partitions: [], sessionIds: ['kept'] }, metadata, { deadline: Date.now() + DEADLINE_MS });
        call.on('data', () => sessions++);
        call.on('error', (err: { code: number }) => resolve({ code: err.code, sessions }));
        call.on('end', () => resolve({ code: status.OK, sessions }));
      });
      expect(fetched).toEqual({ code: status.UNAVAILABLE, sessions: 0 });
    } finally {
      outsider.close();
      plaintext.close();
    }
  });

  test('with certificate files (cert-manager style, no cluster key) a session resumes across nodes, and key-derived certificates are refused', async () => {
    const ca = makeTestCa();
    const caFile = writeFile('ca.crt', ca.certPem);
    const args = (id: string) => {
      const leaf = issueTestLeaf(ca, `node-${id}`);
      return ['--peer-tls-ca-file', caFile, '--peer-tls-cert-file', writeFile(`${id}.crt`, leaf.certPem), '--peer-tls-key-file', writeFile(`${id}.key`, leaf.keyPem)];
    };
    const c = await startPair({ a: args('a'), b: args('b') });
    await resumeAcross(c);
    expect(c.node('a').process!.logs.find((l) => l.msg === 'baton node started')).toMatchObject({ peer_tls: 'files' });
    const address = c.node('a').process!.peerAddress;
    const stranger = new PeerClients(new PeerCredentials(peerTlsFromKeys(parseClusterKeys(newKey()), 'stranger', Date.now())));
    try {
      await expect(stranger.digests(address, [], DEADLINE_MS)).rejects.toMatchObject({ code: status.UNAVAILABLE });
    } finally {
      stranger.close();
    }
  });
});

describe('baton sidecar and unprotected peer traffic', () => {
  test('multicast on a non-loopback interface without a key exits 2, naming the flags and the fixes', async () => {
    const { code, stderr } = await runBaton(['sidecar', '--peer-listen', '127.0.0.1:0', '--multicast', '239.77.0.2:17403', '--multicast-interface', '10.254.0.9']);
    expect(code).toBe(2);
    expect(stderr.trim()).toBe(
      'baton: refusing to join --multicast 239.77.0.2:17403 on --multicast-interface 10.254.0.9 without a cluster key: anyone on the network ' +
        'could read and forge replication traffic. Set --cluster-key-file or BATON_CLUSTER_KEY, or pass --insecure',
    );
  });

  test('a peer TLS file that is missing or does not fit exits 2 naming its flag', async () => {
    const ca = makeTestCa();
    const leaf = issueTestLeaf(ca, 'node-a');
    const other = issueTestLeaf(ca, 'node-b');
    const files = ['--peer-tls-ca-file', writeFile('x-ca.crt', ca.certPem), '--peer-tls-cert-file', writeFile('x.crt', leaf.certPem)];
    const missing = await runBaton(['sidecar', ...files]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('missing --peer-tls-key-file (BATON_PEER_TLS_KEY_FILE)');
    const wrongKey = await runBaton(['sidecar', ...files], { BATON_PEER_TLS_KEY_FILE: writeFile('x.key', other.keyPem) });
    expect(wrongKey.code).toBe(2);
    expect(wrongKey.stderr).toMatch(/--peer-tls-key-file \(BATON_PEER_TLS_KEY_FILE\) .*x\.key is not the private key of the certificate/);
  });

  // Needs an interface off loopback: the test makes a network namespace with a veth pair
  // (root, as CI runs), so nothing leaves the machine.
  const namespaces = spawnSync('unshare', ['-n', 'true']).status === 0;
  if (!namespaces) console.warn('skipping the --insecure warning test: cannot create a network namespace here (needs root and unshare)');
  (namespaces ? test : test.skip)('--insecure with multicast off loopback warns at start and sets baton_insecure to 1', async () => {
    const setup = [
      'ip link set lo up',
      'ip link add v0 type veth peer name v1',
      'ip addr add 10.254.0.1/24 dev v0',
      'ip link set v0 up',
      'ip link set v1 up',
      'ip route add 224.0.0.0/4 dev v0',
    ].join(' && ');
    const node = await startSidecar(
      ['--multicast', '239.77.0.1:17402', '--multicast-interface', '10.254.0.1', '--insecure'],
      {},
      { prefix: ['unshare', '-n', 'sh', '-c', `${setup} && exec "$0" "$@"`], startTimeoutMs: 15_000 },
    );
    try {
      const started = node.logs.find((l) => l.msg === 'baton node started');
      expect(started).toBeDefined();
      const warning = node.logs.find((l) => l.level === 'warn' && String(l.msg).startsWith('--insecure'));
      expect(warning).toMatchObject({ exposed: 'join --multicast 239.77.0.1:17402 on --multicast-interface 10.254.0.1' });
      // The metrics port is inside the namespace: scrape it from there.
      const scraped = spawnSync(
        'nsenter',
        ['-t', String(node.child.pid), '-n', process.execPath, '-e', `fetch('${node.metricsUrl}/metrics').then((r) => r.text()).then((t) => process.stdout.write(t))`],
        { encoding: 'utf8', timeout: 10_000 },
      );
      expect(scraped.stdout).toMatch(/^baton_insecure 1$/m);
    } finally {
      expect(await node.stop('SIGTERM', 10_000)).toBe(0);
    }
  });
});
