/**
 * The stages of the gRPC → Iroh rollout that `blixard migrate` moves a node
 * between: the `[transport]` and `[transport.migration]` each stage writes
 * (exactly those of `deploy/examples/stage*-*.toml` and `rollback.toml`),
 * and the health each must keep during the watch that follows.
 *
 * Owns: {@link STAGES}, {@link rewriteToStage}, {@link stageOfConfig}. Pure.
 * Imports the config module and ./toml_edit.ts.
 *
 * @module
 */

import {
  type AgentConfig,
  configOrThrow,
  parseConfig,
  raftTransport,
  servicesOverIroh,
} from "../config/mod.ts";
import type { TransportName } from "../names.ts";
import { removeTable, setTableKeys } from "./toml_edit.ts";

/** What a stage tolerates during the watch window after the reload; counts over the window. */
export interface StageLimits {
  /**
   * Calls this node answered with a code that means it failed them
   * (`blixard_rpc_server_requests_total{code=~"UNAVAILABLE|DEADLINE_EXCEEDED|INTERNAL|UNKNOWN|DATA_LOSS"}`).
   */
  readonly rpcErrors: number;
  /** Calls this node retried over the other transport (`blixard_rpc_fallbacks_total`). */
  readonly fallbacks: number;
  /** Leaders this node learned (`blixard_raft_leader_changes_total`). */
  readonly leaderChanges: number;
}

/** A rollout stage. */
export interface Stage {
  /** What `--stage` takes. */
  readonly name: StageName;
  /** Its file in deploy/examples/. */
  readonly example: string;
  /** One line for the help and the progress. */
  readonly description: string;
  readonly mode: "grpc" | "iroh" | "dual";
  /** `[transport.migration]` in a dual stage; null: the stage has no such table. */
  readonly migration: {
    readonly preferIroh: readonly string[];
    readonly raftTransport: "grpc" | "iroh" | "adaptive";
    readonly fallbackToGrpc: boolean;
  } | null;
  /** The listeners that serve in this stage (`blixard_listener_up`). */
  readonly listeners: readonly TransportName[];
  /** The transports Raft messages may leave by (`blixard_raft_outbox_sent_by_transport_total`). */
  readonly raftOver: readonly TransportName[];
  readonly limits: StageLimits;
}

/** Stage names, in rollout order. */
export const STAGE_NAMES = ["canary", "expanded", "majority", "iroh", "rollback"] as const;

/** A name `--stage` accepts. */
export type StageName = (typeof STAGE_NAMES)[number];

// The same for every stage: a healthy node answers nothing with those codes and
// retries nothing over the other transport in a loopback cluster, but a real
// network has the odd lost packet, and one leader change (an operator's transfer)
// is not flapping. Iroh-only and gRPC-only nodes cannot fall back at all.
const DUAL_LIMITS: StageLimits = { rpcErrors: 5, fallbacks: 5, leaderChanges: 1 };
const SINGLE_LIMITS: StageLimits = { rpcErrors: 5, fallbacks: 0, leaderChanges: 1 };

/** Every stage, by name. */
export const STAGES: Readonly<Record<StageName, Stage>> = {
  canary: {
    name: "canary",
    example: "stage1-canary.toml",
    description: "5% of nodes: health, status over Iroh; the rest and Raft over gRPC",
    mode: "dual",
    migration: { preferIroh: ["health", "status"], raftTransport: "grpc", fallbackToGrpc: true },
    listeners: ["grpc", "iroh"],
    raftOver: ["grpc"],
    limits: DUAL_LIMITS,
  },
  expanded: {
    name: "expanded",
    example: "stage2-expanded.toml",
    description: "25%: monitoring and vm join them on Iroh; Raft over gRPC",
    mode: "dual",
    migration: {
      preferIroh: ["health", "status", "monitoring", "vm_ops"],
      raftTransport: "grpc",
      fallbackToGrpc: true,
    },
    listeners: ["grpc", "iroh"],
    raftOver: ["grpc"],
    limits: DUAL_LIMITS,
  },
  majority: {
    name: "majority",
    example: "stage3-majority.toml",
    description: "50%: every service over Iroh, Raft adaptive, gRPC the fallback",
    mode: "dual",
    migration: {
      preferIroh: ["all_except_raft"],
      raftTransport: "adaptive",
      fallbackToGrpc: true,
    },
    listeners: ["grpc", "iroh"],
    raftOver: ["grpc", "iroh"],
    limits: DUAL_LIMITS,
  },
  iroh: {
    name: "iroh",
    example: "stage4-iroh.toml",
    description: "100%: everything over Iroh; the gRPC listener stops",
    mode: "iroh",
    migration: null,
    listeners: ["iroh"],
    raftOver: ["iroh"],
    limits: SINGLE_LIMITS,
  },
  rollback: {
    name: "rollback",
    example: "rollback.toml",
    description: "everything over gRPC as before; the Iroh listener is parked",
    mode: "grpc",
    migration: null,
    listeners: ["grpc"],
    raftOver: ["grpc"],
    limits: SINGLE_LIMITS,
  },
};

/** The stage called `name`, if there is one. */
export function stageNamed(name: string): Stage | undefined {
  return Object.hasOwn(STAGES, name) ? STAGES[name as StageName] : undefined;
}

const toml = (value: string | boolean | readonly string[]): string =>
  Array.isArray(value)
    ? `[${value.map((v) => JSON.stringify(v)).join(", ")}]`
    : JSON.stringify(value);

/**
 * `text` (a config file) with its `[transport]` and `[transport.migration]`
 * set to `stage`'s, and every other byte as it was. A dual stage sets
 * `mode` and the three migration keys (adding the tables where missing:
 * `[transport]` after `[node]`, the migration table after it); `iroh` and
 * `rollback` set `mode` and remove `[transport.migration]` with the comments
 * inside it, as their example files have none (its keys mean nothing there).
 * @throws {TomlEditError} when the file writes those tables in a form this
 * cannot rewrite (an inline table, dotted keys).
 *
 * @example
 * ```ts
 * import { rewriteToStage, STAGES } from "./migrate_stages.ts";
 * const text = '[node]\nid = 1\n\n[transport]\nmode = "grpc" # as before\n';
 * console.log(rewriteToStage(text, STAGES.iroh));
 * // [node]\nid = 1\n\n[transport]\nmode = "iroh" # as before\n
 * ```
 */
export function rewriteToStage(text: string, stage: Stage): string {
  const migrationPath = ["transport", "migration"];
  let out = setTableKeys(text, ["transport"], [["mode", toml(stage.mode)]], {
    before: [migrationPath],
    after: [["node"]],
  });
  if (stage.migration === null) return removeTable(out, migrationPath);
  const m = stage.migration;
  out = setTableKeys(out, migrationPath, [
    ["prefer_iroh", toml(m.preferIroh)],
    ["raft_transport", toml(m.raftTransport)],
    ["fallback_to_grpc", toml(m.fallbackToGrpc)],
  ], { after: [["transport"]] });
  return out;
}

/** How a config routes: the mode, the services over Iroh, Raft, fallback. */
function routing(config: AgentConfig): string {
  const { mode, migration } = config.transport;
  return JSON.stringify([
    mode,
    [...servicesOverIroh(config)].sort(),
    raftTransport(config),
    mode === "dual" && migration.fallbackToGrpc,
  ]);
}

/** Each stage's routing, from a minimal file rewritten to it. */
const STAGE_ROUTING: ReadonlyMap<string, Stage> = new Map(
  STAGE_NAMES.map((
    n,
  ) => [
    routing(configOrThrow(parseConfig(rewriteToStage("[node]\nid = 1\n", STAGES[n])))),
    STAGES[n],
  ]),
);

/**
 * The stage whose routing `config` has (the mode, the services over Iroh,
 * how Raft travels, fallback), or null for a mix of its own. A file that
 * never took part in the rollout (mode `grpc`) is at `rollback`.
 */
export function stageOfConfig(config: AgentConfig): Stage | null {
  return STAGE_ROUTING.get(routing(config)) ?? null;
}
