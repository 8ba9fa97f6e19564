/**
 * Metrics endpoint benchmark: how long `/healthz`, `/readyz` and `/metrics`
 * take to answer on a running node, and how much of that is the node's own
 * work.
 *
 * Run: `deno run -A bench/metrics/main.ts [--requests N] [--json FILE]`
 * (default 2,000 requests per endpoint, ~15 s). Prints one table; `--json`
 * also writes the figures. A report, not a gate: exits 0 when it ran.
 *
 * Measured, on loopback:
 * - round trip: a `blixard node` child process (mode dual, a cluster of
 *   one, so it leads and is ready), asked by this process with `fetch` over
 *   one keep-alive connection, sequentially, after a warm-up; p50, p99 and
 *   mean per endpoint, and the size of the `/metrics` answer;
 * - handler: the same answers computed in this process by an agent started
 *   in it (`Agent.readiness()` for `/readyz`, `AgentMetrics.text()` for
 *   `/metrics`), without HTTP: the node's own share of the round trip.
 * Before measuring, the node serves a few hundred calls over both transports
 * so `/metrics` has the series a working node has.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { configOrThrow, parseConfig } from "../../src/config/mod.ts";
import { Agent } from "../../src/node/agent.ts";
import { createClient } from "../../src/rpc/client.ts";
import { Health, Status } from "../../src/rpc/services.ts";
import { GrpcChannel } from "../../src/transport/grpc/client.ts";
import { silentLogger } from "../../src/util/log.ts";
import { freeTcpPort } from "../../tests/ports.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { requests: { type: "string", default: "2000" }, json: { type: "string" } },
});
const REQUESTS = Number(values.requests);
if (!(REQUESTS > 0)) throw new Error(`--requests ${values.requests}: expected a positive number`);
const root = new URL("../../", import.meta.url).pathname;

/** p50, p99 and mean of samples in ms. */
function summary(samples: number[]): { p50: number; p99: number; mean: number } {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
  return { p50: at(0.5), p99: at(0.99), mean: sorted.reduce((a, b) => a + b, 0) / sorted.length };
}

function config(dir: string, grpcPort: number, metricsPort: number): string {
  return `[node]\nid = 1\ndata_dir = "${dir}/data"\n[transport]\nmode = "dual"\n` +
    `[grpc]\nbind = "127.0.0.1:${grpcPort}"\n[iroh]\nbind = "127.0.0.1:0"\nrelay = "disabled"\n` +
    `[metrics]\nbind = "127.0.0.1:${metricsPort}"\n`;
}

/** A few hundred calls, so the exposition has the series of a node at work. */
async function exercise(grpcPort: number): Promise<void> {
  const channel = new GrpcChannel({ target: `127.0.0.1:${grpcPort}` });
  try {
    for (let i = 0; i < 200; i++) {
      await createClient(Health, channel).ping({});
      await createClient(Status, channel).getRaftStatus({});
    }
  } finally {
    channel.close();
  }
}

async function waitReady(port: number): Promise<void> {
  const until = Date.now() + 30_000;
  for (;;) {
    try {
      const res = await fetch(`http://127.0.0.1:${port}/readyz`);
      await res.body?.cancel();
      if (res.status === 200) return;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > until) throw new Error("the node did not become ready in 30 s");
    await new Promise((r) => setTimeout(r, 50));
  }
}

type Row = { p50: number; p99: number; mean: number };

async function roundTrips(): Promise<{ rows: Record<string, Row>; metricsBytes: number }> {
  const dir = await Deno.makeTempDir({ prefix: "blixard-bench-metrics-" });
  const [grpcPort, metricsPort] = [freeTcpPort(), freeTcpPort()];
  await Deno.writeTextFile(`${dir}/node.toml`, config(dir, grpcPort, metricsPort));
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${root}src/cli/main.ts`, "node", "--config", `${dir}/node.toml`],
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    await waitReady(metricsPort);
    await exercise(grpcPort);
    const rows: Record<string, Row> = {};
    let metricsBytes = 0;
    for (const path of ["/healthz", "/readyz", "/metrics"]) {
      const url = `http://127.0.0.1:${metricsPort}${path}`;
      const samples: number[] = [];
      for (let i = 0; i < REQUESTS + 100; i++) {
        const t0 = performance.now();
        const res = await fetch(url);
        const body = await res.arrayBuffer();
        const ms = performance.now() - t0;
        if (res.status !== 200) throw new Error(`${path}: ${res.status}`);
        if (path === "/metrics") metricsBytes = body.byteLength;
        if (i >= 100) samples.push(ms);
      }
      rows[`round trip ${path}`] = summary(samples);
    }
    return { rows, metricsBytes };
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await Deno.remove(dir, { recursive: true });
  }
}

async function handlers(): Promise<Record<string, Row>> {
  const dir = await Deno.makeTempDir({ prefix: "blixard-bench-metrics-" });
  const [grpcPort, metricsPort] = [freeTcpPort(), freeTcpPort()];
  const agent = await Agent.start(
    configOrThrow(parseConfig(config(dir, grpcPort, metricsPort))),
    silentLogger,
  );
  try {
    await waitReady(metricsPort);
    await exercise(grpcPort);
    const time = async (fn: () => unknown) => {
      const samples: number[] = [];
      for (let i = 0; i < REQUESTS + 100; i++) {
        const t0 = performance.now();
        await fn();
        if (i >= 100) samples.push(performance.now() - t0);
      }
      return summary(samples);
    };
    return {
      "handler /readyz (Agent.readiness)": await time(() => agent.readiness()),
      "handler /metrics (AgentMetrics.text)": await time(() => agent.metrics.text()),
    };
  } finally {
    await agent.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

const trips = await roundTrips();
const rows = { ...trips.rows, ...await handlers() };
const fmt = (ms: number) => ms < 1 ? `${(ms * 1000).toFixed(0)} µs` : `${ms.toFixed(2)} ms`;
console.log(
  `metrics endpoint, ${REQUESTS} sequential requests each, loopback, Deno ${Deno.version.deno}`,
);
console.log(`${"".padEnd(40)}${"p50".padStart(10)}${"p99".padStart(10)}${"mean".padStart(10)}`);
for (const [name, r] of Object.entries(rows)) {
  console.log(
    `${name.padEnd(40)}${fmt(r.p50).padStart(10)}${fmt(r.p99).padStart(10)}${
      fmt(r.mean).padStart(10)
    }`,
  );
}
console.log(`/metrics answer: ${trips.metricsBytes} bytes`);
if (values.json) {
  await Deno.writeTextFile(
    values.json,
    JSON.stringify(
      { requests: REQUESTS, metricsBytes: trips.metricsBytes, rowsMs: rows },
      null,
      2,
    ) +
      "\n",
  );
}
