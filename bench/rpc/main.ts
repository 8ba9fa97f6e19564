/**
 * RPC benchmark: Health.Ping through the real RPC stack over Iroh and over
 * gRPC side by side, next to the floor of the Iroh transport underneath it,
 * in one process and across two.
 *
 * Run: `deno run -A bench/rpc/main.ts [--quick] [--json FILE] [--quiet]` (full
 * ~70 s, `--quick` ~25 s; `--quiet` drops the progress lines on stderr).
 * Prints one table (rows: metrics; columns: each transport × placement, then
 * each one's floor, then RPC ÷ floor, then Iroh ÷ gRPC per placement) and the
 * goals with met/missed; `--json FILE` also writes every figure and sample
 * summary. Always exits 0 when the measurements ran: this is a report, not a
 * gate (exit 1 only when the benchmark itself fails).
 *
 * Measured, on loopback (127.0.0.1) with relays disabled:
 * - unary Health.Ping, 32-byte payload, through `createClient` and either
 *   `IrohRpcClient` + `IrohRpcServer` or `GrpcChannel` + `GrpcRpcServer`
 *   (plaintext, `@grpc/grpc-js` on Deno's `node:http2`): p50/p99 latency of
 *   sequential calls after a warm-up, sequential calls/s, and calls/s with 64
 *   callers sharing one channel;
 * - bulk: Health.Ping with 1 MiB each way, MiB/s counting both directions;
 * - the floor: a bare bidirectional stream (no RPC, no framing) between two
 *   endpoints, echoing the same 1 MiB with arrays converted before timing,
 *   and a 38-byte message (p50/p99), so the RPC layer's own cost shows;
 * - endpoint creation (mean of 20 after the first), for the record;
 * - Iroh ÷ gRPC: each metric of the Iroh column over the same metric of the
 *   gRPC column in the same placement (p50 ratio = Iroh p50 ÷ gRPC p50, so
 *   below 1 is Iroh faster for latencies, above 1 for rates).
 * "Two processes" runs the server in a child process:
 * `tests/fixtures/iroh_health_server.ts` for Iroh RPC,
 * `tests/fixtures/iroh_echo_floor_server.ts` for the Iroh floor,
 * `tests/fixtures/grpc_health_server.ts` for gRPC. The columns are measured
 * placement by placement (Iroh, then gRPC), so the two a ratio compares run
 * back to back.
 *
 * Adding a transport: append {@link BenchTarget}s to {@link targets} (one per
 * placement), each with a `setup()` giving a {@link PingSession} and,
 * optionally, a `floor` giving a {@link FloorSession}. The table gains the
 * columns, and the Iroh ÷ it ratio columns, by itself.
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  createEndpoint,
  formatSecretKey,
  type IrohBiStream,
  type IrohConnection,
  type IrohEndpoint,
  type IrohRecvStream,
  toArray,
} from "../../src/transport/iroh/mod.ts";
import { IrohRpcServer } from "../../src/transport/iroh/rpc_server.ts";
import { IrohRpcClient } from "../../src/transport/iroh/rpc_client.ts";
import { GrpcRpcServer } from "../../src/transport/grpc/server.ts";
import { GrpcChannel } from "../../src/transport/grpc/client.ts";
import { RpcRouter } from "../../src/rpc/router.ts";
import { type CallTransport, createClient } from "../../src/rpc/client.ts";
import { Health } from "../../src/rpc/services.ts";
import { healthService } from "../../src/services/health.ts";
import { loopbackEndpoint, randomKey, within } from "../../tests/transport/iroh/helpers.ts";
import { firstMatch } from "../../tests/wait.ts";

// ---------------------------------------------------------------------------
// Configuration

/** Iteration counts of one run. */
interface Config {
  /**
   * Warm-up of each column before its small-call figures: sequential and
   * concurrent small calls (and floor echoes) alternating, for at least this
   * long and at least {@link Config.warmupCalls} calls. The first seconds of
   * a process run slower (JIT tiers, heap growth).
   */
  readonly warmupMs: number;
  readonly warmupCalls: number;
  /** Rounds of sequential calls; RPC and floor alternate by round. Samples are pooled. */
  readonly latencyRounds: number;
  /** Sequential calls per round. */
  readonly latencyCalls: number;
  readonly concurrency: number;
  /** Rounds of concurrent calls; the figure is the median round. */
  readonly concurrentRounds: number;
  /** Calls per concurrent round. */
  readonly concurrentCalls: number;
  readonly bulkWarmup: number;
  readonly bulkRuns: number;
  readonly endpointRounds: number;
}

const FULL: Config = {
  warmupMs: 2_500,
  warmupCalls: 12_000,
  latencyRounds: 3,
  latencyCalls: 4_000,
  concurrency: 64,
  concurrentRounds: 5,
  concurrentCalls: 10_000,
  bulkWarmup: 1,
  bulkRuns: 12,
  endpointRounds: 20,
};

const QUICK: Config = {
  warmupMs: 2_000,
  warmupCalls: 8_000,
  latencyRounds: 1,
  latencyCalls: 2_000,
  concurrency: 64,
  concurrentRounds: 3,
  concurrentCalls: 5_000,
  bulkWarmup: 1,
  bulkRuns: 4,
  endpointRounds: 20,
};

const PING_BYTES = 32;
const FLOOR_MESSAGE_BYTES = 38;
const BULK_BYTES = 1 << 20;
const SMALL_DEADLINE_MS = 10_000;
const BULK_DEADLINE_MS = 60_000;
/** Longest wait for a floor echo, a child's READY line, a close. */
const WAIT_MS = 30_000;
/** Most bytes per binding read on the floor, as the RPC layer's `FrameStream` reads. */
const READ_CHUNK_BYTES = 64 * 1024;
/** Bytes per binding write on the floor, as the RPC layer's `FrameStream` writes. */
const WRITE_SLICE_BYTES = 256 * 1024;

const GOAL_P50_US = 300;
const GOAL_CONCURRENT_CALLS_PER_S = 20_000;
const GOAL_BULK_FRACTION = 0.7;
/** Iroh p50 ÷ gRPC p50 on loopback, in each placement. */
const GOAL_P50_VS_GRPC = 0.5;

const HEALTH_SERVER = new URL("../../tests/fixtures/iroh_health_server.ts", import.meta.url)
  .pathname;
const ECHO_FLOOR_SERVER = new URL("../../tests/fixtures/iroh_echo_floor_server.ts", import.meta.url)
  .pathname;
const GRPC_HEALTH_SERVER = new URL("../../tests/fixtures/grpc_health_server.ts", import.meta.url)
  .pathname;

// ---------------------------------------------------------------------------
// What a transport offers the benchmark

/** Where the server runs relative to the client. */
type Placement = "one process" | "two processes";

/** Health.Ping calls over one long-lived channel. */
interface PingSession {
  /** One unary Health.Ping echoing `payload`; rejects if the echo differs in size. */
  ping(payload: Uint8Array, deadlineMs: number): Promise<void>;
  close(): Promise<void>;
}

/** The transport without the RPC layer: one long-lived stream echoing bytes. */
interface FloorSession {
  /**
   * Converts `bytes` to the transport's native form now (untimed) and returns
   * a function that echoes them once: sends them all, resolves once all came back.
   */
  prepare(bytes: Uint8Array): () => Promise<void>;
  close(): Promise<void>;
}

/** One column of the table: a transport in a placement. */
interface BenchTarget {
  /** Column label, e.g. `"iroh, 1 proc"`. */
  readonly name: string;
  readonly transport: string;
  readonly placement: Placement;
  setup(): Promise<PingSession>;
  /** The same transport and placement without the RPC layer, if it has one. */
  readonly floor?: { readonly name: string; setup(): Promise<FloorSession> };
}

/** The transport every other one is compared with (Iroh ÷ other, per placement). */
const BASELINE_TRANSPORT = "iroh";

/**
 * Every column, in the order measured and shown: placement by placement, so
 * the columns a ratio compares are measured back to back. Another transport
 * adds its targets here.
 */
function targets(): BenchTarget[] {
  return [
    {
      name: "iroh, 1 proc",
      transport: "iroh",
      placement: "one process",
      setup: irohRpcInProcess,
      floor: { name: "iroh floor, 1 proc", setup: irohFloorInProcess },
    },
    {
      name: "grpc, 1 proc",
      transport: "grpc",
      placement: "one process",
      setup: grpcRpcInProcess,
    },
    {
      name: "iroh, 2 procs",
      transport: "iroh",
      placement: "two processes",
      setup: irohRpcTwoProcesses,
      floor: { name: "iroh floor, 2 procs", setup: irohFloorTwoProcesses },
    },
    {
      name: "grpc, 2 procs",
      transport: "grpc",
      placement: "two processes",
      setup: grpcRpcTwoProcesses,
    },
  ];
}

// ---------------------------------------------------------------------------
// The RPC stack, either transport

function healthRouter(): RpcRouter {
  return new RpcRouter().register(
    Health,
    healthService({
      nodeId: 7n,
      agentVersion: "bench",
      startedAtMs: Date.now(),
      readiness: () => ({ ready: true, detail: "" }),
    }),
  );
}

/** A typed Health client over `transport`, as a {@link PingSession}; `cleanup` closes it all. */
function pingSession(transport: CallTransport, cleanup: () => Promise<void>): PingSession {
  const health = createClient(Health, transport);
  return {
    async ping(payload, deadlineMs) {
      const response = await health.ping({
        payload,
        clientSendTimeNs: BigInt(Math.round(performance.now() * 1e6)),
      }, { deadlineMs });
      if (response.payload.length !== payload.length) {
        throw new Error(`ping: sent ${payload.length} bytes, got ${response.payload.length} back`);
      }
    },
    close: cleanup,
  };
}

// ---------------------------------------------------------------------------
// Iroh: the RPC stack

/** A typed Health client over an Iroh channel to `ticket`, as a {@link PingSession}. */
function irohPingSession(
  clientEndpoint: IrohEndpoint,
  ticket: string,
  cleanup: () => Promise<void>,
): PingSession {
  const client = new IrohRpcClient({ endpoint: clientEndpoint });
  return pingSession(client.peer(ticket), async () => {
    client.close();
    await cleanup();
  });
}

async function irohRpcInProcess(): Promise<PingSession> {
  const serverEndpoint = await loopbackEndpoint();
  const clientEndpoint = await loopbackEndpoint([]);
  const server = new IrohRpcServer({
    endpoint: serverEndpoint,
    router: healthRouter(),
    allow: new Set([clientEndpoint.id]),
  });
  server.start();
  return irohPingSession(clientEndpoint, serverEndpoint.ticket(), async () => {
    await within(server.shutdown(2_000), WAIT_MS, "server shutdown");
    await closeEndpoint(clientEndpoint);
    await closeEndpoint(serverEndpoint);
  });
}

async function irohRpcTwoProcesses(): Promise<PingSession> {
  const clientEndpoint = await loopbackEndpoint([]);
  try {
    const spawned = await spawnIrohServer(HEALTH_SERVER, clientEndpoint.id);
    return irohPingSession(clientEndpoint, spawned.ready, async () => {
      await closeEndpoint(clientEndpoint);
      await stopChild(spawned.child);
    });
  } catch (e) {
    await closeEndpoint(clientEndpoint);
    throw e;
  }
}

// ---------------------------------------------------------------------------
// Iroh: the floor (bare bidirectional stream, arrays only)

/** Echoes every byte of a stream back on it, as the binding's arrays. */
async function echoStream({ send, recv }: IrohBiStream): Promise<void> {
  for (;;) {
    const chunk = await recv.readArray(READ_CHUNK_BYTES);
    if (chunk === null) break;
    await send.writeArray(chunk);
  }
  await send.finish();
}

/** Reads exactly `n` bytes (as arrays, never converted). */
async function readArrays(recv: IrohRecvStream, n: number): Promise<void> {
  let got = 0;
  while (got < n) {
    const chunk = await recv.readArray(Math.min(READ_CHUNK_BYTES, n - got));
    if (chunk === null) throw new Error(`floor: stream ended after ${got} of ${n} bytes`);
    got += chunk.length;
  }
}

/** A {@link FloorSession} on one long-lived stream of `conn`. */
async function irohFloorSession(
  conn: IrohConnection,
  cleanup: () => Promise<void>,
): Promise<FloorSession> {
  const stream = await conn.openBi();
  return {
    prepare(bytes) {
      const slices: number[][] = [];
      for (let at = 0; at < bytes.length; at += WRITE_SLICE_BYTES) {
        slices.push(toArray(bytes.subarray(at, at + WRITE_SLICE_BYTES)));
      }
      const n = bytes.length;
      return async () => {
        const reading = readArrays(stream.recv, n);
        const writing = (async () => {
          for (const slice of slices) await stream.send.writeArray(slice);
        })();
        await within(Promise.all([reading, writing]), WAIT_MS, `floor echo of ${n} bytes`);
      };
    },
    async close() {
      await within(stream.send.finish(), WAIT_MS, "floor finish").catch(() => {});
      conn.close();
      await cleanup();
    },
  };
}

async function irohFloorInProcess(): Promise<FloorSession> {
  const serverEndpoint = await loopbackEndpoint();
  const clientEndpoint = await loopbackEndpoint([]);
  const allow = new Set([clientEndpoint.id]);
  const serving = (async () => {
    const incoming = await serverEndpoint.acceptIncoming();
    if (incoming === null) return;
    const conn = await incoming.accept({ allow });
    for (;;) {
      const stream = await conn.acceptBi().catch(() => null);
      if (stream === null) return;
      void echoStream(stream).catch(() => {});
    }
  })();
  serving.catch(() => {});
  const conn = await clientEndpoint.connect(serverEndpoint.ticket());
  return irohFloorSession(conn, async () => {
    await closeEndpoint(clientEndpoint);
    await closeEndpoint(serverEndpoint);
    await within(serving, WAIT_MS, "floor server loop").catch(() => {});
  });
}

async function irohFloorTwoProcesses(): Promise<FloorSession> {
  const clientEndpoint = await loopbackEndpoint([]);
  let spawned: Spawned | null = null;
  try {
    spawned = await spawnIrohServer(ECHO_FLOOR_SERVER, clientEndpoint.id);
    const conn = await within(
      clientEndpoint.connect(spawned.ready),
      WAIT_MS,
      "connect to the floor server",
    );
    const child = spawned.child;
    return await irohFloorSession(conn, async () => {
      await closeEndpoint(clientEndpoint);
      await stopChild(child);
    });
  } catch (e) {
    await closeEndpoint(clientEndpoint);
    if (spawned) await stopChild(spawned.child);
    throw e;
  }
}

async function closeEndpoint(endpoint: IrohEndpoint): Promise<void> {
  await within(endpoint.close(), WAIT_MS, "endpoint close").catch((e) =>
    console.error(`warning: ${(e as Error).message}`)
  );
}

// ---------------------------------------------------------------------------
// gRPC: the RPC stack (plaintext on loopback, as GrpcRpcServer allows)

/** A typed Health client over a {@link GrpcChannel} to `127.0.0.1:port`. */
function grpcPingSession(port: number, cleanup: () => Promise<void>): PingSession {
  const channel = new GrpcChannel({ target: `127.0.0.1:${port}` });
  return pingSession(channel, async () => {
    channel.close();
    await cleanup();
  });
}

async function grpcRpcInProcess(): Promise<PingSession> {
  const server = new GrpcRpcServer({ router: healthRouter(), bind: "127.0.0.1:0" });
  const { port } = await within(server.start(), WAIT_MS, "gRPC server start");
  return grpcPingSession(port, async () => {
    await within(server.shutdown(2_000), WAIT_MS, "gRPC server shutdown");
  });
}

async function grpcRpcTwoProcesses(): Promise<PingSession> {
  const spawned = await spawnServer(GRPC_HEALTH_SERVER, ["127.0.0.1:0"]);
  const port = Number(spawned.ready);
  if (!Number.isInteger(port) || port < 1 || port > 65_535) {
    await stopChild(spawned.child);
    throw new Error(`${GRPC_HEALTH_SERVER} said READY ${spawned.ready}: expected a port`);
  }
  return grpcPingSession(port, () => stopChild(spawned.child));
}

// ---------------------------------------------------------------------------
// Child processes: every one is tracked and killed at the end, even on error

const children = new Set<Deno.ChildProcess>();

interface Spawned {
  readonly child: Deno.ChildProcess;
  /** What the server printed after `READY`: an Iroh ticket, a gRPC port. */
  readonly ready: string;
}

/** Starts an Iroh fixture server allowing only `allowedId`; waits for its `READY <ticket>`. */
function spawnIrohServer(script: string, allowedId: string): Promise<Spawned> {
  const keyHex = formatSecretKey(randomKey()).trim();
  return spawnServer(script, [keyHex, "127.0.0.1:0", allowedId]);
}

/** Starts a fixture server with `args`; waits for its `READY <token>` line. */
async function spawnServer(script: string, args: string[]): Promise<Spawned> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  children.add(child);
  try {
    const ready = await within(
      firstMatch(child.stdout, /^READY (\S+)$/m, "READY"),
      WAIT_MS,
      `READY from ${script}`,
    );
    return { child, ready };
  } catch (e) {
    await stopChild(child);
    throw e;
  }
}

/** SIGTERM, then SIGKILL if it has not exited within 5 s. */
async function stopChild(child: Deno.ChildProcess): Promise<void> {
  if (!children.delete(child)) return;
  try {
    child.kill("SIGTERM");
  } catch {
    // already exited
  }
  const exited = await within(child.status, 5_000, "child exit").catch(() => null);
  if (exited === null) {
    try {
      child.kill("SIGKILL");
    } catch {
      // already exited
    }
    await within(child.status, 5_000, "child exit after SIGKILL").catch(() => {});
  }
}

/** Last resort (signal, watchdog): kill every child now, without waiting. */
function killChildrenNow(): void {
  for (const child of children) {
    try {
      child.kill("SIGKILL");
    } catch {
      // already exited
    }
  }
  children.clear();
}

// ---------------------------------------------------------------------------
// Measurements

interface LatencySummary {
  n: number;
  p50: number;
  p90: number;
  p99: number;
  mean: number;
  min: number;
  max: number;
}

interface RpcResult {
  /** Sequential Health.Ping, 32 B, µs. */
  latencyUs: LatencySummary;
  /** Median of the rounds. */
  sequentialCallsPerS: number;
  /** Median of the rounds. */
  concurrentCallsPerS: number;
  concurrentRoundsCallsPerS: number[];
  concurrency: number;
  /** 1 MiB each way; MiB/s counting both directions; median of the runs. */
  bulkMiBps: number;
  bulkRunsMiBps: number[];
}

interface FloorResult {
  /** Echo of 38 B on one long-lived stream, µs. */
  latencyUs: LatencySummary;
  sequentialEchoesPerS: number;
  bulkMiBps: number;
  bulkRunsMiBps: number[];
}

interface TargetResult {
  name: string;
  transport: string;
  placement: Placement;
  rpc: RpcResult;
  floor: (FloorResult & { name: string }) | null;
  ratio: {
    /** Median over the runs of RPC ÷ floor, each RPC run paired with the floor run after it. */
    bulkOfFloor: number;
    /** Median RPC ÷ median floor. */
    bulkMediansRatio: number;
    p50OverheadUs: number;
    p50Ratio: number;
    sequentialRatio: number;
  } | null;
}

/** The baseline transport's column over another transport's, in one placement. */
interface Comparison {
  /** Column label, e.g. `"iroh ÷ grpc, 1 proc"`. */
  name: string;
  placement: Placement;
  /** Target names: numerator, denominator. */
  baseline: string;
  other: string;
  /** Baseline ÷ other, each metric: below 1 is the baseline faster for latencies, above 1 for rates. */
  p50Ratio: number;
  p99Ratio: number;
  sequentialRatio: number;
  concurrentRatio: number;
  bulkRatio: number;
  /** Baseline p50 − other p50, µs. */
  p50DifferenceUs: number;
  /**
   * The baseline's floor p50 ÷ the other's RPC p50: the p50 ratio the
   * baseline would reach if its RPC layer cost nothing. Null without a floor.
   */
  floorP50Ratio: number | null;
}

/** {@link BASELINE_TRANSPORT} against each other transport, placement by placement. */
function comparisons(results: TargetResult[]): Comparison[] {
  const out: Comparison[] = [];
  for (const base of results.filter((r) => r.transport === BASELINE_TRANSPORT)) {
    for (
      const other of results.filter((r) =>
        r.transport !== BASELINE_TRANSPORT && r.placement === base.placement
      )
    ) {
      const a = base.rpc;
      const b = other.rpc;
      out.push({
        name: `${base.transport} ÷ ${other.transport}, ${placementShort(base.placement)}`,
        placement: base.placement,
        baseline: base.name,
        other: other.name,
        p50Ratio: round(a.latencyUs.p50 / b.latencyUs.p50, 3),
        p99Ratio: round(a.latencyUs.p99 / b.latencyUs.p99, 3),
        sequentialRatio: round(a.sequentialCallsPerS / b.sequentialCallsPerS, 3),
        concurrentRatio: round(a.concurrentCallsPerS / b.concurrentCallsPerS, 3),
        bulkRatio: round(a.bulkMiBps / b.bulkMiBps, 3),
        p50DifferenceUs: round(a.latencyUs.p50 - b.latencyUs.p50, 1),
        floorP50Ratio: base.floor ? round(base.floor.latencyUs.p50 / b.latencyUs.p50, 3) : null,
      });
    }
  }
  return out;
}

function placementShort(placement: Placement): string {
  return placement === "one process" ? "1 proc" : "2 procs";
}

function patternBytes(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

/** Sequential timed calls: appends each call's µs to `samples`; returns calls/s. */
async function sequential(
  call: () => Promise<void>,
  calls: number,
  samples: number[],
): Promise<number> {
  const start = performance.now();
  for (let i = 0; i < calls; i++) {
    const t = performance.now();
    await call();
    samples.push((performance.now() - t) * 1000);
  }
  return calls / ((performance.now() - start) / 1000);
}

/** `workers` callers share the channel until `calls` calls are done; calls/s. */
async function concurrent(
  call: () => Promise<void>,
  workers: number,
  calls: number,
): Promise<number> {
  let issued = 0;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: workers }, async () => {
      while (issued < calls) {
        issued++;
        await call();
      }
    }),
  );
  return calls / ((performance.now() - start) / 1000);
}

/** Times one echo of `BULK_BYTES` each way; MiB/s counting both directions. */
async function bulkRate(echo: () => Promise<void>): Promise<number> {
  const t = performance.now();
  await echo();
  return (2 * BULK_BYTES) / (1 << 20) / ((performance.now() - t) / 1000);
}

async function measureTarget(target: BenchTarget, cfg: Config): Promise<TargetResult> {
  log(`${target.name}: setting up`);
  const rpc = await within(target.setup(), WAIT_MS, `${target.name}: setup`);
  let floor: FloorSession | null = null;
  try {
    if (target.floor) {
      floor = await within(target.floor.setup(), WAIT_MS, `${target.floor.name}: setup`);
    }

    const small = patternBytes(PING_BYTES, 1);
    const bulk = patternBytes(BULK_BYTES, 2);
    const pingSmall = () => rpc.ping(small, SMALL_DEADLINE_MS);
    const pingBulk = () => rpc.ping(bulk, BULK_DEADLINE_MS);

    const floorMessage = floor?.prepare(patternBytes(FLOOR_MESSAGE_BYTES, 3)) ?? null;
    const floorBulk = floor?.prepare(bulk) ?? null;

    log(`${target.name}: warm-up`);
    const warmUntil = performance.now() + cfg.warmupMs;
    for (let calls = 0; calls < cfg.warmupCalls || performance.now() < warmUntil;) {
      for (let i = 0; i < 200; i++) {
        await pingSmall();
        if (floorMessage) await floorMessage();
      }
      await concurrent(pingSmall, cfg.concurrency, 2_000);
      calls += 2_200;
    }

    // Sequential small calls: RPC and floor alternate by round.
    log(
      `${target.name}: sequential Ping ${PING_BYTES} B` +
        (floorMessage ? ` and floor echo ${FLOOR_MESSAGE_BYTES} B` : ""),
    );
    const rpcSamples: number[] = [];
    const floorSamples: number[] = [];
    const rpcSeqRates: number[] = [];
    const floorSeqRates: number[] = [];
    for (let round = 0; round < cfg.latencyRounds; round++) {
      rpcSeqRates.push(await sequential(pingSmall, cfg.latencyCalls, rpcSamples));
      if (floorMessage) {
        floorSeqRates.push(await sequential(floorMessage, cfg.latencyCalls, floorSamples));
      }
    }

    log(`${target.name}: ${cfg.concurrency} calls in flight`);
    const concurrentRates: number[] = [];
    for (let round = 0; round < cfg.concurrentRounds; round++) {
      concurrentRates.push(await concurrent(pingSmall, cfg.concurrency, cfg.concurrentCalls));
    }

    // Bulk: RPC and floor alternate, so a slow moment of the machine hits both.
    log(`${target.name}: bulk ${BULK_BYTES >> 20} MiB echo, ${cfg.bulkRuns} runs`);
    for (let i = 0; i < cfg.bulkWarmup; i++) {
      await pingBulk();
      if (floorBulk) await floorBulk();
    }
    const rpcRuns: number[] = [];
    const floorRuns: number[] = [];
    for (let i = 0; i < cfg.bulkRuns; i++) {
      rpcRuns.push(await bulkRate(pingBulk));
      if (floorBulk) floorRuns.push(await bulkRate(floorBulk));
    }

    const rpcResult: RpcResult = {
      latencyUs: summarize(rpcSamples),
      sequentialCallsPerS: median(rpcSeqRates),
      concurrentCallsPerS: median(concurrentRates),
      concurrentRoundsCallsPerS: concurrentRates.map((r) => round(r, 0)),
      concurrency: cfg.concurrency,
      bulkMiBps: median(rpcRuns),
      bulkRunsMiBps: rpcRuns.map((r) => round(r, 2)),
    };
    const floorResult = floor
      ? {
        name: target.floor!.name,
        latencyUs: summarize(floorSamples),
        sequentialEchoesPerS: median(floorSeqRates),
        bulkMiBps: median(floorRuns),
        bulkRunsMiBps: floorRuns.map((r) => round(r, 2)),
      }
      : null;
    return {
      name: target.name,
      transport: target.transport,
      placement: target.placement,
      rpc: rpcResult,
      floor: floorResult,
      ratio: floorResult
        ? {
          bulkOfFloor: median(rpcRuns.map((r, i) => r / floorRuns[i]!)),
          bulkMediansRatio: rpcResult.bulkMiBps / floorResult.bulkMiBps,
          p50OverheadUs: rpcResult.latencyUs.p50 - floorResult.latencyUs.p50,
          p50Ratio: rpcResult.latencyUs.p50 / floorResult.latencyUs.p50,
          sequentialRatio: rpcResult.sequentialCallsPerS / floorResult.sequentialEchoesPerS,
        }
        : null,
    };
  } finally {
    await rpc.close().catch((e) => console.error(`warning: closing ${target.name}: ${e}`));
    if (floor) {
      await floor.close().catch((e) => console.error(`warning: closing the floor: ${e}`));
    }
  }
}

/** Iroh endpoint creation: the first in this process, then the mean of `rounds` more. */
async function measureEndpointCreation(
  rounds: number,
): Promise<{ firstMs: number; laterMeanMs: number; laterP99Ms: number; n: number }> {
  const create = () =>
    createEndpoint({ secretKey: randomKey(), bindAddr: "127.0.0.1:0", relayMode: "disabled" });
  let t = performance.now();
  const first = await create();
  const firstMs = performance.now() - t;
  await closeEndpoint(first);
  const later: number[] = [];
  for (let i = 0; i < rounds; i++) {
    t = performance.now();
    const e = await create();
    later.push(performance.now() - t);
    await closeEndpoint(e);
  }
  return {
    firstMs: round(firstMs, 2),
    laterMeanMs: round(mean(later), 2),
    laterP99Ms: round(quantile(later, 0.99), 2),
    n: later.length,
  };
}

// ---------------------------------------------------------------------------
// Report

interface Goal {
  goal: string;
  measured: string;
  met: boolean;
  /** What limits the figure, when the goal is missed and the run can tell. */
  limit?: string;
}

function goals(results: TargetResult[], compared: Comparison[]): Goal[] {
  const out: Goal[] = [];
  const iroh = results.filter((r) => r.transport === BASELINE_TRANSPORT);
  for (const r of iroh.filter((r) => r.placement === "one process")) {
    out.push({
      goal: `${r.name}: Ping p50 < ${GOAL_P50_US} µs`,
      measured: `${fmtInt(r.rpc.latencyUs.p50)} µs`,
      met: r.rpc.latencyUs.p50 < GOAL_P50_US,
    });
    out.push({
      goal: `${r.name}: ≥ ${
        fmtInt(GOAL_CONCURRENT_CALLS_PER_S)
      } calls/s, ${r.rpc.concurrency} in flight`,
      measured: `${fmtInt(r.rpc.concurrentCallsPerS)} calls/s`,
      met: r.rpc.concurrentCallsPerS >= GOAL_CONCURRENT_CALLS_PER_S,
    });
  }
  for (const r of iroh) {
    if (!r.ratio) continue;
    out.push({
      goal: `${r.name}: bulk ≥ ${GOAL_BULK_FRACTION} of floor`,
      measured: `${r.ratio.bulkOfFloor.toFixed(2)}`,
      met: r.ratio.bulkOfFloor >= GOAL_BULK_FRACTION,
    });
  }
  for (const c of compared) {
    const base = results.find((r) => r.name === c.baseline)!;
    const other = results.find((r) => r.name === c.other)!;
    const met = c.p50Ratio <= GOAL_P50_VS_GRPC;
    const goal: Goal = {
      goal: `${c.name}: Iroh p50 ≤ ${GOAL_P50_VS_GRPC} × ${other.transport}'s`,
      measured: `${c.p50Ratio.toFixed(2)} (${fmtInt(base.rpc.latencyUs.p50)} / ${
        fmtInt(other.rpc.latencyUs.p50)
      } µs)`,
      met,
    };
    if (!met && base.floor && base.ratio && c.floorP50Ratio !== null) {
      const needUs = GOAL_P50_VS_GRPC * other.rpc.latencyUs.p50;
      goal.limit = `needs Iroh p50 ≤ ${fmtInt(needUs)} µs; the Iroh floor (bare-stream echo) ` +
        `alone takes ${fmtInt(base.floor.latencyUs.p50)} µs (${
          c.floorP50Ratio.toFixed(2)
        } of ${other.transport}'s p50), the RPC layer ${signed(base.ratio.p50OverheadUs)} µs` +
        (c.floorP50Ratio > GOAL_P50_VS_GRPC
          ? "; an RPC layer costing nothing would miss it too"
          : "");
    }
    out.push(goal);
  }
  return out;
}

function printReport(report: Report): void {
  const results = report.results;
  const withFloor = results.filter((r) => r.floor && r.ratio);
  const compared = report.comparisons;
  const header = [
    "metric",
    ...results.map((r) => r.name),
    ...withFloor.map((r) => r.floor!.name),
    ...withFloor.map((r) => `${r.transport} ÷ floor, ${placementShort(r.placement)}`),
    ...compared.map((c) => c.name),
  ];
  const row = (
    label: string,
    rpc: (r: TargetResult) => string,
    floor: (r: TargetResult) => string,
    ratio: (r: TargetResult) => string,
    versus: (c: Comparison) => string,
  ) => [
    label,
    ...results.map(rpc),
    ...withFloor.map(floor),
    ...withFloor.map(ratio),
    ...compared.map(versus),
  ];
  const dash = () => "–";
  const times = (x: number) => `${x.toFixed(2)}×`;
  const rows = [
    row(
      `Ping ${PING_BYTES} B p50, µs (floor: echo ${FLOOR_MESSAGE_BYTES} B)`,
      (r) => fmtInt(r.rpc.latencyUs.p50),
      (r) => fmtInt(r.floor!.latencyUs.p50),
      (r) => `${signed(r.ratio!.p50OverheadUs)} µs (${times(r.ratio!.p50Ratio)})`,
      (c) => `${times(c.p50Ratio)} (${signed(c.p50DifferenceUs)} µs)`,
    ),
    row(
      `Ping ${PING_BYTES} B p99, µs`,
      (r) => fmtInt(r.rpc.latencyUs.p99),
      (r) => fmtInt(r.floor!.latencyUs.p99),
      (r) => `${signed(r.rpc.latencyUs.p99 - r.floor!.latencyUs.p99)} µs`,
      (c) => times(c.p99Ratio),
    ),
    row(
      `Ping ${PING_BYTES} B sequential, calls/s`,
      (r) => fmtInt(r.rpc.sequentialCallsPerS),
      (r) => fmtInt(r.floor!.sequentialEchoesPerS),
      (r) => times(r.ratio!.sequentialRatio),
      (c) => times(c.sequentialRatio),
    ),
    row(
      `Ping ${PING_BYTES} B, ${report.config.concurrency} in flight, calls/s`,
      (r) => fmtInt(r.rpc.concurrentCallsPerS),
      dash,
      dash,
      (c) => times(c.concurrentRatio),
    ),
    row(
      `Ping ${BULK_BYTES >> 20} MiB echo, MiB/s (both ways, median)`,
      (r) => r.rpc.bulkMiBps.toFixed(2),
      (r) => r.floor!.bulkMiBps.toFixed(2),
      (r) => `${r.ratio!.bulkOfFloor.toFixed(2)} of floor (paired)`,
      (c) => times(c.bulkRatio),
    ),
  ];
  const widths = header.map((_, i) => Math.max(...[header, ...rows].map((x) => x[i]!.length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");

  const m = report.machine;
  console.log();
  console.log(
    `RPC benchmark (${report.mode}): ${m.cpu}, ${m.cores} cores, Deno ${m.deno} (V8 ${m.v8}), ` +
      `${m.os}, ${m.binding}, ${m.grpc}`,
  );
  console.log(
    `loopback, relays disabled; load average at start ${m.loadAverage}; ${
      new Date(report.startedAt).toISOString()
    }`,
  );
  console.log();
  console.log(line(header));
  console.log(widths.map((w) => "-".repeat(w)).join("  "));
  for (const r of rows) console.log(line(r));
  for (const pair of new Set(compared.map((c) => c.name.replace(/,.*$/, "")))) {
    console.log(
      `${pair}: the first's figure over the second's, same placement ` +
        "(latencies: below 1× is the first faster; rates: above 1×)",
    );
  }
  console.log();
  const ec = report.endpointCreate;
  console.log(
    `iroh endpoint creation: first in process ${ec.firstMs} ms, later mean ${ec.laterMeanMs} ms ` +
      `(p99 ${ec.laterP99Ms} ms, n=${ec.n})`,
  );
  const c = report.config;
  console.log(
    `samples: warm-up ≥ ${c.warmupMs / 1000} s and ≥ ${c.warmupCalls} calls; ` +
      `${c.latencyRounds} × ${c.latencyCalls} sequential; ${c.concurrentRounds} × ${c.concurrentCalls} calls with ${c.concurrency} in ` +
      `flight (median round); ${c.bulkRuns} bulk runs (median)`,
  );
  console.log();
  console.log("goals (report only)");
  const gw = Math.max(...report.goals.map((g) => g.goal.length));
  const mw = Math.max(...report.goals.map((g) => g.measured.length));
  for (const g of report.goals) {
    console.log(
      `  ${g.goal.padEnd(gw)}  ${g.measured.padStart(mw)}  ${g.met ? "met" : "MISSED"}`,
    );
    if (g.limit) console.log(`    limit: ${g.limit}`);
  }
  console.log(`(total ${report.totalSeconds} s)`);
}

// ---------------------------------------------------------------------------
// Machine

interface Machine {
  cpu: string;
  cores: number;
  deno: string;
  v8: string;
  os: string;
  binding: string;
  grpc: string;
  loadAverage: string;
}

function machine(): Machine {
  const read = (path: string) => {
    try {
      return Deno.readTextFileSync(path);
    } catch {
      return "";
    }
  };
  const cpuinfo = read("/proc/cpuinfo");
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? "unknown CPU";
  const processors = (cpuinfo.match(/^processor\s*:/gm) ?? []).length;
  const version = (pkg: string): string => {
    try {
      return JSON.parse(
        read(new URL(`../../node_modules/${pkg}/package.json`, import.meta.url).pathname),
      ).version;
    } catch {
      return "?";
    }
  };
  return {
    cpu: model,
    cores: processors || navigator.hardwareConcurrency,
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    os: `${Deno.build.os}-${Deno.build.arch}`,
    binding: `@number0/iroh ${version("@number0/iroh")}`,
    grpc: `@grpc/grpc-js ${version("@grpc/grpc-js")}`,
    loadAverage: read("/proc/loadavg").split(" ").slice(0, 3).join(" ") || "?",
  };
}

// ---------------------------------------------------------------------------
// Statistics and formatting

function summarize(values: number[]): LatencySummary {
  return {
    n: values.length,
    p50: round(quantile(values, 0.5), 1),
    p90: round(quantile(values, 0.9), 1),
    p99: round(quantile(values, 0.99), 1),
    mean: round(mean(values), 1),
    min: round(Math.min(...values), 1),
    max: round(Math.max(...values), 1),
  };
}

function mean(values: number[]): number {
  return values.reduce((a, b) => a + b, 0) / values.length;
}

function median(values: number[]): number {
  return values.length === 0 ? NaN : quantile(values, 0.5);
}

/** Nearest-rank quantile. */
function quantile(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

function round(value: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

function signed(value: number): string {
  return `${value >= 0 ? "+" : "−"}${fmtInt(Math.abs(value))}`;
}

function fmtInt(value: number): string {
  return Math.round(value).toLocaleString("en-US");
}

function log(message: string): void {
  if (!quiet) console.error(`· ${message}`);
}

// ---------------------------------------------------------------------------
// Main

interface Report {
  mode: "full" | "quick";
  startedAt: number;
  machine: Machine;
  config: Config & {
    pingBytes: number;
    floorMessageBytes: number;
    bulkBytes: number;
    floorReadChunkBytes: number;
    floorWriteSliceBytes: number;
  };
  endpointCreate: Awaited<ReturnType<typeof measureEndpointCreation>>;
  results: TargetResult[];
  comparisons: Comparison[];
  goals: Goal[];
  totalSeconds: number;
}

const args = parseArgs({
  args: Deno.args,
  options: {
    quick: { type: "boolean", default: false },
    json: { type: "string" },
    quiet: { type: "boolean", default: false },
  },
});
const quiet = args.values.quiet;

async function main(): Promise<void> {
  const started = performance.now();
  const startedAt = Date.now();
  const cfg = args.values.quick ? QUICK : FULL;
  const m = machine();

  log("endpoint creation");
  const endpointCreate = await measureEndpointCreation(cfg.endpointRounds);
  const results: TargetResult[] = [];
  for (const target of targets()) results.push(await measureTarget(target, cfg));

  const rounded = results.map(roundResult);
  const compared = comparisons(rounded);
  const report: Report = {
    mode: args.values.quick ? "quick" : "full",
    startedAt,
    machine: m,
    config: {
      ...cfg,
      pingBytes: PING_BYTES,
      floorMessageBytes: FLOOR_MESSAGE_BYTES,
      bulkBytes: BULK_BYTES,
      floorReadChunkBytes: READ_CHUNK_BYTES,
      floorWriteSliceBytes: WRITE_SLICE_BYTES,
    },
    endpointCreate,
    results: rounded,
    comparisons: compared,
    goals: goals(rounded, compared),
    totalSeconds: round((performance.now() - started) / 1000, 1),
  };
  printReport(report);
  if (args.values.json) {
    await Deno.writeTextFile(args.values.json, JSON.stringify(report, null, 2) + "\n");
    console.log(`wrote ${args.values.json}`);
  }
}

function roundResult(r: TargetResult): TargetResult {
  return {
    ...r,
    rpc: {
      ...r.rpc,
      sequentialCallsPerS: round(r.rpc.sequentialCallsPerS, 0),
      concurrentCallsPerS: round(r.rpc.concurrentCallsPerS, 0),
      bulkMiBps: round(r.rpc.bulkMiBps, 2),
    },
    floor: r.floor
      ? {
        ...r.floor,
        sequentialEchoesPerS: round(r.floor.sequentialEchoesPerS, 0),
        bulkMiBps: round(r.floor.bulkMiBps, 2),
      }
      : null,
    ratio: r.ratio
      ? {
        bulkOfFloor: round(r.ratio.bulkOfFloor, 3),
        bulkMediansRatio: round(r.ratio.bulkMediansRatio, 3),
        p50OverheadUs: round(r.ratio.p50OverheadUs, 1),
        p50Ratio: round(r.ratio.p50Ratio, 3),
        sequentialRatio: round(r.ratio.sequentialRatio, 3),
      }
      : null,
  };
}

// A run that hangs despite every per-wait timeout is stopped here; children die with it.
const watchdog = setTimeout(() => {
  console.error("bench: watchdog: the run took too long; killing the servers");
  killChildrenNow();
  Deno.exit(1);
}, args.values.quick ? 90_000 : 300_000);
const onSignal = () => {
  killChildrenNow();
  Deno.exit(130);
};
Deno.addSignalListener("SIGINT", onSignal);
Deno.addSignalListener("SIGTERM", onSignal);

let exitCode = 0;
try {
  await main();
} catch (e) {
  console.error(`bench: failed: ${e instanceof Error ? e.stack ?? e.message : e}`);
  exitCode = 1;
} finally {
  for (const child of [...children]) await stopChild(child);
  clearTimeout(watchdog);
  Deno.removeSignalListener("SIGINT", onSignal);
  Deno.removeSignalListener("SIGTERM", onSignal);
}
// Leftover binding handles (closed endpoints' tasks) must not keep the process alive.
Deno.exit(exitCode);
