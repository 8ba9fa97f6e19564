/**
 * The `blixard` command line: one entry point for `deno task blixard ARGS`
 * and for the compiled single executable.
 *
 * Owns: argument parsing, help text and exit codes. Subcommands that run or
 * call a node arrive with the transports (see README, "Status").
 *
 * @module
 */

import { parseArgs } from "node:util";
import { PROTOCOL_VERSION } from "../codec/frame.ts";
import denoJson from "../../deno.json" with { type: "json" };

/** The agent's version, from deno.json. */
export const AGENT_VERSION: string = denoJson.version;

const HELP = `blixard ${AGENT_VERSION}: the Blixard node agent

Usage: blixard <command> [options]

Commands:
  version        print the agent, runtime and wire protocol versions
  help           print this help

Options:
  -h, --help     print this help
  -V, --version  same as the version command
  --json         machine-readable output (version)

Running a node, calling one (health, status, vm, cluster), keys and config
checks arrive with the transports; see README.md, "Status".`;

/** Runs the command line with `args`; returns the process exit code. */
export function main(args: readonly string[]): number {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...args],
      allowPositionals: true,
      options: {
        help: { type: "boolean", short: "h" },
        version: { type: "boolean", short: "V" },
        json: { type: "boolean" },
      },
    });
  } catch (e) {
    console.error(`blixard: ${e instanceof Error ? e.message : e}\nTry 'blixard --help'.`);
    return 2;
  }
  const { values, positionals } = parsed;
  const command = values.version ? "version" : values.help ? "help" : positionals[0] ?? "help";
  switch (command) {
    case "help":
      console.log(HELP);
      return 0;
    case "version": {
      const info = {
        agent: AGENT_VERSION,
        deno: Deno.version.deno,
        protocol: PROTOCOL_VERSION,
      };
      console.log(
        values.json
          ? JSON.stringify(info)
          : `blixard ${info.agent} (deno ${info.deno}, wire protocol ${info.protocol})`,
      );
      return 0;
    }
    default:
      console.error(`blixard: unknown command "${command}"\nTry 'blixard --help'.`);
      return 2;
  }
}

if (import.meta.main) Deno.exit(main(Deno.args));
