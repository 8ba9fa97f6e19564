/**
 * The Iroh binding floor: what `@number0/iroh` costs before any Blixard code.
 *
 * Run: `deno run -A bench/iroh_floor.ts [--json]` (~15 s). Measures, on
 * loopback with relays disabled:
 * (a) endpoint creation, first in the process and later ones (mean);
 * (b) connect (handshake) time;
 * (c) echo of a small message on one long-lived bidirectional stream (p50/p99);
 * (d) bulk one way: 8 MiB on a bidirectional stream, arrays converted
 *     beforehand (the floor), and with the `Uint8Array` conversions included;
 * each of (b) to (d) in one process and across two processes (this script
 * spawns itself with `--role=peer`; the peer prints its ticket on stdout and
 * exits when its stdin closes).
 *
 * Not a `deno bench` file on purpose: it needs a second process and a
 * long-lived connection, and prints one table (or JSON with `--json`).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { firstMatch, within } from "../tests/wait.ts";
import type * as IrohLayer from "../src/transport/iroh/mod.ts";

const MESSAGE_BYTES = 64;
const ECHO_WARMUP = 200;
const ECHO_ROUNDS = 3_000;
const CONNECT_ROUNDS = 30;
const ENDPOINT_ROUNDS = 20;
const BULK_BYTES = 8 << 20;
const BULK_CHUNK_BYTES = 64 << 10;
const BULK_RUNS = 3;
const WAIT_MS = 30_000;

const MODE_ECHO = 1;
const MODE_SINK = 2;
const MODE_SOURCE = 3;
/** Small enough to sit in the receive window, so reading it is only marshalling. */
const SOURCE_BYTES = 512 << 10;

const args = parseArgs({
  args: Deno.args,
  options: {
    json: { type: "boolean", default: false },
    role: { type: "string", default: "main" },
    allow: { type: "string" },
  },
});

// Loaded dynamically so that loading the napi addon can be timed.
const loadStart = performance.now();
const iroh: typeof IrohLayer = await import("../src/transport/iroh/mod.ts");
const bindingLoadMs = performance.now() - loadStart;
const { binding } = await import("../src/transport/iroh/binding.ts");

if (args.values.role === "peer") {
  await runPeer(args.values.allow);
} else {
  await main(args.values.json);
}

/** One side's results. */
interface PlaceResult {
  connectMs: Summary;
  echoUs: Summary;
  bulkFloorMiBps: { runs: number[]; best: number; mean: number };
  bulkWithConversionMiBps: { runs: number[]; best: number; mean: number };
}

interface Summary {
  n: number;
  mean: number;
  p50: number;
  p99: number;
  min: number;
  max: number;
}

async function main(json: boolean): Promise<void> {
  const started = performance.now();
  const key = () => crypto.getRandomValues(new Uint8Array(32));
  const options = (alpns?: string[]) => ({
    secretKey: key(),
    bindAddr: "127.0.0.1:0",
    relayMode: "disabled" as const,
    ...(alpns === undefined ? {} : { alpns }),
  });

  // (a) endpoint creation.
  let t = performance.now();
  const server = await iroh.createEndpoint(options());
  const firstCreateMs = performance.now() - t;
  const createMs: number[] = [];
  for (let i = 0; i < ENDPOINT_ROUNDS; i++) {
    t = performance.now();
    const e = await iroh.createEndpoint(options([]));
    createMs.push(performance.now() - t);
    await e.close();
  }
  const client = await iroh.createEndpoint(options([]));

  // (b)-(d) in one process.
  const serving = serve(server, new Set([client.id]));
  const inProcess = await measurePlace(client, server.ticket());

  // (b)-(d) across two processes.
  const peer = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(import.meta.url).pathname, "--role=peer", `--allow=${client.id}`],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  let twoProcesses: PlaceResult;
  try {
    const ticket = await within(
      firstMatch(peer.stdout, /^ticket (\S+)$/m, "the bench peer's ticket"),
      WAIT_MS,
      "peer ticket",
    );
    twoProcesses = await measurePlace(client, ticket);
  } finally {
    await peer.stdin.close().catch(() => {});
    const exited = await within(peer.status, 10_000, "peer exit").catch(() => null);
    if (exited === null) peer.kill("SIGKILL");
  }

  const marshalling = await measureMarshalling(client, server.ticket());
  await client.close();
  await server.close();
  await serving;

  const conversion = measureConversion();
  const report = {
    machine: {
      cores: navigator.hardwareConcurrency,
      deno: Deno.version.deno,
      v8: Deno.version.v8,
      os: `${Deno.build.os}-${Deno.build.arch}`,
      binding: "@number0/iroh 1.1.0",
      network: "loopback (127.0.0.1), relays disabled",
    },
    bindingLoadMs: round(bindingLoadMs, 1),
    endpointCreate: {
      firstMs: round(firstCreateMs, 2),
      laterMeanMs: round(mean(createMs), 2),
      laterP99Ms: round(quantile(createMs, 0.99), 2),
      n: createMs.length,
    },
    conversion,
    marshalling,
    inProcess,
    twoProcesses,
    config: {
      messageBytes: MESSAGE_BYTES,
      echoRounds: ECHO_ROUNDS,
      connectRounds: CONNECT_ROUNDS,
      bulkBytes: BULK_BYTES,
      bulkChunkBytes: BULK_CHUNK_BYTES,
      bulkRuns: BULK_RUNS,
    },
    totalSeconds: round((performance.now() - started) / 1000, 1),
  };
  if (json) {
    console.log(JSON.stringify(report, null, 2));
  } else {
    printTable(report);
  }
}

async function measurePlace(
  client: IrohLayer.IrohEndpoint,
  ticket: string,
): Promise<PlaceResult> {
  // (b) connect: a fresh connection each round, closed right after.
  const connectMs: number[] = [];
  for (let i = 0; i < CONNECT_ROUNDS; i++) {
    const t = performance.now();
    const c = await client.connect(ticket);
    connectMs.push(performance.now() - t);
    c.close();
  }

  const conn = await client.connect(ticket);
  try {
    // (c) echo on one long-lived stream, arrays as the binding wants them.
    const echo = await conn.openBi();
    await echo.send.writeArray([MODE_ECHO]);
    const message = iroh.toArray(new Uint8Array(MESSAGE_BYTES).fill(0x5a));
    const echoUs: number[] = [];
    for (let i = 0; i < ECHO_WARMUP + ECHO_ROUNDS; i++) {
      const t = performance.now();
      await echo.send.writeArray(message);
      let got = 0;
      while (got < MESSAGE_BYTES) {
        const chunk = await echo.recv.readArray(MESSAGE_BYTES - got);
        if (chunk === null) throw new Error("echo stream ended early");
        got += chunk.length;
      }
      if (i >= ECHO_WARMUP) echoUs.push((performance.now() - t) * 1000);
    }
    await echo.send.finish();

    // (d) bulk one way.
    const data = new Uint8Array(BULK_BYTES);
    for (let i = 0; i < data.length; i++) data[i] = (i * 131) & 0xff;
    const chunks: number[][] = [];
    for (let o = 0; o < BULK_BYTES; o += BULK_CHUNK_BYTES) {
      chunks.push(iroh.toArray(data.subarray(o, o + BULK_CHUNK_BYTES)));
    }
    const floor: number[] = [];
    for (let run = 0; run < BULK_RUNS; run++) {
      floor.push(await bulk(conn, (send) => sendArrays(send, chunks)));
    }
    const withConversion: number[] = [];
    for (let run = 0; run < BULK_RUNS; run++) {
      withConversion.push(
        await bulk(conn, async (send) => {
          for (let o = 0; o < BULK_BYTES; o += BULK_CHUNK_BYTES) {
            await send.write(data.subarray(o, o + BULK_CHUNK_BYTES));
          }
        }),
      );
    }
    return {
      connectMs: summarize(connectMs, 3),
      echoUs: summarize(echoUs, 0),
      bulkFloorMiBps: rates(floor),
      bulkWithConversionMiBps: rates(withConversion),
    };
  } finally {
    conn.close();
  }
}

async function sendArrays(send: IrohLayer.IrohSendStream, chunks: number[][]): Promise<void> {
  for (const chunk of chunks) await send.writeArray(chunk);
}

/** Sends BULK_BYTES, waits for the peer's count; returns MiB/s. */
async function bulk(
  conn: IrohLayer.IrohConnection,
  write: (send: IrohLayer.IrohSendStream) => Promise<void>,
): Promise<number> {
  const { send, recv } = await conn.openBi();
  await send.writeArray([MODE_SINK]);
  const t = performance.now();
  await write(send);
  await send.finish();
  const reply = await within(recv.readToEnd(8), WAIT_MS, "bulk reply");
  const seconds = (performance.now() - t) / 1000;
  const count = new DataView(reply.buffer, reply.byteOffset, reply.byteLength).getFloat64(0);
  if (count !== BULK_BYTES) throw new Error(`peer counted ${count} bytes, sent ${BULK_BYTES}`);
  return BULK_BYTES / (1 << 20) / seconds;
}

/** The server side, shared by both places: echo or sink per stream. */
async function serve(endpoint: IrohLayer.IrohEndpoint, allow: ReadonlySet<string>): Promise<void> {
  await endpoint.acceptLoop({
    allow,
    onConnection: (conn) => void handleConnection(conn),
    onRejected: (e) => console.error(`bench peer: rejected: ${e.message}`),
  });
}

async function handleConnection(conn: IrohLayer.IrohConnection): Promise<void> {
  for (;;) {
    let stream: IrohLayer.IrohBiStream;
    try {
      stream = await conn.acceptBi();
    } catch {
      return; // connection closed
    }
    void handleStream(stream).catch((e) => {
      if (!(e instanceof iroh.IrohError && e.code === "CONNECTION_CLOSED")) {
        console.error(`bench peer: stream failed: ${e}`);
      }
    });
  }
}

async function handleStream({ send, recv }: IrohLayer.IrohBiStream): Promise<void> {
  const mode = (await recv.readExact(1))[0];
  if (mode === MODE_SOURCE) {
    await send.writeArray(new Array<number>(SOURCE_BYTES).fill(3));
  } else if (mode === MODE_ECHO) {
    for (;;) {
      const chunk = await recv.readArray(BULK_CHUNK_BYTES);
      if (chunk === null) break;
      await send.writeArray(chunk);
    }
  } else {
    let count = 0;
    for (;;) {
      const chunk = await recv.readArray(BULK_CHUNK_BYTES);
      if (chunk === null) break;
      // The "with conversion" figure includes this side's copy back to bytes.
      count += iroh.toBytes(chunk).length;
    }
    const reply = new Uint8Array(8);
    new DataView(reply.buffer).setFloat64(0, count);
    await send.write(reply);
  }
  await send.finish();
}

async function runPeer(allowId: string | undefined): Promise<void> {
  if (allowId === undefined) {
    throw new Error("bench peer: --allow=<client endpoint id> is required");
  }
  const endpoint = await iroh.createEndpoint({
    secretKey: crypto.getRandomValues(new Uint8Array(32)),
    bindAddr: "127.0.0.1:0",
    relayMode: "disabled",
  });
  const serving = serve(endpoint, new Set([iroh.normalizeEndpointId(allowId)]));
  console.log(`ticket ${endpoint.ticket()}`);
  // Exit when the parent closes stdin (or dies); a hard deadline as a backstop.
  const deadline = setTimeout(() => Deno.exit(2), 120_000);
  for await (const _ of Deno.stdin.readable) {
    // drain until EOF
  }
  clearTimeout(deadline);
  await endpoint.close();
  await serving;
}

/**
 * Where bulk time goes, per byte, inside the binding: napi-rs converts an
 * `Array<number>` argument element by element into `Vec<u8>`, and a result
 * back element by element. The argument side is timed with
 * `Signature.fromBytes`, which converts the whole array before rejecting its
 * length; the result side by reading bytes that already sit in the receive
 * window.
 */
async function measureMarshalling(
  client: IrohLayer.IrohEndpoint,
  ticket: string,
): Promise<{ argumentNsPerByte: number; resultNsPerByte: number }> {
  const array = new Array<number>(BULK_CHUNK_BYTES).fill(9);
  const rounds = 30;
  const tryConvert = () => {
    try {
      binding.Signature.fromBytes(array);
    } catch {
      // expected: 64 KiB is not a 64-byte signature
    }
  };
  for (let i = 0; i < 3; i++) tryConvert();
  const t = performance.now();
  for (let i = 0; i < rounds; i++) tryConvert();
  const argumentNs = (performance.now() - t) * 1e6 / rounds / array.length;

  const conn = await client.connect(ticket);
  try {
    const results: number[] = [];
    for (let i = 0; i < 3; i++) {
      const { send, recv } = await conn.openBi();
      await send.writeArray([MODE_SOURCE]);
      await send.finish();
      await new Promise((resolve) => setTimeout(resolve, 300));
      const t0 = performance.now();
      const got = await recv.raw.readToEnd(SOURCE_BYTES);
      results.push((performance.now() - t0) * 1e6 / got.length);
    }
    return {
      argumentNsPerByte: round(argumentNs, 1),
      resultNsPerByte: round(Math.min(...results), 1),
    };
  } finally {
    conn.close();
  }
}

/** Cost of the JS-side conversions for the bulk payload, per byte. */
function measureConversion(): { toArrayNsPerByte: number; toBytesNsPerByte: number } {
  const data = new Uint8Array(BULK_CHUNK_BYTES).fill(7);
  const rounds = 200;
  let array: number[] = [];
  for (let i = 0; i < 20; i++) array = iroh.toArray(data);
  let t = performance.now();
  for (let i = 0; i < rounds; i++) array = iroh.toArray(data);
  const toArrayNs = (performance.now() - t) * 1e6 / rounds / data.length;
  t = performance.now();
  for (let i = 0; i < rounds; i++) iroh.toBytes(array);
  const toBytesNs = (performance.now() - t) * 1e6 / rounds / data.length;
  return { toArrayNsPerByte: round(toArrayNs, 2), toBytesNsPerByte: round(toBytesNs, 2) };
}

function summarize(values: number[], digits: number): Summary {
  return {
    n: values.length,
    mean: round(mean(values), digits),
    p50: round(quantile(values, 0.5), digits),
    p99: round(quantile(values, 0.99), digits),
    min: round(Math.min(...values), digits),
    max: round(Math.max(...values), digits),
  };
}

function rates(runs: number[]): { runs: number[]; best: number; mean: number } {
  return {
    runs: runs.map((r) => round(r, 2)),
    best: round(Math.max(...runs), 2),
    mean: round(mean(runs), 2),
  };
}

function mean(values: number[]): number {
  return values.reduce((a, b) => a + b, 0) / values.length;
}

function quantile(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

function round(value: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

// deno-lint-ignore no-explicit-any
function printTable(r: any): void {
  const rows: Array<[string, string, string]> = [];
  const place = (f: (p: PlaceResult) => string): [string, string] => [
    f(r.inProcess),
    f(r.twoProcesses),
  ];
  rows.push(["binding load (import of the napi addon)", `${r.bindingLoadMs} ms`, ""]);
  rows.push(["endpoint create, first in process", `${r.endpointCreate.firstMs} ms`, ""]);
  rows.push([
    `endpoint create, later (mean of ${r.endpointCreate.n})`,
    `${r.endpointCreate.laterMeanMs} ms`,
    "",
  ]);
  rows.push([
    `connect, new connection (mean / p50 / p99, n=${CONNECT_ROUNDS})`,
    ...place((p) => `${p.connectMs.mean} / ${p.connectMs.p50} / ${p.connectMs.p99} ms`),
  ]);
  rows.push([
    `echo ${MESSAGE_BYTES} B, one stream (p50 / p99, n=${ECHO_ROUNDS})`,
    ...place((p) => `${p.echoUs.p50} / ${p.echoUs.p99} µs`),
  ]);
  rows.push([
    `bulk 8 MiB one way, arrays pre-converted (mean, best of ${BULK_RUNS})`,
    ...place((p) => `${p.bulkFloorMiBps.mean} MiB/s (best ${p.bulkFloorMiBps.best})`),
  ]);
  rows.push([
    "bulk 8 MiB one way, with Uint8Array conversions",
    ...place((p) =>
      `${p.bulkWithConversionMiBps.mean} MiB/s (best ${p.bulkWithConversionMiBps.best})`
    ),
  ]);
  rows.push([
    "binding marshalling per byte: argument / result",
    `${r.marshalling.argumentNsPerByte} / ${r.marshalling.resultNsPerByte} ns`,
    "",
  ]);
  rows.push([
    "JS conversion per byte: toArray / toBytes (64 KiB)",
    `${r.conversion.toArrayNsPerByte} / ${r.conversion.toBytesNsPerByte} ns`,
    "",
  ]);
  const header: [string, string, string] = ["measure", "one process", "two processes"];
  const widths = [0, 1, 2].map((i) => Math.max(...[header, ...rows].map((row) => row[i]!.length)));
  const line = (row: [string, string, string]) =>
    row.map((cell, i) => cell.padEnd(widths[i]!)).join("  ").trimEnd();
  const m = r.machine;
  console.log(
    `Iroh binding floor: ${m.binding}, Deno ${m.deno}, ${m.os}, ${m.cores} cores, ${m.network}`,
  );
  console.log(line(header));
  console.log(widths.map((w) => "-".repeat(w)).join("  "));
  for (const row of rows) console.log(line(row));
  console.log(`(total ${r.totalSeconds} s)`);
}
