/**
 * Conversions between `Uint8Array` and the `Array<number>` the Iroh binding
 * takes and returns.
 *
 * Owns: {@link toArray}, {@link toBytes}. Imports nothing.
 *
 * The binding's stream, datagram and key methods accept only plain arrays
 * (a `Uint8Array` throws "Failed to get Array length") and return plain
 * arrays. Chosen by `bench/iroh_bytes_bench.ts` (2 cores, Deno 2.9.6), 64 KiB:
 * - to an array: a plain loop into `new Array(n)` ~0.10 ms; `Array.from`
 *   ~1.3 ms, spread ~1.8 ms, `push` ~0.34 ms, `fill` then loop ~0.27 ms,
 *   `Array.prototype.slice.call` ~2.7 ms. The loop stays fastest up to 8 MiB
 *   (1.6 to 4.3 ns a byte from 64 KiB to 8 MiB).
 * - back: on arrays made in JS, `new Uint8Array(array)` ~0.05 ms (tied
 *   with `Uint8Array.from` and `set`, ~1.7x faster than a loop); but on the
 *   arrays the binding returns it takes ~20 ns a byte, and an indexed loop
 *   ~2 ns on both. So `toBytes` loops (found by profiling bench/rpc).
 * Both are small next to the binding's own marshalling (~48 ns a byte for an
 * argument, ~79 ns for a result; see `bench/iroh_floor.ts`).
 *
 * @module
 */

/**
 * Copies bytes into a new plain array, the form the binding accepts.
 *
 * @example
 * ```ts ignore
 * await send.writeAll(toArray(new TextEncoder().encode("ping")));
 * ```
 */
export function toArray(bytes: Uint8Array): number[] {
  const n = bytes.length;
  // `new Array(n)` preallocates the backing store; V8 keeps it in fast
  // (holey SMI) elements, so the loop never reallocates.
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) out[i] = bytes[i]!;
  return out;
}

/**
 * Copies a plain array from the binding into a new `Uint8Array`.
 * Values are taken modulo 256, as the `Uint8Array` constructor does; the
 * binding only ever returns 0..255.
 *
 * @example
 * ```ts ignore
 * const chunk = toBytes(await recv.read(65536));
 * ```
 */
export function toBytes(array: readonly number[]): Uint8Array {
  // An indexed loop, not `new Uint8Array(array)`: on the arrays the binding
  // returns, the constructor takes ~20 ns a byte (against ~1 ns on arrays
  // made in JS), the loop ~2 ns on both. Measured by bench/rpc: the 1 MiB echo
  // went from 0.84 to 0.97 of the binding's floor.
  const n = array.length;
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = array[i]!;
  return out;
}

/** Encodes a string as UTF-8 into a plain array (ALPNs, close reasons). */
export function textToArray(text: string): number[] {
  return toArray(new TextEncoder().encode(text));
}

/** Decodes a plain array of UTF-8 bytes (ALPNs, close reasons). */
export function arrayToText(array: readonly number[]): string {
  return new TextDecoder().decode(toBytes(array));
}
