/**
 * What a nearly empty file means: every default, and the shape of the typed
 * object the agent reads.
 */

import { assert, assertEquals, assertThrows } from "../assert.ts";
import { DEFAULTS, raftTransport, servicesOverIroh } from "../../src/config/mod.ts";
import { valid, withNode } from "./helpers.ts";

Deno.test("a file with only node.id gets every default, safe ones first", () => {
  const { config, warnings } = valid(withNode(""));
  assertEquals(config, {
    node: { id: 1, dataDir: "/var/lib/blixard" },
    transport: {
      mode: "grpc",
      migration: { preferIroh: [], raftTransport: "grpc", fallbackToGrpc: true },
    },
    grpc: { bind: "127.0.0.1:7400", allowInsecure: false, tls: {} },
    iroh: {
      bind: "0.0.0.0:7401",
      relay: "default",
      secretKeyFile: "/var/lib/blixard/iroh_secret_key",
      alpn: "blixard/1",
    },
    cluster: { peers: [], operatorKeys: [], bootstrap: true },
    raft: {
      tickMs: 100,
      electionTicks: 10,
      heartbeatTicks: 1,
      snapshotEveryEntries: 100_000,
      keepEntries: 1_000,
    },
    metrics: { enabled: true, bind: "127.0.0.1:9464" },
    vm: {
      backends: ["qemu"],
      accel: "auto",
      qemuBinary: "qemu-system-x86_64",
      nodeLostAfterMs: 30_000,
      onAgentStop: "leave",
    },
    limits: {
      maxFrameBytes: 16 * 1024 * 1024,
      maxConnectionBufferBytes: 32 * 1024 * 1024,
      maxInflightRequests: 1024,
      maxConcurrentStreams: 16,
      requestDeadlineMs: 30_000,
      maxRequestDeadlineMs: 300_000,
      shutdownTimeoutMs: 10_000,
    },
  });
  assertEquals(warnings, []);
});

Deno.test("by default nothing goes over Iroh", () => {
  const { config } = valid(withNode(""));
  assertEquals(servicesOverIroh(config), new Set());
  assertEquals(raftTransport(config), "grpc");
});

Deno.test("the exported DEFAULTS are the ones a parsed file gets", () => {
  const { config } = valid(withNode(""));
  assertEquals(config.grpc.bind, DEFAULTS.grpcBind);
  assertEquals(config.iroh.bind, DEFAULTS.irohBind);
  assertEquals(config.metrics.bind, DEFAULTS.metricsBind);
  assertEquals(config.limits.maxFrameBytes, DEFAULTS.maxFrameBytes);
  assertEquals(config.limits.requestDeadlineMs, DEFAULTS.requestDeadlineMs);
});

Deno.test("the config is frozen all the way down", () => {
  const { config } = valid(withNode(`
[[cluster.peers]]
id = 2
ticket = "endpointaa"
addresses = ["10.0.0.2:7401"]
`));
  assert(Object.isFrozen(config));
  assert(Object.isFrozen(config.transport.migration));
  assert(Object.isFrozen(config.cluster.peers[0]!.addresses));
  assertThrows(() => {
    (config.node as { id: number }).id = 2;
  }, TypeError);
  assertThrows(() => {
    (config.cluster.peers as unknown[]).push({});
  }, TypeError);
});

Deno.test("the secret key file defaults to a file in data_dir", () => {
  assertEquals(
    valid(withNode('data_dir = "/srv/blixard/"')).config.iroh.secretKeyFile,
    "/srv/blixard/iroh_secret_key",
  );
  assertEquals(
    valid(withNode('data_dir = "/srv/b"\n[iroh]\nsecret_key_file = "/etc/blixard/key"'))
      .config.iroh.secretKeyFile,
    "/etc/blixard/key",
  );
});

Deno.test("TOML's readable integers and comments are accepted", () => {
  const { config } = valid(withNode(`
[limits]
max_frame_bytes = 1_048_576  # 1 MiB
shutdown_timeout_ms = 0x3e8
`));
  assertEquals(config.limits.maxFrameBytes, 1_048_576);
  assertEquals(config.limits.shutdownTimeoutMs, 1000);
});

Deno.test("optional keys that are not set are absent, not undefined", () => {
  const { config } = valid(withNode(`
[[cluster.peers]]
id = 2
ticket = "endpointaa"
`));
  assertEquals(Object.keys(config.grpc.tls), []);
  assertEquals(Object.keys(config.cluster.peers[0]!), ["id", "addresses", "ticket"]);
});
