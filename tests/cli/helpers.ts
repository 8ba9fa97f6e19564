/**
 * Shared by the command-line tests: run `blixard` from source as a child
 * process (and check its `--json` against docs/cli.md), start a real node
 * and wait until it serves, and make the files a node needs in a temporary
 * directory.
 *
 * May import: tests/assert.ts, ./json_doc.ts; the command line only as a
 * child process.
 */

import { assertEquals } from "../assert.ts";
import { assertDocumented, jsonDoc } from "./json_doc.ts";
export { freeTcpPort } from "../ports.ts";

const root = new URL("../../", import.meta.url).pathname;
const main = `${root}src/cli/main.ts`;
const dec = new TextDecoder();

/** What a finished `blixard` run printed. */
export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `blixard ARGS` to the end. `env` is added to this process's
 * environment; `cwd` defaults to the repository; `stdin` is written to its
 * standard input (else it has none).
 */
export async function blixard(
  args: string[],
  options: { env?: Record<string, string>; cwd?: string; stdin?: string } = {},
): Promise<Run> {
  const command = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", main, ...args],
    cwd: options.cwd ?? root,
    env: { NO_COLOR: "1", ...options.env },
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  });
  if (options.stdin === undefined) {
    const out = await command.output();
    return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  }
  const child = command.spawn();
  const writer = child.stdin.getWriter();
  // The child may stop reading early (a value over the limit): that is not the test's failure.
  await writer.write(new TextEncoder().encode(options.stdin)).catch(() => {});
  await writer.close().catch(() => {});
  const out = await child.output();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/**
 * Runs `blixard ARGS`, expects exit status `code` and one JSON document on
 * stdout, checks it against the table `doc` of docs/cli.md, and returns it.
 */
export async function blixardJson(
  doc: string,
  args: string[],
  code = 0,
  options: { stdin?: string } = {},
): Promise<Record<string, unknown>> {
  const r = await blixard(args, options);
  assertEquals(r.code, code, `blixard ${args.join(" ")}: ${r.stderr}`);
  assertEquals(r.stdout.trim().split("\n").length, 1, r.stdout);
  const value = JSON.parse(r.stdout);
  assertDocumented(`blixard ${args.join(" ")}`, await jsonDoc(doc), value);
  return value;
}

/** A `blixard node` child process that is serving. */
export interface RunningNode {
  child: Deno.ChildProcess;
  /** Its Iroh ticket, when its mode runs Iroh; else "". */
  ticket: string;
  endpointId: string;
  stderr: () => string;
  /** SIGTERM, and wait for it to exit; resolves with its exit status. */
  stop: () => Promise<number>;
}

/** Starts `blixard node --config FILE` and waits until its output matches `ready`. */
export async function startNode(config: string, ready = /ticket: \S+\n/): Promise<RunningNode> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", main, "node", "--config", config],
    cwd: root,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  let err = "";
  const errRead = (async () => {
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) err += chunk;
  })();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  const deadline = Date.now() + 20_000;
  while (!ready.test(out)) {
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`node did not start: ${out}\n${err}`);
    }
    const { value, done } = await reader.read();
    if (done) throw new Error(`node exited before serving: ${out}\n${err}`);
    out += value;
  }
  const outClosed = reader.cancel().catch(() => {});
  let stopped: Promise<number> | undefined;
  return {
    child,
    ticket: /ticket: (\S+)/.exec(out)?.[1] ?? "",
    endpointId: /endpoint id: (\S+)/.exec(out)?.[1] ?? "",
    stderr: () => err,
    stop: () => {
      if (stopped === undefined) {
        try {
          child.kill("SIGTERM");
        } catch {
          // Already exited.
        }
        // Done only once its output streams are closed too, so tests leave nothing open.
        stopped = child.status.then(async (s) => {
          await Promise.all([errRead, outClosed]);
          return s.code;
        });
      }
      return stopped;
    },
  };
}

/** A temporary directory with an operator key; `operatorId` is its endpoint id. */
export async function operatorDir(): Promise<{ dir: string; opKey: string; operatorId: string }> {
  const dir = await Deno.makeTempDir({ prefix: "blixard-cli-" });
  const opKey = `${dir}/operator_key`;
  const gen = await blixard(["key", "generate", "--file", opKey, "--json"]);
  assertEquals(gen.code, 0, gen.stderr);
  return { dir, opKey, operatorId: JSON.parse(gen.stdout).endpointId as string };
}

/**
 * The `[grpc]`, `[iroh]`, `[metrics]` and `[cluster]` of a node that listens
 * on loopback only (metrics on a port the system picks).
 */
export function loopbackSections(grpcPort: number, operatorId: string): string {
  return `[grpc]\nbind = "127.0.0.1:${grpcPort}"\n\n[iroh]\nbind = "127.0.0.1:0"\nrelay = "disabled"\n\n` +
    `[metrics]\nbind = "127.0.0.1:0"\n\n` +
    `[cluster]\noperator_keys = ["${operatorId}"]\n`;
}
