/**
 * `blixard node --config FILE`: run the agent until a signal stops it, and
 * re-read FILE on SIGHUP. `blixard reload --config FILE`: send that SIGHUP
 * and report what the node made of it.
 *
 * Owns: the node and reload subcommands, the pid file and the reload report
 * file in the data directory, and signal handling. Imports config and the runner.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { join } from "node:path";
import { type AgentConfig, loadConfigFile } from "../config/mod.ts";
import { Agent } from "../node/agent.ts";
import { createLogger } from "../util/log.ts";
import { CliError, ExitCode, printJson, usage } from "./common.ts";

export const NODE_HELP = `Usage: blixard node --config FILE

Runs the agent described by FILE (TOML, see docs/configuration.md).

Signals:
  SIGHUP            re-read FILE. If it is valid, move to it: start and stop
                    listeners, move services between transports, update the
                    allowlist; calls in flight finish. If it is not, keep
                    running on the old configuration and log why.
                    ('blixard reload --config FILE' sends it and reports.)
  SIGTERM, SIGINT   stop gracefully: no new calls, calls in flight get
                    [limits] shutdown_timeout_ms. A second signal exits at once.

On start it prints the node's gRPC address and Iroh endpoint id and ticket
(those its mode runs), and writes its pid to <data_dir>/blixard.pid.
Set BLIXARD_LOG=debug for more detail.`;

export const RELOAD_HELP = `Usage: blixard reload --config FILE [--timeout MS] [--json]

Sends SIGHUP to the node running with FILE (its pid is in
<data_dir>/blixard.pid), waits for it to re-read FILE, and prints what it
did: the changes, or why it kept its old configuration (exit status 1).`;

/** What the node wrote about its last reload: `<data_dir>/reload_status.json`. */
export interface ReloadReport {
  readonly generation: number;
  readonly ok: boolean;
  readonly at: string;
  readonly changes: readonly string[];
  readonly errors: readonly string[];
}

const PID_FILE = "blixard.pid";
const RELOAD_FILE = "reload_status.json";

async function loadOrFail(path: string): Promise<AgentConfig> {
  const result = await loadConfigFile(path);
  if (!result.ok) throw new CliError(result.errors.map((e) => e.message).join("\n"));
  return result.config;
}

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
  const configPath = values.config;
  if (!configPath) throw usage("node", "node: --config FILE is required");
  const log = createLogger("blixard");
  const first = await loadConfigFile(configPath);
  if (!first.ok) throw new CliError(first.errors.map((e) => e.message).join("\n"));
  for (const w of first.warnings) log.warn(w.message);
  const config = first.config;
  const agent = await Agent.start(config, log);
  const dataDir = config.node.dataDir;
  await Deno.writeTextFile(join(dataDir, PID_FILE), `${Deno.pid}\n`);

  console.log(`node ${config.node.id} serving (mode ${config.transport.mode})`);
  if (agent.runner.grpcAddress()) console.log(`  grpc: ${agent.runner.grpcAddress()}`);
  if (agent.runner.irohEndpoint) {
    console.log(`  endpoint id: ${agent.runner.irohEndpoint.id}`);
    console.log(`  ticket: ${agent.runner.irohTicket()}`);
  }

  let generation = 0;
  const report = async (r: Omit<ReloadReport, "generation" | "at">) => {
    const full: ReloadReport = { generation: ++generation, at: new Date().toISOString(), ...r };
    await Deno.writeTextFile(join(dataDir, RELOAD_FILE), JSON.stringify(full) + "\n").catch((e) =>
      log.warn("cannot write the reload report", { error: e })
    );
  };
  const onHangup = async () => {
    log.info("SIGHUP: re-reading the configuration", { file: configPath });
    const next = await loadConfigFile(configPath);
    if (!next.ok) {
      for (const e of next.errors) log.error(e.message);
      agent.refuseReload(`${configPath}: ${next.errors.length} error(s) in the new configuration`);
      await report({ ok: false, changes: [], errors: next.errors.map((e) => e.message) });
      return;
    }
    for (const w of next.warnings) log.warn(w.message);
    const result = await agent.reload(next.config);
    await report(
      result.ok
        ? { ok: true, changes: result.changes, errors: [] }
        : { ok: false, changes: [], errors: [result.error] },
    );
  };
  Deno.addSignalListener("SIGHUP", onHangup);

  const { promise: stopped, resolve } = Promise.withResolvers<number>();
  let signals = 0;
  const onStop = (signal: Deno.Signal) => () => {
    if (++signals > 1) {
      log.warn(`second ${signal}: exiting now`);
      Deno.exit(130);
    }
    log.info(`${signal}: stopping`, { shutdown_timeout_ms: agent.config.limits.shutdownTimeoutMs });
    agent.stop().then(({ abandoned }) => {
      log.info("stopped", { abandoned_calls: abandoned });
      resolve(ExitCode.Ok);
    }, (e) => {
      log.error("stop failed", { error: e });
      resolve(ExitCode.Failure);
    });
  };
  const handlers = (["SIGTERM", "SIGINT"] as const).map((s) => [s, onStop(s)] as const);
  for (const [s, h] of handlers) Deno.addSignalListener(s, h);
  try {
    return await stopped;
  } finally {
    for (const [s, h] of handlers) Deno.removeSignalListener(s, h);
    Deno.removeSignalListener("SIGHUP", onHangup);
    await Deno.remove(join(dataDir, PID_FILE)).catch(() => {});
  }
}

/** Runs `blixard reload ...`. */
export async function reloadCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      config: { type: "string", short: "c" },
      timeout: { type: "string", default: "15000" },
      json: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(RELOAD_HELP);
    return ExitCode.Ok;
  }
  if (!values.config) throw usage("reload", "reload: --config FILE is required");
  const timeoutMs = Number(values.timeout);
  if (!(timeoutMs > 0)) {
    throw usage("reload", `--timeout ${values.timeout}: expected a positive number of ms`);
  }
  const config = await loadOrFail(values.config);
  const pidPath = join(config.node.dataDir, PID_FILE);
  const pidText = await Deno.readTextFile(pidPath).catch(() => null);
  const pid = Number(pidText?.trim());
  if (!pidText || !Number.isInteger(pid) || pid <= 0) {
    throw new CliError(
      `no running node found: ${pidPath} is missing or unreadable (is the node running with this config?)`,
    );
  }
  const reportPath = join(config.node.dataDir, RELOAD_FILE);
  const before = await readReport(reportPath);
  try {
    Deno.kill(pid, "SIGHUP");
  } catch (e) {
    throw new CliError(`cannot signal pid ${pid} from ${pidPath}: ${(e as Error).message}`);
  }
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const now = await readReport(reportPath);
    if (now && (before === null || now.at !== before.at || now.generation !== before.generation)) {
      if (values.json) printJson(now);
      else if (now.ok) {
        console.log(`node reloaded ${values.config}`);
        for (const c of now.changes) console.log(`  ${c}`);
        if (now.changes.length === 0) console.log("  (nothing to change)");
      } else {
        console.error(`node kept its running configuration; the new one was refused:`);
        for (const e of now.errors) console.error(`  ${e}`);
      }
      return now.ok ? ExitCode.Ok : ExitCode.Failure;
    }
    if (Date.now() > deadline) {
      throw new CliError(
        `sent SIGHUP to pid ${pid}, but it reported nothing within ${timeoutMs} ms; see its log`,
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function readReport(path: string): Promise<ReloadReport | null> {
  try {
    return JSON.parse(await Deno.readTextFile(path)) as ReloadReport;
  } catch {
    return null;
  }
}
