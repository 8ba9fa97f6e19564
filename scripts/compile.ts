/**
 * Builds the single `blixard` executable into dist/ with `deno compile`.
 *
 * `deno compile` needs `denort`, Deno's runtime-only binary, of the same
 * version as the deno running it (2.9.6). It normally downloads it; where that
 * download is impossible (these build machines reach only npm and Debian),
 * point DENORT_BIN at a copy: DENORT_BIN=/path/to/denort deno task compile.
 * Where no denort can be had, `deno task package` (scripts/package.ts) builds
 * the self-extracting file instead; that is what a release ships.
 *
 * Usage: deno task compile [--output PATH] [--target TRIPLE]
 *
 * Owns: the `deno compile` command line and the checks of DENORT_BIN. Imports
 * scripts/package.ts for the list of run-time npm packages.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { join } from "node:path";
import { runtimePackages } from "./package.ts";

const root = new URL("../", import.meta.url).pathname;

/**
 * Why DENORT_BIN cannot be used, or undefined if it looks like a denort. The
 * full deno binary is refused: compile accepts it and writes a file that only
 * opens a REPL. A denort ignores `--version` (it runs only what is embedded in
 * it), the full deno answers it.
 */
export async function denortProblem(path: string): Promise<string | undefined> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch {
    return `DENORT_BIN=${path}: no such file`;
  }
  if (!info.isFile || ((info.mode ?? 0) & 0o111) === 0) {
    return `DENORT_BIN=${path}: not an executable file`;
  }
  const out = await new Deno.Command(path, {
    args: ["--version"],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
    clearEnv: true,
  }).output().catch(() => undefined);
  const said = out ? new TextDecoder().decode(out.stdout) : "";
  if (/^deno \d/.test(said)) {
    return `DENORT_BIN=${path} is the full deno (${said.split("\n")[0]}), not denort: ` +
      `compiled with it, blixard would only open a REPL. Use denort ${Deno.version.deno} ` +
      `(denort-x86_64-unknown-linux-gnu.zip of that release), or build the package instead: ` +
      `deno task package`;
  }
  return undefined;
}

/** Native addons are loaded by `require` at run time, which compile does not follow: include them. */
async function nativeAddonPackages(): Promise<string[]> {
  const out: string[] = [];
  for (const path of await runtimePackages(root)) {
    for await (const e of Deno.readDir(join(root, path))) {
      if (e.isFile && e.name.endsWith(".node")) {
        out.push(path);
        break;
      }
    }
  }
  return out;
}

if (import.meta.main) {
  const { values } = parseArgs({
    options: {
      output: { type: "string", default: "dist/blixard" },
      target: { type: "string" },
    },
  });
  const denort = Deno.env.get("DENORT_BIN");
  if (denort !== undefined) {
    const problem = await denortProblem(denort);
    if (problem !== undefined) {
      console.error(`compile: ${problem}`);
      Deno.exit(1);
    }
  }
  const args = [
    "compile",
    "--allow-all",
    "--output",
    values.output!,
    ...(values.target ? ["--target", values.target] : []),
    ...(await nativeAddonPackages()).flatMap((path) => ["--include", path]),
    "src/cli/main.ts",
  ];
  console.error(
    `compile: deno ${args.join(" ")}` +
      (denort ? ` (DENORT_BIN=${denort})` : " (downloading denort)"),
  );
  const status = await new Deno.Command(Deno.execPath(), { args, cwd: root }).spawn().status;
  if (!status.success) {
    console.error(
      denort
        ? `compile: deno compile failed with DENORT_BIN=${denort}; it must be denort ${Deno.version.deno} ` +
          `for the target platform.`
        : `compile: deno compile failed. If the error above is a download or DNS error, this machine ` +
          `cannot fetch denort ${Deno.version.deno}; copy one here and run ` +
          `DENORT_BIN=/path/to/denort deno task compile, or build the self-extracting file ` +
          `instead: deno task package.`,
    );
    Deno.exit(status.code || 1);
  }
  console.error(`compile: wrote ${values.output}`);
}
