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
import { MetricsServerError } from "../metrics/server.ts";
import { SecretKeyError } from "../transport/iroh/secret_key.ts";
import { IrohError } from "../transport/iroh/errors.ts";
import { GrpcTransportError } from "../transport/grpc/errors.ts";
import { AGENT_VERSION } from "../version.ts";
import { CALL_OPTIONS, callCommand, HEALTH_HELP, STATUS_HELP } from "./call.ts";
import { CLUSTER_COMMAND } from "./cluster.ts";
import { CliError, type Command, ExitCode, printJson } from "./common.ts";
import { META_COMMAND } from "./meta.ts";
import { MIGRATE_HELP, MIGRATE_OPTIONS, migrateCommand } from "./migrate.ts";
import { VM_COMMAND } from "./vm.ts";
import { DEMO_HELP, DEMO_OPTIONS, demoCommand } from "./demo.ts";
import { CONFIG_HELP, CONFIG_OPTIONS, configCommand } from "./config.ts";
import { KEY_HELP, KEY_OPTIONS, keyCommand } from "./key.ts";
import {
  NODE_HELP,
  NODE_OPTIONS,
  nodeCommand,
  RELOAD_HELP,
  RELOAD_OPTIONS,
  reloadCommand,
} from "./node.ts";

export { AGENT_VERSION };

const HELP = `blixard ${AGENT_VERSION}: the Blixard node agent

Usage: blixard <command> [options]     (blixard <command> --help for more)

Commands:
  demo                            start a 3-node cluster on this machine and
                                  boot a microVM in it: the place to begin
  node --config FILE              run the agent
  reload --config FILE            make a running node re-read its config
                                  (SIGHUP) and report what moved
  migrate --stage NAME --config FILE
                                  move a running node to a rollout stage
                                  (canary, expanded, majority, iroh,
                                  rollback), watch its health, put it back
                                  if it fails; --fleet FILE --percent P for
                                  a fleet, node by node
  config check FILE               validate a configuration and the files it
                                  names, print the effective one
  health (--ticket T | --addr A)  is a node serving? over Iroh (--ticket) or
                                  gRPC (--addr); version, uptime, round trip
  status (--ticket T | --addr A)  members and their roles, leader, term, Raft
                                  progress, over Iroh (--ticket) or gRPC (--addr)
  meta get|put|del|cas|list       the cluster's metadata: read, write, delete,
                                  compare-and-set, list keys by prefix
  cluster join|leave|transfer     add a node that waits to be joined and wait
                                  until it votes; remove a node; hand
                                  leadership to another voter
  vm create|start|stop|delete|get|list|watch
                                  the cluster's microVMs: create, start and
                                  stop them and wait for the outcome; show
                                  and follow them
  key generate|show               the Iroh identity (endpoint id, ticket)
  version                         agent, runtime and wire protocol versions
  help [COMMAND [SUBCOMMAND]]     this help, or a command's

Global options:
  -h, --help     help for the command
  -V, --version  same as the version command
  --json         machine-readable output, one JSON document (docs/cli.md)

Exit status: 0 ok, 1 failure, 2 usage error.`;

export type { Command };

/** Every subcommand but `version` and `help`, by name. */
export const COMMANDS: Readonly<Record<string, Command>> = {
  node: { help: NODE_HELP, options: NODE_OPTIONS, run: nodeCommand },
  reload: { help: RELOAD_HELP, options: RELOAD_OPTIONS, run: reloadCommand },
  migrate: { help: MIGRATE_HELP, options: MIGRATE_OPTIONS, run: migrateCommand },
  config: { help: CONFIG_HELP, options: CONFIG_OPTIONS, run: configCommand },
  health: { help: HEALTH_HELP, options: CALL_OPTIONS, run: (args) => callCommand("health", args) },
  status: { help: STATUS_HELP, options: CALL_OPTIONS, run: (args) => callCommand("status", args) },
  key: { help: KEY_HELP, options: KEY_OPTIONS, run: keyCommand },
  meta: META_COMMAND,
  cluster: CLUSTER_COMMAND,
  vm: VM_COMMAND,
  demo: { help: DEMO_HELP, options: DEMO_OPTIONS, run: demoCommand },
};

/** Runs the command line with `args`; resolves with the process exit status. */
export async function main(args: readonly string[]): Promise<number> {
  const [first, ...rest] = args;
  try {
    if (first === undefined || first === "help" || first === "--help" || first === "-h") {
      const topic = first === "help" ? rest : [];
      const help = helpOf(topic);
      if (help === undefined) {
        console.error(
          `blixard: no help for "${topic.join(" ")}": unknown command\nTry 'blixard --help'.`,
        );
        return ExitCode.Usage;
      }
      console.log(help);
      return ExitCode.Ok;
    }
    if (first === "version" || first === "--version" || first === "-V") {
      const info = { agent: AGENT_VERSION, deno: Deno.version.deno, protocol: PROTOCOL_VERSION };
      if (rest.includes("--json")) printJson(info);
      else console.log(`blixard ${info.agent} (deno ${info.deno}, wire protocol ${info.protocol})`);
      return ExitCode.Ok;
    }
    const command = Object.hasOwn(COMMANDS, first) ? COMMANDS[first] : undefined;
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

/** The help of `blixard help [COMMAND [SUBCOMMAND]]`; undefined for an unknown one. */
function helpOf(topic: readonly string[]): string | undefined {
  const [name, sub] = topic;
  if (name === undefined) return HELP;
  const command = Object.hasOwn(COMMANDS, name) ? COMMANDS[name]! : undefined;
  if (!command || sub === undefined) return command?.help;
  const subs = command.subcommands;
  return subs && Object.hasOwn(subs, sub) ? subs[sub]!.help : undefined;
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
  if (
    e instanceof ConfigError || e instanceof SecretKeyError || e instanceof IrohError ||
    e instanceof MetricsServerError || e instanceof GrpcTransportError && e.code === "BIND_FAILED"
  ) {
    console.error(`blixard: ${e.message}`);
    return ExitCode.Failure;
  }
  console.error(`blixard: unexpected error: ${e instanceof Error ? e.stack ?? e.message : e}`);
  return ExitCode.Failure;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
