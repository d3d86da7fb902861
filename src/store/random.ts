/**
 * Seedable pseudo-random source (xoshiro128**) for protocol cores, placement and tests.
 *
 * Cores never call Math.random: they take a Random, so simulations replay exactly from a
 * seed. Not for cryptography.
 */

export interface Random {
  /** A uniformly distributed unsigned 32-bit integer. */
  nextUint32(): number;
  /** A uniformly distributed float in [0, 1). */
  next(): number;
  /** A uniformly distributed integer in [0, n). */
  below(n: number): number;
}

/** splitmix32 step, used to expand a small seed into xoshiro state. */
function splitmix32(state: { s: number }): number {
  state.s = (state.s + 0x9e3779b9) | 0;
  let z = state.s;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

export class SeededRandom implements Random {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  /** Seeds from a number or from bytes (e.g. a digest of a cluster key). */
  constructor(seed: number | Uint8Array) {
    const state = { s: 0 };
    if (typeof seed === 'number') {
      state.s = seed | 0;
      state.s = (state.s ^ Math.floor(seed / 0x100000000)) | 0;
    } else {
      for (let i = 0; i < seed.length; i++) {
        state.s = (Math.imul(state.s, 31) + seed[i]!) | 0;
        if ((i & 3) === 3) splitmix32(state);
      }
    }
    this.a = splitmix32(state);
    this.b = splitmix32(state);
    this.c = splitmix32(state);
    this.d = splitmix32(state);
    if ((this.a | this.b | this.c | this.d) === 0) this.a = 1;
  }

  nextUint32(): number {
    const result = Math.imul(rotl32(Math.imul(this.b, 5), 7), 9);
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl32(this.d, 11);
    return result >>> 0;
  }

  next(): number {
    return this.nextUint32() / 0x100000000;
  }

  below(n: number): number {
    return Math.floor(this.next() * n);
  }
}

function rotl32(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
