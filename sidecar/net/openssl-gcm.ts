/**
 * AES-256-GCM through the OpenSSL that Node itself runs on, called through koffi: one
 * cipher context per key, kept, so a datagram costs setting its nonce and the cipher work
 * itself. node:crypto makes a cipher object per datagram, runs the key schedule again and
 * hands back three new buffers: measured on 1,400-byte datagrams 7.5 µs to seal against
 * 3.0 µs here, on 60,000-byte ones 99-131 µs against 16-23 µs (docs/benchmarks.md).
 *
 * Datagrams up to SCRATCH_DATA_BYTES go through memory koffi allocated (its address
 * known): their nonce, additional data, text and tag are copied in, the calls take plain
 * addresses, and the result is copied out. koffi spends more on a Buffer argument than on
 * a number, and a call here takes up to three: measured on 1,400-byte datagrams, 2.8 µs to
 * seal with Buffer arguments against 1.4 µs with addresses (docs/benchmarks.md); the two
 * copies cost far less.
 *
 * Rules: the bytes are those of node:crypto's AES-256-GCM (the same library does the
 * work; test/openssl-gcm.test.ts seals and opens across the two). `loadOpensslGcm()`
 * answers undefined, with the reason, where it cannot be had — koffi missing, not Linux,
 * the OpenSSL functions not found in the process — or where a known-answer check against
 * node:crypto fails; callers then use node:crypto (`nodeGcm`). Every call checks the
 * lengths it passes to C. A context lives until its key's `dispose()`.
 */
import { createCipheriv, randomBytes } from 'node:crypto';
import { type GcmEngine, type GcmKey, nodeGcm, TAG_BYTES } from '../../src/wire/datagram-codec';
import { loadKoffi } from './socket-syscalls';

const KEY_BYTES = 32;
const NONCE_BYTES = 12;
/** EVP_CTRL_GCM_GET_TAG and EVP_CTRL_GCM_SET_TAG (openssl/evp.h). */
const GET_TAG = 0x10;
const SET_TAG = 0x11;
const INT_MAX = 0x7fffffff;
/** The scratch memory: nonce, the length OpenSSL writes, tag, additional data (up to AAD_BYTES), then the text. */
const NONCE_AT = 0;
const LENGTH_AT = 16;
const TAG_AT = 32;
const AAD_AT = 64;
const AAD_BYTES = 64;
const DATA_AT = AAD_AT + AAD_BYTES;
/** Texts up to this long go through the scratch memory; longer ones (where copying would cost more than it saves) do not. */
export const SCRATCH_DATA_BYTES = 16 * 1024;

type LoadResult = { gcm: GcmEngine } | { gcm: undefined; reason: string };

let loaded: LoadResult | undefined;

/** The OpenSSL engine, loaded and checked once per process; or why not. */
export function loadOpensslGcm(): LoadResult {
  loaded ??= load();
  return loaded;
}

function load(): LoadResult {
  const loadedKoffi = loadKoffi();
  if (loadedKoffi.koffi === undefined) return { gcm: undefined, reason: loadedKoffi.reason };
  const koffi = loadedKoffi.koffi;
  let engine: GcmEngine;
  try {
    // The process itself: Node links OpenSSL in and exports its functions.
    const lib = koffi.load(null);
    const aes256gcm = lib.func('void *EVP_aes_256_gcm()');
    const ctxNew = lib.func('void *EVP_CIPHER_CTX_new()');
    const ctxFree = lib.func('void EVP_CIPHER_CTX_free(void *ctx)');
    // Every per-datagram call takes the context's address as a number: koffi checks a pointer
    // object's type on each call, which cost ~0.4 µs of the five calls per 1,400-byte datagram.
    const ctrl = lib.func('int EVP_CIPHER_CTX_ctrl(uintptr_t ctx, int type, int arg, uint8_t *ptr)');
    const encryptInit = lib.func('int EVP_EncryptInit_ex(uintptr_t ctx, void *type, void *impl, const uint8_t *key, const uint8_t *iv)');
    const encryptUpdate = lib.func('int EVP_EncryptUpdate(uintptr_t ctx, uint8_t *out, int *outl, const uint8_t *in, int inl)');
    const encryptFinal = lib.func('int EVP_EncryptFinal_ex(uintptr_t ctx, uint8_t *out, int *outl)');
    const decryptInit = lib.func('int EVP_DecryptInit_ex(uintptr_t ctx, void *type, void *impl, const uint8_t *key, const uint8_t *iv)');
    const decryptUpdate = lib.func('int EVP_DecryptUpdate(uintptr_t ctx, uint8_t *out, int *outl, const uint8_t *in, int inl)');
    const decryptFinal = lib.func('int EVP_DecryptFinal_ex(uintptr_t ctx, uint8_t *out, int *outl)');
    // The same functions taking addresses (pointers passed as the integers they are).
    const ctrlAt = lib.func('int EVP_CIPHER_CTX_ctrl(uintptr_t ctx, int type, int arg, uintptr_t ptr)') as (ctx: number, type: number, arg: number, ptr: number) => number;
    const cryptInitAt = (name: string) =>
      lib.func(`int ${name}(uintptr_t ctx, uintptr_t type, uintptr_t impl, uintptr_t key, uintptr_t iv)`) as (ctx: number, type: number, impl: number, key: number, iv: number) => number;
    const cryptUpdateAt = (name: string) =>
      lib.func(`int ${name}(uintptr_t ctx, uintptr_t out, uintptr_t outl, uintptr_t in, int inl)`) as (ctx: number, out: number, outl: number, input: number, inl: number) => number;
    const cryptFinalAt = (name: string) => lib.func(`int ${name}(uintptr_t ctx, uintptr_t out, uintptr_t outl)`) as (ctx: number, out: number, outl: number) => number;
    const encryptInitAt = cryptInitAt('EVP_EncryptInit_ex');
    const encryptUpdateAt = cryptUpdateAt('EVP_EncryptUpdate');
    const encryptFinalAt = cryptFinalAt('EVP_EncryptFinal_ex');
    const decryptInitAt = cryptInitAt('EVP_DecryptInit_ex');
    const decryptUpdateAt = cryptUpdateAt('EVP_DecryptUpdate');
    const decryptFinalAt = cryptFinalAt('EVP_DecryptFinal_ex');
    const cipher = aes256gcm();
    // Written by every call that reports a length; read by none (GCM writes what it is given).
    const length = new Int32Array(1);
    // Where a call that writes nothing (GCM's final step, an empty body) points.
    const spare = Buffer.alloc(1);
    // One per process, never freed: every key's calls use it, one at a time (each call is synchronous).
    const scratchBytes = DATA_AT + SCRATCH_DATA_BYTES + TAG_BYTES;
    const scratchPointer = koffi.alloc('uint8_t', scratchBytes);
    const base = Number(koffi.address(scratchPointer));
    const scratch = Buffer.from(koffi.view(scratchPointer, scratchBytes));
    /** Copies nonce, additional data and text into the scratch memory, when they fit it. */
    const staged = (nonce: Uint8Array, aad: Uint8Array, text: Uint8Array): boolean => {
      if (text.length > SCRATCH_DATA_BYTES || aad.length > AAD_BYTES) return false;
      scratch.set(nonce, NONCE_AT);
      scratch.set(aad, AAD_AT);
      scratch.set(text, DATA_AT);
      return true;
    };
    const checkNonce = (nonce: Uint8Array, aad: Uint8Array) => {
      if (nonce.length !== NONCE_BYTES) throw new RangeError(`the nonce must be ${NONCE_BYTES} bytes`);
      if (aad.length > INT_MAX) throw new RangeError('additional data too long');
    };
    /** A context with the key schedule done, for encrypting or decrypting: koffi's pointer (to free it) and its address. */
    const context = (key: Buffer, encrypt: boolean): { pointer: unknown; at: number } => {
      const pointer = ctxNew();
      if (pointer === null) throw new Error('EVP_CIPHER_CTX_new failed');
      const at = Number(koffi.address(pointer));
      if ((encrypt ? encryptInit : decryptInit)(at, cipher, null, key, null) !== 1) {
        ctxFree(pointer);
        throw new Error('EVP_EncryptInit_ex/EVP_DecryptInit_ex failed');
      }
      return { pointer, at };
    };
    engine = (key) => {
      if (key.length !== KEY_BYTES) throw new RangeError(`the key must be ${KEY_BYTES} bytes`);
      const secret = Buffer.from(key);
      // Each made at its first use: a sealer only seals, an opener only opens.
      let sealingCtx: { pointer: unknown; at: number } | undefined;
      let openingCtx: { pointer: unknown; at: number } | undefined;
      let disposed = false;
      const gcmKey: GcmKey = {
        seal(nonce, aad, plaintext, out, at) {
          checkNonce(nonce, aad);
          if (disposed) throw new Error('the key was disposed');
          if (!Number.isInteger(at) || at < 0 || plaintext.length > INT_MAX || at + plaintext.length + TAG_BYTES > out.length) {
            throw new RangeError('no room for the ciphertext and tag');
          }
          const sealing = (sealingCtx ??= context(secret, true)).at;
          const size = plaintext.length;
          if (staged(nonce, aad, plaintext)) {
            const ok =
              encryptInitAt(sealing, 0, 0, 0, base + NONCE_AT) === 1 &&
              encryptUpdateAt(sealing, 0, base + LENGTH_AT, base + AAD_AT, aad.length) === 1 &&
              encryptUpdateAt(sealing, base + DATA_AT, base + LENGTH_AT, base + DATA_AT, size) === 1 &&
              encryptFinalAt(sealing, base + DATA_AT + size, base + LENGTH_AT) === 1 &&
              ctrlAt(sealing, GET_TAG, TAG_BYTES, base + DATA_AT + size) === 1;
            if (!ok) throw new Error('AES-256-GCM sealing failed in OpenSSL');
            out.set(scratch.subarray(DATA_AT, DATA_AT + size + TAG_BYTES), at);
            return;
          }
          const ok =
            encryptInit(sealing, null, null, null, nonce) === 1 &&
            encryptUpdate(sealing, null, length, aad, aad.length) === 1 &&
            encryptUpdate(sealing, out.subarray(at, at + plaintext.length), length, plaintext, plaintext.length) === 1 &&
            encryptFinal(sealing, out.subarray(at + plaintext.length), length) === 1 &&
            ctrl(sealing, GET_TAG, TAG_BYTES, out.subarray(at + plaintext.length, at + plaintext.length + TAG_BYTES)) === 1;
          if (!ok) throw new Error('AES-256-GCM sealing failed in OpenSSL');
        },
        openInPlace(nonce, aad, data, tag) {
          checkNonce(nonce, aad);
          if (disposed) throw new Error('the key was disposed');
          if (tag.length !== TAG_BYTES || data.length > INT_MAX) return false;
          const opening = (openingCtx ??= context(secret, false)).at;
          const size = data.length;
          if (staged(nonce, aad, data)) {
            scratch.set(tag, TAG_AT);
            const ok =
              decryptInitAt(opening, 0, 0, 0, base + NONCE_AT) === 1 &&
              decryptUpdateAt(opening, 0, base + LENGTH_AT, base + AAD_AT, aad.length) === 1 &&
              decryptUpdateAt(opening, base + DATA_AT, base + LENGTH_AT, base + DATA_AT, size) === 1 &&
              ctrlAt(opening, SET_TAG, TAG_BYTES, base + TAG_AT) === 1 &&
              decryptFinalAt(opening, base + DATA_AT + size, base + LENGTH_AT) === 1;
            if (ok) data.set(scratch.subarray(DATA_AT, DATA_AT + size));
            return ok;
          }
          // OpenSSL refuses a null pointer, which an empty buffer may pass: a spare byte instead.
          const body = data.length === 0 ? spare : data;
          return (
            decryptInit(opening, null, null, null, nonce) === 1 &&
            decryptUpdate(opening, null, length, aad, aad.length) === 1 &&
            decryptUpdate(opening, body, length, body, data.length) === 1 &&
            ctrl(opening, SET_TAG, TAG_BYTES, tag) === 1 &&
            decryptFinal(opening, spare, length) === 1
          );
        },
        dispose() {
          if (disposed) return;
          disposed = true;
          if (sealingCtx !== undefined) ctxFree(sealingCtx.pointer);
          if (openingCtx !== undefined) ctxFree(openingCtx.pointer);
          secret.fill(0);
        },
      };
      return gcmKey;
    };
  } catch (err) {
    return { gcm: undefined, reason: `OpenSSL's AES-256-GCM functions are not reachable in this process (${(err as Error).message})` };
  }
  const mismatch = knownAnswer(engine);
  return mismatch === undefined ? { gcm: engine } : { gcm: undefined, reason: `its AES-256-GCM did not match node:crypto's (${mismatch})` };
}

/** Why `engine` disagrees with node:crypto on random inputs (sealing and opening), or undefined. */
function knownAnswer(engine: GcmEngine): string | undefined {
  const key = randomBytes(KEY_BYTES);
  const theirs = nodeGcm(key);
  const ours = engine(key);
  try {
    for (const size of [0, 1, 15, 16, 17, 1400, SCRATCH_DATA_BYTES, SCRATCH_DATA_BYTES + 1]) {
      const nonce = randomBytes(NONCE_BYTES);
      const aad = randomBytes(20);
      const plaintext = randomBytes(size);
      const expected = Buffer.alloc(size + TAG_BYTES);
      const cipher = createCipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES });
      cipher.setAAD(aad);
      Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]).copy(expected);
      const sealed = Buffer.alloc(size + TAG_BYTES + 3);
      ours.seal(nonce, aad, plaintext, sealed, 3);
      if (!sealed.subarray(3).equals(expected)) return `sealing ${size} bytes`;
      const forged = Buffer.from(expected);
      forged[forged.length - 1]! ^= 1;
      if (ours.openInPlace(nonce, aad, forged.subarray(0, size), forged.subarray(size))) return `a forged tag on ${size} bytes was accepted`;
      const opened = Buffer.from(expected);
      if (!ours.openInPlace(nonce, aad, opened.subarray(0, size), opened.subarray(size)) || !opened.subarray(0, size).equals(plaintext)) return `opening ${size} bytes`;
      if (!theirs.openInPlace(nonce, aad, sealed.subarray(3, 3 + size), sealed.subarray(3 + size))) return `node:crypto refused ${size} sealed bytes`;
    }
    return undefined;
  } finally {
    ours.dispose();
  }
}
