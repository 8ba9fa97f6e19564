/**
 * The assertions the tests use, from Node's built-in `node:assert/strict`
 * (JSR's `@std/assert` cannot be reached from these machines), under the
 * names Deno's standard library made familiar.
 */
export {
  deepStrictEqual as assertEquals,
  match as assertMatch,
  ok as assert,
  rejects as assertRejects,
  throws as assertThrows,
} from "node:assert/strict";

/**
 * Runs `fn` and returns the error it throws, which must be an instance of
 * `type`; fails the test if it throws nothing or something else.
 */
export function thrown<E extends Error>(type: new (...args: never[]) => E, fn: () => unknown): E {
  try {
    fn();
  } catch (e) {
    if (e instanceof type) return e;
    throw new Error(`expected a ${type.name}, got ${e}`);
  }
  throw new Error(`expected a ${type.name}, got none`);
}

/**
 * Awaits `fn()` and returns the error it rejects with, which must be an
 * instance of `type`; fails the test if it resolves or rejects with something else.
 */
export async function rejection<E extends Error>(
  type: new (...args: never[]) => E,
  fn: () => Promise<unknown>,
): Promise<E> {
  try {
    await fn();
  } catch (e) {
    if (e instanceof type) return e;
    throw new Error(`expected a ${type.name}, got ${e}`);
  }
  throw new Error(`expected a ${type.name}, got none`);
}
