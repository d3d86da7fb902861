import { captureTls, encodeTls, readSslSession, sslSessionVersion, TLS1_3_VERSION } from '../src/capture/tls-capture';
import { TlsSessionState } from '../src/gen/baton/v1/parts';
import { checkWellKnownPart } from '../src/wire/well-known-parts';

// What Node 20's tls.TLSSocket#getSession() returned on a TLS 1.2 server (session id
// empty: tickets were on; time 0x6b145b55, timeout 7200 s), master key zeroed.
const TLS12_SESSION = Buffer.from(
  '3071020101020203030402c02f04000430' + '00'.repeat(48) + 'a10602046b145b55a20402021c20a4220420' + '11'.repeat(32),
  'hex',
);

function der(tag: number, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from([tag, body.length]), body]);
}

describe('TLS capture', () => {
  test('reads creation time and lifetime from the serialized session', () => {
    expect(readSslSession(TLS12_SESSION)).toEqual({ sessionId: Buffer.alloc(0), timeSeconds: 0x6b145b55, timeoutSeconds: 7200 });
  });

  test('reads the session id when the server issued one', () => {
    const id = Buffer.alloc(32, 0xab);
    const session = der(0x30, Buffer.concat([der(2, Buffer.from([1])), der(2, Buffer.from([3, 3])), der(4, Buffer.from([0xc0, 0x2f])), der(4, id), der(4, Buffer.alloc(48))]));
    expect(Buffer.from(readSslSession(session)!.sessionId)).toEqual(id);
  });

  test('reads the protocol version and nothing more', () => {
    expect(sslSessionVersion(TLS12_SESSION)).toBe(0x0303);
    const tls13 = der(0x30, Buffer.concat([der(2, Buffer.from([1])), der(2, Buffer.from([3, 4])), der(4, Buffer.from([0x13, 0x01]))]));
    expect(sslSessionVersion(tls13)).toBe(TLS1_3_VERSION);
    for (const bytes of [Buffer.alloc(0), Buffer.from([0x30]), Buffer.from('3003020101', 'hex'), Buffer.from('3006020101040103', 'hex'), TLS12_SESSION.subarray(0, 40)]) {
      expect(sslSessionVersion(bytes)).toBeUndefined();
    }
  });

  test('bytes that are not a session yield nothing, never an exception', () => {
    for (const bytes of [Buffer.alloc(0), Buffer.from([0x30]), Buffer.from([0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), Buffer.from('3003020101', 'hex'), TLS12_SESSION.subarray(0, 40)]) {
      expect(readSslSession(bytes)).toBeUndefined();
    }
  });

  test('the tls part records protocol, cipher, SNI, ALPN, id, times and resumption, and is a valid part', () => {
    const state = captureTls({
      protocol: 'TLSv1.2',
      cipher: 'ECDHE-RSA-AES128-GCM-SHA256',
      servername: 'shop.example',
      alpnProtocol: 'h2',
      session: TLS12_SESSION,
      resumed: true,
      handshakeAtUnixMs: 1,
    });
    expect(state).toMatchObject({
      protocol: 'TLSv1.2',
      cipher: 'ECDHE-RSA-AES128-GCM-SHA256',
      serverName: 'shop.example',
      alpnProtocol: 'h2',
      createdAtUnixMs: BigInt(0x6b145b55 * 1000),
      lifetimeSeconds: 7200,
      resumed: true,
    });
    expect(state.sessionData).toHaveLength(0);
    const bytes = encodeTls(state);
    expect(checkWellKnownPart('tls', bytes)).toBeUndefined();
    expect(TlsSessionState.decode(bytes)).toEqual(state);
  });

  test('without a readable session the handshake time stands in; no SNI or ALPN is empty text', () => {
    const state = captureTls({ protocol: null, cipher: 'X', servername: false, alpnProtocol: false, session: undefined, resumed: false, handshakeAtUnixMs: 42 });
    expect(state).toMatchObject({ protocol: '', serverName: '', alpnProtocol: '', createdAtUnixMs: 42n, lifetimeSeconds: 0, resumed: false });
  });
});
