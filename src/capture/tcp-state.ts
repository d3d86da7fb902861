/**
 * TCP state capture, the pure part: reads Linux's `struct tcp_info` (getsockopt TCP_INFO)
 * and a saved SYN, and computes the `tcp` part (TcpConnectionState) of a connection.
 *
 * Sequence positions. Neither TCP_INFO nor sock_diag gives absolute sequence numbers, but
 * their byte counters start at the handshake, so with the connection's two origins learnt
 * once (ISS + 1 and IRS + 1, the first sequence numbers after each side's SYN) they are
 * exact, mod 2^32:
 *   snd_una = ISS + 1 + tcpi_bytes_acked        (a FIN acked counts one, as in sequence space)
 *   snd_nxt = snd_una + (SIOCOUTQ − tcpi_notsent_bytes)
 *             (SIOCOUTQ = write_seq − snd_una: everything queued and not acked;
 *              notsent = write_seq − snd_nxt; with nothing in flight, tcpi_unacked = 0,
 *              snd_nxt = snd_una and SIOCOUTQ is not needed)
 *   rcv_nxt = IRS + 1 + tcpi_bytes_received
 * The origins come from the socket in repair mode (TCP_QUEUE_SEQ: write_seq of the send
 * queue, rcv_nxt of the receive queue, taken back by the same formulas) or, for IRS only,
 * from the SYN the kernel saved (TCP_SAVE_SYN). An origin not learnt stays unknown: its
 * positions are written 0 and the part says they are not known — never guessed. The
 * timestamp values (TSval, TSecr) stay 0 too: TCP_INFO does not carry them.
 *
 * Rules: an answer shorter than the 6.x struct (older kernels) is read up to its length:
 * fields past it are absent (undefined), never read out of bounds; bytes that are not a
 * tcp_info at all (shorter than its first 8 bytes) decode to undefined. Nothing here does
 * I/O or reads a clock.
 */
import { TcpConnectionState, TcpState } from '../gen/baton/v1/parts';

/** The length of struct tcp_info on Linux 6.18 (what the capture asks for; older kernels answer less). */
export const TCP_INFO_LENGTH = 280;

/** tcpi_options bits (include/uapi/linux/tcp.h). */
export const TCPI_OPT_TIMESTAMPS = 1;
export const TCPI_OPT_SACK = 2;
export const TCPI_OPT_WSCALE = 4;

/** The fields of struct tcp_info the `tcp` part uses; undefined = beyond the kernel's answer. */
export interface TcpInfo {
  /** Linux's TCP state number (TCP_ESTABLISHED = 1 …), the same numbering as TcpState. */
  state: number;
  /** tcpi_options: TCPI_OPT_* bits negotiated on the handshake. */
  options: number;
  sendWindowScale: number;
  receiveWindowScale: number;
  /** Retransmission time-out, in µs. */
  rtoUs: number | undefined;
  /** The MSS this side sends with (what `ss` prints as mss). */
  sendMss: number | undefined;
  /** Segments sent and not acked (packets_out). */
  unacked: number | undefined;
  /** Bytes acked by the peer since the handshake (a FIN counts one). */
  bytesAcked: bigint | undefined;
  /** Bytes received in order since the handshake (a FIN counts one). */
  bytesReceived: bigint | undefined;
  /** Bytes queued and not sent yet (write_seq − snd_nxt). */
  notsentBytes: number | undefined;
  /** The peer's advertised window, scaled, in bytes (Linux 5.19+). */
  sendWindow: number | undefined;
  /** The window this side advertises, in bytes (Linux 6.2+). */
  receiveWindow: number | undefined;
}

// Offsets in struct tcp_info (include/uapi/linux/tcp.h, x86-64 and arm64 alike: no padding).
const OFF_STATE = 0;
const OFF_OPTIONS = 5;
const OFF_WSCALE = 6;
const OFF_RTO = 8;
const OFF_SND_MSS = 16;
const OFF_UNACKED = 24;
const OFF_BYTES_ACKED = 120;
const OFF_BYTES_RECEIVED = 128;
const OFF_NOTSENT = 144;
const OFF_SND_WND = 228;
const OFF_RCV_WND = 232;
/** The first 8 bytes (state … window scales) are in every kernel's answer. */
const MIN_LENGTH = 8;

export function decodeTcpInfo(bytes: Uint8Array): TcpInfo | undefined {
  if (bytes.length < MIN_LENGTH) return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const u32 = (offset: number) => (offset + 4 <= bytes.length ? view.getUint32(offset, true) : undefined);
  const u64 = (offset: number) => (offset + 8 <= bytes.length ? view.getBigUint64(offset, true) : undefined);
  const scales = view.getUint8(OFF_WSCALE);
  return {
    state: view.getUint8(OFF_STATE),
    options: view.getUint8(OFF_OPTIONS),
    // Bit-fields `tcpi_snd_wscale : 4, tcpi_rcv_wscale : 4`: little-endian compilers fill from the low bits.
    sendWindowScale: scales & 0x0f,
    receiveWindowScale: scales >> 4,
    rtoUs: u32(OFF_RTO),
    sendMss: u32(OFF_SND_MSS),
    unacked: u32(OFF_UNACKED),
    bytesAcked: u64(OFF_BYTES_ACKED),
    bytesReceived: u64(OFF_BYTES_RECEIVED),
    notsentBytes: u32(OFF_NOTSENT),
    sendWindow: u32(OFF_SND_WND),
    receiveWindow: u32(OFF_RCV_WND),
  };
}

/** The first sequence number after each side's SYN; undefined = not learnt. */
export interface SequenceOrigins {
  /** ISS + 1: our first data byte's sequence number. */
  send: number | undefined;
  /** IRS + 1: the peer's first data byte's sequence number. */
  receive: number | undefined;
}

const mod32 = (value: bigint) => Number(BigInt.asUintN(32, value));

/**
 * The origins from repair-mode queue sequences read between two TCP_INFO answers that
 * agree (no byte acked or received in between, so the four readings describe one moment):
 * `writeSeq` = TCP_QUEUE_SEQ of the send queue, `receiveNext` = of the receive queue,
 * `outq` = SIOCOUTQ. Undefined when the answer lacks the byte counters (kernel < 4.1).
 */
export function originsFromQueues(info: TcpInfo, writeSeq: number, receiveNext: number, outq: number): SequenceOrigins | undefined {
  if (info.bytesAcked === undefined || info.bytesReceived === undefined) return undefined;
  return {
    send: mod32(BigInt(writeSeq) - BigInt(outq) - info.bytesAcked),
    receive: mod32(BigInt(receiveNext) - info.bytesReceived),
  };
}

/**
 * IRS + 1 from a SYN saved by the kernel (TCP_SAVED_SYN: the IPv4 or IPv6 header, then the
 * TCP header). Undefined for anything else: a short buffer, an IPv6 extension header, not TCP.
 */
export function receiveOriginFromSyn(syn: Uint8Array): number | undefined {
  if (syn.length < 1) return undefined;
  const version = syn[0]! >> 4;
  let tcp: number;
  if (version === 4) {
    const headerLength = (syn[0]! & 0x0f) * 4;
    if (headerLength < 20 || syn.length < 20 || syn[9] !== 6) return undefined;
    tcp = headerLength;
  } else if (version === 6) {
    if (syn.length < 40 || syn[6] !== 6) return undefined;
    tcp = 40;
  } else {
    return undefined;
  }
  if (syn.length < tcp + 20) return undefined;
  const view = new DataView(syn.buffer, syn.byteOffset, syn.byteLength);
  const flags = view.getUint8(tcp + 13);
  const SYN = 0x02;
  const ACK = 0x10;
  if ((flags & (SYN | ACK)) !== SYN) return undefined;
  return (view.getUint32(tcp + 4, false) + 1) >>> 0;
}

export interface SequencePositions {
  sendUnacknowledged: number | undefined;
  sendNext: number | undefined;
  receiveNext: number | undefined;
}

/**
 * The three positions from the origins and one TCP_INFO answer. `outq` (SIOCOUTQ, read
 * between two TCP_INFO answers that agree on bytes_acked) is needed only while something is
 * in flight (`needsOutq`); without it snd_nxt is then unknown.
 */
export function sequencePositions(origins: SequenceOrigins, info: TcpInfo, outq: number | undefined): SequencePositions {
  const sendUnacknowledged = origins.send === undefined || info.bytesAcked === undefined ? undefined : mod32(BigInt(origins.send) + info.bytesAcked);
  let sendNext: number | undefined;
  if (sendUnacknowledged !== undefined && info.unacked !== undefined && info.notsentBytes !== undefined) {
    if (info.unacked === 0) sendNext = sendUnacknowledged;
    else if (outq !== undefined) sendNext = (sendUnacknowledged + outq - info.notsentBytes) >>> 0;
  }
  const receiveNext = origins.receive === undefined || info.bytesReceived === undefined ? undefined : mod32(BigInt(origins.receive) + info.bytesReceived);
  return { sendUnacknowledged, sendNext, receiveNext };
}

/** Whether snd_nxt needs SIOCOUTQ: segments are in flight (or the answer cannot tell). */
export function needsOutq(info: TcpInfo): boolean {
  return info.unacked === undefined || info.unacked > 0;
}

/** The connection's addresses, as the socket reports them. */
export interface TcpEndpoints {
  localAddress: string;
  localPort: number;
  remoteAddress: string;
  remotePort: number;
}

/** The `tcp` part for one sample. Unknown values are 0, and the part says which positions are known. */
export function tcpConnectionState(endpoints: TcpEndpoints, info: TcpInfo, positions: SequencePositions, capturedAtUnixMs: number): TcpConnectionState {
  const sendKnown = positions.sendNext !== undefined && positions.sendUnacknowledged !== undefined;
  const wscale = (info.options & TCPI_OPT_WSCALE) !== 0;
  return TcpConnectionState.fromPartial({
    localAddress: endpoints.localAddress,
    localPort: endpoints.localPort,
    remoteAddress: endpoints.remoteAddress,
    remotePort: endpoints.remotePort,
    sendNext: sendKnown ? positions.sendNext : 0,
    sendUnacknowledged: sendKnown ? positions.sendUnacknowledged : 0,
    receiveNext: positions.receiveNext ?? 0,
    sendWindow: info.sendWindow ?? 0,
    receiveWindow: info.receiveWindow ?? 0,
    sendWindowScale: wscale ? info.sendWindowScale : 0,
    receiveWindowScale: wscale ? info.receiveWindowScale : 0,
    mss: info.sendMss ?? 0,
    sackPermitted: (info.options & TCPI_OPT_SACK) !== 0,
    timestampsEnabled: (info.options & TCPI_OPT_TIMESTAMPS) !== 0,
    rtoMs: info.rtoUs === undefined ? 0 : Math.round(info.rtoUs / 1000),
    state: knownState(info.state),
    capturedAtUnixMs: BigInt(capturedAtUnixMs),
    sendSequenceKnown: sendKnown,
    receiveSequenceKnown: positions.receiveNext !== undefined,
  });
}

/** Linux numbers its states as TcpState does; a number past the enum (TCP_NEW_SYN_RECV …) is unspecified. */
function knownState(state: number): TcpState {
  return state >= TcpState.TCP_STATE_ESTABLISHED && state <= TcpState.TCP_STATE_CLOSING ? (state as TcpState) : TcpState.TCP_STATE_UNSPECIFIED;
}

/** Whether two samples describe the same connection state (the capture time aside): an unchanged sample is not written. */
export function sameTcpState(a: TcpConnectionState, b: TcpConnectionState): boolean {
  for (const key of Object.keys(a) as (keyof TcpConnectionState)[]) {
    if (key !== 'capturedAtUnixMs' && a[key] !== b[key]) return false;
  }
  return true;
}

export function encodeTcpState(state: TcpConnectionState): Buffer {
  return Buffer.from(TcpConnectionState.encode(state).finish());
}
