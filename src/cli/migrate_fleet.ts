/**
 * `blixard migrate --fleet FILE --percent P`: the first ceil(P% of N) nodes
 * a fleet file lists, one after the other, each as `migrate --config` moves
 * one, stopping at the first that fails (rolled back; the nodes before it
 * stay at the stage).
 *
 * The fleet file (TOML) lists the nodes in the order to take them:
 *
 * ```toml
 * [[node]]
 * name = "node-1"                        # optional; default: config
 * config = "/etc/blixard/agent.toml"     # the node's config file
 * metrics = "10.0.0.1:9464"              # optional; default: its [metrics] bind
 * command = ["ssh", "root@10.0.0.1", "blixard"]  # optional: run it on the node's host
 * ```
 *
 * Without `command` the node is on this host: its config file is read and
 * written here and its pid file read here (relative paths are from the fleet
 * file's directory). With `command`, that command line, followed by
 * `migrate --stage S --config FILE --json` and the settings, runs wherever it
 * runs (`ssh` to the node's host, typically), and its JSON document is the
 * node's outcome.
 *
 * Owns: {@link parseFleet}, {@link selectedCount}, {@link migrateFleet}.
 * Imports smol-toml and ./migrate_node.ts.
 *
 * @module
 */

import { isAbsolute, join } from "node:path";
import { parse as parseToml } from "smol-toml";
import { parseHostPort } from "../util/address.ts";
import type { Stage, StageLimits } from "./migrate_stages.ts";
import {
  blankOutcome,
  migrateNode,
  type MigrateSettings,
  type NodeOutcome,
} from "./migrate_node.ts";

/** One node of a fleet file. */
export interface FleetNode {
  readonly name: string;
  readonly config: string;
  readonly metrics?: string;
  /** The command line that runs `blixard` where the node is; absent: this host. */
  readonly command?: readonly string[];
}

/** A fleet file that cannot be used; the message names the file, the node and the key. */
export class FleetError extends Error {
  override readonly name = "FleetError";
  readonly code = "invalid_fleet";
}

/** Bounds on a fleet file, so a wrong file fails at once rather than slowly. */
const MAX_FLEET_NODES = 10_000;
const MAX_FLEET_BYTES = 4 * 1024 * 1024;

const NODE_KEYS = ["name", "config", "metrics", "command"];

/**
 * The nodes of fleet file `text` (read from `source`, whose directory
 * relative `config` paths of local nodes are taken from).
 * @throws {FleetError} naming every problem.
 *
 * @example
 * ```ts
 * import { parseFleet } from "./migrate_fleet.ts";
 * const nodes = parseFleet('[[node]]\nconfig = "a.toml"\n', "/etc/blixard/fleet.toml");
 * console.log(nodes[0]!.config); // /etc/blixard/a.toml
 * ```
 */
export function parseFleet(text: string, source: string): FleetNode[] {
  if (text.length > MAX_FLEET_BYTES) {
    throw new FleetError(
      `${source}: ${text.length} bytes; a fleet file is at most ${MAX_FLEET_BYTES}`,
    );
  }
  let doc: Record<string, unknown>;
  try {
    doc = parseToml(text);
  } catch (e) {
    throw new FleetError(`${source}: ${(e as Error).message.split("\n")[0]}`);
  }
  const problems: string[] = [];
  for (const key of Object.keys(doc)) {
    if (key !== "node") {
      problems.push(`${source}: ${key}: unknown key; a fleet file has [[node]] tables`);
    }
  }
  const list = doc.node;
  if (!Array.isArray(list) || list.length === 0) {
    problems.push(`${source}: no [[node]] tables: list each node's config (and metrics address)`);
    throw new FleetError(problems.join("\n"));
  }
  if (list.length > MAX_FLEET_NODES) {
    throw new FleetError(`${source}: ${list.length} nodes; at most ${MAX_FLEET_NODES}`);
  }
  const dir = source.includes("/") ? source.slice(0, source.lastIndexOf("/")) || "/" : ".";
  const nodes: FleetNode[] = [];
  const names = new Set<string>();
  list.forEach((raw: Record<string, unknown>, i: number) => {
    const at = `${source}: node[${i + 1}]`;
    for (const key of Object.keys(raw)) {
      if (!NODE_KEYS.includes(key)) {
        problems.push(`${at}.${key}: unknown key; expected ${NODE_KEYS.join(", ")}`);
      }
    }
    const { name, config, metrics, command } = raw;
    if (typeof config !== "string" || config === "") {
      problems.push(
        config === undefined
          ? `${at}.config: missing; give the path of the node's config file`
          : `${at}.config = ${JSON.stringify(config)}: expected the path of the node's config file`,
      );
      return;
    }
    if (name !== undefined && (typeof name !== "string" || name === "")) {
      problems.push(`${at}.name = ${JSON.stringify(name)}: expected a non-empty string`);
    }
    if (metrics !== undefined && (typeof metrics !== "string" || !parseHostPort(metrics))) {
      problems.push(`${at}.metrics = ${JSON.stringify(metrics)}: expected "host:port"`);
    }
    if (
      command !== undefined &&
      (!Array.isArray(command) || command.length === 0 ||
        !command.every((c) => typeof c === "string" && c !== ""))
    ) {
      problems.push(
        `${at}.command = ${
          JSON.stringify(command)
        }: expected a command line that runs blixard on the node's host, e.g. ["ssh", "root@10.0.0.1", "blixard"]`,
      );
    }
    const path = command !== undefined || isAbsolute(config) ? config : join(dir, config);
    const label = typeof name === "string" && name !== "" ? name : config;
    if (names.has(label)) problems.push(`${at}: "${label}" is listed twice`);
    names.add(label);
    nodes.push({
      name: label,
      config: path,
      ...(typeof metrics === "string" ? { metrics } : {}),
      ...(Array.isArray(command) ? { command: command as string[] } : {}),
    });
  });
  if (problems.length > 0) throw new FleetError(problems.join("\n"));
  return nodes;
}

/**
 * How many of `total` nodes make `percent` percent: ceil(P% of N), at least
 * one. A product within a rounding error of a whole number counts as it
 * (25% of 4 is 1, not 2).
 */
export function selectedCount(total: number, percent: number): number {
  const exact = (percent * total) / 100;
  return Math.max(1, Math.min(total, Math.ceil(exact - 1e-9)));
}

/** One node's outcome in a fleet, with its name. */
export type FleetNodeOutcome = NodeOutcome & { readonly name: string };

/** What `blixard migrate --fleet ... --json` prints (docs/cli.md). */
export interface FleetOutcome {
  ok: boolean;
  stage: string;
  fleet: string;
  percent: number;
  total: number;
  selected: number;
  /** The nodes taken, in order, up to the one that failed. */
  nodes: FleetNodeOutcome[];
  /** The node that failed; null when none did. */
  stoppedAt: string | null;
  /** Selected nodes not reached because of it. */
  notReached: string[];
  /** What failed: the fleet file, or the node that stopped the walk; null when nothing did. */
  failure: string | null;
}

/** Settings passed on to a `command` node's `blixard migrate`. */
function settingsArgs(settings: MigrateSettings, limits: StageLimits): string[] {
  return [
    ...(settings.dryRun ? ["--dry-run"] : []),
    "--watch-ms",
    String(settings.watchMs),
    "--interval-ms",
    String(settings.intervalMs),
    "--ready-timeout-ms",
    String(settings.readyTimeoutMs),
    "--reload-timeout-ms",
    String(settings.reloadTimeoutMs),
    "--max-rpc-errors",
    String(limits.rpcErrors),
    "--max-fallbacks",
    String(limits.fallbacks),
    "--max-leader-changes",
    String(limits.leaderChanges),
  ];
}

/** Runs `blixard migrate` on a node's host through its `command`, and reads its JSON. */
async function migrateRemote(
  node: FleetNode,
  stage: Stage,
  settings: MigrateSettings,
  progress: (line: string) => void,
): Promise<NodeOutcome> {
  const [program, ...prefix] = node.command!;
  const args = [
    ...prefix,
    "migrate",
    "--stage",
    stage.name,
    "--config",
    node.config,
    "--json",
    ...(node.metrics ? ["--metrics", node.metrics] : []),
    ...settingsArgs(settings, settings.limits(stage)),
  ];
  progress(`running ${[program, ...args].join(" ")}`);
  let output: Deno.CommandOutput;
  try {
    // Its progress lines (stderr) go straight to ours.
    output = await new Deno.Command(program!, { args, stdout: "piped", stderr: "inherit" })
      .output();
  } catch (e) {
    return unreached(
      node,
      stage,
      settings,
      `cannot run ${program}: ${(e as Error).message}`,
      false,
    );
  }
  const text = new TextDecoder().decode(output.stdout).trim();
  try {
    const doc = JSON.parse(text.split("\n").at(-1) ?? "");
    if (typeof doc?.ok === "boolean" && typeof doc?.stage === "string") return doc as NodeOutcome;
  } catch {
    // Reported below.
  }
  return unreached(
    node,
    stage,
    settings,
    `${program} exited with status ${output.code} without a migrate JSON document (stdout: ${
      text.slice(0, 200) || "empty"
    })`,
    true,
  );
}

/**
 * The outcome of a `command` node that gave none: `failure` says why; with
 * `unknown`, the command may have changed the node, which then needs a look
 * by hand (said as an incomplete rollback).
 */
function unreached(
  node: FleetNode,
  stage: Stage,
  settings: MigrateSettings,
  failure: string,
  unknown: boolean,
): NodeOutcome {
  return {
    ...blankOutcome(stage.name, node.config, settings.dryRun, node.metrics ?? null),
    failure,
    rollbackFailure: unknown ? "the node's state is unknown: check it and its file by hand" : null,
  };
}

/**
 * Takes the first {@link selectedCount} nodes to `stage`, one at a time,
 * and stops at the first failure. `onNode` sees each outcome as it comes.
 */
export async function migrateFleet(
  fleet: string,
  nodes: readonly FleetNode[],
  percent: number,
  stage: Stage,
  settings: MigrateSettings,
  progress: (line: string) => void,
  onNode: (outcome: FleetNodeOutcome, index: number, selected: number) => void,
  signal: AbortSignal,
): Promise<FleetOutcome> {
  const selected = selectedCount(nodes.length, percent);
  const out: FleetOutcome = {
    ok: true,
    stage: stage.name,
    fleet,
    percent,
    total: nodes.length,
    selected,
    nodes: [],
    stoppedAt: null,
    notReached: [],
    failure: null,
  };
  progress(
    `fleet ${fleet}: stage ${stage.name} on ${selected} of ${nodes.length} node(s) (${percent}%), one at a time`,
  );
  for (let i = 0; i < selected; i++) {
    const node = nodes[i]!;
    if (signal.aborted) {
      out.ok = false;
      out.notReached = nodes.slice(i, selected).map((n) => n.name);
      out.failure = `${signal.reason} before ${node.name}`;
      break;
    }
    const say = (line: string) => progress(`[${node.name}] ${line}`);
    say(`node ${i + 1} of ${selected}`);
    const outcome = node.command
      ? await migrateRemote(node, stage, settings, say)
      : await migrateNode(
        { config: node.config, ...(node.metrics ? { metrics: node.metrics } : {}) },
        stage,
        settings,
        say,
        signal,
      );
    const named = { name: node.name, ...outcome };
    out.nodes.push(named);
    onNode(named, i, selected);
    if (!outcome.ok) {
      out.ok = false;
      out.stoppedAt = node.name;
      out.notReached = nodes.slice(i + 1, selected).map((n) => n.name);
      out.failure = `${node.name}: ${outcome.failure}`;
      break;
    }
  }
  return out;
}
