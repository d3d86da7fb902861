/**
 * Peer TLS certificates: roots derived from cluster keys are deterministic and distinct per
 * key, leaves chain to their root only, OpenSSL (through node:tls) accepts the chain both
 * ways and refuses another cluster's, and file-based material is checked at start.
 */
import { randomBytes, X509Certificate } from 'node:crypto';
import * as tls from 'node:tls';
import { type ClusterKey, parseClusterKeys } from '../src/wire/cluster-key';
import { ConfigError } from '../src/wire/errors';
import { derivedRoot, type PeerTlsMaterial, peerTlsFromKeys, peerTlsFromPem, parseCertificates } from '../src/wire/peer-tls';
import { issueTestLeaf, makeTestCa } from './support/test-ca';

function newKey(): ClusterKey {
  return parseClusterKeys(randomBytes(32).toString('base64'))[0]!;
}

/** Whether a mutual TLS handshake between a server and a client with this material succeeds. */
function handshake(server: PeerTlsMaterial, client: PeerTlsMaterial): Promise<{ ok: boolean; serverSawClient?: string }> {
  return new Promise((resolve) => {
    let serverSawClient: string | undefined;
    const listener = tls.createServer({ ca: server.rootsPem, cert: server.certPem, key: server.keyPem, requestCert: true, rejectUnauthorized: true }, (socket) => {
      serverSawClient = String(socket.getPeerCertificate().subject?.CN);
      socket.end('ok');
    });
    listener.on('tlsClientError', () => {});
    listener.listen(0, '127.0.0.1', () => {
      const port = (listener.address() as { port: number }).port;
      const socket = tls.connect({
        host: '127.0.0.1',
        port,
        servername: 'baton-peer',
        ca: client.rootsPem,
        cert: client.certPem,
        key: client.keyPem,
        checkServerIdentity: () => undefined,
      });
      const done = (ok: boolean) => {
        socket.destroy();
        listener.close();
        resolve({ ok, serverSawClient });
      };
      // The server's verdict on the client certificate arrives after the client's handshake
      // ends (TLS 1.3): wait for the server's first bytes, or an error.
      socket.on('data', (data) => done(data.toString() === 'ok'));
      socket.on('error', () => done(false));
      socket.on('end', () => done(false));
    });
  });
}

describe('roots derived from cluster keys', () => {
  test('the same key gives the same root certificate; another key another root', () => {
    const key = newKey();
    const again = parseClusterKeys(key.key.toString('base64'))[0]!;
    expect(derivedRoot(key).certPem).toBe(derivedRoot(again).certPem);
    const other = derivedRoot(newKey());
    expect(other.certPem).not.toBe(derivedRoot(key).certPem);
    // Distinct subject names too, so OpenSSL can tell the roots of a rotation apart.
    expect(new X509Certificate(other.certDer).subject).not.toBe(new X509Certificate(derivedRoot(key).certDer).subject);
  });

  test('the root is a CA; a leaf is not, chains to its root only, and serves both ends of a connection', () => {
    const key = newKey();
    const root = new X509Certificate(derivedRoot(key).certDer);
    const material = peerTlsFromKeys([key], 'node-a', Date.now());
    const leaf = new X509Certificate(material.certPem);
    expect(root.ca).toBe(true);
    expect(leaf.ca).toBe(false);
    expect(leaf.subject).toContain('CN=baton node node-a');
    expect(leaf.checkIssued(root)).toBe(true);
    expect(leaf.verify(root.publicKey)).toBe(true);
    expect(leaf.keyUsage).toEqual(expect.arrayContaining(['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']));
    const stranger = new X509Certificate(derivedRoot(newKey()).certDer);
    expect(leaf.verify(stranger.publicKey)).toBe(false);
  });

  test('each start makes a new leaf key', () => {
    const key = newKey();
    const first = peerTlsFromKeys([key], 'node-a', Date.now());
    const second = peerTlsFromKeys([key], 'node-a', Date.now());
    expect(new X509Certificate(first.certPem).publicKey.export({ type: 'spki', format: 'der' })).not.toEqual(
      new X509Certificate(second.certPem).publicKey.export({ type: 'spki', format: 'der' }),
    );
    expect(first.rootsPem).toBe(second.rootsPem);
  });

  test('with two keys both roots are trusted and the first key issues', () => {
    const [k1, k2] = [newKey(), newKey()];
    const material = peerTlsFromKeys([k2, k1], 'node-a', Date.now());
    expect(material.rootsPem).toBe(derivedRoot(k2).certPem + derivedRoot(k1).certPem);
    expect(new X509Certificate(material.certPem).verify(new X509Certificate(derivedRoot(k2).certDer).publicKey)).toBe(true);
  });

  test('the private key is left out of logs and JSON', () => {
    const material = peerTlsFromKeys([newKey()], 'node-a', Date.now());
    expect(material.keyPem).toContain('PRIVATE KEY');
    expect(JSON.stringify(material)).not.toContain('PRIVATE KEY');
    expect(Object.keys(material)).not.toContain('keyPem');
  });
});

describe('handshakes (node:tls, OpenSSL)', () => {
  test('two nodes with the same key complete a mutual handshake', async () => {
    const key = newKey();
    const result = await handshake(peerTlsFromKeys([key], 'server', Date.now()), peerTlsFromKeys([key], 'client', Date.now()));
    expect(result).toEqual({ ok: true, serverSawClient: 'baton node client' });
  });

  test('a node with another key is refused, as server and as client', async () => {
    const ours = peerTlsFromKeys([newKey()], 'server', Date.now());
    const theirs = peerTlsFromKeys([newKey()], 'client', Date.now());
    expect((await handshake(ours, theirs)).ok).toBe(false);
    expect((await handshake(theirs, ours)).ok).toBe(false);
  });

  test('a client that trusts the root but has no certificate is refused', async () => {
    const key = newKey();
    const server = peerTlsFromKeys([key], 'server', Date.now());
    const rootOnly = { rootsPem: server.rootsPem, certPem: undefined, keyPem: undefined, source: 'cluster key' } as unknown as PeerTlsMaterial;
    const result = await handshake(server, rootOnly);
    expect(result.ok).toBe(false);
    expect(result.serverSawClient).toBeUndefined();
  });

  test('every step of a key rotation keeps nodes talking both ways', async () => {
    const [oldKey, newer] = [newKey(), newKey()];
    // Add the new key second everywhere, move it first everywhere, drop the old one: at every
    // step nodes still on the previous list talk with those already on the next.
    const steps = [[oldKey], [oldKey, newer], [newer, oldKey], [newer]];
    for (let i = 0; i + 1 < steps.length; i++) {
      const before = peerTlsFromKeys(steps[i]!, 'before', Date.now());
      const after = peerTlsFromKeys(steps[i + 1]!, 'after', Date.now());
      expect([i, (await handshake(before, after)).ok, (await handshake(after, before)).ok]).toEqual([i, true, true]);
    }
    // Skipping a step breaks: a node with only the old key and one with only the new.
    expect((await handshake(peerTlsFromKeys([oldKey], 'a', Date.now()), peerTlsFromKeys([newer], 'b', Date.now()))).ok).toBe(false);
  });
});

describe('peer TLS from files', () => {
  const names = { ca: '--peer-tls-ca-file ca.crt', cert: '--peer-tls-cert-file tls.crt', key: '--peer-tls-key-file tls.key' };
  const ca = makeTestCa();
  const leaf = issueTestLeaf(ca, 'node-a');

  test('a CA, a certificate it issued and its key are accepted and complete handshakes', async () => {
    const server = peerTlsFromPem(ca.certPem, leaf.certPem, leaf.keyPem, names, Date.now());
    expect(server.source).toBe('files');
    const other = issueTestLeaf(ca, 'node-b');
    const client = peerTlsFromPem(ca.certPem, other.certPem, other.keyPem, names, Date.now());
    expect((await handshake(server, client)).ok).toBe(true);
    const stranger = makeTestCa('another CA');
    const outsider = issueTestLeaf(stranger, 'node-x');
    expect((await handshake(server, peerTlsFromPem(stranger.certPem, outsider.certPem, outsider.keyPem, names, Date.now()))).ok).toBe(false);
  });

  test('errors name the file to fix', () => {
    const expectError = (f: () => unknown, pattern: RegExp) => {
      expect(f).toThrow(ConfigError);
      expect(f).toThrow(pattern);
    };
    const other = issueTestLeaf(ca, 'node-b');
    expectError(() => peerTlsFromPem('not a certificate', leaf.certPem, leaf.keyPem, names, Date.now()), /--peer-tls-ca-file ca\.crt holds no PEM certificate/);
    expectError(() => peerTlsFromPem(ca.certPem, leaf.certPem, 'garbage', names, Date.now()), /--peer-tls-key-file tls\.key holds no usable private key/);
    expectError(() => peerTlsFromPem(ca.certPem, leaf.certPem, other.keyPem, names, Date.now()), /--peer-tls-key-file tls\.key is not the private key of the certificate in --peer-tls-cert-file/);
    const foreign = issueTestLeaf(makeTestCa('another CA'), 'node-x');
    expectError(() => peerTlsFromPem(ca.certPem, foreign.certPem, foreign.keyPem, names, Date.now()), /--peer-tls-cert-file tls\.crt: the certificate does not chain to a certificate of --peer-tls-ca-file/);
    const expired = issueTestLeaf(ca, 'node-old', Date.now() - 1000);
    expectError(() => peerTlsFromPem(ca.certPem, expired.certPem, expired.keyPem, names, Date.now()), /--peer-tls-cert-file tls\.crt: certificate .* is valid only from/);
    const broken = ca.certPem.replace(/\n[A-Za-z0-9+/]{10}/, '\nAAAAAAAAAA');
    expectError(() => parseCertificates(broken, 'ca.crt'), /ca\.crt: certificate 1 does not parse/);
  });
});
