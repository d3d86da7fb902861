/**
 * attachTlsResumption and its hooks into Node's TLS internals, on in-process servers on
 * loopback with a source held in memory: which keys issue and which are accepted (a ticket
 * under an older accepted key is renewed under the issue key), the session id context
 * taking effect, TLS 1.2 session IDs through the source with tickets off, a
 * setSecureContext that keeps the hooks, and a source that fails costing only a full
 * handshake.
 */
import { constants, randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import * as tls from 'node:tls';
import { installTicketKeys, setSessionIdContext, type TicketKeyRing } from '../src/capture/secure-context-hooks';
import { sslSessionVersion, TLS1_3_VERSION } from '../src/capture/tls-capture';
import { attachTlsResumption } from '../src/capture/tls-resumption';
import type { TlsResumptionSettings, TlsResumptionSource } from '../src/capture/tls-resumption-source';
import { issueTestLeaf, makeTestCa } from './support/test-ca';

const ca = makeTestCa('hooks test CA');
const leaf = issueTestLeaf(ca, 'localhost');
const servers: tls.Server[] = [];

afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise((resolve) => s.close(resolve))));
});

async function listen(options: tls.TlsOptions = {}): Promise<tls.Server> {
  const server = tls.createServer({ key: leaf.keyPem, cert: leaf.certPem, ...options }, (socket) => socket.end('hello'));
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

const port = (server: tls.Server) => (server.address() as AddressInfo).port;

/** Connects, reads the answer and returns whether the session was reused and the last session the server handed out. */
function connect(server: tls.Server, version: tls.SecureVersion, session?: Buffer): Promise<{ reused: boolean; session: Buffer | undefined }> {
  return new Promise((resolve, reject) => {
    let latest: Buffer | undefined;
    let reused = false;
    const socket = tls.connect({ host: '127.0.0.1', port: port(server), ca: ca.certPem, servername: 'localhost', minVersion: version, maxVersion: version, session });
    socket.on('secureConnect', () => (reused = socket.isSessionReused()));
    socket.on('session', (s: Buffer) => (latest = s));
    // TLS 1.2 announces no new session when a resumption renews the ticket: read the
    // session the connection holds once the answer arrives.
    let held: Buffer | undefined;
    socket.on('data', () => (held = socket.getSession()));
    socket.on('error', reject);
    socket.on('close', () => resolve({ reused, session: latest ?? held }));
  });
}

const key = () => randomBytes(48);

describe('secure context hooks', () => {
  test.each(['TLSv1.3', 'TLSv1.2'] as const)('%s: a ticket under an accepted older key resumes and is renewed under the issue key; a server that does not accept the key refuses it', async (version) => {
    const [k1, k2] = [key(), key()];
    const a = await listen();
    const b = await listen();
    const onlyK2 = await listen();
    const rings: [tls.Server, TicketKeyRing][] = [
      [a, { issue: k1, accept: [k1] }],
      [b, { issue: k2, accept: [k1, k2] }],
      [onlyK2, { issue: k2, accept: [k2] }],
    ];
    for (const [server, ring] of rings) expect(installTicketKeys(server, () => ring)).toBe(true);

    const first = await connect(a, version);
    expect(first.reused).toBe(false);
    expect((await connect(onlyK2, version, first.session)).reused).toBe(false);
    const onB = await connect(b, version, first.session);
    expect(onB.reused).toBe(true);
    // B renewed the ticket under k2, which the k2-only server accepts.
    expect(onB.session).toBeDefined();
    expect((await connect(onlyK2, version, onB.session)).reused).toBe(true);
  });

  test('servers with the same keys but different session id contexts refuse each other, with the same one they resume', async () => {
    const k = key();
    const a = await listen();
    const same = await listen();
    const different = await listen();
    for (const s of [a, same, different]) installTicketKeys(s, () => ({ issue: k, accept: [k] }));
    expect(setSessionIdContext(a, 'a'.repeat(32))).toBe(true);
    setSessionIdContext(same, 'a'.repeat(32));
    setSessionIdContext(different, 'b'.repeat(32));
    const first = await connect(a, 'TLSv1.3');
    expect((await connect(different, 'TLSv1.3', first.session)).reused).toBe(false);
    expect((await connect(same, 'TLSv1.3', first.session)).reused).toBe(true);
  });

  test('an object that is not a TLS server is refused with a clear error', () => {
    expect(() => attachTlsResumption({} as tls.Server, new MemorySource(settings([key()])))).toThrow(/not a TLS server/);
  });
});

function settings(keys: Buffer[]): TlsResumptionSettings {
  return { issueKey: keys[keys.length - 1]!, acceptKeys: keys, sessionIdContext: 'c'.repeat(32), sessionLifetimeSeconds: 300, clusterWide: true };
}

/** A source held in memory: settings pushed by the test, TLS sessions in a map. */
class MemorySource implements TlsResumptionSource {
  readonly sessions = new Map<string, Buffer>();
  loads = 0;
  private readonly listeners = new Set<(s: TlsResumptionSettings) => void>();
  failLoads = false;

  constructor(private current: TlsResumptionSettings) {}

  push(next: TlsResumptionSettings): void {
    this.current = next;
    for (const l of this.listeners) l(next);
  }

  watchTlsResumption(onSettings: (s: TlsResumptionSettings) => void): () => void {
    this.listeners.add(onSettings);
    queueMicrotask(() => onSettings(this.current));
    return () => this.listeners.delete(onSettings);
  }

  async saveTlsSession(id: Buffer, data: Buffer): Promise<void> {
    this.sessions.set(id.toString('hex'), data);
  }

  async loadTlsSession(id: Buffer): Promise<Buffer | undefined> {
    this.loads++;
    if (this.failLoads) throw new Error('the sidecar is away');
    return this.sessions.get(id.toString('hex'));
  }
}

describe('attachTlsResumption', () => {
  test('TLS 1.2 session IDs with tickets off resume across servers through the source; a failing source costs a full handshake', async () => {
    const source = new MemorySource(settings([key()]));
    const noTickets = { secureOptions: constants.SSL_OP_NO_TICKET };
    const a = await listen(noTickets);
    const b = await listen(noTickets);
    const errors: Error[] = [];
    await Promise.all([a, b].map((s) => attachTlsResumption(s, source, { onError: (e) => errors.push(e) }).ready()));
    const first = await connect(a, 'TLSv1.2');
    expect(first.reused).toBe(false);
    await new Promise((resolve) => setImmediate(resolve));
    expect(source.sessions.size).toBe(1);
    expect((await connect(b, 'TLSv1.2', first.session)).reused).toBe(true);

    source.failLoads = true;
    expect((await connect(b, 'TLSv1.2', first.session)).reused).toBe(false);
    expect(errors.map((e) => e.message)).toContain('the sidecar is away');
  });

  test('TLS 1.3 sessions (one per ticket) are not stored, TLS 1.2 ones are; the session id hooks still run for both', async () => {
    const source = new MemorySource(settings([key()]));
    const server = await listen();
    let announced = 0;
    server.on('newSession', () => announced++);
    await attachTlsResumption(server, source).ready();
    const tls13 = await connect(server, 'TLSv1.3');
    await new Promise((resolve) => setImmediate(resolve));
    expect(sslSessionVersion(tls13.session!)).toBe(TLS1_3_VERSION);
    expect(announced).toBeGreaterThan(0);
    expect(source.sessions.size).toBe(0);

    const noTickets = await listen({ secureOptions: constants.SSL_OP_NO_TICKET });
    await attachTlsResumption(noTickets, source).ready();
    const tls12 = await connect(noTickets, 'TLSv1.2');
    await new Promise((resolve) => setImmediate(resolve));
    expect(sslSessionVersion(tls12.session!)).toBe(0x0303);
    expect(source.sessions.size).toBe(1);
  });

  test('a server that cannot speak TLS 1.2 looks up no session id; one that can asks about the TLS 1.3 client’s random legacy id', async () => {
    const source = new MemorySource(settings([key()]));
    const only13 = await listen({ minVersion: 'TLSv1.3' });
    const both = await listen();
    await Promise.all([only13, both].map((s) => attachTlsResumption(s, source).ready()));
    expect((await connect(only13, 'TLSv1.3')).reused).toBe(false);
    expect(source.loads).toBe(0);
    expect((await connect(both, 'TLSv1.3')).reused).toBe(false);
    expect(source.loads).toBe(1);
  });

  test('follows a rotation, and keeps the hooks through setSecureContext', async () => {
    const [k1, k2] = [key(), key()];
    const source = new MemorySource(settings([k1]));
    const a = await listen();
    const b = await listen();
    const attached = [a, b].map((s) => attachTlsResumption(s, source, { sessionIds: false }));
    await Promise.all(attached.map((r) => r.ready()));
    const before = await connect(a, 'TLSv1.3');
    source.push(settings([k1, k2]));
    expect(Buffer.from(attached[1]!.settings()!.issueKey).equals(k2)).toBe(true);
    // A certificate rotation on B: a new native context, hooked again.
    b.setSecureContext({ key: leaf.keyPem, cert: leaf.certPem });
    const after = await connect(b, 'TLSv1.3', before.session);
    expect(after.reused).toBe(true);
    // Once k1 is no longer accepted, its tickets are refused; the renewed one (under k2) is not.
    source.push(settings([k2]));
    expect((await connect(b, 'TLSv1.3', before.session)).reused).toBe(false);
    expect((await connect(a, 'TLSv1.3', after.session)).reused).toBe(true);
    attached.forEach((r) => r.detach());
  });
});
