/**
 * Configuration checks that keep peer traffic from leaving the machine unprotected, the
 * peer TLS file options, and the network presets with the settings derived from them:
 * each refusal names the flags and variables to fix.
 */
import { randomBytes } from 'node:crypto';
import {
  channelReceiverConfig,
  membershipConfig,
  NETWORK_PRESETS,
  type NetworkTimings,
  parseConfig,
  peerExposure,
  type PresetName,
  reassemblyLimits,
  runsInsecure,
} from '../sidecar/config/config';
import { nodeCoreConfig } from '../sidecar/config/core-config';
import { ChannelReceiver, type ChannelReceiverConfig, DEFAULT_CHANNEL_RECEIVER_CONFIG, nackRepairLimitMs } from '../src/core/channel-receiver';
import { ConfigError } from '../src/wire/errors';
import { DEFAULT_MEMBERSHIP_CONFIG } from '../src/core/membership';
import { SeededRandom } from '../src/store/random';
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

describe('network presets', () => {
  const PRESETS: PresetName[] = ['lan', 'local', 'wan'];
  const TIMING_FLAGS: Record<keyof NetworkTimings, string> = {
    heartbeatIntervalMs: 'heartbeat-interval-ms',
    suspectAfterMs: 'suspect-after-ms',
    deadAfterMs: 'dead-after-ms',
    nackDelayMs: 'nack-delay-ms',
    nackRetryMs: 'nack-retry-ms',
    nackMulticastBackoffMs: 'nack-multicast-backoff-ms',
  };

  function timings(config: NetworkTimings): NetworkTimings {
    const picked = {} as NetworkTimings;
    for (const key of Object.keys(TIMING_FLAGS) as (keyof NetworkTimings)[]) picked[key] = config[key];
    return picked;
  }

  test('without --preset the timings are lan, which hands the cores exactly their former defaults', () => {
    for (const config of [parse({}), parse({ preset: 'lan' })]) {
      expect(config.preset).toBe('lan');
      expect(membershipConfig(config)).toEqual(DEFAULT_MEMBERSHIP_CONFIG);
      expect(channelReceiverConfig(config)).toEqual(DEFAULT_CHANNEL_RECEIVER_CONFIG);
      expect(reassemblyLimits(config)).toEqual({ maxReassemblyBytes: 16 * 1024 * 1024, reassemblyTimeoutMs: 10_000 });
    }
  });

  test('local and wan set every timing of their row, and the NACK ones reach the channel receiver', () => {
    expect(timings(parse({ preset: 'local' }))).toEqual({
      heartbeatIntervalMs: 100,
      suspectAfterMs: 500,
      deadAfterMs: 1500,
      nackDelayMs: 1,
      nackRetryMs: 5,
      nackMulticastBackoffMs: 2,
    });
    const wan = parse({ preset: 'wan' });
    expect(timings(wan)).toEqual({
      heartbeatIntervalMs: 500,
      suspectAfterMs: 3000,
      deadAfterMs: 10_000,
      nackDelayMs: 10,
      nackRetryMs: 50,
      nackMulticastBackoffMs: 20,
    });
    expect(channelReceiverConfig(wan)).toEqual({
      ...DEFAULT_CHANNEL_RECEIVER_CONFIG,
      reorderAllowanceMs: 10,
      nackRetryMs: 50,
      multicastBackoffMs: 20,
      noteRetentionMs: 2000,
    });
    expect(membershipConfig(wan)).toEqual({ heartbeatIntervalMs: 500, suspectAfterMs: 3000, deadAfterMs: 10_000, forgetDeadAfterMs: 60_000 });
  });

  test('each timing given explicitly wins over the preset; the others keep the preset value', () => {
    const explicit: Record<keyof NetworkTimings, number> = {
      heartbeatIntervalMs: 400,
      suspectAfterMs: 4000,
      deadAfterMs: 12_000,
      nackDelayMs: 7,
      nackRetryMs: 70,
      nackMulticastBackoffMs: 30,
    };
    for (const key of Object.keys(TIMING_FLAGS) as (keyof NetworkTimings)[]) {
      const config = parse({ preset: 'wan', [TIMING_FLAGS[key]]: String(explicit[key]) });
      expect(timings(config)).toEqual({ ...NETWORK_PRESETS.wan, [key]: explicit[key] });
    }
  });

  test('the failure-detector order is checked on the values in force, naming each flag and where a value came from', () => {
    // Valid only because wan's dead-after (10 s) exceeds it; lan's (3 s) does not.
    expect(parse({ preset: 'wan', 'suspect-after-ms': '5000' }).suspectAfterMs).toBe(5000);
    expect(refusal({ 'suspect-after-ms': '5000' })).toBe('--dead-after-ms (3000, from --preset lan) must be greater than --suspect-after-ms (5000)');
    expect(refusal({ preset: 'wan', 'dead-after-ms': '2000' })).toBe('--dead-after-ms (2000) must be greater than --suspect-after-ms (3000, from --preset wan)');
    expect(refusal({ preset: 'local', 'heartbeat-interval-ms': '600' })).toBe(
      '--suspect-after-ms (500, from --preset local) must be greater than --heartbeat-interval-ms (600)',
    );
    expect(refusal({ 'suspect-after-ms': '300', 'heartbeat-interval-ms': '300', preset: 'wan' })).toBe(
      '--suspect-after-ms (300) must be greater than --heartbeat-interval-ms (300)',
    );
  });

  test('an unknown preset is refused naming the flag, the variable and the choices', () => {
    expect(refusal({ preset: 'moon' })).toBe('invalid --preset (BATON_PRESET) "moon": use one of lan, local, wan');
    expect(refusal({ preset: 'wan', 'nack-retry-ms': '0' })).toMatch(/^invalid --nack-retry-ms \(BATON_NACK_RETRY_MS\) "0": expected a whole number from 1/);
  });

  test('derived settings follow their rules: notes outlive 4 heartbeats, dead members are kept 4 detection periods or a minute', () => {
    const slow = parse({ preset: 'wan', 'heartbeat-interval-ms': '2000', 'suspect-after-ms': '10000', 'dead-after-ms': '30000' });
    expect(channelReceiverConfig(slow).noteRetentionMs).toBe(8000);
    expect(membershipConfig(slow).forgetDeadAfterMs).toBe(120_000);
    expect(membershipConfig(parse({ preset: 'local' })).forgetDeadAfterMs).toBe(60_000);
    expect(reassemblyLimits(parse({ 'max-value-bytes': String(4 * 1024 * 1024) })).maxReassemblyBytes).toBe(32 * 1024 * 1024);
  });

  /** When a receiver that hears nothing more gives up NACKing a one-datagram gap and asks for a resync. */
  function resyncAfterMs(config: ChannelReceiverConfig, multicast: boolean): number {
    const receiver = new ChannelReceiver(config, multicast, new SeededRandom(7));
    receiver.handleData(1, false, 0);
    receiver.handleData(3, false, 0);
    for (let polls = 0; polls < 100; polls++) {
      const now = receiver.nextDeadline();
      if (receiver.poll(now).resync) return now;
    }
    throw new Error('no resync after 100 polls');
  }

  test.each(PRESETS)('%s: fragment reassembly outlasts a heartbeat plus the longest NACK repair', (preset) => {
    const config = parse({ preset });
    const receiver = channelReceiverConfig(config);
    const limit = nackRepairLimitMs(receiver);
    // On unicast there is no back-off: the limit less its back-off terms is exact.
    expect(resyncAfterMs(receiver, false)).toBe(limit - (receiver.maxNackAttempts + 1) * receiver.multicastBackoffMs);
    const multicast = resyncAfterMs(receiver, true);
    expect(multicast).toBeLessThanOrEqual(limit);
    expect(multicast).toBeGreaterThan(limit - (receiver.maxNackAttempts + 1) * receiver.multicastBackoffMs);
    expect(reassemblyLimits(config).reassemblyTimeoutMs).toBeGreaterThanOrEqual(2 * (config.heartbeatIntervalMs + limit));
  });

  test('a NACK retry long enough to outlast 10 s stretches the reassembly timeout with it', () => {
    const config = parse({ 'nack-retry-ms': '200' }); // 111 × 200 ms of NACKs
    expect(reassemblyLimits(config).reassemblyTimeoutMs).toBe(2 * (250 + nackRepairLimitMs(channelReceiverConfig(config))));
    expect(reassemblyLimits(config).reassemblyTimeoutMs).toBeGreaterThan(44_000);
  });
});

describe('TLS resumption options', () => {
  test('the rotation defaults to 720 minutes and takes fractions of a minute; the session lifetime to 300 s', () => {
    expect(parse({}).tlsTicketRotationMs).toBe(720 * 60_000);
    expect(parse({}).tlsSessionLifetimeSeconds).toBe(300);
    expect(parse({ 'tls-ticket-rotation-minutes': '0.1' }).tlsTicketRotationMs).toBe(6000);
    expect(parse({ 'tls-session-lifetime-seconds': '60' }).tlsSessionLifetimeSeconds).toBe(60);
  });

  test.each(['0', '0.01', '-1', '1e3', 'soon', '20161'])('refuses --tls-ticket-rotation-minutes %s, naming the flag and the variable', (value) => {
    expect(refusal({ 'tls-ticket-rotation-minutes': value })).toMatch(/--tls-ticket-rotation-minutes \(BATON_TLS_TICKET_ROTATION_MINUTES\).*minutes from 0.05 to 20160/);
  });
});

describe('cluster shape: --role, --multicast-groups, --config-from-peers', () => {
  test('--role is edge by default, store on request, nothing else', () => {
    expect(parse({}).role).toBe('edge');
    expect(parse({ role: 'store' }).role).toBe('store');
    expect(() => parse({ role: 'replica' })).toThrow('invalid --role (BATON_ROLE) "replica": use edge or store');
  });

  test('--quorum is off (0) by default, a whole number of members up to 1024, and reaches the node core', () => {
    expect(parse({}).quorum).toBe(0);
    expect(parse({ quorum: '3' }).quorum).toBe(3);
    expect(nodeCoreConfig(parse({ quorum: '2' }), { advertiseAddress: '127.0.0.1:7401', incarnation: 1n, maxPayloadBytes: 1400 }).quorum).toBe(2);
    expect(refusal({ quorum: 'majority' })).toMatch(/^invalid --quorum \(BATON_QUORUM\) "majority"/);
    expect(refusal({ quorum: '1025' })).toMatch(/^invalid --quorum \(BATON_QUORUM\) "1025"/);
  });

  test('--udp-segmentation is on by default, off on request, nothing else', () => {
    expect(parse({}).udpSegmentation).toBe(true);
    expect(parse({ 'udp-segmentation': 'off' }).udpSegmentation).toBe(false);
    expect(refusal({ 'udp-segmentation': 'maybe' })).toMatch(/^invalid --udp-segmentation \(BATON_UDP_SEGMENTATION\) "maybe"/);
  });

  test('a store node has no web server: --proxy-listen is refused with it', () => {
    expect(() => parse({ role: 'store', 'proxy-listen': '127.0.0.1:8443', 'proxy-upstream': 'http://127.0.0.1:8080', 'tls-self-signed': 'true' })).toThrow(
      /--role store has no web server: --proxy-listen \(BATON_PROXY_LISTEN\)/,
    );
  });

  test('--multicast-groups lists K groups; --multicast is one group; both at once are refused', () => {
    const groups = parse({ 'multicast-groups': '239.1.2.3:7402, 239.1.2.4:7402' });
    expect(groups.multicastGroups).toEqual([{ group: '239.1.2.3', port: 7402 }, { group: '239.1.2.4', port: 7402 }]);
    expect(groups.multicast).toEqual({ group: '239.1.2.3', port: 7402 });
    expect(parse({ multicast: '239.1.2.3:7402' }).multicastGroups).toEqual([{ group: '239.1.2.3', port: 7402 }]);
    expect(parse({}).multicastGroups).toEqual([]);
    expect(() => parse({ multicast: '239.1.2.3:7402', 'multicast-groups': '239.1.2.4:7402' })).toThrow(/--multicast \(BATON_MULTICAST\) and --multicast-groups/);
    expect(() => parse({ 'multicast-groups': '239.1.2.3:7402,10.0.0.1:7402' })).toThrow(/invalid --multicast-groups .*224\.0\.0\.0\/4/);
    expect(() => parse({ 'multicast-groups': '239.1.2.3:7402,239.1.2.3:7402' })).toThrow(/listed twice/);
    expect(() => parse({ 'multicast-groups': '239.1.2.999:7402' })).toThrow(/invalid --multicast-groups/);
  });

  test('--multicast-groups on a non-loopback interface without a key is refused like --multicast', () => {
    expect(() => parse({ 'multicast-groups': '239.1.2.3:7402,239.1.2.4:7402', 'multicast-interface': '10.1.2.3' })).toThrow(/refusing to join --multicast 239\.1\.2\.3:7402 on --multicast-interface 10\.1\.2\.3 without a cluster key/);
    expect(parse({ 'multicast-groups': '239.1.2.3:7402', 'multicast-interface': '10.1.2.3', insecure: 'true' }).multicast).toEqual({ group: '239.1.2.3', port: 7402 });
  });

  test('--config-from-peers needs peers to ask', () => {
    expect(() => parse({ 'config-from-peers': 'true' })).toThrow(/--config-from-peers \(BATON_CONFIG_FROM_PEERS\) needs peers to ask: set --peers or --peers-dns/);
    expect(parse({ 'config-from-peers': 'true', peers: '127.0.0.1:7501' }).configFromPeers).toBe(true);
    expect(parse({}).configFromPeers).toBe(false);
  });
});
