/**
 * The server-side call lifecycle and the outbound bound, without sockets:
 * real routers and handlers, a clock moved by hand, and a sink that records
 * what a transport would have sent.
 */

import { assert, assertEquals, assertThrows, thrown } from "../assert.ts";
import {
  type CallSink,
  clientDeadlineMs,
  type Clock,
  type ConnectionCalls,
  runCall,
  type ServerCall,
  ServerCalls,
  serverDeadlineMs,
} from "../../src/rpc/call.ts";
import { Code, RpcError } from "../../src/rpc/errors.ts";
import { DEFAULT_RPC_LIMITS, type RpcLimits } from "../../src/rpc/limits.ts";
import { OutboundBuffer } from "../../src/rpc/outbound.ts";
import { type BoundMethod, RpcRouter } from "../../src/rpc/router.ts";
import { Health, type MethodInfo, methodOf, type PeerInfo, Vm } from "../../src/rpc/services.ts";
import { VmEventKind } from "../../src/rpc/gen/blixard/v1/vm_pb.ts";
import type { Logger } from "../../src/util/log.ts";

/** A clock that moves only when told; timers fire in time order. */
class ManualClock implements Clock {
  #now = 1_000_000;
  #timers: { at: number; fn: () => void }[] = [];

  now(): number {
    return this.#now;
  }

  after(ms: number, fn: () => void): () => void {
    const timer = { at: this.#now + ms, fn };
    this.#timers.push(timer);
    return () => this.#timers = this.#timers.filter((t) => t !== timer);
  }

  /** Moves time on by `ms`, firing due timers, then lets their promise reactions run. */
  async advance(ms: number): Promise<void> {
    const until = this.#now + ms;
    for (;;) {
      const due = this.#timers.filter((t) => t.at <= until).sort((a, b) => a.at - b.at)[0];
      if (!due) break;
      this.#timers = this.#timers.filter((t) => t !== due);
      this.#now = due.at;
      due.fn();
      await settle();
    }
    this.#now = until;
    await settle();
  }

  get pending(): number {
    return this.#timers.length;
  }
}

/** Lets every queued promise reaction run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await Promise.resolve();
}

/** What a transport would have sent for one call. */
class RecordingSink implements CallSink {
  readonly out: string[] = [];
  errors: RpcError[] = [];
  itemGate: Promise<void> | undefined;
  response(bytes: Uint8Array) {
    this.out.push(`response ${bytes.length}`);
  }
  item(bytes: Uint8Array) {
    this.out.push(`item ${bytes.length}`);
    return this.itemGate;
  }
  end() {
    this.out.push("end");
  }
  error(error: RpcError) {
    this.errors.push(error);
    this.out.push(`error ${error.code}`);
  }
}

/** A logger that keeps its warnings. */
function recordingLogger(): Logger & { warnings: Record<string, unknown>[] } {
  const warnings: Record<string, unknown>[] = [];
  const log = {
    warnings,
    debug() {},
    info() {},
    warn(message: string, fields?: Record<string, unknown>) {
      warnings.push({ message, ...fields });
    },
    error() {},
    child: () => log,
  };
  return log;
}

const peer: PeerInfo = { transport: "iroh", id: "peer-1" };
const PING = methodOf(Health, "Ping");
const WATCH = methodOf(Vm, "WatchEvents");

/** Handlers the tests steer: each Ping waits for `release`, or throws what the payload says. */
function setup(limits: Partial<RpcLimits> = {}) {
  const clock = new ManualClock();
  const log = recordingLogger();
  const stats = { callsStarted: 0, callsFailed: 0, callsRefused: 0 };
  const calls = new ServerCalls({ stats, log, clock });
  const gates: (() => void)[] = [];
  const aborted: string[] = [];
  let streamReturned = false;
  const router = new RpcRouter().register(Health, {
    check: () => ({}),
    async ping(req, ctx) {
      const command = new TextDecoder().decode(req.payload);
      if (command === "throw") throw new Error("disk on fire");
      if (command === "not-found") throw new RpcError(Code.NOT_FOUND, "no such vm");
      await new Promise<void>((resolve) => {
        gates.push(resolve);
        ctx.signal.addEventListener("abort", () => {
          aborted.push((ctx.signal.reason as RpcError).message);
        });
      });
      return { payload: req.payload };
    },
  }).register(Vm, {
    create: () => ({}),
    start: () => ({}),
    stop: () => ({}),
    delete: () => ({}),
    get: () => ({}),
    list: () => ({}),
    reportStatus: () => ({}),
    async *watchEvents(req) {
      try {
        for (let i = 0n; i < BigInt(req.name === "forever" ? 1e9 : 3); i++) {
          yield { kind: VmEventKind.CREATED, index: i };
          if (req.name === "forever") await new Promise(() => {});
        }
      } finally {
        streamReturned = true;
      }
    },
  });
  const connection = calls.connection({ ...DEFAULT_RPC_LIMITS, ...limits });
  const bound = (info: MethodInfo): BoundMethod => router.resolve(info.wireId)!;
  /** Admits and runs one call; what it sent is in the returned sink. */
  const start = (
    info: MethodInfo,
    payload: string | Uint8Array,
    callerDeadlineMs: number | null = null,
    on: ConnectionCalls = connection,
    sink = new RecordingSink(),
  ) => {
    const call = on.admit(info, peer, callerDeadlineMs);
    if (call instanceof RpcError) return { call, sink, done: Promise.resolve() };
    // Field 1 of both requests: Ping's payload, WatchEvents' name.
    const request = new Uint8Array([0x0a, ...lengthPrefixed(payload)]);
    const done = runCall(call, bound(info), request, sink);
    return { call: call as ServerCall, sink, done };
  };
  return {
    clock,
    log,
    stats,
    calls,
    connection,
    gates,
    aborted,
    start,
    streamReturned: () => streamReturned,
  };
}

/** A protobuf `bytes`/`string` field 1 body: length, then bytes. */
function lengthPrefixed(value: string | Uint8Array): number[] {
  const bytes = typeof value === "string" ? new TextEncoder().encode(value) : value;
  return [bytes.length, ...bytes];
}

Deno.test("a server gives a call the caller's deadline, the default when it gave none, and caps both", () => {
  const limits = { defaultDeadlineMs: 30_000, maxDeadlineMs: 60_000 };
  assertEquals(serverDeadlineMs(500, "unary", limits), 500);
  assertEquals(serverDeadlineMs(null, "unary", limits), 30_000);
  assertEquals(serverDeadlineMs(90_000, "unary", limits), 60_000);
  assertEquals(serverDeadlineMs(-5, "unary", limits), 0);
  // A stream without a deadline is a watch: it runs until cancelled.
  assertEquals(serverDeadlineMs(null, "server_streaming", limits), Infinity);
  assertEquals(serverDeadlineMs(90_000, "server_streaming", limits), 60_000);
});

Deno.test("a client puts the same deadline on a call, and refuses one that is not above zero", () => {
  const limits = { defaultDeadlineMs: 30_000, maxDeadlineMs: 60_000 };
  assertEquals(clientDeadlineMs(undefined, PING, limits), 30_000);
  assertEquals(clientDeadlineMs(90_000, PING, limits), 60_000);
  assertEquals(clientDeadlineMs(undefined, WATCH, limits), Infinity);
  assertEquals(clientDeadlineMs(250, WATCH, limits), 250);
  const e = thrown(RpcError, () => clientDeadlineMs(0, PING, limits));
  assertEquals(e.code, Code.INVALID_ARGUMENT);
  assertEquals(e.message, "health.Ping: deadline 0 ms: expected more than 0");
});

Deno.test("a call past its server deadline is abandoned and answered DEADLINE_EXCEEDED", async () => {
  const t = setup();
  const { call, sink, done } = t.start(PING, "wait", 200);
  assert(!(call instanceof RpcError));
  assertEquals(call.ctx.deadline, t.clock.now() + 200);
  await t.clock.advance(199);
  assertEquals(sink.out, []);
  await t.clock.advance(1);
  await done;
  assertEquals(sink.out, [`error ${Code.DEADLINE_EXCEEDED}`]);
  assertEquals(sink.errors[0]!.message, "health.Ping: deadline of 200 ms passed on the server");
  assertEquals(t.aborted, ["health.Ping: deadline of 200 ms passed on the server"]);
  assertEquals(t.calls.inflight, 0);
  assertEquals(t.stats, { callsStarted: 1, callsFailed: 1, callsRefused: 0 });
});

Deno.test("a call that answers in time leaves no timer behind", async () => {
  const t = setup();
  const { sink, done } = t.start(PING, "ok", 200);
  await settle();
  t.gates.shift()!();
  await done;
  assertEquals(sink.out, ["response 4"]);
  assertEquals(t.clock.pending, 0);
});

Deno.test("calls over max_inflight_requests on one connection are refused; another connection has its own", async () => {
  const t = setup({ maxInflightRequests: 2 });
  t.start(PING, "a");
  t.start(PING, "b");
  const refused = t.start(PING, "c");
  assert(refused.call instanceof RpcError);
  assertEquals(refused.call.code, Code.RESOURCE_EXHAUSTED);
  assertEquals(
    refused.call.message,
    "too many calls in flight on this connection (max_inflight_requests 2)",
  );
  const other = t.calls.connection({ ...DEFAULT_RPC_LIMITS, maxInflightRequests: 2 });
  const elsewhere = t.start(PING, "d", null, other);
  assert(!(elsewhere.call instanceof RpcError));
  assertEquals(t.calls.inflight, 3);
  assertEquals(t.stats, { callsStarted: 3, callsFailed: 1, callsRefused: 1 });
  // A slot frees when its call ends.
  await settle();
  t.gates.shift()!();
  await settle();
  assert(!(t.start(PING, "e").call instanceof RpcError));
});

Deno.test("drain resolves when the last call ends, without waiting for its timeout", async () => {
  const t = setup();
  const first = t.start(PING, "a");
  await settle();
  let drained: { abandoned: number } | null = null;
  const draining = t.calls.drain(60_000).then((r) => drained = r);
  await settle();
  assertEquals(drained, null);
  // New calls are refused while draining; the one in flight finishes.
  const late = t.start(PING, "late");
  assert(late.call instanceof RpcError);
  assertEquals(late.call.code, Code.UNAVAILABLE);
  assertEquals(late.call.message, "server is shutting down; call another node");
  t.gates.shift()!();
  await first.done;
  await draining;
  // The clock never moved: the drain was woken by the call's end, not by polling.
  assertEquals(drained, { abandoned: 0 });
  assertEquals(first.sink.out, ["response 3"]);
  assertEquals(t.clock.pending, 0);
});

Deno.test("drain gives up on calls at its timeout and answers them UNAVAILABLE with its reason", async () => {
  const t = setup();
  const stuck = t.start(PING, "stuck");
  await settle();
  const reason = "this node no longer serves Iroh; it serves gRPC at 10.0.0.1:7400";
  const draining = t.calls.drain(1_000, reason);
  const refused = t.start(PING, "late");
  assert(refused.call instanceof RpcError);
  assertEquals(refused.call.message, reason);
  await t.clock.advance(1_000);
  assertEquals(await draining, { abandoned: 1 });
  await stuck.done;
  assertEquals(stuck.sink.out, [`error ${Code.UNAVAILABLE}`]);
  assertEquals(stuck.sink.errors[0]!.message, reason);
  // Resumed, it takes calls again.
  t.calls.resume();
  assert(!(t.start(PING, "again").call instanceof RpcError));
});

Deno.test("a handler's own failure is answered INTERNAL and logged once a minute per method; an RpcError keeps its code", async () => {
  const t = setup();
  for (let i = 0; i < 3; i++) {
    const { sink, done } = t.start(PING, "throw");
    await done;
    assertEquals(sink.errors[0]!.code, Code.INTERNAL);
    assertEquals(sink.errors[0]!.message, "disk on fire");
  }
  assertEquals(t.log.warnings.length, 1);
  assertEquals(t.log.warnings[0]!.message, "handler failed");
  assertEquals(t.log.warnings[0]!.method, "health.Ping");
  assertEquals(t.log.warnings[0]!.peer, "peer-1");
  await t.clock.advance(60_000);
  await t.start(PING, "throw").done;
  assertEquals(t.log.warnings.length, 2);
  assertEquals(t.log.warnings[1]!.suppressed_since_last, 2);
  const { sink, done } = t.start(PING, "not-found");
  await done;
  assertEquals(sink.errors[0]!.code, Code.NOT_FOUND);
  assertEquals(t.log.warnings.length, 2, "an RpcError is the service's answer, not a failure");
  assertEquals(t.stats.callsFailed, 5);
});

Deno.test("a call its caller cancelled is not answered and not counted as failed", async () => {
  const t = setup();
  const { call, sink, done } = t.start(PING, "wait");
  await settle();
  assert(!(call instanceof RpcError));
  call.abort(new RpcError(Code.CANCELLED, "cancelled by the caller"));
  await done;
  assertEquals(sink.out, []);
  assertEquals(t.aborted, ["cancelled by the caller"]);
  assertEquals(t.stats, { callsStarted: 1, callsFailed: 0, callsRefused: 0 });
  assertEquals(t.calls.inflight, 0);
});

Deno.test("a stream's items go out in order, each waiting for the transport, then its end", async () => {
  const t = setup();
  const sink = new RecordingSink();
  let open!: () => void;
  sink.itemGate = new Promise<void>((resolve) => open = resolve);
  const { done } = t.start(WATCH, "three", null, t.connection, sink);
  await settle();
  // The transport has not taken the first item: the handler waits.
  assertEquals(sink.out, ["item 2"]);
  open();
  await done;
  assertEquals(sink.out, ["item 2", "item 4", "item 4", "end"]);
  assert(t.streamReturned());
});

Deno.test("an aborted stream abandons a handler that waits for its next event, and frees its slot", async () => {
  const t = setup();
  const { call, sink, done } = t.start(WATCH, "forever");
  await settle();
  assertEquals(sink.out, ["item 2"]);
  assert(!(call instanceof RpcError));
  call.abort(new RpcError(Code.CANCELLED, "cancelled by the caller"));
  await done;
  assertEquals(sink.out, ["item 2"]);
  assertEquals(t.calls.inflight, 0);
});

Deno.test("a call keeps its slot until the transport says its answer has left", async () => {
  const t = setup({ maxInflightRequests: 1 });
  let left!: () => void;
  const sink = new class extends RecordingSink {
    sent = () => new Promise<void>((resolve) => left = resolve);
  }();
  const first = t.start(PING, "a", null, t.connection, sink);
  await settle();
  t.gates.shift()!();
  await settle();
  assertEquals(sink.out, ["response 3"]);
  const refused = t.start(PING, "b");
  assert(refused.call instanceof RpcError && refused.call.code === Code.RESOURCE_EXHAUSTED);
  left();
  await first.done;
  assert(!(t.start(PING, "c").call instanceof RpcError));
});

Deno.test("an outbound buffer pauses past half its bound, resumes at a quarter, and overflows once past it", async () => {
  const events: string[] = [];
  const buffer = new OutboundBuffer(1000, {
    onPause: (bytes) => events.push(`pause ${bytes}`),
    onResume: () => events.push("resume"),
    onOverflow: (bytes) => events.push(`overflow ${bytes}`),
  });
  buffer.add(500);
  assertEquals(buffer.paused, false);
  buffer.add(1);
  assert(buffer.paused);
  let resumed = false;
  const waiting = buffer.whenResumed().then(() => resumed = true);
  buffer.release(200); // 301: still above a quarter
  await settle();
  assertEquals(resumed, false);
  buffer.release(51); // 250
  await waiting;
  assertEquals(events, ["pause 501", "resume"]);
  buffer.add(751); // 1001: past the maximum at once
  buffer.add(10);
  assertEquals(events, ["pause 501", "resume", "overflow 1001"]);
  assert(buffer.overflowed);
});

Deno.test("an outbound buffer counts bytes measured elsewhere, such as a socket's unsent bytes", () => {
  let socketBytes = 0;
  const events: string[] = [];
  const buffer = new OutboundBuffer(
    100,
    { onPause: () => events.push("pause"), onOverflow: () => events.push("overflow") },
    () => socketBytes,
  );
  buffer.add(10);
  socketBytes = 45;
  buffer.check();
  assertEquals(events, ["pause"]);
  assertEquals(buffer.bytes, 55);
});

Deno.test("an unusable buffer bound is refused with its value and what is allowed", () => {
  assertThrows(
    () => new OutboundBuffer(0, { onOverflow() {} }),
    /maxConnectionBufferBytes 0: expected an integer of at least 4 bytes/,
  );
});
