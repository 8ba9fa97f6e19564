/**
 * Builds the single `blixard` executable into dist/ with `deno compile`.
 *
 * `deno compile` needs `denort`, Deno's runtime-only binary, of the same
 * version as the deno running it (2.9.6). It normally downloads it; where that
 * download is impossible (these build machines reach only npm and Debian),
 * point DENORT_BIN at a copy: DENORT_BIN=/path/to/denort deno task compile.
 *
 * Usage: deno task compile [--output PATH] [--target TRIPLE]
 */

import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    output: { type: "string", default: "dist/blixard" },
    target: { type: "string" },
  },
});
const root = new URL("../", import.meta.url).pathname;
const args = [
  "compile",
  "--allow-all",
  "--output",
  values.output!,
  ...(values.target ? ["--target", values.target] : []),
  "src/cli/main.ts",
];
const denort = Deno.env.get("DENORT_BIN");
console.error(
  `compile: deno ${args.join(" ")}` +
    (denort ? ` (DENORT_BIN=${denort})` : " (downloading denort)"),
);
const status = await new Deno.Command(Deno.execPath(), { args, cwd: root }).spawn().status;
if (!status.success) {
  console.error(
    denort
      ? `compile: deno compile failed with DENORT_BIN=${denort}; it must be denort ${Deno.version.deno} ` +
        `for this platform (the full deno binary does not work: the result only opens a REPL).`
      : `compile: deno compile failed. If the error above is a download or DNS error, this machine ` +
        `cannot fetch denort ${Deno.version.deno}; copy one here and run ` +
        `DENORT_BIN=/path/to/denort deno task compile.`,
  );
  Deno.exit(status.code || 1);
}
console.error(`compile: wrote ${values.output}`);
