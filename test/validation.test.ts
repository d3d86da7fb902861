import { InvalidArgumentError } from '../src/wire/errors';
import { AuthState, CartState, TcpConnectionState, TcpState, TlsSessionState } from '../src/gen/baton/v1/parts';
import {
  checkPartName,
  checkPartNames,
  checkPartWrites,
  checkSessionId,
  checkTtlSeconds,
  MAX_SESSION_ID_BYTES,
  MAX_TTL_SECONDS,
  RequestLimits,
} from '../src/wire/validation';
import { checkWellKnownPart, isWellKnownPart, WELL_KNOWN_PARTS, WellKnownPartName } from '../src/wire/well-known-parts';

const LIMITS: RequestLimits = { maxValueBytes: 1000, maxPartsPerSession: 8 };

/** Runs fn and returns the InvalidArgumentError it throws (failing the test otherwise). */
function invalid(fn: () => void): InvalidArgumentError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect((err as InvalidArgumentError).code).toBe('invalid_argument');
    return err as InvalidArgumentError;
  }
  throw new Error('expected an InvalidArgumentError, but nothing was thrown');
}

function bytes(...values: number[]): Uint8Array {
  return Uint8Array.from(values);
}

function concat(...parts: Uint8Array[]): Uint8Array {
  return Uint8Array.from(Buffer.concat(parts));
}

const VALID_ENCODINGS: Record<WellKnownPartName, Uint8Array> = {
  tls: TlsSessionState.encode(
    TlsSessionState.fromPartial({
      sessionId: Buffer.from('0123456789abcdef0123456789abcdef', 'hex'),
      sessionData: Buffer.alloc(120, 0xab),
      protocol: 'TLSv1.3',
      cipher: 'TLS_AES_128_GCM_SHA256',
      serverName: 'shop.example.com',
      createdAtUnixMs: 1_700_000_000_000n,
      lifetimeSeconds: 7200,
      alpnProtocol: 'h2',
    }),
  ).finish(),
  auth: AuthState.encode(
    AuthState.fromPartial({
      token: 'eyJhbGciOiJIUzI1NiJ9.payload.signature',
      tokenType: 'Bearer',
      subject: 'user-42',
      scopes: ['read', 'write'],
      expiresAtUnixMs: 1_700_000_360_000n,
      claims: { role: 'admin', tenant: 'acme' },
      refreshToken: 'refresh-me',
      issuedAtUnixMs: 1_700_000_000_000n,
    }),
  ).finish(),
  cart: CartState.encode(
    CartState.fromPartial({
      items: [
        { sku: 'SKU-1', name: 'Kaffee', quantity: 2, unitPriceMinor: 499n },
        { sku: 'SKU-2', name: 'Tee', quantity: 1, unitPriceMinor: -100n },
      ],
      currency: 'EUR',
      billingAddress: { name: 'Jürgen', line1: 'Hauptstr. 1', city: 'Köln', postalCode: '50667', country: 'DE' },
      paymentReference: 'pay-123',
      updatedAtUnixMs: 1_700_000_000_000n,
    }),
  ).finish(),
  tcp: TcpConnectionState.encode(
    TcpConnectionState.fromPartial({
      localAddress: '10.0.0.1',
      localPort: 443,
      remoteAddress: '192.0.2.7',
      remotePort: 51_234,
      sendNext: 0xfffffff0,
      sendUnacknowledged: 0xffffff00,
      receiveNext: 12_345,
      sendWindow: 65_535,
      receiveWindow: 29_200,
      sendWindowScale: 7,
      receiveWindowScale: 7,
      mss: 1460,
      timestampValue: 1,
      timestampEchoReply: 2,
      sackPermitted: true,
      rtoMs: 200,
      state: TcpState.TCP_STATE_ESTABLISHED,
      capturedAtUnixMs: 1_700_000_000_000n,
      timestampsEnabled: true,
    }),
  ).finish(),
};

const NAMES = Object.keys(WELL_KNOWN_PARTS) as WellKnownPartName[];

describe('checkSessionId', () => {
  test('accepts ordinary ids', () => {
    for (const id of ['a', 'sess-123', 'Sitzung-Größe-日本-😀', '0123456789abcdef', ' spaced id ', '\u00a0nbsp']) {
      expect(() => checkSessionId(id)).not.toThrow();
    }
  });

  test('refuses the empty id', () => {
    expect(invalid(() => checkSessionId('')).message).toMatch(/session_id is empty/);
  });

  test('allows 512 bytes and refuses 513, counting UTF-8 bytes', () => {
    expect(MAX_SESSION_ID_BYTES).toBe(512);
    const accepted = ['a'.repeat(512), 'é'.repeat(256), '€'.repeat(170) + 'ab', '😀'.repeat(128)];
    const refused = ['a'.repeat(513), 'é'.repeat(256) + 'a', '€'.repeat(170) + 'abc', '😀'.repeat(128) + 'x', 'é'.repeat(300)];
    for (const id of accepted) {
      expect(Buffer.byteLength(id)).toBe(512);
      expect(() => checkSessionId(id)).not.toThrow();
    }
    for (const id of refused) {
      expect(Buffer.byteLength(id)).toBeGreaterThan(512);
      expect(invalid(() => checkSessionId(id)).message).toMatch(/longer than 512 bytes/);
    }
  });

  test('refuses C0 controls, DEL and C1 controls anywhere in the id', () => {
    for (const c of ['\x00', '\x01', '\t', '\n', '\x1f', '\x7f', '\x80', '\x85', '\x9f']) {
      for (const id of [c, `sess${c}`, `${c}sess`, `se${c}ss`]) {
        expect(invalid(() => checkSessionId(id)).message).toMatch(/control character/);
      }
    }
    // Neighbours of the control ranges are fine.
    for (const c of ['\x20', '\x7e', '\xa0', '\xff']) expect(() => checkSessionId(`sess${c}`)).not.toThrow();
  });

  test('error messages do not echo the id', () => {
    const id = 'secret-token\x00';
    expect(invalid(() => checkSessionId(id)).message).not.toContain('secret-token');
  });
});

describe('checkPartName', () => {
  test('accepts 1 to 64 characters from a-z, 0-9, _ . -', () => {
    for (const name of ['a', '0', 'auth', 'tls', 'my_part.v2-x', '_', '.', '-', 'a'.repeat(64), 'z9_.-'.repeat(12)]) {
      expect(() => checkPartName(name)).not.toThrow();
    }
  });

  test('refuses empty, too long and names with other characters', () => {
    const refused = ['', 'a'.repeat(65), 'Auth', 'A', 'has space', 'a/b', 'a:b', 'ü', 'part\n', '\npart', 'a+b', 'naïve', 'tab\t'];
    for (const name of refused) {
      expect(invalid(() => checkPartName(name)).message).toMatch(/is invalid: use 1 to 64 characters/);
    }
  });
});

describe('checkPartNames', () => {
  test('accepts distinct valid names, and none', () => {
    expect(() => checkPartNames([], LIMITS)).not.toThrow();
    expect(() => checkPartNames(['a', 'b', 'auth'], LIMITS)).not.toThrow();
  });

  test('refuses duplicates, invalid names and more names than a session may hold', () => {
    expect(invalid(() => checkPartNames(['a', 'b', 'a'], LIMITS)).message).toMatch(/part 'a' is named twice/);
    expect(invalid(() => checkPartNames(['ok', 'Not-OK'], LIMITS)).message).toMatch(/invalid/);
    const nine = Array.from({ length: 9 }, (_, i) => `p${i}`);
    expect(() => checkPartNames(nine.slice(0, 8), LIMITS)).not.toThrow();
    expect(invalid(() => checkPartNames(nine, LIMITS)).message).toMatch(/at most 8/);
  });
});

describe('checkTtlSeconds', () => {
  test('allows up to 30 days and refuses more, naming the field', () => {
    expect(MAX_TTL_SECONDS).toBe(2_592_000);
    for (const ttl of [0, 1, 3600, MAX_TTL_SECONDS]) expect(() => checkTtlSeconds(ttl)).not.toThrow();
    expect(invalid(() => checkTtlSeconds(MAX_TTL_SECONDS + 1)).message).toMatch(/ttl_seconds 2592001 is over the limit/);
    expect(invalid(() => checkTtlSeconds(10 * MAX_TTL_SECONDS, 'default_ttl')).message).toMatch(/^default_ttl /);
  });
});

describe('checkPartWrites', () => {
  const part = (name: string, size = 3) => ({ name, value: new Uint8Array(size).fill(1) });

  test('accepts a valid Put', () => {
    expect(() => checkPartWrites([part('a'), part('b'), part('x.y_z-1', 0)], LIMITS)).not.toThrow();
  });

  test('refuses a Put without parts', () => {
    expect(invalid(() => checkPartWrites([], LIMITS)).message).toMatch(/at least one part/);
  });

  test('allows a value of exactly the limit and refuses one byte more', () => {
    expect(() => checkPartWrites([part('big', 1000)], LIMITS)).not.toThrow();
    const err = invalid(() => checkPartWrites([part('big', 1001)], LIMITS));
    expect(err.message).toMatch(/part 'big' is 1001 bytes, over the limit of 1000 bytes/);
  });

  test('refuses duplicate names, invalid names and too many parts', () => {
    expect(invalid(() => checkPartWrites([part('a'), part('b'), part('a')], LIMITS)).message).toMatch(/named twice/);
    expect(invalid(() => checkPartWrites([part('Bad Name')], LIMITS)).message).toMatch(/invalid/);
    const nine = Array.from({ length: 9 }, (_, i) => part(`p${i}`));
    expect(() => checkPartWrites(nine.slice(0, 8), LIMITS)).not.toThrow();
    expect(invalid(() => checkPartWrites(nine, LIMITS)).message).toMatch(/over the limit of 8 parts/);
  });

  test('checks well-known parts and leaves other names opaque', () => {
    const garbage = new Uint8Array(20).fill(0xff);
    expect(() => checkPartWrites([{ name: 'tls', value: VALID_ENCODINGS.tls }], LIMITS)).not.toThrow();
    expect(invalid(() => checkPartWrites([{ name: 'tls', value: garbage }], LIMITS)).message).toMatch(
      /^part 'tls' is not a valid baton\.v1\.TlsSessionState: /,
    );
    // Names that merely resemble well-known ones are opaque.
    for (const name of ['tls2', 'auth.v2', 'cart_', 'x-tcp', 'opaque', 'constructor', 'tostring']) {
      expect(isWellKnownPart(name)).toBe(false);
      expect(() => checkPartWrites([{ name, value: garbage }], LIMITS)).not.toThrow();
    }
  });
});

describe('well-known parts', () => {
  test('the four typed parts and their message types', () => {
    expect(NAMES.sort()).toEqual(['auth', 'cart', 'tcp', 'tls']);
    expect(WELL_KNOWN_PARTS.tls.typeName).toBe('baton.v1.TlsSessionState');
    expect(WELL_KNOWN_PARTS.auth.typeName).toBe('baton.v1.AuthState');
    expect(WELL_KNOWN_PARTS.cart.typeName).toBe('baton.v1.CartState');
    expect(WELL_KNOWN_PARTS.tcp.typeName).toBe('baton.v1.TcpConnectionState');
  });

  test.each(NAMES)('a valid %s encoding passes, as does the empty message', (name) => {
    expect(VALID_ENCODINGS[name].length).toBeGreaterThan(10);
    expect(checkWellKnownPart(name, VALID_ENCODINGS[name])).toBeUndefined();
    expect(checkWellKnownPart(name, new Uint8Array(0))).toBeUndefined();
    expect(() => checkPartWrites([{ name, value: VALID_ENCODINGS[name] }], { ...LIMITS, maxValueBytes: 4096 })).not.toThrow();
  });

  test.each(NAMES)('a valid %s encoding plus unknown fields passes', (name) => {
    const unknown = [
      bytes(0x98, 0x06, 0x01), // field 99, varint 1
      bytes(0xa2, 0x06, 0x03, 0x61, 0x62, 0x63), // field 100, length-delimited "abc"
      bytes(0xad, 0x06, 1, 2, 3, 4), // field 101, fixed32
      bytes(0xb1, 0x06, 1, 2, 3, 4, 5, 6, 7, 8), // field 102, fixed64
    ];
    for (const extra of unknown) {
      expect(checkWellKnownPart(name, concat(VALID_ENCODINGS[name], extra))).toBeUndefined();
      expect(checkWellKnownPart(name, concat(extra, VALID_ENCODINGS[name]))).toBeUndefined();
    }
  });

  const MALFORMED: [string, Uint8Array][] = [
    ['0xff repeated', new Uint8Array(20).fill(0xff)],
    ['0xff repeated, short', bytes(0xff, 0xff, 0xff)],
    ['a length prefix past the end', bytes(0x0a, 0x10, 0x01, 0x02)],
    ['a huge length prefix', bytes(0x0a, 0xff, 0xff, 0xff, 0xff, 0x07, 0x01)],
    ['a truncated varint', bytes(0x08, 0x80)],
    ['a varint longer than 10 bytes', bytes(0x08, ...new Array<number>(11).fill(0x80), 0x01)],
    ['a truncated fixed64', bytes(0x09, 1, 2, 3)],
    ['a truncated fixed32', bytes(0x0d, 1, 2)],
    ['wire type 3 (start group)', bytes(0x0b, 0x0c)],
    ['wire type 4 (end group)', bytes(0x0c)],
    ['wire type 6', bytes(0x0e, 0x00)],
    ['wire type 7', bytes(0x0f, 0x00)],
    ['field number 0', bytes(0x02, 0x00)],
    ['a tag cut short', bytes(0x80)],
  ];

  test.each(NAMES)('malformed %s bytes are refused with an error naming the part and its type', (name) => {
    const typeName = WELL_KNOWN_PARTS[name].typeName;
    const cases: [string, Uint8Array][] = [
      ...MALFORMED,
      ['a valid encoding cut short by one byte', VALID_ENCODINGS[name].subarray(0, VALID_ENCODINGS[name].length - 1)],
      ['a valid encoding followed by 0xff', concat(VALID_ENCODINGS[name], bytes(0xff))],
      ['a valid encoding followed by a dangling length', concat(VALID_ENCODINGS[name], bytes(0x12, 0x05, 0x61))],
    ];
    for (const [label, value] of cases) {
      const problem = checkWellKnownPart(name, value);
      if (problem === undefined) throw new Error(`${name}: ${label} was accepted`);
      expect(typeof problem).toBe('string');
      const err = invalid(() => checkPartWrites([{ name, value }], LIMITS));
      expect(err.message.startsWith(`part '${name}' is not a valid ${typeName}: `)).toBe(true);
      expect(err.message.length).toBeGreaterThan(`part '${name}' is not a valid ${typeName}: `.length);
    }
  });

  test('every truncation of a valid cart that cuts a field in half is refused', () => {
    // Field boundaries of the top-level message: cutting exactly there leaves a valid prefix.
    const full = VALID_ENCODINGS.cart;
    const boundaries = new Set<number>([0]);
    let pos = 0;
    while (pos < full.length) {
      const tag = full[pos]!;
      pos++;
      if ((tag & 7) === 2) {
        let len = 0;
        let shift = 0;
        for (;;) {
          const b = full[pos++]!;
          len |= (b & 0x7f) << shift;
          shift += 7;
          if ((b & 0x80) === 0) break;
        }
        pos += len;
      } else {
        while (full[pos++]! & 0x80);
      }
      boundaries.add(pos);
    }
    expect(boundaries.has(full.length)).toBe(true);
    for (let cut = 0; cut <= full.length; cut++) {
      const problem = checkWellKnownPart('cart', full.subarray(0, cut));
      if (boundaries.has(cut)) expect(problem).toBeUndefined();
      else if (problem === undefined) throw new Error(`cart cut at ${cut} of ${full.length} was accepted`);
    }
  });

  test('opaque part names accept any bytes', () => {
    const values = [new Uint8Array(0), new Uint8Array(50).fill(0xff), bytes(0x0b), bytes(0x0a, 0x10), VALID_ENCODINGS.tls];
    for (const value of values) {
      expect(() => checkPartWrites([{ name: 'blob', value }], LIMITS)).not.toThrow();
      // A typed part's bytes under another name are opaque too.
      expect(() => checkPartWrites([{ name: 'tls.backup', value }], LIMITS)).not.toThrow();
    }
  });

  // Both inputs below are CartStates whose first item (field 1, 5 resp. 2 bytes long) is
  // malformed inside: the nested message must be walked within its own byte range, not
  // read on into the bytes that follow it.
  test('a nested message that runs past its own end is refused', () => {
    // items[0] = 0a 05 61 62 63: sku claims 5 bytes, but only 3 are left in the item.
    const stringPastItemEnd = bytes(0x0a, 0x05, 0x0a, 0x05, 0x61, 0x62, 0x63, 0x10, 0x01);
    // items[0] = 08 80: a varint whose continuation byte lies outside the item.
    const varintPastItemEnd = bytes(0x0a, 0x02, 0x08, 0x80, 0x12, 0x00);
    expect(checkWellKnownPart('cart', stringPastItemEnd)).toEqual(expect.any(String));
    expect(checkWellKnownPart('cart', varintPastItemEnd)).toEqual(expect.any(String));
  });

  // proto3 `string` fields must hold valid UTF-8 (protoc-generated parsers for Go, C++ and
  // Java refuse the message otherwise), so peers in other languages could not read it.
  test('a string field that is not valid UTF-8 is refused', () => {
    expect(checkWellKnownPart('auth', bytes(0x0a, 0x02, 0xc3, 0x28))).toEqual(expect.any(String));
  });
});
