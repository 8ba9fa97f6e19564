/**
 * The assertions the tests use, from Node's built-in `node:assert/strict`
 * (JSR's `@std/assert` cannot be reached from these machines), under the
 * names Deno's standard library made familiar.
 */
export {
  deepStrictEqual as assertEquals,
  ok as assert,
  rejects as assertRejects,
  throws as assertThrows,
} from "node:assert/strict";
