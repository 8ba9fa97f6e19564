/**
 * The predecessor's rollout plan, stage by stage, exactly as it was written
 * (tests/config/fixtures/canary_plan_stage*.toml): stages 2 and 3 are a
 * `[transport.migration]` section with no `[transport] mode`, meant on top of
 * stage 1's `mode = "dual"`. Read as the default mode "grpc", reloading
 * stage 2 onto a stage-1 node moved every service off Iroh; each stage must
 * route as the plan intends.
 */

import { assert, assertEquals } from "../assert.ts";
import {
  type AgentConfig,
  loadConfigFile,
  parseConfig,
  raftTransport,
  SERVICE_NAMES,
  servicesOverIroh,
} from "../../src/config/mod.ts";
import { transportsOf } from "../../src/runner/routing.ts";
import { valid, withNode } from "./helpers.ts";

const FIXTURES = new URL("./fixtures/", import.meta.url).pathname;

/** What a node with `config` does: listeners, services over Iroh, raft, fallback. */
function routes(config: AgentConfig) {
  return {
    mode: config.transport.mode,
    listeners: transportsOf(config.transport.mode),
    overIroh: [...servicesOverIroh(config)].sort(),
    raft: raftTransport(config),
    fallbackToGrpc: config.transport.mode === "dual" && config.transport.migration.fallbackToGrpc,
  };
}

async function stage(n: number) {
  const path = `${FIXTURES}canary_plan_stage${n}.toml`;
  const result = await loadConfigFile(path);
  assert(result.ok, result.ok ? "" : result.errors.map((e) => e.message).join("\n"));
  return { path, config: result.config, warnings: result.warnings };
}

Deno.test("plan stage 1 (5%): dual, health and status over Iroh, raft on gRPC, fallback on", async () => {
  const { config, warnings } = await stage(1);
  assertEquals(routes(config), {
    mode: "dual",
    listeners: ["grpc", "iroh"],
    overIroh: ["health", "status"],
    raft: "grpc",
    fallbackToGrpc: true,
  });
  assertEquals(warnings, []);
});

Deno.test("plan stage 2 (25%), a migration section alone, stays dual: monitoring and vm_ops join Iroh", async () => {
  const { path, config, warnings } = await stage(2);
  assertEquals(routes(config), {
    mode: "dual",
    listeners: ["grpc", "iroh"],
    overIroh: ["health", "monitoring", "status", "vm"],
    raft: "grpc",
    fallbackToGrpc: true,
  });
  assertEquals(warnings.map((w) => [w.code, w.path]), [["implied_mode", "transport.mode"]]);
  assertEquals(
    warnings[0]!.message,
    `${path}: transport.mode: not set, so taken as "dual": the file has a [transport.migration] section, and "dual" is the only mode that reads it (without the section the mode would be "grpc"); write mode = "dual" to say so`,
  );
});

Deno.test("plan stage 3 (50%), a migration section alone, stays dual: every service over Iroh, raft adaptive", async () => {
  const { config, warnings } = await stage(3);
  assertEquals(routes(config), {
    mode: "dual",
    listeners: ["grpc", "iroh"],
    overIroh: [...SERVICE_NAMES].sort(),
    raft: "adaptive",
    fallbackToGrpc: true,
  });
  assertEquals(warnings.map((w) => w.code), ["implied_mode"]);
});

Deno.test("plan stage 4 (100%): everything over Iroh, the gRPC listener off", async () => {
  const { config, warnings } = await stage(4);
  assertEquals(routes(config), {
    mode: "iroh",
    listeners: ["iroh"],
    overIroh: [...SERVICE_NAMES].sort(),
    raft: "iroh",
    fallbackToGrpc: false,
  });
  assertEquals(warnings, []);
});

Deno.test('an explicit mode = "grpc" over a stage\'s migration section is a rollback, never refused', async () => {
  const stage3 = await Deno.readTextFile(`${FIXTURES}canary_plan_stage3.toml`);
  const rollback = stage3.replace("[transport.migration]", '[transport]\nmode = "grpc"\n\n$&');
  const result = parseConfig(rollback);
  assert(result.ok, result.ok ? "" : result.errors.map((e) => e.message).join("\n"));
  assertEquals(routes(result.config), {
    mode: "grpc",
    listeners: ["grpc"],
    overIroh: [],
    raft: "grpc",
    fallbackToGrpc: false,
  });
  assertEquals(result.warnings.map((w) => [w.code, w.path]), [
    ["ignored_key", "transport.migration.prefer_iroh"],
    ["ignored_key", "transport.migration.raft_transport"],
  ]);
});

Deno.test("the mode is taken as dual only when the file has a migration section and no mode", () => {
  assertEquals(valid(withNode("")).config.transport.mode, "grpc");
  assertEquals(valid(withNode("[transport]\n")).config.transport.mode, "grpc");
  // An empty section still says "this file is about migrating".
  const empty = valid(withNode("[transport.migration]\n"));
  assertEquals(empty.config.transport.mode, "dual");
  assertEquals(empty.warnings.map((w) => w.code), ["implied_mode"]);
  // Dotted keys are the same section.
  const dotted = valid('transport.migration.prefer_iroh = ["health"]\n[node]\nid = 1\n');
  assertEquals(routes(dotted.config).overIroh, ["health"]);
  const iroh = valid(withNode('[transport]\nmode = "iroh"\n[transport.migration]\n'));
  assertEquals(iroh.config.transport.mode, "iroh");
  assertEquals(iroh.warnings, []);
});
