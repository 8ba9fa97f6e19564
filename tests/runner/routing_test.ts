/**
 * The dual runner's rules, as pure functions: what a node serves in each
 * mode, which transport a call takes, when it is retried elsewhere, and how
 * `adaptive` picks.
 */

import { assertEquals, thrown } from "../assert.ts";
import { configOrThrow, parseConfig } from "../../src/config/mod.ts";
import {
  type CallerPolicy,
  chooseAdaptive,
  chooseBulkTransport,
  chooseTransport,
  NoCommonTransportError,
  retryTransport,
  servingPlan,
  type TransportHealth,
} from "../../src/runner/routing.ts";

function plan(transport: string) {
  return servingPlan(configOrThrow(parseConfig(`[node]\nid = 1\n${transport}`)));
}

const summary = (p: ReturnType<typeof plan>) =>
  Object.fromEntries([...p].map(([s, v]) => [s, `${v.transports.join("+")}>${v.preferred}`]));

Deno.test("grpc and iroh modes serve everything on their one transport", () => {
  for (const [mode, t] of [["grpc", "grpc"], ["iroh", "iroh"]] as const) {
    const p = summary(plan(`[transport]\nmode = "${mode}"\n`));
    for (const s of ["health", "status", "vm", "monitoring", "cluster", "metadata", "raft"]) {
      assertEquals(p[s], `${t}>${t}`);
    }
  }
});

Deno.test("dual serves everything on both, preferring Iroh for prefer_iroh and raft per raft_transport", () => {
  const p = summary(plan(
    `[transport]\nmode = "dual"\n[transport.migration]\nprefer_iroh = ["health", "status"]\nraft_transport = "grpc"\n`,
  ));
  assertEquals(p, {
    health: "grpc+iroh>iroh",
    status: "grpc+iroh>iroh",
    vm: "grpc+iroh>grpc",
    monitoring: "grpc+iroh>grpc",
    cluster: "grpc+iroh>grpc",
    metadata: "grpc+iroh>grpc",
    raft: "grpc+iroh>grpc",
  });
  const all = summary(plan(
    `[transport]\nmode = "dual"\n[transport.migration]\nprefer_iroh = ["all_except_raft"]\nraft_transport = "iroh"\n`,
  ));
  for (const s of ["health", "status", "vm", "monitoring", "cluster", "raft"]) {
    assertEquals(all[s], "grpc+iroh>iroh");
  }
});

const dual = (preferred: "grpc" | "iroh"): CallerPolicy => ({
  transports: ["grpc", "iroh"],
  preferred,
});

Deno.test("a call takes the caller's preference when the peer serves it, else what they share", () => {
  assertEquals(
    chooseTransport("health", dual("iroh"), { transports: ["grpc", "iroh"] }, "node 2"),
    "iroh",
  );
  assertEquals(chooseTransport("health", dual("iroh"), { transports: ["grpc"] }, "node 2"), "grpc");
  assertEquals(chooseTransport("vm", dual("grpc"), { transports: ["iroh"] }, "node 2"), "iroh");
});

Deno.test("a grpc-only node and an iroh-only node share nothing, and the error says so", () => {
  const e = thrown(
    NoCommonTransportError,
    () =>
      chooseTransport("health", { transports: ["grpc"], preferred: "grpc" }, {
        transports: ["iroh"],
      }, "node 2"),
  );
  assertEquals(
    e.message,
    'node 2 serves health over iroh; this node calls over grpc: no transport in common (set transport.mode = "dual" on one of them)',
  );
});

Deno.test("a transport failure over Iroh falls back to gRPC only when fallback_to_grpc allows", () => {
  const peer = { transports: ["grpc", "iroh"] as ("grpc" | "iroh")[] };
  assertEquals(retryTransport("iroh", dual("iroh"), peer, true), "grpc");
  assertEquals(retryTransport("iroh", dual("iroh"), peer, false), null);
  // A gRPC failure moves to Iroh only if the peer serves the service there.
  assertEquals(retryTransport("grpc", dual("grpc"), peer, false), "iroh");
  assertEquals(retryTransport("grpc", dual("grpc"), { transports: ["grpc"] }, true), null);
  // A grpc-only caller has nowhere to go.
  assertEquals(
    retryTransport("grpc", { transports: ["grpc"], preferred: "grpc" }, peer, true),
    null,
  );
});

const h = (
  healthy: boolean,
  latencyMs: number | null,
  bulk: number | null = null,
): TransportHealth => ({
  healthy,
  latencyMs,
  bulkBytesPerSecond: bulk,
});

Deno.test("adaptive picks the healthy transport with the lower latency, and avoids a failing one", () => {
  const both = ["grpc", "iroh"] as const;
  assertEquals(chooseAdaptive(both, { grpc: h(true, 0.5), iroh: h(true, 0.2) }), "iroh");
  assertEquals(chooseAdaptive(both, { grpc: h(true, 0.5), iroh: h(false, 0.2) }), "grpc");
  assertEquals(chooseAdaptive(both, { grpc: h(true, 0.5), iroh: h(true, 3) }), "grpc");
  assertEquals(chooseAdaptive(both, { grpc: h(false, 0.5), iroh: h(false, 0.2) }), null);
  assertEquals(chooseAdaptive(both, { grpc: h(true, null), iroh: h(true, null) }), "grpc");
});

Deno.test("adaptive moves bulk over whichever transport moved bulk faster, gRPC until measured", () => {
  const both = ["grpc", "iroh"] as const;
  assertEquals(
    chooseBulkTransport(both, { grpc: h(true, 1, 110e6), iroh: h(true, 0.2, 7e6) }),
    "grpc",
  );
  assertEquals(
    chooseBulkTransport(both, { grpc: h(true, 1, 5e6), iroh: h(true, 0.2, 7e6) }),
    "iroh",
  );
  assertEquals(
    chooseBulkTransport(both, { grpc: h(true, 1, null), iroh: h(true, 0.2, 7e6) }),
    "grpc",
  );
  assertEquals(
    chooseBulkTransport(both, { grpc: h(false, 1, 110e6), iroh: h(true, 0.2, 7e6) }),
    "iroh",
  );
});
