/**
 * The HTTP endpoints of a real `blixard node` process: `/healthz`,
 * `/readyz` (and what it says before the node is a member with a leader),
 * `/metrics`, what other paths and methods get, a port another process
 * holds, `enabled = false`, and a reload that moves the endpoint.
 */

import { assert, assertEquals, assertMatch } from "../assert.ts";
import { blixard, freeTcpPort, operatorDir, startNode } from "../cli/helpers.ts";
import { TestCluster } from "../cluster/helpers.ts";
import { createClient } from "../../src/rpc/client.ts";
import { Cluster, Health } from "../../src/rpc/services.ts";
import { GrpcChannel } from "../../src/transport/grpc/client.ts";
import { get, scrape, scrapeUntil, valueOf } from "./helpers.ts";

async function nodeFiles(metrics: string) {
  const { dir, operatorId } = await operatorDir();
  const grpcPort = freeTcpPort();
  const config = `${dir}/node.toml`;
  const text = (m: string) =>
    `[node]\nid = 1\ndata_dir = "${dir}/data"\n[grpc]\nbind = "127.0.0.1:${grpcPort}"\n` +
    `${m}\n[cluster]\noperator_keys = ["${operatorId}"]\n[limits]\nshutdown_timeout_ms = 500\n`;
  await Deno.writeTextFile(config, text(metrics));
  return { dir, config, grpcPort, rewrite: (m: string) => Deno.writeTextFile(config, text(m)) };
}

Deno.test("a running node answers /healthz, /readyz with every check, /metrics as Prometheus text, 404 elsewhere", async () => {
  const port = freeTcpPort();
  const f = await nodeFiles(`[metrics]\nbind = "127.0.0.1:${port}"`);
  const node = await startNode(f.config, /grpc: \S+\n/);
  try {
    assertEquals(await get(port, "/healthz"), {
      status: 200,
      body: "ok\n",
      contentType: "text/plain; charset=utf-8",
    });
    // A single node is its cluster's only voter: it leads at once.
    const ready = await scrapeUntil(port, (e) => valueOf(e, "blixard_ready") === 1, "ready");
    assertEquals(valueOf(ready, "blixard_raft_is_leader"), 1);
    const readyz = await get(port, "/readyz");
    assertEquals(readyz.status, 200);
    assertEquals(readyz.body.split("\n").map((l) => l.split(":")[0]), [
      "[+]listeners ok",
      "[+]member ok",
      "[+]leader ok",
      "[+]storage ok",
      "ready",
      "",
    ]);
    const metrics = await get(port, "/metrics");
    assertEquals(metrics.contentType, "text/plain; version=0.0.4; charset=utf-8");
    assertMatch(metrics.body, /^# HELP blixard_/m);

    const missing = await get(port, "/metrics/x");
    assertEquals(missing.status, 404);
    assertEquals(
      missing.body,
      "not found: /metrics/x; this server has /metrics, /healthz, /readyz\n",
    );
    assertEquals((await get(port, "/")).status, 404);
    const post = await get(port, "/readyz", "POST");
    assertEquals([post.status, post.body], [405, "POST /readyz: only GET and HEAD\n"]);
    assertEquals((await get(port, "/healthz", "HEAD")).status, 200);
  } finally {
    await node.stop();
    await Deno.remove(f.dir, { recursive: true });
  }
});

Deno.test("a node waiting to be joined is not ready, and says why, until it is a member that knows its leader", async () => {
  await using c = await TestCluster.start({ size: 1, mode: "grpc" });
  await c.waitForLeader();
  const waiting = await c.addWaitingNode();
  const port = waiting.ports.metrics;

  let before = await get(port, "/readyz");
  // The storage probe's first write runs in the background from the start.
  while (before.body.includes("storage failed: not checked yet")) {
    before = await get(port, "/readyz");
  }
  assertEquals(before.status, 503);
  assertEquals(before.body.split("\n"), [
    "[+]listeners ok: serving over grpc",
    "[-]member failed: node 2 is not a member of a cluster yet (waiting to be added: blixard cluster join)",
    "[-]leader failed: no leader known: an election is under way, or no quorum is reachable",
    `[+]storage ok: ${waiting.dataDir}/.readyz-probe written and synced`,
    "not ready",
    "",
  ]);
  assertEquals((await get(port, "/healthz")).status, 200);
  assertEquals(valueOf(await scrape(port), "blixard_ready"), 0);

  const channel = new GrpcChannel({ target: `127.0.0.1:${c.node(1).ports.tcp}` });
  try {
    await createClient(Cluster, channel).join({
      nodeId: 2n,
      grpcAddress: `127.0.0.1:${waiting.ports.tcp}`,
    }, { deadlineMs: 10_000 });
  } finally {
    channel.close();
  }
  await scrapeUntil(port, (e) => valueOf(e, "blixard_ready") === 1, "node 2 ready after the join");
  const after = await get(port, "/readyz");
  assertEquals(after.status, 200, after.body);
  assert(after.body.includes("[+]leader ok: node 1\n"), after.body);
});

Deno.test("a metrics port another process holds stops the node at start, naming the key and the way out", async () => {
  const holder = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (holder.addr as Deno.NetAddr).port;
  const f = await nodeFiles(`[metrics]\nbind = "127.0.0.1:${port}"`);
  try {
    const run = await blixard(["node", "--config", f.config]);
    assertEquals(run.code, 1, run.stderr);
    assertEquals(
      run.stderr.trimEnd().split("\n").at(-1),
      `blixard: metrics.bind = "127.0.0.1:${port}": cannot listen: the address is in use (another process, or another node on this host, holds the port); choose another port, or set [metrics] enabled = false`,
    );
    assertEquals(run.stdout, "");
  } finally {
    holder.close();
    await Deno.remove(f.dir, { recursive: true });
  }
});

Deno.test("a reload moves the metrics endpoint, switches it off and on, and is refused where the new port is taken", async () => {
  const [first, second] = [freeTcpPort(), freeTcpPort()];
  const f = await nodeFiles(`[metrics]\nbind = "127.0.0.1:${first}"`);
  const node = await startNode(f.config, /grpc: \S+\n/);
  const health = createClient(Health, new GrpcChannel({ target: `127.0.0.1:${f.grpcPort}` }));
  const reload = async () => {
    const r = await blixard(["reload", "--config", f.config, "--json"]);
    return JSON.parse(r.stdout) as { ok: boolean; summary: string; errors: string[] };
  };
  const refused = (port: number) =>
    get(port, "/healthz").then(() => false, (e) => e instanceof TypeError);
  try {
    assertEquals((await get(first, "/healthz")).status, 200);

    await f.rewrite(`[metrics]\nbind = "127.0.0.1:${second}"`);
    const moved = await reload();
    assertEquals([moved.ok, moved.summary], [
      true,
      `metrics endpoint moved to 127.0.0.1:${second}`,
    ]);
    assertEquals((await get(second, "/healthz")).status, 200);
    assert(await refused(first), `port ${first} still answers`);

    await f.rewrite(`[metrics]\nenabled = false\nbind = "127.0.0.1:${second}"`);
    const off = await reload();
    assertEquals(off.summary, `metrics endpoint on 127.0.0.1:${second} stopped`);
    assert(await refused(second));

    // A port in use: the reload is refused and counted; the node runs as it was.
    const holder = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const taken = (holder.addr as Deno.NetAddr).port;
    try {
      await f.rewrite(`[metrics]\nbind = "127.0.0.1:${taken}"`);
      const busy = await reload();
      assertEquals(busy.ok, false);
      assertMatch(busy.errors[0]!, /^cannot move the metrics endpoint: metrics\.bind = .*in use/);
    } finally {
      holder.close();
    }

    await f.rewrite(`[metrics]\nbind = "127.0.0.1:${first}"`);
    const on = await reload();
    assertEquals(on.summary, `metrics endpoint started on 127.0.0.1:${first}`);
    const e = await scrape(first);
    assertEquals(valueOf(e, "blixard_config_reloads_total", { result: "ok" }), 3);
    assertEquals(valueOf(e, "blixard_config_reloads_total", { result: "failed" }), 1);
    await health.ping({}, { deadlineMs: 2_000 });
  } finally {
    await node.stop();
    await Deno.remove(f.dir, { recursive: true });
  }
});

Deno.test("with enabled = false the node opens no metrics port, and says it in its effective config", async () => {
  const port = freeTcpPort();
  const f = await nodeFiles(`[metrics]\nenabled = false\nbind = "127.0.0.1:${port}"`);
  const node = await startNode(f.config, /grpc: \S+\n/);
  try {
    const check = await blixard(["config", "check", f.config]);
    assert(
      check.stdout.includes(`[metrics]\nenabled = false\nbind = "127.0.0.1:${port}"`),
      check.stdout,
    );
    // Nothing listens there: the port can be taken by anyone.
    const probe = Deno.listen({ hostname: "127.0.0.1", port });
    probe.close();
  } finally {
    await node.stop();
    await Deno.remove(f.dir, { recursive: true });
  }
});
