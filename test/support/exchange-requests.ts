/**
 * Seeded random ExchangeRequest operations with the field shapes the wire meets (empty,
 * ASCII, multi-byte and astral text, lone surrogates; uint64 and uint32 edges; values from
 * empty to 20 KB), for the tests of the client's writer and the sidecar's reader.
 */
import type { ExchangeRequest } from '../../src/gen/baton/v1/session';
import type { SeededRandom } from '../../src/store/random';

export type Op = NonNullable<ExchangeRequest['op']>;

/** Strings with the shapes the wire meets: empty, ASCII, multi-byte, astral, lone surrogates. */
export function text(random: SeededRandom): string {
  const alphabets = ['abc-_.0123', 'éß€', '😀𝄞', '\ud800x\udfff'];
  const length = Math.floor(random.next() * 4) === 0 ? 0 : Math.floor(random.next() * 300);
  let out = '';
  for (let i = 0; i < length; i++) {
    const alphabet = [...alphabets[Math.floor(random.next() * alphabets.length)]!];
    out += alphabet[Math.floor(random.next() * alphabet.length)];
  }
  return out;
}

export function uint64(random: SeededRandom): bigint {
  switch (Math.floor(random.next() * 4)) {
    case 0:
      return 0n;
    case 1:
      return BigInt(Math.floor(random.next() * 200));
    case 2:
      return BigInt(Math.floor(random.next() * Number.MAX_SAFE_INTEGER));
    default:
      return (1n << 64n) - 1n - BigInt(Math.floor(random.next() * 1e15));
  }
}

export function uint32(random: SeededRandom): number {
  return [0, 1, 127, 128, 300, 0xffffffff][Math.floor(random.next() * 6)]!;
}

export function op(random: SeededRandom): Op {
  const names = () => Array.from({ length: Math.floor(random.next() * 4) }, () => text(random));
  switch (Math.floor(random.next() * 4)) {
    case 0:
      return {
        $case: 'put',
        put: {
          sessionId: text(random),
          parts: Array.from({ length: Math.floor(random.next() * 5) }, () => ({
            name: text(random),
            value: Buffer.alloc(Math.floor(random.next() * 3) === 0 ? 0 : Math.floor(random.next() * 20_000), Math.floor(random.next() * 256)),
            ifVersion: random.next() < 0.5 ? undefined : uint64(random),
          })),
          ttlSeconds: uint32(random),
          minReplicas: uint32(random),
        },
      };
    case 1:
      return { $case: 'get', get: { sessionId: text(random), parts: names(), resume: random.next() < 0.5 } };
    case 2:
      return { $case: 'delete', delete: { sessionId: text(random), parts: names() } };
    default:
      return { $case: 'touch', touch: { sessionId: text(random), ttlSeconds: uint32(random) } };
  }
}
