/**
 * The only randomness the Raft core uses: an injected source, so a seed
 * replays a run exactly.
 *
 * Owns: {@link RandomSource} and {@link seededRandom}. Imports nothing.
 *
 * @module
 */

/** A source of uniformly distributed integers. */
export interface RandomSource {
  /** An integer in `[0, bound)`; `bound` is a positive integer below 2^32. */
  nextInt(bound: number): number;
}

/**
 * A small, fast, seeded generator (mulberry32): the same seed gives the same
 * sequence on every machine. Not for cryptography. Drivers seed it from a
 * real random source; tests and simulations from their seed.
 *
 * @example
 * ```ts
 * import { seededRandom } from "./random.ts";
 * const a = seededRandom(42), b = seededRandom(42);
 * console.log(a.nextInt(10) === b.nextInt(10)); // true
 * ```
 */
export function seededRandom(seed: number): RandomSource {
  let state = seed >>> 0;
  const next32 = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
  return {
    nextInt(bound: number): number {
      if (!(bound >= 1 && bound <= 0xffff_ffff) || bound % 1 !== 0) {
        throw new RangeError(`random: bound ${bound}: expected an integer 1..2^32-1`);
      }
      // Multiply-shift: uniform enough for timeouts and fault injection.
      return Math.floor((next32() / 0x1_0000_0000) * bound);
    },
  };
}
