/**
 * `raft_transport = "adaptive"` against a real dual node: real gRPC and Iroh
 * links, probed for real, with a slow or failing transport injected by
 * wrapping one link (the only stand-in here: a degraded network cannot be
 * ordered on loopback). The node reports which transport each Raft message
 * arrived on.
 */

import { assert, assertEquals } from "../assert.ts";
import type { RaftMessage } from "../../src/codec/raft.ts";
import { RaftMessageKind } from "../../src/codec/raft.ts";
import { createClient } from "../../src/rpc/client.ts";
import { Health } from "../../src/rpc/services.ts";
import { Agent } from "../../src/node/agent.ts";
import { AdaptiveRaftRoute, type RaftLink } from "../../src/runner/adaptive.ts";
import { GrpcChannel } from "../../src/transport/grpc/client.ts";
import { IrohRpcClient } from "../../src/transport/iroh/rpc_client.ts";
import { createEndpoint } from "../../src/transport/iroh/endpoint.ts";
import { endpointIdOf } from "../../src/transport/iroh/secret_key.ts";
import { silentLogger } from "../../src/util/log.ts";
import { configOf, eventually, freePorts, nodeHome } from "./helpers.ts";

const heartbeat = (commit: number): RaftMessage => ({
  kind: RaftMessageKind.Heartbeat,
  from: 2,
  to: 1,
  term: 1,
  commit,
  readContext: 0,
});
const chunk = (bytes: number): RaftMessage => ({
  kind: RaftMessageKind.InstallSnapshot,
  from: 2,
  to: 1,
  term: 1,
  snapshotIndex: 10,
  snapshotTerm: 1,
  offset: 0,
  done: true,
  data: new Uint8Array(bytes),
});

async function setup() {
  const ports = await freePorts();
  const home = await nodeHome(ports.udp);
  const secretKey = crypto.getRandomValues(new Uint8Array(32));
  const arrivals: string[] = [];
  // The test's endpoint is node 2, the peer the messages come from: over Iroh
  // by its endpoint id, over gRPC (plaintext on loopback) by its address.
  const agent = await Agent.start(
    configOf({
      dataDir: home.dataDir,
      grpcPort: ports.tcp,
      irohPort: ports.udp,
      operatorId: endpointIdOf(crypto.getRandomValues(new Uint8Array(32))),
      mode: "dual",
      preferIroh: ["all_except_raft"],
      raftTransport: "adaptive",
      peers: [{ id: 2, endpointId: endpointIdOf(secretKey), grpcPort: 1 }],
      // Not a cluster member: the test reads what arrives, consensus does not.
      bootstrap: false,
    }),
    silentLogger,
  );
  agent.inbox.onReady = () => {
    for (let d = agent.inbox.take(); d; d = agent.inbox.take()) {
      const kind = d.message.kind === RaftMessageKind.Heartbeat ? "heartbeat" : "chunk";
      arrivals.push(`${kind}:${d.peer.transport}`);
    }
  };
  const endpoint = await createEndpoint({
    secretKey,
    bindAddr: "127.0.0.1:0",
    relayMode: "disabled",
    alpns: [],
  });
  const iroh = new IrohRpcClient({ endpoint });
  const irohChannel = iroh.peer(home.ticket);
  const grpcChannel = new GrpcChannel({ target: `127.0.0.1:${ports.tcp}` });
  const link = (transport: "grpc" | "iroh"): RaftLink => {
    const channel = transport === "grpc" ? grpcChannel : irohChannel;
    const health = createClient(Health, channel);
    return {
      transport,
      sendRaft: (m) => channel.sendRaft(m),
      probe: async (bytes) =>
        void await health.ping({ payload: new Uint8Array(bytes) }, { deadlineMs: 30_000 }),
    };
  };
  return {
    arrivals,
    grpc: link("grpc"),
    iroh: link("iroh"),
    async close() {
      grpcChannel.close();
      iroh.close();
      await endpoint.close();
      await agent.stop();
    },
  };
}

/** The same link, with `ms` added to every probe of at least `minBytes`. */
function slowed(link: RaftLink, ms: number, minBytes = 0): RaftLink {
  return {
    ...link,
    probe: async (bytes) => {
      if (bytes >= minBytes) await new Promise((r) => setTimeout(r, ms));
      await link.probe(bytes);
    },
  };
}

/** The same link, whose sends and probes fail as a dead connection's do. */
function failing(link: RaftLink): RaftLink {
  const fail = () => Promise.reject(new Error(`${link.transport}: connection refused`));
  return { ...link, sendRaft: fail, probe: fail };
}

Deno.test({
  name:
    "adaptive sends small messages over the faster transport and bulk over the one that moves bulk faster",
  async fn() {
    const s = await setup();
    try {
      const route = new AdaptiveRaftRoute([s.grpc, s.iroh], { bulkProbeBytes: 128 * 1024 });
      await route.probe();
      await route.probe();
      const h = route.health();
      assert(h.grpc.healthy && h.iroh.healthy);
      const fasterSmall = h.grpc.latencyMs! <= h.iroh.latencyMs! ? "grpc" : "iroh";
      const fasterBulk = h.grpc.bulkBytesPerSecond! >= h.iroh.bulkBytesPerSecond! ? "grpc" : "iroh";
      assertEquals(await route.send(heartbeat(1)), fasterSmall);
      assertEquals(await route.send(chunk(64 * 1024)), fasterBulk);
      await eventually("both messages arrived", () => s.arrivals.length === 2);
      // Over two transports the two may arrive in either order.
      assertEquals(s.arrivals.toSorted(), [`chunk:${fasterBulk}`, `heartbeat:${fasterSmall}`]);
      // On this machine the Iroh binding moves bulk several times slower than gRPC.
      console.log(
        `measured: latency grpc ${h.grpc.latencyMs!.toFixed(2)} ms, iroh ${
          h.iroh.latencyMs!.toFixed(2)
        } ms; ` +
          `bulk grpc ${(h.grpc.bulkBytesPerSecond! / 1e6).toFixed(1)} MB/s, iroh ${
            (h.iroh.bulkBytesPerSecond! / 1e6).toFixed(1)
          } MB/s`,
      );
    } finally {
      await s.close();
    }
  },
});

Deno.test({
  name: "a slow transport loses the small messages to the other one",
  async fn() {
    const s = await setup();
    try {
      for (const [slow, fast] of [["iroh", "grpc"], ["grpc", "iroh"]] as const) {
        s.arrivals.length = 0;
        const links = slow === "iroh"
          ? [s.grpc, slowed(s.iroh, 200)]
          : [slowed(s.grpc, 200), s.iroh];
        const route = new AdaptiveRaftRoute(links);
        await route.probe();
        assertEquals(route.route(RaftMessageKind.Heartbeat), fast);
        assertEquals(await route.send(heartbeat(2)), fast);
        await eventually("the heartbeat arrived", () => s.arrivals.length === 1);
        assertEquals(s.arrivals, [`heartbeat:${fast}`]);
      }
    } finally {
      await s.close();
    }
  },
});

Deno.test({
  name:
    "a failing transport is avoided: the message is sent again over the other, and later ones go there first",
  async fn() {
    const s = await setup();
    try {
      // gRPC measured fastest, then it starts failing.
      const grpc: RaftLink = { ...s.grpc };
      const route = new AdaptiveRaftRoute([grpc, slowed(s.iroh, 200)]);
      await route.probe();
      assertEquals(route.route(RaftMessageKind.Heartbeat), "grpc");
      Object.assign(grpc, failing(s.grpc));
      assertEquals(await route.send(heartbeat(3)), "iroh");
      assertEquals(route.stats.retries, 1);
      assertEquals(route.health().grpc.healthy, false);
      assertEquals(await route.send(heartbeat(4)), "iroh");
      assertEquals(route.stats.retries, 1);
      await eventually("both heartbeats arrived", () => s.arrivals.length === 2);
      assertEquals(s.arrivals, ["heartbeat:iroh", "heartbeat:iroh"]);
      // A successful probe brings it back.
      Object.assign(grpc, s.grpc);
      await route.probe();
      assertEquals(route.health().grpc.healthy, true);
    } finally {
      await s.close();
    }
  },
});

Deno.test({
  name: "a transport slow at bulk loses the snapshot chunks, whatever its latency",
  async fn() {
    const s = await setup();
    try {
      // gRPC is made slow only for large payloads: still fast for heartbeats.
      const route = new AdaptiveRaftRoute([slowed(s.grpc, 2000, 64 * 1024), s.iroh], {
        bulkProbeBytes: 64 * 1024,
      });
      await route.probe();
      assertEquals(route.route(RaftMessageKind.InstallSnapshot), "iroh");
      assertEquals(await route.send(chunk(64 * 1024)), "iroh");
      await eventually("the chunk arrived", () => s.arrivals.length === 1);
      assertEquals(s.arrivals, ["chunk:iroh"]);
    } finally {
      await s.close();
    }
  },
});
