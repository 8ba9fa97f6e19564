/**
 * Rules that tie keys together: what each transport mode means, the gRPC
 * listener's security rule, the cluster's identities, and the warnings for
 * settings that are valid but probably a mistake.
 */

import { assert, assertEquals } from "../assert.ts";
import {
  parseConfig,
  raftTransport,
  SERVICE_NAMES,
  servicesOverIroh,
} from "../../src/config/mod.ts";
import { endpointId, errorAt, invalid, valid, withNode } from "./helpers.ts";

const TLS = '[grpc.tls]\ncert_file = "/etc/tls/node.crt"\nkey_file = "/etc/tls/node.key"\n';
const MTLS = `${TLS}ca_file = "/etc/tls/ca.crt"\n`;

function migration(mode: string, body: string): string {
  return withNode(`[transport]\nmode = "${mode}"\n[transport.migration]\n${body}\n`);
}

Deno.test("rolling back is one line: grpc mode ignores leftover migration keys, with a warning", () => {
  const { config, warnings } = valid(
    migration(
      "grpc",
      'prefer_iroh = ["all_except_raft"]\nraft_transport = "adaptive"\nfallback_to_grpc = true',
    ),
  );
  assertEquals(servicesOverIroh(config), new Set());
  assertEquals(raftTransport(config), "grpc");
  const ignored = warnings.filter((w) => w.code === "ignored_key").map((w) => w.path).sort();
  assertEquals(ignored, [
    "transport.migration.fallback_to_grpc",
    "transport.migration.prefer_iroh",
    "transport.migration.raft_transport",
  ]);
  assert(
    warnings[0]!.message.includes(
      'transport.mode = "grpc" carries every service and raft over gRPC',
    ),
  );
});

Deno.test("iroh mode carries everything over Iroh and warns that migration keys are ignored", () => {
  const { config, warnings } = valid(
    migration("iroh", 'prefer_iroh = ["health"]\nraft_transport = "grpc"'),
  );
  assertEquals(servicesOverIroh(config), new Set(SERVICE_NAMES));
  assertEquals(raftTransport(config), "iroh");
  assertEquals(
    warnings.map((w) => [w.code, w.path]),
    [
      ["ignored_key", "transport.migration.prefer_iroh"],
      ["ignored_key", "transport.migration.raft_transport"],
    ],
  );
  assertEquals(
    warnings[0]!.message,
    'config: transport.migration.prefer_iroh: ignored: transport.mode = "iroh" carries every service and raft over Iroh',
  );
  assertEquals(valid(withNode('[transport]\nmode = "iroh"\n')).warnings, []);
});

Deno.test("dual mode routes exactly the listed services over Iroh", () => {
  const { config } = valid(
    migration(
      "dual",
      'prefer_iroh = ["monitoring", "vm_ops", "health"]\nraft_transport = "adaptive"',
    ),
  );
  assertEquals(servicesOverIroh(config), new Set(["health", "vm", "monitoring"]));
  assertEquals(config.transport.migration.preferIroh, ["health", "vm", "monitoring"]);
  assertEquals(raftTransport(config), "adaptive");
  const all = valid(migration("dual", 'prefer_iroh = ["all_except_raft"]')).config;
  assertEquals(servicesOverIroh(all), new Set(SERVICE_NAMES));
  assertEquals(raftTransport(all), "grpc");
  const none = valid(withNode('[transport]\nmode = "dual"\n')).config;
  assertEquals(servicesOverIroh(none), new Set());
});

Deno.test("the vm_ops alias and its target count once", () => {
  const { config } = valid(migration("dual", 'prefer_iroh = ["vm", "vm_ops"]'));
  assertEquals(config.transport.migration.preferIroh, ["vm"]);
});

Deno.test("a gRPC listener off loopback without TLS is refused, naming both fixes", () => {
  for (const bind of ["0.0.0.0:7400", "10.0.0.1:7400", "[::]:7400", "node-1.example.com:7400"]) {
    const e = errorAt(invalid(withNode(`[grpc]\nbind = "${bind}"\n`)), "grpc.bind");
    assertEquals(e.code, "insecure");
    assertEquals(
      e.message,
      `config: grpc.bind = "${bind}": a gRPC listener on a non-loopback address requires TLS; set grpc.tls.cert_file and grpc.tls.key_file (add grpc.tls.ca_file for mutual TLS), or set grpc.allow_insecure = true to serve plaintext on purpose`,
    );
  }
});

Deno.test("loopback gRPC listeners need no TLS", () => {
  for (const bind of ["127.0.0.1:7400", "127.0.0.2:0", "[::1]:7400", "localhost:7400"]) {
    assertEquals(valid(withNode(`[grpc]\nbind = "${bind}"\n`)).warnings, []);
  }
});

Deno.test("allow_insecure opens plaintext gRPC, with a warning", () => {
  const { warnings } = valid(withNode('[grpc]\nbind = "0.0.0.0:7400"\nallow_insecure = true\n'));
  assertEquals(warnings.map((w) => [w.code, w.path]), [["insecure", "grpc.bind"]]);
});

Deno.test("TLS satisfies the rule; without ca_file clients go unauthenticated, with a warning", () => {
  const tls = valid(withNode(`[grpc]\nbind = "0.0.0.0:7400"\n${TLS}`));
  assertEquals(tls.warnings.map((w) => [w.code, w.path]), [["insecure", "grpc.tls.ca_file"]]);
  assertEquals(tls.config.grpc.tls, {
    certFile: "/etc/tls/node.crt",
    keyFile: "/etc/tls/node.key",
  });
  const mtls = valid(withNode(`[grpc]\nbind = "0.0.0.0:7400"\n${MTLS}`));
  assertEquals(mtls.warnings, []);
  assertEquals(mtls.config.grpc.tls.caFile, "/etc/tls/ca.crt");
});

Deno.test("the gRPC listener is checked in iroh mode too, so rollback stays one edit", () => {
  const e = errorAt(
    invalid(withNode('[transport]\nmode = "iroh"\n[grpc]\nbind = "0.0.0.0:7400"\n')),
    "grpc.bind",
  );
  assertEquals(e.code, "insecure");
});

Deno.test("cert_file and key_file come together, and ca_file needs both", () => {
  const certOnly = invalid(withNode('[grpc.tls]\ncert_file = "/c"\n'));
  assertEquals(
    errorAt(certOnly, "grpc.tls.cert_file").message,
    'config: grpc.tls.cert_file = "/c": needs grpc.tls.key_file as well',
  );
  assertEquals(
    errorAt(invalid(withNode('[grpc.tls]\nkey_file = "/k"\n')), "grpc.tls.key_file").code,
    "conflict",
  );
  assertEquals(
    errorAt(invalid(withNode('[grpc.tls]\nca_file = "/ca"\n')), "grpc.tls.ca_file").code,
    "conflict",
  );
});

Deno.test("peer ids are unique and never this node's own", () => {
  const issues = invalid(withNode(`
[[cluster.peers]]
id = 2
endpoint_id = "${endpointId(2)}"
[[cluster.peers]]
id = 2
endpoint_id = "${endpointId(3)}"
[[cluster.peers]]
id = 1
endpoint_id = "${endpointId(2)}"
`));
  const dup = errorAt(issues, "cluster.peers[1].id");
  assertEquals(dup.code, "duplicate");
  assertEquals(dup.message, "config: cluster.peers[1].id = 2: duplicate of cluster.peers[0].id");
  assertEquals(issues.length, 3);
  assertEquals(errorAt(issues, "cluster.peers[2].id").code, "conflict");
  assertEquals(
    errorAt(issues, "cluster.peers[2].id").message,
    "config: cluster.peers[2].id = 1: is this node's own node.id",
  );
  assertEquals(errorAt(issues, "cluster.peers[2].endpoint_id").code, "duplicate");
});

Deno.test("a peer needs an endpoint id or a ticket", () => {
  const e = errorAt(
    invalid(withNode('[[cluster.peers]]\nid = 2\naddresses = ["10.0.0.2:7401"]\n')),
    "cluster.peers[0]",
  );
  assertEquals(e.code, "invalid_value");
  assertEquals(e.message, "config: cluster.peers[0]: a peer needs endpoint_id or ticket");
  const t = errorAt(
    invalid(withNode('[[cluster.peers]]\nid = 2\nticket = "nodeabc"\n')),
    "cluster.peers[0].ticket",
  );
  assertEquals(t.code, "invalid_value");
});

Deno.test("operator keys are endpoint ids, each once", () => {
  const e = errorAt(
    invalid(withNode(`[cluster]\noperator_keys = ["${endpointId(9)}", "${endpointId(9)}"]\n`)),
    "cluster.operator_keys[1]",
  );
  assertEquals(e.code, "duplicate");
  const { config } = valid(withNode(`[cluster]\noperator_keys = ["${endpointId(9)}"]\n`));
  assertEquals(config.cluster.operatorKeys, [endpointId(9)]);
});

Deno.test("the default request deadline fits under the maximum", () => {
  const e = errorAt(
    invalid(withNode("[limits]\nrequest_deadline_ms = 60000\nmax_request_deadline_ms = 10000\n")),
    "limits.request_deadline_ms",
  );
  assertEquals(e.code, "conflict");
  assertEquals(
    e.message,
    "config: limits.request_deadline_ms = 60000: must not exceed limits.max_request_deadline_ms = 10000",
  );
});

Deno.test("a peer with no way to reach it draws a warning", () => {
  const noGrpc = valid(withNode(`[[cluster.peers]]\nid = 2\nendpoint_id = "${endpointId(2)}"\n`));
  assertEquals(noGrpc.warnings.map((w) => [w.code, w.path]), [[
    "unreachable_peer",
    "cluster.peers[0]",
  ]]);
  const noDiscovery = valid(withNode(`
[transport]
mode = "iroh"
[iroh]
relay = "disabled"
[[cluster.peers]]
id = 2
endpoint_id = "${endpointId(2)}"
`));
  assertEquals(noDiscovery.warnings.map((w) => w.code), ["unreachable_peer"]);
  assert(noDiscovery.warnings[0]!.message.includes("add addresses or a ticket"));
});

Deno.test("relative paths draw a warning", () => {
  const { warnings } = valid(withNode('data_dir = "data"\n'));
  assertEquals(
    warnings.map((w) => w.path),
    ["node.data_dir", "iroh.secret_key_file"],
  );
  assert(warnings.every((w) => w.code === "relative_path"));
});

Deno.test("a connection buffer smaller than two frames is refused, naming both limits", () => {
  const result = parseConfig(
    "[node]\nid = 1\n[limits]\nmax_frame_bytes = 1048576\nmax_connection_buffer_bytes = 1048576\n",
  );
  assert(!result.ok);
  assertEquals(result.errors.map((e) => e.code), ["conflict"]);
  assertEquals(
    result.errors[0]!.message,
    "config: limits.max_connection_buffer_bytes = 1048576: must be at least twice limits.max_frame_bytes = 1048576, so one large answer fits",
  );
});
