/**
 * Conversions between `Uint8Array` and the Iroh binding's `Array<number>`:
 * the alternatives, so the choice in `src/transport/iroh/bytes.ts` stays the
 * fastest. Run: `deno bench -A bench/iroh_bytes_bench.ts`.
 *
 * @module
 */

import { toArray, toBytes } from "../src/transport/iroh/bytes.ts";

const SIZE_BYTES = 64 * 1024;
const bytes = new Uint8Array(SIZE_BYTES).map((_, i) => (i * 31) & 0xff);
const array: number[] = toArray(bytes);
/** Keeps results alive so the work is not optimised away. */
export let sink = 0;

function viaPush(b: Uint8Array): number[] {
  const out: number[] = [];
  for (let i = 0; i < b.length; i++) out.push(b[i]!);
  return out;
}

function viaFillThenLoop(b: Uint8Array): number[] {
  const out = new Array<number>(b.length).fill(0);
  for (let i = 0; i < b.length; i++) out[i] = b[i]!;
  return out;
}

function backViaLoop(a: readonly number[]): Uint8Array {
  const out = new Uint8Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i]!;
  return out;
}

function backViaSet(a: readonly number[]): Uint8Array {
  const out = new Uint8Array(a.length);
  out.set(a);
  return out;
}

const toGroup = "Uint8Array -> Array<number>, 64 KiB";
Deno.bench("toArray: loop into new Array(n) (chosen)", { group: toGroup, baseline: true }, () => {
  sink += toArray(bytes).length;
});
Deno.bench("Array.from", { group: toGroup }, () => {
  sink += Array.from(bytes).length;
});
Deno.bench("spread [...bytes]", { group: toGroup }, () => {
  sink += [...bytes].length;
});
Deno.bench("push loop", { group: toGroup }, () => {
  sink += viaPush(bytes).length;
});
Deno.bench("new Array(n).fill(0) then loop", { group: toGroup }, () => {
  sink += viaFillThenLoop(bytes).length;
});
Deno.bench("Array.prototype.slice.call", { group: toGroup }, () => {
  sink += (Array.prototype.slice.call(bytes) as number[]).length;
});

const backGroup = "Array<number> -> Uint8Array, 64 KiB";
Deno.bench("toBytes: new Uint8Array(array) (chosen)", { group: backGroup, baseline: true }, () => {
  sink += toBytes(array).length;
});
Deno.bench("Uint8Array.from", { group: backGroup }, () => {
  sink += Uint8Array.from(array).length;
});
Deno.bench("loop into new Uint8Array(n)", { group: backGroup }, () => {
  sink += backViaLoop(array).length;
});
Deno.bench("new Uint8Array(n).set(array)", { group: backGroup }, () => {
  sink += backViaSet(array).length;
});
