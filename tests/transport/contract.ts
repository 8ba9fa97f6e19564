/**
 * What every transport adapter promises, defined once and run against each
 * (tests/transport/iroh/rpc_test.ts and tests/transport/grpc/rpc_test.ts):
 * the same calls, the same test services, the same expectations. What only
 * one transport has (streams per priority, TLS, reconnects) stays in its file.
 */

import { assert, assertEquals, rejection } from "../assert.ts";
import { eventually, within } from "../wait.ts";
import type { createClient } from "../../src/rpc/client.ts";
import { Code, isTransportFailure, RpcError } from "../../src/rpc/errors.ts";
import type { RpcLimits } from "../../src/rpc/limits.ts";
import type { Health, Vm } from "../../src/rpc/services.ts";
import type { Observed } from "../fixtures/test_services.ts";
import { type RaftMessage, RaftMessageKind } from "../../src/codec/raft.ts";
import type { RecordingIngress } from "./raft_ingress.ts";

/** A server with the test services and a client of it, over one transport. */
export interface ContractHarness extends AsyncDisposable {
  readonly health: ReturnType<typeof createClient<typeof Health>>;
  readonly vm: ReturnType<typeof createClient<typeof Vm>>;
  readonly seen: Observed;
  /** What the server's Raft ingress was offered. */
  readonly ingress: RecordingIngress;
  /** Sends a Raft message to the server over the client's channel. */
  sendRaft(message: RaftMessage): Promise<void>;
  /** Calls running on the server now. */
  inflightCount(): number;
  /** Calls that reached a handler. */
  callsStarted(): number;
  /** Connections the server has had from this client. */
  connections(): number;
  /** Graceful server shutdown, saying `reason` to whoever it refuses. */
  shutdown(timeoutMs: number, reason?: string): Promise<{ abandoned: number }>;
}

const text = new TextEncoder();
const untext = new TextDecoder();

/** Defines the contract's tests for `transport`. */
export function transportContract(
  transport: string,
  harness: (limits?: Partial<RpcLimits>) => Promise<ContractHarness>,
): void {
  const test = (name: string, fn: () => Promise<void>) =>
    Deno.test({ name: `[${transport}] ${name}`, fn });

  test("a unary call is answered, and the node answers Check", async () => {
    await using h = await harness();
    const res = await h.health.ping({ payload: text.encode("hello"), clientSendTimeNs: 2n ** 60n });
    assertEquals(res.payload, text.encode("hello"));
    assertEquals(res.clientSendTimeNs, 2n ** 60n);
    assertEquals(res.nodeId, 7n);
    // Bytes arrive as plain Uint8Arrays on both sides, whatever the transport uses inside.
    assert(h.seen.plainBytes, "the handler got a Uint8Array subclass");
    const check = await h.health.check({});
    assertEquals(check.status, 1);
    assertEquals(check.agentVersion, "test");
  });

  test("1,000 concurrent calls from one client are all answered correctly, over one connection", async () => {
    await using h = await harness();
    const results = await within(
      Promise.all(
        Array.from(
          { length: 1000 },
          (_, i) => h.health.ping({ payload: text.encode(`call ${i}`) }),
        ),
      ),
      20_000,
      "1,000 concurrent pings",
    );
    results.forEach((r, i) => assertEquals(untext.decode(r.payload), `call ${i}`));
    assertEquals(h.connections(), 1);
    assertEquals(h.callsStarted(), 1000);
  });

  test("a server stream delivers every item in order, then ends", async () => {
    await using h = await harness();
    const indexes: bigint[] = [];
    for await (const event of h.vm.watchEvents({ name: "count:200" })) indexes.push(event.index);
    assertEquals(indexes, Array.from({ length: 200 }, (_, i) => BigInt(i)));
  });

  test("a call past its deadline fails with DEADLINE_EXCEEDED and the server aborts its handler", async () => {
    await using h = await harness();
    // The handler would answer after 5 s; the caller hears at its deadline.
    const e = await rejection(
      RpcError,
      () => h.health.ping({ payload: text.encode("sleep:5000") }, { deadlineMs: 150 }),
    );
    assertEquals(e.code, Code.DEADLINE_EXCEEDED);
    assert(e.message.includes("health.Ping"), e.message);
    await eventually("the handler was aborted", () => h.seen.aborted.length === 1);
    // The server's deadline or the client's cancel at its deadline, whichever came first.
    assert(["ping:4", "ping:1"].includes(h.seen.aborted[0]!), String(h.seen.aborted));
    await eventually("no call is in flight on the server", () => h.inflightCount() === 0);
    assertEquals(
      untext.decode((await h.health.ping({ payload: text.encode("after") })).payload),
      "after",
    );
  });

  test("a server stream without a deadline outlives the default deadline (a watch runs until cancelled)", async () => {
    await using h = await harness({ defaultDeadlineMs: 200 });
    // Read until three default deadlines have passed: the stream is still delivering.
    const until = Date.now() + 600;
    let lastAt = 0;
    for await (const _ of h.vm.watchEvents({ name: "endless" })) {
      lastAt = Date.now();
      if (lastAt >= until) break;
    }
    assert(lastAt >= until, "the stream ended before three default deadlines passed");
    await eventually("the stream handler was cancelled", () => h.seen.aborted.includes("watch:1"));
    // Unary calls still get the default deadline.
    const e = await rejection(
      RpcError,
      () => h.health.ping({ payload: text.encode("sleep:5000") }),
    );
    assertEquals(e.code, Code.DEADLINE_EXCEEDED);
  });

  test("a server stream the client stops reading is cancelled on the server", async () => {
    await using h = await harness();
    let n = 0;
    for await (const _ of h.vm.watchEvents({ name: "endless" })) {
      if (++n === 3) break;
    }
    await eventually("the stream handler was cancelled", () => h.seen.aborted.includes("watch:1"));
    await eventually("no call is in flight", () => h.inflightCount() === 0);
  });

  test("an aborted signal cancels a unary call on both sides", async () => {
    await using h = await harness();
    const ac = new AbortController();
    const call = h.health.ping({ payload: text.encode("sleep:5000") }, { signal: ac.signal });
    await eventually("the handler started", () => h.seen.started === 1);
    ac.abort();
    const e = await rejection(RpcError, () => call);
    assertEquals(e.code, Code.CANCELLED);
    assertEquals(e.message, "health.Ping: cancelled by the caller");
    await eventually("the handler saw the cancel", () => h.seen.aborted.includes("ping:1"));
    await eventually("no call is in flight", () => h.inflightCount() === 0);
  });

  test("a throwing handler becomes INTERNAL, an RpcError keeps its code and message, and later calls work", async () => {
    await using h = await harness();
    let e = await rejection(RpcError, () => h.health.ping({ payload: text.encode("throw") }));
    assertEquals(e.code, Code.INTERNAL);
    assertEquals(e.message, "boom: the handler failed");
    assert(!isTransportFailure(e));
    e = await rejection(RpcError, () => h.health.ping({ payload: text.encode("not-found") }));
    assertEquals(e.code, Code.NOT_FOUND);
    assertEquals(e.message, 'vm "web-1" does not exist');
    assert(!isTransportFailure(e));
    e = await rejection(RpcError, () => h.vm.list({}));
    assertEquals(e.code, Code.UNIMPLEMENTED);
    assertEquals(e.message, "not in this test");
    assertEquals(
      untext.decode((await h.health.ping({ payload: text.encode("ok") })).payload),
      "ok",
    );
    assertEquals(h.connections(), 1);
  });

  test("calls over the limit of in-flight requests are refused with RESOURCE_EXHAUSTED", async () => {
    await using h = await harness({ maxInflightRequests: 4 });
    const outcomes = await Promise.all(Array.from(
      { length: 10 },
      () =>
        h.health.ping({ payload: text.encode("sleep:300") }).then(
          () => "ok",
          (e: unknown) => e instanceof RpcError ? e.code : -1,
        ),
    ));
    assertEquals(outcomes.filter((o) => o === "ok").length, 4);
    assertEquals(outcomes.filter((o) => o === Code.RESOURCE_EXHAUSTED).length, 6);
  });

  test("shutdown lets a call in flight finish, and refuses new ones with UNAVAILABLE", async () => {
    await using h = await harness();
    const slow = h.health.ping({ payload: text.encode("sleep:300") });
    await eventually("the slow call started", () => h.seen.started === 1);
    const stopping = h.shutdown(3000);
    await new Promise((r) => setTimeout(r, 50));
    const refused = await rejection(
      RpcError,
      () => h.health.ping({ payload: text.encode("late") }),
    );
    assertEquals(refused.code, Code.UNAVAILABLE);
    assert(isTransportFailure(refused));
    assert(refused.message.includes("shutting down"), refused.message);
    assertEquals(untext.decode((await slow).payload), "sleep:300");
    assertEquals((await stopping).abandoned, 0);
    assertEquals(h.seen.started, 1);
  });

  test("a vote sent after a 4 MiB snapshot chunk arrives first: bulk never delays an election", async () => {
    await using h = await harness();
    const kinds = () =>
      h.ingress.got.map(({ message }) =>
        message.kind === RaftMessageKind.VoteRequest ? "vote" : "snapshot"
      );
    // Open the connections and streams of both classes first, so the race is only between the two.
    await h.sendRaft({ kind: RaftMessageKind.TimeoutNow, from: 1, to: 2, term: 1 });
    await h.sendRaft({
      kind: RaftMessageKind.InstallSnapshotResponse,
      from: 1,
      to: 2,
      term: 1,
      snapshotIndex: 0,
      offset: 0,
      reject: false,
    });
    await eventually("the warm-up messages arrived", () => h.ingress.got.length === 2);
    h.ingress.got.length = 0;
    const snapshot = h.sendRaft({
      kind: RaftMessageKind.InstallSnapshot,
      from: 1,
      to: 2,
      term: 1,
      snapshotIndex: 1000,
      snapshotTerm: 1,
      offset: 0,
      done: true,
      data: new Uint8Array(4 << 20).map((_, i) => i & 0xff),
    });
    const vote = h.sendRaft({
      kind: RaftMessageKind.VoteRequest,
      from: 1,
      to: 2,
      term: 2,
      lastLogIndex: 1000,
      lastLogTerm: 1,
      transfer: false,
    });
    await Promise.all([snapshot, vote]);
    await eventually("both arrived", () => h.ingress.got.length === 2, 20_000);
    assertEquals(kinds(), ["vote", "snapshot"]);
  });

  test("shutdown with a reason refuses new calls with UNAVAILABLE saying that reason", async () => {
    await using h = await harness();
    const slow = h.health.ping({ payload: text.encode("sleep:300") });
    await eventually("the slow call started", () => h.seen.started === 1);
    const reason = "this node no longer serves it; it serves gRPC at 10.0.0.1:7400";
    const stopping = h.shutdown(3000, reason);
    const refused = await rejection(
      RpcError,
      () => h.health.ping({ payload: text.encode("late") }),
    );
    assertEquals(refused.code, Code.UNAVAILABLE);
    assert(refused.message.endsWith(reason), refused.message);
    assertEquals(untext.decode((await slow).payload), "sleep:300");
    assertEquals((await stopping).abandoned, 0);
  });
}
