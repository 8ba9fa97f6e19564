/**
 * deploy/examples/: the predecessor's four rollout stages and the rollback,
 * each a complete file that parses cleanly and routes as its comment says.
 */

import { assertEquals } from "../assert.ts";
import {
  type AgentConfig,
  loadConfigFile,
  raftTransport,
  SERVICE_NAMES,
  servicesOverIroh,
} from "../../src/config/mod.ts";

const DIR = new URL("../../deploy/examples/", import.meta.url).pathname;

async function load(name: string): Promise<AgentConfig> {
  const result = await loadConfigFile(`${DIR}${name}`);
  if (!result.ok) throw new Error(result.errors.map((e) => e.message).join("\n"));
  assertEquals(result.warnings.map((w) => w.message), [], `${name} draws warnings`);
  return result.config;
}

Deno.test("stage 1 (canary): health and status over Iroh, raft on gRPC, with fallback", async () => {
  const config = await load("stage1-canary.toml");
  assertEquals(config.transport.mode, "dual");
  assertEquals(servicesOverIroh(config), new Set(["health", "status"]));
  assertEquals(raftTransport(config), "grpc");
  assertEquals(config.transport.migration.fallbackToGrpc, true);
});

Deno.test("stage 2 (expanded): monitoring and vm_ops join, raft still on gRPC", async () => {
  const config = await load("stage2-expanded.toml");
  assertEquals(config.transport.mode, "dual");
  assertEquals(servicesOverIroh(config), new Set(["health", "status", "monitoring", "vm"]));
  assertEquals(raftTransport(config), "grpc");
  assertEquals(config.transport.migration.fallbackToGrpc, true);
});

Deno.test("stage 3 (majority): every service over Iroh, raft adaptive", async () => {
  const config = await load("stage3-majority.toml");
  assertEquals(config.transport.mode, "dual");
  assertEquals(config.transport.migration.preferIroh, ["all_except_raft"]);
  assertEquals(servicesOverIroh(config), new Set(SERVICE_NAMES));
  assertEquals(raftTransport(config), "adaptive");
});

Deno.test("stage 4 (full): everything over Iroh", async () => {
  const config = await load("stage4-iroh.toml");
  assertEquals(config.transport.mode, "iroh");
  assertEquals(servicesOverIroh(config), new Set(SERVICE_NAMES));
  assertEquals(raftTransport(config), "iroh");
});

Deno.test("rollback: everything back on gRPC", async () => {
  const config = await load("rollback.toml");
  assertEquals(config.transport.mode, "grpc");
  assertEquals(servicesOverIroh(config), new Set());
  assertEquals(raftTransport(config), "grpc");
});

Deno.test("the stages differ only in [transport]", async () => {
  const names = [
    "stage1-canary.toml",
    "stage2-expanded.toml",
    "stage3-majority.toml",
    "stage4-iroh.toml",
    "rollback.toml",
  ];
  const configs = await Promise.all(names.map(load));
  const rest = configs.map(({ transport: _, ...rest }) => rest);
  for (const r of rest.slice(1)) assertEquals(r, rest[0]);
});
