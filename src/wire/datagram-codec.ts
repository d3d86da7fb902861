/**
 * The datagram envelope of proto/baton/v1/wire.proto: a 20-byte header, the AES-256-GCM
 * ciphertext of the payload, and the 16-byte GCM tag.
 *
 *   offset size  field
 *   0      2     magic 0xBA 0x70
 *   2      1     format version (1)
 *   3      1     key id (first byte of SHA-256 of the cluster key; 0 = not encrypted, no tag)
 *   4      8     sender incarnation, big-endian
 *   12     8     packet number, big-endian, from 1 per incarnation
 *
 * Rules and invariants:
 * - The header is the GCM additional data: it is authenticated, not encrypted.
 * - GCM key = HKDF-SHA256(cluster key, salt = incarnation as 8 bytes BE, info
 *   'baton/datagram/v1'); nonce = 4 zero bytes + packet number BE. A sealer never reuses a
 *   packet number, and a restarted process draws a new incarnation, hence a new key, so a
 *   (key, nonce) pair never repeats — even though packet numbers restart at 1.
 * - The opener checks, in order: size, header, key, replay window (check only), tag; and
 *   only then marks the packet number seen. A datagram that fails any step changes nothing
 *   in the opener (one that fails the tag is left decrypted in place, unreadable).
 * - Opening decrypts in place: the payload is a view of the datagram, whose bytes the
 *   caller hands over; nothing is allocated per datagram.
 * - The opener never throws on input; every rejection is a DropReason for the caller to
 *   count. Its memory is bounded whatever arrives: replay windows and derived keys live in
 *   one LRU table of at most maxSenders entries, and with keys a sender is only entered
 *   after a datagram from it authenticated, so unauthenticated traffic (a flood of random
 *   incarnations included) cannot grow the table or evict real senders. It costs CPU only
 *   (one HKDF and one GCM attempt per datagram with a valid-looking header).
 * - Limit: a sender evicted from the table (the least recently heard of more than
 *   maxSenders authenticated incarnations) loses its replay window, so its old datagrams
 *   would be accepted once more. Keep maxSenders well above the number of incarnations
 *   alive at once; the payloads above are idempotent (versions, epochs, timestamps decide).
 * - Without keys (key id 0) nothing is secret or authenticated: the replay window then only
 *   drops network duplicates, and anyone on the network can write anything.
 * - AES-256-GCM itself is a GcmEngine: node:crypto by default (a cipher object, its key
 *   schedule and three buffers per datagram); the sidecar may pass one that keeps a
 *   cipher context per key and writes in place (sidecar/net/openssl-gcm.ts). Both write
 *   and read the same bytes (tested against each other).
 */
import { createCipheriv, createDecipheriv, createSecretKey, hkdfSync } from 'node:crypto';
import type { ClusterKey } from './cluster-key';
import { bufferView } from './proto-writer';
import { DEFAULT_REPLAY_WINDOW_BITS, isPacketNumber, ReplayWindow } from './replay-window';

export const MAGIC = 0xba70;
export const FORMAT_VERSION = 1;
export const HEADER_BYTES = 20;
export const TAG_BYTES = 16;
/** The key id of a datagram that is not encrypted. */
export const PLAINTEXT_KEY_ID = 0;
export const DEFAULT_MAX_SENDERS = 1024;

/**
 * Padding a sealer may append to a payload (a Datagram message): field 15, length-delimited,
 * which the message leaves undeclared so every reader skips it (proto/baton/v1/wire.proto).
 * Its tag and one-byte length take 2 bytes: a padding is 0 or 2 to 64 bytes in all.
 */
export const PADDING_TAG = (15 << 3) | 2;
export const MIN_PADDING = 2;
export const MAX_PADDING = 64;

const DATAGRAM_KEY_INFO = 'baton/datagram/v1';
const CIPHER = 'aes-256-gcm';
const NONCE_BYTES = 12;
const MAX_INCARNATION = (1n << 64n) - 1n;
/** Packet numbers are below 2^53: the high 32-bit half of one is at most 2^21 - 1. */
const MAX_PACKET_NUMBER_HI = 0x1fffff;
const TWO_POW_32 = 0x100000000;

/** AES-256-GCM under one key: 12-byte nonces, 16-byte tags. */
export interface GcmKey {
  /**
   * Encrypts plaintext into out[at, at + plaintext.length) and writes the tag right after it.
   * The plaintext may be that very region of out (sealing in place).
   */
  seal(nonce: Uint8Array, aad: Uint8Array, plaintext: Uint8Array, out: Buffer, at: number): void;
  /**
   * Decrypts `data` in place: true when the tag verifies (`data` then holds the plaintext),
   * false when it does not (`data` then holds nothing to read).
   */
  openInPlace(nonce: Uint8Array, aad: Uint8Array, data: Uint8Array, tag: Uint8Array): boolean;
  /** Releases what the key holds outside the V8 heap; the key is not used after. */
  dispose(): void;
}

/** Makes the GcmKey of a 32-byte key. */
export type GcmEngine = (key: Buffer) => GcmKey;

/** AES-256-GCM through node:crypto: a cipher object per datagram. */
export const nodeGcm: GcmEngine = (key) => {
  const secret = createSecretKey(key);
  return {
    seal(nonce, aad, plaintext, out, at) {
      const cipher = createCipheriv(CIPHER, secret, nonce, { authTagLength: TAG_BYTES });
      cipher.setAAD(aad);
      const body = cipher.update(plaintext);
      const rest = cipher.final();
      body.copy(out, at);
      rest.copy(out, at + body.length);
      cipher.getAuthTag().copy(out, at + plaintext.length);
    },
    openInPlace(nonce, aad, data, tag) {
      try {
        const decipher = createDecipheriv(CIPHER, secret, nonce, { authTagLength: TAG_BYTES });
        decipher.setAAD(aad);
        decipher.setAuthTag(tag);
        const body = decipher.update(data);
        const rest = decipher.final(); // throws when the tag does not verify
        data.set(body);
        data.set(rest, body.length);
        return true;
      } catch {
        return false;
      }
    },
    dispose() {},
  };
};

export type DropReason =
  | 'oversized'
  | 'truncated'
  | 'bad_magic'
  | 'bad_version'
  | 'unknown_key'
  | 'plaintext_refused'
  | 'encrypted_unexpected'
  | 'auth_failed'
  | 'replayed'
  | 'too_old';

export type OpenResult =
  | { ok: true; incarnation: bigint; packetNumber: number; payload: Buffer }
  | { ok: false; reason: DropReason };

export interface DatagramOpenerOptions {
  /** Datagrams longer than this (bytes, header and tag included) are dropped unread. */
  maxDatagramBytes: number;
  /** Sender incarnations whose replay windows (and derived keys) are kept; default 1024, LRU. */
  maxSenders?: number;
  /** Size of each replay window in packet numbers; a multiple of 32, default 4096. */
  windowBits?: number;
  /** The AES-256-GCM implementation (default node:crypto). */
  gcm?: GcmEngine;
}

/** The AES-256-GCM key of one (cluster key, sender incarnation). */
export function deriveDatagramKey(clusterKey: ClusterKey, incarnation: bigint): Buffer {
  const salt = Buffer.allocUnsafe(8);
  salt.writeBigUInt64BE(incarnation);
  return Buffer.from(hkdfSync('sha256', clusterKey.key, salt, DATAGRAM_KEY_INFO, 32));
}

/** Seals one sender incarnation's datagrams, numbering them 1, 2, 3, … */
export class DatagramSealer {
  readonly incarnation: bigint;
  private sealed = 0;
  private readonly gcmKey: GcmKey | undefined;
  /** Bytes 0-11 of every header (all but the packet number). */
  private readonly headerPrefix = Buffer.alloc(12);
  /** Reused: the engine reads the nonce during the call. */
  private readonly nonce = Buffer.alloc(NONCE_BYTES);

  /**
   * @param keys the cluster keys (the first seals), or undefined to send unencrypted.
   * @param incarnation 64 random bits drawn by the caller at process start.
   * @param gcm the AES-256-GCM implementation.
   */
  constructor(keys: readonly ClusterKey[] | undefined, incarnation: bigint, gcm: GcmEngine = nodeGcm) {
    if (keys !== undefined && keys.length === 0) throw new RangeError('keys must be undefined or non-empty');
    if (incarnation < 0n || incarnation > MAX_INCARNATION) throw new RangeError('incarnation must be an unsigned 64-bit value');
    this.incarnation = incarnation;
    const key = keys?.[0];
    this.gcmKey = key === undefined ? undefined : gcm(deriveDatagramKey(key, incarnation));
    this.headerPrefix.writeUInt16BE(MAGIC, 0);
    this.headerPrefix[2] = FORMAT_VERSION;
    this.headerPrefix[3] = key === undefined ? PLAINTEXT_KEY_ID : key.id;
    this.headerPrefix.writeBigUInt64BE(incarnation, 4);
  }

  /** Datagrams sealed so far; also the packet number of the last one. */
  get packetsSealed(): number {
    return this.sealed;
  }

  /** The datagram carrying payload under the next packet number. */
  seal(payload: Uint8Array): Buffer {
    const out = Buffer.allocUnsafe(this.sealedLength(payload.length));
    this.sealInto(payload, out, 0);
    return out;
  }

  /** Bytes of the datagram that carries a payload of `payloadLength` bytes. */
  sealedLength(payloadLength: number): number {
    return HEADER_BYTES + payloadLength + (this.gcmKey === undefined ? 0 : TAG_BYTES);
  }

  /**
   * Writes the datagram carrying payload under the next packet number at out[at]: sealedLength
   * bytes, or `length` bytes when given, the payload then followed by a padding field of
   * length − sealedLength bytes (0, or MIN_PADDING to MAX_PADDING; see PADDING_TAG).
   */
  sealInto(payload: Uint8Array, out: Buffer, at: number, length = this.sealedLength(payload.length)): void {
    if (this.sealed >= Number.MAX_SAFE_INTEGER) throw new RangeError('packet numbers exhausted');
    const padding = length - this.sealedLength(payload.length);
    if (padding !== 0 && !(padding >= MIN_PADDING && padding <= MAX_PADDING)) throw new RangeError(`padding of ${padding} bytes`);
    if (!Number.isInteger(at) || at < 0 || at + length > out.length) throw new RangeError('no room for the datagram');
    const packetNumber = ++this.sealed;
    const hi = Math.floor(packetNumber / TWO_POW_32);
    const lo = packetNumber >>> 0;
    const gcmKey = this.gcmKey;
    this.headerPrefix.copy(out, at);
    out.writeUInt32BE(hi, at + 12);
    out.writeUInt32BE(lo, at + 16);
    const body = at + HEADER_BYTES;
    let plaintext = payload;
    if (padding > 0) {
      // The payload and its padding, written where the ciphertext goes and sealed in place.
      out.set(payload, body);
      const end = body + payload.length;
      out[end] = PADDING_TAG;
      out[end + 1] = padding - MIN_PADDING;
      out.fill(0, end + MIN_PADDING, end + padding);
      plaintext = out.subarray(body, end + padding);
    }
    if (gcmKey === undefined) {
      if (padding === 0) out.set(payload, body);
      return;
    }
    this.nonce.writeUInt32BE(hi, 4);
    this.nonce.writeUInt32BE(lo, 8);
    gcmKey.seal(this.nonce, out.subarray(at, body), plaintext, out, body);
  }
}

interface SenderState {
  /** Its key in `senders`: header bytes 3-11 as latin1. */
  readonly id: string;
  readonly incarnation: bigint;
  readonly window: ReplayWindow;
  readonly gcmKey: GcmKey | undefined;
}

/** Header bytes every datagram of one sender incarnation begins with: magic, version, key id, incarnation. */
const SENDER_PREFIX_BYTES = 12;

/**
 * The segment size of a buffer that may hold a run of datagrams the kernel coalesced
 * (UDP_GRO on the socket, read without the segment size it reports: node:dgram): the
 * datagrams of one sender, of one length but the last, end to end. The size is where the
 * first datagram's sender prefix (header bytes 0-11) begins again, within
 * `maxDatagramBytes`; the buffer's length when it does not (one datagram), or when a later
 * segment does not begin with it (the buffer is then handed on whole, and refused as
 * oversized or unauthenticated). A run comes from one sealed sender, whose ciphertext holds
 * the 12-byte prefix by chance with odds of 2^-96 per position; runs are only looked for
 * where datagrams are sealed (the transport sets UDP_GRO only with cluster keys).
 */
export function coalescedSegmentBytes(buffer: Buffer, maxDatagramBytes: number): number {
  const length = buffer.length;
  if (length < 2 * HEADER_BYTES) return length;
  const prefix = buffer.subarray(0, SENDER_PREFIX_BYTES);
  const segment = buffer.subarray(0, Math.min(length, maxDatagramBytes + SENDER_PREFIX_BYTES)).indexOf(prefix, HEADER_BYTES);
  if (segment < 0) return length;
  for (let at = segment; at < length; at += segment) {
    if (length - at < HEADER_BYTES || buffer.compare(prefix, 0, SENDER_PREFIX_BYTES, at, at + SENDER_PREFIX_BYTES) !== 0) return length;
  }
  return segment;
}

/** Opens datagrams from any sender, dropping what is malformed, forged or replayed. */
export class DatagramOpener {
  private readonly keysById: (ClusterKey | undefined)[] = new Array(256).fill(undefined);
  private readonly encrypted: boolean;
  private readonly maxDatagramBytes: number;
  private readonly maxSenders: number;
  private readonly windowBits: number;
  /** Keyed by header bytes 3-11 (key id + incarnation) as latin1; Map order is recency. */
  private readonly senders = new Map<string, SenderState>();
  /**
   * The most recently used sender (touching it again would change nothing), and its header
   * bytes 3-11 as numbers: a datagram from it is matched without making the key string.
   * Never an evicted one: open() touches the sender it remembers, so the newest is last.
   */
  private lastSender: SenderState | undefined;
  private lastKeyId = -1;
  private lastIncarnationHigh = 0;
  private lastIncarnationLow = 0;
  /** Reused: the engine reads the nonce during the call. */
  private readonly nonce = Buffer.alloc(NONCE_BYTES);
  private evicted = 0;
  private readonly gcm: GcmEngine;

  /** @param keys the accepted cluster keys, or undefined to accept only unencrypted datagrams. */
  constructor(keys: readonly ClusterKey[] | undefined, options: DatagramOpenerOptions) {
    if (keys !== undefined && keys.length === 0) throw new RangeError('keys must be undefined or non-empty');
    const { maxDatagramBytes, maxSenders = DEFAULT_MAX_SENDERS, windowBits = DEFAULT_REPLAY_WINDOW_BITS } = options;
    if (!Number.isInteger(maxDatagramBytes) || maxDatagramBytes < HEADER_BYTES + TAG_BYTES) {
      throw new RangeError(`maxDatagramBytes must be an integer of at least ${HEADER_BYTES + TAG_BYTES}`);
    }
    if (!Number.isInteger(maxSenders) || maxSenders < 1) throw new RangeError('maxSenders must be a positive integer');
    new ReplayWindow(windowBits); // validates windowBits now rather than at the first datagram
    this.encrypted = keys !== undefined;
    for (const key of keys ?? []) {
      if (this.keysById[key.id] !== undefined) throw new RangeError(`two cluster keys share key id ${key.id}`);
      this.keysById[key.id] = key;
    }
    this.maxDatagramBytes = maxDatagramBytes;
    this.maxSenders = maxSenders;
    this.windowBits = windowBits;
    this.gcm = options.gcm ?? nodeGcm;
  }

  /** Sender incarnations currently remembered (at most maxSenders). */
  get trackedSenders(): number {
    return this.senders.size;
  }

  /** Senders forgotten to stay within maxSenders since construction. */
  get evictedSenders(): number {
    return this.evicted;
  }

  /**
   * The payload of an acceptable datagram, or why it was dropped. Never throws. The payload
   * is a view of `datagram`, decrypted in place when sealed: the caller hands over the
   * datagram's bytes (no copy, no allocation per datagram) and reads them only through the
   * payload after.
   */
  open(datagram: Uint8Array): OpenResult {
    const length = datagram.length;
    if (length > this.maxDatagramBytes) return drop('oversized');
    if (length < HEADER_BYTES) return drop('truncated');
    const bytes = bufferView(datagram);
    if (bytes[0] !== MAGIC >>> 8 || bytes[1] !== (MAGIC & 0xff)) return drop('bad_magic');
    if (bytes[2] !== FORMAT_VERSION) return drop('bad_version');

    const keyId = bytes[3]!;
    let clusterKey: ClusterKey | undefined;
    if (keyId === PLAINTEXT_KEY_ID) {
      if (this.encrypted) return drop('plaintext_refused');
    } else {
      if (!this.encrypted) return drop('encrypted_unexpected');
      if (length < HEADER_BYTES + TAG_BYTES) return drop('truncated');
      clusterKey = this.keysById[keyId];
      if (clusterKey === undefined) return drop('unknown_key');
    }

    const hi = bytes.readUInt32BE(12);
    const lo = bytes.readUInt32BE(16);
    // Above 2^53 - 1 no sender ever goes: outside every window, like 0.
    if (hi > MAX_PACKET_NUMBER_HI) return drop('too_old');
    const packetNumber = hi * TWO_POW_32 + lo;
    if (!isPacketNumber(packetNumber)) return drop('too_old');

    const incarnationHigh = bytes.readUInt32BE(4);
    const incarnationLow = bytes.readUInt32BE(8);
    const last = keyId === this.lastKeyId && incarnationHigh === this.lastIncarnationHigh && incarnationLow === this.lastIncarnationLow;
    const senderId = last ? this.lastSender!.id : bytes.toString('latin1', 3, 12);
    let sender = last ? this.lastSender : this.senders.get(senderId);
    if (sender !== undefined) {
      const verdict = sender.window.check(packetNumber);
      if (verdict !== 'ok') return drop(verdict);
    }
    // An unknown sender has seen nothing, so any valid packet number passes the window.

    let payload: Buffer;
    if (clusterKey === undefined) {
      payload = bytes.subarray(HEADER_BYTES);
      sender ??= this.remember(senderId, bytes.readBigUInt64BE(4), undefined);
    } else {
      const gcmKey = sender?.gcmKey ?? this.keyFor(clusterKey, bytes.readBigUInt64BE(4));
      if (gcmKey === undefined || !this.decrypt(gcmKey, bytes)) {
        // A key made for a sender not (yet) remembered is not kept.
        if (sender === undefined) gcmKey?.dispose();
        return drop('auth_failed');
      }
      payload = bytes.subarray(HEADER_BYTES, length - TAG_BYTES);
      sender ??= this.remember(senderId, bytes.readBigUInt64BE(4), gcmKey);
    }
    sender.window.accept(packetNumber);
    if (sender !== this.lastSender) this.touch(sender, keyId, incarnationHigh, incarnationLow);
    return { ok: true, incarnation: sender.incarnation, packetNumber, payload };
  }

  /** The key of a sender not remembered yet; undefined if the engine could not make one (it never throws here). */
  private keyFor(clusterKey: ClusterKey, incarnation: bigint): GcmKey | undefined {
    try {
      return this.gcm(deriveDatagramKey(clusterKey, incarnation));
    } catch {
      return undefined;
    }
  }

  /** Decrypts the body in place; false if the tag does not verify. */
  private decrypt(gcmKey: GcmKey, bytes: Buffer): boolean {
    const tagStart = bytes.length - TAG_BYTES;
    // The packet number, as two words: Buffer#copy validates its arguments in JavaScript first.
    this.nonce.writeUInt32BE(bytes.readUInt32BE(12), 4);
    this.nonce.writeUInt32BE(bytes.readUInt32BE(16), 8);
    try {
      return gcmKey.openInPlace(this.nonce, bytes.subarray(0, HEADER_BYTES), bytes.subarray(HEADER_BYTES, tagStart), bytes.subarray(tagStart));
    } catch {
      return false;
    }
  }

  private remember(senderId: string, incarnation: bigint, gcmKey: GcmKey | undefined): SenderState {
    if (this.senders.size >= this.maxSenders) {
      const oldest = this.senders.entries().next();
      if (!oldest.done) {
        this.senders.delete(oldest.value[0]);
        oldest.value[1].gcmKey?.dispose();
        this.evicted += 1;
      }
    }
    const sender: SenderState = { id: senderId, incarnation, window: new ReplayWindow(this.windowBits), gcmKey };
    this.senders.set(senderId, sender);
    return sender;
  }

  /** Moves the sender to the most recently used end of the table (where a stream of datagrams from one sender keeps it). */
  private touch(sender: SenderState, keyId: number, incarnationHigh: number, incarnationLow: number): void {
    this.senders.delete(sender.id);
    this.senders.set(sender.id, sender);
    this.lastSender = sender;
    this.lastKeyId = keyId;
    this.lastIncarnationHigh = incarnationHigh;
    this.lastIncarnationLow = incarnationLow;
  }
}

/** One frozen result per reason: a drop allocates no result object. */
const DROPS = new Map<DropReason, OpenResult>();

function drop(reason: DropReason): OpenResult {
  let result = DROPS.get(reason);
  if (result === undefined) {
    result = Object.freeze({ ok: false as const, reason });
    DROPS.set(reason, result);
  }
  return result;
}
