/**
 * `blixard migrate` as an operator runs it against real nodes on loopback:
 * the dry run, the stage applied with the file's mode, owner and symlink
 * kept, refusals that leave everything alone, the rollback when the node
 * cannot take the stage or the operator presses Ctrl-C, the fleet form over
 * a `command`, and one JSON document whatever happened (docs/cli.md).
 */

import { assert, assertEquals, assertMatch } from "../assert.ts";
import { assertDocumented, jsonDoc } from "./json_doc.ts";
import { blixard, freeTcpPort, operatorDir, type RunningNode, startNode } from "./helpers.ts";
import { createSocket } from "node:dgram";
import { freePorts } from "../runner/helpers.ts";

const root = new URL("../../", import.meta.url).pathname;

/** A single-node cluster's config on loopback, in mode grpc, with the operator's own comments. */
async function nodeFile(
  dir: string,
  operatorId: string,
): Promise<{ file: string; metrics: string; udp: number }> {
  const { tcp, udp } = await freePorts();
  const metrics = `127.0.0.1:${freeTcpPort()}`;
  const file = `${dir}/agent.toml`;
  await Deno.writeTextFile(
    file,
    `# Written by hand; migrate must keep this.
[node]
id = 1
data_dir = "${dir}/data"

[transport]
# Before the rollout.
mode = "grpc"   # the rollback target

[grpc]
bind = "127.0.0.1:${tcp}"

[iroh]
bind = "127.0.0.1:${udp}"
relay = "disabled"

[metrics]
bind = "${metrics}"

[cluster]
operator_keys = ["${operatorId}"]
`,
  );
  return { file, metrics, udp };
}

/** `blixard migrate ARGS --json`: exit status `code`, one documented JSON document. */
async function migrateJson(
  args: string[],
  code: number,
): Promise<{ doc: Record<string, unknown>; stderr: string }> {
  const r = await blixard(["migrate", ...args, "--json"]);
  assertEquals(r.code, code, `${r.stdout}\n${r.stderr}`);
  assertEquals(r.stdout.trim().split("\n").length, 1, r.stdout);
  const doc = JSON.parse(r.stdout);
  if (args.includes("--fleet")) {
    assertDocumented("migrate --fleet", await jsonDoc("migrate --fleet"), doc);
    const nodeDoc = await jsonDoc("migrate");
    for (const { name, ...node } of doc.nodes) {
      assertEquals(typeof name, "string");
      assertDocumented(`migrate --fleet (node ${name})`, nodeDoc, node);
    }
  } else {
    assertDocumented("migrate", await jsonDoc("migrate"), doc);
  }
  return { doc, stderr: r.stderr };
}

const FAST = ["--watch-ms", "1500", "--interval-ms", "250"];

Deno.test("a dry run prints the diff and what would move, needs no node, and changes nothing", async () => {
  const { dir, operatorId } = await operatorDir();
  try {
    const { file } = await nodeFile(dir, operatorId);
    const before = await Deno.readFile(file);
    const { mtime } = await Deno.stat(file);
    const r = await blixard(["migrate", "--stage", "canary", "--config", file, "--dry-run"]);
    assertEquals(r.code, 0, r.stderr);
    assert(
      r.stdout.includes(
        `-mode = "grpc"   # the rollback target\n+mode = "dual"   # the rollback target\n+\n+[transport.migration]\n+prefer_iroh = ["health", "status"]\n`,
      ),
      r.stdout,
    );
    assertMatch(
      r.stdout,
      /dry run: .* would go from rollback to stage canary .*: health, status: grpc → iroh; iroh listener started; nothing was changed/,
    );
    const { doc } = await migrateJson(["--stage", "canary", "--config", file, "--dry-run"], 0);
    assertEquals([doc.ok, doc.dryRun, doc.from, doc.changed, doc.pid], [
      true,
      true,
      "rollback",
      true,
      null,
    ]);
    assertEquals(await Deno.readFile(file), before);
    assertEquals((await Deno.stat(file)).mtime, mtime);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("usage errors name what is wrong and list the stages; with --json they are one document", async () => {
  const r = await blixard(["migrate", "--stage", "halfway", "--config", "x.toml"]);
  assertEquals(r.code, 2);
  assertMatch(
    r.stderr,
    /--stage halfway: unknown stage; expected canary, expanded, majority, iroh, rollback/,
  );
  const both = await blixard(["migrate", "--stage", "iroh", "--config", "a", "--fleet", "b"]);
  assertEquals(both.code, 2);
  assertMatch(both.stderr, /give --config FILE \(one node\) or --fleet FILE --percent P/);
  const { doc } = await migrateJson(["--stage", "iroh", "--fleet", "f.toml", "--percent", "0"], 2);
  assertMatch(String(doc.failure), /--percent 0: expected a number above 0, at most 100/);
  const node = await migrateJson(["--stage", "nope", "--config", "a.toml"], 2);
  assertEquals([node.doc.stage, node.doc.config], ["nope", "a.toml"]);
  const help = await blixard(["migrate", "--help"]);
  assertEquals(help.code, 0);
  for (const stage of ["canary", "expanded", "majority", "iroh", "rollback"]) {
    assertMatch(help.stdout, new RegExp(`^  ${stage} `, "m"));
  }
});

Deno.test("a file that is invalid, in a form migrate cannot rewrite, or without a running node is left alone", async () => {
  const { dir, operatorId } = await operatorDir();
  try {
    const { file } = await nodeFile(dir, operatorId);
    const valid = await Deno.readTextFile(file);
    const cases: [string, RegExp][] = [
      [
        valid.replace('mode = "grpc"', 'mode = "quic"'),
        /is not valid as it is .*transport\.mode = "quic"/s,
      ],
      [
        'transport = { mode = "grpc" }\n' +
        valid.replace(
          '[transport]\n# Before the rollout.\nmode = "grpc"   # the rollback target\n',
          "",
        ),
        /writes \[transport\] as an inline table; write it as a \[transport\] table/,
      ],
      [valid, /no running node found: .*blixard\.pid is missing .*; nothing was changed/],
    ];
    for (const [text, failure] of cases) {
      await Deno.writeTextFile(file, text);
      const { doc } = await migrateJson(["--stage", "canary", "--config", file], 1);
      assertMatch(String(doc.failure), failure);
      assertEquals(doc.rolledBack, false);
      assertEquals(await Deno.readTextFile(file), text);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** A node of `nodeFile`'s config, started; stopped by the caller. */
async function runningNode(dir: string, operatorId: string) {
  const spec = await nodeFile(dir, operatorId);
  const node = await startNode(spec.file, /grpc: \S+\n/);
  return { ...spec, node };
}

async function stopped(node: RunningNode): Promise<void> {
  assertEquals(await node.stop(), 0, node.stderr());
}

Deno.test("a node moves to a stage and back; the file keeps its mode, owner and symlink, and every other byte", async () => {
  const { dir, operatorId } = await operatorDir();
  const { file, node } = await runningNode(dir, operatorId);
  try {
    const original = await Deno.readTextFile(file);
    await Deno.chmod(file, 0o640);
    // As root, an owner other than the writer's shows that it is kept.
    const owner = Deno.uid() === 0 ? { uid: 65534, gid: 65534 } : null;
    if (owner) await Deno.chown(file, owner.uid, owner.gid);
    const link = `${dir}/agent-link.toml`;
    await Deno.symlink(file, link);

    const { doc } = await migrateJson(["--stage", "iroh", "--config", link, ...FAST], 0);
    assertEquals([doc.ok, doc.from, doc.changed, doc.rolledBack], [true, "rollback", true, false]);
    assertEquals(
      doc.summary,
      "health, status, vm, monitoring, cluster, metadata, raft: grpc → iroh; grpc listener stopped; iroh listener started",
    );
    const watch = doc.watch as { samples: number; elapsedMs: number };
    assert(watch.samples >= 1 && watch.elapsedMs >= 1500, JSON.stringify(watch));
    assert((await Deno.lstat(link)).isSymlink, "the symlink stays a symlink");
    const info = await Deno.stat(file);
    assertEquals(info.mode! & 0o777, 0o640);
    if (owner) assertEquals([info.uid, info.gid], [owner.uid, owner.gid]);
    const text = await Deno.readTextFile(file);
    assertEquals(text, original.replace('mode = "grpc"', 'mode = "iroh"'));
    assertEquals(
      (await Array.fromAsync(Deno.readDir(dir))).filter((e) => e.name.includes(".migrate-")),
      [],
    );

    const again = await blixard(["migrate", "--stage", "iroh", "--config", file, ...FAST]);
    assertEquals(again.code, 0, again.stderr);
    assertMatch(again.stdout, /is already at stage iroh; nothing changed/);

    const back = await blixard(["migrate", "--stage", "rollback", "--config", file, ...FAST]);
    assertEquals(back.code, 0, back.stderr);
    assertMatch(back.stdout, /^migrated .* from iroh to stage rollback: .*iroh → grpc/m);
    assertMatch(
      back.stdout,
      /held for \d+\.\d s \(\d+ readings\): ready throughout, a leader known/,
    );
    assertEquals(
      await Deno.readTextFile(file),
      original,
      "back to the operator's file, byte for byte",
    );
  } finally {
    await stopped(node);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a node that refuses the stage (its Iroh port is taken) gets its file back byte for byte", async () => {
  const { dir, operatorId } = await operatorDir();
  const { file, node, udp } = await runningNode(dir, operatorId);
  // Another process's socket on the node's iroh.bind: its Iroh listener cannot start.
  const squatter = createSocket("udp4");
  await new Promise<void>((resolve) => squatter.bind(udp, "127.0.0.1", resolve));
  try {
    const before = await Deno.readFile(file);
    const { doc, stderr } = await migrateJson(["--stage", "canary", "--config", file, ...FAST], 1);
    assertMatch(String(doc.failure), /the node refused the new file: .*/);
    assertEquals([doc.rolledBack, doc.rollbackFailure], [true, null]);
    assertMatch(stderr, /migrate: rolled back: .* is as it was, reloaded, and the node is ready/);
    assertEquals(await Deno.readFile(file), before);
  } finally {
    await new Promise<void>((resolve) => squatter.close(() => resolve()));
    await stopped(node);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("Ctrl-C during the watch fails the stage and rolls it back", async () => {
  const { dir, operatorId } = await operatorDir();
  const { file, node } = await runningNode(dir, operatorId);
  try {
    const before = await Deno.readFile(file);
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        `${root}src/cli/main.ts`,
        "migrate",
        "--stage",
        "canary",
        "--config",
        file,
        "--watch-ms",
        "60000",
        "--json",
      ],
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    let err = "";
    const stdout = new Response(child.stdout).text();
    const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
    while (!err.includes("watching stage canary")) {
      const { value, done } = await reader.read();
      if (done) break;
      err += value;
    }
    child.kill("SIGINT");
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      err += value;
    }
    assertEquals((await child.status).code, 1, err);
    const doc = JSON.parse(await stdout);
    assertMatch(String(doc.failure), /interrupted by SIGINT/);
    assertEquals(doc.rolledBack, true, err);
    assertMatch(err, /SIGINT: failing the stage and rolling back/);
    assertEquals(await Deno.readFile(file), before);
  } finally {
    await stopped(node);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a fleet goes node by node, here and through a command, and stops at the first node that fails", async () => {
  const a = await operatorDir();
  const b = await operatorDir();
  const c = await operatorDir();
  const nodeA = await runningNode(a.dir, a.operatorId);
  const nodeB = await runningNode(b.dir, b.operatorId);
  const notRunning = await nodeFile(c.dir, c.operatorId);
  const fleet = `${a.dir}/fleet.toml`;
  try {
    // B through a command line that runs blixard: what `ssh HOST blixard` would be.
    const command = JSON.stringify([Deno.execPath(), "run", "-A", `${root}src/cli/main.ts`]);
    await Deno.writeTextFile(
      fleet,
      `[[node]]\nname = "a"\nconfig = "agent.toml"\n\n[[node]]\nname = "b"\nconfig = "${nodeB.file}"\nmetrics = "${nodeB.metrics}"\ncommand = ${command}\n\n[[node]]\nname = "c"\nconfig = "${notRunning.file}"\n`,
    );
    const two = await migrateJson([
      "--stage",
      "canary",
      "--fleet",
      fleet,
      "--percent",
      "50",
      ...FAST,
    ], 0);
    assertEquals([two.doc.total, two.doc.selected, two.doc.stoppedAt], [3, 2, null]);
    const nodes = two.doc.nodes as { name: string; ok: boolean; from: string; metrics: string }[];
    assertEquals(nodes.map((n) => [n.name, n.ok, n.from]), [["a", true, "rollback"], [
      "b",
      true,
      "rollback",
    ]]);
    assertEquals(nodes[1]!.metrics, nodeB.metrics);

    const all = await blixard([
      "migrate",
      "--stage",
      "expanded",
      "--fleet",
      fleet,
      "--percent",
      "100",
      ...FAST,
    ]);
    assertEquals(all.code, 1, all.stderr);
    assertMatch(
      all.stderr,
      /fleet .*: stopped at c, which failed before its file was changed; a, b stay at stage expanded/,
    );
    assertMatch(
      await Deno.readTextFile(nodeA.file),
      /prefer_iroh = \["health", "status", "monitoring", "vm_ops"\]/,
    );
    assertMatch(
      await Deno.readTextFile(nodeB.file),
      /prefer_iroh = \["health", "status", "monitoring", "vm_ops"\]/,
    );
    assertMatch(await Deno.readTextFile(notRunning.file), /mode = "grpc"/);

    const json = await migrateJson([
      "--stage",
      "majority",
      "--fleet",
      fleet,
      "--percent",
      "100",
      "--dry-run",
    ], 0);
    assertEquals((json.doc.nodes as unknown[]).length, 3);
  } finally {
    await stopped(nodeA.node);
    await stopped(nodeB.node);
    for (const d of [a, b, c]) await Deno.remove(d.dir, { recursive: true });
  }
});
