/**
 * Shared helpers of the Iroh layer tests: deadlines on every wait,
 * endpoints on loopback with relays disabled, and Health servers and clients
 * in child processes.
 *
 * @module
 */

export { within } from "../../wait.ts";
import { firstMatch, within } from "../../wait.ts";
import { createEndpoint, type IrohEndpoint } from "../../../src/transport/iroh/mod.ts";
export { freeUdpPort } from "../../ports.ts";

/** A fresh random 32-byte secret key. */
export function randomKey(): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(32));
}

/** An endpoint on 127.0.0.1 with relays disabled. */
export function loopbackEndpoint(alpns?: readonly string[]): Promise<IrohEndpoint> {
  return createEndpoint({
    secretKey: randomKey(),
    bindAddr: "127.0.0.1:0",
    relayMode: "disabled",
    ...(alpns === undefined ? {} : { alpns }),
  });
}

/** Deterministic pseudo-random bytes (xorshift32), so a mismatch is reproducible. */
export function patternBytes(length: number, seed = 0x9e3779b9): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

/** Concatenates chunks. */
export function concat(chunks: readonly Uint8Array[]): Uint8Array {
  let length = 0;
  for (const c of chunks) length += c.length;
  const out = new Uint8Array(length);
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.length;
  }
  return out;
}

/**
 * Starts the Health fixture server (tests/fixtures/iroh_health_server.ts) in
 * a child process, with `flags` before its arguments; resolves once it serves.
 */
export async function spawnHealthServer(
  keyHex: string,
  bindAddr: string,
  allowed: readonly string[],
  flags: readonly string[] = [],
): Promise<{ child: Deno.ChildProcess; ticket: string }> {
  const script = new URL("../../fixtures/iroh_health_server.ts", import.meta.url).pathname;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script, ...flags, keyHex, bindAddr, ...allowed],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const ticket = await within(
    firstMatch(child.stdout, /READY (\S+)/, "the server's READY line"),
    15_000,
    "the server process to be ready",
  );
  return { child, ticket };
}

/**
 * Starts a Health client (tests/fixtures/iroh_health_client.ts) with key
 * `keyHex` in a child process; resolves once it is connected to `ticket`.
 */
export async function spawnHealthClient(
  keyHex: string,
  ticket: string,
): Promise<Deno.ChildProcess> {
  const script = new URL("../../fixtures/iroh_health_client.ts", import.meta.url).pathname;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script, keyHex, ticket],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  await within(
    firstMatch(child.stdout, /(CONNECTED)/, "the client's CONNECTED line"),
    15_000,
    "the client process to connect",
  );
  return child;
}
