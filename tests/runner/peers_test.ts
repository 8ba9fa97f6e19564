/**
 * Node-to-node calls through the agent's own peer client: two real agents,
 * each configured with the other as a peer, on loopback.
 */

import { assert, assertEquals, rejection } from "../assert.ts";
import { configOrThrow, parseConfig } from "../../src/config/mod.ts";
import { createClient } from "../../src/rpc/client.ts";
import { Code, RpcError } from "../../src/rpc/errors.ts";
import { Health } from "../../src/rpc/services.ts";
import { Agent } from "../../src/node/agent.ts";
import { silentLogger } from "../../src/util/log.ts";
import { freePorts, nodeHome } from "./helpers.ts";

interface Node {
  id: number;
  home: { dataDir: string; endpointId: string };
  ports: { tcp: number; udp: number };
}

async function node(id: number): Promise<Node> {
  const ports = await freePorts();
  return { id, ports, home: await nodeHome(ports.udp) };
}

/** The TOML of `self` with `other` as its peer; `peerHas` says which addresses the peer entry lists. */
function config(self: Node, other: Node, transport: string, peerHas: ("grpc" | "iroh")[]): string {
  return `[node]
id = ${self.id}
data_dir = "${self.home.dataDir}"
${transport}
[grpc]
bind = "127.0.0.1:${self.ports.tcp}"
[iroh]
bind = "127.0.0.1:${self.ports.udp}"
relay = "disabled"
[metrics]
bind = "127.0.0.1:0"
[[cluster.peers]]
id = ${other.id}
endpoint_id = "${other.home.endpointId}"
${peerHas.includes("iroh") ? `addresses = ["127.0.0.1:${other.ports.udp}"]` : ""}
${peerHas.includes("grpc") ? `grpc_address = "127.0.0.1:${other.ports.tcp}"` : ""}
[limits]
shutdown_timeout_ms = 1000
`;
}

const parse = (text: string) => configOrThrow(parseConfig(text));
const DUAL_HEALTH = `[transport]\nmode = "dual"\n[transport.migration]\nprefer_iroh = ["health"]\n`;

Deno.test({
  name: "a grpc node and an iroh node share no transport, and the call says so instead of trying",
  async fn() {
    const [a, b] = [await node(1), await node(2)];
    const nodeA = await Agent.start(
      parse(config(a, b, `[transport]\nmode = "grpc"\n`, ["iroh"])),
      silentLogger,
    );
    const nodeB = await Agent.start(
      parse(config(b, a, `[transport]\nmode = "iroh"\n`, ["grpc"])),
      silentLogger,
    );
    try {
      const e = await rejection(RpcError, () => createClient(Health, nodeA.peer(2)).check({}));
      assertEquals(e.code, Code.FAILED_PRECONDITION);
      assertEquals(
        e.message,
        'node 2 serves health over iroh; this node calls over grpc: no transport in common (set transport.mode = "dual" on one of them)',
      );
    } finally {
      await Promise.all([nodeA.stop(), nodeB.stop()]);
    }
  },
});

Deno.test({
  name:
    "a dual node calls its peer over Iroh, falls back to gRPC when the peer rolls back, and counts it",
  async fn() {
    const [a, b] = [await node(1), await node(2)];
    const nodeA = await Agent.start(
      parse(config(a, b, DUAL_HEALTH, ["grpc", "iroh"])),
      silentLogger,
    );
    const nodeB = await Agent.start(
      parse(config(b, a, DUAL_HEALTH, ["grpc", "iroh"])),
      silentLogger,
    );
    try {
      const peer = nodeA.peer(2);
      const health = createClient(Health, peer);
      assertEquals((await health.check({})).nodeId, 2n);
      assertEquals(peer.route("health"), "iroh");

      const rolledBack = await nodeB.reload(
        parse(config(b, a, `[transport]\nmode = "grpc"\n`, ["grpc", "iroh"])),
      );
      assert(rolledBack.ok);
      assertEquals((await health.check({})).nodeId, 2n);
      assertEquals(peer.route("health"), "grpc");
      const metrics = await nodeA.metrics.text();
      assert(
        metrics.includes('blixard_rpc_fallbacks_total{service="health",from="iroh",to="grpc"} 1'),
        metrics,
      );
    } finally {
      await Promise.all([nodeA.stop(), nodeB.stop()]);
    }
  },
});
