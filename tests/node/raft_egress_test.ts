/**
 * Consensus egress over real transports: the outbox of one agent sending to
 * another, over gRPC and over Iroh. A vote is not held behind snapshot
 * chunks, and a peer frozen with SIGSTOP costs the sender at most the
 * outbox's bounds, with every message it could not send counted.
 */

import { assert } from "../assert.ts";
import { Priority } from "../../src/codec/frame.ts";
import { type RaftMessage, RaftMessageKind } from "../../src/codec/raft.ts";
import { configOrThrow, parseConfig } from "../../src/config/mod.ts";
import { Agent } from "../../src/node/agent.ts";
import { OUTBOX_LIMITS } from "../../src/runner/raft_outbox.ts";
import { silentLogger } from "../../src/util/log.ts";
import { eventually, freePorts, nodeHome } from "../runner/helpers.ts";
import { startNode } from "../cli/helpers.ts";

type Route = "grpc" | "iroh";

interface Home {
  ports: { tcp: number; udp: number };
  dataDir: string;
  endpointId: string;
}

async function home(): Promise<Home> {
  const ports = await freePorts();
  const h = await nodeHome(ports.udp);
  return { ports, dataDir: h.dataDir, endpointId: h.endpointId };
}

/** Node `id`'s config: dual, Raft over `route`, the other node its one peer. */
function configText(id: number, me: Home, peerId: number, peer: Home, route: Route): string {
  return `
[node]
id = ${id}
data_dir = "${me.dataDir}"
[transport]
mode = "dual"
[transport.migration]
raft_transport = "${route}"
[grpc]
bind = "127.0.0.1:${me.ports.tcp}"
[iroh]
bind = "127.0.0.1:${me.ports.udp}"
relay = "disabled"
[metrics]
bind = "127.0.0.1:0"
[cluster]
bootstrap = false
[[cluster.peers]]
id = ${peerId}
endpoint_id = "${peer.endpointId}"
addresses = ["127.0.0.1:${peer.ports.udp}"]
grpc_address = "127.0.0.1:${peer.ports.tcp}"
[limits]
shutdown_timeout_ms = 500
`;
}

const vote: RaftMessage = {
  kind: RaftMessageKind.VoteRequest,
  from: 1,
  to: 2,
  term: 8,
  lastLogIndex: 40,
  lastLogTerm: 7,
  transfer: false,
};
const chunk = (i: number): RaftMessage => ({
  kind: RaftMessageKind.InstallSnapshot,
  from: 1,
  to: 2,
  term: 8,
  snapshotIndex: 1000,
  snapshotTerm: 7,
  offset: i * 256 * 1024,
  done: false,
  data: new Uint8Array(256 * 1024).fill(i),
});
const append = (i: number, data: Uint8Array): RaftMessage => ({
  kind: RaftMessageKind.AppendEntriesRequest,
  from: 1,
  to: 2,
  term: 8,
  prevLogIndex: i,
  prevLogTerm: 8,
  leaderCommit: i,
  entries: [{ index: i + 1, term: 8, kind: 0, data }],
});

for (const route of ["grpc", "iroh"] as const) {
  Deno.test(`[${route}] a vote sent after eight snapshot chunks arrives before the chunks are through`, async () => {
    const a = await home();
    const b = await home();
    const sender = await Agent.start(
      configOrThrow(parseConfig(configText(1, a, 2, b, route))),
      silentLogger,
    );
    const receiver = await Agent.start(
      configOrThrow(parseConfig(configText(2, b, 1, a, route))),
      silentLogger,
    );
    // Neither is a cluster member yet: the test, not consensus, reads what arrives.
    sender.inbox.onReady = undefined;
    const arrivals: string[] = [];
    receiver.inbox.onReady = () => {
      for (let d = receiver.inbox.take(); d; d = receiver.inbox.take()) {
        arrivals.push(d.message.kind === RaftMessageKind.VoteRequest ? "vote" : "chunk");
      }
    };
    try {
      // Warm the route: the first message also connects.
      sender.outbox.send({ ...vote, term: 7 });
      await eventually("the warm-up vote arrives", () => arrivals.length === 1);
      arrivals.length = 0;
      for (let i = 0; i < 8; i++) assert(sender.outbox.send(chunk(i)));
      assert(sender.outbox.send(vote));
      await eventually("every message arrives", () => arrivals.length === 9, 20_000);
      assert(
        arrivals.indexOf("vote") < arrivals.lastIndexOf("chunk"),
        `arrival order: ${arrivals.join(" ")}`,
      );
      // The outbox counts a message once its send settles, which may be after it arrived.
      await eventually(
        `the outbox counts 10 messages sent over ${route}`,
        () => sender.outbox.stats.byTransport[route] === 10,
      );
    } finally {
      await sender.stop();
      await receiver.stop();
    }
  });

  Deno.test(`[${route}] a peer frozen by SIGSTOP costs the sender the outbox's bounds, and the drops are counted`, async () => {
    const a = await home();
    const b = await home();
    const file = `${b.dataDir}/node.toml`;
    await Deno.writeTextFile(file, configText(2, b, 1, a, route));
    const frozen = await startNode(file);
    const sender = await Agent.start(
      configOrThrow(parseConfig(configText(1, a, 2, b, route))),
      silentLogger,
    );
    try {
      // Connected and flowing first, then frozen.
      sender.outbox.send({ ...vote, term: 7 });
      await eventually(
        "the first vote is sent",
        () => sender.outbox.stats.sent[Priority.Election] === 1,
        10_000,
      );
      frozen.child.kill("SIGSTOP");
      const rssBefore = Deno.memoryUsage().rss;
      const data = new Uint8Array(64 * 1024).fill(7);
      // 512 MiB of appends offered; the peer takes nothing.
      for (let i = 0; i < 8192; i++) {
        sender.outbox.send(append(i, data));
        if (i % 256 === 255) await new Promise((r) => setTimeout(r, 5));
      }
      await new Promise((r) => setTimeout(r, 500));
      const outbox = sender.outbox.peer(2);
      const limit = OUTBOX_LIMITS[Priority.LogAppend];
      assert(outbox.queuedBytes <= limit.maxBytes, `queued ${outbox.queuedBytes} bytes`);
      assert(outbox.inFlight <= 8, `in flight ${outbox.inFlight}`);
      const { dropped } = sender.outbox.stats;
      const lost = dropped.queue_full[Priority.LogAppend]! +
        dropped.send_failed[Priority.LogAppend]!;
      assert(lost > 8192 - limit.maxMessages - 64, `dropped only ${lost} of 8192`);
      const grewMiB = (Deno.memoryUsage().rss - rssBefore) / (1 << 20);
      // The outbox holds at most 32 MiB; transports hold what their own bounds allow.
      assert(grewMiB < 200, `the sender grew by ${grewMiB.toFixed(0)} MiB for 512 MiB offered`);
    } finally {
      frozen.child.kill("SIGCONT");
      await sender.stop();
      await frozen.stop();
    }
  });
}
