/**
 * `blixard node --config FILE`: run the agent until a signal stops it.
 *
 * Owns: the node subcommand, its start-up report and signal handling.
 * Imports config and the runner.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { loadConfigFile } from "../config/mod.ts";
import { startAgent } from "../runner/agent.ts";
import { createLogger } from "../util/log.ts";
import { CliError, ExitCode, usage } from "./common.ts";

export const NODE_HELP = `Usage: blixard node --config FILE

Runs the agent described by FILE (TOML, see docs/configuration.md) until
SIGTERM or SIGINT, then stops gracefully: no new calls, calls in flight get
[limits] shutdown_timeout_ms to finish. A second signal exits at once.

On start it prints the node's endpoint id and ticket; give the ticket to
'blixard health|status --ticket'. Set BLIXARD_LOG=debug for more detail.`;

/** Runs `blixard node ...`; resolves when the agent has stopped. */
export async function nodeCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { config: { type: "string", short: "c" }, help: { type: "boolean", short: "h" } },
  });
  if (values.help) {
    console.log(NODE_HELP);
    return ExitCode.Ok;
  }
  if (!values.config) throw usage("node", "node: --config FILE is required");
  const result = await loadConfigFile(values.config);
  if (!result.ok) {
    throw new CliError(result.errors.map((e) => e.message).join("\n"));
  }
  const log = createLogger("blixard");
  for (const w of result.warnings) log.warn(w.message);
  const agent = await startAgent(result.config, log);
  console.log(`node ${result.config.node.id} serving`);
  console.log(`  endpoint id: ${agent.endpoint.id}`);
  console.log(`  ticket: ${agent.ticket()}`);

  const { promise: stopped, resolve } = Promise.withResolvers<number>();
  let signals = 0;
  const onSignal = (signal: Deno.Signal) => () => {
    if (++signals > 1) {
      log.warn(`second ${signal}: exiting now`);
      Deno.exit(130);
    }
    log.info(`${signal}: stopping`, {
      shutdown_timeout_ms: result.config.limits.shutdownTimeoutMs,
    });
    agent.stop().then(({ abandoned }) => {
      log.info("stopped", { abandoned_calls: abandoned });
      resolve(ExitCode.Ok);
    }, (e) => {
      log.error("stop failed", { error: e });
      resolve(ExitCode.Failure);
    });
  };
  const handlers = (["SIGTERM", "SIGINT"] as const).map((s) => [s, onSignal(s)] as const);
  for (const [s, h] of handlers) Deno.addSignalListener(s, h);
  try {
    return await stopped;
  } finally {
    for (const [s, h] of handlers) Deno.removeSignalListener(s, h);
  }
}
