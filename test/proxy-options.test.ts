import { parseConfig } from '../sidecar/config/config';
import { ConfigError } from '../src/wire/errors';

const proxy = { 'proxy-listen': '127.0.0.1:0' };

function failure(values: Record<string, string>, files: Record<string, string> = {}): string {
  try {
    parseConfig(values, {}, (path) => {
      if (!(path in files)) throw new Error('ENOENT: no such file');
      return files[path]!;
    });
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error('expected a ConfigError');
}

describe('capture proxy options', () => {
  test('off by default; the upstream forms parse to where requests go', () => {
    expect(parseConfig({}, {}).proxyListen).toBeUndefined();
    expect(parseConfig({ ...proxy, 'proxy-upstream': 'http://127.0.0.1:8080' }, {}).proxyUpstream).toEqual({ kind: 'http', text: 'http://127.0.0.1:8080', host: '127.0.0.1', port: 8080 });
    expect(parseConfig({ ...proxy, 'proxy-upstream': 'https://web.local/' }, {}).proxyUpstream).toMatchObject({ kind: 'https', host: 'web.local', port: 443 });
    expect(parseConfig({ ...proxy, 'proxy-upstream': 'http://[::1]:81' }, {}).proxyUpstream).toMatchObject({ kind: 'http', host: '::1', port: 81 });
    expect(parseConfig({ ...proxy, 'proxy-upstream': 'unix:/run/web.sock' }, {}).proxyUpstream).toEqual({ kind: 'unix', text: 'unix:/run/web.sock', path: '/run/web.sock' });
    const config = parseConfig({ ...proxy, 'proxy-upstream': 'unix:/s', 'proxy-max-body-mb': '0' }, {});
    expect(config).toMatchObject({ sessionCookie: 'baton_sid', proxyMaxBodyBytes: 0, proxyMaxHeaderBytes: 16384, tlsSelfSigned: false });
    expect(config.replayBufferBytes).toBe(16 * 1024 * 1024);
    expect(parseConfig({ ...proxy, 'proxy-upstream': 'unix:/s', 'replay-buffer-mb': '0' }, {}).replayBufferBytes).toBe(0);
    expect(failure({ ...proxy, 'proxy-upstream': 'unix:/s', 'replay-buffer-mb': '-1' })).toMatch(/--replay-buffer-mb/);
  });

  test('what does not go together, or does not load, is a configuration error naming the flag', () => {
    expect(failure(proxy)).toMatch(/--proxy-listen \(BATON_PROXY_LISTEN\) needs --proxy-upstream/);
    expect(failure({ ...proxy, 'proxy-upstream': 'ws://x:1' })).toMatch(/invalid --proxy-upstream/);
    expect(failure({ ...proxy, 'proxy-upstream': 'http://u:p@x:1' })).toMatch(/without a path, query or credentials/);
    expect(failure({ ...proxy, 'proxy-upstream': 'unix:' })).toMatch(/unix:\/path/);
    expect(failure({ 'tls-self-signed': 'true' })).toMatch(/set --proxy-listen/);
    const up = { ...proxy, 'proxy-upstream': 'http://x:1' };
    expect(failure({ ...up, 'tls-key-file': '/k' })).toMatch(/go together/);
    expect(failure({ ...up, 'tls-self-signed': 'true', 'tls-cert-file': '/c', 'tls-key-file': '/k' })).toMatch(/exclude each other/);
    expect(failure({ ...up, 'tls-cert-file': '/c', 'tls-key-file': '/k' })).toMatch(/cannot read --tls-cert-file/);
    expect(failure({ ...up, 'tls-cert-file': '/c', 'tls-key-file': '/k' }, { '/c': 'not a certificate', '/k': 'nor a key' })).toMatch(/do not load/);
    expect(failure({ ...up, 'tls-self-signed': 'true', 'tls-client-ca-file': '/ca' }, { '/ca': 'junk' })).toMatch(/--tls-client-ca-file/);
    expect(failure({ ...up, 'session-cookie': 'a b' })).toMatch(/invalid --session-cookie/);
    expect(failure({ ...up, 'proxy-upstream-timeout-ms': '5' })).toMatch(/invalid --proxy-upstream-timeout-ms/);
  });

  test('--tcp-handover: off by default; needs a plain-HTTP proxy and --virtual-address, its companions need it', () => {
    const up = { ...proxy, 'proxy-upstream': 'http://x:1' };
    expect(parseConfig(up, {})).toMatchObject({ tcpHandover: false, virtualAddress: '', handoverHook: '', handoverHookTimeoutMs: 5000 });
    const any = { ...up, 'proxy-listen': '0.0.0.0:8000' };
    const on = parseConfig({ ...any, 'tcp-handover': 'true', 'virtual-address': '10.0.0.9', 'handover-hook': 'ip route replace 10.0.0.9 via 10.0.0.2' }, {});
    expect(on).toMatchObject({ tcpHandover: true, virtualAddress: '10.0.0.9', handoverHook: 'ip route replace 10.0.0.9 via 10.0.0.2' });
    expect(parseConfig({ ...up, 'proxy-listen': '10.0.0.9:80', 'tcp-handover': 'true', 'virtual-address': '10.0.0.9' }, {}).tcpHandover).toBe(true);
    expect(failure({ ...any, 'tcp-handover': 'true' })).toMatch(/needs --virtual-address/);
    expect(failure({ 'tcp-handover': 'true', 'virtual-address': '10.0.0.9' })).toMatch(/set --proxy-listen/);
    expect(failure({ ...any, 'tcp-handover': 'true', 'virtual-address': '10.0.0.9', 'tls-self-signed': 'true' })).toMatch(/plain-HTTP connections only/);
    expect(failure({ ...any, 'virtual-address': '10.0.0.9' })).toMatch(/belong to --tcp-handover/);
    expect(failure({ ...any, 'tcp-handover': 'true', 'virtual-address': 'shop.test' })).toMatch(/invalid --virtual-address/);
    expect(failure({ ...up, 'proxy-listen': '10.0.0.8:80', 'tcp-handover': 'true', 'virtual-address': '10.0.0.9' })).toMatch(/does not accept --virtual-address/);
    expect(failure({ ...any, 'tcp-handover': 'true', 'virtual-address': '10.0.0.9', 'handover-hook-timeout-ms': '5' })).toMatch(/invalid --handover-hook-timeout-ms/);
  });
});

describe('--tcp-capture-interval-ms', () => {
  const up = { ...proxy, 'proxy-upstream': 'http://x:1' };

  test('defaults to once a second; 0 turns capture off; 10 ms is the shortest interval', () => {
    expect(parseConfig(up, {}).tcpCaptureIntervalMs).toBe(1000);
    expect(parseConfig({ ...up, 'tcp-capture-interval-ms': '0' }, {}).tcpCaptureIntervalMs).toBe(0);
    expect(parseConfig({ ...up, 'tcp-capture-interval-ms': '10' }, {}).tcpCaptureIntervalMs).toBe(10);
  });

  test('an interval of 1–9 ms, a negative or a non-number is a configuration error naming the flag', () => {
    expect(failure({ ...up, 'tcp-capture-interval-ms': '5' })).toMatch(/invalid --tcp-capture-interval-ms.*0 \(off\) or 10/);
    expect(failure({ ...up, 'tcp-capture-interval-ms': '-1' })).toMatch(/invalid --tcp-capture-interval-ms/);
    expect(failure({ ...up, 'tcp-capture-interval-ms': 'often' })).toMatch(/invalid --tcp-capture-interval-ms/);
  });
});
