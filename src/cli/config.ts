/**
 * `blixard config check FILE`: validate a configuration, and the files it
 * names, without starting anything.
 *
 * Owns: the config subcommand. Imports the config module.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { formatEffectiveConfig, loadConfigFile } from "../config/mod.ts";
import { ExitCode, printJson, usage } from "./common.ts";

/** The options of `blixard config`. */
export const CONFIG_OPTIONS = {
  quiet: { type: "boolean", short: "q" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

export const CONFIG_HELP = `Usage: blixard config check FILE [--quiet] [--json]

Validates FILE (TOML) and the files it names (TLS files, the Iroh secret
key, the data directory), and prints the effective configuration, every
default filled in. Every problem is reported at once, each naming the key,
the value and what is allowed; the exit status is 1 if there is any.
Warnings (settings that are valid but probably not meant, and a
transport.mode taken as "dual" from a [transport.migration] section) go to
stderr and do not fail the check.

Options:
  -q, --quiet   print nothing on success but warnings
  --json        print one JSON document instead (docs/cli.md)`;

/** Runs `blixard config ...`. */
export async function configCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: CONFIG_OPTIONS,
  });
  if (values.help) {
    console.log(CONFIG_HELP);
    return ExitCode.Ok;
  }
  const [sub, file] = positionals;
  if (sub !== "check") {
    throw usage("config", `unknown config command "${sub ?? ""}": expected check`);
  }
  if (!file) throw usage("config", "config check: FILE is required");
  const result = await loadConfigFile(file, { checkFiles: true });
  if (values.json) {
    printJson(
      result.ok
        ? { ok: true, file, errors: [], warnings: result.warnings, config: result.config }
        : { ok: false, file, errors: result.errors, warnings: [], config: null },
    );
    return result.ok ? ExitCode.Ok : ExitCode.Failure;
  }
  if (!result.ok) {
    for (const e of result.errors) console.error(e.message);
    console.error(`${file}: ${result.errors.length} error(s)`);
    return ExitCode.Failure;
  }
  for (const w of result.warnings) console.error(`warning: ${w.message}`);
  if (!values.quiet) {
    console.log(`# ${file}: valid. Effective configuration, defaults filled in:`);
    console.log(formatEffectiveConfig(result.config));
  }
  return ExitCode.Ok;
}
