/**
 * TLS capture: what the `tls` part (TlsSessionState) records about the connection a request
 * came on — protocol, cipher, SNI, ALPN, the TLS session id, when the TLS session was made,
 * its lifetime, and whether the handshake was a resumption. The session's own secrets
 * (master key, tickets) are never copied: resumption across pods is the ticket keys' and the
 * session-ID cache's job, not this part's. The facts come from the socket (the proxy reads
 * them); this file only reads OpenSSL's serialized session (DER), defensively: bytes it
 * cannot read yield no id and no times, never an exception.
 */
import { TlsSessionState } from '../gen/baton/v1/parts';

/** What the proxy reads from a TLS socket once its handshake is done. */
export interface TlsConnectionFacts {
  /** tls.TLSSocket#getProtocol(), e.g. "TLSv1.3". */
  protocol: string | null;
  /** The negotiated cipher's standard name. */
  cipher: string;
  /** The SNI the client sent (false/undefined: none). */
  servername: string | false | undefined;
  /** The ALPN protocol agreed (false/undefined: none). */
  alpnProtocol: string | false | null | undefined;
  /** tls.TLSSocket#getSession(): OpenSSL's SSL_SESSION in DER. */
  session: Uint8Array | undefined;
  resumed: boolean;
  /** When the handshake completed; the creation time when the session does not say. */
  handshakeAtUnixMs: number;
}

/** Longest text field kept (an SNI is at most 255 bytes; cipher and ALPN names are short). */
const MAX_TEXT = 255;

export function captureTls(facts: TlsConnectionFacts): TlsSessionState {
  const session = facts.session === undefined ? undefined : readSslSession(facts.session);
  const text = (value: string | false | null | undefined) => (typeof value === 'string' ? value.slice(0, MAX_TEXT) : '');
  return TlsSessionState.fromPartial({
    sessionId: Buffer.from(session?.sessionId ?? new Uint8Array(0)),
    protocol: text(facts.protocol),
    cipher: text(facts.cipher),
    serverName: text(facts.servername),
    alpnProtocol: text(facts.alpnProtocol),
    createdAtUnixMs: BigInt(session?.timeSeconds !== undefined ? session.timeSeconds * 1000 : facts.handshakeAtUnixMs),
    lifetimeSeconds: session?.timeoutSeconds ?? 0,
    resumed: facts.resumed,
  });
}

export function encodeTls(state: TlsSessionState): Buffer {
  return Buffer.from(TlsSessionState.encode(state).finish());
}

export interface SslSessionFields {
  sessionId: Uint8Array;
  timeSeconds?: number;
  timeoutSeconds?: number;
}

/**
 * Reads OpenSSL's SSL_SESSION_ASN1: SEQUENCE { version INTEGER, sslVersion INTEGER,
 * cipher OCTET STRING, sessionId OCTET STRING, masterKey OCTET STRING, [0] keyArg,
 * [1] time INTEGER, [2] timeout INTEGER, … }. Undefined when the bytes are not that shape.
 */
export function readSslSession(der: Uint8Array): SslSessionFields | undefined {
  const outer = readTlv(der, 0, der.length);
  if (outer === undefined || outer.tag !== 0x30) return undefined;
  let pos = outer.start;
  const fields: Tlv[] = [];
  while (pos < outer.end && fields.length < 16) {
    const tlv = readTlv(der, pos, outer.end);
    if (tlv === undefined) return undefined;
    fields.push(tlv);
    pos = tlv.end;
  }
  const id = fields[3];
  if (fields.length < 5 || fields[0]!.tag !== 0x02 || id!.tag !== 0x04) return undefined;
  const result: SslSessionFields = { sessionId: der.slice(id!.start, id!.end) };
  for (const field of fields.slice(5)) {
    if (field.tag !== 0xa1 && field.tag !== 0xa2) continue;
    const inner = readTlv(der, field.start, field.end);
    if (inner === undefined || inner.tag !== 0x02) continue;
    const value = unsignedInteger(der, inner.start, inner.end);
    if (value === undefined) continue;
    if (field.tag === 0xa1) result.timeSeconds = value;
    else result.timeoutSeconds = value;
  }
  return result;
}

/** The protocol version an SSL_SESSION records for TLS 1.3 (sslVersion = 0x0304). */
export const TLS1_3_VERSION = 0x0304;

/**
 * The protocol version (0x0303 TLS 1.2, 0x0304 TLS 1.3) recorded in OpenSSL's serialized
 * session: the second INTEGER of SSL_SESSION_ASN1. Reads those two fields and nothing else,
 * so it is cheap enough for every handshake; undefined when the bytes do not start that way.
 */
export function sslSessionVersion(der: Uint8Array): number | undefined {
  const outer = readTlv(der, 0, der.length);
  if (outer === undefined || outer.tag !== 0x30) return undefined;
  const format = readTlv(der, outer.start, outer.end);
  if (format === undefined || format.tag !== 0x02) return undefined;
  const version = readTlv(der, format.end, outer.end);
  if (version === undefined || version.tag !== 0x02) return undefined;
  return unsignedInteger(der, version.start, version.end);
}

interface Tlv {
  tag: number;
  start: number;
  end: number;
}

/** One DER tag-length-value inside [pos, limit); single-byte tags, lengths up to 4 bytes. */
function readTlv(buf: Uint8Array, pos: number, limit: number): Tlv | undefined {
  if (pos + 2 > limit) return undefined;
  const tag = buf[pos]!;
  let length = buf[pos + 1]!;
  pos += 2;
  if (length & 0x80) {
    const bytes = length & 0x7f;
    if (bytes === 0 || bytes > 4 || pos + bytes > limit) return undefined;
    length = 0;
    for (let i = 0; i < bytes; i++) length = length * 256 + buf[pos++]!;
  }
  if (pos + length > limit) return undefined;
  return { tag, start: pos, end: pos + length };
}

/** A non-negative DER INTEGER that fits in 2^48; undefined otherwise. */
function unsignedInteger(buf: Uint8Array, start: number, end: number): number | undefined {
  if (end - start < 1 || end - start > 7 || buf[start]! & 0x80) return undefined;
  let value = 0;
  for (let i = start; i < end; i++) value = value * 256 + buf[i]!;
  return value;
}
