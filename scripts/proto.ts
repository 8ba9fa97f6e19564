/**
 * Generates the TypeScript of `proto/` into `src/rpc/gen/`, or checks that the
 * committed output is current.
 *
 *   deno run -A scripts/proto.ts gen     format, lint, regenerate src/rpc/gen/
 *   deno run -A scripts/proto.ts check   fail if proto/ is unformatted or
 *                                        unlinted, or src/rpc/gen/ is stale
 *
 * Uses only what `npm install` brings: `buf` (@bufbuild/buf) compiles the
 * schema and runs the `protoc-gen-es` plugin from node_modules with the options
 * of `buf.gen.yaml`; nothing touches the network. Exit codes: 0 ok, 1 check
 * failed or a tool failed, 2 usage error.
 *
 * @module
 */

import { fileURLToPath } from "node:url";

/** The repository root, with a trailing slash. */
const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BUF = `${ROOT}node_modules/.bin/buf`;
const PLUGIN = `${ROOT}node_modules/.bin/protoc-gen-es`;
/** Must match the `out` of buf.gen.yaml. */
const GEN_DIR = "src/rpc/gen";
const USAGE = "usage: deno run -A scripts/proto.ts gen|check";

/** A step that failed, with a message for the user. */
class ProtoScriptError extends Error {
  override name = "ProtoScriptError";
}

async function main(args: string[]): Promise<number> {
  const mode = args[0];
  if (args.length !== 1 || (mode !== "gen" && mode !== "check")) {
    console.error(`proto: expected one argument "gen" or "check", got ${JSON.stringify(args)}`);
    console.error(USAGE);
    return 2;
  }
  await requireTools();
  if (mode === "gen") {
    await buf(["format", "--write"], "format proto/");
    await buf(["lint"], "lint proto/");
    await buf(["generate"], "generate");
    console.log(`proto: regenerated ${GEN_DIR}/ from proto/`);
    return 0;
  }
  return await check();
}

async function check(): Promise<number> {
  const problems: string[] = [];
  const format = await run(BUF, ["format", "--diff", "--exit-code"]);
  if (!format.ok) {
    problems.push(
      `proto/ is not formatted (run \`deno task proto:gen\` or \`buf format -w\`):\n${format.output}`,
    );
  }
  const lint = await run(BUF, ["lint"]);
  if (!lint.ok) problems.push(`buf lint found problems in proto/:\n${lint.output}`);

  const tmp = await Deno.makeTempDir({ prefix: "blixard-proto-" });
  try {
    await buf(["generate", "--output", tmp], "generate into a temporary directory");
    const fresh = await readTree(`${tmp}/${GEN_DIR}`);
    const committed = await readTree(`${ROOT}${GEN_DIR}`);
    const stale = diffTrees(committed, fresh).map((d) => `  ${d.kind}: ${GEN_DIR}/${d.path}`);
    if (stale.length > 0) {
      problems.push(
        `${GEN_DIR}/ does not match proto/ (run \`deno task proto:gen\` and commit the result):\n` +
          stale.join("\n"),
      );
    }
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }

  if (problems.length > 0) {
    for (const p of problems) console.error(`proto: ${p.trimEnd()}`);
    return 1;
  }
  console.log(`proto: ${GEN_DIR}/ is up to date with proto/`);
  return 0;
}

/** One file that differs between the committed and the fresh output. */
export interface TreeDiff {
  /** `changed`: contents differ; `missing`: not committed; `extra`: not generated. */
  kind: "changed" | "missing" | "extra";
  /** Relative to the generated directory, with `/` separators. */
  path: string;
}

/** Compares two trees of relative path → contents, sorted by path. */
export function diffTrees(
  committed: ReadonlyMap<string, Uint8Array>,
  fresh: ReadonlyMap<string, Uint8Array>,
): TreeDiff[] {
  const out: TreeDiff[] = [];
  for (const [path, bytes] of fresh) {
    const old = committed.get(path);
    if (old === undefined) out.push({ kind: "missing", path });
    else if (!sameBytes(old, bytes)) out.push({ kind: "changed", path });
  }
  for (const path of committed.keys()) {
    if (!fresh.has(path)) out.push({ kind: "extra", path });
  }
  return out.sort((a, b) => a.path < b.path ? -1 : a.path > b.path ? 1 : 0);
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Every file under `dir` by relative path; empty if `dir` does not exist. */
async function readTree(dir: string): Promise<Map<string, Uint8Array>> {
  const files = new Map<string, Uint8Array>();
  async function walk(rel: string): Promise<void> {
    const abs = rel === "" ? dir : `${dir}/${rel}`;
    for await (const entry of Deno.readDir(abs)) {
      const path = rel === "" ? entry.name : `${rel}/${entry.name}`;
      if (entry.isDirectory) await walk(path);
      else files.set(path, await Deno.readFile(`${dir}/${path}`));
    }
  }
  try {
    await walk("");
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return files;
}

async function requireTools(): Promise<void> {
  for (const tool of [BUF, PLUGIN]) {
    try {
      await Deno.stat(tool);
    } catch {
      throw new ProtoScriptError(
        `${tool} not found: run \`npm install\` (or \`npm ci\`) in ${ROOT} first`,
      );
    }
  }
}

async function buf(args: string[], what: string): Promise<void> {
  const result = await run(BUF, args);
  if (!result.ok) {
    throw new ProtoScriptError(`buf ${args[0]} failed (${what}):\n${result.output.trimEnd()}`);
  }
}

async function run(cmd: string, args: string[]): Promise<{ ok: boolean; output: string }> {
  const { success, stdout, stderr } = await new Deno.Command(cmd, {
    args,
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { ok: success, output: dec.decode(stdout) + dec.decode(stderr) };
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (e) {
    if (!(e instanceof ProtoScriptError)) throw e;
    console.error(`proto: ${e.message}`);
    Deno.exit(1);
  }
}
