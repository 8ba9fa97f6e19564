/**
 * The Iroh RPC transport end to end: real endpoints on 127.0.0.1 with relays
 * disabled, real streams, the real router and codec. The services are the
 * declared Health and Vm services with test implementations whose behaviour
 * (sleep, throw, stream) the request chooses.
 */

import { assert, assertEquals, rejection } from "../../assert.ts";
import { type IrohEndpoint, parseTicket } from "../../../src/transport/iroh/endpoint.ts";
import type { IrohConnection } from "../../../src/transport/iroh/connection.ts";
import {
  IrohRpcServer,
  type IrohRpcServerOptions,
  RpcCloseCode,
} from "../../../src/transport/iroh/rpc_server.ts";
import { IrohRpcClient, type PeerChannel } from "../../../src/transport/iroh/rpc_client.ts";
import { encodeRaftMessage, RaftMessageKind } from "../../../src/codec/raft.ts";
import { RpcRouter } from "../../../src/rpc/router.ts";
import { createClient } from "../../../src/rpc/client.ts";
import { Code, decodeStatus, isTransportFailure, RpcError } from "../../../src/rpc/errors.ts";
import { Health, Vm } from "../../../src/rpc/services.ts";
import {
  encodeFrame,
  FLAG_LAST,
  type Frame,
  FrameDecoder,
  frameHeader,
  FrameType,
  Priority,
} from "../../../mod.ts";
import {
  freeUdpPort,
  loopbackEndpoint,
  randomKey,
  spawnHealthClient,
  spawnHealthServer,
  within,
} from "./helpers.ts";
import { endpointIdOf, parseSecretKey } from "../../../src/transport/iroh/secret_key.ts";
import { eventually } from "../../wait.ts";
import { Observed, testHealth, testVm } from "../../fixtures/test_services.ts";
import { transportContract } from "../contract.ts";
import { heartbeat, RecordingIngress } from "../raft_ingress.ts";

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
  limits: IrohRpcServerOptions["limits"] = {},
  options: Partial<IrohRpcServerOptions> & {
    /** The client's Heartbeat interval, ms. */
    clientKeepaliveMs?: number;
    /** Endpoint ids allowed besides the harness's client. */
    alsoAllow?: readonly string[];
  } = {},
): Promise<Harness> {
  const server = await loopbackEndpoint();
  const clientEndpoint = await loopbackEndpoint([]);
  const seen = new Observed();
  const router = new RpcRouter().register(Health, testHealth(seen)).register(Vm, testVm(seen));
  const rpc = new IrohRpcServer({
    endpoint: server,
    router,
    limits,
    ...options,
    allow: new Set([clientEndpoint.id, ...options.alsoAllow ?? []]),
  });
  rpc.start();
  const client = new IrohRpcClient({
    endpoint: clientEndpoint,
    limits,
    backoff: { initialMs: 20, maxMs: 200 },
    ...(options.clientKeepaliveMs ? { keepaliveIntervalMs: options.clientKeepaliveMs } : {}),
  });
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

transportContract("iroh", async (limits) => {
  const ingress = new RecordingIngress();
  const h = await harness(limits, { raftIngress: ingress });
  return {
    health: h.health,
    vm: h.vm,
    seen: h.seen,
    ingress,
    sendRaft: (message) => h.channel.sendRaft(message),
    inflightCount: () => h.rpc.inflightCount,
    callsStarted: () => h.rpc.stats.callsStarted,
    shutdown: (ms, reason) => h.rpc.shutdown(ms, reason),
    connections: () => h.rpc.stats.connectionsAccepted,
    [Symbol.asyncDispose]: () => h[Symbol.asyncDispose](),
  };
});

Deno.test({
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

/** Reads frames from `recv` until `pick` accepts one. */
async function nextFrame(
  recv: { read(): Promise<Uint8Array | null> },
  what: string,
  pick: (f: Frame) => boolean = () => true,
): Promise<Frame> {
  const decoder = new FrameDecoder();
  return await within(
    (async () => {
      for (;;) {
        const chunk = await recv.read();
        if (chunk === null) throw new Error(`stream ended before ${what}`);
        decoder.push(chunk);
        for (let f = decoder.next(); f !== null; f = decoder.next()) if (pick(f)) return f;
      }
    })(),
    3000,
    what,
  );
}

Deno.test({
  name:
    "a frame of an unknown protocol version gets an Error frame naming the versions this node speaks, for that frame's request",
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
    const reply = await nextFrame(bi.recv, "an Error frame");
    assertEquals(reply.type, FrameType.Error);
    // The caller can match the answer to its request.
    assertEquals(reply.requestId, 9n);
    assertEquals(reply.method, 0x0102);
    const status = decodeStatus(reply.payload, "test");
    assertEquals(status.code, Code.FAILED_PRECONDITION);
    assertEquals(status.supportedVersions, [1]);
    assert(status.message.includes("version 2 is not supported"), status.message);
    const info = await within(conn.closed(), 3000, "the connection to close");
    assertEquals(info.code, RpcCloseCode.ProtocolError);
  },
});

Deno.test({
  name: "a peer process killed and restarted with the same key is reconnected to by itself",
  async fn() {
    const keyHex = Array.from(randomKey(), (b) => b.toString(16).padStart(2, "0")).join("");
    const clientEndpoint = await loopbackEndpoint([]);
    const client = new IrohRpcClient({
      endpoint: clientEndpoint,
      backoff: { initialMs: 50, maxMs: 400 },
    });
    let server = await spawnHealthServer(keyHex, "127.0.0.1:0", [clientEndpoint.id]);
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
      server = await spawnHealthServer(keyHex, `127.0.0.1:${port}`, [clientEndpoint.id]);
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
  name:
    "a peer that restarts and dials us is redialled at once, not after the dead-peer timeout; a live one that dials us again is kept",
  async fn() {
    const keyHex = Array.from(randomKey(), (b) => b.toString(16).padStart(2, "0")).join("");
    const peerId = endpointIdOf(parseSecretKey(keyHex, "test"));
    const port = await freeUdpPort();
    await using us = await loopbackEndpoint();
    // Silence alone would take a minute to prove the old connection dead.
    const client = new IrohRpcClient({
      endpoint: us,
      deadPeerTimeoutMs: 60_000,
      backoff: { initialMs: 50, maxMs: 400 },
    });
    const held: IrohConnection[] = [];
    const accepting = us.acceptLoop({
      allow: new Set([peerId]),
      onConnection: (c) => {
        held.push(c);
        client.peerConnected(c.remoteId);
      },
    });
    const spawn = () =>
      spawnHealthServer(keyHex, `127.0.0.1:${port}`, [us.id], [`--dial=${us.ticket()}`]);
    let server = await spawn();
    try {
      const channel = client.peer({ id: peerId, directAddresses: [`127.0.0.1:${port}`] });
      const health = createClient(Health, channel);
      assertEquals((await health.check({})).agentVersion, "fixture");

      // Alive: it answers the probe, and the connection stays.
      client.peerConnected(peerId);
      await new Promise((resolve) => setTimeout(resolve, 800));
      assert(channel.connected);
      assertEquals(client.stats.connectionsLost, 0);

      server.child.kill("SIGKILL");
      await server.child.status;
      const dialledBefore = held.length;
      server = await spawn();
      await eventually("the restarted peer dialled us", () => held.length > dialledBefore, 10_000);
      await eventually(
        "a call reaches the restarted peer",
        () => health.check({}, { deadlineMs: 500 }).then(() => true, () => false),
        5_000,
      );
      assertEquals(client.stats.connectionsLost, 1);
    } finally {
      client.close();
      server.child.kill("SIGKILL");
      await server.child.status;
      for (const c of held) c.close(0, "done");
      await us.close();
      await accepting;
    }
  },
});

Deno.test({
  name: "a client process killed with SIGKILL is noticed by the server and its connection closed",
  async fn() {
    const key = randomKey();
    const keyHex = Array.from(key, (b) => b.toString(16).padStart(2, "0")).join("");
    await using h = await harness({}, { idleTimeoutMs: 1_000, alsoAllow: [endpointIdOf(key)] });
    const peer = await spawnHealthClient(keyHex, h.server.ticket());
    try {
      await eventually("the client process connected", () => h.rpc.connectionCount === 1, 10_000);
      peer.kill("SIGKILL");
      await peer.status;
      // QUIC alone would notice at its own idle timeout, ~30 s on this binding.
      await eventually(
        "the server closed the dead peer's connection",
        () => h.rpc.connectionCount === 0,
        10_000,
      );
      assertEquals(h.rpc.stats.connectionsIdle, 1);
      // Everyone else is served as before.
      assertEquals((await h.health.check({})).agentVersion, "test");
    } finally {
      try {
        peer.kill("SIGKILL");
      } catch {
        // already gone
      }
      await peer.status;
    }
  },
});

Deno.test({
  name:
    "a live client is not closed for idleness, whether it calls nothing or only receives a stream",
  async fn() {
    await using h = await harness({}, { idleTimeoutMs: 1_000, clientKeepaliveMs: 200 });
    assertEquals((await h.health.check({})).agentVersion, "test");
    // Idle: nothing to send, nothing to receive, for three idle timeouts.
    await new Promise((r) => setTimeout(r, 3_000));
    // Receiving a stream, sending nothing, for three more.
    const until = Date.now() + 3_000;
    for await (const _ of h.vm.watchEvents({ name: "endless" })) {
      if (Date.now() >= until) break;
    }
    assertEquals(h.rpc.stats.connectionsIdle, 0);
    assertEquals(h.client.stats.connectionsLost, 0);
    assertEquals(h.rpc.stats.connectionsAccepted, 1);
  },
});

Deno.test({
  name: "Raft frames reach the ingress one by one, in order, with the sender's endpoint id",
  async fn() {
    const ingress = new RecordingIngress();
    await using h = await harness({}, { raftIngress: ingress });
    for (let i = 1; i <= 100; i++) await h.channel.sendRaft(heartbeat(i));
    await eventually("100 heartbeats arrived", () => ingress.got.length === 100);
    assertEquals(ingress.commits(), Array.from({ length: 100 }, (_, i) => i + 1));
    assert(ingress.offers.every((n) => n === 1));
    assertEquals(
      new Set(ingress.got.map(({ peer }) => `${peer.transport} ${peer.id}`)),
      new Set([`iroh ${h.clientEndpoint.id}`]),
    );
    assertEquals(h.rpc.stats.callsStarted, 0);
  },
});

Deno.test({
  name:
    "a Raft frame the ingress denies is answered PERMISSION_DENIED for that frame, and the connection serves on",
  async fn() {
    const ingress = new RecordingIngress();
    ingress.deny = "endpoint is an operator key, not a Raft peer";
    await using h = await harness({}, { raftIngress: ingress });
    const { conn, bi } = await rawStream(h);
    const vote = encodeRaftMessage({
      kind: RaftMessageKind.VoteRequest,
      from: 1,
      to: 2,
      term: 4,
      lastLogIndex: 10,
      lastLogTerm: 3,
      transfer: false,
    });
    await bi.send.write(encodeFrame({
      type: FrameType.Request,
      flags: FLAG_LAST,
      priority: Priority.Election,
      method: 0x0603,
      requestId: 77n,
      deadlineMs: 0,
    }, vote));
    const reply = await nextFrame(bi.recv, "an Error frame");
    assertEquals(reply.type, FrameType.Error);
    assertEquals(reply.requestId, 77n);
    assertEquals(reply.method, 0x0603);
    const status = decodeStatus(reply.payload, "test");
    assertEquals(status.code, Code.PERMISSION_DENIED);
    assertEquals(status.message, "endpoint is an operator key, not a Raft peer");
    assertEquals(ingress.got, []);
    assertEquals(h.rpc.stats.raftDenied, 1);
    // The same stream and connection still answer.
    await bi.send.write(encodeFrame({
      type: FrameType.Heartbeat,
      flags: FLAG_LAST,
      priority: Priority.Election,
      method: 0,
      requestId: 78n,
      deadlineMs: 0,
    }));
    assertEquals((await nextFrame(bi.recv, "a Heartbeat answer")).requestId, 78n);
    assertEquals(conn.closeInfo(), null);
    conn.close();
  },
});

Deno.test({
  name: "a Raft message the ingress has no room for is dropped and counted; later ones get through",
  async fn() {
    const ingress = new RecordingIngress();
    ingress.room = 2;
    await using h = await harness({}, { raftIngress: ingress });
    for (let i = 1; i <= 3; i++) await h.channel.sendRaft(heartbeat(i));
    await eventually("the third was dropped", () => h.rpc.stats.raftDropped === 1);
    ingress.room = 1;
    await h.channel.sendRaft(heartbeat(4));
    await eventually("the fourth arrived", () => ingress.got.length === 3);
    assertEquals(ingress.commits(), [1, 2, 4]);
    assertEquals(h.rpc.stats.raftMessages, 4);
  },
});

Deno.test({
  name: "a node without a Raft ingress drops Raft messages, counts them, and serves calls",
  async fn() {
    await using h = await harness();
    await h.channel.sendRaft(heartbeat(1));
    await eventually("the message was dropped", () => h.rpc.stats.raftDropped === 1);
    assertEquals((await h.health.check({})).agentVersion, "test");
  },
});

Deno.test({
  name:
    "a parked server tells callers and new connections why it refuses them, and serves again when resumed",
  async fn() {
    await using h = await harness();
    assertEquals((await h.health.check({})).agentVersion, "test");
    const reason = "this node no longer serves Iroh; it serves gRPC at 10.0.0.1:7400";
    await h.rpc.shutdown(1_000, reason);
    // The open connection was closed with the reason; the next call dials again and is refused with it.
    const refused = await rejection(RpcError, () => h.health.check({}, { deadlineMs: 3_000 }));
    assertEquals(refused.code, Code.UNAVAILABLE);
    assert(refused.message.includes(reason), refused.message);
    await eventually("a new connection was refused", () => h.rpc.stats.connectionsRefused >= 1);
    const raw = await h.clientEndpoint.connect(h.server.ticket());
    const info = await within(raw.closed(), 3000, "the parked server to close the connection");
    assertEquals(info.code, RpcCloseCode.ShuttingDown);
    assertEquals(info.reason, reason);
    h.rpc.resume();
    await eventually("the server answers again", async () => {
      try {
        return (await h.health.check({}, { deadlineMs: 500 })).agentVersion === "test";
      } catch {
        return false;
      }
    }, 5_000);
  },
});

Deno.test({
  name: "streams beyond max_concurrent_streams are refused and the connection keeps serving",
  async fn() {
    await using h = await harness({ maxConcurrentStreams: 2 });
    const conn = await h.clientEndpoint.connect(h.server.ticket());
    const heartbeatFrame = encodeFrame({
      type: FrameType.Heartbeat,
      flags: FLAG_LAST,
      priority: Priority.Heartbeat,
      method: 0,
      requestId: 5n,
      deadlineMs: 0,
    });
    const answers = await Promise.all([0, 1, 2].map(async () => {
      const bi = await conn.openBi();
      await bi.send.write(heartbeatFrame);
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

Deno.test({
  name:
    "a peer that reads nothing this node sends gets no more of it: sends fail at once with UNAVAILABLE, a transport failure",
  async fn() {
    // A peer that accepts the connection and never reads a stream.
    const server = await loopbackEndpoint();
    const clientEndpoint = await loopbackEndpoint([]);
    const accepted = server.acceptIncoming().then((i) =>
      i!.accept({ allow: new Set([clientEndpoint.id]) })
    );
    const client = new IrohRpcClient({
      endpoint: clientEndpoint,
      limits: { maxConnectionBufferBytes: 2 << 20 },
    });
    try {
      const channel = client.peer(server.ticket());
      const chunk = (offset: number) => ({
        kind: RaftMessageKind.InstallSnapshot,
        from: 1,
        to: 2,
        term: 1,
        snapshotIndex: 10,
        snapshotTerm: 1,
        offset,
        done: false,
        data: new Uint8Array(256 << 10),
      } as const);
      let refusal: RpcError | null = null;
      for (let i = 0; i < 200 && refusal === null; i++) {
        try {
          await channel.sendRaft(chunk(i));
        } catch (e) {
          if (!(e instanceof RpcError)) throw e;
          refusal = e;
        }
        // Let the binding take what the peer's window allows.
        await new Promise((r) => setTimeout(r, 5));
      }
      assert(refusal !== null, "every chunk was queued for a peer that reads nothing");
      assertEquals(refusal.code, Code.UNAVAILABLE);
      assert(isTransportFailure(refusal));
      assert(refusal.message.includes("is not reading what this node sent"), refusal.message);
      (await accepted).close();
    } finally {
      client.close();
      await Promise.all([server.close(), clientEndpoint.close()]);
    }
  },
});
