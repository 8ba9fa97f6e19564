/**
 * Peers and operators are different principals: who may connect, and who
 * may send Raft messages as which node, for each transport and each way a
 * gRPC listener can authenticate its callers.
 */

import { assert, assertEquals, assertMatch } from "../assert.ts";
import { configOrThrow, parseConfig } from "../../src/config/mod.ts";
import { grpcPeerAuthOf, principalsOf } from "../../src/node/principals.ts";
import type { PeerInfo } from "../../src/rpc/services.ts";

const PEER2 = "2e3b00af3210d605f0342890e2091e570b5e69c70ef877829531e2a82e7c4b9d";
const PEER3 = "b80ea0262d2a9066a0352733d56ff7ffd0477e2d8fc23c0aa00efbb00dfe6e43";
const OPERATOR = "148f81d5008304f3421be3d630c6eabe92bcc41f5cfaace22507c0a7b45b0bd2";
const STRANGER = "0".repeat(63) + "1";

function config(grpc: string): ReturnType<typeof configOrThrow> {
  return configOrThrow(parseConfig(`
[node]
id = 1
data_dir = "/var/lib/blixard"
${grpc}
[cluster]
operator_keys = ["${OPERATOR}"]
[[cluster.peers]]
id = 2
endpoint_id = "${PEER2}"
addresses = ["10.0.0.2:7401"]
grpc_address = "10.0.0.2:7400"
[[cluster.peers]]
id = 3
endpoint_id = "${PEER3}"
grpc_address = "node-3.example:7400"
`));
}

const iroh = (id: string): PeerInfo => ({ transport: "iroh", id });
const grpc = (id: string, certificateNames?: string[]): PeerInfo => ({
  transport: "grpc",
  id,
  ...(certificateNames ? { certificateNames } : {}),
});

Deno.test("peers and operator keys may connect over Iroh; anyone else may not", () => {
  const p = principalsOf(config(""));
  assert(p.allowsConnection(PEER2));
  assert(p.allowsConnection(OPERATOR));
  assert(!p.allowsConnection(STRANGER));
});

Deno.test("over Iroh, a peer may send Raft only as itself, an operator not at all", () => {
  const p = principalsOf(config(""));
  assertEquals(p.authorizeRaft(iroh(PEER2), 2), null);
  assertMatch(p.authorizeRaft(iroh(PEER2), 3)!.reason, /is node 2; it may not send .* as node 3/);
  assertMatch(
    p.authorizeRaft(iroh(OPERATOR), 2)!.reason,
    /is an operator key: operators may not send Raft messages/,
  );
  assertMatch(p.authorizeRaft(iroh(STRANGER), 2)!.reason, /not a cluster peer/);
});

Deno.test("over gRPC with mutual TLS, a certificate must name the sender's grpc_address host", () => {
  const c = config(`[grpc]
bind = "0.0.0.0:7400"
[grpc.tls]
cert_file = "/etc/blixard/node.crt"
key_file = "/etc/blixard/node.key"
ca_file = "/etc/blixard/ca.crt"`);
  assertEquals(grpcPeerAuthOf(c), "certificate");
  const p = principalsOf(c);
  assertEquals(p.authorizeRaft(grpc("10.9.9.9:5000", ["node-2", "10.0.0.2"]), 2), null);
  assertEquals(p.authorizeRaft(grpc("10.9.9.9:5000", ["NODE-3.example"]), 3), null);
  assertMatch(
    p.authorizeRaft(grpc("10.0.0.2:5000", ["node-2", "10.0.0.2"]), 3)!.reason,
    /does not name node-3.example/,
  );
  assertMatch(p.authorizeRaft(grpc("10.0.0.2:5000"), 2)!.reason, /no names/);
});

Deno.test("over plaintext gRPC on loopback, the caller's address must be the sender's", () => {
  const c = config(`[grpc]\nbind = "127.0.0.1:7400"`);
  assertEquals(grpcPeerAuthOf(c), "address");
  const p = principalsOf(c);
  assertEquals(p.authorizeRaft(grpc("10.0.0.2:41234"), 2), null);
  assertEquals(p.authorizeRaft(grpc("[::ffff:10.0.0.2]:41234"), 2), null);
  // grpc-js writes IPv6 callers without brackets.
  assertEquals(p.authorizeRaft(grpc("::ffff:10.0.0.2:41234"), 2), null);
  assertMatch(p.authorizeRaft(grpc("10.0.0.7:41234"), 2)!.reason, /not at node 2's grpc_address/);
  // A name matches only through what the caller resolved it to.
  assertMatch(p.authorizeRaft(grpc("10.0.0.3:41234"), 3)!.reason, /not at node 3/);
  const resolved = principalsOf(c, new Map([["node-3.example", ["10.0.0.3"]]]));
  assertEquals(resolved.authorizeRaft(grpc("10.0.0.3:41234"), 3), null);
});

Deno.test("server-only TLS authenticates no client, so Raft over gRPC is refused and says why", () => {
  const c = config(`[grpc]
bind = "0.0.0.0:7400"
[grpc.tls]
cert_file = "/etc/blixard/node.crt"
key_file = "/etc/blixard/node.key"`);
  assertEquals(grpcPeerAuthOf(c), "none");
  assertMatch(
    principalsOf(c).authorizeRaft(grpc("10.0.0.2:5000"), 2)!.reason,
    /needs mutual TLS, or grpc.allow_insecure = true/,
  );
});

Deno.test("over gRPC, a node that is not a configured peer is refused", () => {
  const p = principalsOf(config(`[grpc]\nbind = "127.0.0.1:7400"`));
  assertMatch(p.authorizeRaft(grpc("10.0.0.2:41234"), 9)!.reason, /node 9 is not a cluster peer/);
});

Deno.test("members learned through Raft become peers; a record without an address keeps the config's", () => {
  const c = config(`[grpc]\nbind = "127.0.0.1:7400"`);
  const p = principalsOf(c, new Map(), [
    { nodeId: 2 }, // bootstrapped: only the id, until it announces itself
    { nodeId: 9, endpointId: STRANGER, grpcAddress: "10.0.0.9:7400" },
  ]);
  assert(p.allowsConnection(PEER2), "node 2 keeps its configured endpoint id");
  assert(p.allowsConnection(STRANGER), "node 9 joined: its endpoint may connect");
  assertEquals(p.authorizeRaft(iroh(STRANGER), 9), null);
  assertEquals(p.authorizeRaft(grpc("10.0.0.9:5000"), 9), null);
});

Deno.test("changing cluster state needs a peer or operator: any Iroh connection the node accepted", () => {
  const p = principalsOf(config(""));
  assertEquals(p.authorizeChange(iroh(OPERATOR), "vm.Create"), null);
  assertEquals(p.authorizeChange(iroh(PEER2), "vm.Create"), null);
  assertMatch(p.authorizeChange(iroh(STRANGER), "vm.Create")!.reason, /neither a cluster peer nor/);
});

Deno.test("over gRPC, changes need a verified client certificate under mutual TLS", () => {
  const p = principalsOf(config(`[grpc]
bind = "0.0.0.0:7400"
[grpc.tls]
cert_file = "/etc/blixard/node.crt"
key_file = "/etc/blixard/node.key"
ca_file = "/etc/blixard/ca.crt"`));
  assertEquals(p.authorizeChange(grpc("10.9.9.9:5000", ["ops-laptop"]), "vm.Create"), null);
  assertMatch(
    p.authorizeChange(grpc("10.9.9.9:5000"), "vm.Create")!.reason,
    /vm.Create needs a client certificate/,
  );
});

Deno.test("over plaintext gRPC, changes come from this host or a peer's address only", () => {
  const p = principalsOf(config(`[grpc]\nbind = "0.0.0.0:7400"\nallow_insecure = true`));
  assertEquals(p.authorizeChange(grpc("127.0.0.1:5000"), "vm.Stop"), null);
  assertEquals(p.authorizeChange(grpc("::1:5000"), "vm.Stop"), null);
  assertEquals(p.authorizeChange(grpc("::ffff:10.0.0.2:5000"), "vm.Stop"), null);
  assertMatch(
    p.authorizeChange(grpc("192.0.2.7:5000"), "vm.Stop")!.reason,
    /vm.Stop over plaintext gRPC is allowed from this host or a peer's address only, and 192.0.2.7:5000 is neither/,
  );
});

Deno.test("server-only TLS authenticates no client: no change over gRPC, with the way out named", () => {
  const p = principalsOf(config(`[grpc]
bind = "0.0.0.0:7400"
[grpc.tls]
cert_file = "/etc/blixard/node.crt"
key_file = "/etc/blixard/node.key"`));
  assertMatch(
    p.authorizeChange(grpc("127.0.0.1:5000"), "metadata.Put")!.reason,
    /use mutual TLS, or Iroh with an operator key/,
  );
});

Deno.test("only a node itself may report its VMs", () => {
  const p = principalsOf(config(""));
  assertEquals(p.authorizeNode(iroh(PEER2), 2, "report VM states"), null);
  assertMatch(
    p.authorizeNode(iroh(PEER2), 3, "report VM states")!.reason,
    /is node 2; it may not report VM states as node 3/,
  );
  assertMatch(
    p.authorizeNode(iroh(OPERATOR), 2, "report VM states")!.reason,
    /operators may not report VM states/,
  );
});
