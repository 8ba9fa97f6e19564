/**
 * The `blixard` command line: one entry point for `deno task blixard ARGS`
 * and for the compiled single executable.
 *
 * Owns: dispatch to subcommands, top-level help, and turning errors into
 * one-line messages and exit statuses (0 ok, 1 failure, 2 usage).
 *
 * @module
 */

import { PROTOCOL_VERSION } from "../codec/frame.ts";
import { ConfigError } from "../config/mod.ts";
import { SecretKeyError } from "../transport/iroh/secret_key.ts";
import { IrohError } from "../transport/iroh/errors.ts";
import { AGENT_VERSION } from "../version.ts";
import { CALL_HELP, callCommand } from "./call.ts";
import { CliError, ExitCode, printJson } from "./common.ts";
import { CONFIG_HELP, configCommand } from "./config.ts";
import { KEY_HELP, keyCommand } from "./key.ts";
import { NODE_HELP, nodeCommand, RELOAD_HELP, reloadCommand } from "./node.ts";

export { AGENT_VERSION };

const HELP = `blixard ${AGENT_VERSION}: the Blixard node agent

Usage: blixard <command> [options]     (blixard <command> --help for more)

Commands:
  node --config FILE         run the agent
  reload --config FILE       make a running node re-read its config (SIGHUP)
  config check FILE          validate a configuration, print the effective one
  health --ticket T          is a node serving? (round trip, version, uptime)
  status --ticket T          members, leader, term and Raft state of a node
  key generate|show          the Iroh identity (endpoint id, ticket)
  version                    agent, runtime and wire protocol versions
  help                       this help

Global options:
  -h, --help     help for the command
  -V, --version  same as the version command
  --json         machine-readable output (where a command prints data)

Not yet: vm, cluster join|leave, dev (local 3-node cluster), gRPC clients
(--addr); see README.md, "Status".`;

const COMMANDS: Record<string, { help: string; run: (args: string[]) => Promise<number> }> = {
  node: { help: NODE_HELP, run: nodeCommand },
  reload: { help: RELOAD_HELP, run: reloadCommand },
  config: { help: CONFIG_HELP, run: configCommand },
  health: { help: CALL_HELP, run: (args) => callCommand("health", args) },
  status: { help: CALL_HELP, run: (args) => callCommand("status", args) },
  key: { help: KEY_HELP, run: keyCommand },
};

/** Runs the command line with `args`; resolves with the process exit status. */
export async function main(args: readonly string[]): Promise<number> {
  const [first, ...rest] = args;
  try {
    if (first === undefined || first === "help" || first === "--help" || first === "-h") {
      const topic = first === "help" ? rest[0] : undefined;
      console.log(topic && COMMANDS[topic] ? COMMANDS[topic].help : HELP);
      return ExitCode.Ok;
    }
    if (first === "version" || first === "--version" || first === "-V") {
      const info = { agent: AGENT_VERSION, deno: Deno.version.deno, protocol: PROTOCOL_VERSION };
      if (rest.includes("--json")) printJson(info);
      else console.log(`blixard ${info.agent} (deno ${info.deno}, wire protocol ${info.protocol})`);
      return ExitCode.Ok;
    }
    const command = COMMANDS[first];
    if (!command) {
      const hint = first.startsWith("-") ? `unknown option ${first}` : `unknown command "${first}"`;
      console.error(`blixard: ${hint}\nTry 'blixard --help'.`);
      return ExitCode.Usage;
    }
    return await command.run(rest);
  } catch (e) {
    return report(e);
  }
}

/** One line (or a few) on stderr for an error, and its exit status. */
function report(e: unknown): number {
  if (e instanceof CliError) {
    console.error(`blixard: ${e.message}`);
    return e.exitCode;
  }
  // parseArgs' errors: unknown or malformed options.
  if (e instanceof TypeError && "code" in e && String(e.code).startsWith("ERR_PARSE_ARGS")) {
    console.error(`blixard: ${e.message}\nTry 'blixard --help'.`);
    return ExitCode.Usage;
  }
  if (e instanceof ConfigError || e instanceof SecretKeyError || e instanceof IrohError) {
    console.error(`blixard: ${e.message}`);
    return ExitCode.Failure;
  }
  console.error(`blixard: unexpected error: ${e instanceof Error ? e.stack ?? e.message : e}`);
  return ExitCode.Failure;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
