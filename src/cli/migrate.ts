/**
 * `blixard migrate --stage NAME (--config FILE | --fleet FILE --percent P)`:
 * move a running node, or the first P% of a fleet node by node, to a stage
 * of the gRPC → Iroh rollout, watch the stage's health on each node's own
 * metrics, and put a node back as it was when it fails (docs/cli.md).
 *
 * Owns: the migrate subcommand's options, help, output and signals.
 * Imports ./migrate_node.ts, ./migrate_fleet.ts, ./migrate_stages.ts.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { CliError, ExitCode, printJson, usage } from "./common.ts";
import {
  FleetError,
  type FleetNodeOutcome,
  type FleetOutcome,
  migrateFleet,
  parseFleet,
} from "./migrate_fleet.ts";
import {
  blankOutcome,
  migrateNode,
  type MigrateSettings,
  type NodeOutcome,
} from "./migrate_node.ts";
import { STAGE_NAMES, type StageLimits, stageNamed, STAGES } from "./migrate_stages.ts";

/** The options of `blixard migrate`. */
export const MIGRATE_OPTIONS = {
  stage: { type: "string" },
  config: { type: "string", short: "c" },
  fleet: { type: "string" },
  percent: { type: "string" },
  "dry-run": { type: "boolean" },
  json: { type: "boolean" },
  metrics: { type: "string" },
  "watch-ms": { type: "string", default: "30000" },
  "interval-ms": { type: "string", default: "1000" },
  "ready-timeout-ms": { type: "string", default: "30000" },
  "reload-timeout-ms": { type: "string", default: "15000" },
  "max-rpc-errors": { type: "string" },
  "max-fallbacks": { type: "string" },
  "max-leader-changes": { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

const stageLines = STAGE_NAMES.map((n) => {
  const { description, example, limits } = STAGES[n];
  return `  ${
    n.padEnd(9)
  } ${description}\n            (${example}; limits ${limits.rpcErrors}/${limits.fallbacks}/${limits.leaderChanges})`;
}).join("\n");

export const MIGRATE_HELP = `Usage: blixard migrate --stage NAME --config FILE [options]
       blixard migrate --stage NAME --fleet FILE --percent P [options]

Moves a running node to a stage of the gRPC -> Iroh rollout. It rewrites
only [transport] and [transport.migration] of FILE (comments, key order and
every other byte stay), validates the result as 'config check' does, writes
it atomically (same mode and owner), reloads the node as 'reload' does,
waits for /readyz 200 on its [metrics] bind, then watches the node's own
/metrics for --watch-ms: /readyz stays 200, a leader is known, exactly the
stage's listeners serve, Raft leaves only by the stage's transports, and RPC
errors, transport fallbacks and leader changes stay within the stage's
limits. If anything fails it puts the previous file back byte for byte,
reloads, waits for readiness, and exits 1 saying what failed. Ctrl-C during
the change fails it the same way (a second Ctrl-C exits at once).

Stages, in rollout order, with their file in deploy/examples/ and their
limits over the watch window (RPC errors/fallbacks/leader changes):
${stageLines}

Fleet: FILE lists nodes as [[node]] tables: config (required), name,
metrics (host:port, default: the config's [metrics] bind), command. The
first ceil(P% of N) nodes are taken in order, one at a time; the first that
fails is rolled back and the rest are not touched, while those before it
stay at the stage. A node without 'command' must be on this host (its file
is edited here and its pid file read here). With command = ["ssh",
"root@host", "blixard"] (or any command line that runs blixard there),
'migrate --config' runs on the node's host through it; that reaches what the
command reaches, and this program does nothing to SSH itself.

Options:
  --stage NAME           the stage: ${STAGE_NAMES.join(", ")}
  -c, --config FILE      the node's configuration file (the node runs here)
  --fleet FILE           a fleet file instead (with --percent)
  --percent P            how much of the fleet, 0 < P <= 100
  --dry-run              print the diff and what would move; change nothing
  --metrics HOST:PORT    where the node's /metrics and /readyz answer
                         (default: its [metrics] bind)
  --watch-ms MS          how long to watch after the node is ready (30000)
  --interval-ms MS       between two readings (1000)
  --ready-timeout-ms MS  how long the node may take to be ready (30000)
  --reload-timeout-ms MS how long it may take to report a reload (15000)
  --max-rpc-errors N     override the stage's limits
  --max-fallbacks N
  --max-leader-changes N
  --json                 one JSON document, on success and failure alike
                         (docs/cli.md)

Exit status: 0 the stage holds (or a dry run is valid), 1 it failed (rolled
back unless it says otherwise), 2 usage error.`;

type Values = ReturnType<typeof parseMigrateArgs>["values"];

function parseMigrateArgs(args: string[]) {
  return parseArgs({ args, options: MIGRATE_OPTIONS, allowPositionals: false });
}

/** A whole number of ms from option `name`, at least `min`. */
function msOption(values: Values, name: keyof Values, min: number): number {
  const text = String(values[name]);
  const n = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(n) || n < min) {
    throw usage("migrate", `--${name} ${text}: expected a whole number of ms, at least ${min}`);
  }
  return n;
}

/** The stage's limits with the operator's overrides. */
function limitsOf(values: Values): (base: StageLimits) => StageLimits {
  const pick = (name: "max-rpc-errors" | "max-fallbacks" | "max-leader-changes") => {
    const text = values[name];
    if (text === undefined) return undefined;
    if (!/^\d+$/.test(text)) {
      throw usage("migrate", `--${name} ${text}: expected a whole number (0 or more)`);
    }
    return Number(text);
  };
  const rpcErrors = pick("max-rpc-errors");
  const fallbacks = pick("max-fallbacks");
  const leaderChanges = pick("max-leader-changes");
  return (base) => ({
    rpcErrors: rpcErrors ?? base.rpcErrors,
    fallbacks: fallbacks ?? base.fallbacks,
    leaderChanges: leaderChanges ?? base.leaderChanges,
  });
}

/**
 * Aborts on the first SIGINT or SIGTERM (the change then rolls back), and
 * exits at once on the second. `stop()` removes the listeners.
 */
function interruptions(): { signal: AbortSignal; stop: () => void } {
  const controller = new AbortController();
  const handlers = (["SIGINT", "SIGTERM"] as const).map((name) => {
    const handler = () => {
      if (controller.signal.aborted) {
        console.error(`migrate: second ${name}: exiting now, without finishing the rollback`);
        Deno.exit(130);
      }
      console.error(`migrate: ${name}: failing the stage and rolling back (again to exit at once)`);
      controller.abort(`interrupted by ${name}`);
    };
    Deno.addSignalListener(name, handler);
    return [name, handler] as const;
  });
  return {
    signal: controller.signal,
    stop: () => {
      for (const [name, handler] of handlers) Deno.removeSignalListener(name, handler);
    },
  };
}

/** Runs `blixard migrate ...`. */
export async function migrateCommand(args: string[]): Promise<number> {
  // Known before parsing, so that even a usage error is one JSON document.
  const json = args.includes("--json");
  let values: Values;
  try {
    values = parseMigrateArgs(args).values;
    if (values.help) {
      console.log(MIGRATE_HELP);
      return ExitCode.Ok;
    }
    if (!values.stage) throw usage("migrate", "migrate: --stage NAME is required");
    if (!stageNamed(values.stage)) {
      throw usage(
        "migrate",
        `--stage ${values.stage}: unknown stage; expected ${STAGE_NAMES.join(", ")}`,
      );
    }
    if (!values.config === !values.fleet) {
      throw usage("migrate", "migrate: give --config FILE (one node) or --fleet FILE --percent P");
    }
    if (values.config && values.percent !== undefined) {
      throw usage("migrate", "--percent goes with --fleet, not --config");
    }
    if (values.fleet && values.metrics !== undefined) {
      throw usage("migrate", "--metrics goes with --config; a fleet file gives each node's");
    }
  } catch (e) {
    if (!json) throw e;
    printJson(failureDocument(args, e));
    return e instanceof CliError ? e.exitCode : ExitCode.Usage;
  }
  try {
    const stage = stageNamed(values.stage)!;
    const limits = limitsOf(values);
    const settings: MigrateSettings = {
      dryRun: values["dry-run"] ?? false,
      watchMs: msOption(values, "watch-ms", 0),
      intervalMs: msOption(values, "interval-ms", 50),
      readyTimeoutMs: msOption(values, "ready-timeout-ms", 0),
      reloadTimeoutMs: msOption(values, "reload-timeout-ms", 1),
      limits: (s) => limits(s.limits),
    };
    if (values.fleet) {
      const percent = Number(values.percent);
      if (values.percent === undefined || !(percent > 0 && percent <= 100)) {
        throw usage(
          "migrate",
          `--percent ${values.percent ?? "(missing)"}: expected a number above 0, at most 100`,
        );
      }
      return await fleetCommand(values.fleet, percent, stage.name, settings, json);
    }
    return await nodeCommand(values.config!, values.metrics, stage.name, settings, json);
  } catch (e) {
    if (!json) throw e;
    printJson(failureDocument(args, e));
    return e instanceof CliError ? e.exitCode : ExitCode.Failure;
  }
}

/** `--name VALUE` or `--name=VALUE` as given, whether or not the arguments parse. */
function rawOption(args: readonly string[], name: string): string | undefined {
  for (let i = 0; i < args.length; i++) {
    if (args[i] === `--${name}`) return args[i + 1];
    if (args[i]!.startsWith(`--${name}=`)) return args[i]!.slice(name.length + 3);
  }
  return undefined;
}

/**
 * The one JSON document of a run that failed before any node was taken (a
 * usage error, an unreadable fleet file): the fleet's shape with --fleet,
 * else a node's.
 */
function failureDocument(args: readonly string[], e: unknown): NodeOutcome | FleetOutcome {
  const failure = (e instanceof Error ? e.message : String(e))
    .replace(/\nTry 'blixard migrate --help'\.$/, "");
  const stage = rawOption(args, "stage") ?? "";
  const fleet = rawOption(args, "fleet");
  if (fleet !== undefined) {
    const percent = Number(rawOption(args, "percent"));
    return {
      ok: false,
      stage,
      fleet,
      percent: Number.isFinite(percent) ? percent : 0,
      total: 0,
      selected: 0,
      nodes: [],
      stoppedAt: null,
      notReached: [],
      failure,
    };
  }
  const config = rawOption(args, "config") ?? rawOption(args, "c") ?? "";
  return { ...blankOutcome(stage, config, args.includes("--dry-run"), null), failure };
}

const progress = (line: string) => console.error(`migrate: ${line}`);

async function nodeCommand(
  config: string,
  metrics: string | undefined,
  stageName: string,
  settings: MigrateSettings,
  json: boolean,
): Promise<number> {
  const stage = stageNamed(stageName)!;
  const stop = settings.dryRun ? null : interruptions();
  let outcome: NodeOutcome;
  try {
    outcome = await migrateNode(
      { config, ...(metrics ? { metrics } : {}) },
      stage,
      settings,
      progress,
      stop?.signal ?? new AbortController().signal,
    );
  } finally {
    stop?.stop();
  }
  if (json) printJson(outcome);
  else printNode(outcome, "");
  return outcome.ok ? ExitCode.Ok : ExitCode.Failure;
}

async function fleetCommand(
  fleet: string,
  percent: number,
  stageName: string,
  settings: MigrateSettings,
  json: boolean,
): Promise<number> {
  const stage = stageNamed(stageName)!;
  let text: string;
  try {
    text = await Deno.readTextFile(fleet);
  } catch (e) {
    throw new CliError(`cannot read fleet file ${fleet}: ${(e as Error).message}`);
  }
  let nodes;
  try {
    nodes = parseFleet(text, fleet);
  } catch (e) {
    if (e instanceof FleetError) throw new CliError(e.message);
    throw e;
  }
  const stop = settings.dryRun ? null : interruptions();
  let outcome: FleetOutcome;
  try {
    outcome = await migrateFleet(
      fleet,
      nodes,
      percent,
      stage,
      settings,
      progress,
      (node: FleetNodeOutcome) => {
        if (!json) printNode(node, `[${node.name}] `);
      },
      stop?.signal ?? new AbortController().signal,
    );
  } finally {
    stop?.stop();
  }
  if (json) printJson(outcome);
  else printFleet(outcome);
  return outcome.ok ? ExitCode.Ok : ExitCode.Failure;
}

function printNode(o: NodeOutcome, prefix: string): void {
  const from = o.from ?? "a mix of its own";
  if (o.dryRun) {
    if (o.diff) console.log(o.diff.trimEnd());
    if (o.ok) {
      console.log(
        o.changed
          ? `${prefix}dry run: ${o.config} would go from ${from} to stage ${o.stage} (valid as config check reads it); the reload would move: ${o.planned}; nothing was changed`
          : `${prefix}dry run: ${o.config} is already at stage ${o.stage}; nothing to change`,
      );
    }
    for (const w of o.warnings) console.error(`warning: ${w}`);
    if (!o.ok) console.error(`${prefix}blixard: migrate ${o.config}: ${o.failure}`);
    return;
  }
  if (o.ok) {
    if (!o.changed) {
      console.log(`${prefix}${o.config} is already at stage ${o.stage}; nothing changed`);
    } else {
      console.log(`${prefix}migrated ${o.config} from ${from} to stage ${o.stage}: ${o.summary}`);
      for (const c of o.changes) console.log(`${prefix}  ${c}`);
      const w = o.watch!;
      console.log(
        `${prefix}  held for ${
          (w.elapsedMs / 1000).toFixed(1)
        } s (${w.samples} readings): ready throughout, a leader known, ${w.rpcErrors} RPC errors in ${w.rpcCalls} calls (limit ${w.limits.rpcErrors}), ${w.fallbacks} fallbacks (limit ${w.limits.fallbacks}), ${w.leaderChanges} leader changes (limit ${w.limits.leaderChanges})`,
      );
    }
    for (const w of o.warnings) console.error(`warning: ${w}`);
    return;
  }
  console.error(`${prefix}blixard: migrate ${o.config} to stage ${o.stage} failed: ${o.failure}`);
  if (o.rolledBack) {
    console.error(
      `${prefix}rolled back: ${o.config} is as it was (${from}), reloaded, and the node is ready on it`,
    );
  } else if (o.rollbackFailure) {
    console.error(
      `${prefix}ROLLBACK INCOMPLETE: ${o.rollbackFailure}. Check the node and ${o.config} by hand`,
    );
  }
}

function printFleet(o: FleetOutcome): void {
  const done = o.nodes.filter((n) => n.ok).map((n) => n.name);
  if (o.ok) {
    console.log(
      `fleet ${o.fleet}: ${done.length} of ${o.total} node(s) (${o.percent}%) at stage ${o.stage}${
        o.nodes[0]?.dryRun ? " (dry run: nothing changed)" : ""
      }: ${done.join(", ")}`,
    );
    return;
  }
  const failed = o.stoppedAt === null ? null : o.nodes.at(-1)!;
  const what = failed === null
    ? o.failure
    : `stopped at ${o.stoppedAt}, which ${
      failed.rolledBack
        ? "was rolled back"
        : failed.rollbackFailure
        ? `needs a look by hand (${failed.rollbackFailure})`
        : "failed before its file was changed"
    }`;
  console.error(
    `fleet ${o.fleet}: ${what}; ${
      done.length > 0
        ? `${done.join(", ")} stay${done.length === 1 ? "s" : ""} at stage ${o.stage}`
        : "no node was moved"
    }${o.notReached.length > 0 ? `; not reached: ${o.notReached.join(", ")}` : ""}`,
  );
}
