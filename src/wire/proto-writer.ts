/**
 * Protobuf encoding with one reused BinaryWriter. A fresh writer per message starts small
 * and doubles its buffer until the message fits (four times for a 1 KiB value), and that
 * growth was the hottest JavaScript in the client, the sidecar and the replication writer.
 * A reused writer keeps its grown buffer; finish() copies out exactly the bytes written.
 * JavaScript runs one encoder at a time, so one writer serves the whole process.
 * The varint helpers below serve encoders that size a message before writing it by hand.
 */
import { BinaryWriter } from '@bufbuild/protobuf/wire';

/** A writer that grew past this is dropped after use, so one huge message does not pin its buffer. */
const MAX_RETAINED_BYTES = 1024 * 1024;

let shared = new BinaryWriter();
let inUse = false;

/** Runs `write` on the shared writer and returns the bytes written (a copy the caller owns). */
export function encodeWith(write: (writer: BinaryWriter) => unknown): Uint8Array {
  // An encoder that re-entered would get a writer of its own.
  if (inUse) return finish(write, new BinaryWriter());
  inUse = true;
  try {
    const bytes = finish(write, shared);
    if (bytes.length > MAX_RETAINED_BYTES) shared = new BinaryWriter();
    return bytes;
  } catch (err) {
    // A failed encode leaves the writer mid-message.
    shared = new BinaryWriter();
    throw err;
  } finally {
    inUse = false;
  }
}

function finish(write: (writer: BinaryWriter) => unknown, writer: BinaryWriter): Uint8Array {
  write(writer);
  return writer.finish();
}

/** encodeWith, as a Buffer over the same bytes (no copy). */
export function encodeToBuffer(write: (writer: BinaryWriter) => unknown): Buffer {
  return bufferView(encodeWith(write));
}

/** `bytes` as a Buffer: itself when it is one, else a Buffer over the same memory (no copy). */
export function bufferView(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Chunks scratch buffers are cut from, and the largest buffer cut from one. */
const CHUNK_BYTES = 64 * 1024;
const MAX_CUT_BYTES = 16 * 1024;
let chunk = Buffer.allocUnsafeSlow(CHUNK_BYTES);
let chunkUsed = 0;

/**
 * An uninitialised buffer of `size` bytes for a message that lives briefly (written, sent,
 * dropped): cut from a 64 KiB chunk up to 16 KiB, as Buffer.allocUnsafe cuts from its 8 KiB
 * pool only below 4 KiB. A new ArrayBuffer cost ~5 µs on the benchmark machine (a 4 KiB
 * frame per Put was the Exchange client's largest cost after collecting); a chunk serves a
 * dozen or more. A buffer kept for long keeps its chunk: use it for messages on their way
 * out only (sent and dropped, or kept until their receivers acknowledge them: deltas).
 */
export function messageBuffer(size: number): Buffer {
  if (size > MAX_CUT_BYTES) return Buffer.allocUnsafe(size);
  if (chunkUsed + size > CHUNK_BYTES) {
    chunk = Buffer.allocUnsafeSlow(CHUNK_BYTES);
    chunkUsed = 0;
  }
  const out = chunk.subarray(chunkUsed, chunkUsed + size);
  // Aligned to 8, as Node's pool does.
  chunkUsed = (chunkUsed + size + 7) & ~7;
  return out;
}

/** Bytes of the varint of a non-negative integer up to 2^53. */
export function varintBytes(value: number): number {
  let bytes = 1;
  while (value >= 0x80) {
    value = Math.floor(value / 128);
    bytes++;
  }
  return bytes;
}

/** Writes the varint of a non-negative integer up to 2^53 at `at`; returns the offset after it. */
export function putVarint(out: Buffer, at: number, value: number): number {
  while (value >= 0x80) {
    out[at++] = (value % 128) | 0x80;
    value = Math.floor(value / 128);
  }
  out[at++] = value;
  return at;
}

/** Bytes of a length-delimited field of `bytes` bytes; 0 for an empty one (proto3 leaves it out). */
export function delimitedFieldBytes(tag: number, bytes: number): number {
  return bytes === 0 ? 0 : varintBytes(tag) + varintBytes(bytes) + bytes;
}

/** Bytes of a varint field; 0 for zero (proto3 leaves it out). */
export function varintFieldBytes(tag: number, n: number): number {
  return n === 0 ? 0 : varintBytes(tag) + varintBytes(n);
}

/** Writes a string field of `bytes` UTF-8 bytes at `at` (nothing when empty); the offset after it. */
export function putStringField(out: Buffer, at: number, tag: number, text: string, bytes: number): number {
  if (bytes === 0) return at;
  at = putVarint(out, at, tag);
  at = putVarint(out, at, bytes);
  return at + out.write(text, at, 'utf8');
}

/** Writes a varint field at `at` (nothing for zero); the offset after it. */
export function putVarintField(out: Buffer, at: number, tag: number, n: number): number {
  return n === 0 ? at : putVarint(out, putVarint(out, at, tag), n);
}
