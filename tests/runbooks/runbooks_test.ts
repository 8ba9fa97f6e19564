/**
 * The runbooks' configurations and queries, checked without a cluster:
 * every TOML block loads (a stage's block is that stage's, exactly as
 * deploy/examples/ and `blixard migrate` write it; a fleet file parses),
 * every PromQL expression passes `promtool check rules` and names only
 * metrics docs/metrics.md documents, every block left to the operator is one
 * the test cannot run and says why, and the sections the alerts link to exist.
 */

import { assert, assertEquals } from "../assert.ts";
import { ALERT_RUNBOOK_SECTIONS } from "../monitoring/files.ts";
import { parseConfig } from "../../src/config/mod.ts";
import { parseFleet } from "../../src/cli/migrate_fleet.ts";
import { rewriteToStage, stageNamed, stageOfConfig } from "../../src/cli/migrate_stages.ts";
import {
  anchorOf,
  blocksOf,
  documentedFamilies,
  expressionsOf,
  familyOf,
  metricNames,
  NOT_RUNNABLE,
  root,
} from "./helpers.ts";

const RUNBOOKS = ["runbooks/operations.md", "runbooks/migration.md"];
const texts = new Map(
  await Promise.all(
    RUNBOOKS.map(async (f) => [f, await Deno.readTextFile(`${root}${f}`)] as const),
  ),
);

Deno.test("every TOML block of the runbooks loads; a stage's block is exactly that stage; a fleet file parses", () => {
  let stages = 0;
  for (const [file, text] of texts) {
    for (const b of blocksOf(text).filter((b) => b.lang === "toml")) {
      const where = `${file}:${b.line}`;
      if (b.info === "fleet") {
        assert(parseFleet(b.code, "/etc/blixard/fleet.toml").length > 0, where);
        continue;
      }
      const whole = /\[node\]/.test(b.code) ? b.code : `[node]\nid = 1\n\n${b.code}`;
      const result = parseConfig(whole, where);
      assert(result.ok, result.ok ? "" : result.errors.map((e) => e.message).join("\n"));
      assertEquals(result.warnings.map((w) => w.message), [], where);
      const stageName = /^stage=(\w+)$/.exec(b.info)?.[1];
      if (stageName === undefined) continue;
      const stage = stageNamed(stageName);
      assert(stage, `${where}: no stage ${stageName}`);
      assertEquals(stageOfConfig(result.config)?.name, stageName, where);
      // What migrate writes into a file without transport tables, those tables alone.
      const written = rewriteToStage("[node]\nid = 1\n", stage).replace("[node]\nid = 1\n\n", "");
      assertEquals(b.code, written, where);
      stages++;
    }
  }
  assertEquals(stages, 5, "the migration runbook shows each of the five stages");
});

const promtool = new Deno.Command("promtool", {
  args: ["--version"],
  stdout: "null",
  stderr: "null",
})
  .output().then((o) => o.success, () => false);

Deno.test({
  name: (await promtool)
    ? "every PromQL expression of the runbooks passes promtool check rules"
    : "every PromQL expression of the runbooks passes promtool check rules (ignored: promtool is not installed; Debian's prometheus package has it)",
  ignore: !(await promtool),
  async fn() {
    const expressions = [...texts].flatMap(([file, text]) =>
      blocksOf(text).filter((b) => b.lang === "promql").flatMap((b) =>
        expressionsOf(b.code).map((expr) => ({ where: `${file}:${b.line}`, expr }))
      )
    );
    assert(expressions.length > 20, `only ${expressions.length} expressions`);
    const rules = expressions.map(({ where, expr }, i) =>
      `      # ${where}\n      - record: runbook:expression_${i + 1}\n        expr: |-\n${
        expr.split("\n").map((l) => `          ${l}`).join("\n")
      }\n`
    ).join("");
    const file = await Deno.makeTempFile({ suffix: ".yml" });
    try {
      await Deno.writeTextFile(file, `groups:\n  - name: runbooks\n    rules:\n${rules}`);
      const out = await new Deno.Command("promtool", { args: ["check", "rules", file] }).output();
      const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
      assertEquals(out.code, 0, text);
      assert(text.includes(`SUCCESS: ${expressions.length} rules found`), text);
    } finally {
      await Deno.remove(file);
    }
  },
});

Deno.test("every metric a runbook query names is a family docs/metrics.md documents", async () => {
  const families = await documentedFamilies();
  const unknown: string[] = [];
  let names = 0;
  for (const [file, text] of texts) {
    for (const b of blocksOf(text).filter((b) => b.lang === "promql")) {
      for (const expr of expressionsOf(b.code)) {
        for (const name of metricNames(expr)) {
          names++;
          if (!familyOf(name, families)) unknown.push(`${file}:${b.line}: ${name}`);
        }
      }
    }
  }
  assertEquals(unknown, []);
  assert(names > 30);
});

Deno.test("the metric name reader finds every name and only names, and so catches a misspelled one", async () => {
  assertEquals(
    metricNames(
      `# a comment naming not_a_metric
sum by (service, le) (rate(blixard_rpc_client_duration_seconds_bucket{transport="iroh", code=~"UN.*|x{1}"}[5m] offset 1h))
  > on (service) group_left (method) 1.1e3 * max without (instance) (blixard_raft_term) and blixard_ready unless label_replace(up, "dst", "$1", "src", "(.*)")`,
    ),
    ["blixard_rpc_client_duration_seconds_bucket", "blixard_raft_term", "blixard_ready", "up"],
  );
  const families = await documentedFamilies();
  assertEquals(
    familyOf("blixard_rpc_client_duration_seconds_bucket", families),
    "blixard_rpc_client_duration_seconds",
  );
  assertEquals(
    familyOf("blixard_rpc_fallback_total", families),
    undefined,
    "a misspelling is caught",
  );
  assertEquals(familyOf("blixard_ready_bucket", families), undefined, "a gauge has no buckets");
  assertEquals(
    familyOf("nodejs_eventloop_lag_p99_seconds", families),
    "nodejs_eventloop_lag_p99_seconds",
  );
});

Deno.test("every block a runbook leaves to the operator runs only what the test cannot, and says why", () => {
  let left = 0;
  for (const [file, text] of texts) {
    for (const b of blocksOf(text).filter((b) => b.notRun !== null)) {
      left++;
      assertEquals(b.lang, "sh", `${file}:${b.line}`);
      for (const line of b.code.split("\n").filter((l) => l.trim() !== "")) {
        const program = line.trim().split(/\s+/)[0]!;
        assert(program in NOT_RUNNABLE, `${file}:${b.line}: "${program}" can run here: run it`);
        assertEquals(b.notRun, NOT_RUNNABLE[program], `${file}:${b.line}: the reason`);
      }
    }
  }
  assert(left > 0);
});

Deno.test("the operations runbook has the sections the alerts link to, and the troubleshooting ones the issue names", () => {
  const text = texts.get("runbooks/operations.md")!;
  const anchors = [...text.matchAll(/^#{2,4} (.+)$/gm)].map((m) => anchorOf(m[1]!));
  assertEquals(new Set(anchors).size, anchors.length, "headings are unique, so anchors are stable");
  for (
    const a of [
      ...ALERT_RUNBOOK_SECTIONS,
      "peer-refused",
      "slow-snapshots",
      "full-disk",
      "start",
      "stop",
      "health-checks",
      "reading-the-dashboard",
      "tuning",
      "backup-and-restore-of-the-data-directory",
      "emergency-rollback",
    ]
  ) assert(anchors.includes(a), `no section #${a}`);
  for (const [file, t] of texts) {
    for (const m of t.matchAll(/\]\(#([a-z0-9-]+)\)/g)) {
      assert(
        anchors.includes(m[1]!) || file !== "runbooks/operations.md",
        `${file}: #${m[1]} is not a section`,
      );
    }
  }
});
