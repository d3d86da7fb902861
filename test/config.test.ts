/**
 * Configuration checks that keep peer traffic from leaving the machine unprotected, and
 * the peer TLS file options: each refusal names the flags and variables to fix.
 */
import { randomBytes } from 'node:crypto';
import { parseConfig, peerExposure, runsInsecure } from '../sidecar/config';
import { ConfigError } from '../src/errors';
import { issueTestLeaf, makeTestCa } from './support/test-ca';

const KEY = randomBytes(32).toString('base64');
const LAN_MULTICAST = { 'peer-listen': '127.0.0.1:7401', multicast: '239.1.2.3:7402', 'multicast-interface': '10.1.2.3' };

function parse(values: Record<string, string>, env: NodeJS.ProcessEnv = {}, files: Record<string, string> = {}) {
  return parseConfig(values, env, (path) => {
    const text = files[path];
    if (text === undefined) throw new Error(`ENOENT: no such file or directory, open '${path}'`);
    return text;
  });
}

function refusal(values: Record<string, string>, env: NodeJS.ProcessEnv = {}, files: Record<string, string> = {}): string {
  try {
    parse(values, env, files);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error('the configuration was accepted');
}

describe('peer traffic off loopback needs a cluster key', () => {
  test('multicast on a non-loopback interface without a key is refused, naming the flags and how to fix it', () => {
    const message = refusal(LAN_MULTICAST);
    expect(message).toContain('--multicast 239.1.2.3:7402');
    expect(message).toContain('--multicast-interface 10.1.2.3');
    expect(message).toMatch(/--cluster-key-file or BATON_CLUSTER_KEY, or pass --insecure/);
  });

  test('a non-loopback --peer-listen without a key is still refused', () => {
    expect(refusal({ 'peer-listen': '10.1.2.3:7401' })).toMatch(/^refusing to bind --peer-listen 10\.1\.2\.3:7401 without a cluster key/);
  });

  test('multicast on loopback needs no key, and runs with --insecure off', () => {
    for (const iface of ['', '127.0.0.1']) {
      const config = parse({ 'peer-listen': '127.0.0.1:7401', multicast: '239.1.2.3:7402', 'multicast-interface': iface });
      expect(peerExposure(config)).toBeUndefined();
      expect(runsInsecure(config)).toBe(false);
    }
  });

  test('a key, or --insecure, lets it start; only --insecure without a key counts as insecure', () => {
    const keyed = parse(LAN_MULTICAST, { BATON_CLUSTER_KEY: KEY });
    expect(runsInsecure(keyed)).toBe(false);
    const insecure = parse({ ...LAN_MULTICAST, insecure: 'true' });
    expect(runsInsecure(insecure)).toBe(true);
    expect(peerExposure(insecure)).toBe('join --multicast 239.1.2.3:7402 on --multicast-interface 10.1.2.3');
    // --insecure on loopback changes nothing.
    expect(runsInsecure(parse({ 'peer-listen': '127.0.0.1:7401', insecure: 'true' }))).toBe(false);
  });
});

describe('peer TLS files', () => {
  const ca = makeTestCa();
  const leaf = issueTestLeaf(ca, 'node-a');
  const files = { '/tls/ca.crt': ca.certPem, '/tls/tls.crt': leaf.certPem, '/tls/tls.key': leaf.keyPem };
  const all = { 'peer-tls-ca-file': '/tls/ca.crt', 'peer-tls-cert-file': '/tls/tls.crt', 'peer-tls-key-file': '/tls/tls.key' };

  test('none given: derived from the cluster key', () => {
    expect(parse({}).peerTlsFiles).toBeUndefined();
  });

  test('all three given: read and kept', () => {
    expect(parse(all, {}, files).peerTlsFiles).toEqual({ ca: ca.certPem, cert: leaf.certPem, key: leaf.keyPem });
  });

  test('only some given: the missing ones are named', () => {
    expect(refusal({ 'peer-tls-ca-file': '/tls/ca.crt' }, {}, files)).toBe(
      '--peer-tls-ca-file, --peer-tls-cert-file and --peer-tls-key-file go together; missing ' +
        '--peer-tls-cert-file (BATON_PEER_TLS_CERT_FILE), --peer-tls-key-file (BATON_PEER_TLS_KEY_FILE)',
    );
  });

  test('an unreadable or unusable file is named with its flag and variable', () => {
    expect(refusal({ ...all, 'peer-tls-key-file': '/tls/missing.key' }, {}, files)).toMatch(
      /^cannot read --peer-tls-key-file \(BATON_PEER_TLS_KEY_FILE\) "\/tls\/missing\.key": ENOENT/,
    );
    const other = issueTestLeaf(ca, 'node-b');
    expect(refusal(all, {}, { ...files, '/tls/tls.key': other.keyPem })).toMatch(
      /^--peer-tls-key-file \(BATON_PEER_TLS_KEY_FILE\) \/tls\/tls\.key is not the private key of the certificate in --peer-tls-cert-file/,
    );
    expect(refusal(all, {}, { ...files, '/tls/ca.crt': 'nothing here' })).toMatch(/^--peer-tls-ca-file \(BATON_PEER_TLS_CA_FILE\) \/tls\/ca\.crt holds no PEM certificate/);
  });
});

describe('the cluster key', () => {
  const GOOD = Buffer.alloc(32, 7).toString('base64');

  test('a malformed BATON_CLUSTER_KEY is a configuration error naming the variable and the flag', () => {
    expect(refusal({}, { BATON_CLUSTER_KEY: 'not-a-key' })).toMatch(/BATON_CLUSTER_KEY \(or --cluster-key-file\): line 1 is not valid base64/);
  });

  test('a key file holding a short key is a configuration error naming the flag and file', () => {
    const files = { '/keys/k': `${GOOD}\n${Buffer.alloc(16).toString('base64')}\n` };
    expect(refusal({ 'cluster-key-file': '/keys/k' }, {}, files)).toMatch(/--cluster-key-file \/keys\/k: line 2 decodes to 16 bytes/);
  });

  test('a good key passes', () => {
    expect(parse({}, { BATON_CLUSTER_KEY: GOOD }).clusterKeys).toBe(GOOD);
  });
});
