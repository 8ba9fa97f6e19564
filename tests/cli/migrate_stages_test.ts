/**
 * The stages `blixard migrate` knows are the rollout's as deploy/examples/
 * writes them: rewriting any example to any stage gives that stage's
 * example's transport tables, and every other byte of the file it started
 * from. The diff it shows is `diff -u`'s.
 */

import { assert, assertEquals } from "../assert.ts";
import { parseConfig } from "../../src/config/mod.ts";
import {
  rewriteToStage,
  STAGE_NAMES,
  stageOfConfig,
  STAGES,
} from "../../src/cli/migrate_stages.ts";
import { unifiedDiff } from "../../src/cli/unified_diff.ts";

const DIR = new URL("../../deploy/examples/", import.meta.url).pathname;

/** A file's lines outside [transport] and [transport.migration]. */
function outsideTransport(text: string): string[] {
  const out: string[] = [];
  let inside = false;
  for (const line of text.split("\n")) {
    if (/^\[/.test(line)) inside = /^\[transport(\.migration)?\]/.test(line);
    if (!inside) out.push(line);
  }
  return out;
}

/** The [transport] and [transport.migration] tables of a file, as written. */
function transportTables(text: string): string {
  return /^\[transport\]\n(?:[^[].*\n|\n)*(?:\[transport\.migration\]\n(?:[^[\n].*\n)*)?/m
    .exec(text)![0].trimEnd();
}

for (const from of STAGE_NAMES) {
  Deno.test(`${STAGES[from].example} rewritten to each stage has that stage's example tables and its own other bytes`, async () => {
    const text = await Deno.readTextFile(`${DIR}${STAGES[from].example}`);
    for (const to of STAGE_NAMES) {
      const want = await Deno.readTextFile(`${DIR}${STAGES[to].example}`);
      const out = rewriteToStage(text, STAGES[to]);
      assertEquals(transportTables(out), transportTables(want), `${from} → ${to}`);
      assertEquals(outsideTransport(out), outsideTransport(text), `${from} → ${to}`);
      const parsed = parseConfig(out);
      assert(parsed.ok);
      assertEquals(parsed.warnings, [], `${from} → ${to}`);
      assertEquals(stageOfConfig(parsed.config)?.name, to);
      if (from === to) assertEquals(out, text, "a file at the stage is left as it is");
    }
    const claims = [...text.matchAll(/^# `blixard migrate --stage (\w+)` writes these/gm)];
    assertEquals(claims.map((m) => m[1]), [from], "its comment names the stage that writes it");
  });
}

Deno.test("a file that never took part in the rollout is at rollback; a mix of its own is at no stage", () => {
  const plain = parseConfig("[node]\nid = 1\n");
  assert(plain.ok);
  assertEquals(stageOfConfig(plain.config)?.name, "rollback");
  const mix = parseConfig(
    '[node]\nid = 1\n[transport]\nmode = "dual"\n[transport.migration]\nprefer_iroh = ["vm"]\n',
  );
  assert(mix.ok);
  assertEquals(stageOfConfig(mix.config), null);
  // The plan's stage 2 as the predecessor wrote it (no mode) is stage expanded.
  const implied = parseConfig(
    '[node]\nid = 1\n[transport.migration]\nprefer_iroh = ["health", "status", "monitoring", "vm_ops"]\nraft_transport = "grpc"\n',
  );
  assert(implied.ok);
  assertEquals(stageOfConfig(implied.config)?.name, "expanded");
});

Deno.test("a file written as the plan's section alone gets an explicit mode, before its migration table", () => {
  const text =
    `[node]\nid = 1\n\n# stage 2 of the plan\n[transport.migration]\nprefer_iroh = ["health", "status"]\n`;
  assertEquals(
    rewriteToStage(text, STAGES.expanded),
    `[node]\nid = 1\n\n[transport]\nmode = "dual"\n\n# stage 2 of the plan\n[transport.migration]\nprefer_iroh = ["health", "status", "monitoring", "vm_ops"]\nraft_transport = "grpc"\nfallback_to_grpc = true\n`,
  );
});

/** `diff -u A B` with its two header lines named as ours are. */
async function gnuDiff(before: string, after: string): Promise<string> {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/a`, before);
    await Deno.writeTextFile(`${dir}/b`, after);
    const out = await new Deno.Command("diff", {
      args: ["-u", "--label", "a", "--label", "b", `${dir}/a`, `${dir}/b`],
      stdout: "piped",
    }).output();
    return new TextDecoder().decode(out.stdout);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("the diff of every stage change is what diff -u prints", async () => {
  for (const from of STAGE_NAMES) {
    const text = await Deno.readTextFile(`${DIR}${STAGES[from].example}`);
    for (const to of STAGE_NAMES) {
      const out = rewriteToStage(text, STAGES[to]);
      assertEquals(unifiedDiff(text, out, "a", "b"), await gnuDiff(text, out), `${from} → ${to}`);
    }
  }
});

Deno.test("a diff marks a missing last newline, shows far-apart changes as separate hunks, and is empty for equal texts", async () => {
  const lines = Array.from({ length: 30 }, (_, i) => `line ${i}\n`);
  const before = lines.join("");
  const after = lines.map((l, i) => (i === 2 || i === 25 ? `changed ${i}\n` : l)).join("") +
    "no newline";
  const diff = unifiedDiff(before, after, "a", "b");
  assertEquals(diff, await gnuDiff(before, after));
  assertEquals(diff.match(/^@@/gm)?.length, 2);
  assert(diff.includes("\\ No newline at end of file"));
  assertEquals(unifiedDiff(before, before, "a", "b"), "");
  assertEquals(unifiedDiff("", "x\n", "a", "b"), await gnuDiff("", "x\n"));
});
