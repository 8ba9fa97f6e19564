/**
 * Peers and operators are different principals, end to end: a real agent,
 * Raft messages sent to it over Iroh, plaintext gRPC on loopback and mutual
 * TLS, and its consensus inbox as the judge of what got in (the agent waits
 * to be joined, so the test, not consensus, reads the inbox).
 */

import { assert, assertEquals } from "../assert.ts";
import { type RaftMessage, RaftMessageKind } from "../../src/codec/raft.ts";
import { configOrThrow, parseConfig } from "../../src/config/mod.ts";
import { Agent } from "../../src/node/agent.ts";
import { Code, RpcError } from "../../src/rpc/errors.ts";
import { GrpcChannel } from "../../src/transport/grpc/client.ts";
import { createEndpoint } from "../../src/transport/iroh/endpoint.ts";
import { IrohRpcClient } from "../../src/transport/iroh/rpc_client.ts";
import { endpointIdOf } from "../../src/transport/iroh/secret_key.ts";
import { silentLogger } from "../../src/util/log.ts";
import { eventually, freePorts, nodeHome } from "../runner/helpers.ts";
import { makePki } from "../transport/grpc/helpers.ts";

const vote = (from: number): RaftMessage => ({
  kind: RaftMessageKind.VoteRequest,
  from,
  to: 1,
  term: 4,
  lastLogIndex: 9,
  lastLogTerm: 3,
  transfer: false,
});

const operatorKey = crypto.getRandomValues(new Uint8Array(32));
const peerKey = crypto.getRandomValues(new Uint8Array(32));

/** An Iroh client with `secretKey`, calling `ticket`. */
async function irohCaller(secretKey: Uint8Array, ticket: string) {
  const endpoint = await createEndpoint({
    secretKey,
    bindAddr: "127.0.0.1:0",
    relayMode: "disabled",
    alpns: [],
  });
  const client = new IrohRpcClient({ endpoint });
  return {
    channel: client.peer(ticket),
    async close() {
      client.close();
      await endpoint.close();
    },
  };
}

/** Waits until the inbox holds `n` messages or refused `denied` deliveries over `transport`. */
function settled(agent: Agent, transport: "iroh" | "grpc", n: number, denied: number) {
  return eventually(
    `the inbox holds ${n} and refused ${denied} over ${transport}`,
    () => agent.inbox.size === n && agent.inbox.stats.denied[transport] === denied,
  );
}

Deno.test("over Iroh, an operator's Raft frame and a peer's claim of another node's id are refused; the peer as itself gets in", async () => {
  const ports = await freePorts();
  const home = await nodeHome(ports.udp);
  const agent = await Agent.start(
    configOrThrow(parseConfig(`
[node]
id = 1
data_dir = "${home.dataDir}"
[transport]
mode = "iroh"
[iroh]
bind = "127.0.0.1:${ports.udp}"
relay = "disabled"
[metrics]
bind = "127.0.0.1:0"
[cluster]
operator_keys = ["${endpointIdOf(operatorKey)}"]
bootstrap = false
[[cluster.peers]]
id = 2
endpoint_id = "${endpointIdOf(peerKey)}"
`)),
    silentLogger,
  );
  // A node waiting to be joined: the test reads its inbox instead of consensus.
  agent.inbox.onReady = undefined;
  const operator = await irohCaller(operatorKey, home.ticket);
  const peer = await irohCaller(peerKey, home.ticket);
  try {
    await operator.channel.sendRaft(vote(2));
    await settled(agent, "iroh", 0, 1);
    await peer.channel.sendRaft(vote(3));
    await settled(agent, "iroh", 0, 2);
    await peer.channel.sendRaft(vote(2));
    await settled(agent, "iroh", 1, 2);
    const d = agent.inbox.take()!;
    assertEquals([d.message.from, d.peer.id], [2, endpointIdOf(peerKey)]);
  } finally {
    await operator.close();
    await peer.close();
    await agent.stop();
    await Deno.remove(home.dataDir, { recursive: true });
  }
});

Deno.test("over plaintext gRPC on loopback, a caller is the node whose grpc_address it calls from", async () => {
  const ports = await freePorts();
  const home = await nodeHome(ports.udp);
  const agent = await Agent.start(
    configOrThrow(parseConfig(`
[node]
id = 1
data_dir = "${home.dataDir}"
[grpc]
bind = "127.0.0.1:${ports.tcp}"
[metrics]
bind = "127.0.0.1:0"
[cluster]
bootstrap = false
[[cluster.peers]]
id = 2
endpoint_id = "${endpointIdOf(peerKey)}"
grpc_address = "127.0.0.1:7402"
[[cluster.peers]]
id = 3
endpoint_id = "${endpointIdOf(operatorKey)}"
grpc_address = "10.0.0.3:7402"
`)),
    silentLogger,
  );
  // A node waiting to be joined: the test reads its inbox instead of consensus.
  agent.inbox.onReady = undefined;
  const channel = new GrpcChannel({ target: `127.0.0.1:${ports.tcp}` });
  try {
    let error: unknown;
    try {
      await channel.sendRaft(vote(3));
    } catch (e) {
      error = e;
    }
    assert(error instanceof RpcError && error.code === Code.PERMISSION_DENIED, String(error));
    assert(error.message.includes("not at node 3's grpc_address"), error.message);
    assertEquals(agent.inbox.size, 0);
    await channel.sendRaft(vote(2));
    assertEquals(agent.inbox.size, 1);
    assertEquals(agent.inbox.stats.denied.grpc, 1);
  } finally {
    channel.close();
    await agent.stop();
    await Deno.remove(home.dataDir, { recursive: true });
  }
});

Deno.test("over mutual TLS, a caller is the node its certificate names, and no other", async () => {
  const pki = await makePki();
  const ports = await freePorts();
  const home = await nodeHome(ports.udp);
  const agent = await Agent.start(
    configOrThrow(parseConfig(`
[node]
id = 1
data_dir = "${home.dataDir}"
[grpc]
bind = "127.0.0.1:${ports.tcp}"
[grpc.tls]
cert_file = "${pki.serverCertFile}"
key_file = "${pki.serverKeyFile}"
ca_file = "${pki.caFile}"
[metrics]
bind = "127.0.0.1:0"
[cluster]
bootstrap = false
[[cluster.peers]]
id = 2
endpoint_id = "${endpointIdOf(peerKey)}"
grpc_address = "node-2:7400"
[[cluster.peers]]
id = 3
endpoint_id = "${endpointIdOf(operatorKey)}"
grpc_address = "127.0.0.1:7400"
`)),
    silentLogger,
  );
  // A node waiting to be joined: the test reads its inbox instead of consensus.
  agent.inbox.onReady = undefined;
  // The test PKI's client certificate is CN node-2.
  const channel = new GrpcChannel({
    target: `127.0.0.1:${ports.tcp}`,
    tls: { caFile: pki.caFile, certFile: pki.clientCertFile, keyFile: pki.clientKeyFile },
  });
  try {
    let error: unknown;
    try {
      // Node 3's address is this very caller's, but its certificate names node-2.
      await channel.sendRaft(vote(3));
    } catch (e) {
      error = e;
    }
    assert(error instanceof RpcError && error.code === Code.PERMISSION_DENIED, String(error));
    assert(error.message.includes("(node-2) does not name 127.0.0.1"), error.message);
    await channel.sendRaft(vote(2));
    assertEquals(agent.inbox.size, 1);
    assertEquals(agent.inbox.take()!.peer.certificateNames, ["node-2"]);
  } finally {
    channel.close();
    await agent.stop();
    await Deno.remove(home.dataDir, { recursive: true });
    await Deno.remove(pki.dir, { recursive: true });
  }
});
