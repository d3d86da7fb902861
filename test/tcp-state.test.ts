/**
 * The `tcp` part's pure side (src/capture/tcp-state.ts): struct tcp_info decoded from
 * hand-built buffers laid out as Linux 6.x writes them (and cut short as older kernels
 * answer), the sequence origins from repair-mode queue readings and from a saved SYN, and
 * the positions computed from them, wrapping mod 2^32.
 */
import { TcpState } from '../src/gen/baton/v1/parts';
import {
  decodeTcpInfo,
  needsOutq,
  originsFromQueues,
  receiveOriginFromSyn,
  sameTcpState,
  sequencePositions,
  tcpConnectionState,
  TCP_INFO_LENGTH,
  type TcpInfo,
} from '../src/capture/tcp-state';

interface InfoFields {
  state?: number;
  options?: number;
  sndWscale?: number;
  rcvWscale?: number;
  rto?: number;
  sndMss?: number;
  unacked?: number;
  bytesAcked?: bigint;
  bytesReceived?: bigint;
  notsent?: number;
  sndWnd?: number;
  rcvWnd?: number;
}

/** A struct tcp_info as the kernel writes it: every other byte is noise, so a misplaced read shows. */
function tcpInfoBytes(f: InfoFields, length = TCP_INFO_LENGTH): Buffer {
  const b = Buffer.alloc(TCP_INFO_LENGTH, 0xee);
  b.writeUInt8(f.state ?? 1, 0);
  b.writeUInt8(f.options ?? 7, 5);
  b.writeUInt8(((f.rcvWscale ?? 7) << 4) | (f.sndWscale ?? 9), 6);
  b.writeUInt32LE(f.rto ?? 204_000, 8);
  b.writeUInt32LE(f.sndMss ?? 32_768, 16);
  b.writeUInt32LE(f.unacked ?? 0, 24);
  b.writeBigUInt64LE(f.bytesAcked ?? 0n, 120);
  b.writeBigUInt64LE(f.bytesReceived ?? 0n, 128);
  b.writeUInt32LE(f.notsent ?? 0, 144);
  b.writeUInt32LE(f.sndWnd ?? 65_536, 228);
  b.writeUInt32LE(f.rcvWnd ?? 65_483, 232);
  return b.subarray(0, length);
}

const endpoints = { localAddress: '10.0.0.1', localPort: 8443, remoteAddress: '10.0.0.2', remotePort: 50_123 };

describe('decodeTcpInfo', () => {
  test('reads the 6.x layout: state, options, both window scales from one byte, RTO, MSS, counters, windows', () => {
    const info = decodeTcpInfo(
      tcpInfoBytes({ state: 8, options: 3, sndWscale: 10, rcvWscale: 7, rto: 201_000, sndMss: 1448, unacked: 3, bytesAcked: 0x1_0000_0005n, bytesReceived: 77n, notsent: 12, sndWnd: 123_456, rcvWnd: 654_321 }),
    );
    expect(info).toEqual<TcpInfo>({
      state: 8,
      options: 3,
      sendWindowScale: 10,
      receiveWindowScale: 7,
      rtoUs: 201_000,
      sendMss: 1448,
      unacked: 3,
      bytesAcked: 0x1_0000_0005n,
      bytesReceived: 77n,
      notsentBytes: 12,
      sendWindow: 123_456,
      receiveWindow: 654_321,
    });
  });

  test('an older kernel\'s shorter answer: fields past its length are absent, never read past the buffer', () => {
    // 232 bytes: Linux 5.19–6.1 (tcpi_snd_wnd, no tcpi_rcv_wnd).
    const v5 = decodeTcpInfo(tcpInfoBytes({ sndWnd: 1000, rcvWnd: 2000 }, 232))!;
    expect(v5.sendWindow).toBe(1000);
    expect(v5.receiveWindow).toBeUndefined();
    // 104 bytes: Linux 3.x (no byte counters).
    const v3 = decodeTcpInfo(tcpInfoBytes({ bytesAcked: 5n }, 104))!;
    expect(v3.rtoUs).toBe(204_000);
    expect([v3.bytesAcked, v3.bytesReceived, v3.notsentBytes, v3.sendWindow]).toEqual([undefined, undefined, undefined, undefined]);
    // A counter cut in half is absent, not half-read.
    expect(decodeTcpInfo(tcpInfoBytes({ bytesAcked: 5n }, 124))!.bytesAcked).toBeUndefined();
    // Only the first 8 bytes.
    const tiny = decodeTcpInfo(tcpInfoBytes({ state: 1 }, 8))!;
    expect([tiny.state, tiny.rtoUs, tiny.sendMss]).toEqual([1, undefined, undefined]);
  });

  test('fewer than 8 bytes are not a tcp_info; a buffer at an offset inside a larger one reads from its own start', () => {
    expect(decodeTcpInfo(Buffer.alloc(7))).toBeUndefined();
    const inner = tcpInfoBytes({ sndMss: 1234 });
    const outer = Buffer.concat([Buffer.alloc(13, 0xaa), inner]);
    expect(decodeTcpInfo(outer.subarray(13))!.sendMss).toBe(1234);
  });
});

describe('sequence positions', () => {
  test('snd_una = ISS+1+bytes_acked, rcv_nxt = IRS+1+bytes_received; idle (nothing in flight): snd_nxt = snd_una without SIOCOUTQ', () => {
    const info = decodeTcpInfo(tcpInfoBytes({ bytesAcked: 1000n, bytesReceived: 250n, unacked: 0 }))!;
    expect(needsOutq(info)).toBe(false);
    expect(sequencePositions({ send: 5000, receive: 70_000 }, info, undefined)).toEqual({ sendUnacknowledged: 6000, sendNext: 6000, receiveNext: 70_250 });
  });

  test('in flight: snd_nxt = snd_una + SIOCOUTQ − notsent; without SIOCOUTQ it is unknown', () => {
    const info = decodeTcpInfo(tcpInfoBytes({ bytesAcked: 1000n, unacked: 2, notsent: 300 }))!;
    expect(needsOutq(info)).toBe(true);
    // 2,000 bytes queued and not acked, 300 of them not sent yet: 1,700 in flight.
    expect(sequencePositions({ send: 5000, receive: 1 }, info, 2000).sendNext).toBe(5000 + 1000 + 1700);
    expect(sequencePositions({ send: 5000, receive: 1 }, info, undefined).sendNext).toBeUndefined();
  });

  test('wraps mod 2^32, counters past 2^32 included', () => {
    const info = decodeTcpInfo(tcpInfoBytes({ bytesAcked: 0x2_0000_0010n, bytesReceived: 0x20n, unacked: 1, notsent: 0 }))!;
    const p = sequencePositions({ send: 0xffff_fff0, receive: 0xffff_fff0 }, info, 0x30);
    expect(p).toEqual({ sendUnacknowledged: 0x0, sendNext: 0x30, receiveNext: 0x10 });
  });

  test('an unknown origin gives unknown positions (never a guess); so does a kernel without byte counters', () => {
    const info = decodeTcpInfo(tcpInfoBytes({ bytesAcked: 10n, bytesReceived: 20n }))!;
    expect(sequencePositions({ send: undefined, receive: 100 }, info, undefined)).toEqual({ sendUnacknowledged: undefined, sendNext: undefined, receiveNext: 120 });
    const old = decodeTcpInfo(tcpInfoBytes({}, 104))!;
    expect(sequencePositions({ send: 1, receive: 1 }, old, 0)).toEqual({ sendUnacknowledged: undefined, sendNext: undefined, receiveNext: undefined });
  });

  test('origins from repair-mode queue readings invert the same formulas (and the round trip is exact)', () => {
    const info = decodeTcpInfo(tcpInfoBytes({ bytesAcked: 0x1_0000_0100n, bytesReceived: 40n, unacked: 1, notsent: 10 }))!;
    // write_seq = snd_una + outq; snd_una = ISS+1 + bytes_acked.
    const iss1 = 0xfff0_0000;
    const irs1 = 0x0000_0010;
    const outq = 50;
    const sndUna = (iss1 + 0x100) >>> 0;
    const origins = originsFromQueues(info, (sndUna + outq) >>> 0, (irs1 + 40) >>> 0, outq)!;
    expect(origins).toEqual({ send: iss1, receive: irs1 });
    expect(sequencePositions(origins, info, outq)).toEqual({ sendUnacknowledged: sndUna, sendNext: (sndUna + 40) >>> 0, receiveNext: irs1 + 40 });
    expect(originsFromQueues(decodeTcpInfo(tcpInfoBytes({}, 104))!, 1, 2, 0)).toBeUndefined();
  });
});

describe('receiveOriginFromSyn', () => {
  const tcpSyn = (seq: number, flags = 0x02) => {
    const t = Buffer.alloc(20);
    t.writeUInt16BE(50_123, 0);
    t.writeUInt16BE(8443, 2);
    t.writeUInt32BE(seq, 4);
    t.writeUInt8(5 << 4, 12);
    t.writeUInt8(flags, 13);
    return t;
  };
  const ipv4 = (options = 0) => {
    const h = Buffer.alloc(20 + options);
    h.writeUInt8(0x40 | ((20 + options) / 4), 0);
    h.writeUInt8(6, 9);
    return h;
  };
  const ipv6 = (next = 6) => {
    const h = Buffer.alloc(40);
    h.writeUInt8(0x60, 0);
    h.writeUInt8(next, 6);
    return h;
  };

  test('IRS + 1 from an IPv4 SYN (with IP options) and an IPv6 SYN, wrapping at 2^32', () => {
    expect(receiveOriginFromSyn(Buffer.concat([ipv4(), tcpSyn(0x1234_5678)]))).toBe(0x1234_5679);
    expect(receiveOriginFromSyn(Buffer.concat([ipv4(8), tcpSyn(7)]))).toBe(8);
    expect(receiveOriginFromSyn(Buffer.concat([ipv6(), tcpSyn(0xffff_ffff)]))).toBe(0);
  });

  test('anything else is no origin: short, not TCP, an IPv6 extension header, a SYN-ACK, an unknown IP version', () => {
    expect(receiveOriginFromSyn(Buffer.alloc(0))).toBeUndefined();
    expect(receiveOriginFromSyn(Buffer.concat([ipv4(), tcpSyn(1)]).subarray(0, 39))).toBeUndefined();
    const udp = ipv4();
    udp.writeUInt8(17, 9);
    expect(receiveOriginFromSyn(Buffer.concat([udp, tcpSyn(1)]))).toBeUndefined();
    expect(receiveOriginFromSyn(Buffer.concat([ipv6(0), tcpSyn(1)]))).toBeUndefined();
    expect(receiveOriginFromSyn(Buffer.concat([ipv4(), tcpSyn(1, 0x12)]))).toBeUndefined();
    const v5 = Buffer.concat([ipv4(), tcpSyn(1)]);
    v5.writeUInt8(0x55, 0);
    expect(receiveOriginFromSyn(v5)).toBeUndefined();
    const badIhl = Buffer.concat([ipv4(), tcpSyn(1)]);
    badIhl.writeUInt8(0x44, 0);
    expect(receiveOriginFromSyn(badIhl)).toBeUndefined();
  });
});

describe('tcpConnectionState', () => {
  test('carries addresses, state, MSS, scales, options, RTO in ms, windows and the positions, marked known', () => {
    const info = decodeTcpInfo(tcpInfoBytes({ state: 1, options: 7, sndWscale: 9, rcvWscale: 7, rto: 203_600, sndMss: 1448, sndWnd: 100, rcvWnd: 200 }))!;
    const s = tcpConnectionState(endpoints, info, { sendUnacknowledged: 10, sendNext: 20, receiveNext: 30 }, 1_700_000_000_000);
    expect(s).toMatchObject({
      ...endpoints,
      state: TcpState.TCP_STATE_ESTABLISHED,
      mss: 1448,
      sendWindowScale: 9,
      receiveWindowScale: 7,
      sackPermitted: true,
      timestampsEnabled: true,
      rtoMs: 204,
      sendWindow: 100,
      receiveWindow: 200,
      sendUnacknowledged: 10,
      sendNext: 20,
      receiveNext: 30,
      sendSequenceKnown: true,
      receiveSequenceKnown: true,
      capturedAtUnixMs: 1_700_000_000_000n,
      timestampValue: 0,
      timestampEchoReply: 0,
    });
  });

  test('unknown positions are 0 and marked unknown; no window scaling negotiated means scales 0; an unknown state number is unspecified', () => {
    const info = decodeTcpInfo(tcpInfoBytes({ state: 12, options: 0, sndWscale: 9, rcvWscale: 7 }))!;
    const s = tcpConnectionState(endpoints, info, { sendUnacknowledged: 10, sendNext: undefined, receiveNext: undefined }, 0);
    expect(s).toMatchObject({ sendNext: 0, sendUnacknowledged: 0, receiveNext: 0, sendSequenceKnown: false, receiveSequenceKnown: false });
    expect(s).toMatchObject({ sendWindowScale: 0, receiveWindowScale: 0, sackPermitted: false, timestampsEnabled: false, state: TcpState.TCP_STATE_UNSPECIFIED });
  });

  test('sameTcpState ignores only the capture time', () => {
    const info = decodeTcpInfo(tcpInfoBytes({}))!;
    const positions = { sendUnacknowledged: 1, sendNext: 1, receiveNext: 2 };
    const a = tcpConnectionState(endpoints, info, positions, 1000);
    expect(sameTcpState(a, tcpConnectionState(endpoints, info, positions, 2000))).toBe(true);
    expect(sameTcpState(a, tcpConnectionState(endpoints, info, { ...positions, receiveNext: 3 }, 1000))).toBe(false);
    expect(sameTcpState(a, tcpConnectionState(endpoints, decodeTcpInfo(tcpInfoBytes({ rcvWnd: 1 }))!, positions, 1000))).toBe(false);
  });
});
