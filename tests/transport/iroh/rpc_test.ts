/**
 * The Iroh RPC transport end to end: real endpoints on 127.0.0.1 with relays
 * disabled, real streams, the real router and codec. The services are the
 * declared Health and Vm services with test implementations whose behaviour
 * (sleep, throw, stream) the request chooses.
 */

import { assert, assertEquals, rejection } from "../../assert.ts";
import { type IrohEndpoint, parseTicket } from "../../../src/transport/iroh/endpoint.ts";
import { IrohRpcServer, RpcCloseCode } from "../../../src/transport/iroh/rpc_server.ts";
import { IrohRpcClient, type PeerChannel } from "../../../src/transport/iroh/rpc_client.ts";
import { type RaftMessage, RaftMessageKind } from "../../../src/codec/raft.ts";
import { RpcRouter } from "../../../src/rpc/router.ts";
import { createClient } from "../../../src/rpc/client.ts";
import { Code, decodeStatus, RpcError } from "../../../src/rpc/errors.ts";
import { Health, Vm } from "../../../src/rpc/services.ts";
import {
  encodeFrame,
  FLAG_LAST,
  FrameDecoder,
  frameHeader,
  FrameType,
  Priority,
} from "../../../mod.ts";
import { loopbackEndpoint, randomKey, within } from "./helpers.ts";
import { eventually, firstMatch } from "../../wait.ts";
import { Observed, testHealth, testVm } from "../../fixtures/test_services.ts";
import { transportContract } from "../contract.ts";

const text = new TextEncoder();
const untext = new TextDecoder();

interface Harness extends AsyncDisposable {
  channel: PeerChannel;
  server: IrohEndpoint;
  clientEndpoint: IrohEndpoint;
  rpc: IrohRpcServer;
  client: IrohRpcClient;
  seen: Observed;
  health: ReturnType<typeof createClient<typeof Health>>;
  vm: ReturnType<typeof createClient<typeof Vm>>;
}

async function harness(
  limits: ConstructorParameters<typeof IrohRpcServer>[0]["limits"] = {},
  onRaftMessage?: (message: RaftMessage) => void,
): Promise<Harness> {
  const server = await loopbackEndpoint();
  const clientEndpoint = await loopbackEndpoint([]);
  const seen = new Observed();
  const router = new RpcRouter().register(Health, testHealth(seen)).register(Vm, testVm(seen));
  const rpc = new IrohRpcServer({
    endpoint: server,
    router,
    allow: new Set([clientEndpoint.id]),
    limits,
    ...(onRaftMessage ? { onRaftMessage } : {}),
  });
  rpc.start();
  const client = new IrohRpcClient({ endpoint: clientEndpoint, limits });
  const channel = client.peer(server.ticket());
  return {
    channel,
    server,
    clientEndpoint,
    rpc,
    client,
    seen,
    health: createClient(Health, channel),
    vm: createClient(Vm, channel),
    async [Symbol.asyncDispose]() {
      client.close();
      await rpc.shutdown(100);
      await Promise.all([server.close(), clientEndpoint.close()]);
    },
  };
}

const opts = { sanitizeOps: false, sanitizeResources: false };

transportContract("iroh", async (limits) => {
  const h = await harness(limits);
  return {
    health: h.health,
    vm: h.vm,
    seen: h.seen,
    inflightCount: () => h.rpc.inflightCount,
    callsStarted: () => h.rpc.stats.callsStarted,
    shutdown: (ms) => h.rpc.shutdown(ms),
    connections: () => h.rpc.stats.connectionsAccepted,
    [Symbol.asyncDispose]: () => h[Symbol.asyncDispose](),
  };
});

Deno.test({
  ...opts,
  name: "an endpoint that is not on the allowlist cannot call anything",
  async fn() {
    await using h = await harness();
    const stranger = await loopbackEndpoint([]);
    const client = new IrohRpcClient({ endpoint: stranger });
    try {
      const health = createClient(Health, client.peer(h.server.ticket()));
      const e = await rejection(RpcError, () => health.check({}, { deadlineMs: 3000 }));
      assertEquals(e.code, Code.PERMISSION_DENIED, String(e));
      assert(e.message.includes("not on its allowlist"), e.message);
      assertEquals(h.seen.started, 0);
      await eventually("the refusal was counted", () => h.rpc.stats.connectionsRefused >= 1);
      assertEquals(h.rpc.stats.callsStarted, 0);
    } finally {
      client.close();
      await stranger.close();
    }
  },
});

/** A raw stream to the server from an allowed endpoint, for sending bytes no client would. */
async function rawStream(h: Harness) {
  const conn = await h.clientEndpoint.connect(h.server.ticket());
  const bi = await conn.openBi();
  return { conn, bi };
}

Deno.test({
  ...opts,
  name:
    "garbage on a stream closes that connection with a protocol error; other clients are unaffected",
  async fn() {
    await using h = await harness();
    await h.health.ping({ payload: text.encode("warm up") });
    const { conn, bi } = await rawStream(h);
    await bi.send.write(text.encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    const info = await within(conn.closed(), 3000, "the server to close the garbage connection");
    assertEquals(info.code, RpcCloseCode.ProtocolError);
    assert(info.reason.includes("magic"), info.reason);
    assertEquals(h.rpc.stats.protocolErrors, 1);
    assertEquals(
      untext.decode((await h.health.ping({ payload: text.encode("still here") })).payload),
      "still here",
    );
  },
});

Deno.test({
  ...opts,
  name:
    "an oversized length is refused from the header alone: the connection closes, nothing is allocated",
  async fn() {
    await using h = await harness({ maxFrameBytes: 1 << 20 });
    const before = Deno.memoryUsage();
    const { conn, bi } = await rawStream(h);
    // A valid header claiming a 4 GiB payload, and no payload.
    await bi.send.write(frameHeader({
      type: FrameType.Request,
      flags: FLAG_LAST,
      priority: Priority.Service,
      method: 0x0102,
      requestId: 1n,
      deadlineMs: 0,
    }, 0xffff_ffff));
    const info = await within(conn.closed(), 3000, "the server to close the connection");
    assertEquals(info.code, RpcCloseCode.ProtocolError);
    assert(info.reason.includes("exceeds max_frame_bytes 1048576"), info.reason);
    const after = Deno.memoryUsage();
    assert(after.rss - before.rss < 256 << 20, `rss grew by ${after.rss - before.rss} bytes`);
    assertEquals(
      untext.decode((await h.health.ping({ payload: text.encode("fine") })).payload),
      "fine",
    );
  },
});

Deno.test({
  ...opts,
  name:
    "a frame of an unknown protocol version gets an Error frame naming the versions this node speaks",
  async fn() {
    await using h = await harness();
    const { conn, bi } = await rawStream(h);
    const frame = encodeFrame({
      type: FrameType.Request,
      flags: FLAG_LAST,
      priority: Priority.Service,
      method: 0x0102,
      requestId: 9n,
      deadlineMs: 0,
    });
    frame[2] = 2; // version 2
    await bi.send.write(frame);
    const decoder = new FrameDecoder();
    const reply = await within(
      (async () => {
        for (;;) {
          const chunk = await bi.recv.read();
          if (chunk === null) throw new Error("stream ended without an Error frame");
          decoder.push(chunk);
          const f = decoder.next();
          if (f) return f;
        }
      })(),
      3000,
      "an Error frame",
    );
    assertEquals(reply.type, FrameType.Error);
    const status = decodeStatus(reply.payload, "test");
    assertEquals(status.supportedVersions, [1]);
    assert(status.message.includes("version 2 is not supported"), status.message);
    await within(conn.closed(), 3000, "the connection to close");
  },
});

/** Starts the Health fixture server in a child process; resolves with its ticket. */
async function spawnServer(keyHex: string, bindAddr: string, allowed: string) {
  const script = new URL("../../fixtures/iroh_health_server.ts", import.meta.url).pathname;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script, keyHex, bindAddr, allowed],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const ticket = await within(
    firstMatch(child.stdout, /READY (\S+)/, "the server's READY line"),
    15_000,
    "the server process to be ready",
  );
  return { child, ticket };
}

Deno.test({
  ...opts,
  name: "a peer process killed and restarted with the same key is reconnected to by itself",
  async fn() {
    const keyHex = Array.from(randomKey(), (b) => b.toString(16).padStart(2, "0")).join("");
    const clientEndpoint = await loopbackEndpoint([]);
    const client = new IrohRpcClient({
      endpoint: clientEndpoint,
      backoff: { initialMs: 50, maxMs: 400 },
    });
    let server = await spawnServer(keyHex, "127.0.0.1:0", clientEndpoint.id);
    try {
      const channel = client.peer(server.ticket);
      const health = createClient(Health, channel);
      assertEquals((await health.check({})).agentVersion, "fixture");
      const port = parseTicket(server.ticket).directAddresses
        .find((a) => a.startsWith("127.0.0.1:"))!.split(":")[1];

      server.child.kill("SIGKILL");
      await server.child.status;
      const down = await rejection(RpcError, () => health.check({}, { deadlineMs: 1000 }));
      assert(
        [Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED].includes(down.code as 14 | 4),
        String(down),
      );

      await eventually("the client noticed the peer is gone", () => !channel.connected, 5_000);
      server = await spawnServer(keyHex, `127.0.0.1:${port}`, clientEndpoint.id);
      await eventually("the client reconnected by itself", () => channel.connected, 10_000);
      assertEquals((await health.check({}, { deadlineMs: 2000 })).agentVersion, "fixture");
      assert(client.stats.connectionsLost >= 1);
    } finally {
      client.close();
      server.child.kill("SIGKILL");
      await server.child.status;
      await clientEndpoint.close();
    }
  },
});

Deno.test({
  ...opts,
  name: "Raft messages reach the consensus module in order, one-way",
  async fn() {
    const got: RaftMessage[] = [];
    await using h = await harness({}, (m) => got.push(m));
    for (let i = 1; i <= 100; i++) {
      await h.channel.sendRaft({
        kind: RaftMessageKind.Heartbeat,
        from: 1,
        to: 2,
        term: 3,
        commit: i,
        readContext: 0,
      });
    }
    await eventually("100 heartbeats arrived", () => got.length === 100);
    assertEquals(
      got.map((m) => m.kind === RaftMessageKind.Heartbeat ? m.commit : -1),
      Array.from({ length: 100 }, (_, i) => i + 1),
    );
    assertEquals(h.rpc.stats.callsStarted, 0);
  },
});

Deno.test({
  ...opts,
  name: "a vote sent after a 4 MiB snapshot chunk arrives first: bulk never delays an election",
  async fn() {
    const got: string[] = [];
    await using h = await harness(
      {},
      (m) => got.push(m.kind === RaftMessageKind.VoteRequest ? "vote" : "snapshot"),
    );
    // Open both streams first so the race is only between the two messages.
    await h.channel.sendRaft({ kind: RaftMessageKind.TimeoutNow, from: 1, to: 2, term: 1 });
    await h.channel.sendRaft({
      kind: RaftMessageKind.InstallSnapshotResponse,
      from: 1,
      to: 2,
      term: 1,
      snapshotIndex: 0,
      offset: 0,
      reject: false,
    });
    await eventually("the warm-up messages arrived", () => got.length === 2);
    got.length = 0;
    const data = new Uint8Array(4 << 20).map((_, i) => i & 0xff);
    await h.channel.sendRaft({
      kind: RaftMessageKind.InstallSnapshot,
      from: 1,
      to: 2,
      term: 1,
      snapshotIndex: 1000,
      snapshotTerm: 1,
      offset: 0,
      done: true,
      data,
    });
    await h.channel.sendRaft({
      kind: RaftMessageKind.VoteRequest,
      from: 1,
      to: 2,
      term: 2,
      lastLogIndex: 1000,
      lastLogTerm: 1,
      transfer: false,
    });
    await eventually("both arrived", () => got.length === 2, 20_000);
    assertEquals(got, ["vote", "snapshot"]);
  },
});

Deno.test({
  ...opts,
  name: "streams beyond max_concurrent_streams are refused and the connection keeps serving",
  async fn() {
    await using h = await harness({ maxConcurrentStreams: 2 });
    const conn = await h.clientEndpoint.connect(h.server.ticket());
    const heartbeat = encodeFrame({
      type: FrameType.Heartbeat,
      flags: FLAG_LAST,
      priority: Priority.Heartbeat,
      method: 0,
      requestId: 5n,
      deadlineMs: 0,
    });
    const answers = await Promise.all([0, 1, 2].map(async () => {
      const bi = await conn.openBi();
      await bi.send.write(heartbeat);
      try {
        return (await within(bi.recv.read(), 3000, "an answer")) === null ? "ended" : "answered";
      } catch {
        return "refused";
      }
    }));
    assertEquals(answers.filter((a) => a === "answered").length, 2);
    assertEquals(answers.filter((a) => a === "refused").length, 1);
    assertEquals(h.rpc.stats.streamsRefused, 1);
    assertEquals(conn.closeInfo(), null);
    conn.close();
  },
});
