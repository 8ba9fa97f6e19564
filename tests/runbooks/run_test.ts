/**
 * Every command of the runbooks, run in order against node 1 of a real
 * 3-node cluster on loopback, as an operator would paste them (`blixard` on
 * PATH, the runbook's variables naming node 1), except the blocks left to the
 * operator (runbooks_test.ts checks why). The test starts or stops node 1
 * before a block when the block says it needs that. The migration runbook
 * takes the cluster through every stage and back, each node held for 1 s
 * instead of the runbook's minutes.
 */

import { assert, assertEquals } from "../assert.ts";
import {
  blocksOf,
  documentedFamilies,
  expressionsOf,
  familyOf,
  metricNames,
  root,
  RunbookCluster,
} from "./helpers.ts";
import { stageOfConfig } from "../../src/cli/migrate_stages.ts";
import { loadConfigFile } from "../../src/config/mod.ts";

/** Runs every runnable `sh` block of `file` in order; returns how many ran. */
async function runAll(c: RunbookCluster, file: string): Promise<number> {
  const blocks = blocksOf(await Deno.readTextFile(`${root}${file}`))
    .filter((b) => b.lang === "sh" && b.notRun === null);
  for (const b of blocks) {
    if (b.needsStopped) await c.ensureStopped();
    else await c.ensureRunning();
    const started = Date.now();
    await c.run(b, file);
    const lines = b.code.trim().split("\n");
    const more = lines.length > 1 ? ` (+${lines.length - 1} line(s))` : "";
    const took = ((Date.now() - started) / 1000).toFixed(1);
    console.log(`  ${file}:${b.line} ok in ${took} s: ${lines[0]}${more}`);
  }
  return blocks.length;
}

/** The stage each node's file is at now. */
async function stages(c: RunbookCluster): Promise<(string | null)[]> {
  return await Promise.all(c.cluster.nodes.map(async (n) => {
    const r = await loadConfigFile(n.configFile);
    assert(r.ok);
    return stageOfConfig(r.config)?.name ?? null;
  }));
}

Deno.test({
  name: "every command of the operations runbook runs against a real node of a 3-node cluster",
  // The cluster's child processes, and nodes the runbook itself starts, outlive single steps.
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using c = await RunbookCluster.start();
    const ran = await runAll(c, "runbooks/operations.md");
    assert(ran >= 15, `only ${ran} blocks ran`);
    await c.ensureRunning();
    assertEquals(await stages(c), ["rollback", "rollback", "rollback"]);
    // The backup the runbook made holds the node's Raft log.
    const list = await new Deno.Command("tar", {
      args: ["-tzf", `${c.env.BACKUP}/blixard-data.tar.gz`],
      stdout: "piped",
    }).output();
    assert(new TextDecoder().decode(list.stdout).includes("./raft.db"));
    // Every family the runbooks' queries name is one a running node exports.
    const exported = await (await fetch(`http://${c.env.METRICS}/metrics`)).text();
    const families = await documentedFamilies();
    const missing = new Set<string>();
    for (const f of ["runbooks/operations.md", "runbooks/migration.md"]) {
      for (
        const b of blocksOf(await Deno.readTextFile(`${root}${f}`)).filter((b) =>
          b.lang === "promql"
        )
      ) {
        for (const expr of expressionsOf(b.code)) {
          for (const name of metricNames(expr)) {
            const family = familyOf(name, families)!;
            if (!exported.includes(`# TYPE ${family} `)) missing.add(family);
          }
        }
      }
    }
    assertEquals([...missing], []);
  },
});

Deno.test({
  name:
    "the migration runbook's commands take a 3-node cluster through every stage and back to gRPC",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using c = await RunbookCluster.start();
    const ran = await runAll(c, "runbooks/migration.md");
    assert(ran >= 8, `only ${ran} blocks ran`);
    assertEquals(await stages(c), ["rollback", "rollback", "rollback"]);
    // Ready: its listeners serve and it knows a leader, on gRPC again.
    await c.ensureRunning();
  },
});
