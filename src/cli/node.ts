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
import { loadConfigFile, type LoadOptions } from "../config/mod.ts";
import { Agent } from "../node/agent.ts";
import { createLogger } from "../util/log.ts";
import { CliError, ExitCode, printJson, usage } from "./common.ts";

/** The options of `blixard node`. */
export const NODE_OPTIONS = {
  config: { type: "string", short: "c" },
  help: { type: "boolean", short: "h" },
} as const;

export const NODE_HELP = `Usage: blixard node --config FILE

Runs the agent described by FILE (TOML, see docs/configuration.md). FILE and
the files it names (TLS files, the Iroh secret key, the data directory) are
checked first; the node does not start if any cannot be used.

Options:
  -c, --config FILE   the configuration file

Signals:
  SIGHUP            re-read FILE. If it is valid, move to it: start and stop
                    listeners, move services between transports, update the
                    allowlist; calls in flight finish. If it is not, keep
                    running on the old configuration and log why.
                    ('blixard reload' sends it and reports.)
  SIGTERM, SIGINT   stop gracefully: a leader hands leadership over, then no
                    new calls, calls in flight get [limits] shutdown_timeout_ms,
                    VMs are left running (or stopped: [vm] on_agent_stop).
                    A second signal exits at once.

On start it prints the node's gRPC address and Iroh endpoint id and ticket
(those its mode runs), and writes its pid to <data_dir>/blixard.pid.
Set BLIXARD_LOG=debug for more detail.`;

/** The options of `blixard reload`. */
export const RELOAD_OPTIONS = {
  config: { type: "string", short: "c" },
  timeout: { type: "string", default: "15000" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

export const RELOAD_HELP = `Usage: blixard reload --config FILE [--timeout MS] [--json]

Sends SIGHUP to the node running with FILE (its pid is in
<data_dir>/blixard.pid), waits for it to re-read FILE, and prints what it
did: one line of what moved, every change, and every warning the node had
about the new file; or why it kept its old configuration (exit status 1).

Options:
  -c, --config FILE   the node's configuration file, edited
  --timeout MS        how long to wait for the node's report (default 15000)
  --json              print one JSON document, on success and failure alike
                      (docs/cli.md)`;

/** What the node wrote about its last reload: `<data_dir>/reload_status.json`. */
export interface ReloadReport {
  /** Reloads since the node started, this one included. */
  readonly generation: number;
  readonly ok: boolean;
  /** When the node finished the reload, ISO 8601. */
  readonly at: string;
  /**
   * One line of what moved (`"monitoring, vm: grpc → iroh"`, `"nothing moved"`);
   * `"nothing moved"` when the new file was refused.
   */
  readonly summary: string;
  /** Every change, one line each; empty when refused. */
  readonly changes: readonly string[];
  /** The node's warnings about the new file (its config warnings). */
  readonly warnings: readonly string[];
  /** Why the new file was refused; empty when it was applied. */
  readonly errors: readonly string[];
}

/** What `blixard reload --json` prints, on success and failure alike (docs/cli.md). */
export interface ReloadOutput {
  readonly ok: boolean;
  /** The file given with --config. */
  readonly config: string;
  /** The node's pid, once read from its pid file. */
  readonly pid: number | null;
  readonly generation: number | null;
  readonly at: string | null;
  /** Null when the node did not report (not found, not signalled, timed out). */
  readonly summary: string | null;
  readonly changes: readonly string[];
  readonly warnings: readonly string[];
  readonly errors: readonly string[];
}

const PID_FILE = "blixard.pid";
const RELOAD_FILE = "reload_status.json";

/** A valid config file's config and warnings, or a CliError with every error. */
async function loadOrFail(path: string, options: LoadOptions = {}) {
  const result = await loadConfigFile(path, options);
  if (!result.ok) throw new CliError(result.errors.map((e) => e.message).join("\n"));
  return result;
}

/** Runs `blixard node ...`; resolves when the agent has stopped. */
export async function nodeCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: NODE_OPTIONS });
  if (values.help) {
    console.log(NODE_HELP);
    return ExitCode.Ok;
  }
  const configPath = values.config;
  if (!configPath) throw usage("node", "node: --config FILE is required");
  const log = createLogger("blixard");
  const first = await loadOrFail(configPath, { checkFiles: true });
  for (const w of first.warnings) log.warn(w.message);
  const config = first.config;
  const agent = await Agent.start(config, log, {
    // Fail-stop: the node may not go on acknowledging what it cannot persist. A
    // restart (systemd's Restart=on-failure) recovers from what is on disk.
    onFatal: (error) => {
      log.error("stopping: the node cannot go on safely", { error });
      Deno.exit(ExitCode.Failure);
    },
  });
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
    // Written aside and renamed into place, so `blixard reload` never reads half a report.
    const path = join(dataDir, RELOAD_FILE);
    await Deno.writeTextFile(`${path}.tmp`, JSON.stringify(full) + "\n")
      .then(() => Deno.rename(`${path}.tmp`, path))
      .catch((e) => log.warn("cannot write the reload report", { error: e }));
  };
  const onHangup = async () => {
    log.info("SIGHUP: re-reading the configuration", { file: configPath });
    const next = await loadConfigFile(configPath, { checkFiles: true });
    const refused = { summary: "nothing moved", changes: [], warnings: [] };
    if (!next.ok) {
      for (const e of next.errors) log.error(e.message);
      agent.refuseReload(`${configPath}: ${next.errors.length} error(s) in the new configuration`);
      await report({ ok: false, ...refused, errors: next.errors.map((e) => e.message) });
      return;
    }
    for (const w of next.warnings) log.warn(w.message);
    const warnings = next.warnings.map((w) => w.message);
    const result = await agent.reload(next.config);
    await report(
      result.ok
        ? { ok: true, summary: result.summary, changes: result.changes, warnings, errors: [] }
        : { ok: false, ...refused, warnings, errors: [result.error] },
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
  // Known before parsing, so that even a usage error is one JSON document.
  const json = args.includes("--json");
  const output: Mutable<ReloadOutput> = {
    ok: false,
    config: "",
    pid: null,
    generation: null,
    at: null,
    summary: null,
    changes: [],
    warnings: [],
    errors: [],
  };
  try {
    const { values } = parseArgs({ args, options: RELOAD_OPTIONS });
    if (values.help) {
      console.log(RELOAD_HELP);
      return ExitCode.Ok;
    }
    if (!values.config) throw usage("reload", "reload: --config FILE is required");
    output.config = values.config;
    const timeoutMs = Number(values.timeout);
    if (!(timeoutMs > 0)) {
      throw usage("reload", `--timeout ${values.timeout}: expected a positive number of ms`);
    }
    const report = await signalAndWait(values.config, timeoutMs, (pid) => output.pid = pid);
    Object.assign(output, {
      ok: report.ok,
      generation: report.generation,
      at: report.at,
      summary: report.summary,
      changes: report.changes,
      warnings: report.warnings,
      errors: report.errors,
    });
  } catch (e) {
    if (!json) throw e;
    const message = e instanceof Error ? e.message : String(e);
    output.errors = [message.replace(/\nTry 'blixard reload --help'\.$/, "")];
    printJson(output);
    return e instanceof CliError ? e.exitCode : ExitCode.Failure;
  }
  if (json) printJson(output);
  else if (output.ok) {
    console.log(`node reloaded ${output.config}: ${output.summary}`);
    for (const c of output.changes) console.log(`  ${c}`);
  } else {
    console.error(`node kept its running configuration; the new one was refused:`);
    for (const e of output.errors) console.error(`  ${e}`);
  }
  if (!json) { for (const w of output.warnings) console.error(`warning: ${w}`); }
  return output.ok ? ExitCode.Ok : ExitCode.Failure;
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/**
 * The pid a node running on `dataDir` wrote (`<data_dir>/blixard.pid`).
 * @throws {CliError} when there is none: no node runs with that data directory.
 */
export async function runningPid(dataDir: string): Promise<number> {
  const pidPath = join(dataDir, PID_FILE);
  const pidText = await Deno.readTextFile(pidPath).catch(() => null);
  const pid = Number(pidText?.trim());
  if (!pidText || !Number.isInteger(pid) || pid <= 0) {
    throw new CliError(
      `no running node found: ${pidPath} is missing or unreadable (is the node running with this config?)`,
    );
  }
  return pid;
}

/**
 * Sends SIGHUP to the node running with `configPath` and resolves with the
 * report it writes for that reload: what `blixard reload` and
 * `blixard migrate` do.
 * @throws {CliError} when the file is invalid, no node runs with it, it
 * cannot be signalled, or it reports nothing within `timeoutMs`.
 */
export async function signalAndWait(
  configPath: string,
  timeoutMs: number,
  onPid: (pid: number) => void = () => {},
): Promise<ReloadReport> {
  // Only to find the node: the node reads the file again and is the judge of it.
  const { config } = await loadOrFail(configPath);
  const pidPath = join(config.node.dataDir, PID_FILE);
  const pid = await runningPid(config.node.dataDir);
  onPid(pid);
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
      return now;
    }
    if (Date.now() > deadline) {
      throw new CliError(
        `sent SIGHUP to pid ${pid}, but it reported nothing within ${timeoutMs} ms; see its log`,
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The node's last report; null while there is none (or it is half written). */
async function readReport(path: string): Promise<ReloadReport | null> {
  try {
    const report = JSON.parse(await Deno.readTextFile(path)) as Partial<ReloadReport>;
    // A node started from an older build writes neither.
    return {
      ...report,
      summary: report.summary ?? "",
      warnings: report.warnings ?? [],
    } as ReloadReport;
  } catch {
    return null;
  }
}
