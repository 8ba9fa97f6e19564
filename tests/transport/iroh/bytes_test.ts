import assert from "node:assert/strict";
import fc from "fast-check";
import { arrayToText, textToArray, toArray, toBytes } from "../../../src/transport/iroh/mod.ts";

Deno.test("bytes survive the trip to the binding's array form and back", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 4096 }), (bytes) => {
      const array = toArray(bytes);
      assert.ok(Array.isArray(array));
      assert.equal(array.length, bytes.length);
      assert.deepEqual(toBytes(array), bytes);
    }),
  );
});

Deno.test("a subarray converts only its own bytes", () => {
  const whole = new Uint8Array([1, 2, 3, 4, 5, 6]);
  assert.deepEqual(toArray(whole.subarray(2, 5)), [3, 4, 5]);
  assert.deepEqual(toArray(new Uint8Array(0)), []);
});

Deno.test("a large buffer converts with no holes left", () => {
  const big = new Uint8Array(1 << 20).map((_, i) => i % 251);
  const array = toArray(big);
  assert.equal(array.length, big.length);
  assert.equal(array.every((v, i) => v === i % 251), true);
  assert.deepEqual(toBytes(array), big);
});

Deno.test("ALPN and reason text round-trip through UTF-8 arrays", () => {
  assert.deepEqual(textToArray("blixard/1"), [98, 108, 105, 120, 97, 114, 100, 47, 49]);
  assert.equal(arrayToText(textToArray("nicht erlaubt: ø")), "nicht erlaubt: ø");
});
