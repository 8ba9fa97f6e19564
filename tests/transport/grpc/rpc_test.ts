/**
 * The gRPC RPC transport end to end: a real grpc-js server and client on
 * 127.0.0.1, the real router and codec. The services are the declared Health
 * and Vm services with test implementations whose behaviour (sleep, throw,
 * stream) the request chooses, as in tests/transport/iroh/rpc_test.ts: the
 * same implementations, the other adapter.
 */

import { assert, assertEquals, rejection } from "../../assert.ts";
import { GrpcRpcServer } from "../../../src/transport/grpc/server.ts";
import { GrpcChannel, GrpcRpcClient } from "../../../src/transport/grpc/client.ts";
import { GrpcTransportError } from "../../../src/transport/grpc/errors.ts";
import { RAFT_SEND_PATH } from "../../../src/transport/grpc/wire.ts";
import { encodeRaftMessage, type RaftMessage, RaftMessageKind } from "../../../src/codec/raft.ts";
import type { RaftIngress } from "../../../src/rpc/raft_ingress.ts";
import { RpcRouter } from "../../../src/rpc/router.ts";
import { createClient } from "../../../src/rpc/client.ts";
import { Code, isTransportFailure, RpcError } from "../../../src/rpc/errors.ts";
import type { RpcLimits } from "../../../src/rpc/limits.ts";
import { Health, type MethodInfo, Status, Vm } from "../../../src/rpc/services.ts";
import { RaftEnvelopeSchema } from "../../../src/rpc/gen/blixard/v1/raft_pb.ts";
import { create, toBinary } from "@bufbuild/protobuf";
import { eventually } from "./helpers.ts";
import { Observed, testHealth, testVm } from "../../fixtures/test_services.ts";
import { transportContract } from "../contract.ts";
import { heartbeat, RecordingIngress } from "../raft_ingress.ts";

const text = new TextEncoder();
const untext = new TextDecoder();

interface Harness extends AsyncDisposable {
  channel: GrpcChannel;
  rpc: GrpcRpcServer;
  port: number;
  seen: Observed;
  health: ReturnType<typeof createClient<typeof Health>>;
  vm: ReturnType<typeof createClient<typeof Vm>>;
}

async function harness(
  limits: Partial<RpcLimits> = {},
  raftIngress?: RaftIngress,
): Promise<Harness> {
  const seen = new Observed();
  const router = new RpcRouter().register(Health, testHealth(seen)).register(Vm, testVm(seen));
  const rpc = new GrpcRpcServer({
    router,
    bind: "127.0.0.1:0",
    allowInsecure: false,
    limits,
    ...(raftIngress ? { raftIngress } : {}),
  });
  const { port } = await rpc.start();
  const channel = new GrpcChannel({ target: `127.0.0.1:${port}`, limits });
  return {
    channel,
    rpc,
    port,
    seen,
    health: createClient(Health, channel),
    vm: createClient(Vm, channel),
    async [Symbol.asyncDispose]() {
      channel.close();
      await rpc.shutdown(100);
    },
  };
}

transportContract("grpc", async (limits) => {
  const ingress = new RecordingIngress();
  const h = await harness(limits, ingress);
  return {
    health: h.health,
    vm: h.vm,
    seen: h.seen,
    ingress,
    sendRaft: (message) => h.channel.sendRaft(message),
    inflightCount: () => h.rpc.inflightCount,
    callsStarted: () => h.rpc.stats.callsStarted,
    // grpc-js names each connection by the caller's ip:port.
    shutdown: (ms, reason) => h.rpc.shutdown(ms, reason),
    connections: () => h.seen.peers.size,
    [Symbol.asyncDispose]: () => h[Symbol.asyncDispose](),
  };
});

function codeOf(e: unknown): number {
  return e instanceof RpcError ? e.code : -1;
}

Deno.test({
  name: "a slow reader of a stream holds the handler back instead of filling the server's memory",
  async fn() {
    await using h = await harness();
    const events = h.vm.watchEvents({ name: "bulky" })[Symbol.asyncIterator]();
    for (let i = 0; i < 5; i++) await events.next();
    // Unread, the handler could make thousands of 16 KiB events in this time.
    await new Promise((r) => setTimeout(r, 500));
    const held = h.seen.produced;
    await new Promise((r) => setTimeout(r, 300));
    assertEquals(h.seen.produced, held, "the handler kept producing while nobody read");
    assert(held < 128, `${held} events (${held * 16} KiB) produced ahead of the reader`);
    // Reading again lets it go on.
    for (let i = 0; i < 50; i++) await events.next();
    assert(h.seen.produced > held);
    await events.return?.();
    await eventually("the stream handler was cancelled", () => h.seen.aborted.includes("watch:1"));
  },
});

Deno.test({
  name: "the server cuts a caller's deadline to max_deadline_ms",
  async fn() {
    await using h = await harness({ maxDeadlineMs: 200 });
    const server = h.rpc;
    // A client that allows long deadlines, against a server that does not.
    const channel = new GrpcChannel({ target: `127.0.0.1:${h.port}` });
    try {
      const e = await rejection(
        RpcError,
        () =>
          createClient(Health, channel).ping({ payload: text.encode("sleep:5000") }, {
            deadlineMs: 10_000,
          }),
      );
      assertEquals(e.code, Code.DEADLINE_EXCEEDED);
      assertEquals(e.message, "health.Ping: deadline of 200 ms passed on the server");
      assertEquals(h.seen.aborted, ["ping:4"]);
      await eventually("no call is in flight", () => server.inflightCount === 0);
    } finally {
      channel.close();
    }
  },
});

Deno.test({
  name: "an aborted signal cancels a server stream on both sides",
  async fn() {
    await using h = await harness();
    const ac = new AbortController();
    let n = 0;
    const e = await rejection(RpcError, async () => {
      for await (const _ of h.vm.watchEvents({ name: "endless" }, { signal: ac.signal })) {
        if (++n === 2) ac.abort();
      }
    });
    assertEquals(e.code, Code.CANCELLED);
    await eventually("the stream handler was cancelled", () => h.seen.aborted.includes("watch:1"));
  },
});

Deno.test({
  name: "a method of a service the node does not serve is UNIMPLEMENTED, and later calls work",
  async fn() {
    await using h = await harness();
    const status = createClient(Status, h.channel);
    const e = await rejection(RpcError, () => status.getClusterStatus({}));
    assertEquals(e.code, Code.UNIMPLEMENTED);
    assert(e.message.includes("/blixard.v1.StatusService/GetClusterStatus"), e.message);
    assert(!isTransportFailure(e));
    assertEquals((await h.health.check({})).agentVersion, "test");
  },
});

Deno.test({
  name: "calls over the limit of in-flight requests are refused with RESOURCE_EXHAUSTED",
  async fn() {
    await using h = await harness({ maxInflightRequests: 4 });
    const calls = Array.from(
      { length: 10 },
      () =>
        h.health.ping({ payload: text.encode("sleep:300") }).then(
          () => "ok",
          (e: RpcError) => codeOf(e),
        ),
    );
    const outcomes = await Promise.all(calls);
    assertEquals(outcomes.filter((o) => o === "ok").length, 4);
    assertEquals(outcomes.filter((o) => o === Code.RESOURCE_EXHAUSTED).length, 6);
    assertEquals(h.rpc.stats.callsRefused, 6);
    // The limit is per connection: another channel (its own connection) has its own four.
    const other = new GrpcChannel({ target: `127.0.0.1:${h.port}` });
    try {
      const busy = Array.from(
        { length: 4 },
        () => h.health.ping({ payload: text.encode("sleep:300") }),
      );
      await eventually("four calls run", () => h.rpc.inflightCount === 4);
      const e = await rejection(RpcError, () => h.health.ping({ payload: text.encode("x") }));
      assertEquals(e.code, Code.RESOURCE_EXHAUSTED);
      assert(e.message.includes("max_inflight_requests 4"), e.message);
      const res = await createClient(Health, other).ping({ payload: text.encode("other") });
      assertEquals(untext.decode(res.payload), "other");
      await Promise.all(busy);
    } finally {
      other.close();
    }
  },
});

Deno.test({
  name: "a message over max_frame_bytes is refused with RESOURCE_EXHAUSTED, on either side",
  async fn() {
    await using h = await harness({ maxFrameBytes: 1024 });
    // The client refuses to send it...
    let e = await rejection(
      RpcError,
      () => h.health.ping({ payload: new Uint8Array(2000) }),
    );
    assertEquals(e.code, Code.RESOURCE_EXHAUSTED);
    // ...and a client with a higher limit is refused by the server.
    const big = new GrpcChannel({
      target: `127.0.0.1:${h.port}`,
      limits: { maxFrameBytes: 1 << 20 },
    });
    try {
      e = await rejection(
        RpcError,
        () => createClient(Health, big).ping({ payload: new Uint8Array(2000) }),
      );
      assertEquals(e.code, Code.RESOURCE_EXHAUSTED);
      assert(e.message.includes("larger than max"), e.message);
      assertEquals(h.seen.started, 0);
      assertEquals((await h.health.ping({ payload: new Uint8Array(500) })).payload.length, 500);
    } finally {
      big.close();
    }
  },
});

Deno.test({
  name: "shutdown abandons a call that outlives its timeout, and says how many",
  async fn() {
    await using h = await harness();
    const slow = h.health.ping({ payload: text.encode("sleep:10000") }).catch((e) => e);
    await eventually("the slow call started", () => h.seen.started === 1);
    // The handler would run for 10 s: shutdown resolves without it, having aborted it.
    assertEquals((await h.rpc.shutdown(200)).abandoned, 1);
    assertEquals(h.seen.aborted, ["ping:14"]);
    const e = await slow;
    assert(e instanceof RpcError && isTransportFailure(e), String(e));
  },
});

Deno.test({
  name:
    "a call to a node that is not listening fails at once with UNAVAILABLE, a transport failure",
  async fn() {
    // A port that was free a moment ago.
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (listener.addr as Deno.NetAddr).port;
    listener.close();
    const channel = new GrpcChannel({ target: `127.0.0.1:${port}` });
    try {
      // UNAVAILABLE, not DEADLINE_EXCEEDED: it did not wait for its deadline.
      const e = await rejection(
        RpcError,
        () => createClient(Health, channel).check({}, { deadlineMs: 20_000 }),
      );
      assertEquals(e.code, Code.UNAVAILABLE);
      assert(isTransportFailure(e));
      assert(e.message.startsWith(`health.Check: 127.0.0.1:${port}: `), e.message);
    } finally {
      channel.close();
    }
  },
});

Deno.test({
  name: "a peer restarted on the same port is called again by the same channel, by itself",
  async fn() {
    const router = () => new RpcRouter().register(Health, testHealth(new Observed()));
    let server = new GrpcRpcServer({ router: router(), bind: "127.0.0.1:0" });
    const { port } = await server.start();
    const channel = new GrpcChannel({ target: `127.0.0.1:${port}` });
    const health = createClient(Health, channel);
    try {
      assertEquals((await health.check({})).agentVersion, "test");
      await server.shutdown(100);
      const down = await rejection(RpcError, () => health.check({}, { deadlineMs: 2000 }));
      assert(isTransportFailure(down), String(down));
      server = new GrpcRpcServer({ router: router(), bind: `127.0.0.1:${port}` });
      await server.start();
      // Within grpc-js's default first backoff (1 s, growing to 120 s) only with ours (100 ms).
      await eventually("the channel reconnected by itself", async () => {
        try {
          await health.check({}, { deadlineMs: 200 });
          return true;
        } catch {
          return false;
        }
      }, 5_000);
    } finally {
      channel.close();
      await server.shutdown(100);
    }
  },
});

Deno.test({
  name:
    "a peer heard from again is called at once, not after the reconnect backoff, and a call waiting for it is not failed",
  async fn() {
    const router = () => new RpcRouter().register(Health, testHealth(new Observed()));
    let server = new GrpcRpcServer({ router: router(), bind: "127.0.0.1:0" });
    const { port } = await server.start();
    const target = `127.0.0.1:${port}`;
    // A backoff far past the test's waits: only reconnectNow can bring the channel back in time.
    const client = new GrpcRpcClient({ backoff: { initialMs: 60_000, maxMs: 60_000 } });
    const channel = client.peer(target);
    const health = createClient(Health, channel);
    try {
      assertEquals((await health.check({})).agentVersion, "test");
      await server.shutdown(100);
      await eventually("the channel waits out its backoff", async () => {
        const down = await rejection(RpcError, () => health.check({}, { deadlineMs: 200 }));
        assert(isTransportFailure(down), String(down));
        return channel.backingOff;
      });
      // A call waiting for the connection keeps the failing one: it is not failed by a nudge.
      const waiting = health.check({}, { deadlineMs: 1_500, waitForReady: true });
      waiting.catch(() => {});
      server = new GrpcRpcServer({ router: router(), bind: target });
      await server.start();
      assert(!channel.reconnectNow(), "replaced the connection a call was waiting on");
      const waited = await rejection(RpcError, () => waiting);
      assertEquals(waited.code, Code.DEADLINE_EXCEEDED, String(waited));
      client.heardFrom(target);
      assertEquals(
        (await health.check({}, { deadlineMs: 2_000, waitForReady: true })).agentVersion,
        "test",
      );
      assert(channel.connected);
      client.heardFrom("127.0.0.1:1"); // no channel there: none is opened
      assertEquals(client.connectedCount, 1);
    } finally {
      client.close();
      await server.shutdown(100);
    }
  },
});

Deno.test({
  name:
    "a client lives through 40 restarts of its server (no GOAWAY reaches Deno's http2 client, denoland/deno#36788)",
  async fn() {
    const router = new RpcRouter().register(Health, testHealth(new Observed()));
    let server = new GrpcRpcServer({ router, bind: "127.0.0.1:0" });
    const { port } = await server.start();
    const channel = new GrpcChannel({
      target: `127.0.0.1:${port}`,
      backoff: { initialMs: 10, maxMs: 50 },
    });
    const health = createClient(Health, channel);
    try {
      for (let i = 0; i < 40; i++) {
        // Some calls just before the shutdown: recently closed streams are what the crash needs.
        await Promise.all(Array.from({ length: 5 }, () => health.check({})));
        await server.shutdown(1000);
        server = new GrpcRpcServer({ router, bind: `127.0.0.1:${port}` });
        await server.start();
        await eventually(`restart ${i}: an answer`, async () => {
          try {
            await health.check({}, { deadlineMs: 500 });
            return true;
          } catch (e) {
            assert(isTransportFailure(e), `restart ${i}: ${e}`);
            return false;
          }
        });
      }
    } finally {
      channel.close();
      await server.shutdown(100);
    }
  },
});

Deno.test({
  name: "a call that sets waitForReady waits, within its deadline, for a peer that is starting",
  async fn() {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (listener.addr as Deno.NetAddr).port;
    listener.close();
    const channel = new GrpcChannel({ target: `127.0.0.1:${port}` });
    const health = createClient(Health, channel);
    const server = new GrpcRpcServer({
      router: new RpcRouter().register(Health, testHealth(new Observed())),
      bind: `127.0.0.1:${port}`,
    });
    try {
      const e = await rejection(RpcError, () => health.check({}, { deadlineMs: 3000 }));
      assert(isTransportFailure(e), String(e));
      const waiting = health.check({}, { deadlineMs: 5000, waitForReady: true });
      await new Promise((r) => setTimeout(r, 300));
      await server.start();
      assertEquals((await waiting).agentVersion, "test");
    } finally {
      channel.close();
      await server.shutdown(100);
    }
  },
});

Deno.test({
  name: "a closed channel fails its calls in flight and later ones with UNAVAILABLE",
  async fn() {
    await using h = await harness();
    const channel = new GrpcChannel({ target: `127.0.0.1:${h.port}` });
    const call = createClient(Health, channel).ping({ payload: text.encode("sleep:5000") });
    await eventually("the call started", () => h.seen.started === 1);
    channel.close();
    const e = await rejection(RpcError, () => call);
    assertEquals(e.code, Code.UNAVAILABLE);
    assert(e.message.includes("client closed"), e.message);
    const later = await rejection(RpcError, () => createClient(Health, channel).check({}));
    assertEquals(later.code, Code.UNAVAILABLE);
    await eventually("the server saw the cancel", () => h.seen.aborted.includes("ping:1"));
  },
});

Deno.test({
  name:
    "Raft messages over gRPC reach the ingress decoded, in order, batched under load, with the caller's address",
  async fn() {
    const ingress = new RecordingIngress();
    await using h = await harness({}, ingress);
    // One at a time, waiting for each...
    for (let i = 1; i <= 50; i++) await h.channel.sendRaft(heartbeat(i));
    assertEquals(h.rpc.stats.raftEnvelopes, 50);
    // ...then 500 at once: they share Send calls, one offer each.
    await Promise.all(Array.from({ length: 500 }, (_, i) => h.channel.sendRaft(heartbeat(51 + i))));
    assertEquals(ingress.commits(), Array.from({ length: 550 }, (_, i) => i + 1));
    assert(ingress.offers.length < 100, `${ingress.offers.length} offers`);
    assertEquals(h.rpc.stats.raftMessages, 550);
    assertEquals(h.rpc.stats.callsStarted, 0);
    const from = new Set(ingress.got.map(({ peer }) => `${peer.transport} ${peer.id}`));
    assertEquals(from.size, 1);
    assert([...from][0]!.startsWith("grpc 127.0.0.1:"), String([...from][0]));
    // A whole AppendEntries with entries survives the trip unchanged.
    const append: RaftMessage = {
      kind: RaftMessageKind.AppendEntriesRequest,
      from: 1,
      to: 2,
      term: 9,
      prevLogIndex: 99,
      prevLogTerm: 8,
      leaderCommit: 98,
      entries: [
        { index: 100, term: 9, kind: 0, data: text.encode("set x=1") },
        { index: 101, term: 9, kind: 1, data: new Uint8Array([1, 2, 3]) },
      ],
    };
    await h.channel.sendRaft(append);
    assertEquals(encodeRaftMessage(ingress.got.at(-1)!.message), encodeRaftMessage(append));
  },
});

Deno.test({
  name: "the Raft ack counts what the ingress really queued: the rest fail at the sender",
  async fn() {
    const ingress = new RecordingIngress();
    await using h = await harness({}, ingress);
    ingress.room = 3;
    // One Send for the first, one for the four queued behind it.
    const outcomes = await Promise.all(
      [1, 2, 3, 4, 5].map((i) =>
        h.channel.sendRaft(heartbeat(i)).then(() => "queued", (e: RpcError) => codeOf(e))
      ),
    );
    assertEquals(outcomes, [
      "queued",
      "queued",
      "queued",
      Code.RESOURCE_EXHAUSTED,
      Code.RESOURCE_EXHAUSTED,
    ]);
    assertEquals(ingress.commits(), [1, 2, 3]);
    assertEquals(h.rpc.stats.raftDropped, 2);
  },
});

Deno.test({
  name: "a sender the ingress denies is answered PERMISSION_DENIED with the ingress's reason",
  async fn() {
    const ingress = new RecordingIngress();
    ingress.deny = "127.0.0.1 is not a member of this cluster";
    await using h = await harness({}, ingress);
    const e = await rejection(RpcError, () => h.channel.sendRaft(heartbeat(1)));
    assertEquals(e.code, Code.PERMISSION_DENIED);
    assert(e.message.endsWith("127.0.0.1 is not a member of this cluster"), e.message);
    assert(!isTransportFailure(e));
    assertEquals(ingress.got, []);
    assertEquals(h.rpc.stats.raftDenied, 1);
  },
});

/** The Raft method, for sending bytes no GrpcChannel would. */
const RAFT_SEND = { path: RAFT_SEND_PATH, label: "raft.Send" } as MethodInfo;

Deno.test({
  name: "a malformed Raft envelope is refused with INVALID_ARGUMENT and nothing of it is offered",
  async fn() {
    const ingress = new RecordingIngress();
    await using h = await harness({}, ingress);
    const good = encodeRaftMessage(heartbeat(1));
    const envelope = toBinary(
      RaftEnvelopeSchema,
      create(RaftEnvelopeSchema, { messages: [good, new Uint8Array([0xee, 1, 2])] }),
    );
    let e = await rejection(RpcError, () => h.channel.unary(RAFT_SEND, envelope));
    assertEquals(e.code, Code.INVALID_ARGUMENT);
    assert(e.message.includes("message 1 (3 bytes)"), e.message);
    e = await rejection(RpcError, () => h.channel.unary(RAFT_SEND, new Uint8Array([0xff, 0xff])));
    assertEquals(e.code, Code.INVALID_ARGUMENT);
    assertEquals(ingress.offers, []);
    assertEquals(h.rpc.stats.protocolErrors, 2);
    await h.channel.sendRaft(heartbeat(2));
    assertEquals(ingress.commits(), [2]);
  },
});

Deno.test({
  name: "a node without a Raft ingress refuses Raft with UNIMPLEMENTED: it runs no consensus",
  async fn() {
    await using h = await harness();
    const e = await rejection(RpcError, () => h.channel.sendRaft(heartbeat(1)));
    assertEquals(e.code, Code.UNIMPLEMENTED);
    assert(e.message.includes("runs no consensus"), e.message);
    assert(!isTransportFailure(e));
    assertEquals((await h.health.check({})).agentVersion, "test");
  },
});

Deno.test({
  name: "a plaintext listener on a non-loopback address is refused unless allow_insecure says so",
  async fn() {
    const router = new RpcRouter().register(Health, testHealth(new Observed()));
    const refused = new GrpcRpcServer({ router, bind: "0.0.0.0:0", allowInsecure: false });
    const e = await rejection(GrpcTransportError, () => refused.start());
    assertEquals(e.code, "INSECURE");
    for (
      const part of [
        "0.0.0.0:0",
        "grpc.tls.cert_file",
        "grpc.tls.key_file",
        "allow_insecure = true",
      ]
    ) {
      assert(e.message.includes(part), `"${part}" missing from: ${e.message}`);
    }
    const server = new GrpcRpcServer({ router, bind: "0.0.0.0:0", allowInsecure: true });
    const { port } = await server.start();
    const channel = new GrpcChannel({ target: `127.0.0.1:${port}` });
    try {
      assertEquals((await createClient(Health, channel).check({})).agentVersion, "test");
    } finally {
      channel.close();
      await server.shutdown(100);
    }
  },
});

Deno.test({
  name: "a client will not call a non-loopback address in plaintext unless allow_insecure says so",
  fn() {
    let e: unknown = null;
    try {
      new GrpcChannel({ target: "10.1.2.3:7400" });
    } catch (error) {
      e = error;
    }
    assert(e instanceof GrpcTransportError && e.code === "INSECURE", String(e));
    assert((e as Error).message.includes("allow_insecure = true"));
    new GrpcChannel({ target: "10.1.2.3:7400", allowInsecure: true }).close();
    new GrpcChannel({ target: "localhost:7400" }).close();
  },
});

Deno.test({
  name: "a bad address or an unreadable TLS file is an error that names the key and the value",
  async fn() {
    const router = new RpcRouter().register(Health, testHealth(new Observed()));
    let e = await rejection(
      GrpcTransportError,
      () => new GrpcRpcServer({ router, bind: "127.0.0.1", allowInsecure: false }).start(),
    );
    assertEquals(e.code, "INVALID_ARGUMENT");
    assert(e.message.includes('grpc.bind = "127.0.0.1"'), e.message);
    e = await rejection(
      GrpcTransportError,
      () =>
        new GrpcRpcServer({
          router,
          bind: "127.0.0.1:0",
          allowInsecure: false,
          tls: { certFile: "/nonexistent/cert.pem", keyFile: "/nonexistent/key.pem" },
        }).start(),
    );
    assertEquals(e.code, "TLS_FILE");
    assert(e.message.includes('grpc.tls.cert_file = "/nonexistent/cert.pem"'), e.message);
  },
});

Deno.test({
  name: "channels to one address are shared by the callers of a GrpcRpcClient",
  async fn() {
    await using h = await harness();
    const client = new GrpcRpcClient();
    try {
      const a = client.peer(`127.0.0.1:${h.port}`);
      assert(a === client.peer(`127.0.0.1:${h.port}`));
      assertEquals((await createClient(Health, a).check({})).nodeId, 7n);
      assert(a.connected);
    } finally {
      client.close();
    }
  },
});
