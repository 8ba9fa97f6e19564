/**
 * `blixard reload` as an operator runs the predecessor's rollout plan: each
 * stage's file as the plan wrote it (tests/config/fixtures/), reloaded onto a
 * real node on loopback. The operator sees, on reload's own output, what
 * moved and every warning the node had; with --json, one document whatever
 * happened.
 */

import { assert, assertEquals } from "../assert.ts";
import { assertDocumented, jsonDoc } from "./json_doc.ts";
import {
  blixard,
  freeTcpPort,
  loopbackSections,
  operatorDir,
  type Run,
  startNode,
} from "./helpers.ts";

const FIXTURES = new URL("../config/fixtures/", import.meta.url).pathname;

/** The plan's stage `n` as written, on a node of its own data directory and loopback listeners. */
async function stageFile(n: number, dataDir: string, loopback: string): Promise<string> {
  const plan = await Deno.readTextFile(`${FIXTURES}canary_plan_stage${n}.toml`);
  assert(plan.includes("[node]\nid = 1\n"));
  return plan.replace("[node]\nid = 1\n", `[node]\nid = 1\ndata_dir = "${dataDir}"\n`) +
    `\n${loopback}`;
}

/** What the node serves each service on, from its Status over gRPC: `service:transports>preferred`. */
async function served(grpcPort: number): Promise<string[]> {
  const r = await blixard(["status", "--addr", `127.0.0.1:${grpcPort}`, "--json"]);
  assertEquals(r.code, 0, r.stderr);
  const name = (s: string) => s.replace(/^(SERVICE_ID|TRANSPORT)_/, "").toLowerCase();
  const self = JSON.parse(r.stdout).cluster.members[0];
  return self.services.map((s: { service: string; transports: string[]; preferred: string }) =>
    `${name(s.service)}:${s.transports.map(name).join("+")}>${name(s.preferred)}`
  );
}

function reloadJson(r: Run): Record<string, unknown> {
  assertEquals(r.stdout.trim().split("\n").length, 1, `${r.stdout}\n${r.stderr}`);
  return JSON.parse(r.stdout);
}

// The node's stderr is read by a background loop until it exits, after the test's last await.
Deno.test({
  name:
    "the plan's stage 2 and 3, a migration section alone, reloaded onto a stage-1 node keep it on Iroh and say so",
  async fn() {
    const { dir, operatorId } = await operatorDir();
    const grpcPort = freeTcpPort();
    const loopback = loopbackSections(grpcPort, operatorId);
    const file = `${dir}/node.toml`;
    await Deno.writeTextFile(file, await stageFile(1, `${dir}/data`, loopback));
    const node = await startNode(file);
    try {
      // Status lists the services the node implements; health and status prefer Iroh.
      assertEquals(await served(grpcPort), [
        "health:grpc+iroh>iroh",
        "status:grpc+iroh>iroh",
        "vm:grpc+iroh>grpc",
        "monitoring:grpc+iroh>grpc",
        "cluster:grpc+iroh>grpc",
        "metadata:grpc+iroh>grpc",
      ]);

      await Deno.writeTextFile(file, await stageFile(2, `${dir}/data`, loopback));
      const stage2 = await blixard(["reload", "--config", file]);
      assertEquals(stage2.code, 0, stage2.stderr);
      assertEquals(
        stage2.stdout.split("\n")[0],
        `node reloaded ${file}: vm, monitoring: grpc → iroh`,
      );
      assertEquals(
        stage2.stderr,
        `warning: ${file}: transport.mode: not set, so taken as "dual": the file has a [transport.migration] section, and "dual" is the only mode that reads it (without the section the mode would be "grpc"); write mode = "dual" to say so\n`,
      );
      assertEquals(await served(grpcPort), [
        "health:grpc+iroh>iroh",
        "status:grpc+iroh>iroh",
        "vm:grpc+iroh>iroh",
        "monitoring:grpc+iroh>iroh",
        "cluster:grpc+iroh>grpc",
        "metadata:grpc+iroh>grpc",
      ]);

      await Deno.writeTextFile(file, await stageFile(3, `${dir}/data`, loopback));
      const stage3 = await blixard(["reload", "--config", file, "--json"]);
      assertEquals(stage3.code, 0, stage3.stderr);
      const report = reloadJson(stage3);
      assertDocumented("reload", await jsonDoc("reload"), report);
      assertEquals(report.ok, true);
      assertEquals(report.summary, "cluster, metadata: grpc → iroh");
      assertEquals(await served(grpcPort), [
        "health:grpc+iroh>iroh",
        "status:grpc+iroh>iroh",
        "vm:grpc+iroh>iroh",
        "monitoring:grpc+iroh>iroh",
        "cluster:grpc+iroh>iroh",
        "metadata:grpc+iroh>iroh",
      ]);
      assertEquals((report.warnings as string[]).length, 1);
      assert((report.warnings as string[])[0]!.includes('taken as "dual"'));
      assertEquals(stage3.stderr, "", "with --json the warnings are in the document only");

      // Rollback: the one line mode = "grpc" over stage 3's section; never refused.
      const stage3Text = await Deno.readTextFile(file);
      await Deno.writeTextFile(
        file,
        stage3Text.replace("[transport.migration]", '[transport]\nmode = "grpc"\n\n$&'),
      );
      const back = await blixard(["reload", "--config", file]);
      assertEquals(back.code, 0, back.stderr);
      assertEquals(
        back.stdout.split("\n")[0],
        `node reloaded ${file}: health, status, vm, monitoring, cluster, metadata: iroh → grpc; iroh listener parked`,
      );
      assertEquals(
        back.stderr.split("\n").filter((l) => l.startsWith("warning: ")).map((l) =>
          /(transport\.migration\.\w+): ignored/.exec(l)?.[1]
        ),
        ["transport.migration.prefer_iroh", "transport.migration.raft_transport"],
      );
      assertEquals(await served(grpcPort), [
        "health:grpc>grpc",
        "status:grpc>grpc",
        "vm:grpc>grpc",
        "monitoring:grpc>grpc",
        "cluster:grpc>grpc",
        "metadata:grpc>grpc",
      ]);
    } finally {
      assertEquals(await node.stop(), 0, node.stderr());
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("reload --json prints one document when it fails: no node, an invalid file, a timeout, a usage error", async () => {
  const dir = await Deno.makeTempDir({ prefix: "blixard-reload-" });
  const doc = await jsonDoc("reload");
  // Ignores SIGHUP (an ignored signal stays ignored across exec), so it never reports.
  const deaf = new Deno.Command("sh", {
    args: ["-c", "trap '' HUP; exec sleep 60"],
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    const file = `${dir}/node.toml`;
    await Deno.writeTextFile(file, `[node]\nid = 1\ndata_dir = "${dir}/data"\n`);
    const none = await blixard(["reload", "--config", file, "--json"]);
    assertEquals(none.code, 1);
    const noNode = reloadJson(none);
    assertDocumented("reload", doc, noNode);
    assertEquals([noNode.ok, noNode.pid, noNode.summary], [false, null, null]);
    assertEquals(
      noNode.errors,
      [
        `no running node found: ${dir}/data/blixard.pid is missing or unreadable (is the node running with this config?)`,
      ],
    );

    await Deno.mkdir(`${dir}/data`);
    await Deno.writeTextFile(`${dir}/data/blixard.pid`, `${deaf.pid}\n`);
    const late = await blixard(["reload", "--config", file, "--timeout", "300", "--json"]);
    assertEquals(late.code, 1);
    const timedOut = reloadJson(late);
    assertDocumented("reload", doc, timedOut);
    assertEquals([timedOut.ok, timedOut.pid, timedOut.summary], [false, deaf.pid, null]);
    assertEquals(timedOut.errors, [
      `sent SIGHUP to pid ${deaf.pid}, but it reported nothing within 300 ms; see its log`,
    ]);

    await Deno.writeTextFile(file, `[node]\nid = 1\n[transport]\nmode = "quic"\n`);
    const bad = await blixard(["reload", "--config", file, "--json"]);
    assertEquals(bad.code, 1);
    const invalid = reloadJson(bad);
    assertDocumented("reload", doc, invalid);
    assertEquals(invalid.errors, [
      `${file}: transport.mode = "quic": expected "grpc", "iroh" or "dual"`,
    ]);

    const usage = await blixard(["reload", "--json"]);
    assertEquals(usage.code, 2);
    const noConfig = reloadJson(usage);
    assertDocumented("reload", doc, noConfig);
    assertEquals([noConfig.config, noConfig.errors], ["", ["reload: --config FILE is required"]]);
  } finally {
    deaf.kill("SIGTERM");
    await deaf.status;
    await Deno.remove(dir, { recursive: true });
  }
});
