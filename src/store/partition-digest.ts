/**
 * Order-independent per-partition digests, what anti-entropy and state transfer compare.
 *
 * Rules:
 * - A partition's digest is the XOR of a 64-bit hash of every entry it holds (each part,
 *   part tombstone and session header), so it does not depend on the order changes
 *   arrived in. Changing an entry is O(1): XOR its old hash out, change it, XOR it in.
 * - An entry's hash covers the session id's 64-bit hash (a SessionKey), the entry kind and
 *   the entry's fields; node ids and part names are hashed once and cached (bounded).
 * - The key is passed to every update: nothing here remembers which session an operation
 *   is about, so an update in the middle of another (an eviction) cannot misattribute it.
 */
import { type BuzHash, fmix32, mixWord, partitionOfHash } from './buzhash';

/**
 * A session id's 64-bit hash and its partition, computed once per operation. The halves
 * are signed 32-bit, as BuzHash leaves them (the digest mixes them with 32-bit operations).
 */
export interface SessionKey {
  readonly hi: number;
  readonly lo: number;
  readonly partition: number;
}

/** The key of session id among `partitions` partitions. */
export function sessionKey(hasher: BuzHash, id: string, partitions: number): SessionKey {
  hasher.hashString(id);
  const hi = hasher.hi;
  const lo = hasher.lo;
  return { hi, lo, partition: partitionOfHash(hi, lo, partitions) };
}

const DIGEST_SEED_HI = 0x5bd1e995;
const DIGEST_SEED_LO = 0x27d4eb2f;
const ENTRY_PART = 1;
const ENTRY_PART_TOMBSTONE = 2;
const ENTRY_SESSION = 3;
/** Most strings whose hash is cached: part names and node ids repeat, session ids do not. */
const STRING_HASH_LIMIT = 4096;

export class PartitionDigests {
  private readonly hi: Uint32Array;
  private readonly lo: Uint32Array;
  private readonly stringHashes = new Map<string, number>();

  constructor(partitions: number) {
    this.hi = new Uint32Array(partitions);
    this.lo = new Uint32Array(partitions);
  }

  /** The digest of one partition, as a bigint. */
  digest(partition: number): bigint {
    return (BigInt(this.hi[partition]!) << 32n) | BigInt(this.lo[partition]!);
  }

  /** XORs a part (or part tombstone) in or out of its session's partition digest. */
  xorPart(key: SessionKey, tombstone: boolean, name: string, epoch: number, version: number, writer: string): void {
    this.xorEntry(key, tombstone ? ENTRY_PART_TOMBSTONE : ENTRY_PART, mixWord(this.stringHash(name), epoch), version, this.stringHash(writer));
  }

  /** XORs a session's header (state: 0 live, 1 tombstone; epoch, owner, deletedVersion) in or out. */
  xorSession(key: SessionKey, state: number, epoch: number, deletedVersion: number, owner: string): void {
    this.xorEntry(key, ENTRY_SESSION + state, epoch, deletedVersion, this.stringHash(owner));
  }

  private stringHash(s: string): number {
    let h = this.stringHashes.get(s);
    if (h === undefined) {
      h = 0x811c9dc5;
      for (let i = 0; i < s.length; i++) h = mixWord(h, s.charCodeAt(i));
      h = fmix32(h ^ s.length);
      if (this.stringHashes.size < STRING_HASH_LIMIT) this.stringHashes.set(s, h);
    }
    return h;
  }

  /** XORs hash(key, kind, a, version, b) into the key's partition digest; twice undoes it. */
  private xorEntry(key: SessionKey, kind: number, a: number, version: number, b: number): void {
    const vHi = Math.floor(version / 0x100000000);
    const vLo = version >>> 0;
    let h1 = DIGEST_SEED_HI;
    let h2 = DIGEST_SEED_LO;
    h1 = mixWord(h1, key.hi);
    h2 = mixWord(h2, key.lo);
    h1 = mixWord(h1, key.lo ^ kind);
    h2 = mixWord(h2, key.hi ^ kind);
    h1 = mixWord(h1, a);
    h2 = mixWord(h2, b);
    h1 = mixWord(h1, vLo);
    h2 = mixWord(h2, vHi);
    h1 = mixWord(h1, b ^ vHi);
    h2 = mixWord(h2, a ^ vLo);
    const p = key.partition;
    this.hi[p] = this.hi[p]! ^ fmix32(h1 ^ h2);
    this.lo[p] = this.lo[p]! ^ fmix32(h2 + Math.imul(h1, 0x85ebca6b));
  }
}
